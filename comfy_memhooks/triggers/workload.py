"""A node's workload (frames x frame size), read from its inputs as the prompt gives them, before it runs.

A video node's memory grows with frames x frame size. Before a node runs, only its prompt inputs are visible:
widget values (VideoHelperSuite's ``frame_load_cap``, ``custom_width``, ``custom_height``; a generator's
``width``, ``height``, ``batch_size``/``length``) and links to the nodes that feed it. A node with no such widget
inherits the workload of what feeds it (the frames a loader decoded flow into the nodes after it), so a node that
takes an IMAGE batch is scaled by the loader's frame count and size. Reading a few keys of a dict: microseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .learned import Workload

FRAME_KEYS = ("frame_load_cap", "image_load_cap", "frames", "frame_count", "num_frames", "length", "batch_size")
"""Widgets that count frames (or images of a batch); the first one set wins. VideoHelperSuite's cap 0 means
"every frame", which is not known before the video is read: no frame workload then."""
WIDTH_KEYS = ("custom_width", "width")
HEIGHT_KEYS = ("custom_height", "height")
_WIDGET_KEYS = frozenset(FRAME_KEYS + WIDTH_KEYS + HEIGHT_KEYS)


def _count(inputs: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = inputs.get(key)
        if type(value) is int and value > 0:
            return value
    return None


def workload_of(inputs: object, upstream: Callable[[str], Workload | None]) -> Workload | None:
    """The node's own workload from its widgets, else the largest one among the nodes linked to its inputs.

    Args:
        inputs: the node's ``inputs`` in the prompt: widget values, and links as ``[node_id, output_index]``.
        upstream: a node of the same prompt that ran before, to its workload (``None`` when it had none).
    """
    if not isinstance(inputs, Mapping):
        return None
    if _WIDGET_KEYS.isdisjoint(inputs):  # most nodes: no such widget, one look at each input's name
        return _inherited(inputs, upstream)
    frames = _count(inputs, FRAME_KEYS)
    width = _count(inputs, WIDTH_KEYS)
    height = _count(inputs, HEIGHT_KEYS)
    pixels = width * height if width is not None and height is not None else None
    if frames is not None and pixels is not None:
        return Workload("frame_pixels", frames * pixels)
    if frames is not None:
        return Workload("frames", frames)
    if pixels is not None:
        return Workload("pixels", pixels)
    return _inherited(inputs, upstream)


def _inherited(inputs: Mapping[str, Any], upstream: Callable[[str], Workload | None]) -> Workload | None:
    inherited: Workload | None = None
    for value in inputs.values():
        if type(value) is list and len(value) == 2 and isinstance(value[0], str):
            found = upstream(value[0])
            if found is not None and (inherited is None or found.units > inherited.units):
                inherited = found
    return inherited
