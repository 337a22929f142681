"""The VRAM probe: each GPU's memory, numbered as CUDA numbers it, and the processes that hold it.

NVML answers first; when it is missing or fails, torch answers (:mod:`.backends`: CUDA, ROCm, XPU, MPS), but only
for a device this process already uses: a memory monitor must not create a CUDA context (hundreds of MB of VRAM) to
report on. Inside ComfyUI torch has always initialised CUDA by the time a GPU is used. Where NVML lists a GPU but
has no memory figures for it (Jetson and other unified-memory boards), torch's fill in and the reading says so.
On ROCm, AMD SMI (:mod:`.amdsmi`, when the optional ``amdsmi`` package is installed) gives the device-wide figures
and the processes; torch's figures stay where it cannot, and the reading says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

from ..failures import Failures
from .amdsmi import AmdGpu, AmdSmi
from .backends import loaded_torch, read_torch, torch_backend, torch_cuda_ready, torch_usage
from .nvml import Nvml
from .readings import GpuBackend, GpuProcess, GpuReading, GpuSource

__all__ = ["GpuProbe", "NvmlDevice", "cuda_visible_order", "loaded_torch", "torch_cuda_ready"]

JETSON_NOTE = "NVML gives no memory figures for this GPU (a unified-memory board such as Jetson); torch's instead"
NVML_PARTIAL_NOTE = "NVML gives no memory figures for this GPU, and torch has not initialised CUDA to ask instead"
AMDSMI_COUNT_NOTE = "AMD SMI lists {amd} GPU(s) where torch sees {torch}; torch's figures (this process's view)"
AMDSMI_PARTIAL_NOTE = "AMD SMI gives no memory figures for this GPU; torch's instead"

logger = logging.getLogger(__name__)

DEFAULT_PROCFS = Path("/proc")


@dataclass(frozen=True, slots=True)
class NvmlDevice:
    """An NVML device handle with what does not change while the process lives."""

    nvml_index: int
    handle: Any
    name: str | None
    uuid: str | None
    pci_bus_id: str | None


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def cuda_visible_order(devices: Sequence[NvmlDevice], visible: str | None) -> list[NvmlDevice]:
    """The devices CUDA exposes, in CUDA's order.

    CUDA numbers devices in PCI bus order (as with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, which every multi-GPU guide
    sets), while NVML's own index can differ. ``CUDA_VISIBLE_DEVICES`` then selects and reorders them by index
    or by (a unique prefix of) UUID; as in CUDA, parsing stops at the first entry that names no device.
    """
    by_bus = sorted(devices, key=lambda device: (device.pci_bus_id or "", device.nvml_index))
    if visible is None:
        return by_bus
    chosen: list[NvmlDevice] = []
    for raw in visible.split(","):
        token = raw.strip()
        device: NvmlDevice | None = None
        if token.lstrip("-").isdigit():
            position = int(token)
            if 0 <= position < len(by_bus):
                device = by_bus[position]
        elif token.startswith("GPU-"):
            matches = [d for d in by_bus if d.uuid is not None and d.uuid.startswith(token)]
            device = matches[0] if len(matches) == 1 else None
        if device is None or device in chosen:
            break
        chosen.append(device)
    return chosen


class GpuProbe:
    """Reads VRAM per GPU and lists GPU processes. Read-only: it never signals or kills any process.

    Args:
        nvml: the NVML session; tests pass one built on a fake ``pynvml``.
        environ: the environment to read ``CUDA_VISIBLE_DEVICES`` from.
        amdsmi: the AMD SMI session, asked only on ROCm; tests pass one built on a stand-in ``amdsmi``.
    """

    def __init__(self, nvml: Nvml | None = None, environ: dict[str, str] | None = None, amdsmi: AmdSmi | None = None):
        self._nvml = nvml if nvml is not None else Nvml()
        self._amdsmi = amdsmi if amdsmi is not None else AmdSmi()
        self._environ = environ if environ is not None else os.environ
        self._devices: list[NvmlDevice] | None = None
        self._all_devices: list[NvmlDevice] = []
        self.torch_failures = Failures(
            logger, "torch.cuda.{kind} failed; VRAM figures from torch are missing", level=logging.WARNING
        )

    @property
    def failures(self) -> tuple[Failures, ...]:
        """Each driver library's contained failures: NVML's, torch's and AMD SMI's."""
        return (self._nvml.failures, self.torch_failures, self._amdsmi.failures)

    def may_block(self) -> bool:
        """Whether a reading calls into a driver, which can hang: NVML, or the GPU backend of a loaded torch."""
        return self._nvml.may_call_driver() or loaded_torch() is not None

    def read(self) -> tuple[tuple[GpuReading, ...], GpuSource | None, str | None]:
        """The readings, which library gave them, and why there are none when there are none."""
        readings = self._read_nvml()
        if readings:
            return readings, GpuSource.NVML, None
        torch = loaded_torch()
        backend = torch_backend(torch)
        if backend is not None:
            readings = read_torch(torch, backend, self.torch_failures)
            if readings and backend is GpuBackend.ROCM:
                return self._with_amdsmi(readings)
            if readings:
                return readings, GpuSource.TORCH, None
        return (), None, self._unavailable_reason(torch, backend)

    def _unavailable_reason(self, torch: ModuleType | None, backend: GpuBackend | None) -> str:
        nvml_reason = self._nvml.unavailable_reason or "NVML sees no GPU"
        if torch is None:
            return f"{nvml_reason}; torch is not loaded in this process"
        if backend is None:
            return f"{nvml_reason}; torch has not initialised CUDA in this process (nor ROCm, XPU or MPS)"
        return f"{nvml_reason}; torch reports no {backend.label} device"

    def _with_amdsmi(self, readings: tuple[GpuReading, ...]) -> tuple[tuple[GpuReading, ...], GpuSource, None]:
        """torch's ROCm readings with AMD SMI's device-wide total, used and free, matched by index.

        The source is ``amdsmi`` when any GPU's figures are AMD SMI's; torch's allocated and reserved bytes stay.
        """
        amd = self._amdsmi.gpus()
        if amd is None:
            return readings, GpuSource.TORCH, None
        if len(amd) != len(readings) or [r.index for r in readings] != list(range(len(readings))):
            note = AMDSMI_COUNT_NOTE.format(amd=len(amd), torch=len(readings))
            return tuple(replace(r, note=note) for r in readings), GpuSource.TORCH, None
        merged = tuple(_amdsmi_figures(reading, gpu) for reading, gpu in zip(readings, amd, strict=True))
        from_amdsmi = any(reading.note is None for reading in merged)
        return merged, GpuSource.AMDSMI if from_amdsmi else GpuSource.TORCH, None

    def visible_devices(self) -> list[NvmlDevice]:
        """NVML devices in CUDA order, enumerated once (the set of GPUs does not change under a process)."""
        if self._devices is None:
            self._devices = self._enumerate()
        return self._devices

    def _enumerate(self) -> list[NvmlDevice]:
        module = self._nvml.module()
        if module is None:
            return []
        count = self._nvml.query(module.nvmlDeviceGetCount) or 0
        devices: list[NvmlDevice] = []
        for nvml_index in range(count):
            handle = self._nvml.query(module.nvmlDeviceGetHandleByIndex, nvml_index)
            if handle is None:
                continue
            pci = self._nvml.query(module.nvmlDeviceGetPciInfo, handle)
            devices.append(
                NvmlDevice(
                    nvml_index=nvml_index,
                    handle=handle,
                    name=_text(self._nvml.query(module.nvmlDeviceGetName, handle)),
                    uuid=_text(self._nvml.query(module.nvmlDeviceGetUUID, handle)),
                    pci_bus_id=None if pci is None else _text(getattr(pci, "busId", None)),
                )
            )
        self._all_devices = devices
        return cuda_visible_order(devices, self._environ.get("CUDA_VISIBLE_DEVICES"))

    def _read_nvml(self) -> tuple[GpuReading, ...]:
        module = self._nvml.module()
        if module is None:
            return ()
        torch = loaded_torch()
        torch_ready = torch_cuda_ready(torch)
        cuda_api = getattr(torch, "cuda", None) if torch_ready else None
        readings = []
        for cuda_index, device in enumerate(self.visible_devices()):
            memory = self._nvml.query(module.nvmlDeviceGetMemoryInfo, device.handle)
            allocated, reserved = (
                (None, None) if cuda_api is None else torch_usage(cuda_api, cuda_index, self.torch_failures)
            )
            total: int | None
            used: int | None
            free: int | None
            if memory is not None:
                total, used, free = int(memory.total), int(memory.used), int(memory.free)
                note = None
            elif torch_ready:
                total, used, free = self._torch_memory(torch, cuda_index)
                note = JETSON_NOTE
            else:
                total = used = free = None
                note = NVML_PARTIAL_NOTE
            readings.append(
                GpuReading(
                    index=cuda_index,
                    name=device.name,
                    total_bytes=total,
                    used_bytes=used,
                    free_bytes=free,
                    uuid=device.uuid,
                    torch_allocated_bytes=allocated,
                    torch_reserved_bytes=reserved,
                    backend=GpuBackend.CUDA,
                    note=note,
                )
            )
        return tuple(readings)

    def _torch_memory(self, torch: Any, index: int) -> tuple[int | None, int | None, int | None]:
        """Total, used and free from ``torch.cuda.mem_get_info``, where NVML has no memory figures (Jetson)."""
        try:
            free, total = torch.cuda.mem_get_info(index)
        except Exception as error:  # torch raises RuntimeError subclasses that vary between versions.
            self.torch_failures.record(f"mem_get_info({index})", error)
            return None, None, None
        return int(total), int(total) - int(free), int(free)

    def processes(self) -> tuple[GpuProcess, ...] | None:
        """Every process NVML lists on any GPU (``nvidia-smi --query-compute-apps=pid,used_memory``).

        ``None`` when NVML is unavailable (on ROCm: AMD SMI's list instead, when it answers). Names come from
        ``/proc/<pid>/comm``; command lines are never read.
        """
        module = self._nvml.module()
        if module is None:
            return self._amdsmi_processes()
        visible = self.visible_devices()
        cuda_index = {device.nvml_index: index for index, device in enumerate(visible)}
        own_pid = os.getpid()
        seen: set[tuple[int, int]] = set()
        found: list[GpuProcess] = []
        for device in self._all_devices:
            for lister in (module.nvmlDeviceGetComputeRunningProcesses, module.nvmlDeviceGetGraphicsRunningProcesses):
                for info in self._nvml.query(lister, device.handle) or ():
                    pid = int(info.pid)
                    if (pid, device.nvml_index) in seen:
                        continue
                    seen.add((pid, device.nvml_index))
                    used = getattr(info, "usedGpuMemory", None)
                    name, visible_here = _process_name(pid)
                    found.append(
                        GpuProcess(
                            pid=pid,
                            name=name,
                            gpu_index=cuda_index.get(device.nvml_index),
                            used_bytes=None if used is None else int(used),
                            is_current_process=pid == own_pid,
                            in_this_container=visible_here,
                        )
                    )
        return tuple(found)

    def _amdsmi_processes(self) -> tuple[GpuProcess, ...] | None:
        """AMD SMI's processes on ROCm, numbered as torch numbers the GPUs when both see as many; else ``None``."""
        torch = loaded_torch()
        if torch_backend(torch) is not GpuBackend.ROCM:
            return None
        listed = self._amdsmi.processes()
        if listed is None:
            return None
        amd = self._amdsmi.gpus() or ()
        try:
            same_numbering = len(amd) == int(torch.cuda.device_count())  # type: ignore[union-attr]
        except Exception as error:  # torch raises RuntimeError subclasses that vary between versions.
            self.torch_failures.record("device_count", error)
            same_numbering = False
        own_pid = os.getpid()
        found = []
        for process in listed:
            name, visible_here = _process_name(process.pid)  # never amdsmi's "name": it can hold arguments
            found.append(
                GpuProcess(
                    pid=process.pid,
                    name=name,
                    gpu_index=process.gpu_index if same_numbering else None,
                    used_bytes=process.vram_bytes,
                    is_current_process=process.pid == own_pid,
                    in_this_container=visible_here,
                )
            )
        return tuple(found)


def _amdsmi_figures(reading: GpuReading, gpu: AmdGpu) -> GpuReading:
    """One torch reading with AMD SMI's total, used and free; torch's, with a note, where AMD SMI has none."""
    if gpu.total_bytes is None or gpu.used_bytes is None:
        return replace(reading, note=AMDSMI_PARTIAL_NOTE)
    free = max(gpu.total_bytes - gpu.used_bytes, 0)
    return replace(reading, total_bytes=gpu.total_bytes, used_bytes=gpu.used_bytes, free_bytes=free)


def _process_name(pid: int, procfs: Path = DEFAULT_PROCFS) -> tuple[str | None, bool]:
    """The executable's name and whether the pid exists here (``cat /proc/<pid>/comm``); never its arguments.

    psutil's ``name()`` is not used on Linux: when ``comm`` is 15 characters (the kernel's limit, so maybe cut
    short) it takes ``argv[0]`` from ``/proc/<pid>/cmdline``, and a process that rewrote its command line gives
    ``longprocessname --token=SECRET123``. Here the full name comes from the executable's path instead (the
    ``/proc/<pid>/exe`` link), used only when it continues ``comm``; otherwise the 15 characters are the name.
    """
    folder = procfs / str(pid)
    if not folder.is_dir():
        if procfs.is_dir():
            return None, False
        return _psutil_name(pid)  # no /proc (macOS, Windows): no argv fallback there to worry about
    try:
        comm = (folder / "comm").read_bytes().decode(errors="replace").rstrip("\n")
    except FileNotFoundError:
        return None, False
    except OSError:
        return None, True
    if len(comm) >= 15:
        try:
            executable = os.path.basename(os.readlink(folder / "exe")).removesuffix(" (deleted)")
        except OSError:  # another user's process: its exe link is not ours to read
            executable = ""
        if executable.startswith(comm):
            return executable, True
    return comm, True


def _psutil_name(pid: int) -> tuple[str | None, bool]:
    try:
        return psutil.Process(pid).name(), True
    except psutil.NoSuchProcess:
        return None, False
    except psutil.AccessDenied:
        return None, True
