"""Fault injection: each part comfy_memhooks leans on fails in turn, and ComfyUI's workflow never notices.

For every kind of fault below, the same workflow (a ReActor stand-in between ordinary nodes, default settings, so
the built-in subscriber cleans up after the heavy node) runs three times through the stand-in executor, in a
worker thread as ComfyUI runs it. Each run must give the same outputs as a run without the fault; the fault must
be logged once (one line however often it recurs) and counted in ``/memhooks/status``. The real parts are used
wherever this machine has them (psutil, ``/proc``, a cgroup tree in a temporary folder, the settings file, the
aiohttp routes); NVML and ``comfy.model_management`` are stand-ins following the real ones' names and errors.

A few faults are not failures of comfy_memhooks and have nothing to count (``comfy.model_management`` missing
outside ComfyUI, a receiver disconnecting mid-send, the settings file deleted while running): for those the
outputs, the log and what ``/memhooks/status`` says instead are checked.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import sys
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pynvml
import pytest
from pytest_aiohttp import AiohttpClient

from comfy_memhooks import signals
from comfy_memhooks.comfy.runtime import current_runtime
from comfy_memhooks.engine import actions
from comfy_memhooks.engine.core import Engine
from comfy_memhooks.failures import Failures, failure_registry
from comfy_memhooks.hook import patch as hook_patch
from comfy_memhooks.panel.backend import PanelBackend
from comfy_memhooks.probe.cgroup import CgroupReader
from comfy_memhooks.probe.gpu import GpuProbe
from comfy_memhooks.probe.memory import MemoryProbe
from comfy_memhooks.probe.nvml import Nvml
from comfy_memhooks.probe.ram import RamProbe
from comfy_memhooks.triggers.settings import SettingsStore
from tests.conftest import FakeClock, hide_torch, runtime_on
from tests.fake_nvml import make_fake_pynvml, nvml_error, two_gpus
from tests.hook_support import chain_prompt, hooked_runtime
from tests.panel.panel_support import RecordingPublisher, cgroup_v2_tree, panel_app
from tests.standin_executor import StandInNode, make_execution_module
from tests.standin_ram_cache import FakeRam, RAMPressureCache, install_memory_management

GIB = 1024**3
MIB = 1024**2
RUNS = 3
PROMPT = ("Const", "Double", "ReActorFaceSwap", "Double")
WEDGED_SECONDS = 30.0
GPU_DEADLINE_SECONDS = 0.25


@dataclass
class Rig:
    """Everything one run builds, exposed so a fault can break one part of it before the run."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    pynvml_module: types.ModuleType
    model_management: types.ModuleType
    cgroup_root: Path
    proc_self_cgroup: Path
    settings_path: Path
    publisher: RecordingPublisher = field(default_factory=RecordingPublisher)
    clock: FakeClock = field(default_factory=FakeClock)
    procfs: Path = Path("/proc")
    release: threading.Event = field(default_factory=threading.Event)
    receivers: list[tuple[Any, Callable[..., None]]] = field(default_factory=list)
    output_cache: Callable[[], Any] | None = None  # the executor's output cache (ComfyUI 0.33's, for some faults)

    def connect(self, signal: Any, receiver: Callable[..., None]) -> None:
        signal.connect(receiver, weak=False)
        self.receivers.append((signal, receiver))

    def close(self) -> None:
        self.release.set()
        for signal, receiver in self.receivers:
            signal.disconnect(receiver)


def _build_rig(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Rig:
    cgroup_root, proc_self_cgroup = cgroup_v2_tree(tmp, limit=3 * GIB, usage=GIB)
    settings_folder = tmp / "user"
    settings_folder.mkdir()
    model_management = types.ModuleType("comfy.model_management")
    model_management.soft_empty_cache = lambda force=False: None  # type: ignore[attr-defined]
    model_management.free_memory = lambda memory_required, device, keep_loaded=None: []  # type: ignore[attr-defined]
    model_management.unload_all_models = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy.model_management", model_management)
    hide_torch(monkeypatch)
    return Rig(
        tmp=tmp,
        monkeypatch=monkeypatch,
        pynvml_module=make_fake_pynvml(two_gpus()),
        model_management=model_management,
        cgroup_root=cgroup_root,
        proc_self_cgroup=proc_self_cgroup,
        settings_path=settings_folder / "comfy_memhooks.json",
    )


def _engine(rig: Rig) -> Engine:
    cgroup = CgroupReader(root=rig.cgroup_root, proc_self_cgroup=rig.proc_self_cgroup)
    ram = RamProbe(cgroup_reader=cgroup, procfs=rig.procfs)
    gpu = GpuProbe(nvml=Nvml(loader=lambda: rig.pynvml_module), environ={})
    probe = MemoryProbe(ram=ram, gpu=gpu, gpu_deadline_seconds=GPU_DEADLINE_SECONDS)
    return Engine(probe=probe, clock=rig.clock)


def _run_workflows(
    engine: Engine, store: SettingsStore, clock: FakeClock, output_cache: Callable[[], Any] | None = None
) -> tuple[list[dict[str, Any]], list[float]]:
    """Three runs, each far enough apart for the cooldown; the outputs of each, and the heavy node's durations."""
    nodes = {
        "Const": StandInNode(lambda x: x),
        "Double": StandInNode(lambda x: x * 2),
        "ReActorFaceSwap": StandInNode(lambda x: x + 1),
    }
    module = make_execution_module("async11", nodes)
    durations: list[float] = []

    def on_heavy_finished(sender: Any, **kwargs: Any) -> None:
        durations.append(kwargs["duration_seconds"])

    signals.heavy_node_finished.connect(on_heavy_finished, weak=False)
    outputs = []
    try:
        hooked_runtime(module, engine, store)
        prompt, order = chain_prompt(*PROMPT, first_input=5)
        for run in range(RUNS):
            executor = module.PromptExecutor()
            if output_cache is not None:
                executor.caches.outputs = output_cache()
            executor.execute(prompt, f"prompt-{run}", {}, order)
            assert executor.success, executor.failure
            outputs.append({node: executor.caches.outputs.get(node) for node in order})
            clock.advance(3600.0)  # past any cooldown: each run cleans up after the heavy node
    finally:
        signals.heavy_node_finished.disconnect(on_heavy_finished)
        current_runtime().uninstall()
    return outputs, durations


# The faults -------------------------------------------------------------------------------------------------------


def _nvml_raises(error: Callable[[], Exception]) -> Callable[[Rig], None]:
    def inject(rig: Rig) -> None:
        def failing(handle: Any) -> Any:
            raise error()

        failing.__name__ = "nvmlDeviceGetMemoryInfo"
        rig.pynvml_module.nvmlDeviceGetMemoryInfo = failing  # type: ignore[attr-defined]

    return inject


def _nvml_shadowed(rig: Rig) -> None:
    """An old ``pynvml`` package shadowing nvidia-ml-py: no ``NVMLError``, a function missing, another broken."""
    del rig.pynvml_module.NVMLError
    del rig.pynvml_module.nvmlDeviceGetComputeRunningProcesses
    _nvml_raises(lambda: AttributeError("'NoneType' object has no attribute 'contents'"))(rig)


def _nvml_wedged(rig: Rig) -> None:
    def wedged(handle: Any) -> Any:
        rig.release.wait(WEDGED_SECONDS)  # a driver call that does not come back
        raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)

    wedged.__name__ = "nvmlDeviceGetMemoryInfo"
    rig.pynvml_module.nvmlDeviceGetMemoryInfo = wedged  # type: ignore[attr-defined]


def _nvml_garbage(rig: Rig) -> None:
    def garbage(handle: Any) -> Any:
        return types.SimpleNamespace(total="24 GiB", free=None, used=object())

    garbage.__name__ = "nvmlDeviceGetMemoryInfo"
    rig.pynvml_module.nvmlDeviceGetMemoryInfo = garbage  # type: ignore[attr-defined]


def _nvml_device_count_garbage(rig: Rig) -> None:
    def count() -> Any:
        return "two"

    count.__name__ = "nvmlDeviceGetCount"
    rig.pynvml_module.nvmlDeviceGetCount = count  # type: ignore[attr-defined]


def _psutil_rss_fails(rig: Rig) -> None:
    """``/proc/self/statm`` unreadable and psutil refused: no RSS figure."""
    rig.monkeypatch.setattr(psutil.Process, "memory_info", _raise(psutil.AccessDenied(os.getpid())))
    rig.monkeypatch.setattr("comfy_memhooks.probe.ram.read_bytes", lambda path: None)


def _ram_probe_raises(rig: Rig) -> None:
    rig.monkeypatch.setattr(RamProbe, "read", _raise(OSError(errno.EIO, "Input/output error")))


def _cgroup_list_unreadable(rig: Rig) -> None:
    rig.proc_self_cgroup.write_bytes(b"0::/caf\xe9\n")  # a path saved in cp1252: not UTF-8


def _cgroup_usage_garbage(rig: Rig) -> None:
    (rig.cgroup_root / "memory.current").write_text("lots\n")


def _raise(error: BaseException) -> Callable[..., Any]:
    def raising(*args: Any, **kwargs: Any) -> Any:
        raise error

    return raising


def _gc_fails(rig: Rig) -> None:
    rig.monkeypatch.setattr(gc, "collect", _raise(RuntimeError("gc failed")))


def _model_management_missing(rig: Rig) -> None:
    rig.monkeypatch.setitem(sys.modules, "comfy.model_management", None)


def _soft_empty_cache_raises(rig: Rig) -> None:
    error = RuntimeError("CUDA error: an illegal memory access was encountered")
    rig.model_management.soft_empty_cache = _raise(error)  # type: ignore[attr-defined]


def _host_ram_unreadable(rig: Rig) -> None:
    """No container limit, ``/proc/meminfo`` unreadable, and psutil failing after start-up: host RAM unknown."""
    (rig.cgroup_root / "memory.max").write_text("max\n")
    rig.procfs = rig.tmp / "no-proc"
    real = psutil.virtual_memory
    calls = []

    def virtual_memory() -> Any:
        calls.append(1)
        if len(calls) > 1:  # the first is the probe's own start-up reading of the host's total
            raise OSError(errno.EIO, "Input/output error")
        return real()

    rig.monkeypatch.setattr(psutil, "virtual_memory", virtual_memory)


def _model_management_broken(rig: Rig) -> None:
    """A ``comfy.model_management`` whose every attribute raises, as a half-imported module can."""

    class Broken(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError(f"comfy.model_management.{name} is not ready")

    rig.monkeypatch.setitem(sys.modules, "comfy.model_management", Broken("comfy.model_management"))


def _malloc_trim_raises(rig: Rig) -> None:
    release = _raise(OSError(errno.ENOSYS, "malloc_trim failed"))
    rig.monkeypatch.setattr(actions, "find_heap_release", lambda: (release, None))


def _receiver_raises(name: str) -> Callable[[Rig], None]:
    def inject(rig: Rig) -> None:
        def faulty_receiver(sender: Any, **kwargs: Any) -> None:
            raise ValueError(f"a subscriber's bug on {name}")

        rig.connect(getattr(signals, name), faulty_receiver)

    return inject


def _receiver_sleeps(rig: Rig) -> None:
    rig.monkeypatch.setattr(signals, "SLOW_RECEIVER_SECONDS", 0.05)

    def sleepy_receiver(sender: Any, **kwargs: Any) -> None:
        time.sleep(0.1)

    rig.connect(signals.prompt_finished, sleepy_receiver)


def _receiver_disconnects_mid_send(rig: Rig) -> None:
    calls: list[str] = []

    def other(sender: Any, **kwargs: Any) -> None:
        calls.append("other")

    def leaving(sender: Any, **kwargs: Any) -> None:
        signals.node_finished.disconnect(leaving)
        signals.node_finished.disconnect(other)

    rig.connect(signals.node_finished, leaving)
    rig.connect(signals.node_finished, other)


def _settings_bytes(content: bytes) -> Callable[[Rig], None]:
    def inject(rig: Rig) -> None:
        rig.settings_path.write_bytes(content)

    return inject


def _settings_folder_read_only(rig: Rig) -> None:
    """A bad file that cannot be set aside: renaming inside the folder is refused, as in a read-only folder."""
    rig.settings_path.write_bytes(b'{"ram_threshold": 1e400}')
    real_replace = os.replace
    folder = rig.settings_path.parent

    def replace(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        if Path(source).parent == folder or Path(target).parent == folder:
            raise PermissionError(errno.EROFS, "Read-only file system", str(source))
        real_replace(source, target, *args, **kwargs)

    rig.monkeypatch.setattr(os, "replace", replace)


def _settings_unreadable(rig: Rig) -> None:
    rig.settings_path.mkdir()  # reading it fails with IsADirectoryError, as an unreadable file would fail


def _publisher_fails(rig: Rig) -> None:
    rig.monkeypatch.setattr(rig.publisher, "publish", _raise(ConnectionResetError("websocket send failed")))


def _ram_over_threshold(rig: Rig) -> None:
    """2.9 of the container's 3 GB in use: the cleanup after the heavy node asks ComfyUI's cache for RAM."""
    (rig.cgroup_root / "memory.current").write_text(f"{int(2.9 * GIB)}\n")


def _system_memory_raises(rig: Rig) -> None:
    """ComfyUI's own reader (``comfy.system_memory``, after 0.33) failing on every call, as on an unreadable file."""
    module = types.ModuleType("comfy.system_memory")
    for name in ("cgroup_memory_limit", "cgroup_memory_usage", "virtual_memory_total", "virtual_memory_available"):
        setattr(module, name, _raise(OSError(errno.EIO, "Input/output error")))
    rig.monkeypatch.setitem(sys.modules, "comfy.system_memory", module)
    install_memory_management(rig.monkeypatch)
    rig.output_cache = lambda: RAMPressureCache(FakeRam(available=GIB), MIB)
    _ram_over_threshold(rig)


class CacheFailingToEvict(RAMPressureCache):
    """0.33's RAM-pressure cache whose ``ram_release`` raises as soon as it has to evict (an entry it cannot size).
    ComfyUI's own release after every node, with the stand-in's headroom of 0, never has to."""

    def ram_release(self, target: int, free_active: bool = False, min_entry_size: int = 0) -> int:
        if self.ram.available < target:
            raise RuntimeError("the cache could not size an entry")
        return super().ram_release(target, free_active, min_entry_size)


def _cache_release_raises(rig: Rig) -> None:
    """comfy_memhooks' request reaches the cache's ``ram_release`` through the prompt's pass-through, and it raises."""
    install_memory_management(rig.monkeypatch)
    rig.output_cache = lambda: CacheFailingToEvict(FakeRam(available=GIB), MIB)
    _ram_over_threshold(rig)


def _extra_ram_release_raises(rig: Rig) -> None:
    module = install_memory_management(rig.monkeypatch)
    module.extra_ram_release = _raise(RuntimeError("extra_ram_release failed"))  # type: ignore[attr-defined]
    rig.output_cache = lambda: RAMPressureCache(FakeRam(available=GIB), MIB)
    _ram_over_threshold(rig)


def _no_fault(rig: Rig) -> None:
    return None


@dataclass(frozen=True)
class Fault:
    """One kind of fault; ``counted`` is the ``errors`` entry of ``/memhooks/status`` it must raise (or None), and
    ``latest`` what that entry's latest error must say, where the part that failed is not the only one it could be."""

    name: str
    inject: Callable[[Rig], None]
    counted: str | None
    logged: bool = True
    latest: str | None = None


FAULTS = (
    Fault("NVML raises NVMLError", _nvml_raises(lambda: nvml_error(pynvml.NVML_ERROR_UNKNOWN)), "probe_failures"),
    Fault("NVML raises OSError", _nvml_raises(lambda: OSError(errno.EIO, "Input/output error")), "probe_failures"),
    Fault(
        "NVML raises UnicodeDecodeError",
        _nvml_raises(lambda: UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")),
        "probe_failures",
    ),
    Fault("an old pynvml shadows nvidia-ml-py", _nvml_shadowed, "probe_failures"),
    Fault("an NVML call hangs", _nvml_wedged, "probe_failures"),
    Fault("NVML returns garbage", _nvml_garbage, "probe_failures"),
    Fault("NVML counts garbage", _nvml_device_count_garbage, "probe_failures"),
    Fault("the RAM probe raises OSError", _ram_probe_raises, "probe_failures"),
    Fault("this process's RSS is unreadable", _psutil_rss_fails, "probe_failures"),
    Fault("/proc/self/cgroup is not UTF-8", _cgroup_list_unreadable, "probe_failures"),
    Fault("the cgroup's usage is garbage", _cgroup_usage_garbage, "probe_failures"),
    Fault("gc.collect raises", _gc_fails, "action_failures"),
    Fault("comfy.model_management is missing", _model_management_missing, None, logged=False),
    Fault("comfy.model_management raises on every name", _model_management_broken, "action_failures"),
    Fault("soft_empty_cache raises", _soft_empty_cache_raises, "action_failures"),
    Fault("host RAM is unreadable", _host_ram_unreadable, "probe_failures"),
    Fault("releasing the heap raises", _malloc_trim_raises, "action_failures"),
    Fault("a node_started receiver raises", _receiver_raises("node_started"), "receiver_failures"),
    Fault("a node_finished receiver raises", _receiver_raises("node_finished"), "receiver_failures"),
    Fault("an optimization receiver raises", _receiver_raises("optimization_performed"), "receiver_failures"),
    Fault("a receiver sleeps", _receiver_sleeps, "receiver_failures"),
    Fault("a receiver disconnects mid-send", _receiver_disconnects_mid_send, None, logged=False),
    Fault("the settings file is not UTF-8", _settings_bytes(b'{"ram_threshold": "caf\xe9"}'), "settings_warning"),
    Fault("the settings file nests 100,000 deep", _settings_bytes(b"[" * 100_000), "settings_warning"),
    Fault("the settings folder is read-only", _settings_folder_read_only, "settings_warning"),
    Fault("the settings file is unreadable", _settings_unreadable, "settings_warning"),
    Fault("websocket sends fail", _publisher_fails, "panel_failures"),
    Fault(
        "comfy.system_memory raises",
        _system_memory_raises,
        "probe_failures",
        latest="reading its cgroup figures (OSError): OSError: [Errno 5] Input/output error",
    ),
    Fault(
        "the cache's ram_release raises through the pass-through",
        _cache_release_raises,
        "action_failures",
        latest="comfy_cache_release: RuntimeError: the cache could not size an entry",
    ),
    Fault(
        "extra_ram_release raises",
        _extra_ram_release_raises,
        "action_failures",
        latest="comfy_cache_release: RuntimeError: extra_ram_release failed",
    ),
)


@pytest.fixture(autouse=True)
def fresh_receiver_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Receivers' failures counted afresh, so each fault's receiver is logged and counted in its own test."""
    receiver_failures = Failures(signals.logger, "receiver {kind}; ComfyUI goes on")
    monkeypatch.setattr(signals, "receiver_failures", receiver_failures)
    monkeypatch.setattr(hook_patch, "receiver_failures", receiver_failures)
    monkeypatch.setitem(failure_registry._parts, "receiver", receiver_failures)  # what the status shows


@pytest.fixture(scope="module")
def expected_outputs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The outputs without any fault, on the same rig."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(hook_patch, "_registry", hook_patch._Registry())
        rig = _build_rig(tmp_path_factory.mktemp("no-fault"), monkeypatch)
        store = SettingsStore(rig.settings_path)
        store.load()
        outputs, _ = _run_workflows(_engine(rig), store, rig.clock)
    assert outputs[0] == {"1": 5, "2": 10, "3": 11, "4": 22}
    return outputs


def test_there_are_at_least_twenty_kinds() -> None:
    assert len({fault.name for fault in FAULTS}) == len(FAULTS) >= 20


@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
async def test_a_fault_changes_no_output_logs_once_and_is_counted(
    fault: Fault,
    expected_outputs: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    aiohttp_client: AiohttpClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = _build_rig(tmp_path, monkeypatch)
    try:
        with caplog.at_level(logging.WARNING, logger="comfy_memhooks"):
            fault.inject(rig)
            store = SettingsStore(rig.settings_path)
            store.load()
            engine = _engine(rig)
            pipeline = runtime_on(engine).pipeline  # the hook's, which the panel's metrics step goes into
            backend = PanelBackend(engine, store, rig.publisher, interval=lambda: 3600.0, pipeline=pipeline)
            backend.start()
            try:
                outputs, durations = await asyncio.to_thread(_run_workflows, engine, store, rig.clock, rig.output_cache)
                client = await aiohttp_client(panel_app(backend))
                response = await client.get("/memhooks/status")
                assert response.status == 200, await response.text()
                status = await response.json()
            finally:
                backend.close()
    finally:
        rig.close()

    assert outputs == expected_outputs
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("comfy_memhooks")]
    assert len(lines) == len(set(lines)), lines  # each kind once, though the fault recurred on every run
    if fault.logged:
        assert lines, "the fault was not logged"
    assert hook_patch.hook_failures.count == 0  # contained where it happened, never by the hook's last resort
    errors = status["errors"]
    if fault.counted == "settings_warning":
        assert errors["settings_warning"] and str(rig.settings_path) in errors["settings_warning"]
    elif fault.counted is not None:
        assert errors[fault.counted] > 0, errors
    if fault.latest is not None:
        assert fault.counted is not None and errors[f"last_{fault.counted[: -len('_failures')]}_error"] == fault.latest
    assert max(durations) < 5 * GPU_DEADLINE_SECONDS, durations  # a wedged driver holds no node for long


def test_a_receiver_that_disconnects_mid_send_leaves_the_others_called_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = _build_rig(tmp_path, monkeypatch)
    seen: list[str] = []

    def leaving(sender: Any, **kwargs: Any) -> None:
        seen.append("leaving")
        signals.node_finished.disconnect(leaving)

    def staying(sender: Any, **kwargs: Any) -> None:
        seen.append("staying")

    rig.connect(signals.node_finished, leaving)
    rig.connect(signals.node_finished, staying)
    try:
        signals.send_safely(signals.node_finished, "Const", node_id="1")
        signals.send_safely(signals.node_finished, "Const", node_id="1")
    finally:
        rig.close()
    assert sorted(seen) == ["leaving", "staying", "staying"]
    assert signals.receiver_failures.count == 0


def test_the_settings_file_deleted_while_running_is_written_again_on_the_next_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = _build_rig(tmp_path, monkeypatch)
    store = SettingsStore(rig.settings_path)
    store.load()
    store.update({"ram_threshold": 70})
    engine = _engine(rig)
    outputs, _ = _run_workflows(engine, store, rig.clock)
    rig.settings_path.unlink()
    again, _ = _run_workflows(engine, store, rig.clock)
    assert again == outputs and store.current.thresholds.ram_percent == 70
    store.update({"vram_threshold": 90})
    assert '"ram_threshold": 70' in rig.settings_path.read_text()
    assert store.load_warning is None
