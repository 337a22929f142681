"""The per-node profile: each node's memory before, at its peak while it ran, and after, for the last prompts.

:class:`ProfileRecorder` (two steps of the per-node pipeline, :mod:`..pipeline`) fills a :class:`ProfileStore`; the
panel, the node's report and other extensions read the store (``comfy_memhooks.get_profile_store()``) or
subscribe to ``signals.node_profiled``.
"""

from __future__ import annotations

from .recorder import ProfileRecorder
from .records import NodeProfile, PromptProfile, VramPeakSource
from .store import NODES_KEPT_PER_PROMPT, PROMPTS_KEPT, ProfileStore

__all__ = [
    "NODES_KEPT_PER_PROMPT",
    "PROMPTS_KEPT",
    "NodeProfile",
    "ProfileRecorder",
    "ProfileStore",
    "PromptProfile",
    "VramPeakSource",
]
