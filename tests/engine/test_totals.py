"""The totals the metrics read: optimizations since start-up (beyond the history's bound) and node durations."""

from __future__ import annotations

import threading
from collections.abc import Callable

from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import Trigger, TriggerKind
from comfy_memhooks.engine.modes import Mode
from comfy_memhooks.engine.pressure import Thresholds
from comfy_memhooks.engine.request import CleanupRequest
from comfy_memhooks.engine.totals import Buckets, OptimizationTotals
from comfy_memhooks.panel.node_stats import OTHER_CLASSES, NodeStats
from comfy_memhooks.pipeline import NodeEnding
from tests.pipeline_support import NodeStub


def test_buckets_count_a_value_on_a_bound_in_that_bound() -> None:
    buckets = Buckets((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        buckets.observe(value)
    reading = buckets.read()
    assert reading.cumulative_counts == (2, 4, 5)
    assert reading.count == 5
    assert reading.total == 0.05 + 0.1 + 0.5 + 1.0 + 7.0


def test_freed_bytes_only_grow() -> None:
    totals = OptimizationTotals()
    totals.add("Balanced", "hook", 100, None, 0.2)
    totals.add("Balanced", "hook", -50, 30, 0.3)  # RSS grew (models moved from VRAM to RAM): adds 0, not -50
    totals.add("Model-free", "watchdog", 10, None, 0.01)
    reading = totals.read()
    assert [(c.cleanup_name, c.trigger, c.count, c.ram_freed_bytes, c.vram_freed_bytes) for c in reading.cleanups] == [
        ("Balanced", "hook", 2, 100, 30),
        ("Model-free", "watchdog", 1, 10, 0),
    ]
    assert reading.count == 3
    durations = dict(reading.durations)
    assert durations["Balanced"].count == 2
    assert durations["Model-free"].total == 0.01


def test_the_totals_keep_counting_past_the_history_bound(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    no_cooldown = Thresholds(80.0, 85.0, 0.0)
    for _ in range(13):
        engine.run(
            CleanupRequest(
                trigger=Trigger(kind=TriggerKind.MANUAL, reason="test"), mode=Mode.CONSERVATIVE, thresholds=no_cooldown
            )
        )
    assert len(engine.history.records()) == 10
    totals = engine.history.totals()
    assert totals.count == engine.history.total_recorded == 13
    assert [(c.cleanup_name, c.trigger, c.count) for c in totals.cleanups] == [("Conservative", "manual", 13)]
    assert dict(totals.durations)["Conservative"].count == 13


def test_node_classes_beyond_the_bound_are_added_up_as_other() -> None:
    stats = NodeStats(max_classes=3)
    for name in ("A", "B", "C", "D", "E", "A"):
        stats.observe(name, 1.0)
    counts = {name: reading.count for name, reading in stats.read().durations}
    assert counts == {"A": 2, "B": 1, "C": 1, OTHER_CLASSES: 2}


def test_the_step_skips_cached_nodes_and_counts_rescues() -> None:
    stats = NodeStats()
    stats.after_node(NodeStub("1", "X", "p", False), NodeEnding(None, False, 0.5, None, None))
    stats.after_node(NodeStub("2", "X", "p", False), NodeEnding(None, True, 0.0, None, None))
    stats.after_node(NodeStub("3", "R", "p", False), NodeEnding(None, False, 3.0, None, True))
    stats.after_node(NodeStub("4", "R", "p", False), NodeEnding(None, False, 1.0, None, False))
    reading = stats.read()
    assert {name: histogram.count for name, histogram in reading.durations} == {"X": 1, "R": 2}
    assert (reading.rescues_succeeded, reading.rescues_failed) == (1, 1)


def test_concurrent_nodes_and_reads_lose_nothing() -> None:
    stats = NodeStats()

    def worker(name: str) -> None:
        for _ in range(5000):
            stats.observe(name, 0.01)

    threads = [threading.Thread(target=worker, args=(f"C{index}",)) for index in range(4)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        for _, histogram in stats.read().durations:
            assert histogram.cumulative_counts[-1] == histogram.count
    for thread in threads:
        thread.join()
    assert {name: histogram.count for name, histogram in stats.read().durations} == {f"C{i}": 5000 for i in range(4)}
