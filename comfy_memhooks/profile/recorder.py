"""The recorder: turns the executor hook's public signals into a profile of every node, kept in a store.

It listens like any other extension could: ``prompt_started`` opens a prompt, ``node_started`` takes the
"before" figures, ``node_finished`` the "after" ones and completes the node's record, which goes to the store and
out on the ``node_profiled`` signal; ``prompt_finished`` closes the prompt. The hook already sends one start and
one finish per node however often ComfyUI re-enters it (PENDING), so a node is recorded once.

Heavy nodes are sampled from ``heavy_node_started`` instead, which comes right after ``node_started``: the
automatic optimizer, connected earlier, has then already made room before the node, and what it freed is not
charged to the node. Their "after" figures are taken at ``node_finished``, before the optimizer cleans up after
them. Heavy nodes also get the system's RAM read afresh and each GPU's used VRAM; ordinary nodes cost a read of
``/proc/self/statm`` and, with CUDA, torch's counters.

Receivers run in ComfyUI's worker thread, each call contained by :func:`signals.send_safely`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .. import signals
from ..failures import Failures
from .records import NodeProfile
from .sampling import ResidentSet, TorchCounters
from .store import ProfileStore

logger = logging.getLogger(__name__)

HeavyReading = Callable[[], tuple[int | None, tuple[int | None, ...]]]
"""A fresh reading for a heavy node: the system's (or container's) RAM used, and each GPU's used VRAM."""


def _unknown_ram() -> int | None:
    return None


class _Before:
    """A node's figures as it started; one is made per node, so a plain slotted class."""

    __slots__ = ("allocated", "cuda", "gpus", "heavy", "node_class", "ram_used", "reserved", "rss", "started")

    def __init__(self, node_class: str, heavy: bool, rss: int | None, ram_used: int | None):
        self.node_class = node_class
        self.heavy = heavy
        self.rss = rss
        self.ram_used = ram_used
        self.started = time.perf_counter()
        self.cuda: Any = None
        self.allocated: int | None = None
        self.reserved: int | None = None
        self.gpus: tuple[int | None, ...] = ()


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
    """

    def __init__(
        self,
        store: ProfileStore,
        *,
        enabled: Callable[[], bool] = lambda: True,
        ram_used: Callable[[], int | None] = _unknown_ram,
        heavy_reading: HeavyReading | None = None,
        resident_set: ResidentSet | None = None,
    ):
        self.store = store
        self.enabled = enabled
        self.ram_used = ram_used
        self.heavy_reading = heavy_reading
        self.resident_set = resident_set if resident_set is not None else ResidentSet()
        self.failures = Failures(logger, "the node profile failed while {kind}; nodes run without it")
        self.torch = TorchCounters(self.failures)
        self._open: dict[Any, _Before] = {}
        self._connected = False
        self._listening = False

    def connect(self) -> None:
        """Subscribes strongly (bound methods); connect it after the automatic optimizer (see the module's note)."""
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

    def _listen_to_nodes(self, listen: bool) -> None:
        if listen == self._listening:
            return
        if listen:
            signals.node_started.connect(self.on_node_started, weak=False)
            signals.heavy_node_started.connect(self.on_heavy_node_started, weak=False)
            signals.node_finished.connect(self.on_node_finished, weak=False)
        else:
            signals.node_started.disconnect(self.on_node_started)
            signals.heavy_node_started.disconnect(self.on_heavy_node_started)
            signals.node_finished.disconnect(self.on_node_finished)
        self._listening = listen

    # Receivers -------------------------------------------------------------------------------------------------------

    def on_prompt_started(self, sender: Any, *, prompt_id: Any, **_: Any) -> None:
        self._open = {}
        enabled = self.enabled()
        self._listen_to_nodes(enabled)
        if enabled:
            self.store.begin(str(prompt_id), time.perf_counter())

    def on_node_started(self, sender: Any, *, node_id: Any, node_class: str, heavy: bool = False, **_: Any) -> None:
        if not heavy and self.enabled():
            self._open[node_id] = self._before(node_class, False)

    def on_heavy_node_started(self, sender: Any, *, node_id: Any, node_class: str, **_: Any) -> None:
        if self.enabled():
            self._open[node_id] = self._before(node_class, True)

    def on_node_finished(
        self,
        sender: Any,
        *,
        node_id: Any,
        prompt_id: Any,
        cached: bool = False,
        result: Any = None,
        error: BaseException | None = None,
        duration_seconds: float | None = None,
        **_: Any,
    ) -> None:
        before = self._open.pop(node_id, None)
        if before is None:  # the profile was off when it started, or its start came before the recorder
            return
        profile = self._profile(before, str(node_id), str(prompt_id), cached, result, error, duration_seconds)
        self.store.add(profile)
        signals.send_safely(signals.node_profiled, profile.node_class, profile=profile)

    def on_prompt_finished(
        self, sender: Any, *, prompt_id: Any, success: bool = False, duration_seconds: float = 0.0, **_: Any
    ) -> None:
        self._open = {}  # nodes still pending when a prompt fails get no finish
        self.store.end(str(prompt_id), bool(success), float(duration_seconds))

    # Sampling --------------------------------------------------------------------------------------------------------

    def _before(self, node_class: str, heavy: bool) -> _Before:
        gpus: tuple[int | None, ...] = ()
        if heavy and self.heavy_reading is not None:
            ram_used, gpus = self._heavy_reading()
        else:
            ram_used = self.ram_used()
        before = _Before(node_class, heavy, self.resident_set.read(), ram_used)
        before.gpus = gpus
        cuda = self.torch.cuda()
        if cuda is not None:
            before.cuda = cuda
            before.allocated, before.reserved = self.torch.before(cuda)
        before.started = time.perf_counter()
        return before

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
        ended = time.perf_counter()
        allocated = reserved = peak = None
        if before.cuda is not None:
            allocated, reserved, peak = self.torch.after(before.cuda)
        rss = self.resident_set.read()
        gpus: tuple[int | None, ...] = ()
        if before.heavy and self.heavy_reading is not None:
            ram_used, gpus = self._heavy_reading()
        else:
            ram_used = self.ram_used()
        prompt_started = self.store.started(prompt_id)
        return NodeProfile(
            node_id=node_id,
            node_class=before.node_class,
            prompt_id=prompt_id,
            heavy=before.heavy,
            cached=bool(cached),
            success=error is None and getattr(result, "name", None) == "SUCCESS",
            started_seconds=None if prompt_started is None else before.started - prompt_started,
            duration_seconds=float(duration_seconds) if duration_seconds is not None else ended - before.started,
            rss_before_bytes=before.rss,
            rss_after_bytes=rss,
            ram_used_before_bytes=before.ram_used,
            ram_used_after_bytes=ram_used,
            torch_allocated_before_bytes=before.allocated,
            torch_allocated_after_bytes=allocated,
            torch_reserved_before_bytes=before.reserved,
            torch_reserved_after_bytes=reserved,
            torch_peak_allocated_bytes=peak,
            gpu_used_before_bytes=before.gpus,
            gpu_used_after_bytes=gpus,
        )
