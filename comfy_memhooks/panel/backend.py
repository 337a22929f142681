"""What the Memory panel is served from, in ComfyUI and standalone alike: state, payloads and live pushes.

The routes (``routes.py``) are thin: each calls one method here. The host gives a :class:`Publisher`: ComfyUI's
``PromptServer.send_sync`` inside ComfyUI, the standalone server's own websocket outside it. Pushes are skipped
while no browser is connected, and the sample loop then takes no readings at all.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .. import hook, signals
from ..engine.core import Engine
from ..engine.history import OptimizationRecord
from ..engine.modes import Mode
from ..failures import Failures
from ..pipeline import EndStep, NodePipeline, hook_failures
from ..probe.readings import MemorySnapshot
from ..profile.store import ProfileStore
from ..triggers.learned_file import LearnedFile, load_learned_file
from ..triggers.settings import SettingsStore
from ..triggers.watchdog import PressureWatchdog
from .manual import ManualRequests
from .manual_answer import ManualAnswer
from .node_stats import NodeStats
from .payloads import (
    EVENT_HOOK,
    EVENT_MANUAL,
    EVENT_OPTIMIZATION,
    EVENT_PROMPT,
    EVENT_SETTINGS,
    EVENT_STATUS,
    check_json,
    comfyui_json,
    hook_json,
    manual_json,
    node_event_json,
    predictions_json,
    process_json,
    profile_answer_json,
    prompt_event_json,
    record_json,
    registered_failures_json,
    sample_json,
    settings_json,
    snapshot_json,
)
from .sampler import RING_SECONDS, Sample, SampleRing, sample_loop

if TYPE_CHECKING:
    from .metrics import MetricsExporter

logger = logging.getLogger(__name__)


class Publisher(Protocol):
    """Where live events go: a websocket broadcast that any thread may call."""

    def publish(self, event: str, payload: dict[str, Any]) -> None: ...

    def has_clients(self) -> bool: ...


class PanelBackend:
    """The panel's server side, shared by ComfyUI's server and the standalone one.

    Args:
        engine: the engine whose readings, cooldown and history the panel shows.
        store: the automatic policy's settings.
        publisher: where live events go.
        interval: seconds between live samples; the settings' ``sample_interval_seconds`` when not given.
        busy: whether the host runs a prompt (see :class:`manual.ManualRequests`).
        ring: the recent samples; a new ten-minute ring when not given.
        watchdog: the pressure watchdog, when the host runs one (inside ComfyUI, with the executor hook).
        profiles: the per-node profile; an empty store of its own by default (the standalone panel's).
        peak_vram_by_class: the last prompt's per-node peak VRAM by node class, for the metrics; the profile's
            by default.
        peak_ram_by_class: the same for the RAM each node needed while it ran; the profile's by default.
        learned: predictive cleanup's learned peaks; those at the default path by default, read when first asked
            for.
        pipeline: where the manual requests' steps go (the runtime's); one of its own by default.
    """

    def __init__(
        self,
        engine: Engine,
        store: SettingsStore,
        publisher: Publisher,
        *,
        interval: Callable[[], float] | None = None,
        busy: Callable[[], bool] | None = None,
        ring: SampleRing | None = None,
        watchdog: Callable[[], PressureWatchdog | None] | None = None,
        profiles: ProfileStore | None = None,
        peak_vram_by_class: Callable[[], Mapping[str, int]] | None = None,
        peak_ram_by_class: Callable[[], Mapping[str, int]] | None = None,
        learned: Callable[[], LearnedFile] | None = None,
        pipeline: NodePipeline | None = None,
    ):
        self.pipeline = pipeline if pipeline is not None else NodePipeline(hook_failures)
        self.engine = engine
        self.profiles = profiles if profiles is not None else ProfileStore()
        self.learned = learned if learned is not None else functools.cache(load_learned_file)
        self._watchdog = watchdog if watchdog is not None else (lambda: None)
        self.store = store
        self.publisher = publisher
        self.ring = ring if ring is not None else SampleRing(RING_SECONDS)
        self.failures = Failures(logger, "Memory panel: {kind} failed; it goes on")
        self.manual = ManualRequests(
            engine,
            lambda: store.current,
            busy=busy if busy is not None else (lambda: False),
            on_done=self._manual_done,
            pipeline=pipeline,
        )
        self._interval = interval if interval is not None else (lambda: store.current.sample_interval_seconds)
        self.loop = sample_loop(self.tick, self._interval)
        self.node_stats = NodeStats()
        self._peak_vram_by_class = peak_vram_by_class or self.profiles.peak_vram_by_class
        self._peak_ram_by_class = peak_ram_by_class or self.profiles.peak_ram_by_class
        self._exporter: MetricsExporter | None = None  # the metrics' registry, made on the first scrape
        self._exporter_lock = threading.Lock()
        self._connected = False

    # Life cycle -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribes to the signals (strongly: bound methods) and starts the sample loop; twice is a no-op."""
        if not self._connected:
            self.manual.connect()
            signals.optimization_performed.connect(self._on_optimization, weak=False)
            # Hook activity is shown for heavy nodes only: listening to these, ordinary nodes cost the panel nothing.
            signals.heavy_node_started.connect(self._on_node_started, weak=False)
            signals.heavy_node_finished.connect(self._on_node_finished, weak=False)
            signals.prompt_started.connect(self._on_prompt_started, weak=False)
            signals.prompt_finished.connect(self._on_prompt_finished, weak=False)
            # Every node: the metrics' duration histograms (a few additions per node; see node_stats).
            self.pipeline.set_end(EndStep.METRICS, self.node_stats.after_node)
            self._connected = True
        self.loop.start()

    def close(self) -> None:
        self.loop.stop()
        self.manual.close()
        signals.optimization_performed.disconnect(self._on_optimization)
        signals.heavy_node_started.disconnect(self._on_node_started)
        signals.heavy_node_finished.disconnect(self._on_node_finished)
        signals.prompt_started.disconnect(self._on_prompt_started)
        signals.prompt_finished.disconnect(self._on_prompt_finished)
        self.pipeline.clear(EndStep.METRICS, self.node_stats.after_node)
        self._connected = False

    # What the routes serve ----------------------------------------------------------------------------------------

    def status(self, snapshot: MemorySnapshot | None = None) -> dict[str, Any]:
        """RAM with its source and limit, each GPU, the engine's state, the hook's, and the errors counted."""
        snapshot = snapshot if snapshot is not None else self.engine.snapshot()
        settings = self.store.current
        hook_status = hook.hook_status()
        return {
            "snapshot": snapshot_json(snapshot),
            "engine": {
                "cooldown_seconds": settings.thresholds.cooldown_seconds,
                "cooldown_remaining_seconds": self.engine.cooldown_remaining(settings.thresholds.cooldown_seconds),
                "optimizations_total": self.engine.history.total_recorded,
                "prompt_running": self.manual.prompt_running,
                "pending_manual_mode": None if self.manual.pending is None else self.manual.pending.value,
            },
            "policy": {
                "enabled": settings.enabled,
                "ram_threshold": settings.thresholds.ram_percent,
                "vram_threshold": settings.thresholds.vram_percent,
                "sample_interval_seconds": self._safe_interval(),
            },
            "pressure": self._pressure(settings.pressure_watchdog),
            "hook": hook_json(hook_status),
            "comfyui": comfyui_json(snapshot, self.engine),
            "errors": {
                **registered_failures_json(),
                "action_failures": self.engine.action_failures.count,
                "last_action_error": self.engine.action_failures.last_error,
                "panel_failures": self.panel_failure_count(),
                "last_panel_error": self.failures.last_error or self.loop.failures.last_error,
                "probe_failures": self.engine.probe.failure_count(),
                "last_probe_error": self.engine.probe.last_failure(),
                "settings_warning": self.store.load_warning,
            },
        }

    def _watchdog_failures(self) -> Failures | None:
        watchdog = self._watchdog()
        return None if watchdog is None else watchdog.failures

    def panel_failure_count(self) -> int:
        """The panel's own failures: its requests' and pushes', and its sample loop's."""
        return self.failures.count + self.loop.failures.count

    def metrics(self) -> tuple[bytes, str]:
        """The Prometheus exposition and its content type, built now from the state kept anyway.

        ``prometheus_client`` is loaded on the first scrape, so a server nobody scrapes never loads it; without
        it this raises ``ImportError``.
        """
        with self._exporter_lock:
            if self._exporter is None:
                from .metrics import MemhooksCollector, MetricsExporter

                self._exporter = MetricsExporter(
                    MemhooksCollector(
                        self.engine,
                        self.node_stats,
                        panel_failures=self.panel_failure_count,
                        watchdog_failures=self._watchdog_failures,
                        peak_vram_by_class=self._peak_vram_by_class,
                        peak_ram_by_class=self._peak_ram_by_class,
                        failures=self.failures,
                    )
                )
            exporter = self._exporter
        return exporter.render(), exporter.content_type

    def _pressure(self, watchdog_setting: bool) -> dict[str, Any]:
        """The gauge the hook reads before each node, the watchdog, and the latest cleanup the guard held back."""
        watchdog = self._watchdog()
        held = self.engine.last_held_back
        return {
            "held_back_total": self.engine.held_back_total,
            "last_held_back": None
            if held is None
            else {"at": held.at, "reason": held.reason, "kind": held.trigger.kind.value},
            "watchdog": None
            if watchdog is None
            else {
                "enabled": watchdog_setting,
                "running": watchdog.running,
                "ram_percent": watchdog.gauge.ram_percent,
                "over": watchdog.gauge.over,
                "watching_fast": watchdog.watching_fast,
                "cleanups": watchdog.cleanups,
                "failures": watchdog.failures.count,
            },
        }

    def history(self) -> dict[str, Any]:
        """The last optimizations (newest first) and the recent samples (oldest first) for the chart."""
        return {
            "records": [record_json(record) for record in self.engine.history.records()],
            "total_recorded": self.engine.history.total_recorded,
            "samples": [sample_json(sample) for sample in self.ring.samples()],
            "window_seconds": self.ring.window_seconds,
            "sample_interval_seconds": self._safe_interval(),
        }

    def processes(self) -> dict[str, Any]:
        """GPU processes: pid, name, GPU, memory; ``processes`` is ``None`` when they cannot be listed."""
        snapshot = self.engine.snapshot(include_processes=True)
        listed = snapshot.processes
        return {
            "processes": None if listed is None else [process_json(process) for process in listed],
            "gpus": [{"index": gpu.index, "name": gpu.name} for gpu in snapshot.gpus],
            "reason": snapshot.gpu_unavailable_reason if listed is None else None,
        }

    def profile(self, prompt_id: str | None = None) -> dict[str, Any] | None:
        """The latest prompt's per-node profile, or ``prompt_id``'s; ``None`` when that prompt is not kept."""
        profile = self.profiles.latest() if prompt_id is None else self.profiles.get(prompt_id)
        if profile is None and prompt_id is not None:
            return None
        store = self.profiles
        return profile_answer_json(profile, self.store.current.node_profile, store.prompt_ids(), store.prompts_kept)

    def predictions(self) -> dict[str, Any]:
        """Predictive cleanup's classes: each one's last predicted peaks beside what the node then took."""
        learned = self.learned()
        return predictions_json(learned, self.store.current.predictive_cleanup)

    def optimize(self, mode: Mode) -> dict[str, Any]:
        """A manual request: done now, queued for the next node boundary, or held by the cooldown."""
        return manual_json(self.manual.request(mode))

    def settings(self) -> dict[str, Any]:
        return settings_json(self.store.current, self.store.load_warning)

    def update_settings(self, raw: object) -> dict[str, Any]:
        """Validates and saves; :class:`errors.InvalidSetting` names the first bad field and nothing changes."""
        updated = self.store.update(raw)
        payload = settings_json(updated, self.store.load_warning)
        self._publish(EVENT_SETTINGS, payload)
        return payload

    # Live -----------------------------------------------------------------------------------------------------------

    def tick(self) -> None:
        """One interval: carry out a request that waited for the host to be idle, then sample if anyone watches."""
        self.manual.poll()
        if self.publisher.has_clients():
            self.sample_now()

    def sample_now(self) -> Sample:
        """Reads memory, keeps the sample for the chart and pushes it with the full status."""
        snapshot = self.engine.snapshot()
        sample = Sample.of(snapshot)
        self.ring.add(sample)
        payload = self.status(snapshot)
        payload["sample"] = sample_json(sample)
        self._publish(EVENT_STATUS, payload)
        return sample

    def _safe_interval(self) -> float:
        try:
            return float(self._interval())
        except Exception:  # the loop falls back to one second in the same case.
            return 1.0

    def _publish(self, event: str, payload: dict[str, Any]) -> None:
        if not self.publisher.has_clients():
            return
        try:
            self.publisher.publish(event, check_json(payload))
        except Exception as error:  # a closed socket or a stopped loop must not reach the signal's sender.
            self.failures.record(f"push {event}", error)

    def _push(self, event: str, build: Callable[[], dict[str, Any]]) -> None:
        """Builds and pushes a payload from a signal receiver; any failure is contained and counted here."""
        if not self.publisher.has_clients():
            return
        try:
            payload = build()
        except Exception as error:  # a payload that cannot be sent is counted; the executor never sees it.
            self.failures.record(f"build {event}", error)
            return
        self._publish(event, payload)

    def _manual_done(self, answer: ManualAnswer) -> None:
        self._push(EVENT_MANUAL, lambda: manual_json(answer))

    # Receivers (ComfyUI's worker thread for node and prompt signals) ------------------------------------------------

    def _on_optimization(self, sender: Any, **kwargs: Any) -> None:
        if sender is not self.engine:
            return
        record: OptimizationRecord | None = kwargs.get("record")
        if record is None:
            return
        self._push(EVENT_OPTIMIZATION, lambda: {"record": record_json(record)})

    def _on_node_started(self, sender: Any, **kwargs: Any) -> None:
        self._push(EVENT_HOOK, lambda: node_event_json("started", kwargs))

    def _on_node_finished(self, sender: Any, **kwargs: Any) -> None:
        self._push(EVENT_HOOK, lambda: node_event_json("finished", kwargs))

    def _on_prompt_started(self, sender: Any, **kwargs: Any) -> None:
        self._push(EVENT_PROMPT, lambda: prompt_event_json("started", kwargs))

    def _on_prompt_finished(self, sender: Any, **kwargs: Any) -> None:
        self._push(EVENT_PROMPT, lambda: prompt_event_json("finished", kwargs))
