"""The JSON the panel receives, over HTTP and pushed: plain JSON types only, built in one place.

ComfyUI's websocket sender only catches connection errors: a numpy or torch number in a payload raises in its
publish loop and takes the server down. Everything here goes through :func:`snapshots.to_plain`, and
:func:`plain_json` checks the result before it leaves.
"""

from __future__ import annotations

import json
from typing import Any

from .history import OptimizationRecord
from .hook import HookStatus
from .manual import ManualAnswer
from .modes import MANUAL_MODES, Mode
from .report import action_summary, process_label
from .settings import AutoSettings, HeavyNodeRule, When
from .snapshots import GpuProcess, MemorySnapshot, RamSource, to_plain

# Event names: every event the panel receives is namespaced, as ComfyUI's own websocket carries them all.
EVENT_STATUS = "memhooks.status"
EVENT_OPTIMIZATION = "memhooks.optimization"
EVENT_HOOK = "memhooks.hook"
EVENT_PROMPT = "memhooks.prompt"
EVENT_MANUAL = "memhooks.manual"
EVENT_SETTINGS = "memhooks.settings"
EVENTS = (EVENT_STATUS, EVENT_OPTIMIZATION, EVENT_HOOK, EVENT_PROMPT, EVENT_MANUAL, EVENT_SETTINGS)


def plain_json(value: Any) -> dict[str, Any]:
    """``value`` as plain JSON types; raises ``ValueError``/``TypeError`` here rather than in a server's send loop."""
    data = to_plain(value)
    json.dumps(data, allow_nan=False)
    if not isinstance(data, dict):
        raise TypeError(f"a payload must be a JSON object, not {type(data).__name__}")
    return data


def ram_limit_label(snapshot: MemorySnapshot) -> str:
    """What the RAM total is: the container's limit (the OOM killer's) or the host's RAM."""
    return "host RAM" if snapshot.ram.source is RamSource.HOST else "container limit"


def snapshot_json(snapshot: MemorySnapshot) -> dict[str, Any]:
    """The snapshot with percentages and the RAM limit's kind; GPU processes are served on their own route."""
    data = snapshot.to_json()
    data.pop("processes", None)
    data["ram"]["limit_label"] = ram_limit_label(snapshot)
    data["ram"]["container_limit"] = snapshot.ram.source is not RamSource.HOST
    return data


def record_json(record: OptimizationRecord) -> dict[str, Any]:
    """One optimization for the history table: what, where, how much, how long, and each action."""
    data: dict[str, Any] = to_plain(record)
    data["mode"] = record.cleanup_name
    data["escalated"] = record.escalated
    data["freed_gb"] = record.freed_gb
    data["before"] = snapshot_json(record.before)
    data["after"] = snapshot_json(record.after)
    for action, plain in zip(record.actions, data["actions"], strict=True):
        plain["summary"] = action_summary(action)
    return data


def process_json(process: GpuProcess) -> dict[str, Any]:
    """A GPU process: pid, executable name, GPU and memory; its command line is never read, so never sent."""
    data: dict[str, Any] = to_plain(process)
    data["label"] = process_label(process)
    return data


def settings_json(settings: AutoSettings, load_warning: str | None) -> dict[str, Any]:
    """The automatic policy, and the choices its form offers, so the browser hard-codes none of them."""
    return {
        "settings": settings.to_json(),
        "load_warning": load_warning,
        "choices": {
            "modes": [mode.value for mode in Mode],
            "manual_modes": [mode.value for mode in MANUAL_MODES],
            "when": [when.value for when in When],
            "rule_defaults": {key: value for key, value in to_plain(HeavyNodeRule("")).items() if key != "pattern"},
        },
    }


def hook_json(status: HookStatus) -> dict[str, Any]:
    data: dict[str, Any] = to_plain(status)
    return data


def manual_json(answer: ManualAnswer) -> dict[str, Any]:
    return {
        "state": answer.state.value,
        "mode": answer.mode.value,
        "reason": answer.reason,
        "record": None if answer.record is None else record_json(answer.record),
        "cooldown_remaining_seconds": answer.cooldown_remaining_seconds,
    }


def node_event_json(phase: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A heavy node started or finished, from the executor hook's signal arguments (the exception as text)."""
    error = kwargs.get("error")
    duration = kwargs.get("duration_seconds")
    return {
        "phase": phase,
        "node_id": None if kwargs.get("node_id") is None else str(kwargs["node_id"]),
        "node_class": None if kwargs.get("node_class") is None else str(kwargs["node_class"]),
        "prompt_id": None if kwargs.get("prompt_id") is None else str(kwargs["prompt_id"]),
        "cached": bool(kwargs.get("cached", False)),
        "duration_seconds": None if duration is None else to_plain(duration),
        "error": None if error is None else f"{type(error).__name__}: {error}",
    }


def prompt_event_json(phase: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    error = kwargs.get("error")
    duration = kwargs.get("duration_seconds")
    success = kwargs.get("success")
    return {
        "phase": phase,
        "prompt_id": None if kwargs.get("prompt_id") is None else str(kwargs["prompt_id"]),
        "success": None if success is None else bool(success),
        "duration_seconds": None if duration is None else to_plain(duration),
        "error": None if error is None else f"{type(error).__name__}: {error}",
    }
