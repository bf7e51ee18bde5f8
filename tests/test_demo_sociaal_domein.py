"""The demo municipality's iWmo/iJw traffic: valid release 3.2 messages about real residents and aanbieders.

Every message is validated against the published XSDs in ``specs/iwmo-ijw`` of the reference material
(loaded with the repairs PROVENANCE.md lists), enveloped ones after unwrapping their StUF-GGk envelope,
which is itself validated against the ggk0310 schema. Tests that need the XSDs skip without the reference
material (see tests/specs.py); the others still check the demo traffic.
"""
from __future__ import annotations

import base64
import re
import shutil
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

import pytest
from lxml import etree

from demo_gemeente.generator import DemoWorld, age_in_years
from demo_gemeente.kvk import KvkRegister
from demo_gemeente.sociaal_domein import (
    HISTORY_START,
    JEUGD,
    WMO,
    render_message,
    sociaal_domein_state,
    write_ijw_deliveries,
    write_iwmo_deliveries,
)
from ggm_lakehouse.bsn import is_valid_bsn
from tests.specs import require

FIRST_DAY = date(2026, 4, 28)  # a week that crosses a month end, so monthly declaraties are sent
DAYS = [FIRST_DAY + timedelta(days=i) for i in range(14)]
NS_GGK = "http://www.stufstandaarden.nl/sectormodel/ggk/0210"
FILE_NAME = re.compile(r"^(\d{3})_(\d{4}|\d{8})_([0-9A-Za-z]{1,12})_(\d{8})\.xml$")


def _schema_text(path: Path) -> str:
    """The XSD text without the copy defects: a markdown line before ``<?xml``, junk after ``</xs:schema>``."""
    text = path.read_text(encoding="utf-8-sig")
    text = text[text.index("<?xml"):]
    end = text.rindex("</xs:schema>") + len("</xs:schema>")
    return text[:end] + "\n"


@pytest.fixture(scope="module")
def schemas(tmp_path_factory) -> dict[str, etree.XMLSchema]:
    """XMLSchema per message namespace, plus the StUF-GGk envelope schema under the key ``ggk``."""
    specs = require("specs/iwmo-ijw")
    root = tmp_path_factory.mktemp("xsd")
    result: dict[str, etree.XMLSchema] = {}
    for standard in ("iwmo", "ijw"):
        folder = root / standard
        folder.mkdir()
        for xsd in (specs / standard / "xsd").glob("*.xsd"):
            (folder / xsd.name).write_text(_schema_text(xsd), encoding="utf-8")
        # The message XSDs import "basisschema.xsd" while the file is "Basisschema.xsd".
        shutil.copy(folder / "Basisschema.xsd", folder / "basisschema.xsd")
        for xsd in sorted(folder.glob("*.xsd")):
            if xsd.name.lower() == "basisschema.xsd":
                continue
            tree = etree.parse(str(xsd))
            result[tree.getroot().get("targetNamespace")] = etree.XMLSchema(tree)
    # ggk0310 includes ../../0301/stuf0301mtom.xsd and ../../xmlmime/xmlmime.xsd: rebuild that layout.
    envelop = specs / "stuf-ggk-envelop"
    ggk_dir = root / "ggk" / "sectormodel" / "ggk0310"
    for folder in (ggk_dir, root / "ggk" / "0301", root / "ggk" / "xmlmime"):
        folder.mkdir(parents=True)
    for name in ("ggk0310_msg.xsd", "ggk0310_msg_stuf.xsd"):
        shutil.copy(envelop / name, ggk_dir / name)
    for name in ("stuf0301.xsd", "stuf0301mtom.xsd"):
        shutil.copy(envelop / name, root / "ggk" / "0301" / name)
    shutil.copy(envelop / "xmlmime.xsd", root / "ggk" / "xmlmime" / "xmlmime.xsd")
    result["ggk"] = etree.XMLSchema(etree.parse(str(ggk_dir / "ggk0310_msg.xsd")))
    return result


@pytest.fixture(scope="module")
def world() -> DemoWorld:
    return DemoWorld(population=3000, seed=42)


@pytest.fixture(scope="module")
def kvk(world) -> KvkRegister:
    return KvkRegister(world)


@pytest.fixture(scope="module")
def delivered(world, kvk, tmp_path_factory) -> dict[date, list[Path]]:
    """Fourteen consecutive delivery days of both standards, the first with the backlog."""
    root = tmp_path_factory.mktemp("dropzone")
    files = {}
    for day in DAYS:
        muni = world.at(day)
        backlog = day == FIRST_DAY
        files[day] = (write_iwmo_deliveries(muni, root, day, kvk_register=kvk, include_backlog=backlog)
                      + write_ijw_deliveries(muni, root, day, kvk_register=kvk, include_backlog=backlog))
    return files


@pytest.fixture(scope="module")
def state(world, kvk):
    return sociaal_domein_state(world.at(DAYS[-1]), kvk_register=kvk)


def _unwrap(data: bytes, schemas) -> tuple[etree._Element, bool]:
    """The iStandaarden message in ``data``, unwrapping (and validating) a StUF-GGk envelope."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    root = etree.fromstring(data, parser)
    if etree.QName(root).namespace != NS_GGK:
        return root, False
    schemas["ggk"].assertValid(root)
    assert etree.QName(root).localname == "envelopHeenbericht-ggk_Di01"
    payload = base64.b64decode(root.findtext(f"{{{NS_GGK}}}parameters/{{{NS_GGK}}}bericht"), validate=True)
    return etree.fromstring(payload, parser), True


def _text(message: etree._Element, local_path: str) -> str | None:
    """Text of the first element whose local-name path matches ``a/b/c`` (namespaces ignored)."""
    xpath = "/".join(f"*[local-name()='{part}']" for part in local_path.split("/"))
    found = message.xpath(xpath)
    return found[0].text if found else None


def _all(message: etree._Element, local_name: str) -> list[etree._Element]:
    return message.xpath(f".//*[local-name()='{local_name}']")


def test_delivered_files_validate_against_the_release_3_2_schemas(delivered, schemas):
    seen_types, enveloped, plain = set(), 0, 0
    for day, paths in delivered.items():
        for path in paths:
            match = FILE_NAME.match(path.name)
            assert match, f"unexpected file name {path.name}"
            message, was_enveloped = _unwrap(path.read_bytes(), schemas)
            namespace = etree.QName(message).namespace
            assert namespace in schemas, f"{path.name}: no schema for {namespace}"
            schemas[namespace].assertValid(message)
            enveloped += was_enveloped
            plain += not was_enveloped
            header_code = _text(message, "Header/BerichtCode")
            assert match.group(1) == header_code
            assert match.group(2) == _text(message, "Header/Afzender")
            assert path.parent.name == ("iwmo" if "/iwmo/" in namespace else "ijw")
            if match.group(4) != f"{day:%Y%m%d}":
                # Only the first day's backlog carries earlier dates (toewijzingen still current).
                assert day == FIRST_DAY and match.group(4) < f"{day:%Y%m%d}"
            seen_types.add(namespace.rsplit("/", 2)[-2])
    assert enveloped > 0 and plain > 3 * enveloped / 2, (enveloped, plain)
    # A fortnight across a month end shows the whole daily and monthly traffic.
    assert {"wmo301", "wmo305", "wmo315", "wmo323", "jw301", "jw302", "jw315", "jw316", "jw323", "jw325"} <= seen_types
    counts = [len(paths) for paths in delivered.values()]
    assert sum(counts[1:]) / len(counts[1:]) < 25, counts  # a handful of messages a day, not a flood


def test_every_planned_message_type_validates(world, kvk, state, schemas):
    """All traffic since the start of the history (317/318/319/320 included) renders valid messages."""
    muni = world.at(state.until)
    types = set()
    for message in state.messages:
        root, _ = _unwrap(render_message(muni, message), schemas)
        schemas[etree.QName(root).namespace].assertValid(root)
        types.add((message.wet, message.kind))
    expected_wmo = {(WMO, k) for k in ("301", "305", "307", "315", "317", "319", "323")}
    expected_jw = {(JEUGD, k) for k in ("301", "302", "305", "306", "307", "308", "315", "316", "317", "318",
                                        "319", "320", "323", "325")}
    assert expected_wmo | expected_jw <= types, sorted((expected_wmo | expected_jw) - types)


def test_clients_are_residents_and_jeugd_clients_are_minors(delivered, world, schemas):
    checked = 0
    for day, paths in delivered.items():
        muni = world.at(day)
        for path in paths:
            message, _ = _unwrap(path.read_bytes(), schemas)
            message_day = date.fromisoformat(_text(message, "Header/BerichtIdentificatie/Dagtekening"))
            for bsn_el in _all(message, "Bsn"):
                bsn = bsn_el.text
                assert is_valid_bsn(bsn), bsn
                person = muni.persons.get(bsn)
                assert person is not None, f"{path.name}: {bsn} is not a person of the municipality"
                # Only a stop because of death and a declaratie for earlier months may follow a death.
                stop_for_death = _text(message, "Client/StopProducten/StopProduct/RedenBeeindiging") == "02"
                if not stop_for_death and _text(message, "Declaratie/DeclaratieNummer") is None:
                    assert person.overlijdensdatum is None or person.overlijdensdatum >= message_day, path.name
                if "/ijw/" in etree.QName(message).namespace:
                    assert age_in_years(person.geboortedatum, message_day) < 18, (path.name, bsn)
                geboorte = bsn_el.getparent().xpath("*[local-name()='Geboortedatum']/*[local-name()='Datum']")
                if geboorte:
                    assert geboorte[0].text == person.geboortedatum.isoformat()
                checked += 1
    assert checked > 20


def test_aanbieders_are_kvk_zorgaanbieders(delivered, kvk, schemas, world):
    register = kvk.at(DAYS[-1])
    by_agb = {o.agb_code: o for o in register.ondernemingen.values() if o.agb_code}
    gemeentecode = world.at(DAYS[-1]).gemeentecode
    parties = set()
    for paths in delivered.values():
        for path in paths:
            message, _ = _unwrap(path.read_bytes(), schemas)
            for role in ("Afzender", "Ontvanger"):
                code = _text(message, f"Header/{role}")
                if code == gemeentecode:
                    continue
                onderneming = by_agb.get(code)
                assert onderneming is not None, f"{path.name}: AGB {code} is no KvK zorgaanbieder"
                assert onderneming.sbi_activiteiten[0].sbi_code != "8621"  # a huisarts only refers
                parties.add(onderneming.kvk_nummer)
            # Every message is between the gemeente and one aanbieder.
            assert gemeentecode in (_text(message, "Header/Afzender"), _text(message, "Header/Ontvanger"))
    assert len(parties) >= 3


def test_declaraties_only_for_existing_toewijzingen_within_their_period(state, world, schemas):
    muni = world.at(state.until)
    assigned: dict[str, dict] = {}  # toewijzingnummer -> latest ToegewezenProduct as sent in a 301
    declared = 0
    for message in sorted(state.messages, key=lambda m: (m.day, m.kind)):
        if message.is_retour or message.kind not in ("301", "323"):
            continue
        root, _ = _unwrap(render_message(muni, message), schemas)
        if message.kind == "301":
            bsn = _text(root, "Client/Bsn")
            for product in _all(root, "ToegewezenProduct"):
                nummer = _text(product, "ToewijzingNummer")
                assigned[nummer] = {"bsn": bsn, "code": _text(product, "Product/Code"),
                                    "in": date.fromisoformat(_text(product, "Ingangsdatum")),
                                    "uit": date.fromisoformat(_text(product, "Einddatum")), "day": message.day}
            continue
        periode_begin = date.fromisoformat(_text(root, "Declaratie/DeclaratiePeriode/Begindatum"))
        periode_eind = date.fromisoformat(_text(root, "Declaratie/DeclaratiePeriode/Einddatum"))
        assert message.day > periode_eind
        total = 0
        for client in _all(root, "Client"):
            bsn = _text(client, "Bsn")
            for prestatie in _all(client, "Prestatie"):
                toewijzing = assigned.get(_text(prestatie, "ToewijzingNummer"))
                assert toewijzing is not None and toewijzing["day"] < message.day, "declared before assigned"
                assert toewijzing["bsn"] == bsn and toewijzing["code"] == _text(prestatie, "ProductCode")
                begin = date.fromisoformat(_text(prestatie, "ProductPeriode/Begindatum"))
                end = date.fromisoformat(_text(prestatie, "ProductPeriode/Einddatum"))
                assert toewijzing["in"] <= begin <= end <= toewijzing["uit"]
                assert periode_begin <= begin and end <= periode_eind
                bedrag = int(_text(prestatie, "IngediendBedrag/Bedrag"))
                assert bedrag == int(_text(prestatie, "GeleverdVolume")) * int(_text(prestatie, "ProductTarief"))
                total += bedrag
                declared += 1
        assert total == int(_text(root, "Declaratie/TotaalIngediendBedrag/TotaalBedrag"))
    assert declared > 100
    # The state handed to the ledger says the same.
    for declaratie in state.declaraties:
        assert declaratie.dagtekening <= state.until
        for p in declaratie.prestaties:
            t = state.toewijzingen[p.toewijzing_nummer]
            assert t.client_bsn == p.client_bsn and t.aanbieder == declaratie.aanbieder
            assert t.ingangsdatum <= t.start_levering <= p.begindatum <= p.einddatum <= t.einddatum
    rows = state.declaratie_regels()
    assert {r["wet"] for r in rows} == {"wmo", "jeugd"}
    assert all(r["bedrag_cent"] == sum(r["producten"].values()) > 0 and r["aanbieder_kvk"] for r in rows)
    assert sum(r["amount"] for r in rows) * 100 == sum(d.totaal_bedrag for d in state.declaraties)
    assert all(r["date"] <= state.until for r in rows)


def test_rerun_is_byte_identical_and_needs_no_earlier_day(delivered, tmp_path):
    day = DAYS[5]
    # A new world and register in a fresh state: nothing of the earlier run is reused.
    fresh_world = DemoWorld(population=3000, seed=42)
    muni = fresh_world.at(day)
    again = (write_iwmo_deliveries(muni, tmp_path, day, kvk_register=KvkRegister(fresh_world))
             + write_ijw_deliveries(muni, tmp_path, day))  # default register: the world's own
    first = delivered[day]
    assert [p.name for p in again] == [p.name for p in first] and again
    for a, b in zip(first, again):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert not list(tmp_path.rglob("*.tmp"))


def test_history_is_stable_when_the_world_moves_on(world, kvk, state):
    """The traffic up to a day is the same whether planned on that day or weeks later."""
    earlier = DAYS[0]
    early_state = sociaal_domein_state(world.at(earlier), kvk_register=kvk)
    early = {m.file_name for m in early_state.messages}
    later = {m.file_name for m in state.messages if m.day <= earlier}
    assert early == later
    early_muni = world.at(earlier)
    later_by_name = {m.file_name: m for m in state.messages}
    for message in early_state.messages[-40:]:
        assert render_message(early_muni, message) == render_message(early_muni, later_by_name[message.file_name])


def test_realistic_volume_and_gezinnen_with_wmo_and_jeugd(state, world):
    day = state.until
    muni = world.at(day)
    active = defaultdict(set)
    for t in state.toewijzingen.values():
        if t.geleverd_op(day):
            active[t.wet].add(t.client_bsn)
    assert 25 <= len(active[WMO]) <= 150 and 8 <= len(active[JEUGD]) <= 80, {k: len(v) for k, v in active.items()}
    # Wmo clients are mostly older residents.
    ages = [age_in_years(muni.persons[b].geboortedatum, day) for b in active[WMO]]
    assert sum(a >= 65 for a in ages) > len(ages) / 2
    # Households where a parent has Wmo while a child has jeugdhulp, at the same time.
    wmo_periods = defaultdict(list)
    for t in state.toewijzingen.values():
        if t.wet == WMO and t.levering_periode():
            wmo_periods[t.client_bsn].append(t.levering_periode())
    gezinnen = set()
    for t in state.toewijzingen.values():
        periode = t.levering_periode()
        if t.wet != JEUGD or periode is None:
            continue
        for ouder in muni.persons[t.client_bsn].ouder_bsns:
            if any(a <= periode[1] and periode[0] <= b for a, b in wmo_periods.get(ouder, ())):
                gezinnen.add((ouder, t.client_bsn))
    assert len(gezinnen) >= 2, gezinnen
    assert min(m.day for m in state.messages) >= HISTORY_START


def test_backlog_brings_the_current_toewijzingen(delivered, world, kvk, schemas):
    muni = world.at(FIRST_DAY)
    current = {str(t.nummer) for t in sociaal_domein_state(muni, kvk_register=kvk).toewijzingen.values()
               if t.ingangsdatum <= FIRST_DAY <= t.einddatum and t.start_levering and t.start_levering < FIRST_DAY
               and (t.stop_levering is None or t.stop_levering >= FIRST_DAY)}
    assert current
    in_backlog = set()
    for path in delivered[FIRST_DAY]:
        message, _ = _unwrap(path.read_bytes(), schemas)
        if _text(message, "Header/BerichtIdentificatie/Dagtekening") < FIRST_DAY.isoformat():
            in_backlog |= {e.text for e in _all(message, "ToewijzingNummer")}
    assert current <= in_backlog


def test_the_drop_zone_connectors_accept_every_delivered_file(delivered):
    """The project's iWmo/iJw connectors read the generated files (bare and enveloped) without a rejection."""
    from connectors.dropzone import Rejection
    from connectors.iwmo import IjwConnector, IwmoConnector

    connectors = {"iwmo": IwmoConnector(), "ijw": IjwConnector()}
    berichten = 0
    for paths in delivered.values():
        for path in paths:
            units = list(connectors[path.parent.name].parse_file(path))
            rejections = [u for u in units if isinstance(u, Rejection)]
            assert units and not rejections, (path.name, [r.as_dict() for r in rejections])
            records = [r for u in units for r in u.records.get("berichten", [])]
            assert [r["berichtcode"] for r in records] == [path.name.split("_")[0]]
            berichten += 1
    assert berichten == sum(len(p) for p in delivered.values())


def test_two_weeks_of_traffic_land_through_the_drop_zone_without_duplicates(world, kvk, tmp_path):
    """Day by day through the framework: retourberichten repeat their heenbericht's header, yet none is a duplicate."""
    from connectors import ExtractWindow
    from connectors.iwmo import IjwConnector, IwmoConnector

    zones, landing = tmp_path / "dropzone", tmp_path / "landing"
    for day in DAYS:
        muni = world.at(day)
        backlog = day == FIRST_DAY
        written = {"iwmo": write_iwmo_deliveries(muni, zones, day, kvk_register=kvk, include_backlog=backlog),
                   "ijw": write_ijw_deliveries(muni, zones, day, kvk_register=kvk, include_backlog=backlog)}
        for source, connector_class in (("iwmo", IwmoConnector), ("ijw", IjwConnector)):
            (zones / source).mkdir(parents=True, exist_ok=True)
            connector = connector_class({"dropzone_dir": str(zones / source)})
            connector.extract(ExtractWindow.for_day(day, f"scheduled__{day}"), landing)
            report = connector.last_report
            assert report["files_rejected"] == [] and report["units_rejected_per_rule"] == {}, (source, day, report)
            assert report["files_accepted"] == len(written[source]), (source, day)
