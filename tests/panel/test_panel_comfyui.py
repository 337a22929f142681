"""The Memory panel in a real ComfyUI, in real Chromium: it loads cleanly, sits in the sidebar, and is live in a run.

Needs ``COMFYUI_DIR`` (a ComfyUI checkout) and ``COMFYUI_PYTHON`` (a Python with its requirements; default: this
one); ``COMFYUI_EXTRA_PYTHONPATH`` goes to ComfyUI's process only (the frontend packages that release pins). With
``MEMHOOKS_PANEL_SCREENSHOT=<path>`` the test also saves a screenshot of the panel during the run (docs/panel.png).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.comfyui_server import TEST_PACK, ComfyUI, checkout_version, running_comfyui
from tests.panel.panel_support import CHROMIUM, CHROMIUM_ARGS, drag_sidebar_wider

pytestmark = [pytest.mark.integration, pytest.mark.browser]

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
TAB_BUTTON = '[class~="memhooks.memory-tab-button"]'
PANEL = '[data-role="panel"]'

if not COMFYUI_DIR:
    pytest.skip("COMFYUI_DIR is not set: no ComfyUI checkout to run the panel in", allow_module_level=True)
if shutil.which(CHROMIUM) is None:
    pytest.skip(f"Chromium is not installed at {CHROMIUM}", allow_module_level=True)
async_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")


TEST_NODES = Path(__file__).resolve().parent / "comfy_nodes" / "memhooks_panel_testnodes"


MONITOR_NODE = {
    "class_type": "UnifiedMemoryManager",
    "inputs": {
        "enable_monitoring": True,
        "enable_optimization": False,
        "auto_optimize": False,
        "enable_auto_cleanup": False,
        "mode": "Monitor Only",
        "ram_threshold": 80.0,
        "vram_threshold": 85.0,
        "cooldown_seconds": 0.0,
        "detailed_report": False,
    },
}


def holding_workflow(megabytes: tuple[int, ...] = (1024, 2048, 1024), seconds: float = 3.0) -> dict[str, Any]:
    """EmptyImage, then one ``MemhooksTestHoldMemory`` per entry (each holds that much RAM), then PreviewImage,
    and a monitoring-only Unified Memory Manager on the side (it frees nothing)."""
    prompt: dict[str, Any] = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 512, "height": 512, "batch_size": 1, "color": 3355443}}
    }
    previous = "1"
    for index, size in enumerate(megabytes, start=2):
        prompt[str(index)] = {
            "class_type": "MemhooksTestHoldMemory",
            "inputs": {"image": [previous, 0], "megabytes": size, "seconds": seconds},
        }
        previous = str(index)
    prompt[str(len(megabytes) + 2)] = {"class_type": "PreviewImage", "inputs": {"images": [previous, 0]}}
    prompt[str(len(megabytes) + 3)] = {
        **MONITOR_NODE,
        "inputs": {**MONITOR_NODE["inputs"], "trigger_image": [previous, 0]},
    }
    return prompt


def showcase_workflow() -> dict[str, Any]:
    """For the screenshot: stand-ins of a video and face-swap pipeline, with the node between them."""
    node = {
        "enable_monitoring": True,
        "enable_optimization": True,
        "auto_optimize": True,
        "enable_auto_cleanup": False,
        "mode": "Balanced",
        "ram_threshold": 80.0,
        "vram_threshold": 85.0,
        "cooldown_seconds": 30.0,
        "detailed_report": False,
    }
    return {
        "1": {"class_type": "VHS_LoadVideo", "inputs": {"seed": 1, "frame_count": 48, "width": 512, "height": 512}},
        "2": {"class_type": "MemhooksTestHoldMemory", "inputs": {"image": ["1", 0], "megabytes": 2560, "seconds": 4.0}},
        "3": {"class_type": "ReActorFaceSwap", "inputs": {"input_image": ["2", 0], "enabled": True}},
        "4": {"class_type": "UnifiedMemoryManager", "inputs": {**node, "trigger_image": ["3", 0]}},
        "5": {"class_type": "MemhooksTestHoldMemory", "inputs": {"image": ["4", 6], "megabytes": 5120, "seconds": 6.0}},
        "6": {"class_type": "VHS_VideoCombine", "inputs": {"images": ["5", 0], "frame_rate": 8.0}},
    }


# 0.33 and later release their output cache after every node: the panel says what it evicted in the prompt.
RELEASES_PER_NODE = checkout_version() >= (0, 33, 0)


@pytest.fixture(scope="module")
def comfyui() -> Iterator[ComfyUI]:
    # The hook's test pack brings stand-ins with the real heavy class names (ReActor, VideoHelperSuite). On 0.33.0,
    # which has no comfy.system_memory yet, the panel's test pack registers a stand-in for it (see its docstring).
    environment = {"MEMHOOKS_TEST_SYSTEM_MEMORY": "1"} if RELEASES_PER_NODE else {}
    with running_comfyui(packs=(TEST_NODES, TEST_PACK), record_events=False, environment=environment) as running:
        yield running


def test_comfyui_serves_the_routes_under_both_prefixes(comfyui: ComfyUI) -> None:
    log = comfyui.log_text()
    assert "IMPORT FAILED" not in log
    assert comfyui.our_tracebacks() == []
    for prefix in ("", "/api"):
        status = comfyui.get(f"{prefix}/memhooks/status")
        assert status["snapshot"]["ram"]["total_bytes"] > 0
        assert set(status["hook"]) >= {"installed", "reason"}
        assert comfyui.get(f"{prefix}/memhooks/history")["records"] == []
        assert "settings" in comfyui.get(f"{prefix}/memhooks/settings")
    extensions = comfyui.get("/extensions")
    ours = sorted(path for path in extensions if path.startswith("/extensions/comfy_memhooks/"))
    assert "/extensions/comfy_memhooks/memory_panel.js" in ours
    assert "/extensions/comfy_memhooks/lib/panel_view.js" in ours


def _ours(message: dict[str, str]) -> bool:
    text = f"{message['text']} {message['url']}".lower()
    return "memhooks" in text


async def _the_comfyui_lines_are_shown(page: Any, comfyui: ComfyUI) -> None:
    """0.33 and later: the panel's ComfyUI lines after a prompt, as the status says them: which RAM reading is used,
    and what ComfyUI's own release after every node evicted in the prompt beside what comfy_memhooks freed."""
    release = page.locator(f'{PANEL} [data-role="comfy-release"]')
    await page.wait_for_function(
        """(selector) => {
            const line = document.querySelector(selector);
            return line && !line.hidden && !line.textContent.includes(" so far")
                && line.textContent.startsWith("ComfyUI released its cache ");
        }""",
        arg=f'{PANEL} [data-role="comfy-release"]',
        timeout=30_000,
    )
    await release.wait_for()  # visible in the sidebar, not only in the document
    status = comfyui.get("/memhooks/status")["comfyui"]
    assert status["prompt_release"]["finished_at"] is not None, status
    assert await release.text_content() == status["prompt_release"]["text"]
    assert "comfy_memhooks freed" in status["prompt_release"]["text"]

    reader = page.locator(f'{PANEL} [data-role="ram-reader"]')
    await reader.wait_for()
    text = await reader.text_content()
    assert status["ram_reader_text"] is not None and status["ram_check"] is not None, status
    assert text.startswith("RAM read by ") and "comfy.system_memory" in text, text


async def test_the_memory_tab_is_live_while_a_workflow_runs(comfyui: ComfyUI) -> None:
    messages: list[dict[str, str]] = []
    page_errors: list[str] = []
    screenshot = os.environ.get("MEMHOOKS_PANEL_SCREENSHOT")
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on(
                "console",
                lambda message: messages.append(
                    {"type": message.type, "text": message.text, "url": message.location.get("url", "")}
                ),
            )
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            await page.goto(comfyui.url)
            await page.wait_for_function("window.app?.extensionManager && window.app.graph", timeout=120_000)

            # The Memory tab is in the sidebar, registered by our extension.
            tab = page.locator(TAB_BUTTON)
            await tab.wait_for(timeout=60_000)
            names = await page.evaluate("window.app.extensions.map((extension) => extension.name)")
            assert "memhooks.MemoryPanel" in names
            assert "memhooks.NodeStatus" in names
            await tab.click()
            await page.wait_for_selector(f'{PANEL} [data-role="gauge-ram"][data-percent]:not([data-percent=""])')
            await page.wait_for_selector(f'{PANEL} [data-role="connection"][data-state="live"]')
            await drag_sidebar_wider(page, 150)

            if screenshot:
                # For the picture: a minute on the chart, some history before the run, and one optimization mark.
                await page.select_option(f'{PANEL} [data-role="chart-window"]', "1")
                comfyui.put("/memhooks/settings", {"cooldown_seconds": 5})
                await asyncio.sleep(8)
                await page.select_option(f'{PANEL} [data-role="optimize-mode"]', "Balanced")
                await page.click(f'{PANEL} [data-role="optimize"]')
                await page.wait_for_selector(f'{PANEL} [data-role="history-row"]')
                await asyncio.sleep(10)

            # A workflow that holds RAM for a few seconds a node, loaded into the canvas and queued from the UI.
            workflow = showcase_workflow() if screenshot else holding_workflow()
            await page.evaluate("(prompt) => window.app.loadApiJson(prompt, 'memhooks panel test')", workflow)
            if screenshot:
                # Two rows of nodes, at full size, right of the sidebar (the canvas runs on under it).
                await page.evaluate(
                    """(panel) => {
                        const canvas = window.app.canvas;
                        const nodes = [...window.app.graph._nodes].sort((a, b) => a.id - b.id);
                        nodes.forEach((node, index) => {
                            node.pos = [(index % 3) * 340, Math.floor(index / 3) * 240];
                        });
                        canvas.ds.scale = 1;
                        const left = document.querySelector(panel).getBoundingClientRect().right;
                        canvas.ds.offset = [left + 60, 170];
                        canvas.setDirty(true, true);
                    }""",
                    PANEL,
                )
            queued = comfyui.get("/queue")
            assert queued["queue_running"] == [] and queued["queue_pending"] == []
            records_before = len(comfyui.get("/memhooks/history")["records"])
            baseline = float(await page.locator(f'{PANEL} [data-role="gauge-ram"]').get_attribute("data-percent"))
            await page.evaluate("() => window.app.queuePrompt(0, 1)")

            # Live while it runs: the run chip says so and new samples keep reaching the chart.
            await page.wait_for_selector(f'{PANEL} [data-role="run"]:has-text("prompt running")', timeout=60_000)
            chart = f"{PANEL} [data-role='chart']"
            first = await page.eval_on_selector(chart, "canvas => Number(canvas.dataset.lastSampleAt)")
            for _ in range(2):
                await page.wait_for_function(
                    "([selector, t]) => Number(document.querySelector(selector).dataset.lastSampleAt) > t",
                    arg=[chart, first],
                    timeout=10_000,
                )
                first = await page.eval_on_selector(chart, "canvas => Number(canvas.dataset.lastSampleAt)")
            percent = float(await page.locator(f'{PANEL} [data-role="gauge-ram"]').get_attribute("data-percent"))
            assert 0 < percent <= 100

            # "Optimize now" during the run is queued, then carried out at a safe moment and shown in the table.
            await page.select_option(f'{PANEL} [data-role="optimize-mode"]', "Conservative")
            await page.click(f'{PANEL} [data-role="optimize"]')
            result = page.locator(f'{PANEL} [data-role="optimize-result"]')
            await page.wait_for_selector(f'{PANEL} [data-role="optimize-result"][data-state="queued"]')
            if screenshot:
                # Taken while the last holding node keeps its 5 GB: the chart shows the climb.
                await page.wait_for_function(
                    "([selector, base]) => Number(document.querySelector(selector).dataset.percent) > base + 15",
                    arg=[f'{PANEL} [data-role="gauge-ram"]', baseline],
                    timeout=30_000,
                )
                await asyncio.sleep(1.5)
                await page.screenshot(path=screenshot)
            rows = page.locator(f'{PANEL} [data-role="history-row"]')
            await page.wait_for_function(
                "([selector, count]) => document.querySelectorAll(selector).length > count",
                arg=[f'{PANEL} [data-role="history-row"]', records_before],
                timeout=60_000,
            )
            row = await rows.first.text_content()
            assert "manual" in row
            assert "Conservative" in row
            assert (await result.text_content()).startswith("Queued request done.")

            deadline = time.monotonic() + 120
            while comfyui.get("/queue")["queue_running"] and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            # The newest manual record (the hook may have optimized after it, around a heavy node).
            record = next(r for r in comfyui.get("/memhooks/history")["records"] if r["trigger"]["kind"] == "manual")
            assert record["mode"] == "Conservative"
            await page.wait_for_selector(f'{PANEL} [data-role="run"]:has-text("idle")', timeout=30_000)
            if RELEASES_PER_NODE:
                await _the_comfyui_lines_are_shown(page, comfyui)

            # The node shows its status line on the canvas after it ran.
            shown = await page.evaluate(
                """() => window.app.graph._nodes.find((node) => node.type === 'UnifiedMemoryManager')
                    ?.widgets?.find((widget) => widget.name === 'memhooks_status')?.value"""
            )
            assert re.match(r"^RAM: [\d.]+GB/[\d.]+GB \(\d+%\) \| VRAM: ", shown or ""), shown
        finally:
            await browser.close()

    assert page_errors == []
    ours = [message for message in messages if _ours(message) and message["type"] in ("error", "warning")]
    assert ours == []
    assert not [message for message in messages if "Unknown message type" in message["text"]]
    log = comfyui.log_text()
    assert comfyui.our_tracebacks() == []
    assert "comfy_memhooks panel:" not in log
