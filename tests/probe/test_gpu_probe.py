"""The VRAM probe against a fake NVML that raises the real library's errors, and the torch fallback."""

from __future__ import annotations

import logging
import os
import sys
import types
from dataclasses import fields

import psutil
import pynvml
import pytest

from comfy_memhooks.engine.report import status_line
from comfy_memhooks.probe.gpu import GpuProbe
from comfy_memhooks.probe.nvml import Nvml
from comfy_memhooks.probe.readings import GpuProcess, GpuSource
from tests.conftest import hide_torch, probe_with_gpus
from tests.fake_nvml import GIB, FakeGpu, make_fake_pynvml, two_gpus


@pytest.fixture(autouse=True)
def _no_torch_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake NVML alone answers, also on a machine with a GPU; torch tests install a fake torch."""
    hide_torch(monkeypatch)


def gpu_probe(gpus: list[FakeGpu], environ: dict[str, str] | None = None, **fake_options: object) -> GpuProbe:
    fake = make_fake_pynvml(gpus, **fake_options)  # type: ignore[arg-type]
    return GpuProbe(nvml=Nvml(loader=lambda: fake), environ=environ or {})


def names(probe: GpuProbe) -> list[str | None]:
    readings, _, _ = probe.read()
    return [reading.name for reading in readings]


def test_gpus_are_numbered_in_cuda_pci_order_not_nvml_order() -> None:
    readings, source, reason = gpu_probe(two_gpus()).read()
    assert source is GpuSource.NVML and reason is None
    assert [(r.index, r.name) for r in readings] == [(0, "GPU B"), (1, "GPU A")]
    b = readings[0]
    assert (b.total_bytes, b.used_bytes, b.free_bytes) == (16 * GIB, 4 * GIB, 12 * GIB)
    assert b.percent == pytest.approx(25.0)
    assert b.uuid == "GPU-bbbb2222"


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("1,0", ["GPU A", "GPU B"]),
        ("1", ["GPU A"]),
        ("GPU-aaaa", ["GPU A"]),  # a unique UUID prefix
        ("0,7,1", ["GPU B"]),  # CUDA stops at the first entry naming no device
        ("0,0", ["GPU B"]),  # a repeated device ends the list too
        ("-1", []),
        ("", []),
        ("GPU-", []),  # a prefix that is not unique names no device
    ],
)
def test_cuda_visible_devices_selects_and_reorders(visible: str, expected: list[str]) -> None:
    assert names(gpu_probe(two_gpus(), environ={"CUDA_VISIBLE_DEVICES": visible})) == expected


def test_driver_missing_reports_vram_not_available_never_zero() -> None:
    probe = gpu_probe(two_gpus(), init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    readings, source, reason = probe.read()
    assert readings == () and source is None
    assert reason is not None and "NVML Shared Library Not Found" in reason
    assert probe.processes() is None


def test_nvidia_ml_py_not_installed() -> None:
    def missing() -> types.ModuleType:
        raise ImportError("No module named 'pynvml'")

    readings, source, reason = GpuProbe(nvml=Nvml(loader=missing), environ={}).read()
    assert readings == () and source is None
    assert reason is not None and "nvidia-ml-py is not installed" in reason


def test_status_line_without_gpu_says_n_a() -> None:
    snapshot = probe_with_gpus(None).snapshot()
    line = status_line(snapshot)
    assert line.endswith("| VRAM: n/a")
    assert snapshot.vram_percent is None


def test_a_failing_function_gives_none_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    probe = gpu_probe(two_gpus(), failing={"nvmlDeviceGetMemoryInfo": pynvml.NVML_ERROR_NOT_SUPPORTED})
    with caplog.at_level(logging.WARNING, logger="comfy_memhooks"):
        for _ in range(5):
            readings, source, _ = probe.read()
    assert source is GpuSource.NVML
    assert all(r.total_bytes is None and r.used_bytes is None and r.percent is None for r in readings)
    assert [r.name for r in readings] == ["GPU B", "GPU A"]
    failures = [rec for rec in caplog.records if "nvmlDeviceGetMemoryInfo" in rec.getMessage()]
    assert len(failures) == 1
    assert "Not Supported" in failures[0].getMessage()


def test_nvml_is_initialised_once_and_lazily() -> None:
    calls: list[str] = []
    fake = make_fake_pynvml(two_gpus(), calls=calls)
    probe = GpuProbe(nvml=Nvml(loader=lambda: fake), environ={})
    assert calls == []  # nothing happens when the probe is built
    for _ in range(3):
        probe.read()
    assert calls.count("nvmlInit") == 1
    assert calls.count("nvmlDeviceGetCount") == 1  # the devices are enumerated once


def _pid_that_does_not_exist() -> int:
    pid = 4_000_000
    while psutil.pid_exists(pid):
        pid += 1
    return pid


def test_processes_are_listed_with_names_and_host_pids_marked_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    foreign = _pid_that_does_not_exist()
    gpus = two_gpus()
    gpus[0].compute_processes = [(os.getpid(), 3 * GIB), (foreign, None)]
    gpus[1].graphics_processes = [(os.getpid(), GIB)]

    def forbidden(self: psutil.Process) -> list[str]:
        raise AssertionError("command lines must never be read")

    monkeypatch.setattr(psutil.Process, "cmdline", forbidden)
    processes = gpu_probe(gpus).processes()
    assert processes is not None
    by_key = {(p.pid, p.gpu_index): p for p in processes}
    own_on_a = by_key[(os.getpid(), 1)]  # GPU A is CUDA index 1
    assert own_on_a.is_current_process and own_on_a.in_this_container
    assert own_on_a.name == psutil.Process().name()
    assert own_on_a.used_bytes == 3 * GIB
    outside = by_key[(foreign, 1)]
    assert not outside.in_this_container and outside.name is None and outside.used_bytes is None
    assert not outside.is_current_process
    assert by_key[(os.getpid(), 0)].used_bytes == GIB
    assert "cmdline" not in {f.name for f in fields(GpuProcess)}


def test_processes_on_a_gpu_hidden_from_cuda_have_no_cuda_index() -> None:
    gpus = two_gpus()
    gpus[0].compute_processes = [(os.getpid(), GIB)]
    processes = gpu_probe(gpus, environ={"CUDA_VISIBLE_DEVICES": "0"}).processes()
    assert processes is not None and [p.gpu_index for p in processes] == [None]


class _FakeCuda:
    """torch.cuda as a process that already uses one GPU would answer."""

    def __init__(self, initialised: bool):
        self.initialised = initialised

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return self.initialised

    def device_count(self) -> int:
        return 1

    def mem_get_info(self, index: int) -> tuple[int, int]:
        return 6 * GIB, 8 * GIB

    def get_device_name(self, index: int) -> str:
        return "Torch GPU"

    def memory_allocated(self, index: int) -> int:
        return GIB

    def memory_reserved(self, index: int) -> int:
        return 2 * GIB


def _with_fake_torch(monkeypatch: pytest.MonkeyPatch, initialised: bool) -> None:
    torch = types.ModuleType("torch")
    torch.cuda = _FakeCuda(initialised)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)


def test_torch_answers_when_nvml_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_fake_torch(monkeypatch, initialised=True)
    readings, source, reason = gpu_probe(two_gpus(), init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED).read()
    assert source is GpuSource.TORCH and reason is None
    (gpu,) = readings
    assert (gpu.name, gpu.total_bytes, gpu.used_bytes, gpu.free_bytes) == ("Torch GPU", 8 * GIB, 2 * GIB, 6 * GIB)
    assert (gpu.torch_allocated_bytes, gpu.torch_reserved_bytes) == (GIB, 2 * GIB)


def test_torch_is_not_asked_when_it_would_create_a_cuda_context(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_fake_torch(monkeypatch, initialised=False)
    readings, source, reason = gpu_probe(two_gpus(), init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED).read()
    assert readings == () and source is None
    assert reason is not None and "has not initialised CUDA" in reason


def test_nvml_readings_carry_torchs_share_of_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_fake_torch(monkeypatch, initialised=True)
    readings, source, _ = gpu_probe(two_gpus()).read()
    assert source is GpuSource.NVML
    assert readings[0].torch_reserved_bytes == 2 * GIB


def test_multi_gpu_status_line_has_one_part_per_gpu() -> None:
    line = status_line(probe_with_gpus(two_gpus()).snapshot())
    assert " | VRAM0: 4GB/16GB (25%) | VRAM1: 12GB/24GB (50%)" in line
