"""The Memory panel in real Chromium, against the standalone server (the same modules ComfyUI's sidebar mounts)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import TriggerKind
from comfy_memhooks.engine.request import CleanupRequest
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.panel.standalone import BACKEND, HUB, build_app
from comfy_memhooks.triggers.settings import SettingsStore
from tests.panel.panel_support import CHROMIUM, CHROMIUM_ARGS, GIB, container_engine, fake_gpu_engine, no_gpu_engine
from tests.standin_platforms import standin_torch

pytestmark = pytest.mark.browser


if shutil.which(CHROMIUM) is None:
    pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)
async_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")

# The library modules under web/js/lib/ and its sections: ComfyUI imports each of them as an extension too.
LIBRARY = Path(__file__).resolve().parents[2] / "web" / "js" / "lib"
LIBRARY_MODULES = sorted(path.relative_to(LIBRARY).as_posix() for path in LIBRARY.rglob("*.js"))


@dataclass
class Served:
    url: str
    backend: PanelBackend
    store: SettingsStore
    page: Any
    errors: list[str] = field(default_factory=list)
    # Console lines a test causes on purpose (Chromium logs every 4xx answer as an error).
    expected_errors: tuple[str, ...] = ()

    async def goto_panel(self) -> dict[str, Any]:
        """Opens the page; returns the /memhooks/status answer the panel itself received."""
        async with self.page.expect_response(lambda response: response.url.endswith("/memhooks/status")) as info:
            await self.page.goto(self.url)
        status: dict[str, Any] = await (await info.value).json()
        await self.page.wait_for_selector('[data-role="gauge-ram"][data-percent]:not([data-percent=""])')
        return status

    async def wait_live(self) -> None:
        await self.page.wait_for_selector('[data-role="connection"][data-state="live"]')
        hub = self.page_app_hub
        for _ in range(200):
            if hub.has_clients():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the page's websocket never connected")

    page_app_hub: Any = None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with async_api.async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def serve(
    aiohttp_server: AiohttpServer, browser: Any, settings_store: SettingsStore, engine: Engine
) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    contexts = []
    served_list: list[Served] = []

    async def start(panel_engine: Engine | None = None, width: int = 420) -> Served:
        app = build_app(panel_engine or engine, interval=3600.0, settings_store=settings_store)
        server = await aiohttp_server(app)
        context = await browser.new_context(viewport={"width": width, "height": 1000})
        contexts.append(context)
        page = await context.new_page()
        served = Served(str(server.make_url("/")), app[BACKEND], settings_store, page)
        served.page_app_hub = app[HUB]
        page.on("console", lambda message: message.type == "error" and served.errors.append(message.text))
        page.on("pageerror", lambda error: served.errors.append(str(error)))
        served_list.append(served)
        return served

    yield start
    for context in contexts:
        await context.close()
    for served in served_list:
        unexpected = [error for error in served.errors if not any(part in error for part in served.expected_errors)]
        assert unexpected == [], unexpected


def _usage_text(used: int, total: int, percent: float) -> str:
    return f"{used / GIB:.1f} / {total / GIB:.1f} GB · {percent:.1f}%"


async def test_panel_renders_and_its_numbers_match_the_status(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve()
    status = await served.goto_panel()
    page = served.page
    ram = status["snapshot"]["ram"]
    gauge = page.locator('[data-role="gauge-ram"]')
    assert float(await gauge.get_attribute("data-percent")) == ram["percent"]
    assert int(await gauge.get_attribute("data-used-bytes")) == ram["used_bytes"]
    assert int(await gauge.get_attribute("data-total-bytes")) == ram["total_bytes"]
    assert await gauge.locator('[data-role="value"]').text_content() == _usage_text(
        ram["used_bytes"], ram["total_bytes"], ram["percent"]
    )
    note = await gauge.locator('[data-role="note"]').text_content()
    assert note.startswith("container limit" if ram["container_limit"] else "host RAM")

    vram = page.locator('[data-role="gauge-gpu"]')
    assert await vram.count() == 1
    assert await vram.locator('[data-role="value"]').text_content() == "n/a"
    assert await vram.locator('[data-role="note"]').text_content() == status["snapshot"]["gpu_unavailable_reason"]

    assert await page.locator('[data-role="hook"]').text_content() == f"hook off: {status['hook']['reason']}"
    assert await page.locator('[data-role="cooldown"]').text_content() == "ready"
    assert await page.locator('[data-role="run"]').text_content() == "idle"
    assert await page.locator('[data-role="errors"]').text_content() == "no errors"
    await page.wait_for_selector('[data-role="processes-note"]:has-text("n/a")')
    assert "nvidia-ml-py is not installed" in await page.locator('[data-role="processes-note"]').text_content()
    assert await page.locator('[data-role="history"] td.memhooks-empty').text_content() == "No optimization yet."


async def test_each_gpu_is_a_gauge_and_its_processes_are_listed(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve(fake_gpu_engine(used_gib=20.0))
    status = await served.goto_panel()
    page = served.page
    gpu = status["snapshot"]["gpus"][0]
    gauge = page.locator('[data-role="gauge-gpu"][data-key="gpu-0"]')
    assert float(await gauge.get_attribute("data-percent")) == gpu["percent"] == 25.0
    assert await gauge.locator('[data-role="value"]').text_content() == "20.0 / 80.0 GB · 25.0%"
    assert await gauge.locator('[data-role="note"]').text_content() == "NVIDIA Fake H100"
    assert await gauge.get_attribute("data-level") == "ok"
    rows = page.locator('[data-role="process-row"]')
    await rows.first.wait_for()
    assert await rows.count() == 2
    assert "(this process)" in await rows.nth(0).text_content()
    assert "(outside this container)" in await rows.nth(1).text_content()


async def test_a_backend_other_than_cuda_is_named(
    serve: Callable[..., Awaitable[Served]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", standin_torch("mps"))  # a Mac: MPS's share of unified memory
    served = await serve(no_gpu_engine())
    status = await served.goto_panel()
    assert status["snapshot"]["gpu_backend"] == "mps"
    gauge = served.page.locator('[data-role="gauge-gpu"][data-key="gpu-0"]')
    assert await gauge.locator('[data-role="value"]').text_content() == "6.0 / 24.0 GB · 25.0%"
    note = await gauge.locator('[data-role="note"]').text_content()
    assert note.startswith("Apple MPS (unified memory) · MPS · torch "), note


async def test_the_container_limit_is_named(serve: Callable[..., Awaitable[Served]], tmp_path: Path) -> None:
    served = await serve(container_engine(tmp_path, 4 * GIB, 3 * GIB))
    await served.goto_panel()
    gauge = served.page.locator('[data-role="gauge-ram"]')
    assert await gauge.locator('[data-role="value"]').text_content() == "3.0 / 4.0 GB · 75.0%"
    assert (await gauge.locator('[data-role="note"]').text_content()).startswith("container limit (cgroup v2)")
    assert await gauge.get_attribute("data-level") == "warn"


async def test_pressure_cleanups_are_marked_and_a_held_back_one_is_said(
    serve: Callable[..., Awaitable[Served]], tmp_path: Path
) -> None:
    engine = container_engine(tmp_path, 4 * GIB, int(3.6 * GIB))  # 90% of the container's limit
    done = engine.run(CleanupRequest.model_free(TriggerKind.BOUNDARY, 80.0, node_id="5", node_class="ImageScale"))
    assert done is not None and done.performed
    held = engine.run(CleanupRequest.model_free(TriggerKind.BOUNDARY, 80.0, node_id="6", node_class="ImageScale"))
    assert held is not None and held.held_back  # the fake cgroup's usage never drops: nothing new to free
    served = await serve(engine)
    await served.goto_panel()
    await served.wait_live()
    page = served.page
    await asyncio.to_thread(served.backend.sample_now)

    row = page.locator('[data-role="history-row"]').first
    await row.wait_for()
    assert await row.get_attribute("data-pressure") == "true"
    cells = await row.locator("td").all_text_contents()
    assert cells[1:3] == ["pressure · boundary · ImageScale #5", "Model-free"]
    held_text = page.locator('[data-role="held-back"]')
    await held_text.wait_for()
    assert "(boundary): nothing new to free since " in await held_text.text_content()
    await page.wait_for_function("document.querySelector('[data-role=\"chart\"]').dataset.pressureMarks === '1'")
    await row.locator("button").click()
    actions = page.locator('[data-role="history-actions"]')
    await actions.wait_for()
    assert "(pressure: RAM 90% >= 80%)" in await actions.text_content()


async def test_optimize_now_adds_a_history_row(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve()
    await served.goto_panel()
    page = served.page
    rows = page.locator('[data-role="history-row"]')
    assert await rows.count() == 0
    await page.select_option('[data-role="optimize-mode"]', "Conservative")
    await page.click('[data-role="optimize"]')
    await rows.first.wait_for()
    assert await rows.count() == 1
    history = served.backend.history()
    (record,) = history["records"]
    assert await rows.first.get_attribute("data-sequence") == str(record["sequence"])
    cells = await rows.first.locator("td").all_text_contents()
    assert cells[1:4] == ["manual", "Conservative", f"{record['freed_gib']:.2f} GB"]
    result = page.locator('[data-role="optimize-result"]')
    assert (await result.text_content()).startswith("Conservative: freed")

    await rows.first.locator("button").click()
    actions = page.locator('[data-role="history-actions"]')
    await actions.wait_for()
    assert "gc_collect" in await actions.text_content()
    assert "cuda_empty_cache" in await actions.text_content()

    await page.click('[data-role="optimize"]')
    await page.wait_for_selector('[data-role="optimize-result"][data-state="cooldown"]')
    assert (await result.text_content()).startswith("Cooldown: ")
    assert await rows.count() == 1


async def test_a_pushed_sample_updates_the_chart_within_a_second(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve()
    await served.goto_panel()
    await served.wait_live()
    page = served.page
    chart = '[data-role="chart"]'
    await page.wait_for_function(f"document.querySelector('{chart}').dataset.draws !== '0'")
    before = await page.eval_on_selector(chart, "canvas => Number(canvas.dataset.samples)")
    sample = await asyncio.to_thread(served.backend.sample_now)
    await page.wait_for_function(
        f"t => Math.abs(Number(document.querySelector('{chart}').dataset.lastSampleAt) - t) < 1e-6",
        arg=sample.taken_at,
        timeout=1000,
    )
    assert await page.eval_on_selector(chart, "canvas => Number(canvas.dataset.samples)") == before + 1
    # The RAM line was drawn: the foreground has pixels of its colour.
    drawn = await page.eval_on_selector(
        chart,
        """canvas => {
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            for (let i = 0; i < data.length; i += 4) if (data[i + 3] > 0) return true;
            return false;
        }""",
    )
    assert drawn
    ram = await page.locator('[data-role="gauge-ram"]').get_attribute("data-percent")
    assert float(ram) == sample.ram_percent


async def test_a_bad_setting_shows_its_error_and_changes_nothing(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve()
    served.expected_errors = ("status of 400 (Bad Request)",)
    await served.goto_panel()
    page = served.page
    await page.click('[data-role="settings-section"] > summary')
    threshold = page.locator('[data-field="ram_threshold"]')
    assert await threshold.input_value() == "80"
    await threshold.fill("150")
    await page.click('[data-role="save-settings"]')
    error = page.locator('[data-error-for="ram_threshold"]')
    await error.wait_for(state="visible")
    assert (await error.text_content()).startswith("ram_threshold: 150 is outside the allowed range")
    assert await threshold.get_attribute("aria-invalid") == "true"
    assert await page.locator('[data-role="settings-result"]').text_content() == "Not saved: nothing changed."
    assert served.store.current.thresholds.ram_percent == 80.0
    assert not served.store.path.exists()
    assert served.backend.settings()["settings"]["ram_threshold"] == 80.0

    pattern = page.locator('[data-field="rules[1].pattern"]')
    await pattern.fill("")
    await threshold.fill("75")
    await page.click('[data-role="save-settings"]')
    rule_error = page.locator('[data-error-for="rules[1]"]')
    await rule_error.wait_for(state="visible")
    assert (await rule_error.text_content()).startswith("rules[1].pattern: must be a non-empty glob")
    assert not await error.is_visible()
    assert not served.store.path.exists()

    await pattern.fill("VHS_LoadVideoFFmpeg*")
    await page.click('[data-role="save-settings"]')
    await page.wait_for_selector('[data-role="settings-result"][data-state="saved"]')
    saved = json.loads(served.store.path.read_text())
    assert saved["ram_threshold"] == 75.0
    assert saved["rules"][1]["pattern"] == "VHS_LoadVideoFFmpeg*"
    assert not await rule_error.is_visible()


async def test_library_modules_do_nothing_when_imported_as_extensions(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    served = await serve()
    page = served.page
    await page.goto(served.url + "memhooks/settings")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    changed = await page.evaluate(
        """async (modules) => {
            const before = document.documentElement.outerHTML;
            for (const name of modules) await import(`/memhooks/web/js/lib/${name}`);
            return document.documentElement.outerHTML !== before;
        }""",
        LIBRARY_MODULES,
    )
    assert changed is False
    assert all(url.endswith(".js") for url in requests), requests
    assert "register.js" in LIBRARY_MODULES


FAKE_FRONTEND = """
async ({ withSidebar }) => {
    const { registerMemoryPanel } = await import("/memhooks/web/js/lib/register.js");
    const events = new EventTarget();
    // What the panel uses of ComfyUI's scripts/api.js: fetchApi (here without the /api prefix) and its events.
    const api = {
        fetchApi: (path, init) => fetch(path, init),
        addEventListener: (type, listener) => events.addEventListener(type, listener),
    };
    const registered = [];
    const tabs = [];
    const app = { registerExtension: (extension) => registered.push(extension) };
    if (withSidebar) app.extensionManager = { registerSidebarTab: (tab) => tabs.push(tab) };
    const panel = registerMemoryPanel(app, api);
    registered[0].setup();
    window.fakeFrontend = { events, registered, tabs, panel };
    return {
        name: registered[0].name,
        commands: registered[0].commands.map((command) => command.id),
        tabs: tabs.map(({ id, title, type }) => ({ id, title, type })),
    };
}
"""


async def test_the_sidebar_tab_is_registered_and_takes_comfyuis_events(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    served = await serve()
    page = served.page
    await page.goto(served.url + "memhooks/settings")
    registered = await page.evaluate(FAKE_FRONTEND, {"withSidebar": True})
    assert registered == {
        "name": "memhooks.MemoryPanel",
        "commands": ["memhooks.ToggleMemoryPanel"],
        "tabs": [{"id": "memhooks.memory", "title": "Memory", "type": "custom"}],
    }
    await page.evaluate(
        """() => {
            const host = document.createElement("div");
            host.id = "sidebar-host";
            host.style.cssText = "width: 360px; height: 900px";
            document.body.replaceChildren(host);
            const tab = window.fakeFrontend.tabs[0];
            tab.render(host);
            tab.render(host);  // ComfyUI may call render again for the same element
        }"""
    )
    await page.wait_for_selector('#sidebar-host [data-role="gauge-ram"][data-percent]:not([data-percent=""])')
    assert await page.locator('[data-role="panel"]').count() == 1
    status = served.backend.status()
    status["sample"] = {**status["snapshot"], "taken_at": status["snapshot"]["taken_at"] + 1}
    status["sample"] = {
        "taken_at": status["snapshot"]["taken_at"] + 1,
        "ram_percent": 42.0,
        "ram_used_bytes": 1,
        "vram_percent": None,
        "gpu_percents": [],
    }
    await page.evaluate(
        "status => window.fakeFrontend.events.dispatchEvent(new CustomEvent('memhooks.status', { detail: status }))",
        status,
    )
    await page.wait_for_function(
        "t => Number(document.querySelector('[data-role=chart]').dataset.lastSampleAt) === t",
        arg=status["sample"]["taken_at"],
    )
    await page.evaluate("() => window.fakeFrontend.tabs[0].destroy()")
    assert await page.locator('[data-role="panel"]').count() == 0


async def test_without_the_sidebar_api_a_floating_panel_opens(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve()
    page = served.page
    await page.goto(served.url + "memhooks/settings")
    registered = await page.evaluate(FAKE_FRONTEND, {"withSidebar": False})
    assert registered["tabs"] == []
    button = page.locator('[data-role="memhooks-floating-button"]')
    assert await button.text_content() == "Memory"
    await button.click()
    await page.wait_for_selector(
        '[data-role="memhooks-floating"] [data-role="gauge-ram"][data-percent]:not([data-percent=""])'
    )
    assert await page.locator('[data-role="memhooks-floating"]').is_visible()
    await page.evaluate("() => window.fakeFrontend.registered[0].commands[0].function()")
    assert not await page.locator('[data-role="memhooks-floating"]').is_visible()


async def test_after_a_lost_connection_the_panel_reconnects_and_reloads(
    serve: Callable[..., Awaitable[Served]],
) -> None:
    served = await serve()
    await served.goto_panel()
    await served.wait_live()
    page = served.page
    async with page.expect_request(lambda request: request.url.endswith("/memhooks/history"), timeout=15_000):
        for socket in list(served.page_app_hub._sockets):
            await socket.close()
    await page.wait_for_selector('[data-role="connection"][data-state="live"]')
    await served.wait_live()
    sample = await asyncio.to_thread(served.backend.sample_now)
    await page.wait_for_function(
        "t => Math.abs(Number(document.querySelector('[data-role=chart]').dataset.lastSampleAt) - t) < 1e-6",
        arg=sample.taken_at,
    )
