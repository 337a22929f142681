"""Immutable readings of memory, shared by every part of comfy_memhooks.

Every probe returns one of these frozen values, so a reading taken in ComfyUI's worker thread can be handed to
the web server's thread, stored in the history or sent as JSON without copying. A value that could not be read is
``None``: never ``-1``, ``0`` or ``"N/A"``, because 0 is a real reading ("0 bytes used") and a sentinel would leak
into averages and charts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MIB = 1024**2
GIB = 1024**3


class RamSource(str, enum.Enum):
    """Where the RAM figures came from: the host's counters or the memory cgroup the process runs in."""

    HOST = "host"
    CGROUP_V1 = "cgroup v1"
    CGROUP_V2 = "cgroup v2"


class RamReader(str, enum.Enum):
    """Who read the figures: comfy_memhooks itself, or ComfyUI's own container-aware reader (after 0.33), used
    where it has one and agrees with comfy_memhooks' (see :mod:`.core_ram`)."""

    OURS = "comfy_memhooks"
    COMFYUI = "comfy.system_memory"


class GpuSource(str, enum.Enum):
    """Which library answered for the GPUs: NVML first, torch's CUDA runtime when NVML cannot.

    On ROCm, ``amdsmi`` when AMD SMI gave the device-wide figures (every process's VRAM) for any GPU, ``torch``
    when they are torch's view from this process alone.
    """

    NVML = "nvml"
    TORCH = "torch"
    AMDSMI = "amdsmi"


class GpuBackend(str, enum.Enum):
    """Which accelerator the figures describe, as torch names its device (ROCm answers through ``torch.cuda``)."""

    CUDA = "cuda"
    ROCM = "rocm"
    MPS = "mps"
    XPU = "xpu"

    @property
    def label(self) -> str:
        """The backend's name as its vendor writes it: ``CUDA``, ``ROCm``, ``MPS``, ``XPU``."""
        return _BACKEND_LABELS[self]

    @property
    def torch_device_type(self) -> str:
        """The device type torch uses for it: ROCm's GPUs are ``cuda`` devices to torch."""
        return "cuda" if self is GpuBackend.ROCM else self.value


_BACKEND_LABELS = {GpuBackend.CUDA: "CUDA", GpuBackend.ROCM: "ROCm", GpuBackend.MPS: "MPS", GpuBackend.XPU: "XPU"}


def percent_of(part: int | None, whole: int | None) -> float | None:
    """``part`` as a percentage of ``whole``, or ``None`` when either is unknown or the whole is empty."""
    if part is None or whole is None or whole <= 0:
        return None
    return part * 100.0 / whole


@dataclass(frozen=True, slots=True)
class RamReading:
    """RAM as the process experiences it.

    Inside a container with a memory limit the totals are the cgroup's, because that limit, not the host's RAM,
    is what the kernel's OOM killer enforces.

    Attributes:
        source: which counters were used.
        total_bytes: the limit (cgroup) or physical RAM (host).
        used_bytes: in use, page cache that can be dropped excluded (what `docker stats` shows).
        available_bytes: what can still be allocated before the limit.
        process_rss_bytes: this process's resident set (``ps -o rss``).
        host_total_bytes: the machine's physical RAM, also when a cgroup limit applies.
        cgroup_path: the cgroup directory that was read, when one was.
        reader: who read the limit and usage: comfy_memhooks, or ComfyUI's ``comfy.system_memory``.
    """

    source: RamSource
    total_bytes: int | None
    used_bytes: int | None
    available_bytes: int | None
    process_rss_bytes: int | None
    host_total_bytes: int | None
    cgroup_path: str | None = None
    reader: RamReader = RamReader.OURS

    @property
    def percent(self) -> float | None:
        return percent_of(self.used_bytes, self.total_bytes)


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU, numbered as CUDA (and so torch and ComfyUI) numbers it.

    Attributes:
        index: the CUDA device index (``cuda:<index>``), after ``CUDA_VISIBLE_DEVICES``.
        name: the product name (``nvidia-smi --query-gpu=name``).
        total_bytes, used_bytes, free_bytes: device-wide, all processes included
            (``nvidia-smi --query-gpu=memory.total,memory.used,memory.free``).
        uuid: NVML's ``GPU-…`` identifier, when NVML answered.
        torch_allocated_bytes: bytes held by live tensors of this process (``torch.cuda.memory_allocated``).
        torch_reserved_bytes: bytes held by torch's caching allocator for this process
            (``torch.cuda.memory_reserved``); the gap to allocated is what ``empty_cache`` can return.
        backend: the accelerator (CUDA, ROCm, MPS, XPU), ``None`` when unknown.
        note: what is unusual about these figures, in words (NVML partial on a Jetson, MPS's unified memory).
    """

    index: int
    name: str | None
    total_bytes: int | None
    used_bytes: int | None
    free_bytes: int | None
    uuid: str | None = None
    torch_allocated_bytes: int | None = None
    torch_reserved_bytes: int | None = None
    backend: GpuBackend | None = None
    note: str | None = None

    @property
    def percent(self) -> float | None:
        return percent_of(self.used_bytes, self.total_bytes)


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A process that holds GPU memory, as NVML lists it. Command lines are never read: they can hold secrets.

    Attributes:
        pid: the process id NVML reports (a host pid when this process runs in a container).
        name: the executable name, when the pid is visible from here.
        gpu_index: the CUDA index of the GPU it uses, when that GPU is visible to CUDA here.
        used_bytes: GPU memory it holds, when the driver reports it (not on every platform).
        is_current_process: the pid is this process's own.
        in_this_container: the pid exists in this process's pid namespace; NVML reports host pids, so a process
            of another container (or of the host) cannot be looked up and is listed as outside.
    """

    pid: int
    name: str | None
    gpu_index: int | None
    used_bytes: int | None
    is_current_process: bool
    in_this_container: bool


@dataclass(frozen=True, slots=True)
class DynamicVramReading:
    """Dynamic VRAM, as ComfyUI's allocator reports it; each figure ``None`` when it could not be read.

    Attributes:
        device_index: the CUDA index of the device it manages (ComfyUI's torch device).
        resident_bytes: VRAM the allocator holds (model weights paged in on demand).
        evictable_bytes: the part of it that can be evicted on demand.
        headroom_bytes: VRAM it keeps free for everything else.
    """

    device_index: int
    resident_bytes: int | None
    evictable_bytes: int | None
    headroom_bytes: int | None


@dataclass(frozen=True, slots=True)
class MemorySnapshot:
    """Everything known about memory at one instant.

    Attributes:
        taken_at: wall-clock time (``time.time()``) of the reading.
        ram: the RAM reading.
        gpus: one reading per CUDA-visible GPU, in CUDA order; empty when none could be read.
        gpu_source: which library answered for the GPUs, ``None`` when none did.
        gpu_unavailable_reason: why there are no GPU readings, in words for the user.
        processes: GPU processes, or ``None`` when they were not asked for or could not be listed.
        dynamic_vram: ComfyUI's dynamic VRAM allocator's figures when it is on, else ``None``.
    """

    taken_at: float
    ram: RamReading
    gpus: tuple[GpuReading, ...]
    gpu_source: GpuSource | None
    gpu_unavailable_reason: str | None = None
    processes: tuple[GpuProcess, ...] | None = None
    dynamic_vram: DynamicVramReading | None = None

    @property
    def gpu_backend(self) -> GpuBackend | None:
        """The accelerator the GPU readings describe (one process uses one kind), ``None`` without readings."""
        backends = [gpu.backend for gpu in self.gpus if gpu.backend is not None]
        return backends[0] if backends else None

    @property
    def vram_percent(self) -> float | None:
        """The fullest GPU's usage: the one that will run out first."""
        percents = [p for p in (gpu.percent for gpu in self.gpus) if p is not None]
        return max(percents) if percents else None

    def gpu_pressure_percent(self, gpu: GpuReading) -> float | None:
        """What of ``gpu`` counts as pressure: all it uses, or under dynamic VRAM what cannot be given back.

        Under dynamic VRAM the device looks full by design: the allocator evicts on demand what it paged in,
        and torch's reserved-but-unallocated blocks are a cache too. So only VRAM used minus both counts; and
        when even evicting all of it would leave less free than the allocator's headroom, it is 100%.
        """
        dynamic = self.dynamic_vram
        if dynamic is None or gpu.index != dynamic.device_index or gpu.used_bytes is None or not gpu.total_bytes:
            return gpu.percent
        cached = max((gpu.torch_reserved_bytes or 0) - (gpu.torch_allocated_bytes or 0), 0)
        reclaimable = (dynamic.evictable_bytes or 0) + cached
        headroom = dynamic.headroom_bytes
        if gpu.free_bytes is not None and headroom is not None and gpu.free_bytes + reclaimable < headroom:
            return 100.0
        return percent_of(max(gpu.used_bytes - reclaimable, 0), gpu.total_bytes)

    @property
    def vram_pressure_percent(self) -> float | None:
        """The fullest GPU as pressure counts it (:meth:`gpu_pressure_percent`); the VRAM threshold's reading."""
        percents = [p for p in (self.gpu_pressure_percent(gpu) for gpu in self.gpus) if p is not None]
        return max(percents) if percents else None

    @property
    def vram_used_bytes(self) -> int | None:
        """VRAM in use on all visible GPUs together, ``None`` when no GPU reported it."""
        used = [gpu.used_bytes for gpu in self.gpus if gpu.used_bytes is not None]
        return sum(used) if used else None
