"""The verwerkingslog: one row per processing operation, modelled on Logius' Logboek Dataverwerkingen.

Every step of the pipeline that processes personal data (extract, bronze, silver, gold,
publish) records one operation with the fields of the Logboek Dataverwerkingen (LDV):

* ``trace_id`` (16 bytes, hex) groups the operations of one pipeline run, ``span_id`` (8 bytes,
  hex) identifies this operation, ``parent_span_id`` the run it belongs to; a W3C
  ``TRACEPARENT`` in the environment (Trace Context, which LDV builds on) is continued,
  otherwise both derive from the Airflow run id, so separate processes of one run (Airflow
  tasks, spark-submit drivers) share a trace without passing state;
* ``name``, ``start_time``, ``end_time``, ``status_code`` (``OK``/``ERROR``; ``UNSET`` is
  never written because every operation ends in one of the two);
* ``processing_activity_id``: the URI of the activity in the register of processing activities
  (``config/verwerkingsactiviteiten.yaml``), with its ``doel``, ``grondslag`` and
  ``bewaartermijn`` copied in, so the log answers *why* on its own;
* the data subjects (``betrokkenen``): keyed pseudonyms only (``betrokkenen_type`` says which
  pseudonym), never a BSN; a value that looks like a BSN is refused;
* ``resource_name``/``resource_version`` (this platform) and ``systemen`` (the systems involved),
  plus what the operation read (``gelezen``) and wrote (``geschreven``, ``rijen_geschreven``)
  and, for a share, the partner organisations it goes to (``ontvangers``); a retention purge
  (``ggm_lakehouse.retention``) records what it deleted (``verwijderd``, ``rijen_verwijderd``,
  ``bestanden_verwijderd``), the cutoff (``verwijderd_tot``) and the term (``bewaartermijn_toegepast``).

:func:`record_landed_batches` and :func:`record_published_share` fill an operation from an
extract's batch results and from the publish step's report; ``jobs.entrypoint`` does the same
for the Spark stages.

Layer: core. Every stage writes the log in its own process, the Spark stages inside ``jobs``
included, so this module imports only core (config, bsn); what a step knows from the model
(which bronze tables hold persons, who receives a share) its caller passes in.

Storage: a Delta table at ``<lake root>/governance/verwerkingslog``, partitioned by logical
date and appended with the ``deltalake`` package. Delta rather than JSON lines because the
log is written by processes that run side by side (Airflow tasks, Spark drivers) and must be
queryable like any other lake table (Spark, Delta Sharing for an auditor, ``ggm
processing-log``): Delta appends are atomic, so a half-written row never exists and two
concurrent writers never clobber each other. ``deltalake`` rather than Spark because the
non-Spark Airflow tasks must log too, and a log write must not start a JVM.

LDV logs one row per data subject; a batch pipeline processes thousands of persons per
operation, so one row carries the list of pseudonyms (``array_contains`` finds a person's
operations for inzage) instead of thousands of rows with identical other fields.

Usage::

    with processing_operation("silver", logical_date=day, run_id=run_id,
                              reads=["bronze.brp_personen"]) as op:
        ...
        op.wrote("silver.natuurlijkpersoon", rows=12)
        op.betrokkenen(pseudonyms)
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Collection, Iterable, Iterator, Mapping

from ggm_lakehouse.config import has_commits
from ggm_lakehouse.config import lake_root, parse_yaml, project_root

log = logging.getLogger(__name__)

RESOURCE_NAME = "ggm-lakehouse"
#: What the ``betrokkenen`` values are: the internal keyed HMAC pseudonym of the BSN (ggm_lakehouse.pseudonym).
PSEUDONYM_TYPE = "urn:nl:gemeente:ggm-lakehouse:pseudoniem:intern"
STATUS_OK = "OK"
STATUS_ERROR = "ERROR"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
# Nine digits standing alone (not inside a hex pseudonym or another identifier).
_DIGITS9 = re.compile(r"(?<![0-9A-Za-z])\d{9}(?![0-9A-Za-z])")


class ProcessingLogError(RuntimeError):
    """The register or the log is misconfigured, or a record would break the log's rules."""


# --------------------------------------------------------------------------- register


@dataclass(frozen=True)
class Verwerkingsactiviteit:
    """One activity of the register of processing activities (AVG art. 30)."""

    id: str
    uri: str
    naam: str
    doel: str
    grondslag: str
    bewaartermijn: str
    operaties: tuple[str, ...] = ()
    systemen: tuple[str, ...] = ()
    betrokkenen: tuple[str, ...] = ()


def register_path() -> Path:
    """``GGM_VERWERKINGSACTIVITEITEN`` or ``<checkout>/config/verwerkingsactiviteiten.yaml``."""
    override = os.environ.get("GGM_VERWERKINGSACTIVITEITEN")
    return Path(override) if override else project_root() / "config" / "verwerkingsactiviteiten.yaml"


def _text(value: object) -> str:
    return " ".join(str(value or "").split())


@lru_cache(maxsize=8)
def _load_register(path: Path, mtime_ns: int) -> dict[str, Verwerkingsactiviteit]:  # noqa: ARG001 - cache key
    data = parse_yaml(path.read_text(encoding="utf-8")) or {}
    base = data.get("register_uri")
    if not base:
        raise ProcessingLogError(f"{path}: register_uri is required")
    activities: dict[str, Verwerkingsactiviteit] = {}
    owner: dict[str, str] = {}
    for entry in data.get("activiteiten") or []:
        missing = [k for k in ("id", "naam", "doel", "grondslag", "bewaartermijn") if not entry.get(k)]
        if missing:
            raise ProcessingLogError(f"{path}: activity {entry.get('id', '?')!r} lacks {', '.join(missing)}")
        activity = Verwerkingsactiviteit(
            id=entry["id"],
            uri=f"{base}:{entry['id']}",
            naam=_text(entry["naam"]),
            doel=_text(entry["doel"]),
            grondslag=_text(entry["grondslag"]),
            bewaartermijn=_text(entry["bewaartermijn"]),
            operaties=tuple(entry.get("operaties") or ()),
            systemen=tuple(entry.get("systemen") or ()),
            betrokkenen=tuple(entry.get("betrokkenen") or ()),
        )
        for operation in activity.operaties:
            if operation in owner:
                raise ProcessingLogError(f"{path}: operation {operation!r} is in {owner[operation]!r} and {activity.id!r}")
            owner[operation] = activity.id
        activities[activity.id] = activity
    return activities


def load_register(path: Path | None = None) -> dict[str, Verwerkingsactiviteit]:
    """The activities of the register by id (re-read when the file changes)."""
    path = Path(path or register_path())
    if not path.is_file():
        raise ProcessingLogError(f"register of processing activities not found at {path}")
    return _load_register(path, path.stat().st_mtime_ns)


def activity_for(key: str, register: dict[str, Verwerkingsactiviteit] | None = None) -> Verwerkingsactiviteit:
    """The activity with id or name ``key``, or the one whose ``operaties`` include operation ``key``."""
    register = register if register is not None else load_register()
    if key in register:
        return register[key]
    for activity in register.values():
        if activity.naam.lower() == key.lower():
            return activity
    # An operation of one source ("bronze_brp", "extract_bag") belongs where its stage belongs.
    for candidate in (key, key.split("_", 1)[0]):
        for activity in register.values():
            if candidate in activity.operaties:
                return activity
    raise ProcessingLogError(f"no processing activity registered for {key!r}; add it to {register_path()}")


# --------------------------------------------------------------------------- trace context


def _hex_digest(text: str, nbytes: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[: nbytes * 2]


def trace_context(run_id: str | None) -> tuple[str, str | None]:
    """``(trace_id, parent_span_id)`` for an operation of ``run_id``.

    A W3C ``TRACEPARENT`` from the environment wins. Otherwise the trace id and the run's
    root span id derive from the run id, so every process of one run lands in one trace.
    """
    match = _TRACEPARENT.match(os.environ.get("TRACEPARENT", "").strip().lower())
    if match:
        return match.group(1), match.group(2)
    if run_id:
        return _hex_digest(f"trace|{run_id}", 16), _hex_digest(f"run|{run_id}", 8)
    return secrets.token_hex(16), None


def _looks_like_bsn(value: str) -> bool:
    """True when free text holds a nine-digit number that passes the elfproef."""
    from ggm_lakehouse.bsn import is_valid_bsn

    return any(is_valid_bsn(m) for m in _DIGITS9.findall(value))


def _is_plain_number(value: str) -> bool:
    """A data subject given as a bare number (a BSN, valid or not, perhaps without leading zeros)."""
    return value.strip().isdigit()


# --------------------------------------------------------------------------- operation


@dataclass
class ProcessingOperation:
    """One operation being carried out; collects what it reads, writes and whom it concerns."""

    name: str
    activity: Verwerkingsactiviteit
    logical_date: date | None
    run_id: str | None
    trace_id: str
    parent_span_id: str | None
    span_id: str = field(default_factory=lambda: secrets.token_hex(8))
    start_time: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    reads: list[str] = field(default_factory=list)
    writes: list[dict] = field(default_factory=list)
    systemen: list[str] = field(default_factory=list)
    subjects: set[str] = field(default_factory=set)
    subject_count: int | None = None
    recipients: list[str] = field(default_factory=list)
    purges: list[dict] = field(default_factory=list)

    def read(self, *tables: str) -> None:
        """Record tables, batches or endpoints the operation read."""
        for table in tables:
            if table not in self.reads:
                self.reads.append(table)

    def wrote(self, table: str, rows: int | None = None) -> None:
        """Record that the operation wrote ``rows`` rows (None: unknown) to ``table``."""
        self.writes.append({"table": table, "rows": None if rows is None else int(rows)})

    def system(self, *names: str) -> None:
        """Record a system involved (source registry, sharing server, …)."""
        for name in names:
            if name not in self.systemen:
                self.systemen.append(name)

    def betrokkenen(self, pseudonyms: Iterable[str]) -> None:
        """Record the data subjects, as keyed pseudonyms; a BSN in clear is refused."""
        for value in pseudonyms:
            if value is None:
                continue
            value = str(value)
            # Pseudonyms are hex HMACs; any bare number is refused, an invalid BSN is still a BSN.
            if _is_plain_number(value) or _looks_like_bsn(value):
                raise ProcessingLogError(f"operation {self.name!r}: data subjects must be pseudonyms, never a BSN")
            self.subjects.add(value)

    def purged(self, target: str, rows: int | None, files: int, cutoff: date, term: str) -> None:
        """Record a retention purge: ``rows`` rows and ``files`` data files deleted from ``target``, everything
        dated before ``cutoff``, under bewaartermijn ``term`` (e.g. ``bronze P1Y``)."""
        self.purges.append({"target": target, "rows": None if rows is None else int(rows), "files": int(files),
                            "cutoff": cutoff, "term": term})

    def ontvanger(self, *names: str) -> None:
        """Record the recipients (partner organisations) the operation provides data to."""
        for name in names:
            if name not in self.recipients:
                self.recipients.append(name)

    def betrokkenen_aantal(self, count: int) -> None:
        """Record how many data subjects were processed when they are not listed one by one (bronze, gold)."""
        self.subject_count = int(count)

    def record(self, status: str, message: str | None, end_time: datetime) -> dict:
        """The log row of this operation."""
        subjects = sorted(self.subjects)
        row = {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": self.name,
            "start_time": self.start_time,
            "end_time": end_time,
            "status_code": status,
            "status_message": message,
            "processing_activity_id": self.activity.uri,
            "verwerkingsactiviteit": self.activity.naam,
            "doel": self.activity.doel,
            "grondslag": self.activity.grondslag,
            "bewaartermijn": self.activity.bewaartermijn,
            "betrokkenen_type": PSEUDONYM_TYPE if subjects else None,
            "betrokkenen": subjects,
            "betrokkenen_aantal": len(subjects) if subjects else self.subject_count,
            "resource_name": RESOURCE_NAME,
            "resource_version": _resource_version(),
            "systemen": list(self.systemen),
            "ontvangers": list(self.recipients),
            "gelezen": list(self.reads),
            "geschreven": [w["table"] for w in self.writes],
            "rijen_geschreven": [w["rows"] for w in self.writes],
            # Retention purges (ggm_lakehouse.retention): what, how much, dated before which day, under which term.
            "verwijderd": [p["target"] for p in self.purges],
            "rijen_verwijderd": [p["rows"] for p in self.purges],
            "bestanden_verwijderd": [p["files"] for p in self.purges],
            "verwijderd_tot": [p["cutoff"] for p in self.purges],
            "bewaartermijn_toegepast": [p["term"] for p in self.purges],
            "logical_date": self.logical_date,
            "run_id": self.run_id,
        }
        for key in ("name", "status_message", "run_id"):
            if row[key] and _looks_like_bsn(row[key]):
                raise ProcessingLogError(f"operation {self.name!r}: {key} contains what looks like a BSN")
        return row


@lru_cache(maxsize=1)
def _resource_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ggm-lakehouse")
    except PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------- storage


def log_location() -> Path:
    """Where the verwerkingslog Delta table lives: ``<lake root>/governance/verwerkingslog``."""
    return lake_root() / "governance" / "verwerkingslog"


def _schema():
    import pyarrow as pa

    timestamp = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            ("trace_id", pa.string()),
            ("span_id", pa.string()),
            ("parent_span_id", pa.string()),
            ("name", pa.string()),
            ("start_time", timestamp),
            ("end_time", timestamp),
            ("status_code", pa.string()),
            ("status_message", pa.string()),
            ("processing_activity_id", pa.string()),
            ("verwerkingsactiviteit", pa.string()),
            ("doel", pa.string()),
            ("grondslag", pa.string()),
            ("bewaartermijn", pa.string()),
            ("betrokkenen_type", pa.string()),
            ("betrokkenen", pa.list_(pa.string())),
            ("betrokkenen_aantal", pa.int64()),
            ("resource_name", pa.string()),
            ("resource_version", pa.string()),
            ("systemen", pa.list_(pa.string())),
            ("ontvangers", pa.list_(pa.string())),
            ("gelezen", pa.list_(pa.string())),
            ("geschreven", pa.list_(pa.string())),
            ("rijen_geschreven", pa.list_(pa.int64())),
            ("verwijderd", pa.list_(pa.string())),
            ("rijen_verwijderd", pa.list_(pa.int64())),
            ("bestanden_verwijderd", pa.list_(pa.int64())),
            ("verwijderd_tot", pa.list_(pa.date32())),
            ("bewaartermijn_toegepast", pa.list_(pa.string())),
            ("logical_date", pa.date32()),
            ("run_id", pa.string()),
        ]
    )


def append_records(rows: list[dict], location: Path | None = None) -> None:
    """Append log rows to the verwerkingslog (atomic Delta commit; creates the table on first use)."""
    import pyarrow as pa
    from deltalake import write_deltalake
    from deltalake.exceptions import CommitFailedError

    if not rows:
        return
    location = Path(location or log_location())
    location.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=_schema())
    # Appends never conflict with each other, but several writers may create the table at the
    # same moment: delta-rs then fails all but one commit of version 0, and those writers
    # append again to the table that now exists.
    for attempt in range(5):
        try:
            # merge: a log written before the retention columns existed gains them (empty in its old rows).
            write_deltalake(str(location), table, mode="append", partition_by=["logical_date"], schema_mode="merge")
            return
        except CommitFailedError as exc:
            if attempt == 4:
                raise
            log.info("verwerkingslog commit conflict, retrying: %s", exc)


@contextmanager
def processing_operation(
    name: str,
    activiteit: str | None = None,
    logical_date: date | None = None,
    run_id: str | None = None,
    reads: Iterable[str] = (),
    systemen: Iterable[str] = (),
) -> Iterator[ProcessingOperation]:
    """Log one processing operation: yields a :class:`ProcessingOperation`, writes its row on exit.

    ``activiteit`` is an activity id or name from the register; without it the activity
    whose ``operaties`` list ``name`` is used. An exception inside the block is logged with
    status ``ERROR`` (its class name only: messages may quote data) and re-raised. When the
    row cannot be written, the operation fails: LDV requires every log write to be confirmed.
    """
    activity = activity_for(activiteit or name)
    trace_id, parent = trace_context(run_id)
    op = ProcessingOperation(
        name=name, activity=activity, logical_date=logical_date, run_id=run_id, trace_id=trace_id, parent_span_id=parent
    )
    op.read(*reads)
    op.system(RESOURCE_NAME, *systemen)
    try:
        yield op
    except Exception as exc:
        append_records([op.record(STATUS_ERROR, type(exc).__name__, datetime.now(timezone.utc))])
        raise
    append_records([op.record(STATUS_OK, None, datetime.now(timezone.utc))])


# --------------------------------------------------------------------------- what the pipeline steps record


def record_landed_batches(op: ProcessingOperation, results: Iterable, person_tables: Collection[str]) -> None:
    """Record an extract: the endpoints read (from the manifests) and the landing batches written.

    ``results`` are the connector's ``BatchResult`` objects; ``person_tables`` the bronze tables
    that hold persons (``ggm_lakehouse.model.mappings.person_bronze_tables``). Landing holds the
    responses in clear, so persons are counted, not listed.
    """
    persons = 0
    for result in results:
        endpoint = result.manifest.get("endpoint")
        if endpoint:
            op.read(f"{result.source}: {endpoint}")
        op.wrote(f"landing.{result.source}/{result.dataset}", result.record_count)
        if f"{result.source}_{result.dataset}" in person_tables:
            persons += result.record_count
    if persons:
        op.betrokkenen_aantal(persons)


def record_published_share(op: ProcessingOperation, report: dict, recipients: Mapping[str, list[dict]]) -> None:
    """Record a publish step from its report: the gold tables shared and the recipients entitled to them.

    ``recipients`` lists the recipients per share name in lower case (``ggm_lakehouse.lineage.shared_recipients``).
    """
    op.system("Delta Sharing server")
    for table in report.get("tables", []):
        location = Path(table["location"])
        op.read(f"{location.parent.name}.{location.name}")
        op.wrote(f"share.{table['table']}", None)
        share = table["table"].split(".", 1)[0].lower()
        op.ontvanger(*(r["name"] for r in recipients.get(share, [])))


# --------------------------------------------------------------------------- reading


def read_processing_log(logical_date: date | None = None, location: Path | None = None) -> list[dict]:
    """The log rows (of one logical date, if given), oldest first; empty when nothing was logged yet."""
    from deltalake import DeltaTable

    location = Path(location or log_location())
    if not has_commits(location):
        return []
    table = DeltaTable(str(location))
    filters = [("logical_date", "=", logical_date)] if logical_date else None
    rows = table.to_pyarrow_table(filters=filters).to_pylist()
    return sorted(rows, key=lambda r: (r["start_time"], r["span_id"]))


def _purges(row: dict) -> dict:
    """The retention purges of a log row by target (rows written before the retention columns have none)."""
    targets = row.get("verwijderd") or []
    return {target: {"rijen": rows, "bestanden": files, "tot": cutoff.isoformat() if cutoff else None, "termijn": term}
            for target, rows, files, cutoff, term in zip(targets, row.get("rijen_verwijderd") or [],
                                                         row.get("bestanden_verwijderd") or [],
                                                         row.get("verwijderd_tot") or [],
                                                         row.get("bewaartermijn_toegepast") or [])}


def summarise(logical_date: date | None = None, location: Path | None = None) -> dict:
    """Per activity and operation: how often it ran, its status, data subjects and rows written."""
    rows = read_processing_log(logical_date, location)
    activities: dict[str, dict] = {}
    for row in rows:
        activity = activities.setdefault(
            row["processing_activity_id"],
            {
                "verwerkingsactiviteit": row["verwerkingsactiviteit"],
                "doel": row["doel"],
                "grondslag": row["grondslag"],
                "bewaartermijn": row["bewaartermijn"],
                "operaties": [],
            },
        )
        activity["operaties"].append(
            {
                "name": row["name"],
                "logical_date": row["logical_date"].isoformat() if row["logical_date"] else None,
                "run_id": row["run_id"],
                "trace_id": row["trace_id"],
                "span_id": row["span_id"],
                "status": row["status_code"],
                "start_time": row["start_time"].isoformat(),
                "end_time": row["end_time"].isoformat(),
                "betrokkenen": row["betrokkenen_aantal"],
                "ontvangers": row["ontvangers"],
                "gelezen": row["gelezen"],
                "geschreven": dict(zip(row["geschreven"], row["rijen_geschreven"])),
                "verwijderd": _purges(row),
            }
        )
    return {
        "logical_date": logical_date.isoformat() if logical_date else None,
        "location": str(location or log_location()),
        "operations": len(rows),
        "errors": sum(1 for r in rows if r["status_code"] == STATUS_ERROR),
        "activities": activities,
    }
