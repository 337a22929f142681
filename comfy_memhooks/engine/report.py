"""Text for people: the one-line status and the detailed report, shared by the node and the command line."""

from __future__ import annotations

from ..probe.core_ram import AGREEMENT_PERCENT, CoreRamCheck
from ..probe.readings import (
    GIB,
    DynamicVramReading,
    GpuBackend,
    GpuProcess,
    GpuReading,
    MemorySnapshot,
    RamReader,
    RamReading,
    RamSource,
)
from ..profile.peaks import PeakMethod
from ..profile.records import NodeProfile, PromptProfile
from .comfy_release import PromptRelease
from .history import ActionReport, OptimizationRecord


def format_gb(value: int | None) -> str:
    """``8.5GB``, ``16GB``: one decimal, none when it is zero, as users write memory sizes."""
    if value is None:
        return "n/a"
    text = f"{value / GIB:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    return f"{text}GB"


def format_size(value: int | None) -> str:
    """``512MB``, ``1.50GB``: megabytes under a gigabyte, for figures too small for ``format_gb``."""
    if value is None:
        return "n/a"
    if abs(value) < GIB:
        return f"{value / 1024**2:.0f}MB"
    return f"{value / GIB:.2f}GB"


def _usage(used: int | None, total: int | None, percent: float | None) -> str:
    if used is None or total is None or percent is None:
        return "n/a"
    return f"{format_gb(used)}/{format_gb(total)} ({percent:.0f}%)"


def _backend_suffix(gpu: GpuReading) -> str:
    """`` (MPS)``, `` (ROCm)``, `` (XPU)``: the accelerator when it is not CUDA, the one users assume."""
    if gpu.backend is None or gpu.backend is GpuBackend.CUDA:
        return ""
    return f" ({gpu.backend.label})"


def status_line(snapshot: MemorySnapshot) -> str:
    """``RAM: 8.5GB/16GB (53%) | VRAM: 12.3GB/24GB (51%)``; one VRAM part per GPU (``VRAM0``, ``VRAM1``) when
    there are several, and ``VRAM: n/a`` when there is none (never 0%). A backend other than CUDA is named:
    ``VRAM (MPS): 3GB/21GB (14%)``."""
    ram = snapshot.ram
    parts = [f"RAM: {_usage(ram.used_bytes, ram.total_bytes, ram.percent)}"]
    if not snapshot.gpus:
        parts.append("VRAM: n/a")
    elif len(snapshot.gpus) == 1:
        gpu = snapshot.gpus[0]
        parts.append(f"VRAM{_backend_suffix(gpu)}: {_usage(gpu.used_bytes, gpu.total_bytes, gpu.percent)}")
    else:
        parts.extend(
            f"VRAM{gpu.index}{_backend_suffix(gpu)}: {_usage(gpu.used_bytes, gpu.total_bytes, gpu.percent)}"
            for gpu in snapshot.gpus
        )
    if snapshot.dynamic_vram is not None:
        parts.append(dynamic_vram_label(snapshot))
    return " | ".join(parts)


def dynamic_vram_label(snapshot: MemorySnapshot) -> str:
    """``dynamic VRAM on, headroom 1GB``: ComfyUI's allocator fills VRAM by design, so the figure above is not
    pressure; ``n/a`` for a headroom comfy-aimdo did not report."""
    dynamic = snapshot.dynamic_vram
    if dynamic is None:
        return "dynamic VRAM off"
    return f"dynamic VRAM on, headroom {format_gb(dynamic.headroom_bytes)}"


def _dynamic_vram_line(snapshot: MemorySnapshot, dynamic: DynamicVramReading) -> str:
    pressure = snapshot.vram_pressure_percent
    return (
        f"Dynamic VRAM (comfy-aimdo) on GPU {dynamic.device_index}: headroom {format_gb(dynamic.headroom_bytes)}; "
        f"it holds {format_gb(dynamic.resident_bytes)}, {format_gb(dynamic.evictable_bytes)} of it evictable on "
        f"demand; the VRAM threshold reads what cannot be given back: "
        f"{'n/a' if pressure is None else f'{pressure:.0f}%'}"
    )


def _ram_lines(ram: RamReading) -> list[str]:
    if ram.source is RamSource.HOST:
        origin = "host RAM"
    else:
        origin = (
            f"container limit from {ram.source.value} ({ram.cgroup_path}); host RAM {format_gb(ram.host_total_bytes)}"
        )
    return [
        f"RAM: {_usage(ram.used_bytes, ram.total_bytes, ram.percent)} used, "
        f"{format_gb(ram.available_bytes)} available — {origin}",
        f"  this process: {format_size(ram.process_rss_bytes)} resident",
    ]


def ram_reader_text(ram: RamReading, check: CoreRamCheck | None) -> str | None:
    """Which reading of the container's RAM is used, where ComfyUI has its own (``comfy.system_memory``)."""
    if check is None:
        return None
    beyond = f"more than {AGREEMENT_PERCENT:g}% ({check.disagreement})"
    if ram.reader is RamReader.COMFYUI:
        if check.disagreement is not None:
            return (
                "RAM read by ComfyUI's comfy.system_memory, the reading that leaves less available: it disagrees "
                f"with comfy_memhooks' {ram.source.value} reading by {beyond}"
            )
        return f"RAM read by ComfyUI's comfy.system_memory (it agrees with comfy_memhooks' {ram.source.value} reading)"
    if check.disagreement is not None:
        return f"RAM read by comfy_memhooks ({ram.source.value}): ComfyUI's comfy.system_memory disagrees by {beyond}"
    return f"RAM read by comfy_memhooks ({ram.source.value}): ComfyUI's comfy.system_memory sees no container limit"


def comfyui_lines(ram: RamReading, core_check: CoreRamCheck | None, release: PromptRelease | None) -> list[str]:
    """What ComfyUI's own memory management did beside comfy_memhooks: its RAM reader, its cache's release."""
    lines = []
    reader = ram_reader_text(ram, core_check)
    if reader is not None:
        lines.append(reader)
    if release is not None:
        lines.append(release.describe())
    return lines


def _gpu_line(gpu: GpuReading) -> str:
    line = (
        f"GPU {gpu.index} ({gpu.name or 'unknown'}): {_usage(gpu.used_bytes, gpu.total_bytes, gpu.percent)} used, "
        f"{format_gb(gpu.free_bytes)} free"
    )
    if gpu.torch_allocated_bytes is not None:
        line += (
            f"; torch in this process: {format_size(gpu.torch_allocated_bytes)} allocated, "
            f"{format_size(gpu.torch_reserved_bytes)} reserved"
        )
    if gpu.note is not None:
        line += f"\n  ({gpu.note})"
    return line


def process_label(process: GpuProcess) -> str:
    """A GPU process's name as people read it: ``python3 (this process)``, ``(outside this container)``."""
    name = process.name or "?"
    if process.is_current_process:
        return f"{name} (this process)"
    if not process.in_this_container:
        return "(outside this container)"
    return name


def _process_line(process: GpuProcess) -> str:
    gpu = "a GPU not visible to CUDA here" if process.gpu_index is None else f"GPU {process.gpu_index}"
    return f"  pid {process.pid} {process_label(process)} on {gpu}: {format_size(process.used_bytes)}"


def format_freed(value: int | None) -> str:
    """What a cleanup did to one figure, freed counted positive: ``freed 12MB``, ``grew 3MB``, ``n/a``."""
    if value is None:
        return "n/a"
    if value < 0:
        return f"grew {format_size(-value)}"
    return f"freed {format_size(value)}"


def action_summary(action: ActionReport) -> str:
    """What one action did and freed: ``collected 12 objects (RAM freed 2MB, VRAM n/a, 3 ms)``; a skipped action
    says why and no figures, since it did nothing to measure."""
    if action.skipped_reason is not None:
        return f"skipped: {action.skipped_reason}"
    what = f"FAILED: {action.error}" if action.error is not None else action.detail or "done"
    return (
        f"{what} (RAM {format_freed(action.ram_freed_bytes)}, VRAM {format_freed(action.vram_freed_bytes)}, "
        f"{action.duration_seconds * 1000:.0f} ms)"
    )


def _action_line(action: ActionReport) -> str:
    escalation = " [escalation]" if action.escalation else ""
    return f"  {action.name}{escalation}: {action_summary(action)}"


def record_lines(record: OptimizationRecord) -> list[str]:
    trigger = record.trigger
    where = f" at {trigger.node_class}#{trigger.node_id}" if trigger.node_class else ""
    phase = f" ({trigger.phase})" if trigger.phase else ""
    pressure = ", pressure" if trigger.pressure else ""
    escalated = " (escalated)" if record.escalated else ""
    lines = [
        f"Optimization #{record.sequence}: {record.cleanup_name}{escalated}, {trigger.kind.value}{pressure}{where}"
        f"{phase} — {trigger.reason}",
        f"  freed {record.freed_gib:.2f}GB in all (RAM {format_freed(record.ram_freed_bytes)}, "
        f"VRAM {format_freed(record.vram_freed_bytes)}) in {record.duration_seconds * 1000:.0f} ms; each action:",
    ]
    lines.extend(_action_line(action) for action in record.actions)
    return lines


HEAVIEST_SHOWN = 5


def ram_peak_text(node: NodeProfile) -> str:
    """``+1.37GB``; ``≥ +600MB (sampled)`` for a peak that is the highest reading taken while the node ran (a
    lower bound: a spike between readings is missed); ``≤ +600MB (container)`` for one read from the container's
    counter (an upper bound: it counts page cache and other processes too)."""
    size = f"+{format_size(node.ram_peak_bytes)}"
    if node.ram_peak_bytes is None:
        return size
    if node.ram_peak_method is PeakMethod.SAMPLED:
        return f"≥ {size} (sampled)"
    if node.ram_peak_method is PeakMethod.CGROUP:
        return f"≤ {size} (container)"
    return size


def heaviest_node_line(node: NodeProfile) -> str:
    """``VAEDecode #8: RAM peak +1.37GB (left +0MB), VRAM peak +120MB, 2.10 s``: what the node needed while it
    ran, beside what it left behind."""
    return (
        f"  {node.node_class} #{node.node_id}: RAM peak {ram_peak_text(node)} "
        f"(left +{format_size(node.ram_left_bytes)}), VRAM peak +{format_size(node.vram_peak_bytes)}, "
        f"{node.duration_seconds:.2f} s"
    )


def heaviest_node_lines(profile: PromptProfile, limit: int = HEAVIEST_SHOWN) -> list[str]:
    """The prompt's nodes that needed the most memory while they ran so far, each with its RAM peak, what it left
    behind, its VRAM peak and its time."""
    state = "so far" if not profile.finished else "(finished)"
    heaviest = profile.heaviest(limit)
    if not heaviest:
        return [f"Heaviest nodes of prompt {profile.prompt_id} {state}: none needed memory ({len(profile.nodes)} ran)"]
    lines = [f"Heaviest nodes of prompt {profile.prompt_id} {state}, of {len(profile.nodes)}:"]
    lines.extend(heaviest_node_line(node) for node in heaviest)
    return lines


def detailed_report(
    snapshot: MemorySnapshot,
    record: OptimizationRecord | None = None,
    not_done: str | None = None,
    profile: PromptProfile | None = None,
    *,
    core_check: CoreRamCheck | None = None,
    release: PromptRelease | None = None,
) -> str:
    """The full breakdown: RAM and its source, each GPU, torch's share, GPU processes, what was done (``record``)
    or why nothing was (``not_done``), the heaviest nodes of the prompt's ``profile``, and inside ComfyUI what its
    own RAM reading (``core_check``) and its cache's release in the latest prompt (``release``) say."""
    lines = _ram_lines(snapshot.ram)
    if snapshot.gpus:
        lines.extend(_gpu_line(gpu) for gpu in snapshot.gpus)
        source = snapshot.gpu_source.value if snapshot.gpu_source else "n/a"
        backend = snapshot.gpu_backend
        lines.append(f"  (GPU figures from {source}, backend {backend.label if backend else 'n/a'})")
        if snapshot.dynamic_vram is not None:
            lines.append(_dynamic_vram_line(snapshot, snapshot.dynamic_vram))
    else:
        lines.append(f"VRAM: n/a — {snapshot.gpu_unavailable_reason}")
    if snapshot.processes is not None:
        lines.append(f"GPU processes: {len(snapshot.processes)}")
        lines.extend(_process_line(process) for process in snapshot.processes)
    if record is not None:
        lines.extend(record_lines(record))
    elif not_done is not None:
        lines.append(f"No optimization: {not_done}")
    if profile is not None:
        lines.extend(heaviest_node_lines(profile))
    lines.extend(comfyui_lines(snapshot.ram, core_check, release))
    return "\n".join(lines)
