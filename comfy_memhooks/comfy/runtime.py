"""The runtime: the long-lived parts of comfy_memhooks in one ComfyUI process, made together, found in one place.

The node, the executor hook's subscriber, the per-node profile, predictive cleanup and the Memory panel must share
one engine (one cooldown, one history), one settings store, one learned-peaks file and one per-node pipeline. They
are made here, once, by :func:`bootstrap.setup` (ComfyUI's start-up), and handed to each part; no part looks up a
module-level instance of another. The node, which ComfyUI makes with no arguments, finds them through
:func:`current_runtime`. Tests make a runtime of their own, with files in a temporary folder, and make it current.

Two things stay process-wide on purpose: the patch on ComfyUI's ``execution`` module (:mod:`..hook.patch`: there is
one such module, and one wrapper on it), and the failure counters, which register themselves in
:data:`..failures.failure_registry` as loggers do; the runtime shows that registry, it does not copy it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import ModuleType

from .. import hook
from ..engine.core import Engine
from ..failures import FailureRegistry, failure_registry
from ..panel.backend import PanelBackend, Publisher
from ..pipeline import NodePipeline, hook_failures
from ..profile.recorder import ProfileRecorder
from ..profile.store import ProfileStore
from ..triggers.learned_file import LearnedFile, load_learned_file
from ..triggers.predictive import PredictiveCleanup
from ..triggers.settings import SettingsStore, load_settings_store
from ..triggers.watchdog import PressureWatchdog
from .auto import AutoOptimizer

logger = logging.getLogger(__name__)


class Runtime:
    """The engine, the stores, the pipeline and the parts on it, for one process (or one test).

    Args:
        engine: the engine every part asks; a new one on the machine's probes by default.
        settings: the settings store; the one at the default path, read now, by default.
        learned: the learned peaks; the ones at the default path, read when first asked for, by default.
        profiles: where the per-node profile keeps prompts; an empty store by default.
        pipeline: the per-node pipeline the hook runs and the parts put their steps into; a new one by default.
        watch: start the pressure watchdog's thread with the hook; tests that tick it by hand pass ``False``.
    """

    def __init__(
        self,
        *,
        engine: Engine | None = None,
        settings: SettingsStore | None = None,
        learned: LearnedFile | None = None,
        profiles: ProfileStore | None = None,
        pipeline: NodePipeline | None = None,
        watch: bool = True,
    ):
        self.failures: FailureRegistry = failure_registry
        self.pipeline = pipeline if pipeline is not None else NodePipeline(hook_failures)
        self.engine = engine if engine is not None else Engine()
        self.settings = settings if settings is not None else load_settings_store()
        self._learned = learned
        self._learned_lock = threading.Lock()
        self.profiles = profiles if profiles is not None else ProfileStore()
        self.optimizer = AutoOptimizer(self.engine, self.settings, watch=watch, pipeline=self.pipeline)
        self.recorder: ProfileRecorder | None = None
        self.predictor: PredictiveCleanup | None = None
        self.backend: PanelBackend | None = None
        self.hooked = False
        self._lock = threading.RLock()

    @property
    def learned(self) -> LearnedFile:
        """The learned peaks, read from their file on first use (the panel asks before any node has run)."""
        with self._learned_lock:
            if self._learned is None:
                self._learned = load_learned_file()
            return self._learned

    @property
    def watchdog(self) -> PressureWatchdog | None:
        """The pressure watchdog while the hook is installed (the panel shows it); ``None`` otherwise."""
        return self.optimizer.watchdog if self.hooked else None

    # The executor hook -------------------------------------------------------------------------------------------

    def install_hook(self, execution_module: ModuleType | None = None) -> Callable[[], bool] | None:
        """Installs the executor hook with the subscriber's steps and starts its watchdog; returns :meth:`uninstall`
        (``None`` when ComfyUI was left untouched). A second call takes the hook over again without doubling steps."""
        optimizer = self.optimizer
        with self._lock:
            if not self.hooked:
                optimizer.connect()
            installed = hook.install(
                execution_module,
                heavy=optimizer.index.is_heavy,
                rescue=optimizer.rescue,
                pressure=optimizer.gauge,
                boundary=optimizer.at_boundary,
                caches_seen=self.engine.caches.remember,
                prompt_event=self.engine.release.prompt_event,
                pipeline=self.pipeline,
            )
            if installed is None:
                if not self.hooked:
                    optimizer.disconnect()
                return None
            if not self.hooked and optimizer.watch:
                optimizer.watchdog.start()
            self.hooked = True
            return self.uninstall

    def uninstall(self) -> bool:
        """Takes the hook and the subscriber out; ``True`` when ComfyUI's own functions are back in place."""
        with self._lock:
            if self.hooked:
                self.optimizer.watchdog.stop()
                self.optimizer.disconnect()
                self.hooked = False
            return hook.uninstall()

    # The per-node profile and predictive cleanup -----------------------------------------------------------------

    def start_profile(self) -> ProfileRecorder:
        """Puts predictive cleanup and the profile's recorder into the pipeline; a second call returns the first."""
        from .profiling import predictor_for, recorder_for  # the profile's wiring, only when it starts

        with self._lock:
            if self.recorder is None:
                self.predictor = predictor_for(self.engine, self.settings, self.learned, self.pipeline)
                self.predictor.connect()
                self.recorder = recorder_for(self.engine, self.settings, self.profiles, self.pipeline)
                self.recorder.connect()
            return self.recorder

    def stop_profile(self) -> None:
        """Takes the recorder and predictive cleanup out; what they recorded and learned stays."""
        with self._lock:
            if self.predictor is not None:
                self.predictor.disconnect()
                self.predictor = None
            if self.recorder is not None:
                self.recorder.disconnect()
                self.recorder = None

    # The Memory panel --------------------------------------------------------------------------------------------

    def make_backend(self, publisher: Publisher, *, busy: Callable[[], bool] | None = None) -> PanelBackend:
        """The panel's backend on this runtime's engine, stores and pipeline (not started)."""
        return PanelBackend(
            self.engine,
            self.settings,
            publisher,
            busy=busy,
            watchdog=lambda: self.watchdog,
            profiles=self.profiles,
            learned=lambda: self.learned,
            pipeline=self.pipeline,
        )

    def stop(self) -> None:
        """Everything out: the hook, the profile, the panel's sampling; files and history stay as they are."""
        self.uninstall()
        self.stop_profile()
        if self.backend is not None:
            self.backend.close()
            self.backend = None


_current: Runtime | None = None
_current_lock = threading.Lock()


def current_runtime() -> Runtime:
    """The process's runtime: the one :func:`bootstrap.setup` made, or a new one on first use outside ComfyUI."""
    global _current
    with _current_lock:
        if _current is None:
            _current = Runtime()
        return _current


def use_runtime(runtime: Runtime | None) -> Runtime | None:
    """Makes ``runtime`` the process's (``None``: the next use makes a new one); returns the one it replaces."""
    global _current
    with _current_lock:
        previous, _current = _current, runtime
        return previous
