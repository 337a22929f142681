"""Stand-in for ReActor's ``scripts/reactor_swapper.py``: module globals caching faces and a face-swap model.

ReActor keeps these where ComfyUI's model management never looks; comfy_memhooks' Aggressive mode finds the
module by these names and empties it. The test reads ``unloads`` to see that it did.
"""

from __future__ import annotations

from typing import Any

SOURCE_FACES: Any = None
SOURCE_IMAGE_HASH: Any = None
TARGET_FACES: Any = None
TARGET_IMAGE_HASH: Any = None
TARGET_FACES_LIST: list[Any] = []
TARGET_IMAGE_LIST_HASH: list[Any] = []
MODEL: Any = None
unloads = 0


def unload_all_models() -> None:
    module_globals = globals()  # ReActor's own caches are module globals too
    module_globals["MODEL"] = None
    module_globals["unloads"] += 1
