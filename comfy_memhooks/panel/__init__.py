"""The Memory panel's server side: state, JSON replies, routes, live samples, manual requests, standalone server.

Shared by ComfyUI's server (through :mod:`comfy_memhooks.comfy.panel`) and the standalone one
(:mod:`.standalone`). Importing this package loads nothing: aiohttp comes with :mod:`.routes` and
:mod:`.standalone` only.
"""
