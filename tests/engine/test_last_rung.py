"""The last rung under pressure: ReActor's faces, then its sessions, then ComfyUI's models in RAM, near the limit only.

RAM here is read from a stand-in of ReActor's swapper module: what it holds is what the reading says is in use, so
each step of the rung frees what the real one would, and the test sees where the rung stops.
"""

from __future__ import annotations

import sys
import time
import types
from typing import Any

import pytest

from comfy_memhooks.engine import reactor as reactor_module
from comfy_memhooks.engine.actions import KEPT_FOR_REACTOR
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import Trigger, TriggerKind
from comfy_memhooks.engine.last_rung import UNLOADED_NOTICE, near_limit
from comfy_memhooks.engine.modes import Mode
from comfy_memhooks.engine.pressure import Thresholds
from comfy_memhooks.engine.request import CleanupRequest, Urgency
from comfy_memhooks.errors import InvalidSetting
from comfy_memhooks.panel.payloads import record_json
from comfy_memhooks.probe.readings import GIB, MemorySnapshot, RamReading, RamSource
from comfy_memhooks.triggers.settings import AutoSettings
from tests.hook_support import FakeProbe

TOTAL = 10 * GIB
RUNG = ["reactor_faces_under_pressure", "reactor_models_under_pressure", "comfy_free_memory_for_ram"]
THRESHOLDS = Thresholds(ram_percent=80, vram_percent=85, cooldown_seconds=30)


def reactor(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A module with the names of ReActor's scripts/reactor_swapper.py, holding a swap model, an analyser, faces."""
    module = types.ModuleType("ComfyUI-ReActor.scripts.reactor_swapper")
    module.FS_MODEL = object()  # type: ignore[attr-defined]
    module.CURRENT_FS_MODEL_PATH = "/models/insightface/inswapper_128.onnx"  # type: ignore[attr-defined]
    module.ANALYSIS_MODELS = {"640": object(), "320": None}  # type: ignore[attr-defined]
    module.SOURCE_FACES = ["face"]  # type: ignore[attr-defined]
    module.SOURCE_IMAGE_HASH = "a"  # type: ignore[attr-defined]
    module.TARGET_FACES = ["face"]  # type: ignore[attr-defined]
    module.TARGET_IMAGE_HASH = "b"  # type: ignore[attr-defined]
    module.TARGET_FACES_LIST = []  # type: ignore[attr-defined]
    module.TARGET_IMAGE_LIST_HASH = []  # type: ignore[attr-defined]

    def unload_all_models() -> None:
        module.FS_MODEL = None  # type: ignore[attr-defined]
        module.ANALYSIS_MODELS["640"] = None  # type: ignore[attr-defined]

    module.unload_all_models = unload_all_models  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


class ReActorProbe(FakeProbe):
    """RAM in use: ``base`` percent, plus ``faces`` percent while ReActor keeps faces and ``models`` while it holds
    its sessions; of a container's limit, or of the machine's RAM (``source``)."""

    def __init__(
        self,
        module: types.ModuleType,
        base: float,
        faces: float,
        models: float,
        source: RamSource = RamSource.CGROUP_V1,
    ):
        super().__init__()
        self.module, self.base, self.faces, self.models, self.source = module, base, faces, models, source

    def _ram(self) -> RamReading:
        percent = self.base
        percent += self.faces if self.module.SOURCE_FACES or self.module.TARGET_FACES else 0.0
        percent += self.models if self.module.FS_MODEL is not None else 0.0
        used = int(TOTAL * percent / 100)
        host_total = TOTAL if self.source is RamSource.HOST else 4 * TOTAL  # on a bare host its RAM is the limit
        return RamReading(self.source, TOTAL, used, TOTAL - used, used, host_total)

    def usage(self) -> tuple[int | None, int | None]:
        return self._ram().used_bytes, None


def boundary(engine: Engine, unload_models: bool = True) -> Any:
    return engine.run(
        CleanupRequest.model_free(
            TriggerKind.BOUNDARY, 80.0, node_id="5", node_class="Hold", unload_models=unload_models
        )
    )


def names(outcome: Any) -> list[str]:
    return [action.name for action in outcome.record.actions]


def test_near_the_limit_the_faces_go_first_and_the_sessions_stay_when_that_was_enough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = reactor(monkeypatch)
    engine = Engine(probe=ReActorProbe(module, base=70, faces=21, models=8))  # 99%; 78% without the faces

    outcome = boundary(engine)

    assert names(outcome)[-1] == "reactor_faces_under_pressure"
    assert module.SOURCE_FACES is None and module.SOURCE_IMAGE_HASH is None and module.TARGET_FACES is None
    assert module.FS_MODEL is not None  # RAM was back under its threshold: the sessions were kept
    faces = outcome.record.actions[-1]
    assert faces.escalation and faces.detail == f"{module.__name__}: 2 cached face(s) dropped"
    assert outcome.record.notice is None
    assert (
        outcome.record.kept == "ReActor's swap model inswapper_128.onnx, face analysis at 640 px and 0 cached face(s)"
    )


def test_then_its_sessions_with_what_they_were_and_the_panels_notice(monkeypatch: pytest.MonkeyPatch) -> None:
    module = reactor(monkeypatch)
    engine = Engine(probe=ReActorProbe(module, base=60, faces=1, models=30))  # 91%, 90%, then 60%

    outcome = boundary(engine)

    assert names(outcome) == ["gc_collect", "malloc_trim", "comfy_cache_release", *RUNG[:2]]
    assert module.FS_MODEL is None and module.ANALYSIS_MODELS == {"640": None, "320": None}
    models = outcome.record.actions[-1]
    assert models.escalation and models.ram_freed_bytes == int(TOTAL * 0.9) - int(TOTAL * 0.6)
    assert models.detail == (
        f"{module.__name__}: unloaded its swap model inswapper_128.onnx, face analysis at 640 px; "
        "they reload on the next swap"
    )
    assert outcome.record.notice == UNLOADED_NOTICE
    assert outcome.record.kept is None
    plain = record_json(outcome.record)
    assert plain["notice"] == UNLOADED_NOTICE and plain["escalated"]


def test_comfyuis_models_in_ram_last_asked_for_what_is_still_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    module = reactor(monkeypatch)
    calls: list[tuple[int, Any]] = []
    management = types.ModuleType("comfy.model_management")
    management.current_loaded_models = [types.SimpleNamespace(device=torch.device("cpu"))]  # type: ignore[attr-defined]
    management.free_memory = lambda required, device: calls.append((required, device)) or []  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy.model_management", management)
    monkeypatch.setattr("comfy_memhooks.engine.last_rung.host_available_bytes", lambda: 3 * GIB)
    engine = Engine(probe=ReActorProbe(module, base=93, faces=1, models=1))  # ReActor's room is not enough

    outcome = boundary(engine)

    assert names(outcome)[-3:] == RUNG
    missing = int(TOTAL * (1 - 80 / 100)) - (TOTAL - int(TOTAL * 0.93))  # to 80% from 93%
    assert calls == [(3 * GIB + missing, torch.device("cpu"))]
    assert "0 of 1 model(s) in RAM unloaded" in (outcome.record.actions[-1].detail or "")


def test_under_the_limit_nothing_is_unloaded_and_the_record_says_what_was_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    module = reactor(monkeypatch)
    engine = Engine(probe=ReActorProbe(module, base=70, faces=5, models=10))  # 85%: over 80%, not near the limit

    outcome = boundary(engine)

    assert names(outcome) == ["gc_collect", "malloc_trim", "comfy_cache_release"]
    assert module.FS_MODEL is not None and module.SOURCE_FACES == ["face"]
    assert outcome.record.kept == (
        "ReActor's swap model inswapper_128.onnx, face analysis at 640 px and 2 cached face(s)"
    )


def test_the_setting_off_or_the_watchdogs_thread_never_unload(monkeypatch: pytest.MonkeyPatch) -> None:
    module = reactor(monkeypatch)
    engine = Engine(probe=ReActorProbe(module, base=70, faces=5, models=20))  # 95%

    off = boundary(engine, unload_models=False)
    watchdog = engine.run_if_free(CleanupRequest.model_free(TriggerKind.WATCHDOG, 80.0, unload_models=True))
    manual = engine.run(
        CleanupRequest(
            trigger=Trigger(kind=TriggerKind.MANUAL, reason="panel"),
            mode=Mode.BALANCED,
            thresholds=THRESHOLDS,
            urgency=Urgency.ROUTINE,
        )
    )

    for outcome in (off, watchdog, manual):
        assert outcome is None or outcome.record is None or not set(names(outcome)) & set(RUNG)
    assert module.FS_MODEL is not None and module.SOURCE_FACES == ["face"]


def test_a_heavy_node_rule_under_pressure_ends_with_the_rung_and_aggressive_needs_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = reactor(monkeypatch)
    probe = ReActorProbe(module, base=60, faces=1, models=35)  # 96%
    engine = Engine(probe=probe)
    rule = Trigger(
        kind=TriggerKind.HOOK, reason="after ReActorFaceSwap", node_id="3", node_class="ReActorFaceSwap", phase="after"
    )

    outcome = engine.run(CleanupRequest(trigger=rule, mode=Mode.BALANCED, thresholds=THRESHOLDS, unload_models=True))

    assert outcome.record is not None and outcome.record.escalated
    assert names(outcome)[-2:] == RUNG[:2] and module.FS_MODEL is None
    probe.module = reactor(monkeypatch)  # loaded again
    aggressive = engine.run(
        CleanupRequest(trigger=rule, mode=Mode.AGGRESSIVE, thresholds=THRESHOLDS, unload_models=True)
    )
    assert aggressive.record is not None and not set(names(aggressive)) & set(RUNG)


def test_a_weaker_cleanup_that_freed_nothing_does_not_hold_the_rung_back(monkeypatch: pytest.MonkeyPatch) -> None:
    module = reactor(monkeypatch)
    engine = Engine(probe=ReActorProbe(module, base=60, faces=1, models=33))  # 94%
    assert engine.run_if_free(CleanupRequest.model_free(TriggerKind.WATCHDOG, 80.0)) is not None  # freed nothing

    outcome = boundary(engine)

    assert outcome.performed and module.FS_MODEL is None


def test_near_the_limit_means_ninety_percent_or_the_threshold_when_higher() -> None:
    def at(percent: float) -> MemorySnapshot:
        used = int(TOTAL * percent / 100)
        ram = RamReading(RamSource.CGROUP_V1, TOTAL, used, TOTAL - used, used, TOTAL)
        return MemorySnapshot(time.time(), ram, (), None, None, None)

    assert not near_limit(at(89.9), 80) and near_limit(at(90), 80)
    assert not near_limit(at(94), 95) and near_limit(at(95), 95)


def test_the_setting_is_on_by_default_and_checked() -> None:
    assert AutoSettings().pressure_unloads_models is True
    assert AutoSettings.parse({"pressure_unloads_models": False}).pressure_unloads_models is False
    with pytest.raises(InvalidSetting) as raised:
        AutoSettings.parse({"pressure_unloads_models": "sometimes"})
    assert raised.value.field == "pressure_unloads_models"


def test_on_a_bare_host_the_machines_ram_is_the_limit_near_which_models_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """No container: the host's RAM is what the kernel's OOM killer acts on, so 90% of it is close to the limit."""
    module = reactor(monkeypatch)
    engine = Engine(probe=ReActorProbe(module, base=60, faces=1, models=30, source=RamSource.HOST))  # 91% of the RAM

    outcome = boundary(engine)

    assert outcome.record.before.ram.source is RamSource.HOST
    assert names(outcome) == ["gc_collect", "malloc_trim", "comfy_cache_release", *RUNG[:2]]
    assert module.FS_MODEL is None and outcome.record.notice == UNLOADED_NOTICE


def _management(monkeypatch: pytest.MonkeyPatch, torch: Any, returned: Any) -> list[tuple[int, Any]]:
    """A stand-in ``comfy.model_management`` with one model on the CPU; ``free_memory`` returns ``returned``."""
    calls: list[tuple[int, Any]] = []
    management = types.ModuleType("comfy.model_management")
    management.current_loaded_models = [types.SimpleNamespace(device=torch.device("cpu"))]  # type: ignore[attr-defined]

    def free_memory(required: int, device: Any) -> Any:
        calls.append((required, device))
        return returned

    management.free_memory = free_memory  # type: ignore[attr-defined]
    management.soft_empty_cache = lambda: None  # type: ignore[attr-defined]  # a mode's escalation calls it
    monkeypatch.setitem(sys.modules, "comfy.model_management", management)
    monkeypatch.setattr("comfy_memhooks.engine.last_rung.host_available_bytes", lambda: 3 * GIB)
    return calls


def test_before_a_reactor_node_its_models_and_faces_stay_and_comfyuis_may_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default rule runs Conservative before ``ReActor*`` at the threshold: ReActor's node is about to use its
    sessions and faces, so unloading them would only make it load them again; ComfyUI's models may still go."""
    torch = pytest.importorskip("torch")
    module = reactor(monkeypatch)
    calls = _management(monkeypatch, torch, [])
    engine = Engine(probe=ReActorProbe(module, base=60, faces=1, models=30))  # 91%
    before = Trigger(
        kind=TriggerKind.HOOK,
        reason="before ReActorFaceSwap",
        node_id="3",
        node_class="ReActorFaceSwap",
        phase="before",
    )

    outcome = engine.run(
        CleanupRequest(
            trigger=before,
            mode=Mode.CONSERVATIVE,
            thresholds=THRESHOLDS,
            urgency=Urgency.UNDER_PRESSURE,
            unload_models=True,
        )
    )

    assert outcome.record is not None and names(outcome)[-3:] == RUNG
    faces, models, comfyui = outcome.record.actions[-3:]
    assert faces.skipped_reason == models.skipped_reason == KEPT_FOR_REACTOR
    assert module.FS_MODEL is not None and module.SOURCE_FACES == ["face"]
    assert comfyui.skipped_reason is None and len(calls) == 1  # ComfyUI's own models were asked for
    assert outcome.record.notice is None
    assert outcome.record.kept is not None and "swap model inswapper_128.onnx" in outcome.record.kept


def test_the_boundary_before_a_reactor_node_keeps_them_too_and_before_another_node_they_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = reactor(monkeypatch)
    engine = Engine(probe=ReActorProbe(module, base=60, faces=1, models=30))  # 91%

    def before(node_class: str) -> Any:
        return engine.run(
            CleanupRequest.model_free(
                TriggerKind.BOUNDARY, 80.0, node_id="4", node_class=node_class, unload_models=True
            )
        )

    kept = before("ReActorFaceSwapOpt")
    assert [a.skipped_reason for a in kept.record.actions if a.name in RUNG[:2]] == [KEPT_FOR_REACTOR] * 2
    assert module.FS_MODEL is not None
    unloaded = before("VAEDecode")
    assert names(unloaded)[-2:] == RUNG[:2] and module.FS_MODEL is None


def test_a_rung_that_kept_reactors_models_does_not_hold_back_the_cleanup_after_its_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guard weighs a cleanup by what its rung could try: one that kept ReActor's models for its node (and
    freed nothing) is no reason to hold back the cleanup after the node, which may unload them."""
    module = reactor(monkeypatch)
    engine = Engine(probe=ReActorProbe(module, base=60, faces=1, models=30))  # 91%, and nothing grows

    def rule(phase: str, mode: Mode) -> Any:
        trigger = Trigger(kind=TriggerKind.HOOK, reason=phase, node_id="3", node_class="ReActorFaceSwap", phase=phase)
        return engine.run(CleanupRequest(trigger=trigger, mode=mode, thresholds=THRESHOLDS, unload_models=True))

    assert rule("before", Mode.CONSERVATIVE).performed and module.FS_MODEL is not None
    after = rule("after", Mode.BALANCED)

    assert after.performed and not after.held_back
    assert names(after)[-2:] == RUNG[:2] and module.FS_MODEL is None


def test_a_rung_with_nothing_left_to_unload_holds_the_next_one_back_until_usage_grows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every step of the rung found nothing to unload: a later cleanup near the limit can find no more, and the
    guard holds it back (else every node would pay for one) until usage grows."""
    module = reactor(monkeypatch)
    module.unload_all_models()
    module.SOURCE_FACES = module.TARGET_FACES = None  # type: ignore[attr-defined]
    probe = ReActorProbe(module, base=95, faces=1, models=1)
    engine = Engine(probe=probe)

    first = boundary(engine)
    assert first.performed and all(first.record.actions[-1 - i].skipped_reason for i in range(3))
    assert names(first)[-3:] == RUNG
    held = boundary(engine)
    assert held.held_back and not held.performed
    probe.base = 97  # 200 MB more in use: worth another
    assert boundary(engine).performed


def test_when_free_memory_does_not_list_what_it_unloaded_the_count_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    module = reactor(monkeypatch)
    calls = _management(monkeypatch, torch, None)
    engine = Engine(probe=ReActorProbe(module, base=93, faces=1, models=1))

    outcome = boundary(engine)

    assert len(calls) == 1
    detail = outcome.record.actions[-1].detail or ""
    assert detail.endswith("it did not say how many of the 1 model(s) in RAM it unloaded"), detail
    assert "0 of 1" not in detail


def test_reactors_module_is_found_once_and_sys_modules_is_scanned_again_only_when_it_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scans: list[int] = []
    scan = reactor_module._scan

    def counting() -> Any:
        scans.append(len(sys.modules))
        return scan()

    monkeypatch.setattr(reactor_module, "_scan", counting)
    monkeypatch.setitem(sys.modules, "memhooks_test_unrelated", types.ModuleType("memhooks_test_unrelated"))
    assert reactor_module.reactor_modules() == [] and len(scans) == 1
    assert reactor_module.kept_description() is None and reactor_module.reactor_modules() == []
    assert len(scans) == 1  # nothing changed in sys.modules: not scanned again

    module = reactor(monkeypatch)  # ReActor's node pack is imported
    assert reactor_module.reactor_modules() == [module] and len(scans) == 2
    for _ in range(3):
        assert reactor_module.kept_description() is not None  # what every record asks
    assert len(scans) == 2  # found: kept, not looked for again

    monkeypatch.delitem(sys.modules, module.__name__)  # gone (a test's stand-in taken out)
    assert reactor_module.reactor_modules() == [] and len(scans) == 3
    again = reactor(monkeypatch)
    assert reactor_module.reactor_modules() == [again] and len(scans) == 4
    newer = reactor(monkeypatch)  # another module in its place, under the same name: the one kept is not ReActor's
    assert reactor_module.reactor_modules() == [newer] and len(scans) == 5
