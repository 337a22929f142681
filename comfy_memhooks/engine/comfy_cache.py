"""ComfyUI's output cache: asking it to give RAM back through the API the running ComfyUI has, and whether it can.

ComfyUI keeps every node's outputs in its own cache. With ``--cache-ram`` (0.8 and later) that is a
``RAMPressureCache``, whose ``poll(ram_headroom=GB)`` evicts cached outputs while the free RAM it reads is below
the headroom; ComfyUI calls it after every node. It reads ``psutil.virtual_memory().available``, the host's free
RAM: inside a container with a limit it does not see the limit, and never evicts before the kernel kills the
process. 0.33 adds ``comfy.memory_management.extra_ram_release(target, free_active=False)`` and makes the
RAM-pressure cache the default: it asks the cache to evict until the available RAM ComfyUI reads reaches ``target``
bytes and returns the bytes it freed (0 with no RAM-pressure cache, and between prompts, when ComfyUI has unset its
callback). That reading is the host's on 0.33 (``psutil``) and container-aware after it
(``comfy.system_memory.virtual_memory_available()``), so the target is that reading plus what the container misses.
ComfyUI itself evicts every older prompt's output after every node, so what is left to ask for is mostly this
prompt's: first the older outputs (``free_active=False``), then, while still short, this prompt's too
(``free_active=True``, as ComfyUI does itself when it sees its headroom crossed; a consumer still waiting for an
output keeps its own reference, so only the cache's copy goes). Between prompts the cache's own ``ram_release``
is asked directly. The other caches (the classic one, ``--cache-lru``, ``--cache-none``) have nothing to ask; they
are left alone.

The executor hook tells the engine's :class:`SeenCaches` the running prompt's caches, which it keeps weakly: ComfyUI
replaces them when it resets, and a strong reference would keep every output of the old ones alive.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from ..comfyui_modules.cli_args import comfy_args, comfy_cli_args
from ..comfyui_modules.memory_management import comfy_memory_management
from ..comfyui_modules.models import comfy_model_management
from ..comfyui_modules.system_memory import comfy_system_memory
from ..probe.ram import host_available_bytes
from ..probe.readings import GIB, MIB, RamReading, RamSource
from .comfy_release import PromptReleaseWatch

RAM_PRESSURE_CACHE = "RAMPressureCache"
# The least headroom above the host's free RAM: between our reading and the poll's, other processes move it.
POLL_MARGIN_BYTES = 256 * MIB


class SeenCaches:
    """ComfyUI's ``CacheSet`` of the running prompt (``execute``'s ``caches`` argument), as the hook last saw it."""

    def __init__(self) -> None:
        self._caches: weakref.ReferenceType[Any] | None = None

    def remember(self, caches: Any) -> None:
        """Keeps ``caches`` weakly; an object that cannot be weakly referenced is not kept at all."""
        try:
            self._caches = weakref.ref(caches)
        except TypeError:  # nothing is kept rather than a strong reference
            self._caches = None

    def outputs(self) -> Any | None:
        """ComfyUI's output cache, while ComfyUI still holds it."""
        caches = None if self._caches is None else self._caches()
        return getattr(caches, "outputs", None)


def _extra_ram_release() -> Any | None:
    release = getattr(comfy_memory_management(), "extra_ram_release", None)
    return release if callable(release) else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def _cache_ram_gb() -> float | None:
    """The RAM-pressure cache's headroom, in GB: ``--cache-ram``'s value (0.8 to 0.18: one number, unset without
    the option; 0.33: a list, empty by default, whose first value is the headroom for this prompt's outputs, else
    10% of the RAM between 2 and 10 GB). ``None`` when ComfyUI runs another cache or it is unknown."""
    args = comfy_args()
    value = getattr(args, "cache_ram", None)
    if not isinstance(value, list):
        return _number(value)
    if (
        getattr(args, "cache_classic", False)
        or getattr(args, "cache_none", False)
        or _number(getattr(args, "cache_lru", None))
    ):
        return None
    if value:
        return _number(value[0])
    total_mb = _number(getattr(comfy_model_management(), "total_ram", None))
    return None if total_mb is None else min(10.0, max(2.0, total_mb * 0.10 / 1024.0))


def _core_reads_container() -> bool:
    """ComfyUI's cache reads the container's limit (after 0.33: ``comfy.system_memory``)."""
    return callable(getattr(comfy_system_memory(), "virtual_memory_available", None))


def _between_prompts() -> bool:
    """ComfyUI (0.33 and later) runs no prompt: it unsets its release callback when a prompt ends."""
    memory_management = comfy_memory_management()
    return hasattr(memory_management, "extra_ram_release_callback") and (
        getattr(memory_management, "extra_ram_release_callback", None) is None
    )


def comfyui_available_bytes() -> int:
    """The available RAM as ComfyUI's own cache reads it: its container-aware reading where it has one and it gives
    a number, else the host's (what 0.33 reads). A reading that raises is the caller's to contain and count."""
    reading = getattr(comfy_system_memory(), "virtual_memory_available", None)
    value = reading() if callable(reading) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    return host_available_bytes()


def poll_headroom_gb(ram: RamReading, target_available_bytes: int, host_available: int) -> float:
    """The ``ram_headroom`` that makes ``poll`` free what the container needs, though it reads the host's RAM.

    Freed memory shows up in both readings alike, so the headroom is the host's free RAM plus the container's
    shortfall: ``poll`` returns at once when it reads more free RAM than the headroom (so the shortfall, at least
    :data:`POLL_MARGIN_BYTES`, is also what another process may free meanwhile without stopping it), and then evicts
    until it reads 1.1 times the headroom (its own hysteresis, ``comfy_execution/caching.py``). That hysteresis
    applies to the host's free RAM, so on a large host it evicts more than the container needs, up to everything
    the cache holds.
    """
    shortfall = max(target_available_bytes - (ram.available_bytes or 0), POLL_MARGIN_BYTES)
    return (host_available + shortfall) / GIB


def release(
    ram: RamReading, ram_threshold: float, caches: SeenCaches, watch: PromptReleaseWatch
) -> tuple[str | None, str | None]:
    """Asks ComfyUI's cache for RAM until usage is back under ``ram_threshold``: ``(detail, skipped_reason)``."""
    if ram.total_bytes is None or ram.used_bytes is None or ram.percent is None:
        return None, "RAM usage is unknown"
    if ram.percent < ram_threshold:
        return None, f"RAM is under its {ram_threshold:g}% threshold"
    return release_until(ram, int(ram.total_bytes * (1 - ram_threshold / 100)), caches, watch)


def release_until(
    ram: RamReading, target_available: int, caches: SeenCaches, watch: PromptReleaseWatch
) -> tuple[str | None, str | None]:
    """Asks ComfyUI's cache for RAM until ``target_available`` bytes are free under the limit (the container's,
    inside one): under a threshold, or, for predictive cleanup, the peak a node is about to take."""
    shortfall = max(target_available - (ram.available_bytes or 0), 0)
    extra = _extra_ram_release()
    if extra is not None:
        return _release_through_comfyui(extra, shortfall, caches, watch)
    outputs = caches.outputs()
    kind = None if outputs is None else type(outputs).__name__
    if outputs is None or kind != RAM_PRESSURE_CACHE or not callable(getattr(outputs, "poll", None)):
        what = "no output cache seen yet" if outputs is None else f"its output cache is {kind}"
        return None, f"ComfyUI has no API to release its cache here ({what}): left alone"
    entries = getattr(outputs, "cache", None)
    before = len(entries) if isinstance(entries, dict) else None
    headroom = poll_headroom_gb(ram, target_available, host_available_bytes())
    outputs.poll(ram_headroom=headroom)
    after = len(entries) if isinstance(entries, dict) else None
    evicted = "" if before is None or after is None else f": evicted {before - after} of {before} cached outputs"
    return f"RAMPressureCache.poll(ram_headroom={headroom:.2f} GB), for {shortfall / GIB:.2f} GB{evicted}", None


def _bytes(freed: object) -> float | None:
    """What ``extra_ram_release`` returned, in bytes: an int, or a float on 0.33 (each entry counts 0.05 more)."""
    if isinstance(freed, bool) or not isinstance(freed, (int, float)):
        return None
    return float(freed)


def _freed_text(freed: object) -> str:
    count = _bytes(freed)
    return repr(freed) if count is None else f"freed {count / GIB:.2f} GB"


def _release_through_comfyui(
    extra: Any, shortfall: int, caches: SeenCaches, watch: PromptReleaseWatch
) -> tuple[str | None, str | None]:
    """0.33 and later: ``extra_ram_release`` while a prompt runs, the cache's ``ram_release`` between prompts."""
    outputs = caches.outputs()
    found = getattr(outputs, "ram_release", None)
    method = found if callable(found) else None
    if outputs is not None and method is None:
        # Another cache (--cache-classic, --cache-lru, --cache-none): ComfyUI sets no release callback for it, so
        # extra_ram_release does nothing, whether a prompt runs or not.
        return (
            None,
            f"ComfyUI has no API to release its cache here (its output cache is {type(outputs).__name__}): left alone",
        )
    between = _between_prompts()
    if between and method is None:
        return (
            None,
            "ComfyUI has no API to release its cache here between prompts (no output cache seen yet): left alone",
        )
    # The target is the available RAM to reach, as ComfyUI reads it: that reading plus what is missing here.
    target = comfyui_available_bytes() + max(shortfall, POLL_MARGIN_BYTES)
    wanted = f"{target / GIB:.2f} GB available"
    purpose = f"for {shortfall / GIB:.2f} GB"
    if between and method is not None:
        with watch.ours():
            freed = method(target, free_active=True)
        asked = f"{type(outputs).__name__}.ram_release({wanted}, free_active=True)"
        return f"{asked}, {purpose}: {_freed_text(freed)}", None
    with watch.ours():
        freed = extra(target)
        parts = [f"extra_ram_release({wanted}), {purpose}: {_freed_text(freed)}"]
        count = _bytes(freed)
        if count is not None and count < shortfall:
            more = extra(target, free_active=True)
            parts.append(f"then with free_active=True (this prompt's outputs too): {_freed_text(more)}")
    return "comfy.memory_management." + "; ".join(parts), None


@dataclass(frozen=True, slots=True)
class CacheNotice:
    """What the panel says of ComfyUI's output cache.

    Attributes:
        kind: the cache's class (``RAMPressureCache``, ``HierarchicalCache``, ``LRUCache``…); ``None`` before the
            first prompt.
        headroom_gb: ``--cache-ram``'s value, when ComfyUI was started with it.
        reads_host_ram: the cache reads the host's free RAM while this process runs under a container's limit.
        advice: what to pass to ComfyUI to fix it, in words; ``None`` when nothing needs fixing.
    """

    kind: str | None
    headroom_gb: float | None
    reads_host_ram: bool
    advice: str | None


def cache_notice(ram: RamReading, caches: SeenCaches, host_available: int | None = None) -> CacheNotice | None:
    """Whether ComfyUI's RAM cache misreads a container; ``None`` outside ComfyUI."""
    if comfy_cli_args() is None:
        return None
    outputs = caches.outputs()
    kind = None if outputs is None else type(outputs).__name__
    headroom = _cache_ram_gb()
    in_container = ram.source is not RamSource.HOST
    pressure_cache = kind == RAM_PRESSURE_CACHE or (kind is None and headroom is not None)
    reads_host = in_container and pressure_cache and not _core_reads_container()
    advice = None
    if reads_host and ram.available_bytes is not None:
        host = host_available if host_available is not None else host_available_bytes()
        wanted = headroom if headroom is not None else 4.0
        gap = max(host - ram.available_bytes, 0) / GIB
        advice = (
            f"ComfyUI's RAM cache reads the host's free RAM ({host / GIB:.1f} GB), not this container's limit "
            f"({(ram.total_bytes or 0) / GIB:.1f} GB): pass --cache-ram {wanted + gap:.1f} to keep {wanted:g} GB free "
            f"in the container (its headroom plus the {gap:.1f} GB the host has free beyond the container now), or "
            "update ComfyUI to a release whose cache reads the container's limit"
        )
    return CacheNotice(kind=kind, headroom_gb=headroom, reads_host_ram=reads_host, advice=advice)
