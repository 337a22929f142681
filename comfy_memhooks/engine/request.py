"""What a caller asks the engine for: one request type for every route into it.

The node, the heavy-node rules, the panel's button, the command line, the OOM rescue, the boundary cleanup, the
watchdog and predictive cleanup all ask the one engine to free memory. They differ in what runs (a mode, the
model-free cleanup, or steps until a node fits), in how the thresholds weigh (:class:`Urgency`, or the node's
decision table), in whether the last rung may unload models, and in whether the caller waits for the engine. A
:class:`CleanupRequest` says each of those by name; :meth:`core.Engine.run` takes it, and
:meth:`core.Engine.run_if_free` for a caller that must never wait.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..probe.readings import MemorySnapshot
from .history import Trigger, TriggerKind
from .modes import Mode
from .policy import PolicySettings
from .pressure import Thresholds

if TYPE_CHECKING:  # the actions are the engine's to run; a request only names them
    from .actions import Action


class Urgency(enum.Enum):
    """How the thresholds weigh on a request for a mode."""

    ROUTINE = "routine"  # only the cooldown may hold it back, whatever the readings: a button, a rescue
    BY_READING = "by reading"  # over a threshold: pressure (the guard, escalation); under them: routine
    UNDER_PRESSURE = "under pressure"  # nothing under the thresholds; pressure over them (a rule "at the threshold")


@dataclass(frozen=True, slots=True)
class RoomToMake:
    """Predictive cleanup's steps, weakest first, and the test that says a reading still leaves the node short."""

    steps: Sequence[tuple[Action, ...]]
    short: Callable[[MemorySnapshot], bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class CleanupRequest:
    """One request to the engine.

    Attributes:
        trigger: what asked, for which node and why; its reason is the decision's when ``policy`` decides.
        mode: the mode to run; ``None`` for the model-free cleanup under RAM pressure (or ``room``).
        thresholds: when memory is under pressure, and the cooldown; ``None``: no pressure and no cooldown. Only
            its RAM threshold counts for the model-free cleanup.
        urgency: how ``thresholds`` weigh on a mode.
        policy: the node's widgets: its decision table decides first whether anything runs, and which mode.
        unload_models: the last rung may unload models at the end of a pressure cleanup (:mod:`.last_rung`); only
            from ComfyUI's worker thread, between nodes.
        reading: a snapshot the caller already took, used for the decision instead of a fresh one.
        room: predictive cleanup's steps: run weakest first until the node fits; neither cooldown nor guard.
    """

    trigger: Trigger
    mode: Mode | None = None
    thresholds: Thresholds | None = None
    urgency: Urgency = Urgency.BY_READING
    policy: PolicySettings | None = None
    unload_models: bool = False
    reading: MemorySnapshot | None = None
    room: RoomToMake | None = None

    @classmethod
    def decided_by(
        cls,
        policy: PolicySettings,
        kind: TriggerKind,
        *,
        node_id: str | None = None,
        node_class: str | None = None,
        phase: str | None = None,
        reading: MemorySnapshot | None = None,
        unload_models: bool = False,
    ) -> CleanupRequest:
        """What the node asks: its decision table on its own widgets' mode and thresholds."""
        trigger = Trigger(kind=kind, reason="", node_id=node_id, node_class=node_class, phase=phase)
        return cls(
            trigger=trigger,
            mode=policy.mode,
            thresholds=policy.thresholds,
            policy=policy,
            reading=reading,
            unload_models=unload_models,
        )

    @classmethod
    def model_free(
        cls,
        kind: TriggerKind,
        ram_threshold: float,
        *,
        node_id: str | None = None,
        node_class: str | None = None,
        reading: MemorySnapshot | None = None,
        unload_models: bool = False,
    ) -> CleanupRequest:
        """The model-free cleanup when RAM is at or above ``ram_threshold``: at a node boundary, or the watchdog."""
        trigger = Trigger(kind=kind, reason="", node_id=node_id, node_class=node_class)
        return cls(
            trigger=trigger,
            thresholds=Thresholds(ram_percent=ram_threshold),
            reading=reading,
            unload_models=unload_models,
        )
