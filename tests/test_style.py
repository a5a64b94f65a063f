"""The code base stays ruff clean (lint rules and formatting live in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ruff() -> list[str]:
    beside_python = Path(sys.executable).with_name("ruff")
    if beside_python.exists():
        return [str(beside_python)]
    found = shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: install the test extra (pip install -e '.[test]')")
    return [found]


def test_ruff_lint_is_clean():
    result = subprocess.run([*_ruff(), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_functions_fit_on_a_screen():
    """No function of the package runs past 60 lines (its docstring not counted) unless its
    docstring says why it is long ("Long because ...")."""
    import ast

    too_long = []
    for path in sorted((ROOT / "bertprobe").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            docstring = ast.get_docstring(node) or ""
            first = node.body[0]
            docstring_lines = first.end_lineno - first.lineno + 1 if docstring else 0
            length = node.end_lineno - node.lineno + 1 - docstring_lines
            if length > 60 and "Long because" not in docstring:
                too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not too_long, too_long
