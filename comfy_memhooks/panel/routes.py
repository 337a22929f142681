"""The panel's HTTP routes, registered on any aiohttp route table: ComfyUI's, the standalone server's, a test's.

ComfyUI mounts each route twice, as ``/memhooks/...`` and ``/api/memhooks/...``. Handlers are thin: they read and
validate the request, run the work in a thread (a reading touches NVML and /proc; an optimization takes a while;
neither may stall the server's event loop) and answer JSON. A bad request gets 400 with ``{"error": ...}`` naming
the field and changes nothing; anything unexpected is logged and answered with 500 and a sentence, never a stack
trace. Errors are caught in the handlers themselves, so no middleware is added to ComfyUI's server.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from ..engine.modes import MANUAL_MODES, Mode
from ..errors import InvalidSetting, SettingsFileProtected
from ..validation import parse_choice
from .backend import PanelBackend
from .guard import SAFE_METHODS, Refused, RequestGuard, allowed_hosts_from_environment
from .payloads import serialize

logger = logging.getLogger(__name__)

PREFIX = "/memhooks"
MAX_BODY_BYTES = 64 * 1024
MAX_PROMPT_ID_LENGTH = 200

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def reply(data: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON reply, serialized once (a NaN is refused here, as the browser's ``JSON.parse`` would)."""
    return web.Response(text=serialize(data), status=status, headers=headers, content_type="application/json")


def error_response(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return reply(body, status=status)


def _reject_constant(name: str) -> None:
    # JSON has no NaN or Infinity; Python's parser would accept them and a threshold of NaN compares false to all.
    raise ValueError(f"{name} is not a JSON number")


async def read_json_object(request: web.Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request's body as a JSON object, read with a bound of ``limit`` bytes whatever the server allows.

    Raises:
        InvalidSetting: naming ``body`` when it is too large, empty, not UTF-8, not JSON, or not an object.
    """
    if request.content_length is not None and request.content_length > limit:
        raise InvalidSetting("body", f"{request.content_length} bytes is larger than the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise InvalidSetting("body", f"larger than the limit of {limit} bytes")
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidSetting("body", "empty; expected a JSON object")
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise InvalidSetting("body", "not UTF-8 text") from None
    except RecursionError:
        raise InvalidSetting("body", "nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, NaN/Infinity, or an integer too long to convert.
        raise InvalidSetting("body", f"not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise InvalidSetting("body", f"expected a JSON object, got {type(value).__name__}")
    return value


def parse_manual_mode(body: dict[str, Any]) -> Mode:
    """The ``mode`` of an optimize request: a mode that frees something, and no other field."""
    unknown = sorted(str(key) for key in body if key != "mode")
    if unknown:
        raise InvalidSetting(unknown[0], 'unknown field; the body is {"mode": ...}')
    if "mode" not in body:
        raise InvalidSetting("mode", f"required; use one of {', '.join(repr(mode.value) for mode in MANUAL_MODES)}")
    return parse_choice(Mode, body["mode"], "mode", "a mode that frees memory", allowed=MANUAL_MODES)


def parse_prompt_id(values: list[str]) -> str | None:
    """``?prompt_id=`` of ``GET /memhooks/profile`` (each value given): ``None`` when absent. Other keys of the
    query are ignored, as on every route."""
    if not values:
        return None
    if len(values) > 1:
        raise InvalidSetting("prompt_id", "given more than once")
    value = values[0].strip()
    if not value:
        raise InvalidSetting("prompt_id", "empty; leave it out for the latest prompt")
    if len(value) > MAX_PROMPT_ID_LENGTH:
        raise InvalidSetting("prompt_id", f"longer than {MAX_PROMPT_ID_LENGTH} characters")
    if not value.isprintable():
        raise InvalidSetting("prompt_id", "holds control characters")
    return value


async def _in_thread(function: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(function, *args))


def _guard_with(handler: Handler, guard: RequestGuard) -> Handler:
    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            if request.method not in SAFE_METHODS:  # our own check, whatever the host's middleware does
                guard.check(request.method, request.headers, request.host)
            return await handler(request)
        except Refused as error:
            return error_response(403, str(error), error.field)
        except InvalidSetting as error:
            return error_response(400, str(error), error.field)
        except web.HTTPException:
            raise
        except ConnectionResetError:  # the client left mid-body (a closed tab): nothing went wrong here
            logger.debug("comfy_memhooks: %s %s: the client disconnected", request.method, request.path)
            return error_response(400, "the client disconnected before the body was complete", "body")
        except Exception:  # nothing unexpected may reach the client as a stack trace; the log keeps it.
            logger.exception("comfy_memhooks: %s %s failed", request.method, request.path)
            return error_response(500, "internal error in comfy_memhooks; the server log has the details")

    return guarded


def register_routes(
    routes: web.RouteTableDef, backend: PanelBackend, prefix: str = PREFIX, guard: RequestGuard | None = None
) -> None:
    """Adds the panel's routes to ``routes``; the host mounts the table on its application.

    Args:
        guard: who may change something (see :mod:`panel.guard`); by default loopback names, IP addresses and
            the names in ``$COMFY_MEMHOOKS_ALLOWED_HOSTS``, with no token (ComfyUI has its own deployment).
    """
    guard = guard if guard is not None else RequestGuard(allowed_hosts_from_environment())
    _guarded = functools.partial(_guard_with, guard=guard)

    @routes.get(f"{prefix}/status")
    @_guarded
    async def get_status(request: web.Request) -> web.StreamResponse:
        return reply(await _in_thread(backend.status))

    @routes.get(f"{prefix}/history")
    @_guarded
    async def get_history(request: web.Request) -> web.StreamResponse:
        return reply(await _in_thread(backend.history))

    @routes.get(f"{prefix}/profile")
    @_guarded
    async def get_profile(request: web.Request) -> web.StreamResponse:
        prompt_id = parse_prompt_id(request.query.getall("prompt_id", []))
        answer = await _in_thread(backend.profile, prompt_id)  # up to 2,000 nodes: off ComfyUI's loop
        if answer is None:
            kept = backend.profiles.prompts_kept
            return error_response(404, f"no profile of prompt {prompt_id!r}; the last {kept} are kept", "prompt_id")
        return reply(answer)

    @routes.get(f"{prefix}/metrics")
    @_guarded
    async def get_metrics(request: web.Request) -> web.StreamResponse:
        try:
            body, content_type = await _in_thread(backend.metrics)
        except ImportError as error:  # prometheus_client missing from this Python: say so, the rest still works
            message = f"metrics need the prometheus_client package ({error}); pip install -r requirements.txt"
            return error_response(503, message)
        # Set as a header: aiohttp's content_type argument refuses the parameters (version, charset) it carries.
        return web.Response(body=body, headers={"Content-Type": content_type})

    @routes.get(f"{prefix}/predictions")
    @_guarded
    async def get_predictions(request: web.Request) -> web.StreamResponse:
        return reply(await _in_thread(backend.predictions))

    @routes.get(f"{prefix}/processes")
    @_guarded
    async def get_processes(request: web.Request) -> web.StreamResponse:
        return reply(await _in_thread(backend.processes))

    @routes.post(f"{prefix}/optimize")
    @_guarded
    async def post_optimize(request: web.Request) -> web.StreamResponse:
        mode = parse_manual_mode(await read_json_object(request))
        answer = await _in_thread(backend.optimize, mode)
        if answer["state"] == "queued":
            return reply(answer, status=202)
        if answer["state"] == "cooldown":
            # 200, not 429: the request was understood and answered ("not now, in N s"); a browser logs every
            # 4xx answer as a console error, and a cooldown is no error.
            seconds = answer["cooldown_remaining_seconds"] or 0
            return reply(answer, headers={"Retry-After": str(max(1, round(seconds)))})
        return reply(answer)

    @routes.get(f"{prefix}/settings")
    @_guarded
    async def get_settings(request: web.Request) -> web.StreamResponse:
        return reply(backend.settings())

    @routes.put(f"{prefix}/settings")
    @_guarded
    async def put_settings(request: web.Request) -> web.StreamResponse:
        body = await read_json_object(request)
        try:
            return reply(await _in_thread(backend.update_settings, body))
        except SettingsFileProtected as error:
            return error_response(409, f"settings not saved: {error.reason}")
        except OSError as error:
            logger.warning("comfy_memhooks: settings could not be written: %s", error)
            return error_response(500, f"settings could not be written: {error.strerror or error}; nothing changed")
