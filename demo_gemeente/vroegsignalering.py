"""Vroegsignalering schulden in Demodam: signals of payment arrears and their follow-up.

Four signal partners send signals about adult residents: a woningcorporatie (huur), an
energieleverancier, a drinkwaterbedrijf and a zorgverzekeraar; the energy and water signals
reach the municipality through an aanleverende organisatie (a signal hub). The municipality
picks a signal up in a vroegsignaalzaak; signals of one household within one matching period
(four weeks) share that zaak. The zaak makes up to four contactpogingen (brief, telefoon,
huisbezoek, kaartje) until the inwoner is reached, and then closes with a result.

Deliveries into ``<dropzone>/vroegsignalering/`` (formats in :mod:`connectors.vroegsignalering`):

* ``vroegsignalen_<YYYYMMDD>.json`` every day: the signals created or changed that day
  (new, picked up, a contactpoging added, the zaak closed), each in its state at the end of
  the day, so one signal reappears on later days with more contactpogingen;
* ``vroegsignalen_huur_<YYYYMMDD>.csv`` every Monday (``partner_csv=True``): the second
  woningcorporatie, which is not connected to the national signal hub, delivers its signals of
  the previous week (Monday to Sunday) directly as a ``;``-separated file with a title line,
  Dutch decimals and ``dd-mm-jjjj`` dates (contract ``config/contracts/vroegsignalering.yaml``).
  The system picks these up after receipt like any other signal.

Everything is a pure function of the seed, the gemeentecode and the day: the signals of day D
are drawn from the adults resident on D (which every later state of the world reproduces), and
each signal's and zaak's life is drawn from a generator seeded by its id. Writing the same
date twice gives byte-identical files (temp file + rename, so readers never see half a file).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from demo_gemeente.generator import EPOCH, _poisson, age_in_years
from demo_gemeente.delivery import write_atomic
from demo_gemeente.model import Municipality, Person

SOURCE = "vroegsignalering"
# About one signal per 1,200 adults per day: in the order of national volumes of early signals.
SIGNALS_PER_ADULT_PER_DAY = 1 / 1200
MATCHING_PERIOD_DAYS = 28
MATCHING_ANCHOR = date(2025, 12, 29)  # a Monday; matching periods are the 4-week blocks from here
# Longest life of a zaak after its period starts (27 days of joining signals, pick-up, four attempts,
# closure) is well under this: older signals never change again and need not be drawn.
LOOKBACK_DAYS = 140
EXPORT_TIME = "T17:00:00Z"  # the nightly export runs after office hours
CSV_RECEIPT_TIME = "T06:00:00Z"
CSV_HEADER = (
    "Signaal ID", "Signaaldatum", "Ontstaansdatum", "BSN", "Voorletters", "Voorvoegsel", "Achternaam", "Postcode",
    "Huisnummer", "Huisletter", "Toevoeging", "Achterstand (EUR)", "Aantal maanden achterstand", "Crisissignaal",
    "Signaalpartner", "KvK-nummer signaalpartner", "Soort signaalpartner",
)


@dataclass(frozen=True)
class Partner:
    """A signal partner and the organisation that delivers its signals."""

    key: str
    type: str  # woningcorporatie | energieleverancier | drinkwaterbedrijf | zorgverzekeraar
    naam: str
    kvk_nummer: str
    aanleverend_naam: str
    aanleverend_kvk: str
    weight: float
    months: tuple[int, int]  # arrears in months, inclusive range
    monthly: tuple[int, int]  # monthly amount in euros, inclusive range
    via_csv: bool = False


SIGNAALHUB = ("Stichting Signaalhub Demo", "90001016")
PARTNERS: tuple[Partner, ...] = (
    Partner("woonstichting", "woningcorporatie", "Woonstichting Demodam", "90001024",
            "Woonstichting Demodam", "90001024", 0.28, (1, 3), (540, 880)),
    Partner("energie", "energieleverancier", "Demo Energie B.V.", "90001032", *SIGNAALHUB, 0.27, (1, 4), (110, 260)),
    Partner("water", "drinkwaterbedrijf", "Waterbedrijf Demodam N.V.", "90001040", *SIGNAALHUB, 0.16, (1, 6), (18, 45)),
    Partner("zorg", "zorgverzekeraar", "Zorgverzekeraar Demozorg U.A.", "90001059",
            "Zorgverzekeraar Demozorg U.A.", "90001059", 0.15, (2, 6), (128, 165)),
    Partner("huur", "woningcorporatie", "Wooncooperatie Polderhuis", "90001067",
            "Wooncooperatie Polderhuis", "90001067", 0.14, (1, 3), (520, 790), via_csv=True),
)
CSV_PARTNER = next(p for p in PARTNERS if p.via_csv)


@dataclass
class Signal:
    """One signal and the days on which it changed."""

    signaal_id: str
    signaaldatum: date
    received: date  # the day the municipality has the signal (CSV signals: the Monday after)
    partner: Partner
    person: Person
    household: str
    bedrag: Decimal
    maanden: int
    ontstaansdatum: date
    crisis: bool
    warm: bool
    # Filled by the zaak step:
    zaak: "Zaak | None" = None
    linked_on: date | None = None  # the day it was picked up in its zaak
    final_status: str | None = None  # for signals not picked up
    final_status_on: date | None = None


@dataclass
class Poging:
    volgnummer: int
    datum: date
    dagdeel: str
    kanaal: str
    resultaat: str


@dataclass
class Zaak:
    zaak_id: str
    period_start: date
    matchingsdatum: date
    opgepakt: date
    pogingen: list[Poging] = field(default_factory=list)
    einddatum: date | None = None
    resultaat: str | None = None


def _matching_period(day: date) -> date:
    return MATCHING_ANCHOR + timedelta(days=(day - MATCHING_ANCHOR).days // MATCHING_PERIOD_DAYS * MATCHING_PERIOD_DAYS)


def _next_monday_after(day: date) -> date:
    return day + timedelta(days=7 - day.weekday())


def _eligible(muni: Municipality, day: date) -> list[Person]:
    """Adults living in the municipality on ``day``, by BSN: the same list for every later state of the world."""
    return sorted(
        (p for p in muni.persons.values()
         if p.datum_inschrijving_gemeente <= day and (p.overlijdensdatum is None or p.overlijdensdatum > day)
         and age_in_years(p.geboortedatum, day) >= 18),
        key=lambda p: p.bsn,
    )


def _money(value: float) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _signals_of_day(muni: Municipality, day: date, seed: int) -> list[Signal]:
    rnd = random.Random(f"vroegsignalering:{seed}:{muni.gemeentecode}:{day.isoformat()}")
    adults = _eligible(muni, day)
    count = min(len(adults), _poisson(rnd, SIGNALS_PER_ADULT_PER_DAY * len(adults)))
    signals = []
    for number, person in enumerate(rnd.sample(adults, count), start=1):
        partner = rnd.choices(PARTNERS, weights=[p.weight for p in PARTNERS])[0]
        maanden = rnd.randint(*partner.months)
        bedrag = _money(maanden * rnd.uniform(*partner.monthly))
        ontstaan = (day - timedelta(days=30 * maanden)).replace(day=1)
        received = _next_monday_after(day) if partner.via_csv else day
        signals.append(Signal(
            signaal_id=f"VS{day:%Y%m%d}{number:04d}", signaaldatum=day, received=received, partner=partner,
            person=person, household=person.household_id, bedrag=bedrag, maanden=maanden, ontstaansdatum=ontstaan,
            crisis=partner.type == "woningcorporatie" and maanden >= 3 and rnd.random() < 0.3,
            warm=rnd.random() < 0.03,
        ))
    return signals


_KANALEN = ("brief", "telefoon", "huisbezoek", "kaartje")
_GAPS = ((0, 2), (3, 7), (3, 7), (5, 9))


def _zaak_life(zaak: Zaak, seed: int) -> None:
    """Draw the contactpogingen and the result of a zaak from its own generator."""
    rnd = random.Random(f"vroegsignalering-zaak:{seed}:{zaak.zaak_id}")
    day = zaak.opgepakt
    reached = None
    for volgnummer, (kanaal, gap) in enumerate(zip(_KANALEN, _GAPS), start=1):
        day = day + timedelta(days=rnd.randint(*gap))
        if rnd.random() < (0.35 if volgnummer == 1 else 0.45):
            reached = rnd.choices(("contact", "hulp_geaccepteerd", "hulp_geweigerd"), weights=(0.3, 0.45, 0.25))[0]
        dagdeel = "ochtend" if kanaal == "brief" else rnd.choice(("ochtend", "middag", "avond"))
        zaak.pogingen.append(Poging(volgnummer, day, dagdeel, kanaal, reached or "geen_contact"))
        if reached:
            break
    zaak.einddatum = day + timedelta(days=rnd.randint(1, 5))
    if reached == "hulp_geaccepteerd":
        zaak.resultaat = rnd.choices(("vervolghulp_financieel", "budgetadvies_of_quick_fix"), weights=(0.7, 0.3))[0]
    elif reached == "hulp_geweigerd":
        zaak.resultaat = rnd.choices(("geen_hulp_nodig", "betalingsregeling_getroffen"), weights=(0.6, 0.4))[0]
    elif reached == "contact":
        zaak.resultaat = rnd.choices(
            ("inwoner_al_bekend_bij_schuldhulpverlening", "betalingsregeling_getroffen", "geen_reactie_na_eerder_contact"),
            weights=(0.3, 0.4, 0.3))[0]
    else:
        zaak.resultaat = "definitief_geen_contact_kunnen_krijgen"


def _assign_zaken(signals: list[Signal], seed: int, gemeentecode: str) -> None:
    """Pick signals up: one zaak per household and matching period, opened by its first signal."""
    zaken: dict[tuple[str, date], Zaak] = {}
    for signal in sorted(signals, key=lambda s: (s.received, s.signaal_id)):
        rnd = random.Random(f"vroegsignalering-signaal:{seed}:{signal.signaal_id}")
        if rnd.random() < 0.03:
            signal.final_status, signal.final_status_on = "niet_opgepakt_onterecht_signaal", signal.received + timedelta(days=1)
            continue
        period = _matching_period(signal.received)
        key = (signal.household, period)
        zaak = zaken.get(key)
        if zaak is None:
            digest = hashlib.sha256(f"{gemeentecode}|{signal.household}|{period}".encode()).hexdigest()[:6].upper()
            opgepakt = signal.received + timedelta(days=rnd.randint(1, 4))
            zaak = Zaak(zaak_id=f"VSZ{period:%Y%m%d}{digest}", period_start=period,
                        matchingsdatum=signal.received + timedelta(days=1), opgepakt=opgepakt)
            _zaak_life(zaak, seed)
            zaken[key] = zaak
        elif zaak.einddatum is not None and zaak.einddatum <= signal.received:
            signal.final_status, signal.final_status_on = "niet_opgepakt_herhaalde_melding", signal.received + timedelta(days=1)
            continue
        death = signal.person.overlijdensdatum
        linked_on = max(zaak.opgepakt, signal.received + timedelta(days=1))
        if death is not None and death <= linked_on:
            signal.final_status, signal.final_status_on = "inwoner_is_overleden", linked_on
            continue
        signal.zaak, signal.linked_on = zaak, linked_on


def _change_days(signal: Signal) -> set[date]:
    """Days on which the signal as the system exports it changed (CSV signals: not the receipt)."""
    days = set() if signal.partner.via_csv else {signal.received}
    if signal.final_status_on is not None:
        days.add(signal.final_status_on)
    if signal.zaak is not None:
        days.add(signal.linked_on)
        days.update(p.datum for p in signal.zaak.pogingen if p.datum >= signal.linked_on)
        if signal.zaak.einddatum is not None and signal.zaak.einddatum >= signal.linked_on:
            days.add(signal.zaak.einddatum)
    return days


def _voorletters(voornamen: str) -> str:
    return "".join(f"{name[0]}." for name in voornamen.split())


def _debiteur(muni: Municipality, person: Person, with_bsn: bool) -> dict[str, Any]:
    nummeraanduiding = muni.nummeraanduidingen[person.nummeraanduiding_id]
    adres: dict[str, Any] = {"postcode": nummeraanduiding.postcode, "huisnummer": nummeraanduiding.huisnummer}
    if nummeraanduiding.huisletter:
        adres["huisletter"] = nummeraanduiding.huisletter
    if nummeraanduiding.huisnummertoevoeging:
        adres["huisnummertoevoeging"] = nummeraanduiding.huisnummertoevoeging
    adres["woonplaats"] = muni.woonplaatsen[nummeraanduiding.woonplaats_id].naam
    adres["nummeraanduidingIdentificatie"] = nummeraanduiding.identificatie
    debiteur: dict[str, Any] = {"bsn": person.bsn} if with_bsn else {}
    debiteur["voorletters"] = _voorletters(person.voornamen)
    if person.voorvoegsel:
        debiteur["voorvoegsel"] = person.voorvoegsel
    debiteur["geslachtsnaam"] = person.geslachtsnaam
    debiteur["geboortedatum"] = person.geboortedatum.isoformat()
    debiteur["adres"] = adres
    return debiteur


def _matched_in_brp(signal: Signal, seed: int) -> bool:
    # A few signals cannot be matched to a BRP person (spelling, a recent move): name and address only.
    return random.Random(f"vroegsignalering-brp:{seed}:{signal.signaal_id}").random() >= 0.03


def _signal_json(muni: Municipality, signal: Signal, day: date, seed: int) -> dict[str, Any]:
    """The signal as the system exports it at the end of ``day``."""
    partner = signal.partner
    document: dict[str, Any] = {
        "signaalId": signal.signaal_id,
        "laatstGewijzigd": f"{day.isoformat()}{EXPORT_TIME}",
        "signaaldatum": signal.signaaldatum.isoformat(),
        "ontstaansdatum": signal.ontstaansdatum.isoformat(),
        "signaalpartner": {"naam": partner.naam, "kvkNummer": partner.kvk_nummer, "type": partner.type},
        "aanleverendeOrganisatie": {"naam": partner.aanleverend_naam, "kvkNummer": partner.aanleverend_kvk},
        "debiteur": _debiteur(muni, signal.person, _matched_in_brp(signal, seed)),
        "achterstand": {"bedrag": float(signal.bedrag), "aantalMaanden": signal.maanden},
        "crisissignaal": signal.crisis,
        "warmeOverdracht": signal.warm,
    }
    if signal.zaak is not None and signal.linked_on <= day:
        zaak = signal.zaak
        document["status"] = "opgepakt"
        block: dict[str, Any] = {
            "zaakId": zaak.zaak_id,
            "datumOpgepakt": zaak.opgepakt.isoformat(),
            "matchingsdatum": zaak.matchingsdatum.isoformat(),
            "startdatumMatchingperiode": zaak.period_start.isoformat(),
            "einddatumMatchingperiode": (zaak.period_start + timedelta(days=MATCHING_PERIOD_DAYS - 1)).isoformat(),
        }
        if zaak.einddatum is not None and zaak.einddatum <= day:
            block["einddatum"] = zaak.einddatum.isoformat()
            block["resultaat"] = zaak.resultaat
        block["contactpogingen"] = [
            {"volgnummer": p.volgnummer, "datum": p.datum.isoformat(), "dagdeel": p.dagdeel, "kanaal": p.kanaal,
             "resultaat": p.resultaat}
            for p in zaak.pogingen if p.datum <= day
        ]
        document["zaak"] = block
    elif signal.final_status is not None and signal.final_status_on <= day:
        document["status"] = signal.final_status
    else:
        document["status"] = "nog_niet_opgepakt"
    return document


def simulate(muni: Municipality, logical_date: date, seed: int = 42) -> list[Signal]:
    """Every signal that can still change on ``logical_date``, with its zaak and status history."""
    # A week before the first period: a partner CSV delivered on its first Monday holds last week's signals.
    first = max(EPOCH, _matching_period(logical_date - timedelta(days=LOOKBACK_DAYS)) - timedelta(days=7))
    signals: list[Signal] = []
    day = first
    while day <= logical_date:
        signals.extend(_signals_of_day(muni, day, seed))
        day += timedelta(days=1)
    _assign_zaken(signals, seed, muni.gemeentecode)
    return signals



def export_document(muni: Municipality, logical_date: date, seed: int = 42) -> dict[str, Any]:
    """The daily export of ``logical_date``: the signals created or changed that day."""
    changed = [s for s in simulate(muni, logical_date, seed) if logical_date in _change_days(s)]
    changed.sort(key=lambda s: s.signaal_id)
    return {
        "export": {
            "bronsysteem": f"Vroegsignalering {muni.naam}",
            "gemeentecode": muni.gemeentecode,
            "exportdatum": logical_date.isoformat(),
            "aantalSignalen": len(changed),
        },
        "signalen": [_signal_json(muni, s, logical_date, seed) for s in changed],
    }


def _dutch_decimal(value: Decimal) -> str:
    whole, cents = f"{value:.2f}".split(".")
    groups = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    return ".".join([whole, *groups]) + "," + cents


def partner_csv_rows(muni: Municipality, logical_date: date, seed: int = 42) -> list[tuple[str, ...]]:
    """Rows of the weekly partner CSV delivered on ``logical_date`` (a Monday): last week's signals."""
    rows = []
    for signal in sorted(simulate(muni, logical_date, seed), key=lambda s: s.signaal_id):
        if not signal.partner.via_csv or signal.received != logical_date:
            continue
        person = signal.person
        debiteur = _debiteur(muni, person, with_bsn=True)  # the partner's file has no date of birth column
        adres = debiteur["adres"]
        rows.append((
            signal.signaal_id, f"{signal.signaaldatum:%d-%m-%Y}", f"{signal.ontstaansdatum:%d-%m-%Y}", person.bsn,
            debiteur["voorletters"], debiteur.get("voorvoegsel", ""), debiteur["geslachtsnaam"], adres["postcode"],
            str(adres["huisnummer"]), adres.get("huisletter", ""),
            adres.get("huisnummertoevoeging", ""), _dutch_decimal(signal.bedrag), str(signal.maanden),
            "ja" if signal.crisis else "nee", signal.partner.naam, signal.partner.kvk_nummer, signal.partner.type,
        ))
    return rows


def write_vroegsignalering_deliveries(muni: Municipality, dropzone_root: Path, logical_date: date, seed: int = 42,
                                      partner_csv: bool = True) -> list[Path]:
    """Write the deliveries of ``logical_date`` into ``<dropzone_root>/vroegsignalering/``; returns their paths.

    Every day the JSON export; on Mondays (with ``partner_csv``) the partner CSV. ``muni`` must be
    the world at ``logical_date`` (``DemoWorld.at(logical_date)``). Deterministic and atomic.
    """
    zone = Path(dropzone_root) / SOURCE
    document = export_document(muni, logical_date, seed)
    content = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"
    written = [write_atomic(zone / f"vroegsignalen_{logical_date:%Y%m%d}.json", content)]
    if partner_csv and logical_date.weekday() == 0 and logical_date > EPOCH:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
        # The partner's export starts with a title line (the contract finds the header row below it).
        writer.writerow((f"Vroegsignalen {CSV_PARTNER.naam}", f"aangeleverd {logical_date:%d-%m-%Y}"))
        writer.writerow(CSV_HEADER)
        writer.writerows(partner_csv_rows(muni, logical_date, seed))
        written.append(write_atomic(zone / f"vroegsignalen_huur_{logical_date:%Y%m%d}.csv",
                                     buffer.getvalue().encode("utf-8")))
    return written
