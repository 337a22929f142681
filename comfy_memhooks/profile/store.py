"""The last prompts' profiles, bounded, shared by the recorder (ComfyUI's worker thread) and their readers.

It keeps :data:`PROMPTS_KEPT` prompts and at most :data:`NODES_KEPT_PER_PROMPT` nodes of each. A node's record
takes about 0.3 KB (its slots and the integers it holds; the id and class strings are ComfyUI's own), so a
prompt of 100 nodes costs about 30 KB and the store about 0.3 MB; at the bound (ten prompts of 2,000 nodes)
about 6 MB. ``benchmarks/bench_profile.py`` measures it.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from .records import NodeProfile, PromptProfile

PROMPTS_KEPT = 10
NODES_KEPT_PER_PROMPT = 2000


class _Running:
    """The prompt being recorded: appended to by the worker thread alone."""

    __slots__ = ("dropped", "nodes", "prompt_id", "started", "started_at")

    def __init__(self, prompt_id: str, started: float, started_at: float):
        self.prompt_id = prompt_id
        self.started = started
        self.started_at = started_at
        self.nodes: list[NodeProfile] = []
        self.dropped = 0

    def freeze(self, success: bool | None, duration_seconds: float | None) -> PromptProfile:
        return PromptProfile(
            prompt_id=self.prompt_id,
            started_at=self.started_at,
            finished=success is not None,
            success=success,
            duration_seconds=duration_seconds,
            nodes=tuple(self.nodes),
            nodes_dropped=self.dropped,
        )


class ProfileStore:
    """The profiles of the last :data:`PROMPTS_KEPT` prompts, newest last, and the one running now.

    The public reading API (for the panel, the node's report, and extensions such as a predictive cleanup or a
    metrics exporter): :meth:`latest`, :meth:`get`, :meth:`running`, :meth:`prompt_ids`,
    :meth:`peak_vram_by_class` and :meth:`peak_ram_by_class`. Every answer is an immutable record.
    """

    def __init__(self, prompts_kept: int = PROMPTS_KEPT, nodes_kept: int = NODES_KEPT_PER_PROMPT):
        self.prompts_kept = prompts_kept
        self.nodes_kept = nodes_kept
        self._finished: deque[PromptProfile] = deque(maxlen=prompts_kept)
        self._running: _Running | None = None
        self._lock = threading.Lock()

    # Writing (the recorder, in ComfyUI's worker thread) ------------------------------------------------------------

    def begin(self, prompt_id: str, started: float) -> None:
        """A prompt started (``started``: its ``time.perf_counter()``); a prompt left running is dropped."""
        self._running = _Running(prompt_id, started, time.time())

    def started(self, prompt_id: str) -> float | None:
        """The ``perf_counter`` start of ``prompt_id`` when it is the one running."""
        running = self._running
        return running.started if running is not None and running.prompt_id == prompt_id else None

    def add(self, node: NodeProfile) -> None:
        """Adds a finished node to its prompt; a node of a prompt whose start was not seen opens one."""
        running = self._running
        if running is None or running.prompt_id != node.prompt_id:
            running = self._running = _Running(node.prompt_id, time.perf_counter(), time.time())
        if len(running.nodes) >= self.nodes_kept:
            running.dropped += 1
            return
        running.nodes.append(node)

    def end(self, prompt_id: str, success: bool, duration_seconds: float) -> PromptProfile | None:
        """The prompt ended: its profile is kept (the oldest goes beyond the bound) and returned."""
        running = self._running
        if running is None or running.prompt_id != prompt_id:
            return None
        profile = running.freeze(success, duration_seconds)
        with self._lock:
            self._finished.append(profile)
            self._running = None
        return profile

    # Reading (any thread) -------------------------------------------------------------------------------------------

    def latest(self) -> PromptProfile | None:
        """The last prompt that finished; ``None`` before any has."""
        with self._lock:
            return self._finished[-1] if self._finished else None

    def get(self, prompt_id: str) -> PromptProfile | None:
        """A kept prompt by id, or the running one with the nodes finished so far; ``None`` when not kept."""
        running = self.running()
        if running is not None and running.prompt_id == prompt_id:
            return running
        with self._lock:
            return next((profile for profile in reversed(self._finished) if profile.prompt_id == prompt_id), None)

    def running(self) -> PromptProfile | None:
        """The prompt running now, with the nodes that have finished so far; ``None`` when none runs."""
        running = self._running
        return None if running is None else running.freeze(None, None)

    def current(self) -> PromptProfile | None:
        """The running prompt so far, else the last one that finished: what the node's report shows."""
        return self.running() or self.latest()

    def prompt_ids(self) -> tuple[str, ...]:
        """The kept prompts' ids, newest first."""
        with self._lock:
            return tuple(profile.prompt_id for profile in reversed(self._finished))

    def peak_vram_by_class(self) -> dict[str, int]:
        """The latest prompt's classes, each with its nodes' largest VRAM peak in bytes (see
        :attr:`NodeProfile.vram_peak_bytes`); classes with no VRAM figure are left out; empty before any prompt."""
        latest = self.latest()
        return {} if latest is None else latest.peak_vram_by_class()

    def peak_ram_by_class(self) -> dict[str, int]:
        """As :meth:`peak_vram_by_class`, for RAM (:attr:`NodeProfile.ram_peak_bytes`)."""
        latest = self.latest()
        return {} if latest is None else latest.peak_ram_by_class()
