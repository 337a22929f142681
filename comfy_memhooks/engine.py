"""The cleanup engine: runs a mode's actions, measures them, keeps the cooldown and the history.

There is one engine per process (:func:`get_engine`), shared by the node, the executor hook and the panel, so
all three see the same cooldown and history. ComfyUI runs nodes in a worker thread and serves the panel from
another, so every decision and optimization happens under one lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import signals
from .actions import Action, ActionContext, ActionOutcome
from .history import ActionReport, History, OptimizationRecord, Trigger, TriggerKind
from .modes import MODE_ACTIONS, Mode
from .policy import PolicySettings, decide
from .probe import MemoryProbe
from .snapshots import MemorySnapshot

logger = logging.getLogger(__name__)


def _difference(before: int | None, after: int | None) -> int | None:
    return None if before is None or after is None else before - after


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to a request to optimize.

    Attributes:
        performed: whether the actions ran.
        reason: why they ran or did not ("cooldown: 12.0 s left", "mode is Monitor Only").
        snapshot: the latest reading (after the optimization when one ran).
        record: the history record, when one ran.
        cooldown_remaining_seconds: how long the cooldown still holds, when it is what stopped the optimization.
    """

    performed: bool
    reason: str
    snapshot: MemorySnapshot
    record: OptimizationRecord | None = None
    cooldown_remaining_seconds: float | None = None


class Engine:
    """Frees memory by mode, with a shared cooldown and history.

    Args:
        probe: takes the snapshots and the per-action measurements.
        clock: a monotonic clock for the cooldown; tests pass a fake one.
        history_size: how many optimizations the history keeps.
    """

    def __init__(
        self,
        probe: MemoryProbe | None = None,
        clock: Callable[[], float] = time.monotonic,
        history_size: int = 10,
    ):
        self.probe = probe if probe is not None else MemoryProbe()
        self.history = History(history_size)
        self._clock = clock
        self._lock = threading.RLock()
        self._last_optimized_at: float | None = None

    def snapshot(self, include_processes: bool = False) -> MemorySnapshot:
        return self.probe.snapshot(include_processes=include_processes)

    def cooldown_remaining(self, cooldown_seconds: float) -> float:
        """Seconds until an optimization with this cooldown may run; 0 when it may run now.

        Lock-free on purpose: the web server's thread asks this while the worker thread may hold the lock for
        a whole Aggressive run, and reading one float is atomic.
        """
        last = self._last_optimized_at
        if cooldown_seconds <= 0 or last is None:
            return 0.0
        return max(0.0, last + cooldown_seconds - self._clock())

    def evaluate(
        self,
        settings: PolicySettings,
        trigger_kind: TriggerKind,
        *,
        node_id: str | None = None,
        node_class: str | None = None,
        phase: str | None = None,
        before: MemorySnapshot | None = None,
    ) -> Outcome:
        """Applies the decision table and the cooldown, and optimizes when both allow it.

        A threshold-driven optimization is recorded as a ``threshold`` trigger whatever ``trigger_kind`` is,
        except for the hook, whose records always say ``hook`` (the threshold is in the reason).
        """
        with self._lock:
            snapshot = before if before is not None else self.probe.snapshot()
            decision = decide(settings, snapshot)
            if not decision.optimize:
                return Outcome(False, decision.reason, snapshot)
            remaining = self.cooldown_remaining(settings.cooldown_seconds)
            if remaining > 0:
                return Outcome(False, f"cooldown: {remaining:.1f} s left", snapshot, None, remaining)
            kind = trigger_kind
            if decision.threshold_exceeded and settings.auto_optimize and not settings.enable_auto_cleanup:
                kind = TriggerKind.THRESHOLD if trigger_kind is not TriggerKind.HOOK else trigger_kind
            trigger = Trigger(kind, decision.reason, node_id, node_class, phase)
            record = self._optimize(settings.mode, trigger, snapshot, settings.vram_threshold)
            return Outcome(True, decision.reason, record.after, record)

    def optimize(
        self,
        mode: Mode,
        trigger: Trigger,
        *,
        vram_threshold: float | None = None,
        cooldown_seconds: float = 0.0,
    ) -> Outcome:
        """Runs ``mode`` now, whatever the thresholds (a manual request, an OOM rescue), unless the cooldown holds."""
        with self._lock:
            snapshot = self.probe.snapshot()
            if mode is Mode.MONITOR_ONLY:
                return Outcome(False, "mode is Monitor Only", snapshot)
            remaining = self.cooldown_remaining(cooldown_seconds)
            if remaining > 0:
                return Outcome(False, f"cooldown: {remaining:.1f} s left", snapshot, None, remaining)
            record = self._optimize(mode, trigger, snapshot, vram_threshold)
            return Outcome(True, trigger.reason, record.after, record)

    def _optimize(
        self, mode: Mode, trigger: Trigger, before: MemorySnapshot, vram_threshold: float | None
    ) -> OptimizationRecord:
        started_at = time.time()
        started = time.perf_counter()
        context = ActionContext(before=before, vram_threshold=vram_threshold)
        reports = []
        usage = self.probe.usage()  # each action's "after" is the next one's "before": measured once, not twice
        for action in MODE_ACTIONS[mode]:
            report, usage = self._run_action(action, context, usage)
            reports.append(report)
        duration = time.perf_counter() - started
        after = self.probe.snapshot()
        self._last_optimized_at = self._clock()
        record = OptimizationRecord(
            sequence=self.history.next_sequence(),
            started_at=started_at,
            trigger=trigger,
            mode=mode,
            before=before,
            after=after,
            ram_freed_bytes=_difference(before.ram.process_rss_bytes, after.ram.process_rss_bytes),
            vram_freed_bytes=_difference(before.vram_used_bytes, after.vram_used_bytes),
            duration_seconds=duration,
            actions=tuple(reports),
        )
        self.history.record(record)
        logger.info(
            "optimized (%s, %s%s): freed %.2f GB in %.0f ms",
            mode.value,
            trigger.kind.value,
            f" {trigger.node_class}#{trigger.node_id}" if trigger.node_class else "",
            record.freed_gb,
            duration * 1000,
        )
        signals.send_safely(signals.optimization_performed, self, record=record)
        return record

    def _run_action(
        self, action: Action, context: ActionContext, usage_before: tuple[int | None, int | None]
    ) -> tuple[ActionReport, tuple[int | None, int | None]]:
        """Runs one action; returns its report and the usage measured after it."""
        rss_before, vram_before = usage_before
        started = time.perf_counter()
        outcome: ActionOutcome | None = None
        error_text: str | None = None
        try:
            outcome = action.run(context)
        except Exception as error:  # one failing action never stops the others; the report carries the error.
            logger.warning("action %s failed: %s", action.name, error, exc_info=True)
            error_text = f"{type(error).__name__}: {error}"
        duration = time.perf_counter() - started
        usage_after = self.probe.usage()
        rss_after, vram_after = usage_after
        report = ActionReport(
            name=action.name,
            ram_freed_bytes=_difference(rss_before, rss_after),
            vram_freed_bytes=_difference(vram_before, vram_after),
            duration_seconds=duration,
            detail=None if outcome is None else outcome.detail,
            skipped_reason=None if outcome is None else outcome.skipped_reason,
            error=error_text,
        )
        return report, usage_after


_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    """The process's one engine, created on first use."""
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = Engine()
    return _engine
