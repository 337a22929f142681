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


def _device_api(
    name: str, calls: list[str], available: bool, initialised: bool, device_name: str
) -> types.ModuleType:
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
