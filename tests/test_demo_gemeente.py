"""Tests of the demo municipality generator and its drop-zone files."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path

import pytest

from demo_gemeente import EPOCH, DemoWorld, advance, build_municipality, write_dropzone
from demo_gemeente.dropzone import PC6HNR_HEADER, VOLGLIJST_HEADER, WIJKBUURT_HEADER
from demo_gemeente.generator import BUILD_DAYS, age_in_years
from demo_gemeente.model import Municipality
from ggm_lakehouse.bsn import is_valid_bsn

REPO = Path(__file__).resolve().parent.parent
POPULATION = 3000
SEED = 42
DAY_60 = EPOCH + timedelta(days=60)
DAY_150 = EPOCH + timedelta(days=150)

POSTCODE = re.compile(r"^[1-9][0-9]{3}[A-Z]{2}$")
PAND_STATUSES = {"Pand in gebruik", "Bouw gestart"}
VBO_STATUSES = {"Verblijfsobject in gebruik", "Verblijfsobject gevormd"}


@pytest.fixture(scope="module")
def world() -> DemoWorld:
    return DemoWorld(population=POPULATION, seed=SEED)


@pytest.fixture(scope="module")
def base(world) -> Municipality:
    return world.base()


@pytest.fixture(scope="module")
def day60(world) -> Municipality:
    return world.at(DAY_60)


@pytest.fixture(scope="module")
def day150(world) -> Municipality:
    return world.at(DAY_150)


def digest(muni: Municipality) -> str:
    """Stable fingerprint of a whole state (repr of dataclasses is deterministic)."""
    h = hashlib.sha256()
    for part in (muni.as_of, muni.woonplaatsen, muni.openbare_ruimten, muni.panden, muni.nummeraanduidingen,
                 muni.verblijfsobjecten, muni.wijken, muni.buurten, muni.bouwkavels, muni.changes):
        h.update(repr(part).encode())
    for bsn in sorted(muni.persons):
        h.update(repr(muni.persons[bsn]).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- determinism and scale


def test_same_parameters_give_the_same_municipality(day60):
    again = build_municipality(population=POPULATION, seed=SEED, as_of=DAY_60)
    assert again == day60
    assert digest(again) == digest(day60)


def test_other_seed_or_gemeente_gives_another_municipality(base):
    other_seed = build_municipality(population=POPULATION, seed=SEED + 1)
    assert set(other_seed.persons) != set(base.persons)
    other_gemeente = build_municipality(population=POPULATION, seed=SEED, gemeentecode="0123", naam="Proefstad")
    assert all(i.startswith("0123") for i in other_gemeente.verblijfsobjecten)
    assert {b.code[:6] for b in other_gemeente.buurten.values()} == {"BU0123"}


def test_result_does_not_depend_on_the_process_hash_seed():
    """Set iteration order changes with PYTHONHASHSEED; the generator must not depend on it."""
    code = (
        "import datetime, hashlib\n"
        "from demo_gemeente import build_municipality\n"
        "m = build_municipality(population=400, seed=7, as_of=datetime.date(2026, 2, 15))\n"
        "print(hashlib.sha256(repr((sorted(m.persons.items()), m.changes, list(m.verblijfsobjecten.items()))).encode()).hexdigest())\n"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(REPO))
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=REPO)
        outputs.add(run.stdout.strip())
    assert len(outputs) == 1


def test_population_parameter_is_respected(base, day150):
    assert base.population == POPULATION
    assert len(base.residents()) == POPULATION
    assert abs(len(day150.residents()) - POPULATION) / POPULATION < 0.03
    small = build_municipality(population=1234, seed=3)
    assert len(small.residents()) == 1234


def test_before_epoch_gives_the_base_state(base):
    early = build_municipality(population=POPULATION, seed=SEED, as_of=date(2025, 6, 1))
    assert early.as_of == date(2025, 6, 1)
    assert early.persons == base.persons and early.verblijfsobjecten == base.verblijfsobjecten
    assert early.changes == []


def test_invalid_parameters_are_rejected():
    with pytest.raises(ValueError, match="gemeentecode"):
        build_municipality(gemeentecode="99")
    with pytest.raises(ValueError, match="population"):
        build_municipality(population=0)


# --------------------------------------------------------------------------- persons


def test_every_bsn_is_valid_and_unique(day150):
    bsns = [p.bsn for p in day150.persons.values()]
    assert all(is_valid_bsn(b) for b in bsns)
    assert len(set(bsns)) == len(bsns)
    assert all(key == p.bsn for key, p in day150.persons.items())


def test_every_person_lives_at_an_existing_address_of_their_dwelling(day150):
    for p in day150.persons.values():
        vbo = day150.verblijfsobjecten[p.verblijfsobject_id]
        assert p.nummeraanduiding_id in day150.nummeraanduidingen
        assert vbo.hoofdadres_id == p.nummeraanduiding_id
        assert "woonfunctie" in vbo.gebruiksdoelen
        assert p.datum_inschrijving_gemeente <= p.datum_aanvang_adreshouding <= day150.as_of
        assert p.geboortedatum <= p.datum_inschrijving_gemeente
        if p.overlijdensdatum is None:
            assert vbo.status == "Verblijfsobject in gebruik"


def test_partner_and_parent_relations_are_symmetric(day150):
    persons = day150.persons
    for p in persons.values():
        if p.partner_bsn is not None:
            assert persons[p.partner_bsn].partner_bsn == p.bsn
        for ouder in p.ouder_bsns:
            assert p.bsn in persons[ouder].kind_bsns
            assert persons[ouder].geboortedatum < p.geboortedatum
        for kind in p.kind_bsns:
            assert p.bsn in persons[kind].ouder_bsns


def test_households_share_one_dwelling_and_have_realistic_compositions(base):
    members = defaultdict(list)
    for p in base.residents():
        members[p.household_id].append(p)
    for household in members.values():
        assert len({p.verblijfsobject_id for p in household}) == 1
    # no two households share a dwelling at the epoch
    assert len({h[0].verblijfsobject_id for h in members.values()}) == len(members)
    kinds = Counter()
    for household in members.values():
        adults = [p for p in household if not p.ouder_bsns]
        kids = len(household) - len(adults)
        couple = any(p.partner_bsn for p in adults)
        kinds[("couple" if couple else "single") + ("_with_children" if kids else "")] += 1
    assert set(kinds) == {"single", "couple", "couple_with_children", "single_with_children"}
    assert 0.30 < kinds["single"] / len(members) < 0.46
    persons_per_household = POPULATION / len(members)
    assert persons_per_household > 1.9 and persons_per_household < 2.4


def test_age_and_sex_distribution_look_like_a_dutch_town(base):
    ages = [age_in_years(p.geboortedatum, EPOCH) for p in base.residents()]
    n = len(ages)
    assert 0.14 < sum(a < 18 for a in ages) / n < 0.28
    assert 0.12 < sum(a >= 65 for a in ages) / n < 0.28
    assert max(ages) <= 105 and min(ages) >= 0
    sexes = Counter(p.geslacht for p in base.residents())
    assert set(sexes) <= {"M", "V", "O"}
    assert 0.45 < sexes["V"] / n < 0.55
    assert sum(1 for p in base.persons.values() if p.voorvoegsel) > 0.1 * n


# --------------------------------------------------------------------------- BAG and areas


def test_bag_identifiers_statuses_and_references(day150):
    m = day150
    ids = {"01": m.verblijfsobjecten, "10": m.panden, "20": m.nummeraanduidingen, "30": m.openbare_ruimten}
    for objecttype, objects in ids.items():
        for identificatie in objects:
            assert re.fullmatch(rf"9999{objecttype}\d{{10}}", identificatie)
    assert len(m.woonplaatsen) in (1, 2)
    for wp in m.woonplaatsen.values():
        assert re.fullmatch(r"[1-9]\d{3}", wp.identificatie) and wp.status == "Woonplaats aangewezen"
    for ruimte in m.openbare_ruimten.values():
        assert ruimte.type == "Weg" and ruimte.status == "Naamgeving uitgegeven"
        assert ruimte.woonplaats_id in m.woonplaatsen
    names_per_woonplaats = Counter((r.woonplaats_id, r.naam) for r in m.openbare_ruimten.values())
    assert max(names_per_woonplaats.values()) == 1
    for na in m.nummeraanduidingen.values():
        assert POSTCODE.fullmatch(na.postcode) and na.postcode[4:] not in {"SA", "SD", "SS"}
        assert na.huisnummer >= 1 and na.status == "Naamgeving uitgegeven"
        assert na.openbare_ruimte_id in m.openbare_ruimten
        assert m.openbare_ruimten[na.openbare_ruimte_id].woonplaats_id == na.woonplaats_id
    assert any(na.huisletter for na in m.nummeraanduidingen.values())
    assert any(na.huisnummertoevoeging for na in m.nummeraanduidingen.values())
    addresses = Counter((na.postcode, na.huisnummer, na.huisletter, na.huisnummertoevoeging)
                        for na in m.nummeraanduidingen.values())
    assert max(addresses.values()) == 1
    hoofdadressen = Counter(v.hoofdadres_id for v in m.verblijfsobjecten.values())
    assert set(hoofdadressen) == set(m.nummeraanduidingen) and max(hoofdadressen.values()) == 1
    for pand in m.panden.values():
        assert pand.status in PAND_STATUSES
        assert pand.polygon[0] == pand.polygon[-1] and len(pand.polygon) >= 4
        assert 1800 <= pand.oorspronkelijk_bouwjaar <= m.as_of.year
    uses = Counter()
    for vbo in m.verblijfsobjecten.values():
        assert vbo.status in VBO_STATUSES and vbo.oppervlakte > 0
        assert all(pid in m.panden for pid in vbo.pand_ids)
        uses.update(vbo.gebruiksdoelen)
    assert uses["woonfunctie"] / sum(uses.values()) > 0.85
    assert len(uses) >= 4


def test_every_vbo_lies_in_its_pand_and_in_exactly_one_buurt(day150):
    buurten = list(day150.buurten.values())
    for vbo in day150.verblijfsobjecten.values():
        x, y = vbo.point
        assert isinstance(x, float) and isinstance(y, float)
        ring = day150.panden[vbo.pand_ids[0]].polygon
        xs, ys = [c[0] for c in ring], [c[1] for c in ring]
        assert min(xs) < x < max(xs) and min(ys) < y < max(ys)
        containing = [b for b in buurten if b.bbox[0] <= x <= b.bbox[2] and b.bbox[1] <= y <= b.bbox[3]]
        assert len(containing) == 1


def test_wijken_and_buurten_tile_without_overlap_around_rd_centre(base):
    buurten = list(base.buurten.values())
    for b in buurten:
        assert re.fullmatch(r"BU9999\d{4}", b.code)
        assert b.wijk_code in base.wijken and b.code[2:8] == b.wijk_code[2:]
        assert 100_000 < b.bbox[0] < b.bbox[2] < 180_000 and 430_000 < b.bbox[1] < b.bbox[3] < 510_000
    for w in base.wijken.values():
        assert re.fullmatch(r"WK9999\d{2}", w.code)
    for i, a in enumerate(buurten):
        for b in buurten[i + 1:]:
            overlap_x = min(a.bbox[2], b.bbox[2]) - max(a.bbox[0], b.bbox[0])
            overlap_y = min(a.bbox[3], b.bbox[3]) - max(a.bbox[1], b.bbox[1])
            assert overlap_x <= 0 or overlap_y <= 0, (a.code, b.code)
    assert len({b.naam for b in buurten}) == len(buurten)


# --------------------------------------------------------------------------- daily changes


@pytest.mark.parametrize("offset", [0, 1, 37])
def test_next_day_equals_previous_day_plus_its_events(world, offset):
    day = EPOCH + timedelta(days=offset)
    stepped = advance(world.at(day))
    fresh = build_municipality(population=POPULATION, seed=SEED, as_of=day + timedelta(days=1))
    assert stepped == fresh
    assert fresh.changes[:len(world.at(day).changes)] == world.at(day).changes
    assert all(c.day == day + timedelta(days=1) for c in fresh.changes[len(world.at(day).changes):])


def test_earlier_states_are_not_mutated_by_later_steps(world):
    early = world.at(EPOCH + timedelta(days=5))
    before = digest(early)
    world.at(EPOCH + timedelta(days=90))
    assert digest(early) == before
    # stepping backwards restarts from a cached or the base state and gives the same result
    assert digest(world.at(EPOCH + timedelta(days=5))) == before


def test_every_kind_of_change_happens_at_a_realistic_rate(day60, day150):
    kinds = Counter(c.kind for c in day60.changes)
    assert {"birth", "death", "move", "new_building"} <= set(kinds)
    per_day = len(day60.changes) / 60
    assert 0.5 < per_day < 10  # "a few changes per day" in a 3,000-person town
    assert Counter(c.kind for c in day150.changes)["building_completed"] >= 1
    assert [c.day for c in day150.changes] == sorted(c.day for c in day150.changes)


def test_changes_are_reflected_in_the_state(day150):
    m = day150
    last_move: dict[str, object] = {}
    for c in m.changes:
        assert set(c.detail) >= {"affected_bsns", "affected_bag_ids"}
        if c.kind == "birth":
            child = m.persons[c.subject]
            assert child.geboortedatum == c.day == child.datum_inschrijving_gemeente
            assert child.ouder_bsns == c.detail["ouder_bsns"] and is_valid_bsn(child.bsn)
        elif c.kind == "death":
            assert m.persons[c.subject].overlijdensdatum == c.day
        elif c.kind == "move":
            last_move[c.subject] = c
        elif c.kind == "new_building":
            pand = m.panden[c.detail["pand_id"]]
            assert pand.oorspronkelijk_bouwjaar == c.day.year
            expected = "Pand in gebruik" if c.day + timedelta(days=BUILD_DAYS) <= m.as_of else "Bouw gestart"
            assert pand.status == expected
            for vbo_id in c.detail["verblijfsobject_ids"]:
                assert m.verblijfsobjecten[vbo_id].pand_ids == [pand.identificatie]
    assert last_move, "no moves in 150 days"
    for bsn, c in last_move.items():
        p = m.persons[bsn]
        assert p.verblijfsobject_id == c.detail["to_verblijfsobject_id"]
        assert p.datum_aanvang_adreshouding == c.day
        assert c.detail["from_verblijfsobject_id"] != c.detail["to_verblijfsobject_id"]


# --------------------------------------------------------------------------- drop zone


def read_csv(path: Path, delimiter: str) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter=delimiter))
    return rows[0], rows[1:]


def test_dropzone_files_have_the_agreed_format(day60, tmp_path):
    paths = write_dropzone(day60, tmp_path)
    stamp = "20260302"
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        f"brp-volglijst/volglijst_{stamp}.csv",
        f"gebieden/wijkbuurtindeling_{stamp}.csv",
        f"gebieden/pc6hnr_{stamp}.csv",
    ]

    header, rows = read_csv(paths[0], ",")
    assert tuple(header) == VOLGLIJST_HEADER == ("burgerservicenummer",)
    bsns = [r[0] for r in rows]
    cutoff = day60.as_of - timedelta(days=30)
    expected = sorted(p.bsn for p in day60.persons.values()
                      if p.overlijdensdatum is None or p.overlijdensdatum >= cutoff)
    assert bsns == expected and all(is_valid_bsn(b) for b in bsns)
    assert len(day60.residents()) < len(bsns) <= len(day60.persons)  # recent deaths are still followed

    header, rows = read_csv(paths[1], ";")
    assert tuple(header) == WIJKBUURT_HEADER == (
        "buurtcode", "buurtnaam", "wijkcode", "wijknaam", "gemeentecode", "gemeentenaam", "geometrie_wkt")
    assert len(rows) == len(day60.buurten)
    for code, naam, wijkcode, wijknaam, gemeentecode, gemeentenaam, wkt in rows:
        buurt = day60.buurten[code]
        assert (naam, wijkcode, wijknaam) == (buurt.naam, buurt.wijk_code, day60.wijken[wijkcode].naam)
        assert (gemeentecode, gemeentenaam) == ("9999", "Demodam")
        match = re.fullmatch(r"POLYGON \(\((.*)\)\)", wkt)
        ring = [tuple(float(v) for v in pt.split()) for pt in match.group(1).split(", ")]
        assert ring[0] == ring[-1] and len(ring) == 5
        xs, ys = [c[0] for c in ring], [c[1] for c in ring]
        assert (min(xs), min(ys), max(xs), max(ys)) == buurt.bbox

    header, rows = read_csv(paths[2], ";")
    assert tuple(header) == PC6HNR_HEADER == ("PC6", "Huisnummer", "Buurt", "Wijk", "Gemeente")
    distinct = {(na.postcode, na.huisnummer) for na in day60.nummeraanduidingen.values()}
    assert len(rows) == len(distinct) == len({(r[0], int(r[1])) for r in rows})
    by_address = {(r[0], int(r[1])): r for r in rows}
    for vbo in day60.verblijfsobjecten.values():
        na = day60.nummeraanduidingen[vbo.hoofdadres_id]
        pc6, _, buurt, wijk, gemeente = by_address[(na.postcode, na.huisnummer)]
        assert re.fullmatch(r"\d{8}", buurt) and re.fullmatch(r"\d{6}", wijk) and gemeente == "9999"
        b = day60.buurten["BU" + buurt]
        assert b.wijk_code == "WK" + wijk == "WK" + buurt[:6]
        assert b.bbox[0] <= vbo.point[0] <= b.bbox[2] and b.bbox[1] <= vbo.point[1] <= b.bbox[3]


def test_dropzone_writing_is_idempotent(day60, tmp_path):
    first = {p: p.read_bytes() for p in write_dropzone(day60, tmp_path)}
    again = build_municipality(population=POPULATION, seed=SEED, as_of=DAY_60)
    second = {p: p.read_bytes() for p in write_dropzone(again, tmp_path)}
    assert first == second
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(p.name for p in first)


def test_module_entry_writes_the_dropzone_and_prints_a_summary(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "demo_gemeente", "--population", "600", "--seed", "5", "--as-of", "2026-01-20",
         "--dropzone", str(tmp_path)],
        env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO, capture_output=True, text=True, check=True,
    )
    summary = json.loads(run.stdout)
    muni = build_municipality(population=600, seed=5, as_of=date(2026, 1, 20))
    assert summary["residents"] == len(muni.residents())
    assert summary["persons"] == len(muni.persons)
    assert summary["households"] == len({p.household_id for p in muni.residents()})
    assert summary["addresses"] == len(muni.nummeraanduidingen)
    assert summary["buurten"] == len(muni.buurten)
    assert summary["changes_on_day"] == len(muni.changes_on(date(2026, 1, 20)))
    for f in summary["files"]:
        assert Path(f).is_file() and Path(f).is_relative_to(tmp_path)
