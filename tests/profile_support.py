"""Profiles with known figures for the route and panel tests: put in a store as the recorder would put them."""

from __future__ import annotations

from comfy_memhooks.profile import NodeProfile, ProfileStore
from comfy_memhooks.profile.peaks import PeakMethod

MIB = 1024**2


def node(
    node_id: str,
    node_class: str,
    ram_added: int,
    vram_added: int | None = None,
    *,
    prompt_id: str = "prompt-1",
    cached: bool = False,
    ram_peak: int | None = None,
    method: PeakMethod = PeakMethod.HWM,
    container_peak: int | None = None,
) -> NodeProfile:
    """A node that left ``ram_added`` bytes of RSS behind, needed ``ram_peak`` above its start while it ran (no
    peak reading when ``None``), measured by ``method``, took the container ``container_peak`` above its usage at
    the start (its counter not resettable when ``None``) and, with torch, peaked ``vram_added`` above its start."""
    rss = 2000 * MIB
    allocated = None if vram_added is None else 1000 * MIB
    return NodeProfile(
        node_id=node_id,
        node_class=node_class,
        prompt_id=prompt_id,
        heavy=False,
        cached=cached,
        success=True,
        started_seconds=float(node_id),
        duration_seconds=0.5,
        rss_before_bytes=rss,
        rss_after_bytes=rss + ram_added,
        ram_used_before_bytes=8000 * MIB,
        ram_used_after_bytes=8000 * MIB + ram_added,
        torch_allocated_before_bytes=allocated,
        torch_allocated_after_bytes=allocated,
        torch_reserved_before_bytes=allocated,
        torch_reserved_after_bytes=allocated,
        torch_peak_allocated_bytes=None if allocated is None or vram_added is None else allocated + vram_added,
        rss_peak_bytes=None if ram_peak is None else rss + ram_peak,
        ram_peak_method=None if ram_peak is None else method,
        container_before_bytes=None if container_peak is None else 9000 * MIB,
        container_peak_bytes=None if container_peak is None else 9000 * MIB + container_peak,
    )


def record(store: ProfileStore, prompt_id: str, *nodes: NodeProfile, success: bool = True) -> None:
    """A whole prompt, in the order the recorder sends it to the store."""
    store.begin(prompt_id, 0.0)
    for each in nodes:
        store.add(each)
    store.end(prompt_id, success, 3.0)


def sample_prompt(store: ProfileStore, prompt_id: str = "prompt-1") -> None:
    """Four nodes: a loader heavy in VRAM that keeps what it loads (its peak from the container's counter), a
    decoder that needs the most RAM while it runs and gives nearly all of it back, a small one whose peak was only
    sampled, and a cached one without a peak."""
    record(
        store,
        prompt_id,
        node(
            "1",
            "CheckpointLoaderSimple",
            300 * MIB,
            2000 * MIB,
            prompt_id=prompt_id,
            ram_peak=300 * MIB,
            method=PeakMethod.CGROUP,
        ),
        node(
            "2", "VAEDecode", 10 * MIB, 500 * MIB, prompt_id=prompt_id, ram_peak=1400 * MIB, container_peak=1500 * MIB
        ),
        node("3", "ImageInvert", 5 * MIB, 0, prompt_id=prompt_id, ram_peak=600 * MIB, method=PeakMethod.SAMPLED),
        node("4", "SaveImage", 0, None, prompt_id=prompt_id, cached=True),
    )
