"""A small gold layer for the dashboard tests, written with ``deltalake`` as the gold engine writes it.

Demodam (gemeentecode 9999) with three wijken, two buurten each. Marts:

* ``wmo_jeugd_voorzieningen`` (sociaal_domein; definition file; gebied buurt; dimensions
  wet and maand; measures aantal_clienten, toegewezen_bedrag; per 1,000 inwoners), built
  for two peildata. Havenkwartier is too small: its cells are hidden (primair); Noord's
  Jeugdwet cells are hidden secondarily; the gemeente total of 2026-08 is hidden too, so
  the trend has a gap.
* ``uitgaven_sociaal_domein`` (financien; gebied none; maand and kostensoort; no persons),
  built only for an older peildatum, so it is "verouderd" on the newest one.
* ``huishoudens_per_wijk`` (demografie; gebied wijk; no maand).
* ``inwoners_per_buurt`` (demografie; gebied buurt with wijknaam, buurtcode and buurtnaam as
  columns; leeftijdsklasse). Havenkwartier's buurten have 3 residents of 65+ each (hidden, primair)
  and their 0-14 cells are hidden secondarily.
* ``verdwenen_mart`` (demografie in mart_status): a gold table whose definition file was removed.

Everything is deterministic; the tests assert against the numbers defined here.
"""
from __future__ import annotations

import hashlib
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake

NEWEST = date(2026, 11, 27)
PREVIOUS = date(2026, 11, 26)
OLD = date(2026, 11, 20)
MONTHS = ("2026-06", "2026-07", "2026-08", "2026-09", "2026-10", "2026-11")
GAP_MONTH = "2026-08"
THRESHOLD = 5

WIJKEN = (
    # code, name, inwoners, {wet: clients in the first month}
    ("WK999901", "Centrum", 4200, {"Wmo": 60, "Jeugdwet": 24}),
    ("WK999902", "Noord", 3100, {"Wmo": 41, "Jeugdwet": 12}),
    ("WK999903", "Havenkwartier", 650, {"Wmo": 2, "Jeugdwet": 1}),
)
WETTEN = ("Wmo", "Jeugdwet")

DEFINITIONS = {
    "wmo_jeugd_voorzieningen": """\
mart: wmo_jeugd_voorzieningen
domein: sociaal_domein
titel: Cliënten met een Wmo- of jeugdvoorziening
beschrijving: Unieke cliënten met een toegewezen voorziening per maand, per wet en per gebied.
eigenaar: Team Sociaal Domein
bronnen: [TOEWIJZING, INWONERS]
eenheden: |
  SELECT 1
gebied: buurt
dimensies:
  - {kolom: wet}
  - {kolom: maand, totaal: false}
maten:
  - {kolom: aantal_clienten, functie: count_distinct, van: client}
  - {kolom: toegewezen_bedrag, functie: sum, van: bedrag}
personen: aantal_clienten
per_1000_inwoners: [aantal_clienten]
""",
    "uitgaven_sociaal_domein": """\
mart: uitgaven_sociaal_domein
domein: financien
titel: Uitgaven sociaal domein
beschrijving: Geboekte lasten per maand en kostensoort uit de grootboekadministratie (XAF).
eigenaar: Team Financiën
bronnen: [GROOTBOEKMUTATIE]
eenheden: |
  SELECT 1
gebied: none
dimensies:
  - {kolom: kostensoort}
  - {kolom: maand, totaal: false}
maten:
  - {kolom: bedrag, functie: sum, van: bedrag}
""",
    "huishoudens_per_wijk": """\
mart: huishoudens_per_wijk
domein: demografie
titel: Huishoudens per wijk
beschrijving: Woonhuishoudens per wijk naar huishoudtype.
eigenaar: Team Onderzoek en Statistiek
bronnen: [INWONERS]
eenheden: |
  SELECT 1
gebied: wijk
dimensies:
  - {kolom: huishoudtype}
maten:
  - {kolom: aantal_huishoudens, functie: count_distinct, van: huishouden}
personen: aantal_huishoudens
per_1000_inwoners: [aantal_huishoudens]
""",
    "inwoners_per_buurt": """\
mart: inwoners_per_buurt
domein: demografie
titel: Inwoners per wijk en buurt
beschrijving: Inwoners per wijk en buurt naar leeftijdsklasse.
eigenaar: Team Onderzoek en Statistiek
bronnen: [INWONERS]
eenheden: |
  SELECT 1
gebied: buurt
gebiedskolommen: [wijknaam, buurtcode, buurtnaam]
dimensies:
  - {kolom: leeftijdsklasse}
maten:
  - {kolom: aantal_inwoners, functie: count_distinct, van: inwoner}
personen: aantal_inwoners
""",
}


def _gebied(niveau: str, code: str, naam: str, wijkcode: str | None) -> dict:
    return {"gebiedsniveau": niveau, "gebiedscode": code, "gebiedsnaam": naam, "wijkcode": wijkcode}


def _hide(row: dict, measures: tuple[str, ...], kind: str) -> None:
    for measure in measures:
        row[measure] = None
    row["onderdrukt"] = True
    row["onderdrukking"] = kind


def wmo_rows(peildatum: date) -> list[dict]:
    """Cells of the sociaal-domein mart: gemeente, wijk and buurt × wet (+ Totaal) × month."""
    shift = (peildatum - PREVIOUS).days  # the newer peildatum counts one client more everywhere
    areas = [("gemeente", "GM9999", "Demodam", None, sum(w[2] for w in WIJKEN), None)]
    for code, name, inwoners, base in WIJKEN:
        areas.append(("wijk", code, name, code, inwoners, base))
        for index, share in ((1, 0.6), (2, 0.4)):
            buurtcode = f"BU{code[2:]}{index:02d}"
            areas.append(("buurt", buurtcode, f"{name} {index}", code, round(inwoners * share),
                          {wet: round(value * share) for wet, value in base.items()}))
    rows = []
    for month_index, month in enumerate(MONTHS):
        for niveau, code, name, wijkcode, inwoners, base in areas:
            if base is None:  # gemeente: the sum over the wijken
                base = {wet: sum(w[3][wet] for w in WIJKEN) for wet in WETTEN}
            counts = {wet: value + (month_index + shift if value >= THRESHOLD else 0) for wet, value in base.items()}
            counts["Totaal"] = sum(counts.values())
            for wet, clients in counts.items():
                row = {
                    "peildatum": peildatum, **_gebied(niveau, code, name, wijkcode), "wet": wet, "maand": month,
                    "aantal_clienten": clients,
                    "toegewezen_bedrag": Decimal(f"{clients * 1250 + month_index * 10}.50"),
                    "inwoners": inwoners, "huishoudens": round(inwoners / 2.2),
                    "aantal_clienten_per_1000_inwoners": round(clients * 1000 / inwoners, 1),
                    "onderdrukt": False, "onderdrukking": None,
                }
                if clients < THRESHOLD:
                    _hide(row, ("aantal_clienten", "toegewezen_bedrag", "aantal_clienten_per_1000_inwoners"), "primair")
                elif niveau == "wijk" and code == "WK999902" and wet == "Jeugdwet":
                    _hide(row, ("aantal_clienten", "toegewezen_bedrag", "aantal_clienten_per_1000_inwoners"), "secundair")
                elif niveau == "gemeente" and wet == "Totaal" and month == GAP_MONTH:
                    _hide(row, ("aantal_clienten", "toegewezen_bedrag", "aantal_clienten_per_1000_inwoners"), "secundair")
                rows.append(row)
    return rows


WMO_SCHEMA = pa.schema([
    ("peildatum", pa.date32()), ("gebiedsniveau", pa.string()), ("gebiedscode", pa.string()),
    ("gebiedsnaam", pa.string()), ("wijkcode", pa.string()), ("wet", pa.string()), ("maand", pa.string()),
    ("aantal_clienten", pa.int64()), ("toegewezen_bedrag", pa.decimal128(18, 2)),
    ("inwoners", pa.int64()), ("huishoudens", pa.int64()), ("aantal_clienten_per_1000_inwoners", pa.float64()),
    ("onderdrukt", pa.bool_()), ("onderdrukking", pa.string()),
])


def uitgaven_rows(peildatum: date) -> list[dict]:
    """Cells of the financien mart (no areas, no persons: nothing is hidden)."""
    rows = []
    for month_index, month in enumerate(MONTHS):
        amounts = {"Wmo": 180_000.0 + 5_000 * month_index, "Jeugdzorg": 95_500.25 + 1_000 * month_index}
        amounts["Totaal"] = sum(amounts.values())
        for kostensoort, amount in amounts.items():
            rows.append({"peildatum": peildatum, "kostensoort": kostensoort, "maand": month, "bedrag": amount,
                         "onderdrukt": False, "onderdrukking": None})
    return rows


UITGAVEN_SCHEMA = pa.schema([
    ("peildatum", pa.date32()), ("kostensoort", pa.string()), ("maand", pa.string()), ("bedrag", pa.float64()),
    ("onderdrukt", pa.bool_()), ("onderdrukking", pa.string()),
])


def huishoudens_rows(peildatum: date) -> list[dict]:
    """Cells of the demografie mart: gemeente and wijk × huishoudtype (+ Totaal)."""
    types = {"eenpersoons": 0.38, "paar zonder kinderen": 0.3, "paar met kinderen": 0.25, "eenouder": 0.07}
    areas = [("gemeente", "GM9999", "Demodam", None, sum(w[2] for w in WIJKEN))]
    areas += [("wijk", code, name, code, inwoners) for code, name, inwoners, _ in WIJKEN]
    rows = []
    for niveau, code, name, wijkcode, inwoners in areas:
        households = round(inwoners / 2.2)
        counts = {kind: round(households * share) for kind, share in types.items()}
        counts["Totaal"] = sum(counts.values())
        for kind, count in counts.items():
            row = {"peildatum": peildatum, **_gebied(niveau, code, name, wijkcode), "huishoudtype": kind,
                   "aantal_huishoudens": count, "inwoners": inwoners, "huishoudens": households,
                   "aantal_huishoudens_per_1000_inwoners": round(count * 1000 / inwoners, 1),
                   "onderdrukt": False, "onderdrukking": None}
            if count < THRESHOLD:
                _hide(row, ("aantal_huishoudens", "aantal_huishoudens_per_1000_inwoners"), "primair")
            rows.append(row)
    return rows


HUISHOUDENS_SCHEMA = pa.schema([
    ("peildatum", pa.date32()), ("gebiedsniveau", pa.string()), ("gebiedscode", pa.string()),
    ("gebiedsnaam", pa.string()), ("wijkcode", pa.string()), ("huishoudtype", pa.string()),
    ("aantal_huishoudens", pa.int64()), ("inwoners", pa.int64()), ("huishoudens", pa.int64()),
    ("aantal_huishoudens_per_1000_inwoners", pa.float64()), ("onderdrukt", pa.bool_()), ("onderdrukking", pa.string()),
])


def inwoners_rows(peildatum: date) -> list[dict]:
    """Cells of the area mart with area columns: gemeente, wijk and buurt × leeftijdsklasse (+ Totaal)."""
    counts = {}  # (niveau, code) -> {klasse: count}
    for code, name, _, _ in WIJKEN:
        for index in (1, 2):
            counts[("buurt", f"BU{code[2:]}{index:02d}")] = {"0-14": 120, "65+": 3 if code == "WK999903" else 210}
        counts[("wijk", code)] = {k: sum(counts[("buurt", f"BU{code[2:]}{i:02d}")][k] for i in (1, 2)) for k in ("0-14", "65+")}
    counts[("gemeente", "GM9999")] = {k: sum(counts[("wijk", w[0])][k] for w in WIJKEN) for k in ("0-14", "65+")}
    names = {code: name for code, name, _, _ in WIJKEN}
    rows = []
    for (niveau, code), per_klasse in counts.items():
        wijk = None if niveau == "gemeente" else code if niveau == "wijk" else f"WK{code[2:8]}"
        buurtnaam = f"{names[wijk]} {int(code[-2:])}" if niveau == "buurt" else None
        area = {"gebiedsniveau": niveau, "gebiedscode": code,
                "gebiedsnaam": "Demodam" if niveau == "gemeente" else buurtnaam or names[wijk], "wijkcode": wijk,
                "wijknaam": names.get(wijk), "buurtcode": code if niveau == "buurt" else None, "buurtnaam": buurtnaam}
        for klasse, count in {**per_klasse, "Totaal": sum(per_klasse.values())}.items():
            row = {"peildatum": peildatum, **area, "leeftijdsklasse": klasse, "aantal_inwoners": count,
                   "inwoners": None, "huishoudens": None, "onderdrukt": False, "onderdrukking": None}
            if count < THRESHOLD:
                _hide(row, ("aantal_inwoners",), "primair")
            elif code.startswith("BU999903") and klasse == "0-14":
                _hide(row, ("aantal_inwoners",), "secundair")  # the buurt total minus it would give the 65+ cell
            rows.append(row)
    return rows


INWONERS_SCHEMA = pa.schema([
    ("peildatum", pa.date32()), ("gebiedsniveau", pa.string()), ("gebiedscode", pa.string()),
    ("gebiedsnaam", pa.string()), ("wijkcode", pa.string()), ("wijknaam", pa.string()), ("buurtcode", pa.string()),
    ("buurtnaam", pa.string()), ("leeftijdsklasse", pa.string()), ("aantal_inwoners", pa.int64()),
    ("inwoners", pa.int64()), ("huishoudens", pa.int64()), ("onderdrukt", pa.bool_()), ("onderdrukking", pa.string()),
])

STATUS_SCHEMA = pa.schema([
    ("mart", pa.string()), ("domein", pa.string()), ("peildatum", pa.date32()),
    ("gebouwd_op", pa.timestamp("us", tz="UTC")), ("bronversies", pa.map_(pa.string(), pa.int64())),
    ("bron_bijgewerkt", pa.timestamp("us", tz="UTC")), ("rijen", pa.int64()),
    ("onderdrukte_cellen_primair", pa.int64()), ("onderdrukte_cellen_secundair", pa.int64()),
    ("drempel", pa.int32()), ("definitie_sha256", pa.string()),
])


def _status(mart: str, domein: str, peildatum: date, rows: list[dict], versions: dict[str, int]) -> dict:
    return {
        "mart": mart, "domein": domein, "peildatum": peildatum,
        # Built at 03:15 UTC the next night; the sources were last updated at 01:05 UTC that night.
        "gebouwd_op": datetime.combine(peildatum + timedelta(days=1), time(3, 15), timezone.utc),
        "bronversies": sorted(versions.items()),
        "bron_bijgewerkt": datetime.combine(peildatum + timedelta(days=1), time(1, 5), timezone.utc),
        "rijen": len(rows),
        "onderdrukte_cellen_primair": sum(r.get("onderdrukking") == "primair" for r in rows),
        "onderdrukte_cellen_secundair": sum(r.get("onderdrukking") == "secundair" for r in rows),
        "drempel": THRESHOLD, "definitie_sha256": hashlib.sha256(DEFINITIONS.get(mart, mart).encode()).hexdigest(),
    }


def _write(path: Path, rows: list[dict], schema: pa.Schema, partitioned: bool = True) -> None:
    write_deltalake(str(path), pa.Table.from_pylist(rows, schema=schema), mode="append",
                    partition_by=["peildatum"] if partitioned else None)


def write_definitions(definitions_dir: Path, marts: tuple[str, ...] = tuple(DEFINITIONS)) -> Path:
    """Write the YAML definitions of ``marts`` to ``definitions_dir``."""
    definitions_dir.mkdir(parents=True, exist_ok=True)
    for mart in marts:
        (definitions_dir / f"{mart}.yaml").write_text(DEFINITIONS[mart], encoding="utf-8")
    return definitions_dir


def write_sample_gold(lake_root: Path) -> Path:
    """Write the sample gold tables and mart_status under ``lake_root/gold``; returns the gold folder."""
    gold = lake_root / "gold"
    status = []
    for peildatum in (PREVIOUS, NEWEST):
        rows = wmo_rows(peildatum)
        _write(gold / "wmo_jeugd_voorzieningen", rows, WMO_SCHEMA)
        status.append(_status("wmo_jeugd_voorzieningen", "sociaal_domein", peildatum, rows,
                              {"TOEWIJZING": 40 + (peildatum - PREVIOUS).days, "CBS_KERNCIJFERS": 3}))
    rows = uitgaven_rows(OLD)
    _write(gold / "uitgaven_sociaal_domein", rows, UITGAVEN_SCHEMA)
    status.append(_status("uitgaven_sociaal_domein", "financien", OLD, rows, {"GROOTBOEKMUTATIE": 7}))
    rows = huishoudens_rows(NEWEST)
    _write(gold / "huishoudens_per_wijk", rows, HUISHOUDENS_SCHEMA)
    status.append(_status("huishoudens_per_wijk", "demografie", NEWEST, rows,
                          {"NATUURLIJKPERSOON": 12, "INGESCHREVENPERSOON": 12, "CBS_KERNCIJFERS": 3}))
    rows = inwoners_rows(NEWEST)
    _write(gold / "inwoners_per_buurt", rows, INWONERS_SCHEMA)
    status.append(_status("inwoners_per_buurt", "demografie", NEWEST, rows,
                          {"NATUURLIJKPERSOON": 12, "INGESCHREVENPERSOON": 12, "CBS_KERNCIJFERS": 3}))
    # A mart whose definition file was removed: its gold table and status rows stay behind.
    rows = huishoudens_rows(NEWEST)
    _write(gold / "verdwenen_mart", rows, HUISHOUDENS_SCHEMA)
    status.append(_status("verdwenen_mart", "demografie", NEWEST, rows, {"NATUURLIJKPERSOON": 12}))
    _write(gold / "mart_status", status, STATUS_SCHEMA, partitioned=False)
    return gold
