"""``python -m comfy_memhooks serve``: the Memory panel without ComfyUI's UI, for a machine or a container.

It serves the same routes as inside ComfyUI, a page that mounts the same panel module, and a websocket of its own
(``/memhooks/ws``) carrying the same ``{"type": "memhooks.<event>", "data": ...}`` frames as ComfyUI's ``/ws``.
It binds to loopback unless told otherwise. There is no login, so, like ComfyUI, it refuses requests whose
``Origin`` is another site's: a page on the web must not be able to drive it from the user's browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from ..engine.core import Engine
from ..engine.settings import SettingsStore, get_settings_store
from .backend import PanelBackend
from .payloads import EVENTS
from .routes import PREFIX, error_response, register_routes

logger = logging.getLogger(__name__)

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
PAGE = "standalone.html"
WEBSOCKET_PATH = f"{PREFIX}/ws"
STATIC_PATH = f"{PREFIX}/web"
# Events waiting for the sockets: a browser that stops reading must not grow the server's memory.
MAX_QUEUED_EVENTS = 256


class WebsocketHub:
    """The standalone server's push channel; :meth:`publish` may be called from any thread, like ``send_sync``."""

    def __init__(self) -> None:
        self._sockets: set[web.WebSocketResponse] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def has_clients(self) -> bool:
        return bool(self._sockets)

    def publish(self, event: str, payload: dict[str, Any]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._enqueue, event, payload)
        except RuntimeError:  # the loop closed between the check and the call: the server is stopping.
            return

    def _enqueue(self, event: str, payload: dict[str, Any]) -> None:
        if self._queue is None:
            return
        try:
            self._queue.put_nowait((event, payload))
        except asyncio.QueueFull:
            self.dropped += 1

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(MAX_QUEUED_EVENTS)
        self._task = asyncio.create_task(self._pump(self._queue))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for socket in list(self._sockets):
            await socket.close()
        self._sockets.clear()

    async def _pump(self, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        while True:
            event, payload = await queue.get()
            text = json.dumps({"type": event, "data": payload}, allow_nan=False)
            for socket in list(self._sockets):
                try:
                    await socket.send_str(text)
                except (ConnectionError, RuntimeError):  # a browser that went away; its handler removes it.
                    self._sockets.discard(socket)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse(heartbeat=30.0)
        await socket.prepare(request)
        self._sockets.add(socket)
        try:
            await socket.send_str(json.dumps({"type": "memhooks.hello", "data": {"events": list(EVENTS)}}))
            async for message in socket:
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            self._sockets.discard(socket)
        return socket


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@web.middleware
async def same_origin_only(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refuses a request sent by another site's page (its ``Origin`` names another host:port than ``Host``)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        parsed = urllib.parse.urlsplit(origin)
        if parsed.netloc != request.host:
            return error_response(403, "origin: requests from another site are refused", "origin")
    response: web.StreamResponse = await handler(request)
    return response


class OneLine(logging.Filter):
    """Turns aiohttp's traceback for a malformed request into one line: any local client could flood the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            problem = " ".join(str(getattr(error, "message", "") or error).split())[:200]
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {problem}"
            record.args = None
            record.exc_info = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


HTTP_LOGGER = logging.getLogger("comfy_memhooks.panel.http")
"""The standalone server's own logger for failed requests, one line each (see :class:`OneLine`)."""
HTTP_LOGGER.addFilter(OneLine())

BACKEND = web.AppKey("backend", PanelBackend)
HUB = web.AppKey("hub", WebsocketHub)


def build_app(
    engine: Engine,
    *,
    interval: float = 1.0,
    settings_store: SettingsStore | None = None,
    web_root: Path = WEB_ROOT,
) -> web.Application:
    """The standalone application: routes, page, static panel modules and websocket; sampling runs while it runs."""
    hub = WebsocketHub()
    store = settings_store if settings_store is not None else get_settings_store()
    backend = PanelBackend(engine, store, hub, interval=lambda: interval)
    routes = web.RouteTableDef()
    register_routes(routes, backend)
    register_routes(routes, backend, prefix=f"/api{PREFIX}")  # as ComfyUI mounts them, so one script serves both
    page = web_root / PAGE

    async def index(request: web.Request) -> web.StreamResponse:
        if not page.is_file():
            return web.Response(status=500, text=f"the panel's files are missing: {page} not found")
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})

    async def no_icon(request: web.Request) -> web.StreamResponse:
        # Browsers ask for one on every page they open here; a 404 would be logged in their console.
        return web.Response(status=204)

    app = web.Application(middlewares=[same_origin_only])
    app.router.add_routes(routes)
    app.router.add_get("/", index)
    app.router.add_get("/favicon.ico", no_icon)
    app.router.add_get(WEBSOCKET_PATH, hub.handle)
    if web_root.is_dir():
        app.router.add_static(STATIC_PATH, web_root)
    app[BACKEND] = backend
    app[HUB] = hub

    async def start(app: web.Application) -> None:
        await hub.start()
        backend.start()

    async def stop(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, backend.close)
        await hub.close()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    return app


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 8189, interval: float = 1.0) -> None:
    """Serves the panel until interrupted (Ctrl+C); binds to ``host``, loopback by default.

    The socket is bound before the address is printed, so the URL shown is one that answers (with the port the
    system chose for ``--port 0``), and a port in use or an unknown host raises ``OSError`` before anything is said.
    """
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C is how it is meant to stop
        asyncio.run(_serve(build_app(engine, interval=interval), host, port))


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None, logger=HTTP_LOGGER)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        if not is_loopback(host):  # said once it is true, not before a bind that fails
            logger.warning(
                "the Memory panel listens on %s: anyone who can reach this address can free memory; it has no login",
                host,
            )
        bound = runner.addresses[0][1]
        url_host = f"[{host}]" if ":" in host else host
        sys.stdout.write(f"comfy_memhooks: the Memory panel is at http://{url_host}:{bound}/ (Ctrl+C stops it)\n")
        sys.stdout.flush()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
