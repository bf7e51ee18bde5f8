"""Deterministic CBS "Kerncijfers wijken en buurten" tables for the demo municipality.

CBS publishes one *Kerncijfers wijken en buurten* table per reference year (2023 =
85618NED, 2024 = 85984NED). Each has a single (geo) dimension ``WijkenEnBuurten``
holding ``NL00``, ``GM<gemeentecode>``, ``WK<gemeentecode><wijk>`` and
``BU<gemeentecode><wijk><buurt>`` codes, padded with spaces to 10 characters as the
OData feeds send them, and one numbered topic column per measure
(``AantalInwoners_5``, ``Mannen_6``, ...). Missing or confidential values are
``null`` in ``TypedDataSet`` and ``"."`` in ``UntypedDataSet``.

This module derives such tables from the demo world:

* counts per area come from the municipality on the table's *peildatum* (1 January
  of the reference year): residents are placed in a buurt by the point of their
  verblijfsobject, wijk and gemeente figures are sums over their buurten, and the
  single ``NL00`` row equals the gemeente (the demo country has one municipality);
* a household is the set of residents sharing a verblijfsobject (as CBS derives
  particuliere huishoudens from BRP addresses);
* a table is *published* at given dates (:class:`Release`); its ``Modified``
  timestamp changes only on those dates, so daily change detection can be
  tested. By default the first release (1 July) carries the population figures
  only and a later actualisation (1 October) adds the household figures, the way
  CBS completes a Kerncijfers table over the year;
* confidentiality (demo rule, after CBS practice): an area with fewer than
  :data:`SECRET_BELOW_INWONERS` residents shows only its number of inhabitants;
  an average household size is only shown from :data:`AVERAGE_FROM_INWONERS`
  residents on.

Table ids are ``99<yy>0NED`` (e.g. ``99260NED`` for 2026): CBS-shaped, but outside
the ranges of real StatLine tables, so a demo id is never mistaken for a real one.
"""
from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, Callable, Iterable, Mapping, Sequence

from demo_gemeente.dropzone import BuurtLocator
from demo_gemeente.generator import EPOCH, age_in_years
from demo_gemeente.model import Municipality

CODE_WIDTH = 10
"""CBS pads region codes (dimension keys) to 10 characters with trailing spaces."""
NAME_WIDTH = 40
SECRET_BELOW_INWONERS = 10
AVERAGE_FROM_INWONERS = 50
NATIONAL_CODE = "NL00"
MISSING = "."
"""How StatLine and the UntypedDataSet render a missing or confidential value."""


@dataclass(frozen=True)
class Measure:
    """One topic column of the table (a ``DataProperties`` entry of Type ``Topic``)."""

    key: str
    title: str
    datatype: str  # "String", "Long" or "Double" (CBS DataProperties Datatype)
    unit: str = ""
    decimals: int = 0
    presentation: str = "Absolute"  # CBS PresentationType
    group: str = ""  # key of the TopicGroup it belongs to
    household: bool = False  # only published once household figures are available

    @property
    def numeric(self) -> bool:
        return self.datatype != "String"


TOPIC_GROUPS: tuple[tuple[str, str], ...] = (
    ("Bevolking", "Bevolking"),
    ("Leeftijdsgroepen", "Leeftijdsgroepen"),
    ("ParticuliereHuishoudens", "Particuliere huishoudens"),
)

MEASURES: tuple[Measure, ...] = (
    Measure("Gemeentenaam_1", "Gemeentenaam", "String"),
    Measure("SoortRegio_2", "Soort regio", "String"),
    Measure("Codering_3", "Codering", "String"),
    Measure("AantalInwoners_5", "Aantal inwoners", "Long", "aantal", group="Bevolking"),
    Measure("Mannen_6", "Mannen", "Long", "aantal", group="Bevolking"),
    Measure("Vrouwen_7", "Vrouwen", "Long", "aantal", group="Bevolking"),
    Measure("k_0Tot15Jaar_8", "0 tot 15 jaar", "Long", "aantal", group="Leeftijdsgroepen"),
    Measure("k_15Tot25Jaar_9", "15 tot 25 jaar", "Long", "aantal", group="Leeftijdsgroepen"),
    Measure("k_25Tot45Jaar_10", "25 tot 45 jaar", "Long", "aantal", group="Leeftijdsgroepen"),
    Measure("k_45Tot65Jaar_11", "45 tot 65 jaar", "Long", "aantal", group="Leeftijdsgroepen"),
    Measure("k_65JaarOfOuder_12", "65 jaar of ouder", "Long", "aantal", group="Leeftijdsgroepen"),
    Measure("HuishoudensTotaal_28", "Huishoudens totaal", "Long", "aantal",
            group="ParticuliereHuishoudens", household=True),
    Measure("Eenpersoonshuishoudens_29", "Eenpersoonshuishoudens", "Long", "aantal",
            group="ParticuliereHuishoudens", household=True),
    Measure("HuishoudensZonderKinderen_30", "Huishoudens zonder kinderen", "Long", "aantal",
            group="ParticuliereHuishoudens", household=True),
    Measure("HuishoudensMetKinderen_31", "Huishoudens met kinderen", "Long", "aantal",
            group="ParticuliereHuishoudens", household=True),
    Measure("GemiddeldeHuishoudensgrootte_32", "Gemiddelde huishoudensgrootte", "Double", "aantal", 1,
            "Average", group="ParticuliereHuishoudens", household=True),
    Measure("Bevolkingsdichtheid_33", "Bevolkingsdichtheid", "Long", "aantal inwoners per km²", 0,
            "Average", group="Bevolking"),
)
MEASURE_KEYS: tuple[str, ...] = tuple(m.key for m in MEASURES)
DIMENSION_KEY = "WijkenEnBuurten"
_AGE_BANDS = ((0, 15, "k_0Tot15Jaar_8"), (15, 25, "k_15Tot25Jaar_9"), (25, 45, "k_25Tot45Jaar_10"),
              (45, 65, "k_45Tot65Jaar_11"), (65, 10_000, "k_65JaarOfOuder_12"))
_ADULT_AGE = 18


@dataclass(frozen=True)
class Release:
    """One publication of a table: from ``published`` on, this version is served."""

    published: date
    reason: str  # CBS TableInfos ReasonDelivery: "Nieuw", "Actualisering", "Correctie"
    households: bool  # household figures included (else "." / null)

    @property
    def modified(self) -> datetime:
        """CBS stamps publications at 02:00 local time (``2024-10-10T02:00:00``)."""
        return datetime.combine(self.published, time(2, 0))


def default_schedule(year: int) -> list[Release]:
    """First release on 1 July (population), actualisation on 1 October (households added)."""
    return [Release(date(year, 7, 1), "Nieuw", households=False),
            Release(date(year, 10, 1), "Actualisering", households=True)]


def table_id_for_year(year: int) -> str:
    """Demo table id of a reference year: ``99<yy>0NED``."""
    return f"99{year % 100:02d}0NED"


def cbs_code(code: str) -> str:
    """A region code as CBS OData sends it: left-aligned, padded to 10 characters."""
    return code.ljust(CODE_WIDTH)


def format_untyped(value: Any, measure: Measure) -> str:
    """A typed value as the UntypedDataSet renders it: text, with "." for missing values."""
    if value is None:
        return MISSING
    if measure.datatype == "Double":
        return f"{value:.{measure.decimals}f}"
    return str(value)


@dataclass(frozen=True)
class KerncijfersTable:
    """One published version of a Kerncijfers table, in CBS's OData shapes."""

    table_id: str
    year: int
    peildatum: date
    release: Release
    first_published: date
    gemeentenaam: str
    rows: tuple[dict[str, Any], ...]  # TypedDataSet rows, in CBS order, with ID
    regions: tuple[dict[str, Any], ...]  # WijkenEnBuurten dimension entries

    @property
    def modified(self) -> datetime:
        return self.release.modified

    @property
    def modified_text(self) -> str:
        """``Modified`` as CBS writes it (local time, no offset)."""
        return self.modified.isoformat(timespec="seconds")

    def table_info(self) -> dict[str, Any]:
        """The single ``TableInfos`` entity."""
        return {
            "ID": 1,
            "Title": f"Kerncijfers wijken en buurten {self.year}",
            "ShortTitle": f"Kerncijfers wijken en buurten {self.year}",
            "Identifier": self.table_id,
            "Summary": f"Kerncijfers wijken en buurten {self.year} van de demogemeente {self.gemeentenaam}.",
            "Modified": self.modified_text,
            "MetaDataModified": self.modified_text,
            "ReasonDelivery": self.release.reason,
            "ExplanatoryText": "",
            "OutputStatus": "Regulier",
            "Source": "CBS (demo).",
            "Language": "nl",
            "Catalog": "CBS",
            "Frequency": "Perjaar",
            "Period": str(self.year),
            "ShortDescription": "Demotabel met kerncijfers per gemeente, wijk en buurt.",
            "Description": f"Peildatum bevolking: {self.peildatum.isoformat()}.",
            "DefaultPresentation": "",
            "DefaultSelection": "$filter=startswith(WijkenEnBuurten,'GM')",
            "GraphTypes": "Table",
            "RecordCount": len(self.rows),
            "ColumnCount": len(MEASURES) + 1,
            "SearchPriority": "2",
        }

    def data_properties(self) -> list[dict[str, Any]]:
        """``DataProperties``: the geo dimension, the topic groups and the topics, by position."""
        props: list[dict[str, Any]] = [{
            "ID": 0, "Position": None, "ParentID": None, "Type": "GeoDimension", "Key": DIMENSION_KEY,
            "Title": "Wijken en buurten", "Description": "Gemeenten, wijken en buurten.", "MapYear": str(self.year),
            "ReleasePolicy": True,
        }]
        group_ids: dict[str, int] = {}
        for key, title in TOPIC_GROUPS:
            group_ids[key] = len(props)
            props.append({"ID": len(props), "ParentID": None, "Type": "TopicGroup", "Key": key,
                          "Title": title, "Description": None})
        for position, measure in enumerate(MEASURES):
            props.append({
                "ID": len(props), "Position": position, "ParentID": group_ids.get(measure.group),
                "Type": "Topic", "Key": measure.key, "Title": measure.title, "Description": None,
                "Datatype": measure.datatype, "Unit": measure.unit or None,
                "Decimals": measure.decimals if measure.numeric else None,
                "Default": "Missing" if measure.numeric else "None",
                "PresentationType": measure.presentation if measure.numeric else None,
            })
        return props

    def untyped_rows(self) -> list[dict[str, Any]]:
        """``UntypedDataSet`` rows: every measure as text, "." where the typed value is null."""
        out = []
        for row in self.rows:
            untyped = {"ID": row["ID"], DIMENSION_KEY: row[DIMENSION_KEY]}
            for measure in MEASURES:
                untyped[measure.key] = format_untyped(row[measure.key], measure)
            out.append(untyped)
        return out


@dataclass
class _Counts:
    inwoners: int = 0
    mannen: int = 0
    vrouwen: int = 0
    ages: dict[str, int] = field(default_factory=lambda: {band: 0 for _, _, band in _AGE_BANDS})
    huishoudens: int = 0
    eenpersoons: int = 0
    zonder_kinderen: int = 0
    met_kinderen: int = 0
    area_km2: float = 0.0

    def add(self, other: "_Counts") -> None:
        self.inwoners += other.inwoners
        self.mannen += other.mannen
        self.vrouwen += other.vrouwen
        for band in self.ages:
            self.ages[band] += other.ages[band]
        self.huishoudens += other.huishoudens
        self.eenpersoons += other.eenpersoons
        self.zonder_kinderen += other.zonder_kinderen
        self.met_kinderen += other.met_kinderen
        self.area_km2 += other.area_km2


def area_counts(muni: Municipality, peildatum: date) -> dict[str, "_Counts"]:
    """Counts per buurt code of the residents of ``muni`` on ``peildatum``."""
    locator = BuurtLocator(muni.buurten)
    counts: dict[str, _Counts] = {}
    for code, buurt in muni.buurten.items():
        minx, miny, maxx, maxy = buurt.bbox
        counts[code] = _Counts(area_km2=(maxx - minx) * (maxy - miny) / 1_000_000)
    households: dict[str, list[int]] = defaultdict(list)  # verblijfsobject -> ages
    household_buurt: dict[str, str] = {}
    for person in muni.residents():
        vbo = muni.verblijfsobjecten.get(person.verblijfsobject_id)
        buurt = locator.find(*vbo.point) if vbo is not None else None
        if buurt is None:
            continue  # outside every buurt: CBS places such addresses nowhere either
        c = counts[buurt.code]
        age = age_in_years(person.geboortedatum, peildatum)
        c.inwoners += 1
        if person.geslacht == "M":
            c.mannen += 1
        elif person.geslacht == "V":
            c.vrouwen += 1
        for low, high, band in _AGE_BANDS:
            if low <= age < high:
                c.ages[band] += 1
                break
        households[person.verblijfsobject_id].append(age)
        household_buurt[person.verblijfsobject_id] = buurt.code
    for vbo_id, ages in households.items():
        c = counts[household_buurt[vbo_id]]
        c.huishoudens += 1
        if len(ages) == 1:
            c.eenpersoons += 1
        elif any(a < _ADULT_AGE for a in ages):
            c.met_kinderen += 1
        else:
            c.zonder_kinderen += 1
    return counts


def _row(code: str, soort: str, gemeentenaam: str, c: _Counts, households: bool) -> dict[str, Any]:
    secret = c.inwoners < SECRET_BELOW_INWONERS
    show_households = households and not secret

    def value(v: Any, shown: bool = True) -> Any:
        return v if shown and not secret else None

    average = round(c.inwoners / c.huishoudens, 1) if c.huishoudens else None
    density = round(c.inwoners / c.area_km2) if c.area_km2 else None
    return {
        DIMENSION_KEY: cbs_code(code),
        "Gemeentenaam_1": gemeentenaam.ljust(NAME_WIDTH),
        "SoortRegio_2": soort.ljust(CODE_WIDTH),
        "Codering_3": cbs_code(code),
        "AantalInwoners_5": c.inwoners,
        "Mannen_6": value(c.mannen),
        "Vrouwen_7": value(c.vrouwen),
        **{band: value(c.ages[band]) for _, _, band in _AGE_BANDS},
        "HuishoudensTotaal_28": value(c.huishoudens, show_households),
        "Eenpersoonshuishoudens_29": value(c.eenpersoons, show_households),
        "HuishoudensZonderKinderen_30": value(c.zonder_kinderen, show_households),
        "HuishoudensMetKinderen_31": value(c.met_kinderen, show_households),
        "GemiddeldeHuishoudensgrootte_32": value(average, show_households and c.inwoners >= AVERAGE_FROM_INWONERS),
        "Bevolkingsdichtheid_33": value(density),
    }


def kerncijfers_rows(muni: Municipality, peildatum: date, households: bool) -> list[dict[str, Any]]:
    """TypedDataSet rows in CBS order: Nederland, the gemeente, then each wijk followed by its buurten."""
    per_buurt = area_counts(muni, peildatum)
    gemeente = _Counts()
    per_wijk: dict[str, _Counts] = {code: _Counts() for code in sorted(muni.wijken)}
    for code in sorted(muni.buurten):
        per_wijk[muni.buurten[code].wijk_code].add(per_buurt[code])
        gemeente.add(per_buurt[code])
    gm = f"GM{muni.gemeentecode}"
    rows = [_row(NATIONAL_CODE, "Land", "Nederland", gemeente, households),
            _row(gm, "Gemeente", muni.naam, gemeente, households)]
    for wijk_code in sorted(muni.wijken):
        rows.append(_row(wijk_code, "Wijk", muni.naam, per_wijk[wijk_code], households))
        for buurt_code in sorted(c for c, b in muni.buurten.items() if b.wijk_code == wijk_code):
            rows.append(_row(buurt_code, "Buurt", muni.naam, per_buurt[buurt_code], households))
    return [{"ID": index, **row} for index, row in enumerate(rows)]


def region_entries(muni: Municipality) -> list[dict[str, Any]]:
    """The ``WijkenEnBuurten`` dimension: Key (padded), Title, Description and the municipality."""
    gm = f"GM{muni.gemeentecode}"
    entries = [{"Key": cbs_code(NATIONAL_CODE), "Title": "Nederland", "Description": None, "Municipality": None},
               {"Key": cbs_code(gm), "Title": muni.naam, "Description": None, "Municipality": muni.naam}]
    for wijk_code in sorted(muni.wijken):
        entries.append({"Key": cbs_code(wijk_code), "Title": muni.wijken[wijk_code].naam,
                        "Description": None, "Municipality": muni.naam})
        for buurt_code in sorted(c for c, b in muni.buurten.items() if b.wijk_code == wijk_code):
            entries.append({"Key": cbs_code(buurt_code), "Title": muni.buurten[buurt_code].naam,
                            "Description": None, "Municipality": muni.naam})
    return entries


WorldAt = Callable[[date], Municipality]


def _world_at(world: Any) -> WorldAt:
    if isinstance(world, Municipality):
        return lambda _as_of: world
    if hasattr(world, "at"):
        return world.at
    if callable(world):
        return world
    raise TypeError(f"cannot derive CBS tables from a world of type {type(world).__name__}")


class DemoKerncijfers:
    """The Kerncijfers tables CBS would have published about the demo world by a date.

    ``world`` is a ``DemoWorld`` (anything with ``.at(date)``), a callable
    ``date -> Municipality`` or one fixed ``Municipality``. ``years`` are the
    reference years offered (default: the year before the demo epoch and the
    epoch year); ``schedule(year)`` gives the releases of one year, oldest first.
    Tables are computed once per (year, release contents) and cached.
    """

    def __init__(self, world: Any, years: Iterable[int] | None = None,
                 schedule: Callable[[int], Sequence[Release]] = default_schedule) -> None:
        self._world_at = _world_at(world)
        self.years = tuple(sorted(years if years is not None else (EPOCH.year - 1, EPOCH.year)))
        self._schedule = schedule
        self._cache: dict[tuple[int, bool], tuple[tuple[dict, ...], tuple[dict, ...], str]] = {}
        self._lock = threading.Lock()

    def releases(self, year: int) -> list[Release]:
        """The releases of ``year``'s table, oldest first."""
        return sorted(self._schedule(year), key=lambda r: r.published)

    def table_ids(self, as_of: date) -> list[str]:
        """Ids of the tables published on or before ``as_of``."""
        return [table_id_for_year(y) for y in self.years if any(r.published <= as_of for r in self.releases(y))]

    def year_of(self, table_id: str) -> int | None:
        """The reference year of a demo table id, or None when it is not one of ours."""
        return next((y for y in self.years if table_id_for_year(y).lower() == table_id.lower()), None)

    def table(self, table_id: str, as_of: date) -> KerncijfersTable | None:
        """The version of ``table_id`` that is current on ``as_of``; None when not (yet) published."""
        year = self.year_of(table_id)
        if year is None:
            return None
        releases = self.releases(year)
        current = [r for r in releases if r.published <= as_of]
        if not current:
            return None
        release = current[-1]
        peildatum = date(year, 1, 1)
        key = (year, release.households)
        with self._lock:
            cached = self._cache.get(key)
            if cached is None:
                muni = self._world_at(peildatum)
                cached = (tuple(kerncijfers_rows(muni, peildatum, release.households)),
                          tuple(region_entries(muni)), muni.naam)
                self._cache[key] = cached
        rows, regions, naam = cached
        return KerncijfersTable(table_id=table_id_for_year(year), year=year, peildatum=peildatum, release=release,
                                first_published=releases[0].published, gemeentenaam=naam, rows=rows,
                                regions=regions)


def schedule_from(releases: Mapping[int, Sequence[Release]]) -> Callable[[int], Sequence[Release]]:
    """A schedule from an explicit ``{year: [Release, ...]}`` mapping (years not listed have none)."""
    return lambda year: list(releases.get(year, ()))
