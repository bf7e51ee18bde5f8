"""docs/guarantees.md lists only promises a test proves: every test it names must exist."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUARANTEES = ROOT / "docs" / "guarantees.md"


def _tests_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")}


def _named_tests(text: str) -> list[tuple[str, str]]:
    """``file::function`` references; ``::function`` alone continues the file named before it in the same cell."""
    named, current = [], None
    for file, function in re.findall(r"`(test_[\w/]*\.py)?::(test_\w+)`", text):
        current = file or current
        named.append((current, function))
    return named


def test_every_test_the_guarantees_name_exists():
    text = GUARANTEES.read_text(encoding="utf-8")
    named = _named_tests(text)
    assert len(named) > 50
    missing = []
    for file, function in named:
        path = next(iter(sorted(ROOT.joinpath("tests").rglob(file))), None) if file else None
        if path is None or function not in _tests_of(path):
            missing.append(f"{file}::{function}")
    assert missing == [], f"docs/guarantees.md names tests that do not exist: {missing}"
