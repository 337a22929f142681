"""What the executor hook costs per node on several ComfyUI versions (0.8.0, 0.18.2, 0.33.0), measured in one run.

    python benchmarks/bench_versions.py /path/to/ComfyUI-0.8.0 /path/to/ComfyUI-0.18.2:/path/to/extra-0.18.2 \
        /path/to/ComfyUI-0.33.0:/path/to/extra-0.33.0 --without-memhooks

Each argument is a ComfyUI checkout, optionally followed by ``:`` and a folder put first on its ``PYTHONPATH`` (its
frontend packages); ``COMFYUI_PYTHON`` is the Python that runs them. Every server is started and kept running;
then, round after round, each times a chain of 300 ``ImageInvert`` nodes on an 8x8 ``EmptyImage`` with the hook on
and off, in alternating order (ComfyUI's own ``execution_start`` to ``execution_success`` timestamps). It prints,
per version, the medians, the on/off ratio and the cost added per node, then each version's added cost against the
first one's.

``--without-memhooks`` also starts the last checkout a second time without comfy_memhooks at all (no hook, no
watchdog, no panel) and, in the same rounds and alternating which goes first, times the same chain there against
the server with comfy_memhooks and its hook on: the ratio of the medians and the median of the paired ratios.

ComfyUI 0.18 tells registered cache providers when prompts start and end (its prompt lifecycle API). With
``--provider``, a third condition there, the hook off with a provider that caches nothing registered, shows what
using that API would cost: with any provider registered, ComfyUI serializes and hashes the cache key (which holds
every ancestor's inputs) of each output it stores and each lookup it misses. That cost is why the hook patches
``PromptExecutor`` for its prompt signals on every version instead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_hook import _chain, _milliseconds, report  # noqa: E402
from tests.integration.comfyui_server import ComfyError, ComfyUI  # noqa: E402


def _start(spec: str, with_memhooks: bool = True) -> ComfyUI:
    directory, _, extra = spec.partition(":")
    os.environ["COMFYUI_DIR"] = directory
    if extra:
        os.environ["COMFYUI_EXTRA_PYTHONPATH"] = extra
    else:
        os.environ.pop("COMFYUI_EXTRA_PYTHONPATH", None)
    return ComfyUI(record_events=False, with_memhooks=with_memhooks).start()


def _paired(first: list[float], second: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(first, second, strict=True))


def _has_providers(server: ComfyUI) -> bool:
    try:
        server.post("/memhooks_test/provider", {"registered": False})
    except ComfyError:  # 404: a ComfyUI before cache providers
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("comfyui", nargs="+", help="DIR[:EXTRA_PYTHONPATH] of each ComfyUI")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--nodes", type=int, default=300)
    parser.add_argument(
        "--provider", action="store_true", help="also time a cache provider that caches nothing (0.18; slow)"
    )
    parser.add_argument(
        "--without-memhooks", action="store_true", help="also time the last ComfyUI without comfy_memhooks at all"
    )
    arguments = parser.parse_args()
    servers = [_start(spec) for spec in arguments.comfyui]
    plain = _start(arguments.comfyui[-1], with_memhooks=False) if arguments.without_memhooks else None
    try:
        versions = [server.get("/memhooks_test/status")["comfyui_version"] for server in servers]
        conditions = [
            ["on", "off", *(["provider only"] if arguments.provider and _has_providers(server) else [])]
            for server in servers
        ]
        times: dict[tuple[int, str], list[float]] = {}
        without: dict[str, list[float]] = {"with": [], "without": []}
        color = 0
        for server in [*servers, *([plain] if plain else [])]:
            server.run(_chain(arguments.nodes, color))  # warm up
        for round_number in range(arguments.rounds):
            for index, server in enumerate(servers):
                # Every other round in the opposite order: what runs first after a switch pays no toll of its own.
                order = conditions[index] if round_number % 2 == 0 else conditions[index][::-1]
                for condition in order:
                    server.post("/memhooks_test/hook", {"installed": condition == "on"})
                    if condition == "provider only":
                        server.post("/memhooks_test/provider", {"registered": True})
                    color += 1  # a new colour: nothing comes from ComfyUI's cache
                    _, entry = server.run(_chain(arguments.nodes, color))
                    assert entry["status"]["status_str"] == "success"
                    times.setdefault((index, condition), []).append(_milliseconds(entry))
                    if condition == "provider only":
                        server.post("/memhooks_test/provider", {"registered": False})
                server.post("/memhooks_test/hook", {"installed": True})
            if plain is not None:
                pair = [("with", servers[-1]), ("without", plain)]
                for name, server in pair if round_number % 2 == 0 else pair[::-1]:
                    color += 1
                    _, entry = server.run(_chain(arguments.nodes, color))
                    assert entry["status"]["status_str"] == "success"
                    without[name].append(_milliseconds(entry))
    finally:
        for server in [*servers, *([plain] if plain else [])]:
            server.stop()
    added = []
    for index, version in enumerate(versions):
        on, off = statistics.median(times[(index, "on")]), statistics.median(times[(index, "off")])
        paired = _paired(times[(index, "on")], times[(index, "off")])
        per_node = (on - off) / arguments.nodes * 1000
        added.append(per_node)
        report(
            f"ComfyUI {version}: {arguments.nodes} nodes, {arguments.rounds} runs: "
            f"hook on {on:.0f} ms, off {off:.0f} ms (medians), ratio {on / off:.3f}, paired {paired:.3f}; "
            f"added per node {per_node:.1f} µs"
        )
        provider = times.get((index, "provider only"))
        if provider:
            alone = statistics.median(provider)
            report(
                f"  hook off, a provider that caches nothing registered: {alone:.0f} ms, ratio to off "
                f"{alone / off:.3f}; per node {(alone - off) / arguments.nodes * 1000:.1f} µs"
            )
    for index in range(1, len(versions)):
        report(
            f"added per node, {versions[index]} against {versions[0]}: {added[index]:.1f} µs / {added[0]:.1f} µs"
            + (f", ratio {added[index] / added[0]:.2f}" if added[0] > 0 else "")
        )
    if plain is not None:
        with_median, without_median = statistics.median(without["with"]), statistics.median(without["without"])
        report(
            f"ComfyUI {versions[-1]}, {arguments.nodes} nodes, {arguments.rounds} alternating pairs: "
            f"with comfy_memhooks "
            f"{with_median:.0f} ms, without {without_median:.0f} ms (medians), ratio of medians "
            f"{with_median / without_median:.3f}, paired {_paired(without['with'], without['without']):.3f}"
        )


if __name__ == "__main__":
    main()
