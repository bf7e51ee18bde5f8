"""iWmo and iJw (release 3.2) message traffic of the demo municipality, day by day.

The gemeente and its zorgaanbieders exchange iStandaarden messages about Wmo
ondersteuning and jeugdhulp. This module simulates that traffic for the demo world
and writes each day's messages into the drop zones ``<dropzone>/iwmo/`` and
``<dropzone>/ijw/``, one message per file::

    <BerichtCode>_<Afzender>_<Identificatie>_<YYYYMMDD>.xml

``BerichtCode`` is the header element (414 = WMO301, 436 = JW301, ...), ``Afzender``
the header Afzender (gemeentecode or AGB-code), ``Identificatie`` the message's own
identification (the ``BerichtIdentificatie`` of a heenbericht, the
``IdentificatieRetour`` of a retourbericht) and the date is the Dagtekening.
About one heenbericht in five arrives wrapped in a StUF-GGk ``Di01`` envelope
(``ggk0310``; the message base64-encoded in ``GGK:bericht``), as a gemeente that
receives its traffic through the Gemeentelijk Gegevensknooppunt sees it; which
ones is decided from the identification, so a rerun wraps the same ones.

**Lifecycle of a case** (one client, one product, one aanbieder):

* the aanbieder asks for a toewijzing (``315`` verzoek om toewijzing; for Wmo with
  the gemeente's beschikkingnummer, for jeugdhulp with the verwijzer, often the
  huisarts);
* a few days later the gemeente assigns it (``301`` toewijzing with toewijzingnummer,
  product, omvang and period) or rejects it (``319`` antwoord, *verzoek afgewezen*);
* the aanbieder starts delivering (``305`` start levering);
* sometimes the aanbieder asks to change the omvang (``317`` verzoek om wijziging);
  the gemeente rejects it (``319``), first takes it *in onderzoek* (``319``) or
  honours it: a ``301`` that ends the old toewijzing and assigns a new one, followed
  by a ``307`` stop (reden 37) and a ``305`` start;
* delivery stops (``307``) at the planned end, earlier now and then, at the
  client's death (reden 02) or when the aanbieder is uitgeschreven from the KvK;
* every month each aanbieder declares what it delivered in the previous month
  (``323`` declaratie: one message per aanbieder, wet and month, one prestatie per
  toewijzing, amount = geleverd volume x tarief in eurocent).

For iJw every heenbericht is answered by its retourbericht (``302``, ``306``,
``308``, ``316``, ``318``, ``320``, ``325``). iWmo has retourberichten too, but the
published 3.2 schema set this project builds against has no WMO302/306/308/316/
318/320/325 XSDs, so no iWmo retourberichten are generated (a message nobody can
validate is worse than none).

**Clients** are residents of the demo world: Wmo clients mostly older residents
(huishoudelijke ondersteuning, begeleiding, dagbesteding, hulpmiddelen), Jeugd
clients residents of 4-15 years at intake whose case ends well before their 18th
birthday. Some households have a parent with Wmo begeleiding and a child with
jeugdhulp at the same time. **Aanbieders** are the zorgaanbieders of the demo KvK
register (their AGB-code in the messages, the KvK-nummer on the side).

**Determinism.** Cases are planned day by day from :data:`HISTORY_START`, each
day's intakes drawn from a random generator seeded by
``("sociaal-domein", seed, gemeentecode, day)`` against canonical candidate lists
(persons born on or before that day, ordered by birth date and BSN; zorgaanbieders
registered on that day, ordered by KvK-nummer). Those lists are the same whichever
later state of the world they are taken from, so the traffic of day ``D`` only
depends on the state of the world at ``D`` (deaths and uitschrijvingen up to ``D``
end cases) and never on files of earlier days. Files are written atomically and
are byte-identical on a rerun. Names and addresses in a message are those of the
state passed in, which is the state of the message's own day.

**Start.** The simulated history starts a year before the demo epoch, so the first
demo day already has a steady stream of clients. A normal call writes only the
messages of its own day. ``include_backlog=True`` (meant for the first delivery
day) also writes, with their original dates in the file names, the latest ``301``
and ``305`` of every toewijzing that is still current, so the lakehouse starts with
the toewijzingen the later messages refer to, without a flood of old traffic.

:func:`sociaal_domein_state` exposes the simulated toewijzingen and declaraties
(amount, dagtekening, wet, aanbieder AGB/KvK, product) so that other generators,
such as the financial ledger, can book the same spending.
"""
from __future__ import annotations

import base64
import calendar
import hashlib
import math
import random
import threading
import uuid
from bisect import bisect_right
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Callable

from lxml import etree

from demo_gemeente.generator import EPOCH, age_in_years
from demo_gemeente.delivery import write_atomic
from demo_gemeente.model import Municipality, Person

IWMO_SOURCE = "iwmo"
IJW_SOURCE = "ijw"
WMO = "wmo"
JEUGD = "jw"

HISTORY_START = EPOCH - timedelta(days=365)
"""First day of simulated traffic; earlier days have none."""

# New cases per day in a town of 3,000 inhabitants (scaled linearly with the population).
# With cases lasting 3-12 months this gives some 60 Wmo and 20 Jeugd clients at any time,
# in line with CBS (about 6% of inhabitants with Wmo maatwerk, 1 in 10 young people with jeugdhulp,
# of which only a part through this kind of contracted care).
WMO_INTAKES_PER_DAY_PER_3000 = 0.3
JEUGD_INTAKES_PER_DAY_PER_3000 = 0.18
GEZIN_SHARE = 0.2  # share of Jeugd intakes where a parent gets Wmo begeleiding at the same time
ENVELOPE_SHARE = 5  # one in this many heenberichten arrives in a StUF-GGk envelope
MAX_CASE_DAYS = 480  # intake -> last message of a case (declaraties included), an upper bound

# XSD versions the release 3.2 schemas declare (appinfo BerichtXsdVersie / BasisschemaXsdVersie).
_XSD_VERSIE = {WMO: ("1.0.0", "1.0.0"), JEUGD: ("0.1.0", "0.1.0")}
_NS_BASIS = {WMO: "http://www.istandaarden.nl/iwmo/3_2/basisschema/schema",
             JEUGD: "http://www.istandaarden.nl/ijw/3_2/basisschema/schema"}
_PREFIX_BASIS = {WMO: "iwmo", JEUGD: "ijw"}
_PREFIX_BERICHT = {WMO: "wmo", JEUGD: "jw"}

# BerichtCode per message type (the XSDs fix one value each).
BERICHTCODES: dict[tuple[str, str], str] = {
    (WMO, "301"): "414", (WMO, "305"): "418", (WMO, "307"): "420", (WMO, "315"): "444",
    (WMO, "317"): "480", (WMO, "319"): "482", (WMO, "323"): "484",
    (JEUGD, "301"): "436", (JEUGD, "302"): "437", (JEUGD, "305"): "438", (JEUGD, "306"): "439",
    (JEUGD, "307"): "440", (JEUGD, "308"): "441", (JEUGD, "315"): "446", (JEUGD, "316"): "447",
    (JEUGD, "317"): "486", (JEUGD, "318"): "487", (JEUGD, "319"): "488", (JEUGD, "320"): "489",
    (JEUGD, "323"): "490", (JEUGD, "325"): "491",
}
_RETOUR_OF = {"301": "302", "305": "306", "307": "308", "315": "316", "317": "318", "319": "320", "323": "325"}

# RedenBeeindiging: the code lists of iWmo and iJw differ.
_REDEN_VOLGENS_PLAN = {WMO: "19", JEUGD: "31"}
_REDEN_DOOR_CLIENT = {WMO: "21", JEUGD: "32"}
_REDEN_DOOR_AANBIEDER = {WMO: "22", JEUGD: "33"}
_REDEN_OVERLIJDEN = "02"
_REDEN_WIJZIGINGSVERZOEK = "37"

# RetourCodes (iJw basisschema): 0200 "geen opmerking", 8001 "declaratie is volledig toegewezen".
RETOURCODE_GEEN_OPMERKING = "0200"
RETOURCODE_DECLARATIE_TOEGEWEZEN = "8001"


@dataclass(frozen=True, slots=True)
class Product:
    """A product of the gemeente's productcodelijst with its contracted tarief."""

    wet: str
    categorie: str  # LDT_ProductCategorie
    code: str  # LDT_ProductCode (gemeente-specific, 5 characters)
    omschrijving: str
    eenheid: str  # LDT_Eenheid
    frequentie: str  # LDT_Frequentie
    volume: tuple[int, int]  # range of the assigned volume per frequentie
    tarief: int  # eurocent per eenheid
    duur_maanden: tuple[int, int]  # range of the toewijzing period
    aanbieder_sbi: tuple[str, ...]  # SBI codes of aanbieders that deliver it, preferred in order
    weight: float


PRODUCTS: tuple[Product, ...] = (
    Product(WMO, "01", "01A01", "Hulp bij het huishouden", "04", "2", (2, 4), 3250, (6, 12), ("88101", "8730"), 45),
    Product(WMO, "02", "02A01", "Individuele begeleiding", "04", "2", (1, 4), 6480, (4, 12), ("88101", "8720"), 25),
    Product(WMO, "07", "07A01", "Dagbesteding", "16", "2", (1, 4), 5150, (6, 12), ("8720", "8710", "8730"), 15),
    Product(WMO, "11", "11A01", "Rolstoel (verstrekking)", "82", "6", (1, 1), 148000, (3, 4), ("88101", "8710"), 8),
    Product(WMO, "03", "03A01", "Persoonlijke verzorging", "04", "2", (1, 3), 5520, (3, 9), ("88101", "8730"), 7),
    Product(JEUGD, "45", "45A01", "Jeugdhulp ambulant individueel", "04", "4", (4, 12), 9840, (3, 9), ("8899", "8720"), 55),
    Product(JEUGD, "54", "54A01", "Jeugd-ggz behandeling", "04", "4", (3, 8), 11520, (3, 9), ("8720", "8899"), 25),
    Product(JEUGD, "41", "41A01", "Dagbehandeling", "16", "2", (2, 5), 8450, (3, 6), ("8720", "8899"), 15),
    Product(JEUGD, "43", "43A01", "Jeugdhulp verblijf incl. behandeling", "14", "1", (1, 1), 23800, (3, 6), ("8720",), 5),
)
_BEGELEIDING = next(p for p in PRODUCTS if p.code == "02A01")

# Age bands of Wmo clients at intake, with weights (most clients are older residents).
_WMO_AGE_BANDS = (((18, 64), 22), ((65, 79), 40), ((80, 105), 38))
_JEUGD_AGES = (4, 15)


# --------------------------------------------------------------------------- the simulated cases


@dataclass(frozen=True, slots=True)
class Aanbieder:
    """A zorgaanbieder as the messages know it (AGB-code) with its KvK registration."""

    agb_code: str
    kvk_nummer: str
    naam: str
    sbi_code: str
    datum_einde: date | None


@dataclass(slots=True)
class Toewijzing:
    """One assigned product (``ToegewezenProduct``) and what happened to it."""

    wet: str
    nummer: int
    client_bsn: str
    aanbieder: Aanbieder
    product: Product
    volume: int
    toewijzingsdatum: date  # day of the 301 that assigned it
    ingangsdatum: date
    einddatum: date  # as assigned; an ended toewijzing gets the new end here
    referentie_aanbieder: str
    beschikkingnummer: int | None
    start_levering: date | None = None
    stop_levering: date | None = None  # last day of delivery
    reden_wijziging: str | None = None

    def geleverd_op(self, day: date) -> bool:
        """True when the aanbieder delivered on ``day``."""
        if self.start_levering is None or day < self.start_levering:
            return False
        end = self.stop_levering or self.einddatum
        return day <= min(end, self.einddatum)

    def levering_periode(self) -> tuple[date, date] | None:
        """First and last day of delivery, or None when delivery never started."""
        if self.start_levering is None:
            return None
        end = min(self.stop_levering or self.einddatum, self.einddatum)
        return (self.start_levering, end) if end >= self.start_levering else None


@dataclass(frozen=True, slots=True)
class Prestatie:
    """One line of a declaratie: what was delivered on one toewijzing in one month."""

    client_bsn: str
    toewijzing_nummer: int
    product: Product
    begindatum: date
    einddatum: date
    volume: int
    bedrag: int  # eurocent

    @property
    def referentie(self) -> str:
        return f"{self.toewijzing_nummer}{self.begindatum:%y%m}"


@dataclass(frozen=True, slots=True)
class Declaratie:
    """One monthly declaratie (``323``) of an aanbieder under one wet."""

    wet: str
    aanbieder: Aanbieder
    declaratienummer: str
    periode_begin: date
    periode_eind: date
    dagtekening: date
    prestaties: tuple[Prestatie, ...]

    @property
    def totaal_bedrag(self) -> int:
        """Sum of the prestaties in eurocent."""
        return sum(p.bedrag for p in self.prestaties)

    @property
    def bedrag_euro(self) -> Decimal:
        """The total in euro, two decimals (for bookkeeping)."""
        return (Decimal(self.totaal_bedrag) / 100).quantize(Decimal("0.01"))


@dataclass(slots=True)
class Bericht:
    """A planned message: its day, type, parties and a function that renders its body."""

    day: date
    wet: str
    kind: str  # "301", "302", ...
    afzender: str
    ontvanger: str
    identificatie: str
    render: Callable[["_Context"], etree._Element]
    toewijzingen: tuple[int, ...] = ()  # toewijzingnummers the message is about (for the backlog)
    retour_of: "Bericht | None" = None
    declaratie: "Declaratie | None" = None  # the declaratie a 323 carries (its 325 answers it)

    @property
    def is_retour(self) -> bool:
        return self.retour_of is not None

    @property
    def berichtcode(self) -> str:
        return BERICHTCODES[(self.wet, self.kind)]

    @property
    def file_name(self) -> str:
        return f"{self.berichtcode}_{self.afzender}_{self.identificatie}_{self.day:%Y%m%d}.xml"


@dataclass
class SociaalDomeinState:
    """The simulated sociaal-domein traffic up to and including ``until``. Treat as read-only.

    ``toewijzingen`` holds every toewijzing assigned on or before ``until`` (by
    toewijzingnummer); ``declaraties`` every declaratie with a dagtekening on or before
    ``until``, oldest first; ``clients`` maps (wet, BSN) to the toewijzingnummers.
    """

    until: date
    gemeentecode: str
    toewijzingen: dict[int, Toewijzing]
    declaraties: list[Declaratie]
    messages: list[Bericht] = field(repr=False, default_factory=list)

    def clients(self, wet: str) -> set[str]:
        """BSNs of everybody that ever had a toewijzing under ``wet``."""
        return {t.client_bsn for t in self.toewijzingen.values() if t.wet == wet}

    def declaratie_regels(self) -> list[dict]:
        """The declaraties as plain rows for other generators (the XAF ledger), one per declaratie.

        The keys follow ``demo_gemeente.financien.write_xaf_deliveries(sociaal_domein_spending=...)``:
        ``amount`` (Decimal euro), ``date`` (the dagtekening), ``wet`` (``"wmo"`` or ``"jeugd"``),
        ``aanbieder_naam``, ``aanbieder_agb``, ``aanbieder_kvk``; and further ``declaratienummer``,
        ``periode_begin``, ``periode_eind``, ``bedrag_cent`` (int) and ``producten`` (product code
        -> eurocent).
        """
        rows = []
        for d in self.declaraties:
            per_product: dict[str, int] = defaultdict(int)
            for p in d.prestaties:
                per_product[p.product.code] += p.bedrag
            rows.append({
                "amount": d.bedrag_euro, "date": d.dagtekening, "wet": "wmo" if d.wet == WMO else "jeugd",
                "aanbieder_naam": d.aanbieder.naam, "aanbieder_agb": d.aanbieder.agb_code,
                "aanbieder_kvk": d.aanbieder.kvk_nummer, "declaratienummer": d.declaratienummer,
                "periode_begin": d.periode_begin, "periode_eind": d.periode_eind, "bedrag_cent": d.totaal_bedrag,
                "producten": dict(sorted(per_product.items())),
            })
        return rows


class _Ids:
    """Hands out BerichtIdentificaties: ``<yymmdd><wet 1|2><message type 2><sequence 3>`` (12 characters)."""

    def __init__(self) -> None:
        self._next: dict[tuple[date, str, str], int] = defaultdict(int)

    def new(self, day: date, wet: str, kind: str) -> str:
        key = (day, wet, kind)
        self._next[key] += 1
        return f"{day:%y%m%d}{1 if wet == WMO else 2}{kind[1:]}{self._next[key]:03d}"


def _poisson(rnd: random.Random, lam: float) -> int:
    """Knuth's method; ``lam`` stays small (well below one case a day)."""
    limit, k, product = math.exp(-lam), 0, rnd.random()
    while product > limit:
        k += 1
        product *= rnd.random()
    return k


def _add_months(day: date, months: int) -> date:
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


@dataclass(frozen=True)
class _CaseDraws:
    """Every random draw of one case, made at intake in a fixed order (see :meth:`_Planner._case`)."""

    gewenste_ingang: date
    antwoord: date
    afgewezen: bool
    reden_afwijzing: str
    duur: int
    volume: int
    start_lag: int
    start_msg_lag: int
    early_stop: bool
    early_fraction: float
    stop_msg_lag: int
    wijziging: bool
    wijziging_fraction: float
    wijziging_answer: str
    wijziging_volume: int
    lags: list[int]
    verwijzer_huisarts: bool
    huisarts: Aanbieder | None
    toewijzingstijd: str

    @classmethod
    def draw(cls, rnd: random.Random, intake: date, product: Product, huisartsen: list[Aanbieder]) -> "_CaseDraws":
        gewenste_ingang = intake + timedelta(days=rnd.randint(7, 21))
        antwoord = intake + timedelta(days=rnd.randint(2, 8))
        afgewezen = rnd.random() < 0.07
        reden_afwijzing = rnd.choice(("3", "4", "7"))
        duur = rnd.randint(*product.duur_maanden)
        volume = rnd.randint(*product.volume)
        start_lag, start_msg_lag = rnd.randint(0, 10), rnd.randint(1, 5)
        early_stop = rnd.random() < 0.1
        early_fraction = rnd.uniform(0.3, 0.8)
        stop_msg_lag = rnd.randint(1, 5)
        wijziging = rnd.random() < 0.18
        wijziging_fraction = rnd.uniform(0.25, 0.6)
        wijziging_answer = rnd.choices(("afgewezen", "onderzoek", "toegekend"), weights=(25, 20, 55))[0]
        wijziging_volume = max(1, volume + rnd.choice((-2, -1, 1, 2, 3)))
        lags = [rnd.randint(1, 6) for _ in range(4)]
        verwijzer_huisarts = rnd.random() < 0.6
        huisarts = rnd.choice(huisartsen) if huisartsen else None
        toewijzingstijd = f"{rnd.randint(8, 16):02d}:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}"
        return cls(gewenste_ingang, antwoord, afgewezen, reden_afwijzing, duur, volume, start_lag, start_msg_lag,
                   early_stop, early_fraction, stop_msg_lag, wijziging, wijziging_fraction, wijziging_answer,
                   wijziging_volume, lags, verwijzer_huisarts, huisarts, toewijzingstijd)


class _Planner:
    """Plans every case from HISTORY_START up to ``until`` and the messages they cause."""

    def __init__(self, muni: Municipality, until: date, aanbieders: list[Aanbieder], huisartsen: list[Aanbieder],
                 seed: int) -> None:
        self.muni = muni
        self.until = until
        self.seed = seed
        self.gemeente = muni.gemeentecode
        # The requested population at the epoch, not today's count: the rate must not depend on
        # the date the plan is made for.
        self.scale = max(muni.population or len(muni.residents()), 1) / 3000
        self.aanbieders = aanbieders
        self.huisartsen = huisartsen
        # Canonical candidate order: birth date, then BSN. Persons born on or before a day form
        # a prefix of this list that is the same in every later state of the world.
        self.people = sorted(muni.persons.values(), key=lambda p: (p.geboortedatum, p.bsn))
        self.birth_ordinals = [p.geboortedatum.toordinal() for p in self.people]
        self.ids = _Ids()
        self.messages: list[Bericht] = []
        self.toewijzingen: dict[int, Toewijzing] = {}
        self.busy_until: dict[tuple[str, str], date] = {}
        self.toewijzing_seq: dict[tuple[date, str], int] = defaultdict(int)
        self.referentie_seq: dict[str, int] = defaultdict(int)
        self.beschikking_seq = 0
        self.declaraties: list[Declaratie] = []
        self._aanbieder_start: dict[str, date] = {}

    # -- helpers

    def _alive_on(self, p: Person, day: date) -> bool:
        return p.geboortedatum <= day and (p.overlijdensdatum is None or p.overlijdensdatum > day)

    def _born_by(self, day: date) -> int:
        return bisect_right(self.birth_ordinals, day.toordinal())

    def _pick_person(self, rnd: random.Random, day: date, wet: str, ages: tuple[int, int]) -> Person | None:
        limit = self._born_by(day)
        if limit == 0:
            return None
        for _ in range(400):
            p = self.people[rnd.randrange(limit)]
            if not self._alive_on(p, day) or not ages[0] <= age_in_years(p.geboortedatum, day) <= ages[1]:
                continue
            if self.busy_until.get((wet, p.bsn), date.min) >= day:
                continue
            return p
        return None

    def _pick_aanbieder(self, rnd: random.Random, day: date, product: Product) -> Aanbieder | None:
        active = [a for a in self.aanbieders if self._aanbieder_active(a, day)]
        for sbi in product.aanbieder_sbi:
            preferred = [a for a in active if a.sbi_code == sbi]
            if preferred:
                return rnd.choice(preferred)
        return rnd.choice(active) if active else None

    def _aanbieder_active(self, a: Aanbieder, day: date) -> bool:
        start = self._aanbieder_start.get(a.agb_code, date.min)
        return start <= day and (a.datum_einde is None or a.datum_einde > day)

    def _new_toewijzingnummer(self, day: date, wet: str) -> int:
        self.toewijzing_seq[(day, wet)] += 1
        # <wet 1|2><yymmdd><sequence 2>: 9 digits, within LDT_Nummer (max 999999999).
        return int(f"{1 if wet == WMO else 2}{day:%y%m%d}{self.toewijzing_seq[(day, wet)]:02d}")

    def _new_referentie(self, aanbieder: Aanbieder, day: date) -> str:
        self.referentie_seq[aanbieder.agb_code] += 1
        return f"{aanbieder.agb_code}-{day:%y%m%d}-{self.referentie_seq[aanbieder.agb_code]:03d}"

    def _emit(self, day: date, wet: str, kind: str, van_gemeente: bool, aanbieder: Aanbieder,
              render: Callable, toewijzingen: tuple[int, ...] = (), declaratie: Declaratie | None = None
              ) -> Bericht | None:
        """Plan a heenbericht (and for iJw its retourbericht one or two days later)."""
        if day > self.until:
            return None
        afzender, ontvanger = (self.gemeente, aanbieder.agb_code) if van_gemeente else (aanbieder.agb_code, self.gemeente)
        message = Bericht(day, wet, kind, afzender, ontvanger, self.ids.new(day, wet, kind), render, toewijzingen,
                           declaratie=declaratie)
        self.messages.append(message)
        if wet == JEUGD:
            retour_day = day + timedelta(days=1 + _stable_int(message.identificatie) % 2)
            if retour_day <= self.until:
                retour_kind = _RETOUR_OF[kind]
                # A retourbericht copies the heenbericht's header (Afzender, Ontvanger, BerichtIdentificatie)
                # and adds its own IdentificatieRetour; only the declaratie-antwoord (325) is a message of
                # the gemeente with a header of its own.
                if retour_kind == "325":
                    afzender, ontvanger = ontvanger, afzender
                self.messages.append(Bericht(retour_day, wet, retour_kind, afzender, ontvanger,
                                              self.ids.new(retour_day, wet, retour_kind), _render_retour,
                                              toewijzingen, retour_of=message))
        return message

    # -- planning

    def plan(self, kvk_start: dict[str, date]) -> None:
        self._aanbieder_start = kvk_start
        day = HISTORY_START
        rates = {WMO: WMO_INTAKES_PER_DAY_PER_3000 * self.scale, JEUGD: JEUGD_INTAKES_PER_DAY_PER_3000 * self.scale}
        while day <= self.until:
            rnd = random.Random(f"sociaal-domein|{self.seed}|{self.gemeente}|{day.isoformat()}")
            for _ in range(_poisson(rnd, rates[WMO])):
                client = self._pick_person(rnd, day, WMO, self._wmo_ages(rnd))
                if client is not None:
                    self._case(rnd, day, WMO, client, self._choose_product(rnd, WMO))
            for _ in range(_poisson(rnd, rates[JEUGD])):
                child = self._pick_person(rnd, day, JEUGD, _JEUGD_AGES)
                if child is None:
                    continue
                self._case(rnd, day, JEUGD, child, self._choose_product(rnd, JEUGD))
                if rnd.random() < GEZIN_SHARE:
                    parent = self._parent_for_gezin(child, day)
                    if parent is not None:
                        self._case(rnd, day, WMO, parent, _BEGELEIDING)
            day += timedelta(days=1)
        self._declaraties()

    @staticmethod
    def _wmo_ages(rnd: random.Random) -> tuple[int, int]:
        bands = [b for b, _ in _WMO_AGE_BANDS]
        return rnd.choices(bands, weights=[w for _, w in _WMO_AGE_BANDS])[0]

    @staticmethod
    def _choose_product(rnd: random.Random, wet: str) -> Product:
        options = [p for p in PRODUCTS if p.wet == wet]
        return rnd.choices(options, weights=[p.weight for p in options])[0]

    def _parent_for_gezin(self, child: Person, day: date) -> Person | None:
        for bsn in sorted(child.ouder_bsns):
            parent = self.muni.persons.get(bsn)
            if parent is not None and self._alive_on(parent, day) and age_in_years(parent.geboortedatum, day) >= 18 \
                    and self.busy_until.get((WMO, bsn), date.min) < day:
                return parent
        return None

    def _end_of_life(self, client: Person, aanbieder: Aanbieder) -> tuple[date, str] | None:
        """The day a case must end early for reasons outside the plan, known in this state of the world."""
        ends = []
        if client.overlijdensdatum is not None:
            ends.append((client.overlijdensdatum, _REDEN_OVERLIJDEN))
        if aanbieder.datum_einde is not None:
            ends.append((aanbieder.datum_einde - timedelta(days=1), "aanbieder"))
        return min(ends) if ends else None

    def _case(self, rnd: random.Random, intake: date, wet: str, client: Person, product: Product) -> None:
        aanbieder = self._pick_aanbieder(rnd, intake, product)
        if aanbieder is None:
            return
        # Every draw is made here, before anything depends on this state of the world, so the
        # random stream of the day is the same whichever later date the plan is made for.
        huisartsen = [h for h in self.huisartsen if self._aanbieder_active(h, intake)]
        draws = _CaseDraws.draw(rnd, intake, product, huisartsen)

        planned_end = _add_months(draws.gewenste_ingang, draws.duur) - timedelta(days=1)
        self.busy_until[(wet, client.bsn)] = planned_end + timedelta(days=30)
        referentie = self._new_referentie(aanbieder, intake)
        beschikkingnummer = None
        if wet == WMO:
            self.beschikking_seq += 1
            beschikkingnummer = int(f"{intake:%y}{self.beschikking_seq:06d}")
        verwijzer = ("02", draws.huisarts) if wet == JEUGD and draws.verwijzer_huisarts and draws.huisarts else ("01", None)
        aanvraag = {"referentie": referentie, "beschikkingnummer": beschikkingnummer, "product": product,
                    "ingang": draws.gewenste_ingang, "einde": planned_end, "volume": draws.volume,
                    "verwijzer": verwijzer, "beschikking_ingang": intake}
        cutoff = self._end_of_life(client, aanbieder)
        cutoff_day = cutoff[0] if cutoff else date.max

        if intake > cutoff_day:
            return
        self._emit(intake, wet, "315", False, aanbieder, lambda ctx: _render_315(ctx, client.bsn, [aanvraag]))
        t = self._answer_aanvraag(draws, wet, client, aanbieder, product, referentie, beschikkingnummer, planned_end,
                                  cutoff_day)
        if t is None:
            return
        start = t.ingangsdatum + timedelta(days=draws.start_lag)
        if start > cutoff_day or start > t.einddatum:
            return
        t.start_levering = start
        started = _snapshot(t)
        self._emit(start + timedelta(days=draws.start_msg_lag), wet, "305", False, aanbieder,
                   lambda ctx: _render_305_307(ctx, "305", client.bsn, [started]), (t.nummer,))
        current, verzoek_gedaan = self._wijziging(draws, t, client, product, planned_end, cutoff_day)
        self._stop_levering(draws, current, client, referentie, cutoff, verzoek_gedaan)

    def _answer_aanvraag(self, draws: "_CaseDraws", wet: str, client: Person, aanbieder: Aanbieder, product: Product,
                         referentie: str, beschikkingnummer: int | None, planned_end: date,
                         cutoff_day: date) -> Toewijzing | None:
        """The gemeente's answer to a 315: a 319 refusal (None) or a 301 with the new toewijzing."""
        antwoord = draws.antwoord
        if antwoord > cutoff_day:
            return None
        if draws.afgewezen:
            self._emit(antwoord, wet, "319", True, aanbieder,
                       lambda ctx: _render_319(ctx, referentie, "1", draws.reden_afwijzing))
            return None
        ingang = max(draws.gewenste_ingang, antwoord)
        t = Toewijzing(wet, self._new_toewijzingnummer(antwoord, wet), client.bsn, aanbieder, product, draws.volume,
                       antwoord, ingang, planned_end, referentie, beschikkingnummer)
        if antwoord <= self.until:
            self.toewijzingen[t.nummer] = t
        snapshot_301 = _snapshot(t)
        self._emit(antwoord, wet, "301", True, aanbieder,
                   lambda ctx: _render_301(ctx, client.bsn, [snapshot_301], draws.toewijzingstijd), (t.nummer,))
        return t

    def _wijziging(self, draws: "_CaseDraws", t: Toewijzing, client: Person, product: Product, planned_end: date,
                   cutoff_day: date) -> tuple[Toewijzing, bool]:
        """A 317 asking for another omvang, if the case has one: (the toewijzing now current, whether one was asked).

        The gemeente refuses it, investigates first (319 "in onderzoek") or honours it with a new toewijzing.
        """
        wet, aanbieder, start = t.wet, t.aanbieder, t.start_levering
        wijziging_volume, lags = draws.wijziging_volume, draws.lags
        span = (planned_end - start).days
        if not (draws.wijziging and span >= 120 and product.frequentie != "6"):
            return t, False
        w = start + timedelta(days=int(span * draws.wijziging_fraction))
        gewenst = w + timedelta(days=14)
        answer_day = w + timedelta(days=lags[0])
        if w > cutoff_day:
            return t, False
        ref_w = self._new_referentie(aanbieder, w)
        # The 317 renders the final ``gewenst`` (late binding), as the honoured wijziging assigns it.
        self._emit(w, wet, "317", False, aanbieder,
                   lambda ctx: _render_317(ctx, client.bsn, ref_w, t.nummer, gewenst, planned_end,
                                           product, wijziging_volume))
        if draws.wijziging_answer == "afgewezen":
            if answer_day <= cutoff_day:
                self._emit(answer_day, wet, "319", True, aanbieder, lambda ctx: _render_319(ctx, ref_w, "1", "2"))
            return t, True
        if draws.wijziging_answer == "onderzoek" and answer_day <= cutoff_day:
            self._emit(answer_day, wet, "319", True, aanbieder, lambda ctx: _render_319(ctx, ref_w, "2", None))
            answer_day += timedelta(days=7 + lags[1])
        gewenst = max(gewenst, answer_day + timedelta(days=1))
        # A 301 after ``until`` has not happened yet: the toewijzing stays as it is.
        if answer_day <= min(cutoff_day, self.until) and gewenst <= planned_end:
            return self._honour_wijziging(t, answer_day, gewenst, wijziging_volume, lags, draws.toewijzingstijd,
                                          client.bsn), True
        return t, True

    def _stop_levering(self, draws: "_CaseDraws", current: Toewijzing, client: Person, referentie: str,
                       cutoff: tuple[date, str] | None, verzoek_gedaan: bool) -> None:
        """The end, as a 307: a cut-off (death, aanbieder uitgeschreven), an early stop or the planned end."""
        wet = current.wet
        stop_day, reden = current.einddatum, _REDEN_VOLGENS_PLAN[wet]
        if draws.early_stop and not verzoek_gedaan:  # who asks for a change does not stop early as well
            early = current.start_levering + timedelta(days=int((current.einddatum - current.start_levering).days
                                                                * draws.early_fraction))
            stop_day, reden = early, _stable_choice(_REDEN_DOOR_CLIENT[wet], _REDEN_DOOR_AANBIEDER[wet], referentie)
        if cutoff is not None and cutoff[0] < stop_day:
            stop_day = cutoff[0]
            reden = _REDEN_OVERLIJDEN if cutoff[1] == _REDEN_OVERLIJDEN else _REDEN_DOOR_AANBIEDER[wet]
        if stop_day < current.start_levering:
            stop_day = current.start_levering
        current.stop_levering = stop_day
        message_day = stop_day + timedelta(days=draws.stop_msg_lag)
        if cutoff is not None and cutoff[1] == "aanbieder":
            message_day = min(message_day, cutoff[0] + timedelta(days=1))  # the aanbieder's last act
        final = _snapshot(current)
        self._emit(message_day, wet, "307", False, current.aanbieder,
                   lambda ctx: _render_305_307(ctx, "307", client.bsn, [final], reden=reden), (current.nummer,))

    def _honour_wijziging(self, old: Toewijzing, answer_day: date, gewenst: date, new_volume: int, lags: list[int],
                          toewijzingstijd: str, bsn: str) -> Toewijzing:
        """The gemeente honours a 317: it ends ``old`` and assigns the new omvang from ``gewenst``."""
        new = Toewijzing(old.wet, self._new_toewijzingnummer(answer_day, old.wet), old.client_bsn, old.aanbieder,
                         old.product, new_volume, answer_day, gewenst, old.einddatum, old.referentie_aanbieder,
                         old.beschikkingnummer)
        old.einddatum = gewenst - timedelta(days=1)
        old.reden_wijziging = "12"  # geïnitieerd door de aanbieder
        old.stop_levering = old.einddatum
        if answer_day <= self.until:
            self.toewijzingen[new.nummer] = new
        pair = [_snapshot(old), _snapshot(new)]
        self._emit(answer_day, old.wet, "301", True, old.aanbieder,
                   lambda ctx: _render_301(ctx, bsn, pair, toewijzingstijd), (old.nummer, new.nummer))
        stopped = _snapshot(old)
        self._emit(gewenst + timedelta(days=lags[2]), old.wet, "307", False, old.aanbieder,
                   lambda ctx: _render_305_307(ctx, "307", bsn, [stopped], reden=_REDEN_WIJZIGINGSVERZOEK),
                   (old.nummer,))
        new.start_levering = gewenst
        started = _snapshot(new)
        self._emit(gewenst + timedelta(days=lags[3]), old.wet, "305", False, old.aanbieder,
                   lambda ctx: _render_305_307(ctx, "305", bsn, [started]), (new.nummer,))
        return new

    def _declaraties(self) -> None:
        """One 323 per aanbieder, wet and month with deliveries, sent early in the next month."""
        by_group: dict[tuple[str, str, date], list[Prestatie]] = defaultdict(list)
        aanbieder_by_agb = {}
        for t in self.toewijzingen.values():
            periode = t.levering_periode()
            if periode is None:
                continue
            aanbieder_by_agb[t.aanbieder.agb_code] = t.aanbieder
            month = periode[0].replace(day=1)
            while month <= periode[1]:
                begin, end = max(periode[0], month), min(periode[1], _month_end(month))
                volume = _geleverd_volume(t, begin, end)
                if volume > 0:
                    by_group[(t.wet, t.aanbieder.agb_code, month)].append(
                        Prestatie(t.client_bsn, t.nummer, t.product, begin, end, volume, volume * t.product.tarief))
                month = _add_months(month, 1)
        declaraties = []
        for (wet, agb, month), prestaties in sorted(by_group.items()):
            aanbieder = aanbieder_by_agb[agb]
            dagtekening = _month_end(month) + timedelta(days=3 + _stable_int(f"{wet}|{agb}|{month}") % 10)
            if dagtekening > self.until:
                continue
            prestaties.sort(key=lambda p: (p.client_bsn, p.toewijzing_nummer))
            declaratie = Declaratie(wet, aanbieder, f"D{month:%y%m}{agb[-4:]}{1 if wet == WMO else 2}", month,
                                    _month_end(month), dagtekening, tuple(prestaties))
            declaraties.append(declaratie)
            self._emit(dagtekening, wet, "323", False, aanbieder, lambda ctx, d=declaratie: _render_323(ctx, d),
                       tuple(sorted({p.toewijzing_nummer for p in prestaties})), declaratie=declaratie)
        self.declaraties = sorted(declaraties, key=lambda d: (d.dagtekening, d.wet, d.aanbieder.agb_code))


def _stable_choice(a: str, b: str, key: str) -> str:
    """Pick ``a`` or ``b`` from a key (no random draw, so the day's random stream is unaffected)."""
    return a if _stable_int(key) % 2 == 0 else b


def _snapshot(t: Toewijzing) -> Toewijzing:
    """A copy of ``t`` as it is now: messages show the toewijzing as it was when they were sent."""
    return Toewijzing(t.wet, t.nummer, t.client_bsn, t.aanbieder, t.product, t.volume, t.toewijzingsdatum,
                      t.ingangsdatum, t.einddatum, t.referentie_aanbieder, t.beschikkingnummer, t.start_levering,
                      t.stop_levering, t.reden_wijziging)


def _geleverd_volume(t: Toewijzing, begin: date, end: date) -> int:
    """Volume delivered in [begin, end] (one month at most) under the toewijzing's omvang."""
    days = (end - begin).days + 1
    freq = t.product.frequentie
    if freq == "1":
        return t.volume * days
    if freq == "2":
        return round(t.volume * days / 7)
    if freq == "4":
        return round(t.volume * days / calendar.monthrange(begin.year, begin.month)[1])
    # "6": the whole volume once, in the month delivery started.
    return t.volume if begin == t.start_levering else 0


# --------------------------------------------------------------------------- rendering


class _Context:
    """What rendering needs: the world of the message's day and the message itself."""

    def __init__(self, muni: Municipality, message: Bericht) -> None:
        self.muni = muni
        self.message = message
        self.wet = message.wet
        self.ns_basis = _NS_BASIS[self.wet]
        self.kind = message.kind
        prefix = f"{_PREFIX_BERICHT[self.wet]}{self.kind}"
        self.ns_bericht = (f"http://www.istandaarden.nl/{'iwmo' if self.wet == WMO else 'ijw'}/3_2/"
                           f"{prefix}/schema")
        self.nsmap = {_PREFIX_BASIS[self.wet]: self.ns_basis, prefix: self.ns_bericht}

    def root(self) -> etree._Element:
        return etree.Element(f"{{{self.ns_bericht}}}Bericht", nsmap=self.nsmap)

    def el(self, parent: etree._Element, name: str, text: object = None) -> etree._Element:
        """A child in the message's own namespace."""
        child = etree.SubElement(parent, f"{{{self.ns_bericht}}}{name}")
        if text is not None:
            child.text = text if isinstance(text, str) else str(text)
        return child

    def basis(self, parent: etree._Element, name: str, text: object = None) -> etree._Element:
        """A child in the basisschema namespace (inside the CDT_ complex types)."""
        child = etree.SubElement(parent, f"{{{self.ns_basis}}}{name}")
        if text is not None:
            child.text = text if isinstance(text, str) else str(text)
        return child

    def person(self, bsn: str) -> Person:
        return self.muni.persons[bsn]


def _header(ctx: _Context, root: etree._Element, message: Bericht) -> etree._Element:
    header = ctx.el(root, "Header")
    ctx.el(header, "BerichtCode", message.berichtcode)
    ctx.el(header, "BerichtVersie", "3")
    ctx.el(header, "BerichtSubversie", "2")
    ctx.el(header, "Afzender", message.afzender)
    ctx.el(header, "Ontvanger", message.ontvanger)
    ident = ctx.el(header, "BerichtIdentificatie")
    ctx.basis(ident, "Identificatie", message.identificatie)
    ctx.basis(ident, "Dagtekening", message.day.isoformat())
    _xsd_versie(ctx, ctx.el(header, "XsdVersie"))
    return header


def _xsd_versie(ctx: _Context, parent: etree._Element) -> None:
    basis, bericht = _XSD_VERSIE[ctx.wet]
    ctx.basis(parent, "BasisschemaXsdVersie", basis)
    ctx.basis(parent, "BerichtXsdVersie", bericht)


_GESLACHT = {"M": "1", "V": "2"}


def _voorletters(voornamen: str) -> str | None:
    letters = "".join(part[0] for part in voornamen.split() if part and part[0].isalpha())[:6]
    return letters or None


def _client_basis(ctx: _Context, parent: etree._Element, person: Person, volledig: bool) -> None:
    """Bsn, Geboortedatum, Geslacht and Naam (CDT_VolledigeNaam or CDT_VerkorteNaam) of a client."""
    ctx.el(parent, "Bsn", person.bsn)
    geboorte = ctx.el(parent, "Geboortedatum")
    ctx.basis(geboorte, "Datum", person.geboortedatum.isoformat())
    ctx.el(parent, "Geslacht", _GESLACHT.get(person.geslacht, "0"))
    _naam(ctx, ctx.el(parent, "Naam"), person, volledig)


def _naam(ctx: _Context, naam: etree._Element, person: Person, volledig: bool) -> None:
    geslachtsnaam = ctx.basis(naam, "Geslachtsnaam")
    ctx.basis(geslachtsnaam, "Achternaam", person.geslachtsnaam)
    if person.voorvoegsel:
        ctx.basis(geslachtsnaam, "Voorvoegsel", person.voorvoegsel)
    ctx.basis(naam, "Voornamen", person.voornamen)
    voorletters = _voorletters(person.voornamen)
    if voorletters:
        ctx.basis(naam, "Voorletters", voorletters)
    if volledig:
        ctx.basis(naam, "NaamGebruik", "1")


def _contact(ctx: _Context, parent: etree._Element, person: Person) -> None:
    """A Contact of Soort 01 (BRP-adres) with the person's address in the world of the day."""
    contact = ctx.el(parent, "Contact")
    ctx.el(contact, "Soort", "01")
    na = ctx.muni.nummeraanduidingen.get(person.nummeraanduiding_id)
    if na is None:
        return
    adres = ctx.el(contact, "Adres")
    huis = ctx.basis(adres, "Huis")
    ctx.basis(huis, "Huisnummer", na.huisnummer)
    if na.huisletter:
        ctx.basis(huis, "Huisletter", na.huisletter)
    if na.huisnummertoevoeging:
        ctx.basis(huis, "HuisnummerToevoeging", na.huisnummertoevoeging)
    ctx.basis(adres, "Postcode", na.postcode)
    straat = ctx.muni.openbare_ruimten.get(na.openbare_ruimte_id)
    if straat is not None:
        ctx.basis(adres, "Straatnaam", straat.naam[:24])
    woonplaats = ctx.muni.woonplaatsen.get(na.woonplaats_id)
    if woonplaats is not None:
        ctx.basis(adres, "Plaatsnaam", woonplaats.naam[:24])
    ctx.basis(adres, "LandCode", "NL")


def _product(ctx: _Context, parent: etree._Element, product: Product) -> None:
    node = ctx.el(parent, "Product")
    ctx.basis(node, "Categorie", product.categorie)
    ctx.basis(node, "Code", product.code)


def _omvang(ctx: _Context, parent: etree._Element, product: Product, volume: int) -> None:
    node = ctx.el(parent, "Omvang")
    ctx.basis(node, "Volume", volume)
    ctx.basis(node, "Eenheid", product.eenheid)
    ctx.basis(node, "Frequentie", product.frequentie)


def _render_315(ctx: _Context, bsn: str, aanvragen: list[dict]) -> etree._Element:
    root = ctx.root()
    _header(ctx, root, ctx.message)
    client = ctx.el(root, "Client")
    _client_basis(ctx, client, ctx.person(bsn), volledig=False)
    producten = ctx.el(client, "AangevraagdeProducten")
    for a in aanvragen:
        node = ctx.el(producten, "AangevraagdProduct")
        ctx.el(node, "ReferentieAanbieder", a["referentie"])
        if a["beschikkingnummer"] is not None:
            ctx.el(node, "BeschikkingNummer", a["beschikkingnummer"])
        _product(ctx, node, a["product"])
        if a["beschikkingnummer"] is not None:
            ctx.el(node, "BeschikkingIngangsdatum", a["beschikking_ingang"].isoformat())
        ctx.el(node, "ToewijzingIngangsdatum", a["ingang"].isoformat())
        ctx.el(node, "ToewijzingEinddatum", a["einde"].isoformat())
        _omvang(ctx, node, a["product"], a["volume"])
        verwijzer = ctx.el(node, "Verwijzer")
        type_, huisarts = a["verwijzer"]
        ctx.basis(verwijzer, "Type", type_)
        if huisarts is not None:
            ctx.basis(verwijzer, "Naam", huisarts.naam[:64])
            ctx.basis(verwijzer, "ZorgverlenerCode", huisarts.agb_code)
        else:
            ctx.basis(verwijzer, "Naam", f"Gemeente {ctx.muni.naam}"[:64])
        ctx.el(node, "Raamcontract", "2")
    return root


def _render_301(ctx: _Context, bsn: str, toewijzingen: list[Toewijzing], toewijzingstijd: str) -> etree._Element:
    root = ctx.root()
    _header(ctx, root, ctx.message)
    client = ctx.el(root, "Client")
    person = ctx.person(bsn)
    _client_basis(ctx, client, person, volledig=True)
    if ctx.wet == JEUGD:
        parents = [ctx.muni.persons[b] for b in sorted(person.ouder_bsns)
                   if b in ctx.muni.persons and ctx.muni.persons[b].overlijdensdatum is None]
        if parents:
            relaties = ctx.el(client, "Relaties")
            for nummer, parent in enumerate(parents[:2], start=1):
                relatie = ctx.el(relaties, "Relatie")
                ctx.el(relatie, "Nummer", nummer)
                ctx.el(relatie, "Volgorde", nummer)
                ctx.el(relatie, "Soort", "10")  # ouder
                geboorte = ctx.el(relatie, "Geboortedatum")
                ctx.basis(geboorte, "Datum", parent.geboortedatum.isoformat())
                ctx.el(relatie, "Geslacht", _GESLACHT.get(parent.geslacht, "0"))
                _naam(ctx, ctx.el(relatie, "Naam"), parent, volledig=True)
                _contact(ctx, relatie, parent)
    _contact(ctx, ctx.el(client, "Contactgegevens"), person)
    producten = ctx.el(client, "ToegewezenProducten")
    for t in toewijzingen:
        node = ctx.el(producten, "ToegewezenProduct")
        ctx.el(node, "ToewijzingNummer", t.nummer)
        ctx.el(node, "ReferentieAanbieder", t.referentie_aanbieder)
        _product(ctx, node, t.product)
        ctx.el(node, "Toewijzingsdatum", t.toewijzingsdatum.isoformat())
        ctx.el(node, "Toewijzingstijd", toewijzingstijd)
        ctx.el(node, "Ingangsdatum", t.ingangsdatum.isoformat())
        ctx.el(node, "Einddatum", t.einddatum.isoformat())
        if t.reden_wijziging:
            ctx.el(node, "RedenWijziging", t.reden_wijziging)
        _omvang(ctx, node, t.product, t.volume)
    return root


def _render_305_307(ctx: _Context, kind: str, bsn: str, toewijzingen: list[Toewijzing],
                    reden: str | None = None) -> etree._Element:
    root = ctx.root()
    _header(ctx, root, ctx.message)
    client = ctx.el(root, "Client")
    _client_basis(ctx, client, ctx.person(bsn), volledig=False)
    producten = ctx.el(client, "StartProducten" if kind == "305" else "StopProducten")
    for t in toewijzingen:
        node = ctx.el(producten, "StartProduct" if kind == "305" else "StopProduct")
        ctx.el(node, "ToewijzingNummer", t.nummer)
        _product(ctx, node, t.product)
        ctx.el(node, "ToewijzingIngangsdatum", t.ingangsdatum.isoformat())
        ctx.el(node, "Begindatum", t.start_levering.isoformat())
        if kind == "307":
            ctx.el(node, "RedenBeeindiging", reden)
            ctx.el(node, "Einddatum", t.stop_levering.isoformat())
        ctx.el(node, "StatusAanlevering", "1")
    return root


def _render_317(ctx: _Context, bsn: str, referentie: str, nummer: int, gewenst: date, einde: date,
                product: Product, volume: int) -> etree._Element:
    root = ctx.root()
    _header(ctx, root, ctx.message)
    client = ctx.el(root, "Client")
    ctx.el(client, "Bsn", bsn)
    verzoek = ctx.el(client, "Verzoek")
    ctx.el(verzoek, "ReferentieAanbieder", referentie)
    ctx.el(verzoek, "RedenVerzoek", "1")  # verandering cliëntsituatie
    te_wijzigen = ctx.el(ctx.el(verzoek, "TeWijzigenProducten"), "TeWijzigenProduct")
    ctx.el(te_wijzigen, "ToewijzingNummer", nummer)
    ctx.el(te_wijzigen, "GewensteIngangsdatum", gewenst.isoformat())
    ctx.el(te_wijzigen, "Einddatum", einde.isoformat())
    _omvang(ctx, te_wijzigen, product, volume)
    return root


def _render_319(ctx: _Context, referentie: str, antwoord: str, reden: str | None) -> etree._Element:
    root = ctx.root()
    _header(ctx, root, ctx.message)
    node = ctx.el(root, "Antwoord")
    ctx.el(node, "ReferentieAanbieder", referentie)
    ctx.el(node, "VerzoekAntwoord", antwoord)
    if reden is not None:
        ctx.el(node, "RedenAfwijzingVerzoek", reden)
    return root


def _bedrag(ctx: _Context, parent: etree._Element, name: str, total_name: str, cents: int) -> None:
    node = ctx.el(parent, name)
    ctx.basis(node, total_name, cents)
    ctx.basis(node, "DebetCredit", "D")


def _render_323(ctx: _Context, declaratie: Declaratie) -> etree._Element:
    root = ctx.root()
    _header(ctx, root, ctx.message)
    node = ctx.el(root, "Declaratie")
    ctx.el(node, "DeclaratieNummer", declaratie.declaratienummer)
    periode = ctx.el(node, "DeclaratiePeriode")
    ctx.basis(periode, "Begindatum", declaratie.periode_begin.isoformat())
    ctx.basis(periode, "Einddatum", declaratie.periode_eind.isoformat())
    ctx.el(node, "DeclaratieDagtekening", declaratie.dagtekening.isoformat())
    _bedrag(ctx, node, "TotaalIngediendBedrag", "TotaalBedrag", declaratie.totaal_bedrag)
    clienten = ctx.el(node, "Clienten")
    by_client: dict[str, list[Prestatie]] = defaultdict(list)
    for p in declaratie.prestaties:
        by_client[p.client_bsn].append(p)
    for bsn, prestaties in by_client.items():
        client = ctx.el(clienten, "Client")
        ctx.el(client, "Bsn", bsn)
        lijst = ctx.el(client, "Prestaties")
        for p in prestaties:
            prestatie = ctx.el(lijst, "Prestatie")
            referentie = ctx.el(prestatie, "ProductReferentie")
            ctx.basis(referentie, "ReferentieNummer", p.referentie)
            ctx.el(prestatie, "ToewijzingNummer", p.toewijzing_nummer)
            ctx.el(prestatie, "ProductCategorie", p.product.categorie)
            ctx.el(prestatie, "ProductCode", p.product.code)
            product_periode = ctx.el(prestatie, "ProductPeriode")
            ctx.basis(product_periode, "Begindatum", p.begindatum.isoformat())
            ctx.basis(product_periode, "Einddatum", p.einddatum.isoformat())
            ctx.el(prestatie, "GeleverdVolume", p.volume)
            ctx.el(prestatie, "Eenheid", p.product.eenheid)
            ctx.el(prestatie, "ProductTarief", p.product.tarief)
            _bedrag(ctx, prestatie, "IngediendBedrag", "Bedrag", p.bedrag)
    return root


def _render_retour(ctx: _Context) -> etree._Element:
    """An iJw retourbericht that accepts its heenbericht without remarks.

    The header repeats the heenbericht's header and adds the retour's own identification;
    a declaratie (323) is answered with a DeclaratieAntwoord (325) that grants it in full.
    """
    retour, heen = ctx.message, ctx.message.retour_of
    root = ctx.root()
    header = ctx.el(root, "Header")
    ctx.el(header, "BerichtCode", retour.berichtcode)
    ctx.el(header, "BerichtVersie", "3")
    ctx.el(header, "BerichtSubversie", "2")
    if retour.kind == "325":
        # The declaratie-antwoord is a message of the gemeente in its own right.
        ctx.el(header, "Afzender", retour.afzender)
        ctx.el(header, "Ontvanger", retour.ontvanger)
        ident = ctx.el(header, "BerichtIdentificatie")
        ctx.basis(ident, "Identificatie", retour.identificatie)
        ctx.basis(ident, "Dagtekening", retour.day.isoformat())
        _xsd_versie(ctx, ctx.el(header, "XsdVersie"))
        declaratie_ident = ctx.el(header, "DeclaratieIdentificatie")
        ctx.basis(declaratie_ident, "Identificatie", heen.identificatie)
        ctx.basis(declaratie_ident, "Dagtekening", heen.day.isoformat())
        _xsd_versie(ctx, ctx.el(header, "XsdVersieDeclaratie"))
        ctx.el(ctx.el(header, "RetourCodes"), "RetourCode", RETOURCODE_GEEN_OPMERKING)
        declaratie = heen.declaratie
        if declaratie is not None:
            antwoord = ctx.el(root, "DeclaratieAntwoord")
            ctx.el(antwoord, "DeclaratieNummer", declaratie.declaratienummer)
            _bedrag(ctx, antwoord, "TotaalIngediendBedrag", "TotaalBedrag", declaratie.totaal_bedrag)
            _bedrag(ctx, antwoord, "TotaalToegekendBedrag", "TotaalBedrag", declaratie.totaal_bedrag)
            ctx.el(ctx.el(antwoord, "RetourCodes"), "RetourCode", RETOURCODE_DECLARATIE_TOEGEWEZEN)
        return root
    ctx.el(header, "Afzender", heen.afzender)
    ctx.el(header, "Ontvanger", heen.ontvanger)
    ident = ctx.el(header, "BerichtIdentificatie")
    ctx.basis(ident, "Identificatie", heen.identificatie)
    ctx.basis(ident, "Dagtekening", heen.day.isoformat())
    _xsd_versie(ctx, ctx.el(header, "XsdVersie"))
    ctx.el(header, "IdentificatieRetour", retour.identificatie)
    ctx.el(header, "DagtekeningRetour", retour.day.isoformat())
    _xsd_versie(ctx, ctx.el(header, "XsdVersieRetour"))
    ctx.el(ctx.el(header, "RetourCodes"), "RetourCode", RETOURCODE_GEEN_OPMERKING)
    return root

# --------------------------------------------------------------------------- envelope and files

_NS_STUF = "http://www.egem.nl/StUF/StUF0301"
_NS_GGK = "http://www.stufstandaarden.nl/sectormodel/ggk/0210"
_NS_XMIME = "http://www.w3.org/2005/05/xmlmime"


def _functie(message: Bericht) -> str:
    """The StUF-GGk functie of a message, e.g. ``WMO301`` or ``JW315``."""
    return f"{'WMO' if message.wet == WMO else 'JW'}{message.kind}"


def _is_enveloped(message: Bericht) -> bool:
    """About one in ENVELOPE_SHARE heenberichten travels in a StUF-GGk Di01 envelope; retourberichten never."""
    return not message.is_retour and _stable_int(f"ggk|{message.afzender}|{message.identificatie}") % ENVELOPE_SHARE == 0


def _envelope(message: Bericht, payload: bytes, gemeentenaam: str) -> bytes:
    """Wrap ``payload`` in a ggk0310 ``envelopHeenbericht-ggk_Di01`` (payload base64 in GGK:bericht)."""
    root = etree.Element(f"{{{_NS_GGK}}}envelopHeenbericht-ggk_Di01",
                         nsmap={"StUF": _NS_STUF, "GGK": _NS_GGK, "xmime": _NS_XMIME})

    def stuf(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
        child = etree.SubElement(parent, f"{{{_NS_STUF}}}{name}")
        child.text = text
        return child

    def ggk(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
        child = etree.SubElement(parent, f"{{{_NS_GGK}}}{name}")
        child.text = text
        return child

    van_gemeente = message.afzender.isdigit() and len(message.afzender) == 4
    stuurgegevens = ggk(root, "stuurgegevens")
    stuf(stuurgegevens, "berichtcode", "Di01")
    for role, code, from_gemeente in (("zender", message.afzender, van_gemeente),
                                      ("ontvanger", message.ontvanger, not van_gemeente)):
        systeem = stuf(stuurgegevens, role)
        stuf(systeem, "organisatie", code)
        stuf(systeem, "applicatie", f"Sociaal Domein {gemeentenaam}" if from_gemeente else "Zorgadministratie")
    stuf(stuurgegevens, "referentienummer",
         str(uuid.uuid5(uuid.NAMESPACE_URL, f"ggk/{message.afzender}/{message.identificatie}")))
    # Office hours of the Dagtekening, spread by the identification: no clock is read.
    seconds = 8 * 3600 + _stable_int(message.identificatie) % (9 * 3600)
    stuf(stuurgegevens, "tijdstipBericht",
         f"{message.day:%Y%m%d}{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}")
    stuf(stuurgegevens, "functie", _functie(message))
    parameters = ggk(root, "parameters")
    ggk(parameters, "referentienummerBericht", message.identificatie)
    ggk(parameters, "applicatieVersie", "0004")
    ggk(parameters, "applicatieSubversie", "0003")
    ggk(parameters, "functieVersie", "0003")
    ggk(parameters, "functieSubversie", "0002")
    bericht = ggk(parameters, "bericht", base64.b64encode(payload).decode("ascii"))
    bericht.set(f"{{{_NS_STUF}}}bestandsnaam", f"{_functie(message)}.xml")
    bericht.set(f"{{{_NS_XMIME}}}contentType", "application/xml")
    return _xml_bytes(root)


def _xml_bytes(root: etree._Element) -> bytes:
    """UTF-8 document with the declaration spelled as in the published sample messages."""
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="UTF-8", pretty_print=True)


def render_message(muni: Municipality, message: Bericht) -> bytes:
    """The bytes of one message file (the bare iStandaarden message or its envelope)."""
    payload = _xml_bytes(message.render(_Context(muni, message)))
    return _envelope(message, payload, muni.naam) if _is_enveloped(message) else payload



# --------------------------------------------------------------------------- public API

_WORLD_LOCK = threading.Lock()
_REGISTERS: "OrderedDict[tuple, object]" = OrderedDict()
_PLANS: "OrderedDict[tuple, tuple[Municipality, object, _Planner]]" = OrderedDict()


def _default_register(muni: Municipality):
    """The demo KvK register of ``muni``'s world (the same one the KvK stand-in serves)."""
    from demo_gemeente.generator import DemoWorld
    from demo_gemeente.kvk import KvkRegister

    key = (muni.population, muni.seed, muni.gemeentecode, muni.naam)
    with _WORLD_LOCK:
        register = _REGISTERS.get(key)
        if register is None:
            world = DemoWorld(population=muni.population or len(muni.residents()), seed=muni.seed,
                              gemeentecode=muni.gemeentecode, naam=muni.naam)
            register = _REGISTERS[key] = KvkRegister(world)
            while len(_REGISTERS) > 2:
                _REGISTERS.popitem(last=False)
        return register


def _aanbieders(kvk_register, until: date) -> tuple[list[Aanbieder], list[Aanbieder], dict[str, date]]:
    """Zorgaanbieders (not huisartsen) and huisartsen of the register at ``until``, by KvK-nummer."""
    state = kvk_register.at(until)
    aanbieders, huisartsen, starts = [], [], {}
    for onderneming in sorted(state.ondernemingen.values(), key=lambda o: o.kvk_nummer):
        if not onderneming.is_zorgaanbieder:
            continue
        sbi = onderneming.sbi_activiteiten[0].sbi_code
        entry = Aanbieder(onderneming.agb_code, onderneming.kvk_nummer, onderneming.naam, sbi, onderneming.datum_einde)
        starts[entry.agb_code] = onderneming.datum_aanvang
        (huisartsen if sbi == "8621" else aanbieders).append(entry)
    return aanbieders, huisartsen, starts


def _planner(muni: Municipality, until: date, kvk_register, seed: int) -> _Planner:
    register = kvk_register if kvk_register is not None else _default_register(muni)
    key = (id(muni), until, id(register), seed)
    with _WORLD_LOCK:
        cached = _PLANS.get(key)
        if cached is not None and cached[0] is muni and cached[1] is register:
            _PLANS.move_to_end(key)
            return cached[2]
    aanbieders, huisartsen, starts = _aanbieders(register, until)
    planner = _Planner(muni, until, aanbieders, huisartsen, seed)
    planner.plan(starts)
    with _WORLD_LOCK:
        _PLANS[key] = (muni, register, planner)
        while len(_PLANS) > 4:
            _PLANS.popitem(last=False)
    return planner


def sociaal_domein_state(muni: Municipality, until: date | None = None, kvk_register=None,
                         seed: int = 42) -> SociaalDomeinState:
    """The simulated iWmo/iJw traffic, toewijzingen and declaraties up to and including ``until``.

    ``muni`` is the demo world at ``until`` (default ``muni.as_of``); deaths after its
    date are unknown to it. ``kvk_register`` is the demo KvK register
    (:class:`demo_gemeente.kvk.KvkRegister`; default: the register of ``muni``'s world).
    For the ledger: ``state.declaraties`` (or ``state.declaratie_regels()``) lists every
    declaratie with its dagtekening, wet, aanbieder (AGB, KvK-nummer) and amount.
    """
    until = muni.as_of if until is None else until
    if until > muni.as_of:
        raise ValueError(f"until {until} is after the state of the world ({muni.as_of})")
    planner = _planner(muni, until, kvk_register, seed)
    toewijzingen = {}
    for nummer, t in planner.toewijzingen.items():
        known = _snapshot(t)
        if known.stop_levering is not None and known.stop_levering > until:
            known.stop_levering = None  # the planned stop lies in the future of ``until``
        toewijzingen[nummer] = known
    return SociaalDomeinState(until=until, gemeentecode=muni.gemeentecode, toewijzingen=toewijzingen,
                              declaraties=list(planner.declaraties), messages=list(planner.messages))


def _backlog(planner: _Planner, logical_date: date, wet: str) -> list[Bericht]:
    """The latest 301 and 305 before ``logical_date`` of every toewijzing still current on it."""
    current = {n for n, t in planner.toewijzingen.items()
               if t.wet == wet and t.ingangsdatum <= logical_date <= t.einddatum
               and (t.stop_levering is None or t.stop_levering >= logical_date)}
    latest: dict[tuple[int, str], Bericht] = {}
    for message in planner.messages:
        if message.wet != wet or message.day >= logical_date or message.kind not in ("301", "305") \
                or message.is_retour:
            continue
        for nummer in message.toewijzingen:
            if nummer in current:
                latest[(nummer, message.kind)] = message
    unique = {id(m): m for m in latest.values()}
    return sorted(unique.values(), key=lambda m: (m.day, m.kind, m.identificatie))


def _write_deliveries(wet: str, source: str, muni: Municipality, dropzone_root: Path, logical_date: date,
                      kvk_register, seed: int, include_backlog: bool) -> list[Path]:
    if logical_date != muni.as_of:
        raise ValueError(f"muni is the world at {muni.as_of}, not at the logical date {logical_date}")
    planner = _planner(muni, logical_date, kvk_register, seed)
    todays = [m for m in planner.messages if m.wet == wet and m.day == logical_date]
    messages = (_backlog(planner, logical_date, wet) if include_backlog else []) + todays
    folder = Path(dropzone_root) / source
    return [write_atomic(folder / m.file_name, render_message(muni, m)) for m in messages]


def write_iwmo_deliveries(muni: Municipality, dropzone_root: Path, logical_date: date, kvk_register=None,
                          seed: int = 42, include_backlog: bool = False) -> list[Path]:
    """Write the iWmo messages of ``logical_date`` into ``<dropzone_root>/iwmo/``; returns the paths written.

    ``muni`` must be the demo world at ``logical_date``. ``include_backlog`` also writes
    the latest 301 and 305 of every toewijzing still current (for the first delivery day).
    Rewriting the same day gives byte-identical files.
    """
    return _write_deliveries(WMO, IWMO_SOURCE, muni, dropzone_root, logical_date, kvk_register, seed,
                             include_backlog)


def write_ijw_deliveries(muni: Municipality, dropzone_root: Path, logical_date: date, kvk_register=None,
                         seed: int = 42, include_backlog: bool = False) -> list[Path]:
    """Write the iJw messages (heen- and retourberichten) of ``logical_date`` into ``<dropzone_root>/ijw/``.

    Same contract as :func:`write_iwmo_deliveries`.
    """
    return _write_deliveries(JEUGD, IJW_SOURCE, muni, dropzone_root, logical_date, kvk_register, seed,
                             include_backlog)
