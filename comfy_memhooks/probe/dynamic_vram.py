"""ComfyUI's dynamic VRAM (comfy-aimdo): whether it is on, and what its allocator holds, can evict and leaves free.

Under dynamic VRAM (``comfy.memory_management.aimdo_enabled``, on by default for NVIDIA GPUs since ComfyUI's
March 2026 releases) a custom allocator pages model weights into VRAM on demand and evicts them when something
else needs the room, so the device looks full by design. Its figures are read through the module names
comfy-aimdo really has, as this process already loaded them (never imported here):

- ``comfy_aimdo.control.get_total_vram_usage()``: VRAM the allocator holds on its devices;
- ``comfy_aimdo.model_vbar.vbars_analyze()``: the part of it the allocator can give back on demand (ComfyUI adds
  it to the free memory it plans model loads with, ``ModelPatcher.get_free_memory``);
- ``comfy_aimdo.control.get_simple_vram_headroom()``: the VRAM it keeps free (``--vram-headroom``); it raises
  ``RuntimeError`` before comfy-aimdo is initialised.
"""

from __future__ import annotations

from typing import Any

from ..comfyui_modules.aimdo import comfy_aimdo_control, comfy_aimdo_model_vbar
from ..comfyui_modules.memory_management import comfy_memory_management
from ..comfyui_modules.models import comfy_model_management
from .readings import DynamicVramReading


def dynamic_vram_enabled() -> bool:
    """Whether the running ComfyUI has dynamic VRAM on; ``False`` outside ComfyUI and before 2026."""
    return getattr(comfy_memory_management(), "aimdo_enabled", False) is True


def _bytes(read: Any) -> int | None:
    if not callable(read):
        return None
    try:
        value = read()
    except (RuntimeError, OSError, ValueError, TypeError, AttributeError):
        # comfy-aimdo raises RuntimeError before it is initialised; an older one may lack a symbol in its library.
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _device_index() -> int:
    model_management = comfy_model_management()
    get_device = getattr(model_management, "get_torch_device", None)
    try:
        index = get_device().index if callable(get_device) else None
    except Exception:  # any failure of ComfyUI's device choice: its first device is what comfy-aimdo manages then.
        index = None
    return index if isinstance(index, int) else 0


def read_dynamic_vram() -> DynamicVramReading | None:
    """The allocator's figures when dynamic VRAM is on, else ``None`` (also when comfy-aimdo is not loaded)."""
    if not dynamic_vram_enabled():
        return None
    control = comfy_aimdo_control()
    vbar = comfy_aimdo_model_vbar()
    return DynamicVramReading(
        device_index=_device_index(),
        resident_bytes=_bytes(getattr(control, "get_total_vram_usage", None)),
        evictable_bytes=_bytes(getattr(vbar, "vbars_analyze", None)),
        headroom_bytes=_bytes(getattr(control, "get_simple_vram_headroom", None)),
    )
