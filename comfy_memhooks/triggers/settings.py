"""The automatic policy's settings: which nodes are heavy, what to do around them, and where that is kept.

The same validation serves the settings file, the panel's ``PUT /memhooks/settings`` and tests: a raw JSON
object is parsed into frozen dataclasses, and the first bad field raises :class:`InvalidSetting` naming it
(``rules[1].before_mode``). A partial object updates only the keys it names.

The file lives in ComfyUI's user directory and is written atomically (a temporary file, then ``os.replace``):
a crash mid-write leaves the old file, never half a file. A file that cannot be read as valid settings is kept
aside under another name, the defaults are used, and one warning says so: nothing the user wrote is lost.
"""

from __future__ import annotations

import enum
import fnmatch
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..comfyui_modules.user_directory import comfyui_folder_paths
from ..engine.modes import Mode
from ..engine.pressure import DEFAULT_THRESHOLDS, Thresholds
from ..errors import InvalidSetting, SettingsFileProtected
from ..validation import parse_bool, parse_choice, parse_seconds
from .files import load_json_file, write_atomically

logger = logging.getLogger(__name__)

SETTINGS_FILE_NAME = "comfy_memhooks.json"
MAX_PATTERN_LENGTH = 200
MAX_RULES = 50


class When(str, enum.Enum):
    """When a rule's mode runs: ``always``, or only when RAM or VRAM is at or above its threshold."""

    ALWAYS = "always"
    THRESHOLD = "threshold"


@dataclass(frozen=True, slots=True)
class HeavyNodeRule:
    """What to do around nodes whose class name matches ``pattern`` (a glob: ``ReActor*``).

    Attributes:
        pattern: a shell-style glob over node class names, case-sensitive as ComfyUI's names are.
        before_mode: the mode to run before the node; Monitor Only does nothing.
        before_when: ``always`` or ``threshold``.
        after_mode: the mode to run after the node; Monitor Only does nothing.
        after_when: ``always`` or ``threshold``.
    """

    pattern: str
    before_mode: Mode = Mode.MONITOR_ONLY
    before_when: When = When.THRESHOLD
    after_mode: Mode = Mode.MONITOR_ONLY
    after_when: When = When.ALWAYS

    def matches(self, node_class: str) -> bool:
        return fnmatch.fnmatchcase(node_class, self.pattern)


DEFAULT_RULES: tuple[HeavyNodeRule, ...] = (
    # ReActor holds face models and per-frame faces: make room before if memory is tight, clean up after.
    HeavyNodeRule("ReActor*", Mode.CONSERVATIVE, When.THRESHOLD, Mode.BALANCED, When.ALWAYS),
    # Loading a video decodes every frame into RAM: free everything first if memory is already tight.
    HeavyNodeRule("VHS_LoadVideo*", Mode.AGGRESSIVE, When.THRESHOLD, Mode.MONITOR_ONLY, When.ALWAYS),
    HeavyNodeRule("VHS_LoadImages*", Mode.AGGRESSIVE, When.THRESHOLD, Mode.MONITOR_ONLY, When.ALWAYS),
    # Combining frames into a video leaves the frame buffers behind: clean up after.
    HeavyNodeRule("VHS_VideoCombine", Mode.MONITOR_ONLY, When.THRESHOLD, Mode.BALANCED, When.ALWAYS),
)


THRESHOLD_KEYS = ("ram_threshold", "vram_threshold", "cooldown_seconds")
"""The settings file's names for the three :class:`Thresholds` fields."""


@dataclass(frozen=True, slots=True)
class AutoSettings:
    """The automatic policy applied by the executor hook, and the panel's live sampling.

    Attributes:
        enabled: the hook frees memory around heavy nodes and under pressure (the signals fire either way).
        rules: the heavy-node rules; a node uses the first rule that matches its class.
        thresholds: the pressure thresholds and the cooldown, shared with the node and the panel through the
            engine (``ram_threshold``, ``vram_threshold``, ``cooldown_seconds`` in the file).
        oom_rescue: after a heavy node fails for lack of memory, run Aggressive and run it once more.
        sample_interval_seconds: how often the panel receives a live sample.
        pressure_watchdog: while a prompt runs and RAM is at or above its threshold, clean up (model-free) from
            the watchdog's thread, so garbage piling up inside one long node is returned before the node ends.
        node_profile: record each node's memory before and after it (the per-node profile, about 12 µs a node);
            off, the profile keeps what it has and records nothing new, and from the next prompt costs nothing.
        predictive_cleanup: before a node whose class was seen, free just enough for its learned peak to fit
            (:mod:`.predictive`); off, only the thresholds act.
        pressure_unloads_models: when RAM is still at or above its threshold after every model-free cleanup and
            ComfyUI's output cache, and close to the limit, unload what ComfyUI cannot see (ReActor's faces, then
            its sessions) and then ComfyUI's own models in RAM, between nodes (:mod:`.last_rung`); off, pressure
            never unloads a model (only Aggressive, asked for by a rule, the node or the panel, does).
    """

    enabled: bool = True
    rules: tuple[HeavyNodeRule, ...] = DEFAULT_RULES
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    oom_rescue: bool = True
    sample_interval_seconds: float = 1.0
    pressure_watchdog: bool = True
    node_profile: bool = True
    predictive_cleanup: bool = True
    pressure_unloads_models: bool = True

    def rule_for(self, node_class: str) -> HeavyNodeRule | None:
        for rule in self.rules:
            if rule.matches(node_class):
                return rule
        return None

    def to_json(self) -> dict[str, Any]:
        """The settings file's JSON object: every key, flat, as the file and ``PUT /memhooks/settings`` take it."""
        return {
            "enabled": self.enabled,
            "rules": [rule_json(rule) for rule in self.rules],
            "ram_threshold": self.thresholds.ram_percent,
            "vram_threshold": self.thresholds.vram_percent,
            "cooldown_seconds": self.thresholds.cooldown_seconds,
            "oom_rescue": self.oom_rescue,
            "sample_interval_seconds": self.sample_interval_seconds,
            "pressure_watchdog": self.pressure_watchdog,
            "node_profile": self.node_profile,
            "predictive_cleanup": self.predictive_cleanup,
            "pressure_unloads_models": self.pressure_unloads_models,
        }

    @classmethod
    def parse(cls, raw: object, base: AutoSettings | None = None) -> AutoSettings:
        """Validates a JSON object; keys it leaves out keep their value in ``base`` (the defaults if none)."""
        base = base if base is not None else cls()
        if not isinstance(raw, Mapping):
            raise InvalidSetting("settings", f"expected a JSON object, got {type(raw).__name__}")
        known = sorted(base.to_json())
        unknown = sorted(str(key) for key in raw if key not in known)
        if unknown:
            raise InvalidSetting(unknown[0], f"unknown setting; known settings are {', '.join(known)}")
        merged = {**base.to_json(), **raw}
        return cls(
            enabled=parse_bool(merged["enabled"], "enabled"),
            rules=_parse_rules(merged["rules"], "rules") if "rules" in raw else base.rules,
            thresholds=Thresholds.parse(*(merged[key] for key in THRESHOLD_KEYS)),
            oom_rescue=parse_bool(merged["oom_rescue"], "oom_rescue"),
            sample_interval_seconds=parse_seconds(
                merged["sample_interval_seconds"], "sample_interval_seconds", MIN_INTERVAL, MAX_INTERVAL
            ),
            pressure_watchdog=parse_bool(merged["pressure_watchdog"], "pressure_watchdog"),
            node_profile=parse_bool(merged["node_profile"], "node_profile"),
            predictive_cleanup=parse_bool(merged["predictive_cleanup"], "predictive_cleanup"),
            pressure_unloads_models=parse_bool(merged["pressure_unloads_models"], "pressure_unloads_models"),
        )


MIN_INTERVAL = 0.1
MAX_INTERVAL = 60.0


def rule_json(rule: HeavyNodeRule) -> dict[str, str]:
    return {
        "pattern": rule.pattern,
        "before_mode": rule.before_mode.value,
        "before_when": rule.before_when.value,
        "after_mode": rule.after_mode.value,
        "after_when": rule.after_when.value,
    }


def _parse_when(value: object, field_name: str) -> When:
    return parse_choice(When, value, field_name, "allowed")


def _parse_rule(raw: object, field_name: str) -> HeavyNodeRule:
    if not isinstance(raw, Mapping):
        raise InvalidSetting(field_name, f"expected an object with a pattern, got {type(raw).__name__}")
    known = ("pattern", "before_mode", "before_when", "after_mode", "after_when")
    unknown = sorted(str(key) for key in raw if key not in known)
    if unknown:
        raise InvalidSetting(f"{field_name}.{unknown[0]}", f"unknown key; a rule has {', '.join(known)}")
    pattern = raw.get("pattern")
    if not isinstance(pattern, str) or not pattern.strip():
        raise InvalidSetting(f"{field_name}.pattern", "must be a non-empty glob over node class names, e.g. 'ReActor*'")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidSetting(f"{field_name}.pattern", f"longer than {MAX_PATTERN_LENGTH} characters")
    defaults = HeavyNodeRule(pattern.strip())
    return HeavyNodeRule(
        pattern=pattern.strip(),
        before_mode=Mode.parse(raw.get("before_mode", defaults.before_mode), f"{field_name}.before_mode"),
        before_when=_parse_when(raw.get("before_when", defaults.before_when), f"{field_name}.before_when"),
        after_mode=Mode.parse(raw.get("after_mode", defaults.after_mode), f"{field_name}.after_mode"),
        after_when=_parse_when(raw.get("after_when", defaults.after_when), f"{field_name}.after_when"),
    )


def _parse_rules(value: object, field_name: str) -> tuple[HeavyNodeRule, ...]:
    if not isinstance(value, list):
        raise InvalidSetting(field_name, f"expected a list of rules, got {type(value).__name__}")
    if len(value) > MAX_RULES:
        raise InvalidSetting(field_name, f"at most {MAX_RULES} rules")
    return tuple(_parse_rule(item, f"{field_name}[{index}]") for index, item in enumerate(value))


def default_settings_path() -> Path:
    """ComfyUI's user directory when running inside ComfyUI; else ``$COMFY_MEMHOOKS_SETTINGS`` or ~/.config."""
    explicit = os.environ.get("COMFY_MEMHOOKS_SETTINGS")
    if explicit:
        return Path(explicit)
    folder_paths = comfyui_folder_paths()
    get_user_directory = getattr(folder_paths, "get_user_directory", None)
    if callable(get_user_directory):
        return Path(get_user_directory()) / SETTINGS_FILE_NAME
    return Path.home() / ".config" / "comfy_memhooks" / SETTINGS_FILE_NAME


@dataclass
class SettingsStore:
    """The settings in memory and on disk, one lock for both, so the panel and the hook never see half an update.

    Args:
        path: the JSON file; created on the first save.
    """

    path: Path
    _current: AutoSettings = field(default_factory=AutoSettings, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    load_warning: str | None = field(default=None, init=False)
    _protected: str | None = field(default=None, init=False, repr=False)
    _unknown: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def current(self) -> AutoSettings:
        return self._current

    def load(self) -> AutoSettings:
        """Reads the file; a missing one means defaults, a bad one is kept aside and defaults are used.

        Never raises, whatever the file holds (invalid UTF-8, 100,000-deep nesting, integers past Python's digit
        limit): a bad settings file must not stop ComfyUI's hook or panel. When the file cannot be read, or cannot
        be set aside, it is protected: defaults are used in memory, and :meth:`update` refuses to overwrite it.
        """
        with self._lock:
            self._current = AutoSettings()
            self._protected = None
            self._unknown = {}
            self.load_warning = None
            loaded = load_json_file(self.path, lambda raw: AutoSettings.parse(self._set_unknown_aside(raw)))
            if loaded.value is not None:
                self._current = loaded.value
            elif loaded.problem is not None:
                if not loaded.writable:
                    self._protect(loaded.problem)
                else:
                    self._warn(f"{loaded.problem}, defaults are used")
                return self._current
            if self._unknown:
                names = ", ".join(sorted(self._unknown))
                self._warn(f"{self.path}: ignored {names}, unknown to this version (kept in the file)")
            return self._current

    def _set_unknown_aside(self, raw: object) -> object:
        """Keys written by a newer version are kept apart, to be written back unchanged, rather than refused."""
        self._unknown = {}
        if not isinstance(raw, Mapping):
            return raw
        known = AutoSettings().to_json()
        self._unknown = {str(key): value for key, value in raw.items() if key not in known}
        return {key: value for key, value in raw.items() if key in known}

    def _warn(self, message: str) -> None:
        self.load_warning = message
        logger.warning("comfy_memhooks settings: %s", message)

    def _protect(self, reason: str) -> None:
        """Defaults in memory, and the file left alone: it may hold what the user wrote, unreadable only to us."""
        self._protected = f"{reason}; defaults are used and the file is not overwritten until it is fixed"
        self._warn(self._protected)

    def update(self, raw: object) -> AutoSettings:
        """Validates a (partial) JSON object, writes the result atomically, then makes it current.

        Raises:
            InvalidSetting: on the first bad field; nothing is written and nothing changes.
            SettingsFileProtected: the file could not be read or set aside at load; it is not overwritten.
        """
        with self._lock:
            updated = AutoSettings.parse(raw, base=self._current)
            if self._protected is not None:
                raise SettingsFileProtected(self._protected)
            self._write(updated)
            self._current = updated
            return updated

    def _write(self, settings: AutoSettings) -> None:
        write_atomically(self.path, json.dumps({**settings.to_json(), **self._unknown}, indent=2) + "\n")


def load_settings_store(path: Path | None = None) -> SettingsStore:
    """The settings kept at ``path`` (:func:`default_settings_path` by default), read now."""
    store = SettingsStore(path if path is not None else default_settings_path())
    store.load()
    return store
