"""ComfyUI's own release after every node (0.33 and later), watched per prompt rather than raced.

From 0.33 on, ComfyUI's RAM-pressure cache is the default, and after every node ``PromptExecutor.execute_async``
calls the cache's ``ram_release`` itself: every output of older prompts goes (its "inactive" headroom is the
machine's RAM), and when ``psutil.virtual_memory().available`` (the host's, on 0.33) is under its headroom, this
prompt's large outputs and then pinned memory. It binds that method once, as the prompt starts. So before each
prompt the hook (:func:`PromptReleaseWatch.prompt_event`) puts a counting pass-through in the cache's own
attribute, which ComfyUI then binds: it tells what ComfyUI's cache evicted in the prompt (outputs, and the bytes as
ComfyUI counts them) apart from what comfy_memhooks' ``comfy_cache_release`` asked it for. ComfyUI calls the same
bound method from inside nodes too (0.33's pinning asks ``extra_ram_release`` before it pins memory), so those calls
are ComfyUI's as well. The pass-through holds the engine while ComfyUI releases, so that no cleanup of
comfy_memhooks' (the watchdog's, from its own thread) starts in the middle of it; it never waits, so when a cleanup
is already running ComfyUI goes ahead, and that cleanup's figure includes what ComfyUI freed: the watch counts such
releases (:attr:`PromptReleaseWatch.releases_during_cleanups`) and the engine says so on the cleanup's record. The
pass-through returns exactly what ComfyUI's method returned and is taken out when the prompt ends; the cache's
``active_evictions`` and ``full_evictions`` (flags on 0.33, reset per prompt) are read then.

comfy_memhooks' own cleanups before a node come after ComfyUI's release for the node before it (ComfyUI releases
between two calls of ``execute``; the boundary cleanup runs inside the second), and each measures its own actions
from a reading taken when it starts, so what ComfyUI freed is never counted as comfy_memhooks'.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

RELEASE_METHOD = "ram_release"
_ABSENT = object()

DURING_CLEANUP_NOTICE = "ComfyUI's cache released during this cleanup: the figure includes it"
"""What a cleanup's record says when ComfyUI's own release ran while it did (it never waits for the engine)."""


@dataclass(frozen=True, slots=True)
class PromptRelease:
    """What ComfyUI's own cache released during one prompt, beside what comfy_memhooks asked it for.

    Attributes:
        prompt_id: the prompt.
        started_at: wall-clock time the prompt started.
        finished_at: when it ended; ``None`` while it runs.
        core_calls: ComfyUI's own calls of its cache's ``ram_release``: one or more after every node, and from
            inside nodes where 0.33 asks ``extra_ram_release`` before it pins memory.
        core_evicted: outputs those calls evicted.
        core_freed_bytes: what they freed as ComfyUI counts it (the CPU tensors of the evicted outputs).
        ours_calls: calls made for comfy_memhooks' ``comfy_cache_release``.
        ours_evicted: outputs those evicted.
        ours_freed_bytes: what they freed, as ComfyUI counts it.
        active_evictions: the cache's ``active_evictions`` at the prompt's end (this prompt's outputs were
            evicted); ``None`` where the cache has no such attribute.
        full_evictions: the cache's ``full_evictions`` (every output it could evict, small ones too).
        memhooks_cleanups: cleanups comfy_memhooks performed during the prompt (every trigger).
        memhooks_freed_bytes: the RAM they returned, as comfy_memhooks measures it (this process's RSS).
        core_calls_during_cleanups: those of ComfyUI's calls that ran while a cleanup of comfy_memhooks' did (the
            engine was busy and ComfyUI does not wait for it): that cleanup's figure includes what they freed.
    """

    prompt_id: str | None
    started_at: float
    finished_at: float | None
    core_calls: int = 0
    core_evicted: int = 0
    core_freed_bytes: int = 0
    ours_calls: int = 0
    ours_evicted: int = 0
    ours_freed_bytes: int = 0
    active_evictions: bool | int | None = None
    full_evictions: bool | int | None = None
    memhooks_cleanups: int = 0
    memhooks_freed_bytes: int = 0
    core_calls_during_cleanups: int = 0

    def describe(self) -> str:
        """In words, for the panel and the detailed report."""
        running = " so far" if self.finished_at is None else ""
        flags = [
            f"{label}: {'yes' if value else 'no'}"
            for label, value in (
                ("this prompt's outputs too", self.active_evictions),
                ("small ones too", self.full_evictions),
            )
            if value is not None
        ]
        said = f" ({', '.join(flags)})" if flags else ""
        asked = (
            f"; for comfy_memhooks' requests, {self.ours_evicted} more ({_gb(self.ours_freed_bytes)})"
            if self.ours_calls
            else ""
        )
        during = (
            f"; {self.core_calls_during_cleanups} of ComfyUI's releases ran during a cleanup of comfy_memhooks', "
            "whose figure includes them"
            if self.core_calls_during_cleanups
            else ""
        )
        return (
            f"ComfyUI released its cache {self.core_calls} time(s) in this prompt{running}, evicting "
            f"{self.core_evicted} outputs ({_gb(self.core_freed_bytes)} as ComfyUI counts them){said}{asked}{during}. "
            f"comfy_memhooks freed {_gb(self.memhooks_freed_bytes)} in {self.memhooks_cleanups} cleanups."
        )


def _gb(count: int) -> str:
    return f"{count / 1024**3:.2f} GB"


class _Tally:
    """The running prompt's counts: updated after every node, so a plain slotted class."""

    __slots__ = (
        "cleanups_at_start",
        "core_calls",
        "core_during",
        "core_evicted",
        "core_freed",
        "ours_calls",
        "ours_evicted",
        "ours_freed",
        "prompt_id",
        "started_at",
    )

    def __init__(self, prompt_id: str | None, started_at: float, cleanups_at_start: tuple[int, int]):
        self.prompt_id = prompt_id
        self.started_at = started_at
        self.cleanups_at_start = cleanups_at_start
        self.core_calls = self.core_evicted = self.core_freed = self.core_during = 0
        self.ours_calls = self.ours_evicted = self.ours_freed = 0

    def freeze(
        self, finished_at: float | None, active: bool | int | None, full: bool | int | None, cleanups: tuple[int, int]
    ) -> PromptRelease:
        return PromptRelease(
            self.prompt_id,
            self.started_at,
            finished_at,
            self.core_calls,
            self.core_evicted,
            self.core_freed,
            self.ours_calls,
            self.ours_evicted,
            self.ours_freed,
            active,
            full,
            cleanups[0] - self.cleanups_at_start[0],
            max(cleanups[1] - self.cleanups_at_start[1], 0),
            self.core_during,
        )


class _Ours(threading.local):
    """Whether the calling thread is inside :meth:`PromptReleaseWatch.ours`; ``False`` unless set, read by the
    pass-through on every call without an attribute miss."""

    active = False


class _PassThroughOnClass:
    """The pass-through on the cache's class for one prompt: ComfyUI's outputs cache gets it, any other instance
    the class's own method. On the class, not in the instance's ``__dict__``: asking an object for its ``__dict__``
    makes CPython (3.11 and later) give up its inline attribute values, and every attribute and method look-up of
    ComfyUI's own cache methods (hundreds a node, the RAM-pressure cache walking its entries after every node) then
    takes the slow path, for the rest of the process: 1.8 times as long."""

    __slots__ = ("function", "target", "wrapper")

    def __init__(self, function: Any, target: Any, wrapper: Any):
        self.function = function
        self.target = target
        self.wrapper = wrapper

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is not None and instance is self.target:
            return self.wrapper
        get = getattr(type(self.function), "__get__", None)
        return self.function if get is None else get(self.function, instance, owner)


def _class_attribute(cls: type, name: str) -> Any:
    """What ``name`` is on ``cls`` or the first base that has it, unbound; ``_ABSENT`` when none has."""
    for klass in cls.__mro__:
        found = vars(klass).get(name, _ABSENT)
        if found is not _ABSENT:
            return found
    return _ABSENT


def _hold_nothing() -> contextlib.AbstractContextManager[bool]:
    return contextlib.nullcontext(True)  # no engine to hold: none is busy


def _no_cleanups() -> tuple[int, int]:
    return 0, 0


def _counter(value: object) -> bool | int | None:
    return value if isinstance(value, (bool, int)) else None


def _whole(value: object) -> int:
    """Bytes freed as ComfyUI returns them: a float on 0.33 (each entry starts at 0.05), 0 for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return 0
    return int(value)


class PromptReleaseWatch:
    """Watches ComfyUI's per-node release during each prompt (see the module docstring).

    Attributes:
        hold: makes a context manager that holds comfy_memhooks' engine without waiting for it (it yields whether
            it got it, ``False`` while a cleanup runs): ComfyUI's release runs under it. The engine sets its own
            (``Engine.held_without_waiting``); until then nothing is held.
        cleanups: comfy_memhooks' cleanups since start-up and the RAM they freed (the engine's history totals).
        releases_during_cleanups: ComfyUI's own releases since start-up that ran while a cleanup of comfy_memhooks'
            did; a cleanup that sees it grow says its figure includes what ComfyUI freed
            (:data:`DURING_CLEANUP_NOTICE`).

    Args:
        wall_clock: the time stamped on each prompt's figures.
    """

    def __init__(self, wall_clock: Callable[[], float] = time.time):
        self.hold: Callable[[], contextlib.AbstractContextManager[bool]] = _hold_nothing
        self.cleanups: Callable[[], tuple[int, int]] = _no_cleanups
        self.releases_during_cleanups = 0
        self._wall_clock = wall_clock
        self._ours = _Ours()
        self._tally: _Tally | None = None
        self._watched: Any = None
        self._previous: Any = None
        self._wrapper: Any = None
        self._on_class: _PassThroughOnClass | None = None  # the class's pass-through, else it is the instance's
        self.last: PromptRelease | None = None
        """The latest prompt's figures (the running one's so far, while it runs); ``None`` before any."""

    @contextlib.contextmanager
    def ours(self) -> Iterator[None]:
        """Calls made inside count as comfy_memhooks' requests, not ComfyUI's own release."""
        self._ours.active = True
        try:
            yield
        finally:
            self._ours.active = False

    def waiting_for_comfyui(self) -> bool:
        """A prompt runs whose cache ComfyUI releases itself after each node, and it has not had its turn yet: the
        boundary cleanup before the prompt's first node leaves the cache to it (it evicts older prompts' outputs
        right after that node), so that the two do not race for the same outputs, and the last rung waits for the
        next boundary. ComfyUI's calls from inside a node (when it pins memory) come only once the first node runs."""
        tally = self._tally
        return tally is not None and tally.core_calls == 0

    def current(self) -> PromptRelease | None:
        tally = self._tally
        return self.last if tally is None else tally.freeze(None, None, None, self.cleanups())

    def prompt_event(self, executor: Any, prompt_id: Any, started: bool) -> None:
        """The hook's call as each prompt starts (before ComfyUI binds its cache's method) and ends; the hook
        contains and counts a failure here, and the prompt runs as it would without the watch."""
        if started:
            self._begin(executor, prompt_id)
        else:
            self._end()

    def _begin(self, executor: Any, prompt_id: Any) -> None:
        self._end()
        outputs = getattr(getattr(executor, "caches", None), "outputs", None)
        cls = type(outputs)
        method = getattr(cls, RELEASE_METHOD, None)
        if outputs is None or not callable(method) or not cls.__dictoffset__:
            return  # no RAM-pressure cache (the classic one, an older ComfyUI): nothing releases per node
        tally = _Tally(None if prompt_id is None else str(prompt_id), self._wall_clock(), self.cleanups())
        original = getattr(outputs, RELEASE_METHOD)
        found = getattr(outputs, "cache", None)
        entries: dict[Any, Any] = found if isinstance(found, dict) else {}  # no entries to count: 0 evicted
        ours = self._ours

        def ram_release(*args: Any, **kwargs: Any) -> Any:
            before = len(entries)
            if ours.active:
                freed = original(*args, **kwargs)
                tally.ours_calls += 1
                tally.ours_evicted += before - len(entries)
                tally.ours_freed += _whole(freed)
                return freed
            with self.hold() as held:
                if not held:  # a cleanup runs (another thread's): counted first, so it sees this before it ends
                    self.releases_during_cleanups += 1
                    tally.core_during += 1
                freed = original(*args, **kwargs)
            tally.core_calls += 1
            tally.core_evicted += before - len(entries)
            tally.core_freed += _whole(freed)
            return freed

        function = _class_attribute(cls, RELEASE_METHOD)
        if getattr(original, "__self__", None) is outputs and getattr(original, "__func__", None) is function:
            # The class's own method, as ComfyUI has it: the pass-through goes on the class for the prompt.
            self._previous = vars(cls).get(RELEASE_METHOD, _ABSENT)
            self._on_class = _PassThroughOnClass(function, outputs, ram_release)
            setattr(cls, RELEASE_METHOD, self._on_class)
        else:  # another extension's own wrapper on the instance: ours wraps it there, and it is put back as it was
            own = vars(outputs)
            self._previous = own.get(RELEASE_METHOD, _ABSENT)
            own[RELEASE_METHOD] = ram_release
        self._tally = tally
        self._watched = outputs
        self._wrapper = ram_release

    def _end(self) -> None:
        tally, outputs, on_class = self._tally, self._watched, self._on_class
        self._tally = self._watched = self._on_class = None
        if tally is None or outputs is None:
            return
        if on_class is not None:
            cls = type(outputs)
            if vars(cls).get(RELEASE_METHOD) is on_class:  # else someone replaced ours since: theirs stays
                if self._previous is _ABSENT:
                    delattr(cls, RELEASE_METHOD)
                else:
                    setattr(cls, RELEASE_METHOD, self._previous)
        else:
            own = vars(outputs)
            if own.get(RELEASE_METHOD) is self._wrapper:  # else someone replaced ours since: theirs stays
                if self._previous is _ABSENT:
                    del own[RELEASE_METHOD]
                else:
                    own[RELEASE_METHOD] = self._previous
        self._previous = self._wrapper = None
        active = _counter(getattr(outputs, "active_evictions", None))
        full = _counter(getattr(outputs, "full_evictions", None))
        self.last = tally.freeze(self._wall_clock(), active, full, self.cleanups())


class HeldWithoutWaiting:
    """A lock taken only if it is free (the engine's, see ``Engine.held_without_waiting``): a plain class, as it
    wraps ComfyUI's release after every node."""

    __slots__ = ("_got", "_lock")

    def __init__(self, lock: threading.RLock):
        self._lock = lock
        self._got = False

    def __enter__(self) -> bool:
        self._got = self._lock.acquire(blocking=False)
        return self._got

    def __exit__(self, *_: object) -> None:
        if self._got:
            self._lock.release()
