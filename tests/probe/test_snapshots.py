"""Snapshots are immutable and turn into plain JSON, whatever numbers went in."""

from __future__ import annotations

import dataclasses
import json

import pytest

from comfy_memhooks.panel.payloads import snapshot_json, to_plain
from tests.snapshots_factory import snapshot_at


def test_snapshots_are_frozen() -> None:
    snapshot = snapshot_at(50, 50)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.taken_at = 1.0  # type: ignore[misc]


def test_to_json_is_plain_json_with_percentages() -> None:
    data = snapshot_json(snapshot_at(50, None))
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["ram"]["percent"] == pytest.approx(50.0)
    assert data["vram_percent"] is None and data["gpus"] == []


def test_numpy_and_non_finite_numbers_become_plain() -> None:
    numpy = pytest.importorskip("numpy")
    value = to_plain({"a": numpy.int64(3), "b": numpy.float32(1.5), "c": float("nan"), "d": (1, float("inf"))})
    assert value == {"a": 3, "b": 1.5, "c": None, "d": [1, None]}
    assert type(value["a"]) is int and type(value["b"]) is float
    json.dumps(value, allow_nan=False)
