"""Starts the per-node profile inside ComfyUI: the recorder on the hook's signals, fed by the engine's probes.

Called by :func:`bootstrap.setup` after the hook and its optimizer are in place, so the recorder's receivers come
after the optimizer's (see :mod:`profile.recorder`). The ``node_profile`` setting is read at every node, so
turning it off in the panel applies to the next node.
"""

from __future__ import annotations

import threading

from ..engine.core import Engine, get_engine
from ..engine.settings import SettingsStore, get_settings_store
from ..profile.recorder import ProfileRecorder
from ..profile.store import ProfileStore, get_profile_store


def recorder_for(engine: Engine, settings: SettingsStore, store: ProfileStore) -> ProfileRecorder:
    """A recorder whose system RAM comes from the engine's RAM probe, and heavy nodes' from a fresh snapshot."""
    ram_probe = getattr(engine.probe, "ram", None)

    def ram_used() -> int | None:
        last = getattr(ram_probe, "last", None)
        return None if last is None else last.used_bytes

    def heavy_reading() -> tuple[int | None, tuple[int | None, ...]]:
        snapshot = engine.probe.snapshot()
        return snapshot.ram.used_bytes, tuple(gpu.used_bytes for gpu in snapshot.gpus)

    return ProfileRecorder(
        store, enabled=lambda: settings.current.node_profile, ram_used=ram_used, heavy_reading=heavy_reading
    )


_recorder: ProfileRecorder | None = None
_lock = threading.Lock()


def start() -> ProfileRecorder:
    """Connects the process's recorder to the signals; a second call returns the first."""
    global _recorder
    with _lock:
        if _recorder is None:
            _recorder = recorder_for(get_engine(), get_settings_store(), get_profile_store())
            _recorder.connect()
        return _recorder


def stop() -> None:
    """Disconnects the recorder; what it recorded stays in the store."""
    global _recorder
    with _lock:
        if _recorder is not None:
            _recorder.disconnect()
            _recorder = None
