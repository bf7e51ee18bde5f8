"""The demo municipality's financial administration: a daily XML Auditfile Financieel 3.2 export.

The financial system of Demodam re-exports the audit file of the current fiscal year every
day into ``<dropzone>/xaf/auditfile_<YYYY>_<YYYYMMDD>.xaf``: every booking from 1 January up
to and including the export date, valid against XmlAuditfileFinancieel3.2.xsd.

What it holds, in the shape a municipal ledger has:

* a chart of accounts with balance accounts (bank, debiteuren, crediteuren, BTW-compensatiefonds,
  loonheffing) and baten/lasten accounts by economic category (salarissen, inkoop, huur,
  energie, Wmo and Jeugd zorg in natura, subsidies, inkomensoverdrachten, OZB, algemene
  uitkering, leges, heffingen, huren);
* cost centres per afdeling (``basics`` of type 02), each belonging to one IV3 taakveld in
  ``config/taakvelden.csv`` (Wmo maatwerk on KP671 → 6.71, jeugdhulp on KP672 → 6.72, ...);
* purchase invoices (journal INK, type P) with ``invRef`` and 21% VAT booked on the
  BTW-compensatiefonds, sociaal-domein invoices per zorgaanbieder (the KvK register's
  zorgaanbieders, or the iWmo/iJw declaraties passed in), payments 14-30 days later (BNK),
  monthly salaries, subsidies, bijstand and algemene uitkering, OZB assessments in February,
  daily leges, sales invoices for sports accommodation rent (VRK, type S);
* later changes, as a real re-export shows them: some invoices are re-split over their cost
  lines a few days after booking (changed amounts), some provisional memorial bookings
  are deleted again (lines disappear), and a suspense account ("nog te verdelen") that the
  taakveld mapping deliberately does not cover.

Every day's bookings come from a random generator seeded by (seed, day) only, so a booking
looks the same in every later export, and the same inputs give byte-identical files.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Iterable
from xml.sax.saxutils import escape

from demo_gemeente.delivery import write_atomic
from demo_gemeente.model import Municipality

XAF_SOURCE = "xaf"
XAF_NAMESPACE = "http://www.auditfiles.nl/XAF/3.2"
SOFTWARE = ("Demodam Financieel", "2026.1")
_CENT = Decimal("0.01")

# accID -> (description, accTp, leadCode); B = balans, P = baten en lasten.
ACCOUNTS: dict[str, tuple[str, str, str]] = {
    "0200": ("Materiele vaste activa", "B", "A.MVA"),
    "0900": ("Algemene reserve", "B", "P.EV"),
    "1100": ("BNG Bank rekening-courant", "B", "A.LM"),
    "1300": ("Debiteuren", "B", "A.VORD"),
    "1510": ("Vordering BTW-compensatiefonds", "B", "A.VORD"),
    "1520": ("Af te dragen omzetbelasting", "B", "P.KSV"),
    "1600": ("Crediteuren", "B", "P.KSV"),
    "1700": ("Af te dragen loonheffing", "B", "P.KSV"),
    "1710": ("Af te dragen pensioenpremies", "B", "P.KSV"),
    "4110": ("Salarissen en sociale lasten", "P", "L.1.1"),
    "4310": ("Inkoop overige goederen en diensten", "P", "L.3.4"),
    "4320": ("Huur en onderhoud gebouwen", "P", "L.3.4"),
    "4341": ("Wmo maatwerkdienstverlening zorg in natura", "P", "L.3.4"),
    "4342": ("Jeugdhulp zorg in natura", "P", "L.3.4"),
    "4350": ("Energie", "P", "L.3.2"),
    "4420": ("Subsidies aan instellingen", "P", "L.4.3"),
    "4430": ("Inkomensoverdrachten Participatiewet", "P", "L.4.4"),
    "4990": ("Nog te verdelen kosten (tussenrekening)", "P", "L.7"),
    "8110": ("OZB woningen", "P", "B.2.1"),
    "8120": ("OZB niet-woningen", "P", "B.2.1"),
    "8210": ("Algemene uitkering gemeentefonds", "P", "B.4.1"),
    "8310": ("Leges burgerzaken", "P", "B.3.8"),
    "8320": ("Afvalstoffenheffing", "P", "B.2.2"),
    "8330": ("Rioolheffing", "P", "B.2.2"),
    "8410": ("Huren en pachten", "P", "B.3.5"),
}

# Cost centre -> (description, afdeling). Their taakveld is in config/taakvelden.csv.
COST_CENTRES: dict[str, tuple[str, str]] = {
    "KP01": ("Bestuur en griffie", "Bestuursondersteuning"),
    "KP02": ("Burgerzaken", "Publiekszaken"),
    "KP04": ("Bedrijfsvoering", "Bedrijfsvoering"),
    "KP11": ("Brandweer en crisisbeheersing", "Openbare orde en veiligheid"),
    "KP21": ("Wegen en verkeer", "Openbare ruimte"),
    "KP43": ("Onderwijsbeleid en leerlingenvervoer", "Maatschappelijke ontwikkeling"),
    "KP52": ("Sportaccommodaties", "Maatschappelijke ontwikkeling"),
    "KP57": ("Openbaar groen", "Openbare ruimte"),
    "KP61": ("Welzijn en burgerparticipatie", "Sociaal domein"),
    "KP62": ("Sociaal wijkteam", "Sociaal domein"),
    "KP63": ("Participatiewet inkomen", "Werk en inkomen"),
    "KP671": ("Wmo maatwerkdienstverlening 18+", "Sociaal domein"),
    "KP672": ("Jeugdhulp maatwerkdienstverlening 18-", "Sociaal domein"),
    "KP72": ("Riolering", "Openbare ruimte"),
    "KP73": ("Afvalinzameling", "Openbare ruimte"),
    "KP83": ("Bouw- en woningtoezicht", "Ruimte en wonen"),
}
SALARY_SHARE = {"KP01": 8, "KP02": 10, "KP04": 22, "KP21": 8, "KP43": 4, "KP52": 3, "KP57": 7, "KP61": 4,
                "KP62": 12, "KP63": 8, "KP671": 4, "KP672": 4, "KP72": 2, "KP73": 2, "KP83": 2}

# Regular suppliers: (custSupID, name, KvK number, expense account, cost centres it serves, typical amount).
SUPPLIERS: tuple[tuple[str, str, str, str, tuple[str, ...], int], ...] = (
    ("CR1001", "Groenbeheer Demodam B.V.", "60011001", "4310", ("KP57",), 4_500),
    ("CR1002", "Infra Wegenbouw Holland B.V.", "60011002", "4310", ("KP21", "KP72"), 18_000),
    ("CR1003", "Energie Levering Nederland N.V.", "60011003", "4350", ("KP04", "KP52", "KP02"), 6_000),
    ("CR1004", "Schoonmaakbedrijf Polder B.V.", "60011004", "4320", ("KP04", "KP52"), 3_200),
    ("CR1005", "ICT Diensten Randstad B.V.", "60011005", "4310", ("KP04", "KP02"), 7_500),
    ("CR1006", "Afvalinzameling Regio West N.V.", "60011006", "4310", ("KP73",), 22_000),
    ("CR1007", "Bouwadvies Demodam V.O.F.", "60011007", "4310", ("KP83", "KP01"), 2_800),
    ("CR1008", "Leerlingenvervoer Taxi Demodam B.V.", "60011008", "4310", ("KP43",), 5_400),
)
CUSTOMERS: tuple[tuple[str, str, str], ...] = (
    ("DB2001", "Voetbalvereniging Demodam Vooruit", "40021001"),
    ("DB2002", "Hockeyclub De Polder", "40021002"),
    ("DB2003", "Zwemvereniging Demodam", "40021003"),
)
SUBSIDY_RECEIVER = ("CR1100", "Stichting Welzijn Demodam", "41021100")
VEILIGHEIDSREGIO = ("CR1101", "Veiligheidsregio Hollands Midden", "41021101")
WELZIJN_SUBSIDIE_PER_MONTH = Decimal("41500.00")


@dataclass(frozen=True)
class Line:
    """One trLine: account, amount, D/C and the references an audit file line carries."""

    account: str
    amount: Decimal
    side: str  # "D" or "C"
    desc: str
    cost: str | None = None
    relation: str | None = None
    invoice: str | None = None
    vat_perc: Decimal | None = None
    vat_amount: Decimal | None = None


@dataclass(frozen=True)
class Booking:
    """One transaction as the financial system shows it in the export of ``as_exported``."""

    journal: str
    nr: str
    day: date
    desc: str
    lines: tuple[Line, ...]
    deleted_on: date | None = None  # provisional bookings deleted again on this day
    corrected_on: date | None = None  # from this day the export shows ``corrected_lines``
    corrected_lines: tuple[Line, ...] = ()

    def as_exported(self, export_day: date) -> "Booking | None":
        """The booking in the export of ``export_day``: None before it exists or after it was deleted."""
        if self.day > export_day or (self.deleted_on is not None and export_day >= self.deleted_on):
            return None
        if self.corrected_on is not None and export_day >= self.corrected_on:
            return replace(self, lines=self.corrected_lines)
        return self


JOURNALS = {
    "INK": ("Inkoopboek", "P"),
    "VRK": ("Verkoopboek", "S"),
    "BNK": ("BNG Bank", "B"),
    "MEM": ("Memoriaal", "M"),
}


def _money(value: float | Decimal) -> Decimal:
    return Decimal(str(value)).quantize(_CENT, rounding=ROUND_HALF_UP)


@functools.lru_cache(maxsize=4)
def _zorgaanbieders(population: int, seed: int, gemeentecode: str, naam: str) -> tuple[tuple[str, str, str], ...]:
    """(name, AGB, KvK) of the KvK register's zorgaanbieders at the epoch, stable for the whole year."""
    from demo_gemeente.generator import EPOCH, DemoWorld
    from demo_gemeente.kvk import KvkRegister

    base = DemoWorld(population=population, seed=seed, gemeentecode=gemeentecode, naam=naam).base()
    state = KvkRegister(base).at(EPOCH)
    return tuple(sorted((o.naam, o.agb_code, o.kvk_nummer) for o in state.zorgaanbieders()))


def _relation_id_for_agb(agb: str) -> str:
    return f"ZA{agb}"


class _DayBooker:
    """Generates one day's bookings (independent of the export date)."""

    def __init__(self, day: date, seed: int, scale: float, zorgaanbieders: tuple[tuple[str, str, str], ...],
                 spending_days: dict[date, list[dict[str, Any]]] | None) -> None:
        self.day = day
        self.rnd = random.Random(f"xaf|{seed}|{day.isoformat()}")
        self.scale = scale
        self.zorgaanbieders = zorgaanbieders
        self.spending_days = spending_days
        self.seq = 0
        self.bookings: list[Booking] = []

    def _nr(self, day: date | None = None) -> str:
        self.seq += 1
        if day is not None and day != self.day:
            # Booked later on behalf of this day (a payment): the origin day keeps numbers unique.
            return f"{day:%Y%m%d}-{self.day:%m%d}{self.seq:03d}"
        return f"{self.day:%Y%m%d}-{self.seq:03d}"

    def add(self, journal: str, desc: str, lines: Iterable[Line], day: date | None = None, **extra: Any) -> Booking:
        booking = Booking(journal, self._nr(day), day or self.day, desc, tuple(lines), **extra)
        self.bookings.append(booking)
        return booking

    def run(self) -> list[Booking]:
        day, rnd = self.day, self.rnd
        workday = day.weekday() < 5
        if workday:
            for _ in range(max(1, round(rnd.uniform(2, 5) * self.scale))):
                self.purchase_invoice()
            self.leges()
            if rnd.random() < 0.15:
                self.suspense_booking()
            if rnd.random() < 0.2:
                self.provisional_memorial()
        if self.spending_days is not None:
            self.sociaal_domein_from_declaraties(self.spending_days.get(day, []))
        elif day.weekday() in (0, 3):
            self.sociaal_domein_invoices()
        if day.day == 1:
            self.algemene_uitkering()
            self.subsidie_welzijn()
        if day.day == 15 and day.month % 3 == 1:
            self.sales_rent()
        if day.day == 20:
            self.bijstand()
        if day.day == 25:
            self.salaries()
        if day.month == 2 and day.day == 28:
            self.ozb_aanslagen()
        return self.bookings

    # -- booking kinds

    def _payment(self, relation: str, invoice: str, amount: Decimal, name: str) -> None:
        """Payment of a purchase invoice 14-30 days later (only visible once that day is exported)."""
        pay_day = self.day + timedelta(days=self.rnd.randint(14, 30))
        if pay_day.year != self.day.year:
            return
        self.add("BNK", f"Betaling {name} factuur {invoice}", [
            Line("1600", amount, "D", f"Betaling factuur {invoice}", relation=relation, invoice=invoice),
            Line("1100", amount, "C", f"Betaling {name}"),
        ], day=pay_day)

    def purchase_invoice(self) -> None:
        rnd = self.rnd
        relation, name, _, account, costs, typical = rnd.choice(SUPPLIERS)
        invoice = f"F{self.day:%y%m%d}{self.seq + 1:03d}{relation[-2:]}"
        n_lines = 2 if rnd.random() < 0.35 else 1
        amounts = [_money(rnd.uniform(0.3, 1.7) * typical / n_lines) for _ in range(n_lines)]
        cost_lines = [rnd.choice(costs) for _ in range(n_lines)]
        lines, corrected = self._purchase_lines(relation, name, invoice, account, amounts, cost_lines)
        extra: dict[str, Any] = {}
        if n_lines == 2 and rnd.random() < 0.3:
            # The controller re-splits the invoice over its cost lines a few days later.
            shift = _money(amounts[0] * Decimal("0.25"))
            new_amounts = [amounts[0] - shift, amounts[1] + shift]
            _, corrected = self._purchase_lines(relation, name, invoice, account, new_amounts, cost_lines)
            extra = {"corrected_on": self.day + timedelta(days=rnd.randint(1, 5)), "corrected_lines": corrected}
        self.add("INK", f"{name} factuur {invoice}", lines, **extra)
        self._payment(relation, invoice, lines[0].amount, name)

    @staticmethod
    def _purchase_lines(relation: str, name: str, invoice: str, account: str, amounts: list[Decimal],
                        costs: list[str]) -> tuple[tuple[Line, ...], tuple[Line, ...]]:
        vat_perc = Decimal("21.000")
        vats = [_money(a * Decimal("0.21")) for a in amounts]
        total = sum(amounts, Decimal(0)) + sum(vats, Decimal(0))
        lines = [Line("1600", total, "C", f"{name} factuur {invoice}", relation=relation, invoice=invoice)]
        for amount, vat, cost in zip(amounts, vats, costs):
            lines.append(Line(account, amount, "D", f"{ACCOUNTS[account][0]} {COST_CENTRES[cost][0]}", cost=cost,
                              vat_perc=vat_perc, vat_amount=vat))
        lines.append(Line("1510", sum(vats, Decimal(0)), "D", "BTW naar BTW-compensatiefonds"))
        built = tuple(lines)
        return built, built

    def _care_invoice(self, naam: str, agb: str, wet: str, amounts: list[Decimal], invoice: str) -> None:
        account, cost, label = ("4341", "KP671", "Wmo") if wet == "wmo" else ("4342", "KP672", "Jeugdwet")
        relation = _relation_id_for_agb(agb)
        total = sum(amounts, Decimal(0))
        lines = [Line("1600", total, "C", f"{naam} {label} factuur {invoice}", relation=relation, invoice=invoice)]
        for amount in amounts:
            # Care is VAT-exempt (art. 11 Wet OB): no VAT line.
            lines.append(Line(account, amount, "D", f"{label} zorg in natura {naam}"[:999], cost=cost,
                              vat_perc=Decimal("0.000"), vat_amount=Decimal("0.00")))
        self.add("INK", f"{label} declaratie {naam}", lines)
        self._payment(relation, invoice, total, naam)

    def sociaal_domein_invoices(self) -> None:
        for naam, agb, _ in self.zorgaanbieders:
            if self.rnd.random() < 0.5:
                continue
            wet = self.rnd.choice(("wmo", "jeugd"))
            amounts = [_money(self.rnd.uniform(300, 4_500)) for _ in range(self.rnd.randint(1, 3))]
            self._care_invoice(naam, agb, wet, amounts, f"{agb}-{self.day:%Y%m%d}-{wet}")

    def sociaal_domein_from_declaraties(self, declaraties: list[dict[str, Any]]) -> None:
        grouped: dict[tuple[str, str, str], list[Decimal]] = {}
        for item in declaraties:
            naam, agb, _ = _aanbieder(item)
            grouped.setdefault((agb, str(item["wet"]).lower(), naam), []).append(_money(Decimal(str(item["amount"]))))
        for (agb, wet, naam), amounts in sorted(grouped.items()):
            self._care_invoice(naam, agb, "wmo" if wet == "wmo" else "jeugd", amounts, f"{agb}-{self.day:%Y%m%d}-{wet}")

    def leges(self) -> None:
        amount = _money(self.rnd.uniform(400, 2_500) * self.scale)
        self.add("BNK", "Ontvangen leges burgerzaken (pin)", [
            Line("1100", amount, "D", "Pinontvangsten balie"),
            Line("8310", amount, "C", "Leges reisdocumenten en rijbewijzen", cost="KP02"),
        ])

    def suspense_booking(self) -> None:
        amount = _money(self.rnd.uniform(80, 1_200))
        self.add("MEM", "Nog te verdelen kosten", [
            Line("4990", amount, "D", "Kosten nog toe te rekenen aan kostenplaats"),
            Line("1600", amount, "C", "Nog te ontvangen factuur"),
        ])

    def provisional_memorial(self) -> None:
        amount = _money(self.rnd.uniform(500, 5_000))
        cost = self.rnd.choice(sorted(COST_CENTRES))
        self.add("MEM", "Voorlopige overboeking kosten", [
            Line("4310", amount, "D", "Voorlopige toerekening", cost=cost),
            Line("4990", amount, "C", "Voorlopige toerekening"),
        ], deleted_on=self.day + timedelta(days=self.rnd.randint(1, 4)))

    def algemene_uitkering(self) -> None:
        # About EUR 1,850 per inhabitant a year, paid monthly.
        amount = _money(Decimal("1850") * 3000 * Decimal(str(self.scale)) / 12)
        self.add("BNK", f"Algemene uitkering gemeentefonds {self.day:%m-%Y}", [
            Line("1100", amount, "D", "Ontvangst Rijk"),
            Line("8210", amount, "C", "Algemene uitkering"),
        ])

    def subsidie_welzijn(self) -> None:
        relation, name, _ = SUBSIDY_RECEIVER
        amount = _money(WELZIJN_SUBSIDIE_PER_MONTH * Decimal(str(self.scale)))
        self.add("BNK", f"Subsidie {name} {self.day:%m-%Y}", [
            Line("4420", amount, "D", f"Budgetsubsidie {name}", cost="KP61", relation=relation),
            Line("1100", amount, "C", f"Betaling subsidie {name}", relation=relation),
        ])
        relation, name, _ = VEILIGHEIDSREGIO
        amount = _money(Decimal("62000") * Decimal(str(self.scale)))
        self.add("BNK", f"Bijdrage {name} {self.day:%m-%Y}", [
            Line("4420", amount, "D", f"Gemeentelijke bijdrage {name}", cost="KP11", relation=relation),
            Line("1100", amount, "C", f"Betaling bijdrage {name}", relation=relation),
        ])

    def bijstand(self) -> None:
        amount = _money(Decimal("1350") * Decimal(str(round(45 * self.scale))) * Decimal(str(self.rnd.uniform(0.97, 1.03))))
        self.add("BNK", f"Uitkeringen Participatiewet {self.day:%m-%Y}", [
            Line("4430", amount, "D", "Algemene bijstand", cost="KP63"),
            Line("1100", amount, "C", "Uitbetaling uitkeringen"),
        ])

    def salaries(self) -> None:
        lines: list[Line] = []
        total = Decimal(0)
        for cost, share in sorted(SALARY_SHARE.items()):
            gross = _money(Decimal(share) * Decimal("5100") * Decimal(str(self.scale)) * Decimal(str(self.rnd.uniform(0.99, 1.01))))
            total += gross
            lines.append(Line("4110", gross, "D", f"Salarissen {COST_CENTRES[cost][0]}", cost=cost))
        tax = _money(total * Decimal("0.31"))
        pension = _money(total * Decimal("0.12"))
        lines += [
            Line("1700", tax, "C", "Loonheffing"),
            Line("1710", pension, "C", "Pensioenpremie ABP"),
            Line("1100", total - tax - pension, "C", "Netto salarissen"),
        ]
        self.add("MEM", f"Salarisverwerking {self.day:%m-%Y}", lines)

    def ozb_aanslagen(self) -> None:
        woningen = _money(Decimal("1450000") * Decimal(str(self.scale)))
        niet_woningen = _money(Decimal("620000") * Decimal(str(self.scale)))
        afval = _money(Decimal("980000") * Decimal(str(self.scale)))
        riool = _money(Decimal("760000") * Decimal(str(self.scale)))
        self.add("MEM", f"Aanslagen gemeentelijke belastingen {self.day.year}", [
            Line("1300", woningen + niet_woningen + afval + riool, "D", "Aanslagen belastingjaar"),
            Line("8110", woningen, "C", "OZB woningen"),
            Line("8120", niet_woningen, "C", "OZB niet-woningen"),
            Line("8320", afval, "C", "Afvalstoffenheffing", cost="KP73"),
            Line("8330", riool, "C", "Rioolheffing", cost="KP72"),
        ])

    def sales_rent(self) -> None:
        for relation, name, _ in CUSTOMERS:
            rent = _money(self.rnd.uniform(1_800, 4_200))
            vat = _money(rent * Decimal("0.09"))
            invoice = f"V{self.day:%Y%m}{relation[-3:]}"
            self.add("VRK", f"Huur sportaccommodatie {name}", [
                Line("1300", rent + vat, "D", f"Huur kwartaal {name}", relation=relation, invoice=invoice),
                Line("8410", rent, "C", "Huur sportaccommodatie", cost="KP52", vat_perc=Decimal("9.000"), vat_amount=vat),
                Line("1520", vat, "C", "Af te dragen omzetbelasting 9%"),
            ])


def _aanbieder(item: dict[str, Any]) -> tuple[str, str, str]:
    """(name, AGB, KvK) of a declaratie: nested ``aanbieder`` dict or flat ``aanbieder_*`` keys."""
    nested = item.get("aanbieder")
    if isinstance(nested, dict):
        return str(nested.get("naam") or nested.get("name")), str(nested["agb"]), str(nested.get("kvk") or "")
    return (str(item.get("aanbieder_naam") or item.get("aanbieder_name")), str(item["aanbieder_agb"]),
            str(item.get("aanbieder_kvk") or ""))


def bookings_up_to(muni: Municipality, export_day: date, seed: int = 42,
                   sociaal_domein_spending: list[dict[str, Any]] | None = None) -> list[Booking]:
    """Every booking of ``export_day``'s fiscal year as the export of ``export_day`` shows it, in journal order."""
    scale = max(0.2, max(muni.population, 1) / 3000)
    zorg = _zorgaanbieders(muni.population or 3000, muni.seed, muni.gemeentecode, muni.naam)
    spending_days: dict[date, list[dict[str, Any]]] | None = None
    if sociaal_domein_spending is not None:
        spending_days = {}
        for item in sociaal_domein_spending:
            when = item["date"] if isinstance(item["date"], date) else date.fromisoformat(str(item["date"]))
            spending_days.setdefault(when, []).append(item)
    shown: list[Booking] = []
    day = date(export_day.year, 1, 1)
    while day <= export_day:
        for booking in _DayBooker(day, seed, scale, zorg, spending_days).run():
            exported = booking.as_exported(export_day)
            if exported is not None:
                shown.append(exported)
        day += timedelta(days=1)
    shown.sort(key=lambda b: (b.journal, b.day, b.nr))
    return shown


def _relations(muni: Municipality, seed: int, sociaal_domein_spending: list[dict[str, Any]] | None) -> list[tuple[str, str, str, str]]:
    """(custSupID, name, KvK, custSupTp) of every relation, sorted by id."""
    relations = {r[0]: (r[0], r[1], r[2], "S") for r in SUPPLIERS}
    for relation, name, kvk in (SUBSIDY_RECEIVER, VEILIGHEIDSREGIO):
        relations[relation] = (relation, name, kvk, "S")
    for relation, name, kvk in CUSTOMERS:
        relations[relation] = (relation, name, kvk, "C")
    for naam, agb, kvk in _zorgaanbieders(muni.population or 3000, muni.seed, muni.gemeentecode, muni.naam):
        relations[_relation_id_for_agb(agb)] = (_relation_id_for_agb(agb), naam, kvk, "S")
    for item in sociaal_domein_spending or []:
        naam, agb, kvk = _aanbieder(item)
        relations.setdefault(_relation_id_for_agb(agb), (_relation_id_for_agb(agb), naam, kvk, "S"))
    return [relations[k] for k in sorted(relations)]


def _el(name: str, value: Any) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


def render_auditfile(muni: Municipality, export_day: date, seed: int = 42,
                     sociaal_domein_spending: list[dict[str, Any]] | None = None) -> bytes:
    """The XAF 3.2 audit file of ``export_day`` (year to date) as bytes."""
    year = export_day.year
    bookings = bookings_up_to(muni, export_day, seed, sociaal_domein_spending)
    out: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>\n', f'<auditfile xmlns="{XAF_NAMESPACE}">\n']
    out.append("<header>" + _el("fiscalYear", year) + _el("startDate", f"{year}-01-01") + _el("endDate", f"{year}-12-31")
               + _el("curCode", "EUR") + _el("dateCreated", export_day.isoformat()) + _el("softwareDesc", SOFTWARE[0])
               + _el("softwareVersion", SOFTWARE[1]) + "</header>\n")
    out.append("<company>" + _el("companyIdent", f"GM{muni.gemeentecode}") + _el("companyName", f"Gemeente {muni.naam}")
               + _el("taxRegistrationCountry", "NL") + _el("taxRegIdent", f"NL00{muni.gemeentecode}0000B01") + "\n")
    out.append("<customersSuppliers>\n")
    for relation, name, kvk, kind in _relations(muni, seed, sociaal_domein_spending):
        out.append("<customerSupplier>" + _el("custSupID", relation) + _el("custSupName", name[:50])
                   + (_el("commerceNr", kvk) if kvk else "") + _el("taxRegistrationCountry", "NL")
                   + _el("custSupTp", kind) + "</customerSupplier>\n")
    out.append("</customersSuppliers>\n<generalLedger>\n")
    for acc_id, (desc, kind, lead) in sorted(ACCOUNTS.items()):
        out.append("<ledgerAccount>" + _el("accID", acc_id) + _el("accDesc", desc) + _el("accTp", kind)
                   + _el("leadCode", lead) + "</ledgerAccount>\n")
    out.append("<basics>\n")
    for cost, (desc, afdeling) in sorted(COST_CENTRES.items()):
        out.append("<basic>" + _el("basicType", "02") + _el("basicID", cost) + _el("basicDesc", f"{desc} ({afdeling})")
                   + "</basic>\n")
    out.append("</basics>\n</generalLedger>\n<vatCodes>\n")
    out.append("<vatCode>" + _el("vatID", "BCF21") + _el("vatDesc", "BTW 21% compensabel (BTW-compensatiefonds)")
               + _el("vatToClaimAccID", "1510") + "</vatCode>\n")
    out.append("<vatCode>" + _el("vatID", "OB9") + _el("vatDesc", "Omzetbelasting 9%") + _el("vatToPayAccID", "1520")
               + "</vatCode>\n")
    out.append("<vatCode>" + _el("vatID", "VRIJ") + _el("vatDesc", "Vrijgesteld (zorg)") + "</vatCode>\n</vatCodes>\n<periods>\n")
    for month in range(1, 13):
        start = date(year, month, 1)
        end = (date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)) - timedelta(days=1)
        out.append("<period>" + _el("periodNumber", month) + _el("periodDesc", f"{start:%m-%Y}")
                   + _el("startDatePeriod", start.isoformat()) + _el("endDatePeriod", end.isoformat()) + "</period>\n")
    out.append("</periods>\n")
    lines_count = sum(len(b.lines) for b in bookings)
    total_debit = sum((l.amount for b in bookings for l in b.lines if l.side == "D"), Decimal(0))
    total_credit = sum((l.amount for b in bookings for l in b.lines if l.side == "C"), Decimal(0))
    out.append("<transactions>" + _el("linesCount", lines_count) + _el("totalDebit", f"{total_debit:.2f}")
               + _el("totalCredit", f"{total_credit:.2f}") + "\n")
    for journal, (desc, kind) in sorted(JOURNALS.items()):
        out.append("<journal>" + _el("jrnID", journal) + _el("desc", desc) + _el("jrnTp", kind) + "\n")
        for booking in (b for b in bookings if b.journal == journal):
            out.append("<transaction>" + _el("nr", booking.nr) + _el("desc", booking.desc)
                       + _el("periodNumber", booking.day.month) + _el("trDt", booking.day.isoformat()))
            for number, line in enumerate(booking.lines, start=1):
                out.append("<trLine>" + _el("nr", number) + _el("accID", line.account) + _el("docRef", line.invoice or booking.nr)
                           + _el("effDate", booking.day.isoformat()) + _el("desc", line.desc)
                           + _el("amnt", f"{line.amount:.2f}") + _el("amntTp", line.side)
                           + (_el("custSupID", line.relation) if line.relation else "")
                           + (_el("invRef", line.invoice) if line.invoice else "")
                           + (_el("costID", line.cost) if line.cost else ""))
                if line.vat_perc is not None:
                    vat_id = "VRIJ" if not line.vat_amount else ("OB9" if line.side == "C" else "BCF21")
                    out.append("<vat>" + _el("vatID", vat_id) + _el("vatPerc", f"{line.vat_perc:.3f}")
                               + _el("vatAmnt", f"{line.vat_amount:.2f}") + _el("vatAmntTp", line.side) + "</vat>")
                out.append("</trLine>")
            out.append("</transaction>\n")
        out.append("</journal>\n")
    out.append("</transactions>\n</company>\n</auditfile>\n")
    return "".join(out).encode("utf-8")


def xaf_file_name(export_day: date) -> str:
    """``auditfile_<YYYY>_<YYYYMMDD>.xaf``: fiscal year and export date."""
    return f"auditfile_{export_day.year}_{export_day:%Y%m%d}.xaf"



def write_xaf_deliveries(muni: Municipality, dropzone_root: Path, logical_date: date, seed: int = 42,
                         sociaal_domein_spending: list[dict[str, Any]] | None = None) -> list[Path]:
    """Write the financial system's export of ``logical_date`` into ``<dropzone_root>/xaf/``.

    ``sociaal_domein_spending``: the iWmo/iJw declaraties as dicts with ``amount``, ``date``,
    ``wet`` (``"wmo"`` or ``"jeugd"``) and the aanbieder (``aanbieder: {naam, agb, kvk}`` or flat
    ``aanbieder_naam``/``aanbieder_agb``/``aanbieder_kvk``); each aanbieder's declaraties of one
    day become one invoice. Without it, the KvK register's zorgaanbieders invoice twice a week.
    Returns the written file (the same bytes for the same inputs; written atomically).
    """
    target = Path(dropzone_root) / XAF_SOURCE / xaf_file_name(logical_date)
    write_atomic(target, render_auditfile(muni, logical_date, seed, sociaal_domein_spending))
    return [target]
