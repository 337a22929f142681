"""A stand-in for comfy-aimdo and ComfyUI's ``comfy.memory_management``, for machines without an NVIDIA GPU.

Real module objects under the real names (``comfy_aimdo.control``, ``comfy_aimdo.model_vbar``), with the real
functions' names and behaviour: ``get_simple_vram_headroom`` raises ``RuntimeError`` before comfy-aimdo is
initialised, ``get_total_vram_usage`` and ``vbars_analyze`` return 0 then, as comfy-aimdo 0.6 does.
"""

from __future__ import annotations

import sys
import types

import pytest


def install_aimdo(
    monkeypatch: pytest.MonkeyPatch,
    *,
    resident: int,
    evictable: int,
    headroom: int | None,
    enabled: bool = True,
) -> None:
    """Loads the stand-ins into ``sys.modules`` as ComfyUI 0.18 would have them; ``headroom=None``: not initialised."""
    control = types.ModuleType("comfy_aimdo.control")
    control.lib = None if headroom is None else object()  # type: ignore[attr-defined]

    def get_total_vram_usage() -> int:
        return 0 if control.lib is None else resident  # type: ignore[attr-defined]

    def get_simple_vram_headroom() -> int:
        if control.lib is None:  # type: ignore[attr-defined]
            raise RuntimeError("comfy-aimdo is not initialized")
        assert headroom is not None
        return headroom

    control.get_total_vram_usage = get_total_vram_usage  # type: ignore[attr-defined]
    control.get_simple_vram_headroom = get_simple_vram_headroom  # type: ignore[attr-defined]
    vbar = types.ModuleType("comfy_aimdo.model_vbar")

    def vbars_analyze(device: int | None = None) -> int:
        return 0 if control.lib is None else evictable  # type: ignore[attr-defined]

    vbar.vbars_analyze = vbars_analyze  # type: ignore[attr-defined]
    package = types.ModuleType("comfy_aimdo")
    package.control = control  # type: ignore[attr-defined]
    package.model_vbar = vbar  # type: ignore[attr-defined]
    memory_management = types.ModuleType("comfy.memory_management")
    memory_management.aimdo_enabled = enabled  # type: ignore[attr-defined]
    for name, module in (
        ("comfy_aimdo", package),
        ("comfy_aimdo.control", control),
        ("comfy_aimdo.model_vbar", vbar),
        ("comfy.memory_management", memory_management),
    ):
        monkeypatch.setitem(sys.modules, name, module)
