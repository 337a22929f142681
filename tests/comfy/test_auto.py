"""The built-in subscriber and the OOM rescue, through the hook, against the stand-in executor."""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from comfy_memhooks import hook
from comfy_memhooks.comfy import bootstrap
from comfy_memhooks.comfy.runtime import Runtime, current_runtime, use_runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import Trigger, TriggerKind
from comfy_memhooks.engine.modes import Mode
from comfy_memhooks.engine.pressure import Thresholds
from comfy_memhooks.engine.request import CleanupRequest, Urgency
from comfy_memhooks.hook.oom import is_out_of_memory
from comfy_memhooks.pipeline import StartStep
from comfy_memhooks.triggers.settings import SettingsStore
from tests.hook_support import FakeProbe, Recorder, chain_prompt, spy
from tests.standin_executor import KINDS, ExecutionResult, StandInNode, make_execution_module


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Setup:
    """A stand-in ComfyUI with the subscriber installed on a fake-probed engine and a settings file in tmp."""

    def __init__(
        self,
        tmp_path: Path,
        kind: str,
        nodes: dict[str, StandInNode],
        returned: list[Any] | None = None,
        **settings_json: Any,
    ):
        self.probe = FakeProbe(ram_percent=50.0)
        self.clock = Clock()
        self.engine = Engine(probe=self.probe, clock=self.clock)
        self.store = SettingsStore(tmp_path / "comfy_memhooks.json")
        self.store.load()
        if settings_json:
            self.store.update(settings_json)
        self.module = make_execution_module(kind, nodes)
        if returned is not None:  # what ComfyUI's own execute returned, seen from under the hook
            self.module.execute = spy(self.module.execute, returned)
        self.runtime = Runtime(engine=self.engine, settings=self.store, watch=False)
        use_runtime(self.runtime)
        self.optimizer = self.runtime.optimizer
        assert self.runtime.install_hook(self.module) is not None
        self.executor = self.module.PromptExecutor()
        self.runs = 0

    def run(self, *classes: str, first_input: Any = 1) -> None:
        self.runs += 1
        prompt, order = chain_prompt(*classes, first_input=first_input)
        self.executor.execute(prompt, f"prompt-{self.runs}", {}, order)

    def records(self) -> list[Any]:
        return list(reversed(self.engine.history.records()))  # oldest first

    def phases(self) -> list[tuple[str | None, str | None, Mode]]:
        return [(record.trigger.node_class, record.trigger.phase, record.mode) for record in self.records()]


def fails_once(error: Callable[[], BaseException], value: Callable[[Any], Any]) -> StandInNode:
    """A node whose first run raises ``error()`` and whose later runs return ``value(x)``."""
    state = {"failed": False}

    def function(x: Any) -> Any:
        if not state["failed"]:
            state["failed"] = True
            raise error()
        return value(x)

    return StandInNode(function)


def count_frames(x: list[Any]) -> int:
    return len(x)


def basic_nodes(**extra: StandInNode) -> dict[str, StandInNode]:
    return {
        "Const": StandInNode(lambda x: x),
        "Double": StandInNode(lambda x: x * 2),
        "ReActorFaceSwap": StandInNode(lambda x: -x),
        "VHS_LoadVideo": StandInNode(lambda x: [x] * 3),
        "VHS_VideoCombine": StandInNode(count_frames),
        **extra,
    }


def test_defaults_follow_the_patterns_users_wire_by_hand(tmp_path: Path) -> None:
    setup = Setup(tmp_path, "async11", basic_nodes(), cooldown_seconds=0)
    setup.probe.ram_percent = 90.0  # over the 80% threshold: the "before" rules run too

    setup.run("Const", "ReActorFaceSwap", "VHS_LoadVideo", "VHS_VideoCombine")

    # Under pressure each stronger mode runs; the fake RAM never drops, so after Aggressive freed nothing the
    # effectiveness guard holds back the weaker Balanced after VHS_VideoCombine.
    assert setup.phases() == [
        ("ReActorFaceSwap", "before", Mode.CONSERVATIVE),
        ("ReActorFaceSwap", "after", Mode.BALANCED),
        ("VHS_LoadVideo", "before", Mode.AGGRESSIVE),
    ]
    first = setup.records()[0]
    assert first.trigger.kind is TriggerKind.HOOK
    assert first.trigger.node_id == "2"
    assert first.trigger.reason == "before ReActorFaceSwap: rule 'ReActor*' runs Conservative at the threshold"
    assert [level.describe() for level in first.trigger.pressure] == ["RAM 90% >= 80%"]
    held = setup.engine.last_held_back
    assert held is not None and held.trigger.node_class == "VHS_VideoCombine"
    assert held.reason.startswith("nothing new to free since ")
    assert setup.executor.success


def test_with_room_to_free_every_rule_runs_under_pressure(tmp_path: Path) -> None:
    # Without the last rung: its readings would take the scripted usage to its 99% cap, where nothing grows more.
    setup = Setup(tmp_path, "async11", basic_nodes(), cooldown_seconds=30, pressure_unloads_models=False)
    setup.probe.ram_percent = 81.0
    setup.probe.grow_percent_per_snapshot = 1.5  # usage keeps arriving: the guard never holds back

    setup.run("Const", "ReActorFaceSwap", "VHS_LoadVideo", "VHS_VideoCombine")

    assert setup.phases() == [
        ("ReActorFaceSwap", "before", Mode.CONSERVATIVE),
        ("ReActorFaceSwap", "after", Mode.BALANCED),
        ("VHS_LoadVideo", "before", Mode.AGGRESSIVE),
        ("VHS_VideoCombine", None, None),  # its rule runs nothing before it: the model-free boundary cleanup
        ("VHS_VideoCombine", "after", Mode.BALANCED),
    ]
    assert setup.records()[3].trigger.kind is TriggerKind.BOUNDARY
    assert setup.engine.last_held_back is None  # nor did the 30 s cooldown: each one was a pressure cleanup


@pytest.mark.parametrize("kind", KINDS)
def test_under_the_threshold_only_the_always_rules_run(tmp_path: Path, kind: str) -> None:
    setup = Setup(tmp_path, kind, basic_nodes(), cooldown_seconds=0)
    setup.probe.ram_percent = 40.0

    setup.run("Const", "ReActorFaceSwap", "Double")

    assert setup.phases() == [("ReActorFaceSwap", "after", Mode.BALANCED)]
    record = setup.records()[0]
    assert record.trigger.kind is TriggerKind.HOOK
    assert record.trigger.node_id == "2"
    assert "every time" in record.trigger.reason


def test_ordinary_nodes_cost_no_optimization_and_no_reading(tmp_path: Path) -> None:
    setup = Setup(tmp_path, "async11", basic_nodes(), cooldown_seconds=0)
    setup.probe.ram_percent = 99.0

    setup.run("Const", "Double", "Double")

    assert setup.records() == []
    assert setup.probe.snapshots == 0


def test_the_cooldown_is_shared_with_the_engine_and_holds_routine_cleanups(tmp_path: Path) -> None:
    setup = Setup(tmp_path, "async11", basic_nodes(), cooldown_seconds=30)
    setup.probe.ram_percent = 50.0  # under the thresholds: the "after" rule is routine

    setup.engine.run(
        CleanupRequest(
            trigger=Trigger(kind=TriggerKind.MANUAL, reason="panel"),
            mode=Mode.CONSERVATIVE,
            thresholds=Thresholds(cooldown_seconds=30),
            urgency=Urgency.ROUTINE,
        )
    )
    setup.run("Const", "ReActorFaceSwap")
    assert setup.phases() == [(None, None, Mode.CONSERVATIVE)]  # "after" held by the panel's cooldown

    setup.clock.now += 31
    setup.run("Const", "ReActorFaceSwap", first_input=2)
    assert setup.phases()[1:] == [("ReActorFaceSwap", "after", Mode.BALANCED)]
    assert setup.engine.cooldown_remaining(30) == 30


def test_pressure_is_never_held_back_by_the_cooldown(tmp_path: Path) -> None:
    setup = Setup(tmp_path, "async11", basic_nodes(), cooldown_seconds=30)
    setup.probe.ram_percent = 50.0
    setup.run("Const", "ReActorFaceSwap")  # a routine cleanup after it starts the cooldown
    assert setup.engine.cooldown_remaining(30) == 30

    setup.probe.ram_percent = 90.0
    setup.run("Const", "ReActorFaceSwap", first_input=2)

    assert setup.phases()[1:] == [
        ("ReActorFaceSwap", "before", Mode.CONSERVATIVE),
        ("ReActorFaceSwap", "after", Mode.BALANCED),
    ]
    assert all(record.trigger.pressure for record in setup.records()[1:])


def test_user_rules_set_patterns_modes_and_when(tmp_path: Path) -> None:
    rules = [
        {"pattern": "Dou*", "before_mode": "Balanced", "before_when": "always", "after_mode": "Monitor Only"},
        {"pattern": "ReActor*", "before_mode": "Monitor Only", "after_mode": "Aggressive", "after_when": "threshold"},
    ]
    setup = Setup(tmp_path, "sync9", basic_nodes(), cooldown_seconds=0, rules=rules, ram_threshold=95)
    setup.probe.ram_percent = 90.0

    setup.run("Const", "Double", "ReActorFaceSwap")
    assert setup.phases() == [("Double", "before", Mode.BALANCED)]

    setup.probe.ram_percent = 96.0
    setup.run("Const", "ReActorFaceSwap", first_input=5)
    assert setup.phases()[1:] == [("ReActorFaceSwap", "after", Mode.AGGRESSIVE)]


@pytest.mark.parametrize("kind", KINDS)
def test_cached_heavy_nodes_trigger_nothing(tmp_path: Path, kind: str) -> None:
    setup = Setup(tmp_path, kind, basic_nodes(), cooldown_seconds=0)
    setup.probe.ram_percent = 90.0
    prompt, order = chain_prompt("Const", "ReActorFaceSwap")
    setup.executor.execute(prompt, "first", {}, order)
    assert len(setup.records()) == 2

    setup.executor.execute(prompt, "second", {}, ["2"])

    assert len(setup.records()) == 2


def test_turned_off_the_signals_still_fire_but_nothing_is_freed(tmp_path: Path) -> None:
    setup = Setup(tmp_path, "async11", basic_nodes(), cooldown_seconds=0, enabled=False)
    setup.probe.ram_percent = 99.0
    recorder = Recorder()
    try:
        setup.run("Const", "ReActorFaceSwap")
    finally:
        recorder.close()
    assert recorder.names("node_started") == ["node_started"] * 2
    assert setup.records() == []


def test_a_settings_change_applies_to_the_next_node(tmp_path: Path) -> None:
    setup = Setup(tmp_path, "async11", basic_nodes(), cooldown_seconds=0)
    setup.run("Const", "Double")
    assert setup.records() == []

    setup.store.update({"rules": [{"pattern": "Double", "after_mode": "Conservative", "after_when": "always"}]})
    setup.run("Const", "Double", first_input=2)

    assert setup.phases() == [("Double", "after", Mode.CONSERVATIVE)]


@pytest.mark.parametrize("kind", KINDS)
def test_install_twice_subscribes_once(tmp_path: Path, kind: str) -> None:
    setup = Setup(tmp_path, kind, basic_nodes(), cooldown_seconds=0)
    assert setup.runtime.install_hook(setup.module) is not None
    setup.run("Const", "ReActorFaceSwap")
    assert setup.phases() == [("ReActorFaceSwap", "after", Mode.BALANCED)]

    assert setup.runtime.uninstall() is True
    setup.run("Const", "ReActorFaceSwap", first_input=3)
    assert len(setup.records()) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_installing_again_and_again_leaves_one_pressure_listener(tmp_path: Path, kind: str) -> None:
    setup = Setup(tmp_path, kind, basic_nodes(), cooldown_seconds=0)
    gauge = setup.runtime.optimizer.gauge
    for _ in range(3):
        assert setup.runtime.install_hook(setup.module) is not None
    assert len(gauge._listeners) == 1
    assert setup.runtime.uninstall() is True
    assert setup.runtime.install_hook(setup.module) is not None
    assert len(gauge._listeners) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_pressure_at_install_puts_the_boundary_step_into_the_runtimes_pipeline_and_uninstall_takes_it_out(
    tmp_path: Path, kind: str
) -> None:
    setup = Setup(tmp_path, kind, basic_nodes(), cooldown_seconds=0)
    setup.runtime.optimizer.gauge.update(95.0, 80.0)
    assert setup.runtime.install_hook(setup.module) is not None
    assert setup.runtime.pipeline.occupied(StartStep.PRESSURE)
    assert setup.runtime.uninstall() is True
    assert not setup.runtime.pipeline.occupied(StartStep.PRESSURE)


# --- OOM rescue ---------------------------------------------------------------------------------------------


def allocate_too_much() -> BaseException:
    try:
        np.empty((1 << 62,), dtype=np.uint8)  # 4 EiB: fails on any machine, whatever its overcommit policy
    except MemoryError as error:
        return error
    raise AssertionError("the allocation should have failed")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "error",
    [
        lambda: MemoryError("out of RAM"),
        allocate_too_much,
        lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    ],
    ids=["MemoryError", "numpy", "torch"],
)
def test_an_oom_failure_is_rescued_and_the_result_reaches_the_consumer(
    tmp_path: Path, kind: str, error: Callable[[], BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    nodes = basic_nodes(ReActorFaceBoost=fails_once(error, lambda x: x + 1000))
    setup = Setup(tmp_path, kind, nodes, cooldown_seconds=3600)
    recorder = Recorder()
    try:
        with caplog.at_level(logging.WARNING):
            setup.run("Const", "ReActorFaceBoost", "Double", first_input=1)
    finally:
        recorder.close()

    assert setup.executor.success
    assert setup.executor.caches.outputs.get("3") == 2002  # the consumer got the second run's result
    assert nodes["ReActorFaceBoost"].calls == 2
    rescue = setup.records()[0]
    assert rescue.mode is Mode.AGGRESSIVE
    assert rescue.trigger.kind is TriggerKind.RESCUE  # its own kind: neither a rule's "before" nor "after"
    assert (rescue.trigger.node_id, rescue.trigger.node_class, rescue.trigger.phase) == (
        "2",
        "ReActorFaceBoost",
        "rescue",
    )
    assert "OOM rescue of ReActorFaceBoost #2" in rescue.trigger.reason
    assert "the second run succeeded" in rescue.trigger.reason
    finished = [event.kwargs for event in recorder.of("node_finished") if event.kwargs["node_id"] == "2"]
    assert len(finished) == 1
    assert finished[0]["rescued"] is True
    assert finished[0]["result"] is ExecutionResult.SUCCESS
    assert recorder.names("prompt_finished") == ["prompt_finished"]
    assert recorder.of("prompt_finished")[0].kwargs["success"] is True
    assert "OOM rescue of ReActorFaceBoost #2" in caplog.text


def always_out_of_memory(x: Any) -> Any:
    raise MemoryError("still too big")


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_failure_returns_the_first_failure_unchanged(tmp_path: Path, kind: str) -> None:
    nodes = basic_nodes(ReActorFaceSwap=StandInNode(always_out_of_memory))
    returned: list[Any] = []
    setup = Setup(tmp_path, kind, nodes, returned)
    got: list[Any] = []
    setup.module.execute = spy(setup.module.execute, got)  # what ComfyUI gets, seen from over the hook

    setup.run("Const", "ReActorFaceSwap")

    assert nodes["ReActorFaceSwap"].calls == 2
    assert len(returned) == 3  # Const, then the heavy node twice
    assert got[-1] is returned[1]  # ComfyUI got the first failure, not the second
    assert got[-1][0] is ExecutionResult.FAILURE
    assert str(got[-1][2]) == "still too big"
    assert not setup.executor.success
    rescue = [record for record in setup.records() if record.trigger.phase == "rescue"]
    assert len(rescue) == 1
    assert "the second run failed too; the first failure stands" in rescue[0].trigger.reason


@pytest.mark.parametrize("kind", KINDS)
def test_a_rerun_that_raises_returns_the_first_failure(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = basic_nodes()

    def unregister_and_fail(x: Any) -> Any:
        del nodes["ReActorFaceSwap"]  # the rerun's class lookup in execute itself raises KeyError
        raise MemoryError("oom")

    nodes["ReActorFaceSwap"] = StandInNode(unregister_and_fail)
    returned: list[Any] = []
    setup = Setup(tmp_path, kind, nodes, returned)
    got: list[Any] = []
    setup.module.execute = spy(setup.module.execute, got)

    with caplog.at_level(logging.WARNING):
        setup.run("Const", "ReActorFaceSwap")

    assert got[-1] is returned[-1]
    assert got[-1][0] is ExecutionResult.FAILURE
    assert "the rerun of ReActorFaceSwap #2 raised KeyError" in caplog.text
    assert "the second run failed too" in setup.records()[0].trigger.reason


def test_the_rescue_can_be_turned_off(tmp_path: Path) -> None:
    nodes = basic_nodes(ReActorFaceSwap=fails_once(lambda: MemoryError("oom"), lambda x: x))
    setup = Setup(tmp_path, "async11", nodes, oom_rescue=False)
    setup.run("Const", "ReActorFaceSwap")
    assert nodes["ReActorFaceSwap"].calls == 1
    assert not setup.executor.success
    assert [record.trigger.phase for record in setup.records()] == ["after"]


@pytest.mark.parametrize(
    ("class_name", "error"),
    [("ReActorFaceSwap", lambda: ValueError("not memory")), ("Double", lambda: MemoryError("ordinary node"))],
    ids=["not-oom", "not-heavy"],
)
def test_only_a_heavy_nodes_oom_is_rescued(tmp_path: Path, class_name: str, error: Callable[[], BaseException]) -> None:
    nodes = basic_nodes(**{class_name: fails_once(error, lambda x: x)})
    setup = Setup(tmp_path, "async11", nodes, cooldown_seconds=0)
    setup.run("Const", class_name)
    assert nodes[class_name].calls == 1
    assert not setup.executor.success
    assert all(record.trigger.phase != "rescue" for record in setup.records())


def test_an_async_nodes_oom_is_rescued(tmp_path: Path) -> None:
    state = {"runs": 0}

    async def swap(x: int) -> int:
        state["runs"] += 1
        await asyncio.sleep(0.01)
        if state["runs"] == 1:
            raise MemoryError("async node ran out")
        return x * 10

    nodes = basic_nodes(ReActorFaceSwap=StandInNode(swap))
    setup = Setup(tmp_path, "async11", nodes)
    setup.run("Const", "ReActorFaceSwap", "Double", first_input=4)
    assert setup.executor.success
    assert setup.executor.caches.outputs.get("3") == 80
    assert state["runs"] == 2


def test_a_broken_rescue_leaves_the_failure_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = basic_nodes(ReActorFaceSwap=fails_once(lambda: MemoryError("oom"), lambda x: x))
    setup = Setup(tmp_path, "sync9", nodes)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("engine bug")

    monkeypatch.setattr(setup.engine, "run", broken)
    setup.run("Const", "ReActorFaceSwap")
    assert nodes["ReActorFaceSwap"].calls == 1
    assert not setup.executor.success
    assert "engine bug" in (hook.hook_status().last_hook_error or "")


def test_what_counts_as_out_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(allocate_too_much())
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not is_out_of_memory(RuntimeError("CUDA error: device-side assert"))
    assert not is_out_of_memory(None)

    # ComfyUI without CUDA sets OOM_EXCEPTION to Exception itself: that must not make every error an OOM.
    monkeypatch.setitem(sys.modules, "comfy.model_management", types.SimpleNamespace(OOM_EXCEPTION=Exception))
    assert not is_out_of_memory(ValueError("bad input"))

    class DeviceOutOfMemory(RuntimeError):
        pass

    monkeypatch.setitem(sys.modules, "comfy.model_management", types.SimpleNamespace(OOM_EXCEPTION=DeviceOutOfMemory))
    assert is_out_of_memory(DeviceOutOfMemory("xpu"))


# --- start-up ------------------------------------------------------------------------------------------------


def test_start_outside_comfyui_says_so_and_does_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delitem(sys.modules, "execution", raising=False)
    monkeypatch.delenv(bootstrap.HOOK_SWITCH, raising=False)
    with caplog.at_level(logging.INFO):
        assert bootstrap.start_hook(current_runtime()) is False
    assert "not running inside ComfyUI" in caplog.text
    assert "not running inside ComfyUI" in (hook.hook_status().reason or "")


def test_start_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    module = make_execution_module("async11", basic_nodes())
    original = module.execute
    monkeypatch.setitem(sys.modules, "execution", module)
    monkeypatch.setenv(bootstrap.HOOK_SWITCH, "off")
    assert bootstrap.start_hook(current_runtime()) is False
    assert module.execute is original
    assert hook.hook_status().reason == "turned off by COMFY_MEMHOOKS_HOOK=off"


def test_start_installs_into_the_loaded_execution_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = make_execution_module("sync9", basic_nodes())
    monkeypatch.setitem(sys.modules, "execution", module)
    monkeypatch.delenv(bootstrap.HOOK_SWITCH, raising=False)
    monkeypatch.setenv("COMFY_MEMHOOKS_SETTINGS", str(tmp_path / "settings.json"))
    assert bootstrap.start_hook(current_runtime()) is True
    assert hook.hook_status().installed
    assert getattr(module.execute, "__wrapped__", None) is not None


def test_a_failing_start_leaves_comfyui_untouched(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    module = make_execution_module("async11", basic_nodes())
    original = module.execute
    monkeypatch.setitem(sys.modules, "execution", module)
    monkeypatch.delenv(bootstrap.HOOK_SWITCH, raising=False)

    runtime = current_runtime()

    def broken_connect() -> Any:
        raise OSError("settings folder unreadable")

    monkeypatch.setattr(runtime.optimizer, "connect", broken_connect)
    with caplog.at_level(logging.ERROR):
        assert bootstrap.start_hook(runtime) is False
    assert module.execute is original
    assert "installing the executor hook failed" in caplog.text
    assert "settings folder unreadable" in (hook.hook_status().reason or "")


def test_setup_outside_comfyui_gives_the_nodes_and_installs_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delitem(sys.modules, "execution", raising=False)
    monkeypatch.delenv(bootstrap.HOOK_SWITCH, raising=False)
    with caplog.at_level(logging.INFO):
        mappings, names = bootstrap.setup()
    assert "UnifiedMemoryManager" in mappings
    assert "UnifiedMemoryManager" in names
    assert not hook.hook_status().installed
    assert "not running inside ComfyUI" in caplog.text


# --- under pressure, before any node ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_under_pressure_every_node_boundary_gets_a_model_free_cleanup(tmp_path: Path, kind: str) -> None:
    # The model-free cleanup alone: at 90% the last rung would follow it (tests/engine/test_last_rung.py).
    setup = Setup(tmp_path, kind, basic_nodes(), cooldown_seconds=30, pressure_unloads_models=False)
    setup.probe.ram_percent = 90.0
    setup.probe.grow_percent_per_snapshot = 1.5  # garbage keeps arriving, as from nodes that leave it behind
    setup.optimizer.watchdog.tick()  # the watchdog's reading: the gauge now says RAM is over its threshold

    setup.run("Const", "Double", "Double")

    records = setup.records()
    assert [(r.trigger.kind, r.trigger.node_id, r.trigger.node_class, r.mode) for r in records] == [
        (TriggerKind.BOUNDARY, "1", "Const", None),
        (TriggerKind.BOUNDARY, "2", "Double", None),
        (TriggerKind.BOUNDARY, "3", "Double", None),
    ]
    # Then ComfyUI's cache would be asked for RAM; outside ComfyUI that step says why it did nothing.
    assert [action.name for action in records[0].actions] == ["gc_collect", "malloc_trim", "comfy_cache_release"]
    assert records[0].trigger.pressure[0].resource == "RAM"
    assert setup.executor.success


def test_live_data_gets_one_boundary_cleanup_then_the_guard_holds(tmp_path: Path) -> None:
    setup = Setup(tmp_path, "async11", basic_nodes(), cooldown_seconds=0)
    setup.probe.ram_percent = 90.0  # nothing to free, and nothing arrives
    setup.optimizer.watchdog.tick()

    setup.run("Const", *["Double"] * 10)

    assert [r.trigger.kind for r in setup.records()] == [TriggerKind.BOUNDARY]
    assert setup.engine.held_back_total == 10
    assert setup.executor.success


def test_a_heavy_node_with_a_rule_before_it_is_left_to_its_rule(tmp_path: Path) -> None:
    setup = Setup(tmp_path, "async11", basic_nodes(), cooldown_seconds=0)
    setup.probe.ram_percent = 90.0
    setup.optimizer.watchdog.tick()

    setup.run("ReActorFaceSwap")

    assert [(r.trigger.kind, r.trigger.phase) for r in setup.records()][:1] == [(TriggerKind.HOOK, "before")]
    assert TriggerKind.BOUNDARY not in {r.trigger.kind for r in setup.records()}


def test_without_pressure_ordinary_nodes_read_nothing(tmp_path: Path) -> None:
    setup = Setup(tmp_path, "sync9", basic_nodes(), cooldown_seconds=0)
    setup.probe.ram_percent = 50.0
    setup.optimizer.watchdog.tick()

    setup.run("Const", "Double", "Double")

    assert setup.records() == []
    assert setup.probe.snapshots == 0  # the gauge was read, never the probe


def test_a_failing_boundary_cleanup_is_counted_and_the_node_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(tmp_path, "async11", basic_nodes(), cooldown_seconds=0)
    setup.probe.ram_percent = 90.0
    setup.optimizer.watchdog.tick()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("cgroup went away")

    monkeypatch.setattr(setup.engine, "run", broken)
    setup.run("Const", "Double")

    assert setup.executor.success
    assert hook.hook_status().hook_errors == 2
    assert "running the pressure step before a node" in (hook.hook_status().last_hook_error or "")
