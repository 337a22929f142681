"""The executor hook against the stand-in executor, in all four of ComfyUI's ``execute`` generations."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from comfy_memhooks import hook, signals
from comfy_memhooks.hook import patch as hook_patch
from comfy_memhooks.hook.introspect import comfyui_version
from tests.hook_support import Recorder, chain_prompt, spy
from tests.standin_executor import (
    KINDS,
    DynamicPrompt,
    ExecutionList,
    ExecutionResult,
    NoAssets,
    Server,
    StandInNode,
    make_execution_module,
)

ASYNC_KINDS = ("async10", "async11", "async12")


def never_heavy(node_class: str) -> bool:
    return False


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recording = Recorder()
    yield recording
    recording.close()


def nodes() -> dict[str, StandInNode]:
    async def later(x: int) -> int:
        await asyncio.sleep(0.01)
        return x + 100

    return {
        "Const": StandInNode(lambda x: x),
        "Double": StandInNode(lambda x: x * 2),
        "LazyMix": StandInNode(lambda x: x + 1, lazy=True),
        "Expand": StandInNode(lambda x: x + 10, expands=True),
        "AsyncLater": StandInNode(later),
        "ReActorFaceSwap": StandInNode(lambda x: -x),
        "Broken": StandInNode(lambda x: 1 / 0),
    }


def is_heavy(node_class: str) -> bool:
    return node_class.startswith("ReActor")


def install(module: types.ModuleType) -> Any:
    undo = hook.install(module, heavy=is_heavy)
    assert undo is not None
    return undo


def count_entries(module: types.ModuleType) -> dict[str, int]:
    """Puts a counting wrapper (made with functools.wraps) under whatever is installed next."""
    original = module.execute
    counts: dict[str, int] = {}

    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def counting(*args: Any, **kwargs: Any) -> Any:
            counts[args[3]] = counts.get(args[3], 0) + 1
            return await original(*args, **kwargs)
    else:

        @functools.wraps(original)
        def counting(*args: Any, **kwargs: Any) -> Any:
            counts[args[3]] = counts.get(args[3], 0) + 1
            return original(*args, **kwargs)

    module.execute = counting
    return counts


@pytest.mark.parametrize("kind", KINDS)
def test_signals_come_in_order_with_their_arguments(kind: str, recorder: Recorder) -> None:
    module = make_execution_module(kind, nodes())
    install(module)
    prompt, order = chain_prompt("Const", "Double", "ReActorFaceSwap", first_input=3)
    executor = module.PromptExecutor()

    executor.execute(prompt, "prompt-1", {}, order)

    assert recorder.names() == ["prompt_started"] + ["node_started", "node_finished"] * 3 + ["prompt_finished"]
    assert recorder.node_trace() == [(phase, node) for node in order for phase in ("started", "finished")]
    started = recorder.of("node_started")
    assert [event.sender for event in started] == ["Const", "Double", "ReActorFaceSwap"]
    assert [event.kwargs["heavy"] for event in started] == [False, False, True]
    assert started[2].kwargs == {
        "node_id": "3",
        "node_class": "ReActorFaceSwap",
        "prompt_id": "prompt-1",
        "heavy": True,
        "cached": False,
        "inputs": {"x": ["2", 0]},  # the prompt's own inputs: a link to node 2's first output
    }
    assert started[0].kwargs["inputs"] == {"x": 3}  # a widget value
    assert started[0].kwargs["cached"] is None  # only heavy nodes are looked up in the cache
    for event in recorder.of("node_finished"):
        assert event.kwargs["result"] is ExecutionResult.SUCCESS
        assert event.kwargs["cached"] is False
        assert event.kwargs["error"] is None
        assert event.kwargs["rescued"] is None
        assert event.kwargs["duration_seconds"] >= 0
    finished = recorder.of("prompt_finished")[0]
    assert finished.sender == "prompt-1"
    assert finished.kwargs["success"] is True
    assert finished.kwargs["error"] is None
    assert finished.kwargs["duration_seconds"] >= 0
    assert executor.ui_outputs.get("3", {"output": -6})["output"] == -6


@pytest.mark.parametrize("kind", KINDS)
def test_heavy_node_signals_follow_the_general_ones_for_heavy_nodes_only(kind: str) -> None:
    module = make_execution_module(kind, nodes())
    install(module)
    recorder = Recorder(("node_started", "heavy_node_started", "node_finished", "heavy_node_finished"))
    try:
        prompt, order = chain_prompt("Const", "ReActorFaceSwap", "Double")
        module.PromptExecutor().execute(prompt, "p", {}, order)
    finally:
        recorder.close()
    assert [(event.signal, event.kwargs["node_id"]) for event in recorder.events] == [
        ("node_started", "1"),
        ("node_finished", "1"),
        ("node_started", "2"),
        ("heavy_node_started", "2"),
        ("node_finished", "2"),
        ("heavy_node_finished", "2"),
        ("node_started", "3"),
        ("node_finished", "3"),
    ]
    general, heavy = recorder.events[4].kwargs, recorder.events[5].kwargs
    assert general == heavy
    assert heavy["heavy"] is True


@pytest.mark.parametrize("kind", KINDS)
def test_pending_reentry_sends_before_and_after_once(kind: str, recorder: Recorder) -> None:
    module = make_execution_module(kind, nodes())
    entries = count_entries(module)
    install(module)
    classes = ["Const", "LazyMix", "Expand"] + (["AsyncLater"] if kind in ASYNC_KINDS else [])
    prompt, order = chain_prompt(*classes, first_input=1)
    executor = module.PromptExecutor()

    executor.execute(prompt, "p", {}, order)

    assert executor.success
    pending = [node for node in order if node != "1"]
    assert all(entries[node] == 2 for node in pending), entries  # each one was entered again after PENDING
    assert recorder.node_trace() == [(phase, node) for node in order for phase in ("started", "finished")]
    for event in recorder.of("node_finished"):
        assert event.kwargs["result"] is ExecutionResult.SUCCESS
        assert event.kwargs["cached"] is False


@pytest.mark.parametrize("kind", KINDS)
def test_cached_nodes_are_reported_as_cached(kind: str, recorder: Recorder) -> None:
    module = make_execution_module(kind, nodes())
    install(module)
    prompt, order = chain_prompt("Const", "ReActorFaceSwap", first_input=5)
    executor = module.PromptExecutor()
    executor.execute(prompt, "first", {}, order)
    recorder.events.clear()

    executor.execute(prompt, "second", {}, ["2"])  # ComfyUI enters only the cached output node

    assert recorder.names() == ["prompt_started", "node_started", "node_finished", "prompt_finished"]
    assert recorder.of("node_started")[0].kwargs["cached"] is True
    finished = recorder.of("node_finished")[0].kwargs
    assert finished["cached"] is True
    assert finished["result"] is ExecutionResult.SUCCESS


@pytest.mark.parametrize("kind", KINDS)
def test_results_pass_through_unchanged(kind: str) -> None:
    module = make_execution_module(kind, nodes())
    returned: list[Any] = []
    module.execute = spy(module.execute, returned)  # what ComfyUI's execute returned, seen from under the hook
    install(module)
    got: list[Any] = []
    # The prompt executor looks execute up per call, so a spy placed over the hook sees what ComfyUI gets.
    module.execute = spy(module.execute, got)
    prompt, order = chain_prompt("Const", "LazyMix", "Broken", first_input=2)
    module.PromptExecutor().execute(prompt, "p", {}, order)

    assert len(got) == len(returned) == 4  # Const, LazyMix twice, Broken
    assert all(mine is theirs for mine, theirs in zip(got, returned, strict=True))
    assert got[-1][0] is ExecutionResult.FAILURE
    assert isinstance(got[-1][2], ZeroDivisionError)


@pytest.mark.parametrize("kind", KINDS)
def test_an_exception_raised_by_execute_passes_through_unchanged(kind: str, recorder: Recorder) -> None:
    module = make_execution_module(kind, nodes())
    install(module)
    prompt = {"1": {"class_type": "NotRegistered", "inputs": {}}}  # execute itself raises KeyError
    executor = module.PromptExecutor()

    with pytest.raises(KeyError) as raised:
        executor.execute(prompt, "p", {}, ["1"])

    finished = recorder.of("node_finished")[0].kwargs
    assert finished["error"] is raised.value
    assert finished["result"] is None
    prompt_finished = recorder.of("prompt_finished")[0].kwargs
    assert prompt_finished["success"] is False
    assert prompt_finished["error"] is raised.value


@pytest.mark.parametrize("kind", KINDS)
def test_a_failing_node_ends_the_prompt_as_failed(kind: str, recorder: Recorder) -> None:
    module = make_execution_module(kind, nodes())
    install(module)
    prompt, order = chain_prompt("Const", "Broken", "Double")
    module.PromptExecutor().execute(prompt, "p", {}, order)

    assert recorder.node_trace() == [("started", "1"), ("finished", "1"), ("started", "2"), ("finished", "2")]
    failed = recorder.of("node_finished")[1].kwargs
    assert failed["result"] is ExecutionResult.FAILURE
    assert isinstance(failed["error"], ZeroDivisionError)
    finished = recorder.of("prompt_finished")[0].kwargs
    assert finished["success"] is False
    assert finished["error"] is failed["error"]


def test_receiver_failures_are_contained_and_logged_once(recorder: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    module = make_execution_module("async11", nodes())
    install(module)

    def broken_receiver(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("a subscriber's bug")

    failures_before = signals.receiver_failures.count
    prompt, order = chain_prompt("Const", "Double", "Double", first_input=4)
    executor = module.PromptExecutor()
    with signals.node_started.connected_to(broken_receiver), caplog.at_level(logging.ERROR):
        executor.execute(prompt, "p", {}, order)

    assert executor.success
    assert executor.ui_outputs["3"]["output"] == 16
    assert signals.receiver_failures.count == failures_before + 3
    assert "a subscriber's bug" in (signals.receiver_failures.last_error or "")
    logged = [record for record in caplog.records if "broken_receiver" in record.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
    assert recorder.names().count("node_finished") == 3  # the other receivers still got every signal


@pytest.mark.parametrize("kind", KINDS)
def test_the_hooks_own_failures_are_contained(kind: str, recorder: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    module = make_execution_module(kind, nodes())

    def broken_heavy_test(node_class: str) -> bool:
        raise RuntimeError("classifier bug")

    assert hook.install(module, heavy=broken_heavy_test) is not None
    failures_before = hook_patch.hook_failures.count
    prompt, order = chain_prompt("Const", "Double", first_input=4)
    executor = module.PromptExecutor()
    with caplog.at_level(logging.ERROR):
        executor.execute(prompt, "p", {}, order)
        executor.execute(prompt | {"1": {"class_type": "Const", "inputs": {"x": 5}}}, "q", {}, order)

    assert executor.success
    assert executor.caches.outputs.get("2") == 10
    assert hook_patch.hook_failures.count == failures_before + 4
    assert hook.hook_status().hook_errors == hook_patch.hook_failures.count
    assert len([record for record in caplog.records if "classifier bug" in str(record.exc_info)]) == 1
    assert recorder.names("node_started", "node_finished") == []  # untracked, exactly as without the hook
    assert recorder.names("prompt_started", "prompt_finished") == ["prompt_started", "prompt_finished"] * 2


@pytest.mark.parametrize("kind", KINDS)
def test_the_wrapper_keeps_the_originals_nature_and_signature(kind: str) -> None:
    module = make_execution_module(kind, nodes())
    original = module.execute
    install(module)

    assert module.execute is not original
    assert inspect.iscoroutinefunction(module.execute) == inspect.iscoroutinefunction(original)
    assert inspect.signature(module.execute) == inspect.signature(original)
    assert (
        len(inspect.signature(original).parameters) == {"sync9": 9, "async10": 10, "async11": 11, "async12": 12}[kind]
    )
    status = hook.hook_status()
    assert status.installed
    assert status.executor == ("sync" if kind == "sync9" else "async")
    assert status.prompt_signals


@pytest.mark.parametrize("kind", KINDS)
def test_arguments_are_found_by_name_when_passed_as_keywords(kind: str, recorder: Recorder) -> None:
    module = make_execution_module(kind, nodes())
    install(module)
    prompt, _ = chain_prompt("ReActorFaceSwap", first_input=7)
    executor = module.PromptExecutor()
    dynprompt = DynamicPrompt(prompt)
    arguments: dict[str, Any] = {
        "server": executor.server,
        "dynprompt": dynprompt,
        "caches": executor.caches,
        "current_item": "1",
        "extra_data": {},
        "executed": set(),
        "prompt_id": "by-name",
        "execution_list": ExecutionList(dynprompt, ["1"]),
        "pending_subgraph_results": {},
    }
    if kind in ASYNC_KINDS:
        arguments["pending_async_nodes"] = {}
    if kind in ("async11", "async12"):
        arguments["ui_outputs"] = {}
    if kind == "async12":
        arguments["asset_manager"] = executor.asset_manager
    result = module.execute(**arguments)
    if inspect.isawaitable(result):
        result = asyncio.run(result)

    assert result[0] is ExecutionResult.SUCCESS
    assert recorder.node_trace() == [("started", "1"), ("finished", "1")]
    assert recorder.of("node_started")[0].kwargs["prompt_id"] == "by-name"


def _run_by_keyword(kind: str, hooked: bool) -> tuple[Any, list[str], dict[str, Any], list[Any]]:
    """A prompt with every kind of re-entry, its executor calling ``execute`` with every argument by name."""
    module = make_execution_module(kind, nodes())
    if hooked:
        install(module)
    classes = ["Const", "LazyMix", "Expand", "Double"] + (["AsyncLater"] if kind in ASYNC_KINDS else [])
    prompt, order = chain_prompt(*classes, first_input=5)
    executor = module.PromptExecutor(by_keyword=True)
    executor.execute(prompt, "keywords", {}, order)
    outputs = {node_id: value for node_id, (_, value) in executor.caches.outputs.values.items()}
    registered = list(executor.asset_manager.registered)
    return executor.success, order, outputs, registered


@pytest.mark.parametrize("kind", KINDS)
def test_a_caller_passing_every_argument_by_keyword_gets_the_same_results(kind: str, recorder: Recorder) -> None:
    """0.38's executor takes a 12th argument, ``asset_manager``; a caller may name all twelve."""
    unhooked = _run_by_keyword(kind, hooked=False)
    assert recorder.names() == []
    hooked = _run_by_keyword(kind, hooked=True)

    assert hooked == unhooked
    success, order, outputs, registered = hooked
    assert success and outputs[order[-1]] is not None
    if kind == "async12":  # the asset manager got every node's outputs, as without the hook
        assert registered == [("keywords", node_id) for node_id in order]
    assert recorder.node_trace() == [(phase, node) for node in order for phase in ("started", "finished")]
    assert [event.kwargs["prompt_id"] for event in recorder.of("node_finished")] == ["keywords"] * len(order)


class RecordingAssets(NoAssets):
    """An asset manager of the caller's own, given to the executor by name."""


def _run_with_an_asset_manager(hooked: bool) -> tuple[Any, list[str], dict[str, Any], list[Any]]:
    """0.38.1's ``PromptExecutor(server, cache_type=False, cache_args=None, asset_manager=None)``, with the asset
    manager and the cache arguments passed by keyword, as ``main.py`` and a pack starting its own executor do."""
    module = make_execution_module("async12", nodes())
    if hooked:
        install(module)
    assets = RecordingAssets()
    prompt, order = chain_prompt("Const", "LazyMix", "Expand", "AsyncLater", "ReActorFaceSwap", first_input=3)
    executor = module.PromptExecutor(Server(), cache_type=False, cache_args={"ram": 0.0}, asset_manager=assets)
    assert executor.asset_manager is assets
    executor.execute(prompt, "assets", {}, order)
    outputs = {node_id: value for node_id, (_, value) in executor.caches.outputs.values.items()}
    return executor.success, order, outputs, list(assets.registered)


def test_an_asset_manager_passed_by_keyword_gets_every_output_with_the_hook_as_without(recorder: Recorder) -> None:
    unhooked = _run_with_an_asset_manager(hooked=False)
    assert recorder.names() == []
    hooked = _run_with_an_asset_manager(hooked=True)

    assert hooked == unhooked
    success, order, outputs, registered = hooked
    assert success and outputs[order[-1]] is not None
    assert registered == [("assets", node_id) for node_id in order]  # the caller's manager, not a default one
    assert recorder.node_trace() == [(phase, node) for node in order for phase in ("started", "finished")]
    assert [event.kwargs["prompt_id"] for event in recorder.of("node_finished")] == ["assets"] * len(order)


@pytest.mark.parametrize("kind", KINDS)
def test_install_twice_is_a_no_op_and_uninstall_restores_the_exact_originals(kind: str, recorder: Recorder) -> None:
    module = make_execution_module(kind, nodes())
    original = module.execute
    executor_class = module.PromptExecutor
    originals = {
        name: vars(executor_class)[name] for name in ("execute", "execute_async") if name in vars(executor_class)
    }
    install(module)
    wrapper = module.execute
    install(module)

    assert module.execute is wrapper
    prompt, order = chain_prompt("Const", "Double")
    executor_class().execute(prompt, "p", {}, order)
    assert recorder.names() == ["prompt_started"] + ["node_started", "node_finished"] * 2 + ["prompt_finished"]

    assert hook.uninstall() is True
    assert module.execute is original
    for name, function in originals.items():
        assert vars(executor_class)[name] is function
    assert not hook.hook_status().installed
    recorder.events.clear()
    executor_class().execute(prompt, "q", {}, order)
    assert recorder.events == []


@pytest.mark.parametrize("kind", KINDS)
def test_install_after_uninstall_works_again(kind: str, recorder: Recorder) -> None:
    module = make_execution_module(kind, nodes())
    original = module.execute
    for round_number in range(3):
        install(module)
        recorder.events.clear()
        prompt, order = chain_prompt("Const", "Double", first_input=round_number)
        module.PromptExecutor().execute(prompt, f"p{round_number}", {}, order)
        assert recorder.names() == ["prompt_started"] + ["node_started", "node_finished"] * 2 + ["prompt_finished"]
        assert hook.uninstall() is True
        assert module.execute is original


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("uses_wraps", [True, False])
def test_another_wrapper_installed_after_ours_keeps_working(kind: str, uses_wraps: bool, recorder: Recorder) -> None:
    module = make_execution_module(kind, nodes())
    original = module.execute
    install(module)
    ours = module.execute
    theirs_calls: list[str] = []

    if inspect.iscoroutinefunction(ours):

        async def theirs(*args: Any, **kwargs: Any) -> Any:
            theirs_calls.append(args[3])
            return await ours(*args, **kwargs)
    else:

        def theirs(*args: Any, **kwargs: Any) -> Any:
            theirs_calls.append(args[3])
            return ours(*args, **kwargs)

    if uses_wraps:
        theirs = functools.wraps(ours)(theirs)
    module.execute = theirs
    prompt, order = chain_prompt("Const", "Double")
    executor = module.PromptExecutor()

    executor.execute(prompt, "both", {}, order)
    assert theirs_calls == ["1", "2"]
    assert recorder.node_trace() == [("started", "1"), ("finished", "1"), ("started", "2"), ("finished", "2")]

    assert hook.uninstall() is False  # theirs holds ours: ours stays in the chain, inert
    assert module.execute is theirs
    recorder.events.clear()
    executor.execute(prompt | {"1": {"class_type": "Const", "inputs": {"x": 2}}}, "theirs-only", {}, order)
    assert theirs_calls == ["1", "2"] * 2
    assert recorder.names("node_started", "node_finished") == []
    assert executor.success

    install(module)  # switches our inert wrapper back on, or wraps theirs when it cannot be found under it
    recorder.events.clear()
    executor.execute(prompt | {"1": {"class_type": "Const", "inputs": {"x": 3}}}, "again", {}, order)
    assert recorder.node_trace() == [("started", "1"), ("finished", "1"), ("started", "2"), ("finished", "2")]
    assert theirs_calls == ["1", "2"] * 3

    if uses_wraps:
        assert module.execute is theirs  # found under theirs and reactivated, not stacked a second time
        module.execute = ours  # they uninstall
        assert hook.uninstall() is True
        assert module.execute is original


@pytest.mark.parametrize("kind", KINDS)
def test_uninstalling_ours_restores_a_wrapper_installed_before_it(kind: str) -> None:
    module = make_execution_module(kind, nodes())
    counts = count_entries(module)
    theirs = module.execute
    install(module)
    assert hook.uninstall() is True
    assert module.execute is theirs
    prompt, order = chain_prompt("Const")
    module.PromptExecutor().execute(prompt, "p", {}, order)
    assert counts == {"1": 1}


def test_an_unknown_signature_gets_one_warning_naming_the_version(
    tmp_path: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "comfyui_version", raising=False)
    (tmp_path / "comfyui_version.py").write_text('__version__ = "9.9.9"\n')
    module = types.ModuleType("execution")
    module.__file__ = str(tmp_path / "execution.py")

    async def execute(server, prompt, node, context):  # a future ComfyUI, renamed everything
        return ("ok",)

    module.execute = execute
    with caplog.at_level(logging.WARNING):
        assert hook.install(module, heavy=never_heavy) is None
        assert hook.install(module, heavy=never_heavy) is None

    assert module.execute is execute
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "ComfyUI 9.9.9" in warnings[0]
    assert "'dynprompt'" in warnings[0]
    assert "not installed" in warnings[0]
    status = hook.hook_status()
    assert not status.installed
    assert status.comfyui_version == "9.9.9"
    assert "9.9.9" in (status.reason or "")
    assert asyncio.run(module.execute(None, None, None, None)) == ("ok",)


def test_a_sync_wrapper_hiding_an_async_execute_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    module = make_execution_module("async11", nodes())
    original = module.execute

    @functools.wraps(original)
    def sync_over_async(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **kwargs)

    module.execute = sync_over_async
    with caplog.at_level(logging.WARNING):
        assert hook.install(module, heavy=never_heavy) is None
    assert module.execute is sync_over_async
    assert "synchronous wrapper" in caplog.text


def test_the_version_comes_from_comfyuis_loaded_version_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "comfyui_version", types.SimpleNamespace(__version__="0.8.0"))
    module = make_execution_module("async11", nodes())
    install(module)
    assert hook.hook_status().comfyui_version == "0.8.0"
    assert comfyui_version(module) == "0.8.0"


def test_outside_comfyui_nothing_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "execution", raising=False)
    assert hook.install(heavy=never_heavy) is None
    status = hook.hook_status()
    assert not status.installed
    assert "not running inside ComfyUI" in (status.reason or "")


def test_a_prompt_executor_without_prompt_id_only_loses_the_prompt_signals(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    module = make_execution_module("sync9", nodes())
    standard = module.PromptExecutor.execute

    def execute(self: Any, prompt: Any, number: Any, extra_data: Any = None, outputs: Any = ()) -> None:
        standard(self, prompt, number, extra_data or {}, list(outputs))

    module.PromptExecutor.execute = execute
    with caplog.at_level(logging.WARNING):
        install(module)
    assert "no 'prompt_id' parameter" in caplog.text
    assert not hook.hook_status().prompt_signals
    prompt, order = chain_prompt("Const")
    module.PromptExecutor().execute(prompt, "p", {}, order)
    assert recorder.names() == ["node_started", "node_finished"]
