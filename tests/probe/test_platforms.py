"""The platform matrix on this Linux machine: Linux (container and host, glibc and musl), Windows, macOS with MPS,
NVIDIA, AMD ROCm, Intel XPU and Jetson, each through stand-in torch backends, C libraries and ``sys.platform``.

For each: the status line, the detailed report, every mode's action list (what ran, what was skipped and why) and
the panel's status payload.
"""

from __future__ import annotations

import os
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.engine import heap
from comfy_memhooks.engine.actions import MODE_ACTIONS, NOT_IN_COMFYUI
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import Trigger, TriggerKind
from comfy_memhooks.engine.modes import MANUAL_MODES, Mode
from comfy_memhooks.engine.pressure import Thresholds
from comfy_memhooks.engine.report import detailed_report, status_line
from comfy_memhooks.engine.request import CleanupRequest, Urgency
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.panel.payloads import serialize
from comfy_memhooks.probe.amdsmi import AmdSmi
from comfy_memhooks.probe.cgroup import CgroupReader
from comfy_memhooks.probe.gpu import JETSON_NOTE, GpuProbe
from comfy_memhooks.probe.memory import MemoryProbe
from comfy_memhooks.probe.nvml import Nvml
from comfy_memhooks.probe.ram import RamProbe
from comfy_memhooks.probe.readings import RamSource
from comfy_memhooks.triggers.settings import SettingsStore
from tests import standin_platforms as standin
from tests.fake_nvml import FakeGpu, make_fake_pynvml
from tests.panel.panel_support import RecordingPublisher

GIB = standin.GIB
LIMIT = 4 * GIB
MANUAL = Trigger(kind=TriggerKind.MANUAL, reason="platform matrix")
# Under every RAM figure, over the GPUs' 25%: ComfyUI is asked to free VRAM on the platform's own device.
THRESHOLDS = Thresholds(ram_percent=100, vram_percent=20, cooldown_seconds=0)
NVML_NOT_SUPPORTED = 3


@dataclass(frozen=True)
class Platform:
    """One machine: what it is, and what comfy_memhooks must say and do there."""

    id: str
    sys_platform: str
    torch: str | None  # the stand-in torch's backend; None: torch not loaded
    nvml: str | None  # "gpu", "jetson" (no memory figures), None (absent)
    libraries: dict[str | None, standin.StandinLibrary]
    vram: str  # the status line's VRAM part
    report: tuple[str, ...]  # lines the detailed report holds
    backend: str | None  # the panel payload's gpu_backend
    empty_cache: str  # cuda_empty_cache's detail, or "skipped: <reason>"
    ipc_collect: str
    heap: str
    device: str | None  # the device ComfyUI's free_memory is asked about
    container: bool = False
    comfy: bool = True
    emptied: tuple[str, ...] = field(default=())  # the stand-in torch's calls that empty a cache
    amdsmi: bool = False  # a stand-in ``amdsmi`` is installed (ROCm's device-wide figures and processes)


NVIDIA_GPU = "GPU 0 (NVIDIA Fake): 6GB/24GB (25%) used, 18GB free; torch in this process: 4.00GB allocated"
TRIM = "malloc_trim(0): heap pages returned to the system"
HEAPMIN = "ucrtbase _heapmin(): free heap returned to the system; mimalloc"
CUDA_EMPTIED = "released torch's cached, unused CUDA blocks"
CUDA_IPC = "released CUDA memory shared with exited processes"

PLATFORMS = [
    Platform(
        "linux-container-nvidia",
        "linux",
        "cuda",
        "gpu",
        standin.glibc(),
        "VRAM: 6GB/24GB (25%)",
        (NVIDIA_GPU, "(GPU figures from nvml, backend CUDA)", "container limit from cgroup v2"),
        "cuda",
        CUDA_EMPTIED,
        CUDA_IPC,
        TRIM,
        "cuda:0",
        container=True,
        emptied=("cuda.empty_cache", "cuda.ipc_collect"),
    ),
    Platform(
        "linux-host-rocm",
        "linux",
        "rocm",
        None,
        standin.glibc(),
        "VRAM (ROCm): 6GB/24GB (25%)",
        ("GPU 0 (AMD Radeon RX 7900 XTX): 6GB/24GB (25%)", "(GPU figures from torch, backend ROCm)", "host RAM"),
        "rocm",
        "released torch's cached, unused ROCm (HIP) blocks through torch.cuda",
        CUDA_IPC,
        TRIM,
        "cuda:0",
        emptied=("cuda.empty_cache", "cuda.ipc_collect"),
    ),
    Platform(
        "linux-host-rocm-amdsmi",
        "linux",
        "rocm",
        None,
        standin.glibc(),
        "VRAM (ROCm): 6GB/24GB (25%)",
        (
            "GPU 0 (AMD Radeon RX 7900 XTX): 6GB/24GB (25%)",
            "(GPU figures from amdsmi, backend ROCm)",
            "(this process)",
        ),
        "rocm",
        "released torch's cached, unused ROCm (HIP) blocks through torch.cuda",
        CUDA_IPC,
        TRIM,
        "cuda:0",
        emptied=("cuda.empty_cache", "cuda.ipc_collect"),
        amdsmi=True,
    ),
    Platform(
        "linux-host-xpu",
        "linux",
        "xpu",
        None,
        standin.glibc(),
        "VRAM (XPU): 6GB/24GB (25%)",
        ("GPU 0 (Intel(R) Arc(TM) A770 Graphics): 6GB/24GB (25%)", "(GPU figures from torch, backend XPU)"),
        "xpu",
        "torch.xpu.empty_cache(): released XPU's cached, unused blocks",
        "skipped: ipc_collect is CUDA's and ROCm's; this process uses XPU",
        TRIM,
        "xpu:0",
        emptied=("xpu.empty_cache",),
    ),
    Platform(
        "jetson",
        "linux",
        "cuda",
        "jetson",
        standin.glibc(),
        "VRAM: 6GB/24GB (25%)",
        ("GPU 0 (NVIDIA Fake): 6GB/24GB (25%)", f"({JETSON_NOTE})", "(GPU figures from nvml, backend CUDA)"),
        "cuda",
        CUDA_EMPTIED,
        CUDA_IPC,
        TRIM,
        "cuda:0",
        emptied=("cuda.empty_cache", "cuda.ipc_collect"),
    ),
    Platform(
        "alpine-musl-cpu",
        "linux",
        None,
        None,
        standin.musl(),
        "VRAM: n/a",
        ("VRAM: n/a — nvidia-ml-py is not installed; torch is not loaded in this process",),
        None,
        "skipped: torch is not loaded in this process",
        "skipped: torch is not loaded in this process",
        f"skipped: {heap.NO_MALLOC_TRIM}",
        None,
        comfy=False,
    ),
    Platform(
        "windows-nvidia",
        "win32",
        "cuda",
        "gpu",
        standin.windows_ucrt(),
        "VRAM: 6GB/24GB (25%)",
        (NVIDIA_GPU, "host RAM"),
        "cuda",
        CUDA_EMPTIED,
        CUDA_IPC,
        HEAPMIN,
        "cuda:0",
        container=True,
        emptied=("cuda.empty_cache", "cuda.ipc_collect"),
    ),
    Platform(
        "macos-mps",
        "darwin",
        "mps",
        None,
        standin.macos_libsystem(),
        "VRAM (MPS): 6GB/24GB (25%)",
        (
            "GPU 0 (Apple MPS (unified memory)): 6GB/24GB (25%) used, 18GB free; torch in this process: "
            "4.00GB allocated, 6.00GB reserved",
            "unified memory: RAM and VRAM are one pool",
            "(GPU figures from torch, backend MPS)",
            "host RAM",
        ),
        "mps",
        "torch.mps.empty_cache(): released MPS's cached, unused blocks",
        "skipped: ipc_collect is CUDA's and ROCm's; this process uses MPS",
        "malloc_zone_pressure_relief: 64MB returned to the system",
        "mps:0",
        container=True,
        emptied=("mps.empty_cache",),
    ),
]


def _nvml(kind: str | None) -> Nvml:
    if kind is None:

        def missing() -> types.ModuleType:
            raise ImportError("pynvml")

        return Nvml(loader=missing)
    gpu = FakeGpu("NVIDIA Fake", "GPU-1", "00000000:01:00.0", total=24 * GIB, used=6 * GIB)
    failing = {"nvmlDeviceGetMemoryInfo": NVML_NOT_SUPPORTED} if kind == "jetson" else None
    fake = make_fake_pynvml([gpu], failing=failing)
    return Nvml(loader=lambda: fake)


def _ram_probe(tmp_path: Path, container: bool) -> RamProbe:
    """A RAM probe that sees a 4 GiB cgroup v2 limit and a 1 GiB ``/proc/meminfo`` where it looks for them."""
    if not container:
        return RamProbe()
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "memory.max").write_text(f"{LIMIT}\n")
    (root / "memory.current").write_text(f"{GIB}\n")
    (root / "memory.stat").write_text("inactive_file 0\n")
    (tmp_path / "self_cgroup").write_text("0::/\n")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal: 1048576 kB\nMemAvailable: 524288 kB\n")
    return RamProbe(CgroupReader(root=root, proc_self_cgroup=tmp_path / "self_cgroup"), procfs=proc)


@pytest.fixture(params=PLATFORMS, ids=[platform.id for platform in PLATFORMS])
def platform(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    chosen: Platform = request.param
    monkeypatch.setattr(sys, "platform", chosen.sys_platform)
    monkeypatch.setattr(heap, "library_loader", standin.standin_loader(chosen.libraries))
    monkeypatch.setitem(sys.modules, "torch", None if chosen.torch is None else standin.standin_torch(chosen.torch))
    yield chosen


def _amdsmi(installed: bool) -> AmdSmi:
    if not installed:

        def missing() -> types.ModuleType:
            raise ImportError("amdsmi")

        return AmdSmi(loader=missing)
    gpu = ("AMD Radeon RX 7900 XTX", 24 * GIB, 6 * GIB)
    fake = standin.standin_amdsmi([gpu], {0: [standin.amd_process(os.getpid(), 4 * GIB, "python3 main.py --x")]})
    return AmdSmi(loader=lambda: fake)


@pytest.fixture
def engine(platform: Platform, tmp_path: Path) -> Engine:
    gpu = GpuProbe(nvml=_nvml(platform.nvml), environ={}, amdsmi=_amdsmi(platform.amdsmi))
    return Engine(probe=MemoryProbe(ram=_ram_probe(tmp_path, platform.container), gpu=gpu))


def test_status_line(platform: Platform, engine: Engine) -> None:
    line = status_line(engine.snapshot())
    assert re.fullmatch(r"RAM: [\d.]+GB/[\d.]+GB \(\d+%\) \| (.*)", line), line
    assert line.endswith(f"| {platform.vram}")


def test_ram_is_the_containers_on_linux_and_psutils_elsewhere(platform: Platform, engine: Engine) -> None:
    ram = engine.snapshot().ram
    if platform.sys_platform == "linux":
        if platform.container:
            assert (ram.source, ram.total_bytes, ram.used_bytes) == (RamSource.CGROUP_V2, LIMIT, GIB)
        else:
            assert ram.source is RamSource.HOST  # this machine's own cgroup sets no limit below its RAM
    else:
        # No /proc, no cgroups: psutil's figures for the host, whatever lies where Linux keeps its files.
        assert ram.source is RamSource.HOST and ram.cgroup_path is None
        assert ram.total_bytes == psutil.virtual_memory().total
        assert ram.process_rss_bytes is not None and ram.process_rss_bytes > 0


def test_detailed_report(platform: Platform, engine: Engine) -> None:
    report = detailed_report(engine.snapshot(include_processes=True))
    for expected in platform.report:
        assert expected in report, f"{expected!r} not in:\n{report}"


def _expected_actions(platform: Platform, mode: Mode) -> list[tuple[str, str]]:
    comfy = {
        "comfy_soft_empty_cache": "comfy.model_management.soft_empty_cache()",
        "comfy_unload_all_models": "comfy.model_management.unload_all_models()",
        # 20% of 24 GiB is the most VRAM may hold: 19.2 GB must be free, on the platform's own device.
        "comfy_free_memory_to_threshold": f"{platform.device} at 25%: asked for 19.20 GB free, 1 model(s) unloaded",
        # RAM is read afresh: far under any threshold on this machine, so ComfyUI's cache is left alone.
        "comfy_cache_release": "skipped: RAM is under its",
    }
    if not platform.comfy:
        comfy = {name: f"skipped: {NOT_IN_COMFYUI}" for name in comfy}
    each = {
        "gc_collect": "collected",
        "gc_collect_until_stable": "collected",
        "cuda_empty_cache": platform.empty_cache,
        "cuda_ipc_collect": platform.ipc_collect,
        "malloc_trim": platform.heap,
        "release_reactor_caches": "skipped: ReActor is not loaded",
        **comfy,
    }
    return [(action.name, each[action.name]) for action in MODE_ACTIONS[mode]]


@pytest.mark.parametrize("mode", MANUAL_MODES, ids=[mode.value for mode in MANUAL_MODES])
def test_every_modes_actions(platform: Platform, engine: Engine, mode: Mode, request: pytest.FixtureRequest) -> None:
    if platform.comfy:
        request.getfixturevalue("comfy_model_management")
    outcome = engine.run(CleanupRequest(trigger=MANUAL, mode=mode, thresholds=THRESHOLDS, urgency=Urgency.ROUTINE))
    assert outcome.performed and outcome.record is not None
    done = [
        (action.name, f"skipped: {action.skipped_reason}" if action.skipped_reason else action.detail or "")
        for action in outcome.record.actions
    ]
    assert [name for name, _ in done] == [name for name, _ in _expected_actions(platform, mode)]
    for (name, text), (_, expected) in zip(done, _expected_actions(platform, mode), strict=True):
        assert text.startswith(expected), f"{name}: {text!r} does not start with {expected!r}"
    assert all(action.error is None for action in outcome.record.actions)
    torch = sys.modules.get("torch")
    if torch is not None:
        emptied = [call for call in torch.calls if call.endswith(("empty_cache", "ipc_collect"))]  # type: ignore[attr-defined]
        wanted = platform.emptied if mode is not Mode.CONSERVATIVE else platform.emptied[:1]
        assert sorted(set(emptied)) == sorted(wanted)


def test_panel_status_payload(platform: Platform, engine: Engine, tmp_path: Path) -> None:
    store = SettingsStore(tmp_path / "settings.json")
    store.load()
    panel = PanelBackend(
        engine, store, RecordingPublisher(), interval=lambda: 3600.0, pipeline=current_runtime().pipeline
    )
    payload = panel.status()
    serialize(payload)  # plain JSON, no NaN
    snapshot = payload["snapshot"]
    assert snapshot["gpu_backend"] == platform.backend
    assert [gpu["backend"] for gpu in snapshot["gpus"]] == ([platform.backend] if platform.backend else [])
    container = platform.container and platform.sys_platform == "linux"
    assert snapshot["ram"]["source"] == ("cgroup v2" if container else "host")
    assert snapshot["ram"]["limit_label"] == ("container limit" if container else "host RAM")
    if platform.backend is not None:
        assert snapshot["gpus"][0]["percent"] == pytest.approx(25.0)
        assert snapshot["vram_percent"] == pytest.approx(25.0)
    else:
        assert snapshot["gpus"] == [] and snapshot["vram_percent"] is None
