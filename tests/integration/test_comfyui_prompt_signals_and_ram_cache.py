"""What the hook uses of today's ComfyUI, in a real one: prompt signals without a cache provider, ComfyUI's RAM cache.

Run against each ComfyUI generation by pointing ``COMFYUI_DIR`` at it; skipped when it is not set. 0.18 tells
cache providers when prompts start and end, but registering one makes ComfyUI serialize and hash every cache key
(``benchmarks/bench_versions.py``), so the hook patches ``PromptExecutor`` on every version and registers none.
``--cache-ram`` (0.8 and later; the default from 0.33 on) selects the RAM-pressure cache, which the
``comfy_cache_release`` action asks for RAM before any model is unloaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.comfyui_server import ComfyUI, checkout_version, running_comfyui, skip_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

MIB = 1024**2
# No heavy-node rule and no watchdog: only the request below frees anything. A RAM threshold of 1% is always
# reached, so ComfyUI's cache is asked for everything it holds.
ASK_THE_CACHE = {"rules": [], "pressure_watchdog": False, "ram_threshold": 1.0, "cooldown_seconds": 0}
FRAMES = {"frame_count": 60, "width": 640, "height": 480}  # 60 x 640 x 480 x 3 float32: 211 MiB


def _version(comfy: ComfyUI) -> tuple[int, ...]:
    return tuple(int(part) for part in comfy.version().split(".")[:3])


def _video_prompt(seed: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "VHS_LoadVideo", "inputs": {"seed": seed, **FRAMES}},
        "2": {"class_type": "VHS_VideoCombine", "inputs": {"images": ["1", 0], "frame_rate": 8.0}},
    }


@pytest.fixture(scope="module")
def cache_ram() -> Iterator[ComfyUI]:
    if checkout_version() < (0, 8, 0):
        pytest.skip("this ComfyUI has no RAM-pressure cache (--cache-ram came in 0.8)")
    # A headroom of 10 MB: ComfyUI's own poll, reading the host's free RAM, never evicts on this machine.
    with running_comfyui(settings=ASK_THE_CACHE, arguments=("--cache-ram", "0.01")) as server:
        yield server


def test_prompt_signals_come_from_the_prompt_executor_patch_and_no_cache_provider_is_registered() -> None:
    with running_comfyui() as comfy:
        hook = comfy.get("/memhooks/status")["hook"]
        comfy.run(_video_prompt(1))
        names = [event["signal"] for event in comfy.events()]
        version = _version(comfy)
        # The test pack's route answers how many providers ComfyUI has (404 before 0.18, which has none).
        providers = comfy.post("/memhooks_test/provider", {"registered": False}) if version >= (0, 18, 0) else None
    assert hook["prompt_signals"] is True, hook
    assert names.count("prompt_started") == 1 and names.count("prompt_finished") == 1, names
    assert names.index("prompt_started") < names.index("node_started") < names.index("prompt_finished")
    assert providers in (None, {"providers": 0})


def _release(record: dict[str, Any]) -> dict[str, Any]:
    return next(action for action in record["actions"] if action["name"] == "comfy_cache_release")


def test_the_ram_cache_is_asked_before_any_model_is_unloaded(cache_ram: ComfyUI) -> None:
    cache_ram.run(_video_prompt(2))
    answer = cache_ram.post("/memhooks/optimize", {"mode": "Balanced"})
    assert answer["state"] == "performed", answer
    names = [action["name"] for action in answer["record"]["actions"]]
    assert names.index("comfy_cache_release") < names.index("comfy_free_memory_to_threshold")
    release = _release(answer["record"])
    assert release["skipped_reason"] is None and release["error"] is None, release
    if _version(cache_ram) >= (0, 33, 0):
        # Between prompts ComfyUI's extra_ram_release does nothing (its callback is unset): the cache is asked.
        assert release["detail"].startswith("RAMPressureCache.ram_release("), release
        assert "free_active=True" in release["detail"] and not release["detail"].endswith("freed 0.00 GB"), release
    else:
        assert release["detail"].startswith("RAMPressureCache.poll(ram_headroom="), release
        assert ": evicted " in release["detail"] and not release["detail"].endswith(": evicted 0 of 2 cached outputs")
    # The video's frames were what the cache held: what the action reports freed is most of them.
    assert release["ram_freed_bytes"] > 150 * MIB, json.dumps(release)


def test_another_cache_is_left_alone() -> None:
    # From 0.33 on the RAM-pressure cache is the default; --cache-classic is the old one.
    classic = ("--cache-classic",) if checkout_version() >= (0, 33, 0) else ()
    with running_comfyui(settings=ASK_THE_CACHE, arguments=classic) as comfy:
        comfy.run(_video_prompt(3))
        answer = comfy.post("/memhooks/optimize", {"mode": "Balanced"})
    release = _release(answer["record"])
    assert release["detail"] is None and release["ram_freed_bytes"] is None, release
    assert "has no API to release its cache here" in release["skipped_reason"]
    assert "left alone" in release["skipped_reason"]
    if checkout_version() >= (0, 33, 0):
        # 0.33 has extra_ram_release, but sets no callback for this cache, whether a prompt runs or not.
        assert release["skipped_reason"] == (
            "ComfyUI has no API to release its cache here (its output cache is HierarchicalCache): left alone"
        ), release
