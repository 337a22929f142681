"""What predictive cleanup adds per node, against the per-node profile alone, in the same run. Run by hand:

    python benchmarks/bench_predictive.py [prompts]

The hook with the built-in subscriber and the profile's recorder run on an ``execute`` with ComfyUI's real
signature that does only ComfyUI's bookkeeping (as in ``bench_profile.py``); each node has a frame-count and size
widget and a link to the node before it, so the workload is read on every node. Prompts of 100 nodes run in
interleaved batches in four states: the profile alone; with predictive cleanup connected but its setting off; on,
with the class never seen (left to the thresholds); on, with the class learned small (a prediction, no reading);
and on, learned large enough to be checked against a fresh RAM reading that finds room (no cleanup runs). It
prints each state's median cost per node, what predictive cleanup adds, and the ratio against the profile alone.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_profile import NODES_PER_PROMPT, _module, _prompt_runner, report  # noqa: E402

from comfy_memhooks.comfy.profiling import recorder_for  # noqa: E402
from comfy_memhooks.comfy.runtime import Runtime  # noqa: E402
from comfy_memhooks.engine.core import Engine  # noqa: E402
from comfy_memhooks.profile import ProfileStore  # noqa: E402
from comfy_memhooks.triggers.learned import LearnedPeaks, Sample, Workload  # noqa: E402
from comfy_memhooks.triggers.predictive import PredictiveCleanup  # noqa: E402
from comfy_memhooks.triggers.settings import SettingsStore  # noqa: E402

MIB = 1024**2


class _Prompt:
    """Each node with widgets that drive its memory and a link to the node before it; ``unseen``: each node a class
    of its own, never seen before (learned only once it has run)."""

    def __init__(self, class_type: str, unseen: bool = False):
        self._nodes = {
            str(index): {
                "class_type": f"{class_type}-{index}-{id(self)}" if unseen else class_type,
                "inputs": {"frames": 16, "width": 512, "height": 512, "images": [str(index - 1), 0], "seed": 7},
            }
            for index in range(NODES_PER_PROMPT)
        }

    def get_node(self, node_id: str) -> dict[str, Any]:
        return self._nodes[node_id]


def per_node_costs(batches: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="memhooks-bench-predictive-"))
    settings = SettingsStore(folder / "comfy_memhooks.json")
    settings.load()
    engine = Engine()
    engine.probe.read_ram()
    module = _module()
    runtime = Runtime(engine=engine, settings=settings, watch=False)
    runtime.install_hook(module)
    table = LearnedPeaks()
    workload = Workload("frame_pixels", 16 * 512 * 512)
    table.learn("SmallNode", Sample(MIB, None, workload))
    table.learn("LargeNode", Sample(128 * MIB, None, workload))  # checked against RAM; this machine has room
    predictor = PredictiveCleanup(
        engine, table, enabled=lambda: settings.current.predictive_cleanup, pipeline=runtime.pipeline
    )
    recorder = recorder_for(engine, settings, ProfileStore(), runtime.pipeline)
    states = {
        "profile alone": ("SmallNode", False, True),
        "predictive off": ("SmallNode", True, False),
        "on, class unseen": ("Unseen", True, True),
        "on, learned small": ("SmallNode", True, True),
        "on, learned, RAM read": ("LargeNode", True, True),
    }
    runners = {
        name: _prompt_runner(module.execute, class_type, lambda kind=class_type: _Prompt(kind, kind == "Unseen"))
        for name, (class_type, _, _) in states.items()
    }
    costs: dict[str, list[float]] = {name: [] for name in states}
    report(f"per node, median of {batches} prompts of {NODES_PER_PROMPT} nodes in each state, interleaved")
    try:
        for batch in range(batches + 1):  # the first round warms up
            for name, (_, connected, enabled) in states.items():
                recorder.disconnect()
                predictor.disconnect()
                if connected:
                    predictor.connect()
                recorder.connect()
                settings.update({"predictive_cleanup": enabled})
                cost = runners[name](f"{name}-{batch}")
                if batch:
                    costs[name].append(cost)
    finally:
        recorder.disconnect()
        predictor.disconnect()
        runtime.uninstall()
    base = statistics.median(costs["profile alone"])
    for name, results in costs.items():
        median = statistics.median(results)
        report(
            f"{name:24} {median / 1000:7.2f} µs   added to the profile {(median - base) / 1000:6.2f} µs   "
            f"ratio {median / base:.2f}"
        )
    if predictor.engine.history.records():
        report("(a cleanup ran: this machine had too little free RAM for the large class; figures include it)")


if __name__ == "__main__":
    per_node_costs(batches=int(sys.argv[1]) if len(sys.argv) > 1 else 200)
