"""The selection core imports numpy and the standard library only (DESIGN.md, issue 2)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "services/selection/grace_selection/core"
ALLOWED_THIRD_PARTY = {"numpy"}


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_only_numpy_and_stdlib(path: Path) -> None:
    roots = _imported_roots(path)
    foreign = {
        root
        for root in roots
        if root not in sys.stdlib_module_names
        and root not in ALLOWED_THIRD_PARTY
        and root != "grace_selection"
        and root != "__future__"
    }
    assert not foreign, f"{path.name} imports {sorted(foreign)}; the core may import only numpy"


def test_core_modules_import_only_core_of_the_project() -> None:
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").startswith("grace_selection")
            ):
                assert (node.module or "").startswith("grace_selection.core"), (
                    f"{path.name} imports {node.module}"
                )
