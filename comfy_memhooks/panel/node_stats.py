"""What the metrics keep per node, from the per-node pipeline's last step: durations by class, and OOM rescues.

Neither exists elsewhere: the hook measures each node's duration and forgets it, and a rescue's outcome reaches
only the history's text. So one step adds each executed node's duration to its class's histogram (a binary
search and three additions under a lock) and counts rescues by outcome; a scrape reads them.

The number of classes kept is bounded by :data:`MAX_NODE_CLASSES`: a server that runs thousands of different
node classes must not grow memory (or a Prometheus series count) without end. Classes seen after the bound is
reached are added up under :data:`OTHER_CLASSES`. At the bound, the histograms take about 500 x 17 counters.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..engine.totals import Buckets, HistogramReading
from ..pipeline import NodeEnding, NodeInfo

NODE_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Upper bounds of the node-duration buckets: from an image inversion (milliseconds) to a video diffusion sampler
(minutes); ``+Inf`` is implied."""

MAX_NODE_CLASSES = 500
"""Node classes given a histogram of their own; ComfyUI's core and a large install register about 1,000, a
workflow uses a few dozen."""

OTHER_CLASSES = "(other)"
"""The class label under which nodes of classes beyond :data:`MAX_NODE_CLASSES` are counted."""


@dataclass(frozen=True, slots=True)
class NodeStatsReading:
    """What the receiver has counted since it was connected.

    Attributes:
        durations: each node class's duration histogram, in the order the classes were first seen.
        rescues_succeeded: OOM rescues whose second run succeeded.
        rescues_failed: OOM rescues whose second run failed too.
    """

    durations: tuple[tuple[str, HistogramReading], ...]
    rescues_succeeded: int
    rescues_failed: int


class NodeStats:
    """Node durations by class and OOM rescues; :meth:`on_node_finished` is the ``node_finished`` receiver.

    Nodes served from ComfyUI's cache are not timed: their near-zero durations would hide the class's real ones.
    A node that failed is timed (it ran for that long).

    Only ComfyUI's worker thread adds durations, so a class seen before is counted without the lock, which guards
    the set of classes a scrape iterates over; a scrape at that very moment may find the node's duration in its
    bucket's count and not yet in the sum, or the other way round, never lost or counted twice.

    Args:
        max_classes: the bound on classes with a histogram of their own.
    """

    def __init__(self, max_classes: int = MAX_NODE_CLASSES):
        self._max_classes = max_classes
        self._by_class: dict[str, Buckets] = {}
        self._lock = threading.Lock()
        self._rescues = [0, 0]  # succeeded, failed

    def after_node(self, run: NodeInfo, ending: NodeEnding) -> None:
        """The per-node pipeline's last step after every node: its duration, and the outcome of a rescue."""
        if ending.rescued is not None:
            with self._lock:
                self._rescues[0 if ending.rescued else 1] += 1
        if ending.cached:
            return
        buckets = self._by_class.get(run.node_class)
        if buckets is None:  # a new class: the dict grows, under the lock a scrape iterates it with
            self.observe(run.node_class, ending.duration_seconds)
        else:  # a class seen before, the common case: no lock, see the class docstring
            buckets.observe(ending.duration_seconds)

    def observe(self, node_class: str, duration_seconds: float) -> None:
        with self._lock:
            buckets = self._by_class.get(node_class)
            if buckets is None:
                if len(self._by_class) >= self._max_classes:
                    node_class = OTHER_CLASSES
                buckets = self._by_class.get(node_class)
                if buckets is None:
                    buckets = self._by_class[node_class] = Buckets(NODE_BUCKETS_SECONDS)
            buckets.observe(duration_seconds)

    def read(self) -> NodeStatsReading:
        with self._lock:
            return NodeStatsReading(
                durations=tuple((name, buckets.read()) for name, buckets in self._by_class.items()),
                rescues_succeeded=self._rescues[0],
                rescues_failed=self._rescues[1],
            )
