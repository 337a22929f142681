"""Pressure against routine: the cooldown, the effectiveness guard, escalation, the node, boundaries and the watchdog.

The probe here answers from a script of RAM readings (and counts what it was asked), the clocks are fake: what is
tested is the decision, not this machine's memory.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfy_memhooks import signals
from comfy_memhooks.comfy.node import UnifiedMemoryManager
from comfy_memhooks.engine.actions import MODE_ACTIONS, escalation_ladder
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import Trigger, TriggerKind
from comfy_memhooks.engine.modes import Mode
from comfy_memhooks.engine.policy import PolicySettings
from comfy_memhooks.engine.pressure import (
    FLOOR_MIN_BYTES,
    EffectivenessGuard,
    PressureGauge,
    Thresholds,
    effectiveness_floor_bytes,
)
from comfy_memhooks.engine.request import CleanupRequest, Urgency
from comfy_memhooks.probe.core_ram import CoreRamReader
from comfy_memhooks.probe.readings import GIB, MIB, MemorySnapshot, RamReading, RamSource
from comfy_memhooks.triggers.settings import SettingsStore
from comfy_memhooks.triggers.watchdog import (
    FAST_SECONDS,
    IDLE_SECONDS,
    LIMIT_SECONDS,
    NEAR_SECONDS,
    PressureWatchdog,
    poll_interval,
)
from tests.conftest import FakeClock, runtime_on

LIMIT = 3 * GIB  # a 3 GB container: the floor is 64 MiB
DEFAULTS = PolicySettings()  # Balanced, auto-optimize at 80% / 85%, 30 s cooldown


def ram_at(used_bytes: int) -> RamReading:
    return RamReading(RamSource.CGROUP_V2, LIMIT, used_bytes, LIMIT - used_bytes, used_bytes, 16 * GIB, "/")


class NoGpu:
    def processes(self) -> None:
        return None


class ScriptedProbe:
    """RAM used, in bytes, as the test sets it; each action may take some off (``frees_per_action``)."""

    def __init__(self, used_bytes: int):
        self.gpu = NoGpu()
        self.core_ram = CoreRamReader()  # ComfyUI's own reading: none outside ComfyUI, as the real probe's
        self.used = used_bytes
        self.frees_per_action: dict[str, int] = {}
        self.snapshots = 0
        self.ram_reads = 0

    def read_ram(self) -> RamReading:
        self.ram_reads += 1
        return ram_at(self.used)

    def snapshot(self, include_processes: bool = False) -> MemorySnapshot:
        self.snapshots += 1
        return MemorySnapshot(time.time(), ram_at(self.used), (), None, "no GPU in this test")

    def usage(self) -> tuple[int | None, int | None]:
        return self.used, None

    def processes(self) -> None:
        return self.gpu.processes()

    def percent(self, value: float) -> None:
        self.used = int(LIMIT * value / 100)


@pytest.fixture
def probe() -> ScriptedProbe:
    return ScriptedProbe(int(LIMIT * 0.5))


@pytest.fixture
def engine(probe: ScriptedProbe, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Engine:
    built = scripted_engine(probe, clock, monkeypatch)
    runtime_on(built)  # the node's engine
    return built


def scripted_engine(probe: ScriptedProbe, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """An engine on the scripted probe; what an action frees comes from the script: each action is wrapped so
    the probe's usage drops as it runs."""
    built = Engine(probe=probe, clock=clock)  # type: ignore[arg-type]
    original = built._run_action

    def run_action(action: Any, context: Any, usage: Any, escalation: bool = False) -> Any:
        probe.used -= probe.frees_per_action.get(action.name, 0)
        return original(action, context, usage, escalation)

    monkeypatch.setattr(built, "_run_action", run_action)
    return built


@pytest.fixture
def pressure_signals() -> Iterator[list[dict[str, Any]]]:
    received: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        received.append({"sender": sender, **kwargs})

    signals.memory_pressure.connect(receiver, weak=False)
    yield received
    signals.memory_pressure.disconnect(receiver)


# --- the floor and the guard ----------------------------------------------------------------------------------


def test_the_floor_is_one_percent_of_the_limit_and_at_least_64_mib() -> None:
    assert effectiveness_floor_bytes(3 * GIB) == FLOOR_MIN_BYTES == 64 * MIB
    assert effectiveness_floor_bytes(16 * GIB) == int(16 * GIB * 0.01)
    assert effectiveness_floor_bytes(None) == FLOOR_MIN_BYTES


def test_the_guard_holds_back_only_when_nothing_was_freed_and_nothing_arrived() -> None:
    guard = EffectivenessGuard(wall_clock=lambda: time.mktime((2026, 12, 1, 12, 4, 31, 0, 0, -1)))
    over = Thresholds(80, 85)
    before = MemorySnapshot(0, ram_at(int(LIMIT * 0.9)), (), None, None)
    after = MemorySnapshot(0, ram_at(int(LIMIT * 0.9) - 3 * MIB), (), None, None)
    levels = over.pressure(after)
    assert guard.hold_reason(after, levels, strength=1) is None  # no cleanup yet: run

    guard.remember(before, after, strength=1)
    held = guard.hold_reason(after, levels, strength=1)
    assert held == "nothing new to free since 12:04:31: the last one freed 3 MB of RAM"
    assert guard.hold_reason(after, levels, strength=2) is None  # a stronger mode may free what this one could not

    grown = MemorySnapshot(0, ram_at(after.ram.used_bytes + 64 * MIB), (), None, None)  # type: ignore[operator]
    assert guard.hold_reason(grown, over.pressure(grown), strength=1) is None

    still = MemorySnapshot(0, ram_at(int(LIMIT * 0.85)), (), None, None)
    guard.remember(before, still, strength=1)
    assert guard.hold_reason(still, over.pressure(still), strength=1) is None  # the last one freed 5%: worth it
    # The watchdog's rule: from its own thread, only when usage grew since the last one.
    assert guard.hold_reason(still, over.pressure(still), strength=1, require_growth=True) is not None


def test_the_gauge_is_one_attribute_against_the_threshold() -> None:
    gauge = PressureGauge()
    assert not gauge.over
    assert gauge.update(80.0, 80.0) and gauge.over
    assert not gauge.update(None, 80.0) and not gauge.over  # an unknown reading is never pressure


def test_a_listener_taken_out_of_the_gauge_hears_no_more_changes() -> None:
    gauge = PressureGauge()
    heard: list[bool] = []
    unsubscribe = gauge.subscribe(heard.append)
    gauge.update(90.0, 80.0)
    unsubscribe()
    gauge.update(10.0, 80.0)
    assert heard == [False, True]


# --- routine against pressure in the engine --------------------------------------------------------------------


def test_routine_waits_for_the_cooldown_and_pressure_does_not(
    engine: Engine, probe: ScriptedProbe, clock: FakeClock
) -> None:
    always = PolicySettings(auto_optimize=False)  # the node's placement is the trigger: routine under 80%
    assert engine.run(CleanupRequest.decided_by(always, TriggerKind.NODE)).performed
    clock.advance(5)
    routine = engine.run(CleanupRequest.decided_by(always, TriggerKind.NODE))
    assert not routine.performed and routine.reason == "cooldown: 25.0 s left"

    probe.percent(90)
    pressure = engine.run(CleanupRequest.decided_by(DEFAULTS, TriggerKind.NODE))
    assert pressure.performed and pressure.record is not None
    assert [level.describe() for level in pressure.record.trigger.pressure] == ["RAM 90% >= 80%"]
    assert pressure.record.trigger.kind is TriggerKind.NODE  # the caller's kind is kept; the level says why


def test_the_guard_skips_then_runs_again_once_usage_grows(
    engine: Engine, probe: ScriptedProbe, pressure_signals: list[dict[str, Any]]
) -> None:
    probe.percent(90)  # live data: the cleanup finds nothing to free
    assert engine.run(CleanupRequest.decided_by(DEFAULTS, TriggerKind.NODE)).performed
    held = engine.run(CleanupRequest.decided_by(DEFAULTS, TriggerKind.NODE))
    assert not held.performed and held.held_back
    assert held.reason.startswith("nothing new to free since ")
    assert held.reason.endswith("the last one freed 0 MB of RAM")
    assert engine.held_back_total == 1
    assert engine.last_held_back is not None and engine.last_held_back.reason == held.reason

    probe.used += 64 * MIB  # as much again as the floor arrived
    assert engine.run(CleanupRequest.decided_by(DEFAULTS, TriggerKind.NODE)).performed
    assert len(engine.history.records()) == 2
    # Every consideration of a pressure cleanup was signalled, run or held back.
    assert [(s["sender"], s["source"], s["level"].resource) for s in pressure_signals] == [("node", "node", "RAM")] * 3
    assert all(isinstance(s["reading"], MemorySnapshot) for s in pressure_signals)


def test_routine_cleanups_are_never_held_by_the_guard(engine: Engine, probe: ScriptedProbe) -> None:
    probe.percent(50)
    manual = Trigger(kind=TriggerKind.MANUAL, reason="panel")
    assert all(engine.run(CleanupRequest(trigger=manual, mode=Mode.CONSERVATIVE)).performed for _ in range(3))
    assert engine.held_back_total == 0


def test_pressure_climbs_the_ladder_until_usage_is_under_the_threshold(engine: Engine, probe: ScriptedProbe) -> None:
    probe.percent(90)
    probe.frees_per_action = {"malloc_trim": int(LIMIT * 0.2)}  # only returning the heap frees anything
    conservative = PolicySettings(mode=Mode.CONSERVATIVE)

    outcome = engine.run(
        CleanupRequest.decided_by(
            conservative, TriggerKind.HOOK, node_id="3", node_class="ReActorFaceSwap", phase="before"
        )
    )

    assert outcome.record is not None
    ran = [(action.name, action.escalation) for action in outcome.record.actions]
    balanced_step = [(action.name, True) for action in escalation_ladder(Mode.CONSERVATIVE)[0][1]]
    assert ran == [("gc_collect", False), ("cuda_empty_cache", False), *balanced_step]
    assert ("malloc_trim", True) in ran  # and the Aggressive step was not needed: RAM is at 70% now
    assert outcome.record.escalated and outcome.snapshot.ram.percent == pytest.approx(70, abs=0.01)


def test_escalation_never_unloads_a_model_the_mode_did_not() -> None:
    for mode in (Mode.CONSERVATIVE, Mode.BALANCED):
        added = {action.name for _, step in escalation_ladder(mode) for action in step}
        assert added.isdisjoint({"comfy_unload_all_models", "release_reactor_caches", "comfy_free_memory_to_threshold"})
    assert escalation_ladder(Mode.AGGRESSIVE) == []
    assert any(action.unloads_models for action in MODE_ACTIONS[Mode.AGGRESSIVE])


def test_a_routine_cleanup_does_not_escalate(engine: Engine, probe: ScriptedProbe) -> None:
    probe.percent(50)
    outcome = engine.run(
        CleanupRequest(
            trigger=Trigger(kind=TriggerKind.MANUAL, reason="panel"),
            mode=Mode.CONSERVATIVE,
            thresholds=Thresholds(40, 85),
            urgency=Urgency.ROUTINE,
        )
    )
    assert outcome.record is not None and not outcome.record.escalated


# --- the node follows the same rule ----------------------------------------------------------------------------


def node_inputs(**changes: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "enable_monitoring": True,
        "enable_optimization": True,
        "auto_optimize": True,
        "enable_auto_cleanup": False,
        "mode": "Balanced",
        "ram_threshold": 80.0,
        "vram_threshold": 85.0,
        "cooldown_seconds": 30.0,
        "detailed_report": True,
    }
    inputs.update(changes)
    return inputs


def test_the_node_under_pressure_is_not_held_by_the_cooldown(engine: Engine, probe: ScriptedProbe) -> None:
    engine.run(
        CleanupRequest(trigger=Trigger(kind=TriggerKind.MANUAL, reason="panel"), mode=Mode.CONSERVATIVE)
    )  # starts the 30 s cooldown
    probe.percent(92)
    probe.frees_per_action = {"malloc_trim": 200 * MIB}

    result = UnifiedMemoryManager().run(**node_inputs(), unique_id="7")["result"]

    assert result[5] is True  # optimization_performed
    assert "pressure" in result[1] and "RAM 92% >= 80%" in result[1]
    held = UnifiedMemoryManager().run(**node_inputs(), unique_id="7")["result"]  # 200 MB freed: worth another
    assert held[5] is True


def test_the_node_is_held_back_by_the_guard_and_says_why(engine: Engine, probe: ScriptedProbe) -> None:
    probe.percent(92)
    assert UnifiedMemoryManager().run(**node_inputs())["result"][5] is True
    result = UnifiedMemoryManager().run(**node_inputs())["result"]
    assert result[5] is False
    assert "No optimization: nothing new to free since" in result[1]


# --- the watchdog ------------------------------------------------------------------------------------------------


def make_watchdog(
    engine: Engine, tmp_path: Path, *, fast_seconds: float = 0.01, **settings: Any
) -> tuple[PressureWatchdog, PressureGauge]:
    store = SettingsStore(tmp_path / "settings.json")
    store.load()
    if settings:
        store.update(settings)
    gauge = PressureGauge()
    watchdog = PressureWatchdog(
        engine, lambda: store.current, gauge, running_node=lambda: ("12", "VHS_LoadVideo"), fast_seconds=fast_seconds
    )
    return watchdog, gauge


def test_the_reading_interval_is_250_ms_under_the_threshold_and_25_ms_in_the_last_tenth() -> None:
    assert poll_interval(None, 80) == FAST_SECONDS  # no reading yet
    assert poll_interval(float("nan"), 80) == FAST_SECONDS
    assert poll_interval(10, 80) == poll_interval(79.9, 80) == FAST_SECONDS
    assert poll_interval(80, 80) == pytest.approx(FAST_SECONDS)  # the ramp starts at the threshold
    assert poll_interval(85, 80) == pytest.approx((FAST_SECONDS + NEAR_SECONDS) / 2)
    assert poll_interval(89.99, 80) == pytest.approx(NEAR_SECONDS, abs=0.001)
    assert poll_interval(90, 80) == poll_interval(100, 80) == poll_interval(120, 80) == LIMIT_SECONDS
    assert (FAST_SECONDS, NEAR_SECONDS, LIMIT_SECONDS) == (0.25, 0.1, 0.025)


def test_the_last_tenth_is_watched_closely_even_under_a_threshold_set_in_it() -> None:
    assert poll_interval(89, 95) == FAST_SECONDS
    assert poll_interval(92, 95) == poll_interval(97, 95) == LIMIT_SECONDS
    assert poll_interval(92, 90) == LIMIT_SECONDS  # an empty ramp
    assert poll_interval(45, 0) == pytest.approx(FAST_SECONDS - (FAST_SECONDS - NEAR_SECONDS) / 2)


@pytest.mark.parametrize("threshold", [0.0, 50.0, 80.0, 89.5, 90.0, 95.0, 100.0])
def test_the_reading_interval_never_grows_as_usage_does(threshold: float) -> None:
    intervals = [poll_interval(tenth / 10, threshold) for tenth in range(1101)]
    assert all(later <= earlier for earlier, later in itertools.pairwise(intervals))
    assert all(LIMIT_SECONDS <= interval <= FAST_SECONDS for interval in intervals)


def test_the_watchdog_reads_at_the_interval_of_its_last_reading(
    engine: Engine, probe: ScriptedProbe, tmp_path: Path
) -> None:
    watchdog, _ = make_watchdog(engine, tmp_path, fast_seconds=FAST_SECONDS)
    assert watchdog.thread._interval == watchdog.interval  # the ticker asks it before each wait
    probe.percent(95)
    watchdog.tick()
    assert watchdog.interval() == IDLE_SECONDS  # between prompts, whatever the reading
    watchdog._on_prompt_started("p", prompt_id="p")
    for percent in (50, 80, 85, 89, 91, 95, 99):
        probe.percent(percent)
        watchdog.tick()
        assert watchdog.interval() == pytest.approx(poll_interval(percent, 80), abs=1e-6), percent
    assert watchdog.interval() == LIMIT_SECONDS
    probe.frees_per_action = {"gc_collect": int(LIMIT * 0.3)}
    probe.used += 100 * MIB
    watchdog.tick()  # a cleanup down to about 72%: the interval follows the reading after it
    assert watchdog.interval() == FAST_SECONDS
    watchdog._on_prompt_finished("p", prompt_id="p", success=True, duration_seconds=0.0, error=None)
    assert watchdog.interval() == IDLE_SECONDS


@pytest.mark.parametrize("setting", [{"pressure_watchdog": False}, {"enabled": False}])
def test_a_watchdog_turned_off_reads_no_faster_near_the_limit(
    engine: Engine, probe: ScriptedProbe, tmp_path: Path, setting: dict[str, bool]
) -> None:
    watchdog, _ = make_watchdog(engine, tmp_path, fast_seconds=FAST_SECONDS, **setting)
    watchdog._on_prompt_started("p", prompt_id="p")
    probe.percent(95)
    watchdog.tick()
    assert watchdog.interval() == FAST_SECONDS


def test_the_watchdog_thread_reads_about_forty_times_a_second_near_the_limit(
    engine: Engine, probe: ScriptedProbe, tmp_path: Path
) -> None:
    watchdog, _ = make_watchdog(engine, tmp_path, fast_seconds=FAST_SECONDS)
    probe.percent(95)  # the first tick cleans up, the guard holds back the next ones: nothing new arrives
    watchdog._on_prompt_started("p", prompt_id="p")
    watchdog.start()
    try:
        time.sleep(1.0)
    finally:
        watchdog.stop()
        watchdog._on_prompt_finished("p", prompt_id="p", success=True, duration_seconds=0.0, error=None)
    assert probe.ram_reads >= 12  # about 40 at 25 ms; 4 at the old 250 ms (a shared CI machine may be slow)


def test_the_watchdog_reads_ram_only_and_cleans_up_only_while_a_prompt_runs(
    engine: Engine, probe: ScriptedProbe, tmp_path: Path
) -> None:
    watchdog, gauge = make_watchdog(engine, tmp_path)
    probe.percent(90)
    assert watchdog.tick() is None  # no prompt: the gauge is kept, nothing is freed
    assert gauge.over and gauge.ram_percent == pytest.approx(90, abs=0.01)
    assert probe.snapshots == 0 and probe.ram_reads == 1

    watchdog._on_prompt_started("prompt-1", prompt_id="prompt-1")
    probe.frees_per_action = {"malloc_trim": int(LIMIT * 0.2)}
    outcome = watchdog.tick()
    assert outcome is not None and outcome.performed and outcome.record is not None
    trigger = outcome.record.trigger
    assert (trigger.kind, trigger.node_id, trigger.node_class) == (TriggerKind.WATCHDOG, "12", "VHS_LoadVideo")
    assert [action.name for action in outcome.record.actions] == ["gc_collect", "malloc_trim"]
    assert outcome.record.mode is None and outcome.record.cleanup_name == "Model-free"
    assert not gauge.over  # 70% after the cleanup


def test_the_watchdog_cleans_up_again_only_when_usage_grew(
    engine: Engine, probe: ScriptedProbe, tmp_path: Path
) -> None:
    watchdog, _ = make_watchdog(engine, tmp_path)
    watchdog._on_prompt_started("p", prompt_id="p")
    probe.percent(90)
    probe.frees_per_action = {"gc_collect": 100 * MIB}  # each cleanup frees something, but not below 80%
    first = watchdog.tick()
    assert first is not None and first.performed
    second = watchdog.tick()
    assert second is not None and not second.performed and second.held_back
    assert engine.held_back_total == 0  # the watchdog's holds are neither counted nor logged: several a second
    probe.used += 70 * MIB  # another batch arrived
    third = watchdog.tick()
    assert third is not None and third.performed
    assert watchdog.cleanups == 2


@pytest.mark.parametrize("setting", [{"pressure_watchdog": False}, {"enabled": False}])
def test_the_watchdog_setting_turns_it_off(
    engine: Engine, probe: ScriptedProbe, tmp_path: Path, setting: dict[str, bool]
) -> None:
    watchdog, gauge = make_watchdog(engine, tmp_path, **setting)
    watchdog._on_prompt_started("p", prompt_id="p")
    probe.percent(95)
    assert watchdog.tick() is None
    assert gauge.over  # the gauge is still kept, for the panel
    assert engine.history.records() == ()


def test_the_watchdog_never_waits_for_the_engine(engine: Engine, probe: ScriptedProbe, tmp_path: Path) -> None:
    watchdog, _ = make_watchdog(engine, tmp_path)
    watchdog._on_prompt_started("p", prompt_id="p")
    probe.percent(95)
    busy = threading.Event()
    done = threading.Event()

    def hold_the_engine() -> None:
        with engine._lock:
            busy.set()
            done.wait(5)

    holder = threading.Thread(target=hold_the_engine)
    holder.start()
    busy.wait(5)
    try:
        assert watchdog.tick() is None  # an optimization is under way: this tick is skipped
    finally:
        done.set()
        holder.join(5)


def test_the_watchdog_thread_cleans_up_soon_after_a_prompt_starts_over_the_threshold(
    engine: Engine, probe: ScriptedProbe, tmp_path: Path
) -> None:
    watchdog, _ = make_watchdog(engine, tmp_path)
    probe.percent(95)
    cleaned = threading.Event()

    def on_record(sender: Any, **kwargs: Any) -> None:
        cleaned.set()

    signals.optimization_performed.connect(on_record, weak=False)
    watchdog.start()
    try:
        signals.send_safely(signals.prompt_started, "p", prompt_id="p")
        assert cleaned.wait(10)
        assert watchdog.running and watchdog.watching_fast
    finally:
        watchdog.stop()
        signals.optimization_performed.disconnect(on_record)
        signals.send_safely(signals.prompt_finished, "p", prompt_id="p", success=True, duration_seconds=0.0, error=None)
    assert not watchdog.running
