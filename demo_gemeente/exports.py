"""Exports of Demodam's departmental systems, in the formats those systems really write.

* ``subsidies/`` - the subsidy register, weekly (Mondays) as three Excel workbooks
  (``subsidieprogrammas_<YYYYMMDD>.xlsx``, ``subsidies_<YYYYMMDD>.xlsx``,
  ``subsidiebeschikkingen_<YYYYMMDD>.xlsx``), each with a title block above the header
  row and a 'Toelichting' sheet; ontvangers are stichtingen and verenigingen of the
  demo KvK register when one is given;
* ``vth/`` - handhaving meldingen from the VTH system, daily as ``vth_meldingen_<YYYYMMDD>.csv``:
  ``;``-separated, Windows-1252, CRLF, dates ``dd-mm-jjjj``, amounts ``1.234,56``,
  addresses as the municipality's own BAG nummeraanduidingen;
* ``hr/`` - medewerkers from the HR system, weekly (Fridays) as ``hr_medewerkers_<YYYYMMDD>.csv``
  in UTF-8 with a BOM (as Excel writes "CSV UTF-8"). Like real HR exports it carries
  names, dates of birth and BSNs; the data contract (``config/contracts/hr.yaml``)
  does not declare them, so they never land.

Every export is a full snapshot of the register as of the logical date and a pure
function of its inputs: the same arguments give byte-identical files (the Excel
writer's timestamps are fixed), written to a temporary file and renamed into place.
"""
from __future__ import annotations

import codecs
import csv
import io
import random
import unicodedata
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Iterable, Sequence

from demo_gemeente.generator import EPOCH
from demo_gemeente.delivery import write_atomic
from demo_gemeente.model import Municipality
from demo_gemeente.names import FIRST_NAMES_MODERN, SURNAMES
from ggm_lakehouse.bsn import complete_bsn

SUBSIDIES_SOURCE = "subsidies"
VTH_SOURCE = "vth"
HR_SOURCE = "hr"
SUBSIDIES_WEEKDAY = 0  # Monday
HR_WEEKDAY = 4  # Friday
CENT = Decimal("0.01")

# -- shared helpers



def _rng(seed: int, *parts: object) -> random.Random:
    # A string seed is hashed with SHA-512 by random.Random: stable across runs and Python versions.
    return random.Random("|".join(str(p) for p in (seed, *parts)))


def nl_date(day: date | None) -> str:
    """``dd-mm-jjjj`` as Dutch applications write dates ('' for none)."""
    return day.strftime("%d-%m-%Y") if day else ""


def nl_amount(amount: Decimal | None) -> str:
    """``1.234,56``: Dutch thousands separator and decimal comma ('' for none)."""
    if amount is None:
        return ""
    text = f"{amount.quantize(CENT, rounding=ROUND_HALF_UP):,.2f}"
    return text.replace(",", "_").replace(".", ",").replace("_", ".")


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[object]], encoding: str) -> bytes:
    """A ``;``-separated export as a Windows application writes it (CRLF, minimal quoting)."""
    buffer = io.StringIO()
    # Windows applications end lines with CRLF; minimal quoting as Excel does.
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode(encoding, errors=_BEST_FIT)


def _best_fit(error: UnicodeEncodeError) -> tuple[str, int]:
    """Replace a character the legacy code page lacks as Windows' best-fit conversion does (ř → r, else ?).

    An application that stores its data in Windows-1252 never holds such a character; the demo's
    names come from a Unicode world, so they are narrowed the way that application would have.
    """
    fallback = []
    for char in error.object[error.start:error.end]:
        base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
        try:
            base.encode(error.encoding)
        except UnicodeEncodeError:
            base = "?"
        fallback.append(base or "?")
    return "".join(fallback), error.end


_BEST_FIT = "ggm-demo-best-fit"
codecs.register_error(_BEST_FIT, _best_fit)


def _is_delivery_day(logical_date: date, weekday: int | None) -> bool:
    return weekday is None or logical_date.weekday() == weekday


def _money(rnd: random.Random, low: int, high: int, step: int = 50) -> Decimal:
    return Decimal(rnd.randrange(low // step, high // step + 1) * step)


def _days_between(start: date, end: date) -> Iterable[date]:
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


# -- HR


ORGANISATORISCHE_EENHEDEN = (
    # (naam, functies, relatieve omvang)
    ("Burgerzaken", ("Medewerker Burgerzaken", "Senior medewerker Burgerzaken", "Teamleider Burgerzaken"), 6),
    ("Vergunningen, Toezicht en Handhaving", ("Toezichthouder", "Handhavingsjurist", "Vergunningverlener",
                                              "Teamleider VTH"), 8),
    ("Subsidies", ("Subsidieadviseur", "Medewerker subsidieadministratie", "Teamleider Subsidies"), 3),
    ("Sociaal Domein", ("Consulent Wmo", "Consulent Jeugd", "Klantmanager Participatie", "Teamleider Sociaal Domein"), 10),
    ("Financien", ("Financieel adviseur", "Medewerker crediteurenadministratie", "Controller"), 4),
    ("Openbare Ruimte", ("Beheerder openbare ruimte", "Medewerker buitendienst", "Projectleider"), 7),
    ("Bedrijfsvoering", ("HR-adviseur", "Informatiemanager", "Data-analist", "Juridisch adviseur"), 5),
)
SCHAAL_PER_FUNCTIE_SOORT = {"Teamleider": (11, 12), "Senior": (9, 10), "Controller": (11, 12)}


@dataclass(frozen=True)
class Medewerker:
    """One employee of the demo municipality's own organisation."""

    personeelsnummer: str
    voornaam: str
    voorvoegsel: str | None
    achternaam: str
    geboortedatum: date
    bsn: str
    organisatorische_eenheid: str
    functie: str
    schaal: int
    fte: Decimal
    datum_in_dienst: date
    datum_uit_dienst: date | None
    dienstverband: str
    leidinggevende: bool


def medewerkers(population: int, seed: int = 42, gemeentecode: str = "9999") -> list[Medewerker]:
    """The municipality's whole roster over time (past, present and future hires), ordered by personeelsnummer.

    About one employee per 100 inhabitants (at least 40); a fixed function of the arguments.
    """
    rnd = _rng(seed, gemeentecode, "hr")
    size = max(40, population // 100)
    weights = [w for _n, _f, w in ORGANISATORISCHE_EENHEDEN]
    roster: list[Medewerker] = []
    teamleaders: set[str] = set()
    for index in range(size):
        naam_oe, functies, _w = rnd.choices(ORGANISATORISCHE_EENHEDEN, weights=weights)[0]
        functie = rnd.choice(functies)
        is_leader = functie.startswith("Teamleider") and naam_oe not in teamleaders
        if functie.startswith("Teamleider") and not is_leader:
            functie = functies[0]  # one teamleider per eenheid
        if is_leader:
            teamleaders.add(naam_oe)
        low, high = next((v for k, v in SCHAAL_PER_FUNCTIE_SOORT.items() if functie.startswith(k)), (7, 10))
        geslacht = rnd.choice(("M", "V"))
        voorvoegsel, achternaam = rnd.choice(SURNAMES)
        in_dienst = EPOCH - timedelta(days=rnd.randrange(30, 25 * 365))
        if index >= size * 9 // 10:
            in_dienst = EPOCH + timedelta(days=rnd.randrange(0, 365))  # hires during the demo year
        uit_dienst = None
        if rnd.random() < 0.12:
            uit_dienst = max(in_dienst + timedelta(days=60), EPOCH + timedelta(days=rnd.randrange(0, 540)))
        dienstverband = "Inhuur" if rnd.random() < 0.08 else ("Tijdelijk" if rnd.random() < 0.15 else "Vast")
        fte = rnd.choice((Decimal("1.0000"), Decimal("1.0000"), Decimal("0.8889"), Decimal("0.7778"),
                          Decimal("0.6667"), Decimal("0.5556")))
        roster.append(Medewerker(
            personeelsnummer=f"{100001 + index * 7:06d}",
            voornaam=rnd.choice(FIRST_NAMES_MODERN[geslacht]),
            voorvoegsel=voorvoegsel,
            achternaam=achternaam,
            geboortedatum=in_dienst - timedelta(days=rnd.randrange(20 * 365, 40 * 365)),
            bsn=_bsn(rnd),
            organisatorische_eenheid=naam_oe,
            functie=functie,
            schaal=rnd.randint(low, high),
            fte=fte,
            datum_in_dienst=in_dienst,
            datum_uit_dienst=uit_dienst,
            dienstverband=dienstverband,
            leidinggevende=is_leader,
        ))
    return roster


def _bsn(rnd: random.Random) -> str:
    while True:
        bsn = complete_bsn(f"{rnd.randrange(10_000_000, 99_999_999):08d}")
        if bsn:
            return bsn


HR_HEADER = ("Personeelsnummer", "Achternaam", "Voorvoegsel", "Voornaam", "Geboortedatum", "BSN",
             "Organisatorische eenheid", "Functie", "Schaal", "FTE", "Datum in dienst", "Datum uit dienst",
             "Soort dienstverband", "Leidinggevende")


def hr_snapshot(roster: Sequence[Medewerker], logical_date: date) -> list[Medewerker]:
    """Who the HR export lists on ``logical_date``: in service, or out of service for less than a year."""
    return [m for m in roster if m.datum_in_dienst <= logical_date
            and (m.datum_uit_dienst is None or m.datum_uit_dienst > logical_date - timedelta(days=365))]


def write_hr_deliveries(muni: Municipality, dropzone_root: Path, logical_date: date, seed: int = 42,
                        delivery_weekday: int | None = HR_WEEKDAY) -> list[Path]:
    """Write the HR export of ``logical_date`` (on its delivery weekday; ``None``: every day); returns the paths."""
    if not _is_delivery_day(logical_date, delivery_weekday):
        return []
    roster = medewerkers(muni.population or len(muni.residents()), seed, muni.gemeentecode)
    rows = []
    for m in hr_snapshot(roster, logical_date):
        # The end date of a leaver is known to HR a month ahead.
        uit = m.datum_uit_dienst if m.datum_uit_dienst and m.datum_uit_dienst <= logical_date + timedelta(days=31) else None
        rows.append((m.personeelsnummer, m.achternaam, m.voorvoegsel or "", m.voornaam, nl_date(m.geboortedatum), m.bsn,
                     m.organisatorische_eenheid, m.functie, m.schaal, f"{m.fte}".replace(".", ","),
                     nl_date(m.datum_in_dienst), nl_date(uit), m.dienstverband, "Ja" if m.leidinggevende else "Nee"))
    data = codec_bom(csv_bytes(HR_HEADER, rows, "utf-8"))
    path = Path(dropzone_root) / HR_SOURCE / f"hr_medewerkers_{logical_date:%Y%m%d}.csv"
    return [write_atomic(path, data)]


def codec_bom(data: bytes) -> bytes:
    """UTF-8 bytes with the byte-order mark Excel's "CSV UTF-8" writes."""
    return b"\xef\xbb\xbf" + data


# -- VTH

VTH_CATEGORIEEN = (
    # (categorie, team, kans op dwangsom)
    ("Bouwen zonder vergunning", "Toezicht Bouwen", 0.25),
    ("Strijdig gebruik bestemmingsplan", "Toezicht Bouwen", 0.2),
    ("Illegale kamerverhuur", "Toezicht Bouwen", 0.3),
    ("Brandveiligheid", "Toezicht Bouwen", 0.15),
    ("Geluidsoverlast horeca/café", "Toezicht Milieu", 0.1),
    ("Bodem en asbest", "Toezicht Milieu", 0.15),
    ("Afval en dumpingen", "Toezicht Openbare Ruimte", 0.05),
    ("Reclame en uitstallingen", "Toezicht Openbare Ruimte", 0.05),
)
VTH_SOORTEN = ("Klacht", "Klacht", "Signaal", "Eigen constatering", "Verzoek om handhaving")
VTH_RESULTATEN = ("Overtreding beëindigd", "Geen overtreding geconstateerd", "Last onder dwangsom opgelegd",
                  "Vergunning alsnog verleend")
VTH_HEADER = ("Meldingnummer", "Zaaknummer", "Datum melding", "Soort melding", "Categorie", "Straat", "Huisnummer",
              "Huisletter", "Toevoeging", "Postcode", "BAG nummeraanduiding", "Status", "Afhandeldatum", "Resultaat",
              "Opgelegde dwangsom", "Team")


@dataclass(frozen=True)
class VthMelding:
    """One handhaving melding as the VTH system knows it on a given day."""

    meldingnummer: str
    zaaknummer: str
    datum_melding: date
    soort: str
    categorie: str
    team: str
    nummeraanduiding_id: str
    met_bag_id: bool
    status: str
    datum_afhandeling: date | None
    resultaat: str | None
    dwangsom: Decimal | None


def vth_meldingen(muni: Municipality, logical_date: date, seed: int = 42) -> list[VthMelding]:
    """Every melding received from the demo epoch up to ``logical_date``, with its state on that day.

    Each day's meldingen come from a generator seeded by the day, so a melding keeps its
    number, address and outcome from one export to the next; only its status advances.
    """
    # Meldingen concern the address stock of the demo epoch: addresses of new buildings change their
    # voorkomen (and ingangsdatum) as the building is completed, which would re-deal earlier days.
    adressen = sorted((n for n in muni.nummeraanduidingen.values() if n.ingangsdatum < EPOCH),
                      key=lambda n: n.identificatie)
    # The generator's population parameter, not today's head count: earlier days must not change.
    per_day = max(1.0, (muni.population or 3000) / 1000)
    result: list[VthMelding] = []
    volgnummer: dict[int, int] = {}
    for day in _days_between(EPOCH, logical_date):
        rnd = _rng(seed, muni.gemeentecode, "vth", day.isoformat())
        count = sum(1 for _ in range(int(per_day * 3)) if rnd.random() < (0.6 if day.weekday() < 5 else 0.15))
        candidates = len(adressen)
        for _ in range(count):
            if not candidates:
                break
            volgnummer[day.year] = volgnummer.get(day.year, 0) + 1
            categorie, team, kans_dwangsom = rnd.choice(VTH_CATEGORIEEN)
            adres = adressen[rnd.randrange(candidates)]
            doorlooptijd = rnd.randint(3, 120)
            sepot = rnd.random() < 0.12
            dwangsom_kans = rnd.random() < kans_dwangsom
            bedrag = _money(rnd, 1_000, 25_000, 250) if dwangsom_kans else None
            met_bag_id = rnd.random() >= 0.1  # phoned-in meldingen carry a typed address only
            soort = rnd.choice(VTH_SOORTEN)
            # Drawn whatever the state on logical_date: the same melding must get the same draws every day.
            uitkomst = rnd.choice((VTH_RESULTATEN[0], VTH_RESULTATEN[0], VTH_RESULTATEN[3]))
            afgehandeld_op = day + timedelta(days=doorlooptijd)
            if afgehandeld_op <= logical_date:
                status = "Geseponeerd" if sepot else "Afgehandeld"
                if sepot:
                    resultaat = "Geen overtreding geconstateerd"
                elif bedrag is not None:
                    resultaat = "Last onder dwangsom opgelegd"
                else:
                    resultaat = uitkomst
                afhandeling = afgehandeld_op
            else:
                status = "In behandeling" if day + timedelta(days=2) <= logical_date else "Ontvangen"
                resultaat, afhandeling, bedrag = None, None, None
            if resultaat != "Last onder dwangsom opgelegd":
                bedrag = None
            nummer = volgnummer[day.year]
            result.append(VthMelding(
                meldingnummer=f"M-{day.year}-{nummer:05d}",
                zaaknummer=f"Z-{day.year}-VTH-{nummer:05d}",
                datum_melding=day,
                soort=soort,
                categorie=categorie,
                team=team,
                nummeraanduiding_id=adres.identificatie,
                met_bag_id=met_bag_id,
                status=status,
                datum_afhandeling=afhandeling,
                resultaat=resultaat,
                dwangsom=bedrag,
            ))
    return result


def write_vth_deliveries(muni: Municipality, dropzone_root: Path, logical_date: date, seed: int = 42) -> list[Path]:
    """Write the VTH system's daily export of ``logical_date`` (Windows-1252 ``;`` CSV); returns the paths."""
    rows = []
    for m in vth_meldingen(muni, logical_date, seed):
        adres = muni.nummeraanduidingen[m.nummeraanduiding_id]
        straat = muni.openbare_ruimten[adres.openbare_ruimte_id].naam
        postcode = f"{adres.postcode[:4]} {adres.postcode[4:]}"  # typed the way letters are addressed
        rows.append((m.meldingnummer, m.zaaknummer, nl_date(m.datum_melding), m.soort, m.categorie, straat,
                     adres.huisnummer, adres.huisletter or "", adres.huisnummertoevoeging or "", postcode,
                     m.nummeraanduiding_id if m.met_bag_id else "", m.status, nl_date(m.datum_afhandeling),
                     m.resultaat or "", nl_amount(m.dwangsom), m.team))
    data = csv_bytes(VTH_HEADER, rows, "windows-1252")
    path = Path(dropzone_root) / VTH_SOURCE / f"vth_meldingen_{logical_date:%Y%m%d}.csv"
    return [write_atomic(path, data)]


# -- subsidies


@dataclass(frozen=True)
class Programma:
    """A subsidieprogramma (regeling) of one year."""

    code: str
    naam: str
    omschrijving: str
    sector: str
    begrotingsprogramma: str
    afdeling: str
    budget: Decimal
    startdatum: date
    einddatum: date


PROGRAMMA_TEMPLATES = (
    # (naam, sector, begrotingsprogramma, omschrijving, budget)
    ("Cultuurparticipatie", "Cultuur", "Cultuur en erfgoed", "Activiteiten die inwoners laten meedoen aan kunst en cultuur.", 180_000),
    ("Sportstimulering", "Sport", "Sport en bewegen", "Verenigingen die jeugd en ouderen in beweging brengen.", 150_000),
    ("Welzijn en ontmoeting", "Welzijn", "Sociaal domein", "Buurthuizen, ontmoetingsplekken en vrijwilligerswerk.", 240_000),
    ("Mantelzorgondersteuning", "Zorg", "Sociaal domein", "Respijtzorg en steun voor mantelzorgers.", 120_000),
    ("Onderwijsachterstanden", "Onderwijs", "Onderwijs", "Voor- en vroegschoolse educatie en taalprojecten.", 200_000),
    ("Ondernemersfonds centrum", "Economie", "Economie en werk", "Promotie en evenementen van ondernemers in het centrum.", 90_000),
    ("Duurzame initiatieven", "Duurzaamheid", "Klimaat en energie", "Energiecoöperaties en vergroening door bewoners.", 110_000),
    ("Leefbaarheid in de buurt", "Leefbaarheid", "Wonen en leefomgeving", "Bewonersinitiatieven die de buurt verbeteren.", 75_000),
)


def subsidieprogrammas(logical_date: date) -> list[Programma]:
    """The programma's of every year from the demo epoch up to ``logical_date`` (one per template per year)."""
    result = []
    for year in range(EPOCH.year, logical_date.year + 1):
        for index, (naam, sector, begroting, omschrijving, budget) in enumerate(PROGRAMMA_TEMPLATES, start=1):
            result.append(Programma(
                code=f"SP-{year}-{index:02d}", naam=f"{naam} {year}", omschrijving=omschrijving, sector=sector,
                begrotingsprogramma=begroting, afdeling="Subsidies", budget=Decimal(budget),
                startdatum=date(year, 1, 1), einddatum=date(year, 12, 31),
            ))
    return result


@dataclass(frozen=True)
class Ontvanger:
    naam: str
    kvk_nummer: str | None
    rsin: str | None


@dataclass(frozen=True)
class Subsidie:
    """One subsidie (dossier) and its state on a given day."""

    dossiernummer: str
    programma: Programma
    onderwerp: str
    soort: str
    ontvanger: Ontvanger
    datum_aanvraag: date
    aangevraagd: Decimal
    verleend: Decimal | None
    datum_verlening: date | None
    afgewezen: bool
    datum_besluit: date | None  # the verlening or afwijzing, once taken
    vastgesteld: Decimal | None
    datum_vaststelling: date | None
    periode_start: date
    periode_einde: date
    behandelaar: str | None

    @property
    def status(self) -> str:
        if self.afgewezen:
            return "Afgewezen"
        if self.datum_vaststelling is not None:
            return "Vastgesteld"
        if self.datum_verlening is not None:
            return "Verleend"
        return "Aangevraagd"


_ONDERWERPEN = {
    "Cultuur": ("Zomerfestival", "Theaterproductie", "Muziekles voor kinderen", "Tentoonstelling lokaal erfgoed"),
    "Sport": ("Jeugdtoernooi", "Beweegprogramma 65+", "Aangepast sporten", "Zwemvaardigheid"),
    "Welzijn": ("Buurtkamer", "Vrijwilligerscentrale", "Koffie-ochtenden", "Maatjesproject"),
    "Zorg": ("Respijtweekend mantelzorgers", "Lotgenotencontact", "Dagbesteding in de wijk"),
    "Onderwijs": ("Taalcafé", "Huiswerkbegeleiding", "Voorleesproject"),
    "Economie": ("Kerstmarkt", "Winkelpromotie", "Ondernemersavond"),
    "Duurzaamheid": ("Zonnepanelen op het clubhuis", "Geveltuinen", "Energiecafé"),
    "Leefbaarheid": ("Speeltuin opknappen", "Buurtfeest", "Buurtmoestuin"),
}
_ORGANISATIE_WOORDEN = ("Stichting De Brug", "Stichting Samen Sterk", "Vereniging Ons Genoegen", "Stichting Het Anker",
                        "Vereniging De Toekomst", "Stichting Welzijn Demodam", "Vereniging Vooruit",
                        "Stichting Cultuurhuis", "Sportvereniging Eendracht", "Stichting Groen Doen")


def _ontvangers(kvk_register, seed: int) -> list[Ontvanger]:
    """Possible subsidie ontvangers: the register's stichtingen/verenigingen at the epoch, else invented ones."""
    if kvk_register is not None:
        state = kvk_register.at(EPOCH)
        organisaties = [o for o in state.actieve_ondernemingen() if o.rechtsvorm in ("Stichting", "Vereniging")]
        if not organisaties:
            organisaties = [o for o in state.actieve_ondernemingen() if o.is_rechtspersoon]
        if organisaties:
            return [Ontvanger(o.naam, o.kvk_nummer, o.rsin) for o in sorted(organisaties, key=lambda o: o.kvk_nummer)]
    rnd = _rng(seed, "subsidie-ontvangers")
    return [Ontvanger(naam, f"{rnd.randrange(40_000_000, 99_999_999):08d}", _bsn(rnd)) for naam in _ORGANISATIE_WOORDEN]


def subsidies(logical_date: date, seed: int = 42, kvk_register=None, population: int = 3000,
              gemeentecode: str = "9999") -> list[Subsidie]:
    """Every subsidie applied for from the demo epoch up to ``logical_date``, with its state on that day."""
    programmas = {p.code: p for p in subsidieprogrammas(logical_date)}
    ontvangers = _ontvangers(kvk_register, seed)
    team = [m for m in medewerkers(population, seed, gemeentecode) if m.organisatorische_eenheid == "Subsidies"]
    result = []
    volgnummer: dict[int, int] = {}
    for day in _days_between(EPOCH, logical_date):
        if day.weekday() >= 5:
            continue
        rnd = _rng(seed, gemeentecode, "subsidies", day.isoformat())
        for _ in range(sum(1 for _ in range(3) if rnd.random() < 0.3)):
            volgnummer[day.year] = volgnummer.get(day.year, 0) + 1
            template = rnd.randrange(len(PROGRAMMA_TEMPLATES))
            programma = programmas[f"SP-{day.year}-{template + 1:02d}"]
            onderwerp = rnd.choice(_ONDERWERPEN[programma.sector])
            ontvanger = ontvangers[rnd.randrange(len(ontvangers))]
            aangevraagd = _money(rnd, 500, 25_000)
            besluit_op = day + timedelta(days=rnd.randint(21, 56))  # Awb: 8 weeks
            afgewezen_besluit = rnd.random() < 0.15
            factor = Decimal(rnd.randint(60, 100)) / 100
            periode_start = day + timedelta(days=rnd.randint(14, 60))
            periode_einde = periode_start + timedelta(days=rnd.randint(1, 240))
            vaststellen_op = periode_einde + timedelta(days=rnd.randint(30, 90))
            vast_factor = Decimal(rnd.randint(80, 100)) / 100
            # Whoever of the team was in service on the day the aanvraag came in handles it.
            in_dienst = [m.personeelsnummer for m in team
                         if m.datum_in_dienst <= day and (m.datum_uit_dienst is None or m.datum_uit_dienst > day)]
            behandelaar = rnd.choice(in_dienst) if in_dienst else None
            soort = "Eenmalig" if rnd.random() < 0.8 else "Jaarlijks"
            besloten = besluit_op <= logical_date
            verleend = (aangevraagd * factor).quantize(CENT) if besloten and not afgewezen_besluit else None
            vastgesteld_op = vaststellen_op if verleend is not None and vaststellen_op <= logical_date else None
            result.append(Subsidie(
                dossiernummer=f"SUB-{day.year}-{volgnummer[day.year]:05d}",
                programma=programma,
                onderwerp=onderwerp,
                soort=soort,
                ontvanger=ontvanger,
                datum_aanvraag=day,
                aangevraagd=aangevraagd,
                verleend=verleend,
                datum_verlening=besluit_op if verleend is not None else None,
                afgewezen=besloten and afgewezen_besluit,
                datum_besluit=besluit_op if besloten else None,
                vastgesteld=(verleend * vast_factor).quantize(CENT) if vastgesteld_op else None,
                datum_vaststelling=vastgesteld_op,
                periode_start=periode_start,
                periode_einde=periode_einde,
                behandelaar=behandelaar,
            ))
    return result


PROGRAMMA_HEADER = ("Programmacode", "Naam programma", "Omschrijving", "Begrotingsprogramma",
                    "Verantwoordelijke afdeling", "Budget (EUR)", "Startdatum", "Einddatum")
SUBSIDIE_HEADER = ("Dossiernummer", "Programmacode", "Onderwerp", "Soort subsidie", "Sector", "Ontvanger", "KvK-nummer",
                   "RSIN", "Datum aanvraag", "Aangevraagd bedrag", "Verleend bedrag", "Datum verlening",
                   "Vastgesteld bedrag", "Datum vaststelling", "Periode van", "Periode tot en met", "Status",
                   "Behandelaar (personeelsnummer)")
BESCHIKKING_HEADER = ("Beschikkingsnummer", "Dossiernummer", "Soort beschikking", "Datum besluit", "Datum bekendmaking",
                      "Beschikt bedrag", "Zaaknummer", "Opmerkingen")
_AMOUNT_FORMAT = "#,##0.00"
_DATE_FORMAT = "DD-MM-YYYY"


def _xlsx_bytes(title: str, sheet: str, header: Sequence[str], rows: Iterable[Sequence[object]],
                toelichting: Sequence[str], logical_date: date, gemeente: str) -> bytes:
    """A workbook as a subsidy application exports it: title block, header, rows and a 'Toelichting' sheet."""
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.writer.excel import ExcelWriter

    workbook = Workbook()
    data = workbook.active
    data.title = sheet
    data.append([f"Gemeente {gemeente} - {title}"])
    data["A1"].font = Font(bold=True, size=14)
    data.append([f"Peildatum: {nl_date(logical_date)}"])
    data.append([])
    data.append(list(header))
    for cell in data[4]:
        cell.font = Font(bold=True)
    for row in rows:
        data.append(list(row))
        for cell in data[data.max_row]:
            if isinstance(cell.value, float):
                cell.number_format = _AMOUNT_FORMAT
            elif isinstance(cell.value, datetime):
                cell.number_format = _DATE_FORMAT
    notes = workbook.create_sheet("Toelichting")
    for line in toelichting:
        notes.append([line])
    # Fixed document properties and zip timestamps: the same register gives the same bytes.
    stamp = datetime.combine(logical_date, datetime.min.time())
    workbook.properties.creator = f"Subsidieregistratie gemeente {gemeente}"
    workbook.properties.lastModifiedBy = workbook.properties.creator
    workbook.properties.created = stamp
    workbook.properties.modified = stamp
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(workbook, archive).save()
    return _normalised_zip(raw.getvalue())


def _normalised_zip(data: bytes) -> bytes:
    """Re-pack a zip with fixed member timestamps and order (zipfile stamps members with the current time)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            member = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            member.external_attr = 0o644 << 16
            target.writestr(member, source.read(info.filename))
    return out.getvalue()


def _excel_date(day: date | None) -> datetime | None:
    return datetime.combine(day, datetime.min.time()) if day else None


def _excel_amount(amount: Decimal | None) -> float | None:
    return float(amount) if amount is not None else None


def write_subsidies_deliveries(muni: Municipality, dropzone_root: Path, logical_date: date, seed: int = 42,
                               kvk_register=None, delivery_weekday: int | None = SUBSIDIES_WEEKDAY) -> list[Path]:
    """Write the subsidy register's weekly Excel exports of ``logical_date``; returns the paths (none off-day).

    ``kvk_register`` (a :class:`demo_gemeente.kvk.KvkRegister`) supplies real demo
    organisations as ontvangers; ``delivery_weekday`` ``None`` delivers every day.
    """
    if not _is_delivery_day(logical_date, delivery_weekday):
        return []
    root = Path(dropzone_root) / SUBSIDIES_SOURCE
    stamp = f"{logical_date:%Y%m%d}"
    population = muni.population or len(muni.residents())
    programmas = subsidieprogrammas(logical_date)
    dossiers = subsidies(logical_date, seed, kvk_register, population, muni.gemeentecode)
    written = []

    written.append(write_atomic(root / f"subsidieprogrammas_{stamp}.xlsx", _xlsx_bytes(
        "Subsidieprogramma's", "Programma's", PROGRAMMA_HEADER,
        ((p.code, p.naam, p.omschrijving, p.begrotingsprogramma, p.afdeling, _excel_amount(p.budget),
          _excel_date(p.startdatum), _excel_date(p.einddatum)) for p in programmas),
        ("Overzicht van alle subsidieprogramma's (regelingen) met hun subsidieplafond.",
         "Budget (EUR): het subsidieplafond van het programma in euro's."),
        logical_date, muni.naam)))

    written.append(write_atomic(root / f"subsidies_{stamp}.xlsx", _xlsx_bytes(
        "Subsidieregister", "Subsidies", SUBSIDIE_HEADER,
        ((s.dossiernummer, s.programma.code, s.onderwerp, s.soort, s.programma.sector, s.ontvanger.naam,
          s.ontvanger.kvk_nummer, s.ontvanger.rsin, _excel_date(s.datum_aanvraag), _excel_amount(s.aangevraagd),
          _excel_amount(s.verleend), _excel_date(s.datum_verlening), _excel_amount(s.vastgesteld),
          _excel_date(s.datum_vaststelling), _excel_date(s.periode_start), _excel_date(s.periode_einde), s.status,
          s.behandelaar) for s in dossiers),
        ("Eén regel per subsidiedossier, peildatum in de titel.",
         "Verleend bedrag: bedrag in de verleningsbeschikking; Vastgesteld bedrag: na de verantwoording.",
         "Status: Aangevraagd, Verleend, Vastgesteld, Afgewezen of Ingetrokken."),
        logical_date, muni.naam)))

    beschikkingen = []
    for s in dossiers:
        jaar, nummer = s.dossiernummer.split("-")[1:]
        if s.afgewezen:
            besluit_op = s.datum_besluit
            beschikkingen.append((f"BS-{jaar}-{nummer}-A", s.dossiernummer, "Afwijzing", _excel_date(besluit_op),
                                  _excel_date(besluit_op + timedelta(days=2)), None, f"Z-{jaar}-SUB-{nummer}",
                                  "Past niet binnen de regeling"))
        if s.datum_verlening is not None:
            beschikkingen.append((f"BS-{jaar}-{nummer}-V", s.dossiernummer, "Verlening", _excel_date(s.datum_verlening),
                                  _excel_date(s.datum_verlening + timedelta(days=2)), _excel_amount(s.verleend),
                                  f"Z-{jaar}-SUB-{nummer}", None))
        if s.datum_vaststelling is not None:
            beschikkingen.append((f"BS-{jaar}-{nummer}-S", s.dossiernummer, "Vaststelling",
                                  _excel_date(s.datum_vaststelling), _excel_date(s.datum_vaststelling + timedelta(days=2)),
                                  _excel_amount(s.vastgesteld), f"Z-{jaar}-SUB-{nummer}", None))
    written.append(write_atomic(root / f"subsidiebeschikkingen_{stamp}.xlsx", _xlsx_bytes(
        "Subsidiebeschikkingen", "Beschikkingen", BESCHIKKING_HEADER, beschikkingen,
        ("Alle beschikkingen: verlening (V), vaststelling (S) en afwijzing (A).",),
        logical_date, muni.naam)))
    return written


__all__ = [
    "HR_SOURCE",
    "Medewerker",
    "SUBSIDIES_SOURCE",
    "VTH_SOURCE",
    "hr_snapshot",
    "medewerkers",
    "nl_amount",
    "nl_date",
    "subsidieprogrammas",
    "subsidies",
    "vth_meldingen",
    "write_hr_deliveries",
    "write_subsidies_deliveries",
    "write_vth_deliveries",
]
