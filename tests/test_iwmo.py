"""iWmo/iJw 3.2 connector: real sample messages against the real XSDs, the StUF-GGk envelope, bad inputs
(not well-formed, XSD-invalid, wrong namespace/release, elfproef, duplicate, empty, billion laughs, XXE), a
20 MB declaratie in bounded memory and the full drop-zone extract.

Sample messages and XSDs are copied at test time from the reference material (``specs/iwmo-ijw`` under
``GGM_SPECS_DIR``, see tests/specs.py and the folder's PROVENANCE.md); tests that need them skip without it.
"""
from __future__ import annotations

import base64
import json
import re
import tracemalloc
from datetime import date, timedelta
from pathlib import Path

import pytest
from lxml import etree

from connectors.base import ExtractWindow
from connectors.dropzone import FileRejected, ParsedUnit, Rejection
from connectors.errors import SourceConfigError
from connectors.iwmo import (
    RECORDS_PER_UNIT,
    IjwConnector,
    IwmoConnector,
    clean_schema_bytes,
    load_message_schema,
)
from ggm_lakehouse.bsn import complete_bsn, is_valid_bsn
from tests.specs import SHARED, available, missing_reason, require

# Two iJw samples of the copied repository are themselves invalid (a 31 June date; a RetourCode where the
# 318 schema does not allow it): they serve as real XSD-invalid input below.
INVALID_SAMPLES = {"JW315.xml", "JW318.xml"}
DAY = date(2026, 3, 2)


def _sample(standard: str, name: str) -> bytes:
    """A published sample message; skips the calling test when the reference material is absent."""
    return require(f"specs/iwmo-ijw/{standard}/berichten/{name}").read_bytes()


def _xsd(standard: str) -> Path:
    """The published XSD folder of ``standard``; skips the calling test when it is absent."""
    return require(f"specs/iwmo-ijw/{standard}/xsd")


def _sample_params(standard: str, exclude: set[str] = frozenset()) -> list:
    """(standard, name) parameters for every sample message, or one skipped parameter that says why there are none."""
    folder = f"specs/iwmo-ijw/{standard}/berichten"
    if not available(folder):
        # An empty parameter list would skip with pytest's generic "got empty parameter set".
        return [pytest.param(standard, None, marks=pytest.mark.skip(reason=missing_reason(folder)), id=f"{standard}-no-samples")]
    names = sorted(p.name for p in (SHARED / folder).glob("*.xml"))
    return [(standard, n) for n in names if n not in exclude]


@pytest.fixture(scope="module")
def iwmo() -> IwmoConnector:
    return IwmoConnector({"xsd_dir": str(_xsd("iwmo"))})


@pytest.fixture(scope="module")
def ijw() -> IjwConnector:
    return IjwConnector({"xsd_dir": str(_xsd("ijw"))})


def _parse(connector, path: Path) -> list[ParsedUnit | Rejection]:
    return list(connector.parse_file(path))


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _records(items, dataset: str) -> list[dict]:
    return [r for item in items if isinstance(item, ParsedUnit) for r in item.records.get(dataset, [])]


# ---------------------------------------------------------------------------- real samples, real XSDs


@pytest.mark.parametrize("standard, name", _sample_params("iwmo") + _sample_params("ijw", INVALID_SAMPLES))
def test_sample_message_validates_against_its_xsd_and_lands_one_bericht(standard, name, iwmo, ijw, tmp_path):
    connector = iwmo if standard == "iwmo" else ijw
    items = _parse(connector, _write(tmp_path, name, _sample(standard, name)))
    assert all(isinstance(i, ParsedUnit) for i in items), items
    header = etree.fromstring(_sample(standard, name)).find("{*}Header")
    ident = header.find("{*}BerichtIdentificatie/{*}Identificatie").text
    afzender = header.find("{*}Afzender").text
    berichtcode = header.find("{*}BerichtCode").text
    assert items[0].identity == f"{standard}:{berichtcode}:{afzender}:{ident}"
    [bericht] = _records(items, "berichten")
    assert bericht["berichttype"] == name.removesuffix(".xml")
    assert bericht["berichtcode"] == header.find("{*}BerichtCode").text
    assert bericht["wet"] == ("WMO" if standard == "iwmo" else "JEUGDWET")
    assert bericht["bericht_identificatie"] == ident and bericht["afzender"] == afzender
    assert {bericht["gemeentecode"], bericht["agb_code"]} == {header.find("{*}Afzender").text, header.find("{*}Ontvanger").text}
    # Records are JSON as landed; every record repeats the message provenance.
    for item in items:
        for dataset, records in item.records.items():
            assert dataset in connector.datasets
            for record in records:
                json.dumps(record)
                assert record["bericht_identificatie"] == ident and record["standaard"] == standard


@pytest.mark.parametrize("name, line, path_end, detail", [
    ("JW315.xml", 44, "AangevraagdProduct[1]/ToewijzingEinddatum", "2027-06-31"),
    ("JW318.xml", 33, "/Bericht/Client/Verzoek/RetourCode", "not expected"),
])
def test_invalid_sample_is_rejected_as_xsd_invalid_with_line_and_path(name, line, path_end, detail, ijw, tmp_path):
    [rejection] = _parse(ijw, _write(tmp_path, name, _sample("ijw", name)))
    assert isinstance(rejection, Rejection) and rejection.rule == "xsd_invalid"
    assert f"line {line} (" in rejection.position and path_end in rejection.position
    assert rejection.position.startswith("bericht 1 (BerichtIdentificatie ")
    assert detail in rejection.message and rejection.message.startswith(f"{name[:-4]}.xsd:")


def test_schema_loader_takes_defective_copies_and_clean_official_schemas(tmp_path):
    # The copies: markdown first line, import of "basisschema.xsd" next to "Basisschema.xsd", and WMO315.xsd
    # with a whole sample message after </xs:schema>.
    xsd_dir = _xsd("iwmo")
    raw_315 = (xsd_dir / "WMO315.xsd").read_bytes()
    assert raw_315.startswith(b"##") and raw_315.rstrip().endswith(b"</wmo317:Bericht>")
    copied = load_message_schema(xsd_dir, "WMO315")
    assert copied.validate(etree.fromstring(_sample("iwmo", "WMO315.xml")))
    # The official form: clean files whose names match the import exactly.
    clean = tmp_path / "official"
    clean.mkdir()
    for xsd in xsd_dir.glob("*.xsd"):
        name = "basisschema.xsd" if xsd.name == "Basisschema.xsd" else xsd.name
        (clean / name).write_bytes(clean_schema_bytes(xsd.read_bytes()))
    assert (clean / "WMO301.xsd").read_bytes().startswith(b"<?xml")
    official = load_message_schema(clean, "WMO301")
    assert official.validate(etree.fromstring(_sample("iwmo", "WMO301.xml")))
    assert load_message_schema(clean, "WMO302") is None


def test_schema_imports_cannot_leave_the_xsd_folder(tmp_path):
    folder = tmp_path / "xsd"
    folder.mkdir()
    (folder / "WMO301.xsd").write_text(
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:x">'
        '<xs:import namespace="urn:y" schemaLocation="http://127.0.0.1:9/evil.xsd"/></xs:schema>')
    with pytest.raises(etree.XMLSchemaParseError):
        load_message_schema(folder, "WMO301")


def test_records_of_toewijzing_levering_and_declaratie(iwmo, tmp_path):
    t301 = _parse(iwmo, _write(tmp_path, "WMO301.xml", _sample("iwmo", "WMO301.xml")))
    [toewijzing] = _records(t301, "toewijzingen")
    expected = {
        "toewijzingnummer": "101", "bsn": "999900006", "productcategorie": "01", "productcode": "01A01",
        "ingangsdatum": "2023-01-01", "einddatum": "2023-12-31", "volume": 10, "eenheid": "01", "frequentie": "1",
        "gemeentecode": "0384", "agb_code": "42420001", "wet": "WMO",
    }
    assert {k: toewijzing[k] for k in expected} == expected
    [client] = _records(t301, "clienten")
    assert client["juridische_status"] == "02" and client["geboortedatum"] == "1967-08-13"
    assert _records(t301, "producten") == [{**{k: toewijzing[k] for k in (
        "standaard", "wet", "berichttype", "berichtcode", "bericht_identificatie", "dagtekening", "afzender",
        "ontvanger", "gemeentecode", "agb_code", "kvk_nummer")}, "productcategorie": "01", "productcode": "01A01"}]

    stops = _records(_parse(iwmo, _write(tmp_path, "WMO307.xml", _sample("iwmo", "WMO307.xml"))), "leveringen")
    assert [(s["toewijzingnummer"], s["status"], s["einddatum"], s["reden_beeindiging"]) for s in stops] == [
        ("300201", "gestopt", "2025-07-18", "31"), ("300202", "gestopt", "2025-07-18", "31")]

    declaratie = _parse(iwmo, _write(tmp_path, "WMO323.xml", _sample("iwmo", "WMO323.xml")))
    [header] = _records(declaratie, "declaraties")
    assert (header["declaratienummer"], header["totaal_bedrag"], header["agb_code"]) == ("DN001", "580.00", "65656055")
    prestaties = _records(declaratie, "prestaties")
    assert [(p["bsn"], p["referentienummer"], p["toewijzingnummer"], p["bedrag"]) for p in prestaties] == [
        ("999900006", "RN001", "20072", "50.00"), ("999900006", "RN002", "200730", "240.00"),
        ("999900018", "RN003", "20074", "50.00"), ("999900018", "RN004", "20073", "240.00")]
    assert sum(float(p["bedrag"]) for p in prestaties) == float(header["totaal_bedrag"])


def test_retourbericht_lands_its_retourcodes(ijw, tmp_path):
    [unit] = _parse(ijw, _write(tmp_path, "JW302.xml", _sample("ijw", "JW302.xml")))
    [bericht] = unit.records["berichten"]
    assert bericht["is_retourbericht"] and bericht["retourcodes"] == ["8848"]
    assert bericht["identificatie_retour"] == "9452b7eb-c87"


# ---------------------------------------------------------------------------- StUF-GGk envelope


def _envelope(payload: bytes, functie: str) -> bytes:
    template = require("specs/iwmo-ijw/stuf-ggk-envelop/ggk_Di01.xml").read_bytes()
    encoded = base64.encodebytes(payload)  # line-wrapped base64, as SOAP stacks write it
    template = template.replace(b"SGllciBzdGFhdCBoZXQgaGVlbmJlcmljaHQ=", encoded)
    return template.replace(b"<StUF:functie>WMO301</StUF:functie>", f"<StUF:functie>{functie}</StUF:functie>".encode())


def test_stuf_ggk_envelope_is_unwrapped(iwmo, tmp_path):
    bare = _parse(iwmo, _write(tmp_path, "bare.xml", _sample("iwmo", "WMO301.xml")))
    wrapped = _parse(iwmo, _write(tmp_path, "wrapped.xml", _envelope(_sample("iwmo", "WMO301.xml"), "WMO301")))
    assert [u.identity for u in wrapped] == [u.identity for u in bare] == ["iwmo:414:0384:123456789012"]
    assert _records(wrapped, "toewijzingen") == _records(bare, "toewijzingen")
    [bericht] = _records(wrapped, "berichten")
    assert bericht["envelop_functie"] == "WMO301" and bericht["envelop_berichtcode"] == "Di01"
    assert bericht["envelop_zender_organisatie"] == "0548"


def test_envelope_with_a_bad_payload_is_rejected(iwmo, tmp_path):
    with pytest.raises(FileRejected) as caught:
        _parse(iwmo, _write(tmp_path, "env.xml", _envelope(_sample("iwmo", "WMO301.xml")[:1500], "WMO301")))
    assert caught.value.rule == "not_well_formed"
    sample = require("specs/iwmo-ijw/stuf-ggk-envelop/ggk_Di01.xml").read_bytes()
    with pytest.raises(FileRejected) as caught:
        _parse(iwmo, _write(tmp_path, "env2.xml", sample.replace(b"SGllciBzdGFhdCBoZXQgaGVlbmJlcmljaHQ=", b"*not base64*")))
    assert caught.value.rule == "envelope_invalid"


# ---------------------------------------------------------------------------- bad inputs


def test_not_well_formed_file_is_rejected_whole(iwmo, tmp_path):
    truncated = _sample("iwmo", "WMO301.xml")[:1500]
    with pytest.raises(FileRejected) as caught:
        _parse(iwmo, _write(tmp_path, "cut.xml", truncated))
    assert caught.value.rule == "not_well_formed" and caught.value.position.startswith("line ")


def test_xsd_invalid_message_names_the_line_and_element(iwmo, tmp_path):
    bad = _sample("iwmo", "WMO301.xml").replace(b"<wmo301:Geslacht>1<", b"<wmo301:Geslacht>X<", 1)
    [rejection] = _parse(iwmo, _write(tmp_path, "bad.xml", bad))
    assert rejection.rule == "xsd_invalid" and rejection.identity == "iwmo:414:0384:123456789012"
    assert rejection.position == "bericht 1 (BerichtIdentificatie 123456789012) line 23 (/Bericht/Client/Geslacht)"
    assert "'X'" in rejection.message


def test_without_xsd_dir_structural_checks_still_apply(tmp_path):
    connector = IwmoConnector({})
    ok = _parse(connector, _write(tmp_path, "ok.xml", _sample("iwmo", "WMO301.xml")))
    assert isinstance(ok[0], ParsedUnit)
    wrong_code = _sample("iwmo", "WMO301.xml").replace(b"<wmo301:BerichtCode>414<", b"<wmo301:BerichtCode>418<")
    [rejection] = _parse(connector, _write(tmp_path, "code.xml", wrong_code))
    assert rejection.rule == "structure_invalid" and "expected 414" in rejection.message


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b.replace(b"/iwmo/3_2/wmo301/", b"/iwmo/3_1/wmo301/"), "not iwmo release 3.2"),
    (lambda b: b.replace(b"/iwmo/3_2/wmo301/schema", b"urn:example:other"), "not an iStandaarden Bericht"),
    (lambda b: b.replace(b"<wmo301:BerichtSubversie>2<", b"<wmo301:BerichtSubversie>1<"), "is not 3.2"),
])
def test_wrong_namespace_or_release_is_rejected(mutate, message, tmp_path):
    connector = IwmoConnector({})  # without XSDs: the release check must not depend on validation
    with pytest.raises(FileRejected) as caught:
        _parse(connector, _write(tmp_path, "v.xml", mutate(_sample("iwmo", "WMO301.xml"))))
    assert caught.value.rule == "unknown_namespace_or_version" and message in caught.value.message


def test_ijw_message_in_the_iwmo_zone_is_rejected(iwmo, tmp_path):
    with pytest.raises(FileRejected) as caught:
        _parse(iwmo, _write(tmp_path, "JW301.xml", _sample("ijw", "JW301.xml")))
    assert caught.value.rule == "unknown_namespace_or_version"


def test_bsn_failing_the_elfproef_rejects_the_message(iwmo, tmp_path):
    assert not is_valid_bsn("999900007")
    bad = _sample("iwmo", "WMO323.xml").replace(b"<wmo323:Bsn>999900018<", b"<wmo323:Bsn>999900007<")
    items = _parse(iwmo, _write(tmp_path, "323.xml", bad))
    assert len(items) == 1 and isinstance(items[0], Rejection)
    rejection = items[0]
    assert rejection.rule == "bsn_elfproef" and rejection.position == "bericht 1 (BerichtIdentificatie 765432198)"
    assert "client 2 of 2" in rejection.message and "999900007" not in rejection.message


def test_empty_file_is_rejected(iwmo, tmp_path):
    for content in (b"", b"  \n\t\n"):
        with pytest.raises(FileRejected) as caught:
            _parse(iwmo, _write(tmp_path, "empty.xml", content))
        assert caught.value.rule == "empty_file"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE wmo301:Bericht [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE wmo301:Bericht [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
"""


def _with_prolog(prolog: bytes, entity: bytes) -> bytes:
    body = _sample("iwmo", "WMO301.xml").split(b"?>", 1)[1]
    return prolog + body.replace(b"<wmo301:Commentaar>Client commentaar<", b"<wmo301:Commentaar>" + entity + b"<", 1)


def _late_doctype() -> bytes:
    """A DOCTYPE after 100 kB of comments, beyond the prolog sniff: the parser-level check catches it."""
    return (b'<?xml version="1.0"?>\n' + b"<!--" + b"x" * 100_000 + b"-->\n" + XXE.split(b"\n", 1)[1]
            + _sample("iwmo", "WMO301.xml").split(b"?>", 1)[1].replace(b"Client commentaar", b"&xxe;", 1))


# The attacks embed a sample message, so they are built inside the test (where a missing sample skips),
# not at collection.
@pytest.mark.parametrize("make, rule", [
    (lambda: _with_prolog(BILLION_LAUGHS, b"&lol9;"), "entity_expansion"),
    (lambda: _with_prolog(XXE, b"&xxe;"), "dtd_forbidden"),
    (_late_doctype, "dtd_forbidden"),
], ids=["billion-laughs", "xxe", "late-doctype"])
def test_entity_attacks_are_rejected_never_expanded(make, rule, iwmo, tmp_path):
    data = make()
    passwd = Path("/etc/passwd").read_text().splitlines()[0]
    with pytest.raises(FileRejected) as caught:
        _parse(iwmo, _write(tmp_path, "attack.xml", data))
    assert caught.value.rule == rule
    assert passwd not in str(caught.value) and "/etc/passwd" not in str(caught.value)
    # Also inside an envelope, where the payload is only visible after base64 decoding.
    with pytest.raises(FileRejected) as caught:
        _parse(iwmo, _write(tmp_path, "env.xml", _envelope(data, "WMO301")))
    assert caught.value.rule == rule


# ---------------------------------------------------------------------------- AGB -> KvK


def test_agb_kvk_register_adds_kvk_nummer_to_zorgaanbieder_records(tmp_path):
    register = tmp_path / "agb_kvk.csv"
    register.write_text("agb_code;kvk_nummer\n42420001;69599084\n")
    connector = IwmoConnector({"xsd_dir": str(_xsd("iwmo")), "agb_kvk_mapping": str(register)})
    items = _parse(connector, _write(tmp_path, "WMO301.xml", _sample("iwmo", "WMO301.xml")))
    [aanbieder] = _records(items, "zorgaanbieders")
    assert (aanbieder["agb_code"], aanbieder["kvk_nummer"]) == ("42420001", "69599084")
    assert {r["kvk_nummer"] for r in _records(items, "toewijzingen")} == {"69599084"}
    register.write_text("agb_code;kvk_nummer\n4242;69599084\n")
    with pytest.raises(SourceConfigError, match="8 digits"):
        IwmoConnector({"agb_kvk_mapping": str(register)})


def test_project_agb_kvk_file_has_the_documented_header():
    from ggm_lakehouse.config import project_root

    lines = (project_root() / "config" / "agb_kvk.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "agb_code;kvk_nummer"
    IwmoConnector({"agb_kvk_mapping": "config/agb_kvk.csv"})


def test_config_is_validated(tmp_path):
    with pytest.raises(SourceConfigError):
        IwmoConnector({"xsd_folder": "xsd"})  # unknown key
    with pytest.raises(SourceConfigError, match="not a folder"):
        IwmoConnector({"xsd_dir": str(tmp_path / "missing")})


# ---------------------------------------------------------------------------- 20 MB in bounded memory


def _large_declaratie(path: Path, target_bytes: int) -> int:
    """Write a valid WMO323 of at least ``target_bytes`` with many clients and prestaties; returns the prestaties."""
    sample = _sample("iwmo", "WMO323.xml")
    head, rest = sample.split(b"<wmo323:Clienten>", 1)
    tail = rest.split(b"</wmo323:Clienten>", 1)[1]
    prestatie = rest.split(b"<wmo323:Prestatie>", 1)[1].split(b"</wmo323:Prestatie>", 1)[0]
    count = 0
    with path.open("wb") as out:
        out.write(head + b"<wmo323:Clienten>")
        client_number = 0
        while out.tell() < target_bytes:
            client_number += 1
            bsn = complete_bsn(f"1{client_number:07d}") or complete_bsn(f"2{client_number:07d}")
            out.write(b"<wmo323:Client><wmo323:Bsn>" + bsn.encode() + b"</wmo323:Bsn><wmo323:Prestaties>")
            for _ in range(20):
                count += 1
                line = prestatie.replace(b"RN001", f"RN{count:09d}".encode())
                out.write(b"<wmo323:Prestatie>" + line + b"</wmo323:Prestatie>")
            out.write(b"</wmo323:Prestaties></wmo323:Client>")
        out.write(b"</wmo323:Clienten>" + tail)
    return count


def test_twenty_megabyte_declaratie_streams_in_bounded_memory(iwmo, tmp_path):
    path = tmp_path / "WMO323_groot.xml"
    expected = _large_declaratie(path, 20 * 1024 * 1024)
    assert path.stat().st_size >= 20 * 1024 * 1024
    prestaties = units = 0
    identities = []
    tracemalloc.start()
    try:
        for item in iwmo.parse_file(path):  # validated against WMO323.xsd while streaming
            assert isinstance(item, ParsedUnit), item
            units += 1
            identities.append(item.identity)
            prestaties += len(item.records.get("prestaties", []))
            del item  # the framework streams each unit to disk; so does this consumer
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert prestaties == expected and units >= expected // RECORDS_PER_UNIT
    assert identities[0] == "iwmo:484:65656055:765432198" and identities[1] == "iwmo:484:65656055:765432198#2"
    assert len(set(identities)) == units
    # Peak Python memory is a few units, not the 20 MB file (nor its ~80k records).
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


# ---------------------------------------------------------------------------- the full drop-zone extract


def test_extract_lands_messages_and_quarantines_bad_files(tmp_path):
    from ggm_lakehouse.landing import find_complete_batches

    zone, landing = tmp_path / "zone", tmp_path / "landing"
    zone.mkdir()
    for name in ("WMO301.xml", "WMO305.xml", "WMO307.xml", "WMO323.xml"):
        (zone / name).write_bytes(_sample("iwmo", name))
    # The same message again in other bytes (re-sent by the application): a duplicate bericht, not a duplicate file.
    (zone / "WMO301_opnieuw.xml").write_bytes(_sample("iwmo", "WMO301.xml").replace(b"\t", b"  "))
    (zone / "WMO301_envelop.xml").write_bytes(_envelope(_sample("iwmo", "WMO315.xml"), "WMO315"))
    (zone / "xxe.xml").write_bytes(_with_prolog(XXE, b"&xxe;"))
    (zone / "leeg.xml").write_bytes(b"")
    connector = IwmoConnector({"dropzone_dir": str(zone), "xsd_dir": str(_xsd("iwmo"))})
    results = connector.extract(ExtractWindow.for_day(DAY, "test-iwmo"), landing)
    report = connector.last_report
    assert report["units_rejected_per_rule"] == {"duplicate_bericht": 1}
    assert {f["file"]: f["rule"] for f in report["files_rejected"]} == {
        "xxe.xml": "dtd_forbidden", "leeg.xml": "empty_file", "WMO301_opnieuw.xml": "duplicate_bericht"}
    by_dataset = {r.dataset: r for r in results}
    assert by_dataset["toewijzingen"].record_count == 1 and by_dataset["prestaties"].record_count == 4
    assert by_dataset["berichten"].record_count == 5 and by_dataset["aanvragen"].record_count == 2
    [batch] = find_complete_batches(landing, "iwmo", "leveringen", DAY)
    statuses = sorted(r["status"] for p in sorted(batch.glob("part-*.json"))
                      for r in json.loads(p.read_text())["records"])
    assert statuses == ["gestart", "gestart", "gestopt", "gestopt"]
    # Nothing of /etc/passwd reached the landing zone, the archive or the quarantine reasons.
    secret = Path("/etc/passwd").read_text().splitlines()[0]
    for path in [*landing.rglob("*"), *zone.rglob("*")]:
        if path.is_file() and path.name != "xxe.xml":
            assert secret not in path.read_text(errors="ignore"), path
    # The next day the same message again is still a duplicate.
    (zone / "WMO305_later.xml").write_bytes(_sample("iwmo", "WMO305.xml") + b"\n")
    connector.extract(ExtractWindow.for_day(date(2026, 3, 3), "test-iwmo-2"), landing)
    assert connector.last_report["units_rejected_per_rule"] == {"duplicate_bericht": 1}


# ---------------------------------------------------------------------------- mandatory dates (issue 15)


def _without(data: bytes, element: str, occurrence: int = 1) -> bytes:
    """``data`` without the ``occurrence``-th element ``prefix:element`` (its line stays, empty)."""
    matches = list(re.finditer(rb"<(\w+):%s>[^<]*</\1:%s>" % (element.encode(), element.encode()), data))
    assert len(matches) >= occurrence, element
    found = matches[occurrence - 1]
    return data[:found.start()] + data[found.end():]


@pytest.mark.parametrize("standard, name, element, occurrence, record", [
    ("iwmo", "WMO305.xml", "Begindatum", 1, "StartProduct 1"),
    ("iwmo", "WMO305.xml", "Begindatum", 2, "StartProduct 2"),
    ("ijw", "JW305.xml", "Begindatum", 1, "StartProduct 1"),
    ("iwmo", "WMO307.xml", "Einddatum", 1, "StopProduct 1"),
    ("iwmo", "WMO301.xml", "Ingangsdatum", 1, "ToegewezenProduct 1"),
    ("iwmo", "WMO315.xml", "ToewijzingIngangsdatum", 1, "AangevraagdProduct 1"),
    ("iwmo", "WMO323.xml", "DeclaratieDagtekening", 1, "Declaratie 1"),
], ids=["wmo305", "wmo305-second-product", "jw305", "wmo307-einddatum", "wmo301-ingangsdatum",
        "wmo315-toewijzingingangsdatum", "wmo323-dagtekening"])
def test_message_without_a_mandatory_date_is_refused_without_xsds(standard, name, element, occurrence, record, tmp_path):
    connector = (IwmoConnector if standard == "iwmo" else IjwConnector)({})  # the embedded default: no xsd_dir
    items = _parse(connector, _write(tmp_path, name, _without(_sample(standard, name), element, occurrence)))
    assert len(items) == 1 and isinstance(items[0], Rejection), items  # nothing of the message is yielded
    rejection = items[0]
    assert rejection.file == name and rejection.rule == "required_date_missing"
    assert rejection.position.startswith("bericht 1 (BerichtIdentificatie ") and rejection.position.endswith(f"({record})")
    assert f"{record}" in rejection.message and f"lacks {element}, which {name[:-4]} requires" in rejection.message


def test_a_mandatory_date_that_is_no_date_is_refused_without_xsds(tmp_path):
    bad = _sample("iwmo", "WMO305.xml").replace(b">2025-04-03</wmo305:Begindatum>", b">2025-02-30</wmo305:Begindatum>")
    [rejection] = _parse(IwmoConnector({}), _write(tmp_path, "WMO305.xml", bad))
    assert rejection.rule == "invalid_date" and rejection.position.endswith("line 33 (StartProduct 1)")
    assert "Begindatum '2025-02-30' is not a date" in rejection.message
    # The declaratie's periods are checked too (inside ProductPeriode, with the basisschema prefix).
    declaratie = _without(_sample("iwmo", "WMO323.xml"), "Einddatum", 2)
    [rejection] = _parse(IwmoConnector({}), _write(tmp_path, "WMO323.xml", declaratie))
    assert rejection.rule == "required_date_missing" and "lacks ProductPeriode/Einddatum" in rejection.message


def _extract_day(zone: Path, landing: Path, day: date) -> dict:
    connector = IwmoConnector({"dropzone_dir": str(zone)})  # no xsd_dir, as on the embedded default
    batches = {b.dataset: b for b in connector.extract(ExtractWindow.for_day(day, f"iwmo-{day}"), landing)}
    return {"report": connector.last_report, "batches": batches}


def test_refused_message_never_makes_its_corrected_version_a_duplicate(tmp_path):
    from ggm_lakehouse.landing import iter_batch_records

    valid = _sample("iwmo", "WMO305.xml")
    invalid = _without(valid, "Begindatum")
    # Same run: the invalid message is processed first (files are taken in name order).
    zone, landing = tmp_path / "zone", tmp_path / "landing"
    zone.mkdir()
    (zone / "WMO305_1_zonder_begindatum.xml").write_bytes(invalid)
    (zone / "WMO305_2_hersteld.xml").write_bytes(valid)
    run = _extract_day(zone, landing, DAY)
    [refused] = run["report"]["files_rejected"]
    assert (refused["file"], refused["rule"]) == ("WMO305_1_zonder_begindatum.xml", "required_date_missing")
    assert refused["position"] == "bericht 1 (BerichtIdentificatie 123456789013) line 33 (StartProduct 1)"
    assert run["report"]["units_rejected_per_rule"] == {"required_date_missing": 1}
    quarantine = zone / "quarantine" / DAY.isoformat()
    assert (quarantine / "WMO305_1_zonder_begindatum.xml").is_file()
    reason = json.loads((quarantine / "WMO305_1_zonder_begindatum.xml.rejections.json").read_text(encoding="utf-8"))
    assert [(r["rule"], r["position"]) for r in reason["rejections"]] == [
        ("required_date_missing", "bericht 1 (BerichtIdentificatie 123456789013) line 33 (StartProduct 1)")]
    assert (zone / "archive" / DAY.isoformat() / "WMO305_2_hersteld.xml").is_file()
    leveringen = list(iter_batch_records(run["batches"]["leveringen"]))
    assert sorted(r["begindatum"] for r in leveringen) == ["2025-04-03", "2025-04-04"]

    # Next day: only the invalid message on day 1, the corrected one on day 2.
    zone, landing = tmp_path / "zone2", tmp_path / "landing2"
    zone.mkdir()
    (zone / "WMO305_fout.xml").write_bytes(invalid)
    first = _extract_day(zone, landing, DAY)
    assert [(f["file"], f["rule"]) for f in first["report"]["files_rejected"]] == [
        ("WMO305_fout.xml", "required_date_missing")]
    assert "leveringen" not in first["batches"]  # nothing landed: no accepted file that day
    (zone / "WMO305_hersteld.xml").write_bytes(valid)
    second = _extract_day(zone, landing, DAY + timedelta(days=1))
    assert second["report"]["files_rejected"] == [] and second["report"]["units_rejected_per_rule"] == {}
    assert len(list(iter_batch_records(second["batches"]["leveringen"]))) == 2


# ---------------------------------------------------------------------------- entity attacks in the drop zone


def _with_entity(standard: str, name: str, doctype: bytes, reference: bytes, padding: int = 0) -> bytes:
    """A sample message with ``doctype`` before its root and ``reference`` in the client's Achternaam."""
    body = _sample(standard, name).split(b"?>", 1)[1]
    body = re.sub(rb"(<\w+:Achternaam>)", lambda m: m.group(1) + reference, body, count=1)
    comment = b"<!--" + b"x" * padding + b"-->\n" if padding else b""
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + comment + doctype + body


@pytest.mark.parametrize("standard, name", [("iwmo", "WMO301.xml"), ("ijw", "JW301.xml")])
def test_entity_attacks_in_the_drop_zone_are_quarantined_and_never_read(standard, name, tmp_path):
    secret = tmp_path / "geheim.txt"
    secret.write_text("GEHEIM-51d0-inhoud-van-een-lokaal-bestand\n", encoding="utf-8")
    xxe = f'<!DOCTYPE Bericht [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>\n'.encode()
    laughs = BILLION_LAUGHS.split(b"\n", 1)[1]
    zone, landing = tmp_path / "zone", tmp_path / "landing"
    zone.mkdir()
    attacks = {
        "aanval_lol.xml": (_with_entity(standard, name, laughs, b"&lol9;"), "entity_expansion"),
        "aanval_xxe.xml": (_with_entity(standard, name, xxe, b"&xxe;"), "dtd_forbidden"),
        # Beyond the prolog sniff: the parser-level check catches it.
        "aanval_xxe_laat.xml": (_with_entity(standard, name, xxe, b"&xxe;", padding=100_000), "dtd_forbidden"),
        "aanval_envelop.xml": (_envelope(_with_entity(standard, name, xxe, b"&xxe;"), name[:-4]), "dtd_forbidden"),
    }
    for file_name, (data, _rule) in attacks.items():
        (zone / file_name).write_bytes(data)
    (zone / name).write_bytes(_sample(standard, name))
    connector = (IwmoConnector if standard == "iwmo" else IjwConnector)({"dropzone_dir": str(zone)})
    batches = {b.dataset: b for b in connector.extract(ExtractWindow.for_day(DAY, "attack"), landing)}
    report = connector.last_report
    assert {f["file"]: f["rule"] for f in report["files_rejected"]} == {f: rule for f, (_d, rule) in attacks.items()}
    for refused in report["files_rejected"]:
        assert "DTDs are not allowed" in refused["message"], refused
        assert str(secret) not in refused["message"] and secret.as_uri() not in refused["message"]
        assert (zone / "quarantine" / DAY.isoformat() / refused["file"]).is_file()
    assert (zone / "archive" / DAY.isoformat() / name).is_file() and batches["berichten"].record_count == 1
    for path in [*landing.rglob("*"), *zone.rglob("*")]:
        if path.is_file():
            assert b"GEHEIM-51d0" not in path.read_bytes(), path
