"""The standalone server's websocket push channel: every browser gets every event, and none can hold up another.

A browser that stops reading (a frozen tab, a laptop lid closed on a live connection) stops draining its socket;
awaiting a send to it then waits forever, and with one sender for all clients every other browser's live updates
froze with it. So each client has its own bounded outbox and its own sender task, and each send has a deadline: a
client whose send times out is dropped, its connection aborted, never waited on (a polite close would wait on the
same full buffer).

A burst is not a stuck browser: a workflow of fast nodes sends two events a node, thousands a second, faster than
the loop hands them to the sender tasks. So the outbox coalesces rather than overflows: a status or settings event
replaces the one of its kind still waiting (only the latest state matters), and when the outbox is full the oldest
node or prompt event (the activity log's lines) gives way. Only a browser whose outbox is full of events that must
not be lost (optimizations, manual answers) is dropped for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from ..failures import Failures
from .payloads import EVENT_HOOK, EVENT_PROMPT, EVENT_SETTINGS, EVENT_STATUS, EVENTS

logger = logging.getLogger(__name__)

MAX_QUEUED_PER_CLIENT = 64
"""Events waiting for one browser: one that stops reading must not grow the server's memory."""
LATEST_WINS = frozenset({EVENT_STATUS, EVENT_SETTINGS})
"""Events that carry a whole state: a newer one replaces the one still waiting."""
GIVES_WAY = (EVENT_HOOK, EVENT_PROMPT)
"""Events that may be skipped when an outbox is full, in the order they give way: lines of the activity log."""
HELLO = "memhooks.hello"
SEND_TIMEOUT_SECONDS = 5.0
"""How long one send may wait for a browser to take it; the samples are a second apart."""


class Outbox:
    """One browser's events waiting to be sent: bounded, coalescing a burst instead of overflowing.

    Args:
        size: events that may wait; a full outbox makes room by skipping an activity event.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: deque[tuple[str, str]] = deque()
        self._ready = asyncio.Event()
        self.skipped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: str, text: str) -> bool:
        """Adds an event; False when the outbox is full of events that must not be lost."""
        if event in LATEST_WINS:
            for index, (waiting, _) in enumerate(self._items):
                if waiting == event:
                    self._items[index] = (event, text)
                    return True
        if len(self._items) >= self._size and not self._make_room():
            return False
        self._items.append((event, text))
        self._ready.set()
        return True

    def _make_room(self) -> bool:
        for giving_way in GIVES_WAY:
            for index, (waiting, _) in enumerate(self._items):
                if waiting == giving_way:
                    del self._items[index]
                    self.skipped += 1
                    return True
        return False

    async def get(self) -> str:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()[1]


class _Client:
    def __init__(self, socket: web.WebSocketResponse, transport: asyncio.Transport | None, size: int):
        self.socket = socket
        self.transport = transport
        self.outbox = Outbox(size)
        self.task: asyncio.Task[None] | None = None


class WebsocketHub:
    """Pushes events to every connected browser; :meth:`publish` may be called from any thread, like ``send_sync``.

    Args:
        send_timeout: seconds a send may wait before its client is dropped.
        max_queued: events that may wait for one client; beyond it activity events give way (see :class:`Outbox`).
    """

    def __init__(self, send_timeout: float = SEND_TIMEOUT_SECONDS, max_queued: int = MAX_QUEUED_PER_CLIENT) -> None:
        self._sockets: dict[web.WebSocketResponse, _Client] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._send_timeout = send_timeout
        self._max_queued = max_queued
        self.dropped = 0
        self.failures = Failures(logger, "Memory panel websocket: a browser was dropped ({kind})", logging.INFO, False)

    def has_clients(self) -> bool:
        return bool(self._sockets)

    def publish(self, event: str, payload: dict[str, Any]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._broadcast, event, payload)
        except RuntimeError:  # the loop closed between the check and the call: the server is stopping.
            return

    def _broadcast(self, event: str, payload: dict[str, Any]) -> None:
        if not self._sockets:
            return
        text = json.dumps({"type": event, "data": payload}, allow_nan=False)
        for client in list(self._sockets.values()):
            if not client.outbox.put(event, text):
                self._drop(client, "it stopped reading")

    def _drop(self, client: _Client, why: str) -> None:
        if self._sockets.pop(client.socket, None) is None:
            return
        self.dropped += 1
        self.failures.record(why, ConnectionError(why))
        if client.transport is not None:
            client.transport.abort()  # not close(): a close frame would wait on the same full buffer
        if client.task is not None and client.task is not asyncio.current_task():
            client.task.cancel()

    async def _send_loop(self, client: _Client) -> None:
        while True:
            text = await client.outbox.get()
            try:
                await asyncio.wait_for(client.socket.send_str(text), self._send_timeout)
            except TimeoutError:
                self._drop(client, "a send timed out")
                return
            except (ConnectionError, RuntimeError):  # a browser that went away; its handler removes it.
                self._drop(client, "it went away")
                return

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        for client in list(self._sockets.values()):
            if client.task is not None:
                client.task.cancel()
            try:
                await asyncio.wait_for(client.socket.close(), self._send_timeout)
            except (TimeoutError, ConnectionError, RuntimeError):  # stopping: a browser that will not listen is cut
                if client.transport is not None:
                    client.transport.abort()
        self._sockets.clear()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse(heartbeat=30.0)
        await socket.prepare(request)
        client = _Client(socket, request.transport, self._max_queued)
        client.outbox.put(HELLO, json.dumps({"type": HELLO, "data": {"events": list(EVENTS)}}))
        self._sockets[socket] = client
        client.task = asyncio.create_task(self._send_loop(client))
        try:
            async for message in socket:
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            self._sockets.pop(socket, None)
            client.task.cancel()
        return socket
