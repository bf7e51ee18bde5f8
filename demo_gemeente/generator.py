"""Seeded generator of one consistent synthetic municipality and its daily life.

The state at a date is defined as:

    state(as_of) = base state at EPOCH  +  the events of every day in (EPOCH, as_of]

where the events of day ``D`` are drawn from a random generator seeded by
``(seed, gemeentecode, D)`` and applied to ``state(D - 1)``. Consequently
``build_municipality(as_of=D + 1)`` equals ``advance(build_municipality(as_of=D))``
exactly, whichever way the state was reached. Every random choice of a day is
made against *canonical* indexes (derived from dict insertion order or sorted
keys only, never from set iteration or ``hash()``), so the result is the same
in every process.

Simplifications, on purpose: nobody moves into or out of the municipality
(population change is births minus deaths), a deceased person keeps their
partner_bsn (the relation stays symmetric), and new buildings are placed on
plots laid out in advance (``Municipality.bouwkavels``); when those run out the
town stops growing.

Objects handed out in a :class:`~demo_gemeente.model.Municipality` are never
mutated afterwards: the simulation replaces an object by a changed copy
(copy-on-write), so snapshots for earlier dates share the unchanged objects and
stay valid. Callers must treat returned states as read-only.
"""
from __future__ import annotations

import contextlib
import gc
import math
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import date, timedelta

import numpy as np

from demo_gemeente import names
from demo_gemeente.model import (
    Bouwkavel,
    Buurt,
    DailyChange,
    Municipality,
    Nummeraanduiding,
    OpenbareRuimte,
    Pand,
    Person,
    Verblijfsobject,
    Wijk,
    Woonplaats,
)
from ggm_lakehouse.bsn import complete_bsn

EPOCH = date(2026, 1, 1)
"""Date of the base state; daily events are simulated for the days after it."""

# Real BAG status values (StatusPand, StatusVerblijfsobject, StatusNaamgeving, StatusWoonplaats).
PAND_IN_GEBRUIK = "Pand in gebruik"
PAND_BOUW_GESTART = "Bouw gestart"
VBO_IN_GEBRUIK = "Verblijfsobject in gebruik"
VBO_GEVORMD = "Verblijfsobject gevormd"
NAAMGEVING_UITGEGEVEN = "Naamgeving uitgegeven"
WOONPLAATS_AANGEWEZEN = "Woonplaats aangewezen"
WOONFUNCTIE = "woonfunctie"

# BAG object types inside the 16-digit identificatie.
OBJECTTYPE_VBO = "01"
OBJECTTYPE_PAND = "10"
OBJECTTYPE_NUMMERAANDUIDING = "20"
OBJECTTYPE_OPENBARE_RUIMTE = "30"

# Yearly rates per resident (Netherlands, CBS 2023 order of magnitude).
BIRTH_RATE = 0.0095
DEATH_RATE = 0.0095
MOVE_RATE = 0.10  # share of residents that changes address in a year
PERSONS_PER_MOVE = 1.9  # average size of a moving group; turns a person rate into an event rate
NEW_BUILDINGS_PER_DAY_PER_3000 = 0.3  # a new pand every ~3 days in a 3,000-person town
BUILD_DAYS = 90  # "Bouw gestart" -> "Pand in gebruik"
KAVEL_RESERVE_DAYS = 500  # plots are laid out for this many days of construction
VOLGLIJST_NAZORG_DAYS = 30  # deceased persons stay on the volglijst this long (used by the drop zone)

# Layout of the town, in metres (RD).
CENTRE_X, CENTRE_Y = 140_000, 470_000
PARCEL_W, PARCEL_D = 20, 30
PARCELS_PER_ROW = 24
BUURT_MARGIN = 20
PERSONS_PER_BUURT = 2_500
PC6_ADDRESS_GROUP = 12  # parcels on one side of a street that share a postcode

_POSTCODE_LETTERS = tuple(
    a + b for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if a + b not in {"SA", "SD", "SS"}
)
_NONRES_USES = (
    ("winkelfunctie",), ("kantoorfunctie",), ("bijeenkomstfunctie",), ("onderwijsfunctie",),
    ("gezondheidszorgfunctie",), ("industriefunctie",), ("sportfunctie",), ("logiesfunctie",),
    ("kantoorfunctie", "bijeenkomstfunctie"), ("overige gebruiksfunctie",),
)

_DATE_CACHE: dict[int, date] = {}


def _day(ordinal: int) -> date:
    """Shared ``date`` objects: a million persons use only a few ten thousand distinct days."""
    d = _DATE_CACHE.get(ordinal)
    if d is None:
        d = _DATE_CACHE[ordinal] = date.fromordinal(ordinal)
    return d


def bag_id(gemeentecode: str, objecttype: str, volgnummer: int) -> str:
    """BAG identificatie ``<gemeentecode:4><objecttype:2><volgnummer:10>``."""
    return f"{gemeentecode}{objecttype}{volgnummer:010d}"


def age_in_years(geboortedatum: date, on: date) -> int:
    """Completed years of age on ``on`` (the BRP way: birthday counts on the day itself)."""
    years = on.year - geboortedatum.year
    if (on.month, on.day) < (geboortedatum.month, geboortedatum.day):
        years -= 1
    return years


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector while building millions of acyclic objects.

    Each full collection walks the whole (growing) heap; pausing halves the build
    time of a large town. The previous setting is restored afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _validate(population: int, gemeentecode: str) -> None:
    if not (isinstance(gemeentecode, str) and len(gemeentecode) == 4 and gemeentecode.isdigit()):
        raise ValueError(f"gemeentecode must be four digits, got {gemeentecode!r}")
    if population < 10:
        raise ValueError(f"population must be at least 10, got {population}")


# --------------------------------------------------------------------------- base state


def _draw_bsns(rng: np.random.Generator, count: int, taken: set[str]) -> list[str]:
    """``count`` new unique valid BSNs in the 9xxxxxxxx block (clear of the low ranges issued to people)."""
    result: list[str] = []
    while len(result) < count:
        need = count - len(result)
        for prefix in rng.integers(90_000_000, 100_000_000, size=int(need * 1.15) + 8).tolist():
            bsn = complete_bsn(str(prefix))
            if bsn is None or bsn in taken:
                continue
            taken.add(bsn)
            result.append(bsn)
            if len(result) == count:
                break
    return result


class _Household:
    """Composition of one household before it gets BSNs, names and an address."""

    __slots__ = ("kind", "adults", "kids")

    def __init__(self, kind: str):
        self.kind = kind
        self.adults: list[tuple[float, str]] = []  # (age in years at EPOCH, geslacht)
        self.kids: list[tuple[float, str]] = []


def _plan_households(rng: np.random.Generator, population: int) -> list[_Household]:
    """Household compositions whose sizes add up to exactly ``population``.

    Shares follow CBS household statistics: ~38% single, ~29% couple, ~25% couple
    with children, ~8% single parent; 2.15 persons per household on average.
    """
    n = int(population / 1.9) + 16
    kinds = rng.choice(4, size=n, p=[0.38, 0.29, 0.25, 0.08])
    n_kids = np.where(kinds >= 2, rng.choice([1, 2, 3, 4], size=n, p=[0.38, 0.42, 0.15, 0.05]), 0)
    n_adults = np.where((kinds == 1) | (kinds == 2), 2, 1)
    sizes = n_adults + n_kids
    cum = np.cumsum(sizes)
    keep = int(np.searchsorted(cum, population, side="right"))
    remainder = population - (int(cum[keep - 1]) if keep else 0)
    kinds = np.concatenate([kinds[:keep], np.zeros(remainder, dtype=kinds.dtype)])
    n_kids = np.concatenate([n_kids[:keep], np.zeros(remainder, dtype=n_kids.dtype)])
    total = len(kinds)

    # Bulk draws, converted to lists because indexing numpy arrays per element is slow.
    u = rng.random((total, 8)).tolist()
    partner_gap = rng.normal(0.0, 3.5, total).tolist()
    kid_gaps = rng.uniform(1.0, 5.0, (total, 4)).tolist()
    kid_sex = rng.random((total, 4)).tolist()
    old_tail = np.minimum(rng.exponential(10.0, total), 37.0).tolist()
    kinds = kinds.tolist()
    n_kids = n_kids.tolist()

    households: list[_Household] = []
    for i in range(total):
        kind = kinds[i]
        r = u[i]
        if kind == 0:  # single
            if r[0] < 0.32:
                age = 18 + 17 * r[1]
            elif r[0] < 0.62:
                age = 35 + 30 * r[1]
            else:
                age = 65 + old_tail[i]
            sex = "V" if r[2] < (0.62 if age > 70 else 0.48) else "M"
            hh = _Household("single")
            hh.adults.append((age, sex))
        elif kind == 1:  # couple without children
            if r[0] < 0.35:
                age = 22 + 16 * r[1]
            elif r[0] < 0.55:
                age = 38 + 22 * r[1]
            else:
                age = 60 + min(old_tail[i] * 0.8, 32.0)
            hh = _Household("couple")
        elif kind == 2:  # couple with children
            age = 28 + 28 * (r[1] + r[3]) / 2  # triangular, peak around 42
            hh = _Household("couple_with_children")
        else:  # single parent
            age = 25 + 33 * (r[1] + r[3]) / 2
            hh = _Household("single_parent")
            hh.adults.append((age, "V" if r[2] < 0.82 else "M"))
        if kind in (1, 2):
            partner_age = max(18.0, age + partner_gap[i])
            if r[4] < 0.96:
                sexes = ("M", "V")
            elif r[4] < 0.98:
                sexes = ("M", "M")
            else:
                sexes = ("V", "V")
            hh.adults.append((age, sexes[0]))
            hh.adults.append((partner_age, sexes[1]))
        if n_kids[i]:
            youngest_parent = min(a for a, _ in hh.adults)
            kid_age = min(youngest_parent - 22 - 14 * r[5], 26.5)
            for k in range(n_kids[i]):
                if kid_age < 0:
                    kid_age = r[6] * 0.9  # a baby born in the last year
                hh.kids.append((kid_age, "V" if kid_sex[i][k] < 0.49 else "M"))
                kid_age -= kid_gaps[i][k]
        households.append(hh)
    return households


class _Layout:
    """Geometry and numbering of wijken, buurten, streets and parcels."""

    def __init__(self, rng: np.random.Generator, population: int, n_parcels: int, gemeentecode: str):
        self.gemeentecode = gemeentecode
        target_buurten = max(6, math.ceil(population / PERSONS_PER_BUURT))
        self.n_wijken = min(99, max(2, math.ceil(target_buurten / 10)))
        per_wijk = min(99, math.ceil(target_buurten / self.n_wijken))
        self.bc = math.ceil(math.sqrt(per_wijk))  # buurt grid inside one wijk
        self.br = math.ceil(per_wijk / self.bc)
        self.per_wijk = self.bc * self.br
        if self.per_wijk > 99:
            raise ValueError("population too large for two-digit wijk and buurt codes")
        self.wc = math.ceil(math.sqrt(self.n_wijken))  # wijk grid
        self.n_buurten = self.n_wijken * self.per_wijk
        self.parcels_per_buurt = math.ceil(n_parcels / self.n_buurten)
        # Rows come in pairs facing each other across one street (odd and even side).
        self.rows = 2 * math.ceil(self.parcels_per_buurt / (2 * PARCELS_PER_ROW))
        self.buurt_w = PARCELS_PER_ROW * PARCEL_W + 2 * BUURT_MARGIN
        self.buurt_h = self.rows * PARCEL_D + 2 * BUURT_MARGIN
        wr = math.ceil(self.n_wijken / self.wc)
        total_w = self.wc * self.bc * self.buurt_w
        total_h = wr * self.br * self.buurt_h
        self.x0 = CENTRE_X - total_w // 2
        self.y0 = CENTRE_Y - total_h // 2

        self.wijken: dict[str, Wijk] = {}
        self.buurten: dict[str, Buurt] = {}
        self.buurt_codes: list[str] = []
        self.buurt_origin: list[tuple[int, int]] = []
        self.buurt_theme: list[int] = []
        self.buurt_era: list[int] = []
        theme_order = rng.permutation(len(names.STREET_THEMES)).tolist()
        used_buurt_names: set[str] = set()
        eras = rng.choice(np.arange(1900, 2021, 5), size=self.n_buurten,
                          p=self._era_weights(np.arange(1900, 2021, 5))).tolist()
        for w in range(self.n_wijken):
            wijk_code = f"WK{gemeentecode}{w + 1:02d}"
            wijk_naam = names.WIJK_NAMES[w] if w < len(names.WIJK_NAMES) else f"Wijk {w + 1:02d}"
            self.wijken[wijk_code] = Wijk(code=wijk_code, naam=wijk_naam)
            wx, wy = w % self.wc, w // self.wc
            for b in range(self.per_wijk):
                idx = len(self.buurt_codes)
                code = f"BU{gemeentecode}{w + 1:02d}{b + 1:02d}"
                bx, by = b % self.bc, b // self.bc
                ox = self.x0 + (wx * self.bc + bx) * self.buurt_w
                oy = self.y0 + (wy * self.br + by) * self.buurt_h
                theme = theme_order[idx % len(theme_order)]
                if w == 0 and b == 0:
                    theme = next(i for i, t in enumerate(names.STREET_THEMES) if t[0] == "Dorpskern")
                    eras[idx] = 1900  # the old core
                bnaam = self._unique_buurt_name(names.STREET_THEMES[theme][0], used_buurt_names)
                self.buurten[code] = Buurt(code=code, naam=bnaam, wijk_code=wijk_code,
                                           bbox=(float(ox), float(oy), float(ox + self.buurt_w), float(oy + self.buurt_h)))
                self.buurt_codes.append(code)
                self.buurt_origin.append((ox, oy))
                self.buurt_theme.append(theme)
                self.buurt_era.append(int(eras[idx]))

    @staticmethod
    def _era_weights(years: np.ndarray) -> np.ndarray:
        # Most Dutch housing stock is from 1950-2000.
        w = np.exp(-(((years - 1975) / 28.0) ** 2)) + 0.15
        return w / w.sum()

    @staticmethod
    def _unique_buurt_name(base: str, used: set[str]) -> str:
        if base not in used:
            used.add(base)
            return base
        for q in names.BUURT_QUALIFIERS:
            candidate = f"{base} {q}" if q not in ("Oud", "Nieuw") else f"{q} {base}"
            if candidate not in used:
                used.add(candidate)
                return candidate
        n = 2
        while f"{base} {n}" in used:
            n += 1
        used.add(f"{base} {n}")
        return f"{base} {n}"

    def parcel_cell(self, buurt_index: int, row: int, pos: int) -> tuple[int, int]:
        """Lower-left corner of a parcel; inside the buurt with a margin, so points never touch a border."""
        ox, oy = self.buurt_origin[buurt_index]
        return ox + BUURT_MARGIN + pos * PARCEL_W, oy + BUURT_MARGIN + row * PARCEL_D


class _StreetNamer:
    """Unique street names per woonplaats, following the buurt's theme."""

    def __init__(self, rng: np.random.Generator):
        self._candidates: list[list[str]] = []
        for _, words in names.STREET_THEMES:
            combos = [w + s for w in words for s in names.STREET_SUFFIXES]
            order = rng.permutation(len(combos)).tolist()
            self._candidates.append([combos[i] for i in order])
        self._cursor: dict[tuple[str, int], int] = {}
        self._used: dict[str, set[str]] = {}

    def next(self, woonplaats_id: str, theme: int) -> str:
        used = self._used.setdefault(woonplaats_id, set())
        combos = self._candidates[theme]
        key = (woonplaats_id, theme)
        cursor = self._cursor.get(key, 0)
        while True:
            level, i = divmod(cursor, len(combos))
            cursor += 1
            if level == 0:
                name = combos[i]
            elif level <= len(names.STREET_PREFIXES):
                name = f"{names.STREET_PREFIXES[level - 1]} {combos[i]}"
            else:
                name = f"{combos[i]} {level - len(names.STREET_PREFIXES) + 1}"
            if name not in used:
                used.add(name)
                self._cursor[key] = cursor
                return name


def _generate_base(population: int, seed: int, gemeentecode: str, naam: str) -> Municipality:
    """The state at EPOCH: BAG, wijken/buurten and the registered persons."""
    rng = np.random.default_rng([seed, int(gemeentecode), 0xBA5E])
    households = _plan_households(rng, population)
    kinds, block_sizes = _building_kinds(rng, population, len(households))
    layout = _Layout(rng, population, len(kinds), gemeentecode)
    woonplaatsen, buurt_wp = _woonplaatsen(layout, population, seed, gemeentecode, naam)
    postcodes = _PostcodePlan.for_layout(layout, seed, gemeentecode)
    bag = _place_buildings(rng, layout, kinds, block_sizes, buurt_wp, postcodes, gemeentecode)

    # --- persons: largest households get the largest dwellings (with noise), ~3.5% stays vacant
    persons = _place_persons(rng, households, bag.woon_vbos, bag.woon_area, bag.verblijfsobjecten, naam)

    return Municipality(
        gemeentecode=gemeentecode, naam=naam, seed=seed, as_of=EPOCH,
        woonplaatsen=woonplaatsen, openbare_ruimten=bag.openbare_ruimten, panden=bag.panden,
        nummeraanduidingen=bag.nummeraanduidingen, verblijfsobjecten=bag.verblijfsobjecten,
        wijken=layout.wijken, buurten=layout.buurten, persons=persons, changes=[],
        population=population, bouwkavels=bag.kavels,
    )


def _building_kinds(rng: np.random.Generator, population: int, n_households: int) -> tuple[np.ndarray, list[int]]:
    """What the parcels hold, shuffled: (kind per parcel, size of each apartment block in order).

    Kind codes: 0 house, 1 apartment block, 2 non-residential, 3 future plot. There are ~3.5% more
    dwellings than households so people can move, and plots for the new buildings of the coming days.
    """
    dwellings_needed = math.ceil(n_households * 1.035) + 2
    apartments_target = int(dwellings_needed * 0.35)
    block_sizes: list[int] = []
    apartments = 0
    for size in rng.choice([4, 6, 8, 12, 16, 24], size=dwellings_needed, p=[0.2, 0.25, 0.25, 0.15, 0.1, 0.05]).tolist():
        if apartments >= apartments_target:
            break
        block_sizes.append(size)
        apartments += size
    n_houses = max(0, dwellings_needed - apartments)
    n_nonres = max(3, round(dwellings_needed * 0.04))
    n_kavels = math.ceil(NEW_BUILDINGS_PER_DAY_PER_3000 * population / 3000 * KAVEL_RESERVE_DAYS) + 3
    kinds = np.concatenate([np.zeros(n_houses, np.int8), np.ones(len(block_sizes), np.int8),
                            np.full(n_nonres, 2, np.int8), np.full(n_kavels, 3, np.int8)])
    return kinds[rng.permutation(len(kinds))], block_sizes


def _woonplaatsen(layout: _Layout, population: int, seed: int, gemeentecode: str,
                  naam: str) -> tuple[dict[str, Woonplaats], list[str]]:
    """The main town, and a village in the last wijk: (woonplaatsen, the woonplaats of each buurt)."""
    wp_codes = []
    n_wp = 2 if population >= 1000 else 1
    base_code = 1000 + (int(gemeentecode) * 37 + seed) % 8990
    for k in range(n_wp):
        wp_codes.append(f"{base_code + k:04d}")
    wp_names = [naam, f"Nieuw-{naam}"][:n_wp]
    last_wijk = f"WK{gemeentecode}{layout.n_wijken:02d}"
    buurt_wp = [wp_codes[1] if n_wp == 2 and layout.buurten[c].wijk_code == last_wijk else wp_codes[0]
                for c in layout.buurt_codes]
    if n_wp == 2:
        layout.wijken[last_wijk].naam = wp_names[1]
    woonplaatsen: dict[str, Woonplaats] = {}
    for code, wnaam in zip(wp_codes, wp_names):
        boxes = [layout.buurten[c].bbox for c, w in zip(layout.buurt_codes, buurt_wp) if w == code]
        woonplaatsen[code] = Woonplaats(
            identificatie=code, naam=wnaam, status=WOONPLAATS_AANGEWEZEN, ingangsdatum=date(2009, 7, 1),
            bbox=(min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)),
        )
    return woonplaatsen, buurt_wp


@dataclass(frozen=True)
class _PostcodePlan:
    """Postcodes: one PC4 range per wijk, sequential PC6 letters along the streets of each buurt."""

    per_wijk: int
    pc6_per_buurt: int
    pc4_per_wijk: int
    pc4_base: int

    @classmethod
    def for_layout(cls, layout: _Layout, seed: int, gemeentecode: str) -> "_PostcodePlan":
        pc6_per_buurt = (layout.rows // 2) * 2 * math.ceil(PARCELS_PER_ROW / PC6_ADDRESS_GROUP)
        pc4_per_wijk = math.ceil(pc6_per_buurt * layout.per_wijk / len(_POSTCODE_LETTERS))
        pc4_needed = pc4_per_wijk * layout.n_wijken
        if pc4_needed > 8999:
            raise ValueError("population too large for the postcode range")
        pc4_base = 1000 + (int(gemeentecode) * 37 + seed) % max(1, 9000 - pc4_needed)
        return cls(layout.per_wijk, pc6_per_buurt, pc4_per_wijk, pc4_base)

    def postcode(self, buurt_index: int, street_no: int, side: int, pos: int) -> str:
        """The postcode of the parcel at ``pos`` on ``side`` of street ``street_no`` of a buurt."""
        wijk_index = buurt_index // self.per_wijk
        local_pc6 = (buurt_index % self.per_wijk) * self.pc6_per_buurt
        pc6_index = local_pc6 + (street_no * 2 + side) * math.ceil(PARCELS_PER_ROW / PC6_ADDRESS_GROUP) + pos // PC6_ADDRESS_GROUP
        pc4_off, letters = divmod(pc6_index, len(_POSTCODE_LETTERS))
        return f"{self.pc4_base + wijk_index * self.pc4_per_wijk + pc4_off}{_POSTCODE_LETTERS[letters]}"


_ORD_2009 = date(2009, 7, 1).toordinal()  # the BAG went live: the earliest ingangsdatum of the base state


class _BagObjects:
    """The BAG objects of the base state as the parcels are filled, with identifiers in creation order."""

    def __init__(self, gemeentecode: str) -> None:
        self.gemeentecode = gemeentecode
        self._volgnummer = {OBJECTTYPE_VBO: 0, OBJECTTYPE_PAND: 0, OBJECTTYPE_NUMMERAANDUIDING: 0,
                            OBJECTTYPE_OPENBARE_RUIMTE: 0}
        self.openbare_ruimten: dict[str, OpenbareRuimte] = {}
        self.panden: dict[str, Pand] = {}
        self.nummeraanduidingen: dict[str, Nummeraanduiding] = {}
        self.verblijfsobjecten: dict[str, Verblijfsobject] = {}
        self.kavels: list[Bouwkavel] = []
        self.woon_vbos: list[str] = []  # dwellings in creation order
        self.woon_area: list[int] = []

    def next_id(self, objecttype: str) -> str:
        self._volgnummer[objecttype] += 1
        return bag_id(self.gemeentecode, objecttype, self._volgnummer[objecttype])

    def add_street(self, naam: str, woonplaats_id: str) -> str:
        or_id = self.next_id(OBJECTTYPE_OPENBARE_RUIMTE)
        self.openbare_ruimten[or_id] = OpenbareRuimte(
            identificatie=or_id, naam=naam, type="Weg",
            woonplaats_id=woonplaats_id, status=NAAMGEVING_UITGEGEVEN, ingangsdatum=_day(_ORD_2009),
        )
        return or_id

    def add_building(self, kind: int, units: int, g: list[float], cx: float, cy: float, bouwjaar: int,
                     or_id: str, wp: str, huisnummer: int, postcode: str) -> None:
        """A pand on the parcel at (cx, cy) and its verblijfsobjecten with their addresses."""
        ingang = _day(max(_ORD_2009 + int(g[5] * 700), date(bouwjaar, 1, 1).toordinal() + int(g[5] * 300)))
        polygon = _pand_polygon(cx, cy, kind, g)
        pand_id = self.next_id(OBJECTTYPE_PAND)
        self.panden[pand_id] = Pand(identificatie=pand_id, oorspronkelijk_bouwjaar=bouwjaar, status=PAND_IN_GEBRUIK,
                                    ingangsdatum=ingang, polygon=polygon)
        for vbo, is_woon in _make_units(
            kind, units, g, polygon, pand_id, or_id, wp, huisnummer, postcode, ingang, VBO_IN_GEBRUIK,
            self.next_id, self.nummeraanduidingen,
        ):
            self.verblijfsobjecten[vbo.identificatie] = vbo
            if is_woon:
                self.woon_vbos.append(vbo.identificatie)
                self.woon_area.append(vbo.oppervlakte)


def _place_buildings(rng: np.random.Generator, layout: _Layout, kinds: np.ndarray, block_sizes: list[int],
                     buurt_wp: list[str], postcodes: _PostcodePlan, gemeentecode: str) -> _BagObjects:
    """Place everything, buurt by buurt, street by street: two rows of parcels face each other on a street."""
    namer = _StreetNamer(rng)
    bag = _BagObjects(gemeentecode)
    n_items = len(kinds)
    geo = rng.random((n_items, 6)).tolist()
    bouwjaar_noise = rng.normal(0, 6, n_items).tolist()
    kind_list = kinds.tolist()
    block_iter = iter(block_sizes)
    item = 0
    for bi, bcode in enumerate(layout.buurt_codes):
        wp = buurt_wp[bi]
        count_here = min(layout.parcels_per_buurt, n_items - item)
        streets: dict[int, str] = {}
        for slot in range(count_here):
            row, pos = divmod(slot, PARCELS_PER_ROW)
            street_no, side = divmod(row, 2)
            if street_no not in streets:
                streets[street_no] = bag.add_street(namer.next(wp, layout.buurt_theme[bi]), wp)
            or_id = streets[street_no]
            huisnummer = 2 * pos + 1 + side  # odd numbers on one side, even on the other
            postcode = postcodes.postcode(bi, street_no, side, pos)
            cx, cy = layout.parcel_cell(bi, row, pos)
            kind = kind_list[item]
            g = geo[item]  # plain floats (tolist): numpy scalars must not leak into the model
            if kind == 3:
                bag.kavels.append(Bouwkavel(openbare_ruimte_id=or_id, woonplaats_id=wp, buurt_code=bcode,
                                            huisnummer=huisnummer, postcode=postcode,
                                            bbox=(float(cx), float(cy), float(cx + PARCEL_W), float(cy + PARCEL_D))))
            else:
                bouwjaar = int(min(2025, max(1850, layout.buurt_era[bi] + round(bouwjaar_noise[item]))))
                units = next(block_iter) if kind == 1 else 1
                bag.add_building(kind, units, g, cx, cy, bouwjaar, or_id, wp, huisnummer, postcode)
            item += 1
        if item >= n_items:
            break
    return bag


def _pand_polygon(cx: float, cy: float, kind: int, g) -> list[tuple[float, float]]:
    """A rectangular footprint inside the parcel (kind 0 house, 1 block, 2 non-residential)."""
    if kind == 0:
        w, d = 6 + 8 * g[0], 8 + 4 * g[1]
    elif kind == 1:
        w, d = 14 + 3 * g[0], 14 + 8 * g[1]
    else:
        w, d = 10 + 7 * g[0], 10 + 12 * g[1]
    x1, y1 = cx + 2 + round(g[2], 3), cy + 4 + round(g[3], 3)
    x2, y2 = round(x1 + w, 3), round(y1 + d, 3)
    return [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]


def _make_units(kind, units, g, polygon, pand_id, or_id, wp, huisnummer, postcode, ingang, vbo_status,
                next_id, nummeraanduidingen, na_status=NAAMGEVING_UITGEGEVEN):
    """Create the verblijfsobjecten (with hoofdadres) of one pand; yields (vbo, is_dwelling)."""
    (x1, y1), (x2, _), (_, y2) = polygon[0], polygon[1], polygon[2]
    specs: list[tuple[tuple[str, ...], str | None, str | None, int]] = []  # uses, huisletter, toevoeging, m2
    if kind == 0:
        letter = "A" if g[4] < 0.03 else None
        specs.append(((WOONFUNCTIE,), letter, None, int(80 + 90 * g[1])))
    elif kind == 1:
        shop = g[4] < 0.2
        if shop:
            specs.append((("winkelfunctie",), None, None, int(60 + 200 * g[1])))
        for u in range(units):
            if units <= 4 and not shop:
                specs.append(((WOONFUNCTIE,), "ABCD"[u], None, int(50 + 50 * g[0])))
            else:
                specs.append(((WOONFUNCTIE,), None, str(u + 1), int(45 + 60 * g[0])))
    else:
        uses = _NONRES_USES[int(g[4] * len(_NONRES_USES)) % len(_NONRES_USES)]
        specs.append((uses, None, None, int(50 + 1500 * g[1] ** 2)))
    n = len(specs)
    ymid = (y1 + y2) / 2
    for k, (uses, letter, toevoeging, m2) in enumerate(specs):
        na_id = next_id(OBJECTTYPE_NUMMERAANDUIDING)
        nummeraanduidingen[na_id] = Nummeraanduiding(
            identificatie=na_id, huisnummer=huisnummer, huisletter=letter, huisnummertoevoeging=toevoeging,
            postcode=postcode, openbare_ruimte_id=or_id, woonplaats_id=wp,
            type_adresseerbaar_object="Verblijfsobject", status=na_status, ingangsdatum=ingang,
        )
        vbo_id = next_id(OBJECTTYPE_VBO)
        point = (round(x1 + (x2 - x1) * (k + 0.5) / n, 3), round(ymid, 3))
        yield Verblijfsobject(
            identificatie=vbo_id, hoofdadres_id=na_id, pand_ids=[pand_id], gebruiksdoelen=list(uses),
            oppervlakte=m2, point=point, status=vbo_status, ingangsdatum=ingang,
        ), WOONFUNCTIE in uses


def _place_persons(rng, households, woon_vbos, woon_area, verblijfsobjecten, naam) -> dict[str, Person]:
    n_hh = len(households)
    if n_hh > len(woon_vbos):  # cannot happen with the 3.5% margin; guard against layout bugs
        raise RuntimeError(f"{n_hh} households but only {len(woon_vbos)} dwellings")
    sizes = np.array([len(h.adults) + len(h.kids) for h in households], dtype=float)
    hh_rank = np.argsort(-(sizes + rng.normal(0, 1.2, n_hh)), kind="stable")
    vbo_rank = np.argsort(-(np.asarray(woon_area, dtype=float) * rng.lognormal(0, 0.25, len(woon_area))), kind="stable")
    hh_vbo = np.empty(n_hh, dtype=np.int64)
    hh_vbo[hh_rank] = vbo_rank[:n_hh]

    n_persons = int(sizes.sum())
    bsns = _draw_bsns(rng, n_persons, set())
    u = rng.random((n_persons, 6)).tolist()
    name_pick = rng.integers(0, 1 << 30, (n_persons, 3)).tolist()
    surname_w = 1.0 / np.arange(1, len(names.SURNAMES) + 1) ** 0.6
    surname_idx = rng.choice(len(names.SURNAMES), size=2 * n_hh + 1, p=surname_w / surname_w.sum()).tolist()
    arrival_years = rng.exponential(9.0, n_hh).tolist()
    extra_years = rng.exponential(6.0, n_hh).tolist()
    hh_vbo = hh_vbo.tolist()
    epoch_ord = EPOCH.toordinal()

    persons: dict[str, Person] = {}
    p = 0
    for h, hh in enumerate(households):
        vbo = verblijfsobjecten[woon_vbos[hh_vbo[h]]]
        household_id = f"HH{h + 1:08d}"
        members = [(a, s, True) for a, s in hh.adults] + [(a, s, False) for a, s in hh.kids]
        oldest_adult = max(a for a, _ in hh.adults)
        # The household arrived at this address at most when its oldest adult was 18.
        arrival_ord = epoch_ord - int(min(arrival_years[h], oldest_adult - 18) * 365.25) - 1
        moved_within = u[p][5] < 0.5
        adult_bsns = bsns[p:p + len(hh.adults)]
        kid_bsns = bsns[p + len(hh.adults):p + len(members)]
        fam_names = [names.SURNAMES[surname_idx[2 * h]], names.SURNAMES[surname_idx[2 * h + 1]]]
        # Children carry the father's name in a mixed couple, otherwise the first adult's.
        name_parent = 1 if len(hh.adults) == 2 and hh.adults[1][1] == "M" and hh.adults[0][1] != "M" else 0
        for m, (age, sex, is_adult) in enumerate(members):
            r = u[p]
            if r[0] < 0.0005:
                sex = "O"
            birth_ord = epoch_ord - int(age * 365.25) - 1
            geboortedatum = _day(birth_ord)
            if is_adult:
                vv, gn = fam_names[m] if m < 2 else fam_names[0]
            else:
                vv, gn = fam_names[name_parent]
            born_here = (not is_adult and birth_ord >= arrival_ord) or r[1] < 0.25
            if born_here:
                plaats = naam
            elif r[1] < 0.9:
                plaats = names.BIRTHPLACES_NL[name_pick[p][2] % len(names.BIRTHPLACES_NL)]
            else:
                plaats = names.BIRTHPLACES_ABROAD[name_pick[p][2] % len(names.BIRTHPLACES_ABROAD)]
            aanvang_ord = max(arrival_ord, birth_ord)
            if born_here:
                inschrijving_ord = birth_ord
            elif moved_within:
                inschrijving_ord = max(birth_ord, aanvang_ord - int(extra_years[h] * 365.25))
            else:
                inschrijving_ord = aanvang_ord
            bsn = bsns[p]
            if is_adult:
                partner = adult_bsns[1 - m] if len(adult_bsns) == 2 else None
                ouders: list[str] = []
                kinderen = list(kid_bsns)
            else:
                partner = None
                ouders = list(adult_bsns)
                kinderen = []
            persons[bsn] = Person(
                bsn=bsn,
                voornamen=_voornamen(geboortedatum.year, sex, name_pick[p], r[2]),
                voorvoegsel=vv, geslachtsnaam=gn, geslacht=sex, geboortedatum=geboortedatum,
                geboorteplaats=plaats, overlijdensdatum=None,
                nummeraanduiding_id=vbo.hoofdadres_id, verblijfsobject_id=vbo.identificatie,
                datum_aanvang_adreshouding=_day(aanvang_ord), datum_inschrijving_gemeente=_day(inschrijving_ord),
                partner_bsn=partner, ouder_bsns=ouders, kind_bsns=kinderen, household_id=household_id,
            )
            p += 1
    return persons


_VOORNAMEN_CACHE: dict[tuple, str] = {}


def _voornamen(birth_year: int, sex: str, picks, r: float) -> str:
    """One to three given names; older people mostly from the classic pool."""
    pool = names.FIRST_NAMES_CLASSIC[sex] if birth_year < 1975 else names.FIRST_NAMES_MODERN[sex]
    count = 1 if r < 0.45 else (2 if r < 0.85 else 3)
    chosen = tuple(pool[picks[k] % len(pool)] for k in range(count))
    if len(set(chosen)) != count:
        chosen = chosen[:1]
    cached = _VOORNAMEN_CACHE.get(chosen)
    if cached is None:
        cached = _VOORNAMEN_CACHE[chosen] = " ".join(chosen)
    return cached


# --------------------------------------------------------------------------- daily simulation


def _poisson(rnd: random.Random, lam: float) -> int:
    """Poisson draw from ``random.Random`` (inversion for small means, normal approximation for large)."""
    if lam <= 0:
        return 0
    if lam > 60:
        return max(0, round(rnd.gauss(lam, math.sqrt(lam))))
    threshold, k, prod = math.exp(-lam), 0, rnd.random()
    while prod > threshold:
        k += 1
        prod *= rnd.random()
    return k


def _death_hazard(age: float) -> float:
    """Gompertz yearly mortality, roughly the Dutch life table."""
    return min(1.0, math.exp(-10.2 + 0.095 * age))


_HAZARD_MAX = _death_hazard(105)


class _Simulation:
    """Mutable working state plus canonical indexes, stepping one day at a time."""

    def __init__(self, muni: Municipality):
        self.gemeentecode = muni.gemeentecode
        self.naam = muni.naam
        self.seed = muni.seed
        self.population = muni.population
        self.today = max(muni.as_of, EPOCH)
        self.woonplaatsen = dict(muni.woonplaatsen)
        self.openbare_ruimten = dict(muni.openbare_ruimten)
        self.panden = dict(muni.panden)
        self.nummeraanduidingen = dict(muni.nummeraanduidingen)
        self.verblijfsobjecten = dict(muni.verblijfsobjecten)
        self.wijken = dict(muni.wijken)
        self.buurten = dict(muni.buurten)
        self.persons = dict(muni.persons)
        self.changes = list(muni.changes)
        self.kavels = list(muni.bouwkavels)

        # Canonical indexes: derived from insertion order or order-free aggregates only.
        self.person_order: list[str] = list(self.persons)
        self.woon_vbos: list[str] = [v.identificatie for v in self.verblijfsobjecten.values()
                                     if WOONFUNCTIE in v.gebruiksdoelen]
        self.occupants: dict[str, int] = {}
        self.households: dict[str, list[str]] = {}
        self.alive = 0
        for p in self.persons.values():
            if p.overlijdensdatum is None:
                self.alive += 1
                self.occupants[p.verblijfsobject_id] = self.occupants.get(p.verblijfsobject_id, 0) + 1
                self.households.setdefault(p.household_id, []).append(p.bsn)
        self.next_volgnummer: dict[str, int] = {}
        for objecttype, objects in ((OBJECTTYPE_VBO, self.verblijfsobjecten), (OBJECTTYPE_PAND, self.panden),
                                    (OBJECTTYPE_NUMMERAANDUIDING, self.nummeraanduidingen)):
            self.next_volgnummer[objecttype] = max((int(i[6:]) for i in objects), default=0) + 1
        self.pending: dict[date, list[str]] = {}
        pending_panden = set()
        for pand in self.panden.values():
            if pand.status == PAND_BOUW_GESTART:
                self.pending.setdefault(pand.ingangsdatum + timedelta(days=BUILD_DAYS), []).append(pand.identificatie)
                pending_panden.add(pand.identificatie)
        self.pand_vbos: dict[str, list[str]] = {}
        if pending_panden:
            for v in self.verblijfsobjecten.values():
                if v.pand_ids[0] in pending_panden:
                    self.pand_vbos.setdefault(v.pand_ids[0], []).append(v.identificatie)

    # -- snapshots

    def snapshot(self, as_of: date) -> Municipality:
        """An independent Municipality sharing the (never mutated) objects."""
        return Municipality(
            gemeentecode=self.gemeentecode, naam=self.naam, seed=self.seed, as_of=as_of,
            woonplaatsen=dict(self.woonplaatsen), openbare_ruimten=dict(self.openbare_ruimten),
            panden=dict(self.panden), nummeraanduidingen=dict(self.nummeraanduidingen),
            verblijfsobjecten=dict(self.verblijfsobjecten), wijken=dict(self.wijken), buurten=dict(self.buurten),
            persons=dict(self.persons), changes=list(self.changes), population=self.population,
            bouwkavels=list(self.kavels),
        )

    # -- copy-on-write helpers: never mutate an object a snapshot may hold

    def _person(self, bsn: str) -> Person:
        p = self.persons[bsn]
        p = replace(p, ouder_bsns=list(p.ouder_bsns), kind_bsns=list(p.kind_bsns))
        self.persons[bsn] = p
        return p

    def _record(self, day: date, kind: str, subject: str, bsns: list[str], bag_ids: list[str], **detail) -> None:
        detail["affected_bsns"] = bsns
        detail["affected_bag_ids"] = bag_ids
        self.changes.append(DailyChange(day=day, kind=kind, subject=subject, detail=detail))

    # -- one day

    def step(self) -> None:
        """Apply the events of the next day."""
        day = self.today + timedelta(days=1)
        rnd = random.Random(f"demo_gemeente:{self.seed}:{self.gemeentecode}:{day.isoformat()}")
        self._complete_buildings(day)
        for _ in range(_poisson(rnd, DEATH_RATE / 365 * self.alive)):
            self._death(rnd, day)
        for _ in range(_poisson(rnd, BIRTH_RATE / 365 * self.alive)):
            self._birth(rnd, day)
        new_households = 0
        for _ in range(_poisson(rnd, MOVE_RATE / 365 * self.alive / PERSONS_PER_MOVE)):
            new_households += self._move(rnd, day, new_households)
        for _ in range(_poisson(rnd, NEW_BUILDINGS_PER_DAY_PER_3000 * self.alive / 3000)):
            self._new_building(rnd, day)
        self.today = day

    def _random_resident(self, rnd: random.Random) -> Person | None:
        for _ in range(1000):
            p = self.persons[self.person_order[rnd.randrange(len(self.person_order))]]
            if p.overlijdensdatum is None:
                return p
        return None

    def _leave_address(self, p: Person) -> None:
        left = self.occupants[p.verblijfsobject_id] - 1
        if left:
            self.occupants[p.verblijfsobject_id] = left
        else:
            del self.occupants[p.verblijfsobject_id]
        members = self.households[p.household_id]
        members.remove(p.bsn)
        if not members:
            del self.households[p.household_id]

    def _enter_address(self, p: Person) -> None:
        self.occupants[p.verblijfsobject_id] = self.occupants.get(p.verblijfsobject_id, 0) + 1
        self.households.setdefault(p.household_id, []).append(p.bsn)

    def _death(self, rnd: random.Random, day: date) -> None:
        for _ in range(20_000):
            p = self._random_resident(rnd)
            if p is None:
                return
            age = (day.toordinal() - p.geboortedatum.toordinal()) / 365.25
            if rnd.random() * _HAZARD_MAX < _death_hazard(age):
                break
        else:
            return
        self._leave_address(p)
        p = self._person(p.bsn)
        p.overlijdensdatum = day
        self.alive -= 1
        self._record(day, "death", p.bsn, [p.bsn], [], verblijfsobject_id=p.verblijfsobject_id,
                     household_id=p.household_id)

    def _birth(self, rnd: random.Random, day: date) -> None:
        for _ in range(20_000):
            mother = self._random_resident(rnd)
            if mother is None:
                return
            if mother.geslacht != "V":
                continue
            age = (day.toordinal() - mother.geboortedatum.toordinal()) / 365.25
            if not 18 <= age < 46:
                continue
            partner = self.persons.get(mother.partner_bsn) if mother.partner_bsn else None
            lives_with_partner = (partner is not None and partner.overlijdensdatum is None
                                  and partner.household_id == mother.household_id)
            weight = math.exp(-(((age - 31.5) / 5.5) ** 2)) * (1.0 if lives_with_partner else 0.12)
            if rnd.random() < weight:
                break
        else:
            return
        bsn = None
        while bsn is None or bsn in self.persons:
            bsn = complete_bsn(str(rnd.randrange(90_000_000, 100_000_000)))
        ouders = [mother.bsn] + ([partner.bsn] if lives_with_partner else [])
        name_giver = partner if lives_with_partner and partner.geslacht == "M" else mother
        sex = "M" if rnd.random() < 0.51 else "V"
        pool = names.FIRST_NAMES_MODERN[sex]
        voornamen = " ".join(dict.fromkeys(pool[rnd.randrange(len(pool))] for _ in range(1 + (rnd.random() < 0.5))))
        child = Person(
            bsn=bsn, voornamen=voornamen, voorvoegsel=name_giver.voorvoegsel, geslachtsnaam=name_giver.geslachtsnaam,
            geslacht=sex, geboortedatum=day, geboorteplaats=self.naam, overlijdensdatum=None,
            nummeraanduiding_id=mother.nummeraanduiding_id, verblijfsobject_id=mother.verblijfsobject_id,
            datum_aanvang_adreshouding=day, datum_inschrijving_gemeente=day, partner_bsn=None,
            ouder_bsns=ouders, kind_bsns=[], household_id=mother.household_id,
        )
        self.persons[bsn] = child
        self.person_order.append(bsn)
        self.alive += 1
        self._enter_address(child)
        for ouder in ouders:
            self._person(ouder).kind_bsns.append(bsn)
        self._record(day, "birth", bsn, [bsn] + ouders, [], ouder_bsns=list(ouders),
                     verblijfsobject_id=child.verblijfsobject_id, household_id=child.household_id)

    def _free_dwelling(self, rnd: random.Random, current: str) -> Verblijfsobject | None:
        for _ in range(500):
            vbo = self.verblijfsobjecten[self.woon_vbos[rnd.randrange(len(self.woon_vbos))]]
            if vbo.status == VBO_IN_GEBRUIK and vbo.identificatie != current and vbo.identificatie not in self.occupants:
                return vbo
        return None

    def _move(self, rnd: random.Random, day: date, new_households: int) -> int:
        """One moving group; returns 1 when it founded a new household."""
        p = self._random_resident(rnd)
        if p is None:
            return 0
        members = sorted(self.households[p.household_id])
        age = age_in_years(p.geboortedatum, day)
        leaves_home = (18 <= age < 35 and len(members) > 1
                       and any(o in members for o in p.ouder_bsns))
        target = self._free_dwelling(rnd, p.verblijfsobject_id)
        if target is None:
            return 0
        movers = [p.bsn] if leaves_home else members
        household_id = f"HH{day:%Y%m%d}{new_households + 1:04d}" if leaves_home else p.household_id
        for bsn in movers:
            before = self.persons[bsn]
            self._leave_address(before)
            m = self._person(bsn)
            m.verblijfsobject_id = target.identificatie
            m.nummeraanduiding_id = target.hoofdadres_id
            m.datum_aanvang_adreshouding = day
            m.household_id = household_id
            self._enter_address(m)
            self._record(day, "move", bsn, [bsn], [], household_id=household_id,
                         from_verblijfsobject_id=before.verblijfsobject_id,
                         to_verblijfsobject_id=target.identificatie,
                         from_nummeraanduiding_id=before.nummeraanduiding_id,
                         to_nummeraanduiding_id=target.hoofdadres_id,
                         verhuisgroep=list(movers), leaves_household=before.household_id if leaves_home else None)
        return 1 if leaves_home else 0

    def _next_id(self, objecttype: str) -> str:
        n = self.next_volgnummer[objecttype]
        self.next_volgnummer[objecttype] = n + 1
        return bag_id(self.gemeentecode, objecttype, n)

    def _new_building(self, rnd: random.Random, day: date) -> None:
        if not self.kavels:
            return  # the laid-out plots are used up; the town stops growing
        kavel = self.kavels.pop(rnd.randrange(len(self.kavels)))
        r = rnd.random()
        kind = 0 if r < 0.75 else (1 if r < 0.92 else 2)
        g = [rnd.random() for _ in range(6)]
        units = rnd.choice((4, 6, 8)) if kind == 1 else 1
        polygon = _pand_polygon(kavel.bbox[0], kavel.bbox[1], kind, g)
        pand_id = self._next_id(OBJECTTYPE_PAND)
        self.panden[pand_id] = Pand(identificatie=pand_id, oorspronkelijk_bouwjaar=day.year, status=PAND_BOUW_GESTART,
                                    ingangsdatum=day, polygon=polygon)
        vbo_ids, na_ids = [], []
        for vbo, is_woon in _make_units(kind, units, g, polygon, pand_id, kavel.openbare_ruimte_id,
                                        kavel.woonplaats_id, kavel.huisnummer, kavel.postcode, day, VBO_GEVORMD,
                                        self._next_id, self.nummeraanduidingen):
            self.verblijfsobjecten[vbo.identificatie] = vbo
            if is_woon:
                self.woon_vbos.append(vbo.identificatie)
            vbo_ids.append(vbo.identificatie)
            na_ids.append(vbo.hoofdadres_id)
        self.pending.setdefault(day + timedelta(days=BUILD_DAYS), []).append(pand_id)
        self.pand_vbos[pand_id] = vbo_ids
        self._record(day, "new_building", vbo_ids[0], [], [pand_id] + vbo_ids + na_ids, pand_id=pand_id,
                     verblijfsobject_ids=vbo_ids, nummeraanduiding_ids=na_ids, buurt_code=kavel.buurt_code,
                     openbare_ruimte_id=kavel.openbare_ruimte_id)

    def _complete_buildings(self, day: date) -> None:
        for pand_id in self.pending.pop(day, []):
            self.panden[pand_id] = replace(self.panden[pand_id], status=PAND_IN_GEBRUIK, ingangsdatum=day)
            vbo_ids = self.pand_vbos.pop(pand_id)
            for vbo_id in vbo_ids:
                old = self.verblijfsobjecten[vbo_id]
                self.verblijfsobjecten[vbo_id] = replace(old, status=VBO_IN_GEBRUIK, ingangsdatum=day,
                                                         pand_ids=list(old.pand_ids),
                                                         gebruiksdoelen=list(old.gebruiksdoelen))
            self._record(day, "building_completed", vbo_ids[0], [], [pand_id] + vbo_ids, pand_id=pand_id,
                         verblijfsobject_ids=list(vbo_ids))


# --------------------------------------------------------------------------- public API


def advance(muni: Municipality, days: int = 1) -> Municipality:
    """The state ``days`` days after ``muni`` (which is not modified).

    ``advance(build_municipality(as_of=D))`` equals ``build_municipality(as_of=D + 1)``.
    """
    if days < 0:
        raise ValueError("days must be >= 0")
    with _gc_paused():
        sim = _Simulation(muni)
    target = muni.as_of + timedelta(days=days)
    while sim.today < target:
        sim.step()
    return sim.snapshot(as_of=target)


class DemoWorld:
    """One synthetic municipality through time, cheap to ask for consecutive days.

    ``at(D)`` steps forward from the nearest cached state at or before ``D``;
    the base state and a few recent states are kept. Thread-safe, so one world
    can back several stand-in servers. Returned states are shared and read-only.
    """

    def __init__(self, population: int = 3000, seed: int = 42, gemeentecode: str = "9999",
                 naam: str = "Demodam", cache_size: int = 4):
        _validate(population, gemeentecode)
        self.population = population
        self.seed = seed
        self.gemeentecode = gemeentecode
        self.naam = naam
        self._cache_size = max(1, cache_size)
        self._lock = threading.Lock()
        self._base: Municipality | None = None
        self._sim: _Simulation | None = None
        self._recent: OrderedDict[date, Municipality] = OrderedDict()

    def base(self) -> Municipality:
        """The state at EPOCH."""
        with self._lock:
            return self._base_locked()

    def _base_locked(self) -> Municipality:
        if self._base is None:
            with _gc_paused():
                self._base = _generate_base(self.population, self.seed, self.gemeentecode, self.naam)
        return self._base

    def at(self, as_of: date) -> Municipality:
        """The state at the end of ``as_of``; dates up to EPOCH give the base state (labelled ``as_of``)."""
        with self._lock:
            base = self._base_locked()
            if as_of <= EPOCH:
                return base if as_of == EPOCH else _relabel(base, as_of)
            cached = self._recent.get(as_of)
            if cached is not None:
                self._recent.move_to_end(as_of)
                return cached
            if self._sim is None or self._sim.today > as_of:
                earlier = [d for d in self._recent if d < as_of]
                start = self._recent[max(earlier)] if earlier else base
                with _gc_paused():
                    self._sim = _Simulation(start)
            while self._sim.today < as_of:
                self._sim.step()
            state = self._sim.snapshot(as_of=as_of)
            self._recent[as_of] = state
            while len(self._recent) > self._cache_size:
                self._recent.popitem(last=False)
            return state


def _relabel(muni: Municipality, as_of: date) -> Municipality:
    return replace(muni, as_of=as_of, woonplaatsen=dict(muni.woonplaatsen), openbare_ruimten=dict(muni.openbare_ruimten),
                   panden=dict(muni.panden), nummeraanduidingen=dict(muni.nummeraanduidingen),
                   verblijfsobjecten=dict(muni.verblijfsobjecten), wijken=dict(muni.wijken),
                   buurten=dict(muni.buurten), persons=dict(muni.persons), changes=list(muni.changes),
                   bouwkavels=list(muni.bouwkavels))


def build_municipality(population: int = 3000, seed: int = 42, as_of: date = EPOCH,
                       gemeentecode: str = "9999", naam: str = "Demodam") -> Municipality:
    """Build the demo municipality at the end of ``as_of``.

    Deterministic for (population, seed, as_of, gemeentecode); ``naam`` only
    renames the municipality and its main woonplaats. For many dates of the same
    world use :class:`DemoWorld`, which steps incrementally.
    """
    return DemoWorld(population=population, seed=seed, gemeentecode=gemeentecode, naam=naam).at(as_of)
