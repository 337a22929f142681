"""ComfyUI's top-level modules of the running process: ``execution``, ``server``, ``nodes``, ``comfyui_version``.

They are what makes a process ComfyUI: ``execution`` runs each node (the hook wraps its ``execute``), ``server``
holds the ``PromptServer`` the panel registers on, ``nodes`` the registry of node classes, and
``comfyui_version`` the release's version. Their names are plain words, so they are spelled only here.
"""

from __future__ import annotations

import sys
from types import ModuleType

EXECUTION = "execution"
SERVER = "server"
NODES = "nodes"
VERSION = "comfyui_version"


def comfyui_execution() -> ModuleType | None:
    """ComfyUI's ``execution`` (the per-node executor) when this process is ComfyUI, else ``None``."""
    return sys.modules.get(EXECUTION)


def comfyui_server() -> ModuleType | None:
    """ComfyUI's ``server`` (``PromptServer``) when this process is ComfyUI, else ``None``."""
    return sys.modules.get(SERVER)


def comfyui_nodes() -> ModuleType | None:
    """ComfyUI's ``nodes`` (``NODE_CLASS_MAPPINGS``: every registered node class) in ComfyUI, else ``None``."""
    return sys.modules.get(NODES)


def loaded_comfyui_version() -> str | None:
    """``comfyui_version.__version__`` where ComfyUI loaded that module, else ``None``."""
    version = getattr(sys.modules.get(VERSION), "__version__", None)
    return version if isinstance(version, str) else None
