"""The four modes and the fixed list of actions each one runs, in order."""

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

MODE_ACTIONS: dict[Mode, tuple[Action, ...]] = {
    Mode.MONITOR_ONLY: (),
    Mode.CONSERVATIVE: _CONSERVATIVE,
    Mode.BALANCED: _BALANCED,
    Mode.AGGRESSIVE: _AGGRESSIVE,
}
