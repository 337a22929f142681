"""The setting ``pressure_unloads_models`` reaches the engine from each route in ComfyUI's worker thread that may
climb the last rung: a heavy node's rule, the boundary cleanup before a node, the UnifiedMemoryManager node. Off,
the rung never runs from any of them; on, each climbs it near the limit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from comfy_memhooks.comfy.node import UnifiedMemoryManager
from comfy_memhooks.comfy.runtime import Runtime
from comfy_memhooks.engine.core import Engine, Outcome
from comfy_memhooks.triggers.settings import SettingsStore
from tests.engine.test_last_rung import RUNG, ReActorProbe, reactor

ROUTES = ("rule after ReActorFaceSwap", "boundary before VAEDecode", "UnifiedMemoryManager node")


def _node(runtime: Runtime) -> Outcome:
    """The node with Balanced at the threshold, as a workflow places it; its outcome read back from the history."""
    UnifiedMemoryManager().run(
        enable_monitoring=True,
        enable_optimization=True,
        auto_optimize=True,
        enable_auto_cleanup=False,
        mode="Balanced",
        ram_threshold=80.0,
        vram_threshold=85.0,
        cooldown_seconds=0.0,
        detailed_report=False,
        unique_id="9",
    )
    (record,) = runtime.engine.history.records()
    return Outcome(True, record.trigger.reason, record.after, record)


def _through(route: str, runtime: Runtime) -> Outcome | None:
    if route == ROUTES[0]:  # the default rule: Balanced after ReActor*, every time
        return runtime.optimizer.apply("after", "3", "ReActorFaceSwap")
    if route == ROUTES[1]:  # no rule for it: the model-free boundary cleanup
        return runtime.optimizer.at_boundary("5", "VAEDecode")
    return _node(runtime)


@pytest.mark.parametrize("allowed", [True, False], ids=["on", "off"])
@pytest.mark.parametrize("route", ROUTES)
def test_each_route_climbs_the_last_rung_only_where_the_setting_allows_it(
    route: str,
    allowed: bool,
    make_runtime: Callable[..., Runtime],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = reactor(monkeypatch)
    store = SettingsStore(tmp_path / "comfy_memhooks.json")
    store.load()
    store.update({"pressure_watchdog": False, "pressure_unloads_models": allowed})
    engine = Engine(probe=ReActorProbe(module, base=60, faces=1, models=30))  # 91%: near the limit
    runtime = make_runtime(engine=engine, settings=store)

    outcome = _through(route, runtime)

    assert outcome is not None and outcome.record is not None and outcome.performed
    climbed: list[Any] = [action.name for action in outcome.record.actions if action.name in RUNG]
    if allowed:
        assert climbed == RUNG[:2] and module.FS_MODEL is None
    else:
        assert climbed == [] and module.FS_MODEL is not None and module.SOURCE_FACES == ["face"]
