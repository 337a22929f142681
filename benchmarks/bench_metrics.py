"""What the metrics cost: a scrape of ``/memhooks/metrics``, and the per-node receiver behind the duration histograms.

Run by hand: ``PYTHONPATH=. python benchmarks/bench_metrics.py``.

Part one serves the panel's routes on a real aiohttp server on loopback (as ComfyUI mounts them), with 100 node
classes in the duration histogram (each observed 20 times, so every bucket line is there), 100 classes of per-node
peaks of VRAM and of RAM, and optimizations of every mode in the history's totals. It then asks for
``/memhooks/status`` and ``/memhooks/metrics`` in turn, from one client, and prints each one's median and p99
response time and the ratio of the medians: the status route is the baseline, measured in the same run. Both read
memory (RAM, and VRAM where NVML answers) once per request; the metrics add the text of about 2,100 samples.

Part two measures the executor hook's added cost per node with the duration receiver connected to
``node_finished``, against the same hook with no receiver, in interleaved batches (an ``execute`` that does only
ComfyUI's own bookkeeping, async and sync). Without any ``node_finished`` receiver the hook does not even build
the signal's arguments, so the difference is the whole price of the metrics on the executor's path.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_hook import _arguments, _batch_timer, _module  # noqa: E402

from comfy_memhooks import hook  # noqa: E402
from comfy_memhooks.engine.core import Engine  # noqa: E402
from comfy_memhooks.engine.history import Trigger, TriggerKind  # noqa: E402
from comfy_memhooks.engine.modes import MANUAL_MODES  # noqa: E402
from comfy_memhooks.engine.request import CleanupRequest  # noqa: E402
from comfy_memhooks.hook.runs import NodeRun  # noqa: E402
from comfy_memhooks.panel.backend import PanelBackend  # noqa: E402
from comfy_memhooks.panel.node_stats import NodeStats  # noqa: E402
from comfy_memhooks.panel.routes import register_routes  # noqa: E402
from comfy_memhooks.pipeline import EndStep, NodeEnding, NodePipeline, hook_failures  # noqa: E402
from comfy_memhooks.triggers.settings import SettingsStore  # noqa: E402

CLASSES = 100


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class NoBrowser:
    """A publisher with no browser connected: the panel pushes nothing, as in a ComfyUI nobody watches."""

    def has_clients(self) -> bool:
        return False

    def publish(self, event: str, payload: dict[str, Any]) -> None:
        del event, payload


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _filled_backend() -> PanelBackend:
    store = SettingsStore(Path(tempfile.mkdtemp(prefix="memhooks-bench-")) / "comfy_memhooks.json")
    store.load()
    engine = Engine()
    peaks = {f"NodeClass{index:03d}": (index + 1) * 1024**2 for index in range(CLASSES)}
    backend = PanelBackend(
        engine,
        store,
        NoBrowser(),
        interval=lambda: 3600.0,
        peak_vram_by_class=lambda: peaks,
        peak_ram_by_class=lambda: peaks,
    )
    for index in range(CLASSES):
        for sample in range(20):
            backend.node_stats.observe(f"NodeClass{index:03d}", 0.002 * 1.6**sample)  # 2 ms to 15 min
    for mode in MANUAL_MODES:
        engine.run(CleanupRequest(trigger=Trigger(kind=TriggerKind.MANUAL, reason="benchmark"), mode=mode))
    return backend


async def _time(session: ClientSession, url: str) -> tuple[float, int]:
    started = time.perf_counter()
    async with session.get(url) as response:
        body = await response.read()
        assert response.status == 200, (url, response.status, body[:200])
    return time.perf_counter() - started, len(body)


async def scrape_costs(requests: int) -> None:
    backend = _filled_backend()
    routes = web.RouteTableDef()
    register_routes(routes, backend)
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}/memhooks"
    times: dict[str, list[float]] = {"status": [], "metrics": []}
    sizes: dict[str, int] = {}
    try:
        async with ClientSession() as session:
            for _ in range(20):  # warm up: the first scrape loads prometheus_client and builds the registry
                for route in times:
                    await _time(session, f"{base}/{route}")
            for _ in range(requests):
                for route, values in times.items():
                    seconds, sizes[route] = await _time(session, f"{base}/{route}")
                    values.append(seconds)
    finally:
        await runner.cleanup()
    body, _ = backend.metrics()
    samples = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    render = []
    for _ in range(requests):
        started = time.perf_counter()
        backend.metrics()
        render.append(time.perf_counter() - started)
    report(f"{requests} requests each, interleaved, over loopback; {CLASSES} node classes; {samples} samples exposed")
    for route, values in times.items():
        report(
            f"  GET /memhooks/{route:8} median {statistics.median(values) * 1000:7.2f} ms   "
            f"p99 {_p99(values) * 1000:7.2f} ms   {sizes[route]:7d} bytes"
        )
    ratio = statistics.median(times["metrics"]) / statistics.median(times["status"])
    report(f"  ratio of the medians, metrics / status: {ratio:.2f}")
    report(
        f"  building the exposition alone (reading memory included): median "
        f"{statistics.median(render) * 1000:.2f} ms, p99 {_p99(render) * 1000:.2f} ms"
    )


def receiver_costs(batches: int, calls: int) -> None:
    report(f"per node call through the hook, median of {batches} batches of {calls} calls, interleaved")
    stats = NodeStats()
    for kind in ("async", "sync"):
        module = _module(kind)
        node_pipeline = NodePipeline(hook_failures)
        hook.install(module, heavy=lambda class_type: False, pipeline=node_pipeline)
        timed = _batch_timer(module.execute, _arguments(kind, "ImageInvert"), kind, calls)
        without, with_receiver = [], []
        timed()  # warm up
        for _ in range(batches):
            without.append(timed())
            node_pipeline.set_end(EndStep.METRICS, stats.after_node)
            with_receiver.append(timed())
            node_pipeline.clear(EndStep.METRICS, stats.after_node)
        hook.uninstall()
        base, added = statistics.median(without), statistics.median(with_receiver)
        report(
            f"  {kind:5}  hook, no receiver {base:7.0f} ns   with the duration receiver {added:7.0f} ns   "
            f"added {added - base:6.0f} ns ({(added - base) / 1000:.2f} µs)   ratio {added / base:.2f}"
        )
    observed = sum(histogram.count for _, histogram in stats.read().durations)
    assert observed == 2 * batches * calls, (observed, 2 * batches * calls)  # every node was counted once
    direct = []
    node = NodeRun("1", "ImageInvert", "p", False, ())
    ending = NodeEnding(None, False, 0.004, None, None)
    for _ in range(batches):
        started = time.perf_counter_ns()
        for _ in range(calls):
            stats.after_node(node, ending)
        direct.append((time.perf_counter_ns() - started) / calls)
    report(f"  the step alone, called directly: median {statistics.median(direct):.0f} ns per node")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--batches", type=int, default=51)
    parser.add_argument("--calls", type=int, default=2000)
    arguments = parser.parse_args()
    asyncio.run(scrape_costs(arguments.requests))
    receiver_costs(arguments.batches, arguments.calls)


if __name__ == "__main__":
    main()
