"""Read-only view of a Delta table version, as the sharing protocol needs it.

Everything here goes through the ``deltalake`` (delta-rs) package: log replay,
checkpoints and time travel are its business, not ours. The server never reads
data files; it only lists them and serves their bytes.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError
from ggm_lakehouse.config import has_commits


class TableUnavailableError(LookupError):
    """The configured location holds no (readable) Delta table."""


class VersionNotFoundError(ValueError):
    """The requested version or timestamp does not exist in the table's history."""


class PathOutsideTableError(PermissionError):
    """A data file path from the log points outside the table directory."""


#: Delta versions are signed 64-bit integers; anything larger cannot name a commit.
MAX_VERSION = 2**63 - 1
# Commit files and checkpoints of the log: 20-digit version, then ".json" or ".checkpoint...".
_LOG_ENTRY = re.compile(r"^(\d{20})\.(?:json|checkpoint(?:\.[^/]*)?\.parquet)$")


@dataclass(frozen=True)
class DataFile:
    """One active data file (an ``add`` action) of a table version."""

    path: str  # as written in the Delta log: relative and percent-encoded
    size: int
    modification_time: int
    partition_values: dict[str, str | None]
    stats: str | None
    num_records: int | None


@dataclass(frozen=True)
class TableSnapshot:
    """Protocol, metadata and files of one table version."""

    version: int
    min_reader_version: int
    min_writer_version: int
    reader_features: tuple[str, ...]
    writer_features: tuple[str, ...]
    table_id: str
    name: str | None
    description: str | None
    schema_string: str
    partition_columns: tuple[str, ...]
    configuration: dict[str, str]
    created_time: int | None
    files: tuple[DataFile, ...]

    @property
    def parquet_compatible(self) -> bool:
        """Readable from plain Parquet files + partition values (no column mapping, DVs, ...)."""
        return self.min_reader_version == 1

    @property
    def size_in_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _json_value(value: object) -> object:
    """Statistics values in the textual form Delta uses in its log."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if hasattr(value, "as_tuple"):  # decimal.Decimal
        return str(value)
    return value


def _drop_nulls(value: object) -> object:
    # delta-rs reports columns without statistics as null; Delta omits them instead.
    if isinstance(value, dict):
        cleaned = {k: _drop_nulls(v) for k, v in value.items() if v is not None}
        return {k: v for k, v in cleaned.items() if v != {}}
    return value


def _partition_string(value: object) -> str | None:
    """Serialize a typed partition value per PROTOCOL.md "Partition Value Serialization"."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        return text + (f".{value.microsecond:06d}" if value.microsecond else "")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _stats_json(row: dict) -> str | None:
    if row.get("num_records") is None:
        return None
    stats = {
        "numRecords": row["num_records"],
        "minValues": _drop_nulls(_json_value(row.get("min") or {})),
        "maxValues": _drop_nulls(_json_value(row.get("max") or {})),
        "nullCount": _drop_nulls(_json_value(row.get("null_count") or {})),
    }
    return json.dumps(stats, separators=(",", ":"))


def latest_version(location: Path) -> int:
    """The newest version of the table at ``location``, from the names in its ``_delta_log``.

    A directory listing, no log replay: cheap enough to check every requested version
    against before delta-rs is asked for it.
    """
    log_dir = location / "_delta_log"
    try:
        names = [entry.name for entry in log_dir.iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        raise TableUnavailableError(f"no Delta table at {location}") from None
    versions = [int(m.group(1)) for m in map(_LOG_ENTRY.match, names) if m]
    if not versions:
        raise TableUnavailableError(f"no Delta table at {location}")
    return max(versions)


def check_version(location: Path, version: int) -> None:
    """Raise :class:`VersionNotFoundError` unless ``0 <= version <=`` the latest version.

    delta-rs must never see a version past the end of the log: it searches the log for
    it (for 2**63-1 without end) or fails with an overflow on larger numbers.
    """
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
        raise VersionNotFoundError(f"table version {version} is not a valid Delta version")
    latest = latest_version(location)
    if version > latest:
        raise VersionNotFoundError(f"table version {version} is after the latest table version {latest}")


def open_table(location: Path, version: int | None = None) -> DeltaTable:
    """Open the Delta table at ``location`` (optionally at ``version``)."""
    if not has_commits(location):
        raise TableUnavailableError(f"no Delta table at {location}")
    if version is not None:
        check_version(location, version)
    try:
        return DeltaTable(str(location), version=version)
    except TableNotFoundError as exc:
        raise TableUnavailableError(str(exc)) from None
    except DeltaError as exc:
        if version is not None:
            raise VersionNotFoundError(f"table version {version} is not available") from exc
        raise TableUnavailableError(str(exc)) from exc


def load_snapshot(location: Path, version: int | None = None, with_files: bool = True) -> TableSnapshot:
    """Protocol, metadata and (optionally) active files of a table version."""
    table = open_table(location, version)
    protocol = table.protocol()
    metadata = table.metadata()
    files: list[DataFile] = []
    if with_files:
        rows = pa.table(table.get_add_actions(flatten=False)).to_pylist()
        for row in rows:
            partition = row.get("partition") or {}
            files.append(
                DataFile(
                    path=row["path"],
                    size=int(row["size_bytes"]),
                    modification_time=int(row["modification_time"]),
                    partition_values={k: _partition_string(v) for k, v in partition.items()},
                    stats=_stats_json(row),
                    num_records=row.get("num_records"),
                )
            )
        # Deterministic order keeps responses (and limitHint cut-offs) stable.
        files.sort(key=lambda f: f.path)
    return TableSnapshot(
        version=table.version(),
        min_reader_version=protocol.min_reader_version,
        min_writer_version=protocol.min_writer_version,
        reader_features=tuple(protocol.reader_features or ()),
        writer_features=tuple(protocol.writer_features or ()),
        table_id=metadata.id,
        name=metadata.name,
        description=metadata.description,
        schema_string=table.schema().to_json(),
        partition_columns=tuple(metadata.partition_columns),
        configuration=dict(metadata.configuration or {}),
        created_time=metadata.created_time,
        files=tuple(files),
    )


def has_deletion_vectors(location: Path, version: int) -> bool:
    """Whether any active file of the version carries a deletion vector."""
    table = open_table(location, version)
    reader = table.deletion_vectors()
    return any(batch.num_rows for batch in reader)


def commit_timestamps(location: Path) -> dict[int, int]:
    """Commit timestamp (ms since epoch) per table version, from the table history."""
    table = open_table(location)
    return {int(c["version"]): int(c["timestamp"]) for c in table.history() if "timestamp" in c}


def version_as_of(location: Path, timestamp_ms: int) -> int:
    """The latest version committed at or before ``timestamp_ms`` (time travel)."""
    candidates = [v for v, ts in commit_timestamps(location).items() if ts <= timestamp_ms]
    if not candidates:
        raise VersionNotFoundError("the timestamp is before the earliest available table version")
    return max(candidates)


def version_at_or_after(location: Path, timestamp_ms: int) -> int:
    """The earliest version committed at or after ``timestamp_ms`` (``startingTimestamp``)."""
    candidates = [v for v, ts in commit_timestamps(location).items() if ts >= timestamp_ms]
    if not candidates:
        raise VersionNotFoundError("the timestamp is after the latest table version")
    return min(candidates)


def local_file_path(table_root: Path, log_path: str) -> Path:
    """Filesystem path of a data file named in the log, guaranteed inside ``table_root``.

    Absolute paths and URIs (shallow clones, files on other storage) are refused,
    as the reference server does, and so is anything that resolves outside the table.
    """
    relative = unquote(log_path)
    if "://" in relative or relative.startswith("/") or "\\" in relative:
        raise PathOutsideTableError("data file is not stored inside the table directory")
    root = table_root.resolve()
    candidate = (root / relative).resolve()
    if root not in candidate.parents:
        raise PathOutsideTableError("data file resolves outside the table directory")
    return candidate


# --------------------------------------------------------------------------- change data feed
CDF_PROPERTY = "delta.enableChangeDataFeed"


class ChangeDataFeedDisabledError(ValueError):
    """The change data feed is not enabled on (part of) the requested version range."""


@dataclass(frozen=True)
class ChangeFile:
    """One file of the change data feed: an ``add``, ``cdf`` or ``remove`` of one commit."""

    kind: str  # "add", "cdf" or "remove": the action name in the protocol's parquet format
    path: str  # as written in the Delta log
    partition_values: dict[str, str | None]
    size: int
    version: int
    timestamp: int  # commit timestamp, ms since epoch
    stats: str | None


def cdf_enabled(configuration: dict[str, str] | None) -> bool:
    """Whether a table configuration has ``delta.enableChangeDataFeed`` switched on."""
    return str((configuration or {}).get(CDF_PROPERTY, "false")).strip().lower() == "true"


def commit_actions(location: Path, version: int) -> list[dict]:
    """The actions of one commit, read from its ``_delta_log`` JSON file.

    delta-rs exposes snapshots, not per-commit file actions, so the change data feed
    reads the commit files themselves. A commit removed by log clean-up is reported
    as an unavailable version.
    """
    commit_file = location / "_delta_log" / f"{version:020d}.json"
    try:
        text = commit_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VersionNotFoundError(f"the commit of table version {version} is no longer available") from None
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def commit_file_paths(location: Path, version: int, kind: str) -> frozenset[str]:
    """Paths of the ``cdc`` (kind ``cdf``) or ``remove`` actions of one commit."""
    action = "cdc" if kind == "cdf" else kind
    return frozenset(a[action]["path"] for a in commit_actions(location, version) if action in a)


def change_files(location: Path, start: int, end: int) -> list[ChangeFile]:
    """The change data feed files of versions ``start`` to ``end`` inclusive.

    Delta's CDF rules: a commit that wrote ``cdc`` files is described by those alone
    (they hold the pre/post images and deletes); otherwise its data-changing ``add`` files
    are inserts and its data-changing ``remove`` files deletes. Commits that do not change
    data (``dataChange: false``, e.g. OPTIMIZE) contribute nothing. The feed must be enabled
    at ``start`` and stay enabled through ``end``.
    """
    start_config = load_snapshot(location, start, with_files=False).configuration
    if not cdf_enabled(start_config):
        raise ChangeDataFeedDisabledError(f"the change data feed is not enabled at table version {start}")
    timestamps: dict[int, int] | None = None
    result: list[ChangeFile] = []
    for version in range(start, end + 1):
        actions = commit_actions(location, version)
        for action in actions:
            if "metaData" in action and version > start and not cdf_enabled(action["metaData"].get("configuration")):
                raise ChangeDataFeedDisabledError(f"the change data feed was disabled at table version {version}")
        info = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        timestamp = info.get("inCommitTimestamp") or info.get("timestamp")
        if timestamp is None:
            timestamps = timestamps if timestamps is not None else commit_timestamps(location)
            timestamp = timestamps.get(version, 0)
        has_cdc = any("cdc" in a for a in actions)
        for action in actions:
            kind, body = next(iter(action.items()))
            if has_cdc:
                if kind != "cdc":
                    continue
            elif kind not in ("add", "remove") or not body.get("dataChange", True):
                continue
            size = body.get("size")
            if size is None:  # remove actions may omit it (extendedFileMetadata false)
                try:
                    size = local_file_path(location, body["path"]).stat().st_size
                except (OSError, PathOutsideTableError):
                    size = 0
            result.append(
                ChangeFile(
                    kind="cdf" if kind == "cdc" else kind,
                    path=body["path"],
                    partition_values=dict(body.get("partitionValues") or {}),
                    size=int(size),
                    version=version,
                    timestamp=int(timestamp),
                    stats=body.get("stats") if kind == "add" else None,
                )
            )
    return result
