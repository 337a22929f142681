"""Starts a real ComfyUI (``COMFYUI_DIR``) on a free loopback port with this checkout as a custom node.

Nothing is copied into ComfyUI: a temporary folder holds links to the checkout (named ``comfy_memhooks``) and to
the test-only node pack, and ``--extra-model-paths-config`` points ComfyUI at it. Outputs, the user folder and
the database stay in the temporary base directory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEST_NODES = Path(__file__).resolve().parent / "comfy_nodes" / "memhooks_panel_testnodes"


@dataclass
class RunningComfyUI:
    url: str
    process: subprocess.Popen[bytes]
    base: Path
    log: Path

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post_json(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def put_json(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="PUT",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def version(self) -> str:
        return str(self.get_json("/system_stats")["system"]["comfyui_version"])

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_comfyui(comfyui_dir: Path, python: str, tmp: Path, extra_pythonpath: str | None = None) -> RunningComfyUI:
    base = tmp / "base"
    (base / "custom_nodes").mkdir(parents=True)
    user = base / "user" / "default"
    user.mkdir(parents=True)
    # Without this the first page load opens the templates dialog over the canvas.
    (user / "comfy.settings.json").write_text(
        json.dumps({"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False})
    )
    nodes = tmp / "nodes"
    nodes.mkdir()
    (nodes / "comfy_memhooks").symlink_to(ROOT, target_is_directory=True)
    (nodes / TEST_NODES.name).symlink_to(TEST_NODES, target_is_directory=True)
    config = tmp / "extra_model_paths.yaml"
    config.write_text(f"memhooks_tests:\n    custom_nodes: {nodes}\n")
    port = free_port()
    environment = dict(os.environ)
    environment.pop("COMFY_MEMHOOKS_SETTINGS", None)
    environment.pop("PYTHONPATH", None)
    if extra_pythonpath:
        environment["PYTHONPATH"] = extra_pythonpath
    log = tmp / "comfyui.log"
    command = [
        python,
        "-u",
        "main.py",
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--base-directory",
        str(base),
        "--database-url",
        "sqlite:///:memory:",
        "--extra-model-paths-config",
        str(config),
        "--disable-auto-launch",
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=comfyui_dir, env=environment, stdout=output, stderr=subprocess.STDOUT)
    running = RunningComfyUI(f"http://127.0.0.1:{port}", process, base, log)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {process.returncode}:\n{running.log_text()[-4000:]}")
        try:
            running.get_json("/system_stats")
            return running
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.25)
    running.stop()
    raise RuntimeError(f"ComfyUI did not answer within 180 s:\n{running.log_text()[-4000:]}")


def holding_workflow(megabytes: tuple[int, ...] = (1024, 2048, 1024), seconds: float = 3.0) -> dict[str, Any]:
    """EmptyImage, then one ``MemhooksTestHoldMemory`` per entry (each holds that much RAM), then PreviewImage."""
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
    return prompt
