"""Production path on Databricks: ``config/shares.yaml`` drives Unity Catalog shares, recipients and grants.

The same file that configures the embedded Delta Sharing server (:mod:`sharing_server.shares_config`)
is applied to a Unity Catalog metastore through the Databricks SDK, so partners see the same
``<share>.<schema>.<table>`` names on either server:

* every share becomes a UC share (``w.shares.create``); each configured table is a data object
  ``<catalog>.<layer>.<table>`` (derived from ``location``, e.g. ``gold/inwoners_per_buurt`` →
  ``gemeente.gold.inwoners_per_buurt``, or the table's optional ``catalog_name``) shared as
  ``<schema>.<table>`` of shares.yaml; ``history_shared`` maps to ``history_data_sharing_status``.
  Tables are added, updated and removed with ``w.shares.update(updates=[SharedDataObjectUpdate…])``;
* every recipient becomes a UC recipient (``w.recipients.create``): ``TOKEN`` authentication (open
  sharing, an activation link for the partner) or, when the recipient has a ``sharing_identifier``,
  ``DATABRICKS`` (Databricks-to-Databricks);
* ``w.shares.update_permissions`` grants ``SELECT`` on each share to exactly the recipients
  entitled to it in shares.yaml and revokes it from anyone else.

Only gold tables may be shared: a table that resolves to bronze, quarantine or silver is refused,
since those hold clear or person-level data. Shares and recipients that exist in the metastore but
not in the file are reported, never deleted. :func:`plan_unity_catalog` only reads;
:func:`apply_unity_catalog` applies the plan and is idempotent (a second run sends no change).
Recipients added with ``ggm sharing recipient add`` live in the embedded server's state only.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ggm_lakehouse import config as ggm_config
from ggm_lakehouse.lake import table_namespace
from sharing_server.shares_config import (
    DEFAULT_TOKEN_LIFETIME_DAYS,
    Recipient,
    SharedTable,
    SharesConfig,
    load_shares_config,
)

#: Lake layers whose tables must never leave the platform through a share.
NON_SHAREABLE_LAYERS = tuple(layer for layer in ggm_config.LAYERS if layer != "gold")
_UC_ALIAS_PART = re.compile(r"^[A-Za-z0-9_]+$")
_DAY_MS = 24 * 3600 * 1000


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

    @property
    def history_status(self) -> str:
        return "ENABLED" if self.history_shared else "DISABLED"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.full_name, "shared_as": self.shared_as, "history_data_sharing_status": self.history_status}


@dataclass
class ShareChange:
    """What changes for one share."""

    share: str
    create: bool = False
    comment: str | None = None  # the new comment when it changes
    add: list[DesiredTable] = field(default_factory=list)
    update: list[DesiredTable] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)  # full names of tables to take out
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
    applied: bool = False
    created_recipients: list[dict[str, Any]] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        return bool(self.recipients) or any(s.has_changes for s in self.shares)

    def as_dict(self) -> dict[str, Any]:
        return {"catalog": self.catalog, "applied": self.applied, "conflicts": self.conflicts,
                "recipients": [r.as_dict() for r in self.recipients],
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


def plan_unity_catalog(client, shares_config: SharesConfig | Path | str | None = None,
                       catalog: str | None = None) -> SharingPlan:
    """Compare the metastore with shares.yaml; reads only."""
    from databricks.sdk.errors import DatabricksError, NotFound

    config = shares_config if isinstance(shares_config, SharesConfig) else load_shares_config(shares_config)
    catalog = catalog or table_namespace()
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

        share_changes = []
        for share in config.shares:
            wanted_tables = desired_tables(share.all_tables(), catalog)
            wanted_grantees = sorted(r.name for r in config.recipients if r.may_read(share.name))
            step = f"reading share {share.name}"
            try:
                current_share = client.shares.get(share.name, include_shared_data=True)
            except NotFound:
                current_share = None
            if current_share is None:
                share_changes.append(ShareChange(share=share.name, create=True, comment=share.comment,
                                                 add=wanted_tables, grant=wanted_grantees))
                continue
            change = ShareChange(share=share.name)
            if share.comment is not None and current_share.comment != share.comment:
                change.comment = share.comment
            current_objects = {
                o.name.lower(): o for o in current_share.objects or []
                if o.name and (o.data_object_type is None or o.data_object_type.value == "TABLE")
            }
            for table in wanted_tables:
                existing = current_objects.pop(table.full_name.lower(), None)
                if existing is None:
                    change.add.append(table)
                elif (existing.shared_as or "").lower() != table.shared_as.lower():
                    # The alias is the recipient-facing name; UC changes it by re-adding the object.
                    change.remove.append(existing.name)
                    change.add.append(table)
                else:
                    status = existing.history_data_sharing_status.value if existing.history_data_sharing_status \
                        else "DISABLED"
                    if status != table.history_status or (table.comment is not None and existing.comment != table.comment):
                        change.update.append(table)
            change.remove.extend(o.name for o in current_objects.values())
            step = f"reading permissions of share {share.name}"
            grants = _share_grants(client, share.name)
            change.grant = [r for r in wanted_grantees if "SELECT" not in grants.get(r, set())]
            change.revoke = {principal: sorted(privileges) for principal, privileges in sorted(grants.items())
                             if principal not in wanted_grantees and privileges}
            share_changes.append(change)

        step = "listing shares"
        configured = {s.name.lower() for s in config.shares}
        unmanaged = sorted(s.name for s in client.shares.list_shares() if s.name and s.name.lower() not in configured)
    except DatabricksError as exc:
        raise UnityCatalogSharingError(f"{step} failed: {_describe(exc)}") from exc
    return SharingPlan(catalog=catalog, recipients=recipient_changes, shares=share_changes, conflicts=conflicts,
                       unmanaged_shares=unmanaged)


def _object_update(action, table: DesiredTable | None = None, name: str | None = None):
    from databricks.sdk.service.sharing import (
        SharedDataObject,
        SharedDataObjectDataObjectType,
        SharedDataObjectHistoryDataSharingStatus,
        SharedDataObjectUpdate,
    )

    if table is None:
        data_object = SharedDataObject(name=name, data_object_type=SharedDataObjectDataObjectType.TABLE)
    else:
        data_object = SharedDataObject(
            name=table.full_name, data_object_type=SharedDataObjectDataObjectType.TABLE, shared_as=table.shared_as,
            history_data_sharing_status=SharedDataObjectHistoryDataSharingStatus(table.history_status),
            comment=table.comment)
    return SharedDataObjectUpdate(action=action, data_object=data_object)


def apply_unity_catalog(client, shares_config: SharesConfig | Path | str | None = None,
                        catalog: str | None = None, *, dry_run: bool = False) -> SharingPlan:
    """Apply shares.yaml to the metastore: recipients, then shares and their tables, then share grants.

    Refuses to start when the plan has conflicts. Raises :class:`UnityCatalogSharingError` naming the
    failing step and the workspace's error code; ``applied`` lists the steps that succeeded.
    """
    from databricks.sdk.errors import DatabricksError
    from databricks.sdk.service.sharing import AuthenticationType, PermissionsChange, SharedDataObjectUpdateAction

    plan = plan_unity_catalog(client, shares_config, catalog)
    if dry_run:
        return plan
    if plan.conflicts:
        raise UnityCatalogSharingError("shares.yaml conflicts with the metastore: " + "; ".join(plan.conflicts))
    applied: list[str] = []
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
        for change in plan.shares:
            if change.create:
                step = f"create share {change.share}"
                client.shares.create(change.share, comment=change.comment)
                applied.append(step)
            updates = [_object_update(SharedDataObjectUpdateAction.REMOVE, name=n) for n in change.remove]
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
