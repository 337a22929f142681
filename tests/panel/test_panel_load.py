"""Issue 9: the standalone server under load while hooked node executions run in a worker thread.

50 HTTP clients poll the status and the history, 20 websockets read, one websocket never reads, and 2,000 node
executions run through the executor hook (the built-in subscriber records optimizations that the hub pushes). No
request fails, every reader keeps getting updates, the history and the sample ring stay bounded, and memory after
all the nodes is within 5 MB of memory after the first 100. The long version is ``benchmarks/bench_load.py``.
"""

from __future__ import annotations

from pathlib import Path

from tests.panel.load_harness import MAX_HISTORY, RING_MAX_SAMPLES, run_load

NODES = 2000
HTTP_CLIENTS = 50
WS_CLIENTS = 20
MAX_GAP_SECONDS = 2.0
MAX_GROWTH_BYTES = 5 * 1024 * 1024


async def test_the_server_stays_responsive_and_bounded_under_load(tmp_path: Path) -> None:
    result = await run_load(tmp_path, nodes=NODES, http_clients=HTTP_CLIENTS, ws_clients=WS_CLIENTS, interval=0.25)

    assert result.errors == []
    assert result.nodes_run == NODES
    assert set(result.statuses) == {200} and result.requests > HTTP_CLIENTS
    assert len(result.ws_max_gaps) == WS_CLIENTS
    assert min(result.ws_updates) > 0
    assert max(result.ws_max_gaps) < MAX_GAP_SECONDS, result.ws_max_gaps
    assert result.dropped_clients <= 1  # the reader that never reads, at most: a burst drops no reader
    assert 0 < result.max_history_seen <= MAX_HISTORY
    assert 0 < result.max_ring_seen <= RING_MAX_SAMPLES
    assert result.rss_after_baseline > 0
    assert result.growth_bytes < MAX_GROWTH_BYTES, f"RSS grew {result.growth_bytes / 2**20:.1f} MB"
