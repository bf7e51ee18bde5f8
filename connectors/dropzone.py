"""Drop-zone connectors for departmental systems: pick up, parse, land, archive or quarantine files.

CONTRACT (fixed; the implementation below it is being written):

A departmental source (iwmo, ijw, xaf, subsidies, vth, hr, vroegsignalering) is a
subclass of :class:`DropzoneConnector` that sets ``name``, ``datasets`` and
``file_patterns`` and implements :meth:`DropzoneConnector.parse_file`, a generator
that streams a file and yields

* :class:`ParsedUnit` - one self-contained piece of the file (an iWmo message, an
  XAF transaction, a CSV row group) with its records per dataset; a unit with an
  ``identity`` (e.g. the BerichtIdentificatie) is rejected as a duplicate when that
  identity was already accepted on an earlier day or earlier in the same run;
* :class:`Rejection` - a bad part of the file that is quarantined while the rest
  of the file still lands (position and rule named);

and raises :class:`FileRejected` when the file as a whole is unusable (not
well-formed, empty, wrong namespace, truncated); nothing of that file lands then,
even units it already yielded.

FRAMEWORK (what :meth:`DropzoneConnector.extract` does for one logical date D; the
operator's view is in docs/dropzones.md):

1. Takes the zone lock and collects the candidates: matching files newly arrived in
   the zone (hidden and partial files ``.*``, ``*.part``, ``*.tmp``, ``*.filepart``
   are never picked up; files whose name carries a date after D wait for their day)
   plus the files already archived or quarantined under D by an earlier run of D.
   Candidates are processed sorted by name, then sha256.
2. Per file: an empty file is rejected (``empty_file``); a file whose sha256 was
   already archived on an earlier date (or earlier in this run) is a
   ``duplicate_file``; otherwise ``parse_file`` streams it. Accepted units are
   streamed to a pending part per dataset inside the landing batch directory, so
   memory stays bounded; they become parts only when the generator finished
   without :class:`FileRejected`.
3. On a day with at least one accepted file, commits one landing batch per dataset
   (an empty part where no file contributed); on a day without, none (unless
   ``land_empty_batches``: for event sources "no file" then reads as "no change"), so a
   snapshot mapping keeps the last delivery. The ``dropzone_manifest`` batch always lands; then writes
   ``<zone>/_manifest/<D>.json``, then commits the identity state, and only then
   moves the files to ``archive/<D>/`` or ``quarantine/<D>/`` (next to their reason
   and rejection files). A crash at any point leaves every file either still in
   the zone or under D, so a rerun of D redoes the day and loses nothing.
"""
from __future__ import annotations

import errno
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, ClassVar, Iterator, Mapping

from connectors.base import Connector, ExtractWindow
from connectors.errors import SourceConfigError, SourceDataError
from ggm_lakehouse import config as ggm_config
from ggm_lakehouse.landing import BatchResult, BatchWriter, fsync_dir

log = logging.getLogger(__name__)

MANIFEST_DATASET = "dropzone_manifest"
"""Dataset (bronze table ``<source>_dropzone_manifest``) holding one record per processed file."""

OUTCOME_ACCEPTED = "accepted"
OUTCOME_PARTIALLY_ACCEPTED = "partially_accepted"
OUTCOME_REJECTED = "rejected"
OUTCOME_DUPLICATE_FILE = "duplicate_file"
# A full export replaced by a newer export of the same kind delivered for the same run (a catch-up day).
OUTCOME_SUPERSEDED = "superseded"
ARCHIVED_OUTCOMES = (OUTCOME_ACCEPTED, OUTCOME_PARTIALLY_ACCEPTED, OUTCOME_SUPERSEDED)
LANDED_OUTCOMES = (OUTCOME_ACCEPTED, OUTCOME_PARTIALLY_ACCEPTED)

RULE_EMPTY_FILE = "empty_file"
RULE_DUPLICATE_FILE = "duplicate_file"
RULE_PARSE_ERROR = "parse_error"
RULE_ALL_UNITS_REJECTED = "all_units_rejected"

REASON_SUFFIX = ".reason.json"
REJECTIONS_SUFFIX = ".rejections.json"
# Names of files still being copied in by the delivering system (scp/WinSCP/rsync temporaries).
IGNORED_PATTERNS = (".*", "*.part", "*.tmp", "*.filepart")
# Folders the framework keeps inside the zone; never candidates, never deliveries.
MANIFEST_DIRNAME = "_manifest"
STATE_DIRNAME = "_state"

_DATE_TOKEN = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})")
_HASH_CHUNK = 1 << 18

DROPZONE_CONFIG_PROPERTIES: dict[str, Any] = {
    "dropzone_dir": {
        "type": "string",
        "minLength": 1,
        "description": "Folder the departmental system delivers into (default <GGM_DROPZONE_ROOT>/<source>, "
        "or env GGM_DROPZONE_<SOURCE>).",
    },
    "archive_dir": {"type": "string", "minLength": 1, "description": "Archive root (default <dropzone_dir>/archive)."},
    "quarantine_dir": {
        "type": "string",
        "minLength": 1,
        "description": "Quarantine root (default <dropzone_dir>/quarantine).",
    },
    "file_patterns": {
        "type": "array",
        "minItems": 1,
        "items": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
        "description": "Glob patterns of the files to pick up (default: the connector's file_patterns).",
    },
    "respect_file_dates": {
        "type": "boolean",
        "default": True,
        "description": "Leave files whose name carries a date (YYYYMMDD or YYYY-MM-DD) after the logical date "
        "for a later run.",
    },
    "max_rejections_listed": {
        "type": "integer",
        "minimum": 0,
        "default": 1000,
        "description": "Rejections listed per file in the manifest (all of them are in the .rejections.json file).",
    },
    "lock_timeout": {
        "type": "number",
        "minimum": 0,
        "default": 3600,
        "description": "Seconds to wait for another run that holds the zone lock.",
    },
}


def dropzone_config_schema(
    properties: Mapping[str, Any] | None = None, required: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """JSON Schema of a drop-zone connector: the shared drop-zone keys plus a subclass's ``properties``.

    Example: ``config_schema = dropzone_config_schema({"agb_code": {"type": "string"}})``.
    """
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {**DROPZONE_CONFIG_PROPERTIES, **dict(properties or {})},
        "required": list(required),
        "additionalProperties": False,
    }


def dropzone_env_var(source: str) -> str:
    """Environment variable that moves the zone of ``source`` (``brp-volglijst``: ``GGM_DROPZONE_BRP_VOLGLIJST``)."""
    return "GGM_DROPZONE_" + re.sub(r"[^A-Za-z0-9]", "_", source).upper()


def file_date(name: str) -> date | None:
    """The first calendar date token (``YYYYMMDD`` or ``YYYY-MM-DD``) in a file name, if any."""
    for match in _DATE_TOKEN.finditer(name):
        year, month, day = (int(group) for group in match.groups())
        if not 1900 <= year <= 2199:
            continue
        try:
            return date(year, month, day)
        except ValueError:
            continue
    return None


def is_ignored_name(name: str) -> bool:
    """Hidden or partial names (still being copied in) that the framework never picks up."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in IGNORED_PATTERNS)


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 256 KiB chunks (bounded memory for any file size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Rejection:
    """A bad part of a delivered file: which file, where in it, which rule it broke and why.

    ``rule`` is a stable machine-readable id (``xsd_invalid``, ``bsn_elfproef``,
    ``duplicate_bericht``, ``unbalanced_transaction``, ``unknown_account``,
    ``bad_decimal``, ...); ``position`` is human-readable and precise (``line 12``,
    ``bericht 3 (BerichtIdentificatie 12345)``, ``journal 70 transaction 2024-0017``).
    """

    file: str
    position: str
    rule: str
    message: str
    identity: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "position": self.position, "rule": self.rule, "message": self.message,
                "identity": self.identity}


class FileRejected(Exception):
    """The whole file is unusable; it moves to quarantine with this rule, message and position."""

    def __init__(self, rule: str, message: str, position: str | None = None) -> None:
        super().__init__(f"{rule}: {message}" + (f" (at {position})" if position else ""))
        self.rule = rule
        self.message = message
        self.position = position


@dataclass
class ParsedUnit:
    """One self-contained, valid piece of a file and the records it contributes per dataset.

    ``records`` maps a dataset of the connector (``cls.datasets``) to JSON-serialisable
    dicts; every record should carry enough provenance (e.g. ``bericht_identificatie``)
    for silver to key it. ``identity`` enables duplicate detection across files and days.
    """

    position: str
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    identity: str | None = None


# ---------------------------------------------------------------------- file-system helpers


def _write_text_atomic(path: Path, write: Callable[[IO[str]], None]) -> None:
    """Let ``write`` fill a fsynced temporary file next to ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _write_json_atomic(path: Path, document: Any) -> None:
    """Write ``document`` as JSON through a fsynced temporary file renamed into place."""
    _write_text_atomic(path, lambda handle: handle.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n"))


def _move_durably(source: Path, target: Path) -> None:
    """Move ``source`` to ``target`` so that at every instant at least one complete copy exists.

    Same file system: one atomic rename. Across file systems (archive on other storage):
    copy with metadata (the mtime is the arrival time) to a temporary name, fsync,
    rename, and only then remove the source.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}-", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            shutil.copy2(source, tmp_name)
            with open(tmp_name, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        fsync_dir(target.parent)
        source.unlink()
    else:
        fsync_dir(target.parent)
    fsync_dir(source.parent)


def _arrival_time(stat: os.stat_result) -> str:
    # Whole seconds: a cross-file-system copy may round sub-second mtimes, and a rerun
    # must report the same arrival time for the same file.
    return datetime.fromtimestamp(int(stat.st_mtime), tz=timezone.utc).isoformat()


# ---------------------------------------------------------------------- identity and file state


class _ZoneState:
    """Accepted identities and archived file checksums of one zone, in ``<zone>/_state/dropzone.sqlite``.

    One run of logical date D is one transaction: it first forgets what an earlier run
    of D recorded (so a rerun of D does not see its own first run as duplicates) and
    commits after the landing batches are complete. Each file is a savepoint, so a file
    rejected half-way leaves none of its identities behind. Lookups consider dates up
    to D only: a rerun of an old date behaves as it did when the days ran in order.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(path, isolation_level=None)
        self.connection.execute("PRAGMA synchronous=FULL")
        self.connection.executescript(
            """
            CREATE TABLE IF NOT EXISTS identities (
                identity TEXT NOT NULL, logical_date TEXT NOT NULL, file TEXT NOT NULL, position TEXT,
                PRIMARY KEY (identity, logical_date));
            CREATE TABLE IF NOT EXISTS files (
                sha256 TEXT NOT NULL, logical_date TEXT NOT NULL, file TEXT NOT NULL, outcome TEXT NOT NULL,
                PRIMARY KEY (sha256, logical_date, file));
            """
        )

    def begin(self, logical_date: date) -> None:
        """Start the run's transaction and forget what an earlier run of ``logical_date`` recorded."""
        day = logical_date.isoformat()
        self.connection.execute("BEGIN IMMEDIATE")
        self.connection.execute("DELETE FROM identities WHERE logical_date = ?", (day,))
        self.connection.execute("DELETE FROM files WHERE logical_date = ?", (day,))

    def first_acceptance(self, identity: str, logical_date: date) -> tuple[str, str] | None:
        """``(logical_date, file)`` that first carried ``identity`` on or before ``logical_date``, if any."""
        row = self.connection.execute(
            "SELECT logical_date, file FROM identities WHERE identity = ? AND logical_date <= ? "
            "ORDER BY logical_date LIMIT 1",
            (identity, logical_date.isoformat()),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def accept_identity(self, identity: str, logical_date: date, file: str, position: str) -> None:
        self.connection.execute(
            "INSERT INTO identities (identity, logical_date, file, position) VALUES (?, ?, ?, ?)",
            (identity, logical_date.isoformat(), file, position),
        )

    def archived_copy(self, sha256: str, logical_date: date) -> tuple[str, str] | None:
        """``(logical_date, file)`` of an archived file with this checksum on or before ``logical_date``."""
        placeholders = ",".join("?" for _ in ARCHIVED_OUTCOMES)
        row = self.connection.execute(
            f"SELECT logical_date, file FROM files WHERE sha256 = ? AND logical_date <= ? "
            f"AND outcome IN ({placeholders}) ORDER BY logical_date, file LIMIT 1",
            (sha256, logical_date.isoformat(), *ARCHIVED_OUTCOMES),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def record_file(self, sha256: str, logical_date: date, file: str, outcome: str) -> None:
        self.connection.execute(
            "INSERT OR REPLACE INTO files (sha256, logical_date, file, outcome) VALUES (?, ?, ?, ?)",
            (sha256, logical_date.isoformat(), file, outcome),
        )

    def savepoint(self) -> None:
        self.connection.execute("SAVEPOINT dropzone_file")

    def release(self) -> None:
        self.connection.execute("RELEASE SAVEPOINT dropzone_file")

    def rollback_file(self) -> None:
        self.connection.execute("ROLLBACK TO SAVEPOINT dropzone_file")
        self.connection.execute("RELEASE SAVEPOINT dropzone_file")

    def commit(self) -> None:
        self.connection.execute("COMMIT")

    def close(self) -> None:
        """Close; an uncommitted run is rolled back (the state stays as before the run)."""
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")
        self.connection.close()


class _ZoneLock:
    """Exclusive lock of one zone (``<zone>/_state/.lock``): two runs must not move the same files."""

    def __init__(self, path: Path, source: str, timeout: float) -> None:
        self.path = path
        self.source = source
        self.timeout = timeout
        self.handle: IO[bytes] | None = None

    def __enter__(self) -> "_ZoneLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "ab")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.handle.close()
                    raise SourceDataError(
                        self.source, f"drop zone lock {self.path} is held by another run (waited {self.timeout:g} s)"
                    ) from None
                time.sleep(1.0)

    def __exit__(self, *exc: object) -> None:
        assert self.handle is not None
        fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
        self.handle.close()


# ---------------------------------------------------------------------- streaming parts


class _PendingPart:
    """Records of one file for one dataset, streamed as ``{"records": [...]}`` to a hidden temporary file.

    The temporary file lives in the batch directory, so it becomes a part by a rename
    on the same file system; its sha256 and size are computed while writing.
    """

    def __init__(self, directory: Path, dataset: str) -> None:
        fd, name = tempfile.mkstemp(prefix=f".pending-{dataset}-", suffix=".tmp", dir=directory)
        self.path = Path(name)
        self.handle = os.fdopen(fd, "wb")
        self.digest = hashlib.sha256()
        self.size = 0
        self.record_count = 0
        self.dataset = dataset
        self._write(b'{"records": [')

    def _write(self, data: bytes) -> None:
        self.handle.write(data)
        self.digest.update(data)
        self.size += len(data)

    def add(self, record: Any, position: str) -> None:
        try:
            encoded = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"record for dataset {self.dataset!r} at {position} is not JSON-serialisable: {exc}"
            ) from exc
        self._write((b"\n" if self.record_count == 0 else b",\n") + encoded.encode("utf-8"))
        self.record_count += 1

    def finish(self) -> None:
        self._write(b"\n]}\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()

    def discard(self) -> None:
        if not self.handle.closed:
            self.handle.close()
        self.path.unlink(missing_ok=True)


class _StreamingBatchWriter(BatchWriter):
    """A :class:`BatchWriter` that also accepts a part already streamed to disk (no bytes in memory)."""

    def add_pending_part(
        self, pending: _PendingPart, *, request: Mapping[str, Any], extra: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Rename a finished :class:`_PendingPart` into the batch as its next part."""
        if not self._open:
            raise RuntimeError("BatchWriter is not open; use it as a context manager")
        name = f"part-{len(self.parts) + 1:05d}.{self.extension}"
        os.replace(pending.path, self.path / name)
        entry: dict[str, Any] = {
            "file": name,
            "request": dict(request),
            "status": None,
            "record_count": pending.record_count,
            "sha256": pending.digest.hexdigest(),
            "bytes": pending.size,
            **extra,
        }
        self.parts.append(entry)
        return entry

    def add_empty_part(self, *, request: Mapping[str, Any]) -> dict[str, Any]:
        """The part of a day on which no file contributed to this dataset: ``{"records": []}``."""
        return self.add_part(b'{"records": []}\n', request=request, status=None)


class _RejectionLog:
    """Rejections of one file: all of them streamed to a JSON-lines work file, the first few kept for the manifest."""

    def __init__(self, directory: Path, keep: int) -> None:
        fd, name = tempfile.mkstemp(prefix=".rejections-", suffix=".jsonl", dir=directory)
        self.path = Path(name)
        self.handle = os.fdopen(fd, "w", encoding="utf-8")
        self.keep = keep
        self.listed: list[dict[str, Any]] = []
        self.per_rule: Counter[str] = Counter()
        self.count = 0

    def add(self, rejection: Rejection) -> None:
        entry = rejection.as_dict()
        self.handle.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
        if len(self.listed) < self.keep:
            self.listed.append(entry)
        self.per_rule[rejection.rule] += 1
        self.count += 1

    def close(self) -> None:
        if not self.handle.closed:
            self.handle.close()

    def iter_entries(self) -> Iterator[dict[str, Any]]:
        self.close()
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------------- the connector


@dataclass
class _Candidate:
    """One delivered file to process in this run, wherever it currently lies."""

    name: str
    path: Path
    sha256: str
    size: int
    arrival_time: str
    # Identical copies of the same delivery in other places (a move interrupted across file systems).
    copies: list[Path] = field(default_factory=list)


@dataclass
class _FileResult:
    """What happened to one candidate; becomes its manifest entry and drives the move."""

    candidate: _Candidate
    outcome: str
    units_accepted: int = 0
    rejections: _RejectionLog | None = None
    rule: str | None = None
    message: str | None = None
    position: str | None = None
    target: Path | None = None
    # Accepted records per dataset, streamed to disk; they become parts once the outcome is known.
    pending: dict[str, _PendingPart] = field(default_factory=dict)


class DropzoneConnector(Connector):
    """Base of every drop-zone source; see the module docstring for the parse contract.

    Subclasses set ``name``, ``datasets``, ``file_patterns`` (globs matched against
    file names) and optionally ``duplicate_rule`` (the rule of a unit whose identity
    was accepted before, e.g. ``duplicate_bericht``) and ``config_schema`` (built with
    :func:`dropzone_config_schema`), and implement :meth:`parse_file`.

    After :meth:`extract`, ``last_report`` summarises the run (also written into
    ``<zone>/_manifest/<D>.json``)::

        {"source", "logical_date", "run_id", "files_seen", "files_accepted",
         "files_partially_accepted", "files_rejected": [{file, rule, message, position}],
         "units_accepted", "units_rejected", "units_rejected_per_rule": {rule: n},
         "files_ignored": [...], "files_deferred": [...]}
    """

    file_patterns: ClassVar[tuple[str, ...]] = ("*",)
    # False: a day without a delivery lands no batch for a dataset, so snapshot mappings (full
    # exports such as the XAF or a register) keep the last delivery with ``on_missing_batch: keep``.
    land_empty_batches: ClassVar[bool] = False
    # True for sources whose every file is a full export (XAF, register exports): when one run sees
    # several exports of the same kind (a missed day, a re-sent file), only the newest one lands and
    # the older ones are archived as superseded, so one snapshot never holds two states of an object.
    supersede_older_deliveries: ClassVar[bool] = False

    def delivery_group(self, file_name: str) -> str:
        """Which exports replace each other: the file name without its date (``auditfile_2026_*.xaf``)."""
        return _DATE_TOKEN.sub("*", file_name)
    duplicate_rule: ClassVar[str] = "duplicate"
    config_schema: ClassVar[dict[str, Any]] = dropzone_config_schema()

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        if not self.name:
            raise SourceConfigError(type(self).__name__, "a drop-zone connector needs a name")
        if not self.datasets:
            raise SourceConfigError(self.name, "a drop-zone connector needs at least one dataset")
        if MANIFEST_DATASET in self.datasets:
            raise SourceConfigError(self.name, f"dataset name {MANIFEST_DATASET!r} is reserved for the file manifest")
        self.last_report: dict[str, Any] | None = None

    # -- configuration and layout

    @classmethod
    def config_from_connection(cls, connection, auth: str | None = None) -> dict[str, Any]:
        """A drop zone's config is the connection's ``extra`` JSON.

        A File (path) connection (``conn_type`` ``fs``, extra ``{"path": ...}``) works too:
        ``path`` becomes ``dropzone_dir``. Login and password are not used (a drop zone
        has no credentials).
        """
        config = dict(connection.extra)
        if "path" in config:
            config.setdefault("dropzone_dir", config.pop("path"))
        return config

    @classmethod
    def landed_datasets(cls) -> tuple[str, ...]:
        """Every dataset :meth:`extract` lands: ``datasets`` plus ``dropzone_manifest``.

        Each becomes bronze table ``<source>_<dataset>``.
        """
        return (*cls.datasets, MANIFEST_DATASET)

    @property
    def zone_dir(self) -> Path:
        """Where files arrive.

        Config ``dropzone_dir``, else env ``GGM_DROPZONE_<SOURCE>``, else ``<dropzone root>/<source>``.
        """
        configured = self.config.get("dropzone_dir") or os.environ.get(dropzone_env_var(self.name))
        return Path(configured) if configured else ggm_config.dropzone_root() / self.name

    @property
    def archive_root(self) -> Path:
        """Root of ``<YYYY-MM-DD>/<file>`` folders of processed files."""
        configured = self.config.get("archive_dir")
        return Path(configured) if configured else self.zone_dir / "archive"

    @property
    def quarantine_root(self) -> Path:
        """Root of ``<YYYY-MM-DD>/<file>`` folders of rejected files, reasons and unit rejections."""
        configured = self.config.get("quarantine_dir")
        return Path(configured) if configured else self.zone_dir / "quarantine"

    @property
    def patterns(self) -> tuple[str, ...]:
        """The glob patterns of files to pick up (config ``file_patterns`` overrides the class's)."""
        return tuple(self.config.get("file_patterns") or self.file_patterns)

    def manifest_path(self, logical_date: date) -> Path:
        """``<zone>/_manifest/<YYYY-MM-DD>.json``: the files of that date with their outcomes and the report."""
        return self.zone_dir / MANIFEST_DIRNAME / f"{logical_date.isoformat()}.json"

    def matches(self, name: str) -> bool:
        """Whether ``name`` is a delivery this connector picks up (pattern match, not hidden or partial)."""
        if is_ignored_name(name) or name.endswith(REASON_SUFFIX) or name.endswith(REJECTIONS_SUFFIX):
            return False
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns)

    # -- parsing (subclasses)

    def parse_file(self, path: Path) -> Iterator[ParsedUnit | Rejection]:
        """Stream ``path`` and yield its units and rejections; raise :class:`FileRejected` for a bad file."""
        raise NotImplementedError

    # -- extraction

    def extract(self, window: ExtractWindow, landing_root: Path) -> list[BatchResult]:
        """Process the zone for ``window.logical_date``: one batch per dataset plus ``dropzone_manifest``.

        Returns the batches in ``landed_datasets()`` order and sets ``last_report``.
        """
        self.last_report = None
        zone = self.zone_dir
        if not zone.is_dir():
            raise SourceDataError(self.name, f"drop zone {zone} does not exist or is not a directory")
        state_dir = zone / STATE_DIRNAME
        with _ZoneLock(state_dir / ".lock", self.name, float(self.config["lock_timeout"])):
            return _ZoneRun(self, window, Path(landing_root), state_dir).run()


class _ZoneRun:
    """One run of one drop zone for one logical date (holds the zone lock while it exists)."""

    def __init__(
        self, connector: DropzoneConnector, window: ExtractWindow, landing_root: Path, state_dir: Path
    ) -> None:
        self.connector = connector
        self.source = connector.name
        self.window = window
        self.day = window.logical_date
        self.landing_root = landing_root
        self.zone = connector.zone_dir
        self.archive_day = connector.archive_root / self.day.isoformat()
        self.quarantine_day = connector.quarantine_root / self.day.isoformat()
        self.state_dir = state_dir
        self.work_dir = state_dir / "work"
        self.ignored: list[str] = []
        self.deferred: list[str] = []

    # -- candidates

    def _describe(self, path: Path) -> _Candidate:
        stat = path.stat()
        return _Candidate(
            name=path.name, path=path, sha256=file_sha256(path), size=stat.st_size, arrival_time=_arrival_time(stat)
        )

    def _day_files(self, day_dir: Path) -> list[Path]:
        """Files under an archive/quarantine day folder and its one level of same-name conflict folders."""
        if not day_dir.is_dir():
            return []
        found = []
        for entry in sorted(day_dir.iterdir()):
            if entry.is_dir():
                found.extend(p for p in sorted(entry.iterdir()) if p.is_file() and self.connector.matches(p.name))
            elif entry.is_file() and self.connector.matches(entry.name):
                found.append(entry)
        return found

    def collect(self) -> list[_Candidate]:
        """New arrivals plus the files an earlier run of this date archived or quarantined, in processing order."""
        arrivals = []
        for entry in sorted(self.zone.iterdir()):
            if not entry.is_file() or is_ignored_name(entry.name):
                continue
            if not self.connector.matches(entry.name):
                self.ignored.append(entry.name)
                continue
            delivered = file_date(entry.name)
            if self.connector.config["respect_file_dates"] and delivered is not None and delivered > self.day:
                self.deferred.append(entry.name)
                continue
            arrivals.append(entry)
        if self.ignored:
            log.warning(
                "%s: ignoring files that match none of %s: %s", self.source, self.connector.patterns, self.ignored
            )
        if self.deferred:
            log.info("%s: leaving %d file(s) dated after %s for a later run", self.source, len(self.deferred), self.day)
        by_content: dict[tuple[str, str], _Candidate] = {}
        for path in [*self._day_files(self.archive_day), *self._day_files(self.quarantine_day), *arrivals]:
            candidate = self._describe(path)
            key = (candidate.name, candidate.sha256)
            if key in by_content:
                by_content[key].copies.append(path)
            else:
                by_content[key] = candidate
        return [by_content[key] for key in sorted(by_content)]

    # -- run

    def run(self) -> list[BatchResult]:
        candidates = self.collect()
        if self.connector.supersede_older_deliveries:
            # Newest export of each kind first: once one is accepted, older ones are superseded. If the
            # newest is rejected, the next newest still lands.
            newest_first = sorted(candidates, key=lambda c: (file_date(c.name) or date.min, c.name), reverse=True)
            candidates = sorted(newest_first, key=lambda c: self.connector.delivery_group(c.name))
        landed_groups: dict[str, str] = {}
        # Same-named deliveries of one day get a folder per checksum so neither overwrites the other.
        name_counts = Counter(c.name for c in candidates)
        shutil.rmtree(self.work_dir, ignore_errors=True)
        self.work_dir.mkdir(parents=True)
        state = _ZoneState(self.state_dir / "dropzone.sqlite")
        results: list[_FileResult] = []
        try:
            state.begin(self.day)
            writers = {
                dataset: _StreamingBatchWriter(
                    self.landing_root,
                    self.source,
                    dataset,
                    self.window,
                    endpoint="FILE " + ",".join(self.connector.patterns),
                    record_path="records",
                    content_type="application/json",
                    extra={"dropzone": str(self.zone)},
                )
                for dataset in self.connector.datasets
            }
            for writer in writers.values():
                writer.open()
            for candidate in candidates:
                relative = (
                    Path(candidate.name) if name_counts[candidate.name] == 1
                    else Path(candidate.sha256[:12]) / candidate.name
                )
                results.append(self._process(candidate, relative, state, writers, landed_groups))
            batches = []
            delivered = any(writer.parts for writer in writers.values())
            for dataset, writer in writers.items():
                if not writer.parts:
                    if not delivered and not self.connector.land_empty_batches:
                        # No delivery today. Landing nothing (rather than empty batches) lets a
                        # snapshot mapping keep the last delivery instead of closing all of it.
                        shutil.rmtree(writer.path, ignore_errors=True)
                        continue
                    writer.add_empty_part(
                        request={"method": "FILE", "url": self.zone.resolve().as_uri(), "params": {}, "body": None}
                    )
                batches.append(writer.commit())
            entries = [self._entry(result) for result in results]
            report = self._report(results)
            batches.append(self._land_manifest(entries))
            _write_json_atomic(self.connector.manifest_path(self.day), self._zone_manifest(entries, report))
            state.commit()
            # Only now, with the data landed and the state committed, do files leave the zone.
            for result in results:
                self._store(result)
            self.connector.last_report = report
            log.info(
                "%s %s: %d file(s) accepted, %d rejected, %d unit(s) accepted, unit rejections %s",
                self.source, self.day, report["files_accepted"], len(report["files_rejected"]),
                report["units_accepted"], report["units_rejected_per_rule"],
            )
            return batches
        finally:
            state.close()
            for result in results:
                if result.rejections is not None:
                    result.rejections.discard()
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- one file

    def _process(
        self, candidate: _Candidate, relative: Path, state: _ZoneState, writers: dict[str, _StreamingBatchWriter],
        landed_groups: dict[str, str] | None = None,
    ) -> _FileResult:
        name = candidate.name
        group = self.connector.delivery_group(name) if self.connector.supersede_older_deliveries else None
        if group is not None and landed_groups is not None and group in landed_groups:
            result = _FileResult(candidate, OUTCOME_SUPERSEDED,
                                 message=f"superseded by the newer export {landed_groups[group]} of the same run")
        elif candidate.size == 0:
            result = _FileResult(candidate, OUTCOME_REJECTED, rule=RULE_EMPTY_FILE,
                                 message="the file is empty (0 bytes)", position="byte 0")
        elif (copy := state.archived_copy(candidate.sha256, self.day)) is not None:
            first_day, first_file = copy
            when = "earlier in this run" if first_day == self.day.isoformat() else f"on {first_day}"
            result = _FileResult(
                candidate, OUTCOME_DUPLICATE_FILE, rule=RULE_DUPLICATE_FILE,
                message=f"identical (sha256 {candidate.sha256}) to {first_file}, archived {when}",
            )
        else:
            result = self._parse(candidate, state, writers)
        result.target = (self.archive_day if result.outcome in ARCHIVED_OUTCOMES else self.quarantine_day) / relative
        if result.outcome in LANDED_OUTCOMES:
            self._commit_parts(result, writers)
            if group is not None and landed_groups is not None:
                landed_groups[group] = name
        state.record_file(candidate.sha256, self.day, name, result.outcome)
        log.info("%s %s: %s -> %s%s", self.source, self.day, name, result.outcome,
                 f" ({result.rule}: {result.message})" if result.rule else "")
        return result

    def _parse(
        self, candidate: _Candidate, state: _ZoneState, writers: dict[str, _StreamingBatchWriter]
    ) -> _FileResult:
        """Stream the file through ``parse_file``; accepted units go to the result's pending parts."""
        rejections = _RejectionLog(self.work_dir, int(self.connector.config["max_rejections_listed"]))
        pending: dict[str, _PendingPart] = {}
        units_accepted = 0
        failure: FileRejected | None = None
        state.savepoint()
        generator = self._items(candidate.path)
        try:
            while True:
                try:
                    item = next(generator)
                except StopIteration:
                    break
                except FileRejected as exc:
                    failure = exc
                    break
                except Exception as exc:  # a parser crash quarantines the file instead of failing the whole day
                    log.exception("%s: parser failed on %s", self.source, candidate.name)
                    failure = FileRejected(RULE_PARSE_ERROR, f"{type(exc).__name__}: {exc}")
                    break
                if isinstance(item, Rejection):
                    rejections.add(item)
                elif isinstance(item, ParsedUnit):
                    if self._accept_unit(item, candidate, state, writers, pending, rejections):
                        units_accepted += 1
                else:
                    raise TypeError(
                        f"{type(self.connector).__name__}.parse_file yielded {type(item).__name__}; "
                        "expected ParsedUnit or Rejection"
                    )
        except BaseException:
            for part in pending.values():
                part.discard()
            rejections.discard()
            raise
        finally:
            generator.close()
        if failure is not None:
            for part in pending.values():
                part.discard()
            rejections.discard()
            state.rollback_file()
            return _FileResult(candidate, OUTCOME_REJECTED, rule=failure.rule, message=failure.message,
                               position=failure.position)
        state.release()
        rejections.close()  # keep no descriptor open per file until the moves at the end
        if units_accepted == 0 and rejections.count > 0:
            for part in pending.values():
                part.discard()
            rules = sorted(rejections.per_rule)
            summary = ", ".join(f"{rule} x{rejections.per_rule[rule]}" for rule in rules)
            return _FileResult(
                candidate, OUTCOME_REJECTED, rejections=rejections,
                rule=rules[0] if len(rules) == 1 else RULE_ALL_UNITS_REJECTED,
                message=f"all {rejections.count} unit(s) of the file were rejected ({summary})",
                position=rejections.listed[0]["position"] if rejections.listed else None,
            )
        result = _FileResult(
            candidate,
            OUTCOME_PARTIALLY_ACCEPTED if rejections.count else OUTCOME_ACCEPTED,
            units_accepted=units_accepted,
            rejections=rejections if rejections.count else None,
            pending=pending,
        )
        if not rejections.count:
            rejections.discard()
        return result

    def _items(self, path: Path) -> Iterator[ParsedUnit | Rejection]:
        # Wrapping the call makes an exception raised before the first yield (or by a
        # parse_file that is a plain function returning a list) surface inside next().
        yield from self.connector.parse_file(path)

    def _accept_unit(
        self, unit: ParsedUnit, candidate: _Candidate, state: _ZoneState,
        writers: dict[str, _StreamingBatchWriter], pending: dict[str, _PendingPart], rejections: _RejectionLog,
    ) -> bool:
        """Stream an accepted unit's records to the pending parts, or reject it as a duplicate."""
        if unit.identity is not None:
            first = state.first_acceptance(unit.identity, self.day)
            if first is not None:
                first_day, first_file = first
                when = "earlier in this run" if first_day == self.day.isoformat() else f"on {first_day}"
                rejections.add(Rejection(
                    file=candidate.name, position=unit.position, rule=self.connector.duplicate_rule,
                    message=f"{unit.identity} was already accepted from {first_file} {when}",
                    identity=unit.identity,
                ))
                return False
        for dataset, records in unit.records.items():
            if dataset not in writers:
                raise ValueError(
                    f"{type(self.connector).__name__}.parse_file yielded records for unknown dataset {dataset!r} "
                    f"at {unit.position}; declared datasets: {self.connector.datasets}"
                )
            if dataset not in pending:
                pending[dataset] = _PendingPart(writers[dataset].path, dataset)
            for record in records:
                pending[dataset].add(record, unit.position)
        if unit.identity is not None:
            state.accept_identity(unit.identity, self.day, candidate.name, unit.position)
        return True

    def _commit_parts(self, result: _FileResult, writers: dict[str, _StreamingBatchWriter]) -> None:
        """Turn the accepted file's pending parts into batch parts (declared dataset order)."""
        pending, result.pending = result.pending, {}
        assert result.target is not None
        request = {"method": "FILE", "url": result.target.resolve().as_uri(), "params": {}, "body": None}
        extra = {
            "source_file": result.candidate.name,
            "source_sha256": result.candidate.sha256,
            "arrival_time": result.candidate.arrival_time,
        }
        for dataset in self.connector.datasets:
            part = pending.get(dataset)
            if part is None:
                continue
            part.finish()
            writers[dataset].add_pending_part(part, request=request, extra=extra)

    # -- manifest, report, storage

    def _sidecar_dir(self, target: Path) -> Path:
        """Quarantine folder that holds the reason and rejection files of ``target``."""
        root = self.archive_day if target.is_relative_to(self.archive_day) else self.quarantine_day
        return self.quarantine_day / target.parent.relative_to(root)

    def _entry(self, result: _FileResult) -> dict[str, Any]:
        candidate = result.candidate
        assert result.target is not None
        sidecars = self._sidecar_dir(result.target)
        quarantined = result.outcome not in ARCHIVED_OUTCOMES
        return {
            "source": self.source,
            "logical_date": self.day.isoformat(),
            "file": candidate.name,
            "size": candidate.size,
            "sha256": candidate.sha256,
            "arrival_time": candidate.arrival_time,
            "outcome": result.outcome,
            "rule": result.rule,
            "message": result.message,
            "position": result.position,
            "units_accepted": result.units_accepted,
            "units_rejected": result.rejections.count if result.rejections else 0,
            "rejections": [
                {k: r[k] for k in ("rule", "position", "message", "identity")}
                for r in (result.rejections.listed if result.rejections else [])
            ],
            "rejections_truncated": bool(result.rejections and result.rejections.count > len(result.rejections.listed)),
            "archive_path": None if quarantined else str(result.target),
            "quarantine_path": str(result.target) if quarantined else None,
            "reason_file": str(sidecars / (candidate.name + REASON_SUFFIX)) if quarantined else None,
            "rejections_file": str(sidecars / (candidate.name + REJECTIONS_SUFFIX)) if result.rejections else None,
        }

    def _report(self, results: list[_FileResult]) -> dict[str, Any]:
        per_rule: Counter[str] = Counter()
        for result in results:
            if result.rejections is not None:
                per_rule.update(result.rejections.per_rule)
        return {
            "source": self.source,
            "logical_date": self.day.isoformat(),
            "run_id": self.window.run_id,
            "files_seen": len(results),
            "files_accepted": sum(1 for r in results if r.outcome in LANDED_OUTCOMES),
            "files_superseded": [r.candidate.name for r in results if r.outcome == OUTCOME_SUPERSEDED],
            "files_partially_accepted": sum(1 for r in results if r.outcome == OUTCOME_PARTIALLY_ACCEPTED),
            "files_rejected": [
                {"file": r.candidate.name, "rule": r.rule, "message": r.message, "position": r.position}
                for r in results if r.outcome not in ARCHIVED_OUTCOMES
            ],
            "units_accepted": sum(r.units_accepted for r in results),
            "units_rejected": sum(per_rule.values()),
            "units_rejected_per_rule": dict(sorted(per_rule.items())),
            "files_ignored": list(self.ignored),
            "files_deferred": list(self.deferred),
        }

    def _land_manifest(self, entries: list[dict[str, Any]]) -> BatchResult:
        """The day's manifest entries as dataset ``dropzone_manifest`` (bronze audit trail)."""
        content = json.dumps({"records": entries}, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        with BatchWriter(
            self.landing_root, self.source, MANIFEST_DATASET, self.window,
            endpoint=f"FILE {MANIFEST_DIRNAME}/{self.day.isoformat()}.json",
            record_path="records", content_type="application/json", extra={"dropzone": str(self.zone)},
        ) as batch:
            batch.add_part(
                content,
                request={"method": "FILE", "url": self.connector.manifest_path(self.day).resolve().as_uri(),
                         "params": {}, "body": None},
            )
        return batch.completed()

    def _zone_manifest(self, entries: list[dict[str, Any]], report: dict[str, Any]) -> dict[str, Any]:
        return {
            "manifest_version": 1,
            "source": self.source,
            "logical_date": self.day.isoformat(),
            "run_id": self.window.run_id,
            "dropzone": str(self.zone),
            "archive_dir": str(self.archive_day),
            "quarantine_dir": str(self.quarantine_day),
            "files": entries,
            "report": report,
        }

    def _store(self, result: _FileResult) -> None:
        """Write the file's reason/rejection files, move it to its archive or quarantine place, clear stale sidecars."""
        candidate = result.candidate
        assert result.target is not None
        sidecars = self._sidecar_dir(result.target)
        reason_file = sidecars / (candidate.name + REASON_SUFFIX)
        rejections_file = sidecars / (candidate.name + REJECTIONS_SUFFIX)
        written: set[Path] = set()
        if result.outcome not in ARCHIVED_OUTCOMES:
            _write_json_atomic(reason_file, {
                "file": candidate.name,
                "rule": result.rule,
                "message": result.message,
                "position": result.position,
                "logical_date": self.day.isoformat(),
                "run_id": self.window.run_id,
                "sha256": candidate.sha256,
                "size": candidate.size,
                "arrival_time": candidate.arrival_time,
                "outcome": result.outcome,
                "source": self.source,
                "rejections_file": str(rejections_file) if result.rejections else None,
            })
            written.add(reason_file)
        if result.rejections is not None:
            self._write_rejections(rejections_file, result)
            written.add(rejections_file)
        # Sidecars left by an earlier run of this date at the file's earlier place.
        for old in (candidate.path, *candidate.copies):
            for stale_dir in self._old_sidecar_dirs(old):
                for suffix in (REASON_SUFFIX, REJECTIONS_SUFFIX):
                    stale = stale_dir / (candidate.name + suffix)
                    if stale not in written:
                        stale.unlink(missing_ok=True)
        if candidate.path != result.target:
            if result.target.exists() and file_sha256(result.target) == candidate.sha256:
                candidate.path.unlink()
            else:
                _move_durably(candidate.path, result.target)
        for copy in candidate.copies:
            if copy != result.target:
                copy.unlink(missing_ok=True)
        for old in (candidate.path, *candidate.copies):
            self._remove_empty_conflict_dir(old.parent)

    def _old_sidecar_dirs(self, path: Path) -> list[Path]:
        for root in (self.archive_day, self.quarantine_day):
            if path.is_relative_to(root):
                return [self.quarantine_day / path.parent.relative_to(root)]
        return []

    def _remove_empty_conflict_dir(self, directory: Path) -> None:
        if directory.parent in (self.archive_day, self.quarantine_day):
            try:
                directory.rmdir()
            except OSError:
                pass  # not empty: other files still live there

    def _write_rejections(self, path: Path, result: _FileResult) -> None:
        """``<file>.rejections.json``: every rejected unit of the file, streamed from the work file."""
        assert result.rejections is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "file": result.candidate.name,
            "logical_date": self.day.isoformat(),
            "run_id": self.window.run_id,
            "sha256": result.candidate.sha256,
            "source": self.source,
            "count": result.rejections.count,
        }
        def write(handle: IO[str]) -> None:
            # Streamed entry by entry: a file may have far more rejections than fit in memory.
            head = json.dumps(header, ensure_ascii=False, indent=2)
            handle.write(head[:-2] + ',\n  "rejections": [')
            for index, entry in enumerate(result.rejections.iter_entries()):
                handle.write(("\n    " if index == 0 else ",\n    ") + json.dumps(entry, ensure_ascii=False))
            handle.write("\n  ]\n}\n")

        _write_text_atomic(path, write)
