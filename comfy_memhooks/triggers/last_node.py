"""The node ComfyUI was running when it last stopped without warning: a few bytes kept in a memory-mapped file.

The OOM killer ends ComfyUI with SIGKILL, so nothing can be written when it happens, and the node it died in was
never profiled: predictive cleanup would never learn the one class it most needs to. So as each node starts, its
class, id, workload and the RAM free under the limit at that moment are copied into a small file mapped into
memory (a copy into the page cache, no system call), and one byte clears it when the node ends. Pages of a shared
mapping reach the file even after the process is killed, so a ComfyUI that starts and finds the file naming a node
knows which node the last one died in, and how much room that node had: more than that is what it needs.

A stop that skips Python's exit handlers in the middle of a node (a SIGTERM, as ``docker stop`` sends) looks the
same; the class then gets room made before it once, at the cost of a collection, and its first real run replaces
the guess.
"""

from __future__ import annotations

import logging
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

RUNNING_FILE_NAME = "comfy_memhooks_running.bin"
SIZE = 1024
"""Bytes mapped: a class name of at most 200 characters, an id, a workload and a number fit with room to spare."""
_FIELDS = 6
_EMPTY = b"\0"
_WRITTEN = ord("1")  # the first byte of a line written in full


@dataclass(frozen=True, slots=True)
class RunningNode:
    """The node that was running when a ComfyUI stopped.

    Attributes:
        node_class, node_id: which node.
        free_bytes: the RAM free under the limit (the container's, inside one) as it started; ``None`` unknown.
        workload_kind, workload_units: what drove its memory, as predictive cleanup read it; ``None`` without one.
    """

    node_class: str
    node_id: str
    free_bytes: int | None
    workload_kind: str | None
    workload_units: int | None


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def parse(data: bytes) -> RunningNode | None:
    """The file's node, or ``None`` for an empty (a clean stop) or unreadable file."""
    if not data or data[:1] == _EMPTY:
        return None
    line, newline, _ = data.partition(b"\n")
    if not newline:
        return None
    try:
        fields = line.decode("utf-8").split("\t")
    except UnicodeDecodeError:
        return None
    if len(fields) != _FIELDS or fields[0] != "1" or not fields[1]:
        return None
    _, node_class, node_id, free, kind, units = fields
    return RunningNode(node_class, node_id, _number(free), kind or None, _number(units))


class RunningNodeFile:
    """The mapped file: :meth:`open` once, then :meth:`started` and :meth:`finished` around each node.

    Args:
        path: the file (beside the learned peaks).
    """

    def __init__(self, path: Path):
        self.path = path
        self._map: mmap.mmap | None = None

    def open(self) -> RunningNode | None:
        """Maps the file for this process and returns the node the previous process left in it, if any.

        Never raises: where the file cannot be made or mapped, nothing is kept, said once in the log.
        """
        left: RunningNode | None = None
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            logger.warning(
                "comfy_memhooks: %s cannot be opened (%s); the node a crash stops in is not kept", self.path, error
            )
            return None
        try:
            left = parse(os.pread(descriptor, SIZE, 0))
            if os.fstat(descriptor).st_size != SIZE:
                os.ftruncate(descriptor, SIZE)
            self._map = mmap.mmap(descriptor, SIZE)
            self._map[:1] = _EMPTY
        except (OSError, ValueError) as error:
            logger.warning(
                "comfy_memhooks: %s cannot be mapped (%s); the node a crash stops in is not kept", self.path, error
            )
            self._map = None
        finally:
            os.close(descriptor)
        return left

    def started(
        self,
        node_class: str,
        node_id: str,
        free_bytes: int | None,
        workload_kind: str | None,
        workload_units: int | None,
    ) -> None:
        mapped = self._map
        if mapped is None:
            return
        # The line but its first byte, which is written last: a reader never sees half a line marked as written.
        rest = (
            f"\t{node_class}\t{node_id}\t{'' if free_bytes is None else free_bytes}\t{workload_kind or ''}\t"
            f"{'' if workload_units is None else workload_units}\n"
        ).encode("utf-8", "replace")
        if len(rest) >= SIZE or "\t" in node_class or "\n" in node_class:
            return  # a name that does not fit the format: that node is not kept
        mapped[1 : len(rest) + 1] = rest
        mapped[0] = _WRITTEN

    def finished(self) -> None:
        mapped = self._map
        if mapped is not None:
            mapped[0] = 0  # _EMPTY

    def close(self) -> None:
        mapped, self._map = self._map, None
        if mapped is not None:
            mapped[:1] = _EMPTY
            mapped.close()
