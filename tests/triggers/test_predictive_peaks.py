"""Predictive cleanup learns what a node needed while it ran, through the profile's real RAM peak counters: a node
that takes a block and gives it back before it returns leaves nothing behind, and still gets room made before its
next run."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfy_memhooks import signals
from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.failures import Failures
from comfy_memhooks.profile import ProfileRecorder, ProfileStore
from comfy_memhooks.profile.high_water import ProcessHighWater
from comfy_memhooks.profile.peaks import PeakMethod, RamPeaks
from comfy_memhooks.profile.sampling import ResidentSet
from comfy_memhooks.triggers.learned import SAFETY_MARGIN, LearnedPeaks
from comfy_memhooks.triggers.predictive import PredictiveCleanup
from tests.conftest import FakeClock
from tests.engine.test_pressure import LIMIT, ScriptedProbe, scripted_engine
from tests.fake_marks import FakeProcessMark
from tests.pipeline_support import finish_node, start_node
from tests.standin_executor import ExecutionResult

MIB = 1024**2
RSS = 500 * MIB
SPIKE = 600 * MIB


class Spiking:
    """The profile on a fake ``/proc/self`` (its mark reset and read as Linux's), predictive cleanup beside it."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: Engine):
        self.mark = FakeProcessMark(tmp_path / "proc-self", monkeypatch, rss=RSS)
        statm = tmp_path / "statm"
        statm.write_bytes(f"900000 {RSS // os.sysconf('SC_PAGE_SIZE')} 1000 10 0 800000 0\n".encode())  # in pages
        failures = Failures(logging.getLogger("comfy_memhooks.profile.recorder"), "the profile failed while {kind}")
        self.store = ProfileStore()
        self.recorder = ProfileRecorder(
            self.store,
            resident_set=ResidentSet(str(statm)),
            peaks=RamPeaks(ProcessHighWater(failures, self.mark.proc)),
            pipeline=current_runtime().pipeline,
        )
        self.table = LearnedPeaks()
        self.predictor = PredictiveCleanup(engine, self.table, gpu_index=lambda: 0, pipeline=current_runtime().pipeline)

    def run(self, prompt_id: str) -> None:
        """One prompt of one node that takes ``SPIKE`` above where it started and gives it all back."""
        signals.send_safely(signals.prompt_started, prompt_id, prompt_id=prompt_id)
        start_node("8", "VAEDecode", prompt_id=prompt_id)
        self.mark.allocate(RSS + SPIKE, rss_after=RSS)
        finish_node("8", "VAEDecode", prompt_id=prompt_id, result=ExecutionResult.SUCCESS)
        signals.send_safely(signals.prompt_finished, prompt_id, prompt_id=prompt_id, success=True)


@pytest.fixture
def probe() -> ScriptedProbe:
    return ScriptedProbe(int(LIMIT * 0.5))


@pytest.fixture
def spiking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, probe: ScriptedProbe) -> Iterator[Spiking]:
    made = Spiking(tmp_path, monkeypatch, scripted_engine(probe, FakeClock(), monkeypatch))
    made.predictor.connect()  # before the recorder, as ComfyUI's start-up connects them
    made.recorder.connect()
    yield made
    made.recorder.disconnect()
    made.predictor.disconnect()


def test_a_peak_given_back_before_the_node_returns_is_learned_and_room_is_made_for_it(
    spiking: Spiking, probe: ScriptedProbe
) -> None:
    spiking.run("teach")
    prompt = spiking.store.latest()
    assert prompt is not None
    [node] = prompt.nodes
    assert node.ram_left_bytes == 0  # what it left behind teaches nothing
    assert (node.ram_peak_bytes, node.ram_peak_method) == (SPIKE, PeakMethod.HWM)
    prediction = spiking.table.predict("VAEDecode", None)
    assert prediction is not None and prediction.ram_bytes == pytest.approx(SPIKE * SAFETY_MARGIN, rel=0.01)

    probe.used = LIMIT - 400 * MIB  # 400 MiB free, the node needs 660 MiB; the garbage frees 500
    probe.frees_per_action = {"gc_collect": 500 * MIB}
    engine = spiking.predictor.engine
    spiking.run("again")

    [record] = [record for record in engine.history.records() if record.trigger.kind.value == "predictive"]
    assert record.trigger.node_class == "VAEDecode" and record.trigger.phase == "before"
    assert record.trigger.headroom_bytes == 400 * MIB
    assert record.trigger.predicted_bytes == prediction.ram_bytes
    assert [action.name for action in record.actions] == ["gc_collect", "malloc_trim"]
