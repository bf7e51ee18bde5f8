"""The in-memory shape of the demo municipality.

This module is the contract between the generator (``demo_gemeente.generator``),
the stand-in registries (``standins``) and the drop-zone writers. It holds plain
data only; no behaviour beyond small derived properties.

Identifiers follow the real registries:

* BSN: 9 digits passing the elfproef (11-test);
* BAG object ids: 16 digits ``<gemeentecode:4><objecttype:2><volgnummer:10>`` with
  objecttype 01 verblijfsobject, 10 pand, 20 nummeraanduiding, 30 openbare ruimte;
* woonplaats ids: 4 digits (woonplaatscode);
* CBS area codes: ``GM<gemeentecode>``, ``WK<gemeentecode><wijk:2>``,
  ``BU<gemeentecode><wijk:2><buurt:2>``;
* coordinates: Rijksdriehoek (EPSG:28992) metres.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


@dataclass(slots=True)
class Woonplaats:
    identificatie: str
    naam: str
    status: str  # "Woonplaats aangewezen"
    ingangsdatum: date
    bbox: tuple[float, float, float, float]  # minx, miny, maxx, maxy (RD)


@dataclass(slots=True)
class OpenbareRuimte:
    identificatie: str
    naam: str
    type: str  # "Weg", "Water", ... (BAG TypeOpenbareRuimte)
    woonplaats_id: str
    status: str  # "Naamgeving uitgegeven"
    ingangsdatum: date


@dataclass(slots=True)
class Pand:
    identificatie: str
    oorspronkelijk_bouwjaar: int
    status: str  # "Pand in gebruik", "Bouw gestart", ...
    ingangsdatum: date
    polygon: list[tuple[float, float]]  # closed ring, RD


@dataclass(slots=True)
class Nummeraanduiding:
    identificatie: str
    huisnummer: int
    huisletter: str | None
    huisnummertoevoeging: str | None
    postcode: str  # "1234AB"
    openbare_ruimte_id: str
    woonplaats_id: str
    type_adresseerbaar_object: str  # "Verblijfsobject"
    status: str  # "Naamgeving uitgegeven"
    ingangsdatum: date


@dataclass(slots=True)
class Verblijfsobject:
    identificatie: str
    hoofdadres_id: str  # nummeraanduiding identificatie
    pand_ids: list[str]
    gebruiksdoelen: list[str]  # e.g. ["woonfunctie"]
    oppervlakte: int  # m2
    point: tuple[float, float]  # RD
    status: str  # "Verblijfsobject in gebruik"
    ingangsdatum: date


@dataclass(slots=True)
class Wijk:
    code: str  # WK999901
    naam: str


@dataclass(slots=True)
class Buurt:
    code: str  # BU99990101
    naam: str
    wijk_code: str
    bbox: tuple[float, float, float, float]


@dataclass(slots=True)
class Person:
    bsn: str
    voornamen: str
    voorvoegsel: str | None
    geslachtsnaam: str
    geslacht: str  # "M", "V" or "O" (BRP geslachtsaanduiding code)
    geboortedatum: date
    geboorteplaats: str
    overlijdensdatum: date | None
    nummeraanduiding_id: str  # current address; always exists in the BAG
    verblijfsobject_id: str
    datum_aanvang_adreshouding: date
    datum_inschrijving_gemeente: date
    partner_bsn: str | None
    ouder_bsns: list[str] = field(default_factory=list)
    kind_bsns: list[str] = field(default_factory=list)
    household_id: str = ""


@dataclass(slots=True)
class DailyChange:
    """One event of the simulated day-to-day life of the municipality."""

    day: date
    kind: str  # "birth", "death", "move", "new_building", "building_completed"
    subject: str  # bsn for persons, verblijfsobject id for new buildings
    detail: dict = field(default_factory=dict)  # always holds "affected_bsns" and "affected_bag_ids"


@dataclass(slots=True)
class Bouwkavel:
    """A building plot that is laid out (street, number, postcode) but not yet built on.

    New-building events consume these plots, so that a new pand gets an address
    that fits the existing street numbering, postcode and buurt.
    """

    openbare_ruimte_id: str
    woonplaats_id: str
    buurt_code: str
    huisnummer: int
    postcode: str
    bbox: tuple[float, float, float, float]  # the plot, RD


@dataclass
class Municipality:
    """State of the demo municipality at the end of ``as_of``."""

    gemeentecode: str  # "9999"
    naam: str  # "Demodam"
    seed: int
    as_of: date
    woonplaatsen: dict[str, Woonplaats]
    openbare_ruimten: dict[str, OpenbareRuimte]
    panden: dict[str, Pand]
    nummeraanduidingen: dict[str, Nummeraanduiding]
    verblijfsobjecten: dict[str, Verblijfsobject]
    wijken: dict[str, Wijk]
    buurten: dict[str, Buurt]
    persons: dict[str, Person]  # by BSN, including deceased persons
    changes: list[DailyChange]  # every event from the epoch up to as_of, in order
    population: int = 0  # the requested population at the epoch (generator parameter)
    bouwkavels: list[Bouwkavel] = field(default_factory=list)  # plots still free for new buildings

    def residents(self) -> list[Person]:
        """Living persons registered in the municipality."""
        return [p for p in self.persons.values() if p.overlijdensdatum is None]

    def changes_on(self, day: date) -> list[DailyChange]:
        """The events of one day, in the order they were applied."""
        return [c for c in self.changes if c.day == day]
