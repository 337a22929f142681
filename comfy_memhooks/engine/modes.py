"""The four modes: how hard an optimization tries. What each one runs is listed next to the actions."""

from __future__ import annotations

import enum

from ..validation import parse_choice


class Mode(str, enum.Enum):
    """How hard an optimization tries. Each mode does everything the one before it does."""

    MONITOR_ONLY = "Monitor Only"
    CONSERVATIVE = "Conservative"
    BALANCED = "Balanced"
    AGGRESSIVE = "Aggressive"

    @classmethod
    def parse(cls, value: object, field: str = "mode") -> Mode:
        """The mode named by ``value`` (its display name), or :class:`InvalidSetting` naming the allowed ones."""
        return parse_choice(cls, value, field, "a mode")


MODE_STRENGTH: dict[Mode, int] = {Mode.MONITOR_ONLY: 0, Mode.CONSERVATIVE: 1, Mode.BALANCED: 2, Mode.AGGRESSIVE: 3}
"""How hard each mode tries: a stronger one is never held back because a weaker one freed nothing."""

MODEL_FREE_STRENGTH = MODE_STRENGTH[Mode.CONSERVATIVE]
"""The model-free cleanup (a node boundary's, the watchdog's) counts as Conservative."""

UNLOADING_STRENGTH = MODE_STRENGTH[Mode.AGGRESSIVE]
"""A pressure cleanup that may end by unloading models (the last rung) counts as Aggressive: a model-free one that
freed nothing never holds it back."""

MANUAL_MODES = (Mode.CONSERVATIVE, Mode.BALANCED, Mode.AGGRESSIVE)
"""What "Optimize now" offers: Monitor Only would do nothing."""
