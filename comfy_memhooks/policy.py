"""When to free memory: validated settings and the decision table, with no side effects.

The decision table (the README shows the same):

=====================================================  =============================================
settings                                               frees
=====================================================  =============================================
``enable_optimization`` off, or mode Monitor Only      never
``enable_auto_cleanup`` on                             every time it runs (for leaks)
``auto_optimize`` on                                   when RAM or VRAM is at or above its threshold
``enable_optimization`` on, both of the above off      every time it runs (the placement is the trigger)
=====================================================  =============================================

Rows are checked top to bottom. When RAM or VRAM is at or above its threshold, the optimization is a pressure
optimization: the cooldown does not hold it back, the effectiveness guard may (:mod:`.pressure`). Otherwise it is
routine, and the cooldown holds it back when it comes closer than ``cooldown_seconds`` to the previous one. The
engine applies both, because only the engine knows what the last one did and when.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .errors import InvalidSetting
from .modes import Mode
from .pressure import PressureLevel, pressure_levels
from .snapshots import MemorySnapshot


def parse_bool(value: object, field: str) -> bool:
    """Only a real boolean: an API-format prompt can send ``"false"``, which Python would take as true."""
    if isinstance(value, bool):
        return value
    raise InvalidSetting(field, f"{value!r} is not a boolean; use true or false")


def _parse_number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidSetting(field, f"{value!r} is not a number")
    number = float(value)
    if math.isnan(number):
        raise InvalidSetting(field, "NaN is not allowed")
    return number


def parse_threshold(value: object, field: str) -> float:
    """A percentage with ``0 < t <= 100``."""
    number = _parse_number(value, field)
    if not 0 < number <= 100:
        raise InvalidSetting(field, f"{number:g} is outside the allowed range: more than 0 and at most 100 (percent)")
    return number


def parse_cooldown(value: object, field: str) -> float:
    """Seconds, finite and not negative; 0 turns the cooldown off."""
    number = _parse_number(value, field)
    if not 0 <= number < math.inf:
        raise InvalidSetting(field, f"{number:g} is not allowed: use 0 (off) or a positive number of seconds")
    return number


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The RAM and VRAM percentages at or above which memory is under pressure."""

    ram_percent: float
    vram_percent: float

    def pressure(self, snapshot: MemorySnapshot) -> tuple[PressureLevel, ...]:
        return pressure_levels(snapshot, self.ram_percent, self.vram_percent)


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """The explicit node's switches, also used by the automatic hook and the panel."""

    enable_optimization: bool = True
    auto_optimize: bool = True
    enable_auto_cleanup: bool = False
    mode: Mode = Mode.BALANCED
    ram_threshold: float = 80.0
    vram_threshold: float = 85.0
    cooldown_seconds: float = 30.0

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.ram_threshold, self.vram_threshold)

    @classmethod
    def parse(
        cls,
        *,
        enable_optimization: object,
        auto_optimize: object,
        enable_auto_cleanup: object,
        mode: object,
        ram_threshold: object,
        vram_threshold: object,
        cooldown_seconds: object,
    ) -> PolicySettings:
        """Validates raw values; the first bad one raises :class:`InvalidSetting` naming it."""
        return cls(
            enable_optimization=parse_bool(enable_optimization, "enable_optimization"),
            auto_optimize=parse_bool(auto_optimize, "auto_optimize"),
            enable_auto_cleanup=parse_bool(enable_auto_cleanup, "enable_auto_cleanup"),
            mode=Mode.parse(mode),
            ram_threshold=parse_threshold(ram_threshold, "ram_threshold"),
            vram_threshold=parse_threshold(vram_threshold, "vram_threshold"),
            cooldown_seconds=parse_cooldown(cooldown_seconds, "cooldown_seconds"),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """The decision table's answer, before the cooldown and the effectiveness guard.

    Attributes:
        optimize: whether to free memory.
        reason: why, in words for the report.
        pressure: the readings at or above their threshold. When there is one, an optimization is a pressure
            optimization, which the cooldown does not hold back (:mod:`.pressure`).
    """

    optimize: bool
    reason: str
    pressure: tuple[PressureLevel, ...]


def decide(settings: PolicySettings, snapshot: MemorySnapshot) -> Decision:
    """Applies the decision table (module docstring) to one snapshot."""
    levels = settings.thresholds.pressure(snapshot)
    if not settings.enable_optimization:
        return Decision(False, "optimization is off", levels)
    if settings.mode is Mode.MONITOR_ONLY:
        return Decision(False, "mode is Monitor Only", levels)
    if settings.enable_auto_cleanup:
        return Decision(True, "auto-cleanup frees every time", levels)
    if settings.auto_optimize:
        if levels:
            return Decision(True, "threshold reached: " + ", ".join(level.describe() for level in levels), levels)
        return Decision(
            False,
            f"under the thresholds (RAM {settings.ram_threshold:g}%, VRAM {settings.vram_threshold:g}%)",
            levels,
        )
    return Decision(True, "optimization on: the node's placement is the trigger", levels)
