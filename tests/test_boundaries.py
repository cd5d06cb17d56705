"""The architecture holds: api never imports worker, worker never imports api, and the shared
core imports neither."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_top_levels(package: str) -> set[str]:
    names: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("api", {"worker"}), ("worker", {"api"}), ("mailgate", {"api", "worker"})],
)
def test_no_import_crosses_the_boundary(package: str, forbidden: set[str]) -> None:
    assert imported_top_levels(package) & forbidden == set()


@pytest.mark.parametrize(("module", "forbidden"), [("api", "worker"), ("worker.app", "api")])
def test_loading_one_side_loads_nothing_of_the_other(module: str, forbidden: str) -> None:
    # Import only the one side, then list what got loaded of the other.
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        f"print([m for m in sys.modules if m.split('.')[0] == {forbidden!r}])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"
