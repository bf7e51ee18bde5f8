"""Run reports: every step of a daily run leaves one JSON file under ``<data root>/runs/<date>/``.

Spark stages (in their own processes) and the Airflow tasks write them; the run summary,
the catalog and the benchmark read them back.
"""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from ggm_lakehouse.config import data_root


def runs_root() -> Path:
    """Folder with one sub-folder of reports per logical date."""
    return data_root() / "runs"


def runs_dir(logical_date: date) -> Path:
    """Folder with the reports of ``logical_date``."""
    return runs_root() / logical_date.isoformat()


def report_path(logical_date: date, name: str) -> Path:
    """Where the report ``name`` (a stage such as ``silver``, or ``extract_brp``) of a date is kept."""
    return runs_dir(logical_date) / f"{name}.json"


def write_report(logical_date: date, name: str, report: dict) -> Path:
    """Write a report atomically (temp file + rename) and return its path."""
    path = report_path(logical_date, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def read_reports(logical_date: date) -> dict[str, dict]:
    """Every report of ``logical_date`` by name."""
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(runs_dir(logical_date).glob("*.json"))}


def read_report(logical_date: date, name: str) -> dict | None:
    """The report ``name`` of ``logical_date``, or None when that step has not reported yet."""
    try:
        return json.loads(report_path(logical_date, name).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
