"""Vroegsignalering through bronze and silver: GGM tables, pseudonymised person keys, SCD2 versions.

The demo municipality delivers two daily exports (two days apart) into the drop zone; the
connector lands them, bronze ingests them and silver conforms VROEGSIGNAAL, VROEGSIGNAALZAAK,
SIGNAALPARTNER, AANLEVERENDEORGANISATIE and CONTACTPOGING. The test checks the GGM columns,
the keys that link a signal to its partner, zaak, CLIENT and NATUURLIJKPERSOON (built on the
keyed BSN pseudonym, never on the clear BSN) and that a signal changed on the second day gets
a new version.
"""
from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from connectors.base import ExtractWindow
from connectors.vroegsignalering import CONTACT_KANALEN, SIGNAALPARTNER_TYPES, VroegsignaleringConnector
from demo_gemeente.generator import DemoWorld
from demo_gemeente.vroegsignalering import write_vroegsignalering_deliveries

# Two exports two days apart (the day between is not delivered); with this seed some signals of day 1 are
# picked up or closed by day 2.
DAY1 = date(2026, 3, 6)
DAY2 = DAY1 + timedelta(days=2)
TABLES = ["SIGNAALPARTNER", "AANLEVERENDEORGANISATIE", "VROEGSIGNAALZAAK", "VROEGSIGNAAL", "CONTACTPOGING"]


@pytest.fixture(scope="module")
def conformed(spark, data_root):
    """Deliver, extract, bronze and silver for both days; returns the exported documents per day."""
    from ggm_lakehouse.config import dropzone_root, landing_root
    from jobs import bronze, silver

    world = DemoWorld(1500, seed=7)
    documents = {}
    reports = {}
    connector = VroegsignaleringConnector({"gemeentecode": "9999"})
    cached = []
    original_cache = silver.ConformContext.cache

    def recording_cache(self, frame):
        frame = original_cache(self, frame)
        cached.append(frame)
        return frame

    patcher = pytest.MonkeyPatch()
    patcher.setattr(silver.ConformContext, "cache", recording_cache)
    for day in (DAY1, DAY2):
        [export] = [p for p in write_vroegsignalering_deliveries(world.at(day), dropzone_root(), day, seed=5)
                    if p.suffix == ".json"]
        documents[day] = json.loads(export.read_text(encoding="utf-8"))
        run_id = f"vs-{day}"
        connector.extract(ExtractWindow.for_day(day, run_id), landing_root())
        assert connector.last_report["units_rejected"] == 0 and connector.last_report["files_rejected"] == []
        bronze.run(spark, day, run_id, source="vroegsignalering")
        reports[day] = silver.run(spark, day, run_id, tables=TABLES)["tables"]
        # Silver releases what it cached: a server that conforms day after day must not fill up.
        assert cached and all(not frame.storageLevel.useMemory and not frame.storageLevel.useDisk for frame in cached)
        assert all(entry.get("quarantined", {}) == {} for entry in reports[day].values()), reports[day]
    patcher.undo()
    return documents, reports


def _table(spark, name: str):
    from ggm_lakehouse.config import table_path

    return spark.read.format("delta").load(str(table_path("silver", name)))


def test_silver_tables_use_ggm_columns(spark, conformed, ggm_tables):
    for name in TABLES:
        frame = _table(spark, name)
        known = set(ggm_tables[name]["columns"]) | set(ggm_tables[name].get("columns_union", []))
        data_columns = {c for c in frame.columns if not c.startswith("DWH_")}
        assert data_columns <= known, f"{name}: {sorted(data_columns - known)} not in GGM v2.5.1"
        assert frame.where("DWH_BRONSYSTEEM = 'VROEGSIGNALERING'").count() == frame.count() > 0


def test_signals_link_partner_zaak_client_and_person_by_pseudonym(spark, conformed):
    from ggm_lakehouse.pseudonym import load_key, pseudonymise
    from jobs.silver import surrogate_key_value

    documents, _ = conformed
    key = load_key()
    latest = {}
    for day in (DAY1, DAY2):
        for signal in documents[day]["signalen"]:
            latest[signal["signaalId"]] = signal
    current = {r["VROEGSIGNAAL_ID"]: r for r in _table(spark, "VROEGSIGNAAL").where("DWH_DATUMTIJDGELDIGTOTMET IS NULL").collect()}
    assert len(current) == len(latest)
    with_bsn = 0
    for signaal_id, signal in latest.items():
        row = current[surrogate_key_value("VROEGSIGNAAL", signaal_id)]
        assert row["SIGNAALDATUM"] == date.fromisoformat(signal["signaaldatum"])
        assert float(row["BEDRAG"]) == signal["achterstand"]["bedrag"]
        assert row["VERZONDENDOOR_SIGNAALPARTNER_ID"] == surrogate_key_value("SIGNAALPARTNER", signal["signaalpartner"]["kvkNummer"])
        if "zaak" in signal:
            assert row["OPGEPAKTIN_VROEGSIGNAALZAAK_ID"] == surrogate_key_value("VROEGSIGNAALZAAK", signal["zaak"]["zaakId"])
            assert row["STATUS_ENUM_ID"] is None
        else:
            assert row["OPGEPAKTIN_VROEGSIGNAALZAAK_ID"] is None and row["STATUS_ENUM_ID"] is not None
        bsn = signal["debiteur"].get("bsn")
        if bsn is None:
            assert row["BETREFT_RECHTSPERSOON_ID"] is None and row["BETREFT_CLIENT_ID"] is None
            continue
        with_bsn += 1
        pseudonym = pseudonymise(bsn, key)
        # The same keys natuurlijkpersoon.yaml and client.yaml compute, so the joins need no clear BSN.
        assert row["BETREFT_RECHTSPERSOON_ID"] == surrogate_key_value("NATUURLIJKPERSOON", pseudonym)
        assert row["BETREFT_CLIENT_ID"] == surrogate_key_value("CLIENT", pseudonym)
        assert row["BETREFT_RECHTSPERSOON_ID"] != surrogate_key_value("NATUURLIJKPERSOON", bsn)
    assert with_bsn > 0

    partners = {r["SIGNAALPARTNER_ID"]: r["TYPE_ENUM_ID"] for r in _table(spark, "SIGNAALPARTNER").collect()}
    expected = {surrogate_key_value("SIGNAALPARTNER", s["signaalpartner"]["kvkNummer"]):
                SIGNAALPARTNER_TYPES[s["signaalpartner"]["type"]][0] for s in latest.values()}
    assert partners == expected
    organisaties = {r["KVK_NUMMER"]: r["NAAM"] for r in _table(spark, "AANLEVERENDEORGANISATIE").collect()}
    assert organisaties == {s["aanleverendeOrganisatie"]["kvkNummer"]: s["aanleverendeOrganisatie"]["naam"]
                            for s in latest.values()}


def test_zaken_and_contactpogingen_carry_follow_up(spark, conformed):
    from jobs.silver import surrogate_key_value

    documents, _ = conformed
    zaken = {}
    for day in (DAY1, DAY2):
        for signal in documents[day]["signalen"]:
            if "zaak" in signal:
                zaken[signal["zaak"]["zaakId"]] = signal["zaak"]
    rows = {r["VROEGSIGNAALZAAK_ID"]: r for r in _table(spark, "VROEGSIGNAALZAAK").where("DWH_DATUMTIJDGELDIGTOTMET IS NULL").collect()}
    assert len(rows) == len(zaken) > 0
    for zaak_id, zaak in zaken.items():
        row = rows[surrogate_key_value("VROEGSIGNAALZAAK", zaak_id)]
        assert row["DATUM_OPGEPAKT"] == date.fromisoformat(zaak["datumOpgepakt"])
        assert row["ZAAK_ID"] == surrogate_key_value("ZAAK", zaak_id)
        assert row["OPGEPAKTNAMENS_GEMEENTE_ID"] == surrogate_key_value("GEMEENTE", "9999")
        assert (row["RESULTAAT_ENUM_ID"] is None) == ("resultaat" not in zaak)
    pogingen = {(r["HEEFT_VROEGSIGNAALZAAK_ID"], r["DATUM"]): r for r in _table(spark, "CONTACTPOGING").collect()}
    expected = [(zaak_id, p) for zaak_id, zaak in zaken.items() for p in zaak["contactpogingen"]]
    assert len(pogingen) == len(expected) > 0
    for zaak_id, poging in expected:
        row = pogingen[(surrogate_key_value("VROEGSIGNAALZAAK", zaak_id), date.fromisoformat(poging["datum"]))]
        assert row["BEREIKT"] == (poging["resultaat"] != "geen_contact")
        assert row["SOORT_ENUM_ID"] == CONTACT_KANALEN[poging["kanaal"]][0]


def test_changed_signal_gets_a_new_version_and_no_clear_bsn_reaches_silver(spark, conformed):
    from jobs.silver import surrogate_key_value

    documents, reports = conformed
    first = {s["signaalId"]: s for s in documents[DAY1]["signalen"]}
    second = {s["signaalId"]: s for s in documents[DAY2]["signalen"]}
    # A signal exported on both days changes its VROEGSIGNAAL row only when its status changed (picked up,
    # not picked up); a new contactpoging or a closed zaak changes CONTACTPOGING / VROEGSIGNAALZAAK instead.
    history = _table(spark, "VROEGSIGNAAL")
    expected_versions = {signaal_id: 2 if first[signaal_id]["status"] != second[signaal_id]["status"] else 1
                         for signaal_id in first.keys() & second.keys()}
    assert 2 in expected_versions.values(), "with this seed a signal of day 1 is picked up by day 2"
    for signaal_id, count in expected_versions.items():
        versions = history.where(f"VROEGSIGNAAL_ID = {surrogate_key_value('VROEGSIGNAAL', signaal_id)}")
        assert versions.count() == count
        assert versions.where("DWH_DATUMTIJDGELDIGTOTMET IS NULL").count() == 1
    assert reports[DAY2]["VROEGSIGNAAL"]["closed"] == 0  # incremental: signals absent on day 2 stay open
    closed_zaken = {s["zaak"]["zaakId"] for s in second.values() if s.get("zaak", {}).get("resultaat")} - {
        s["zaak"]["zaakId"] for s in first.values() if s.get("zaak", {}).get("resultaat")}
    zaken = _table(spark, "VROEGSIGNAALZAAK")
    for zaak_id in closed_zaken & {s["zaak"]["zaakId"] for s in first.values() if "zaak" in s}:
        versions = zaken.where(f"VROEGSIGNAALZAAK_ID = {surrogate_key_value('VROEGSIGNAALZAAK', zaak_id)}")
        assert sorted(r["RESULTAAT_ENUM_ID"] is None for r in versions.collect()) == [False, True]

    bsns = {s["debiteur"]["bsn"] for d in documents.values() for s in d["signalen"] if "bsn" in s["debiteur"]}
    assert bsns
    for name in TABLES:
        for row in _table(spark, name).collect():
            assert not bsns & {str(v) for v in row.asDict().values()}, name
