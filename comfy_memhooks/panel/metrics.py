"""``GET /memhooks/metrics``: the Prometheus exposition, built by ``prometheus_client`` when someone scrapes.

Nothing is counted for the metrics alone but what nothing else keeps (:mod:`.node_stats`, and the history's
totals): the collector reads the engine's snapshot, history totals and failure counters at scrape time, so a
server nobody scrapes pays nothing but that one receiver. The registry is this package's own, never the library's
global ``REGISTRY``, which other code in ComfyUI's process may fill (and whose process metrics would come along).

Metric names start with ``comfy_memhooks_`` and carry their unit (``_bytes``, ``_seconds``, ``_total``). Values
are the ones ``/memhooks/status`` shows, from the same sources; a value that cannot be read (VRAM without a GPU)
is left out rather than reported as 0.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from .. import hook
from ..engine.core import Engine
from ..engine.totals import HistogramReading
from ..failures import Failures, failure_registry
from .node_stats import MAX_NODE_CLASSES, NodeStats

PREFIX = "comfy_memhooks_"
PeakProvider = Callable[[], Mapping[str, int]]
"""Per-node peak RAM or VRAM of the last prompt, by node class (bytes): the per-node profile's store gives it."""


@functools.cache
def _bucket_labels(upper_bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` labels of a set of bounds, made once: a scrape formats hundreds of histograms with the same ones."""
    return (*(repr(float(bound)) for bound in upper_bounds), "+Inf")


def _buckets(reading: HistogramReading) -> list[tuple[str, float]]:
    return list(zip(_bucket_labels(reading.upper_bounds), map(float, reading.cumulative_counts), strict=True))


class MemhooksCollector:
    """Yields every metric family from the state at the moment of the scrape.

    Args:
        engine: the engine whose readings, history totals and failures are shown.
        nodes: node durations by class and OOM rescues.
        panel_failures: the panel's contained failures, as ``/memhooks/status`` counts them.
        watchdog_failures: the pressure watchdog's failures, when the host runs one.
        peak_vram_by_class: the last prompt's per-node peak VRAM by class; no such metric without it.
        peak_ram_by_class: the same for the RAM each node needed while it ran (its peak, not what it left).
        failures: where a failing provider is counted (the panel's own).
    """

    def __init__(
        self,
        engine: Engine,
        nodes: NodeStats,
        *,
        panel_failures: Callable[[], int],
        watchdog_failures: Callable[[], Failures | None],
        peak_vram_by_class: PeakProvider | None,
        peak_ram_by_class: PeakProvider | None,
        failures: Failures,
    ):
        self.engine = engine
        self.nodes = nodes
        self._panel_failures = panel_failures
        self._watchdog_failures = watchdog_failures
        self._peak_vram_by_class = peak_vram_by_class
        self._peak_ram_by_class = peak_ram_by_class
        self._failures = failures

    def describe(self) -> Iterable[Metric]:
        """No samples: the registry asks for names only, and must not take a reading to get them."""
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._memory()
        yield from self._optimizations()
        yield from self._nodes()
        yield from self._errors()

    def _memory(self) -> Iterator[Metric]:
        snapshot = self.engine.snapshot()
        ram = snapshot.ram
        source = ram.source.value
        labels = ["source"]
        total = GaugeMetricFamily(
            f"{PREFIX}ram_total_bytes",
            "RAM limit: the memory cgroup's when it is below the host's RAM, else the host's RAM (label source).",
            labels=labels,
        )
        used = GaugeMetricFamily(
            f"{PREFIX}ram_used_bytes", "RAM in use against that limit, droppable page cache excluded.", labels=labels
        )
        rss = GaugeMetricFamily(f"{PREFIX}process_rss_bytes", "This process's resident set size.")
        for family, value in ((total, ram.total_bytes), (used, ram.used_bytes)):
            if value is not None:
                family.add_metric([source], value)
        if ram.process_rss_bytes is not None:
            rss.add_metric([], ram.process_rss_bytes)
        yield from (total, used, rss)
        gpu_labels = ["gpu", "name"]
        vram_total = GaugeMetricFamily(f"{PREFIX}vram_total_bytes", "Each GPU's memory.", labels=gpu_labels)
        vram_used = GaugeMetricFamily(
            f"{PREFIX}vram_used_bytes", "Each GPU's memory in use, by every process.", labels=gpu_labels
        )
        for gpu in snapshot.gpus:
            gpu_label = [str(gpu.index), gpu.name or ""]
            for family, value in ((vram_total, gpu.total_bytes), (vram_used, gpu.used_bytes)):
                if value is not None:
                    family.add_metric(gpu_label, value)
        yield from (vram_total, vram_used)

    def _optimizations(self) -> Iterator[Metric]:
        totals = self.engine.history.totals()
        labels = ["mode", "trigger"]
        count = CounterMetricFamily(
            f"{PREFIX}optimizations_total", "Optimizations performed, by mode and trigger.", labels=labels
        )
        freed = CounterMetricFamily(
            f"{PREFIX}freed_bytes_total",
            "Bytes optimizations returned, by memory (ram, vram), mode and trigger; one after which usage grew adds 0.",
            labels=["memory", *labels],
        )
        for cleanup in totals.cleanups:
            count.add_metric([cleanup.cleanup_name, cleanup.trigger], cleanup.count)
            freed.add_metric(["ram", cleanup.cleanup_name, cleanup.trigger], cleanup.ram_freed_bytes)
            freed.add_metric(["vram", cleanup.cleanup_name, cleanup.trigger], cleanup.vram_freed_bytes)
        duration = HistogramMetricFamily(
            f"{PREFIX}optimization_duration_seconds", "How long optimizations took, by mode.", labels=["mode"]
        )
        for cleanup_name, reading in totals.durations:
            duration.add_metric([cleanup_name], _buckets(reading), reading.total)
        held = CounterMetricFamily(
            f"{PREFIX}pressure_held_back_total",
            "Pressure cleanups the effectiveness guard held back (the last one freed too little).",
        )
        held.add_metric([], self.engine.held_back_total)
        yield from (count, freed, duration, held)

    def _nodes(self) -> Iterator[Metric]:
        reading = self.nodes.read()
        rescues = CounterMetricFamily(
            f"{PREFIX}oom_rescues_total",
            "Heavy nodes run once more after an out-of-memory failure, by whether the second run succeeded.",
            labels=["outcome"],
        )
        rescues.add_metric(["succeeded"], reading.rescues_succeeded)
        rescues.add_metric(["failed"], reading.rescues_failed)
        durations = HistogramMetricFamily(
            f"{PREFIX}node_duration_seconds",
            f"How long executed nodes took, by class (cached nodes not counted; {MAX_NODE_CLASSES} classes kept).",
            labels=["node_class"],
        )
        for node_class, histogram in reading.durations:
            durations.add_metric([node_class], _buckets(histogram), histogram.total)
        yield from (rescues, durations)
        yield from self._peaks(
            "node_peak_vram_bytes", "The last prompt's peak VRAM during a node, by class.", self._peak_vram_by_class
        )
        yield from self._peaks(
            "node_peak_ram_bytes",
            "The last prompt's peak RAM during a node (what it needed while it ran, above its start), by class.",
            self._peak_ram_by_class,
        )

    def _peaks(self, name: str, documentation: str, provider: PeakProvider | None) -> Iterator[Metric]:
        """One family of per-class peaks; none without a provider, or when it failed."""
        if provider is None:
            return
        try:
            peaks = [(str(node_class), int(peak)) for node_class, peak in list(provider().items())[:MAX_NODE_CLASSES]]
        except Exception as error:  # another part's store: the other metrics are still served, and it is counted.
            self._failures.record("reading the per-node peaks for the metrics", error)
            return
        family = GaugeMetricFamily(f"{PREFIX}{name}", documentation, labels=["node_class"])
        for node_class, peak in peaks:
            family.add_metric([node_class], peak)
        yield family

    def _errors(self) -> Iterator[Metric]:
        status = hook.hook_status()
        installed = GaugeMetricFamily(f"{PREFIX}hook_installed", "1 when ComfyUI's executor is hooked, else 0.")
        installed.add_metric([], 1 if status.installed else 0)
        errors = CounterMetricFamily(
            f"{PREFIX}errors_total",
            "Failures contained since start-up, by part (the errors /memhooks/status shows).",
            labels=["part"],
        )
        counts = {part: failures.count for part, failures in failure_registry.items()}
        counts.update(
            action=self.engine.action_failures.count,
            panel=self._panel_failures(),
            probe=self.engine.probe.failure_count(),
        )
        watchdog = self._watchdog_failures()
        if watchdog is not None:
            counts["watchdog"] = watchdog.count
        for part, count in counts.items():
            errors.add_metric([part], count)
        yield from (installed, errors)


class MetricsExporter:
    """A registry of the package's own holding the one collector, rendered in the text exposition format."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, collector: MemhooksCollector):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)
