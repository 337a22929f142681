"""Recognising an out-of-memory failure, whatever raised it, without importing torch or ComfyUI."""

from __future__ import annotations

import sys


def is_out_of_memory(error: BaseException | None) -> bool:
    """Whether ``error`` means memory ran out: RAM or VRAM, in Python, numpy, torch or ComfyUI.

    - ``MemoryError``, which numpy's ``_ArrayMemoryError`` ("Unable to allocate ...") subclasses;
    - ``torch.cuda.OutOfMemoryError``, when torch is loaded;
    - ComfyUI's ``comfy.model_management.OOM_EXCEPTION``. Without CUDA ComfyUI sets it to ``Exception`` itself,
      which would match every error, so only a narrower class counts.
    """
    if error is None:
        return False
    if isinstance(error, MemoryError):
        return True
    torch_oom = getattr(getattr(sys.modules.get("torch"), "cuda", None), "OutOfMemoryError", None)
    if isinstance(torch_oom, type) and isinstance(error, torch_oom):
        return True
    comfy_oom = getattr(sys.modules.get("comfy.model_management"), "OOM_EXCEPTION", None)
    return isinstance(comfy_oom, type) and comfy_oom not in (Exception, BaseException) and isinstance(error, comfy_oom)
