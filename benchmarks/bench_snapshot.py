"""Cost of one snapshot, without and with the GPU process list; median of many, in microseconds.

    python benchmarks/bench_snapshot.py [--repeat 2000]

Without a GPU (the target: under 100 µs) the cost is RAM alone; with NVML it adds a call per GPU. The baseline
is ``psutil.virtual_memory()`` alone, measured in the same run, so the ratio survives a noisy machine. The GPU
reading runs on the deadline thread (:mod:`comfy_memhooks.probe.deadline`); its hand-off is measured against
calling the GPU probe directly.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import psutil

from comfy_memhooks.probe.deadline import Deadline
from comfy_memhooks.probe.memory import MemoryProbe


def median_microseconds(function: Callable[[], object], repeat: int) -> float:
    for _ in range(50):
        function()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter_ns()
        function()
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2000)
    arguments = parser.parse_args()
    probe = MemoryProbe()
    snapshot = probe.snapshot(include_processes=True)
    baseline = median_microseconds(psutil.virtual_memory, arguments.repeat)
    plain = median_microseconds(probe.snapshot, arguments.repeat)
    with_processes = median_microseconds(lambda: probe.snapshot(include_processes=True), arguments.repeat)
    direct = median_microseconds(probe.gpu.read, arguments.repeat)
    deadline = Deadline("benchmark")
    through_deadline = median_microseconds(lambda: deadline.call(probe.gpu.read), arguments.repeat)
    sys.stdout.write(
        f"RAM source: {snapshot.ram.source.value}; GPUs: {len(snapshot.gpus)} ({snapshot.gpu_source})\n"
        f"baseline psutil.virtual_memory(): {baseline:8.1f} µs\n"
        f"snapshot():                       {plain:8.1f} µs  ({plain / baseline:.2f}x baseline)\n"
        f"snapshot(include_processes=True): {with_processes:8.1f} µs  ({with_processes / baseline:.2f}x baseline)\n"
        f"GPU reading, called directly:     {direct:8.1f} µs\n"
        f"GPU reading, on the deadline thread: {through_deadline:5.1f} µs  (+{through_deadline - direct:.1f} µs)\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
