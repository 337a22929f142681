"""The per-node profile, recorded from the executor hook's signals around the stand-in executor."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from comfy_memhooks import hook, signals
from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.profile import NodeProfile, ProfileRecorder, ProfileStore, VramPeakSource
from comfy_memhooks.profile.records import new_node_profile
from comfy_memhooks.profile.sampling import ResidentSet
from tests.hook_support import chain_prompt
from tests.standin_executor import KINDS, StandInNode, make_execution_module

MIB = 1024**2
HELD_BYTES = 64 * MIB


@pytest.fixture
def store() -> ProfileStore:
    return ProfileStore()


@pytest.fixture
def recorder(store: ProfileStore) -> Iterator[ProfileRecorder]:
    recording = ProfileRecorder(store, pipeline=current_runtime().pipeline)
    recording.connect()
    yield recording
    recording.disconnect()


def nodes() -> dict[str, StandInNode]:
    async def later(x: Any) -> Any:
        await asyncio.sleep(0.01)
        return x

    return {
        "Const": StandInNode(lambda x: x),
        "Hold": StandInNode(lambda x: b"\x01" * HELD_BYTES),  # every page written: resident, held in the output
        "Drop": StandInNode(lambda x: x[:1]),  # keeps one byte of it
        "LazyMix": StandInNode(lambda x: x, lazy=True),
        "Expand": StandInNode(lambda x: x, expands=True),
        "AsyncLater": StandInNode(later),
        "ReActorFaceSwap": StandInNode(lambda x: x),
        "Broken": StandInNode(lambda x: 1 / 0),
    }


def run(kind: str, *classes: str, prompt_id: str = "p1", module: types.ModuleType | None = None) -> Any:
    """Runs a chain of ``classes``; returns the prompt executor, whose cache a second run may use."""
    module = module if module is not None else make_execution_module(kind, nodes())
    hook.install(module, heavy=lambda name: name.startswith("ReActor"), pipeline=current_runtime().pipeline)
    prompt, order = chain_prompt(*classes, first_input=1)
    executor = module.PromptExecutor()
    executor.execute(prompt, prompt_id, {}, order)
    return executor


@pytest.mark.parametrize("kind", KINDS)
def test_each_node_is_recorded_in_order_with_its_figures(kind: str, store: ProfileStore, recorder: ProfileRecorder):
    run(kind, "Const", "Hold", "Drop")

    profile = store.latest()
    assert profile is not None
    assert (profile.prompt_id, profile.finished, profile.success) == ("p1", True, True)
    assert [(node.node_id, node.node_class) for node in profile.nodes] == [("1", "Const"), ("2", "Hold"), ("3", "Drop")]
    starts = [node.started_seconds for node in profile.nodes]
    assert all(start is not None and start >= 0 for start in starts) and starts == sorted(starts)  # type: ignore[type-var]
    for node in profile.nodes:
        assert node.success and not node.cached and not node.heavy
        assert node.duration_seconds >= 0
        assert node.rss_before_bytes and node.rss_after_bytes
        assert node.torch_peak_allocated_bytes is None  # torch has not initialised CUDA here
        assert node.vram_peak_bytes is None and node.vram_peak_source is None


@pytest.mark.parametrize("kind", KINDS)
def test_a_node_holding_memory_shows_it_as_its_ram_peak(kind: str, store: ProfileStore, recorder: ProfileRecorder):
    run(kind, "Const", "Hold", "Drop")

    profile = store.latest()
    assert profile is not None
    held = profile.nodes[1]
    assert held.rss_delta_bytes is not None and held.ram_peak_bytes is not None
    assert 0.9 * HELD_BYTES <= held.ram_peak_bytes <= 1.1 * HELD_BYTES
    assert profile.heaviest(1) == (held,)
    assert store.peak_ram_by_class()["Hold"] == held.ram_peak_bytes
    assert store.peak_ram_by_class()["Const"] < 0.1 * HELD_BYTES
    assert store.peak_vram_by_class() == {}  # no VRAM figure without a GPU: left out, not 0


@pytest.mark.parametrize("kind", KINDS)
def test_cached_nodes_are_marked(kind: str, store: ProfileStore, recorder: ProfileRecorder) -> None:
    executor = run(kind, "Const", "Hold")
    prompt, _ = chain_prompt("Const", "Hold", first_input=1)
    executor.execute(prompt, "p2", {}, ["2"])  # ComfyUI enters only the cached output node

    second = store.get("p2")
    assert second is not None
    assert [(node.node_id, node.cached, node.success) for node in second.nodes] == [("2", True, True)]
    assert second.peak_ram_by_class() == {}  # a cached node ran nothing; it is no class's peak


@pytest.mark.parametrize("kind", KINDS)
def test_a_node_entered_again_after_pending_is_recorded_once(
    kind: str, store: ProfileStore, recorder: ProfileRecorder
) -> None:
    classes = ["Const", "LazyMix", "Expand"] + (["AsyncLater"] if kind != "sync9" else [])
    run(kind, *classes)

    profile = store.latest()
    assert profile is not None
    assert [node.node_id for node in profile.nodes] == [str(index) for index in range(1, len(classes) + 1)]
    assert all(node.success for node in profile.nodes)


def test_only_the_last_prompts_are_kept() -> None:
    store = ProfileStore(prompts_kept=3)
    recorder = ProfileRecorder(store, pipeline=current_runtime().pipeline)
    recorder.connect()
    try:
        module = make_execution_module("sync9", nodes())
        for number in range(5):
            run("sync9", "Const", prompt_id=f"p{number}", module=module)
    finally:
        recorder.disconnect()

    assert store.prompt_ids() == ("p4", "p3", "p2")
    assert store.get("p1") is None
    latest = store.latest()
    assert latest is not None and latest.prompt_id == "p4"


def test_nodes_beyond_the_bound_per_prompt_are_counted_not_kept() -> None:
    store = ProfileStore(nodes_kept=2)
    recorder = ProfileRecorder(store, pipeline=current_runtime().pipeline)
    recorder.connect()
    try:
        run("sync9", "Const", "Const", "Const", "Const")
    finally:
        recorder.disconnect()

    latest = store.latest()
    assert latest is not None
    assert [node.node_id for node in latest.nodes] == ["1", "2"]
    assert latest.nodes_dropped == 2


def test_a_failed_node_and_prompt_are_recorded_as_failed(store: ProfileStore, recorder: ProfileRecorder) -> None:
    run("async11", "Const", "Broken")

    profile = store.latest()
    assert profile is not None
    assert profile.success is False
    assert [(node.node_class, node.success) for node in profile.nodes] == [("Const", True), ("Broken", False)]


def test_node_profiled_is_sent_with_the_complete_record(store: ProfileStore, recorder: ProfileRecorder) -> None:
    received: list[tuple[Any, NodeProfile]] = []

    def receiver(sender: Any, *, profile: NodeProfile, **_: Any) -> None:
        received.append((sender, profile))

    with signals.node_profiled.connected_to(receiver):
        run("sync9", "Const", "Hold")

    latest = store.latest()
    assert latest is not None
    assert received == [(node.node_class, node) for node in latest.nodes]


def test_turned_off_it_records_nothing_new(store: ProfileStore) -> None:
    on = [True]
    recorder = ProfileRecorder(store, enabled=lambda: on[0], pipeline=current_runtime().pipeline)
    recorder.connect()
    try:
        module = make_execution_module("sync9", nodes())
        run("sync9", "Const", prompt_id="first", module=module)
        on[0] = False
        run("sync9", "Const", prompt_id="second", module=module)
    finally:
        recorder.disconnect()

    assert store.prompt_ids() == ("first",)
    assert not signals.node_started.receivers  # off for a whole prompt: the hook sends its node signals to nobody


def test_turned_on_again_it_records_from_the_next_prompt(store: ProfileStore) -> None:
    on = [False]
    recorder = ProfileRecorder(store, enabled=lambda: on[0], pipeline=current_runtime().pipeline)
    recorder.connect()
    try:
        module = make_execution_module("sync9", nodes())
        run("sync9", "Const", prompt_id="off", module=module)
        on[0] = True
        run("sync9", "Const", "Const", prompt_id="on", module=module)
    finally:
        recorder.disconnect()

    assert store.prompt_ids() == ("on",)
    assert [node.node_id for node in store.get("on").nodes] == ["1", "2"]  # type: ignore[union-attr]


def test_the_running_prompt_shows_the_nodes_finished_so_far(store: ProfileStore, recorder: ProfileRecorder) -> None:
    seen: list[Any] = []
    node = StandInNode(lambda x: seen.append(store.current()) or x)
    module = make_execution_module("sync9", {**nodes(), "Peek": node})
    run("sync9", "Const", "Peek", module=module)

    running = seen[0]
    assert running is not None and not running.finished and running.success is None
    assert [node.node_class for node in running.nodes] == ["Const"]
    assert store.get("p1") is not None and store.get("p1").finished  # type: ignore[union-attr]


class FakeCuda:
    """torch.cuda's allocator counters as torch names them; this machine has no GPU."""

    def __init__(self) -> None:
        self.allocated = 1000 * MIB
        self.peak = self.allocated

    def is_initialized(self) -> bool:
        return True

    def reset_peak_memory_stats(self) -> None:
        self.peak = self.allocated

    def memory_allocated(self) -> int:
        return self.allocated

    def memory_reserved(self) -> int:
        return self.allocated + 200 * MIB

    def max_memory_allocated(self) -> int:
        return self.peak

    def use(self, size: int, keep: int) -> None:
        self.peak = max(self.peak, self.allocated + size)
        self.allocated += keep


def test_torch_peak_is_reset_before_each_node_and_read_after(
    monkeypatch: pytest.MonkeyPatch, store: ProfileStore, recorder: ProfileRecorder
) -> None:
    cuda = FakeCuda()
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    module = make_execution_module(
        "sync9",
        {
            "Big": StandInNode(lambda x: cuda.use(3000 * MIB, keep=500 * MIB)),
            "Small": StandInNode(lambda x: cuda.use(10 * MIB, keep=0)),
        },
    )
    run("sync9", "Big", "Small", module=module)

    big, small = store.latest().nodes  # type: ignore[union-attr]
    assert big.torch_allocated_before_bytes == 1000 * MIB and big.torch_allocated_after_bytes == 1500 * MIB
    assert big.torch_peak_allocated_bytes == 4000 * MIB
    assert (big.vram_peak_bytes, big.vram_peak_source) == (3000 * MIB, VramPeakSource.TORCH)
    assert small.vram_peak_bytes == 10 * MIB  # the peak was reset: Big's 4000 MiB is not Small's
    assert store.peak_vram_by_class() == {"Big": 3000 * MIB, "Small": 10 * MIB}


def test_heavy_nodes_are_read_afresh_after_the_optimizer_made_room(store: ProfileStore) -> None:
    readings = iter([(8 * MIB, (100 * MIB,)), (9 * MIB, (700 * MIB,))])
    freed: list[str] = []

    def optimizer_before(sender: Any, **_: Any) -> None:
        freed.append(sender)

    signals.heavy_node_started.connect(optimizer_before, weak=False)  # connected first, as the optimizer is
    recorder = ProfileRecorder(
        store, ram_used=lambda: 5 * MIB, heavy_reading=lambda: next(readings), pipeline=current_runtime().pipeline
    )
    recorder.connect()
    try:
        run("sync9", "Const", "ReActorFaceSwap")
    finally:
        recorder.disconnect()
        signals.heavy_node_started.disconnect(optimizer_before)

    ordinary, heavy = store.latest().nodes  # type: ignore[union-attr]
    assert freed == ["ReActorFaceSwap"]
    assert (ordinary.heavy, ordinary.ram_used_before_bytes, ordinary.gpu_used_before_bytes) == (False, 5 * MIB, ())
    assert heavy.heavy
    assert (heavy.ram_used_before_bytes, heavy.ram_used_after_bytes) == (8 * MIB, 9 * MIB)
    assert (heavy.gpu_used_before_bytes, heavy.gpu_used_after_bytes) == ((100 * MIB,), (700 * MIB,))
    assert (heavy.vram_peak_bytes, heavy.vram_peak_source) == (600 * MIB, VramPeakSource.NVML)


def test_the_resident_set_falls_back_to_psutil_without_statm(tmp_path: Any) -> None:
    import psutil

    reader = ResidentSet(statm=str(tmp_path / "missing"))
    rss = reader.read()
    assert rss is not None and abs(rss - psutil.Process().memory_info().rss) < 64 * MIB


def test_the_nodes_detailed_report_lists_the_heaviest_nodes_of_the_prompt_so_far(
    monkeypatch: pytest.MonkeyPatch, store: ProfileStore, recorder: ProfileRecorder
) -> None:
    from comfy_memhooks.comfy.node import UnifiedMemoryManager
    from comfy_memhooks.comfy.runtime import current_runtime

    monkeypatch.setattr(current_runtime(), "profiles", store)
    reports: list[str] = []
    widgets = {
        "enable_monitoring": True,
        "enable_optimization": False,  # only the report: nothing is freed in this test
        "auto_optimize": False,
        "enable_auto_cleanup": False,
        "mode": "Conservative",
        "ram_threshold": 80.0,
        "vram_threshold": 85.0,
        "cooldown_seconds": 30.0,
        "detailed_report": True,
    }
    manager = StandInNode(lambda x: reports.append(UnifiedMemoryManager().run(**widgets)["result"][1]))
    module = make_execution_module("sync9", {**nodes(), "UnifiedMemoryManager": manager})
    run("sync9", "Const", "Hold", "UnifiedMemoryManager", module=module)

    lines = reports[0].splitlines()
    title = lines.index("Heaviest nodes of prompt p1 so far, of 2:")
    assert lines[title + 1].startswith("  Hold #2: RAM peak +6")  # 64 MiB, give or take the allocator's rounding
    assert "(left +6" in lines[title + 1]  # and it kept them
    assert "VRAM peak +n/a" in lines[title + 1]


def test_a_record_made_by_new_node_profile_is_the_dataclass_s_own() -> None:
    """The recorder's fast construction makes the very record ``NodeProfile(...)`` makes: equal, hashed alike,
    frozen, and read by field."""
    values: list[Any] = [f"value {index}" for index in range(len(dataclasses.fields(NodeProfile)))]
    made = new_node_profile(*values)
    assert type(made) is NodeProfile and made == NodeProfile(*values) and hash(made) == hash(NodeProfile(*values))
    assert dataclasses.astuple(made) == tuple(values)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.node_id = "another"  # type: ignore[misc]
