"""ComfyUI's own container-aware RAM reading (``comfy.system_memory``, after 0.33), compared with comfy_memhooks'.

ComfyUI after 0.33 reads the memory cgroup itself (``comfy/system_memory.py``: ``cgroup_memory_limit()``,
``cgroup_memory_usage()``, ``virtual_memory_available()``) and sizes its RAM cache and pinned memory from it. Two
readings of one container that disagree would make the panel say one thing while ComfyUI does another, so where
ComfyUI has one it is compared with comfy_memhooks' own on every reading: within :data:`AGREEMENT_PERCENT` the RAM
reading is ComfyUI's (``RamReader.COMFYUI``); beyond it the disagreement is logged once with both figures.

ComfyUI's reader starts at the process's own cgroup and walks up its ancestors to the mount root (the well-known
roots are its fallback, consulted last): the limit is the smallest finite one on that path (one at or above the
host's RAM counts as none), and the usage is read, minus the inactive page cache, in the directory that limit came
from. comfy_memhooks takes the same smallest limit but reads the usage of the process's own group. So the two
disagree for real when the binding limit sits on a parent: ComfyUI counts the parent's whole usage, siblings
included, which is what the kernel holds against that limit, while comfy_memhooks counts its own group only. They
also disagree after the limit changes at run time: the merged version finds its directory and limit once per
process, comfy_memhooks reads them afresh. Where they disagree, the
reading that leaves less RAM available is used (each side's error only ever overstates what is free), and the panel
says which one.

Nothing here is read outside ComfyUI (the module is looked up in ``sys.modules``, never imported), and a call of
ComfyUI's reader that raises is contained here, counted and logged once: the reading is then comfy_memhooks' own.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace

from ..comfyui_modules.system_memory import comfy_system_memory
from ..failures import Failures
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
        reader: the reading in use: ComfyUI's when they agree, else the one that leaves less RAM available.
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


def _tighter(ours: RamReading, limit: int | None, usage: int | None) -> bool:
    """ComfyUI's limit and usage leave less RAM available than comfy_memhooks' container reading does."""
    if limit is None or usage is None or ours.source is RamSource.HOST or ours.available_bytes is None:
        return False
    return limit - min(usage, limit) < ours.available_bytes


class CoreRamReader:
    """Reads ``comfy.system_memory`` where ComfyUI has it and reconciles it with comfy_memhooks' reading.

    Attributes:
        failures: calls of ComfyUI's reader that raised, each kind logged once (the probe counts them).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logged: set[tuple[str, str]] = set()
        self.failures = Failures(
            logger,
            "ComfyUI's comfy.system_memory failed while {kind}; comfy_memhooks' own reading is used",
            logging.WARNING,
        )
        self.last: CoreRamCheck | None = None
        """The latest comparison, for the panel and the detailed report; ``None`` while ComfyUI has no reader."""

    def reconcile(self, ours: RamReading) -> RamReading:
        """``ours``, or the same reading with ComfyUI's limit and usage when ComfyUI has a reader that agrees
        (or, disagreeing, leaves less RAM available)."""
        module = comfy_system_memory()
        limit_of = getattr(module, "cgroup_memory_limit", None)
        usage_of = getattr(module, "cgroup_memory_usage", None)
        if not (callable(limit_of) and callable(usage_of)):
            self.last = None
            return ours
        try:
            limit = _whole(limit_of())
            usage = _whole(usage_of()) if limit is not None else None
        except Exception as error:  # any type (an OSError from a cgroup file): ComfyUI's reading is unknown
            self.failures.record(f"reading its cgroup figures ({type(error).__name__})", error)
            self.last = None
            return ours
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
        comfyui = limit is not None and (agrees or _tighter(ours, limit, usage))
        return CoreRamCheck(
            limit_bytes=limit,
            usage_bytes=usage,
            ours_limit_bytes=ours_limit,
            ours_used_bytes=ours_used,
            agrees=agrees,
            reader=RamReader.COMFYUI if comfyui else RamReader.OURS,
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
            "(more than %g%%): %s (comfy_memhooks read %s%s); the reading that leaves less RAM available is used",
            AGREEMENT_PERCENT,
            disagreement,
            ours.source.value,
            f" at {ours.cgroup_path}" if ours.cgroup_path else "",
        )
