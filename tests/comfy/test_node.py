"""The UnifiedMemoryManager node's contract with ComfyUI and its users."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from comfy_memhooks.comfy.node import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, UnifiedMemoryManager
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.modes import Mode
from comfy_memhooks.engine.policy import PolicySettings
from comfy_memhooks.errors import InvalidSetting
from tests.fake_nvml import two_gpus

STATUS = re.compile(r"^RAM: \d+(\.\d)?GB/\d+(\.\d)?GB \(\d+%\) \| VRAM: (n/a|\d+(\.\d)?GB/\d+(\.\d)?GB \(\d+%\))$")


def inputs(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "enable_monitoring": True,
        "enable_optimization": True,
        "auto_optimize": False,
        "enable_auto_cleanup": False,
        "mode": "Conservative",
        "ram_threshold": 80.0,
        "vram_threshold": 85.0,
        "cooldown_seconds": 0.0,
        "detailed_report": False,
    }
    values.update(changes)
    return values


def run(**changes: Any) -> dict[str, Any]:
    return UnifiedMemoryManager().run(**inputs(**changes))


def test_registration() -> None:
    assert NODE_CLASS_MAPPINGS == {"UnifiedMemoryManager": UnifiedMemoryManager}
    assert NODE_DISPLAY_NAME_MAPPINGS == {"UnifiedMemoryManager": "Unified Memory Manager"}
    assert UnifiedMemoryManager.CATEGORY == "memory"
    assert UnifiedMemoryManager.OUTPUT_NODE is True
    assert callable(getattr(UnifiedMemoryManager(), UnifiedMemoryManager.FUNCTION))


def test_inputs_types_defaults_and_tooltips() -> None:
    spec = UnifiedMemoryManager.INPUT_TYPES()
    required = spec["required"]
    assert list(required) == [
        "enable_monitoring",
        "enable_optimization",
        "auto_optimize",
        "enable_auto_cleanup",
        "mode",
        "ram_threshold",
        "vram_threshold",
        "cooldown_seconds",
        "detailed_report",
    ]
    for name in ("enable_monitoring", "enable_optimization", "auto_optimize", "enable_auto_cleanup", "detailed_report"):
        assert required[name][0] == "BOOLEAN"
    assert required["mode"][0] == ["Monitor Only", "Conservative", "Balanced", "Aggressive"]
    assert required["ram_threshold"][0] == "FLOAT" and required["ram_threshold"][1]["default"] == 80.0
    assert required["vram_threshold"][0] == "FLOAT" and required["vram_threshold"][1]["default"] == 85.0
    assert required["cooldown_seconds"][1]["default"] == 30.0
    optional = spec["optional"]
    assert optional["trigger_image"][0] == "IMAGE"
    assert optional["passthrough"][0] == "*"
    for group in (required, optional):
        for name, (_, options) in group.items():
            assert options.get("tooltip"), f"{name} has no tooltip"
    assert spec["hidden"] == {"unique_id": "UNIQUE_ID"}


def test_outputs_in_order() -> None:
    assert UnifiedMemoryManager.RETURN_TYPES == ("STRING", "STRING", "FLOAT", "FLOAT", "FLOAT", "BOOLEAN", "IMAGE", "*")
    assert UnifiedMemoryManager.RETURN_NAMES == (
        "status_summary",
        "detailed_report",
        "ram_usage_percent",
        "vram_usage_percent",
        "memory_freed_gb",
        "optimization_performed",
        "trigger_image",
        "passthrough",
    )
    assert len(UnifiedMemoryManager.OUTPUT_TOOLTIPS) == len(UnifiedMemoryManager.RETURN_TYPES)


def test_is_changed_is_nan_so_it_runs_every_time() -> None:
    value = UnifiedMemoryManager.IS_CHANGED(**inputs())
    assert math.isnan(value) and value != value


def test_pass_through_returns_the_very_objects(shared_engine: Callable[..., Engine]) -> None:
    torch = pytest.importorskip("torch")
    image = torch.zeros((1, 8, 8, 3))
    shared_engine()
    model = object()
    result = UnifiedMemoryManager().run(**inputs(), trigger_image=image, passthrough=model)["result"]
    assert result[6] is image and result[7] is model


def test_status_line_without_gpu(shared_engine: Callable[..., Engine]) -> None:
    shared_engine()
    output = run()
    summary = output["result"][0]
    assert STATUS.match(summary), summary
    assert summary.endswith("| VRAM: n/a")
    assert math.isnan(output["result"][3])  # VRAM percent unknown, never 0
    assert 0 < output["result"][2] <= 100
    assert output["ui"] == {"text": [summary]}


def test_status_line_with_two_gpus_and_detailed_report(shared_engine: Callable[..., Engine]) -> None:
    shared_engine(two_gpus())
    result = run(detailed_report=True, unique_id="12")["result"]
    assert result[0].endswith("| VRAM0: 4GB/16GB (25%) | VRAM1: 12GB/24GB (50%)")
    assert result[3] == pytest.approx(50.0)  # the fullest GPU
    report = result[1]
    for expected in (
        "RAM:",
        "GPU 0 (GPU B)",
        "GPU 1 (GPU A)",
        "GPU processes: 0",
        "Optimization #1: Conservative",
        "gc_collect",
    ):
        assert expected in report
    assert result[5] is True and result[4] >= 0


def test_detailed_report_is_empty_when_off(shared_engine: Callable[..., Engine]) -> None:
    shared_engine()
    assert run(detailed_report=False)["result"][1] == ""


def test_history_records_the_node_id(shared_engine: Callable[..., Engine]) -> None:
    engine = shared_engine()
    run(unique_id="42")
    (record,) = engine.history.records()
    assert (record.trigger.kind.value, record.trigger.node_id, record.trigger.node_class) == (
        "node",
        "42",
        "UnifiedMemoryManager",
    )


def test_monitor_only_and_optimization_off_free_nothing(shared_engine: Callable[..., Engine]) -> None:
    engine = shared_engine()
    assert run(mode="Monitor Only")["result"][5] is False
    assert run(enable_optimization=False, enable_auto_cleanup=True)["result"][5] is False
    assert engine.history.records() == ()


def test_monitoring_off_reports_nothing_but_still_optimizes(shared_engine: Callable[..., Engine]) -> None:
    shared_engine()
    result = run(enable_monitoring=False)["result"]
    assert result[0] == "monitoring off" and result[1] == ""
    assert math.isnan(result[2]) and math.isnan(result[3])
    assert result[5] is True


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ram_threshold", 0),
        ("ram_threshold", 150.0),
        ("vram_threshold", float("nan")),
        ("vram_threshold", "85"),
        ("mode", "Turbo"),
        ("cooldown_seconds", -1.0),
        ("enable_optimization", "false"),
        ("enable_monitoring", 1),
    ],
)
def test_bad_input_names_the_input_and_frees_nothing(
    shared_engine: Callable[..., Engine], field: str, value: object
) -> None:
    engine = shared_engine()
    with pytest.raises(InvalidSetting) as raised:
        run(**{field: value})
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")
    assert engine.history.records() == ()


def test_unknown_mode_error_lists_the_allowed_ones(shared_engine: Callable[..., Engine]) -> None:
    shared_engine()
    with pytest.raises(InvalidSetting) as raised:
        run(mode="Turbo")
    for mode in Mode:
        assert repr(mode.value) in str(raised.value)


def test_any_type_links_with_every_type_on_old_and_new_comfyui() -> None:
    any_type = UnifiedMemoryManager.RETURN_TYPES[7]
    assert any_type == "*"
    # The check of ComfyUI releases before IO.ANY: `not received_type != input_type`, from both sides.
    assert not (any_type != "IMAGE")  # noqa: SIM202 - the `!=` is what old releases call
    assert not ("MODEL" != any_type)  # noqa: SIM202 - the operand order is what is being tested
    assert UnifiedMemoryManager.INPUT_TYPES()["optional"]["passthrough"][0] is any_type


def test_the_example_workflows_match_the_node() -> None:
    workflows = Path(__file__).resolve().parents[2] / "workflows"
    spec = UnifiedMemoryManager.INPUT_TYPES()
    checked = 0
    for ui_path in sorted(workflows.glob("*.json")):
        # The API copy of each workflow lies where the template browser does not look, under the same name.
        api = json.loads((workflows / "api" / ui_path.name).read_text())
        ui = json.loads(ui_path.read_text())
        for node in (n for n in ui["nodes"] if n["type"] == "UnifiedMemoryManager"):
            node_inputs = api[str(node["id"])]["inputs"]
            widgets = {name: value for name, value in node_inputs.items() if not isinstance(value, list)}
            assert list(widgets) == list(spec["required"])
            assert list(widgets.values()) == node["widgets_values"]
            # The values validate as the node validates them.
            policy = {k: v for k, v in widgets.items() if k not in {"enable_monitoring", "detailed_report"}}
            PolicySettings.parse(**policy)
            assert [o["name"] for o in node["outputs"]] == list(UnifiedMemoryManager.RETURN_NAMES)
            checked += 1
    assert checked == 8  # every workflow but the one that leaves the work to the automatic hook
