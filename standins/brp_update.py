"""Stand-in for the Haal Centraal BRP Update API 1.0.0 (volgindicaties and wijzigingen).

RvIG does not offer this API; its README says municipalities may offer it locally. The
stand-in follows ``specificatie/openapi.yaml`` of BRP-API/Haal-Centraal-BRP-Update-API:

=====================================  ===================================================================
``GET  {prefix}/volgindicaties``        the caller's active volgindicaties (no einddatum, or one after today)
``GET  {prefix}/volgindicaties/{bsn}``  one volgindicatie of the caller (404 when it never existed)
``PUT  {prefix}/volgindicaties/{bsn}``  place (201, ``application/hal+json``), change (200) or end it:
                                        ``{}`` clears the einddatum, ``{"einddatum": "<today>"}`` ends it
``GET  {prefix}/wijzigingen?vanaf=D``   BSNs of followed persons whose persoonslijst changed on or after D
=====================================  ===================================================================

Behaviour worth knowing:

* Volgindicaties belong to the caller (the afnemer): they are kept per API key (by
  its hash), in memory and optionally in a JSON file (``VolgindicatieStore(path)``),
  and survive clock moves (``set_as_of``) so a demo can run day after day.
  ``begindatum`` is the registry's date when the volgindicatie was first placed.
* "Today" is the registry's as-of date (:class:`standins.common.RegistryState`).
* A change counts for a caller when the person had an active volgindicatie of that
  caller on the day of the change (``begindatum <= day < einddatum``).
* The changes come from the demo municipality's daily change log
  (``Municipality.changes``: births with the parents, deaths, moves). A birth changes
  the parents' persoonslijst too (``kinderen``).
* The spec has no DELETE: a volgindicatie ends with an einddatum. Unknown paths and
  methods answer problem+json 404/405.
* Every response carries the spec's ``api-version`` header.
* Authentication as in the Haal Centraal proef environments: header ``X-API-KEY``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Iterable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from standins.common import (
    Fault,
    RegistryHandle,
    RegistryState,
    ThreadedUvicorn,
    TokenBucketRateLimiter,
    WorldLike,
    WorldSource,
    admin_router,
    install_gate,
    problem_response,
)

DEFAULT_PATH_PREFIX = "/haalcentraal/api/brpupdate"
API_KEY_HEADER = "X-API-KEY"
API_VERSION = "1.0.0"
JSON_MEDIA_TYPE = "application/json"
HAL_JSON_MEDIA_TYPE = "application/hal+json"

BSN_PATTERN = r"^[0-9]{9}$"
VALIDATION_TYPE_BASE = "https://www.vng.nl/realisatie/api/validaties/"
RFC2616 = "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html"


# --------------------------------------------------------------------------- volgindicaties


@dataclass
class Volgindicatie:
    """One afnemer following one person."""

    burgerservicenummer: str
    begindatum: date
    einddatum: date | None = None

    def is_active_on(self, day: date) -> bool:
        """Active on ``day``: begun and not (yet) ended. An einddatum of today means ended."""
        return self.begindatum <= day and (self.einddatum is None or day < self.einddatum)

    def as_json(self) -> dict[str, str]:
        """The ``VolgindicatieRaadplegen`` representation."""
        body = {"burgerservicenummer": self.burgerservicenummer, "begindatum": self.begindatum.isoformat()}
        if self.einddatum is not None:
            body["einddatum"] = self.einddatum.isoformat()
        return body


class VolgindicatieStore:
    """Volgindicaties per API key (per afnemer), kept for the lifetime of the stand-in.

    With ``path`` the store is also kept in a small JSON file (loaded at start, replaced
    atomically after every change), so volgindicaties survive a restart of the stand-in,
    e.g. when a demo starts a fresh process per day.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._by_key: dict[str, dict[str, Volgindicatie]] = {}
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            stored = json.loads(self.path.read_text(encoding="utf-8"))
            for key_hash, items in stored.items():
                self._by_key[key_hash] = {
                    bsn: Volgindicatie(bsn, date.fromisoformat(v["begindatum"]),
                                       date.fromisoformat(v["einddatum"]) if v.get("einddatum") else None)
                    for bsn, v in items.items()
                }

    @staticmethod
    def _owner(api_key: str) -> str:
        # Keys are credentials: the store (and its file) only ever holds a hash of them.
        return hashlib.sha256(api_key.encode("utf-8")).hexdigest()

    def _save_locked(self) -> None:
        if self.path is None:
            return
        payload = {owner: {bsn: v.as_json() for bsn, v in items.items()} for owner, items in self._by_key.items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".volgindicaties-", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def upsert(self, api_key: str, bsn: str, einddatum: date | None, today: date) -> tuple[Volgindicatie, bool]:
        """Place or change the volgindicatie of ``api_key`` on ``bsn``; returns (it, created)."""
        with self._lock:
            own = self._by_key.setdefault(self._owner(api_key), {})
            existing = own.get(bsn)
            if existing is None:
                created = Volgindicatie(bsn, begindatum=today, einddatum=einddatum)
                own[bsn] = created
                self._save_locked()
                return _copy(created), True
            if existing.einddatum is not None and existing.einddatum <= today and einddatum is None:
                # Following again after the indicatie had ended: a new period starts today.
                existing.begindatum = today
            existing.einddatum = einddatum
            self._save_locked()
            return _copy(existing), False

    def get(self, api_key: str, bsn: str) -> Volgindicatie | None:
        """The volgindicatie of ``api_key`` on ``bsn`` (active or ended), if it was ever placed."""
        with self._lock:
            found = self._by_key.get(self._owner(api_key), {}).get(bsn)
            return _copy(found) if found else None

    def all(self, api_key: str) -> list[Volgindicatie]:
        """Every volgindicatie of ``api_key`` (active and ended), by BSN."""
        with self._lock:
            return [_copy(v) for _, v in sorted(self._by_key.get(self._owner(api_key), {}).items())]

    def active(self, api_key: str, today: date) -> list[Volgindicatie]:
        """The volgindicaties of ``api_key`` active today, by BSN."""
        return [v for v in self.all(api_key) if v.is_active_on(today)]


def _copy(v: Volgindicatie) -> Volgindicatie:
    return Volgindicatie(v.burgerservicenummer, v.begindatum, v.einddatum)


def changed_bsns(changes: Iterable[Any], volgindicaties: Iterable[Volgindicatie], vanaf: date | None,
                 today: date) -> list[str]:
    """Sorted BSNs of followed persons changed on or after ``vanaf`` (up to ``today``).

    ``changes`` are ``demo_gemeente.model.DailyChange`` entries; ``detail["affected_bsns"]``
    names every person whose persoonslijst the event changed.
    """
    followed = {v.burgerservicenummer: v for v in volgindicaties}
    result: set[str] = set()
    for change in changes:
        if change.day > today or (vanaf is not None and change.day < vanaf):
            continue
        for bsn in change.detail.get("affected_bsns", ()):
            indicatie = followed.get(bsn)
            if indicatie is not None and indicatie.is_active_on(change.day):
                result.add(bsn)
    return sorted(result)


# --------------------------------------------------------------------------- errors


def _instance(request: Request) -> str:
    # Foutbericht.instance is format uri: the absolute request URL is one.
    return str(request.url)


def _problem(request: Request, status: int, title: str, detail: str, code: str, type_uri: str,
             headers: dict[str, str] | None = None, **extra: Any) -> Response:
    body: dict[str, Any] = {"type": type_uri, "title": title, "status": status, "detail": detail,
                            "instance": _instance(request), "code": code, **extra}
    return problem_response(body, headers=headers)


class _UpdateErrors:
    """Problem bodies in the wording of the Haal Centraal common components (v1.2.0)."""

    def unauthenticated(self, request: Request) -> Response:
        return _problem(request, 401, "Niet correct geauthenticeerd.",
                        "The request requires user authentication.", "authentication", f"{RFC2616}#sec10.4.2",
                        headers={"WWW-Authenticate": f'ApiKey header="{API_KEY_HEADER}"'})

    def forbidden(self, request: Request) -> Response:
        return _problem(request, 403, "U bent niet geautoriseerd voor deze operatie.",
                        "The server understood the request, but is refusing to fulfill it.", "autorisation",
                        f"{RFC2616}#sec10.4.4")

    def too_many_requests(self, request: Request, retry_after: str, headers: dict[str, str]) -> Response:
        return _problem(request, 429, "Too many requests",
                        "The user has sent too many requests in a given amount of time (rate limiting).",
                        "tooManyRequests", "https://datatracker.ietf.org/doc/html/rfc6585#section-4",
                        headers={**headers, "Retry-After": retry_after})

    def injected_failure(self, request: Request, fault: Fault) -> Response:
        headers = {"Retry-After": str(fault.retry_after_seconds)} if fault.retry_after_seconds is not None else None
        if fault.status == 503:
            return _problem(request, 503, "Bronservice BRP Update is tijdelijk niet beschikbaar.",
                            "The service is currently unable to handle the request due to a temporary "
                            "overloading or maintenance of the server.", "notAvailable", f"{RFC2616}#sec10.5.4",
                            headers=headers)
        return _problem(request, fault.status, "Interne server fout.",
                        "The server encountered an unexpected condition which prevented it from fulfilling "
                        "the request.", "serverError", f"{RFC2616}#sec10.5.1", headers=headers)


def _bad_request(request: Request, invalid_params: list[dict[str, str]]) -> Response:
    names = ", ".join(dict.fromkeys(p["name"] for p in invalid_params))
    return _problem(request, 400, "Een of meerdere parameters zijn niet correct.",
                    f"De foutieve parameter(s) zijn: {names}.", "paramsValidation", f"{RFC2616}#sec10.4.1",
                    invalidParams=invalid_params)


def _invalid(code: str, name: str, reason: str) -> dict[str, str]:
    return {"type": VALIDATION_TYPE_BASE + code, "name": name, "code": code, "reason": reason}


def _not_acceptable(request: Request) -> Response:
    return _problem(request, 406, "Gevraagde contenttype wordt niet ondersteund.",
                    "The resource identified by the request is only capable of generating response entities "
                    "which have content characteristics not acceptable according to the accept headers sent "
                    "in the request", "notAcceptable", f"{RFC2616}#sec10.4.7")


def _unsupported_media_type(request: Request) -> Response:
    return _problem(request, 415, "Unsupported Media Type",
                    "The server is refusing the request because the entity of the request is in a format not "
                    "supported by the requested resource for the requested method.", "unsupported",
                    f"{RFC2616}#sec10.4.16")


def _accepts(accept: str | None, media_type: str) -> bool:
    """True when the Accept header admits ``media_type`` (absent header = anything)."""
    if not accept:
        return True
    main = media_type.split("/")[0]
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media in ("*/*", f"{main}/*", media_type):
            return True
    return False


def _parse_date(value: Any) -> date | None:
    """A full-date (``YYYY-MM-DD``) or None when ``value`` is not one."""
    if not isinstance(value, str) or re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value) is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _json_response(payload: dict[str, Any], status: int = 200, media_type: str = JSON_MEDIA_TYPE) -> Response:
    return Response(content=json.dumps(payload, ensure_ascii=False).encode("utf-8"), status_code=status,
                    media_type=media_type)


# --------------------------------------------------------------------------- app


def create_brp_update_app(state: RegistryState, path_prefix: str = DEFAULT_PATH_PREFIX,
                          store: VolgindicatieStore | None = None) -> FastAPI:
    """The BRP Update API stand-in as an ASGI app serving ``state``.

    ``store`` holds the volgindicaties; pass one to share or inspect it (tests), else
    the app keeps its own. It is also reachable as ``app.state.volgindicaties``.
    """
    prefix = "/" + path_prefix.strip("/") if path_prefix.strip("/") else ""
    store = store if store is not None else VolgindicatieStore()
    app = FastAPI(title="BRP Update API (stand-in)", version=API_VERSION, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.volgindicaties = store
    install_gate(app, state, API_KEY_HEADER, _UpdateErrors())
    app.include_router(admin_router(state))
    _install_update_headers_and_errors(app)
    app.include_router(_volgindicatie_router(state, store, prefix))
    app.include_router(_wijzigingen_router(state, store, prefix))
    return app


def _install_update_headers_and_errors(app: FastAPI) -> None:
    """The ``api-version`` header on every response, and every HTTP error as a problem+json body."""

    @app.middleware("http")
    async def api_version_header(request: Request, call_next):  # noqa: ANN001 - Starlette signature
        # Added after the gate, so it wraps it: gateway errors carry the header too.
        response = await call_next(request)
        response.headers["api-version"] = API_VERSION
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            return _problem(request, 405, "Methode niet toegestaan.", str(exc.detail), "methodNotAllowed",
                            f"{RFC2616}#sec10.4.6", headers=dict(exc.headers or {}))
        if exc.status_code == 404:
            return _problem(request, 404, "Opgevraagde resource bestaat niet.",
                            "The server has not found anything matching the Request-URI.", "notFound",
                            f"{RFC2616}#sec10.4.5")
        return _problem(request, exc.status_code, "Interne server fout.", str(exc.detail), "serverError",
                        f"{RFC2616}#sec10.5.1")


def _caller(request: Request) -> str:
    """The API key of the caller: volgindicaties are kept per key."""
    # The gate has already checked that the key is present and accepted.
    return request.headers[API_KEY_HEADER]


def _bsn_findings(bsn: str) -> list[dict[str, str]]:
    if re.fullmatch(BSN_PATTERN, bsn) is None:
        return [_invalid("pattern", "burgerservicenummer", f"Waarde voldoet niet aan patroon {BSN_PATTERN}.")]
    return []


def _volgindicatie_body(raw: bytes, invalid: list[dict[str, str]]) -> tuple[bool, date | None]:
    """Check the body of a PUT volgindicatie, adding to ``invalid``: (whether it is a JSON object, its einddatum)."""
    body: Any = {}
    if raw:
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
    if not isinstance(body, dict):
        invalid.append(_invalid("object", "body", "De request body is geen JSON object."))
        return False, None
    einddatum = None
    if body.get("einddatum") is not None:
        einddatum = _parse_date(body["einddatum"])
        if einddatum is None:
            invalid.append(_invalid("date", "einddatum", "Waarde is geen geldige datum."))
    for name in body:
        if name != "einddatum":
            invalid.append(_invalid("unknownParam", name, "Parameter is niet verwacht."))
    return True, einddatum


def _volgindicatie_router(state: RegistryState, store: VolgindicatieStore, prefix: str) -> APIRouter:
    router = APIRouter()

    @router.get(f"{prefix}/volgindicaties")
    def list_volgindicaties(request: Request) -> Response:
        if not _accepts(request.headers.get("accept"), JSON_MEDIA_TYPE):
            return _not_acceptable(request)
        active = store.active(_caller(request), state.as_of)
        return _json_response({"volgindicaties": [v.as_json() for v in active]})

    @router.get(f"{prefix}/volgindicaties/{{burgerservicenummer}}")
    def get_volgindicatie(request: Request, burgerservicenummer: str) -> Response:
        if not _accepts(request.headers.get("accept"), JSON_MEDIA_TYPE):
            return _not_acceptable(request)
        invalid = _bsn_findings(burgerservicenummer)
        if invalid:
            return _bad_request(request, invalid)
        found = store.get(_caller(request), burgerservicenummer)
        if found is None:
            return _problem(request, 404, "Opgevraagde resource bestaat niet.",
                            f"Er is geen volgindicatie op burgerservicenummer {burgerservicenummer}.", "notFound",
                            f"{RFC2616}#sec10.4.5")
        return _json_response(found.as_json())

    @router.put(f"{prefix}/volgindicaties/{{burgerservicenummer}}")
    async def put_volgindicatie(request: Request, burgerservicenummer: str) -> Response:
        accept = request.headers.get("accept")
        # 201 answers application/hal+json, 200 application/json: the client must accept either.
        if not (_accepts(accept, JSON_MEDIA_TYPE) or _accepts(accept, HAL_JSON_MEDIA_TYPE)):
            return _not_acceptable(request)
        raw = await request.body()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if raw and content_type != JSON_MEDIA_TYPE:
            return _unsupported_media_type(request)
        invalid = _bsn_findings(burgerservicenummer)
        is_object, einddatum = _volgindicatie_body(raw, invalid)
        if not is_object or invalid:
            return _bad_request(request, invalid)
        volgindicatie, created = store.upsert(_caller(request), burgerservicenummer, einddatum, state.as_of)
        if created:
            return _json_response(volgindicatie.as_json(), status=201, media_type=HAL_JSON_MEDIA_TYPE)
        return _json_response(volgindicatie.as_json())

    return router


def _wijzigingen_router(state: RegistryState, store: VolgindicatieStore, prefix: str) -> APIRouter:
    router = APIRouter()

    @router.get(f"{prefix}/wijzigingen")
    def wijzigingen(request: Request) -> Response:
        if not _accepts(request.headers.get("accept"), HAL_JSON_MEDIA_TYPE):
            return _not_acceptable(request)
        invalid: list[dict[str, str]] = []
        vanaf: date | None = None
        for name in request.query_params:
            if name != "vanaf":
                invalid.append(_invalid("unknownParam", name, "Parameter is niet verwacht."))
        raw_vanaf = request.query_params.get("vanaf")
        if raw_vanaf is not None:
            vanaf = _parse_date(raw_vanaf)
            if vanaf is None:
                invalid.append(_invalid("date", "vanaf", "Waarde is geen geldige datum."))
        if invalid:
            return _bad_request(request, invalid)
        today = state.as_of
        bsns = changed_bsns(state.municipality().changes, store.all(_caller(request)), vanaf, today)
        payload = {"_links": {"self": {"href": str(request.url)}}, "burgerservicenummers": bsns}
        return _json_response(payload, media_type=HAL_JSON_MEDIA_TYPE)

    return router


# --------------------------------------------------------------------------- runner


@dataclass
class BrpUpdateStandin(RegistryHandle):
    """Handle on a running BRP Update API stand-in (see :func:`start_brp_update_standin`)."""

    state: RegistryState
    store: VolgindicatieStore
    server: ThreadedUvicorn
    host: str
    port: int
    path_prefix: str = DEFAULT_PATH_PREFIX

    @property
    def url(self) -> str:
        """Base URL including the spec's path prefix (no trailing slash)."""
        return f"http://{self.host}:{self.port}{self.path_prefix}"

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        self.server.stop()

    def __enter__(self) -> "BrpUpdateStandin":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def start_brp_update_standin(world: WorldLike | WorldSource, as_of: date | None = None, *,
                             host: str = "127.0.0.1", port: int = 0, api_keys: Iterable[str] | None = None,
                             rate_limit_per_second: float | None = None,
                             path_prefix: str = DEFAULT_PATH_PREFIX,
                             volgindicaties_file: Path | None = None) -> BrpUpdateStandin:
    """Start the BRP Update API stand-in on a background thread and return its handle.

    ``world`` is what the other stand-ins take (a ``Municipality``, a ``DemoWorld`` or a
    callable), or a :class:`WorldSource` to share one cache with them. ``api_keys``
    are the accepted keys, one per afnemer (a random one when absent); ``port`` 0
    picks a free port. ``volgindicaties_file`` keeps the volgindicaties on disk so
    they survive a restart (a demo that starts a new process per day).
    """
    import secrets

    source = world if isinstance(world, WorldSource) else WorldSource(world)
    keys = frozenset(api_keys) if api_keys else frozenset({secrets.token_urlsafe(24)})
    limiter = TokenBucketRateLimiter(rate_limit_per_second) if rate_limit_per_second else None
    state = RegistryState(name="brp_update", world=source, api_keys=keys, rate_limiter=limiter)
    if as_of is not None:
        state.set_as_of(as_of)
    store = VolgindicatieStore(volgindicaties_file)
    server = ThreadedUvicorn(create_brp_update_app(state, path_prefix, store), host, port, name="brp_update")
    bound = server.start()
    return BrpUpdateStandin(state=state, store=store, server=server, host=host, port=bound,
                            path_prefix="/" + path_prefix.strip("/") if path_prefix.strip("/") else "")
