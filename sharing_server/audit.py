"""Audit trail of every request to the sharing server, and its summary.

One JSON object per line in ``<sharing root>/audit/requests-YYYYMMDD.jsonl`` (UTC day of
the request; a new file every day, each readable by the server's user only: mode 0600). An append per request keeps the hot path cheap; a Delta table would mean
a commit per request. The fields of a line:

``ts`` (ISO 8601 UTC), ``recipient`` (None when unauthenticated), ``endpoint`` (the
handler name, e.g. ``query_table``, ``table_changes``, ``data_file``), ``method``,
``share``/``schema``/``table``, ``version``, ``files`` (file actions returned),
``bytes`` (body bytes of data file downloads; 0 otherwise), ``status`` and ``client_ip``.

:func:`export_audit_table` copies the log into the Delta table ``<lake>/audit/sharing_requests``
(run daily by the publish step, see :mod:`sharing_server.projections`).

Signed file URLs are credentials until they expire, so paths and query strings are never
written; the file endpoint records the table the file belongs to instead.

The middleware is plain ASGI (not Starlette's ``BaseHTTPMiddleware``) so streamed file
bodies are counted without being buffered. Handlers contribute what only they know
(recipient, table version, number of files) through :func:`annotate`.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ggm_lakehouse import config as ggm_config
from sharing_server.recipients import append_private

AUDIT_DIR_NAME = "audit"
FILE_PREFIX = "requests-"
_STATE_KEY = "ggm_audit"
ANONYMOUS = "(anonymous)"
NO_TABLE = "(none)"

log = logging.getLogger(__name__)
_write_lock = threading.Lock()


def default_audit_dir() -> Path:
    """``<sharing root>/audit``."""
    return ggm_config.sharing_root() / AUDIT_DIR_NAME


def audit_file(audit_dir: Path, day: dt.date) -> Path:
    """The audit file of one UTC day."""
    return audit_dir / f"{FILE_PREFIX}{day:%Y%m%d}.jsonl"


def annotate(request: Request, **fields: Any) -> None:
    """Attach audit fields (recipient, share, schema, table, version, files) to the current request."""
    entry = request.scope.get("state", {}).get(_STATE_KEY)
    if entry is not None:
        entry.update({k: v for k, v in fields.items() if v is not None})


def _append(audit_dir: Path, record: dict) -> None:
    line = json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"
    day = dt.datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).date()
    # One write() of one line under a lock: lines from concurrent requests never interleave.
    # Owner-only (dir 0700, files 0600): the log names partners, tables and client addresses.
    # It rotates by UTC day (one file per day); the export keeps the history as a Delta table.
    with _write_lock:
        audit_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        append_private(audit_file(audit_dir, day), line)


class AuditMiddleware:
    """ASGI middleware appending one audit line per HTTP request."""

    def __init__(self, app, audit_dir: Path | str | None = None, count_bytes_for: frozenset[str] = frozenset({"data_file"})):
        self.app = app
        self.audit_dir = Path(audit_dir) if audit_dir is not None else default_audit_dir()
        self.count_bytes_for = count_bytes_for

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = dt.datetime.now(dt.timezone.utc)
        entry: dict[str, Any] = {}
        scope.setdefault("state", {})[_STATE_KEY] = entry
        outcome = {"status": 500, "bytes": 0, "written": False}

        async def write_once() -> None:
            if not outcome["written"]:
                outcome["written"] = True
                await self._write(scope, entry, started, outcome["status"], outcome["bytes"])

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
            elif message["type"] == "http.response.body":
                outcome["bytes"] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    # Recorded before the response completes: once a client has its answer,
                    # the request is in the audit log.
                    await write_once()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            await write_once()  # no complete response (exception, disconnect): still audited

    async def _write(self, scope, entry: dict, started: dt.datetime, status: int, body_bytes: int) -> None:
        # The router records the matched handler and path parameters in the shared scope.
        endpoint = scope.get("endpoint")
        endpoint_name = getattr(endpoint, "__name__", None) or "unmatched"
        path_params = scope.get("path_params") or {}
        client = scope.get("client")
        record = {
            "ts": started.strftime("%Y-%m-%dT%H:%M:%S.") + f"{started.microsecond // 1000:03d}Z",
            "recipient": entry.get("recipient"),
            "endpoint": endpoint_name,
            "method": scope.get("method"),
            "share": entry.get("share", path_params.get("share")),
            "schema": entry.get("schema", path_params.get("schema")),
            "table": entry.get("table", path_params.get("table")),
            "version": entry.get("version"),
            "files": int(entry.get("files", 0)) if status < 400 else 0,
            "bytes": body_bytes if endpoint_name in self.count_bytes_for and status < 400 else 0,
            "status": status,
            "client_ip": client[0] if client else None,
        }
        try:
            await run_in_threadpool(_append, self.audit_dir, record)
        except OSError:
            # Auditing must not take the service down; the failure itself is logged loudly.
            log.exception("could not write the sharing audit log in %s", self.audit_dir)


def read_audit(since: dt.date | None = None, *, audit_dir: Path | str | None = None) -> list[dict]:
    """All audit records of the days from ``since`` (inclusive, UTC) on; all days if None."""
    directory = Path(audit_dir) if audit_dir is not None else default_audit_dir()
    records: list[dict] = []
    for path in sorted(directory.glob(f"{FILE_PREFIX}*.jsonl")):
        try:
            day = dt.datetime.strptime(path.stem[len(FILE_PREFIX):], "%Y%m%d").date()
        except ValueError:
            continue
        if since is not None and day < since:
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                # A torn last line after a crash must not hide the rest of the day.
                log.warning("skipping unreadable audit line in %s", path)
    return records


def summarise_audit(since: dt.date | None = None, *, audit_dir: Path | str | None = None) -> dict:
    """Totals per recipient and table since ``since`` (UTC day, inclusive; None = everything).

    Returns ``{recipient: {table: {"requests", "files", "downloads", "bytes", "errors"}}}``
    where ``table`` is ``share.schema.table``, or ``share`` / ``(none)`` for requests that
    name no table; unauthenticated requests count under ``(anonymous)``. ``files`` counts
    file actions handed out by query and change data feed answers, ``downloads`` and
    ``bytes`` the successful data file fetches and their body bytes, ``errors`` answers
    with status 400 or above.
    """
    summary: dict[str, dict[str, dict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: {"requests": 0, "files": 0, "downloads": 0, "bytes": 0, "errors": 0})
    )
    for record in read_audit(since, audit_dir=audit_dir):
        parts = [record.get("share"), record.get("schema"), record.get("table")]
        table = ".".join(p for p in parts if p) or NO_TABLE
        totals = summary[record.get("recipient") or ANONYMOUS][table]
        totals["requests"] += 1
        failed = int(record.get("status") or 500) >= 400
        if record.get("endpoint") == "data_file":
            totals["downloads"] += 0 if failed else 1
        else:
            totals["files"] += int(record.get("files") or 0)
        totals["bytes"] += int(record.get("bytes") or 0)
        if failed:
            totals["errors"] += 1
    return {recipient: dict(tables) for recipient, tables in summary.items()}


AUDIT_TABLE = "audit/sharing_requests"  # relative to the lake root


def export_audit_table(
    *, audit_dir: Path | str | None = None, lake_root: Path | str | None = None, since: dt.date | None = None
) -> dict:
    """Copy the audit log into the Delta table ``<lake>/audit/sharing_requests`` (one partition per day).

    The request path only appends JSON lines (cheap, no commit per request); this export,
    run by the daily publish step, makes the log queryable as a Delta table with the fields
    of the module docstring plus ``day``. Each exported day is replaced as a whole
    (``replaceWhere`` on ``day``), so reruns are idempotent and a day still being written
    is completed by the next run. Returns ``{"table", "days", "rows", "version"}``.
    """
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    records = read_audit(since, audit_dir=audit_dir)
    table_path = Path(lake_root or ggm_config.lake_root()) / AUDIT_TABLE
    schema = pa.schema(
        [
            ("day", pa.string()), ("ts", pa.string()), ("recipient", pa.string()), ("endpoint", pa.string()),
            ("method", pa.string()), ("share", pa.string()), ("schema", pa.string()), ("table", pa.string()),
            ("version", pa.int64()), ("files", pa.int64()), ("bytes", pa.int64()), ("status", pa.int32()),
            ("client_ip", pa.string()),
        ]
    )
    by_day: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        day = record.get("ts", "")[:10]
        if not day:
            continue
        row = {name: record.get(name) for name in schema.names if name != "day"}
        for numeric in ("version", "files", "bytes", "status"):
            value = row.get(numeric)
            row[numeric] = int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        by_day[day].append({"day": day, **{k: (str(v) if isinstance(v, (dict, list)) else v) for k, v in row.items()}})
    for day, rows in sorted(by_day.items()):
        batch = pa.Table.from_pylist(rows, schema=schema)
        if (table_path / "_delta_log").is_dir():
            write_deltalake(str(table_path), batch, mode="overwrite", predicate=f"day = '{day}'")
        else:
            write_deltalake(str(table_path), batch, mode="overwrite", partition_by=["day"])
    version = DeltaTable(str(table_path)).version() if (table_path / "_delta_log").is_dir() else None
    return {"table": str(table_path), "days": sorted(by_day), "rows": sum(len(r) for r in by_day.values()), "version": version}
