"""The one place that talks to the NVIDIA driver, through NVML (``nvidia-ml-py``, imported as ``pynvml``).

The session is a :class:`session.DriverSession`: NVML is loaded and initialised on the first query, not at import,
and every call goes through :meth:`Nvml.query`, which turns any failure into ``None`` and logs each distinct one once.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from types import ModuleType

from .session import DriverSession


def _import_pynvml() -> ModuleType:
    return importlib.import_module("pynvml")


class Nvml(DriverSession):
    """A lazily initialised NVML session.

    Args:
        loader: returns the ``pynvml`` module; tests pass a fake that follows the real one's names and errors.
    """

    def __init__(self, loader: Callable[[], ModuleType] = _import_pynvml):
        super().__init__(
            "NVML",
            loader,
            start=lambda module: module.nvmlInit(),
            stop=lambda module: module.nvmlShutdown(),
            missing="nvidia-ml-py is not installed",
            log=logging.getLogger(__name__),
            missing_level=logging.INFO,
        )
