"""On a machine with a real NVIDIA GPU: NVML, torch's cache and the process list, measured for real.

Skipped where there is no CUDA device (CI has none); run by hand on a GPU machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.history import Trigger, TriggerKind
from comfy_memhooks.engine.modes import Mode
from comfy_memhooks.engine.pressure import Thresholds
from comfy_memhooks.engine.report import status_line
from comfy_memhooks.engine.request import CleanupRequest
from comfy_memhooks.hook import patch as hook_patch
from comfy_memhooks.probe.gpu import GpuProbe
from comfy_memhooks.probe.memory import MemoryProbe
from comfy_memhooks.probe.nvml import Nvml
from comfy_memhooks.probe.readings import GpuSource
from comfy_memhooks.triggers.settings import SettingsStore
from tests.hook_support import chain_prompt, hooked_runtime
from tests.standin_executor import StandInNode, make_execution_module

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ROOT = Path(__file__).resolve().parents[2]
GIB = 1024**3


def test_nvml_reads_every_gpu_and_agrees_with_cuda() -> None:
    torch.cuda.init()
    snapshot = MemoryProbe().snapshot(include_processes=True)
    assert snapshot.gpu_source is GpuSource.NVML
    assert len(snapshot.gpus) == torch.cuda.device_count()
    for gpu in snapshot.gpus:
        free, total = torch.cuda.mem_get_info(gpu.index)
        # NVML counts memory the driver keeps for itself; CUDA does not: they differ by well under 1%.
        assert gpu.total_bytes is not None and abs(gpu.total_bytes - total) < 0.01 * total
        assert gpu.name == torch.cuda.get_device_name(gpu.index)
        assert abs((gpu.free_bytes or 0) - free) < 0.01 * total
    assert "VRAM" in status_line(snapshot) and "n/a" not in status_line(snapshot)


def test_empty_cache_returns_torchs_cached_blocks_and_the_engine_measures_it() -> None:
    engine = Engine()
    block = torch.empty(4 * GIB, dtype=torch.uint8, device="cuda:0")
    del block  # freed to torch's cache: still reserved, still used for NVML
    before = engine.snapshot(include_processes=True)
    assert (before.gpus[0].torch_reserved_bytes or 0) >= 4 * GIB
    assert (before.gpus[0].torch_allocated_bytes or 0) < GIB
    own = [p for p in before.processes or () if p.is_current_process]
    outcome = engine.run(
        CleanupRequest(trigger=Trigger(kind=TriggerKind.MANUAL, reason="gpu test"), mode=Mode.CONSERVATIVE)
    )
    assert outcome.record is not None
    report = next(a for a in outcome.record.actions if a.name == "cuda_empty_cache")
    assert report.skipped_reason is None and report.error is None
    assert (report.vram_freed_bytes or 0) >= 3.5 * GIB
    assert (outcome.record.vram_freed_bytes or 0) >= 3.5 * GIB
    assert (outcome.snapshot.gpus[0].torch_reserved_bytes or 0) < GIB
    # NVML lists this process, by its own pid here (no separate pid namespace), holding the 4 GiB block.
    assert len(own) == 1 and (own[0].used_bytes or 0) >= 4 * GIB and own[0].in_this_container


def test_balanced_runs_every_cuda_action_without_error() -> None:
    torch.ones(1, device="cuda:0")
    outcome = Engine().run(
        CleanupRequest(
            trigger=Trigger(kind=TriggerKind.MANUAL, reason="gpu test"),
            mode=Mode.BALANCED,
            thresholds=Thresholds(vram_percent=85.0),
        )
    )
    assert outcome.record is not None
    reports = {a.name: a for a in outcome.record.actions}
    assert reports["cuda_empty_cache"].skipped_reason is None
    assert reports["cuda_ipc_collect"].skipped_reason is None
    assert all(a.error is None for a in reports.values())


def test_torch_answers_for_vram_when_nvml_is_missing() -> None:
    torch.ones(1, device="cuda:0")

    def missing() -> object:
        raise ImportError("pynvml")

    readings, source, _ = GpuProbe(nvml=Nvml(loader=missing)).read()  # type: ignore[arg-type]
    assert source is GpuSource.TORCH
    assert readings[0].total_bytes == torch.cuda.mem_get_info(0)[1]


def _status_in_subprocess(visible: str) -> dict[str, object]:
    script = (
        "import json; from comfy_memhooks.probe.memory import MemoryProbe; "
        "from comfy_memhooks.panel.payloads import snapshot_json; "
        "print(json.dumps(snapshot_json(MemoryProbe().snapshot())))"
    )
    output = subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "CUDA_VISIBLE_DEVICES": visible,
        },
    ).stdout
    result: dict[str, object] = json.loads(output)
    return result


def test_cuda_visible_devices_by_uuid_and_empty() -> None:
    uuid = MemoryProbe().snapshot().gpus[0].uuid
    assert uuid is not None
    by_uuid = _status_in_subprocess(uuid[:12])
    assert [g["uuid"] for g in by_uuid["gpus"]] == [uuid]  # type: ignore[index, union-attr]
    hidden = _status_in_subprocess("")
    assert hidden["gpus"] == [] and hidden["vram_percent"] is None


def test_a_real_cuda_out_of_memory_in_a_heavy_node_is_rescued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A "model" fills most of the GPU; the face swap then runs out of VRAM for real. The rescue's Aggressive
    unloads the model through ComfyUI's unload_all_models, and the second run gets its memory."""
    free, _ = torch.cuda.mem_get_info(0)
    held: dict[str, Any] = {"model": torch.empty(int(free * 0.6), dtype=torch.uint8, device="cuda:0")}
    comfy = types.ModuleType("comfy.model_management")

    def unload_all_models() -> None:
        held.pop("model", None)

    comfy.unload_all_models = unload_all_models  # type: ignore[attr-defined]
    comfy.soft_empty_cache = lambda force=False: torch.cuda.empty_cache()  # type: ignore[attr-defined]
    comfy.free_memory = lambda memory_required, device, keep_loaded=(): []  # type: ignore[attr-defined]
    comfy.OOM_EXCEPTION = torch.cuda.OutOfMemoryError  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy.model_management", comfy)
    monkeypatch.setattr(hook_patch, "_registry", hook_patch._Registry())
    attempts: list[str] = []

    def swap(x: int) -> int:
        try:
            frames = torch.empty(int(free * 0.6), dtype=torch.uint8, device="cuda:0")
        except torch.cuda.OutOfMemoryError:
            attempts.append("out of memory")
            raise
        attempts.append("ran")
        del frames
        return x + 1

    nodes = {
        "Const": StandInNode(lambda x: x),
        "ReActorFaceSwap": StandInNode(swap),
        "Double": StandInNode(lambda x: x * 2),
    }
    module = make_execution_module("async11", nodes)
    store = SettingsStore(tmp_path / "comfy_memhooks.json")
    store.load()
    engine = Engine()
    hooked_runtime(module, engine, store, watch=True)
    try:
        executor = module.PromptExecutor()
        prompt, order = chain_prompt("Const", "ReActorFaceSwap", "Double", first_input=20)
        executor.execute(prompt, "gpu-prompt", {}, order)
    finally:
        current_runtime().uninstall()
    assert attempts == ["out of memory", "ran"]
    assert executor.success and executor.caches.outputs.get("3") == 42
    rescue = next(r for r in engine.history.records() if r.trigger.phase == "rescue")
    assert rescue.mode is Mode.AGGRESSIVE and "the second run succeeded" in rescue.trigger.reason
    assert (rescue.vram_freed_bytes or 0) >= 0.5 * free  # the unloaded "model" left the GPU
