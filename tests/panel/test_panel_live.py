"""Live pushes: samples only while a browser listens, optimizations and hook activity as they happen."""

from __future__ import annotations

import json
import sys
import threading
import types
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from comfy_memhooks import signals
from comfy_memhooks.comfy import bootstrap
from comfy_memhooks.comfy import panel as comfy_panel
from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import Trigger, TriggerKind
from comfy_memhooks.engine.modes import Mode
from comfy_memhooks.engine.request import CleanupRequest
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.panel.sampler import Sample, SampleRing, sample_loop
from comfy_memhooks.triggers.settings import SettingsStore
from tests.panel.panel_support import (
    RecordingPublisher,
    in_worker,
    no_gpu_engine,
    node_started,
    prompt_finished,
    prompt_started,
)


def test_no_browser_no_sampling(backend: PanelBackend, publisher: RecordingPublisher) -> None:
    publisher.clients = False
    for _ in range(3):
        backend.tick()
    assert len(backend.ring) == 0
    assert publisher.events == []


def test_each_tick_pushes_a_sample_with_the_status(backend: PanelBackend, publisher: RecordingPublisher) -> None:
    backend.tick()
    backend.tick()
    first, second = publisher.of("memhooks.status")
    assert second["sample"]["taken_at"] > first["sample"]["taken_at"]
    assert second["snapshot"]["ram"]["percent"] == second["sample"]["ram_percent"]
    assert set(second) >= {"snapshot", "engine", "policy", "hook", "errors", "sample"}
    assert [sample.taken_at for sample in backend.ring.samples()] == [
        first["sample"]["taken_at"],
        second["sample"]["taken_at"],
    ]


def test_the_sample_loop_follows_the_interval_setting(engine: Engine, settings_store: SettingsStore) -> None:
    settings_store.update({"sample_interval_seconds": 0.1})
    publisher = RecordingPublisher()
    backend = PanelBackend(engine, settings_store, publisher, pipeline=current_runtime().pipeline)
    backend.start()
    try:
        assert len(publisher.wait_for("memhooks.status", count=3)) >= 3
        assert set(publisher.threads) == {"comfy_memhooks-sampler"}
        status = publisher.of("memhooks.status")[-1]
        assert status["policy"]["sample_interval_seconds"] == 0.1
    finally:
        backend.close()
    assert not backend.loop.running


def test_a_failing_tick_is_counted_and_the_loop_goes_on() -> None:
    calls: list[int] = []
    done = threading.Event()

    def tick() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("NVML went away")
        done.set()

    loop = sample_loop(tick, lambda: 0.01)
    loop.start()
    try:
        assert done.wait(10)
    finally:
        loop.stop()
    assert loop.failures.count == 1
    assert loop.failures.last_error == "a tick: OSError: NVML went away"


def test_the_ring_keeps_ten_minutes_and_a_hard_bound() -> None:
    ring = SampleRing(window_seconds=600.0, max_samples=50)
    for second in range(0, 1200, 10):
        ring.add(Sample(float(second), 10.0, 1, None, ()))
    kept = ring.samples()
    assert kept[0].taken_at == 1190.0 - 490.0  # 50 samples: the hard bound cuts before the window does
    assert len(kept) == 50
    ring = SampleRing(window_seconds=600.0, max_samples=6000)
    for second in range(0, 1200, 10):
        ring.add(Sample(float(second), 10.0, 1, None, ()))
    assert ring.samples()[0].taken_at == 590.0


def test_optimizations_of_this_engine_are_pushed(
    backend: PanelBackend, publisher: RecordingPublisher, engine: Engine
) -> None:
    record = engine.run(
        CleanupRequest(trigger=Trigger(kind=TriggerKind.MANUAL, reason="test"), mode=Mode.CONSERVATIVE)
    ).record
    assert record is not None
    other = no_gpu_engine()
    other.run(CleanupRequest(trigger=Trigger(kind=TriggerKind.MANUAL, reason="another engine"), mode=Mode.CONSERVATIVE))
    (pushed,) = publisher.of("memhooks.optimization")
    assert pushed["record"]["sequence"] == record.sequence
    assert pushed["record"]["freed_gib"] == record.freed_gib


def test_heavy_node_activity_is_pushed_as_plain_json(backend: PanelBackend, publisher: RecordingPublisher) -> None:
    worker = in_worker(prompt_started)
    in_worker(lambda: node_started("4", "ImageInvert", heavy=False))
    in_worker(lambda: node_started("5", "ReActorFaceSwap", heavy=True))
    in_worker(
        lambda: signals.send_safely(
            signals.heavy_node_finished,  # as the hook sends it for a heavy node, after node_finished
            "ReActorFaceSwap",
            node_id=5,
            node_class="ReActorFaceSwap",
            prompt_id="p-1",
            heavy=True,
            result=object(),
            cached=np.bool_(False),
            duration_seconds=np.float64(2.5),
            error=MemoryError("Unable to allocate 12.0 GiB for an array"),
        )
    )
    in_worker(prompt_finished)
    started, finished = publisher.of("memhooks.hook")
    assert started == {
        "phase": "started",
        "node_id": "5",
        "node_class": "ReActorFaceSwap",
        "prompt_id": "p-1",
        "cached": False,
        "duration_seconds": None,
        "error": None,
    }
    assert finished["phase"] == "finished"
    assert finished["duration_seconds"] == 2.5
    assert type(finished["duration_seconds"]) is float
    assert finished["error"] == "MemoryError: Unable to allocate 12.0 GiB for an array"
    assert [event["phase"] for event in publisher.of("memhooks.prompt")] == ["started", "finished"]
    assert all(thread == worker for thread in publisher.threads)
    json.dumps(publisher.events, allow_nan=False)


def test_a_broken_publisher_is_counted_and_never_reaches_the_worker(
    engine: Engine, settings_store: SettingsStore
) -> None:
    class Broken(RecordingPublisher):
        def publish(self, event: str, payload: dict[str, Any]) -> None:
            raise RuntimeError("Event loop is closed")

    backend = PanelBackend(
        engine, settings_store, Broken(), interval=lambda: 3600.0, pipeline=current_runtime().pipeline
    )
    backend.start()
    failures_before = signals.receiver_failures.count
    try:
        in_worker(lambda: node_started("5", "ReActorFaceSwap", heavy=True))
        backend.tick()
        status = backend.status()
        assert status["errors"]["panel_failures"] == 2
        assert "Event loop is closed" in status["errors"]["last_panel_error"]
        assert signals.receiver_failures.count == failures_before
    finally:
        backend.close()


# Inside ComfyUI ---------------------------------------------------------------------------------------------------


def test_outside_comfyui_setup_attaches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "server", raising=False)
    threads = threading.active_count()
    mappings, _names = bootstrap.setup()
    assert "UnifiedMemoryManager" in mappings
    assert current_runtime().backend is None
    assert threading.active_count() == threads


class _StandInPromptServer:
    """What the panel uses of ComfyUI's PromptServer (server.py): routes, sockets, send_sync, prompt_queue."""

    def __init__(self) -> None:
        self.routes = web.RouteTableDef()
        self.sockets: dict[str, object] = {}
        self.sent: list[tuple[str, Any]] = []
        self.prompt_queue = types.SimpleNamespace(currently_running={})

    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        json.dumps(data, allow_nan=False)
        self.sent.append((event, data))


def test_attach_registers_once_on_comfyuis_route_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    server = _StandInPromptServer()
    module = types.ModuleType("server")
    module.PromptServer = type("PromptServer", (), {"instance": server})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "server", module)
    monkeypatch.setenv("COMFY_MEMHOOKS_SETTINGS", str(tmp_path / "settings.json"))
    runtime = current_runtime()
    backend = comfy_panel.attach(runtime)
    try:
        assert backend is not None
        assert comfy_panel.attach(runtime) is backend
        paths = sorted((route.method, route.path) for route in server.routes if isinstance(route, web.RouteDef))
        assert paths == [
            ("GET", "/memhooks/history"),
            ("GET", "/memhooks/metrics"),
            ("GET", "/memhooks/predictions"),
            ("GET", "/memhooks/processes"),
            ("GET", "/memhooks/profile"),
            ("GET", "/memhooks/settings"),
            ("GET", "/memhooks/status"),
            ("POST", "/memhooks/optimize"),
            ("PUT", "/memhooks/settings"),
        ]
        backend.tick()
        assert server.sent == []  # no browser connected: nothing sampled, nothing sent
        server.sockets["browser"] = object()
        backend.tick()
        assert [event for event, _ in server.sent] == ["memhooks.status"]
        server.prompt_queue.currently_running[1] = ("prompt",)
        assert backend.manual.prompt_running
    finally:
        backend and backend.close()
