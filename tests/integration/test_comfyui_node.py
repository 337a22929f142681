"""The UnifiedMemoryManager node in a real ComfyUI, and comfy_memhooks inside a memory-limited container.

Run against each ComfyUI generation by pointing ``COMFYUI_DIR`` at it; skipped when it is not set.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cgroups import enter_group_launcher, limited_v1_group
from tests.integration.comfyui_server import ComfyUI, running_comfyui, skip_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

STATUS = re.compile(r"^RAM: [\d.]+GB/[\d.]+GB \(\d+%\) \| VRAM: .+$")
GIB = 1024**3


@pytest.fixture(scope="module")
def comfy() -> Iterator[ComfyUI]:
    with running_comfyui(record_events=False) as server:
        yield server


def node_workflow(**inputs: Any) -> dict[str, Any]:
    """An image through the node (as trigger and as pass-through) to previews; the node's text to PreviewAny."""
    settings = {
        "enable_monitoring": True,
        "enable_optimization": True,
        "auto_optimize": False,
        "enable_auto_cleanup": False,
        "mode": "Conservative",
        "ram_threshold": 80.0,
        "vram_threshold": 85.0,
        "cooldown_seconds": 0.0,
        "detailed_report": True,
    }
    settings.update(inputs)
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 255}},
        "2": {
            "class_type": "UnifiedMemoryManager",
            "inputs": {**settings, "trigger_image": ["1", 0], "passthrough": ["1", 0]},
        },
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 6]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["2", 7]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
    }


def cached_nodes(entry: dict[str, Any]) -> list[str]:
    for name, data in entry["status"]["messages"]:
        if name == "execution_cached":
            return list(data["nodes"])
    return []


def test_the_node_runs_every_time_and_passes_its_inputs_through(comfy: ComfyUI) -> None:
    before = comfy.get("/memhooks/history")["records"]
    first_id, first = comfy.run(node_workflow())
    second_id, second = comfy.run(node_workflow())
    for entry in (first, second):
        assert entry["status"]["status_str"] == "success", entry["status"]
        summary = entry["outputs"]["2"]["text"][0]  # the node's own UI text: its status line
        assert STATUS.match(summary), summary
        assert len(entry["outputs"]["3"]["images"]) == 1 and len(entry["outputs"]["4"]["images"]) == 1
        report = "".join(entry["outputs"]["5"]["text"])
        assert "RAM:" in report and "Optimization #" in report and "gc_collect" in report
    assert "2" not in cached_nodes(second)  # IS_CHANGED keeps the node out of ComfyUI's cache
    records = comfy.get("/memhooks/history")["records"]
    assert len(records) == len(before) + 2
    newest = records[0]
    assert newest["trigger"]["kind"] == "node"
    assert (newest["trigger"]["node_id"], newest["trigger"]["node_class"]) == ("2", "UnifiedMemoryManager")
    assert newest["mode"] == "Conservative"
    assert first_id != second_id


def test_a_bad_value_from_an_api_client_fails_the_node_naming_the_input(comfy: ComfyUI) -> None:
    # ComfyUI's own validation turns "nan" into float("nan"), which passes its min/max check (every comparison
    # with NaN is false). (A string for a BOOLEAN never reaches a node: ComfyUI applies bool() to it.)
    records = len(comfy.get("/memhooks/history")["records"])
    _, entry = comfy.run(node_workflow(ram_threshold="nan"))
    assert entry["status"]["status_str"] == "error"
    errors = [data for name, data in entry["status"]["messages"] if name == "execution_error"]
    assert errors and errors[0]["node_type"] == "UnifiedMemoryManager"
    assert errors[0]["exception_message"].strip() == "ram_threshold: NaN is not allowed"
    assert len(comfy.get("/memhooks/history")["records"]) == records  # nothing was freed


def test_inside_a_memory_limited_container_the_limit_is_the_total() -> None:
    limit = 6 * GIB
    with limited_v1_group(limit) as group:
        if group is None:
            pytest.skip("cannot create a v1 memory cgroup here (needs root and a writable v1 memory hierarchy)")
        with running_comfyui(record_events=False, launcher=enter_group_launcher(group)) as server:
            status = server.get("/memhooks/status")["snapshot"]["ram"]
            assert status["source"] == "cgroup v1"
            assert status["total_bytes"] == limit
            assert 0 < status["used_bytes"] < limit
            _, entry = server.run(node_workflow())
            assert entry["status"]["status_str"] == "success", server.log_tail()
            assert re.match(r"^RAM: [\d.]+GB/6GB \(\d+%\)", entry["outputs"]["2"]["text"][0])
            report = "".join(entry["outputs"]["5"]["text"])
            assert "container limit from cgroup v1" in report
