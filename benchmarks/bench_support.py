"""What the benchmarks share: one output line at a time, and the smallest stand-in of ComfyUI's execution state."""

from __future__ import annotations

import enum
import sys
from typing import Any


def report(line: str) -> None:
    """One line to the terminal at once: a long benchmark shows its progress as it goes."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class ExecutionResult(enum.Enum):
    """ComfyUI's ``execution.ExecutionResult``, which the hook compares by name."""

    SUCCESS = 0
    FAILURE = 1
    PENDING = 2


SUCCESS = (ExecutionResult.SUCCESS, None, None)
"""What ComfyUI's ``execute`` returns for a node that ran."""


class OneNodePrompt:
    """A ``DynamicPrompt`` whose every node is one node of ``class_type`` without inputs."""

    def __init__(self, class_type: str):
        self._node = {"class_type": class_type, "inputs": {}}

    def get_node(self, node_id: str) -> dict[str, Any]:
        return self._node
