"""Bewaartermijnen enforced: purge what is older than each processing activity's retention term.

The register of processing activities (``config/verwerkingsactiviteiten.yaml``) declares, per activity,
machine-readable terms per layer under ``bewaartermijnen`` (ISO 8601 durations: ``P90D``, ``P6M``,
``P1Y``). The cutoff of a term on day D is D minus the term: what is dated before the cutoff is
purged, what is dated on or after it stays (``P30D`` on 2026-03-12 keeps 2026-02-10 and later).

* ``landing``: the batch folders ``<landing>/<source>/<dataset>/logical_date=D/`` and the drop zones'
  day folders ``<dropzone>/<zone>/archive/D/`` and ``quarantine/D/`` (the raw deliveries);
* ``bronze``: the rows of ``bronze/<source>_<dataset>`` whose ``_logical_date`` is before the cutoff;
* ``quarantaine``: the rows of ``quarantine/silver_rejects`` whose ``logical_date`` is before the
  cutoff, each under the activity of the bronze table it came from;
* ``silver``, only where an activity declares a silver term: SCD2 versions that were closed before
  the cutoff (``DWH_DATUMTIJDGELDIGTOTMET``); open versions always stay;
* gold is never purged (aggregated, small cells suppressed), and no layer without a declared term is.

Rows go with a Delta ``DELETE``; then ``VACUUM … RETAIN 0 HOURS`` deletes the data files that held
them, so they cannot be read back through time travel either (an older version then fails to read).
VACUUM in LITE mode deletes only files the Delta log removed, never the not yet committed files of a
writer running at the same moment. Below Delta's 7-day safety VACUUM needs
``spark.databricks.delta.retentionDurationCheck.enabled=false``: it is switched off in this session
only, around the VACUUM, and only after :meth:`RetentionPolicy.check` has confirmed that every term is
at least the safety minimum (``bewaartermijn_minimum`` in the register, ``GGM_RETENTION_MINIMUM``,
default ``P14D``): longer than any reader needs (silver catching up ``GGM_CATCHUP_DAYS``, a running
query). A shorter term is refused with an error that names it.

Every purge is one operation in the verwerkingslog (activity, layer, table, rows and files
deleted, cutoff). ``ggm retention plan|apply`` and ``dags/ggm_retention.py`` call this module.

Layer: governance. It reads the register and the model, and uses Spark through the session it is given.
"""
from __future__ import annotations

import calendar
import json
import logging
import os
import re
import shutil
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

from ggm_lakehouse.config import dropzone_root, has_commits, lake_root, landing_root, parse_yaml
from ggm_lakehouse.lake import LakeTable, retry_on_write_conflict, sql_date, sql_string, sql_timestamp, table_namespace
from ggm_lakehouse.model.mappings import load_all, source_system_of
from ggm_lakehouse.model.sources import SOURCES
from ggm_lakehouse.processing_log import activity_for, load_register, processing_operation, register_path
from ggm_lakehouse.yaml_schema import DIALECT, validate

log = logging.getLogger(__name__)

#: The layers a term may be declared for; gold is deliberately not one of them.
LAYERS = ("landing", "bronze", "quarantaine", "silver")
DEFAULT_MINIMUM = "P14D"
MINIMUM_ENV = "GGM_RETENTION_MINIMUM"
# jobs.silver.QUARANTINE_TABLE; governance reads the lake, never imports the jobs.
QUARANTINE_TABLE = "silver_rejects"
#: Commit metadata of the DELETEs this module makes, so a VACUUM that did not follow one is caught up.
RETENTION_MARK = "ggm-retention"
DURATION_PATTERN = r"^P(?=\d)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?$"
SYSTEMS = ("Apache Spark", "Delta Lake")
_RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
_USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

_TERM = {"type": "string", "pattern": DURATION_PATTERN,
         "patternErrorMessage": "must be an ISO 8601 duration in years, months, weeks or days (P90D, P6M, P1Y)"}
_TEXTS = {"type": "array", "items": {"type": "string", "minLength": 1}}
#: JSON schema of the register of processing activities (``config/verwerkingsactiviteiten.yaml``), as this
#: module and the processing log read it; published as docs/schemas/verwerkingsactiviteiten.schema.json.
REGISTER_SCHEMA: dict = {
    "$schema": DIALECT,
    "title": "Register of processing activities (AVG art. 30)",
    "description": "The activities the platform carries out, their purpose, legal basis and bewaartermijnen: "
                   "config/verwerkingsactiviteiten.yaml (docs/retention.md).",
    "type": "object",
    "additionalProperties": False,
    "required": ["register_uri", "activiteiten"],
    "properties": {
        "bewaartermijn_minimum": {**_TERM, "title": "Shortest term accepted",
                                  "description": f"Default {DEFAULT_MINIMUM}; {MINIMUM_ENV} overrides it."},
        "organisatie": {"type": "string", "title": "The municipality"},
        "verwerkingsverantwoordelijke": {"type": "string", "title": "Controller (verwerkingsverantwoordelijke)"},
        "register_uri": {"type": "string", "minLength": 1, "title": "Base URI of the register",
                         "description": "An activity's URI is <register_uri>:<id>."},
        "activiteiten": {"type": "array", "title": "Processing activities", "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "naam", "doel", "grondslag", "bewaartermijn"],
            "properties": {
                "id": {"type": "string", "minLength": 1, "title": "Id, equal to the FG's register"},
                "naam": {"type": "string", "minLength": 1, "title": "Name"},
                "doel": {"type": "string", "minLength": 1, "title": "Purpose"},
                "grondslag": {"type": "string", "minLength": 1, "title": "Legal basis"},
                "bewaartermijn": {"type": "string", "minLength": 1, "title": "The term in words, as the FG approved it"},
                "bewaartermijnen": {
                    "type": "object",
                    "additionalProperties": False,
                    "title": "The terms enforced, per layer",
                    "description": "ISO 8601 durations counted back from the day of the run; a layer without a term "
                                   "is not purged; gold is never purged.",
                    "properties": {layer: _TERM for layer in LAYERS},
                },
                "betrokkenen": {**_TEXTS, "title": "Categories of data subjects"},
                "categorieen_persoonsgegevens": {**_TEXTS, "title": "Categories of personal data"},
                "systemen": {**_TEXTS, "title": "Systems involved"},
                "operaties": {**_TEXTS, "title": "Pipeline operations (task or stage names) under this activity"},
            },
        }},
    },
}


class RetentionError(RuntimeError):
    """The terms are invalid or unsafe; the message names the activity, the layer and the term."""


# --------------------------------------------------------------------------- terms


@dataclass(frozen=True)
class Duration:
    """An ISO 8601 duration of years, months, weeks and days (``P1Y``, ``P6M``, ``P2W``, ``P90D``, ``P1Y6M``)."""

    text: str
    years: int = 0
    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> Duration:
        """The duration ``text`` spells; a :class:`RetentionError` when it is not one."""
        match = re.match(DURATION_PATTERN, str(text).strip())
        if not match:
            raise RetentionError(f"{text!r} is not an ISO 8601 duration in years, months, weeks or days "
                                 "(e.g. P90D, P6M, P1Y)")
        years, months, weeks, days = (int(part or 0) for part in match.groups())
        return cls(str(text).strip(), years, months, weeks * 7 + days)

    def before(self, day: date) -> date:
        """``day`` minus this duration: calendar years and months (31 March minus P1M is 28/29 February), then days."""
        index = day.year * 12 + day.month - 1 - (self.years * 12 + self.months)
        year, month = divmod(index, 12)
        month += 1
        return date(year, month, min(day.day, calendar.monthrange(year, month)[1])) - timedelta(days=self.days)


@dataclass(frozen=True)
class RetentionPolicy:
    """The terms per activity and layer, and the safety minimum every term must reach."""

    terms: dict[str, dict[str, Duration]]
    minimum: Duration
    register: dict = field(repr=False)
    source: Path | None = None

    def term(self, activity: str, layer: str) -> Duration | None:
        """The term of ``activity`` for ``layer``; None when none is declared (then nothing is purged there)."""
        return self.terms.get(activity, {}).get(layer)

    def check(self, as_of: date) -> None:
        """Refuse every term shorter than the safety minimum (measured back from ``as_of``)."""
        floor = self.minimum.before(as_of)
        short = [f"{activity}: {layer} {term.text}" for activity, layers in sorted(self.terms.items())
                 for layer, term in sorted(layers.items()) if term.before(as_of) > floor]
        if short:
            raise RetentionError(
                f"bewaartermijn shorter than the safety minimum {self.minimum.text} refused ({'; '.join(short)}). "
                "Purged files are vacuumed at once (RETAIN 0 HOURS), so a reader that still needs them (silver "
                "catching up GGM_CATCHUP_DAYS days, a running query) would fail. Lengthen the term in "
                f"{self.source}, or lower bewaartermijn_minimum (or {MINIMUM_ENV}) deliberately.")


def load_policy(path: Path | str | None = None) -> RetentionPolicy:
    """The validated terms of the register (``GGM_VERWERKINGSACTIVITEITEN`` or ``config/verwerkingsactiviteiten.yaml``)."""
    path = Path(path or register_path())
    try:
        doc = parse_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RetentionError(f"register of processing activities not found at {path}") from None
    validate(doc, REGISTER_SCHEMA, source=path, what="register of processing activities", error=RetentionError)
    terms = {entry["id"]: {layer: Duration.parse(text) for layer, text in (entry.get("bewaartermijnen") or {}).items()}
             for entry in doc["activiteiten"]}
    minimum = Duration.parse(os.environ.get(MINIMUM_ENV) or doc.get("bewaartermijn_minimum") or DEFAULT_MINIMUM)
    return RetentionPolicy(terms=terms, minimum=minimum, register=load_register(path), source=path)


def _term_for(policy: RetentionPolicy, operation: str, layer: str) -> tuple[str, Duration | None]:
    """The activity an operation (``bronze_brp``) falls under and its term for ``layer``."""
    activity = activity_for(operation, policy.register).id
    return activity, policy.term(activity, layer)


# --------------------------------------------------------------------------- the plan


@dataclass
class PurgeItem:
    """What one activity's term purges from one table or folder."""

    layer: str
    target: str
    activity: str
    term: str
    cutoff: date
    rows: int | None = 0
    files: int = 0
    oldest: date | None = None
    table: LakeTable | None = field(default=None, repr=False)
    condition: str | None = field(default=None, repr=False)
    paths: tuple[Path, ...] = field(default=(), repr=False)

    @property
    def expired(self) -> bool:
        """True when something of it is older than the term."""
        return bool(self.rows) or bool(self.paths)

    def as_dict(self) -> dict:
        """The item as JSON-ready values."""
        return {"layer": self.layer, "target": self.target, "activity": self.activity, "term": self.term,
                "cutoff": self.cutoff.isoformat(), "rows": self.rows, "files": self.files,
                "oldest": self.oldest.isoformat() if self.oldest else None}


@dataclass
class RetentionPlan:
    """Every table and folder a term covers, what is expired in it, and the files each VACUUM will remove."""

    as_of: date
    minimum: str
    items: list[PurgeItem]
    vacuum: dict[str, int]

    def as_dict(self) -> dict:
        """The plan as JSON-ready values, with totals."""
        expired = [item for item in self.items if item.expired]
        return {"as_of": self.as_of.isoformat(), "minimum": self.minimum,
                "items": [item.as_dict() for item in self.items], "vacuum": dict(self.vacuum),
                "totals": {"targets": len(expired), "rows": sum(item.rows or 0 for item in expired),
                           "files": sum(item.files for item in expired)}}


def _count_files(paths) -> int:
    return sum(1 for path in paths for file in path.rglob("*") if file.is_file())


def _landed_records(day_dirs) -> int | None:
    """Records in the complete batches of landing day folders (from their manifests)."""
    counts = [json.loads(m.read_text(encoding="utf-8")).get("record_count") or 0
              for day in day_dirs for m in day.glob("*/_MANIFEST.json")]
    return sum(counts)


def _folder_item(policy: RetentionPolicy, as_of: date, source: str, target: str, days: dict[date, Path],
                 count_rows: bool) -> PurgeItem | None:
    activity, term = _term_for(policy, f"extract_{source}", "landing")
    if term is None:
        return None
    cutoff = term.before(as_of)
    expired = {day: path for day, path in days.items() if day < cutoff}
    paths = tuple(expired[day] for day in sorted(expired))
    return PurgeItem("landing", target, activity, term.text, cutoff, rows=_landed_records(paths) if count_rows else None,
                     files=_count_files(paths), oldest=min(expired) if expired else None, paths=paths)


def _landing_items(policy: RetentionPolicy, as_of: date) -> list[PurgeItem]:
    """One item per landed dataset: its ``logical_date=D`` folders."""
    root = landing_root()
    items = []
    # Names starting with "_" hold connector state (the BAG request quota), not deliveries.
    for dataset_dir in sorted(p for p in root.glob("*/*") if p.is_dir() and not p.parent.name.startswith("_")):
        source = dataset_dir.parent.name
        days = {date.fromisoformat(p.name.partition("=")[2]): p for p in dataset_dir.glob("logical_date=*")
                if p.is_dir() and _DAY.match(p.name.partition("=")[2])}
        item = _folder_item(policy, as_of, source, f"landing.{source}/{dataset_dir.name}", days, count_rows=True)
        if item:
            items.append(item)
    return items


def _zone_dirs() -> dict[str, Path]:
    """The drop zones: the folders under the drop-zone root, and the zones moved with ``GGM_DROPZONE_<SOURCE>``."""
    root = dropzone_root()
    zones = {p.name: p for p in sorted(root.iterdir()) if p.is_dir()} if root.is_dir() else {}
    for source in SOURCES:
        moved = os.environ.get(f"GGM_DROPZONE_{source.upper()}")
        if moved:
            zones[source] = Path(moved)
    return zones


def _dropzone_items(policy: RetentionPolicy, as_of: date) -> list[PurgeItem]:
    """One item per drop zone and kind: its ``archive/D`` and ``quarantine/D`` folders of delivered files."""
    items = []
    for zone, folder in sorted(_zone_dirs().items()):
        for kind in ("archive", "quarantine"):
            if not (folder / kind).is_dir():
                continue
            days = {date.fromisoformat(p.name): p for p in (folder / kind).iterdir() if p.is_dir() and _DAY.match(p.name)}
            item = _folder_item(policy, as_of, zone, f"dropzone.{zone}/{kind}", days, count_rows=False)
            if item:
                items.append(item)
    return items


def _lake_tables(spark, layer: str) -> list[str]:
    """The Delta tables of one lake layer (folders, or the layer's schema under ``GGM_TABLE_NAMESPACE``)."""
    namespace = table_namespace()
    if namespace:
        if not spark.catalog.databaseExists(f"{namespace}.{layer}"):
            return []
        return sorted(row["tableName"] for row in spark.sql(f"SHOW TABLES IN `{namespace}`.`{layer}`").collect())
    folder = lake_root() / layer
    return sorted(p.name for p in folder.iterdir() if has_commits(p)) if folder.is_dir() else []


def _delta_item(spark, table: LakeTable, layer: str, activity: str, term: Duration, as_of: date,
                date_column: str, scope: str | None = None) -> PurgeItem:
    """Rows of ``table`` dated (``date_column``) before the term's cutoff: how many, in how many files, the oldest."""
    cutoff = term.before(as_of)
    timestamp = layer == "silver"  # silver's history columns are timestamps
    bound = sql_timestamp(datetime.combine(cutoff, time.min)) if timestamp else sql_date(cutoff)
    condition = " AND ".join(filter(None, [scope, f"{date_column} < {bound}"]))
    day = f"to_date({date_column})" if timestamp else date_column
    row = spark.sql(
        f"SELECT count(*) AS rows, count(DISTINCT _metadata.file_path) AS files, min({day}) AS oldest "
        f"FROM {table.sql_name} WHERE {condition}"
    ).first()
    return PurgeItem(layer, f"{table.layer}.{table.table.lower()}", activity, term.text, cutoff, rows=int(row["rows"]),
                     files=int(row["files"]), oldest=row["oldest"], table=table, condition=condition)


def _bronze_items(spark, policy: RetentionPolicy, as_of: date) -> list[PurgeItem]:
    items = []
    for name in _lake_tables(spark, "bronze"):
        activity, term = _term_for(policy, f"bronze_{source_system_of(name)}", "bronze")
        if term is not None:
            items.append(_delta_item(spark, LakeTable("bronze", name), "bronze", activity, term, as_of, "_logical_date"))
    return items


def _quarantine_items(spark, policy: RetentionPolicy, as_of: date) -> list[PurgeItem]:
    """One item per activity whose bronze tables have rejected records in quarantine."""
    table = LakeTable("quarantine", QUARANTINE_TABLE)
    if not table.exists(spark):
        return []
    by_activity: dict[str, list[str]] = {}
    for (source_table,) in spark.sql(f"SELECT DISTINCT source_table FROM {table.sql_name}").collect():
        if source_table:
            activity = activity_for(f"silver_{source_system_of(source_table)}", policy.register).id
            by_activity.setdefault(activity, []).append(source_table)
    items = []
    for activity, sources in sorted(by_activity.items()):
        term = policy.term(activity, "quarantaine")
        if term is not None:
            scope = f"source_table IN ({', '.join(sql_string(s) for s in sorted(sources))})"
            items.append(_delta_item(spark, table, "quarantaine", activity, term, as_of, "logical_date", scope))
    return items


def _silver_items(spark, policy: RetentionPolicy, as_of: date) -> list[PurgeItem]:
    """Closed SCD2 versions, for the silver tables of activities that declare a silver term."""
    items = []
    for mapping in load_all():
        activity, term = _term_for(policy, f"silver_{mapping.source_system}", "silver")
        table = LakeTable("silver", mapping.target)
        if term is not None and table.exists(spark):
            items.append(_delta_item(spark, table, "silver", activity, term, as_of, "DWH_DATUMTIJDGELDIGTOTMET"))
    return items


# --------------------------------------------------------------------------- Delta: DELETE and VACUUM


@contextmanager
def _session_settings(spark, settings: dict[str, str]) -> Iterator[None]:
    """Set Spark SQL settings in this session for the block only, then restore what was there."""
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def _vacuum_sql(spark, table: LakeTable, suffix: str = "") -> list:
    """``VACUUM … RETAIN 0 HOURS`` in LITE mode (only files the log removed), FULL when the log no longer allows LITE."""
    try:
        return spark.sql(f"VACUUM {table.sql_name} LITE RETAIN 0 HOURS {suffix}").collect()
    except Exception as exc:  # noqa: BLE001 - only LITE's own refusal falls back, anything else is raised
        if "DELTA_CANNOT_VACUUM_LITE" not in str(exc):
            raise
        log.warning("%s: VACUUM LITE impossible (log truncated since the last VACUUM); running FULL", table.location)
        return spark.sql(f"VACUUM {table.sql_name} FULL RETAIN 0 HOURS {suffix}").collect()


def vacuum(spark, table: LakeTable, dry_run: bool = False) -> int:
    """Delete, at once, the data files of ``table`` that no current row needs; returns how many (dry run: would).

    Only after :meth:`RetentionPolicy.check`: the 7-day safety check is switched off for this session
    and this statement only.
    """
    with _session_settings(spark, {_RETENTION_CHECK: "false"}):
        files = len(_vacuum_sql(spark, table, "DRY RUN"))
        if files and not dry_run:
            _vacuum_sql(spark, table)
    return files


def _history(spark, table: LakeTable) -> list:
    return spark.sql(f"DESCRIBE HISTORY {table.sql_name}").select(
        "version", "operation", "operationMetrics", "userMetadata").collect()


def vacuum_pending(spark, table: LakeTable) -> bool:
    """True when a retention DELETE on ``table`` was not followed by a VACUUM (a run that stopped in between)."""
    history = _history(spark, table)
    last = max((row["version"] for row in history if row["operation"] == "VACUUM END"), default=-1)
    return any(row["operation"] == "DELETE" and row["userMetadata"] == RETENTION_MARK and row["version"] > last
               for row in history)


def _delete(spark, table: LakeTable, condition: str) -> tuple[int, int]:
    """``DELETE`` the expired rows, marked as retention's; returns (rows deleted, files removed) from the commit."""
    with _session_settings(spark, {_USER_METADATA: RETENTION_MARK}):
        retry_on_write_conflict(lambda: table.delete(spark, condition), f"retention {table.location}")
    newest = next(row for row in _history(spark, table)
                  if row["operation"] == "DELETE" and row["userMetadata"] == RETENTION_MARK)
    metrics = newest["operationMetrics"] or {}
    return int(metrics.get("numDeletedRows", 0)), int(metrics.get("numRemovedFiles", 0))


def _by_table(items: list[PurgeItem]) -> dict[LakeTable, list[PurgeItem]]:
    tables: dict[LakeTable, list[PurgeItem]] = {}
    for item in items:
        if item.table is not None:
            tables.setdefault(item.table, []).append(item)
    return tables


def plan(spark, as_of: date, policy: RetentionPolicy | None = None) -> RetentionPlan:
    """What applying the terms on ``as_of`` would purge: per table and folder, and per VACUUM.

    Refuses (:class:`RetentionError`) before looking at any data when a term is below the safety minimum.
    """
    policy = policy or load_policy()
    policy.check(as_of)
    items = _landing_items(policy, as_of) + _dropzone_items(policy, as_of)
    items += _bronze_items(spark, policy, as_of) + _quarantine_items(spark, policy, as_of)
    items += _silver_items(spark, policy, as_of)
    planned = {}
    for table, table_items in _by_table(items).items():
        expired_files = sum(item.files for item in table_items if item.rows)
        if expired_files or vacuum_pending(spark, table):
            # Files already removed from the table (earlier versions) go in the same VACUUM.
            planned[f"{table.layer}.{table.table.lower()}"] = expired_files + vacuum(spark, table, dry_run=True)
    return RetentionPlan(as_of, policy.minimum.text, items, planned)


# --------------------------------------------------------------------------- apply


def _operation(item: PurgeItem, as_of: date, run_id: str):
    """The verwerkingslog operation of one purge, under the activity whose term it applies."""
    systems = SYSTEMS if item.table is not None else ()
    return processing_operation(f"retention_{item.layer}", activiteit=item.activity, logical_date=as_of,
                                run_id=run_id, reads=[item.target], systemen=systems)


def _result(item: PurgeItem, rows: int | None, files: int) -> dict:
    return {**item.as_dict(), "rows_deleted": rows, "files_removed": files}


def _purge_folders(item: PurgeItem, as_of: date, run_id: str, say: Callable[[str], None]) -> dict:
    """Delete the expired day folders of one landing dataset or drop zone."""
    with _operation(item, as_of, run_id) as op:
        files = 0
        for path in item.paths:
            files += _count_files([path])
            shutil.rmtree(path)
        op.purged(item.target, item.rows, files, item.cutoff, f"{item.layer} {item.term}")
    say(f"{item.target}: deleted {len(item.paths)} day folder(s) ({files} files) dated before {item.cutoff} "
        f"[{item.activity}, {item.layer} {item.term}]")
    return _result(item, item.rows, files)


def _purge_table(spark, table: LakeTable, items: list[PurgeItem], as_of: date, run_id: str,
                 say: Callable[[str], None]) -> tuple[list[dict], int]:
    """DELETE each activity's expired rows of one table, then VACUUM it; each purge logged under its activity."""
    work = [item for item in items if item.rows]
    results = []
    with ExitStack() as stack:
        # Every operation stays open until the VACUUM is done: a failure is logged as ERROR on each of them.
        done = []
        for item in work:
            op = stack.enter_context(_operation(item, as_of, run_id))
            rows, files = _delete(spark, table, item.condition)
            say(f"{item.target}: deleted {rows} rows in {files} files dated before {item.cutoff} "
                f"[{item.activity}, {item.layer} {item.term}]")
            done.append((op, item, rows, files))
        removed = vacuum(spark, table)
        say(f"{table.location}: VACUUM removed {removed} data files")
        for op, item, rows, files in done:
            op.purged(item.target, rows, files, item.cutoff, f"{item.layer} {item.term}")
            results.append(_result(item, rows, files))
    return results, removed


def apply(spark, as_of: date, run_id: str | None = None, policy: RetentionPolicy | None = None,
          progress: Callable[[str], None] | None = None) -> dict:
    """Purge what the terms expire on ``as_of`` and vacuum it; returns what was done.

    Running it again the same day finds nothing and changes nothing.
    """
    say = progress or (lambda text: None)
    run_id = run_id or f"manual__retention_{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    current = plan(spark, as_of, policy)
    purged = [_purge_folders(item, as_of, run_id, say) for item in current.items if item.paths]
    vacuumed = {}
    for table, items in _by_table(current.items).items():
        name = f"{table.layer}.{table.table.lower()}"
        if name in current.vacuum:  # expired rows, or a VACUUM an earlier run owes
            results, vacuumed[name] = _purge_table(spark, table, items, as_of, run_id, say)
            purged += results
    return {"stage": "retention", "logical_date": as_of.isoformat(), "as_of": as_of.isoformat(), "run_id": run_id,
            "minimum": current.minimum, "purged": purged, "vacuumed": vacuumed,
            "tables": {entry["target"]: entry for entry in purged},
            "totals": {"targets": len(purged), "rows": sum(e["rows_deleted"] or 0 for e in purged),
                       "files": sum(e["files_removed"] for e in purged), "vacuumed_files": sum(vacuumed.values())}}


def run_retention(spark, as_of: date, run_id: str) -> dict:
    """The retention DAG's work: apply the terms as of the run's date and keep its report in ``runs/<date>/``."""
    from ggm_lakehouse.reports import write_report

    report = apply(spark, as_of, run_id=run_id, progress=log.info)
    write_report(as_of, "retention", report)
    return report
