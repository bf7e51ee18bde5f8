"""KvK Handelsregister: demo register, stand-in over real HTTP, contract, connector and silver.

* the stand-in (Zoeken v2, Basisprofiel, Vestigingsprofiel, Mutatieservice) is started on
  127.0.0.1 and called with ``requests``: ``apikey`` auth, paging, KvK's 1000-result cap,
  ``fout`` error bodies with IPD codes, error-trigger test numbers, 429 with Retry-After;
* every success and error response is validated with openapi-core against the KvK spec
  copies in ``specs/kvk`` of the reference material (see tests/specs.py; read at test time; the servers entry is replaced by
  the stand-in's URL, as in tests/test_standins_contract.py). Known defects of the copies
  are asserted exactly, not ignored (see ``assert_conforms_except``);
* the connector does a full pull and then a signal-driven pull into a temporary landing
  root; the second run re-fetches only the KvK-nummers the Mutatieservice named;
* bronze + silver for two logical dates give GGM tables with SCD2 versions.
"""
from __future__ import annotations

import copy
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests

from connectors.base import ExtractWindow
from connectors.errors import SourceConfigError
from connectors.kvk import KvkConnector
from demo_gemeente.generator import DemoWorld
from demo_gemeente.kvk import KvkRegister
from ggm_lakehouse.bsn import is_valid_bsn
from ggm_lakehouse.landing import iter_batch_records, read_manifest
from standins.kvk import ERROR_TRIGGER_KVK_NUMMERS, KvkStandin, signalen_for, start_kvk_standin
from tests.openapi_contract import load_spec, response_errors, spec_validator
from tests.specs import SHARED, available, missing_reason

SPECS = SHARED / "specs" / "kvk"
ZOEKEN_SPEC = SPECS / "zoeken-v2-openapi.TRANSCRIBED.yaml"
BASISPROFIEL_SPEC = SPECS / "basisprofiel-openapi.yaml"
VESTIGINGSPROFIEL_SPEC = SPECS / "vestigingsprofiel-openapi.yaml"

DAY1 = date(2026, 3, 10)
TIMEOUT = 10
FAST = 1000.0  # client requests/second in tests: the stand-in has no rate limit unless a test sets one

pytestmark = pytest.mark.skipif(not available("specs/kvk"), reason=missing_reason("specs/kvk"))


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def world() -> DemoWorld:
    return DemoWorld(400, seed=11)


@pytest.fixture(scope="module")
def register(world) -> KvkRegister:
    return KvkRegister(world)


@pytest.fixture(scope="module")
def standin(register):
    with start_kvk_standin(register, as_of=DAY1) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset(request):
    yield
    if "standin" in request.fixturenames:
        running: KvkStandin = request.getfixturevalue("standin")
        running.faults.clear()
        running.set_as_of(DAY1)


def get(standin: KvkStandin, path: str, params: Any = None, key: str | None = "default", **headers: str) -> requests.Response:
    sent = dict(headers)
    if key is not None:
        sent["apikey"] = standin.api_key if key == "default" else key
    return requests.get(f"{standin.url}{path}", params=params, headers=sent, timeout=TIMEOUT)


def fout(response: requests.Response) -> list[str]:
    """The IPD codes of a KvK error body (asserting its shape on the way)."""
    body = response.json()
    assert set(body) == {"fout"} and body["fout"], body
    assert all(set(item) == {"code", "omschrijving"} and item["omschrijving"] for item in body["fout"]), body
    return [item["code"] for item in body["fout"]]


def days_after(start: date, count: int) -> list[date]:
    return [start + timedelta(days=n) for n in range(1, count + 1)]


# --------------------------------------------------------------------------- contract helpers

HAL = "application/hal+json"


def contract_errors(spec: Path, server_url: str, response: requests.Response) -> list[str]:
    # The KvK specs declare no problem+json: hal+json is their only "+json" type to decode as JSON.
    return response_errors(spec_validator(spec, server_url, json_media_types=(HAL,)), response)


def server_for(spec: Path, standin: KvkStandin) -> str:
    # Zoeken's servers end in /api/v2 (paths /zoeken); the profile specs end in /api (paths /v1/...).
    return f"{standin.url}/v2" if spec == ZOEKEN_SPEC else standin.url


def assert_conforms(spec: Path, standin: KvkStandin, response: requests.Response) -> None:
    errors = contract_errors(spec, server_for(spec, standin), response)
    assert errors == [], f"{response.request.url} -> {response.status_code} violates {spec.name}: {errors}\n{response.text[:600]}"


def error_schema() -> dict[str, Any]:
    """The ``Error``/``Fout`` schemas of the Zoeken 2.0.0 spec as a plain JSON Schema."""
    schemas = load_spec(ZOEKEN_SPEC)["components"]["schemas"]
    error = copy.deepcopy(schemas["Error"])
    error["properties"]["fout"]["items"] = copy.deepcopy(schemas["Fout"])
    return error


def assert_profile_error_conforms(spec: Path, standin: KvkStandin, response: requests.Response) -> None:
    """Documented deviation of the Basisprofiel/Vestigingsprofiel copies for error responses.

    PROVENANCE.md: these copies were edited for code generation and declare only a
    ``default`` response with ``application/hal+json`` and the success schema. The
    stand-in sends KvK's error body ``{"fout": [...]}`` as ``application/json`` (as the
    Zoeken spec declares for every error), so openapi-core can only report the media
    type; the body is checked against the ``Error`` schema of the Zoeken spec instead.
    """
    errors = contract_errors(spec, server_for(spec, standin), response)
    assert len(errors) == 1 and "application/json" in errors[0] and "MediaType" in errors[0], errors
    jsonschema.validate(response.json(), error_schema())
    fout(response)


# --------------------------------------------------------------------------- demo register

def test_register_is_deterministic_and_uses_real_bag_addresses(world, register):
    again = KvkRegister(DemoWorld(400, seed=11))
    day = DAY1 + timedelta(days=5)
    assert again.at(day).ondernemingen == register.at(day).ondernemingen
    assert [(c.kind, c.kvk_nummer) for c in again.changes_between(DAY1, day)] == \
           [(c.kind, c.kvk_nummer) for c in register.changes_between(DAY1, day)]
    bag = world.at(DAY1)
    state = register.at(DAY1)
    for onderneming in state.ondernemingen.values():
        assert len(onderneming.kvk_nummer) == 8 and onderneming.kvk_nummer.isdigit()
        assert (onderneming.rsin is not None) == onderneming.is_rechtspersoon
        if onderneming.rsin:
            assert is_valid_bsn(onderneming.rsin), "an RSIN passes the 11-test"
        assert sum(a.hoofdactiviteit for a in onderneming.sbi_activiteiten) == 1
        for vestiging in onderneming.vestigingen:
            assert len(vestiging.vestigingsnummer) == 12 and vestiging.vestigingsnummer.isdigit()
            na = bag.nummeraanduidingen[vestiging.adres.nummeraanduiding_id]
            assert na.postcode == vestiging.adres.postcode and na.huisnummer == vestiging.adres.huisnummer
            assert bag.verblijfsobjecten[vestiging.adres.verblijfsobject_id].hoofdadres_id == na.identificatie
            assert bag.openbare_ruimten[na.openbare_ruimte_id].naam == vestiging.adres.straatnaam
    assert {o.rechtsvorm for o in state.ondernemingen.values()} >= {"Eenmanszaak", "BV", "Stichting"}


def test_zorgaanbieders_have_agb_codes_and_care_sbi(register):
    zorg = register.zorgaanbieders(DAY1)
    assert len(zorg) >= 4
    for onderneming in zorg:
        assert onderneming.rechtsvorm in ("Stichting", "BV")
        assert len(onderneming.agb_code) == 8 and onderneming.agb_code.isdigit()
        assert onderneming.sbi_activiteiten[0].sbi_code[:2] in ("86", "87", "88")
    assert len({o.agb_code for o in zorg}) == len(zorg)


def test_changes_are_applied_to_the_next_day(register):
    day = next(d for d in days_after(DAY1, 60) if any(c.kind == "adreswijziging" for c in register.changes_on(d)))
    move = next(c for c in register.changes_on(day) if c.kind == "adreswijziging")
    before = register.at(day - timedelta(days=1)).vestigingen[move.vestigingsnummer]
    after = register.at(day).vestigingen[move.vestigingsnummer]
    assert before.adres.nummeraanduiding_id == move.detail["van"] != after.adres.nummeraanduiding_id == move.detail["naar"]
    end_day = next(d for d in days_after(DAY1, 60) if any(c.kind == "uitschrijving" for c in register.changes_on(d)))
    ended = next(c for c in register.changes_on(end_day) if c.kind == "uitschrijving")
    assert register.at(end_day).ondernemingen[ended.kvk_nummer].datum_einde == end_day
    assert register.at(end_day - timedelta(days=1)).ondernemingen[ended.kvk_nummer].actief_op(end_day - timedelta(days=1))


# --------------------------------------------------------------------------- stand-in: auth and errors

@pytest.mark.parametrize("key", [None, "not-a-key"], ids=["missing", "wrong"])
def test_missing_or_wrong_apikey_is_401_with_fout_body(standin, key):
    response = get(standin, "/v2/zoeken", {"plaats": "Demodam"}, key=key)
    assert response.status_code == 401
    assert fout(response)
    assert_conforms(ZOEKEN_SPEC, standin, response)


@pytest.mark.parametrize("params, status, code", [
    ({"kvkNummer": "1234"}, 400, "IPD0004"),
    ({"rsin": "12345"}, 400, "IPD0010"),
    ({"vestigingsnummer": "12"}, 400, "IPD0006"),
    ({"plaats": "Demodam", "onbekend": "x"}, 400, "IPD1999"),
    ({"postcode": "1234AB"}, 400, "IPD1998"),
    ({"plaats": "Demodam", "resultatenPerPagina": "101"}, 400, "IPD1998"),
    ({"plaats": "Demodam", "pagina": "0"}, 400, "IPD1998"),
    ({"plaats": "Demodam", "type": "filiaal"}, 400, "IPD5203"),
    ({"plaats": "Atlantis"}, 404, "IPD5200"),
], ids=["kvk", "rsin", "vestiging", "unknown-param", "postcode-alone", "per-page", "page-0", "type", "no-results"])
def test_zoeken_errors_use_kvk_ipd_codes(standin, params, status, code):
    response = get(standin, "/v2/zoeken", params)
    assert response.status_code == status
    assert fout(response) == [code]
    assert_conforms(ZOEKEN_SPEC, standin, response)


def test_error_trigger_test_numbers(standin):
    for kvk_nummer, (status, code, _) in ERROR_TRIGGER_KVK_NUMMERS.items():
        response = get(standin, f"/v1/basisprofielen/{kvk_nummer}")
        assert response.status_code == status and fout(response) == [code]
        assert_profile_error_conforms(BASISPROFIEL_SPEC, standin, response)


def test_profile_errors(standin):
    cases = [
        (BASISPROFIEL_SPEC, "/v1/basisprofielen/12345", 400, "IPD0004"),
        (BASISPROFIEL_SPEC, "/v1/basisprofielen/11111111", 404, "IPD0005"),
        (BASISPROFIEL_SPEC, "/v1/basisprofielen/11111111/vestigingen", 404, "IPD0005"),
        (VESTIGINGSPROFIEL_SPEC, "/v1/vestigingsprofielen/123", 400, "IPD0006"),
        (VESTIGINGSPROFIEL_SPEC, "/v1/vestigingsprofielen/000000000001", 404, "IPD0007"),
    ]
    for spec, path, status, code in cases:
        response = get(standin, path)
        assert (response.status_code, fout(response)) == (status, [code]), path
        assert_profile_error_conforms(spec, standin, response)
    unknown_param = get(standin, "/v1/vestigingsprofielen/000000000001", {"expand": "true"})
    assert unknown_param.status_code == 400 and fout(unknown_param) == ["IPD1999"]


def test_rate_limit_answers_429_with_retry_after(register):
    with start_kvk_standin(register, as_of=DAY1, rate_limit_per_second=0.01) as throttled:
        first = get(throttled, "/v2/zoeken", {"plaats": "Demodam"})
        second = get(throttled, "/v2/zoeken", {"plaats": "Demodam"})
    assert first.status_code == 200
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1
    assert fout(second) == ["IPD1003"]
    # The Zoeken spec declares no 429 response: the validator can only say so (documented gap, SOURCES §3).
    errors = contract_errors(ZOEKEN_SPEC, f"{throttled.url}/v2", second)
    assert len(errors) == 1 and "429" in errors[0], errors
    jsonschema.validate(second.json(), error_schema())


def test_injected_503_carries_fout_body_and_retry_after(standin):
    standin.faults.fail_next(1, status=503, retry_after_seconds=2)
    response = get(standin, "/v2/zoeken", {"plaats": "Demodam"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert fout(response) == ["IPD1003"]
    jsonschema.validate(response.json(), error_schema())
    standin.faults.fail_next(1, status=500)
    response = get(standin, "/v2/zoeken", {"plaats": "Demodam"})
    assert response.status_code == 500 and fout(response) == ["IPD9999"]
    assert_conforms(ZOEKEN_SPEC, standin, response)


# --------------------------------------------------------------------------- stand-in: Zoeken

def test_zoeken_pages_follow_volgende_and_cover_every_active_registration(standin, register):
    state = register.at(DAY1)
    expected_items = sum(1 for o in state.actieve_ondernemingen() for v in o.vestigingen if v.actief_op(DAY1)) + \
        sum(1 for o in state.actieve_ondernemingen() if o.is_rechtspersoon)
    response = get(standin, "/v2/zoeken", {"plaats": "Demodam", "resultatenPerPagina": 10})
    assert response.status_code == 200
    assert_conforms(ZOEKEN_SPEC, standin, response)
    first = response.json()
    assert first["totaal"] == expected_items and first["pagina"] == 1 and "vorige" not in first
    seen, pages = [], 0
    while True:
        document = response.json()
        pages += 1
        seen.extend((r["kvkNummer"], r.get("vestigingsnummer"), r["type"]) for r in document["resultaten"])
        if pages == 2:
            assert document["vorige"].endswith("pagina=1") and document["pagina"] == 2
        if "volgende" not in document:
            break
        response = requests.get(document["volgende"], headers={"apikey": standin.api_key}, timeout=TIMEOUT)
        assert response.status_code == 200
    assert len(seen) == len(set(seen)) == expected_items
    assert pages == -(-expected_items // 10)
    assert {kind for _, _, kind in seen} == {"hoofdvestiging", "rechtspersoon"} | ({"nevenvestiging"} & {k for _, _, k in seen})


def test_zoeken_by_postcode_and_huisnummer_shows_them(standin, register):
    vestiging = register.at(DAY1).actieve_ondernemingen()[0].hoofdvestiging
    response = get(standin, "/v2/zoeken", {"postcode": vestiging.adres.postcode, "huisnummer": vestiging.adres.huisnummer})
    assert response.status_code == 200
    assert_conforms(ZOEKEN_SPEC, standin, response)
    adressen = [r["adres"]["binnenlandsAdres"] for r in response.json()["resultaten"]]
    assert adressen and all(a["postcode"] == vestiging.adres.postcode for a in adressen)
    plain = get(standin, "/v2/zoeken", {"kvkNummer": vestiging.kvk_nummer, "type": "hoofdvestiging"}).json()
    assert [r["vestigingsnummer"] for r in plain["resultaten"]] == [vestiging.vestigingsnummer]
    assert "postcode" not in plain["resultaten"][0]["adres"]["binnenlandsAdres"]


def test_zoeken_inactive_registrations_only_on_request(standin, register):
    end_day = next(d for d in days_after(DAY1, 60) if any(c.kind == "uitschrijving" for c in register.changes_on(d)))
    ended = next(c for c in register.changes_on(end_day) if c.kind == "uitschrijving").kvk_nummer
    standin.set_as_of(end_day)
    assert get(standin, "/v2/zoeken", {"kvkNummer": ended}).status_code == 404
    response = get(standin, "/v2/zoeken", {"kvkNummer": ended, "inclusiefInactieveRegistraties": "true"})
    assert response.status_code == 200
    assert {r["actief"] for r in response.json()["resultaten"]} == {"Nee"}
    assert_conforms(ZOEKEN_SPEC, standin, response)


def test_zoeken_shows_at_most_1000_results():
    big = KvkRegister(DemoWorld(600, seed=5), density=2.0)
    assert len(big.at(DAY1).actieve_ondernemingen()) > 1000
    with start_kvk_standin(big, as_of=DAY1) as running:
        last = get(running, "/v2/zoeken", {"plaats": "Demodam", "pagina": 10, "resultatenPerPagina": 100})
        beyond = get(running, "/v2/zoeken", {"plaats": "Demodam", "pagina": 11, "resultatenPerPagina": 100})
        assert last.status_code == 200
        assert last.json()["totaal"] == 1000 and len(last.json()["resultaten"]) == 100 and "volgende" not in last.json()
        assert_conforms(ZOEKEN_SPEC, running, last)
        assert beyond.status_code == 400 and fout(beyond) == ["IPD1998"]
        assert_conforms(ZOEKEN_SPEC, running, beyond)


# --------------------------------------------------------------------------- stand-in: profiles

def test_basisprofiel_with_geodata_conforms_and_points_into_the_bag(standin, register, world):
    onderneming = next(o for o in register.at(DAY1).actieve_ondernemingen() if o.is_rechtspersoon)
    response = get(standin, f"/v1/basisprofielen/{onderneming.kvk_nummer}", {"geoData": "true"})
    assert response.status_code == 200 and response.headers["content-type"].startswith(HAL)
    assert_conforms(BASISPROFIEL_SPEC, standin, response)
    body = response.json()
    assert body["kvkNummer"] == onderneming.kvk_nummer
    assert body["_embedded"]["eigenaar"]["rsin"] == onderneming.rsin
    assert [a["indHoofdactiviteit"] for a in body["sbiActiviteiten"]][0] == "Ja"
    geo = body["_embedded"]["hoofdvestiging"]["adressen"][0]["geoData"]
    na = world.at(DAY1).nummeraanduidingen[geo["nummerAanduidingId"]]
    assert na.postcode == body["_embedded"]["hoofdvestiging"]["adressen"][0]["postcode"]
    assert 50.5 < geo["gpsLatitude"] < 53.7 and 3.2 < geo["gpsLongitude"] < 7.3
    without = get(standin, f"/v1/basisprofielen/{onderneming.kvk_nummer}").json()
    assert "geoData" not in without["_embedded"]["hoofdvestiging"]["adressen"][0]
    for sub in ("eigenaar", "hoofdvestiging", "vestigingen"):
        sub_response = get(standin, f"/v1/basisprofielen/{onderneming.kvk_nummer}/{sub}")
        assert sub_response.status_code == 200
        assert_conforms(BASISPROFIEL_SPEC, standin, sub_response)
    lijst = get(standin, f"/v1/basisprofielen/{onderneming.kvk_nummer}/vestigingen").json()
    assert lijst["totaalAantalVestigingen"] == len(lijst["vestigingen"]) == len(onderneming.vestigingen)


def test_vestigingsprofiel_conforms(standin, register):
    vestiging = next(v for o in register.at(DAY1).actieve_ondernemingen() for v in o.vestigingen if not v.hoofdvestiging)
    response = get(standin, f"/v1/vestigingsprofielen/{vestiging.vestigingsnummer}", {"geoData": "true"})
    assert response.status_code == 200
    assert_conforms(VESTIGINGSPROFIEL_SPEC, standin, response)
    body = response.json()
    assert body["indHoofdvestiging"] == "Nee" and body["handelsnamen"][0]["naam"] == vestiging.eerste_handelsnaam
    assert body["adressen"][0]["geoData"]["addresseerbaarObjectId"] == vestiging.adres.verblijfsobject_id


# --------------------------------------------------------------------------- stand-in: Mutatieservice

def test_mutatieservice_signals_page_and_resolve(standin, register):
    day = next(d for d in days_after(DAY1, 30) if any(c.kind == "registratie" for c in register.changes_on(d)))
    standin.set_as_of(day)
    abonnementen = get(standin, "/v1/abonnementen").json()["abonnementen"]
    assert [a["id"] for a in abonnementen] == [standin.abonnement_id]
    window = {"vanaf": f"{DAY1 + timedelta(days=1)}T00:00:00Z", "tot": f"{day + timedelta(days=1)}T00:00:00Z"}
    expected = [s.id for c in register.changes_between(DAY1 + timedelta(days=1), day) for s in signalen_for(c)]
    collected, pagina = [], 1
    while True:
        page = get(standin, f"/v1/abonnementen/{standin.abonnement_id}", {**window, "aantal": 2, "pagina": pagina}).json()
        assert page["totaal"] == len(expected)
        collected.extend(page["signalen"])
        if pagina >= page["totaalPaginas"]:
            break
        pagina += 1
    assert [s["id"] for s in collected] == expected
    nieuw = next(s for s in collected if s["signaalType"] == "SignaalNieuweInschrijving")
    assert any(s["signaalType"] == "SignaalGewijzigdeInschrijving" and s["kvknummer"] == nieuw["kvknummer"] for s in collected)
    detail = get(standin, f"/v1/abonnementen/{standin.abonnement_id}/signalen/{nieuw['id']}").json()["signaal"]
    assert detail["heeftBetrekkingOp"]["kvkNummer"] == nieuw["kvknummer"]
    assert detail["heeftBetrekkingOp"]["wordtUitgeoefendIn"][0]["isHoofdvestiging"] is True
    # Nothing from the future: the registry clock bounds the feed.
    standin.set_as_of(DAY1)
    early = get(standin, f"/v1/abonnementen/{standin.abonnement_id}", window).json()
    assert early["totaal"] == 0 and early["signalen"] == []
    missing = get(standin, "/v1/abonnementen/onbekend")
    assert missing.status_code == 404 and fout(missing)


# --------------------------------------------------------------------------- connector

def _connector(standin: KvkStandin, **extra: Any) -> KvkConnector:
    config = {"base_url": standin.url, "api_key": standin.api_key, "plaatsen": ["Demodam"],
              "requests_per_second": FAST, "backoff_base": 0.01, **extra}
    return KvkConnector(config)


def _kvk_in(batch) -> set[str]:
    return {r["kvkNummer"] for r in iter_batch_records(batch)}


def _day_with(register: KvkRegister, kinds: set[str], after: date) -> date:
    """The first day after ``after`` whose events since ``after`` include every kind in ``kinds``."""
    for day in days_after(after, 120):
        if kinds <= {c.kind for c in register.changes_between(after + timedelta(days=1), day)}:
            return day
    raise AssertionError(f"no {kinds} within 120 days of {after}")


def test_connector_config_is_validated():
    with pytest.raises(SourceConfigError):
        KvkConnector({"base_url": "http://127.0.0.1:1/api", "api_key": "k"})  # plaatsen missing


def test_connector_full_pull_then_signal_driven_pull(standin, register, tmp_path):
    connector = _connector(standin)
    standin.faults.fail_next(2, status=503, retry_after_seconds=1)  # survived by the client's retries
    day1 = {b.dataset: b for b in connector.extract(ExtractWindow.for_day(DAY1, "run-1"), tmp_path)}
    assert standin.faults.pending() == 0
    assert set(day1) == {"zoekresultaten", "basisprofielen", "vestigingsprofielen", "rechtspersonen",
                         "handelsnamen", "sbiactiviteiten"}
    state = register.at(DAY1)
    active = {o.kvk_nummer for o in state.actieve_ondernemingen()}
    assert _kvk_in(day1["basisprofielen"]) == active
    assert day1["basisprofielen"].manifest["extra"]["mode"] == "full"
    expected_vestigingen = {v.vestigingsnummer for o in state.actieve_ondernemingen() for v in o.vestigingen
                            if v.actief_op(DAY1)}
    assert {r["vestigingsnummer"] for r in iter_batch_records(day1["vestigingsprofielen"])} == expected_vestigingen
    rechtspersonen = list(iter_batch_records(day1["rechtspersonen"]))
    assert {r["rsin"] for r in rechtspersonen} == {o.rsin for o in state.actieve_ondernemingen() if o.rsin}
    sbi = list(iter_batch_records(day1["sbiactiviteiten"]))
    assert len(sbi) == sum(len(state.vestigingen[n].sbi_activiteiten) for n in expected_vestigingen)
    assert all(r["vestigingsnummer"] in expected_vestigingen for r in sbi)
    for batch in day1.values():
        manifest_text = (batch.path / "_MANIFEST.json").read_text(encoding="utf-8")
        assert standin.api_key not in manifest_text
        assert read_manifest(batch.path)["status"] == "complete"

    day2 = _day_with(register, {"adreswijziging", "uitschrijving"}, DAY1)
    standin.set_as_of(day2)
    second = {b.dataset: b for b in connector.extract(ExtractWindow.for_day(day2, "run-2"), tmp_path)}
    assert "zoekresultaten" not in second
    changes = register.changes_between(DAY1 + timedelta(days=1), day2)
    named = {c.kvk_nummer for c in changes}
    assert {s["kvknummer"] for s in iter_batch_records(second["signalen"])} == named
    assert second["signalen"].record_count == sum(len(signalen_for(c)) for c in changes)
    # Only the signalled numbers are re-fetched, even though the signals span several days (catch-up).
    assert _kvk_in(second["basisprofielen"]) == named
    assert second["basisprofielen"].manifest["extra"]["signalen_vanaf"].startswith((DAY1 + timedelta(days=1)).isoformat())
    ended = next(c for c in changes if c.kind == "uitschrijving")
    profiel = next(r for r in iter_batch_records(second["basisprofielen"]) if r["kvkNummer"] == ended.kvk_nummer)
    assert profiel["materieleRegistratie"]["datumEinde"] == ended.day.strftime("%Y%m%d")


def test_profiles_requested_in_parallel_land_the_same_bytes_as_one_at_a_time(standin, tmp_path):
    standin.set_as_of(DAY1)
    window = ExtractWindow.for_day(DAY1, "run-parallel")
    parallel = {b.dataset: b for b in _connector(standin, max_parallel_requests=8).extract(window, tmp_path / "parallel")}
    serial = {b.dataset: b for b in _connector(standin, max_parallel_requests=1).extract(window, tmp_path / "serial")}
    assert parallel["basisprofielen"].record_count > 8  # more profiles than requests in flight
    for dataset, batch in serial.items():
        assert parallel[dataset].checksum == batch.checksum, dataset
        assert [p.read_bytes() for p in parallel[dataset].part_paths] == [p.read_bytes() for p in batch.part_paths]


def test_connector_splits_capped_questions_by_type_and_street(register, world, tmp_path):
    streets = sorted({r.naam for r in world.at(DAY1).openbare_ruimten.values()})
    state = register.at(DAY1)
    per_street: dict[str, int] = {}
    for onderneming in state.actieve_ondernemingen():
        for vestiging in onderneming.vestigingen:
            per_street[vestiging.adres.straatnaam] = per_street.get(vestiging.adres.straatnaam, 0) + 1
    # Small enough that the plaats and the hoofdvestigingen are capped, large enough for every street.
    cap = max(per_street.values()) + 1
    hoofdvestigingen = sum(1 for o in state.actieve_ondernemingen() if o.hoofdvestiging.actief_op(DAY1))
    assert hoofdvestigingen >= cap, "the demo register is too small to exercise the split"
    with start_kvk_standin(register, as_of=DAY1, max_results=cap) as capped:
        connector = _connector(capped, zoeken_max_results=cap, straatnamen=streets, mode="full")
        batches = {b.dataset: b for b in connector.extract(ExtractWindow.for_day(DAY1, "split"), tmp_path)}
    questions = [part["request"]["params"] for part in batches["zoekresultaten"].manifest["parts"]]
    assert all("type" in q for q in questions) and any("straatnaam" in q for q in questions)
    assert _kvk_in(batches["basisprofielen"]) == {o.kvk_nummer for o in register.at(DAY1).actieve_ondernemingen()}


# --------------------------------------------------------------------------- bronze + silver

KVK_TABLES = ["NIETNATUURLIJKPERSOON", "MAATSCHAPPELIJKEACTIVITEIT", "VESTIGING", "SBIACTIVITEIT",
              "SBIACTIVITEITVESTIGING"]
SOURCE_OF = {"NIETNATUURLIJKPERSOON": "kvk_rechtspersonen", "MAATSCHAPPELIJKEACTIVITEIT": "kvk_basisprofielen",
             "VESTIGING": "kvk_vestigingsprofielen", "SBIACTIVITEIT": "kvk_sbiactiviteiten",
             "SBIACTIVITEITVESTIGING": "kvk_sbiactiviteiten"}


def test_bronze_and_silver_give_ggm_tables_with_scd2_history(spark, data_root, register, ggm_tables):
    from ggm_lakehouse.config import landing_root, table_path
    from jobs import bronze, silver
    from jobs.silver import surrogate_key_value

    day2 = _day_with(register, {"adreswijziging", "uitschrijving"}, DAY1)
    reports = {}
    with start_kvk_standin(register, as_of=DAY1) as running:
        connector = _connector(running)
        for day in (DAY1, day2):
            running.set_as_of(day)
            connector.extract(ExtractWindow.for_day(day, f"kvk-{day}"), landing_root())
            landed = bronze.run(spark, day, f"kvk-{day}")["tables"]
            assert all(landed[SOURCE_OF[t]]["rows"] > 0 for t in ("MAATSCHAPPELIJKEACTIVITEIT", "VESTIGING"))
            # Day 1 conforms every KvK table; day 2 the two whose history is checked below (keeps the test
            # short). Their references to NIETNATUURLIJKPERSOON/MAATSCHAPPELIJKEACTIVITEIT resolve against
            # the current silver versions.
            tables = KVK_TABLES if day == DAY1 else ["MAATSCHAPPELIJKEACTIVITEIT", "VESTIGING"]
            if day != DAY1 and landed.get("kvk_rechtspersonen", {}).get("rows", 0) > 0:
                tables = ["NIETNATUURLIJKPERSOON", *tables]  # a new rechtspersoon must exist before its activity
            reports[day] = silver.run(spark, day, f"kvk-{day}", tables=tables)["tables"]
            assert all(entry["quarantined"] == {} for entry in reports[day].values()), reports[day]

    def silver_table(name: str):
        return spark.read.format("delta").load(str(table_path("silver", name)))

    for name in KVK_TABLES:
        frame = silver_table(name)
        gg = ggm_tables[name]
        known = set(gg["columns"]) | set(gg.get("columns_union", []))
        data_columns = [c for c in frame.columns if not c.startswith("DWH_")]
        assert set(data_columns) <= known, f"{name}: {sorted(set(data_columns) - known)} not in GGM"
        assert {"DWH_BRONSYSTEEM", "DWH_DATUMTIJDGELDIGVANAF", "DWH_DATUMTIJDGELDIGTOTMET"} <= set(frame.columns)

    state1 = register.at(DAY1)
    activiteiten = silver_table("MAATSCHAPPELIJKEACTIVITEIT")
    first_day = activiteiten.where(f"DWH_DATUMTIJDGELDIGVANAF = '{DAY1}'").collect()
    assert {r["KVKNUMMER"] for r in first_day} == {o.kvk_nummer for o in state1.actieve_ondernemingen()}
    some = next(o for o in state1.actieve_ondernemingen() if o.rsin)
    row = next(r for r in first_day if r["KVKNUMMER"] == some.kvk_nummer)
    assert row["MAATSCHAPPELIJKEACTIVITEIT_ID"] == surrogate_key_value("MAATSCHAPPELIJKEACTIVITEIT", some.kvk_nummer)
    assert row["HEEFT_ALS_EIGENAAR_RECHTSPERSOON_ID"] == surrogate_key_value("NIETNATUURLIJKPERSOON", some.rsin)
    rechtsvormen = {r["RECHTSVORM"] for r in silver_table("NIETNATUURLIJKPERSOON").collect()}
    assert rechtsvormen <= {"BESLOTEN_VENNOOTSCHAP", "NAAMLOZE_VENNOOTSCHAP", "STICHTING", "VERENIGING"}

    changes = register.changes_between(DAY1 + timedelta(days=1), day2)
    # A company that ended: its open version closes at day2's load and the new version carries the end date.
    ended = next(c for c in changes if c.kind == "uitschrijving")
    key = surrogate_key_value("MAATSCHAPPELIJKEACTIVITEIT", ended.kvk_nummer)
    history = activiteiten.where(f"MAATSCHAPPELIJKEACTIVITEIT_ID = {key}").orderBy("DWH_DATUMTIJDGELDIGVANAF").collect()
    assert len(history) == 2
    assert history[0]["DWH_DATUMTIJDGELDIGTOTMET"].date() == day2 and history[0]["INDICATIEECONOMISCHACTIEF"] is True
    assert history[1]["DWH_DATUMTIJDGELDIGTOTMET"] is None and history[1]["INDICATIEECONOMISCHACTIEF"] is False
    assert history[1]["DATUMEINDEGELDIG"] == ended.day

    # A vestiging that moved (and whose company did not end later): a new version with the new BAG address.
    moved = next(c for c in reversed(changes) if c.kind == "adreswijziging")
    vestigingen = silver_table("VESTIGING")
    vkey = surrogate_key_value("VESTIGING", moved.vestigingsnummer)
    versions = vestigingen.where(f"VESTIGING_ID = {vkey}").orderBy("DWH_DATUMTIJDGELDIGVANAF").collect()
    assert len(versions) == 2
    assert versions[0]["HEEFT_ALS_LOCATIE_ADRES_NUMMERAANDUIDING_ID"] == surrogate_key_value(
        "NUMMERAANDUIDING", register.at(DAY1).vestigingen[moved.vestigingsnummer].adres.nummeraanduiding_id)
    assert versions[1]["HEEFT_ALS_LOCATIE_ADRES_NUMMERAANDUIDING_ID"] == surrogate_key_value(
        "NUMMERAANDUIDING", register.at(day2).vestigingen[moved.vestigingsnummer].adres.nummeraanduiding_id)
    assert versions[1]["UITOEFENING_VAN_ACTIVITEITEN_MAATSCHAPPELIJKEACTIVITEIT_ID"] == surrogate_key_value(
        "MAATSCHAPPELIJKEACTIVITEIT", moved.kvk_nummer)
    # Companies nobody signalled keep exactly one open version (incremental load closes nothing).
    untouched = next(o for o in state1.actieve_ondernemingen() if o.kvk_nummer not in {c.kvk_nummer for c in changes})
    ukey = surrogate_key_value("MAATSCHAPPELIJKEACTIVITEIT", untouched.kvk_nummer)
    assert activiteiten.where(f"MAATSCHAPPELIJKEACTIVITEIT_ID = {ukey}").count() == 1

    links = silver_table("SBIACTIVITEITVESTIGING").collect()
    assert "Ja" in {r["INDICATIEHOOFDACTIVITEIT"] for r in links} <= {"Ja", "Nee"}
    assert all(r["VESTIGING_ID"] is not None for r in links)
    codes = {r["SBICODE"]: r for r in silver_table("SBIACTIVITEIT").collect()}
    zorg = register.zorgaanbieders(DAY1)[0].sbi_activiteiten[0].sbi_code
    assert codes[zorg]["HOOFDNIVEAU"] == "Q" and codes[zorg]["SBIGROEP"] == zorg[:2]
    assert codes[zorg]["HOOFDNIVEAUOMSCHRIJVING"] == "Gezondheids- en welzijnszorg"
