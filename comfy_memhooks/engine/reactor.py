"""ReActor's caches: its face-swap and face-analysis models and the faces it analysed, which ComfyUI cannot see.

ReActor (Gourieff/ComfyUI-ReActor) keeps them in module globals of its ``scripts/reactor_swapper.py``: ``FS_MODEL``
(the swap model's onnxruntime session), ``ANALYSIS_MODELS`` (the face analysers, one per detection size, each
holding five sessions), and the faces of the last source and target images with their hashes. ComfyUI's model
management does not know them, so nothing in ComfyUI ever frees them. Measured with models the size of the real
ones, the sessions hold about 900 MB after one swap; the faces are a few kilobytes a face, more for a batch.

The module is found by what it holds, under whatever name ReActor's folder gave it; nothing of ReActor is
imported.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

NOT_LOADED = "ReActor is not loaded"

# What identifies ReActor's swapper module whatever folder ReActor was cloned into.
_CACHE_NAMES = ("SOURCE_FACES", "TARGET_FACES", "TARGET_FACES_LIST")
# Its face caches and the value each holds when empty; the hashes go too, so the next swap analyses faces afresh.
_EMPTY_FACES: tuple[tuple[str, Callable[[], Any]], ...] = (
    ("SOURCE_FACES", lambda: None),
    ("SOURCE_IMAGE_HASH", lambda: None),
    ("TARGET_FACES", lambda: None),
    ("TARGET_IMAGE_HASH", lambda: None),
    ("TARGET_FACES_LIST", list),
    ("TARGET_IMAGE_LIST_HASH", list),
)


def is_reactor_node(node_class: str | None) -> bool:
    """A node of ReActor's pack, by the prefix its classes share (``ReActorFaceSwap``, ``ReActorFaceSwapOpt``…),
    as the default heavy-node rule ``ReActor*`` matches them."""
    return node_class is not None and node_class.startswith("ReActor")


class _Found:
    """ReActor's swapper modules as last found, and what ``sys.modules`` was when a scan last found none (its size
    and newest key), so that a record does not pay for a scan (an attribute look-up on every module) while nothing
    changed."""

    modules: tuple[ModuleType, ...] = ()
    scanned_none_at: tuple[int, object] | None = None


def _modules_mark() -> tuple[int, object]:
    """``sys.modules``' size and newest key: an import adds a key at the end (a dict keeps insertion order)."""
    try:
        return len(sys.modules), next(reversed(sys.modules), None)
    except RuntimeError:  # another thread imported something meanwhile: a mark no scan had, so the next one scans
        return len(sys.modules), object()


def _scan() -> tuple[ModuleType, ...]:
    found: dict[int, ModuleType] = {}
    for module in list(sys.modules.values()):
        if module is None:
            continue
        try:
            matches = all(hasattr(module, name) for name in _CACHE_NAMES) and callable(
                getattr(module, "unload_all_models", None)
            )
        except Exception:  # a lazy module can raise anything from __getattr__; it is simply not ReActor.
            continue
        if matches:
            found[id(module)] = module
    return tuple(found.values())


def reactor_modules() -> list[ModuleType]:
    """ReActor's swapper module, found by what it holds, under whatever name its folder gave it.

    Once found it is kept while ``sys.modules`` still holds it (checked by identity, reading no attribute); until
    then ``sys.modules`` is scanned again only when it has changed since the last scan, not on every call.
    """
    modules = _Found.modules
    if modules:
        loaded = {id(module) for module in list(sys.modules.values())}
        if all(id(module) in loaded for module in modules):
            return list(modules)
    mark = _modules_mark()
    if not modules and mark == _Found.scanned_none_at:
        return []
    modules = _scan()
    _Found.modules, _Found.scanned_none_at = modules, None if modules else mark
    return list(modules)


def models_held(module: ModuleType) -> list[str]:
    """The models ``module`` holds, in words: its swap model (by file name) and each face analyser."""
    held = []
    if getattr(module, "FS_MODEL", None) is not None:
        path = getattr(module, "CURRENT_FS_MODEL_PATH", None)
        held.append(f"swap model {os.path.basename(path)}" if isinstance(path, str) else "swap model")
    analysers = getattr(module, "ANALYSIS_MODELS", None)
    if isinstance(analysers, dict):
        held.extend(f"face analysis at {size} px" for size, model in analysers.items() if model is not None)
    return held


def faces_held(module: ModuleType) -> int:
    """How many faces ``module`` keeps: the source's, the target's and each cached frame's."""
    count = 0
    for name in _CACHE_NAMES:
        value = getattr(module, name, None)
        if isinstance(value, (list, tuple)):
            count += sum(len(item) if isinstance(item, (list, tuple)) else 1 for item in value)
    return count


def drop_faces(module: ModuleType) -> int:
    """Empties the face caches; returns how many faces were dropped. The next swap analyses its images again."""
    dropped = faces_held(module)
    for name, empty in _EMPTY_FACES:
        if hasattr(module, name):
            setattr(module, name, empty())
    return dropped


def unload_models(module: ModuleType) -> list[str]:
    """Unloads the sessions with ReActor's own ``unload_all_models()``; returns what was held. They reload on the
    next swap (from disk: seconds, not minutes)."""
    held = models_held(module)
    module.unload_all_models()
    return held


def kept_description() -> str | None:
    """What ReActor still holds, in words, for a record of a cleanup that kept it; ``None`` when it holds nothing."""
    parts = []
    for module in reactor_modules():
        models = models_held(module)
        faces = faces_held(module)
        if models or faces:
            said = ", ".join(models) if models else "no model"
            parts.append(f"ReActor's {said} and {faces} cached face(s)")
    return "; ".join(parts) if parts else None
