"""Writing the settings file atomically without changing what the user set up: its mode, its symlink, its folder.

A write goes to a temporary file beside the target and then replaces it (``os.replace``), so a crash leaves the
old file or the new one, never half of one. Done naively, that replaces a symlinked settings file (a dotfiles
repository, a shared volume) with a plain file and resets its mode to ``0600``; and a ``kill -9`` between the two
steps leaves the temporary behind. Here the link is followed, the mode kept, and old temporaries removed at start.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

NEW_FILE_MODE = 0o644
STALE_AFTER_SECONDS = 60.0
"""A temporary this old belongs to no write in progress (a write takes milliseconds): a killed one left it."""


def _temporary_prefix(target: Path) -> str:
    return f".{target.name}."


def write_atomically(path: Path, text: str) -> None:
    """Replaces the file ``path`` resolves to with ``text``, keeping its mode; the folder is created if missing."""
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = NEW_FILE_MODE
    descriptor, temporary = tempfile.mkstemp(prefix=_temporary_prefix(target), suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path: Path, now: float | None = None) -> list[Path]:
    """Removes temporaries of ``path`` left by a killed write; returns them. Failing to remove one is no error."""
    target = Path(os.path.realpath(path))
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        candidates = list(target.parent.glob(f"{_temporary_prefix(target)}*.tmp"))
    except OSError:
        return removed
    for candidate in candidates:
        try:
            if now - candidate.stat().st_mtime >= STALE_AFTER_SECONDS:
                candidate.unlink()
                removed.append(candidate)
        except OSError:  # already gone, or a folder we may not write: it stays, and nothing else depends on it
            continue
    if removed:
        logger.info("comfy_memhooks settings: removed %d temporary file(s) left by an interrupted write", len(removed))
    return removed
