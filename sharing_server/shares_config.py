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

import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from ggm_lakehouse import config as ggm_config

#: Lifetime of a signed file URL when ``server.url_ttl_seconds`` is not configured;
#: the same default as the reference server's ``preSignedUrlTimeoutSeconds``.
DEFAULT_URL_TTL_SECONDS = 3600
#: Token lifetime when neither the caller nor the recipient entry sets one.
DEFAULT_TOKEN_LIFETIME_DAYS = 90

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


@dataclass(frozen=True)
class Recipient:
    name: str
    shares: tuple[str, ...]  # lower-cased share names the recipient may read
    token_lifetime_days: int | None = None
    comment: str | None = None
    sharing_identifier: str | None = None  # Unity Catalog: Databricks-to-Databricks sharing identifier

    def may_read(self, share_name: str) -> bool:
        return share_name.lower() in self.shares


@dataclass(frozen=True)
class SharesConfig:
    shares: tuple[Share, ...]
    recipients: tuple[Recipient, ...]
    url_ttl_seconds: int = DEFAULT_URL_TTL_SECONDS
    source: Path | None = field(default=None, compare=False)

    def share(self, name: str) -> Share | None:
        wanted = name.lower()
        return next((s for s in self.shares if s.name.lower() == wanted), None)

    def recipient(self, name: str) -> Recipient | None:
        return next((r for r in self.recipients if r.name == name), None)

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


def parse_shares_config(data: object, source: Path | None = None) -> SharesConfig:
    """Validate the YAML document ``data`` and build a :class:`SharesConfig`."""
    doc = _require_mapping(data if data is not None else {}, "shares config")
    server = _require_mapping(doc.get("server") or {}, "server")
    url_ttl = server.get("url_ttl_seconds", DEFAULT_URL_TTL_SECONDS)
    if not isinstance(url_ttl, int) or isinstance(url_ttl, bool) or not 60 <= url_ttl <= 7 * 24 * 3600:
        raise SharesConfigError("server.url_ttl_seconds must be an integer between 60 and 604800")

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
                tables.append(
                    SharedTable(
                        share=share_name,
                        schema=schema_name,
                        name=table_name,
                        location=_relative_location(raw_table.get("location"), twhere),
                        history_shared=history_shared,
                        comment=raw_table.get("comment"),
                        catalog_name=_optional_text(raw_table.get("catalog_name"), f"{twhere}.catalog_name"),
                    )
                )
            schemas.append(SharedSchema(share=share_name, name=schema_name, tables=tuple(tables)))
        shares.append(
            Share(
                name=share_name,
                schemas=tuple(schemas),
                comment=raw_share.get("comment"),
                display_name=raw_share.get("display_name"),
            )
        )

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
        recipients.append(
            Recipient(
                name=name,
                shares=tuple(entitled),
                token_lifetime_days=lifetime,
                comment=raw_recipient.get("comment"),
                sharing_identifier=_optional_text(raw_recipient.get("sharing_identifier"), f"{where}.sharing_identifier"),
            )
        )
    return SharesConfig(
        shares=tuple(shares), recipients=tuple(recipients), url_ttl_seconds=url_ttl, source=source
    )


def load_shares_config(path: Path | str | None = None) -> SharesConfig:
    """Read and validate the shares configuration file."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SharesConfigError(f"shares config {path} does not exist") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SharesConfigError(f"shares config {path} is not valid YAML: {exc}") from None
    return parse_shares_config(data, source=path)


class ReloadingSharesConfig:
    """Serves the current configuration, re-reading the file whenever it changes.

    Adding a share or recipient therefore needs no server restart. A broken edit
    keeps the last good configuration in force (and is logged) rather than taking
    every share offline.
    """

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path is not None else default_config_path()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._config = load_shares_config(self.path)
        self._stamp = self._file_stamp()
        self.last_error: str | None = None

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def get(self) -> SharesConfig:
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return self._config
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._config = load_shares_config(self.path)
                    self.last_error = None
                except SharesConfigError as exc:
                    logging.getLogger(__name__).error("keeping previous shares config: %s", exc)
                    self.last_error = str(exc)
                self._stamp = stamp
        return self._config
