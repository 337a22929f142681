"""Checks for values that come from outside: node inputs, request bodies, the settings file.

Each parser takes the raw value and the field's name, and returns the checked value or raises
:class:`errors.InvalidSetting` naming the field and what is allowed. Written once, so the node, the routes and the
settings file say the same thing about the same mistake.
"""

from __future__ import annotations

import enum
import math
import numbers
from typing import TypeVar

from .errors import InvalidSetting

E = TypeVar("E", bound=enum.Enum)


def parse_bool(value: object, field: str) -> bool:
    """Only a real boolean: an API-format prompt can send ``"false"``, which Python would take as true."""
    if isinstance(value, bool):
        return value
    raise InvalidSetting(field, f"{value!r} is not a boolean; use true or false")


def parse_number(value: object, field: str) -> float:
    """A real number, not a boolean, not NaN."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidSetting(field, f"{value!r} is not a number")
    number = float(value)
    if math.isnan(number):
        raise InvalidSetting(field, "NaN is not allowed")
    return number


def parse_percent(value: object, field: str) -> float:
    """A threshold in percent: more than 0 and at most 100."""
    number = parse_number(value, field)
    if not 0 < number <= 100:
        raise InvalidSetting(field, f"{number:g} is outside the allowed range: more than 0 and at most 100 (percent)")
    return number


def parse_seconds(value: object, field: str, minimum: float = 0.0, maximum: float = math.inf) -> float:
    """A finite number of seconds from ``minimum`` to ``maximum``."""
    number = parse_number(value, field)
    if not minimum <= number <= maximum or math.isinf(number):
        if minimum == 0 and math.isinf(maximum):
            raise InvalidSetting(field, f"{number:g} is not allowed: use 0 (off) or a positive number of seconds")
        raise InvalidSetting(field, f"{number:g} is outside the allowed range {minimum:g} to {maximum:g} seconds")
    return number


def parse_choice(kind: type[E], value: object, field: str, noun: str, allowed: tuple[E, ...] | None = None) -> E:
    """The member of ``kind`` whose value is ``value`` (among ``allowed``, all by default)."""
    choices = allowed if allowed is not None else tuple(kind)
    if isinstance(value, kind) and value in choices:
        return value
    for choice in choices:
        if value == choice.value:
            return choice
    names = ", ".join(repr(choice.value) for choice in choices)
    raise InvalidSetting(field, f"{value!r} is not {noun}; use one of {names}")
