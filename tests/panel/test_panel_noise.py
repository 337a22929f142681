"""Quiet under faults: a failing action, a client that leaves, malformed requests, a killed write."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import types
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import Trigger, TriggerKind
from comfy_memhooks.engine.modes import Mode
from comfy_memhooks.engine.request import CleanupRequest
from comfy_memhooks.panel.standalone import build_app
from comfy_memhooks.triggers.settings import SettingsStore
from tests.conftest import ROOT

MANUAL = Trigger(kind=TriggerKind.MANUAL, reason="test")


def test_a_failing_action_logs_one_traceback_then_counts(
    make_engine: Callable[..., Engine], comfy_model_management: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("driver went away")

    comfy_model_management.unload_all_models = broken  # type: ignore[attr-defined]
    engine = make_engine()
    with caplog.at_level(logging.DEBUG):
        for _ in range(6):
            assert engine.run(CleanupRequest(trigger=MANUAL, mode=Mode.AGGRESSIVE)).record is not None
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert len(tracebacks) == 1
    assert engine.action_failures.count == 6


async def test_a_client_leaving_mid_body_is_no_error(
    engine: Engine, settings_store: SettingsStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Served as ``serve`` serves it (run_app's defaults: handlers are not cancelled when the client leaves).
    runner = web.AppRunner(build_app(engine, interval=3600.0, settings_store=settings_store), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with caplog.at_level(logging.DEBUG):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b'PUT /memhooks/settings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"ena')
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.transport.abort()
            await asyncio.sleep(0.5)
        assert any("disconnected" in record.getMessage() for record in caplog.records)
        assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    finally:
        await runner.cleanup()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: zz\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
]


def test_the_standalone_server_logs_one_line_per_malformed_request(tmp_path: Path) -> None:
    port = _free_port()
    environment = {**os.environ, "COMFY_MEMHOOKS_SETTINGS": str(tmp_path / "settings.json"), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "comfy_memhooks", "serve", "--port", str(port)],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/memhooks/status", timeout=5):
                    break
            except OSError:
                time.sleep(0.1)
        for raw in MALFORMED:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
                connection.sendall(raw)
                assert connection.recv(100).startswith(b"HTTP/1.")
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    text = output.decode()
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if "Error handling request" in line]
    assert 1 <= len(lines) <= len(MALFORMED)
    assert all(line.startswith("WARNING") and len(line) < 400 for line in lines)


def test_stale_temporaries_are_removed_at_start(tmp_path: Path) -> None:
    path = tmp_path / "comfy_memhooks.json"
    path.write_text(json.dumps({"ram_threshold": 70}))
    stale = tmp_path / ".comfy_memhooks.json.abc123.tmp"
    stale.write_text('{"ram_thr')
    old = time.time() - 3600
    os.utime(stale, (old, old))
    in_flight = tmp_path / ".comfy_memhooks.json.def456.tmp"  # a write of another process, right now
    in_flight.write_text("{")
    other = tmp_path / ".other.json.abc.tmp"
    other.write_text("{")
    os.utime(other, (old, old))
    store = SettingsStore(path)
    assert store.load().thresholds.ram_percent == 70
    assert sorted(entry.name for entry in tmp_path.iterdir()) == sorted(
        ["comfy_memhooks.json", in_flight.name, other.name]
    )


def test_a_write_keeps_the_mode_and_follows_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "comfy_memhooks.json"
    real.parent.mkdir()
    real.write_text(json.dumps({"ram_threshold": 70}))
    real.chmod(0o640)
    link = tmp_path / "user" / "comfy_memhooks.json"
    link.parent.mkdir()
    link.symlink_to(real)
    store = SettingsStore(link)
    store.load()
    store.update({"vram_threshold": 60})
    assert link.is_symlink() and link.resolve() == real
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert json.loads(real.read_text())["vram_threshold"] == 60
    assert sorted(entry.name for entry in real.parent.iterdir()) == ["comfy_memhooks.json"]
    assert sorted(entry.name for entry in link.parent.iterdir()) == ["comfy_memhooks.json"]
