"""Fake kernel high-water marks for the RAM peak tests: a ``/proc/self`` whose ``clear_refs`` resets ``VmHWM`` as
Linux does, and a cgroup v2 ``memory.peak`` reset per open file as Linux 6.12 does.

Both are files in a temporary folder; what only the kernel does (a write that resets, a read that answers per open
file, a refusal) is done by ``os.write``, ``os.pread`` and ``os.close`` patched for those files' descriptors alone.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

KIB = 1024
MIB = 1024**2


def _names(descriptor: int, path: Path) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{descriptor}") == str(path)
    except OSError:
        return False


class FakeProcessMark:
    """``/proc/self`` with ``status`` (``VmHWM``, ``VmRSS``) and a ``clear_refs`` whose ``5`` sets ``VmHWM`` to
    ``VmRSS``.

    Args:
        folder: the fake ``/proc/self`` to make.
        rss: the resident set, in bytes.
        groups: how many supplementary groups the ``Groups:`` line lists (it comes before ``VmHWM``, as in Linux).
        refuse: an errno for every write to ``clear_refs`` (seccomp, gVisor); ``None``: writes reset the mark.
    """

    def __init__(
        self, folder: Path, monkeypatch: pytest.MonkeyPatch, rss: int, groups: int = 0, refuse: int | None = None
    ):
        folder.mkdir()
        self.proc = folder
        self.status = folder / "status"
        self.clear_refs = folder / "clear_refs"
        self.clear_refs.write_bytes(b"")
        self.rss = self.hwm = rss
        self.groups = groups
        self.refuse = refuse
        self.resets = 0  # writes of "5" the kernel took
        self.status_reads = 0
        self._write_status()
        real_write, real_pread = os.write, os.pread

        def write(descriptor: int, data: bytes) -> int:
            if not _names(descriptor, self.clear_refs):
                return real_write(descriptor, data)
            if self.refuse is not None:
                raise OSError(self.refuse, os.strerror(self.refuse))
            if data.strip() != b"5":
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            self.resets += 1
            self.hwm = self.rss
            self._write_status()
            return len(data)

        def pread(descriptor: int, size: int, offset: int) -> bytes:
            if _names(descriptor, self.status):
                self.status_reads += 1
            return real_pread(descriptor, size, offset)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "pread", pread)

    def allocate(self, peak: int, rss_after: int | None = None) -> None:
        """The process's resident set reaches ``peak``, then falls to ``rss_after`` (back to where it was)."""
        self.hwm = max(self.hwm, peak)
        if rss_after is not None:
            self.rss = rss_after
        self._write_status()

    def text(self) -> bytes:
        return self.status.read_bytes()

    def _write_status(self) -> None:
        groups = " ".join(str(100000 + group) for group in range(self.groups))
        self.status.write_bytes(
            b"Name:\tpython\nUmask:\t0022\nState:\tR (running)\nTgid:\t42\nPid:\t42\nPPid:\t1\n"
            + f"Groups:\t{groups}\n".encode()
            + b"VmPeak:\t 9000000 kB\nVmSize:\t 8000000 kB\n"
            + f"VmHWM:\t{self.hwm // KIB:>8} kB\nVmRSS:\t{self.rss // KIB:>8} kB\n".encode()
            + b"Threads:\t4\n"
        )


class FakeCgroupV2Peak:
    """A cgroup v2 ``memory.peak``: read through a file that wrote to it, the usage at its highest since that
    write; through any other, the cgroup's highest ever (Linux 6.12 and later). On an older kernel the write is
    refused (``refuse``).

    Args:
        folder: the cgroup's folder (made).
        usage: the cgroup's usage now, in bytes.
        refuse: an errno for every write; ``None``: writes reset the peak for their file.
    """

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch, usage: int, refuse: int | None = None):
        folder.mkdir(exist_ok=True)
        self.path = folder / "memory.peak"
        self.path.write_bytes(b"")
        self.usage = self.highest = usage
        self.refuse = refuse
        self.fail_reads: int | None = None  # an errno for every read from now on (the cgroup removed under it)
        self.per_file: dict[int, int] = {}
        self.writes: list[bytes] = []
        self.reads = 0
        real_write, real_pread, real_close = os.write, os.pread, os.close

        def write(descriptor: int, data: bytes) -> int:
            if not _names(descriptor, self.path):
                return real_write(descriptor, data)
            self.writes.append(data)
            if self.refuse is not None:
                raise OSError(self.refuse, os.strerror(self.refuse))
            if not data.strip():
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            self.per_file[descriptor] = self.usage
            return len(data)

        def pread(descriptor: int, size: int, offset: int) -> bytes:
            if not _names(descriptor, self.path):
                return real_pread(descriptor, size, offset)
            self.reads += 1
            if self.fail_reads is not None:
                raise OSError(self.fail_reads, os.strerror(self.fail_reads))
            return f"{self.per_file.get(descriptor, self.highest)}\n".encode()[offset : offset + size]

        def close(descriptor: int) -> None:
            if _names(descriptor, self.path):
                self.per_file.pop(descriptor, None)
            real_close(descriptor)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "pread", pread)
        monkeypatch.setattr(os, "close", close)

    def use(self, usage: int) -> None:
        """The cgroup's usage becomes ``usage``; every peak follows it up."""
        self.usage = usage
        self.highest = max(self.highest, usage)
        self.per_file = {descriptor: max(peak, usage) for descriptor, peak in self.per_file.items()}

    def open_files(self) -> int:
        """How many of this process's descriptors name the file."""
        return sum(1 for name in os.listdir("/proc/self/fd") if _names(int(name), self.path))
