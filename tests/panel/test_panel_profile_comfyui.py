"""The per-node profile in a real ComfyUI's frontend, in real Chromium: after a run queued from the canvas, the
Memory tab lists the node that held the most RAM first, by the title the user gave it, and a click selects it.

Needs ``COMFYUI_DIR`` and ``COMFYUI_PYTHON`` as the other integration tests.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.comfyui_server import ComfyUI, running_comfyui
from tests.integration.test_comfyui_profile import HELD_MIB, workflow
from tests.panel.panel_support import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.integration, pytest.mark.browser]

if not os.environ.get("COMFYUI_DIR"):
    pytest.skip("COMFYUI_DIR is not set: no ComfyUI checkout to run the panel in", allow_module_level=True)
if shutil.which(CHROMIUM) is None:
    pytest.skip(f"Chromium is not installed at {CHROMIUM}", allow_module_level=True)
async_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")

TAB_BUTTON = '[class~="memhooks.memory-tab-button"]'
PANEL = '[data-role="panel"]'
TITLE = "Big allocation"


@pytest.fixture(scope="module")
def comfyui() -> Iterator[ComfyUI]:
    with running_comfyui(record_events=False) as running:
        yield running


async def test_the_heaviest_node_is_listed_first_by_its_title_and_a_click_selects_it(comfyui: ComfyUI) -> None:
    page_errors: list[str] = []
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            await page.goto(comfyui.url)
            await page.wait_for_function("window.app?.extensionManager && window.app.graph", timeout=120_000)
            await page.locator(TAB_BUTTON).click()
            await page.wait_for_selector(f'{PANEL} [data-role="profile-summary"]:has-text("No profile")')

            await page.evaluate("(prompt) => window.app.loadApiJson(prompt, 'memhooks profile test')", workflow(3))
            await page.evaluate("(title) => { window.app.graph.getNodeById(2).title = title; }", TITLE)
            await page.evaluate("() => window.app.queuePrompt(0, 1)")
            deadline = time.monotonic() + 120
            await asyncio.sleep(0.5)
            while comfyui.get("/queue")["queue_running"] and time.monotonic() < deadline:
                await asyncio.sleep(0.3)

            first = page.locator(f'{PANEL} [data-role="profile-row"]').first
            await first.wait_for(timeout=30_000)
            assert await first.get_attribute("data-node-id") == "2"
            assert await first.get_attribute("data-heaviest") == "true"
            label = await first.locator("td").first.inner_text()
            assert label.startswith(f"{TITLE} #2\nMemhooksTestHold"), label
            assert (await first.locator("td").nth(1).text_content() or "").endswith("MB")
            headers = await page.eval_on_selector_all(
                f'{PANEL} [data-role="profile"] th', "cells => cells.map((cell) => cell.textContent)"
            )
            assert headers == ["Node", "RAM peak", "Left behind", "VRAM peak", "Took"]
            assert await first.locator('[data-role="profile-peak"]').get_attribute("data-method") == "hwm"
            left = await first.locator('[data-role="profile-left"]').text_content() or ""
            assert left.endswith(" MB") and int(left.removesuffix(" MB")) >= 0.9 * HELD_MIB  # it keeps what it holds

            await first.click()
            selected: Any = await page.evaluate(
                "() => Object.values(window.app.canvas.selected_nodes ?? {}).map((node) => node.id)"
            )
            assert [str(node_id) for node_id in selected] == ["2"]  # a number before frontend 1.49, a string in it
        finally:
            await browser.close()
    assert page_errors == []
