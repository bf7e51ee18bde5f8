"""The veiligheid and bedrijfsvoering marts on known silver: every expected cell is counted by hand below.

Both marts are built from their real definition files (gold_marts/veiligheid_meldingen.yaml,
gold_marts/bedrijfsvoering_formatie.yaml) by the engine in jobs/gold.py, on small silver tables
written with tests/gold_support.py (two wijken, four buurten; CBS inwoners per buurt 1,000 / 1,000 /
1,500 / 500). The suppression threshold is the default 5.
"""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest

from tests.gold_support import buurt_id, write_population, write_silver_table

PEILDATUM = date(2026, 6, 8)


# -- veiligheid_meldingen ---------------------------------------------------------------------

# Address id → (buurtcode, postcode, huisnummer, huisletter, toevoeging); identificatie 9999200000<id:06>.
ADRESSEN = {
    **{a: ("BU99990101", f"{9000 + a:04d}AB", a, None, None) for a in range(1, 15)},
    **{a: ("BU99990201", f"{9000 + a:04d}AB", a, None, None) for a in (20, 21, 22, 24)},
    23: ("BU99990201", "9023AB", 23, "A", "2"),
    # Same postcode and huisnummer as 23 but without huisletter/toevoeging, in another buurt: a typed
    # '9023AB 23A-2' must match 23 only.
    25: ("BU99990102", "9023AB", 23, None, None),
    30: ("BU99990202", "9030AB", 30, None, None),
}


def identificatie(adres: int) -> str:
    return f"9999200000{adres:06d}"


# (day, soort, LOCATIE, geseponeerd)
MELDINGEN = [
    # BU99990101, May 2026 — Klacht: 7 meldingen at 7 addresses, 2 geseponeerd: published.
    *[(date(2026, 5, 4 + a), "Klacht", identificatie(a), a <= 2) for a in range(1, 8)],
    # Signaal: 5 meldingen about 2 addresses (8 three times, once typed; 9 twice): 2 addresses < 5, hidden (primair).
    (date(2026, 5, 12), "Signaal", identificatie(8), False),
    (date(2026, 5, 13), "Signaal", identificatie(8), False),
    (date(2026, 5, 14), "Signaal", "9008AB 8", False),
    (date(2026, 5, 15), "Signaal", identificatie(9), False),
    (date(2026, 5, 16), "Signaal", identificatie(9), False),
    # Eigen constatering: 5 meldingen at 5 addresses; the smallest published soort next to the hidden Signaal,
    # so it is hidden too (secundair), else the buurt total minus Klacht would reveal Signaal.
    *[(date(2026, 5, 20), "Eigen constatering", identificatie(a), False) for a in range(10, 15)],
    # BU99990201, April 2026 — Klacht: 5 meldingen at 5 addresses, two of them typed: published.
    *[(date(2026, 4, 1), "Klacht", identificatie(a), False) for a in (20, 21, 22)],
    (date(2026, 4, 2), "Klacht", "9023AB 23A-2", True),
    (date(2026, 4, 3), "Klacht", "9024AB 24", False),
    # November 2025: an address the BAG of the gemeente does not know → buurt 'onbekend'.
    (date(2025, 11, 5), "Verzoek om handhaving", "9999200099999999", False),
    # The window: 1 July 2024 up to the peildatum (24 calendar months up to June 2026).
    (date(2024, 7, 1), "Klacht", identificatie(30), False),
    (date(2024, 6, 30), "Klacht", identificatie(30), False),  # before the window
    (PEILDATUM, "Signaal", identificatie(30), False),
    (date(2026, 6, 9), "Signaal", identificatie(30), False),  # after the peildatum
]


@pytest.fixture(scope="module")
def silver(spark, data_root):
    """Write the area tables, addresses, meldingen and HR tables once for both marts."""
    # One resident per buurt, so the engine's area and INWONERS inputs exist.
    write_population(spark, {a: (ADRESSEN[a][0], [(f"pseudo-{a}", date(1980, 1, 1))]) for a in (1, 20, 25, 30)})
    write_silver_table(spark, "NUMMERAANDUIDING", [
        {"NUMMERAANDUIDING_ID": a, "IDENTIFICATIE": identificatie(a), "POSTCODE": postcode, "HUISNUMMER": nummer,
         "HUISLETTER": letter, "HUISNUMMERTOEVOEGING": toevoeging, "LIGT_IN_BUURT_ID": buurt_id(buurt)}
        for a, (buurt, postcode, nummer, letter, toevoeging) in ADRESSEN.items()
    ], "NUMMERAANDUIDING_ID BIGINT, IDENTIFICATIE STRING, POSTCODE STRING, HUISNUMMER INT, HUISLETTER STRING, "
       "HUISNUMMERTOEVOEGING STRING, LIGT_IN_BUURT_ID BIGINT")
    vth, aanvragen = [], []
    for number, (day, soort, locatie, geseponeerd) in enumerate(MELDINGEN, start=1):
        key = 5000 + number
        status = "Geseponeerd" if geseponeerd else "In behandeling"
        vth.append({"AANVRAAGOFMELDING_ID": key, "REFERENTIENUMMER": f"M-{day.year}-{number:05d}",
                    "SOORTVTHMELDING": soort, "LOCATIE": locatie, "GESEPONEERD": geseponeerd, "STATUS": status})
        aanvragen.append({"AANVRAAGOFMELDING_ID": key, "IDENTIFICATIE": f"M-{day.year}-{number:05d}",
                          "DATUMAANMAAK": day, "SOORT": soort, "STATUS": status})
    write_silver_table(spark, "VTH_MELDING", vth, "AANVRAAGOFMELDING_ID BIGINT, REFERENTIENUMMER STRING, "
                       "SOORTVTHMELDING STRING, LOCATIE STRING, GESEPONEERD BOOLEAN, STATUS STRING")
    write_silver_table(spark, "AANVRAAGOFMELDING", aanvragen, "AANVRAAGOFMELDING_ID BIGINT, IDENTIFICATIE STRING, "
                       "DATUMAANMAAK DATE, SOORT STRING, STATUS STRING")
    write_hr_tables(spark)


@pytest.fixture(scope="module")
def meldingen(spark, silver):
    from jobs import gold

    definition = gold.load_mart_definition(gold.marts_dir() / "veiligheid_meldingen.yaml")
    return [r.asDict() for r in gold.build_mart(spark, definition, PEILDATUM).collect()]


def melding_cell(rows, level, code, maand, soort):
    matches = [r for r in rows if (r["gebiedsniveau"], r["gebiedscode"], r["maand"], r["soort_melding"])
               == (level, code, maand, soort)]
    assert len(matches) == 1, (level, code, maand, soort, matches)
    return matches[0]


def test_meldingen_count_per_buurt_month_and_soort(meldingen):
    klacht = melding_cell(meldingen, "buurt", "BU99990101", "2026-05", "Klacht")
    assert (klacht["aantal_meldingen"], klacht["aantal_adressen"], klacht["aantal_geseponeerd"]) == (7, 7, 2)
    assert klacht["onderdrukt"] is False and klacht["onderdrukking"] is None
    assert klacht["wijkcode"] == "WK999901" and klacht["gebiedsnaam"] == "Oude Kern"
    assert klacht["inwoners"] == 1000 and klacht["aantal_meldingen_per_1000_inwoners"] == pytest.approx(7.0)
    # The buurt's total over the soorten: 7 + 5 + 5 meldingen about 7 + 2 + 5 addresses.
    totaal = melding_cell(meldingen, "buurt", "BU99990101", "2026-05", "Totaal")
    assert (totaal["aantal_meldingen"], totaal["aantal_adressen"], totaal["aantal_geseponeerd"]) == (17, 14, 2)
    assert melding_cell(meldingen, "wijk", "WK999901", "2026-05", "Totaal")["aantal_meldingen"] == 17
    assert melding_cell(meldingen, "gemeente", "GM9999", "2026-05", "Totaal")["aantal_meldingen"] == 17


def test_typed_addresses_resolve_to_their_buurt_on_the_exact_address(meldingen):
    # 3 meldingen by nummeraanduiding + '9023AB 23A-2' (not the plain 9023AB 23 in Haven) + '9024AB 24'.
    cell = melding_cell(meldingen, "buurt", "BU99990201", "2026-04", "Klacht")
    assert (cell["aantal_meldingen"], cell["aantal_adressen"], cell["aantal_geseponeerd"]) == (5, 5, 1)
    assert cell["aantal_meldingen_per_1000_inwoners"] == pytest.approx(3.3)  # 5 per 1,500 inwoners
    assert not [r for r in meldingen if r["gebiedscode"] == "BU99990102"]
    # The address the BAG does not know counts under 'onbekend' (hidden: one address).
    onbekend = melding_cell(meldingen, "buurt", "onbekend", "2025-11", "Verzoek om handhaving")
    assert onbekend["onderdrukt"] and onbekend["aantal_meldingen"] is None


def test_cells_about_few_addresses_are_hidden_however_many_meldingen(meldingen):
    signaal = melding_cell(meldingen, "buurt", "BU99990101", "2026-05", "Signaal")
    assert signaal["onderdrukking"] == "primair"
    assert signaal["aantal_meldingen"] is None and signaal["aantal_adressen"] is None
    assert signaal["aantal_meldingen_per_1000_inwoners"] is None
    eigen = melding_cell(meldingen, "buurt", "BU99990101", "2026-05", "Eigen constatering")
    assert eigen["onderdrukking"] == "secundair" and eigen["aantal_meldingen"] is None
    # The wijk and gemeente Signaal cells hold only this buurt's meldingen: hidden too.
    for level, code in (("wijk", "WK999901"), ("gemeente", "GM9999")):
        assert melding_cell(meldingen, level, code, "2026-05", "Signaal")["onderdrukt"]
    published = [r["aantal_adressen"] for r in meldingen if not r["onderdrukt"]]
    assert published and min(published) >= 5


def test_only_the_24_months_up_to_the_peildatum_count(meldingen):
    assert {r["maand"] for r in meldingen} == {"2024-07", "2025-11", "2026-04", "2026-05", "2026-06"}
    # June 2026 holds the melding of the peildatum itself and not the one of the day after.
    assert {r["peildatum"] for r in meldingen} == {PEILDATUM}


# -- bedrijfsvoering_formatie -------------------------------------------------------------------

EENHEDEN = {"Sociaal Domein": 1, "Financien": 2, "Burgerzaken": 3, "Openbare Ruimte": 4}
# (personeelsnummer, eenheid, percentage, extern, datum in dienst, datum uit dienst)
INZET = [
    # Sociaal Domein: 8 eigen (6.9 fte) + 2 inhuur (1.6 fte) in service on the peildatum.
    *[(f"1000{n:02d}", "Sociaal Domein", "100.00", False, date(2015, 1, 1), None) for n in range(1, 6)],
    ("100006", "Sociaal Domein", "80.00", False, date(2020, 3, 1), None),
    ("100007", "Sociaal Domein", "50.00", False, date(2021, 9, 1), PEILDATUM),  # last day in service: counts
    ("100008", "Sociaal Domein", "60.00", False, date(2026, 6, 8), None),       # first day: counts
    ("100009", "Sociaal Domein", "100.00", True, date(2026, 1, 1), None),
    ("100010", "Sociaal Domein", "60.00", True, date(2026, 2, 1), date(2026, 12, 31)),
    ("100011", "Sociaal Domein", "100.00", False, date(2010, 1, 1), date(2026, 6, 7)),  # left: not counted
    ("100012", "Sociaal Domein", "100.00", False, date(2026, 6, 9), None),              # not yet: not counted
    # Financien: 3 eigen (2.5 fte): a small unit, hidden (primair).
    ("200001", "Financien", "100.00", False, date(2012, 1, 1), None),
    ("200002", "Financien", "100.00", False, date(2013, 1, 1), None),
    ("200003", "Financien", "50.00", False, date(2014, 1, 1), None),
    # Burgerzaken: 6 eigen (5.6667 fte).
    *[(f"3000{n:02d}", "Burgerzaken", "100.00", False, date(2016, 1, 1), None) for n in range(1, 5)],
    ("300005", "Burgerzaken", "88.89", False, date(2016, 1, 1), None),
    ("300006", "Burgerzaken", "77.78", False, date(2016, 1, 1), None),
    # Openbare Ruimte: 7 eigen (6.4 fte).
    *[(f"4000{n:02d}", "Openbare Ruimte", "100.00", False, date(2017, 1, 1), None) for n in range(1, 7)],
    ("400007", "Openbare Ruimte", "40.00", False, date(2017, 1, 1), None),
]
# 300001 moved from Sociaal Domein to Burgerzaken on 1 March 2026: the closed version must not count.
OLD_VERSION = ("300001", "Sociaal Domein", "100.00", datetime(2000, 1, 1), datetime(2026, 3, 1))


def write_hr_tables(spark) -> None:
    from jobs.silver import surrogate_key_value

    write_silver_table(spark, "ORGANISATORISCHEEENHEID",
                       [{"ORGANISATORISCHEEENHEID_ID": key, "NAAM": naam} for naam, key in EENHEDEN.items()],
                       "ORGANISATORISCHEEENHEID_ID BIGINT, NAAM STRING")
    inzet_rows, medewerkers = [], []
    for nummer, eenheid, percentage, extern, begin, einde in INZET:
        inzet_rows.append({"INZET_ID": surrogate_key_value("INZET", nummer), "PERCENTAGE": percentage,
                           "DATUMBEGIN": begin, "DATUMEINDE": einde,
                           "INZET_BIJ_ORGANISATORISCHEEENHEID_ID": EENHEDEN[eenheid],
                           **({"DWH_DATUMTIJDGELDIGVANAF": datetime(2026, 3, 1)} if nummer == OLD_VERSION[0] else {})})
        medewerkers.append({"MEDEWERKER_ID": surrogate_key_value("MEDEWERKER", nummer),
                            "MEDEWERKERIDENTIFICATIE": nummer, "EXTERN": extern,
                            "DATUMINDIENST": begin, "DATUMUITDIENST": einde})
    nummer, eenheid, percentage, valid_from, valid_to = OLD_VERSION
    inzet_rows.append({"INZET_ID": surrogate_key_value("INZET", nummer), "PERCENTAGE": percentage,
                       "DATUMBEGIN": date(2016, 1, 1), "INZET_BIJ_ORGANISATORISCHEEENHEID_ID": EENHEDEN[eenheid],
                       "DWH_DATUMTIJDGELDIGVANAF": valid_from, "DWH_DATUMTIJDGELDIGTOTMET": valid_to})
    write_silver_table(spark, "INZET", inzet_rows, "INZET_ID BIGINT, PERCENTAGE STRING, DATUMBEGIN DATE, "
                       "DATUMEINDE DATE, INZET_BIJ_ORGANISATORISCHEEENHEID_ID BIGINT")
    write_silver_table(spark, "MEDEWERKER", medewerkers, "MEDEWERKER_ID BIGINT, MEDEWERKERIDENTIFICATIE STRING, "
                       "EXTERN BOOLEAN, DATUMINDIENST DATE, DATUMUITDIENST DATE")


@pytest.fixture(scope="module")
def formatie(spark, silver):
    from jobs import gold

    definition = gold.load_mart_definition(gold.marts_dir() / "bedrijfsvoering_formatie.yaml")
    return {(r["organisatorische_eenheid"], r["dienstverband"]): r.asDict()
            for r in gold.build_mart(spark, definition, PEILDATUM).collect()}


def test_formatie_counts_medewerkers_in_service_on_the_peildatum(formatie):
    openbare_ruimte = formatie[("Openbare Ruimte", "Eigen personeel")]
    assert openbare_ruimte["aantal_medewerkers"] == 7 and openbare_ruimte["fte"] == Decimal("6.4000")
    assert not openbare_ruimte["onderdrukt"]
    # Sociaal Domein: 8 eigen + 2 inhuur; the leaver, the future hire and 300001's old version do not count.
    sociaal = formatie[("Sociaal Domein", "Totaal")]
    assert sociaal["aantal_medewerkers"] == 10 and sociaal["fte"] == Decimal("8.5000")
    alles = formatie[("Totaal", "Totaal")]
    assert alles["aantal_medewerkers"] == 10 + 3 + 6 + 7
    assert alles["fte"] == Decimal("8.5000") + Decimal("2.5000") + Decimal("5.6667") + Decimal("6.4000")
    assert set(formatie) >= {(e, d) for e in [*EENHEDEN, "Totaal"] for d in ("Totaal",)}
    assert not any(d == "onbekend" or e == "onbekend" for e, d in formatie)


def test_small_units_and_their_fte_are_hidden(formatie):
    inhuur = formatie[("Sociaal Domein", "Inhuur")]
    assert inhuur["onderdrukking"] == "primair" and inhuur["aantal_medewerkers"] is None and inhuur["fte"] is None
    financien = formatie[("Financien", "Eigen personeel")]
    assert financien["onderdrukking"] == "primair" and financien["fte"] is None
    # Sociaal Domein's total is published, so its eigen personeel would reveal the inhuur: hidden too.
    assert formatie[("Sociaal Domein", "Eigen personeel")]["onderdrukking"] == "secundair"
    published = [r["aantal_medewerkers"] for r in formatie.values() if not r["onderdrukt"]]
    assert published and min(published) >= 5
