"""The one JSON boundary: every reply and pushed event the panel receives is built here, once, in plain types.

ComfyUI's websocket sender only catches connection errors: a numpy or torch number in a payload raises in its
publish loop and takes the server down, and JSON has no NaN. So readings, records and settings become JSON only
through :func:`to_plain` and the builders below; :func:`check_json` checks a payload once before it is pushed,
and the routes serialize a reply once (:func:`serialize`).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

from ..engine.comfy_cache import cache_notice
from ..engine.core import Engine
from ..engine.history import OptimizationRecord
from ..engine.modes import MANUAL_MODES, Mode
from ..engine.report import action_summary, dynamic_vram_label, process_label, ram_reader_text
from ..failures import failure_registry
from ..hook.status import HookStatus
from ..probe.readings import GpuProcess, MemorySnapshot, RamSource
from ..profile.records import NodeProfile, PromptProfile
from ..triggers.learned_file import LearnedFile
from ..triggers.settings import AutoSettings, HeavyNodeRule, When, rule_json
from .manual_answer import ManualAnswer
from .sampler import Sample

# Event names: every event the panel receives is namespaced, as ComfyUI's own websocket carries them all.
EVENT_STATUS = "memhooks.status"
EVENT_OPTIMIZATION = "memhooks.optimization"
EVENT_HOOK = "memhooks.hook"
EVENT_PROMPT = "memhooks.prompt"
EVENT_MANUAL = "memhooks.manual"
EVENT_SETTINGS = "memhooks.settings"
EVENTS = (EVENT_STATUS, EVENT_OPTIMIZATION, EVENT_HOOK, EVENT_PROMPT, EVENT_MANUAL, EVENT_SETTINGS)


def to_plain(value: Any) -> Any:
    """Turns dataclasses, enums, tuples and mappings into plain JSON types, recursively."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: to_plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        # JSON has no NaN or infinity; the browser's JSON.parse rejects the whole message if one slips in.
        return number if math.isfinite(number) else None
    return str(value)


def registered_failures_json() -> dict[str, Any]:
    """Each process-wide part's failures (``failures.failure_registry``) as ``<part>_failures`` and
    ``last_<part>_error``: the receivers', the hook's (its pipeline's steps included), predictive cleanup's, the
    per-node profile's."""
    data: dict[str, Any] = {}
    for part, failures in failure_registry.items():
        data[f"{part}_failures"] = failures.count
        data[f"last_{part}_error"] = failures.last_error
    return data


def serialize(data: dict[str, Any]) -> str:
    """A reply as JSON text; ``ValueError`` for a NaN that slipped through, here rather than in a send loop."""
    return json.dumps(data, allow_nan=False)


def check_json(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` unchanged once it is known to serialize: what is pushed to ComfyUI's websocket goes through this."""
    serialize(data)
    return data


def ram_limit_label(snapshot: MemorySnapshot) -> str:
    """What the RAM total is: the container's limit (the OOM killer's) or the host's RAM."""
    return "host RAM" if snapshot.ram.source is RamSource.HOST else "container limit"


def snapshot_json(snapshot: MemorySnapshot) -> dict[str, Any]:
    """The snapshot with percentages and the RAM limit's kind; GPU processes are served on their own route."""
    data: dict[str, Any] = to_plain(snapshot)
    data.pop("processes", None)
    data["ram"]["percent"] = snapshot.ram.percent
    data["ram"]["limit_label"] = ram_limit_label(snapshot)
    data["ram"]["container_limit"] = snapshot.ram.source is not RamSource.HOST
    for gpu_data, gpu in zip(data["gpus"], snapshot.gpus, strict=True):
        gpu_data["percent"] = gpu.percent
        gpu_data["pressure_percent"] = snapshot.gpu_pressure_percent(gpu)
    data["vram_percent"] = snapshot.vram_percent
    data["vram_pressure_percent"] = snapshot.vram_pressure_percent
    data["dynamic_vram_label"] = dynamic_vram_text(snapshot)
    backend = snapshot.gpu_backend
    data["gpu_backend"] = None if backend is None else backend.value
    data["gpu_backend_label"] = None if backend is None else backend.label
    return data


def comfyui_json(snapshot: MemorySnapshot, engine: Engine) -> dict[str, Any]:
    """What the panel says of ComfyUI's own memory management: dynamic VRAM, its output cache in a container,
    which reading of the container's RAM is used, and what its cache released in the latest prompt."""
    release = engine.release.current()
    check = engine.probe.core_ram.last
    return {
        "dynamic_vram": dynamic_vram_text(snapshot),
        "output_cache": to_plain(cache_notice(snapshot.ram, engine.caches)),
        "ram_reader": snapshot.ram.reader.value,
        "ram_reader_text": ram_reader_text(snapshot.ram, check),
        "ram_check": to_plain(check),
        "prompt_release": None if release is None else {**to_plain(release), "text": release.describe()},
    }


def dynamic_vram_text(snapshot: MemorySnapshot) -> str | None:
    return None if snapshot.dynamic_vram is None else dynamic_vram_label(snapshot)


def sample_json(sample: Sample) -> dict[str, Any]:
    data: dict[str, Any] = to_plain(sample)
    return data


def record_json(record: OptimizationRecord) -> dict[str, Any]:
    """One optimization for the history table: what, where, how much, how long, and each action."""
    data: dict[str, Any] = to_plain(record)
    data["mode"] = record.cleanup_name
    data["escalated"] = record.escalated
    data["freed_gib"] = record.freed_gib
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
            "rule_defaults": {key: value for key, value in rule_json(HeavyNodeRule("")).items() if key != "pattern"},
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


def node_profile_json(node: NodeProfile) -> dict[str, Any]:
    """One node's profile with what the user reads first: what it needed while it ran (its RAM peak, and how that
    was measured) beside what it left behind, the container's peak, and its VRAM peak and where that came from."""
    data: dict[str, Any] = to_plain(node)
    data["rss_delta_bytes"] = node.rss_delta_bytes
    data["ram_peak_bytes"] = node.ram_peak_bytes
    data["ram_left_bytes"] = node.ram_left_bytes
    data["container_peak_added_bytes"] = node.container_peak_added_bytes
    data["vram_peak_bytes"] = node.vram_peak_bytes
    source = node.vram_peak_source
    data["vram_peak_source"] = None if source is None else source.value
    return data


def prompt_profile_json(profile: PromptProfile) -> dict[str, Any]:
    """A prompt's profile: its nodes in the order they finished, and the heaviest node's id."""
    heaviest = profile.heaviest(1)
    return {
        "prompt_id": profile.prompt_id,
        "started_at": profile.started_at,
        "finished": profile.finished,
        "success": profile.success,
        "duration_seconds": profile.duration_seconds,
        "nodes": [node_profile_json(node) for node in profile.nodes],
        "nodes_dropped": profile.nodes_dropped,
        "heaviest_node_id": heaviest[0].node_id if heaviest else None,
    }


def profile_answer_json(
    profile: PromptProfile | None, enabled: bool, prompt_ids: tuple[str, ...], prompts_kept: int
) -> dict[str, Any]:
    """``GET /memhooks/profile``: the prompt asked for (the latest by default), or ``profile: null`` and why."""
    reason = None
    if profile is None:
        reason = "the per-node profile is off (node_profile)" if not enabled else "no prompt has finished yet"
    return {
        "enabled": enabled,
        "prompts": list(prompt_ids),
        "prompts_kept": prompts_kept,
        "profile": None if profile is None else prompt_profile_json(profile),
        "reason": reason,
    }


def predictions_json(learned: LearnedFile, enabled: bool) -> dict[str, Any]:
    """``GET /memhooks/predictions``: each learned class, the most recently seen first, and where they are kept."""
    return {
        "enabled": enabled,
        "classes": [to_plain(row) for row in learned.table.summary()],
        "max_classes": learned.table.max_classes,
        "path": str(learned.path),
        "load_warning": learned.load_warning,
    }
