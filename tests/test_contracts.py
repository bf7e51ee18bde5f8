"""Data contracts for departmental CSV/Excel exports: real files in every delivered format.

Files are written in the tests as the departmental applications write them (Windows-1252
``;`` CSV with ``1.234,56`` and ``dd-mm-jjjj``, UTF-8-with-BOM CSV, ``.xlsx`` with title
rows above the header) and read through :class:`connectors.contracts.DataContract` and,
for the quarantine behaviour, through the real drop-zone framework (``extract``) into a
temporary landing zone.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from datetime import date, datetime, timedelta
from pathlib import Path

import openpyxl
import pytest
import yaml

from connectors.base import ExtractWindow
from connectors.contracts import ContractError, DataContract, detect_encoding, normalise_header
from connectors.dropzone import FileRejected, ParsedUnit, Rejection
from connectors.exports import EXPORT_CONNECTORS, HrConnector, SubsidiesConnector, VthConnector
from demo_gemeente import exports as demo_exports
from demo_gemeente.generator import DemoWorld
from demo_gemeente.kvk import KvkRegister
from ggm_lakehouse.config import project_root
from ggm_lakehouse.landing import iter_batch_records

MONDAY = date(2026, 3, 9)
CONTRACTS = project_root() / "config" / "contracts"

TOY_CONTRACT = {
    "source": "toy",
    "datasets": {
        "meldingen": {
            "files": ["meldingen_*.csv"],
            "key": ["nummer"],
            "columns": {
                "nummer": {"header": "Meldingnummer", "aliases": ["Nr."], "required": True, "pattern": "^M[0-9]+$"},
                "datum": {"header": "Datum melding", "type": "date", "required": True},
                "bedrag": {"header": "Bedrag", "type": "decimal"},
                "aantal": {"header": "Aantal", "type": "integer"},
                "spoed": {"header": "Spoed", "type": "boolean"},
                "status": {"header": "Status", "allowed": ["Open", "Gesloten"]},
                "omschrijving": {"header": "Omschrijving"},
            },
        },
        "tabel": {
            "files": ["tabel_*.xlsx"],
            "sheet": "Gegevens",
            "key": ["code"],
            "columns": {
                "code": {"header": "Code", "required": True},
                "bedrag": {"header": "Bedrag (EUR)", "type": "decimal", "required": True},
                "datum": {"header": "Peildatum", "type": "date"},
            },
        },
    },
}


@pytest.fixture(scope="module")
def toy() -> DataContract:
    return DataContract.from_dict(TOY_CONTRACT)


def write_csv(path: Path, lines: list[str], encoding: str, delimiter: str = ";", newline: str = "\r\n") -> Path:
    path.write_bytes(newline.join(line.replace("|", delimiter) for line in lines).encode(encoding) + newline.encode())
    return path


def parse(contract: DataContract, path: Path, dataset: str) -> tuple[list[dict], list[Rejection], list[ParsedUnit]]:
    units, rejections = [], []
    for item in contract.parse(path, dataset):
        (units if isinstance(item, ParsedUnit) else rejections).append(item)
    records = [r for u in units for r in u.records[dataset]]
    return records, rejections, units


def write_xlsx(path: Path, sheet: str, rows: list[list], title_rows: int = 0, extra_sheet: str | None = "Toelichting") -> Path:
    workbook = openpyxl.Workbook()
    data = workbook.active
    data.title = sheet
    for index in range(title_rows):
        data.append([f"Titelregel {index + 1}"] if index % 2 == 0 else [])
    for row in rows:
        data.append(row)
    if extra_sheet:
        workbook.create_sheet(extra_sheet).append(["Uitleg bij de kolommen"])
    workbook.save(path)
    return path


# --------------------------------------------------------------------------- CSV formats


def test_windows_1252_semicolon_csv_with_dutch_decimals_and_dates(toy, tmp_path):
    path = write_csv(tmp_path / "meldingen_20260309.csv", [
        "Meldingnummer|Datum melding|Bedrag|Aantal|Spoed|Status|Omschrijving",
        "M1|09-03-2026|1.234,56|1.200|Ja|Open|Geluidsoverlast café",
        "M2|2026-03-10|-0,5|3|nee|Gesloten|\"Overlast; na 23:00\"",
        "M3|01-01-2026|€ 12.500,00||||Coördinatie",
    ], "windows-1252")
    assert detect_encoding(path) == "windows-1252"
    records, rejections, _ = parse(toy, path, "meldingen")
    assert rejections == []
    assert records[0] == {"nummer": "M1", "datum": "2026-03-09", "bedrag": "1234.56", "aantal": 1200, "spoed": True,
                          "status": "Open", "omschrijving": "Geluidsoverlast café"}
    assert records[1]["bedrag"] == "-0.5" and records[1]["datum"] == "2026-03-10" and records[1]["spoed"] is False
    assert records[1]["omschrijving"] == "Overlast; na 23:00"
    assert records[2] == {"nummer": "M3", "datum": "2026-01-01", "bedrag": "12500.00", "aantal": None, "spoed": None,
                          "status": None, "omschrijving": "Coördinatie"}
    json.dumps(records)  # JSON-safe as landed



def test_the_demo_narrows_names_a_windows_1252_export_cannot_hold_as_windows_does():
    # Seen at 100,000 residents: a name with 'ř' made the demo's VTH export fail to encode.
    data = demo_exports.csv_bytes(["naam"], [["Dvořák"], ["Ærø Müller"], ["名"]], "windows-1252")
    assert data.decode("windows-1252").splitlines() == ["naam", "Dvorák", "Ærø Müller", "?"]

@pytest.mark.parametrize("delimiter", [",", "\t", ";"])
def test_utf8_bom_csv_any_delimiter_and_header_aliases(toy, tmp_path, delimiter):
    quote = '"' if delimiter == "," else ""
    path = write_csv(tmp_path / "meldingen_20260309.csv", [
        # Aliases and headers match regardless of case, spacing, underscores and hyphens.
        "nr.|DATUM_MELDING|  bedrag |Omschrijving",
        f"M7|31-12-2026|{quote}2.000,10{quote}|Straat in Zoë's wijk",
    ], "utf-8-sig", delimiter=delimiter, newline="\n")
    assert detect_encoding(path) == "utf-8-sig"
    records, rejections, _ = parse(toy, path, "meldingen")
    assert rejections == []
    assert records == [{"nummer": "M7", "datum": "2026-12-31", "bedrag": "2000.10", "aantal": None, "spoed": None,
                        "status": None, "omschrijving": "Straat in Zoë's wijk"}]


def test_plain_utf8_is_recognised(toy, tmp_path):
    path = write_csv(tmp_path / "meldingen_1.csv", ["Meldingnummer;Datum melding", "M1;01-02-2026"], "utf-8")
    assert detect_encoding(path) == "utf-8"
    path.write_bytes("Meldingnummer;Datum melding;Omschrijving\nM1;01-02-2026;Één\n".encode("utf-8"))
    assert detect_encoding(path) == "utf-8"
    assert parse(toy, path, "meldingen")[0][0]["omschrijving"] == "Één"


def test_title_lines_above_a_csv_header_are_skipped(toy, tmp_path):
    path = write_csv(tmp_path / "meldingen_2.csv", [
        "Export meldingen gemeente Demodam", "Peildatum: 09-03-2026", "",
        "Meldingnummer|Datum melding", "M1|09-03-2026", "", "M2|10-03-2026",
    ], "windows-1252")
    records, rejections, units = parse(toy, path, "meldingen")
    assert [r["nummer"] for r in records] == ["M1", "M2"] and rejections == []
    assert units[0].position == "line 5-7"


# --------------------------------------------------------------------------- row rejections


def test_bad_rows_are_rejected_with_line_rule_and_column_the_rest_is_kept(toy, tmp_path):
    path = write_csv(tmp_path / "meldingen_3.csv", [
        "Meldingnummer|Datum melding|Bedrag|Aantal|Spoed|Status",
        "M1|09-03-2026|1.234,56|1|ja|Open",
        "M2|09-03-2026|12,34,5|1|ja|Open",       # line 3: bad decimal
        "M3|31-02-2026|1,00|1|ja|Open",          # line 4: not a calendar date
        "M4|2026/03/09|1,00|1|ja|Open",          # line 5: unknown date format
        "|09-03-2026|1,00|1|ja|Open",            # line 6: required value missing
        "M5|09-03-2026|1,00|1|ja|Onbekend",      # line 7: not an allowed value
        "M1|10-03-2026|2,00|1|ja|Open",          # line 8: duplicate key
        "X9|09-03-2026|1,00|1|ja|Open",          # line 9: pattern
        "M6|09-03-2026|1,00|1,5|ja|Open",        # line 10: integer
        "M7|09-03-2026|1,00|1|misschien|Open",   # line 11: boolean
        "M8|09-03-2026|1,00|1|ja|Open|extra",    # line 12: more cells than the header
        "M9|09-03-2026|1.000.000,01|2|nee|Gesloten",
    ], "windows-1252")
    records, rejections, _ = parse(toy, path, "meldingen")
    assert [r["nummer"] for r in records] == ["M1", "M9"]
    assert records[1]["bedrag"] == "1000000.01"
    found = {(r.position, r.rule) for r in rejections}
    assert found == {
        ("line 3 column Bedrag", "bad_decimal"),
        ("line 4 column Datum melding", "bad_date"),
        ("line 5 column Datum melding", "bad_date"),
        ("line 6 column Meldingnummer", "required_missing"),
        ("line 7 column Status", "not_allowed"),
        ("line 8 column Meldingnummer", "duplicate_key"),
        ("line 9 column Meldingnummer", "pattern_mismatch"),
        ("line 10 column Aantal", "bad_integer"),
        ("line 11 column Spoed", "bad_boolean"),
        ("line 12", "column_count"),
    }
    duplicate = next(r for r in rejections if r.rule == "duplicate_key")
    assert "line 2" in duplicate.message and all(r.file == "meldingen_3.csv" for r in rejections)
    assert "12,34,5" in next(r for r in rejections if r.rule == "bad_decimal").message


def test_rows_come_in_bounded_chunks(tmp_path):
    doc = json.loads(json.dumps(TOY_CONTRACT))
    doc["datasets"]["meldingen"]["chunk_rows"] = 2
    contract = DataContract.from_dict(doc)
    path = write_csv(tmp_path / "meldingen_4.csv",
                     ["Meldingnummer|Datum melding", *[f"M{i}|09-03-2026" for i in range(5)]], "utf-8")
    records, _, units = parse(contract, path, "meldingen")
    assert [len(u.records["meldingen"]) for u in units] == [2, 2, 1]
    assert [u.position for u in units] == ["line 2-3", "line 4-5", "line 6"]
    assert all(u.identity is None for u in units)  # snapshots repeat rows daily: never duplicate-checked
    assert len(records) == 5


# --------------------------------------------------------------------------- whole-file rejections


def test_missing_required_columns_reject_the_file_naming_them(toy, tmp_path):
    path = write_csv(tmp_path / "meldingen_5.csv", ["Volgnummer|Bedrag", "M1|1,00"], "utf-8")
    with pytest.raises(FileRejected) as caught:
        list(toy.parse(path, "meldingen"))
    assert caught.value.rule == "missing_columns"
    assert "Meldingnummer" in caught.value.message and "Datum melding" in caught.value.message


@pytest.mark.parametrize("content, rule", [
    (b"Meldingnummer;Datum melding\nM1;01-02-2026 \x81\x90\n", "undecodable"),
    (b"\xff\xfeM\x00e\x00", "undecodable"),
    (b"Meldingnummer;Datum melding\n\x00\x00\n", "undecodable"),
    (b"Meldingnummer;Datum melding\n", "empty"),
    (b"\n\n", "empty"),
    (b"Meldingnummer;Datum melding;Nr.\nM1;01-02-2026;M1\n", "duplicate_columns"),
])
def test_unusable_csv_files_are_rejected_whole(toy, tmp_path, content, rule):
    path = tmp_path / "meldingen_6.csv"
    path.write_bytes(content)
    with pytest.raises(FileRejected) as caught:
        list(toy.parse(path, "meldingen"))
    assert caught.value.rule == rule


def test_declared_encoding_that_does_not_fit_rejects_the_file(tmp_path):
    doc = json.loads(json.dumps(TOY_CONTRACT))
    doc["datasets"]["meldingen"]["encoding"] = "utf-8"
    contract = DataContract.from_dict(doc)
    path = write_csv(tmp_path / "meldingen_7.csv", ["Meldingnummer|Datum melding|Omschrijving", "M1|01-02-2026|café"],
                     "windows-1252")
    with pytest.raises(FileRejected) as caught:
        list(contract.parse(path, "meldingen"))
    assert caught.value.rule == "undecodable"


# --------------------------------------------------------------------------- Excel


def test_excel_with_title_rows_typed_cells_and_text_cells(toy, tmp_path):
    path = write_xlsx(tmp_path / "tabel_20260309.xlsx", "Gegevens", [
        ["Code", "Bedrag (EUR)", "Peildatum", "Niet in het contract"],
        ["A1", 1234.56, datetime(2026, 3, 9), "weg", "opmerking naast de tabel"],
        ["A2", "1.234,50", "09-03-2026", None],
        [1001.0, 0.1 + 0.2, None, None],  # a code typed in as a number; a float sum as Excel stores it
        [None, None, None, None],
        ["A3", "veel", None, None],
    ], title_rows=3)
    records, rejections, units = parse(toy, path, "tabel")
    assert records == [
        {"code": "A1", "bedrag": "1234.56", "datum": "2026-03-09"},
        {"code": "A2", "bedrag": "1234.50", "datum": "2026-03-09"},
        {"code": "1001", "bedrag": "0.3", "datum": None},
    ]
    assert [(r.position, r.rule) for r in rejections] == [("sheet Gegevens row 9 column Bedrag (EUR)", "bad_decimal")]
    assert units[0].position == "sheet Gegevens row 5-7"


def test_excel_with_a_declared_header_row(tmp_path):
    doc = json.loads(json.dumps(TOY_CONTRACT))
    doc["datasets"]["tabel"]["header_row"] = 3
    contract = DataContract.from_dict(doc)
    path = write_xlsx(tmp_path / "tabel_1.xlsx", "gegevens", [
        ["Code", "Bedrag (EUR)"], ["B1", 10.5]], title_rows=2)
    records, rejections, _ = parse(contract, path, "tabel")
    assert records == [{"code": "B1", "bedrag": "10.5", "datum": None}] and rejections == []
    # The declared row is the header, even when a lower row would match too.
    wrong = write_xlsx(tmp_path / "tabel_2.xlsx", "Gegevens", [["Code", "Bedrag (EUR)"], ["B1", 10.5]], title_rows=1)
    with pytest.raises(FileRejected) as caught:
        list(contract.parse(wrong, "tabel"))
    assert caught.value.rule == "missing_columns"


def test_excel_missing_sheet_and_unreadable_workbooks_reject_the_file(toy, tmp_path):
    path = write_xlsx(tmp_path / "tabel_3.xlsx", "Blad1", [["Code", "Bedrag (EUR)"], ["C1", 1]])
    with pytest.raises(FileRejected) as caught:
        list(toy.parse(path, "tabel"))
    assert caught.value.rule == "missing_sheet" and "Blad1" in caught.value.message
    garbage = tmp_path / "tabel_4.xlsx"
    garbage.write_bytes(b"PK\x03\x04 this is not a workbook")
    with pytest.raises(FileRejected) as caught:
        list(toy.parse(garbage, "tabel"))
    assert caught.value.rule == "unreadable_excel"
    renamed_csv = tmp_path / "tabel_5.xlsx"
    renamed_csv.write_text("Code;Bedrag (EUR)\nC1;1\n", encoding="utf-8")
    with pytest.raises(FileRejected) as caught:
        list(toy.parse(renamed_csv, "tabel"))
    assert caught.value.rule == "unreadable_excel"


# --------------------------------------------------------------------------- contract files


def test_dataset_for_matches_file_patterns_case_insensitively(toy):
    assert toy.dataset_for("meldingen_20260309.csv") == "meldingen"
    assert toy.dataset_for("MELDINGEN_20260309.CSV") == "meldingen"
    assert toy.dataset_for("tabel_x.xlsx") == "tabel"
    assert toy.dataset_for("tabel_x.csv") is None
    assert normalise_header(" Datum_in-dienst ") == normalise_header("datum in dienst")


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("source"), "'source'"),
    (lambda d: d["datasets"]["meldingen"].update(files=[]), "datasets.meldingen.files: must list at least one item"),
    (lambda d: d["datasets"]["meldingen"]["columns"]["datum"].update(type="datetime"),
     "columns.datum.type: must be string, integer, decimal, date or boolean (found 'datetime')"),
    (lambda d: d["datasets"]["meldingen"].update(key=["onbekend"]), "key column 'onbekend'"),
    (lambda d: d["datasets"]["meldingen"].update(encoding="latin-2"), "encoding"),
    (lambda d: d["datasets"]["meldingen"].update(delimiter="|"), "delimiter"),
    (lambda d: d["datasets"]["meldingen"].update(header_row=0), "header_row"),
    (lambda d: d["datasets"]["meldingen"].update(date_formats=["mm-jjjj"]), "day, month and year"),
    (lambda d: d["datasets"]["meldingen"]["columns"]["nummer"].update(pattern="(["), "invalid pattern"),
    (lambda d: d["datasets"]["meldingen"]["columns"]["status"].update(aliases=["Meldingnummer"]), "identifies both"),
    (lambda d: d["datasets"]["meldingen"]["columns"].update({"Bad Name": {}}), "snake_case"),
])
def test_invalid_contracts_are_refused_with_the_problem_named(tmp_path, change, message):
    doc = json.loads(json.dumps(TOY_CONTRACT))
    change(doc)
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ContractError, match=re.escape(message)) as caught:
        DataContract.from_file(path)
    assert str(caught.value).startswith("toy.yaml: ")


@pytest.mark.parametrize("name", sorted(EXPORT_CONNECTORS))
def test_connectors_agree_with_their_contracts(name):
    cls = EXPORT_CONNECTORS[name]
    contract = DataContract.from_file(CONTRACTS / f"{name}.yaml")
    assert contract.source == cls.name
    assert tuple(contract.datasets) == cls.datasets
    assert contract.file_patterns == cls.file_patterns
    connector = cls({})
    assert connector.contract_path == CONTRACTS / f"{name}.yaml"
    assert connector.contract.datasets.keys() == contract.datasets.keys()


def test_a_configured_contract_must_fit_the_connector(tmp_path):
    from connectors.errors import SourceConfigError

    doc = yaml.safe_load((CONTRACTS / "vth.yaml").read_text(encoding="utf-8"))
    doc["datasets"]["meldingen"]["files"] = ["handhaving_*.csv"]
    custom = tmp_path / "vth.yaml"
    custom.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    connector = VthConnector({"contract": str(custom)})
    assert connector.patterns == ("handhaving_*.csv",) and connector.matches("handhaving_20260309.csv")
    doc["datasets"]["extra"] = doc["datasets"]["meldingen"]
    custom.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(SourceConfigError, match="declares datasets"):
        VthConnector({"contract": str(custom)}).contract
    doc["source"] = "hr"
    custom.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(SourceConfigError, match="is for source 'hr'"):
        VthConnector({"contract": str(custom)}).contract


def test_legacy_xls_is_refused(toy, tmp_path):
    path = tmp_path / "tabel_1.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))
    with pytest.raises(FileRejected) as caught:
        list(toy.parse(path, "tabel"))
    assert caught.value.rule == "unreadable_excel" and ".xlsx" in caught.value.message


def test_hr_contract_declares_no_personal_columns_ggm_does_not_need():
    columns = {c.name for c in DataContract.from_file(CONTRACTS / "hr.yaml").datasets["medewerkers"].columns}
    assert not columns & {"bsn", "burgerservicenummer", "naam", "achternaam", "voornaam", "geboortedatum", "iban"}


# --------------------------------------------------------------------------- through the drop-zone framework


def _extract(connector, day: date, landing: Path) -> dict:
    """Run the real drop-zone framework for ``day``; the landed batches by dataset."""
    return {b.dataset: b for b in connector.extract(ExtractWindow.for_day(day, f"{connector.name}-{day}"), landing)}


def test_framework_quarantines_a_file_missing_columns_and_lands_the_good_rows_of_another(tmp_path):
    zone, landing = tmp_path / "zone", tmp_path / "landing"
    zone.mkdir()
    header = "Meldingnummer;Zaaknummer;Datum melding;Soort melding;Categorie;Postcode;Huisnummer;Status;Opgelegde dwangsom"
    write_csv(zone / "vth_meldingen_20260309.csv", [
        header,
        "M-2026-00001;Z-1;09-03-2026;Klacht;Geluidsoverlast café;2057 AB;12;Ontvangen;",
        "M-2026-00002;Z-2;09-03-2026;Klacht;Brandveiligheid;2057 AB;14;Afgehandeld;12,5O",  # letter O
        "M-2026-00003;Z-3;08-03-2026;Signaal;Bodem en asbest;2057 AC;1;Afgehandeld;2.500,00",
    ], "windows-1252", delimiter=";")
    write_csv(zone / "vth_meldingen_aanvulling_20260308.csv", ["Meldingnummer;Status", "M-2026-00009;Open"], "windows-1252")
    connector = VthConnector({"dropzone_dir": str(zone)})
    batches = _extract(connector, MONDAY, landing)
    report = connector.last_report
    assert report["files_partially_accepted"] == 1
    assert report["files_rejected"][0]["file"] == "vth_meldingen_aanvulling_20260308.csv"
    assert report["files_rejected"][0]["rule"] == "missing_columns"
    assert "Datum melding" in report["files_rejected"][0]["message"]
    assert "Soort melding" in report["files_rejected"][0]["message"]
    quarantine = zone / "quarantine" / MONDAY.isoformat()
    reason = json.loads((quarantine / "vth_meldingen_aanvulling_20260308.csv.reason.json").read_text(encoding="utf-8"))
    assert reason["rule"] == "missing_columns" and "Categorie" in reason["message"]
    rejections = json.loads((quarantine / "vth_meldingen_20260309.csv.rejections.json").read_text(encoding="utf-8"))
    assert [(r["rule"], r["position"]) for r in rejections["rejections"]] == [
        ("bad_decimal", "line 3 column Opgelegde dwangsom")]
    records = list(iter_batch_records(batches["meldingen"]))
    assert [r["meldingnummer"] for r in records] == ["M-2026-00001", "M-2026-00003"]
    assert records[0]["categorie"] == "Geluidsoverlast café" and records[1]["dwangsom"] == "2500.00"
    assert (zone / "archive" / MONDAY.isoformat() / "vth_meldingen_20260309.csv").is_file()


# --------------------------------------------------------------------------- demo deliveries


@pytest.fixture(scope="module")
def world() -> DemoWorld:
    return DemoWorld(400, seed=11)


@pytest.fixture(scope="module")
def demo_zone(world, tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("dropzone")
    muni = world.at(MONDAY)
    register = KvkRegister(world)
    paths = (demo_exports.write_subsidies_deliveries(muni, root, MONDAY, kvk_register=register)
             + demo_exports.write_vth_deliveries(muni, root, MONDAY)
             + demo_exports.write_hr_deliveries(muni, root, MONDAY, delivery_weekday=None))
    return root, paths


def test_demo_deliveries_have_the_real_formats_and_dated_names(demo_zone):
    root, paths = demo_zone
    assert sorted(p.relative_to(root).as_posix() for p in paths) == [
        "hr/hr_medewerkers_20260309.csv", "subsidies/subsidiebeschikkingen_20260309.xlsx",
        "subsidies/subsidieprogrammas_20260309.xlsx", "subsidies/subsidies_20260309.xlsx",
        "vth/vth_meldingen_20260309.csv"]
    vth = (root / "vth" / "vth_meldingen_20260309.csv").read_bytes()
    assert detect_encoding(root / "vth" / "vth_meldingen_20260309.csv") == "windows-1252"
    assert b"\r\n" in vth and vth.split(b"\r\n")[0].count(b";") == 15
    assert "beëindigd".encode("windows-1252") in vth
    assert (root / "hr" / "hr_medewerkers_20260309.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    workbook = openpyxl.load_workbook(root / "subsidies" / "subsidies_20260309.xlsx", read_only=True)
    assert workbook.sheetnames == ["Subsidies", "Toelichting"]
    first_rows = list(workbook["Subsidies"].iter_rows(min_row=1, max_row=4, values_only=True))
    workbook.close()
    assert first_rows[0][0].startswith("Gemeente Demodam") and first_rows[3][0] == "Dossiernummer"
    assert not list(root.rglob("*.tmp")) and not list(root.rglob(".*"))


def test_demo_deliveries_parse_without_rejections_and_use_real_bag_and_kvk_data(demo_zone, world):
    root, _paths = demo_zone
    muni = world.at(MONDAY)
    state = KvkRegister(world).at(demo_exports.EPOCH)
    parsed = {}
    for name, cls in EXPORT_CONNECTORS.items():
        connector = cls({})
        for path in sorted((root / name).iterdir()):
            items = list(connector.parse_file(path))
            assert not [i for i in items if isinstance(i, Rejection)], path.name
            dataset = connector.contract.dataset_for(path.name)
            parsed[f"{name}_{dataset}"] = [r for i in items for r in i.records[dataset]]
    meldingen = parsed["vth_meldingen"]
    with_id = [m for m in meldingen if m["nummeraanduiding"]]
    assert with_id and len(with_id) < len(meldingen)  # some meldingen carry a typed address only
    assert all(m["nummeraanduiding"] in muni.nummeraanduidingen for m in with_id)
    for melding in with_id[:20]:
        adres = muni.nummeraanduidingen[melding["nummeraanduiding"]]
        assert melding["postcode"].replace(" ", "") == adres.postcode and melding["huisnummer"] == adres.huisnummer
    assert {m["status"] for m in meldingen} >= {"Afgehandeld", "In behandeling"}
    kvk = {o.kvk_nummer: o for o in state.actieve_ondernemingen()}
    subsidies = parsed["subsidies_subsidies"]
    assert subsidies and all(s["kvk_nummer"] in kvk and kvk[s["kvk_nummer"]].rsin == s["rsin"] for s in subsidies)
    assert {s["status"] for s in subsidies} >= {"Aangevraagd", "Verleend"}
    programmas = {p["programmacode"] for p in parsed["subsidies_programmas"]}
    assert {s["programmacode"] for s in subsidies} <= programmas
    dossiers = {s["dossiernummer"]: s for s in subsidies}
    for beschikking in parsed["subsidies_beschikkingen"]:
        dossier = dossiers[beschikking["dossiernummer"]]
        if beschikking["besluit"] == "Verlening":
            assert beschikking["bedrag"] == dossier["verleend_bedrag"]
    medewerkers = parsed["hr_medewerkers"]
    assert medewerkers and all(set(m) == {"personeelsnummer", "organisatorische_eenheid", "functie", "schaal", "fte",
                                          "datum_in_dienst", "datum_uit_dienst", "dienstverband", "leidinggevende"}
                               for m in medewerkers)
    behandelaars = {s["behandelaar"] for s in subsidies}
    assert behandelaars <= {m["personeelsnummer"] for m in medewerkers}


def test_demo_deliveries_are_byte_identical_for_the_same_inputs(demo_zone, world, tmp_path):
    root, paths = demo_zone
    first = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    # A second process (other hash seed, other clock) writes the same bytes.
    script = (
        "import sys; from datetime import date; from pathlib import Path\n"
        "from demo_gemeente.generator import DemoWorld; from demo_gemeente.kvk import KvkRegister\n"
        "from demo_gemeente import exports as e\n"
        "w = DemoWorld(400, seed=11); d = date(2026, 3, 9); m = w.at(d); out = Path(sys.argv[1])\n"
        "e.write_subsidies_deliveries(m, out, d, kvk_register=KvkRegister(w)); e.write_vth_deliveries(m, out, d)\n"
        "e.write_hr_deliveries(m, out, d, delivery_weekday=None)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=project_root(),
                   env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin", "TZ": "Pacific/Auckland"})
    second = {p.relative_to(tmp_path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
              for p in tmp_path.rglob("*") if p.is_file()}
    assert second == first


def test_weekly_exports_are_delivered_on_their_weekday_only(world, tmp_path):
    tuesday = MONDAY + timedelta(days=1)
    muni = world.at(tuesday)
    assert demo_exports.write_subsidies_deliveries(muni, tmp_path, tuesday) == []
    assert demo_exports.write_hr_deliveries(muni, tmp_path, tuesday) == []
    friday = MONDAY + timedelta(days=4)
    assert [p.name for p in demo_exports.write_hr_deliveries(world.at(friday), tmp_path, friday)] == [
        "hr_medewerkers_20260313.csv"]
    # Without a KvK register the ontvangers are invented organisations, still with KvK-nummer and RSIN.
    written = demo_exports.write_subsidies_deliveries(world.at(MONDAY), tmp_path, MONDAY)
    records = [r for i in SubsidiesConnector({}).parse_file(written[1]) for r in i.records["subsidies"]]
    assert records and all(r["kvk_nummer"] and r["rsin"] for r in records)


def test_hr_export_bsns_never_land(world, tmp_path):
    zone, landing = tmp_path / "hr", tmp_path / "landing"
    friday = MONDAY + timedelta(days=4)
    demo_exports.write_hr_deliveries(world.at(friday), tmp_path, friday)
    bsns = {m.bsn for m in demo_exports.hr_snapshot(
        demo_exports.medewerkers(world.at(friday).population, 42, "9999"), friday)}
    exported = (zone / "hr_medewerkers_20260313.csv").read_text(encoding="utf-8-sig")
    assert all(bsn in exported for bsn in bsns)  # the export does carry them
    batches = _extract(HrConnector({"dropzone_dir": str(zone)}), friday, landing)
    landed = b"".join(p.read_bytes() for p in (landing / "hr").rglob("*.json"))
    assert landed and not any(bsn.encode() in landed for bsn in bsns)
    records = list(iter_batch_records(batches["medewerkers"]))
    assert len(records) == len(bsns)


def test_registers_keep_their_history_from_one_export_to_the_next(world):
    later = MONDAY + timedelta(days=14)
    first = {m.meldingnummer: m for m in demo_exports.vth_meldingen(world.at(MONDAY), MONDAY)}
    second = {m.meldingnummer: m for m in demo_exports.vth_meldingen(world.at(later), later)}
    assert set(first) < set(second)
    for number, melding in first.items():
        again = second[number]
        assert (again.datum_melding, again.nummeraanduiding_id, again.categorie) == (
            melding.datum_melding, melding.nummeraanduiding_id, melding.categorie)
    assert any(second[n].status != m.status for n, m in first.items())  # handling moves on
    dossiers = {s.dossiernummer: s for s in demo_exports.subsidies(MONDAY, population=400)}
    later_dossiers = {s.dossiernummer: s for s in demo_exports.subsidies(later, population=400)}
    assert all(later_dossiers[n].aangevraagd == s.aangevraagd and later_dossiers[n].ontvanger == s.ontvanger
               for n, s in dossiers.items())


# --------------------------------------------------------------------------- hostile workbooks (issue 15)

# Nine levels of ten: expanded, one cell would be 10^8 "lol"s.
EXCEL_BILLION_LAUGHS = (b'<!DOCTYPE worksheet [<!ENTITY lol0 "lol">'
                        + b"".join(b'<!ENTITY lol%d "%s">' % (level, b"&lol%d;" % (level - 1) * 10) for level in range(1, 10))
                        + b"]>")


def _workbook_with_entities(source: Path, target: Path, doctype: bytes, reference: bytes, padding: int = 0) -> Path:
    """``source`` with ``doctype`` in its first worksheet's XML and ``reference`` in that sheet's first text cell.

    ``padding`` bytes of comment before the DOCTYPE move it past any prolog sniffing, so that the
    XML parser openpyxl uses meets the declaration itself.
    """
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as crafted:
        for info in original.infolist():
            data = original.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                body = data[data.index(b"?>") + 2:] if data.startswith(b"<?xml") else data
                assert b"<t>" in body
                comment = b"<!--" + b"x" * padding + b"-->\n" if padding else b""
                data = (b'<?xml version="1.0" encoding="UTF-8"?>\n' + comment + doctype + b"\n"
                        + body.replace(b"<t>", b"<t>" + reference, 1))
            crafted.writestr(info, data)
    return target


@pytest.mark.parametrize("attack, padding, rule", [
    ("billion-laughs", 0, "entity_expansion"),
    ("xxe", 0, "dtd_forbidden"),
    ("billion-laughs", 100_000, "entity_expansion"),
    ("xxe", 100_000, "dtd_forbidden"),
], ids=["billion-laughs", "xxe", "billion-laughs-late", "xxe-late"])
def test_workbook_declaring_entities_is_quarantined_and_never_expanded(demo_zone, tmp_path, attack, padding, rule):
    root, _paths = demo_zone
    secret = tmp_path / "geheim.txt"
    secret.write_text("GEHEIM-7c1e-inhoud-van-een-lokaal-bestand\n", encoding="utf-8")
    if attack == "xxe":
        doctype, reference = f'<!DOCTYPE worksheet [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'.encode(), b"&xxe;"
    else:
        doctype, reference = EXCEL_BILLION_LAUGHS, b"&lol9;"
    zone, landing = tmp_path / "zone", tmp_path / "landing"
    zone.mkdir()
    name = "subsidies_20260309.xlsx"
    _workbook_with_entities(root / "subsidies" / name, zone / name, doctype, reference, padding)
    # A good workbook beside it still lands.
    shutil.copy(root / "subsidies" / "subsidieprogrammas_20260309.xlsx", zone)
    connector = SubsidiesConnector({"dropzone_dir": str(zone)})
    batches = _extract(connector, MONDAY, landing)
    report = connector.last_report
    [refused] = report["files_rejected"]
    assert (refused["file"], refused["rule"]) == (name, rule)
    assert ("external entity (XXE)" if attack == "xxe" else "declares entities") in refused["message"]
    quarantine = zone / "quarantine" / MONDAY.isoformat()
    assert (quarantine / name).is_file() and not (zone / name).exists()
    reason = json.loads((quarantine / f"{name}.reason.json").read_text(encoding="utf-8"))
    assert (reason["file"], reason["rule"]) == (name, rule)
    assert list(iter_batch_records(batches["programmas"])) and not list(iter_batch_records(batches["subsidies"]))
    # The local file's content is nowhere: not in the landing zone, the zone's state, manifest or quarantine reasons.
    assert "GEHEIM-7c1e" not in json.dumps(report) and str(secret) not in json.dumps(report)
    for path in [*landing.rglob("*"), *zone.rglob("*")]:
        if path.is_file():
            assert b"GEHEIM-7c1e" not in path.read_bytes(), path


def test_excel_sources_refuse_to_run_when_openpyxl_is_not_defused(demo_zone, tmp_path):
    root, _paths = demo_zone
    zone = tmp_path / "zone"
    zone.mkdir()
    shutil.copy(root / "subsidies" / "subsidies_20260309.xlsx", zone)
    shutil.copy(root / "vth" / "vth_meldingen_20260309.csv", tmp_path)
    # OPENPYXL_DEFUSEDXML=False makes openpyxl fall back to the standard library's XML parser.
    script = """if True:
        import sys
        from datetime import date
        from connectors.base import ExtractWindow
        from connectors.contracts import DataContract, default_contract_path
        from connectors.exports import SubsidiesConnector
        try:
            SubsidiesConnector({"dropzone_dir": sys.argv[1]}).extract(
                ExtractWindow.for_day(date(2026, 3, 9), "unsafe"), sys.argv[2])
        except Exception as exc:
            print("extract:", type(exc).__name__, exc)
        contract = DataContract.from_file(default_contract_path("subsidies"))
        try:
            list(contract.parse(sys.argv[1] + "/subsidies_20260309.xlsx", "subsidies"))
        except Exception as exc:
            print("parse:", type(exc).__name__, exc)
        vth = DataContract.from_file(default_contract_path("vth"))
        print("csv rows:", sum(len(u.records["meldingen"]) for u in vth.parse(sys.argv[3], "meldingen")))
    """
    env = {**os.environ, "OPENPYXL_DEFUSEDXML": "False"}
    result = subprocess.run([sys.executable, "-c", script, str(zone), str(tmp_path / "landing"),
                             str(tmp_path / "vth_meldingen_20260309.csv")],
                            cwd=project_root(), env=env, capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("extract: UnsafeExcelParser subsidies: Excel workbooks are not read: "
                               "openpyxl is not using defusedxml"), result.stdout + result.stderr
    assert "pip install -c constraints.txt defusedxml" in lines[0]
    assert lines[1].startswith("parse: UnsafeExcelParser excel: Excel workbooks are not read"), result.stdout
    assert lines[2].startswith("csv rows: ") and int(lines[2].split()[-1]) > 0  # CSV contracts are unaffected
    # The run was refused before it touched the zone: the workbook waits for a rerun.
    assert (zone / "subsidies_20260309.xlsx").is_file() and not (zone / "quarantine").exists()
    assert not (tmp_path / "landing").exists()
