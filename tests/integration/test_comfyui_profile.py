"""The per-node profile in a real ComfyUI: a stand-in heavy node that holds a known amount is the heaviest.

Run against each ComfyUI generation by pointing ``COMFYUI_DIR`` at it; skipped when it is not set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.comfyui_server import ComfyError, ComfyUI, running_comfyui, skip_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

MIB = 1024**2
HELD_MIB = 300


@pytest.fixture(scope="module")
def comfy() -> Iterator[ComfyUI]:
    with running_comfyui(record_events=False) as server:
        yield server


def workflow(value: int, first: str = "MemhooksTestAlwaysRun") -> dict[str, Any]:
    """A small image chain beside a node that holds 300 MiB, both into one output node."""
    return {
        "1": {"class_type": first, "inputs": {"value": value}},
        "2": {"class_type": "MemhooksTestHold", "inputs": {"value": ["1", 0], "megabytes": HELD_MIB}},
        "3": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "4": {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}},
        "5": {"class_type": "MemhooksTestBlobSize", "inputs": {"blob": ["2", 0], "image": ["4", 0]}},
    }


def test_the_node_holding_memory_is_the_heaviest_with_its_peak(comfy: ComfyUI) -> None:
    assert comfy.get("/memhooks/profile")["reason"] == "no prompt has finished yet"

    prompt_id, entry = comfy.run(workflow(11))
    assert entry["status"]["status_str"] == "success"

    answer = comfy.get("/memhooks/profile")
    assert answer["enabled"] is True and answer["prompts"] == [prompt_id]
    profile = answer["profile"]
    assert (profile["prompt_id"], profile["finished"], profile["success"]) == (prompt_id, True, True)
    nodes = {node["node_id"]: node for node in profile["nodes"]}
    assert set(nodes) == {"1", "2", "3", "4", "5"}
    assert [node["node_id"] for node in profile["nodes"]].index("2") < [n["node_id"] for n in profile["nodes"]].index(
        "5"
    )
    held = nodes["2"]
    assert held["node_class"] == "MemhooksTestHold" and held["cached"] is False and held["success"] is True
    assert profile["heaviest_node_id"] == "2"
    assert abs(held["ram_peak_bytes"] - HELD_MIB * MIB) <= 0.1 * HELD_MIB * MIB, held
    assert held["vram_peak_bytes"] is None  # --cpu: torch never initialises CUDA, and there is no GPU to ask
    assert all(node["rss_before_bytes"] and node["duration_seconds"] >= 0 for node in profile["nodes"])
    assert comfy.get(f"/api/memhooks/profile?prompt_id={prompt_id}")["profile"] == profile


def test_a_prompt_not_kept_is_a_404_and_cached_nodes_are_marked(comfy: ComfyUI) -> None:
    with pytest.raises(ComfyError, match="HTTP 404"):
        comfy.get("/memhooks/profile?prompt_id=never-ran")
    with pytest.raises(ComfyError, match="HTTP 400"):
        comfy.get("/memhooks/profile?prompt_id=" + "x" * 300)

    comfy.run(workflow(5, first="PrimitiveInt"))
    prompt_id, entry = comfy.run(workflow(5, first="PrimitiveInt"))  # the same prompt again: ComfyUI's cache answers
    assert entry["status"]["status_str"] == "success"

    profile = comfy.get(f"/memhooks/profile?prompt_id={prompt_id}")["profile"]
    assert profile["nodes"], profile
    assert all(node["cached"] for node in profile["nodes"]), profile["nodes"]
    assert all(node["ram_peak_bytes"] < 0.1 * HELD_MIB * MIB for node in profile["nodes"])


def test_turned_off_no_new_prompt_is_recorded(comfy: ComfyUI) -> None:
    before = comfy.get("/memhooks/profile")["prompts"]
    comfy.put("/memhooks/settings", {"node_profile": False})
    try:
        comfy.run(workflow(12))
        answer = comfy.get("/memhooks/profile")
        assert answer["enabled"] is False and answer["prompts"] == before
    finally:
        comfy.put("/memhooks/settings", {"node_profile": True})
