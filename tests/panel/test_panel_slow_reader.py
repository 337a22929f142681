"""One browser that stops reading must not freeze live updates for the others: it is dropped, never waited on."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from comfy_memhooks.engine.core import Engine
from comfy_memhooks.panel.standalone import HUB, build_app
from comfy_memhooks.triggers.settings import SettingsStore
from tests.panel.panel_support import stuck_reader

Client = TestClient[web.Request, web.Application]
EVENTS = 300
PAYLOAD = "x" * 50_000  # 15 MB in all: far more than the kernel buffers a reader that never reads


async def test_a_reader_that_stops_is_dropped_and_the_others_keep_getting_updates(
    aiohttp_client: AiohttpClient, engine: Engine, settings_store: SettingsStore
) -> None:
    client: Client = await aiohttp_client(build_app(engine, interval=3600.0, settings_store=settings_store))
    hub = client.app[HUB]
    assert client.server.port is not None
    stuck = stuck_reader(client.server.port)
    try:
        async with client.ws_connect("/memhooks/ws") as reader:
            assert (await reader.receive_json(timeout=10))["type"] == "memhooks.hello"
            for _ in range(100):
                if len(hub._sockets) == 2:
                    break
                await asyncio.sleep(0.02)
            assert len(hub._sockets) == 2

            async def read_all() -> list[int]:
                received = [-1]
                while received[-1] < EVENTS - 1:
                    frame = await reader.receive_json(timeout=10)  # before the fix: nothing more ever arrived
                    received.append(frame["data"]["n"])
                return received[1:]

            reading = asyncio.create_task(read_all())
            started = time.monotonic()
            for number in range(EVENTS):
                hub.publish("memhooks.status", {"n": number, "padding": PAYLOAD})
                await asyncio.sleep(0.002)  # a burst, yet one a reading browser keeps up with
            received = await reading  # a status still waiting is replaced by a newer one: never out of order
            assert received == sorted(set(received)) and received[-1] == EVENTS - 1
            assert time.monotonic() - started < 10
            for _ in range(200):  # its send, stuck on a full buffer, times out: dropped, never waited on
                if hub.dropped:
                    break
                await asyncio.sleep(0.05)
            assert hub.dropped == 1 and len(hub._sockets) == 1

            hub.publish("memhooks.status", {"n": "after"})
            assert (await reader.receive_json(timeout=5))["data"]["n"] == "after"
    finally:
        stuck.close()


async def test_a_send_that_times_out_drops_only_that_client(
    aiohttp_client: AiohttpClient, engine: Engine, settings_store: SettingsStore
) -> None:
    app = build_app(engine, interval=3600.0, settings_store=settings_store)
    client: Client = await aiohttp_client(app)
    hub = client.app[HUB]
    hub._send_timeout = 0.5
    hub._max_queued = 10_000  # only the deadline can drop it here
    assert client.server.port is not None
    stuck = stuck_reader(client.server.port)
    try:
        for _ in range(100):
            if hub.has_clients():
                break
            await asyncio.sleep(0.02)
        for number in range(EVENTS):
            hub.publish("memhooks.status", {"n": number, "padding": PAYLOAD})
            await asyncio.sleep(0)  # each one is sent before the next replaces it
        for _ in range(200):
            if hub.dropped:
                break
            await asyncio.sleep(0.05)
        assert hub.dropped == 1 and not hub.has_clients()
    finally:
        stuck.close()


async def test_a_burst_of_node_events_coalesces_and_drops_no_reader(
    aiohttp_client: AiohttpClient, engine: Engine, settings_store: SettingsStore
) -> None:
    """Thousands of events a second from the worker thread, as a workflow of fast nodes sends them."""
    client: Client = await aiohttp_client(build_app(engine, interval=3600.0, settings_store=settings_store))
    hub = client.app[HUB]
    async with client.ws_connect("/memhooks/ws") as reader:
        assert (await reader.receive_json(timeout=10))["type"] == "memhooks.hello"

        def burst() -> None:
            for number in range(5000):
                hub.publish("memhooks.hook", {"n": number})
                hub.publish("memhooks.status", {"n": number})
            hub.publish("memhooks.optimization", {"n": "kept"})

        await asyncio.get_running_loop().run_in_executor(None, burst)
        seen: dict[str, list[object]] = {"memhooks.hook": [], "memhooks.status": [], "memhooks.optimization": []}
        while not seen["memhooks.optimization"]:
            frame = await reader.receive_json(timeout=10)
            seen[frame["type"]].append(frame["data"]["n"])
        assert hub.dropped == 0 and len(hub._sockets) == 1
        assert seen["memhooks.optimization"] == ["kept"]
        assert seen["memhooks.status"][-1] == 4999  # the latest state always arrives
        hooks = seen["memhooks.hook"]
        assert hooks == sorted(hooks) and len(hooks) < 5000  # activity lines gave way, in order
        (outbox,) = [c.outbox for c in hub._sockets.values()]
        assert outbox.skipped == 5000 - len(hooks)


def test_an_outbox_full_of_events_that_must_arrive_refuses_more() -> None:
    from comfy_memhooks.panel.hub import Outbox

    outbox = Outbox(3)
    assert outbox.put("memhooks.hook", "h") and outbox.put("memhooks.optimization", "1")
    assert outbox.put("memhooks.optimization", "2")
    assert outbox.put("memhooks.optimization", "3")  # the hook event gave way
    assert outbox.skipped == 1 and len(outbox) == 3
    assert not outbox.put("memhooks.optimization", "4")
    assert outbox.put("memhooks.status", "s") is False  # no status waiting to replace, no room
