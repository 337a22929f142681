"""A node's RAM at its highest while it ran, not only what it left: a span per node over the high-water marks.

A VAE decode of a video batch, an upscaler or a video encoder takes gigabytes while it runs and gives them back
before it returns; read before and after, it looks free, and that is the node a container dies in. Linux keeps
high-water marks that can be reset per node, the process's (``VmHWM``) and the container's (``memory.peak``):
:mod:`.high_water` reads them.

Where the process's mark cannot be reset (seccomp, gVisor, ``/proc`` hidden, Windows, macOS), the peak is the
highest resident set among the readings taken while the node ran (its start, its end, and the RAM probe's readings
meanwhile: the pressure watchdog reads every 250 ms or faster during a prompt), unless the platform's own
non-resettable peak (Linux' and macOS' ``ru_maxrss``, Windows' ``PeakWorkingSetSize``) rose during the node, which
then is the node's exact peak; else, where the container's counter can be reset, the resident set at the node's
start plus what the container grew by at its peak, which also counts the container's page cache and its other
processes. Every figure says how it was measured (:class:`PeakMethod`).

ComfyUI can run async nodes side by side, so spans may overlap: a reset while another node's span is open first
reads the mark and folds it into every open span, so no span loses its peak. With one span open at a time, the
common case, a node costs one reset as it starts and one read as it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the marks are passed in: the records, which name PeakMethod, need not load them
    from .high_water import ContainerHighWater, ProcessHighWater


class PeakMethod(str, Enum):
    """How a node's RAM peak was measured."""

    HWM = "hwm"
    """The process's own high-water mark: exact (``VmHWM`` reset before the node, or a platform peak that rose)."""
    CGROUP = "cgroup"
    """Where the process's mark is refused: its resident set at the start plus the growth of the container's peak
    usage counter (reset before the node). Read as "at most": the container also counts the page cache the node
    filled and its other processes (it falls short only of pages the container had already paid for: a file
    mapped from the page cache, or cache the kernel dropped to make room)."""
    SAMPLED = "sampled"
    """The highest of the readings taken while the node ran: a lower bound, a spike between readings is missed."""


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
        platform: the platform's non-resettable peak (:func:`.high_water.platform_peak`), read around a node
            whose ``process`` mark could not be reset.
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
        container = self.container
        if container is not None:
            span.container_before = span.container_peak = container.reset_and_read()
            if span.container_before is None:  # it failed (counted there, and closed): not asked again
                self.container = None
        self._open.append(span)
        return span

    def discard(self, span: PeakSpan) -> None:
        """Closes ``span`` without reading a mark (a node ComfyUI answered from its cache ran nothing to measure);
        the marks still count from the last reset for the spans left open."""
        if span in self._open:
            self._open.remove(span)

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
                # The container's counter where the process's own mark is refused: what the container grew by at
                # its peak, ComfyUI being what runs in it (more where page cache or another process in it grew).
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
        counter = self.container
        container = counter.read() if counter is not None else None
        if container is None:
            self.container = None  # it failed (counted there, and closed), or there is none
        for span in self._open:
            if span.exact:
                if rss is None:  # the mark broke while the span was open: what was sampled is all there is
                    span.exact = False
                span.rss_peak = _higher(span.rss_peak, rss)
            span.sampled = _higher(span.sampled, sampled)
            if span.container_before is not None:  # its peak is unknown once the counter failed
                span.container_peak = None if container is None else _higher(span.container_peak, container)

    def clear(self) -> None:
        """Forgets open spans (a prompt ended with nodes still pending)."""
        self._open = []

    def close(self) -> None:
        self.clear()
        if self.process is not None:
            self.process.close()
        if self.container is not None:
            self.container.close()
