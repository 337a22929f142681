"""Predictive cleanup: peaks learned from the profile around the stand-in executor, scaled by their workload, and
just enough freed before a node whose predicted peak does not fit.

The node's memory is real (a stand-in node holds bytes it wrote, and the profile reads this process's RSS); the
container's free memory is a scripted probe, so what is tested is the decision and the amount, not this machine.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from comfy_memhooks import hook
from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.engine.comfy_cache import POLL_MARGIN_BYTES
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.probe.readings import GIB, GpuBackend, GpuReading, GpuSource, MemorySnapshot
from comfy_memhooks.profile import ProfileRecorder, ProfileStore
from comfy_memhooks.triggers.learned import SAFETY_MARGIN, LearnedPeaks, Prediction, Sample, Workload, fit_line
from comfy_memhooks.triggers.predictive import PredictiveCleanup, Shortfall, free_exactly, shortfalls
from comfy_memhooks.triggers.workload import workload_of
from tests.conftest import FakeClock
from tests.engine.test_pressure import LIMIT, ScriptedProbe, ram_at, scripted_engine
from tests.standin_executor import KINDS, StandInNode, make_execution_module

MIB = 1024**2
PIXELS = 64 * 64  # one "frame" of the stand-in video node is 64 x 64 pixels of 4 bytes x 8: 128 KiB
FRAME_BYTES = PIXELS * 32


@pytest.fixture
def probe() -> ScriptedProbe:
    return ScriptedProbe(int(LIMIT * 0.5))


@pytest.fixture
def engine(probe: ScriptedProbe, monkeypatch: pytest.MonkeyPatch) -> Engine:
    return scripted_engine(probe, FakeClock(), monkeypatch)


class Setup:
    def __init__(self, engine: Engine, enabled: bool = True):
        self.table = LearnedPeaks()
        self.enabled = enabled
        self.saves = 0
        self.store = ProfileStore()
        self.predictor = PredictiveCleanup(
            engine,
            self.table,
            enabled=lambda: self.enabled,
            save=self.save,
            gpu_index=lambda: 0,
            pipeline=current_runtime().pipeline,
        )
        self.recorder = ProfileRecorder(self.store, pipeline=current_runtime().pipeline)

    def save(self) -> None:
        self.saves += 1


@pytest.fixture
def setup(engine: Engine) -> Iterator[Setup]:
    made = Setup(engine)
    made.predictor.connect()  # before the recorder, as ComfyUI's start-up connects them
    made.recorder.connect()
    yield made
    made.recorder.disconnect()
    made.predictor.disconnect()


def video_nodes() -> dict[str, StandInNode]:
    return {
        "LoadFrames": StandInNode(lambda frames, width, height: (frames, width, height)),
        # Holds every frame it decoded (pages written: resident), as a video decoder's IMAGE batch does.
        "DecodeFrames": StandInNode(lambda video: b"\x01" * (video[0] * video[1] * video[2] * 32)),
        "Sink": StandInNode(lambda images: images[:1]),
    }


def video_prompt(frames: int) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """A loader with frame-count and size widgets, a decoder fed by it (no widget: it inherits the workload)."""
    prompt = {
        "1": {"class_type": "LoadFrames", "inputs": {"frames": frames, "width": 64, "height": 64}},
        "2": {"class_type": "DecodeFrames", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "Sink", "inputs": {"images": ["2", 0]}},
    }
    return prompt, ["1", "2", "3"]


def run(kind: str, frames: int, prompt_id: str, module: types.ModuleType | None = None) -> Any:
    module = module if module is not None else make_execution_module(kind, video_nodes())
    hook.install(module, heavy=lambda name: False, pipeline=current_runtime().pipeline)  # no rule matches
    prompt, order = video_prompt(frames)
    executor = module.PromptExecutor()
    executor.execute(prompt, prompt_id, {}, order)
    return executor


def predictive_records(engine: Engine) -> list[Any]:
    return [record for record in engine.history.records() if record.trigger.kind.value == "predictive"]


# --- learning and scaling ----------------------------------------------------------------------------------------


def test_a_peak_is_learned_per_unit_of_its_driver_so_twice_the_frames_predicts_twice_the_peak() -> None:
    table = LearnedPeaks()
    table.learn("Decode", Sample(100 * MIB, 40 * MIB, Workload("frame_pixels", 1000)))

    doubled = table.predict("Decode", Workload("frame_pixels", 2000))

    assert doubled is not None
    assert doubled.ram_bytes == int(200 * MIB * SAFETY_MARGIN)
    assert doubled.vram_bytes == int(80 * MIB * SAFETY_MARGIN)
    assert doubled.basis == "scaled to 2000 frame_pixels"


def test_a_fixed_part_is_not_scaled_once_runs_of_two_sizes_were_seen() -> None:
    table = LearnedPeaks()
    # A node that loads a 2000 MB model, then takes 10 MB a frame.
    table.learn("Upscale", Sample((2000 + 10 * 10) * MIB, None, Workload("frames", 10)))
    assert table.predict("Upscale", Workload("frames", 100)) is not None  # one size: proportional, for now
    table.learn("Upscale", Sample((2000 + 10 * 20) * MIB, None, Workload("frames", 20)))

    prediction = table.predict("Upscale", Workload("frames", 100))

    assert prediction is not None and prediction.ram_bytes is not None
    assert prediction.ram_bytes == pytest.approx((2000 + 10 * 100) * MIB * SAFETY_MARGIN, rel=1e-6)
    assert fit_line([(10, 5), (20, 3)]) == (5.0, 0.0)  # a peak that fell with more frames: not scaled down


def test_without_a_driver_the_recent_maximum_with_a_margin_stands() -> None:
    table = LearnedPeaks()
    for peak in (50, 300, 120):
        table.learn("KSampler", Sample(peak * MIB, None, None))

    prediction = table.predict("KSampler", Workload("frames", 10))  # no run of that kind to scale from

    assert prediction is not None
    assert (prediction.ram_bytes, prediction.vram_bytes) == (int(300 * MIB * SAFETY_MARGIN), None)
    assert prediction.basis == "recent maximum"
    assert table.predict("NeverSeen") is None


def test_the_table_is_bounded_and_forgets_the_least_recently_seen_class() -> None:
    table = LearnedPeaks(max_classes=3)
    for name in ("A", "B", "C"):
        table.learn(name, Sample(MIB, None, None))
    table.learn("A", Sample(MIB, None, None))  # A is recent again
    table.learn("D", Sample(MIB, None, None))

    assert [row.node_class for row in table.summary()] == ["D", "A", "C"]
    assert "B" not in table


def test_drivers_come_from_widgets_or_from_the_node_that_feeds_it() -> None:
    vhs = {"video": "clip.mp4", "force_rate": 0, "frame_load_cap": 48, "custom_width": 640, "custom_height": 360}
    assert workload_of(vhs, lambda _: None) == Workload("frame_pixels", 48 * 640 * 360)
    # VideoHelperSuite's cap 0 is "every frame", unknown before the video is read; the size still counts.
    assert workload_of({**vhs, "frame_load_cap": 0}, lambda _: None) == Workload("pixels", 640 * 360)
    assert workload_of({"batch_size": 4}, lambda _: None) == Workload("frames", 4)
    assert workload_of({"seed": 5, "enabled": True}, lambda _: None) is None
    upstream = {"1": Workload("frames", 10), "2": Workload("frames", 30)}
    assert workload_of({"a": ["1", 0], "b": ["2", 0], "c": 1.5}, upstream.get) == Workload("frames", 30)
    assert workload_of(None, upstream.get) is None


# --- before a node ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_learned_node_that_does_not_fit_gets_just_the_model_free_cleanup_it_needs(
    kind: str, setup: Setup, engine: Engine, probe: ScriptedProbe
) -> None:
    run(kind, 400, "teach")  # 400 frames of 128 KiB: 50 MiB held by the decoder
    learned = setup.table.predict("DecodeFrames", Workload("frame_pixels", 800 * PIXELS))
    assert learned is not None and learned.ram_bytes is not None
    expected = 800 * FRAME_BYTES * SAFETY_MARGIN
    assert 0.9 * expected <= learned.ram_bytes <= 1.25 * expected  # the real RSS growth, scaled to 800 frames
    assert predictive_records(engine) == []  # never seen on the first run: left to the thresholds
    assert setup.saves == 1

    probe.used = LIMIT - 60 * MIB  # 60 MiB free; 800 frames need about 110 MiB
    probe.frees_per_action = {"gc_collect": 200 * MIB}
    run(kind, 800, "twice-as-long")

    [record] = predictive_records(engine)
    assert record.trigger.node_class == "DecodeFrames" and record.trigger.phase == "before"
    assert record.trigger.headroom_bytes == 60 * MIB
    assert [action.name for action in record.actions] == ["gc_collect", "malloc_trim"]  # no model was unloaded
    assert "scaled to" in record.trigger.reason
    [row] = [row for row in setup.table.summary() if row.node_class == "DecodeFrames"]
    assert row.runs == 2 and row.predicted_ram_bytes == record.trigger.predicted_bytes
    assert row.actual_ram_bytes is not None and row.actual_ram_bytes > 80 * MIB


def teach_then_fill(setup: Setup, probe: ScriptedProbe) -> Prediction:
    """The decoder run once at 800 frames, then the container left 20 MiB short of its limit with garbage that frees
    only 5 MiB: the next 800-frame run does not fit. Returns the prediction for it."""
    run(KINDS[0], 800, "teach")
    prediction = setup.table.predict("DecodeFrames", Workload("frame_pixels", 800 * PIXELS))
    assert prediction is not None and prediction.ram_bytes is not None
    probe.used = LIMIT - 20 * MIB
    probe.frees_per_action = {"gc_collect": 5 * MIB}
    return prediction


def test_when_the_model_free_cleanup_is_not_enough_comfyui_is_asked_for_exactly_what_is_missing(
    setup: Setup, engine: Engine, probe: ScriptedProbe, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch  # the CPU build: ComfyUI's process has torch loaded

    asked: list[tuple[int, Any]] = []
    comfy_free = 10_000 * MIB  # ComfyUI's own reading of free memory (the host's, for the CPU)

    def free_memory(required: int, device: Any, keep_loaded: Any = ()) -> list[int]:
        asked.append((required, device))
        probe.used -= required - comfy_free  # it unloads what it was asked for
        return [0]

    model_management = types.SimpleNamespace(free_memory=free_memory, get_free_memory=lambda device: comfy_free)
    monkeypatch.setitem(sys.modules, "comfy.model_management", model_management)
    monkeypatch.setitem(sys.modules, "torch", torch)
    prediction = teach_then_fill(setup, probe)
    run(KINDS[0], 800, "again")

    [record] = predictive_records(engine)
    names = [action.name for action in record.actions]
    assert names == ["gc_collect", "malloc_trim", "comfy_cache_release", "comfy_free_memory_ram"]
    assert record.actions[2].skipped_reason is not None  # ComfyUI's classic cache has nothing to give back
    missing = prediction.ram_bytes - 25 * MIB  # what was still missing after the garbage went
    assert asked == [(comfy_free + missing, torch.device("cpu"))]


def test_comfyuis_output_cache_is_asked_before_any_model_is_unloaded(
    setup: Setup, engine: Engine, probe: ScriptedProbe, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch  # the CPU build: ComfyUI's process has torch loaded

    targets: list[int] = []
    unloads: list[int] = []
    comfy_available = 10_000 * MIB  # ComfyUI's own reading of available RAM

    def extra_ram_release(target: int, free_active: bool = False) -> int:
        targets.append(target)
        freed = target - comfy_available
        probe.used -= freed  # its cache gives back what it was asked for
        return freed

    def free_memory(required: int, device: Any, keep_loaded: Any = ()) -> list[int]:
        unloads.append(required)
        return []

    model_management = types.SimpleNamespace(free_memory=free_memory, get_free_memory=lambda device: 0)
    memory_management = types.SimpleNamespace(extra_ram_release=extra_ram_release)
    system_memory = types.SimpleNamespace(virtual_memory_available=lambda: comfy_available)
    monkeypatch.setitem(sys.modules, "comfy.model_management", model_management)
    monkeypatch.setitem(sys.modules, "comfy.memory_management", memory_management)
    monkeypatch.setitem(sys.modules, "comfy.system_memory", system_memory)
    monkeypatch.setitem(sys.modules, "torch", torch)
    prediction = teach_then_fill(setup, probe)
    run(KINDS[0], 800, "again")

    [record] = predictive_records(engine)
    assert [action.name for action in record.actions] == ["gc_collect", "malloc_trim", "comfy_cache_release"]
    missing = prediction.ram_bytes - 25 * MIB
    # The available RAM to reach, as ComfyUI reads it: what is missing, at least the margin for its own reading.
    assert targets == [comfy_available + max(missing, POLL_MARGIN_BYTES)]
    assert unloads == []  # the cache was enough: no model was unloaded


def test_a_class_never_seen_is_left_to_the_thresholds(setup: Setup, engine: Engine, probe: ScriptedProbe) -> None:
    probe.used = LIMIT - MIB
    probe.frees_per_action = {"gc_collect": 500 * MIB}

    run(KINDS[0], 400, "first")

    assert predictive_records(engine) == []
    assert "DecodeFrames" in setup.table


def test_a_node_that_fits_costs_one_ram_reading_and_no_cleanup(
    setup: Setup, engine: Engine, probe: ScriptedProbe
) -> None:
    run(KINDS[0], 800, "teach")
    reads, snapshots = probe.ram_reads, probe.snapshots

    run(KINDS[0], 800, "fits")  # half the 3 GB container is free

    assert predictive_records(engine) == []
    assert probe.ram_reads - reads == 1  # the decoder's; the others are predicted under 64 MiB: not worth a read
    assert probe.snapshots == snapshots


def test_the_setting_off_leaves_it_to_the_thresholds_and_learns_nothing(
    setup: Setup, engine: Engine, probe: ScriptedProbe
) -> None:
    run(KINDS[0], 400, "teach")
    setup.enabled = False
    probe.used = LIMIT - MIB
    probe.frees_per_action = {"gc_collect": 500 * MIB}

    run(KINDS[0], 800, "off")

    assert predictive_records(engine) == []
    assert {row.node_class: row.runs for row in setup.table.summary()}["DecodeFrames"] == 1  # nor does it learn


def test_cached_nodes_teach_nothing(setup: Setup, engine: Engine) -> None:
    module = make_execution_module(KINDS[0], video_nodes())
    hook.install(module, heavy=lambda name: False, pipeline=current_runtime().pipeline)
    prompt, order = video_prompt(400)
    executor = module.PromptExecutor()
    executor.execute(prompt, "first", {}, order)
    executor.execute(prompt, "cached", {}, order)  # same inputs: ComfyUI answers every node from its cache

    assert {row.node_class: row.runs for row in setup.table.summary()} == {
        "Sink": 1,
        "DecodeFrames": 1,
        "LoadFrames": 1,
    }


def test_vram_is_compared_with_the_free_memory_of_the_gpu_the_nodes_run_on() -> None:
    gpus = (
        GpuReading(0, "first", 80 * GIB, 79 * GIB, 1 * GIB),
        GpuReading(1, "second", 80 * GIB, 10 * GIB, 70 * GIB),
    )
    snapshot = MemorySnapshot(0.0, ram_at(LIMIT // 2), gpus, GpuSource.NVML)
    prediction = Prediction("KSampler", 100 * MIB, 5 * GIB, "recent maximum")

    assert shortfalls(prediction, snapshot, gpu_index=1) == []
    assert shortfalls(prediction, snapshot, gpu_index=0) == [Shortfall("VRAM", 5 * GIB, 1 * GIB, 0, "cuda")]
    assert shortfalls(prediction, snapshot, gpu_index=7) == []  # a GPU not read: nothing known, nothing done
    tight = MemorySnapshot(0.0, ram_at(LIMIT - 50 * MIB), gpus, GpuSource.NVML)
    assert [item.resource for item in shortfalls(prediction, tight, gpu_index=0)] == ["RAM", "VRAM"]


def test_models_are_unloaded_from_the_gpu_the_node_needs_on_its_own_device_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An Intel GPU is an ``xpu`` device to torch and ComfyUI: asking ComfyUI to free ``cuda:0`` would free nothing."""
    import torch

    asked: list[str] = []

    def free_memory(required: int, device: Any, keep_loaded: Any = ()) -> list[int]:
        asked.append(str(device))
        return []

    model_management = types.SimpleNamespace(free_memory=free_memory, get_free_memory=lambda device: 0)
    monkeypatch.setitem(sys.modules, "comfy.model_management", model_management)
    monkeypatch.setitem(sys.modules, "torch", torch)
    gpus = (GpuReading(0, "Arc A770", 16 * GIB, 15 * GIB, 1 * GIB, backend=GpuBackend.XPU),)
    snapshot = MemorySnapshot(0.0, ram_at(LIMIT // 2), gpus, GpuSource.TORCH)
    [short] = shortfalls(Prediction("KSampler", None, 5 * GIB, "recent maximum"), snapshot, gpu_index=0)
    assert short.device_type == "xpu"

    outcome = free_exactly(short, lambda: 1 * GIB).run(types.SimpleNamespace())  # type: ignore[arg-type]

    assert asked == ["xpu:0"], outcome


def test_a_class_whose_peaks_can_never_matter_is_not_even_predicted() -> None:
    """An image inversion learned at a few MiB: nothing is worked out before its nodes; a scaled class still is."""
    table = LearnedPeaks()
    table.learn("ImageInvert", Sample(2 * MIB, None, None))
    table.learn("VAEDecode", Sample(2 * MIB, None, Workload("frames", 10)))
    table.learn("KSampler", Sample(None, 900 * MIB, None))

    assert table.never_reaches("ImageInvert", 64 * MIB)
    assert not table.never_reaches("VAEDecode", 64 * MIB)  # 1,000 frames would reach it
    assert not table.never_reaches("KSampler", 64 * MIB)
    assert not table.never_reaches("Unseen", 64 * MIB)
