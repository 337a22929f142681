"""What ComfyUI's entry point calls: the explicit start of everything that must not happen at import."""

from __future__ import annotations

import logging
import os
from typing import Any

from .. import hook
from ..comfyui_modules.process import comfyui_execution, comfyui_nodes
from . import panel as comfy_panel
from .node import NODE_CLASS_MAPPINGS, NODE_CLASS_NAME, NODE_DISPLAY_NAME_MAPPINGS
from .runtime import Runtime, use_runtime

logger = logging.getLogger(__name__)

HOOK_SWITCH = "COMFY_MEMHOOKS_HOOK"
"""Environment variable: ``off`` (or ``0``, ``false``, ``no``) starts ComfyUI without the hook."""
_OFF = frozenset({"0", "off", "false", "no"})


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


def start_hook(runtime: Runtime) -> bool:
    """Installs the hook and the subscriber unless switched off or outside ComfyUI; whether the hook is in place.

    Never raises: a failure is logged, whatever was patched is put back, and ComfyUI starts as it would without
    comfy_memhooks' hook.
    """
    switch = os.environ.get(HOOK_SWITCH, "").strip().lower()
    if switch in _OFF:
        reason = f"turned off by {HOOK_SWITCH}={os.environ[HOOK_SWITCH]}"
        hook.note_not_installed(reason)
        logger.info("comfy_memhooks: executor hook %s", reason)
        return False
    if comfyui_execution() is None:
        hook.note_not_installed("not running inside ComfyUI (its execution module is not loaded)")
        logger.info("comfy_memhooks: not running inside ComfyUI; the executor hook is not installed")
        return False
    try:
        return runtime.install_hook() is not None
    except Exception as error:  # start-up must go on: ComfyUI runs unchanged, without the hook.
        logger.exception("comfy_memhooks: installing the executor hook failed; ComfyUI runs without it")
        try:
            runtime.uninstall()
        except Exception:  # already logged above; nothing more can be done safely.
            logger.debug("comfy_memhooks: undoing a failed install failed too", exc_info=True)
        hook.note_not_installed(f"installing failed: {type(error).__name__}: {error}")
        return False


def start_profile(runtime: Runtime) -> None:
    """The per-node profile, in the runtime's pipeline; never raises: ComfyUI runs on without it."""
    try:
        runtime.start_profile()
    except Exception:  # the profile is optional; a failure here must not stop ComfyUI's start-up.
        logger.exception("comfy_memhooks: the per-node profile could not start; nodes run without it")


def setup() -> tuple[dict[str, type], dict[str, str]]:
    """Prepares comfy_memhooks inside ComfyUI and returns the node mappings for ComfyUI's loader."""
    check_node_name_conflict()
    runtime = make_runtime()
    if runtime is not None:
        if start_hook(runtime):  # the executor hook and its subscriber; leaves ComfyUI untouched on failure
            start_profile(runtime)
        comfy_panel.attach(runtime)  # the Memory panel: routes on ComfyUI's server and live events
    return dict(NODE_CLASS_MAPPINGS), dict(NODE_DISPLAY_NAME_MAPPINGS)


def make_runtime() -> Runtime | None:
    """The process's runtime, made once; ``None`` (the node still loads, and makes one when it runs) when that
    fails, so ComfyUI's start-up goes on."""
    try:
        runtime = Runtime()
    except Exception:  # e.g. a settings file that cannot be read; the node reports it when it runs.
        logger.exception("comfy_memhooks: could not start; ComfyUI runs without its hook and panel")
        return None
    previous = use_runtime(runtime)
    if previous is not None:  # a second setup in one process: the first one's parts stop
        previous.stop()
    return runtime
