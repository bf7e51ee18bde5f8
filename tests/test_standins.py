"""Stand-in BRP Personen v2 and BAG IB v2 over real HTTP, checked against the official specs.

Responses are validated with ``jsonschema`` against the OpenAPI documents in
``specs`` of the reference material (read at test time only; see tests/specs.py). Tests that
need a spec skip without it; the others still run.
"""
from __future__ import annotations

import email.utils
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import jsonschema
import pytest
import requests
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from demo_gemeente.model import (
    Municipality,
    Nummeraanduiding,
    OpenbareRuimte,
    Pand,
    Person,
    Verblijfsobject,
    Woonplaats,
)
from ggm_lakehouse.bsn import complete_bsn
from standins import StandinServers
from tests.specs import require

BRP_SPEC = "specs/brp-personen/specificatie_resolved_openapi.yaml"
BAG_SPEC = "specs/bag-individuele-bevragingen/openapi_v2.6.0_from_NL-AMS-LOCGOV_zaakafhandelcomponent.yaml"
RD = {"Accept-Crs": "epsg:28992"}
EPOCH = date(2000, 1, 1)


# --------------------------------------------------------------------------- fixture world

def _bsn(n: int) -> str:
    prefix = 10000000 + n
    while True:
        candidate = complete_bsn(str(prefix))
        if candidate:
            return candidate
        prefix += 1000


def build_fixture() -> Municipality:
    """A small hand-made municipality: 1 woonplaats, 2 streets, 25 addresses, 5 panden, 5 persons."""
    gm = "9999"
    woonplaats = Woonplaats("9991", "Demodam", "Woonplaats aangewezen", EPOCH, (150000.0, 450000.0, 150400.0, 450400.0))
    straten = {
        f"{gm}300000000001": OpenbareRuimte(f"{gm}300000000001", "Dorpsstraat", "Weg", "9991", "Naamgeving uitgegeven", EPOCH),
        f"{gm}300000000002": OpenbareRuimte(f"{gm}300000000002", "Kerkpad", "Weg", "9991", "Naamgeving uitgegeven", EPOCH),
    }
    panden, nas, vbos = {}, {}, {}
    for p in range(5):
        x0, y0 = 150000.0 + p * 60, 450000.0
        pid = f"{gm}10{p + 1:010d}"
        panden[pid] = Pand(pid, 1960 + p, "Pand in gebruik", EPOCH,
                           [(x0, y0), (x0 + 40, y0), (x0 + 40, y0 + 30), (x0, y0 + 30), (x0, y0)])
    for i in range(25):
        na_id, vbo_id = f"{gm}20{i + 1:010d}", f"{gm}01{i + 1:010d}"
        nas[na_id] = Nummeraanduiding(na_id, i + 1, "a" if i == 3 else None, None, "1234AB",
                                      f"{gm}300000000001", "9991", "Verblijfsobject", "Naamgeving uitgegeven", EPOCH)
        pid = f"{gm}10{i // 5 + 1:010d}"
        x0 = 150000.0 + (i // 5) * 60
        vbos[vbo_id] = Verblijfsobject(vbo_id, na_id, [pid], ["woonfunctie"], 60 + i,
                                       (x0 + 5 + (i % 5) * 6, 450010.0), "Verblijfsobject in gebruik", EPOCH)
    na_ids, vbo_ids = sorted(nas), sorted(vbos)
    a, b, c, d, e = (_bsn(n) for n in (1, 2, 3, 4, 5))

    def person(bsn, voornamen, vv, naam, geslacht, born, died, idx, partner=None, ouders=(), kinderen=()):
        return Person(bsn, voornamen, vv, naam, geslacht, born, "Demodam", died, na_ids[idx], vbo_ids[idx],
                      date(2010, 5, 1), date(2010, 5, 1), partner, list(ouders), list(kinderen), "h1")

    persons = {
        a: person(a, "Jan Pieter", "van", "Dijk", "M", date(1970, 5, 12), None, 3, partner=b, kinderen=[c]),
        b: person(b, "Anna", None, "Jansen", "V", date(1972, 9, 30), None, 3, partner=a, kinderen=[c]),
        c: person(c, "Sara", "van", "Dijk", "V", date(2012, 1, 15), None, 3, ouders=[a, b]),
        d: person(d, "Kees", None, "Bakker", "M", date(1940, 2, 2), date(2020, 3, 3), 4),
        e: person(e, "Els", None, "Visser", "V", date(1950, 7, 7), date(2026, 6, 1), 5),
    }
    return Municipality(gm, "Demodam", 1, date(2026, 11, 28), {"9991": woonplaats}, straten, panden, nas, vbos,
                        {}, {}, persons, [])


FIXTURE = build_fixture()
BSN_A, BSN_B, BSN_C, BSN_D, BSN_E = (_bsn(n) for n in (1, 2, 3, 4, 5))


@pytest.fixture(scope="module")
def servers():
    with StandinServers(FIXTURE, api_keys={"brp": "brp-key", "bag": "bag-key"}, as_of=date(2026, 1, 1)) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset(servers):
    servers.set_as_of(date(2026, 1, 1))
    servers.brp.faults.clear()
    servers.bag.faults.clear()
    yield
    servers.brp.faults.clear()
    servers.bag.faults.clear()


def brp_post(servers, body, **headers):
    hdrs = {"X-API-KEY": "brp-key", **headers}
    return requests.post(f"{servers.brp.url}/personen", json=body, headers=hdrs, timeout=10)


def bag_get(servers, path, params=None, crs=True, **headers):
    hdrs = {"X-Api-Key": "bag-key", **(RD if crs else {}), **headers}
    return requests.get(f"{servers.bag.url}{path}", params=params, headers=hdrs, timeout=10)


def raadpleeg(bsns, fields, **extra):
    return {"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": bsns, "fields": fields, **extra}


# --------------------------------------------------------------------------- schemas

class Spec:
    """One OpenAPI document as a jsonschema registry."""

    def __init__(self, path: Path, uri: str) -> None:
        self.uri = uri
        self.doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        self.registry = Registry().with_resource(uri, Resource.from_contents(self.doc, default_specification=DRAFT202012))

    def validate(self, instance, schema_name: str) -> None:
        schema = {"$ref": f"{self.uri}#/components/schemas/{schema_name}"}
        jsonschema.Draft202012Validator(schema, registry=self.registry).validate(instance)


@pytest.fixture(scope="module")
def brp_spec():
    return Spec(require(BRP_SPEC), "urn:brp-personen")


@pytest.fixture(scope="module")
def bag_spec():
    return Spec(require(BAG_SPEC), "urn:bag-ib")


# --------------------------------------------------------------------------- BRP

def test_brp_raadpleeg_full_person_matches_spec(servers, brp_spec):
    fields = ["burgerservicenummer", "naam", "geslacht", "geboorte", "verblijfplaats", "leeftijd",
              "datumInschrijvingInGemeente", "gemeenteVanInschrijving", "partners", "ouders", "kinderen"]
    response = brp_post(servers, raadpleeg([BSN_A], fields))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    brp_spec.validate(body, "RaadpleegMetBurgerservicenummerResponse")
    assert body["type"] == "RaadpleegMetBurgerservicenummer"
    [persoon] = body["personen"]
    brp_spec.validate(persoon, "Persoon")
    brp_spec.validate(persoon["verblijfplaats"], "Adres")
    brp_spec.validate(persoon["geboorte"]["datum"], "VolledigeDatum")
    assert persoon["burgerservicenummer"] == BSN_A
    assert persoon["naam"]["voornamen"] == "Jan Pieter"
    assert persoon["naam"]["voorvoegsel"] == "van"
    assert persoon["naam"]["volledigeNaam"] == "Jan Pieter van Dijk"
    assert persoon["naam"]["voorletters"] == "J.P."
    assert persoon["geslacht"] == {"code": "M", "omschrijving": "man"}
    assert persoon["geboorte"]["datum"] == {"type": "Datum", "datum": "1970-05-12", "langFormaat": "12 mei 1970"}
    assert persoon["geboorte"]["plaats"] == {"code": "9999", "omschrijving": "Demodam"}
    assert persoon["leeftijd"] == 55
    adres = persoon["verblijfplaats"]
    assert adres["type"] == "Adres"
    assert adres["verblijfadres"] == {"officieleStraatnaam": "Dorpsstraat", "korteStraatnaam": "Dorpsstraat",
                                      "huisnummer": 4, "huisletter": "a", "postcode": "1234AB", "woonplaats": "Demodam"}
    assert adres["nummeraanduidingIdentificatie"] == "9999200000000004"
    assert adres["adresseerbaarObjectIdentificatie"] == "9999010000000004"
    assert adres["functieAdres"]["code"] == "W"
    assert persoon["gemeenteVanInschrijving"] == {"code": "9999", "omschrijving": "Demodam"}
    assert persoon["partners"][0]["burgerservicenummer"] == BSN_B
    assert persoon["partners"][0]["naam"]["geslachtsnaam"] == "Jansen"
    assert [k["burgerservicenummer"] for k in persoon["kinderen"]] == [BSN_C]
    child = brp_post(servers, raadpleeg([BSN_C], ["ouders"])).json()["personen"][0]
    assert [(o["burgerservicenummer"], o["ouderAanduiding"]) for o in child["ouders"]] == [(BSN_A, "1"), (BSN_B, "2")]


def test_brp_fields_selects_sub_objects(servers):
    body = brp_post(servers, raadpleeg([BSN_A], ["naam.geslachtsnaam", "geboorte.datum", "verblijfplaats.verblijfadres.postcode",
                                                 "partners.burgerservicenummer"])).json()
    assert body["personen"] == [{
        "naam": {"geslachtsnaam": "Dijk"},
        "geboorte": {"datum": {"type": "Datum", "datum": "1970-05-12", "langFormaat": "12 mei 1970"}},
        "verblijfplaats": {"type": "Adres", "verblijfadres": {"postcode": "1234AB"}},
        "partners": [{"burgerservicenummer": BSN_B}],
    }]


def test_brp_unknown_bsn_gives_empty_list_and_duplicates_once(servers):
    unknown = _bsn(777)
    body = brp_post(servers, raadpleeg([unknown, BSN_A, BSN_A], ["burgerservicenummer"])).json()
    assert body == {"type": "RaadpleegMetBurgerservicenummer", "personen": [{"burgerservicenummer": BSN_A}]}


def test_brp_deceased_person_has_overlijden_and_no_leeftijd(servers):
    persoon = brp_post(servers, raadpleeg([BSN_D], ["overlijden", "leeftijd", "burgerservicenummer"])).json()["personen"][0]
    assert persoon == {"burgerservicenummer": BSN_D,
                       "overlijden": {"datum": {"type": "Datum", "datum": "2020-03-03", "langFormaat": "3 maart 2020"},
                                      "land": {"code": "6030", "omschrijving": "Nederland"}}}


def test_brp_21_bsns_is_max_items(servers):
    response = brp_post(servers, raadpleeg([BSN_A] * 21, ["burgerservicenummer"]))
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == "https://datatracker.ietf.org/doc/html/rfc7231#section-6.5.1"
    assert body["title"] == "Een of meerdere parameters zijn niet correct."
    assert body["detail"] == "De foutieve parameter(s) zijn: burgerservicenummer."
    assert body["code"] == "paramsValidation"
    assert body["instance"] == "/haalcentraal/api/brp/personen"
    assert [(p["code"], p["name"], p["reason"]) for p in body["invalidParams"]] == [
        ("maxItems", "burgerservicenummer", "Array bevat meer dan 20 items.")]
    assert brp_post(servers, raadpleeg([BSN_A] * 20, ["burgerservicenummer"])).status_code == 200


@pytest.mark.parametrize("body, expected", [
    ({"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": [BSN_A]},
     [("required", "fields", "Parameter is verplicht.")]),
    ({"type": "RaadpleegMetBurgerservicenummer", "fields": ["burgerservicenummer"]},
     [("required", "burgerservicenummer", "Parameter is verplicht.")]),
    (raadpleeg([], ["burgerservicenummer"]), [("minItems", "burgerservicenummer", "Array bevat minder dan 1 items.")]),
    (raadpleeg("999994086,999994086", ["burgerservicenummer"]), [("array", "burgerservicenummer", "Parameter is geen array.")]),
    (raadpleeg(["1234567890", "123456789", "12345678"], ["burgerservicenummer"]),
     [("pattern", "burgerservicenummer[0]", "Waarde voldoet niet aan patroon ^[0-9]{9}$."),
      ("pattern", "burgerservicenummer[2]", "Waarde voldoet niet aan patroon ^[0-9]{9}$.")]),
    (raadpleeg([BSN_A], ["burgerservicenummer", "bestaatNiet"]),
     [("fields", "fields[1]", "Parameter bevat een niet bestaande veldnaam.")]),
    (raadpleeg([BSN_A], ["naam.inOnderzoek"]), [("fields", "fields[0]", "Parameter bevat een niet toegestane veldnaam.")]),
    (raadpleeg([BSN_A], ["burgerservicenummer, naam"]),
     [("pattern", "fields[0]", "Waarde voldoet niet aan patroon ^[a-zA-Z0-9\\._]{1,200}$.")]),
    (raadpleeg([BSN_A], ["burgerservicenummer"], gemeenteVanInschrijving="123"),
     [("pattern", "gemeenteVanInschrijving", "Waarde voldoet niet aan patroon ^[0-9]{4}$.")]),
    (raadpleeg([BSN_A], ["burgerservicenummer"], voornamen="Pietje"),
     [("unknownParam", "voornamen", "Parameter is niet verwacht.")]),
    (raadpleeg([BSN_A], ["burgerservicenummer"], inclusiefOverledenPersonen=True),
     [("unknownParam", "inclusiefOverledenPersonen", "Parameter is niet verwacht.")]),
    ({"type": "ZoekMetGeslachtsnaam", "fields": ["burgerservicenummer"]}, [("value", "type", "Waarde is geen geldig zoek type.")]),
    ({"fields": ["burgerservicenummer"]}, [("required", "type", "Parameter is verplicht.")]),
    ({"type": "ZoekMetPostcodeEnHuisnummer", "fields": ["burgerservicenummer"]},
     [("required", "postcode", "Parameter is verplicht."), ("required", "huisnummer", "Parameter is verplicht.")]),
    ({"type": "ZoekMetPostcodeEnHuisnummer", "postcode": "0628HJ", "huisnummer": "twee", "fields": ["burgerservicenummer"]},
     [("pattern", "postcode", "Waarde voldoet niet aan patroon ^[1-9]{1}[0-9]{3}[ ]?[A-Za-z]{2}$."),
      ("integer", "huisnummer", "Waarde is geen geldig getal.")]),
    ({"type": "ZoekMetPostcodeEnHuisnummer", "postcode": "2628HJ", "huisnummer": 100000, "fields": ["burgerservicenummer"]},
     [("maximum", "huisnummer", "Waarde is hoger dan maximum 99999.")]),
    ({"type": "ZoekMetPostcodeEnHuisnummer", "postcode": "1234AB", "huisnummer": 4, "fields": ["verblijfplaats"]},
     [("fields", "fields[0]", "Parameter bevat een niet bestaande veldnaam.")]),
])
def test_brp_validation_errors_follow_fout_cases(servers, body, expected):
    response = brp_post(servers, body)
    assert response.status_code == 400
    problem = response.json()
    assert problem["code"] == "paramsValidation"
    assert problem["status"] == 400
    assert [(p["code"], p["name"], p["reason"]) for p in problem["invalidParams"]] == expected
    names = ", ".join(dict.fromkeys(name for _, name, _ in expected))
    assert problem["detail"] == f"De foutieve parameter(s) zijn: {names}."


def test_brp_zoek_postcode_huisnummer_and_nummeraanduiding(servers, brp_spec):
    body = {"type": "ZoekMetPostcodeEnHuisnummer", "postcode": "1234 ab", "huisnummer": 4, "huisletter": "A",
            "fields": ["burgerservicenummer", "naam", "geboorte", "leeftijd", "adressering"]}
    result = brp_post(servers, body).json()
    brp_spec.validate(result, "ZoekMetPostcodeEnHuisnummerResponse")
    assert sorted(p["burgerservicenummer"] for p in result["personen"]) == sorted([BSN_A, BSN_B, BSN_C])
    assert result["personen"][0]["adressering"]["adresregel2"] == "1234 AB  DEMODAM"
    na_body = {"type": "ZoekMetNummeraanduidingIdentificatie", "nummeraanduidingIdentificatie": "9999200000000005",
               "fields": ["burgerservicenummer"]}
    assert brp_post(servers, na_body).json()["personen"] == []  # only the deceased Kees Bakker lives there
    na_body["inclusiefOverledenPersonen"] = True
    assert brp_post(servers, na_body).json()["personen"] == [{"burgerservicenummer": BSN_D}]


def test_brp_auth_media_types(servers, brp_spec):
    missing = requests.post(f"{servers.brp.url}/personen", json=raadpleeg([BSN_A], ["burgerservicenummer"]), timeout=10)
    assert missing.status_code == 401
    assert missing.headers["content-type"].startswith("application/problem+json")
    brp_spec.validate(missing.json(), "Foutbericht")
    assert missing.json()["code"] == "authentication"
    wrong = brp_post(servers, raadpleeg([BSN_A], ["burgerservicenummer"]), **{"X-API-KEY": "wrong"})
    assert wrong.status_code == 403
    brp_spec.validate(wrong.json(), "Foutbericht")
    assert wrong.json()["code"] == "autorisation"
    xml = requests.post(f"{servers.brp.url}/personen", data="<x/>",
                        headers={"X-API-KEY": "brp-key", "Content-Type": "application/xml"}, timeout=10)
    assert xml.status_code == 415 and xml.json()["code"] == "unsupported"
    not_acceptable = brp_post(servers, raadpleeg([BSN_A], ["burgerservicenummer"]), Accept="application/xml")
    assert not_acceptable.status_code == 406 and not_acceptable.json()["code"] == "notAcceptable"


def test_brp_as_of_switch_shows_death(servers):
    before = brp_post(servers, raadpleeg([BSN_E], ["overlijden", "leeftijd"])).json()["personen"][0]
    assert before == {"leeftijd": 75}
    response = requests.put(f"{servers.brp.admin_url}/as-of", json={"as_of": "2026-07-01"}, timeout=10)
    assert response.status_code == 200 and servers.brp.as_of == date(2026, 7, 1)
    after = brp_post(servers, raadpleeg([BSN_E], ["overlijden.datum", "leeftijd"])).json()["personen"][0]
    assert after == {"overlijden": {"datum": {"type": "Datum", "datum": "2026-06-01", "langFormaat": "1 juni 2026"}}}


def test_brp_fault_injection_503_and_recovery(servers, brp_spec):
    servers.brp.faults.fail_next(2, status=503, retry_after_seconds=3)
    statuses = [brp_post(servers, raadpleeg([BSN_A], ["burgerservicenummer"])) for _ in range(3)]
    assert [r.status_code for r in statuses] == [503, 503, 200]
    assert statuses[0].headers["Retry-After"] == "3"
    brp_spec.validate(statuses[0].json(), "Foutbericht")
    assert statuses[0].json()["code"] == "notAvailable"


def test_brp_delay_fault_triggers_client_timeout(servers):
    requests.post(f"{servers.brp.admin_url}/faults", json={"mode": "delay", "count": 1, "seconds": 1.5}, timeout=10)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(f"{servers.brp.url}/personen", json=raadpleeg([BSN_A], ["burgerservicenummer"]),
                      headers={"X-API-KEY": "brp-key"}, timeout=0.3)
    assert brp_post(servers, raadpleeg([BSN_A], ["burgerservicenummer"])).status_code == 200


# --------------------------------------------------------------------------- BAG

def test_bag_verblijfsobject_single_matches_spec(servers, bag_spec):
    response = bag_get(servers, "/verblijfsobjecten/9999010000000004", params={"expand": "heeftAlsHoofdAdres"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/hal+json"
    assert response.headers["Content-Crs"] == "epsg:28992"
    body = response.json()
    bag_spec.validate(body, "VerblijfsobjectIOHal")
    vbo = body["verblijfsobject"]
    assert vbo["identificatie"] == "9999010000000004"
    assert vbo["geometrie"]["punt"]["type"] == "Point"
    assert vbo["maaktDeelUitVan"] == ["9999100000000001"]
    assert vbo["heeftAlsHoofdAdres"] == "9999200000000004"
    assert body["_links"]["self"]["href"] == f"{servers.bag.url}/verblijfsobjecten/9999010000000004"
    assert body["_embedded"]["heeftAlsHoofdAdres"]["nummeraanduiding"]["huisletter"] == "a"


def test_bag_nummeraanduiding_pand_woonplaats_openbareruimte(servers, bag_spec):
    na = bag_get(servers, "/nummeraanduidingen/9999200000000004", crs=False)
    assert na.status_code == 200
    bag_spec.validate(na.json(), "NummeraanduidingIOHal")
    assert na.json()["nummeraanduiding"]["postcode"] == "1234AB"
    pand = bag_get(servers, "/panden/9999100000000002")
    bag_spec.validate(pand.json(), "PandIOHal")
    assert pand.json()["pand"]["oorspronkelijkBouwjaar"] == "1961"
    assert pand.json()["pand"]["geometrie"]["type"] == "Polygon"
    wp = bag_get(servers, "/woonplaatsen/9991", params={"expand": "geometrie"})
    bag_spec.validate(wp.json(), "WoonplaatsIOHal")
    assert wp.json()["_embedded"]["geometrie"]["vlak"]["type"] == "Polygon"
    assert bag_get(servers, "/woonplaatsen/9991", params={"expand": "geometrie"}, crs=False).status_code == 412
    found = bag_get(servers, "/woonplaatsen", params={"naam": "demodam"}, crs=False).json()
    bag_spec.validate(found, "WoonplaatsIOHalCollection")
    assert [w["woonplaats"]["identificatie"] for w in found["_embedded"]["woonplaatsen"]] == ["9991"]
    ruimten = bag_get(servers, "/openbareruimten", params={"woonplaatsIdentificatie": "9991"}, crs=False).json()
    bag_spec.validate(ruimten, "OpenbareRuimteIOHalCollection")
    assert [r["openbareRuimte"]["naam"] for r in ruimten["_embedded"]["openbareruimten"]] == ["Dorpsstraat", "Kerkpad"]
    assert bag_get(servers, "/openbareruimten/9999300000000002", crs=False).json()["openbareRuimte"]["ligtIn"] == "9991"
    assert bag_get(servers, "/panden/9999100000000999").status_code == 404


def _query(href):
    return parse_qs(urlparse(href).query)


def test_bag_paging_links_follow_feature(servers, bag_spec):
    params = {"openbareRuimteIdentificatie": "9999300000000001"}
    first = bag_get(servers, "/nummeraanduidingen", params=params, crs=False)
    assert first.status_code == 200
    body = first.json()
    bag_spec.validate(body, "NummeraanduidingIOHalCollection")
    links = body["_links"]
    assert len(body["_embedded"]["nummeraanduidingen"]) == 20
    assert "first" not in links and "previous" not in links
    assert _query(links["next"]["href"]) == {"openbareRuimteIdentificatie": ["9999300000000001"], "page": ["2"]}
    assert _query(links["last"]["href"])["page"] == ["2"]
    assert "pageSize" not in links["next"]["href"]
    assert links["self"]["href"] == first.url
    last = bag_get(servers, "/nummeraanduidingen", params={**params, "page": 2}, crs=False).json()
    assert len(last["_embedded"]["nummeraanduidingen"]) == 5
    assert "next" not in last["_links"] and "last" not in last["_links"]
    assert _query(last["_links"]["first"]["href"])["page"] == ["1"]
    assert _query(last["_links"]["previous"]["href"])["page"] == ["1"]
    middle = bag_get(servers, "/nummeraanduidingen", params={**params, "page": 2, "pageSize": 10}, crs=False).json()
    assert [_query(middle["_links"][k]["href"])["page"] for k in ("first", "previous", "next", "last")] == [
        ["1"], ["1"], ["3"], ["3"]]
    assert _query(middle["_links"]["next"]["href"])["pageSize"] == ["10"]
    # Walking next links visits every address exactly once.
    seen, url = [], f"{servers.bag.url}/nummeraanduidingen?openbareRuimteIdentificatie=9999300000000001&pageSize=10"
    while url:
        page = requests.get(url, headers={"X-Api-Key": "bag-key"}, timeout=10).json()
        seen += [n["nummeraanduiding"]["identificatie"] for n in page["_embedded"]["nummeraanduidingen"]]
        url = page["_links"].get("next", {}).get("href")
    assert seen == sorted(FIXTURE.nummeraanduidingen)
    empty = bag_get(servers, "/nummeraanduidingen", params={"openbareRuimteIdentificatie": "9999300000000002"}, crs=False)
    assert empty.status_code == 200 and "_embedded" not in empty.json()
    assert set(empty.json()["_links"]) == {"self"}


@pytest.mark.parametrize("extra, name, code", [
    ({"pageSize": 9}, "pageSize", "minimum"),
    ({"pageSize": 101}, "pageSize", "maximum"),
    ({"page": 0}, "page", "minimum"),
    ({"page": "a"}, "page", "integer"),
    ({"page": 3}, "page", "page"),
])
def test_bag_paging_bounds_are_400(servers, bag_spec, extra, name, code):
    response = bag_get(servers, "/nummeraanduidingen", params={"openbareRuimteIdentificatie": "9999300000000001", **extra}, crs=False)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    bag_spec.validate(body, "Error")
    assert body["code"] == "paramsValidation"
    assert [(p["name"], p["code"]) for p in body["invalid-params"]] == [(name, code)]


def test_bag_bbox_and_crs_rules(servers, bag_spec):
    bbox = "150000,450000,150120,450040"
    ok = bag_get(servers, "/verblijfsobjecten", params={"bbox": bbox}, **{"Content-Crs": "epsg:28992"})
    assert ok.status_code == 200 and ok.headers["Content-Crs"] == "epsg:28992"
    bag_spec.validate(ok.json(), "VerblijfsobjectIOHalCollection")
    assert len(ok.json()["_embedded"]["verblijfsobjecten"]) == 10
    panden = bag_get(servers, "/panden", params={"bbox": bbox}, **{"Content-Crs": "epsg:28992"}).json()
    bag_spec.validate(panden, "PandIOHalCollection")
    assert [p["pand"]["identificatie"] for p in panden["_embedded"]["panden"]] == ["9999100000000001", "9999100000000002", "9999100000000003"]
    too_big = bag_get(servers, "/panden", params={"bbox": "134647,457842,137512,455907"}, **{"Content-Crs": "epsg:28992"})
    assert too_big.status_code == 400
    bag_spec.validate(too_big.json(), "Error")
    assert too_big.json()["invalid-params"][0] == {
        "type": "https://www.vng.nl/realisatie/api/validaties/surfaceMaximum", "name": "bbox",
        "code": "surfaceMaximum", "reason": "Waarde is hoger dan maximum oppervlakte 250000 m2."}
    no_accept = bag_get(servers, "/verblijfsobjecten/9999010000000001", crs=False)
    assert no_accept.status_code == 412 and no_accept.json()["code"] == "acceptCrsMissing"
    wgs = bag_get(servers, "/verblijfsobjecten/9999010000000001", crs=False, **{"Accept-Crs": "epsg:4326"})
    assert wgs.status_code == 406 and wgs.json()["code"] == "crsNotAcceptable"
    no_content = bag_get(servers, "/verblijfsobjecten", params={"bbox": bbox})
    assert no_content.status_code == 412 and no_content.json()["code"] == "contentCrsMissing"
    by_pand = bag_get(servers, "/verblijfsobjecten", params={"pandIdentificatie": "9999100000000005"}).json()
    assert len(by_pand["_embedded"]["verblijfsobjecten"]) == 5
    assert bag_get(servers, "/verblijfsobjecten", params={"geconstateerd": "true"}).json()["code"] == "paramsRequired"


def test_bag_auth_and_postcode_search(servers, bag_spec):
    missing = requests.get(f"{servers.bag.url}/panden/9999100000000001", headers=RD, timeout=10)
    assert missing.status_code == 401
    bag_spec.validate(missing.json(), "Error")
    wrong = requests.get(f"{servers.bag.url}/panden/9999100000000001", headers={**RD, "X-Api-Key": "nope"}, timeout=10)
    assert wrong.status_code == 403 and wrong.json()["code"] == "autorisation"
    hits = bag_get(servers, "/nummeraanduidingen", params={"postcode": "1234 AB", "huisnummer": 4}, crs=False).json()
    assert [n["nummeraanduiding"]["identificatie"] for n in hits["_embedded"]["nummeraanduidingen"]] == ["9999200000000004"]
    bad_id = bag_get(servers, "/panden/123")
    assert bad_id.status_code == 400 and bad_id.json()["invalid-params"][0]["code"] == "pattern"


def test_bag_fault_injection_503_retry_after_http_date(servers, bag_spec):
    response = requests.post(f"{servers.bag.admin_url}/faults",
                             json={"mode": "fail", "count": 1, "status": 503, "retry_after": 2}, timeout=10)
    assert response.json() == {"pending": 1}
    failed = bag_get(servers, "/panden/9999100000000001")
    assert failed.status_code == 503
    bag_spec.validate(failed.json(), "Error")
    assert email.utils.parsedate_to_datetime(failed.headers["Retry-After"]) is not None
    assert bag_get(servers, "/panden/9999100000000001").status_code == 200


def test_rate_limit_429_with_retry_after():
    with StandinServers(FIXTURE, api_keys={"brp": "k1", "bag": "k2"}, rate_limit_per_second=2) as limited:
        responses = [requests.get(f"{limited.bag.url}/panden/9999100000000001", headers={**RD, "X-Api-Key": "k2"}, timeout=10)
                     for _ in range(6)]
        statuses = [r.status_code for r in responses]
        assert 200 in statuses and 429 in statuses
        rejected = responses[statuses.index(429)]
        assert int(rejected.headers["Retry-After"]) >= 1
        assert rejected.headers["content-type"].startswith("application/problem+json")
        assert rejected.json()["title"] == "Too Many Requests"
        assert rejected.json()["detail"] == "You have exceeded your quota"
        assert rejected.headers["X-Rate-Limit-Limit"] == "2" and rejected.headers["X-Rate-Limit-Remaining"] == "0"
        assert responses[0].headers["RateLimit-Limit"] == "2"
        brp = [requests.post(f"{limited.brp.url}/personen", json=raadpleeg([BSN_A], ["burgerservicenummer"]),
                             headers={"X-API-KEY": "k1"}, timeout=10) for _ in range(6)]
        limited_brp = [r for r in brp if r.status_code == 429]
        assert limited_brp and limited_brp[0].json()["code"] == "tooManyRequests"
        assert int(limited_brp[0].headers["Retry-After"]) >= 1


def _free_port_block(size: int = 5) -> int:
    """A base port with ``size`` consecutive free ports (other test workers bind ephemeral ports too)."""
    import socket

    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + size > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + size):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError("no block of free consecutive ports found on 127.0.0.1")


def test_servers_port_base_and_urls():
    base = _free_port_block()
    with StandinServers(FIXTURE, port_base=base) as fixed:
        assert fixed.brp.port == base and fixed.bag.port == base + 1
        assert fixed.brp.url == f"http://127.0.0.1:{base}/haalcentraal/api/brp"
        assert fixed.bag.url == f"http://127.0.0.1:{base + 1}/lvbag/individuelebevragingen/v2"
        health = requests.get(f"{fixed.bag.admin_url}/health", timeout=10).json()
        assert health["name"] == "bag" and health["status"] == "ok"


def test_with_generated_world(brp_spec, bag_spec):
    from demo_gemeente.generator import DemoWorld

    world = DemoWorld(300, 7)
    as_of = date(2026, 11, 28)
    municipality = world.at(as_of)
    with StandinServers(world, as_of=as_of) as running:
        residents = sorted(p.bsn for p in municipality.residents())[:20]
        response = requests.post(f"{running.brp.url}/personen", headers={"X-API-KEY": running.brp.api_key},
                                 json=raadpleeg(residents, ["burgerservicenummer", "naam", "geboorte", "verblijfplaats"]),
                                 timeout=30)
        assert response.status_code == 200
        body = response.json()
        brp_spec.validate(body, "RaadpleegMetBurgerservicenummerResponse")
        assert sorted(p["burgerservicenummer"] for p in body["personen"]) == residents
        vbo_id = sorted(municipality.verblijfsobjecten)[0]
        vbo = requests.get(f"{running.bag.url}/verblijfsobjecten/{vbo_id}",
                           headers={"X-Api-Key": running.bag.api_key, **RD}, timeout=30)
        assert vbo.status_code == 200
        bag_spec.validate(vbo.json(), "VerblijfsobjectIOHal")
