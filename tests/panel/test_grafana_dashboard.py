"""The shipped Grafana dashboard asks only for what ``/memhooks/metrics`` exposes, and has the panels it promises."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from pytest_aiohttp import AiohttpClient

from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.triggers.settings import SettingsStore
from tests.panel.metrics_support import Scrape
from tests.panel.panel_support import GIB, RecordingPublisher, container_engine, in_worker, node_finished, panel_app

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "comfy_memhooks.json"
METRIC = re.compile(r"\bcomfy_memhooks_[a-z0-9_]+")
# A counter's function and the metric it is applied to, e.g. ``rate(comfy_memhooks_x_total{...}[5m])``.
APPLIED = re.compile(r"\b(rate|increase)\(\s*(comfy_memhooks_[a-z0-9_]+)")


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: the panels' targets and the template variables' queries."""
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        queries.append(query["query"] if isinstance(query, dict) else str(query))
    return queries


async def _exposed_names(aiohttp_client: AiohttpClient, tmp_path: Path, store: SettingsStore) -> Scrape:
    """A scrape in which every metric has samples: a GPU, a peak provider, an optimization, a node."""
    backend = PanelBackend(
        container_engine(tmp_path, 8 * GIB, 3 * GIB, used_vram_gib=20.0),
        store,
        RecordingPublisher(),
        interval=lambda: 3600.0,
        peak_vram_by_class=lambda: {"KSampler": 6 * GIB},
        peak_ram_by_class=lambda: {"VAEDecode": 2 * GIB},
        pipeline=current_runtime().pipeline,
    )
    backend.start()
    try:
        client = await aiohttp_client(panel_app(backend))
        assert (await client.post("/memhooks/optimize", json={"mode": "Balanced"})).status == 200
        await asyncio.to_thread(in_worker, lambda: node_finished("3", "KSampler"))
        response = await client.get("/memhooks/metrics")
        assert response.status == 200
        return Scrape(await response.text())
    finally:
        backend.close()


async def test_every_query_names_only_exposed_metrics(
    aiohttp_client: AiohttpClient, tmp_path: Path, settings_store: SettingsStore
) -> None:
    exposed = (await _exposed_names(aiohttp_client, tmp_path, settings_store)).names()
    queries = _queries(_dashboard())
    used = {name for query in queries for name in METRIC.findall(query)}
    assert used, "the dashboard queries no comfy_memhooks metric"
    assert used - exposed == set()
    for query in queries:
        for function, name in APPLIED.findall(query):  # a gauge's rate means nothing
            assert name.endswith(("_total", "_bucket")), f"{function} over {name} in {query}"
        if "histogram_quantile" in query:
            assert all(name.endswith("_bucket") for name in METRIC.findall(query)), query


def test_the_promised_panels_are_there() -> None:
    dashboard = _dashboard()
    by_title = {
        panel["title"]: " ".join(target["expr"] for target in panel["targets"]) for panel in dashboard["panels"]
    }
    wanted = {
        "Pods closest to their memory limit": ("comfy_memhooks_ram_used_bytes", "comfy_memhooks_ram_total_bytes"),
        "Node classes that peak highest (VRAM, last prompt)": ("comfy_memhooks_node_peak_vram_bytes",),
        "Node classes that peak highest (RAM, last prompt)": ("comfy_memhooks_node_peak_ram_bytes",),
        "RAM used and limit": ("comfy_memhooks_ram_used_bytes",),
        "VRAM used per GPU": ("comfy_memhooks_vram_used_bytes",),
        "Optimizations per minute, by mode and trigger": ("comfy_memhooks_optimizations_total",),
        "Memory freed per minute": ("comfy_memhooks_freed_bytes_total",),
        "OOM rescues (last hour)": ("comfy_memhooks_oom_rescues_total",),
        "Node duration p95 by class": ("histogram_quantile(0.95", "comfy_memhooks_node_duration_seconds_bucket"),
    }
    for title, parts in wanted.items():
        assert title in by_title
        assert all(part in by_title[title] for part in parts), (title, by_title[title])


def test_it_imports_with_any_prometheus_data_source() -> None:
    dashboard = _dashboard()
    assert [item["name"] for item in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
        assert all('instance=~"$instance"' in target["expr"] for target in panel["targets"]), panel["title"]
    assert [variable["name"] for variable in dashboard["templating"]["list"]] == ["instance"]
