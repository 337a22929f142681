"""The one error type for bad input, wherever it comes from: a node widget, a request body, a settings file."""

from __future__ import annotations


class InvalidSetting(ValueError):
    """A value that is not allowed. The message names the field and what it may be; nothing was changed.

    Attributes:
        field: the input, body field or settings key that was wrong.
        problem: what is wrong with it and what is allowed.
    """

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class SettingsFileProtected(RuntimeError):
    """The settings file is kept as it is: it could not be read or set aside, so writing would destroy it.

    Attributes:
        reason: why, in words naming the file; shown to the user who tried to save.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
