"""The per-node pipeline: comfy_memhooks' own steps run in the order written in ``pipeline.StartStep`` and
``EndStep``, whatever order their parts were connected in and whatever their object ids are (blinker's receivers
are called in the order of a set), and always before the public signals."""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfy_memhooks import hook, signals
from comfy_memhooks.comfy import auto
from comfy_memhooks.comfy.profiling import recorder_for
from comfy_memhooks.comfy.runtime import Runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.pipeline import EndStep, NodeEnding, NodePipeline, StartStep
from comfy_memhooks.profile.store import ProfileStore
from comfy_memhooks.triggers.settings import SettingsStore
from tests.hook_support import chain_prompt
from tests.standin_executor import StandInNode, make_execution_module

MIB = 1024**2


@pytest.fixture
def pipeline(runtime: Runtime) -> Iterator[NodePipeline]:
    """The test's runtime's pipeline, with a hook of the test's own; the hook is taken out afterwards."""
    yield runtime.pipeline
    hook.uninstall()


class LoggingStep:
    """A step that writes its name into a shared log; a new object each time, so ids differ from run to run."""

    def __init__(self, name: str, log: list[str]):
        self.name = name
        self.log = log
        self.padding = [object() for _ in range(random.randrange(1, 50))]  # moves later objects' ids

    def __call__(self, run: Any, detail: Any) -> None:
        self.log.append(self.name)

    def receiver(self, sender: Any, **kwargs: Any) -> None:
        self.log.append(self.name)


@pytest.mark.parametrize("seed", range(12))
def test_the_steps_keep_their_order_whatever_the_connection_order_and_ids(seed: int, pipeline: NodePipeline) -> None:
    rng = random.Random(seed)
    log: list[str] = []
    slots: list[StartStep | EndStep] = [*StartStep, *EndStep]
    rng.shuffle(slots)
    receivers = [LoggingStep(f"public {index}", log) for index in range(8)]
    rng.shuffle(receivers)
    kept: list[LoggingStep] = []
    for slot in slots:
        step = LoggingStep(f"{type(slot).__name__}.{slot.name}", log)
        kept.append(step)
        heavy_only = slot is StartStep.RULES or slot is EndStep.RULES
        if isinstance(slot, StartStep):
            pipeline.set_start(slot, step, heavy_only=heavy_only)
        else:
            pipeline.set_end(slot, step, heavy_only=heavy_only)
    for receiver in receivers:
        signals.node_started.connect(receiver.receiver, weak=False)
        signals.node_finished.connect(receiver.receiver, weak=False)
    module = make_execution_module(
        "async11", {"Const": StandInNode(lambda x: x), "ReActorFaceSwap": StandInNode(lambda x: -x)}
    )
    try:
        assert (
            hook.install(module, heavy=lambda node_class: node_class.startswith("ReActor"), pipeline=pipeline)
            is not None
        )
        prompt, order = chain_prompt("Const", "ReActorFaceSwap")
        executor = module.PromptExecutor()
        executor.execute(prompt, f"prompt-{seed}", {}, order)
        assert executor.success
    finally:
        for receiver in receivers:
            signals.node_started.disconnect(receiver.receiver)
            signals.node_finished.disconnect(receiver.receiver)
    ordinary_start = [f"StartStep.{slot.name}" for slot in StartStep if slot is not StartStep.RULES]
    ordinary_end = [f"EndStep.{slot.name}" for slot in EndStep if slot is not EndStep.RULES]
    heavy_start = [f"StartStep.{slot.name}" for slot in StartStep]
    heavy_end = [f"EndStep.{slot.name}" for slot in EndStep]
    public = 8
    expected = [*ordinary_start, *["public"] * public, *ordinary_end, *["public"] * public]
    expected += [*heavy_start, *["public"] * public, *heavy_end, *["public"] * public]
    assert [name.split(" ")[0] for name in log] == expected


def test_a_failing_step_is_counted_once_and_the_others_and_the_node_run_on(pipeline: NodePipeline) -> None:
    log: list[str] = []

    def broken(run: Any, cached: Any) -> None:
        raise RuntimeError("a step's bug")

    pipeline.set_start(StartStep.PRESSURE, broken)
    pipeline.set_start(StartStep.PROFILE, LoggingStep("profile", log))
    pipeline.set_end(EndStep.METRICS, LoggingStep("metrics", log))
    module = make_execution_module("sync9", {"Const": StandInNode(lambda x: x)})
    assert hook.install(module, heavy=lambda node_class: False, pipeline=pipeline) is not None
    prompt, order = chain_prompt("Const", "Const", "Const")
    executor = module.PromptExecutor()
    executor.execute(prompt, "prompt-1", {}, order)
    assert executor.success
    assert log == ["profile", "metrics"] * 3
    status = hook.hook_status()
    assert status.hook_errors == 3
    assert "running the pressure step before a node" in (status.last_hook_error or "")


def test_clearing_a_slot_leaves_a_step_that_replaced_it(pipeline: NodePipeline) -> None:
    first, second = LoggingStep("first", []), LoggingStep("second", [])
    pipeline.set_end(EndStep.MANUAL, first)
    pipeline.set_end(EndStep.MANUAL, second)
    pipeline.clear(EndStep.MANUAL, first)
    assert pipeline.occupied(EndStep.MANUAL)
    pipeline.clear(EndStep.MANUAL, second)
    assert not pipeline.occupied(EndStep.MANUAL)


@pytest.mark.parametrize("seed", range(3))
def test_the_cleanup_before_a_heavy_node_is_not_charged_to_it_whatever_connects_first(
    tmp_path: Path, seed: int, pipeline: NodePipeline
) -> None:
    """Real parts: the rule's Aggressive before a ReActor node frees 200 MiB of cyclic garbage; the profile's
    "before" reading comes after it, so the node's record starts below that garbage and shows no peak from it."""
    settings = SettingsStore(tmp_path / "comfy_memhooks.json")
    settings.load()
    settings.update(
        {
            "cooldown_seconds": 0,
            "rules": [
                {
                    "pattern": "ReActor*",
                    "before_mode": "Aggressive",
                    "before_when": "always",
                    "after_mode": "Monitor Only",
                }
            ],
        }
    )
    engine = Engine()
    store = ProfileStore()
    parts: list[Any] = [
        auto.AutoOptimizer(engine, settings, watch=False, pipeline=pipeline),
        recorder_for(engine, settings, store, pipeline),
    ]
    random.Random(seed).shuffle(parts)
    for part in parts:
        part.connect()
    module = make_execution_module(
        "async11", {"Const": StandInNode(make_garbage), "ReActorFaceSwap": StandInNode(lambda x: x)}
    )
    try:
        assert (
            hook.install(module, heavy=lambda node_class: node_class.startswith("ReActor"), pipeline=pipeline)
            is not None
        )
        prompt, order = chain_prompt("Const", "ReActorFaceSwap")
        executor = module.PromptExecutor()
        executor.execute(prompt, "prompt-1", {}, order)
        assert executor.success
    finally:
        for part in parts:
            part.disconnect()
    profile = store.latest()
    assert profile is not None
    const, swap = profile.nodes
    assert const.rss_after_bytes is not None and swap.rss_before_bytes is not None
    assert const.rss_after_bytes - swap.rss_before_bytes >= 150 * MIB  # freed before the node's reading
    assert (swap.ram_peak_bytes or 0) < 50 * MIB
    assert [record.trigger.phase for record in engine.history.records()] == ["before"]


def make_garbage(x: Any) -> Any:
    """Leaves 200 MiB in reference cycles in the oldest generation, which only a full collection frees."""
    alive = []
    for _ in range(200):
        cycle: list[Any] = [bytearray(b"\1" * MIB)]
        cycle.append(cycle)
        alive.append(cycle)
    gc.collect(1)  # survivors of a young collection move to the oldest generation
    alive.clear()
    return x


def test_the_ending_carries_what_the_end_steps_need() -> None:
    ending = NodeEnding("result", True, 1.5, None, False)
    assert (ending.result, ending.cached, ending.duration_seconds, ending.error, ending.rescued) == (
        "result",
        True,
        1.5,
        None,
        False,
    )
