"""Prompt start and end from ComfyUI's own prompt lifecycle API, where the running ComfyUI has one.

ComfyUI 0.18 tells registered cache providers (``comfy_api.latest.Caching.CacheProvider``) when each prompt
starts and ends (``PromptExecutor._notify_prompt_lifecycle``). Where it does, the hook registers a provider that
only listens to that, instead of patching ``PromptExecutor``: it caches nothing (``should_cache`` is False, a
lookup finds nothing), so ComfyUI's results are unchanged. Older ComfyUIs have no such API and get the patch.
There is no public API that fires before and after every node with its result and exception, so the per-node hook
stays an ``execute`` wrapper on every version.

The prompt ends in ComfyUI's ``finally``: an exception that ends the prompt is the one being raised there
(``sys.exc_info()``), and the verdict is the nodes' (ComfyUI's ``PromptExecutor.success`` is the last node's).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .runs import PromptRun
from .tracker import Tracker

REGISTRY = "comfy_execution.cache_provider"
API = "comfy_api.latest._caching"


class LifecycleListener:
    """A registered cache provider that turns ComfyUI's prompt start and end into the tracker's prompt signals."""

    def __init__(
        self, tracker: Tracker, register: Callable[[Any], None], unregister: Callable[[Any], None], base: type
    ):
        self.tracker = tracker
        self.active = False
        self._register = register
        self._unregister = unregister
        self._runs: dict[Any, PromptRun] = {}
        self.provider = _provider_class(base)(self)

    def register(self) -> None:
        self.active = True
        self._register(self.provider)

    def unregister(self) -> None:
        self.active = False
        self._runs.clear()
        self._unregister(self.provider)

    def started(self, prompt_id: Any) -> None:
        if not self.active:
            return
        run = self.tracker.start_prompt(prompt_id, None)
        if run is not None:
            self._runs[prompt_id] = run

    def ended(self, prompt_id: Any) -> None:
        run = self._runs.pop(prompt_id, None)
        if run is not None and self.active:
            self.tracker.prompt_end(run, sys.exc_info()[1])


def _provider_class(base: type) -> type:
    """A subclass of ComfyUI's ``CacheProvider`` (made at install: ComfyUI's class exists only inside ComfyUI)."""

    def __init__(self: Any, listener: LifecycleListener) -> None:
        self._memhooks_listener = listener

    async def on_lookup(self: Any, context: Any) -> None:
        return None

    async def on_store(self: Any, context: Any, value: Any) -> None:
        return None

    def should_cache(self: Any, context: Any, value: Any = None) -> bool:
        return False

    def on_prompt_start(self: Any, prompt_id: str) -> None:
        self._memhooks_listener.started(prompt_id)

    def on_prompt_end(self: Any, prompt_id: str) -> None:
        self._memhooks_listener.ended(prompt_id)

    members = {
        "__doc__": "comfy_memhooks' prompt signals: listens to prompt start and end, caches nothing.",
        "__init__": __init__,
        "on_lookup": on_lookup,
        "on_store": on_store,
        "should_cache": should_cache,
        "on_prompt_start": on_prompt_start,
        "on_prompt_end": on_prompt_end,
    }
    return type("MemhooksPromptLifecycle", (base,), members)


def lifecycle_listener(execution_module: Any, tracker: Tracker) -> LifecycleListener | None:
    """A listener for the running ComfyUI's prompt lifecycle API, or ``None`` when it has none (before 0.18)."""
    executor_class = getattr(execution_module, "PromptExecutor", None)
    if not callable(getattr(executor_class, "_notify_prompt_lifecycle", None)):
        return None
    registry = sys.modules.get(REGISTRY)
    base = getattr(sys.modules.get(API), "CacheProvider", None)
    register = getattr(registry, "register_cache_provider", None)
    unregister = getattr(registry, "unregister_cache_provider", None)
    if not (isinstance(base, type) and callable(register) and callable(unregister)):
        return None
    for method in ("on_prompt_start", "on_prompt_end", "should_cache"):
        if not callable(getattr(base, method, None)):
            return None
    return LifecycleListener(tracker, register, unregister, base)
