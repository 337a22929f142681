"""The wrappers that stand in for ComfyUI's functions: they call the original with exactly the arguments they were
given, return exactly what it returned, and tell the :class:`tracker.Tracker` what each call means.

Each wrapper keeps its original's sync or async nature (``functools.wraps`` copies its name, docstring and
``__wrapped__``) and carries its :class:`Patch`, so that :func:`find_ours` finds it under other extensions' wrappers.
A node's own exception passes through unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .tracker import UNCHECKED, Tracker

_MARK = "__comfy_memhooks_patch__"
_CHAIN_LIMIT = 32


@dataclass(slots=True, eq=False)
class Patch:
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


def find_ours(function: Any) -> Patch | None:
    """Our patch in a chain of wrappers that follow ``functools.wraps`` (``__wrapped__``), if there is one.

    ``functools.wraps`` copies ``__dict__``, so a wrapper made around ours carries our mark too: the patch
    counts only where its own wrapper is the function holding the mark.
    """
    current = function
    for _ in range(_CHAIN_LIMIT):
        patch = getattr(current, _MARK, None)
        if isinstance(patch, Patch) and patch.wrapper is current:
            return patch
        current = getattr(current, "__wrapped__", None)
        if current is None:
            return None
    return None


def _marked(wrapper: Callable[..., Any], patch: Patch) -> Callable[..., Any]:
    """``wrapper``, carrying ``patch`` so that :func:`find_ours` finds it under other extensions' wrappers."""
    setattr(wrapper, _MARK, patch)
    return wrapper


def node_wrapper(patch: Patch, is_async: bool) -> Callable[..., Any]:
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


def prompt_wrapper(patch: Patch, is_async: bool, prompt_at: int) -> Callable[..., Any]:
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
