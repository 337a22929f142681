"""Inside a real ComfyUI, the routes that change something refuse DNS rebinding and ``Origin: null`` themselves.

ComfyUI's own origin middleware differs between versions (0.3.44 has none by default; later ones compare Origin with
Host, which a rebinding page passes): run against each generation by pointing ``COMFYUI_DIR`` at it.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from tests.integration.comfyui_server import ComfyUI, running_comfyui, skip_reason

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]


@pytest.fixture(scope="module")
def comfy() -> Iterator[ComfyUI]:
    with running_comfyui(record_events=False) as server:
        yield server


def _send(comfy: ComfyUI, method: str, path: str, body: bytes, headers: dict[str, str]) -> int:
    port = int(comfy.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=True)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_rebinding_and_origin_null_are_refused(comfy: ComfyUI, prefix: str) -> None:
    port = comfy.url.rsplit(":", 1)[1]
    evil = f"evil.example:{port}"
    before = comfy.get("/memhooks/settings")["settings"]
    records = len(comfy.get("/memhooks/history")["records"])

    rebinding = {"Host": evil, "Origin": f"http://{evil}", "Content-Type": "application/json"}
    body = json.dumps({"enabled": not before["enabled"]}).encode()
    assert _send(comfy, "PUT", f"{prefix}/memhooks/settings", body, rebinding) == 403
    null = {"Host": f"127.0.0.1:{port}", "Origin": "null", "Content-Type": "text/plain"}
    assert _send(comfy, "POST", f"{prefix}/memhooks/optimize", b'{"mode": "Aggressive"}', null) == 403

    assert comfy.get("/memhooks/settings")["settings"] == before
    assert len(comfy.get("/memhooks/history")["records"]) == records
    own = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"}
    same = json.dumps({"enabled": before["enabled"]}).encode()
    assert _send(comfy, "PUT", f"{prefix}/memhooks/settings", same, own) == 200
