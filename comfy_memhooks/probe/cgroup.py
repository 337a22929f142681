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
import os
from dataclasses import dataclass
from pathlib import Path

from ..failures import Failures
from .readings import RamSource

logger = logging.getLogger(__name__)

DEFAULT_CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_PROC_SELF_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True, slots=True)
class CgroupMemory:
    """A memory cgroup's limit and usage.

    Attributes:
        version: ``RamSource.CGROUP_V1`` or ``RamSource.CGROUP_V2``.
        path: the cgroup directory whose limit applies: this process's own, or a parent's whose limit leaves
            less room (a Kubernetes pod's limit over its containers', a slice's over a service's).
        limit_bytes: that directory's limit, ``None`` when unlimited.
        usage_bytes: that directory's usage minus inactive file cache (``cat memory.current`` minus
            ``inactive_file``): a parent counts every group under it, as its OOM killer does; not read, so
            ``None``, when there is no limit.
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
        self.failures = Failures(logger, "cgroup {kind}", logging.WARNING, traceback=False)

    def read(self, no_limit_from: int | None = None) -> CgroupMemory | None:
        """The cgroup's memory figures, or ``None`` when the process is in no readable memory cgroup.

        Args:
            no_limit_from: a limit at or above this (the host's RAM) counts as none, and usage is then not read.
        """
        if not self._located:
            self._location = self._locate()
            self._located = True
        location = self._location
        if location is None:
            return None
        read = _read_v2 if location.version is RamSource.CGROUP_V2 else _read_v1
        memory = read(location, no_limit_from)
        if memory.limit_bytes is not None and memory.usage_bytes is None:
            # A limit without a usage: the container's RAM percentage is unknown, which the user must see.
            self.failures.record(f"usage unreadable in {location.path}", ValueError("no usage figure"))
        return memory

    def _locate(self) -> _Location | None:
        try:
            lines = self._proc_self_cgroup.read_text().splitlines()
        except (OSError, ValueError) as error:  # unreadable, or not UTF-8 (a path in another encoding)
            self.failures.record(f"file {self._proc_self_cgroup} unreadable; RAM is read from the host", error)
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


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes, or ``None``. Raw ``os.read``: a cgroup or ``/proc`` file is small, and probes run often."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(descriptor, 65536)
    except OSError:
        return None
    finally:
        os.close(descriptor)


def _read_int(path: Path) -> int | None:
    data = read_bytes(path)
    if data is None:
        return None
    try:
        return int(data.strip())
    except ValueError:
        return None


def _read_stat(path: Path) -> dict[bytes, int]:
    """Parses ``memory.stat``: one ``name value`` pair a line; malformed lines are skipped, not fatal."""
    stats: dict[bytes, int] = {}
    data = read_bytes(path)
    if data is None:
        return stats
    for line in data.splitlines():
        name, _, value = line.partition(b" ")
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


def _effective_limit(limit: int | None, no_limit_from: int | None) -> int | None:
    if limit is None or limit <= 0 or (no_limit_from is not None and limit >= no_limit_from):
        return None
    return limit


def _room(memory: CgroupMemory) -> int:
    """What is left under a level's limit; a level whose usage cannot be read counts as empty."""
    return (memory.limit_bytes or 0) - (memory.usage_bytes or 0)


def _tightest(levels: list[CgroupMemory]) -> CgroupMemory | None:
    """The level that leaves the least room: the one whose limit the kernel enforces first."""
    return min(levels, key=_room) if levels else None


def _read_v2(location: _Location, no_limit_from: int | None) -> CgroupMemory:
    """cgroup v2: ``memory.max`` (``max`` = none) at each level up to the mount, each limited level with its own
    usage; the level with the least room applies.

    Only limited levels cost more than one read (their ``memory.current`` and ``memory.stat``), and there is
    usually one.
    """
    levels: list[CgroupMemory] = []
    own_usage: int | None = None
    directory = location.path
    while True:
        text = read_bytes(directory / "memory.max")
        value = None if text is None else text.strip()
        limit: int | None = None
        if value and value != b"max":
            try:
                limit = _effective_limit(int(value), no_limit_from)
            except ValueError:
                logger.debug("unreadable %s: %r", directory / "memory.max", value)
        if limit is not None:
            usage = _v2_usage(directory)
            if directory == location.path:
                own_usage = usage
            elif usage is None:  # a parent whose usage is unreadable: this group's, a part of it, is all there is
                own_usage = own_usage if own_usage is not None else _v2_usage(location.path)
                usage = own_usage
            levels.append(CgroupMemory(RamSource.CGROUP_V2, directory, limit, usage))
        if directory in (location.mount, directory.parent):
            break
        directory = directory.parent
    return _tightest(levels) or CgroupMemory(RamSource.CGROUP_V2, location.path, None, None)


def _v2_usage(directory: Path) -> int | None:
    usage = _read_int(directory / "memory.current")
    return _usage_minus_inactive(usage, _read_stat(directory / "memory.stat").get(b"inactive_file"))


def _read_v1(location: _Location, no_limit_from: int | None) -> CgroupMemory:
    """cgroup v1: ``memory.limit_in_bytes``, and ``hierarchical_memory_limit`` for a tighter parent's limit.

    v1 has no "max": an unlimited group reports a huge number (2**63 rounded down to a page), which
    ``no_limit_from`` (the host's RAM) turns into no limit. A parent's tighter limit is read with that parent's
    usage where the parent is mounted here (no cgroup namespace); inside a container the parent cannot be seen,
    and this group's own usage is the best figure there is.
    """
    stats = _read_stat(location.path / "memory.stat")
    own = _effective_limit(_read_int(location.path / "memory.limit_in_bytes"), no_limit_from)
    hierarchical = _effective_limit(stats.get(b"hierarchical_memory_limit"), no_limit_from)
    levels: list[CgroupMemory] = []
    if own is not None:
        levels.append(_v1_level(location.path, own, stats))
    if hierarchical is not None and (own is None or hierarchical < own):
        parent = _v1_parent_with_limit(location, hierarchical)
        if parent is not None:
            levels.append(_v1_level(parent, hierarchical, _read_stat(parent / "memory.stat")))
        else:
            levels.append(_v1_level(location.path, hierarchical, stats))
    return _tightest(levels) or CgroupMemory(RamSource.CGROUP_V1, location.path, None, None)


def _v1_level(directory: Path, limit: int, stats: dict[bytes, int]) -> CgroupMemory:
    usage = _read_int(directory / "memory.usage_in_bytes")
    inactive = stats.get(b"total_inactive_file", stats.get(b"inactive_file"))
    return CgroupMemory(RamSource.CGROUP_V1, directory, limit, _usage_minus_inactive(usage, inactive))


def _v1_parent_with_limit(location: _Location, limit: int) -> Path | None:
    """The nearest parent under the mount whose own limit is ``limit``, or ``None`` when none can be seen."""
    directory = location.path
    while directory not in (location.mount, directory.parent):
        directory = directory.parent
        if _read_int(directory / "memory.limit_in_bytes") == limit:
            return directory
    return None
