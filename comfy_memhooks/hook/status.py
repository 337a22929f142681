"""What the hook reports of itself: whether it is in place, on which executor, and what failed."""

from __future__ import annotations

from dataclasses import dataclass


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
        prompt_signals: ``PromptExecutor`` is wrapped too, so prompt started/finished fire.
        hook_errors: failures of the hook's own code, contained, since start-up.
        last_hook_error: the latest of those, in words.
    """

    installed: bool
    executor: str | None
    comfyui_version: str | None
    reason: str | None
    receiver_errors: int
    last_error: str | None
    prompt_signals: bool = False
    hook_errors: int = 0
    last_hook_error: str | None = None
