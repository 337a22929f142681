"""The executor hook: signals before and after every node ComfyUI runs, and around every prompt.

:func:`install` wraps ComfyUI's ``execution.execute`` (:mod:`.patch`); the :mod:`.tracker` turns its calls into
signals; :mod:`.introspect` reads ComfyUI's version and ``execute``'s parameters; :mod:`.oom` tells an
out-of-memory failure. Nothing here knows about modes, thresholds or settings: what a heavy node is, how to rescue
one and what to do under pressure are given to :func:`install` by the subscriber.
"""

from __future__ import annotations

from ..pipeline import hook_failures
from .patch import hook_status, install, note_not_installed, running_node, uninstall
from .runs import NodeCall
from .status import HookStatus
from .tracker import BoundaryFunction, HeavyTest, PressureFlag, RescueFunction, RetryReport

__all__ = [
    "BoundaryFunction",
    "HeavyTest",
    "HookStatus",
    "NodeCall",
    "PressureFlag",
    "RescueFunction",
    "RetryReport",
    "hook_failures",
    "hook_status",
    "install",
    "note_not_installed",
    "running_node",
    "uninstall",
]
