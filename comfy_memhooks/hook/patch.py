"""The executor hook: signals before and after every node ComfyUI runs, and around every prompt.

ComfyUI's worker calls the module global ``execution.execute`` once per node, and again for the same node each
time it returned PENDING (lazy inputs, an unfinished async node, a subgraph expansion); it calls
``PromptExecutor.execute`` once per prompt. Both are replaced by wrappers that call the original with exactly the
arguments they were given and return exactly what it returned; what each call means, and which signal it sends,
is the :class:`tracker.Tracker`'s business.

``execute`` changed signature three times (9 parameters and synchronous until mid-2025, then asynchronous with a
10th, then an 11th), and extensions that hard-coded it broke each time. So the wrapper takes ``*args, **kwargs``,
keeps the original's sync or async nature, and reads the few arguments it needs by the original's parameter
names, mapped to positions once at install (:mod:`introspect`). A ComfyUI without those names gets one warning
and no hook. A node's own exception passes through the wrapper unchanged.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ..failures import Failures
from ..signals import receiver_failures
from .introspect import comfyui_version, parameter_positions, sync_or_async
from .tracker import (
    NODE_PARAMETERS,
    UNCHECKED,
    BoundaryFunction,
    HeavyTest,
    PressureFlag,
    RescueFunction,
    Tracker,
)

logger = logging.getLogger(__name__)

PROMPT_METHODS = ("execute", "execute_async")

_MARK = "__comfy_memhooks_patch__"
_CHAIN_LIMIT = 32


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


hook_failures = Failures(logger, "executor hook failed while {kind}; the node runs on unchanged")


@dataclass(slots=True, eq=False)
class _Patch:
    """One attribute replaced by a wrapper. A reverted patch that cannot be removed stays as a pass-through."""

    owner: Any
    name: str
    original: Callable[..., Any]
    own_attribute: bool
    tracker: Tracker
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


def _marked(wrapper: Callable[..., Any], patch: _Patch) -> Callable[..., Any]:
    """``wrapper``, carrying ``patch`` so that :func:`_find_ours` finds it under other extensions' wrappers."""
    setattr(wrapper, _MARK, patch)
    return wrapper


def _node_wrapper(patch: _Patch, is_async: bool) -> Callable[..., Any]:
    original = patch.original
    tracker = patch.tracker

    if is_async:

        @functools.wraps(original)
        async def execute_async(*args: Any, **kwargs: Any) -> Any:
            if not patch.active:
                return await original(*args, **kwargs)
            run = tracker.node_enter(args, kwargs)
            if run is not None and run.entries == 1:
                cached = UNCHECKED
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

        return _marked(execute_async, patch)

    @functools.wraps(original)
    def execute(*args: Any, **kwargs: Any) -> Any:
        if not patch.active:
            return original(*args, **kwargs)
        run = tracker.node_enter(args, kwargs)
        if run is not None and run.entries == 1:
            tracker.node_started(run, tracker.cache_lookup(args, kwargs, run) if run.heavy else UNCHECKED)
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

    return _marked(execute, patch)


def _prompt_wrapper(patch: _Patch, is_async: bool, prompt_at: int) -> Callable[..., Any]:
    original = patch.original
    tracker = patch.tracker

    if is_async:

        @functools.wraps(original)
        async def execute_async(*args: Any, **kwargs: Any) -> Any:
            if not patch.active:
                return await original(*args, **kwargs)
            run = tracker.prompt_begin(args, kwargs, prompt_at)
            try:
                result = await original(*args, **kwargs)
            except BaseException as error:
                if run is not None:
                    tracker.prompt_end(run, error)
                raise
            if run is not None:
                tracker.prompt_end(run, None)
            return result

        return _marked(execute_async, patch)

    @functools.wraps(original)
    def execute(*args: Any, **kwargs: Any) -> Any:
        if not patch.active:
            return original(*args, **kwargs)
        run = tracker.prompt_begin(args, kwargs, prompt_at)
        try:
            result = original(*args, **kwargs)
        except BaseException as error:
            if run is not None:
                tracker.prompt_end(run, error)
            raise
        if run is not None:
            tracker.prompt_end(run, None)
        return result

    return _marked(execute, patch)


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


def _log_once(message: str, level: int = logging.WARNING) -> None:
    if message not in _registry.warned:
        _registry.warned.add(message)
        logger.log(level, "comfy_memhooks: %s", message)


def _refuse(reason: str, version: str | None, level: int = logging.WARNING) -> None:
    _registry.reason = reason
    _registry.version = version
    _log_once(reason, level)


def note_not_installed(reason: str) -> None:
    """Records why the hook was deliberately not installed (a switch, not ComfyUI), for :func:`hook_status`."""
    with _registry.lock:
        if _registry.node_patch is None or not _registry.node_patch.active:
            _registry.reason = reason


def install(
    execution_module: ModuleType | None = None,
    *,
    heavy: HeavyTest,
    rescue: RescueFunction | None = None,
    pressure: PressureFlag | None = None,
    boundary: BoundaryFunction | None = None,
) -> Callable[[], bool] | None:
    """Wraps ComfyUI's ``execution.execute`` (and ``PromptExecutor``) so every node and prompt sends signals.

    Installing again is a no-op apart from taking the new ``heavy``, ``rescue``, ``pressure`` and ``boundary``;
    an inert wrapper of ours left under another extension's (see :func:`uninstall`) is switched back on instead of
    adding a second one.

    Args:
        execution_module: ComfyUI's ``execution`` module; by default the one this process has loaded.
        heavy: tells whether a class name is a heavy node (the subscriber's rules).
        rescue: frees memory after a heavy node's out-of-memory failure, so it can run once more.
        pressure: its ``over`` says RAM is at or above its threshold; read before every node.
        boundary: called before a node starts while ``pressure.over`` holds, with the node's id and class.

    Returns:
        :func:`uninstall`, or ``None`` when ComfyUI was left untouched (the reason is in :func:`hook_status`).
    """
    with _registry.lock:
        module = execution_module if execution_module is not None else sys.modules.get("execution")
        if module is None:
            _refuse(
                "ComfyUI's execution module is not loaded (not running inside ComfyUI): no executor hook",
                None,
                logging.INFO,
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
            _reactivate(ours, module, heavy, rescue, pressure, boundary)
            return uninstall
        return _install_new(module, current, version, heavy, rescue, pressure, boundary)


def _reactivate(
    ours: _Patch,
    module: ModuleType,
    heavy: HeavyTest,
    rescue: RescueFunction | None,
    pressure: PressureFlag | None,
    boundary: BoundaryFunction | None,
) -> None:
    tracker = ours.tracker
    tracker.heavy = heavy
    if rescue is not None:
        tracker.rescue = rescue
    if pressure is not None and boundary is not None:
        tracker.watch_pressure(pressure, boundary)
    ours.active = True
    executor_class = getattr(module, "PromptExecutor", None)
    patches = []
    for name in PROMPT_METHODS:
        patch = _find_ours(getattr(executor_class, name, None))
        if patch is None:
            patch = _prompt_patch(executor_class, name, tracker, _registry.version)
            if patch is None:
                continue
            patch.apply()
        patch.active = True
        patches.append(patch)
    _registry.node_patch = ours
    _registry.prompt_patches = patches
    _registry.executor = sync_or_async(ours.original)
    _registry.reason = None


def _install_new(
    module: ModuleType,
    current: Any,
    version: str | None,
    heavy: HeavyTest,
    rescue: RescueFunction | None,
    pressure: PressureFlag | None,
    boundary: BoundaryFunction | None,
) -> Callable[[], bool] | None:
    named = f"ComfyUI {version or '(version unknown)'}"
    if not callable(current):
        _refuse(f"{named} has no execution.execute function: the executor hook is not installed", version)
        return None
    try:
        positions = parameter_positions(current)
    except (TypeError, ValueError) as error:
        _refuse(f"{named}: execution.execute has no readable signature ({error}); no executor hook", version)
        return None
    missing = [name for name in NODE_PARAMETERS if name not in positions]
    nature = sync_or_async(current)
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
        )
        return None
    tracker = Tracker(positions, heavy, rescue, hook_failures, getattr(module, "ExecutionResult", None))
    if pressure is not None and boundary is not None:
        tracker.watch_pressure(pressure, boundary)
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


def _prompt_patch(executor_class: Any, name: str, tracker: Tracker, version: str | None) -> _Patch | None:
    """A patch for ``PromptExecutor.<name>``, or ``None`` when it is absent or has no ``prompt_id``."""
    method = getattr(executor_class, name, None)
    if method is None:
        return None
    nature = sync_or_async(method) if callable(method) else None
    try:
        positions = parameter_positions(method) if nature else {}
    except (TypeError, ValueError):
        positions = {}
    if nature is None or "prompt_id" not in positions:
        _log_once(
            f"ComfyUI {version or '(version unknown)'}'s PromptExecutor.{name} has no 'prompt_id' parameter: "
            "no prompt started/finished signals (node signals and automatic optimization still work)"
        )
        return None
    patch = _Patch(executor_class, name, method, name in vars(executor_class), tracker)
    patch.wrapper = _prompt_wrapper(patch, nature == "async", positions["prompt_id"])
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


def running_node() -> tuple[str, str] | None:
    """The id and class of the node that started last and has not finished, while the hook is installed."""
    patch = _registry.node_patch
    run = None if patch is None or not patch.active else patch.tracker.running
    return None if run is None else (str(run.node_id), run.node_class)


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
