"""The demo municipality's begroting (budget), exported by its financial system after every raadsbesluit.

Demodam's raad adopts the primitieve begroting of a year on 7 November of the year before and
changes it twice in that year: the voorjaarsnota (2 July) and the najaarsnota (7 November, the
same meeting as next year's primitieve begroting). After each besluit the financial system writes
``<dropzone>/begroting/begroting_<YYYYMMDD>.csv``: the complete begroting of every year it holds
open (the current year, and the next one once adopted) as it stands after that besluit, in the
shape ``config/contracts/begroting.yaml`` declares (``;``-separated UTF-8, ``dd-mm-jjjj`` dates,
``1.234,56`` amounts).

The figures are the ledger's own expectations (:mod:`demo_gemeente.financien`): salaries per
kostenplaats, the suppliers' typical invoices, subsidies, bijstand, heffingen, leges and rent,
plus norms per inwoner for Wmo and Jeugd zorg in natura, rounded to whole thousands as a
begroting is. Each wijziging adjusts some regels. Everything is a pure function of (seed,
gemeente, year): the same arguments give byte-identical files.
"""
from __future__ import annotations

import random
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from connectors.xaf import TaakveldMapping, default_iv3_taakvelden, default_taakveld_mapping
from demo_gemeente.delivery import write_atomic
from demo_gemeente.exports import csv_bytes, nl_amount, nl_date
from demo_gemeente.financien import SALARY_SHARE, SUPPLIERS, WELZIJN_SUBSIDIE_PER_MONTH
from demo_gemeente.model import Municipality

BEGROTING_SOURCE = "begroting"
BEGROTING_HEADER = ("Begrotingsjaar", "Besluit", "Datum raadsbesluit", "Kostenplaats", "Grootboekrekening",
                    "Taakveld", "Baten/Lasten", "Begroot bedrag")
BESLUITEN = ("Primitieve begroting", "1e begrotingswijziging (voorjaarsnota)", "2e begrotingswijziging (najaarsnota)")
WORKDAYS_PER_YEAR = 260
# Zorg in natura per inwoner per year (Wmo maatwerk 18+, Jeugdhulp 18-): the demo's norms, not CBS figures.
ZORG_PER_INWONER = {("KP671", "4341"): Decimal("330"), ("KP672", "4342"): Decimal("410")}


def besluit_dates(year: int) -> tuple[date, date, date]:
    """The dates of the three besluiten on the begroting of ``year`` (primitief, voorjaarsnota, najaarsnota)."""
    return date(year - 1, 11, 7), date(year, 7, 2), date(year, 11, 7)


def _stage(year: int, day: date) -> int | None:
    """Index of the latest besluit on the begroting of ``year`` taken on or before ``day`` (None: not adopted)."""
    taken = [i for i, when in enumerate(besluit_dates(year)) if when <= day]
    return taken[-1] if taken else None


def open_years(day: date) -> list[int]:
    """The begrotingsjaren the financial system holds on ``day``: this year and, once adopted, the next."""
    return [y for y in (day.year, day.year + 1) if _stage(y, day) is not None]


def _thousands(amount: Decimal) -> Decimal:
    return (amount / 1000).quantize(Decimal("1"), rounding=ROUND_HALF_UP) * 1000


def _base_regels(population: int) -> dict[tuple[str, str], tuple[str, Decimal]]:
    """(kostenplaats, grootboekrekening) -> (Baten|Lasten, yearly amount) the ledger's generator expects."""
    scale = Decimal(str(max(0.2, max(population, 1) / 3000)))
    regels: dict[tuple[str, str], tuple[str, Decimal]] = {}

    def add(cost: str, account: str, kind: str, amount: Decimal) -> None:
        _, current = regels.get((cost, account), (kind, Decimal(0)))
        regels[(cost, account)] = (kind, current + amount)

    for cost, share in SALARY_SHARE.items():
        add(cost, "4110", "Lasten", Decimal(share) * Decimal("5100") * scale * 12)
    # Purchase invoices: about 3.5 per workday (at scale 1) over the suppliers, split over their cost centres.
    per_supplier = Decimal(WORKDAYS_PER_YEAR) * max(Decimal(1), Decimal("3.5") * scale) / len(SUPPLIERS)
    for _, _, _, account, costs, typical in SUPPLIERS:
        for cost in costs:
            add(cost, account, "Lasten", per_supplier * typical / len(costs))
    for (cost, account), norm in ZORG_PER_INWONER.items():
        add(cost, account, "Lasten", norm * max(population, 1))
    add("KP61", "4420", "Lasten", WELZIJN_SUBSIDIE_PER_MONTH * scale * 12)
    add("KP11", "4420", "Lasten", Decimal("62000") * scale * 12)
    add("KP63", "4430", "Lasten", Decimal("1350") * Decimal(round(45 * float(scale))) * 12)
    add("KP02", "8310", "Baten", Decimal("1450") * scale * WORKDAYS_PER_YEAR)
    add("KP73", "8320", "Baten", Decimal("980000") * scale)
    add("KP72", "8330", "Baten", Decimal("760000") * scale)
    add("KP52", "8410", "Baten", Decimal("3000") * 3 * 4)
    return regels


def begroting_regels(muni: Municipality, year: int, stage: int, seed: int = 42) -> list[tuple[str, str, str, Decimal]]:
    """The regels of the begroting of ``year`` after besluit ``stage`` (0 primitief, 1 and 2 wijzigingen).

    Returns ``(kostenplaats, grootboekrekening, Baten|Lasten, bedrag)`` sorted by kostenplaats and rekening.
    """
    regels = []
    for (cost, account), (kind, expected) in sorted(_base_regels(muni.population or 3000).items()):
        rnd = random.Random(f"begroting|{seed}|{muni.gemeentecode}|{year}|{cost}|{account}")
        amount = expected * Decimal(str(rnd.uniform(0.95, 1.05)))
        for _ in range(stage):
            # A wijziging touches about a third of the regels, mostly upwards.
            if rnd.random() < 0.35:
                amount *= Decimal(str(rnd.uniform(0.97, 1.08)))
        regels.append((cost, account, kind, max(_thousands(amount), Decimal(1000))))
    return regels


def render_begroting(muni: Municipality, day: date, seed: int = 42) -> bytes:
    """The begroting export of ``day``: every open year's regels after its latest besluit."""
    # The financial system fills the taakveld column from the same mapping the XAF connector reads.
    taakvelden = TaakveldMapping.load(default_taakveld_mapping(), default_iv3_taakvelden())
    rows = []
    for year in open_years(day):
        stage = _stage(year, day)
        besluit, besloten = BESLUITEN[stage], besluit_dates(year)[stage]
        for cost, account, kind, amount in begroting_regels(muni, year, stage, seed):
            rows.append((year, besluit, nl_date(besloten), cost, account, taakvelden.resolve(account, cost) or "", kind,
                         nl_amount(amount)))
    return csv_bytes(BEGROTING_HEADER, rows, "utf-8")


def is_besluit_day(day: date) -> bool:
    """Whether the raad decides on a begroting on ``day`` (and the system exports it)."""
    return any(day in besluit_dates(year) for year in (day.year, day.year + 1))


def write_begroting_deliveries(muni: Municipality, dropzone_root: Path, logical_date: date, seed: int = 42,
                               first_delivery: bool = False) -> list[Path]:
    """Write the begroting export of ``logical_date`` on a besluit day (or on the platform's first day).

    ``first_delivery``: the platform's first day receives the begroting as it stands, whatever the date.
    Returns the written paths (none on other days).
    """
    if not (first_delivery or is_besluit_day(logical_date)):
        return []
    target = Path(dropzone_root) / BEGROTING_SOURCE / f"begroting_{logical_date:%Y%m%d}.csv"
    return [write_atomic(target, render_begroting(muni, logical_date, seed))]
