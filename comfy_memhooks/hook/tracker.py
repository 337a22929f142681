"""The executor hook's bookkeeping: which signal each of ComfyUI's calls means, and when to send it.

ComfyUI calls ``execute`` once per node and again for the same node each time it returned PENDING; the tracker
keeps the running prompt's unfinished nodes so that each node gets one "started" and one "finished" signal,
and asks for an OOM rescue when a heavy node ran out of memory. It reads ``execute``'s arguments by position,
mapped from the parameters' names once at install.

Nothing here may raise into ComfyUI: the bookkeeping runs in ``try`` blocks whose failures are counted and
logged once per place, receivers run through :func:`signals.send_safely`, and a node's own exception passes
through unchanged. ComfyUI runs one prompt at a time in one worker thread; the per-prompt state relies on that.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from .. import signals
from ..failures import Failures
from ..pipeline import NodeEnding, NodePipeline, StartStep
from .oom import is_out_of_memory
from .runs import NodeCall, NodeRun, PromptRun

logger = logging.getLogger(__name__)

# What the tracker reads from ``execute``'s arguments, by name; without these the hook cannot work and stays out.
NODE_PARAMETERS = ("dynprompt", "current_item", "prompt_id", "executed")
# Read when present: a node ComfyUI resumes without our having seen it start (the hook was installed or
# re-activated mid-prompt) shows up in these, and must not get a second "before".
PENDING_PARAMETERS = ("pending_subgraph_results", "pending_async_nodes")

UNCHECKED = object()
"""The cache answer for a node that was not, or could not be, looked up: it counts as not cached."""
_NO_PROMPT = object()

RetryReport = Callable[[bool], None]
"""Told whether the node's second run succeeded."""
RescueFunction = Callable[[NodeCall, BaseException], RetryReport | None]
"""Frees memory for a heavy node that ran out of it; returns ``None`` to let the failure stand, else a report."""
HeavyTest = Callable[[str], bool]
"""Tells whether a node class is heavy: only heavy nodes get the heavy-node signals, the cache check and a rescue."""
BoundaryFunction = Callable[[str, str], object]
"""Cleans up under memory pressure before a node starts; given the node's id and class."""
CachesSeen = Callable[[Any], object]
"""Told ComfyUI's ``CacheSet`` (``execute``'s ``caches``) once per prompt, for what asks its cache for RAM."""
PromptEvent = Callable[[Any, Any, bool], object]
"""Told ``(executor, prompt_id, started)`` as each prompt starts, before ComfyUI's ``PromptExecutor`` runs any of it,
and as it ends (the executor is ``None`` when it is not known)."""


class PressureFlag(Protocol):
    """Says whether memory is under pressure, read before every node: one attribute (see ``pressure.PressureGauge``)."""

    over: bool


def _argument(args: tuple[Any, ...], kwargs: Mapping[str, Any], position: int, name: str) -> Any:
    return args[position] if position < len(args) else kwargs[name]


class Tracker:
    """Turns ComfyUI's calls into signals: the state of the running prompt and its unfinished nodes.

    Args:
        positions: ``execute``'s parameters by name, each one's position (:func:`introspect.parameter_positions`);
            must hold :data:`NODE_PARAMETERS`.
        heavy: tells whether a node class is heavy.
        rescue: frees memory after a heavy node's out-of-memory failure; ``None``: the failure stands.
        failures: where the tracker's own failures are counted.
        results: ComfyUI's ``ExecutionResult`` enum, when it has one.
        pipeline: comfy_memhooks' own steps at each node's start and end, run before the public signals (the
            runtime's; one of its own, empty, by default).
    """

    def __init__(
        self,
        positions: Mapping[str, int],
        heavy: HeavyTest,
        rescue: RescueFunction | None,
        failures: Failures,
        results: Any = None,
        pipeline: NodePipeline | None = None,
    ):
        self.heavy = heavy
        self.rescue = rescue
        self.failures = failures
        # ComfyUI's ExecutionResult members, compared by identity on the hot path; by name when unknown.
        self._result_success = getattr(results, "SUCCESS", UNCHECKED)
        self._result_failure = getattr(results, "FAILURE", UNCHECKED)
        self._result_pending = getattr(results, "PENDING", UNCHECKED)
        self._dynprompt_at = positions["dynprompt"]
        self._item_at = positions["current_item"]
        self._prompt_at = positions["prompt_id"]
        self._executed_at = positions["executed"]
        self._pending_at = tuple((positions[name], name) for name in PENDING_PARAMETERS if name in positions)
        # Read when present: a heavy node answered from ComfyUI's cache gets no optimization.
        self._caches_at = positions.get("caches")
        self.caches_seen: CachesSeen | None = None
        self.prompt_event: PromptEvent | None = None
        self._prompt_id: Any = _NO_PROMPT
        self._caches_unseen = False
        self._open: dict[Any, NodeRun] = {}
        self._failure: BaseException | None = None
        self._failed = False
        self._active_prompts: set[Any] = set()
        self.pipeline = pipeline if pipeline is not None else NodePipeline(failures)
        # The node that started last and has not finished: what the watchdog names when it cleans up mid-node.
        self.running: NodeRun | None = None
        self._unwatch_pressure: Callable[[], object] | None = None

    def watch_pressure(self, pressure: PressureFlag, boundary: BoundaryFunction) -> None:
        """Before each node, while ``pressure.over`` holds, ``boundary`` runs (in ComfyUI's worker thread): the
        pipeline's :attr:`StartStep.PRESSURE` step.

        A flag that can tell when it changes (``subscribe``, as ``PressureGauge`` does) gets the step put in while
        it is over and taken out when it is not, so without pressure a node pays nothing for the check; any other
        flag is read before every node.
        """

        def cleanup(run: NodeRun, cached: bool | None) -> None:
            boundary(str(run.node_id), run.node_class)

        def when_over(run: NodeRun, cached: bool | None) -> None:
            if pressure.over:
                boundary(str(run.node_id), run.node_class)

        def changed(over: bool) -> None:
            if over:
                self.pipeline.set_start(StartStep.PRESSURE, cleanup)
            else:
                self.pipeline.clear(StartStep.PRESSURE, cleanup)

        self.stop_watching_pressure()
        if callable(subscribe := getattr(pressure, "subscribe", None)):
            self._unwatch_pressure = subscribe(changed)
        else:
            self.pipeline.set_start(StartStep.PRESSURE, when_over)

    def stop_watching_pressure(self) -> None:
        """Takes the listener :meth:`watch_pressure` gave the gauge out, so no hook taken out leaves one behind."""
        unwatch, self._unwatch_pressure = self._unwatch_pressure, None
        if unwatch is not None:
            unwatch()
        self.pipeline.clear(StartStep.PRESSURE)

    def _reset(self, prompt_id: Any) -> None:
        self._prompt_id = prompt_id
        self._open = {}
        self._failure = None
        self._failed = False
        self._caches_unseen = self._caches_at is not None and self.caches_seen is not None

    # --- nodes -------------------------------------------------------------------------------------------

    def node_enter(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> NodeRun | None:
        """The node's run (``entries == 1`` on its first entry), or ``None`` when this call is not tracked."""
        try:
            count = len(args)
            prompt_id = args[self._prompt_at] if self._prompt_at < count else kwargs["prompt_id"]
            node_id = args[self._item_at] if self._item_at < count else kwargs["current_item"]
            if prompt_id != self._prompt_id:
                self._reset(prompt_id)
            if self._caches_unseen:  # once per prompt: ComfyUI's output cache, for the action that asks it for RAM
                self._caches_unseen = False
                self._see_caches(args, kwargs)
            run = self._open.get(node_id)
            if run is None:
                for position, name in self._pending_at:
                    if node_id in (args[position] if position < count else kwargs[name]):
                        return None  # a resumed node whose start we did not see: no "before" for it
                dynprompt = args[self._dynprompt_at] if self._dynprompt_at < count else kwargs["dynprompt"]
                executed = args[self._executed_at] if self._executed_at < count else kwargs["executed"]
                node = dynprompt.get_node(node_id)
                node_class = node["class_type"]
                run = NodeRun(node_id, node_class, prompt_id, self.heavy(node_class), executed, node.get("inputs"))
                self._open[node_id] = run
            run.entries += 1
            return run
        except Exception as error:  # unreadable arguments: this node runs untracked, exactly as without the hook.
            self.failures.record("reading execute's arguments", error)
            return None

    def _see_caches(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        seen = self.caches_seen
        if seen is not None and self._caches_at is not None:
            seen(_argument(args, kwargs, self._caches_at, "caches"))

    def cache_lookup(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], run: NodeRun) -> Any:
        """ComfyUI's cached output for a heavy node about to start (``None``: it will run); may be awaitable.

        Only heavy nodes are looked up: the answer only decides whether an optimization runs before the node.
        """
        position = self._caches_at
        if position is None:
            return UNCHECKED
        try:
            return _argument(args, kwargs, position, "caches").outputs.get(run.node_id)
        except Exception as error:  # an unknown cache API: the node counts as not cached, and runs as usual.
            self.failures.record("looking up ComfyUI's cache", error)
            return UNCHECKED

    async def await_cache(self, pending: Awaitable[Any]) -> Any:
        try:
            return await pending
        except Exception as error:  # as in cache_lookup: not knowing means "not cached".
            self.failures.record("looking up ComfyUI's cache", error)
            return UNCHECKED

    def node_started(self, run: NodeRun, cached_output: Any) -> None:
        """Runs the pipeline's start steps for ``run`` in their order, then sends the public start signals."""
        self.running = run
        cached: bool | None = None
        if cached_output is UNCHECKED:
            pass
        elif inspect.isawaitable(cached_output):  # an async cache under a sync executor: unknown, not awaited
            close = getattr(cached_output, "close", None)
            if callable(close):
                close()
        else:
            cached = cached_output is not None
        pipeline = self.pipeline
        if pipeline.heavy_start_steps if run.heavy else pipeline.start_steps:
            pipeline.run_start(run, cached)
        everyone = signals.node_started.receivers
        heavy = run.heavy and signals.heavy_node_started.receivers
        if not (everyone or heavy):
            return
        try:
            for signal in (signals.node_started, signals.heavy_node_started) if heavy else (signals.node_started,):
                signals.send_safely(
                    signal,
                    run.node_class,
                    node_id=run.node_id,
                    node_class=run.node_class,
                    prompt_id=run.prompt_id,
                    heavy=run.heavy,
                    cached=cached,
                    inputs=run.inputs,
                )
        except Exception as error:  # send_safely contains receivers; this guards blinker itself.
            self.failures.record("sending node_started", error)

    def _status(self, status: Any) -> str:
        if status is self._result_success:
            return "SUCCESS"
        if status is self._result_pending:
            return "PENDING"
        if status is self._result_failure:
            return "FAILURE"
        name: str = status.name
        return name

    def node_result(self, run: NodeRun, result: Any) -> RetryReport | None:
        """Sends node_finished when the node is done; returns a report when an OOM rescue wants a second run."""
        try:
            status = self._status(result[0])
            if status == "PENDING":
                return None
            error = result[2] if status == "FAILURE" else None
            if status == "FAILURE" and run.heavy and not run.rescue_tried and is_out_of_memory(error):
                report = self._ask_rescue(run, result[2])
                if report is not None:
                    return report
            self._finish(run, result[0], status, error)
        except Exception as error:  # an unexpected result shape: nothing is sent, ComfyUI gets the result as is.
            self._open.pop(run.node_id, None)
            self.failures.record("reading execute's result", error)
        return None

    def _ask_rescue(self, run: NodeRun, error: BaseException) -> RetryReport | None:
        if self.rescue is None:
            return None
        run.rescue_tried = True
        try:
            return self.rescue(run.call(), error)
        except Exception as rescue_error:  # a failed rescue must not hide the node's own failure, which stands.
            self.failures.record("preparing an OOM rescue", rescue_error)
            return None

    def retry_result(self, run: NodeRun, report: RetryReport, first: Any, second: Any, raised: Exception | None) -> Any:
        """What ComfyUI gets after an OOM rescue: the second run's result, or the first failure unchanged."""
        if raised is not None:
            logger.warning(
                "comfy_memhooks: the rerun of %s #%s raised %s: %s; ComfyUI gets the first failure",
                run.node_class,
                run.node_id,
                type(raised).__name__,
                raised,
            )
        try:
            status = "FAILURE" if raised is not None else self._status(second[0])
            if status == "PENDING":
                run.rescue_report = report
                return second
            succeeded = status != "FAILURE"
            chosen = second if succeeded else first
            run.rescued = succeeded
            self._finish(run, chosen[0], status if succeeded else "FAILURE", None if succeeded else first[2], report)
            return chosen
        except Exception as error:  # unreadable second result: ComfyUI gets the first failure, unchanged.
            self._open.pop(run.node_id, None)
            self.failures.record("reading the rescued node's result", error)
            return first

    def node_raised(self, run: NodeRun, error: BaseException) -> None:
        try:
            self._finish(run, None, "FAILURE", error)
        except Exception as own:  # the node's exception goes on to ComfyUI whatever happens here.
            self.failures.record("reporting a node's exception", own)

    def _finish(
        self, run: NodeRun, result: Any, status: str, error: BaseException | None, report: RetryReport | None = None
    ) -> None:
        self._open.pop(run.node_id, None)
        if self.running is run:
            self.running = None
        if status == "FAILURE":
            self._failed = True
            self._failure = error
        report = report or run.rescue_report
        if report is not None:
            run.rescue_report = None
            run.rescued = status != "FAILURE"
            try:
                report(run.rescued)
            except Exception as report_error:  # the rescue's bookkeeping only; the node's result is settled.
                self.failures.record("recording an OOM rescue", report_error)
        cached = status == "SUCCESS" and run.node_id not in run.executed
        duration = time.perf_counter() - run.started
        pipeline = self.pipeline
        if pipeline.heavy_end_steps if run.heavy else pipeline.end_steps:
            pipeline.run_end(run, NodeEnding(result, cached, duration, error, run.rescued))
        heavy = run.heavy and signals.heavy_node_finished.receivers
        if not (signals.node_finished.receivers or heavy):
            return
        details = {
            "node_id": run.node_id,
            "node_class": run.node_class,
            "prompt_id": run.prompt_id,
            "heavy": run.heavy,
            "result": result,
            "cached": cached,
            "duration_seconds": duration,
            "error": error,
            "rescued": run.rescued,
        }
        for signal in (signals.node_finished, signals.heavy_node_finished) if heavy else (signals.node_finished,):
            signals.send_safely(signal, run.node_class, **details)

    # --- prompts -----------------------------------------------------------------------------------------

    def prompt_begin(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], prompt_at: int) -> PromptRun | None:
        """The prompt's run, or ``None`` for the inner call (``execute`` runs ``execute_async``) or on failure."""
        try:
            prompt_id = _argument(args, kwargs, prompt_at, "prompt_id")
            if prompt_id in self._active_prompts:
                return None
            self._active_prompts.add(prompt_id)
            self._reset(prompt_id)
            run = PromptRun(prompt_id, args[0] if args else None, time.perf_counter())
            self._tell_prompt(run, True)
            signals.send_safely(signals.prompt_started, prompt_id, prompt_id=prompt_id)
            return run
        except Exception as error:  # no prompt signals for this prompt; the prompt itself runs unchanged.
            self.failures.record("starting a prompt", error)
            return None

    def _tell_prompt(self, run: PromptRun, started: bool) -> None:
        told = self.prompt_event
        if told is None:
            return
        try:
            told(run.executor, run.prompt_id, started)
        except Exception as error:  # only what the prompt event records is lost; the prompt runs unchanged.
            self.failures.record("telling a prompt's start" if started else "telling a prompt's end", error)

    def prompt_end(self, run: PromptRun, raised: BaseException | None) -> None:
        self._tell_prompt(run, False)
        try:
            self._active_prompts.discard(run.prompt_id)
            mine = self._prompt_id == run.prompt_id
            failed = mine and self._failed
            error = raised if raised is not None else (self._failure if mine else None)
            if mine:
                self._reset(_NO_PROMPT)
            # ComfyUI's own verdict (it also covers failures before any node ran, such as a dependency cycle).
            success = raised is None and not failed and getattr(run.executor, "success", True) is not False
            signals.send_safely(
                signals.prompt_finished,
                run.prompt_id,
                prompt_id=run.prompt_id,
                success=success,
                duration_seconds=time.perf_counter() - run.started,
                error=error,
            )
        except Exception as error:  # the prompt has finished either way; only our signal is lost.
            self.failures.record("finishing a prompt", error)
