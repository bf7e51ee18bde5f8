"""Stand-in for the KvK Handelsregister APIs: Zoeken v2, Basisprofiel, Vestigingsprofiel, Mutatieservice.

Paths below the prefix ``/api`` (the production base ``https://api.kvk.nl/api``;
the test environment uses ``/test/api``):

=====================================================  ====================================================
``GET /v2/zoeken``                                     API Zoeken 2.0.0 (kvkNummer, rsin, vestigingsnummer,
                                                       naam, straatnaam, plaats, postcode+huisnummer[+huisletter]
                                                       or postcode+postbusnummer, type[], inclusiefInactieve-
                                                       Registraties, pagina 1..1000, resultatenPerPagina 1..100)
``GET /v1/basisprofielen/{kvkNummer}``                  API Basisprofiel (``geoData``), with ``_embedded``
                                                       hoofdvestiging and eigenaar
``GET /v1/basisprofielen/{kvkNummer}/eigenaar``         sub-resources of the Basisprofiel
``GET /v1/basisprofielen/{kvkNummer}/hoofdvestiging``
``GET /v1/basisprofielen/{kvkNummer}/vestigingen``
``GET /v1/vestigingsprofielen/{vestigingsnummer}``      API Vestigingsprofiel (``geoData``)
``GET /v1/abonnementen``                                KVK Mutatieservice: the subscriptions of the key
``GET /v1/abonnementen/{abonnementId}``                 Mutatieservice: signals, ``vanaf``/``tot`` (ISO 8601),
                                                       ``pagina``/``aantal``
``GET /v1/abonnementen/{abonnementId}/signalen/{id}``   Mutatieservice: one signal with its meta information
=====================================================  ====================================================

Sources: the Zoeken 2.0.0, Basisprofiel 1.3 and Vestigingsprofiel 1.4 OpenAPI copies
(see the project's spec notes), developers.kvk.nl "Documentation", "Testing" and
"KVK Mutatieservice". Behaviour reproduced:

* authentication with header ``apikey``; a missing or unknown key gives ``401`` (the
  Zoeken spec: "Indien deze niet juist wordt meegestuurd, of het een ongeldige key
  betreft, zul je de foutmelding 401 Unauthorized terugkrijgen");
* errors are not problem+json but ``{"fout": [{"code": "IPD…", "omschrijving": "…"}]}``
  (schemas ``Error``/``Fout``), with the IPD codes of KvK's status-code table:
  IPD0004 invalid KvK-nummer, IPD0005 product not deliverable for a KvK-nummer,
  IPD0006/IPD0007 the same for a vestigingsnummer, IPD0010 invalid RSIN, IPD1002
  temporarily not deliverable, IPD1998 general parameter error, IPD1999 unsupported
  parameter (release 1.1.1: unknown query parameters are an error), IPD5200 no results
  (HTTP 404), IPD5203 invalid type, IPD9999 general technical error;
* Zoeken shows at most 1000 results: ``totaal`` never exceeds 1000 and pages beyond
  the 1000th result are refused (IPD1998), so a client has to narrow its question;
* KvK's published error-trigger numbers: Basisprofiel of 90004973 ("Foutmelding")
  answers 500 IPD9999, of 90002903 ("Error message") 404 IPD1002. KvK does not say
  which error each gives; these choices exercise a permanent and a temporary failure;
* postcode and huisnummer appear in a Zoeken result only when the question used them,
  ``actief`` only with ``inclusiefInactieveRegistraties`` (FAQ and release notes).

Choices where the documentation is silent (check against the live service):

* ``_links`` in Zoeken results follows the OAS copy (an object of links); the live
  documentation example shows a ``links`` array instead. Profiles use the ``links``
  array of the Basisprofiel/Vestigingsprofiel schemas.
* Profiles answer ``application/hal+json``; error bodies ``application/json``.
* Mutatieservice: only the three paths are documented ("Filter by 'from' and 'to'").
  The stand-in pages with ``pagina``/``aantal`` and answers
  ``{"pagina", "aantal", "totaal", "totaalPaginas", "signalen": [{"id", "timestamp",
  "kvknummer", "signaalType"}]}``; signal types ``SignaalNieuweInschrijving`` (always
  together with ``SignaalGewijzigdeInschrijving``, as the Mutatieservice FAQ says),
  ``SignaalGewijzigdeVestiging`` and ``SignaalBeeindiging``. The signal detail has
  ``heeftBetrekkingOp.kvkNummer`` and ``wordtUitgeoefendIn[].vestigingsnummer`` like
  the published signal examples.
* 429 (rate limit; KvK allows 100 requests/second per key) answers IPD1003 with
  ``Retry-After``; injected 5xx faults answer IPD9999 (500/502/504) or IPD1003 (503).
"""
from __future__ import annotations

import json
import math
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Protocol
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from demo_gemeente.kvk import RECHTSVORMEN, KvkChange, KvkState, Onderneming, SbiActiviteit, Vestiging
from standins.common import (
    Fault,
    RegistryHandle,
    RegistryState,
    ThreadedUvicorn,
    TokenBucketRateLimiter,
    WorldSource,
    admin_router,
    install_gate,
)

DEFAULT_PATH_PREFIX = "/api"
API_KEY_HEADER = "apikey"
HAL_JSON = "application/hal+json"
JSON = "application/json"
MAX_RESULTS = 1000  # "Er wordt max. 1000 resultaten getoond" (Zoeken 2.0.0)
MAX_PAGINA = 1000
RESULTATEN_PER_PAGINA_DEFAULT, RESULTATEN_PER_PAGINA_MAX = 10, 100
SIGNALEN_AANTAL_DEFAULT, SIGNALEN_AANTAL_MAX = 100, 500
RATE_LIMIT_PER_SECOND = 100.0
VERSIONS = {"zoeken": "2.0.0", "basisprofiel": "1.4.1", "vestigingsprofiel": "1.4", "mutatieservice": "1.0"}

KVK_NUMMER = re.compile(r"^[0-9]{8}$")
VESTIGINGSNUMMER = re.compile(r"^[0-9]{12}$")
RSIN = re.compile(r"^[0-9]{9}$")
POSTCODE = re.compile(r"^[0-9]{4}[a-zA-Z]{2}$")
HUISNUMMER = re.compile(r"^[0-9]{1,5}$")
HUISLETTER = re.compile(r"^[a-zA-Z]$")
ZOEKEN_TYPES = ("hoofdvestiging", "nevenvestiging", "rechtspersoon")
ZOEKEN_PARAMS = frozenset({"kvkNummer", "rsin", "vestigingsnummer", "naam", "straatnaam", "plaats", "postcode",
                           "huisnummer", "huisletter", "postbusnummer", "type", "inclusiefInactieveRegistraties",
                           "pagina", "resultatenPerPagina"})

# KvK's published test numbers that trigger an error (developers.kvk.nl/documentation/testing).
ERROR_TRIGGER_KVK_NUMMERS = {
    "90004973": (500, "IPD9999", "Algemene technische fout."),
    "90002903": (404, "IPD1002", "De gegevens zijn tijdelijk niet leverbaar omdat deze in behandeling zijn. "
                                 "Probeer het later nog eens."),
}
SIGNAAL_NIEUW = "SignaalNieuweInschrijving"
SIGNAAL_GEWIJZIGD = "SignaalGewijzigdeInschrijving"
SIGNAAL_VESTIGING = "SignaalGewijzigdeVestiging"
SIGNAAL_BEEINDIGING = "SignaalBeeindiging"


class KvkRegisterLike(Protocol):
    """What the stand-in needs from a register (``demo_gemeente.kvk.KvkRegister``)."""

    def at(self, day: date) -> KvkState: ...
    def changes_between(self, start: date, end: date) -> list[KvkChange]: ...


class KvkError(Exception):
    """A request the stand-in answers with a KvK ``fout`` body."""

    def __init__(self, status: int, code: str, omschrijving: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {omschrijving}")
        self.status, self.code, self.omschrijving = status, code, omschrijving
        self.headers = headers or {}

    def response(self) -> Response:
        body = {"fout": [{"code": self.code, "omschrijving": self.omschrijving}]}
        return Response(content=json.dumps(body, ensure_ascii=False).encode("utf-8"), status_code=self.status,
                        media_type=JSON, headers=self.headers)


def invalid_parameter(omschrijving: str) -> KvkError:
    return KvkError(400, "IPD1998", omschrijving)


def geen_resultaten() -> KvkError:
    return KvkError(404, "IPD5200", "Er zijn geen gegevens gevonden die voldoen aan de opgegeven zoekparameters.")


# --------------------------------------------------------------------------- geometry

def rd_to_wgs84(x: float, y: float) -> tuple[float, float]:
    """(latitude, longitude) of a Rijksdriehoek point, with the usual series approximation (~1 m)."""
    dx, dy = (x - 155_000) * 1e-5, (y - 463_000) * 1e-5
    som_n = (3235.65389 * dy - 32.58297 * dx ** 2 - 0.2475 * dy ** 2 - 0.84978 * dx ** 2 * dy - 0.0655 * dy ** 3
             - 0.01709 * dx ** 2 * dy ** 2 - 0.00738 * dx + 0.0053 * dx ** 4 - 0.00039 * dx ** 2 * dy ** 3
             + 0.00033 * dx ** 4 * dy - 0.00012 * dx * dy)
    som_e = (5260.52916 * dx + 105.94684 * dx * dy + 2.45656 * dx * dy ** 2 - 0.81885 * dx ** 3
             + 0.05594 * dx * dy ** 3 - 0.05607 * dx ** 3 * dy + 0.01199 * dy - 0.00256 * dx ** 3 * dy ** 2
             + 0.00128 * dx * dy ** 4 + 0.00022 * dy ** 2 - 0.00022 * dx ** 2 + 0.00026 * dx ** 5)
    return round(52.15517440 + som_n / 3600, 7), round(5.38720621 + som_e / 3600, 7)


# --------------------------------------------------------------------------- rendering

def _kvk_date(value: date) -> str:
    """KvK writes dates as ``yyyyMMdd`` strings."""
    return value.strftime("%Y%m%d")


def _ja_nee(value: bool) -> str:
    return "Ja" if value else "Nee"


def _sbi(activiteiten: tuple[SbiActiviteit, ...]) -> list[dict[str, str]]:
    return [{"sbiCode": a.sbi_code, "sbiOmschrijving": a.omschrijving, "indHoofdactiviteit": _ja_nee(a.hoofdactiviteit)}
            for a in activiteiten]


def _materiele_registratie(start: date, einde: date | None) -> dict[str, str]:
    registratie = {"datumAanvang": _kvk_date(start)}
    if einde is not None:
        registratie["datumEinde"] = _kvk_date(einde)
    return registratie


class _Renderer:
    """JSON bodies of the profile APIs with absolute links under ``base`` (the ``/api`` root)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def link(self, rel: str, path: str) -> dict[str, str]:
        return {"rel": rel, "href": f"{self.base}{path}"}

    def adres(self, vestiging: Vestiging, geo: bool) -> dict[str, Any]:
        a = vestiging.adres
        body: dict[str, Any] = {"type": "bezoekadres", "indAfgeschermd": "Nee", "volledigAdres": a.volledig_adres,
                                "straatnaam": a.straatnaam, "huisnummer": a.huisnummer}
        if a.huisletter:
            body["huisletter"] = a.huisletter
        if a.huisnummertoevoeging:
            body["huisnummerToevoeging"] = a.huisnummertoevoeging
        body.update(postcode=a.postcode, plaats=a.plaats, land="Nederland")
        if geo:
            lat, lon = rd_to_wgs84(a.rd_x, a.rd_y)
            body["geoData"] = {"addresseerbaarObjectId": a.verblijfsobject_id, "nummerAanduidingId": a.nummeraanduiding_id,
                               "gpsLatitude": lat, "gpsLongitude": lon, "rijksdriehoekX": round(a.rd_x, 3),
                               "rijksdriehoekY": round(a.rd_y, 3), "rijksdriehoekZ": 0.0}
        return body

    def vestiging(self, onderneming: Onderneming, vestiging: Vestiging, geo: bool, with_handelsnamen: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"vestigingsnummer": vestiging.vestigingsnummer, "kvkNummer": onderneming.kvk_nummer}
        if onderneming.rsin:
            body["rsin"] = onderneming.rsin
        body.update(
            indNonMailing=_ja_nee(onderneming.ind_non_mailing),
            formeleRegistratiedatum=_kvk_date(max(onderneming.formele_registratiedatum, vestiging.datum_aanvang)),
            materieleRegistratie=_materiele_registratie(vestiging.datum_aanvang, vestiging.datum_einde),
            eersteHandelsnaam=vestiging.eerste_handelsnaam,
            indHoofdvestiging=_ja_nee(vestiging.hoofdvestiging),
            indCommercieleVestiging=_ja_nee(vestiging.commercieel),
            voltijdWerkzamePersonen=vestiging.voltijd_werkzame_personen,
            totaalWerkzamePersonen=vestiging.totaal_werkzame_personen,
            deeltijdWerkzamePersonen=vestiging.deeltijd_werkzame_personen,
        )
        if with_handelsnamen:
            body["handelsnamen"] = [{"naam": n, "volgorde": i} for i, n in enumerate(vestiging.handelsnamen)]
        body["adressen"] = [self.adres(vestiging, geo)]
        if vestiging.websites:
            body["websites"] = list(vestiging.websites)
        body["sbiActiviteiten"] = _sbi(vestiging.sbi_activiteiten)
        body["links"] = [self.link("self", f"/v1/vestigingsprofielen/{vestiging.vestigingsnummer}"),
                         self.link("basisprofiel", f"/v1/basisprofielen/{onderneming.kvk_nummer}")]
        return body

    def eigenaar(self, onderneming: Onderneming) -> dict[str, Any]:
        rechtsvorm, uitgebreid = RECHTSVORMEN[onderneming.rechtsvorm]
        body: dict[str, Any] = {}
        if onderneming.rsin:
            body["rsin"] = onderneming.rsin
        body.update(rechtsvorm=rechtsvorm, uitgebreideRechtsvorm=uitgebreid)
        # Addresses (and so geoData) appear under eigenaar only when there is no hoofdvestiging
        # (release 1.2); every demo onderneming has one, so they are never repeated here.
        body["links"] = [self.link("self", f"/v1/basisprofielen/{onderneming.kvk_nummer}/eigenaar"),
                         self.link("basisprofiel", f"/v1/basisprofielen/{onderneming.kvk_nummer}")]
        return body

    def basisprofiel(self, onderneming: Onderneming, geo: bool) -> dict[str, Any]:
        kvk = onderneming.kvk_nummer
        body: dict[str, Any] = {
            "kvkNummer": kvk,
            "indNonMailing": _ja_nee(onderneming.ind_non_mailing),
            "naam": onderneming.naam,
            "formeleRegistratiedatum": _kvk_date(onderneming.formele_registratiedatum),
            "materieleRegistratie": _materiele_registratie(onderneming.datum_aanvang, onderneming.datum_einde),
            "totaalWerkzamePersonen": onderneming.totaal_werkzame_personen,
        }
        if onderneming.statutaire_naam:
            body["statutaireNaam"] = onderneming.statutaire_naam
        body["handelsnamen"] = [{"naam": n, "volgorde": i} for i, n in enumerate(onderneming.handelsnamen)]
        body["sbiActiviteiten"] = _sbi(onderneming.sbi_activiteiten)
        body["links"] = [self.link("self", f"/v1/basisprofielen/{kvk}"),
                         self.link("vestigingen", f"/v1/basisprofielen/{kvk}/vestigingen")]
        body["_embedded"] = {"hoofdvestiging": self.vestiging(onderneming, onderneming.hoofdvestiging, geo, False),
                             "eigenaar": self.eigenaar(onderneming)}
        return body

    def vestigingen(self, onderneming: Onderneming, as_of: date) -> dict[str, Any]:
        listed = _listed_vestigingen(onderneming, as_of)
        commercieel = sum(1 for v in listed if v.commercieel)
        return {
            "kvkNummer": onderneming.kvk_nummer,
            "aantalCommercieleVestigingen": commercieel,
            "aantalNietCommercieleVestigingen": len(listed) - commercieel,
            "totaalAantalVestigingen": len(listed),
            "vestigingen": [{
                "vestigingsnummer": v.vestigingsnummer, "kvkNummer": onderneming.kvk_nummer,
                "eersteHandelsnaam": v.eerste_handelsnaam, "indHoofdvestiging": _ja_nee(v.hoofdvestiging),
                "indAdresAfgeschermd": "Nee", "indCommercieleVestiging": _ja_nee(v.commercieel),
                "volledigAdres": v.adres.volledig_adres,
                "links": [self.link("vestigingsprofiel", f"/v1/vestigingsprofielen/{v.vestigingsnummer}")],
            } for v in listed],
            "links": [self.link("self", f"/v1/basisprofielen/{onderneming.kvk_nummer}/vestigingen"),
                      self.link("basisprofiel", f"/v1/basisprofielen/{onderneming.kvk_nummer}")],
        }


def _listed_vestigingen(onderneming: Onderneming, as_of: date) -> list[Vestiging]:
    """Active vestigingen; for an ended onderneming the vestigingen that ended with it."""
    if onderneming.actief_op(as_of):
        return [v for v in onderneming.vestigingen if v.actief_op(as_of)]
    return [v for v in onderneming.vestigingen if v.datum_einde == onderneming.datum_einde]


# --------------------------------------------------------------------------- zoeken

@dataclass(frozen=True, slots=True)
class _ZoekItem:
    onderneming: Onderneming
    vestiging: Vestiging | None  # None: the rechtspersoon item
    type: str

    @property
    def adres_vestiging(self) -> Vestiging:
        return self.vestiging or self.onderneming.hoofdvestiging

    def actief(self, as_of: date) -> bool:
        return (self.vestiging.actief_op(as_of) if self.vestiging else self.onderneming.actief_op(as_of))


def _zoek_items(state: KvkState) -> list[_ZoekItem]:
    items: list[_ZoekItem] = []
    for onderneming in state.ondernemingen.values():
        if onderneming.datum_aanvang > state.as_of:
            continue
        if onderneming.is_rechtspersoon:
            items.append(_ZoekItem(onderneming, None, "rechtspersoon"))
        for vestiging in onderneming.vestigingen:
            items.append(_ZoekItem(onderneming, vestiging, "hoofdvestiging" if vestiging.hoofdvestiging else "nevenvestiging"))
    return items


class _Params:
    """Strict query parameters: unknown names are an error (IPD1999), as on the live service."""

    def __init__(self, request: Request, allowed: frozenset[str]) -> None:
        self.params = request.query_params
        unknown = sorted({k for k in self.params.keys() if k not in allowed})
        if unknown:
            raise KvkError(400, "IPD1999", f"De volgende opgegeven parameter(s) is (zijn) ongeldig: {', '.join(unknown)}")

    def get(self, name: str) -> str | None:
        return self.params.get(name)

    def matching(self, name: str, pattern: re.Pattern[str], code: str, label: str) -> str | None:
        value = self.params.get(name)
        if value is not None and pattern.fullmatch(value) is None:
            raise KvkError(400, code, f"{label} {value} is niet valide.")
        return value

    def integer(self, name: str, minimum: int, maximum: int, default: int) -> int:
        value = self.params.get(name)
        if value is None:
            return default
        if not re.fullmatch(r"-?[0-9]+", value) or not minimum <= int(value) <= maximum:
            raise invalid_parameter(f"Parameter {name} moet een geheel getal van {minimum} tot en met {maximum} zijn.")
        return int(value)

    def boolean(self, name: str) -> bool:
        value = self.params.get(name)
        if value is None:
            return False
        if value.lower() not in ("true", "false"):
            raise invalid_parameter(f"Parameter {name} moet true of false zijn.")
        return value.lower() == "true"


def _page_url(request: Request, pagina: int) -> str:
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "pagina"]
    return f"{request.url.scheme}://{request.url.netloc}{request.url.path}?{urlencode(kept + [('pagina', str(pagina))])}"


# --------------------------------------------------------------------------- mutatieservice

@dataclass(frozen=True, slots=True)
class Signaal:
    id: str
    timestamp: datetime
    kvk_nummer: str
    signaal_type: str
    change: KvkChange


def signalen_for(change: KvkChange) -> list[Signaal]:
    """The Mutatieservice signals one register event produces."""
    if change.kind == "registratie":
        types = [SIGNAAL_NIEUW, SIGNAAL_GEWIJZIGD]
    elif change.kind == "adreswijziging":
        types = [SIGNAAL_VESTIGING]
    else:
        types = [SIGNAAL_BEEINDIGING]
    return [Signaal(str(uuid.uuid5(uuid.NAMESPACE_URL, f"{change.signaal_id}/{kind}")),
                    change.timestamp + timedelta(seconds=offset), change.kvk_nummer, kind, change)
            for offset, kind in enumerate(types)]


def _parse_instant(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid_parameter(f"Parameter {name} is geen geldig tijdstip (ISO 8601).") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _format_instant(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- app

class _KvkGateErrors:
    """Gateway errors in KvK's ``fout`` shape."""

    @staticmethod
    def unauthenticated(request: Request) -> Response:
        return KvkError(401, "IPD0001", "Geen of onjuiste apikey aangeleverd.").response()

    @staticmethod
    def forbidden(request: Request) -> Response:
        # KvK answers an unknown key with 401 as well (Zoeken spec, securitySchemes.ApiKeyAuth).
        return KvkError(401, "IPD0001", "Geen of onjuiste apikey aangeleverd.").response()

    @staticmethod
    def too_many_requests(request: Request, retry_after: str, headers: dict[str, str]) -> Response:
        return KvkError(429, "IPD1003", "Te veel verzoeken. Probeer het later nog een keer.",
                        {**headers, "Retry-After": retry_after}).response()

    @staticmethod
    def injected_failure(request: Request, fault: Fault) -> Response:
        headers = {"Retry-After": str(fault.retry_after_seconds)} if fault.retry_after_seconds is not None else {}
        if fault.status == 503:
            return KvkError(503, "IPD1003", "De gegevens zijn tijdelijk niet leverbaar. Probeer het over 5 minuten "
                                            "nog een keer.", headers).response()
        return KvkError(fault.status, "IPD9999", "Algemene technische fout.", headers).response()


def _check_accept(request: Request) -> None:
    accept = request.headers.get("accept")
    if not accept:
        return
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media in ("*/*", "application/*", JSON, HAL_JSON):
            return
    raise KvkError(406, "IPD1998", "Opgegeven Accept header wordt niet ondersteund.")


def create_kvk_app(state: RegistryState, register_provider: KvkRegisterLike, path_prefix: str = DEFAULT_PATH_PREFIX,
                   max_results: int = MAX_RESULTS, abonnement_id: str | None = None) -> FastAPI:
    """The KvK stand-in as a FastAPI app.

    ``state`` supplies the API keys, the clock (``as_of``: the register is served as it
    was at the end of that day), the rate limiter and the fault injector;
    ``register_provider`` the register (``demo_gemeente.kvk.KvkRegister``).
    ``max_results`` is KvK's Zoeken cap (1000); only tests of the capping logic lower it.
    ``abonnement_id`` is the Mutatieservice subscription id (derived from the
    registry name when not given).
    """
    subscription = abonnement_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"kvk-abonnement/{state.name}"))
    app = FastAPI(title="KvK Handelsregister stand-in", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(admin_router(state))
    install_gate(app, state, API_KEY_HEADER, _KvkGateErrors())
    _install_kvk_error_handlers(app)
    service = _KvkService(state, register_provider, path_prefix.rstrip("/"), max_results, subscription)
    app.include_router(_zoeken_router(service))
    app.include_router(_profiel_router(service))
    app.include_router(_mutatieservice_router(service))
    app.state.abonnement_id = subscription
    return app


def _install_kvk_error_handlers(app: FastAPI) -> None:
    """Every error in KvK's ``fout`` shape."""

    @app.exception_handler(KvkError)
    async def kvk_error(request: Request, exc: KvkError) -> Response:  # noqa: ARG001 - Starlette signature
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:  # noqa: ARG001
        if exc.status_code == 404:
            return KvkError(404, "IPD0001", "Het gevraagde product bestaat niet.").response()
        if exc.status_code == 405:
            return KvkError(405, "IPD1998", "Methode niet toegestaan.").response()
        return KvkError(exc.status_code, "IPD9999", "Algemene technische fout.").response()


class _KvkService:
    """What every KvK route needs: the register as of the served day, links, responses and the subscription."""

    def __init__(self, state: RegistryState, register_provider: KvkRegisterLike, prefix: str, max_results: int,
                 subscription: str) -> None:
        self.state = state
        self.register_provider = register_provider
        self.prefix = prefix
        self.max_results = max_results
        self.subscription = subscription

    def register_now(self) -> KvkState:
        return self.register_provider.at(self.state.as_of)

    def renderer(self, request: Request) -> _Renderer:
        return _Renderer(f"{request.url.scheme}://{request.url.netloc}{self.prefix}")

    @staticmethod
    def body(document: dict[str, Any], api: str, media_type: str = HAL_JSON) -> Response:
        return Response(content=json.dumps(document, ensure_ascii=False).encode("utf-8"), media_type=media_type,
                        headers={"api-version": VERSIONS[api]})

    def onderneming_for(self, kvk_nummer: str) -> tuple[Onderneming, KvkState]:
        if KVK_NUMMER.fullmatch(kvk_nummer) is None:
            raise KvkError(400, "IPD0004", f"Het KVK-nummer {kvk_nummer} is niet valide.")
        trigger = ERROR_TRIGGER_KVK_NUMMERS.get(kvk_nummer)
        if trigger is not None:
            raise KvkError(*trigger)
        current = self.register_now()
        onderneming = current.ondernemingen.get(kvk_nummer)
        if onderneming is None or onderneming.datum_aanvang > current.as_of:
            raise KvkError(404, "IPD0005", f"Op basis van het KVK-nummer {kvk_nummer} kan het product niet worden geleverd.")
        return onderneming, current

    def signalen_until_now(self, vanaf: datetime | None, tot: datetime | None) -> list[Signaal]:
        """The Mutatieservice signals in [vanaf, tot), up to the end of the served day."""
        as_of = self.state.as_of
        end_of_day = datetime.combine(as_of + timedelta(days=1), time.min, tzinfo=timezone.utc)
        tot = min(tot, end_of_day) if tot else end_of_day
        first_day = vanaf.astimezone(timezone.utc).date() if vanaf else date.min
        changes = self.register_provider.changes_between(first_day, min(as_of, tot.astimezone(timezone.utc).date()))
        found = [s for c in changes for s in signalen_for(c)]
        return [s for s in found if (vanaf is None or s.timestamp >= vanaf) and s.timestamp < tot]

    def check_abonnement(self, abonnement_id: str) -> None:
        if abonnement_id != self.subscription:
            raise KvkError(404, "IPD0001", f"Het gevraagde product abonnement {abonnement_id} bestaat niet.")


@dataclass(frozen=True)
class _ZoekVraag:
    """The validated parameters of one Zoeken v2 request."""

    kvk_nummer: str | None
    rsin: str | None
    vestigingsnummer: str | None
    postcode: str | None
    huisnummer: str | None
    huisletter: str | None
    postbusnummer: str | None
    naam: str | None
    straatnaam: str | None
    plaats: str | None
    types: list[str]
    inclusief_inactief: bool
    pagina: int
    per_pagina: int

    @classmethod
    def of(cls, request: Request) -> "_ZoekVraag":
        params = _Params(request, ZOEKEN_PARAMS)
        vraag = cls(
            kvk_nummer=params.matching("kvkNummer", KVK_NUMMER, "IPD0004", "Het KVK-nummer"),
            rsin=params.matching("rsin", RSIN, "IPD0010", "Het RSI-nummer"),
            vestigingsnummer=params.matching("vestigingsnummer", VESTIGINGSNUMMER, "IPD0006", "Het vestigingsnummer"),
            postcode=params.matching("postcode", POSTCODE, "IPD1998", "De postcode"),
            huisnummer=params.matching("huisnummer", HUISNUMMER, "IPD1998", "Het huisnummer"),
            huisletter=params.matching("huisletter", HUISLETTER, "IPD1998", "De huisletter"),
            postbusnummer=params.matching("postbusnummer", HUISNUMMER, "IPD1998", "Het postbusnummer"),
            naam=params.get("naam"), straatnaam=params.get("straatnaam"), plaats=params.get("plaats"),
            types=cls._types(request),
            inclusief_inactief=params.boolean("inclusiefInactieveRegistraties"),
            pagina=params.integer("pagina", 1, MAX_PAGINA, 1),
            per_pagina=params.integer("resultatenPerPagina", 1, RESULTATEN_PER_PAGINA_MAX,
                                      RESULTATEN_PER_PAGINA_DEFAULT),
        )
        vraag._check_combinations()
        return vraag

    @staticmethod
    def _types(request: Request) -> list[str]:
        types = [t for value in request.query_params.getlist("type") for t in value.split(",") if t]
        for kind in types:
            if kind not in ZOEKEN_TYPES:
                raise KvkError(400, "IPD5203", f"Het opgegeven type {kind} is niet valide.")
        return types

    def _check_combinations(self) -> None:
        if self.postcode is not None and self.huisnummer is None and self.postbusnummer is None:
            raise invalid_parameter("Postcode mag alleen in combinatie met huisnummer of postbusnummer gezocht worden.")
        if (self.huisnummer is not None or self.postbusnummer is not None) and self.postcode is None:
            raise invalid_parameter("Huisnummer en postbusnummer mogen alleen in combinatie met postcode gezocht worden.")
        if self.huisletter is not None and self.huisnummer is None:
            raise invalid_parameter("Huisletter mag alleen in combinatie met huisnummer gezocht worden.")
        if not any((self.kvk_nummer, self.rsin, self.vestigingsnummer, self.naam, self.straatnaam, self.plaats,
                    self.postcode)):
            raise invalid_parameter("Geef ten minste één zoekparameter op.")

    def matches(self, item: _ZoekItem, as_of: date) -> bool:
        o, adres = item.onderneming, item.adres_vestiging.adres
        if not self.inclusief_inactief and not item.actief(as_of):
            return False
        if self.types and item.type not in self.types:
            return False
        if self.kvk_nummer and o.kvk_nummer != self.kvk_nummer:
            return False
        if self.rsin and o.rsin != self.rsin:
            return False
        if self.vestigingsnummer and (item.vestiging is None or item.vestiging.vestigingsnummer != self.vestigingsnummer):
            return False
        naam = self.naam
        if naam and not any(naam.lower() in n.lower() for n in (o.naam, *o.handelsnamen, *item.adres_vestiging.handelsnamen)):
            return False
        if self.straatnaam and adres.straatnaam.lower() != self.straatnaam.strip().lower():
            return False
        if self.plaats and adres.plaats.lower() != self.plaats.strip().lower():
            return False
        if self.postcode and (adres.postcode != self.postcode.upper() or self.postbusnummer is not None
                              or (self.huisnummer is not None and adres.huisnummer != int(self.huisnummer))
                              or (self.huisletter is not None
                                  and (adres.huisletter or "").lower() != self.huisletter.lower())):
            return False
        return True

    def resultaat(self, item: _ZoekItem, base: str, as_of: date) -> dict[str, Any]:
        """One entry of ``resultaten``: the address in as much detail as was asked for, and its profile links."""
        o, vestiging = item.onderneming, item.adres_vestiging
        binnenlands: dict[str, Any] = {"type": "bezoekadres", "straatnaam": vestiging.adres.straatnaam}
        if self.postcode:
            binnenlands["huisnummer"] = vestiging.adres.huisnummer
            if vestiging.adres.huisletter:
                binnenlands["huisletter"] = vestiging.adres.huisletter
            binnenlands["postcode"] = vestiging.adres.postcode
        binnenlands["plaats"] = vestiging.adres.plaats
        resultaat: dict[str, Any] = {"kvkNummer": o.kvk_nummer}
        if o.rsin and item.vestiging is None:
            resultaat["rsin"] = o.rsin
        if item.vestiging is not None:
            resultaat["vestigingsnummer"] = item.vestiging.vestigingsnummer
        resultaat.update(naam=item.vestiging.eerste_handelsnaam if item.vestiging else o.naam,
                         adres={"binnenlandsAdres": binnenlands}, type=item.type)
        if self.inclusief_inactief:
            resultaat["actief"] = _ja_nee(item.actief(as_of))
        links = {"basisprofiel": {"href": f"{base}/v1/basisprofielen/{o.kvk_nummer}"}}
        if item.vestiging is not None:
            links["vestigingsprofiel"] = {"href": f"{base}/v1/vestigingsprofielen/{item.vestiging.vestigingsnummer}"}
        resultaat["_links"] = links
        return resultaat


def _zoeken_router(service: _KvkService) -> APIRouter:
    router = APIRouter()

    @router.get(f"{service.prefix}/v2/zoeken")
    def zoeken(request: Request) -> Response:
        _check_accept(request)
        vraag = _ZoekVraag.of(request)
        current = service.register_now()
        found = [item for item in _zoek_items(current) if vraag.matches(item, current.as_of)]
        max_results = service.max_results
        capped = found[:max_results]
        if not capped:
            raise geen_resultaten()
        pagina, per_pagina = vraag.pagina, vraag.per_pagina
        start = (pagina - 1) * per_pagina
        if start >= len(capped):
            if len(found) > max_results:
                raise invalid_parameter(f"Er worden maximaal {max_results} resultaten getoond; verfijn de zoekvraag.")
            raise geen_resultaten()
        base = service.renderer(request).base
        resultaten = [vraag.resultaat(item, base, current.as_of) for item in capped[start:start + per_pagina]]
        document: dict[str, Any] = {"pagina": pagina, "resultatenPerPagina": per_pagina, "totaal": len(capped)}
        last_page = math.ceil(len(capped) / per_pagina)
        if pagina > 1:
            document["vorige"] = _page_url(request, pagina - 1)
        if pagina < last_page:
            document["volgende"] = _page_url(request, pagina + 1)
        document["resultaten"] = resultaten
        document["_links"] = {"self": {"href": str(request.url)}}
        return service.body(document, "zoeken", JSON)

    return router


_BASIS_PARAMS = frozenset({"geoData"})


def _profiel_router(service: _KvkService) -> APIRouter:
    """Basisprofiel (with eigenaar, hoofdvestiging and vestigingen) and Vestigingsprofiel."""
    router = APIRouter()
    prefix = service.prefix

    @router.get(f"{prefix}/v1/basisprofielen/{{kvkNummer}}")
    def basisprofiel(kvkNummer: str, request: Request) -> Response:  # noqa: N803 - spec name
        _check_accept(request)
        geo = _Params(request, _BASIS_PARAMS).boolean("geoData")
        onderneming, _ = service.onderneming_for(kvkNummer)
        return service.body(service.renderer(request).basisprofiel(onderneming, geo), "basisprofiel")

    @router.get(f"{prefix}/v1/basisprofielen/{{kvkNummer}}/eigenaar")
    def eigenaar(kvkNummer: str, request: Request) -> Response:  # noqa: N803
        _check_accept(request)
        _Params(request, _BASIS_PARAMS).boolean("geoData")  # accepted (spec) and validated; see _Renderer.eigenaar
        onderneming, _ = service.onderneming_for(kvkNummer)
        return service.body(service.renderer(request).eigenaar(onderneming), "basisprofiel")

    @router.get(f"{prefix}/v1/basisprofielen/{{kvkNummer}}/hoofdvestiging")
    def hoofdvestiging(kvkNummer: str, request: Request) -> Response:  # noqa: N803
        _check_accept(request)
        geo = _Params(request, _BASIS_PARAMS).boolean("geoData")
        onderneming, _ = service.onderneming_for(kvkNummer)
        return service.body(service.renderer(request).vestiging(onderneming, onderneming.hoofdvestiging, geo, False),
                            "basisprofiel")

    @router.get(f"{prefix}/v1/basisprofielen/{{kvkNummer}}/vestigingen")
    def vestigingen(kvkNummer: str, request: Request) -> Response:  # noqa: N803
        _check_accept(request)
        _Params(request, frozenset())
        onderneming, current = service.onderneming_for(kvkNummer)
        return service.body(service.renderer(request).vestigingen(onderneming, current.as_of), "basisprofiel")

    @router.get(f"{prefix}/v1/vestigingsprofielen/{{vestigingsnummer}}")
    def vestigingsprofiel(vestigingsnummer: str, request: Request) -> Response:
        _check_accept(request)
        geo = _Params(request, _BASIS_PARAMS).boolean("geoData")
        if VESTIGINGSNUMMER.fullmatch(vestigingsnummer) is None:
            raise KvkError(400, "IPD0006", f"Het vestigingsnummer {vestigingsnummer} is niet valide.")
        current = service.register_now()
        vestiging = current.vestigingen.get(vestigingsnummer)
        if vestiging is None or vestiging.datum_aanvang > current.as_of:
            raise KvkError(404, "IPD0007",
                           f"Op basis van het vestigingsnummer {vestigingsnummer} kan het product niet worden geleverd.")
        onderneming = current.ondernemingen[vestiging.kvk_nummer]
        return service.body(service.renderer(request).vestiging(onderneming, vestiging, geo, True), "vestigingsprofiel")

    return router


def _mutatieservice_router(service: _KvkService) -> APIRouter:
    router = APIRouter()
    prefix = service.prefix

    @router.get(f"{prefix}/v1/abonnementen")
    def abonnementen(request: Request) -> Response:
        _Params(request, frozenset())
        document = {"abonnementen": [{"id": service.subscription,
                                      "contract": {"id": f"MS-{service.state.name}", "omschrijving": "KVK Mutatieservice"},
                                      "startDatum": "2026-01-01T00:00:00.000Z"}]}
        return service.body(document, "mutatieservice", JSON)

    @router.get(f"{prefix}/v1/abonnementen/{{abonnementId}}")
    def signalen(abonnementId: str, request: Request) -> Response:  # noqa: N803 - documented name
        params = _Params(request, frozenset({"vanaf", "tot", "pagina", "aantal"}))
        service.check_abonnement(abonnementId)
        vanaf, tot = _parse_instant(params.get("vanaf"), "vanaf"), _parse_instant(params.get("tot"), "tot")
        if vanaf and tot and tot < vanaf:
            raise invalid_parameter("Parameter tot ligt voor vanaf.")
        pagina = params.integer("pagina", 1, 1_000_000, 1)
        aantal = params.integer("aantal", 1, SIGNALEN_AANTAL_MAX, SIGNALEN_AANTAL_DEFAULT)
        found = service.signalen_until_now(vanaf, tot)
        chunk = found[(pagina - 1) * aantal: pagina * aantal]
        document = {"pagina": pagina, "aantal": aantal, "totaal": len(found),
                    "totaalPaginas": math.ceil(len(found) / aantal),
                    "signalen": [{"id": s.id, "timestamp": _format_instant(s.timestamp), "kvknummer": s.kvk_nummer,
                                  "signaalType": s.signaal_type} for s in chunk]}
        return service.body(document, "mutatieservice", JSON)

    @router.get(f"{prefix}/v1/abonnementen/{{abonnementId}}/signalen/{{signaalId}}")
    def signaal(abonnementId: str, signaalId: str, request: Request) -> Response:  # noqa: N803
        _Params(request, frozenset())
        service.check_abonnement(abonnementId)
        match = next((s for s in service.signalen_until_now(None, None) if s.id == signaalId), None)
        if match is None:
            raise KvkError(404, "IPD0001", f"Het gevraagde product signaal {signaalId} bestaat niet.")
        current = service.register_now()
        onderneming = current.ondernemingen[match.kvk_nummer]
        vestigingen_now = _listed_vestigingen(onderneming, current.as_of)
        document = {"signaal": {
            "id": match.id, "timestamp": _format_instant(match.timestamp), "signaalType": match.signaal_type,
            "heeftBetrekkingOp": {
                "kvkNummer": onderneming.kvk_nummer,
                "totaalWerkzamePersonen": onderneming.totaal_werkzame_personen,
                "wordtUitgeoefendIn": [{"vestigingsnummer": v.vestigingsnummer, "isHoofdvestiging": v.hoofdvestiging,
                                        "totaalWerkzamePersonen": v.totaal_werkzame_personen} for v in vestigingen_now],
            },
        }}
        if match.change.vestigingsnummer and match.signaal_type == SIGNAAL_VESTIGING:
            document["signaal"]["betrokkenVestiging"] = {"vestigingsnummer": match.change.vestigingsnummer}
        return service.body(document, "mutatieservice", JSON)

    return router


# --------------------------------------------------------------------------- running it

class KvkStandin(RegistryHandle):
    """Handle on a running KvK stand-in (see :func:`start_kvk_standin`)."""

    def __init__(self, state: RegistryState, server: ThreadedUvicorn, host: str, port: int, abonnement_id: str,
                 path_prefix: str = DEFAULT_PATH_PREFIX) -> None:
        self.state = state
        self._server = server
        self.host, self.port = host, port
        self.path_prefix = path_prefix.rstrip("/")
        self.abonnement_id = abonnement_id

    @property
    def url(self) -> str:
        """API root including ``/api`` (no trailing slash): ``<url>/v2/zoeken``, ``<url>/v1/basisprofielen/…``."""
        return f"http://{self.host}:{self.port}{self.path_prefix}"

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> "KvkStandin":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_kvk_standin(register: KvkRegisterLike, as_of: date | None = None, api_key: str | None = None,
                      host: str = "127.0.0.1", port: int = 0, rate_limit_per_second: float | None = None,
                      max_results: int = MAX_RESULTS, name: str = "kvk") -> KvkStandin:
    """Start the KvK stand-in for ``register`` on a background thread and return its handle.

    ``port=0`` takes a free ephemeral port; ``api_key`` defaults to a random key;
    ``rate_limit_per_second`` enables the per-key token bucket (KvK: 100/s).
    """
    limiter = TokenBucketRateLimiter(rate_limit_per_second) if rate_limit_per_second else None
    state = RegistryState(name=name, world=WorldSource(register),  # type: ignore[arg-type] - serves KvkState
                          api_keys=frozenset({api_key or secrets.token_urlsafe(24)}), rate_limiter=limiter)
    if as_of is not None:
        state.set_as_of(as_of)
    app = create_kvk_app(state, register, max_results=max_results)
    server = ThreadedUvicorn(app, host, port, name=name)
    bound = server.start()
    return KvkStandin(state, server, host, bound, app.state.abonnement_id)
