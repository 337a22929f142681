"""One way to contain a failure: count it, keep the latest in words, and log each kind once with its traceback.

Code that runs inside ComfyUI's executor, its web server or our own threads must never let an exception through,
and must never flood the log either: a receiver, a probe or a websocket that fails on every node would write
thousands of tracebacks. Each :class:`Failures` belongs to one part (the hook, the receivers, the panel, the
watchdog) and is shown, with its count and latest error, in ``/memhooks/status``, the metrics and the panel. The
process-wide ones register under their part's name in :data:`failure_registry`, which the status and the metrics
read, so a new part's failures are shown without either of them importing it.
"""

from __future__ import annotations

import logging
import threading

# A bound on the kinds remembered for "log once": something that fails in new ways forever must not grow memory.
MAX_REMEMBERED_KINDS = 256


class Failures:
    """The contained failures of one part of comfy_memhooks.

    Args:
        logger: where the first failure of each kind is logged.
        message: the log line, with ``{kind}`` standing for what failed ("executor hook failed while {kind}").
        level: the log level; ERROR for a bug of ours, WARNING for what the machine lacks (a driver call).
        traceback: log the first failure of each kind with its traceback.
        part: a process-wide part's name (``hook``, ``predictive``): registered in :data:`failure_registry`.
    """

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        level: int = logging.ERROR,
        traceback: bool = True,
        *,
        part: str | None = None,
    ):
        self._logger = logger
        self._message = message
        self._level = level
        self._traceback = traceback
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        self.count = 0
        self.last_error: str | None = None
        if part is not None:
            failure_registry.add(part, self)

    def record(self, kind: str, error: BaseException) -> bool:
        """Counts one failure of ``kind``; logs it when ``kind`` has not failed before. Returns whether it logged."""
        with self._lock:
            self.count += 1
            self.last_error = f"{kind}: {type(error).__name__}: {error}"
            first = kind not in self._logged and len(self._logged) < MAX_REMEMBERED_KINDS
            if first:
                self._logged.add(kind)
        if first:
            self._logger.log(
                self._level,
                "comfy_memhooks: %s (logged once)",
                self._message.format(kind=kind),
                exc_info=error if self._traceback else None,
            )
        return first


class FailureRegistry:
    """The process-wide parts' failures by part name; a part registered again (a test's fresh counter) replaces it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[str, Failures] = {}

    def add(self, part: str, failures: Failures) -> None:
        with self._lock:
            self._parts[part] = failures

    def items(self) -> list[tuple[str, Failures]]:
        """Each part and its failures, in the order they were first registered."""
        with self._lock:
            return list(self._parts.items())


failure_registry = FailureRegistry()
"""Every process-wide part's failures: read by ``/memhooks/status`` and the metrics."""
