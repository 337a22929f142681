"""ComfyUI's modules are named only in ``comfy_memhooks/comfyui_modules/``, and found there when ComfyUI loaded them.

An AST scan of every other module finds no lookup of a ComfyUI module by name: no ``import``, no
``sys.modules.get(...)``, ``sys.modules[...]``, ``... in sys.modules`` or ``importlib.import_module(...)`` naming one
(a lookup by anything but a literal name is refused too, since the scan cannot read it). Prose and detail strings that
mention ``comfy.model_management.soft_empty_cache()`` are text, not lookups, and are left alone.
"""

from __future__ import annotations

import ast
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from comfy_memhooks.comfyui_modules import (
    aimdo,
    cli_args,
    memory_management,
    models,
    process,
    system_memory,
    user_directory,
)

PACKAGE = Path(__file__).resolve().parents[1] / "comfy_memhooks"
ADAPTER = PACKAGE / "comfyui_modules"
COMFYUI_MODULE = re.compile(
    r"^(comfy|execution|server|nodes|folder_paths|comfyui_version)(\.|$)|^(comfy_execution|comfy_api|comfy_aimdo)"
)
IMPORTERS = {"import_module", "__import__"}


def _is_sys_modules(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "modules"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def _named(node: ast.AST | None) -> str | None:
    """The literal a lookup names; ``"?"`` when it is not a literal (the scan cannot tell which module it is)."""
    if node is None:
        return None
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else "?"


def module_lookups(source: str) -> list[tuple[int, str]]:
    """Each module looked up by name in ``source``: (line, name), the name ``"?"`` where it is not a literal."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Subscript) and _is_sys_modules(node.value):
            found.append((node.lineno, _named(node.slice) or "?"))
        elif isinstance(node, ast.Compare) and any(_is_sys_modules(side) for side in node.comparators):
            if any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
                found.append((node.lineno, _named(node.left) or "?"))
        elif isinstance(node, ast.Call):
            function = node.func
            by_sys_modules = (
                isinstance(function, ast.Attribute)
                and function.attr in {"get", "pop", "setdefault", "__getitem__", "__contains__"}
                and _is_sys_modules(function.value)
            )
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
            if by_sys_modules or name in IMPORTERS:
                found.append((node.lineno, _named(node.args[0] if node.args else None) or "?"))
    return found


def comfyui_lookups(source: str) -> list[tuple[int, str]]:
    return [(line, name) for line, name in module_lookups(source) if name == "?" or COMFYUI_MODULE.match(name)]


def test_no_module_outside_the_adapter_looks_up_a_comfyui_module() -> None:
    outside = [path for path in sorted(PACKAGE.rglob("*.py")) if ADAPTER not in path.parents]
    assert len(outside) > 50
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {name}"
        for path in outside
        for line, name in comfyui_lookups(path.read_text())
    ]
    assert found == []


def test_the_scan_sees_every_kind_of_lookup_and_leaves_text_alone() -> None:
    source = '''
import sys, importlib
import comfy.model_management
from comfy_execution.graph import ExecutionList
import execution as comfy_execution
module = sys.modules.get("comfy_aimdo.control")
server = sys.modules["server"]
loaded = "folder_paths" not in sys.modules
nodes = importlib.import_module("nodes")
api = __import__("comfy_api.latest")
by_name = sys.modules.get(NAME)
"""Calls comfy.model_management.soft_empty_cache()."""
detail = "comfy.model_management.soft_empty_cache()"
logger.info("comfy.model_management is missing")
torch = sys.modules.get("torch")
from comfy_memhooks.comfy import auto
from .comfy import panel
'''
    assert comfyui_lookups(source) == [
        (3, "comfy.model_management"),
        (4, "comfy_execution.graph"),
        (5, "execution"),
        (6, "comfy_aimdo.control"),
        (7, "server"),
        (8, "folder_paths"),
        (9, "nodes"),
        (10, "comfy_api.latest"),
        (11, "?"),
    ]


def test_the_adapter_finds_a_module_loaded_after_it_and_forgets_one_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "comfy.model_management", raising=False)
    assert models.comfy_model_management() is None
    loaded = types.ModuleType("comfy.model_management")
    monkeypatch.setitem(sys.modules, "comfy.model_management", loaded)
    assert models.comfy_model_management() is loaded
    monkeypatch.delitem(sys.modules, "comfy.model_management")
    assert models.comfy_model_management() is None


@pytest.mark.parametrize(
    ("name", "lookup"),
    [
        ("comfy.model_management", models.comfy_model_management),
        ("comfy.memory_management", memory_management.comfy_memory_management),
        ("comfy.system_memory", system_memory.comfy_system_memory),
        ("comfy.cli_args", cli_args.comfy_cli_args),
        ("comfy_aimdo.control", aimdo.comfy_aimdo_control),
        ("comfy_aimdo.model_vbar", aimdo.comfy_aimdo_model_vbar),
        ("folder_paths", user_directory.comfyui_folder_paths),
        ("execution", process.comfyui_execution),
        ("server", process.comfyui_server),
        ("nodes", process.comfyui_nodes),
    ],
)
def test_each_lookup_answers_the_module_of_its_name(
    monkeypatch: pytest.MonkeyPatch, name: str, lookup: Callable[[], object]
) -> None:
    monkeypatch.delitem(sys.modules, name, raising=False)
    assert lookup() is None
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    assert lookup() is module


def test_the_attributes_read_are_none_outside_comfyui(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "comfy.cli_args", raising=False)
    monkeypatch.delitem(sys.modules, "comfyui_version", raising=False)
    assert cli_args.comfy_args() is None
    assert process.loaded_comfyui_version() is None
    args = types.SimpleNamespace(listen="0.0.0.0")
    monkeypatch.setitem(sys.modules, "comfy.cli_args", types.SimpleNamespace(args=args))
    monkeypatch.setitem(sys.modules, "comfyui_version", types.SimpleNamespace(__version__="0.33.0"))
    assert cli_args.comfy_args() is args
    assert process.loaded_comfyui_version() == "0.33.0"
    monkeypatch.setitem(sys.modules, "comfyui_version", types.SimpleNamespace(__version__=33))
    assert process.loaded_comfyui_version() is None
