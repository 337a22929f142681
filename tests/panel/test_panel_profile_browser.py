"""The Memory panel's per-node profile in real Chromium, mounted as ComfyUI's sidebar mounts it, over the
standalone server's routes, with a stand-in for the frontend's graph and canvas."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from comfy_memhooks.profile import ProfileStore
from tests.panel.test_panel_browser import Served, browser, serve  # noqa: F401  (fixtures, shared)
from tests.profile_support import MIB, node, record, sample_prompt

pytestmark = pytest.mark.browser

# The frontend as the panel uses it: api.fetchApi and its events, app.registerExtension and the sidebar API, and
# the graph's titles and the canvas's selection (LiteGraph's getNodeById, selectNode and centerOnNode).
FRONTEND = """
async () => {
    const { registerMemoryPanel } = await import("/memhooks/web/js/lib/register.js");
    const events = new EventTarget();
    const api = {
        fetchApi: (path, init) => fetch(path, init),
        addEventListener: (type, listener) => events.addEventListener(type, listener),
    };
    const titles = { 1: "Load Checkpoint", 2: "VAE Decode", 3: "Invert" };
    const selected = [];
    const centered = [];
    const tabs = [];
    const app = {
        registerExtension: (extension) => extension.setup(),
        extensionManager: { registerSidebarTab: (tab) => tabs.push(tab) },
        graph: { getNodeById: (id) => (id in titles ? { id, title: titles[id] } : null) },
        canvas: { selectNode: (node) => selected.push(node.id), centerOnNode: (node) => centered.push(node.id) },
    };
    registerMemoryPanel(app, api);
    const host = document.createElement("div");
    host.style.cssText = "width: 380px; height: 1400px";
    document.body.replaceChildren(host);
    tabs[0].render(host);
    window.frontend = { events, selected, centered };
}
"""
FINISHED = "() => window.frontend.events.dispatchEvent(new CustomEvent('memhooks.prompt', "
FINISHED += "{ detail: { phase: 'finished', prompt_id: 'x', success: true } }))"


async def rows(page: Any) -> list[tuple[str, str]]:
    """(node id, data-heaviest) of each table row, top to bottom."""
    found: list[tuple[str, str]] = await page.eval_on_selector_all(
        '[data-role="profile-row"]', "rows => rows.map(row => [row.dataset.nodeId, row.dataset.heaviest])"
    )
    return [tuple(row) for row in found]  # type: ignore[misc]


async def open_panel(serve: Callable[..., Awaitable[Served]]) -> tuple[Served, ProfileStore]:  # noqa: F811
    served = await serve(width=460)
    store = ProfileStore()
    served.backend.profiles = store
    await served.page.goto(served.url + "memhooks/settings")
    return served, store


async def test_without_a_profile_the_section_says_why(serve: Callable[..., Awaitable[Served]]) -> None:  # noqa: F811
    served, _ = await open_panel(serve)
    await served.page.evaluate(FRONTEND)
    summary = served.page.locator('[data-role="profile-summary"]')
    await summary.filter(has_text="No profile").wait_for()
    assert await summary.text_content() == "No profile: no prompt has finished yet."
    assert await served.page.locator('[data-role="profile-csv"]').is_disabled()


async def test_nodes_sorted_by_peak_with_titles_the_heaviest_marked_and_a_click_selects(
    serve: Callable[..., Awaitable[Served]],  # noqa: F811
) -> None:
    served, store = await open_panel(serve)
    sample_prompt(store, "prompt-1")
    page = served.page
    await page.evaluate(FRONTEND)
    await page.wait_for_selector('[data-role="profile-row"]')

    # By the RAM each node needed while it ran, by default: the decoder first, though it left almost nothing.
    assert await page.locator('[data-role="profile-order"]').input_value() == "ram_peak_bytes"
    assert await rows(page) == [("2", "true"), ("3", "false"), ("1", "false"), ("4", "false")]
    headers = await page.eval_on_selector_all('[data-role="profile"] th', "cells => cells.map(c => c.textContent)")
    assert headers == ["Node", "RAM peak", "Left behind", "VRAM peak", "Took"]
    first = page.locator('[data-role="profile-row"]').first
    assert (await first.locator("td").first.inner_text()).startswith("VAE Decode #2\nVAEDecode")
    assert await first.locator("td").nth(1).text_content() == "1.37 GB"
    assert await first.locator("td").nth(2).text_content() == "10 MB"  # left behind, beside the peak
    exact = first.locator('[data-role="profile-peak"]')
    assert await exact.get_attribute("data-method") == "hwm"
    assert (await exact.get_attribute("title") or "").startswith("exact: ")
    assert "the container: +1.46 GB at its peak" in (await exact.get_attribute("title") or "")
    sampled = page.locator('[data-role="profile-row"][data-node-id="3"] [data-role="profile-peak"]')
    assert await sampled.text_content() == "≥ 600 MB"
    assert await sampled.get_attribute("title") == (
        "sampled: the highest reading while it ran; a spike between readings is missed"
    )
    bounded = page.locator('[data-role="profile-row"][data-node-id="1"] [data-role="profile-peak"]')
    assert await bounded.text_content() == "≤ 300 MB"
    assert (await bounded.get_attribute("title") or "").startswith("at most: ")
    left = await page.eval_on_selector_all('[data-role="profile-left"]', "cells => cells.map(c => c.textContent)")
    assert left == ["10 MB", "5 MB", "300 MB", "0 MB"]
    unmeasured = page.locator('[data-role="profile-row"][data-node-id="4"] [data-role="profile-peak"]')
    assert await unmeasured.get_attribute("title") == "no peak reading: what it left behind"
    assert "cached" in await page.locator('[data-role="profile-row"][data-node-id="4"]').inner_text()
    assert await page.locator('[data-role="profile-row"][data-node-id="4"] td').first.inner_text() == (
        "SaveImage #4\ncached"  # no node on the canvas: the class names it
    )
    bars = page.locator('[data-role="profile-bar"]')
    assert await bars.count() == 4
    assert await bars.first.get_attribute("data-heaviest") == "true"
    widths = await page.eval_on_selector_all(
        '[data-role="profile-bar"] .memhooks-profile-fill', "fills => fills.map(fill => fill.style.width)"
    )
    assert [float(width.rstrip("%")) for width in widths[:2]] == [100.0, round(600 / 1400 * 100, 1)]
    numbers = await page.eval_on_selector_all(
        '[data-role="profile-bar"] .memhooks-number', "cells => cells.map(c => c.textContent)"
    )
    assert numbers[:2] == ["1.37 GB", "≥ 600 MB"]

    await page.select_option('[data-role="profile-order"]', "ram_left_bytes")
    await page.wait_for_selector('[data-role="profile"][data-order="ram_left_bytes"]')
    assert await rows(page) == [("1", "true"), ("2", "false"), ("3", "false"), ("4", "false")]  # what stayed

    await page.select_option('[data-role="profile-order"]', "vram_peak_bytes")
    await page.wait_for_selector('[data-role="profile"][data-order="vram_peak_bytes"]')
    assert await rows(page) == [("1", "true"), ("2", "false"), ("3", "false"), ("4", "false")]
    assert await bars.count() == 3  # the cached node has no VRAM figure: no bar

    await page.locator('[data-role="profile-row"][data-node-id="2"]').click()
    assert await page.evaluate("() => [window.frontend.selected, window.frontend.centered]") == [[2], [2]]


async def test_it_exports_csv_and_json(serve: Callable[..., Awaitable[Served]], tmp_path: Path) -> None:  # noqa: F811
    served, store = await open_panel(serve)
    sample_prompt(store, "prompt-1")
    page = served.page
    await page.evaluate(FRONTEND)
    await page.wait_for_selector('[data-role="profile-row"]')

    async with page.expect_download() as info:
        await page.click('[data-role="profile-csv"]')
    download = await info.value
    assert download.suggested_filename == "memhooks-profile-prompt-1.csv"
    await download.save_as(tmp_path / "profile.csv")
    table = list(csv.DictReader(io.StringIO((tmp_path / "profile.csv").read_text())))
    assert [(row["node_id"], row["title"], row["node_class"]) for row in table] == [
        ("1", "Load Checkpoint", "CheckpointLoaderSimple"),
        ("2", "VAE Decode", "VAEDecode"),
        ("3", "Invert", "ImageInvert"),
        ("4", "", "SaveImage"),
    ]
    assert int(table[0]["vram_peak_bytes"]) == 2000 * MIB
    decode, invert = table[1], table[2]
    assert (int(decode["ram_peak_bytes"]), decode["ram_peak_method"], int(decode["ram_left_bytes"])) == (
        1400 * MIB,
        "hwm",
        10 * MIB,
    )
    assert int(decode["rss_peak_bytes"]) == int(decode["rss_before_bytes"]) + 1400 * MIB
    assert int(decode["container_peak_added_bytes"]) == 1500 * MIB
    assert (invert["ram_peak_method"], int(invert["ram_peak_bytes"]), int(invert["ram_left_bytes"])) == (
        "sampled",
        600 * MIB,
        5 * MIB,
    )
    assert table[0]["container_peak_added_bytes"] == ""  # not measured: empty, not 0
    assert table[3]["cached"] == "true" and table[3]["vram_peak_bytes"] == "" and table[3]["ram_peak_method"] == ""

    async with page.expect_download() as info:
        await page.click('[data-role="profile-json"]')
    download = await info.value
    await download.save_as(tmp_path / "profile.json")
    exported = json.loads((tmp_path / "profile.json").read_text())
    served_profile = served.backend.profile()
    assert served_profile is not None
    assert exported["prompt_id"] == "prompt-1"
    assert [each["title"] for each in exported["nodes"]] == ["Load Checkpoint", "VAE Decode", "Invert", None]
    assert [{k: v for k, v in each.items() if k != "title"} for each in exported["nodes"]] == served_profile["profile"][
        "nodes"
    ]
    decode_json = exported["nodes"][1]
    assert (decode_json["ram_peak_bytes"], decode_json["ram_peak_method"], decode_json["ram_left_bytes"]) == (
        1400 * MIB,
        "hwm",
        10 * MIB,
    )
    assert exported["nodes"][2]["ram_peak_method"] == "sampled"


async def test_it_redraws_only_when_the_profile_changed(serve: Callable[..., Awaitable[Served]]) -> None:  # noqa: F811
    served, store = await open_panel(serve)
    sample_prompt(store, "prompt-1")
    page = served.page
    await page.evaluate(FRONTEND)
    await page.wait_for_selector('[data-role="profile-row"]')
    await page.evaluate("() => { document.querySelector('[data-role=profile-row]').dataset.mark = 'kept'; }")

    async with page.expect_response(lambda response: response.url.endswith("/memhooks/profile")):
        await page.evaluate(FINISHED)  # a prompt finished, but the profile is the same: nothing is redrawn
    await page.wait_for_timeout(200)
    assert await page.locator('[data-role="profile-row"][data-mark="kept"]').count() == 1

    record(store, "prompt-2", node("7", "UpscaleModelLoader", 1500 * MIB, prompt_id="prompt-2"))
    await page.evaluate(FINISHED)
    await page.locator('[data-role="profile-summary"]', has_text="Prompt prompt-2").wait_for()
    assert await rows(page) == [("7", "true")]
    assert await page.locator('[data-role="profile-row"][data-mark="kept"]').count() == 0
