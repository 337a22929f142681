"""The per-node pipeline: what comfy_memhooks itself does at each node's start and end, in an order written once.

blinker calls a signal's receivers in the order of a set, not the order they were connected, so two receivers of
``node_started`` cannot rely on which runs first. Several of comfy_memhooks' own parts must: the cleanup before a
node must run before the profile's "before" reading, or what it freed is charged to the node; the profile's
"after" reading must come before the cleanup after a heavy node, or what that cleanup freed hides what the node
left behind. So comfy_memhooks' parts are not signal receivers: each puts one step into a named slot here, and the
hook calls the slots in the order of :class:`StartStep` and :class:`EndStep`. The public signals (:mod:`.signals`)
are sent after the steps, for other extensions, whose order among themselves is blinker's.

Each step is called in its own ``try``: a failing step is counted and logged once, and the node runs as it would
without it. The tuple of steps to call is worked out when a step is set or cleared, never per node, so an ordinary
node costs one call per step that applies to every node.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol

from .failures import Failures

logger = logging.getLogger(__name__)


class NodeInfo(Protocol):
    """The node a step is told about (the hook's ``NodeRun``)."""

    @property
    def node_id(self) -> Any: ...
    @property
    def node_class(self) -> str: ...
    @property
    def prompt_id(self) -> Any: ...
    @property
    def heavy(self) -> bool: ...
    @property
    def inputs(self) -> Any: ...


class NodeEnding:
    """How a node ended, for the end steps: made once per node by the hook, so a plain slotted class.

    Attributes:
        result: ComfyUI's ``ExecutionResult`` (``None`` when ``execute`` raised).
        cached: ComfyUI answered it from its cache.
        duration_seconds: from its first entry into ``execute``, PENDING re-entries included.
        error: the node's exception, or ``None``.
        rescued: ``None`` without an OOM rescue; else whether its second run succeeded.
    """

    __slots__ = ("cached", "duration_seconds", "error", "rescued", "result")

    def __init__(
        self, result: Any, cached: bool, duration_seconds: float, error: BaseException | None, rescued: bool | None
    ):
        self.result = result
        self.cached = cached
        self.duration_seconds = duration_seconds
        self.error = error
        self.rescued = rescued


StartFunction = Callable[[Any, "bool | None"], object]
"""A start step: told the node (:class:`NodeInfo`) and whether ComfyUI will answer it from its cache (``None``: not
looked up; only heavy nodes are)."""
EndFunction = Callable[[Any, NodeEnding], object]
"""An end step: told the node (:class:`NodeInfo`) and how it ended."""


class StartStep(Enum):
    """What runs as a node starts, in the order of the values (members of the two enums never compare equal)."""

    MANUAL = 10
    """A cleanup the panel queued while the prompt ran: the user asked for it first."""
    PRESSURE = 20
    """The model-free cleanup when the watchdog's gauge reads RAM over its threshold."""
    RULES = 30
    """The heavy-node rule's mode before the node (heavy nodes only)."""
    PREDICTIVE = 40
    """Room made for the node's learned peak."""
    PROFILE = 50
    """The profile's "before" reading and the reset of the peak counters: last, so that nothing freed before the
    node is charged to it, and nothing between the reading and the node itself is."""


class EndStep(Enum):
    """What runs as a node ends, in this order."""

    PROFILE = 10
    """The profile's "after" reading: first, before any cleanup changes what the node left behind."""
    PREDICTIVE = 15
    """The node is no longer the one running (what predictive cleanup keeps in case ComfyUI is killed)."""
    RULES = 20
    """The heavy-node rule's mode after the node (heavy nodes only)."""
    MANUAL = 30
    """A cleanup the panel queued while the node ran."""
    METRICS = 40
    """The node's duration in the metrics."""


class NodePipeline:
    """The steps comfy_memhooks runs around every node, by slot; at most one step a slot.

    Args:
        failures: where a failing step is counted, logged once per step.
    """

    def __init__(self, failures: Failures):
        self.failures = failures
        self._lock = threading.Lock()
        self._start: dict[StartStep, tuple[StartFunction, bool]] = {}
        self._end: dict[EndStep, tuple[EndFunction, bool]] = {}
        self.start_steps: tuple[tuple[StartStep, StartFunction], ...] = ()
        """The steps for an ordinary node as it starts, in order (read by the hook, rebuilt on every change)."""
        self.heavy_start_steps: tuple[tuple[StartStep, StartFunction], ...] = ()
        self.end_steps: tuple[tuple[EndStep, EndFunction], ...] = ()
        self.heavy_end_steps: tuple[tuple[EndStep, EndFunction], ...] = ()

    def set_start(self, slot: StartStep, step: StartFunction, *, heavy_only: bool = False) -> None:
        """Puts ``step`` into ``slot`` (replacing what was there); ``heavy_only``: heavy nodes only."""
        with self._lock:
            self._start[slot] = (step, heavy_only)
            self._rebuild()

    def set_end(self, slot: EndStep, step: EndFunction, *, heavy_only: bool = False) -> None:
        with self._lock:
            self._end[slot] = (step, heavy_only)
            self._rebuild()

    def clear(self, slot: StartStep | EndStep, step: Callable[..., object] | None = None) -> None:
        """Empties ``slot``; with ``step``, only while that step is the one in it (another may have replaced it)."""
        with self._lock:
            table: dict[Any, tuple[Callable[..., object], bool]] = (
                self._start if isinstance(slot, StartStep) else self._end
            )
            current = table.get(slot)
            if current is not None and (step is None or current[0] == step):
                del table[slot]
                self._rebuild()

    def occupied(self, slot: StartStep | EndStep) -> bool:
        return slot in (self._start if isinstance(slot, StartStep) else self._end)

    def _rebuild(self) -> None:
        start = sorted(self._start.items(), key=lambda item: item[0].value)
        end = sorted(self._end.items(), key=lambda item: item[0].value)
        self.start_steps = tuple((slot, step) for slot, (step, heavy_only) in start if not heavy_only)
        self.heavy_start_steps = tuple((slot, step) for slot, (step, _) in start)
        self.end_steps = tuple((slot, step) for slot, (step, heavy_only) in end if not heavy_only)
        self.heavy_end_steps = tuple((slot, step) for slot, (step, _) in end)

    def run_start(self, run: NodeInfo, cached: bool | None) -> None:
        """Calls the start steps for ``run`` in order, each in its own ``try``."""
        for slot, step in self.heavy_start_steps if run.heavy else self.start_steps:
            try:
                step(run, cached)
            except Exception as error:  # one step's bug must not stop the others, nor reach ComfyUI.
                self.failures.record(f"running the {slot.name.lower()} step before a node", error)

    def run_end(self, run: NodeInfo, ending: NodeEnding) -> None:
        """Calls the end steps for ``run`` in order, each in its own ``try``."""
        for slot, step in self.heavy_end_steps if run.heavy else self.end_steps:
            try:
                step(run, ending)
            except Exception as error:  # as in run_start.
                self.failures.record(f"running the {slot.name.lower()} step after a node", error)


hook_failures = Failures(logger, "executor hook failed while {kind}; the node runs on unchanged", part="hook")
"""The executor hook's contained failures, its pipeline's steps' included (those the steps did not contain
themselves): shown in ``/memhooks/status`` and the metrics."""
