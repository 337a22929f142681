"""What the executor hook needs to know about ComfyUI before patching it, read without calling anything.

ComfyUI's ``execute`` changed signature three times and turned asynchronous once, so the hook never assumes a
shape: it reads the version for its messages, each parameter's position by name, and whether a function is
synchronous or asynchronous, here.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ..comfyui_modules.process import loaded_comfyui_version

_VERSION_PATTERN = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)


def comfyui_version(execution_module: ModuleType | None = None) -> str | None:
    """ComfyUI's version: its loaded ``comfyui_version`` module, else the file beside ``execution.py``."""
    version = loaded_comfyui_version()
    if version is not None:
        return version
    path = getattr(execution_module, "__file__", None)
    if not isinstance(path, str):
        return None
    try:
        text = (Path(path).parent / "comfyui_version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    match = _VERSION_PATTERN.search(text)
    return match.group(1) if match else None


def parameter_positions(function: Callable[..., Any]) -> dict[str, int]:
    """Each named parameter's position; keyword-only ones get ``sys.maxsize`` (never found in ``args``).

    ``inspect.signature`` follows ``__wrapped__``, so a wrapper made with ``functools.wraps`` shows the original's
    parameters.
    """
    positions: dict[str, int] = {}
    for index, parameter in enumerate(inspect.signature(function).parameters.values()):
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            positions[parameter.name] = index
        elif parameter.kind is parameter.KEYWORD_ONLY:
            positions[parameter.name] = sys.maxsize
    return positions


def sync_or_async(function: Callable[..., Any]) -> str | None:
    """``"async"`` or ``"sync"``; ``None`` when a wrapper hides an async function behind a sync one (or back)."""
    outer = inspect.iscoroutinefunction(function)
    try:
        inner = inspect.unwrap(function)
    except ValueError:  # a cycle of __wrapped__: nothing can be said about it
        return None
    if outer != inspect.iscoroutinefunction(inner):
        return None
    return "async" if outer else "sync"
