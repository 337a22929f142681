"""The example workflows: in the frontend's format, each explained by a Note, the memory node's values valid.

No ComfyUI is needed: the node's inputs come from its own ``INPUT_TYPES``. The integration test
``tests/integration/test_comfyui_workflows.py`` runs every workflow in a real ComfyUI.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from comfy_memhooks.comfy.node import UnifiedMemoryManager
from comfy_memhooks.engine.policy import PolicySettings
from tests.workflow_prompt import WorkflowError, is_widget, to_prompt, widget_inputs

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
UMM = "UnifiedMemoryManager"
REACTOR = "ReActorFaceSwap"
LOAD_VIDEO = "VHS_LoadVideo"
COMBINE = "VHS_VideoCombine"

# What the issue asks of each workflow: the memory node's settings (None: no memory node) and the nodes it needs.
RECIPES: dict[str, dict[str, Any]] = {
    "Monitoring only": {"node": {"mode": "Monitor Only", "enable_optimization": False}},
    "Free memory at thresholds": {"node": {"mode": "Balanced", "auto_optimize": True, "enable_auto_cleanup": False}},
    "Aggressive cleanup for leaks": {"node": {"mode": "Aggressive", "enable_auto_cleanup": True}},
    "Before a ReActor face swap": {"node": {"mode": "Conservative", "auto_optimize": True}, "needs": {REACTOR}},
    "After a ReActor face swap": {"node": {"mode": "Balanced", "enable_auto_cleanup": True}, "needs": {REACTOR}},
    "Video face swap with a memory node": {"node": {"mode": "Aggressive"}, "needs": {LOAD_VIDEO, REACTOR, COMBINE}},
    "High VRAM": {"node": {"mode": "Aggressive", "vram_threshold": 80, "auto_optimize": True}},
    "Memory leaks": {"node": {"mode": "Aggressive", "enable_auto_cleanup": True, "ram_threshold": 70}},
    "Video face swap with the automatic hook": {"node": None, "needs": {LOAD_VIDEO, REACTOR, COMBINE}},
}
KNOWN_TYPES = {
    "Note",
    "LoadImage",
    "EmptyImage",
    "ImageScale",
    "PreviewImage",
    "SaveImage",
    "PreviewAny",
    UMM,
    REACTOR,
    LOAD_VIDEO,
    COMBINE,
}
UI_FILES = sorted(WORKFLOWS.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def node_info(cls: type) -> dict[str, Any]:
    """A node class's entry as ComfyUI's ``/object_info`` shows it (tuples become lists, as in JSON)."""
    declared = json.loads(json.dumps(cls.INPUT_TYPES()))  # type: ignore[attr-defined]
    return {
        "input": declared,
        "input_order": {category: list(specs) for category, specs in declared.items()},
        "output": list(cls.RETURN_TYPES),  # type: ignore[attr-defined]
        "output_name": list(cls.RETURN_NAMES),  # type: ignore[attr-defined]
    }


def memory_nodes(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [node for node in workflow["nodes"] if node["type"] == UMM]


def memory_node_values(node: dict[str, Any]) -> dict[str, Any]:
    names = [name for name, _ in widget_inputs(node_info(UnifiedMemoryManager))]
    assert isinstance(node["widgets_values"], list)
    assert len(node["widgets_values"]) == len(names), "one value per widget input, in INPUT_TYPES order"
    return dict(zip(names, node["widgets_values"], strict=True))


def test_the_nine_workflows_have_readable_names_and_api_copies_out_of_the_template_browser() -> None:
    # ComfyUI lists every JSON file directly in workflows/ by its stem: that stem is what users read.
    assert {path.stem for path in UI_FILES} == set(RECIPES)
    assert {path.stem for path in (WORKFLOWS / "api").glob("*.json")} == set(RECIPES)
    readme = (WORKFLOWS / "README.md").read_text(encoding="utf-8")
    for stem in RECIPES:
        assert f"`{stem}.json`" in readme


@pytest.mark.parametrize("path", UI_FILES, ids=lambda path: path.stem)
def test_a_workflow_is_in_the_format_the_frontend_saves(path: Path) -> None:
    workflow = load(path)
    assert isinstance(workflow["version"], (int, float))
    assert isinstance(workflow["groups"], list) and workflow["groups"]
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]), "node ids are unique"
    assert workflow["last_node_id"] >= max(nodes)
    assert set(workflow) >= {"last_link_id", "links", "config", "extra"}
    for node in workflow["nodes"]:
        assert node["type"] in KNOWN_TYPES
        assert node.get("mode", 0) == 0, "no muted or bypassed node"
        assert len(node["pos"]) == 2 and len(node["size"]) == 2
        assert isinstance(node["widgets_values"], (list, dict))
    links = {link[0]: link for link in workflow["links"]}
    assert workflow["last_link_id"] >= max(links)
    for link_id, origin, origin_slot, target, target_slot, kind in workflow["links"]:
        assert link_id in nodes[origin]["outputs"][origin_slot]["links"]
        assert nodes[origin]["outputs"][origin_slot]["type"] == kind
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
    for node in workflow["nodes"]:  # and the other way round: nothing points at a link that is not there
        for socket in node["inputs"]:
            assert socket.get("link") is None or socket["link"] in links
        for socket in node["outputs"]:
            assert all(link_id in links for link_id in socket.get("links") or [])
    for group in workflow["groups"]:
        x, y, width, height = group["bounding"]
        inside = [
            n
            for n in workflow["nodes"]
            if x <= n["pos"][0]
            and n["pos"][0] + n["size"][0] <= x + width
            and y <= n["pos"][1]
            and n["pos"][1] + n["size"][1] <= y + height
        ]
        assert inside, f"group {group['title']!r} frames no node"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda path: path.stem)
def test_a_workflow_explains_itself_in_a_core_note(path: Path) -> None:
    notes = [node for node in load(path)["nodes"] if node["type"] == "Note"]
    assert len(notes) == 1
    (text,) = notes[0]["widgets_values"]
    assert text.splitlines()[0] == f"{path.stem.upper()} (comfy_memhooks)"
    assert "What it shows:" in text and "When to use it:" in text


@pytest.mark.parametrize("path", UI_FILES, ids=lambda path: path.stem)
def test_the_memory_node_uses_only_its_declared_inputs_with_allowed_values(path: Path) -> None:
    spec = UnifiedMemoryManager.INPUT_TYPES()
    declared = {**spec["required"], **spec["optional"]}
    for node in memory_nodes(load(path)):
        for socket in node["inputs"]:
            assert socket["name"] in declared
            assert ("widget" in socket) == is_widget(list(declared[socket["name"]]))
        for name, value in memory_node_values(node).items():
            kind, options = declared[name][0], declared[name][1]
            if isinstance(kind, list):
                assert value in kind, f"{name}={value!r}: not one of {kind}"
            elif kind == "BOOLEAN":
                assert isinstance(value, bool), f"{name}={value!r}"
            else:
                assert kind == "FLOAT" and isinstance(value, (int, float)) and not isinstance(value, bool)
                assert math.isfinite(value) and options["min"] <= value <= options["max"], f"{name}={value!r}"
        values = memory_node_values(node)
        PolicySettings.parse(**{k: v for k, v in values.items() if k not in {"enable_monitoring", "detailed_report"}})
        assert [o["name"] for o in node["outputs"]] == list(UnifiedMemoryManager.RETURN_NAMES)
        assert [o["type"] for o in node["outputs"]] == list(UnifiedMemoryManager.RETURN_TYPES)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda path: path.stem)
def test_a_workflow_does_what_its_name_says(path: Path) -> None:
    recipe = RECIPES[path.stem]
    workflow = load(path)
    types = {node["type"] for node in workflow["nodes"]}
    assert recipe.get("needs", set()) <= types
    if recipe["node"] is None:
        assert UMM not in types
        return
    (node,) = memory_nodes(workflow)
    values = memory_node_values(node)
    for name, expected in recipe["node"].items():
        assert values[name] == expected, name


def _edges(workflow: dict[str, Any]) -> set[tuple[str, str]]:
    nodes = {node["id"]: node["type"] for node in workflow["nodes"]}
    return {(nodes[link[1]], nodes[link[3]]) for link in workflow["links"]}


def test_the_face_swap_workflows_place_the_memory_node_where_they_say() -> None:
    before = _edges(load(WORKFLOWS / "Before a ReActor face swap.json"))
    assert (UMM, REACTOR) in before and (REACTOR, UMM) not in before
    after = _edges(load(WORKFLOWS / "After a ReActor face swap.json"))
    assert (REACTOR, UMM) in after and (UMM, REACTOR) not in after
    for stem in ("Video face swap with a memory node", "Video face swap with the automatic hook"):
        edges = _edges(load(WORKFLOWS / f"{stem}.json"))
        assert {(LOAD_VIDEO, REACTOR), (REACTOR, COMBINE)} <= edges
    # With no input to wait for, the memory node is ready at once; being an output node, ComfyUI runs it before
    # VHS_LoadVideo (the integration test watches the order).
    video = load(WORKFLOWS / "Video face swap with a memory node.json")
    (node,) = memory_nodes(video)
    assert all(link[3] != node["id"] for link in video["links"])
    assert UnifiedMemoryManager.OUTPUT_NODE


@pytest.mark.parametrize("path", UI_FILES, ids=lambda path: path.stem)
def test_the_api_copy_has_the_ui_workflows_nodes_and_links(path: Path) -> None:
    workflow = load(path)
    api = load(WORKFLOWS / "api" / path.name)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert {key: value["class_type"] for key, value in api.items()} == {
        str(node_id): node["type"] for node_id, node in nodes.items() if node["type"] != "Note"
    }
    for _, origin, origin_slot, target, target_slot, _ in workflow["links"]:
        name = nodes[target]["inputs"][target_slot]["name"]
        assert api[str(target)]["inputs"][name] == [str(origin), origin_slot]
    for node in memory_nodes(workflow):
        widgets = {k: v for k, v in api[str(node["id"])]["inputs"].items() if not isinstance(v, list)}
        assert widgets == memory_node_values(node)


# --- the converter the integration test uses -----------------------------------------------------------------

OBJECT_INFO: dict[str, Any] = {
    "Sampler": {
        "input": {
            "required": {
                "model": ["MODEL"],
                "seed": ["INT", {"default": 0}],
                "steps": ["INT", {"default": 20, "forceInput": True}],
                "sampler": [["euler", "ddim"]],
                "scale": ["FLOAT", {"default": 1.0}],
            },
            "optional": {"note": ["STRING", {}], "shift": ["INT", {"control_after_generate": True}]},
        },
        "input_order": {"required": ["model", "seed", "steps", "sampler", "scale"], "optional": ["note", "shift"]},
    },
    "Loader": {"input": {"required": {"name": [["a", "b"], {"image_upload": True}]}}},
    "Combine": {
        "input": {
            "required": {
                "images": ["IMAGE"],
                "format": [
                    ["gif", "video/h264-mp4"],
                    {"formats": {"video/h264-mp4": [["crf", "INT"], ["pix_fmt", ["yuv420p"]]]}},
                ],
                "prefix": ["STRING", {}],
            }
        },
    },
}


def ui_node(node_id: int, kind: str, values: Any, inputs: list[dict[str, Any]] | None = None, mode: int = 0) -> Any:
    return {"id": node_id, "type": kind, "mode": mode, "inputs": inputs or [], "widgets_values": values}


def test_widget_values_go_to_widget_inputs_in_order_past_the_control_values() -> None:
    workflow = {
        "nodes": [
            ui_node(1, "Loader", ["b", "image"]),  # the upload button's value comes last and is no input
            ui_node(
                2,
                "Sampler",
                [7, "randomize", "ddim", 2.5, "hi", 3, "fixed"],
                [{"name": "model", "link": 1}, {"name": "steps", "link": 2}],
            ),
            ui_node(3, "Note", ["text"]),
        ],
        "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 1, 1, 2, 1, "INT"]],
    }
    assert to_prompt(workflow, OBJECT_INFO) == {
        "1": {"class_type": "Loader", "inputs": {"name": "b"}},
        "2": {
            "class_type": "Sampler",
            "inputs": {
                "seed": 7,
                "sampler": "ddim",
                "scale": 2.5,
                "note": "hi",
                "shift": 3,
                "model": ["1", 0],
                "steps": ["1", 1],
            },
        },
    }


def test_object_widget_values_keep_declared_names_and_the_chosen_formats_widgets() -> None:
    values = {"format": "video/h264-mp4", "prefix": "out", "crf": 19, "pix_fmt": "yuv420p", "videopreview": {}}
    workflow = {"nodes": [ui_node(5, "Combine", values)], "links": []}
    assert to_prompt(workflow, OBJECT_INFO)["5"]["inputs"] == {
        "format": "video/h264-mp4",
        "prefix": "out",
        "crf": 19,
        "pix_fmt": "yuv420p",
    }
    gif = {"nodes": [ui_node(5, "Combine", {**values, "format": "gif"})], "links": []}
    assert to_prompt(gif, OBJECT_INFO)["5"]["inputs"] == {"format": "gif", "prefix": "out"}


def test_muted_nodes_and_their_links_are_left_out() -> None:
    workflow = {
        "nodes": [
            ui_node(1, "Loader", ["a"], mode=2),
            ui_node(2, "Combine", {"format": "gif", "prefix": "p"}, [{"name": "images", "link": 1}]),
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    }
    assert to_prompt(workflow, OBJECT_INFO) == {
        "2": {"class_type": "Combine", "inputs": {"format": "gif", "prefix": "p"}}
    }


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (ui_node(1, "Loader", ["a"], mode=4), "bypassed"),
        (ui_node(1, "Unknown", []), "no such node"),
        (ui_node(1, "Sampler", [7, "fixed", "euler"]), "ends before 'scale'"),
        (ui_node(1, "Combine", {"prefix": "p"}), "has no format"),
    ],
)
def test_a_workflow_that_cannot_become_a_prompt_says_which_node(node: dict[str, Any], message: str) -> None:
    with pytest.raises(WorkflowError, match=message):
        to_prompt({"nodes": [node], "links": []}, OBJECT_INFO)
