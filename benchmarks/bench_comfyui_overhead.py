"""What comfy_memhooks costs a cheap node in a real ComfyUI, against the same ComfyUI with an empty pack. By hand:

    python benchmarks/bench_comfyui_overhead.py         # the ComfyUI of COMFYUI_DIR (and COMFYUI_EXTRA_PYTHONPATH)
    python benchmarks/bench_comfyui_overhead.py --comfyui /path/to/ComfyUI-0.8.0 \\
        --comfyui /path/to/ComfyUI-0.33.0:/path/to/extra-0.33.0  # several versions, one after the other
    python benchmarks/bench_comfyui_overhead.py --profile               # where the time goes, per node

Each ``--comfyui`` is a checkout, optionally followed by ``:`` and a folder put first on its ``PYTHONPATH`` (its
frontend packages); ``COMFYUI_PYTHON`` runs them. For each version one server per condition is started and kept
running, each with the benchmark's own pack (``overhead_pack``, which does nothing):

- ``empty``: that pack alone, the baseline;
- ``defaults``: comfy_memhooks as users get it (profile, predictive cleanup and metrics on);
- ``hook off``: comfy_memhooks with ``COMFY_MEMHOOKS_HOOK=off``;
- ``profile off`` (``--all``): defaults with ``node_profile`` and ``predictive_cleanup`` off;
- ``defaults at REV`` (``--against REV``): comfy_memhooks as it was at a git revision, with defaults.

Each pair runs a chain of ``--nodes`` ``ImageInvert`` nodes on an 8x8 ``EmptyImage`` on the empty server and on one
condition's, back to back, in alternating order (a new colour each run, so nothing comes from ComfyUI's cache);
ComfyUI's own ``execution_start`` to ``execution_success`` timestamps time it. It prints, per condition, the median
of the pairs' ratios, the ratio of the medians and the time added per node. ``--browser`` keeps a websocket client
connected to each server's ``/ws`` (as an open ComfyUI tab is) and queues the prompts under its client id.

``--profile`` instead profiles ComfyUI's worker thread (cProfile, by the pack) in the empty and the default
servers and prints, per node, comfy_memhooks' own functions by inclusive time, and ComfyUI's functions whose time
or call count differs most between the two.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_hook import _chain, _milliseconds  # noqa: E402
from benchmarks.bench_support import report  # noqa: E402
from tests.integration import comfyui_server  # noqa: E402
from tests.integration.comfyui_server import ComfyError, ComfyUI  # noqa: E402

PACK = Path(__file__).resolve().parent / "overhead_pack"
EMPTY = "empty"
PROFILE_OFF_SETTINGS = {"node_profile": False, "predictive_cleanup": False}
KINDS = {"wall": "wall", "worker_cpu": "worker CPU", "process_cpu": "process CPU"}
POLL_SECONDS = 0.2
prompt_deadline_seconds = (
    300.0  # the timing is ComfyUI's own; polling rarely keeps the benchmark's requests out of the way
)


@dataclass(frozen=True)
class Condition:
    name: str
    with_memhooks: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    project: Path = ROOT


@dataclass(frozen=True)
class Measure:
    """One run, in ms: ComfyUI's ``execution_start`` to ``execution_success``, the worker thread's CPU time and the
    whole process's (all threads') CPU time while the prompt ran."""

    wall: float
    worker_cpu: float
    process_cpu: float


CONDITIONS = {
    EMPTY: Condition(EMPTY, with_memhooks=False),
    "defaults": Condition("defaults"),
    "hook off": Condition("hook off", environment={"COMFY_MEMHOOKS_HOOK": "off"}),
    "profile off": Condition("profile off", settings=PROFILE_OFF_SETTINGS),
}


class Listener:
    """A websocket client on a server's ``/ws``, read in a thread of its own, as an open ComfyUI tab would be."""

    def __init__(self, url: str):
        self.client_id = uuid.uuid4().hex
        self.messages = 0
        self._url = url.replace("http://", "ws://") + f"/ws?clientId={self.client_id}"
        self._loop = asyncio.new_event_loop()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._read(),), daemon=True)
        self._thread.start()
        if not self._connected.wait(30):
            raise ComfyError(f"no websocket at {self._url}")

    async def _read(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session, session.ws_connect(self._url) as socket:
            self._connected.set()
            async for _ in socket:
                self.messages += 1


def _start(spec: str, condition: Condition, profile_folder: Path | None, launcher: tuple[str, ...] = ()) -> ComfyUI:
    directory, _, extra = spec.partition(":")
    os.environ["COMFYUI_DIR"] = directory
    if extra:
        os.environ["COMFYUI_EXTRA_PYTHONPATH"] = extra
    else:
        os.environ.pop("COMFYUI_EXTRA_PYTHONPATH", None)
    environment = dict(condition.environment)
    if profile_folder is not None:
        environment["MEMHOOKS_BENCH_PROFILE"] = str(profile_folder)
    return ComfyUI(
        record_events=False,
        packs=(PACK,),
        with_memhooks=condition.with_memhooks,
        settings=condition.settings,
        environment=environment,
        project=condition.project,
        launcher=launcher,
    ).start()


@contextlib.contextmanager
def _servers(spec: str, conditions: list[Condition], profile_base: Path | None = None) -> Iterator[list[ComfyUI]]:
    started: list[ComfyUI] = []
    try:
        for condition in conditions:  # one at a time: two start-ups at once on two cores time out
            folder = None if profile_base is None else profile_base / condition.name.replace(" ", "-")
            started.append(_start(spec, condition, folder))
        yield started
    finally:
        for server in started:
            server.stop()


def _run(server: ComfyUI, prompt: dict[str, Any], client_id: str) -> Measure:
    """Queues ``prompt`` and returns how long it ran: ComfyUI's timestamps and the pack's CPU times."""
    prompt_id = server.post("/prompt", {"prompt": prompt, "client_id": client_id})["prompt_id"]
    deadline = time.monotonic() + prompt_deadline_seconds
    while time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        try:
            entry = server.get(f"/history/{prompt_id}").get(prompt_id)
        except TimeoutError:  # a server under valgrind on a busy machine: ask again, until the prompt's deadline
            continue
        if entry and entry["status"].get("completed"):
            times = server.get("/memhooks_bench/times")[-1]
            return Measure(
                _milliseconds(entry), times["worker_cpu_seconds"] * 1000, times["process_cpu_seconds"] * 1000
            )
        if entry and entry["status"].get("status_str") == "error":
            raise ComfyError(f"prompt failed: {entry['status']}")
    raise ComfyError(f"prompt {prompt_id} did not finish:\n{server.log_tail()}")


def revision_checkout(revision: str) -> Path:
    """This project as it was at ``revision`` (``git archive``), in a temporary folder, to link into ComfyUI."""
    folder = Path(tempfile.mkdtemp(prefix="memhooks-bench-rev-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def time_version(spec: str, names: list[str], pairs: int, nodes: int, browser: bool, against: str | None) -> None:
    conditions = [CONDITIONS[EMPTY], *(CONDITIONS[name] for name in names)]
    if against is not None:
        old = revision_checkout(against)
        conditions.append(Condition(f"defaults at {against}", project=old))
        names = [*names, conditions[-1].name]
    with _servers(spec, conditions) as servers:
        by_name = dict(zip((condition.name for condition in conditions), servers, strict=True))
        version = servers[0].version()
        listeners = {name: Listener(server.url) for name, server in by_name.items()} if browser else {}
        client = {name: listeners[name].client_id if browser else uuid.uuid4().hex for name in by_name}
        color = 0
        for name, server in by_name.items():  # warm up: imports, caches, the first prompt's one-off work
            for _ in range(2):
                color += 1
                _run(server, _chain(nodes, color), client[name])
        times: dict[str, list[tuple[Measure, Measure]]] = {name: [] for name in names}
        for pair in range(pairs):
            for name in names:
                order = (EMPTY, name) if pair % 2 == 0 else (name, EMPTY)
                measured = {}
                for which in order:
                    color += 1
                    measured[which] = _run(by_name[which], _chain(nodes, color), client[which])
                times[name].append((measured[name], measured[EMPTY]))
        heard = {name: listener.messages for name, listener in listeners.items()}
    report(
        f"ComfyUI {version}: {nodes} ImageInvert nodes, {pairs} pairs per condition"
        + (f", a websocket client on each server (messages heard: {heard})" if browser else ", no browser")
    )
    for name in names:
        report(f"  {name}:")
        for kind in ("wall", "worker_cpu", "process_cpu"):
            pairs_of = [(getattr(on, kind), getattr(off, kind)) for on, off in times[name]]
            paired = statistics.median(on / off for on, off in pairs_of)
            on = statistics.median(value for value, _ in pairs_of)
            off = statistics.median(value for _, value in pairs_of)
            added = statistics.median(a - b for a, b in pairs_of) / nodes * 1000
            report(
                f"    {KINDS[kind]:12} median of pair ratios {paired:.3f}   ratio of medians {on / off:.3f}"
                f"   ({on:.0f} ms against {off:.0f} ms; per node {added:+.1f} µs)"
            )
        ratios = " ".join(f"{on.wall / off.wall:.3f}" for on, off in times[name])
        report(f"    wall ratios of the pairs: {ratios}")


# --- the profile --------------------------------------------------------------------------------------------------


def _stats(folder: Path, skip: int) -> pstats.Stats:
    files = sorted(folder.glob("*.prof"), key=lambda path: int(path.stem))[skip:]
    if not files:
        raise ComfyError(f"no profiles in {folder}")
    stats = pstats.Stats(str(files[0]))
    for path in files[1:]:
        stats.add(str(path))
    return stats


def _label(function: tuple[str, int, str]) -> str:
    filename, line, name = function
    parts = Path(filename).parts
    if "comfy_memhooks" in parts:
        filename = "/".join(parts[len(parts) - 1 - parts[::-1].index("comfy_memhooks") :])
    elif len(parts) > 2:
        filename = "/".join(parts[-2:])
    return f"{filename}:{line}({name})"


def _ours(function: tuple[str, int, str]) -> bool:
    return "comfy_memhooks" in Path(function[0]).parts


def profile_version(spec: str, prompts: int, nodes: int, top: int, browser: bool, condition: str) -> None:
    base = Path(tempfile.mkdtemp(prefix="memhooks-bench-profile-"))
    names = [EMPTY, condition]
    with _servers(spec, [CONDITIONS[name] for name in names], base) as servers:
        version = servers[0].version()
        color = 0
        clients = [Listener(server.url).client_id if browser else uuid.uuid4().hex for server in servers]
        for _ in range(prompts + 1):  # in turns, so that a busier moment of the machine falls on both
            for server, client in zip(servers, clients, strict=True):
                color += 1
                _run(server, _chain(nodes, color), client)
    count = prompts * (nodes + 2)  # nodes per profile: the chain, its EmptyImage and its PreviewImage
    raw: dict[str, Any] = {}
    for name in names:
        stats: Any = _stats(base / name.replace(" ", "-"), skip=1)  # the first prompt: warm-up
        raw[name] = stats.stats
    report(
        f"ComfyUI {version}: cProfile of the worker thread, {prompts} prompts of {nodes + 2} nodes"
        + (" with a websocket client" if browser else "")
        + "; µs and calls per node (cProfile's own cost included)"
    )
    totals = {name: sum(entry[2] for entry in raw[name].values()) for name in names}
    for name in names:
        calls = sum(entry[1] for entry in raw[name].values()) / count
        system = sum(entry[1] for function, entry in raw[name].items() if "posix." in function[2]) / count
        report(
            f"  {name:9} worker thread {totals[name] / count * 1e6:8.1f} µs, {calls:7.1f} function calls, "
            f"{system:5.2f} system calls (os.*) per node"
        )
    ours = [(function, entry) for function, entry in raw[condition].items() if _ours(function)]
    report("  comfy_memhooks' functions, by inclusive time per node:")
    report(f"  {'cum µs':>8} {'own µs':>8} {'calls':>7}  function")
    for function, (_, calls, tottime, cumtime, _) in sorted(ours, key=lambda item: -item[1][3])[:top]:
        report(f"  {cumtime / count * 1e6:8.2f} {tottime / count * 1e6:8.2f} {calls / count:7.2f}  {_label(function)}")
    report(f"  other functions whose own time or calls per node differ most ({condition} minus empty):")
    report(f"  {'Δ own µs':>8} {'Δ calls':>7}  function")
    deltas = []
    for function in set(raw[condition]) | set(raw[EMPTY]):
        if _ours(function):
            continue
        on = raw[condition].get(function, (0, 0, 0.0, 0.0, {}))
        off = raw[EMPTY].get(function, (0, 0, 0.0, 0.0, {}))
        deltas.append(((on[2] - off[2]) / count * 1e6, (on[1] - off[1]) / count, function))
    deltas.sort(key=lambda item: -abs(item[0]) - abs(item[1]))
    for own, calls, function in deltas[:top]:
        report(f"  {own:+8.2f} {calls:+7.2f}  {_label(function)}")
    report(f"  (profiles kept in {base})")


def steps_version(spec: str, prompts: int, nodes: int, browser: bool, condition: str) -> None:
    """comfy_memhooks' own parts, timed where they run (the pack's timers), per node: the median over prompts."""
    chosen = CONDITIONS[condition]
    timed = Condition(
        chosen.name, settings=chosen.settings, environment={**chosen.environment, "MEMHOOKS_BENCH_STEPS": "1"}
    )
    with _servers(spec, [timed]) as (server,):
        version = server.version()
        client = Listener(server.url).client_id if browser else uuid.uuid4().hex
        for color in range(prompts + 1):
            _run(server, _chain(nodes, color + 1), client)
        per_prompt = server.get("/memhooks_bench/steps")[1:]  # the first prompt: warm-up (and timers installed)
    count = nodes + 2
    report(
        f"ComfyUI {version}, {condition}: comfy_memhooks' parts timed in the worker thread, {prompts} prompts of "
        f"{count} nodes" + (" with a websocket client" if browser else "") + "; median µs and calls per node"
    )
    names = sorted({name for entry in per_prompt for name in entry}, key=lambda name: (name.strip() != name, name))
    for name in names:
        nanoseconds = statistics.median(entry.get(name, [0, 0])[0] for entry in per_prompt)
        calls = statistics.median(entry.get(name, [0, 0])[1] for entry in per_prompt)
        report(f"  {nanoseconds / count / 1000:8.2f} µs {calls / count:6.2f}  {name}")


def _thread_totals(folder: Path, name: str, pid: int, dump: int) -> list[int]:
    """Each thread's instructions in dump number ``dump`` of one server, most first (the worker's, then the rest)."""
    totals = []
    for path in folder.glob(f"{name}.{pid}.{dump}-*"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                totals.append(int(line.split()[1]))
    return sorted(totals, reverse=True)


def _collector(folder: Path, name: str, pid: int, dump: int) -> int | None:
    """The instructions Python's cyclic garbage collector (``gc_collect_main``, inclusive) took in the worker thread
    in dump number ``dump``: ``callgrind_annotate`` of the thread with the most instructions; ``None`` unknown."""
    worker: tuple[int, Path] | None = None
    for path in folder.glob(f"{name}.{pid}.{dump}-*"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("totals:") and (worker is None or int(line.split()[1]) > worker[0]):
                worker = (int(line.split()[1]), path)
    if worker is None:
        return None
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(worker[1])],
        check=False,
        capture_output=True,
        text=True,
    ).stdout
    for line in annotated.splitlines():
        if line.rstrip().endswith(":gc_collect_main") or ":gc_collect_main " in line:
            return int(line.split()[0].replace(",", ""))
    return None


def instructions_version(spec: str, names: list[str], nodes: int, prompts: int, against: str | None) -> None:
    """Instructions per node under callgrind: deterministic, unlike time on a shared machine.

    Each server runs under ``valgrind --tool=callgrind --separate-threads=yes`` with instrumentation off; the pack
    switches it on and zeroes the counters as each prompt's ``PromptExecutor.execute`` starts, and dumps them as it
    returns, in the worker thread (``MEMHOOKS_BENCH_CALLGRIND``): the window is the prompt and nothing else, not
    ComfyUI's ``gc.collect()`` right after it (which walks every object of the process, comfy_memhooks' modules
    included: some 30,000 instructions a node of a 300-node prompt when it fell inside). The worker thread is the
    one with the most instructions; the other threads (ComfyUI's event loop, comfy_memhooks' watchdog and sampler)
    are shown apart, since under valgrind a prompt lasts some fifty times longer and a periodic thread ticks that
    much more often. The worker's count is also shown without Python's garbage collector (``gc_collect_main``,
    some 12% of the worker's instructions), and the collector apart: it walks every object of the process when
    ComfyUI's allocations set it off, so what it adds follows the size of the heap (comfy_memhooks' ~10,000 objects
    of modules, its kept records) more than the nodes, and a full collection in one prompt and not the next is the
    count's largest noise.
    """
    global prompt_deadline_seconds
    comfyui_server.READY_SECONDS = prompt_deadline_seconds = 1800  # valgrind: minutes to start, 50 times slower
    folder = Path(tempfile.mkdtemp(prefix="memhooks-bench-callgrind-"))
    conditions = [CONDITIONS[EMPTY], *(CONDITIONS[name] for name in names)]
    if against is not None:
        conditions.append(Condition(f"defaults at {against}", project=revision_checkout(against)))
    servers: dict[str, ComfyUI] = {}
    threads = []
    try:
        for condition in conditions:  # valgrind's start-up is slow: all at once
            file_name = condition.name.replace(" ", "-")
            launcher = (
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                "--separate-threads=yes",
                f"--callgrind-out-file={folder}/{file_name}.%p",
            )

            # One hash seed for all: ComfyUI's cache keys are sets of its inputs, whose hashing and order, so the
            # instructions, differ from process to process by some 0.1% otherwise.
            seeded = Condition(
                condition.name,
                condition.with_memhooks,
                condition.settings,
                {**condition.environment, "PYTHONHASHSEED": "0", "MEMHOOKS_BENCH_CALLGRIND": "1"},
                condition.project,
            )

            def start(condition: Condition = seeded, launcher: tuple[str, ...] = launcher) -> None:
                servers[condition.name] = _start(spec, condition, None, launcher)

            threads.append(threading.Thread(target=start))
            threads[-1].start()
        for thread in threads:
            thread.join()
        missing = [condition.name for condition in conditions if condition.name not in servers]
        if missing:
            raise ComfyError(f"ComfyUI under valgrind did not start for {missing}")
        version = servers[EMPTY].version()
        measured: dict[str, list[list[int]]] = {condition.name: [] for condition in conditions}
        collected: dict[str, list[int | None]] = {condition.name: [] for condition in conditions}
        color = 0
        for server in servers.values():
            color += 1
            _run(server, _chain(nodes, color), "warm-up")
        for dump in range(2, prompts + 2):  # the pack dumps every prompt: the first was the warm-up
            for condition in conditions:
                server = servers[condition.name]
                assert server.process is not None
                color += 1
                _run(server, _chain(nodes, color), "measured")
                pid = server.process.pid
                file_name = condition.name.replace(" ", "-")
                measured[condition.name].append(_thread_totals(folder, file_name, pid, dump))
                collected[condition.name].append(_collector(folder, file_name, pid, dump))
    finally:
        for server in servers.values():
            server.stop()
    count = nodes + 2
    report(f"ComfyUI {version}: instructions (callgrind) per node, {prompts} prompts of {count} nodes each")
    worker_empty = statistics.median(totals[0] for totals in measured[EMPTY]) / count
    workers = {}
    for condition in conditions:
        worker = workers[condition.name] = statistics.median(totals[0] for totals in measured[condition.name]) / count
        others = statistics.median(sum(totals[1:]) for totals in measured[condition.name]) / count
        report(
            f"  {condition.name:22} worker {worker:11,.0f}   ratio {worker / worker_empty:.4f}   "
            f"added {worker - worker_empty:+9,.0f}   other threads {others:9,.0f}"
        )
    if all(value is not None for values in collected.values() for value in values):
        # Python's collector walks every object of the process, comfy_memhooks' modules and records included, when
        # the allocations of the prompt (ComfyUI's, mostly) set it off: a cost of the heap's size more than of the
        # nodes, and the noisiest part of the count (a full collection falls in one prompt and not the next).
        report("  the worker without Python's garbage collector, and the collector apart:")
        rest = {
            name: statistics.median(t[0] - (g or 0) for t, g in zip(measured[name], collected[name], strict=True))
            / count
            for name in measured
        }
        gc_work = {name: statistics.median(g or 0 for g in collected[name]) / count for name in collected}
        for condition in conditions:
            name = condition.name
            report(
                f"  {name:22} without  {rest[name]:11,.0f}   ratio {rest[name] / rest[EMPTY]:.4f}   "
                f"added {rest[name] - rest[EMPTY]:+9,.0f}   collector {gc_work[name]:9,.0f} "
                f"({gc_work[name] - gc_work[EMPTY]:+,.0f})"
            )
    if against is not None:
        old, new = workers[conditions[-1].name] - worker_empty, workers["defaults"] - worker_empty
        report(
            f"  defaults against {conditions[-1].name}: {new / old if old else float('nan'):.3f} of the instructions "
            f"added a node ({new - old:+,.0f} a node)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--comfyui",
        action="append",
        metavar="DIR[:EXTRA_PYTHONPATH]",
        help="a ComfyUI checkout (repeatable); default: COMFYUI_DIR and COMFYUI_EXTRA_PYTHONPATH",
    )
    parser.add_argument("--pairs", type=int, default=11)
    parser.add_argument("--nodes", type=int, default=300)
    parser.add_argument("--all", action="store_true", help="also time the profile and predictive cleanup off")
    parser.add_argument("--browser", action="store_true", help="keep a websocket client on every server")
    parser.add_argument(
        "--against", metavar="REV", help="also time comfy_memhooks as it was at a git revision, with defaults"
    )
    parser.add_argument(
        "--profile",
        metavar="CONDITION",
        nargs="?",
        const="defaults",
        help="profile the worker thread in the empty server and one other (defaults, or the condition named)",
    )
    parser.add_argument(
        "--steps",
        metavar="CONDITION",
        nargs="?",
        const="defaults",
        help="time comfy_memhooks' own parts directly in one server (defaults, or the condition named)",
    )
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions per node under callgrind instead of timing"
    )
    parser.add_argument("--prompts", type=int, default=5, help="prompts profiled per server (--profile, --steps)")
    parser.add_argument("--top", type=int, default=25, help="functions listed (--profile)")
    arguments = parser.parse_args()
    specs = arguments.comfyui
    if not specs:
        directory = os.environ.get("COMFYUI_DIR")
        if not directory:
            parser.error("give --comfyui or set COMFYUI_DIR (see docs/testing.md)")
        extra = os.environ.get("COMFYUI_EXTRA_PYTHONPATH")
        specs = [f"{directory}:{extra}" if extra else directory]
    names = ["defaults", "hook off", *(["profile off"] if arguments.all else [])]
    for spec in specs:
        if arguments.instructions:
            instructions_version(spec, names, arguments.nodes, arguments.prompts, arguments.against)
        elif arguments.steps:
            steps_version(spec, arguments.prompts, arguments.nodes, arguments.browser, arguments.steps)
        elif arguments.profile:
            profile_version(
                spec, arguments.prompts, arguments.nodes, arguments.top, arguments.browser, arguments.profile
            )
        else:
            time_version(spec, names, arguments.pairs, arguments.nodes, arguments.browser, arguments.against)


if __name__ == "__main__":
    main()
