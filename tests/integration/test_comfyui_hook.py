"""The executor hook in a real ComfyUI: signals, history, unchanged outputs, cached nodes and the OOM rescue.

Run against each ComfyUI generation by pointing ``COMFYUI_DIR`` at it (0.8.0 has the asynchronous executor,
0.3.44 the synchronous one); skipped when it is not set.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.comfyui_server import ComfyUI, checkout_version_text, running_comfyui, skip_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

HEAVY = {"2": "VHS_LoadVideo", "3": "ReActorFaceSwap", "7": "VHS_VideoCombine"}


# The default rules, each run every time ("always" before and after) and with no cooldown, so that every rule
# runs; thresholds at 100% keep these runs routine (under pressure the effectiveness guard would rightly hold back
# repeated cleanups that free nothing, and the pressure tests cover that).
EVERY_RULE_EVERY_TIME = {
    "cooldown_seconds": 0,
    "ram_threshold": 100,
    "vram_threshold": 100,
    "rules": [
        {"pattern": "ReActor*", "before_mode": "Conservative", "before_when": "always", "after_mode": "Balanced"},
        {"pattern": "VHS_LoadVideo*", "before_mode": "Aggressive", "before_when": "always"},
        {"pattern": "VHS_LoadImages*", "before_mode": "Aggressive", "before_when": "always"},
        {"pattern": "VHS_VideoCombine", "after_mode": "Balanced"},
    ],
}


@pytest.fixture(scope="module")
def comfy() -> Iterator[ComfyUI]:
    with running_comfyui(settings=EVERY_RULE_EVERY_TIME) as server:
        yield server


def workflow(seed: int = 7, oom_once: str = "", always_run: bool = True) -> dict[str, Any]:
    """Load video → face swap → lazy mix → expansion → invert → combine, with the real heavy class names."""
    return {
        "1": {"class_type": "MemhooksTestAlwaysRun" if always_run else "PrimitiveInt", "inputs": {"value": seed}},
        "2": {
            "class_type": "VHS_LoadVideo",
            "inputs": {"seed": ["1", 0], "frame_count": 4, "width": 32, "height": 24},
        },
        "3": {
            "class_type": "ReActorFaceSwap",
            "inputs": {"input_image": ["2", 0], "enabled": True, "oom_once": oom_once},
        },
        "4": {"class_type": "MemhooksTestLazyMix", "inputs": {"image1": ["3", 0], "image2": ["2", 0], "mix": 0.25}},
        "5": {"class_type": "MemhooksTestExpand", "inputs": {"image": ["4", 0]}},
        "6": {"class_type": "ImageInvert", "inputs": {"image": ["5", 0]}},
        "7": {"class_type": "VHS_VideoCombine", "inputs": {"images": ["6", 0], "frame_rate": 8.0}},
    }


def succeeded(entry: dict[str, Any]) -> bool:
    return entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True


def digest(entry: dict[str, Any]) -> str:
    text: str = entry["outputs"]["7"]["text"][0]
    return text


def node_events(events: list[dict[str, Any]], prompt_id: str) -> dict[str, list[dict[str, Any]]]:
    by_node: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if event["signal"] in ("node_started", "node_finished") and event["prompt_id"] == prompt_id:
            by_node.setdefault(event["node_id"], []).append(event)
    return by_node


def records_since(comfy: ComfyUI, sequence: int) -> list[dict[str, Any]]:
    return sorted(
        (r for r in comfy.get("/memhooks_test/history") if r["sequence"] > sequence), key=lambda r: r["sequence"]
    )


def last_sequence(comfy: ComfyUI) -> int:
    return max((record["sequence"] for record in comfy.get("/memhooks_test/history")), default=0)


def test_the_hook_is_installed_at_start_up(comfy: ComfyUI) -> None:
    status = comfy.get("/memhooks_test/status")
    assert status["installed"] is True, status
    assert status["execute_is_wrapped"] is True
    assert status["prompt_signals"] is True
    version = (checkout_version_text() or "").split(".")
    assert status["comfyui_version"] == ".".join(version)
    synchronous = tuple(int(part) for part in version[:3]) <= (0, 3, 44)
    assert status["executor"] == ("sync" if synchronous else "async")
    assert status["hook_errors"] == 0
    assert status["receiver_errors"] == 0
    assert "IMPORT FAILED" not in comfy.log_tail(200_000)


def test_signals_and_history_around_heavy_nodes(comfy: ComfyUI) -> None:
    mark, sequence = comfy.mark(), last_sequence(comfy)
    prompt_id, entry = comfy.run(workflow(seed=11))
    assert succeeded(entry), entry["status"]
    events = comfy.events(mark)

    mine = [event for event in events if event.get("prompt_id") == prompt_id]
    assert mine[0]["signal"] == "prompt_started"
    assert mine[-1]["signal"] == "prompt_finished"
    assert mine[-1]["success"] is True
    assert mine[-1]["duration_seconds"] > 0
    by_node = node_events(events, prompt_id)
    for node_id in map(str, range(1, 8)):
        # Once each, although ComfyUI enters the lazy mix (4) and the expanding node (5) twice.
        assert [event["signal"] for event in by_node[node_id]] == ["node_started", "node_finished"], node_id
        finished = by_node[node_id][1]
        assert finished["result"] == "SUCCESS"
        assert finished["cached"] is False
        assert finished["error"] is None
        assert finished["heavy"] is (node_id in HEAVY)
        assert finished["node_class"] == workflow()[node_id]["class_type"]
    assert any(node_id.startswith("5.") for node_id in by_node)  # the expansion's own node was signalled too

    expected = [
        ("2", "VHS_LoadVideo", "before", "Aggressive"),
        ("3", "ReActorFaceSwap", "before", "Conservative"),
        ("3", "ReActorFaceSwap", "after", "Balanced"),
        ("7", "VHS_VideoCombine", "after", "Balanced"),
    ]
    records = records_since(comfy, sequence)
    got = [(r["trigger"]["node_id"], r["trigger"]["node_class"], r["trigger"]["phase"], r["mode"]) for r in records]
    assert got == expected
    assert all(record["trigger"]["kind"] == "hook" for record in records)
    performed = [event for event in events if event["signal"] == "optimization_performed"]
    assert [event["record"]["sequence"] for event in performed] == [record["sequence"] for record in records]


def test_outputs_are_the_same_with_the_hook_off(comfy: ComfyUI) -> None:
    _, with_hook = comfy.run(workflow(seed=21))
    status = comfy.post("/memhooks_test/hook", {"installed": False})
    try:
        assert status["installed"] is False
        assert status["execute_is_wrapped"] is False  # ComfyUI's own function is back
        mark, sequence = comfy.mark(), last_sequence(comfy)
        _, without_hook = comfy.run(workflow(seed=21))
        assert comfy.events(mark) == []
        assert records_since(comfy, sequence) == []
    finally:
        status = comfy.post("/memhooks_test/hook", {"installed": True})
    assert status["installed"] is True
    assert succeeded(with_hook)
    assert succeeded(without_hook)
    assert digest(with_hook) == digest(without_hook)
    assert with_hook["outputs"] == without_hook["outputs"]
    _, again = comfy.run(workflow(seed=21))
    assert digest(again) == digest(with_hook)


def test_cached_nodes_are_reported_and_trigger_nothing(comfy: ComfyUI) -> None:
    prompt = workflow(seed=31, always_run=False)
    comfy.run(prompt)
    mark, sequence = comfy.mark(), last_sequence(comfy)

    prompt_id, entry = comfy.run(prompt)

    assert succeeded(entry)
    by_node = node_events(comfy.events(mark), prompt_id)
    assert list(by_node) == ["7"]  # ComfyUI only enters cached output nodes
    started, finished = by_node["7"]
    assert started["cached"] is True
    assert finished["cached"] is True
    assert finished["result"] == "SUCCESS"
    assert records_since(comfy, sequence) == []


def test_the_oom_rescue_reruns_the_node_and_its_result_reaches_the_consumers(comfy: ComfyUI) -> None:
    _, plain = comfy.run(workflow(seed=41))
    unloads = comfy.get("/memhooks_test/status")["reactor_unloads"]
    mark, sequence = comfy.mark(), last_sequence(comfy)

    prompt_id, rescued = comfy.run(workflow(seed=41, oom_once=uuid.uuid4().hex))

    assert succeeded(rescued), rescued["status"]
    messages = [message[0] for message in rescued["status"]["messages"]]
    assert "execution_error" not in messages  # the user sees no error for a rescued node
    assert digest(rescued) == digest(plain)  # the second run's frames went on to the video
    records = records_since(comfy, sequence)
    rescue = [record for record in records if record["trigger"]["phase"] == "rescue"]
    assert len(rescue) == 1
    assert rescue[0]["mode"] == "Aggressive"
    assert rescue[0]["trigger"]["node_class"] == "ReActorFaceSwap"
    assert rescue[0]["trigger"]["node_id"] == "3"
    assert "MemoryError" in rescue[0]["trigger"]["reason"]
    assert "the second run succeeded" in rescue[0]["trigger"]["reason"]
    assert comfy.get("/memhooks_test/status")["reactor_unloads"] > unloads  # Aggressive emptied "ReActor"'s caches
    finished = node_events(comfy.events(mark), prompt_id)["3"][-1]
    assert finished["rescued"] is True
    assert finished["result"] == "SUCCESS"


def test_without_the_rescue_the_failure_reaches_comfyui(comfy: ComfyUI) -> None:
    comfy.post("/memhooks_test/settings", {"oom_rescue": False})
    try:
        sequence = last_sequence(comfy)
        _, failed = comfy.run(workflow(seed=51, oom_once=uuid.uuid4().hex))
    finally:
        comfy.post("/memhooks_test/settings", {"oom_rescue": True})
    assert failed["status"]["status_str"] == "error"
    errors = [message[1] for message in failed["status"]["messages"] if message[0] == "execution_error"]
    assert len(errors) == 1
    assert errors[0]["node_id"] == "3"
    assert "MemoryError" in errors[0]["exception_type"]
    assert all(record["trigger"]["phase"] != "rescue" for record in records_since(comfy, sequence))


def test_turned_off_in_the_settings_the_signals_still_fire(comfy: ComfyUI) -> None:
    comfy.post("/memhooks_test/settings", {"enabled": False})
    try:
        mark, sequence = comfy.mark(), last_sequence(comfy)
        prompt_id, entry = comfy.run(workflow(seed=61))
    finally:
        comfy.post("/memhooks_test/settings", {"enabled": True})
    assert succeeded(entry)
    assert len(node_events(comfy.events(mark), prompt_id)) >= 7
    assert records_since(comfy, sequence) == []


def test_an_async_node_sends_before_and_after_once(comfy: ComfyUI) -> None:
    if comfy.get("/memhooks_test/status")["executor"] != "async":
        pytest.skip("this ComfyUI has the synchronous executor: no async nodes")
    prompt = {
        "1": {"class_type": "MemhooksTestAlwaysRun", "inputs": {"value": 3}},
        "2": {"class_type": "VHS_LoadVideo", "inputs": {"seed": ["1", 0], "frame_count": 2, "width": 16, "height": 16}},
        "3": {"class_type": "MemhooksTestAsyncSleep", "inputs": {"image": ["2", 0], "seconds": 0.05}},
        "4": {"class_type": "VHS_VideoCombine", "inputs": {"images": ["3", 0], "frame_rate": 8.0}},
    }
    mark = comfy.mark()
    prompt_id, entry = comfy.run(prompt)
    assert succeeded(entry)
    by_node = node_events(comfy.events(mark), prompt_id)
    assert [event["signal"] for event in by_node["3"]] == ["node_started", "node_finished"]
    assert by_node["3"][1]["duration_seconds"] >= 0.05
