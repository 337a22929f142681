"""comfy-aimdo (``comfy_aimdo.*``): the allocator behind ComfyUI's dynamic VRAM (2026 and later).

It is a package of its own that ComfyUI loads when dynamic VRAM is on; its figures (what it holds, what it can
evict, the headroom it keeps) are read through the two modules that have them, as ComfyUI loaded them.
"""

from __future__ import annotations

import sys
from types import ModuleType

CONTROL = "comfy_aimdo.control"
MODEL_VBAR = "comfy_aimdo.model_vbar"


def comfy_aimdo_control() -> ModuleType | None:
    """``comfy_aimdo.control`` (``get_total_vram_usage``, ``get_simple_vram_headroom``), else ``None``."""
    return sys.modules.get(CONTROL)


def comfy_aimdo_model_vbar() -> ModuleType | None:
    """``comfy_aimdo.model_vbar`` (``vbars_analyze``: what the allocator can give back), else ``None``."""
    return sys.modules.get(MODEL_VBAR)
