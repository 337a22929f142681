"""The four modes, the fixed list of actions each one runs, and the escalation ladder under pressure."""

from __future__ import annotations

import enum

from . import actions
from .actions import Action
from .errors import InvalidSetting


class Mode(str, enum.Enum):
    """How hard an optimization tries. Each mode does everything the one before it does."""

    MONITOR_ONLY = "Monitor Only"
    CONSERVATIVE = "Conservative"
    BALANCED = "Balanced"
    AGGRESSIVE = "Aggressive"

    @classmethod
    def parse(cls, value: object, field: str = "mode") -> Mode:
        """The mode named by ``value`` (its display name), or :class:`InvalidSetting` naming the allowed ones."""
        if isinstance(value, Mode):
            return value
        for mode in cls:
            if value == mode.value:
                return mode
        allowed = ", ".join(repr(mode.value) for mode in cls)
        raise InvalidSetting(field, f"{value!r} is not a mode; use one of {allowed}")


_CONSERVATIVE = (actions.GC_COLLECT, actions.CUDA_EMPTY_CACHE)
_BALANCED = (
    actions.GC_COLLECT,
    actions.COMFY_FREE_MEMORY_TO_THRESHOLD,
    actions.CUDA_EMPTY_CACHE,
    actions.CUDA_IPC_COLLECT,
    actions.COMFY_SOFT_EMPTY_CACHE,
    actions.MALLOC_TRIM,
)
# Models go first, so the collections and cache releases that follow can reclaim what they held.
_AGGRESSIVE = (
    actions.RELEASE_REACTOR_CACHES,
    actions.COMFY_UNLOAD_ALL_MODELS,
    actions.GC_COLLECT_UNTIL_STABLE,
    actions.COMFY_FREE_MEMORY_TO_THRESHOLD,
    actions.CUDA_EMPTY_CACHE,
    actions.CUDA_IPC_COLLECT,
    actions.COMFY_SOFT_EMPTY_CACHE,
    actions.MALLOC_TRIM,
)

MANUAL_MODES = (Mode.CONSERVATIVE, Mode.BALANCED, Mode.AGGRESSIVE)
"""What "Optimize now" offers: Monitor Only would do nothing."""

MODE_ACTIONS: dict[Mode, tuple[Action, ...]] = {
    Mode.MONITOR_ONLY: (),
    Mode.CONSERVATIVE: _CONSERVATIVE,
    Mode.BALANCED: _BALANCED,
    Mode.AGGRESSIVE: _AGGRESSIVE,
}

MODE_STRENGTH: dict[Mode, int] = {Mode.MONITOR_ONLY: 0, Mode.CONSERVATIVE: 1, Mode.BALANCED: 2, Mode.AGGRESSIVE: 3}
"""How hard each mode tries; the model-free cleanup counts as Conservative."""

MODEL_FREE_ACTIONS: tuple[Action, ...] = (actions.GC_COLLECT, actions.MALLOC_TRIM)
"""The cleanup at a node boundary and from the watchdog under RAM pressure: garbage collection and returning the
heap to the system. No model is unloaded and no CUDA call is made, so it is safe from any thread."""
MODEL_FREE_STRENGTH = MODE_STRENGTH[Mode.CONSERVATIVE]


def escalation_ladder(mode: Mode) -> list[tuple[Mode, tuple[Action, ...]]]:
    """The steps tried, in order, when ``mode`` left usage over a threshold.

    Each step is the next stronger mode's actions that ``mode`` did not run and that unload no model:
    Conservative climbs to Balanced's (``malloc_trim``, the CUDA cache releases) and then to Aggressive's
    (garbage collection until stable); Balanced to Aggressive's; Aggressive has nowhere to go. Models are
    unloaded only where the mode asked for is Aggressive (or Balanced's unloading down to the VRAM threshold).
    """
    ran = {action.name for action in MODE_ACTIONS[mode]}
    ladder = []
    for stronger in Mode:
        if MODE_STRENGTH[stronger] <= MODE_STRENGTH[mode]:
            continue
        step = tuple(a for a in MODE_ACTIONS[stronger] if a.name not in ran and not a.unloads_models)
        ran.update(action.name for action in step)
        if step:
            ladder.append((stronger, step))
    return ladder
