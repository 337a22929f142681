"""A node that fragments the heap the way video and face-swap nodes do, then a cleanup, measured by RSS.

Frame-sized buffers are allocated with a small object between each two that outlives them (a face record, a
frame index). When the frames are freed, glibc cannot shrink the heap past the survivors, so the memory stays
inside the process. Run on its own, in a fresh interpreter, so RSS is this process's alone:

    python benchmarks/fragmenting_node.py --cleanup gc
    python benchmarks/fragmenting_node.py --cleanup Balanced --json
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time

import psutil

from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import Trigger, TriggerKind
from comfy_memhooks.engine.modes import Mode
from comfy_memhooks.engine.request import CleanupRequest

FRAME_BYTES = 4 * 1024**2  # a 1024x1024 RGBA frame
SURVIVOR_BYTES = 3000  # above pymalloc's 512-byte limit, so it comes from the same heap as the frames


def run_node(frames: int) -> list[bytearray]:
    """Allocates and touches ``frames`` frames; returns the small survivors, frees the frames."""
    # A large block freed first raises glibc's dynamic mmap threshold, as a node's first frees do, so the
    # frames that follow come from the heap rather than from their own mappings.
    warm_up = bytearray(8 * 1024**2)
    del warm_up
    buffers = []
    survivors = []
    for _ in range(frames):
        frame = bytearray(FRAME_BYTES)
        frame[::4096] = b"\x01" * len(range(0, FRAME_BYTES, 4096))  # touch every page, as decoding would
        buffers.append(frame)
        survivors.append(bytearray(SURVIVOR_BYTES))
    del buffers
    return survivors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cleanup", default="gc", help="'none', 'gc', or a mode name")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()

    process = psutil.Process()
    engine = Engine()
    engine.snapshot()  # probes warmed up before the baseline
    gc.collect()
    baseline = process.memory_info().rss
    survivors = run_node(arguments.frames)
    after_node = process.memory_info().rss
    started = time.perf_counter()
    if arguments.cleanup == "gc":
        gc.collect()
    elif arguments.cleanup != "none":
        engine.run(
            CleanupRequest(
                trigger=Trigger(kind=TriggerKind.MANUAL, reason="benchmark"), mode=Mode.parse(arguments.cleanup)
            )
        )
    duration = time.perf_counter() - started
    after_cleanup = process.memory_info().rss
    left_behind = after_node - baseline
    result = {
        "cleanup": arguments.cleanup,
        "baseline_bytes": baseline,
        "after_node_bytes": after_node,
        "after_cleanup_bytes": after_cleanup,
        "reclaimed_share": (after_node - after_cleanup) / left_behind if left_behind > 0 else 0.0,
        "cleanup_seconds": duration,
        "survivors": len(survivors),
    }
    if arguments.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        mib = 1024**2
        sys.stdout.write(
            f"{arguments.cleanup}: baseline {baseline / mib:.0f} MiB, after node {after_node / mib:.0f} MiB, "
            f"after cleanup {after_cleanup / mib:.0f} MiB, reclaimed {result['reclaimed_share']:.1%} "
            f"in {duration * 1000:.1f} ms\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
