"""Test-only stand-ins for ReActor and VideoHelperSuite with the real nodes' interfaces. Never installed for users.

The example workflows in ``workflows/`` name the real nodes (``ReActorFaceSwap`` from Gourieff/ComfyUI-ReActor,
``VHS_LoadVideo`` and ``VHS_VideoCombine`` from Kosinkadink/ComfyUI-VideoHelperSuite) with their real inputs. These
stand-ins declare the same class names, input names, input types, combo choices and output types, so ComfyUI
validates and runs those workflows unchanged, with no model, no ffmpeg and no download. What they compute is a
cheap imitation: a "swap" that flips the frame, "decoded" frames made from the file's name.

``MEMHOOKS_REALNAMES_STANDINS`` (comma-separated class names) registers only those, so the real VideoHelperSuite
can be loaded beside the ReActor stand-in. The order in which nodes start (comfy_memhooks' ``node_started``
signal) is served at ``GET /memhooks_realnames/started``, for tests that check where a node runs.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

import folder_paths
import torch
from aiohttp import web
from server import PromptServer

# ReActor: the face-detection and gender choices are fixed lists; the model choices are the files ReActor finds in
# models/insightface (and models/reswapper) and models/facerestore_models, "none" first: the usual downloads here.
SWAP_MODELS = ["inswapper_128.onnx", "reswapper_128.onnx", "reswapper_256.onnx"]
FACE_DETECTION = ["retinaface_resnet50", "retinaface_mobile0.25", "YOLOv5l", "YOLOv5n"]
FACE_RESTORE_MODELS = ["none", "codeformer-v0.1.0.pth", "GFPGANv1.3.pth", "GFPGANv1.4.pth", "GPEN-BFR-512.onnx"]
GENDERS = ["no", "female", "male"]

# VideoHelperSuite: the extensions VHS_LoadVideo lists, its load formats and VHS_VideoCombine's output formats (as
# its object_info shows them; only the formats' extra widgets the workflows can choose are spelled out).
VIDEO_EXTENSIONS = ("webm", "mp4", "mkv", "gif", "mov")
BIGMAX = 2**53 - 1
DIMMAX = 8192
LOAD_FORMATS: dict[str, dict[str, Any]] = {
    "None": {},
    "AnimateDiff": {"target_rate": 8, "dim": [8, 0, 512, 512]},
    "Mochi": {"target_rate": 24, "dim": [16, 0, 848, 480], "frames": [6, 1]},
    "LTXV": {"target_rate": 24, "dim": [32, 0, 768, 512], "frames": [8, 1]},
    "Hunyuan": {"target_rate": 24, "dim": [16, 0, 848, 480], "frames": [4, 1]},
    "Cosmos": {"target_rate": 24, "dim": [16, 0, 1280, 704], "frames": [8, 1]},
    "Wan": {"target_rate": 16, "dim": [8, 0, 832, 480], "frames": [4, 1]},
}
_METADATA = [["save_metadata", "BOOLEAN", {"default": True}], ["trim_to_audio", "BOOLEAN", {"default": False}]]
COMBINE_FORMATS: dict[str, list[list[Any]]] = {
    "video/h264-mp4": [
        ["pix_fmt", ["yuv420p", "yuv420p10le"]],
        ["crf", "INT", {"default": 19, "min": 0, "max": 100, "step": 1}],
        *_METADATA,
    ],
    "video/h265-mp4": [
        ["pix_fmt", ["yuv420p10le", "yuv420p"]],
        ["crf", "INT", {"default": 22, "min": 0, "max": 100, "step": 1}],
        ["save_metadata", "BOOLEAN", {"default": True}],
    ],
    "video/webm": [
        ["pix_fmt", ["yuv420p", "yuva420p"]],
        ["crf", "INT", {"default": 20, "min": 0, "max": 100, "step": 1}],
        *_METADATA,
    ],
    "image/webp": [["lossless", "BOOLEAN", {"default": True}]],
}
COMBINE_FORMAT_NAMES = [
    "image/gif",
    "image/webp",
    "video/ProRes",
    "video/webm",
    "video/ffv1-mkv",
    "video/nvenc_av1-mp4",
    "video/h265-mp4",
    "video/8bit-png",
    "video/h264-mp4",
    "video/nvenc_hevc-mp4",
    "video/nvenc_h264-mp4",
    "video/ffmpeg-gif",
    "video/av1-webm",
    "video/16bit-png",
]


class _AnyHidden(dict[str, Any]):
    """VideoHelperSuite's trick for VHS_VideoCombine: a hidden-inputs dict that claims every name, so ComfyUI
    passes the chosen format's extra widgets (pix_fmt, crf, ...) through to the function."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> Any:
        return super().get(key, (None, {}))


def _digest(images: torch.Tensor) -> str:
    array = images.detach().to(torch.float32).contiguous().cpu().numpy()
    return f"{tuple(array.shape)}:{hashlib.sha256(array.tobytes()).hexdigest()[:16]}"


def _video_files() -> list[str]:
    directory = folder_paths.get_input_directory()
    return sorted(
        name
        for name in os.listdir(directory)
        if os.path.isfile(os.path.join(directory, name)) and name.rsplit(".", 1)[-1].lower() in VIDEO_EXTENSIONS
    )


class ReActorFaceSwap:
    """Stand-in for ReActor's main node ("ReActor 🌌 Fast Face Swap"): same inputs, same three outputs."""

    CATEGORY = "memhooks_realnames"
    FUNCTION = "execute"
    RETURN_TYPES = ("IMAGE", "FACE_MODEL", "IMAGE")
    RETURN_NAMES = ("SWAPPED_IMAGE", "FACE_MODEL", "ORIGINAL_IMAGE")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "enabled": ("BOOLEAN", {"default": True, "label_off": "OFF", "label_on": "ON"}),
                "input_image": ("IMAGE",),
                "swap_model": (SWAP_MODELS,),
                "facedetection": (FACE_DETECTION,),
                "face_restore_model": (FACE_RESTORE_MODELS,),
                "face_restore_visibility": ("FLOAT", {"default": 1, "min": 0.1, "max": 1, "step": 0.05}),
                "codeformer_weight": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1, "step": 0.05}),
                "detect_gender_input": (GENDERS, {"default": "no"}),
                "detect_gender_source": (GENDERS, {"default": "no"}),
                "input_faces_index": ("STRING", {"default": "0"}),
                "source_faces_index": ("STRING", {"default": "0"}),
                "console_log_level": ([0, 1, 2], {"default": 1}),
            },
            "optional": {
                "source_image": ("IMAGE",),
                "face_model": ("FACE_MODEL",),
                "face_boost": ("FACE_BOOST",),
            },
            "hidden": {"faces_order": "FACES_ORDER"},
        }

    def execute(
        self,
        enabled: bool,
        input_image: torch.Tensor,
        swap_model: str,
        detect_gender_source: str,
        detect_gender_input: str,
        source_faces_index: str,
        input_faces_index: str,
        console_log_level: int,
        face_restore_model: str,
        face_restore_visibility: float,
        codeformer_weight: float,
        facedetection: str,
        source_image: torch.Tensor | None = None,
        face_model: Any = None,
        faces_order: Any = None,
        face_boost: Any = None,
    ) -> tuple[torch.Tensor, Any, torch.Tensor]:
        if not enabled or (source_image is None and face_model is None):
            return (input_image, face_model, input_image)
        swapped = torch.flip(1.0 - input_image, dims=[2])  # a visible, deterministic change to every frame
        return (swapped, {"stand_in_face_model": swap_model}, input_image)


class VHS_LoadVideo:  # VideoHelperSuite's class name
    """Stand-in for "Load Video (Upload) 🎥🅥🅗🅢": lists the input folder's videos, "decodes" without ffmpeg."""

    CATEGORY = "memhooks_realnames"
    FUNCTION = "load_video"
    RETURN_TYPES = ("IMAGE", "INT", "AUDIO", "VHS_VIDEOINFO")
    RETURN_NAMES = ("IMAGE", "frame_count", "audio", "video_info")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "video": (_video_files(),),
                "force_rate": ("FLOAT", {"default": 0, "min": 0, "max": 60, "step": 1, "disable": 0}),
                "custom_width": ("INT", {"default": 0, "min": 0, "max": DIMMAX, "disable": 0}),
                "custom_height": ("INT", {"default": 0, "min": 0, "max": DIMMAX, "disable": 0}),
                "frame_load_cap": ("INT", {"default": 0, "min": 0, "max": BIGMAX, "step": 1, "disable": 0}),
                "skip_first_frames": ("INT", {"default": 0, "min": 0, "max": BIGMAX, "step": 1}),
                "select_every_nth": ("INT", {"default": 1, "min": 1, "max": BIGMAX, "step": 1}),
            },
            "optional": {
                "meta_batch": ("VHS_BatchManager",),
                "vae": ("VAE",),
                "format": (list(LOAD_FORMATS), {"default": "AnimateDiff", "formats": LOAD_FORMATS}),
            },
            "hidden": {"force_size": "STRING", "unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, video: str) -> bool | str:
        if not folder_paths.exists_annotated_filepath(video):
            return f"Invalid video file: {video}"
        return True

    def load_video(
        self,
        video: str,
        force_rate: float,
        custom_width: int,
        custom_height: int,
        frame_load_cap: int,
        skip_first_frames: int,
        select_every_nth: int,
        meta_batch: Any = None,
        vae: Any = None,
        format: str = "AnimateDiff",  # VideoHelperSuite's input name
        force_size: Any = None,
        unique_id: Any = None,
    ) -> tuple[torch.Tensor, int, Any, dict[str, Any]]:
        frames = frame_load_cap or 8
        width, height = custom_width or 64, custom_height or 64
        seed = int.from_bytes(hashlib.sha256(video.encode()).digest()[:4], "little")
        generator = torch.Generator().manual_seed(seed)
        images = torch.rand((frames, height, width, 3), generator=generator, dtype=torch.float32)
        rate = force_rate or 8.0
        info = {
            "source_fps": rate,
            "source_frame_count": frames,
            "source_width": width,
            "source_height": height,
            "loaded_fps": rate,
            "loaded_frame_count": frames,
            "loaded_width": width,
            "loaded_height": height,
        }
        return (images, frames, None, info)


class VHS_VideoCombine:  # VideoHelperSuite's class name
    """Stand-in for "Video Combine 🎥🅥🅗🅢": encodes the frames to 8 bits, as VHS does before ffmpeg, and writes
    nothing; the UI output says how many frames of what size arrived."""

    CATEGORY = "memhooks_realnames"
    FUNCTION = "combine_video"
    OUTPUT_NODE = True
    RETURN_TYPES = ("VHS_FILENAMES",)
    RETURN_NAMES = ("Filenames",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE",),
                "frame_rate": ("FLOAT", {"default": 8, "min": 1, "step": 1}),
                "loop_count": ("INT", {"default": 0, "min": 0, "max": 100, "step": 1}),
                "filename_prefix": ("STRING", {"default": "AnimateDiff"}),
                "format": (COMBINE_FORMAT_NAMES, {"formats": COMBINE_FORMATS}),
                "pingpong": ("BOOLEAN", {"default": False}),
                "save_output": ("BOOLEAN", {"default": True}),
            },
            "optional": {
                "audio": ("AUDIO",),
                "meta_batch": ("VHS_BatchManager",),
                "vae": ("VAE",),
            },
            "hidden": _AnyHidden(prompt="PROMPT", extra_pnginfo="EXTRA_PNGINFO", unique_id="UNIQUE_ID"),
        }

    def combine_video(
        self,
        frame_rate: float,
        loop_count: int,
        images: torch.Tensor | None = None,
        filename_prefix: str = "AnimateDiff",
        format: str = "image/gif",  # VideoHelperSuite's input name
        pingpong: bool = False,
        save_output: bool = True,
        **format_widgets: Any,
    ) -> dict[str, Any]:
        if images is None:
            return {"result": ((save_output, []),)}
        encoded = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        chosen = {name: format_widgets.get(name) for name, *_ in COMBINE_FORMATS.get(format, [])}
        standin = {
            "frames": int(encoded.shape[0]),
            "width": int(encoded.shape[2]),
            "height": int(encoded.shape[1]),
            "format": format,
            "format_widgets": chosen,
            "frame_rate": frame_rate,
            "digest": _digest(encoded),
        }
        return {"ui": {"memhooks_standin": [standin]}, "result": ((save_output, []),)}


_ALL = (ReActorFaceSwap, VHS_LoadVideo, VHS_VideoCombine)
_ONLY = {name.strip() for name in os.environ.get("MEMHOOKS_REALNAMES_STANDINS", "").split(",") if name.strip()}
NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in _ALL if not _ONLY or cls.__name__ in _ONLY}
# The real display names, so a workflow open in the browser looks as it does with the real nodes.
_DISPLAY_NAMES = {
    "ReActorFaceSwap": "ReActor 🌌 Fast Face Swap",
    "VHS_LoadVideo": "Load Video (Upload) 🎥🅥🅗🅢",
    "VHS_VideoCombine": "Video Combine 🎥🅥🅗🅢",
}
NODE_DISPLAY_NAME_MAPPINGS = {name: _DISPLAY_NAMES[name] for name in NODE_CLASS_MAPPINGS}


# --- where nodes run, for the tests ------------------------------------------------------------------------------

_PROJECT = Path(__file__).resolve().parents[3]  # this folder is linked in; its real place is tests/integration/
if "comfy_memhooks" not in sys.modules and str(_PROJECT) not in sys.path:
    sys.path.insert(0, str(_PROJECT))

from comfy_memhooks import signals  # noqa: E402 - after the project is on the path

_STARTED: list[dict[str, Any]] = []
_LOCK = threading.Lock()


def _record_start(sender: Any, **kwargs: Any) -> None:
    with _LOCK:
        _STARTED.append({key: kwargs.get(key) for key in ("prompt_id", "node_id", "node_class")})


signals.node_started.connect(_record_start, weak=False)


def _routes() -> None:
    instance = getattr(PromptServer, "instance", None)
    if instance is None:
        return

    @instance.routes.get("/memhooks_realnames/started")
    async def get_started(request: web.Request) -> web.Response:
        prompt_id = request.query.get("prompt_id")
        with _LOCK:
            started = [entry for entry in _STARTED if prompt_id is None or entry["prompt_id"] == prompt_id]
        return web.json_response(started)


_routes()
