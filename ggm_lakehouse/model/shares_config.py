"""The declarative sharing configuration: shares → schemas → tables, and recipients.

The file (``config/shares.yaml`` by default, ``GGM_SHARES_CONFIG`` to move it) is the
single source of truth for *what* is shared, and declares recipients reviewed by the
operator. Recipients added with the CLI (``add_recipient``) live in the sharing state
file instead and are read alongside; tokens are never in this file: they live hashed in
the sharing state (see :mod:`sharing_server.recipients`).

Example::

    server:
      url_ttl_seconds: 3600          # lifetime of a signed file URL
    shares:
      - name: gemeente_gold
        comment: Gold policy marts of the municipality
        schemas:
          - name: demografie
            tables:
              - name: inwoners_per_buurt
                location: gold/inwoners_per_buurt   # relative to the lake root
                history_shared: false               # allow version/timestamp queries?
    recipients:
      - name: demo-partner
        shares: [gemeente_gold]
        token_lifetime_days: 90

Optional, for Unity Catalog only (:mod:`sharing_server.unity_catalog`): a table's
``catalog_name`` (``<catalog>.<schema>.<table>``, default derived from ``location`` and the
catalog) and a recipient's ``sharing_identifier`` (``<cloud>:<region>:<metastore uuid>``, for
Databricks-to-Databricks sharing instead of a bearer token).

Names follow the Delta Sharing naming rules (PROTOCOL.md "Names"): at most 255
characters, no space, ``/`` or control characters; schema and table names also no
``.``. Lookups are case-insensitive, as the protocol prescribes.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any, Callable
from urllib.parse import urlsplit

import yaml

from ggm_lakehouse import config as ggm_config
from ggm_lakehouse.yaml_schema import DIALECT, validate

#: Lifetime of a signed file URL when ``server.url_ttl_seconds`` is not configured;
#: the same default as the reference server's ``preSignedUrlTimeoutSeconds``.
DEFAULT_URL_TTL_SECONDS = 3600
#: Token lifetime when neither the caller nor the recipient entry sets one.
DEFAULT_TOKEN_LIFETIME_DAYS = 90
#: Bounds of a token lifetime: at least a minute, at most ten years.
MIN_TOKEN_LIFETIME = timedelta(minutes=1)
MAX_TOKEN_LIFETIME = timedelta(days=3650)
#: Seconds the server waits for running requests on shutdown before it cancels them.
DEFAULT_SHUTDOWN_TIMEOUT_SECONDS = 30
_LIFETIME = re.compile(r"^\s*(\d{1,7})\s*([mhd]?)\s*$", re.IGNORECASE)
_LIFETIME_UNITS = {"m": "minutes", "h": "hours", "d": "days", "": "days"}

log = logging.getLogger(__name__)

# Namespace for deterministic share/table ids: ids must stay stable across restarts
# (PROTOCOL.md: "immutable through the share's lifecycle") without being stored.
_ID_NAMESPACE = uuid.UUID("6f1d3c2e-5b0a-4c53-9a57-0d1c7f0e4a11")


class SharesConfigError(ValueError):
    """The shares configuration file is missing or invalid."""


class InvalidNameError(ValueError):
    """A share, schema or table name breaks the protocol's naming rules."""


def default_config_path() -> Path:
    """``GGM_SHARES_CONFIG`` or ``<project root>/config/shares.yaml``."""
    override = os.environ.get("GGM_SHARES_CONFIG")
    if override:
        return Path(override)
    return ggm_config.project_root() / "config" / "shares.yaml"


def validate_name(name: object, kind: str) -> str:
    """Return ``name`` if it is a valid Delta Sharing object name, else raise.

    ``kind`` is ``share``, ``schema``, ``table`` or ``recipient``. The path
    segments ``.`` and ``..`` are rejected for every kind even though the protocol
    would allow a dot in a share name: such names only ever appear in attacks.
    """
    if not isinstance(name, str) or not name:
        raise InvalidNameError(f"{kind} name must be a non-empty string")
    if len(name) > 255:
        raise InvalidNameError(f"{kind} name exceeds 255 characters")
    if any(ch == " " or ch == "/" or ch == "\\" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise InvalidNameError(f"{kind} name {name!r} contains a space, slash or control character")
    if kind in ("schema", "table") and "." in name:
        raise InvalidNameError(f"{kind} name {name!r} must not contain '.'")
    if ".." in name or name == ".":
        raise InvalidNameError(f"{kind} name {name!r} must not contain '..'")
    return name


@dataclass(frozen=True)
class SharedTable:
    """One table in a schema of a share, pointing at a Delta table in the lake."""

    share: str
    schema: str
    name: str
    location: str  # relative to the lake root, POSIX separators
    history_shared: bool = False
    comment: str | None = None
    catalog_name: str | None = None  # optional Unity Catalog name <catalog>.<schema>.<table>
    # Default projection for every recipient of the share (see :class:`Projection`):
    # None = every column of the gold table.
    columns: tuple[str, ...] | None = None
    pseudonym_columns: tuple[str, ...] = ()
    row_filter: tuple["RowCondition", ...] = ()

    @property
    def id(self) -> str:
        """Stable table id (UUID) derived from the fully qualified name."""
        return str(uuid.uuid5(_ID_NAMESPACE, f"table:{self.share}.{self.schema}.{self.name}".lower()))

    def resolve_location(self, lake_root: Path | None = None) -> Path:
        """Absolute path of the Delta table, always inside the lake root."""
        root = Path(lake_root or ggm_config.lake_root()).resolve()
        path = (root / self.location).resolve()
        if path != root and root not in path.parents:
            # Config validation already refuses '..'; a symlink could still escape.
            raise SharesConfigError(f"table {self.qualified_name} resolves outside the lake root")
        return path

    @property
    def qualified_name(self) -> str:
        return f"{self.share}.{self.schema}.{self.name}"


@dataclass(frozen=True)
class SharedSchema:
    share: str
    name: str
    tables: tuple[SharedTable, ...]

    def table(self, name: str) -> SharedTable | None:
        wanted = name.lower()
        return next((t for t in self.tables if t.name.lower() == wanted), None)


@dataclass(frozen=True)
class Share:
    name: str
    schemas: tuple[SharedSchema, ...]
    comment: str | None = None
    display_name: str | None = None

    @property
    def id(self) -> str:
        """Stable share id (UUID) derived from the share name."""
        return str(uuid.uuid5(_ID_NAMESPACE, f"share:{self.name}".lower()))

    def schema(self, name: str) -> SharedSchema | None:
        wanted = name.lower()
        return next((s for s in self.schemas if s.name.lower() == wanted), None)

    def all_tables(self) -> list[SharedTable]:
        return [t for s in self.schemas for t in s.tables]


#: Operators of a row filter condition; values are compared as they are typed in YAML.
ROW_FILTER_OPS = ("equals", "in", "not_in", "not_null")


@dataclass(frozen=True)
class RowCondition:
    """One condition of a row filter: ``column`` ``op`` ``value``; a filter ANDs its conditions.

    Deliberately structured instead of SQL: nothing from the file is ever evaluated as code.
    """

    column: str
    op: str  # one of ROW_FILTER_OPS
    value: object = None


@dataclass(frozen=True)
class TableGrant:
    """A recipient's own narrowing of one shared table (``recipients[].tables`` in YAML)."""

    columns: tuple[str, ...] | None = None
    pseudonym_columns: tuple[str, ...] = ()
    row_filter: tuple[RowCondition, ...] = ()


@dataclass(frozen=True)
class Projection:
    """What one recipient physically receives of one shared table.

    ``columns`` None means every column of the source; ``pseudonym_columns`` are re-keyed per
    recipient (never shared as the municipality's internal pseudonym); ``row_filter`` keeps
    only rows matching every condition.
    """

    columns: tuple[str, ...] | None
    pseudonym_columns: tuple[str, ...]
    row_filter: tuple[RowCondition, ...]


@dataclass(frozen=True)
class RateLimit:
    """Per-recipient token bucket: ``burst`` requests at once, refilled at ``requests_per_second``."""

    requests_per_second: float = 20.0
    burst: int = 60


def parse_lifetime(value: object) -> timedelta:
    """A token lifetime: ``30m``, ``12h``, ``7d``, a bare number of days (``90`` or int 90), or a timedelta.

    Raises ``ValueError`` for anything else, or outside one minute to ten years.
    """
    if isinstance(value, timedelta):
        lifetime = value
    elif isinstance(value, int) and not isinstance(value, bool):
        lifetime = timedelta(days=value) if 0 < value <= MAX_TOKEN_LIFETIME.days else timedelta(0)
    elif isinstance(value, str) and (match := _LIFETIME.match(value)):
        amount = int(match.group(1))
        lifetime = timedelta(**{_LIFETIME_UNITS[match.group(2).lower()]: amount}) if amount <= 10**7 else timedelta(0)
    else:
        raise ValueError(f"token lifetime {value!r} must look like 30m, 12h, 7d or a number of days")
    if not MIN_TOKEN_LIFETIME <= lifetime <= MAX_TOKEN_LIFETIME:
        raise ValueError(f"token lifetime {value!r} must be between 1 minute and {MAX_TOKEN_LIFETIME.days} days")
    return lifetime


@dataclass(frozen=True)
class Recipient:
    name: str
    shares: tuple[str, ...]  # lower-cased share names the recipient may read
    token_lifetime_days: int | None = None
    comment: str | None = None
    sharing_identifier: str | None = None  # Unity Catalog: Databricks-to-Databricks sharing identifier
    # Per-table narrowing, keyed by lower-cased "share.schema.table".
    tables: tuple[tuple[str, TableGrant], ...] = ()
    # Finer-grained default token lifetime ("30m", "12h", "7d"); wins over token_lifetime_days.
    token_lifetime: str | None = None

    def default_token_lifetime(self) -> timedelta:
        """Lifetime of a token issued without an explicit one."""
        if self.token_lifetime is not None:
            return parse_lifetime(self.token_lifetime)
        return timedelta(days=self.token_lifetime_days or DEFAULT_TOKEN_LIFETIME_DAYS)

    def may_read(self, share_name: str) -> bool:
        return share_name.lower() in self.shares

    def grant(self, table: "SharedTable") -> TableGrant | None:
        """This recipient's own declaration for ``table``, if any."""
        wanted = table.qualified_name.lower()
        return next((g for name, g in self.tables if name == wanted), None)

    def projection(self, table: "SharedTable") -> Projection:
        """The effective projection: the recipient's declaration narrows the table's default.

        Columns: the recipient's list if given (it must be a subset of the table's default,
        checked when the file is loaded), else the table's. Pseudonym columns: the union of
        both declarations, so a recipient entry can never un-declare one. Row filter: both ANDed.
        """
        grant = self.grant(table)
        if grant is None:
            return Projection(table.columns, table.pseudonym_columns, table.row_filter)
        columns = grant.columns if grant.columns is not None else table.columns
        pseudonyms = tuple(dict.fromkeys(table.pseudonym_columns + grant.pseudonym_columns))
        return Projection(columns, pseudonyms, table.row_filter + grant.row_filter)


@dataclass(frozen=True)
class SharesConfig:
    shares: tuple[Share, ...]
    recipients: tuple[Recipient, ...]
    url_ttl_seconds: int = DEFAULT_URL_TTL_SECONDS
    source: Path | None = field(default=None, compare=False)
    rate_limit: RateLimit = RateLimit()
    # "projections": every recipient reads its own materialised copy under
    # <lake>/shares/<recipient>/... (the default, and the only mode where column selection
    # and pseudonym re-keying are enforced); "source": the gold tables themselves, for a
    # single trusted recipient without projections only.
    serve_from: str = "projections"
    # Base of every URL the server hands out (".../delta-sharing"); never taken from the request.
    public_endpoint: str | None = None
    # Peers whose X-Forwarded-For/-Proto are believed (IPs or CIDRs); none by default.
    trusted_proxies: tuple[str, ...] = ()
    shutdown_timeout_seconds: int = DEFAULT_SHUTDOWN_TIMEOUT_SECONDS
    # Set when the file on disk could not be read at all: no recipient is admitted.
    fail_closed: bool = False

    def share(self, name: str) -> Share | None:
        wanted = name.lower()
        return next((s for s in self.shares if s.name.lower() == wanted), None)

    def recipient(self, name: str) -> Recipient | None:
        return next((r for r in self.recipients if r.name == name), None)

    def without_recipients_except(self, names: frozenset[str] | None) -> "SharesConfig":
        """This configuration admitting only the declared recipients in ``names`` (None: nobody at all)."""
        if names is None:
            return dataclasses.replace(self, recipients=(), fail_closed=True)
        return dataclasses.replace(self, recipients=tuple(r for r in self.recipients if r.name in names))

    def shares_for(self, recipient: Recipient) -> list[Share]:
        """The shares ``recipient`` is entitled to, in configuration order."""
        return [s for s in self.shares if recipient.may_read(s.name)]


# The naming rules of validate_name as patterns, so that an editor checks them while the file is typed.
_CONTROL = r"\u0000-\u001f\u007f"
_SHARING_NAME = {"type": "string", "minLength": 1, "maxLength": 255,
                 "pattern": rf"^(?!.*\.\.)(?!\.$)[^ /\\{_CONTROL}]+$",
                 "patternErrorMessage": "must be a Delta Sharing name: no space, slash, backslash or control "
                                        "character, and no '..'"}
_DOTLESS_NAME = {**_SHARING_NAME, "pattern": rf"^[^ ./\\{_CONTROL}]+$",
                 "patternErrorMessage": "must be a Delta Sharing schema or table name: no '.', space, slash, "
                                        "backslash or control character"}
_NO_SPACES = {"type": "string", "pattern": r"^\S+$", "patternErrorMessage": "must be a non-empty text without spaces"}
_COLUMNS = {"type": ["array", "null"], "items": {"type": "string", "pattern": r"\S",
                                                  "patternErrorMessage": "must be a column name, not blank"}}
_ROW_FILTER = {
    "type": ["array", "null"],
    "title": "Row filter: only rows matching every condition are shared",
    "description": "Structured, never SQL: {column: C, equals: V | in: [..] | not_in: [..] | not_null: true}.",
    "items": {
        "type": "object", "additionalProperties": False, "required": ["column"],
        "properties": {"column": {"type": "string", "minLength": 1, "title": "Column compared"},
                       "equals": {"title": "The value the column must equal"},
                       "in": {"type": "array", "title": "The values the column must be one of"},
                       "not_in": {"type": "array", "title": "The values the column must not be"},
                       "not_null": {"const": True, "title": "The column must have a value"}},
        "oneOf": [{"required": [op]} for op in ROW_FILTER_OPS],
    },
}
_PROJECTION = {
    "columns": {**_COLUMNS, "title": "Columns shared (omit: every column of the gold table)"},
    "pseudonym_columns": {**_COLUMNS, "title": "Person pseudonyms, re-keyed per recipient"},
    "row_filter": _ROW_FILTER,
}
_TABLE = {
    "type": "object", "additionalProperties": False, "required": ["name", "location"],
    "properties": {
        "name": _DOTLESS_NAME,
        "location": {"type": "string", "minLength": 1, "title": "Delta table, relative to the lake root (no '..')"},
        "history_shared": {"type": "boolean", "title": "Allow version and timestamp queries"},
        "comment": {"type": ["string", "null"]},
        "catalog_name": {**_NO_SPACES, "title": "Unity Catalog name <catalog>.<schema>.<table>",
                         "description": "Default: derived from location and the catalog."},
        **_PROJECTION,
    },
}
_SHARE = {
    "type": "object", "additionalProperties": False, "required": ["name"],
    "properties": {
        "name": _SHARING_NAME,
        "comment": {"type": ["string", "null"]},
        "display_name": {"type": ["string", "null"]},
        "schemas": {"type": ["array", "null"], "items": {
            "type": "object", "additionalProperties": False, "required": ["name"],
            "properties": {"name": _DOTLESS_NAME, "tables": {"type": ["array", "null"], "items": _TABLE}}}},
    },
}
_RECIPIENT = {
    "type": "object", "additionalProperties": False, "required": ["name"],
    "properties": {
        "name": _SHARING_NAME,
        "comment": {"type": ["string", "null"]},
        "shares": {"type": ["array", "null"], "items": {"type": "string"}, "title": "Shares the recipient may read"},
        "token_lifetime_days": {"type": "integer", "minimum": 1, "title": "Default lifetime of a token, in days"},
        "token_lifetime": {"type": ["string", "integer"], "title": "Default lifetime of a token: 30m, 12h, 7d",
                           "description": "Wins over token_lifetime_days; between 1 minute and 3650 days."},
        "sharing_identifier": {**_NO_SPACES, "title": "Databricks-to-Databricks sharing identifier",
                               "description": "<cloud>:<region>:<metastore uuid> (Unity Catalog only)."},
        "tables": {"type": ["object", "null"], "title": "The recipient's own narrowing, per share.schema.table",
                   "additionalProperties": {"type": ["object", "null"], "additionalProperties": False,
                                            "properties": _PROJECTION}},
    },
}
_SERVER = {
    "type": ["object", "null"], "additionalProperties": False,
    "properties": {
        "url_ttl_seconds": {"type": "integer", "minimum": 60, "maximum": 7 * 24 * 3600,
                            "title": "Lifetime of a signed file URL, in seconds"},
        "serve_from": {"enum": ["projections", "source"], "title": "What recipients read",
                       "description": "projections: each recipient's own copy (default); source: the gold tables, "
                                      "for one trusted recipient without projections only."},
        "rate_limit": {"type": ["object", "null"], "additionalProperties": False, "title": "Token bucket per recipient",
                       "properties": {"requests_per_second": {"type": "number", "exclusiveMinimum": 0,
                                                              "maximum": 100_000},
                                      "burst": {"type": "integer", "minimum": 1, "maximum": 1_000_000}}},
        "public_endpoint": {"type": "string", "title": "Base of every URL handed out",
                            "description": "An http(s) URL such as https://data.example.nl/delta-sharing."},
        "trusted_proxies": {"type": ["array", "null"], "items": {"type": "string"},
                            "title": "Peers whose X-Forwarded-For/-Proto are believed (IPs or CIDRs)"},
        "shutdown_timeout_seconds": {"type": "integer", "minimum": 1, "maximum": 3600,
                                     "title": "Seconds running requests get on shutdown"},
    },
}
#: JSON schema of the shares configuration (``config/shares.yaml``); published as docs/schemas/shares.schema.json.
SHARES_CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": DIALECT,
    "title": "Delta Sharing configuration",
    "description": "Which gold tables are shared, and with which recipients: config/shares.yaml (docs/sharing.md).",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "server": {**_SERVER, "title": "Settings of the sharing server"},
        "shares": {"type": ["array", "null"], "items": _SHARE, "title": "Shares → schemas → tables"},
        "recipients": {"type": ["array", "null"], "items": _RECIPIENT, "title": "Recipients reviewed by the operator"},
    },
}


def _relative_location(value: str, where: str) -> str:
    posix = PurePosixPath(value.strip().replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or str(posix) in ("", "."):
        raise SharesConfigError(f"{where}: location {value!r} must be relative to the lake root without '..'")
    return str(posix)


def _column_list(value: list[str] | None, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if len({c.lower() for c in value}) != len(value):
        raise SharesConfigError(f"{where} names a column twice")
    return tuple(value)


def _row_filter(value: list[dict] | None) -> tuple[RowCondition, ...]:
    conditions = []
    for raw in value or []:
        op = next(op for op in ROW_FILTER_OPS if op in raw)  # the schema allows exactly one
        operand = tuple(raw[op]) if op in ("in", "not_in") else raw[op]
        conditions.append(RowCondition(column=raw["column"], op=op, value=operand))
    return tuple(conditions)


def _public_endpoint(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise SharesConfigError("server.public_endpoint must be an http(s) URL such as https://data.example.nl/delta-sharing")
    return value.rstrip("/")


def _trusted_proxies(entries: list[str]) -> tuple[str, ...]:
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise SharesConfigError(f"server.trusted_proxies: {entry!r} is not an IP address or network") from None
    return tuple(entries)


def _server_section(doc: dict) -> dict:
    """The keyword arguments of :class:`SharesConfig` that come from ``server:``."""
    server = doc.get("server") or {}
    rate_limit = server.get("rate_limit") or {}
    rps = rate_limit.get("requests_per_second", RateLimit.requests_per_second)
    return {
        "url_ttl_seconds": server.get("url_ttl_seconds", DEFAULT_URL_TTL_SECONDS),
        "rate_limit": RateLimit(requests_per_second=float(rps), burst=rate_limit.get("burst", RateLimit.burst)),
        "serve_from": server.get("serve_from", "projections"),
        "public_endpoint": _public_endpoint(server.get("public_endpoint")),
        "trusted_proxies": _trusted_proxies(server.get("trusted_proxies") or []),
        "shutdown_timeout_seconds": server.get("shutdown_timeout_seconds", DEFAULT_SHUTDOWN_TIMEOUT_SECONDS),
    }


def _refuse_duplicates(names: list[str], where: str, kind: str, fold: Callable[[str], str] = str.lower) -> None:
    """Refuse a name given twice; share, schema and table names are looked up case-insensitively, so ``fold``."""
    seen: set[str] = set()
    for i, name in enumerate(names):
        if fold(name) in seen:
            raise SharesConfigError(f"{where}[{i}]: duplicate {kind} {name!r}")
        seen.add(fold(name))


def parse_shares_config(data: object, source: Path | None = None) -> SharesConfig:
    """Validate the YAML document ``data`` (SHARES_CONFIG_SCHEMA, then cross references) into a :class:`SharesConfig`."""
    doc = data if data is not None else {}
    validate(doc, SHARES_CONFIG_SCHEMA, source=source, what="shares config", error=SharesConfigError)
    tables_by_name: dict[str, SharedTable] = {}
    shares = [_share(raw, f"shares[{i}]", tables_by_name) for i, raw in enumerate(doc.get("shares") or [])]
    _refuse_duplicates([s.name for s in shares], "shares", "share name")
    recipients = _parse_recipients(doc, {s.name.lower() for s in shares}, tables_by_name)
    return SharesConfig(shares=tuple(shares), recipients=tuple(recipients), source=source, **_server_section(doc))


def _share(raw: dict, where: str, tables_by_name: dict[str, SharedTable]) -> Share:
    """One entry of ``shares:``; its tables are added to ``tables_by_name`` (by lower-cased qualified name)."""
    schemas = []
    for j, raw_schema in enumerate(raw.get("schemas") or []):
        swhere = f"{where}.schemas[{j}]"
        tables = [_table(raw["name"], raw_schema["name"], t, f"{swhere}.tables[{k}]")
                  for k, t in enumerate(raw_schema.get("tables") or [])]
        _refuse_duplicates([t.name for t in tables], f"{swhere}.tables", "table name")
        tables_by_name.update((t.qualified_name.lower(), t) for t in tables)
        schemas.append(SharedSchema(share=raw["name"], name=raw_schema["name"], tables=tuple(tables)))
    _refuse_duplicates([s.name for s in schemas], f"{where}.schemas", "schema name")
    return Share(name=raw["name"], schemas=tuple(schemas), comment=raw.get("comment"), display_name=raw.get("display_name"))


def _table(share: str, schema: str, raw: dict, where: str) -> SharedTable:
    return SharedTable(
        share=share,
        schema=schema,
        name=raw["name"],
        location=_relative_location(raw["location"], where),
        history_shared=raw.get("history_shared", False),
        comment=raw.get("comment"),
        catalog_name=raw.get("catalog_name"),
        columns=_column_list(raw.get("columns"), f"{where}.columns"),
        pseudonym_columns=_column_list(raw.get("pseudonym_columns"), f"{where}.pseudonym_columns") or (),
        row_filter=_row_filter(raw.get("row_filter")),
    )


def _parse_recipients(doc: dict, seen_shares: set[str], tables_by_name: dict[str, SharedTable]) -> list[Recipient]:
    """``recipients:`` of the document, checked against the shares declared before it."""
    raw_recipients = doc.get("recipients") or []
    # Recipient names are looked up exactly (they name token holders), so only an exact repeat is a duplicate.
    _refuse_duplicates([r["name"] for r in raw_recipients], "recipients", "recipient", fold=str)
    recipients: list[Recipient] = []
    for i, raw in enumerate(raw_recipients):
        where = f"recipients[{i}]"
        entitled = []
        for share_name in raw.get("shares") or []:
            if share_name.lower() not in seen_shares:
                raise SharesConfigError(f"{where}: unknown share {share_name!r}")
            entitled.append(share_name.lower())
        fine_lifetime = raw.get("token_lifetime")
        if fine_lifetime is not None:
            try:
                parse_lifetime(str(fine_lifetime))
            except ValueError as exc:
                raise SharesConfigError(f"{where}: {exc}") from None
        recipients.append(Recipient(
            name=raw["name"],
            shares=tuple(entitled),
            token_lifetime_days=raw.get("token_lifetime_days"),
            comment=raw.get("comment"),
            sharing_identifier=raw.get("sharing_identifier"),
            tables=_table_grants(raw.get("tables"), f"{where}.tables", tables_by_name, entitled),
            token_lifetime=None if fine_lifetime is None else str(fine_lifetime),
        ))
    return recipients


def _table_grants(
    raw: dict | None, where: str, tables_by_name: dict[str, SharedTable], entitled: list[str]
) -> tuple[tuple[str, TableGrant], ...]:
    """``recipients[].tables``: ``{"share.schema.table": {columns, pseudonym_columns, row_filter}}``."""
    grants = []
    for qualified, body in (raw or {}).items():
        gwhere = f"{where}[{qualified!r}]"
        table = tables_by_name.get(str(qualified).lower())
        if table is None:
            raise SharesConfigError(f"{gwhere}: no shared table of that name (use share.schema.table)")
        if table.share.lower() not in entitled:
            raise SharesConfigError(f"{gwhere}: the recipient is not entitled to share {table.share!r}")
        body = body or {}
        columns = _column_list(body.get("columns"), f"{gwhere}.columns")
        if columns is not None and table.columns is not None:
            allowed = {c.lower() for c in table.columns}
            extra = [c for c in columns if c.lower() not in allowed]
            if extra:
                # A recipient entry narrows the share's columns; it can never widen them.
                raise SharesConfigError(f"{gwhere}: columns {extra} are not among the table's shared columns")
        grant = TableGrant(columns=columns,
                           pseudonym_columns=_column_list(body.get("pseudonym_columns"), f"{gwhere}.pseudonym_columns") or (),
                           row_filter=_row_filter(body.get("row_filter")))
        grants.append((table.qualified_name.lower(), grant))
    return tuple(grants)


def load_shares_config(path: Path | str | None = None) -> SharesConfig:
    """Read and validate the shares configuration file."""
    path = Path(path) if path is not None else default_config_path()
    return parse_shares_config(ggm_config.read_yaml_config(path, "shares config", SharesConfigError), source=path)


def listed_recipient_names(path: Path) -> frozenset[str] | None:
    """Names under ``recipients:`` of a file that may fail validation; None if it cannot be read that far.

    Used to fail closed on a broken edit: a recipient the new file no longer lists loses
    access even though the rest of the file is not valid yet.
    """
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("recipients") or [], list):
        return None
    entries = doc.get("recipients") or []
    if not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in entries):
        return None
    return frozenset(e["name"] for e in entries)


class ReloadingSharesConfig:
    """Serves the current configuration, re-reading the file whenever it changes.

    Adding a share or recipient therefore needs no server restart. A broken edit keeps
    the last good shares in force but fails closed for recipients: those the new file no
    longer lists lose access at once, and if the file cannot even be parsed that far no
    recipient is admitted until it is fixed (logged as an error). ``on_change`` is called
    with every newly loaded valid configuration (e.g. to retire removed recipients' tokens).
    """

    def __init__(self, path: Path | str | None = None, on_change: Callable[[SharesConfig], None] | None = None):
        self.path = Path(path) if path is not None else default_config_path()
        self._lock = threading.Lock()
        self._on_change = on_change
        self._config = load_shares_config(self.path)
        self._good = self._config
        self._stamp = ggm_config.file_stamp(self.path)
        self.last_error: str | None = None
        if on_change is not None:
            on_change(self._config)

    def get(self) -> SharesConfig:
        """The configuration in force, re-read first if the file changed."""
        stamp = ggm_config.file_stamp(self.path)
        if stamp == self._stamp:
            return self._config
        with self._lock:
            if stamp != self._stamp:
                self._reload()
                self._stamp = stamp
        return self._config

    def _reload(self) -> None:
        try:
            loaded = load_shares_config(self.path)
        except SharesConfigError as exc:
            self.last_error = str(exc)
            listed = listed_recipient_names(self.path)
            self._config = self._good.without_recipients_except(listed)
            if listed is None:
                log.error("shares config unreadable, failing closed (no recipient admitted) until it is fixed: %s", exc)
            else:
                log.error("shares config invalid, keeping the previous shares for the recipients it still lists: %s", exc)
            return
        self._config = self._good = loaded
        self.last_error = None
        if self._on_change is not None:
            self._on_change(loaded)
