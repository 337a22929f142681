"""Reading memory: RAM (container-aware: cgroup v1 and v2), VRAM per GPU through NVML or torch, GPU processes.

The bottom layer but for the base: it knows nothing of modes or thresholds, and of ComfyUI only what
:mod:`..comfyui_modules` finds loaded. :class:`MemoryProbe` takes immutable
:class:`MemorySnapshot` readings (:mod:`.readings`); :mod:`.cgroup` and :mod:`.ram` read the container's limit,
:mod:`.nvml` is the one module that touches the NVIDIA driver, :mod:`.gpu` numbers GPUs as CUDA does, and
:mod:`.backends` reads torch's CUDA, ROCm, XPU and MPS devices where NVML cannot; on ROCm, :mod:`.amdsmi` (when the
optional ``amdsmi`` package is installed) gives device-wide figures and the GPU processes.
"""

from __future__ import annotations

from .memory import MemoryProbe
from .readings import GpuBackend, GpuProcess, GpuReading, GpuSource, MemorySnapshot, RamReading, RamSource

__all__ = [
    "GpuBackend",
    "GpuProcess",
    "GpuReading",
    "GpuSource",
    "MemoryProbe",
    "MemorySnapshot",
    "RamReading",
    "RamSource",
]
