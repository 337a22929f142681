"""The standalone server: same routes, the page, the panel's modules, its own websocket, loopback and origin checks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from comfy_memhooks.engine.core import Engine
from comfy_memhooks.panel.standalone import BACKEND, HUB, build_app, is_loopback
from comfy_memhooks.triggers.settings import SettingsStore
from tests.panel.panel_support import in_worker, node_started

ROOT = Path(__file__).resolve().parents[2]

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def standalone(aiohttp_client: AiohttpClient, engine: Engine, settings_store: SettingsStore) -> Client:
    return await aiohttp_client(build_app(engine, interval=3600.0, settings_store=settings_store))


async def test_same_routes_as_in_comfyui(standalone: Client) -> None:
    for path in ("/memhooks/status", "/memhooks/history", "/memhooks/processes", "/memhooks/settings"):
        response = await standalone.get(path)
        assert response.status == 200, path
    response = await standalone.post("/memhooks/optimize", json={"mode": "Turbo"})
    assert response.status == 400
    assert (await response.json())["field"] == "mode"


async def test_the_page_mounts_the_same_panel_modules(standalone: Client) -> None:
    page = await (await standalone.get("/")).text()
    assert 'from "./memhooks/web/js/lib/panel_view.js"' in page
    assert 'from "./memhooks/web/js/lib/api_client.js"' in page
    for module in ("panel_view.js", "api_client.js", "chart.js", "format.js", "panel_style.js"):
        response = await standalone.get(f"/memhooks/web/js/lib/{module}")
        assert response.status == 200, module
        assert response.content_type in ("application/javascript", "text/javascript")
        assert (await response.text()) == (ROOT / "web" / "js" / "lib" / module).read_text()


async def test_the_websocket_pushes_the_same_events(standalone: Client) -> None:
    backend = standalone.app[BACKEND]
    async with standalone.ws_connect("/memhooks/ws") as ws:
        hello = await ws.receive_json(timeout=10)
        assert hello["type"] == "memhooks.hello"
        assert "memhooks.status" in hello["data"]["events"]
        sample = await asyncio.to_thread(backend.sample_now)
        frame = await ws.receive_json(timeout=10)
        assert frame["type"] == "memhooks.status"
        assert frame["data"]["sample"]["taken_at"] == sample.taken_at
        assert frame["data"]["snapshot"]["taken_at"] == sample.taken_at

        await asyncio.to_thread(in_worker, lambda: node_started("9", "VHS_LoadVideo", heavy=True))
        frame = await ws.receive_json(timeout=10)
        assert frame == {
            "type": "memhooks.hook",
            "data": {
                "phase": "started",
                "node_id": "9",
                "node_class": "VHS_LoadVideo",
                "prompt_id": "p-1",
                "cached": False,
                "duration_seconds": None,
                "error": None,
            },
        }
        response = await standalone.post("/memhooks/optimize", json={"mode": "Conservative"})
        answer = await response.json()
        frame = await ws.receive_json(timeout=10)
        assert frame["type"] == "memhooks.optimization"
        assert frame["data"]["record"]["sequence"] == answer["record"]["sequence"]


async def test_many_browsers_each_get_every_event(standalone: Client) -> None:
    backend = standalone.app[BACKEND]
    sockets = [await standalone.ws_connect("/memhooks/ws") for _ in range(5)]
    try:
        for ws in sockets:
            assert (await ws.receive_json(timeout=10))["type"] == "memhooks.hello"
        assert standalone.app[HUB].has_clients()
        sample = await asyncio.to_thread(backend.sample_now)
        for ws in sockets:
            frame = await ws.receive_json(timeout=10)
            assert frame["data"]["sample"]["taken_at"] == sample.taken_at
    finally:
        for ws in sockets:
            await ws.close()


async def test_requests_from_another_site_are_refused(standalone: Client) -> None:
    backend = standalone.app[BACKEND]
    response = await standalone.post(
        "/memhooks/optimize", json={"mode": "Aggressive"}, headers={"Origin": "https://evil.example"}
    )
    assert response.status == 403
    assert (await response.json())["field"] == "origin"
    assert backend.engine.history.total_recorded == 0
    response = await standalone.get("/memhooks/ws", headers={"Origin": "https://evil.example"})
    assert response.status == 403
    own_origin = f"http://{standalone.server.host}:{standalone.server.port}"
    assert (await standalone.get("/memhooks/status", headers={"Origin": own_origin})).status == 200


async def test_stopping_the_server_stops_sampling(aiohttp_client: AiohttpClient, engine: Engine) -> None:
    client = await aiohttp_client(build_app(engine, interval=0.05))
    backend = client.app[BACKEND]
    async with client.ws_connect("/memhooks/ws") as ws:
        await ws.receive_json(timeout=10)
        frame = await ws.receive_json(timeout=10)
        assert frame["type"] == "memhooks.status"
    await client.close()
    assert not backend.loop.running


def test_loopback_names() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.168.1.10")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_serve_command_serves_the_panel_on_loopback(tmp_path: Path) -> None:
    port = _free_port()
    environment = {**os.environ, "COMFY_MEMHOOKS_SETTINGS": str(tmp_path / "settings.json"), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "comfy_memhooks", "serve", "--port", str(port), "--interval", "0.5"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        status = None
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/memhooks/status", timeout=5) as response:
                    status = json.loads(response.read())
                break
            except OSError:
                time.sleep(0.1)
        assert status is not None, "the server did not answer"
        assert status["policy"]["sample_interval_seconds"] == 0.5
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert b"memhooks-root" in response.read()
        listening = {
            connection.laddr.ip
            for connection in psutil.Process(process.pid).net_connections()
            if connection.status == "LISTEN"
        }
        assert listening == {"127.0.0.1"}
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert f"http://127.0.0.1:{port}/" in output.decode()
    assert b"Traceback" not in output
