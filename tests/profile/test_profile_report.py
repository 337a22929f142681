"""The node's detailed report and the per-class peaks show what each node needed while it ran, not only what it
left behind, and say when a peak was only sampled or read from the container's counter."""

from __future__ import annotations

from comfy_memhooks.engine.report import heaviest_node_lines
from comfy_memhooks.profile import ProfileStore
from comfy_memhooks.profile.peaks import PeakMethod
from tests.profile_support import MIB, node, record


def _store() -> ProfileStore:
    store = ProfileStore()
    record(
        store,
        "p1",
        node(
            "1",
            "CheckpointLoaderSimple",
            300 * MIB,
            2000 * MIB,
            prompt_id="p1",
            ram_peak=300 * MIB,
            method=PeakMethod.CGROUP,
        ),
        node("2", "VAEDecode", 0, 120 * MIB, prompt_id="p1", ram_peak=1400 * MIB),
        node("3", "VAEDecode", 4 * MIB, None, prompt_id="p1", ram_peak=700 * MIB),
        node(
            "4", "ImageUpscaleWithModel", 2 * MIB, None, prompt_id="p1", ram_peak=600 * MIB, method=PeakMethod.SAMPLED
        ),
        node("5", "SaveImage", 0, None, prompt_id="p1", cached=True),
        node("6", "PreviewImage", 0, None, prompt_id="p1"),
    )
    return store


def test_the_heaviest_nodes_show_the_peak_beside_what_was_left_a_sampled_one_marked() -> None:
    profile = _store().latest()
    assert profile is not None

    lines = heaviest_node_lines(profile)

    assert lines == [
        "Heaviest nodes of prompt p1 (finished), of 6:",
        "  CheckpointLoaderSimple #1: RAM peak ≤ +300MB (container) (left +300MB), VRAM peak +1.95GB, 0.50 s",
        "  VAEDecode #2: RAM peak +1.37GB (left +0MB), VRAM peak +120MB, 0.50 s",
        "  VAEDecode #3: RAM peak +700MB (left +4MB), VRAM peak +n/a, 0.50 s",
        "  ImageUpscaleWithModel #4: RAM peak ≥ +600MB (sampled) (left +2MB), VRAM peak +n/a, 0.50 s",
    ]


def test_a_prompt_whose_nodes_needed_nothing_says_so() -> None:
    store = ProfileStore()
    record(store, "p2", node("1", "PreviewImage", 0, None, prompt_id="p2"))
    profile = store.latest()
    assert profile is not None

    assert heaviest_node_lines(profile) == ["Heaviest nodes of prompt p2 (finished): none needed memory (1 ran)"]


def test_each_class_is_weighed_by_its_largest_peak_while_running_cached_nodes_left_out() -> None:
    store = _store()

    assert store.peak_ram_by_class() == {
        "CheckpointLoaderSimple": 300 * MIB,
        "VAEDecode": 1400 * MIB,  # the larger of its two peaks, though that node left nothing behind
        "ImageUpscaleWithModel": 600 * MIB,
        "PreviewImage": 0,  # no peak reading: what it left behind
    }
