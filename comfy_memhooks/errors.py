"""The one error type for bad input, wherever it comes from: a node widget, a request body, a settings file."""

from __future__ import annotations

import json

# A field name quoted in a message: a request may send a key of any length, and the message must stay one line.
MAX_SHOWN_FIELD_CHARS = 80


class InvalidSetting(ValueError):
    """A value that is not allowed. The message names the field and what it may be; nothing was changed.

    Attributes:
        field: the input, body field or settings key that was wrong.
        problem: what is wrong with it and what is allowed.
    """

    def __init__(self, field: str, problem: str):
        super().__init__(f"{shown_field(field)}: {problem}")
        self.field = field
        self.problem = problem


def shown_field(field: str) -> str:
    """A field name as a message shows it: plain when it reads as a name; quoted, and cut short, when it does not.

    A request body's keys are anyone's: an empty key, one of spaces or control characters, or a megabyte long,
    would otherwise make a message that names nothing the user can see.
    """
    if field and field.isprintable() and field.strip() == field and len(field) <= MAX_SHOWN_FIELD_CHARS:
        return field
    if not field:
        return 'the key "" (an empty name)'
    quoted = json.dumps(field[:MAX_SHOWN_FIELD_CHARS])
    more = f" (first {MAX_SHOWN_FIELD_CHARS} of {len(field)} characters)" if len(field) > MAX_SHOWN_FIELD_CHARS else ""
    return f"the key {quoted}{more}"


class SettingsFileProtected(RuntimeError):
    """The settings file is kept as it is: it could not be read or set aside, so writing would destroy it.

    Attributes:
        reason: why, in words naming the file; shown to the user who tried to save.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
