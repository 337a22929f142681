"""The README's picture of the Memory panel: a real run, in a memory-limited ComfyUI, that frees something.

A 3 GB container (a v1 memory cgroup) runs ComfyUI with comfy_memhooks' default settings and the real
VideoHelperSuite nodes: a video is loaded (``VHS_LoadVideoPath``), a face restore runs over its frames ten times
in a row (the pressure test's stand-in with ReActor's class name, which leaves its per-frame records behind as
cyclic garbage, as the issue that made comfy_memhooks saw), and the frames are encoded again
(``VHS_VideoCombine``). Without comfy_memhooks this container is OOM-killed (``test_comfyui_pressure.py`` proves
the same of such runs); with it, the panel shows the pressure cleanups, what each freed, and the RAM line coming
back under the threshold. The test checks that, and saves the picture when ``MEMHOOKS_PANEL_SCREENSHOT`` names a
file (docs/panel.png).

Needs ``COMFYUI_DIR``, ``VHS_DIR``, Chromium, root and a writable v1 memory hierarchy; skips otherwise.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.cgroups import enter_group_launcher, limited_v1_group
from tests.integration.comfyui_server import ComfyUI
from tests.panel.panel_support import CHROMIUM, CHROMIUM_ARGS, drag_sidebar_wider

pytestmark = [pytest.mark.integration, pytest.mark.browser]

VHS_DIR = os.environ.get("VHS_DIR")
if not os.environ.get("COMFYUI_DIR"):
    pytest.skip("COMFYUI_DIR is not set: no ComfyUI checkout to run the panel in", allow_module_level=True)
if not VHS_DIR:
    pytest.skip("VHS_DIR is not set: no VideoHelperSuite checkout for a real run", allow_module_level=True)
if shutil.which(CHROMIUM) is None:
    pytest.skip(f"Chromium is not installed at {CHROMIUM}", allow_module_level=True)
async_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")

PRESSURE_PACK = Path(__file__).resolve().parents[1] / "integration" / "memhooks_pressure_pack"
TAB_BUTTON = '[class~="memhooks.memory-tab-button"]'
PANEL = '[data-role="panel"]'
GIB = 1024**3
COMBINE = {
    "frame_rate": 24,
    "loop_count": 0,
    "filename_prefix": "memhooks",
    "format": "video/h264-mp4",
    "pingpong": False,
    "save_output": True,
    "pix_fmt": "yuv420p",
    "crf": 19,
    "save_metadata": False,
    "trim_to_audio": False,
}


# The loader, the ten restore passes and the encoder in rows, at full size, right of the sidebar.
ARRANGE = """(panel) => {
    const canvas = window.app.canvas;
    const nodes = [...window.app.graph._nodes].sort((a, b) => a.id - b.id);
    nodes.forEach((node, index) => { node.pos = [(index % 4) * 300, Math.floor(index / 4) * 250]; });
    canvas.ds.scale = 0.8;
    canvas.ds.offset = [(document.querySelector(panel).getBoundingClientRect().right + 30) / canvas.ds.scale, 90];
    canvas.setDirty(true, true);
}"""


def make_video(comfy: ComfyUI) -> str:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 640, "height": 360, "batch_size": 48, "color": 3355443}},
        "2": {"class_type": "VHS_VideoCombine", "inputs": {"images": ["1", 0], **COMBINE}},
    }
    _, entry = comfy.run(prompt)
    assert entry["status"]["status_str"] == "success", comfy.log_tail()
    path: str = entry["outputs"]["2"]["gifs"][0]["fullpath"]
    return path


def restore_pipeline(video: str) -> dict[str, Any]:
    """Load the video; restore faces ten times over its frames (each pass leaves ~450 MB of records); encode it."""
    prompt: dict[str, Any] = {
        "1": {
            "class_type": "VHS_LoadVideoPath",
            "inputs": {
                "video": video,
                "force_rate": 0,
                "custom_width": 0,
                "custom_height": 0,
                "frame_load_cap": 0,
                "skip_first_frames": 0,
                "select_every_nth": 1,
            },
        },
        "9": {"class_type": "VHS_VideoCombine", "inputs": {"images": ["1", 0], **COMBINE}},
    }
    previous: list[Any] = ["1", 1]  # the frame count drives the restore passes
    for index in range(10, 20):
        prompt[str(index)] = {
            "class_type": "ReActorRestoreFace",
            "inputs": {"value": previous, "frames": 30, "frame_mb": 15, "work_seconds": 1.5},
        }
        previous = [str(index), 0]
    prompt["20"] = {"class_type": "MemhooksPressureSink", "inputs": {"value": previous}}
    return prompt


async def test_a_real_run_in_a_3_gb_container_frees_memory_and_the_panel_shows_it() -> None:
    screenshot = os.environ.get("MEMHOOKS_PANEL_SCREENSHOT")
    with limited_v1_group(3 * GIB) as group:
        if group is None:
            pytest.skip("cannot create a v1 memory cgroup here (needs root and a writable v1 memory hierarchy)")
        comfy = ComfyUI(
            packs=(Path(str(VHS_DIR)), PRESSURE_PACK), record_events=False, launcher=enter_group_launcher(group)
        )
        comfy.start()
        try:
            video = make_video(comfy)
            async with async_api.async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
                    await page.goto(comfy.url)
                    await page.wait_for_function("window.app?.extensionManager && window.app.graph", timeout=120_000)
                    await page.locator(TAB_BUTTON).click()
                    await page.wait_for_selector(f'{PANEL} [data-role="connection"][data-state="live"]')
                    await drag_sidebar_wider(page, 220)
                    await page.select_option(f'{PANEL} [data-role="chart-window"]', "1")
                    workflow = restore_pipeline(video)
                    title = "face restore over a video"
                    await page.evaluate("([prompt, title]) => window.app.loadApiJson(prompt, title)", [workflow, title])
                    await page.evaluate(ARRANGE, PANEL)
                    await page.evaluate("() => window.app.queuePrompt(0, 1)")
                    marks = f"{PANEL} [data-role='chart']"
                    await page.wait_for_function(
                        "(selector) => Number(document.querySelector(selector).dataset.pressureMarks) >= 2",
                        arg=marks,
                        timeout=120_000,
                    )
                    await page.wait_for_selector(f'{PANEL} [data-role="run"]:has-text("idle")', timeout=120_000)
                    await asyncio.sleep(3)
                    first = page.locator(f'{PANEL} [data-role="history-row"][data-pressure="true"]').first
                    await first.locator("button").click()
                    await asyncio.sleep(1)
                    if screenshot:
                        await page.screenshot(path=screenshot)
                finally:
                    await browser.close()
            history = comfy.get("/memhooks/history")["records"]
            pressure = [record for record in history if record["trigger"]["pressure"]]
            assert pressure, history
            assert sum(record["freed_gib"] for record in pressure) >= 1.0
            assert "0" in (group / "memory.oom_control").read_text().split("oom_kill ")[1][:2]
            assert comfy.our_tracebacks() == []
        finally:
            comfy.stop()
