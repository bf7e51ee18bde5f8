"""Stand-in for the Kadaster BAG API Individuele Bevragingen v2 (shapes of v2.6.0).

Serves the endpoints a municipality-wide crawl needs: woonplaatsen,
openbareruimten, nummeraanduidingen, verblijfsobjecten and panden (single object
and search). Responses are HAL (``application/hal+json``): a single object is
``{"<resource>": {...}, "_links": {...}}``, a search is
``{"_embedded": {"<plural>": [...]}, "_links": {self, first, previous, next, last}}``
with the link rules of ``Features/paginering.feature`` (``_embedded`` is left out
when nothing matched).

Geometry: responses that carry geometry require ``Accept-Crs: epsg:28992``
(missing → 412 ``acceptCrsMissing``, another CRS → 406 ``crsNotAcceptable``) and
answer ``Content-Crs: epsg:28992``; a ``bbox`` needs ``Content-Crs`` (missing →
412 ``contentCrsMissing``, another → 415 ``crsNotSupported``). The v2.6.0 spec
marks Accept-Crs deprecated while Getting started still requires it; the stand-in
is strict by default (``strict_crs=False`` makes a missing header mean RD).

Not implemented (validated where cheap, otherwise ignored): time travel
(``geldigOp``/``beschikbaarOp`` are format-checked only), ``point`` search,
ligplaatsen/standplaatsen/adressen endpoints.
"""
from __future__ import annotations

import json
import re
from datetime import date, datetime, time, timezone
from typing import Any, Callable, Iterable
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from demo_gemeente.model import Municipality, Nummeraanduiding, OpenbareRuimte, Pand, Verblijfsobject, Woonplaats
from standins.common import (
    Fault,
    RegistryState,
    TokenBucketRateLimiter,
    admin_router,
    exists_on,
    http_date_after,
    install_gate,
    problem_response,
    request_instance,
)

DEFAULT_PATH_PREFIX = "/lvbag/individuelebevragingen/v2"
API_KEY_HEADER = "X-Api-Key"
HAL_JSON = "application/hal+json"
API_VERSION = "2.6.0"
RD_CRS = "epsg:28992"
MAX_BBOX_AREA_M2 = 250_000
PAGE_SIZE_DEFAULT, PAGE_SIZE_MIN, PAGE_SIZE_MAX = 20, 10, 100

WOONPLAATS_ID = r"^[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3}$"
OPENBARE_RUIMTE_ID = r"^[0-9]{4}30[0-9]{10}$"
NUMMERAANDUIDING_ID = r"^[0-9]{4}20[0-9]{10}$"
PAND_ID = r"^[0-9]{4}10[0-9]{10}$"
VERBLIJFSOBJECT_ID = r"^[0-9]{4}01[0-9]{10}$"
ADRESSEERBAAR_OBJECT_ID = r"^[0-9]{4}(01|02|03)[0-9]{10}$"
POSTCODE = r"^[1-9]{1}[0-9]{3}[ ]{0,1}[a-zA-Z]{2}$"
HUISLETTER = r"^[a-zA-Z]{1}$"
HUISNUMMERTOEVOEGING = r"^[0-9a-zA-Z]{1,4}$"
GEBRUIKSDOELEN = ("woonfunctie", "bijeenkomstfunctie", "celfunctie", "gezondheidszorgfunctie", "industriefunctie",
                  "kantoorfunctie", "logiesfunctie", "onderwijsfunctie", "sportfunctie", "winkelfunctie",
                  "overige gebruiksfunctie")

_RFC = "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#/"
_VALIDATION_TYPE = "https://www.vng.nl/realisatie/api/validaties/"


class BagProblem(Exception):
    """A request the stand-in answers with a problem+json body."""

    def __init__(self, status: int, title: str, code: str, detail: str,
                 invalid_params: list[dict[str, str]] | None = None, type_suffix: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(title)
        self.status, self.title, self.code, self.detail = status, title, code, detail
        self.invalid_params = invalid_params
        self.type_suffix = type_suffix
        self.headers = headers

    def response(self, request: Request) -> Response:
        body: dict[str, Any] = {"status": self.status, "title": self.title, "type": _RFC + self.type_suffix.split(" ")[0],
                                "detail": self.detail, "instance": request_instance(request), "code": self.code}
        if self.invalid_params:
            body["invalid-params"] = self.invalid_params
        return problem_response(body, headers={"API-Version": API_VERSION, **(self.headers or {})})


def _invalid(name: str, code: str, reason: str) -> dict[str, str]:
    return {"type": _VALIDATION_TYPE + code, "name": name, "code": code, "reason": reason}


def params_validation(invalid_params: list[dict[str, str]]) -> BagProblem:
    """400 ``paramsValidation`` with ``invalid-params``."""
    return BagProblem(400, "Een of meerdere parameters zijn niet correct.", "paramsValidation",
                      "The request could not be understood by the server due to malformed syntax.",
                      invalid_params, "10.4.1 400 Bad Request")


def params_required() -> BagProblem:
    return BagProblem(400, "Ten minste één parameter moet worden opgegeven.", "paramsRequired",
                      "The request could not be understood by the server due to malformed syntax.",
                      None, "10.4.1 400 Bad Request")


def params_combination() -> BagProblem:
    return BagProblem(400, "Minimale combinatie van parameters moet worden opgegeven.", "paramsCombination",
                      "The request could not be understood by the server due to malformed syntax.",
                      None, "10.4.1 400 Bad Request")


def unsupported_combination() -> BagProblem:
    return BagProblem(400, "De combinatie van opgegeven parameters is niet toegestaan.", "unsupportedCombination",
                      "The request could not be understood by the server due to malformed syntax.",
                      None, "10.4.1 400 Bad Request")


def not_found() -> BagProblem:
    return BagProblem(404, "Opgevraagde resource bestaat niet.", "notFound",
                      "The server has not found anything matching the Request-URI.", None, "10.4.5 404 Not Found")


# --------------------------------------------------------------------------- request parsing

class _Query:
    """Typed access to query parameters that raises the spec's validation errors."""

    def __init__(self, request: Request) -> None:
        self.params = request.query_params
        self.errors: list[dict[str, str]] = []

    def present(self, name: str) -> bool:
        return name in self.params

    def string(self, name: str, pattern: str | None = None) -> str | None:
        value = self.params.get(name)
        if value is None:
            return None
        if pattern is not None and re.fullmatch(pattern, value) is None:
            self.errors.append(_invalid(name, "pattern", f"Waarde voldoet niet aan patroon {pattern}."))
        return value

    def integer(self, name: str, minimum: int | None = None, maximum: int | None = None) -> int | None:
        value = self.params.get(name)
        if value is None:
            return None
        if re.fullmatch(r"-?[0-9]+", value) is None:
            self.errors.append(_invalid(name, "integer", "Waarde is geen geldige integer."))
            return None
        number = int(value)
        if minimum is not None and number < minimum:
            self.errors.append(_invalid(name, "minimum", f"Waarde is lager dan minimum {minimum}."))
        elif maximum is not None and number > maximum:
            self.errors.append(_invalid(name, "maximum", f"Waarde is hoger dan maximum {maximum}."))
        return number

    def boolean(self, name: str) -> bool | None:
        value = self.params.get(name)
        if value is None:
            return None
        if value not in ("true", "false"):
            self.errors.append(_invalid(name, "boolean", "Waarde is geen geldige boolean."))
            return None
        return value == "true"

    def iso_date(self, name: str) -> None:
        value = self.params.get(name)
        if value is None:
            return
        try:
            if len(value) != 10:
                raise ValueError(value)
            date.fromisoformat(value)
        except ValueError:
            self.errors.append(_invalid(name, "date", "Waarde is geen geldige datum."))

    def timestamp(self, name: str) -> None:
        value = self.params.get(name)
        if value is None:
            return
        try:
            datetime.fromisoformat(value)
        except ValueError:
            self.errors.append(_invalid(name, "timestamp", "Waarde is geen geldig tijdstip."))

    def bbox(self) -> tuple[float, float, float, float] | None:
        value = self.params.get("bbox")
        if value is None:
            return None
        parts = value.split(",")
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            self.errors.append(_invalid("bbox", "number", "Waarde is geen geldige number."))
            return None
        if len(numbers) < 4:
            self.errors.append(_invalid("bbox", "minItems", "Array bevat minder dan 4 items."))
            return None
        if len(numbers) > 4:
            self.errors.append(_invalid("bbox", "maxItems", "Array bevat meer dan 4 items."))
            return None
        x1, y1, x2, y2 = numbers
        # Coordinates that look like WGS84 degrees do not fit the RD CRS.
        if max(abs(x1), abs(x2)) < 1000 and max(abs(y1), abs(y2)) < 1000:
            self.errors.append(_invalid("bbox", "geometryMismatch", "Waarde is niet conform opgegeven CRS."))
            return None
        if abs(x2 - x1) * abs(y2 - y1) > MAX_BBOX_AREA_M2:
            self.errors.append(_invalid("bbox", "surfaceMaximum",
                                        f"Waarde is hoger dan maximum oppervlakte {MAX_BBOX_AREA_M2} m2."))
            return None
        return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)

    def common(self) -> None:
        """Parameters every endpoint accepts: temporal filters and huidig."""
        self.iso_date("geldigOp")
        self.timestamp("beschikbaarOp")
        self.boolean("huidig")

    def expand(self, allowed: tuple[str, ...]) -> set[str]:
        value = self.params.get("expand")
        if value is None:
            return set()
        if value == "true":
            return set(allowed)
        chosen: set[str] = set()
        for part in (p.strip() for p in value.split(",")):
            root = part.split(".")[0]
            if root in allowed:
                chosen.add(root)
            else:
                self.errors.append(_invalid("expand", "expand", f"Deel van de parameterwaarde is niet correct: {part}."))
        return chosen

    def raise_if_invalid(self) -> None:
        if self.errors:
            raise params_validation(self.errors)


def _check_path_id(name: str, value: str, pattern: str) -> None:
    if re.fullmatch(pattern, value) is None:
        raise params_validation([_invalid(name, "pattern", f"Waarde voldoet niet aan patroon {pattern}.")])


def _require_accept_crs(request: Request, strict: bool) -> None:
    accept_crs = request.headers.get("accept-crs")
    if accept_crs is None:
        if strict:
            raise BagProblem(412, "Gewenste coördinatenstelsel voor geometrie moet worden opgegeven.",
                             "acceptCrsMissing", "Header Accept-Crs ontbreekt.", None, "10.4.13 412 Precondition Failed")
        return
    if accept_crs.strip().lower() != RD_CRS:
        raise BagProblem(406, "CRS niet ondersteund.", "crsNotAcceptable",
                         f"Alleen {RD_CRS} wordt ondersteund.", None, "10.4.7 406 Not Acceptable")


def _require_content_crs(request: Request) -> None:
    content_crs = request.headers.get("content-crs")
    if content_crs is None:
        raise BagProblem(412, "Coördinatenstelsel van gestuurde geometrie moet worden opgegeven.",
                         "contentCrsMissing", "Header Content-Crs ontbreekt.", None, "10.4.13 412 Precondition Failed")
    if content_crs.strip().lower() != RD_CRS:
        raise BagProblem(415, "CRS niet ondersteund", "crsNotSupported", f"Alleen {RD_CRS} wordt ondersteund.",
                         None, "10.4.16 415 Unsupported Media Type")


def _check_accept(request: Request) -> None:
    accept = request.headers.get("accept")
    if not accept:
        return
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media in ("*/*", "application/*", HAL_JSON, "application/json"):
            return
    raise BagProblem(406, "Gevraagde contenttype wordt niet ondersteund.", "notAcceptable",
                     "Only application/hal+json is available.", None, "10.4.7 406 Not Acceptable")


# --------------------------------------------------------------------------- rendering

def _voorkomen(ingangsdatum: date) -> dict[str, Any]:
    registered = datetime.combine(ingangsdatum, time(9, 0), tzinfo=timezone.utc)
    stamp = registered.isoformat(timespec="milliseconds")
    return {"tijdstipRegistratie": stamp, "versie": 1, "beginGeldigheid": ingangsdatum.isoformat(),
            "tijdstipRegistratieLV": stamp}


def _document(identificatie: str, ingangsdatum: date) -> dict[str, str]:
    return {"documentdatum": ingangsdatum.isoformat(), "documentnummer": f"DEMO-{ingangsdatum:%Y}-{identificatie[-6:]}"}


def _rd(point: tuple[float, float]) -> list[float]:
    # BAG 2.0 geometry is three-dimensional; z is 0.0 for every demo object.
    return [round(float(point[0]), 3), round(float(point[1]), 3), 0.0]


def _ring(polygon: list[tuple[float, float]]) -> list[list[float]]:
    ring = [_rd(p) for p in polygon]
    if ring and ring[0] != ring[-1]:
        ring.append(list(ring[0]))
    return ring


class _Renderer:
    """Builds HAL objects with absolute links under ``base_url``."""

    def __init__(self, base_url: str, world: Municipality) -> None:
        self.base = base_url.rstrip("/")
        self.world = world

    def link(self, path: str) -> dict[str, str]:
        return {"href": f"{self.base}{path}"}

    def woonplaats(self, wp: Woonplaats, expand: set[str] = frozenset()) -> dict[str, Any]:
        body: dict[str, Any] = {"woonplaats": {
            "identificatie": wp.identificatie, "domein": "NL.IMBAG.Woonplaats", "naam": wp.naam,
            "status": wp.status, "geconstateerd": "N", **_document(wp.identificatie.rjust(16, "0"), wp.ingangsdatum),
            "voorkomen": _voorkomen(wp.ingangsdatum)},
            "_links": {"self": self.link(f"/woonplaatsen/{wp.identificatie}")}}
        if "geometrie" in expand:
            minx, miny, maxx, maxy = wp.bbox
            ring = _ring([(minx, miny), (maxx, miny), (maxx, maxy), (minx, maxy)])
            body["_embedded"] = {"geometrie": {"vlak": {"type": "Polygon", "coordinates": [ring]}}}
        return body

    def openbare_ruimte(self, ruimte: OpenbareRuimte, expand: set[str] = frozenset()) -> dict[str, Any]:
        body: dict[str, Any] = {"openbareRuimte": {
            "identificatie": ruimte.identificatie, "domein": "NL.IMBAG.Openbareruimte", "naam": ruimte.naam,
            "type": ruimte.type, "status": ruimte.status, "korteNaam": ruimte.naam[:24], "geconstateerd": "N",
            **_document(ruimte.identificatie, ruimte.ingangsdatum), "voorkomen": _voorkomen(ruimte.ingangsdatum),
            "ligtIn": ruimte.woonplaats_id},
            "_links": {"self": self.link(f"/openbareruimten/{ruimte.identificatie}"),
                       "ligtInWoonplaats": self.link(f"/woonplaatsen/{ruimte.woonplaats_id}")}}
        wp = self.world.woonplaatsen.get(ruimte.woonplaats_id)
        if "ligtInWoonplaats" in expand and wp is not None:
            body["_embedded"] = {"ligtInWoonplaats": self.woonplaats(wp)}
        return body

    def nummeraanduiding(self, na: Nummeraanduiding, expand: set[str] = frozenset()) -> dict[str, Any]:
        obj: dict[str, Any] = {"identificatie": na.identificatie, "domein": "NL.IMBAG.Nummeraanduiding",
                               "huisnummer": na.huisnummer}
        if na.huisletter:
            obj["huisletter"] = na.huisletter
        if na.huisnummertoevoeging:
            obj["huisnummertoevoeging"] = na.huisnummertoevoeging
        obj.update(postcode=na.postcode, typeAdresseerbaarObject=na.type_adresseerbaar_object, status=na.status,
                   geconstateerd="N", **_document(na.identificatie, na.ingangsdatum),
                   voorkomen=_voorkomen(na.ingangsdatum), ligtAan=na.openbare_ruimte_id)
        ruimte = self.world.openbare_ruimten.get(na.openbare_ruimte_id)
        links = {"self": self.link(f"/nummeraanduidingen/{na.identificatie}"),
                 "ligtAanOpenbareRuimte": self.link(f"/openbareruimten/{na.openbare_ruimte_id}")}
        # ligtIn is only registered when the address lies in another woonplaats than its street.
        if ruimte is None or ruimte.woonplaats_id != na.woonplaats_id:
            obj["ligtIn"] = na.woonplaats_id
            links["ligtInWoonplaats"] = self.link(f"/woonplaatsen/{na.woonplaats_id}")
        body: dict[str, Any] = {"nummeraanduiding": obj, "_links": links}
        embedded: dict[str, Any] = {}
        if "ligtAanOpenbareRuimte" in expand and ruimte is not None:
            embedded["ligtAanOpenbareRuimte"] = self.openbare_ruimte(ruimte)
        wp = self.world.woonplaatsen.get(na.woonplaats_id)
        if "ligtInWoonplaats" in expand and wp is not None:
            embedded["ligtInWoonplaats"] = self.woonplaats(wp)
        if embedded:
            body["_embedded"] = embedded
        return body

    def verblijfsobject(self, vbo: Verblijfsobject, expand: set[str] = frozenset()) -> dict[str, Any]:
        obj = {"type": "Verblijfsobject", "heeftAlsHoofdAdres": vbo.hoofdadres_id,
               "identificatie": vbo.identificatie, "domein": "NL.IMBAG.Verblijfsobject",
               "geometrie": {"punt": {"type": "Point", "coordinates": _rd(vbo.point)}},
               "gebruiksdoelen": list(vbo.gebruiksdoelen), "oppervlakte": vbo.oppervlakte, "status": vbo.status,
               "geconstateerd": "N", **_document(vbo.identificatie, vbo.ingangsdatum),
               "voorkomen": _voorkomen(vbo.ingangsdatum), "maaktDeelUitVan": list(vbo.pand_ids)}
        body: dict[str, Any] = {"verblijfsobject": obj, "_links": {
            "self": self.link(f"/verblijfsobjecten/{vbo.identificatie}"),
            "heeftAlsHoofdAdres": self.link(f"/nummeraanduidingen/{vbo.hoofdadres_id}"),
            "maaktDeelUitVan": [self.link(f"/panden/{pid}") for pid in vbo.pand_ids]}}
        embedded: dict[str, Any] = {}
        na = self.world.nummeraanduidingen.get(vbo.hoofdadres_id)
        if "heeftAlsHoofdAdres" in expand and na is not None:
            embedded["heeftAlsHoofdAdres"] = self.nummeraanduiding(na)
        if "maaktDeelUitVan" in expand:
            panden = [self.pand(self.world.panden[pid]) for pid in vbo.pand_ids if pid in self.world.panden]
            if panden:
                embedded["maaktDeelUitVan"] = panden
        if embedded:
            body["_embedded"] = embedded
        return body

    def pand(self, pand: Pand) -> dict[str, Any]:
        return {"pand": {
            "identificatie": pand.identificatie, "domein": "NL.IMBAG.Pand",
            "geometrie": {"type": "Polygon", "coordinates": [_ring(pand.polygon)]},
            "oorspronkelijkBouwjaar": f"{pand.oorspronkelijk_bouwjaar:04d}", "status": pand.status,
            "geconstateerd": "N", **_document(pand.identificatie, pand.ingangsdatum),
            "voorkomen": _voorkomen(pand.ingangsdatum)},
            "_links": {"self": self.link(f"/panden/{pand.identificatie}")}}


# --------------------------------------------------------------------------- paging

def _page_link(request: Request, page: int) -> dict[str, str]:
    # Keep every client parameter except page; pageSize stays only when the client sent it.
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]
    query = urlencode(kept + [("page", str(page))])
    return {"href": f"{request.url.scheme}://{request.url.netloc}{request.url.path}?{query}"}


def paged_collection(request: Request, query: _Query, plural: str, items: list[Any],
                     render: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """A HAL collection page with the pagination links of ``paginering.feature``."""
    page = query.integer("page", minimum=1) or 1
    page_size = query.integer("pageSize", minimum=PAGE_SIZE_MIN, maximum=PAGE_SIZE_MAX) or PAGE_SIZE_DEFAULT
    query.raise_if_invalid()
    last = max(1, -(-len(items) // page_size))
    if page > last:
        raise params_validation([_invalid("page", "page", "De opgegeven pagina bestaat niet.")])
    chunk = items[(page - 1) * page_size: page * page_size]
    links: dict[str, Any] = {"self": {"href": str(request.url)}}
    if page > 1:
        links["first"] = _page_link(request, 1)
        links["previous"] = _page_link(request, page - 1)
    if page < last:
        links["next"] = _page_link(request, page + 1)
        links["last"] = _page_link(request, last)
    body: dict[str, Any] = {"_links": links}
    if chunk:
        body = {"_embedded": {plural: [render(item) for item in chunk]}, "_links": links}
    return body


# --------------------------------------------------------------------------- app

class _BagErrors:
    """Gateway errors in the BAG wording (spec examples and rate-limiting.feature)."""

    @staticmethod
    def unauthenticated(request: Request) -> Response:
        return BagProblem(401, "Niet correct geauthenticeerd.", "authentication",
                          "The request requires user authentication.", None, "10.4.2 401 Unauthorized").response(request)

    @staticmethod
    def forbidden(request: Request) -> Response:
        return BagProblem(403, "U bent niet geautoriseerd voor deze operatie.", "autorisation",
                          "The server understood the request, but is refusing to fulfill it.", None,
                          "10.4.4 403 Forbidden").response(request)

    @staticmethod
    def too_many_requests(request: Request, retry_after: str, headers: dict[str, str]) -> Response:
        return BagProblem(429, "Too Many Requests", "tooManyRequests", "You have exceeded your quota", None,
                          "10.4 429 Too Many Requests",
                          headers={**headers, "Retry-After": retry_after}).response(request)

    @staticmethod
    def injected_failure(request: Request, fault: Fault) -> Response:
        headers: dict[str, str] = {}
        if fault.status == 503:
            # The BAG spec declares Retry-After on 503 as an HTTP-date, not delta-seconds.
            if fault.retry_after_seconds is not None:
                headers["Retry-After"] = http_date_after(fault.retry_after_seconds)
            problem = BagProblem(503, "Bronservice BAG is tijdelijk niet beschikbaar.", "notAvailable",
                                 "The service is currently unable to handle the request due to a temporary "
                                 "overloading or maintenance of the server.", None, "10.5.4 503 Service Unavailable",
                                 headers=headers)
        else:
            if fault.retry_after_seconds is not None:
                headers["Retry-After"] = str(fault.retry_after_seconds)
            problem = BagProblem(fault.status, "Interne server fout.", "serverError",
                                 "The server encountered an unexpected condition which prevented it from "
                                 "fulfilling the request.", None, "10.5.1 500 Internal server error", headers=headers)
        return problem.response(request)


def rate_limit_headers(limiter: TokenBucketRateLimiter, remaining: int) -> dict[str, str]:
    """Rate-limit headers on every BAG response.

    "Beperkingen gebruik BAG API.md" (Kadaster, describes the live gateway's per
    key limit of 2023) names ``X-Rate-Limit-Limit/-Remaining/-Reset``; the older
    ``rate-limiting.feature`` names ``RateLimit-Limit/-Remaining/-Reset``. The
    operational document wins for the primary names, and the feature-file names
    are sent as well so a client written against either source finds them.
    """
    values = {"Limit": str(limiter.limit), "Remaining": str(remaining), "Reset": "1"}
    headers = {f"X-Rate-Limit-{k}": v for k, v in values.items()}
    headers.update({f"RateLimit-{k}": v for k, v in values.items()})
    return headers


def create_bag_app(state: RegistryState, path_prefix: str = DEFAULT_PATH_PREFIX, strict_crs: bool = True) -> FastAPI:
    """The BAG Individuele Bevragingen stand-in as an ASGI app serving ``state``."""
    prefix = "/" + path_prefix.strip("/") if path_prefix.strip("/") else ""
    app = FastAPI(title="BAG API Individuele Bevragingen (stand-in)", version=API_VERSION, docs_url=None,
                  redoc_url=None, openapi_url=None)
    install_gate(app, state, API_KEY_HEADER, _BagErrors(), rate_limit_headers)
    app.include_router(admin_router(state))
    _install_bag_error_handlers(app)
    service = _BagService(state, prefix, strict_crs)
    for router in (_woonplaats_router(service), _openbare_ruimte_router(service), _nummeraanduiding_router(service),
                   _verblijfsobject_router(service), _pand_router(service)):
        app.include_router(router)
    return app


def _install_bag_error_handlers(app: FastAPI) -> None:
    """Every error as a BAG problem+json body."""

    @app.exception_handler(BagProblem)
    async def bag_problem(request: Request, exc: BagProblem) -> Response:
        return exc.response(request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            return BagProblem(405, "Methode niet toegestaan", "methodNotAllowed", "Method not allowed", None,
                              "10.4.6 405 Method Not Allowed").response(request)
        if exc.status_code == 404:
            return not_found().response(request)
        return BagProblem(exc.status_code, "Interne server fout.", "serverError", str(exc.detail)).response(request)


def _visible(objects: Iterable[Any], as_of: date) -> list[Any]:
    """The BAG objects that exist on ``as_of``, by identificatie."""
    return sorted((o for o in objects if exists_on(o.ingangsdatum, as_of)), key=lambda o: o.identificatie)


class _BagService:
    """What every BAG route needs: the served world, the path prefix, CRS strictness and HAL responses."""

    def __init__(self, state: RegistryState, prefix: str, strict_crs: bool) -> None:
        self.state = state
        self.prefix = prefix
        self.strict_crs = strict_crs

    def world_now(self) -> tuple[Municipality, date]:
        return self.state.municipality(), self.state.as_of

    def renderer(self, request: Request, world: Municipality) -> _Renderer:
        return _Renderer(f"{request.url.scheme}://{request.url.netloc}{self.prefix}", world)

    def require_accept_crs(self, request: Request) -> None:
        _require_accept_crs(request, self.strict_crs)

    @staticmethod
    def hal(body: dict[str, Any], geometry: bool = False) -> Response:
        headers = {"API-Version": API_VERSION}
        if geometry:
            headers["Content-Crs"] = RD_CRS
        return Response(content=json.dumps(body, ensure_ascii=False).encode("utf-8"), media_type=HAL_JSON,
                        headers=headers)

    @staticmethod
    def lookup(items: dict[str, Any], key: str, as_of: date) -> Any:
        item = items.get(key)
        if item is None or not exists_on(item.ingangsdatum, as_of):
            raise not_found()
        return item

    def one(self, request: Request, path_param: str, identifier: str, pattern: str,
            expand_options: tuple[str, ...] | None, objects_of: Callable[[Municipality], dict[str, Any]],
            render: Callable[[_Renderer, Any, set[str]], dict[str, Any]], geometry: bool | str) -> Response:
        """A GET of one object by its identificatie: validated, as it exists today, rendered as HAL.

        ``expand_options`` None: the endpoint has no ``expand``. ``geometry`` True: the body always
        carries a geometry (so the request must name the CRS); a string: only when that part is expanded.
        """
        _check_accept(request)
        _check_path_id(path_param, identifier, pattern)
        query = _Query(request)
        query.common()
        expand = query.expand(expand_options) if expand_options is not None else set()
        query.raise_if_invalid()
        with_geometry = geometry if isinstance(geometry, bool) else geometry in expand
        if with_geometry:
            self.require_accept_crs(request)
        world, as_of = self.world_now()
        found = self.lookup(objects_of(world), identifier, as_of)
        return self.hal(render(self.renderer(request, world), found, expand), geometry=with_geometry)


def _woonplaats_router(service: _BagService) -> APIRouter:
    router = APIRouter()
    prefix = service.prefix

    @router.get(f"{prefix}/woonplaatsen/{{identificatie}}")
    def get_woonplaats(identificatie: str, request: Request) -> Response:
        return service.one(request, "identificatie", identificatie, WOONPLAATS_ID, ("geometrie", "bronhouders"),
                           lambda world: world.woonplaatsen, lambda render, wp, expand: render.woonplaats(wp, expand),
                           geometry="geometrie")

    @router.get(f"{prefix}/woonplaatsen")
    def search_woonplaatsen(request: Request) -> Response:
        _check_accept(request)
        query = _Query(request)
        query.common()
        naam = query.string("naam")
        expand = query.expand(("geometrie", "bronhouders"))
        query.raise_if_invalid()
        if naam is None:
            raise params_required()
        if "geometrie" in expand:
            service.require_accept_crs(request)
        world, as_of = service.world_now()
        found = [w for w in _visible(world.woonplaatsen.values(), as_of) if w.naam.lower() == naam.lower()]
        render = service.renderer(request, world)
        return service.hal(paged_collection(request, query, "woonplaatsen", found,
                                            lambda w: render.woonplaats(w, expand)),
                           geometry="geometrie" in expand)

    return router


def _openbare_ruimte_router(service: _BagService) -> APIRouter:
    router = APIRouter()
    prefix = service.prefix

    @router.get(f"{prefix}/openbareruimten/{{openbareRuimteIdentificatie}}")
    def get_openbare_ruimte(openbareRuimteIdentificatie: str, request: Request) -> Response:  # noqa: N803 - spec name
        return service.one(request, "openbareRuimteIdentificatie", openbareRuimteIdentificatie, OPENBARE_RUIMTE_ID,
                           ("ligtInWoonplaats",), lambda world: world.openbare_ruimten,
                           lambda render, ruimte, expand: render.openbare_ruimte(ruimte, expand), geometry=False)

    @router.get(f"{prefix}/openbareruimten")
    def search_openbare_ruimten(request: Request) -> Response:
        _check_accept(request)
        query = _Query(request)
        query.common()
        wp_id = query.string("woonplaatsIdentificatie", WOONPLAATS_ID)
        wp_naam = query.string("woonplaatsNaam")
        or_naam = query.string("openbareRuimteNaam")
        expand = query.expand(("ligtInWoonplaats",))
        query.raise_if_invalid()
        if wp_id is None and wp_naam is None and or_naam is None:
            raise params_required()
        if wp_id is not None and wp_naam is not None:
            raise unsupported_combination()
        if wp_id is None and (wp_naam is None or or_naam is None):
            raise params_combination()
        world, as_of = service.world_now()
        found = []
        for ruimte in _visible(world.openbare_ruimten.values(), as_of):
            wp = world.woonplaatsen.get(ruimte.woonplaats_id)
            if wp_id is not None and ruimte.woonplaats_id != wp_id:
                continue
            if wp_naam is not None and (wp is None or wp.naam.lower() != wp_naam.lower()):
                continue
            if or_naam is not None and ruimte.naam.lower() != or_naam.lower():
                continue
            found.append(ruimte)
        render = service.renderer(request, world)
        return service.hal(paged_collection(request, query, "openbareruimten", found,
                                            lambda r: render.openbare_ruimte(r, expand)))

    return router


def _nummeraanduiding_router(service: _BagService) -> APIRouter:
    router = APIRouter()
    prefix = service.prefix

    @router.get(f"{prefix}/nummeraanduidingen/{{nummeraanduidingIdentificatie}}")
    def get_nummeraanduiding(nummeraanduidingIdentificatie: str, request: Request) -> Response:  # noqa: N803
        return service.one(request, "nummeraanduidingIdentificatie", nummeraanduidingIdentificatie, NUMMERAANDUIDING_ID,
                           ("ligtInWoonplaats", "ligtAanOpenbareRuimte"), lambda world: world.nummeraanduidingen,
                           lambda render, na, expand: render.nummeraanduiding(na, expand), geometry=False)

    @router.get(f"{prefix}/nummeraanduidingen")
    def search_nummeraanduidingen(request: Request) -> Response:
        _check_accept(request)
        query = _Query(request)
        query.common()
        postcode = query.string("postcode", POSTCODE)
        huisnummer = query.integer("huisnummer", minimum=1, maximum=99999)
        huisletter = query.string("huisletter", HUISLETTER)
        toevoeging = query.string("huisnummertoevoeging", HUISNUMMERTOEVOEGING)
        exacte_match = query.boolean("exacteMatch")
        or_id = query.string("openbareRuimteIdentificatie", OPENBARE_RUIMTE_ID)
        pand_id = query.string("pandIdentificatie", PAND_ID)
        expand = query.expand(("ligtInWoonplaats", "ligtAanOpenbareRuimte"))
        query.raise_if_invalid()
        address_given = postcode is not None or query.present("huisnummer")
        combos = sum([address_given, or_id is not None, pand_id is not None])
        if combos == 0:
            raise params_required()
        if combos > 1:
            raise unsupported_combination()
        if address_given and (postcode is None or huisnummer is None):
            raise params_combination()
        world, as_of = service.world_now()
        candidates = _visible(world.nummeraanduidingen.values(), as_of)
        if or_id is not None:
            found = [n for n in candidates if n.openbare_ruimte_id == or_id]
        elif pand_id is not None:
            hoofdadressen = {v.hoofdadres_id for v in _visible(world.verblijfsobjecten.values(), as_of)
                             if pand_id in v.pand_ids}
            found = [n for n in candidates if n.identificatie in hoofdadressen]
        else:
            found = _at_address(candidates, postcode, huisnummer, huisletter, toevoeging, exacte_match)
        render = service.renderer(request, world)
        return service.hal(paged_collection(request, query, "nummeraanduidingen", found,
                                            lambda n: render.nummeraanduiding(n, expand)))

    return router


def _at_address(candidates: list[Nummeraanduiding], postcode: str, huisnummer: int, huisletter: str | None,
                toevoeging: str | None, exacte_match: bool | None) -> list[Nummeraanduiding]:
    """The nummeraanduidingen at postcode + huisnummer; huisletter and toevoeging narrow it when given.

    With ``exacteMatch`` an absent huisletter or toevoeging must be absent on the address as well.
    """
    wanted_pc = postcode.replace(" ", "").upper()
    found = []
    for n in candidates:
        if n.postcode != wanted_pc or n.huisnummer != huisnummer:
            continue
        if exacte_match or huisletter is not None:
            if (n.huisletter or "").lower() != (huisletter or "").lower():
                continue
        if exacte_match or toevoeging is not None:
            if (n.huisnummertoevoeging or "").lower() != (toevoeging or "").lower():
                continue
        found.append(n)
    return found


def _verblijfsobject_router(service: _BagService) -> APIRouter:
    router = APIRouter()
    prefix = service.prefix

    @router.get(f"{prefix}/verblijfsobjecten/{{identificatie}}")
    def get_verblijfsobject(identificatie: str, request: Request) -> Response:
        return service.one(request, "identificatie", identificatie, VERBLIJFSOBJECT_ID,
                           ("heeftAlsHoofdAdres", "heeftAlsNevenAdres", "maaktDeelUitVan"),
                           lambda world: world.verblijfsobjecten,
                           lambda render, vbo, expand: render.verblijfsobject(vbo, expand), geometry=True)

    @router.get(f"{prefix}/verblijfsobjecten")
    def search_verblijfsobjecten(request: Request) -> Response:
        _check_accept(request)
        query = _Query(request)
        query.common()
        pand_id = query.string("pandIdentificatie", PAND_ID)
        box = query.bbox()
        geconstateerd = query.boolean("geconstateerd")
        opp_min = query.integer("oppervlakte[min]", minimum=1, maximum=999999)
        opp_max = query.integer("oppervlakte[max]", minimum=1, maximum=999999)
        doelen = request.query_params.getlist("gebruiksdoelen")
        doelen = [d for value in doelen for d in value.split(",")]
        for doel in doelen:
            if doel not in GEBRUIKSDOELEN:
                query.errors.append(_invalid("gebruiksdoelen", "enum",
                                             "Waarde heeft geen geldige waarde uit de enumeratie."))
        if opp_min is not None and opp_max is not None and opp_min > opp_max:
            query.errors.append(_invalid("oppervlakte", "range", "Min mag niet hoger zijn dan max."))
        expand = query.expand(("heeftAlsHoofdAdres", "heeftAlsNevenAdres", "maaktDeelUitVan"))
        query.raise_if_invalid()
        bbox_given = query.present("bbox")
        filters_given = geconstateerd is not None or opp_min is not None or opp_max is not None or bool(doelen)
        if pand_id is None and not bbox_given:
            raise params_required()  # filters alone are no search (foutafhandeling.feature)
        if pand_id is not None and (bbox_given or filters_given):
            raise unsupported_combination()
        if bbox_given:
            _require_content_crs(request)
        service.require_accept_crs(request)
        world, as_of = service.world_now()
        found = [vbo for vbo in _visible(world.verblijfsobjecten.values(), as_of)
                 if _vbo_matches(vbo, pand_id, box, geconstateerd, opp_min, opp_max, doelen)]
        render = service.renderer(request, world)
        return service.hal(paged_collection(request, query, "verblijfsobjecten", found,
                                            lambda v: render.verblijfsobject(v, expand)), geometry=True)

    return router


def _vbo_matches(vbo: Verblijfsobject, pand_id: str | None, box: tuple[float, float, float, float] | None,
                 geconstateerd: bool | None, opp_min: int | None, opp_max: int | None, doelen: list[str]) -> bool:
    """True when ``vbo`` passes every filter of a verblijfsobjecten search (``oppervlakte[max]`` is exclusive)."""
    if pand_id is not None and pand_id not in vbo.pand_ids:
        return False
    if box is not None:
        x, y = vbo.point
        if not (box[0] <= x <= box[2] and box[1] <= y <= box[3]):
            return False
    if geconstateerd is True:
        return False  # every demo object was registered from a source document
    if opp_min is not None and vbo.oppervlakte < opp_min:
        return False
    if opp_max is not None and vbo.oppervlakte >= opp_max:
        return False
    if doelen and not set(doelen) & set(vbo.gebruiksdoelen):
        return False
    return True


def _pand_router(service: _BagService) -> APIRouter:
    router = APIRouter()
    prefix = service.prefix

    @router.get(f"{prefix}/panden/{{identificatie}}")
    def get_pand(identificatie: str, request: Request) -> Response:
        return service.one(request, "identificatie", identificatie, PAND_ID, None, lambda world: world.panden,
                           lambda render, pand, expand: render.pand(pand), geometry=True)

    @router.get(f"{prefix}/panden")
    def search_panden(request: Request) -> Response:
        _check_accept(request)
        query = _Query(request)
        query.common()
        box = query.bbox()
        ao_id = query.string("adresseerbaarObjectIdentificatie", ADRESSEERBAAR_OBJECT_ID)
        na_id = query.string("nummeraanduidingIdentificatie", NUMMERAANDUIDING_ID)
        query.raise_if_invalid()
        combos = sum([query.present("bbox"), ao_id is not None, na_id is not None])
        if combos == 0:
            raise params_required()
        if combos > 1:
            raise unsupported_combination()
        if query.present("bbox"):
            _require_content_crs(request)
        service.require_accept_crs(request)
        world, as_of = service.world_now()
        vbos = _visible(world.verblijfsobjecten.values(), as_of)
        if ao_id is not None:
            wanted = {pid for v in vbos if v.identificatie == ao_id for pid in v.pand_ids}
        elif na_id is not None:
            wanted = {pid for v in vbos if v.hoofdadres_id == na_id for pid in v.pand_ids}
        else:
            wanted = None
        found = []
        for pand in _visible(world.panden.values(), as_of):
            if wanted is not None and pand.identificatie not in wanted:
                continue
            if box is not None:
                xs = [p[0] for p in pand.polygon]
                ys = [p[1] for p in pand.polygon]
                if max(xs) < box[0] or min(xs) > box[2] or max(ys) < box[1] or min(ys) > box[3]:
                    continue
            found.append(pand)
        render = service.renderer(request, world)
        return service.hal(paged_collection(request, query, "panden", found, render.pand), geometry=True)

    return router
