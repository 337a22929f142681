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
