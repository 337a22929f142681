"""``folder_paths``: ComfyUI's directories (models, input, output, the user directory).

comfy_memhooks keeps its settings in ComfyUI's user directory (``folder_paths.get_user_directory()``), so that they
live with the user's other ComfyUI settings, and moves with ``--user-directory``.
"""

from __future__ import annotations

import sys
from types import ModuleType

NAME = "folder_paths"


def comfyui_folder_paths() -> ModuleType | None:
    """ComfyUI's ``folder_paths`` when this process is ComfyUI, else ``None``."""
    return sys.modules.get(NAME)
