"""Delta Sharing protocol server for the gold layer (FastAPI).

Implements, under the prefix ``/delta-sharing``, the REST API of the Delta Sharing
protocol that the official clients use (PROTOCOL.md "REST APIs"): list shares, get
share, list schemas, list tables, list all tables, table version, table metadata and
query table (with partition pruning by ``jsonPredicateHints``, :mod:`sharing_server.predicates`)
and the change data feed of history-shared tables with ``delta.enableChangeDataFeed``, in
``parquet`` response format and in ``delta`` response format. Data files, including the
feed's ``cdf`` and ``remove`` files, are served by this server itself through signed,
expiring URLs under ``/delta-sharing/files/`` (see :mod:`sharing_server.signing`).
Every request is appended to the audit log (:mod:`sharing_server.audit`).

Per-recipient data: with ``serve_from: projections`` (the default) every table is resolved
through the authenticated recipient to its own materialised projection
(``<lake>/shares/<recipient>/...``, :mod:`sharing_server.projections`), so what a recipient can
download is physically limited to its entitled columns and rows, with person pseudonyms re-keyed
for it. Each recipient also has its own request budget (token bucket, ``server.rate_limit``;
over it: ``429 RESOURCE_EXHAUSTED`` with ``Retry-After``, :mod:`sharing_server.ratelimit`).
The OpenAPI description of the API is served at ``/delta-sharing/openapi.json``.

Access control: every API call needs ``Authorization: Bearer <token>`` of a recipient
(:mod:`sharing_server.recipients`); a recipient sees only the shares it is entitled to
in ``config/shares.yaml`` (or, for recipients added by the CLI, in the state file;
see :mod:`sharing_server.recipients`). A share that does not exist and a share that exists but is
not shared with the caller produce the same 404 answer, so a recipient cannot probe
for other recipients' shares.

Hardening: every client value is bounded and validated (:mod:`sharing_server.limits`), so
hostile input gets a 4xx and never a 500 or a hang; the token is checked before anything
else (a valid token is never throttled by others' failures) and before any body byte is
read; file URLs are built on the configured public endpoint, never the Host header; log
lines carry no signatures or tokens (:mod:`sharing_server.logredact`).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import logging.config
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ggm_lakehouse import config as ggm_config
from ggm_lakehouse.model.shares_config import (
    InvalidNameError,
    Recipient,
    ReloadingSharesConfig,
    Share,
    SharedTable,
    SharesConfig,
    validate_name,
)
from sharing_server import audit, delta_tables, limits, logredact, predicates, projections
from sharing_server.delta_tables import TableSnapshot
from sharing_server.ratelimit import RATE_LIMIT_FILE_NAME, SharedTokenBuckets, TokenBuckets, retry_after_header
from sharing_server.recipients import TokenRecord, TokenStore, find_recipient
from sharing_server.signing import FileClaims, InvalidSignedUrl, UrlSigner, load_url_key

PREFIX = "/delta-sharing"
NDJSON = "application/x-ndjson; charset=utf-8"
VERSION_HEADER = "Delta-Table-Version"
CAPABILITIES_HEADER = "delta-sharing-capabilities"
FILE_ID_HASH_HEADER = "fileidhash"
SIGNATURE_PARAM = "X-Databricks-Signature"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: How often the configuration is re-read without traffic (removed recipients lose access).
CONFIG_POLL_SECONDS = 5.0

log = logging.getLogger(__name__)
access_log = logging.getLogger("sharing_server.access")


# --------------------------------------------------------------------------- errors
class SharingError(Exception):
    """An error answered as ``{"errorCode": ..., "message": ...}`` (PROTOCOL.md error shape)."""

    def __init__(self, status: int, error_code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers = headers or {}


def _unauthenticated(message: str) -> SharingError:
    return SharingError(401, "UNAUTHENTICATED", message, {"WWW-Authenticate": 'Bearer realm="delta-sharing"'})


def _invalid(message: str) -> SharingError:
    return SharingError(400, "INVALID_PARAMETER_VALUE", message)


def _not_found(message: str) -> SharingError:
    return SharingError(404, "RESOURCE_DOES_NOT_EXIST", message)


def _forbidden(message: str) -> SharingError:
    return SharingError(403, "PERMISSION_DENIED", message)


def _rate_limited(retry_after: float) -> SharingError:
    return SharingError(
        429,
        "RESOURCE_EXHAUSTED",
        "too many requests for this recipient; retry later",
        {"Retry-After": retry_after_header(retry_after)},
    )


def _unsupported(message: str) -> SharingError:
    return SharingError(400, "UNSUPPORTED_OPERATION", message)


def _error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errorCode": code, "message": message}, status_code=status, headers=headers)


# --------------------------------------------------------------------------- OpenAPI description
# The server answers with hand-built JSON/NDJSON (exactly the protocol's shapes); these
# declarations only describe those answers in the OpenAPI document (``/delta-sharing/openapi.json``)
# so contract tests and API consumers see the real status codes and media types.
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["errorCode", "message"],
    "properties": {"errorCode": {"type": "string"}, "message": {"type": "string"}},
}
_ERROR_CONTENT = {"application/json": {"schema": _ERROR_SCHEMA}}
_ERRORS = {
    400: {"description": "Invalid request (INVALID_PARAMETER_VALUE, MALFORMED_REQUEST, UNSUPPORTED_OPERATION)", "content": _ERROR_CONTENT},
    401: {"description": "Missing, invalid, expired or revoked bearer token (UNAUTHENTICATED)", "content": _ERROR_CONTENT},
    403: {"description": "Not allowed (PERMISSION_DENIED)", "content": _ERROR_CONTENT},
    404: {"description": "No such share, schema or table for this recipient (RESOURCE_DOES_NOT_EXIST)", "content": _ERROR_CONTENT},
    413: {"description": "Request body over the size limit (MALFORMED_REQUEST)", "content": _ERROR_CONTENT},
    429: {"description": "Rate limit of the recipient exceeded (RESOURCE_EXHAUSTED), see Retry-After", "content": _ERROR_CONTENT},
    500: {"description": "Internal error (INTERNAL_ERROR)", "content": _ERROR_CONTENT},
}
_PAGE_SCHEMA = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": {"type": "object"}}, "nextPageToken": {"type": "string"}},
}
_VERSION_HEADER_DOC = {VERSION_HEADER: {"schema": {"type": "integer"}, "description": "Table version of the answer"}}


def _json_responses(schema: dict) -> dict:
    return {200: {"description": "OK", "content": {"application/json": {"schema": schema}}}, **_ERRORS}


def _ndjson_responses() -> dict:
    ok = {"description": "Newline-delimited JSON actions", "headers": _VERSION_HEADER_DOC,
          "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}
    return {200: ok, **_ERRORS}


_VERSION_RESPONSES = {200: {"description": "Empty body; version in the header", "headers": _VERSION_HEADER_DOC}, **_ERRORS}
_FILE_RESPONSES = {
    200: {"description": "The data file", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    206: {"description": "Part of the data file (Range)"},
    **_ERRORS,
}
_QUERY_BODY = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "predicateHints": {"type": "array", "items": {"type": "string"}},
                        "jsonPredicateHints": {"type": "string"},
                        "limitHint": {"type": "integer", "minimum": 0},
                        "version": {"type": "integer", "minimum": 0},
                        "timestamp": {"type": "string"},
                        "startingVersion": {"type": "integer"},
                        "endingVersion": {"type": "integer"},
                    },
                }
            }
        },
    }
}



# --------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class Caller:
    """The authenticated recipient of a request."""

    recipient: Recipient
    token: TokenRecord


def _name(value: str, kind: str) -> str:
    try:
        return validate_name(value, kind)
    except InvalidNameError as exc:
        raise _invalid(str(exc)) from None


def _paginate(items: list[dict], max_results_raw: str | None, page_token: str | None, listing: str) -> dict:
    """One page of ``items``; page tokens are bound to the listing they came from."""
    max_results = limits.parse_long(max_results_raw, "maxResults")
    max_results = DEFAULT_PAGE_SIZE if max_results is None else min(max_results, MAX_PAGE_SIZE)
    offset = limits.decode_page_token(page_token, listing, len(items)) if page_token else 0
    page = items[offset : offset + max_results]
    body: dict[str, Any] = {"items": page}
    next_offset = offset + len(page)
    if next_offset < len(items):
        body["nextPageToken"] = limits.encode_page_token(next_offset, listing)
    return body


def _share_json(share: Share) -> dict:
    item: dict[str, Any] = {"name": share.name, "id": share.id}
    if share.display_name:
        item["displayName"] = share.display_name
    if share.comment:
        item["comment"] = share.comment
    return item


def _table_json(table: SharedTable, share: Share) -> dict:
    return {"name": table.name, "schema": table.schema, "share": share.name, "shareId": share.id, "id": table.id}


def _parse_timestamp(raw: object, field: str) -> int:
    """Milliseconds since epoch of a protocol timestamp (ISO 8601, UTC, e.g. 2022-01-01T00:00:00Z)."""
    if not isinstance(raw, str) or len(raw) > 64:
        raise _invalid(f"{field} must be an ISO 8601 timestamp string")
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        # Converting year 1 or 9999 with an offset overflows: out of range, not a server error.
        return int(parsed.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise _invalid(f"{field} {raw[:64]!r} is not an ISO 8601 timestamp such as 2022-01-01T00:00:00Z") from None


def _parse_capabilities(request: Request) -> dict[str, list[str]]:
    """``delta-sharing-capabilities`` as ``{key: [values]}``, all lower-cased (PROTOCOL.md)."""
    capabilities: dict[str, list[str]] = {}
    for part in request.headers.get(CAPABILITIES_HEADER, "").split(";"):
        key, sep, values = part.partition("=")
        if sep and key.strip():
            capabilities[key.strip().lower()] = [v.strip().lower() for v in values.split(",") if v.strip()]
    return capabilities


def _file_id(path: str, scheme: str) -> str:
    # Stable per file; the scheme is part of the input so the two fileidhash schemes differ.
    digest = hashlib.md5(path.encode("utf-8")) if scheme == "parquet" else hashlib.sha256(path.encode("utf-8"))
    return digest.hexdigest()[:32]


def _ndjson(lines: Iterable[dict], headers: dict[str, str]) -> Response:
    body = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    return Response(content=body, media_type=NDJSON, headers=headers)


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise _unauthenticated("missing bearer token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def _listening_endpoint(request: Request) -> str:
    """``<scheme>://<address the connection was accepted on>/delta-sharing``: server facts, never the Host header."""
    host, port = request.scope.get("server") or ("127.0.0.1", 8765)
    if ":" in str(host):
        host = f"[{host}]"
    return f"{request.url.scheme}://{host}:{port}{PREFIX}"


# --------------------------------------------------------------------------- service
class SharingService:
    """Request-independent logic: authentication, entitlement, table access."""

    def __init__(
        self,
        config_path: Path | str | None,
        tokens: TokenStore,
        signer: UrlSigner,
        buckets: TokenBuckets | SharedTokenBuckets,
        public_endpoint: str | None = None,
    ):
        self.tokens = tokens
        # Every valid configuration (the first included) retires recipients it no longer lists.
        self.config = ReloadingSharesConfig(config_path, on_change=self._reconcile)
        self.signer = signer
        self.buckets = buckets
        self.public_endpoint = public_endpoint.rstrip("/") if public_endpoint else None

    def _reconcile(self, config: SharesConfig) -> None:
        retired = self.tokens.reconcile(r.name for r in config.recipients)
        for name in retired:
            log.warning("recipient %s left the shares configuration: its tokens are revoked", name)

    def throttle(self, recipient: str) -> None:
        """Spend one request of ``recipient``'s allowance or answer 429 (per-recipient bucket)."""
        wait = self.buckets.take(f"recipient:{recipient}", self.shares.rate_limit)
        if wait > 0:
            raise _rate_limited(wait)

    @property
    def shares(self) -> SharesConfig:
        return self.config.get()

    def authenticate(self, request: Request) -> Caller:
        """The caller of ``request``; 401 for a bad token, 429 when its address keeps sending bad ones.

        The token is checked first: a valid token is never refused because of failures
        from the same address, so a flood of bad tokens cannot lock partners out.
        Guessing gains nothing from that: a secret has 256 random bits.
        """
        token = _bearer_token(request)
        shares = self.shares
        record = self.tokens.authenticate(token)
        recipient = find_recipient(shares, self.tokens, record.recipient) if record is not None else None
        if record is None or recipient is None:
            self._count_failed_login(request, shares)
            raise _unauthenticated("the bearer token is invalid, expired or revoked")
        audit.annotate(request, recipient=record.recipient)
        self.throttle(record.recipient)
        return Caller(recipient=recipient, token=record)

    def _count_failed_login(self, request: Request, shares: SharesConfig) -> None:
        # Per client address (X-Forwarded-For only from configured proxies): 429 once its
        # failures exceed the burst, which slows floods and tells honest clients to stop.
        client = request.client.host if request.client else "unknown"
        wait = self.buckets.take(f"failed-login:{client}", shares.rate_limit)
        if wait > 0:
            raise _rate_limited(wait)

    def share_for(self, caller: Caller, share_name: str) -> Share:
        _name(share_name, "share")
        share = self.shares.share(share_name)
        if share is None or not caller.recipient.may_read(share.name):
            # Identical answer for "absent" and "not yours": no probing for other shares.
            raise _not_found(f"share {share_name!r} does not exist or is not shared with you")
        return share

    def table_for(self, caller: Caller, share_name: str, schema_name: str, table_name: str) -> tuple[Share, SharedTable]:
        share = self.share_for(caller, share_name)
        _name(schema_name, "schema")
        _name(table_name, "table")
        schema = share.schema(schema_name)
        if schema is None:
            raise _not_found(f"schema {schema_name!r} does not exist in share {share.name!r}")
        table = schema.table(table_name)
        if table is None:
            raise _not_found(f"table {table_name!r} does not exist in schema {share.name}.{schema.name}")
        return share, table

    def location(self, table: SharedTable, recipient: str | None = None, caller: Caller | None = None) -> Path:
        """The Delta table a recipient reads for ``table``: its own projection (``serve_from: projections``).

        Resolution goes through the authenticated recipient only, never through anything
        in the request path, so no name a client sends can reach another recipient's files.
        """
        if caller is not None:
            recipient = caller.recipient.name
        if self.shares.serve_from == "source":
            return table.resolve_location(ggm_config.lake_root())
        if recipient is None:
            raise _not_found(f"table {table.qualified_name} has no data available")
        validate_name(recipient, "recipient")
        return projections.projection_location(recipient, table, ggm_config.lake_root())

    def resolve_version(self, caller: Caller, table: SharedTable, version: object, timestamp: object) -> int | None:
        """The time-travel version requested, or None for the latest version."""
        if version is None and timestamp is None:
            return None
        if version is not None and timestamp is not None:
            raise _invalid("version and timestamp are mutually exclusive")
        if not table.history_shared:
            raise _invalid(f"table {table.qualified_name} is shared without history: version/timestamp not allowed")
        if version is not None:
            return limits.check_long(version, "version")
        try:
            return delta_tables.version_as_of(self.location(table, caller=caller), _parse_timestamp(timestamp, "timestamp"))
        except delta_tables.TableUnavailableError:
            raise _not_found(f"table {table.qualified_name} has no data available") from None
        except delta_tables.VersionNotFoundError as exc:
            raise _invalid(str(exc)) from None

    def snapshot(self, caller: Caller, table: SharedTable, version: int | None, with_files: bool) -> TableSnapshot:
        try:
            return delta_tables.load_snapshot(self.location(table, caller=caller), version, with_files=with_files)
        except delta_tables.TableUnavailableError:
            log.error("shared table %s has no readable Delta table at %s", table.qualified_name, table.location)
            raise _not_found(f"table {table.qualified_name} has no data available") from None
        except delta_tables.VersionNotFoundError as exc:
            raise _invalid(str(exc)) from None

    def public_base(self, request: Request) -> str:
        """The endpoint URLs are built on: configured (argument, ``server.public_endpoint``,
        ``GGM_SHARING_ENDPOINT``), else the address the server listens on; never the Host header."""
        configured = self.public_endpoint or self.shares.public_endpoint or os.environ.get("GGM_SHARING_ENDPOINT")
        return configured.rstrip("/") if configured else _listening_endpoint(request)

    def file_url(self, request: Request, table: SharedTable, snapshot: TableSnapshot, path: str, caller: Caller,
                 expires_ms: int, *, kind: str = "add", version: int | None = None) -> str:
        """A signed URL for one file; ``kind``/``version`` name a change data feed action's commit."""
        claims = FileClaims(
            share=table.share,
            schema=table.schema,
            table=table.name,
            table_id=snapshot.table_id,
            version=snapshot.version if version is None else version,
            path=path,
            expires_ms=expires_ms,
            token_id=caller.token.token_id,
            kind=kind,
        )
        payload, _, mac = self.signer.sign(claims).partition(".")
        # The signature travels as a query parameter under a name that delta-kernel (the
        # official client's delta-format reader) recognises as a pre-signed URL; without it
        # the reader takes the URL for a local path. The path form "<payload>.<mac>" is
        # accepted as well.
        return f"{self.public_base(request)}/files/{payload}?{SIGNATURE_PARAM}={mac}"

    def url_expiry_ms(self, caller: Caller) -> int:
        expiry = int(time.time() * 1000) + self.shares.url_ttl_seconds * 1000
        token_expiry = caller.token.expires()
        if token_expiry is not None:
            # A URL must not outlive the token that obtained it.
            expiry = min(expiry, int(token_expiry.timestamp() * 1000))
        return expiry


@functools.lru_cache(maxsize=64)
def _files_of_version(location: str, table_id: str, version: int, kind: str = "add") -> frozenset[str]:
    """Paths a signed URL of ``kind`` may serve for one (immutable) table version.

    ``add``: the active data files of the version; ``cdf``/``remove``: the files named by
    those actions in the commit of the version. Cached because every file fetch asks.
    """
    snapshot = delta_tables.load_snapshot(Path(location), version, with_files=kind == "add")
    if snapshot.table_id != table_id:
        return frozenset()
    if kind == "add":
        return frozenset(f.path for f in snapshot.files)
    if kind in ("cdf", "remove"):
        return delta_tables.commit_file_paths(Path(location), version, kind)
    return frozenset()



# --------------------------------------------------------------------------- response formats
def _choose_format(request: Request, snapshot: TableSnapshot) -> str:
    """``parquet`` or ``delta`` per the capabilities header (PROTOCOL.md "responseFormat")."""
    capabilities = _parse_capabilities(request)
    requested = capabilities.get("responseformat") or ["parquet"]
    unknown = set(requested) - {"parquet", "delta"}
    if unknown:
        raise _invalid(f"unsupported responseformat {', '.join(sorted(unknown))}")
    if "parquet" in requested and snapshot.parquet_compatible:
        return "parquet"
    if "delta" in requested:
        client_features = set(capabilities.get("readerfeatures", []))
        missing = {f for f in snapshot.reader_features if f.lower() not in client_features}
        if missing:
            raise _unsupported(f"the client does not support reader features {', '.join(sorted(missing))}")
        return "delta"
    raise _unsupported(
        "this table uses Delta features that the parquet response format cannot express; "
        "request responseformat=delta"
    )


def _format_headers(request: Request, version: int, response_format: str) -> dict[str, str]:
    headers = {VERSION_HEADER: str(version)}
    if response_format == "delta" or CAPABILITIES_HEADER in request.headers:
        headers[CAPABILITIES_HEADER] = f"responseformat={response_format}"
    return headers


def _protocol_line(snapshot: TableSnapshot, response_format: str) -> dict:
    if response_format == "parquet":
        return {"protocol": {"minReaderVersion": 1}}
    delta_protocol: dict[str, Any] = {
        "minReaderVersion": snapshot.min_reader_version,
        "minWriterVersion": snapshot.min_writer_version,
    }
    if snapshot.reader_features:
        delta_protocol["readerFeatures"] = list(snapshot.reader_features)
    if snapshot.writer_features:
        delta_protocol["writerFeatures"] = list(snapshot.writer_features)
    return {"protocol": {"deltaProtocol": delta_protocol}}


def _metadata_line(snapshot: TableSnapshot, response_format: str, time_travel: bool, with_size: bool) -> dict:
    extra: dict[str, Any] = {}
    if time_travel:
        extra["version"] = snapshot.version
    if with_size:
        extra["size"] = snapshot.size_in_bytes
        extra["numFiles"] = len(snapshot.files)
    if response_format == "parquet":
        metadata: dict[str, Any] = {
            "id": snapshot.table_id,
            "format": {"provider": "parquet"},
            "schemaString": snapshot.schema_string,
            "partitionColumns": list(snapshot.partition_columns),
            "configuration": snapshot.configuration,
        }
        if snapshot.name:
            metadata["name"] = snapshot.name
        if snapshot.description:
            metadata["description"] = snapshot.description
        return {"metaData": {**metadata, **extra}}
    delta_metadata: dict[str, Any] = {
        "id": snapshot.table_id,
        "format": {"provider": "parquet", "options": {}},
        "schemaString": snapshot.schema_string,
        "partitionColumns": list(snapshot.partition_columns),
        "configuration": snapshot.configuration,
    }
    if snapshot.name:
        delta_metadata["name"] = snapshot.name
    if snapshot.description:
        delta_metadata["description"] = snapshot.description
    if snapshot.created_time is not None:
        delta_metadata["createdTime"] = snapshot.created_time
    return {"metaData": {"deltaMetadata": delta_metadata, **extra}}


def _apply_limit_hint(files: tuple[delta_tables.DataFile, ...], limit_hint: int | None) -> list[delta_tables.DataFile]:
    """Enough files to cover ``limitHint`` rows, judged by file statistics (best effort)."""
    if limit_hint is None:
        return list(files)
    chosen: list[delta_tables.DataFile] = []
    rows = 0
    for data_file in files:
        if rows >= limit_hint:
            break
        chosen.append(data_file)
        if data_file.num_records is not None:
            rows += data_file.num_records
        # A file without stats counts as zero rows, so the client still gets enough.
    return chosen


def _cdf_range(
    location: Path,
    latest: int,
    starting_version: str | None,
    ending_version: str | None,
    starting_timestamp: str | None,
    ending_timestamp: str | None,
) -> tuple[int, int]:
    """The inclusive version range of a change data feed request (PROTOCOL.md "Read Change Data Feed").

    As in Delta, an ending bound beyond the latest version means "up to the latest";
    a start beyond it, or a start after the end, is an error.
    """
    if starting_version is not None and starting_timestamp is not None:
        raise _invalid("startingVersion and startingTimestamp are mutually exclusive")
    if ending_version is not None and ending_timestamp is not None:
        raise _invalid("endingVersion and endingTimestamp are mutually exclusive")
    try:
        if starting_timestamp is not None:
            start = delta_tables.version_at_or_after(location, _parse_timestamp(starting_timestamp, "startingTimestamp"))
        else:
            parsed_start = limits.parse_long(starting_version, "startingVersion")
            if parsed_start is None:
                raise _invalid("startingVersion or startingTimestamp is required")
            start = parsed_start
        if ending_timestamp is not None:
            end = delta_tables.version_as_of(location, _parse_timestamp(ending_timestamp, "endingTimestamp"))
        else:
            parsed_end = limits.parse_long(ending_version, "endingVersion")
            end = latest if parsed_end is None else min(parsed_end, latest)
    except delta_tables.VersionNotFoundError as exc:
        raise _invalid(str(exc)) from None
    if start > latest:
        raise _invalid(f"startingVersion {start} is after the latest table version {latest}")
    if start > end:
        raise _invalid(f"the starting version {start} is after the ending version {end}")
    return start, end


def _change_line(change: delta_tables.ChangeFile, url: str, file_id: str, expires_ms: int, response_format: str) -> dict:
    """One ``add``/``cdf``/``remove`` line (parquet format) or wrapped Delta action (delta format)."""
    if response_format == "parquet":
        entry: dict[str, Any] = {
            "url": url,
            "id": file_id,
            "partitionValues": change.partition_values,
            "size": change.size,
            "timestamp": change.timestamp,
            "version": change.version,
            "expirationTimestamp": expires_ms,
        }
        if change.stats is not None:
            entry["stats"] = change.stats
        return {change.kind: entry}
    action: dict[str, Any] = {"path": url, "partitionValues": change.partition_values, "size": change.size}
    if change.kind == "add":
        action.update(modificationTime=change.timestamp, dataChange=True)
        if change.stats is not None:
            action["stats"] = change.stats
        name = "add"
    elif change.kind == "cdf":
        action["dataChange"] = False
        name = "cdc"
    else:
        action.update(deletionTimestamp=change.timestamp, dataChange=True, extendedFileMetadata=True)
        name = "remove"
    return {
        "file": {
            "id": file_id,
            "deltaSingleAction": {name: action},
            "version": change.version,
            "timestamp": change.timestamp,
            "expirationTimestamp": expires_ms,
        }
    }


# --------------------------------------------------------------------------- query table
@dataclass(frozen=True)
class QueryRequest:
    """The validated body of a query table request."""

    version: object
    timestamp: object
    limit_hint: int | None
    predicate: Mapping | None


def _query_request(raw_body: bytes) -> QueryRequest:
    body = limits.loads_bounded(raw_body, "the request body") if raw_body.strip() else {}
    if not isinstance(body, dict):
        raise SharingError(400, "MALFORMED_REQUEST", "the request body must be a JSON object")
    if body.get("startingVersion") is not None or body.get("endingVersion") is not None:
        raise _unsupported("streaming queries (startingVersion/endingVersion) are not supported by this server")
    return QueryRequest(
        version=body.get("version"),
        timestamp=body.get("timestamp"),
        limit_hint=limits.check_long(body.get("limitHint"), "limitHint"),
        predicate=predicates.parse_hints(body.get("jsonPredicateHints")),
    )


def _file_id_scheme(request: Request) -> str | None:
    scheme = request.headers.get(FILE_ID_HASH_HEADER)
    if scheme is None:
        return None
    scheme = scheme.strip().lower()
    if scheme not in ("parquet", "delta"):
        raise _invalid("fileidhash must be 'parquet' or 'delta'")
    return scheme


def _query_file_line(
    data_file: delta_tables.DataFile, url: str, file_id: str, expires_ms: int, travel: dict, response_format: str
) -> dict:
    """One ``file`` line of a query answer (parquet format, or a wrapped Delta ``add``)."""
    if response_format == "parquet":
        entry: dict[str, Any] = {
            "url": url,
            "id": file_id,
            "partitionValues": data_file.partition_values,
            "size": data_file.size,
            "expirationTimestamp": expires_ms,
            **travel,
        }
        if data_file.stats is not None:
            entry["stats"] = data_file.stats
        return {"file": entry}
    add: dict[str, Any] = {
        "path": url,
        "partitionValues": data_file.partition_values,
        "size": data_file.size,
        "modificationTime": data_file.modification_time,
        "dataChange": True,
    }
    if data_file.stats is not None:
        add["stats"] = data_file.stats
    return {"file": {"id": file_id, "expirationTimestamp": expires_ms, "deltaSingleAction": {"add": add}, **travel}}


async def _read_body(request: Request) -> bytes:
    """The request body, at most :data:`~sharing_server.limits.MAX_BODY_BYTES`, read only after authentication."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> SharingError:
    return SharingError(413, "MALFORMED_REQUEST", f"the request body exceeds {limits.MAX_BODY_BYTES} bytes")


def _answer_query(service: SharingService, request: Request, caller: Caller, shared: SharedTable, query: QueryRequest) -> Response:
    """The NDJSON answer of a query: protocol, metadata, then one line per (pruned, limited) file."""
    file_id_scheme = _file_id_scheme(request)
    wanted = service.resolve_version(caller, shared, query.version, query.timestamp)
    snapshot = service.snapshot(caller, shared, wanted, with_files=True)
    response_format = _choose_format(request, snapshot)
    location = service.location(shared, caller=caller)
    if response_format == "delta" and "deletionVectors" in snapshot.reader_features:
        if delta_tables.has_deletion_vectors(location, snapshot.version):
            raise _unsupported("tables with deletion vectors in use cannot be shared by this server yet")
    travel: dict[str, Any] = {}
    if wanted is not None:
        travel["version"] = snapshot.version
        commit_ts = delta_tables.commit_timestamps(location).get(snapshot.version)
        if commit_ts is not None:
            travel["timestamp"] = commit_ts
    expires_ms = service.url_expiry_ms(caller)
    scheme = file_id_scheme or response_format
    # Partition pruning first, then the limit: limitHint counts rows that may match.
    candidates = predicates.prune_files(
        snapshot.files, query.predicate, snapshot.partition_columns, lambda f: f.partition_values, lambda f: f.stats
    )
    chosen = _apply_limit_hint(tuple(candidates), query.limit_hint)
    lines: list[dict] = [
        _protocol_line(snapshot, response_format),
        _metadata_line(snapshot, response_format, time_travel=wanted is not None, with_size=False),
    ]
    for data_file in chosen:
        url = service.file_url(request, shared, snapshot, data_file.path, caller, expires_ms)
        lines.append(_query_file_line(data_file, url, _file_id(data_file.path, scheme), expires_ms, travel, response_format))
    headers = _format_headers(request, snapshot.version, response_format)
    if file_id_scheme is not None:
        headers[FILE_ID_HASH_HEADER] = file_id_scheme
    access_log.info(
        "query recipient=%s table=%s version=%s files=%d format=%s",
        caller.recipient.name, shared.qualified_name, snapshot.version, len(chosen), response_format,
    )
    audit.annotate(request, version=snapshot.version, files=len(chosen))
    return _ndjson(lines, headers)


# --------------------------------------------------------------------------- routers
def _catalog_router(service: SharingService) -> APIRouter:
    """List shares, get share, list schemas, list tables, list all tables."""
    router = APIRouter(prefix=PREFIX)

    @router.get("/shares", responses=_json_responses(_PAGE_SCHEMA))
    def list_shares(request: Request, maxResults: str | None = None, pageToken: str | None = None) -> JSONResponse:
        caller = service.authenticate(request)
        items = [_share_json(s) for s in service.shares.shares_for(caller.recipient)]
        return JSONResponse(_paginate(items, maxResults, pageToken, "shares"))

    @router.get("/shares/{share}", responses=_json_responses({"type": "object", "properties": {"share": {"type": "object"}}}))
    def get_share(request: Request, share: str) -> JSONResponse:
        caller = service.authenticate(request)
        return JSONResponse({"share": _share_json(service.share_for(caller, share))})

    @router.get("/shares/{share}/schemas", responses=_json_responses(_PAGE_SCHEMA))
    def list_schemas(request: Request, share: str, maxResults: str | None = None, pageToken: str | None = None) -> JSONResponse:
        caller = service.authenticate(request)
        found = service.share_for(caller, share)
        items = [{"name": s.name, "share": found.name} for s in found.schemas]
        return JSONResponse(_paginate(items, maxResults, pageToken, f"schemas:{found.name.lower()}"))

    @router.get("/shares/{share}/schemas/{schema}/tables", responses=_json_responses(_PAGE_SCHEMA))
    def list_tables(request: Request, share: str, schema: str, maxResults: str | None = None, pageToken: str | None = None) -> JSONResponse:
        caller = service.authenticate(request)
        found = service.share_for(caller, share)
        _name(schema, "schema")
        found_schema = found.schema(schema)
        if found_schema is None:
            raise _not_found(f"schema {schema!r} does not exist in share {found.name!r}")
        items = [_table_json(t, found) for t in found_schema.tables]
        listing = f"tables:{found.name.lower()}.{found_schema.name.lower()}"
        return JSONResponse(_paginate(items, maxResults, pageToken, listing))

    @router.get("/shares/{share}/all-tables", responses=_json_responses(_PAGE_SCHEMA))
    def list_all_tables(request: Request, share: str, maxResults: str | None = None, pageToken: str | None = None) -> JSONResponse:
        caller = service.authenticate(request)
        found = service.share_for(caller, share)
        items = [_table_json(t, found) for t in found.all_tables()]
        return JSONResponse(_paginate(items, maxResults, pageToken, f"all-tables:{found.name.lower()}"))

    return router


def _version_router(service: SharingService) -> APIRouter:
    """Table version (GET …/version and the older HEAD form) and table metadata."""
    router = APIRouter(prefix=f"{PREFIX}/shares/{{share}}/schemas/{{schema}}/tables/{{table}}")

    def _table_version(request: Request, share: str, schema: str, table: str, starting_timestamp: str | None) -> Response:
        caller = service.authenticate(request)
        _, shared = service.table_for(caller, share, schema, table)
        if starting_timestamp is None:
            version = service.snapshot(caller, shared, None, with_files=False).version
            return Response(status_code=200, headers={VERSION_HEADER: str(version)})
        if not shared.history_shared:
            raise _invalid(f"table {shared.qualified_name} is shared without history: startingTimestamp not allowed")
        try:
            version = delta_tables.version_at_or_after(
                service.location(shared, caller=caller), _parse_timestamp(starting_timestamp, "startingTimestamp")
            )
        except delta_tables.TableUnavailableError:
            raise _not_found(f"table {shared.qualified_name} has no data available") from None
        except delta_tables.VersionNotFoundError as exc:
            raise _invalid(str(exc)) from None
        return Response(status_code=200, headers={VERSION_HEADER: str(version)})

    @router.get("/version", responses=_VERSION_RESPONSES)
    def table_version(request: Request, share: str, schema: str, table: str, startingTimestamp: str | None = None) -> Response:
        return _table_version(request, share, schema, table, startingTimestamp)

    @router.head("", responses=_VERSION_RESPONSES)
    def table_version_deprecated_head(request: Request, share: str, schema: str, table: str) -> Response:
        # The pre-2023 form of "Query Table Version"; still accepted by the protocol.
        return _table_version(request, share, schema, table, None)

    @router.get("/metadata", responses=_ndjson_responses())
    def table_metadata(request: Request, share: str, schema: str, table: str, version: str | None = None, timestamp: str | None = None) -> Response:
        caller = service.authenticate(request)
        _, shared = service.table_for(caller, share, schema, table)
        wanted = service.resolve_version(caller, shared, limits.parse_long(version, "version"), timestamp)
        snapshot = service.snapshot(caller, shared, wanted, with_files=True)
        response_format = _choose_format(request, snapshot)
        lines = [
            _protocol_line(snapshot, response_format),
            _metadata_line(snapshot, response_format, time_travel=wanted is not None, with_size=True),
        ]
        return _ndjson(lines, _format_headers(request, snapshot.version, response_format))

    return router


def _data_router(service: SharingService) -> APIRouter:
    """Query table and the change data feed."""
    router = APIRouter(prefix=f"{PREFIX}/shares/{{share}}/schemas/{{schema}}/tables/{{table}}")

    @router.post("/query", responses=_ndjson_responses(), openapi_extra=_QUERY_BODY)
    async def query_table(request: Request, share: str, schema: str, table: str) -> Response:
        # Authenticate before a single body byte is read: an anonymous upload costs nothing.
        caller = await run_in_threadpool(service.authenticate, request)
        raw_body = await _read_body(request)
        # The Delta work runs in the thread pool.
        return await run_in_threadpool(_query_table, request, caller, share, schema, table, raw_body)

    def _query_table(request: Request, caller: Caller, share: str, schema: str, table: str, raw_body: bytes) -> Response:
        _, shared = service.table_for(caller, share, schema, table)
        return _answer_query(service, request, caller, shared, _query_request(raw_body))

    @router.get("/changes", responses=_ndjson_responses())
    def table_changes(
        request: Request,
        share: str,
        schema: str,
        table: str,
        startingVersion: str | None = None,
        endingVersion: str | None = None,
        startingTimestamp: str | None = None,
        endingTimestamp: str | None = None,
    ) -> Response:
        caller = service.authenticate(request)
        _, shared = service.table_for(caller, share, schema, table)
        if not shared.history_shared:
            raise _invalid(f"table {shared.qualified_name} is shared without history: its change data feed is not shared")
        latest = service.snapshot(caller, shared, None, with_files=False)
        location = service.location(shared, caller=caller)
        bounds = _cdf_range(location, latest.version, startingVersion, endingVersion, startingTimestamp, endingTimestamp)
        return _answer_changes(service, request, caller, shared, bounds)

    return router


def _answer_changes(service: SharingService, request: Request, caller: Caller, shared: SharedTable, bounds: tuple[int, int]) -> Response:
    """The NDJSON answer of a change data feed request for the inclusive version range ``bounds``."""
    start, end = bounds
    location = service.location(shared, caller=caller)
    try:
        changes = delta_tables.change_files(location, start, end)
    except delta_tables.ChangeDataFeedDisabledError as exc:
        raise _invalid(f"table {shared.qualified_name}: {exc} (delta.enableChangeDataFeed)") from None
    except delta_tables.VersionNotFoundError as exc:
        raise _invalid(str(exc)) from None
    snapshot = service.snapshot(caller, shared, end, with_files=False)
    response_format = _choose_format(request, snapshot)
    expires_ms = service.url_expiry_ms(caller)
    scheme = (request.headers.get(FILE_ID_HASH_HEADER) or response_format).strip().lower()
    if scheme not in ("parquet", "delta"):
        raise _invalid("fileidhash must be 'parquet' or 'delta'")
    # The metadata of the range's first version, with its "version": delta-format readers
    # rebuild a Delta log from the answer and start it at that version.
    start_snapshot = service.snapshot(caller, shared, start, with_files=False)
    lines: list[dict] = [
        _protocol_line(snapshot, response_format),
        _metadata_line(start_snapshot, response_format, time_travel=True, with_size=False),
    ]
    for change in changes:
        url = service.file_url(request, shared, snapshot, change.path, caller, expires_ms, kind=change.kind, version=change.version)
        lines.append(_change_line(change, url, _file_id(change.path, scheme), expires_ms, response_format))
    headers = _format_headers(request, start, response_format)
    if FILE_ID_HASH_HEADER in request.headers:
        headers[FILE_ID_HASH_HEADER] = scheme
    access_log.info(
        "changes recipient=%s table=%s versions=%d..%d files=%d format=%s",
        caller.recipient.name, shared.qualified_name, start, end, len(changes), response_format,
    )
    audit.annotate(request, version=start, files=len(changes))
    return _ndjson(lines, headers)


def _files_router(service: SharingService) -> APIRouter:
    """Signed data file URLs (GET and HEAD), fetched without a bearer token."""
    router = APIRouter(prefix=f"{PREFIX}/files")

    @router.get("/{opaque}", responses=_FILE_RESPONSES, operation_id="data_file_get")
    @router.head("/{opaque}", responses=_FILE_RESPONSES, operation_id="data_file_head")
    def data_file(request: Request, opaque: str) -> Response:
        signature = request.query_params.get(SIGNATURE_PARAM)
        if signature is not None:
            opaque = f"{opaque}.{signature}"
        try:
            claims = service.signer.verify(opaque)
        except InvalidSignedUrl as exc:
            raise _forbidden(str(exc)) from None
        record = service.tokens.records().get(claims.token_id)
        audit.annotate(
            request, recipient=record.recipient if record else None, share=claims.share, schema=claims.schema,
            table=claims.table, version=claims.version, files=1,
        )
        if record is None or not service.tokens.is_active(claims.token_id):
            raise _forbidden("the token that obtained this URL has been revoked or has expired")
        # Downloads are not throttled: each URL was handed out by a (throttled) query, and a
        # client fetches a query's files in parallel.
        return FileResponse(_signed_file_path(service, claims, record), media_type="application/octet-stream")

    return router


def _signed_file_path(service: SharingService, claims: FileClaims, record: TokenRecord) -> Path:
    """The local file a verified URL names, if the recipient may still read it and it belongs to that version."""
    shares = service.shares
    recipient = find_recipient(shares, service.tokens, record.recipient)
    share = shares.share(claims.share)
    if recipient is None or share is None or not recipient.may_read(share.name):
        raise _forbidden("this URL is no longer valid")
    schema = share.schema(claims.schema)
    shared = schema.table(claims.table) if schema else None
    if shared is None:
        raise _forbidden("this URL is no longer valid")
    location = service.location(shared, recipient=recipient.name)
    try:
        allowed = _files_of_version(str(location), claims.table_id, claims.version, claims.kind)
    except (delta_tables.TableUnavailableError, delta_tables.VersionNotFoundError):
        raise _forbidden("this URL is no longer valid") from None
    if claims.path not in allowed:
        raise _forbidden("the file is not part of the shared table version")
    try:
        path = delta_tables.local_file_path(location, claims.path)
    except delta_tables.PathOutsideTableError as exc:
        raise _forbidden(str(exc)) from None
    if not path.is_file():
        raise _not_found("the data file no longer exists (vacuumed?)")
    return path


# --------------------------------------------------------------------------- app
class BodySizeLimitMiddleware:
    """Refuse a request whose declared body is over the limit, before anything reads it (413).

    Bodies without a Content-Length (chunked) are capped while they are read, after
    authentication (see ``query_table``).
    """

    def __init__(self, app, max_bytes: int = limits.MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            declared = dict(scope.get("headers") or []).get(b"content-length")
            if declared is not None and (not declared.strip().isdigit() or int(declared) > self.max_bytes):
                error = _too_large() if declared.strip().isdigit() else SharingError(400, "MALFORMED_REQUEST", "invalid Content-Length")
                response = _error_response(error.status, error.error_code, error.message, {"Connection": "close"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error in the protocol's shape; hostile input is a 4xx, only real faults a 500."""

    @app.exception_handler(SharingError)
    async def _sharing_error(_: Request, exc: SharingError) -> JSONResponse:
        return _error_response(exc.status, exc.error_code, exc.message, exc.headers)

    @app.exception_handler(limits.InputError)
    async def _input_error(_: Request, exc: limits.InputError) -> JSONResponse:
        return _error_response(exc.status, exc.code, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _error_response(404, "RESOURCE_DOES_NOT_EXIST", "no such resource")
        if exc.status_code == 405:
            return _error_response(405, "MALFORMED_REQUEST", "method not allowed for this resource")
        return _error_response(exc.status_code, "MALFORMED_REQUEST", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(400, "INVALID_PARAMETER_VALUE", "invalid request parameters")

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in sharing server")
        return _error_response(500, "INTERNAL_ERROR", "internal server error")


def _install_middleware(app: FastAPI, audit_dir: Path | str | None, trusted_proxies: tuple[str, ...]) -> None:
    # Added innermost first. Outermost, the client address is settled (X-Forwarded-For
    # only from trusted proxies), so the audit log and the failed-login counter see the
    # real one; oversized bodies are refused inside the audit, so they are logged too.
    app.add_middleware(BodySizeLimitMiddleware)
    app.add_middleware(audit.AuditMiddleware, audit_dir=audit_dir)
    if trusted_proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(trusted_proxies))


def _lifespan(service: SharingService):
    """Re-read the configuration every few seconds even without traffic, so removals take effect promptly."""

    async def watch() -> None:
        while True:
            await asyncio.sleep(CONFIG_POLL_SECONDS)
            try:
                await run_in_threadpool(service.config.get)
            except Exception:  # noqa: BLE001 - the watcher must survive a bad moment on disk
                log.exception("re-reading the shares configuration failed")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        task = asyncio.create_task(watch())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan


def create_app(
    config_path: Path | str | None = None,
    *,
    state_path: Path | str | None = None,
    url_key: bytes | None = None,
    audit_dir: Path | str | None = None,
    public_endpoint: str | None = None,
    trusted_proxies: list[str] | tuple[str, ...] | None = None,
) -> FastAPI:
    """Build the Delta Sharing server application.

    ``config_path`` defaults to ``GGM_SHARES_CONFIG`` / ``config/shares.yaml``;
    ``state_path`` to ``<sharing root>/recipients.json`` (its folder also holds the shared
    rate-limit buckets and the generated URL signing key); ``url_key`` (for signing file
    URLs) to secret ``ggm_sharing_url_key`` or the generated key; ``audit_dir`` (request
    audit log, :mod:`sharing_server.audit`) to ``<sharing root>/audit``;
    ``public_endpoint`` (base of file URLs) to ``server.public_endpoint`` /
    ``GGM_SHARING_ENDPOINT``; ``trusted_proxies`` to ``server.trusted_proxies`` (none).
    """
    tokens = TokenStore(state_path)
    state_dir = tokens.path.parent
    service = SharingService(
        config_path,
        tokens,
        UrlSigner(url_key if url_key is not None else load_url_key(state_dir)),
        SharedTokenBuckets(state_dir / RATE_LIMIT_FILE_NAME),
        public_endpoint,
    )
    app = FastAPI(
        title="GGM Lakehouse Delta Sharing server",
        docs_url=None,
        redoc_url=None,
        # The description of the API itself (no data): for contract tests and integrators.
        openapi_url=f"{PREFIX}/openapi.json",
        lifespan=_lifespan(service),
    )
    app.state.sharing = service
    _install_error_handlers(app)
    proxies = tuple(trusted_proxies) if trusted_proxies is not None else service.shares.trusted_proxies
    _install_middleware(app, audit_dir, proxies)
    for router in (_catalog_router(service), _version_router(service), _data_router(service), _files_router(service)):
        app.include_router(router)
    return app


def serve(host: str = "127.0.0.1", port: int = 8765, *, config_path: Path | str | None = None) -> None:
    """Run the sharing server in the foreground until interrupted (``ggm sharing serve``).

    Logging goes through :mod:`sharing_server.logredact` (no signatures or tokens in any
    line); uvicorn's own proxy-header handling is off (the app trusts only
    ``server.trusted_proxies``); on SIGTERM/SIGINT running requests get
    ``server.shutdown_timeout_seconds`` to finish before they are cancelled.
    """
    import uvicorn

    log_config = logredact.logging_config()
    logging.config.dictConfig(log_config)
    app = create_app(config_path)
    shares = app.state.sharing.shares
    if not (shares.public_endpoint or os.environ.get("GGM_SHARING_ENDPOINT")):
        log.warning(
            "no public endpoint configured (server.public_endpoint or GGM_SHARING_ENDPOINT): "
            "file URLs name the listening address http://%s:%s%s", host, port, PREFIX,
        )
    uvicorn.run(
        app, host=host, port=port, log_config=log_config, proxy_headers=False,
        timeout_graceful_shutdown=shares.shutdown_timeout_seconds,
    )
