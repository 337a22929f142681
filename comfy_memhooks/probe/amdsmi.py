"""The one place that talks to the AMD GPU driver, through AMD SMI's Python package (``amdsmi``, shipped with ROCm).

``amdsmi`` is optional and usually absent (it is never a dependency). Like NVML it is a :class:`session.DriverSession`,
loaded and initialised on the first query, not at import, and only once torch shows that this process uses ROCm.
Every call goes through :meth:`AmdSmi.query`, which turns an ``AmdSmiException`` (and any other exception: the
bindings wrap a C library whose errors vary between ROCm releases) into ``None``, counted and logged once per kind.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from .session import DriverSession

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _import_amdsmi() -> ModuleType:
    return importlib.import_module("amdsmi")


@dataclass(frozen=True, slots=True)
class AmdGpu:
    """One GPU as AMD SMI reports it, device-wide (every process's VRAM counts in ``used_bytes``)."""

    index: int  # the position in ``amdsmi_get_processor_handles()``
    name: str | None
    total_bytes: int | None
    used_bytes: int | None


@dataclass(frozen=True, slots=True)
class AmdProcess:
    """A process AMD SMI lists on one GPU. Its ``name`` is never kept: it can carry the command line."""

    pid: int
    vram_bytes: int | None
    gpu_index: int  # the position in ``amdsmi_get_processor_handles()``


def _bytes(value: object) -> int | None:
    """An amdsmi figure in bytes; ``"N/A"`` (what amdsmi returns for an unsupported field) becomes ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


class AmdSmi(DriverSession):
    """A lazily initialised AMD SMI session.

    Args:
        loader: returns the ``amdsmi`` module; tests pass a stand-in that follows the real one's names and errors.
    """

    def __init__(self, loader: Callable[[], ModuleType] = _import_amdsmi):
        super().__init__(
            "AMD SMI",
            loader,
            start=lambda module: module.amdsmi_init(),
            stop=lambda module: module.amdsmi_shut_down(),
            missing="amdsmi is not installed",
            log=logging.getLogger(__name__),
            missing_level=logging.DEBUG,
        )

    def _handles(self, module: ModuleType) -> list[Any]:
        return list(self.query(module.amdsmi_get_processor_handles) or ())

    def gpus(self) -> tuple[AmdGpu, ...] | None:
        """Every GPU's name, total and used VRAM in processor-handle order; ``None`` when AMD SMI cannot answer.

        A figure whose call fails is ``None``; the other GPUs and figures are still read.
        """
        module = self.module()
        if module is None:
            return None
        handles = self._handles(module)
        if not handles:
            return None
        vram = module.AmdSmiMemoryType.VRAM
        found = []
        for index, handle in enumerate(handles):
            asic = self.query(module.amdsmi_get_gpu_asic_info, handle)
            name = asic.get("market_name") if isinstance(asic, dict) else None
            found.append(
                AmdGpu(
                    index=index,
                    name=None if name is None else str(name),
                    total_bytes=_bytes(self.query(module.amdsmi_get_gpu_memory_total, handle, vram)),
                    used_bytes=_bytes(self.query(module.amdsmi_get_gpu_memory_usage, handle, vram)),
                )
            )
        return tuple(found)

    def processes(self) -> tuple[AmdProcess, ...] | None:
        """Every process on any GPU with its VRAM (``memory_usage["vram_mem"]``); ``None`` without AMD SMI."""
        module = self.module()
        if module is None:
            return None
        found: list[AmdProcess] = []
        for index, handle in enumerate(self._handles(module)):
            for info in self.query(module.amdsmi_get_gpu_process_list, handle) or ():
                if not isinstance(info, dict) or _bytes(info.get("pid")) is None:
                    continue  # older bindings list opaque handles; without a pid there is nothing to show
                usage = info.get("memory_usage")
                vram_bytes = _bytes(usage.get("vram_mem")) if isinstance(usage, dict) else None
                found.append(AmdProcess(pid=int(info["pid"]), vram_bytes=vram_bytes, gpu_index=index))
        return tuple(found)
