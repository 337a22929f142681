"""A daemon thread that does one thing every so often: the panel's live samples, the pressure watchdog's readings.

ComfyUI owns its event loop and a private one must never be started inside it, so periodic work runs in a plain
daemon thread that sleeps on an :class:`threading.Event`: it stops at once when asked, and :meth:`Ticker.wake`
runs the next tick at once (a prompt starting). A failing tick is logged once, counted, and the thread goes on.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from .failures import Failures

logger = logging.getLogger(__name__)


class Ticker:
    """Calls ``tick`` every ``interval()`` seconds (the first after one interval) in a daemon thread until :meth:`stop`.

    ``interval`` is read again before each wait, so a changed setting applies from the next tick; an interval that
    cannot be read, or is not a positive number, counts as one second.

    Args:
        tick: the work of one interval.
        interval: seconds until the next tick.
        name: the thread's name, as ``py-spy`` and ComfyUI's logs show it.
        failures: where a failing tick is counted and logged once.
    """

    def __init__(self, tick: Callable[[], object], interval: Callable[[], float], name: str, failures: Failures):
        self._tick = tick
        self._interval = interval
        self._name = name
        self.failures = failures
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def native_id(self) -> int | None:
        """The thread's id as the operating system knows it (``/proc/self/task/<id>``), while it runs."""
        thread = self._thread
        return None if thread is None else thread.native_id

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Runs the next tick now rather than at the end of the interval."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._safe_interval())
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._tick()
            except Exception as error:  # one bad tick must not end the thread; it is counted and shown.
                self.failures.record("a tick", error)

    def _safe_interval(self) -> float:
        try:
            seconds = float(self._interval())
        except Exception:  # a broken settings source falls back to one tick a second.
            return 1.0
        return seconds if math.isfinite(seconds) and seconds > 0 else 1.0
