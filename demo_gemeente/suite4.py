"""The demo municipality's Suite4 Sociaal Domein database: Wmo and Jeugdwet aanvragen in SQLite.

A municipality's sociaal-domein application keeps one row per aanvraag (Wmo 2015
maatwerkvoorziening or Jeugdwet jeugdhulp) and updates it as the case moves through the
statutory steps: melding/aanmelding, gesprek (onderzoek, at most 6 weeks under Wmo 2015 art.
2.3.2), persoonlijk plan, aanvraag and beschikking (at most 2 weeks after the aanvraag, art. 2.3.5;
8 weeks in all for Jeugdwet). Each step updates ``gewijzigd_op``, the modification column the
SQL connector reads incrementally.

:func:`write_suite4_database` writes the state at the end of a logical date. The history of every
aanvraag is a function of the seed, the day it was received and facts of the municipality up to
that day (who lived there, who died), so writing day D and later day D+1 agree on everything up
to D: rows change only through steps dated D+1, with ``gewijzigd_op`` on D+1. The file is rebuilt
in a temporary file next to the target and renamed over it (atomic; byte-identical for the same
inputs).
"""
from __future__ import annotations

import os
import random
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path

from demo_gemeente.generator import EPOCH, age_in_years
from demo_gemeente.model import Municipality, Person

SCHEMA = """
CREATE TABLE wmo_aanvraag (
    id INTEGER PRIMARY KEY,
    zaaknummer TEXT NOT NULL UNIQUE,
    bsn TEXT NOT NULL,
    wet TEXT NOT NULL CHECK (wet IN ('WMO', 'JW')),
    product TEXT NOT NULL,
    aanmeldwijze TEXT NOT NULL,
    deskundigheid TEXT NOT NULL,
    doorloopmethodiek TEXT NOT NULL,
    ontvangen_op DATE NOT NULL,
    uiterste_beslisdatum DATE NOT NULL,
    datum_eerste_gesprek DATE,
    datum_plan_vastgesteld DATE,
    datum_besluit DATE,
    besluit TEXT,
    status TEXT NOT NULL,
    reden_afsluiting TEXT,
    datum_einde DATE,
    aangemaakt_op TIMESTAMP NOT NULL,
    gewijzigd_op TIMESTAMP NOT NULL
);
CREATE INDEX ix_wmo_aanvraag_gewijzigd_op ON wmo_aanvraag (gewijzigd_op);
CREATE INDEX ix_wmo_aanvraag_bsn ON wmo_aanvraag (bsn);
"""
COLUMNS = (
    "id", "zaaknummer", "bsn", "wet", "product", "aanmeldwijze", "deskundigheid", "doorloopmethodiek",
    "ontvangen_op", "uiterste_beslisdatum", "datum_eerste_gesprek", "datum_plan_vastgesteld", "datum_besluit",
    "besluit", "status", "reden_afsluiting", "datum_einde", "aangemaakt_op", "gewijzigd_op",
)

# Cases already running at the epoch come from this earlier start.
HISTORY_START = EPOCH - timedelta(days=120)
# Expected new aanvragen per resident per working day (about 10% of residents a year, Wmo + Jeugdwet, meldingen included).
AANVRAAG_RATE = 0.0004
WMO_PRODUCTEN = (
    "Hulp bij het huishouden", "Begeleiding individueel", "Begeleiding groep (dagbesteding)",
    "Woonvoorziening", "Vervoersvoorziening", "Rolstoelvoorziening", "Kortdurend verblijf",
)
JW_PRODUCTEN = (
    "Jeugdhulp ambulant", "Jeugd-GGZ", "Dagbehandeling jeugd", "Pleegzorg", "Jeugdhulp met verblijf",
)
AANMELDWIJZEN = ("Telefonisch", "Digitaal formulier", "Balie", "Via huisarts", "Via sociaal wijkteam")
BESLISTERMIJN_DAGEN = 56  # 6 weeks onderzoek + 2 weeks beslissen (Wmo); 8 weeks (Jeugdwet)


@dataclass(frozen=True)
class _Step:
    day: date
    at: datetime
    status: str


@dataclass
class _Aanvraag:
    id: int
    zaaknummer: str
    bsn: str
    wet: str
    product: str
    aanmeldwijze: str
    deskundigheid: str
    doorloopmethodiek: str
    ontvangen_op: date
    ontvangen_om: datetime
    gesprek: date | None
    plan: date | None
    besluit_op: date | None
    besluit: str | None
    einde: date | None
    reden_afsluiting: str | None
    moments: dict[str, datetime]


def _at(rnd: random.Random, day: date) -> datetime:
    """A time during office hours (the application records local time without zone)."""
    minutes = rnd.randrange(8 * 60 + 30, 17 * 60)
    return datetime.combine(day, time(minutes // 60, minutes % 60, rnd.randrange(60)))


def _working_day(day: date) -> date:
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def _eligible(persons: list[Person], day: date) -> tuple[list[Person], list[Person]]:
    """Adults and minors living in the municipality on ``day`` (in BSN order, independent of later days)."""
    adults, minors = [], []
    for person in persons:
        if person.geboortedatum > day or person.datum_inschrijving_gemeente > day:
            continue
        if person.overlijdensdatum is not None and person.overlijdensdatum <= day:
            continue
        (adults if age_in_years(person.geboortedatum, day) >= 18 else minors).append(person)
    return adults, minors


def _new_aanvraag(rnd: random.Random, number: int, day: date, adults: list[Person], minors: list[Person]) -> _Aanvraag | None:
    wet = "JW" if minors and rnd.random() < 0.3 else "WMO"
    if wet == "WMO":
        if not adults:
            return None
        elderly = [p for p in adults if age_in_years(p.geboortedatum, day) >= 65]
        # Most Wmo aanvragen come from older residents.
        client = rnd.choice(elderly if elderly and rnd.random() < 0.7 else adults)
        product = rnd.choice(WMO_PRODUCTEN)
        deskundigheid = rnd.choice(("Wmo-consulent", "Sociaal wijkteam"))
    else:
        client = rnd.choice(minors)
        product = rnd.choice(JW_PRODUCTEN)
        deskundigheid = rnd.choice(("Jeugdconsulent", "Sociaal wijkteam", "Gecertificeerde instelling"))
    spoed = rnd.random() < 0.05
    received_at = _at(rnd, day)
    gesprek = _working_day(day + timedelta(days=rnd.randint(1, 3) if spoed else rnd.randint(3, 16)))
    plan = _working_day(gesprek + timedelta(days=rnd.randint(2, 20)))
    besluit_op = _working_day(plan + timedelta(days=rnd.randint(1, 12)))
    outcome = rnd.random()
    moments = {"gesprek": _at(rnd, gesprek), "plan": _at(rnd, plan), "besluit": _at(rnd, besluit_op)}
    if outcome < 0.08:
        # Withdrawn after the gesprek: the client found a voorliggende voorziening or a solution of their own.
        return _Aanvraag(number, f"SD-{day.year}-{number:06d}", client.bsn, wet, product, rnd.choice(AANMELDWIJZEN),
                         deskundigheid, "Spoed" if spoed else "Regulier", day, received_at, gesprek, None, None, None,
                         gesprek + timedelta(days=rnd.randint(1, 5)), "Ingetrokken door client",
                         {**moments, "einde": None})
    besluit = "Afgewezen" if outcome < 0.22 else "Toegekend"
    return _Aanvraag(number, f"SD-{day.year}-{number:06d}", client.bsn, wet, product, rnd.choice(AANMELDWIJZEN),
                     deskundigheid, "Spoed" if spoed else "Regulier", day, received_at, gesprek, plan, besluit_op,
                     besluit, besluit_op, f"Besluit: {besluit.lower()}", moments)


def _steps(case: _Aanvraag, died: date | None, rnd_seed: str) -> list[_Step]:
    """The case's steps in time order; a client who dies before the besluit ends the case."""
    rnd = random.Random(rnd_seed)
    steps = [_Step(case.ontvangen_op, case.ontvangen_om, "Aangemeld")]
    if case.gesprek is not None:
        steps.append(_Step(case.gesprek, case.moments["gesprek"], "Onderzoek"))
    if case.plan is not None:
        steps.append(_Step(case.plan, case.moments["plan"], "Aanvraag ontvangen"))
    final_day = case.einde
    if case.besluit_op is not None:
        steps.append(_Step(case.besluit_op, case.moments["besluit"], "Afgehandeld"))
    elif final_day is not None:
        steps.append(_Step(final_day, _at(rnd, final_day), "Afgehandeld"))
    if died is not None and died < steps[-1].day:
        ended = _working_day(died + timedelta(days=rnd.randint(1, 5)))
        steps = [s for s in steps if s.day < ended and s.status != "Afgehandeld"]
        case.plan = case.plan if case.plan and case.plan < ended else None
        case.gesprek = case.gesprek if case.gesprek and case.gesprek < ended else None
        case.besluit_op, case.besluit, case.einde, case.reden_afsluiting = None, None, ended, "Overlijden client"
        steps.append(_Step(ended, _at(rnd, ended), "Afgehandeld"))
    return steps


def _row(case: _Aanvraag, steps: list[_Step], as_of: date) -> tuple:
    done = [s for s in steps if s.day <= as_of]
    last = done[-1]
    closed = last.status == "Afgehandeld"

    def known(day: date | None) -> str | None:
        return day.isoformat() if day is not None and day <= as_of else None

    return (
        case.id, case.zaaknummer, case.bsn, case.wet, case.product, case.aanmeldwijze, case.deskundigheid,
        case.doorloopmethodiek, case.ontvangen_op.isoformat(),
        (case.ontvangen_op + timedelta(days=BESLISTERMIJN_DAGEN)).isoformat(),
        known(case.gesprek), known(case.plan), known(case.besluit_op) if closed else None,
        case.besluit if closed else None, last.status, case.reden_afsluiting if closed else None,
        known(case.einde) if closed else None,
        case.ontvangen_om.isoformat(sep=" "), last.at.isoformat(sep=" "),
    )


def suite4_rows(muni: Municipality, logical_date: date, seed: int = 42) -> list[tuple]:
    """The ``wmo_aanvraag`` rows at the end of ``logical_date`` (in id order, columns as :data:`COLUMNS`)."""
    persons = sorted(muni.persons.values(), key=lambda p: p.bsn)
    deaths = {p.bsn: p.overlijdensdatum for p in persons if p.overlijdensdatum is not None}
    expected = max(muni.population, 1) * AANVRAAG_RATE
    rows: list[tuple] = []
    number = 0
    day = HISTORY_START
    while day <= logical_date:
        if day.weekday() < 5:
            rnd = random.Random(f"suite4|{seed}|{muni.gemeentecode}|{day.isoformat()}")
            count = _poisson(rnd, expected)
            if count:
                adults, minors = _eligible(persons, day)
                for _ in range(count):
                    case = _new_aanvraag(rnd, number + 1, day, adults, minors)
                    if case is None:
                        continue
                    number += 1
                    died = deaths.get(case.bsn)
                    steps = _steps(case, died if died is not None and died <= logical_date else None,
                                   f"suite4-steps|{seed}|{case.zaaknummer}")
                    rows.append(_row(case, steps, logical_date))
        day += timedelta(days=1)
    return rows


def _poisson(rnd: random.Random, lam: float) -> int:
    # Knuth's method: lam is small (a few per day).
    limit, k, p = pow(2.718281828459045, -lam), 0, 1.0
    while True:
        p *= rnd.random()
        if p <= limit:
            return k
        k += 1


def write_suite4_database(muni: Municipality, path: Path, logical_date: date, seed: int = 42) -> Path:
    """Write the Suite4 database as of the end of ``logical_date`` to ``path`` (SQLite); returns ``path``.

    Deterministic (same municipality, date and seed → byte-identical file) and atomic (a reader
    sees the old or the new file, never a half-written one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = suite4_rows(muni, logical_date, seed)
    fd, tmp_name = tempfile.mkstemp(prefix=".suite4-", suffix=".sqlite.tmp", dir=path.parent)
    os.close(fd)
    try:
        connection = sqlite3.connect(tmp_name)
        try:
            connection.executescript(SCHEMA)
            placeholders = ", ".join("?" for _ in COLUMNS)
            connection.executemany(f"INSERT INTO wmo_aanvraag ({', '.join(COLUMNS)}) VALUES ({placeholders})", rows)
            connection.commit()
        finally:
            connection.close()
        with open(tmp_name, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path
