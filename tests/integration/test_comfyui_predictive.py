"""Predictive cleanup in a real ComfyUI inside a memory-limited container, with default settings.

A stand-in video decoder (no heavy-node rule matches it) is seen once, with 200 frames, by a ComfyUI that then
stops: what was learned is kept in the user directory. A new ComfyUI with that directory, in a 3 GB v1 memory
cgroup, runs nodes that leave about 1.3 GB of collectable garbage (RAM stays under the 80% threshold, so no
threshold acts) and then the decoder with twice the frames, which needs more than the free room but less than
the room plus the garbage. It allocates its frames holding the GIL, so no watchdog can step in while it does:
only what is freed before it starts counts. With predictive cleanup off, the kernel kills ComfyUI (the scenario
is real); with the default settings the run succeeds and the history shows the predictive cleanup.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cgroups import enter_group_launcher, limited_v1_group
from tests.integration.comfyui_server import ComfyError, ComfyUI, skip_reason
from tests.integration.test_comfyui_pressure import chain, oom_kills

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

PACK = Path(__file__).resolve().parent / "memhooks_pressure_pack"
LEARNED = "comfy_memhooks_learned.json"
MIB = 1024**2
GIB = 1024**3
LIMIT = 3 * GIB
WIDTH, HEIGHT = 1280, 720  # 3.5 MiB a frame
TAUGHT_FRAMES = 200  # 0.69 GiB
FRAMES = 400  # 1.37 GiB: more than the room left after the garbage, less than the room plus the garbage
GARBAGE = [("MemhooksPredictGarbage", {"megabytes": 330})] * 4  # 1.29 GiB, collectable only by a full collection


def decoder(frames: int) -> tuple[str, dict[str, Any]]:
    return ("MemhooksPredictFrames", {"frames": frames, "width": WIDTH, "height": HEIGHT})


@dataclass(frozen=True)
class Run:
    completed: bool
    oom_kills: int
    records: list[dict[str, Any]]
    log: str
    tracebacks: list[str]


def teach() -> bytes:
    """Runs the decoder once in a ComfyUI of its own; returns the learned file it left in its user directory."""
    server = ComfyUI(packs=(PACK,), record_events=False)
    try:
        server.start()
        _, entry = server.run(chain([decoder(TAUGHT_FRAMES)]))
        assert entry["status"]["status_str"] == "success", server.log_tail()
        learned = server.get("/memhooks/predictions")
        [row] = [row for row in learned["classes"] if row["node_class"] == "MemhooksPredictFrames"]
        taught = TAUGHT_FRAMES * WIDTH * HEIGHT * 4
        assert abs(row["actual_ram_bytes"] - taught) < 0.1 * taught, row
        path = server.base / "user" / LEARNED
        deadline = time.monotonic() + 10
        while not path.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        return path.read_bytes()
    finally:
        server.stop()


def run_in_container(learned: bytes, settings: dict[str, Any]) -> Run:
    with limited_v1_group(LIMIT) as group:
        if group is None:
            pytest.skip("cannot create a v1 memory cgroup here (needs root and a writable v1 memory hierarchy)")
        server = ComfyUI(packs=(PACK,), record_events=False, settings=settings, launcher=enter_group_launcher(group))
        (server.base / "user").mkdir(parents=True)
        (server.base / "user" / LEARNED).write_bytes(learned)  # what the first ComfyUI learned, as after a restart
        try:
            server.start()
            try:
                _, entry = server.run(chain([*GARBAGE, decoder(FRAMES)]))
                completed = entry["status"]["status_str"] == "success"
                records = server.get("/memhooks/history")["records"]
            except (ComfyError, OSError):  # it died: the OOM count says how
                completed, records = False, []
            return Run(completed, oom_kills(group), records, server.log_text(), server.our_tracebacks())
        finally:
            server.stop()


@pytest.fixture(scope="module")
def learned() -> bytes:
    return teach()


def test_without_predictive_cleanup_the_decoder_is_killed(learned: bytes) -> None:
    run = run_in_container(learned, {"predictive_cleanup": False})

    assert not run.completed and run.oom_kills >= 1, f"the scenario is not real:\n{run.log[-3000:]}"


def test_with_default_settings_the_decoder_gets_room_on_its_first_run_after_being_seen_once(learned: bytes) -> None:
    run = run_in_container(learned, {})

    assert run.completed and run.oom_kills == 0, run.log[-4000:]
    assert run.tracebacks == []
    [record] = [record for record in run.records if record["trigger"]["kind"] == "predictive"]
    trigger = record["trigger"]
    assert (trigger["node_class"], trigger["phase"], trigger["pressure"]) == ("MemhooksPredictFrames", "before", [])
    needed = FRAMES * WIDTH * HEIGHT * 4
    assert needed <= trigger["predicted_bytes"] <= 1.25 * needed  # scaled from 200 frames to 400, with a margin
    assert trigger["headroom_bytes"] < needed  # it did not fit
    assert record["before"]["ram"]["percent"] < 80  # and no threshold was crossed
    assert [action["name"] for action in record["actions"]] == ["gc_collect", "malloc_trim"]  # the weakest cleanup
    assert record["after"]["ram"]["available_bytes"] >= trigger["predicted_bytes"]
    assert not [record for record in run.records if record["trigger"]["pressure"]]  # the thresholds never acted
