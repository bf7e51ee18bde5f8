"""Bronze → silver → gold on a small generated municipality, extracted over real HTTP from the stand-ins.

Covers: bronze metadata and idempotency, GGM silver tables with SCD2 history, pseudonymised
BSNs, quarantine of bad records with file/record/rule, reruns that change nothing, the next
day's changes as new versions, and small-cell suppression in gold.
"""
from __future__ import annotations

import json
from datetime import date
from unittest.mock import ANY

import pytest

from connectors import CONNECTORS, ExtractWindow
from demo_gemeente.dropzone import write_dropzone
from demo_gemeente.generator import DemoWorld
from ggm_lakehouse.config import dropzone_root, landing_root, table_path
from ggm_lakehouse.lake import LakeTable
from ggm_lakehouse.landing import BatchWriter
from jobs import bronze, gold, silver
from ggm_lakehouse.pseudonym import load_key, pseudonymise
from jobs.silver import surrogate_key_value
from standins.server import StandinServers

DAY1 = date(2026, 3, 10)
POPULATION = 400
BAD_BSN = "123456789"  # fails the elfproef


def _extract(world, day: date, run_id: str) -> None:
    muni = world.at(day)
    write_dropzone(muni, dropzone_root())
    window = ExtractWindow.for_day(day, run_id)
    with StandinServers(world, as_of=day) as servers:
        CONNECTORS["brp"]({"base_url": servers.brp.url, "api_key": servers.brp.api_key}).extract(window, landing_root())
        CONNECTORS["bag"](
            {"base_url": servers.bag.url, "api_key": servers.bag.api_key, "woonplaats_ids": sorted(muni.woonplaatsen)}
        ).extract(window, landing_root())
        CONNECTORS["gebieden"]({}).extract(window, landing_root())
        # CBS kerncijfers: the denominators every area mart (inwoners_per_buurt too) waits for.
        CONNECTORS["cbs"]({"base_url": servers.cbs.url, "table_id": servers.cbs.kerncijfers.table_ids(day)[-1],
                           "gemeentecode": muni.gemeentecode, "api_flavour": "v3-feed"}).extract(window, landing_root())


def _land_bad_person(day: date, run_id: str) -> None:
    """A second BRP batch of the same run with one person whose BSN fails the elfproef."""
    window = ExtractWindow.for_day(day, run_id)
    person = {"burgerservicenummer": BAD_BSN, "naam": {"geslachtsnaam": "Fout"}, "geslacht": {"code": "V"}}
    body = json.dumps({"type": "RaadpleegMetBurgerservicenummer", "personen": [person]}).encode()
    with BatchWriter(landing_root(), "brp", "personen_correcties", window, endpoint="POST /personen", record_path="personen") as writer:
        writer.add_part(body, request={"method": "POST", "url": "test://bad-person"}, status=200)


def _silver(spark, table: str):
    return spark.read.format("delta").load(str(table_path("silver", table)))


def _delta_version(spark, layer: str, table: str) -> int:
    return LakeTable(layer, table).last_commit(spark)[0]


@pytest.fixture(scope="module")
def world():
    return DemoWorld(POPULATION, seed=11)


@pytest.fixture(scope="module")
def day1(spark, data_root, world):
    _extract(world, DAY1, "run-day1")
    reports = {
        "bronze": bronze.run(spark, DAY1, "run-day1"),
        "silver": silver.run(spark, DAY1, "run-day1"),
        "gold": gold.run(spark, DAY1),
    }
    return reports


def test_bronze_rows_carry_metadata_and_skip_known_batches(spark, day1):
    frame = spark.read.format("delta").load(str(table_path("bronze", "brp_personen")))
    row = frame.first()
    for column in ("_source", "_run_id", "_ingested_at", "_source_file", "_record_hash", "_logical_date"):
        assert row[column] is not None
    assert day1["bronze"]["tables"]["brp_personen"]["rows"] == frame.count() > 0
    again = bronze.run(spark, DAY1, "run-day1")
    skipped = again["tables"]["brp_personen"]
    assert (skipped["batches"], skipped["rows"], skipped["skipped_batches"]) == (0, 0, 1)
    assert skipped["skipped_because"] == ["already landed by this run"]
    assert frame.count() == spark.read.format("delta").load(str(table_path("bronze", "brp_personen"))).count()


def _land_probe(day: date, run_id: str, names: list[str]) -> None:
    """A batch of the test-only dataset ``brp_probe`` (no mapping reads it) with these names."""
    window = ExtractWindow.for_day(day, run_id)
    body = json.dumps({"personen": [{"naam": name} for name in names]}).encode()
    with BatchWriter(landing_root(), "brp", "probe", window, endpoint="POST /personen", record_path="personen") as writer:
        writer.add_part(body, request={"method": "POST", "url": "test://probe"}, status=200)


def test_a_rerun_whose_source_answers_as_before_lands_nothing_but_a_change_lands(spark, day1, monkeypatch):
    probe = LakeTable("bronze", "brp_probe")
    reports: list[dict] = [{}]
    queries = []
    day_batches = bronze._day_batches
    monkeypatch.setattr(bronze, "_day_batches", lambda *a: queries.append(a) or day_batches(*a))

    def land(run_id: str, names: list[str]) -> dict:
        _land_probe(DAY1, run_id, names)
        reports.append(bronze.run(spark, DAY1, run_id, previous=reports[-1]))
        return reports[-1]["tables"]["brp_probe"]

    assert land("probe-1", ["A"])["rows"] == 1
    version = _delta_version(spark, "bronze", "brp_probe")
    assert reports[-1]["tables"]["brp_probe"]["newest_batch"] == {"run_id": "probe-1", "checksum": ANY, "version": version}
    queries.clear()
    same = land("probe-2", ["A"])
    assert same["rows"] == 0 and same["skipped_because"] == ["same content as the newest batch of the day (run probe-1)"]
    assert queries == [], "the previous report and the table's unchanged version answer without a Spark query"
    assert _delta_version(spark, "bronze", "brp_probe") == version
    # Without the report (or with a table that moved on) bronze asks Spark, and still lands nothing.
    reports.append({})
    assert land("probe-3", ["A"])["skipped_because"] == ["same content as the newest batch of the day (run probe-1)"]
    assert len(queries) == 1
    assert land("probe-4", ["B"])["rows"] == 1
    # Back to the first answer: an older identical batch does not count, the newest must be A again.
    assert land("probe-5", ["A"])["rows"] == 1
    assert probe.read(spark).select("_run_id").distinct().count() == 3


def test_silver_tables_have_ggm_names_history_columns_and_no_clear_bsn(spark, day1, world):
    residents = world.at(DAY1).persons
    persons = _silver(spark, "NATUURLIJKPERSOON")
    assert {"NATUURLIJKPERSOON_ID", "BURGERSERVICENUMMER", "DWH_BRONSYSTEEM", "DWH_DATUMTIJDGELADEN",
            "DWH_DATUMTIJDGELDIGVANAF", "DWH_DATUMTIJDGELDIGTOTMET"} <= set(persons.columns)
    assert persons.count() == len(residents)
    stored = {r["BURGERSERVICENUMMER"] for r in persons.select("BURGERSERVICENUMMER").collect()}
    assert not stored & set(residents), "a clear BSN reached silver"
    assert all(len(p) == 64 for p in stored)
    # Deterministic surrogate keys, built on the keyed pseudonym: without the key, hashing every
    # possible BSN does not find a person's key.
    some_bsn = sorted(residents)[0]
    keys = {r["NATUURLIJKPERSOON_ID"] for r in persons.select("NATUURLIJKPERSOON_ID").collect()}
    assert surrogate_key_value("NATUURLIJKPERSOON", pseudonymise(some_bsn, load_key())) in keys
    assert surrogate_key_value("NATUURLIJKPERSOON", some_bsn) not in keys
    assert _silver(spark, "BUURT").count() == len(world.at(DAY1).buurten)
    assert _silver(spark, "NUMMERAANDUIDING").where("LIGT_IN_BUURT_ID IS NULL").count() == 0


def test_every_resident_links_to_an_address_in_silver(spark, day1):
    people = _silver(spark, "INGESCHREVENPERSOON")
    addresses = _silver(spark, "NUMMERAANDUIDING").select("NUMMERAANDUIDING_ID")
    orphans = people.join(addresses, people.HEEFT_ALS_ADRES_NUMMERAANDUIDING_ID == addresses.NUMMERAANDUIDING_ID, "left_anti")
    assert orphans.count() == 0


def test_bad_record_is_quarantined_with_file_record_and_rule(spark, day1):
    _land_bad_person(DAY1, "run-day1-fix")
    bronze.run(spark, DAY1, "run-day1-fix")
    # The correction batch is its own bronze table; conform it with the person mapping pointed at it.
    from dataclasses import replace

    from ggm_lakehouse.model.mappings import load_all

    mapping = next(m for m in load_all() if m.target == "NATUURLIJKPERSOON")
    ctx = silver.ConformContext(spark, DAY1, "run-day1-fix", day1_loaded_at())
    bronze_rows = silver.latest_batch(spark, "brp_personen_correcties", DAY1)
    conformed, rejects, _ = silver.conform_frame(ctx, replace(mapping, source="brp_personen_correcties"), bronze_rows)
    assert conformed.count() == 0
    reject = {r["rule"]: r for r in rejects.collect()}
    assert set(reject) == {"elfproef"}
    row = reject["elfproef"]
    assert "elfproef" in row["reason"] and row["source_file"].endswith("part-00001.json") and row["record_index"] == 0
    assert BAD_BSN in row["payload"] and row["target_table"] == "NATUURLIJKPERSOON"
    ctx.release()


def day1_loaded_at():
    from datetime import datetime

    return datetime(2026, 3, 11, 6, 0)


def test_rerun_of_the_same_day_changes_nothing(spark, day1):
    versions = {t: _delta_version(spark, "silver", t) for t in ("NATUURLIJKPERSOON", "NUMMERAANDUIDING", "BUURT")}
    gold_version = _delta_version(spark, "gold", "inwoners_per_buurt")
    again = silver.run(spark, DAY1, "run-day1-again")
    conformed = {t: r for t, r in again["tables"].items() if "skipped" not in r}
    assert set(conformed) >= set(versions)  # only sources without a batch that day (KvK) are skipped
    assert all(not r["written"] and r["new_versions"] == 0 and r["closed"] == 0 for r in conformed.values())
    assert gold.run(spark, DAY1)["tables"]["inwoners_per_buurt"]["written"] is False
    assert versions == {t: _delta_version(spark, "silver", t) for t in versions}
    assert gold_version == _delta_version(spark, "gold", "inwoners_per_buurt")


def _next_day_with_a_move(world, after: date) -> date:
    """The first day after ``after`` on which someone moves (small towns have quiet days)."""
    from datetime import timedelta

    day = after
    for _ in range(60):
        day += timedelta(days=1)
        if any(c.kind == "move" for c in world.at(day).changes_on(day)):
            return day
    raise AssertionError("no move within 60 days in the demo municipality")


def test_next_day_applies_changes_as_new_versions_on_that_date(spark, day1, world):
    DAY2 = _next_day_with_a_move(world, DAY1)
    changes = world.at(DAY2).changes_on(DAY2)
    moved = sorted({c.subject for c in changes if c.kind == "move"})
    _extract(world, DAY2, "run-day2")
    bronze.run(spark, DAY2, "run-day2")
    report = silver.run(spark, DAY2, "run-day2")
    gold.run(spark, DAY2)
    people = _silver(spark, "INGESCHREVENPERSOON")
    assert moved
    if moved:
        key = surrogate_key_value("INGESCHREVENPERSOON", pseudonymise(moved[0], load_key()))
        history = people.where(f"INGESCHREVENPERSOON_ID = {key}").orderBy("DWH_DATUMTIJDGELDIGVANAF").collect()
        assert len(history) == 2
        assert history[0]["DWH_DATUMTIJDGELDIGTOTMET"].date() == DAY2
        assert history[1]["DWH_DATUMTIJDGELDIGVANAF"].date() == DAY2
        assert history[1]["DWH_DATUMTIJDGELDIGTOTMET"] is None
        assert history[0]["HEEFT_ALS_ADRES_NUMMERAANDUIDING_ID"] != history[1]["HEEFT_ALS_ADRES_NUMMERAANDUIDING_ID"]
    births = [c for c in changes if c.kind == "birth"]
    assert report["tables"]["NATUURLIJKPERSOON"]["new_versions"] >= len(births)
    # One open version per object, always.
    open_rows = people.where("DWH_DATUMTIJDGELDIGTOTMET IS NULL")
    assert open_rows.count() == open_rows.select("INGESCHREVENPERSOON_ID").distinct().count()
    assert changes, "the demo municipality should change from one day to the next"


def test_gold_suppresses_small_cells(spark, day1):
    mart = spark.read.format("delta").load(str(table_path("gold", "inwoners_per_buurt"))).where(f"peildatum = DATE'{DAY1}'")
    rows = mart.collect()
    assert rows
    assert all((r["aantal_inwoners"] is None) == r["onderdrukt"] for r in rows)
    assert all(r["aantal_inwoners"] is None or r["aantal_inwoners"] >= 5 for r in rows)
    assert any(r["onderdrukt"] for r in rows)
    assert {"peildatum", "wijkcode", "buurtcode", "leeftijdsklasse", "huishoudtype"} <= set(mart.columns)


def test_spark_elfproef_agrees_with_python(spark):
    from pyspark.sql import functions as F

    from ggm_lakehouse.bsn import is_valid_bsn
    from jobs.silver import elfproef_expr

    values = ["999993653", "123456789", "000000000", "12345678", "abcdefghi", "111222333", "999990639", "999990638"]
    rows = spark.createDataFrame([(v,) for v in values], "v string").select("v", elfproef_expr(F.col("v")).alias("ok")).collect()
    assert {r["v"]: bool(r["ok"]) for r in rows} == {v: is_valid_bsn(v) for v in values}
