"""Two days of XAF re-exports through drop zone, bronze and silver: MUTATIE history and the taakveld link."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from connectors.base import ExtractWindow
from connectors.xaf import XafConnector
from ggm_lakehouse.config import dropzone_root, landing_root, table_path
from jobs import bronze, silver
from jobs.silver import surrogate_key_value
from tests.specs import SHARED, available, missing_reason
from tests.test_xaf import INVOICE, XSD_RELATIVE, auditfile, transaction, trline

# The extract validates against the published XSD; a module-level mark skips before the Spark session starts.
pytestmark = pytest.mark.skipif(not available(XSD_RELATIVE), reason=missing_reason(XSD_RELATIVE))

DAY1 = date(2026, 3, 9)
DAY2 = date(2026, 3, 10)
# The tables these tests look at (HOOFDREKENING, KOSTENPLAATS and SUBREKENING are plain snapshots of the
# same batches; conforming only what is asserted keeps the Spark time of this file down).
XAF_TABLES = ["TAAKVELD", "KP_KSTNPLTS_TKVLD", "MUTATIE", "FACTUUR", "FACTUURREGEL"]

PROVISIONAL = transaction("MEM-006", [trline(1, "4310", "250.00", "D", cost="KP57"), trline(2, "4990", "250.00", "C")])
# Day 2: the invoice is re-split over its cost lines (line 2 600 -> 500, line 3 400 -> 500), the provisional
# booking is gone, and a new booking arrived.
RESPLIT = (INVOICE.replace("<amnt>600.00</amnt>", "<amnt>500.00</amnt>")
           .replace("<vatAmnt>126.00</vatAmnt>", "<vatAmnt>105.00</vatAmnt>")
           .replace("<amnt>400.00</amnt>", "<amnt>500.00</amnt>")
           .replace("<vatAmnt>84.00</vatAmnt>", "<vatAmnt>105.00</vatAmnt>"))
NEW_BOOKING = transaction("MEM-007", [trline(1, "4341", "75.25", "D", cost="KP671"), trline(2, "1100", "75.25", "C")],
                          day="2026-03-10")
EXPORTS = {
    DAY1: auditfile({("INK", "P"): [INVOICE], ("MEM", "M"): [PROVISIONAL]}),
    DAY2: auditfile({("INK", "P"): [RESPLIT], ("MEM", "M"): [NEW_BOOKING]}),
}


def _silver(spark, table: str):
    return spark.read.format("delta").load(str(table_path("silver", table)))


def _mutatie_id(journal: str, nr: str, line: str) -> int:
    return surrogate_key_value("MUTATIE", "2026", journal, nr, line)


def _run_day(spark, day: date) -> dict:
    zone = dropzone_root() / "xaf"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / f"auditfile_2026_{day:%Y%m%d}.xaf").write_bytes(EXPORTS[day])
    run_id = f"run-{day.isoformat()}"
    connector = XafConnector({"xsd_path": str(SHARED / XSD_RELATIVE)})
    connector.extract(ExtractWindow.for_day(day, run_id), landing_root())
    assert connector.last_report["files_accepted"] == 1, connector.last_report
    bronze.run(spark, day, run_id, source="xaf")
    return silver.run(spark, day, run_id, tables=XAF_TABLES)


@pytest.fixture(scope="module")
def two_days(spark, data_root):
    return _run_day(spark, DAY1), _run_day(spark, DAY2)


def test_the_xaf_tables_are_conformed_both_days(two_days):
    first, second = two_days
    assert set(first["tables"]) == set(XAF_TABLES) and set(second["tables"]) == set(XAF_TABLES)


def test_changed_line_gets_a_new_version_and_removed_lines_are_closed(spark, two_days):
    rows = _silver(spark, "MUTATIE").collect()
    versions: dict[int, list] = {}
    for row in rows:
        versions.setdefault(row["MUTATIE_ID"], []).append(row)

    line2 = sorted(versions[_mutatie_id("INK", "INK-001", "2")], key=lambda r: r["DWH_DATUMTIJDGELDIGVANAF"])
    assert [r["BEDRAG"] for r in line2] == [Decimal("600.00"), Decimal("500.00")]
    assert line2[0]["DWH_DATUMTIJDGELDIGTOTMET"] is not None and line2[1]["DWH_DATUMTIJDGELDIGTOTMET"] is None
    assert line2[1]["DWH_DATUMTIJDGELDIGVANAF"].date() == DAY2

    unchanged = versions[_mutatie_id("INK", "INK-001", "1")]
    assert len(unchanged) == 1 and unchanged[0]["DWH_DATUMTIJDGELDIGTOTMET"] is None
    assert unchanged[0]["BEDRAG"] == Decimal("1210.00")
    assert unchanged[0]["VAN_HOOFDREKENING_ID"] == surrogate_key_value("HOOFDREKENING", "1600")
    assert unchanged[0]["NAAR_HOOFDREKENING_ID"] is None

    for line in ("1", "2"):
        (removed,) = versions[_mutatie_id("MEM", "MEM-006", line)]
        assert removed["DWH_DATUMTIJDGELDIGTOTMET"] is not None

    (new,) = versions[_mutatie_id("MEM", "MEM-007", "1")]
    # DATUM is the line's effDate.
    assert new["BEDRAG"] == Decimal("75.25") and new["DATUM"] == date(2026, 3, 2)
    assert new["DWH_DATUMTIJDGELDIGTOTMET"] is None and new["DWH_DATUMTIJDGELDIGVANAF"].date() == DAY2
    assert new["NAAR_HOOFDREKENING_ID"] == surrogate_key_value("HOOFDREKENING", "4341")
    assert dict(_silver(spark, "MUTATIE").dtypes)["BEDRAG"] == "decimal(18,2)"


def test_mutatie_reaches_its_taakveld_through_its_kostenplaats(spark, two_days):
    mutatie = _silver(spark, "MUTATIE").where("DWH_DATUMTIJDGELDIGTOTMET IS NULL")
    link = _silver(spark, "KP_KSTNPLTS_TKVLD").where("DWH_DATUMTIJDGELDIGTOTMET IS NULL")
    taakveld = _silver(spark, "TAAKVELD").where("DWH_DATUMTIJDGELDIGTOTMET IS NULL")
    joined = (mutatie.join(link, mutatie["HEEFT_BETREKKING_OP_KOSTENPLAATS_ID"] == link["KOSTENPLAATS_ID"])
              .join(taakveld, "TAAKVELD_ID")
              .select("MUTATIE_ID", "TAAKVELDCODE", "TAAKVELDOMSCHRIJVING", "HEEFT_BETREKKING_OP_KOSTENPLAATS_ID"))
    found = {r["MUTATIE_ID"]: (r["TAAKVELDCODE"], r["HEEFT_BETREKKING_OP_KOSTENPLAATS_ID"]) for r in joined.collect()}
    assert found[_mutatie_id("INK", "INK-001", "3")] == ("6.71", surrogate_key_value("KOSTENPLAATS", "KP671"))
    assert found[_mutatie_id("MEM", "MEM-007", "1")] == ("6.71", surrogate_key_value("KOSTENPLAATS", "KP671"))
    assert found[_mutatie_id("INK", "INK-001", "2")] == ("5.7", surrogate_key_value("KOSTENPLAATS", "KP57"))
    # Balance lines have no kostenplaats and so no taakveld.
    assert _mutatie_id("INK", "INK-001", "1") not in found
    assert taakveld.count() >= 50


def test_invoice_and_its_lines_link_to_the_mutaties(spark, two_days):
    (factuur,) = _silver(spark, "FACTUUR").where("DWH_DATUMTIJDGELDIGTOTMET IS NULL").collect()
    assert factuur["CODE"] == "F-77" and factuur["FACTUURBEDRAGEXCLUSIEFBTW"] == Decimal("1000.00")
    assert factuur["FACTUURBEDRAGBTW"] == Decimal("210.00") and factuur["DATUMFACTUUR"] == date(2026, 3, 2)
    assert factuur["CREDITEUR_LEVERANCIER_ID"] == surrogate_key_value("LEVERANCIER", "60011001")
    regels = _silver(spark, "FACTUURREGEL").where("DWH_DATUMTIJDGELDIGTOTMET IS NULL").collect()
    assert {r["LEIDT_TOT_MUTATIE_ID"]: r["BEDRAGEXBTW"] for r in regels} == {
        _mutatie_id("INK", "INK-001", "2"): Decimal("500.00"), _mutatie_id("INK", "INK-001", "3"): Decimal("500.00")}
    assert {r["HEEFT_FACTUUR_ID"] for r in regels} == {factuur["FACTUUR_ID"]}
