"""The package's import graph runs one way, top down, and keeps its layers apart.

Every module under ``aoaffm/`` is parsed (not imported) and every import statement counts,
at module level or inside a function: an import inside a function is still a dependency,
only a later one. ``from aoaffm.fast import native`` depends on ``aoaffm.fast.native``;
``from aoaffm.models import create`` on the package ``aoaffm.models`` (its ``__init__``);
importing ``aoaffm.train.optim`` from outside ``aoaffm.train`` also runs ``aoaffm.train``'s
``__init__``, so it depends on that too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "aoaffm"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if _is_package(module) else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_names(module: str, tree: ast.AST) -> set[str]:
    """Every dotted name ``module`` imports, anywhere in its code (submodules resolved)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            names.add(source)
            names.update(
                f"{source}.{alias.name}"
                for alias in node.names
                if f"{source}.{alias.name}" in MODULES
            )
    return names


def dependencies(module: str) -> set[str]:
    """The ``aoaffm`` modules ``module`` runs when its imports execute."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()
    for name in imported_names(module, tree):
        parts = name.split(".")
        for end in range(1, len(parts) + 1):  # the packages on the way run their __init__
            target = ".".join(parts[:end])
            if target not in MODULES or target == module:
                continue
            if _is_package(target) and module.startswith(target + "."):
                continue  # a module's own package: already running when it is imported
            found.add(target)
    return found


GRAPH = {module: dependencies(module) for module in MODULES}
ALL_IMPORTS = {
    module: imported_names(module, ast.parse(path.read_text(encoding="utf-8")))
    for module, path in MODULES.items()
}


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_parser_sees_the_imports_it_must():
    assert "aoaffm.fast.native" in GRAPH["aoaffm.fast.kernels"]
    assert "aoaffm.models" in GRAPH["aoaffm.fast.models"]
    assert "aoaffm.models.attention" in GRAPH["aoaffm.models.registry"]
    assert "aoaffm.models" in GRAPH["aoaffm.config"]  # imported inside a function


def test_no_import_cycle_counting_imports_inside_functions():
    state: dict[str, str] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", [m for m in MODULES if _inside(m, "aoaffm.models")])
def test_the_reference_models_know_nothing_of_the_backend_or_the_report(module):
    imports = ALL_IMPORTS[module]
    assert not {n for n in imports if _inside(n, "aoaffm.fast")}, "the CPU backend"
    assert not {n for n in imports if _inside(n, "aoaffm.report")}, "the report"
    assert not {n for n in imports if n.split(".")[0] in ("ctypes", "subprocess")}
    assert not list((PACKAGE / "models").glob("*.cpp")), "C++ source belongs to aoaffm.fast"


def test_only_the_report_itself_imports_the_report_inside_the_package():
    """(stages/ and benchmarks/ import it too: they are above the package.)"""
    importers = {
        module
        for module, imports in ALL_IMPORTS.items()
        if not _inside(module, "aoaffm.report")
        and any(_inside(n, "aoaffm.report") for n in imports)
    }
    assert importers == set()


def test_the_trainer_uses_only_the_backends_public_entry_point():
    """``aoaffm.fast`` itself (select, FastModel, flush_denormals, STEP_CODE), never the
    kernels, loader or fused steps behind it; and the backend sits below the trainer."""
    for module, imports in ALL_IMPORTS.items():
        if _inside(module, "aoaffm.train"):
            reached = {n for n in imports if _inside(n, "aoaffm.fast")}
            assert reached <= {"aoaffm.fast"}, (module, reached)
        if _inside(module, "aoaffm.fast"):
            assert not any(_inside(n, "aoaffm.train") for n in imports), module
