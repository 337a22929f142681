"""Predictive cleanup: before a node whose class was seen, free just enough for its learned peak to fit.

Thresholds act once memory is already short; a node that needs more than the room left is killed before a
threshold is crossed, or while it allocates. Here each class's peak RAM and VRAM while it runs (not what it leaves
behind: a decoder may take gigabytes and give them back before it returns) are learned from the per-node profile
(``node_profiled``; cached and failed nodes teach nothing), scaled by what sets them where that is
visible (:mod:`.workloads`). Before a node of a learned class starts, its predicted peak is compared with what is
free under the limit (the container's, inside one; each GPU's); when it does not fit, the weakest cleanup that
may make room runs first (garbage collection, the heap back to the system, torch's cache), and only if that left
it short, ComfyUI is asked to unload models for exactly what is still missing (``free_memory``). A class never
seen is left to the thresholds. Receivers run in ComfyUI's worker thread, contained by ``signals.send_safely``;
this module's own failures are counted and logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import signals
from ..comfyui_modules.models import comfy_model_management as _model_management
from ..engine.actions import CUDA_EMPTY_CACHE, MODEL_FREE_ACTIONS, Action, ActionContext, ActionOutcome
from ..engine.comfy_cache import release_until
from ..engine.core import Engine
from ..engine.history import OptimizationRecord, Trigger, TriggerKind
from ..engine.request import CleanupRequest, RoomToMake
from ..failures import Failures
from ..pipeline import EndStep, NodeEnding, NodeInfo, NodePipeline, StartStep, hook_failures
from ..probe.backends import loaded_torch
from ..probe.readings import GIB, GpuBackend, MemorySnapshot, RamReading
from .last_node import RunningNode, RunningNodeFile
from .learned import LearnedPeaks, Prediction, Sample, Workload, new_sample
from .workload import workload_of

logger = logging.getLogger(__name__)

predictive_failures = Failures(
    logger, "predictive cleanup failed while {kind}; the node runs without it", part="predictive"
)
"""Predictive cleanup's contained failures, process-wide: shown in ``/memhooks/status`` and the metrics."""

MIN_PREDICTED_BYTES = 64 * 1024**2
"""A node predicted to take less than this is not worth a reading of memory before it."""


@dataclass(frozen=True, slots=True)
class Shortfall:
    """A resource a node is predicted not to fit in.

    Attributes:
        resource: ``RAM`` or ``VRAM``.
        predicted_bytes: the node's predicted peak, margin included.
        headroom_bytes: what is free under the limit now (the container's, or the GPU's).
        gpu_index: the GPU, for VRAM.
        device_type: the GPU's device type to torch (``cuda`` for CUDA and ROCm, ``xpu``), for VRAM.
    """

    resource: str
    predicted_bytes: int
    headroom_bytes: int
    gpu_index: int | None = None
    device_type: str | None = None

    @property
    def missing_bytes(self) -> int:
        return self.predicted_bytes - self.headroom_bytes


def _ram_headroom(ram: RamReading) -> int | None:
    """What can still be allocated under the limit: the container's inside one (``available_bytes``)."""
    if ram.available_bytes is not None:
        return ram.available_bytes
    if ram.total_bytes is None or ram.used_bytes is None:
        return None
    return ram.total_bytes - ram.used_bytes


def _device_type(snapshot: MemorySnapshot, gpu_index: int) -> str:
    for gpu in snapshot.gpus:
        if gpu.index == gpu_index:
            return (gpu.backend or GpuBackend.CUDA).torch_device_type
    return GpuBackend.CUDA.torch_device_type


def _vram_headroom(snapshot: MemorySnapshot, gpu_index: int) -> int | None:
    for gpu in snapshot.gpus:
        if gpu.index == gpu_index:
            if gpu.free_bytes is not None:
                return gpu.free_bytes
            if gpu.total_bytes is not None and gpu.used_bytes is not None:
                return gpu.total_bytes - gpu.used_bytes
    return None


def shortfalls(prediction: Prediction, snapshot: MemorySnapshot, gpu_index: int = 0) -> list[Shortfall]:
    """The resources ``prediction`` does not fit in, by ``snapshot``; empty when it fits (or nothing is known)."""
    found = []
    ram = _ram_headroom(snapshot.ram)
    if prediction.ram_bytes is not None and ram is not None and prediction.ram_bytes > ram:
        found.append(Shortfall("RAM", prediction.ram_bytes, ram))
    vram = _vram_headroom(snapshot, gpu_index)
    if prediction.vram_bytes is not None and vram is not None and prediction.vram_bytes > vram:
        found.append(Shortfall("VRAM", prediction.vram_bytes, vram, gpu_index, _device_type(snapshot, gpu_index)))
    return found


def comfy_gpu_index() -> int:
    """The GPU ComfyUI runs on (``model_management.get_torch_device()``), 0 outside ComfyUI or on the CPU."""
    model_management = _model_management()
    try:
        index = None if model_management is None else model_management.get_torch_device().index
    except Exception:  # any ComfyUI version's failure here only means: the first GPU.
        return 0
    return index if isinstance(index, int) else 0


def free_exactly(shortfall: Shortfall, headroom: Callable[[], int | None]) -> Action:
    """Asks ComfyUI to unload models until exactly what is still missing for the node is free on its device.

    ComfyUI's ``free_memory(required, device)`` unloads until its own reading of the device's free memory exceeds
    ``required``; that reading is not the container's (it is the host's for the CPU), so it is asked for its
    reading plus what is missing under our limit now.
    """

    def run(_: ActionContext) -> ActionOutcome:
        model_management = _model_management()
        torch = loaded_torch()
        if model_management is None or torch is None:
            return ActionOutcome(skipped_reason="ComfyUI (and its torch) is not loaded in this process")
        free_now = headroom()
        if free_now is None:
            return ActionOutcome(skipped_reason=f"no {shortfall.resource} reading")
        missing = shortfall.predicted_bytes - free_now
        if missing <= 0:
            return ActionOutcome(skipped_reason="it fits already")
        if shortfall.gpu_index is None:
            device = torch.device("cpu")
        else:  # the backend's own device type, as the actions use it: an XPU is no cuda device
            device = torch.device(shortfall.device_type or "cuda", shortfall.gpu_index)
        required = int(model_management.get_free_memory(device)) + missing
        unloaded = model_management.free_memory(required, device)
        count = len(unloaded) if isinstance(unloaded, list) else 0
        return ActionOutcome(detail=f"asked ComfyUI for {missing / GIB:.2f} GB more free on {device}: {count} model(s)")

    return Action(f"comfy_free_memory_{shortfall.resource.lower()}", "ComfyUI's free_memory(...)", run, True)


def release_cache_for(shortfall: Shortfall, read_ram: Callable[[], RamReading]) -> Action:
    """Asks ComfyUI's output cache for the RAM the node still misses, before any model is unloaded.

    Cached outputs cost a node run again at worst; a model costs a reload. Outputs the running prompt still uses are
    kept (see :mod:`.comfy_cache`).
    """

    def run(context: ActionContext) -> ActionOutcome:
        if _model_management() is None:
            return ActionOutcome(skipped_reason="ComfyUI is not loaded in this process")
        detail, skipped = release_until(read_ram(), shortfall.predicted_bytes, context.caches, context.release)
        return ActionOutcome(detail=detail, skipped_reason=skipped)

    return Action("comfy_cache_release", "ComfyUI's output cache asked for what the node still misses", run)


def _describe(shortfall: Shortfall, prediction: Prediction) -> str:
    return (
        f"predicted {shortfall.resource} peak {shortfall.predicted_bytes / GIB:.2f} GB ({prediction.basis}) > "
        f"{shortfall.headroom_bytes / GIB:.2f} GB free"
    )


class PredictiveCleanup:
    """Learns peaks from the profile and makes room before the nodes of learned classes.

    Args:
        engine: runs the cleanup and keeps it in the history.
        table: the learned peaks.
        enabled: read at each node (the ``predictive_cleanup`` setting); off, nothing is learned or predicted.
        save: called when a prompt finishes, to keep what was learned (``LearnedFile.save``).
        gpu_index: the GPU the nodes use.
        pipeline: where its step goes; the runtime's (:mod:`..comfy.runtime`); one of its own by default.
        running: where the node running now is kept, so that a ComfyUI killed in it learns it (:mod:`.last_node`).
    """

    def __init__(
        self,
        engine: Engine,
        table: LearnedPeaks,
        *,
        enabled: Callable[[], bool] = lambda: True,
        save: Callable[[], object] = lambda: None,
        gpu_index: Callable[[], int] = comfy_gpu_index,
        pipeline: NodePipeline | None = None,
        running: RunningNodeFile | None = None,
    ):
        self.pipeline = pipeline if pipeline is not None else NodePipeline(hook_failures)
        self.running = running
        self.engine = engine
        self.table = table
        self.enabled = enabled
        self.save = save
        self.gpu_index = gpu_index
        self.failures = predictive_failures
        self._workloads: dict[str, Workload] = {}
        self._predicted: dict[str, Prediction] = {}

    def connect(self) -> None:
        """Puts its step into the per-node pipeline, after the heavy-node rules and before the profile's "before"
        reading (so what it frees is not charged to the node), and subscribes to the prompt signals and to
        ``node_profiled``, whose order among receivers does not matter to it."""
        self.pipeline.set_start(StartStep.PREDICTIVE, self.on_node_started)
        self.pipeline.set_end(EndStep.PREDICTIVE, self.after_node)
        signals.prompt_started.connect(self.on_prompt_started, weak=False)
        signals.node_profiled.connect(self.on_node_profiled, weak=False)
        signals.prompt_finished.connect(self.on_prompt_finished, weak=False)

    def disconnect(self) -> None:
        self.pipeline.clear(StartStep.PREDICTIVE, self.on_node_started)
        self.pipeline.clear(EndStep.PREDICTIVE, self.after_node)
        signals.prompt_started.disconnect(self.on_prompt_started)
        signals.node_profiled.disconnect(self.on_node_profiled)
        signals.prompt_finished.disconnect(self.on_prompt_finished)

    def on_prompt_started(self, sender: Any, **_: Any) -> None:
        self._workloads = {}
        self._predicted = {}

    def on_node_started(self, run: NodeInfo, cached: bool | None) -> None:
        """The pipeline's step before a node: remembers what sets its memory, and makes room for its peak."""
        if not self.enabled():
            return
        key = str(run.node_id)
        inputs = run.inputs
        workload = workload_of(inputs, self._workloads.get) if inputs is not None else None
        if workload is not None:
            self._workloads[key] = workload
        node_class = run.node_class
        if not cached and node_class in self.table:
            try:
                self.before_node(key, node_class, workload)
            except Exception as error:  # a failed prediction or cleanup must not stop the node from running.
                self.failures.record("making room before a node", error)
        running = self.running
        if running is not None and not cached:
            # The RAM probe's latest reading (the watchdog's, every 250 ms or faster in a prompt): no probe here.
            last = getattr(getattr(self.engine.probe, "ram", None), "last", None)
            free = None if last is None else last.available_bytes
            if workload is None:
                running.started(node_class, key, free, None, None)
            else:
                running.started(node_class, key, free, workload.kind, workload.units)

    def after_node(self, run: NodeInfo, ending: NodeEnding) -> None:
        """The pipeline's step after a node: it is no longer the node a crash would stop in."""
        if self.running is not None:
            self.running.finished()

    def learn_from_crash(self, left: RunningNode) -> None:
        """The previous ComfyUI stopped while ``left`` ran: it needed more than the room it had then.

        Learned as a lower bound of the class's peak (like a run that only showed what it left behind), so the
        next run of that class gets room made before it and its first measured peak replaces the guess.
        """
        free = "unknown" if left.free_bytes is None else f"{left.free_bytes / GIB:.2f} GB"
        logger.warning(
            "comfy_memhooks: ComfyUI last stopped while %s #%s ran (%s of RAM free as it started; an OOM kill "
            "stops it so); predictive cleanup makes room before that node from now on",
            left.node_class,
            left.node_id,
            free,
        )
        if left.free_bytes is None or not self.enabled():
            return
        workload = None
        if left.workload_kind is not None and left.workload_units:
            workload = Workload(left.workload_kind, left.workload_units)
        self.table.learn(left.node_class, Sample(left.free_bytes, None, workload, ram_is_peak=False))

    def before_node(self, node_id: str, node_class: str, workload: Workload | None) -> OptimizationRecord | None:
        """Frees just enough for the node's predicted peak to fit; ``None`` when it fits or nothing ran."""
        if self.table.never_reaches(node_class, MIN_PREDICTED_BYTES):
            return None  # too small to act on whatever the run: not even predicted
        prediction = self.table.predict(node_class, workload)
        if prediction is None:
            return None
        self._predicted[node_id] = prediction
        ram = (prediction.ram_bytes or 0) >= MIN_PREDICTED_BYTES
        vram = (prediction.vram_bytes or 0) >= MIN_PREDICTED_BYTES
        if not (ram or vram):
            return None
        gpu_index = self.gpu_index() if vram else 0
        if vram:
            reading = self.engine.snapshot()
            short = shortfalls(prediction, reading, gpu_index)
        else:
            headroom = _ram_headroom(self.engine.probe.read_ram())
            fits = headroom is None or prediction.ram_bytes is None or prediction.ram_bytes <= headroom
            short = [] if fits else [Shortfall("RAM", prediction.ram_bytes or 0, headroom or 0)]
        if not short:
            return None
        first = short[0]
        reason = f"{node_class} #{node_id}: " + "; ".join(_describe(item, prediction) for item in short)
        trigger = Trigger(
            kind=TriggerKind.PREDICTIVE,
            reason=reason,
            node_id=node_id,
            node_class=node_class,
            phase="before",
            predicted_bytes=first.predicted_bytes,
            headroom_bytes=first.headroom_bytes,
        )
        room = RoomToMake(self.steps(short), lambda snapshot: bool(shortfalls(prediction, snapshot, gpu_index)))
        return self.engine.run(CleanupRequest(trigger=trigger, room=room)).record

    def steps(self, short: list[Shortfall]) -> list[tuple[Action, ...]]:
        """The model-free cleanup first; then, for RAM, ComfyUI's output cache; only then, for each resource still
        short, ComfyUI's unloading of just enough. Each step runs only while the node still does not fit."""
        model_free: tuple[Action, ...] = MODEL_FREE_ACTIONS
        if any(item.resource == "VRAM" for item in short):
            model_free = (*model_free, CUDA_EMPTY_CACHE)
        steps = [model_free]
        ram_short = [item for item in short if item.gpu_index is None]
        if ram_short:
            steps.append((release_cache_for(ram_short[0], self.engine.probe.read_ram),))
        steps.append(tuple(free_exactly(item, self._headroom_reader(item)) for item in short))
        return steps

    def _headroom_reader(self, shortfall: Shortfall) -> Callable[[], int | None]:
        if shortfall.gpu_index is None:
            return lambda: _ram_headroom(self.engine.probe.read_ram())
        index = shortfall.gpu_index
        return lambda: _vram_headroom(self.engine.snapshot(), index)

    def on_node_profiled(self, sender: Any, *, profile: Any, **_: Any) -> None:
        predicted = self._predicted.pop(profile.node_id, None)
        if profile.cached or not profile.success or not self.enabled():
            return
        measured = profile.ram_peak_method is not None  # else only what it left behind is known
        ram, vram = profile.ram_peak_bytes, profile.vram_peak_bytes
        if ram is None and vram is None:
            return
        sample = new_sample(ram, vram, self._workloads.get(profile.node_id), measured)
        self.table.learn(profile.node_class, sample, predicted)

    def on_prompt_finished(self, sender: Any, **_: Any) -> None:
        self._workloads = {}
        self._predicted = {}
        if self.running is not None:  # nodes still pending when a prompt fails get no end
            self.running.finished()
        try:
            self.save()
        except Exception as error:  # keeping what was learned is best effort; the prompt has finished either way.
            self.failures.record("saving what was learned", error)
