"""What was done: the record of each optimization, the bounded, thread-safe history of the last ones, and the
engine's answer to a request to optimize."""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ..probe.readings import GIB, MemorySnapshot
from .modes import Mode
from .pressure import PressureLevel
from .totals import OptimizationTotals, TotalsReading

MODEL_FREE = "Model-free"
"""What a boundary or watchdog cleanup is called where a mode's name would stand."""


class TriggerKind(str, enum.Enum):
    """What asked for an optimization."""

    NODE = "node"  # an UnifiedMemoryManager node ran with optimization on
    MANUAL = "manual"  # the panel, the HTTP API or the command line
    HOOK = "hook"  # the automatic executor hook, around a heavy node
    BOUNDARY = "boundary"  # RAM at or above its threshold when a node was about to start (model-free cleanup)
    WATCHDOG = "watchdog"  # RAM at or above its threshold while a node ran (model-free cleanup, own thread)
    PREDICTIVE = "predictive"  # a node's learned peak would not fit the free memory: freed just enough before it
    RESCUE = "rescue"  # a heavy node ran out of memory: Aggressive, then the node once more


def freed_between(before: int | None, after: int | None) -> int | None:
    """What went from ``before`` to ``after`` (negative when usage grew); ``None`` when either is unknown."""
    return None if before is None or after is None else before - after


def measured_total(parts: Iterable[int | None]) -> int | None:
    """The sum of the parts that were measured, so that an optimization's figure is its actions' figures added up."""
    measured = [part for part in parts if part is not None]
    return sum(measured) if measured else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Trigger:
    """Who asked and why.

    Attributes:
        kind: see :class:`TriggerKind`.
        reason: the decision in words ("threshold reached: RAM 91% >= 80%").
        node_id: the ComfyUI node id, where a node is involved.
        node_class: the node's class name (``ReActorFaceSwap``), where a node is involved.
        phase: ``"before"`` or ``"after"`` the node, for the hook; ``"rescue"`` when it freed memory after an
            out-of-memory failure so the node could run once more.
        pressure: the readings at or above their threshold when it was asked for: a pressure optimization,
            which the cooldown did not hold back. Empty for a routine one.
        predicted_bytes, headroom_bytes: for a predictive cleanup, the node's predicted peak of the resource that
            was short, and what was free under the limit before the cleanup; ``None`` otherwise.
    """

    kind: TriggerKind
    reason: str
    node_id: str | None = None
    node_class: str | None = None
    phase: str | None = None
    pressure: tuple[PressureLevel, ...] = ()
    predicted_bytes: int | None = None
    headroom_bytes: int | None = None

    @property
    def before_node(self) -> bool:
        """It runs just before its node starts: a rule's "before" phase, or the boundary cleanup."""
        return self.phase == "before" or self.kind is TriggerKind.BOUNDARY


@dataclass(frozen=True, slots=True)
class ActionReport:
    """One action of one optimization.

    Attributes:
        name: the action's name (``malloc_trim``).
        ram_freed_bytes: drop in this process's RSS across the action; negative when it grew; ``None`` when the
            action skipped (nothing it did to measure).
        vram_freed_bytes: drop in VRAM used on all GPUs across the action; ``None`` without a GPU reading or
            when the action skipped.
        duration_seconds: how long it ran.
        detail: what it did, in its own words.
        skipped_reason: why it did nothing, when it did nothing.
        error: the exception it raised, as text; the other actions still ran.
        escalation: it ran beyond the mode asked for, because usage was still over a threshold after it.
    """

    name: str
    ram_freed_bytes: int | None
    vram_freed_bytes: int | None
    duration_seconds: float
    detail: str | None = None
    skipped_reason: str | None = None
    error: str | None = None
    escalation: bool = False


@dataclass(frozen=True, slots=True)
class OptimizationRecord:
    """One optimization, with the memory before and after it.

    Attributes:
        sequence: 1 for the first optimization of this process, then counting up.
        started_at: wall-clock time it started.
        trigger: who asked and why.
        mode: the mode that ran; ``None`` for a model-free pressure cleanup (garbage collection and returning
            the heap to the system, at a node boundary or from the watchdog), which is none of the four modes.
        before, after: snapshots around the whole optimization.
        ram_freed_bytes: drop in this process's RSS, the actions' figures added up; negative when it grew (models
            moved from VRAM to RAM); ``None`` when no action was measured.
        vram_freed_bytes: drop in VRAM used on all GPUs, the actions' figures added up; ``None`` without a GPU
            reading.
        duration_seconds: how long the actions took, all together.
        actions: each action's report, in the order they ran.
        kept: what stayed in memory that a stronger cleanup would have released (ReActor's models and cached
            faces, which Balanced keeps so the next swap is fast), in words; ``None`` when nothing did.
        notice: what the panel says of it beyond its figures ("ReActor's models unloaded under pressure: they
            reload on the next swap"); ``None`` mostly.
    """

    sequence: int
    started_at: float
    trigger: Trigger
    mode: Mode | None
    before: MemorySnapshot
    after: MemorySnapshot
    ram_freed_bytes: int | None
    vram_freed_bytes: int | None
    duration_seconds: float
    actions: tuple[ActionReport, ...]
    kept: str | None = None
    notice: str | None = None

    @property
    def cleanup_name(self) -> str:
        """The mode's name, or ``Model-free`` for a boundary or watchdog cleanup."""
        return MODEL_FREE if self.mode is None else self.mode.value

    @property
    def escalated(self) -> bool:
        return any(action.escalation for action in self.actions)

    @property
    def freed_gib(self) -> float:
        """RAM returned plus VRAM returned, in GiB; a part that grew counts as 0, not as a negative."""
        freed = max(self.ram_freed_bytes or 0, 0) + max(self.vram_freed_bytes or 0, 0)
        return freed / GIB


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to a request to optimize.

    Attributes:
        performed: whether the actions ran.
        reason: why they ran or did not ("cooldown: 12.0 s left", "mode is Monitor Only").
        snapshot: the latest reading (after the optimization when one ran).
        record: the history record, when one ran.
        cooldown_remaining_seconds: how long the cooldown still holds, when it is what stopped the optimization.
        held_back: the effectiveness guard stopped a pressure optimization (``reason`` says why).
    """

    performed: bool
    reason: str
    snapshot: MemorySnapshot
    record: OptimizationRecord | None = None
    cooldown_remaining_seconds: float | None = None
    held_back: bool = False


@dataclass(frozen=True, slots=True)
class HeldBack:
    """A pressure optimization the effectiveness guard held back: the latest one is shown in the panel.

    Attributes:
        at: wall-clock time.
        reason: the guard's words ("nothing new to free since 12:04:31: the last one freed 3 MB of RAM").
        trigger: who asked, and the level that fired it.
    """

    at: float
    reason: str
    trigger: Trigger


class History:
    """The last ``size`` optimizations, newest first, and the totals of all of them since start-up.

    Readers get an immutable copy; any thread may record. The totals are added under the same lock, so they
    always agree with :attr:`total_recorded`.
    """

    def __init__(self, size: int = 10):
        self._records: deque[OptimizationRecord] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._count = 0
        self._totals = OptimizationTotals()

    def record(self, record: OptimizationRecord) -> None:
        with self._lock:
            self._records.appendleft(record)
            self._count += 1
            self._totals.add(
                record.cleanup_name,
                record.trigger.kind.value,
                record.ram_freed_bytes,
                record.vram_freed_bytes,
                record.duration_seconds,
            )

    def replace(self, record: OptimizationRecord) -> bool:
        """Swaps in an amended record for the one with the same sequence; ``False`` when it has left the history.

        An OOM rescue learns whether the node's second run succeeded only after its optimization was recorded.
        """
        with self._lock:
            for index, kept in enumerate(self._records):
                if kept.sequence == record.sequence:
                    self._records[index] = record
                    return True
            return False

    def next_sequence(self) -> int:
        with self._lock:
            return self._count + 1

    def records(self) -> tuple[OptimizationRecord, ...]:
        with self._lock:
            return tuple(self._records)

    def totals(self) -> TotalsReading:
        """Every optimization since start-up, counted by cleanup and trigger, with bytes freed and durations."""
        with self._lock:
            return self._totals.read()

    def cleanups_freed(self) -> tuple[int, int]:
        """Optimizations since start-up and the RAM they returned: a prompt's share is the difference."""
        with self._lock:
            reading = self._totals.read()
        return reading.count, sum(totals.ram_freed_bytes for totals in reading.cleanups)

    @property
    def total_recorded(self) -> int:
        """All optimizations recorded since start-up, including those the bound has dropped."""
        with self._lock:
            return self._count
