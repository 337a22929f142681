"""A normal (non-editable) install serves the panel: the browser code ships inside the package.

The wheel is built as pip builds it for a user (an isolated build with setuptools from the package index) and
installed, with its dependencies from the index, into a fresh virtual environment that does not see this checkout;
its ``python -m comfy_memhooks serve`` must answer ``/`` with the panel's page and serve the panel's modules.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.integration.comfyui_server import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_a_wheel_installed_into_a_fresh_venv_serves_the_panel(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(ROOT)],
        check=True,
        timeout=600,
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("comfy_memhooks-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], check=True, timeout=600)
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["COMFY_MEMHOOKS_SETTINGS"] = str(tmp_path / "settings.json")
    where = subprocess.run(
        [str(python), "-c", "import comfy_memhooks; print(comfy_memhooks.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=60,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the wheel's copy, not this checkout

    port = free_port()
    server = subprocess.Popen(
        [str(python), "-m", "comfy_memhooks", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        page = _get_when_up(f"http://127.0.0.1:{port}/", server)
        assert 'from "./memhooks/web/js/lib/panel_view.js"' in page
        module = _get_when_up(f"http://127.0.0.1:{port}/memhooks/web/js/lib/sections/history.js", server)
        assert "export" in module
    finally:
        server.terminate()
        server.wait(timeout=20)


def _get_when_up(url: str, server: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                text: str = response.read().decode()
                return text
        except (urllib.error.URLError, ConnectionError):
            if server.poll() is not None or time.monotonic() > deadline:
                output = server.stdout.read().decode() if server.stdout else ""
                raise AssertionError(f"the installed server never answered {url}:\n{output}") from None
            time.sleep(0.2)
