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

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ..comfyui_modules.process import comfyui_execution
from ..pipeline import NodePipeline, hook_failures
from ..signals import receiver_failures
from .introspect import comfyui_version, parameter_positions, sync_or_async
from .status import HookStatus
from .tracker import (
    NODE_PARAMETERS,
    BoundaryFunction,
    CachesSeen,
    HeavyTest,
    PressureFlag,
    PromptEvent,
    RescueFunction,
    Tracker,
)
from .wrappers import Patch, find_ours, node_wrapper, prompt_wrapper

logger = logging.getLogger(__name__)

PROMPT_METHODS = ("execute", "execute_async")


@dataclass
class _Registry:
    """What :func:`install` did, for :func:`uninstall` and :func:`hook_status`."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    node_patch: Patch | None = None
    prompt_patches: list[Patch] = field(default_factory=list)
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
    caches_seen: CachesSeen | None = None,
    prompt_event: PromptEvent | None = None,
    pipeline: NodePipeline | None = None,
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
        caches_seen: told ComfyUI's ``CacheSet`` once per prompt (what asks ComfyUI's cache for RAM needs it).
        prompt_event: told ComfyUI's ``PromptExecutor`` as each prompt starts and ends (what watches ComfyUI's
            own release after every node needs it).
        pipeline: comfy_memhooks' own steps around each node (the runtime's); a pipeline of the hook's own, with
            no steps, when none is given.

    Returns:
        :func:`uninstall`, or ``None`` when ComfyUI was left untouched (the reason is in :func:`hook_status`).
    """
    with _registry.lock:
        module = execution_module if execution_module is not None else comfyui_execution()
        if module is None:
            _refuse(
                "ComfyUI's execution module is not loaded (not running inside ComfyUI): no executor hook",
                None,
                logging.INFO,
            )
            return None
        version = comfyui_version(module)
        current = getattr(module, "execute", None)
        ours = find_ours(current)
        dormant = _registry.node_patch
        if ours is None and dormant is not None and dormant.owner is module and not dormant.removed:
            # Another extension wrapped ours without ``functools.wraps``: ours cannot be seen under theirs, but
            # theirs still calls it, so switching it back on gives signals without stacking a second wrapper.
            ours = dormant
        if ours is not None:
            ours.tracker.pipeline = pipeline or ours.tracker.pipeline  # before the pressure step goes into it
            _reactivate(ours, module, heavy, rescue, pressure, boundary)
            ours.tracker.caches_seen = caches_seen or ours.tracker.caches_seen
            ours.tracker.prompt_event = prompt_event or ours.tracker.prompt_event
            return uninstall
        installed = _install_new(module, current, version, heavy, rescue, pressure, boundary, pipeline)
        if installed is not None and _registry.node_patch is not None:
            tracker = _registry.node_patch.tracker
            tracker.caches_seen = caches_seen
            tracker.prompt_event = prompt_event
        return installed


def _reactivate(
    ours: Patch,
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
        patch = find_ours(getattr(executor_class, name, None))
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
    pipeline: NodePipeline | None,
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
    results = getattr(module, "ExecutionResult", None)
    tracker = Tracker(positions, heavy, rescue, hook_failures, results, pipeline or NodePipeline(hook_failures))
    if pressure is not None and boundary is not None:
        tracker.watch_pressure(pressure, boundary)
    node_patch = Patch(module, "execute", current, "execute" in vars(module), tracker)
    node_patch.wrapper = node_wrapper(node_patch, nature == "async")
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


def _prompt_patch(executor_class: Any, name: str, tracker: Tracker, version: str | None) -> Patch | None:
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
    patch = Patch(executor_class, name, method, name in vars(executor_class), tracker)
    patch.wrapper = prompt_wrapper(patch, nature == "async", positions["prompt_id"])
    return patch


def uninstall() -> bool:
    """Takes the hook out; ``True`` when ComfyUI's own functions are back in place, exactly as they were.

    Where another extension wrapped ``execute`` after us, its wrapper calls ours: ours then stays in the chain
    as a pass-through (no signals, no cost beyond one call) so theirs keeps working, and ``False`` is returned.
    """
    with _registry.lock:
        patches = [patch for patch in (_registry.node_patch, *_registry.prompt_patches) if patch is not None]
        restored = [patch.revert() for patch in patches]
        if _registry.node_patch is not None:
            _registry.node_patch.tracker.stop_watching_pressure()
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
