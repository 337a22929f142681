"""Manual optimizations ("Optimize now"), never carried out while a node runs.

Unloading models from the web server's thread while the worker thread runs a node would pull a model from under
it. So a request is carried out at once only when no prompt runs; during a run it waits here and the worker thread
carries it out at the next node boundary, through the executor hook's signals. When the hook is missing, the host
can still say a prompt runs (``busy``); the request then waits for :meth:`ManualRequests.poll` to find ComfyUI idle.

Requests that arrive while one waits are merged into one: the strongest mode asked for runs once (two optimizations
in a row would only meet the cooldown).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .. import signals
from ..engine.core import Engine
from ..engine.history import Trigger, TriggerKind
from ..engine.modes import MODE_STRENGTH, Mode
from ..engine.request import CleanupRequest, Urgency
from ..pipeline import EndStep, NodeEnding, NodeInfo, NodePipeline, StartStep, hook_failures
from ..triggers.settings import AutoSettings
from .manual_answer import ManualAnswer, ManualState

logger = logging.getLogger(__name__)

# How long a starting prompt waits for a manual optimization already under way (it normally takes well under a
# second); past that the prompt goes on rather than hang ComfyUI's worker.
PROMPT_START_WAIT_SECONDS = 30.0
_QUEUED_REASON = "Optimize now (panel), queued during a run"


def _stronger(current: Mode | None, requested: Mode) -> Mode:
    if current is None or MODE_STRENGTH[requested] > MODE_STRENGTH[current]:
        return requested
    return current


def _never_busy() -> bool:
    return False


def _ignore(answer: ManualAnswer) -> None:
    del answer


class ManualRequests:
    """Carries out manual optimizations at a safe moment.

    Args:
        engine: the engine whose cooldown and history the requests share.
        settings: the automatic policy's current settings (cooldown, VRAM threshold).
        busy: whether the host runs a prompt, for when the hook's prompt signals are missing.
        on_done: told about every request carried out later (queued ones), from the thread that ran it.
        prompt_start_wait_seconds: see :data:`PROMPT_START_WAIT_SECONDS`.
    """

    def __init__(
        self,
        engine: Engine,
        settings: Callable[[], AutoSettings],
        *,
        busy: Callable[[], bool] = _never_busy,
        on_done: Callable[[ManualAnswer], None] = _ignore,
        prompt_start_wait_seconds: float = PROMPT_START_WAIT_SECONDS,
        pipeline: NodePipeline | None = None,
    ):
        self._pipeline = pipeline if pipeline is not None else NodePipeline(hook_failures)
        self._engine = engine
        self._settings = settings
        self._busy = busy
        self._on_done = on_done
        self._wait = prompt_start_wait_seconds
        # Held while a request runs outside a prompt: a prompt that starts meanwhile waits for it to finish.
        self._run_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._running_prompt: str | None = None
        self._pending: Mode | None = None
        self._connected = False
        self._at_boundaries = False

    @property
    def pending(self) -> Mode | None:
        """The mode waiting for the next node boundary, if any."""
        return self._pending

    @property
    def prompt_running(self) -> bool:
        return self._running_prompt is not None or self._host_busy()

    def connect(self) -> None:
        """Subscribes to the prompt signals (strongly: these receivers are bound methods).

        The node signals are listened to only while a request waits (see :meth:`_set_pending`): with none
        connected, an ordinary node's signals cost nothing.
        """
        if self._connected:
            return
        signals.prompt_started.connect(self._on_prompt_started, weak=False)
        signals.prompt_finished.connect(self._on_prompt_finished, weak=False)
        self._connected = True

    def close(self) -> None:
        signals.prompt_started.disconnect(self._on_prompt_started)
        signals.prompt_finished.disconnect(self._on_prompt_finished)
        with self._state_lock:
            self._set_pending(None)
        self._connected = False

    def _set_pending(self, mode: Mode | None) -> None:
        """Sets the waiting mode and listens to node boundaries exactly while one waits; under ``_state_lock``."""
        self._pending = mode
        listen = mode is not None
        if listen == self._at_boundaries:
            return
        if listen:
            self._pipeline.set_start(StartStep.MANUAL, self._before_node)
            self._pipeline.set_end(EndStep.MANUAL, self._after_node)
        else:
            self._pipeline.clear(StartStep.MANUAL, self._before_node)
            self._pipeline.clear(EndStep.MANUAL, self._after_node)
        self._at_boundaries = listen

    def request(self, mode: Mode) -> ManualAnswer:
        """Runs ``mode`` now when no prompt runs, else queues it; the cooldown is checked first either way.

        Call it from a thread other than the web server's event loop: an optimization takes a while.
        """
        remaining = self._engine.cooldown_remaining(self._settings().thresholds.cooldown_seconds)
        if remaining > 0:
            return ManualAnswer(
                ManualState.COOLDOWN, mode, f"cooldown: {remaining:.1f} s left", cooldown_remaining_seconds=remaining
            )
        with self._run_lock:
            with self._state_lock:
                if self._running_prompt is not None or self._host_busy():
                    queued = _stronger(self._pending, mode)
                    self._set_pending(queued)
                    return ManualAnswer(
                        ManualState.QUEUED,
                        queued,
                        "a prompt is running: this runs between two nodes, when the current one finishes",
                    )
            return self._run(mode, "Optimize now (panel)")

    def poll(self) -> ManualAnswer | None:
        """Carries out a waiting request once the host is idle; for hosts whose prompt signals are missing."""
        if self._pending is None:
            return None
        with self._run_lock:
            with self._state_lock:
                if self._running_prompt is not None or self._host_busy():
                    return None
                mode = self._pending
                self._set_pending(None)
            if mode is None:
                return None
            answer = self._run(mode, "Optimize now (panel), queued until the prompt ended")
        self._on_done(answer)
        return answer

    def _host_busy(self) -> bool:
        try:
            return bool(self._busy())
        except Exception:  # a host that cannot say counts as idle: the hook's signals still protect a run.
            logger.debug("the host's busy probe failed", exc_info=True)
            return False

    def _run(
        self,
        mode: Mode,
        reason: str,
        node_id: str | None = None,
        node_class: str | None = None,
        phase: str | None = None,
    ) -> ManualAnswer:
        settings = self._settings()
        trigger = Trigger(kind=TriggerKind.MANUAL, reason=reason, node_id=node_id, node_class=node_class, phase=phase)
        outcome = self._engine.run(
            CleanupRequest(trigger=trigger, mode=mode, thresholds=settings.thresholds, urgency=Urgency.ROUTINE)
        )
        if outcome.performed:
            return ManualAnswer(ManualState.PERFORMED, mode, outcome.reason, outcome.record)
        if outcome.cooldown_remaining_seconds is not None:
            remaining = outcome.cooldown_remaining_seconds
            return ManualAnswer(ManualState.COOLDOWN, mode, outcome.reason, cooldown_remaining_seconds=remaining)
        return ManualAnswer(ManualState.NOT_PERFORMED, mode, outcome.reason)

    def _take_pending(self) -> Mode | None:
        with self._state_lock:
            mode = self._pending
            self._set_pending(None)
            return mode

    def _carry_out_at_boundary(self, phase: str | None, node: NodeInfo | None, reason: str) -> None:
        mode = self._take_pending()
        if mode is None:
            return
        node_id = None if node is None else str(node.node_id)
        answer = self._run(mode, reason, node_id, None if node is None else node.node_class, phase)
        self._on_done(answer)

    # Receivers and steps: they run in ComfyUI's worker thread; the node steps only while a request waits.

    def _on_prompt_started(self, sender: Any, **kwargs: Any) -> None:
        acquired = self._run_lock.acquire(timeout=self._wait)
        if not acquired:
            logger.warning("a manual optimization still runs after %.0f s; the prompt starts anyway", self._wait)
        try:
            with self._state_lock:
                self._running_prompt = str(kwargs.get("prompt_id", sender))
        finally:
            if acquired:
                self._run_lock.release()

    def _on_prompt_finished(self, sender: Any, **kwargs: Any) -> None:
        with self._state_lock:
            self._running_prompt = None
        if self._pending is not None:
            # The prompt's last node is done and the worker has not taken the next one: a safe moment.
            self._carry_out_at_boundary(None, None, "Optimize now (panel), queued until the prompt ended")

    def _before_node(self, run: NodeInfo, cached: bool | None) -> None:
        """The pipeline's first step before a node, only while a request waits."""
        if self._pending is not None:
            self._carry_out_at_boundary("before", run, _QUEUED_REASON)

    def _after_node(self, run: NodeInfo, ending: NodeEnding) -> None:
        """A step after a node (once the profile has read it), only while a request waits."""
        if self._pending is not None:
            self._carry_out_at_boundary("after", run, _QUEUED_REASON)
