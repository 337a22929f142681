"""The repository's ``__init__.py`` as ComfyUI loads it: under a path-made name, in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_as_comfyui_does(extra: str = "") -> subprocess.CompletedProcess[str]:
    # ComfyUI's nodes.load_custom_node: spec_from_file_location(path.replace(".", "_x_"), <dir>/__init__.py)
    script = (
        textwrap.dedent(
            """
        import importlib.util, logging, sys, types
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        """
        )
        + extra
        + textwrap.dedent(
            f"""
        path = {str(ROOT)!r}
        name = path.replace(".", "_x_")
        spec = importlib.util.spec_from_file_location(name, path + "/__init__.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        import comfy_memhooks, comfy_memhooks.engine.core
        print(sorted(module.NODE_CLASS_MAPPINGS), module.WEB_DIRECTORY)
        print(module.NODE_CLASS_MAPPINGS["UnifiedMemoryManager"].__module__)
        print(comfy_memhooks.__file__)
        """
        )
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )


def test_the_library_is_loaded_once_under_its_own_name() -> None:
    done = load_as_comfyui_does()
    assert done.returncode == 0, done.stderr
    mappings, module_name, library_file = done.stdout.splitlines()
    assert mappings == "['UnifiedMemoryManager'] ./web/js"
    assert module_name == "comfy_memhooks.comfy.node"  # the node's class lives in the importable library
    assert library_file == str(ROOT / "comfy_memhooks" / "__init__.py")


def test_a_node_name_registered_by_another_pack_is_warned_about() -> None:
    other_pack = (
        "nodes = types.ModuleType('nodes')\n"
        "class Other: RELATIVE_PYTHON_MODULE = 'custom_nodes.other-memory-pack'\n"
        "nodes.NODE_CLASS_MAPPINGS = {'UnifiedMemoryManager': Other}\n"
        "sys.modules['nodes'] = nodes\n"
    )
    done = load_as_comfyui_does(other_pack)
    assert done.returncode == 0, done.stderr
    assert "custom_nodes.other-memory-pack" in done.stderr
    assert "'UnifiedMemoryManager'" in done.stderr
