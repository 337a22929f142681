"""Cumulative counts since start-up (optimizations, bytes freed, durations) that the bounded history cannot give.

The history keeps the last 10 optimizations for the panel; a Prometheus counter must count every one since the
process started, and a histogram every duration. So each optimization, as it is recorded, adds to these totals:
a few additions per optimization, nothing per node. They are read when someone scrapes ``/memhooks/metrics``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

OPTIMIZATION_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds of the optimization-duration buckets: a Conservative run takes milliseconds, an Aggressive one
that unloads models seconds; ``+Inf`` is implied."""


@dataclass(frozen=True, slots=True)
class HistogramReading:
    """A histogram as Prometheus exposes it.

    Attributes:
        upper_bounds: each bucket's upper bound, ascending; ``+Inf`` not included.
        cumulative_counts: observations at or below each bound, then the count of all (the ``+Inf`` bucket);
            one longer than ``upper_bounds``.
        total: the sum of the observed values (seconds, for durations).
    """

    upper_bounds: tuple[float, ...]
    cumulative_counts: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        return self.cumulative_counts[-1]


class Buckets:
    """Observations counted into fixed buckets; not thread-safe by itself (its owner holds a lock).

    Each observation is one binary search and two additions, so it can be done per node.
    """

    __slots__ = ("_counts", "_total", "upper_bounds")

    def __init__(self, upper_bounds: tuple[float, ...]):
        self.upper_bounds = upper_bounds
        self._counts = [0] * (len(upper_bounds) + 1)
        self._total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (Prometheus' "le", less or equal).
        self._counts[bisect.bisect_left(self.upper_bounds, value)] += 1
        self._total += value

    def read(self) -> HistogramReading:
        cumulative = []
        running = 0
        for count in self._counts:
            running += count
            cumulative.append(running)
        return HistogramReading(self.upper_bounds, tuple(cumulative), self._total)


@dataclass(frozen=True, slots=True)
class CleanupTotals:
    """What one kind of cleanup (a mode, or ``Model-free``) did for one kind of trigger, since start-up.

    Attributes:
        cleanup_name: the mode's name, or ``Model-free`` for a boundary or watchdog cleanup.
        trigger: what asked for it (``hook``, ``node``, ``manual``, ``boundary``, ``watchdog``).
        count: optimizations performed.
        ram_freed_bytes, vram_freed_bytes: what they returned, added up; an optimization after which usage grew
            adds 0, not a negative figure (as ``freed_gib`` counts it), so the totals only grow.
    """

    cleanup_name: str
    trigger: str
    count: int
    ram_freed_bytes: int
    vram_freed_bytes: int


@dataclass(frozen=True, slots=True)
class TotalsReading:
    """Every total at one moment.

    Attributes:
        cleanups: by cleanup and trigger, in the order they first happened.
        durations: each cleanup's duration histogram, by cleanup name.
    """

    cleanups: tuple[CleanupTotals, ...]
    durations: tuple[tuple[str, HistogramReading], ...]

    @property
    def count(self) -> int:
        return sum(totals.count for totals in self.cleanups)


class OptimizationTotals:
    """The running totals; not thread-safe by itself (the history adds to it under its own lock)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], list[int]] = {}  # (cleanup, trigger) -> [count, ram, vram]
        self._durations: dict[str, Buckets] = {}

    def add(
        self,
        cleanup_name: str,
        trigger: str,
        ram_freed_bytes: int | None,
        vram_freed_bytes: int | None,
        duration_seconds: float,
    ) -> None:
        counts = self._counts.setdefault((cleanup_name, trigger), [0, 0, 0])
        counts[0] += 1
        counts[1] += max(ram_freed_bytes or 0, 0)
        counts[2] += max(vram_freed_bytes or 0, 0)
        buckets = self._durations.get(cleanup_name)
        if buckets is None:
            buckets = self._durations[cleanup_name] = Buckets(OPTIMIZATION_BUCKETS_SECONDS)
        buckets.observe(duration_seconds)

    def read(self) -> TotalsReading:
        return TotalsReading(
            cleanups=tuple(
                CleanupTotals(cleanup, trigger, count, ram, vram)
                for (cleanup, trigger), (count, ram, vram) in self._counts.items()
            ),
            durations=tuple((cleanup, buckets.read()) for cleanup, buckets in self._durations.items()),
        )
