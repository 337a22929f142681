"""A test-only node pack beside the real ReActor: reads its caches, and holds RAM after a swap. Never installed.

It imports nothing of comfy_memhooks, so the same workflows run in a ComfyUI without it.

``MemhooksReActorState`` reports, as its UI text (JSON), this process's RSS and what ReActor's swapper module
(``scripts/reactor_swapper.py``: ``FS_MODEL``, ``ANALYSIS_MODELS``, the cached faces) holds now.
``MemhooksReActorHold`` passes an image through and returns ``megabytes`` of written bytes beside it, which
ComfyUI's output cache keeps alive until the prompt's outputs are dropped: the room a node after a swap needs. It
then works on them for ``work_seconds``, as a node does, so memory readings taken meanwhile see what it holds.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

MIB = 1024**2


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _swapper() -> Any:
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").endswith("reactor_swapper") and hasattr(module, "ANALYSIS_MODELS"):
            return module
    return None


def reactor_state() -> dict[str, Any]:
    module = _swapper()
    if module is None:
        return {"loaded": False, "rss_bytes": _rss_bytes()}
    analysis = {size: model is not None for size, model in module.ANALYSIS_MODELS.items()}
    return {
        "loaded": True,
        "module": module.__name__,
        "rss_bytes": _rss_bytes(),
        "swap_model": module.FS_MODEL is not None,
        "analysis_models": analysis,
        "source_faces": None if module.SOURCE_FACES is None else len(module.SOURCE_FACES),
        "target_faces": None if module.TARGET_FACES is None else len(module.TARGET_FACES),
        "target_faces_list": len(module.TARGET_FACES_LIST or ()),
        "source_hash": module.SOURCE_IMAGE_HASH is not None,
        "target_hash": module.TARGET_IMAGE_HASH is not None,
    }


class MemhooksReActorState:
    CATEGORY = "memhooks_reactor_test"
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"label": ("STRING", {"default": "state"})}}

    @classmethod
    def IS_CHANGED(cls, **_: Any) -> float:
        return math.nan  # never cached: every prompt reads the state afresh

    def run(self, label: str) -> dict[str, Any]:
        return {"ui": {"text": [json.dumps({"label": label, **reactor_state()})]}}


class MemhooksReActorHold:
    CATEGORY = "memhooks_reactor_test"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "MEMHOOKS_BYTES")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "megabytes": ("INT", {"default": 100, "min": 1, "max": 65536}),
                "work_seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 60.0}),
            }
        }

    def run(self, image: Any, megabytes: int, work_seconds: float) -> tuple[Any, bytes]:
        held = bytes([megabytes % 251 + 1]) * (megabytes * MIB)
        time.sleep(work_seconds)
        return (image, held)


NODE_CLASS_MAPPINGS = {"MemhooksReActorState": MemhooksReActorState, "MemhooksReActorHold": MemhooksReActorHold}
NODE_DISPLAY_NAME_MAPPINGS = {name: name for name in NODE_CLASS_MAPPINGS}
