"""The last rung under pressure: the models ComfyUI cannot see, then ComfyUI's own, when nothing else was enough.

A pressure cleanup first runs what unloads no model: garbage collection, the heap back to the system, ComfyUI's
output cache asked for RAM, and the escalation ladder. When RAM is still at or above its threshold after all that
and usage is close to the limit (:func:`near_limit`: at or above :data:`UNLOAD_PERCENT` of the container's limit
inside one, of the machine's RAM where there is none), the next thing the kernel does is kill ComfyUI. Then this
rung releases what reloads fastest first, one step at a time, and stops as soon as RAM is back under its threshold:

1. ReActor's face caches (the next swap analyses its images again: a fraction of a second);
2. ReActor's onnxruntime sessions (about 900 MB with the real models; they reload from disk on the next swap, in
   seconds);
3. ComfyUI's own models in RAM, through ``free_memory`` asked for just what is still missing.

Only where no node is running: in ComfyUI's worker thread, between nodes (the boundary check before a node, a
heavy-node rule before or after its node, the UnifiedMemoryManager node itself), never from the watchdog's thread,
which runs while a node (ReActor's, perhaps) uses those sessions. Just before a ReActor node (its rule's "before"
phase, or the boundary cleanup before it) ReActor's two steps keep what that node is about to use; ComfyUI's models
may still go. At the boundary before a prompt's first node on ComfyUI 0.33 and later, where ComfyUI's output cache
is left to ComfyUI's own release after that node, the cache has not been tried yet: the rung waits for the next
boundary. The setting ``pressure_unloads_models`` turns it off.
"""

from __future__ import annotations

import gc
import sys

from ..comfyui_modules.models import comfy_model_management
from ..probe.ram import host_available_bytes
from ..probe.readings import GIB, MemorySnapshot, RamReading
from .heap import find_heap_release
from .reactor import NOT_LOADED, drop_faces, faces_held, models_held, reactor_modules, unload_models

UNLOAD_PERCENT = 90.0
"""RAM use, in percent of the limit, from which models may be unloaded under pressure (or the RAM threshold, when
it is higher): within a tenth of the limit, where one more frame batch or model load ends in an OOM kill."""

UNLOADED_NOTICE = "ReActor's models unloaded under pressure: they reload on the next swap"
"""What the panel says of a cleanup whose last rung unloaded ReActor's sessions."""


def near_limit(snapshot: MemorySnapshot, ram_threshold: float) -> bool:
    """RAM is at or above its threshold and close to the limit: the last rung may run.

    The limit is the one the reading is against, whatever its source: the container's inside one (cgroup), the
    machine's RAM on a bare host, which is then what the kernel's OOM killer acts on.
    """
    percent = snapshot.ram.percent
    return percent is not None and percent >= max(ram_threshold, UNLOAD_PERCENT)


def rung_for(allowed: bool, ram_threshold: float | None, snapshot: MemorySnapshot) -> tuple[float | None, bool]:
    """The threshold the last rung runs to (``None``: no rung), and whether RAM is near the limit already: then
    the cleanup may unload models, and the effectiveness guard weighs it as such."""
    rung = ram_threshold if allowed else None
    return rung, rung is not None and near_limit(snapshot, rung)


Result = tuple[str | None, str | None]
"""What a step did, or why it did nothing: ``(detail, skipped_reason)``, as the cleanup actions report it."""


def drop_reactor_faces() -> Result:
    """The rung's first step: ReActor's cached faces."""
    modules = reactor_modules()
    holding = [module for module in modules if faces_held(module)]
    if not holding:
        return None, NOT_LOADED if not modules else "ReActor holds no face"
    return "; ".join(f"{module.__name__}: {drop_faces(module)} cached face(s) dropped" for module in holding), None


def unload_reactor_models() -> Result:
    """The rung's second step: ReActor's sessions, then a collection and the heap returned, so that what they held
    is measured as this step's."""
    modules = reactor_modules()
    holding = [module for module in modules if models_held(module)]
    if not holding:
        return None, NOT_LOADED if not modules else "ReActor holds no model"
    said = [f"{module.__name__}: unloaded its {', '.join(unload_models(module))}" for module in holding]
    gc.collect()
    heap_release = find_heap_release()[0]
    if heap_release is not None:
        heap_release()
    return "; ".join(said) + "; they reload on the next swap", None


def free_comfy_models_for_ram(ram: RamReading, ram_threshold: float) -> Result:
    """The rung's last step: ComfyUI's ``free_memory`` asked to unload models held in RAM until what is still
    missing under ``ram_threshold`` is free.

    ``free_memory`` reads the host's available RAM (psutil) for the CPU device; inside a container the target is
    that reading plus the container's shortfall, as for ComfyUI's output cache. Only models loaded on the CPU
    device count (``device.type == "cpu"``): the weights a GPU model keeps in RAM (offloaded, low VRAM) are not
    asked for. ``free_memory`` lists the models it unloaded whole; a partial unload is not listed.
    """
    model_management = comfy_model_management()
    torch = sys.modules.get("torch")
    if model_management is None or torch is None:
        return None, "ComfyUI is not loaded in this process (comfy.model_management is missing)"
    loaded = [
        model
        for model in getattr(model_management, "current_loaded_models", ())
        if getattr(getattr(model, "device", None), "type", None) == "cpu"
    ]
    if not loaded:
        return None, "ComfyUI has no model loaded in RAM"
    if ram.total_bytes is None or ram.available_bytes is None:
        return None, "RAM usage is unknown"
    missing = int(ram.total_bytes * (1 - ram_threshold / 100)) - ram.available_bytes
    if missing <= 0:
        return None, f"RAM is under its {ram_threshold:g}% threshold"
    required = host_available_bytes() + missing
    unloaded = model_management.free_memory(required, torch.device("cpu"))
    said = (
        f"{len(unloaded)} of {len(loaded)} model(s) in RAM unloaded"
        if isinstance(unloaded, list)
        else f"it did not say how many of the {len(loaded)} model(s) in RAM it unloaded"
    )
    return f"free_memory({required / GIB:.2f} GB, cpu) for {missing / GIB:.2f} GB missing: {said}", None
