"""Freeing memory: what each mode does, the engine that runs it (cooldown, guard, escalation), the history.

Above the probes, below what decides when to free (:mod:`..triggers`): the engine acts; who asks (the node, the
hook's subscriber, the panel, the watchdog) is the caller's business. One :class:`Engine` per process (the runtime's,
:mod:`..comfy.runtime`) keeps one cooldown, one effectiveness guard and one history for all of them.
"""

from __future__ import annotations

from .core import Engine, Outcome
from .history import ActionReport, OptimizationRecord, Trigger, TriggerKind
from .modes import Mode
from .pressure import PressureLevel, Thresholds
from .request import CleanupRequest, Urgency

__all__ = [
    "ActionReport",
    "CleanupRequest",
    "Engine",
    "Mode",
    "OptimizationRecord",
    "Outcome",
    "PressureLevel",
    "Thresholds",
    "Trigger",
    "TriggerKind",
    "Urgency",
]
