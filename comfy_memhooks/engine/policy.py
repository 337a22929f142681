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

from dataclasses import dataclass

from ..probe.readings import MemorySnapshot
from ..validation import parse_bool
from .modes import Mode
from .pressure import DEFAULT_THRESHOLDS, PressureLevel, Thresholds


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """The explicit node's switches, mode and thresholds."""

    enable_optimization: bool = True
    auto_optimize: bool = True
    enable_auto_cleanup: bool = False
    mode: Mode = Mode.BALANCED
    thresholds: Thresholds = DEFAULT_THRESHOLDS

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
            thresholds=Thresholds.parse(ram_threshold, vram_threshold, cooldown_seconds),
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
        return Decision(False, f"under the thresholds ({settings.thresholds.describe()})", levels)
    return Decision(True, "optimization on: the node's placement is the trigger", levels)
