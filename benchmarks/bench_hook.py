"""What the executor hook costs per node, measured against ComfyUI without it in the same run. Run by hand:

    python benchmarks/bench_hook.py                      # the wrapper alone, per node call
    python benchmarks/bench_hook.py --against f919a16    # also today's installed hook against an older revision
    COMFYUI_DIR=... COMFYUI_PYTHON=... python benchmarks/bench_hook.py --comfyui   # also a real ComfyUI

Part one calls an ``execute`` with ComfyUI's real signatures (async with 11 parameters, sync with 9) that does
only ComfyUI's own bookkeeping, directly and through the hook, in interleaved batches, and prints the median
cost per call and the difference:

- the hook with no receivers connected;
- the hook with the built-in subscriber, for a node that matches no heavy-node pattern;
- the hook with the built-in subscriber, for a heavy node whose rule is Monitor Only.

Part two (``--comfyui``) starts a real ComfyUI and times a chain of 300 ``ImageInvert`` nodes on an 8x8
``EmptyImage``, with the hook switched on and off in turns on the same server, and prints the medians and
their ratio (ComfyUI's own ``execution_start`` to ``execution_success`` timestamps, in ms).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import importlib
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_support import SUCCESS, ExecutionResult, OneNodePrompt, report  # noqa: E402

from comfy_memhooks import hook  # noqa: E402
from comfy_memhooks.comfy.runtime import Runtime  # noqa: E402
from comfy_memhooks.engine.core import Engine  # noqa: E402
from comfy_memhooks.triggers.settings import SettingsStore  # noqa: E402
from tests.integration.comfyui_server import ComfyUI, skip_reason  # noqa: E402


def _module(kind: str) -> Any:
    """An ``execution`` module whose ``execute`` does what ComfyUI's does for a finished node, and no more."""
    module = type(sys)("execution")
    module.ExecutionResult = ExecutionResult

    if kind == "async":

        async def execute(
            server, dynprompt, caches, current_item, extra_data, executed, prompt_id, execution_list,
            pending_subgraph_results, pending_async_nodes, ui_outputs,
        ):  # fmt: skip
            dynprompt.get_node(current_item)
            executed.add(current_item)
            return SUCCESS

    else:

        def execute(
            server, dynprompt, caches, current_item, extra_data, executed, prompt_id, execution_list,
            pending_subgraph_results,
        ):  # fmt: skip
            dynprompt.get_node(current_item)
            executed.add(current_item)
            return SUCCESS

    module.execute = execute
    return module


class _Outputs:
    def get(self, node_id: str) -> Any:
        return None


class _Caches:
    outputs = _Outputs()


def _arguments(kind: str, class_type: str) -> tuple[Any, ...]:
    common = (None, OneNodePrompt(class_type), _Caches(), "7", {}, set(), "prompt", None, {})
    return (*common, {}, {}) if kind == "async" else common


def _batch_timer(
    function: Callable[..., Any], arguments: tuple[Any, ...], kind: str, calls: int
) -> Callable[[], float]:
    if kind == "async":

        async def run() -> None:
            for _ in range(calls):
                await function(*arguments)

        loop = asyncio.new_event_loop()
        atexit.register(loop.close)  # closed before the interpreter tears down, not by the garbage collector

        def timed_async() -> float:
            started = time.perf_counter_ns()
            loop.run_until_complete(run())
            return (time.perf_counter_ns() - started) / calls

        return timed_async

    def timed() -> float:
        started = time.perf_counter_ns()
        for _ in range(calls):
            function(*arguments)
        return (time.perf_counter_ns() - started) / calls

    return timed


_installed: list[Runtime] = []  # what _compare takes out after each comparison


def _compare(label: str, kind: str, class_type: str, setup: Callable[[Any], None], batches: int, calls: int) -> None:
    module = _module(kind)
    original = module.execute
    setup(module)
    wrapped = module.execute
    arguments = _arguments(kind, class_type)
    direct = _batch_timer(original, arguments, kind, calls)
    hooked = _batch_timer(wrapped, arguments, kind, calls)
    direct(), hooked()  # warm up
    direct_ns, hooked_ns = [], []
    for _ in range(batches):
        direct_ns.append(direct())
        hooked_ns.append(hooked())
    for runtime in _installed:
        runtime.uninstall()
    _installed.clear()
    hook.uninstall()
    base, with_hook = statistics.median(direct_ns), statistics.median(hooked_ns)
    report(
        f"{kind:5}  {label:44}  original {base:8.0f} ns   hooked {with_hook:8.0f} ns   "
        f"added {with_hook - base:7.0f} ns ({(with_hook - base) / 1000:.2f} µs)"
    )


def wrapper_costs(batches: int, calls: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="memhooks-bench-"))
    store = SettingsStore(folder / "comfy_memhooks.json")
    store.load()
    store.update({"rules": [{"pattern": "ReActor*", "before_mode": "Monitor Only", "after_mode": "Monitor Only"}]})
    engine = Engine()

    runtime = Runtime(engine=engine, settings=store)

    def bare(module: Any) -> None:
        hook.install(module, heavy=runtime.optimizer.index.is_heavy)

    def subscribed(module: Any) -> None:
        runtime.install_hook(module)
        _installed.append(runtime)

    class NoBrowser:
        """A publisher with no browser connected, as in a ComfyUI nobody is watching."""

        def has_clients(self) -> bool:
            return False

        def publish(self, event: str, payload: dict[str, Any]) -> None:
            del event, payload

    panel = runtime.make_backend(NoBrowser())

    def installed(module: Any) -> None:
        subscribed(module)
        panel.start()

    report(f"per node call, median of {batches} batches of {calls} calls, interleaved with the original")
    for kind in ("async", "sync"):
        _compare("no receivers", kind, "ImageInvert", bare, batches, calls)
        _compare("default subscriber, ordinary node", kind, "ImageInvert", subscribed, batches, calls)
        _compare("default subscriber, heavy node, Monitor Only", kind, "ReActorFaceSwap", subscribed, batches, calls)
        _compare("subscriber and Memory panel, ordinary node", kind, "ImageInvert", installed, batches, calls)
        panel.close()


def _load_revision(revision: str) -> Any:
    """comfy_memhooks as it was at ``revision`` (``git archive``), loaded beside this one as ``memhooks_<rev>``."""
    folder = Path(tempfile.mkdtemp(prefix="memhooks-bench-rev-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "comfy_memhooks"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    name = f"memhooks_{revision.replace('~', '_').replace('^', '_')}"
    package = folder / "comfy_memhooks"
    spec = importlib.util.spec_from_file_location(
        name, package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _install_at(package: Any, module: Any, engine: Any, store: Any) -> Callable[[], object]:
    """Installs the hook and subscriber of an older revision into ``module`` the way that revision did (a runtime,
    or before there was one, ``comfy.auto.install``); returns what takes them out."""
    try:
        runtime = importlib.import_module(f"{package.__name__}.comfy.runtime").Runtime(engine=engine, settings=store)
    except ModuleNotFoundError:
        auto_then = _module_of(package.__name__, "comfy.auto", "auto")
        auto_then.install(module, auto_then.AutoOptimizer(engine, store))
        return auto_then.uninstall
    runtime.install_hook(module)
    return runtime.uninstall


def _module_of(package: str, *names: str) -> Any:
    """The first of ``names`` that ``package`` has: a module's place as of today, then where an older revision kept
    it (before the layers were subpackages)."""
    for name in names:
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError(f"{package} has none of {names}")


def pressure_check_cost(revision: str, batches: int, calls: int) -> None:
    """The installed hook and subscriber of today against those of ``revision``, interleaved in one run.

    Both see an ordinary node and no memory pressure: the cost of the pressure check before every node is the
    difference.
    """
    before = _load_revision(revision)
    before_engine = _module_of(before.__name__, "engine.core", "engine")
    before_settings = _module_of(before.__name__, "triggers.settings", "engine.settings", "settings")
    folder = Path(tempfile.mkdtemp(prefix="memhooks-bench-"))
    report(f"installed hook and subscriber, ordinary node, no pressure: today against {revision}")
    for kind in ("async", "sync"):
        arguments = _arguments(kind, "ImageInvert")
        plain = _module(kind)
        old_module = _module(kind)
        store_then = before_settings.SettingsStore(folder / f"then-{kind}.json")
        store_then.load()
        uninstall_then = _install_at(before, old_module, before_engine.Engine(), store_then)
        new_module = _module(kind)
        store_now = SettingsStore(folder / f"now-{kind}.json")
        store_now.load()
        runtime = Runtime(engine=Engine(), settings=store_now)
        runtime.install_hook(new_module)
        assert not runtime.optimizer.gauge.over
        timers = {
            "original": _batch_timer(plain.execute, arguments, kind, calls),
            revision: _batch_timer(old_module.execute, arguments, kind, calls),
            "today": _batch_timer(new_module.execute, arguments, kind, calls),
        }
        for timer in timers.values():
            timer()  # warm up
        samples: dict[str, list[float]] = {name: [] for name in timers}
        for _ in range(batches):
            for name, timer in timers.items():
                samples[name].append(timer())
        runtime.uninstall()
        uninstall_then()
        medians = {name: statistics.median(values) for name, values in samples.items()}
        paired = statistics.median(
            today - then for today, then in zip(samples["today"], samples[revision], strict=True)
        )
        report(
            f"{kind:5}  original {medians['original']:6.0f} ns   {revision} {medians[revision]:6.0f} ns   "
            f"today {medians['today']:6.0f} ns   added by today {paired:5.0f} ns (median of paired batches), "
            f"ratio today/{revision} {medians['today'] / medians[revision]:.3f}"
        )


def _chain(nodes: int, color: int) -> dict[str, Any]:
    prompt: dict[str, Any] = {
        "0": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}}
    }
    for index in range(1, nodes + 1):
        prompt[str(index)] = {"class_type": "ImageInvert", "inputs": {"image": [str(index - 1), 0]}}
    prompt["out"] = {"class_type": "PreviewImage", "inputs": {"images": [str(nodes), 0]}}
    return prompt


def _milliseconds(entry: dict[str, Any]) -> float:
    stamps = {name: data["timestamp"] for name, data in entry["status"]["messages"]}
    return float(stamps["execution_success"] - stamps["execution_start"])


def comfyui_costs(rounds: int, nodes: int) -> None:
    reason = skip_reason()
    if reason:
        report(f"real ComfyUI part skipped: {reason}")
        return
    server = ComfyUI(record_events=False).start()  # the built-in subscriber only, as users run it
    try:
        version = server.get("/memhooks_test/status")["comfyui_version"]
        times: dict[bool, list[float]] = {True: [], False: []}
        server.run(_chain(nodes, 0))  # warm up
        color = 1
        for _ in range(rounds):
            for installed in (True, False):
                status = server.post("/memhooks_test/hook", {"installed": installed})
                assert status["installed"] is installed
                color += 1  # a new colour: nothing comes from ComfyUI's cache
                _, entry = server.run(_chain(nodes, color))
                assert entry["status"]["status_str"] == "success"
                times[installed].append(_milliseconds(entry))
    finally:
        server.stop()
    on, off = statistics.median(times[True]), statistics.median(times[False])
    report(
        f"ComfyUI {version}: {nodes} ImageInvert nodes, {rounds} runs each: hook on {on:.0f} ms, off {off:.0f} ms "
        f"(median), ratio {on / off:.3f}; per node {(on - off) / nodes * 1000:.1f} µs"
    )
    paired = statistics.median(a / b for a, b in zip(times[True], times[False], strict=True))
    report(f"  median of the {rounds} paired ratios (on/off, run back to back): {paired:.3f}")
    fastest_on, fastest_off = min(times[True]), min(times[False])
    report(f"  fastest runs: on {fastest_on:.0f} ms, off {fastest_off:.0f} ms, ratio {fastest_on / fastest_off:.3f}")
    report(f"  on:  {[round(value) for value in times[True]]}")
    report(f"  off: {[round(value) for value in times[False]]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=51)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--comfyui", action="store_true", help="also time a real ComfyUI (COMFYUI_DIR)")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--nodes", type=int, default=300)
    parser.add_argument(
        "--against", metavar="REV", help="also compare the installed hook with the one of a git revision"
    )
    arguments = parser.parse_args()
    wrapper_costs(arguments.batches, arguments.calls)
    if arguments.against:
        pressure_check_cost(arguments.against, arguments.batches, arguments.calls)
    if arguments.comfyui:
        comfyui_costs(arguments.rounds, arguments.nodes)


if __name__ == "__main__":
    main()
