"""A test-only ComfyUI node pack for the Memory panel's integration test: a node that holds RAM for a while.

It lets a workflow run long enough, with memory moving, for the panel to show live values during the run. With
``MEMHOOKS_TEST_SYSTEM_MEMORY=1``, in a ComfyUI that has no ``comfy.system_memory`` of its own (0.33.0: it came
after), it also registers a stand-in with that module's function names, so that the panel's line saying which RAM
reading is used shows in the real frontend: it answers as ComfyUI's own reader does on a machine where no memory
limit applies, as where the panel test runs (no limit, psutil's figures).
"""

import importlib
import os
import sys
import time
import types

import psutil
import torch


def _system_memory_standin():
    module = types.ModuleType("comfy.system_memory")
    module.cgroup_memory_limit = lambda: None
    module.cgroup_memory_usage = lambda: None
    module.virtual_memory_total = lambda: psutil.virtual_memory().total
    module.virtual_memory_available = lambda: psutil.virtual_memory().available
    return module


def _register_system_memory_standin():
    if os.environ.get("MEMHOOKS_TEST_SYSTEM_MEMORY") != "1" or "comfy.system_memory" in sys.modules:
        return
    try:
        importlib.import_module("comfy.system_memory")  # ComfyUI's own, where it has one
    except ImportError:
        sys.modules["comfy.system_memory"] = _system_memory_standin()


_register_system_memory_standin()


class MemhooksTestHoldMemory:
    """Passes an image through after holding ``megabytes`` of RAM for ``seconds`` (sleeping in short steps)."""

    CATEGORY = "testing/memhooks"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "hold"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "megabytes": ("INT", {"default": 512, "min": 1, "max": 16384}),
                "seconds": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 120.0}),
            }
        }

    def hold(self, image, megabytes, seconds):
        held = torch.ones(megabytes * 1024 * 1024 // 4, dtype=torch.float32)  # written, so really resident
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
        del held
        return (image,)


NODE_CLASS_MAPPINGS = {"MemhooksTestHoldMemory": MemhooksTestHoldMemory}
NODE_DISPLAY_NAME_MAPPINGS = {"MemhooksTestHoldMemory": "Hold memory (memhooks test)"}
