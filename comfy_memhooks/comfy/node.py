"""The explicit node, ``UnifiedMemoryManager``: one node instead of the seven cleanup nodes users wire by hand.

It reads memory, applies the decision table through the shared engine (so it shares the hook's and the panel's
cooldown and history), and passes its image and any other input through untouched, so it can sit between any
two nodes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from ..engine.core import Engine, Outcome
from ..engine.history import TriggerKind
from ..engine.modes import Mode
from ..engine.policy import PolicySettings
from ..engine.pressure import DEFAULT_THRESHOLDS, MAX_COOLDOWN_SECONDS
from ..engine.report import detailed_report, status_line
from ..engine.request import CleanupRequest
from ..profile.store import ProfileStore
from ..validation import parse_bool
from .runtime import current_runtime


class AnyType(str):
    """ComfyUI's any-type, ``"*"``, that also links on ComfyUI releases whose validation predates ``IO.ANY``.

    Those releases accept a link when ``not received_type != input_type``; a ``str`` subclass is asked first on
    either side of ``!=``, so answering "never different" makes it match every type. Current releases accept
    ``"*"`` itself, and this still equals ``"*"`` for them and for the frontend.
    """

    __slots__ = ()

    def __ne__(self, other: object) -> bool:
        return False


ANY_TYPE = AnyType("*")
NODE_CLASS_NAME = "UnifiedMemoryManager"
NODE_DISPLAY_NAME = "Unified Memory Manager"
MISSING_PERCENT = math.nan  # a FLOAT output has no None; NaN says "unknown" where 0% would lie


class UnifiedMemoryManager:
    """Monitors RAM and VRAM and frees memory by mode, threshold and cooldown."""

    DESCRIPTION = (
        "Reports RAM (container-aware) and VRAM per GPU, and frees memory by mode when its switches and "
        "thresholds say so. Shares its cooldown and history with comfy_memhooks' automatic hook and panel."
    )
    CATEGORY = "memory"
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES: ClassVar[tuple[str, ...]] = (
        "STRING",
        "STRING",
        "FLOAT",
        "FLOAT",
        "FLOAT",
        "BOOLEAN",
        "IMAGE",
        ANY_TYPE,
    )
    RETURN_NAMES: ClassVar[tuple[str, ...]] = (
        "status_summary",
        "detailed_report",
        "ram_usage_percent",
        "vram_usage_percent",
        "memory_freed_gb",
        "optimization_performed",
        "trigger_image",
        "passthrough",
    )
    OUTPUT_TOOLTIPS: ClassVar[tuple[str, ...]] = (
        "RAM: 8.5GB/16GB (53%) | VRAM: 12.3GB/24GB (51%)",
        "RAM source and limit, each GPU, torch's share, GPU processes and the optimization's actions "
        "(empty when detailed_report is off)",
        "RAM in use, percent of the limit (NaN when unknown)",
        "VRAM in use on the fullest GPU, percent (NaN without a GPU)",
        "RAM plus VRAM returned by this run's optimization, GB",
        "Whether this run freed memory",
        "The trigger_image input, unchanged",
        "The passthrough input, unchanged",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict[str, Any]]:
        modes = [mode.value for mode in Mode]
        return {
            "required": {
                "enable_monitoring": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Read memory and report it in the outputs and on the node."},
                ),
                "enable_optimization": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Allow freeing memory. Off: this node only reports."},
                ),
                "auto_optimize": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Free only when RAM or VRAM is at or above its threshold."},
                ),
                "enable_auto_cleanup": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Free every time this node runs, whatever the thresholds (for slow leaks).",
                    },
                ),
                "mode": (
                    modes,
                    {
                        "default": Mode.BALANCED.value,
                        "tooltip": "How hard to free: Monitor Only frees nothing; "
                        "Conservative collects garbage and empties torch's cache; Balanced also unloads just enough "
                        "to get under the VRAM threshold and returns freed heap to the system; Aggressive unloads "
                        "every model and ReActor's caches.",
                    },
                ),
                "ram_threshold": (
                    "FLOAT",
                    {
                        "default": DEFAULT_THRESHOLDS.ram_percent,
                        "min": 0.1,
                        "max": 100.0,
                        "step": 1.0,
                        "tooltip": "RAM percent (of the container's limit, inside one) at which auto_optimize frees.",
                    },
                ),
                "vram_threshold": (
                    "FLOAT",
                    {
                        "default": DEFAULT_THRESHOLDS.vram_percent,
                        "min": 0.1,
                        "max": 100.0,
                        "step": 1.0,
                        "tooltip": "VRAM percent, on the fullest GPU, at which auto_optimize frees.",
                    },
                ),
                "cooldown_seconds": (
                    "FLOAT",
                    {
                        "default": DEFAULT_THRESHOLDS.cooldown_seconds,
                        "min": 0.0,
                        "max": MAX_COOLDOWN_SECONDS,
                        "step": 1.0,
                        "tooltip": "Seconds a routine optimization waits after any other (this node's, the hook's or "
                        "the panel's). 0 turns it off. Never holds back one under pressure (at a threshold).",
                    },
                ),
                "detailed_report": (
                    "BOOLEAN",
                    {"default": False, "tooltip": "Fill the detailed_report output with the full breakdown."},
                ),
            },
            "optional": {
                "trigger_image": (
                    "IMAGE",
                    {"tooltip": "Connect an image to run this node at that point of the workflow; passed through."},
                ),
                "passthrough": (
                    ANY_TYPE,
                    {
                        "tooltip": "Anything (a model, a latent): passed through unchanged, to place this node "
                        "between any two nodes."
                    },
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def IS_CHANGED(cls, **_: Any) -> float:
        """A new NaN each call, so ComfyUI's cache never reuses this node's last result: memory changes.

        It must be a new object: ComfyUI compares cache keys as tuples, and tuple equality tries identity before
        ``==``, so the one shared ``math.nan`` would compare equal to itself and the node would be served cached.
        """
        return float("nan")

    def run(
        self,
        enable_monitoring: object,
        enable_optimization: object,
        auto_optimize: object,
        enable_auto_cleanup: object,
        mode: object,
        ram_threshold: object,
        vram_threshold: object,
        cooldown_seconds: object,
        detailed_report: object,
        trigger_image: Any = None,
        passthrough: Any = None,
        unique_id: object = None,
    ) -> dict[str, Any]:
        # Validated first, all of them: a bad value must raise before anything is freed.
        settings = PolicySettings.parse(
            enable_optimization=enable_optimization,
            auto_optimize=auto_optimize,
            enable_auto_cleanup=enable_auto_cleanup,
            mode=mode,
            ram_threshold=ram_threshold,
            vram_threshold=vram_threshold,
            cooldown_seconds=cooldown_seconds,
        )
        monitoring = parse_bool(enable_monitoring, "enable_monitoring")
        want_report = parse_bool(detailed_report, "detailed_report")

        runtime = current_runtime()
        engine = runtime.engine
        request = CleanupRequest.decided_by(
            settings,
            TriggerKind.NODE,
            node_id=None if unique_id is None else str(unique_id),
            node_class=NODE_CLASS_NAME,
            # This node runs between the others, in the worker thread: the last rung may run, as the settings say.
            unload_models=runtime.settings.current.pressure_unloads_models,
        )
        outcome = engine.run(request)
        return self._outputs(outcome, monitoring, want_report, trigger_image, passthrough, engine, runtime.profiles)

    @staticmethod
    def _outputs(
        outcome: Outcome,
        monitoring: bool,
        want_report: bool,
        trigger_image: Any,
        passthrough: Any,
        engine: Engine,
        profiles: ProfileStore,
    ) -> dict[str, Any]:
        freed = outcome.record.freed_gib if outcome.record is not None else 0.0
        if monitoring:
            summary = status_line(outcome.snapshot)
            report = ""
            if want_report:
                with_processes = dataclasses.replace(outcome.snapshot, processes=engine.probe.processes())
                profile = profiles.current()  # the running prompt's nodes so far
                report = detailed_report(
                    with_processes,
                    outcome.record,
                    outcome.reason,
                    profile,
                    core_check=engine.probe.core_ram.last,
                    release=engine.release.current(),
                )
            ram_percent = outcome.snapshot.ram.percent
            vram_percent = outcome.snapshot.vram_percent
        else:
            summary, report, ram_percent, vram_percent = "monitoring off", "", None, None
        result = (
            summary,
            report,
            MISSING_PERCENT if ram_percent is None else float(ram_percent),
            MISSING_PERCENT if vram_percent is None else float(vram_percent),
            float(freed),
            outcome.performed,
            trigger_image,
            passthrough,
        )
        return {"ui": {"text": [summary]}, "result": result}


NODE_CLASS_MAPPINGS = {NODE_CLASS_NAME: UnifiedMemoryManager}
NODE_DISPLAY_NAME_MAPPINGS = {NODE_CLASS_NAME: NODE_DISPLAY_NAME}
