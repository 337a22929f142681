"""The real ReActor (v0.7, every model on onnxruntime) in a real ComfyUI, with its models generated at test time.

What comfy_memhooks does to the real pack: a swap gives the same image, byte for byte, with the hook as without it;
the default rule (Balanced after ``ReActor*``) returns the freed heap and keeps ReActor's models, and its record
says so; the node in Aggressive empties ReActor's caches, read from its ``scripts/reactor_swapper.py`` module, and
RSS comes back to within 100 MB of the floor (ComfyUI with ReActor, once its safe-content check has run). ReActor's
own failures reach ComfyUI unchanged. Needs ``COMFYUI_DIR`` and ``REACTOR_DIR``; skipped otherwise.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from comfy_memhooks.engine.pressure import DEFAULT_THRESHOLDS
from tests.integration.comfyui_server import ComfyUI
from tests.integration.reactor_support import (
    BLACK,
    GREY,
    MIB,
    generated_models,
    holds_faces,
    holds_models,
    manager,
    reactor_marks,
    reactor_server,
    reactor_state,
    save,
    saved_png,
    swap_nodes,
)
from tests.reactor_models import size_mismatches

pytestmark = reactor_marks()
logger = logging.getLogger(__name__)

FLOOR_MARGIN = 100 * MIB
# What malloc_trim returns after a swap, measured here: 21-30 MB on ComfyUI 0.8.0 (five runs), 29-33 MB on 0.18.2
# (three); half the least of them, so that only a trim that returns none of the swap's freed heap fails.
TRIM_FLOOR = 10 * MIB
COOLDOWN_SECONDS = DEFAULT_THRESHOLDS.cooldown_seconds


@pytest.fixture(scope="module")
def models(pytestconfig: pytest.Config) -> Path:
    return generated_models(pytestconfig.cache.mkdir("comfy_memhooks"))


def swap_and_target(color: int) -> dict[str, Any]:
    """A swap of ``color``'s target, saved, and the target saved beside it ("91")."""
    return save(save(swap_nodes(target_color=color), ["3", 0], "swap"), ["2", 0], "target", node="91")


def test_the_generated_models_are_the_size_of_the_real_ones(models: Path) -> None:
    sizes = {str(path.relative_to(models)): path.stat().st_size for path in models.rglob("*") if path.is_file()}
    assert size_mismatches(sizes) == []


def run_swaps(server: ComfyUI) -> dict[str, Any]:
    """A swap of a grey image (one face) and of a black one (none): the PNGs, and ReActor's state after each.

    ``"cold"`` is ReActor's state before the first swap: ComfyUI with ReActor loaded, nothing analysed yet.
    """
    found: dict[str, Any] = {"cold": reactor_state(server, "before any swap")}
    for name, color in (("grey", GREY), ("black", BLACK)):
        _, entry = server.run(swap_and_target(color))
        assert entry["status"]["status_str"] == "success", entry["status"]
        found[name] = (saved_png(server, entry), saved_png(server, entry, "91"), reactor_state(server, name))
    return found


def test_a_swap_under_the_hook_gives_the_same_image_byte_for_byte(models: Path) -> None:
    results = []
    for with_memhooks in (False, True):
        server = reactor_server(models, with_memhooks=with_memhooks)
        try:
            server.start()
            version = server.version()
            results.append(run_swaps(server))
            if with_memhooks:
                records = server.get("/memhooks/history")["records"]
                assert {r["trigger"]["node_class"] for r in records} == {"ReActorFaceSwap"}
                assert server.our_tracebacks() == []
        finally:
            server.stop()
    without, under_hook = results
    logger.info(  # docs/cleanup.md's ReActor figures (pytest -o log_cli=true --log-cli-level=INFO shows them)
        "ReActor in ComfyUI %s, after its first swap: ComfyUI alone %+.0f MB over its %.0f MB before it; with "
        "comfy_memhooks' default rule %+.0f MB over %.0f MB",
        version,
        (without["grey"][2]["rss_bytes"] - without["cold"]["rss_bytes"]) / MIB,
        without["cold"]["rss_bytes"] / MIB,
        (under_hook["grey"][2]["rss_bytes"] - under_hook["cold"]["rss_bytes"]) / MIB,
        under_hook["cold"]["rss_bytes"] / MIB,
    )

    swapped, target, state = without["grey"]
    assert state["target_faces"] == 1 and state["swap_model"]  # one face found and swapped
    assert swapped != target
    assert under_hook["grey"][0] == swapped
    # No face in a black image: ReActor's own result (the target, unchanged) reaches ComfyUI, hook or not.
    swapped, target, state = without["black"]
    assert state["target_faces"] == 0
    assert swapped == target == under_hook["black"][0]


def test_the_default_rule_keeps_reactors_models_and_aggressive_releases_them(models: Path) -> None:
    server = reactor_server(models)
    try:
        server.start()
        cold = reactor_state(server, "before any swap")
        # ReActor's first safe-content check leaves transformers' and torch's lazily made state behind (60-90 MB
        # here, in no cache of ReActor's): a first run, on an image without a face, then Aggressive, takes it.
        warm_up = swap_and_target(BLACK)
        warm_up["4"] = manager(["3", 0], "Aggressive")
        assert server.run(warm_up)[1]["status"]["status_str"] == "success"
        floor = reactor_state(server, "floor")
        assert not holds_models(floor) and not holds_faces(floor)
        time.sleep(COOLDOWN_SECONDS + 1)  # the default rule is routine: it waits for the warm-up's cleanups

        _, entry = server.run(swap_and_target(GREY))
        assert entry["status"]["status_str"] == "success", entry["status"]
        kept = reactor_state(server, "after the default rule")
        rule = server.get("/memhooks/history")["records"][0]
        assert rule["trigger"]["phase"] == "after" and rule["mode"] == "Balanced"
        trim = next(action for action in rule["actions"] if action["name"] == "malloc_trim")
        assert trim["error"] is None and trim["skipped_reason"] is None
        freed = trim["ram_freed_bytes"]
        assert freed >= TRIM_FLOOR, f"malloc_trim returned {freed / MIB:.1f} MB of the swap's freed heap"
        assert rule["kept"] == ("ReActor's swap model inswapper_128.onnx, face analysis at 640 px and 2 cached face(s)")
        assert holds_models(kept) and kept["source_faces"] == 1 and kept["target_faces"] == 1

        prompt = swap_and_target(GREY + 0x101010)  # another target: a swap that runs, not one from the cache
        prompt["4"] = manager(["3", 0], "Aggressive")
        _, entry = server.run(prompt)
        assert entry["status"]["status_str"] == "success", entry["status"]
        released = reactor_state(server, "after Aggressive")
        node = server.get("/memhooks/history")["records"][0]
        assert node["trigger"]["kind"] == "node" and node["mode"] == "Aggressive" and node["kept"] is None
        assert not holds_models(released) and not holds_faces(released)
        assert not released["source_hash"] and not released["target_hash"]
        above = released["rss_bytes"] - floor["rss_bytes"]
        assert above <= FLOOR_MARGIN, f"RSS {above / MIB:.0f} MB above the floor after Aggressive"
        unloaded = next(a for a in node["actions"] if a["name"] == "release_reactor_caches")["ram_freed_bytes"]
        logger.info(  # docs/cleanup.md's ReActor figures (pytest -o log_cli=true --log-cli-level=INFO shows them)
            "ReActor in ComfyUI %s: %.0f MB before any swap, floor %.0f MB; after a swap and the default rule %+.0f MB "
            "(malloc_trim returned %.0f MB); after Aggressive %+.0f MB (ReActor's caches: %.0f MB)",
            server.version(),
            cold["rss_bytes"] / MIB,
            floor["rss_bytes"] / MIB,
            (kept["rss_bytes"] - floor["rss_bytes"]) / MIB,
            freed / MIB,
            above / MIB,
            unloaded / MIB,
        )
        assert server.our_tracebacks() == []
    finally:
        server.stop()


def offered_swap_models(server: ComfyUI) -> list[str]:
    node = server.get("/object_info/ReActorFaceSwap")["ReActorFaceSwap"]
    return list(node["input"]["required"]["swap_model"][0])


@pytest.mark.parametrize("broken", ["corrupt", "missing"])
def test_a_broken_model_file_fails_as_reactor_makes_it_fail_and_is_no_oom_to_rescue(
    models: Path, tmp_path: Path, broken: str
) -> None:
    """A corrupt ``inswapper_128.onnx``, or one gone after ComfyUI started (the node's list still offers it, its
    link leads nowhere): ReActor's own error reaches ComfyUI, the same with comfy_memhooks as without it."""
    failures = []
    for with_memhooks in (False, True):
        swapper = tmp_path / f"{with_memhooks}" / "inswapper_128.onnx"
        swapper.parent.mkdir()
        swapper.write_bytes(b"not an onnx model\n" * 4096)
        server = reactor_server(models, with_memhooks=with_memhooks, swapper=swapper)
        try:
            server.start()
            if broken == "missing":
                swapper.unlink()
            assert "inswapper_128.onnx" in offered_swap_models(server)
            _, entry = server.run(swap_and_target(GREY))
            assert entry["status"]["status_str"] == "error"
            messages = entry["status"]["messages"]
            (error,) = [data for kind, data in messages if kind == "execution_error"]
            message = error["exception_message"].replace(str(server.base), "<base directory>")  # one per server
            raised_at = error["traceback"][-1]  # in ReActor; the hook's frames, when it runs, are above it
            kinds = [kind for kind, _ in messages]
            failures.append((error["node_id"], error["node_type"], error["exception_type"], message, raised_at, kinds))
            if with_memhooks:
                records = server.get("/memhooks/history")["records"]
                assert all(record["trigger"]["phase"] != "rescue" for record in records), records
        finally:
            server.stop()
    assert failures[0] == failures[1]
    node_id, node_type, exception_type, message, raised_at, _ = failures[0]
    assert (node_id, node_type) == ("3", "ReActorFaceSwap")
    if broken == "corrupt":
        assert "onnxruntime" in exception_type
    else:  # reactor_core/face_objects.py's BaseONNXModel checks the file before onnxruntime opens it
        assert exception_type == "FileNotFoundError" and "face_objects.py" in raised_at
        assert message.startswith("Model file not found: <base directory>/models/insightface/inswapper_128.onnx")
