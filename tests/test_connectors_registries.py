"""BRP and BAG connectors against the real stand-in registries over HTTP on 127.0.0.1.

The demo municipality (population 300, seed 7, as of 2026-03-01) is served by
``standins.server.StandinServers``; the connectors land batches in a temporary
landing zone and the tests compare what landed with the municipality itself.
"""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from connectors import BagConnector, BrpPersonenConnector, ExtractWindow, find_complete_batches
from connectors.bag import MAX_BBOX_AREA_M2, geometry_bbox, tiles
from connectors.errors import SourceAuthError, SourceServerError, SourceUnavailableError
from demo_gemeente.generator import build_municipality
from ggm_lakehouse.landing import MANIFEST_NAME, iter_batch_records
from standins.server import StandinServers

AS_OF = date(2026, 3, 1)
BAG_DATASETS = ("woonplaatsen", "openbareruimten", "nummeraanduidingen", "panden", "verblijfsobjecten")


@pytest.fixture(scope="module")
def municipality():
    return build_municipality(population=300, seed=7, as_of=AS_OF)


@pytest.fixture(scope="module")
def servers(municipality):
    with StandinServers(municipality, as_of=AS_OF) as running:
        yield running


@pytest.fixture(autouse=True)
def no_leftover_faults(servers):
    yield
    servers.brp.faults.clear()
    servers.bag.faults.clear()


@pytest.fixture
def volglijst_dir(tmp_path, municipality) -> Path:
    """The burgerzaken export: every person the municipality follows, unsorted and with a duplicate."""
    directory = tmp_path / "brp-volglijst"
    directory.mkdir()
    bsns = list(municipality.persons)
    rows = list(reversed(bsns)) + bsns[:3]
    (directory / f"volglijst_{AS_OF:%Y%m%d}.csv").write_text(
        "burgerservicenummer\n" + "".join(f"{b}\n" for b in rows), encoding="utf-8"
    )
    return directory


def brp(servers, volglijst_dir: Path, **overrides) -> BrpPersonenConnector:
    config = {"base_url": servers.brp.url, "api_key": servers.brp.api_key, "volglijst_dir": str(volglijst_dir)}
    return BrpPersonenConnector({**config, **overrides})


def bag(servers, municipality, **overrides) -> BagConnector:
    config = {
        "base_url": servers.bag.url,
        "api_key": servers.bag.api_key,
        "woonplaats_ids": sorted(municipality.woonplaatsen),
    }
    return BagConnector({**config, **overrides})


def window(run_id: str) -> ExtractWindow:
    return ExtractWindow.for_day(AS_OF, run_id)


# ------------------------------------------------------------------------- BRP


def test_brp_lands_every_followed_person_in_requests_of_at_most_20(servers, municipality, volglijst_dir, tmp_path):
    [result] = brp(servers, volglijst_dir).extract(window("scheduled__2026-03-01T00:00:00+00:00"), tmp_path)
    manifest = result.manifest
    requested = [part["request"]["body"]["burgerservicenummer"] for part in manifest["parts"]]
    assert all(1 <= len(group) <= 20 for group in requested)
    assert [b for group in requested for b in group] == sorted(municipality.persons)
    landed = [p["burgerservicenummer"] for p in iter_batch_records(result)]
    assert sorted(landed) == sorted(municipality.persons)  # deceased persons included
    assert manifest["record_count"] == len(municipality.persons)
    assert all(part["status"] == 200 for part in manifest["parts"])
    assert servers.brp.api_key not in (result.path / MANIFEST_NAME).read_text()
    # the part is the registry's answer byte for byte: it parses to the spec's response shape
    first = json.loads(result.part_paths[0].read_bytes())
    assert first["type"] == "RaadpleegMetBurgerservicenummer" and len(first["personen"]) == len(requested[0])


def test_brp_same_window_twice_gives_the_same_checksum(servers, volglijst_dir, tmp_path):
    connector = brp(servers, volglijst_dir)
    [first] = connector.extract(window("run-1"), tmp_path)
    [second] = connector.extract(window("run-2"), tmp_path)
    assert first.checksum == second.checksum
    assert [p.read_bytes() for p in first.part_paths] == [p.read_bytes() for p in second.part_paths]


def test_brp_requests_in_parallel_land_the_same_bytes_as_one_at_a_time(servers, volglijst_dir, tmp_path):
    [parallel] = brp(servers, volglijst_dir, max_parallel_requests=8).extract(window("run-parallel"), tmp_path)
    [serial] = brp(servers, volglijst_dir, max_parallel_requests=1).extract(window("run-serial"), tmp_path)
    assert len(parallel.part_paths) > 8  # more groups than requests in flight
    assert parallel.checksum == serial.checksum
    assert [p.read_bytes() for p in parallel.part_paths] == [p.read_bytes() for p in serial.part_paths]


def test_brp_recovers_from_injected_503(servers, municipality, volglijst_dir, tmp_path):
    servers.brp.faults.fail_next(2, status=503, retry_after_seconds=1)
    [result] = brp(servers, volglijst_dir).extract(window("run-503"), tmp_path)
    assert result.record_count == len(municipality.persons)
    assert servers.brp.faults.pending() == 0


def test_brp_wrong_key_is_an_auth_error_without_manifest(servers, volglijst_dir, tmp_path):
    with pytest.raises(SourceAuthError) as caught:
        brp(servers, volglijst_dir, api_key="not-the-key").extract(window("run-auth"), tmp_path)
    assert caught.value.source == "brp" and caught.value.status in (401, 403) and caught.value.attempts == 1
    assert find_complete_batches(tmp_path, "brp", "personen") == []


# ------------------------------------------------------------------------- BAG


def _identificaties(result, key: str) -> list[str]:
    return [record[key]["identificatie"] for record in iter_batch_records(result)]


def test_bag_crawl_lands_every_object_of_the_municipality(servers, municipality, tmp_path):
    results = {r.dataset: r for r in bag(servers, municipality).extract(window("run-bag"), tmp_path)}
    assert tuple(results) == BAG_DATASETS
    expected = {
        "woonplaatsen": ("woonplaats", municipality.woonplaatsen),
        "openbareruimten": ("openbareRuimte", municipality.openbare_ruimten),
        "nummeraanduidingen": ("nummeraanduiding", municipality.nummeraanduidingen),
        "panden": ("pand", municipality.panden),
        "verblijfsobjecten": ("verblijfsobject", municipality.verblijfsobjecten),
    }
    for dataset, (key, objects) in expected.items():
        ids = _identificaties(results[dataset], key)
        assert set(ids) == set(objects), dataset  # complete after de-duplication
        assert results[dataset].record_count == len(ids)
    # searches by parent identificatie cannot return an object twice (unlike bbox tiles)
    assert len(_identificaties(results["openbareruimten"], "openbareRuimte")) == len(municipality.openbare_ruimten)
    assert len(_identificaties(results["nummeraanduidingen"], "nummeraanduiding")) == len(municipality.nummeraanduidingen)

    manifests = {d: r.manifest for d, r in results.items()}
    assert manifests["woonplaatsen"]["record_path"] == ""
    assert manifests["panden"]["record_path"] == "_embedded.panden"
    assert manifests["verblijfsobjecten"]["content_type"] == "application/hal+json"
    for part in manifests["panden"]["parts"] + manifests["verblijfsobjecten"]["parts"]:
        request = part["request"]
        if request["params"]:  # first page of a tile; next pages carry the bbox in the link
            x1, y1, x2, y2 = (float(v) for v in request["params"]["bbox"].split(","))
            assert (x2 - x1) * (y2 - y1) <= MAX_BBOX_AREA_M2
            assert request["params"]["pageSize"] == 100
        assert request["headers"] == {"Accept-Crs": "epsg:28992", "Content-Crs": "epsg:28992"}
    assert servers.bag.api_key not in json.dumps(manifests)


def test_bag_follows_pages(servers, municipality, tmp_path):
    # pageSize 10 forces the HAL next-link walk on every dataset with more than 10 objects
    results = {r.dataset: r for r in bag(servers, municipality, page_size=10).extract(window("run-pages"), tmp_path)}
    nummeraanduidingen = results["nummeraanduidingen"]
    assert any("page=2" in part["request"]["url"] for part in nummeraanduidingen.manifest["parts"])
    assert set(_identificaties(nummeraanduidingen, "nummeraanduiding")) == set(municipality.nummeraanduidingen)
    assert set(_identificaties(results["verblijfsobjecten"], "verblijfsobject")) == set(municipality.verblijfsobjecten)


def test_bag_same_window_twice_gives_the_same_checksums(servers, municipality, tmp_path):
    connector = bag(servers, municipality)
    first = {r.dataset: r.checksum for r in connector.extract(window("run-a"), tmp_path)}
    second = {r.dataset: r.checksum for r in connector.extract(window("run-b"), tmp_path)}
    assert first == second


def test_bag_recovers_from_injected_503(servers, municipality, tmp_path):
    servers.bag.faults.fail_next(2, status=503, retry_after_seconds=1)
    results = bag(servers, municipality).extract(window("run-flaky"), tmp_path)
    assert [r.dataset for r in results] == list(BAG_DATASETS)
    assert results[0].record_count == len(municipality.woonplaatsen)
    assert servers.bag.faults.pending() == 0
    for dataset in BAG_DATASETS:
        assert len(find_complete_batches(tmp_path, "bag", dataset, AS_OF)) == 1


def test_bag_persistent_503_is_a_typed_error_and_lands_nothing(servers, municipality, tmp_path):
    servers.bag.faults.fail_next(5, status=503, retry_after_seconds=0)
    connector = bag(servers, municipality, max_attempts=3, backoff_base=0)
    with pytest.raises(SourceServerError) as caught:
        connector.extract(window("run-down"), tmp_path)
    error = caught.value
    assert error.source == "bag" and error.status == 503 and error.attempts == 3
    assert str(error).startswith(f"bag: GET {servers.bag.url}/woonplaatsen/")
    assert "failed with HTTP 503" in str(error) and str(error).endswith("after 3 attempts")
    for dataset in BAG_DATASETS:
        assert find_complete_batches(tmp_path, "bag", dataset) == []


def test_standin_down_gives_unavailable_error_and_no_manifest(municipality, volglijst_dir, tmp_path):
    down = StandinServers(municipality, as_of=AS_OF).start()
    brp_url, bag_url, brp_key, bag_key = down.brp.url, down.bag.url, down.brp.api_key, down.bag.api_key
    down.stop()
    fast = {"max_attempts": 2, "backoff_base": 0, "connect_timeout": 2}
    with pytest.raises(SourceUnavailableError) as caught:
        BrpPersonenConnector(
            {"base_url": brp_url, "api_key": brp_key, "volglijst_dir": str(volglijst_dir), **fast}
        ).extract(window("run-off"), tmp_path)
    assert caught.value.source == "brp" and caught.value.attempts == 2
    assert f"POST {brp_url}/personen" in str(caught.value)
    with pytest.raises(SourceUnavailableError):
        BagConnector(
            {"base_url": bag_url, "api_key": bag_key, "woonplaats_ids": sorted(municipality.woonplaatsen), **fast}
        ).extract(window("run-off"), tmp_path)
    assert list(tmp_path.rglob(MANIFEST_NAME)) == []


def test_tiles_cover_the_bbox_on_a_shared_grid_within_the_area_limit():
    west, east = (138960.0, 469720.0, 140250.0, 470280.0), (140250.0, 469720.0, 141040.3, 470280.0)
    west_tiles, east_tiles = tiles(west), tiles(east)
    for tile in west_tiles + east_tiles:
        assert (tile[2] - tile[0]) * (tile[3] - tile[1]) == MAX_BBOX_AREA_M2
    for bbox, grid in ((west, west_tiles), (east, east_tiles)):
        assert min(t[0] for t in grid) <= bbox[0] and max(t[2] for t in grid) >= bbox[2]
        assert min(t[1] for t in grid) <= bbox[1] and max(t[3] for t in grid) >= bbox[3]
    # neighbours on one grid: the tile around their shared border is the same request
    shared = {t for t in west_tiles if t[0] == 140000}
    assert len(shared) == 2 and set(west_tiles) & set(east_tiles) == shared
    assert geometry_bbox({"vlak": {"type": "Polygon", "coordinates": [[[1, 5], [3, 2], [2, 9], [1, 5]]]}}) == (1, 2, 3, 9)


def test_bag_connector_stays_under_the_registry_rate_limit_by_default(municipality):
    connector = BagConnector({"base_url": "http://127.0.0.1:9/x", "api_key": "k", "woonplaats_ids": ["2380"]})
    with connector.http() as http:
        assert http.rate_limiter is not None and http.rate_limiter.interval == pytest.approx(1 / 50)
