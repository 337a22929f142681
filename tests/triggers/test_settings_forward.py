"""A settings file from a newer version, or saved with a byte-order mark, is kept and read."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from comfy_memhooks.triggers.settings import SettingsStore


def _only_file(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir())


def test_a_byte_order_mark_is_read_not_set_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "comfy_memhooks.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"ram_threshold": 65}).encode())
    store = SettingsStore(path)
    with caplog.at_level(logging.WARNING):
        assert store.load().thresholds.ram_percent == 65
    assert store.load_warning is None and not caplog.records
    assert _only_file(tmp_path) == ["comfy_memhooks.json"]


def test_a_key_from_a_newer_version_is_ignored_named_and_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "comfy_memhooks.json"
    path.write_text(json.dumps({"ram_threshold": 65, "gpu_fan_curve": [1, 2], "theme": "dark"}))
    store = SettingsStore(path)
    with caplog.at_level(logging.WARNING):
        assert store.load().thresholds.ram_percent == 65
    assert _only_file(tmp_path) == ["comfy_memhooks.json"]
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "gpu_fan_curve" in warnings[0] and "theme" in warnings[0]
    assert str(path) in warnings[0]

    store.update({"vram_threshold": 70})  # saving from this version keeps the newer version's keys
    written = json.loads(path.read_text())
    assert written["gpu_fan_curve"] == [1, 2] and written["theme"] == "dark"
    assert written["ram_threshold"] == 65 and written["vram_threshold"] == 70


def test_an_unknown_key_in_a_put_is_still_refused(tmp_path: Path) -> None:
    store = SettingsStore(tmp_path / "comfy_memhooks.json")
    store.load()
    with pytest.raises(ValueError, match="theme"):
        store.update({"theme": "dark"})
