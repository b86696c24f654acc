"""The selection core imports numpy, the standard library and, for its compiled greedy loops,
numba (DESIGN.md, issue 2; issue 15 part 4)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "services/selection/grace_selection/core"
NAMES = ROOT / "proto/grace_proto/names.py"
ALLOWED_THIRD_PARTY = {"numpy", "numba", "llvmlite"}
# numba is an optional extra: only the kernels module imports it, and only on first use.
# llvmlite is numba's code generator (installed with it): join_kernels builds the float16
# read with it.
NUMBA_MODULES = {
    "kernels.py",
    "join_kernels.py",
    "neighborhood_join_kernels.py",
    "estimation_kernels.py",
    "similarity_kernels.py",
}
# The one module outside the core it may import: the names of selectors, rules and sources,
# which the wire models share. It is itself standard library only (tested below).
ALLOWED_PROJECT_MODULES = {"grace_proto.names"}


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def _imported_roots(path: Path) -> set[str]:
    return {
        module.split(".")[0]
        for module in _imported_modules(path)
        if module not in ALLOWED_PROJECT_MODULES
    }


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
    if path.name not in NUMBA_MODULES:
        compiler = roots & {"numba", "llvmlite"}
        assert not compiler, f"{path.name} imports {sorted(compiler)}; only the kernel modules may"


def test_importing_the_core_does_not_import_numba() -> None:
    # numba costs about half a second to import; a process that never selects must not pay it.
    code = (
        "import sys, grace_selection.core, grace_selection.core.selectors, "
        "grace_selection.core.rounds; print('numba' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "False"


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


def test_the_names_module_the_core_shares_imports_only_the_standard_library() -> None:
    roots = _imported_roots(NAMES)
    foreign = {root for root in roots if root not in sys.stdlib_module_names} - {"__future__"}
    assert not foreign, f"grace_proto.names imports {sorted(foreign)}; it must stay dependency-free"
