"""Turns a workflow saved by ComfyUI's frontend (the UI format) into the API prompt ``POST /prompt`` takes.

It does what the frontend's ``graphToPrompt`` does for the nodes the example workflows use, reading each node's
inputs from ComfyUI's ``GET /object_info``:

- A node's widget values (``widgets_values``) belong, in order, to its widget inputs: ``required`` then
  ``optional``, each in ``input_order`` (or declaration order). A widget input is a combo or an INT, FLOAT,
  STRING or BOOLEAN without ``forceInput``. A seed-like INT (named ``seed`` or ``noise_seed``, or declaring
  ``control_after_generate``) is followed by one more value, the frontend's "control after generate" choice,
  which is not an input. Values left over at the end belong to widgets the frontend adds on its own (an image
  node's upload button, PreviewAny's preview) and are not inputs either.
- VideoHelperSuite's frontend saves ``widgets_values`` as an object keyed by widget name. Its keys are inputs when
  the node declares them, or when they are extra widgets that the chosen value of a combo brings in through that
  combo's ``formats`` option (``VHS_VideoCombine``'s ``pix_fmt``, ``crf``...); the others are UI state.
- A linked input becomes ``[origin node id, origin slot]``, taking the place of a widget of the same name.
- Notes (``Note``, ``MarkdownNote``) exist only in the UI and are dropped; a muted node (mode 2) is left out with
  its links. A bypassed node (mode 4) is refused: the frontend rewires its links, which these workflows never need.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

UI_ONLY_TYPES = frozenset({"Note", "MarkdownNote"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_NAMES = frozenset({"seed", "noise_seed"})
MODE_MUTED = 2
MODE_BYPASSED = 4


class WorkflowError(ValueError):
    """The workflow cannot become a prompt; the message names the node and the input."""


def _options(spec: list[Any]) -> dict[str, Any]:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def is_widget(spec: list[Any]) -> bool:
    """Whether an input spec from ``/object_info`` is shown as a widget (it is, unless it only takes a link)."""
    kind = spec[0]
    if isinstance(kind, list):
        return True
    return kind in WIDGET_TYPES and not _options(spec).get("forceInput", False)


def has_control_value(name: str, spec: list[Any]) -> bool:
    """Whether the frontend follows this widget's value with a "control after generate" value."""
    options = _options(spec)
    if options.get("control_after_generate"):
        return True
    return spec[0] == "INT" and name in SEED_NAMES


def widget_inputs(node_info: Mapping[str, Any]) -> list[tuple[str, list[Any]]]:
    """The node's widget inputs, in the order the frontend creates their widgets."""
    declared = node_info.get("input", {})
    order = node_info.get("input_order", {})
    widgets = []
    for category in ("required", "optional"):
        specs = declared.get(category, {})
        for name in order.get(category, list(specs)):
            spec = specs[name]
            if is_widget(spec):
                widgets.append((name, spec))
    return widgets


def _format_widgets(values: Mapping[str, Any], widgets: list[tuple[str, list[Any]]]) -> list[str]:
    """The extra widget names a combo's ``formats`` option brings in for the value chosen (VideoHelperSuite)."""
    names: list[str] = []
    for name, spec in widgets:
        formats = _options(spec).get("formats")
        if not isinstance(formats, dict):
            continue
        extra = formats.get(values.get(name))
        if isinstance(extra, list):
            names.extend(entry[0] for entry in extra if isinstance(entry, list) and entry)
    return names


def _widget_values(node: Mapping[str, Any], node_info: Mapping[str, Any]) -> dict[str, Any]:
    widgets = widget_inputs(node_info)
    values = node.get("widgets_values", [])
    where = f"node {node['id']} ({node['type']})"
    if isinstance(values, dict):
        missing = [name for name, _ in widgets if name not in values and name in node_info["input"].get("required", {})]
        if missing:
            raise WorkflowError(f"{where}: widgets_values has no {', '.join(missing)}")
        names = [name for name, _ in widgets if name in values] + _format_widgets(values, widgets)
        return {name: values[name] for name in names if name in values}
    inputs: dict[str, Any] = {}
    index = 0
    for name, spec in widgets:
        if index >= len(values):
            raise WorkflowError(f"{where}: widgets_values ends before {name!r}")
        inputs[name] = values[index]
        index += 2 if has_control_value(name, spec) else 1
    return inputs


def _link_table(workflow: Mapping[str, Any]) -> dict[int, tuple[int, int]]:
    table = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            table[link["id"]] = (link["origin_id"], link["origin_slot"])
        else:
            link_id, origin_id, origin_slot = link[0], link[1], link[2]
            table[link_id] = (origin_id, origin_slot)
    return table


def to_prompt(workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The API prompt for a UI-format workflow, given ComfyUI's ``/object_info`` (all of it, or its nodes)."""
    links = _link_table(workflow)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    prompt: dict[str, dict[str, Any]] = {}
    for node in workflow["nodes"]:
        if node["type"] in UI_ONLY_TYPES or node.get("mode", 0) == MODE_MUTED:
            continue
        where = f"node {node['id']} ({node['type']})"
        if node.get("mode", 0) == MODE_BYPASSED:
            raise WorkflowError(f"{where} is bypassed: not supported here")
        node_info = object_info.get(node["type"])
        if node_info is None:
            raise WorkflowError(f"{where}: ComfyUI has no such node")
        inputs = _widget_values(node, node_info)
        for socket in node.get("inputs", []):
            link_id = socket.get("link")
            if link_id is None:
                continue
            origin_id, origin_slot = links[link_id]
            if nodes[origin_id].get("mode", 0) == MODE_MUTED:
                continue  # the frontend leaves out a muted node's links with the node
            if nodes[origin_id]["type"] in UI_ONLY_TYPES:
                raise WorkflowError(f"{where}: input {socket['name']!r} is linked to a UI-only node")
            inputs[socket["name"]] = [str(origin_id), origin_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
