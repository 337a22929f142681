"""torch's accelerators as this process already uses them: CUDA, ROCm (HIP), Intel XPU and Apple MPS.

torch is only ever the module the host process loaded (``sys.modules``), and a backend is asked only once this
process has initialised it: a memory monitor must not create a device context (hundreds of MB of VRAM on CUDA) to
report on one. ROCm's torch answers through ``torch.cuda`` and says so in ``torch.version.hip``. MPS has no
per-process context to create: its allocator's counters are plain reads, so MPS counts as in use when torch
reports it available (as ComfyUI does before choosing it).
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType
from typing import Any

from ..failures import Failures
from .readings import GpuBackend, GpuReading

logger = logging.getLogger(__name__)

MPS_NAME = "Apple MPS (unified memory)"
MPS_NOTE = "unified memory: RAM and VRAM are one pool; MPS's share of it, against its recommended maximum"


def loaded_torch() -> ModuleType | None:
    """torch as the host process loaded it; comfy_memhooks never imports torch itself (a second of start-up)."""
    return sys.modules.get("torch")


def torch_cuda_ready(torch: ModuleType | None) -> bool:
    """True when torch has CUDA (or ROCm's HIP) initialised in this process, so asking it costs no new context."""
    if torch is None:
        return False
    try:
        return bool(torch.cuda.is_available() and torch.cuda.is_initialized())
    except Exception:  # a broken CUDA install raises anything from here; the answer is simply "no".
        logger.debug("torch.cuda state unreadable", exc_info=True)
        return False


def torch_is_rocm(torch: ModuleType | None) -> bool:
    """True for PyTorch's ROCm build (``torch.version.hip`` is set); its ``torch.cuda`` drives AMD GPUs."""
    return bool(getattr(getattr(torch, "version", None), "hip", None))


def torch_xpu_ready(torch: ModuleType | None) -> bool:
    """True when torch has Intel's XPU backend initialised in this process (``torch.xpu.is_initialized()``)."""
    xpu = getattr(torch, "xpu", None)
    if xpu is None:
        return False
    try:
        return bool(xpu.is_available() and xpu.is_initialized())
    except Exception:  # as for CUDA: a broken driver stack raises anything; the answer is "no".
        logger.debug("torch.xpu state unreadable", exc_info=True)
        return False


def torch_mps_ready(torch: ModuleType | None) -> bool:
    """True when torch can use Apple's MPS here (``torch.backends.mps.is_available()``) and has ``torch.mps``."""
    mps_backend = getattr(getattr(torch, "backends", None), "mps", None)
    if mps_backend is None or getattr(torch, "mps", None) is None:
        return False
    try:
        return bool(mps_backend.is_available())
    except Exception:  # torch built without MPS can raise instead of answering False.
        logger.debug("torch.backends.mps state unreadable", exc_info=True)
        return False


def torch_backend(torch: ModuleType | None) -> GpuBackend | None:
    """The accelerator torch already uses in this process, or ``None``: CUDA or ROCm, then XPU, then MPS."""
    if torch is None:
        return None
    if torch_cuda_ready(torch):
        return GpuBackend.ROCM if torch_is_rocm(torch) else GpuBackend.CUDA
    if torch_xpu_ready(torch):
        return GpuBackend.XPU
    if torch_mps_ready(torch):
        return GpuBackend.MPS
    return None


def read_torch(torch: Any, backend: GpuBackend, failures: Failures) -> tuple[GpuReading, ...]:
    """Every device of ``backend`` as torch reports it; a device torch fails on is left out and counted."""
    if backend is GpuBackend.MPS:
        return read_mps(torch, failures)
    device_api = torch.xpu if backend is GpuBackend.XPU else torch.cuda
    try:
        count = int(device_api.device_count())
    except Exception as error:  # torch raises RuntimeError subclasses that vary between versions.
        failures.record(f"{backend.value} device_count", error)
        return ()
    readings = []
    for index in range(count):
        try:
            free, total = device_api.mem_get_info(index)
            name = str(device_api.get_device_name(index))
        except Exception as error:  # as above: any failure of one device leaves it out, not the others.
            failures.record(f"{backend.value} mem_get_info({index})", error)
            continue
        allocated, reserved = torch_usage(device_api, index, failures)
        readings.append(
            GpuReading(
                index=index,
                name=name,
                total_bytes=int(total),
                used_bytes=int(total) - int(free),
                free_bytes=int(free),
                torch_allocated_bytes=allocated,
                torch_reserved_bytes=reserved,
                backend=backend,
            )
        )
    return tuple(readings)


def torch_usage(device_api: Any, index: int, failures: Failures) -> tuple[int | None, int | None]:
    """This process's allocated and reserved bytes on one device (``torch.cuda`` or ``torch.xpu``)."""
    try:
        return int(device_api.memory_allocated(index)), int(device_api.memory_reserved(index))
    except Exception as error:  # an index torch does not know (a mismatched CUDA_VISIBLE_DEVICES) is no error.
        failures.record(f"memory_allocated({index})", error)
        return None, None


def _mps_figure(torch: Any, name: str, failures: Failures) -> int | None:
    function = getattr(torch.mps, name, None)
    if function is None:  # recommended_max_memory() came with torch 2.5
        return None
    try:
        return int(function())
    except Exception as error:  # an MPS call that fails leaves its figure missing, not the others.
        failures.record(f"mps.{name}", error)
        return None


def read_mps(torch: Any, failures: Failures) -> tuple[GpuReading, ...]:
    """Apple silicon's one GPU: what Metal holds for this process against MPS's recommended maximum.

    ``torch.mps.driver_allocated_memory()`` (Metal's allocations for the process, torch's cache included) is the
    used figure, ``recommended_max_memory()`` the total, ``current_allocated_memory()`` the live tensors'.
    """
    driver = _mps_figure(torch, "driver_allocated_memory", failures)
    allocated = _mps_figure(torch, "current_allocated_memory", failures)
    total = _mps_figure(torch, "recommended_max_memory", failures)
    if driver is None and allocated is None and total is None:
        return ()
    free = None if total is None or driver is None else max(total - driver, 0)
    return (
        GpuReading(
            index=0,
            name=MPS_NAME,
            total_bytes=total,
            used_bytes=driver,
            free_bytes=free,
            torch_allocated_bytes=allocated,
            torch_reserved_bytes=driver,
            backend=GpuBackend.MPS,
            note=MPS_NOTE,
        ),
    )
