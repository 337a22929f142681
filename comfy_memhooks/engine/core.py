"""The cleanup engine: runs a mode's actions, measures them, keeps the cooldown, the guard and the history.

There is one engine per process (the runtime's, :mod:`..comfy.runtime`), shared by the node, the executor hook
and the panel, so all three see the same cooldown and history. ComfyUI runs nodes in a worker thread and serves the
panel from another, so every decision and optimization happens under one lock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from .. import signals
from ..failures import Failures
from ..probe.memory import MemoryProbe
from ..probe.readings import MemorySnapshot
from .actions import (
    BOUNDARY_ACTIONS,
    COMFY_CACHE_RELEASE,
    LAST_RUNG,
    LEFT_TO_COMFYUI,
    MODE_ACTIONS,
    MODEL_FREE_ACTIONS,
    REACTOR_MODELS_UNDER_PRESSURE,
    Action,
    ActionContext,
    ActionOutcome,
    escalation_ladder,
)
from .comfy_cache import SeenCaches
from .comfy_release import DURING_CLEANUP_NOTICE, HeldWithoutWaiting, PromptReleaseWatch
from .history import (
    ActionReport,
    HeldBack,
    History,
    OptimizationRecord,
    Outcome,
    Trigger,
    TriggerKind,
    freed_between,
    measured_total,
)
from .last_rung import UNLOADED_NOTICE, near_limit, rung_for
from .modes import MODE_STRENGTH, MODEL_FREE_STRENGTH, UNLOADING_STRENGTH, Mode
from .policy import decide
from .pressure import DEFAULT_THRESHOLDS, EffectivenessGuard, Thresholds, pressure_levels
from .reactor import is_reactor_node, kept_description
from .request import CleanupRequest, RoomToMake, Urgency

__all__ = ["Engine", "HeldBack", "Outcome"]  # Outcome and HeldBack: callers import them from here

logger = logging.getLogger(__name__)


class Engine:
    """Frees memory by mode, with a shared cooldown, effectiveness guard and history.

    A routine optimization waits for the cooldown. A pressure optimization (a reading at or above its threshold,
    :mod:`.pressure`) does not: the effectiveness guard decides instead, and when the mode leaves usage still over
    a threshold the engine climbs :func:`actions.escalation_ladder`.

    Args:
        probe: takes the snapshots and the per-action measurements.
        clock: a monotonic clock for the cooldown; tests pass a fake one.
        history_size: how many optimizations the history keeps.
        wall_clock: the time stamped on records and held-back notes.
    """

    def __init__(
        self,
        probe: MemoryProbe | None = None,
        clock: Callable[[], float] = time.monotonic,
        history_size: int = 10,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.probe = probe if probe is not None else MemoryProbe()
        self.history = History(history_size)
        self.caches = SeenCaches()  # the hook tells it each prompt's caches
        self.release = PromptReleaseWatch()  # the hook tells it each prompt's start and end
        self.release.hold = self.held_without_waiting
        self.release.cleanups = self.history.cleanups_freed
        self.guard = EffectivenessGuard(wall_clock)
        self.held_back_total = 0
        self.action_failures = Failures(logger, "cleanup action {kind} failed; the other actions still ran")
        self.last_held_back: HeldBack | None = None
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.RLock()
        self._last_optimized_at: float | None = None

    def snapshot(self, include_processes: bool = False) -> MemorySnapshot:
        return self.probe.snapshot(include_processes=include_processes)

    def held_without_waiting(self) -> HeldWithoutWaiting:
        """Holds the engine, if no optimization runs now, while ComfyUI releases memory itself (``with``; it gives
        whether it got it). Meanwhile no cleanup of comfy_memhooks' starts (the watchdog, which never waits, skips
        that reading), so none started meanwhile counts what ComfyUI freed. It never waits: ComfyUI's own release
        is never delayed, and a cleanup already running when ComfyUI releases says on its record that its figure
        includes it."""
        return HeldWithoutWaiting(self._lock)

    def cooldown_remaining(self, cooldown_seconds: float) -> float:
        """Seconds until a routine optimization with this cooldown may run; 0 when it may run now. Lock-free on
        purpose: the web server asks while the worker may hold the lock for a whole Aggressive run."""
        last = self._last_optimized_at
        if cooldown_seconds <= 0 or last is None:
            return 0.0
        return max(0.0, last + cooldown_seconds - self._clock())

    def run(self, request: CleanupRequest) -> Outcome:
        """Answers ``request``, waiting for an optimization in progress to end: the one door into the engine.

        By what the request names: ``room`` (predictive cleanup) runs its steps, weakest first, until the node
        fits, held back by neither the cooldown nor the guard; no ``mode`` is the model-free cleanup when RAM is at
        or above the RAM threshold, held back by the effectiveness guard; ``policy`` is the node's decision table,
        then its mode; otherwise the mode runs by its ``urgency``. A routine optimization waits for the cooldown; a
        pressure one (a reading at or above its threshold, :mod:`.pressure`) does not: the effectiveness guard
        decides instead, and when the mode leaves usage still over a threshold the engine climbs
        :func:`actions.escalation_ladder`, then (``unload_models``) the last rung.
        """
        with self._lock:
            return self._run(request, quiet=False)

    def run_if_free(self, request: CleanupRequest) -> Outcome | None:
        """The watchdog's way, for a model-free request: ``None`` at once when another optimization runs (it is
        already doing the work); it cleans up only when usage grew since the last one, and a hold is neither
        counted nor signalled (it would be, several times a second). ComfyUI's worker is never made to wait."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._run(request, quiet=True)
        finally:
            self._lock.release()

    def _run(self, request: CleanupRequest, quiet: bool) -> Outcome:
        if request.room is not None:
            return self._make_room(request.trigger, request.room)
        if request.mode is None:
            return self._reclaim(request, quiet)
        snapshot = request.reading if request.reading is not None else self.probe.snapshot()
        trigger = request.trigger
        if request.policy is not None:
            decision = decide(request.policy, snapshot)
            if not decision.optimize:
                return Outcome(False, decision.reason, snapshot)
            trigger = replace(trigger, reason=decision.reason, pressure=decision.pressure)
            return self._request(request.mode, trigger, snapshot, request.thresholds, request.unload_models)
        if request.mode is Mode.MONITOR_ONLY:
            return Outcome(False, "mode is Monitor Only", snapshot)
        thresholds = request.thresholds
        routine = request.urgency is Urgency.ROUTINE
        levels = () if thresholds is None or routine else thresholds.pressure(snapshot)
        if request.urgency is Urgency.UNDER_PRESSURE and not levels:
            under = "" if thresholds is None else f" ({thresholds.describe()})"
            return Outcome(False, f"under the thresholds{under}", snapshot)
        trigger = replace(trigger, pressure=levels)
        return self._request(request.mode, trigger, snapshot, thresholds, request.unload_models)

    def _reclaim(self, request: CleanupRequest, quiet: bool) -> Outcome:
        """The model-free cleanup under RAM pressure, at a node boundary or from the watchdog.

        Runs :data:`actions.MODEL_FREE_ACTIONS` (at a boundary :data:`actions.BOUNDARY_ACTIONS`, which then asks
        ComfyUI's output cache for RAM when that was not enough) when RAM is at or above the request's RAM threshold
        and the effectiveness guard lets it. At a boundary (never from the watchdog), with ``unload_models``, when
        RAM is still over its threshold and close to the limit afterwards, the last rung (:mod:`.last_rung`) runs.
        """
        ram_threshold = DEFAULT_THRESHOLDS.ram_percent if request.thresholds is None else request.thresholds.ram_percent
        given = request.reading
        snapshot = given if given is not None else self.probe.snapshot()
        levels = pressure_levels(snapshot, ram_threshold, math.inf)
        if not levels:
            return Outcome(False, f"RAM is under its {ram_threshold:g}% threshold", snapshot)
        kind, node_id, node_class = request.trigger.kind, request.trigger.node_id, request.trigger.node_class
        preposition = "during" if kind is TriggerKind.WATCHDOG else "before"
        where = f" {preposition} {node_class} #{node_id}" if node_class else ""
        reason = f"{levels[0].describe()}{where}: model-free cleanup"
        trigger = replace(request.trigger, reason=reason, pressure=levels)
        allowed = request.unload_models and kind is TriggerKind.BOUNDARY and not quiet
        rung, near = rung_for(allowed, ram_threshold, snapshot)
        strength = UNLOADING_STRENGTH if near else MODEL_FREE_STRENGTH
        held = self.guard.hold_reason(snapshot, levels, strength, require_growth=quiet)
        if held is not None:
            if not quiet:
                self._signal_pressure(trigger, snapshot)
                self._hold(trigger, held)
            return Outcome(False, held, snapshot, held_back=True)
        self._signal_pressure(trigger, snapshot)
        before = snapshot if given is None else self.probe.snapshot()
        steps = BOUNDARY_ACTIONS if kind is TriggerKind.BOUNDARY else MODEL_FREE_ACTIONS
        record = self._optimize(trigger, before, steps, ram_threshold=ram_threshold, last_rung=rung)
        return Outcome(True, reason, record.after, record)

    def _make_room(self, trigger: Trigger, room: RoomToMake) -> Outcome:
        """Runs the room's steps, weakest first, until its test no longer finds the snapshot short."""
        before = self.probe.snapshot()
        if not room.steps or not room.short(before):
            return Outcome(False, "a fresh reading leaves room", before)
        record = self._optimize(trigger, before, room.steps[0], until=(room.steps[1:], room.short))
        return Outcome(True, trigger.reason, record.after, record)

    def _request(
        self,
        mode: Mode,
        trigger: Trigger,
        snapshot: MemorySnapshot,
        thresholds: Thresholds | None,
        unload_models: bool = False,
    ) -> Outcome:
        """Pressure: the guard, then the mode, its escalation and (``unload_models``) the last rung. Routine: the
        cooldown, then the mode."""
        vram_threshold = None if thresholds is None else thresholds.vram_percent
        ram_threshold = None if thresholds is None else thresholds.ram_percent
        if trigger.pressure:
            self._signal_pressure(trigger, snapshot)
            # Aggressive has unloaded everything already: the rung would find nothing left.
            allowed = unload_models and mode is not Mode.AGGRESSIVE
            rung, near = rung_for(allowed, ram_threshold, snapshot)
            strength = UNLOADING_STRENGTH if near else MODE_STRENGTH[mode]
            held = self.guard.hold_reason(snapshot, trigger.pressure, strength)
            if held is not None:
                self._hold(trigger, held)
                return Outcome(False, held, snapshot, held_back=True)
            record = self._optimize(
                trigger,
                snapshot,
                MODE_ACTIONS[mode],
                mode=mode,
                vram_threshold=vram_threshold,
                ram_threshold=ram_threshold,
                escalate_over=thresholds,
                last_rung=rung,
            )
            return Outcome(True, trigger.reason, record.after, record)
        remaining = self.cooldown_remaining(0.0 if thresholds is None else thresholds.cooldown_seconds)
        if remaining > 0:
            return Outcome(False, f"cooldown: {remaining:.1f} s left", snapshot, None, remaining)
        record = self._optimize(
            trigger, snapshot, MODE_ACTIONS[mode], mode=mode, vram_threshold=vram_threshold, ram_threshold=ram_threshold
        )
        return Outcome(True, trigger.reason, record.after, record)

    def _signal_pressure(self, trigger: Trigger, snapshot: MemorySnapshot) -> None:
        for level in trigger.pressure:
            signals.send_safely(
                signals.memory_pressure, trigger.kind.value, level=level, source=trigger.kind.value, reading=snapshot
            )

    def _hold(self, trigger: Trigger, reason: str) -> None:
        previous = self.last_held_back
        self.held_back_total += 1
        self.last_held_back = HeldBack(self._wall_clock(), reason, trigger)
        if previous is None or previous.reason != reason:  # once per distinct reason, not once per node
            logger.info("comfy_memhooks: %s cleanup held back: %s", trigger.kind.value, reason)

    def _optimize(
        self,
        trigger: Trigger,
        before: MemorySnapshot,
        steps: tuple[Action, ...],
        *,
        mode: Mode | None = None,
        vram_threshold: float | None = None,
        ram_threshold: float | None = None,
        escalate_over: Thresholds | None = None,
        until: tuple[Sequence[tuple[Action, ...]], Callable[[MemorySnapshot], bool]] | None = None,
        last_rung: float | None = None,
    ) -> OptimizationRecord:
        """Runs ``steps``; then, while ``escalate_over`` still finds pressure, the escalation ladder's steps.

        ``until``: other steps, and a test of a snapshot; each step runs while the test says memory is still short.
        ``last_rung``: the RAM threshold of the last rung; when RAM is still close to the limit after the rest,
        and ComfyUI's output cache was asked (not left to ComfyUI's own release, which has not had its turn), the
        rung's steps run while RAM is at or above that threshold.
        """
        started_at = self._wall_clock()
        started = time.perf_counter()
        reactor_next = trigger.before_node and is_reactor_node(trigger.node_class)  # the rung keeps what it loads
        context = ActionContext(
            before, vram_threshold, ram_threshold, self.probe.read_ram, self.caches, self.release, reactor_next
        )
        releases_during = self.release.releases_during_cleanups
        reports = []
        usage = self.probe.usage()  # each action's "after" is the next one's "before": measured once, not twice
        for action in steps:
            report, usage = self._run_action(action, context, usage)
            reports.append(report)
        after = self.probe.snapshot()
        if escalate_over is not None and mode is not None:
            until = (
                [step for _, step in escalation_ladder(mode)],
                lambda reading: bool(escalate_over.pressure(reading)),
            )
        ladder, short = until if until is not None else ((), None)
        for step in ladder:
            if short is None or not short(after):
                break
            for action in step:
                report, usage = self._run_action(action, context, usage, escalation=True)
                reports.append(report)
            after = self.probe.snapshot()
        # The guard weighs it as unloading once the rung had every step to try: a later one may find no more unless
        # usage grows. Not when the rung did not run, nor when it kept ReActor's models for the node about to use them.
        unloading = False
        if last_rung is not None and near_limit(after, last_rung) and not _left_to_comfyui(reports):
            unloading = not reactor_next
            for step in LAST_RUNG:  # near the limit: RAM is over its threshold before the first step
                for action in step:
                    report, usage = self._run_action(action, context, usage, escalation=True)
                    reports.append(report)
                after = self.probe.snapshot()
                if not pressure_levels(after, last_rung, math.inf):
                    break
        duration = time.perf_counter() - started
        self._last_optimized_at = self._clock()
        if trigger.pressure:
            strength = MODEL_FREE_STRENGTH if mode is None else MODE_STRENGTH[mode]
            self.guard.remember(before, after, UNLOADING_STRENGTH if unloading else strength)
        record = OptimizationRecord(
            sequence=self.history.next_sequence(),
            started_at=started_at,
            trigger=trigger,
            mode=mode,
            before=before,
            after=after,
            ram_freed_bytes=measured_total(report.ram_freed_bytes for report in reports),
            vram_freed_bytes=measured_total(report.vram_freed_bytes for report in reports),
            duration_seconds=duration,
            actions=tuple(reports),
            kept=kept_description(),
            notice=_notice(reports, self.release.releases_during_cleanups != releases_during),
        )
        self.history.record(record)
        logger.info(
            "optimized (%s, %s%s%s%s): freed %.2f GB in %.0f ms",
            record.cleanup_name,
            trigger.kind.value,
            f" {trigger.node_class}#{trigger.node_id}" if trigger.node_class else "",
            ", pressure " + ", ".join(level.describe() for level in trigger.pressure) if trigger.pressure else "",
            ", escalated" if record.escalated else "",
            record.freed_gib,
            duration * 1000,
        )
        signals.send_safely(signals.optimization_performed, self, record=record)
        return record

    def _run_action(
        self,
        action: Action,
        context: ActionContext,
        usage_before: tuple[int | None, int | None],
        escalation: bool = False,
    ) -> tuple[ActionReport, tuple[int | None, int | None]]:
        """Runs one action; returns its report and the usage measured after it."""
        rss_before, vram_before = usage_before
        started = time.perf_counter()
        outcome: ActionOutcome | None = None
        error_text: str | None = None
        try:
            outcome = action.run(context)
        except Exception as error:  # one failing action never stops the others; the report carries the error.
            self.action_failures.record(action.name, error)
            error_text = f"{type(error).__name__}: {error}"
        duration = time.perf_counter() - started
        usage_after = self.probe.usage()
        rss_after, vram_after = usage_after
        skipped = outcome is not None and outcome.skipped_reason is not None
        report = ActionReport(
            name=action.name,
            # An action that skipped did nothing: what moved meanwhile is not its doing, and is not reported.
            ram_freed_bytes=None if skipped else freed_between(rss_before, rss_after),
            vram_freed_bytes=None if skipped else freed_between(vram_before, vram_after),
            duration_seconds=duration,
            detail=None if outcome is None else outcome.detail,
            skipped_reason=None if outcome is None else outcome.skipped_reason,
            error=error_text,
            escalation=escalation,
        )
        return report, usage_after


def _left_to_comfyui(reports: Sequence[ActionReport]) -> bool:
    """ComfyUI's output cache was left to its own release after the node (0.33 and later, before a prompt's
    first node): the cache was not tried, so the last rung waits for the next boundary."""
    return any(r.name == COMFY_CACHE_RELEASE.name and r.skipped_reason == LEFT_TO_COMFYUI for r in reports)


def _notice(reports: Sequence[ActionReport], comfyui_released: bool) -> str | None:
    """What the panel says of a cleanup beyond its figures: that ReActor's models were unloaded under pressure,
    that ComfyUI's own release ran meanwhile (``comfyui_released``) and so is in the figure."""
    name = REACTOR_MODELS_UNDER_PRESSURE.name
    unloaded = any(r.detail is not None and r.error is None for r in reports if r.name == name)
    said = ([UNLOADED_NOTICE] if unloaded else []) + ([DURING_CLEANUP_NOTICE] if comfyui_released else [])
    return "; ".join(said) or None
