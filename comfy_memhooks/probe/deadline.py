"""Driver calls with a deadline: a wedged NVML or torch call costs one reading, never a node's time.

A GPU driver that hangs (a GPU fallen off the bus, a driver upgrade under a running process) blocks whoever asks
it, and the hook asks from ComfyUI's worker thread, before and after heavy nodes. So GPU readings run on a daemon
thread of their own and the caller waits only so long. A call that misses its deadline is given up, not killed
(Python cannot stop a thread inside a C call); until it returns, later readings fail at once rather than queue
behind it. The thread is a daemon, so a call that never returns cannot hold up ComfyUI's exit either.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")

GPU_DEADLINE_SECONDS = 0.25
"""How long a node may wait for a GPU reading: far above a healthy NVML query (tens of microseconds)."""


class DeadlineExceeded(TimeoutError):
    """A call did not return in time, or an earlier one still has not; its result is given up."""


class _Call(Generic[T]):
    def __init__(self, function: Callable[..., T], args: tuple[Any, ...]):
        self.function = function
        self.args = args
        self.started = time.monotonic()
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.function(*self.args)
        except BaseException as error:  # handed to the caller, who contains it; this thread must go on.
            self.error = error
        finally:
            self.done.set()


class Deadline:
    """Runs calls one at a time on a daemon thread, each waited for at most ``seconds``.

    Args:
        name: what the calls read, for messages and the thread's name.
        seconds: how long a caller waits.
    """

    def __init__(self, name: str, seconds: float = GPU_DEADLINE_SECONDS):
        self.name = name
        self.seconds = seconds
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting: list[_Call[Any]] = []
        self._given_up: _Call[Any] | None = None
        self._thread: threading.Thread | None = None

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)``, or :class:`DeadlineExceeded`; its own exception is raised here, in the caller."""
        with self._lock:
            given_up = self._given_up
            if given_up is not None and not given_up.done.is_set():
                stuck_for = time.monotonic() - given_up.started
                raise DeadlineExceeded(f"{self.name}: an earlier call has not returned for {stuck_for:.1f} s")
            self._given_up = None
            call: _Call[T] = _Call(function, args)
            self._waiting.append(call)
            self._start()
            self._wake.notify()
        if not call.done.wait(self.seconds):
            with self._lock:
                self._given_up = call
            raise DeadlineExceeded(f"{self.name}: no answer within {self.seconds:g} s")
        if call.error is not None:
            raise call.error
        return cast(T, call.result)

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._serve, name=f"memhooks-{self.name}", daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._waiting:
                    self._wake.wait()
                call = self._waiting.pop(0)
            call.run()
