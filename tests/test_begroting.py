"""The begroting from the financial system's export to GGM silver and the budget mart next to the realisation.

Demodam's financial system writes its begroting as CSV after every raadsbesluit
(``demo_gemeente.begroting``). Three days:

* 2026-06-08, the platform's first day: the begroting 2026 as it stands (the primitieve begroting
  of 7 November 2025) arrives with the day's XAF ledger;
* 2026-06-09, no besluit: no begroting file, silver keeps its versions;
* 2026-07-02, the voorjaarsnota: the changed begroting arrives again, complete.

Checks: the contract accepts every row; BEGROTING and BEGROTINGREGEL hold exactly the exported
figures with GGM columns and keys that join the XAF's KOSTENPLAATS and HOOFDREKENING; a wijziging
versions the changed regels only; and ``financien_realisatie_begroting`` puts the begroting that
applied on each peildatum next to the ledger's realisation per taakveld and kostenplaats.
"""
from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

import pytest

from connectors.base import ExtractWindow
from connectors.begroting import BegrotingConnector
from connectors.xaf import XafConnector
from demo_gemeente.begroting import begroting_regels, write_begroting_deliveries
from demo_gemeente.financien import write_xaf_deliveries
from demo_gemeente.generator import DemoWorld
from ggm_lakehouse.landing import iter_batch_records

FIRST_DAY, QUIET_DAY, VOORJAARSNOTA = date(2026, 6, 8), date(2026, 6, 9), date(2026, 7, 2)
MART = "financien_realisatie_begroting"
TOTAAL = "Totaal"
XAF_TABLES = ["HOOFDREKENING", "KOSTENPLAATS", "KP_KSTNPLTS_TKVLD", "MUTATIE", "TAAKVELD"]


def _exported(path) -> list[dict]:
    """The rows of a begroting export as the financial system wrote them, amounts as Decimal."""
    rows = list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8")), delimiter=";"))
    for row in rows:
        row["bedrag"] = Decimal(row["Begroot bedrag"].replace(".", "").replace(",", "."))
    return rows


@pytest.fixture(scope="module")
def world() -> DemoWorld:
    return DemoWorld(300, seed=5)


@pytest.fixture(scope="module")
def pipeline(spark, data_root, world):
    """Run the three days through drop zone, bronze, silver (begroting; XAF on the mart's days) and gold."""
    from ggm_lakehouse.config import dropzone_root, landing_root
    from jobs import bronze, gold, silver

    days = {}
    for day in (FIRST_DAY, QUIET_DAY, VOORJAARSNOTA):
        muni = world.at(day)
        files = write_begroting_deliveries(muni, dropzone_root(), day, seed=5, first_delivery=day == FIRST_DAY)
        # Read before extraction: the connector moves accepted files to the zone's archive.
        exported = [_exported(p) for p in files]
        run_id = f"begroting-{day}"
        connector = BegrotingConnector({})
        landed = [record for batch in connector.extract(ExtractWindow.for_day(day, run_id), landing_root())
                  if batch.dataset == "begrotingsregels" for record in iter_batch_records(batch)]
        report = dict(connector.last_report)
        bronze.run(spark, day, run_id, source="begroting")
        silver_report = silver.run(spark, day, run_id, source="begroting")["tables"]
        gold_report = None
        if day != QUIET_DAY:
            write_xaf_deliveries(muni, dropzone_root(), day, seed=5)
            xaf = XafConnector({})
            xaf.extract(ExtractWindow.for_day(day, run_id), landing_root())
            assert xaf.last_report["files_accepted"] == 1, xaf.last_report
            bronze.run(spark, day, run_id, source="xaf")
            silver.run(spark, day, run_id, tables=XAF_TABLES)
            gold_report = gold.run(spark, day, marts=[MART])["tables"][MART]
        days[day] = {"files": files, "exported": exported, "landed": landed, "report": report, "silver": silver_report, "gold": gold_report}
    return days


def _silver(spark, table: str) -> list[dict]:
    from ggm_lakehouse.lake import LakeTable

    return [r.asDict() for r in LakeTable("silver", table).read(spark).collect()]


def _mart(spark, day: date) -> list[dict]:
    from ggm_lakehouse.lake import LakeTable

    return [r.asDict() for r in LakeTable("gold", MART).read(spark).where(f"peildatum = DATE'{day}'").collect()]


def test_the_begroting_arrives_on_the_first_day_and_after_each_besluit_only(pipeline):
    assert [p.name for p in pipeline[FIRST_DAY]["files"]] == ["begroting_20260608.csv"]
    assert pipeline[QUIET_DAY]["files"] == [] and pipeline[QUIET_DAY]["landed"] == []
    assert [p.name for p in pipeline[VOORJAARSNOTA]["files"]] == ["begroting_20260702.csv"]
    for day in (FIRST_DAY, VOORJAARSNOTA):
        exported = pipeline[day]["exported"][0]
        report = pipeline[day]["report"]
        assert report["files_rejected"] == [] and report["units_rejected"] == 0, report
        assert len(pipeline[day]["landed"]) == len(exported) > 20
        # Typed by the contract: Dutch amounts and dates become decimals and ISO dates.
        first = pipeline[day]["landed"][0]
        assert first["begrotingsjaar"] == "2026" and Decimal(str(first["bedrag"])) == exported[0]["bedrag"]
    assert pipeline[FIRST_DAY]["landed"][0]["datum_besluit"] == "2025-11-07"
    assert pipeline[VOORJAARSNOTA]["landed"][0]["datum_besluit"] == "2026-07-02"


def test_silver_holds_the_exported_begroting_in_ggm_columns(spark, pipeline, ggm_tables):
    from jobs.silver import surrogate_key_value

    for table in ("BEGROTING", "BEGROTINGREGEL"):
        rows = _silver(spark, table)
        known = set(ggm_tables[table]["columns"])
        assert {c for c in rows[0] if not c.startswith("DWH_")} <= known, table
        assert {r["DWH_BRONSYSTEEM"] for r in rows} == {"FINANCIEEL"}
    begroting = sorted(_silver(spark, "BEGROTING"), key=lambda r: r["DWH_DATUMTIJDGELDIGVANAF"])
    assert [r["NUMMER"] for r in begroting] == ["2026", "2026"]
    assert begroting[0]["OMSCHRIJVING"] == "Primitieve begroting, raadsbesluit van 07-11-2025"
    assert begroting[1]["OMSCHRIJVING"] == "1e begrotingswijziging (voorjaarsnota), raadsbesluit van 02-07-2026"
    assert begroting[0]["DWH_DATUMTIJDGELDIGTOTMET"].date() == VOORJAARSNOTA
    assert begroting[1]["BEGROTING_ID"] == surrogate_key_value("BEGROTING", "2026")

    regels = _silver(spark, "BEGROTINGREGEL")
    current = {r["BEGROTINGREGEL_ID"]: r for r in regels if r["DWH_DATUMTIJDGELDIGTOTMET"] is None}
    exported = pipeline[VOORJAARSNOTA]["exported"][0]
    assert len(current) == len(exported)
    for row in exported:
        regel = current[surrogate_key_value("BEGROTINGREGEL", "2026", row["Kostenplaats"], row["Grootboekrekening"])]
        assert regel["BEDRAG"] == row["bedrag"] and regel["BATENLASTEN"] == row["Baten/Lasten"].lower()
        assert regel["HEEFT_BEGROTING_ID"] == surrogate_key_value("BEGROTING", "2026")
        assert regel["BETREFT_KOSTENPLAATS_ID"] == surrogate_key_value("KOSTENPLAATS", row["Kostenplaats"])
    # Every budgeted kostenplaats and rekening is one the ledger knows: begroting and realisatie join.
    kostenplaatsen = {r["KOSTENPLAATS_ID"] for r in _silver(spark, "KOSTENPLAATS")}
    rekeningen = {r["HOOFDREKENING_ID"] for r in _silver(spark, "HOOFDREKENING")}
    assert {r["BETREFT_KOSTENPLAATS_ID"] for r in current.values()} <= kostenplaatsen
    assert {r["BETREFT_HOOFDREKENING_ID"] for r in current.values()} <= rekeningen


def test_a_wijziging_versions_the_changed_regels_and_a_quiet_day_changes_nothing(spark, pipeline, world):
    assert all(entry.get("skipped", "").startswith("no batch") for entry in pipeline[QUIET_DAY]["silver"].values())
    primitief = begroting_regels(world.at(FIRST_DAY), 2026, 0, seed=5)
    gewijzigd = begroting_regels(world.at(VOORJAARSNOTA), 2026, 1, seed=5)
    changed = {(c, a) for (c, a, _, x), (_, _, _, y) in zip(primitief, gewijzigd) if x != y}
    assert 0 < len(changed) < len(primitief)
    assert pipeline[VOORJAARSNOTA]["silver"]["BEGROTINGREGEL"]["new_versions"] == len(changed)
    versions: dict[int, int] = {}
    for regel in _silver(spark, "BEGROTINGREGEL"):
        versions[regel["BEGROTINGREGEL_ID"]] = versions.get(regel["BEGROTINGREGEL_ID"], 0) + 1
    assert sorted(versions.values()).count(2) == len(changed)


def test_the_budget_mart_puts_the_begroting_of_the_peildatum_next_to_the_realisation(spark, pipeline):
    for day, stage_file in ((FIRST_DAY, FIRST_DAY), (VOORJAARSNOTA, VOORJAARSNOTA)):
        assert pipeline[day]["gold"]["written"] is True, pipeline[day]["gold"]
        rows = _mart(spark, day)
        exported = pipeline[stage_file]["exported"][0]
        lasten = sum(r["bedrag"] for r in exported if r["Baten/Lasten"] == "Lasten")
        baten = sum(r["bedrag"] for r in exported if r["Baten/Lasten"] == "Baten")
        total = next(r for r in rows if r["taakveld"] == TOTAAL and r["kostenplaats"] == TOTAAL)
        assert (total["begroot_lasten"], total["begroot_baten"]) == (lasten, baten)
        assert total["begroot_saldo"] == baten - lasten
        # The ledger's year to date is next to it: salaries, purchases and care were booked by June.
        assert total["lasten"] > 0 and total["aantal_boekingsregels"] > 0
        # Wmo maatwerk: KP671 carries taakveld 6.71 in both the begroting and the ledger.
        wmo = [r for r in rows if r["taakveld"] and r["taakveld"].startswith("6.71") and r["kostenplaats"] != TOTAAL]
        assert len(wmo) == 1 and wmo[0]["kostenplaats"].startswith("KP671")
        budgeted = sum(r["bedrag"] for r in exported if r["Kostenplaats"] == "KP671")
        assert wmo[0]["begroot_lasten"] == budgeted and wmo[0]["lasten"] > 0
    # The voorjaarsnota's figures apply from its own day on; the first day keeps the primitieve begroting.
    first = next(r for r in _mart(spark, FIRST_DAY) if r["taakveld"] == TOTAAL and r["kostenplaats"] == TOTAAL)
    later = next(r for r in _mart(spark, VOORJAARSNOTA) if r["taakveld"] == TOTAAL and r["kostenplaats"] == TOTAAL)
    assert first["begroot_lasten"] != later["begroot_lasten"]
