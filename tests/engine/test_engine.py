"""Every mode outside ComfyUI and with a stand-in ComfyUI; ReActor's caches; one failing action among others."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import pytest

from comfy_memhooks.engine.actions import MODE_ACTIONS, NOT_IN_COMFYUI
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import Trigger, TriggerKind
from comfy_memhooks.engine.modes import Mode
from comfy_memhooks.engine.pressure import Thresholds
from comfy_memhooks.engine.request import CleanupRequest, Urgency
from tests.fake_nvml import GIB, FakeGpu

# Loaded as it is inside ComfyUI: the VRAM actions name CUDA devices with it.
torch = pytest.importorskip("torch")

MANUAL = Trigger(kind=TriggerKind.MANUAL, reason="test")
VRAM_85 = Thresholds(ram_percent=80, vram_percent=85, cooldown_seconds=0)
COMFY_ACTIONS = {
    "comfy_soft_empty_cache",
    "comfy_free_memory_to_threshold",
    "comfy_unload_all_models",
}


def one_gpu_at(percent: float) -> list[FakeGpu]:
    total = 24 * GIB
    return [FakeGpu("GPU", "GPU-1", "00000000:01:00.0", total=total, used=int(total * percent / 100))]


def test_monitor_only_frees_nothing(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    outcome = engine.run(CleanupRequest(trigger=MANUAL, mode=Mode.MONITOR_ONLY))
    assert not outcome.performed and outcome.record is None
    assert engine.history.records() == ()


def test_each_mode_includes_the_one_before() -> None:
    names = {mode: {action.name for action in MODE_ACTIONS[mode]} for mode in Mode}
    assert names[Mode.MONITOR_ONLY] == set()
    assert names[Mode.CONSERVATIVE] == {"gc_collect", "cuda_empty_cache"}
    assert names[Mode.CONSERVATIVE] - {"gc_collect"} < names[Mode.BALANCED]
    assert names[Mode.BALANCED] >= {
        "cuda_ipc_collect",
        "comfy_soft_empty_cache",
        "comfy_free_memory_to_threshold",
        "malloc_trim",
    }
    assert names[Mode.BALANCED] - {"gc_collect"} < names[Mode.AGGRESSIVE]
    assert names[Mode.AGGRESSIVE] >= {"comfy_unload_all_models", "gc_collect_until_stable", "release_reactor_caches"}


@pytest.mark.parametrize("mode", [Mode.CONSERVATIVE, Mode.BALANCED, Mode.AGGRESSIVE])
def test_every_mode_outside_comfyui_runs_and_says_what_it_skipped(
    make_engine: Callable[..., Engine], mode: Mode
) -> None:
    assert "comfy.model_management" not in sys.modules
    outcome = make_engine().run(CleanupRequest(trigger=MANUAL, mode=mode))
    assert outcome.performed and outcome.record is not None
    reports = {report.name: report for report in outcome.record.actions}
    assert list(reports) == [action.name for action in MODE_ACTIONS[mode]]
    for name, report in reports.items():
        assert report.error is None
        assert report.duration_seconds >= 0
        # RSS is always measurable, but a skipped action did nothing to measure; there is no GPU reading here.
        assert (report.ram_freed_bytes is None) is (report.skipped_reason is not None)
        assert report.vram_freed_bytes is None
        if name in COMFY_ACTIONS:
            assert report.skipped_reason == NOT_IN_COMFYUI
        if name in {"cuda_empty_cache", "cuda_ipc_collect"}:
            assert report.skipped_reason is not None  # no CUDA on this machine
    assert reports["gc_collect" if mode is not Mode.AGGRESSIVE else "gc_collect_until_stable"].skipped_reason is None


def test_conservative_never_touches_comfyui(
    make_engine: Callable[..., Engine], comfy_model_management: types.ModuleType
) -> None:
    make_engine(one_gpu_at(95)).run(
        CleanupRequest(trigger=MANUAL, mode=Mode.CONSERVATIVE, thresholds=VRAM_85, urgency=Urgency.ROUTINE)
    )
    assert comfy_model_management.calls == []  # type: ignore[attr-defined]


def test_balanced_frees_just_enough_vram_to_get_under_the_threshold(
    make_engine: Callable[..., Engine], comfy_model_management: types.ModuleType
) -> None:
    outcome = make_engine(one_gpu_at(95)).run(
        CleanupRequest(trigger=MANUAL, mode=Mode.BALANCED, thresholds=VRAM_85, urgency=Urgency.ROUTINE)
    )
    calls = comfy_model_management.calls  # type: ignore[attr-defined]
    assert ("free_memory", int(24 * GIB * 0.15), "cuda:0") in calls
    assert ("soft_empty_cache",) in calls
    assert ("unload_all_models",) not in calls
    assert outcome.record is not None
    free = next(a for a in outcome.record.actions if a.name == "comfy_free_memory_to_threshold")
    assert free.detail is not None and "1 model(s) unloaded" in free.detail


def test_balanced_under_the_threshold_unloads_nothing(
    make_engine: Callable[..., Engine], comfy_model_management: types.ModuleType
) -> None:
    outcome = make_engine(one_gpu_at(50)).run(
        CleanupRequest(trigger=MANUAL, mode=Mode.BALANCED, thresholds=VRAM_85, urgency=Urgency.ROUTINE)
    )
    assert [c[0] for c in comfy_model_management.calls] == ["soft_empty_cache"]  # type: ignore[attr-defined]
    assert outcome.record is not None
    free = next(a for a in outcome.record.actions if a.name == "comfy_free_memory_to_threshold")
    assert free.skipped_reason == "VRAM is under the 85% threshold"


def test_aggressive_unloads_every_model(
    make_engine: Callable[..., Engine], comfy_model_management: types.ModuleType
) -> None:
    make_engine(one_gpu_at(50)).run(
        CleanupRequest(trigger=MANUAL, mode=Mode.AGGRESSIVE, thresholds=VRAM_85, urgency=Urgency.ROUTINE)
    )
    names = [c[0] for c in comfy_model_management.calls]  # type: ignore[attr-defined]
    assert names == ["unload_all_models", "soft_empty_cache"]


def test_one_failing_action_never_stops_the_others(
    make_engine: Callable[..., Engine], comfy_model_management: types.ModuleType
) -> None:
    def broken() -> None:
        raise RuntimeError("driver went away")

    comfy_model_management.unload_all_models = broken  # type: ignore[attr-defined]
    outcome = make_engine().run(CleanupRequest(trigger=MANUAL, mode=Mode.AGGRESSIVE))
    assert outcome.record is not None
    reports = {a.name: a for a in outcome.record.actions}
    assert reports["comfy_unload_all_models"].error == "RuntimeError: driver went away"
    after = [a.name for a in outcome.record.actions][list(reports).index("comfy_unload_all_models") + 1 :]
    assert after and all(reports[name].error is None for name in after)
    assert ("soft_empty_cache",) in comfy_model_management.calls  # type: ignore[attr-defined]


def _reactor_stand_in(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A module with the attribute names of ReActor's scripts/reactor_swapper.py, under a folder-made name."""
    module = types.ModuleType("custom_nodes.comfyui-reactor-node.scripts.reactor_swapper")
    module.unloaded = 0  # type: ignore[attr-defined]
    module.FS_MODEL = object()  # type: ignore[attr-defined]
    module.ANALYSIS_MODELS = {"640": object(), "320": None}  # type: ignore[attr-defined]
    module.SOURCE_FACES = ["face"]  # type: ignore[attr-defined]
    module.SOURCE_IMAGE_HASH = "abc"  # type: ignore[attr-defined]
    module.TARGET_FACES = ["face"]  # type: ignore[attr-defined]
    module.TARGET_IMAGE_HASH = "def"  # type: ignore[attr-defined]
    module.TARGET_FACES_LIST = [["f"], ["f"], ["f"]]  # type: ignore[attr-defined]
    module.TARGET_IMAGE_LIST_HASH = ["1", "2", "3"]  # type: ignore[attr-defined]

    def unload_all_models() -> None:
        module.unloaded += 1  # type: ignore[attr-defined]
        module.FS_MODEL = None  # type: ignore[attr-defined]
        module.ANALYSIS_MODELS["640"] = None  # type: ignore[attr-defined]

    module.unload_all_models = unload_all_models  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


def test_aggressive_releases_reactors_caches(
    make_engine: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    reactor = _reactor_stand_in(monkeypatch)
    outcome = make_engine().run(CleanupRequest(trigger=MANUAL, mode=Mode.AGGRESSIVE))
    assert reactor.unloaded == 1  # type: ignore[attr-defined]
    assert reactor.FS_MODEL is None and reactor.ANALYSIS_MODELS == {"640": None, "320": None}  # type: ignore[attr-defined]
    assert reactor.SOURCE_FACES is None and reactor.SOURCE_IMAGE_HASH is None  # type: ignore[attr-defined]
    assert reactor.TARGET_FACES is None and reactor.TARGET_IMAGE_HASH is None  # type: ignore[attr-defined]
    assert reactor.TARGET_FACES_LIST == [] and reactor.TARGET_IMAGE_LIST_HASH == []  # type: ignore[attr-defined]
    assert outcome.record is not None
    report = next(a for a in outcome.record.actions if a.name == "release_reactor_caches")
    assert report.detail is not None
    assert reactor.__name__ in report.detail and "3 cached frame(s)" in report.detail


def test_balanced_leaves_reactor_alone(make_engine: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch) -> None:
    reactor = _reactor_stand_in(monkeypatch)
    make_engine().run(CleanupRequest(trigger=MANUAL, mode=Mode.BALANCED))
    assert reactor.unloaded == 0 and reactor.SOURCE_FACES == ["face"]  # type: ignore[attr-defined]


def test_without_reactor_the_action_says_so(make_engine: Callable[..., Engine]) -> None:
    outcome = make_engine().run(CleanupRequest(trigger=MANUAL, mode=Mode.AGGRESSIVE))
    assert outcome.record is not None
    report = next(a for a in outcome.record.actions if a.name == "release_reactor_caches")
    assert report.skipped_reason == "ReActor is not loaded"
