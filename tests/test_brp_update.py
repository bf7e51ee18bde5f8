"""BRP Update API (volgindicaties + wijzigingen) and the daily BAG refresh, over real HTTP and through silver.

The demo municipality (population 300, seed 5) is served by the BRP/BAG stand-ins and the
BRP Update API stand-in on 127.0.0.1. Day 1 (2026-06-30, three moves that day) is the first
run: every followed person is queried. Day 2 (2026-07-07; a move on 07-02 and a new
building on 07-07 lie in between) re-queries only what ``GET /wijzigingen?vanaf=<day 1>`` reports
plus newly followed persons, and the landed ``personen`` batch is still a full snapshot, so
silver versions exactly the changed persons. The BAG is crawled whole on both days; an
object whose content did not change gets no new silver version, even though its bronze
``_record_hash`` did (the HAL ``_links`` carry the stand-in's new port). A daily request
quota stops the BAG crawl cleanly with a retryable error.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from fastapi.responses import JSONResponse

from connectors import CONNECTORS, BagConnector, ExtractWindow, find_complete_batches
from connectors.bag import QUOTA_STATE_RELATIVE, DailyQuotaExceededError, DailyRequestQuota
from connectors.brp import MAX_BSNS_PER_REQUEST, BrpPersonenConnector
from connectors.errors import SourceAuthError, SourceClientError, SourceError
from connectors.http import SourceTlsError
from demo_gemeente.dropzone import volglijst_bsns, write_dropzone
from demo_gemeente.generator import DemoWorld
from ggm_lakehouse.config import dropzone_root, landing_root, table_path
from ggm_lakehouse.landing import MANIFEST_NAME, iter_batch_records
from standins.auth import DEFAULT_TOKEN_PATH, OAuth2Server, generate_test_pki, start_mtls_server, start_oauth2_server
from standins.brp import create_brp_app
from standins.brp_update import VolgindicatieStore, create_brp_update_app, start_brp_update_standin
from standins.common import RegistryState, ThreadedUvicorn, WorldSource
from standins.server import StandinServers

POPULATION = 300
SEED = 5
DAY1 = date(2026, 6, 30)
DAY2 = date(2026, 7, 7)
TIMEOUT = 10


@pytest.fixture(scope="module")
def world() -> DemoWorld:
    return DemoWorld(POPULATION, SEED)


@pytest.fixture(scope="module")
def update_standin(world):
    """One Update API stand-in for the whole module: volgindicaties live in its memory across days."""
    with start_brp_update_standin(world, as_of=DAY1, api_keys=["afnemer-gemeente", "afnemer-ggd"]) as standin:
        yield standin


def _brp_connector(servers, update_standin, **overrides) -> BrpPersonenConnector:
    config = {
        "base_url": servers.brp.url,
        "api_key": servers.brp.api_key,
        "update_base_url": update_standin.url,
        "update_api_key": "afnemer-gemeente",
    }
    return BrpPersonenConnector({**config, **overrides})


def _extract_day(world, update_standin, day: date, run_id: str) -> dict:
    """Drop-zone exports + all three connectors for ``day`` into the module's landing zone."""
    muni = world.at(day)
    write_dropzone(muni, dropzone_root())
    window = ExtractWindow.for_day(day, run_id)
    update_standin.set_as_of(day)
    with StandinServers(world, as_of=day) as servers:
        brp = {r.dataset: r for r in _brp_connector(servers, update_standin).extract(window, landing_root())}
        bag = {
            r.dataset: r
            for r in BagConnector(
                {"base_url": servers.bag.url, "api_key": servers.bag.api_key, "woonplaats_ids": sorted(muni.woonplaatsen)}
            ).extract(window, landing_root())
        }
        CONNECTORS["gebieden"]({}).extract(window, landing_root())
    return {"brp": brp, "bag": bag}


def _posted_bsns(result) -> list[list[str]]:
    return [p["request"]["body"]["burgerservicenummer"] for p in result.manifest["parts"] if p["request"]]


def _changed_between(world, first: date, last: date) -> set[str]:
    """BSNs whose persoonslijst changed on a day in [first, last] (the demo's own change log)."""
    return {b for c in world.at(last).changes if first <= c.day <= last for b in c.detail["affected_bsns"]}


@pytest.fixture(scope="module")
def two_days(data_root, world, update_standin):
    day1 = _extract_day(world, update_standin, DAY1, "run-day1")
    day2 = _extract_day(world, update_standin, DAY2, "run-day2")
    return {"day1": day1, "day2": day2}


# ----------------------------------------------------------------------- stand-in over HTTP


def test_volgindicaties_are_registered_per_afnemer_and_end_with_an_einddatum(world):
    bsns = sorted(world.at(DAY1).persons)[:3]
    with start_brp_update_standin(world, as_of=DAY1, api_keys=["a", "b"]) as standin:
        def put(bsn, body, key="a"):
            return requests.put(f"{standin.url}/volgindicaties/{bsn}", json=body, headers={"X-API-KEY": key},
                                timeout=TIMEOUT)

        first = put(bsns[0], {})
        assert first.status_code == 201 and first.headers["content-type"].startswith("application/hal+json")
        assert first.json() == {"burgerservicenummer": bsns[0], "begindatum": DAY1.isoformat()}
        assert put(bsns[1], {}).status_code == 201
        again = put(bsns[0], {"einddatum": (DAY1 + timedelta(days=5)).isoformat()})
        assert again.status_code == 200 and again.json()["einddatum"] == (DAY1 + timedelta(days=5)).isoformat()

        def active(key):
            body = requests.get(f"{standin.url}/volgindicaties", headers={"X-API-KEY": key}, timeout=TIMEOUT).json()
            return [v["burgerservicenummer"] for v in body["volgindicaties"]]

        assert active("a") == bsns[:2]
        assert active("b") == []  # another afnemer follows nobody
        # An einddatum of today ends it: no longer listed, still readable one by one.
        assert put(bsns[1], {"einddatum": DAY1.isoformat()}).status_code == 200
        assert active("a") == [bsns[0]]
        single = requests.get(f"{standin.url}/volgindicaties/{bsns[1]}", headers={"X-API-KEY": "a"}, timeout=TIMEOUT)
        assert single.status_code == 200 and single.json()["einddatum"] == DAY1.isoformat()
        # The volgindicaties survive clock moves; after the einddatum the first one is gone as well.
        standin.set_as_of(DAY1 + timedelta(days=5))
        assert active("a") == []
        missing = requests.get(f"{standin.url}/volgindicaties/{bsns[2]}", headers={"X-API-KEY": "a"}, timeout=TIMEOUT)
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


def test_volgindicaties_survive_a_restart_with_a_file_and_never_store_the_key(world, tmp_path):
    state_file = tmp_path / "volgindicaties.json"
    bsn = sorted(world.at(DAY1).persons)[0]
    with start_brp_update_standin(world, as_of=DAY1, api_keys=["secret-key"], volgindicaties_file=state_file) as first:
        requests.put(f"{first.url}/volgindicaties/{bsn}", json={}, headers={"X-API-KEY": "secret-key"}, timeout=TIMEOUT)
    assert "secret-key" not in state_file.read_text()
    with start_brp_update_standin(world, as_of=DAY2, api_keys=["secret-key"], volgindicaties_file=state_file) as second:
        listed = requests.get(f"{second.url}/volgindicaties", headers={"X-API-KEY": "secret-key"}, timeout=TIMEOUT)
    assert listed.json() == {"volgindicaties": [{"burgerservicenummer": bsn, "begindatum": DAY1.isoformat()}]}


def test_wijzigingen_lists_followed_persons_changed_on_or_after_vanaf(world):
    movers = sorted({c.subject for c in world.at(DAY1).changes_on(DAY1) if c.kind == "move"})
    assert len(movers) >= 2, "the chosen day must have moves"
    followed, unfollowed = movers[:-1], movers[-1]
    with start_brp_update_standin(world, as_of=DAY1 - timedelta(days=1), api_keys=["a", "b"]) as standin:
        headers = {"X-API-KEY": "a"}
        for bsn in followed:
            requests.put(f"{standin.url}/volgindicaties/{bsn}", json={}, headers=headers, timeout=TIMEOUT)
        standin.set_as_of(DAY1)

        def wijzigingen(vanaf=None, key="a"):
            params = {"vanaf": vanaf.isoformat()} if vanaf else {}
            response = requests.get(f"{standin.url}/wijzigingen", params=params, headers={"X-API-KEY": key},
                                    timeout=TIMEOUT)
            assert response.status_code == 200 and response.headers["content-type"].startswith("application/hal+json")
            return response.json()

        body = wijzigingen(DAY1)
        assert body["burgerservicenummers"] == followed  # inclusive vanaf; the unfollowed mover is absent
        assert unfollowed not in body["burgerservicenummers"]
        assert body["_links"]["self"]["href"].endswith(f"/wijzigingen?vanaf={DAY1.isoformat()}")
        assert wijzigingen(DAY1 + timedelta(days=1))["burgerservicenummers"] == []
        assert wijzigingen()["burgerservicenummers"] == followed
        assert wijzigingen(DAY1, key="b")["burgerservicenummers"] == []
        bad = requests.get(f"{standin.url}/wijzigingen", params={"vanaf": "09-06-2026"}, headers=headers,
                           timeout=TIMEOUT)
        assert bad.status_code == 400
        assert [(p["name"], p["code"]) for p in bad.json()["invalidParams"]] == [("vanaf", "date")]


# ----------------------------------------------------------------------- connector, two days


def test_day1_registers_every_followed_person_and_queries_them_all(two_days, world, update_standin):
    result = two_days["day1"]["brp"]["personen"]
    followed = volglijst_bsns(world.at(DAY1))
    extra = result.manifest["extra"]
    assert extra["mode"] == "full" and extra["update_api"]["previous_batch"] is None
    assert extra["update_api"]["volgindicaties"]["registered"] == len(followed)
    groups = _posted_bsns(result)
    assert all(1 <= len(g) <= MAX_BSNS_PER_REQUEST for g in groups)
    assert [b for g in groups for b in g] == followed
    assert "wijzigingen" not in two_days["day1"]["brp"]  # nothing to ask on a first run
    assert sorted(p["burgerservicenummer"] for p in iter_batch_records(result)) == followed
    manifest_text = (result.path / MANIFEST_NAME).read_text()
    assert "afnemer-gemeente" not in manifest_text


def test_day2_requeries_exactly_the_changed_persons(two_days, world, update_standin):
    followed1 = set(volglijst_bsns(world.at(DAY1)))
    followed2 = set(volglijst_bsns(world.at(DAY2)))
    # vanaf is the previous batch's logical date and inclusive: changes of day 1 itself count too.
    changed = _changed_between(world, DAY1, DAY2)
    expected = (changed & followed2) | (followed2 - followed1)
    assert len(expected) >= 3 and any(c.kind == "move" and c.day > DAY1 for c in world.at(DAY2).changes)

    wijzigingen = two_days["day2"]["brp"]["wijzigingen"]
    assert wijzigingen.manifest["parts"][0]["request"]["params"] == {"vanaf": DAY1.isoformat()}
    [record] = list(iter_batch_records(wijzigingen))
    assert set(record["burgerservicenummers"]) == changed & followed1  # what the registry knew to report

    personen = two_days["day2"]["brp"]["personen"]
    groups = _posted_bsns(personen)
    assert all(1 <= len(g) <= MAX_BSNS_PER_REQUEST for g in groups)
    posted = [b for g in groups for b in g]
    assert sorted(posted) == sorted(expected) and len(posted) == len(set(posted))

    # Still a full snapshot: every followed person exactly once; the rest carried forward unchanged.
    landed = [p["burgerservicenummer"] for p in iter_batch_records(personen)]
    assert sorted(landed) == sorted(followed2)
    carried = [p for p in personen.manifest["parts"] if "carried_forward" in p]
    assert len(carried) == 1 and carried[0]["carried_forward"]["logical_date"] == DAY1.isoformat()
    assert carried[0]["record_count"] == len(followed2) - len(expected)
    extra = personen.manifest["extra"]
    assert extra["mode"] == "changes" and extra["update_api"]["vanaf"] == DAY1.isoformat()
    assert extra["update_api"]["volgindicaties"]["registered"] == len(followed2 - followed1)
    assert extra["update_api"]["volgindicaties"]["ended"] == len(followed1 - followed2)
    day1_records = {p["burgerservicenummer"]: p for p in iter_batch_records(two_days["day1"]["brp"]["personen"])}
    carried_records = json.loads((personen.path / carried[0]["file"]).read_bytes())["personen"]
    assert all(day1_records[p["burgerservicenummer"]] == p for p in carried_records)


def test_rerun_of_day2_asks_the_same_question(two_days, world, update_standin):
    update_standin.set_as_of(DAY2)
    with StandinServers(world, as_of=DAY2) as servers:
        [personen, wijzigingen] = _brp_connector(servers, update_standin).extract(
            ExtractWindow.for_day(DAY2, "run-day2-rerun"), landing_root()
        )
    first = two_days["day2"]["brp"]["personen"]
    assert _posted_bsns(personen) == _posted_bsns(first)
    assert personen.checksum == first.checksum  # same answers, same carried records, same bytes
    assert personen.manifest["extra"]["update_api"]["volgindicaties"] == {"registered": 0, "reactivated": 0, "ended": 0}
    assert wijzigingen.checksum == two_days["day2"]["brp"]["wijzigingen"].checksum


def test_removed_persons_end_their_volgindicatie(world, tmp_path):
    muni = world.at(DAY1)
    everyone = volglijst_bsns(muni)
    keep, drop = everyone[:-2], everyone[-2:]
    zone = tmp_path / "volglijst"
    zone.mkdir()
    (zone / f"volglijst_{DAY1:%Y%m%d}.csv").write_text("burgerservicenummer\n" + "\n".join(everyone) + "\n")
    (zone / f"volglijst_{DAY2:%Y%m%d}.csv").write_text("burgerservicenummer\n" + "\n".join(keep) + "\n")
    with start_brp_update_standin(world, as_of=DAY1, api_keys=["k"]) as standin, \
            StandinServers(world, as_of=DAY1) as servers:
        connector = _brp_connector(servers, standin, update_api_key="k", volglijst_dir=str(zone), batch_size=7)
        [day1] = connector.extract(ExtractWindow.for_day(DAY1, "r1"), tmp_path / "landing")
        assert all(len(g) <= 7 for g in _posted_bsns(day1))
        standin.set_as_of(DAY2)
        servers.set_as_of(DAY2)
        personen, _ = connector.extract(ExtractWindow.for_day(DAY2, "r2"), tmp_path / "landing")
        assert personen.manifest["extra"]["update_api"]["volgindicaties"]["ended"] == 2
        ended = {b: standin.store.get("k", b) for b in drop}
        assert all(v is not None and v.einddatum == DAY2 + timedelta(days=1) for v in ended.values())
        standin.set_as_of(DAY2 + timedelta(days=1))
        listed = requests.get(f"{standin.url}/volgindicaties", headers={"X-API-KEY": "k"}, timeout=TIMEOUT).json()
        assert sorted(v["burgerservicenummer"] for v in listed["volgindicaties"]) == keep
        # the snapshot no longer holds them, so silver closes their versions
        assert not set(drop) & {p["burgerservicenummer"] for p in iter_batch_records(personen)}


def test_switching_the_update_api_on_later_queries_everyone_once(world, tmp_path):
    zone = tmp_path / "volglijst"
    zone.mkdir()
    for day in (DAY1, DAY2):
        (zone / f"volglijst_{day:%Y%m%d}.csv").write_text(
            "burgerservicenummer\n" + "\n".join(volglijst_bsns(world.at(day))) + "\n")
    landing = tmp_path / "landing"
    with StandinServers(world, as_of=DAY1) as servers:
        plain = BrpPersonenConnector(
            {"base_url": servers.brp.url, "api_key": servers.brp.api_key, "volglijst_dir": str(zone)})
        [day1] = plain.extract(ExtractWindow.for_day(DAY1, "r1"), landing)
        assert day1.manifest["extra"]["mode"] == "full" and "update_api" not in day1.manifest["extra"]
        servers.set_as_of(DAY2)
        with start_brp_update_standin(world, as_of=DAY2, api_keys=["k"]) as standin:
            connector = _brp_connector(servers, standin, update_api_key="k", volglijst_dir=str(zone))
            personen, _ = connector.extract(ExtractWindow.for_day(DAY2, "r2"), landing)
            # volgindicaties that began today cannot vouch for the days since the previous batch
            assert sorted(b for g in _posted_bsns(personen) for b in g) == volglijst_bsns(world.at(DAY2))
            assert personen.manifest["extra"]["update_api"]["carried_count"] == 0
            standin.set_as_of(DAY2 + timedelta(days=1))
            servers.set_as_of(DAY2 + timedelta(days=1))
            day3, _ = connector.extract(ExtractWindow.for_day(DAY2 + timedelta(days=1), "r3"), landing)
            posted = {b for g in _posted_bsns(day3) for b in g}
            assert len(posted) < 20 and day3.manifest["extra"]["update_api"]["carried_count"] > 250


def test_update_api_key_is_a_secret_and_a_wrong_one_fails_without_manifest(world, update_standin, tmp_path):
    zone = tmp_path / "volglijst"
    zone.mkdir()
    (zone / f"volglijst_{DAY1:%Y%m%d}.csv").write_text("burgerservicenummer\n" + "\n".join(volglijst_bsns(world.at(DAY1))))
    with StandinServers(world, as_of=DAY1) as servers:
        connector = _brp_connector(servers, update_standin, update_api_key="not-a-key", volglijst_dir=str(zone))
        assert connector.public_config()["update_api_key"] == "***"
        with pytest.raises(SourceAuthError) as caught:
            connector.extract(ExtractWindow.for_day(DAY1, "r-auth"), tmp_path / "landing")
    assert caught.value.source == "brp-update" and caught.value.status == 403
    assert list((tmp_path / "landing").rglob(MANIFEST_NAME)) == []


# ----------------------------------------------------------------------- production auth on the Update API


class _Gateway:
    """The municipality's API gateway in front of one stand-in (a test double, pure ASGI).

    A production BRP sits behind a gateway that authenticates the afnemer by its PKIoverheid
    certificate (checked by the TLS server, see ``start_mtls_server``) or by an OAuth2 bearer
    token, and forwards the request as that afnemer. This one records the headers of every API
    request, checks the bearer token with the OAuth2 stand-in when it has one, and forwards the
    request with the afnemer key the stand-in's own gate expects (the registry stand-ins only know keys).
    """

    def __init__(self, app: Any, afnemer_key: str, oauth: OAuth2Server | None = None) -> None:
        self.app, self.afnemer_key, self.oauth = app, afnemer_key, oauth
        self.seen: list[tuple[str, str, dict[str, str]]] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_standin"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.seen.append((scope["method"], scope["path"], headers))
        if self.oauth is not None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or self.oauth.check(token.strip())[0] is None:
                refused = JSONResponse({"status": 401, "title": "Unauthorized"}, status_code=401,
                                       headers={"WWW-Authenticate": 'Bearer realm="gateway"'})
                await refused(scope, receive, send)
                return
        forwarded = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"authorization", b"x-api-key")]
        await self.app({**scope, "headers": [*forwarded, (b"x-api-key", self.afnemer_key.encode())]}, receive, send)


@dataclass
class _GatewayedBrp:
    personen_url: str
    update_url: str
    states: list[RegistryState]
    store: VolgindicatieStore
    gateways: dict[str, _Gateway] = field(default_factory=dict)

    def set_as_of(self, day: date) -> None:
        for state in self.states:
            state.set_as_of(day)


@contextmanager
def _brp_behind_gateways(world, as_of: date, *, pki=None, oauth: OAuth2Server | None = None) -> Iterator[_GatewayedBrp]:
    """BRP Personen and the BRP Update API stand-ins, each behind a :class:`_Gateway`; HTTPS with mTLS given ``pki``."""
    source = WorldSource(world)
    personen = RegistryState(name="brp", world=source, api_keys=frozenset({"gw-brp"}))
    update = RegistryState(name="brp_update", world=source, api_keys=frozenset({"gw-update"}))
    store = VolgindicatieStore()
    gateways = {"personen": _Gateway(create_brp_app(personen), "gw-brp", oauth),
                "update": _Gateway(create_brp_update_app(update, store=store), "gw-update", oauth)}
    running, urls = [], {}
    try:
        for name, gateway in gateways.items():
            if pki is not None:
                server = start_mtls_server(gateway, pki)
            else:
                server = ThreadedUvicorn(gateway, "127.0.0.1", 0, name=name)
                server.start()
            running.append(server)
            urls[name] = f"{'https' if pki is not None else 'http'}://127.0.0.1:{server.port}"
        brp = _GatewayedBrp(f"{urls['personen']}/haalcentraal/api/brp", f"{urls['update']}/haalcentraal/api/brpupdate",
                            [personen, update], store, gateways)
        brp.set_as_of(as_of)
        yield brp
    finally:
        for server in running:
            server.stop()


def _volglijst_zone(tmp_path: Path, bsns: list[str], *days: date) -> Path:
    zone = tmp_path / "volglijst"
    zone.mkdir()
    for day in days:
        (zone / f"volglijst_{day:%Y%m%d}.csv").write_text("burgerservicenummer\n" + "\n".join(bsns) + "\n")
    return zone


def test_update_api_calls_use_the_mtls_certificate_ca_bundle_and_retry_log(world, tmp_path):
    pki = generate_test_pki(tmp_path / "pki")
    bsns = volglijst_bsns(world.at(DAY1))[:30]  # enough for two POSTs; keeps the TLS round trips few
    zone = _volglijst_zone(tmp_path, bsns, DAY1, DAY2)
    waits: list[float] = []
    with _brp_behind_gateways(world, DAY1, pki=pki) as brp:
        config = {"base_url": brp.personen_url, "update_base_url": brp.update_url, "volglijst_dir": str(zone),
                  "auth": "mtls", "client_cert": str(pki.client_cert), "client_key": str(pki.client_key),
                  "ca_bundle": str(pki.ca_cert)}
        connector = BrpPersonenConnector(config, sleep=waits.append)
        [day1] = connector.extract(ExtractWindow.for_day(DAY1, "r-mtls-1"), tmp_path / "landing")
        assert day1.record_count == len(bsns)
        assert sorted(v.burgerservicenummer for v in brp.store.active("gw-update", DAY1)) == bsns
        # A 503 with Retry-After on the Update API waits through the connector's sleep and shows in its retry_log.
        brp.set_as_of(DAY2)
        brp.states[1].faults.fail_next(1, 503, retry_after_seconds=2)
        personen, wijzigingen = connector.extract(ExtractWindow.for_day(DAY2, "r-mtls-2"), tmp_path / "landing")
        assert personen.manifest["extra"]["mode"] == "changes" and wijzigingen.dataset == "wijzigingen"
        assert [(r.method, r.status, r.url) for r in connector.retry_log] == [("GET", 503, f"{brp.update_url}/volgindicaties")]
        assert waits == [2.0]
        update_calls = brp.gateways["update"].seen
        assert {(m, p.split("/brpupdate/", 1)[1].split("/")[0]) for m, p, _ in update_calls} == {
            ("GET", "volgindicaties"), ("PUT", "volgindicaties"), ("GET", "wijzigingen")}
        # The certificate is the credential: no API key and no bearer token travel with the Update API calls.
        assert not [h for *_, h in update_calls if "x-api-key" in h or "authorization" in h]
        # A certificate from another CA fails the handshake, named as the Update API, and is not retried.
        rogue = BrpPersonenConnector({**config, "client_cert": str(pki.untrusted_client_cert),
                                      "client_key": str(pki.untrusted_client_key)}, sleep=waits.append)
        with rogue.update_http() as update, pytest.raises(SourceTlsError) as caught:
            update.get("/volgindicaties")
        assert caught.value.source == "brp-update" and caught.value.attempts == 1 and waits == [2.0]


def test_update_api_calls_carry_the_oauth2_bearer_token_and_no_api_key(world, tmp_path):
    oauth = OAuth2Server(clients={"gemeente-demodam": "s3cr3t/+:"},
                         client_scopes={"gemeente-demodam": frozenset({"brp.personen", "brp.update"})})
    token_server = start_oauth2_server(oauth)
    bsns = volglijst_bsns(world.at(DAY1))[:25]
    try:
        with _brp_behind_gateways(world, DAY1, oauth=oauth) as brp:
            connector = BrpPersonenConnector({
                "base_url": brp.personen_url, "update_base_url": brp.update_url,
                "volglijst_dir": str(_volglijst_zone(tmp_path, bsns, DAY1)), "auth": "oauth2",
                "token_url": f"{oauth.base_url}{DEFAULT_TOKEN_PATH}", "client_id": "gemeente-demodam",
                "client_secret": "s3cr3t/+:", "scope": ["brp.personen", "brp.update"]})
            [day1] = connector.extract(ExtractWindow.for_day(DAY1, "r-oauth"), tmp_path / "landing")
            assert day1.record_count == len(bsns)
            assert sorted(v.burgerservicenummer for v in brp.store.active("gw-update", DAY1)) == bsns
            update_calls = brp.gateways["update"].seen
            assert len(update_calls) == 1 + len(bsns)  # GET /volgindicaties, then one PUT per followed person
            assert not [h for *_, h in update_calls if "x-api-key" in h]
            tokens = {h.get("authorization") for *_, h in update_calls}
            assert len(tokens) == 1 and next(iter(tokens)).startswith("Bearer ")
            # One token per API client (Personen, Update API), each reused for all of that client's calls.
            assert oauth.tokens_issued == 2 and connector.retry_log == []
            assert "s3cr3t/+:" not in json.dumps(day1.manifest)
    finally:
        token_server.stop()


# ----------------------------------------------------------------------- silver


# The GGM tables fed by BRP, BAG and the wijk- en buurtindeling (other sources' mappings are not extracted here).
SILVER_TABLES = ["WOONPLAATS", "OPENBARERUIMTE", "WIJK", "BUURT", "NUMMERAANDUIDING", "PAND", "VERBLIJFSOBJECT",
                 "NATUURLIJKPERSOON", "INGESCHREVENPERSOON"]


# Bronze and silver for two days: minutes on a busy 2-core machine, like tests/test_jobs_pipeline.py.
SPARK_TIMEOUT = pytest.mark.timeout(2400)


@pytest.fixture(scope="module")
def silver_two_days(spark, two_days):
    from jobs import bronze, silver

    reports = {}
    for day, run_id in ((DAY1, "run-day1"), (DAY2, "run-day2")):
        bronze.run(spark, day, run_id)
        reports[day] = silver.run(spark, day, run_id, tables=SILVER_TABLES)
    return reports


def _versions(spark, table: str, key_column: str) -> dict[int, list[tuple]]:
    rows = spark.read.format("delta").load(str(table_path("silver", table))).select(
        key_column, "DWH_DATUMTIJDGELDIGVANAF", "DWH_DATUMTIJDGELDIGTOTMET", "*"
    ).collect()
    versions: dict[int, list] = {}
    for row in rows:
        versions.setdefault(row[key_column], []).append(row)
    for rows_of_key in versions.values():
        rows_of_key.sort(key=lambda r: r["DWH_DATUMTIJDGELDIGVANAF"])
    return versions


@SPARK_TIMEOUT
def test_silver_versions_a_moved_person_on_day2_and_leaves_the_others_alone(spark, silver_two_days, world):
    from ggm_lakehouse.pseudonym import load_key, pseudonymise
    from jobs.silver import surrogate_key_value

    key = load_key()
    day2_moves = [c for c in world.at(DAY2).changes if DAY1 < c.day <= DAY2 and c.kind == "move"]
    assert day2_moves
    versions = _versions(spark, "INGESCHREVENPERSOON", "INGESCHREVENPERSOON_ID")
    start1, start2 = datetime.combine(DAY1, datetime.min.time()), datetime.combine(DAY2, datetime.min.time())
    for move in day2_moves:
        history = versions[surrogate_key_value("INGESCHREVENPERSOON", pseudonymise(move.subject, key))]
        assert [(v["DWH_DATUMTIJDGELDIGVANAF"], v["DWH_DATUMTIJDGELDIGTOTMET"]) for v in history] == [
            (start1, start2), (start2, None)]
        assert history[0]["HEEFT_ALS_ADRES_NUMMERAANDUIDING_ID"] == surrogate_key_value(
            "NUMMERAANDUIDING", move.detail["from_nummeraanduiding_id"])
        assert history[1]["HEEFT_ALS_ADRES_NUMMERAANDUIDING_ID"] == surrogate_key_value(
            "NUMMERAANDUIDING", move.detail["to_nummeraanduiding_id"])
        assert history[1]["DATUMBEGINGELDIGHEIDVERBLIJFPLAATS"] == move.day

    # Unchanged persons, including day 1's movers that were re-queried because vanaf is inclusive:
    # one version, opened on day 1, still open.
    changed = {b for c in world.at(DAY2).changes if DAY1 < c.day <= DAY2 for b in c.detail["affected_bsns"]}
    day1_movers = {c.subject for c in world.at(DAY1).changes_on(DAY1) if c.kind == "move"}
    unchanged = set(volglijst_bsns(world.at(DAY1))) & set(volglijst_bsns(world.at(DAY2))) - changed
    assert day1_movers <= unchanged
    for table, key_column in (("INGESCHREVENPERSOON", "INGESCHREVENPERSOON_ID"),
                              ("NATUURLIJKPERSOON", "NATUURLIJKPERSOON_ID")):
        table_versions = versions if table == "INGESCHREVENPERSOON" else _versions(spark, table, key_column)
        for bsn in unchanged:
            history = table_versions[surrogate_key_value(table, pseudonymise(bsn, key))]
            assert [(v["DWH_DATUMTIJDGELDIGVANAF"], v["DWH_DATUMTIJDGELDIGTOTMET"]) for v in history] == [
                (start1, None)], (table, "unchanged person got a new version")
    report = silver_two_days[DAY2]["tables"]["INGESCHREVENPERSOON"]
    assert 0 < report["new_versions"] <= len(changed)


BAG_TABLES = {
    "PAND": ("bag_panden", "$.pand.identificatie"),
    "VERBLIJFSOBJECT": ("bag_verblijfsobjecten", "$.verblijfsobject.identificatie"),
    "NUMMERAANDUIDING": ("bag_nummeraanduidingen", "$.nummeraanduiding.identificatie"),
    "OPENBARERUIMTE": ("bag_openbareruimten", "$.openbareRuimte.identificatie"),
    "WOONPLAATS": ("bag_woonplaatsen", "$.woonplaats.identificatie"),
}


def _bronze_contents(spark, table: str, id_path: str, day: date) -> dict[str, set[str]]:
    """Per identificatie: the hashes of its records of ``day`` without the HAL ``_links``.

    ``_links`` hold absolute URLs of the server (host and port), which differ between the two
    days here (the stand-ins get new ephemeral ports) and whenever a municipality moves to
    another endpoint; bronze's ``_record_hash`` covers them, so it is not the "unchanged"
    signal. The object's own content is.
    """
    import hashlib

    from pyspark.sql import functions as F

    rows = (
        spark.read.format("delta").load(str(table_path("bronze", table)))
        .where(F.col("_logical_date") == F.lit(day))
        .select(F.get_json_object("payload", id_path).alias("id"), "payload")
        .collect()
    )
    contents: dict[str, set[str]] = {}
    for row in rows:
        record = json.loads(row["payload"])
        record.pop("_links", None)
        canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        contents.setdefault(row["id"], set()).add(hashlib.sha256(canonical.encode("utf-8")).hexdigest())
    return contents


@SPARK_TIMEOUT
def test_unchanged_bag_objects_get_no_new_silver_version(spark, silver_two_days, world):
    from jobs.silver import surrogate_key_value

    start2 = datetime.combine(DAY2, datetime.min.time())
    for table, (bronze_table, id_path) in BAG_TABLES.items():
        before = _bronze_contents(spark, bronze_table, id_path, DAY1)
        after = _bronze_contents(spark, bronze_table, id_path, DAY2)
        unchanged = {i for i in before if i in after and before[i] == after[i]}
        assert len(unchanged) >= 0.9 * len(before), table  # a daily refresh of a quiet town
        versions = _versions(spark, table, f"{table}_ID")
        for identificatie in unchanged:
            history = versions[surrogate_key_value(table, identificatie)]
            assert len(history) == 1 and history[0]["DWH_DATUMTIJDGELDIGTOTMET"] is None, (table, identificatie)
        if table == "PAND":
            # ... and the other direction: exactly the new or changed panden got a version on day 2.
            changed = {i for i in after if before.get(i) != after[i]}
            assert changed, "a new building between the two days"
            opened_day2 = {k for k, h in versions.items() if h[-1]["DWH_DATUMTIJDGELDIGVANAF"] == start2}
            assert opened_day2 == {surrogate_key_value("PAND", i) for i in changed}


# ----------------------------------------------------------------------- BAG request quota


def _bag(servers, muni, **overrides) -> BagConnector:
    config = {"base_url": servers.bag.url, "api_key": servers.bag.api_key, "woonplaats_ids": sorted(muni.woonplaatsen)}
    return BagConnector({**config, **overrides})


def test_bag_quota_stops_before_the_request_that_would_exceed_it(world, tmp_path):
    muni = world.at(DAY1)
    with StandinServers(world, as_of=DAY1) as servers:
        connector = _bag(servers, muni, daily_request_quota=3)
        with pytest.raises(DailyQuotaExceededError) as caught:
            connector.extract(ExtractWindow.for_day(DAY1, "r-quota"), tmp_path)
    error = caught.value
    assert isinstance(error, SourceError) and not isinstance(error, (SourceAuthError, SourceClientError))
    assert error.retryable is True and 0 < error.retry_after <= 86_400
    assert error.used == 3 and error.quota == 3 and "retry after 00:00 UTC" in str(error)
    state = json.loads((tmp_path / QUOTA_STATE_RELATIVE).read_text())
    assert state["requests"] == 3 and state["day"] == datetime.now(timezone.utc).date().isoformat()
    # stopped cleanly: the crawl is all or nothing, so no dataset of the run has a manifest
    for dataset in BagConnector.datasets:
        assert find_complete_batches(tmp_path, "bag", dataset) == []


def test_bag_quota_is_counted_across_runs_and_resets_on_the_next_utc_day(world, tmp_path):
    muni = world.at(DAY1)
    today = datetime(2026, 6, 9, 22, 0, tzinfo=timezone.utc)
    with StandinServers(world, as_of=DAY1) as servers:
        first = _bag(servers, muni, daily_request_quota=10_000)
        first.utc_now = lambda: today
        results = first.extract(ExtractWindow.for_day(DAY1, "r-1"), tmp_path)
        used = sum(len(r.manifest["parts"]) for r in results)
        quota = DailyRequestQuota("bag", 10_000, tmp_path / QUOTA_STATE_RELATIVE, clock=lambda: today)
        assert quota.used() == used

        # Another run the same day with room for fewer requests than the last crawl took:
        # refused up front, before a single request.
        second = _bag(servers, muni, daily_request_quota=2 * used - 1)
        second.utc_now = lambda: today
        with pytest.raises(DailyQuotaExceededError) as caught:
            second.extract(ExtractWindow.for_day(DAY1, "r-2"), tmp_path)
        assert caught.value.used == used and caught.value.needed == used
        assert caught.value.retry_after == pytest.approx(2 * 3600)
        assert quota.used() == used

        # The next UTC day starts from zero.
        tomorrow = today + timedelta(hours=3)
        second.utc_now = lambda: tomorrow
        again = second.extract(ExtractWindow.for_day(DAY1, "r-3"), tmp_path)
        assert [r.dataset for r in again] == list(BagConnector.datasets)
        state = json.loads((tmp_path / QUOTA_STATE_RELATIVE).read_text())
        assert state == {"day": tomorrow.date().isoformat(), "requests": used, "quota": 2 * used - 1}


def test_bag_rate_limit_stays_at_50_per_second_with_a_quota(world, tmp_path):
    connector = BagConnector({"base_url": "http://127.0.0.1:9/x", "api_key": "k", "woonplaats_ids": ["2380"],
                              "daily_request_quota": 5})
    assert connector.config["requests_per_second"] == 50
    with connector.http() as http:
        assert http.rate_limiter is not None and http.rate_limiter.interval == pytest.approx(1 / 50)
