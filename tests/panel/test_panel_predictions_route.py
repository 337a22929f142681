"""``GET /memhooks/predictions`` on real aiohttp servers on loopback: ComfyUI's routes and the standalone server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.panel.standalone import build_app
from comfy_memhooks.triggers.learned import MAX_CLASSES, LearnedPeaks, Prediction, Sample, Workload
from comfy_memhooks.triggers.learned_file import LEARNED_FILE_NAME, LearnedFile
from comfy_memhooks.triggers.settings import SettingsStore
from tests.panel.panel_support import RecordingPublisher, panel_app

Client = TestClient[web.Request, web.Application]
MIB = 1024**2


def taught(path: Path) -> LearnedFile:
    table = LearnedPeaks()
    table.learn("VHS_LoadVideo", Sample(900 * MIB, None, Workload("frame_pixels", 1000)))
    table.learn(
        "VHS_LoadVideo", Sample(1800 * MIB, None, Workload("frame_pixels", 2000)), table.predict("VHS_LoadVideo")
    )
    table.learn("KSampler", Sample(None, 3000 * MIB, None), Prediction("KSampler", None, 2900 * MIB, "recent maximum"))
    return LearnedFile(path, table)


async def _get(client: Client, path: str) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status == 200 and response.content_type == "application/json"
    data: dict[str, Any] = await response.json()
    return data


async def test_each_class_with_its_predicted_and_actual_peaks(
    aiohttp_client: AiohttpClient, engine: Engine, settings_store: SettingsStore, tmp_path: Path
) -> None:
    learned = taught(tmp_path / LEARNED_FILE_NAME)
    backend = PanelBackend(
        engine,
        settings_store,
        RecordingPublisher(),
        interval=lambda: 3600.0,
        learned=lambda: learned,
        pipeline=current_runtime().pipeline,
    )
    client = await aiohttp_client(panel_app(backend))

    data = await _get(client, "/memhooks/predictions")

    assert data["enabled"] is True and data["max_classes"] == MAX_CLASSES
    assert data["path"] == str(tmp_path / LEARNED_FILE_NAME) and data["load_warning"] is None
    assert data["classes"] == [
        {
            "node_class": "KSampler",
            "runs": 1,
            "workload_kind": None,
            "predicted_ram_bytes": None,
            "actual_ram_bytes": None,
            "predicted_vram_bytes": 2900 * MIB,
            "actual_vram_bytes": 3000 * MIB,
        },
        {
            "node_class": "VHS_LoadVideo",
            "runs": 2,
            "workload_kind": "frame_pixels",
            "predicted_ram_bytes": int(900 * MIB * 1.1),  # the recent maximum: no workload was given to scale by
            "actual_ram_bytes": 1800 * MIB,
            "predicted_vram_bytes": None,
            "actual_vram_bytes": None,
        },
    ]
    settings_store.update({"predictive_cleanup": False})
    assert (await _get(client, "/memhooks/predictions"))["enabled"] is False


async def test_the_standalone_server_serves_what_comfyui_saved(
    aiohttp_client: AiohttpClient,
    engine: Engine,
    settings_store: SettingsStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COMFY_MEMHOOKS_SETTINGS", str(tmp_path / "comfy_memhooks.json"))
    assert taught(tmp_path / LEARNED_FILE_NAME).save()
    client = await aiohttp_client(build_app(engine, settings_store=settings_store))

    for prefix in ("/memhooks", "/api/memhooks"):
        data = await _get(client, f"{prefix}/predictions")
        assert [row["node_class"] for row in data["classes"]] == ["KSampler", "VHS_LoadVideo"]
