"""A lazily started session with a GPU vendor's management library: NVML (``pynvml``) or AMD SMI (``amdsmi``).

Both are loaded and initialised on the first query, not at import: ComfyUI imports every extension at start-up,
and a machine without that vendor's driver must not pay for, or log about, a GPU it does not have. Both are shut
down at exit. Every call goes through :meth:`DriverSession.query`, which turns any exception into ``None``, counted
and logged once per function and error: a driver call can raise the library's own error type, ``OSError``,
``UnicodeDecodeError``, or (an old shadowing copy of the library) ``AttributeError``, and each of those must cost
one reading, never the caller.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from ..failures import Failures

logger = logging.getLogger(__name__)

T = TypeVar("T")


class DriverSession:
    """One library's session.

    Args:
        name: the library as the log names it ("NVML", "AMD SMI").
        loader: returns the module; tests pass a stand-in that follows the real one's names and errors.
        start, stop: the library's own initialise and shut-down calls, given the module.
        missing: why there is no session when the package is not installed, in words.
        log: where it logs: the library's own module's logger.
        missing_level: how loudly that is logged: the usual state of a machine without that vendor's GPU is quiet.
    """

    def __init__(
        self,
        name: str,
        loader: Callable[[], ModuleType],
        start: Callable[[ModuleType], object],
        stop: Callable[[ModuleType], object],
        missing: str,
        log: logging.Logger = logger,
        missing_level: int = logging.INFO,
    ):
        self.name = name
        self._log = log
        self._loader = loader
        self._start = start
        self._stop = stop
        self._missing = missing
        self._missing_level = missing_level
        self._lock = threading.Lock()
        self._module: ModuleType | None = None
        self._initialised = False
        self._unavailable_reason: str | None = None
        self.failures = Failures(log, f"{name} {{kind}}", level=logging.WARNING, traceback=False)

    @property
    def unavailable_reason(self) -> str | None:
        """Why the library cannot be used, once a query has tried; ``None`` while it works or before the first try."""
        return self._unavailable_reason

    def may_call_driver(self) -> bool:
        """Whether a query may reach the driver: before the first load, or once the library started."""
        return not self._initialised or self._module is not None

    def module(self) -> ModuleType | None:
        """The initialised module, or ``None`` when the package or the driver is missing."""
        if self._initialised:
            return self._module
        with self._lock:
            if not self._initialised:
                self._module = self._initialise()
                self._initialised = True
        return self._module

    def _initialise(self) -> ModuleType | None:
        try:
            module = self._loader()
        except ImportError:
            return self._unavailable(self._missing, self._missing_level)
        except Exception as error:  # a copy that fails at import (broken, or shadowing the real one): no session.
            return self._unavailable(f"{self.name} could not be loaded: {error}", logging.WARNING)
        try:
            self._start(module)
        except Exception as error:  # the library's own error, or anything a broken install raises: no session.
            return self._unavailable(f"{self.name} could not start: {error}", logging.INFO)
        atexit.register(self._shut_down, module)
        return module

    def _unavailable(self, reason: str, level: int) -> ModuleType | None:
        """No session: says why once; the module is ``None`` from now on."""
        self._unavailable_reason = reason
        self._log.log(level, "%s unavailable: %s", self.name, reason)
        return None

    def _shut_down(self, module: ModuleType) -> None:
        try:
            self._stop(module)
        except Exception:  # at exit nothing can be done about it; any type is only worth a debug line.
            self._log.debug("%s did not shut down at exit", self.name, exc_info=True)

    def query(self, function: Callable[..., T], *args: Any) -> T | None:
        """Calls one of the library's functions; any failure becomes ``None``, logged once per function and error.

        Args:
            function: the library's function, passed as the callable itself (never its name as a string).
            args: its arguments.
        """
        module = self.module()
        if module is None:
            return None
        try:
            return function(*args)
        except Exception as error:  # any type, as the module's docstring says.
            name = getattr(function, "__name__", repr(function))
            self.failures.record(f"{name} failed: {type(error).__name__}: {error}", error)
            return None
