"""The layers of docs/architecture.md hold: import-linter's contracts ([tool.importlinter] in pyproject.toml).

Bottom to top: core, model, the engines (connectors, jobs, sharing_server, dashboard, which never
import each other), governance, the app (with the demo municipality and the stand-ins beside it)
and the DAG files. ``lint-imports`` checks every import, including those inside functions.

The last tests break the code on purpose, in a copy, to show that the contracts catch it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
CONTRACTS = {contract["id"]: contract for contract in CONFIG["contracts"]}
# Modules of ggm_lakehouse that may import the demo municipality and the stand-ins: `ggm run`'s wiring.
APP_WIRING = {"ggm_lakehouse.cli", "ggm_lakehouse.demo"}


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the packages under ``cwd``, with the contracts of ``cwd/pyproject.toml``."""
    beside_python = Path(sys.executable).parent / "lint-imports"
    command = [str(beside_python) if beside_python.exists() else shutil.which("lint-imports") or "lint-imports", "--no-cache"]
    # Wide lines: each contract's name and KEPT/BROKEN stay on one line of the summary.
    env = {**os.environ, "PYTHONPATH": str(cwd), "COLUMNS": "1000", "NO_COLOR": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def broken_contracts(output: str) -> set[str]:
    """Ids of the contracts ``lint-imports`` reported as broken."""
    by_name = {contract["name"]: contract_id for contract_id, contract in CONTRACTS.items()}
    summary = re.finditer(r"^(.+?) BROKEN(?: \(.*\))?$", output, re.MULTILINE)  # "... BROKEN (1 ignored import)"
    return {by_name.get(m.group(1), m.group(1)) for m in summary}


def broken_section(output: str) -> str:
    """What ``lint-imports`` says about the broken contracts (the import chains), for an assertion message."""
    _, marker, rest = output.partition("Broken contracts")
    return (marker + rest) if marker else output


def layer_modules() -> set[str]:
    """Every module the layers contract names (``|`` and ``:`` separate the modules of one layer)."""
    return {m.strip().strip("()") for layer in CONTRACTS["layers"]["layers"] for m in re.split(r"[|:]", layer)}


def ggm_lakehouse_modules() -> set[str]:
    """The direct children of ggm_lakehouse: its modules and subpackages."""
    package = ROOT / "ggm_lakehouse"
    names = {p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}
    names |= {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    return {f"ggm_lakehouse.{name}" for name in names}


def test_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, (
        f"lint-imports found imports across the layers (docs/architecture.md, 'Layers'); broken: "
        f"{sorted(broken_contracts(result.stdout))}\n{broken_section(result.stdout)}{result.stderr}"
    )
    assert "BROKEN" not in result.stdout and f"{len(CONTRACTS)} kept" in result.stdout


def test_every_module_of_ggm_lakehouse_has_a_layer():
    """A new module of the glue package must be placed in a layer (and, unless it is the app's demo
    wiring, be barred from the demo code), or the contracts would say nothing about it."""
    unplaced = sorted(ggm_lakehouse_modules() - layer_modules())
    assert not unplaced, f"add {unplaced} to a layer of [tool.importlinter] 'layers' in pyproject.toml"
    barred = set(CONTRACTS["demo-only-in-app-wiring"]["source_modules"])
    unbarred = sorted(ggm_lakehouse_modules() - APP_WIRING - barred)
    assert not unbarred, f"add {unbarred} to source_modules of 'demo-only-in-app-wiring' in pyproject.toml"


def _copy_product(target: Path) -> None:
    """The Python files of every root package and the contracts, as a checkout of their own."""
    def not_python(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n == "__pycache__" or (not n.endswith(".py") and not (Path(folder) / n).is_dir())]

    for package in CONFIG["root_packages"]:
        shutil.copytree(ROOT / package, target / package, ignore=not_python)
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")


def _append(path: Path, code: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n\n" + code + "\n", encoding="utf-8")


# Each: a file, what is added to it, and the contracts that must then break, indirect imports included
# (the lineage reads the connectors, so through them it would reach the jobs; the jobs read the lake
# addressing, so through it they would reach the pipeline's Airflow imports).
VIOLATIONS = {
    "a connector imports a Spark job": (
        "connectors/errors.py", "import jobs.silver  # noqa",
        {"layers", "connectors-without-spark-or-airflow", "governance-without-jobs"}),
    "a connector reads an Airflow connection itself": (
        "connectors/errors.py", "def _connection():\n    from airflow.sdk import Connection  # noqa",
        {"connectors-without-spark-or-airflow"}),
    "a job imports Airflow inside a function": (
        "jobs/schema_drift.py", "def _scheduler():\n    from airflow.sdk import Connection  # noqa", {"jobs-without-airflow"}),
    "core imports the app": (
        "ggm_lakehouse/lake.py", "def _report():\n    from ggm_lakehouse import pipeline  # noqa",
        {"layers"}),
    "the dashboard imports the demo municipality": (
        "dashboard/site.py", "from demo_gemeente import model as _demo  # noqa", {"layers", "demo-only-in-app-wiring"}),
}


@pytest.mark.parametrize("violation", sorted(VIOLATIONS))
def test_a_forbidden_import_breaks_its_contracts(violation, tmp_path):
    path, code, expected = VIOLATIONS[violation]
    _copy_product(tmp_path)
    _append(tmp_path / path, code)
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr
    assert broken_contracts(result.stdout) == expected, broken_section(result.stdout)
