"""Shared fixtures: engines built on real probes with a fake NVML where the machine has no GPU."""

from __future__ import annotations

import signal
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from comfy_memhooks import hook
from comfy_memhooks.comfy.runtime import Runtime, use_runtime
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.failures import failure_registry
from comfy_memhooks.hook import patch as hook_patch
from comfy_memhooks.probe.gpu import GpuProbe
from comfy_memhooks.probe.memory import MemoryProbe
from comfy_memhooks.probe.nvml import Nvml
from comfy_memhooks.triggers.learned import LearnedPeaks
from comfy_memhooks.triggers.learned_file import LearnedFile
from comfy_memhooks.triggers.settings import SettingsStore
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
def make_runtime(
    make_engine: Callable[..., Engine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Runtime]]:
    """Builds the test's runtime and makes it the process's (what the node uses): an engine that sees no GPU unless
    given ``gpus``, settings and learned peaks in the test's folder, the watchdog ticked by hand; whatever it
    installed is taken out afterwards."""
    made: list[Runtime] = []

    def build(gpus: list[FakeGpu] | None = None, **parts: object) -> Runtime:
        runtime = Runtime(
            engine=parts.pop("engine", None) or make_engine(gpus),  # type: ignore[arg-type]
            settings=parts.pop("settings", None) or SettingsStore(tmp_path / "comfy_memhooks.json"),  # type: ignore[arg-type]
            learned=LearnedFile(tmp_path / "learned.json", LearnedPeaks()),
            watch=False,
            **parts,  # type: ignore[arg-type]
        )
        made.append(runtime)
        use_runtime(runtime)
        return runtime

    yield build
    for runtime in made:
        runtime.stop()


def runtime_on(engine: Engine) -> Runtime:
    """A runtime on ``engine`` made the process's (what the node uses); the test's folder keeps its settings, and
    :func:`fresh_process_state` stops it afterwards."""
    runtime = Runtime(engine=engine, watch=False)
    use_runtime(runtime)
    return runtime


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    """The test's runtime, current for its duration (see :func:`make_runtime`)."""
    return make_runtime()


@pytest.fixture
def shared_engine(make_runtime: Callable[..., Runtime]) -> Callable[..., Engine]:
    """Makes a runtime on a fresh engine the process's (what the node uses) and returns the engine."""

    def install(gpus: list[FakeGpu] | None = None) -> Engine:
        return make_runtime(gpus).engine

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


@pytest.fixture(autouse=True)
def fresh_process_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts from a fresh process, as far as comfy_memhooks can tell: no runtime yet (one made on first
    use keeps its settings and learned peaks in the test's folder, never the user's home), no hook installed, a hook
    failure counter of its own. Afterwards the test's runtime is stopped and its hook taken out."""
    monkeypatch.setenv("COMFY_MEMHOOKS_SETTINGS", str(tmp_path / "comfy_memhooks.json"))
    monkeypatch.setattr(hook_patch, "_registry", hook_patch._Registry())
    for _part, failures in failure_registry.items():  # every part's counter reads zero, each kind unlogged
        monkeypatch.setattr(failures, "count", 0)
        monkeypatch.setattr(failures, "last_error", None)
        monkeypatch.setattr(failures, "_logged", set())
    fresh_hook_failures(monkeypatch)
    previous = use_runtime(None)
    yield
    left = use_runtime(previous)
    if left is not None:
        left.stop()
    hook.uninstall()
