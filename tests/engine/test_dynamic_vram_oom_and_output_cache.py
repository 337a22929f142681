"""Today's ComfyUI without a GPU: dynamic VRAM through a comfy-aimdo stand-in, is_oom, ComfyUI's output cache."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import pytest

from comfy_memhooks import hook
from comfy_memhooks.engine.comfy_cache import (
    POLL_MARGIN_BYTES,
    SeenCaches,
    cache_notice,
    poll_headroom_gb,
    release,
)
from comfy_memhooks.engine.comfy_release import PromptReleaseWatch
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import Trigger, TriggerKind
from comfy_memhooks.engine.modes import Mode
from comfy_memhooks.engine.pressure import Thresholds
from comfy_memhooks.engine.report import detailed_report, status_line
from comfy_memhooks.engine.request import CleanupRequest, Urgency
from comfy_memhooks.hook.oom import is_out_of_memory
from comfy_memhooks.panel.payloads import comfyui_json, serialize
from comfy_memhooks.probe.dynamic_vram import read_dynamic_vram
from comfy_memhooks.probe.readings import GIB, RamReading, RamSource
from tests.fake_nvml import FakeGpu
from tests.hook_support import chain_prompt
from tests.standin_aimdo import install_aimdo
from tests.standin_executor import StandInNode, make_execution_module

torch = pytest.importorskip("torch")

VRAM_85 = Thresholds(ram_percent=80, vram_percent=85, cooldown_seconds=0)
MANUAL = Trigger(kind=TriggerKind.MANUAL, reason="test")
TOTAL = 24 * GIB


def gpu_at(percent: float) -> list[FakeGpu]:
    return [FakeGpu("GPU", "GPU-1", "00000000:01:00.0", total=TOTAL, used=int(TOTAL * percent / 100))]


# --- dynamic VRAM ----------------------------------------------------------------------------------------------


def test_no_dynamic_vram_outside_comfyui_or_when_comfyui_has_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "comfy.memory_management", raising=False)
    assert read_dynamic_vram() is None
    install_aimdo(monkeypatch, resident=GIB, evictable=GIB, headroom=GIB, enabled=False)
    assert read_dynamic_vram() is None


def test_the_allocators_figures_are_read_and_an_uninitialised_one_says_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    install_aimdo(monkeypatch, resident=20 * GIB, evictable=12 * GIB, headroom=GIB)
    reading = read_dynamic_vram()
    assert reading is not None
    assert (reading.device_index, reading.resident_bytes, reading.evictable_bytes, reading.headroom_bytes) == (
        0,
        20 * GIB,
        12 * GIB,
        GIB,
    )
    install_aimdo(monkeypatch, resident=20 * GIB, evictable=12 * GIB, headroom=None)
    reading = read_dynamic_vram()
    assert reading is not None and reading.headroom_bytes is None  # RuntimeError before init: unknown, not 0


def test_full_looking_vram_is_not_pressure_when_the_allocator_can_evict_it(
    monkeypatch: pytest.MonkeyPatch, make_engine: Callable[..., Engine], comfy_model_management: types.ModuleType
) -> None:
    engine = make_engine(gpu_at(95))
    assert VRAM_85.pressure(engine.snapshot())  # without dynamic VRAM, 95% is over 85%
    install_aimdo(monkeypatch, resident=20 * GIB, evictable=12 * GIB, headroom=GIB)
    snapshot = engine.snapshot()
    assert snapshot.vram_percent is not None and snapshot.vram_percent > 94  # the device still looks full
    pressure = snapshot.vram_pressure_percent
    assert pressure is not None and 44 < pressure < 46  # (22.8 - 12) / 24 GB: what cannot be evicted
    assert not VRAM_85.pressure(snapshot)
    outcome = engine.run(
        CleanupRequest(trigger=MANUAL, mode=Mode.BALANCED, thresholds=VRAM_85, urgency=Urgency.ROUTINE)
    )
    assert outcome.record is not None
    free = next(a for a in outcome.record.actions if a.name == "comfy_free_memory_to_threshold")
    assert free.skipped_reason == "VRAM is under the 85% threshold"
    assert "free_memory" not in [call[0] for call in comfy_model_management.calls]  # type: ignore[attr-defined]


def test_vram_that_cannot_keep_the_headroom_is_full(
    monkeypatch: pytest.MonkeyPatch, make_engine: Callable[..., Engine]
) -> None:
    # 1.2 GB free, nothing evictable, a 2 GB headroom: even evicting everything leaves less free than it must keep.
    install_aimdo(monkeypatch, resident=0, evictable=0, headroom=2 * GIB)
    snapshot = make_engine(gpu_at(95)).snapshot()
    assert snapshot.vram_pressure_percent == 100.0
    assert VRAM_85.pressure(snapshot)


def test_status_report_and_panel_say_dynamic_vram_is_on(
    monkeypatch: pytest.MonkeyPatch, make_engine: Callable[..., Engine]
) -> None:
    install_aimdo(monkeypatch, resident=20 * GIB, evictable=12 * GIB, headroom=GIB)
    engine = make_engine(gpu_at(95))
    snapshot = engine.snapshot()
    assert status_line(snapshot).endswith("| dynamic VRAM on, headroom 1GB")
    report = detailed_report(snapshot)
    assert "Dynamic VRAM (comfy-aimdo) on GPU 0: headroom 1GB; it holds 20GB, 12GB of it evictable" in report
    assert "the VRAM threshold reads what cannot be given back: 45%" in report
    payload = comfyui_json(snapshot, engine)
    assert payload["dynamic_vram"] == "dynamic VRAM on, headroom 1GB"
    serialize(payload)


# --- OOM ---------------------------------------------------------------------------------------------------------


class AcceleratorError(RuntimeError):
    pass


def test_every_error_comfyuis_is_oom_counts_is_out_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    model_management = types.ModuleType("comfy.model_management")
    model_management.OOM_EXCEPTION = torch.cuda.OutOfMemoryError  # type: ignore[attr-defined]

    def is_oom(error: BaseException) -> bool:  # ComfyUI 0.18's rule, with its accelerator error
        return isinstance(error, torch.cuda.OutOfMemoryError) or (
            isinstance(error, AcceleratorError) and "out of memory" in str(error).lower()
        )

    model_management.is_oom = is_oom  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy.model_management", model_management)
    assert is_out_of_memory(AcceleratorError("CUDA error: out of memory"))
    assert not is_out_of_memory(AcceleratorError("CUDA error: an illegal memory access"))
    assert is_out_of_memory(MemoryError("Unable to allocate 3 GiB"))
    assert not is_out_of_memory(ValueError("a bug"))


def test_is_oom_is_not_asked_where_comfyui_counts_every_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    model_management = types.ModuleType("comfy.model_management")
    model_management.OOM_EXCEPTION = Exception  # type: ignore[attr-defined]  # ComfyUI without CUDA
    model_management.is_oom = lambda error: isinstance(error, Exception)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy.model_management", model_management)
    assert not is_out_of_memory(ValueError("a bug"))


# --- ComfyUI's output cache ---------------------------------------------------------------------------------------


def ram(percent: float, source: RamSource = RamSource.CGROUP_V2) -> RamReading:
    total = 4 * GIB
    used = int(total * percent / 100)
    return RamReading(source, total, used, total - used, GIB, 64 * GIB)


class CacheSet:
    """ComfyUI's ``CacheSet`` as the action reads it: its ``outputs``, held weakly like ComfyUI's plain object."""

    def __init__(self, outputs: object):
        self.outputs = outputs


def test_the_poll_headroom_makes_the_host_reading_free_what_the_container_needs() -> None:
    # 90% of 4 GB: 0.4 GB free, 0.8 GB wanted (80%): 0.4 GB short. The host has 40 GB free.
    headroom = poll_headroom_gb(ram(90), int(4 * GIB * 0.2), 40 * GIB)
    assert headroom == pytest.approx(40 + 0.4, abs=0.01)  # the poll acts only when its reading is below this
    # A tiny shortfall still leaves a margin: the host's free RAM moves between our reading and the poll's.
    assert poll_headroom_gb(ram(80.5), int(4 * GIB * 0.2), 40 * GIB) * GIB >= 40 * GIB + POLL_MARGIN_BYTES


def test_no_api_means_the_cache_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "comfy.memory_management", raising=False)
    detail, skipped = release(ram(90), 80, SeenCaches(), PromptReleaseWatch())
    assert detail is None and skipped is not None and "no output cache seen yet" in skipped
    assert release(ram(50), 80, SeenCaches(), PromptReleaseWatch()) == (None, "RAM is under its 80% threshold")


def test_extra_ram_release_is_asked_for_the_available_ram_that_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """As ComfyUI defines it: evict until the available RAM it reads reaches ``target``; the bytes freed."""
    asked: list[int] = []

    def extra_ram_release(target: int, free_active: bool = False) -> int:
        asked.append(target)
        return 300 * 1024**2

    memory_management = types.ModuleType("comfy.memory_management")
    memory_management.extra_ram_release = extra_ram_release  # type: ignore[attr-defined]
    system_memory = types.ModuleType("comfy.system_memory")
    system_memory.virtual_memory_available = lambda: GIB  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy.memory_management", memory_management)
    monkeypatch.setitem(sys.modules, "comfy.system_memory", system_memory)
    detail, skipped = release(ram(90), 80, SeenCaches(), PromptReleaseWatch())
    shortfall = int(4 * GIB * 0.2) - (4 * GIB - int(4 * GIB * 0.9))
    # 0.29 GB of older outputs was less than the 0.40 GB missing: this prompt's outputs are asked for too.
    assert skipped is None and asked == [GIB + shortfall, GIB + shortfall]
    assert detail == (
        f"comfy.memory_management.extra_ram_release({(GIB + shortfall) / GIB:.2f} GB available), "
        f"for {shortfall / GIB:.2f} GB: freed 0.29 GB; then with free_active=True (this prompt's outputs too): "
        "freed 0.29 GB"
    )


def test_the_panel_says_when_comfyuis_ram_cache_reads_the_host_in_a_container(monkeypatch: pytest.MonkeyPatch) -> None:
    cli_args = types.ModuleType("comfy.cli_args")
    cli_args.args = types.SimpleNamespace(cache_ram=4.0)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy.cli_args", cli_args)
    monkeypatch.delitem(sys.modules, "comfy.memory_management", raising=False)

    class RAMPressureCache:  # only the class name says which cache ComfyUI runs
        pass

    caches = CacheSet(RAMPressureCache())
    seen = SeenCaches()
    seen.remember(caches)
    notice = cache_notice(ram(50), seen, host_available=42 * GIB)
    assert notice is not None and notice.reads_host_ram and notice.kind == "RAMPressureCache"
    assert notice.advice is not None and "pass --cache-ram 44.0 to keep 4 GB free in the container" in notice.advice
    host = cache_notice(ram(50, RamSource.HOST), seen, host_available=42 * GIB)
    assert host is not None and not host.reads_host_ram and host.advice is None


def test_the_cache_is_remembered_weakly() -> None:
    caches = CacheSet("the outputs")
    seen = SeenCaches()
    seen.remember(caches)
    assert seen.outputs() == "the outputs"
    del caches
    assert seen.outputs() is None


def test_the_hook_tells_comfyuis_caches_once_per_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    module = make_execution_module("async11", {"Const": StandInNode(lambda x: x)})
    seen: list[object] = []
    hook.install(module, heavy=lambda name: False, caches_seen=seen.append)
    try:
        executor = module.PromptExecutor()
        prompt, order = chain_prompt("Const", "Const", "Const")
        executor.execute(prompt, "p-1", {}, order)
        executor.execute(prompt, "p-2", {}, order)
    finally:
        hook.uninstall()
    assert seen == [executor.caches, executor.caches]
