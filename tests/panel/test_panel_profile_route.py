"""``GET /memhooks/profile`` on a real aiohttp server on loopback: the latest prompt, one by id, 404 and 400."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.panel.routes import MAX_PROMPT_ID_LENGTH
from comfy_memhooks.panel.standalone import build_app
from comfy_memhooks.profile import PROMPTS_KEPT, ProfileStore
from comfy_memhooks.triggers.settings import SettingsStore
from tests.panel.panel_support import RecordingPublisher, panel_app
from tests.profile_support import MIB, sample_prompt

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def profiles() -> ProfileStore:
    return ProfileStore()


@pytest.fixture
async def profile_client(
    aiohttp_client: AiohttpClient, engine: Engine, settings_store: SettingsStore, profiles: ProfileStore
) -> AsyncIterator[Client]:
    backend = PanelBackend(
        engine,
        settings_store,
        RecordingPublisher(),
        interval=lambda: 3600.0,
        profiles=profiles,
        pipeline=current_runtime().pipeline,
    )
    yield await aiohttp_client(panel_app(backend))


async def _get(client: Client, path: str) -> tuple[int, dict[str, Any]]:
    response = await client.get(path)
    assert response.content_type == "application/json"
    data: dict[str, Any] = await response.json()
    return response.status, data


async def test_before_any_prompt_the_answer_is_empty_and_says_why(profile_client: Client) -> None:
    status, data = await _get(profile_client, "/memhooks/profile")

    assert status == 200
    assert data == {
        "enabled": True,
        "prompts": [],
        "prompts_kept": PROMPTS_KEPT,
        "profile": None,
        "reason": "no prompt has finished yet",
    }


async def test_the_latest_prompt_with_each_node_its_deltas_and_peaks(
    profile_client: Client, profiles: ProfileStore
) -> None:
    sample_prompt(profiles, "older")
    sample_prompt(profiles, "newer")

    status, data = await _get(profile_client, "/memhooks/profile")

    assert status == 200
    assert data["prompts"] == ["newer", "older"]
    profile = data["profile"]
    assert (profile["prompt_id"], profile["finished"], profile["success"]) == ("newer", True, True)
    assert [node["node_class"] for node in profile["nodes"]] == [
        "CheckpointLoaderSimple",
        "VAEDecode",
        "ImageInvert",
        "SaveImage",
    ]
    loader, decode, invert, save = profile["nodes"]
    # What each node needed while it ran, how that was measured, and what it left behind.
    assert (decode["ram_peak_bytes"], decode["ram_peak_method"], decode["ram_left_bytes"]) == (
        1400 * MIB,
        "hwm",
        10 * MIB,
    )
    assert decode["rss_peak_bytes"] == decode["rss_before_bytes"] + 1400 * MIB
    assert decode["rss_delta_bytes"] == 10 * MIB
    assert decode["container_peak_added_bytes"] == 1500 * MIB
    assert (decode["vram_peak_bytes"], decode["vram_peak_source"]) == (500 * MIB, "torch")
    assert (loader["ram_peak_bytes"], loader["ram_left_bytes"], loader["container_peak_added_bytes"]) == (
        300 * MIB,
        300 * MIB,
        None,  # the container's counter could not be reset: no container peak, not 0
    )
    assert (invert["ram_peak_bytes"], invert["ram_peak_method"], invert["ram_left_bytes"]) == (
        600 * MIB,
        "sampled",
        5 * MIB,
    )
    # No peak reading: the peak is what it left behind, and the method says nothing was measured.
    assert save["cached"] is True
    assert (save["ram_peak_bytes"], save["ram_peak_method"], save["rss_peak_bytes"], save["ram_left_bytes"]) == (
        0,
        None,
        None,
        0,
    )
    assert save["vram_peak_bytes"] is None
    assert profile["heaviest_node_id"] == "1"  # 300 MiB of RAM and 2000 MiB of VRAM at their peaks


async def test_a_prompt_by_id_and_an_unknown_id(profile_client: Client, profiles: ProfileStore) -> None:
    sample_prompt(profiles, "older")
    sample_prompt(profiles, "newer")

    status, data = await _get(profile_client, "/memhooks/profile?prompt_id=older")
    assert status == 200 and data["profile"]["prompt_id"] == "older"

    status, data = await _get(profile_client, "/memhooks/profile?prompt_id=gone")
    assert status == 404
    assert data == {"error": f"no profile of prompt 'gone'; the last {PROMPTS_KEPT} are kept", "field": "prompt_id"}


@pytest.mark.parametrize(
    "query",
    [
        "prompt_id=",
        "prompt_id=%20",
        f"prompt_id={'x' * (MAX_PROMPT_ID_LENGTH + 1)}",
        "prompt_id=a&prompt_id=b",
        "prompt_id=a%00b",
    ],
)
async def test_a_bad_prompt_id_is_refused_naming_the_field(profile_client: Client, query: str) -> None:
    status, data = await _get(profile_client, f"/memhooks/profile?{query}")

    assert status == 400
    assert data["field"] == "prompt_id"


async def test_turned_off_the_empty_answer_says_so(profile_client: Client, settings_store: SettingsStore) -> None:
    settings_store.update({"node_profile": False})

    status, data = await _get(profile_client, "/memhooks/profile")

    assert status == 200
    assert data["enabled"] is False
    assert data["reason"] == "the per-node profile is off (node_profile)"


async def test_the_standalone_server_serves_it_on_both_prefixes(
    aiohttp_client: AiohttpClient, engine: Engine, settings_store: SettingsStore
) -> None:
    client = await aiohttp_client(build_app(engine, settings_store=settings_store))
    for prefix in ("/memhooks", "/api/memhooks"):
        status, data = await _get(client, f"{prefix}/profile")
        assert status == 200 and set(data) == {"enabled", "prompts", "prompts_kept", "profile", "reason"}
        status, data = await _get(client, f"{prefix}/profile?prompt_id=unknown")
        assert status == 404 and data["field"] == "prompt_id"
