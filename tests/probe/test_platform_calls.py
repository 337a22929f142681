"""Each platform's heap call found before it is called, a missing one skipped with a reason while the rest of the
mode runs, and torch's backends asked only once this process uses them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest

from comfy_memhooks.engine import heap
from comfy_memhooks.engine.actions import NOT_IN_COMFYUI
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import Trigger, TriggerKind
from comfy_memhooks.engine.modes import Mode
from comfy_memhooks.engine.request import CleanupRequest
from comfy_memhooks.probe.backends import torch_backend
from comfy_memhooks.probe.readings import GpuBackend
from tests import standin_platforms as standin

MANUAL = Trigger(kind=TriggerKind.MANUAL, reason="stand-in allocator")


def _release(platform: str, libraries: dict[str | None, standin.StandinLibrary]) -> tuple[str | None, str | None]:
    release, reason = heap.find_heap_release(platform, standin.standin_loader(libraries))
    return (None if release is None else release()), reason


def test_glibc_trims_the_heap_of_this_process() -> None:
    libraries = standin.glibc()
    assert _release("linux", libraries) == ("malloc_trim(0): heap pages returned to the system", None)
    assert libraries[None].malloc_trim.calls == [(0,)]


@pytest.mark.parametrize(
    ("platform", "libraries", "reason"),
    [
        ("linux", standin.musl(), heap.NO_MALLOC_TRIM),
        ("linux", {}, heap.NO_MALLOC_TRIM),
        ("darwin", {}, "libSystem has no malloc_zone_pressure_relief (macOS 10.7 or later has it)"),
        ("win32", {}, "no C runtime with _heapmin could be loaded (ucrtbase, msvcrt)"),
        ("win32", {"ucrtbase": standin.StandinLibrary()}, "no C runtime with _heapmin could be loaded"),
    ],
    ids=["musl", "no-libc", "macos-without-relief", "windows-without-crt", "ucrt-without-heapmin"],
)
def test_a_missing_function_is_a_reason_not_an_error(
    platform: str, libraries: dict[str | None, standin.StandinLibrary], reason: str
) -> None:
    release, why = _release(platform, libraries)
    assert release is None and why is not None and why.startswith(reason)


def test_windows_falls_back_to_msvcrt_and_says_what_mimalloc_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMALLOC_PURGE_DELAY", "0")
    libraries = {"msvcrt": standin.StandinLibrary(_heapmin=standin.StandinFunction(-1))}
    detail, _ = _release("win32", libraries)
    assert detail == (
        "msvcrt _heapmin(): the C runtime reported nothing to return; "
        "mimalloc (torch's CPU allocator) purges freed pages after MIMALLOC_PURGE_DELAY=0 ms"
    )


def test_macos_relieves_every_malloc_zone() -> None:
    libraries = standin.macos_libsystem()
    detail, _ = _release("darwin", libraries)
    assert detail == "malloc_zone_pressure_relief: 64MB returned to the system by the malloc zones"
    assert libraries["/usr/lib/libSystem.B.dylib"].malloc_zone_pressure_relief.calls == [(None, 0)]


def test_working_set_trimming_is_never_looked_up() -> None:
    """``EmptyWorkingSet`` and ``SetProcessWorkingSetSize`` only page memory out: neither is ever asked for."""
    asked: list[str | None] = []

    def loader(name: str | None) -> Any:
        asked.append(name)
        return standin.StandinLibrary(_heapmin=standin.StandinFunction(0))

    release, _ = heap.find_heap_release("win32", loader)
    assert release is not None
    release()
    assert asked == ["ucrtbase"]


@pytest.mark.parametrize("mode", [Mode.BALANCED, Mode.AGGRESSIVE])
def test_without_a_trim_function_the_rest_of_the_mode_runs(
    monkeypatch: pytest.MonkeyPatch, make_engine: Callable[..., Engine], mode: Mode
) -> None:
    monkeypatch.setattr(heap, "library_loader", standin.standin_loader(standin.musl()))
    outcome = make_engine().run(CleanupRequest(trigger=MANUAL, mode=mode))
    assert outcome.performed and outcome.record is not None
    reports = {report.name: report for report in outcome.record.actions}
    assert reports["malloc_trim"].skipped_reason == heap.NO_MALLOC_TRIM
    assert all(report.error is None for report in reports.values())
    collect = "gc_collect" if mode is Mode.BALANCED else "gc_collect_until_stable"
    assert reports[collect].skipped_reason is None and (reports[collect].detail or "").startswith("collected")
    assert list(reports)[-1] == "malloc_trim"  # it is the last step: everything before it ran


def test_the_model_free_cleanup_runs_without_a_trim_function(
    monkeypatch: pytest.MonkeyPatch, make_engine: Callable[..., Engine]
) -> None:
    monkeypatch.setattr(heap, "library_loader", standin.standin_loader(standin.musl()))
    outcome = make_engine().run(CleanupRequest.model_free(TriggerKind.BOUNDARY, ram_threshold=0.0))
    assert outcome is not None and outcome.record is not None
    assert [(a.name, a.skipped_reason) for a in outcome.record.actions] == [
        ("gc_collect", None),
        ("malloc_trim", heap.NO_MALLOC_TRIM),
        ("comfy_cache_release", NOT_IN_COMFYUI),  # before a node, ComfyUI's cache comes next; here there is none
    ]


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("cuda", GpuBackend.CUDA),
        ("rocm", GpuBackend.ROCM),
        ("xpu", GpuBackend.XPU),
        ("mps", GpuBackend.MPS),
        (None, None),
    ],
)
def test_the_backend_in_use(backend: str | None, expected: GpuBackend | None) -> None:
    assert torch_backend(standin.standin_torch(backend)) is expected


@pytest.mark.parametrize("backend", ["cuda", "rocm", "xpu"])
def test_a_device_torch_has_not_initialised_is_never_asked(
    monkeypatch: pytest.MonkeyPatch, make_engine: Callable[..., Engine], backend: str
) -> None:
    """Asking would create a device context this process does not have; VRAM is n/a and no cache is emptied."""
    torch = standin.standin_torch(backend, initialised=False)
    engine = make_engine()  # no NVML: only torch could answer
    monkeypatch.setitem(sys.modules, "torch", torch)
    snapshot = engine.snapshot()
    assert snapshot.gpus == () and snapshot.gpu_unavailable_reason is not None
    assert "torch has not initialised CUDA in this process (nor ROCm, XPU or MPS)" in snapshot.gpu_unavailable_reason
    outcome = engine.run(CleanupRequest(trigger=MANUAL, mode=Mode.AGGRESSIVE))
    assert outcome.record is not None
    skipped = {a.name: a.skipped_reason for a in outcome.record.actions}
    assert skipped["cuda_empty_cache"] == (
        "CUDA is not initialised in this process (nor ROCm, XPU or MPS: nothing is cached)"
    )
    assert torch.calls == []  # type: ignore[attr-defined]
