"""The built-in subscriber: frees memory around heavy nodes by the settings' rules, under pressure before any node
and during long ones, and rescues heavy nodes from OOM.

Its rules are steps of the per-node pipeline (:mod:`..pipeline`), in a fixed place among comfy_memhooks' other
steps, and it asks the one engine to optimize, so the hook's optimizations share the cooldown and the history with
the explicit node and the panel. The runtime (:mod:`.runtime`) installs it with the hook: the hook and this
subscriber together, or neither.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from .. import hook
from ..engine.core import Engine, Outcome
from ..engine.history import Trigger, TriggerKind
from ..engine.modes import Mode
from ..engine.pressure import PressureGauge
from ..engine.request import CleanupRequest, Urgency
from ..hook.runs import NodeCall
from ..hook.tracker import RetryReport
from ..pipeline import EndStep, NodeEnding, NodeInfo, NodePipeline, StartStep, hook_failures
from ..triggers.heavy import HeavyNodeIndex
from ..triggers.settings import SettingsStore, When
from ..triggers.watchdog import PressureWatchdog

logger = logging.getLogger(__name__)

_ERROR_TEXT_LIMIT = 200


class AutoOptimizer:
    """Applies the heavy-node rules before and after each heavy node, and the OOM rescue.

    Args:
        engine: the engine that optimizes and keeps cooldown and history (the runtime's).
        store: the settings, read afresh for every node, so a change applies to the next node.
        watch: start the watchdog's thread on install; tests that drive :meth:`PressureWatchdog.tick` by hand
            pass ``False``.
        pipeline: where its steps go; the runtime's; one of its own by default.
    """

    def __init__(
        self,
        engine: Engine,
        store: SettingsStore,
        *,
        watch: bool = True,
        pipeline: NodePipeline | None = None,
    ):
        self.pipeline = pipeline if pipeline is not None else NodePipeline(hook_failures)
        self.engine = engine
        self.store = store
        self.index = HeavyNodeIndex(lambda: self.store.current)
        self.gauge = PressureGauge()
        self.watchdog = PressureWatchdog(
            self.engine, lambda: self.store.current, self.gauge, running_node=hook.running_node
        )
        self.watch = watch

    def connect(self) -> None:
        """Puts the rules into the per-node pipeline, for heavy nodes only, so an ordinary node never calls them:
        before a node after the pressure check and before predictive cleanup and the profile's reading; after it
        once the profile has read what the node left (see :mod:`..pipeline`)."""
        self.pipeline.set_start(StartStep.RULES, self.before_node, heavy_only=True)
        self.pipeline.set_end(EndStep.RULES, self.after_node, heavy_only=True)

    def disconnect(self) -> None:
        self.pipeline.clear(StartStep.RULES, self.before_node)
        self.pipeline.clear(EndStep.RULES, self.after_node)

    def before_node(self, run: NodeInfo, cached: bool | None) -> Outcome | None:
        if not run.heavy or cached:
            return None
        return self.apply("before", run.node_id, run.node_class)

    def after_node(self, run: NodeInfo, ending: NodeEnding) -> Outcome | None:
        if not run.heavy or ending.cached:
            return None
        return self.apply("after", run.node_id, run.node_class)

    def apply(self, phase: str, node_id: str, node_class: str) -> Outcome | None:
        """Runs the rule's mode for ``phase`` ("before" or "after"); ``None`` when the rule asks for nothing."""
        settings = self.store.current
        if not settings.enabled:
            return None
        rule = self.index.rule_for(node_class)
        if rule is None:
            return None
        mode, when = (rule.before_mode, rule.before_when) if phase == "before" else (rule.after_mode, rule.after_when)
        if mode is Mode.MONITOR_ONLY:
            return None
        every = "every time" if when is When.ALWAYS else "at the threshold"
        reason = f"{phase} {node_class}: rule {rule.pattern!r} runs {mode.value} {every}"
        trigger = Trigger(kind=TriggerKind.HOOK, reason=reason, node_id=node_id, node_class=node_class, phase=phase)
        request = CleanupRequest(
            trigger=trigger,
            mode=mode,
            thresholds=settings.thresholds,
            urgency=Urgency.UNDER_PRESSURE if when is When.THRESHOLD else Urgency.BY_READING,
            unload_models=settings.pressure_unloads_models,  # before or after the node: none is running
        )
        outcome = self.engine.run(request)
        self.gauge.update(outcome.snapshot.ram.percent, settings.thresholds.ram_percent)
        logger.debug("%s %s #%s: %s (%s)", phase, node_class, node_id, outcome.reason, outcome.performed)
        return outcome

    def at_boundary(self, node_id: str, node_class: str) -> Outcome | None:
        """Before a node starts while the gauge reads RAM over its threshold: the model-free cleanup, and the last
        rung (unloading models) when that leaves RAM close to the limit and the settings allow it.

        A heavy node whose rule runs a mode before it is left to that rule, which is a pressure optimization
        too and may do more (``None`` then).
        """
        settings = self.store.current
        if not settings.enabled:
            return None
        rule = self.index.rule_for(node_class)
        if rule is not None and rule.before_mode is not Mode.MONITOR_ONLY:
            return None
        request = CleanupRequest.model_free(
            TriggerKind.BOUNDARY,
            settings.thresholds.ram_percent,
            node_id=node_id,
            node_class=node_class,
            unload_models=settings.pressure_unloads_models,  # in the worker thread, before the node starts
        )
        outcome = self.engine.run(request)
        if outcome is not None:
            self.gauge.update(outcome.snapshot.ram.percent, settings.thresholds.ram_percent)
        return outcome

    def rescue(self, call: NodeCall, error: BaseException) -> RetryReport | None:
        """Runs Aggressive, cooldown or not, after a heavy node ran out of memory; ``None`` when turned off.

        The history record's reason says which node failed and how; the returned report adds whether its second
        run succeeded.
        """
        settings = self.store.current
        if not (settings.enabled and settings.oom_rescue):
            return None
        failure = f"{type(error).__name__}: {error}"[:_ERROR_TEXT_LIMIT]
        reason = f"OOM rescue of {call.node_class} #{call.node_id} after {failure}"
        logger.warning("comfy_memhooks: %s; freeing memory (Aggressive) and running the node once more", reason)
        trigger = Trigger(
            kind=TriggerKind.RESCUE, reason=reason, node_id=call.node_id, node_class=call.node_class, phase="rescue"
        )
        request = CleanupRequest(
            trigger=trigger,
            mode=Mode.AGGRESSIVE,
            thresholds=replace(settings.thresholds, cooldown_seconds=0.0),
            urgency=Urgency.ROUTINE,
        )
        outcome = self.engine.run(request)
        record = outcome.record

        def report(succeeded: bool) -> None:
            ending = "the second run succeeded" if succeeded else "the second run failed too; the first failure stands"
            logger.warning("comfy_memhooks: OOM rescue of %s #%s: %s", call.node_class, call.node_id, ending)
            if record is not None:
                amended = replace(record.trigger, reason=f"{record.trigger.reason}; {ending}")
                self.engine.history.replace(replace(record, trigger=amended))

        return report
