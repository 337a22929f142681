"""A test-only ComfyUI node pack for the Memory panel's integration test: a node that holds RAM for a while.

It lets a workflow run long enough, with memory moving, for the panel to show live values during the run.
"""

import time

import torch


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
