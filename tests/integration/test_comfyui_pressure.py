"""A memory-limited container stays alive with comfy_memhooks' default settings; without it, the same run dies.

Each scenario runs twice in a fresh v1 memory cgroup: once in a ComfyUI without comfy_memhooks, where the kernel
must OOM-kill it (so the scenario is real), and once with comfy_memhooks installed and nothing in its settings
file, where it must complete with no OOM kill. Sizes and counts are drawn at random within bounds (the seed is in
every failure message; ``MEMHOOKS_PRESSURE_SEED`` replays one), so nothing is tuned to the default thresholds:
the garbage adds up to about twice the limit, and no single node needs more than the room above the threshold.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cgroups import enter_group_launcher, limited_v1_group
from tests.integration.comfyui_server import ComfyError, ComfyUI, skip_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

PACK = Path(__file__).resolve().parent / "memhooks_pressure_pack"
MIB = 1024**2
GIB = 1024**3
SEED = int(os.environ.get("MEMHOOKS_PRESSURE_SEED") or time.time_ns() % 2**31)


@dataclass(frozen=True)
class Scenario:
    name: str
    limit_bytes: int
    prompt: dict[str, Any]
    garbage_bytes: int

    def describe(self) -> str:
        return (
            f"{self.name}: {self.garbage_bytes / GIB:.1f} GB of garbage in a {self.limit_bytes / GIB:.2f} GB "
            f"container (MEMHOOKS_PRESSURE_SEED={SEED})"
        )


@dataclass(frozen=True)
class Run:
    completed: bool
    oom_kills: int
    records: list[dict[str, Any]]
    status: dict[str, Any] | None
    log: str
    tracebacks: list[str]


def chain(nodes: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Nodes "1".."n", each fed the one before's number, and an output node at the end."""
    prompt: dict[str, Any] = {}
    for index, (class_type, inputs) in enumerate(nodes, start=1):
        value: Any = 0 if index == 1 else [str(index - 1), 0]
        prompt[str(index)] = {"class_type": class_type, "inputs": {"value": value, **inputs}}
    prompt[str(len(nodes) + 1)] = {"class_type": "MemhooksPressureSink", "inputs": {"value": [str(len(nodes)), 0]}}
    return prompt


def burst(class_type: str, rng: random.Random, share: tuple[float, float] = (0.12, 0.22)) -> Scenario:
    """Nodes in a row, each leaving a ``share`` of the limit behind, until about twice the limit is garbage."""
    limit = rng.choice((int(2.5 * GIB), 3 * GIB, int(3.5 * GIB)))
    frame_mb = rng.randint(6, 40)
    per_node = int(limit * rng.uniform(*share))
    frames = max(per_node // (frame_mb * MIB), 1)
    count = -(-2 * limit // (frames * frame_mb * MIB))
    inputs = {"frames": frames, "frame_mb": frame_mb, "work_seconds": round(rng.uniform(0.2, 1.0), 2)}
    return Scenario(
        f"{count} x {class_type} ({frames} frames of {frame_mb} MB)",
        limit,
        chain([(class_type, inputs)] * count),
        count * frames * frame_mb * MIB,
    )


def heavy_burst(rng: random.Random) -> Scenario:
    return burst("ReActorRestoreFace", rng)


def ordinary_burst(rng: random.Random) -> Scenario:
    return burst("MemhooksPressureOrdinary", rng)


def one_long_node(rng: random.Random) -> Scenario:
    """One node working in batches, each leaving 4-12% of the limit behind, about twice the limit in all."""
    limit = rng.choice((int(2.5 * GIB), 3 * GIB, int(3.5 * GIB)))
    frame_mb = rng.randint(4, 30)
    per_batch = int(limit * rng.uniform(0.04, 0.12))
    frames = max(per_batch // (frame_mb * MIB), 1)
    batches = -(-2 * limit // (frames * frame_mb * MIB))
    work = round(rng.uniform(0.1, 0.5), 2)
    inputs = {"batches": batches, "frames": frames, "frame_mb": frame_mb, "work_seconds": work}
    return Scenario(
        f"one node, {batches} batches of {frames} frames of {frame_mb} MB",
        limit,
        chain([("MemhooksPressureBatches", inputs)]),
        batches * frames * frame_mb * MIB,
    )


def oom_kills(group: Path) -> int:
    for line in (group / "memory.oom_control").read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill":
            return int(value)
    raise AssertionError("this kernel's memory.oom_control has no oom_kill counter")


def run_in_container(scenario: Scenario, *, with_memhooks: bool, settings: dict[str, Any] | None = None) -> Run:
    """Runs the scenario's prompt in a ComfyUI inside a new cgroup with the scenario's limit."""
    with limited_v1_group(scenario.limit_bytes) as group:
        if group is None:
            pytest.skip("cannot create a v1 memory cgroup here (needs root and a writable v1 memory hierarchy)")
        server = ComfyUI(
            packs=(PACK,),
            with_memhooks=with_memhooks,
            record_events=False,
            settings=settings or {},
            launcher=enter_group_launcher(group),
        )
        try:
            server.start()
            try:
                _, entry = server.run(scenario.prompt)
                completed = entry["status"]["status_str"] == "success"
            except (ComfyError, OSError):
                completed = False
            records: list[dict[str, Any]] = []
            status = None
            if with_memhooks:
                try:
                    records = server.get("/memhooks/history")["records"]
                    status = server.get("/memhooks/status")
                except (ComfyError, OSError):  # it died: the OOM count says how
                    completed = False
            return Run(completed, oom_kills(group), records, status, server.log_text(), server.our_tracebacks())
        finally:
            server.stop()


def pressure_records(run: Run) -> list[dict[str, Any]]:
    return [record for record in run.records if record["trigger"]["pressure"]]


def cleanup_records(run: Run) -> list[dict[str, Any]]:
    """Cleanups fired by pressure, or by predictive cleanup (a node of a class already seen that would not fit)."""
    return [
        record for record in run.records if record["trigger"]["pressure"] or record["trigger"]["kind"] == "predictive"
    ]


@pytest.mark.parametrize("build", [heavy_burst, ordinary_burst, one_long_node])
def test_default_settings_keep_a_memory_limited_container_alive(build: Callable[[random.Random], Scenario]) -> None:
    scenario = build(random.Random(f"{SEED}-{build.__name__}"))

    without = run_in_container(scenario, with_memhooks=False)
    assert not without.completed and without.oom_kills >= 1, f"the scenario is not real: {scenario.describe()}"

    run = run_in_container(scenario, with_memhooks=True)
    assert run.completed and run.oom_kills == 0, f"{scenario.describe()}\n{run.log[-4000:]}"
    cleanups = cleanup_records(run)
    assert cleanups, scenario.describe()
    assert {record["trigger"]["kind"] for record in cleanups} <= {"hook", "boundary", "watchdog", "predictive"}
    assert run.tracebacks == []


def test_without_the_watchdog_the_node_boundaries_keep_it_alive() -> None:
    # Between nodes only: each node's own garbage must fit in the room above the 80% threshold (at most 15% here).
    # A node that needs more than that room while it runs is what the watchdog is for (the test above).
    scenario = burst("MemhooksPressureOrdinary", random.Random(f"{SEED}-boundaries"), share=(0.06, 0.15))

    # The boundary check alone: predictive cleanup would make room before the nodes of a class it has just seen.
    run = run_in_container(
        scenario, with_memhooks=True, settings={"pressure_watchdog": False, "predictive_cleanup": False}
    )

    assert run.completed and run.oom_kills == 0, f"{scenario.describe()}\n{run.log[-4000:]}"
    kinds = {record["trigger"]["kind"] for record in pressure_records(run)}
    assert kinds == {"boundary"}, scenario.describe()
    boundary = pressure_records(run)[0]  # the newest
    assert boundary["mode"] == "Model-free"
    assert boundary["trigger"]["node_class"] in {"MemhooksPressureOrdinary", "MemhooksPressureSink"}
    assert boundary["trigger"]["pressure"][0]["resource"] == "RAM"
    # ComfyUI's classic cache has no way to give RAM back: the last step says it left it alone.
    assert [action["name"] for action in boundary["actions"]] == ["gc_collect", "malloc_trim", "comfy_cache_release"]


def test_live_data_that_cannot_be_freed_costs_a_few_cleanups_not_one_per_node() -> None:
    limit = 3 * GIB
    # One node takes the container to about 85% (ComfyUI itself holds about 0.5 GB) with data it keeps; twenty
    # light nodes follow.
    hold = chain(
        [("MemhooksPressureHold", {"megabytes": 2050})]
        + [("MemhooksPressureOrdinary", {"frames": 1, "frame_mb": 1, "work_seconds": 0.05})] * 20
    )
    scenario = Scenario("live data", limit, hold, 0)

    run = run_in_container(scenario, with_memhooks=True)

    assert run.completed and run.oom_kills == 0, run.log[-4000:]
    assert run.status is not None
    ram_percent = run.status["snapshot"]["ram"]["percent"]
    assert ram_percent >= 80, f"the live data did not reach the threshold ({ram_percent:.0f}%)"
    assert 1 <= len(pressure_records(run)) <= 3, [record["trigger"] for record in run.records]
    pressure = run.status["pressure"]
    assert pressure["held_back_total"] >= 15
    assert pressure["last_held_back"]["reason"].startswith("nothing new to free since ")
