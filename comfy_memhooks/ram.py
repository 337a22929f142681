"""The RAM probe: the host's figures, or the container's when a memory cgroup limits this process."""

from __future__ import annotations

import logging

import psutil

from .cgroup import CgroupReader
from .snapshots import RamReading, RamSource

logger = logging.getLogger(__name__)


class RamProbe:
    """Reads RAM the way the process's OOM killer sees it.

    The cgroup is used when it sets a limit below the host's RAM; otherwise (no cgroup, ``max``, or a v1
    "unlimited" that is really 2**63) the host's ``free``-style figures are used. The result says which.
    """

    def __init__(self, cgroup_reader: CgroupReader | None = None):
        self._cgroup = cgroup_reader if cgroup_reader is not None else CgroupReader()
        self._process = psutil.Process()
        self._host_total = int(psutil.virtual_memory().total)  # physical RAM does not change under a process

    def read(self) -> RamReading:
        rss = self.process_rss()
        cgroup = self._cgroup.read(no_limit_from=self._host_total)
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
        host = psutil.virtual_memory()  # /proc/meminfo
        return RamReading(
            source=RamSource.HOST,
            total_bytes=host.total,
            # total - available counts what cannot be reclaimed, as `free`'s "used" does since procps 3.3.10.
            used_bytes=host.total - host.available,
            available_bytes=host.available,
            process_rss_bytes=rss,
            host_total_bytes=host.total,
            cgroup_path=None if cgroup is None else str(cgroup.path),
        )

    def process_rss(self) -> int | None:
        """This process's resident set size (``ps -o rss``), ``None`` when unreadable."""
        try:
            return int(self._process.memory_info().rss)  # /proc/self/statm
        except psutil.Error:
            return None
