"""What predictive cleanup learned, on disk: kept across restarts, bounded, and a bad file never stops anything."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from comfy_memhooks.errors import InvalidSetting
from comfy_memhooks.triggers.learned import MAX_CLASSES, LearnedPeaks, Prediction, Sample, Workload, new_sample
from comfy_memhooks.triggers.learned_file import LEARNED_FILE_NAME, LearnedFile, default_learned_path
from comfy_memhooks.triggers.settings import AutoSettings

MIB = 1024**2


def taught() -> LearnedPeaks:
    table = LearnedPeaks()
    table.learn("VHS_LoadVideo", Sample(900 * MIB, None, Workload("frame_pixels", 48 * 640 * 360)))
    table.learn("KSampler", Sample(20 * MIB, 3000 * MIB, None), Prediction("KSampler", 10 * MIB, 2800 * MIB, "x"))
    return table


def test_what_was_learned_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / LEARNED_FILE_NAME
    assert LearnedFile(path, taught()).save()

    restarted = LearnedFile(path, LearnedPeaks()).load()

    assert restarted.summary() == taught().summary()
    assert restarted.predict("VHS_LoadVideo", Workload("frame_pixels", 96 * 640 * 360)) == taught().predict(
        "VHS_LoadVideo", Workload("frame_pixels", 96 * 640 * 360)
    )
    assert not LearnedFile(path, restarted).save()  # nothing new: no write


def test_the_file_lives_beside_the_settings_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COMFY_MEMHOOKS_SETTINGS", str(tmp_path / "settings.json"))
    assert default_learned_path() == tmp_path / LEARNED_FILE_NAME


def test_the_file_is_small_and_bounded(tmp_path: Path) -> None:
    table = LearnedPeaks()
    for index in range(MAX_CLASSES + 50):
        table.learn(f"Class{index}", Sample(index * MIB, None, Workload("frames", 10)))
    path = tmp_path / LEARNED_FILE_NAME
    LearnedFile(path, table).save()

    assert len(LearnedFile(path, LearnedPeaks()).load()) == MAX_CLASSES
    assert path.stat().st_size < 60_000


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe not utf-8", "utf-8"),
        (b"{not json", "Expecting"),
        (b'{"version": 3, "classes": {}}', "version"),
        (b'{"version": true, "classes": {}}', "version"),
        (b'{"version": 2, "classes": {"A": {"runs": 1, "samples": [[1, 2, null, null]]}}}', "samples[0]"),
        (b'{"version": 2, "classes": {"A": {"runs": 1, "samples": [[1, 2, null, null, "max"]]}}}', "samples[0][4]"),
        (b'{"version": 1, "classes": {"A": {"runs": -1}}}', "classes['A'].runs"),
        (b'{"version": 1, "classes": {"A": {"runs": 1, "samples": [[1, 2, "frames", "ten"]]}}}', "samples[0][3]"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_a_bad_file_is_set_aside_with_one_warning_and_learning_starts_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, problem: str
) -> None:
    path = tmp_path / LEARNED_FILE_NAME
    path.write_bytes(content)

    with caplog.at_level(logging.WARNING):
        file = LearnedFile(path, LearnedPeaks())
        table = file.load()

    assert len(table) == 0
    [aside] = [each for each in tmp_path.iterdir() if ".invalid-" in each.name]
    assert aside.read_bytes() == content
    assert not path.exists()
    [warning] = caplog.records
    assert str(path) in warning.getMessage() and problem in warning.getMessage()
    assert warning.exc_info is None  # one line, never a traceback
    assert file.load_warning == warning.getMessage().removeprefix("comfy_memhooks predictive cleanup: ")
    table.learn("A", Sample(MIB, None, None))
    assert file.save() and json.loads(path.read_text())["classes"]["A"]["runs"] == 1


def test_an_unreadable_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / LEARNED_FILE_NAME
    path.mkdir()  # reading it fails (as a file this user may not read would, even as root)
    (path / "kept").write_text("{}")
    file = LearnedFile(path, LearnedPeaks())

    file.load()
    file.table.learn("A", Sample(MIB, None, None))

    assert not file.save()
    assert "could not be read" in (file.load_warning or "")
    assert (path / "kept").read_text() == "{}"


def test_the_setting_is_on_by_default_and_validated_like_the_others() -> None:
    assert AutoSettings().predictive_cleanup is True
    assert AutoSettings.parse({"predictive_cleanup": False}).predictive_cleanup is False
    with pytest.raises(InvalidSetting) as raised:
        AutoSettings.parse({"predictive_cleanup": "sometimes"})
    assert raised.value.field == "predictive_cleanup"


def test_a_file_of_growth_figures_is_read_upgraded_and_its_growth_gives_way_to_the_first_peak(tmp_path: Path) -> None:
    """A version 1 file (what each run left behind) still predicts; the class's first measured peak replaces it."""
    path = tmp_path / "learned.json"
    old = {
        "version": 1,
        "classes": {
            "VAEDecode": {
                "runs": 2,
                "samples": [[100 * MIB, None, "frames", 10], [200 * MIB, None, "frames", 20]],
                "predicted": [None, None],
                "actual": [200 * MIB, None],
            },
            "KSampler": {
                "runs": 1,
                "samples": [[5 * MIB, 900 * MIB, None, None]],
                "predicted": [None, None],
                "actual": [5 * MIB, 900 * MIB],
            },
        },
    }
    path.write_text(json.dumps(old))
    file = LearnedFile(path, LearnedPeaks())
    table = file.load()
    assert file.load_warning is None
    assert not path.with_name("learned.invalid").exists() and len(list(tmp_path.iterdir())) == 1  # kept, not aside
    before = table.predict("VAEDecode", Workload("frames", 40))
    assert before is not None and before.ram_bytes == int(400 * MIB * 1.1)  # growth still scales, as before

    table.learn("VAEDecode", Sample(1400 * MIB, None, Workload("frames", 20)))  # its first true peak
    after = table.predict("VAEDecode", Workload("frames", 20))
    assert after is not None and after.ram_bytes == int(1400 * MIB * 1.1)  # the growth runs gave way

    assert file.save()
    saved = json.loads(path.read_text())
    assert saved["version"] == 2
    assert saved["classes"]["KSampler"]["samples"] == [[5 * MIB, 900 * MIB, None, None, "growth"]]
    assert [sample[4] for sample in saved["classes"]["VAEDecode"]["samples"]] == ["peak"]
    again = LearnedFile(path, LearnedPeaks()).load().predict("KSampler")
    assert again is not None and again.vram_bytes == int(900 * MIB * 1.1)


def test_a_prompt_of_nodes_that_took_nothing_writes_nothing_until_a_peak_moves(tmp_path: Path) -> None:
    """Saved after a prompt only when a class is new or what predicts it moved; the runs' counts wait for that save,
    or for the one at exit."""
    path = tmp_path / LEARNED_FILE_NAME
    file = LearnedFile(path, LearnedPeaks())
    table = file.table
    table.learn("ImageInvert", Sample(0, None, Workload("frame_pixels", 64)))
    table.learn("VAEDecode", Sample(300 * MIB, None, None))
    assert file.save()  # new classes

    for _ in range(5):  # another prompt: the same classes, the same peaks
        table.learn("ImageInvert", Sample(4096, None, Workload("frame_pixels", 64)))
        table.learn("VAEDecode", Sample(200 * MIB, None, None))
    assert not table.changed and not file.save()
    assert json.loads(path.read_text())["classes"]["ImageInvert"]["runs"] == 1
    assert [row.runs for row in table.summary()] == [6, 6]  # in memory, every run counts

    table.learn("VAEDecode", Sample(400 * MIB, None, None))  # its peak moved
    assert file.save()
    saved = json.loads(path.read_text())["classes"]
    assert (saved["ImageInvert"]["runs"], saved["VAEDecode"]["runs"]) == (6, 7)

    table.learn("ImageInvert", Sample(0, None, None))
    assert not file.save()
    assert file.save(everything=True)  # at exit: the count too
    assert json.loads(path.read_text())["classes"]["ImageInvert"]["runs"] == 7
    assert not file.save(everything=True)


def test_a_learned_run_made_by_new_sample_is_the_dataclass_s_own() -> None:
    made = new_sample(MIB, None, Workload("frames", 3), True)
    assert made == Sample(MIB, None, Workload("frames", 3), True) and type(made) is Sample
    assert hash(made) == hash(Sample(MIB, None, Workload("frames", 3), True))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.ram_peak_bytes = 0  # type: ignore[misc]
