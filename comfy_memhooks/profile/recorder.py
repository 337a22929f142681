"""The recorder: turns every node into a profile record of its memory before, at its peak and after, in a store.

``prompt_started`` opens a prompt and ``prompt_finished`` closes it (signals, whose order does not matter here).
The node's figures come from the per-node pipeline (:mod:`..pipeline`), not from signals, because their place is
fixed: the "before" reading is the last step before a node, after every cleanup that makes room for it, so what
was freed is not charged to the node, and it resets the RAM peak counters (:mod:`.peaks`) last of all; the "after"
reading is the first step after it, before the heavy-node rule cleans up, so what the node left behind is seen.
The completed record goes to the store and out on the ``node_profiled`` signal. The hook makes one start and one
end per node however often ComfyUI re-enters it (PENDING), so a node is recorded once.

Heavy nodes also get the system's RAM read afresh and each GPU's used VRAM; every node costs a read of
``/proc/self/statm``, a reset and a read of the peak counters and, with CUDA, torch's counters. A node ComfyUI
answers from its cache runs nothing, so no RAM peak is measured for it (``ram_peak_method`` ``None``): one known to
be cached as it starts (a heavy node, whose cache is looked up) costs the peak counters nothing, one found cached
only at its end has its span closed without a read.

Receivers run in ComfyUI's worker thread, each call contained by :func:`signals.send_safely`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .. import signals
from ..failures import Failures
from ..pipeline import EndStep, NodeEnding, NodeInfo, NodePipeline, StartStep, hook_failures
from .peaks import PeakSpan, RamPeak, RamPeaks
from .records import NodeProfile, new_node_profile
from .sampling import ResidentSet, TorchCounters
from .store import ProfileStore

logger = logging.getLogger(__name__)

profile_failures = Failures(logger, "the node profile failed while {kind}; nodes run without it", part="profile")
"""The per-node profile's contained failures, process-wide: shown in ``/memhooks/status`` and the metrics."""

HeavyReading = Callable[[], tuple[int | None, tuple[int | None, ...]]]
"""A fresh reading for a heavy node: the system's (or container's) RAM used, and each GPU's used VRAM."""


_NOT_SEEN = object()


def _unknown_ram() -> int | None:
    return None


class _Before:
    """A node's figures as it started; one is made per node, so a plain slotted class."""

    __slots__ = ("allocated", "cuda", "gpus", "heavy", "node_class", "peak", "ram_used", "reserved", "rss", "started")

    def __init__(
        self, node_class: str, heavy: bool, rss: int | None, ram_used: int | None, gpus: tuple[int | None, ...]
    ):
        self.node_class = node_class
        self.heavy = heavy
        self.rss = rss
        self.ram_used = ram_used
        self.gpus = gpus
        self.started = 0.0  # set last, once every reading is taken
        self.cuda: Any = None
        self.allocated: int | None = None
        self.reserved: int | None = None
        self.peak: PeakSpan | None = None


class ProfileRecorder:
    """Records every node of every prompt into ``store``.

    Args:
        store: where the records go.
        enabled: read at each node's start; while it answers False nothing new is recorded (the ``node_profile``
            setting). A prompt that starts while it is False finds the recorder off its node signals altogether,
            so the hook skips sending them to it: off, the profile costs nothing per node.
        ram_used: the system's or container's RAM in use, cheaply (the RAM probe's latest reading), every node.
        heavy_reading: a fresh reading for heavy nodes; ``None``: heavy nodes are read as ordinary ones.
        resident_set: this process's resident set reader.
        peaks: the RAM peak counters; ``None``: only the readings before and after (no peak).
        pipeline: where its node steps go; the runtime's (:mod:`..comfy.runtime`); one of its own by default.
    """

    def __init__(
        self,
        store: ProfileStore,
        *,
        enabled: Callable[[], bool] = lambda: True,
        ram_used: Callable[[], int | None] = _unknown_ram,
        heavy_reading: HeavyReading | None = None,
        resident_set: ResidentSet | None = None,
        peaks: RamPeaks | None = None,
        pipeline: NodePipeline | None = None,
    ):
        self.store = store
        self.enabled = enabled
        self.ram_used = ram_used
        self.heavy_reading = heavy_reading
        self.resident_set = resident_set if resident_set is not None else ResidentSet()
        self.failures = profile_failures
        self.peaks = peaks
        self.pipeline = pipeline if pipeline is not None else NodePipeline(hook_failures)
        self.torch = TorchCounters(self.failures)
        self._open: dict[Any, _Before] = {}
        self._prompt: tuple[str, float] | None = None  # the prompt recorded now and its start, read at every node
        self._connected = False
        self._listening = False
        self._success: Any = _NOT_SEEN  # ComfyUI's ExecutionResult.SUCCESS, once a node returned it

    def connect(self) -> None:
        """Subscribes to the prompt signals (strongly: bound methods) and puts its steps into the pipeline."""
        if self._connected:
            return
        signals.prompt_started.connect(self.on_prompt_started, weak=False)
        signals.prompt_finished.connect(self.on_prompt_finished, weak=False)
        self._listen_to_nodes(True)
        self._connected = True

    def disconnect(self) -> None:
        signals.prompt_started.disconnect(self.on_prompt_started)
        signals.prompt_finished.disconnect(self.on_prompt_finished)
        self._listen_to_nodes(False)
        self._connected = False
        self.resident_set.close()
        if self.peaks is not None:
            self.peaks.close()

    def _listen_to_nodes(self, listen: bool) -> None:
        if listen == self._listening:
            return
        if listen:
            self.pipeline.set_start(StartStep.PROFILE, self.before_node)
            self.pipeline.set_end(EndStep.PROFILE, self.after_node)
        else:
            self.pipeline.clear(StartStep.PROFILE, self.before_node)
            self.pipeline.clear(EndStep.PROFILE, self.after_node)
        self._listening = listen

    # Prompt receivers and node steps ---------------------------------------------------------------------------------

    def on_prompt_started(self, sender: Any, *, prompt_id: Any, **_: Any) -> None:
        self._open = {}
        if self.peaks is not None:
            self.peaks.clear()
        enabled = self.enabled()
        self._listen_to_nodes(enabled)
        if enabled:
            self._prompt = (str(prompt_id), time.perf_counter())
            self.store.begin(*self._prompt)

    def before_node(self, run: NodeInfo, cached: bool | None) -> None:
        """The pipeline's last step before a node: its "before" figures, and its RAM peak span opened."""
        if self.enabled():
            self._open[run.node_id] = self._before(run.node_class, run.heavy, cached is True)

    def after_node(self, run: NodeInfo, ending: NodeEnding) -> None:
        """The pipeline's first step after a node: its "after" figures and peaks; the record to the store."""
        before = self._open.pop(run.node_id, None)
        if before is None:  # the profile was off when it started, or its start came before the recorder
            return
        profile = self._profile(
            before,
            str(run.node_id),
            str(run.prompt_id),
            ending.cached,
            ending.result,
            ending.error,
            ending.duration_seconds,
        )
        self.store.add(profile)
        signals.send_safely(signals.node_profiled, profile.node_class, profile=profile)

    def on_prompt_finished(
        self, sender: Any, *, prompt_id: Any, success: bool = False, duration_seconds: float = 0.0, **_: Any
    ) -> None:
        self._open = {}  # nodes still pending when a prompt fails get no finish
        if self.peaks is not None:
            self.peaks.clear()
        self._prompt = None
        self.store.end(str(prompt_id), bool(success), float(duration_seconds))

    # Sampling --------------------------------------------------------------------------------------------------------

    def _before(self, node_class: str, heavy: bool, cached: bool) -> _Before:
        gpus: tuple[int | None, ...] = ()
        if heavy and self.heavy_reading is not None:
            ram_used, gpus = self._heavy_reading()
        else:
            ram_used = self.ram_used()
        before = _Before(node_class, heavy, self.resident_set.read(), ram_used, gpus)
        cuda = self.torch.cuda()
        if cuda is not None:
            before.cuda = cuda
            before.allocated, before.reserved = self.torch.before(cuda)
        if self.peaks is not None and not cached:  # last: the peak counts from here
            before.peak = self._begin_peak(before.rss)
        before.started = time.perf_counter()
        return before

    def _begin_peak(self, rss: int | None) -> PeakSpan | None:
        try:
            return self.peaks.begin(rss) if self.peaks is not None else None
        except Exception as error:  # a peak counter's bug leaves the node without a peak; its record stays.
            self.failures.record("resetting the RAM peak counters", error)
            return None

    def _end_peak(self, span: PeakSpan | None, rss: int | None) -> RamPeak | None:
        if span is None or self.peaks is None:
            return None
        try:
            return self.peaks.end(span, rss)
        except Exception as error:  # as in _begin_peak.
            self.failures.record("reading the RAM peak counters", error)
            return None

    def _heavy_reading(self) -> tuple[int | None, tuple[int | None, ...]]:
        try:
            return self.heavy_reading() if self.heavy_reading is not None else (None, ())
        except Exception as error:  # a probe's failure leaves those figures out; the node's record stays.
            self.failures.record("reading memory around a heavy node", error)
            return None, ()

    def _profile(
        self,
        before: _Before,
        node_id: str,
        prompt_id: str,
        cached: bool,
        result: Any,
        error: BaseException | None,
        duration_seconds: float | None,
    ) -> NodeProfile:
        rss = self.resident_set.read()
        span = before.peak
        if cached and span is not None and self.peaks is not None:  # found cached only now: it ran nothing
            self.peaks.discard(span)
            span = None
        ram_peak = self._end_peak(span, rss)  # first: nothing of the profile's own is charged to the node
        allocated = reserved = peak = None
        if before.cuda is not None:
            allocated, reserved, peak = self.torch.after(before.cuda)
        gpus: tuple[int | None, ...] = ()
        if before.heavy and self.heavy_reading is not None:
            ram_used, gpus = self._heavy_reading()
        else:
            ram_used = self.ram_used()
        prompt = self._prompt
        prompt_started = prompt[1] if prompt is not None and prompt[0] == prompt_id else self.store.started(prompt_id)
        if ram_peak is None:
            rss_peak = method = container_before = container_peak = None
        else:
            rss_peak, method = ram_peak.rss_peak_bytes, ram_peak.method
            container_before, container_peak = ram_peak.container_before_bytes, ram_peak.container_peak_bytes
        return new_node_profile(  # NodeProfile's fields, in order
            node_id,
            before.node_class,
            prompt_id,
            before.heavy,
            bool(cached),
            error is None and (result is self._success or self._is_success(result)),
            None if prompt_started is None else before.started - prompt_started,
            float(duration_seconds) if duration_seconds is not None else time.perf_counter() - before.started,
            before.rss,
            rss,
            before.ram_used,
            ram_used,
            before.allocated,
            allocated,
            before.reserved,
            reserved,
            peak,
            before.gpus,
            gpus,
            rss_peak,
            method,
            container_before,
            container_peak,
        )

    def _is_success(self, result: Any) -> bool:
        """Whether ``result`` is ComfyUI's ``ExecutionResult.SUCCESS``, by name; the member is then remembered, so the
        next node's is one identity check (an enum's ``name`` is a Python-level property)."""
        if getattr(result, "name", None) != "SUCCESS":
            return False
        self._success = result
        return True
