"""Sociaal Domein gold marts on known inputs: voorzieningen, doorlooptijden, declaraties, Wmo+Jeugd households.

Two hand-made silver worlds (tests/gold_support.py), each built and then rebuilt through the engine's
``run`` as the gold DAG does; the peildatum is 2026-06-15, so the marts cover the months 2025-07 up to 2026-06.

* Phase "populatie" (voorzieningen and households): a small municipality of gezinnen (a parent with a Wmo
  toewijzing for begeleiding, categorie 02, and a child with jeugdhulp, categorie 45) and Wmo singles
  (categorie 01), spread so that the households mart has published and hidden buurten.
* Phase "berichtenverkeer" (doorlooptijden and declaraties): 315 verzoeken with their 301 answers and 305
  starts, and 323 prestaties against known toewijzingen.

Every expected value is worked out in the comments next to the data.
"""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from tests.gold_support import CBS_INWONERS, write_population, write_silver_table

PEILDATUM = date(2026, 6, 15)
POPULATIE_MARTS = ["sociaal_domein_voorzieningen", "sociaal_domein_wmo_jeugd_huishoudens"]
BERICHTEN_MARTS = ["sociaal_domein_doorlooptijden", "sociaal_domein_declaraties"]
WMO, JEUGD = 9, 4  # GGM WET_ENUM
GEMEENTE = "GM9999"
JAN = date(2026, 1, 1)

# Silver columns the marts read, as the mappings produce them (checked against ggm_mappings below).
SCHEMAS = {
    "CLIENT": "CLIENT_ID BIGINT, NATUURLIJKPERSOON_ID BIGINT",
    "TOEWIJZING": ("TOEWIJZING_ID BIGINT, CODE STRING, DATUMTOEWIJZING DATE, DATUMSTARTTOEWIJZING DATE, "
                   "DATUMEINDETOEWIJZING DATE, OMVANG STRING, EENHEID_ENUM_ID INT, FREQUENTIE_ENUM_ID INT, "
                   "WET_ENUM_ID INT, LEVERT_VOORZIENING_RECHTSPERSOON_ID BIGINT"),
    "CLIENT_TOEWIJZING": "CLIENT_TOEWIJZING_ID BIGINT, TOEWIJZING_ID BIGINT, CLIENT_ID BIGINT, REFERENTIEAANBIEDER STRING",
    "VOORZIENING": "VOORZIENING_ID BIGINT, PRODUCTCODE STRING, CODE STRING, WET_ENUM_ID INT",
    "VERZOEK_OM_TOEWIJZING": ("VERZOEK_OM_TOEWIJZING_ID BIGINT, REFERENTIEAANBIEDER STRING, DATUMONTVANGST DATE, "
                              "BETREFT_RECHTSPERSOON_ID BIGINT, LEVERANCIER_RECHTSPERSOON_ID BIGINT, "
                              "BETREFT_VOORZIENING_ID BIGINT"),
    "BESCHIKTE_VOORZIENING": "BESCHIKTE_VOORZIENING_ID BIGINT, DATUMSTART DATE, TOEGEWEZEN_PRODUCT_TOEWIJZING_ID BIGINT",
    # BEDRAG is DECIMAL(18,2) in silver; written as DOUBLE because write_silver_table splits the schema on
    # every comma. The mart casts it to DECIMAL(18,2) itself, so the sums below are exact decimals either way.
    "DECLARATIEREGEL": ("DECLARATIEREGEL_ID BIGINT, BEDRAG DOUBLE, CODE STRING, DATUMSTART DATE, "
                        "IS_OP_BASIS_VAN_TOEWIJZING_ID BIGINT, VALT_BINNEN_DECLARATIE_ID BIGINT"),
    "DECLARATIE": "DECLARATIE_ID BIGINT, BETREFT STRING",
}
# (wet, categorie, productcode) -> VOORZIENING_ID
PRODUCTEN = {(WMO, "01", "01A01"): 901, (WMO, "02", "02A01"): 902, (JEUGD, "45", "45A01"): 745}
AANBIEDER_A, AANBIEDER_B = 8001, 8002

# ------------------------------------------------------------------ phase "populatie"
# Gezinnen: address -> buurt; parent = address*100 (Wmo 02A01 from Jan 2026), child = address*100+1 (Jeugd 45A01).
GEZINNEN = {
    **{a: "BU99990101" for a in (11, 12, 13)},        # 3 households with both: hidden
    **{a: "BU99990102" for a in (21, 22)},            # 2: hidden (wijk Centrum: 5, published)
    **{a: "BU99990201" for a in range(31, 37)},       # 6: published
    **{a: "BU99990202" for a in range(41, 46)},       # 5: published (the threshold itself)
}
# The small Wmo 01 group lives in wijk Centrum, whose buurten are hidden anyway, so that the secondary
# suppression it causes stays out of wijk Noord.
WMO_SINGLES = {37: "BU99990101", 38: "BU99990101"}   # Wmo 01A01 from Jan 2026, open
ENDED_SINGLE = 39                                     # BU99990101, Wmo 01A01 2025-03-01 .. 2026-03-31
FUTURE_CHILD = 29                                     # BU99990102, parent 2900 no client, child 2901 Jeugd from 2026-07-01
EXTRA_01_PARENT = 1100                                # gezin 11's parent also gets Wmo 01A01 from 2026-05-01


def client_id(person: int) -> int:
    return 5_000_000 + person


def _households() -> dict:
    households = {a: (b, [(f"ps-{a}00", date(1980, 1, 1)), (f"ps-{a}01", date(2014, 1, 1))]) for a, b in GEZINNEN.items()}
    households.update({a: (b, [(f"ps-{a}00", date(1950, 1, 1))]) for a, b in WMO_SINGLES.items()})
    households[ENDED_SINGLE] = ("BU99990101", [(f"ps-{ENDED_SINGLE}00", date(1945, 1, 1))])
    households[FUTURE_CHILD] = ("BU99990102", [("ps-2900", date(1985, 1, 1)), ("ps-2901", date(2016, 1, 1))])
    return households


def _populatie_toewijzingen() -> list[tuple]:
    """(toewijzing id, person, wet, productcode, start, end)."""
    rows = []
    for a in GEZINNEN:
        rows.append((len(rows) + 1, a * 100, WMO, "02A01", JAN, None))
        rows.append((len(rows) + 1, a * 100 + 1, JEUGD, "45A01", JAN, None))
    for a in WMO_SINGLES:
        rows.append((len(rows) + 1, a * 100, WMO, "01A01", JAN, None))
    rows.append((len(rows) + 1, ENDED_SINGLE * 100, WMO, "01A01", date(2025, 3, 1), date(2026, 3, 31)))
    rows.append((len(rows) + 1, 2901, JEUGD, "45A01", date(2026, 7, 1), None))
    rows.append((len(rows) + 1, EXTRA_01_PARENT, WMO, "01A01", date(2026, 5, 1), None))
    return rows


def _write_voorzieningen(spark) -> None:
    write_silver_table(spark, "VOORZIENING", [
        {"VOORZIENING_ID": i, "WET_ENUM_ID": w, "CODE": c, "PRODUCTCODE": p} for (w, c, p), i in PRODUCTEN.items()
    ], SCHEMAS["VOORZIENING"])


def _write_toewijzingen(spark, rows: list[dict], links: list[dict]) -> None:
    write_silver_table(spark, "TOEWIJZING", rows, SCHEMAS["TOEWIJZING"])
    write_silver_table(spark, "CLIENT_TOEWIJZING", links, SCHEMAS["CLIENT_TOEWIJZING"])


def write_populatie(spark) -> None:
    write_population(spark, _households())
    persons = {p for _, p, *_ in _populatie_toewijzingen()}
    write_silver_table(spark, "CLIENT", [{"CLIENT_ID": client_id(p), "NATUURLIJKPERSOON_ID": p} for p in sorted(persons)],
                       SCHEMAS["CLIENT"])
    _write_voorzieningen(spark)
    toewijzingen, links = [], []
    for tid, person, wet, code, start, end in _populatie_toewijzingen():
        toewijzingen.append({"TOEWIJZING_ID": tid, "CODE": code, "DATUMTOEWIJZING": start - timedelta(days=7),
                             "DATUMSTARTTOEWIJZING": start, "DATUMEINDETOEWIJZING": end, "WET_ENUM_ID": wet,
                             "LEVERT_VOORZIENING_RECHTSPERSOON_ID": AANBIEDER_A})
        links.append({"CLIENT_TOEWIJZING_ID": 100_000 + tid, "TOEWIJZING_ID": tid, "CLIENT_ID": client_id(person),
                      "REFERENTIEAANBIEDER": f"R{tid}"})
    _write_toewijzingen(spark, toewijzingen, links)


# ------------------------------------------------------------------ phase "berichtenverkeer"
# Jeugd verzoeken (315) of 2026-05-04 by aanbieder A for clients 6001..6007, categorie 45:
#   days to the 301: 2, 3, 5, 7, 10, 14 (6007: no answer) -> mean 41/6 = 6.83, median (5+7)/2 = 6.0,
#   within 7 days 4 of 6 = 66.67 %;
#   days 301 -> 305: 1, 1, 2, 2, 3 (6006: no start)    -> mean 9/5 = 1.8, median 2.0;
#   days 315 -> 305: 3, 4, 7, 9, 13                     -> mean 36/5 = 7.2, median 7.0.
VERZOEK_DAG = date(2026, 5, 4)
JEUGD_ANTWOORD = [2, 3, 5, 7, 10, 14, None]
JEUGD_START = [1, 1, 2, 2, 3, None, None]
# Wmo verzoeken of 2026-05-11 for 6101..6105 (categorie 02), answered the next day, not started;
# 2026-04-20 for 6201, 6202 (unanswered: April hidden); 2025-06-30 (before the window) and 2026-06-20
# (after the peildatum) for 6301, 6302: not counted.
# May totals: 12 verzoeken, 11 answered: mean (41 + 5) / 11 = 4.18, median of 1,1,1,1,1,2,3,5,7,10,14 = 2.0,
# within the norm (4 + 5) / 11 = 81.82 %.

# Declaraties: Jeugd toewijzingen 7001..7006 (45A01, 4 uur per week, 2026-02-01 .. 2026-03-31); each declares
# 100.00 for March, 7001 also a credit of -100.00 and a correction of 90.00; a prestatie of 25.00 on a
# toewijzing unknown to silver in a Jeugdwet declaratie. March (Jeugdwet, 45): 6 clients, 615.00 declared on
# 7 toewijzingen, 6 active, 6 x 4 x 31/7 = 106.29 hours; February: 6 x 4 x 28/7 = 96 hours, nothing declared.
# Wmo 7101, 7102 (01A01, 30 minutes a day, April 2026, 50.00 each): April hidden.


def write_berichtenverkeer(spark) -> None:
    _write_voorzieningen(spark)
    toewijzingen, links, verzoeken, starts = [], [], [], []

    def toewijzing(client: int, wet: int, code: str, toegewezen: date, referentie: str, aanbieder: int = AANBIEDER_A,
                   start: date | None = None, end: date | None = None, omvang: str | None = None,
                   eenheid: int | None = None, frequentie: int | None = None) -> int:
        tid = 10_000 + len(toewijzingen)
        toewijzingen.append({"TOEWIJZING_ID": tid, "CODE": code, "DATUMTOEWIJZING": toegewezen,
                             "DATUMSTARTTOEWIJZING": start or toegewezen, "DATUMEINDETOEWIJZING": end,
                             "OMVANG": omvang, "EENHEID_ENUM_ID": eenheid, "FREQUENTIE_ENUM_ID": frequentie,
                             "WET_ENUM_ID": wet, "LEVERT_VOORZIENING_RECHTSPERSOON_ID": aanbieder})
        links.append({"CLIENT_TOEWIJZING_ID": 200_000 + tid, "TOEWIJZING_ID": tid, "CLIENT_ID": client,
                      "REFERENTIEAANBIEDER": referentie})
        return tid

    def verzoek(client: int, day: date, referentie: str, voorziening: int) -> None:
        verzoeken.append({"VERZOEK_OM_TOEWIJZING_ID": 30_000 + len(verzoeken), "REFERENTIEAANBIEDER": referentie,
                          "DATUMONTVANGST": day, "BETREFT_RECHTSPERSOON_ID": client,
                          "LEVERANCIER_RECHTSPERSOON_ID": AANBIEDER_A, "BETREFT_VOORZIENING_ID": voorziening})

    for n, (antwoord, start) in enumerate(zip(JEUGD_ANTWOORD, JEUGD_START), start=1):
        client, referentie = 6000 + n, f"J{n}"
        verzoek(client, VERZOEK_DAG, referentie, 745)
        if antwoord is None:
            continue
        tid = toewijzing(client, JEUGD, "45A01", VERZOEK_DAG + timedelta(days=antwoord), referentie)
        if start is not None:
            starts.append({"BESCHIKTE_VOORZIENING_ID": 40_000 + tid, "TOEGEWEZEN_PRODUCT_TOEWIJZING_ID": tid,
                           "DATUMSTART": VERZOEK_DAG + timedelta(days=antwoord + start)})
    # Not answers: another aanbieder with the same reference the same day; a 301 from before the verzoek.
    toewijzing(6001, JEUGD, "45A01", VERZOEK_DAG, "J1", aanbieder=AANBIEDER_B)
    toewijzing(6002, JEUGD, "45A01", VERZOEK_DAG - timedelta(days=3), "J2")
    # A second 301 for the same verzoek (a new toewijzing later on): the first answer counts.
    toewijzing(6003, JEUGD, "45A01", VERZOEK_DAG + timedelta(days=40), "J3")
    for n in range(1, 6):
        client, referentie = 6100 + n, f"W{n}"
        verzoek(client, date(2026, 5, 11), referentie, 902)
        toewijzing(client, WMO, "02A01", date(2026, 5, 12), referentie)
    verzoek(6201, date(2026, 4, 20), "W11", 902)
    verzoek(6202, date(2026, 4, 20), "W12", 902)
    verzoek(6301, date(2025, 6, 30), "W21", 902)
    verzoek(6302, date(2026, 6, 20), "W22", 902)

    regels = []

    def prestatie(tid: int | None, code: str, begin: date, bedrag: str, declaratie: int) -> None:
        regels.append({"DECLARATIEREGEL_ID": 50_000 + len(regels), "BEDRAG": float(bedrag), "CODE": code,
                       "DATUMSTART": begin, "IS_OP_BASIS_VAN_TOEWIJZING_ID": tid, "VALT_BINNEN_DECLARATIE_ID": declaratie})

    maart = date(2026, 3, 1)
    for n in range(1, 7):
        tid = toewijzing(7000 + n, JEUGD, "45A01", date(2026, 1, 20), f"D{n}", start=date(2026, 2, 1),
                         end=date(2026, 3, 31), omvang="4", eenheid=8, frequentie=8)
        prestatie(tid, "45A01", maart, "100.00", 1)
        if n == 1:
            prestatie(tid, "45A01", maart, "-100.00", 2)
            prestatie(tid, "45A01", maart, "90.00", 2)
    prestatie(99_999, "45A01", maart, "25.00", 3)              # toewijzing unknown to silver
    prestatie(tid, "45A01", date(2025, 6, 1), "1000.00", 3)    # before the 12 months: not counted
    for n in (1, 2):
        tid = toewijzing(7100 + n, WMO, "01A01", date(2026, 3, 25), f"E{n}", start=date(2026, 4, 1),
                         end=date(2026, 4, 30), omvang="30", eenheid=5, frequentie=5)
        prestatie(tid, "01A01", date(2026, 4, 1), "50.00", 4)
    _write_toewijzingen(spark, toewijzingen, links)
    write_silver_table(spark, "VERZOEK_OM_TOEWIJZING", verzoeken, SCHEMAS["VERZOEK_OM_TOEWIJZING"])
    write_silver_table(spark, "BESCHIKTE_VOORZIENING", starts, SCHEMAS["BESCHIKTE_VOORZIENING"])
    write_silver_table(spark, "DECLARATIEREGEL", regels, SCHEMAS["DECLARATIEREGEL"])
    write_silver_table(spark, "DECLARATIE", [
        {"DECLARATIE_ID": 1, "BETREFT": "Jeugdwet 1"}, {"DECLARATIE_ID": 2, "BETREFT": "Jeugdwet 2"},
        {"DECLARATIE_ID": 3, "BETREFT": "Jeugdwet 3"}, {"DECLARATIE_ID": 4, "BETREFT": "Wmo 4"},
    ], SCHEMAS["DECLARATIE"])


# ------------------------------------------------------------------ build


def _build(spark, marts: list[str]) -> dict:
    """Run the engine twice for ``marts``: the rows of the first run and both reports."""
    from ggm_lakehouse.lake import LakeTable
    from jobs import gold

    first = gold.run(spark, PEILDATUM, marts=marts)
    rows = {name: [r.asDict() for r in LakeTable("gold", name).read(spark).where(f"peildatum = DATE'{PEILDATUM}'").collect()]
            for name in marts}
    versions = {name: LakeTable("gold", name).last_commit(spark)[0] for name in marts}
    again = gold.run(spark, PEILDATUM, marts=marts)
    versions_again = {name: LakeTable("gold", name).last_commit(spark)[0] for name in marts}
    return {"rows": rows, "first": first, "again": again, "versions": (versions, versions_again)}


@pytest.fixture(scope="module")
def built(spark, data_root):
    """Both phases, each built and rebuilt through ``jobs.gold.run`` with the default threshold of 5."""
    patcher = pytest.MonkeyPatch()
    patcher.delenv("GGM_SUPPRESSION_THRESHOLD", raising=False)
    write_populatie(spark)
    populatie = _build(spark, POPULATIE_MARTS)
    write_berichtenverkeer(spark)
    berichten = _build(spark, BERICHTEN_MARTS)
    yield {"rows": {**populatie["rows"], **berichten["rows"]}, "builds": [populatie, berichten]}
    patcher.undo()


def cell(rows, **where):
    matches = [r for r in rows if all(r[k] == v for k, v in where.items())]
    assert len(matches) == 1, (where, len(matches))
    return matches[0]


# ------------------------------------------------------------------ definitions


def test_definitions_load_in_the_sociaal_domein():
    from jobs import gold

    marts = gold.marts_of_domein("sociaal_domein")
    assert set(POPULATIE_MARTS + BERICHTEN_MARTS) <= set(marts)
    definitions = gold.load_mart_definitions()
    assert definitions["sociaal_domein_declaraties"].personen == "aantal_clienten"
    assert "CLIENT_TOEWIJZING" in gold.MART_INPUTS["sociaal_domein_doorlooptijden"]
    assert "VERZOEK_OM_TOEWIJZING" in gold.MART_INPUTS["sociaal_domein_doorlooptijden"]


def test_known_silver_columns_are_those_the_mappings_produce():
    from ggm_lakehouse.model.mappings import load_all

    mappings = {m.target: m for m in load_all()}
    for table, schema in SCHEMAS.items():
        mapping = mappings[table]
        produced = {c.name for c in mapping.columns} | {mapping.surrogate_key}
        written = {part.strip().split()[0] for part in schema.split(",")}
        assert written <= produced, (table, sorted(written - produced))


# ------------------------------------------------------------------ voorzieningen


def test_voorzieningen_count_clients_and_toewijzingen_per_month(built):
    rows = built["rows"]["sociaal_domein_voorzieningen"]
    total = dict(gebiedsniveau="gemeente", wet="Totaal", productcategorie="Totaal")
    # June: 16 parents + 16 children + 2 Wmo singles; 35 toewijzingen (parent 1100 also has 01A01 since May).
    june = cell(rows, maand="2026-06", **total)
    assert (june["aantal_clienten"], june["aantal_toewijzingen"], june["onderdrukt"]) == (34, 35, False)
    assert (june["gebiedscode"], june["inwoners"]) == (GEMEENTE, CBS_INWONERS[GEMEENTE])
    assert june["aantal_clienten_per_1000_inwoners"] == 8.5  # 34 * 1000 / 4000
    # March: the single whose toewijzing ends 2026-03-31 still counts; 1100's second toewijzing not yet.
    march = cell(rows, maand="2026-03", **total)
    assert (march["aantal_clienten"], march["aantal_toewijzingen"]) == (35, 35)
    # The child whose toewijzing starts after the peildatum counts in no month; 2025-12 has only the single.
    december = cell(rows, maand="2025-12", **total)
    assert december["onderdrukt"] and december["onderdrukking"] == "primair" and december["aantal_clienten"] is None
    assert {r["maand"] for r in rows} == {f"{y}-{m:02d}" for y, m in
                                         [(2025, m) for m in range(7, 13)] + [(2026, m) for m in range(1, 7)]}


def test_voorzieningen_per_buurt_with_a_hidden_cell(built):
    rows = built["rows"]["sociaal_domein_voorzieningen"]
    jeugd = cell(rows, gebiedscode="BU99990201", wet="Jeugdwet", productcategorie="45", maand="2026-06")
    assert (jeugd["aantal_clienten"], jeugd["aantal_toewijzingen"], jeugd["onderdrukt"]) == (6, 6, False)
    assert (jeugd["gebiedsnaam"], jeugd["wijkcode"], jeugd["inwoners"]) == ("Parkwijk", "WK999902", 1500)
    assert jeugd["aantal_clienten_per_1000_inwoners"] == 4.0
    wmo = cell(rows, gebiedscode="BU99990201", wet="Wmo", productcategorie="02", maand="2026-06")
    assert (wmo["aantal_clienten"], wmo["aantal_toewijzingen"], wmo["onderdrukt"]) == (6, 6, False)
    # Wmo 01 in Oude Kern: singles 37 and 38 and parent 1100: three clients, hidden with all measures.
    small = cell(rows, gebiedscode="BU99990101", wet="Wmo", productcategorie="01", maand="2026-06")
    assert small["onderdrukt"] and small["onderdrukking"] == "primair"
    assert (small["aantal_clienten"], small["aantal_toewijzingen"], small["aantal_clienten_per_1000_inwoners"]) == (None,) * 3
    # No published total lets the hidden cell be recomputed: the buurt's Wmo total hides another categorie.
    wmo_cells = [r for r in rows if r["gebiedscode"] == "BU99990101" and r["wet"] == "Wmo" and r["maand"] == "2026-06"]
    assert sum(r["onderdrukt"] for r in wmo_cells if r["productcategorie"] != "Totaal") >= 2


# ------------------------------------------------------------------ households


def test_households_with_wmo_and_jeugd(built):
    rows = built["rows"]["sociaal_domein_wmo_jeugd_huishoudens"]
    expected = {
        # code: (both, wmo, jeugd) - wmo in Centrum adds the singles 37 and 38; 39 ended, 29 not started.
        GEMEENTE: (16, 18, 16),
        "WK999901": (5, 7, 5),
        "WK999902": (11, 11, 11),
        "BU99990201": (6, 6, 6),
        "BU99990202": (5, 5, 5),
    }
    for code, values in expected.items():
        row = cell(rows, gebiedscode=code)
        assert (row["aantal_huishoudens_wmo_en_jeugd"], row["aantal_huishoudens_wmo"],
                row["aantal_huishoudens_jeugd"], row["onderdrukt"]) == (*values, False), code
    for code in ("BU99990101", "BU99990102"):  # 3 and 2 households with both
        row = cell(rows, gebiedscode=code)
        assert row["onderdrukking"] == "primair" and row["aantal_huishoudens_wmo"] is None
    assert cell(rows, gebiedscode="WK999902")["huishoudens"] == CBS_INWONERS["WK999902"] // 2


# ------------------------------------------------------------------ doorlooptijden


def test_doorlooptijden_of_jeugd_verzoeken(built):
    rows = built["rows"]["sociaal_domein_doorlooptijden"]
    jeugd = cell(rows, wet="Jeugdwet", productcategorie="45", maand="2026-05")
    assert (jeugd["aantal_verzoeken"], jeugd["aantal_clienten"], jeugd["aantal_toegewezen"]) == (7, 7, 6)
    assert (jeugd["gemiddelde_dagen_verzoek_toewijzing"], jeugd["mediaan_dagen_verzoek_toewijzing"]) == (6.83, 6.0)
    assert (jeugd["gemiddelde_dagen_toewijzing_start"], jeugd["mediaan_dagen_toewijzing_start"]) == (1.8, 2.0)
    assert (jeugd["gemiddelde_dagen_verzoek_start"], jeugd["mediaan_dagen_verzoek_start"]) == (7.2, 7.0)
    assert jeugd["percentage_toegewezen_binnen_norm"] == 66.67
    total = cell(rows, wet="Totaal", productcategorie="Totaal", maand="2026-05")
    assert (total["aantal_verzoeken"], total["aantal_toegewezen"]) == (12, 11)
    assert (total["gemiddelde_dagen_verzoek_toewijzing"], total["mediaan_dagen_verzoek_toewijzing"]) == (4.18, 2.0)
    assert total["percentage_toegewezen_binnen_norm"] == 81.82


def test_doorlooptijden_hide_small_months_and_keep_to_the_window(built):
    rows = built["rows"]["sociaal_domein_doorlooptijden"]
    assert {r["maand"] for r in rows} == {"2026-04", "2026-05"}
    april = [r for r in rows if r["maand"] == "2026-04"]
    assert april and all(r["onderdrukking"] == "primair" and r["aantal_verzoeken"] is None for r in april)


# ------------------------------------------------------------------ declaraties


def test_declared_against_allocated(built):
    rows = built["rows"]["sociaal_domein_declaraties"]
    march = cell(rows, wet="Jeugdwet", productcategorie="45", maand="2026-03")
    assert march["gedeclareerd_bedrag"] == Decimal("615.00")
    assert (march["aantal_clienten"], march["aantal_toewijzingen_gedeclareerd"], march["aantal_toewijzingen_actief"]) == (6, 7, 6)
    assert march["toegewezen_uren"] == pytest.approx(6 * 4 * 31 / 7)
    february = cell(rows, wet="Jeugdwet", productcategorie="45", maand="2026-02")
    assert (february["gedeclareerd_bedrag"], february["aantal_toewijzingen_gedeclareerd"]) == (Decimal("0.00"), 0)
    assert february["toegewezen_uren"] == pytest.approx(96.0)
    assert "2025-06" not in {r["maand"] for r in rows}
    april = cell(rows, wet="Wmo", productcategorie="01", maand="2026-04")
    assert april["onderdrukking"] == "primair" and april["gedeclareerd_bedrag"] is None


# ------------------------------------------------------------------ rerun


def test_rerun_changes_nothing(built):
    for build in built["builds"]:
        before, after = build["versions"]
        assert before == after
        for name, entry in build["again"]["tables"].items():
            assert entry["written"] is False, name
            assert entry["rows"] == build["first"]["tables"][name]["rows"] > 0
