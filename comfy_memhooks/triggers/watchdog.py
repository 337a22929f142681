"""The pressure watchdog: keeps the RAM gauge current, and cleans up inside long nodes from its own thread.

Nothing runs between two nodes while one long node works in batches, so garbage that piles up batch after batch
would push a container over its limit before the node returns. While a prompt runs, the watchdog reads RAM (against
the container's limit inside one) at an interval that shrinks as usage nears the limit (:func:`poll_interval`); at
or above the threshold, it runs the model-free cleanup (:data:`actions.MODEL_FREE_ACTIONS`: ``gc.collect()`` and
``malloc_trim(0)``) whenever usage grew by the effectiveness floor since the last cleanup. Between prompts it reads
every :data:`IDLE_SECONDS`, so that the executor hook's check before each node reads a recent value
(:class:`pressure.PressureGauge`) and never probes.

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

Polling, and faster near the limit, as nohang does: a reading costs about 40 µs (``/proc/self/cgroup``,
``memory.current`` or ``memory.usage_in_bytes``, ``memory.stat``), and a tick that the effectiveness guard holds
back about 55 µs; waking the thread costs more than either (``benchmarks/bench_pressure.py``, on a shared 2-core VM:
0.2-0.5 ms a tick on the thread's own clock). Under the threshold nothing is due, so a reading every
:data:`FAST_SECONDS` (250 ms) keeps the gauge fresh: about 0.2% of one core on the thread's clock. The closer usage
is to the limit, the less time is left before the kernel's OOM killer, so the interval shrinks: from 250 ms at the
threshold to :data:`NEAR_SECONDS` (100 ms) at :data:`NEAR_LIMIT_PERCENT` (90%) of the limit, and
:data:`LIMIT_SECONDS` (25 ms) in the last tenth, whatever the threshold. There, batch garbage is cleaned up within
25 ms of becoming due (p99 in the benchmark, median 10 ms, against 250 ms and 82 ms at a fixed 250 ms; earlyoom
reads every 100 ms, systemd-oomd every second), for about 1.5% of one core (0.2% at 250 ms), paid only while a
prompt runs that close to the limit. A crossing of the threshold from below is still seen within 250 ms, unless the
threshold itself is in the last tenth.

Not the kernel's notifications: cgroup v1's usage-threshold eventfd and v2's PSI triggers would need write access
to the cgroup's files, which Docker and Kubernetes mount read-only inside a container; PSI also measures stalls,
not a usage percentage, so it fires only once the kernel is already reclaiming. The watchdog is turned off by the
setting ``pressure_watchdog``; turned off, it keeps reading every 250 ms while a prompt runs, for the gauge alone.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from .. import signals
from ..engine.core import Engine, Outcome
from ..engine.history import TriggerKind
from ..engine.pressure import PressureGauge
from ..engine.request import CleanupRequest
from ..failures import Failures
from ..probe.readings import MemorySnapshot
from ..ticker import Ticker
from .settings import AutoSettings

logger = logging.getLogger(__name__)

FAST_SECONDS = 0.25
"""Reading interval while a prompt runs and RAM is under its threshold: the longest while a prompt runs."""
NEAR_SECONDS = 0.1
"""Reading interval just under :data:`NEAR_LIMIT_PERCENT`, the end of the ramp that starts at the threshold."""
LIMIT_SECONDS = 0.025
"""Reading interval in the last tenth of the limit, where the OOM killer is one batch or two away."""
NEAR_LIMIT_PERCENT = 90.0
"""Where the last tenth of the limit starts, in percent of it."""
IDLE_SECONDS = 2.0
"""Reading interval between prompts: only the gauge for the next prompt's first node depends on it."""


def poll_interval(percent: float | None, threshold: float) -> float:
    """Seconds until the next reading while a prompt runs, from the last reading's percent of the limit.

    Piecewise: :data:`FAST_SECONDS` under the threshold (nothing is due, the gauge only needs to be fresh), then
    linear from it at the threshold to :data:`NEAR_SECONDS` at :data:`NEAR_LIMIT_PERCENT`, then
    :data:`LIMIT_SECONDS` from there to the limit, even under a threshold set that high: the less room is left,
    the sooner a batch of garbage can reach the limit. An unknown reading gets :data:`FAST_SECONDS`, as before one
    was ever taken.

    Args:
        percent: the last reading, in percent of the container's limit (of the host's RAM outside one).
        threshold: the RAM threshold, in percent.
    """
    if percent is None or not math.isfinite(percent) or percent < min(threshold, NEAR_LIMIT_PERCENT):
        return FAST_SECONDS
    if percent >= NEAR_LIMIT_PERCENT:
        return LIMIT_SECONDS
    share = (percent - threshold) / (NEAR_LIMIT_PERCENT - threshold)
    return FAST_SECONDS - share * (FAST_SECONDS - NEAR_SECONDS)


class PressureWatchdog:
    """Reads RAM in a daemon thread, keeps ``gauge`` current, and cleans up under pressure while a prompt runs.

    Args:
        engine: the engine whose model-free cleanup and effectiveness guard it uses; its RAM probe is read.
        settings: the automatic policy's current settings (threshold, ``enabled``, ``pressure_watchdog``).
        gauge: where the latest reading goes, for the executor hook.
        running_node: the id and class of the node running now, named in the record of a cleanup.
        poll: the reading interval while a prompt runs, from the last reading's percent and the threshold
            (:func:`poll_interval`; the benchmark passes a fixed one for its baseline).
        fast_seconds: the longest interval while a prompt runs, and the interval while the watchdog is turned off
            (tests shorten it).
        idle_seconds: the interval between prompts.
    """

    def __init__(
        self,
        engine: Engine,
        settings: Callable[[], AutoSettings],
        gauge: PressureGauge,
        *,
        running_node: Callable[[], tuple[str, str] | None] = lambda: None,
        poll: Callable[[float | None, float], float] = poll_interval,
        fast_seconds: float = FAST_SECONDS,
        idle_seconds: float = IDLE_SECONDS,
    ):
        self.engine = engine
        self.gauge = gauge
        self.failures = Failures(logger, "the pressure watchdog failed while {kind}; it goes on")
        self.cleanups = 0
        self._settings = settings
        self._running_node = running_node
        self._poll = poll
        self._fast = fast_seconds
        self._idle = idle_seconds
        self._prompts = 0
        self.thread = Ticker(self.tick, self.interval, "comfy_memhooks-watchdog", self.failures)

    @property
    def prompt_running(self) -> bool:
        return self._prompts > 0

    @property
    def watching_fast(self) -> bool:
        return self.prompt_running and self.gauge.over

    @property
    def running(self) -> bool:
        return self.thread.running

    def interval(self) -> float:
        """Seconds until the next reading: the ticker asks before each wait, so it follows the last reading."""
        if not self.prompt_running:
            return self._idle
        settings = self._settings()
        if not (settings.enabled and settings.pressure_watchdog):
            return self._fast  # nothing will be cleaned up: the gauge alone does not need a faster reading
        return min(self._fast, self._poll(self.gauge.ram_percent, settings.thresholds.ram_percent))

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
        outcome = self.engine.run_if_free(
            CleanupRequest.model_free(
                TriggerKind.WATCHDOG,
                settings.thresholds.ram_percent,
                node_id=node_id,
                node_class=node_class,
                reading=reading,
            )
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
