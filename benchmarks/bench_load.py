"""The standalone server under load while 10,000 hooked node executions run (issue 9's long version; by hand).

    python benchmarks/bench_load.py [--nodes 10000] [--repeat 1]

50 HTTP clients poll the status and the history, 20 websockets read and one never reads, on 127.0.0.1 only.
Prints requests served, p50/p99 HTTP latency, the largest websocket update gap, and resident memory after all the
nodes against after the first 100 (medians where repeated). The CI version is tests/panel/test_panel_load.py.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.panel.load_harness import run_load  # noqa: E402


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--http-clients", type=int, default=50)
    parser.add_argument("--ws-clients", type=int, default=20)
    arguments = parser.parse_args()
    results = []
    for _ in range(arguments.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(
                asyncio.run(
                    run_load(
                        Path(tmp), nodes=arguments.nodes, http_clients=arguments.http_clients,
                        ws_clients=arguments.ws_clients,
                    )
                )
            )  # fmt: skip
    errors = [error for result in results for error in result.errors]

    def median(values: list[float]) -> float:
        return statistics.median(values)

    report(
        f"nodes run: {results[0].nodes_run} x {len(results)} run(s), {median([r.seconds for r in results]):.1f} s each"
    )
    report(f"requests served: {median([r.requests for r in results]):.0f} (statuses {results[0].statuses})")
    report(f"HTTP latency p50: {median([r.latency_ms(0.5) for r in results]):.2f} ms")
    report(f"HTTP latency p99: {median([r.latency_ms(0.99) for r in results]):.2f} ms")
    report(f"websocket updates per reader (min): {median([min(r.ws_updates) for r in results]):.0f}")
    report(f"websocket update gap (max over readers): {median([max(r.ws_max_gaps) for r in results]):.3f} s")
    dropped = median([r.dropped_clients for r in results])
    report(f"history max seen: {max(r.max_history_seen for r in results)}, ring max seen: "
           f"{max(r.max_ring_seen for r in results)}, clients dropped: {dropped}")  # fmt: skip
    growth = median([r.growth_bytes / 2**20 for r in results])
    report(f"RSS after first 100 nodes: {results[0].rss_after_baseline / 2**20:.1f} MB; "
           f"growth after {results[0].nodes_run}: {growth:+.2f} MB")  # fmt: skip
    report(f"errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))


if __name__ == "__main__":
    main()
