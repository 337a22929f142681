"""``comfy.model_management``: ComfyUI's models on its devices (load, unload, free memory, which device, OOM).

Its functions are what comfy_memhooks asks ComfyUI to free models with (``soft_empty_cache``,
``unload_all_models``, ``free_memory``) and to tell its device and its out-of-memory errors by; each caller reads
the attributes its ComfyUI release has, so the module itself is returned.
"""

from __future__ import annotations

import sys
from types import ModuleType

NAME = "comfy.model_management"


def comfy_model_management() -> ModuleType | None:
    """ComfyUI's ``comfy.model_management`` when this process is ComfyUI, else ``None``."""
    return sys.modules.get(NAME)
