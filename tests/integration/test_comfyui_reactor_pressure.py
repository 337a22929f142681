"""The last rung in a memory-limited container: ReActor's sessions are what is left to give back, and they are given.

A swap with the real ReActor (models the size of the real ones) leaves about 900 MB of onnxruntime sessions that
ComfyUI cannot see; two nodes after it need that room for data they keep. The same prompt runs three times, each
in a fresh v1 memory cgroup: in a ComfyUI without comfy_memhooks, and with comfy_memhooks but
``pressure_unloads_models`` off, the kernel must OOM-kill it (so the room really is ReActor's); with comfy_memhooks'
default settings (no settings file) the prompt completes, the boundary cleanup's last rung is in the history with
what it unloaded, and a second swap in the same process works, its models reloaded. Needs ``COMFYUI_DIR`` and
``REACTOR_DIR``, root and a writable v1 memory hierarchy; skipped otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from comfy_memhooks.engine.last_rung import UNLOADED_NOTICE
from tests.cgroups import enter_group_launcher, limited_v1_group
from tests.integration.comfyui_server import ComfyError
from tests.integration.reactor_support import (
    GREY,
    MIB,
    generated_models,
    reactor_marks,
    reactor_server,
    reactor_state,
    save,
    swap_nodes,
)
from tests.integration.test_comfyui_pressure import oom_kills

pytestmark = reactor_marks()
logger = logging.getLogger(__name__)

# Measured here: ComfyUI with ReActor holds about 600 MB of the container before a swap and 1.5 GB after it (the
# sessions about 900 MB of that), and the swap itself passes 2.5 GB for a moment (its analysis' garbage, which the
# watchdog collects): the limit leaves room for that on a loaded machine. After the first hold the container is over
# 90% full; the second hold fits only in the room the sessions took.
LIMIT_BYTES = 2800 * MIB
FIRST_HOLD_MB = 1150
SECOND_HOLD_MB = 600


def pressure_prompt() -> dict[str, Any]:
    prompt = swap_nodes()
    prompt["4"] = {
        "class_type": "MemhooksReActorHold",
        "inputs": {"image": ["3", 0], "megabytes": FIRST_HOLD_MB, "work_seconds": 1.5},
    }
    prompt["5"] = {
        "class_type": "MemhooksReActorHold",
        "inputs": {"image": ["4", 0], "megabytes": SECOND_HOLD_MB, "work_seconds": 1.5},
    }
    return save(prompt, ["5", 0], "held")


@pytest.fixture(scope="module")
def models(pytestconfig: pytest.Config) -> Path:
    return generated_models(pytestconfig.cache.mkdir("comfy_memhooks"))


def run_in_container(models: Path, *, with_memhooks: bool, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pressure prompt, then (when it completed) another swap, in a ComfyUI inside a new cgroup."""
    with limited_v1_group(LIMIT_BYTES) as group:
        if group is None:
            pytest.skip("cannot create a v1 memory cgroup here (needs root and a writable v1 memory hierarchy)")
        server = reactor_server(
            models,
            with_memhooks=with_memhooks,
            settings=settings or {},
            launcher=enter_group_launcher(group),
        )
        found: dict[str, Any] = {"completed": False, "swapped_again": False, "records": [], "log": ""}
        try:
            server.start()
            try:
                _, entry = server.run(pressure_prompt())
                found["completed"] = entry["status"]["status_str"] == "success"
                if found["completed"]:
                    again = save(swap_nodes(target_color=GREY + 0x101010), ["3", 0], "again")
                    _, entry = server.run(again)
                    found["swapped_again"] = entry["status"]["status_str"] == "success"
                    found["state"] = reactor_state(server, "after the second swap")
                if with_memhooks:
                    found["records"] = server.get("/memhooks/history")["records"]
                    found["tracebacks"] = server.our_tracebacks()
            except (ComfyError, OSError):
                found["completed"] = False
            found["log"] = server.log_tail()
            return found
        finally:
            server.stop()
            found["oom_kills"] = oom_kills(group)


def test_near_the_limit_reactors_sessions_make_room_and_reload_on_the_next_swap(models: Path) -> None:
    without = run_in_container(models, with_memhooks=False)
    assert not without["completed"] and without["oom_kills"] >= 1, "the scenario is not real without comfy_memhooks"
    rung_off = run_in_container(models, with_memhooks=True, settings={"pressure_unloads_models": False})
    assert not rung_off["completed"] and rung_off["oom_kills"] >= 1, "the room must be ReActor's sessions'"

    run = run_in_container(models, with_memhooks=True)

    assert run["completed"] and run["oom_kills"] == 0, run["log"]
    assert run["swapped_again"] and run["state"]["swap_model"] and run["state"]["target_faces"] == 1
    rung = [record for record in run["records"] if record["notice"] == UNLOADED_NOTICE]
    assert len(rung) == 1, [record["trigger"]["reason"] for record in run["records"]]
    record = rung[0]
    assert record["trigger"]["kind"] in {"boundary", "hook"} and record["trigger"]["pressure"]
    unloaded = next(action for action in record["actions"] if action["name"] == "reactor_models_under_pressure")
    assert unloaded["escalation"] and "swap model inswapper_128.onnx" in unloaded["detail"]
    assert unloaded["ram_freed_bytes"] > 500 * MIB
    assert run["tracebacks"] == []
    logger.info(  # docs/cleanup.md's ReActor figures (pytest -o log_cli=true --log-cli-level=INFO shows them)
        "last rung in a %.0f MB container: %s at RAM %.0f%%, ReActor's sessions gave %.0f MB back",
        LIMIT_BYTES / MIB,
        record["trigger"]["reason"],
        record["before"]["ram"]["percent"],
        unloaded["ram_freed_bytes"] / MIB,
    )
