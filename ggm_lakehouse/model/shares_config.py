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
from typing import Callable
from urllib.parse import urlsplit

import yaml

from ggm_lakehouse import config as ggm_config

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


def _require_list(value: object, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SharesConfigError(f"{where} must be a list")
    return value


def _require_mapping(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise SharesConfigError(f"{where} must be a mapping")
    return value


def _validated(name: object, kind: str, where: str) -> str:
    try:
        return validate_name(name, kind)
    except InvalidNameError as exc:
        raise SharesConfigError(f"{where}: {exc}") from None


def _relative_location(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SharesConfigError(f"{where}: 'location' must be a path relative to the lake root")
    posix = PurePosixPath(value.strip().replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or str(posix) in ("", "."):
        raise SharesConfigError(f"{where}: location {value!r} must be relative to the lake root without '..'")
    return str(posix)


def _optional_text(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or any(ch.isspace() for ch in value.strip()):
        raise SharesConfigError(f"{where} must be a non-empty string without spaces")
    return value.strip()


def _column_list(value: object, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(c, str) and c.strip() for c in value):
        raise SharesConfigError(f"{where} must be a list of column names")
    if len({c.lower() for c in value}) != len(value):
        raise SharesConfigError(f"{where} names a column twice")
    return tuple(value)


def _row_filter(value: object, where: str) -> tuple[RowCondition, ...]:
    conditions = []
    for i, raw in enumerate(_require_list(value, where)):
        cwhere = f"{where}[{i}]"
        raw = _require_mapping(raw, cwhere)
        column = raw.get("column")
        if not isinstance(column, str) or not column:
            raise SharesConfigError(f"{cwhere}: 'column' is required")
        ops = [op for op in ROW_FILTER_OPS if op in raw]
        if len(ops) != 1 or set(raw) - {"column", *ROW_FILTER_OPS}:
            raise SharesConfigError(f"{cwhere}: exactly one of {', '.join(ROW_FILTER_OPS)} next to 'column'")
        op = ops[0]
        operand = raw[op]
        if op in ("in", "not_in") and not isinstance(operand, list):
            raise SharesConfigError(f"{cwhere}: '{op}' needs a list of values")
        if op == "not_null" and operand is not True:
            raise SharesConfigError(f"{cwhere}: 'not_null' must be true")
        if op in ("in", "not_in"):
            operand = tuple(operand)
        conditions.append(RowCondition(column=column, op=op, value=operand))
    return tuple(conditions)


def _rate_limit(raw: object) -> RateLimit:
    if raw is None:
        return RateLimit()
    raw = _require_mapping(raw, "server.rate_limit")
    rps = raw.get("requests_per_second", RateLimit.requests_per_second)
    burst = raw.get("burst", RateLimit.burst)
    if isinstance(rps, bool) or not isinstance(rps, (int, float)) or not 0 < rps <= 100_000:
        raise SharesConfigError("server.rate_limit.requests_per_second must be a positive number")
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 1_000_000:
        raise SharesConfigError("server.rate_limit.burst must be a positive integer")
    return RateLimit(requests_per_second=float(rps), burst=burst)


def _public_endpoint(value: object) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise SharesConfigError("server.public_endpoint must be an http(s) URL such as https://data.example.nl/delta-sharing")
    return value.rstrip("/")


def _trusted_proxies(value: object) -> tuple[str, ...]:
    entries = _require_list(value, "server.trusted_proxies")
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except (TypeError, ValueError):
            raise SharesConfigError(f"server.trusted_proxies: {entry!r} is not an IP address or network") from None
    return tuple(entries)


def _server_section(doc: dict) -> dict:
    """The keyword arguments of :class:`SharesConfig` that come from ``server:``."""
    server = _require_mapping(doc.get("server") or {}, "server")
    url_ttl = server.get("url_ttl_seconds", DEFAULT_URL_TTL_SECONDS)
    if not isinstance(url_ttl, int) or isinstance(url_ttl, bool) or not 60 <= url_ttl <= 7 * 24 * 3600:
        raise SharesConfigError("server.url_ttl_seconds must be an integer between 60 and 604800")
    serve_from = server.get("serve_from", "projections")
    if serve_from not in ("projections", "source"):
        raise SharesConfigError("server.serve_from must be 'projections' or 'source'")
    shutdown = server.get("shutdown_timeout_seconds", DEFAULT_SHUTDOWN_TIMEOUT_SECONDS)
    if not isinstance(shutdown, int) or isinstance(shutdown, bool) or not 1 <= shutdown <= 3600:
        raise SharesConfigError("server.shutdown_timeout_seconds must be an integer between 1 and 3600")
    return {
        "url_ttl_seconds": url_ttl,
        "rate_limit": _rate_limit(server.get("rate_limit")),
        "serve_from": serve_from,
        "public_endpoint": _public_endpoint(server.get("public_endpoint")),
        "trusted_proxies": _trusted_proxies(server.get("trusted_proxies")),
        "shutdown_timeout_seconds": shutdown,
    }


def parse_shares_config(data: object, source: Path | None = None) -> SharesConfig:
    """Validate the YAML document ``data`` and build a :class:`SharesConfig`."""
    doc = _require_mapping(data if data is not None else {}, "shares config")
    server_settings = _server_section(doc)
    tables_by_name: dict[str, SharedTable] = {}

    shares: list[Share] = []
    seen_shares: set[str] = set()
    for i, raw_share in enumerate(_require_list(doc.get("shares"), "shares")):
        where = f"shares[{i}]"
        raw_share = _require_mapping(raw_share, where)
        share_name = _validated(raw_share.get("name"), "share", where)
        if share_name.lower() in seen_shares:
            raise SharesConfigError(f"{where}: duplicate share name {share_name!r}")
        seen_shares.add(share_name.lower())
        schemas: list[SharedSchema] = []
        seen_schemas: set[str] = set()
        for j, raw_schema in enumerate(_require_list(raw_share.get("schemas"), f"{where}.schemas")):
            swhere = f"{where}.schemas[{j}]"
            raw_schema = _require_mapping(raw_schema, swhere)
            schema_name = _validated(raw_schema.get("name"), "schema", swhere)
            if schema_name.lower() in seen_schemas:
                raise SharesConfigError(f"{swhere}: duplicate schema name {schema_name!r}")
            seen_schemas.add(schema_name.lower())
            tables: list[SharedTable] = []
            seen_tables: set[str] = set()
            for k, raw_table in enumerate(_require_list(raw_schema.get("tables"), f"{swhere}.tables")):
                twhere = f"{swhere}.tables[{k}]"
                raw_table = _require_mapping(raw_table, twhere)
                table_name = _validated(raw_table.get("name"), "table", twhere)
                if table_name.lower() in seen_tables:
                    raise SharesConfigError(f"{twhere}: duplicate table name {table_name!r}")
                seen_tables.add(table_name.lower())
                history_shared = raw_table.get("history_shared", False)
                if not isinstance(history_shared, bool):
                    raise SharesConfigError(f"{twhere}: history_shared must be true or false")
                table = SharedTable(
                    share=share_name,
                    schema=schema_name,
                    name=table_name,
                    location=_relative_location(raw_table.get("location"), twhere),
                    history_shared=history_shared,
                    comment=raw_table.get("comment"),
                    catalog_name=_optional_text(raw_table.get("catalog_name"), f"{twhere}.catalog_name"),
                    columns=_column_list(raw_table.get("columns"), f"{twhere}.columns"),
                    pseudonym_columns=_column_list(raw_table.get("pseudonym_columns"), f"{twhere}.pseudonym_columns") or (),
                    row_filter=_row_filter(raw_table.get("row_filter"), f"{twhere}.row_filter"),
                )
                tables.append(table)
                tables_by_name[table.qualified_name.lower()] = table
            schemas.append(SharedSchema(share=share_name, name=schema_name, tables=tuple(tables)))
        shares.append(
            Share(
                name=share_name,
                schemas=tuple(schemas),
                comment=raw_share.get("comment"),
                display_name=raw_share.get("display_name"),
            )
        )

    recipients = _parse_recipients(doc, seen_shares, tables_by_name)
    return SharesConfig(shares=tuple(shares), recipients=tuple(recipients), source=source, **server_settings)


def _parse_recipients(doc: dict, seen_shares: set[str], tables_by_name: dict[str, SharedTable]) -> list[Recipient]:
    """``recipients:`` of the document, validated against the shares declared before it."""
    recipients: list[Recipient] = []
    seen_recipients: set[str] = set()
    for i, raw_recipient in enumerate(_require_list(doc.get("recipients"), "recipients")):
        where = f"recipients[{i}]"
        raw_recipient = _require_mapping(raw_recipient, where)
        name = _validated(raw_recipient.get("name"), "recipient", where)
        if name in seen_recipients:
            raise SharesConfigError(f"{where}: duplicate recipient {name!r}")
        seen_recipients.add(name)
        entitled = []
        for share_name in _require_list(raw_recipient.get("shares"), f"{where}.shares"):
            if not isinstance(share_name, str) or share_name.lower() not in seen_shares:
                raise SharesConfigError(f"{where}: unknown share {share_name!r}")
            entitled.append(share_name.lower())
        lifetime = raw_recipient.get("token_lifetime_days")
        if lifetime is not None and (not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime < 1):
            raise SharesConfigError(f"{where}: token_lifetime_days must be a positive integer")
        fine_lifetime = raw_recipient.get("token_lifetime")
        if fine_lifetime is not None:
            try:
                parse_lifetime(str(fine_lifetime))
            except ValueError as exc:
                raise SharesConfigError(f"{where}: {exc}") from None
        recipients.append(
            Recipient(
                name=name,
                shares=tuple(entitled),
                token_lifetime_days=lifetime,
                comment=raw_recipient.get("comment"),
                sharing_identifier=_optional_text(raw_recipient.get("sharing_identifier"), f"{where}.sharing_identifier"),
                tables=_table_grants(raw_recipient.get("tables"), f"{where}.tables", tables_by_name, entitled),
                token_lifetime=None if fine_lifetime is None else str(fine_lifetime),
            )
        )
    return recipients


def _table_grants(
    raw: object, where: str, tables_by_name: dict[str, SharedTable], entitled: list[str]
) -> tuple[tuple[str, TableGrant], ...]:
    """``recipients[].tables``: ``{"share.schema.table": {columns, pseudonym_columns, row_filter}}``."""
    if raw is None:
        return ()
    grants = []
    for qualified, body in _require_mapping(raw, where).items():
        gwhere = f"{where}[{qualified!r}]"
        table = tables_by_name.get(str(qualified).lower())
        if table is None:
            raise SharesConfigError(f"{gwhere}: no shared table of that name (use share.schema.table)")
        if table.share.lower() not in entitled:
            raise SharesConfigError(f"{gwhere}: the recipient is not entitled to share {table.share!r}")
        body = _require_mapping(body or {}, gwhere)
        unknown = set(body) - {"columns", "pseudonym_columns", "row_filter"}
        if unknown:
            raise SharesConfigError(f"{gwhere}: unknown keys {sorted(unknown)}")
        columns = _column_list(body.get("columns"), f"{gwhere}.columns")
        if columns is not None and table.columns is not None:
            allowed = {c.lower() for c in table.columns}
            extra = [c for c in columns if c.lower() not in allowed]
            if extra:
                # A recipient entry narrows the share's columns; it can never widen them.
                raise SharesConfigError(f"{gwhere}: columns {extra} are not among the table's shared columns")
        grants.append(
            (
                table.qualified_name.lower(),
                TableGrant(
                    columns=columns,
                    pseudonym_columns=_column_list(body.get("pseudonym_columns"), f"{gwhere}.pseudonym_columns") or (),
                    row_filter=_row_filter(body.get("row_filter"), f"{gwhere}.row_filter"),
                ),
            )
        )
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
