"""The public signals of comfy_memhooks, in a blinker namespace of its own.

Other extensions subscribe to these; the README documents each one's sender and keyword arguments. The
namespace is private to this package: blinker's process-wide default namespace is shared by every extension
ComfyUI loads, and a name clash there would cross-wire two extensions.

Receivers run in the thread that sends, which is ComfyUI's worker thread for the node and prompt signals.
blinker holds receivers by weak reference unless ``connect(..., weak=False)`` is used: a receiver defined inside
a function disappears when that function returns.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from blinker import NamedSignal, Namespace

from .failures import Failures

logger = logging.getLogger(__name__)

memhooks_signals = Namespace()

node_started: NamedSignal = memhooks_signals.signal(
    "node-started",
    doc="A node is about to run (once per node and prompt, however often ComfyUI re-enters it). "
    "Sender: the node's class name. kwargs: node_id, node_class, prompt_id, heavy (bool: matches a heavy-node "
    "rule), cached (True when ComfyUI will answer from its cache; checked for heavy nodes only, else None), "
    "inputs (the node's inputs as the prompt gives them: widget values, and links as [node_id, output_index]; "
    "read-only, None when unknown).",
)
node_finished: NamedSignal = memhooks_signals.signal(
    "node-finished",
    doc="A node finished: succeeded, failed, or was answered from the cache. Sender: the node's class name. "
    "kwargs: node_id, node_class, prompt_id, heavy, result (ComfyUI's ExecutionResult, None when execute "
    "raised), cached (bool), duration_seconds (float, from the first entry), error (the exception or None), "
    "rescued (None without an OOM rescue; else whether the node's second run succeeded).",
)
heavy_node_started: NamedSignal = memhooks_signals.signal(
    "heavy-node-started",
    doc="As node_started, sent right after it, for heavy nodes only (a class matching a heavy-node rule). "
    "A subscriber that only cares about heavy nodes connects here, and ordinary nodes cost it nothing.",
)
heavy_node_finished: NamedSignal = memhooks_signals.signal(
    "heavy-node-finished",
    doc="As node_finished, sent right after it, for heavy nodes only.",
)
prompt_started: NamedSignal = memhooks_signals.signal(
    "prompt-started",
    doc="A prompt started. Sender: the prompt id. kwargs: prompt_id.",
)
prompt_finished: NamedSignal = memhooks_signals.signal(
    "prompt-finished",
    doc="A prompt finished. Sender: the prompt id. kwargs: prompt_id, success (bool), duration_seconds (float), "
    "error (the exception or None).",
)
node_profiled: NamedSignal = memhooks_signals.signal(
    "node-profiled",
    doc="A node's profile record is complete, right after node_finished (only while the node_profile setting is "
    "on). Sender: the node's class name. kwargs: profile (profile.records.NodeProfile: the node's memory before "
    "and after it, its RAM and VRAM peaks).",
)
optimization_performed: NamedSignal = memhooks_signals.signal(
    "optimization-performed",
    doc="Memory was freed. Sender: the Engine. kwargs: record (engine.history.OptimizationRecord).",
)
memory_pressure: NamedSignal = memhooks_signals.signal(
    "memory-pressure",
    doc="RAM or VRAM was found at or above its threshold when a cleanup was considered, before the cleanup "
    "runs or the effectiveness guard holds it back; once per reading over its threshold. Sender: the source "
    "(str). kwargs: level (engine.pressure.PressureLevel: resource 'RAM' or 'VRAM', percent, threshold), source "
    "('hook', 'node', 'boundary' or 'watchdog'; 'manual' never, a manual request is routine), reading "
    "(probe.readings.MemorySnapshot). Sent from the worker thread, or from the watchdog's own thread.",
)


receiver_failures = Failures(logger, "receiver {kind}; ComfyUI goes on", part="receiver")
"""Receivers' failures, each receiver (and signal) logged once: shown in ``/memhooks/status`` and the panel."""


SLOW_RECEIVER_SECONDS = 1.0
"""A receiver that holds the worker thread this long delays every node after it: counted and named, once."""


class SlowReceiver(Exception):
    """A receiver took longer than :data:`SLOW_RECEIVER_SECONDS`; it ran to the end, nothing was lost."""


def send_safely(signal: NamedSignal, sender: Any, **kwargs: Any) -> None:
    """Sends ``signal``, calling each receiver in its own ``try``: one subscriber's bug must not reach ComfyUI.

    blinker's own ``send`` stops at, and re-raises, the first receiver's exception. A receiver may disconnect
    itself or another during the send: blinker iterates over a copy, and a receiver gone meanwhile is skipped.
    """
    if not signal.receivers:
        return
    for receiver in signal.receivers_for(sender):
        started = time.perf_counter()
        try:
            receiver(sender, **kwargs)
        except Exception as error:  # any receiver bug is contained here; the executor must never see it.
            receiver_failures.record(f"{_name(receiver)} on signal {signal.name!r} failed", error)
        took = time.perf_counter() - started
        if took > SLOW_RECEIVER_SECONDS:
            slow = SlowReceiver(f"took {took:.1f} s, holding up the node")
            receiver_failures.record(f"{_name(receiver)} on signal {signal.name!r} was slow", slow)


def _name(receiver: Any) -> str:
    return f"{getattr(receiver, '__module__', '?')}.{getattr(receiver, '__qualname__', repr(receiver))}"
