"""A stand-in for ``pynvml`` on machines without an NVIDIA GPU.

It is a real module object with the real library's function names, and it raises the real library's error
classes (``pynvml.NVMLError`` and its per-code subclasses), so the code under test handles exactly what it would
handle on a GPU machine.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pynvml

GIB = 1024**3


@dataclass
class FakeGpu:
    name: str
    uuid: str
    pci_bus_id: str
    total: int
    used: int
    compute_processes: list[tuple[int, int | None]] = field(default_factory=list)
    graphics_processes: list[tuple[int, int | None]] = field(default_factory=list)


@dataclass
class _Memory:
    total: int
    free: int
    used: int


@dataclass
class _Pci:
    busId: str


@dataclass
class _ProcessInfo:
    pid: int
    usedGpuMemory: int | None


def nvml_error(code: int) -> pynvml.NVMLError:
    """The real library's error for ``code``: ``NVMLError(code)`` builds the matching subclass."""
    return pynvml.NVMLError(code)


def make_fake_pynvml(
    gpus: list[FakeGpu],
    init_error: int | None = None,
    failing: dict[str, int] | None = None,
    calls: list[str] | None = None,
) -> types.ModuleType:
    """A module that answers like ``pynvml`` for ``gpus`` (listed in NVML's order).

    Args:
        init_error: an NVML error code ``nvmlInit`` raises (``NVML_ERROR_LIBRARY_NOT_FOUND``: no driver).
        failing: function name -> error code it raises on every call.
        calls: when given, receives the name of every function called.
    """
    failing = failing or {}
    module = types.ModuleType("pynvml")
    for name in dir(pynvml):
        if name.startswith("NVMLError") or name.startswith("NVML_"):
            setattr(module, name, getattr(pynvml, name))

    def api(function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            if calls is not None:
                calls.append(function.__name__)
            if function.__name__ in failing:
                raise nvml_error(failing[function.__name__])
            return function(*args)

        wrapper.__name__ = function.__name__
        setattr(module, function.__name__, wrapper)
        return wrapper

    @api
    def nvmlInit() -> None:
        if init_error is not None:
            raise nvml_error(init_error)

    @api
    def nvmlShutdown() -> None:
        return None

    @api
    def nvmlDeviceGetCount() -> int:
        return len(gpus)

    @api
    def nvmlDeviceGetHandleByIndex(index: int) -> FakeGpu:
        if not 0 <= index < len(gpus):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpus[index]

    @api
    def nvmlDeviceGetName(handle: FakeGpu) -> str:
        return handle.name

    @api
    def nvmlDeviceGetUUID(handle: FakeGpu) -> str:
        return handle.uuid

    @api
    def nvmlDeviceGetPciInfo(handle: FakeGpu) -> _Pci:
        return _Pci(handle.pci_bus_id)

    @api
    def nvmlDeviceGetMemoryInfo(handle: FakeGpu) -> _Memory:
        return _Memory(total=handle.total, free=handle.total - handle.used, used=handle.used)

    @api
    def nvmlDeviceGetComputeRunningProcesses(handle: FakeGpu) -> list[_ProcessInfo]:
        return [_ProcessInfo(pid, used) for pid, used in handle.compute_processes]

    @api
    def nvmlDeviceGetGraphicsRunningProcesses(handle: FakeGpu) -> list[_ProcessInfo]:
        return [_ProcessInfo(pid, used) for pid, used in handle.graphics_processes]

    return module


def two_gpus() -> list[FakeGpu]:
    """Two GPUs whose NVML order (A first) differs from PCI bus order (B first)."""
    return [
        FakeGpu("GPU A", "GPU-aaaa1111", "00000000:41:00.0", total=24 * GIB, used=12 * GIB),
        FakeGpu("GPU B", "GPU-bbbb2222", "00000000:01:00.0", total=16 * GIB, used=4 * GIB),
    ]
