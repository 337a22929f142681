"""A probe that fails with an unexpected exception type costs its reading, never the hook, the node or the panel."""

from __future__ import annotations

import logging
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.hook import patch as hook_patch
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.probe.cgroup import CgroupReader
from comfy_memhooks.probe.gpu import GpuProbe
from comfy_memhooks.probe.memory import MemoryProbe
from comfy_memhooks.probe.nvml import Nvml
from comfy_memhooks.probe.ram import RamProbe
from comfy_memhooks.triggers.settings import SettingsStore
from tests.comfy.test_node import run
from tests.conftest import FakeClock, hide_torch, runtime_on
from tests.fake_nvml import make_fake_pynvml, two_gpus
from tests.hook_support import chain_prompt, hooked_runtime
from tests.panel.panel_support import RecordingPublisher, panel_app
from tests.standin_executor import StandInNode, make_execution_module


def _raises(error: BaseException) -> Callable[..., Any]:
    def function(*args: Any) -> Any:
        raise error

    function.__name__ = "nvmlDeviceGetMemoryInfo"
    return function


def _unicode_error() -> UnicodeDecodeError:
    return UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")


def _shadowing_pynvml() -> types.ModuleType:
    """An old ``pynvml`` that shadows nvidia-ml-py: no ``NVMLError``, and functions missing."""
    module = make_fake_pynvml(two_gpus())
    del module.NVMLError
    del module.nvmlDeviceGetComputeRunningProcesses
    module.nvmlDeviceGetMemoryInfo = _raises(AttributeError("'NoneType' object has no attribute 'contents'"))
    return module


def _faulty_probes(tmp_path: Path) -> list[tuple[str, MemoryProbe]]:
    """GPU probes failing with OSError, UnicodeDecodeError and AttributeError; a cgroup file of invalid UTF-8."""
    probes = []
    for name, error in (("OSError", OSError(5, "Input/output error")), ("UnicodeDecodeError", _unicode_error())):
        module = make_fake_pynvml(two_gpus())
        module.nvmlDeviceGetMemoryInfo = _raises(error)
        module.nvmlDeviceGetComputeRunningProcesses = _raises(error)
        probes.append((name, MemoryProbe(gpu=GpuProbe(nvml=Nvml(loader=lambda m=module: m), environ={}))))
    shadow = _shadowing_pynvml()
    probes.append(("shadowing pynvml", MemoryProbe(gpu=GpuProbe(nvml=Nvml(loader=lambda: shadow), environ={}))))
    cgroup_file = tmp_path / "cgroup"
    cgroup_file.write_bytes(b"0::/caf\xe9\n")  # a path saved in cp1252
    ram = RamProbe(cgroup_reader=CgroupReader(root=tmp_path, proc_self_cgroup=cgroup_file))
    probes.append(("cgroup file", MemoryProbe(ram=ram, gpu=GpuProbe(nvml=Nvml(loader=_no_nvml), environ={}))))
    return probes


def _no_nvml() -> types.ModuleType:
    raise ImportError("pynvml")


@pytest.fixture
def faulty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, MemoryProbe]]:
    hide_torch(monkeypatch)
    return _faulty_probes(tmp_path)


def test_a_failing_probe_gives_none_for_its_reading_and_logs_once(
    faulty: list[tuple[str, MemoryProbe]], caplog: pytest.LogCaptureFixture
) -> None:
    for name, probe in faulty:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                snapshot = probe.snapshot(include_processes=True)
                probe.usage()
        assert snapshot.ram.process_rss_bytes is not None, name  # RAM still read where only the GPU failed
        if name != "cgroup file":
            assert all(gpu.used_bytes is None for gpu in snapshot.gpus), name
        lines = [record.getMessage() for record in caplog.records]
        assert len(lines) == len(set(lines)), (name, lines)  # each kind once, however often it fails


def test_the_node_and_the_engine_go_on(faulty: list[tuple[str, MemoryProbe]], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, probe in faulty:
        engine = Engine(probe=probe, clock=FakeClock())
        runtime_on(engine)
        result = run(detailed_report=True, ram_threshold=1.0, enable_auto_cleanup=True, auto_optimize=True)
        assert result["result"][0].startswith("RAM: "), name
        assert result["result"][5] is True, name  # the cleanup ran on the RAM reading that worked


async def test_status_answers_and_counts_the_probe_failure(
    faulty: list[tuple[str, MemoryProbe]], tmp_path: Path, aiohttp_client: Any
) -> None:
    for name, probe in faulty:
        store = SettingsStore(tmp_path / f"{name}.json")
        store.load()
        backend = PanelBackend(
            Engine(probe=probe),
            store,
            RecordingPublisher(),
            interval=lambda: 3600.0,
            pipeline=current_runtime().pipeline,
        )
        backend.start()
        client = await aiohttp_client(panel_app(backend))
        for path in ("/memhooks/status", "/memhooks/processes"):
            response = await client.get(path)
            assert response.status == 200, (name, path, await response.text())
        data = await (await client.get("/memhooks/status")).json()
        if name != "cgroup file":  # an unreadable cgroup file means the host's figures, by design, not a failure
            assert data["errors"]["probe_failures"] > 0, name
            assert data["errors"]["last_probe_error"], name
        backend.close()


def test_the_hook_still_cleans_up(faulty: list[tuple[str, MemoryProbe]], tmp_path: Path) -> None:
    for name, probe in faulty:
        engine = Engine(probe=probe, clock=FakeClock())
        store = SettingsStore(tmp_path / f"{name}.json")
        store.load()
        store.update({"ram_threshold": 1, "cooldown_seconds": 0})
        nodes = {"Const": StandInNode(lambda x: x), "ReActorFaceSwap": StandInNode(lambda x: -x)}
        module = make_execution_module("async11", nodes)
        hooked_runtime(module, engine, store)
        prompt, order = chain_prompt("Const", "ReActorFaceSwap")
        executor = module.PromptExecutor()
        executor.execute(prompt, "prompt-1", {}, order)
        assert executor.success, name
        assert engine.history.total_recorded > 0, name  # the hook acted on the RAM reading that worked
        assert hook_patch.hook_failures.count == 0, name
        current_runtime().uninstall()
