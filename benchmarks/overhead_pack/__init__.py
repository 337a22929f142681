"""The benchmark's own node pack: no nodes, so a ComfyUI with it alone is the empty-pack baseline.

It times each prompt (``PromptExecutor.execute``, which runs all of a prompt's nodes in ComfyUI's worker thread)
three ways: wall-clock, the worker thread's CPU time and the whole process's CPU time, served as JSON at
``GET /memhooks_bench/times`` (the CPU times leave out what other processes on a busy machine take). With
``MEMHOOKS_BENCH_PROFILE`` naming a folder, it also profiles each prompt in the worker thread with cProfile and
writes ``<folder>/<n>.prof``. With ``MEMHOOKS_BENCH_STEPS`` set, it times comfy_memhooks' own parts on the
executor's path directly (the tracker's calls, each per-node pipeline step, each signal sent), in ComfyUI's
worker thread, and serves the totals per prompt at ``GET /memhooks_bench/steps``. With ``MEMHOOKS_BENCH_CALLGRIND``
set (ComfyUI under ``valgrind --tool=callgrind --instr-atstart=no``), it has callgrind count each prompt exactly: the
counters are switched on and zeroed as ``PromptExecutor.execute`` starts and dumped as it returns, from the worker
thread itself, so neither ComfyUI's ``gc.collect()`` after a prompt (whose cost grows with every module loaded) nor
the benchmark's polling falls inside. Loaded beside comfy_memhooks or alone, the pack is the same, so the two
servers differ only by comfy_memhooks.
"""

from __future__ import annotations

import cProfile
import functools
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

_TIMES: list[dict[str, float]] = []
_STEPS: list[dict[str, list[int]]] = []  # per prompt: each part's [nanoseconds, calls]
_TIMED = "__memhooks_bench_timed__"
_DETAILS = (  # inside the profile's steps, the parts that read the kernel's counters and keep the record
    ("comfy_memhooks.profile.sampling", "ResidentSet", "read"),
    ("comfy_memhooks.profile.high_water", "ProcessHighWater", "reset"),
    ("comfy_memhooks.profile.high_water", "ProcessHighWater", "read"),
    ("comfy_memhooks.profile.store", "ProfileStore", "add"),
    ("comfy_memhooks.profile.recorder", "ProfileRecorder", "_profile"),
    ("comfy_memhooks.profile.recorder", "ProfileRecorder", "_before"),
)


def _timer(name: str, function: Any) -> Any:
    """``function``, adding its duration to the running prompt's entry ``name``."""

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter_ns()
        try:
            return function(*args, **kwargs)
        finally:
            entry = _STEPS[-1].setdefault(name, [0, 0])
            entry[0] += time.perf_counter_ns() - started
            entry[1] += 1

    setattr(timed, _TIMED, True)
    return timed


def _time_memhooks() -> None:
    """Wraps comfy_memhooks' parts on the executor's path in timers, again after its pipeline rebuilt a tuple."""
    if "comfy_memhooks.hook.tracker" not in sys.modules:
        return
    from comfy_memhooks import signals
    from comfy_memhooks.comfy.runtime import current_runtime
    from comfy_memhooks.hook.tracker import Tracker

    for method in ("node_enter", "node_started", "node_result"):
        if not hasattr(getattr(Tracker, method), _TIMED):
            setattr(Tracker, method, _timer(f"tracker.{method}", getattr(Tracker, method)))
    for module_name, class_name, method in _DETAILS:
        owner = getattr(sys.modules.get(module_name), class_name, None)
        if owner is not None and not hasattr(getattr(owner, method), _TIMED):
            setattr(owner, method, _timer(f"    {class_name}.{method}", getattr(owner, method)))
    if not hasattr(signals.send_safely, _TIMED):
        send = signals.send_safely

        def send_safely(signal: Any, sender: Any, **kwargs: Any) -> None:
            timed = _timer(f"signal {signal.name}", send)
            timed(signal, sender, **kwargs)

        setattr(send_safely, _TIMED, True)
        signals.send_safely = send_safely
    node_pipeline = current_runtime().pipeline
    for name in ("start_steps", "heavy_start_steps", "end_steps", "heavy_end_steps"):
        steps = getattr(node_pipeline, name)
        phase = "start" if "start" in name else "end"
        setattr(
            node_pipeline,
            name,
            tuple(
                (slot, step if hasattr(step, _TIMED) else _timer(f"  {phase} step {slot.name}", step))
                for slot, step in steps
            ),
        )


def _callgrind(*options: str) -> None:
    """Tells this process's callgrind what to do (``callgrind_control``), and waits until it has."""
    subprocess.run(["callgrind_control", *options, str(os.getpid())], check=True, capture_output=True)


def _timed(original: Any, folder: Path | None, steps: bool, callgrind: bool) -> Any:
    counter = itertools.count()

    @functools.wraps(original)
    def execute(*args: Any, **kwargs: Any) -> Any:
        if steps:
            _STEPS.append({})
            _time_memhooks()
        if callgrind:
            _callgrind("--instr=on")
            _callgrind("--zero")
        try:
            return _execute(*args, **kwargs)
        finally:
            if callgrind:
                _callgrind("--dump")
                _callgrind("--instr=off")

    def _execute(*args: Any, **kwargs: Any) -> Any:
        profiler = None
        if folder is not None:
            profiler = cProfile.Profile()
            profiler.enable()
        wall, thread, process = time.perf_counter(), time.thread_time(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            _TIMES.append(
                {
                    "wall_seconds": time.perf_counter() - wall,
                    "worker_cpu_seconds": time.thread_time() - thread,
                    "process_cpu_seconds": time.process_time() - process,
                }
            )
            if profiler is not None and folder is not None:
                profiler.disable()
                profiler.dump_stats(str(folder / f"{next(counter)}.prof"))

    return execute


def _install() -> None:
    import execution  # ComfyUI's
    from aiohttp import web
    from server import PromptServer

    folder_name = os.environ.get("MEMHOOKS_BENCH_PROFILE")
    folder = Path(folder_name) if folder_name else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    steps = bool(os.environ.get("MEMHOOKS_BENCH_STEPS"))
    callgrind = bool(os.environ.get("MEMHOOKS_BENCH_CALLGRIND"))
    execution.PromptExecutor.execute = _timed(execution.PromptExecutor.execute, folder, steps, callgrind)

    @PromptServer.instance.routes.get("/memhooks_bench/times")
    async def times(request: web.Request) -> web.Response:
        return web.json_response(_TIMES)

    @PromptServer.instance.routes.get("/memhooks_bench/steps")
    async def step_times(request: web.Request) -> web.Response:
        return web.json_response(_STEPS)


_install()
