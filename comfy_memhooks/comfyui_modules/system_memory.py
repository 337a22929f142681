"""``comfy.system_memory``: ComfyUI's own container-aware RAM reading (after 0.33).

Where ComfyUI reads the memory cgroup itself (``cgroup_memory_limit()``, ``cgroup_memory_usage()``,
``virtual_memory_available()``), that reading sizes its RAM cache; comfy_memhooks compares its own with it and says
which one a RAM reading came from by this module's name (``RamReader.COMFYUI`` spells it as text, a label that
looks nothing up: ``probe.readings`` stays a leaf that imports nothing).
"""

from __future__ import annotations

import sys
from types import ModuleType

NAME = "comfy.system_memory"


def comfy_system_memory() -> ModuleType | None:
    """ComfyUI's ``comfy.system_memory`` when this process is a ComfyUI that has it, else ``None``."""
    return sys.modules.get(NAME)
