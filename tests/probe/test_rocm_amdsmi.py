"""AMD ROCm through AMD SMI (the optional ``amdsmi`` package): device-wide totals and the GPU processes when it is
installed and answers; torch's own figures, as before, when it is missing, fails or numbers the GPUs differently."""

from __future__ import annotations

import logging
import os
import sys
import types
from collections.abc import Callable

import psutil
import pytest

from comfy_memhooks.probe.amdsmi import AmdSmi
from comfy_memhooks.probe.gpu import AMDSMI_PARTIAL_NOTE, GpuProbe
from comfy_memhooks.probe.nvml import Nvml
from comfy_memhooks.probe.readings import GpuSource
from tests import standin_platforms as standin

GIB = standin.GIB
RADEON = ("AMD Radeon RX 7900 XTX", 24 * GIB, 10 * GIB)  # 10 GiB device-wide; torch alone sees 6 GiB
ABSENT_PID = 2**31 - 7  # above any pid_max: no such process here
SECRET_NAME = "python3 main.py --listen --api-key=hunter2"


def _missing(name: str) -> Callable[[], types.ModuleType]:
    def load() -> types.ModuleType:
        raise ImportError(f"No module named '{name}'")

    return load


def _probe(amdsmi: types.ModuleType | None) -> GpuProbe:
    loader = _missing("amdsmi") if amdsmi is None else (lambda: amdsmi)
    return GpuProbe(nvml=Nvml(loader=_missing("pynvml")), environ={}, amdsmi=AmdSmi(loader=loader))


@pytest.fixture(autouse=True)
def rocm_torch(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    torch = standin.standin_torch("rocm")
    monkeypatch.setitem(sys.modules, "torch", torch)
    return torch


def test_totals_are_amdsmis_device_wide_figures_with_torchs_share() -> None:
    amdsmi = standin.standin_amdsmi([RADEON])
    readings, source, reason = _probe(amdsmi).read()
    assert source is GpuSource.AMDSMI and reason is None
    (gpu,) = readings
    assert (gpu.total_bytes, gpu.used_bytes, gpu.free_bytes) == (24 * GIB, 10 * GIB, 14 * GIB)
    assert (gpu.torch_allocated_bytes, gpu.torch_reserved_bytes) == (standin.ALLOCATED, standin.RESERVED)
    assert gpu.name == "AMD Radeon RX 7900 XTX" and gpu.backend.value == "rocm" and gpu.note is None
    assert amdsmi.calls[0] == "amdsmi_init"  # type: ignore[attr-defined]


def test_processes_are_amdsmis_named_by_psutil_never_by_their_command_line() -> None:
    own = os.getpid()
    amdsmi = standin.standin_amdsmi(
        [RADEON],
        {0: [standin.amd_process(own, 4 * GIB, SECRET_NAME), standin.amd_process(ABSENT_PID, 6 * GIB, SECRET_NAME)]},
    )
    processes = _probe(amdsmi).processes()
    assert processes is not None
    mine, other = processes
    assert (mine.pid, mine.gpu_index, mine.used_bytes) == (own, 0, 4 * GIB)
    assert mine.is_current_process and mine.in_this_container
    assert mine.name == psutil.Process(own).name()
    assert (other.pid, other.name, other.gpu_index, other.used_bytes) == (ABSENT_PID, None, 0, 6 * GIB)
    assert not other.is_current_process and not other.in_this_container
    assert all("hunter2" not in (p.name or "") and "--" not in (p.name or "") for p in processes)


def test_a_failing_call_leaves_torchs_figure_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    amdsmi = standin.standin_amdsmi(
        [RADEON], {0: [standin.amd_process(os.getpid(), GIB)]}, failing={"amdsmi_get_gpu_memory_usage"}
    )
    probe = _probe(amdsmi)
    with caplog.at_level(logging.WARNING, logger="comfy_memhooks.probe.amdsmi"):
        for _ in range(3):
            readings, source, _ = probe.read()
    (gpu,) = readings
    assert source is GpuSource.TORCH and gpu.note == AMDSMI_PARTIAL_NOTE
    assert (gpu.total_bytes, gpu.used_bytes, gpu.free_bytes) == (standin.TOTAL, 6 * GIB, standin.FREE)
    assert probe._amdsmi.failures.count == 3
    logged = [r for r in caplog.records if r.name == "comfy_memhooks.probe.amdsmi"]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING and logged[0].exc_info is None
    assert "amdsmi_get_gpu_memory_usage failed: AmdSmiLibraryException" in logged[0].getMessage()
    processes = probe.processes()  # the other calls still answer
    assert processes is not None and [p.used_bytes for p in processes] == [GIB]


def test_a_failing_process_list_is_an_empty_list_and_counted() -> None:
    listed = {0: [standin.amd_process(1, GIB)]}
    amdsmi = standin.standin_amdsmi([RADEON], listed, failing={"amdsmi_get_gpu_process_list"})
    probe = _probe(amdsmi)
    assert probe.processes() == ()
    assert probe._amdsmi.failures.count == 1


def test_an_amdsmi_that_cannot_start_leaves_torch_alone() -> None:
    amdsmi = standin.standin_amdsmi([RADEON], failing={"amdsmi_init"})
    probe = _probe(amdsmi)
    readings, source, _ = probe.read()
    assert source is GpuSource.TORCH and readings[0].used_bytes == 6 * GIB and readings[0].note is None
    assert probe.processes() is None
    assert (probe._amdsmi.unavailable_reason or "").startswith("AMD SMI could not start: Error code")


def test_different_gpu_counts_keep_torchs_figures_and_say_so() -> None:
    amdsmi = standin.standin_amdsmi([RADEON, RADEON], {1: [standin.amd_process(ABSENT_PID, GIB)]})
    probe = _probe(amdsmi)
    readings, source, _ = probe.read()
    (gpu,) = readings
    assert source is GpuSource.TORCH and gpu.used_bytes == 6 * GIB
    assert gpu.note == "AMD SMI lists 2 GPU(s) where torch sees 1; torch's figures (this process's view)"
    processes = probe.processes()
    assert processes is not None and [(p.pid, p.gpu_index) for p in processes] == [(ABSENT_PID, None)]


def test_without_amdsmi_rocm_is_read_from_torch_as_before() -> None:
    probe = _probe(None)
    readings, source, reason = probe.read()
    assert source is GpuSource.TORCH and reason is None
    (gpu,) = readings
    assert (gpu.total_bytes, gpu.used_bytes, gpu.free_bytes, gpu.note) == (standin.TOTAL, 6 * GIB, standin.FREE, None)
    assert probe.processes() is None
    assert probe._amdsmi.unavailable_reason == "amdsmi is not installed"


@pytest.mark.parametrize("backend", ["cuda", "xpu", "mps", None])
def test_amdsmi_is_never_loaded_off_rocm(monkeypatch: pytest.MonkeyPatch, backend: str | None) -> None:
    monkeypatch.setitem(sys.modules, "torch", None if backend is None else standin.standin_torch(backend))
    loaded: list[str] = []

    def loader() -> types.ModuleType:
        loaded.append("amdsmi")
        return standin.standin_amdsmi([RADEON])

    probe = GpuProbe(nvml=Nvml(loader=_missing("pynvml")), environ={}, amdsmi=AmdSmi(loader=loader))
    probe.read()
    assert probe.processes() is None
    assert loaded == []
