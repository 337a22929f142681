"""The high-water marks a node's RAM peak is read from: the process's, the container's, and the platform's own.

Linux keeps two marks that can be reset per node:

- the process's peak resident set, ``VmHWM`` in ``/proc/self/status``, which writing ``5`` to
  ``/proc/self/clear_refs`` resets to the current resident set (Linux 4.0 and later, one's own process, no
  privileges; ``grep VmHWM /proc/self/status``);
- the container's peak usage, which is what its OOM killer counts: cgroup v2's ``memory.peak``, reset for reads
  through the same open file by a write (Linux 6.12 and later), or cgroup v1's ``memory.max_usage_in_bytes``,
  reset by writing ``0`` where it is writable (rarely inside Docker, whose cgroup files are read-only).

Where the process's mark cannot be reset, the platform's non-resettable peak (:func:`platform_peak`) tells a node's
peak whenever it rose during the node. :mod:`.peaks` turns these into each node's span.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path

import psutil

from ..failures import Failures
from ..probe.readings import RamSource

try:
    import resource
except ImportError:  # Windows: no getrusage; its peak comes from psutil
    resource = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

PROC_SELF = Path("/proc/self")
_KIB = 1024
_SAME_MARK_BYTES = 1024 * _KIB  # pages that may come between two reads of the same mark
# The calling thread's rusage: its ru_maxrss is the process's mark all the same (Linux fills it from the process's
# memory either way), without the kernel adding up every thread's times first: 0.4 µs instead of 4 with 60 threads.
_RUSAGE_WHO: int = 0 if resource is None else getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
_STATUS_READ_BYTES = 4096  # /proc/self/status is 1.5 KB or so; a long Groups: line can make it much longer
_STATUS_MAX_BYTES = 1024 * _KIB  # 65,536 groups of up to 10 digits, with room to spare


def parse_vm_hwm(status: bytes) -> int | None:
    """``VmHWM`` from ``/proc/<pid>/status`` in bytes (the file gives kB); ``None`` when absent or unreadable."""
    start = status.find(b"\nVmHWM:")
    if start < 0:
        return None
    end = status.find(b"\n", start + 1)
    fields = status[start + 7 : end if end > 0 else None].split()
    if len(fields) != 2 or fields[1] != b"kB" or not fields[0].isdigit():
        return None
    return int(fields[0]) * _KIB


class ProcessHighWater:
    """This process's peak resident set, reset through ``clear_refs``: files kept open, one system call each way.

    Any failure (the file missing, a write refused with ``EACCES`` or ``EINVAL``, ``VmHWM`` missing or garbage)
    turns it off for the rest of the process, logged once and counted: the nodes' peaks are then sampled.

    Args:
        failures: where a failure is counted.
        proc: the process's ``/proc`` folder (tests give a fake one).
    """

    def __init__(self, failures: Failures, proc: Path = PROC_SELF):
        self._failures = failures
        self._proc = proc
        self._clear: int | None = None
        self._status: int | None = None
        self._status_bytes = _STATUS_READ_BYTES  # grown once where VmHWM lies further in
        self._pid: int | None = None
        self._rusage = False
        self._probed = False
        self.broken = not sys.platform.startswith("linux")

    def reset(self) -> bool:
        """Resets the mark to the current resident set; ``False`` when it cannot (then it never tries again)."""
        if self.broken or not self._ready():
            return False
        if not self._probed:  # only here: the probe resets the mark, which must not happen inside a span
            self._probed = True
            self._rusage = self._rusage_follows_the_mark()
            if self.broken:  # the check found no VmHWM to compare with (counted there)
                return False
        try:
            os.write(self._clear, b"5")  # type: ignore[arg-type]  # _ready() opened it
        except OSError as error:
            name = errno.errorcode.get(error.errno or 0, "an error")
            return self._give_up(
                f"resetting the peak resident set ({self._proc / 'clear_refs'} refused: {name})", error
            )
        return True

    def read(self) -> int | None:
        """The resident set at its highest since the last reset, in bytes; ``None`` when unknown.

        Opened afresh here (after :meth:`close`, or in a forked child), it reads ``status``: the mark still counts
        from the last reset, and only the next reset may check whether the cheaper ``getrusage`` follows it.
        """
        if self.broken or not self._ready():
            return None
        if self._rusage:
            return resource.getrusage(_RUSAGE_WHO).ru_maxrss * _KIB
        return self._read_status()

    def _read_status(self) -> int | None:
        size = self._status_bytes
        try:
            status = os.pread(self._status, size, 0)  # type: ignore[arg-type]  # _ready() opened it
            value = parse_vm_hwm(status)
            while value is None and len(status) >= size and size < _STATUS_MAX_BYTES:
                size = self._status_bytes = size * 4  # VmHWM lies past what was read (a long Groups: line)
                status = os.pread(self._status, size, 0)  # type: ignore[arg-type]
                value = parse_vm_hwm(status)
        except OSError as error:
            self._give_up(f"reading VmHWM from {self._proc / 'status'}", error)
            return None
        if value is None:
            self._give_up(f"reading VmHWM from {self._proc / 'status'}", ValueError("no VmHWM figure in kB"))
        return value

    def _ready(self) -> bool:
        if self._pid == os.getpid():
            return True
        self.close()  # a forked child must not reset or read its parent's mark
        self._pid = os.getpid()
        try:
            self._status = os.open(self._proc / "status", os.O_RDONLY)
            self._clear = os.open(self._proc / "clear_refs", os.O_WRONLY)
        except OSError as error:
            return self._give_up(f"opening {self._proc / 'clear_refs'}", error)
        return True

    def _rusage_follows_the_mark(self) -> bool:
        """Whether ``getrusage``'s ``ru_maxrss`` reads the same mark, at a seventh of the cost of ``status``.

        The kernel answers it with the larger of the mark and the peak of the image this process replaced at
        ``exec`` (small after a shell, large after a fork of a large process): right after a reset the two agree
        only in the first case, and then they agree from then on. It resets the mark, so only :meth:`reset`
        asks.
        """
        if self._proc != PROC_SELF or resource is None:
            return False
        try:
            os.write(self._clear, b"5")  # type: ignore[arg-type]  # opened just before
        except OSError:
            return False  # reset() will say why
        status = self._read_status()
        if status is None:
            return False
        rusage = resource.getrusage(_RUSAGE_WHO).ru_maxrss * _KIB
        return abs(rusage - status) <= _SAME_MARK_BYTES

    def _give_up(self, kind: str, error: BaseException) -> bool:
        self.broken = True
        self.close()
        self._failures.record(f"{kind}; RAM peaks are sampled from now on", error)
        return False

    def close(self) -> None:
        for descriptor in (self._clear, self._status):
            if descriptor is not None:
                try:
                    os.close(descriptor)
                except OSError:
                    logger.debug("closing a /proc file failed", exc_info=True)
        self._clear = self._status = None
        self._pid = None  # opened again on the next use
        self._rusage = self._probed = False  # and checked again on the next reset


class ContainerHighWater:
    """The container's peak usage, reset per node where the kernel and the mount allow it; else absent.

    Refused as it opens (a read-only mount, a kernel before 6.12 for cgroup v2), it is left out with one line at
    INFO: that is the machine, not a failure. Failing later, mid-run (the cgroup removed under it, a read that is
    no number), it is counted in ``failures``, logged once, and left out from then on.

    Args:
        source: the cgroup version the RAM probe reads (``RamSource.CGROUP_V1`` or ``CGROUP_V2``).
        directory: that cgroup's folder.
        failures: where a failure mid-run is counted (the profile's).
    """

    def __init__(self, source: RamSource, directory: Path, failures: Failures):
        name, reset = (
            ("memory.peak", b"reset\n") if source is RamSource.CGROUP_V2 else ("memory.max_usage_in_bytes", b"0")
        )
        self.path = directory / name
        self._reset_text = reset
        self._failures = failures
        self._descriptor: int | None = None
        try:
            self._descriptor = os.open(self.path, os.O_RDWR)
            os.write(self._descriptor, reset)
        except OSError as error:  # read-only inside most containers, or a kernel before 6.12 (v2): no container peak
            logger.info(
                "comfy_memhooks: the container's peak %s cannot be reset (%s); it is not measured", self.path, error
            )
            self.close()

    @property
    def available(self) -> bool:
        return self._descriptor is not None

    def reset_and_read(self) -> int | None:
        """Resets the peak to the current usage and returns that usage (the node's starting point)."""
        descriptor = self._descriptor
        if descriptor is None:
            return None
        try:
            os.write(descriptor, self._reset_text)
            return int(os.pread(descriptor, 64, 0))
        except (OSError, ValueError) as error:
            self._give_up("resetting", error)
            return None

    def read(self) -> int | None:
        """The usage at its highest since the last reset, through the same file (cgroup v2 keeps it per file)."""
        descriptor = self._descriptor
        if descriptor is None:
            return None
        try:
            return int(os.pread(descriptor, 64, 0))
        except (OSError, ValueError) as error:
            self._give_up("reading", error)
            return None

    def _give_up(self, doing: str, error: BaseException) -> None:
        self.close()
        self._failures.record(f"{doing} the container's peak {self.path}; it is not measured from now on", error)

    def close(self) -> None:
        if self._descriptor is not None:
            try:
                os.close(self._descriptor)
            except OSError:
                logger.debug("closing %s failed", self.path, exc_info=True)
            self._descriptor = None


def platform_peak() -> int | None:
    """The process's all-time peak resident set, in bytes, for where its resettable mark is missing or refused.

    Windows' ``PeakWorkingSetSize`` (psutil's ``peak_wset``); macOS' ``ru_maxrss`` (bytes there); Linux'
    ``ru_maxrss`` (KiB there), which is the mark ``clear_refs`` would reset, never reset where that is refused
    (seccomp, gVisor); ``None`` elsewhere. None of them can be reset, so a node's peak is known from it only when
    it rose during the node.
    """
    try:
        if sys.platform == "win32":
            return int(psutil.Process().memory_info().peak_wset)  # type: ignore[attr-defined]
        if resource is None:
            return None
        if sys.platform == "darwin":
            return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        if sys.platform.startswith("linux"):
            return int(resource.getrusage(_RUSAGE_WHO).ru_maxrss) * _KIB
    except (psutil.Error, OSError, AttributeError):
        logger.debug("the platform's peak resident set is unreadable", exc_info=True)
    return None
