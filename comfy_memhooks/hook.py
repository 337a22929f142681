"""The executor hook: signals before and after every node ComfyUI runs. (Built in the hook issue.)"""

from __future__ import annotations

from dataclasses import dataclass

from .signals import receiver_failures


@dataclass(frozen=True, slots=True)
class HookStatus:
    """Whether the executor hook is in place, and what went wrong if not.

    Attributes:
        installed: ComfyUI's ``execution.execute`` is wrapped.
        executor: ``"async"`` or ``"sync"``, the kind of ComfyUI executor found; ``None`` when not installed.
        comfyui_version: ComfyUI's version, when it could be read.
        reason: why the hook is not installed, in words for the user.
        receiver_errors: failures contained in signal receivers since start-up.
        last_error: the latest of those, in words.
    """

    installed: bool
    executor: str | None
    comfyui_version: str | None
    reason: str | None
    receiver_errors: int
    last_error: str | None


def hook_status() -> HookStatus:
    return HookStatus(
        installed=False,
        executor=None,
        comfyui_version=None,
        reason="not installed",
        receiver_errors=receiver_failures.count,
        last_error=receiver_failures.last_error,
    )
