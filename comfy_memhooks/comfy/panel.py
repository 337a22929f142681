"""The Memory panel inside ComfyUI: routes on ComfyUI's server, live events over ComfyUI's websocket.

:func:`attach` is called once by :func:`bootstrap.setup`, while ComfyUI loads custom nodes, which is before it
mounts its route table; so routes registered here are served (at ``/memhooks/...`` and ``/api/memhooks/...``).
Live events go through ``PromptServer.instance.send_sync``, which is safe from any thread; no event loop of our own
is started. ComfyUI is found in ``sys.modules``, never imported: outside ComfyUI this does nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ..comfyui_modules.cli_args import comfy_args
from ..comfyui_modules.process import comfyui_server
from ..panel.backend import PanelBackend
from ..panel.guard import RequestGuard, allowed_hosts_from_environment, listens_on_loopback_only
from ..panel.routes import register_routes
from .runtime import Runtime

logger = logging.getLogger(__name__)


class PromptServerPublisher:
    """Pushes events to every browser connected to ComfyUI's ``/ws``."""

    def __init__(self, server: Any):
        self._server = server

    def publish(self, event: str, payload: dict[str, Any]) -> None:
        self._server.send_sync(event, payload)

    def has_clients(self) -> bool:
        return bool(getattr(self._server, "sockets", None))


def prompt_queue_busy(server: Any) -> bool:
    """Whether ComfyUI's worker has a prompt: ``PromptQueue.currently_running`` holds it from start to end."""
    queue = getattr(server, "prompt_queue", None)
    return bool(getattr(queue, "currently_running", None))


def comfyui_guard() -> RequestGuard:
    """The panel's request checks inside ComfyUI: ``Host`` names are checked only while ComfyUI listens on loopback
    alone (``--listen`` left at 127.0.0.1), where DNS rebinding is the threat; the ``Origin`` checks always apply."""
    listen = getattr(comfy_args(), "listen", None)
    return RequestGuard(
        allowed_hosts_from_environment(),
        check_host_names=listens_on_loopback_only(listen if isinstance(listen, str) else None),
    )


def prompt_server() -> Any:
    """ComfyUI's ``PromptServer.instance``, or ``None`` outside ComfyUI (the attribute is set in its __init__)."""
    prompt_server_class = getattr(comfyui_server(), "PromptServer", None)
    return getattr(prompt_server_class, "instance", None)


def attach(runtime: Runtime) -> PanelBackend | None:
    """Registers the panel on ComfyUI's server and starts live sampling; a second call returns the first backend.

    Never raises: a panel that cannot start leaves ComfyUI and the nodes working, and says why in the log.
    """
    if runtime.backend is not None:
        return runtime.backend
    server = prompt_server()
    if server is None:
        logger.debug("ComfyUI's PromptServer is not running; the Memory panel is not attached")
        return None
    try:
        routes = getattr(server, "routes", None)
        if not isinstance(routes, web.RouteTableDef):
            logger.warning("ComfyUI's server has no route table; the Memory panel is not available")
            return None
        backend = runtime.make_backend(PromptServerPublisher(server), busy=lambda: prompt_queue_busy(server))
        register_routes(routes, backend, guard=comfyui_guard())
        backend.start()
    except Exception:  # the panel is optional; ComfyUI must start whatever happens here.
        logger.exception("the Memory panel could not start; ComfyUI and the nodes are not affected")
        return None
    runtime.backend = backend
    return backend
