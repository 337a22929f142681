"""ComfyUI 0.33 and after, through stand-ins with the real names: core's own release after every node, watched and
not raced; ``comfy_cache_release`` through ``extra_ram_release``; ``comfy.system_memory`` as the source of truth."""

from __future__ import annotations

import logging
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from comfy_memhooks.engine import comfy_cache
from comfy_memhooks.engine.comfy_release import PromptReleaseWatch
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import TriggerKind
from comfy_memhooks.engine.report import detailed_report
from comfy_memhooks.engine.request import CleanupRequest
from comfy_memhooks.panel.payloads import comfyui_json, serialize
from comfy_memhooks.probe.core_ram import CoreRamReader
from comfy_memhooks.probe.readings import GIB, MIB, MemorySnapshot, RamReader, RamReading, RamSource
from comfy_memhooks.triggers.settings import SettingsStore
from tests.hook_support import FakeProbe, chain_prompt, hooked_runtime
from tests.standin_executor import Outputs, StandInNode, make_execution_module
from tests.standin_ram_cache import FakeRam, RAMPressureCache, install_memory_management, install_system_memory

TOTAL = 16 * GIB
ENTRY = 512 * MIB


class RamProbe(FakeProbe):
    """RAM in use is what the stand-in cache's RAM says: evictions show in the next reading, as in ComfyUI."""

    def __init__(self, ram: FakeRam):
        super().__init__()
        self.fake = ram

    def _ram(self) -> RamReading:
        used = TOTAL - self.fake.available
        return RamReading(RamSource.CGROUP_V1, TOTAL, used, self.fake.available, 2 * GIB, 64 * GIB, "/memhooks")


class Setup:
    """A 0.33-like ComfyUI: the RAM-pressure cache released after every node, the subscriber installed."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str = "async11", **settings: Any):
        self.memory_management = install_memory_management(monkeypatch)
        self.ram = FakeRam(available=TOTAL // 2)
        self.engine = Engine(probe=RamProbe(self.ram))
        self.store = SettingsStore(tmp_path / "comfy_memhooks.json")
        self.store.load()
        self.store.update({"pressure_watchdog": False, "rules": [], **settings})
        self.module = make_execution_module(
            kind, {"Const": StandInNode(lambda x: x), "Add": StandInNode(lambda x: x + 1)}
        )
        model_management = types.ModuleType("comfy.model_management")
        model_management.total_ram = TOTAL // MIB  # type: ignore[attr-defined]  # MB, as ComfyUI keeps it
        monkeypatch.setitem(sys.modules, "comfy.model_management", model_management)
        self.watch = self.engine.release
        self.optimizer = hooked_runtime(self.module, self.engine, self.store).optimizer
        self.executor = self.module.PromptExecutor()
        self.cache = RAMPressureCache(self.ram, ENTRY)
        self.executor.caches.outputs = self.cache
        self.executor.inactive_headroom = TOTAL  # 0.33's default: the machine's RAM, so every older output goes

    def run(self, prompt_id: str, first_input: int, length: int = 3) -> list[str]:
        prompt, order = chain_prompt("Const", *["Add"] * (length - 1), first_input=first_input)
        self.executor.execute(prompt, prompt_id, {}, order)
        return order


def test_what_comfyuis_own_release_evicted_is_counted_per_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(tmp_path, monkeypatch)
    setup.run("first", 1)
    first = setup.watch.last
    assert first is not None and first.prompt_id == "first"
    assert (first.core_calls, first.core_evicted, first.ours_calls) == (3, 0, 0)  # nothing older to evict yet
    assert "ram_release" not in vars(setup.cache)  # the pass-through is taken out when the prompt ends

    order = setup.run("second", 10)

    second = setup.watch.last
    assert second is not None and second.finished_at is not None
    # After the second prompt's first node, ComfyUI's own release evicted the first prompt's three outputs.
    assert (second.core_calls, second.core_evicted, second.core_freed_bytes) == (3, 3, 3 * ENTRY)
    assert (second.active_evictions, second.full_evictions) == (False, False)
    assert sorted(node for node, _ in setup.cache.cache) == sorted(
        order
    )  # the running prompt's outputs stay, as ComfyUI keeps them
    assert setup.cache.get(order[-1]) == 12  # the results are ComfyUI's own: 10, 11, 12
    assert setup.memory_management.extra_ram_release_callback is None  # ComfyUI unset it; nothing of ours is left
    assert second.describe().startswith(
        "ComfyUI released its cache 3 time(s) in this prompt, evicting 3 outputs (1.50 GB as ComfyUI counts them)"
    )


def test_another_extensions_wrapper_on_the_cache_stays_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(tmp_path, monkeypatch)
    calls: list[Any] = []
    theirs_original = setup.cache.ram_release

    def theirs(*args: Any, **kwargs: Any) -> int:
        calls.append(args)
        return theirs_original(*args, **kwargs)

    setup.cache.ram_release = theirs  # type: ignore[method-assign]
    setup.run("first", 1)
    assert len(calls) == 3 and setup.watch.last is not None and setup.watch.last.core_calls == 3
    assert vars(setup.cache)["ram_release"] is theirs


def test_the_pass_through_is_on_the_class_for_the_prompt_and_leaves_the_cache_s_attributes_alone() -> None:
    """Put in the instance's ``__dict__``, it would make CPython give up the cache's inline attributes and slow
    down every method of ComfyUI's cache for good: on the class, only the watched cache gets it."""
    watch = PromptReleaseWatch()
    watched, other = RAMPressureCache(FakeRam(TOTAL), ENTRY), RAMPressureCache(FakeRam(TOTAL), ENTRY)
    executor = types.SimpleNamespace(caches=types.SimpleNamespace(outputs=watched))
    own = RAMPressureCache.ram_release

    watch.prompt_event(executor, "p", True)
    passed = watched.ram_release(0)
    assert vars(RAMPressureCache)["ram_release"] is not own  # the pass-through, for this prompt
    assert other.ram_release.__func__ is own  # any other instance: the class's own method
    assert "ram_release" not in vars(watched)
    watch.prompt_event(executor, "p", False)

    assert vars(RAMPressureCache)["ram_release"] is own and passed == 0
    assert watch.last is not None and watch.last.core_calls == 1


def test_the_boundary_cleanup_comes_after_comfyuis_release_and_counts_only_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(tmp_path, monkeypatch, cooldown_seconds=0)
    setup.run("first", 1)
    # 14.5 of 16 GB in use: over the 80% threshold, and the gauge says so before the next prompt.
    setup.ram.available = int(1.5 * GIB)
    setup.optimizer.gauge.update(90.0, 80.0)
    seen_by_boundary: list[int] = []
    run = setup.engine.run

    def watching(*args: Any, **kwargs: Any) -> Any:
        seen_by_boundary.append(setup.ram.available)
        return run(*args, **kwargs)

    monkeypatch.setattr(setup.engine, "run", watching)
    setup.run("second", 10)

    release = setup.watch.last
    assert release is not None
    # ComfyUI's own release, not comfy_memhooks', evicted the first prompt's three outputs, after the first node.
    assert (release.core_evicted, release.ours_calls) == (3, 0)
    # Before the first node the cache was left to ComfyUI, which had not had its turn yet.
    first, *later = seen_by_boundary
    boundary = next(r for r in setup.engine.history.records() if r.trigger.kind is TriggerKind.BOUNDARY)
    assert boundary.trigger.node_id == "1"
    cache_step = next(action for action in boundary.actions if action.name == "comfy_cache_release")
    assert (
        cache_step.skipped_reason is not None and "has not had its turn in this prompt yet" in cache_step.skipped_reason
    )
    # The next boundary read RAM afresh after ComfyUI's release: three outputs gone, the first node's one added.
    assert later[0] - first == 3 * ENTRY - ENTRY
    assert boundary.ram_freed_bytes is not None and boundary.ram_freed_bytes <= 0  # this stand-in's RSS never moves
    assert release.memhooks_cleanups == 1 and release.memhooks_freed_bytes == 0


def test_no_cleanup_of_ours_runs_while_comfyui_releases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    setup = Setup(tmp_path, monkeypatch)
    setup.ram.available = GIB  # over the threshold, so a watchdog cleanup would run if it could
    outcomes: list[Any] = []
    original = RAMPressureCache.ram_release

    def releasing(cache: RAMPressureCache, *args: Any, **kwargs: Any) -> int:
        worker = threading.Thread(
            target=lambda: outcomes.append(
                setup.engine.run_if_free(CleanupRequest.model_free(TriggerKind.WATCHDOG, 80.0))
            )
        )
        worker.start()
        worker.join()
        return original(cache, *args, **kwargs)

    monkeypatch.setattr(RAMPressureCache, "ram_release", releasing)
    setup.run("held", 1, length=2)

    assert outcomes == [None, None]  # the watchdog's way: it skips a reading while the engine is held
    assert setup.engine.history.records() == ()
    outside = setup.engine.run_if_free(
        CleanupRequest.model_free(TriggerKind.WATCHDOG, 80.0)
    )  # not held between prompts
    assert outside is not None and outside.performed


def test_comfy_cache_release_asks_extra_ram_release_then_this_prompts_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(tmp_path, monkeypatch)
    monkeypatch.setattr(comfy_cache, "host_available_bytes", lambda: setup.ram.available)
    details: list[tuple[str | None, str | None]] = []

    def ask(x: int) -> int:
        # In a 16 GB container, 15 GB in use: 80% wants 3.2 GB available, 2.2 GB more than there is.
        setup.ram.available = GIB
        engine = setup.engine
        details.append(comfy_cache.release(engine.probe.read_ram(), 80.0, engine.caches, engine.release))
        return x

    setup.module.NODE_CLASS_MAPPINGS["Ask"] = StandInNode(ask)
    prompt, order = chain_prompt("Const", "Add", "Ask", first_input=1)
    setup.executor.execute(prompt, "asked", {}, order)

    detail, skipped = details[0]
    assert skipped is None and detail is not None
    # No older output to give: ComfyUI's own release took them already. So this prompt's two outputs go too.
    assert detail.startswith("comfy.memory_management.extra_ram_release(")
    assert "freed 0.00 GB; then with free_active=True (this prompt's outputs too): freed 1.00 GB" in detail
    release = setup.watch.last
    assert release is not None and (release.ours_calls, release.ours_evicted, release.ours_freed_bytes) == (2, 2, GIB)
    assert release.active_evictions is True
    assert setup.executor.success and setup.cache.get(order[-1]) == 2  # the prompt's result is unchanged


def test_between_prompts_the_cache_itself_is_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    setup = Setup(tmp_path, monkeypatch)
    monkeypatch.setattr(comfy_cache, "host_available_bytes", lambda: setup.ram.available)
    setup.run("done", 1)
    setup.engine.caches.remember(setup.executor.caches)
    setup.ram.available = GIB
    assert setup.memory_management.extra_ram_release(4 * GIB) == 0  # ComfyUI's API does nothing between prompts

    detail, skipped = comfy_cache.release(
        setup.engine.probe.read_ram(), 80.0, setup.engine.caches, setup.engine.release
    )

    assert skipped is None and detail is not None
    assert detail.startswith("RAMPressureCache.ram_release(") and "free_active=True" in detail
    assert detail.endswith("freed 1.50 GB") and setup.cache.cache == {}


class HierarchicalCache(Outputs):
    """0.33's output cache under ``--cache-classic``: no ``ram_release``, so ComfyUI sets no release callback."""


def test_with_the_classic_cache_comfy_cache_release_says_so_during_a_prompt_and_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(tmp_path, monkeypatch)
    setup.executor.caches.outputs = HierarchicalCache()
    asked: list[tuple[str | None, str | None]] = []

    def ask(x: int) -> int:
        engine = setup.engine
        asked.append(comfy_cache.release(engine.probe.read_ram(), 1.0, engine.caches, engine.release))
        return x

    setup.module.NODE_CLASS_MAPPINGS["Ask"] = StandInNode(ask)
    prompt, order = chain_prompt("Const", "Ask", first_input=1)
    setup.executor.execute(prompt, "classic", {}, order)
    engine = setup.engine
    asked.append(comfy_cache.release(engine.probe.read_ram(), 1.0, engine.caches, engine.release))

    # While the prompt ran ComfyUI's release callback was unset too (it sets none for this cache): not "between
    # prompts", but no API for this cache at all.
    expected = "ComfyUI has no API to release its cache here (its output cache is HierarchicalCache): left alone"
    assert asked == [(None, expected), (None, expected)]
    assert setup.executor.success and setup.executor.caches.outputs.get(order[-1]) is not None


@pytest.mark.parametrize(
    ("cache_ram", "others", "expected"),
    [
        ([], {}, 2.0),  # 0.33's default: 10% of the RAM, at least 2 GB (this stand-in has 16 GB)
        ([6.0], {}, 6.0),
        ([6.0, 30.0], {}, 6.0),
        ([], {"cache_classic": True}, None),
        ([], {"cache_lru": 10}, None),
        (4.0, {}, 4.0),  # 0.8 to 0.18: one number
        (None, {}, None),
    ],
)
def test_the_cache_headroom_as_each_comfyui_spells_it(
    monkeypatch: pytest.MonkeyPatch, cache_ram: Any, others: dict[str, Any], expected: float | None
) -> None:
    arguments = {"cache_ram": cache_ram, "cache_classic": False, "cache_none": False, "cache_lru": 0, **others}
    cli_args = types.ModuleType("comfy.cli_args")
    cli_args.args = types.SimpleNamespace(**arguments)  # type: ignore[attr-defined]
    model_management = types.ModuleType("comfy.model_management")
    model_management.total_ram = 16 * 1024  # type: ignore[attr-defined]  # MB, as ComfyUI keeps it
    monkeypatch.setitem(sys.modules, "comfy.cli_args", cli_args)
    monkeypatch.setitem(sys.modules, "comfy.model_management", model_management)
    assert comfy_cache._cache_ram_gb() == expected


def test_on_033_the_panel_still_says_the_cache_reads_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    install_memory_management(monkeypatch)  # 0.33: extra_ram_release, but no comfy.system_memory
    monkeypatch.delitem(sys.modules, "comfy.system_memory", raising=False)
    cli_args = types.ModuleType("comfy.cli_args")
    cli_args.args = types.SimpleNamespace(cache_ram=[], cache_classic=False, cache_none=False, cache_lru=0)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy.cli_args", cli_args)
    model_management = types.ModuleType("comfy.model_management")
    model_management.total_ram = 64 * 1024  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy.model_management", model_management)
    reading = RamReading(RamSource.CGROUP_V1, 3 * GIB, 2 * GIB, GIB, GIB, 64 * GIB)
    notice = comfy_cache.cache_notice(reading, comfy_cache.SeenCaches(), host_available=20 * GIB)
    assert notice is not None and notice.reads_host_ram and notice.advice is not None
    install_system_memory(monkeypatch, 3 * GIB, 2 * GIB, 64 * GIB, 20 * GIB)  # after 0.33: it reads the container
    notice = comfy_cache.cache_notice(reading, comfy_cache.SeenCaches(), host_available=20 * GIB)
    assert notice is not None and not notice.reads_host_ram


# --- comfy.system_memory ---------------------------------------------------------------------------------------


def ours(used: int, total: int = 3 * GIB, source: RamSource = RamSource.CGROUP_V1) -> RamReading:
    return RamReading(source, total, used, total - used, GIB, 64 * GIB, "/sys/fs/cgroup/memory/memhooks")


def test_without_comfyuis_reader_ours_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "comfy.system_memory", raising=False)
    reader = CoreRamReader()
    reading = ours(2 * GIB)
    assert reader.reconcile(reading) is reading and reader.last is None


def test_comfyuis_reading_is_used_where_it_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    install_system_memory(monkeypatch, 3 * GIB, 2 * GIB + 50 * MIB, 64 * GIB, 40 * GIB)  # 2.4% apart
    reader = CoreRamReader()
    reading = reader.reconcile(ours(2 * GIB))
    assert reading.reader is RamReader.COMFYUI and reading.source is RamSource.CGROUP_V1
    assert (reading.total_bytes, reading.used_bytes, reading.available_bytes) == (
        3 * GIB,
        2 * GIB + 50 * MIB,
        GIB - 50 * MIB,
    )
    assert reader.last is not None and reader.last.agrees and reader.last.disagreement is None


def test_a_disagreement_above_five_percent_is_logged_once_with_both_figures(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The binding limit sits on a parent group: ComfyUI reads the usage there (its siblings' included, what the
    # kernel holds against the limit), comfy_memhooks its own group's. ComfyUI's leaves less available: it is used.
    install_system_memory(monkeypatch, 3 * GIB, 2 * GIB + 800 * MIB, 64 * GIB, 40 * GIB)
    reader = CoreRamReader()
    with caplog.at_level(logging.WARNING, logger="comfy_memhooks.probe.core_ram"):
        for used in (2 * GIB, 2 * GIB + MIB, 2 * GIB + 2 * MIB):
            reading = reader.reconcile(ours(used))
            assert reading.reader is RamReader.COMFYUI and reading.source is RamSource.CGROUP_V1
            assert (reading.used_bytes, reading.available_bytes) == (2 * GIB + 800 * MIB, GIB - 800 * MIB)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1, warnings
    assert "usage: ComfyUI 2.78 GB, comfy_memhooks 2.00 GB" in warnings[0] and "cgroup v1" in warnings[0]
    assert "the reading that leaves less RAM available is used" in warnings[0]
    assert reader.last is not None and not reader.last.agrees and reader.last.reader is RamReader.COMFYUI


def test_where_comfyuis_reading_leaves_more_available_ours_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # The container was shrunk from 4 to 3 GB while ComfyUI ran: ComfyUI found its limit once, at start-up.
    install_system_memory(monkeypatch, 4 * GIB, 2 * GIB, 64 * GIB, 40 * GIB)
    reader = CoreRamReader()
    reading = reader.reconcile(ours(2 * GIB))
    assert reading.reader is RamReader.OURS and (reading.total_bytes, reading.used_bytes) == (3 * GIB, 2 * GIB)
    assert reader.last is not None and reader.last.disagreement == "limit: ComfyUI 4.00 GB, comfy_memhooks 3.00 GB"


def test_comfyuis_reader_raising_is_contained_counted_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    module = install_system_memory(monkeypatch, 3 * GIB, 2 * GIB, 64 * GIB, 40 * GIB)

    def unreadable() -> int:
        raise OSError(5, "Input/output error", "/sys/fs/cgroup/memory/memory.limit_in_bytes")

    module.cgroup_memory_limit = unreadable  # type: ignore[attr-defined]
    reader = CoreRamReader()
    with caplog.at_level(logging.WARNING, logger="comfy_memhooks.probe.core_ram"):
        readings = [reader.reconcile(ours(2 * GIB)) for _ in range(3)]
    assert all(reading.reader is RamReader.OURS and reading.used_bytes == 2 * GIB for reading in readings)
    assert reader.last is None and reader.failures.count == 3
    assert [record.getMessage() for record in caplog.records] == [
        "comfy_memhooks: ComfyUI's comfy.system_memory failed while reading its cgroup figures (OSError); "
        "comfy_memhooks' own reading is used (logged once)"
    ]


def test_comfyuis_available_ram_that_is_no_number_falls_back_to_the_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    module = install_system_memory(monkeypatch, 3 * GIB, 2 * GIB, 64 * GIB, 40 * GIB)
    monkeypatch.setattr(comfy_cache, "host_available_bytes", lambda: 7 * GIB)
    assert comfy_cache.comfyui_available_bytes() == GIB
    module.virtual_memory_available = lambda: None  # type: ignore[attr-defined]
    assert comfy_cache.comfyui_available_bytes() == 7 * GIB


def test_a_limit_only_one_side_sees_is_a_disagreement(monkeypatch: pytest.MonkeyPatch) -> None:
    install_system_memory(monkeypatch, None, None, 64 * GIB, 40 * GIB)
    reader = CoreRamReader()
    reading = reader.reconcile(ours(2 * GIB))
    assert reading.reader is RamReader.OURS
    assert reader.last is not None and reader.last.disagreement == "limit: ComfyUI none, comfy_memhooks 3.00 GB"
    host = reader.reconcile(ours(20 * GIB, 64 * GIB, RamSource.HOST))  # neither sees a limit: they agree
    assert host.reader is RamReader.OURS and reader.last is not None and reader.last.agrees


def test_the_panel_and_the_report_say_which_reading_is_used_and_what_the_cache_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(tmp_path, monkeypatch)
    setup.run("first", 1)
    setup.run("second", 10)
    install_system_memory(monkeypatch, TOTAL, TOTAL // 2 + 3 * ENTRY, 64 * GIB, 40 * GIB)
    snapshot = setup.engine.probe.snapshot()
    reading = setup.engine.probe.core_ram.reconcile(snapshot.ram)
    snapshot = MemorySnapshot(snapshot.taken_at, reading, (), None, "no GPU in this test")

    data = comfyui_json(snapshot, setup.engine)
    serialize(data)  # plain JSON all through
    assert data["ram_reader"] == "comfy.system_memory"
    assert data["ram_reader_text"].startswith("RAM read by ComfyUI's comfy.system_memory")
    assert data["prompt_release"]["core_evicted"] == 3 and "evicting 3 outputs" in data["prompt_release"]["text"]
    report = detailed_report(
        snapshot, core_check=setup.engine.probe.core_ram.last, release=setup.engine.release.current()
    )
    assert "RAM read by ComfyUI's comfy.system_memory" in report
    assert "ComfyUI released its cache 3 time(s) in this prompt, evicting 3 outputs" in report
    assert "comfy_memhooks freed" in report
