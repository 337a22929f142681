"""Every example workflow in ``workflows/`` opens as a template and runs to success in a real ComfyUI.

Each UI workflow becomes an API prompt the way the frontend converts it (:mod:`tests.workflow_prompt`, reading
ComfyUI's ``/object_info``), and that prompt must be the workflow's API copy in ``workflows/api/``. Core nodes and
the Unified Memory Manager run as they are; ReActor and VideoHelperSuite nodes run as stand-ins with the real class
names, inputs and output types (``memhooks_realnames_pack``). The test writes the files the workflows name
(``target.png``, ``source_face.png``, ``input_video.mp4``) into ComfyUI's input folder.

With ``VHS_DIR`` (a checkout of Kosinkadink/ComfyUI-VideoHelperSuite whose requirements are installed in ComfyUI's
Python), the two video workflows also run with the real VideoHelperSuite on a real video, ReActor still a stand-in;
with ``MEMHOOKS_WORKFLOW_SCREENSHOT=<path>`` as well, the browser test saves a picture of one workflow open in the
frontend (docs/workflow.png).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.comfyui_server import PROJECT, ComfyUI, skip_reason
from tests.panel.panel_support import CHROMIUM, CHROMIUM_ARGS
from tests.workflow_prompt import to_prompt

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

REALNAMES_PACK = Path(__file__).resolve().parent / "memhooks_realnames_pack"
WORKFLOWS = PROJECT / "workflows"
STEMS = sorted(path.stem for path in WORKFLOWS.glob("*.json"))
VIDEO_WITH_NODE = "Video face swap with a memory node"
VIDEO_HOOK_ONLY = "Video face swap with the automatic hook"
VHS_DIR = os.environ.get("VHS_DIR")
SCREENSHOT = os.environ.get("MEMHOOKS_WORKFLOW_SCREENSHOT")
SCREENSHOT_WORKFLOW = VIDEO_WITH_NODE


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def write_png(path: Path, width: int, height: int, pixel: Callable[[int, int], tuple[int, int, int]]) -> None:
    """An RGB PNG, each pixel's colour from ``pixel(x, y)``, written with zlib alone (no Pillow needed here)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def face(x: int, y: int) -> tuple[int, int, int]:
    """A cartoon face on 256 by 256 pixels, for the picture: an oval, two eyes, a mouth."""
    if ((x - 128) / 90) ** 2 + ((y - 128) / 110) ** 2 > 1:
        return (70, 110, 160)
    if any((x - eye) ** 2 + (y - 103) ** 2 < 100 for eye in (93, 163)):
        return (40, 40, 40)
    if abs(y - 173) < 5 and abs(x - 128) < 35:
        return (160, 60, 60)
    return (236, 188, 150)


def write_inputs(base: Path, video: bytes = b"stand-in video: never decoded") -> None:
    folder = base / "input"
    folder.mkdir(parents=True, exist_ok=True)
    write_png(folder / "target.png", 64, 48, lambda x, y: (150, 160, 90))
    write_png(folder / "source_face.png", 32, 32, lambda x, y: (236, 188, 150))
    (folder / "input_video.mp4").write_bytes(video)


@pytest.fixture(scope="module")
def comfy() -> Iterator[ComfyUI]:
    # No cooldown: the hook's routine cleanups after one node are not held back by another's a moment before.
    server = ComfyUI(packs=(REALNAMES_PACK,), record_events=False, settings={"cooldown_seconds": 0})
    write_inputs(server.base)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def object_info(comfy: ComfyUI) -> dict[str, Any]:
    info: dict[str, Any] = comfy.get("/object_info")
    return info


def run_workflow(comfy: ComfyUI, prompt: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    prompt_id, entry = comfy.run(prompt)
    messages = [name for name, _ in entry["status"].get("messages", [])]
    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{comfy.log_tail()}"
    assert "execution_error" not in messages
    return prompt_id, entry


def hook_records(comfy: ComfyUI, after_sequence: int) -> list[dict[str, Any]]:
    records = comfy.get("/memhooks/history")["records"]
    return [r for r in records if r["trigger"]["kind"] == "hook" and r["sequence"] > after_sequence]


def last_sequence(comfy: ComfyUI) -> int:
    return max((r["sequence"] for r in comfy.get("/memhooks/history")["records"]), default=0)


def test_comfyui_lists_the_nine_workflows_in_its_template_browser(comfy: ComfyUI) -> None:
    templates = comfy.get("/api/workflow_templates")
    assert len(STEMS) == 9
    assert sorted(templates["comfy_memhooks"]) == STEMS  # the API copies in workflows/api/ are not listed
    assert set(templates) == {"comfy_memhooks"}
    # The frontend fetches a template by its name; the file comes back as it is.
    for stem in STEMS:
        url = f"{comfy.url}/api/workflow_templates/comfy_memhooks/{urllib.parse.quote(stem)}.json"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert json.loads(response.read()) == load(WORKFLOWS / f"{stem}.json")


@pytest.mark.parametrize("stem", STEMS)
def test_every_workflow_runs_to_success(comfy: ComfyUI, object_info: dict[str, Any], stem: str) -> None:
    workflow = load(WORKFLOWS / f"{stem}.json")
    prompt = to_prompt(workflow, object_info)
    assert prompt == load(WORKFLOWS / "api" / f"{stem}.json"), "the API copy is what the UI workflow converts to"
    before = last_sequence(comfy)
    prompt_id, entry = run_workflow(comfy, prompt)
    outputs = entry["outputs"]
    for node in (n for n in workflow["nodes"] if n["type"] == "UnifiedMemoryManager"):
        (status,) = outputs[str(node["id"])]["text"]
        assert status.startswith("RAM: "), status
    for node in (n for n in workflow["nodes"] if n["type"] == "VHS_VideoCombine"):
        (combined,) = outputs[str(node["id"])]["memhooks_standin"]
        assert combined["frames"] == 8 and combined["format"] == "video/h264-mp4"
        widgets = {"pix_fmt": "yuv420p", "crf": 19, "save_metadata": True, "trim_to_audio": False}
        assert combined["format_widgets"] == widgets
    if stem == VIDEO_WITH_NODE:
        started = [e["node_class"] for e in comfy.get(f"/memhooks_realnames/started?prompt_id={prompt_id}")]
        # The Note's claim: the memory node runs first, before the video is decoded.
        assert started.index("UnifiedMemoryManager") < started.index("VHS_LoadVideo"), started
    if stem == VIDEO_HOOK_ONLY:
        # No memory node: the automatic hook freed memory after the face swap and after the video was written.
        done = {(r["trigger"]["node_class"], r["trigger"]["phase"], r["mode"]) for r in hook_records(comfy, before)}
        assert {("ReActorFaceSwap", "after", "Balanced"), ("VHS_VideoCombine", "after", "Balanced")} <= done
    assert comfy.our_tracebacks() == []


# --- in the browser: what users drag onto the canvas --------------------------------------------------------


async def frontend_prompts(
    comfy: ComfyUI, screenshot: str | None = None
) -> dict[str, tuple[int, dict[str, Any], list[str]]]:
    """Each workflow loaded by the frontend as a dropped file is: its node count, the prompt the frontend makes of
    it (``graphToPrompt``) and the texts of any dialog it opened. With ``screenshot``, a picture of one workflow
    freshly opened is saved there."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"Chromium is not installed at {CHROMIUM}")
    async_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")
    results = {}
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1600, "height": 1000})
            await page.goto(comfy.url)
            await page.wait_for_function("window.app?.graph && document.querySelector('canvas')", timeout=60_000)
            for stem in STEMS:
                workflow = load(WORKFLOWS / f"{stem}.json")
                await page.evaluate("async (workflow) => { await window.app.loadGraphData(workflow); }", workflow)
                count = await page.evaluate("() => window.app.graph._nodes.length")
                prompt = await page.evaluate("async () => (await window.app.graphToPrompt()).output")
                dialogs = await page.evaluate(
                    "() => [...document.querySelectorAll('.p-dialog, .comfy-modal')]"
                    ".filter((dialog) => dialog.offsetParent).map((dialog) => dialog.innerText)"
                )
                results[stem] = (count, prompt, dialogs)
            if screenshot:
                await save_screenshot(browser, comfy, SCREENSHOT_WORKFLOW, Path(screenshot))
        finally:
            await browser.close()
    return results


async def save_screenshot(browser: Any, comfy: ComfyUI, stem: str, path: Path) -> None:
    page = await browser.new_page(viewport={"width": 1600, "height": 1000}, device_scale_factor=1.25)
    await page.goto(comfy.url)
    await page.wait_for_function("window.app?.graph && document.querySelector('canvas')", timeout=60_000)
    await page.wait_for_timeout(2000)  # the first page load settles (the default workflow, the extensions)
    workflow = load(WORKFLOWS / f"{stem}.json")
    # Named, as the frontend names a dropped file's tab; the view is the one the workflow was saved with.
    load_named = "async ([workflow, name]) => window.app.loadGraphData(workflow, true, true, name)"
    await page.evaluate(load_named, [workflow, stem])
    await page.wait_for_timeout(2000)  # the previews load (the face, the video's first frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(path))
    await page.close()


def assert_same_inputs(frontend: dict[str, Any], api: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    """The frontend's prompt has the API copy's nodes and inputs; it may add inputs of widgets it made itself."""
    assert set(frontend) == set(api)
    for node_id, node in api.items():
        if node["class_type"].startswith(skip):
            continue
        made = frontend[node_id]["inputs"]
        assert {name: made.get(name) for name in node["inputs"]} == node["inputs"], node_id


@pytest.mark.browser
async def test_the_frontend_opens_every_workflow_and_makes_its_api_copy_of_it(comfy: ComfyUI) -> None:
    for stem, (count, prompt, dialogs) in (await frontend_prompts(comfy)).items():
        assert count == len(load(WORKFLOWS / f"{stem}.json")["nodes"]), stem
        assert dialogs == [], stem
        # Without VideoHelperSuite's own browser code, the frontend cannot read its nodes' widget values (saved
        # by that code as an object); the test with the real VideoHelperSuite below covers them.
        assert_same_inputs(prompt, load(WORKFLOWS / "api" / f"{stem}.json"), skip=("VHS_",))


# --- the video workflows with the real VideoHelperSuite ------------------------------------------------------


@pytest.fixture(scope="module")
def comfy_with_vhs() -> Iterator[ComfyUI]:
    if not VHS_DIR:
        pytest.skip("VHS_DIR is not set: no VideoHelperSuite checkout to load")
    server = ComfyUI(
        record_events=False,
        environment={"MEMHOOKS_REALNAMES_STANDINS": "ReActorFaceSwap"},  # the real VHS nodes, ReActor's stand-in
    )
    # Linked under ReActor's folder name, so the frontend's badge on the node names the pack as it does for users.
    reactor = server.base / "packs" / "ComfyUI-ReActor"
    reactor.parent.mkdir()
    reactor.symlink_to(REALNAMES_PACK, target_is_directory=True)
    server.packs = (reactor, Path(VHS_DIR))
    write_inputs(server.base, video=b"")
    write_png(server.base / "input" / "source_face.png", 256, 256, face)
    try:
        server.start()
        # A real video to load: eight frames written by the real VHS_VideoCombine, then put in the input folder.
        frames = {"width": 320, "height": 240, "batch_size": 8, "color": 0x3F789E}
        combine = {
            "images": ["1", 0],
            "frame_rate": 24,
            "loop_count": 0,
            "filename_prefix": "memhooks_input",
            "format": "video/h264-mp4",
            "pingpong": False,
            "save_output": True,
            "pix_fmt": "yuv420p",
            "crf": 19,
            "save_metadata": False,
            "trim_to_audio": False,
        }
        workflow = {
            "1": {"class_type": "EmptyImage", "inputs": frames},
            "2": {"class_type": "VHS_VideoCombine", "inputs": combine},
        }
        if server.get("/object_info/EmptyAudio"):
            # With a sound track, as videos have: ComfyUI 0.33 walks every output of a node (its model tracker),
            # which makes VideoHelperSuite extract the audio of the loaded video, and one without audio fails
            # there, with or without comfy_memhooks.
            workflow["3"] = {
                "class_type": "EmptyAudio",
                "inputs": {"duration": 8 / 24, "sample_rate": 44100, "channels": 2},
            }
            combine["audio"] = ["3", 0]
        _, entry = run_workflow(server, workflow)
        (video,) = entry["outputs"]["2"]["gifs"]
        shutil.copyfile(video["fullpath"], server.base / "input" / "input_video.mp4")
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("stem", [VIDEO_WITH_NODE, VIDEO_HOOK_ONLY])
def test_the_video_workflows_run_with_the_real_videohelpersuite(comfy_with_vhs: ComfyUI, stem: str) -> None:
    object_info = comfy_with_vhs.get("/object_info")
    prompt = to_prompt(load(WORKFLOWS / f"{stem}.json"), object_info)
    assert prompt == load(WORKFLOWS / "api" / f"{stem}.json")
    _, entry = run_workflow(comfy_with_vhs, prompt)
    combine = next(key for key, node in prompt.items() if node["class_type"] == "VHS_VideoCombine")
    (video,) = entry["outputs"][combine]["gifs"]
    assert video["format"] == "video/h264-mp4"
    assert Path(video["fullpath"]).stat().st_size > 0
    assert comfy_with_vhs.our_tracebacks() == []


@pytest.mark.browser
async def test_with_the_real_videohelpersuite_the_frontend_makes_every_api_copy(comfy_with_vhs: ComfyUI) -> None:
    for stem, (count, prompt, dialogs) in (await frontend_prompts(comfy_with_vhs, SCREENSHOT)).items():
        assert count == len(load(WORKFLOWS / f"{stem}.json")["nodes"]), stem
        assert dialogs == [], stem
        assert_same_inputs(prompt, load(WORKFLOWS / "api" / f"{stem}.json"))
