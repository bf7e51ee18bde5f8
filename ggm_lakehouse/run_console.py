"""What a person sees of a day's run: one line per DAG run as it ends, the log in a file, a readable summary.

The Airflow runner (:mod:`ggm_lakehouse.airflow_runner`) writes every Spark and Airflow log line to a
log file per run and one JSON line per DAG run to a progress file; :func:`follow` prints those as they
come, and :func:`print_summary` turns the day's reports into a few tables. A failure prints the last 30
lines of the log and where the rest is.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

_MARKS = {"success": "ok", "failed": "FAILED", "skipped": "skipped", "running": "..."}


def run_log_paths(runs_dir: Path) -> tuple[Path, Path]:
    """The log file and the progress file of a run started now, in ``runs_dir``."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return runs_dir / f"ggm-run-{stamp}.log", runs_dir / f"ggm-run-{stamp}.progress.jsonl"


def _progress_lines(path: Path, seen: int) -> tuple[list[dict], int]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return [], seen
    return [json.loads(line) for line in lines[seen:] if line.strip()], len(lines)


def _print_event(event: dict, started: float) -> None:
    if event["state"] == "running":
        return
    mark = _MARKS.get(event["state"], event["state"])
    took = f"{event['seconds']:7.1f} s" if event.get("seconds") is not None else " " * 9
    detail = f"  ({event['detail']})" if event.get("detail") else ""
    print(f"  [{time.monotonic() - started:6.0f} s] {event['dag_id']:<44} {mark:<8}{took}{detail}", flush=True)


def follow(command: list[str], env: dict[str, str], log: Path, progress: Path) -> int:
    """Run ``command`` with its output in ``log``; print each DAG run as it ends; on failure, the log's tail."""
    started = time.monotonic()
    seen = 0
    failed = False
    with log.open("ab") as out:
        # Unbuffered, so the log keeps stdout and stderr lines in the order they happened.
        process = subprocess.Popen(command, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        while True:
            done = process.poll() is not None
            events, seen = _progress_lines(progress, seen)
            for event in events:
                failed |= event["state"] == "failed"
                _print_event(event, started)
            if done:
                break
            time.sleep(0.5)
    if process.returncode != 0 or failed:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        print("\nThe run failed. Last 30 lines of the log:", file=sys.stderr)
        print("\n".join(f"  {line}" for line in tail), file=sys.stderr)
    print(f"Full log: {log}", flush=True)
    return process.returncode


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        return
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right", overflow="fold")
    for row in rows:
        table.add_row(*[str(value) for value in row])
    Console().print(table)


def _count(value: Any) -> int:
    """A count that reports give either as a number or as the list of what was counted."""
    return value if isinstance(value, int) else len(value or [])


def print_summary(summary: dict) -> None:
    """The day in tables: sources and files, silver tables, gold marts and the share."""
    files = summary.get("files", {})
    sources = sorted(set(summary.get("extracted", {})) | set(files))
    _table(f"Sources on {summary.get('logical_date')}", ["source", "batches", "files accepted", "files refused"],
           [[source, len(summary.get("extracted", {}).get(source, {})),
             _count(files[source].get("accepted", 0)) if source in files else "-",
             _count(files[source].get("rejected", [])) if source in files else "-"]
            for source in sources])
    refused = [[source, r.get("file", "?"), f"{r.get('rule', '?')}: {r.get('message', '')}".strip(": ")]
               for source, report in sorted(files.items()) for r in report.get("rejected", []) if isinstance(r, dict)]
    _table("Files refused", ["source", "file", "rule"], refused)
    _table("Silver (GGM)", ["table", "current rows", "new versions", "closed", "quarantined"],
           [[t, r.get("current_rows", "-"), r.get("new_versions", "-"), r.get("closed", "-"), r.get("quarantined", "-")]
            for t, r in sorted(summary.get("silver", {}).items())])
    _table("Gold marts", ["mart", "rows", "suppressed", "written"],
           [[m, r.get("rows", "-"), r.get("suppressed_cells", "-"),
             "yes" if r.get("written") else ("waiting" if r.get("waiting_for") else "unchanged")]
            for m, r in sorted(summary.get("gold", {}).items())])
    for warning in summary.get("warnings", []):
        print(f"schema drift: {warning}")
    share = summary.get("share") or {}
    if share:
        print(f"Share: {len(share.get('tables', []))} tables published to {', '.join(share.get('recipients', []))}"
              + (f"; waiting: {', '.join(map(str, share['waiting']))}" if share.get("waiting") else ""))
    print(f"Silver tables without a delivery today (current versions kept): {len(summary.get('silver_unchanged', {}))}")
    unchanged = summary.get("unchanged_stages", {})
    if unchanged:
        print(f"Stages skipped, nothing they read changed since their last run of this day: {len(unchanged)} "
              "(ggm run --full-refresh redoes them)")
    print(f"Run state: {summary.get('state', 'unknown')}")
