"""How the per-node profile and predictive cleanup are made inside ComfyUI: the recorder fed by the engine's probes,
predictive cleanup on the learned peaks and the running-node file.

:meth:`runtime.Runtime.start_profile` calls these after the hook and its optimizer are in place. Their steps' order
around each node is the per-node pipeline's (:mod:`..pipeline`), whatever order they are started in: predictive
cleanup makes room before the profile's "before" reading, so what it frees is not charged to the node. The
``node_profile`` and ``predictive_cleanup`` settings are read at every node, so turning one off in the panel applies
to the next node.
"""

from __future__ import annotations

import atexit
import logging
from pathlib import Path

from ..engine.core import Engine
from ..pipeline import NodePipeline
from ..probe.readings import RamSource
from ..profile.high_water import ContainerHighWater, ProcessHighWater, platform_peak
from ..profile.peaks import RamPeaks
from ..profile.recorder import ProfileRecorder, profile_failures
from ..profile.store import ProfileStore
from ..triggers.last_node import RUNNING_FILE_NAME, RunningNodeFile
from ..triggers.learned_file import LearnedFile
from ..triggers.predictive import PredictiveCleanup
from ..triggers.settings import SettingsStore

logger = logging.getLogger(__name__)


def recorder_for(
    engine: Engine, settings: SettingsStore, store: ProfileStore, pipeline: NodePipeline | None = None
) -> ProfileRecorder:
    """A recorder whose system RAM comes from the engine's RAM probe, and heavy nodes' from a fresh snapshot."""
    ram_probe = getattr(engine.probe, "ram", None)

    def ram_used() -> int | None:
        last = getattr(ram_probe, "last", None)
        return None if last is None else last.used_bytes

    def heavy_reading() -> tuple[int | None, tuple[int | None, ...]]:
        snapshot = engine.probe.snapshot()
        return snapshot.ram.used_bytes, tuple(gpu.used_bytes for gpu in snapshot.gpus)

    return ProfileRecorder(
        store,
        enabled=lambda: settings.current.node_profile,
        ram_used=ram_used,
        heavy_reading=heavy_reading,
        peaks=peaks_for(engine),
        pipeline=pipeline,
    )


def peaks_for(engine: Engine) -> RamPeaks:
    """The RAM peak counters this machine has: the process's mark, the container's peak where it can be reset,
    the RAM probe's readings as samples, and the platform's own peak where the process's mark is missing."""
    ram_probe = getattr(engine.probe, "ram", None)
    location: tuple[RamSource, Path] | None = None
    if ram_probe is not None:
        try:
            ram_probe.read()
            location = ram_probe.cgroup_location()
        except Exception:  # no RAM reading: no container peak; the process's mark and samples still work.
            logger.debug("comfy_memhooks: no RAM reading for the container's peak", exc_info=True)
    container = None if location is None else ContainerHighWater(*location, profile_failures)
    take_sampled = getattr(ram_probe, "take_rss_high", None)
    return RamPeaks(ProcessHighWater(profile_failures), container, take_sampled=take_sampled, platform=platform_peak)


def predictor_for(
    engine: Engine, settings: SettingsStore, learned: LearnedFile, pipeline: NodePipeline | None = None
) -> PredictiveCleanup:
    """Predictive cleanup on the learned peaks, saved to their file after a prompt that changed them and at exit;
    the node that was running when the previous ComfyUI stopped without warning (:mod:`..triggers.last_node`) is
    learned first."""
    running = RunningNodeFile(learned.path.with_name(RUNNING_FILE_NAME))

    def enabled() -> bool:  # read twice per node: the settings once
        current = settings.current
        return current.enabled and current.predictive_cleanup

    predictor = PredictiveCleanup(
        engine,
        learned.table,
        enabled=enabled,
        save=learned.save,
        running=running,
        pipeline=pipeline,
    )
    left = running.open()
    atexit.register(running.close)  # a clean exit leaves no node behind
    atexit.register(learned.save, everything=True)  # and keeps the runs' counts learned since the last save
    if left is not None:
        predictor.learn_from_crash(left)
        learned.save()
    return predictor
