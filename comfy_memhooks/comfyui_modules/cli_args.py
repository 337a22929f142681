"""``comfy.cli_args``: the command line ComfyUI was started with.

Its options decide what comfy_memhooks can expect of ComfyUI: which output cache runs (``--cache-ram``,
``--cache-classic``, ``--cache-lru``, ``--cache-none``) and where the panel is reachable from (``--listen``). The
module is loaded before any custom node, so its presence is also how comfy_memhooks tells it runs inside ComfyUI.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

NAME = "comfy.cli_args"


def comfy_cli_args() -> ModuleType | None:
    """ComfyUI's ``comfy.cli_args`` when this process is ComfyUI, else ``None``."""
    return sys.modules.get(NAME)


def comfy_args() -> Any | None:
    """ComfyUI's parsed command line (``comfy.cli_args.args``, an ``argparse.Namespace``), else ``None``."""
    return getattr(comfy_cli_args(), "args", None)
