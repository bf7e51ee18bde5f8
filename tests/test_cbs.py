"""CBS StatLine: demo Kerncijfers tables, the OData v3/v4 stand-in over real HTTP, the connector
(full pull, unchanged-day skip, ODataApi cell cap, retries) and bronze + silver of CBS_KERNCIJFERS.

The stand-in runs with small operational limits (feed pages of 4 rows, an ODataApi cap of 60
cells, v4 pages of 25 observations) so the demo town of 3,000 inhabitants exercises paging
and the cap that CBS applies at 10,000 rows/cells.
"""
from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
import requests

from connectors.base import ExtractWindow
from connectors.cbs import CbsStatlineConnector, municipality_filter
from demo_gemeente.cbs import DemoKerncijfers, table_id_for_year
from demo_gemeente.generator import DemoWorld
from ggm_lakehouse.landing import find_complete_batches, iter_batch_records
from standins.cbs import CbsSettings, ODataError, parse_filter, start_cbs_standin

POPULATION = 3000
TABLE = table_id_for_year(2026)  # 99260NED
BEFORE_ACTUALISATION = date(2026, 9, 29)  # first release (1 July) is current: no household figures
ACTUALISED = date(2026, 10, 1)  # the actualisation adds household figures
SETTINGS = CbsSettings(feed_page_size=4, api_cell_limit=60, v4_page_size=25)
MUNICIPALITY_CODES = 11  # GM9999, 2 wijken, 8 buurten (NL00 is not part of the gemeente)


@pytest.fixture(scope="module")
def world():
    return DemoWorld(POPULATION, seed=42)


@pytest.fixture(scope="module")
def cbs(world):
    standin = start_cbs_standin(world, as_of=ACTUALISED, settings=SETTINGS)
    yield standin
    standin.stop()


@pytest.fixture
def at_day(cbs):
    """Move the stand-in's clock for one test and put it back afterwards."""
    original = cbs.as_of
    yield cbs.set_as_of
    cbs.set_as_of(original)


def _feed(cbs, entity_set: str) -> str:
    return f"{cbs.url}/ODataFeed/odata/{TABLE}/{entity_set}"


def _follow_v3(url: str, params: dict) -> list[dict]:
    """Follow odata.nextLink the way the cbsodata client does (re-sending $format on every link)."""
    pages = []
    while url:
        response = requests.get(url, params=params, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body)
        url = body.get("odata.nextLink")
        params = {"$format": "json"}
    return pages


# --------------------------------------------------------------------------- demo tables


def test_demo_tables_are_derived_from_the_population_and_published_on_schedule(world):
    kerncijfers = DemoKerncijfers(world)
    assert kerncijfers.table(TABLE, date(2026, 6, 30)) is None  # not yet published
    first = kerncijfers.table(TABLE, BEFORE_ACTUALISATION)
    later = kerncijfers.table(TABLE, ACTUALISED)
    assert first.modified_text == "2026-07-01T02:00:00" and later.modified_text == "2026-10-01T02:00:00"
    rows = {row["WijkenEnBuurten"].strip(): row for row in later.rows}
    base = world.at(date(2026, 1, 1))
    assert rows["GM9999"]["AantalInwoners_5"] == len(base.residents())
    buurten = [code for code in rows if code.startswith("BU")]
    assert sorted(buurten) == sorted(base.buurten)
    assert sum(rows[code]["AantalInwoners_5"] for code in buurten) == rows["GM9999"]["AantalInwoners_5"]
    assert all(len(row["WijkenEnBuurten"]) == 10 for row in later.rows)
    # Households arrive with the actualisation; before it they are missing.
    assert first.rows[1]["HuishoudensTotaal_28"] is None
    assert first.untyped_rows()[1]["HuishoudensTotaal_28"] == "."
    assert later.rows[1]["HuishoudensTotaal_28"] > 0
    assert kerncijfers.table(TABLE, ACTUALISED).rows == later.rows  # deterministic and cached


def test_filter_parser_is_strict():
    predicate = parse_filter("startswith(WijkenEnBuurten,'WK') and not (WijkenEnBuurten eq 'WK999901')",
                             ["WijkenEnBuurten"])
    assert predicate({"WijkenEnBuurten": "WK999902  "}) and not predicate({"WijkenEnBuurten": "WK999901  "})
    for bad, message in [("WijkenEnBuurten eq", "end of expression"), ("Foo eq 'x'", "unknown property"),
                         ("contains(WijkenEnBuurten,'x')", "not supported"), ("WijkenEnBuurten eq 'x' 'y'", "unexpected"),
                         ("startswith(WijkenEnBuurten)", "takes 2")]:
        with pytest.raises(ODataError, match=message):
            parse_filter(bad, ["WijkenEnBuurten"], version=3)
    assert parse_filter("contains(WijkenEnBuurten,'9999')", ["WijkenEnBuurten"], version=4)({"WijkenEnBuurten": "GM9999"})


# --------------------------------------------------------------------------- stand-in over HTTP


def test_v3_feed_pages_with_next_links_and_service_document(cbs):
    service = requests.get(f"{cbs.url}/ODataFeed/odata/{TABLE}/", params={"$format": "json"}, timeout=10).json()
    assert {"TableInfos", "DataProperties", "WijkenEnBuurten", "TypedDataSet", "UntypedDataSet"} <= {
        entry["name"] for entry in service["value"]}
    pages = _follow_v3(_feed(cbs, "TypedDataSet"), {"$format": "json", "$filter": municipality_filter("9999")})
    assert [len(p["value"]) for p in pages] == [4, 4, 3]
    codes = [row["WijkenEnBuurten"] for page in pages for row in page["value"]]
    assert codes[0] == "GM9999    " and len(codes) == MUNICIPALITY_CODES == len(set(codes))
    assert "@odata.nextLink" not in pages[0] and "odata.nextLink" in pages[0]
    info = requests.get(_feed(cbs, "TableInfos"), params={"$format": "json"}, timeout=10).json()["value"][0]
    assert info["Identifier"] == TABLE and info["Modified"] == "2026-10-01T02:00:00"


def test_v3_filter_select_top_skip(cbs):
    def rows(**params):
        response = requests.get(_feed(cbs, "TypedDataSet"), params={"$format": "json", **params}, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["value"]

    # eq ignores CBS's padding; substringof is the v3 spelling of "contains".
    assert [r["ID"] for r in rows(**{"$filter": "WijkenEnBuurten eq 'GM9999'"})] == [1]
    assert rows(**{"$filter": "WijkenEnBuurten eq 'GM9999    '"})[0]["ID"] == 1
    wijken = rows(**{"$filter": "substringof('WK9999',WijkenEnBuurten) or WijkenEnBuurten eq 'NL00'"})
    assert [r["WijkenEnBuurten"].strip() for r in wijken] == ["NL00", "WK999901", "WK999902"]
    both = rows(**{"$filter": "startswith(WijkenEnBuurten,'BU') and AantalInwoners_5 gt 400"})
    assert both and all(r["AantalInwoners_5"] > 400 and r["WijkenEnBuurten"].startswith("BU") for r in both)
    selected = rows(**{"$select": "WijkenEnBuurten,AantalInwoners_5", "$top": "2", "$skip": "1"})
    assert selected == [{"WijkenEnBuurten": "GM9999    ", "AantalInwoners_5": POPULATION},
                        {"WijkenEnBuurten": "WK999901  ", "AantalInwoners_5": selected[1]["AantalInwoners_5"]}]
    # $top larger than a feed page: the next link carries what is left of the window.
    pages = _follow_v3(_feed(cbs, "TypedDataSet"), {"$format": "json", "$top": "6", "$skip": "2"})
    assert [[r["ID"] for r in p["value"]] for p in pages] == [[2, 3, 4, 5], [6, 7]]
    assert "$top=2" in pages[0]["odata.nextLink"] and "$skip=6" in pages[0]["odata.nextLink"]
    for params, status in [({"$filter": "WijkenEnBuurten eq"}, 400), ({"$select": "Nope"}, 400),
                           ({"$top": "-1"}, 400), ({"$orderby": "ID"}, 400), ({"$format": "atom"}, 415)]:
        response = requests.get(_feed(cbs, "TypedDataSet"), params=params, timeout=10)
        assert response.status_code == status, (params, response.text)
        assert response.json()["odata.error"]["message"]["value"]
    assert requests.get(f"{cbs.url}/ODataFeed/odata/12345NED/TableInfos", timeout=10).status_code == 404


def test_untyped_data_set_shows_dot_where_typed_is_null(cbs, at_day):
    at_day(BEFORE_ACTUALISATION)
    params = {"$format": "json", "$filter": "WijkenEnBuurten eq 'GM9999'"}
    typed = requests.get(_feed(cbs, "TypedDataSet"), params=params, timeout=10).json()["value"][0]
    untyped = requests.get(_feed(cbs, "UntypedDataSet"), params=params, timeout=10).json()["value"][0]
    assert typed["HuishoudensTotaal_28"] is None and untyped["HuishoudensTotaal_28"] == "."
    assert typed["AantalInwoners_5"] == POPULATION and untyped["AantalInwoners_5"] == str(POPULATION)
    info = requests.get(_feed(cbs, "TableInfos"), params={"$format": "json"}, timeout=10).json()["value"][0]
    assert info["Modified"] == "2026-07-01T02:00:00" and info["ReasonDelivery"] == "Nieuw"


def test_odata_api_refuses_results_above_the_cell_limit(cbs):
    url = f"{cbs.url}/ODataApi/odata/{TABLE}/TypedDataSet"
    too_big = requests.get(url, params={"$format": "json"}, timeout=10)
    assert too_big.status_code == 500
    assert "60 cellen" in too_big.json()["odata.error"]["message"]["value"]
    # 3 rows × 19 properties = 57 cells fit; the API never pages.
    fits = requests.get(url, params={"$format": "json", "$top": "3"}, timeout=10)
    assert fits.status_code == 200 and len(fits.json()["value"]) == 3 and "odata.nextLink" not in fits.json()
    narrow = requests.get(url, params={"$format": "json", "$select": "WijkenEnBuurten,AantalInwoners_5"}, timeout=10)
    assert narrow.status_code == 200 and len(narrow.json()["value"]) == 12


def test_v4_observations_page_with_at_odata_next_link(cbs):
    base = f"{cbs.url}/CBS/{TABLE}"
    service = requests.get(base, timeout=10).json()
    assert {"Observations", "MeasureCodes", "WijkenEnBuurtenCodes", "Properties"} <= {e["name"] for e in service["value"]}
    properties = requests.get(f"{base}/Properties", timeout=10).json()
    assert properties["Modified"] == "2026-10-01T02:00:00"
    url, params, observations, pages = f"{base}/Observations", {"$filter": "contains(WijkenEnBuurten,'9999')"}, [], 0
    while url:
        body = requests.get(url, params=params, timeout=10).json()
        observations += body["value"]
        url, params, pages = body.get("@odata.nextLink"), None, pages + 1
    assert pages > 1 and len({o["Id"] for o in observations}) == len(observations)
    assert {o["WijkenEnBuurten"] for o in observations} >= {"GM9999", "WK999901", "BU99990101"}
    assert all(o["ValueAttribute"] == "None" and o["Value"] is not None for o in observations)
    counted = requests.get(f"{base}/Observations", params={"$count": "true", "$top": "0"}, timeout=10).json()
    assert counted["@odata.count"] == properties["ObservationCount"]
    bad = requests.get(f"{base}/Observations", params={"$filter": "substringof('GM',WijkenEnBuurten)"}, timeout=10)
    assert bad.status_code == 400 and "error" in bad.json()


# --------------------------------------------------------------------------- connector


def _connector(cbs, **config) -> CbsStatlineConnector:
    return CbsStatlineConnector({"base_url": cbs.url, "table_id": TABLE, "gemeentecode": "9999",
                                 "backoff_base": 0.01, "max_retry_after": 5, **config})


def _extract(cbs, connector, day: date, landing: Path, run_id: str | None = None):
    cbs.set_as_of(day)
    return {r.dataset: r for r in connector.extract(ExtractWindow.for_day(day, run_id), landing)}


def test_connector_pulls_once_then_skips_unchanged_days_until_republished(cbs, at_day, tmp_path):
    connector = _connector(cbs)
    first = _extract(cbs, connector, date(2026, 9, 28), tmp_path)
    assert set(first) == {"tableinfos", "kerncijfers"}
    data = first["kerncijfers"]
    assert data.record_count == MUNICIPALITY_CODES and len(data.manifest["parts"]) == 3  # feed pages of 4
    assert data.manifest["extra"]["modified"] == "2026-07-01T02:00:00"
    assert first["tableinfos"].manifest["extra"]["unchanged"] is False

    second = _extract(cbs, connector, BEFORE_ACTUALISATION, tmp_path)
    assert set(second) == {"tableinfos"}
    marker = second["tableinfos"].manifest["extra"]
    assert marker["unchanged"] is True and marker["data_batch"]["logical_date"] == "2026-09-28"
    assert second["tableinfos"].record_count == 1
    assert find_complete_batches(tmp_path, "cbs", "kerncijfers", BEFORE_ACTUALISATION) == []

    republished = _extract(cbs, connector, ACTUALISED, tmp_path)
    assert set(republished) == {"tableinfos", "kerncijfers"}
    records = list(iter_batch_records(republished["kerncijfers"]))
    gemeente = next(r for r in records if r["WijkenEnBuurten"].strip() == "GM9999")
    assert gemeente["HuishoudensTotaal_28"] != "." and republished["kerncijfers"].manifest["extra"]["modified"] == (
        "2026-10-01T02:00:00")


def test_connector_on_odata_api_keeps_every_request_under_the_cell_cap(cbs, at_day, tmp_path):
    connector = _connector(cbs, api_flavour="v3-api", max_cells_per_request=SETTINGS.api_cell_limit)
    results = _extract(cbs, connector, ACTUALISED, tmp_path)
    data = results["kerncijfers"]
    assert data.record_count == MUNICIPALITY_CODES
    for part in data.manifest["parts"]:
        assert part["record_count"] * 19 <= SETTINGS.api_cell_limit  # ID + dimension + 17 measures
        assert part["request"]["params"]["$top"] == 3
    assert len(data.manifest["parts"]) == 4


def test_connector_v4_lands_observations(cbs, at_day, tmp_path):
    results = _extract(cbs, _connector(cbs, api_flavour="v4"), ACTUALISED, tmp_path)
    observations = results["kerncijfers_observations"]
    assert len(observations.manifest["parts"]) > 1
    records = list(iter_batch_records(observations))
    assert {r["WijkenEnBuurten"] for r in records} == {"GM9999", "WK999901", "WK999902"} | {
        f"BU9999{w:02d}{b:02d}" for w in (1, 2) for b in (1, 2, 3, 4)}
    assert results["tableinfos"].manifest["extra"]["modified"] == "2026-10-01T02:00:00"
    again = _extract(cbs, _connector(cbs, api_flavour="v4"), date(2026, 10, 2), tmp_path)
    assert set(again) == {"tableinfos"}


def test_connector_retries_503_with_retry_after(cbs, at_day, tmp_path):
    cbs.faults.fail_next(2, status=503, retry_after_seconds=1)
    results = _extract(cbs, _connector(cbs), ACTUALISED, tmp_path)
    assert cbs.faults.pending() == 0
    assert results["kerncijfers"].record_count == MUNICIPALITY_CODES


# --------------------------------------------------------------------------- bronze + silver


def test_bronze_and_silver_reference_table(spark, data_root, cbs, at_day):
    from datetime import datetime, timezone

    from ggm_lakehouse.config import landing_root, table_path
    from jobs import bronze, silver
    from ggm_lakehouse.model.mappings import load_all

    # The first release: households are "." in the untyped rows and must arrive as null.
    _extract(cbs, _connector(cbs), BEFORE_ACTUALISATION, landing_root(), "cbs-1")
    report = bronze.run(spark, BEFORE_ACTUALISATION, "cbs-1")
    assert report["tables"]["cbs_kerncijfers"]["rows"] == MUNICIPALITY_CODES
    assert report["tables"]["cbs_tableinfos"]["rows"] == 1
    mapping = next(m for m in load_all() if m.target == "CBS_KERNCIJFERS")
    assert mapping.source_system == "cbs" and not mapping.ggm and mapping.on_missing_batch == "keep"
    ctx = silver.ConformContext(spark, BEFORE_ACTUALISATION, "cbs-1",
                                datetime.now(timezone.utc).replace(tzinfo=None))
    conformed, _ = silver.conform(ctx, mapping)
    ctx.release()
    assert conformed["conformed_rows"] == MUNICIPALITY_CODES and conformed["quarantined"] == {}

    table = spark.read.format("delta").load(str(table_path("silver", "CBS_KERNCIJFERS")))
    current = {r["GEBIEDSCODE"]: r for r in table.where("DWH_DATUMTIJDGELDIGTOTMET IS NULL").collect()}
    assert len(current) == MUNICIPALITY_CODES
    gemeente = current["GM9999"]
    assert gemeente["GEBIEDSSOORT"] == "Gemeente" and gemeente["AANTALINWONERS"] == POPULATION
    assert gemeente["GEMEENTENAAM"] == "Demodam" and gemeente["DWH_BRONSYSTEEM"] == "CBS_STATLINE"
    assert gemeente["AANTALHUISHOUDENS"] is None and gemeente["GEMIDDELDEHUISHOUDENSGROOTTE"] is None
    buurten = [r for code, r in current.items() if code.startswith("BU")]
    assert sum(r["AANTALINWONERS"] for r in buurten) == POPULATION
    assert current["BU99990101"]["BUURT_ID"] == silver.surrogate_key_value("BUURT", "BU99990101")
    assert current["WK999901"]["WIJK_ID"] == silver.surrogate_key_value("WIJK", "WK999901")
    assert current["WK999901"]["BUURT_ID"] is None

    # A day on which CBS did not republish lands no kerncijfers batch: the versions stay as they are.
    quiet_day = BEFORE_ACTUALISATION + timedelta(days=1)
    report = silver.run(spark, quiet_day, "cbs-quiet", source="cbs")
    assert report["tables"]["CBS_KERNCIJFERS"]["skipped"].startswith("no batch")
    assert table.where("DWH_DATUMTIJDGELDIGTOTMET IS NULL").count() == MUNICIPALITY_CODES
