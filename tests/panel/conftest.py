"""Fixtures for the Memory panel's tests: a panel backend on real RAM and a fake-free settings file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.triggers.settings import SettingsStore
from tests.panel.panel_support import RecordingPublisher, no_gpu_engine, panel_app


@pytest.fixture
def settings_store(tmp_path: Path) -> SettingsStore:
    store = SettingsStore(tmp_path / "settings" / "comfy_memhooks.json")
    store.load()
    return store


@pytest.fixture
def engine() -> Engine:
    return no_gpu_engine()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def backend(engine: Engine, settings_store: SettingsStore, publisher: RecordingPublisher) -> Iterator[PanelBackend]:
    # An hour between ticks: the tests take samples themselves, when they want one.
    panel = PanelBackend(
        engine, settings_store, publisher, interval=lambda: 3600.0, pipeline=current_runtime().pipeline
    )
    panel.start()
    yield panel
    panel.close()


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, backend: PanelBackend
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    yield await aiohttp_client(panel_app(backend))
