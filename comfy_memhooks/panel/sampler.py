"""The panel's live samples: a bounded ring of recent readings and the thread that takes them.

The chart shows the last minutes; the ring keeps ten (600 samples at one a second, fewer seconds' worth at a
shorter interval), so the memory it holds is bounded whatever the interval or the uptime. Sampling is a plain
daemon thread that sleeps on an :class:`threading.Event`: ComfyUI owns its event loop and a private one must never
be started inside it, and the thread stops at once when asked.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..failures import Failures
from ..probe.readings import MemorySnapshot
from ..ticker import Ticker

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


def sample_loop(tick: Callable[[], None], interval: Callable[[], float]) -> Ticker:
    """The thread that takes the panel's live samples: a failing sample is logged once, counted, and it goes on."""
    failures = Failures(logger, "live sampling failed on {kind}; it goes on")
    return Ticker(tick, interval, "comfy_memhooks-sampler", failures)
