"""``comfy.memory_management``: ComfyUI's RAM release hook and its dynamic VRAM switch (0.33 and later).

It holds ``aimdo_enabled`` (dynamic VRAM on), ``extra_ram_release`` (ask ComfyUI's RAM cache to give memory back)
and ``extra_ram_release_callback`` (set only while a prompt runs); older releases have none of them, so callers
read each one with ``getattr`` on the module returned here.
"""

from __future__ import annotations

import sys
from types import ModuleType

NAME = "comfy.memory_management"


def comfy_memory_management() -> ModuleType | None:
    """ComfyUI's ``comfy.memory_management`` when this process is ComfyUI and has it, else ``None``."""
    return sys.modules.get(NAME)
