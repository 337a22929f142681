"""What the executor hook does at a node's start and end, for tests without an executor: the current runtime's
per-node pipeline's steps in their order, then the public signals, exactly as ``hook.tracker.Tracker`` does."""

from __future__ import annotations

from typing import Any

from comfy_memhooks import signals
from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.pipeline import NodeEnding


class NodeStub:
    """A node as the pipeline's steps see it (the hook's ``NodeRun``)."""

    __slots__ = ("heavy", "inputs", "node_class", "node_id", "prompt_id")

    def __init__(self, node_id: Any, node_class: str, prompt_id: Any, heavy: bool, inputs: Any = None):
        self.node_id = node_id
        self.node_class = node_class
        self.prompt_id = prompt_id
        self.heavy = heavy
        self.inputs = inputs


def start_node(
    node_id: Any,
    node_class: str,
    *,
    heavy: bool = False,
    prompt_id: Any = "p-1",
    cached: bool | None = False,
    inputs: Any = None,
) -> None:
    """A node starts: the pipeline's start steps, then ``node_started`` (and ``heavy_node_started``)."""
    current_runtime().pipeline.run_start(NodeStub(node_id, node_class, prompt_id, heavy, inputs), cached)
    kwargs = {
        "node_id": node_id,
        "node_class": node_class,
        "prompt_id": prompt_id,
        "heavy": heavy,
        "cached": cached,
        "inputs": inputs,
    }
    signals.send_safely(signals.node_started, node_class, **kwargs)
    if heavy:
        signals.send_safely(signals.heavy_node_started, node_class, **kwargs)


def finish_node(
    node_id: Any,
    node_class: str,
    *,
    heavy: bool = False,
    prompt_id: Any = "p-1",
    result: Any = None,
    cached: bool = False,
    duration_seconds: float = 0.25,
    error: BaseException | None = None,
    rescued: bool | None = None,
) -> None:
    """A node ends: the pipeline's end steps, then ``node_finished`` (and ``heavy_node_finished``)."""
    ending = NodeEnding(result, cached, duration_seconds, error, rescued)
    current_runtime().pipeline.run_end(NodeStub(node_id, node_class, prompt_id, heavy), ending)
    kwargs = {
        "node_id": node_id,
        "node_class": node_class,
        "prompt_id": prompt_id,
        "heavy": heavy,
        "result": result,
        "cached": cached,
        "duration_seconds": duration_seconds,
        "error": error,
        "rescued": rescued,
    }
    signals.send_safely(signals.node_finished, node_class, **kwargs)
    if heavy:
        signals.send_safely(signals.heavy_node_finished, node_class, **kwargs)
