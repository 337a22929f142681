"""The RAM probe: the host's figures, or the container's when a memory cgroup limits this process.

Linux reads ``/proc`` and the cgroup file system; Windows and macOS have neither (and no cgroups), so there psutil
answers and the source is always the host.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import psutil

from ..failures import Failures
from .cgroup import CgroupReader, read_bytes
from .readings import RamReading, RamSource

logger = logging.getLogger(__name__)

DEFAULT_PROCFS = Path("/proc")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_from_statm(data: bytes) -> int | None:
    """The resident set in bytes from ``/proc/<pid>/statm`` (its second field, in pages); ``None`` if unreadable."""
    fields = data.split(None, 2)  # the first two fields only: read after every node
    if len(fields) > 1 and fields[1].isdigit():
        return int(fields[1]) * PAGE_SIZE
    return None


def parse_meminfo(data: bytes) -> tuple[int, int] | None:
    """``MemTotal`` and ``MemAvailable`` from ``/proc/meminfo``, in bytes; ``None`` when either is missing
    (``MemAvailable`` exists since Linux 3.14)."""
    total = available = None
    for line in data.splitlines():
        if line.startswith(b"MemTotal:"):
            total = int(line.split()[1]) * 1024
        elif line.startswith(b"MemAvailable:"):
            available = int(line.split()[1]) * 1024
        if total is not None and available is not None:
            return total, available
    return None


def host_available_bytes() -> int:
    """The host's available RAM (``free -b``'s available column), what ComfyUI's own RAM checks read (its
    ``RAMPressureCache.poll``, its model unloading on the CPU): not a container's, whatever its limit."""
    return int(psutil.virtual_memory().available)


class RamProbe:
    """Reads RAM the way the process's OOM killer sees it.

    The cgroup is used when it sets a limit below the host's RAM; otherwise (no cgroup, ``max``, or a v1
    "unlimited" that is really 2**63) the host's ``free``-style figures are used. The result says which.
    """

    def __init__(self, cgroup_reader: CgroupReader | None = None, procfs: Path = DEFAULT_PROCFS):
        # Only Linux has /proc files in this format and memory cgroups; elsewhere psutil alone answers.
        self._linux = sys.platform.startswith("linux")
        self._cgroup = cgroup_reader if cgroup_reader is not None else CgroupReader()
        self._meminfo = procfs / "meminfo"
        self._statm = procfs / "self" / "statm"
        self._process = psutil.Process()
        self._host_total = int(psutil.virtual_memory().total)  # physical RAM does not change under a process
        self.last: RamReading | None = None
        """The latest reading, whoever asked for it (the watchdog every 250 ms while a prompt runs, the panel, the
        engine): what the per-node profile shows as system RAM for ordinary nodes, at no cost of its own."""
        self._rss_high: int | None = None
        self._rss_failures = Failures(logger, "{kind}; this process's RSS is missing", logging.WARNING, False)

    @property
    def failures(self) -> tuple[Failures, ...]:
        """Readings that failed: this process's RSS, and the cgroup files (a container's figures)."""
        return (self._rss_failures, self._cgroup.failures)

    def _host(self) -> tuple[int, int]:
        """The host's total and available RAM: ``/proc/meminfo`` read directly on Linux (a third of the cost
        of ``psutil.virtual_memory()``, which parses every field), psutil elsewhere."""
        data = read_bytes(self._meminfo) if self._linux else None
        parsed = None if data is None else parse_meminfo(data)
        if parsed is not None:
            return parsed
        memory = psutil.virtual_memory()
        return int(memory.total), int(memory.available)

    def read(self) -> RamReading:
        reading = self._read()
        self.last = reading
        rss = reading.process_rss_bytes
        if rss is not None and (self._rss_high is None or rss > self._rss_high):
            self._rss_high = rss
        return reading

    def take_rss_high(self) -> int | None:
        """The highest resident set among the readings since the last call (``None``: no reading), and a new start.

        The per-node profile's sampled RAM peak where the process's own mark cannot be reset. Readings come from
        the watchdog's thread too; a reading that lands between this call's read and reset is lost, not wrong.
        """
        high, self._rss_high = self._rss_high, None
        return high

    def cgroup_location(self) -> tuple[RamSource, Path] | None:
        """The cgroup version and folder the readings come from, when RAM is read against a cgroup's limit."""
        last = self.last
        if last is None or last.cgroup_path is None or last.source not in (RamSource.CGROUP_V1, RamSource.CGROUP_V2):
            return None
        return last.source, Path(last.cgroup_path)

    def _read(self) -> RamReading:
        rss = self.process_rss()
        cgroup = self._cgroup.read(no_limit_from=self._host_total) if self._linux else None
        if cgroup is not None and cgroup.limit_bytes is not None:
            used = cgroup.usage_bytes
            available = None if used is None else max(cgroup.limit_bytes - used, 0)
            return RamReading(
                source=cgroup.version,
                total_bytes=cgroup.limit_bytes,
                used_bytes=used,
                available_bytes=available,
                process_rss_bytes=rss,
                host_total_bytes=self._host_total,
                cgroup_path=str(cgroup.path),
            )
        total, available = self._host()
        return RamReading(
            source=RamSource.HOST,
            total_bytes=total,
            # total - available counts what cannot be reclaimed, as `free`'s "used" does since procps 3.3.10.
            used_bytes=total - available,
            available_bytes=available,
            process_rss_bytes=rss,
            host_total_bytes=total,
            cgroup_path=None if cgroup is None else str(cgroup.path),
        )

    def process_rss(self) -> int | None:
        """This process's resident set size (``ps -o rss``), ``None`` when unreadable.

        ``/proc/self/statm``'s second field, in pages, on Linux; psutil elsewhere.
        """
        data = read_bytes(self._statm) if self._linux else None
        rss = None if data is None else rss_from_statm(data)
        if rss is not None:
            return rss
        try:
            return int(self._process.memory_info().rss)
        except psutil.Error as error:
            self._rss_failures.record(f"psutil refused ({type(error).__name__})", error)
            return None
