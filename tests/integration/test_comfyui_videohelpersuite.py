"""The automatic hook around the real VideoHelperSuite nodes, in a real ComfyUI.

Needs ``COMFYUI_DIR`` and ``VHS_DIR`` (a checkout of Kosinkadink/ComfyUI-VideoHelperSuite, whose requirements —
opencv and imageio-ffmpeg — are installed in ComfyUI's Python); skipped otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.comfyui_server import ComfyUI, running_comfyui, skip_reason

VHS_DIR = os.environ.get("VHS_DIR")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
    pytest.mark.skipif(not VHS_DIR, reason="VHS_DIR is not set: no VideoHelperSuite checkout to load"),
]


@pytest.fixture(scope="module")
def comfy() -> Iterator[ComfyUI]:
    # A 1% RAM threshold is always exceeded: every rule's optimization is a pressure one, which the cooldown never
    # holds back, so the "before" rules run too.
    settings = {"ram_threshold": 1}
    with running_comfyui(packs=(Path(str(VHS_DIR)),), record_events=False, settings=settings) as server:
        yield server


def hook_records(comfy: ComfyUI, node_class: str) -> list[dict[str, Any]]:
    records = comfy.get("/memhooks/history")["records"]
    return [r for r in records if r["trigger"]["kind"] == "hook" and r["trigger"]["node_class"] == node_class]


def test_combining_then_loading_a_video_frees_memory_around_the_real_nodes(comfy: ComfyUI) -> None:
    combine = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 8, "color": 16711680}},
        "2": {
            "class_type": "VHS_VideoCombine",
            "inputs": {
                "images": ["1", 0],
                "frame_rate": 8,
                "loop_count": 0,
                "filename_prefix": "memhooks",
                "format": "video/h264-mp4",
                "pingpong": False,
                "save_output": True,
                "pix_fmt": "yuv420p",
                "crf": 19,
                "save_metadata": False,
                "trim_to_audio": False,
            },
        },
    }
    _, entry = comfy.run(combine)
    assert entry["status"]["status_str"] == "success", comfy.log_tail()
    (video,) = entry["outputs"]["2"]["gifs"]
    path = Path(video["fullpath"])
    assert path.is_file() and path.stat().st_size > 0
    (after,) = hook_records(comfy, "VHS_VideoCombine")
    assert (after["trigger"]["phase"], after["mode"]) == ("after", "Balanced")

    load = {
        "1": {
            "class_type": "VHS_LoadVideoPath",
            "inputs": {
                "video": str(path),
                "force_rate": 0,
                "custom_width": 0,
                "custom_height": 0,
                "frame_load_cap": 0,
                "skip_first_frames": 0,
                "select_every_nth": 1,
            },
        },
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    _, entry = comfy.run(load)
    assert entry["status"]["status_str"] == "success", comfy.log_tail()
    assert entry["outputs"]["2"]["text"] == ["8"]  # every frame came back through the hooked loader
    assert len(entry["outputs"]["3"]["images"]) == 8
    (before,) = hook_records(comfy, "VHS_LoadVideoPath")
    assert (before["trigger"]["phase"], before["mode"]) == ("before", "Aggressive")
    reason = before["trigger"]["reason"]
    assert reason == "before VHS_LoadVideoPath: rule 'VHS_LoadVideo*' runs Aggressive at the threshold"
    assert before["trigger"]["pressure"][0]["resource"] == "RAM"  # a pressure cleanup: the 1% threshold was reached
    assert comfy.our_tracebacks() == []
