"""``python -m comfy_memhooks serve`` and ``watch`` given arguments that cannot work: one line, exit 2."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from comfy_memhooks.engine.core import Engine
from comfy_memhooks.panel.standalone import build_app
from comfy_memhooks.triggers.settings import SettingsStore
from tests.test_cli import ROOT, cli


def _one_line_failure(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert "http://" not in done.stdout  # no URL printed for a server that never listened
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_port_out_of_range_is_one_line() -> None:
    assert "99999" in _one_line_failure(cli("serve", "--port", "99999"))


def test_a_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _one_line_failure(cli("serve", "--port", str(port)))
    assert str(port) in line and "in use" in line


@pytest.mark.parametrize("host", ["999.1.1.1", "no-such-host.invalid"])
def test_a_bad_host_is_one_line(host: str) -> None:
    assert host in _one_line_failure(cli("serve", "--host", host, "--port", "0"))


def test_watch_count_zero_is_refused() -> None:
    done = cli("watch", "--count", "0")
    assert done.returncode == 2 and "--count" in done.stderr and "at least 1" in done.stderr
    assert done.stdout == ""


def test_port_zero_prints_the_port_bound(tmp_path: Path) -> None:
    environment = {**os.environ, "COMFY_MEMHOOKS_SETTINGS": str(tmp_path / "settings.json"), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "comfy_memhooks", "serve", "--port", "0"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match and match.group(1) != "0", line
        with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/api/memhooks/status", timeout=10) as answer:
            assert answer.status == 200
    finally:
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in errors


async def test_the_standalone_server_answers_under_api_too(
    aiohttp_client: AiohttpClient, engine: Engine, settings_store: SettingsStore
) -> None:
    client: TestClient = await aiohttp_client(build_app(engine, interval=3600.0, settings_store=settings_store))
    for path in ("/api/memhooks/status", "/api/memhooks/history", "/api/memhooks/settings"):
        assert (await client.get(path)).status == 200, path
    response = await client.put("/api/memhooks/settings", json={"ram_threshold": 75})
    assert response.status == 200
    assert (await (await client.get("/memhooks/settings")).json())["settings"]["ram_threshold"] == 75
