"""The per-node profile's records: one node's memory before, at its peak and after it ran, and one prompt's nodes.

Frozen and slotted: a record is made in ComfyUI's worker thread and read by the web server's threads, the node's
report and other extensions (the ``node_profiled`` signal) without copying. A figure that was not read is ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from .peaks import PeakMethod


class VramPeakSource(str, Enum):
    """Where a node's VRAM peak comes from: torch's peak counter, or the GPUs' used VRAM before and after."""

    TORCH = "torch"
    NVML = "nvml"


@dataclass(frozen=True, slots=True)
class NodeProfile:
    """One node of one prompt: how long it ran and what memory did around it.

    Attributes:
        node_id, node_class, prompt_id: which node, of which prompt (as the hook's signals name them).
        heavy: the class matches a heavy-node rule; those also get system RAM read afresh and each GPU's used VRAM.
        cached: ComfyUI answered it from its cache; it ran nothing, so its figures are the cache lookup's.
        success: it succeeded (a cached node counts as succeeded).
        started_seconds: when it started, in seconds after its prompt started; ``None`` when that start was missed.
        duration_seconds: from its first entry into ComfyUI's ``execute`` to its end, PENDING re-entries included.
        rss_before_bytes, rss_after_bytes: this process's resident set (``/proc/self/statm``).
        ram_used_before_bytes, ram_used_after_bytes: the system's RAM in use, or the container's inside one with
            a limit; read afresh for heavy nodes, else the RAM probe's latest reading (the pressure watchdog takes
            one every 250 ms while a prompt runs), so for a short ordinary node both may be the same reading.
        torch_allocated_before_bytes, torch_allocated_after_bytes, torch_reserved_before_bytes,
        torch_reserved_after_bytes: torch's CUDA caching allocator on the current device
            (``torch.cuda.memory_allocated()``, ``memory_reserved()``); ``None`` until torch has initialised CUDA.
        torch_peak_allocated_bytes: the most torch had allocated while the node ran (its peak counter is reset
            before the node and read after it).
        gpu_used_before_bytes, gpu_used_after_bytes: each GPU's used VRAM, all processes (``nvidia-smi
            --query-gpu=memory.used``), for heavy nodes only; empty when not read.
        rss_peak_bytes: this process's resident set at its highest while the node ran (:mod:`.peaks`); ``None``
            when not measured (a cached node ran nothing to measure).
        ram_peak_method: how ``rss_peak_bytes`` was measured: ``hwm`` (exact), ``cgroup`` (where the process's mark
            is refused: its start plus the container's peak growth, which counts page cache and other processes
            too, so at most), ``sampled`` (the highest reading taken meanwhile, so at least); ``None`` when not
            measured.
        container_before_bytes, container_peak_bytes: the container's memory usage as its OOM killer counts it
            (page cache included) as the node started, and at its highest while it ran; ``None`` where the
            container's peak counter cannot be reset.
    """

    node_id: str
    node_class: str
    prompt_id: str
    heavy: bool
    cached: bool
    success: bool
    started_seconds: float | None
    duration_seconds: float
    rss_before_bytes: int | None
    rss_after_bytes: int | None
    ram_used_before_bytes: int | None
    ram_used_after_bytes: int | None
    torch_allocated_before_bytes: int | None = None
    torch_allocated_after_bytes: int | None = None
    torch_reserved_before_bytes: int | None = None
    torch_reserved_after_bytes: int | None = None
    torch_peak_allocated_bytes: int | None = None
    gpu_used_before_bytes: tuple[int | None, ...] = ()
    gpu_used_after_bytes: tuple[int | None, ...] = ()
    rss_peak_bytes: int | None = None
    ram_peak_method: PeakMethod | None = None
    container_before_bytes: int | None = None
    container_peak_bytes: int | None = None

    @property
    def rss_delta_bytes(self) -> int | None:
        """What the node left in this process's RAM (negative when it freed more than it kept)."""
        if self.rss_before_bytes is None or self.rss_after_bytes is None:
            return None
        return self.rss_after_bytes - self.rss_before_bytes

    @property
    def ram_left_bytes(self) -> int | None:
        """The RAM the node left behind: the resident set's growth from its start to its end, 0 when it shrank."""
        delta = self.rss_delta_bytes
        return None if delta is None else max(delta, 0)

    @property
    def ram_peak_bytes(self) -> int | None:
        """The RAM the node needed while it ran: its resident set at its highest, above what it was at the start.

        Memory a node takes and gives back before it returns counts here, not in :attr:`ram_left_bytes`. Without
        a peak reading (``ram_peak_method`` ``None``), what it left behind is all that is known.
        """
        # Read for every node (predictive cleanup learns from it), so the figures are read here, not through the
        # other properties.
        before, after, peak = self.rss_before_bytes, self.rss_after_bytes, self.rss_peak_bytes
        if before is None:
            return None
        left = 0 if after is None else after - before
        if peak is None:
            return None if after is None else max(left, 0)
        return max(peak - before, left, 0)

    @property
    def container_peak_added_bytes(self) -> int | None:
        """The container's usage at its highest while the node ran, above its usage at the start (OOM's view)."""
        if self.container_peak_bytes is None or self.container_before_bytes is None:
            return None
        return max(self.container_peak_bytes - self.container_before_bytes, 0)

    @property
    def vram_peak_source(self) -> VramPeakSource | None:
        if self.torch_peak_allocated_bytes is not None and self.torch_allocated_before_bytes is not None:
            return VramPeakSource.TORCH
        if self._gpu_deltas():
            return VramPeakSource.NVML
        return None

    @property
    def vram_peak_bytes(self) -> int | None:
        """The VRAM the node added at its peak, above what was in use when it started.

        From torch's peak counter (peak allocated minus allocated before) where torch has CUDA; else the growth of
        the GPUs' used VRAM from before to after, summed, 0 when it shrank (heavy nodes only); else ``None``.
        Measured from the node's start, so models that were already loaded are not charged to every node.
        """
        peak, before = self.torch_peak_allocated_bytes, self.torch_allocated_before_bytes
        if peak is not None and before is not None:
            return max(peak - before, 0)
        if not self.gpu_used_before_bytes:  # an ordinary node without CUDA, the most common case: nothing to add up
            return None
        deltas = self._gpu_deltas()
        return max(sum(deltas), 0) if deltas else None

    def _gpu_deltas(self) -> list[int]:
        pairs = zip(self.gpu_used_before_bytes, self.gpu_used_after_bytes, strict=False)
        return [after - before for before, after in pairs if before is not None and after is not None]


class _NodeProfileSlots:
    """A :class:`NodeProfile`'s slots, on a class that sets them by plain assignment (:func:`new_node_profile`)."""

    __slots__ = NodeProfile.__slots__


def new_node_profile(
    node_id: str,
    node_class: str,
    prompt_id: str,
    heavy: bool,
    cached: bool,
    success: bool,
    started_seconds: float | None,
    duration_seconds: float,
    rss_before_bytes: int | None,
    rss_after_bytes: int | None,
    ram_used_before_bytes: int | None,
    ram_used_after_bytes: int | None,
    torch_allocated_before_bytes: int | None,
    torch_allocated_after_bytes: int | None,
    torch_reserved_before_bytes: int | None,
    torch_reserved_after_bytes: int | None,
    torch_peak_allocated_bytes: int | None,
    gpu_used_before_bytes: tuple[int | None, ...],
    gpu_used_after_bytes: tuple[int | None, ...],
    rss_peak_bytes: int | None,
    ram_peak_method: PeakMethod | None,
    container_before_bytes: int | None,
    container_peak_bytes: int | None,
) -> NodeProfile:
    """The record ``NodeProfile(...)`` makes of the same arguments (every field, in order), at a seventh of the cost.

    The recorder makes one for every node ComfyUI runs. A frozen dataclass's own ``__init__`` sets each of the 23
    fields through ``object.__setattr__``, some 1,400 instructions a field in CPython 3.11; here they are assigned
    plainly on a class with the same slots, which then becomes a NodeProfile (CPython allows ``__class__`` to change
    between two classes of the same layout), frozen like any other from then on.
    """
    record: Any = _NodeProfileSlots()  # its attributes are NodeProfile's slots, which mypy does not see here
    record.node_id = node_id
    record.node_class = node_class
    record.prompt_id = prompt_id
    record.heavy = heavy
    record.cached = cached
    record.success = success
    record.started_seconds = started_seconds
    record.duration_seconds = duration_seconds
    record.rss_before_bytes = rss_before_bytes
    record.rss_after_bytes = rss_after_bytes
    record.ram_used_before_bytes = ram_used_before_bytes
    record.ram_used_after_bytes = ram_used_after_bytes
    record.torch_allocated_before_bytes = torch_allocated_before_bytes
    record.torch_allocated_after_bytes = torch_allocated_after_bytes
    record.torch_reserved_before_bytes = torch_reserved_before_bytes
    record.torch_reserved_after_bytes = torch_reserved_after_bytes
    record.torch_peak_allocated_bytes = torch_peak_allocated_bytes
    record.gpu_used_before_bytes = gpu_used_before_bytes
    record.gpu_used_after_bytes = gpu_used_after_bytes
    record.rss_peak_bytes = rss_peak_bytes
    record.ram_peak_method = ram_peak_method
    record.container_before_bytes = container_before_bytes
    record.container_peak_bytes = container_peak_bytes
    record.__class__ = NodeProfile  # the same slots: see the docstring
    profile: NodeProfile = record
    return profile


@dataclass(frozen=True, slots=True)
class PromptProfile:
    """One prompt's nodes, in the order they finished.

    Attributes:
        prompt_id: ComfyUI's prompt id.
        started_at: wall-clock time (``time.time()``) when the prompt started.
        finished: the prompt has ended; a prompt still running is shown with the nodes finished so far.
        success: whether it succeeded; ``None`` while it runs.
        duration_seconds: the prompt's run time; ``None`` while it runs.
        nodes: each finished node's profile.
        nodes_dropped: nodes not kept because the prompt had more than the profile keeps per prompt.
    """

    prompt_id: str
    started_at: float
    finished: bool
    success: bool | None
    duration_seconds: float | None
    nodes: tuple[NodeProfile, ...]
    nodes_dropped: int = 0

    def heaviest(self, limit: int = 5) -> tuple[NodeProfile, ...]:
        """The nodes that needed the most memory while they ran, RAM and VRAM peaks together; nodes that needed
        none left out."""
        weighed = [(_added(node), node) for node in self.nodes]
        weighed.sort(key=lambda pair: pair[0], reverse=True)
        return tuple(node for added, node in weighed[:limit] if added > 0)

    def peak_vram_by_class(self) -> dict[str, int]:
        """Each class's largest VRAM peak among its nodes (:attr:`NodeProfile.vram_peak_bytes`); classes whose
        nodes have none are left out. Cached nodes ran nothing and are left out too."""
        return _max_by_class(self.nodes, "vram_peak_bytes")

    def peak_ram_by_class(self) -> dict[str, int]:
        """Each class's largest RAM peak among its nodes (:attr:`NodeProfile.ram_peak_bytes`), cached ones left out."""
        return _max_by_class(self.nodes, "ram_peak_bytes")


def _added(node: NodeProfile) -> int:
    return (node.vram_peak_bytes or 0) + (node.ram_peak_bytes or 0)


def _max_by_class(nodes: tuple[NodeProfile, ...], figure: str) -> dict[str, int]:
    peaks: dict[str, int] = {}
    for node in nodes:
        value = getattr(node, figure)
        if value is None or node.cached:
            continue
        if value > peaks.get(node.node_class, -1):
            peaks[node.node_class] = value
    return peaks
