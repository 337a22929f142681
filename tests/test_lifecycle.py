"""Prompt signals from ComfyUI 0.18's prompt lifecycle API (cache providers), with PromptExecutor left untouched.

The stand-in follows ComfyUI 0.18.2's own code (``comfy_execution/cache_provider.py``,
``comfy_api/latest/_caching.py``, ``PromptExecutor._notify_prompt_lifecycle``): providers are registered in a
module-level list, told ``on_prompt_start`` before the prompt's ``try`` and ``on_prompt_end`` in its ``finally``,
and an exception from a provider is logged by ComfyUI, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import pytest

from comfy_memhooks import hook
from comfy_memhooks.hook import patch as hook_patch
from tests.hook_support import Recorder, chain_prompt, fresh_hook_failures
from tests.standin_executor import StandInNode, make_execution_module


class CacheProvider(ABC):
    """ComfyUI 0.18.2's ``comfy_api.latest._caching.CacheProvider``."""

    @abstractmethod
    async def on_lookup(self, context: Any) -> Any: ...

    @abstractmethod
    async def on_store(self, context: Any, value: Any) -> None: ...

    def should_cache(self, context: Any, value: Any = None) -> bool:
        return True

    def on_prompt_start(self, prompt_id: str) -> None:  # noqa: B027 - a hook with a default, as in ComfyUI
        pass

    def on_prompt_end(self, prompt_id: str) -> None:  # noqa: B027
        pass


class Stop(BaseException):
    """Raised through the executor, as an interruption would be."""


@pytest.fixture(autouse=True)
def fresh_hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(hook_patch, "_registry", hook_patch._Registry())
    monkeypatch.setattr(hook_patch, "hook_failures", fresh_hook_failures())
    yield
    hook.uninstall()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recording = Recorder()
    yield recording
    recording.close()


@pytest.fixture
def providers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    registered: list[Any] = []
    registry = types.ModuleType("comfy_execution.cache_provider")

    def register_cache_provider(provider: Any) -> None:
        if provider not in registered:
            registered.append(provider)

    def unregister_cache_provider(provider: Any) -> None:
        if provider in registered:
            registered.remove(provider)

    registry.register_cache_provider = register_cache_provider  # type: ignore[attr-defined]
    registry.unregister_cache_provider = unregister_cache_provider  # type: ignore[attr-defined]
    api = types.ModuleType("comfy_api.latest._caching")
    api.CacheProvider = CacheProvider  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy_execution.cache_provider", registry)
    monkeypatch.setitem(sys.modules, "comfy_api.latest._caching", api)
    return registered


def comfyui_018(registered: list[Any]) -> types.ModuleType:
    """The asynchronous stand-in executor with 0.18's prompt lifecycle around ``execute_async``."""

    def stop(x: int) -> int:
        raise Stop

    module = make_execution_module(
        "async11",
        {"Const": StandInNode(lambda x: x), "Broken": StandInNode(lambda x: 1 / 0), "Stop": StandInNode(stop)},
    )
    base = module.PromptExecutor

    class PromptExecutor(base):  # type: ignore[misc, valid-type]
        def _notify_prompt_lifecycle(self, event: str, prompt_id: str) -> None:
            for provider in tuple(registered):
                try:
                    provider.on_prompt_start(prompt_id) if event == "start" else provider.on_prompt_end(prompt_id)
                except Exception as error:  # as ComfyUI does: logged, never raised
                    logging.getLogger("comfy").warning("Cache provider error on %s: %s", event, error)

        async def execute_async(self, prompt: Any, prompt_id: str, extra_data: Any = None, outputs: Any = ()) -> None:
            self._notify_prompt_lifecycle("start", prompt_id)
            try:
                await base.execute_async(self, prompt, prompt_id, extra_data or {}, list(outputs))
            finally:
                self._notify_prompt_lifecycle("end", prompt_id)

    module.PromptExecutor = PromptExecutor
    return module


def test_prompts_come_from_the_lifecycle_api_and_prompt_executor_is_untouched(
    providers: list[Any], recorder: Recorder
) -> None:
    module = comfyui_018(providers)
    methods = (module.PromptExecutor.execute, module.PromptExecutor.execute_async)
    assert hook.install(module, heavy=lambda name: False) is not None
    assert (module.PromptExecutor.execute, module.PromptExecutor.execute_async) == methods
    status = hook.hook_status()
    assert status.prompt_signals and status.prompt_source == "lifecycle API"
    assert len(providers) == 1 and isinstance(providers[0], CacheProvider)
    prompt, order = chain_prompt("Const", "Const", first_input=3)
    module.PromptExecutor().execute(prompt, "p-1", {}, order)
    assert recorder.names() == ["prompt_started"] + ["node_started", "node_finished"] * 2 + ["prompt_finished"]
    finished = recorder.of("prompt_finished")[0].kwargs
    assert finished["prompt_id"] == "p-1" and finished["success"] is True and finished["error"] is None


def test_the_provider_caches_nothing(providers: list[Any]) -> None:
    hook.install(comfyui_018(providers), heavy=lambda name: False)
    provider = providers[0]
    assert provider.should_cache(object()) is False and provider.should_cache(object(), object()) is False
    assert asyncio.run(provider.on_lookup(object())) is None
    assert asyncio.run(provider.on_store(object(), object())) is None


def test_a_failed_node_and_an_exception_that_ends_the_prompt_are_reported(
    providers: list[Any], recorder: Recorder
) -> None:
    module = comfyui_018(providers)
    hook.install(module, heavy=lambda name: False)
    prompt, order = chain_prompt("Const", "Broken")
    module.PromptExecutor().execute(prompt, "p-2", {}, order)
    failed = recorder.of("prompt_finished")[0].kwargs
    assert failed["success"] is False and isinstance(failed["error"], ZeroDivisionError)
    prompt, order = chain_prompt("Const", "Stop")
    with pytest.raises(Stop):
        module.PromptExecutor().execute(prompt, "p-3", {}, order)
    stopped = recorder.of("prompt_finished")[1].kwargs
    assert stopped["prompt_id"] == "p-3" and stopped["success"] is False and isinstance(stopped["error"], Stop)


def test_uninstalling_unregisters_and_installing_again_registers_once(providers: list[Any], recorder: Recorder) -> None:
    module = comfyui_018(providers)
    hook.install(module, heavy=lambda name: False)
    assert hook.uninstall() is True and providers == []
    prompt, order = chain_prompt("Const")
    module.PromptExecutor().execute(prompt, "p-4", {}, order)
    assert recorder.names() == []
    hook.install(module, heavy=lambda name: False)
    hook.install(module, heavy=lambda name: False)
    assert len(providers) == 1 and hook.hook_status().prompt_source == "lifecycle API"
    module.PromptExecutor().execute(prompt, "p-5", {}, order)
    assert recorder.names("prompt_started", "prompt_finished") == ["prompt_started", "prompt_finished"]


def test_a_refused_registration_falls_back_to_the_prompt_executor_patch(
    providers: list[Any], recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(provider: Any) -> None:
        raise RuntimeError("no more providers")

    monkeypatch.setattr(sys.modules["comfy_execution.cache_provider"], "register_cache_provider", refuse)
    module = comfyui_018(providers)
    hook.install(module, heavy=lambda name: False)
    status = hook.hook_status()
    assert status.prompt_source == "PromptExecutor patch" and status.hook_errors == 1
    assert "registering for ComfyUI's prompt lifecycle" in (status.last_hook_error or "")
    prompt, order = chain_prompt("Const")
    module.PromptExecutor().execute(prompt, "p-6", {}, order)
    assert recorder.names("prompt_started", "prompt_finished") == ["prompt_started", "prompt_finished"]


def test_without_the_lifecycle_api_prompt_executor_is_patched(recorder: Recorder) -> None:
    module = make_execution_module("async11", {"Const": StandInNode(lambda x: x)})
    hook.install(module, heavy=lambda name: False)
    assert hook.hook_status().prompt_source == "PromptExecutor patch"
    assert hasattr(module.PromptExecutor.execute_async, "__wrapped__")


def test_comfyuis_caches_are_told_once_per_prompt() -> None:
    module = make_execution_module("async11", {"Const": StandInNode(lambda x: x)})
    seen: list[Any] = []
    hook.install(module, heavy=lambda name: False, caches_seen=seen.append)
    executor = module.PromptExecutor()
    prompt, order = chain_prompt("Const", "Const", "Const")
    executor.execute(prompt, "p-7", {}, order)
    executor.execute(prompt, "p-8", {}, order)
    assert seen == [executor.caches, executor.caches]
