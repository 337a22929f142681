"""A node's RAM at its highest while it ran, not only what it left: the peak counters Linux resets, and samples.

A VAE decode of a video batch, an upscaler or a video encoder takes gigabytes while it runs and gives them back
before it returns; read before and after, it looks free, and that is the node a container dies in. Linux keeps
two high-water marks that can be reset per node:

- the process's peak resident set, ``VmHWM`` in ``/proc/self/status``, which writing ``5`` to
  ``/proc/self/clear_refs`` resets to the current resident set (Linux 4.0 and later, one's own process, no
  privileges; ``grep VmHWM /proc/self/status``);
- the container's peak usage, which is what its OOM killer counts: cgroup v2's ``memory.peak``, reset for reads
  through the same open file by a write (Linux 6.12 and later), or cgroup v1's ``memory.max_usage_in_bytes``,
  reset by writing ``0`` where it is writable (rarely inside Docker, whose cgroup files are read-only).

Where the process's mark cannot be reset (seccomp, gVisor, ``/proc`` hidden, Windows, macOS), the peak is the
highest resident set among the readings taken while the node ran (its start, its end, and the RAM probe's readings
meanwhile: the pressure watchdog reads every 250 ms or faster during a prompt), unless the platform's own
non-resettable peak (Windows' ``PeakWorkingSetSize``, macOS' ``ru_maxrss``) rose during the node, which then is
the node's exact peak. Every figure says how it was measured (:class:`PeakMethod`).

ComfyUI can run async nodes side by side, so spans may overlap: a reset while another node's span is open first
reads the mark and folds it into every open span, so no span loses its peak. With one span open at a time, the
common case, a node costs one reset as it starts and one read as it ends.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import psutil

from ..failures import Failures
from ..probe.readings import RamSource

logger = logging.getLogger(__name__)

PROC_SELF = Path("/proc/self")
_KIB = 1024
_SAME_MARK_BYTES = 1024 * _KIB  # pages that may come between two reads of the same mark
# The calling thread's rusage: its ru_maxrss is the process's mark all the same (Linux fills it from the process's
# memory either way), without the kernel adding up every thread's times first: 0.4 µs instead of 4 with 60 threads.
_RUSAGE_WHO = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)


class PeakMethod(str, Enum):
    """How a node's RAM peak was measured."""

    HWM = "hwm"
    """The process's own high-water mark: exact (``VmHWM`` reset before the node, or a platform peak that rose)."""
    CGROUP = "cgroup"
    """The container's peak usage counter, reset before the node: exact, for the container."""
    SAMPLED = "sampled"
    """The highest of the readings taken while the node ran: a lower bound, a spike between readings is missed."""


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
        self._pid: int | None = None
        self._rusage = False
        self.broken = not sys.platform.startswith("linux")

    def reset(self) -> bool:
        """Resets the mark to the current resident set; ``False`` when it cannot (then it never tries again)."""
        if self.broken or not self._ready():
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
        """The resident set at its highest since the last reset, in bytes; ``None`` when unknown."""
        if self.broken or not self._ready():
            return None
        if self._rusage:
            return resource.getrusage(_RUSAGE_WHO).ru_maxrss * _KIB
        return self._read_status()

    def _read_status(self) -> int | None:
        try:
            value = parse_vm_hwm(os.pread(self._status, 4096, 0))  # type: ignore[arg-type]  # _ready() opened it
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
        self._rusage = self._rusage_follows_the_mark()
        return True

    def _rusage_follows_the_mark(self) -> bool:
        """Whether ``getrusage``'s ``ru_maxrss`` reads the same mark, at a seventh of the cost of ``status``.

        The kernel answers it with the larger of the mark and the peak of the image this process replaced at
        ``exec`` (small after a shell, large after a fork of a large process): right after a reset the two agree
        only in the first case, and then they agree from then on.
        """
        if self._proc != PROC_SELF:
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


class ContainerHighWater:
    """The container's peak usage, reset per node where the kernel and the mount allow it; else absent, silently.

    Args:
        source: the cgroup version the RAM probe reads (``RamSource.CGROUP_V1`` or ``CGROUP_V2``).
        directory: that cgroup's folder.
    """

    def __init__(self, source: RamSource, directory: Path):
        name, reset = (
            ("memory.peak", b"reset\n") if source is RamSource.CGROUP_V2 else ("memory.max_usage_in_bytes", b"0")
        )
        self.path = directory / name
        self._reset_text = reset
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
        except (OSError, ValueError):
            logger.debug("the container's peak could not be reset", exc_info=True)
            self.close()
            return None

    def read(self) -> int | None:
        descriptor = self._descriptor
        if descriptor is None:
            return None
        try:
            return int(os.pread(descriptor, 64, 0))
        except (OSError, ValueError):
            logger.debug("the container's peak could not be read", exc_info=True)
            self.close()
            return None

    def close(self) -> None:
        if self._descriptor is not None:
            try:
                os.close(self._descriptor)
            except OSError:
                logger.debug("closing %s failed", self.path, exc_info=True)
            self._descriptor = None


def platform_peak() -> int | None:
    """The process's all-time peak where the platform keeps one and Linux' resettable one is missing: Windows'
    ``PeakWorkingSetSize`` (psutil's ``peak_wset``), macOS' ``ru_maxrss`` (bytes there); ``None`` elsewhere."""
    try:
        if sys.platform == "win32":
            return int(psutil.Process().memory_info().peak_wset)  # type: ignore[attr-defined]
        if sys.platform == "darwin":
            return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    except (psutil.Error, OSError, AttributeError):
        logger.debug("the platform's peak resident set is unreadable", exc_info=True)
    return None


@dataclass(frozen=True, slots=True)
class RamPeak:
    """What a node's span measured.

    Attributes:
        rss_peak_bytes: the process's resident set at its highest while the node ran; ``None`` when unknown.
        method: how ``rss_peak_bytes`` was measured.
        container_before_bytes, container_peak_bytes: the container's usage (page cache included, as the OOM
            killer counts it) as the node started and at its highest; ``None`` where its counter cannot be reset.
    """

    rss_peak_bytes: int | None
    method: PeakMethod | None
    container_before_bytes: int | None = None
    container_peak_bytes: int | None = None


class _RamPeakSlots:
    __slots__ = RamPeak.__slots__


def _exact_peak(rss_peak_bytes: int | None) -> RamPeak:
    """``RamPeak(rss_peak_bytes, PeakMethod.HWM)``, made after every node by plain assignment of its slots, then its
    class (as ``records.new_node_profile`` makes a record, which says why)."""
    peak: Any = _RamPeakSlots()
    peak.rss_peak_bytes, peak.method, peak.container_before_bytes, peak.container_peak_bytes = (
        rss_peak_bytes, PeakMethod.HWM, None, None
    )  # fmt: skip
    peak.__class__ = RamPeak
    made: RamPeak = peak
    return made


class PeakSpan:
    """One node's span, open between its start and its end; one is made per node, so a plain slotted class."""

    __slots__ = ("container_before", "container_peak", "exact", "platform_before", "rss_peak", "sampled")

    def __init__(self, rss_before: int | None):
        self.rss_peak = rss_before
        self.exact = False
        self.sampled: int | None = None
        self.platform_before: int | None = None
        self.container_before: int | None = None
        self.container_peak: int | None = None


def _higher(first: int | None, second: int | None) -> int | None:
    if first is None:
        return second
    if second is None:
        return first
    return first if first >= second else second


class RamPeaks:
    """Opens and closes nodes' spans over the process's and the container's high-water marks.

    Args:
        process: the process's resettable mark; ``None`` where there is none.
        container: the container's resettable peak; ``None`` where there is none.
        take_sampled: the highest resident set among the RAM probe's readings since it was last asked (the probe's
            :meth:`RamProbe.take_rss_high`); ``None``: no samples.
        platform: the platform's non-resettable peak (:func:`platform_peak`), read where ``process`` is missing.
    """

    def __init__(
        self,
        process: ProcessHighWater | None,
        container: ContainerHighWater | None = None,
        *,
        take_sampled: Callable[[], int | None] | None = None,
        platform: Callable[[], int | None] | None = None,
    ):
        self.process = process
        self.container = container if container is not None and container.available else None
        self._take_sampled = take_sampled
        self._platform = platform
        self._open: list[PeakSpan] = []

    def begin(self, rss_before: int | None) -> PeakSpan:
        """Opens a node's span: the marks reset to now, after folding them into spans still open."""
        span = PeakSpan(rss_before)
        process = self.process
        if self._open:
            self._fold()
        if process is not None and not process.broken and process.reset():
            span.exact = True
        elif self._platform is not None:
            span.platform_before = self._platform()
        if self._take_sampled is not None:
            self._take_sampled()  # the samples of this span start now
        if self.container is not None:
            span.container_before = span.container_peak = self.container.reset_and_read()
        self._open.append(span)
        return span

    def end(self, span: PeakSpan, rss_after: int | None) -> RamPeak:
        """Closes ``span``: the highest the process (and the container) reached since it opened."""
        process = self.process
        if span.exact and self.container is None and len(self._open) == 1 and self._open[0] is span:
            # The common case, once per node: the only span, on the process's mark alone (no samples needed).
            mark = process.read() if process is not None else None
            if mark is not None:
                self._open = []
                return _exact_peak(_higher(_higher(span.rss_peak, mark), rss_after))
        self._fold()
        if span in self._open:  # else closed twice, or opened before the spans were cleared: measured all the same
            self._open.remove(span)
        peak = _higher(span.rss_peak, rss_after)
        method: PeakMethod | None = PeakMethod.HWM if span.exact else PeakMethod.SAMPLED
        if not span.exact:
            peak = _higher(peak, span.sampled)
            after = self._platform() if self._platform is not None else None
            if after is not None and span.platform_before is not None and after > span.platform_before:
                peak, method = _higher(peak, after), PeakMethod.HWM
            elif span.container_before is not None and span.container_peak is not None and span.rss_peak is not None:
                # The container's exact counter where the process's own mark is refused: what the container grew
                # by at its peak, ComfyUI being what runs in it (more, if something else in it allocated too).
                grown = max(span.container_peak - span.container_before, 0)
                peak, method = _higher(peak, span.rss_peak + grown), PeakMethod.CGROUP
        if peak is None:
            method = None
        return RamPeak(peak, method, span.container_before, span.container_peak)

    def _fold(self) -> None:
        """Reads each mark once and raises every open span's peak to it (the marks count from the last reset)."""
        process = self.process
        rss = process.read() if process is not None and not process.broken else None
        sampled = self._take_sampled() if self._take_sampled is not None else None
        container = self.container.read() if self.container is not None else None
        for span in self._open:
            if span.exact:
                if rss is None:  # the mark broke while the span was open: what was sampled is all there is
                    span.exact = False
                span.rss_peak = _higher(span.rss_peak, rss)
            span.sampled = _higher(span.sampled, sampled)
            if span.container_before is not None:
                span.container_peak = _higher(span.container_peak, container)

    def clear(self) -> None:
        """Forgets open spans (a prompt ended with nodes still pending)."""
        self._open = []

    def close(self) -> None:
        self.clear()
        if self.process is not None:
            self.process.close()
        if self.container is not None:
            self.container.close()
