"""comfy_memhooks: keeps RAM and VRAM under control around heavy ComfyUI nodes.

The layers, each a subpackage that imports only the ones before it: :mod:`.probe` (reading memory) →
:mod:`.engine` (freeing it) → :mod:`.hook` (ComfyUI's executor) → :mod:`.panel` (the Memory panel's server) →
:mod:`.comfy` (the node, the subscriber, start-up). :mod:`.signals`, the public API other extensions subscribe
to, stands beside them with the errors and the checks they share.

Importing this package starts nothing (no NVML, no thread, no patch) and loads neither aiohttp nor the panel:
ComfyUI's entry point (the ``__init__.py`` at the top of the repository) calls :func:`setup`.
"""

from __future__ import annotations

from typing import Any


def setup() -> tuple[dict[str, type], dict[str, str]]:
    """Prepares comfy_memhooks inside ComfyUI and returns the node mappings for ComfyUI's loader."""
    from .comfy.bootstrap import setup as setup_in_comfyui

    return setup_in_comfyui()


_ENGINE_NAMES = frozenset(
    {
        "ActionReport",
        "Engine",
        "Mode",
        "OptimizationRecord",
        "Outcome",
        "PressureLevel",
        "Thresholds",
        "Trigger",
        "TriggerKind",
        "get_engine",
    }
)


def __getattr__(name: str) -> Any:
    """The engine's public names (``comfy_memhooks.Engine``), loaded when first used rather than at import."""
    if name not in _ENGINE_NAMES:
        raise AttributeError(f"module 'comfy_memhooks' has no attribute {name!r}")
    from . import engine

    return getattr(engine, name)


__all__ = ["setup"]
