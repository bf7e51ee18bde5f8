"""Stand-in for Haal Centraal BRP API Personen v2 (specification v2.7.0).

One operation, ``POST {prefix}/personen``, with the search type in the body's
``type`` discriminator. Request validation and the problem+json bodies follow the
published fout-cases feature files and the reference implementation's wording:
title "Een of meerdere parameters zijn niet correct.", code ``paramsValidation``,
one ``invalidParams`` entry per finding with codes such as ``required``,
``minItems``, ``maxItems``, ``pattern``, ``fields``, ``unknownParam``, ``value``.

Behaviour worth knowing:

* ``RaadpleegMetBurgerservicenummer`` answers every known BSN, deceased persons
  included (the spec gives this type no ``inclusiefOverledenPersonen``; sending it
  is an ``unknownParam`` error). The search types leave deceased persons out
  unless ``inclusiefOverledenPersonen`` is true.
* Unknown BSN → 200 with an empty ``personen`` list.
* The search types answer the ``PersoonBeperkt`` shape (smaller field set).
"""
from __future__ import annotations

import json
import re
from datetime import date
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from demo_gemeente.model import Municipality, Person
from standins.brp_fields import (
    PERSOON_BEPERKT_FIELDS,
    PERSOON_FIELDS,
    apply_fields,
    is_automatic_path,
    is_known_path,
)
from standins.common import (
    Fault,
    RegistryState,
    admin_router,
    install_gate,
    is_deceased_on,
    problem_response,
)

DEFAULT_PATH_PREFIX = "/haalcentraal/api/brp"
API_KEY_HEADER = "X-API-KEY"
RESPONSE_MEDIA_TYPE = "application/json; charset=utf-8"

MAX_BSN = 20
MAX_FIELDS = 130
FIELD_PATTERN = r"^[a-zA-Z0-9\._]{1,200}$"
BSN_PATTERN = r"^[0-9]{9}$"
GEMEENTE_PATTERN = r"^[0-9]{4}$"
POSTCODE_PATTERN = r"^[1-9]{1}[0-9]{3}[ ]?[A-Za-z]{2}$"
HUISLETTER_PATTERN = r"^[a-zA-Z]{1}$"
HUISNUMMERTOEVOEGING_PATTERN = r"^[a-zA-Z0-9 \-]{1,4}$"
BAG_ID_FILTER_PATTERN = r"^(?!0{16})[0-9]{16}$"
GESLACHTSNAAM_PATTERN = r"^[a-zA-Z0-9À-ž \.\-\']{1,200}$|^[a-zA-Z0-9À-ž \.\-\']{3,199}\*{1}$"
VOORNAMEN_OPTIONEEL_PATTERN = r"^[a-zA-Z0-9À-ž \.\-\']{1,199}\*{0,1}$"
VOORVOEGSEL_PATTERN = r"^[a-zA-Z \']{1,10}$"
GESLACHT_PATTERN = r"^([Mm]|[Vv]|[Oo])$"
STRAAT_PATTERN = r"^[a-zA-Z0-9À-ž \-\'\.]{1,80}$|^[a-zA-Z0-9À-ž \-\'\.]{7,79}\*{1}$|^\*{1}[a-zA-Z0-9À-ž \-\'\.]{7,79}$"

BAD_REQUEST_TYPE = "https://datatracker.ietf.org/doc/html/rfc7231#section-6.5.1"
VALIDATION_TYPE_BASE = "https://www.vng.nl/realisatie/api/validaties/"

NEDERLAND = {"code": "6030", "omschrijving": "Nederland"}
GESLACHT_OMSCHRIJVING = {"M": "man", "V": "vrouw", "O": "onbekend"}
MAANDEN = ("januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus",
           "september", "oktober", "november", "december")


# --------------------------------------------------------------------------- validation

class _Findings:
    """Collects invalidParams entries in the order they are found."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, code: str, name: str, reason: str) -> None:
        self.items.append({"type": VALIDATION_TYPE_BASE + code, "name": name, "code": code, "reason": reason})


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _check_pattern(findings: _Findings, name: str, value: Any, pattern: str) -> None:
    if not isinstance(value, str) or re.fullmatch(pattern, value) is None:
        findings.add("pattern", name, f"Waarde voldoet niet aan patroon {pattern}.")


def _check_required_string(findings: _Findings, name: str, value: Any, pattern: str) -> None:
    if _is_blank(value):
        findings.add("required", name, "Parameter is verplicht.")
    else:
        _check_pattern(findings, name, value, pattern)


def _check_optional_string(findings: _Findings, name: str, value: Any, pattern: str) -> None:
    if value is not None:
        _check_pattern(findings, name, value, pattern)


def _check_huisnummer(findings: _Findings, value: Any, required: bool = True) -> None:
    if _is_blank(value):
        if required:
            findings.add("required", "huisnummer", "Parameter is verplicht.")
        return
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        number = int(value)
    if number is None:
        findings.add("integer", "huisnummer", "Waarde is geen geldig getal.")
    elif number < 1:
        findings.add("minimum", "huisnummer", "Waarde is lager dan minimum 1.")
    elif number > 99999:
        findings.add("maximum", "huisnummer", "Waarde is hoger dan maximum 99999.")


def _check_boolean(findings: _Findings, name: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        findings.add("boolean", name, "Waarde is geen boolean.")


def _check_date(findings: _Findings, name: str, value: Any, required: bool) -> None:
    if _is_blank(value):
        if required:
            findings.add("required", name, "Parameter is verplicht.")
        return
    try:
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError
        date.fromisoformat(value)
    except ValueError:
        findings.add("date", name, "Waarde is geen geldige datum.")


def _check_bsn_list(findings: _Findings, value: Any) -> None:
    if value is None:
        findings.add("required", "burgerservicenummer", "Parameter is verplicht.")
    elif not isinstance(value, list):
        findings.add("array", "burgerservicenummer", "Parameter is geen array.")
    elif len(value) < 1:
        findings.add("minItems", "burgerservicenummer", "Array bevat minder dan 1 items.")
    elif len(value) > MAX_BSN:
        findings.add("maxItems", "burgerservicenummer", f"Array bevat meer dan {MAX_BSN} items.")
    else:
        for index, bsn in enumerate(value):
            _check_pattern(findings, f"burgerservicenummer[{index}]", bsn, BSN_PATTERN)


def _check_fields(findings: _Findings, value: Any, tree: dict[str, Any]) -> None:
    if value is None:
        findings.add("required", "fields", "Parameter is verplicht.")
        return
    if not isinstance(value, list):
        findings.add("array", "fields", "Parameter is geen array.")
        return
    if len(value) < 1:
        findings.add("minItems", "fields", "Array bevat minder dan 1 items.")
        return
    if len(value) > MAX_FIELDS:
        findings.add("maxItems", "fields", f"Array bevat meer dan {MAX_FIELDS} items.")
        return
    for index, path in enumerate(value):
        name = f"fields[{index}]"
        if path is None:
            findings.add("required", name, "Parameter is verplicht.")
        elif not isinstance(path, str) or re.fullmatch(FIELD_PATTERN, path) is None:
            findings.add("pattern", name, f"Waarde voldoet niet aan patroon {FIELD_PATTERN}.")
        elif is_automatic_path(path):
            findings.add("fields", name, "Parameter bevat een niet toegestane veldnaam.")
        elif not is_known_path(path, tree):
            findings.add("fields", name, "Parameter bevat een niet bestaande veldnaam.")


Validator = Callable[[_Findings, dict[str, Any]], None]


def _v_raadpleeg(f: _Findings, body: dict[str, Any]) -> None:
    _check_bsn_list(f, body.get("burgerservicenummer"))


def _v_postcode_huisnummer(f: _Findings, body: dict[str, Any]) -> None:
    _check_required_string(f, "postcode", body.get("postcode"), POSTCODE_PATTERN)
    _check_huisnummer(f, body.get("huisnummer"))
    _check_optional_string(f, "huisletter", body.get("huisletter"), HUISLETTER_PATTERN)
    _check_optional_string(f, "huisnummertoevoeging", body.get("huisnummertoevoeging"), HUISNUMMERTOEVOEGING_PATTERN)
    _check_date(f, "geboortedatum", body.get("geboortedatum"), required=False)
    _check_optional_string(f, "geslachtsnaam", body.get("geslachtsnaam"), GESLACHTSNAAM_PATTERN)


def _v_nummeraanduiding(f: _Findings, body: dict[str, Any]) -> None:
    _check_required_string(f, "nummeraanduidingIdentificatie", body.get("nummeraanduidingIdentificatie"),
                           BAG_ID_FILTER_PATTERN)


def _v_adresseerbaar_object(f: _Findings, body: dict[str, Any]) -> None:
    _check_required_string(f, "adresseerbaarObjectIdentificatie", body.get("adresseerbaarObjectIdentificatie"),
                           BAG_ID_FILTER_PATTERN)


def _v_geslachtsnaam_geboortedatum(f: _Findings, body: dict[str, Any]) -> None:
    _check_required_string(f, "geslachtsnaam", body.get("geslachtsnaam"), GESLACHTSNAAM_PATTERN)
    _check_date(f, "geboortedatum", body.get("geboortedatum"), required=True)
    _check_optional_string(f, "geslacht", body.get("geslacht"), GESLACHT_PATTERN)
    _check_optional_string(f, "voorvoegsel", body.get("voorvoegsel"), VOORVOEGSEL_PATTERN)
    _check_optional_string(f, "voornamen", body.get("voornamen"), VOORNAMEN_OPTIONEEL_PATTERN)


def _v_naam_gemeente(f: _Findings, body: dict[str, Any]) -> None:
    _check_required_string(f, "geslachtsnaam", body.get("geslachtsnaam"), GESLACHTSNAAM_PATTERN)
    _check_required_string(f, "voornamen", body.get("voornamen"), GESLACHTSNAAM_PATTERN)
    _check_optional_string(f, "geslacht", body.get("geslacht"), GESLACHT_PATTERN)
    _check_optional_string(f, "voorvoegsel", body.get("voorvoegsel"), VOORVOEGSEL_PATTERN)


def _v_straat(f: _Findings, body: dict[str, Any]) -> None:
    _check_required_string(f, "straat", body.get("straat"), STRAAT_PATTERN)
    _check_huisnummer(f, body.get("huisnummer"))
    _check_optional_string(f, "huisletter", body.get("huisletter"), HUISLETTER_PATTERN)
    _check_optional_string(f, "huisnummertoevoeging", body.get("huisnummertoevoeging"), HUISNUMMERTOEVOEGING_PATTERN)


class _QueryType:
    def __init__(self, params: tuple[str, ...], validator: Validator, gemeente_required: bool = False,
                 beperkt: bool = True) -> None:
        # Parameters this type accepts besides type, fields and gemeenteVanInschrijving.
        self.params = params
        self.validator = validator
        self.gemeente_required = gemeente_required
        self.beperkt = beperkt

    @property
    def fields_tree(self) -> dict[str, Any]:
        return PERSOON_BEPERKT_FIELDS if self.beperkt else PERSOON_FIELDS


QUERY_TYPES: dict[str, _QueryType] = {
    "RaadpleegMetBurgerservicenummer": _QueryType(("burgerservicenummer",), _v_raadpleeg, beperkt=False),
    "ZoekMetGeslachtsnaamEnGeboortedatum": _QueryType(
        ("geslachtsnaam", "geboortedatum", "geslacht", "voorvoegsel", "voornamen", "inclusiefOverledenPersonen"),
        _v_geslachtsnaam_geboortedatum),
    "ZoekMetNaamEnGemeenteVanInschrijving": _QueryType(
        ("geslachtsnaam", "voornamen", "geslacht", "voorvoegsel", "inclusiefOverledenPersonen"),
        _v_naam_gemeente, gemeente_required=True),
    "ZoekMetPostcodeEnHuisnummer": _QueryType(
        ("postcode", "huisnummer", "huisletter", "huisnummertoevoeging", "geboortedatum", "geslachtsnaam",
         "inclusiefOverledenPersonen"), _v_postcode_huisnummer),
    "ZoekMetStraatHuisnummerEnGemeenteVanInschrijving": _QueryType(
        ("straat", "huisnummer", "huisletter", "huisnummertoevoeging", "inclusiefOverledenPersonen"),
        _v_straat, gemeente_required=True),
    "ZoekMetNummeraanduidingIdentificatie": _QueryType(
        ("nummeraanduidingIdentificatie", "inclusiefOverledenPersonen"), _v_nummeraanduiding),
    "ZoekMetAdresseerbaarObjectIdentificatie": _QueryType(
        ("adresseerbaarObjectIdentificatie", "inclusiefOverledenPersonen"), _v_adresseerbaar_object),
}


def validate_query(body: Any) -> tuple[_QueryType | None, list[dict[str, str]]]:
    """Validate a PersonenQuery body; returns the query type and the invalidParams (empty when valid)."""
    findings = _Findings()
    if not isinstance(body, dict):
        findings.add("required", "type", "Parameter is verplicht.")
        return None, findings.items
    type_name = body.get("type")
    if _is_blank(type_name):
        findings.add("required", "type", "Parameter is verplicht.")
        return None, findings.items
    query_type = QUERY_TYPES.get(type_name) if isinstance(type_name, str) else None
    if query_type is None:
        findings.add("value", "type", "Waarde is geen geldig zoek type.")
        return None, findings.items
    query_type.validator(findings, body)
    if "inclusiefOverledenPersonen" in query_type.params:
        _check_boolean(findings, "inclusiefOverledenPersonen", body.get("inclusiefOverledenPersonen"))
    if query_type.gemeente_required:
        _check_required_string(findings, "gemeenteVanInschrijving", body.get("gemeenteVanInschrijving"),
                               GEMEENTE_PATTERN)
    else:
        _check_optional_string(findings, "gemeenteVanInschrijving", body.get("gemeenteVanInschrijving"),
                               GEMEENTE_PATTERN)
    _check_fields(findings, body.get("fields"), query_type.fields_tree)
    allowed = {"type", "fields", "gemeenteVanInschrijving", *query_type.params}
    for name in body:
        if name not in allowed:
            findings.add("unknownParam", name, "Parameter is niet verwacht.")
    return query_type, findings.items


# --------------------------------------------------------------------------- person rendering

def datum(value: date) -> dict[str, Any]:
    """A complete date in the spec's polymorphic date shape (type ``Datum``)."""
    return {"type": "Datum", "datum": value.isoformat(),
            "langFormaat": f"{value.day} {MAANDEN[value.month - 1]} {value.year}"}


def leeftijd(geboortedatum: date, on: date) -> int:
    """Age in whole years on ``on``."""
    had_birthday = (on.month, on.day) >= (geboortedatum.month, geboortedatum.day)
    return on.year - geboortedatum.year - (0 if had_birthday else 1)


def _voorletters(voornamen: str) -> str:
    return "".join(f"{part[0].upper()}." for part in voornamen.split() if part)


def _naam_gerelateerde(person: Person) -> dict[str, Any]:
    naam: dict[str, Any] = {"voornamen": person.voornamen, "geslachtsnaam": person.geslachtsnaam,
                            "voorletters": _voorletters(person.voornamen)}
    if person.voorvoegsel:
        naam["voorvoegsel"] = person.voorvoegsel
    return naam


def _waarde_geslacht(code: str) -> dict[str, str]:
    return {"code": code, "omschrijving": GESLACHT_OMSCHRIJVING.get(code, "onbekend")}


def _geboorte(person: Person, world: Municipality) -> dict[str, Any]:
    geboorte: dict[str, Any] = {"datum": datum(person.geboortedatum), "land": dict(NEDERLAND)}
    if person.geboorteplaats:
        plaats = {"omschrijving": person.geboorteplaats}
        # Only the demo municipality's own code is known; other places carry just a name.
        if person.geboorteplaats == world.naam:
            plaats = {"code": world.gemeentecode, "omschrijving": world.naam}
        geboorte["plaats"] = plaats
    return geboorte


def _verblijfplaats(person: Person, world: Municipality) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The ``verblijfplaats`` (type Adres) and the derived ``adressering``."""
    na = world.nummeraanduidingen.get(person.nummeraanduiding_id)
    if na is None:
        return None, None
    ruimte = world.openbare_ruimten.get(na.openbare_ruimte_id)
    woonplaats = world.woonplaatsen.get(na.woonplaats_id)
    straat = ruimte.naam if ruimte else ""
    adres: dict[str, Any] = {"officieleStraatnaam": straat, "korteStraatnaam": straat[:24],
                             "huisnummer": na.huisnummer}
    if na.huisletter:
        adres["huisletter"] = na.huisletter
    if na.huisnummertoevoeging:
        adres["huisnummertoevoeging"] = na.huisnummertoevoeging
    adres["postcode"] = na.postcode
    if woonplaats:
        adres["woonplaats"] = woonplaats.naam
    verblijfplaats = {
        "type": "Adres",
        "verblijfadres": adres,
        "functieAdres": {"code": "W", "omschrijving": "woonadres"},
        "adresseerbaarObjectIdentificatie": person.verblijfsobject_id,
        "nummeraanduidingIdentificatie": na.identificatie,
        "datumVan": datum(person.datum_aanvang_adreshouding),
    }
    regel1 = f"{straat} {na.huisnummer}{na.huisletter or ''}"
    if na.huisnummertoevoeging:
        regel1 += f"-{na.huisnummertoevoeging}"
    postcode = f"{na.postcode[:4]} {na.postcode[4:]}"
    adressering = {"adresregel1": regel1[:40],
                   "adresregel2": f"{postcode}  {(woonplaats.naam if woonplaats else '').upper()}"[:50]}
    return verblijfplaats, adressering


def _related(bsn: str, world: Municipality) -> Person | None:
    return world.persons.get(bsn)


def render_persoon(person: Person, world: Municipality, as_of: date) -> dict[str, Any]:
    """The full ``Persoon`` of the raadpleeg response, before ``fields`` filtering."""
    deceased = is_deceased_on(person.overlijdensdatum, as_of)
    naam = _naam_gerelateerde(person)
    naam["volledigeNaam"] = " ".join(p for p in (person.voornamen, person.voorvoegsel, person.geslachtsnaam) if p)
    naam["aanduidingNaamgebruik"] = {"code": "E", "omschrijving": "eigen geslachtsnaam"}
    persoon: dict[str, Any] = {
        "burgerservicenummer": person.bsn,
        "geslacht": _waarde_geslacht(person.geslacht),
        "naam": naam,
        "geboorte": _geboorte(person, world),
    }
    if deceased:
        persoon["overlijden"] = {"datum": datum(person.overlijdensdatum), "land": dict(NEDERLAND)}  # type: ignore[arg-type]
    else:
        # The API only gives an age to living persons.
        persoon["leeftijd"] = leeftijd(person.geboortedatum, as_of)
    verblijfplaats, adressering = _verblijfplaats(person, world)
    if verblijfplaats:
        persoon["verblijfplaats"] = verblijfplaats
    if adressering:
        persoon["adressering"] = adressering
    persoon["gemeenteVanInschrijving"] = {"code": world.gemeentecode, "omschrijving": world.naam}
    persoon["datumInschrijvingInGemeente"] = datum(person.datum_inschrijving_gemeente)
    if person.partner_bsn:
        partner: dict[str, Any] = {"burgerservicenummer": person.partner_bsn,
                                   "soortVerbintenis": {"code": "H", "omschrijving": "huwelijk"}}
        other = _related(person.partner_bsn, world)
        if other:
            partner.update(geslacht=_waarde_geslacht(other.geslacht), naam=_naam_gerelateerde(other),
                           geboorte=_geboorte(other, world))
        persoon["partners"] = [partner]
    ouders = []
    for index, ouder_bsn in enumerate(person.ouder_bsns[:2], start=1):
        ouder: dict[str, Any] = {"burgerservicenummer": ouder_bsn, "ouderAanduiding": str(index)}
        other = _related(ouder_bsn, world)
        if other:
            ouder.update(geslacht=_waarde_geslacht(other.geslacht), naam=_naam_gerelateerde(other),
                         geboorte=_geboorte(other, world),
                         datumIngangFamilierechtelijkeBetrekking=datum(person.geboortedatum))
        ouders.append(ouder)
    if ouders:
        persoon["ouders"] = ouders
    kinderen = []
    for kind_bsn in person.kind_bsns:
        other = _related(kind_bsn, world)
        if other is not None and other.geboortedatum > as_of:
            continue  # not born yet at the registry's date
        kind: dict[str, Any] = {"burgerservicenummer": kind_bsn}
        if other:
            kind.update(naam=_naam_gerelateerde(other), geboorte=_geboorte(other, world))
        kinderen.append(kind)
    if kinderen:
        persoon["kinderen"] = kinderen
    return persoon


def render_persoon_beperkt(person: Person, world: Municipality, as_of: date) -> dict[str, Any]:
    """The ``PersoonBeperkt`` of the search responses, before ``fields`` filtering."""
    full = render_persoon(person, world, as_of)
    beperkt = {k: full[k] for k in ("burgerservicenummer", "geslacht", "leeftijd", "adressering") if k in full}
    beperkt["naam"] = {k: v for k, v in full["naam"].items() if k != "aanduidingNaamgebruik"}
    beperkt["geboorte"] = {"datum": full["geboorte"]["datum"]}
    return beperkt


# --------------------------------------------------------------------------- search

def _wildcard_match(pattern: str | None, value: str | None) -> bool:
    """Case-insensitive match with the spec's trailing/leading ``*`` wildcard."""
    if pattern is None:
        return True
    if value is None:
        return False
    regex = "^" + re.escape(pattern.lower()).replace(r"\*", ".*") + "$"
    return re.match(regex, value.lower()) is not None


def _address_matches(person: Person, world: Municipality, body: dict[str, Any]) -> bool:
    na = world.nummeraanduidingen.get(person.nummeraanduiding_id)
    if na is None:
        return False
    if "postcode" in body and na.postcode.upper() != body["postcode"].replace(" ", "").upper():
        return False
    if "huisnummer" in body and na.huisnummer != int(body["huisnummer"]):
        return False
    if body.get("huisletter") and (na.huisletter or "").lower() != body["huisletter"].lower():
        return False
    if body.get("huisnummertoevoeging") and (na.huisnummertoevoeging or "").lower() != body["huisnummertoevoeging"].lower():
        return False
    if "straat" in body:
        ruimte = world.openbare_ruimten.get(na.openbare_ruimte_id)
        if ruimte is None or not _wildcard_match(body["straat"], ruimte.naam):
            return False
    return True


def find_persons(type_name: str, body: dict[str, Any], world: Municipality, as_of: date) -> list[Person]:
    """Persons answering a (validated) query at ``as_of``, in request or BSN order."""
    visible = [p for p in world.persons.values() if p.geboortedatum <= as_of]
    if type_name == "RaadpleegMetBurgerservicenummer":
        by_bsn = {p.bsn: p for p in visible}
        found: list[Person] = []
        for bsn in dict.fromkeys(body["burgerservicenummer"]):  # duplicates answered once
            if bsn in by_bsn:
                found.append(by_bsn[bsn])
        gemeente = body.get("gemeenteVanInschrijving")
        if gemeente and gemeente != world.gemeentecode:
            return []
        return found
    if not body.get("inclusiefOverledenPersonen"):
        visible = [p for p in visible if not is_deceased_on(p.overlijdensdatum, as_of)]
    gemeente = body.get("gemeenteVanInschrijving")
    if gemeente and gemeente != world.gemeentecode:
        return []
    result: list[Person] = []
    for person in visible:
        if type_name == "ZoekMetNummeraanduidingIdentificatie":
            ok = person.nummeraanduiding_id == body["nummeraanduidingIdentificatie"]
        elif type_name == "ZoekMetAdresseerbaarObjectIdentificatie":
            ok = person.verblijfsobject_id == body["adresseerbaarObjectIdentificatie"]
        elif type_name in ("ZoekMetPostcodeEnHuisnummer", "ZoekMetStraatHuisnummerEnGemeenteVanInschrijving"):
            ok = _address_matches(person, world, body)
            if ok and body.get("geboortedatum"):
                ok = person.geboortedatum.isoformat() == body["geboortedatum"]
            if ok and body.get("geslachtsnaam"):
                ok = _wildcard_match(body["geslachtsnaam"], person.geslachtsnaam)
        else:  # name based searches
            ok = _wildcard_match(body.get("geslachtsnaam"), person.geslachtsnaam)
            if ok and body.get("geboortedatum"):
                ok = person.geboortedatum.isoformat() == body["geboortedatum"]
            if ok and body.get("voornamen"):
                ok = _wildcard_match(body["voornamen"], person.voornamen)
            if ok and body.get("voorvoegsel"):
                ok = (person.voorvoegsel or "").lower() == body["voorvoegsel"].lower()
            if ok and body.get("geslacht"):
                ok = person.geslacht == body["geslacht"].upper()
        if ok:
            result.append(person)
    return sorted(result, key=lambda p: p.bsn)


# --------------------------------------------------------------------------- HTTP

class _BrpErrors:
    """Problem bodies in the wording of the BRP problem-details components."""

    def __init__(self, personen_path: str) -> None:
        self.personen_path = personen_path

    @staticmethod
    def _body(request: Request, status: int, title: str, detail: str, code: str, type_uri: str) -> dict[str, Any]:
        return {"type": type_uri, "title": title, "status": status, "detail": detail,
                "instance": request.url.path, "code": code}

    def unauthenticated(self, request: Request) -> Response:
        return problem_response(self._body(
            request, 401, "Niet correct geauthenticeerd.",
            "The request requires user authentication", "authentication",
            "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.2"))

    def forbidden(self, request: Request) -> Response:
        return problem_response(self._body(
            request, 403, "U bent niet geautoriseerd voor deze operatie.",
            "The server understood the request, but is refusing to fulfill it.", "autorisation",
            "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.4"))

    def too_many_requests(self, request: Request, retry_after: str, headers: dict[str, str]) -> Response:
        return problem_response(self._body(
            request, 429, "Too many request",
            "The user has sent too many requests in a given amount of time (rate limiting).", "tooManyRequests",
            "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html"), headers={**headers, "Retry-After": retry_after})

    def injected_failure(self, request: Request, fault: Fault) -> Response:
        headers = {"Retry-After": str(fault.retry_after_seconds)} if fault.retry_after_seconds is not None else None
        if fault.status == 503:
            body = self._body(request, 503, "Bronservice BRP is tijdelijk niet beschikbaar.",
                              "The service is currently unable to handle the request due to a temporary "
                              "overloading or maintenance of the server.", "notAvailable",
                              "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.5.4")
        else:
            body = self._body(request, fault.status, "Interne server fout.",
                              "The server encountered an unexpected condition which prevented it from "
                              "fulfilling the request.", "serverError",
                              "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.5.1")
        return problem_response(body, headers=headers)


def _bad_request(request: Request, invalid_params: list[dict[str, str]]) -> Response:
    names = ", ".join(dict.fromkeys(p["name"] for p in invalid_params))
    return problem_response({
        "type": BAD_REQUEST_TYPE, "title": "Een of meerdere parameters zijn niet correct.", "status": 400,
        "detail": f"De foutieve parameter(s) zijn: {names}.", "instance": request.url.path,
        "code": "paramsValidation", "invalidParams": invalid_params,
    })


def _accepts_json(accept: str | None) -> bool:
    if not accept:
        return True
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media in ("*/*", "application/*", "application/json"):
            return True
    return False


def create_brp_app(state: RegistryState, path_prefix: str = DEFAULT_PATH_PREFIX) -> FastAPI:
    """The BRP Personen stand-in as an ASGI app serving ``state``."""
    prefix = "/" + path_prefix.strip("/") if path_prefix.strip("/") else ""
    personen_path = f"{prefix}/personen"
    app = FastAPI(title="BRP API Personen (stand-in)", version="2.7.0", docs_url=None, redoc_url=None,
                  openapi_url=None)
    errors = _BrpErrors(personen_path)
    install_gate(app, state, API_KEY_HEADER, errors)
    app.include_router(admin_router(state))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        titles = {404: ("Opgevraagde resource bestaat niet.", "notFound"),
                  405: ("Methode niet toegestaan.", "methodNotAllowed")}
        title, code = titles.get(exc.status_code, ("Interne server fout.", "serverError"))
        return problem_response({"type": "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html",
                                 "title": title, "status": exc.status_code, "detail": str(exc.detail),
                                 "instance": request.url.path, "code": code})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:  # pragma: no cover
        return _bad_request(request, [])

    @app.post(personen_path)
    async def personen(request: Request) -> Response:
        if not _accepts_json(request.headers.get("accept")):
            return problem_response({
                "type": "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.7",
                "title": "Gevraagde contenttype wordt niet ondersteund.", "status": 406,
                "detail": ("The resource identified by the request is only capable of generating response entities which "
                           "have content characteristics not acceptable according to the accept headers sent in the request"), "instance": request.url.path,
                "code": "notAcceptable"})
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            return problem_response({
                "type": "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.16",
                "title": "Unsupported Media Type", "status": 415,
                "detail": ("The server is refusing the request because the entity of the request is in a format not "
                           "supported by the requested resource for the requested method."), "instance": request.url.path,
                "code": "unsupported"})
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        query_type, invalid = validate_query(body)
        if invalid or query_type is None:
            return _bad_request(request, invalid)
        world = state.municipality()
        as_of = state.as_of
        persons = find_persons(body["type"], body, world, as_of)
        render = render_persoon_beperkt if query_type.beperkt else render_persoon
        personen_out = [apply_fields(render(p, world, as_of), body["fields"]) for p in persons]
        payload = {"type": body["type"], "personen": personen_out}
        return Response(content=json.dumps(payload, ensure_ascii=False).encode("utf-8"), status_code=200,
                        media_type=RESPONSE_MEDIA_TYPE)

    return app
