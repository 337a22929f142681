"""Recognising an out-of-memory failure, whatever raised it, without importing torch or ComfyUI."""

from __future__ import annotations

import sys

from ..comfyui_modules.models import comfy_model_management


def is_out_of_memory(error: BaseException | None) -> bool:
    """Whether ``error`` means memory ran out: RAM or VRAM, in Python, numpy, torch or ComfyUI.

    - ``MemoryError``, which numpy's ``_ArrayMemoryError`` ("Unable to allocate ...") subclasses;
    - ``torch.cuda.OutOfMemoryError``, when torch is loaded;
    - whatever ComfyUI's own ``comfy.model_management.is_oom(e)`` counts (ComfyUI 0.18 and later: also an
      accelerator error that says it ran out of memory), so every error ComfyUI treats as OOM is rescued alike;
    - before that, ComfyUI's ``OOM_EXCEPTION``.

    Without CUDA ComfyUI sets ``OOM_EXCEPTION`` to ``Exception`` itself, which would match every error (and
    ``is_oom`` with it), so there neither is asked and only a narrower class counts.
    """
    if error is None:
        return False
    if isinstance(error, MemoryError):
        return True
    torch_oom = getattr(getattr(sys.modules.get("torch"), "cuda", None), "OutOfMemoryError", None)
    if isinstance(torch_oom, type) and isinstance(error, torch_oom):
        return True
    model_management = comfy_model_management()
    comfy_oom = getattr(model_management, "OOM_EXCEPTION", None)
    if not isinstance(comfy_oom, type) or comfy_oom in (Exception, BaseException):
        return False
    is_oom = getattr(model_management, "is_oom", None)
    if callable(is_oom):
        try:
            return is_oom(error) is True
        except Exception:  # is_oom touches the device (it discards CUDA's async error); then its class decides.
            pass
    return isinstance(error, comfy_oom)
