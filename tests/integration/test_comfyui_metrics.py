"""``/memhooks/metrics`` on ComfyUI's own server, scraped after a workflow and read with prometheus_client's parser.

Run against each ComfyUI generation by pointing ``COMFYUI_DIR`` at it; skipped when it is not set. ComfyUI's Python
needs ``prometheus_client`` (it is in requirements.txt); without it the route answers 503 and this test says so.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.comfyui_server import ComfyUI, running_comfyui, skip_reason

# The test runner's Python reads the scrape with prometheus_client's parser (ComfyUI's Python serves it).
CONTENT_TYPE_LATEST = pytest.importorskip("prometheus_client").CONTENT_TYPE_LATEST

from tests.panel.metrics_support import FAMILIES, Scrape  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

CLASSES = ("EmptyImage", "ReActorFaceSwap", "ImageInvert", "PreviewImage")


@pytest.fixture(scope="module")
def comfy() -> Iterator[ComfyUI]:
    with running_comfyui(record_events=False) as server:  # default settings
        yield server


def workflow(oom_once: str) -> dict[str, Any]:
    """An image through the face-swap stand-in (which runs out of memory once) and an inversion, to a preview."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 2, "color": 255}},
        "2": {
            "class_type": "ReActorFaceSwap",
            "inputs": {"input_image": ["1", 0], "enabled": True, "oom_once": oom_once},
        },
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


def scrape(comfy: ComfyUI, path: str = "/memhooks/metrics") -> Scrape:
    try:
        with urllib.request.urlopen(comfy.url + path, timeout=30) as response:
            assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
            return Scrape(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        body = error.read().decode("utf-8", "replace")
        if error.code == 503 and "prometheus_client" in body:
            pytest.skip(f"ComfyUI's Python lacks prometheus_client: {body}")
        raise


def test_a_workflow_shows_in_the_metrics_and_they_match_status(comfy: ComfyUI) -> None:
    _, entry = comfy.run(workflow(uuid.uuid4().hex))
    assert entry["status"]["status_str"] == "success"

    metrics = scrape(comfy)
    status = comfy.get("/memhooks/status")
    assert set(FAMILIES) - {"comfy_memhooks_node_peak_vram_bytes"} <= set(metrics.types())
    assert {name: kind for name, kind in metrics.types().items() if name in FAMILIES} == {
        name: FAMILIES[name] for name in metrics.types() if name in FAMILIES
    }
    assert metrics.value("comfy_memhooks_hook_installed") == 1 == int(status["hook"]["installed"])

    ram = status["snapshot"]["ram"]
    assert metrics.value("comfy_memhooks_ram_total_bytes", source=ram["source"]) == ram["total_bytes"]
    assert metrics.all("comfy_memhooks_ram_used_bytes")[0].labels == {"source": ram["source"]}
    assert len(metrics.all("comfy_memhooks_vram_used_bytes")) == len(status["snapshot"]["gpus"])

    counts = metrics.by("comfy_memhooks_node_duration_seconds_count", "node_class")
    assert {node_class: counts.get(node_class) for node_class in CLASSES} == dict.fromkeys(CLASSES, 1)
    assert metrics.by("comfy_memhooks_oom_rescues_total", "outcome") == {"succeeded": 1, "failed": 0}
    optimizations = metrics.all("comfy_memhooks_optimizations_total")
    assert sum(sample.value for sample in optimizations) == status["engine"]["optimizations_total"]
    assert metrics.value("comfy_memhooks_optimizations_total", mode="Aggressive", trigger="rescue") == 1  # the rescue
    errors = status["errors"]
    assert metrics.value("comfy_memhooks_errors_total", part="receiver") == errors["receiver_failures"]
    assert metrics.value("comfy_memhooks_errors_total", part="action") == errors["action_failures"]
    assert metrics.value("comfy_memhooks_errors_total", part="hook") == status["hook"]["hook_errors"] == 0

    # The same prompt again: ComfyUI serves every node from its cache, and a cached node adds no duration.
    prompt = workflow("already-failed")
    comfy.run(prompt)
    before = scrape(comfy).by("comfy_memhooks_node_duration_seconds_count", "node_class")
    comfy.run(prompt)
    assert scrape(comfy, "/api/memhooks/metrics").by("comfy_memhooks_node_duration_seconds_count", "node_class") == (
        before
    )
    induced = "Unable to allocate 4.00 EiB"  # the stand-in's own out-of-memory failure, logged by ComfyUI
    assert [text for text in comfy.our_tracebacks() if induced not in text] == []
