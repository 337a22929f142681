"""comfy_memhooks: keeps RAM and VRAM under control around heavy ComfyUI nodes.

The layers, each a subpackage that imports only the ones before it: :mod:`.probe` (reading memory) →
:mod:`.engine` (freeing it) → :mod:`.hook` (ComfyUI's executor) → :mod:`.panel` (the Memory panel's server) →
:mod:`.comfy` (the node, the subscriber, start-up). :mod:`.signals`, the public API other extensions subscribe
to, stands beside them with the errors and the checks they share.

Importing this package starts nothing (no NVML, no thread, no patch) and loads neither aiohttp nor the panel:
ComfyUI's entry point (the ``__init__.py`` at the top of the repository) calls :func:`setup`.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine.core import Engine
    from .profile.store import ProfileStore


def setup() -> tuple[dict[str, type], dict[str, str]]:
    """Prepares comfy_memhooks inside ComfyUI and returns the node mappings for ComfyUI's loader."""
    from .comfy.bootstrap import setup as setup_in_comfyui

    return setup_in_comfyui()


def get_engine() -> Engine:
    """The engine the node, the hook and the panel share in this process (its runtime's)."""
    from .comfy.runtime import current_runtime

    return current_runtime().engine


def get_profile_store() -> ProfileStore:
    """The per-node profile's store in this process: ``latest()``, ``get(prompt_id)``, the peaks by class."""
    from .comfy.runtime import current_runtime

    return current_runtime().profiles


def __getattr__(name: str) -> Any:
    """The engine's public names (``comfy_memhooks.Engine``), loaded when first used rather than at import."""
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:
        raise AttributeError(name)  # a subpackage not imported yet: the import system loads it, not the engine
    engine = importlib.import_module(".engine", __name__)  # not ``from . import``: that would ask here again
    if name not in engine.__all__:
        raise AttributeError(f"module 'comfy_memhooks' has no attribute {name!r}")
    return getattr(engine, name)


__all__ = ["get_engine", "get_profile_store", "setup"]
