"""Snapshots with chosen percentages, for decision tests that must not depend on this machine's memory."""

from __future__ import annotations

from comfy_memhooks.probe.readings import GpuReading, GpuSource, MemorySnapshot, RamReading, RamSource

GIB = 1024**3


def snapshot_at(ram_percent: float | None, vram_percent: float | None) -> MemorySnapshot:
    total = 100 * GIB
    ram = RamReading(
        source=RamSource.HOST,
        total_bytes=total,
        used_bytes=None if ram_percent is None else int(total * ram_percent / 100),
        available_bytes=None,
        process_rss_bytes=GIB,
        host_total_bytes=total,
    )
    gpus: tuple[GpuReading, ...] = ()
    if vram_percent is not None:
        used = int(total * vram_percent / 100)
        gpus = (GpuReading(0, "GPU", total, used, total - used),)
    return MemorySnapshot(
        taken_at=0.0,
        ram=ram,
        gpus=gpus,
        gpu_source=GpuSource.NVML if gpus else None,
        gpu_unavailable_reason=None if gpus else "no GPU",
    )
