"""Reads the memory limit and usage of the cgroup this process runs in (Docker, Kubernetes, rented pods).

Inside a container ``psutil.virtual_memory()`` reports the host's RAM, so a 16 GB container on a 256 GB host
looks nearly empty right up to the moment the kernel kills it. The cgroup's own counters tell the truth.

Both cgroup versions are read the way ``docker stats`` reads them: usage minus the inactive page cache, which the
kernel drops before it kills anything.

The root of the cgroup file system and the path of ``/proc/self/cgroup`` are parameters, so tests build fake
v1 and v2 trees in a temporary folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .snapshots import RamSource

logger = logging.getLogger(__name__)

DEFAULT_CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_PROC_SELF_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True, slots=True)
class CgroupMemory:
    """A memory cgroup's limit and usage.

    Attributes:
        version: ``RamSource.CGROUP_V1`` or ``RamSource.CGROUP_V2``.
        path: the cgroup directory that was read.
        limit_bytes: the effective limit (the smallest along the path), ``None`` when unlimited.
        usage_bytes: usage minus inactive file cache (``cat memory.current`` minus ``inactive_file``).
    """

    version: RamSource
    path: Path
    limit_bytes: int | None
    usage_bytes: int | None


@dataclass(frozen=True, slots=True)
class _Location:
    version: RamSource
    path: Path
    mount: Path


class CgroupReader:
    """Finds this process's memory cgroup once, then reads its counters on each call.

    ``cat /proc/self/cgroup`` names the cgroup; the file system under ``root`` holds its files. In a container
    with its own cgroup namespace the name is ``/`` and the mount is the container's cgroup; without one, the
    name is the host's path (``/docker/<id>``) while the mount may start below it, so the deepest existing
    suffix of the path is used.
    """

    def __init__(self, root: Path = DEFAULT_CGROUP_ROOT, proc_self_cgroup: Path = DEFAULT_PROC_SELF_CGROUP):
        self._root = root
        self._proc_self_cgroup = proc_self_cgroup
        self._location: _Location | None = None
        self._located = False

    def read(self) -> CgroupMemory | None:
        """The cgroup's memory figures, or ``None`` when the process is in no readable memory cgroup."""
        if not self._located:
            self._location = self._locate()
            self._located = True
        location = self._location
        if location is None:
            return None
        if location.version is RamSource.CGROUP_V2:
            return _read_v2(location)
        return _read_v1(location)

    def _locate(self) -> _Location | None:
        try:
            lines = self._proc_self_cgroup.read_text().splitlines()
        except OSError:
            return None
        v1_path: str | None = None
        v2_path: str | None = None
        for line in lines:
            # "hierarchy-ID:controller-list:cgroup-path"; the path may itself contain ':'.
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            hierarchy, controllers, path = parts
            if "memory" in controllers.split(","):
                v1_path = path
            elif hierarchy == "0" and controllers == "":
                v2_path = path
        # On a hybrid host the memory controller lives in v1 while the v2 tree has none.
        if v1_path is not None:
            mount = self._root / "memory"
            found = _deepest_existing(mount, v1_path, "memory.limit_in_bytes")
            if found is not None:
                return _Location(RamSource.CGROUP_V1, found, mount)
        if v2_path is not None:
            for mount in (self._root, self._root / "unified"):
                found = _deepest_existing(mount, v2_path, "memory.max")
                if found is not None:
                    return _Location(RamSource.CGROUP_V2, found, mount)
        return None


def _deepest_existing(mount: Path, cgroup_path: str, marker: str) -> Path | None:
    parts = [part for part in cgroup_path.split("/") if part and part != ".."]
    for start in range(len(parts) + 1):
        candidate = mount.joinpath(*parts[start:])
        if (candidate / marker).is_file():
            return candidate
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_stat(path: Path) -> dict[str, int]:
    """Parses ``memory.stat``: one ``name value`` pair a line; malformed lines are skipped, not fatal."""
    stats: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return stats
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        try:
            stats[name] = int(value)
        except ValueError:
            continue
    return stats


def _usage_minus_inactive(usage: int | None, inactive_file: int | None) -> int | None:
    if usage is None:
        return None
    if inactive_file is None or inactive_file > usage:
        return usage
    return usage - inactive_file


def _read_v2(location: _Location) -> CgroupMemory:
    """cgroup v2: ``memory.max`` (``max`` = none) at each level up to the mount; the smallest one applies."""
    limit: int | None = None
    directory = location.path
    while True:
        try:
            text = (directory / "memory.max").read_text().strip()
        except OSError:
            text = "max"
        if text != "max":
            try:
                value = int(text)
            except ValueError:
                logger.debug("unreadable %s: %r", directory / "memory.max", text)
            else:
                limit = value if limit is None else min(limit, value)
        if directory in (location.mount, directory.parent):
            break
        directory = directory.parent
    usage = _read_int(location.path / "memory.current")
    inactive = _read_stat(location.path / "memory.stat").get("inactive_file")
    return CgroupMemory(RamSource.CGROUP_V2, location.path, limit, _usage_minus_inactive(usage, inactive))


def _read_v1(location: _Location) -> CgroupMemory:
    """cgroup v1: ``memory.limit_in_bytes``, and ``hierarchical_memory_limit`` for a tighter parent's limit.

    v1 has no "max": an unlimited group reports a huge number (2**63 rounded down to a page). The caller
    treats any limit at or above the host's RAM as no limit.
    """
    stats = _read_stat(location.path / "memory.stat")
    candidates = [
        value
        for value in (_read_int(location.path / "memory.limit_in_bytes"), stats.get("hierarchical_memory_limit"))
        if value is not None and value > 0
    ]
    limit = min(candidates) if candidates else None
    usage = _read_int(location.path / "memory.usage_in_bytes")
    inactive = stats.get("total_inactive_file", stats.get("inactive_file"))
    return CgroupMemory(RamSource.CGROUP_V1, location.path, limit, _usage_minus_inactive(usage, inactive))
