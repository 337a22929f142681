"""The learned peaks on disk: a small JSON file beside the settings file, so what was learned survives a restart.

Handled as the settings file is: written atomically (:mod:`.files`), and a file that cannot be read as learned
peaks (bad bytes, bad JSON, a bad field, nesting too deep) is set aside under another name with one warning naming
it, and learning starts afresh. Nothing here raises: predictive cleanup is an optimization, and a bad file must not
stop ComfyUI or the hook.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .files import load_json_file, write_atomically
from .learned import LearnedPeaks
from .settings import default_settings_path

logger = logging.getLogger(__name__)

LEARNED_FILE_NAME = "comfy_memhooks_learned.json"


def default_learned_path() -> Path:
    """Beside the settings file: ComfyUI's user directory inside ComfyUI."""
    return default_settings_path().with_name(LEARNED_FILE_NAME)


class LearnedFile:
    """Loads and saves one :class:`LearnedPeaks` table at ``path``.

    Attributes:
        load_warning: what went wrong at load, in words naming the file; ``None`` when it loaded (or was missing).
    """

    def __init__(self, path: Path, table: LearnedPeaks):
        self.path = path
        self.table = table
        self.load_warning: str | None = None
        self._writable = True

    def load(self) -> LearnedPeaks:
        """Fills the table from the file; a missing file is an empty table, a bad one is set aside."""
        self.load_warning = None
        loaded = load_json_file(self.path, self._fill)
        if loaded.problem is not None:
            self._writable = loaded.writable  # unreadable only now, or not set aside: never overwritten
            self._warn(f"{loaded.problem}; learning starts afresh")
        return self.table

    def _fill(self, raw: object) -> LearnedPeaks:
        self.table.load_json(raw)
        return self.table

    def save(self, *, everything: bool = False) -> bool:
        """Writes the table when what its predictions are made from changed since the last save (a new class, a
        peak that moved), so a prompt of nodes that took nothing writes nothing; with ``everything``, when anything
        was learned at all (at exit: the runs' counts and last figures too). ``False`` when nothing was written, or
        it could not be (logged once)."""
        table = self.table
        if not ((table.changed or (everything and table.unsaved)) and self._writable):
            return False
        table.changed = table.unsaved = False
        try:
            write_atomically(self.path, json.dumps(table.to_json(), separators=(",", ":")) + "\n")
        except OSError as error:
            self._writable = False
            self._warn(f"{self.path} could not be written ({error.strerror or error}); learning goes on in memory")
            return False
        return True

    def _warn(self, message: str) -> None:
        self.load_warning = message
        logger.warning("comfy_memhooks predictive cleanup: %s", message)


def load_learned_file(path: Path | None = None) -> LearnedFile:
    """The learned peaks kept at ``path`` (:func:`default_learned_path` by default), read now."""
    learned = LearnedFile(path if path is not None else default_learned_path(), LearnedPeaks())
    learned.load()
    return learned
