"""Access roles per lake layer, from ``config/access.yaml`` to Unity Catalog grants or folder permissions.

The role model (``docs/access.md``):

========== ====================== ===========================================================
role       holder (configurable)  may use
========== ====================== ===========================================================
pipeline   ``ggm-pipeline``       every layer read/write; the jobs' service principal
engineers  ``ggm-engineers``      bronze and quarantine (clear data), read silver and gold
analysts   ``ggm-analisten``      silver (pseudonymised BSNs only) and gold, read only
policy     ``ggm-beleid``         gold, read only
partners   recipients of          the shares of ``config/shares.yaml`` only, never a schema
           ``shares.yaml``
========== ====================== ===========================================================

Quarantine holds rejected records in clear, so it always carries exactly bronze's grants.

**Databricks** (``GGM_TABLE_NAMESPACE=<catalog>``, tables ``<catalog>.<layer>.<table>``): the roles
are Unity Catalog privileges on the catalog and the schemas ``<catalog>.bronze|silver|gold|quarantine``.
:func:`plan_grants` reads the current grants (``w.grants.get``) and :func:`apply_grants` adds what is
missing and revokes what the file no longer grants (``w.grants.update`` with ``PermissionsChange``),
one PATCH per securable, so a second run changes nothing. The workspace comes from Airflow connection
``ggm_databricks`` (host + token as password), the same connection the Databricks Spark target uses.
The partners role is applied by :mod:`sharing_server.unity_catalog` (shares, recipients, share grants).

**Embedded default** (Delta tables as folders ``<lake>/<layer>/<table>``): the same roles become POSIX
permissions on the layer folders. Each layer folder belongs to the group of one role
(``local.folder_roles``), carries the setgid bit so new tables inherit that group, gives the group
``rwx`` when the role has MODIFY on the layer (``r-x`` otherwise) and nothing to others; bronze and
quarantine therefore are ``2770 ggm-engineers``, silver ``2750 ggm-analisten``, gold ``2750 ggm-beleid``.
The owner is the account the pipeline runs as. POSIX has one group per folder, so members of other
roles that read a layer join its group (the plan lists which). :func:`apply_local` sets this only
where the group exists and reports what it would do otherwise. Partners never get a path: the Delta
Sharing server (``sharing_server``) is their only way in.
"""
from __future__ import annotations

import contextlib
import grp
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ggm_lakehouse import config as ggm_config
from ggm_lakehouse.lake import table_namespace
from ggm_lakehouse.secrets import MissingSecretError, get_connection
from ggm_lakehouse.yaml_schema import DIALECT, validate

#: Airflow connection of the Databricks workspace (shared with ``ggm_lakehouse.spark_target``).
DATABRICKS_CONN_ID = "ggm_databricks"
#: Layers a role is granted on; quarantine is not configurable, it mirrors bronze.
GRANTED_LAYERS = ("bronze", "silver", "gold")
#: Layers that hold source data in clear.
CLEAR_DATA_LAYERS = ("bronze", "quarantine")

_SCHEMA_PRIVILEGES = (
    "ALL_PRIVILEGES", "APPLY_TAG", "CREATE_FUNCTION", "CREATE_MATERIALIZED_VIEW", "CREATE_MODEL",
    "CREATE_TABLE", "CREATE_VOLUME", "EXECUTE", "EXTERNAL_USE_SCHEMA", "MANAGE", "MODIFY", "READ_VOLUME",
    "REFRESH", "SELECT", "USE_SCHEMA", "WRITE_VOLUME",
)
#: Unity Catalog privileges that apply to a catalog and to a schema.
CATALOG_PRIVILEGES = tuple(sorted({*_SCHEMA_PRIVILEGES, "BROWSE", "CREATE_SCHEMA", "USE_CATALOG"}))
SCHEMA_PRIVILEGES = tuple(sorted(_SCHEMA_PRIVILEGES))

_NAME = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[^\s/\\]+$",
         "patternErrorMessage": "must be a role name without spaces or slashes"}
_GROUP = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^\S(.*\S)?$",
          "patternErrorMessage": "must be a group name without leading or trailing spaces"}


def _privilege_list(privileges: tuple[str, ...], title: str) -> dict[str, Any]:
    return {"type": "array", "items": {"enum": list(privileges)}, "uniqueItems": True, "title": title}


#: JSON schema of ``config/access.yaml``; published as docs/schemas/access.schema.json.
ACCESS_CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": DIALECT,
    "title": "Access roles per lake layer",
    "description": "Which group may use which layer: config/access.yaml, applied as Unity Catalog grants or as the "
                   "group and mode of the layer folders (docs/access.md).",
    "type": "object",
    "additionalProperties": False,
    "required": ["roles"],
    "properties": {
        "catalog": {"type": ["string", "null"], "pattern": r"^[A-Za-z0-9_\-]+$", "title": "Unity Catalog catalog",
                    "description": "null: GGM_TABLE_NAMESPACE (or --catalog).",
                    "patternErrorMessage": "must be a catalog name (letters, digits, _ and -)"},
        "exclusive": {"type": "boolean", "title": "Revoke the grants of every principal not named here"},
        "retired_groups": {"type": "array", "items": _GROUP, "uniqueItems": True,
                           "title": "Groups that once had a role: all their grants on the lake are revoked"},
        "roles": {
            "type": "object",
            "minProperties": 1,
            "title": "The roles, by name",
            "propertyNames": {"pattern": r"^[a-z][a-z0-9_\-]*$",
                              "patternErrorMessage": "must be a lower-case role name (a-z, 0-9, _ and -)"},
            "additionalProperties": {
                "oneOf": [
                    {
                        "title": "a role held by a group (group, grants)",
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["group", "grants"],
                        "properties": {
                            "description": {"type": "string", "title": "Who holds the role and why"},
                            "group": {**_GROUP, "title": "The group (principal) that holds the role"},
                            "clear_data": {"type": "boolean", "title": "The role sees source data in clear",
                                           "description": "Required (true) for a grant on bronze, and so quarantine."},
                            "grants": {
                                "type": "object",
                                "additionalProperties": False,
                                "title": "Privileges per securable; quarantine always gets bronze's",
                                "properties": {
                                    "catalog": _privilege_list(CATALOG_PRIVILEGES, "Privileges on the catalog"),
                                    **{layer: _privilege_list(SCHEMA_PRIVILEGES, f"Privileges on the {layer} schema")
                                       for layer in GRANTED_LAYERS},
                                },
                            },
                        },
                    },
                    {
                        "title": "the partners' role (recipients_from: shares)",
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["recipients_from"],
                        "properties": {"description": {"type": "string", "title": "Who holds the role and why"},
                                       "recipients_from": {"const": "shares",
                                                           "title": "Held by the recipients of config/shares.yaml"}},
                    },
                ]
            },
        },
        "local": {
            "type": "object",
            "additionalProperties": False,
            "title": "The embedded default (layer folders instead of Unity Catalog)",
            "properties": {
                "folder_roles": {
                    "type": "object",
                    "additionalProperties": False,
                    "title": "The role whose group owns each layer folder",
                    "properties": {layer: _NAME for layer in GRANTED_LAYERS},
                }
            },
        },
    },
}


class AccessConfigError(ValueError):
    """``access.yaml`` is missing or invalid."""


class AccessApplyError(RuntimeError):
    """The workspace refused a change; ``applied`` lists the changes made before the failure."""

    def __init__(self, message: str, applied: list["GrantChange"] | None = None):
        super().__init__(message)
        self.applied = applied or []


@dataclass(frozen=True)
class Role:
    """One access role: a group and its privileges per securable (``catalog`` or a layer)."""

    name: str
    group: str | None
    description: str | None = None
    clear_data: bool = False
    grants: dict[str, tuple[str, ...]] = field(default_factory=dict)
    recipients_from: str | None = None

    @property
    def is_partner_role(self) -> bool:
        """True for the role held by sharing recipients rather than by a group."""
        return self.recipients_from is not None

    def privileges_on(self, layer: str) -> tuple[str, ...]:
        """Privileges on a layer's schema; quarantine gets bronze's."""
        return self.grants.get("bronze" if layer == "quarantine" else layer, ())


@dataclass(frozen=True)
class AccessConfig:
    """The validated access configuration."""

    roles: tuple[Role, ...]
    catalog: str | None = None
    exclusive: bool = False
    retired_groups: tuple[str, ...] = ()
    folder_roles: dict[str, str] = field(default_factory=dict)
    source: Path | None = field(default=None, compare=False)

    def role(self, name: str) -> Role | None:
        return next((r for r in self.roles if r.name == name), None)

    @property
    def group_roles(self) -> tuple[Role, ...]:
        return tuple(r for r in self.roles if not r.is_partner_role)

    @property
    def managed_principals(self) -> frozenset[str]:
        """The principals whose grants this configuration owns."""
        return frozenset({r.group for r in self.group_roles if r.group} | set(self.retired_groups))


def default_access_config_path() -> Path:
    """``GGM_ACCESS_CONFIG`` or ``<project root>/config/access.yaml``."""
    override = os.environ.get("GGM_ACCESS_CONFIG")
    return Path(override) if override else ggm_config.project_root() / "config" / "access.yaml"


def parse_access_config(data: object, source: Path | None = None) -> AccessConfig:
    """Validate the YAML document ``data`` (JSON schema, then cross-field rules) into an :class:`AccessConfig`."""
    where = f"access config {source}" if source else "access config"
    doc = data if data is not None else {}
    validate(doc, ACCESS_CONFIG_SCHEMA, source=source, what="access config", error=AccessConfigError)

    roles: list[Role] = []
    groups_seen: dict[str, str] = {}
    for name, raw in doc["roles"].items():
        if "recipients_from" in raw:
            roles.append(Role(name=name, group=None, description=raw.get("description"),
                              recipients_from=raw["recipients_from"]))
            continue
        grants = {scope: tuple(privileges) for scope, privileges in raw["grants"].items() if privileges}
        role = Role(name=name, group=raw["group"], description=raw.get("description"),
                    clear_data=bool(raw.get("clear_data", False)), grants=grants)
        if role.group in groups_seen:
            raise AccessConfigError(f"{where}: roles {groups_seen[role.group]!r} and {name!r} share group {role.group!r}")
        groups_seen[role.group] = name
        if grants.get("bronze") and not role.clear_data:
            # Bronze and quarantine hold BSNs in clear: granting them must be an explicit decision.
            raise AccessConfigError(f"{where}: role {name!r} is granted bronze (clear data, and quarantine with it) "
                                    "but does not declare clear_data: true")
        for layer in GRANTED_LAYERS:
            if grants.get(layer) and "USE_SCHEMA" not in grants[layer] and "ALL_PRIVILEGES" not in grants[layer]:
                raise AccessConfigError(f"{where}: role {name!r} needs USE_SCHEMA on {layer} for its other privileges "
                                        "to take effect")
        if any(grants.get(layer) for layer in GRANTED_LAYERS) and not {"USE_CATALOG", "ALL_PRIVILEGES"} & set(
                grants.get("catalog", ())):
            raise AccessConfigError(f"{where}: role {name!r} is granted schemas but not USE_CATALOG on the catalog")
        roles.append(role)
    if sum(1 for r in roles if r.is_partner_role) > 1:
        raise AccessConfigError(f"{where}: only one role may take its holders from shares.yaml")
    retired = tuple(doc.get("retired_groups") or ())
    still_used = sorted(set(retired) & set(groups_seen))
    if still_used:
        raise AccessConfigError(f"{where}: retired_groups {still_used} still hold a role")

    folder_roles = dict((doc.get("local") or {}).get("folder_roles") or {})
    by_name = {r.name: r for r in roles}
    for layer, role_name in folder_roles.items():
        role = by_name.get(role_name)
        if role is None or role.is_partner_role:
            raise AccessConfigError(f"{where}: local.folder_roles.{layer} names {role_name!r}, which is not a role "
                                    "with a group")
        if not role.privileges_on(layer):
            raise AccessConfigError(f"{where}: local.folder_roles.{layer} is {role_name!r}, which has no grant on {layer}")
    return AccessConfig(roles=tuple(roles), catalog=doc.get("catalog"), exclusive=bool(doc.get("exclusive", False)),
                        retired_groups=retired, folder_roles=folder_roles, source=source)


def load_access_config(path: Path | str | None = None) -> AccessConfig:
    """Read and validate the access configuration file."""
    path = Path(path) if path is not None else default_access_config_path()
    return parse_access_config(ggm_config.read_yaml_config(path, "access config", AccessConfigError), source=path)


def resolve_catalog(config: AccessConfig, override: str | None = None) -> str:
    """The Unity Catalog catalog: ``override``, else ``catalog:`` in the file, else ``GGM_TABLE_NAMESPACE``."""
    catalog = override or config.catalog or table_namespace()
    if not catalog:
        raise AccessConfigError("no catalog: set GGM_TABLE_NAMESPACE, 'catalog:' in access.yaml or pass --catalog")
    return catalog


# ---- Databricks: desired grants, plan and apply -------------------------------------------------


@dataclass(frozen=True, order=True)
class Securable:
    """A Unity Catalog securable as the grants API addresses it."""

    securable_type: str  # "catalog" or "schema", the spelling of the API docs and CLI examples
    full_name: str


@dataclass(frozen=True)
class GrantChange:
    """Privileges to add and to remove for one principal on one securable."""

    securable_type: str
    full_name: str
    principal: str
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"securable_type": self.securable_type, "full_name": self.full_name, "principal": self.principal,
                "add": list(self.add), "remove": list(self.remove)}


@dataclass
class AccessPlan:
    """The grant changes that bring a catalog in line with the configuration."""

    catalog: str
    changes: list[GrantChange]
    in_sync: list[str]  # securables that need no change
    partners: list[dict[str, Any]] = field(default_factory=list)
    applied: bool = False

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def as_dict(self) -> dict[str, Any]:
        return {"mode": "databricks", "catalog": self.catalog, "applied": self.applied,
                "changes": [c.as_dict() for c in self.changes], "in_sync": self.in_sync,
                "partners": self.partners}


def desired_grants(config: AccessConfig, catalog: str) -> dict[Securable, dict[str, frozenset[str]]]:
    """Every managed securable of the catalog with the privileges each role's group should hold on it."""
    desired: dict[Securable, dict[str, frozenset[str]]] = {Securable("catalog", catalog): {}}
    for layer in ggm_config.LAYERS:
        desired[Securable("schema", f"{catalog}.{layer}")] = {}
    for role in config.group_roles:
        assert role.group is not None
        if role.grants.get("catalog"):
            desired[Securable("catalog", catalog)][role.group] = frozenset(role.grants["catalog"])
        for layer in ggm_config.LAYERS:
            privileges = role.privileges_on(layer)
            if privileges:
                desired[Securable("schema", f"{catalog}.{layer}")][role.group] = frozenset(privileges)
    return desired


def _describe(exc: Exception) -> str:
    code = getattr(exc, "error_code", None)
    return f"{code}: {exc}" if code else f"{exc.__class__.__name__}: {exc}"


def current_grants(client, securable: Securable) -> dict[str, frozenset[str]]:
    """Direct (not inherited) grants on ``securable``: principal → privileges, read page by page."""
    result: dict[str, set[str]] = {}
    page_token: str | None = None
    while True:
        # max_results=0 asks for the paginated form, which Databricks recommends over the unpaginated one.
        response = client.grants.get(securable.securable_type, securable.full_name, max_results=0,
                                     page_token=page_token)
        for assignment in response.privilege_assignments or []:
            if assignment.principal:
                result.setdefault(assignment.principal, set()).update(p.value for p in assignment.privileges or [])
        page_token = response.next_page_token
        if not page_token:
            return {principal: frozenset(privileges) for principal, privileges in result.items()}


def partner_summary(shares_config_path: Path | str | None = None) -> list[dict[str, Any]]:
    """The partners role's holders: recipients of ``shares.yaml`` and the shares each may read."""
    from ggm_lakehouse.model.shares_config import load_shares_config

    shares = load_shares_config(shares_config_path)
    return [{"recipient": r.name, "shares": list(r.shares)} for r in shares.recipients]


def plan_grants(client, config: AccessConfig, catalog: str | None = None,
                shares_config_path: Path | str | None = None) -> AccessPlan:
    """Compare the workspace's grants with the configuration; changes nothing.

    Only principals the configuration manages are touched (every principal when ``exclusive``).
    """
    from databricks.sdk.errors import DatabricksError

    catalog = resolve_catalog(config, catalog)
    changes: list[GrantChange] = []
    in_sync: list[str] = []
    for securable, wanted in sorted(desired_grants(config, catalog).items()):
        try:
            held = current_grants(client, securable)
        except DatabricksError as exc:
            raise AccessApplyError(f"reading grants on {securable.securable_type} {securable.full_name} failed: "
                                   f"{_describe(exc)}") from exc
        managed = set(held) if config.exclusive else set(config.managed_principals)
        managed |= set(wanted)
        securable_changes = []
        for principal in sorted(managed):
            want = wanted.get(principal, frozenset())
            have = held.get(principal, frozenset())
            add, remove = tuple(sorted(want - have)), tuple(sorted(have - want))
            if add or remove:
                securable_changes.append(GrantChange(securable.securable_type, securable.full_name, principal,
                                                     add, remove))
        changes.extend(securable_changes)
        if not securable_changes:
            in_sync.append(f"{securable.securable_type} {securable.full_name}")
    partners = partner_summary(shares_config_path) if any(r.is_partner_role for r in config.roles) else []
    return AccessPlan(catalog=catalog, changes=changes, in_sync=in_sync, partners=partners)


def apply_grants(client, config: AccessConfig, catalog: str | None = None, *, dry_run: bool = False,
                 shares_config_path: Path | str | None = None) -> AccessPlan:
    """Bring the workspace's grants in line with the configuration; returns the plan that was applied.

    One ``PATCH permissions`` per securable carries all its principals' changes, so a securable is
    never left half-updated. Raises :class:`AccessApplyError` naming the securable and the
    workspace's error code when the workspace refuses.
    """
    from databricks.sdk.errors import DatabricksError
    from databricks.sdk.service.catalog import PermissionsChange, Privilege

    plan = plan_grants(client, config, catalog, shares_config_path=shares_config_path)
    if dry_run or not plan.changes:
        return plan
    applied: list[GrantChange] = []
    by_securable: dict[tuple[str, str], list[GrantChange]] = {}
    for change in plan.changes:
        by_securable.setdefault((change.securable_type, change.full_name), []).append(change)
    for (securable_type, full_name), securable_changes in by_securable.items():
        try:
            client.grants.update(securable_type, full_name, changes=[
                PermissionsChange(principal=c.principal, add=[Privilege(p) for p in c.add] or None,
                                  remove=[Privilege(p) for p in c.remove] or None)
                for c in securable_changes
            ])
        except DatabricksError as exc:
            raise AccessApplyError(f"updating grants on {securable_type} {full_name} failed: {_describe(exc)} "
                                   f"({len(applied)} change(s) applied before)", applied) from exc
        applied.extend(securable_changes)
    plan.applied = True
    return plan


def databricks_host(conn) -> str:
    """Workspace URL of an Airflow Databricks connection.

    Accepts ``host`` as a bare name (scheme from ``schema``, default https, plus ``port``) or as a
    full URL, as the Databricks provider does.
    """
    from urllib.parse import urlsplit

    host = (conn.host or "").strip().rstrip("/")
    if not host:
        raise MissingSecretError(f"Airflow connection {conn.conn_id!r} has no host")
    parsed = urlsplit(host if "://" in host else f"{conn.schema or 'https'}://{host}")
    netloc = parsed.netloc
    if conn.port and parsed.port is None:
        netloc = f"{netloc}:{conn.port}"
    return f"{parsed.scheme}://{netloc}"


def workspace_client(conn_id: str = DATABRICKS_CONN_ID):
    """A ``databricks.sdk.WorkspaceClient`` for the workspace of Airflow connection ``conn_id``.

    The token is the connection's password (or ``token`` in its extra, the provider's legacy form);
    it never appears in code or configuration files.
    """
    from databricks.sdk import WorkspaceClient

    # Building a connection from AIRFLOW_CONN_* makes Airflow log warnings (e.g. about the fernet key)
    # on stdout; keep stdout for the commands' JSON output.
    with contextlib.redirect_stdout(sys.stderr):
        conn = get_connection(conn_id)
    if conn is None:
        raise MissingSecretError(f"Airflow connection {conn_id!r} not found: set AIRFLOW_CONN_{conn_id.upper()} "
                                 "or add it to Airflow")
    token = conn.password or conn.extra_dejson.get("token")
    if not token:
        raise MissingSecretError(f"Airflow connection {conn_id!r} has no token (password)")
    return WorkspaceClient(host=databricks_host(conn), token=token, auth_type="pat", product="ggm-lakehouse",
                           product_version="1")


# ---- embedded default: POSIX group and mode per layer folder ------------------------------------


@dataclass(frozen=True)
class FolderPermission:
    """The wanted (and current) group and mode of one layer folder."""

    layer: str
    path: str
    role: str
    group: str
    mode: int
    group_exists: bool
    current_group: str | None
    current_mode: int | None
    also_needs_membership: tuple[str, ...] = ()

    @property
    def in_sync(self) -> bool:
        return self.current_group == self.group and self.current_mode == self.mode

    def as_dict(self) -> dict[str, Any]:
        body = {"layer": self.layer, "path": self.path, "role": self.role, "group": self.group,
                "mode": f"{self.mode:04o}", "group_exists": self.group_exists, "in_sync": self.in_sync,
                "current_group": self.current_group,
                "current_mode": f"{self.current_mode:04o}" if self.current_mode is not None else None}
        if self.also_needs_membership:
            # POSIX gives a folder one group: other roles reading this layer must join it.
            body["members_also_needed_from"] = list(self.also_needs_membership)
        if not self.group_exists:
            body["action"] = f"skipped: group {self.group!r} does not exist (create it, e.g. groupadd {self.group})"
        return body


@dataclass
class LocalPlan:
    """Folder permissions for the embedded default."""

    lake_root: str
    folders: list[FolderPermission]
    applied: list[str] = field(default_factory=list)  # layers whose folders were set

    @property
    def has_changes(self) -> bool:
        return any(not f.in_sync for f in self.folders)

    def as_dict(self) -> dict[str, Any]:
        return {"mode": "local", "lake_root": self.lake_root, "folders": [f.as_dict() for f in self.folders],
                "applied": self.applied}


def _folder_mode(privileges: tuple[str, ...]) -> int:
    writes = bool({"MODIFY", "ALL_PRIVILEGES"} & set(privileges))
    # setgid: tables created later by the pipeline inherit the layer's group.
    return stat.S_ISGID | stat.S_IRWXU | (stat.S_IRWXG if writes else stat.S_IRGRP | stat.S_IXGRP)


def _group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def plan_local(config: AccessConfig, lake_root: Path | str | None = None) -> LocalPlan:
    """Wanted group and mode of each layer folder compared with what is on disk; changes nothing."""
    root = Path(lake_root) if lake_root is not None else ggm_config.lake_root()
    folders: list[FolderPermission] = []
    for layer in ggm_config.LAYERS:
        role_name = config.folder_roles.get("bronze" if layer == "quarantine" else layer)
        if role_name is None:
            continue
        role = config.role(role_name)
        assert role is not None and role.group is not None  # guaranteed by parse_access_config
        try:
            grp.getgrnam(role.group)
            exists = True
        except KeyError:
            exists = False
        path = root / layer
        try:
            st = path.stat()
            current_group, current_mode = _group_name(st.st_gid), stat.S_IMODE(st.st_mode)
        except FileNotFoundError:
            current_group, current_mode = None, None
        others = tuple(sorted(r.group for r in config.group_roles
                              if r.group and r.group != role.group and r.privileges_on(layer)))
        folders.append(FolderPermission(layer=layer, path=str(path), role=role_name, group=role.group,
                                        mode=_folder_mode(role.privileges_on(layer)), group_exists=exists,
                                        current_group=current_group, current_mode=current_mode,
                                        also_needs_membership=others))
    return LocalPlan(lake_root=str(root), folders=folders)


def apply_local(config: AccessConfig, lake_root: Path | str | None = None, *, dry_run: bool = False) -> LocalPlan:
    """Set group and mode on the layer folders (and what lies below them) where the group exists.

    Below a layer folder, directories get the folder's mode and files the owner's read/write bits
    mirrored to the group (write only when the role may write); others lose all access. Missing
    layer folders are created so the first table written already lands under the right group.
    Folders whose group does not exist are left untouched and reported in the plan.
    """
    plan = plan_local(config, lake_root)
    if dry_run:
        return plan
    for folder in plan.folders:
        if not folder.group_exists:
            continue
        try:
            _apply_folder(Path(folder.path), grp.getgrnam(folder.group).gr_gid, folder.mode)
        except OSError as exc:
            # Typically: not root and not the owner of something below the layer folder.
            raise AccessApplyError(f"setting group {folder.group!r} and mode {folder.mode:04o} on {folder.path} "
                                   f"failed: {exc}") from exc
        plan.applied.append(folder.layer)
    return plan


def _apply_folder(path: Path, gid: int, mode: int) -> None:
    group_writes = bool(mode & stat.S_IWGRP)
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, -1, gid)
    os.chmod(path, mode)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames:
            child = os.path.join(dirpath, name)
            if os.path.islink(child):
                continue  # never follow a link out of the lake
            os.chown(child, -1, gid)
            os.chmod(child, mode)
        for name in filenames:
            child = os.path.join(dirpath, name)
            if os.path.islink(child):
                continue  # a symlink's own mode is meaningless; its target is not ours to change
            os.chown(child, -1, gid)
            owner = stat.S_IMODE(os.stat(child).st_mode) & stat.S_IRWXU
            group = (stat.S_IRGRP if owner & stat.S_IRUSR else 0) | (
                stat.S_IWGRP if group_writes and owner & stat.S_IWUSR else 0)
            os.chmod(child, owner | group)
