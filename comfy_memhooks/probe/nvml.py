"""The one place that talks to the NVIDIA driver, through NVML (``nvidia-ml-py``, imported as ``pynvml``).

NVML is loaded and initialised on the first query, not at import: ComfyUI imports every extension at start-up,
and a machine without an NVIDIA driver must not pay for, or log about, a GPU it does not have. Every call goes
through :meth:`Nvml.query`, which turns any ``NVMLError`` into ``None`` and logs each distinct failure once.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from ..failures import Failures

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _import_pynvml() -> ModuleType:
    return importlib.import_module("pynvml")


class Nvml:
    """A lazily initialised NVML session.

    Args:
        loader: returns the ``pynvml`` module; tests pass a fake that follows the real one's names and errors.
    """

    def __init__(self, loader: Callable[[], ModuleType] = _import_pynvml):
        self._loader = loader
        self._lock = threading.Lock()
        self._module: ModuleType | None = None
        self._initialised = False
        self._unavailable_reason: str | None = None
        self.failures = Failures(logger, "NVML {kind}", level=logging.WARNING, traceback=False)

    @property
    def unavailable_reason(self) -> str | None:
        """Why NVML cannot be used, once a query has tried; ``None`` while it works or before the first try."""
        return self._unavailable_reason

    def may_call_driver(self) -> bool:
        """Whether a query may reach the driver: before the first load, or once NVML started."""
        return not self._initialised or self._module is not None

    def module(self) -> ModuleType | None:
        """The initialised ``pynvml`` module, or ``None`` when the library or the driver is missing."""
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
            self._unavailable_reason = "nvidia-ml-py is not installed"
            logger.info("NVML unavailable: %s", self._unavailable_reason)
            return None
        except Exception as error:  # a pynvml that fails at import (a broken or shadowing copy) means no NVML.
            self._unavailable_reason = f"pynvml could not be loaded: {type(error).__name__}: {error}"
            logger.warning("NVML unavailable: %s", self._unavailable_reason)
            return None
        try:
            module.nvmlInit()
        except Exception as error:  # NVMLError, or anything from an old shadowing pynvml: either way no NVML.
            self._unavailable_reason = f"NVML could not start: {type(error).__name__}: {error}"
            logger.info("NVML unavailable: %s", self._unavailable_reason)
            return None
        atexit.register(self._shutdown, module)
        return module

    @staticmethod
    def _shutdown(module: ModuleType) -> None:
        try:
            module.nvmlShutdown()
        except Exception:  # at exit nothing can be done about it; any type is only worth a debug line.
            logger.debug("nvmlShutdown failed at exit", exc_info=True)

    def query(self, function: Callable[..., T], *args: Any) -> T | None:
        """Calls an NVML function; any failure becomes ``None``, logged once per function and error.

        Not only ``NVMLError``: a driver call can raise ``OSError`` or ``UnicodeDecodeError``, and an old shadowing
        ``pynvml`` an ``AttributeError``; each of those must cost one reading, never the caller.

        Args:
            function: a ``pynvml`` function, passed as the callable itself (never its name as a string).
            args: its arguments.
        """
        module = self.module()
        if module is None:
            return None
        try:
            return function(*args)
        except Exception as error:  # any type, as said above.
            self._log_once(function, error)
            return None

    def _log_once(self, function: Callable[..., Any], error: Exception) -> None:
        name = getattr(function, "__name__", repr(function))
        self.failures.record(f"{name} failed: {type(error).__name__}: {error}", error)
