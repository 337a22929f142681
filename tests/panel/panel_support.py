"""Stand-ins for what this machine lacks (a GPU and its driver) and a publisher that records live events."""

from __future__ import annotations

import json
import os
import socket
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from comfy_memhooks import signals
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.panel.routes import register_routes
from comfy_memhooks.probe.cgroup import CgroupReader
from comfy_memhooks.probe.gpu import GpuProbe
from comfy_memhooks.probe.memory import MemoryProbe
from comfy_memhooks.probe.nvml import Nvml
from comfy_memhooks.probe.ram import RamProbe
from tests.pipeline_support import finish_node, start_node

GIB = 1024**3
# A pid that exists in no pid namespace here: NVML lists host pids of other containers.
FOREIGN_PID = 4_000_000

# Debian's Chromium, as the browser tests launch it: headless, and without the background traffic
# that this machine's closed network would refuse.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class FakeNvmlError(Exception):
    pass


@dataclass
class _Memory:
    total: Any
    used: Any
    free: Any


@dataclass
class _Pci:
    busId: bytes


@dataclass
class _Process:
    pid: int
    usedGpuMemory: Any


def fake_pynvml(used_gib: float = 20.0, total_gib: float = 80.0) -> types.ModuleType:
    """A ``pynvml`` with one GPU, following the real module's names; sizes are numpy integers, as some drivers'
    bindings return, so the tests see that nothing numpy reaches a payload."""
    module = types.ModuleType("pynvml")
    total = np.uint64(int(total_gib * GIB))
    used = np.uint64(int(used_gib * GIB))
    module.NVMLError = FakeNvmlError
    module.nvmlInit = lambda: None
    module.nvmlShutdown = lambda: None
    module.nvmlDeviceGetCount = lambda: 1
    module.nvmlDeviceGetHandleByIndex = lambda index: f"handle-{index}"
    module.nvmlDeviceGetPciInfo = lambda handle: _Pci(b"00000000:01:00.0")
    module.nvmlDeviceGetName = lambda handle: b"NVIDIA Fake H100"
    module.nvmlDeviceGetUUID = lambda handle: "GPU-fake-0000"
    module.nvmlDeviceGetMemoryInfo = lambda handle: _Memory(total, used, total - used)
    module.nvmlDeviceGetComputeRunningProcesses = lambda handle: [
        _Process(os.getpid(), np.uint64(3 * GIB)),
        _Process(FOREIGN_PID, np.uint64(5 * GIB)),
    ]
    module.nvmlDeviceGetGraphicsRunningProcesses = lambda handle: []
    return module


def _no_nvml() -> types.ModuleType:
    raise ImportError("nvidia-ml-py is not installed")


def no_gpu_engine() -> Engine:
    """An engine on this machine's real RAM, with NVML absent (so VRAM is n/a whatever the machine has)."""
    return Engine(probe=MemoryProbe(gpu=GpuProbe(nvml=Nvml(loader=_no_nvml), environ={})))


def fake_gpu_engine(used_gib: float = 20.0) -> Engine:
    module = fake_pynvml(used_gib)
    return Engine(probe=MemoryProbe(gpu=GpuProbe(nvml=Nvml(loader=lambda: module), environ={})))


def cgroup_v2_tree(tmp_path: Path, limit: int = 4 * GIB, usage: int = GIB) -> tuple[Path, Path]:
    """A cgroup v2 tree with a memory limit, as a container has, and the ``/proc/self/cgroup`` naming it."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "memory.max").write_text(f"{limit}\n")
    (root / "memory.current").write_text(f"{usage}\n")
    (root / "memory.stat").write_text("anon 1\ninactive_file 0\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text("0::/\n")
    return root, proc


def container_engine(
    tmp_path: Path, limit: int = 4 * GIB, usage: int = GIB, used_vram_gib: float | None = None
) -> Engine:
    """An engine whose RAM probe reads a cgroup v2 tree with a memory limit, as inside a container; with
    ``used_vram_gib``, beside one fake GPU. Its figures hold still from one reading to the next."""
    root, proc = cgroup_v2_tree(tmp_path, limit, usage)
    ram = RamProbe(CgroupReader(root=root, proc_self_cgroup=proc))
    module = None if used_vram_gib is None else fake_pynvml(used_vram_gib)
    nvml = Nvml(loader=_no_nvml if module is None else lambda: module)
    return Engine(probe=MemoryProbe(ram=ram, gpu=GpuProbe(nvml=nvml, environ={})))


class RecordingPublisher:
    """Records what would go to the browsers; each payload must survive ``json.dumps(allow_nan=False)``."""

    def __init__(self, clients: bool = True):
        self.clients = clients
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.threads: list[str] = []
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)

    def publish(self, event: str, payload: dict[str, Any]) -> None:
        json.dumps(payload, allow_nan=False)
        with self._lock:
            self.events.append((event, payload))
            self.threads.append(threading.current_thread().name)
            self.changed.notify_all()

    def has_clients(self) -> bool:
        return self.clients

    def of(self, event: str) -> list[dict[str, Any]]:
        with self._lock:
            return [payload for name, payload in self.events if name == event]

    def wait_for(self, event: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self._lock:
            self.changed.wait_for(lambda: sum(1 for name, _ in self.events if name == event) >= count, timeout)
        return self.of(event)


def panel_app(backend: PanelBackend) -> web.Application:
    """A bare aiohttp application with only the panel's routes, as a host other than ComfyUI would mount them."""
    routes = web.RouteTableDef()
    register_routes(routes, backend)
    app = web.Application()
    app.add_routes(routes)
    return app


# A fake running prompt: the executor hook's signals, sent from a thread named like ComfyUI's worker.


def in_worker(send: Callable[[], None]) -> str:
    """Runs ``send`` in a thread named like ComfyUI's worker and returns that name."""
    thread = threading.Thread(target=send, name="Thread-1 (prompt_worker)")
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return thread.name


def prompt_started(prompt_id: str = "p-1") -> None:
    signals.send_safely(signals.prompt_started, prompt_id, prompt_id=prompt_id)


def prompt_finished(prompt_id: str = "p-1") -> None:
    signals.send_safely(
        signals.prompt_finished, prompt_id, prompt_id=prompt_id, success=True, duration_seconds=1.5, error=None
    )


def node_started(node_id: str, node_class: str, heavy: bool = False, prompt_id: str = "p-1") -> None:
    """What the hook does before a node: the pipeline's steps, ``node_started``, ``heavy_node_started`` if heavy."""
    start_node(node_id, node_class, heavy=heavy, prompt_id=prompt_id)


def node_finished(node_id: str, node_class: str, heavy: bool = False, prompt_id: str = "p-1") -> None:
    """What the hook does after a node: the pipeline's steps, ``node_finished``, ``heavy_node_finished`` if heavy."""
    finish_node(node_id, node_class, heavy=heavy, prompt_id=prompt_id)


async def drag_sidebar_wider(page: Any, pixels: int) -> None:
    """Widens ComfyUI's sidebar by dragging its splitter, for pictures of the panel."""
    gutter = page.locator(".p-splitter-gutter").first
    if not await gutter.count():
        return
    box = await gutter.bounding_box()
    if box is None:
        return
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    await page.mouse.move(x, y)
    await page.mouse.down()
    await page.mouse.move(x + pixels, y, steps=8)
    await page.mouse.up()


def stuck_reader(port: int) -> socket.socket:
    """A websocket client that completes the handshake and then never reads a byte, with a small receive buffer."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    raw.sendall(
        f"GET /memhooks/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    return raw
