"""Returning the C heap's freed pages to the system: each platform's own call, found before it is called.

- glibc (Linux): ``malloc_trim(0)``, looked up as a symbol of the running program, so musl (Alpine) and other C
  libraries without it are skipped with a reason instead of failing.
- macOS: ``malloc_zone_pressure_relief(NULL, 0)`` from libSystem: every malloc zone gives back what it can.
- Windows: the C runtime's ``_heapmin()`` (``ucrtbase``, then ``msvcrt``). torch's CPU allocator on Windows is
  mimalloc, which returns freed pages on its own after ``MIMALLOC_PURGE_DELAY`` milliseconds (ComfyUI sets 0);
  the detail says what that setting is. Trimming the working set (``EmptyWorkingSet``,
  ``SetProcessWorkingSetSize``) only pages memory out, leaving the commit charge as it was, so it is never done,
  and no other process is ever touched.

The library lookup is injectable: :data:`library_loader` takes a library name (``None``: the running program) and
returns a ctypes library, or raises ``OSError``; tests replace it with stand-ins with and without each function.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable
from typing import Any

LibraryLoader = Callable[[str | None], Any]

WINDOWS_C_RUNTIMES = ("ucrtbase", "msvcrt")
MACOS_LIBSYSTEM = "/usr/lib/libSystem.B.dylib"
NO_MALLOC_TRIM = "the C library has no malloc_trim (it is not glibc: musl, for one, has none)"


def load_library(name: str | None) -> Any:
    """The C library ``name`` through ctypes (``None``: the running program and what it linked)."""
    return ctypes.CDLL(name)


library_loader: LibraryLoader = load_library
"""How a C library is loaded; tests replace it with stand-ins."""

HeapRelease = Callable[[], str]
"""Returns freed heap to the system now and says what it did."""


def find_heap_release(
    platform: str | None = None, loader: LibraryLoader | None = None
) -> tuple[HeapRelease | None, str | None]:
    """This platform's way of returning freed heap, or ``None`` and why there is none.

    Args:
        platform: ``sys.platform`` by default.
        loader: :data:`library_loader` by default.
    """
    return _find(platform if platform is not None else sys.platform, loader if loader is not None else library_loader)


@functools.lru_cache(maxsize=8)
def _find(platform: str, loader: LibraryLoader) -> tuple[HeapRelease | None, str | None]:
    if platform == "win32":
        return _windows(loader)
    if platform == "darwin":
        return _macos(loader)
    return _malloc_trim(loader)


def _malloc_trim(loader: LibraryLoader) -> tuple[HeapRelease | None, str | None]:
    try:
        trim = loader(None).malloc_trim
    except (OSError, AttributeError):
        return None, NO_MALLOC_TRIM
    trim.restype = ctypes.c_int
    trim.argtypes = [ctypes.c_size_t]

    def release() -> str:
        returned = trim(0)
        return f"malloc_trim(0): {'heap pages returned to the system' if returned else 'no heap pages to return'}"

    return release, None


def _macos(loader: LibraryLoader) -> tuple[HeapRelease | None, str | None]:
    try:
        relief = loader(MACOS_LIBSYSTEM).malloc_zone_pressure_relief
    except (OSError, AttributeError):
        return None, "libSystem has no malloc_zone_pressure_relief (macOS 10.7 or later has it)"
    relief.restype = ctypes.c_size_t
    relief.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

    def release() -> str:
        released = int(relief(None, 0))
        return f"malloc_zone_pressure_relief: {released / 1024**2:.0f}MB returned to the system by the malloc zones"

    return release, None


def _windows(loader: LibraryLoader) -> tuple[HeapRelease | None, str | None]:
    for name in WINDOWS_C_RUNTIMES:
        try:
            heapmin = loader(name)._heapmin
        except (OSError, AttributeError):
            continue
        heapmin.restype = ctypes.c_int
        heapmin.argtypes = []
        return functools.partial(_heapmin, name, heapmin), None
    return None, "no C runtime with _heapmin could be loaded (ucrtbase, msvcrt)"


def _heapmin(runtime: str, heapmin: Callable[[], int]) -> str:
    result = int(heapmin())
    done = "free heap returned to the system" if result == 0 else "the C runtime reported nothing to return"
    return f"{runtime} _heapmin(): {done}; {_mimalloc_note()}"


def _mimalloc_note() -> str:
    delay = os.environ.get("MIMALLOC_PURGE_DELAY")
    if delay is None:
        return "mimalloc (torch's CPU allocator) purges freed pages after its default delay (no MIMALLOC_PURGE_DELAY)"
    return f"mimalloc (torch's CPU allocator) purges freed pages after MIMALLOC_PURGE_DELAY={delay} ms"
