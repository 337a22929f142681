"""The standalone server's websocket push channel: every browser gets every event, and none can hold up another.

A browser that stops reading (a frozen tab, a laptop lid closed on a live connection) stops draining its socket;
awaiting a send to it then waits forever, and with one sender for all clients every other browser's live updates
froze with it. So each client has its own bounded queue and its own sender task, each send has a deadline, and a
client whose queue overflows or whose send times out is dropped: its connection is aborted, never waited on (a
polite close would wait on the same full buffer).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from ..failures import Failures
from .payloads import EVENTS

logger = logging.getLogger(__name__)

MAX_QUEUED_PER_CLIENT = 64
"""Events waiting for one browser: one that stops reading must not grow the server's memory."""
SEND_TIMEOUT_SECONDS = 5.0
"""How long one send may wait for a browser to take it; the samples are a second apart."""


class _Client:
    def __init__(self, socket: web.WebSocketResponse, transport: asyncio.Transport | None, size: int):
        self.socket = socket
        self.transport = transport
        self.queue: asyncio.Queue[str] = asyncio.Queue(size)
        self.task: asyncio.Task[None] | None = None


class WebsocketHub:
    """Pushes events to every connected browser; :meth:`publish` may be called from any thread, like ``send_sync``.

    Args:
        send_timeout: seconds a send may wait before its client is dropped.
        max_queued: events that may wait for one client before it is dropped.
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
            try:
                client.queue.put_nowait(text)
            except asyncio.QueueFull:
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
            text = await client.queue.get()
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
        client.queue.put_nowait(json.dumps({"type": "memhooks.hello", "data": {"events": list(EVENTS)}}))
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
