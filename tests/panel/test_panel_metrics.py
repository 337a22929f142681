"""``GET /memhooks/metrics`` on real aiohttp servers on loopback, read back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import collections
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pytest_aiohttp import AiohttpClient

from comfy_memhooks import hook, signals
from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import TriggerKind
from comfy_memhooks.engine.request import CleanupRequest
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.panel.node_stats import NODE_BUCKETS_SECONDS
from comfy_memhooks.panel.standalone import build_app
from comfy_memhooks.profile import ProfileRecorder, ProfileStore
from comfy_memhooks.profile.high_water import ProcessHighWater
from comfy_memhooks.profile.peaks import RamPeaks
from comfy_memhooks.profile.recorder import profile_failures
from comfy_memhooks.triggers.settings import SettingsStore
from tests.hook_support import FakeProbe, chain_prompt, hooked_runtime
from tests.panel.metrics_support import FAMILIES, Scrape
from tests.panel.panel_support import GIB, RecordingPublisher, container_engine, in_worker, panel_app
from tests.pipeline_support import finish_node
from tests.standin_executor import KINDS, StandInNode, make_execution_module

ROOT = Path(__file__).resolve().parents[2]
Client = TestClient[web.Request, web.Application]
PEAKS = {"KSampler": 6 * GIB, "VAEDecode": 2 * GIB}
RAM_PEAKS = {"VAEDecode": 3 * GIB, "UpscaleModelLoader": GIB // 2}
MIB = 1024**2


def steady(tmp_path: Path) -> Engine:
    """A container (8 GiB limit, 3 GiB used) with one fake GPU (20 of 80 GiB used), its figures holding still."""
    return container_engine(tmp_path, 8 * GIB, 3 * GIB, used_vram_gib=20.0)


async def scrape(client: Client, path: str = "/memhooks/metrics") -> Scrape:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    return Scrape(await response.text())


async def _json(client: Client, path: str) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status == 200
    data: dict[str, Any] = await response.json()
    return data


def finished(node_class: str, duration_seconds: float, *, cached: bool = False, rescued: bool | None = None) -> None:
    """What the hook does after a node, from the test's worker thread."""
    finish_node("1", node_class, cached=cached, duration_seconds=duration_seconds, rescued=rescued)


@pytest.fixture
def backends() -> Iterator[list[PanelBackend]]:
    made: list[PanelBackend] = []
    yield made
    for backend in made:
        backend.close()


async def _serve(
    aiohttp_client: AiohttpClient, engine: Engine, store: SettingsStore, made: list[PanelBackend], **options: Any
) -> tuple[Client, PanelBackend]:
    backend = PanelBackend(
        engine, store, RecordingPublisher(), interval=lambda: 3600.0, **options, pipeline=current_runtime().pipeline
    )
    backend.start()
    made.append(backend)
    return await aiohttp_client(panel_app(backend)), backend


async def test_every_metric_is_exposed_and_parses_back(
    aiohttp_client: AiohttpClient, tmp_path: Path, settings_store: SettingsStore, backends: list[PanelBackend]
) -> None:
    client, _ = await _serve(
        aiohttp_client,
        steady(tmp_path),
        settings_store,
        backends,
        peak_vram_by_class=lambda: PEAKS,
        peak_ram_by_class=lambda: RAM_PEAKS,
    )
    assert (await client.post("/memhooks/optimize", json={"mode": "Balanced"})).status == 200
    await asyncio.to_thread(in_worker, lambda: finished("KSampler", 3.0))

    metrics = await scrape(client)
    assert metrics.types() == FAMILIES
    assert all(name.startswith("comfy_memhooks_") for name in metrics.names())
    assert metrics.value("comfy_memhooks_ram_total_bytes", source="cgroup v2") == 8 * GIB
    assert metrics.value("comfy_memhooks_vram_total_bytes", gpu="0", name="NVIDIA Fake H100") == 80 * GIB
    assert metrics.value("comfy_memhooks_optimizations_total", mode="Balanced", trigger="manual") == 1
    assert metrics.value("comfy_memhooks_optimization_duration_seconds_count", mode="Balanced") == 1
    assert metrics.value("comfy_memhooks_node_duration_seconds_count", node_class="KSampler") == 1
    assert metrics.by("comfy_memhooks_node_peak_vram_bytes", "node_class") == PEAKS
    assert metrics.by("comfy_memhooks_node_peak_ram_bytes", "node_class") == RAM_PEAKS
    assert metrics.by("comfy_memhooks_oom_rescues_total", "outcome") == {"succeeded": 0, "failed": 0}
    assert metrics.value("comfy_memhooks_hook_installed") in (0, 1)


async def test_values_match_status(
    aiohttp_client: AiohttpClient, tmp_path: Path, settings_store: SettingsStore, backends: list[PanelBackend]
) -> None:
    engine = steady(tmp_path)
    client, _ = await _serve(aiohttp_client, engine, settings_store, backends)
    assert (await client.put("/memhooks/settings", json={"cooldown_seconds": 0})).status == 200
    for mode in ("Conservative", "Balanced", "Balanced", "Aggressive"):
        assert (await client.post("/memhooks/optimize", json={"mode": mode})).status == 200
    # RAM at 37.5% of the container: over a 10% threshold, a boundary cleanup runs, then the guard holds one back
    # (it freed nothing, and the fake usage does not grow).
    boundary = CleanupRequest.model_free(TriggerKind.BOUNDARY, 10.0)
    assert (await asyncio.to_thread(engine.run, boundary)) is not None
    held = await asyncio.to_thread(engine.run, boundary)
    assert held is not None and held.held_back

    metrics = await scrape(client)
    status = await _json(client, "/memhooks/status")
    history = await _json(client, "/memhooks/history")

    ram = status["snapshot"]["ram"]
    assert metrics.value("comfy_memhooks_ram_total_bytes", source=ram["source"]) == ram["total_bytes"]
    assert metrics.value("comfy_memhooks_ram_used_bytes", source=ram["source"]) == ram["used_bytes"]
    for gpu in status["snapshot"]["gpus"]:
        labels = {"gpu": str(gpu["index"]), "name": gpu["name"]}
        assert metrics.value("comfy_memhooks_vram_total_bytes", **labels) == gpu["total_bytes"]
        assert metrics.value("comfy_memhooks_vram_used_bytes", **labels) == gpu["used_bytes"]
    assert len(status["snapshot"]["gpus"]) == len(metrics.all("comfy_memhooks_vram_used_bytes")) == 1

    records = history["records"]
    assert len(records) == status["engine"]["optimizations_total"] == 5
    assert sum(sample.value for sample in metrics.all("comfy_memhooks_optimizations_total")) == len(records)
    by_label = collections.Counter((record["mode"], record["trigger"]["kind"]) for record in records)
    assert {
        (sample.labels["mode"], sample.labels["trigger"]): sample.value
        for sample in metrics.all("comfy_memhooks_optimizations_total")
    } == by_label
    assert by_label[("Model-free", "boundary")] == 1
    for memory in ("ram", "vram"):
        freed = sum(max(record[f"{memory}_freed_bytes"] or 0, 0) for record in records)
        exposed = [s.value for s in metrics.all("comfy_memhooks_freed_bytes_total") if s.labels["memory"] == memory]
        assert sum(exposed) == freed
    durations = collections.defaultdict(float)
    for record in records:
        durations[record["mode"]] += record["duration_seconds"]
    for mode, seconds in durations.items():
        assert math.isclose(metrics.value("comfy_memhooks_optimization_duration_seconds_sum", mode=mode), seconds)
    assert metrics.value("comfy_memhooks_pressure_held_back_total") == status["pressure"]["held_back_total"] == 1

    errors = status["errors"]
    assert metrics.by("comfy_memhooks_errors_total", "part") == {
        "receiver": errors["receiver_failures"],
        "hook": status["hook"]["hook_errors"],
        "action": errors["action_failures"],
        "panel": errors["panel_failures"],
        "probe": errors["probe_failures"],
        "predictive": errors["predictive_failures"],
        "profile": errors["profile_failures"],  # every registered part: the per-node profile's too
    }
    assert errors["hook_failures"] == status["hook"]["hook_errors"]
    assert metrics.value("comfy_memhooks_hook_installed") == int(status["hook"]["installed"])


async def test_a_failing_receiver_shows_in_both(
    aiohttp_client: AiohttpClient, tmp_path: Path, settings_store: SettingsStore, backends: list[PanelBackend]
) -> None:
    client, _ = await _serve(aiohttp_client, steady(tmp_path), settings_store, backends)

    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("a subscriber's bug")

    signals.node_finished.connect(broken, weak=False)
    try:
        before = (await scrape(client)).value("comfy_memhooks_errors_total", part="receiver")
        await asyncio.to_thread(in_worker, lambda: finished("KSampler", 1.0))
    finally:
        signals.node_finished.disconnect(broken)
    metrics = await scrape(client)
    status = await _json(client, "/memhooks/status")
    assert metrics.value("comfy_memhooks_errors_total", part="receiver") == before + 1
    assert metrics.value("comfy_memhooks_errors_total", part="receiver") == status["errors"]["receiver_failures"]
    assert metrics.value("comfy_memhooks_node_duration_seconds_count", node_class="KSampler") == 1  # ours still ran


async def test_node_durations_by_class_in_buckets(
    aiohttp_client: AiohttpClient, tmp_path: Path, settings_store: SettingsStore, backends: list[PanelBackend]
) -> None:
    client, _ = await _serve(aiohttp_client, steady(tmp_path), settings_store, backends)

    def prompt() -> None:
        for index in range(100):
            finished(f"Class{index:03d}", 0.01 * (index + 1))  # 0.01 s to 1 s
        finished("Class000", 0.25)
        finished("Class000", 45.0)
        finished("Class000", 0.0, cached=True)  # served from the cache: not a duration of the class
        finished("ReActorFaceSwap", 2.0, rescued=True)
        finished("ReActorFaceSwap", 0.5, rescued=False)

    await asyncio.to_thread(in_worker, prompt)
    metrics = await scrape(client)

    counts = metrics.by("comfy_memhooks_node_duration_seconds_count", "node_class")
    assert len(counts) == 101
    assert counts["Class000"] == 3 and counts["Class099"] == 1 and counts["ReActorFaceSwap"] == 2
    assert math.isclose(metrics.value("comfy_memhooks_node_duration_seconds_sum", node_class="Class000"), 45.26)
    buckets = {
        sample.labels["le"]: sample.value
        for sample in metrics.all("comfy_memhooks_node_duration_seconds_bucket")
        if sample.labels["node_class"] == "Class000"
    }
    assert list(buckets) == [*(repr(bound) for bound in NODE_BUCKETS_SECONDS), "+Inf"]
    assert (buckets["0.005"], buckets["0.01"], buckets["0.25"], buckets["30.0"], buckets["60.0"]) == (0, 1, 2, 2, 3)
    assert buckets["+Inf"] == 3
    assert metrics.by("comfy_memhooks_oom_rescues_total", "outcome") == {"succeeded": 1, "failed": 1}


async def test_without_a_gpu_or_a_profiled_prompt_those_have_no_samples(client: Client) -> None:
    metrics = await scrape(client)
    assert metrics.all("comfy_memhooks_vram_total_bytes") == metrics.all("comfy_memhooks_vram_used_bytes") == []
    assert "comfy_memhooks_vram_used_bytes" in metrics.families  # declared, with no GPU to report
    assert metrics.all("comfy_memhooks_node_peak_vram_bytes") == []  # the profile holds no prompt yet
    assert metrics.all("comfy_memhooks_node_peak_ram_bytes") == []
    assert "comfy_memhooks_node_peak_ram_bytes" in metrics.families  # declared all the same, as the VRAM one
    status = await _json(client, "/memhooks/status")
    ram = status["snapshot"]["ram"]
    assert metrics.value("comfy_memhooks_ram_total_bytes", source=ram["source"]) == ram["total_bytes"]


async def test_a_failing_peak_provider_is_counted_and_the_rest_served(
    aiohttp_client: AiohttpClient, tmp_path: Path, settings_store: SettingsStore, backends: list[PanelBackend]
) -> None:
    def provider() -> dict[str, int]:
        raise OSError("the profile store is gone")

    client, _ = await _serve(aiohttp_client, steady(tmp_path), settings_store, backends, peak_vram_by_class=provider)
    metrics = await scrape(client)
    assert "comfy_memhooks_node_peak_vram_bytes" not in metrics.families
    assert "comfy_memhooks_node_peak_ram_bytes" in metrics.families  # the RAM peaks' own provider still answers
    assert metrics.value("comfy_memhooks_ram_total_bytes", source="cgroup v2") == 8 * GIB
    status = await _json(client, "/memhooks/status")
    assert status["errors"]["panel_failures"] == metrics.value("comfy_memhooks_errors_total", part="panel") == 1
    assert "the profile store is gone" in status["errors"]["last_panel_error"]


async def test_the_librarys_global_registry_is_left_alone(client: Client) -> None:
    await scrape(client)
    assert b"comfy_memhooks" not in generate_latest(REGISTRY)


async def test_without_prometheus_client_the_route_says_so(
    aiohttp_client: AiohttpClient,
    settings_store: SettingsStore,
    engine: Engine,
    backends: list[PanelBackend],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # an import of it now fails
    monkeypatch.delitem(sys.modules, "comfy_memhooks.panel.metrics")
    client, _ = await _serve(aiohttp_client, engine, settings_store, backends)
    response = await client.get("/memhooks/metrics")
    assert response.status == 503
    assert "prometheus_client" in (await response.json())["error"]
    assert (await client.get("/memhooks/status")).status == 200


def test_nothing_is_loaded_until_someone_scrapes() -> None:
    code = (
        "import sys\n"
        "import comfy_memhooks.comfy.bootstrap, comfy_memhooks.panel.standalone\n"
        "assert 'prometheus_client' not in sys.modules, 'loaded at import'\n"
        "assert 'comfy_memhooks.panel.metrics' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


# The standalone server ----------------------------------------------------------------------------------------------


async def test_the_standalone_server_serves_the_metrics(
    aiohttp_client: AiohttpClient, tmp_path: Path, settings_store: SettingsStore
) -> None:
    client = await aiohttp_client(build_app(steady(tmp_path), interval=3600.0, settings_store=settings_store))
    assert (await client.post("/memhooks/optimize", json={"mode": "Conservative"})).status == 200
    for path in ("/memhooks/metrics", "/api/memhooks/metrics"):
        metrics = await scrape(client, path)
        assert set(metrics.types()) == set(FAMILIES)
        assert metrics.value("comfy_memhooks_optimizations_total", mode="Conservative", trigger="manual") == 1
        status = await _json(client, "/memhooks/status")
        assert (
            metrics.value("comfy_memhooks_ram_used_bytes", source="cgroup v2")
            == status["snapshot"]["ram"]["used_bytes"]
        )
        assert metrics.value("comfy_memhooks_hook_installed") == 0


async def test_the_standalone_server_checks_host_on_metrics(
    aiohttp_client: AiohttpClient, tmp_path: Path, settings_store: SettingsStore
) -> None:
    client = await aiohttp_client(build_app(steady(tmp_path), interval=3600.0, settings_store=settings_store))
    port = client.server.port
    response = await client.get("/memhooks/metrics", headers={"Host": f"evil.example:{port}"})
    assert response.status == 403
    assert (await response.json())["field"] == "host"
    assert (await client.get("/memhooks/metrics", headers={"Host": f"localhost:{port}"})).status == 200


# Through the executor hook ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_a_prompt_through_the_hook_shows_in_the_metrics(
    aiohttp_client: AiohttpClient,
    tmp_path: Path,
    settings_store: SettingsStore,
    backends: list[PanelBackend],
    kind: str,
) -> None:
    """A stand-in ComfyUI runs a prompt whose heavy node runs out of memory once: the rescue, the hook's
    optimizations and each class's executed nodes are counted; the second, cached run adds no duration."""
    state = {"failed": False}

    def face_swap(x: Any) -> Any:
        if not state["failed"]:
            state["failed"] = True
            raise MemoryError("out of RAM")
        return -x

    nodes = {"Const": StandInNode(lambda x: x), "ReActorFaceSwap": StandInNode(face_swap)}
    engine = Engine(probe=FakeProbe(ram_percent=50.0))
    client, _ = await _serve(aiohttp_client, engine, settings_store, backends)
    module = make_execution_module(kind, nodes)
    hooked_runtime(module, engine, settings_store)
    executor = module.PromptExecutor()
    prompt, order = chain_prompt("Const", "ReActorFaceSwap")

    await asyncio.to_thread(in_worker, lambda: executor.execute(prompt, "p-1", {}, order))
    await asyncio.to_thread(in_worker, lambda: executor.execute(prompt, "p-2", {}, order))  # all cached

    metrics = await scrape(client)
    status = await _json(client, "/memhooks/status")
    assert metrics.by("comfy_memhooks_oom_rescues_total", "outcome") == {"succeeded": 1, "failed": 0}
    assert metrics.by("comfy_memhooks_node_duration_seconds_count", "node_class") == {
        "Const": 1,
        "ReActorFaceSwap": 1,
    }
    assert metrics.value("comfy_memhooks_optimizations_total", mode="Aggressive", trigger="rescue") == 1
    assert (
        sum(s.value for s in metrics.all("comfy_memhooks_optimizations_total"))
        == status["engine"]["optimizations_total"]
    )
    assert metrics.value("comfy_memhooks_hook_installed") == 1 == int(status["hook"]["installed"])
    assert metrics.value("comfy_memhooks_errors_total", part="hook") == status["hook"]["hook_errors"] == 0


async def test_the_peak_ram_by_class_is_what_the_profile_route_says_each_node_needed(
    aiohttp_client: AiohttpClient,
    settings_store: SettingsStore,
    backends: list[PanelBackend],
) -> None:
    """A node that takes 96 MiB while it runs and gives them back, and one that keeps 32 MiB, recorded with the
    process's peak counter as in ComfyUI: the metric is each class's largest peak in ``/memhooks/profile``, and
    the spike is there, though it left nothing behind."""
    spike, held = 96 * MIB, 32 * MIB
    nodes = {
        "Const": StandInNode(lambda x: x),
        "Spike": StandInNode(lambda x: len(b"\x01" * spike)),  # every page written, all freed before it returns
        "Hold": StandInNode(lambda x: b"\x01" * held),  # kept in the output
    }
    store = ProfileStore()
    engine = Engine(probe=FakeProbe(ram_percent=50.0))
    client, _ = await _serve(aiohttp_client, engine, settings_store, backends, profiles=store)
    recorder = ProfileRecorder(
        store, peaks=RamPeaks(ProcessHighWater(profile_failures)), pipeline=current_runtime().pipeline
    )
    recorder.connect()
    module = make_execution_module("sync9", nodes)
    hook.install(module, heavy=lambda name: False, pipeline=current_runtime().pipeline)
    try:
        prompt, order = chain_prompt("Const", "Spike", "Hold", "Spike")
        await asyncio.to_thread(in_worker, lambda: module.PromptExecutor().execute(prompt, "p-1", {}, order))
    finally:
        hook.uninstall()
        recorder.disconnect()

    metrics = await scrape(client)
    answer = await _json(client, "/memhooks/profile")
    profiled = answer["profile"]["nodes"]
    expected: dict[str, int] = {}
    for each in profiled:
        expected[each["node_class"]] = max(expected.get(each["node_class"], 0), each["ram_peak_bytes"])
    assert metrics.by("comfy_memhooks_node_peak_ram_bytes", "node_class") == expected
    spikes = [each for each in profiled if each["node_class"] == "Spike"]
    assert len(spikes) == 2 and {each["ram_peak_method"] for each in spikes} == {"hwm"}
    assert all(0.9 * spike <= each["ram_peak_bytes"] <= 1.1 * spike for each in spikes)
    assert all(each["ram_left_bytes"] < 0.1 * spike for each in spikes)
    (hold,) = [each for each in profiled if each["node_class"] == "Hold"]
    assert 0.9 * held <= hold["ram_left_bytes"] <= hold["ram_peak_bytes"] <= 1.1 * held
