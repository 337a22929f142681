"""ComfyUI 0.33's own release after every node beside comfy_memhooks' cleanups, through the stand-in executor: the
last rung waits for ComfyUI's turn, a cleanup that ComfyUI's release ran during says its figure includes it, and
every release ComfyUI makes (after a node or from inside one) is counted as one."""

from __future__ import annotations

import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from comfy_memhooks.engine import comfy_cache
from comfy_memhooks.engine.actions import LEFT_TO_COMFYUI
from comfy_memhooks.engine.comfy_release import DURING_CLEANUP_NOTICE
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import OptimizationRecord, TriggerKind
from comfy_memhooks.engine.last_rung import UNLOADED_NOTICE
from comfy_memhooks.engine.request import CleanupRequest
from comfy_memhooks.probe.readings import GIB, MIB, RamReading, RamSource
from comfy_memhooks.triggers.settings import SettingsStore
from tests.engine.test_last_rung import reactor
from tests.hook_support import FakeProbe, chain_prompt, hooked_runtime
from tests.standin_executor import Outputs, StandInNode, make_execution_module
from tests.standin_ram_cache import FakeRam, RAMPressureCache, install_memory_management

TOTAL = 16 * GIB
ENTRY = 64 * MIB
SESSIONS = 4 * GIB  # what ReActor's onnxruntime sessions hold, given back when they are unloaded
RUNG = ["reactor_faces_under_pressure", "reactor_models_under_pressure", "comfy_free_memory_for_ram"]
WATCHDOG_THREAD = "memhooks-test-watchdog"


class RamProbe(FakeProbe):
    """The container's RAM in use is what the stand-in cache's RAM says, for the readings and for each action's
    measurement alike; ``during_cleanup`` runs in the watchdog's thread, as its first action ends."""

    def __init__(self, ram: FakeRam):
        super().__init__()
        self.fake = ram
        self.during_cleanup: Any = None
        self.watchdog_reads = 0

    def _ram(self) -> RamReading:
        used = TOTAL - self.fake.available
        return RamReading(RamSource.CGROUP_V1, TOTAL, used, self.fake.available, used, 64 * GIB, "/memhooks")

    def usage(self) -> tuple[int | None, int | None]:
        if threading.current_thread().name == WATCHDOG_THREAD and self.during_cleanup is not None:
            self.watchdog_reads += 1
            if self.watchdog_reads == 2:  # the first action's "after": it ran while ComfyUI did what it did
                self.during_cleanup()
        return TOTAL - self.fake.available, None


class Setup:
    """A 0.33-like ComfyUI whose cache ComfyUI releases after every node (``released=False``: the classic cache,
    which nothing releases per node), ReActor's sessions loaded, the subscriber installed."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, released: bool = True):
        self.memory_management = install_memory_management(monkeypatch)
        monkeypatch.delitem(sys.modules, "comfy.system_memory", raising=False)  # 0.33 has none
        self.ram = FakeRam(available=8 * GIB)
        monkeypatch.setattr(comfy_cache, "host_available_bytes", lambda: self.ram.available)
        model_management = types.ModuleType("comfy.model_management")
        model_management.total_ram = TOTAL // MIB  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "comfy.model_management", model_management)
        self.reactor = reactor(monkeypatch)
        unload = self.reactor.unload_all_models

        def unload_all_models() -> None:
            unload()
            self.ram.available += SESSIONS

        self.reactor.unload_all_models = unload_all_models  # type: ignore[attr-defined]
        self.probe = RamProbe(self.ram)
        self.engine = Engine(probe=self.probe)
        self.store = SettingsStore(tmp_path / "comfy_memhooks.json")
        self.store.load()
        self.store.update({"pressure_watchdog": False, "rules": [], "cooldown_seconds": 0})

        def pin(x: Any) -> Any:  # 0.33's pinning asks ComfyUI's cache for room from inside the node
            self.memory_management.extra_ram_release(self.memory_management.RAM_CACHE_HEADROOM)
            return x

        nodes = {"Const": StandInNode(lambda x: x), "Add": StandInNode(lambda x: x + 1), "Pin": StandInNode(pin)}
        self.module = make_execution_module("async11", nodes)
        self.optimizer = hooked_runtime(self.module, self.engine, self.store).optimizer
        self.executor = self.module.PromptExecutor()
        self.cache = RAMPressureCache(self.ram, ENTRY) if released else Outputs()
        self.executor.caches.outputs = self.cache
        self.executor.inactive_headroom = TOTAL  # 0.33's default: the machine's RAM, so every older output goes

    def run(self, prompt_id: str, *classes: str, first_input: int = 1) -> None:
        prompt, order = chain_prompt(*classes, first_input=first_input)
        self.executor.execute(prompt, prompt_id, {}, order)

    def boundaries(self) -> list[OptimizationRecord]:
        records = reversed(self.engine.history.records())  # oldest first
        return [record for record in records if record.trigger.kind is TriggerKind.BOUNDARY]


def _names(record: OptimizationRecord) -> list[str]:
    return [action.name for action in record.actions]


def near_the_limit(setup: Setup) -> None:
    """After a first prompt: 15.5 of 16 GB in use, and the gauge says RAM is over its threshold."""
    setup.run("first", "Const", "Add", "Add")
    setup.ram.available = GIB // 2
    setup.optimizer.gauge.update(97.0, 80.0)


def test_the_rung_waits_for_comfyuis_release_and_the_next_boundary_climbs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(tmp_path, monkeypatch)
    near_the_limit(setup)

    setup.run("second", "Const", "Add", "Add", first_input=10)

    first, second = setup.boundaries()
    # Before the first node ComfyUI's cache was left to ComfyUI, which had not had its turn: no model went.
    assert first.trigger.node_id == "1" and _names(first) == ["gc_collect", "malloc_trim", "comfy_cache_release"]
    assert first.actions[-1].skipped_reason == LEFT_TO_COMFYUI
    assert first.notice is None and first.kept is not None and "inswapper_128.onnx" in first.kept
    # ComfyUI's release after that node evicted the first prompt's outputs; RAM was still near the limit, so the
    # next boundary asked the cache itself, then climbed the rung, and ReActor's sessions went.
    release = setup.engine.release.last
    assert release is not None and release.core_evicted == 3
    assert second.trigger.node_id == "2"
    assert _names(second) == ["gc_collect", "malloc_trim", "comfy_cache_release", *RUNG[:2]]
    assert (second.actions[2].detail or "").startswith("comfy.memory_management.extra_ram_release(")
    assert setup.reactor.FS_MODEL is None and second.notice == UNLOADED_NOTICE
    assert len(setup.boundaries()) == 2  # back under the threshold: no more boundary cleanups
    assert setup.executor.success


def test_without_comfyuis_own_release_the_first_boundary_climbs_the_rung(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(tmp_path, monkeypatch, released=False)  # the classic cache: nothing to wait for
    near_the_limit(setup)

    setup.run("second", "Const", "Add", "Add", first_input=10)

    first = setup.boundaries()[0]
    assert first.trigger.node_id == "1" and _names(first)[-2:] == RUNG[:2]
    assert first.actions[2].skipped_reason != LEFT_TO_COMFYUI
    assert setup.reactor.FS_MODEL is None


def test_a_cleanup_that_comfyuis_release_ran_during_says_its_figure_includes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(tmp_path, monkeypatch)
    setup.run("first", "Const", "Add", "Add")
    quiet = setup.engine.release.last
    assert quiet is not None and quiet.core_calls_during_cleanups == 0 and "during a cleanup" not in quiet.describe()
    setup.ram.available = GIB  # 15 of 16 GB: the watchdog cleans up
    in_cleanup, released = threading.Event(), threading.Event()

    def hold_the_cleanup_open() -> None:
        in_cleanup.set()
        assert released.wait(timeout=60)

    setup.probe.during_cleanup = hold_the_cleanup_open
    outcomes: list[Any] = []
    watchdog = threading.Thread(
        target=lambda: outcomes.append(setup.engine.run_if_free(CleanupRequest.model_free(TriggerKind.WATCHDOG, 80.0))),
        name=WATCHDOG_THREAD,
    )
    watchdog.start()
    assert in_cleanup.wait(timeout=60)
    try:
        setup.run("second", "Const", first_input=10)  # ComfyUI's release after the node does not wait for the engine
    finally:
        released.set()
        watchdog.join()

    (outcome,) = outcomes
    record = outcome.record
    assert record is not None and record.notice == DURING_CLEANUP_NOTICE
    # ComfyUI evicted the first prompt's three outputs while the node added one: that is the cleanup's figure.
    assert record.ram_freed_bytes == 2 * ENTRY
    release = setup.engine.release.last
    assert release is not None and (release.core_calls, release.core_calls_during_cleanups) == (1, 1)
    assert "1 of ComfyUI's releases ran during a cleanup of comfy_memhooks', whose figure includes them" in (
        release.describe()
    )
    setup.ram.available = GIB // 2  # more in use: worth another cleanup, and ComfyUI is not releasing now
    later = setup.engine.run_if_free(CleanupRequest.model_free(TriggerKind.WATCHDOG, 80.0))
    assert later is not None and later.record is not None and later.record.notice is None


def test_comfyuis_releases_from_inside_a_node_are_counted_as_releases_not_as_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(tmp_path, monkeypatch)

    setup.run("pinned", "Const", "Pin", "Add")

    release = setup.engine.release.last
    assert release is not None and (release.core_calls, release.ours_calls) == (4, 0)  # 3 after nodes, 1 inside
    assert release.describe().startswith("ComfyUI released its cache 4 time(s) in this prompt, evicting 0 outputs")
