"""Departmental exports end to end: demo files → drop-zone connectors → bronze → GGM silver.

Two days of Demodam: on Monday 2026-03-09 the subsidy register (Excel), the VTH system
(Windows-1252 CSV) and the HR system (UTF-8-BOM CSV) deliver; on Tuesday only the VTH
system does. Silver must hold the GGM tables SUBSIDIEPROGRAMMA, SUBSIDIE,
SUBSIDIEBESCHIKKING, VTH_MELDING and MEDEWERKER with keys that join, Tuesday's VTH
changes as new SCD2 versions, the weekly registers unchanged (no file that day means
"keep"), and no BSN of the HR export anywhere.

Silver runs with a mappings folder holding only these five mapping files (copied from
ggm_mappings/), so the test conforms exactly the tables it checks.
"""
from __future__ import annotations

import shutil
from datetime import date, timedelta
from decimal import Decimal

import pytest

from connectors.base import ExtractWindow
from connectors.exports import EXPORT_CONNECTORS
from demo_gemeente import exports as demo_exports
from demo_gemeente.generator import DemoWorld
from demo_gemeente.kvk import KvkRegister
from ggm_lakehouse.config import project_root
from ggm_lakehouse.landing import iter_batch_records

DAY1 = date(2026, 3, 9)  # a Monday: the weekly subsidies export arrives
DAY2 = DAY1 + timedelta(days=1)
TABLES = ["SUBSIDIEPROGRAMMA", "SUBSIDIE", "SUBSIDIEBESCHIKKING", "VTH_MELDING", "MEDEWERKER"]


@pytest.fixture(scope="module")
def world() -> DemoWorld:
    return DemoWorld(400, seed=11)


@pytest.fixture(scope="module")
def mappings_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mappings")
    for table in TABLES:
        shutil.copy(project_root() / "ggm_mappings" / f"{table.lower()}.yaml", folder)
    return folder


@pytest.fixture(scope="module")
def pipeline(spark, data_root, world, mappings_dir):
    """Run both days through extract, bronze and silver; the landed records and silver reports per day."""
    from ggm_lakehouse.config import dropzone_root, landing_root
    from jobs import bronze, silver

    register = KvkRegister(world)
    landed: dict[date, dict[str, list[dict]]] = {}
    reports = {}
    for day in (DAY1, DAY2):
        muni = world.at(day)
        demo_exports.write_subsidies_deliveries(muni, dropzone_root(), day, kvk_register=register)
        demo_exports.write_vth_deliveries(muni, dropzone_root(), day)
        # HR delivers on Fridays; the first day gets an extra delivery so every table starts filled.
        demo_exports.write_hr_deliveries(muni, dropzone_root(), day, delivery_weekday=None if day == DAY1 else 4)
        run_id = f"exports-{day}"
        landed[day] = {}
        for name, cls in EXPORT_CONNECTORS.items():
            connector = cls({})
            for batch in connector.extract(ExtractWindow.for_day(day, run_id), landing_root()):
                landed[day][f"{name}_{batch.dataset}"] = list(iter_batch_records(batch))
            assert connector.last_report["files_rejected"] == [], connector.last_report
            assert connector.last_report["units_rejected"] == 0
        # Day 2 lands the VTH batch and the subsidies' empty batches (no file that day); HR is left out
        # of day 2 to keep the test short: its no-file day is the same path as the subsidies'.
        for source in (EXPORT_CONNECTORS if day == DAY1 else ("vth", "subsidies")):
            bronze.run(spark, day, run_id, source=source)
        tables = TABLES if day == DAY1 else ["SUBSIDIE", "VTH_MELDING"]
        reports[day] = silver.run(spark, day, run_id, tables=tables, mappings_dir=mappings_dir)["tables"]
    return landed, reports


def silver_rows(spark, table: str) -> list:
    from ggm_lakehouse.config import table_path

    return spark.read.format("delta").load(str(table_path("silver", table))).collect()


def current(rows: list) -> list:
    return [r for r in rows if r["DWH_DATUMTIJDGELDIGTOTMET"] is None]


def test_silver_tables_use_ggm_columns_and_nothing_is_quarantined(spark, pipeline, ggm_tables):
    _landed, reports = pipeline
    for day, report in reports.items():
        for table, entry in report.items():
            assert entry.get("quarantined", {}) == {}, (day, table, entry)
    for table in TABLES:
        rows = silver_rows(spark, table)
        assert rows, table
        ggm = ggm_tables[table]
        known = set(ggm["columns"]) | set(ggm.get("columns_union", []))
        data_columns = {c for c in rows[0].asDict() if not c.startswith("DWH_")}
        assert data_columns <= known, f"{table}: {sorted(data_columns - known)} not in GGM"


def test_subsidies_join_programma_ontvanger_behandelaar_and_beschikkingen(spark, pipeline):
    from jobs.silver import surrogate_key_value

    landed, _reports = pipeline
    records = {r["dossiernummer"]: r for r in landed[DAY1]["subsidies_subsidies"]}
    subsidies = {r["SUBSIDIE_ID"]: r for r in current(silver_rows(spark, "SUBSIDIE"))}
    assert len(subsidies) == len(records)
    granted = next(r for r in records.values() if r["verleend_bedrag"] and r["behandelaar"])
    row = subsidies[surrogate_key_value("SUBSIDIE", granted["dossiernummer"])]
    assert row["SUBSIDIEBEDRAG"] == Decimal(granted["verleend_bedrag"]).quantize(Decimal("0.01"))
    assert row["STATUS"] == granted["status"] and row["ONDERWERP"] == granted["onderwerp"]
    assert row["UITGAANDESUBSIDIE"] is True and row["DATUMSTART"].isoformat() == granted["periode_start"]
    assert row["GAAT_OVER_SUBSIDIEPROGRAMMA_ID"] == surrogate_key_value("SUBSIDIEPROGRAMMA", granted["programmacode"])
    assert row["AANVRAGER_RECHTSPERSOON_ID"] == surrogate_key_value("NIETNATUURLIJKPERSOON", granted["rsin"])
    assert row["BEHANDELAAR_MEDEWERKER_ID"] == surrogate_key_value("MEDEWERKER", granted["behandelaar"])
    assert row["VALT_BINNEN_SECTOR_ID"] == surrogate_key_value("SECTOR", granted["sector"])
    programma_ids = {r["SUBSIDIEPROGRAMMA_ID"] for r in current(silver_rows(spark, "SUBSIDIEPROGRAMMA"))}
    assert {r["GAAT_OVER_SUBSIDIEPROGRAMMA_ID"] for r in subsidies.values()} <= programma_ids
    medewerker_ids = {r["MEDEWERKER_ID"] for r in current(silver_rows(spark, "MEDEWERKER"))}
    assert {r["BEHANDELAAR_MEDEWERKER_ID"] for r in subsidies.values()} <= medewerker_ids
    vastgesteld = [r for r in records.values() if r["vastgesteld_bedrag"]]
    for record in vastgesteld:
        row = subsidies[surrogate_key_value("SUBSIDIE", record["dossiernummer"])]
        assert row["SUBSIDIEVASTSTELLINGBEDRAG"] == Decimal(record["vastgesteld_bedrag"]).quantize(Decimal("0.01"))

    beschikkingen = current(silver_rows(spark, "SUBSIDIEBESCHIKKING"))
    assert len(beschikkingen) == len(landed[DAY1]["subsidies_beschikkingen"])
    assert {b["BETREFT_SUBSIDIE_ID"] for b in beschikkingen} <= set(subsidies)
    verlening = next(b for b in beschikkingen if b["BESLUIT"] == "Verlening")
    assert subsidies[verlening["BETREFT_SUBSIDIE_ID"]]["SUBSIDIEBEDRAG"] == verlening["BESCHIKTBEDRAG"]


def test_vth_meldingen_point_at_bag_addresses_and_day2_changes_are_versions(spark, pipeline, world):
    from jobs.silver import surrogate_key_value

    landed, _reports = pipeline
    rows = silver_rows(spark, "VTH_MELDING")
    day2 = {r["meldingnummer"]: r for r in landed[DAY2]["vth_meldingen"]}
    day1 = {r["meldingnummer"]: r for r in landed[DAY1]["vth_meldingen"]}
    open_rows = {r["REFERENTIENUMMER"]: r for r in current(rows)}
    assert set(open_rows) == set(day2)
    muni = world.at(DAY2)
    for number, record in day2.items():
        row = open_rows[number]
        assert row["AANVRAAGOFMELDING_ID"] == surrogate_key_value("VTH_MELDING", number)
        if record["nummeraanduiding"]:
            assert row["LOCATIE"] == record["nummeraanduiding"] and row["LOCATIE"] in muni.nummeraanduidingen
        else:
            adres = f"{record['postcode'].replace(' ', '')} {record['huisnummer']}{record['huisletter'] or ''}"
            assert row["LOCATIE"].startswith(adres)
        assert row["GESEPONEERD"] == (record["status"] == "Geseponeerd")
    # A melding whose status moved on between the two exports has a closed and an open version.
    changed = [n for n in day1 if day1[n]["status"] != day2[n]["status"]]
    assert changed
    versions = sorted((r for r in rows if r["REFERENTIENUMMER"] == changed[0]),
                      key=lambda r: r["DWH_DATUMTIJDGELDIGVANAF"])
    assert [v["STATUS"] for v in versions] == [day1[changed[0]]["status"], day2[changed[0]]["status"]]
    assert versions[0]["DWH_DATUMTIJDGELDIGTOTMET"].date() == DAY2
    new_today = set(day2) - set(day1)
    assert new_today and all(open_rows[n]["DWH_DATUMTIJDGELDIGVANAF"].date() == DAY2 for n in new_today)


def test_weekly_registers_are_kept_on_a_day_without_a_delivery(spark, pipeline):
    landed, reports = pipeline
    # No file that day: the framework lands no records for these datasets (no batch, or an empty one).
    assert not landed[DAY2].get("subsidies_subsidies") and not landed[DAY2].get("hr_medewerkers")
    assert "skipped" in reports[DAY2]["SUBSIDIE"]
    for table, dataset in (("SUBSIDIE", "subsidies_subsidies"), ("SUBSIDIEPROGRAMMA", "subsidies_programmas")):
        rows = silver_rows(spark, table)
        assert len(current(rows)) == len(rows) == len(landed[DAY1][dataset])


def test_medewerkers_carry_no_personal_data_beyond_what_ggm_needs(spark, pipeline, world):
    from jobs.silver import surrogate_key_value

    landed, _reports = pipeline
    roster = demo_exports.medewerkers(world.at(DAY1).population, 42, "9999")
    by_number = {m.personeelsnummer: m for m in roster}
    rows = current(silver_rows(spark, "MEDEWERKER"))
    assert {r["MEDEWERKERIDENTIFICATIE"] for r in rows} == {m["personeelsnummer"] for m in landed[DAY1]["hr_medewerkers"]}
    personal = {m.bsn for m in roster} | {m.achternaam for m in roster} | {m.voornaam for m in roster}
    for row in rows:
        assert not {str(v) for v in row.asDict().values()} & personal
        medewerker = by_number[row["MEDEWERKERIDENTIFICATIE"]]
        assert row["FUNCTIE"] == medewerker.functie and row["DATUMINDIENST"] == medewerker.datum_in_dienst
        assert row["EXTERN"] == (medewerker.dienstverband == "Inhuur")
        expected = (surrogate_key_value("ORGANISATORISCHEEENHEID", medewerker.organisatorische_eenheid)
                    if medewerker.leidinggevende else None)
        assert row["IS_VERANTWOORDELIJK_VOOR_ORGANISATORISCHEEENHEID_ID"] == expected
    assert any(r["IS_VERANTWOORDELIJK_VOOR_ORGANISATORISCHEEENHEID_ID"] for r in rows)
