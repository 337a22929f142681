"""The panel's routes on a real aiohttp server on loopback: every route, every bad input, concurrent clients."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.failures import Failures, failure_registry
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.panel.routes import MAX_BODY_BYTES
from comfy_memhooks.triggers.settings import AutoSettings, SettingsStore
from tests.panel.panel_support import FOREIGN_PID, GIB, RecordingPublisher, container_engine, fake_gpu_engine, panel_app

Client = TestClient[web.Request, web.Application]


async def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = await response.json()
    return data


async def _client_for(
    aiohttp_client: AiohttpClient, engine: Engine, store: SettingsStore
) -> tuple[Client, PanelBackend]:
    backend = PanelBackend(
        engine, store, RecordingPublisher(), interval=lambda: 3600.0, pipeline=current_runtime().pipeline
    )
    backend.start()
    return await aiohttp_client(panel_app(backend)), backend


# GET /memhooks/status ---------------------------------------------------------------------------------------------


async def test_status_reports_ram_engine_hook_and_errors(client: Client) -> None:
    response = await client.get("/memhooks/status")
    assert response.status == 200
    assert response.content_type == "application/json"
    data = await _json(response)
    ram = data["snapshot"]["ram"]
    host = psutil.virtual_memory()
    assert ram["host_total_bytes"] == host.total
    assert ram["source"] in ("host", "cgroup v1", "cgroup v2")
    assert 0 < ram["percent"] <= 100
    assert ram["limit_label"] in ("host RAM", "container limit")
    assert ram["container_limit"] is (ram["source"] != "host")
    assert data["snapshot"]["gpus"] == []
    assert data["snapshot"]["vram_percent"] is None
    assert "nvidia-ml-py is not installed" in data["snapshot"]["gpu_unavailable_reason"]
    assert data["engine"] == {
        "cooldown_seconds": 30.0,
        "cooldown_remaining_seconds": 0.0,
        "optimizations_total": 0,
        "prompt_running": False,
        "pending_manual_mode": None,
    }
    assert data["hook"]["installed"] in (True, False)
    assert set(data["hook"]) >= {"installed", "executor", "comfyui_version", "reason", "receiver_errors", "last_error"}
    assert set(data["errors"]) == {
        "receiver_failures",
        "last_receiver_error",
        "action_failures",
        "last_action_error",
        "panel_failures",
        "last_panel_error",
        "probe_failures",
        "last_probe_error",
        "predictive_failures",
        "last_predictive_error",
        "hook_failures",
        "last_hook_error",
        "profile_failures",
        "last_profile_error",
        "settings_warning",
    }
    assert data["policy"]["ram_threshold"] == 80.0


async def test_status_shows_each_gpu_as_plain_numbers(
    aiohttp_client: AiohttpClient, settings_store: SettingsStore
) -> None:
    client, backend = await _client_for(aiohttp_client, fake_gpu_engine(used_gib=20.0), settings_store)
    try:
        text = await (await client.get("/memhooks/status")).text()
        data = json.loads(text)
        gpu = data["snapshot"]["gpus"][0]
        assert gpu["index"] == 0
        assert gpu["name"] == "NVIDIA Fake H100"
        assert gpu["total_bytes"] == 80 * GIB
        assert gpu["used_bytes"] == 20 * GIB
        assert gpu["percent"] == 25.0
        assert data["snapshot"]["vram_percent"] == 25.0
        assert data["snapshot"]["gpu_source"] == "nvml"
        assert "uint64" not in text
    finally:
        backend.close()


async def test_status_names_the_container_limit(
    aiohttp_client: AiohttpClient, settings_store: SettingsStore, tmp_path: Path
) -> None:
    client, backend = await _client_for(aiohttp_client, container_engine(tmp_path, 4 * GIB, GIB), settings_store)
    try:
        ram = (await _json(await client.get("/memhooks/status")))["snapshot"]["ram"]
        assert ram["source"] == "cgroup v2"
        assert ram["total_bytes"] == 4 * GIB
        assert ram["used_bytes"] == GIB
        assert ram["percent"] == 25.0
        assert ram["container_limit"] is True
        assert ram["limit_label"] == "container limit"
    finally:
        backend.close()


# GET /memhooks/history --------------------------------------------------------------------------------------------


async def test_history_holds_records_and_samples(client: Client, backend: PanelBackend) -> None:
    empty = await _json(await client.get("/memhooks/history"))
    assert empty["records"] == []
    assert empty["samples"] == []
    assert empty["window_seconds"] == 600.0

    samples = [await asyncio.to_thread(backend.sample_now) for _ in range(3)]
    answer = await _json(await client.post("/memhooks/optimize", json={"mode": "Conservative"}))
    assert answer["state"] == "performed"

    data = await _json(await client.get("/memhooks/history"))
    assert [sample["taken_at"] for sample in data["samples"]] == [sample.taken_at for sample in samples]
    assert set(data["samples"][0]) == {"taken_at", "ram_percent", "ram_used_bytes", "vram_percent", "gpu_percents"}
    assert data["total_recorded"] == 1
    (record,) = data["records"]
    assert record["sequence"] == answer["record"]["sequence"]
    assert record["trigger"]["kind"] == "manual"
    assert record["mode"] == "Conservative"
    assert record["freed_gib"] >= 0
    assert record["duration_seconds"] >= 0
    assert [action["name"] for action in record["actions"]] == ["gc_collect", "cuda_empty_cache"]
    assert record["before"]["ram"]["percent"] > 0


async def test_history_keeps_the_last_ten(client: Client, settings_store: SettingsStore) -> None:
    settings_store.update({"cooldown_seconds": 0})
    for _ in range(12):
        assert (await client.post("/memhooks/optimize", json={"mode": "Conservative"})).status == 200
    data = await _json(await client.get("/memhooks/history"))
    assert [record["sequence"] for record in data["records"]] == list(range(12, 2, -1))
    assert data["total_recorded"] == 12


# GET /memhooks/processes ------------------------------------------------------------------------------------------


async def test_processes_without_gpu_say_why(client: Client) -> None:
    data = await _json(await client.get("/memhooks/processes"))
    assert data["processes"] is None
    assert data["gpus"] == []
    assert "nvidia-ml-py is not installed" in data["reason"]


async def test_processes_never_carry_command_lines(
    aiohttp_client: AiohttpClient, settings_store: SettingsStore
) -> None:
    client, backend = await _client_for(aiohttp_client, fake_gpu_engine(), settings_store)
    try:
        text = await (await client.get("/memhooks/processes")).text()
        data = json.loads(text)
        own, foreign = data["processes"]
        assert own == {
            "pid": os.getpid(),
            "name": psutil.Process().name(),
            "gpu_index": 0,
            "used_bytes": 3 * GIB,
            "is_current_process": True,
            "in_this_container": True,
            "label": f"{psutil.Process().name()} (this process)",
        }
        assert foreign["pid"] == FOREIGN_PID
        assert foreign["name"] is None
        assert foreign["in_this_container"] is False
        assert data["gpus"] == [{"index": 0, "name": "NVIDIA Fake H100"}]
        assert "cmdline" not in text
        # This process's arguments (pytest's) appear nowhere in the answer.
        for argument in psutil.Process().cmdline()[1:]:
            if len(argument) > 3:
                assert argument not in text
    finally:
        backend.close()


# POST /memhooks/optimize ------------------------------------------------------------------------------------------


async def test_optimize_when_idle_runs_at_once(
    client: Client, backend: PanelBackend, publisher: RecordingPublisher
) -> None:
    response = await client.post("/memhooks/optimize", json={"mode": "Balanced"})
    assert response.status == 200
    answer = await _json(response)
    assert answer["state"] == "performed"
    assert answer["mode"] == "Balanced"
    assert answer["record"]["trigger"] == {
        "kind": "manual",
        "reason": "Optimize now (panel)",
        "node_id": None,
        "node_class": None,
        "phase": None,
        "pressure": [],
        "predicted_bytes": None,
        "headroom_bytes": None,
    }
    assert backend.engine.history.total_recorded == 1
    (pushed,) = publisher.of("memhooks.optimization")
    assert pushed["record"]["sequence"] == answer["record"]["sequence"]


async def test_optimize_during_cooldown_says_how_long(client: Client, backend: PanelBackend) -> None:
    assert (await client.post("/memhooks/optimize", json={"mode": "Conservative"})).status == 200
    response = await client.post("/memhooks/optimize", json={"mode": "Aggressive"})
    assert response.status == 200
    answer = await _json(response)
    assert answer["state"] == "cooldown"
    assert 0 < answer["cooldown_remaining_seconds"] <= 30
    assert answer["record"] is None
    assert 1 <= int(response.headers["Retry-After"]) <= 30
    assert backend.engine.history.total_recorded == 1
    status = await _json(await client.get("/memhooks/status"))
    assert status["engine"]["cooldown_remaining_seconds"] > 0


BAD_OPTIMIZE_BODIES = [
    (b'{"mode": "Balanced"', "body", "not valid JSON"),
    (b"", "body", "empty"),
    (b"   ", "body", "empty"),
    (b'["Balanced"]', "body", "expected a JSON object, got list"),
    (b'"Balanced"', "body", "expected a JSON object, got str"),
    (b"\xff\xfe{}", "body", "not UTF-8"),
    (b'{"mode": NaN}', "body", "not valid JSON"),
    (b"[" * 20000 + b"]" * 20000, "body", "nested too deeply"),
    (b'{"mode": "Turbo"}', "mode", "'Turbo' is not a mode"),
    (b'{"mode": "balanced"}', "mode", "'balanced' is not a mode"),
    (b'{"mode": "Monitor Only"}', "mode", "'Monitor Only' is not a mode that frees memory"),
    (b'{"mode": 2}', "mode", "2 is not a mode"),
    (b'{"mode": null}', "mode", "None is not a mode"),
    (b'{"mode": ["Balanced"]}', "mode", "is not a mode"),
    (b'{"mode": true}', "mode", "True is not a mode"),
    (b"{}", "mode", "required"),
    (b'{"mode": "Balanced", "force": true}', "force", "unknown field"),
]


@pytest.mark.parametrize(("body", "field", "problem"), BAD_OPTIMIZE_BODIES)
async def test_bad_optimize_requests_are_refused_and_change_nothing(
    client: Client, backend: PanelBackend, body: bytes, field: str, problem: str
) -> None:
    response = await client.post("/memhooks/optimize", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    data = await _json(response)
    assert data["field"] == field
    assert data["error"].startswith(f"{field}: ")
    assert problem in data["error"]
    assert "Traceback" not in data["error"]
    assert backend.engine.history.total_recorded == 0
    assert backend.manual.pending is None


async def test_body_over_64_kb_is_refused_with_or_without_a_length(client: Client, backend: PanelBackend) -> None:
    padding = " " * MAX_BODY_BYTES
    body = ('{"mode": "Balanced"' + padding + "}").encode()
    response = await client.post("/memhooks/optimize", data=body)
    assert response.status == 400
    assert (await _json(response))["field"] == "body"

    async def chunks() -> Any:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = await client.post("/memhooks/optimize", data=chunks())
    assert response.status == 400
    data = await _json(response)
    assert data["field"] == "body"
    assert "larger than the limit of 65536 bytes" in data["error"]
    assert backend.engine.history.total_recorded == 0

    # Just under the bound is read and served.
    fits = ('{"mode": "Conservative"' + " " * (MAX_BODY_BYTES - 30) + "}").encode()
    assert len(fits) <= MAX_BODY_BYTES
    assert (await client.post("/memhooks/optimize", data=fits)).status == 200


async def test_unexpected_failure_is_a_sentence_not_a_stack_trace(
    client: Client, backend: PanelBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("probe exploded")

    monkeypatch.setattr(backend, "status", broken)
    response = await client.get("/memhooks/status")
    assert response.status == 500
    text = await response.text()
    assert json.loads(text) == {"error": "internal error in comfy_memhooks; the server log has the details"}
    assert "probe exploded" not in text


# GET and PUT /memhooks/settings -----------------------------------------------------------------------------------


async def test_settings_read_and_partial_update(
    client: Client, settings_store: SettingsStore, publisher: RecordingPublisher
) -> None:
    data = await _json(await client.get("/memhooks/settings"))
    assert data["settings"] == AutoSettings().to_json()
    assert data["load_warning"] is None

    response = await client.put("/memhooks/settings", json={"ram_threshold": 70, "oom_rescue": False})
    assert response.status == 200
    saved = (await _json(response))["settings"]
    assert saved["ram_threshold"] == 70.0
    assert saved["oom_rescue"] is False
    assert saved["vram_threshold"] == 85.0
    assert json.loads(settings_store.path.read_text()) == saved
    assert (await _json(await client.get("/memhooks/settings")))["settings"] == saved
    assert publisher.of("memhooks.settings")[-1]["settings"] == saved
    status = await _json(await client.get("/memhooks/status"))
    assert status["policy"]["ram_threshold"] == 70.0


async def test_settings_rules_round_trip(client: Client) -> None:
    rules = [
        {
            "pattern": "MyHeavyNode*",
            "before_mode": "Aggressive",
            "before_when": "always",
            "after_mode": "Conservative",
            "after_when": "threshold",
        }
    ]
    response = await client.put("/memhooks/settings", json={"rules": rules})
    assert response.status == 200
    assert (await _json(response))["settings"]["rules"] == rules


BAD_SETTINGS = [
    ({"ram_threshold": 150}, "ram_threshold", "outside the allowed range"),
    ({"vram_threshold": 0}, "vram_threshold", "outside the allowed range"),
    ({"ram_threshold": "80"}, "ram_threshold", "is not a number"),
    ({"cooldown_seconds": -1}, "cooldown_seconds", "outside the allowed range 0 to 3600 seconds"),
    ({"sample_interval_seconds": 0.01}, "sample_interval_seconds", "outside the allowed range"),
    ({"enabled": "yes"}, "enabled", "not a boolean"),
    ({"oom_rescue": 1}, "oom_rescue", "not a boolean"),
    ({"colour": "blue"}, "colour", "unknown setting"),
    ({"rules": "ReActor*"}, "rules", "expected a list of rules"),
    ({"rules": [{"pattern": "A*"}, {"pattern": "B*", "before_mode": "Fast"}]}, "rules[1].before_mode", "not a mode"),
    ({"rules": [{"pattern": ""}]}, "rules[0].pattern", "non-empty glob"),
    ({"rules": [{"pattern": "A*", "after_when": "sometimes"}]}, "rules[0].after_when", "one of 'always', 'threshold'"),
    ({"rules": [{"pattern": "A*", "extra": 1}]}, "rules[0].extra", "unknown key"),
]


@pytest.mark.parametrize(("body", "field", "problem"), BAD_SETTINGS)
async def test_bad_settings_are_refused_and_change_nothing(
    client: Client, settings_store: SettingsStore, body: dict[str, Any], field: str, problem: str
) -> None:
    await client.put("/memhooks/settings", json={"cooldown_seconds": 12})
    before_file = settings_store.path.read_bytes()
    before = settings_store.current

    response = await client.put("/memhooks/settings", json=body)
    assert response.status == 400
    data = await _json(response)
    assert data["field"] == field
    assert data["error"].startswith(f"{field}: ")
    assert problem in data["error"]
    assert settings_store.current == before
    assert settings_store.path.read_bytes() == before_file
    assert (await _json(await client.get("/memhooks/settings")))["settings"]["cooldown_seconds"] == 12.0


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"ram_threshold": 70', "not valid JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"ram_threshold": Infinity}', "not valid JSON"),
    ],
)
async def test_malformed_settings_bodies_are_refused(
    client: Client, settings_store: SettingsStore, body: bytes, problem: str
) -> None:
    response = await client.put("/memhooks/settings", data=body)
    assert response.status == 400
    data = await _json(response)
    assert data["field"] == "body"
    assert problem in data["error"]
    assert not settings_store.path.exists()


async def test_settings_body_over_64_kb_is_refused(client: Client, settings_store: SettingsStore) -> None:
    rules = [{"pattern": f"Node{index:04d}" + "x" * 150} for index in range(50)]
    body = json.dumps({"rules": rules, "padding": "y" * MAX_BODY_BYTES})
    response = await client.put("/memhooks/settings", data=body)
    assert response.status == 400
    assert (await _json(response))["field"] == "body"
    assert not settings_store.path.exists()


async def test_settings_that_cannot_be_written_change_nothing(client: Client, settings_store: SettingsStore) -> None:
    settings_store.path.parent.mkdir(parents=True, exist_ok=True)
    settings_store.path.mkdir()  # a folder where the file should be: os.replace fails
    response = await client.put("/memhooks/settings", json={"ram_threshold": 60})
    assert response.status == 500
    data = await _json(response)
    assert data["error"].startswith("settings could not be written")
    assert settings_store.current.thresholds.ram_percent == 80.0


# Concurrent clients -----------------------------------------------------------------------------------------------


async def test_concurrent_clients_share_one_cooldown(client: Client, backend: PanelBackend) -> None:
    reads = [client.get(path) for path in ("/memhooks/status", "/memhooks/history", "/memhooks/processes") * 10]
    writes = [client.post("/memhooks/optimize", json={"mode": "Balanced"}) for _ in range(8)]
    responses = await asyncio.gather(*reads, *writes)
    assert all(response.status == 200 for response in responses[: len(reads)])
    states = sorted([(await _json(response))["state"] for response in responses[len(reads) :]])
    assert states == ["cooldown"] * 7 + ["performed"]
    assert backend.engine.history.total_recorded == 1


async def test_concurrent_settings_writers_leave_one_valid_file(client: Client, settings_store: SettingsStore) -> None:
    values = [50 + index for index in range(10)]
    responses = await asyncio.gather(*(client.put("/memhooks/settings", json={"ram_threshold": v}) for v in values))
    assert all(response.status == 200 for response in responses)
    on_disk = json.loads(settings_store.path.read_text())
    assert on_disk["ram_threshold"] in values
    assert on_disk == settings_store.current.to_json()
    assert list(settings_store.path.parent.glob("*.tmp")) == []


async def test_a_predictive_cleanup_failure_is_counted_in_the_status(
    aiohttp_client: AiohttpClient, engine: Engine, settings_store: SettingsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from comfy_memhooks.triggers import predictive
    from comfy_memhooks.triggers.learned import LearnedPeaks

    failures = Failures(logging.getLogger("comfy_memhooks.triggers.predictive"), "predictive cleanup failed: {kind}")
    monkeypatch.setattr(predictive, "predictive_failures", failures)
    monkeypatch.setitem(failure_registry._parts, "predictive", failures)  # the status reads the registry

    def full_disk() -> None:
        raise OSError(28, "No space left on device")

    predictor = predictive.PredictiveCleanup(engine, LearnedPeaks(), save=full_disk)
    predictor.on_prompt_finished("p-1")
    client, _ = await _client_for(aiohttp_client, engine, settings_store)
    errors = (await _json(await client.get("/memhooks/status")))["errors"]
    assert errors["predictive_failures"] == 1
    assert "saving what was learned" in errors["last_predictive_error"]
