"""comfy_memhooks' JSON files (the settings, the learned peaks): read whatever they hold, set aside when bad, and
written atomically without changing what the user set up: their mode, their symlink, their folder.

A write goes to a temporary file beside the target and then replaces it (``os.replace``), so a crash leaves the
old file or the new one, never half of one. Done naively, that replaces a symlinked settings file (a dotfiles
repository, a shared volume) with a plain file and resets its mode to ``0600``; and a ``kill -9`` between the two
steps leaves the temporary behind. Here the link is followed, the mode kept, and old temporaries removed at start.

Reading never raises, whatever the bytes (invalid UTF-8, 100,000-deep nesting, integers past Python's digit limit,
a byte-order mark): a bad file is set aside under another name and the caller starts from its defaults; a file
that cannot be read, or cannot be set aside, is left where it is and must not be overwritten, since it may hold
what the user wrote.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

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


@dataclass(frozen=True, slots=True)
class LoadedFile(Generic[T]):
    """What reading a JSON file gave.

    Attributes:
        value: the parsed value; ``None`` when the file is missing, unreadable or bad (the caller's defaults apply).
        problem: what went wrong, in words naming the file (and where a bad file was kept); ``None`` when it loaded.
        writable: ``False`` when the file must not be overwritten: unreadable now, or bad and not set aside.
    """

    value: T | None
    problem: str | None = None
    writable: bool = True


def load_json_file(path: Path, parse: Callable[[object], T]) -> LoadedFile[T]:
    """Reads ``path`` as JSON and gives it to ``parse``; never raises (``parse`` raises ``ValueError`` on bad data)."""
    remove_stale_temporaries(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return LoadedFile(None)
    except OSError as error:
        return LoadedFile(None, f"{path} could not be read ({error.strerror or error})", writable=False)
    try:
        return LoadedFile(parse(decode_json(data)))
    except (ValueError, RecursionError) as error:  # bad UTF-8 or JSON, a bad field, nested too deeply, too long
        problem = "nested too deeply" if isinstance(error, RecursionError) else brief(error)
    try:
        aside = set_aside(path)
    except OSError as aside_error:
        reason = aside_error.strerror or aside_error
        return LoadedFile(None, f"{path} is not valid ({problem}) and could not be set aside ({reason})", False)
    return LoadedFile(None, f"{path} is not valid ({problem}); it was kept as {aside}")


def set_aside(path: Path) -> Path:
    """Renames a bad file to ``<stem>.invalid-<date>-<time><suffix>`` (numbered when taken); returns the new name."""
    aside = path.with_name(f"{path.stem}.invalid-{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}")
    counter = 1
    while aside.exists():
        aside = aside.with_name(f"{aside.stem}-{counter}{aside.suffix}")
        counter += 1
    os.replace(path, aside)
    return aside


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def decode_json(data: bytes) -> object:
    """A file's JSON value; raises ``ValueError`` (bad UTF-8, bad JSON, NaN, an integer past the digit limit)."""
    # Notepad and PowerShell 5 start UTF-8 files with a byte-order mark; it is no reason to set one aside.
    return json.loads(data.removeprefix(b"\xef\xbb\xbf").decode("utf-8"), parse_constant=_reject_constant)


def brief(error: BaseException) -> str:
    """An error's text, cut to 200 characters for a log line."""
    text = str(error)
    return text if len(text) <= 200 else text[:197] + "..."
