"""What the per-node profile costs per node, against the hook with the profile off, in the same run. Run by hand:

    python benchmarks/bench_profile.py

It installs the executor hook with the built-in subscriber on an ``execute`` with ComfyUI's real signature that
does only ComfyUI's own bookkeeping, connects the profile's recorder as ComfyUI's start-up does, and runs prompts
of 100 nodes in interleaved batches in four states: the recorder not connected, connected with the
``node_profile`` setting off, on without the RAM peak counters (the profile before they were added: readings
before and after only), and on. It prints the median cost per node of each, the profile's added cost (on minus
off), the peak counters' (a reset of ``VmHWM`` before the node, a read after it, the container's peak where it can
be reset; target: 10 µs at most) and the ratio, for an ordinary node (the target: under 50 µs without a GPU) and
for a heavy node (which also gets a fresh RAM and GPU reading). Then it measures what the store holds when full.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_support import SUCCESS, ExecutionResult, OneNodePrompt, report  # noqa: E402

from comfy_memhooks import signals  # noqa: E402
from comfy_memhooks.comfy.profiling import recorder_for  # noqa: E402
from comfy_memhooks.comfy.runtime import Runtime  # noqa: E402
from comfy_memhooks.engine.core import Engine  # noqa: E402
from comfy_memhooks.hook.runs import NodeRun  # noqa: E402
from comfy_memhooks.pipeline import NodeEnding  # noqa: E402
from comfy_memhooks.profile import NODES_KEPT_PER_PROMPT, PROMPTS_KEPT, ProfileStore  # noqa: E402
from comfy_memhooks.triggers.settings import SettingsStore  # noqa: E402

NODES_PER_PROMPT = 100


class _Outputs:
    def get(self, node_id: str) -> Any:
        return None


class _Caches:
    outputs = _Outputs()


def _module() -> Any:
    """An ``execution`` module whose async ``execute`` (ComfyUI 0.3.68 and later) only marks the node executed."""
    module = type(sys)("execution")
    module.ExecutionResult = ExecutionResult

    async def execute(
        server, dynprompt, caches, current_item, extra_data, executed, prompt_id, execution_list,
        pending_subgraph_results, pending_async_nodes, ui_outputs,
    ):  # fmt: skip
        dynprompt.get_node(current_item)
        executed.add(current_item)
        return SUCCESS

    module.execute = execute
    return module


def _prompt_runner(
    execute: Any, class_type: str, make_prompt: Callable[[], Any] | None = None
) -> Callable[[str], float]:
    """Runs one prompt of NODES_PER_PROMPT nodes with its prompt signals; returns the nanoseconds per node.

    ``make_prompt``: a new prompt (``dynprompt``) for each run, made before the clock starts; else every node is
    one of ``class_type`` with no inputs.
    """
    fixed = OneNodePrompt(class_type)
    node_ids = [str(index) for index in range(NODES_PER_PROMPT)]
    loop = asyncio.new_event_loop()

    async def nodes(prompt: Any, prompt_id: str) -> None:
        executed: set[str] = set()
        for node_id in node_ids:
            await execute(None, prompt, _Caches(), node_id, {}, executed, prompt_id, None, {}, {}, {})

    def run(prompt_id: str) -> float:
        prompt = fixed if make_prompt is None else make_prompt()
        signals.send_safely(signals.prompt_started, prompt_id, prompt_id=prompt_id)
        started = time.perf_counter_ns()
        loop.run_until_complete(nodes(prompt, prompt_id))
        elapsed = time.perf_counter_ns() - started
        signals.send_safely(
            signals.prompt_finished, prompt_id, prompt_id=prompt_id, success=True, duration_seconds=0.0, error=None
        )
        return elapsed / NODES_PER_PROMPT

    return run


def per_node_costs(batches: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="memhooks-bench-profile-"))
    settings = SettingsStore(folder / "comfy_memhooks.json")
    settings.load()
    settings.update({"rules": [{"pattern": "ReActor*", "before_mode": "Monitor Only", "after_mode": "Monitor Only"}]})
    engine = Engine()
    engine.probe.read_ram()  # what the watchdog does every 250 ms during a prompt: the RAM used ordinary nodes show
    module = _module()
    runtime = Runtime(engine=engine, settings=settings, watch=False)
    runtime.install_hook(module)
    recorder = recorder_for(engine, settings, ProfileStore(), runtime.pipeline)
    without_peaks = recorder_for(engine, settings, ProfileStore(), runtime.pipeline)
    without_peaks.peaks = None  # the profile as it was before RAM peaks: readings before and after only
    report(f"per node, median of {batches} prompts of {NODES_PER_PROMPT} nodes in each state, interleaved")
    try:
        for label, class_type in (("ordinary node", "ImageInvert"), ("heavy node (Monitor Only)", "ReActorFaceSwap")):
            run = _prompt_runner(module.execute, class_type)
            costs: dict[str, list[float]] = {"not connected": [], "off": [], "no peaks": [], "on": []}
            for batch in range(batches + 1):  # the first round warms up
                for state, results in costs.items():
                    recorder.disconnect()
                    without_peaks.disconnect()
                    if state != "not connected":
                        (without_peaks if state == "no peaks" else recorder).connect()
                        settings.update({"node_profile": state != "off"})
                    cost = run(f"{class_type}-{state}-{batch}")
                    if batch:
                        results.append(cost)
            medians = {state: statistics.median(results) for state, results in costs.items()}
            on, off, plain = medians["on"] / 1000, medians["off"] / 1000, medians["no peaks"] / 1000
            report(
                f"{label:27}  hook, no recorder {medians['not connected'] / 1000:6.2f} µs   profile off {off:6.2f} µs"
                f"   on without RAM peaks {plain:6.2f} µs   on {on:6.2f} µs   added by the profile {on - off:6.2f} µs"
                f"   added by the RAM peaks {on - plain:6.2f} µs   ratio on/without peaks {on / plain:.2f}"
            )
    finally:
        recorder.disconnect()
        without_peaks.disconnect()
        runtime.uninstall()


def store_memory() -> None:
    """The store's memory when it holds PROMPTS_KEPT prompts: of NODES_PER_PROMPT nodes, and at the bound."""
    engine = Engine()
    folder = Path(tempfile.mkdtemp(prefix="memhooks-bench-profile-"))
    settings = SettingsStore(folder / "comfy_memhooks.json")
    settings.load()
    for nodes in (NODES_PER_PROMPT, NODES_KEPT_PER_PROMPT):
        store = ProfileStore()
        recorder = recorder_for(engine, settings, store)
        node_ids = [str(index) for index in range(nodes)]
        tracemalloc.start()
        for number in range(PROMPTS_KEPT):
            prompt_id = f"prompt-{number}"
            recorder.on_prompt_started(prompt_id, prompt_id=prompt_id)
            for node_id in node_ids:
                node = NodeRun(node_id, "ImageInvert", prompt_id, False, ())
                recorder.before_node(node, False)
                recorder.after_node(node, NodeEnding(ExecutionResult.SUCCESS, False, 0.001, None, None))
            recorder.on_prompt_finished(prompt_id, prompt_id=prompt_id, success=True, duration_seconds=1.0)
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        recorder.disconnect()
        report(
            f"store with {PROMPTS_KEPT} prompts of {nodes} nodes: {held / 1024**2:.2f} MiB "
            f"({held / (PROMPTS_KEPT * nodes):.0f} bytes a node)"
        )


if __name__ == "__main__":
    per_node_costs(batches=int(sys.argv[1]) if len(sys.argv) > 1 else 200)
    store_memory()
