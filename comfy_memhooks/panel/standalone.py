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
import logging
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from ..engine.core import Engine
from ..triggers.settings import SettingsStore, load_settings_store
from .backend import PanelBackend
from .guard import SAFE_METHODS, TOKEN_ENV, Refused, RequestGuard
from .hub import WebsocketHub
from .routes import PREFIX, error_response, register_routes

logger = logging.getLogger(__name__)


def _web_root() -> Path:
    """The panel's browser files: the repository's ``web/`` in a checkout (as ComfyUI runs it), else the copy a
    wheel carries inside the package (``pyproject.toml`` maps ``web/`` to ``comfy_memhooks/web`` at build time)."""
    package = Path(__file__).resolve().parent.parent
    checkout = package.parent / "web"
    return checkout if (checkout / PAGE).is_file() else package / "web"


PAGE = "standalone.html"
WEB_ROOT = _web_root()
WEBSOCKET_PATH = f"{PREFIX}/ws"
STATIC_PATH = f"{PREFIX}/web"
SOCKETS = (WEBSOCKET_PATH, f"/api{WEBSOCKET_PATH}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def guard_requests(guard: RequestGuard) -> Any:
    """The standalone server's middleware: ``Host`` on every request, and :meth:`RequestGuard.check_origin` with
    the websocket counted as a change (a page without an origin must not read the live feed either)."""

    @web.middleware
    async def guarded(request: web.Request, handler: Any) -> web.StreamResponse:
        mutating = request.method not in SAFE_METHODS
        try:
            guard.check_host(request.headers)
            guard.check_origin(request.headers.get("Origin"), request.host, mutating or request.path in SOCKETS)
            if mutating:
                guard.check_token(request.headers)
        except Refused as error:
            return error_response(403, str(error), error.field)
        response: web.StreamResponse = await handler(request)
        return response

    return guarded


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
    guard: RequestGuard | None = None,
) -> web.Application:
    """The standalone application: routes, page, static panel modules and websocket; sampling runs while it runs.

    Args:
        guard: who may reach it and change something; loopback names and IP addresses by default.
    """
    guard = guard if guard is not None else RequestGuard()
    hub = WebsocketHub()
    store = settings_store if settings_store is not None else load_settings_store()
    backend = PanelBackend(engine, store, hub, interval=lambda: interval)
    routes = web.RouteTableDef()
    register_routes(routes, backend, guard=guard)
    # Also as ComfyUI mounts them, so one script serves both.
    register_routes(routes, backend, prefix=f"/api{PREFIX}", guard=guard)
    page = web_root / PAGE

    async def index(request: web.Request) -> web.StreamResponse:
        if not page.is_file():
            return web.Response(status=500, text=f"the panel's files are missing: {page} not found")
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})

    async def no_icon(request: web.Request) -> web.StreamResponse:
        # Browsers ask for one on every page they open here; a 404 would be logged in their console.
        return web.Response(status=204)

    app = web.Application(middlewares=[guard_requests(guard)])
    app.router.add_routes(routes)
    app.router.add_get("/", index)
    app.router.add_get("/favicon.ico", no_icon)
    for path in SOCKETS:
        app.router.add_get(path, hub.handle)
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


def serve(
    engine: Engine,
    host: str = "127.0.0.1",
    port: int = 8189,
    interval: float = 1.0,
    allowed_hosts: tuple[str, ...] = (),
    token: str | None = None,
) -> None:
    """Serves the panel until interrupted (Ctrl+C); binds to ``host``, loopback by default.

    The socket is bound before the address is printed, so the URL shown is one that answers (with the port the
    system chose for ``--port 0``), and a port in use or an unknown host raises ``OSError`` before anything is said.
    Beyond loopback, changes need ``token`` (``--token`` or ``$COMFY_MEMHOOKS_TOKEN``); a host name it is bound to
    is accepted in ``Host`` beside ``allowed_hosts``.
    """
    names = {name.lower() for name in allowed_hosts}
    if host and not is_ip_literal(host):
        names.add(host.lower())
    beyond = not is_loopback(host)
    guard = RequestGuard(frozenset(names), token_required=beyond, token=token or None)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C is how it is meant to stop
        asyncio.run(_serve(build_app(engine, interval=interval, guard=guard), host, port, guard))


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def _serve(app: web.Application, host: str, port: int, guard: RequestGuard) -> None:
    runner = web.AppRunner(app, access_log=None, logger=HTTP_LOGGER)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        if guard.token_required:  # said once it is true, not before a bind that fails
            refused = f"changes are refused until --token or ${TOKEN_ENV} is set"
            logger.warning(
                "the Memory panel listens on %s: anyone who can reach this port can read memory and list GPU "
                "processes, and without a token could change settings and free memory; %s",
                host,
                "changes need the token" if guard.token else refused,
            )
        bound = runner.addresses[0][1]
        url_host = f"[{host}]" if ":" in host else host
        fragment = f"#token={guard.token}" if guard.token_required and guard.token else ""  # the page sends it
        sys.stdout.write(
            f"comfy_memhooks: the Memory panel is at http://{url_host}:{bound}/{fragment} (Ctrl+C stops it)\n"
        )
        sys.stdout.flush()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
