"""What the profile reads around every node, chosen to cost a microsecond or two: the process's resident set and
torch's CUDA counters.

The resident set comes from ``/proc/self/statm``, kept open and re-read at offset 0 (``pread``): the kernel
formats one short line, and no file is opened per node. Off Linux, or where that file cannot be read, psutil
answers (``ps -o rss``). torch's counters are read only once torch has been imported by the host and has
initialised CUDA: the profile never imports torch or creates a CUDA context.
"""

from __future__ import annotations

import logging
import os
import sys
from types import ModuleType
from typing import Any

import psutil

from ..failures import Failures
from ..probe.ram import rss_from_statm

logger = logging.getLogger(__name__)

STATM = "/proc/self/statm"


class _Forks:
    """How many times this process's line has forked, counted in the child: a fork-safe check that costs no system
    call (``os.getpid()`` is one, and a node would make several)."""

    generation = 0

    @classmethod
    def forked(cls) -> None:
        cls.generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_Forks.forked)


class ResidentSet:
    """This process's resident set size, ``None`` when unreadable.

    Args:
        statm: the ``statm`` file to read; psutil when it cannot be opened (macOS, Windows).
    """

    def __init__(self, statm: str = STATM):
        self._statm = statm
        self._descriptor: int | None = None
        self._generation = -1
        self._process: psutil.Process | None = None

    def read(self) -> int | None:
        descriptor = self._descriptor
        if descriptor is None or self._generation != _Forks.generation:  # a forked child reopens the file
            descriptor = self._open()
        if descriptor is not None:
            try:
                rss = rss_from_statm(os.pread(descriptor, 128, 0))
            except OSError:
                rss = None
            if rss is not None:
                return rss
        return self._from_psutil()

    def _open(self) -> int | None:
        self._generation = _Forks.generation
        self.close()  # after a fork: the parent's file, which names the parent's process
        if not sys.platform.startswith("linux"):
            return None
        try:
            self._descriptor = os.open(self._statm, os.O_RDONLY)
        except OSError:
            self._descriptor = None
        return self._descriptor

    def _from_psutil(self) -> int | None:
        try:
            if self._process is None or self._process.pid != os.getpid():
                self._process = psutil.Process()
            return int(self._process.memory_info().rss)
        except psutil.Error:
            return None

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


class TorchCounters:
    """torch's CUDA allocator on the current device: allocated, reserved, and the peak allocated since a reset.

    ``cuda()`` answers ``None`` until the host's torch has initialised CUDA; once it has, the answer is kept
    (CUDA is not uninitialised in a running process). Any failure turns the figures off for the rest of the
    process, logged once: a node must never pay for a broken driver over and over.
    """

    def __init__(self, failures: Failures):
        self._failures = failures
        self._cuda: Any = None
        self._broken = False

    def cuda(self) -> Any:
        """torch.cuda when it is initialised, else ``None``; a dictionary look-up and a flag while it is not."""
        if self._cuda is not None or self._broken:
            return self._cuda
        torch: ModuleType | None = sys.modules.get("torch")
        if torch is None:
            return None
        try:
            cuda = torch.cuda
            if cuda.is_initialized():
                self._cuda = cuda
        except Exception as error:  # torch half-imported or a broken build: no torch figures, ever.
            self._give_up("checking whether torch has initialised CUDA", error)
        return self._cuda

    def before(self, cuda: Any) -> tuple[int | None, int | None]:
        """Allocated and reserved bytes, and the peak counter reset, as a node starts."""
        try:
            cuda.reset_peak_memory_stats()
            return int(cuda.memory_allocated()), int(cuda.memory_reserved())
        except Exception as error:  # as in cuda(): the node goes on, without torch figures from now on.
            self._give_up("reading torch's CUDA counters", error)
            return None, None

    def after(self, cuda: Any) -> tuple[int | None, int | None, int | None]:
        """Allocated, reserved and peak allocated bytes, as a node ends."""
        try:
            return int(cuda.memory_allocated()), int(cuda.memory_reserved()), int(cuda.max_memory_allocated())
        except Exception as error:  # as in cuda().
            self._give_up("reading torch's CUDA counters", error)
            return None, None, None

    def _give_up(self, kind: str, error: Exception) -> None:
        self._broken = True
        self._cuda = None
        self._failures.record(kind, error)
