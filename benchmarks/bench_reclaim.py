"""Reclaim after a fragmenting node: the share of left-behind memory each mode returns, beside gc.collect().

    python benchmarks/bench_reclaim.py [--runs 5] [--frames 200]

Each case runs ``fragmenting_node.py`` in a fresh interpreter, ``--runs`` times, in interleaved order, and the
medians are printed: the share of what the node left behind that went back to the system, and how long the
cleanup took. ``gc`` (Python's collection alone) is the baseline of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ("gc", "Conservative", "Balanced", "Aggressive")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--frames", type=int, default=200)
    arguments = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {case: [] for case in CASES}
    for _ in range(arguments.runs):
        for case in CASES:
            output = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "benchmarks" / "fragmenting_node.py"),
                    "--cleanup",
                    case,
                    "--frames",
                    str(arguments.frames),
                    "--json",
                ],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            ).stdout
            results[case].append(json.loads(output))
    mib = 1024**2
    left = statistics.median(r["after_node_bytes"] - r["baseline_bytes"] for r in results["gc"]) / mib
    sys.stdout.write(f"{arguments.frames} frames of 4 MiB; the node leaves {left:.0f} MiB behind (median)\n")
    sys.stdout.write(f"{'cleanup':<14}{'reclaimed':>10}{'vs gc':>11}{'duration':>12}\n")
    gc_share = statistics.median(r["reclaimed_share"] for r in results["gc"])
    for case in CASES:
        share = statistics.median(r["reclaimed_share"] for r in results[case])
        duration = statistics.median(r["cleanup_seconds"] for r in results[case]) * 1000
        sys.stdout.write(f"{case:<14}{share:>10.1%}{(share - gc_share) * 100:>+9.1f}pt{duration:>9.1f} ms\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
