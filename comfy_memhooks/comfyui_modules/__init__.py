"""ComfyUI's own modules, looked up where ComfyUI loaded them (``sys.modules``), never imported.

comfy_memhooks runs inside ComfyUI, but is also imported by its tests, its command line and its standalone panel,
where no ComfyUI exists; importing one of ComfyUI's modules there would fail, and inside ComfyUI it could load a
module out of the order ComfyUI loads them in. So every module of ComfyUI is found only in ``sys.modules``, at the
moment it is needed, and this package is the one place that spells their names: one module here for each of
ComfyUI's (or comfy-aimdo's), each function returning the loaded module, or the one attribute its callers read,
and ``None`` outside ComfyUI. Nothing is cached: a module ComfyUI loads later, or one a test puts in
``sys.modules``, is found on the next call.

The layer right above the shared base: it imports nothing of comfy_memhooks, and every layer may use it.
"""

from __future__ import annotations
