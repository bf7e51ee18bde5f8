"""Vroegsignalering schulden: demo deliveries, the JSON and CSV parsers, and landing through the drop zone.

Everything runs on real files: the demo municipality writes its daily JSON export and weekly
partner CSV into a drop zone, and ``VroegsignaleringConnector.extract`` (the shared drop-zone
framework) lands, archives or quarantines them. Hand-written files cover the failure cases:
a schema violation, a BSN failing the elfproef, duplicate signals, a file that is not JSON, an
empty file and a CSV row with a bad Dutch decimal.
"""
from __future__ import annotations

import json
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

import pytest

from connectors.base import ExtractWindow
from connectors.dropzone import FileRejected, ParsedUnit, Rejection
from connectors.vroegsignalering import SIGNAAL_SCHEMA, VroegsignaleringConnector
from demo_gemeente.generator import DemoWorld, age_in_years
from demo_gemeente.vroegsignalering import PARTNERS, write_vroegsignalering_deliveries
from ggm_lakehouse.bsn import is_valid_bsn
from ggm_lakehouse.landing import iter_batch_records

MONDAY = date(2026, 3, 2)
WEEK = [MONDAY + timedelta(days=i) for i in range(8)]  # Monday to the next Monday: two partner CSVs
SECOND_MONDAY = WEEK[-1]


@pytest.fixture(scope="module")
def world() -> DemoWorld:
    return DemoWorld(1500, seed=7)


@pytest.fixture(scope="module")
def delivered(world, tmp_path_factory) -> tuple[Path, dict[date, list[Path]]]:
    """One week of deliveries (written once, read by several tests)."""
    root = tmp_path_factory.mktemp("dropzone")
    files = {day: write_vroegsignalering_deliveries(world.at(day), root, day, seed=5) for day in WEEK}
    return root, files


def _connector(zone: Path, **extra) -> VroegsignaleringConnector:
    return VroegsignaleringConnector({"dropzone_dir": str(zone), "gemeentecode": "9999", **extra})


def _extract(connector: VroegsignaleringConnector, day: date, landing: Path) -> dict[str, list[dict]]:
    """Run the connector for ``day``; the landed records per dataset."""
    results = connector.extract(ExtractWindow.for_day(day, f"test-{day}"), landing)
    return {r.manifest["dataset"]: list(iter_batch_records(r)) for r in results}


def _signal(signaal_id: str, bsn: str = "111222333", **changes) -> dict:
    """A valid signal as the export writes it (with a picked-up zaak and one contactpoging)."""
    signal = {
        "signaalId": signaal_id,
        "laatstGewijzigd": "2026-03-10T17:00:00Z",
        "signaaldatum": "2026-03-02",
        "ontstaansdatum": "2026-01-01",
        "signaalpartner": {"naam": "Woonstichting Demodam", "kvkNummer": "90001024", "type": "woningcorporatie"},
        "aanleverendeOrganisatie": {"naam": "Woonstichting Demodam", "kvkNummer": "90001024"},
        "debiteur": {"bsn": bsn, "geslachtsnaam": "Jansen",
                     "adres": {"postcode": "2087AB", "huisnummer": 12}},
        "achterstand": {"bedrag": 1234.56, "aantalMaanden": 2},
        "crisissignaal": False,
        "warmeOverdracht": False,
        "status": "opgepakt",
        "zaak": {"zaakId": f"Z-{signaal_id}", "datumOpgepakt": "2026-03-04",
                 "contactpogingen": [{"volgnummer": 1, "datum": "2026-03-05", "dagdeel": "ochtend",
                                      "kanaal": "brief", "resultaat": "geen_contact"}]},
    }
    signal.update(changes)
    return signal


def _write_export(zone: Path, day: date, signals: list, name: str | None = None) -> Path:
    zone.mkdir(parents=True, exist_ok=True)
    path = zone / (name or f"vroegsignalen_{day:%Y%m%d}.json")
    document = {"export": {"gemeentecode": "9999", "exportdatum": day.isoformat(), "aantalSignalen": len(signals)},
                "signalen": signals}
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return path


def _manifest_entry(connector: VroegsignaleringConnector, day: date, file_name: str) -> dict:
    manifest = json.loads(connector.manifest_path(day).read_text(encoding="utf-8"))
    entries = manifest["files"] if isinstance(manifest, dict) and "files" in manifest else manifest
    return next(e for e in entries if e["file"] == file_name)


# --------------------------------------------------------------------------- demo deliveries

def test_deliveries_are_deterministic_dated_and_atomic(world, delivered, tmp_path):
    root, files = delivered
    again = write_vroegsignalering_deliveries(DemoWorld(1500, seed=7).at(SECOND_MONDAY), tmp_path, SECOND_MONDAY, seed=5)
    assert [p.name for p in again] == ["vroegsignalen_20260309.json", "vroegsignalen_huur_20260309.csv"]
    for original, repeated in zip(files[SECOND_MONDAY], again):
        assert original.read_bytes() == repeated.read_bytes()
    # A partner CSV only on Mondays; no temporary files left behind by the atomic writes.
    assert all(len(files[d]) == (2 if d.weekday() == 0 else 1) for d in WEEK)
    assert not [p for p in (root / "vroegsignalering").iterdir() if p.name.startswith(".")]
    assert write_vroegsignalering_deliveries(world.at(SECOND_MONDAY), tmp_path, SECOND_MONDAY, seed=6)[0].read_bytes() \
        != files[SECOND_MONDAY][0].read_bytes()


def test_exports_describe_residents_and_signals_evolve(world, delivered):
    _, files = delivered
    seen: dict[str, list[tuple[date, dict]]] = defaultdict(list)
    for day in WEEK:
        document = json.loads(files[day][0].read_text(encoding="utf-8"))
        assert document["export"] == {"bronsysteem": "Vroegsignalering Demodam", "gemeentecode": "9999",
                                      "exportdatum": day.isoformat(), "aantalSignalen": len(document["signalen"])}
        muni = world.at(day)
        for signal in document["signalen"]:
            assert signal["laatstGewijzigd"].startswith(day.isoformat())
            bsn = signal["debiteur"].get("bsn")
            if bsn is not None:
                person = muni.persons[bsn]
                assert is_valid_bsn(bsn)
                assert age_in_years(person.geboortedatum, date.fromisoformat(signal["signaaldatum"])) >= 18
                assert signal["debiteur"]["adres"]["nummeraanduidingIdentificatie"] == person.nummeraanduiding_id
            seen[signal["signaalId"]].append((day, signal))
    assert sum(len(v) for v in seen.values()) > 30
    partner_types = {s["signaalpartner"]["type"] for versions in seen.values() for _, s in versions}
    assert partner_types == {p.type for p in PARTNERS}
    # The same signal is exported again on later days with more contactpogingen; what the partner sent stays.
    grown = [
        versions for versions in seen.values()
        if len({len(s.get("zaak", {}).get("contactpogingen", [])) for _, s in versions}) > 1
    ]
    assert grown, "no signal gained contactpogingen during the week"
    for versions in grown:
        fixed = {json.dumps({k: s[k] for k in ("signaaldatum", "signaalpartner", "achterstand")}, sort_keys=True)
                 for _, s in versions}
        assert len(fixed) == 1
        attempts = [len(s["zaak"]["contactpogingen"]) for _, s in versions if "zaak" in s]
        assert attempts == sorted(attempts)
    # Some zaken are closed within the week, with a result.
    assert any(s.get("zaak", {}).get("resultaat") for versions in seen.values() for _, s in versions)


# --------------------------------------------------------------------------- landing through the drop zone

def test_demo_week_lands_json_and_partner_csv(delivered, tmp_path):
    root, files = delivered
    zone = tmp_path / "zone"
    zone.mkdir()
    connector = _connector(zone)
    landing = tmp_path / "landing"
    totals: dict[str, int] = defaultdict(int)
    for day in (MONDAY, WEEK[1], SECOND_MONDAY):
        for path in files[day]:
            (zone / path.name).write_bytes(path.read_bytes())
        landed = _extract(connector, day, landing)
        report = connector.last_report
        assert report["files_rejected"] == [] and report["units_rejected"] == 0, report
        assert report["files_accepted"] == len(files[day])
        for dataset, records in landed.items():
            totals[dataset] += len(records)
        if day == SECOND_MONDAY:
            csv_ids = {line.split(";")[0] for line in files[day][1].read_text(encoding="utf-8").splitlines()[2:]}
            assert csv_ids, "the demo week should hold at least one partner CSV signal"
            from_csv = [r for r in landed["signalen"] if r["signaalId"] in csv_ids]
            assert len(from_csv) == len(csv_ids)
            for record in from_csv:
                # Reshaped into the JSON signal form: Dutch decimal parsed, dd-mm-jjjj dates ISO, not yet picked up.
                assert record["status"] == "nog_niet_opgepakt"
                assert record["laatstGewijzigd"] == "2026-03-09T06:00:00Z"
                assert isinstance(record["achterstand"]["bedrag"], float)
                assert date.fromisoformat(record["signaaldatum"]) < SECOND_MONDAY
                assert record["aanleverendeOrganisatie"] == {"naam": record["signaalpartner"]["naam"],
                                                             "kvkNummer": record["signaalpartner"]["kvkNummer"]}
    assert totals["signalen"] > 10 and totals["zaken"] > 5 and totals["contactpogingen"] > 5
    assert sorted((zone / "archive" / SECOND_MONDAY.isoformat()).iterdir())


def test_schema_violation_rejects_that_signal_only(tmp_path):
    zone = tmp_path / "zone"
    bad = _signal("VS-2")
    del bad["achterstand"]
    _write_export(zone, WEEK[1], [_signal("VS-1"), bad, _signal("VS-3")])
    connector = _connector(zone)
    landed = _extract(connector, WEEK[1], tmp_path / "landing")
    assert [r["signaalId"] for r in landed["signalen"]] == ["VS-1", "VS-3"]
    assert [r["zaakId"] for r in landed["zaken"]] == ["Z-VS-1", "Z-VS-3"]
    assert landed["contactpogingen"][0] == {"zaakId": "Z-VS-1", "volgnummer": 1, "datum": "2026-03-05",
                                            "dagdeel": "ochtend", "kanaal": "brief", "resultaat": "geen_contact",
                                            "exportdatum": WEEK[1].isoformat(), "gemeentecode": "9999"}
    entry = _manifest_entry(connector, WEEK[1], "vroegsignalen_20260303.json")
    assert entry["outcome"] == "partially_accepted" and entry["units_accepted"] == 2
    [rejection] = entry["rejections"]
    assert rejection["rule"] == "schema" and rejection["position"] == "signaal 2 (id VS-2)"
    assert "achterstand" in rejection["message"]


def test_parse_rejects_bad_values_without_quoting_the_bsn(tmp_path):
    signals = [
        _signal("VS-10", bsn="123456789"),  # nine digits, fails the elfproef
        _signal("VS-11", bsn="12345"),  # not nine digits: a schema violation
        _signal("VS-12", status="nog_niet_opgepakt"),  # not picked up but carries a zaak
        _signal("VS-13", signaalpartner={"naam": "X", "kvkNummer": "90001024", "type": "bank"}),
        _signal("VS-14", bsn="111222333"),
    ]
    path = _write_export(tmp_path, WEEK[2], signals)
    items = list(_connector(tmp_path).parse_file(path))
    rejections = {i.position: i for i in items if isinstance(i, Rejection)}
    assert {p: r.rule for p, r in rejections.items()} == {
        "signaal 1 (id VS-10)": "bsn_elfproef", "signaal 2 (id VS-11)": "schema",
        "signaal 3 (id VS-12)": "schema", "signaal 4 (id VS-13)": "schema",
    }
    assert "123456789" not in rejections["signaal 1 (id VS-10)"].message
    assert "12345" not in rejections["signaal 2 (id VS-11)"].message
    [unit] = [i for i in items if isinstance(i, ParsedUnit)]
    assert unit.identity == "VS-14@2026-03-10T17:00:00Z" and unit.position == "signaal 5 (id VS-14)"
    assert set(unit.records) == {"signalen", "zaken", "contactpogingen"}
    assert "zaak" not in unit.records["signalen"][0] and unit.records["signalen"][0]["zaakId"] == "Z-VS-14"


def test_bsn_failing_elfproef_is_quarantined_through_the_zone(tmp_path):
    zone = tmp_path / "zone"
    _write_export(zone, WEEK[2], [_signal("VS-20", bsn="123456789"), _signal("VS-21")])
    connector = _connector(zone)
    landed = _extract(connector, WEEK[2], tmp_path / "landing")
    assert [r["signaalId"] for r in landed["signalen"]] == ["VS-21"]
    assert connector.last_report["units_rejected_per_rule"] == {"bsn_elfproef": 1}
    entry = _manifest_entry(connector, WEEK[2], "vroegsignalen_20260304.json")
    assert entry["rejections"][0]["position"] == "signaal 1 (id VS-20)"
    assert Path(entry["rejections_file"]).is_file()


def test_duplicate_signals_are_rejected_but_later_changes_land(tmp_path):
    zone = tmp_path / "zone"
    landing = tmp_path / "landing"
    connector = _connector(zone)
    _write_export(zone, WEEK[1], [_signal("VS-30"), _signal("VS-30")])
    first = _extract(connector, WEEK[1], landing)
    assert [r["signaalId"] for r in first["signalen"]] == ["VS-30"]
    entry = _manifest_entry(connector, WEEK[1], "vroegsignalen_20260303.json")
    assert [(r["rule"], r["position"]) for r in entry["rejections"]] == [("duplicate_signaal", "signaal 2 (id VS-30)")]

    # Next day: the same state again (a re-sent signal) is a duplicate; a new contactpoging is a new version.
    changed = _signal("VS-30", laatstGewijzigd="2026-03-11T17:00:00Z")
    changed["zaak"]["contactpogingen"].append({"volgnummer": 2, "datum": "2026-03-11", "dagdeel": "middag",
                                               "kanaal": "telefoon", "resultaat": "hulp_geaccepteerd"})
    _write_export(zone, WEEK[2], [_signal("VS-30"), changed])
    second = _extract(connector, WEEK[2], landing)
    assert [r["laatstGewijzigd"] for r in second["signalen"]] == ["2026-03-11T17:00:00Z"]
    assert [c["volgnummer"] for c in second["contactpogingen"]] == [1, 2]
    assert connector.last_report["units_rejected_per_rule"] == {"duplicate_signaal": 1}


def test_file_that_is_not_json_is_quarantined_whole(tmp_path):
    zone = tmp_path / "zone"
    path = _write_export(zone, WEEK[1], [_signal("VS-40")])
    path.write_text(path.read_text(encoding="utf-8")[:-40], encoding="utf-8")  # truncated in transfer
    connector = _connector(zone)
    landed = _extract(connector, WEEK[1], tmp_path / "landing")
    assert all(records == [] for dataset, records in landed.items() if dataset != "dropzone_manifest")
    [rejected] = connector.last_report["files_rejected"]
    assert rejected["rule"] == "not_well_formed" and rejected["position"].startswith("line ")
    assert (connector.quarantine_root / WEEK[1].isoformat() / path.name).is_file()
    assert not path.exists()


@pytest.mark.parametrize(
    "content, rule",
    [
        (b"", "empty_file"),
        (b"  \n", "empty_file"),
        (b'{"signalen": []}', "schema"),
        (b'{"export": {"gemeentecode": "0363", "exportdatum": "2026-03-03"}, "signalen": []}', "wrong_gemeente"),
        (b'{"export": {"gemeentecode": "9999", "exportdatum": "2026-03-03", "aantalSignalen": 2}, "signalen": []}',
         "count_mismatch"),
        (b"\xff\xfe{", "not_utf8"),
    ],
)
def test_unusable_files_are_rejected_whole(tmp_path, content, rule):
    zone = tmp_path / "zone"
    zone.mkdir()
    path = zone / "vroegsignalen_20260303.json"
    path.write_bytes(content)
    connector = _connector(zone)
    _extract(connector, WEEK[1], tmp_path / "landing")
    [rejected] = connector.last_report["files_rejected"]
    assert rejected["rule"] == rule


def test_partner_csv_rows_are_checked_by_the_contract(tmp_path):
    zone = tmp_path / "zone"
    zone.mkdir()
    header = ("Signaal ID;Signaaldatum;BSN;Achternaam;Postcode;Huisnummer;Achterstand (EUR);"
              "Aantal maanden achterstand;Signaalpartner;KvK-nummer signaalpartner;Soort signaalpartner")
    rows = [
        "VH-1;24-02-2026;111222333;Jansen;2087AB;12;1.234,56;2;Wooncooperatie Polderhuis;90001067;woningcorporatie",
        "VH-2;25-02-2026;111222333;Jansen;2087AB;12;12,3,4;2;Wooncooperatie Polderhuis;90001067;woningcorporatie",
        "VH-3;26-02-2026;123456789;Bakker;2087AC;3;99,00;1;Wooncooperatie Polderhuis;90001067;woningcorporatie",
        "VH-1;24-02-2026;111222333;Jansen;2087AB;12;1.234,56;2;Wooncooperatie Polderhuis;90001067;woningcorporatie",
    ]
    path = zone / "vroegsignalen_huur_20260302.csv"
    path.write_text("\r\n".join([header, *rows]) + "\r\n", encoding="utf-8")
    connector = _connector(zone)
    landed = _extract(connector, MONDAY, tmp_path / "landing")
    [record] = landed["signalen"]
    assert record["achterstand"] == {"bedrag": 1234.56, "aantalMaanden": 2}
    assert record["signaaldatum"] == "2026-02-24" and record["debiteur"]["bsn"] == "111222333"
    assert landed["zaken"] == [] and landed["contactpogingen"] == []
    entry = _manifest_entry(connector, MONDAY, path.name)
    problems = {(r["rule"], r["position"]) for r in entry["rejections"]}
    assert ("bsn_elfproef", "line 4 (id VH-3)") in problems
    assert ("duplicate_signaal", "line 5 (id VH-1)") in problems
    [bad_decimal] = [r for r in entry["rejections"] if r["position"].startswith("line 3")]
    assert "Achterstand" in bad_decimal["position"] + bad_decimal["message"]


def test_signal_schema_is_a_valid_json_schema():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(SIGNAAL_SCHEMA)
    with pytest.raises(FileRejected) as error:
        list(_connector(Path("/nonexistent")).parse_file(Path("vroegsignalen_20260303.xml")))
    assert error.value.rule == "unknown_format"
