"""Starts a real ComfyUI (CPU, loopback) with this project and the test node pack on its custom-node path.

Read by the integration tests and the benchmark. Configuration comes from the environment:

- ``COMFYUI_DIR``: a ComfyUI checkout (its ``main.py``); without it the integration tests are skipped.
- ``COMFYUI_PYTHON``: a Python with ComfyUI's requirements (default: this one).
- ``COMFYUI_EXTRA_PYTHONPATH``: put first on ``PYTHONPATH`` for ComfyUI only (the frontend and helper packages
  that release pins, installed with ``pip install --no-deps --target``; see docs/testing.md).

Nothing is copied: a temporary folder holds links to the project (as ``comfy_memhooks``) and to the test pack,
and a YAML given to ``--extra-model-paths-config`` names that folder. ``--base-directory`` keeps outputs, the
user directory and the settings file in the same temporary folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[2]
TEST_PACK = Path(__file__).resolve().parent / "memhooks_test_pack"
READY_SECONDS = 120
PROMPT_SECONDS = 120


def comfyui_dir() -> Path | None:
    value = os.environ.get("COMFYUI_DIR")
    return Path(value) if value else None


def checkout_version_text() -> str | None:
    """The version the checkout at ``COMFYUI_DIR`` says it is (its ``comfyui_version.py``), read without starting it;
    ``None`` without a checkout or a version file."""
    directory = comfyui_dir()
    try:
        text = (directory / "comfyui_version.py").read_text(encoding="utf-8") if directory is not None else ""
    except OSError:
        return None
    match = re.search(r"""__version__\s*=\s*["']([^"']+)""", text)
    return match.group(1) if match else None


def checkout_version() -> tuple[int, ...]:
    """The checkout's version as numbers (``(0, 33, 0)``), for a test that depends on it before ComfyUI starts (0.3.44
    refuses ``--cache-ram``; 0.33 releases its cache after every node); ``()`` when it is unknown."""
    numbers = re.findall(r"\d+", (checkout_version_text() or "").split("+")[0])
    return tuple(int(part) for part in numbers[:3])


def skip_reason() -> str | None:
    """Why a real ComfyUI cannot be started here, or ``None`` when it can."""
    directory = comfyui_dir()
    if directory is None:
        return "COMFYUI_DIR is not set: these tests need a ComfyUI checkout (see docs/testing.md)"
    if not (directory / "main.py").is_file():
        return f"COMFYUI_DIR={directory} holds no main.py"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ComfyError(RuntimeError):
    pass


@dataclass
class ComfyUI:
    """One ComfyUI process, started by :meth:`start` and stopped, by its own pid, with :meth:`stop`."""

    settings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    record_events: bool = True
    packs: tuple[Path, ...] = (TEST_PACK,)
    launcher: tuple[str, ...] = ()  # a command that runs ComfyUI's (e.g. one that enters a memory cgroup)
    with_memhooks: bool = True  # False: the same ComfyUI without comfy_memhooks, to show what users get without it
    arguments: tuple[str, ...] = ()  # more of ComfyUI's own command-line options (e.g. --cache-ram)
    project: Path = PROJECT  # the comfy_memhooks checkout linked in (a benchmark links an older revision's too)
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="memhooks-comfyui-")))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events_path(self) -> Path:
        return self.base / "events.jsonl"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    def start(self) -> ComfyUI:
        directory = comfyui_dir()
        if directory is None:
            raise ComfyError("COMFYUI_DIR is not set")
        nodes = self.base / "nodes"
        nodes.mkdir()
        if self.with_memhooks:
            (nodes / "comfy_memhooks").symlink_to(self.project, target_is_directory=True)
        for pack in self.packs:
            (nodes / pack.name).symlink_to(pack, target_is_directory=True)
        (self.base / "custom_nodes").mkdir()
        (self.base / "user" / "default").mkdir(parents=True)
        # Without this the frontend's first page load opens the templates dialog over the canvas.
        (self.base / "user" / "default" / "comfy.settings.json").write_text(
            json.dumps({"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False})
        )
        if self.settings:
            (self.base / "user" / "comfy_memhooks.json").write_text(json.dumps(self.settings))
        config = self.base / "nodes.yaml"
        config.write_text(f"memhooks_test:\n    custom_nodes: {nodes}\n")
        env = dict(os.environ)
        env.pop("COMFY_MEMHOOKS_SETTINGS", None)
        env.pop("PYTHONPATH", None)
        extra = os.environ.get("COMFYUI_EXTRA_PYTHONPATH")
        if extra:
            env["PYTHONPATH"] = extra
        if self.record_events:
            env["MEMHOOKS_TEST_EVENTS"] = str(self.events_path)
        else:
            env.pop("MEMHOOKS_TEST_EVENTS", None)
        env.update(self.environment)
        command = [
            *self.launcher,
            os.environ.get("COMFYUI_PYTHON") or sys.executable,
            "-u",
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--base-directory",
            str(self.base),
            "--database-url",
            "sqlite:///:memory:",
            "--extra-model-paths-config",
            str(config),
            "--disable-auto-launch",
            *self.arguments,
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ComfyError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system_stats")
                return self
            except (OSError, ComfyError):
                time.sleep(0.2)
        self.stop()
        raise ComfyError(f"ComfyUI was not ready in {READY_SECONDS} s:\n{self.log_tail()}")

    def stop(self, remove: bool = True) -> None:
        """Stops the process this object started (SIGINT, then SIGKILL) and removes its temporary folder."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)
        if remove:
            shutil.rmtree(self.base, ignore_errors=True)  # links inside are removed, never followed

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def our_tracebacks(self) -> list[str]:
        """The tracebacks in the log that pass through comfy_memhooks or its test packs.

        Others are ComfyUI's own: ComfyUI 0.3.44, for one, leaks a database connection at start-up, and the next
        garbage collection in its worker thread (its own periodic one, or ours) logs sqlite's complaint that the
        connection belongs to another thread.
        """
        tracebacks = []
        for chunk in self.log_text().split("Traceback (most recent call last):")[1:]:
            lines = []
            for line in chunk.splitlines()[1:]:
                lines.append(line)
                if line and not line.startswith(" "):  # the exception's own line ends the traceback
                    break
            text = "\n".join(lines)
            if "memhooks" in text:
                tracebacks.append(text)
        return tracebacks

    def log_tail(self, characters: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except OSError:
            return "(no log)"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise ComfyError(f"{method} {path}: HTTP {error.code}: {error.read()[:2000]!r}") from error

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body)

    def version(self) -> str:
        return str(self.get("/system_stats")["system"]["comfyui_version"])

    def run(self, prompt: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Queues an API-format prompt and waits for it; returns its id and its history entry."""
        queued = self.post("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
        prompt_id = queued["prompt_id"]
        deadline = time.monotonic() + PROMPT_SECONDS
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and (entry["status"].get("completed") or entry["status"].get("status_str") == "error"):
                return prompt_id, entry
            if self.process is not None and self.process.poll() is not None:
                raise ComfyError(f"ComfyUI died:\n{self.log_tail()}")
            time.sleep(0.05)
        raise ComfyError(f"prompt {prompt_id} did not finish in {PROMPT_SECONDS} s:\n{self.log_tail()}")

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """The signals written by the test pack, in order, from the ``since``-th on (see :meth:`mark`)."""
        try:
            lines = self.events_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines[since:] if line.strip()]

    def mark(self) -> int:
        """How many signals have been written so far."""
        return len(self.events())


@contextlib.contextmanager
def running_comfyui(**options: Any) -> Iterator[ComfyUI]:
    """A started :class:`ComfyUI` for the ``with`` block, stopped (and its folder removed) afterwards."""
    server = ComfyUI(**options)
    try:
        server.start()
        yield server
    finally:
        server.stop()
