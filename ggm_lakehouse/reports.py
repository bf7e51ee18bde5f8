"""Run reports: every step of a daily run reports what it did, in the lake and as a file.

Spark stages and the Airflow tasks write them; the run summary, the catalog, the catch-up of
missed days, the stage skipping of reruns and the benchmarks read them back.

Where they live:

* a Delta table at ``<lake root>/governance/run_reports``, one row per report written (logical
  date, name, stage, run id, when, the report as JSON), appended with ``deltalake``. This is
  what readers use: when Spark runs elsewhere (a Databricks job cluster, a Spark cluster) the
  stage's report still reaches the lake that the Airflow host reads, where a file on the
  driver's disk would not;
* a JSON file ``<data root>/runs/<date>/<name>.json`` next to the run's logs, for people and
  tools that read files. A data root from before the table existed is read from its files.

``deltalake`` rather than Spark because non-Spark Airflow tasks report too, and a report must
not start a JVM (as for the verwerkingslog, :mod:`ggm_lakehouse.processing_log`).
"""
from __future__ import annotations

import json
import logging
import os
from datetime import date, datetime, timezone
from pathlib import Path

from ggm_lakehouse.config import data_root, has_commits, lake_root

log = logging.getLogger(__name__)


def runs_root() -> Path:
    """Folder with one sub-folder of report files (and run logs) per logical date."""
    return data_root() / "runs"


def runs_dir(logical_date: date) -> Path:
    """Folder with the report files of ``logical_date``."""
    return runs_root() / logical_date.isoformat()


def report_path(logical_date: date, name: str) -> Path:
    """Where the report file ``name`` (a stage such as ``silver``, or ``extract_brp``) of a date is kept."""
    return runs_dir(logical_date) / f"{name}.json"


def reports_location() -> Path:
    """The run reports' Delta table: ``<lake root>/governance/run_reports``."""
    return lake_root() / "governance" / "run_reports"


def _schema():
    import pyarrow as pa

    return pa.schema([
        ("logical_date", pa.date32()),
        ("name", pa.string()),
        ("stage", pa.string()),
        ("run_id", pa.string()),
        ("written_at", pa.timestamp("us", tz="UTC")),
        ("report", pa.string()),
    ])


def _append(row: dict) -> None:
    """One atomic Delta append; several first writers may race to create the table, the losers append again."""
    import pyarrow as pa
    from deltalake import write_deltalake
    from deltalake.exceptions import CommitFailedError

    location = reports_location()
    location.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([row], schema=_schema())
    for attempt in range(5):
        try:
            write_deltalake(str(location), table, mode="append", partition_by=["logical_date"])
            return
        except CommitFailedError as exc:
            if attempt == 4:
                raise
            log.info("run reports commit conflict, retrying: %s", exc)


def write_report(logical_date: date, name: str, report: dict, written_at: datetime | None = None) -> Path:
    """Record a report in the lake and write its file (atomically: temp file + rename); returns the file.

    ``written_at`` (default: now) is when the step finished; the catch-up of missed days compares it.
    """
    text = json.dumps(report, indent=2, sort_keys=True, default=str)
    moment = written_at or datetime.now(timezone.utc)
    _append({"logical_date": logical_date, "name": name, "stage": str(report.get("stage") or name.split("_")[0]),
             "run_id": report.get("run_id"), "written_at": moment, "report": text})
    path = report_path(logical_date, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    # The file carries the same moment as the table's row, so that readers of either agree.
    os.utime(tmp, (moment.timestamp(), moment.timestamp()))
    tmp.replace(path)
    return path


def _table_rows(logical_date: date | None = None, names: set[str] | None = None) -> list[dict]:
    location = reports_location()
    if not has_commits(location):
        return []
    from deltalake import DeltaTable

    filters = [("logical_date", "=", logical_date)] if logical_date else None
    columns = ["logical_date", "name", "written_at", "report"]
    rows = DeltaTable(str(location)).to_pyarrow_table(columns=columns, filters=filters).to_pylist()
    return [r for r in rows if names is None or r["name"] in names]


def _file_rows(logical_date: date | None = None, names: set[str] | None = None) -> list[dict]:
    """Report files as rows (a data root written before the table existed, or a file put there by hand)."""
    root = runs_root()
    folders = [runs_dir(logical_date)] if logical_date else (sorted(root.iterdir()) if root.is_dir() else [])
    rows = []
    for folder in folders:
        try:
            day = date.fromisoformat(folder.name)
        except ValueError:
            continue  # not a date folder
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            if names is None or path.stem in names:
                rows.append({"logical_date": day, "name": path.stem, "path": path,
                             "written_at": datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)})
    return rows


def _newest(logical_date: date | None, names: set[str] | None) -> dict[tuple[date, str], dict]:
    """The newest row per (date, name), from the table and the files; a file row holds its path, not its text."""
    newest: dict[tuple[date, str], dict] = {}
    for row in [*_file_rows(logical_date, names), *_table_rows(logical_date, names)]:
        key = (row["logical_date"], row["name"])
        # The table's row wins a tie: the file of the same write was renamed into place after it.
        if key not in newest or row["written_at"] >= newest[key]["written_at"]:
            newest[key] = row
    return newest


def _body(row: dict) -> dict:
    text = row["report"] if "report" in row else row["path"].read_text(encoding="utf-8")
    return json.loads(text)


def read_reports(logical_date: date) -> dict[str, dict]:
    """Every report of ``logical_date`` by name (the newest of each)."""
    return {name: _body(row) for (_, name), row in sorted(_newest(logical_date, None).items())}


def read_report(logical_date: date, name: str) -> dict | None:
    """The newest report ``name`` of ``logical_date``, or None when that step has not reported yet."""
    row = _newest(logical_date, {name}).get((logical_date, name))
    return _body(row) if row else None


def report_times(names: set[str]) -> dict[date, dict[str, datetime]]:
    """When each of ``names`` last reported, per logical date (UTC): what the catch-up of missed days compares."""
    times: dict[date, dict[str, datetime]] = {}
    for (day, name), row in _newest(None, names).items():
        times.setdefault(day, {})[name] = row["written_at"]
    return times


def newest_reports_covering(stage: str, tables: list[str]) -> dict[str, tuple[str, dict]]:
    """Per table: ``(date, report)`` of the newest report of ``stage`` that reports on it.

    A stage reports as a whole (``silver``) or per source or domein (``silver_brp``,
    ``gold_demografie``); the newest logical date wins, then the newest write.
    """
    rows = [row for (_, name), row in _newest(None, None).items() if name == stage or name.startswith(stage + "_")]
    found: dict[str, tuple[str, dict]] = {}
    for row in sorted(rows, key=lambda r: (r["logical_date"], r["written_at"]), reverse=True):
        if len(found) == len(tables):
            break
        body = _body(row)
        for table in body.get("tables") or {}:
            if table in tables and table not in found:
                found[table] = (row["logical_date"].isoformat(), body)
    return found
