"""One façade over the RAM and GPU probes: ``MemoryProbe().snapshot()`` is all the rest of the package calls."""

from __future__ import annotations

import time
from collections.abc import Callable

from .gpu import GpuProbe
from .ram import RamProbe
from .readings import MemorySnapshot, RamReading


class MemoryProbe:
    """Takes :class:`MemorySnapshot` readings.

    Args:
        ram: the RAM probe (its cgroup root is injectable for tests).
        gpu: the GPU probe (its NVML module is injectable for tests).
        wall_clock: the time source stamped on each snapshot.
    """

    def __init__(
        self,
        ram: RamProbe | None = None,
        gpu: GpuProbe | None = None,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.ram = ram if ram is not None else RamProbe()
        self.gpu = gpu if gpu is not None else GpuProbe()
        self._wall_clock = wall_clock

    def snapshot(self, include_processes: bool = False) -> MemorySnapshot:
        """Reads RAM and every GPU now; the GPU process list only when asked (it costs a call per GPU)."""
        taken_at = self._wall_clock()
        ram = self.ram.read()
        gpus, source, reason = self.gpu.read()
        processes = self.gpu.processes() if include_processes else None
        return MemorySnapshot(
            taken_at=taken_at,
            ram=ram,
            gpus=gpus,
            gpu_source=source,
            gpu_unavailable_reason=reason,
            processes=processes,
        )

    def read_ram(self) -> RamReading:
        """RAM alone, without the GPUs: what the pressure watchdog reads several times a second."""
        return self.ram.read()

    def usage(self) -> tuple[int | None, int | None]:
        """This process's RSS and the VRAM used on all GPUs: the two figures an action's effect is measured by."""
        gpus, _, _ = self.gpu.read()
        used = [gpu.used_bytes for gpu in gpus if gpu.used_bytes is not None]
        return self.ram.process_rss(), (sum(used) if used else None)
