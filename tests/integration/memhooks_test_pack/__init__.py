"""A test-only ComfyUI node pack for comfy_memhooks' integration tests. Never installed for users.

Stand-ins carry the real class names of heavy nodes and allocate memory the way those nodes do; small helper
nodes produce lazy, async and expanding executions. A receiver writes every comfy_memhooks signal as a JSON line
to the file named by ``MEMHOOKS_TEST_EVENTS``, and routes under ``/memhooks_test/`` show the hook's status and
history and switch the hook and the settings.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from aiohttp import web
from comfy_execution.graph_utils import GraphBuilder
from server import PromptServer

from . import reactor_swapper

_PROJECT = Path(__file__).resolve().parents[3]  # this folder is linked in; its real place is tests/integration/
if "comfy_memhooks" not in sys.modules and str(_PROJECT) not in sys.path:
    sys.path.insert(0, str(_PROJECT))

import comfy_memhooks  # noqa: E402 - after the project is on the path
from comfy_memhooks import hook, signals  # noqa: E402
from comfy_memhooks.comfy.runtime import current_runtime  # noqa: E402
from comfy_memhooks.panel.payloads import to_plain  # noqa: E402

_FAILED_TOKENS: set[str] = set()
_LOCK = threading.Lock()


def _digest(images: torch.Tensor) -> str:
    array = images.detach().to(torch.float32).contiguous().cpu().numpy()
    return f"{tuple(array.shape)}:{hashlib.sha256(array.tobytes()).hexdigest()}"


class ReActorFaceSwap:
    """Stand-in: loads a swap model into a module global, as ReActor does, and changes every frame."""

    CATEGORY = "memhooks_test"
    FUNCTION = "execute"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"input_image": ("IMAGE",), "enabled": ("BOOLEAN", {"default": True})},
            "optional": {"oom_once": ("STRING", {"default": ""})},
        }

    def execute(self, input_image: torch.Tensor, enabled: bool, oom_once: str = "") -> tuple[torch.Tensor]:
        if oom_once:
            with _LOCK:
                first = oom_once not in _FAILED_TOKENS
                _FAILED_TOKENS.add(oom_once)
            if first:
                # 4 EiB, more than any address space: numpy raises its own MemoryError whatever the
                # kernel's overcommit policy (a merely huge size can succeed and be filled page by page).
                np.empty((1 << 62,), dtype=np.uint8)
        if reactor_swapper.MODEL is None:
            reactor_swapper.MODEL = np.ones((16, 1024, 1024), dtype=np.float32)  # 64 MB "inswapper"
        reactor_swapper.TARGET_FACES_LIST = [frame.clone() for frame in input_image]
        if not enabled:
            return (input_image,)
        return (torch.flip(1.0 - input_image, dims=[2]),)


class VHS_LoadVideo:  # VideoHelperSuite's class name
    """Stand-in: "decodes" frames into one float32 tensor, as VideoHelperSuite does."""

    CATEGORY = "memhooks_test"
    FUNCTION = "load_video"
    RETURN_TYPES = ("IMAGE", "INT")
    RETURN_NAMES = ("IMAGE", "frame_count")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                "frame_count": ("INT", {"default": 8, "min": 1, "max": 256}),
                "width": ("INT", {"default": 64, "min": 8, "max": 1024}),
                "height": ("INT", {"default": 64, "min": 8, "max": 1024}),
            }
        }

    def load_video(self, seed: int, frame_count: int, width: int, height: int) -> tuple[torch.Tensor, int]:
        generator = torch.Generator().manual_seed(seed)
        frames = torch.rand((frame_count, height, width, 3), generator=generator, dtype=torch.float32)
        return (frames, frame_count)


class VHS_VideoCombine:  # VideoHelperSuite's class name
    """Stand-in: "encodes" the frames to 8-bit, as VideoHelperSuite does before ffmpeg; shows their digest."""

    CATEGORY = "memhooks_test"
    FUNCTION = "combine_video"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE",), "frame_rate": ("FLOAT", {"default": 8.0, "min": 1.0})}}

    def combine_video(self, images: torch.Tensor, frame_rate: float) -> dict[str, Any]:
        encoded = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        return {"ui": {"text": [_digest(encoded), f"{frame_rate:g} fps"]}}


class MemhooksTestAlwaysRun:
    """Passes a number on and runs every time, so a prompt can be run again without ComfyUI's cache."""

    CATEGORY = "memhooks_test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    @classmethod
    def IS_CHANGED(cls, value: int) -> float:
        return float("nan")

    def run(self, value: int) -> tuple[int]:
        return (value,)


class MemhooksTestLazyMix:
    """Asks for its second image only when ``mix`` needs it: ComfyUI enters it twice (PENDING first)."""

    CATEGORY = "memhooks_test"
    FUNCTION = "mix"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image1": ("IMAGE", {"lazy": True}),
                "image2": ("IMAGE", {"lazy": True}),
                "mix": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0}),
            }
        }

    def check_lazy_status(self, mix: float, image1: Any = None, image2: Any = None) -> list[str]:
        needed = []
        if image1 is None and mix < 1.0:
            needed.append("image1")
        if image2 is None and mix > 0.0:
            needed.append("image2")
        return needed

    def mix(self, mix: float, image1: Any = None, image2: Any = None) -> tuple[torch.Tensor]:
        if mix <= 0.0:
            return (image1,)
        if mix >= 1.0:
            return (image2,)
        return (image1 * (1.0 - mix) + image2 * mix,)


class MemhooksTestExpand:
    """Returns its result through a subgraph (an ImageInvert): ComfyUI enters it again after the subgraph."""

    CATEGORY = "memhooks_test"
    FUNCTION = "expand"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}

    def expand(self, image: torch.Tensor) -> dict[str, Any]:
        graph = GraphBuilder()
        inverted = graph.node("ImageInvert", image=image)
        return {"result": (inverted.out(0),), "expand": graph.finalize()}


class MemhooksTestAsyncSleep:
    """An async node that is not done after one turn of the loop: PENDING, then resumed (ComfyUI 0.3.45+)."""

    CATEGORY = "memhooks_test"
    FUNCTION = "sleep"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "seconds": ("FLOAT", {"default": 0.05, "min": 0.0})}}

    async def sleep(self, image: torch.Tensor, seconds: float) -> tuple[torch.Tensor]:
        await asyncio.sleep(seconds)
        return (image,)


class MemhooksTestHold:
    """Allocates ``megabytes`` MiB, every page written (so resident), and holds them in its output: the known
    amount the per-node profile must show as this node's RAM peak."""

    CATEGORY = "memhooks_test"
    FUNCTION = "hold"
    RETURN_TYPES = ("MEMHOOKS_BLOB",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "value": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                "megabytes": ("INT", {"default": 300, "min": 1, "max": 4096}),
            }
        }

    def hold(self, value: int, megabytes: int) -> tuple[torch.Tensor]:
        return (torch.full((megabytes * 1024 * 1024,), value % 251 + 1, dtype=torch.uint8),)


class MemhooksTestBlobSize:
    """Shows the size of a held blob: the output node that makes ComfyUI run :class:`MemhooksTestHold`."""

    CATEGORY = "memhooks_test"
    FUNCTION = "size"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"blob": ("MEMHOOKS_BLOB",), "image": ("IMAGE",)}}

    def size(self, blob: torch.Tensor, image: torch.Tensor) -> dict[str, Any]:
        return {"ui": {"text": [str(blob.numel()), str(tuple(image.shape))]}}


NODE_CLASS_MAPPINGS = {
    cls.__name__: cls
    for cls in (
        ReActorFaceSwap,
        VHS_LoadVideo,
        VHS_VideoCombine,
        MemhooksTestAlwaysRun,
        MemhooksTestLazyMix,
        MemhooksTestExpand,
        MemhooksTestAsyncSleep,
        MemhooksTestHold,
        MemhooksTestBlobSize,
    )
}
NODE_DISPLAY_NAME_MAPPINGS = {name: f"{name} (memhooks test)" for name in NODE_CLASS_MAPPINGS}


# --- what the tests read --------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    name = getattr(value, "name", None)
    if value is not None and type(value).__name__ == "ExecutionResult" and isinstance(name, str):
        return name
    return to_plain(value)


class _EventWriter:
    """Appends each signal as a JSON line; connected strongly, as docs/signals.md tells subscribers to."""

    def __init__(self, path: str):
        self._path = path
        self._lock = threading.Lock()
        for name in ("prompt_started", "node_started", "node_finished", "prompt_finished", "optimization_performed"):
            getattr(signals, name).connect(self._receiver(name), weak=False)

    def _receiver(self, name: str) -> Any:
        def write(sender: Any, **kwargs: Any) -> None:
            line = {"signal": name, "sender": sender if isinstance(sender, str) else type(sender).__name__}
            for key, value in kwargs.items():
                if key == "record":
                    line["record"] = {
                        "sequence": value.sequence,
                        "mode": value.mode.value,
                        "trigger": to_plain(value.trigger),
                    }
                else:
                    line[key] = _plain(value)
            with self._lock, open(self._path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")

        return write


if os.environ.get("MEMHOOKS_TEST_EVENTS"):
    _writer = _EventWriter(os.environ["MEMHOOKS_TEST_EVENTS"])


_BARE_PROVIDER: list[Any] = []


def _bare_provider() -> Any:
    if not _BARE_PROVIDER:
        from comfy_api.latest._caching import CacheProvider

        class BareProvider(CacheProvider):
            async def on_lookup(self, context: Any) -> None:
                return None

            async def on_store(self, context: Any, value: Any) -> None:
                return None

            def should_cache(self, context: Any, value: Any = None) -> bool:
                return False

        _BARE_PROVIDER.append(BareProvider())
    return _BARE_PROVIDER[0]


def _routes() -> None:
    instance = getattr(PromptServer, "instance", None)
    if instance is None:
        return
    routes = instance.routes

    def status() -> dict[str, Any]:
        execution = sys.modules["execution"]
        data: dict[str, Any] = to_plain(hook.hook_status())
        data["execute_is_wrapped"] = hasattr(execution.execute, "__wrapped__")
        data["library_file"] = comfy_memhooks.__file__
        data["reactor_unloads"] = reactor_swapper.unloads
        return data

    @routes.get("/memhooks_test/status")
    async def get_status(request: web.Request) -> web.Response:
        return web.json_response(status())

    @routes.get("/memhooks_test/history")
    async def get_history(request: web.Request) -> web.Response:
        records = current_runtime().engine.history.records()
        return web.json_response(
            [
                {
                    "sequence": r.sequence,
                    "mode": r.cleanup_name,
                    "trigger": to_plain(r.trigger),
                    "freed_gib": r.freed_gib,
                }
                for r in records
            ]
        )

    @routes.post("/memhooks_test/hook")
    async def post_hook(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("installed"):
            current_runtime().install_hook()
        else:
            current_runtime().uninstall()
        return web.json_response(status())

    @routes.post("/memhooks_test/provider")
    async def post_provider(request: web.Request) -> web.Response:
        """Registers or removes a cache provider that caches nothing: what any provider costs ComfyUI per node."""
        registry = sys.modules.get("comfy_execution.cache_provider")
        if registry is None:
            return web.json_response({"error": "this ComfyUI has no cache providers"}, status=404)
        if (await request.json()).get("registered"):
            registry.register_cache_provider(_bare_provider())
        else:
            registry.unregister_cache_provider(_bare_provider())
        return web.json_response({"providers": len(registry._get_cache_providers())})

    @routes.post("/memhooks_test/settings")
    async def post_settings(request: web.Request) -> web.Response:
        return web.json_response(current_runtime().settings.update(await request.json()).to_json())


_routes()
