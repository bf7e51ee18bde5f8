"""iWmo and iJw messages through drop zone → landing → bronze → silver GGM tables.

Real sample messages (copied at test time from ``specs/iwmo-ijw`` of the reference material, see tests/specs.py) go through the real connectors and
the real bronze and silver jobs; BRP persons land as a BRP Personen batch so that CLIENT can be joined to
NATUURLIJKPERSOON through the BSN pseudonym.
"""
from __future__ import annotations

import json
from datetime import date

import pytest

from connectors.base import ExtractWindow
from connectors.iwmo import IjwConnector, IwmoConnector
from ggm_lakehouse.landing import BatchWriter
from tests.specs import SHARED, available, missing_reason

SPECS = SHARED / "specs" / "iwmo-ijw"
# Every test needs the published samples; a module-level mark skips before the Spark session starts.
pytestmark = pytest.mark.skipif(not available("specs/iwmo-ijw"), reason=missing_reason("specs/iwmo-ijw"))
DAY1, DAY2 = date(2026, 4, 6), date(2026, 4, 7)
SAMPLE_BSNS = ("999900006", "999900018")
IWMO_TABLES = ["CLIENT", "TOEWIJZING", "BESCHIKTE_VOORZIENING", "VOORZIENING", "BESCHIKKING", "DECLARATIE",
               "DECLARATIEREGEL", "LEVERANCIER"]
AGB_KVK = {"65656055": "69599084", "42420001": "69599068"}


def _land_brp_persons(day: date, run_id: str) -> None:
    from ggm_lakehouse.config import landing_root

    personen = [
        {"burgerservicenummer": bsn, "naam": {"voornamen": "Tim", "geslachtsnaam": f"Wit{n}"},
         "geslacht": {"code": "M"}, "geboorte": {"datum": {"datum": "1967-08-13"}}}
        for n, bsn in enumerate(SAMPLE_BSNS)
    ]
    body = json.dumps({"type": "RaadpleegMetBurgerservicenummer", "personen": personen}).encode()
    with BatchWriter(landing_root(), "brp", "personen", ExtractWindow.for_day(day, run_id), endpoint="POST /personen",
                     record_path="personen") as writer:
        writer.add_part(body, request={"method": "POST", "url": "test://brp"}, status=200)


def _deliver(zone, standard: str, names: list[str]) -> None:
    zone.mkdir(parents=True, exist_ok=True)
    for name in names:
        (zone / name).write_bytes((SPECS / standard / "berichten" / name).read_bytes())


@pytest.fixture(scope="module")
def conformed(spark, data_root):
    """Day 1: toewijzingen, start levering, verzoek, declaraties of both laws; day 2: stop levering (iWmo)."""
    from ggm_lakehouse.config import dropzone_root, landing_root
    from jobs import bronze, silver

    register = data_root / "agb_kvk.csv"
    register.write_text("agb_code;kvk_nummer\n" + "".join(f"{a};{k}\n" for a, k in AGB_KVK.items()))
    # Both laws use the municipality's one AGB→KvK register (one LEVERANCIER per AGB-code).
    connectors = [
        IwmoConnector({"xsd_dir": str(SPECS / "iwmo" / "xsd"), "agb_kvk_mapping": str(register)}),
        IjwConnector({"xsd_dir": str(SPECS / "ijw" / "xsd"), "agb_kvk_mapping": str(register)}),
    ]
    deliveries = {
        DAY1: {"iwmo": ["WMO301.xml", "WMO305.xml", "WMO315.xml", "WMO323.xml"], "ijw": ["JW301.xml", "JW323.xml"]},
        DAY2: {"iwmo": ["WMO307.xml"], "ijw": []},
    }
    reports = {}
    for day, per_source in deliveries.items():
        run_id = f"iwmo-test-{day}"
        for connector in connectors:
            if not per_source[connector.name]:
                continue  # iJw has no run on day 2: the union mappings keep their versions (on_missing_batch keep)
            _deliver(dropzone_root() / connector.name, connector.name, per_source[connector.name])
            connector.extract(ExtractWindow.for_day(day, run_id), landing_root())
            assert connector.last_report["files_rejected"] == [], connector.last_report
        if day == DAY1:
            _land_brp_persons(day, run_id)
            bronze.run(spark, day, run_id)
        else:
            bronze.run(spark, day, run_id, source="iwmo")
        tables = ["NATUURLIJKPERSOON", *IWMO_TABLES] if day == DAY1 else ["BESCHIKTE_VOORZIENING"]
        reports[day] = silver.run(spark, day, run_id, tables=tables)["tables"]
    return reports


def _silver(spark, table: str):
    from ggm_lakehouse.config import table_path

    return spark.read.format("delta").load(str(table_path("silver", table)))


def test_every_table_conforms_with_ggm_columns_and_only_the_real_duplicate_is_quarantined(conformed, spark, ggm_tables):
    # The iJw sample declaratie reuses ReferentieNummer RN004 for two prestaties of different periods; silver
    # keeps one and quarantines the other as a conflicting duplicate of the business key.
    quarantined = {(day, table): entry["quarantined"] for day, report in conformed.items()
                   for table, entry in report.items() if entry.get("quarantined")}
    assert quarantined == {(DAY1, "DECLARATIEREGEL"): {"duplicate_key": 1}}
    for name in IWMO_TABLES:
        frame = _silver(spark, name)
        gg = ggm_tables[name]
        known = set(gg["columns"]) | set(gg.get("columns_union", []))
        data_columns = {c for c in frame.columns if not c.startswith("DWH_")}
        assert data_columns <= known, f"{name}: {sorted(data_columns - known)} not in GGM"
        assert {r["DWH_BRONSYSTEEM"] for r in frame.collect()} == {"IWMO_IJW"}


def test_client_joins_natuurlijkpersoon_through_the_pseudonym(conformed, spark):
    from ggm_lakehouse.pseudonym import load_key, pseudonymise
    from jobs.silver import surrogate_key_value

    clients = _silver(spark, "CLIENT")
    persons = _silver(spark, "NATUURLIJKPERSOON")
    joined = clients.join(persons, "NATUURLIJKPERSOON_ID").select("CLIENT_ID", "GESLACHTSNAAM").collect()
    # Both sample BSNs are clients (301/305/315/323) and BRP persons; iWmo and iJw give one CLIENT per person.
    assert clients.count() == 2 and sorted(r["GESLACHTSNAAM"] for r in joined) == ["Wit0", "Wit1"]
    key = load_key()
    expected = {surrogate_key_value("CLIENT", pseudonymise(bsn, key)) for bsn in SAMPLE_BSNS}
    assert {r["CLIENT_ID"] for r in joined} == expected
    beschikking = _silver(spark, "BESCHIKKING").collect()
    assert [(r["CODE"], r["WET"]) for r in beschikking] == [("1234", "Wmo")]
    assert beschikking[0]["CLIENT_ID"] == surrogate_key_value("CLIENT", pseudonymise("999900006", key))


def test_no_clear_bsn_in_silver(conformed, spark):
    from ggm_lakehouse.config import table_path

    for name in ["NATUURLIJKPERSOON", *IWMO_TABLES]:
        text = "\n".join(json.dumps(r.asDict(), default=str) for r in _silver(spark, name).collect())
        assert not any(bsn in text for bsn in SAMPLE_BSNS), name
        for path in table_path("silver", name).rglob("*"):
            if path.is_file():
                assert not any(bsn.encode() in path.read_bytes() for bsn in SAMPLE_BSNS), path


def test_toewijzingen_of_both_laws_reach_one_table(conformed, spark):
    from jobs.silver import surrogate_key_value

    rows = {(r["WET_ENUM_ID"], r["TOEWIJZINGNUMMER"]): r for r in _silver(spark, "TOEWIJZING").collect()}
    assert set(rows) == {(9, "101"), (4, "300201"), (4, "300202")}
    wmo = rows[(9, "101")]
    assert (str(wmo["DATUMSTARTTOEWIJZING"]), str(wmo["DATUMEINDETOEWIJZING"]), wmo["OMVANG"]) == ("2023-01-01", "2023-12-31", "10")
    assert (wmo["EENHEID_ENUM_ID"], wmo["FREQUENTIE_ENUM_ID"]) == (5, 5)  # minuut, per dag
    assert wmo["LEVERT_VOORZIENING_RECHTSPERSOON_ID"] == surrogate_key_value("LEVERANCIER", "42420001")
    assert rows[(4, "300201")]["EENHEID_ENUM_ID"] == 8  # uur
    products = {(r["WET_ENUM_ID"], r["CODE"], r["PRODUCTCODE"]) for r in _silver(spark, "VOORZIENING").collect()}
    assert {(9, "01", "01A01"), (4, "55", "55A11"), (9, "02", "BCDEF")} <= products


def test_stop_levering_updates_the_same_beschikte_voorziening(conformed, spark):
    from jobs.silver import surrogate_key_value

    frame = _silver(spark, "BESCHIKTE_VOORZIENING")
    key = surrogate_key_value("BESCHIKTE_VOORZIENING", "WMO", "300201")
    history = frame.where(f"BESCHIKTE_VOORZIENING_ID = {key}").orderBy("DWH_DATUMTIJDGELDIGVANAF").collect()
    assert [(r["STATUS"], str(r["DATUMSTART"]), str(r["DATUMEINDE"])) for r in history] == [
        ("gestart", "2025-04-03", "None"), ("gestopt", "2025-04-03", "2025-07-18")]
    assert history[0]["DWH_DATUMTIJDGELDIGTOTMET"].date() == DAY2 and history[1]["DWH_DATUMTIJDGELDIGTOTMET"] is None
    assert history[1]["TOEGEWEZEN_PRODUCT_TOEWIJZING_ID"] == surrogate_key_value("TOEWIJZING", "WMO", "300201")
    assert history[1]["IS_VOORZIENING_VOORZIENING_ID"] == surrogate_key_value("VOORZIENING", "WMO", "01", "01A11")
    assert frame.where("DWH_DATUMTIJDGELDIGTOTMET IS NULL").count() == 2


def test_declaraties_and_regels_with_amounts_and_links(conformed, spark):
    from decimal import Decimal

    from jobs.silver import surrogate_key_value

    declaraties = {r["DECLARATIE_ID"]: r for r in _silver(spark, "DECLARATIE").collect()}
    wmo_key = surrogate_key_value("DECLARATIE", "WMO", "65656055", "DN001")
    assert declaraties[wmo_key]["BEDRAG"] == Decimal("580.00")
    assert declaraties[wmo_key]["INGEDIEND_DOOR_RECHTSPERSOON_ID"] == surrogate_key_value("LEVERANCIER", "65656055")
    regels = _silver(spark, "DECLARATIEREGEL").collect()
    wmo_regels = [r for r in regels if r["VALT_BINNEN_DECLARATIE_ID"] == wmo_key]
    assert len(wmo_regels) == 4 and sum(r["BEDRAG"] for r in wmo_regels) == Decimal("580.00")
    assert {r["IS_OP_BASIS_VAN_TOEWIJZING_ID"] for r in wmo_regels} == {
        surrogate_key_value("TOEWIJZING", "WMO", n) for n in ("20072", "200730", "20074", "20073")}
    # The iJw declaratie lands in the same tables (five prestaties, one a conflicting duplicate).
    assert len(declaraties) == 2 and len(regels) == 8


def test_leverancier_carries_the_kvk_nummer_of_the_register(conformed, spark):
    rows = {r["AGBCODE"]: r for r in _silver(spark, "LEVERANCIER").collect()}
    assert {"65656055", "42420001"} <= set(rows)
    assert rows["65656055"]["LEVERANCIERSCODE"] == AGB_KVK["65656055"]
    assert rows["65656055"]["SOORTLEVERANCIER"] == "ZORGAANBIEDER"
