"""How fast the pressure watchdog reacts inside a long node, and what it costs while it watches. Run by hand:

    python benchmarks/bench_pressure.py            # needs root and a writable v1 memory cgroup for part one

Each part measures the watchdog's adaptive polling (:func:`watchdog.poll_interval`: 250 ms under the threshold,
down to 25 ms in the last tenth of the limit) against the fixed 250 ms of earlier versions, in the same run.

Part one runs a "long node" inside a memory cgroup of its own (1.5 GB by default), with the default settings (RAM
threshold 80%): the node keeps allocating frame-sized buffers held in reference cycles and dropping them, batch
after batch, as a face restore over many frames does, with garbage collection off, so only the watchdog frees.
After each buffer the node reads RAM itself and notes when a cleanup becomes due: usage at or above the threshold
and grown by the effectiveness floor since the last cleanup (the watchdog's guard). The latency is from that
reading to the start of the watchdog's cleanup (zero when the watchdog read first); median, p90 and p99 over all
of them. Two scenarios:

- *near the limit*: the node also holds live data (as weights loaded in RAM) that keeps usage at about 89% of the
  limit after each cleanup, so garbage arrives in the last tenth, where the OOM killer is a batch or two away;
  also the peak usage of the cgroup and the watchdog thread's CPU over the run, cleanups included.
- *from below*: no live data; each cleanup brings usage far under the threshold, so what counts is how soon a
  crossing from below is seen, at 250 ms in both policies.

Part two times one watchdog tick (median of 400) between prompts (a tick every 2 s), while a prompt runs under the
threshold, and while a prompt runs near the limit (95%, a probe that reports so after reading the real counters)
with nothing new to free (the guard holding back), and gives the share of one core that makes at each policy's
interval. As a cross-check, the watchdog thread's own CPU time over ten seconds of each, from
``/proc/self/task/<tid>/schedstat`` (nanoseconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_support import report  # noqa: E402

from comfy_memhooks import signals  # noqa: E402
from comfy_memhooks.engine.core import Engine  # noqa: E402
from comfy_memhooks.engine.history import OptimizationRecord, TriggerKind  # noqa: E402
from comfy_memhooks.engine.pressure import PressureGauge, effectiveness_floor_bytes  # noqa: E402
from comfy_memhooks.probe.readings import MemorySnapshot, RamReading  # noqa: E402
from comfy_memhooks.triggers.settings import SettingsStore  # noqa: E402
from comfy_memhooks.triggers.watchdog import FAST_SECONDS, PressureWatchdog, poll_interval  # noqa: E402
from tests.cgroups import enter_group_launcher, limited_v1_group  # noqa: E402

MIB = 1024**2
GIB = 1024**3
THRESHOLD = 80.0  # the default RAM threshold

POLICIES: dict[str, Callable[[float | None, float], float]] = {
    "adaptive": poll_interval,
    "fixed 250 ms": lambda percent, threshold: FAST_SECONDS,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario:
    """One long node: its live data, and the garbage it makes."""

    name: str
    live_percent: float  # of the limit, held for the whole run; 0 for none
    frame_mb: int
    frames_per_batch: int
    frame_seconds: float


SCENARIOS = {
    "near the limit": Scenario("near the limit", 89.0, frame_mb=4, frames_per_batch=4, frame_seconds=0.025),
    "from below": Scenario("from below", 0.0, frame_mb=8, frames_per_batch=12, frame_seconds=0.02),
}


def _watchdog(engine: Engine, policy: str, **settings: Any) -> PressureWatchdog:
    store = SettingsStore(Path(tempfile.mkdtemp(prefix="memhooks-bench-")) / "comfy_memhooks.json")
    store.load()  # nothing in the file: the defaults, unless a phase of part two changes the threshold
    if settings:
        store.update(settings)
    return PressureWatchdog(engine, lambda: store.current, PressureGauge(), poll=POLICIES[policy])


def _start_prompt() -> None:
    signals.send_safely(signals.prompt_started, "bench", prompt_id="bench")


def _end_prompt() -> None:
    signals.send_safely(
        signals.prompt_finished, "bench", prompt_id="bench", success=True, duration_seconds=0.0, error=None
    )


def _thread_cpu_seconds(native_id: int) -> float:
    """The thread's CPU time so far: ``/proc/self/task/<tid>/schedstat``'s first field, in nanoseconds."""
    return int(Path(f"/proc/self/task/{native_id}/schedstat").read_text().split()[0]) / 1e9


def long_node(seconds: float, scenario: Scenario, policy: str) -> None:
    """Part one's child, inside the cgroup: the long node and the watchdog; prints its figures as JSON."""
    engine = Engine()
    watchdog = _watchdog(engine, policy)
    first = engine.probe.read_ram()
    assert first.total_bytes is not None and first.used_bytes is not None
    floor = effectiveness_floor_bytes(first.total_bytes)
    live_bytes = max(int(first.total_bytes * scenario.live_percent / 100) - first.used_bytes, 0)
    live = np.ones(live_bytes // 8, dtype=np.float64)  # touched: resident, as weights loaded in RAM are
    cleanups: list[tuple[float, int | None]] = []  # (started_at, RAM used after it): the guard's reference

    def on_record(sender: Any, *, record: OptimizationRecord, **_: Any) -> None:
        if record.trigger.kind is TriggerKind.WATCHDOG:
            cleanups.append((record.started_at, record.after.ram.used_bytes))

    signals.optimization_performed.connect(on_record, weak=False)
    gc.disable()  # as in a process whose oldest generation is rarely collected: only the watchdog frees
    watchdog.start()
    native_id = watchdog.thread.native_id
    assert native_id is not None
    cpu_before, wall_before = _thread_cpu_seconds(native_id), time.perf_counter()
    _start_prompt()
    latencies: list[float] = []
    due_at: float | None = None
    seen = 0
    last_after: int | None = None
    ends = time.monotonic() + seconds
    batch = 0
    while time.monotonic() < ends:
        records: dict[str, Any] = {"frames": []}
        records["self"] = records
        for index in range(scenario.frames_per_batch):
            frame = np.empty(scenario.frame_mb * MIB // 4, dtype=np.float32)
            frame.fill(float(batch + index))
            records["frames"].append(frame)
            ram = engine.probe.read_ram()
            if len(cleanups) > seen:
                if due_at is not None:
                    latencies.append(max(cleanups[seen][0] - due_at, 0.0))
                seen = len(cleanups)
                due_at = None
                last_after = cleanups[-1][1]
            used, percent = ram.used_bytes or 0, ram.percent or 0.0
            grown = last_after is None or used - last_after >= floor
            if due_at is None and percent >= THRESHOLD and grown and len(cleanups) == seen:
                due_at = time.time()
            time.sleep(scenario.frame_seconds)
        del records
        batch += 1
    _end_prompt()
    cpu = _thread_cpu_seconds(native_id) - cpu_before
    wall = time.perf_counter() - wall_before
    watchdog.stop()
    del live
    figures = {"latencies": latencies, "cleanups": len(cleanups), "batches": batch, "cpu": cpu, "wall": wall}
    report(json.dumps(figures))


def _percentile(ordered: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least ``share`` of them at or under it."""
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


def reaction(limit: int, seconds: float, scenario: Scenario, policy: str) -> dict[str, Any] | None:
    with limited_v1_group(limit) as group:
        if group is None:
            report("part one skipped: cannot create a v1 memory cgroup here (needs root)")
            return None
        command = [
            *enter_group_launcher(group),
            sys.executable,
            __file__,
            "--child",
            str(seconds),
            "--scenario",
            scenario.name,
            "--policy",
            policy,
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=False)
        peak = int((group / "memory.max_usage_in_bytes").read_text())
        oom = (group / "memory.oom_control").read_text()
    label = f"{scenario.name}, {policy}:"
    if output.returncode != 0:
        report(f"{label} the long node failed ({output.returncode}): {output.stderr[-2000:]}\n{oom}")
        return None
    figures = json.loads(output.stdout.splitlines()[0])
    latencies = sorted(figures["latencies"])
    if not latencies:
        report(f"{label} no cleanup came due: {output.stdout}")
        return None
    result = _summary(latencies, figures["cpu"], figures["wall"])
    report(
        f"{label:30} {len(latencies):4} cleanups due in a {limit / GIB:.1f} GB cgroup, due to started: "
        f"{_describe(result)}; peak {peak / limit * 100:.1f}% of the limit; {figures['batches']} batches"
    )
    return result


def _summary(latencies: list[float], cpu: float, wall: float) -> dict[str, Any]:
    latencies = sorted(latencies)
    return {
        "latencies": latencies,
        "median": statistics.median(latencies),
        "p90": _percentile(latencies, 0.9),
        "p99": _percentile(latencies, 0.99),
        "max": latencies[-1],
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "cpu": cpu / wall,
    }


def _describe(result: dict[str, Any]) -> str:
    return (
        f"median {result['median'] * 1000:5.1f} ms, p90 {result['p90'] * 1000:5.1f} ms, "
        f"p99 {result['p99'] * 1000:5.1f} ms, max {result['max'] * 1000:5.1f} ms; "
        f"watchdog thread {result['cpu'] * 100:.3f}% of one core"
    )


def _pooled(results: list[dict[str, Any]]) -> dict[str, Any]:
    return _summary(
        [latency for result in results for latency in result["latencies"]],
        sum(result["cpu_seconds"] for result in results),
        sum(result["wall_seconds"] for result in results),
    )


def _ratios(adaptive: dict[str, Any], fixed: dict[str, Any]) -> None:
    parts = [f"{key} {fixed[key] / adaptive[key]:.1f}x" for key in ("median", "p90", "p99") if adaptive[key] > 0]
    report(f"{'':30} fixed 250 ms / adaptive: {', '.join(parts)}; CPU {adaptive['cpu'] / fixed['cpu']:.1f}x")


class NearTheLimit:
    """The engine's probe, reading the real counters, but reporting RAM at ``percent`` of the limit."""

    def __init__(self, probe: Any, percent: float):
        self._probe = probe
        self._percent = percent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._probe, name)

    def read_ram(self) -> RamReading:
        ram: RamReading = self._probe.read_ram()
        total = ram.total_bytes or 0
        return dataclasses.replace(ram, used_bytes=int(total * self._percent / 100))

    def snapshot(self, include_processes: bool = False) -> MemorySnapshot:
        snapshot: MemorySnapshot = self._probe.snapshot(include_processes)
        return dataclasses.replace(snapshot, ram=self.read_ram())


def cpu_share(seconds: float) -> None:
    engine = Engine()
    reads = []
    for _ in range(2000):
        started = time.perf_counter_ns()
        engine.probe.read_ram()
        reads.append(time.perf_counter_ns() - started)
    read_us = statistics.median(reads) / 1000
    report(f"one RAM reading: median {read_us:.1f} µs")

    near = Engine(probe=NearTheLimit(engine.probe, 95.0))  # type: ignore[arg-type]
    phases: list[tuple[str, Engine, dict[str, Any], bool, tuple[str, ...]]] = [
        ("between prompts", engine, {}, False, ("adaptive",)),
        ("prompt, under the threshold", engine, {"ram_threshold": 100.0}, True, tuple(POLICIES)),
        ("prompt, 95% of the limit, guard holding", near, {}, True, tuple(POLICIES)),
    ]
    for label, phase_engine, settings, prompt, policies in phases:
        shares: dict[str, float] = {}
        for policy in policies:
            watchdog = _watchdog(phase_engine, policy, **settings)
            if prompt:
                watchdog._on_prompt_started("bench", prompt_id="bench")
            watchdog.tick()  # near the limit, the first tick cleans up; the guard holds back the next ones
            interval = watchdog.interval()
            ticks = []
            for _ in range(400):
                started = time.perf_counter_ns()
                watchdog.tick()
                ticks.append(time.perf_counter_ns() - started)
            tick_seconds = statistics.median(ticks) / 1e9
            watchdog.start()  # the same, measured on the thread itself
            native_id = watchdog.thread.native_id
            assert native_id is not None
            before_cpu, before_wall = _thread_cpu_seconds(native_id), time.perf_counter()
            time.sleep(seconds)
            cpu = _thread_cpu_seconds(native_id) - before_cpu
            wall = time.perf_counter() - before_wall
            watchdog.stop()
            shares[policy] = cpu / wall
            report(
                f"{label:40} {policy:12} one tick {tick_seconds * 1e6:5.1f} µs every {interval * 1000:4.0f} ms: "
                f"{tick_seconds / interval * 100:.4f}% of one core; thread: {cpu * 1000:.1f} ms CPU in {wall:.1f} s "
                f"({cpu / wall * 100:.4f}%)"
            )
        if len(shares) == 2:
            report(f"{'':40} thread CPU, adaptive / fixed 250 ms: {shares['adaptive'] / shares['fixed 250 ms']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit-gb", type=float, default=1.5)
    parser.add_argument("--seconds", type=float, default=30.0, help="each policy's run near the limit")
    parser.add_argument("--below-seconds", type=float, default=20.0, help="each policy's run from below; 0 skips")
    parser.add_argument("--cpu-seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=1, help="runs of each part; part one's are pooled")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--scenario", choices=tuple(SCENARIOS), help=argparse.SUPPRESS)
    parser.add_argument("--policy", choices=tuple(POLICIES), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child is not None:
        long_node(arguments.child, SCENARIOS[arguments.scenario], arguments.policy)
        return
    limit = int(arguments.limit_gb * GIB)
    for name, seconds in (("near the limit", arguments.seconds), ("from below", arguments.below_seconds)):
        if seconds <= 0:
            continue
        runs: dict[str, list[dict[str, Any]]] = {policy: [] for policy in POLICIES}
        for _ in range(arguments.runs):
            for policy in POLICIES:  # interleaved, so that a busy neighbour on a shared machine slows both
                result = reaction(limit, seconds, SCENARIOS[name], policy)
                if result is not None:
                    runs[policy].append(result)
        pooled = {policy: _pooled(results) for policy, results in runs.items() if results}
        if len(pooled) == 2 and arguments.runs > 1:
            for policy, result in pooled.items():
                count = len(result["latencies"])
                report(f"{name}, {policy}, {len(runs[policy])} runs pooled, {count} cleanups: {_describe(result)}")
        if len(pooled) == 2:
            _ratios(pooled["adaptive"], pooled["fixed 250 ms"])
    for _ in range(0 if arguments.skip_cpu else arguments.runs):
        cpu_share(arguments.cpu_seconds)


if __name__ == "__main__":
    main()
