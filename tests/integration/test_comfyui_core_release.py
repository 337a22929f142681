"""ComfyUI 0.33's own release after every node, in a real one inside a memory cgroup with default settings.

From 0.33 on ComfyUI's RAM-pressure cache is the default and ComfyUI releases it after every node itself, reading
the host's free RAM. comfy_memhooks watches that release rather than racing it: the status says what ComfyUI's cache
evicted in the prompt beside what comfy_memhooks freed, and ``comfy_cache_release`` goes through the real
``comfy.memory_management.extra_ram_release`` with a target that adds the container's shortfall to the host's free
RAM (what ComfyUI compares its target with on 0.33). Skipped before 0.33, which releases nothing per node.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.cgroups import enter_group_launcher, limited_v1_group
from tests.integration.comfyui_server import ComfyUI, checkout_version, skip_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

GIB = 1024**3
MIB = 1024**2
LIMIT = 3 * GIB
FRAMES = {"frame_count": 60, "width": 640, "height": 480}  # 60 x 640 x 480 x 3 float32: 211 MiB
VIDEO_BYTES = 60 * 640 * 480 * 3 * 4
# Only for the second test: a 1% threshold is always reached, so the rule after VHS_VideoCombine (Balanced, always)
# asks ComfyUI's cache for RAM while the prompt runs.
ASK_THE_CACHE = {"ram_threshold": 1.0, "cooldown_seconds": 0, "pressure_watchdog": False}


def _video(seed: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "VHS_LoadVideo", "inputs": {"seed": seed, **FRAMES}},
        "2": {"class_type": "VHS_VideoCombine", "inputs": {"images": ["1", 0], "frame_rate": 8.0}},
    }


def _two_prompts(settings: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """Two videos in a 3 GB container: each prompt's status and the history, with the second prompt's id."""
    if checkout_version() < (0, 33, 0):
        pytest.skip("this ComfyUI does not release its cache after every node (0.33 and later do)")
    with limited_v1_group(LIMIT) as group:
        if group is None:
            pytest.skip("cannot create a v1 memory cgroup here (needs root and a writable v1 memory hierarchy)")
        server = ComfyUI(launcher=enter_group_launcher(group), record_events=False, settings=settings)
        try:
            server.start()
            statuses = []
            for seed in (1, 2):
                prompt_id, entry = server.run(_video(seed))
                assert entry["status"]["status_str"] == "success", server.log_tail()
                statuses.append(server.get("/memhooks/status"))
            records = server.get("/memhooks/history")["records"]
            assert server.our_tracebacks() == []
        finally:
            server.stop()
    return statuses, records, prompt_id


def test_what_comfyuis_own_release_evicted_is_told_beside_what_comfy_memhooks_freed() -> None:
    statuses, _, second_id = _two_prompts({})  # no settings file: the defaults
    first, second = (status["comfyui"]["prompt_release"] for status in statuses)
    assert statuses[1]["comfyui"]["ram_reader"] == "comfy_memhooks"  # 0.33 has no comfy.system_memory
    assert statuses[1]["comfyui"]["ram_check"] is None
    assert first["core_calls"] >= 2 and first["core_evicted"] == 0, first  # nothing older in the first prompt
    # After the second prompt's first node, ComfyUI's own release evicted the first prompt's two outputs (the
    # video's frames and the encoder's empty one), counting the frames' bytes; comfy_memhooks asked for nothing.
    assert second["prompt_id"] == second_id and second["finished_at"] is not None
    assert (second["core_evicted"], second["ours_calls"]) == (2, 0), second
    assert second["core_freed_bytes"] >= VIDEO_BYTES, second
    assert second["active_evictions"] is False and second["full_evictions"] is False
    assert (
        f"ComfyUI released its cache {second['core_calls']} time(s) in this prompt, evicting 2 outputs (0.21 GB"
        in (second["text"])
    ), second["text"]
    assert "comfy_memhooks freed" in second["text"]


def test_comfy_cache_release_goes_through_extra_ram_release_with_the_containers_shortfall() -> None:
    statuses, records, _ = _two_prompts(ASK_THE_CACHE)
    asked = [
        action
        for record in records
        if record["trigger"]["phase"] == "after" and record["trigger"]["node_class"] == "VHS_VideoCombine"
        for action in record["actions"]
        if action["name"] == "comfy_cache_release"
    ]
    assert asked and all(action["skipped_reason"] is None for action in asked), asked
    detail = asked[0]["detail"]
    match = re.match(r"comfy\.memory_management\.extra_ram_release\(([\d.]+) GB available\), for ([\d.]+) GB", detail)
    assert match is not None, detail
    target, shortfall = float(match.group(1)), float(match.group(2))
    # 99% of the 3 GB container should be free: what is missing there is added to the host's free RAM, which is
    # what ComfyUI 0.33 compares the target with (so its cache evicts although the host has room).
    assert shortfall > 0.3 and target - shortfall > LIMIT / GIB, detail
    assert "then with free_active=True (this prompt's outputs too)" in detail, detail
    second = statuses[1]["comfyui"]["prompt_release"]
    assert second["ours_calls"] >= 2 and second["ours_evicted"] >= 1, second
    assert second["memhooks_cleanups"] >= 1
