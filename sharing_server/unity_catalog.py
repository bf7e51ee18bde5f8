"""Production path on Databricks: ``config/shares.yaml`` drives Unity Catalog shares, recipients and grants.

The same file that configures the embedded Delta Sharing server (:mod:`ggm_lakehouse.model.shares_config`)
is applied to a Unity Catalog metastore through the Databricks SDK, so partners see the same
``<schema>.<table>`` names on either server (the share is ``<share>__<recipient>`` for a recipient
whose projection narrows the share, see below):

* every share read whole by a recipient becomes a UC share (``w.shares.create``); each configured table is a data object
  ``<catalog>.<layer>.<table>`` (derived from ``location``, e.g. ``gold/inwoners_per_buurt`` →
  ``gemeente.gold.inwoners_per_buurt``, or the table's optional ``catalog_name``) shared as
  ``<schema>.<table>`` of shares.yaml; ``history_shared`` maps to ``history_data_sharing_status``.
  Tables are added, updated and removed with ``w.shares.update(updates=[SharedDataObjectUpdate…])``;
* every recipient becomes a UC recipient (``w.recipients.create``): ``TOKEN`` authentication (open
  sharing, an activation link for the partner) or, when the recipient has a ``sharing_identifier``,
  ``DATABRICKS`` (Databricks-to-Databricks);
* ``w.shares.update_permissions`` grants ``SELECT`` on each share to exactly the recipients
  entitled to it in shares.yaml and revokes it from anyone else.

Per-recipient projections (what the embedded server materialises under ``<lake>/shares/<recipient>``)
become per-recipient views: a recipient whose projection of any table of a share narrows columns or
rows (``columns``, ``row_filter``, ``pseudonym_columns``; see :meth:`Recipient.projection`) is *not*
granted the share itself but its own share ``<share>__<recipient>`` holding, under the same
``<schema>.<table>`` aliases, a VIEW ``<catalog>.shares_<recipient>.<share>__<schema>__<table>`` for
every narrowed table (only the granted columns, the row filter rendered as SQL) and the gold table
itself for every table it receives whole. Views are created with the SQL Statement Execution API on
the SQL warehouse ``GGM_DATABRICKS_WAREHOUSE_ID``. Pseudonym columns are left out of views: the
per-recipient re-keying needs the sharing secret, which a view cannot hold honestly, so the plan
carries a warning and partners that need them use the embedded server. A share of shares.yaml that
no recipient reads whole is not created (an existing one is still kept in line, so grants from
before are revoked). Per-recipient shares no longer wanted (names ``<share>__…`` are reserved for
them) are kept but emptied and their grants revoked; their views stay in place, unshared.

Only gold tables may be shared: a table that resolves to bronze, quarantine or silver is refused,
since those hold clear or person-level data. Shares and recipients that exist in the metastore but
not in the file are reported, never deleted. :func:`plan_unity_catalog` only reads;
:func:`apply_unity_catalog` applies the plan and is idempotent (a second run sends no change).
Recipients added with ``ggm sharing recipient add`` live in the embedded server's state only.
"""
from __future__ import annotations

import datetime as dt
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ggm_lakehouse import config as ggm_config
from ggm_lakehouse.lake import table_namespace
from ggm_lakehouse.model.shares_config import (
    DEFAULT_TOKEN_LIFETIME_DAYS,
    Projection,
    Recipient,
    RowCondition,
    SharedTable,
    SharesConfig,
    load_shares_config,
)
# The embedded path's list of name fragments that mark person identifiers: one rule for both paths.
from sharing_server.projections import _PERSON_ID_HINTS

#: Lake layers whose tables must never leave the platform through a share.
NON_SHAREABLE_LAYERS = tuple(layer for layer in ggm_config.LAYERS if layer != "gold")
_UC_ALIAS_PART = re.compile(r"^[A-Za-z0-9_]+$")
_DAY_MS = 24 * 3600 * 1000
#: Environment variable naming the SQL warehouse that creates the per-recipient views.
WAREHOUSE_ID_ENV = "GGM_DATABRICKS_WAREHOUSE_ID"
#: Separator between a share and a recipient (derived share) or share, schema and table (view name).
DERIVED_SEPARATOR = "__"
#: Schema (in the lake catalog) holding one recipient's views: ``shares_<recipient>``.
VIEW_SCHEMA_PREFIX = "shares_"
_STATEMENT_DEADLINE_SECONDS = 600


class UnityCatalogSharingError(RuntimeError):
    """The configuration cannot be applied; ``applied`` lists the steps done before the failure."""

    def __init__(self, message: str, applied: list[str] | None = None):
        super().__init__(message)
        self.applied = applied or []


@dataclass(frozen=True)
class DesiredTable:
    """One table as a Unity Catalog shared data object."""

    full_name: str  # <catalog>.<schema>.<table> in the metastore
    shared_as: str  # <schema>.<table> as the recipient sees it
    history_shared: bool
    comment: str | None = None
    data_object_type: str = "TABLE"  # or "VIEW" for a per-recipient view

    @property
    def history_status(self) -> str | None:
        """``ENABLED``/``DISABLED`` for tables; None for views (``ALTER SHARE … ADD VIEW`` has no history)."""
        if self.data_object_type == "VIEW":
            return None
        return "ENABLED" if self.history_shared else "DISABLED"

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.full_name, "data_object_type": self.data_object_type,
                                "shared_as": self.shared_as}
        if self.history_status is not None:
            body["history_data_sharing_status"] = self.history_status
        return body


@dataclass(frozen=True)
class DesiredView:
    """A per-recipient view: the granted columns and rows of one gold table."""

    recipient: str
    table: str  # share.schema.table of shares.yaml
    full_name: str  # <catalog>.shares_<recipient>.<share>__<schema>__<table>
    source: str  # the gold table's full name
    definition: str  # the SELECT the view runs

    @property
    def schema_full_name(self) -> str:
        return self.full_name.rsplit(".", 1)[0]

    def schema_statement(self) -> str:
        """The SQL that creates the recipient's view schema when it is missing."""
        schema_comment = sql_string_literal(f"GGM per-recipient share views of {self.recipient}")
        return f"CREATE SCHEMA IF NOT EXISTS {quote_name(self.schema_full_name)} COMMENT {schema_comment}"

    def view_statement(self) -> str:
        """The SQL that creates or replaces the view."""
        comment = sql_string_literal(f"GGM share projection of {self.table} for recipient {self.recipient}; "
                                     "managed by ggm sharing unity-catalog apply")
        return f"CREATE OR REPLACE VIEW {quote_name(self.full_name)} COMMENT {comment} AS {self.definition}"


@dataclass
class ViewChange:
    """A view to create or replace before the shares are updated."""

    view: DesiredView
    action: str  # "create" or "replace"
    current_definition: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"view": self.view.full_name, "action": self.action, "recipient": self.view.recipient,
                "table": self.view.table, "definition": self.view.definition,
                "current_definition": self.current_definition}


@dataclass
class ShareChange:
    """What changes for one share."""

    share: str
    create: bool = False
    comment: str | None = None  # the new comment when it changes
    add: list[DesiredTable] = field(default_factory=list)
    update: list[DesiredTable] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)  # full names of tables/views to take out
    remove_types: dict[str, str] = field(default_factory=dict)  # lower-cased full name → data_object_type
    grant: list[str] = field(default_factory=list)  # recipients that get SELECT
    revoke: dict[str, list[str]] = field(default_factory=dict)  # recipient → privileges to take away

    @property
    def has_changes(self) -> bool:
        return bool(self.create or self.comment is not None or self.add or self.update or self.remove
                    or self.grant or self.revoke)

    def as_dict(self) -> dict[str, Any]:
        return {"share": self.share, "create": self.create, "comment": self.comment,
                "add": [t.as_dict() for t in self.add], "update": [t.as_dict() for t in self.update],
                "remove": self.remove, "grant_select": self.grant, "revoke": self.revoke}


@dataclass
class RecipientChange:
    """A recipient to create or update."""

    name: str
    action: str  # "create" or "update"
    authentication_type: str
    comment: str | None = None
    sharing_identifier: str | None = None
    expiration_time: int | None = None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "action": self.action,
                                "authentication_type": self.authentication_type}
        if self.comment is not None:
            body["comment"] = self.comment
        if self.sharing_identifier:
            body["sharing_identifier"] = self.sharing_identifier
        return body


@dataclass
class SharingPlan:
    """Changes that bring the metastore's shares, recipients and share grants in line with shares.yaml."""

    catalog: str | None
    recipients: list[RecipientChange]
    shares: list[ShareChange]
    conflicts: list[str]
    unmanaged_shares: list[str]
    views: list[ViewChange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    applied: bool = False
    created_recipients: list[dict[str, Any]] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return bool(self.recipients) or bool(self.views) or any(s.has_changes for s in self.shares)

    def as_dict(self) -> dict[str, Any]:
        return {"catalog": self.catalog, "applied": self.applied, "conflicts": self.conflicts,
                "warnings": self.warnings, "recipients": [r.as_dict() for r in self.recipients],
                "views": [v.as_dict() for v in self.views],
                "shares": [s.as_dict() for s in self.shares if s.has_changes],
                "in_sync": [s.share for s in self.shares if not s.has_changes],
                "unmanaged_shares": self.unmanaged_shares, "created_recipients": self.created_recipients}


def table_full_name(table: SharedTable, catalog: str | None) -> str:
    """The table's Unity Catalog name: ``catalog_name`` or ``<catalog>.<layer>.<table>`` from ``location``."""
    if table.catalog_name:
        parts = table.catalog_name.split(".")
        if len(parts) != 3 or not all(parts):
            raise UnityCatalogSharingError(f"table {table.qualified_name}: catalog_name {table.catalog_name!r} "
                                           "must be <catalog>.<schema>.<table>")
        full_name = table.catalog_name
    else:
        parts = PurePosixPath(table.location).parts
        if len(parts) != 2 or parts[0] not in ggm_config.LAYERS:
            raise UnityCatalogSharingError(f"table {table.qualified_name}: location {table.location!r} is not "
                                           "<layer>/<table>; set catalog_name in shares.yaml")
        if not catalog:
            raise UnityCatalogSharingError("no catalog: set GGM_TABLE_NAMESPACE or pass --catalog")
        full_name = f"{catalog}.{parts[0]}.{parts[1].lower()}"
    layer = full_name.split(".")[1].lower()
    if layer in NON_SHAREABLE_LAYERS:
        # Bronze/quarantine hold BSNs in clear and silver person-level rows: shares expose gold marts only.
        raise UnityCatalogSharingError(f"table {table.qualified_name} resolves to {full_name} in layer {layer!r}; "
                                       "only gold tables may be shared")
    return full_name


def desired_tables(share_tables: list[SharedTable], catalog: str | None) -> list[DesiredTable]:
    """The data objects a share should hold."""
    result = []
    for table in share_tables:
        for part in (table.schema, table.name):
            if not _UC_ALIAS_PART.match(part):
                raise UnityCatalogSharingError(f"table {table.qualified_name}: Unity Catalog share aliases allow only "
                                               f"letters, digits and '_', not {part!r}")
        result.append(DesiredTable(full_name=table_full_name(table, catalog), shared_as=f"{table.schema}.{table.name}",
                                   history_shared=table.history_shared, comment=table.comment))
    return result


# ---- SQL rendering: identifiers and literals are quoted, never interpolated as they come -------


def quote_identifier(name: str) -> str:
    """A backtick-quoted identifier; a backtick inside the name is doubled (Databricks SQL rules)."""
    if not isinstance(name, str) or not name or any(ord(ch) < 0x20 for ch in name):
        raise UnityCatalogSharingError(f"invalid identifier {name!r}")
    return "`" + name.replace("`", "``") + "`"


def quote_name(full_name: str) -> str:
    """``a.b.c`` as ```a`.`b`.`c```; the parts themselves never contain a dot (checked on load)."""
    return ".".join(quote_identifier(part) for part in full_name.split("."))


def sql_string_literal(value: str) -> str:
    """A single-quoted string literal with backslash and quote escaped (Spark SQL's escaping rules)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return "'" + escaped + "'"


def sql_literal(value: object) -> str:
    """Render a YAML scalar of a row filter as a typed SQL literal; anything else is refused."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnityCatalogSharingError(f"row filter value {value!r} has no SQL literal")
        return repr(value)
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP {sql_string_literal(value.isoformat(sep=' '))}"
    if isinstance(value, dt.date):
        return f"DATE {sql_string_literal(value.isoformat())}"
    if isinstance(value, str):
        return sql_string_literal(value)
    raise UnityCatalogSharingError(f"row filter value {value!r} ({type(value).__name__}) has no SQL literal")


def render_condition(condition: RowCondition) -> str:
    """One structured row-filter condition as SQL with the embedded path's semantics.

    Those follow Arrow's ``is_in`` there: ``equals: null`` and a null in an ``in`` list match NULL
    rows, and ``not_in`` never keeps NULL rows; plain SQL ``IN``/``NOT IN`` would differ on NULLs.
    """
    column = quote_identifier(condition.column)
    if condition.op == "not_null":
        return f"{column} IS NOT NULL"
    if condition.op == "equals":
        return f"{column} IS NULL" if condition.value is None else f"{column} = {sql_literal(condition.value)}"
    values = [v for v in condition.value if v is not None]
    has_null = len(values) != len(condition.value)
    listed = ", ".join(sql_literal(v) for v in values)
    if condition.op == "in":
        if not values:
            return f"{column} IS NULL" if has_null else "FALSE"
        return f"({column} IN ({listed}) OR {column} IS NULL)" if has_null else f"{column} IN ({listed})"
    if condition.op == "not_in":
        return f"{column} IS NOT NULL AND {column} NOT IN ({listed})" if values else f"{column} IS NOT NULL"
    raise UnityCatalogSharingError(f"unknown row filter operator {condition.op!r}")


def view_definition(source_full_name: str, projection: Projection, where: str) -> str:
    """The SELECT of a per-recipient view: granted columns minus pseudonym columns, rows filtered."""
    pseudonyms = {c.lower() for c in projection.pseudonym_columns}
    if projection.columns is None:
        select = "*"
        if projection.pseudonym_columns:
            select += " EXCEPT (" + ", ".join(quote_identifier(c) for c in projection.pseudonym_columns) + ")"
    else:
        kept = [c for c in projection.columns if c.lower() not in pseudonyms]
        undeclared = [c for c in kept if any(hint in c.lower() for hint in _PERSON_ID_HINTS)]
        if undeclared:
            # Same rule as the embedded projections: a forgotten declaration must stop, not leak.
            raise UnityCatalogSharingError(f"{where}: columns {undeclared} look like person identifiers; declare "
                                           "them in pseudonym_columns or leave them out")
        if not kept:
            raise UnityCatalogSharingError(f"{where}: no column left to share once pseudonym columns are left out")
        select = ", ".join(quote_identifier(c) for c in kept)
    sql = f"SELECT {select} FROM {quote_name(source_full_name)}"
    if projection.row_filter:
        sql += " WHERE " + " AND ".join(render_condition(c) for c in projection.row_filter)
    return sql


def _normalised_sql(sql: str | None) -> str:
    return " ".join((sql or "").split())


# ---- desired state: base shares, per-recipient shares and views -------------------------------


def uc_name_part(name: str) -> str:
    """A name part safe for Unity Catalog without quoting: lower case, ``[a-z0-9_]`` only."""
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


def derived_share_name(share: str, recipient: str) -> str:
    """The per-recipient share: ``<share>__<recipient>`` (sanitised)."""
    return f"{uc_name_part(share)}{DERIVED_SEPARATOR}{uc_name_part(recipient)}"


def view_full_name(catalog: str, recipient: str, table: SharedTable) -> str:
    """``<catalog>.shares_<recipient>.<share>__<schema>__<table>`` (sanitised)."""
    view = DERIVED_SEPARATOR.join(uc_name_part(p) for p in (table.share, table.schema, table.name))
    return f"{catalog}.{VIEW_SCHEMA_PREFIX}{uc_name_part(recipient)}.{view}"


def narrows(projection: Projection) -> bool:
    """Whether a projection differs from the whole gold table (then the recipient needs a view)."""
    return projection.columns is not None or bool(projection.row_filter) or bool(projection.pseudonym_columns)


@dataclass
class DesiredShare:
    """One share as it should be in the metastore."""

    name: str
    comment: str | None
    tables: list[DesiredTable]
    grantees: list[str]
    derived_from: str | None = None  # the shares.yaml share of a per-recipient share

    @property
    def optional(self) -> bool:
        """A base share nobody reads whole is not created (no gold table sits in an unread share)."""
        return self.derived_from is None and not self.grantees


@dataclass
class DesiredState:
    shares: list[DesiredShare]
    views: list[DesiredView]
    warnings: list[str]


def desired_state(config: SharesConfig, catalog: str | None) -> DesiredState:
    """What shares.yaml asks of the metastore: base shares, per-recipient shares and their views.

    A recipient reads a share's base object (the gold tables) only when none of its projections of
    that share's tables narrows anything; otherwise it gets its own share with views.
    """
    shares: list[DesiredShare] = []
    views: list[DesiredView] = []
    warnings: list[str] = []
    names: dict[str, str] = {s.name.lower(): s.name for s in config.shares}
    for share in config.shares:
        tables = share.all_tables()
        base_tables = desired_tables(tables, catalog)
        base = DesiredShare(name=share.name, comment=share.comment, tables=base_tables, grantees=[])
        shares.append(base)
        derived: list[DesiredShare] = []
        for recipient in config.recipients:
            if not recipient.may_read(share.name):
                continue
            projections = [recipient.projection(t) for t in tables]
            if not any(narrows(p) for p in projections):
                base.grantees.append(recipient.name)
                continue
            name = derived_share_name(share.name, recipient.name)
            if name.lower() in names:
                raise UnityCatalogSharingError(f"per-recipient share {name!r} of {recipient.name!r} collides with "
                                               f"share {names[name.lower()]!r}; rename one of them")
            names[name.lower()] = name
            objects = []
            for table, gold, projection in zip(tables, base_tables, projections):
                if not narrows(projection):
                    objects.append(gold)
                    continue
                where = f"recipient {recipient.name}, table {table.qualified_name}"
                view = DesiredView(recipient=recipient.name, table=table.qualified_name,
                                   full_name=view_full_name(gold.full_name.split(".")[0], recipient.name, table),
                                   source=gold.full_name, definition=view_definition(gold.full_name, projection, where))
                if any(v.full_name == view.full_name for v in views):
                    raise UnityCatalogSharingError(f"{where}: view name {view.full_name} is used twice after "
                                                   "sanitising names")
                views.append(view)
                objects.append(DesiredTable(full_name=view.full_name, shared_as=gold.shared_as, history_shared=False,
                                            comment=table.comment, data_object_type="VIEW"))
                if projection.pseudonym_columns:
                    warnings.append(f"{where}: pseudonym columns {list(projection.pseudonym_columns)} are left out of "
                                    "the view; re-keying per recipient needs the sharing secret, which a view cannot "
                                    "hold (serve them through the embedded server)")
                if table.history_shared:
                    warnings.append(f"{where}: history is not shared through a view (no time travel or change feed)")
            comment = f"{share.comment or share.name} (for recipient {recipient.name})"
            derived.append(DesiredShare(name=name, comment=comment, tables=objects, grantees=[recipient.name],
                                        derived_from=share.name))
        shares.extend(derived)
    return DesiredState(shares=shares, views=views, warnings=warnings)


def _describe(exc: Exception) -> str:
    code = getattr(exc, "error_code", None)
    return f"{code}: {exc}" if code else f"{exc.__class__.__name__}: {exc}"


def _share_grants(client, share: str) -> dict[str, set[str]]:
    grants: dict[str, set[str]] = {}
    page_token = None
    while True:
        response = client.shares.share_permissions(share, max_results=0, page_token=page_token)
        for assignment in response.privilege_assignments or []:
            if assignment.principal:
                grants.setdefault(assignment.principal, set()).update(
                    getattr(p, "value", p) for p in assignment.privileges or [])
        page_token = response.next_page_token
        if not page_token:
            return grants


def _recipient_change(recipient: Recipient, current, conflicts: list[str]) -> RecipientChange | None:
    wanted_auth = "DATABRICKS" if recipient.sharing_identifier else "TOKEN"
    if current is None:
        lifetime = recipient.token_lifetime_days or DEFAULT_TOKEN_LIFETIME_DAYS
        return RecipientChange(name=recipient.name, action="create", authentication_type=wanted_auth,
                               comment=recipient.comment, sharing_identifier=recipient.sharing_identifier,
                               expiration_time=int(time.time() * 1000) + lifetime * _DAY_MS
                               if wanted_auth == "TOKEN" else None)
    current_auth = current.authentication_type.value if current.authentication_type else None
    if current_auth != wanted_auth:
        # UC cannot change a recipient's authentication type; recreating it would cut the partner off.
        conflicts.append(f"recipient {recipient.name!r} exists with authentication {current_auth}, shares.yaml "
                         f"asks for {wanted_auth}; drop and recreate it deliberately")
        return None
    if wanted_auth == "DATABRICKS" and current.data_recipient_global_metastore_id != recipient.sharing_identifier:
        conflicts.append(f"recipient {recipient.name!r} is bound to metastore "
                         f"{current.data_recipient_global_metastore_id}, shares.yaml says {recipient.sharing_identifier}")
        return None
    if recipient.comment is not None and current.comment != recipient.comment:
        return RecipientChange(name=recipient.name, action="update", authentication_type=wanted_auth,
                               comment=recipient.comment)
    return None


def _share_change(client, desired: DesiredShare) -> ShareChange | None:
    """Compare one wanted share with the metastore (objects and SELECT grants); None: nothing to manage."""
    from databricks.sdk.errors import NotFound

    try:
        current_share = client.shares.get(desired.name, include_shared_data=True)
    except NotFound:
        current_share = None
    if current_share is None and desired.optional:
        return None
    if current_share is None:
        return ShareChange(share=desired.name, create=True, comment=desired.comment, add=list(desired.tables),
                           grant=sorted(desired.grantees))
    change = ShareChange(share=desired.name)
    if desired.comment is not None and current_share.comment != desired.comment:
        change.comment = desired.comment
    current_objects = {
        o.name.lower(): o for o in current_share.objects or []
        if o.name and (o.data_object_type is None or o.data_object_type.value in ("TABLE", "VIEW"))
    }
    for table in desired.tables:
        existing = current_objects.pop(table.full_name.lower(), None)
        existing_type = existing.data_object_type.value if existing is not None and existing.data_object_type \
            else "TABLE"
        if existing is None:
            change.add.append(table)
        elif (existing.shared_as or "").lower() != table.shared_as.lower() or existing_type != table.data_object_type:
            # The alias is the recipient-facing name; UC changes it by re-adding the object.
            change.remove.append(existing.name)
            change.remove_types[existing.name.lower()] = existing_type
            change.add.append(table)
        else:
            # Views have no history sharing, whatever status the workspace reports for them.
            status = (existing.history_data_sharing_status.value if existing.history_data_sharing_status
                      else "DISABLED") if table.data_object_type == "TABLE" else None
            if status != table.history_status or (table.comment is not None and existing.comment != table.comment):
                change.update.append(table)
    for name, existing in current_objects.items():
        change.remove.append(existing.name)
        change.remove_types[name] = existing.data_object_type.value if existing.data_object_type else "TABLE"
    grants = _share_grants(client, desired.name)
    change.grant = [r for r in sorted(desired.grantees) if "SELECT" not in grants.get(r, set())]
    change.revoke = {principal: sorted(privileges) for principal, privileges in sorted(grants.items())
                     if principal not in desired.grantees and privileges}
    return change


def _view_change(client, view: DesiredView) -> ViewChange | None:
    """Create the view when missing, replace it when its definition differs; None when in sync."""
    from databricks.sdk.errors import NotFound

    try:
        current = client.tables.get(view.full_name)
    except NotFound:
        return ViewChange(view=view, action="create")
    current_type = current.table_type.value if current.table_type else None
    if current_type == "VIEW" and _normalised_sql(current.view_definition) == _normalised_sql(view.definition):
        return None
    if current_type != "VIEW":
        raise UnityCatalogSharingError(f"{view.full_name} exists as a {current_type} table, not as a view; "
                                       "it is not replaced automatically")
    return ViewChange(view=view, action="replace", current_definition=current.view_definition)


def plan_unity_catalog(client, shares_config: SharesConfig | Path | str | None = None,
                       catalog: str | None = None) -> SharingPlan:
    """Compare the metastore with shares.yaml; reads only."""
    from databricks.sdk.errors import DatabricksError, NotFound

    config = shares_config if isinstance(shares_config, SharesConfig) else load_shares_config(shares_config)
    catalog = catalog or table_namespace()
    desired = desired_state(config, catalog)
    conflicts: list[str] = []
    step = "listing shares"
    try:
        recipient_changes = []
        for recipient in config.recipients:
            step = f"reading recipient {recipient.name}"
            try:
                current = client.recipients.get(recipient.name)
            except NotFound:
                current = None
            change = _recipient_change(recipient, current, conflicts)
            if change is not None:
                recipient_changes.append(change)

        view_changes = []
        for view in desired.views:
            step = f"reading view {view.full_name}"
            change = _view_change(client, view)
            if change is not None:
                view_changes.append(change)

        share_changes = []
        for share in desired.shares:
            step = f"reading share {share.name}"
            change = _share_change(client, share)
            if change is not None:
                share_changes.append(change)

        step = "listing shares"
        wanted = {s.name.lower() for s in desired.shares}
        derived_prefixes = tuple(f"{uc_name_part(s.name)}{DERIVED_SEPARATOR}" for s in config.shares)
        unmanaged = []
        for existing in client.shares.list_shares():
            if not existing.name or existing.name.lower() in wanted:
                continue
            if existing.name.lower().startswith(derived_prefixes):
                # A per-recipient share no longer wanted (recipient withdrawn or no longer narrowed): empty it
                # and revoke every grant, so nobody keeps reading through it; the share itself stays.
                step = f"reading share {existing.name}"
                share_changes.append(_share_change(client, DesiredShare(name=existing.name, comment=None,
                                                                        tables=[], grantees=[])))
            else:
                unmanaged.append(existing.name)
    except DatabricksError as exc:
        raise UnityCatalogSharingError(f"{step} failed: {_describe(exc)}") from exc
    return SharingPlan(catalog=catalog, recipients=recipient_changes, shares=share_changes, conflicts=conflicts,
                       unmanaged_shares=sorted(unmanaged), views=view_changes, warnings=desired.warnings)


def _object_update(action, table: DesiredTable | None = None, name: str | None = None, object_type: str = "TABLE"):
    from databricks.sdk.service.sharing import (
        SharedDataObject,
        SharedDataObjectDataObjectType,
        SharedDataObjectHistoryDataSharingStatus,
        SharedDataObjectUpdate,
    )

    if table is None:
        data_object = SharedDataObject(name=name, data_object_type=SharedDataObjectDataObjectType(object_type))
    else:
        history = table.history_status
        data_object = SharedDataObject(
            name=table.full_name, data_object_type=SharedDataObjectDataObjectType(table.data_object_type),
            shared_as=table.shared_as, comment=table.comment,
            history_data_sharing_status=SharedDataObjectHistoryDataSharingStatus(history) if history else None)
    return SharedDataObjectUpdate(action=action, data_object=data_object)


def execute_sql(client, statement: str, warehouse_id: str) -> None:
    """Run one statement on the SQL warehouse and wait for it; raises when it does not succeed."""
    from databricks.sdk.service.sql import ExecuteStatementRequestOnWaitTimeout, StatementState

    response = client.statement_execution.execute_statement(
        statement=statement, warehouse_id=warehouse_id, wait_timeout="30s",
        on_wait_timeout=ExecuteStatementRequestOnWaitTimeout.CONTINUE)
    deadline = time.monotonic() + _STATEMENT_DEADLINE_SECONDS
    # A starting warehouse answers PENDING after the wait; DDL itself is quick once it runs.
    while response.status and response.status.state in (StatementState.PENDING, StatementState.RUNNING):
        if time.monotonic() > deadline:
            client.statement_execution.cancel_execution(response.statement_id)
            raise UnityCatalogSharingError(f"statement {response.statement_id} did not finish within "
                                           f"{_STATEMENT_DEADLINE_SECONDS} s; cancelled")
        time.sleep(2)
        response = client.statement_execution.get_statement(response.statement_id)
    state = response.status.state if response.status else None
    if state != StatementState.SUCCEEDED:
        error = response.status.error if response.status else None
        detail = f"{error.error_code.value if error and error.error_code else ''} {error.message if error else ''}"
        raise UnityCatalogSharingError(f"statement ended {state.value if state else 'without a state'}: "
                                       f"{detail.strip()}")


def apply_unity_catalog(client, shares_config: SharesConfig | Path | str | None = None,
                        catalog: str | None = None, *, dry_run: bool = False,
                        warehouse_id: str | None = None) -> SharingPlan:
    """Apply shares.yaml to the metastore: recipients, per-recipient views, shares and their objects, grants.

    Views run on the SQL warehouse ``warehouse_id`` (default: env ``GGM_DATABRICKS_WAREHOUSE_ID``),
    needed only when a view changes. Refuses to start when the plan has conflicts. Raises
    :class:`UnityCatalogSharingError` naming the failing step and the workspace's error code;
    ``applied`` lists the steps that succeeded.
    """
    from databricks.sdk.errors import DatabricksError
    from databricks.sdk.service.sharing import AuthenticationType, PermissionsChange, SharedDataObjectUpdateAction

    plan = plan_unity_catalog(client, shares_config, catalog)
    if dry_run:
        return plan
    if plan.conflicts:
        raise UnityCatalogSharingError("shares.yaml conflicts with the metastore: " + "; ".join(plan.conflicts))
    warehouse_id = warehouse_id or os.environ.get(WAREHOUSE_ID_ENV)
    if plan.views and not warehouse_id:
        raise UnityCatalogSharingError(f"{len(plan.views)} per-recipient view(s) to create: set {WAREHOUSE_ID_ENV} "
                                       "to the SQL warehouse that runs them")
    applied: list[str] = []
    schemas_done: set[str] = set()
    step = ""
    try:
        for change in plan.recipients:
            step = f"{change.action} recipient {change.name}"
            if change.action == "create":
                created = client.recipients.create(
                    change.name, AuthenticationType(change.authentication_type), comment=change.comment,
                    data_recipient_global_metastore_id=change.sharing_identifier,
                    expiration_time=change.expiration_time)
                activation_url = created.activation_url or next(
                    (t.activation_url for t in created.tokens or [] if t.activation_url), None)
                plan.created_recipients.append({"name": change.name, "authentication_type": change.authentication_type,
                                                "activation_url": activation_url})
            else:
                client.recipients.update(change.name, comment=change.comment)
            applied.append(step)
        for view_change in plan.views:
            # Views before shares: a share can only take a view that exists.
            step = f"{view_change.action} view {view_change.view.full_name}"
            statements = [view_change.view.view_statement()]
            if view_change.view.schema_full_name not in schemas_done:
                statements.insert(0, view_change.view.schema_statement())
            for statement in statements:
                try:
                    execute_sql(client, statement, warehouse_id)
                except UnityCatalogSharingError as exc:
                    raise UnityCatalogSharingError(f"{step} failed: {exc} ({len(applied)} step(s) applied before)",
                                                   applied) from exc
            schemas_done.add(view_change.view.schema_full_name)
            applied.append(step)
        for change in plan.shares:
            if change.create:
                step = f"create share {change.share}"
                client.shares.create(change.share, comment=change.comment)
                applied.append(step)
            updates = [_object_update(SharedDataObjectUpdateAction.REMOVE, name=n,
                                      object_type=change.remove_types.get(n.lower(), "TABLE")) for n in change.remove]
            updates += [_object_update(SharedDataObjectUpdateAction.ADD, t) for t in change.add]
            updates += [_object_update(SharedDataObjectUpdateAction.UPDATE, t) for t in change.update]
            comment = change.comment if not change.create else None
            if updates or comment is not None:
                step = f"update share {change.share}"
                client.shares.update(change.share, comment=comment, updates=updates or None)
                applied.append(step)
            permission_changes = [PermissionsChange(principal=r, add=["SELECT"]) for r in change.grant]
            permission_changes += [PermissionsChange(principal=p, remove=privileges)
                                   for p, privileges in change.revoke.items()]
            if permission_changes:
                step = f"update permissions of share {change.share}"
                client.shares.update_permissions(change.share, changes=permission_changes)
                applied.append(step)
    except DatabricksError as exc:
        raise UnityCatalogSharingError(f"{step} failed: {_describe(exc)} ({len(applied)} step(s) applied before)",
                                       applied) from exc
    plan.applied = True
    return plan
