"""Stand-ins for the platforms this Linux machine is not: torch's CUDA, ROCm, XPU and MPS backends, C libraries.

Each stand-in follows the real library's names and return types (``torch.cuda.mem_get_info`` returns ``(free,
total)`` in bytes, ``torch.mps.driver_allocated_memory()`` an ``int``, ``torch.version.hip`` a string on ROCm and
``None`` elsewhere), and records the calls that change anything, so a test can tell which cache was emptied.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

GIB = 1024**3
TOTAL = 24 * GIB
FREE = 18 * GIB
ALLOCATED = 4 * GIB
RESERVED = 5 * GIB
MPS_DRIVER = 6 * GIB


class StandinDevice:
    """``torch.device``: printed as ``cuda:0``, ``mps:0``."""

    def __init__(self, kind: str, index: int | None = None):
        self.type = kind
        self.index = index

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


def _device_api(name: str, calls: list[str], available: bool, initialised: bool, device_name: str) -> types.ModuleType:
    """``torch.cuda`` or ``torch.xpu``: the two share these names and types."""
    api = types.ModuleType(f"torch.{name}")

    def record(call: str) -> Callable[[], None]:
        return lambda: calls.append(f"{name}.{call}")

    def mem_get_info(device: int | None = None) -> tuple[int, int]:
        calls.append(f"{name}.mem_get_info")
        return FREE, TOTAL

    api.is_available = lambda: available  # type: ignore[attr-defined]
    api.is_initialized = lambda: initialised  # type: ignore[attr-defined]
    api.device_count = lambda: 1 if available else 0  # type: ignore[attr-defined]
    api.mem_get_info = mem_get_info  # type: ignore[attr-defined]
    api.get_device_name = lambda device=None: device_name  # type: ignore[attr-defined]
    api.memory_allocated = lambda device=None: ALLOCATED  # type: ignore[attr-defined]
    api.memory_reserved = lambda device=None: RESERVED  # type: ignore[attr-defined]
    api.empty_cache = record("empty_cache")  # type: ignore[attr-defined]
    if name == "cuda":
        api.ipc_collect = record("ipc_collect")  # type: ignore[attr-defined]
    return api


def standin_torch(backend: str | None, *, initialised: bool = True) -> types.ModuleType:
    """A ``torch`` whose one accelerator is ``backend`` (``cuda``, ``rocm``, ``xpu``, ``mps``; ``None``: CPU only).

    ``initialised=False`` is a process that has torch but has not used the device yet. Calls land in
    ``torch.calls``.
    """
    torch = types.ModuleType("torch")
    calls: list[str] = []
    torch.calls = calls  # type: ignore[attr-defined]
    on_cuda = backend in ("cuda", "rocm")
    torch.version = types.SimpleNamespace(  # type: ignore[attr-defined]
        cuda="12.4" if backend == "cuda" else None, hip="6.2.41133" if backend == "rocm" else None
    )
    cuda_name = "AMD Radeon RX 7900 XTX" if backend == "rocm" else "NVIDIA GeForce RTX 4090"
    torch.cuda = _device_api("cuda", calls, on_cuda, on_cuda and initialised, cuda_name)  # type: ignore[attr-defined]
    torch.xpu = _device_api(  # type: ignore[attr-defined]
        "xpu", calls, backend == "xpu", backend == "xpu" and initialised, "Intel(R) Arc(TM) A770 Graphics"
    )
    mps = types.ModuleType("torch.mps")
    mps.current_allocated_memory = lambda: ALLOCATED  # type: ignore[attr-defined]
    mps.driver_allocated_memory = lambda: MPS_DRIVER  # type: ignore[attr-defined]
    mps.recommended_max_memory = lambda: TOTAL  # type: ignore[attr-defined]
    mps.empty_cache = lambda: calls.append("mps.empty_cache")  # type: ignore[attr-defined]
    torch.mps = mps  # type: ignore[attr-defined]
    torch.backends = types.SimpleNamespace(  # type: ignore[attr-defined]
        mps=types.SimpleNamespace(is_available=lambda: backend == "mps", is_built=lambda: backend == "mps")
    )
    torch.device = StandinDevice  # type: ignore[attr-defined]
    return torch


class StandinFunction:
    """A C function as ctypes exposes it: callable, with ``restype`` and ``argtypes`` to set."""

    def __init__(self, result: int):
        self.result = result
        self.calls: list[tuple[Any, ...]] = []
        self.restype: Any = None
        self.argtypes: Any = None

    def __call__(self, *args: Any) -> int:
        self.calls.append(args)
        return self.result


class StandinLibrary:
    """A C library as ``ctypes.CDLL`` returns it: its functions are attributes, a missing one raises
    ``AttributeError``."""

    def __init__(self, **functions: StandinFunction):
        self.__dict__.update(functions)


def standin_loader(libraries: dict[str | None, StandinLibrary]) -> Callable[[str | None], Any]:
    """Loads the named stand-in (``None``: the running program); another name raises ``OSError`` as ctypes does."""

    def load(name: str | None) -> Any:
        if name not in libraries:
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        return libraries[name]

    return load


def glibc() -> dict[str | None, StandinLibrary]:
    return {None: StandinLibrary(malloc_trim=StandinFunction(1))}


def musl() -> dict[str | None, StandinLibrary]:
    return {None: StandinLibrary()}


def windows_ucrt(result: int = 0) -> dict[str | None, StandinLibrary]:
    return {"ucrtbase": StandinLibrary(_heapmin=StandinFunction(result))}


def macos_libsystem() -> dict[str | None, StandinLibrary]:
    return {"/usr/lib/libSystem.B.dylib": StandinLibrary(malloc_zone_pressure_relief=StandinFunction(64 * 1024**2))}


class AmdSmiException(Exception):
    """``amdsmi.AmdSmiException``: the base of every error the bindings raise."""


class AmdSmiLibraryException(AmdSmiException):
    """``amdsmi.AmdSmiLibraryException``: the C library returned an error status."""

    def __init__(self, err_code: int):
        super().__init__(f"Error code:\n\t{err_code} | AMDSMI_STATUS_NOT_SUPPORTED - Feature not supported")
        self.err_code = err_code


def standin_amdsmi(
    gpus: list[tuple[str, int, int]],
    processes: dict[int, list[dict[str, Any]]] | None = None,
    failing: set[str] | None = None,
) -> types.ModuleType:
    """An ``amdsmi`` module: ``gpus`` as (market name, total, used) bytes, ``processes`` per GPU index in the
    bindings' dict form. A function named in ``failing`` raises ``AmdSmiLibraryException``; calls land in
    ``amdsmi.calls``."""
    amdsmi = types.ModuleType("amdsmi")
    calls: list[str] = []
    amdsmi.calls = calls  # type: ignore[attr-defined]
    amdsmi.AmdSmiException = AmdSmiException  # type: ignore[attr-defined]
    amdsmi.AmdSmiLibraryException = AmdSmiLibraryException  # type: ignore[attr-defined]
    amdsmi.AmdSmiMemoryType = types.SimpleNamespace(VRAM=0, VIS_VRAM=1, GTT=2)  # type: ignore[attr-defined]
    handles = [object() for _ in gpus]

    def function(name: str, result: Callable[..., Any]) -> None:
        def call(*args: Any) -> Any:
            calls.append(name)
            if name in (failing or set()):
                raise AmdSmiLibraryException(2)
            return result(*args)

        call.__name__ = name
        setattr(amdsmi, name, call)

    def gpu(handle: object) -> tuple[str, int, int]:
        return gpus[handles.index(handle)]

    def memory(handle: object, kind: int, position: int) -> int:
        assert kind == amdsmi.AmdSmiMemoryType.VRAM  # type: ignore[attr-defined]
        return gpu(handle)[position]

    function("amdsmi_init", lambda flag=None: None)
    function("amdsmi_shut_down", lambda: None)
    function("amdsmi_get_processor_handles", lambda: list(handles))
    function("amdsmi_get_gpu_asic_info", lambda h: {"market_name": gpu(h)[0], "vendor_id": "0x1002"})
    function("amdsmi_get_gpu_memory_total", lambda h, kind: memory(h, kind, 1))
    function("amdsmi_get_gpu_memory_usage", lambda h, kind: memory(h, kind, 2))
    function("amdsmi_get_gpu_process_list", lambda h: list((processes or {}).get(handles.index(h), [])))
    return amdsmi


def amd_process(pid: int, vram: int, name: str = "python3") -> dict[str, Any]:
    """One entry of ``amdsmi_get_gpu_process_list``, as the bindings return it (bytes)."""
    return {
        "name": name,
        "pid": pid,
        "mem": vram,
        "engine_usage": {"gfx": 0, "enc": 0},
        "memory_usage": {"gtt_mem": 2 * 1024**2, "cpu_mem": 0, "vram_mem": vram},
    }
