"""comfy_memhooks: keeps RAM and VRAM under control around heavy ComfyUI nodes.

Importing this package starts nothing: no NVML, no thread, no patch. ComfyUI's entry point (the ``__init__.py``
at the top of the repository) calls :func:`setup`.
"""

from __future__ import annotations

from .bootstrap import setup
from .engine import Engine, Outcome, get_engine
from .errors import InvalidSetting
from .history import ActionReport, OptimizationRecord, Trigger, TriggerKind
from .modes import MODE_ACTIONS, Mode
from .policy import PolicySettings
from .probe import MemoryProbe
from .snapshots import GpuProcess, GpuReading, GpuSource, MemorySnapshot, RamReading, RamSource

__all__ = [
    "MODE_ACTIONS",
    "ActionReport",
    "Engine",
    "GpuProcess",
    "GpuReading",
    "GpuSource",
    "InvalidSetting",
    "MemoryProbe",
    "MemorySnapshot",
    "Mode",
    "OptimizationRecord",
    "Outcome",
    "PolicySettings",
    "RamReading",
    "RamSource",
    "Trigger",
    "TriggerKind",
    "get_engine",
    "setup",
]
