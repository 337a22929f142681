"""The architecture, checked: layers import only downwards, no cycles, a short dependency chain, small modules.

The layers, bottom to top (docs/architecture.md draws them): the shared base (errors, the failure counter, the
checks, the public signals) → comfyui_modules (ComfyUI's own modules, found in ``sys.modules``) → probe → profile →
engine → triggers → hook → panel → comfy → the command line and the package's front door. A module may import its
own layer and the ones below, never one above.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "comfy_memhooks"
BASE = {"errors", "failures", "validation", "signals", "pipeline", "ticker"}
LAYERS = ("base", "comfyui_modules", "probe", "profile", "engine", "triggers", "hook", "panel", "comfy", "front")
MAX_CHAIN = 12  # the front door down to readings.py through the layers (it was 14 with one flat package)
MAX_CHAIN_IN_A_LAYER = 5  # counting the subpackage's own __init__
MAX_LINES = 400


def layer_of(module: str) -> str:
    head = module.split(".", maxsplit=1)[0]
    if head in BASE:
        return "base"
    if head in LAYERS:
        return head
    return "front"  # cli, __main__, the package's __init__


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "__init__"


def _type_only(tree: ast.Module) -> set[ast.AST]:
    """The imports under ``if TYPE_CHECKING:``: annotations only, never loaded when the code runs."""
    return {
        node
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
        for statement in block.body
        for node in ast.walk(statement)
    }


def imports_of(path: Path, *, at_run_time: bool = False) -> set[str]:
    """The package's modules that ``path`` imports, at module level or inside functions, as dotted names;
    ``at_run_time`` leaves out the imports made for annotations only (``if TYPE_CHECKING:``)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    if name == "__init__":
        package = []
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    skipped = _type_only(tree) if at_run_time else set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.startswith("comfy_memhooks"):
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                candidate = ".".join([*target, alias.name])
                found.add(candidate if _exists(candidate) else ".".join(target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("comfy_memhooks."):
                    found.add(alias.name.removeprefix("comfy_memhooks."))
    return {module for module in found if module and _exists(module)}


def _exists(module: str) -> bool:
    path = PACKAGE.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


@functools.cache
def graph(at_run_time: bool = False) -> dict[str, set[str]]:
    """Each module's imports of the package; every one must go downwards, and those made when the code runs must
    form short chains."""
    return {module_name(path): imports_of(path, at_run_time=at_run_time) for path in PACKAGE.rglob("*.py")}


def test_layers_import_only_downwards() -> None:
    upward = []
    for module, imported in graph().items():
        for target in imported:
            if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(module)):
                upward.append(f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})")
    assert upward == []


def test_the_hook_mechanism_knows_nothing_of_modes_thresholds_or_settings() -> None:
    hook_imports = {target for module, imported in graph().items() if module.startswith("hook") for target in imported}
    assert {layer_of(target) for target in hook_imports} <= {"base", "comfyui_modules", "hook"}


def test_the_lookups_into_comfyui_stand_on_the_base_alone() -> None:
    adapter_imports = {
        target for module, imported in graph().items() if module.startswith("comfyui_modules") for target in imported
    }
    assert {layer_of(target) for target in adapter_imports} <= {"base", "comfyui_modules"}


def test_a_mode_drags_in_no_action_and_the_report_no_engine() -> None:
    assert graph()["engine.modes"] == {"validation"}
    assert "engine.core" not in graph()["engine.report"]


def test_no_import_cycles_and_a_short_chain() -> None:
    modules = graph(at_run_time=True)

    @functools.cache
    def depth(module: str, visiting: frozenset[str] = frozenset()) -> int:
        assert module not in visiting, f"import cycle through {module}"
        below = [depth(target, visiting | {module}) for target in modules[module] if target != module]
        return 1 + max(below, default=0)

    deepest = max(modules, key=depth)
    assert depth(deepest) <= MAX_CHAIN, f"{deepest} sits {depth(deepest)} levels deep"

    @functools.cache
    def depth_in_layer(module: str) -> int:
        same = [target for target in modules[module] if target != module and layer_of(target) == layer_of(module)]
        return 1 + max((depth_in_layer(target) for target in same), default=0)

    deepest_in_layer = max(modules, key=depth_in_layer)
    assert depth_in_layer(deepest_in_layer) <= MAX_CHAIN_IN_A_LAYER, deepest_in_layer


def test_no_module_is_over_400_lines() -> None:
    sources = [*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "web").rglob("*.js")]
    long = [
        f"{path.relative_to(PACKAGE.parent)}: {n}"
        for path in sources
        if (n := len(path.read_text().splitlines())) > 400
    ]
    assert long == []


def test_subscribing_to_the_signals_loads_neither_aiohttp_nor_the_panel() -> None:
    script = (
        "import sys; import comfy_memhooks.signals; "
        "print(sorted(m for m in sys.modules if m.startswith(('aiohttp', 'psutil', 'pynvml', 'comfy_memhooks'))))"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], cwd=PACKAGE.parent, capture_output=True, text=True, check=True, timeout=60
    )
    assert output.stdout.strip() == "['comfy_memhooks', 'comfy_memhooks.failures', 'comfy_memhooks.signals']"
