"""The ``fields`` vocabulary of BRP API Personen v2 and the response filter.

Valid paths mirror the ``Persoon`` (raadplegen) and ``PersoonBeperkt`` /
``GezagPersoonBeperkt`` (zoeken) schemas of the v2.7.0 specification: every
property path, dotted. A path into a date (``geboorte.datum.datum``) selects the
whole date object, as the official API does. Automatically delivered fields
(inOnderzoek, geheimhoudingPersoonsgegevens, opschortingBijhouding, rni,
verificatie) are known but may not be requested.
"""
from __future__ import annotations

import copy
from typing import Any

_DATUM = {"type": {}, "datum": {}, "langFormaat": {}, "onbekend": {}, "jaar": {}, "maand": {}}
_WAARDE = {"code": {}, "omschrijving": {}}
_NAAM_GERELATEERDE = {
    "voornamen": {}, "adellijkeTitelPredicaat": {**_WAARDE, "soort": {}}, "voorvoegsel": {},
    "geslachtsnaam": {}, "voorletters": {},
}
_GEBOORTE = {"datum": _DATUM, "land": _WAARDE, "plaats": _WAARDE}

PERSOON_FIELDS: dict[str, Any] = {
    "aNummer": {},
    "burgerservicenummer": {},
    "datumEersteInschrijvingGBA": _DATUM,
    "geslacht": _WAARDE,
    "uitsluitingKiesrecht": {"uitgeslotenVanKiesrecht": {}, "einddatum": _DATUM},
    "europeesKiesrecht": {"aanduiding": _WAARDE, "einddatumUitsluiting": _DATUM},
    "leeftijd": {},
    "naam": {**_NAAM_GERELATEERDE, "volledigeNaam": {}, "aanduidingNaamgebruik": _WAARDE},
    "nationaliteiten": {"type": {}, "redenOpname": _WAARDE, "datumIngangGeldigheid": _DATUM,
                        "nationaliteit": _WAARDE},
    "geboorte": _GEBOORTE,
    "overlijden": {"datum": _DATUM, "land": _WAARDE, "plaats": _WAARDE},
    "verblijfplaats": {
        "type": {}, "datumVan": _DATUM, "datumIngangGeldigheid": _DATUM, "functieAdres": _WAARDE,
        "adresseerbaarObjectIdentificatie": {}, "nummeraanduidingIdentificatie": {},
        "indicatieVastgesteldVerblijftNietOpAdres": {},
        "verblijfadres": {
            "officieleStraatnaam": {}, "korteStraatnaam": {}, "huisnummer": {}, "huisletter": {},
            "huisnummertoevoeging": {}, "aanduidingBijHuisnummer": _WAARDE, "postcode": {},
            "woonplaats": {}, "locatiebeschrijving": {}, "regel1": {}, "regel2": {}, "regel3": {},
            "land": _WAARDE,
        },
    },
    "immigratie": {"landVanwaarIngeschreven": _WAARDE, "datumVestigingInNederland": _DATUM,
                   "vanuitVerblijfplaatsOnbekend": {}, "indicatieVestigingVanuitBuitenland": {}},
    "gemeenteVanInschrijving": _WAARDE,
    "datumInschrijvingInGemeente": _DATUM,
    "adressering": {"adresregel1": {}, "adresregel2": {}, "adresregel3": {}, "land": _WAARDE,
                    "indicatieVastgesteldVerblijftNietOpAdres": {}, "aanhef": {},
                    "aanschrijfwijze": {"naam": {}, "aanspreekvorm": {}}, "gebruikInLopendeTekst": {}},
    "indicatieCurateleRegister": {},
    "indicatieGezagMinderjarige": _WAARDE,
    "gezag": {},
    "verblijfstitel": {"aanduiding": _WAARDE, "datumEinde": _DATUM, "datumIngang": _DATUM},
    "kinderen": {"burgerservicenummer": {}, "naam": _NAAM_GERELATEERDE, "geboorte": _GEBOORTE},
    "ouders": {"burgerservicenummer": {}, "geslacht": _WAARDE, "ouderAanduiding": {},
               "datumIngangFamilierechtelijkeBetrekking": _DATUM, "naam": _NAAM_GERELATEERDE,
               "geboorte": _GEBOORTE},
    "partners": {"burgerservicenummer": {}, "geslacht": _WAARDE, "soortVerbintenis": _WAARDE,
                 "naam": _NAAM_GERELATEERDE, "geboorte": _GEBOORTE,
                 "aangaanHuwelijkPartnerschap": {"datum": _DATUM, "land": _WAARDE, "plaats": _WAARDE},
                 "ontbindingHuwelijkPartnerschap": {"datum": _DATUM}},
}

PERSOON_BEPERKT_FIELDS: dict[str, Any] = {
    "burgerservicenummer": {},
    "geboorte": {"datum": _DATUM},
    "geslacht": _WAARDE,
    "leeftijd": {},
    "naam": {**_NAAM_GERELATEERDE, "volledigeNaam": {}},
    "adressering": {"adresregel1": {}, "adresregel2": {}, "adresregel3": {}, "land": _WAARDE,
                    "indicatieVastgesteldVerblijftNietOpAdres": {}},
    "gezag": {},
}

# Delivered automatically when applicable; asking for them is an error.
AUTOMATIC_FIELDS = ("inOnderzoek", "geheimhoudingPersoonsgegevens", "opschortingBijhouding", "rni", "verificatie")


def is_known_path(path: str, tree: dict[str, Any]) -> bool:
    """True when the dotted ``path`` names a property in ``tree``."""
    node: dict[str, Any] | None = tree
    for part in path.split("."):
        if node is None or part not in node:
            return False
        node = node[part]
    return True


def is_automatic_path(path: str) -> bool:
    """True when any segment of ``path`` is an automatically delivered field."""
    return any(part in AUTOMATIC_FIELDS for part in path.split("."))


class _Missing:
    pass


_MISSING = _Missing()


def _is_datum(value: dict[str, Any]) -> bool:
    return "langFormaat" in value and "type" in value


def _select(value: Any, parts: list[str]) -> Any:
    if not parts:
        return copy.deepcopy(value)
    if isinstance(value, list):
        # Keep list positions stable so two selections of the same list can be merged.
        return [_select_or_empty(item, parts) for item in value]
    if isinstance(value, dict):
        if _is_datum(value):
            return copy.deepcopy(value)
        head, rest = parts[0], parts[1:]
        if head not in value:
            return _MISSING
        picked = _select(value[head], rest)
        if picked is _MISSING:
            return _MISSING
        out = {head: picked}
        # A polymorphic object (verblijfplaats, nationaliteit) always carries its discriminator.
        if "type" in value and head != "type":
            out["type"] = value["type"]
        return out
    return copy.deepcopy(value)


def _select_or_empty(item: Any, parts: list[str]) -> Any:
    picked = _select(item, parts)
    return {} if picked is _MISSING else picked


def _merge(left: Any, right: Any) -> Any:
    if isinstance(left, dict) and isinstance(right, dict):
        merged = dict(left)
        for key, value in right.items():
            merged[key] = _merge(merged[key], value) if key in merged else value
        return merged
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        return [_merge(a, b) for a, b in zip(left, right)]
    return right


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items()}
    if isinstance(value, list):
        kept = [_drop_empty(v) for v in value if v != {}]
        return kept
    return value


def apply_fields(persoon: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """Return only the requested parts of ``persoon`` (paths already validated)."""
    result: dict[str, Any] = {}
    for path in fields:
        picked = _select(persoon, path.split("."))
        if picked is _MISSING:
            continue
        result = _merge(result, picked)
    result = _drop_empty(result)
    return {k: v for k, v in result.items() if v != []}
