"""A stand-in for ComfyUI's ``execution`` module, small enough to read, with the real signatures.

``make_execution_module(kind)`` builds a fresh module (the hook patches module and class attributes, so each test
gets its own) whose ``execute`` has exactly the parameters of one ComfyUI generation:

- ``"sync9"``: ComfyUI 0.1 to 0.3.44, synchronous, 9 parameters;
- ``"async10"``: 0.3.45 to 0.3.67, asynchronous, adds ``pending_async_nodes``;
- ``"async11"``: 0.3.68 to 0.33 (0.8.0, 0.18.2, 0.33.0), adds ``ui_outputs``;
- ``"async12"``: after 0.33 (0.38.1), adds ``asset_manager`` last, which ``PromptExecutor.__init__`` takes after
  ``cache_type`` and ``cache_args``, as 0.38.1's does (``NoAssets`` when none is given), and passes to every call.

``PromptExecutor(by_keyword=True)`` calls ``execute`` with every argument by name, as a caller that wraps or
re-orders ComfyUI's executor may. An output cache with a ``ram_release`` method (``tests/standin_ram_cache.py``'s
``RAMPressureCache``) is released after every node as ComfyUI 0.33 does: the method is bound once as the prompt
starts, and called with the executor's ``inactive_headroom`` after each node.

It behaves as ComfyUI does where the hook can tell: ``execute`` returns ``(ExecutionResult, details, exception)``;
a cached node returns SUCCESS early without joining ``executed``; a node with a lazy input, an unfinished async
function or a subgraph expansion returns PENDING and is entered again later; a node's exception becomes FAILURE
with the exception as the third element; ``PromptExecutor.execute`` runs ``execute_async`` in a new event loop.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import sys
import types
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

KINDS = ("sync9", "async10", "async11", "async12")


class ExecutionResult(enum.Enum):
    SUCCESS = 0
    FAILURE = 1
    PENDING = 2


@dataclass
class StandInNode:
    """A node class. ``function(**inputs)`` computes its one output (sync, or async for async executors).

    Attributes:
        lazy: the first entry asks for a lazy input and returns PENDING; the next one runs the function.
        expands: the function's output comes back through a subgraph: PENDING, then resolved on re-entry.
        calls: how often the function ran.
    """

    function: Callable[..., Any]
    lazy: bool = False
    expands: bool = False
    calls: int = 0


@dataclass
class Server:
    """Records what ComfyUI would send to the browser."""

    client_id: str | None = "client"
    sent: list[tuple[str, Any]] = field(default_factory=list)

    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        self.sent.append((event, data))


class NoAssets:
    """ComfyUI's default asset manager (0.38's ``NoAssets(args)``): registers nothing."""

    def __init__(self) -> None:
        self.registered: list[Any] = []


class DynamicPrompt:
    def __init__(self, prompt: dict[str, dict[str, Any]]):
        self.original_prompt = prompt

    def get_node(self, node_id: str) -> dict[str, Any]:
        return self.original_prompt[node_id]


class Outputs:
    """``caches.outputs``: a node's output, kept while its inputs (and theirs) stay the same."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[Any, Any]] = {}
        self.signatures: dict[str, Any] = {}

    def get(self, node_id: str) -> Any:
        kept = self.values.get(node_id)
        if kept is None or kept[0] != self.signatures.get(node_id):
            return None
        return kept[1]

    def set(self, node_id: str, value: Any) -> None:
        self.values[node_id] = (self.signatures.get(node_id), value)


class Caches:
    def __init__(self) -> None:
        self.outputs = Outputs()


class ExecutionList:
    """Runs nodes in the order given (dependencies first); a PENDING node is entered again next."""

    def __init__(self, prompt: DynamicPrompt, order: list[str]):
        self.prompt = prompt
        self.queue: deque[str] = deque(order)
        self.results: dict[str, Any] = {}
        self.lazy_asked: set[str] = set()

    def inputs_for(self, node_id: str, caches: Caches) -> dict[str, Any]:
        inputs = {}
        for name, value in self.prompt.get_node(node_id)["inputs"].items():
            if isinstance(value, list):
                source = value[0]
                inputs[name] = self.results[source] if source in self.results else caches.outputs.get(source)
            else:
                inputs[name] = value
        return inputs


def _signature(prompt: dict[str, dict[str, Any]], node_id: str) -> Any:
    node = prompt[node_id]
    parts = []
    for name, value in sorted(node["inputs"].items()):
        parts.append((name, _signature(prompt, value[0]) if isinstance(value, list) else value))
    return (node["class_type"], tuple(parts))


def _failure(node_id: str, error: Exception) -> tuple[ExecutionResult, dict[str, Any], Exception]:
    return (ExecutionResult.FAILURE, {"node_id": node_id, "exception_message": str(error)}, error)


def call(execute: Callable[..., Any], arguments: list[Any], by_keyword: bool) -> Any:
    """``execute(*arguments)``, or with each argument named by ``execute``'s own parameter names."""
    if not by_keyword:
        return execute(*arguments)
    names = inspect.signature(execute).parameters
    return execute(**dict(zip(names, arguments, strict=True)))


def make_execution_module(kind: str, nodes: dict[str, StandInNode]) -> types.ModuleType:
    """A fresh ``execution`` module of the given kind, running ``nodes`` (class name to node)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    module = types.ModuleType("execution")
    module.__file__ = None  # no comfyui_version.py beside it
    module.ExecutionResult = ExecutionResult
    module.NODE_CLASS_MAPPINGS = nodes

    def cached_path(server: Server, caches: Caches, unique_id: str, execution_list: ExecutionList) -> bool:
        cached = caches.outputs.get(unique_id)
        if cached is None:
            return False
        server.send_sync("executed", {"node": unique_id, "cached": True})
        execution_list.results[unique_id] = cached
        return True

    def finish(caches: Caches, executed: set[str], execution_list: ExecutionList, unique_id: str, output: Any):
        execution_list.results[unique_id] = output
        caches.outputs.set(unique_id, output)
        executed.add(unique_id)
        return (ExecutionResult.SUCCESS, None, None)

    def execute_sync(
        server,
        dynprompt,
        caches,
        current_item,
        extra_data,
        executed,
        prompt_id,
        execution_list,
        pending_subgraph_results,
    ):
        unique_id = current_item
        node = nodes[dynprompt.get_node(unique_id)["class_type"]]
        if cached_path(server, caches, unique_id, execution_list):
            return (ExecutionResult.SUCCESS, None, None)
        try:
            if unique_id in pending_subgraph_results:
                output = pending_subgraph_results.pop(unique_id)
            else:
                server.send_sync("executing", {"node": unique_id})
                inputs = execution_list.inputs_for(unique_id, caches)
                if node.lazy and unique_id not in execution_list.lazy_asked:
                    execution_list.lazy_asked.add(unique_id)
                    return (ExecutionResult.PENDING, None, None)
                node.calls += 1
                output = node.function(**inputs)
                if node.expands:
                    pending_subgraph_results[unique_id] = output
                    return (ExecutionResult.PENDING, None, None)
        except Exception as error:
            return _failure(unique_id, error)
        return finish(caches, executed, execution_list, unique_id, output)

    async def execute_common(
        server, dynprompt, caches, unique_id, executed, execution_list, pending_subgraph_results, pending_async_nodes
    ):
        node = nodes[dynprompt.get_node(unique_id)["class_type"]]
        if cached_path(server, caches, unique_id, execution_list):
            return (ExecutionResult.SUCCESS, None, None)
        try:
            if unique_id in pending_async_nodes:
                task = pending_async_nodes.pop(unique_id)
                output = task.result()
            elif unique_id in pending_subgraph_results:
                output = pending_subgraph_results.pop(unique_id)
            else:
                server.send_sync("executing", {"node": unique_id})
                inputs = execution_list.inputs_for(unique_id, caches)
                if node.lazy and unique_id not in execution_list.lazy_asked:
                    execution_list.lazy_asked.add(unique_id)
                    return (ExecutionResult.PENDING, None, None)
                node.calls += 1
                if inspect.iscoroutinefunction(node.function):
                    task = asyncio.ensure_future(node.function(**inputs))
                    await asyncio.sleep(0)
                    if not task.done():
                        pending_async_nodes[unique_id] = task
                        return (ExecutionResult.PENDING, None, None)
                    output = task.result()
                else:
                    output = node.function(**inputs)
                if node.expands:
                    pending_subgraph_results[unique_id] = output
                    return (ExecutionResult.PENDING, None, None)
        except Exception as error:
            return _failure(unique_id, error)
        return finish(caches, executed, execution_list, unique_id, output)

    async def execute_async10(
        server,
        dynprompt,
        caches,
        current_item,
        extra_data,
        executed,
        prompt_id,
        execution_list,
        pending_subgraph_results,
        pending_async_nodes,
    ):
        return await execute_common(
            server,
            dynprompt,
            caches,
            current_item,
            executed,
            execution_list,
            pending_subgraph_results,
            pending_async_nodes,
        )

    async def execute_async11(
        server,
        dynprompt,
        caches,
        current_item,
        extra_data,
        executed,
        prompt_id,
        execution_list,
        pending_subgraph_results,
        pending_async_nodes,
        ui_outputs,
    ):
        result = await execute_common(
            server,
            dynprompt,
            caches,
            current_item,
            executed,
            execution_list,
            pending_subgraph_results,
            pending_async_nodes,
        )
        if result[0] is ExecutionResult.SUCCESS:
            ui_outputs[current_item] = {"output": execution_list.results.get(current_item)}
        return result

    async def execute_async12(
        server,
        dynprompt,
        caches,
        current_item,
        extra_data,
        executed,
        prompt_id,
        execution_list,
        pending_subgraph_results,
        pending_async_nodes,
        ui_outputs,
        asset_manager,
    ):
        result = await execute_async11(
            server,
            dynprompt,
            caches,
            current_item,
            extra_data,
            executed,
            prompt_id,
            execution_list,
            pending_subgraph_results,
            pending_async_nodes,
            ui_outputs,
        )
        if result[0] is ExecutionResult.SUCCESS and current_item in ui_outputs:
            asset_manager.registered.append((prompt_id, current_item))
        return result

    def prepare(executor, prompt, prompt_id, execute_outputs):
        executor.success = True
        dynprompt = DynamicPrompt(prompt)
        new_prompt = getattr(executor.caches.outputs, "new_prompt", None)
        if new_prompt is not None:
            new_prompt(prompt)
        for node_id in prompt:
            executor.caches.outputs.signatures[node_id] = _signature(prompt, node_id)
        return dynprompt, ExecutionList(dynprompt, list(execute_outputs)), set()

    def settle(executor, execution_list, node_id, result):
        status = result[0]
        executor.success = status != ExecutionResult.FAILURE
        if status == ExecutionResult.FAILURE:
            executor.failure = result
            return False
        if status == ExecutionResult.PENDING:
            execution_list.queue.appendleft(node_id)
        return True

    class PromptExecutor:
        # 0.38.1's order (server, cache_type=False, cache_args=None, asset_manager=None); by_keyword is the stand-in's.
        def __init__(self, server=None, cache_type=False, cache_args=None, asset_manager=None, *, by_keyword=False):
            self.server = server if server is not None else Server()
            self.cache_type = cache_type
            self.cache_args = cache_args
            self.asset_manager = asset_manager if asset_manager is not None else NoAssets()
            self.by_keyword = by_keyword
            self.inactive_headroom = 0
            self.caches = Caches()
            self.success = True
            self.failure = None
            self.ui_outputs = {}

        if kind == "sync9":

            def execute(self, prompt, prompt_id, extra_data={}, execute_outputs=[]):  # noqa: B006 - as ComfyUI's
                dynprompt, execution_list, executed = prepare(self, prompt, prompt_id, execute_outputs)
                pending_subgraph_results = {}
                while execution_list.queue:
                    node_id = execution_list.queue.popleft()
                    arguments = [
                        self.server,
                        dynprompt,
                        self.caches,
                        node_id,
                        extra_data,
                        executed,
                        prompt_id,
                        execution_list,
                        pending_subgraph_results,
                    ]
                    result = call(module.execute, arguments, self.by_keyword)
                    if not settle(self, execution_list, node_id, result):
                        break
        else:

            def execute(self, prompt, prompt_id, extra_data={}, execute_outputs=[]):  # noqa: B006 - as ComfyUI's
                asyncio.run(self.execute_async(prompt, prompt_id, extra_data, execute_outputs))

            async def execute_async(self, prompt, prompt_id, extra_data={}, execute_outputs=[]):  # noqa: B006
                release = getattr(self.caches.outputs, "ram_release", None)  # bound once, as ComfyUI 0.33 does
                state = getattr(sys.modules.get("comfy.memory_management"), "set_ram_cache_release_state", None)
                if release is not None and state is not None:
                    state(release, self.inactive_headroom)
                try:
                    await self.run_nodes(prompt, prompt_id, extra_data, execute_outputs, release)
                finally:
                    if release is not None and state is not None:
                        state(None, 0)

            async def run_nodes(self, prompt, prompt_id, extra_data, execute_outputs, release):
                dynprompt, execution_list, executed = prepare(self, prompt, prompt_id, execute_outputs)
                pending_subgraph_results = {}
                pending_async_nodes = {}
                while execution_list.queue:
                    node_id = execution_list.queue.popleft()
                    arguments = [
                        self.server,
                        dynprompt,
                        self.caches,
                        node_id,
                        extra_data,
                        executed,
                        prompt_id,
                        execution_list,
                        pending_subgraph_results,
                        pending_async_nodes,
                    ]
                    if kind in ("async11", "async12"):
                        arguments.append(self.ui_outputs)
                    if kind == "async12":
                        arguments.append(self.asset_manager)
                    if node_id in pending_async_nodes:
                        await asyncio.gather(pending_async_nodes[node_id], return_exceptions=True)
                    result = await call(module.execute, arguments, self.by_keyword)
                    if not settle(self, execution_list, node_id, result):
                        break
                    if release is not None:
                        release(self.inactive_headroom)

    module.execute = {
        "sync9": execute_sync,
        "async10": execute_async10,
        "async11": execute_async11,
        "async12": execute_async12,
    }[kind]
    module.execute.__module__ = "execution"
    module.execute.__name__ = "execute"
    module.execute.__qualname__ = "execute"
    module.PromptExecutor = PromptExecutor
    return module
