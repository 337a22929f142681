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

Rows are checked top to bottom. The cooldown then holds back any optimization closer than ``cooldown_seconds``
to the previous one; the engine applies it, because only the engine knows when the last one ran.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .errors import InvalidSetting
from .modes import Mode
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
class PolicySettings:
    """The explicit node's switches, also used by the automatic hook and the panel."""

    enable_optimization: bool = True
    auto_optimize: bool = True
    enable_auto_cleanup: bool = False
    mode: Mode = Mode.BALANCED
    ram_threshold: float = 80.0
    vram_threshold: float = 85.0
    cooldown_seconds: float = 30.0

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
    """The decision table's answer, before the cooldown.

    Attributes:
        optimize: whether to free memory.
        reason: why, in words for the report.
        threshold_exceeded: RAM or VRAM was at or above its threshold.
    """

    optimize: bool
    reason: str
    threshold_exceeded: bool


def thresholds_exceeded(snapshot: MemorySnapshot, ram_threshold: float, vram_threshold: float) -> list[str]:
    """The readings at or above their threshold, described; unknown readings never count as exceeded."""
    exceeded = []
    ram = snapshot.ram.percent
    if ram is not None and ram >= ram_threshold:
        exceeded.append(f"RAM {ram:.0f}% >= {ram_threshold:g}%")
    vram = snapshot.vram_percent
    if vram is not None and vram >= vram_threshold:
        exceeded.append(f"VRAM {vram:.0f}% >= {vram_threshold:g}%")
    return exceeded


def decide(settings: PolicySettings, snapshot: MemorySnapshot) -> Decision:
    """Applies the decision table (module docstring) to one snapshot."""
    exceeded = thresholds_exceeded(snapshot, settings.ram_threshold, settings.vram_threshold)
    if not settings.enable_optimization:
        return Decision(False, "optimization is off", bool(exceeded))
    if settings.mode is Mode.MONITOR_ONLY:
        return Decision(False, "mode is Monitor Only", bool(exceeded))
    if settings.enable_auto_cleanup:
        return Decision(True, "auto-cleanup frees every time", bool(exceeded))
    if settings.auto_optimize:
        if exceeded:
            return Decision(True, "threshold reached: " + ", ".join(exceeded), True)
        return Decision(
            False,
            f"under the thresholds (RAM {settings.ram_threshold:g}%, VRAM {settings.vram_threshold:g}%)",
            False,
        )
    return Decision(True, "optimization on: the node's placement is the trigger", bool(exceeded))
