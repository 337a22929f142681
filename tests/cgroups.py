"""Real memory cgroups for tests: a child of this process's own v1 memory cgroup, with a limit.

Made only where the machine allows it (root, a writable v1 memory hierarchy); callers skip otherwise.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

V1_MEMORY = Path("/sys/fs/cgroup/memory")


def _own_v1_memory_group() -> Path | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and "memory" in parts[1].split(","):
            group = V1_MEMORY / parts[2].strip("/")
            return group if (group / "memory.limit_in_bytes").is_file() else None
    return None


@contextlib.contextmanager
def limited_v1_group(limit_bytes: int) -> Iterator[Path | None]:
    """A new v1 memory cgroup with ``limit_bytes``, removed afterwards; ``None`` where none can be made here.

    Processes are put in it by writing their pid to ``<group>/cgroup.procs``. The group is removed once they
    have exited.
    """
    base = _own_v1_memory_group()
    group = None if base is None else base / f"memhooks-test-{uuid.uuid4().hex[:8]}"
    try:
        if group is not None:
            group.mkdir()
            (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
    except OSError:
        group = None
    try:
        yield group
    finally:
        if group is not None:
            for _ in range(100):  # the last process may still be leaving the group
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def enter_group_launcher(group: Path) -> tuple[str, ...]:
    """A command prefix that moves the command into ``group`` before it starts."""
    return ("sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(group))
