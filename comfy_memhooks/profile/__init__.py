"""The per-node profile: each node's memory before and after it ran, for the last prompts.

:class:`ProfileRecorder` listens to the executor hook's signals and fills a :class:`ProfileStore`; the panel, the
node's report and other extensions read the store (:func:`get_profile_store`) or subscribe to
``signals.node_profiled``.
"""

from __future__ import annotations

from .recorder import ProfileRecorder
from .records import NodeProfile, PromptProfile, VramPeakSource
from .store import NODES_KEPT_PER_PROMPT, PROMPTS_KEPT, ProfileStore, get_profile_store

__all__ = [
    "NODES_KEPT_PER_PROMPT",
    "PROMPTS_KEPT",
    "NodeProfile",
    "ProfileRecorder",
    "ProfileStore",
    "PromptProfile",
    "VramPeakSource",
    "get_profile_store",
]
