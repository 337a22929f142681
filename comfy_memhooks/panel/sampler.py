"""The panel's live samples: a bounded ring of recent readings and the thread that takes them.

The chart shows the last minutes; the ring keeps ten (600 samples at one a second, fewer seconds' worth at a
shorter interval), so the memory it holds is bounded whatever the interval or the uptime. Sampling is a plain
daemon thread that sleeps on an :class:`threading.Event`: ComfyUI owns its event loop and a private one must never
be started inside it, and the thread stops at once when asked.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..failures import Failures
from ..probe.readings import MemorySnapshot

logger = logging.getLogger(__name__)

RING_SECONDS = 600.0
# The shortest interval the settings allow is 0.1 s: ten minutes of those is the hard bound.
RING_MAX_SAMPLES = 6000


@dataclass(frozen=True, slots=True)
class Sample:
    """One point of the chart.

    Attributes:
        taken_at: wall-clock time of the reading.
        ram_percent: RAM used, against the container limit when a cgroup applies.
        ram_used_bytes: RAM used, in bytes.
        vram_percent: the fullest GPU's usage; ``None`` without a GPU reading.
        gpu_percents: each GPU's usage, in CUDA order.
    """

    taken_at: float
    ram_percent: float | None
    ram_used_bytes: int | None
    vram_percent: float | None
    gpu_percents: tuple[float | None, ...]

    @classmethod
    def of(cls, snapshot: MemorySnapshot) -> Sample:
        return cls(
            taken_at=snapshot.taken_at,
            ram_percent=snapshot.ram.percent,
            ram_used_bytes=snapshot.ram.used_bytes,
            vram_percent=snapshot.vram_percent,
            gpu_percents=tuple(gpu.percent for gpu in snapshot.gpus),
        )



class SampleRing:
    """The samples of the last ``window_seconds``, oldest first; any thread may add or read.

    Args:
        window_seconds: how far back samples are kept.
        max_samples: a hard bound on the count, whatever the interval.
    """

    def __init__(self, window_seconds: float = RING_SECONDS, max_samples: int = RING_MAX_SAMPLES):
        self.window_seconds = window_seconds
        self._samples: deque[Sample] = deque(maxlen=max_samples)
        self._lock = threading.Lock()

    def add(self, sample: Sample) -> None:
        with self._lock:
            self._samples.append(sample)
            oldest_kept = sample.taken_at - self.window_seconds
            while self._samples and self._samples[0].taken_at < oldest_kept:
                self._samples.popleft()

    def samples(self) -> tuple[Sample, ...]:
        with self._lock:
            return tuple(self._samples)

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)


class SampleLoop:
    """Calls ``tick`` every ``interval()`` seconds (the first after one interval) in a daemon thread until :meth:`stop`.

    ``interval`` is read again before each wait, so a changed setting applies from the next tick. A failing tick is
    logged once (with its traceback), counted and the loop goes on: the panel must not die of one bad reading.

    Args:
        tick: the work of one interval (take a sample, push it).
        interval: seconds until the next tick.
        name: the thread's name, as ``py-spy`` and ComfyUI's logs show it.
    """

    def __init__(self, tick: Callable[[], None], interval: Callable[[], float], name: str = "comfy_memhooks-sampler"):
        self._tick = tick
        self._interval = interval
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = Failures(logger, "live sampling failed while {kind}; it goes on")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self._safe_interval()):
            try:
                self._tick()
            except Exception as error:  # one bad tick must not end live updates; it is counted and shown.
                self.failures.record("taking a sample", error)

    def _safe_interval(self) -> float:
        try:
            seconds = float(self._interval())
        except Exception:  # a broken settings source falls back to one sample a second.
            return 1.0
        return seconds if math.isfinite(seconds) and seconds > 0 else 1.0
