"""The executor hook: signals before and after every node ComfyUI runs, and around every prompt.

ComfyUI's worker calls the module global ``execution.execute`` once per node, and again for the same node each
time it returned PENDING (lazy inputs, an unfinished async node, a subgraph expansion); it calls
``PromptExecutor.execute`` once per prompt. Both are replaced by wrappers that call the original with exactly the
arguments they were given and return exactly what it returned.

``execute`` changed signature three times (9 parameters and synchronous until mid-2025, then asynchronous with a
10th, then an 11th), and extensions that hard-coded it broke each time. So the wrapper takes ``*args, **kwargs``,
keeps the original's sync or async nature, and reads the few arguments it needs by the original's parameter
names, mapped to positions once at install. A ComfyUI without those names gets one warning and no hook.

Nothing here may raise into ComfyUI: our bookkeeping runs in ``try`` blocks whose failures are counted and
logged once per place, receivers run through :func:`signals.send_safely`, and a node's own exception passes
through unchanged. ComfyUI runs one prompt at a time in one worker thread; the per-prompt state relies on that.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from . import signals
from .heavy import settings_index
from .oom import is_out_of_memory
from .signals import receiver_failures

logger = logging.getLogger(__name__)

# What the hook reads from ``execute``'s arguments, by name; without these it cannot work and stays out.
NODE_PARAMETERS = ("dynprompt", "current_item", "prompt_id", "executed")
# Read when present: a node ComfyUI resumes without our having seen it start (the hook was installed or
# re-activated mid-prompt) shows up in these, and must not get a second "before". ``caches`` tells whether a
# heavy node is about to be answered from ComfyUI's cache, so no optimization runs for it.
OPTIONAL_NODE_PARAMETERS = ("pending_subgraph_results", "pending_async_nodes", "caches")
PROMPT_PARAMETERS = ("prompt_id",)
PROMPT_METHODS = ("execute", "execute_async")

_MARK = "__comfy_memhooks_patch__"
_CHAIN_LIMIT = 32
_UNCHECKED = object()
_NO_PROMPT = object()
_VERSION_PATTERN = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class HookStatus:
    """Whether the executor hook is in place, and what went wrong if not.

    Attributes:
        installed: ComfyUI's ``execution.execute`` is wrapped.
        executor: ``"async"`` or ``"sync"``, the kind of ComfyUI executor found; ``None`` when not installed.
        comfyui_version: ComfyUI's version, when it could be read.
        reason: why the hook is not installed, in words for the user.
        receiver_errors: failures contained in signal receivers since start-up.
        last_error: the latest of those, in words.
        prompt_signals: ``PromptExecutor`` is wrapped too, so prompt started/finished fire.
        hook_errors: failures of the hook's own code, contained, since start-up.
        last_hook_error: the latest of those, in words.
    """

    installed: bool
    executor: str | None
    comfyui_version: str | None
    reason: str | None
    receiver_errors: int
    last_error: str | None
    prompt_signals: bool = False
    hook_errors: int = 0
    last_hook_error: str | None = None


@dataclass(frozen=True, slots=True)
class NodeCall:
    """One node of one prompt, as an OOM rescue sees it."""

    node_id: str
    node_class: str
    prompt_id: str


RetryReport = Callable[[bool], None]
"""Told whether the node's second run succeeded."""
RescueFunction = Callable[[NodeCall, BaseException], RetryReport | None]
"""Frees memory for a heavy node that ran out of it; returns ``None`` to let the failure stand, else a report."""
HeavyTest = Callable[[str], bool]


class HookFailures:
    """The hook's own failures: counted, the last kept, each place logged once with its traceback."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        self.count = 0
        self.last_error: str | None = None

    def record(self, where: str, error: BaseException) -> None:
        with self._lock:
            self.count += 1
            self.last_error = f"{where}: {type(error).__name__}: {error}"
            first = where not in self._logged
            self._logged.add(where)
        if first:
            logger.error(
                "comfy_memhooks executor hook failed while %s; the node runs on unchanged (logged once)",
                where,
                exc_info=error,
            )


hook_failures = HookFailures()


def comfyui_version(execution_module: ModuleType | None = None) -> str | None:
    """ComfyUI's version: its loaded ``comfyui_version`` module, else the file beside ``execution.py``."""
    version = getattr(sys.modules.get("comfyui_version"), "__version__", None)
    if isinstance(version, str):
        return version
    path = getattr(execution_module, "__file__", None)
    if not isinstance(path, str):
        return None
    try:
        text = (Path(path).parent / "comfyui_version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    match = _VERSION_PATTERN.search(text)
    return match.group(1) if match else None


def parameter_positions(function: Callable[..., Any]) -> dict[str, int]:
    """Each named parameter's position; keyword-only ones get ``sys.maxsize`` (never found in ``args``).

    ``inspect.signature`` follows ``__wrapped__``, so a wrapper made with ``functools.wraps`` shows the original's
    parameters.
    """
    positions: dict[str, int] = {}
    for index, parameter in enumerate(inspect.signature(function).parameters.values()):
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            positions[parameter.name] = index
        elif parameter.kind is parameter.KEYWORD_ONLY:
            positions[parameter.name] = sys.maxsize
    return positions


def _argument(args: tuple[Any, ...], kwargs: Mapping[str, Any], position: int, name: str) -> Any:
    return args[position] if position < len(args) else kwargs[name]


class _NodeRun:
    """A node between its first entry into ``execute`` and its SUCCESS or FAILURE.

    A plain slotted class rather than a dataclass: one is made for every node ComfyUI runs.
    """

    __slots__ = (
        "entries",
        "executed",
        "heavy",
        "node_class",
        "node_id",
        "prompt_id",
        "rescue_report",
        "rescue_tried",
        "rescued",
        "started",
    )

    def __init__(self, node_id: Any, node_class: str, prompt_id: Any, heavy: bool, executed: Any):
        self.node_id = node_id
        self.node_class = node_class
        self.prompt_id = prompt_id
        self.heavy = heavy
        self.executed = executed
        self.started = time.perf_counter()
        self.entries = 0
        self.rescue_tried = False
        self.rescue_report: RetryReport | None = None
        self.rescued: bool | None = None

    def call(self) -> NodeCall:
        return NodeCall(self.node_id, self.node_class, self.prompt_id)


@dataclass(slots=True, eq=False)
class _PromptRun:
    prompt_id: Any
    executor: Any
    started: float


class _Tracker:
    """Turns ComfyUI's calls into signals: the state of the running prompt and its unfinished nodes."""

    def __init__(
        self,
        positions: Mapping[str, int],
        heavy: HeavyTest,
        rescue: RescueFunction | None,
        results: Any = None,
    ):
        self.heavy = heavy
        self.rescue = rescue
        # ComfyUI's ExecutionResult members, compared by identity on the hot path; by name when unknown.
        self._result_success = getattr(results, "SUCCESS", _UNCHECKED)
        self._result_failure = getattr(results, "FAILURE", _UNCHECKED)
        self._result_pending = getattr(results, "PENDING", _UNCHECKED)
        self._dynprompt_at = positions["dynprompt"]
        self._item_at = positions["current_item"]
        self._prompt_at = positions["prompt_id"]
        self._executed_at = positions["executed"]
        self._optional = {name: positions[name] for name in OPTIONAL_NODE_PARAMETERS if name in positions}
        self._pending_at = tuple(
            (positions[name], name) for name in ("pending_subgraph_results", "pending_async_nodes") if name in positions
        )
        self._prompt_id: Any = _NO_PROMPT
        self._open: dict[Any, _NodeRun] = {}
        self._failure: BaseException | None = None
        self._failed = False
        self._active_prompts: set[Any] = set()

    def _reset(self, prompt_id: Any) -> None:
        self._prompt_id = prompt_id
        self._open = {}
        self._failure = None
        self._failed = False

    # --- nodes -------------------------------------------------------------------------------------------

    def node_enter(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> _NodeRun | None:
        """The node's run (``entries == 1`` on its first entry), or ``None`` when this call is not tracked."""
        try:
            count = len(args)
            prompt_id = args[self._prompt_at] if self._prompt_at < count else kwargs["prompt_id"]
            node_id = args[self._item_at] if self._item_at < count else kwargs["current_item"]
            if prompt_id != self._prompt_id:
                self._reset(prompt_id)
            run = self._open.get(node_id)
            if run is None:
                for position, name in self._pending_at:
                    if node_id in (args[position] if position < count else kwargs[name]):
                        return None  # a resumed node whose start we did not see: no "before" for it
                dynprompt = args[self._dynprompt_at] if self._dynprompt_at < count else kwargs["dynprompt"]
                executed = args[self._executed_at] if self._executed_at < count else kwargs["executed"]
                node_class = dynprompt.get_node(node_id)["class_type"]
                run = _NodeRun(node_id, node_class, prompt_id, self.heavy(node_class), executed)
                self._open[node_id] = run
            run.entries += 1
            return run
        except Exception as error:  # unreadable arguments: this node runs untracked, exactly as without the hook.
            hook_failures.record("reading execute's arguments", error)
            return None

    def cache_lookup(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], run: _NodeRun) -> Any:
        """ComfyUI's cached output for a heavy node about to start (``None``: it will run); may be awaitable.

        Only heavy nodes are looked up: the answer only decides whether an optimization runs before the node.
        """
        position = self._optional.get("caches")
        if position is None:
            return _UNCHECKED
        try:
            return _argument(args, kwargs, position, "caches").outputs.get(run.node_id)
        except Exception as error:  # an unknown cache API: the node counts as not cached, and runs as usual.
            hook_failures.record("looking up ComfyUI's cache", error)
            return _UNCHECKED

    async def await_cache(self, pending: Awaitable[Any]) -> Any:
        try:
            return await pending
        except Exception as error:  # as in cache_lookup: not knowing means "not cached".
            hook_failures.record("looking up ComfyUI's cache", error)
            return _UNCHECKED

    def node_started(self, run: _NodeRun, cached_output: Any) -> None:
        everyone = signals.node_started.receivers
        heavy = run.heavy and signals.heavy_node_started.receivers
        if not (everyone or heavy):
            return
        cached: bool | None = None
        if cached_output is _UNCHECKED:
            pass
        elif inspect.isawaitable(cached_output):  # an async cache under a sync executor: unknown, not awaited
            close = getattr(cached_output, "close", None)
            if callable(close):
                close()
        else:
            cached = cached_output is not None
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
                )
        except Exception as error:  # send_safely contains receivers; this guards blinker itself.
            hook_failures.record("sending node_started", error)

    def _status(self, status: Any) -> str:
        if status is self._result_success:
            return "SUCCESS"
        if status is self._result_pending:
            return "PENDING"
        if status is self._result_failure:
            return "FAILURE"
        name: str = status.name
        return name

    def node_result(self, run: _NodeRun, result: Any) -> RetryReport | None:
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
            hook_failures.record("reading execute's result", error)
        return None

    def _ask_rescue(self, run: _NodeRun, error: BaseException) -> RetryReport | None:
        if self.rescue is None:
            return None
        run.rescue_tried = True
        try:
            return self.rescue(run.call(), error)
        except Exception as rescue_error:  # a failed rescue must not hide the node's own failure, which stands.
            hook_failures.record("preparing an OOM rescue", rescue_error)
            return None

    def retry_result(
        self, run: _NodeRun, report: RetryReport, first: Any, second: Any, raised: Exception | None
    ) -> Any:
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
            hook_failures.record("reading the rescued node's result", error)
            return first

    def node_raised(self, run: _NodeRun, error: BaseException) -> None:
        try:
            self._finish(run, None, "FAILURE", error)
        except Exception as own:  # the node's exception goes on to ComfyUI whatever happens here.
            hook_failures.record("reporting a node's exception", own)

    def _finish(
        self, run: _NodeRun, result: Any, status: str, error: BaseException | None, report: RetryReport | None = None
    ) -> None:
        self._open.pop(run.node_id, None)
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
                hook_failures.record("recording an OOM rescue", report_error)
        heavy = run.heavy and signals.heavy_node_finished.receivers
        if not (signals.node_finished.receivers or heavy):
            return
        details = {
            "node_id": run.node_id,
            "node_class": run.node_class,
            "prompt_id": run.prompt_id,
            "heavy": run.heavy,
            "result": result,
            "cached": status == "SUCCESS" and run.node_id not in run.executed,
            "duration_seconds": time.perf_counter() - run.started,
            "error": error,
            "rescued": run.rescued,
        }
        for signal in (signals.node_finished, signals.heavy_node_finished) if heavy else (signals.node_finished,):
            signals.send_safely(signal, run.node_class, **details)

    # --- prompts -----------------------------------------------------------------------------------------

    def prompt_begin(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], positions: Mapping[str, int]
    ) -> _PromptRun | None:
        """The prompt's run, or ``None`` for the inner call (``execute`` runs ``execute_async``) or on failure."""
        try:
            prompt_id = _argument(args, kwargs, positions["prompt_id"], "prompt_id")
            if prompt_id in self._active_prompts:
                return None
            self._active_prompts.add(prompt_id)
            self._reset(prompt_id)
            run = _PromptRun(prompt_id, args[0] if args else None, time.perf_counter())
            signals.send_safely(signals.prompt_started, prompt_id, prompt_id=prompt_id)
            return run
        except Exception as error:  # no prompt signals for this prompt; the prompt itself runs unchanged.
            hook_failures.record("starting a prompt", error)
            return None

    def prompt_end(self, run: _PromptRun, raised: BaseException | None) -> None:
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
            hook_failures.record("finishing a prompt", error)


@dataclass(slots=True, eq=False)
class _Patch:
    """One attribute replaced by a wrapper. A reverted patch that cannot be removed stays as a pass-through."""

    owner: Any
    name: str
    original: Callable[..., Any]
    own_attribute: bool
    tracker: _Tracker
    wrapper: Callable[..., Any] | None = None
    active: bool = True
    removed: bool = False

    def apply(self) -> None:
        setattr(self.owner, self.name, self.wrapper)

    def revert(self) -> bool:
        """Puts the original back when ours is still the outermost; else keeps ours in the chain, inert.

        Another extension that wrapped after us holds a reference to our wrapper: taking it out of the module
        would drop theirs, and putting the original back under theirs is impossible.
        """
        self.active = False
        if vars(self.owner).get(self.name) is not self.wrapper:
            return False
        if self.own_attribute:
            setattr(self.owner, self.name, self.original)
        else:
            delattr(self.owner, self.name)
        self.removed = True
        return True


def _find_ours(function: Any) -> _Patch | None:
    """Our patch in a chain of wrappers that follow ``functools.wraps`` (``__wrapped__``), if there is one.

    ``functools.wraps`` copies ``__dict__``, so a wrapper made around ours carries our mark too: the patch
    counts only where its own wrapper is the function holding the mark.
    """
    current = function
    for _ in range(_CHAIN_LIMIT):
        patch = getattr(current, _MARK, None)
        if isinstance(patch, _Patch) and patch.wrapper is current:
            return patch
        current = getattr(current, "__wrapped__", None)
        if current is None:
            return None
    return None


def _node_wrapper(patch: _Patch, is_async: bool) -> Callable[..., Any]:
    original = patch.original
    tracker = patch.tracker
    wrapper: Callable[..., Any]

    if is_async:

        @functools.wraps(original)
        async def execute_async(*args: Any, **kwargs: Any) -> Any:
            if not patch.active:
                return await original(*args, **kwargs)
            run = tracker.node_enter(args, kwargs)
            if run is not None and run.entries == 1:
                cached = _UNCHECKED
                if run.heavy:
                    cached = tracker.cache_lookup(args, kwargs, run)
                    if inspect.isawaitable(cached):
                        cached = await tracker.await_cache(cached)
                tracker.node_started(run, cached)
            try:
                result = await original(*args, **kwargs)
            except BaseException as error:
                if run is not None:
                    tracker.node_raised(run, error)
                raise
            if run is None:
                return result
            report = tracker.node_result(run, result)
            if report is None:
                return result
            try:
                second = await original(*args, **kwargs)
            except Exception as error:  # execute catches node errors itself; if a rerun raises, the failure stands.
                return tracker.retry_result(run, report, result, None, error)
            except BaseException as error:
                tracker.node_raised(run, error)
                raise
            return tracker.retry_result(run, report, result, second, None)

        wrapper = execute_async
    else:

        @functools.wraps(original)
        def execute(*args: Any, **kwargs: Any) -> Any:
            if not patch.active:
                return original(*args, **kwargs)
            run = tracker.node_enter(args, kwargs)
            if run is not None and run.entries == 1:
                tracker.node_started(run, tracker.cache_lookup(args, kwargs, run) if run.heavy else _UNCHECKED)
            try:
                result = original(*args, **kwargs)
            except BaseException as error:
                if run is not None:
                    tracker.node_raised(run, error)
                raise
            if run is None:
                return result
            report = tracker.node_result(run, result)
            if report is None:
                return result
            try:
                second = original(*args, **kwargs)
            except Exception as error:  # execute catches node errors itself; if a rerun raises, the failure stands.
                return tracker.retry_result(run, report, result, None, error)
            except BaseException as error:
                tracker.node_raised(run, error)
                raise
            return tracker.retry_result(run, report, result, second, None)

        wrapper = execute
    setattr(wrapper, _MARK, patch)
    return wrapper


def _prompt_wrapper(patch: _Patch, is_async: bool, positions: Mapping[str, int]) -> Callable[..., Any]:
    original = patch.original
    tracker = patch.tracker
    wrapper: Callable[..., Any]

    if is_async:

        @functools.wraps(original)
        async def execute_async(*args: Any, **kwargs: Any) -> Any:
            if not patch.active:
                return await original(*args, **kwargs)
            run = tracker.prompt_begin(args, kwargs, positions)
            try:
                result = await original(*args, **kwargs)
            except BaseException as error:
                if run is not None:
                    tracker.prompt_end(run, error)
                raise
            if run is not None:
                tracker.prompt_end(run, None)
            return result

        wrapper = execute_async
    else:

        @functools.wraps(original)
        def execute(*args: Any, **kwargs: Any) -> Any:
            if not patch.active:
                return original(*args, **kwargs)
            run = tracker.prompt_begin(args, kwargs, positions)
            try:
                result = original(*args, **kwargs)
            except BaseException as error:
                if run is not None:
                    tracker.prompt_end(run, error)
                raise
            if run is not None:
                tracker.prompt_end(run, None)
            return result

        wrapper = execute
    setattr(wrapper, _MARK, patch)
    return wrapper


def _nature(function: Callable[..., Any]) -> str | None:
    """``"async"`` or ``"sync"``; ``None`` when a wrapper hides an async function behind a sync one (or back)."""
    outer = inspect.iscoroutinefunction(function)
    try:
        inner = inspect.unwrap(function)
    except ValueError:  # a cycle of __wrapped__: nothing can be said about it
        return None
    if outer != inspect.iscoroutinefunction(inner):
        return None
    return "async" if outer else "sync"


@dataclass
class _Registry:
    """What :func:`install` did, for :func:`uninstall` and :func:`hook_status`."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    node_patch: _Patch | None = None
    prompt_patches: list[_Patch] = field(default_factory=list)
    executor: str | None = None
    version: str | None = None
    reason: str | None = "not installed"
    warned: set[str] = field(default_factory=set)


_registry = _Registry()


def _warn_once(message: str, *, warn: bool = True) -> None:
    if message in _registry.warned:
        return
    _registry.warned.add(message)
    if warn:
        logger.warning("comfy_memhooks: %s", message)
    else:
        logger.info("comfy_memhooks: %s", message)


def _refuse(reason: str, version: str | None, *, warn: bool) -> None:
    _registry.reason = reason
    _registry.version = version
    _warn_once(reason, warn=warn)


def note_not_installed(reason: str) -> None:
    """Records why the hook was deliberately not installed (a switch, not ComfyUI), for :func:`hook_status`."""
    with _registry.lock:
        if _registry.node_patch is None or not _registry.node_patch.active:
            _registry.reason = reason


def install(
    execution_module: ModuleType | None = None,
    *,
    heavy: HeavyTest | None = None,
    rescue: RescueFunction | None = None,
) -> Callable[[], bool] | None:
    """Wraps ComfyUI's ``execution.execute`` (and ``PromptExecutor``) so every node and prompt sends signals.

    Installing again is a no-op apart from taking the new ``heavy`` and ``rescue``; an inert wrapper of ours left
    under another extension's (see :func:`uninstall`) is switched back on instead of adding a second one.

    Args:
        execution_module: ComfyUI's ``execution`` module; by default the one this process has loaded.
        heavy: tells whether a class name is a heavy node; by default the settings' rules.
        rescue: frees memory after a heavy node's out-of-memory failure, so it can run once more.

    Returns:
        :func:`uninstall`, or ``None`` when ComfyUI was left untouched (the reason is in :func:`hook_status`).
    """
    with _registry.lock:
        module = execution_module if execution_module is not None else sys.modules.get("execution")
        if module is None:
            _refuse(
                "ComfyUI's execution module is not loaded (not running inside ComfyUI): no executor hook",
                None,
                warn=False,
            )
            return None
        version = comfyui_version(module)
        current = getattr(module, "execute", None)
        ours = _find_ours(current)
        dormant = _registry.node_patch
        if ours is None and dormant is not None and dormant.owner is module and not dormant.removed:
            # Another extension wrapped ours without ``functools.wraps``: ours cannot be seen under theirs, but
            # theirs still calls it, so switching it back on gives signals without stacking a second wrapper.
            ours = dormant
        if ours is not None:
            _reactivate(ours, module, heavy, rescue)
            return uninstall
        return _install_new(module, current, version, heavy, rescue)


def _reactivate(ours: _Patch, module: ModuleType, heavy: HeavyTest | None, rescue: RescueFunction | None) -> None:
    tracker = ours.tracker
    if heavy is not None:
        tracker.heavy = heavy
    if rescue is not None:
        tracker.rescue = rescue
    ours.active = True
    executor_class = getattr(module, "PromptExecutor", None)
    patches = []
    for name in PROMPT_METHODS:
        found = _find_ours(getattr(executor_class, name, None))
        if found is not None:
            found.active = True
        else:
            found = _prompt_patch(executor_class, name, tracker, _registry.version)
            if found is not None:
                found.apply()
        if found is not None:
            patches.append(found)
    _registry.node_patch = ours
    _registry.prompt_patches = patches
    _registry.executor = _nature(ours.original)
    _registry.reason = None


def _install_new(
    module: ModuleType,
    current: Any,
    version: str | None,
    heavy: HeavyTest | None,
    rescue: RescueFunction | None,
) -> Callable[[], bool] | None:
    named = f"ComfyUI {version or '(version unknown)'}"
    if not callable(current):
        _refuse(f"{named} has no execution.execute function: the executor hook is not installed", version, warn=True)
        return None
    try:
        positions = parameter_positions(current)
    except (TypeError, ValueError) as error:
        _refuse(f"{named}: execution.execute has no readable signature ({error}); no executor hook", version, warn=True)
        return None
    missing = [name for name in NODE_PARAMETERS if name not in positions]
    nature = _nature(current)
    if missing or nature is None:
        problem = (
            f"has no parameter named {', '.join(repr(name) for name in missing)}"
            if missing
            else "mixes a synchronous wrapper with an asynchronous function"
        )
        _refuse(
            f"{named}'s execution.execute {problem} (its parameters: {', '.join(positions) or 'none'}). "
            "The executor hook is not installed: ComfyUI runs as usual, without comfy_memhooks' node signals, "
            "automatic optimization around heavy nodes and OOM rescue. Please report this with your ComfyUI version.",
            version,
            warn=True,
        )
        return None
    if heavy is None:
        heavy = settings_index().is_heavy
    tracker = _Tracker(positions, heavy, rescue, getattr(module, "ExecutionResult", None))
    node_patch = _Patch(module, "execute", current, "execute" in vars(module), tracker)
    node_patch.wrapper = _node_wrapper(node_patch, nature == "async")
    executor_class = getattr(module, "PromptExecutor", None)
    prompt_patches = [
        patch for name in PROMPT_METHODS if (patch := _prompt_patch(executor_class, name, tracker, version)) is not None
    ]
    node_patch.apply()
    for patch in prompt_patches:
        patch.apply()
    _registry.node_patch = node_patch
    _registry.prompt_patches = prompt_patches
    _registry.executor = nature
    _registry.version = version
    _registry.reason = None
    logger.info(
        "comfy_memhooks: executor hook installed (%s, %s executor%s)",
        named,
        nature,
        "" if prompt_patches else ", without prompt signals",
    )
    return uninstall


def _prompt_patch(executor_class: Any, name: str, tracker: _Tracker, version: str | None) -> _Patch | None:
    """A patch for ``PromptExecutor.<name>``, or ``None`` when it is absent or has no ``prompt_id``."""
    method = getattr(executor_class, name, None)
    if method is None:
        return None
    nature = _nature(method) if callable(method) else None
    try:
        positions = parameter_positions(method) if nature else {}
    except (TypeError, ValueError):
        positions = {}
    if nature is None or "prompt_id" not in positions:
        _warn_once(
            f"ComfyUI {version or '(version unknown)'}'s PromptExecutor.{name} has no 'prompt_id' parameter: "
            "no prompt started/finished signals (node signals and automatic optimization still work)"
        )
        return None
    patch = _Patch(executor_class, name, method, name in vars(executor_class), tracker)
    patch.wrapper = _prompt_wrapper(patch, nature == "async", positions)
    return patch


def uninstall() -> bool:
    """Takes the hook out; ``True`` when ComfyUI's own functions are back in place, exactly as they were.

    Where another extension wrapped ``execute`` after us, its wrapper calls ours: ours then stays in the chain
    as a pass-through (no signals, no cost beyond one call) so theirs keeps working, and ``False`` is returned.
    """
    with _registry.lock:
        patches = [patch for patch in (_registry.node_patch, *_registry.prompt_patches) if patch is not None]
        restored = [patch.revert() for patch in patches]
        everything = all(restored)
        if not everything:
            logger.info(
                "comfy_memhooks: another extension wrapped ComfyUI's executor after comfy_memhooks; "
                "comfy_memhooks' wrapper stays in the chain as a pass-through so the other one keeps working"
            )
        _registry.reason = "uninstalled"
        return everything


def hook_status() -> HookStatus:
    node_patch = _registry.node_patch
    installed = node_patch is not None and node_patch.active
    return HookStatus(
        installed=installed,
        executor=_registry.executor if installed else None,
        comfyui_version=_registry.version,
        reason=None if installed else _registry.reason,
        receiver_errors=receiver_failures.count,
        last_error=receiver_failures.last_error,
        prompt_signals=installed and any(patch.active for patch in _registry.prompt_patches),
        hook_errors=hook_failures.count,
        last_hook_error=hook_failures.last_error,
    )
