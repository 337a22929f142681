"""The pressure watchdog: keeps the RAM gauge current, and cleans up inside long nodes from its own thread.

Nothing runs between two nodes while one long node works in batches, so garbage that piles up batch after batch
would push a container over its limit before the node returns. While a prompt runs, the watchdog reads RAM every
:data:`FAST_SECONDS` (against the container's limit inside one); at or above the threshold, it runs the
model-free cleanup (:data:`actions.MODEL_FREE_ACTIONS`: ``gc.collect()`` and ``malloc_trim(0)``) whenever usage grew
by the effectiveness floor since the last cleanup. Between prompts it reads every :data:`IDLE_SECONDS`, so that the
executor hook's check before each node reads a recent value (:class:`pressure.PressureGauge`) and never probes.

Why cleaning up from another thread is safe:

- CPython's cyclic collector may run in any thread; it takes the GIL, so the worker thread simply pauses for its
  duration, as it would for an automatic collection.
- Finalizers (``__del__``, weakref callbacks) of what it collects then run in the watchdog's thread. Freeing a
  tensor there is fine: PyTorch's allocators are thread-safe, and a CUDA tensor freed from another thread goes
  back to the caching allocator as it would from the worker.
- Nothing else is touched: no CUDA call (no ``empty_cache``), no model unloading, no ComfyUI state. Those run only
  in the worker thread, at node boundaries.
- ``malloc_trim`` takes glibc's arena locks like any ``malloc``, and is safe in any thread.
- It never waits for the engine: when an optimization is already under way, that tick is skipped.

Polling, not the kernel's notifications: a read costs about 40 µs (``/proc/self/cgroup``, ``memory.current`` or
``memory.usage_in_bytes``, ``memory.stat``), so four reads a second cost about 0.02% of one core, and a
threshold crossing is seen within a quarter of a second. cgroup v1's usage-threshold eventfd and v2's PSI
triggers would need write access to the cgroup's files, which Docker and Kubernetes mount read-only inside a
container; PSI also measures stalls, not a usage percentage, so it fires only once the kernel is already
reclaiming. The watchdog is turned off by the setting ``pressure_watchdog``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .. import signals
from ..failures import Failures
from ..probe.readings import MemorySnapshot
from ..ticker import Ticker
from .core import Engine, Outcome
from .history import TriggerKind
from .pressure import PressureGauge
from .settings import AutoSettings

logger = logging.getLogger(__name__)

FAST_SECONDS = 0.25
"""Reading interval while a prompt runs."""
IDLE_SECONDS = 2.0
"""Reading interval between prompts: only the gauge for the next prompt's first node depends on it."""


class PressureWatchdog:
    """Reads RAM in a daemon thread, keeps ``gauge`` current, and cleans up under pressure while a prompt runs.

    Args:
        engine: the engine whose model-free cleanup and effectiveness guard it uses; its RAM probe is read.
        settings: the automatic policy's current settings (threshold, ``enabled``, ``pressure_watchdog``).
        gauge: where the latest reading goes, for the executor hook.
        running_node: the id and class of the node running now, named in the record of a cleanup.
        fast_seconds, idle_seconds: the two reading intervals.
    """

    def __init__(
        self,
        engine: Engine,
        settings: Callable[[], AutoSettings],
        gauge: PressureGauge,
        *,
        running_node: Callable[[], tuple[str, str] | None] = lambda: None,
        fast_seconds: float = FAST_SECONDS,
        idle_seconds: float = IDLE_SECONDS,
    ):
        self.engine = engine
        self.gauge = gauge
        self.failures = Failures(logger, "the pressure watchdog failed while {kind}; it goes on")
        self.cleanups = 0
        self._settings = settings
        self._running_node = running_node
        self._fast = fast_seconds
        self._idle = idle_seconds
        self._prompts = 0
        self.thread = Ticker(
            self.tick,
            lambda: self._fast if self.prompt_running else self._idle,
            "comfy_memhooks-watchdog",
            self.failures,
        )

    @property
    def prompt_running(self) -> bool:
        return self._prompts > 0

    @property
    def watching_fast(self) -> bool:
        return self.prompt_running and self.gauge.over

    @property
    def running(self) -> bool:
        return self.thread.running

    def start(self) -> None:
        """Subscribes to the prompt signals and starts the thread; twice is a no-op."""
        if self.running:
            return
        signals.prompt_started.connect(self._on_prompt_started, weak=False)
        signals.prompt_finished.connect(self._on_prompt_finished, weak=False)
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the thread and the subscription; a watchdog that never started is left as it is."""
        if not self.running:
            return
        signals.prompt_started.disconnect(self._on_prompt_started)
        signals.prompt_finished.disconnect(self._on_prompt_finished)
        self.thread.stop(timeout)

    def tick(self) -> Outcome | None:
        """One reading; a cleanup when a prompt runs, RAM is over its threshold and the guard lets it."""
        settings = self._settings()
        ram = self.engine.probe.read_ram()
        over = self.gauge.update(ram.percent, settings.thresholds.ram_percent)
        if not (over and self.prompt_running and settings.enabled and settings.pressure_watchdog):
            return None
        reading = MemorySnapshot(
            taken_at=time.time(), ram=ram, gpus=(), gpu_source=None, gpu_unavailable_reason="not read by the watchdog"
        )
        node_id, node_class = self._running_node() or (None, None)
        outcome = self.engine.reclaim(
            TriggerKind.WATCHDOG,
            settings.thresholds.ram_percent,
            node_id=node_id,
            node_class=node_class,
            snapshot=reading,
            quiet=True,
        )
        if outcome is not None and outcome.performed:
            self.cleanups += 1
            self.gauge.update(outcome.snapshot.ram.percent, settings.thresholds.ram_percent)
        return outcome

    def _on_prompt_started(self, sender: Any, **kwargs: Any) -> None:
        self._prompts += 1
        self.thread.wake()  # a fresh reading for the prompt's first node

    def _on_prompt_finished(self, sender: Any, **kwargs: Any) -> None:
        self._prompts = max(self._prompts - 1, 0)
