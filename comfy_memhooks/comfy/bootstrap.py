"""What ComfyUI's entry point calls: the explicit start of everything that must not happen at import."""

from __future__ import annotations

import logging
from typing import Any

from ..comfyui_modules.process import comfyui_nodes
from . import auto, profiling
from . import panel as comfy_panel
from .node import NODE_CLASS_MAPPINGS, NODE_CLASS_NAME, NODE_DISPLAY_NAME_MAPPINGS

logger = logging.getLogger(__name__)


def check_node_name_conflict() -> str | None:
    """Warns when another pack has registered ``UnifiedMemoryManager`` too; returns that pack's module.

    ComfyUI keeps whichever pack loaded last under a class name, so a user who installed another memory pack
    with the same node name may be running that one without knowing.
    """
    comfy_nodes = comfyui_nodes()
    registered: Any = getattr(comfy_nodes, "NODE_CLASS_MAPPINGS", {}).get(NODE_CLASS_NAME)
    ours = NODE_CLASS_MAPPINGS[NODE_CLASS_NAME]
    if registered is None or registered is ours:
        return None
    owner = str(getattr(registered, "RELATIVE_PYTHON_MODULE", None) or getattr(registered, "__module__", "?"))
    logger.warning(
        "another custom node pack (%s) has also registered a node named %r; ComfyUI uses the one loaded last. "
        "Remove one of the two packs to be sure which UnifiedMemoryManager runs.",
        owner,
        NODE_CLASS_NAME,
    )
    return owner


def start_profile() -> None:
    """The per-node profile, on the hook's signals; never raises: ComfyUI runs on without it."""
    try:
        profiling.start()
    except Exception:  # the profile is optional; a failure here must not stop ComfyUI's start-up.
        logger.exception("comfy_memhooks: the per-node profile could not start; nodes run without it")


def setup() -> tuple[dict[str, type], dict[str, str]]:
    """Prepares comfy_memhooks inside ComfyUI and returns the node mappings for ComfyUI's loader."""
    check_node_name_conflict()
    if auto.start():  # the executor hook and its subscriber; never raises, leaves ComfyUI untouched on failure
        start_profile()
    comfy_panel.attach()  # the Memory panel: routes on ComfyUI's server and live events
    return dict(NODE_CLASS_MAPPINGS), dict(NODE_DISPLAY_NAME_MAPPINGS)
