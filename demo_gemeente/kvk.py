"""The demo municipality's KvK Handelsregister: companies, their vestigingen and daily changes.

The register is derived from a demo world (``demo_gemeente.generator.DemoWorld``, a
fixed :class:`~demo_gemeente.model.Municipality` or a callable ``date -> Municipality``)
in the same way as the world itself::

    register(as_of) = base register at EPOCH + the KvK events of every day in (EPOCH, as_of]

The events of day ``D`` are drawn from a random generator seeded by
``("kvk", seed, gemeentecode, D)`` and applied to ``register(D - 1)``, so any date
can be rebuilt in any process with the same result. The random generator is seeded
with a string (hashed with SHA-512 by :mod:`random`), never with ``hash()``.

What is modelled (the parts the KvK APIs Zoeken, Basisprofiel, Vestigingsprofiel and
the Mutatieservice expose):

* an :class:`Onderneming` is one inschrijving: the *maatschappelijke activiteit* with its
  8-digit KvK-nummer, owned by a rechtspersoon (BV, NV, Stichting, Vereniging; 9-digit
  RSIN passing the elfproef) or by a natural person (eenmanszaak, no RSIN);
* every onderneming has one hoofdvestiging and possibly nevenvestigingen
  (:class:`Vestiging`, 12-digit vestigingsnummer), each at a real BAG address of the
  demo world (verblijfsobject + nummeraanduiding ids, postcode, straat, plaats);
* SBI 2008 activities (codes without dots, as KvK returns them; the first is the
  hoofdactiviteit) and handelsnamen in registration order;
* a set of Stichtingen and BVs that are *zorgaanbieders* (SBI 86/87/88) with an
  8-digit AGB-code. The AGB-code is not a KvK field; it is kept on the side for the
  AGB → KvK mapping that sociaal-domein data (iWmo/iJw) needs.

Daily events (:class:`KvkChange`): ``registratie`` (new inschrijving), ``adreswijziging``
(a vestiging moves to another BAG address; the vestigingsnummer stays) and
``uitschrijving`` (the onderneming and its vestigingen end; the inschrijving stays
in the register with an end date, as in the Handelsregister).

Rates are realistic per company (about 10% new and 7% ended per year) with a small
daily floor, so that a small demo town still shows some daily life.
"""
from __future__ import annotations

import math
import random
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Callable, Iterable, Protocol

from demo_gemeente.generator import EPOCH, WOONFUNCTIE
from demo_gemeente.model import Municipality
from ggm_lakehouse.bsn import complete_bsn

# Rechtsvormen as the Basisprofiel reports them in ``eigenaar`` (rechtsvorm, uitgebreideRechtsvorm).
RECHTSVORMEN: dict[str, tuple[str, str]] = {
    "Eenmanszaak": ("Eenmanszaak", "Eenmanszaak"),
    "BV": ("BeslotenVennootschap", "Besloten Vennootschap"),
    "NV": ("NaamlozeVennootschap", "Naamloze Vennootschap"),
    "Stichting": ("Stichting", "Stichting"),
    "Vereniging": ("Vereniging", "Vereniging met volledige rechtsbevoegdheid"),
}
RECHTSPERSOON_VORMEN = frozenset({"BV", "NV", "Stichting", "Vereniging"})
_NAME_SUFFIX = {"BV": " B.V.", "NV": " N.V.", "Stichting": "", "Vereniging": "", "Eenmanszaak": ""}


@dataclass(frozen=True, slots=True)
class Activiteit:
    """One SBI 2008 activity the generator can hand out."""

    sbi_code: str
    omschrijving: str
    naamwoord: str  # used to make handelsnamen ("Bakkerij De Vries")
    rechtsvormen: tuple[str, ...]
    gebruiksdoel: str  # preferred BAG gebruiksdoel of the vestiging address
    zorg: bool = False


# SBI 2008 codes as KvK reports them (no dots). Descriptions follow the SBI 2008 titles.
ACTIVITEITEN: tuple[Activiteit, ...] = (
    Activiteit("4711", "Supermarkten en dergelijke winkels met een algemeen assortiment voedings- en genotmiddelen",
               "Supermarkt", ("BV", "Eenmanszaak"), "winkelfunctie"),
    Activiteit("47241", "Winkels in brood en banket", "Bakkerij", ("Eenmanszaak", "BV"), "winkelfunctie"),
    Activiteit("56101", "Restaurants", "Restaurant", ("Eenmanszaak", "BV"), "bijeenkomstfunctie"),
    Activiteit("5630", "Cafés", "Café", ("Eenmanszaak", "BV"), "bijeenkomstfunctie"),
    Activiteit("6201", "Ontwikkelen, produceren en uitgeven van software", "Software", ("BV", "Eenmanszaak"),
               "kantoorfunctie"),
    Activiteit("6202", "Advisering op het gebied van informatietechnologie", "IT Advies", ("Eenmanszaak", "BV"),
               "kantoorfunctie"),
    Activiteit("69204", "Administratiekantoren", "Administratie", ("Eenmanszaak", "BV"), "kantoorfunctie"),
    Activiteit("70221", "Organisatie-adviesbureaus", "Advies", ("Eenmanszaak", "BV"), "kantoorfunctie"),
    Activiteit("41201", "Burgerlijke en utiliteitsbouw", "Bouw", ("BV", "Eenmanszaak"), "industriefunctie"),
    Activiteit("4321", "Elektrotechnische bouwinstallatie", "Elektrotechniek", ("Eenmanszaak", "BV"),
               "industriefunctie"),
    Activiteit("4322", "Loodgieters- en fitterswerk; installatie van sanitair en van verwarmings- en "
               "luchtbehandelingsapparatuur", "Installatietechniek", ("Eenmanszaak", "BV"), "industriefunctie"),
    Activiteit("43341", "Schilderen", "Schildersbedrijf", ("Eenmanszaak",), "industriefunctie"),
    Activiteit("96021", "Haarverzorging", "Kapsalon", ("Eenmanszaak",), "winkelfunctie"),
    Activiteit("4520", "Gespecialiseerde reparatie van auto's", "Autobedrijf", ("Eenmanszaak", "BV"),
               "industriefunctie"),
    Activiteit("7111", "Architecten", "Architectenbureau", ("Eenmanszaak", "BV"), "kantoorfunctie"),
    Activiteit("68204", "Verhuur van overig onroerend goed", "Vastgoed", ("BV", "NV"), "kantoorfunctie"),
    Activiteit("6420", "Financiële holdings", "Holding", ("BV", "NV"), "kantoorfunctie"),
    Activiteit("4941", "Goederenvervoer over de weg (geen verhuizingen)", "Transport", ("BV", "NV"),
               "industriefunctie"),
    Activiteit("9312", "Sportclubs", "Sportvereniging", ("Vereniging",), "sportfunctie"),
    Activiteit("9499", "Overige ideële organisaties", "Belangenvereniging", ("Vereniging", "Stichting"),
               "bijeenkomstfunctie"),
    Activiteit("90011", "Beoefening van podiumkunst", "Muziekvereniging", ("Vereniging", "Stichting"),
               "bijeenkomstfunctie"),
)

# Zorgaanbieders: the providers the municipality's Wmo and Jeugdwet care will refer to.
ZORG_ACTIVITEITEN: tuple[Activiteit, ...] = (
    Activiteit("8621", "Huisartsenpraktijken", "Huisartsenpraktijk", ("BV",), "gezondheidszorgfunctie", True),
    Activiteit("8710", "Verpleeghuizen", "Zorgcentrum", ("Stichting",), "gezondheidszorgfunctie", True),
    Activiteit("8720", "Instellingen voor mensen met een verstandelijke beperking, psychiatrische patiënten en "
               "verslaafden", "Woonzorg", ("Stichting",), "gezondheidszorgfunctie", True),
    Activiteit("8730", "Verzorgingshuizen", "Verzorgingshuis", ("Stichting",), "gezondheidszorgfunctie", True),
    Activiteit("88101", "Thuiszorg", "Thuiszorg", ("Stichting", "BV"), "kantoorfunctie", True),
    Activiteit("8899", "Overige maatschappelijke dienstverlening zonder overnachting", "Jeugdhulp",
               ("Stichting", "BV"), "kantoorfunctie", True),
)
_BY_CODE = {a.sbi_code: a for a in (*ACTIVITEITEN, *ZORG_ACTIVITEITEN)}

_FIRST_NAMES = ("Anna", "Daan", "Sanne", "Thijs", "Fatima", "Mark", "Eva", "Jeroen", "Lotte", "Youssef", "Inge",
                "Bas", "Noor", "Kees", "Emma", "Ruben", "Mila", "Ahmed", "Els", "Tim")
_SURNAMES = ("De Vries", "Jansen", "Bakker", "Visser", "Smit", "Meijer", "De Boer", "Mulder", "Bos", "Vos",
             "Peters", "Hendriks", "Dekker", "Brouwer", "Dijkstra", "Kok", "Yilmaz", "Nguyen", "Kaya", "Van Dijk")
_STICHTING_WORDS = ("Zorggroep", "Welzijn", "Samen", "De Linde", "Het Anker", "De Horizon", "De Wending", "De Brug")
_VERENIGING_WORDS = ("Vooruit", "Ons Genoegen", "Eendracht", "De Toekomst", "Kunst en Vriendschap", "Oranje")

# Daily event rates per active onderneming (yearly fraction / 365) and a small floor of
# expected events per day, so that a demo town of a few hundred people still changes.
NEW_PER_YEAR, NEW_FLOOR = 0.10, 0.3
MOVE_PER_YEAR, MOVE_FLOOR = 0.05, 0.3
END_PER_YEAR, END_FLOOR = 0.07, 0.2


@dataclass(frozen=True, slots=True)
class KvkAdres:
    """A bezoekadres: a real BAG address of the demo world."""

    straatnaam: str
    huisnummer: int
    huisletter: str | None
    huisnummertoevoeging: str | None
    postcode: str
    plaats: str
    verblijfsobject_id: str
    nummeraanduiding_id: str
    rd_x: float
    rd_y: float

    @property
    def volledig_adres(self) -> str:
        """The address on one line, as KvK's ``volledigAdres`` writes it."""
        nummer = f"{self.huisnummer}{self.huisletter or ''}"
        if self.huisnummertoevoeging:
            nummer += f"-{self.huisnummertoevoeging}"
        return f"{self.straatnaam} {nummer} {self.postcode} {self.plaats}"


@dataclass(frozen=True, slots=True)
class SbiActiviteit:
    sbi_code: str
    omschrijving: str
    hoofdactiviteit: bool


@dataclass(frozen=True, slots=True)
class Vestiging:
    vestigingsnummer: str
    kvk_nummer: str
    hoofdvestiging: bool
    commercieel: bool
    handelsnamen: tuple[str, ...]
    adres: KvkAdres
    sbi_activiteiten: tuple[SbiActiviteit, ...]
    voltijd_werkzame_personen: int
    deeltijd_werkzame_personen: int
    datum_aanvang: date
    datum_einde: date | None = None
    websites: tuple[str, ...] = ()

    @property
    def eerste_handelsnaam(self) -> str:
        return self.handelsnamen[0]

    @property
    def totaal_werkzame_personen(self) -> int:
        return self.voltijd_werkzame_personen + self.deeltijd_werkzame_personen

    def actief_op(self, day: date) -> bool:
        """Registered on ``day`` (started on or before it, not ended on or before it)."""
        return self.datum_aanvang <= day and (self.datum_einde is None or self.datum_einde > day)


@dataclass(frozen=True, slots=True)
class Onderneming:
    """One inschrijving: the maatschappelijke activiteit, its owner and its vestigingen."""

    kvk_nummer: str
    rechtsvorm: str  # key of RECHTSVORMEN
    naam: str
    statutaire_naam: str | None
    rsin: str | None
    handelsnamen: tuple[str, ...]
    sbi_activiteiten: tuple[SbiActiviteit, ...]
    formele_registratiedatum: date
    datum_aanvang: date
    vestigingen: tuple[Vestiging, ...]
    datum_einde: date | None = None
    agb_code: str | None = None  # not a KvK field: the zorgaanbieder's AGB-code (Vektis)
    ind_non_mailing: bool = False

    @property
    def is_rechtspersoon(self) -> bool:
        return self.rechtsvorm in RECHTSPERSOON_VORMEN

    @property
    def is_zorgaanbieder(self) -> bool:
        return self.agb_code is not None

    @property
    def hoofdvestiging(self) -> Vestiging:
        return next(v for v in self.vestigingen if v.hoofdvestiging)

    @property
    def totaal_werkzame_personen(self) -> int:
        return sum(v.totaal_werkzame_personen for v in self.vestigingen)

    def actief_op(self, day: date) -> bool:
        """Registered on ``day``."""
        return self.datum_aanvang <= day and (self.datum_einde is None or self.datum_einde > day)


@dataclass(frozen=True, slots=True)
class KvkChange:
    """One event in the Handelsregister, as the Mutatieservice signals it."""

    day: date
    kind: str  # "registratie", "adreswijziging", "uitschrijving"
    kvk_nummer: str
    vestigingsnummer: str | None
    sequence: int  # position among the events of the day (0-based)
    detail: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def timestamp(self) -> datetime:
        """When the register processed the event: office hours of ``day``, one minute apart, UTC."""
        return datetime.combine(self.day, time(8, 0), tzinfo=timezone.utc) + timedelta(minutes=self.sequence)

    @property
    def signaal_id(self) -> str:
        """Stable id of the Mutatieservice signal for this event."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kvk-signaal/{self.day.isoformat()}/{self.sequence}/{self.kvk_nummer}"))


@dataclass
class KvkState:
    """The register at the end of ``as_of``. Treat as read-only."""

    as_of: date
    ondernemingen: dict[str, Onderneming]  # by KvK-nummer, in registration order (ended ones included)
    changes: list[KvkChange]  # the events of ``as_of`` itself
    _vestigingen: dict[str, Vestiging] | None = None

    @property
    def vestigingen(self) -> dict[str, Vestiging]:
        """Every vestiging by vestigingsnummer (ended ones included)."""
        if self._vestigingen is None:
            self._vestigingen = {v.vestigingsnummer: v for o in self.ondernemingen.values() for v in o.vestigingen}
        return self._vestigingen

    def actieve_ondernemingen(self) -> list[Onderneming]:
        return [o for o in self.ondernemingen.values() if o.actief_op(self.as_of)]

    def zorgaanbieders(self) -> list[Onderneming]:
        """Active ondernemingen with an AGB-code (Stichtingen and BVs with SBI 86/87/88)."""
        return [o for o in self.actieve_ondernemingen() if o.is_zorgaanbieder]


# --------------------------------------------------------------------------- addresses


@dataclass(frozen=True, slots=True)
class _AddressPool:
    """BAG addresses of the demo world, grouped by use (gebruiksdoel)."""

    by_use: dict[str, tuple[KvkAdres, ...]]
    woon: tuple[KvkAdres, ...]
    all: tuple[KvkAdres, ...]

    def pick(self, rnd: random.Random, gebruiksdoel: str, at_home: bool) -> KvkAdres:
        if at_home and self.woon:
            return rnd.choice(self.woon)
        for pool in (self.by_use.get(gebruiksdoel, ()), self._nonres(), self.all):
            if pool:
                return rnd.choice(pool)
        raise ValueError("the demo world has no BAG addresses")

    def _nonres(self) -> tuple[KvkAdres, ...]:
        return tuple(a for use, pool in sorted(self.by_use.items()) if use != WOONFUNCTIE for a in pool)


def _address_pool(world: Municipality, on: date) -> _AddressPool:
    """Every verblijfsobject that exists on ``on`` with its hoofdadres, in identificatie order."""
    by_use: dict[str, list[KvkAdres]] = {}
    woon: list[KvkAdres] = []
    everything: list[KvkAdres] = []
    for vbo_id in sorted(world.verblijfsobjecten):
        vbo = world.verblijfsobjecten[vbo_id]
        if vbo.ingangsdatum > on:
            continue
        na = world.nummeraanduidingen.get(vbo.hoofdadres_id)
        if na is None:
            continue
        ruimte = world.openbare_ruimten.get(na.openbare_ruimte_id)
        woonplaats = world.woonplaatsen.get(na.woonplaats_id)
        if ruimte is None or woonplaats is None:
            continue
        adres = KvkAdres(straatnaam=ruimte.naam, huisnummer=na.huisnummer, huisletter=na.huisletter,
                         huisnummertoevoeging=na.huisnummertoevoeging, postcode=na.postcode, plaats=woonplaats.naam,
                         verblijfsobject_id=vbo.identificatie, nummeraanduiding_id=na.identificatie,
                         rd_x=float(vbo.point[0]), rd_y=float(vbo.point[1]))
        everything.append(adres)
        for use in vbo.gebruiksdoelen:
            by_use.setdefault(use, []).append(adres)
        if WOONFUNCTIE in vbo.gebruiksdoelen:
            woon.append(adres)
    return _AddressPool({k: tuple(v) for k, v in by_use.items()}, tuple(woon), tuple(everything))


# --------------------------------------------------------------------------- the generator


class _Numbers:
    """Hands out KvK-nummers, vestigingsnummers, RSINs and AGB-codes in a fixed sequence."""

    def __init__(self, seed: int, gemeentecode: str) -> None:
        offset = (int(gemeentecode) * 7919 + seed * 104_729) % 900_000
        # 6xxxxxxx stays clear of KvK's published test numbers (55…, 68…, 69…, 90…).
        self.kvk_next = 60_000_000 + offset * 10
        self.vestiging_next = 100_000_000 + offset * 100
        self.rsin_next = 85_000_000 + offset * 10
        self.agb_next = offset % 9_000

    def copy(self) -> "_Numbers":
        clone = _Numbers.__new__(_Numbers)
        clone.__dict__.update(self.__dict__)
        return clone

    def kvk(self) -> str:
        self.kvk_next += 1
        return f"{self.kvk_next:08d}"

    def vestiging(self) -> str:
        self.vestiging_next += 1
        return f"{self.vestiging_next:012d}"

    def rsin(self) -> str:
        while True:
            self.rsin_next += 1
            candidate = complete_bsn(f"{self.rsin_next:08d}")
            if candidate is not None:
                return candidate

    def agb(self) -> str:
        # 2-digit zorgsoort + 6 digits; 42 as in the iWmo sample messages (Ontvanger 42420001).
        self.agb_next += 1
        return f"42{self.agb_next:06d}"


def _poisson(rnd: random.Random, lam: float) -> int:
    """Knuth's method; ``lam`` stays small (a few events per day)."""
    limit, k, product = math.exp(-lam), 0, rnd.random()
    while product > limit:
        k += 1
        product *= rnd.random()
    return k


class _Builder:
    """Creates ondernemingen; shared by the base register and the daily registrations."""

    def __init__(self, pool: _AddressPool, numbers: _Numbers, plaats: str) -> None:
        self.pool = pool
        self.numbers = numbers
        self.plaats = plaats

    def onderneming(self, rnd: random.Random, start: date, registered: date, zorg: bool = False) -> Onderneming:
        if zorg:
            activiteit = rnd.choice(ZORG_ACTIVITEITEN)
            rechtsvorm = rnd.choice(activiteit.rechtsvormen)
        else:
            rechtsvorm = rnd.choices(("Eenmanszaak", "BV", "NV", "Stichting", "Vereniging"),
                                     weights=(62, 28, 1, 5, 4))[0]
            choices = [a for a in ACTIVITEITEN if rechtsvorm in a.rechtsvormen]
            activiteit = rnd.choice(choices)
        kvk_nummer = self.numbers.kvk()
        naam = self._naam(rnd, rechtsvorm, activiteit)
        handelsnamen = (naam,) + ((f"{activiteit.naamwoord} {self.plaats}",) if rnd.random() < 0.15 else ())
        extra = [a for a in ACTIVITEITEN if a.sbi_code != activiteit.sbi_code and rechtsvorm in a.rechtsvormen]
        sbi = [SbiActiviteit(activiteit.sbi_code, activiteit.omschrijving, True)]
        if extra and rnd.random() < 0.3:
            second = rnd.choice(extra)
            sbi.append(SbiActiviteit(second.sbi_code, second.omschrijving, False))
        n_vestigingen = 1 + (rnd.random() < 0.12) + (rnd.random() < 0.03)
        commercieel = rechtsvorm not in ("Stichting", "Vereniging")
        vestigingen = []
        for index in range(n_vestigingen):
            at_home = rechtsvorm == "Eenmanszaak" and index == 0 and rnd.random() < 0.7
            adres = self.pool.pick(rnd, activiteit.gebruiksdoel, at_home)
            voltijd, deeltijd = self._werkzame_personen(rnd, rechtsvorm, zorg)
            namen = handelsnamen if index == 0 else (f"{naam} {adres.straatnaam}",)
            website = f"www.{''.join(c for c in naam.lower() if c.isalnum())[:30]}.nl"
            vestigingen.append(Vestiging(
                vestigingsnummer=self.numbers.vestiging(), kvk_nummer=kvk_nummer, hoofdvestiging=index == 0,
                commercieel=commercieel, handelsnamen=namen, adres=adres, sbi_activiteiten=tuple(sbi),
                voltijd_werkzame_personen=voltijd, deeltijd_werkzame_personen=deeltijd, datum_aanvang=start,
                websites=(website,) if rnd.random() < 0.6 else ()))
        rsin = self.numbers.rsin() if rechtsvorm in RECHTSPERSOON_VORMEN else None
        return Onderneming(
            kvk_nummer=kvk_nummer, rechtsvorm=rechtsvorm, naam=naam,
            statutaire_naam=naam if rsin else None, rsin=rsin, handelsnamen=handelsnamen,
            sbi_activiteiten=tuple(sbi), formele_registratiedatum=registered, datum_aanvang=start,
            vestigingen=tuple(vestigingen), agb_code=self.numbers.agb() if zorg else None,
            ind_non_mailing=rnd.random() < 0.2)

    def _naam(self, rnd: random.Random, rechtsvorm: str, activiteit: Activiteit) -> str:
        surname = rnd.choice(_SURNAMES)
        if rechtsvorm == "Stichting":
            return f"Stichting {activiteit.naamwoord} {rnd.choice(_STICHTING_WORDS)} {self.plaats}"
        if rechtsvorm == "Vereniging":
            return f"{activiteit.naamwoord} {rnd.choice(_VERENIGING_WORDS)}"
        if rechtsvorm == "Eenmanszaak":
            if rnd.random() < 0.5:
                return f"{activiteit.naamwoord} {rnd.choice(_FIRST_NAMES)}"
            return f"{surname} {activiteit.naamwoord}"
        return f"{surname} {activiteit.naamwoord}{_NAME_SUFFIX[rechtsvorm]}"

    @staticmethod
    def _werkzame_personen(rnd: random.Random, rechtsvorm: str, zorg: bool) -> tuple[int, int]:
        if rechtsvorm == "Eenmanszaak":
            return 1, int(rnd.random() < 0.2)
        if zorg:
            return rnd.randint(5, 60), rnd.randint(10, 150)
        if rechtsvorm in ("Stichting", "Vereniging"):
            return rnd.randint(0, 3), rnd.randint(0, 10)
        return rnd.randint(1, 30), rnd.randint(0, 20)


def _historic_start(rnd: random.Random) -> date:
    """Start date of an onderneming that already existed at EPOCH (up to ~40 years back)."""
    return EPOCH - timedelta(days=int(rnd.expovariate(1 / 3000)) % 14_600 + 1)


class _HasAt(Protocol):
    def at(self, as_of: date) -> Municipality: ...


WorldProvider = Municipality | _HasAt | Callable[[date], Municipality]


class KvkRegister:
    """The KvK Handelsregister of a demo world through time.

    ``world`` is a ``DemoWorld`` (anything with ``.at(date)``), a ``Municipality`` or a
    callable ``date -> Municipality``; only its BAG addresses are used, taken from
    the state at EPOCH (BAG objects are never removed by the generator, so the
    addresses stay valid on every later day). ``density`` is the number of
    ondernemingen per inhabitant at EPOCH (the Netherlands has about 0.14);
    ``zorgaanbieders`` the number of care providers at EPOCH (default: 4 per 1,000
    inhabitants, at least 4).

    Thread-safe; states for consecutive days are computed incrementally and the last
    few are cached.
    """

    def __init__(self, world: WorldProvider, seed: int | None = None, density: float = 0.12, zorgaanbieders: int | None = None,
                 cache_size: int = 8) -> None:
        if density <= 0:
            raise ValueError("density must be positive")
        base = world.at(EPOCH) if hasattr(world, "at") else (world if isinstance(world, Municipality) else world(EPOCH))
        self.gemeentecode = base.gemeentecode
        self.seed = base.seed if seed is None else seed
        self.density = density
        population = max(base.population, len(base.residents()))
        self.n_zorgaanbieders = zorgaanbieders if zorgaanbieders is not None else max(4, population * 4 // 1000)
        self.n_base = max(self.n_zorgaanbieders + 1, round(population * density))
        main_woonplaats = min(base.woonplaatsen.values(), key=lambda w: w.identificatie)
        self.plaats = main_woonplaats.naam
        self._pool = _address_pool(base, EPOCH)
        self._lock = threading.Lock()
        self._cache: OrderedDict[date, tuple[KvkState, _Numbers]] = OrderedDict()
        self._cache_size = max(2, cache_size)
        self._changes: dict[date, list[KvkChange]] = {}
        self._base: tuple[KvkState, _Numbers] | None = None

    # -- public API

    def at(self, day: date) -> KvkState:
        """The register at the end of ``day`` (days up to EPOCH give the base register)."""
        with self._lock:
            return self._state_locked(day)[0]

    def changes_on(self, day: date) -> list[KvkChange]:
        """The events of ``day`` in processing order (none on or before EPOCH)."""
        if day <= EPOCH:
            return []
        with self._lock:
            if day not in self._changes:
                self._state_locked(day)
            return list(self._changes[day])

    def changes_between(self, start: date, end: date) -> list[KvkChange]:
        """Events of the days ``start..end`` (both inclusive), in order."""
        out: list[KvkChange] = []
        day = max(start, EPOCH + timedelta(days=1))
        while day <= end:
            out.extend(self.changes_on(day))
            day += timedelta(days=1)
        return out

    def zorgaanbieders(self, day: date) -> list[Onderneming]:
        """Zorgaanbieders (with AGB-code) registered on ``day``."""
        return self.at(day).zorgaanbieders()

    # -- state machinery

    def _state_locked(self, day: date) -> tuple[KvkState, _Numbers]:
        if day <= EPOCH:
            state, numbers = self._base_locked()
            return (state if day == EPOCH else replace(state, as_of=day, changes=[], _vestigingen=None)), numbers
        cached = self._cache.get(day)
        if cached is not None:
            self._cache.move_to_end(day)
            return cached
        earlier = [d for d in self._cache if d < day]
        state, numbers = self._cache[max(earlier)] if earlier else self._base_locked()
        while state.as_of < day:
            state, numbers = self._step(state, numbers)
            self._changes[state.as_of] = list(state.changes)
        self._cache[day] = (state, numbers)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return state, numbers

    def _base_locked(self) -> tuple[KvkState, _Numbers]:
        if self._base is not None:
            return self._base
        rnd = random.Random(f"kvk-base|{self.seed}|{self.gemeentecode}")
        numbers = _Numbers(self.seed, self.gemeentecode)
        builder = _Builder(self._pool, numbers, self.plaats)
        ondernemingen: dict[str, Onderneming] = {}
        for index in range(self.n_base):
            start = _historic_start(rnd)
            onderneming = builder.onderneming(rnd, start, start, zorg=index < self.n_zorgaanbieders)
            ondernemingen[onderneming.kvk_nummer] = onderneming
        self._base = (KvkState(as_of=EPOCH, ondernemingen=ondernemingen, changes=[]), numbers.copy())
        return self._base

    def _step(self, state: KvkState, numbers: _Numbers) -> tuple[KvkState, _Numbers]:
        """Apply the events of the day after ``state.as_of``."""
        day = state.as_of + timedelta(days=1)
        rnd = random.Random(f"kvk-day|{self.seed}|{self.gemeentecode}|{day.isoformat()}")
        numbers = numbers.copy()
        builder = _Builder(self._pool, numbers, self.plaats)
        ondernemingen = dict(state.ondernemingen)
        active = [k for k, o in ondernemingen.items() if o.actief_op(state.as_of)]
        n = len(active)
        changes: list[KvkChange] = []

        def record(kind: str, kvk_nummer: str, vestigingsnummer: str | None, **detail) -> None:
            changes.append(KvkChange(day, kind, kvk_nummer, vestigingsnummer, len(changes), detail))

        for _ in range(_poisson(rnd, max(NEW_FLOOR, n * NEW_PER_YEAR / 365))):
            onderneming = builder.onderneming(rnd, day, day, zorg=rnd.random() < 0.05)
            ondernemingen[onderneming.kvk_nummer] = onderneming
            record("registratie", onderneming.kvk_nummer, onderneming.hoofdvestiging.vestigingsnummer,
                   rechtsvorm=onderneming.rechtsvorm)
        touched: set[str] = set()
        for _ in range(_poisson(rnd, max(MOVE_FLOOR, n * MOVE_PER_YEAR / 365))):
            candidates = [k for k in active if k not in touched]
            if not candidates:
                break
            kvk_nummer = rnd.choice(candidates)
            touched.add(kvk_nummer)
            onderneming = ondernemingen[kvk_nummer]
            moving = rnd.choice([v for v in onderneming.vestigingen if v.datum_einde is None])
            use = _BY_CODE[moving.sbi_activiteiten[0].sbi_code].gebruiksdoel
            new_adres = self._pool.pick(rnd, use, at_home=onderneming.rechtsvorm == "Eenmanszaak" and rnd.random() < 0.5)
            if new_adres == moving.adres:
                continue
            moved = replace(moving, adres=new_adres)
            ondernemingen[kvk_nummer] = replace(onderneming, vestigingen=tuple(
                moved if v.vestigingsnummer == moving.vestigingsnummer else v for v in onderneming.vestigingen))
            record("adreswijziging", kvk_nummer, moving.vestigingsnummer,
                   van=moving.adres.nummeraanduiding_id, naar=new_adres.nummeraanduiding_id)
        for _ in range(_poisson(rnd, max(END_FLOOR, n * END_PER_YEAR / 365))):
            candidates = [k for k in active if k not in touched]
            if not candidates:
                break
            kvk_nummer = rnd.choice(candidates)
            touched.add(kvk_nummer)
            onderneming = ondernemingen[kvk_nummer]
            ondernemingen[kvk_nummer] = replace(
                onderneming, datum_einde=day,
                vestigingen=tuple(v if v.datum_einde else replace(v, datum_einde=day) for v in onderneming.vestigingen))
            record("uitschrijving", kvk_nummer, None)
        return KvkState(as_of=day, ondernemingen=ondernemingen, changes=changes), numbers


def iter_vestigingen(ondernemingen: Iterable[Onderneming]) -> Iterable[Vestiging]:
    """Every vestiging of ``ondernemingen``, hoofdvestiging first per onderneming."""
    for onderneming in ondernemingen:
        yield from onderneming.vestigingen
