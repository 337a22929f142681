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
    raise InvalidSetting(field, f"{_short(value)} is not a boolean; use true or false")


def parse_number(value: object, field: str) -> float:
    """A finite real number, not a boolean, not NaN.

    An integer too large for a float (a JSON body may spell 1e400 in digits) raises ``OverflowError`` in
    ``float()``; that is bad input like any other, so it is named here rather than escaping as a server error.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidSetting(field, f"{_short(value)} is not a number")
    try:
        number = float(value)
    except OverflowError:
        raise InvalidSetting(field, "the number is too large") from None
    if math.isnan(number):
        raise InvalidSetting(field, "NaN is not allowed")
    if math.isinf(number):
        raise InvalidSetting(field, "the number is too large (infinite)")
    return number


def _short(value: object) -> str:
    """``repr`` cut short: a value quoted in an error must not be a 5,000-digit integer (or raise converting one)."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's digit limit for conversion to text
        return "a very large number"
    return text if len(text) <= 60 else text[:57] + "..."


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
    raise InvalidSetting(field, f"{_short(value)} is not {noun}; use one of {names}")
