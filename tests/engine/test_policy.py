"""The decision table, every row, with the cooldown on a fake clock; the history's bound and thread safety."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import TriggerKind
from comfy_memhooks.engine.modes import Mode
from comfy_memhooks.engine.policy import PolicySettings, decide
from comfy_memhooks.engine.pressure import PressureLevel, Thresholds
from comfy_memhooks.engine.request import CleanupRequest
from comfy_memhooks.errors import InvalidSetting
from comfy_memhooks.validation import parse_percent, parse_seconds
from tests.conftest import FakeClock
from tests.snapshots_factory import snapshot_at

HIGH = snapshot_at(ram_percent=90, vram_percent=50)  # RAM over the default 80% threshold
LOW = snapshot_at(ram_percent=40, vram_percent=50)
VRAM_HIGH = snapshot_at(ram_percent=40, vram_percent=85)  # exactly at the 85% VRAM threshold
UNKNOWN = snapshot_at(ram_percent=None, vram_percent=None)


def settings(**changes: object) -> PolicySettings:
    """The node's settings with a cooldown of 0 unless asked; thresholds by their input names."""
    thresholds = Thresholds(
        float(changes.pop("ram_threshold", 80.0)),  # type: ignore[arg-type]
        float(changes.pop("vram_threshold", 85.0)),  # type: ignore[arg-type]
        float(changes.pop("cooldown_seconds", 0.0)),  # type: ignore[arg-type]
    )
    base: dict[str, object] = {
        "enable_optimization": True,
        "auto_optimize": False,
        "enable_auto_cleanup": False,
        "mode": Mode.BALANCED,
        "thresholds": thresholds,
    }
    base.update(changes)
    return PolicySettings(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("row", "policy", "snapshot", "frees"),
    [
        ("optimization off", settings(enable_optimization=False, enable_auto_cleanup=True), HIGH, False),
        ("optimization off, auto", settings(enable_optimization=False, auto_optimize=True), HIGH, False),
        ("Monitor Only", settings(mode=Mode.MONITOR_ONLY, enable_auto_cleanup=True), HIGH, False),
        ("auto_optimize, over", settings(auto_optimize=True), HIGH, True),
        ("auto_optimize, VRAM at threshold", settings(auto_optimize=True), VRAM_HIGH, True),
        ("auto_optimize, under", settings(auto_optimize=True), LOW, False),
        ("auto_optimize, readings unknown", settings(auto_optimize=True), UNKNOWN, False),
        ("auto_cleanup, under", settings(enable_auto_cleanup=True), LOW, True),
        ("auto_cleanup beats auto_optimize", settings(enable_auto_cleanup=True, auto_optimize=True), LOW, True),
        ("placement is the trigger", settings(), LOW, True),
    ],
)
def test_decision_table(row: str, policy: PolicySettings, snapshot: object, frees: bool) -> None:
    decision = decide(policy, snapshot)  # type: ignore[arg-type]
    assert decision.optimize is frees, row
    assert decision.reason


def test_threshold_decision_names_what_was_exceeded() -> None:
    decision = decide(settings(auto_optimize=True), VRAM_HIGH)
    assert [level.describe() for level in decision.pressure] == ["VRAM 85% >= 85%"]
    assert "VRAM 85% >= 85%" in decision.reason


def test_cooldown_holds_then_releases(make_engine: Callable[..., Engine], clock: FakeClock) -> None:
    engine = make_engine()
    policy = settings(mode=Mode.CONSERVATIVE, cooldown_seconds=30.0)
    first = engine.run(CleanupRequest.decided_by(policy, TriggerKind.NODE, reading=LOW))
    assert first.performed
    clock.advance(10)
    held = engine.run(CleanupRequest.decided_by(policy, TriggerKind.NODE, reading=LOW))
    assert not held.performed
    assert held.cooldown_remaining_seconds == pytest.approx(20.0)
    assert held.reason == "cooldown: 20.0 s left"
    clock.advance(20)
    assert engine.run(CleanupRequest.decided_by(policy, TriggerKind.NODE, reading=LOW)).performed
    assert len(engine.history.records()) == 2


def test_cooldown_zero_is_off(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    policy = settings(mode=Mode.CONSERVATIVE, cooldown_seconds=0.0)
    assert all(engine.run(CleanupRequest.decided_by(policy, TriggerKind.NODE, reading=LOW)).performed for _ in range(3))


def test_cooldown_is_shared_between_callers(make_engine: Callable[..., Engine], clock: FakeClock) -> None:
    engine = make_engine()
    engine.run(CleanupRequest.decided_by(settings(mode=Mode.CONSERVATIVE), TriggerKind.NODE, reading=LOW))
    clock.advance(5)
    manual = engine.run(
        CleanupRequest.decided_by(
            settings(mode=Mode.CONSERVATIVE, cooldown_seconds=30), TriggerKind.MANUAL, reading=LOW
        )
    )
    assert not manual.performed and manual.cooldown_remaining_seconds == pytest.approx(25.0)


def test_a_threshold_decision_is_recorded_as_pressure_with_its_level(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    outcome = engine.run(
        CleanupRequest.decided_by(
            settings(auto_optimize=True, mode=Mode.CONSERVATIVE),
            TriggerKind.NODE,
            node_id="7",
            node_class="UnifiedMemoryManager",
            reading=HIGH,
        )
    )
    assert outcome.record is not None
    trigger = outcome.record.trigger
    assert (trigger.kind, trigger.node_id, trigger.node_class) == (TriggerKind.NODE, "7", "UnifiedMemoryManager")
    assert trigger.pressure == (PressureLevel("RAM", 90.0, 80.0),)
    assert "RAM 90% >= 80%" in trigger.reason


def test_history_keeps_the_last_ten_newest_first(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    for _ in range(13):
        engine.run(CleanupRequest.decided_by(settings(mode=Mode.CONSERVATIVE), TriggerKind.NODE, reading=LOW))
    records = engine.history.records()
    assert [r.sequence for r in records] == list(range(13, 3, -1))
    assert engine.history.total_recorded == 13
    record = records[0]
    assert record.mode is Mode.CONSERVATIVE
    assert [a.name for a in record.actions] == ["gc_collect", "cuda_empty_cache"]
    assert record.duration_seconds >= 0 and record.before is LOW


def test_many_threads_optimizing_and_reading_at_once(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    policy = settings(mode=Mode.CONSERVATIVE)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def optimize() -> None:
        try:
            start.wait()
            for _ in range(5):
                engine.run(CleanupRequest.decided_by(policy, TriggerKind.NODE, reading=LOW))
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    def read() -> None:
        try:
            start.wait()
            for _ in range(50):
                records = engine.history.records()
                assert len(records) <= 10
                assert [r.sequence for r in records] == sorted((r.sequence for r in records), reverse=True)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=optimize) for _ in range(4)] + [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert engine.history.total_recorded == 20
    sequences = [r.sequence for r in engine.history.records()]
    assert sequences == list(range(20, 10, -1))  # unique, ordered: no two optimizations interleaved


@pytest.mark.parametrize("value", [0, -1, 100.5, float("nan"), float("inf"), "80", None, True])
def test_bad_thresholds_name_the_field(value: object) -> None:
    with pytest.raises(InvalidSetting) as raised:
        parse_percent(value, "ram_threshold")
    assert raised.value.field == "ram_threshold"
    assert str(raised.value).startswith("ram_threshold: ")


@pytest.mark.parametrize("value", [0.1, 50, 100])
def test_good_thresholds(value: float) -> None:
    assert parse_percent(value, "vram_threshold") == value


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "30"])
def test_bad_cooldowns(value: object) -> None:
    with pytest.raises(InvalidSetting, match="cooldown_seconds"):
        parse_seconds(value, "cooldown_seconds")
