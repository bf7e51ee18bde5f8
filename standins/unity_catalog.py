"""Stand-in for the Unity Catalog REST endpoints the Databricks SDK calls for grants and Delta Sharing.

Exactly the endpoints ``ggm_lakehouse.access`` and ``sharing_server.unity_catalog`` use through
``databricks-sdk`` (paths and JSON shapes as in ``databricks/sdk/service/catalog.py`` and
``sharing.py``), all under ``/api/2.1/unity-catalog``:

* ``GET|PATCH permissions/{securable_type}/{full_name}`` — ``w.grants.get`` / ``w.grants.update``;
  ``GET`` pages with ``max_results``/``page_token`` (``max_results`` 1..149 is refused, as documented),
  ``PATCH`` takes ``{"changes": [{"principal", "add", "remove"}]}`` and answers the new
  ``privilege_assignments``;
* ``POST|GET shares``, ``GET|PATCH shares/{name}`` (``updates`` with ``ADD``/``REMOVE``/``UPDATE`` of
  ``TABLE`` and ``VIEW`` data objects, ``include_shared_data``; views carry no history status),
  ``GET|PATCH shares/{name}/permissions``;
* ``POST|GET recipients``, ``GET|PATCH recipients/{name}``;
* ``GET tables/{full_name}`` — ``w.tables.get``: registered tables (``MANAGED``) and views created
  through SQL (``VIEW`` with ``view_definition``);
* ``POST /api/2.0/sql/statements`` and ``GET /api/2.0/sql/statements/{statement_id}`` — the SQL
  Statement Execution API (``w.statement_execution``) on the one warehouse ``warehouse_id``. It
  understands the DDL ``sharing_server.unity_catalog`` sends (``CREATE SCHEMA IF NOT EXISTS`` and
  ``CREATE OR REPLACE VIEW … AS SELECT … FROM <table>``), answers ``SUCCEEDED`` synchronously and
  keeps every executed statement in :attr:`UnityCatalogStandin.sql_statements`; anything else, or a
  view over a missing table or into a missing schema, ends ``FAILED`` with an error as a warehouse
  reports it (HTTP 200, ``status.error``);
* ``GET /.well-known/databricks-config`` (unauthenticated), which the SDK probes when it starts.

Like a workspace it checks what it is told: securables, tables and (when ``groups`` is given)
principals must exist, a privilege must apply to the securable type, a recipient must exist before
it is granted a share. Errors are Databricks-style JSON ``{"error_code", "message"}`` with the
matching HTTP status, so the SDK raises its typed exceptions (``NotFound``, ``PermissionDenied`` …).
Authentication is ``Authorization: Bearer <token>``. Every authenticated request is recorded
(method, path, query, JSON body) for assertions; :meth:`UnityCatalogStandin.fail_next` makes the
next matching request fail, e.g. with ``403 PERMISSION_DENIED``. Demo/test only.
"""
from __future__ import annotations

import copy
import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from standins.common import ThreadedUvicorn, WorkspaceStandin

API_PREFIX = "/api/2.1/unity-catalog"
SQL_STATEMENTS_PATH = "/api/2.0/sql/statements"
DEFAULT_WAREHOUSE_ID = "4b9b953939869799"

# The DDL the sharing module sends; identifiers are backtick-quoted with `` for a literal backtick.
_IDENT = r"`((?:[^`]|``)+)`"
_STRING = r"'((?:[^'\\]|\\.)*)'"
_CREATE_SCHEMA = re.compile(rf"^\s*CREATE SCHEMA IF NOT EXISTS {_IDENT}\.{_IDENT}(?:\s+COMMENT\s+{_STRING})?\s*;?\s*$",
                            re.IGNORECASE | re.DOTALL)
_CREATE_VIEW = re.compile(rf"^\s*CREATE OR REPLACE VIEW {_IDENT}\.{_IDENT}\.{_IDENT}(?:\s+COMMENT\s+{_STRING})?"
                          r"\s+AS\s+(SELECT\s.+?)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_FROM_TABLE = re.compile(rf"\sFROM\s+{_IDENT}\.{_IDENT}\.{_IDENT}", re.IGNORECASE)


def _unquote(identifier: str) -> str:
    return identifier.replace("``", "`")

# Which privileges a workspace accepts on which securable type (Unity Catalog privilege model).
_SCHEMA_PRIVILEGES = frozenset({
    "ALL_PRIVILEGES", "APPLY_TAG", "CREATE_FUNCTION", "CREATE_MATERIALIZED_VIEW", "CREATE_MODEL",
    "CREATE_TABLE", "CREATE_VOLUME", "EXECUTE", "EXTERNAL_USE_SCHEMA", "MANAGE", "MODIFY", "READ_VOLUME",
    "REFRESH", "SELECT", "USE_SCHEMA", "WRITE_VOLUME",
})
APPLICABLE_PRIVILEGES: dict[str, frozenset[str]] = {
    "catalog": _SCHEMA_PRIVILEGES | {"BROWSE", "CREATE_SCHEMA", "USE_CATALOG"},
    "schema": _SCHEMA_PRIVILEGES,
    "table": frozenset({"ALL_PRIVILEGES", "APPLY_TAG", "MANAGE", "MODIFY", "SELECT"}),
}
_DEFAULT_OWNER = "ggm-platform-admins"


@dataclass(frozen=True)
class RecordedRequest:
    """One authenticated request as the stand-in received it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class _Fault:
    method: str
    path: str
    status: int
    error_code: str
    message: str


@dataclass
class _Share:
    name: str
    comment: str | None
    owner: str
    created_at: int
    objects: list[dict[str, Any]] = field(default_factory=list)
    grants: dict[str, set[str]] = field(default_factory=dict)


class UnityCatalogStandin(WorkspaceStandin):
    """A Unity Catalog metastore's grants and sharing API on ``127.0.0.1:<ephemeral port>``.

    Usage::

        with UnityCatalogStandin(catalogs={"gemeente": ["bronze", "silver", "gold", "quarantine"]},
                                 tables=["gemeente.gold.inwoners_per_buurt"]) as uc:
            os.environ["AIRFLOW_CONN_GGM_DATABRICKS"] = json.dumps(uc.airflow_connection())
            ...  # run the code under test; uc.requests holds every call

    ``groups=None`` accepts any principal; a set makes grants to other principals fail with
    ``404 PRINCIPAL_DOES_NOT_EXIST`` as on a workspace that does not know the group.
    ``page_size`` is the server page length for paginated lists (small values exercise paging).
    """

    thread_name = "unity-catalog-standin"

    def __init__(
        self,
        *,
        catalogs: dict[str, list[str]] | None = None,
        tables: list[str] | tuple[str, ...] = (),
        groups: set[str] | frozenset[str] | None = None,
        token: str | None = None,
        page_size: int = 100,
        host: str = "127.0.0.1",
        warehouse_id: str = DEFAULT_WAREHOUSE_ID,
    ) -> None:
        self.token = token or f"dapi{secrets.token_hex(16)}"
        self.host = host
        self.page_size = page_size
        self.groups = set(groups) if groups is not None else None
        self.metastore_id = str(uuid.uuid4())
        self.workspace_id = "1234567890123456"
        self.requests: list[RecordedRequest] = []
        self._catalogs = {c.lower(): {s.lower() for s in schemas} for c, schemas in (catalogs or {}).items()}
        self._tables = {t.lower() for t in tables}
        self._grants: dict[tuple[str, str], dict[str, set[str]]] = {}
        self._shares: dict[str, _Share] = {}
        self._recipients: dict[str, dict[str, Any]] = {}
        self._faults: list[_Fault] = []
        self.warehouse_id = warehouse_id
        self.sql_statements: list[str] = []  # every statement that SUCCEEDED, in order
        self._views: dict[str, dict[str, Any]] = {}  # lower-cased full name → view
        self._statements: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._server: ThreadedUvicorn | None = None
        self.port: int | None = None
        self.app = self._build_app()

    # ---- test controls and inspection --------------------------------------------------------

    def fail_next(self, method: str, path: str, *, status: int = 403, error_code: str = "PERMISSION_DENIED",
                  message: str = "User does not have MANAGE on the securable.") -> None:
        """Answer the next ``method`` request to ``path`` (relative to the API prefix) with an error."""
        with self._lock:
            self._faults.append(_Fault(method.upper(), API_PREFIX + "/" + path.lstrip("/"), status, error_code, message))

    def set_grants(self, securable_type: str, full_name: str, principal: str, privileges: list[str]) -> None:
        """Seed grants as if someone had granted them by hand."""
        with self._lock:
            self._grants.setdefault((securable_type.lower(), full_name.lower()), {})[principal] = set(privileges)

    def grants(self, securable_type: str, full_name: str) -> dict[str, set[str]]:
        """Current grants on a securable: principal → privileges."""
        with self._lock:
            current = self._grants.get((securable_type.lower(), full_name.lower()), {})
            return {p: set(v) for p, v in current.items() if v}

    def share_state(self, name: str) -> dict[str, Any] | None:
        """The share's objects and recipient grants, or None when it does not exist."""
        with self._lock:
            share = self._shares.get(name.lower())
            if share is None:
                return None
            return {"comment": share.comment, "objects": copy.deepcopy(share.objects),
                    "grants": {p: set(v) for p, v in share.grants.items() if v}}

    def recipient(self, name: str) -> dict[str, Any] | None:
        """The stored recipient, or None."""
        with self._lock:
            found = self._recipients.get(name.lower())
            return copy.deepcopy(found) if found else None

    def view(self, full_name: str) -> dict[str, Any] | None:
        """A view created through SQL: ``{"full_name", "definition", "comment"}``, or None."""
        with self._lock:
            found = self._views.get(full_name.lower())
            return copy.deepcopy(found) if found else None

    def views(self) -> list[str]:
        """Full names of every view created through SQL."""
        with self._lock:
            return sorted(v["full_name"] for v in self._views.values())

    def calls(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        """Recorded requests, optionally only those with ``method`` and ``path`` (relative to the API prefix)."""
        wanted = API_PREFIX + "/" + path.lstrip("/") if path is not None else None
        return [r for r in list(self.requests)
                if (method is None or r.method == method.upper()) and (wanted is None or r.path == wanted)]

    def mutating_calls(self) -> list[RecordedRequest]:
        """Every recorded POST/PATCH/DELETE: what a plan-only run must never send."""
        return [r for r in list(self.requests) if r.method in ("POST", "PATCH", "DELETE")]

    # ---- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _error(status: int, error_code: str, message: str) -> JSONResponse:
        return JSONResponse({"error_code": error_code, "message": message}, status_code=status)

    def _page(self, items: list[Any], query: dict[str, str]) -> tuple[list[Any], str | None] | JSONResponse:
        """Slice ``items`` by ``max_results``/``page_token`` the way the UC list endpoints do."""
        raw_max = query.get("max_results")
        try:
            offset = int(query.get("page_token") or 0)
            max_results = int(raw_max) if raw_max is not None else None
        except ValueError:
            return self._error(400, "INVALID_PARAMETER_VALUE", "Invalid max_results or page_token.")
        if max_results is None:
            return items[offset:], None
        if max_results < 0:
            return self._error(400, "INVALID_PARAMETER_VALUE", "max_results must be greater than or equal to 0.")
        length = self.page_size if max_results == 0 else min(max_results, self.page_size)
        page = items[offset:offset + length]
        next_token = str(offset + length) if offset + length < len(items) else None
        return page, next_token

    def _securable_exists(self, securable_type: str, full_name: str) -> JSONResponse | None:
        parts = full_name.lower().split(".")
        if securable_type == "catalog":
            if len(parts) == 1 and parts[0] in self._catalogs:
                return None
            return self._error(404, "CATALOG_DOES_NOT_EXIST", f"Catalog '{full_name}' does not exist.")
        if securable_type == "schema":
            if len(parts) == 2 and parts[0] in self._catalogs and parts[1] in self._catalogs[parts[0]]:
                return None
            return self._error(404, "SCHEMA_DOES_NOT_EXIST", f"Schema '{full_name}' does not exist.")
        if securable_type == "table":
            if full_name.lower() in self._tables:
                return None
            return self._error(404, "TABLE_DOES_NOT_EXIST", f"Table '{full_name}' does not exist.")
        return self._error(400, "INVALID_PARAMETER_VALUE",
                           f"Securable type {securable_type.upper()} is not supported by this stand-in.")

    def _check_principal(self, principal: Any) -> JSONResponse | None:
        if not isinstance(principal, str) or not principal:
            return self._error(400, "INVALID_PARAMETER_VALUE", "Each change needs a 'principal'.")
        if self.groups is not None and principal not in self.groups:
            return self._error(404, "PRINCIPAL_DOES_NOT_EXIST", f"Could not find principal with name {principal}")
        return None

    @staticmethod
    def _assignments(grants: dict[str, set[str]]) -> list[dict[str, Any]]:
        return [{"principal": p, "privileges": sorted(v)} for p, v in sorted(grants.items()) if v]

    @staticmethod
    def _apply_changes(grants: dict[str, set[str]], changes: list[dict[str, Any]]) -> None:
        for change in changes:
            held = grants.setdefault(change["principal"], set())
            held.update(change.get("add") or [])
            held.difference_update(change.get("remove") or [])

    def _share_json(self, share: _Share, include_objects: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"name": share.name, "owner": share.owner, "created_at": share.created_at,
                                "created_by": "ggm-automation@example.org", "updated_at": int(time.time() * 1000),
                                "updated_by": "ggm-automation@example.org"}
        if share.comment is not None:
            body["comment"] = share.comment
        if include_objects:
            body["objects"] = copy.deepcopy(share.objects)
        return body

    def _recipient_json(self, recipient: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(recipient)

    def _run_statement(self, statement: str) -> dict[str, Any] | None:
        """Execute one DDL statement (lock held); None on success, else the warehouse's error."""
        def failed(sql_state: str, message: str) -> dict[str, Any]:
            return {"error_code": "BAD_REQUEST", "message": message, "sql_state": sql_state}

        schema_match = _CREATE_SCHEMA.match(statement)
        if schema_match:
            catalog, schema = _unquote(schema_match.group(1)).lower(), _unquote(schema_match.group(2)).lower()
            if catalog not in self._catalogs:
                return failed("42704", f"[NO_SUCH_CATALOG_EXCEPTION] Catalog '{catalog}' was not found.")
            self._catalogs[catalog].add(schema)
            return None
        view_match = _CREATE_VIEW.match(statement)
        if view_match:
            catalog, schema, name = (_unquote(view_match.group(i)) for i in (1, 2, 3))
            full_name = f"{catalog}.{schema}.{name}"
            if schema.lower() not in self._catalogs.get(catalog.lower(), set()):
                return failed("42704", f"[SCHEMA_NOT_FOUND] The schema `{catalog}`.`{schema}` cannot be found.")
            if full_name.lower() in self._tables:
                return failed("42809", f"[EXPECT_VIEW_NOT_TABLE] {full_name} is a table, not a view.")
            query = view_match.group(5)
            sources = _FROM_TABLE.findall(query)
            if len(sources) != 1:
                return failed("0A000", "This stand-in only understands a view over exactly one table.")
            source = ".".join(_unquote(part) for part in sources[0])
            if source.lower() not in self._tables:
                return failed("42P01", f"[TABLE_OR_VIEW_NOT_FOUND] The table or view {source} cannot be found.")
            comment = view_match.group(4)
            self._views[full_name.lower()] = {"full_name": full_name, "definition": query,
                                              "comment": comment, "source": source}
            return None
        return failed("42601", "[PARSE_SYNTAX_ERROR] This stand-in only executes CREATE SCHEMA IF NOT EXISTS "
                               "and CREATE OR REPLACE VIEW.")

    def _paged_body(self, key: str, items: list[Any], query: dict[str, str]) -> dict[str, Any] | JSONResponse:
        """One page of a UC list endpoint: ``{key: page, "next_page_token"?}`` (see :meth:`_page`)."""
        paged = self._page(items, query)
        if isinstance(paged, JSONResponse):
            return paged
        page, next_token = paged
        body: dict[str, Any] = {key: page}
        if next_token:
            body["next_page_token"] = next_token
        return body

    def _find_share(self, name: str) -> _Share | JSONResponse:
        share = self._shares.get(name.lower())
        if share is None:
            return self._error(404, "RESOURCE_DOES_NOT_EXIST", f"Share '{name}' does not exist.")
        return share

    # ---- API -------------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Unity Catalog stand-in", docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/.well-known/databricks-config")
        async def host_metadata():
            # Probed unauthenticated by the SDK's Config before it authenticates.
            return {"workspace_id": self.workspace_id, "cloud": "AZURE"}

        @app.middleware("http")
        async def authenticate_and_record(request: Request, call_next):
            if request.url.path.startswith("/.well-known/"):
                return await call_next(request)
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return self._error(401, "UNAUTHENTICATED", "Invalid access token.")
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                return self._error(400, "MALFORMED_REQUEST", "Request body is not valid JSON.")
            fault = self._record(request, body)
            if fault is not None:
                return self._error(fault.status, fault.error_code, fault.message)
            return await call_next(request)

        for add_routes in (self._grant_routes, self._share_routes, self._table_and_sql_routes,
                           self._recipient_routes):
            add_routes(app)

        @app.api_route("/{path:path}", methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
        async def not_implemented(path: str):
            return self._error(404, "ENDPOINT_NOT_FOUND", f"No API found for '/{path}' in this stand-in.")

        return app

    def _record(self, request: Request, body: Any) -> _Fault | None:
        """Record an authenticated request; returns the fault it must answer with (taken from the queue), if any."""
        with self._lock:
            self.requests.append(RecordedRequest(request.method, request.url.path, dict(request.query_params), body))
            fault = next((f for f in self._faults if f.method == request.method and f.path == request.url.path), None)
            if fault is not None:
                self._faults.remove(fault)
        return fault

    # -- grants -----------------------------------------------------------------------------------

    def _grant_routes(self, app: FastAPI) -> None:
        @app.get(API_PREFIX + "/permissions/{securable_type}/{full_name}")
        async def get_permissions(securable_type: str, full_name: str, request: Request):
            kind = securable_type.lower()
            query = dict(request.query_params)
            raw_max = query.get("max_results")
            if raw_max is not None and raw_max.lstrip("-").isdigit() and 0 < int(raw_max) < 150:
                return self._error(400, "INVALID_PARAMETER_VALUE",
                                   "max_results must be 0 or at least 150 for permissions.")
            with self._lock:
                missing = self._securable_exists(kind, full_name)
                if missing is not None:
                    return missing
                assignments = self._assignments(self._grants.get((kind, full_name.lower()), {}))
                if query.get("principal"):
                    assignments = [a for a in assignments if a["principal"] == query["principal"]]
            return self._paged_body("privilege_assignments", assignments, query)

        @app.patch(API_PREFIX + "/permissions/{securable_type}/{full_name}")
        async def update_permissions(securable_type: str, full_name: str, request: Request):
            return self._update_permissions(securable_type.lower(), full_name, await request.json())

    def _update_permissions(self, kind: str, full_name: str, body: dict[str, Any]):
        """``PATCH permissions``: every change checked (principal, applicable privilege) before any is applied."""
        changes = body.get("changes") or []
        with self._lock:
            missing = self._securable_exists(kind, full_name)
            if missing is not None:
                return missing
            applicable = APPLICABLE_PRIVILEGES.get(kind, frozenset())
            for change in changes:
                bad = self._check_principal(change.get("principal"))
                if bad is not None:
                    return bad
                for privilege in [*(change.get("add") or []), *(change.get("remove") or [])]:
                    if privilege not in applicable:
                        return self._error(400, "INVALID_PARAMETER_VALUE",
                                           f"Privilege {privilege} is not applicable to this entity "
                                           f"[{full_name}:{kind.upper()}].")
            grants = self._grants.setdefault((kind, full_name.lower()), {})
            self._apply_changes(grants, changes)
            if body.get("omit_permissions_in_response"):
                return {}
            return {"privilege_assignments": self._assignments(grants)}

    # -- shares -----------------------------------------------------------------------------------

    def _share_routes(self, app: FastAPI) -> None:
        @app.post(API_PREFIX + "/shares")
        async def create_share(request: Request):
            body = await request.json()
            name = body.get("name")
            if not isinstance(name, str) or not name:
                return self._error(400, "INVALID_PARAMETER_VALUE", "Share name must be specified.")
            with self._lock:
                if name.lower() in self._shares:
                    return self._error(409, "SHARE_ALREADY_EXISTS", f"Share '{name}' already exists.")
                share = _Share(name=name, comment=body.get("comment"), owner=_DEFAULT_OWNER,
                               created_at=int(time.time() * 1000))
                self._shares[name.lower()] = share
                return self._share_json(share, include_objects=False)

        @app.get(API_PREFIX + "/shares")
        async def list_shares(request: Request):
            with self._lock:
                shares = [self._share_json(s, include_objects=False) for s in self._shares.values()]
            return self._paged_body("shares", shares, dict(request.query_params))

        @app.get(API_PREFIX + "/shares/{name}")
        async def get_share(name: str, request: Request):
            include = request.query_params.get("include_shared_data", "false").lower() == "true"
            with self._lock:
                share = self._find_share(name)
                if isinstance(share, JSONResponse):
                    return share
                return self._share_json(share, include_objects=include)

        @app.patch(API_PREFIX + "/shares/{name}")
        async def update_share(name: str, request: Request):
            return self._update_share(name, await request.json())

        @app.get(API_PREFIX + "/shares/{name}/permissions")
        async def get_share_permissions(name: str, request: Request):
            with self._lock:
                share = self._find_share(name)
                if isinstance(share, JSONResponse):
                    return share
                assignments = self._assignments(share.grants)
            return self._paged_body("privilege_assignments", assignments, dict(request.query_params))

        @app.patch(API_PREFIX + "/shares/{name}/permissions")
        async def update_share_permissions(name: str, request: Request):
            return self._update_share_permissions(name, await request.json())

    def _update_share(self, name: str, body: dict[str, Any]):
        """``PATCH shares/{name}``: the data object updates, then comment and owner."""
        with self._lock:
            share = self._find_share(name)
            if isinstance(share, JSONResponse):
                return share
            # Validate every update before applying any: a workspace applies a PATCH atomically.
            objects = copy.deepcopy(share.objects)
            for update in body.get("updates") or []:
                refused = self._apply_share_update(share, objects, update)
                if refused is not None:
                    return refused
            share.objects = objects
            if "comment" in body:
                share.comment = body["comment"]
            if body.get("owner"):
                share.owner = body["owner"]
            return self._share_json(share, include_objects=True)

    def _apply_share_update(self, share: _Share, objects: list[dict[str, Any]],
                            update: dict[str, Any]) -> JSONResponse | None:
        """Apply one ``ADD``/``REMOVE``/``UPDATE`` to ``objects`` (the share's copy); the error when refused."""
        action = update.get("action")
        data_object = update.get("data_object") or {}
        object_name = str(data_object.get("name") or "")
        existing = next((o for o in objects if o["name"].lower() == object_name.lower()), None)
        object_type = data_object.get("data_object_type", "TABLE")
        if action in ("REMOVE", "UPDATE"):
            if existing is None:
                return self._error(404, "RESOURCE_DOES_NOT_EXIST",
                                   f"Data object '{object_name}' is not in share '{share.name}'.")
            if action == "REMOVE":
                objects.remove(existing)
            else:
                existing.update({k: v for k, v in data_object.items() if k != "name"})
            return None
        if action != "ADD":
            return self._error(400, "INVALID_PARAMETER_VALUE", f"Unknown update action {action!r}.")
        if object_type == "TABLE" and object_name.lower() not in self._tables:
            return self._error(404, "TABLE_DOES_NOT_EXIST", f"Table '{object_name}' does not exist.")
        if object_type == "VIEW":
            if object_name.lower() not in self._views:
                return self._error(404, "TABLE_DOES_NOT_EXIST", f"View '{object_name}' does not exist.")
            if data_object.get("history_data_sharing_status") == "ENABLED":
                return self._error(400, "INVALID_PARAMETER_VALUE", "History sharing is not supported for views.")
        if existing is not None:
            return self._error(409, "RESOURCE_ALREADY_EXISTS",
                               f"Data object '{object_name}' is already in share '{share.name}'.")
        shared_as = data_object.get("shared_as")
        if shared_as and any((o.get("shared_as") or "").lower() == shared_as.lower() for o in objects):
            return self._error(400, "INVALID_PARAMETER_VALUE",
                               f"Alias '{shared_as}' is already used in share '{share.name}'.")
        added = {**data_object, "data_object_type": object_type, "added_at": int(time.time() * 1000),
                 "added_by": "ggm-automation@example.org", "status": "ACTIVE"}
        if object_type == "TABLE":
            added.setdefault("history_data_sharing_status", "DISABLED")
        objects.append(added)
        return None

    def _update_share_permissions(self, name: str, body: dict[str, Any]):
        """``PATCH shares/{name}/permissions``: SELECT for existing recipients only."""
        changes = body.get("changes") or []
        with self._lock:
            share = self._find_share(name)
            if isinstance(share, JSONResponse):
                return share
            for change in changes:
                principal = change.get("principal")
                if not isinstance(principal, str) or principal.lower() not in self._recipients:
                    return self._error(404, "RESOURCE_DOES_NOT_EXIST", f"Recipient '{principal}' does not exist.")
                for privilege in [*(change.get("add") or []), *(change.get("remove") or [])]:
                    if privilege != "SELECT":
                        return self._error(400, "INVALID_PARAMETER_VALUE",
                                           f"Privilege {privilege} is not applicable to a share; only SELECT is.")
            self._apply_changes(share.grants, changes)
            if body.get("omit_permissions_list"):
                return {}
            return {"privilege_assignments": self._assignments(share.grants)}

    # -- tables and SQL statements ----------------------------------------------------------------

    def _table_and_sql_routes(self, app: FastAPI) -> None:
        @app.get(API_PREFIX + "/tables/{full_name}")
        async def get_table(full_name: str):
            return self._table_json(full_name)

        @app.post(SQL_STATEMENTS_PATH)
        async def execute_statement(request: Request):
            return self._execute_statement(await request.json())

        @app.get(SQL_STATEMENTS_PATH + "/{statement_id}")
        async def get_statement(statement_id: str):
            with self._lock:
                found = self._statements.get(statement_id)
            if found is None:
                return self._error(404, "RESOURCE_DOES_NOT_EXIST", f"Statement {statement_id} does not exist.")
            return found

    def _table_json(self, full_name: str):
        """``GET tables/{full_name}``: a registered (``MANAGED``) table or a view created through SQL."""
        with self._lock:
            view = self._views.get(full_name.lower())
            if view is None and full_name.lower() not in self._tables:
                return self._error(404, "TABLE_DOES_NOT_EXIST", f"Table '{full_name}' does not exist.")
            name = view["full_name"] if view else full_name.lower()
        catalog, schema, table = name.split(".")
        body: dict[str, Any] = {"full_name": name, "catalog_name": catalog, "schema_name": schema,
                                "name": table, "owner": _DEFAULT_OWNER, "metastore_id": self.metastore_id}
        if view is not None:
            body.update({"table_type": "VIEW", "view_definition": view["definition"]})
            if view["comment"] is not None:
                body["comment"] = view["comment"]
        else:
            body.update({"table_type": "MANAGED", "data_source_format": "DELTA"})
        return body

    def _execute_statement(self, body: dict[str, Any]):
        """``POST sql/statements``: run it synchronously; a failure is HTTP 200 with ``status.error``."""
        statement = body.get("statement")
        if not isinstance(statement, str) or not statement.strip():
            return self._error(400, "INVALID_PARAMETER_VALUE", "statement must be specified.")
        if body.get("warehouse_id") != self.warehouse_id:
            return self._error(404, "RESOURCE_DOES_NOT_EXIST", f"Warehouse {body.get('warehouse_id')!r} does not exist.")
        statement_id = str(uuid.uuid4())
        with self._lock:
            error = self._run_statement(statement)
            status: dict[str, Any] = {"state": "SUCCEEDED"}
            if error is not None:
                status = {"state": "FAILED", "sql_state": error.pop("sql_state"), "error": error}
            else:
                self.sql_statements.append(statement)
            response: dict[str, Any] = {"statement_id": statement_id, "status": status}
            if error is None:
                # DDL returns no rows: an empty JSON_ARRAY result, as a warehouse answers.
                response["manifest"] = {"format": "JSON_ARRAY", "schema": {"column_count": 0, "columns": []},
                                        "total_chunk_count": 0, "total_row_count": 0, "truncated": False}
                response["result"] = {"chunk_index": 0, "row_count": 0, "row_offset": 0}
            self._statements[statement_id] = response
        return response

    # -- recipients -------------------------------------------------------------------------------

    def _recipient_routes(self, app: FastAPI) -> None:
        @app.post(API_PREFIX + "/recipients")
        async def create_recipient(request: Request):
            return self._create_recipient(await request.json())

        @app.get(API_PREFIX + "/recipients")
        async def list_recipients(request: Request):
            with self._lock:
                recipients = [self._recipient_json(r) for r in self._recipients.values()]
            return self._paged_body("recipients", recipients, dict(request.query_params))

        @app.get(API_PREFIX + "/recipients/{name}")
        async def get_recipient(name: str):
            with self._lock:
                recipient = self._recipients.get(name.lower())
                if recipient is None:
                    return self._error(404, "RESOURCE_DOES_NOT_EXIST", f"Recipient '{name}' does not exist.")
                return self._recipient_json(recipient)

        @app.patch(API_PREFIX + "/recipients/{name}")
        async def update_recipient(name: str, request: Request):
            body = await request.json()
            with self._lock:
                recipient = self._recipients.get(name.lower())
                if recipient is None:
                    return self._error(404, "RESOURCE_DOES_NOT_EXIST", f"Recipient '{name}' does not exist.")
                for key in ("comment", "owner", "expiration_time"):
                    if key in body:
                        recipient[key] = body[key]
                recipient["updated_at"] = int(time.time() * 1000)
                return self._recipient_json(recipient)

    def _create_recipient(self, body: dict[str, Any]):
        """``POST recipients``: a TOKEN recipient gets an activation URL, a DATABRICKS one its metastore id."""
        name = body.get("name")
        auth = body.get("authentication_type")
        if not isinstance(name, str) or not name:
            return self._error(400, "INVALID_PARAMETER_VALUE", "Recipient name must be specified.")
        if auth not in ("TOKEN", "DATABRICKS"):
            return self._error(400, "INVALID_PARAMETER_VALUE",
                               f"authentication_type must be TOKEN or DATABRICKS, got {auth!r}.")
        if auth == "DATABRICKS" and not body.get("data_recipient_global_metastore_id"):
            return self._error(400, "INVALID_PARAMETER_VALUE",
                               "data_recipient_global_metastore_id is required for DATABRICKS recipients.")
        if auth == "TOKEN" and body.get("data_recipient_global_metastore_id"):
            return self._error(400, "INVALID_PARAMETER_VALUE",
                               "data_recipient_global_metastore_id is only allowed for DATABRICKS recipients.")
        with self._lock:
            if name.lower() in self._recipients:
                return self._error(409, "RECIPIENT_ALREADY_EXISTS", f"Recipient '{name}' already exists.")
            now = int(time.time() * 1000)
            recipient: dict[str, Any] = {
                "id": str(uuid.uuid4()), "name": name, "authentication_type": auth, "owner": _DEFAULT_OWNER,
                "metastore_id": self.metastore_id, "created_at": now, "created_by": "ggm-automation@example.org",
                "updated_at": now, "updated_by": "ggm-automation@example.org", "activated": auth == "DATABRICKS",
                "cloud": "azure", "region": "westeurope",
            }
            if body.get("comment") is not None:
                recipient["comment"] = body["comment"]
            if auth == "DATABRICKS":
                recipient["data_recipient_global_metastore_id"] = body["data_recipient_global_metastore_id"]
            else:
                activation_url = f"{self.url}/delta_sharing/retrieve_config.html?{secrets.token_urlsafe(24)}"
                token: dict[str, Any] = {"id": str(uuid.uuid4()), "activation_url": activation_url,
                                         "created_at": now, "created_by": "ggm-automation@example.org",
                                         "updated_at": now, "updated_by": "ggm-automation@example.org"}
                if body.get("expiration_time") is not None:
                    token["expiration_time"] = body["expiration_time"]
                recipient["activation_url"] = activation_url
                recipient["tokens"] = [token]
            self._recipients[name.lower()] = recipient
            return self._recipient_json(recipient)
