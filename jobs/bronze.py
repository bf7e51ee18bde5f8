"""Land: complete landing batches → append-only bronze Delta tables.

Every record of a batch becomes one row with the record's JSON text in
``payload`` and the metadata columns described in ``docs/architecture.md``.
A batch that is already in bronze (same source, dataset, logical date and run id) is not
appended again, so re-running the bronze step of a run is a no-op; nor is a batch whose content
equals the newest batch of its day, so a rerun of a day whose sources answer as before adds nothing.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from ggm_lakehouse.config import landing_root
from ggm_lakehouse.lake import LakeTable, retry_on_write_conflict
from ggm_lakehouse.landing import find_complete_batches, read_manifest, records_at, sniff_delimiter
from jobs import schema_drift


BRONZE_SCHEMA_DDL = (
    "payload STRING, _source STRING, _dataset STRING, _logical_date DATE, _run_id STRING, "
    "_batch_checksum STRING, _source_file STRING, _record_index INT, _record_hash STRING, _ingested_at TIMESTAMP"
)


class LandingFormatError(ValueError):
    """A landing part cannot be read as its manifest says; names the file and the problem."""


@dataclass(frozen=True)
class LandedBatch:
    """A complete landing batch: its directory and manifest."""

    directory: Path
    manifest: dict

    @property
    def bronze_table(self) -> str:
        return f"{self.manifest['source']}_{self.manifest['dataset']}"


def record_hash(record: object) -> str:
    """sha256 of the canonical JSON form of a record (key order and spacing do not matter)."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def find_batches(logical_date: date, run_id: str | None = None, root: Path | None = None) -> list[LandedBatch]:
    """Complete batches of ``logical_date`` (optionally of one run), newest run last per dataset."""
    root = root or landing_root()
    batches = []
    for dataset_dir in sorted(p for p in root.glob("*/*") if p.is_dir()):
        source, dataset = dataset_dir.parent.name, dataset_dir.name
        for batch_dir in find_complete_batches(root, source, dataset, logical_date):
            manifest = read_manifest(batch_dir)
            if run_id is None or manifest.get("run_id") == run_id:
                batches.append(LandedBatch(batch_dir, manifest))
    return batches


def _decode_text(raw: bytes, file: Path) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise LandingFormatError(f"{file}: not UTF-8 or Windows-1252 text")


def parse_part(raw: bytes, record_path: str, file: Path) -> list[dict]:
    """Split one landed part into its records according to the manifest's ``record_path``."""
    if record_path == "csv":
        text = _decode_text(raw, file)
        reader = csv.DictReader(io.StringIO(text), delimiter=sniff_delimiter(text))
        if not reader.fieldnames:
            raise LandingFormatError(f"{file}: CSV without a header row")
        return [dict(row) for row in reader]
    try:
        return records_at(json.loads(raw), record_path)
    except json.JSONDecodeError as exc:
        raise LandingFormatError(f"{file}: not valid JSON ({exc})") from exc
    except ValueError as exc:
        raise LandingFormatError(f"{file}: {exc}") from exc


def batch_rows(batch: LandedBatch, ingested_at: datetime) -> list[tuple]:
    """The bronze rows of one batch, in landing order."""
    manifest = batch.manifest
    logical_date = date.fromisoformat(manifest["logical_date"])
    rows = []
    for part in manifest["parts"]:
        file = batch.directory / part["file"]
        raw = file.read_bytes()
        if hashlib.sha256(raw).hexdigest() != part["sha256"]:
            raise LandingFormatError(f"{file}: checksum differs from the manifest; the landing zone was altered")
        for index, record in enumerate(parse_part(raw, manifest.get("record_path", ""), file)):
            rows.append(
                (
                    json.dumps(record, ensure_ascii=False, separators=(",", ":")),
                    manifest["source"],
                    manifest["dataset"],
                    logical_date,
                    manifest["run_id"],
                    manifest["checksum"],
                    str(file),
                    index,
                    record_hash(record),
                    ingested_at,
                )
            )
    return rows


BRONZE_COLUMNS = [part.split()[0] for part in BRONZE_SCHEMA_DDL.split(", ")]


def _to_spark(spark, rows: list[tuple]):
    """Rows → DataFrame through Arrow (enabled in ``ggm_lakehouse.spark``): columnar chunks, not one huge task."""
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=BRONZE_COLUMNS)
    return spark.createDataFrame(frame, schema=BRONZE_SCHEMA_DDL)


def _day_batches(spark, target: LakeTable, batch: LandedBatch) -> list[tuple[str, str]]:
    """``(run_id, checksum)`` of every batch of the batch's dataset and day already in bronze, newest last."""
    if not target.exists(spark):
        return []
    from pyspark.sql import functions as F

    m = batch.manifest
    rows = (
        target.read(spark)
        .where((F.col("_logical_date") == F.lit(m["logical_date"]).cast("date")) & (F.col("_dataset") == m["dataset"]))
        .groupBy("_run_id", "_batch_checksum")
        .agg(F.max("_ingested_at").alias("landed"))
        .collect()
    )
    return [(r["_run_id"], r["_batch_checksum"]) for r in sorted(rows, key=lambda r: r["landed"])]


def landed_before(spark, target: LakeTable, batch: LandedBatch, known: dict | None = None) -> tuple[str | None, dict | None]:
    """Why ``batch`` needs no append (None when it does), and the newest batch of its day in bronze if known.

    Either this run already landed it (a retried task), or the newest batch of the same day
    has the same content (a rerun of the day: the source answered exactly as before). Silver
    conforms the newest batch of a day, so an identical one adds nothing but a new table version
    that every later stage would have to look at. An older batch with the same content does not
    count: a day that went A, B, A again must end on A.

    ``known`` is the newest batch this stage recorded for the day (``newest_batch`` in its last
    report) with the table's version after it: when the table is still at that version, a batch
    with the same content is skipped without asking Spark. Anything that would append still asks.
    """
    m = batch.manifest
    # Read before looking: a commit after it makes the recorded version stale, never wrong.
    version = target.version(spark)
    if known and known.get("checksum") == m["checksum"] and known.get("version") == version:
        newest = known
    else:
        landed = _day_batches(spark, target, batch)
        if any(run_id == m["run_id"] for run_id, _ in landed):
            return "already landed by this run", None
        newest = {"run_id": landed[-1][0], "checksum": landed[-1][1], "version": version} if landed else None
        if not newest or newest["checksum"] != m["checksum"]:
            return None, {"run_id": m["run_id"], "checksum": m["checksum"], "version": version}  # once appended
    if newest["run_id"] == m["run_id"]:
        return "already landed by this run", newest
    return f"same content as the newest batch of the day (run {newest['run_id']})", newest


def _once_per_content(writer, batch: LandedBatch, seen_version: int | None):
    """Make the append of ``batch`` an idempotent Delta write (``txnAppId``/``txnVersion``).

    Two runs of one day at once (a backfill beside the scheduled run, or a task retried while its
    first try still runs) both find the batch missing and append it: blind appends never conflict
    in Delta, so the day would land twice. Delta's idempotent writes stop that: every writer of the
    same content of the same day names one application id and, as its version, the table version it
    looked at plus one. The first commit wins; a writer that looked at the same version either gets a
    ``ConcurrentTransactionException`` (retried: it then finds the batch there) or is skipped by Delta
    because that version of the application id is already committed. A later delivery of the same
    content (a day that went A, B, A) looked at a newer version, so it still lands.
    """
    m = batch.manifest
    app_id = f"ggm-bronze/{m['source']}/{m['dataset']}/{m['logical_date']}/{m['checksum']}"
    return writer.option("txnAppId", app_id).option("txnVersion", str((-1 if seen_version is None else seen_version) + 1))


def run(spark, logical_date: date, run_id: str | None = None, source: str | None = None,
        previous: dict | None = None) -> dict:
    """Append every complete landing batch of ``logical_date`` (of ``run_id`` and ``source`` if given) to bronze.

    Returns a report ``{"tables": {table: {"batches": n, "rows": n, "skipped_batches": n, "newest_batch": …}}}``;
    a table with skipped batches also says why (``skipped_because``). ``previous`` is this stage's
    last report of the day, whose ``newest_batch`` entries spare Spark queries on a rerun.
    """
    known = {table: entry.get("newest_batch") for table, entry in ((previous or {}).get("tables") or {}).items()}
    ingested_at = datetime.now(timezone.utc).replace(tzinfo=None)
    report: dict[str, dict] = {}
    for batch in find_batches(logical_date, run_id):
        if source is not None and batch.manifest["source"] != source:
            continue
        table = batch.bronze_table
        entry = report.setdefault(table, {"batches": 0, "rows": 0, "skipped_batches": 0})
        target = LakeTable("bronze", table)

        def land(batch: LandedBatch = batch, target: LakeTable = target) -> tuple[list[tuple] | str, dict | None]:
            # Checked inside the retry: after a lost commit race the other writer may have landed it.
            reason, newest = landed_before(spark, target, batch, known.get(table))
            if reason:
                return reason, newest
            rows = batch_rows(batch, ingested_at)
            writer = _to_spark(spark, rows).write.format("delta").mode("append").partitionBy("_logical_date")
            target.save(spark, _once_per_content(writer, batch, newest["version"]))
            # Our commit is the newest only if no other writer committed since we looked.
            after = target.version(spark)
            expected = (-1 if newest["version"] is None else newest["version"]) + 1
            return rows, {**newest, "version": after} if after == expected else None

        landed, known[table] = retry_on_write_conflict(land, f"bronze {table}")
        if known[table]:
            entry["newest_batch"] = known[table]
        if isinstance(landed, str):
            entry["skipped_batches"] += 1
            entry.setdefault("skipped_because", []).append(landed)
            continue
        entry["batches"] += 1
        entry["rows"] += len(landed)
        if landed:
            # New, vanished or retyped fields: the data is kept as delivered, the operator is told.
            drift = schema_drift.check_batch(table, [json.loads(row[0]) for row in landed])
            if drift:
                entry.setdefault("schema_drift", []).extend(drift[: schema_drift.MAX_MESSAGES])
                entry["schema_drift_count"] = entry.get("schema_drift_count", 0) + len(drift)
    result = {"stage": "bronze", "logical_date": logical_date.isoformat(), "tables": report}
    if source is not None:
        result["source"] = source
    return result
