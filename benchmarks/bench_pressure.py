"""How fast the pressure watchdog reacts inside a long node, and what it costs while it watches. Run by hand:

    python benchmarks/bench_pressure.py            # needs root and a writable v1 memory cgroup for part one

Part one runs a "long node" inside a memory cgroup of its own (1.5 GB by default): the node keeps allocating
frame-sized buffers held in reference cycles and dropping them, batch after batch, as a face restore over many
frames does, while the watchdog runs with the default settings (RAM threshold 80%, readings every 250 ms while a
prompt runs). For each crossing of the threshold it prints the time from the first reading at or above the
threshold, taken by the node itself after each buffer, to the start of the watchdog's cleanup; medians and the
90th percentile over all crossings.

Part two times one watchdog tick (median of 400) between prompts (a tick every 2 s), while a prompt runs under the
threshold (every 250 ms), and while a prompt runs over the threshold with nothing new to free (every 250 ms, the
guard holding back), and gives the share of one core that makes; the baseline is one reading of the RAM probe,
timed in the same run. As a cross-check, the watchdog thread's own CPU time over ten seconds of each
(``/proc/self/task/<tid>/stat`` through psutil, counted in clock ticks of 10 ms).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from comfy_memhooks import signals  # noqa: E402
from comfy_memhooks.engine.core import Engine  # noqa: E402
from comfy_memhooks.engine.history import OptimizationRecord, TriggerKind  # noqa: E402
from comfy_memhooks.engine.pressure import PressureGauge  # noqa: E402
from comfy_memhooks.engine.settings import SettingsStore  # noqa: E402
from comfy_memhooks.engine.watchdog import FAST_SECONDS, IDLE_SECONDS, PressureWatchdog  # noqa: E402
from tests.cgroups import enter_group_launcher, limited_v1_group  # noqa: E402

MIB = 1024**2
GIB = 1024**3


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _watchdog(engine: Engine, **settings: Any) -> PressureWatchdog:
    store = SettingsStore(Path(tempfile.mkdtemp(prefix="memhooks-bench-")) / "comfy_memhooks.json")
    store.load()  # nothing in the file: the defaults, unless a phase of part two changes the threshold
    if settings:
        store.update(settings)
    return PressureWatchdog(engine, lambda: store.current, PressureGauge())


def _start_prompt() -> None:
    signals.send_safely(signals.prompt_started, "bench", prompt_id="bench")


def _end_prompt() -> None:
    signals.send_safely(
        signals.prompt_finished, "bench", prompt_id="bench", success=True, duration_seconds=0.0, error=None
    )


def long_node(seconds: float, frame_mb: int, frames_per_batch: int, frame_seconds: float) -> None:
    """Part one's child, inside the cgroup: the long node and the watchdog; prints one latency per cleanup."""
    engine = Engine()
    watchdog = _watchdog(engine)
    threshold = 80.0
    cleanups: list[float] = []

    def on_record(sender: Any, *, record: OptimizationRecord, **_: Any) -> None:
        if record.trigger.kind is TriggerKind.WATCHDOG:
            cleanups.append(record.started_at)

    signals.optimization_performed.connect(on_record, weak=False)
    gc.disable()  # as in a process whose oldest generation is rarely collected: only the watchdog frees
    watchdog.start()
    _start_prompt()
    latencies: list[float] = []
    crossed_at: float | None = None
    seen = 0
    ends = time.monotonic() + seconds
    batch = 0
    while time.monotonic() < ends:
        records: dict[str, Any] = {"frames": []}
        records["self"] = records
        for index in range(frames_per_batch):
            frame = np.empty(frame_mb * MIB // 4, dtype=np.float32)
            frame.fill(float(batch + index))
            records["frames"].append(frame)
            percent = engine.probe.read_ram().percent or 0.0
            if len(cleanups) > seen:
                if crossed_at is not None:
                    latencies.append(cleanups[seen] - crossed_at)
                seen = len(cleanups)
                crossed_at = None
            if crossed_at is None and percent >= threshold and len(cleanups) == seen:
                crossed_at = time.time()
            time.sleep(frame_seconds)
        del records
        batch += 1
    _end_prompt()
    watchdog.stop()
    report(" ".join(f"{latency:.4f}" for latency in latencies))
    report(f"cleanups {len(cleanups)} batches {batch}")


def reaction(limit: int, seconds: float) -> None:
    with limited_v1_group(limit) as group:
        if group is None:
            report("part one skipped: cannot create a v1 memory cgroup here (needs root)")
            return
        command = [*enter_group_launcher(group), sys.executable, __file__, "--child", str(seconds)]
        output = subprocess.run(command, capture_output=True, text=True, check=False)
        oom = (group / "memory.oom_control").read_text()
    if output.returncode != 0:
        report(f"the long node failed ({output.returncode}): {output.stderr[-2000:]}\n{oom}")
        return
    lines = output.stdout.splitlines()
    latencies = sorted(float(value) for value in lines[0].split()) if lines and lines[0] else []
    if not latencies:
        report(f"no crossing was measured: {output.stdout}")
        return
    p90 = latencies[int(0.9 * (len(latencies) - 1))]
    report(
        f"threshold crossed to watchdog cleanup started, {len(latencies)} crossings in a {limit / GIB:.1f} GB cgroup: "
        f"median {statistics.median(latencies) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms (target 500 ms; reading interval 250 ms); {lines[1]}"
    )


def _thread_cpu_seconds(native_id: int) -> float:
    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return float(thread.user_time + thread.system_time)
    raise RuntimeError("the watchdog thread is gone")


def cpu_share(seconds: float) -> None:
    engine = Engine()
    reads = []
    for _ in range(2000):
        started = time.perf_counter_ns()
        engine.probe.read_ram()
        reads.append(time.perf_counter_ns() - started)
    read_us = statistics.median(reads) / 1000
    report(f"one RAM reading (the baseline): median {read_us:.1f} µs")

    phases: list[tuple[str, dict[str, Any], bool, float]] = [
        ("between prompts", {}, False, IDLE_SECONDS),
        ("prompt, under the threshold", {"ram_threshold": 100.0}, True, FAST_SECONDS),
        ("prompt, over the threshold, guard holding", {"ram_threshold": 0.1}, True, FAST_SECONDS),
    ]
    for label, settings, prompt, interval in phases:
        watchdog = _watchdog(engine, **settings)
        if prompt:
            watchdog._on_prompt_started("bench", prompt_id="bench")
        watchdog.tick()  # over the threshold, the first tick cleans up; the guard holds back the next ones
        ticks = []
        for _ in range(400):
            started = time.perf_counter_ns()
            watchdog.tick()
            ticks.append(time.perf_counter_ns() - started)
        tick_seconds = statistics.median(ticks) / 1e9
        report(
            f"{label:42} one tick {tick_seconds * 1e6:6.1f} µs ({tick_seconds * 1e6 / read_us:.2f}x a reading), "
            f"every {interval:g} s: {tick_seconds / interval * 100:.4f}% of one core"
        )
        watchdog.start()  # the same, measured on the thread itself (psutil counts in clock ticks of 10 ms)
        native_id = watchdog.thread.native_id
        assert native_id is not None
        before_cpu, before_wall = _thread_cpu_seconds(native_id), time.perf_counter()
        time.sleep(seconds)
        cpu = _thread_cpu_seconds(native_id) - before_cpu
        wall = time.perf_counter() - before_wall
        watchdog.stop()
        report(f"{'':42} thread: {cpu * 1000:.0f} ms CPU in {wall:.1f} s ({cpu / wall * 100:.4f}% of one core)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit-gb", type=float, default=1.5)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--cpu-seconds", type=float, default=10.0)
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child is not None:
        long_node(arguments.child, frame_mb=8, frames_per_batch=12, frame_seconds=0.02)
        return
    reaction(int(arguments.limit_gb * GIB), arguments.seconds)
    cpu_share(arguments.cpu_seconds)


if __name__ == "__main__":
    main()
