"""Pages of other sites, sandboxed frames and DNS rebinding cannot change anything; beyond loopback, a token."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from comfy_memhooks.engine.core import Engine
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.panel.guard import RequestGuard, host_name
from comfy_memhooks.panel.routes import register_routes
from comfy_memhooks.panel.standalone import BACKEND, build_app
from comfy_memhooks.triggers.settings import SettingsStore
from tests.test_cli import ROOT

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def standalone(aiohttp_client: AiohttpClient, engine: Engine, settings_store: SettingsStore) -> Client:
    return await aiohttp_client(build_app(engine, interval=3600.0, settings_store=settings_store))


def _port(client: Client) -> int:
    assert client.server.port is not None
    return client.server.port


async def test_dns_rebinding_is_refused_by_the_standalone_server(standalone: Client) -> None:
    evil = f"evil.example:{_port(standalone)}"
    headers = {"Host": evil, "Origin": f"http://{evil}"}
    response = await standalone.put("/memhooks/settings", json={"enabled": False}, headers=headers)
    assert response.status == 403 and (await response.json())["field"] == "host"
    assert standalone.app[BACKEND].store.current.enabled is True
    assert (await standalone.get("/memhooks/processes", headers={"Host": evil})).status == 403
    assert (await standalone.get("/memhooks/ws", headers={"Host": evil})).status == 403
    for host in ("localhost", "127.0.0.1", "[::1]", "app.localhost"):
        answer = await standalone.get("/memhooks/status", headers={"Host": f"{host}:{_port(standalone)}"})
        assert answer.status == 200, host


@pytest.mark.parametrize("path", ["/memhooks/optimize", "/api/memhooks/optimize"])
async def test_origin_null_cannot_optimize_even_without_preflight(standalone: Client, path: str) -> None:
    response = await standalone.post(
        path, data='{"mode": "Aggressive"}', headers={"Origin": "null", "Content-Type": "text/plain"}
    )
    assert response.status == 403 and (await response.json())["field"] == "origin"
    assert standalone.app[BACKEND].engine.history.total_recorded == 0
    assert (await standalone.get("/memhooks/ws", headers={"Origin": "null"})).status == 403
    assert (await standalone.get("/memhooks/status", headers={"Origin": "null"})).status == 200


async def test_inside_comfyui_the_mutating_routes_check_for_themselves(
    backend: PanelBackend, aiohttp_client: AiohttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bare application, no middleware: what the routes do whatever ComfyUI's version does.
    routes = web.RouteTableDef()
    register_routes(routes, backend)
    app = web.Application()
    app.add_routes(routes)
    client: Client = await aiohttp_client(app)
    evil = f"evil.example:{_port(client)}"
    rebinding = {"Host": evil, "Origin": f"http://{evil}"}
    assert (await client.put("/memhooks/settings", json={"enabled": False}, headers=rebinding)).status == 403
    null = {"Origin": "null", "Content-Type": "text/plain"}
    assert (await client.post("/memhooks/optimize", data='{"mode": "Aggressive"}', headers=null)).status == 403
    other_site = {"Origin": "https://evil.example"}
    assert (await client.put("/memhooks/settings", json={"enabled": False}, headers=other_site)).status == 403
    assert backend.store.current.enabled is True and backend.engine.history.total_recorded == 0
    assert (await client.put("/memhooks/settings", json={"enabled": False})).status == 200  # the page's own
    # A machine reached by name: the user allows it, and only then.
    monkeypatch.setenv("COMFY_MEMHOOKS_ALLOWED_HOSTS", "mybox.local")
    routes = web.RouteTableDef()
    register_routes(routes, backend)
    named = web.Application()
    named.add_routes(routes)
    client = await aiohttp_client(named)
    own = f"mybox.local:{_port(client)}"
    headers = {"Host": own, "Origin": f"http://{own}"}
    response = await client.put("/memhooks/settings", json={"enabled": True}, headers=headers)
    assert response.status == 200


async def test_beyond_loopback_changes_need_the_token(
    aiohttp_client: AiohttpClient, engine: Engine, settings_store: SettingsStore
) -> None:
    guard = RequestGuard(token_required=True, token="s3cret")
    app = build_app(engine, interval=3600.0, settings_store=settings_store, guard=guard)
    client: Client = await aiohttp_client(app)
    refused = await client.put("/memhooks/settings", json={"enabled": False})
    assert refused.status == 403 and (await refused.json())["field"] == "token"
    wrong = await client.put("/memhooks/settings", json={"enabled": False}, headers={"X-Memhooks-Token": "guess"})
    assert wrong.status == 403
    assert (await client.get("/memhooks/status")).status == 200
    right = await client.put("/memhooks/settings", json={"enabled": False}, headers={"X-Memhooks-Token": "s3cret"})
    assert right.status == 200
    bearer = await client.put("/memhooks/settings", json={"enabled": True}, headers={"Authorization": "Bearer s3cret"})
    assert bearer.status == 200

    no_token = RequestGuard(token_required=True)
    client = await aiohttp_client(build_app(engine, interval=3600.0, settings_store=settings_store, guard=no_token))
    response = await client.post("/memhooks/optimize", json={"mode": "Conservative"})
    assert response.status == 403 and "--token" in (await response.json())["error"]


def test_host_names() -> None:
    assert host_name("Evil.Example:8189") == "evil.example"
    assert host_name("[::1]:8189") == "::1"
    assert host_name("[bad") is None


def test_serve_beyond_loopback_warns_and_asks_for_the_token(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "COMFY_MEMHOOKS_SETTINGS": str(tmp_path / "s.json"),
        "PYTHONPATH": str(ROOT),
        "COMFY_MEMHOOKS_TOKEN": "s3cret",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "comfy_memhooks", "serve", "--host", "0.0.0.0", "--port", "0"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        match = re.search(r"http://0\.0\.0\.0:(\d+)/#token=s3cret", process.stdout.readline())
        assert match
        url = f"http://127.0.0.1:{match.group(1)}/memhooks/settings"
        request = urllib.request.Request(url, data=b'{"enabled": false}', method="PUT")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
        request.add_header("X-Memhooks-Token", "s3cret")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
    finally:
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=30)
    warning = " ".join(errors.split())
    assert "anyone who can reach this port" in warning and "list GPU processes" in warning
    assert "change settings" in warning


def test_a_comfyui_listening_beyond_loopback_is_reached_by_any_name_but_origins_are_still_checked() -> None:
    from comfy_memhooks.panel.guard import Refused, RequestGuard, listens_on_loopback_only

    assert listens_on_loopback_only("127.0.0.1") and listens_on_loopback_only("127.0.0.1,::1")
    assert listens_on_loopback_only("localhost") and listens_on_loopback_only(None)
    assert not listens_on_loopback_only("0.0.0.0,::") and not listens_on_loopback_only("192.168.1.5")
    pod = RequestGuard(check_host_names=False)
    proxy = "abc123-8188.proxy.example.net"
    pod.check("PUT", {"Host": proxy, "Origin": f"https://{proxy}"}, proxy)  # a rented pod's proxy: allowed
    for origin in ("null", "https://evil.example"):
        try:
            pod.check("PUT", {"Host": proxy, "Origin": origin}, proxy)
        except Refused as refused:
            assert refused.field == "origin"
        else:
            raise AssertionError(f"Origin {origin} was accepted")
