"""What the tracker keeps of each node and prompt between ComfyUI's calls."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class NodeCall:
    """One node of one prompt, as an OOM rescue sees it."""

    node_id: str
    node_class: str
    prompt_id: str


class NodeRun:
    """A node between its first entry into ``execute`` and its SUCCESS or FAILURE.

    A plain slotted class rather than a dataclass: one is made for every node ComfyUI runs.
    """

    __slots__ = (
        "entries",
        "executed",
        "heavy",
        "inputs",
        "node_class",
        "node_id",
        "prompt_id",
        "rescue_report",
        "rescue_tried",
        "rescued",
        "started",
    )

    def __init__(self, node_id: Any, node_class: str, prompt_id: Any, heavy: bool, executed: Any, inputs: Any = None):
        self.node_id = node_id
        self.inputs = inputs  # the prompt's own inputs dict, by reference: read by the predictor, never changed
        self.node_class = node_class
        self.prompt_id = prompt_id
        self.heavy = heavy
        self.executed = executed
        self.started = time.perf_counter()
        self.entries = 0
        self.rescue_tried = False
        self.rescue_report: Callable[[bool], None] | None = None
        self.rescued: bool | None = None

    def call(self) -> NodeCall:
        return NodeCall(self.node_id, self.node_class, self.prompt_id)


@dataclass(slots=True, eq=False)
class PromptRun:
    prompt_id: Any
    executor: Any
    started: float
