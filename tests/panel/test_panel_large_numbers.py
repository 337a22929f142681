"""Numbers too large for a float, through the routes and the node: 400 naming the field, never a 500 or a traceback."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from comfy_memhooks.errors import InvalidSetting
from comfy_memhooks.triggers.settings import SettingsStore
from tests.comfy.test_node import run

Client = TestClient[web.Request, web.Application]

HUGE = "1" + "0" * 400  # 1e400 written as digits: an int Python reads, float() cannot convert
TOO_LONG = "9" * 5000  # past Python's 4,300-digit limit for reading integers


@pytest.mark.parametrize(
    ("field", "literal"),
    [
        ("ram_threshold", HUGE),
        ("vram_threshold", "-" + HUGE),
        ("cooldown_seconds", HUGE),
        ("sample_interval_seconds", HUGE),
        ("ram_threshold", "1e400"),
        ("cooldown_seconds", "1e308"),
    ],
)
async def test_a_number_too_large_is_a_400_naming_the_field(
    client: Client, settings_store: SettingsStore, caplog: pytest.LogCaptureFixture, field: str, literal: str
) -> None:
    before = settings_store.current
    with caplog.at_level(logging.WARNING):
        response = await client.put("/memhooks/settings", data=f'{{"{field}": {literal}}}')
    assert response.status == 400
    data = await response.json()
    assert data["field"] == field
    assert len(data["error"]) < 200
    assert settings_store.current == before
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_an_integer_past_the_digit_limit_is_a_400(client: Client) -> None:
    response = await client.put("/memhooks/settings", data=f'{{"ram_threshold": {TOO_LONG}}}')
    assert response.status == 400
    assert (await response.json())["field"] == "body"


async def test_the_largest_cooldown_keeps_retry_after_short(client: Client) -> None:
    response = await client.put("/memhooks/settings", data='{"cooldown_seconds": 3600}')
    assert response.status == 200
    assert (await client.post("/memhooks/optimize", json={"mode": "Conservative"})).status in (200, 202)
    answer = await client.post("/memhooks/optimize", json={"mode": "Conservative"})
    assert int(answer.headers.get("Retry-After", "0")) <= 3600


@pytest.mark.parametrize("name", ["ram_threshold", "vram_threshold", "cooldown_seconds"])
@pytest.mark.parametrize(
    "value", [10**400, -(10**400), float("inf"), 10**5000], ids=["1e400", "-1e400", "inf", "5000 digits"]
)
def test_the_node_names_the_input_too_large(shared_engine: Any, name: str, value: Any) -> None:
    shared_engine()
    with pytest.raises(InvalidSetting) as raised:
        run(**{name: value})
    assert raised.value.field == name
    assert len(str(raised.value)) < 200
