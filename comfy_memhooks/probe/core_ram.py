"""ComfyUI's own container-aware RAM reading (``comfy.system_memory``, after 0.33), compared with comfy_memhooks'.

ComfyUI after 0.33 reads the memory cgroup itself (``comfy/system_memory.py``: ``cgroup_memory_limit()``,
``cgroup_memory_usage()``, ``virtual_memory_available()``) and sizes its RAM cache and pinned memory from it. Two
readings of one container that disagree would make the panel say one thing while ComfyUI does another, so where
ComfyUI has one, it is the source of truth: when its limit and usage agree with comfy_memhooks' own reading within
:data:`AGREEMENT_PERCENT`, the RAM reading is ComfyUI's (``RamReader.COMFYUI``). Where they disagree, comfy_memhooks'
own reading stays in use and the disagreement is logged once with both figures. ComfyUI's reader takes the first
cgroup directory that answers, the hierarchy's root first: on cgroup v1, a process in a nested group reads the
root's usage (the whole machine's), and comfy_memhooks reads the process's own group and a tighter parent's limit.

Nothing here is read outside ComfyUI (the module is looked up in ``sys.modules``, never imported), and a failing
call is contained by the façade (:class:`..probe.memory.MemoryProbe`): the reading is then comfy_memhooks' own.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace

from ..comfyui_modules.system_memory import comfy_system_memory
from .readings import RamReader, RamReading, RamSource

logger = logging.getLogger(__name__)

AGREEMENT_PERCENT = 5.0
"""Limit and usage each within this share of the larger of the two figures: the readings agree."""


@dataclass(frozen=True, slots=True)
class CoreRamCheck:
    """ComfyUI's reading beside comfy_memhooks', and which one is used.

    Attributes:
        limit_bytes: ``cgroup_memory_limit()``: the limit ComfyUI sees, ``None`` when it sees none.
        usage_bytes: ``cgroup_memory_usage()``: the usage ComfyUI reads (page cache it can drop excluded).
        ours_limit_bytes: comfy_memhooks' limit (``None`` on the host: no container limit).
        ours_used_bytes: comfy_memhooks' usage.
        agrees: both figures within :data:`AGREEMENT_PERCENT` (or neither side sees a limit).
        reader: the reading in use: ComfyUI's when they agree, comfy_memhooks' otherwise.
        disagreement: what differs, in words with both figures; ``None`` when they agree.
    """

    limit_bytes: int | None
    usage_bytes: int | None
    ours_limit_bytes: int | None
    ours_used_bytes: int | None
    agrees: bool
    reader: RamReader
    disagreement: str | None


def _gap_percent(theirs: int, ours: int) -> float:
    larger = max(theirs, ours)
    return 0.0 if larger <= 0 else abs(theirs - ours) * 100.0 / larger


def _gib(count: int | None) -> str:
    return "none" if count is None else f"{count / 1024**3:.2f} GB"


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class CoreRamReader:
    """Reads ``comfy.system_memory`` where ComfyUI has it and reconciles it with comfy_memhooks' reading."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logged: set[tuple[str, str]] = set()
        self.last: CoreRamCheck | None = None
        """The latest comparison, for the panel and the detailed report; ``None`` while ComfyUI has no reader."""

    def reconcile(self, ours: RamReading) -> RamReading:
        """``ours``, or the same reading with ComfyUI's limit and usage when ComfyUI has a reader that agrees."""
        module = comfy_system_memory()
        limit_of = getattr(module, "cgroup_memory_limit", None)
        usage_of = getattr(module, "cgroup_memory_usage", None)
        if not (callable(limit_of) and callable(usage_of)):
            self.last = None
            return ours
        limit = _whole(limit_of())
        usage = _whole(usage_of()) if limit is not None else None
        check = self.compare(ours, limit, usage)
        self.last = check
        if check.reader is not RamReader.COMFYUI or limit is None or usage is None:
            return ours
        used = min(usage, limit)
        return replace(ours, total_bytes=limit, used_bytes=used, available_bytes=limit - used, reader=RamReader.COMFYUI)

    def compare(self, ours: RamReading, limit: int | None, usage: int | None) -> CoreRamCheck:
        """Compares the figures; logs a disagreement above :data:`AGREEMENT_PERCENT` once, with both figures."""
        ours_limit = None if ours.source is RamSource.HOST else ours.total_bytes
        ours_used = ours.used_bytes
        problems = []
        if (limit is None) != (ours_limit is None):
            problems.append(f"limit: ComfyUI {_gib(limit)}, comfy_memhooks {_gib(ours_limit)}")
        elif limit is not None and ours_limit is not None:
            if _gap_percent(limit, ours_limit) > AGREEMENT_PERCENT:
                problems.append(f"limit: ComfyUI {_gib(limit)}, comfy_memhooks {_gib(ours_limit)}")
            if usage is None or ours_used is None or _gap_percent(usage, ours_used) > AGREEMENT_PERCENT:
                problems.append(f"usage: ComfyUI {_gib(usage)}, comfy_memhooks {_gib(ours_used)}")
        agrees = not problems
        disagreement = None
        if problems:
            disagreement = "; ".join(problems)
            self._log_once(ours, disagreement)
        return CoreRamCheck(
            limit_bytes=limit,
            usage_bytes=usage,
            ours_limit_bytes=ours_limit,
            ours_used_bytes=ours_used,
            agrees=agrees,
            reader=RamReader.COMFYUI if agrees and limit is not None else RamReader.OURS,
            disagreement=disagreement,
        )

    def _log_once(self, ours: RamReading, disagreement: str) -> None:
        # Once per kind of disagreement (which figures differ, and where), not once per reading: usage moves.
        kind = (ours.cgroup_path or ours.source.value, disagreement.split(":", maxsplit=1)[0])
        with self._lock:
            if kind in self._logged:
                return
            self._logged.add(kind)
        logger.warning(
            "comfy_memhooks: ComfyUI's comfy.system_memory and comfy_memhooks read this container's RAM differently "
            "(more than %g%%): %s (comfy_memhooks read %s%s); comfy_memhooks' own reading is used",
            AGREEMENT_PERCENT,
            disagreement,
            ours.source.value,
            f" at {ours.cgroup_path}" if ours.cgroup_path else "",
        )


"""The process's reader: one log of disagreements, and the latest comparison for the panel."""
