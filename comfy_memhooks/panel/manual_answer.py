"""What became of a manual request ("Optimize now" in the panel): the answer the browser is sent.

Apart from :mod:`.manual`, which carries requests out, so that the one JSON boundary (:mod:`.payloads`) can turn an
answer into JSON without importing the engine that made it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..engine.history import OptimizationRecord
from ..engine.modes import Mode


class ManualState(str, enum.Enum):
    """What became of a manual request."""

    PERFORMED = "performed"
    QUEUED = "queued"
    COOLDOWN = "cooldown"
    NOT_PERFORMED = "not performed"


@dataclass(frozen=True, slots=True)
class ManualAnswer:
    """The answer to one manual request, sent back to the browser.

    Attributes:
        state: see :class:`ManualState`.
        mode: the mode that ran, or that will run when queued.
        reason: what happened, in words for the user.
        record: the history record, when the optimization ran.
        cooldown_remaining_seconds: how long the cooldown still holds, when it is what stopped the request.
    """

    state: ManualState
    mode: Mode
    reason: str
    record: OptimizationRecord | None = None
    cooldown_remaining_seconds: float | None = None
