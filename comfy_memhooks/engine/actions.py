"""The cleanup actions, each one small, named and documented; the list each mode runs; the escalation ladder.

An action frees memory of this process only; nothing here touches another process. It returns what it did in
words, or why it was skipped; the engine measures what it freed and how long it took, and catches its failures.
ComfyUI and torch are used as this process already loaded them (``sys.modules``), so outside ComfyUI the ComfyUI
actions say they were skipped instead of importing anything.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..comfyui_modules.models import comfy_model_management
from ..probe.backends import loaded_torch, torch_backend
from ..probe.readings import GIB, GpuBackend, MemorySnapshot, RamReading
from .comfy_cache import SeenCaches
from .comfy_cache import release as release_comfy_cache
from .comfy_release import PromptReleaseWatch
from .heap import find_heap_release
from .last_rung import drop_reactor_faces, free_comfy_models_for_ram, unload_reactor_models
from .modes import MODE_STRENGTH, Mode
from .reactor import NOT_LOADED, drop_faces, reactor_modules, unload_models

logger = logging.getLogger(__name__)

NOT_IN_COMFYUI = "ComfyUI is not loaded in this process (comfy.model_management is missing)"
LEFT_TO_COMFYUI = (
    "ComfyUI releases its cache itself after each node and has not had its turn in this prompt yet: left to it"
)
"""Why the boundary's ``comfy_cache_release`` did nothing before a prompt's first node on 0.33 and later; the last
rung then waits too (the next boundary comes after ComfyUI's release)."""
KEPT_FOR_REACTOR = "a ReActor node runs next and would load them again at once: kept"


@dataclass(frozen=True, slots=True)
class ActionContext:
    """What an action may need to decide how much to do.

    Attributes:
        before: the snapshot taken when the optimization started.
        vram_threshold: the VRAM percentage to get back under, when the caller has one.
        ram_threshold: the RAM percentage to get back under, when the caller has one.
        read_ram: reads RAM now: what the actions before this one left is what an action that asks ComfyUI's
            cache for memory must judge.
        caches: ComfyUI's caches as the hook last saw them (the engine's), for the actions that ask its output cache.
        release: ComfyUI's own release after every node, as the engine watches it (0.33 and later).
        before_reactor_node: the cleanup runs just before a ReActor node, which would load ReActor's models
            again at once: the last rung keeps them.
    """

    before: MemorySnapshot
    vram_threshold: float | None
    ram_threshold: float | None = None
    read_ram: Callable[[], RamReading] | None = None
    caches: SeenCaches = field(default_factory=SeenCaches)
    release: PromptReleaseWatch = field(default_factory=PromptReleaseWatch)
    before_reactor_node: bool = False


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """What an action says of itself: a detail, or the reason it did nothing."""

    detail: str | None = None
    skipped_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """A named cleanup step. ``description`` is what the README's modes table says of it.

    ``unloads_models`` marks the steps that take models out of memory: an escalation never adds one of those to a
    mode that did not ask for it.
    """

    name: str
    description: str
    run: Callable[[ActionContext], ActionOutcome]
    unloads_models: bool = False


def _gc_collect(_: ActionContext) -> ActionOutcome:
    return ActionOutcome(detail=f"collected {gc.collect()} objects")


def _gc_collect_until_stable(_: ActionContext) -> ActionOutcome:
    """Collects until a pass finds nothing: freeing one cycle can orphan the next (ten passes at most)."""
    total = 0
    passes = 0
    while passes < 10:
        passes += 1
        collected = gc.collect()
        total += collected
        if collected == 0:
            break
    return ActionOutcome(detail=f"collected {total} objects in {passes} passes")


def _torch_accelerator() -> tuple[Any, GpuBackend | None, str | None]:
    """torch and the accelerator it uses here, or why there is nothing to release."""
    torch = loaded_torch()
    if torch is None:
        return None, None, "torch is not loaded in this process"
    backend = torch_backend(torch)
    if backend is None:
        return None, None, "CUDA is not initialised in this process (nor ROCm, XPU or MPS: nothing is cached)"
    return torch, backend, None


def _gpu_empty_cache(_: ActionContext) -> ActionOutcome:
    """Releases the cache of the backend in use: CUDA's and ROCm's through ``torch.cuda``, MPS's, XPU's."""
    torch, backend, reason = _torch_accelerator()
    if torch is None or backend is None:
        return ActionOutcome(skipped_reason=reason)
    if backend is GpuBackend.MPS:
        torch.mps.empty_cache()
        return ActionOutcome(detail="torch.mps.empty_cache(): released MPS's cached, unused blocks")
    if backend is GpuBackend.XPU:
        torch.xpu.empty_cache()
        return ActionOutcome(detail="torch.xpu.empty_cache(): released XPU's cached, unused blocks")
    torch.cuda.empty_cache()
    if backend is GpuBackend.ROCM:
        return ActionOutcome(detail="released torch's cached, unused ROCm (HIP) blocks through torch.cuda")
    return ActionOutcome(detail="released torch's cached, unused CUDA blocks")


def _cuda_ipc_collect(_: ActionContext) -> ActionOutcome:
    torch, backend, reason = _torch_accelerator()
    if torch is None or backend is None:
        return ActionOutcome(skipped_reason=reason)
    if backend not in (GpuBackend.CUDA, GpuBackend.ROCM):
        return ActionOutcome(skipped_reason=f"ipc_collect is CUDA's and ROCm's; this process uses {backend.label}")
    torch.cuda.ipc_collect()
    return ActionOutcome(detail="released CUDA memory shared with exited processes")


def _comfy_soft_empty_cache(_: ActionContext) -> ActionOutcome:
    model_management = comfy_model_management()
    if model_management is None:
        return ActionOutcome(skipped_reason=NOT_IN_COMFYUI)
    model_management.soft_empty_cache()
    return ActionOutcome(detail="comfy.model_management.soft_empty_cache()")


def _comfy_free_memory_to_threshold(context: ActionContext) -> ActionOutcome:
    """Asks ComfyUI to unload just enough model weights to bring each GPU back under the VRAM threshold."""
    model_management = comfy_model_management()
    if model_management is None:
        return ActionOutcome(skipped_reason=NOT_IN_COMFYUI)
    if context.vram_threshold is None:
        return ActionOutcome(skipped_reason="no VRAM threshold was given")
    if not context.before.gpus:
        return ActionOutcome(skipped_reason="no GPU memory reading")
    torch = loaded_torch()
    if torch is None:
        return ActionOutcome(skipped_reason="torch is not loaded in this process")
    done = []
    for gpu in context.before.gpus:
        percent = context.before.gpu_pressure_percent(gpu)  # under dynamic VRAM, what cannot be evicted on demand
        if percent is None or gpu.total_bytes is None or percent < context.vram_threshold:
            continue
        # ComfyUI unloads until the device's free memory exceeds memory_required.
        required_free = int(gpu.total_bytes * (1 - context.vram_threshold / 100))
        device_type = (gpu.backend or GpuBackend.CUDA).torch_device_type
        unloaded = model_management.free_memory(required_free, torch.device(device_type, gpu.index))
        count = len(unloaded) if isinstance(unloaded, list) else 0
        done.append(
            f"{device_type}:{gpu.index} at {percent:.0f}%: asked for {required_free / GIB:.2f} GB free, "
            f"{count} model(s) unloaded"
        )
    if not done:
        return ActionOutcome(skipped_reason=f"VRAM is under the {context.vram_threshold:g}% threshold")
    return ActionOutcome(detail="; ".join(done))


def _comfy_cache_release(context: ActionContext) -> ActionOutcome:
    """Asks ComfyUI's output cache for RAM while RAM is still over its threshold, before any model is unloaded."""
    if comfy_model_management() is None:
        return ActionOutcome(skipped_reason=NOT_IN_COMFYUI)
    if context.ram_threshold is None or context.read_ram is None:
        return ActionOutcome(skipped_reason="no RAM threshold was given")
    detail, skipped = release_comfy_cache(context.read_ram(), context.ram_threshold, context.caches, context.release)
    return ActionOutcome(detail=detail, skipped_reason=skipped)


def _comfy_cache_release_at_boundary(context: ActionContext) -> ActionOutcome:
    """As :func:`_comfy_cache_release`, after ComfyUI's own release after every node (0.33 and later) has had
    its turn in the prompt: until then the cache is left to it."""
    if context.release.waiting_for_comfyui():
        return ActionOutcome(skipped_reason=LEFT_TO_COMFYUI)
    return _comfy_cache_release(context)


def _comfy_unload_all_models(_: ActionContext) -> ActionOutcome:
    model_management = comfy_model_management()
    if model_management is None:
        return ActionOutcome(skipped_reason=NOT_IN_COMFYUI)
    model_management.unload_all_models()
    return ActionOutcome(detail="comfy.model_management.unload_all_models()")


def _malloc_trim(_: ActionContext) -> ActionOutcome:
    """Returns freed heap pages to the operating system, with the platform's own call (:mod:`.heap`).

    When a node frees many frame-sized buffers while small objects survive between them, glibc keeps the
    freed pages inside the process: ``gc.collect()`` frees the objects, but RSS stays where it was.
    ``malloc_trim(0)`` gives those pages back; macOS's ``malloc_zone_pressure_relief`` and the Windows C
    runtime's ``_heapmin`` do the same for their heaps.
    """
    release, reason = find_heap_release()
    if release is None:
        return ActionOutcome(skipped_reason=reason)
    return ActionOutcome(detail=release())


def _release_reactor_caches(_: ActionContext) -> ActionOutcome:
    """Drops ReActor's face-swap and face-analysis models and its cached faces (:mod:`.reactor`)."""
    modules = reactor_modules()
    if not modules:
        return ActionOutcome(skipped_reason=NOT_LOADED)
    details = []
    for module in modules:
        frames = len(getattr(module, "TARGET_FACES_LIST", None) or ())
        unload_models(module)
        drop_faces(module)
        details.append(f"{module.__name__}: models unloaded, source/target faces and {frames} cached frame(s) dropped")
    return ActionOutcome(detail="; ".join(details))


def _reactor_faces_under_pressure(context: ActionContext) -> ActionOutcome:
    detail, skipped = (None, KEPT_FOR_REACTOR) if context.before_reactor_node else drop_reactor_faces()
    return ActionOutcome(detail=detail, skipped_reason=skipped)


def _reactor_models_under_pressure(context: ActionContext) -> ActionOutcome:
    detail, skipped = (None, KEPT_FOR_REACTOR) if context.before_reactor_node else unload_reactor_models()
    return ActionOutcome(detail=detail, skipped_reason=skipped)


def _comfy_models_for_ram(context: ActionContext) -> ActionOutcome:
    if context.ram_threshold is None or context.read_ram is None:
        return ActionOutcome(skipped_reason="no RAM threshold was given")
    detail, skipped = free_comfy_models_for_ram(context.read_ram(), context.ram_threshold)
    return ActionOutcome(detail=detail, skipped_reason=skipped)


GC_COLLECT = Action("gc_collect", "Python garbage collection (`gc.collect()`)", _gc_collect)
GC_COLLECT_UNTIL_STABLE = Action(
    "gc_collect_until_stable", "full garbage collection, repeated until it collects nothing", _gc_collect_until_stable
)
# The name stays "cuda_empty_cache" (records and signal subscribers key on it); it empties the backend in use.
CUDA_EMPTY_CACHE = Action(
    "cuda_empty_cache",
    "`torch.cuda.empty_cache()` (CUDA, ROCm), `torch.mps.empty_cache()`, `torch.xpu.empty_cache()`: cached blocks "
    "nothing uses",
    _gpu_empty_cache,
)
CUDA_IPC_COLLECT = Action("cuda_ipc_collect", "`torch.cuda.ipc_collect()`", _cuda_ipc_collect)
COMFY_SOFT_EMPTY_CACHE = Action(
    "comfy_soft_empty_cache", "ComfyUI's `soft_empty_cache()` (also MPS, XPU, NPU)", _comfy_soft_empty_cache
)
COMFY_FREE_MEMORY_TO_THRESHOLD = Action(
    "comfy_free_memory_to_threshold",
    "ComfyUI's `free_memory(...)`, asked for just enough to get VRAM under its threshold",
    _comfy_free_memory_to_threshold,
    unloads_models=True,
)
MALLOC_TRIM = Action(
    "malloc_trim",
    "freed heap back to the system: glibc `malloc_trim(0)`, macOS `malloc_zone_pressure_relief`, Windows `_heapmin`",
    _malloc_trim,
)
COMFY_CACHE_RELEASE = Action(
    "comfy_cache_release",
    "ComfyUI's output cache asked for RAM while RAM is over its threshold (`extra_ram_release`, or the RAM-pressure "
    "cache's `poll` with a target read from the container's limit)",
    _comfy_cache_release,
)
COMFY_CACHE_RELEASE_AT_BOUNDARY = Action(
    COMFY_CACHE_RELEASE.name,
    f"{COMFY_CACHE_RELEASE.description}; at a node boundary, only once ComfyUI's own release after every node has "
    "had its turn in the prompt",
    _comfy_cache_release_at_boundary,
)
COMFY_UNLOAD_ALL_MODELS = Action(
    "comfy_unload_all_models", "ComfyUI's `unload_all_models()`", _comfy_unload_all_models, unloads_models=True
)
RELEASE_REACTOR_CACHES = Action(
    "release_reactor_caches",
    "ReActor's face-swap and analysis models and cached faces",
    _release_reactor_caches,
    unloads_models=True,
)

REACTOR_FACES_UNDER_PRESSURE = Action(
    "reactor_faces_under_pressure",
    "under pressure, near the limit: ReActor's cached faces (analysed again on the next swap)",
    _reactor_faces_under_pressure,
    unloads_models=True,
)
REACTOR_MODELS_UNDER_PRESSURE = Action(
    "reactor_models_under_pressure",
    "under pressure, near the limit: ReActor's onnxruntime sessions (reloaded on the next swap)",
    _reactor_models_under_pressure,
    unloads_models=True,
)
COMFY_MODELS_FOR_RAM = Action(
    "comfy_free_memory_for_ram",
    "under pressure, near the limit: ComfyUI's `free_memory(...)` on the CPU, asked for what RAM still misses",
    _comfy_models_for_ram,
    unloads_models=True,
)
LAST_RUNG: tuple[tuple[Action, ...], ...] = (
    (REACTOR_FACES_UNDER_PRESSURE,),
    (REACTOR_MODELS_UNDER_PRESSURE,),
    (COMFY_MODELS_FOR_RAM,),
)
"""The last rung under pressure (:mod:`.last_rung`), cheapest to reload first; each step runs only while RAM is
still at or above its threshold. Just before a ReActor node, ReActor's two steps keep its models and faces."""


_CONSERVATIVE = (GC_COLLECT, CUDA_EMPTY_CACHE)
_BALANCED = (
    GC_COLLECT,
    COMFY_CACHE_RELEASE,
    COMFY_FREE_MEMORY_TO_THRESHOLD,
    CUDA_EMPTY_CACHE,
    CUDA_IPC_COLLECT,
    COMFY_SOFT_EMPTY_CACHE,
    MALLOC_TRIM,
)
# ComfyUI's cache is asked first (its own poll collects garbage first; nothing is reloaded from disk for it); then
# models go, so the collections and cache releases that follow can reclaim what they held.
_AGGRESSIVE = (
    COMFY_CACHE_RELEASE,
    RELEASE_REACTOR_CACHES,
    COMFY_UNLOAD_ALL_MODELS,
    GC_COLLECT_UNTIL_STABLE,
    COMFY_FREE_MEMORY_TO_THRESHOLD,
    CUDA_EMPTY_CACHE,
    CUDA_IPC_COLLECT,
    COMFY_SOFT_EMPTY_CACHE,
    MALLOC_TRIM,
)

MODE_ACTIONS: dict[Mode, tuple[Action, ...]] = {
    Mode.MONITOR_ONLY: (),
    Mode.CONSERVATIVE: _CONSERVATIVE,
    Mode.BALANCED: _BALANCED,
    Mode.AGGRESSIVE: _AGGRESSIVE,
}
"""The fixed list of actions each mode runs, in order."""

MODEL_FREE_ACTIONS: tuple[Action, ...] = (GC_COLLECT, MALLOC_TRIM)
"""The cleanup at a node boundary and from the watchdog under RAM pressure: garbage collection and returning the
heap to the system. No model is unloaded and no CUDA call is made, so it is safe from any thread."""

BOUNDARY_ACTIONS: tuple[Action, ...] = (*MODEL_FREE_ACTIONS, COMFY_CACHE_RELEASE_AT_BOUNDARY)
"""The cleanup before a node under RAM pressure, in ComfyUI's worker thread: the model-free cleanup, then, when RAM
is still over its threshold, ComfyUI's output cache asked for RAM (between nodes, where ComfyUI polls it itself).
Never from the watchdog's thread: ComfyUI's cache is not safe to touch while a node runs."""


def escalation_ladder(mode: Mode) -> list[tuple[Mode, tuple[Action, ...]]]:
    """The steps tried, in order, when ``mode`` left usage over a threshold.

    Each step is the next stronger mode's actions that ``mode`` did not run and that unload no model:
    Conservative climbs to Balanced's (ComfyUI's output cache asked for RAM, ``malloc_trim``, the CUDA cache
    releases) and then to Aggressive's (garbage collection until stable); Balanced to Aggressive's; Aggressive has
    nowhere to go. Models are unloaded only where the mode asked for is Aggressive (or Balanced's unloading down
    to the VRAM threshold).
    """
    ran = {action.name for action in MODE_ACTIONS[mode]}
    ladder = []
    for stronger in Mode:
        if MODE_STRENGTH[stronger] <= MODE_STRENGTH[mode]:
            continue
        step = tuple(a for a in MODE_ACTIONS[stronger] if a.name not in ran and not a.unloads_models)
        ran.update(action.name for action in step)
        if step:
            ladder.append((stronger, step))
    return ladder
