"""Schuldhulp gold marts on known inputs: vroegsignalen per wijk/maand/partner and the Wmo/Jeugd overlap.

A small municipality (tests/gold_support.py: wijk Centrum WK999901, wijk Noord WK999902, CBS
inwoners 2,000 each) with hand-made silver VROEGSIGNAAL, SIGNAALPARTNER, CONTACTPOGING, CLIENT,
CLIENT_TOEWIJZING and TOEWIJZING. The peildatum is 2026-06-15: the vroegsignalen mart covers the
months 2024-07 up to 2026-06, the overlap mart signals after 2025-06-15. Every expected value is
worked out in the comments next to the data.
"""
from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path

import pytest

from tests.gold_support import write_population, write_silver_table

PEILDATUM = date(2026, 6, 15)
MARTS = ["schuldhulp_vroegsignalen", "schuldhulp_overlap_wmo_jeugd"]
CENTRUM, NOORD, ONBEKEND, GEMEENTE = "WK999901", "WK999902", "onbekend", "GM9999"

# address id -> (buurtcode, [(pseudonym, born)]); person id = address * 100 + position (gold_support).
HOUSEHOLDS = {
    1: ("BU99990101", [("ps-100", date(1980, 3, 1)), ("ps-101", date(2015, 4, 1))]),   # 101: Jeugd client
    2: ("BU99990101", [("ps-200", date(1975, 1, 1))]),                                 # 200: debtor and Wmo client
    3: ("BU99990102", [("ps-300", date(1970, 1, 1)), ("ps-301", date(1950, 1, 1)),     # 301: Wmo (ends on peildatum)
                       ("ps-302", date(2012, 1, 1))]),                                  # 302: Jeugd client
    4: ("BU99990102", [("ps-400", date(1985, 1, 1)), ("ps-401", date(1940, 1, 1))]),   # Wmo ended, Jeugd not started
    5: ("BU99990101", [("ps-500", date(1990, 1, 1)), ("ps-501", date(1992, 1, 1))]),   # two debtors, one household
    6: ("BU99990102", [("ps-600", date(1960, 1, 1))]),
    7: ("BU99990201", [("ps-700", date(1955, 1, 1))]),                                 # Noord, Wmo client
    8: ("BU99990201", [("ps-800", date(1988, 1, 1))]),
    9: ("BU99999999", [("ps-900", date(1970, 1, 1))]),                                 # address in no known buurt
    10: ("BU99990202", [("ps-1000", date(1980, 1, 1))]),                               # only a signal 12 months old
    11: ("BU99990202", [("ps-1100", date(1982, 1, 1))]),
    12: ("BU99990202", [("ps-1200", date(1984, 1, 1)), ("ps-1201", date(2016, 1, 1))]),  # 1201: Jeugd client
    13: ("BU99990201", [("ps-1300", date(1986, 1, 1))]),
}
NOT_RESIDENT = 999001  # a debtor with BSN who is no resident on the peildatum (and a Wmo client)

HUUR, ENERGIE, WATER, ZORG = 71, 61, 101, 111  # SIGNAALPARTNER_ID of one partner of each type
PARTNERS = [
    {"SIGNAALPARTNER_ID": HUUR, "TYPE_ENUM_ID": 7},
    {"SIGNAALPARTNER_ID": ENERGIE, "TYPE_ENUM_ID": 6},
    {"SIGNAALPARTNER_ID": WATER, "TYPE_ENUM_ID": 10},
    {"SIGNAALPARTNER_ID": ZORG, "TYPE_ENUM_ID": 11},
]

# (signal id, debtor person id or None = no BSN, signaaldatum, partner, zaak id)
SIGNALS = [
    (1, 100, date(2026, 5, 4), HUUR, 9001),     # zaak 9001 reaches the inwoner on 05-09: 5 days
    (2, 200, date(2026, 5, 5), HUUR, 9002),     # reached 05-08: 3 days
    (3, 300, date(2026, 5, 6), HUUR, 9003),     # two failed attempts, reached 05-16: 10 days
    (4, 400, date(2026, 5, 7), HUUR, 9004),     # one failed attempt only: contactpoging, no contact
    (5, 500, date(2026, 5, 11), HUUR, 9005),    # its only attempt is after the peildatum: nothing
    (6, 501, date(2026, 5, 12), HUUR, None),    # not picked up (an older version named another partner)
    (7, 600, date(2026, 5, 13), HUUR, None),
    (8, 100, date(2026, 5, 20), HUUR, 9001),    # same zaak as signal 1, whose attempts all precede it: nothing
    (9, 600, date(2026, 5, 15), ENERGIE, None),  # Centrum energie 2026-05: one person, hidden
    (10, 200, date(2026, 5, 18), WATER, None),   # Centrum water 2026-05: one person, hidden
    (11, 700, date(2026, 5, 5), HUUR, None),     # Noord huur 2026-05: two persons, hidden
    (12, 800, date(2026, 5, 6), HUUR, None),
    (13, None, date(2026, 5, 8), HUUR, None),    # no BSN: wijk onbekend, hidden (so Noord cannot be derived)
    (20, None, date(2026, 4, 1), WATER, None),   # onbekend water 2026-04: four signals without BSN,
    (21, None, date(2026, 4, 2), WATER, None),
    (22, None, date(2026, 4, 3), WATER, None),
    (23, None, date(2026, 4, 6), WATER, None),
    (24, NOT_RESIDENT, date(2026, 4, 10), WATER, 9024),  # a debtor who is no resident (reached after 2 days),
    (25, 900, date(2026, 4, 11), WATER, None),            # and a resident whose address is in no known wijk
    (30, 800, date(2024, 6, 30), HUUR, None),    # before the 24 months: not counted
    (31, 800, date(2024, 7, 1), HUUR, None),     # first day of the 24 months
    (32, 1000, date(2025, 6, 15), ENERGIE, None),  # in the 24 months, but exactly 12 months old: not in the overlap
    (33, 1100, date(2026, 3, 2), ZORG, None),
    (34, 1200, date(2026, 3, 3), ZORG, None),
    (35, 1300, date(2026, 3, 4), ZORG, None),
]
# (zaak id, volgnummer, datum, bereikt)
CONTACTPOGINGEN = [
    (9001, 1, date(2026, 5, 6), False), (9001, 2, date(2026, 5, 9), True),
    (9002, 1, date(2026, 5, 8), True),
    (9003, 1, date(2026, 5, 7), False), (9003, 2, date(2026, 5, 12), False), (9003, 3, date(2026, 5, 16), True),
    (9004, 1, date(2026, 5, 10), False),
    (9005, 1, date(2026, 6, 20), True),
    (9024, 1, date(2026, 4, 12), True),
]
# (toewijzing id, person id, WET_ENUM_ID (9 Wmo, 4 Jeugdwet), start, einde)
TOEWIJZINGEN = [
    (1, 101, 4, date(2025, 1, 1), None),
    (2, 200, 9, date(2026, 1, 1), date(2026, 12, 31)),
    (3, 301, 9, date(2024, 1, 1), PEILDATUM),          # ends on the peildatum: still active
    (4, 302, 4, date(2025, 9, 1), None),
    (5, 401, 9, date(2025, 1, 1), date(2026, 5, 31)),  # ended before the peildatum
    (6, 400, 4, date(2026, 7, 1), None),               # starts after the peildatum
    (7, 700, 9, date(2025, 2, 1), None),
    (8, NOT_RESIDENT, 9, date(2025, 2, 1), None),
    (9, 1201, 4, date(2026, 2, 1), None),
    (10, 1000, 9, date(2025, 2, 1), None),             # household without a signal in the 12 months
]

SCHEMAS = {
    "VROEGSIGNAAL": "VROEGSIGNAAL_ID BIGINT, SIGNAALDATUM DATE, BETREFT_CLIENT_ID BIGINT, "
                    "BETREFT_RECHTSPERSOON_ID BIGINT, VERZONDENDOOR_SIGNAALPARTNER_ID BIGINT, "
                    "OPGEPAKTIN_VROEGSIGNAALZAAK_ID BIGINT, STATUS_ENUM_ID INT",
    "SIGNAALPARTNER": "SIGNAALPARTNER_ID BIGINT, TYPE_ENUM_ID INT",
    "CONTACTPOGING": "CONTACTPOGING_ID BIGINT, HEEFT_VROEGSIGNAALZAAK_ID BIGINT, DATUM DATE, BEREIKT BOOLEAN",
    "CLIENT": "CLIENT_ID BIGINT, NATUURLIJKPERSOON_ID BIGINT",
    "CLIENT_TOEWIJZING": "TOEWIJZING_ID BIGINT, CLIENT_ID BIGINT, WET_ENUM_ID INT",
    "TOEWIJZING": "TOEWIJZING_ID BIGINT, WET_ENUM_ID INT, DATUMSTARTTOEWIJZING DATE, DATUMEINDETOEWIJZING DATE",
}
MEASURES = ["aantal_signalen", "aantal_personen", "aantal_met_contactpoging", "aantal_met_contact",
            "aandeel_met_contact", "dagen_tot_eerste_contact_mediaan", "dagen_tot_eerste_contact_gemiddeld"]
OVERLAP_MEASURES = ["aantal_huishoudens_met_signaal", "aantal_ook_wmo", "aantal_ook_jeugd", "aantal_ook_wmo_of_jeugd"]


def client_id(person: int) -> int:
    return 700_000_000 + person


def write_inputs(spark) -> None:
    """Write the population and the schuldhulp and Wmo/Jeugd silver tables above."""
    write_population(spark, HOUSEHOLDS)
    signals = [
        {"VROEGSIGNAAL_ID": sid, "SIGNAALDATUM": day, "BETREFT_RECHTSPERSOON_ID": person,
         "BETREFT_CLIENT_ID": client_id(person) if person else None, "VERZONDENDOOR_SIGNAALPARTNER_ID": partner,
         "OPGEPAKTIN_VROEGSIGNAALZAAK_ID": zaak, "STATUS_ENUM_ID": None if zaak else 5,
         "DWH_DATUMTIJDGELDIGVANAF": datetime(2026, 5, 20) if sid == 6 else datetime(2000, 1, 1)}
        for sid, person, day, partner, zaak in SIGNALS
    ]
    # Signal 6 as it was delivered first (another partner): a closed version the peildatum must not see.
    signals.append({"VROEGSIGNAAL_ID": 6, "SIGNAALDATUM": date(2026, 5, 12), "BETREFT_RECHTSPERSOON_ID": 501,
                    "BETREFT_CLIENT_ID": client_id(501), "VERZONDENDOOR_SIGNAALPARTNER_ID": ENERGIE,
                    "STATUS_ENUM_ID": 5, "DWH_DATUMTIJDGELDIGVANAF": datetime(2026, 5, 13),
                    "DWH_DATUMTIJDGELDIGTOTMET": datetime(2026, 5, 20)})
    write_silver_table(spark, "VROEGSIGNAAL", signals, SCHEMAS["VROEGSIGNAAL"])
    write_silver_table(spark, "SIGNAALPARTNER", PARTNERS, SCHEMAS["SIGNAALPARTNER"])
    write_silver_table(spark, "CONTACTPOGING", [
        {"CONTACTPOGING_ID": zaak * 10 + volgnummer, "HEEFT_VROEGSIGNAALZAAK_ID": zaak, "DATUM": day, "BEREIKT": bereikt}
        for zaak, volgnummer, day, bereikt in CONTACTPOGINGEN
    ], SCHEMAS["CONTACTPOGING"])
    clients = sorted({person for _, person, *_ in TOEWIJZINGEN} | {p for _, p, *_ in SIGNALS if p})
    write_silver_table(spark, "CLIENT", [{"CLIENT_ID": client_id(p), "NATUURLIJKPERSOON_ID": p} for p in clients],
                       SCHEMAS["CLIENT"])
    write_silver_table(spark, "TOEWIJZING", [
        {"TOEWIJZING_ID": tid, "WET_ENUM_ID": wet, "DATUMSTARTTOEWIJZING": start, "DATUMEINDETOEWIJZING": end}
        for tid, _, wet, start, end in TOEWIJZINGEN
    ], SCHEMAS["TOEWIJZING"])
    write_silver_table(spark, "CLIENT_TOEWIJZING", [
        {"TOEWIJZING_ID": tid, "CLIENT_ID": client_id(person), "WET_ENUM_ID": wet}
        for tid, person, wet, _, _ in TOEWIJZINGEN
    ], SCHEMAS["CLIENT_TOEWIJZING"])


@pytest.fixture(scope="module")
def built(spark, data_root):
    """Build both marts through the engine's run (gold tables and mart_status), as the gold DAG does."""
    from ggm_lakehouse.lake import LakeTable
    from jobs import gold

    patcher = pytest.MonkeyPatch()
    patcher.delenv("GGM_SUPPRESSION_THRESHOLD", raising=False)  # the default threshold of 5
    write_inputs(spark)
    report = gold.run(spark, PEILDATUM, marts=MARTS)
    rows = {name: [r.asDict() for r in LakeTable("gold", name).read(spark).where(f"peildatum = DATE'{PEILDATUM}'").collect()]
            for name in MARTS}
    yield {"report": report, "rows": rows}
    patcher.undo()


def signaal_cell(rows, code, maand, partnertype):
    [row] = [r for r in rows if r["gebiedscode"] == code and r["maand"] == maand
             and r["signaalpartnertype"] == partnertype]
    return row


def overlap_cell(rows, code):
    [row] = [r for r in rows if r["gebiedscode"] == code]
    return row


def test_definitions_load_in_the_schuldhulp_domein():
    from jobs import gold

    definitions = gold.load_mart_definitions()
    for name in MARTS:
        assert definitions[name].domein == "schuldhulp" and definitions[name].gebied == "wijk"
    assert gold.marts_of_domein("schuldhulp") == sorted(MARTS)
    assert {"VROEGSIGNAAL", "CONTACTPOGING", "INGESCHREVENPERSOON"} <= set(gold.MART_INPUTS["schuldhulp_vroegsignalen"])
    assert {"CLIENT_TOEWIJZING", "TOEWIJZING", "CLIENT"} <= set(gold.MART_INPUTS["schuldhulp_overlap_wmo_jeugd"])


def test_known_silver_columns_are_those_the_mappings_produce():
    """The hand-made silver uses the columns (and key types) the silver mappings write, so the marts run on real silver."""
    from ggm_lakehouse.model.mappings import load_mapping, mappings_dir

    for table, schema in SCHEMAS.items():
        mapping = load_mapping(mappings_dir() / f"{table.lower()}.yaml")
        produced = {mapping.surrogate_key: "bigint", **{c.name: ("bigint" if c.key_of else c.type) for c in mapping.columns}}
        for column, kind in (part.strip().split() for part in schema.split(",")):
            assert column in produced, f"{table}.{column} is not a silver column"
            assert produced[column] in (kind.lower(), "string"), f"{table}.{column}: {produced[column]} vs {kind}"


def test_partner_type_labels_follow_the_ggm_enumeration():
    """The mart's CASE decodes TYPE_ENUM_ID exactly as the connector's table (GGM ENUMSIGNAALPARTNER)."""
    from connectors.vroegsignalering import SIGNAALPARTNER_TYPES
    from jobs.gold import marts_dir

    text = (Path(marts_dir()) / "schuldhulp_vroegsignalen.yaml").read_text(encoding="utf-8")
    decoded = {int(i): label for i, label in re.findall(r"WHEN (\d+) THEN '([a-z]+)'", text)}
    assert decoded == {enum_id: name.lower() for enum_id, name in SIGNAALPARTNER_TYPES.values()}


def test_published_signal_cells(built):
    rows = built["rows"]["schuldhulp_vroegsignalen"]
    # Centrum huur 2026-05: signals 1-8 of seven persons (100 twice). Attempts on or after the signal date:
    # 1, 2, 3, 4; reached: 1 (5 days), 2 (3 days), 3 (10 days). 3/8 = 0.375 → 0.38; median 5, mean 6.
    huur = signaal_cell(rows, CENTRUM, "2026-05", "huur")
    assert {m: huur[m] for m in MEASURES} == {
        "aantal_signalen": 8, "aantal_personen": 7, "aantal_met_contactpoging": 4, "aantal_met_contact": 3,
        "aandeel_met_contact": 0.38, "dagen_tot_eerste_contact_mediaan": 5.0, "dagen_tot_eerste_contact_gemiddeld": 6.0,
    }
    assert (huur["gebiedsniveau"], huur["gebiedsnaam"], huur["wijkcode"]) == ("wijk", "Centrum", CENTRUM)
    assert (huur["inwoners"], huur["aantal_signalen_per_1000_inwoners"]) == (2000, 4.0)
    assert (huur["onderdrukt"], huur["onderdrukking"]) == (False, None)
    # Centrum all partners 2026-05: plus energie (600) and water (200), no new persons; 3/10 with contact.
    totaal = signaal_cell(rows, CENTRUM, "2026-05", "Totaal")
    assert [totaal[m] for m in MEASURES] == [10, 7, 4, 3, 0.3, 5.0, 6.0]
    assert totaal["aantal_signalen_per_1000_inwoners"] == 5.0
    # Gemeente huur 2026-05: Centrum 8, Noord 2 (700, 800), onbekend 1 (no BSN): 11 signals of 10 persons.
    gemeente = signaal_cell(rows, GEMEENTE, "2026-05", "huur")
    assert (gemeente["gebiedsniveau"], gemeente["gebiedsnaam"]) == ("gemeente", "Demodam")
    assert [gemeente[m] for m in MEASURES] == [11, 10, 4, 3, 0.27, 5.0, 6.0]


def test_unknown_wijk_holds_signals_without_bsn_or_resident_address(built):
    rows = built["rows"]["schuldhulp_vroegsignalen"]
    # Water 2026-04: four signals without BSN (each its own person), a debtor who is no resident and a
    # resident at an address in no known buurt: six signals, six persons; only signal 24 reached (2 days).
    water = signaal_cell(rows, ONBEKEND, "2026-04", "water")
    assert [water[m] for m in MEASURES] == [6, 6, 1, 1, 0.17, 2.0, 2.0]
    assert (water["gebiedsniveau"], water["gebiedsnaam"], water["onderdrukt"]) == ("wijk", "onbekend", False)
    assert water["inwoners"] is None and water["aantal_signalen_per_1000_inwoners"] is None


def test_small_cells_are_hidden(built):
    rows = built["rows"]["schuldhulp_vroegsignalen"]
    for code, maand, partnertype in [(CENTRUM, "2026-05", "energie"), (CENTRUM, "2026-05", "water"),
                                     (NOORD, "2026-05", "huur"), (ONBEKEND, "2026-05", "huur"),
                                     (NOORD, "2026-03", "zorg"), (GEMEENTE, "2024-07", "Totaal")]:
        hidden = signaal_cell(rows, code, maand, partnertype)
        assert (hidden["onderdrukt"], hidden["onderdrukking"]) == (True, "primair"), (code, maand, partnertype)
        assert all(hidden[m] is None for m in MEASURES + ["aantal_signalen_per_1000_inwoners"])
    # Every hidden cell has a second hidden cell in each of its totals, so none needs secondary suppression.
    assert sum(r["onderdrukking"] == "primair" for r in rows) == 20
    assert not any(r["onderdrukking"] == "secundair" for r in rows)


def test_months_cover_the_24_months_up_to_the_peildatum(built):
    rows = built["rows"]["schuldhulp_vroegsignalen"]
    # 2024-06-30 is one day too early; 2024-07-01 is the first day counted. Months have no 'Totaal'.
    assert {r["maand"] for r in rows} == {"2024-07", "2025-06", "2026-03", "2026-04", "2026-05"}
    assert {r["signaalpartnertype"] for r in rows} == {"huur", "energie", "water", "zorg", "Totaal"}
    assert len(rows) == 28


def test_overlap_with_wmo_and_jeugd_in_the_household(built):
    rows = built["rows"]["schuldhulp_overlap_wmo_jeugd"]
    # Centrum: households 1-6 (5 has two debtors). Wmo on the peildatum: 2 (the debtor), 3 (301, ending that day);
    # Jeugd: 1 (child 101), 3 (302); household 4's Wmo ended and its Jeugd has not started.
    # Sub-counts below 5 are hidden on their own (zero is published): the counted values, as published.
    assert [overlap_cell(rows, CENTRUM)[m] for m in OVERLAP_MEASURES] == [6, None, None, None]  # 6, 2, 2, 3
    # Noord: 7 (Wmo), 8, 11, 12 (child 1201 Jeugd), 13; household 10's only signal is 12 months old.
    assert [overlap_cell(rows, NOORD)[m] for m in OVERLAP_MEASURES] == [5, None, None, None]  # 5, 1, 1, 2
    # onbekend: household 9 (no known buurt), the non-resident debtor (his own Wmo) and five signals without BSN.
    assert [overlap_cell(rows, ONBEKEND)[m] for m in OVERLAP_MEASURES] == [7, None, 0, None]  # 7, 1, 0, 1
    gemeente = overlap_cell(rows, GEMEENTE)
    # Gemeente: 18, 4, 3, 6 counted; 6 stays published because the three wijken's parts (3, 2, 1) are all hidden.
    assert [gemeente[m] for m in OVERLAP_MEASURES] == [18, None, None, 6]
    assert (gemeente["gebiedsniveau"], gemeente["inwoners"], gemeente["huishoudens"]) == ("gemeente", 4000, 2000)
    assert len(rows) == 4 and not any(r["onderdrukt"] for r in rows)


def test_overlap_hides_a_wijk_below_the_threshold(spark, built):
    """With threshold 6 Noord (5 households) is hidden, and one more wijk so the gemeente total does not reveal it."""
    from jobs import gold

    patcher = pytest.MonkeyPatch()
    patcher.setenv("GGM_SUPPRESSION_THRESHOLD", "6")
    try:
        definition = gold.load_mart_definitions()["schuldhulp_overlap_wmo_jeugd"]
        rows = [r.asDict() for r in gold.build_mart(spark, definition, PEILDATUM).collect()]
    finally:
        patcher.undo()
    assert overlap_cell(rows, NOORD)["onderdrukking"] == "primair"
    # Centrum (6) is the smaller published wijk next to onbekend (7): hidden secondarily.
    assert overlap_cell(rows, CENTRUM)["onderdrukking"] == "secundair"
    assert overlap_cell(rows, CENTRUM)["aantal_ook_wmo"] is None
    assert [overlap_cell(rows, ONBEKEND)[m] for m in OVERLAP_MEASURES] == [7, None, 0, None]
    assert overlap_cell(rows, GEMEENTE)["aantal_huishoudens_met_signaal"] == 18


def test_status_and_idempotent_rerun(spark, built):
    from ggm_lakehouse.lake import LakeTable
    from jobs import gold

    tables = built["report"]["tables"]
    assert tables["schuldhulp_vroegsignalen"]["suppressed_cells"] == 20
    assert tables["schuldhulp_overlap_wmo_jeugd"]["rows"] == 4
    name = "schuldhulp_vroegsignalen"  # rerunning one mart keeps the test short; both go through the same code

    def status():
        [row] = LakeTable("gold", gold.STATUS_TABLE).read(spark).where(f"mart = '{name}'").collect()
        return row.asDict()

    status_before = status()
    version_before = LakeTable("gold", name).last_commit(spark)[0]

    again = gold.run(spark, PEILDATUM, marts=[name])

    assert again["tables"][name]["written"] is False
    assert LakeTable("gold", name).last_commit(spark)[0] == version_before
    assert status() == status_before
    assert (status_before["onderdrukte_cellen_primair"], status_before["onderdrukte_cellen_secundair"]) == (20, 0)
    assert status_before["rijen"] == 28 and status_before["drempel"] == 5
    assert {"VROEGSIGNAAL", "SIGNAALPARTNER", "CONTACTPOGING"} <= set(status_before["bronversies"])
