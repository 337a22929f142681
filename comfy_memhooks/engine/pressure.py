"""Memory pressure: which reading is at or above its threshold, and whether cleaning up again can achieve anything.

A cooldown exists to stop cleanups that achieve nothing; it must never stand between the process and an OOM kill.
So an optimization asked for while RAM or VRAM is at or above its threshold (read against the container's limit
inside one) is a *pressure* optimization, and the cooldown does not hold it back. What stops a pressure cleanup
from repeating for nothing is the :class:`EffectivenessGuard` instead: it holds one back only when the previous
pressure cleanup freed less than a floor *and* usage has not grown by that floor since. A workflow that simply
holds a lot of live data therefore pays for a few cleanups, not one per node.

The floor (:func:`effectiveness_floor_bytes`) is 1% of the limit, and at least 64 MiB: 64 MiB in a 3 GB
container, 164 MiB on a 16 GB machine, 655 MiB on 64 GB. Below it a cleanup is noise (one video frame in
float32 is 24 MiB at 1080p); above it, memory that came back or arrived is worth another look.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..probe.readings import MIB, MemorySnapshot
from ..validation import parse_percent, parse_seconds

FLOOR_MIN_BYTES = 64 * MIB
FLOOR_SHARE = 0.01


@dataclass(frozen=True, slots=True)
class PressureLevel:
    """One reading at or above its threshold: the level that fired a pressure cleanup.

    Attributes:
        resource: ``"RAM"`` (the container's limit inside one) or ``"VRAM"`` (the fullest GPU).
        percent: the reading.
        threshold: the threshold it reached.
    """

    resource: str
    percent: float
    threshold: float

    def describe(self) -> str:
        return f"{self.resource} {self.percent:.0f}% >= {self.threshold:g}%"


def pressure_levels(snapshot: MemorySnapshot, ram_threshold: float, vram_threshold: float) -> tuple[PressureLevel, ...]:
    """The readings at or above their threshold; an unknown reading never counts as pressure."""
    levels = []
    ram = snapshot.ram.percent
    if ram is not None and ram >= ram_threshold:
        levels.append(PressureLevel("RAM", ram, ram_threshold))
    vram = snapshot.vram_pressure_percent
    if vram is not None and vram >= vram_threshold:
        levels.append(PressureLevel("VRAM", vram, vram_threshold))
    return tuple(levels)


MAX_COOLDOWN_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When memory is under pressure, and how long routine optimizations wait for each other.

    One type, with the one set of defaults, for the node's inputs, the hook's settings and the panel.

    Attributes:
        ram_percent: RAM in use, in percent of the container's limit inside one (of the host's RAM otherwise).
        vram_percent: VRAM in use on the fullest GPU, in percent.
        cooldown_seconds: the least time between two routine optimizations; 0 turns it off. Pressure
            optimizations never wait for it.
    """

    ram_percent: float = 80.0
    vram_percent: float = 85.0
    cooldown_seconds: float = 30.0

    def pressure(self, snapshot: MemorySnapshot) -> tuple[PressureLevel, ...]:
        return pressure_levels(snapshot, self.ram_percent, self.vram_percent)

    def describe(self) -> str:
        return f"RAM {self.ram_percent:g}%, VRAM {self.vram_percent:g}%"

    @classmethod
    def parse(
        cls,
        ram: object,
        vram: object,
        cooldown: object,
        names: tuple[str, str, str] = ("ram_threshold", "vram_threshold", "cooldown_seconds"),
    ) -> Thresholds:
        """Checks raw values; the first bad one raises :class:`InvalidSetting` naming its field."""
        return cls(
            parse_percent(ram, names[0]),
            parse_percent(vram, names[1]),
            parse_seconds(cooldown, names[2], 0.0, MAX_COOLDOWN_SECONDS),
        )


DEFAULT_THRESHOLDS = Thresholds()
"""The defaults, in one place: 80% RAM, 85% VRAM, 30 s cooldown."""


def effectiveness_floor_bytes(total_bytes: int | None) -> int:
    """What a pressure cleanup must free, or usage must grow by, to be worth another: see the module docstring."""
    if total_bytes is None:
        return FLOOR_MIN_BYTES
    return max(FLOOR_MIN_BYTES, int(total_bytes * FLOOR_SHARE))


def _fullest_gpu_total(snapshot: MemorySnapshot) -> int | None:
    totals = [gpu.total_bytes for gpu in snapshot.gpus if gpu.total_bytes is not None]
    return max(totals) if totals else None


@dataclass(frozen=True, slots=True)
class _Usage:
    """RAM and VRAM in use, in the bytes the thresholds are read against."""

    ram_bytes: int | None
    vram_bytes: int | None

    @classmethod
    def of(cls, snapshot: MemorySnapshot) -> _Usage:
        return cls(snapshot.ram.used_bytes, snapshot.vram_used_bytes)

    def of_resource(self, resource: str) -> int | None:
        return self.ram_bytes if resource == "RAM" else self.vram_bytes


@dataclass(frozen=True, slots=True)
class _LastCleanup:
    finished_at: float
    strength: int
    before: _Usage
    after: _Usage
    ram_floor: int
    vram_floor: int

    def floor(self, resource: str) -> int:
        return self.ram_floor if resource == "RAM" else self.vram_floor


def _megabytes(count: int) -> str:
    return f"{count / MIB:.0f} MB"


class EffectivenessGuard:
    """Remembers the last pressure cleanup and tells whether another one can achieve anything.

    ``strength`` orders cleanups: a stronger one (a mode that may unload models) is never held back because a
    weaker one freed nothing. Any thread may ask; the engine records under its own lock.

    Args:
        wall_clock: the time shown in the hold-back message.
    """

    def __init__(self, wall_clock: Callable[[], float] = time.time):
        self._wall_clock = wall_clock
        self._last: _LastCleanup | None = None
        self._lock = threading.Lock()

    def remember(self, before: MemorySnapshot, after: MemorySnapshot, strength: int) -> None:
        """Records a pressure cleanup that ran, with the readings around it."""
        last = _LastCleanup(
            finished_at=self._wall_clock(),
            strength=strength,
            before=_Usage.of(before),
            after=_Usage.of(after),
            ram_floor=effectiveness_floor_bytes(after.ram.total_bytes),
            vram_floor=effectiveness_floor_bytes(_fullest_gpu_total(after)),
        )
        with self._lock:
            self._last = last

    def hold_reason(
        self,
        snapshot: MemorySnapshot,
        levels: tuple[PressureLevel, ...],
        strength: int,
        *,
        require_growth: bool = False,
    ) -> str | None:
        """Why a pressure cleanup now would achieve nothing, or ``None`` when it should run.

        It is held back only when, for every resource under pressure, the last cleanup freed less than the floor
        and usage has grown by less than the floor since. ``require_growth`` (the watchdog's rule) drops the first
        condition: from its own thread, the watchdog cleans up only when more memory arrived since the last one.
        """
        with self._lock:
            last = self._last
        if last is None or strength > last.strength or not levels:
            return None
        now = _Usage.of(snapshot)
        details = []
        for level in levels:
            floor = last.floor(level.resource)
            before = last.before.of_resource(level.resource)
            after = last.after.of_resource(level.resource)
            current = now.of_resource(level.resource)
            if before is None or after is None or current is None:
                return None
            freed = before - after
            grown = current - after
            if grown >= floor or (freed >= floor and not require_growth):
                return None
            details.append(f"the last one freed {_megabytes(max(freed, 0))} of {level.resource}")
        at = time.strftime("%H:%M:%S", time.localtime(last.finished_at))
        return f"nothing new to free since {at}: " + ", ".join(details)


class PressureGauge:
    """The latest RAM reading against the threshold, kept by the watchdog and read by the executor hook.

    Reading :attr:`over` is the whole cost of a pressure check: one attribute, no probe. The hook does not even
    read that for every node: it is told when :attr:`over` changes (:meth:`subscribe`) and puts its boundary
    cleanup into the per-node pipeline only while RAM is over the threshold, so with no pressure an ordinary node
    pays nothing for it. The watchdog writes both fields from its thread; a reader sees the previous value or the
    new one.
    """

    __slots__ = ("_listeners", "over", "ram_percent")

    def __init__(self) -> None:
        self.ram_percent: float | None = None
        self.over = False
        self._listeners: tuple[Callable[[bool], object], ...] = ()

    def subscribe(self, listener: Callable[[bool], object]) -> Callable[[], None]:
        """Calls ``listener(over)`` now and whenever :attr:`over` changes (from the thread that updates it); returns
        what takes the listener out again, so a hook installed again does not leave its earlier listener behind."""
        self._listeners = (*self._listeners, listener)
        listener(self.over)

        def unsubscribe() -> None:
            self._listeners = tuple(kept for kept in self._listeners if kept is not listener)

        return unsubscribe

    def update(self, ram_percent: float | None, ram_threshold: float) -> bool:
        """Stores a reading; returns whether it is at or above the threshold."""
        over = ram_percent is not None and ram_percent >= ram_threshold
        self.ram_percent = ram_percent
        if over is not self.over:
            self.over = over
            for listener in self._listeners:
                listener(over)
        return over
