"""Stand-ins for ComfyUI 0.33's RAM-pressure cache and what follows it, with the real names and semantics.

- :class:`RAMPressureCache`: ``comfy_execution/caching.py``'s cache as comfy_memhooks sees it: ``cache`` (entries),
  ``generation`` and ``used_generation`` (an entry set or read in the running prompt is *active*),
  ``ram_release(target, free_active=False, min_entry_size=0)`` (evicts, largest first, while the available RAM it
  reads is under ``target``; returns the bytes freed), ``active_evictions`` and ``full_evictions`` (flags, reset as
  each prompt starts). Its RAM is a :class:`FakeRam` that each eviction gives back to.
- :func:`install_memory_management`: ``comfy.memory_management`` of 0.33: ``set_ram_cache_release_state``,
  ``extra_ram_release`` (0 while no callback is set, i.e. between prompts), ``extra_ram_release_callback``,
  ``RAM_CACHE_HEADROOM``.
- :func:`install_system_memory`: ``comfy.system_memory`` of 0.34 and later: ``cgroup_memory_limit()``,
  ``cgroup_memory_usage()``, ``virtual_memory_total()``, ``virtual_memory_available()``.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Any

import pytest

from tests.standin_executor import Outputs


@dataclass
class FakeRam:
    """What ``psutil.virtual_memory().available`` reads for the cache."""

    available: int


class RAMPressureCache(Outputs):
    """The stand-in executor's output cache, released as ComfyUI 0.33's is (see the module docstring)."""

    def __init__(self, ram: FakeRam, entry_bytes: int):
        super().__init__()
        self.ram = ram
        self.entry_bytes = entry_bytes
        self.cache: dict[tuple[str, Any], Any] = {}  # keyed by the node and its inputs' signature, as ComfyUI's
        self.generation = 0
        self.used_generation: dict[tuple[str, Any], int] = {}
        self.active_evictions = False
        self.full_evictions = False

    def new_prompt(self, prompt: dict[str, Any]) -> None:
        self.generation += 1
        self.active_evictions = self.full_evictions = False

    def key(self, node_id: str) -> tuple[str, Any]:
        return node_id, self.signatures.get(node_id)

    def get(self, node_id: str) -> Any:
        return self.cache.get(self.key(node_id))

    def set(self, node_id: str, value: Any) -> None:
        self.cache[self.key(node_id)] = value
        self.used_generation[self.key(node_id)] = self.generation
        self.ram.available -= self.entry_bytes

    def ram_release(self, target: int, free_active: bool = False, min_entry_size: int = 0) -> int:
        if self.ram.available >= target:
            return 0
        candidates = [
            key
            for key in self.cache
            if (free_active or self.used_generation[key] != self.generation) and self.entry_bytes >= min_entry_size
        ]
        freed = 0
        while self.ram.available < target and candidates:
            key = candidates.pop()
            del self.cache[key]
            self.used_generation.pop(key, None)
            self.ram.available += self.entry_bytes
            freed += self.entry_bytes
        if freed and free_active:
            self.active_evictions = True
            if min_entry_size == 0:
                self.full_evictions = True
        return freed


def install_memory_management(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("comfy.memory_management")
    module.extra_ram_release_callback = None  # type: ignore[attr-defined]
    module.RAM_CACHE_HEADROOM = 0  # type: ignore[attr-defined]

    def set_ram_cache_release_state(callback: Any, headroom: int) -> None:
        module.extra_ram_release_callback = callback  # type: ignore[attr-defined]
        module.RAM_CACHE_HEADROOM = max(0, int(headroom))  # type: ignore[attr-defined]

    def extra_ram_release(target: int, free_active: bool = False) -> int:
        callback = module.extra_ram_release_callback  # type: ignore[attr-defined]
        if callback is None:
            return 0
        return int(callback(target, free_active=free_active))

    module.set_ram_cache_release_state = set_ram_cache_release_state  # type: ignore[attr-defined]
    module.extra_ram_release = extra_ram_release  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy.memory_management", module)
    return module


def install_system_memory(
    monkeypatch: pytest.MonkeyPatch, limit: int | None, usage: int | None, host_total: int, host_available: int
) -> types.ModuleType:
    module = types.ModuleType("comfy.system_memory")
    module.cgroup_memory_limit = lambda: limit  # type: ignore[attr-defined]
    module.cgroup_memory_usage = lambda: usage  # type: ignore[attr-defined]
    module.virtual_memory_total = lambda: host_total if limit is None else min(host_total, limit)  # type: ignore[attr-defined]

    def virtual_memory_available() -> int:
        if limit is None:
            return host_available
        if usage is None:
            return min(host_available, limit)
        return max(0, min(host_available, limit - usage))

    module.virtual_memory_available = virtual_memory_available  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy.system_memory", module)
    return module
