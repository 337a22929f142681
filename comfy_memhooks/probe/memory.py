"""One façade over the RAM and GPU probes: ``MemoryProbe().snapshot()`` is all the rest of the package calls."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..failures import Failures
from .core_ram import CoreRamReader
from .deadline import GPU_DEADLINE_SECONDS, Deadline
from .dynamic_vram import read_dynamic_vram
from .gpu import GpuProbe
from .ram import RamProbe
from .readings import DynamicVramReading, GpuProcess, GpuReading, GpuSource, MemorySnapshot, RamReading, RamSource

logger = logging.getLogger(__name__)

# What a RAM probe that failed outright reports: nothing known, so nothing is compared with a threshold.
UNKNOWN_RAM = RamReading(
    source=RamSource.HOST,
    total_bytes=None,
    used_bytes=None,
    available_bytes=None,
    process_rss_bytes=None,
    host_total_bytes=None,
)


class MemoryProbe:
    """Takes :class:`MemorySnapshot` readings.

    Args:
        ram: the RAM probe (its cgroup root is injectable for tests).
        gpu: the GPU probe (its NVML module is injectable for tests).
        wall_clock: the time source stamped on each snapshot.
        gpu_deadline_seconds: how long a GPU reading may take before it is given up (see :mod:`.deadline`).
        core_ram: reconciles the RAM reading with ComfyUI's own where it has one (see :mod:`.core_ram`).
    """

    def __init__(
        self,
        ram: RamProbe | None = None,
        gpu: GpuProbe | None = None,
        wall_clock: Callable[[], float] = time.time,
        gpu_deadline_seconds: float = GPU_DEADLINE_SECONDS,
        core_ram: CoreRamReader | None = None,
    ):
        self.ram = ram if ram is not None else RamProbe()
        self.core_ram = core_ram if core_ram is not None else CoreRamReader()
        self.gpu = gpu if gpu is not None else GpuProbe()
        self._wall_clock = wall_clock
        self._gpu_deadline = Deadline("GPU reading", gpu_deadline_seconds)
        self.failures = Failures(logger, "memory probe failed while {kind}; that reading is missing", logging.WARNING)

    def failure_count(self) -> int:
        """Readings lost to a failure, here or below: the cgroup files, ComfyUI's own reader, NVML, torch, AMD SMI."""
        return sum(part.count for part in self._failure_parts())

    def last_failure(self) -> str | None:
        """The latest failure in words: this façade's own first, then the driver libraries' in order."""
        return next((part.last_error for part in self._failure_parts() if part.last_error), None)

    def _failure_parts(self) -> tuple[Failures, ...]:
        return (self.failures, *self.ram.failures, self.core_ram.failures, *self.gpu.failures)

    def snapshot(self, include_processes: bool = False) -> MemorySnapshot:
        """Reads RAM and every GPU now; the GPU process list only when asked (it costs a call per GPU)."""
        taken_at = self._wall_clock()
        ram = self.read_ram()
        gpus, source, reason = self._read_gpus()
        processes = self.processes() if include_processes else None
        return MemorySnapshot(
            taken_at=taken_at,
            ram=ram,
            gpus=gpus,
            gpu_source=source,
            gpu_unavailable_reason=reason,
            processes=processes,
            dynamic_vram=self._read_dynamic_vram(),
        )

    def read_ram(self) -> RamReading:
        """RAM alone, without the GPUs: what the pressure watchdog reads several times a second.

        Every reading below is contained the same way: a probe may fail with any type (an ``OSError`` from
        ``/proc``, a ``UnicodeDecodeError`` from a cgroup file, an ``AttributeError`` from an old ``pynvml``), and
        one missing reading must not stop the hook, the node or the panel, so the failure becomes ``None``.
        """
        try:
            ours = self.ram.read()
        except Exception as error:  # any type: the reading becomes unknown, the caller goes on.
            self.failures.record(f"reading RAM ({type(error).__name__})", error)
            return UNKNOWN_RAM
        try:
            return self.core_ram.reconcile(ours)
        except Exception as error:  # a bug of ours comparing the two (ComfyUI's own failures are contained there)
            self.failures.record(f"reading ComfyUI's comfy.system_memory ({type(error).__name__})", error)
            return ours

    def _read_gpus(self) -> tuple[tuple[GpuReading, ...], GpuSource | None, str | None]:
        try:
            if not self.gpu.may_block():  # no driver to wait for: the hand-off would cost more than the reading
                return self.gpu.read()
            return self._gpu_deadline.call(self.gpu.read)
        except Exception as error:  # as in read_ram: no GPU readings rather than no snapshot.
            self.failures.record(f"reading the GPUs ({type(error).__name__})", error)
            return (), None, f"the GPU probe failed: {type(error).__name__}: {error}"

    def _read_dynamic_vram(self) -> DynamicVramReading | None:
        try:
            return read_dynamic_vram()
        except Exception as error:  # as in read_ram: a reading without the allocator's figures.
            self.failures.record("reading dynamic VRAM", error)
            return None

    def processes(self) -> tuple[GpuProcess, ...] | None:
        """The GPU process list, ``None`` when it cannot be read."""
        try:
            return self._gpu_deadline.call(self.gpu.processes)
        except Exception as error:  # as in read_ram.
            self.failures.record(f"listing GPU processes ({type(error).__name__})", error)
            return None

    def _process_rss(self) -> int | None:
        try:
            return self.ram.process_rss()
        except Exception as error:  # as in read_ram.
            self.failures.record(f"reading this process's RSS ({type(error).__name__})", error)
            return None

    def usage(self) -> tuple[int | None, int | None]:
        """This process's RSS and the VRAM used on all GPUs: the two figures an action's effect is measured by."""
        gpus, _, _ = self._read_gpus()
        used = [gpu.used_bytes for gpu in gpus if gpu.used_bytes is not None]
        return self._process_rss(), (sum(used) if used else None)
