"""The real ReActor in a real ComfyUI for the integration tests: its generated models, a server, its workflows.

``REACTOR_DIR`` names a checkout of Gourieff/ComfyUI-ReActor (v0.7, which runs every model on onnxruntime), whose
requirements are installed in ``COMFYUI_PYTHON``; without either the tests are skipped. Its models are generated
once into the pytest cache (:mod:`tests.reactor_models`, 1.2 GB; the log says how long it took) and linked into
each server's ``models`` folder, where ReActor reads them; nothing is downloaded (the Hugging Face libraries run
offline).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.comfyui_server import PROJECT, ComfyUI, skip_reason
from tests.reactor_models import BUFFALO, FACE_RESTORE, GENERATOR_VERSION, NSFW, SWAPPER, read_marker

logger = logging.getLogger(__name__)

REACTOR_DIR = os.environ.get("REACTOR_DIR")
PROBE_PACK = Path(__file__).resolve().parent / "memhooks_reactor_probe_pack"
GENERATE_SECONDS = 300
MIB = 1024**2

GREY = 0x808080  # a face is found in any image brighter than a quarter grey (tests/reactor_models.py)
BLACK = 0x000000  # no face is found in a black one

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
REQUIRED_MODULES = ("onnx", "onnxruntime", "transformers")  # ReActor's, and the generator's besides torch


@functools.cache
def missing_modules(python: str) -> str | None:
    """Which of ``REQUIRED_MODULES`` ``python`` cannot import (comma-separated), ``""`` if none, ``None`` if it
    did not run. One subprocess for the whole session: ``find_spec`` locates a module without importing it."""
    check = "import importlib.util as u, sys; print(', '.join(m for m in sys.argv[1:] if u.find_spec(m) is None))"
    try:
        done = subprocess.run(
            [python, "-c", check, *REQUIRED_MODULES], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def reactor_skip_reason() -> str | None:
    """Why the real ReActor cannot run here, or ``None`` when it can."""
    comfy = skip_reason()
    if comfy is not None:
        return comfy
    if not REACTOR_DIR:
        return "REACTOR_DIR is not set: no ComfyUI-ReActor checkout to load (see docs/testing.md)"
    if not (Path(REACTOR_DIR) / "scripts" / "reactor_swapper.py").is_file():
        return f"REACTOR_DIR={REACTOR_DIR} holds no scripts/reactor_swapper.py"
    python = comfyui_python()
    missing = missing_modules(python)
    if missing is None:
        return f"COMFYUI_PYTHON={python} did not run"
    if missing:
        return f"COMFYUI_PYTHON={python} lacks {missing}: install ReActor's requirements.txt into it"
    return None


def reactor_marks() -> list[pytest.MarkDecorator]:
    reason = reactor_skip_reason()
    return [pytest.mark.integration, pytest.mark.skipif(reason is not None, reason=reason or "")]


def comfyui_python() -> str:
    return os.environ.get("COMFYUI_PYTHON") or sys.executable


def generated_models(cache_dir: Path) -> Path:
    """The generated models under ``cache_dir``, made now (in ComfyUI's Python) unless this version made them.

    A marker that is missing, corrupt or from another version means the files are made again; the folders an
    older version of the generator made are removed first (1.2 GB each).
    """
    models = cache_dir / f"reactor-models-v{GENERATOR_VERSION}"
    marker = read_marker(models)
    if marker is not None:
        logger.info("ReActor's models: reused from %s (generated in %s s)", models, marker.get("seconds"))
        return models
    for older in cache_dir.glob("reactor-models-v*"):
        if older != models:
            shutil.rmtree(older, ignore_errors=True)
    done = subprocess.run(
        [comfyui_python(), "-m", "tests.reactor_models", str(models)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=GENERATE_SECONDS,
        check=False,
    )
    marker = read_marker(models)
    if done.returncode != 0 or marker is None:
        raise RuntimeError(f"generating ReActor's models failed ({done.returncode}):\n{done.stderr[-4000:]}")
    logger.info("ReActor's models: generated into %s in %s s", models, marker["seconds"])
    return models


def link_models(base: Path, models: Path, swapper: Path | None = None) -> None:
    """Lays out ``base/models`` as ReActor reads it, each part a link into the cache (``swapper`` replaces one)."""
    root = base / "models"
    (root / BUFFALO).parent.mkdir(parents=True)
    (root / BUFFALO).symlink_to(models / BUFFALO, target_is_directory=True)
    (root / SWAPPER).symlink_to(swapper if swapper is not None else models / SWAPPER)
    (root / NSFW).parent.mkdir(parents=True)
    (root / NSFW).symlink_to(models / NSFW, target_is_directory=True)
    (root / FACE_RESTORE).symlink_to(models / FACE_RESTORE, target_is_directory=True)


def reactor_server(models: Path, *, swapper: Path | None = None, **options: Any) -> ComfyUI:
    """A ComfyUI (not started yet) with the real ReActor, the probe pack and the models linked in."""
    packs = (Path(str(REACTOR_DIR)), PROBE_PACK, *options.pop("packs", ()))
    environment = {**OFFLINE, **options.pop("environment", {})}
    server = ComfyUI(packs=packs, environment=environment, record_events=False, **options)
    link_models(server.base, models, swapper)
    return server


def swap_nodes(target_color: int = GREY, source_color: int = GREY, size: int = 512) -> dict[str, Any]:
    """A source and a target image and ReActor's fast face swap (node "3"), as the node's defaults set it."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": source_color},
        },
        "2": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": target_color},
        },
        "3": {
            "class_type": "ReActorFaceSwap",
            "inputs": {
                "enabled": True,
                "input_image": ["2", 0],
                "source_image": ["1", 0],
                "swap_model": "inswapper_128.onnx",
                "facedetection": "retinaface_resnet50",
                "face_restore_model": "none",
                "face_restore_visibility": 1.0,
                "codeformer_weight": 0.5,
                "detect_gender_input": "no",
                "detect_gender_source": "no",
                "input_faces_index": "0",
                "source_faces_index": "0",
                "console_log_level": 1,
            },
        },
    }


def save(prompt: dict[str, Any], image: list[Any], prefix: str, node: str = "90") -> dict[str, Any]:
    prompt[node] = {"class_type": "SaveImage", "inputs": {"images": image, "filename_prefix": prefix}}
    return prompt


def manager(image: list[Any], mode: str) -> dict[str, Any]:
    """comfy_memhooks' node after ``image``: ``mode`` every time it runs, no cooldown."""
    inputs = {
        "enable_monitoring": True,
        "enable_optimization": True,
        "auto_optimize": False,
        "enable_auto_cleanup": True,
        "mode": mode,
        "ram_threshold": 80.0,
        "vram_threshold": 85.0,
        "cooldown_seconds": 0.0,
        "detailed_report": False,
        "trigger_image": image,
    }
    return {"class_type": "UnifiedMemoryManager", "inputs": inputs}


def saved_png(server: ComfyUI, entry: dict[str, Any], node: str = "90") -> bytes:
    """The bytes of the one PNG that the prompt's SaveImage ``node`` wrote."""
    images = entry["outputs"][node]["images"]
    assert len(images) == 1, entry["outputs"]
    image = images[0]
    return (server.base / "output" / image["subfolder"] / image["filename"]).read_bytes()


def reactor_state(server: ComfyUI, label: str = "state") -> dict[str, Any]:
    """What ReActor's swapper module holds now, and the RSS, read inside ComfyUI by the probe pack."""
    _, entry = server.run({"1": {"class_type": "MemhooksReActorState", "inputs": {"label": label}}})
    assert entry["status"]["status_str"] == "success", entry["status"]
    state: dict[str, Any] = json.loads(entry["outputs"]["1"]["text"][0])
    return state


def holds_models(state: dict[str, Any]) -> bool:
    return bool(state["swap_model"] or any(state["analysis_models"].values()))


def holds_faces(state: dict[str, Any]) -> bool:
    return bool(state["source_faces"] or state["target_faces"] or state["target_faces_list"])
