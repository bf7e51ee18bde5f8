"""Per-recipient projections: each partner's shared tables, physically separate.

Delta Sharing clients download whole Parquet files, so hiding a column in the answer of
the server protects nothing: whatever is in a file a recipient may fetch is shared. Every
recipient therefore reads its own Delta table per shared table, materialised here from the
gold table and holding only what the recipient is entitled to (``config/shares.yaml``):

* ``columns``: the shared columns (the table's default list, narrowed per recipient);
* ``row_filter``: optional structured conditions (``equals``/``in``/``not_in``/``not_null``);
* ``pseudonym_columns``: person pseudonyms, re-keyed per recipient as
  ``HMAC-SHA256(recipient key, internal pseudonym)`` where the recipient key is derived from the
  sharing secret ``ggm_sharing_pseudonym_key`` (env ``GGM_SHARING_PSEUDONYM_KEY`` or Airflow
  connection). Two partners thus get unrelated values for the same person and neither can
  join on the municipality's internal pseudonym; only the municipality can link them.

Layout: ``<lake>/shares/<recipient>/<share>/<schema>/<table>``, Delta tables with Change
Data Feed enabled (``delta.enableChangeDataFeed``). The server (``serve_from: projections``,
the default) resolves every table of a request through the authenticated recipient, so a
recipient can only ever reach files below its own directory.

Idempotence: a projection records what it was built from (gold table id and version, the
declaration, the recipient key's fingerprint) in a ``_ggm_projection.json`` sidecar; when that
is unchanged nothing is read or written. Otherwise the new content is compared with the current
one and only written when it differs, so a rerun of the same day adds no table version even when
gold was rewritten with the same rows.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ggm_lakehouse.config import has_commits
from ggm_lakehouse import config as ggm_config
from ggm_lakehouse.model.shares_config import (
    Projection,
    Recipient,
    RowCondition,
    SharedTable,
    SharesConfig,
    load_shares_config,
)
from ggm_lakehouse.pseudonym import load_key, pseudonymise


#: Secret from which every recipient's pseudonym key is derived (never stored in code or YAML).
SHARING_PSEUDONYM_KEY_SECRET = "ggm_sharing_pseudonym_key"
PROJECTIONS_DIR = "shares"
CDF_CONFIGURATION = {"delta.enableChangeDataFeed": "true"}

log = logging.getLogger(__name__)


class ProjectionError(ValueError):
    """A projection cannot be built as configured (unknown column, bad filter value, ...)."""


def projection_relative_location(recipient: str, table: SharedTable) -> str:
    """Location of a recipient's projection of ``table``, relative to the lake root."""
    return f"{PROJECTIONS_DIR}/{recipient}/{table.share}/{table.schema}/{table.name}"


def projection_location(recipient: str, table: SharedTable, lake_root: Path | None = None) -> Path:
    """Absolute path of a recipient's projection of ``table``."""
    return Path(lake_root or ggm_config.lake_root()) / projection_relative_location(recipient, table)


def recipient_key(recipient: str, sharing_secret: bytes, generation: int = 1) -> bytes:
    """The recipient's own pseudonym key: HMAC of its name and key generation under the sharing secret.

    Derived, not stored, so adding a recipient needs no key management. Rotating the sharing
    secret re-keys every recipient at once; raising one recipient's generation
    (``ggm sharing recipient rotate-key``) re-keys that recipient alone. Generation 1 is the
    name alone, as before generations existed, so existing partners keep their pseudonyms.
    """
    label = f"ggm-sharing-recipient-key-v1\x1f{recipient}" + (f"\x1f{generation}" if generation != 1 else "")
    return hmac.new(sharing_secret, label.encode("utf-8"), hashlib.sha256).digest()


def rekey_pseudonyms(values: pa.Array | pa.ChunkedArray, key: bytes, recipient: str) -> pa.Array:
    """Re-key internal pseudonyms for one recipient (None stays None)."""
    context = f"share:{recipient}"
    return pa.array([pseudonymise(v, key, context) for v in values.to_pylist()], type=pa.string())


def _column(table: pa.Table, name: str, where: str) -> str:
    match = next((c for c in table.column_names if c.lower() == name.lower()), None)
    if match is None:
        raise ProjectionError(f"{where}: column {name!r} is not in the gold table (has {table.column_names})")
    return match


def _condition_mask(table: pa.Table, condition: RowCondition, where: str) -> pa.ChunkedArray:
    column = table[_column(table, condition.column, where)]
    if condition.op == "not_null":
        return pc.is_valid(column)
    values = condition.value if condition.op in ("in", "not_in") else (condition.value,)
    try:
        value_set = pa.array(list(values)).cast(column.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ProjectionError(f"{where}: values {list(values)!r} do not fit column {condition.column!r} ({column.type})") from exc
    mask = pc.is_in(column, value_set=value_set)
    if condition.op == "not_in":
        # SQL semantics: NULL NOT IN (...) is not true, so NULL rows are dropped too.
        mask = pc.and_(pc.invert(mask), pc.is_valid(column))
    return mask


#: Column names that look like person identifiers: they may only leave the lake re-keyed.
_PERSON_ID_HINTS = ("bsn", "pseudonym", "pseudoniem")


def project(source: pa.Table, projection: Projection, recipient: str, key: bytes | None, where: str) -> pa.Table:
    """Apply a projection to the rows of a gold table: filter, select, re-key pseudonyms with ``key``.

    ``key`` is the recipient's pseudonym key (:func:`recipient_key`), needed when pseudonym columns are shared.

    Raises :class:`ProjectionError` when a column that looks like a person identifier
    would be shared without being declared a pseudonym column: a forgotten declaration
    must fail the publication, not leak the internal pseudonym.
    """
    result = source
    for condition in projection.row_filter:
        result = result.filter(_condition_mask(result, condition, where))
    if projection.columns is not None:
        result = result.select([_column(result, c, where) for c in projection.columns])
    pseudonyms = {_column(source, c, where) for c in projection.pseudonym_columns}
    undeclared = [c for c in result.column_names if c not in pseudonyms and any(h in c.lower() for h in _PERSON_ID_HINTS)]
    if undeclared:
        raise ProjectionError(f"{where}: columns {undeclared} look like person identifiers; declare them in pseudonym_columns or leave them out")
    present = [c for c in result.column_names if c in pseudonyms]
    if present:
        if key is None:
            raise ProjectionError(f"{where}: pseudonym columns need secret {SHARING_PSEUDONYM_KEY_SECRET}")
        for name in present:
            index = result.column_names.index(name)
            result = result.set_column(index, pa.field(name, pa.string()), rekey_pseudonyms(result[name], key, recipient))
    return result


def _canonical(table: pa.Table) -> pa.Table:
    # Content comparison independent of file layout and row order: sort by every column.
    names = sorted(table.column_names)
    ordered = table.select(names)
    return ordered.sort_by([(name, "ascending") for name in names]).combine_chunks()


def _same_content(location: Path, projected: pa.Table, partition_by: list[str]) -> bool:
    """Whether the projection at ``location`` already holds exactly ``projected`` (any order)."""
    from deltalake import DeltaTable

    if not has_commits(location):
        return False
    current_table = DeltaTable(str(location))
    if list(current_table.metadata().partition_columns) != partition_by:
        return False
    current = current_table.to_pyarrow_table()
    if set(current.column_names) != set(projected.column_names) or current.num_rows != projected.num_rows:
        return False
    try:
        aligned = projected.select(current.column_names).cast(current.schema)
        return _canonical(current).equals(_canonical(aligned))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return False


def _write(location: Path, projected: pa.Table, partition_by: list[str]) -> None:
    from deltalake import write_deltalake

    exists = has_commits(location)
    location.parent.mkdir(parents=True, exist_ok=True)
    # An existing projection is overwritten as a new version, a change of partitioning included (an empty
    # list unpartitions it): partners keep reading the old version until the new one is committed.
    write_deltalake(
        str(location),
        projected,
        mode="overwrite",
        partition_by=list(partition_by) if exists else (partition_by or None),
        schema_mode="overwrite" if exists else None,
        configuration=None if exists else CDF_CONFIGURATION,
    )


def _load_sharing_secret(required: bool) -> bytes | None:
    if not required:
        return None
    return load_key(SHARING_PSEUDONYM_KEY_SECRET)


def materialise_table(
    recipient: Recipient,
    table: SharedTable,
    *,
    lake_root: Path | None = None,
    sharing_secret: bytes | None = None,
    key_generation: int = 1,
) -> dict[str, Any]:
    """Build or refresh one recipient's projection of one shared table; returns its report.

    ``key_generation`` is the recipient's pseudonym key generation (the sharing state's, see
    :meth:`sharing_server.recipients.TokenStore.key_generation`).
    """
    from deltalake import DeltaTable

    root = Path(lake_root or ggm_config.lake_root())
    source_path = table.resolve_location(root)
    where = f"{recipient.name}: {table.qualified_name}"
    if not has_commits(source_path):
        raise ProjectionError(f"{where}: no gold Delta table at {source_path}")
    source_table = DeltaTable(str(source_path))
    projection = recipient.projection(table)
    location = projection_location(recipient.name, table, root)
    key = recipient_key(recipient.name, sharing_secret, key_generation) if sharing_secret else None
    fingerprint = _fingerprint(source_table, projection, key)
    recorded = _read_stamp(location)
    if recorded is not None and recorded.get("fingerprint") == fingerprint and has_commits(location):
        # Same gold version, same declaration, same key: the projection is already current.
        current = DeltaTable(str(location))
        # The location is today's, not the recorded one: a lake restored or mounted elsewhere
        # keeps its projections (a recorded absolute path would make them look stale).
        return {
            **recorded["report"],
            "location": str(location),
            "version": current.version(),
            "changed": False,
        }
    source = source_table.to_pyarrow_table()
    projected = project(source, projection, recipient.name, key, where)
    # Keep the gold partitioning where the columns survive: partition pruning keeps working.
    partition_by = [c for c in source_table.metadata().partition_columns if c in projected.column_names]
    changed = not _same_content(location, projected, partition_by)
    if changed:
        try:
            _write(location, projected, partition_by)
        except Exception as exc:  # noqa: BLE001 - delta-rs raises its own types for I/O errors (a full disk)
            # Nothing was committed: the partner keeps reading the version it had.
            raise ProjectionError(f"{where}: cannot write the projection at {location}: {exc}. Partners keep the "
                                  "version they had; free space and publish again") from exc
    version = DeltaTable(str(location)).version()
    report = {
        "recipient": recipient.name,
        "table": table.qualified_name,
        "source_version": source_table.version(),
        "location": str(location),
        "rows": projected.num_rows,
        "columns": projected.column_names,
        "pseudonym_columns": [c for c in projected.column_names if c.lower() in {p.lower() for p in projection.pseudonym_columns}],
        "version": version,
        "changed": changed,
    }
    _write_stamp(location, {"fingerprint": fingerprint,
                            "report": {k: v for k, v in report.items() if k not in ("version", "changed", "location")}})
    return report


#: Sidecar next to the projection's _delta_log. Names starting with "_" are ignored by Delta
#: readers and by VACUUM, and the server only serves files named in the log.
_STAMP_FILE = "_ggm_projection.json"


def _fingerprint(source_table, projection: Projection, key: bytes | None) -> str:
    """What a projection is a function of: gold table id and version, the declaration, the recipient's key."""
    key_id = hashlib.sha256(key).hexdigest() if key else None
    material = json.dumps(
        {
            "source_id": source_table.metadata().id,
            "source_version": source_table.version(),
            "projection": repr(projection),
            "key": key_id,
            "format": 1,
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _read_stamp(location: Path) -> dict | None:
    try:
        return json.loads((location / _STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_stamp(location: Path, stamp: dict) -> None:
    _write_json_atomically(location / _STAMP_FILE, stamp)


def _write_json_atomically(path: Path, document: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _all_recipients(config: SharesConfig) -> list[Recipient]:
    from sharing_server.recipients import TokenStore, all_recipient_names, find_recipient

    store = TokenStore()
    return [r for r in (find_recipient(config, store, n) for n in all_recipient_names(config, store)) if r is not None]


#: Where each recipient with projections in this lake was declared when last published (``shares.yaml``
#: or the sharing state file it came from), next to the projections.
_ORIGINS_FILE = "_recipient_origins.json"


def _key_generations(recipients: list[Recipient]) -> dict[str, int]:
    """Each recipient's pseudonym key generation, from the sharing state."""
    from sharing_server.recipients import TokenStore

    store = TokenStore()
    return {r.name: store.key_generation(r.name) for r in recipients}


def _state_origin() -> str:
    from sharing_server.recipients import default_state_path

    return f"state:{default_state_path().resolve()}"


def _origins(config: SharesConfig, recipients: list[Recipient], state: str) -> dict[str, str]:
    """Where each recipient is declared now: ``shares.yaml`` or ``state``, the sharing state file this publish reads."""
    return {r.name: "shares.yaml" if config.recipient(r.name) is not None else state for r in recipients}


def _unreadable_origins(base: Path, now: dict[str, str], state: str) -> dict[str, str]:
    """Recipients with projections here that were added in a sharing state file this publish does not read.

    Such a publish was pointed at another sharing root (``GGM_SHARING_ROOT``) than the one they were
    added to: their absence says nothing about a withdrawal, so their projections must be kept.
    """
    try:
        recorded = json.loads((base / _ORIGINS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {name: origin for name, origin in recorded.items()
            if name not in now and origin.startswith("state:") and origin != state}


def materialise_recipient_tables(
    logical_date: date,
    run_id: str | None = None,
    *,
    config_path: Path | str | None = None,
    lake_root: Path | None = None,
    recipients: list[Recipient] | None = None,
    export_audit: bool = True,
) -> dict:
    """Materialise every recipient's projection of every table it is entitled to.

    Called by the pipeline's publish step after gold is built. Marts are small and delta-rs
    writes them without a JVM, so no Spark session is needed. ``recipients`` defaults to
    those of shares.yaml plus the ones added with the CLI (state file). Projections of
    recipients or tables no longer configured are removed, so a withdrawn entitlement also
    withdraws the data. With ``export_audit`` the server's request log is copied into the
    audit Delta table as well (:func:`sharing_server.audit.export_audit_table`, report key ``audit``).

    Returns ``{"logical_date", "run_id", "recipients": {name: {table: report}}, "removed": [...]}``
    where each report holds ``rows``, ``columns``, ``version``, ``changed`` and ``location``.
    """
    config = load_shares_config(config_path)
    root = Path(lake_root or ggm_config.lake_root())
    wanted = recipients if recipients is not None else _all_recipients(config)
    needs_secret = any(
        recipient.projection(table).pseudonym_columns
        for recipient in wanted
        for share in config.shares_for(recipient)
        for table in share.all_tables()
    )
    secret = _load_sharing_secret(needs_secret)
    generations = _key_generations(wanted)
    report: dict[str, Any] = {"logical_date": logical_date.isoformat(), "run_id": run_id, "recipients": {}, "removed": []}
    keep: set[Path] = set()
    for recipient in wanted:
        per_table: dict[str, Any] = {}
        for share in config.shares_for(recipient):
            for table in share.all_tables():
                if not has_commits(table.resolve_location(root)):
                    # A mart whose sources have not delivered yet: nothing to share today. An existing
                    # projection stays as it was (it is not stale, only not refreshed).
                    existing = projection_location(recipient.name, table, root)
                    if existing.is_dir():
                        keep.add(existing)
                    report.setdefault("waiting", []).append(f"{recipient.name}:{table.qualified_name}")
                    log.warning("projection %s of %s waits: gold table not built yet", recipient.name, table.qualified_name)
                    continue
                result = materialise_table(recipient, table, lake_root=root, sharing_secret=secret,
                                           key_generation=generations[recipient.name])
                keep.add(projection_location(recipient.name, table, root))
                per_table[table.qualified_name] = result
                log.info(
                    "projection %s of %s: %d rows, columns %s, version %d%s",
                    recipient.name, table.qualified_name, result["rows"], result["columns"], result["version"],
                    "" if result["changed"] else " (unchanged)",
                )
        report["recipients"][recipient.name] = per_table
    if recipients is None:
        report.update(_withdraw(root / PROJECTIONS_DIR, config, wanted, keep))
    if export_audit:
        from sharing_server.audit import export_audit_table

        report["audit"] = export_audit_table(lake_root=root)
    return report


def _withdraw(base: Path, config: SharesConfig, recipients: list[Recipient], keep: set[Path]) -> dict[str, list[str]]:
    """Remove the projections no recipient is entitled to any more, except those of recipients this publish cannot see.

    Returns ``removed`` (paths) and, when some were kept, ``kept_unknown`` (recipient names).
    """
    state = _state_origin()
    origins = _origins(config, recipients, state)
    unreadable = _unreadable_origins(base, origins, state)
    for name in sorted(unreadable):
        log.warning("projections of recipient %s kept: it was added in %s, which this publish does not read "
                    "(is GGM_SHARING_ROOT right?)", name, unreadable[name].removeprefix("state:"))
        keep.update(p for p in (base / name).glob("*/*/*") if (p / "_delta_log").is_dir())
    result = {"removed": [str(p) for p in _remove_stale(base, keep)]}
    if unreadable:
        result["kept_unknown"] = sorted(unreadable)
    if base.is_dir():
        _write_json_atomically(base / _ORIGINS_FILE, {**unreadable, **origins})
    return result


def _remove_stale(base: Path, keep: set[Path]) -> list[Path]:
    """Delete projection tables that no configured recipient/table maps to any more."""
    if not base.is_dir():
        return []
    removed = []
    for log_dir in sorted(base.glob("*/*/*/*/_delta_log")):
        table_dir = log_dir.parent
        if table_dir not in keep:
            shutil.rmtree(table_dir)
            removed.append(table_dir)
    return removed
