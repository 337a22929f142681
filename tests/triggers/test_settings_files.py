"""Whatever bytes the settings file holds, comfy_memhooks runs on defaults, says which file, and loses nothing."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.errors import SettingsFileProtected
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.triggers.settings import AutoSettings, SettingsStore
from tests.conftest import ROOT
from tests.panel.panel_support import RecordingPublisher, no_gpu_engine, panel_app

Client = TestClient[web.Request, web.Application]

BAD_FILES = {
    "cp1252": '{"ram_threshold": 70, "note": "café"}'.encode("cp1252"),
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "deep-object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "too-big-for-a-float": b'{"ram_threshold": 1' + b"0" * 400 + b"}",
    "past-the-digit-limit": b'{"ram_threshold": ' + b"9" * 5000 + b"}",
    "nan": b'{"ram_threshold": NaN}',
    "binary": bytes(range(256)),
    "empty": b"",
}


@pytest.mark.parametrize("content", list(BAD_FILES.values()), ids=list(BAD_FILES))
def test_any_bad_bytes_are_set_aside_with_one_warning_naming_the_file(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "comfy_memhooks.json"
    path.write_bytes(content)
    store = SettingsStore(path)
    with caplog.at_level(logging.WARNING):
        assert store.load() == AutoSettings()
    kept = [entry for entry in tmp_path.iterdir() if entry.name.startswith("comfy_memhooks.invalid-")]
    assert len(kept) == 1 and kept[0].read_bytes() == content
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and len(warnings[0]) < 1000
    assert not any(record.exc_info for record in caplog.records)
    store.update({"ram_threshold": 70})  # the panel can save again, to a fresh file
    assert json.loads(path.read_text())["ram_threshold"] == 70


async def test_an_unreadable_file_is_never_replaced_by_a_put(tmp_path: Path, aiohttp_client: AiohttpClient) -> None:
    path = tmp_path / "comfy_memhooks.json"
    path.mkdir()  # reading it fails (EISDIR) as a file without read permission would
    store = SettingsStore(path)
    assert store.load() == AutoSettings()
    assert store.load_warning is not None and str(path) in store.load_warning
    backend = PanelBackend(
        no_gpu_engine(), store, RecordingPublisher(), interval=lambda: 3600.0, pipeline=current_runtime().pipeline
    )
    backend.start()
    try:
        client: Client = await aiohttp_client(panel_app(backend))
        assert (await client.get("/memhooks/status")).status == 200
        response = await client.put("/memhooks/settings", json={"ram_threshold": 70})
        assert response.status == 409
        assert str(path) in (await response.json())["error"]
        bad = await client.put("/memhooks/settings", json={"ram_threshold": "x"})
        assert bad.status == 400  # a bad field is still named first
    finally:
        backend.close()
    assert path.is_dir() and store.current == AutoSettings()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder another user can reach: pytest's own tmp folders are private to the user running it."""
    folder = Path(tempfile.mkdtemp(prefix="memhooks-"))
    folder.chmod(0o777)
    yield folder
    subprocess.run(["chmod", "-R", "u+rwx", str(folder)], check=False)
    shutil.rmtree(folder, ignore_errors=True)


SCENARIO = textwrap.dedent(
    """
    import json, logging, os, sys
    from pathlib import Path
    from comfy_memhooks.triggers.settings import AutoSettings, SettingsStore
    from comfy_memhooks.errors import SettingsFileProtected
    logging.basicConfig(level=logging.WARNING)
    if os.geteuid() == 0:  # the interpreter lives in root's home: start as root, then become nobody
        os.setgid(65534)
        os.setuid(65534)
    store = SettingsStore(Path(sys.argv[1]))
    assert store.load() == AutoSettings()
    try:
        store.update({"ram_threshold": 70})
    except SettingsFileProtected as error:
        print("REFUSED", error.reason)
    else:
        print("WRITTEN")
    """
)


def _as_nobody(path: Path) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0 and os.access(path.parent, os.W_OK):
        pytest.skip("needs root to run the scenario as another user, or a folder this user cannot write")
    return subprocess.run(
        [sys.executable, "-c", SCENARIO, str(path)],
        cwd=ROOT,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("case", ["read-only folder", "unreadable file"])
def test_a_file_that_cannot_be_set_aside_or_read_is_kept_and_never_overwritten(shared_tmp: Path, case: str) -> None:
    folder = shared_tmp / "user"
    folder.mkdir()
    path = folder / "comfy_memhooks.json"
    content = b'{"ram_threshold": 1e400}' if case == "read-only folder" else b'{"ram_threshold": 60}'
    path.write_bytes(content)
    if case == "read-only folder":
        path.chmod(0o666)
        folder.chmod(0o555)
    else:
        path.chmod(0o000)
        folder.chmod(0o777)
    result = _as_nobody(path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.startswith("REFUSED") and str(path) in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and str(path) in warnings[0]
    folder.chmod(0o755)
    path.chmod(0o644)
    assert path.read_bytes() == content
    assert sorted(entry.name for entry in folder.iterdir()) == ["comfy_memhooks.json"]


def test_the_standalone_server_starts_on_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_bytes(BAD_FILES["deep"])
    result = subprocess.run(
        [sys.executable, "-c", "from comfy_memhooks.triggers.settings import load_settings_store as g; g()"],
        cwd=ROOT,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COMFY_MEMHOOKS_SETTINGS": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert str(path) in result.stderr


def test_refusal_names_the_reason() -> None:
    assert SettingsFileProtected("x cannot be read").reason == "x cannot be read"
