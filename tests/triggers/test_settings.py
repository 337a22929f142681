"""The automatic policy's settings: validation naming the field, partial updates, atomic writes, bad files kept."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from comfy_memhooks.engine.modes import Mode
from comfy_memhooks.engine.pressure import Thresholds
from comfy_memhooks.errors import InvalidSetting
from comfy_memhooks.triggers import settings
from comfy_memhooks.triggers.heavy import HeavyNodeIndex
from comfy_memhooks.triggers.settings import DEFAULT_RULES, AutoSettings, HeavyNodeRule, SettingsStore, When


def test_the_defaults_match_the_heavy_nodes_users_know() -> None:
    defaults = AutoSettings()
    assert defaults.enabled and defaults.oom_rescue
    reactor = defaults.rule_for("ReActorFaceSwap")
    assert reactor is not None
    assert (reactor.before_mode, reactor.before_when, reactor.after_mode, reactor.after_when) == (
        Mode.CONSERVATIVE,
        When.THRESHOLD,
        Mode.BALANCED,
        When.ALWAYS,
    )
    for name in ("ReActorFaceSwapOpt", "ReActorRestoreFace", "ReActorFaceBoost"):
        assert defaults.rule_for(name) is reactor
    load = defaults.rule_for("VHS_LoadVideoPath")
    assert load is not None
    assert (load.before_mode, load.after_mode) == (Mode.AGGRESSIVE, Mode.MONITOR_ONLY)
    assert defaults.rule_for("VHS_LoadImagesPath") is not None
    combine = defaults.rule_for("VHS_VideoCombine")
    assert combine is not None
    assert (combine.before_mode, combine.after_mode) == (Mode.MONITOR_ONLY, Mode.BALANCED)
    assert defaults.rule_for("KSampler") is None
    assert defaults.rule_for("reactorfaceswap") is None  # class names are case-sensitive


@pytest.mark.parametrize(
    ("raw", "field", "problem"),
    [
        ({"enabled": "false"}, "enabled", "not a boolean"),
        ({"ram_threshold": 0}, "ram_threshold", "outside the allowed range"),
        ({"vram_threshold": 101}, "vram_threshold", "outside the allowed range"),
        ({"cooldown_seconds": -1}, "cooldown_seconds", "outside the allowed range 0 to 3600 seconds"),
        ({"sample_interval_seconds": 0.01}, "sample_interval_seconds", "0.1 to 60"),
        ({"colour": "red"}, "colour", "unknown setting"),
        ({"rules": {"pattern": "x"}}, "rules", "expected a list"),
        ({"rules": [{"pattern": "A*"}, {"pattern": ""}]}, "rules[1].pattern", "non-empty glob"),
        ({"rules": [{"pattern": "A*", "before_mode": "Turbo"}]}, "rules[0].before_mode", "not a mode"),
        ({"rules": [{"pattern": "A*", "after_when": "sometimes"}]}, "rules[0].after_when", "'always', 'threshold'"),
        ({"rules": [{"pattern": "A*", "mode": "Balanced"}]}, "rules[0].mode", "unknown key"),
        ({"rules": [{"pattern": "x" * 201}]}, "rules[0].pattern", "longer than"),
        ([1, 2], "settings", "expected a JSON object"),
    ],
)
def test_bad_values_name_their_field(raw: Any, field: str, problem: str) -> None:
    with pytest.raises(InvalidSetting) as raised:
        AutoSettings.parse(raw)
    assert raised.value.field == field
    assert problem in raised.value.problem
    assert str(raised.value).startswith(f"{field}: ")


def test_a_partial_update_keeps_the_rest() -> None:
    base = AutoSettings(thresholds=Thresholds(cooldown_seconds=5.0))
    updated = AutoSettings.parse({"ram_threshold": 70}, base=base)
    assert updated.thresholds.ram_percent == 70
    assert updated.thresholds.cooldown_seconds == 5.0
    assert updated.rules == DEFAULT_RULES


def test_settings_round_trip_through_json() -> None:
    custom = AutoSettings.parse(
        {"rules": [{"pattern": "My*", "before_mode": "Aggressive", "before_when": "always"}], "enabled": False}
    )
    again = AutoSettings.parse(json.loads(json.dumps(custom.to_json())))
    assert again == custom
    assert again.rules == (HeavyNodeRule("My*", Mode.AGGRESSIVE, When.ALWAYS, Mode.MONITOR_ONLY, When.ALWAYS),)


def test_a_missing_file_means_defaults(tmp_path: Path) -> None:
    store = SettingsStore(tmp_path / "comfy_memhooks.json")
    assert store.load() == AutoSettings()
    assert not store.path.exists()
    assert store.load_warning is None


def test_updates_are_written_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "user" / "comfy_memhooks.json"
    store = SettingsStore(path)
    store.load()
    store.update({"cooldown_seconds": 12, "oom_rescue": False})

    assert json.loads(path.read_text())["cooldown_seconds"] == 12
    reloaded = SettingsStore(path)
    assert reloaded.load() == store.current
    assert reloaded.current.oom_rescue is False
    assert [entry.name for entry in path.parent.iterdir()] == ["comfy_memhooks.json"]  # no temporary file left


def test_a_bad_update_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "comfy_memhooks.json"
    store = SettingsStore(path)
    store.load()
    store.update({"cooldown_seconds": 12})
    written = path.read_bytes()

    with pytest.raises(InvalidSetting, match=r"rules\[0\]\.after_mode"):
        store.update({"cooldown_seconds": 1, "rules": [{"pattern": "A", "after_mode": "Fast"}]})

    assert store.current.thresholds.cooldown_seconds == 12
    assert path.read_bytes() == written


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "comfy_memhooks.json"
    store = SettingsStore(path)
    store.load()
    store.update({"cooldown_seconds": 12})
    written = path.read_bytes()

    def failing_replace(source: Any, target: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(settings.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        store.update({"cooldown_seconds": 99})

    assert path.read_bytes() == written
    assert store.current.thresholds.cooldown_seconds == 12
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["comfy_memhooks.json"]


@pytest.mark.parametrize(
    "content",
    ['{"cooldown_seconds": ', '{"cooldown_seconds": -5}', '["not", "an", "object"]'],
    ids=["broken-json", "bad-value", "not-an-object"],
)
def test_a_bad_file_is_kept_aside_and_defaults_are_used(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "comfy_memhooks.json"
    path.write_text(content)
    store = SettingsStore(path)

    with caplog.at_level(logging.WARNING):
        assert store.load() == AutoSettings()

    kept = [entry for entry in tmp_path.iterdir() if entry.name.startswith("comfy_memhooks.invalid-")]
    assert len(kept) == 1
    assert kept[0].read_text() == content  # nothing the user wrote is lost
    assert not path.exists()
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(kept[0]) in warnings[0].getMessage()
    assert store.load_warning is not None


def test_the_settings_file_lives_in_comfyuis_user_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMFY_MEMHOOKS_SETTINGS", raising=False)
    folder_paths = type("folder_paths", (), {"get_user_directory": staticmethod(lambda: str(tmp_path / "user"))})
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    assert settings.default_settings_path() == tmp_path / "user" / "comfy_memhooks.json"
    monkeypatch.setenv("COMFY_MEMHOOKS_SETTINGS", str(tmp_path / "elsewhere.json"))
    assert settings.default_settings_path() == tmp_path / "elsewhere.json"


def test_the_heavy_index_matches_once_per_class_until_the_settings_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SettingsStore(tmp_path / "comfy_memhooks.json")
    store.load()
    index = HeavyNodeIndex(lambda: store.current)
    matched: list[str] = []
    original = AutoSettings.rule_for

    def counting(self: AutoSettings, node_class: str) -> HeavyNodeRule | None:
        matched.append(node_class)
        return original(self, node_class)

    monkeypatch.setattr(AutoSettings, "rule_for", counting)
    for _ in range(3):
        assert index.is_heavy("ReActorFaceSwap")
        assert not index.is_heavy("KSampler")
    assert matched == ["ReActorFaceSwap", "KSampler"]

    store.update({"rules": [{"pattern": "KSampler", "after_mode": "Balanced"}]})
    assert index.is_heavy("KSampler")
    assert not index.is_heavy("ReActorFaceSwap")
    assert matched == ["ReActorFaceSwap", "KSampler", "KSampler", "ReActorFaceSwap"]


@pytest.mark.parametrize(
    ("key", "named"),
    [("", 'the key "" (an empty name)'), (" ram", 'the key " ram"'), ("a\nb", 'the key "a\\nb"')],
)
def test_a_key_that_reads_as_no_name_is_quoted_in_the_message(key: str, named: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        AutoSettings.parse({key: 1})
    assert str(caught.value).startswith(f"{named}: unknown setting")
    assert caught.value.field == key


def test_a_long_key_is_cut_short_in_the_message() -> None:
    with pytest.raises(InvalidSetting) as caught:
        AutoSettings.parse({"k" * 100_000: 1})
    assert "(first 80 of 100000 characters)" in str(caught.value) and len(str(caught.value)) < 600
