"""The built-in subscriber: frees memory around heavy nodes by the settings' rules, under pressure before any node
and during long ones, and rescues heavy nodes from OOM.

Its rules are steps of the per-node pipeline (:mod:`..pipeline`), in a fixed place among comfy_memhooks' other
steps, and it asks the one engine to optimize, so the hook's optimizations share the cooldown and the history with
the explicit node and the panel.
:func:`start` is what ComfyUI's start-up calls: the hook and this subscriber together, or neither.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from types import ModuleType

from .. import hook
from ..comfyui_modules.process import comfyui_execution
from ..engine.comfy_cache import remember_caches
from ..engine.comfy_release import release_watch
from ..engine.core import Engine, Outcome, get_engine
from ..engine.history import Trigger, TriggerKind
from ..engine.modes import Mode
from ..engine.pressure import PressureGauge
from ..engine.settings import SettingsStore, When, get_settings_store
from ..engine.watchdog import PressureWatchdog
from ..hook.runs import NodeCall
from ..hook.tracker import RetryReport
from ..pipeline import EndStep, NodeEnding, NodeInfo, NodePipeline, StartStep, node_pipeline
from .heavy import HeavyNodeIndex

logger = logging.getLogger(__name__)

HOOK_SWITCH = "COMFY_MEMHOOKS_HOOK"
"""Environment variable: ``off`` (or ``0``, ``false``, ``no``) starts ComfyUI without the hook."""
_OFF = frozenset({"0", "off", "false", "no"})
_ERROR_TEXT_LIMIT = 200


class AutoOptimizer:
    """Applies the heavy-node rules before and after each heavy node, and the OOM rescue.

    Args:
        engine: the engine that optimizes and keeps cooldown and history; the process's one by default.
        store: the settings, read afresh for every node, so a change applies to the next node.
        watch: start the watchdog's thread on install; tests that drive :meth:`PressureWatchdog.tick` by hand
            pass ``False``.
        pipeline: where its steps go; the process's per-node pipeline by default.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        store: SettingsStore | None = None,
        *,
        watch: bool = True,
        pipeline: NodePipeline = node_pipeline,
    ):
        self.pipeline = pipeline
        self.engine = engine if engine is not None else get_engine()
        self.store = store if store is not None else get_settings_store()
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
        outcome = self.engine.optimize(
            mode,
            Trigger(TriggerKind.HOOK, reason, node_id, node_class, phase),
            thresholds=settings.thresholds,
            only_under_pressure=when is When.THRESHOLD,
            unload_models=settings.pressure_unloads_models,  # before or after the node: none is running
        )
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
        outcome = self.engine.reclaim(
            TriggerKind.BOUNDARY,
            settings.thresholds.ram_percent,
            node_id=node_id,
            node_class=node_class,
            unload_models=settings.pressure_unloads_models,  # in the worker thread, before the node starts
        )
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
        outcome = self.engine.optimize(
            Mode.AGGRESSIVE,
            Trigger(TriggerKind.RESCUE, reason, call.node_id, call.node_class, "rescue"),
            thresholds=replace(settings.thresholds, cooldown_seconds=0.0),
            routine=True,
        )
        record = outcome.record

        def report(succeeded: bool) -> None:
            ending = "the second run succeeded" if succeeded else "the second run failed too; the first failure stands"
            logger.warning("comfy_memhooks: OOM rescue of %s #%s: %s", call.node_class, call.node_id, ending)
            if record is not None:
                amended = replace(record.trigger, reason=f"{record.trigger.reason}; {ending}")
                self.engine.history.replace(replace(record, trigger=amended))

        return report


class _Installed:
    """The running subscriber, so installing twice does not subscribe twice."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.optimizer: AutoOptimizer | None = None


_installed = _Installed()


def install(
    execution_module: ModuleType | None = None, optimizer: AutoOptimizer | None = None
) -> Callable[[], bool] | None:
    """Installs the executor hook with the built-in subscriber and its watchdog; returns :func:`uninstall`."""
    with _installed.lock:
        current = _installed.optimizer
        if current is not None:
            return _install_hook(execution_module, current) and uninstall
        optimizer = optimizer if optimizer is not None else AutoOptimizer()
        optimizer.connect()
        if _install_hook(execution_module, optimizer) is None:
            optimizer.disconnect()
            return None
        if optimizer.watch:
            optimizer.watchdog.start()
        _installed.optimizer = optimizer
        return uninstall


def _install_hook(execution_module: ModuleType | None, optimizer: AutoOptimizer) -> Callable[[], bool] | None:
    release_watch.hold = optimizer.engine.held_without_waiting
    release_watch.cleanups = optimizer.engine.history.cleanups_freed
    return hook.install(
        execution_module,
        heavy=optimizer.index.is_heavy,
        rescue=optimizer.rescue,
        pressure=optimizer.gauge,
        boundary=optimizer.at_boundary,
        caches_seen=remember_caches,
        prompt_event=release_watch.prompt_event,
    )


def running_watchdog() -> PressureWatchdog | None:
    """The installed subscriber's pressure watchdog, for the panel; ``None`` without the hook."""
    optimizer = _installed.optimizer
    return None if optimizer is None else optimizer.watchdog


def uninstall() -> bool:
    """Takes the hook and the subscriber out; ``True`` when ComfyUI's own functions are back in place."""
    with _installed.lock:
        optimizer, _installed.optimizer = _installed.optimizer, None
        if optimizer is not None:
            optimizer.watchdog.stop()
            optimizer.disconnect()
        return hook.uninstall()


def start() -> bool:
    """ComfyUI's start-up step: installs the hook and the subscriber unless switched off or outside ComfyUI.

    Returns whether the hook is in place. Never raises: a failure is logged, whatever was patched is put back,
    and ComfyUI starts as it would without comfy_memhooks' hook.
    """
    switch = os.environ.get(HOOK_SWITCH, "").strip().lower()
    if switch in _OFF:
        reason = f"turned off by {HOOK_SWITCH}={os.environ[HOOK_SWITCH]}"
        hook.note_not_installed(reason)
        logger.info("comfy_memhooks: executor hook %s", reason)
        return False
    if comfyui_execution() is None:
        hook.note_not_installed("not running inside ComfyUI (its execution module is not loaded)")
        logger.info("comfy_memhooks: not running inside ComfyUI; the executor hook is not installed")
        return False
    try:
        return install() is not None
    except Exception as error:  # start-up must go on: ComfyUI runs unchanged, without the hook.
        logger.exception("comfy_memhooks: installing the executor hook failed; ComfyUI runs without it")
        try:
            uninstall()
        except Exception:  # already logged above; nothing more can be done safely.
            logger.debug("comfy_memhooks: undoing a failed install failed too", exc_info=True)
        hook.note_not_installed(f"installing failed: {type(error).__name__}: {error}")
        return False
