"""Shared fixtures: engines built on real probes with a fake NVML where the machine has no GPU."""

from __future__ import annotations

import signal
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from comfy_memhooks.comfy import auto
from comfy_memhooks.engine import core as engine_module
from comfy_memhooks.engine import learned_file
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.engine.learned import LearnedPeaks
from comfy_memhooks.hook import patch as hook_patch
from comfy_memhooks.pipeline import node_pipeline
from comfy_memhooks.probe.gpu import GpuProbe
from comfy_memhooks.probe.memory import MemoryProbe
from comfy_memhooks.probe.nvml import Nvml
from tests.fake_nvml import FakeGpu, make_fake_pynvml
from tests.hook_support import fresh_hook_failures

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def ctrl_c_reaches_subprocesses() -> None:
    """Tests stop ``serve`` and ComfyUI with SIGINT, as Ctrl+C does; a shell that starts the tests in the
    background (``.ci/run &``) makes them ignore SIGINT, and children inherit an ignored signal across ``exec``.
    Taking SIGINT back in this process lets the children start with its default action."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def probe_with_gpus(gpus: list[FakeGpu] | None, environ: dict[str, str] | None = None) -> MemoryProbe:
    """A real RAM probe beside a GPU probe answering from a fake NVML (or from none, when ``gpus`` is None)."""
    if gpus is None:

        def missing() -> types.ModuleType:
            raise ImportError("pynvml")

        nvml = Nvml(loader=missing)
    else:
        fake = make_fake_pynvml(gpus)
        nvml = Nvml(loader=lambda: fake)
    return MemoryProbe(gpu=GpuProbe(nvml=nvml, environ=environ or {}))


def hide_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes this process look as if torch were not loaded, as on a machine without GPU.

    ``None`` in ``sys.modules`` makes a later ``import torch`` fail instead of loading a second copy.
    """
    monkeypatch.setitem(sys.modules, "torch", None)


@pytest.fixture
def make_engine(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Engine]:
    """Builds engines; without ``gpus`` the engine sees no GPU at all, even on a machine that has one."""

    def build(gpus: list[FakeGpu] | None = None) -> Engine:
        if gpus is None:
            hide_torch(monkeypatch)
        return Engine(probe=probe_with_gpus(gpus), clock=clock)

    return build


@pytest.fixture
def shared_engine(monkeypatch: pytest.MonkeyPatch, make_engine: Callable[..., Engine]) -> Callable[..., Engine]:
    """Installs a fresh engine as the process's one engine (what the node uses) for the test's duration."""

    def install(gpus: list[FakeGpu] | None = None) -> Engine:
        engine = make_engine(gpus)
        monkeypatch.setattr(engine_module, "_engine", engine)
        return engine

    return install


@pytest.fixture
def comfy_model_management(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """A stand-in ``comfy.model_management`` recording what was called, as ComfyUI's would be loaded."""
    module = types.ModuleType("comfy.model_management")
    module.calls = []  # type: ignore[attr-defined]

    def soft_empty_cache(force: bool = False) -> None:
        module.calls.append(("soft_empty_cache",))  # type: ignore[attr-defined]

    def free_memory(memory_required: int, device: object, keep_loaded: list[object] | None = None) -> list[object]:
        module.calls.append(("free_memory", memory_required, str(device)))  # type: ignore[attr-defined]
        return ["a model"]

    def unload_all_models() -> None:
        module.calls.append(("unload_all_models",))  # type: ignore[attr-defined]

    module.soft_empty_cache = soft_empty_cache  # type: ignore[attr-defined]
    module.free_memory = free_memory  # type: ignore[attr-defined]
    module.unload_all_models = unload_all_models  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy.model_management", module)
    yield module


@pytest.fixture
def fresh_hook_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A hook registry and failure counter of the test's own, and the hook and subscriber taken out afterwards."""
    monkeypatch.setattr(hook_patch, "_registry", hook_patch._Registry())
    fresh_hook_failures(monkeypatch)
    yield
    auto.uninstall()


@pytest.fixture(autouse=True)
def pipeline_steps_restored() -> Iterator[None]:
    """The per-node pipeline's steps as they were before the test: a step a test left in place affects no other."""
    start, end = dict(node_pipeline._start), dict(node_pipeline._end)
    yield
    with node_pipeline._lock:
        node_pipeline._start, node_pipeline._end = start, end
        node_pipeline._rebuild()


@pytest.fixture(autouse=True)
def learned_peaks_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process's learned peaks (predictive cleanup) live in the test's folder, never in the user's home."""
    monkeypatch.setattr(learned_file, "_file", learned_file.LearnedFile(tmp_path / "learned.json", LearnedPeaks()))
