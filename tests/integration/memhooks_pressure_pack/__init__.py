"""A test-only ComfyUI node pack that leaves cyclic garbage behind, as heavy nodes do. Never installed for users.

It imports nothing of comfy_memhooks, so the same workflows run in a ComfyUI without it: there they must be
OOM-killed inside a memory-limited container, which proves the scenario is real.

Each node builds per-frame records that point back at their batch (a reference cycle) and hold a frame-sized
buffer, does some work on every frame, and returns. Python frees such records only in a full run of its cyclic
collector; while the node works it allocates thousands of small containers, so the young-generation collections
move the records to the oldest generation, which CPython collects rarely in a process as large as ComfyUI.
ComfyUI's own ``gc.collect()`` runs between prompts only, so inside one prompt the garbage piles up.
"""

from __future__ import annotations

import gc
import time
from typing import Any, ClassVar

import numpy as np

MIB = 1024**2
ANALYSIS_CONTAINERS = 8000  # a little more than one of CPython's gen-1 collections (10 x 700 allocations)


def _frame(frame_mb: int, seed: int) -> np.ndarray:
    """A frame-sized float32 buffer with every page written (an untouched one would cost no memory)."""
    frame = np.empty(frame_mb * MIB // 4, dtype=np.float32)
    frame.fill(float(seed % 251))
    return frame


def _process_batch(frames: int, frame_mb: int, seed: int, work_seconds: float) -> float:
    """Builds ``frames`` cyclic records, analyses them, and drops them all: garbage only the collector frees.

    The analysis allocates a few thousand small containers while the records are alive, as a face analyser's
    landmarks and scores do: enough for CPython's young collections to move the records to the oldest generation.
    """
    batch: dict[str, Any] = {"records": [], "seed": seed}
    batch["self"] = batch
    checksum = 0.0
    for index in range(frames):
        record = {"batch": batch, "frame": _frame(frame_mb, seed + index)}
        batch["records"].append(record)
        checksum += float(record["frame"][:: 1 << 16].sum())
        if work_seconds:
            time.sleep(work_seconds / frames)  # stands for the model's time on the frame
    per_record = -(-ANALYSIS_CONTAINERS // frames)
    for index, record in enumerate(batch["records"]):
        record["landmarks"] = [[index, k] for k in range(per_record)]
    return checksum


class _GarbageNode:
    CATEGORY = "memhooks_pressure_test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "value": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                "frames": ("INT", {"default": 10, "min": 1, "max": 10000}),
                "frame_mb": ("INT", {"default": 20, "min": 1, "max": 4096}),
                "work_seconds": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 600.0}),
            }
        }

    def run(self, value: int, frames: int, frame_mb: int, work_seconds: float) -> tuple[int]:
        _process_batch(frames, frame_mb, value, work_seconds)
        return (value + 1,)


class ReActorRestoreFace(_GarbageNode):  # ReActor's face-restore node's class name: a heavy node by default
    """Stand-in: restores faces frame by frame, leaving the per-frame face records behind as cyclic garbage."""


class MemhooksPressureOrdinary(_GarbageNode):
    """An ordinary node (no heavy-node rule matches it) that leaves the same garbage behind."""


class MemhooksPressureBatches:
    """One long node that works in batches, each leaving its records behind as cyclic garbage."""

    CATEGORY = "memhooks_pressure_test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "value": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                "batches": ("INT", {"default": 10, "min": 1, "max": 10000}),
                "frames": ("INT", {"default": 10, "min": 1, "max": 10000}),
                "frame_mb": ("INT", {"default": 20, "min": 1, "max": 4096}),
                "work_seconds": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 600.0}),
            }
        }

    def run(self, value: int, batches: int, frames: int, frame_mb: int, work_seconds: float) -> tuple[int]:
        for batch in range(batches):
            _process_batch(frames, frame_mb, value * 1000 + batch, work_seconds)
        return (value + 1,)


class MemhooksPressureHold:
    """Holds live data in a module global (a cache that really is in use): nothing for a cleanup to free."""

    CATEGORY = "memhooks_pressure_test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)
    HELD: ClassVar[list[np.ndarray]] = []

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "value": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                "megabytes": ("INT", {"default": 100, "min": 1, "max": 65536}),
            }
        }

    def run(self, value: int, megabytes: int) -> tuple[int]:
        MemhooksPressureHold.HELD.append(_frame(megabytes, value))
        return (value + 1,)


class MemhooksPredictGarbage:
    """Leaves ``megabytes`` of cyclic garbage in CPython's oldest generation, and nothing else behind.

    The cycle is moved there on purpose (a young collection while it is alive), with only a handful of container
    allocations: the pack's other nodes allocate thousands, enough on some ComfyUI versions to trigger a full
    collection by themselves, and a test that needs the garbage to stay until something collects it cannot
    depend on that.
    """

    CATEGORY = "memhooks_pressure_test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "value": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                "megabytes": ("INT", {"default": 100, "min": 1, "max": 65536}),
            }
        }

    def run(self, value: int, megabytes: int) -> tuple[int]:
        cycle: dict[str, Any] = {"data": bytes([value % 251 + 1]) * (megabytes * MIB)}
        cycle["self"] = cycle
        gc.collect(1)  # it is alive: the collection of the young generations moves it to the oldest
        return (value + 1,)


class MemhooksPredictFrames:
    """A video decoder's stand-in: decodes ``frames`` frames of ``width`` x ``height`` (4 bytes a pixel) and returns
    them, held in ComfyUI's cache as a decoder's IMAGE batch is. No heavy-node rule matches its class.

    The frames are written in one ``bytes`` repetition, which holds the GIL: no other thread of the process (a
    memory watchdog) runs while they are allocated, so only what was freed before the node starts can make room.
    """

    CATEGORY = "memhooks_pressure_test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT", "MEMHOOKS_FRAMES")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "value": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                "frames": ("INT", {"default": 10, "min": 1, "max": 100000}),
                "width": ("INT", {"default": 64, "min": 1, "max": 16384}),
                "height": ("INT", {"default": 64, "min": 1, "max": 16384}),
            }
        }

    def run(self, value: int, frames: int, width: int, height: int) -> tuple[int, bytes]:
        return (value + 1, bytes([value % 251 + 1]) * (frames * width * height * 4))


class MemhooksSpike:
    """A node whose working memory peaks while it runs and is given back before it returns, as a VAE decode of a
    video batch, an upscaler or a video encoder does: ``megabytes`` taken in one ``bytes`` repetition (which holds
    the GIL, so no watchdog runs meanwhile), read, and dropped. What it leaves behind is nothing; what it needs is
    all of it at once. No heavy-node rule matches its class."""

    CATEGORY = "memhooks_pressure_test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "value": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                "megabytes": ("INT", {"default": 100, "min": 1, "max": 65536}),
            }
        }

    def run(self, value: int, megabytes: int) -> tuple[int]:
        block = bytes([value % 251 + 1]) * (megabytes * MIB)
        last = block[-1]
        del block
        return (value + last,)


class MemhooksPressureSink:
    """The output node that ends a chain."""

    CATEGORY = "memhooks_pressure_test"
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    def run(self, value: int) -> dict[str, Any]:
        return {"ui": {"text": [str(value)]}}


NODE_CLASS_MAPPINGS = {
    "ReActorRestoreFace": ReActorRestoreFace,
    "MemhooksPressureOrdinary": MemhooksPressureOrdinary,
    "MemhooksPressureBatches": MemhooksPressureBatches,
    "MemhooksPressureHold": MemhooksPressureHold,
    "MemhooksPredictGarbage": MemhooksPredictGarbage,
    "MemhooksPredictFrames": MemhooksPredictFrames,
    "MemhooksSpike": MemhooksSpike,
    "MemhooksPressureSink": MemhooksPressureSink,
}
