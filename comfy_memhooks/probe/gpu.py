"""The VRAM probe: each GPU's memory, numbered as CUDA numbers it, and the processes that hold it.

NVML answers first; when it is missing or fails, torch's ``mem_get_info`` answers, but only when this process has
already initialised CUDA: a memory monitor must not create a CUDA context (hundreds of MB of VRAM) to report on.
Inside ComfyUI torch has always initialised CUDA by the time a GPU is used.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

from ..failures import Failures
from .nvml import Nvml
from .readings import GpuProcess, GpuReading, GpuSource

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


def loaded_torch() -> ModuleType | None:
    """torch as the host process loaded it; comfy_memhooks never imports torch itself (a second of start-up)."""
    return sys.modules.get("torch")


def torch_cuda_ready(torch: ModuleType | None) -> bool:
    """True when torch has CUDA initialised in this process, so asking it costs no new context."""
    if torch is None:
        return False
    try:
        return bool(torch.cuda.is_available() and torch.cuda.is_initialized())
    except Exception:  # a broken CUDA install raises anything from here; the answer is simply "no".
        logger.debug("torch.cuda state unreadable", exc_info=True)
        return False


class GpuProbe:
    """Reads VRAM per GPU and lists GPU processes. Read-only: it never signals or kills any process.

    Args:
        nvml: the NVML session; tests pass one built on a fake ``pynvml``.
        environ: the environment to read ``CUDA_VISIBLE_DEVICES`` from.
    """

    def __init__(self, nvml: Nvml | None = None, environ: dict[str, str] | None = None):
        self._nvml = nvml if nvml is not None else Nvml()
        self._environ = environ if environ is not None else os.environ
        self._devices: list[NvmlDevice] | None = None
        self._all_devices: list[NvmlDevice] = []
        self.torch_failures = Failures(
            logger, "torch.cuda.{kind} failed; VRAM figures from torch are missing", level=logging.WARNING
        )

    def read(self) -> tuple[tuple[GpuReading, ...], GpuSource | None, str | None]:
        """The readings, which library gave them, and why there are none when there are none."""
        readings = self._read_nvml()
        if readings:
            return readings, GpuSource.NVML, None
        torch = loaded_torch()
        if torch_cuda_ready(torch):
            readings = self._read_torch(torch)
            if readings:
                return readings, GpuSource.TORCH, None
        return (), None, self._unavailable_reason(torch)

    def _unavailable_reason(self, torch: ModuleType | None) -> str:
        nvml_reason = self._nvml.unavailable_reason or "NVML sees no GPU"
        if torch is None:
            return f"{nvml_reason}; torch is not loaded in this process"
        if not torch_cuda_ready(torch):
            return f"{nvml_reason}; torch has not initialised CUDA in this process"
        return f"{nvml_reason}; torch reports no CUDA device"

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
        readings = []
        for cuda_index, device in enumerate(self.visible_devices()):
            memory = self._nvml.query(module.nvmlDeviceGetMemoryInfo, device.handle)
            allocated, reserved = self._torch_usage(torch, cuda_index) if torch_ready else (None, None)
            readings.append(
                GpuReading(
                    index=cuda_index,
                    name=device.name,
                    total_bytes=None if memory is None else int(memory.total),
                    used_bytes=None if memory is None else int(memory.used),
                    free_bytes=None if memory is None else int(memory.free),
                    uuid=device.uuid,
                    torch_allocated_bytes=allocated,
                    torch_reserved_bytes=reserved,
                )
            )
        return tuple(readings)

    def _read_torch(self, torch: Any) -> tuple[GpuReading, ...]:
        readings = []
        try:
            count = int(torch.cuda.device_count())
        except Exception as error:  # torch raises RuntimeError subclasses that vary between versions.
            self.torch_failures.record("device_count", error)
            return ()
        for index in range(count):
            try:
                free, total = torch.cuda.mem_get_info(index)
                name = str(torch.cuda.get_device_name(index))
            except Exception as error:  # as above: any failure of one device leaves it out, not the others.
                self.torch_failures.record(f"mem_get_info({index})", error)
                continue
            allocated, reserved = self._torch_usage(torch, index)
            readings.append(
                GpuReading(
                    index=index,
                    name=name,
                    total_bytes=int(total),
                    used_bytes=int(total) - int(free),
                    free_bytes=int(free),
                    torch_allocated_bytes=allocated,
                    torch_reserved_bytes=reserved,
                )
            )
        return tuple(readings)

    def _torch_usage(self, torch: Any, index: int) -> tuple[int | None, int | None]:
        try:
            return int(torch.cuda.memory_allocated(index)), int(torch.cuda.memory_reserved(index))
        except Exception as error:  # an index torch does not know (a mismatched CUDA_VISIBLE_DEVICES) is no error.
            self.torch_failures.record(f"memory_allocated({index})", error)
            return None, None

    def processes(self) -> tuple[GpuProcess, ...] | None:
        """Every process NVML lists on any GPU (``nvidia-smi --query-compute-apps=pid,used_memory``).

        ``None`` when NVML is unavailable. Names come from ``/proc/<pid>/comm``; command lines are never read.
        """
        module = self._nvml.module()
        if module is None:
            return None
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
