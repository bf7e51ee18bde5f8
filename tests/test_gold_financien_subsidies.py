"""Financiën and Subsidies gold marts on known inputs.

Hand-made silver, with the columns and surrogate keys the silver mappings write, for:

* ``financien_realisatie_taakveld``: booking lines (MUTATIE) of fiscal year 2026 on exploitatie and
  balance accounts, cost centres with one, two or no taakveld; peildatum 2026-03-15;
* ``financien_realisatie_begroting``: the same bookings next to a budget (BEGROTING, BEGROTINGREGEL),
  which is only built once those silver tables exist;
* ``subsidies_per_programma``: beschikkingen on subsidies of three programma's in four sectors;
  peildatum 2026-06-30.

Every expected value is worked out in the comments next to the data.
"""
from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal

import pytest

from tests.gold_support import write_silver_table as write_plain_silver_table

FIN_PEILDATUM = date(2026, 3, 15)
SUB_PEILDATUM = date(2026, 6, 30)
FIN_MART, BEGROTING_MART, SUB_MART = "financien_realisatie_taakveld", "financien_realisatie_begroting", "subsidies_per_programma"
TOTAAL, ONBEKEND = "Totaal", "onbekend"


def key(table: str, *parts: str) -> int:
    """The surrogate key silver gives the object (jobs.silver: sha256 of table and business key)."""
    from jobs.silver import surrogate_key_value

    return surrogate_key_value(table, *parts)


def schema_columns(schema: str) -> list[tuple[str, str]]:
    """(column, type) pairs of a Spark DDL schema; a comma inside DECIMAL(18,2) separates nothing."""
    return [tuple(part.strip().split(None, 1)) for part in re.split(r",(?![^()]*\))", schema)]


def write_silver_table(spark, name: str, rows: list[dict], schema: str) -> None:
    """``tests.gold_support.write_silver_table`` for schemas with DECIMAL(18,2) money columns.

    gold_support reads the column names by splitting the schema on every comma, which the comma in
    DECIMAL(18,2) breaks: the money columns are written as exact decimal text and then cast in place.
    """
    from pyspark.sql import functions as F

    from ggm_lakehouse.lake import LakeTable

    money_columns = [c for c, kind in schema_columns(schema) if kind.upper() == "DECIMAL(18,2)"]
    as_text = [{k: (str(v) if k in money_columns and v is not None else v) for k, v in row.items()} for row in rows]
    write_plain_silver_table(spark, name, as_text, schema.replace("DECIMAL(18,2)", "STRING"))
    if money_columns:
        table = LakeTable("silver", name)
        frame = table.read(spark)
        for column in money_columns:
            frame = frame.withColumn(column, F.col(column).cast("decimal(18,2)"))
        frame = frame.localCheckpoint()  # materialise before overwriting the table it was read from
        table.save(spark, frame.write.format("delta").mode("overwrite").option("overwriteSchema", "true"))


# --------------------------------------------------------------------------------------------
# Financiën
# --------------------------------------------------------------------------------------------

FIN_SCHEMAS = {
    "HOOFDREKENING": "HOOFDREKENING_ID BIGINT, NUMMER STRING, NAAM STRING, PIAHOOFDCATEGORIECODE STRING, SUBCODE STRING",
    "KOSTENPLAATS": "KOSTENPLAATS_ID BIGINT, NAAM STRING, OMSCHRIJVING STRING",
    "TAAKVELD": "TAAKVELD_ID BIGINT, TAAKVELDCODE STRING, TAAKVELDOMSCHRIJVING STRING",
    "KP_KSTNPLTS_TKVLD": "KP_KSTNPLTS_TKVLD_ID BIGINT, KOSTENPLAATS_ID BIGINT, TAAKVELD_ID BIGINT",
    "MUTATIE": ("MUTATIE_ID BIGINT, BEDRAG DECIMAL(18,2), DATUM DATE, HEEFT_BETREKKING_OP_KOSTENPLAATS_ID BIGINT, "
                "NAAR_HOOFDREKENING_ID BIGINT, VAN_HOOFDREKENING_ID BIGINT"),
}
BEGROTING_SCHEMAS = {
    "BEGROTING": "BEGROTING_ID BIGINT, NAAM STRING, NUMMER STRING",
    "BEGROTINGREGEL": ("BEGROTINGREGEL_ID BIGINT, BEDRAG DECIMAL(18,2), BATENLASTEN STRING, BETREFT_KOSTENPLAATS_ID BIGINT, "
                       "BETREFT_HOOFDREKENING_ID BIGINT, HEEFT_BEGROTING_ID BIGINT"),
}

# rekening -> (omschrijving, XAF accTp, leadCode)
ACCOUNTS = {
    "1100": ("Bank", "B", "A.LM"),
    "1600": ("Crediteuren", "B", "P.KSV"),  # a passiva rubriek 'P.' on a balance account: never baten/lasten
    "4341": ("Wmo zorg in natura", "P", "L.3.4"),
    "8310": ("Leges burgerzaken", "P", "B.3.8"),
    "8110": ("OZB woningen", "P", "B.2.1"),
    "4990": ("Nog te verdelen kosten", "P", None),  # no rubriek: debit balance, so lasten
    "8990": ("Nog te verdelen opbrengsten", "P", None),  # no rubriek: credit balance, so baten
    "0001": ("Memo", "M", None),
}
# kostenplaats -> (omschrijving, taakvelden)
COST_CENTRES = {
    "KP671": ("Wmo maatwerkdienstverlening 18+", ["6.71"]),
    "KP02": ("Burgerzaken", ["0.2"]),
    "KP99": ("Gemengd", ["0.1", "0.4"]),  # two taakvelden: not assignable to one
    "KP50": ("Zonder taakveld", []),
}
TAAKVELDEN = {"6.71": "Wmo maatwerkdienstverlening 18+", "0.2": "Burgerzaken", "0.1": "Bestuur", "0.4": "Overhead"}
WMO = "6.71 Wmo maatwerkdienstverlening 18+"
BURGERZAKEN = "0.2 Burgerzaken"
KP671, KP02, KP99, KP50 = (f"{kp} {COST_CENTRES[kp][0]}" for kp in ("KP671", "KP02", "KP99", "KP50"))

# (boekstuk, regel, datum, rekening, D/C, bedrag, kostenplaats, valid until (None = open))
LINES = [
    ("001", "1", date(2026, 1, 10), "4341", "D", "1000.00", "KP671", None),  # Wmo 2026-01: lasten 1000
    ("001", "2", date(2026, 1, 10), "1600", "C", "1000.00", None, None),     # balance: not counted
    ("002", "1", date(2026, 1, 20), "4341", "D", "500.00", "KP671", None),   # Wmo 2026-01: lasten 1500 in all
    ("003", "1", date(2026, 2, 5), "4341", "C", "200.00", "KP671", None),    # credit on lasten: Wmo 2026-02 lasten -200
    # A provisional booking deleted again on 2026-02-03 (its version closed): not counted.
    ("004", "1", date(2026, 2, 1), "4341", "D", "5000.00", "KP671", datetime(2026, 2, 3)),
    ("005", "1", date(2026, 2, 10), "8310", "C", "300.00", "KP02", None),    # leges: Burgerzaken 2026-02 baten 300
    ("005", "2", date(2026, 2, 10), "1100", "D", "300.00", None, None),
    ("006", "1", date(2026, 2, 11), "8310", "D", "50.00", "KP02", None),     # refund: Burgerzaken 2026-02 baten 250
    ("007", "1", date(2026, 3, 1), "8110", "C", "10000.00", None, None),     # OZB without kostenplaats: onbekend
    ("008", "1", date(2026, 3, 2), "4990", "D", "40.00", "KP99", None),      # two taakvelden: onbekend, lasten 40
    ("009", "1", date(2026, 3, 3), "8990", "C", "25.00", "KP50", None),      # no taakveld: onbekend, baten 25
    ("010", "1", date(2026, 3, 15), "4341", "D", "100.00", "KP671", None),   # on the peildatum: counted
    ("010", "2", date(2026, 3, 15), "0001", "D", "123.00", "KP671", None),   # memo account: not counted
    ("011", "1", date(2026, 3, 16), "4341", "D", "999.00", "KP671", None),   # after the peildatum: not counted
]
# Booked in the previous fiscal year (its audit file is still in silver): not counted.
LINES_2025 = [("900", "1", date(2025, 12, 31), "4341", "D", "777.00", "KP671", None)]


def write_financien(spark) -> None:
    """The chart of accounts, cost centres, taakvelden and booking lines above, as silver holds them."""
    write_silver_table(spark, "HOOFDREKENING", [
        {"HOOFDREKENING_ID": key("HOOFDREKENING", nr), "NUMMER": nr, "NAAM": naam, "PIAHOOFDCATEGORIECODE": soort,
         "SUBCODE": rubriek}
        for nr, (naam, soort, rubriek) in ACCOUNTS.items()
    ], FIN_SCHEMAS["HOOFDREKENING"])
    write_silver_table(spark, "KOSTENPLAATS", [
        {"KOSTENPLAATS_ID": key("KOSTENPLAATS", kp), "NAAM": kp, "OMSCHRIJVING": desc}
        for kp, (desc, _) in COST_CENTRES.items()
    ], FIN_SCHEMAS["KOSTENPLAATS"])
    write_silver_table(spark, "TAAKVELD", [
        {"TAAKVELD_ID": key("TAAKVELD", code), "TAAKVELDCODE": code, "TAAKVELDOMSCHRIJVING": naam}
        for code, naam in TAAKVELDEN.items()
    ], FIN_SCHEMAS["TAAKVELD"])
    write_silver_table(spark, "KP_KSTNPLTS_TKVLD", [
        {"KP_KSTNPLTS_TKVLD_ID": key("KP_KSTNPLTS_TKVLD", kp, tv), "KOSTENPLAATS_ID": key("KOSTENPLAATS", kp),
         "TAAKVELD_ID": key("TAAKVELD", tv)}
        for kp, (_, taakvelden) in COST_CENTRES.items() for tv in taakvelden
    ], FIN_SCHEMAS["KP_KSTNPLTS_TKVLD"])
    rows = []
    for boekjaar, lines in (("2026", LINES), ("2025", LINES_2025)):
        for boekstuk, regel, datum, rekening, side, bedrag, kostenplaats, until in lines:
            rows.append({
                "MUTATIE_ID": key("MUTATIE", boekjaar, "MEM", boekstuk, regel), "BEDRAG": Decimal(bedrag), "DATUM": datum,
                "HEEFT_BETREKKING_OP_KOSTENPLAATS_ID": key("KOSTENPLAATS", kostenplaats) if kostenplaats else None,
                "NAAR_HOOFDREKENING_ID": key("HOOFDREKENING", rekening) if side == "D" else None,
                "VAN_HOOFDREKENING_ID": key("HOOFDREKENING", rekening) if side == "C" else None,
                "DWH_DATUMTIJDGELDIGTOTMET": until,
            })
    write_silver_table(spark, "MUTATIE", rows, FIN_SCHEMAS["MUTATIE"])


def write_begroting(spark) -> None:
    """Budget 2026 (and a 2025 budget that must not count): lasten and baten per kostenplaats."""
    write_silver_table(spark, "BEGROTING", [
        {"BEGROTING_ID": key("BEGROTING", "2026"), "NAAM": "Begroting 2026", "NUMMER": "2026"},
        {"BEGROTING_ID": key("BEGROTING", "2025"), "NAAM": "Begroting 2025", "NUMMER": "2025"},
    ], BEGROTING_SCHEMAS["BEGROTING"])
    regels = [
        ("2026", "KP671", "4341", "Lasten", "12000.00"),
        ("2026", "KP02", "8310", "Baten", "4000.00"),
        ("2026", "KP02", "4341", "Lasten", "1000.00"),
        ("2026", None, "8110", "Baten", "50000.00"),  # OZB: no kostenplaats, so taakveld onbekend
        ("2025", "KP671", "4341", "Lasten", "99999.00"),
    ]
    write_silver_table(spark, "BEGROTINGREGEL", [
        {"BEGROTINGREGEL_ID": key("BEGROTINGREGEL", jaar, str(i)), "BEDRAG": Decimal(bedrag), "BATENLASTEN": soort,
         "BETREFT_KOSTENPLAATS_ID": key("KOSTENPLAATS", kp) if kp else None,
         "BETREFT_HOOFDREKENING_ID": key("HOOFDREKENING", rekening), "HEEFT_BEGROTING_ID": key("BEGROTING", jaar)}
        for i, (jaar, kp, rekening, soort, bedrag) in enumerate(regels)
    ], BEGROTING_SCHEMAS["BEGROTINGREGEL"])


# --------------------------------------------------------------------------------------------
# Subsidies
# --------------------------------------------------------------------------------------------

SUB_SCHEMAS = {
    "SUBSIDIEPROGRAMMA": "SUBSIDIEPROGRAMMA_ID BIGINT, NAAM STRING",
    "SECTOR": "SECTOR_ID BIGINT, NAAM STRING",
    "SUBSIDIE": ("SUBSIDIE_ID BIGINT, SUBSIDIEBEDRAG DECIMAL(18,2), SUBSIDIEVASTSTELLINGBEDRAG DECIMAL(18,2), "
                 "DATUMSUBSIDIEVASTSTELLING DATE, GAAT_OVER_SUBSIDIEPROGRAMMA_ID BIGINT, VALT_BINNEN_SECTOR_ID BIGINT, "
                 "AANVRAGER_RECHTSPERSOON_ID BIGINT"),
    "SUBSIDIEBESCHIKKING": ("SUBSIDIEBESCHIKKING_ID BIGINT, BESLUIT STRING, BESCHIKTBEDRAG DECIMAL(18,2), ONTVANGEN DATE, "
                            "BETREFT_SUBSIDIE_ID BIGINT"),
}
PROGRAMMAS = {"SP-2025-01": "Cultuurparticipatie 2025", "SP-2026-01": "Cultuur en sport 2026",
              "SP-2026-02": "Welzijn 2026", "SP-2026-03": "Onderwijs 2026"}
C25, CS26, W26, O26 = (PROGRAMMAS[c] for c in ("SP-2025-01", "SP-2026-01", "SP-2026-02", "SP-2026-03"))

# (dossier, programma, sector, RSIN or None, [(besluit, bekendgemaakt, beschikt bedrag)], vastgesteld (date, bedrag))
SUBSIDIES = [
    # 2025, Cultuurparticipatie 2025 / Cultuur: five organisations, verleend 1,000 each = 5,000.
    *[(f"SUB-2025-0000{i}", "SP-2025-01", "Cultuur", f"80000000{i}",
       [("Verlening", date(2025, 3, i), "1000.00")], None) for i in range(1, 6)],
    # 2026, Cultuur en sport 2026 / Cultuur: six organisations, verleend 100..600 = 2,100; two vastgesteld
    # (90 + 180 = 270).
    ("SUB-2026-00001", "SP-2026-01", "Cultuur", "810000001",
     [("Verlening", date(2026, 1, 2), "100.00"), ("Vaststelling", date(2026, 5, 1), "90.00")], None),
    ("SUB-2026-00002", "SP-2026-01", "Cultuur", "810000002",
     [("Verlening", date(2026, 1, 5), "200.00"), ("Vaststelling", date(2026, 5, 2), "180.00")], None),
    *[(f"SUB-2026-0000{i}", "SP-2026-01", "Cultuur", f"81000000{i}",
       [("Verlening", date(2026, 2, i), f"{i}00.00")], None) for i in range(3, 7)],
    # Cultuur en sport 2026 / Sport: six organisations; one beschikking without an amount (the subsidie's
    # SUBSIDIEBEDRAG 450 counts), one afgewezen; a vaststelling made known after the peildatum does not count.
    ("SUB-2026-00011", "SP-2026-01", "Sport", "820000011", [("Verlening", date(2026, 3, 1), "500.00")], None),
    ("SUB-2026-00012", "SP-2026-01", "Sport", "820000012", [("Verlening", date(2026, 3, 2), None)], None),
    ("SUB-2026-00013", "SP-2026-01", "Sport", "820000013", [("Afwijzing", date(2026, 3, 3), None)], None),
    ("SUB-2026-00014", "SP-2026-01", "Sport", "820000014", [("Verlening", date(2026, 3, 4), "700.00")], None),
    ("SUB-2026-00015", "SP-2026-01", "Sport", "820000015",
     [("Verlening", date(2026, 3, 5), "300.00"), ("Vaststelling", date(2026, 7, 2), "250.00")], None),
    ("SUB-2026-00016", "SP-2026-01", "Sport", "820000016", [("Verlening", date(2026, 3, 6), "50.00")], None),
    # Welzijn 2026 / Welzijn: two subsidies to one organisation and three without RSIN (each an ontvanger of its
    # own) = 4 ontvangers: below 5, hidden. Verleend 1000 + 1000 + 250 + 250 + 300 = 2,800. One vaststelling has
    # no bekendmaking date: it counts in the year of the subsidie's vaststelling (2026), with its bedrag 280.
    ("SUB-2026-00021", "SP-2026-02", "Welzijn", "830000021", [("Verlening", date(2026, 4, 1), "1000.00")], None),
    ("SUB-2026-00022", "SP-2026-02", "Welzijn", "830000021", [("Verlening", date(2026, 4, 2), "1000.00")], None),
    ("SUB-2026-00023", "SP-2026-02", "Welzijn", None, [("Verlening", date(2026, 4, 3), "250.00")], None),
    ("SUB-2026-00024", "SP-2026-02", "Welzijn", None, [("Verlening", date(2026, 4, 4), "250.00")], None),
    ("SUB-2026-00025", "SP-2026-02", "Welzijn", None,
     [("Verlening", date(2026, 1, 4), "300.00"), ("Vaststelling", None, None)], (date(2026, 6, 1), "280.00")),
    # Onderwijs 2026 / Onderwijs: five organisations, 100 each = 500. The smallest published programma: hidden
    # (secondary) so that the 2026 total minus the published programma's does not reveal Welzijn.
    *[(f"SUB-2026-0003{i}", "SP-2026-03", "Onderwijs", f"84000003{i}",
       [("Verlening", date(2026, 5, i), "100.00")], None) for i in range(1, 6)],
]
SUBSIDIEBEDRAG = {"SUB-2026-00012": "450.00"}


def write_subsidies(spark) -> None:
    """Programma's, sectors, subsidies and beschikkingen above, as silver holds them."""
    write_silver_table(spark, "SUBSIDIEPROGRAMMA", [
        {"SUBSIDIEPROGRAMMA_ID": key("SUBSIDIEPROGRAMMA", code), "NAAM": naam} for code, naam in PROGRAMMAS.items()
    ], SUB_SCHEMAS["SUBSIDIEPROGRAMMA"])
    write_silver_table(spark, "SECTOR", [
        {"SECTOR_ID": key("SECTOR", naam), "NAAM": naam} for naam in ("Cultuur", "Sport", "Welzijn", "Onderwijs", "Zorg")
    ], SUB_SCHEMAS["SECTOR"])
    subsidies, beschikkingen = [], []
    for dossier, programma, sector, rsin, besluiten, vastgesteld in SUBSIDIES:
        verleend = next((b for s, _, b in besluiten if s == "Verlening"), None)
        subsidies.append({
            "SUBSIDIE_ID": key("SUBSIDIE", dossier),
            "SUBSIDIEBEDRAG": Decimal(SUBSIDIEBEDRAG.get(dossier) or verleend) if (verleend or dossier in SUBSIDIEBEDRAG) else None,
            "SUBSIDIEVASTSTELLINGBEDRAG": Decimal(vastgesteld[1]) if vastgesteld else None,
            "DATUMSUBSIDIEVASTSTELLING": vastgesteld[0] if vastgesteld else None,
            "GAAT_OVER_SUBSIDIEPROGRAMMA_ID": key("SUBSIDIEPROGRAMMA", programma),
            "VALT_BINNEN_SECTOR_ID": key("SECTOR", sector),
            "AANVRAGER_RECHTSPERSOON_ID": key("NIETNATUURLIJKPERSOON", rsin) if rsin else None,
        })
        for besluit, bekendgemaakt, bedrag in besluiten:
            nummer = f"BS-{dossier[4:]}-{besluit[0]}"
            beschikkingen.append({
                "SUBSIDIEBESCHIKKING_ID": key("SUBSIDIEBESCHIKKING", nummer), "BESLUIT": besluit,
                "BESCHIKTBEDRAG": Decimal(bedrag) if bedrag else None, "ONTVANGEN": bekendgemaakt,
                "BETREFT_SUBSIDIE_ID": key("SUBSIDIE", dossier),
            })
    write_silver_table(spark, "SUBSIDIE", subsidies, SUB_SCHEMAS["SUBSIDIE"])
    write_silver_table(spark, "SUBSIDIEBESCHIKKING", beschikkingen, SUB_SCHEMAS["SUBSIDIEBESCHIKKING"])


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(spark, data_root):
    """Financiën and subsidies silver, both marts built through the engine's run as the gold DAGs do.

    The budget tables are not written yet, so the begroting mart must wait for them.
    """
    from ggm_lakehouse.lake import LakeTable
    from jobs import gold

    patcher = pytest.MonkeyPatch()
    patcher.delenv("GGM_SUPPRESSION_THRESHOLD", raising=False)  # the default threshold of 5
    write_financien(spark)
    write_subsidies(spark)
    reports = {
        FIN_PEILDATUM: gold.run(spark, FIN_PEILDATUM, marts=[FIN_MART, BEGROTING_MART]),
        SUB_PEILDATUM: gold.run(spark, SUB_PEILDATUM, marts=[SUB_MART]),
    }
    rows = {
        mart: [r.asDict() for r in LakeTable("gold", mart).read(spark).where(f"peildatum = DATE'{day}'").collect()]
        for mart, day in ((FIN_MART, FIN_PEILDATUM), (SUB_MART, SUB_PEILDATUM))
    }
    yield {"reports": reports, "rows": rows}
    patcher.undo()


def cell(rows, **dims):
    """The one row with these dimension values."""
    found = [r for r in rows if all(r[k] == v for k, v in dims.items())]
    assert len(found) == 1, f"{len(found)} rows for {dims}"
    return found[0]


def money(value: str) -> Decimal:
    return Decimal(value)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_definitions_load_in_their_domeinen():
    from jobs import gold

    definitions = gold.load_mart_definitions()
    assert definitions[FIN_MART].domein == definitions[BEGROTING_MART].domein == "financien"
    assert definitions[SUB_MART].domein == "subsidies"
    assert all(definitions[m].gebied is None for m in (FIN_MART, BEGROTING_MART, SUB_MART))
    # Bookings are no personal data; subsidie ontvangers can be natural persons.
    assert definitions[FIN_MART].personen is None and definitions[BEGROTING_MART].personen is None
    assert definitions[SUB_MART].personen == "aantal_ontvangers"
    assert {"BEGROTINGREGEL", "BEGROTING"} <= set(gold.MART_INPUTS[BEGROTING_MART])
    assert "BEGROTINGREGEL" not in gold.MART_INPUTS[FIN_MART]
    assert set(gold.MART_INPUTS[SUB_MART]) == {"SUBSIDIEBESCHIKKING", "SUBSIDIE", "SUBSIDIEPROGRAMMA", "SECTOR"}


def test_known_silver_columns_are_those_the_mappings_produce():
    """The hand-made silver uses the columns (and types) the silver mappings write, so the marts run on real silver."""
    from ggm_lakehouse.model.mappings import load_mapping, mappings_dir

    for table, schema in {**FIN_SCHEMAS, **SUB_SCHEMAS, **BEGROTING_SCHEMAS}.items():
        mapping = load_mapping(mappings_dir() / f"{table.lower()}.yaml")
        produced = {mapping.surrogate_key: "bigint", **{c.name: ("bigint" if c.key_of else c.type) for c in mapping.columns}}
        for column, kind in schema_columns(schema):
            assert column in produced, f"{table}.{column} is not a silver column"
            assert produced[column] == kind.lower(), f"{table}.{column}: {produced[column]} vs {kind}"


def test_budget_mart_waits_for_a_budget_delivery(built):
    report = built["reports"][FIN_PEILDATUM]["tables"]
    assert report[BEGROTING_MART]["written"] is False
    assert set(report[BEGROTING_MART]["waiting_for"]) == {"BEGROTING", "BEGROTINGREGEL"}
    assert report[FIN_MART]["written"] is True and report[FIN_MART]["suppressed_cells"] == 0


def test_realisation_per_taakveld_kostenplaats_and_month(built):
    rows = built["rows"][FIN_MART]
    measures = ("lasten", "baten", "saldo", "aantal_boekingsregels")

    def figures(taakveld, kostenplaats, maand):
        row = cell(rows, taakveld=taakveld, kostenplaats=kostenplaats, maand=maand)
        return tuple(row[m] for m in measures)

    # Debit on a lasten account is a last; a credit on it corrects the lasten; the deleted booking is gone.
    assert figures(WMO, KP671, "2026-01") == (money("1500.00"), money("0.00"), money("-1500.00"), 2)
    assert figures(WMO, KP671, "2026-02") == (money("-200.00"), money("0.00"), money("200.00"), 1)
    # Only the line on the peildatum; the line after it and the memo line do not count.
    assert figures(WMO, KP671, "2026-03") == (money("100.00"), money("0.00"), money("-100.00"), 1)
    # Credit on a baten account is a bate; the debit refund corrects it.
    assert figures(BURGERZAKEN, KP02, "2026-02") == (money("0.00"), money("250.00"), money("250.00"), 2)
    # No kostenplaats, two taakvelden or none: taakveld onbekend, nothing counted twice.
    assert figures(ONBEKEND, ONBEKEND, "2026-03") == (money("0.00"), money("10000.00"), money("10000.00"), 1)
    assert figures(ONBEKEND, KP99, "2026-03") == (money("40.00"), money("0.00"), money("-40.00"), 1)
    assert figures(ONBEKEND, KP50, "2026-03") == (money("0.00"), money("25.00"), money("25.00"), 1)
    assert figures(ONBEKEND, TOTAAL, "2026-03") == (money("40.00"), money("10025.00"), money("9985.00"), 3)
    assert figures(TOTAAL, KP671, "2026-03") == figures(WMO, KP671, "2026-03")
    # The month's total: balance accounts are left out (2026-01 has only the two Wmo lines).
    assert figures(TOTAAL, TOTAAL, "2026-01") == (money("1500.00"), money("0.00"), money("-1500.00"), 2)
    assert figures(TOTAAL, TOTAAL, "2026-03") == (money("140.00"), money("10025.00"), money("9885.00"), 4)


def test_realisation_covers_the_fiscal_year_up_to_the_peildatum(built):
    rows = built["rows"][FIN_MART]
    assert {r["maand"] for r in rows} == {"2026-01", "2026-02", "2026-03"}
    assert {r["taakveld"] for r in rows} == {WMO, BURGERZAKEN, ONBEKEND, TOTAAL}
    assert not any(r["onderdrukt"] for r in rows) and all(r["onderdrukking"] is None for r in rows)
    # The year to date adds up over the months: lasten 1500 - 200 + 100 + 40, baten 250 + 10025.
    totals = [r for r in rows if r["taakveld"] == TOTAAL and r["kostenplaats"] == TOTAAL]
    assert sum(r["lasten"] for r in totals) == money("1440.00")
    assert sum(r["baten"] for r in totals) == money("10275.00")


def test_budget_next_to_realisation_once_the_budget_exists(spark, built):
    from jobs import gold

    write_begroting(spark)
    definition = gold.load_mart_definitions()[BEGROTING_MART]
    rows = [r.asDict() for r in gold.build_mart(spark, definition, FIN_PEILDATUM).collect()]
    measures = ("begroot_lasten", "begroot_baten", "begroot_saldo", "lasten", "baten", "saldo", "aantal_boekingsregels")

    def figures(taakveld, kostenplaats):
        row = cell(rows, taakveld=taakveld, kostenplaats=kostenplaats)
        return tuple(row[m] for m in measures)

    # Wmo: budget 12,000 lasten (the 2025 budget is not counted); realised 1500 - 200 + 100 = 1,400.
    assert figures(WMO, KP671) == tuple(money(v) for v in ("12000.00", "0.00", "-12000.00", "1400.00", "0.00", "-1400.00")) + (4,)
    assert figures(BURGERZAKEN, KP02) == tuple(money(v) for v in ("1000.00", "4000.00", "3000.00", "0.00", "250.00", "250.00")) + (2,)
    assert figures(ONBEKEND, ONBEKEND) == tuple(money(v) for v in ("0.00", "50000.00", "50000.00", "0.00", "10000.00", "10000.00")) + (1,)
    assert figures(TOTAAL, TOTAAL) == tuple(money(v) for v in ("13000.00", "54000.00", "41000.00", "1440.00", "10275.00", "8835.00")) + (9,)
    assert not any(r["onderdrukt"] for r in rows)


def test_subsidies_per_programma_sector_and_year(built):
    rows = built["rows"][SUB_MART]
    measures = ("verleend_bedrag", "vastgesteld_bedrag", "aantal_verleend", "aantal_vastgesteld", "aantal_afgewezen",
                "aantal_ontvangers")

    def figures(jaar, programma, sector):
        row = cell(rows, jaar=jaar, programma=programma, sector=sector)
        return tuple(row[m] for m in measures)

    # 2025: five verleningen of 1,000 in one programma and sector; its totals are the same figures.
    assert figures("2025", C25, "Cultuur") == (money("5000.00"), money("0.00"), 5, 0, 0, 5)
    assert figures("2025", TOTAAL, TOTAAL) == figures("2025", C25, "Cultuur")
    # 2026 Cultuur: verleend 100 + 200 + 300 + 400 + 500 + 600; vastgesteld 90 + 180; six ontvangers.
    assert figures("2026", CS26, "Cultuur") == (money("2100.00"), money("270.00"), 6, 2, 0, 6)
    # 2026 Sport: 500 + 450 (the subsidie's bedrag) + 700 + 300 + 50; the vaststelling of 07-02 is not yet made
    # known; the afgewezen aanvrager is one of the six ontvangers of a beschikking.
    assert figures("2026", CS26, "Sport") == (money("2000.00"), money("0.00"), 5, 0, 1, 6)
    assert figures("2026", CS26, TOTAAL) == (money("4100.00"), money("270.00"), 11, 2, 1, 12)
    assert figures("2026", TOTAAL, "Sport") == figures("2026", CS26, "Sport")
    assert figures("2026", TOTAAL, "Cultuur") == figures("2026", CS26, "Cultuur")
    # The 2026 total: 2,100 + 2,000 + 2,800 + 500 verleend; 270 + 280 vastgesteld; 6 + 6 + 4 + 5 ontvangers.
    assert figures("2026", TOTAAL, TOTAAL) == (money("7400.00"), money("550.00"), 21, 3, 1, 21)


def test_subsidies_hide_cells_with_few_ontvangers(built):
    rows = built["rows"][SUB_MART]
    welzijn = cell(rows, jaar="2026", programma=W26, sector="Welzijn")
    # One organisation twice and three subsidies without RSIN: 4 ontvangers, below 5.
    assert welzijn["onderdrukt"] and welzijn["onderdrukking"] == "primair"
    assert all(welzijn[m] is None for m in ("verleend_bedrag", "vastgesteld_bedrag", "aantal_ontvangers"))
    # The programma's and the sector's totals equal the hidden cell, so they are hidden as well.
    for programma, sector in ((W26, TOTAAL), (TOTAAL, "Welzijn")):
        hidden = cell(rows, jaar="2026", programma=programma, sector=sector)
        assert hidden["onderdrukt"] and hidden["verleend_bedrag"] is None
    # The 2026 total minus the published programma totals would reveal Welzijn: the smallest other programma
    # (Onderwijs, 5 ontvangers) is hidden too, and with it its sector.
    onderwijs = [cell(rows, jaar="2026", programma=p, sector=s) for p, s in ((O26, TOTAAL), (O26, "Onderwijs"), (TOTAAL, "Onderwijs"))]
    assert all(r["onderdrukking"] == "secundair" and r["verleend_bedrag"] is None for r in onderwijs)
    programma_totals = [r for r in rows if r["jaar"] == "2026" and r["sector"] == TOTAAL and r["programma"] != TOTAAL]
    assert sorted(r["programma"] for r in programma_totals if r["onderdrukt"]) == sorted([W26, O26])
    # A sector without subsidies has no row; 2025 cells are all published.
    assert not [r for r in rows if r["sector"] == "Zorg"]
    assert not any(r["onderdrukt"] for r in rows if r["jaar"] == "2025")


def test_idempotent_rerun_and_status(spark, built):
    from ggm_lakehouse.lake import LakeTable
    from jobs import gold

    runs = ((FIN_MART, FIN_PEILDATUM), (SUB_MART, SUB_PEILDATUM))
    versions_before = {m: LakeTable("gold", m).last_commit(spark)[0] for m, _ in runs}
    status_before = {(r["mart"], r["peildatum"]): r.asDict()
                     for r in LakeTable("gold", gold.STATUS_TABLE).read(spark).collect() if r["mart"] in versions_before}

    for mart, day in runs:
        again = gold.run(spark, day, marts=[mart])
        assert again["tables"][mart]["written"] is False

    assert {m: LakeTable("gold", m).last_commit(spark)[0] for m, _ in runs} == versions_before
    status_after = {(r["mart"], r["peildatum"]): r.asDict()
                    for r in LakeTable("gold", gold.STATUS_TABLE).read(spark).collect() if r["mart"] in versions_before}
    assert status_after == status_before
    fin_status = status_after[(FIN_MART, FIN_PEILDATUM)]
    assert fin_status["onderdrukte_cellen_primair"] == 0 and fin_status["domein"] == "financien"
    assert set(fin_status["bronversies"]) == {"MUTATIE", "HOOFDREKENING", "KOSTENPLAATS", "KP_KSTNPLTS_TKVLD", "TAAKVELD"}
    sub_status = status_after[(SUB_MART, SUB_PEILDATUM)]
    assert sub_status["onderdrukte_cellen_primair"] >= 1 and sub_status["domein"] == "subsidies"
