"""XML Auditfile Financieel 3.2: the XAF drop-zone connector and the demo municipality's daily export."""
from __future__ import annotations

import json
import tracemalloc
from collections import Counter
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from connectors.base import ExtractWindow
from connectors.dropzone import FileRejected, ParsedUnit, Rejection
from connectors.errors import SourceConfigError
from connectors.xaf import TaakveldMapping, XafConnector, default_iv3_taakvelden, default_taakveld_mapping
from demo_gemeente.financien import bookings_up_to, write_xaf_deliveries
from demo_gemeente.generator import DemoWorld
from ggm_lakehouse.landing import iter_batch_records
from tests.specs import require

XSD_RELATIVE = "specs/xaf/XmlAuditfileFinancieel3.2.xsd"  # in the reference material (tests/specs.py)
NS = "http://www.auditfiles.nl/XAF/3.2"
DAY = date(2026, 3, 10)


# --------------------------------------------------------------------------- a small, known audit file

LEDGER = [("1100", "Bank", "B"), ("1600", "Crediteuren", "B"), ("1510", "Vordering BCF", "B"),
          ("4310", "Inkoop", "P"), ("4341", "Wmo zorg in natura", "P"), ("4990", "Nog te verdelen", "P")]


def trline(nr: int, acc: str, amount: str, side: str, *, cost: str | None = None, rel: str | None = None,
           inv: str | None = None, vat: tuple[str, str] | None = None, desc: str = "regel") -> str:
    """One trLine in XSD element order."""
    return ("<trLine>" f"<nr>{nr}</nr><accID>{acc}</accID><docRef>D{nr}</docRef><effDate>2026-03-02</effDate>"
            f"<desc>{desc}</desc><amnt>{amount}</amnt><amntTp>{side}</amntTp>"
            + (f"<custSupID>{rel}</custSupID>" if rel else "") + (f"<invRef>{inv}</invRef>" if inv else "")
            + (f"<costID>{cost}</costID>" if cost else "")
            + (f"<vat><vatID>BCF21</vatID><vatPerc>21.000</vatPerc><vatAmnt>{vat[0]}</vatAmnt><vatAmntTp>{vat[1]}</vatAmntTp></vat>"
               if vat else "")
            + "</trLine>")


def transaction(nr: str, lines: list[str], day: str = "2026-03-02") -> str:
    return f"<transaction><nr>{nr}</nr><desc>Boeking {nr}</desc><periodNumber>3</periodNumber><trDt>{day}</trDt>{''.join(lines)}</transaction>"


INVOICE = transaction("INK-001", [
    trline(1, "1600", "1210.00", "C", rel="CR1", inv="F-77", desc="Factuur F-77"),
    trline(2, "4310", "600.00", "D", cost="KP57", vat=("126.00", "D")),
    trline(3, "4341", "400.00", "D", cost="KP671", vat=("84.00", "D")),
    trline(4, "1510", "210.00", "D"),
])
PAYMENT = transaction("BNK-001", [trline(1, "1600", "1210.00", "D", rel="CR1", inv="F-77"), trline(2, "1100", "1210.00", "C")])
UNBALANCED = transaction("MEM-002", [trline(1, "4310", "100.00", "D", cost="KP57"), trline(2, "1100", "99.99", "C")])
UNKNOWN_ACCOUNT = transaction("MEM-003", [trline(1, "7777", "50.00", "D"), trline(2, "1100", "50.00", "C")])
UNMAPPED = transaction("MEM-004", [trline(1, "4990", "80.50", "D"), trline(2, "1600", "80.50", "C")])


def auditfile(journals: dict[tuple[str, str], list[str]], namespace: str = NS, header_extra: str = "") -> bytes:
    """A complete XAF 3.2 document with the test ledger, one supplier, two cost centres and ``journals``."""
    n_lines = sum(t.count("<trLine>") for ts in journals.values() for t in ts)
    body = "".join(
        f"<journal><jrnID>{jrn}</jrnID><desc>{jrn} dagboek</desc><jrnTp>{tp}</jrnTp>{''.join(ts)}</journal>"
        for (jrn, tp), ts in journals.items()
    )
    ledger = "".join(f"<ledgerAccount><accID>{a}</accID><accDesc>{d}</accDesc><accTp>{t}</accTp></ledgerAccount>"
                     for a, d, t in LEDGER)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<auditfile xmlns="{namespace}">'
        "<header><fiscalYear>2026</fiscalYear><startDate>2026-01-01</startDate><endDate>2026-12-31</endDate>"
        f"<curCode>EUR</curCode><dateCreated>2026-03-10</dateCreated>{header_extra}<softwareDesc>Test</softwareDesc></header>"
        "<company><companyIdent>GM9999</companyIdent><companyName>Gemeente Demodam</companyName>"
        "<taxRegistrationCountry>NL</taxRegistrationCountry><taxRegIdent>NL001</taxRegIdent>"
        "<customersSuppliers><customerSupplier><custSupID>CR1</custSupID><custSupName>Groen B.V.</custSupName>"
        "<commerceNr>60011001</commerceNr><custSupTp>S</custSupTp></customerSupplier></customersSuppliers>"
        f"<generalLedger>{ledger}<basics>"
        "<basic><basicType>02</basicType><basicID>KP57</basicID><basicDesc>Openbaar groen</basicDesc></basic>"
        "<basic><basicType>02</basicType><basicID>KP671</basicID><basicDesc>Wmo 18+</basicDesc></basic>"
        "</basics></generalLedger>"
        "<vatCodes><vatCode><vatID>BCF21</vatID><vatDesc>BCF</vatDesc><vatToClaimAccID>1510</vatToClaimAccID></vatCode></vatCodes>"
        f"<transactions><linesCount>{n_lines}</linesCount><totalDebit>0.00</totalDebit><totalCredit>0.00</totalCredit>"
        f"{body}</transactions></company></auditfile>\n"
    ).encode("utf-8")


GOOD = auditfile({("INK", "P"): [INVOICE], ("BNK", "B"): [PAYMENT]})


def _xsd() -> Path:
    """The published XAF 3.2 XSD; skips the calling test when the reference material is absent."""
    return require(XSD_RELATIVE)


@pytest.fixture(scope="module")
def connector() -> XafConnector:
    return XafConnector({"xsd_path": str(_xsd())})


def parse(connector: XafConnector, path: Path) -> tuple[dict[str, list[dict]], list[Rejection]]:
    records: dict[str, list[dict]] = {}
    rejections = []
    for item in connector.parse_file(path):
        if isinstance(item, Rejection):
            rejections.append(item)
        else:
            assert isinstance(item, ParsedUnit)
            for dataset, rows in item.records.items():
                assert dataset in XafConnector.datasets
                records.setdefault(dataset, []).extend(rows)
    return records, rejections


def write(tmp_path: Path, content: bytes, name: str = "auditfile_2026_20260310.xaf") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


# --------------------------------------------------------------------------- parsing

def test_known_file_yields_the_right_mutaties_invoices_and_taakvelden(connector, tmp_path):
    records, rejections = parse(connector, write(tmp_path, GOOD))
    assert rejections == []
    mutaties = {(m["dagboek"], m["boekstuk"], m["regel"]): m for m in records["mutaties"]}
    assert len(mutaties) == 6
    wmo = mutaties[("INK", "INK-001", "3")]
    assert wmo["rekening"] == "4341" and wmo["bedrag"] == "400.00" and wmo["debet_credit"] == "D"
    assert wmo["kostenplaats"] == "KP671" and wmo["taakveld"] == "6.71"
    assert wmo["taakveld_naam"] == "Maatwerkdienstverlening 18+"
    assert wmo["boekjaar"] == "2026" and wmo["boekdatum"] == "2026-03-02" and wmo["btw_bedrag"] == "84.00"
    assert mutaties[("INK", "INK-001", "2")]["taakveld"] == "5.7"
    # Balance lines carry no taakveld and are not "unmapped".
    assert mutaties[("BNK", "BNK-001", "2")]["taakveld"] is None
    assert records["taakveld_ontbreekt"] == []
    (factuur,) = records["facturen"]
    assert factuur["factuurnummer"] == "F-77" and factuur["relatie"] == "CR1" and factuur["soort"] == "inkoop"
    assert factuur["relatie_kvk_nummer"] == "60011001"
    assert (factuur["bedrag_excl_btw"], factuur["bedrag_btw"]) == ("1000.00", "210.00")
    assert sorted((r["regel"], r["bedrag_excl_btw"]) for r in records["factuurregels"]) == [("2", "600.00"), ("3", "400.00")]
    assert {r["rekening"] for r in records["grootboek"]} == {a for a, _, _ in LEDGER}
    assert {(k["kostenplaats"], k["omschrijving"]) for k in records["kostenplaatsen"]} == {
        ("KP57", "Openbaar groen"), ("KP671", "Wmo 18+")}
    assert {(p["kostenplaats"], p["taakveld"]) for p in records["kostenplaats_taakvelden"]} == {("KP57", "5.7"), ("KP671", "6.71")}
    assert {(s["rekening"], s["kostenplaats"]) for s in records["subrekeningen"]} == {("4310", "KP57"), ("4341", "KP671")}
    assert records["header"][0]["boekjaar"] == "2026" and records["header"][0]["administratie_naam"] == "Gemeente Demodam"
    assert "6.72" in {t["taakveld"] for t in records["taakvelden"]}
    # Amounts balance exactly over the whole file.
    total = sum(Decimal(m["bedrag"]) * (1 if m["debet_credit"] == "D" else -1) for m in mutaties.values())
    assert total == 0


def test_unbalanced_transaction_is_rejected_and_the_rest_lands(connector, tmp_path):
    content = auditfile({("MEM", "M"): [UNBALANCED], ("INK", "P"): [INVOICE]})
    records, rejections = parse(connector, write(tmp_path, content))
    assert [(r.rule, r.position) for r in rejections] == [("unbalanced_transaction", "journal MEM transaction MEM-002")]
    assert "100.00" in rejections[0].message and "99.99" in rejections[0].message
    assert {m["boekstuk"] for m in records["mutaties"]} == {"INK-001"}


def test_unknown_account_is_rejected_with_its_position(connector, tmp_path):
    content = auditfile({("MEM", "M"): [UNKNOWN_ACCOUNT], ("BNK", "B"): [PAYMENT]})
    records, rejections = parse(connector, write(tmp_path, content))
    assert [(r.rule, r.position) for r in rejections] == [("unknown_account", "journal MEM transaction MEM-003 line 1")]
    assert "7777" in rejections[0].message
    assert {m["boekstuk"] for m in records["mutaties"]} == {"BNK-001"}


def test_unmapped_profit_and_loss_lines_land_without_taakveld_and_are_reported(connector, tmp_path):
    records, rejections = parse(connector, write(tmp_path, auditfile({("MEM", "M"): [UNMAPPED, UNMAPPED.replace("MEM-004", "MEM-005")]})))
    assert rejections == []
    suspense = [m for m in records["mutaties"] if m["rekening"] == "4990"]
    assert len(suspense) == 2 and all(m["taakveld"] is None for m in suspense)
    assert records["taakveld_ontbreekt"] == [{
        "bronbestand": "auditfile_2026_20260310.xaf", "boekjaar": "2026", "rekening": "4990",
        "rekening_omschrijving": "Nog te verdelen", "kostenplaats": None, "regels": 2, "bedrag_saldo": "161.00"}]
    assert connector.report_extra()["unmapped_accounts"]["auditfile_2026_20260310.xaf"] == {"4990": 2}


@pytest.mark.parametrize("cut", [0.5, 0.97], ids=["half", "near-end"])
def test_truncated_file_is_rejected_as_a_whole(connector, tmp_path, cut):
    path = write(tmp_path, GOOD[: int(len(GOOD) * cut)])
    with pytest.raises(FileRejected) as caught:
        parse(connector, path)
    assert caught.value.rule == "not_well_formed"


def test_truncated_file_without_xsd_validation_is_rejected_too(tmp_path):
    # Cut right after a complete transaction: every yielded unit is valid, only the end is missing.
    content = GOOD[: GOOD.index(b"</journal>")]
    with pytest.raises(FileRejected) as caught:
        parse(XafConnector({}), write(tmp_path, content))
    assert caught.value.rule == "not_well_formed"


def test_not_well_formed_file(connector, tmp_path):
    with pytest.raises(FileRejected) as caught:
        parse(connector, write(tmp_path, GOOD.replace(b"</header>", b"</heade>")))
    assert caught.value.rule == "not_well_formed" and caught.value.position.startswith("line")


@pytest.mark.parametrize("namespace", ["http://www.auditfiles.nl/XAF/3.1", "urn:example:other"])
def test_wrong_namespace_or_version(connector, tmp_path, namespace):
    with pytest.raises(FileRejected) as caught:
        parse(connector, write(tmp_path, auditfile({("BNK", "B"): [PAYMENT]}, namespace=namespace)))
    assert caught.value.rule == "unknown_namespace_or_version"
    assert namespace in caught.value.message


def test_xsd_invalid_file_is_rejected_when_validation_is_configured(connector, tmp_path):
    # An element the schema does not allow in the header (the file is well-formed and balanced).
    content = auditfile({("BNK", "B"): [PAYMENT]}, header_extra="<remark>not in XAF</remark>")
    with pytest.raises(FileRejected) as caught:
        parse(connector, write(tmp_path, content))
    assert caught.value.rule == "xsd_invalid" and "remark" in caught.value.message
    # Without an XSD the same file parses.
    records, _ = parse(XafConnector({}), write(tmp_path, content, "other_20260310.xaf"))
    assert len(records["mutaties"]) == 2


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE auditfile [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<auditfile xmlns="http://www.auditfiles.nl/XAF/3.2"><header><fiscalYear>&lol9;</fiscalYear></header></auditfile>
"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE auditfile [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<auditfile xmlns="http://www.auditfiles.nl/XAF/3.2"><header><fiscalYear>&secret;</fiscalYear></header></auditfile>
"""


@pytest.mark.parametrize("content", [BILLION_LAUGHS, XXE], ids=["billion-laughs", "external-entity"])
def test_entity_attacks_are_refused_without_expanding_anything(tmp_path, content):
    for config in ({"xsd_path": str(_xsd())}, {}):
        tracemalloc.start()
        try:
            with pytest.raises(FileRejected) as caught:
                parse(XafConnector(config), write(tmp_path, content))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert caught.value.rule == "dtd_not_allowed"
        assert "root:" not in caught.value.message
        assert peak < 5_000_000  # nothing was expanded (a billion laughs would need gigabytes)


# Long line texts (desc is String9999) keep the element count, and so the test's run time, modest.
LONG_DESC = "Groenonderhoud wijk Noord, maaien en snoeien volgens bestek. " * 16


def test_large_file_streams_with_bounded_memory(tmp_path):
    """A ~20 MB audit file: the parser's peak Python memory stays a small fraction of the file."""
    path = tmp_path / "auditfile_2026_20261231.xaf"
    head, tail = auditfile({("INK", "P"): ["@@"]}).split(b"@@")
    lines = [trline(1, "1600", "1000.00", "C", rel="CR1", inv="F-{n}")] + [
        trline(i, "4310", "100.00", "D", cost="KP57", desc=LONG_DESC) for i in range(2, 12)]
    template = transaction("T{n}", lines)
    count = 0
    with path.open("wb") as handle:
        handle.write(head)
        while handle.tell() < 20_000_000:
            handle.write(template.replace("{n}", str(count)).encode())
            count += 1
        handle.write(tail)
    size = path.stat().st_size
    connector = XafConnector({})
    mutaties = facturen = 0
    tracemalloc.start()
    try:
        for item in connector.parse_file(path):
            assert isinstance(item, ParsedUnit), item
            mutaties += len(item.records.get("mutaties", ()))
            facturen += len(item.records.get("facturen", ()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert mutaties == count * 11 and facturen == count
    assert peak < size / 8, f"peak {peak} bytes for a {size} byte file"


# --------------------------------------------------------------------------- taakveld mapping

def test_taakveld_mapping_precedence_and_validation(tmp_path):
    mapping_csv = tmp_path / "taakvelden.csv"
    mapping_csv.write_text("grootboekrekening,kostenplaats,taakveld,toelichting\n"
                           "8320,KP73,7.3,heffing\n,KP73,0.4,overhead\n8110,,0.61,ozb\n", encoding="utf-8")
    mapping = TaakveldMapping.load(mapping_csv, default_iv3_taakvelden())
    assert mapping.resolve("8320", "KP73") == "7.3"  # account + cost centre
    assert mapping.resolve("4310", "KP73") == "0.4"  # cost centre
    assert mapping.resolve("8110", None) == "0.61"  # account
    assert mapping.resolve("8110", "KP99") == "0.61"  # unmapped cost centre falls back to the account
    assert mapping.resolve("4310", None) is None
    mapping_csv.write_text("grootboekrekening,kostenplaats,taakveld\n,KP1,9.99\n", encoding="utf-8")
    with pytest.raises(SourceConfigError, match="9.99"):
        XafConnector({"taakveld_mapping": str(mapping_csv)})


def test_project_taakveld_mapping_covers_every_demo_cost_centre():
    from demo_gemeente.financien import ACCOUNTS, COST_CENTRES

    mapping = TaakveldMapping.load(default_taakveld_mapping(), default_iv3_taakvelden())
    assert all(mapping.resolve("4310", cost) for cost in COST_CENTRES)
    assert mapping.resolve("4341", "KP671") == "6.71" and mapping.resolve("4342", "KP672") == "6.72"
    assert mapping.resolve("8210", None) == "0.7"
    # The demo's suspense account is deliberately unmapped: it shows up in the report.
    assert ACCOUNTS["4990"][1] == "P" and mapping.resolve("4990", None) is None


# --------------------------------------------------------------------------- demo export

@pytest.fixture(scope="module")
def muni():
    return DemoWorld(population=600, seed=7).at(date(2026, 1, 1))


def test_demo_export_validates_against_the_xsd_and_is_deterministic(muni, tmp_path):
    (first,) = write_xaf_deliveries(muni, tmp_path / "a", DAY)
    (second,) = write_xaf_deliveries(muni, tmp_path / "b", DAY)
    assert first.name == "auditfile_2026_20260310.xaf" and first.parent.name == "xaf"
    assert first.read_bytes() == second.read_bytes()
    schema = etree.XMLSchema(etree.parse(str(_xsd())))
    document = etree.parse(str(first), etree.XMLParser(resolve_entities=False, no_network=True))
    assert schema.validate(document), schema.error_log.last_error
    records, rejections = parse(XafConnector({"xsd_path": str(_xsd())}), first)
    assert rejections == []
    mutaties = records["mutaties"]
    by_taakveld = Counter(m["taakveld"] for m in mutaties)
    assert by_taakveld["6.71"] > 0 and by_taakveld["6.72"] > 0 and by_taakveld["0.7"] > 0
    assert len({m["taakveld"] for m in mutaties if m["taakveld"]}) >= 12
    assert all(m["boekdatum"] <= DAY.isoformat() for m in mutaties)
    assert records["facturen"] and all(f["factuurnummer"] for f in records["facturen"])
    zorg = [f for f in records["facturen"] if f["relatie"].startswith("ZA")]
    assert zorg and all(f["relatie_kvk_nummer"] for f in zorg)


def test_demo_export_of_a_later_day_contains_earlier_bookings_with_corrections(muni):
    deleted: list = []
    changed: list = []
    for offset in range(0, 28, 7):
        export_day = DAY + timedelta(days=offset)
        earlier = {(b.journal, b.nr): b for b in bookings_up_to(muni, export_day)}
        later = {(b.journal, b.nr): b for b in bookings_up_to(muni, export_day + timedelta(days=7))}
        # Nothing but deletions disappears: the export is year-to-date.
        deleted += [earlier[k] for k in earlier if k not in later]
        changed += [k for k in earlier if k in later and earlier[k].lines != later[k].lines]
        assert any(b.day > export_day for b in later.values())
        for bookings in (earlier, later):
            for b in bookings.values():
                assert sum(l.amount for l in b.lines if l.side == "D") == sum(l.amount for l in b.lines if l.side == "C")
    assert deleted and all(b.journal == "MEM" and b.deleted_on is not None for b in deleted)
    assert changed


def test_demo_export_uses_declaraties_when_given(muni, tmp_path):
    declaraties = [
        {"amount": "1234.50", "date": "2026-03-03", "wet": "wmo",
         "aanbieder": {"naam": "Zorg Thuis Demodam", "agb": "42009999", "kvk": "69990001"}},
        {"amount": 100, "date": date(2026, 3, 3), "wet": "jeugd", "aanbieder_naam": "Jeugdhulp West",
         "aanbieder_agb": "42008888", "aanbieder_kvk": "69990002"},
    ]
    (path,) = write_xaf_deliveries(muni, tmp_path, DAY, sociaal_domein_spending=declaraties)
    records, rejections = parse(XafConnector({"xsd_path": str(_xsd())}), path)
    assert rejections == []
    care = {(m["rekening"], m["bedrag"], m["kostenplaats"], m["taakveld"]) for m in records["mutaties"]
            if m["rekening"] in ("4341", "4342")}
    assert care == {("4341", "1234.50", "KP671", "6.71"), ("4342", "100.00", "KP672", "6.72")}
    invoices = {(f["relatie"], f["relatie_kvk_nummer"], f["bedrag_excl_btw"]) for f in records["facturen"]
                if f["relatie"].startswith("ZA")}
    assert invoices == {("ZA42009999", "69990001", "1234.50"), ("ZA42008888", "69990002", "100.00")}
    assert {"ZA42009999", "ZA42008888"} <= {r["relatie"] for r in records["relaties"]}


# --------------------------------------------------------------------------- through the drop-zone framework

def test_extract_lands_good_files_and_quarantines_truncated_ones(tmp_path):
    zone = tmp_path / "zone"
    zone.mkdir()
    (zone / "auditfile_2026_20260310.xaf").write_bytes(
        auditfile({("MEM", "M"): [UNBALANCED, UNMAPPED], ("INK", "P"): [INVOICE]}))
    (zone / "auditfile_2025_20260310.xaf").write_bytes(GOOD[: len(GOOD) // 2])
    connector = XafConnector({"dropzone_dir": str(zone), "xsd_path": str(_xsd())})
    batches = {b.dataset: b for b in connector.extract(ExtractWindow.for_day(DAY, "run-1"), tmp_path / "landing")}
    mutaties = list(iter_batch_records(batches["mutaties"]))
    assert sorted((m["boekstuk"], m["regel"]) for m in mutaties) == [
        ("INK-001", "1"), ("INK-001", "2"), ("INK-001", "3"), ("INK-001", "4"), ("MEM-004", "1"), ("MEM-004", "2")]
    assert all(m["bronbestand"] == "auditfile_2026_20260310.xaf" for m in mutaties)
    assert len(list(iter_batch_records(batches["taakveld_ontbreekt"]))) == 1
    report = connector.last_report
    assert report["units_rejected_per_rule"] == {"unbalanced_transaction": 1}
    assert [(f["file"], f["rule"]) for f in report["files_rejected"]] == [("auditfile_2025_20260310.xaf", "not_well_formed")]
    assert report["unmapped_accounts"] == {"auditfile_2026_20260310.xaf": {"4990": 1}}
    assert (zone / "quarantine" / DAY.isoformat() / "auditfile_2025_20260310.xaf").exists()
    assert (zone / "archive" / DAY.isoformat() / "auditfile_2026_20260310.xaf").exists()
    manifest = json.loads(connector.manifest_path(DAY).read_text(encoding="utf-8"))
    assert manifest


def _attack(doctype: str, header_extra: str = "", root_attribute: str = "") -> bytes:
    """The known good audit file with ``doctype`` before its root (and an entity used in the header)."""
    document = auditfile({("INK", "P"): [INVOICE]}, header_extra=header_extra).decode("utf-8")
    declaration, rest = document.split("\n", 1)
    if root_attribute:
        rest = rest.replace("<auditfile ", f"<auditfile {root_attribute} ", 1)
    return f"{declaration}\n{doctype}\n{rest}".encode("utf-8")


def test_extract_quarantines_entity_attacks_and_never_reads_the_local_file(tmp_path):
    secret = tmp_path / "geheim.txt"
    secret.write_text("GEHEIM-a9f3-inhoud-van-een-lokaal-bestand\n", encoding="utf-8")
    laughs = BILLION_LAUGHS.decode().split("\n", 1)[1].rsplit("]>", 1)[0] + "]>"
    attacks = {
        # The expansion in the header (element text) and in an attribute of the root itself.
        "aanval_lol_20260310.xaf": _attack(laughs, header_extra="<auditfileVersion>&lol9;</auditfileVersion>"),
        "aanval_lolattr_20260310.xaf": _attack(laughs, root_attribute='data="&lol9;"'),
        "aanval_xxe_20260310.xaf": _attack(f'<!DOCTYPE auditfile [<!ENTITY s SYSTEM "{secret.as_uri()}">]>',
                                           header_extra="<auditfileVersion>&s;</auditfileVersion>"),
        "aanval_xxeparam_20260310.xaf": _attack(f'<!DOCTYPE auditfile [<!ENTITY % p SYSTEM "{secret.as_uri()}"> %p;]>'),
    }
    zone, landing = tmp_path / "zone", tmp_path / "landing"
    zone.mkdir()
    for name, content in attacks.items():
        (zone / name).write_bytes(content)
    (zone / "auditfile_2026_20260310.xaf").write_bytes(GOOD)
    tracemalloc.start()
    try:
        connector = XafConnector({"dropzone_dir": str(zone)})
        batches = {b.dataset: b for b in connector.extract(ExtractWindow.for_day(DAY, "attack"), landing)}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    report = connector.last_report
    assert {f["file"]: f["rule"] for f in report["files_rejected"]} == dict.fromkeys(attacks, "dtd_not_allowed")
    for refused in report["files_rejected"]:
        assert "DOCTYPE" in refused["message"] and "entit" in refused["message"], refused
        assert str(secret) not in refused["message"] and "GEHEIM" not in refused["message"]
        assert (zone / "quarantine" / DAY.isoformat() / refused["file"]).is_file()
        reason = json.loads((zone / "quarantine" / DAY.isoformat() / f"{refused['file']}.reason.json").read_text())
        assert (reason["file"], reason["rule"]) == (refused["file"], "dtd_not_allowed")
    assert (zone / "archive" / DAY.isoformat() / "auditfile_2026_20260310.xaf").is_file()
    assert len(list(iter_batch_records(batches["mutaties"]))) == 6
    assert peak < 50_000_000  # nothing was expanded (a billion laughs would need gigabytes)
    for path in [*landing.rglob("*"), *zone.rglob("*")]:
        if path.is_file():
            assert b"GEHEIM-a9f3" not in path.read_bytes(), path
