"""No product function is longer than 80 lines: a longer one is split into named steps.

Walks every ``.py`` file of the product (everything in the checkout except the tests, the
benchmarks, build output, virtual environments and data folders) with ``ast`` and measures each
function and method from its ``def`` line to its last line (decorators excluded)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 80
# Not product code: tests, benchmarks, build output, environments, data and generated state.
NOT_PRODUCT = {"tests", "bench", "build", "data", "airflow_home", "spark-warehouse", "node_modules"}


def _product_files() -> list[Path]:
    files = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if any(p in NOT_PRODUCT or p.startswith(".") or p.endswith(".egg-info") for p in parts[:-1]):
            continue
        files.append(path)
    return files


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(ROOT)
    return [
        f"{rel}:{node.lineno} {node.name} is {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_LINES
    ]


def test_product_packages_are_walked():
    tops = {p.relative_to(ROOT).parts[0] for p in _product_files()}
    expected = {"ggm_lakehouse", "connectors", "jobs", "sharing_server", "dashboard", "dags", "standins",
                "demo_gemeente"}
    assert expected <= tops, f"missing product packages: {sorted(expected - tops)}"
    assert not tops & {"tests", "bench", "build", ".venv"}


def test_no_product_function_is_longer_than_80_lines():
    offenders = [line for path in _product_files() for line in _long_functions(path)]
    assert not offenders, (
        f"{len(offenders)} function(s) longer than {MAX_LINES} lines; split them into named steps:\n"
        + "\n".join(offenders)
    )
