"""ComfyUI's entry point for comfy_memhooks.

ComfyUI imports this file under a module name made from its path, so a relative import would give the library a
second, private copy; other extensions that ``import comfy_memhooks`` to subscribe to its signals would then see
another engine and other signals. The library is therefore loaded once, under its own name.
"""

import importlib.util
import os
import sys

_LIBRARY = "comfy_memhooks"


def _load_library():
    loaded = sys.modules.get(_LIBRARY)
    if loaded is not None and hasattr(loaded, "setup"):
        return loaded
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), _LIBRARY)
    spec = importlib.util.spec_from_file_location(
        _LIBRARY, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[_LIBRARY] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_LIBRARY]
        raise
    return module


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = _load_library().setup()
WEB_DIRECTORY = "./web/js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
