"""Manual optimizations during a run: queued, then carried out by the worker thread at the next node boundary.

A fake running prompt is a thread that sends the executor hook's signals, as ComfyUI's worker thread does once the
hook is installed.
"""

from __future__ import annotations

import threading
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from comfy_memhooks import signals
from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import Trigger, TriggerKind
from comfy_memhooks.engine.modes import Mode
from comfy_memhooks.engine.pressure import Thresholds
from comfy_memhooks.engine.request import CleanupRequest
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.panel.manual import ManualRequests
from comfy_memhooks.panel.manual_answer import ManualState
from comfy_memhooks.pipeline import EndStep, StartStep
from comfy_memhooks.triggers.settings import SettingsStore
from tests.panel.panel_support import (
    RecordingPublisher,
    in_worker,
    node_finished,
    node_started,
    panel_app,
    prompt_finished,
    prompt_started,
)

Client = TestClient[web.Request, web.Application]


class OptimizationThreads:
    """Notes the thread each optimization ran in, through the public signal."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        self.threads.append(threading.current_thread().name)


async def test_request_during_a_run_is_queued_then_done_between_nodes(
    client: Client, backend: PanelBackend, publisher: RecordingPublisher, settings_store: SettingsStore
) -> None:
    settings_store.update({"cooldown_seconds": 0})
    seen = OptimizationThreads()
    signals.optimization_performed.connect(seen, weak=False)
    try:
        in_worker(prompt_started)
        status = await (await client.get("/memhooks/status")).json()
        assert status["engine"]["prompt_running"] is True

        response = await client.post("/memhooks/optimize", json={"mode": "Balanced"})
        assert response.status == 202
        answer = await response.json()
        assert answer["state"] == "queued"
        assert answer["mode"] == "Balanced"
        assert answer["record"] is None
        assert backend.engine.history.total_recorded == 0
        status = await (await client.get("/memhooks/status")).json()
        assert status["engine"]["pending_manual_mode"] == "Balanced"

        worker = in_worker(lambda: node_started("7", "ImageScale"))
        assert backend.engine.history.total_recorded == 1
        assert seen.threads == [worker]
        (record,) = backend.engine.history.records()
        assert record.mode is Mode.BALANCED
        assert record.trigger.kind.value == "manual"
        assert (record.trigger.node_id, record.trigger.node_class, record.trigger.phase) == (
            "7",
            "ImageScale",
            "before",
        )
        (done,) = publisher.of("memhooks.manual")
        assert done["state"] == "performed"
        assert done["record"]["sequence"] == record.sequence
        assert backend.manual.pending is None

        # Later boundaries carry nothing out; the prompt ends; the next request runs at once.
        in_worker(lambda: node_finished("7", "ImageScale"))
        in_worker(prompt_finished)
        assert backend.engine.history.total_recorded == 1
        response = await client.post("/memhooks/optimize", json={"mode": "Conservative"})
        assert response.status == 200
        assert (await response.json())["state"] == "performed"
        assert backend.engine.history.total_recorded == 2
    finally:
        signals.optimization_performed.disconnect(seen)


async def test_requests_queued_together_run_once_in_the_strongest_mode(
    client: Client, backend: PanelBackend, settings_store: SettingsStore
) -> None:
    settings_store.update({"cooldown_seconds": 0})
    in_worker(prompt_started)
    modes = []
    for mode in ("Balanced", "Aggressive", "Conservative"):
        response = await client.post("/memhooks/optimize", json={"mode": mode})
        assert response.status == 202
        modes.append((await response.json())["mode"])
    assert modes == ["Balanced", "Aggressive", "Aggressive"]
    in_worker(lambda: node_finished("3", "KSampler"))
    (record,) = backend.engine.history.records()
    assert record.mode is Mode.AGGRESSIVE
    assert record.trigger.phase == "after"
    in_worker(prompt_finished)


async def test_a_queued_request_runs_when_the_prompt_ends_without_another_node(
    client: Client, backend: PanelBackend
) -> None:
    in_worker(prompt_started)
    in_worker(lambda: node_started("1", "SaveImage"))
    assert (await client.post("/memhooks/optimize", json={"mode": "Conservative"})).status == 202
    worker = in_worker(prompt_finished)
    (record,) = backend.engine.history.records()
    assert record.trigger.phase is None
    assert "prompt ended" in record.trigger.reason
    assert worker == "Thread-1 (prompt_worker)"
    status = await (await client.get("/memhooks/status")).json()
    assert status["engine"]["prompt_running"] is False


async def test_a_queued_request_meets_the_cooldown_if_the_hook_optimized_meanwhile(
    client: Client, backend: PanelBackend, publisher: RecordingPublisher
) -> None:
    in_worker(prompt_started)
    assert (await client.post("/memhooks/optimize", json={"mode": "Balanced"})).status == 202
    # The automatic hook frees memory around a heavy node in the meantime (same engine, same cooldown).
    request = CleanupRequest(
        trigger=Trigger(kind=TriggerKind.HOOK, reason="after a heavy node"),
        mode=Mode.CONSERVATIVE,
        thresholds=Thresholds(cooldown_seconds=30),
    )
    in_worker(lambda: backend.engine.run(request))
    in_worker(lambda: node_started("2", "ReActorFaceSwap", heavy=True))
    assert backend.engine.history.total_recorded == 1
    (done,) = publisher.of("memhooks.manual")
    assert done["state"] == "cooldown"
    assert done["cooldown_remaining_seconds"] > 0
    in_worker(prompt_finished)


async def test_without_the_hook_a_busy_host_queues_and_the_sample_loop_carries_out(
    aiohttp_client: AiohttpClient, engine: Engine, settings_store: SettingsStore
) -> None:
    running = threading.Event()
    running.set()
    publisher = RecordingPublisher()
    backend = PanelBackend(
        engine,
        settings_store,
        publisher,
        interval=lambda: 3600.0,
        busy=running.is_set,
        pipeline=current_runtime().pipeline,
    )
    backend.start()
    try:
        client = await aiohttp_client(panel_app(backend))
        response = await client.post("/memhooks/optimize", json={"mode": "Balanced"})
        assert response.status == 202
        backend.tick()
        assert backend.engine.history.total_recorded == 0
        running.clear()
        backend.tick()
        assert backend.engine.history.total_recorded == 1
        assert publisher.of("memhooks.manual")[0]["state"] == "performed"
    finally:
        backend.close()


def test_a_prompt_that_starts_during_an_idle_optimization_waits_for_it(
    engine: Engine, settings_store: SettingsStore
) -> None:
    manual = ManualRequests(engine, lambda: settings_store.current, pipeline=current_runtime().pipeline)
    manual.connect()
    inside = threading.Event()
    release = threading.Event()

    def hold(sender: Any, **kwargs: Any) -> None:
        inside.set()
        release.wait(10)

    signals.optimization_performed.connect(hold, weak=False)
    answers = []
    try:
        requester = threading.Thread(target=lambda: answers.append(manual.request(Mode.CONSERVATIVE)))
        requester.start()
        assert inside.wait(10)
        worker = threading.Thread(target=prompt_started, name="Thread-1 (prompt_worker)")
        worker.start()
        worker.join(0.3)
        assert worker.is_alive(), "the prompt must wait while models may still be unloading"
        assert not manual.prompt_running
        release.set()
        worker.join(10)
        requester.join(10)
        assert manual.prompt_running
        assert answers[0].state is ManualState.PERFORMED
    finally:
        release.set()
        signals.optimization_performed.disconnect(hold)
        manual.close()
        prompt_finished()


def test_boundaries_cost_nothing_without_a_request(engine: Engine, settings_store: SettingsStore) -> None:
    manual = ManualRequests(engine, lambda: settings_store.current, pipeline=current_runtime().pipeline)
    manual.connect()
    try:
        for index in range(50):
            node_started(str(index), "ImageInvert")
            node_finished(str(index), "ImageInvert")
        assert engine.history.total_recorded == 0
        assert manual.poll() is None
    finally:
        manual.close()


def test_node_boundaries_are_listened_to_only_while_a_request_waits(
    engine: Engine, settings_store: SettingsStore
) -> None:
    settings_store.update({"cooldown_seconds": 0})
    manual = ManualRequests(engine, lambda: settings_store.current, pipeline=current_runtime().pipeline)
    manual.connect()

    def listening() -> bool:
        pipeline = current_runtime().pipeline
        return pipeline.occupied(StartStep.MANUAL) and pipeline.occupied(EndStep.MANUAL)

    try:
        assert not listening()  # an ordinary node costs the panel nothing
        in_worker(prompt_started)
        assert manual.request(Mode.CONSERVATIVE).state is ManualState.QUEUED
        assert listening()
        in_worker(lambda: node_finished("3", "ImageInvert"))
        assert manual.pending is None
        assert not listening()
        assert engine.history.records()[0].trigger.phase == "after"
    finally:
        manual.close()
        prompt_finished()
    assert not listening()
