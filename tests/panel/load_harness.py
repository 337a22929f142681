"""Load on the standalone server while hooked node executions run: shared by the CI test and benchmarks/bench_load.py.

The server runs on its own event loop in its own thread, as ``serve`` runs it, so the clients' loop (the caller's)
measures the server and not itself. The stand-in executor runs prompts of ten nodes, one of them heavy, in a worker
thread with the built-in subscriber installed; the fake RAM reading sits over the threshold with no cooldown, so
heavy nodes record optimizations and the backend publishes them to the hub alongside the live samples. All traffic
goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.panel.hub import WebsocketHub
from comfy_memhooks.panel.sampler import RING_MAX_SAMPLES
from comfy_memhooks.panel.standalone import BACKEND, HUB, build_app
from comfy_memhooks.triggers.settings import SettingsStore
from tests.hook_support import FakeProbe, chain_prompt, hooked_runtime
from tests.panel.panel_support import stuck_reader
from tests.standin_executor import StandInNode, make_execution_module

NODES_PER_PROMPT = 10
PROMPT = ("Const", "Double", "Double", "Double", "ReActorFaceSwap", "Double", "Double", "Double", "Double", "Double")
BASELINE_NODES = 100
MAX_HISTORY = 10
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident memory after a full collection, from /proc/self/statm."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


@dataclass
class LoadResult:
    nodes_run: int = 0
    requests: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    ws_updates: list[int] = field(default_factory=list)
    ws_max_gaps: list[float] = field(default_factory=list)
    max_history_seen: int = 0
    max_ring_seen: int = 0
    rss_after_baseline: int = 0
    rss_after_all: int = 0
    dropped_clients: int = 0
    seconds: float = 0.0

    @property
    def growth_bytes(self) -> int:
        return self.rss_after_all - self.rss_after_baseline

    def latency_ms(self, quantile: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]

    def median_gap(self) -> float:
        return statistics.median(self.ws_max_gaps) if self.ws_max_gaps else float("nan")


class _ErrorLog(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(f"log {record.name}: {record.getMessage()}")


class _Server:
    """The standalone app on 127.0.0.1, port chosen by the system, on a loop in its own thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="load-server", daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> _Server:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the standalone server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        stop = self._stop
        if stop is not None:
            self.loop.call_soon_threadsafe(stop.set)
        self._thread.join(15)


def _executions(
    engine: Engine, store: SettingsStore, nodes: int, pause: float, result: LoadResult, done: threading.Event
) -> None:
    """The worker thread: ``nodes`` hooked node executions, prompts of ten ``pause`` apart, with memory readings."""
    classes: dict[str, StandInNode] = {
        "Const": StandInNode(lambda x: x),
        "Double": StandInNode(lambda x: x * 2 % 1_000_003),
        "ReActorFaceSwap": StandInNode(lambda x: -x),
    }
    module = make_execution_module("async11", classes)
    try:
        hooked_runtime(module, engine, store)
        executor = module.PromptExecutor()
        prompt, order = chain_prompt(*PROMPT)
        for number in range(nodes // NODES_PER_PROMPT):
            executor.execute(prompt, f"prompt-{number}", {}, order)
            executor.server.sent.clear()  # the stand-in's record of browser messages; ComfyUI keeps none
            time.sleep(pause)
            result.nodes_run += NODES_PER_PROMPT
            if result.nodes_run == BASELINE_NODES:
                result.rss_after_baseline = rss_bytes()
        result.rss_after_all = rss_bytes()
    except Exception as error:  # reported as a failure of the run, never lost in the thread
        result.errors.append(f"executor: {type(error).__name__}: {error}")
    finally:
        current_runtime().uninstall()
        done.set()


async def run_load(
    tmp: Path,
    *,
    nodes: int = 2000,
    http_clients: int = 50,
    ws_clients: int = 20,
    interval: float = 0.25,
    poll_pause: float = 0.01,
    prompt_pause: float = 0.0,
) -> LoadResult:
    """Runs the load until the nodes are done and returns what was seen; the caller asserts.

    Args:
        prompt_pause: seconds between prompts of ten nodes; with none (the default) the subscriber's events arrive
            by thousands a second, and the hub must coalesce them rather than drop the readers.
    """
    result = LoadResult()
    errors = _ErrorLog(result.errors)
    logging.getLogger().addHandler(errors)
    engine = Engine(probe=FakeProbe(ram_percent=90.0))
    store = SettingsStore(tmp / "comfy_memhooks.json")
    store.load()
    store.update({"cooldown_seconds": 0})
    app = build_app(engine, interval=interval, settings_store=store)
    backend: PanelBackend = app[BACKEND]
    hub: WebsocketHub = app[HUB]
    done = threading.Event()
    started = time.monotonic()
    try:
        with _Server(app) as server:
            base = f"http://127.0.0.1:{server.port}"
            stuck = stuck_reader(server.port)
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                ready = [asyncio.Event() for _ in range(ws_clients)]
                readers = [asyncio.create_task(_read_ws(session, base, result, done, event)) for event in ready]
                await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ready)), 10)
                pollers = [
                    asyncio.create_task(_poll(session, base, result, done, poll_pause)) for _ in range(http_clients)
                ]
                watcher = asyncio.create_task(_watch(engine, backend, result, done))
                worker = threading.Thread(
                    target=_executions,
                    args=(engine, store, nodes, prompt_pause, result, done),
                    name="load-executor",
                    daemon=True,
                )
                worker.start()
                while not done.is_set():
                    await asyncio.sleep(0.05)
                await asyncio.gather(*pollers, *readers, watcher)
                await asyncio.to_thread(worker.join, 10)
            stuck.close()
            result.dropped_clients = hub.dropped
    finally:
        done.set()
        logging.getLogger().removeHandler(errors)
    result.seconds = time.monotonic() - started
    return result


async def _poll(
    session: aiohttp.ClientSession, base: str, result: LoadResult, done: threading.Event, pause: float
) -> None:
    paths = ("/memhooks/status", "/memhooks/history")
    turn = 0
    while not done.is_set():
        path = paths[turn % 2]
        turn += 1
        began = time.perf_counter()
        try:
            async with session.get(base + path) as response:
                body: Any = await response.json()
                result.latencies.append(time.perf_counter() - began)
                result.requests += 1
                result.statuses[response.status] = result.statuses.get(response.status, 0) + 1
                if response.status != 200:
                    result.errors.append(f"GET {path}: {response.status}")
                elif path.endswith("history"):
                    result.max_history_seen = max(result.max_history_seen, len(body["records"]))
                del body  # the clients share the server's process: what they keep must not count as its growth
        except Exception as error:
            result.errors.append(f"GET {path}: {type(error).__name__}: {error}")
            return
        await asyncio.sleep(pause)


async def _read_ws(
    session: aiohttp.ClientSession, base: str, result: LoadResult, done: threading.Event, ready: asyncio.Event
) -> None:
    updates = 0
    max_gap = 0.0
    try:
        async with session.ws_connect(base + "/memhooks/ws") as ws:
            hello = await ws.receive_json(timeout=10)
            if hello["type"] != "memhooks.hello":
                result.errors.append(f"websocket: first frame {hello['type']}")
            ready.set()
            last = time.monotonic()
            while not done.is_set():
                try:
                    message = await ws.receive(timeout=0.5)
                except asyncio.TimeoutError:
                    max_gap = max(max_gap, time.monotonic() - last)
                    continue
                if message.type != aiohttp.WSMsgType.TEXT:
                    result.errors.append(f"websocket: {message.type!r}")
                    break
                now = time.monotonic()
                max_gap = max(max_gap, now - last)
                last = now
                updates += 1
    except Exception as error:
        result.errors.append(f"websocket: {type(error).__name__}: {error}")
        ready.set()
    result.ws_updates.append(updates)
    result.ws_max_gaps.append(max_gap)


async def _watch(engine: Engine, backend: PanelBackend, result: LoadResult, done: threading.Event) -> None:
    """The server's own bounds, read from outside while it runs."""
    while not done.is_set():
        result.max_history_seen = max(result.max_history_seen, len(engine.history.records()))
        result.max_ring_seen = max(result.max_ring_seen, len(backend.ring))
        await asyncio.sleep(0.05)


__all__ = ["MAX_HISTORY", "RING_MAX_SAMPLES", "LoadResult", "rss_bytes", "run_load"]
