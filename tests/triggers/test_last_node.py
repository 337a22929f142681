"""The node ComfyUI died in: kept in a memory-mapped file that survives a SIGKILL, and learned at the next start."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.triggers.last_node import SIZE, RunningNode, RunningNodeFile, parse
from comfy_memhooks.triggers.learned import LearnedPeaks, Sample, Workload
from comfy_memhooks.triggers.predictive import PredictiveCleanup
from tests.hook_support import FakeProbe

MIB = 1024**2
ROOT = Path(__file__).resolve().parents[2]


def test_a_node_killed_with_sigkill_is_found_by_the_next_process(tmp_path: Path) -> None:
    path = tmp_path / "running.bin"
    child = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from comfy_memhooks.triggers.last_node import RunningNodeFile
        running = RunningNodeFile(Path({str(path)!r}))
        running.open()
        running.started("KSampler", "3", 1, None, None)
        running.finished()
        running.started("VAEDecode", "8", 900 * 1024**2, "frame_pixels", 1280 * 720 * 400)
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer does: no exit handler, no flush
        """
    )
    finished = subprocess.run([sys.executable, "-c", child], timeout=60, check=False)
    assert finished.returncode == -signal.SIGKILL
    left = RunningNodeFile(path).open()
    assert left == RunningNode("VAEDecode", "8", 900 * MIB, "frame_pixels", 1280 * 720 * 400)
    assert RunningNodeFile(path).open() is None  # opening clears it: it is told once


def test_a_clean_stop_and_an_ended_node_leave_nothing(tmp_path: Path) -> None:
    running = RunningNodeFile(tmp_path / "running.bin")
    assert running.open() is None
    running.started("VAEDecode", "8", None, None, None)
    running.finished()
    running.close()
    assert RunningNodeFile(tmp_path / "running.bin").open() is None
    assert (tmp_path / "running.bin").stat().st_size == SIZE


@pytest.mark.parametrize(
    "data",
    [b"", b"\0rest", b"1\tA\t1\t5\t\t", b"2\tA\t1\t5\t\t\n", b"1\t\t1\t5\t\t\n", b"1\tA\xff\t1\t5\t\t\n", b"1\tA\t1\n"],
)
def test_garbage_in_the_file_names_no_node(data: bytes) -> None:
    assert parse(data) is None


def test_an_unwritable_folder_turns_it_off_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "comfy_memhooks")
    running = RunningNodeFile(tmp_path / "missing-folder" / "running.bin")
    assert running.open() is None
    running.started("VAEDecode", "8", 1, None, None)  # nothing to write into, nothing raised
    running.finished()
    assert len([r for r in caplog.records if "cannot be opened" in r.getMessage()]) == 1


def test_a_class_comfyui_died_in_gets_room_made_before_it_and_its_first_peak_replaces_the_guess() -> None:
    engine = Engine(probe=FakeProbe(ram_percent=50.0))
    table = LearnedPeaks()
    predictor = PredictiveCleanup(engine, table, pipeline=current_runtime().pipeline)
    workload = Workload("frame_pixels", 1000)
    predictor.learn_from_crash(RunningNode("VAEDecode", "8", 900 * MIB, "frame_pixels", 1000))
    prediction = table.predict("VAEDecode", workload)
    assert prediction is not None and prediction.ram_bytes == int(900 * MIB * 1.1)  # more than it had
    table.learn("VAEDecode", Sample(1400 * MIB, None, workload))
    prediction = table.predict("VAEDecode", workload)
    assert prediction is not None and prediction.ram_bytes == int(1400 * MIB * 1.1)


def test_without_a_figure_of_free_ram_it_is_only_said(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "comfy_memhooks")
    table = LearnedPeaks()
    PredictiveCleanup(
        Engine(probe=FakeProbe(ram_percent=50.0)), table, pipeline=current_runtime().pipeline
    ).learn_from_crash(RunningNode("VAEDecode", "8", None, None, None))
    assert "VAEDecode" not in table
    assert any("last stopped while VAEDecode #8 ran" in r.getMessage() for r in caplog.records)
