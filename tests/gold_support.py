"""Known silver inputs for gold mart tests: write small silver tables exactly as the silver job would.

Gold marts are tested on hand-made silver with known answers, so an expected cell value can be
worked out on paper. ``write_silver_table`` adds the SCD2 history columns; ``write_population``
writes a small municipality (wijken, buurten, addresses, residents, CBS kerncijfers) that the
engine's ``INWONERS`` view and the area hierarchy read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime

VALID_FROM = datetime(2000, 1, 1)
GEMEENTECODE = "GM9999"


def write_silver_table(spark, name: str, rows: list[dict], schema: str, valid_from: datetime = VALID_FROM) -> None:
    """Replace silver table ``name`` with ``rows`` (dicts keyed by column), all valid from ``valid_from``.

    ``schema`` is a Spark DDL string of the GGM columns ("CLIENT_ID BIGINT, WET STRING"); the
    history columns DWH_DATUMTIJDGELDIGVANAF/-TOTMET are added unless a row sets them itself.
    """
    from ggm_lakehouse.lake import LakeTable

    full_schema = f"{schema}, DWH_DATUMTIJDGELDIGVANAF TIMESTAMP, DWH_DATUMTIJDGELDIGTOTMET TIMESTAMP"
    # Split on the commas between columns, not those inside a type such as DECIMAL(18,2).
    columns = [part.strip().split()[0] for part in re.split(r",(?![^()]*\))", full_schema)]
    records = []
    for row in rows:
        unknown = set(row) - set(columns)
        if unknown:
            raise ValueError(f"{name}: columns {sorted(unknown)} are not in the schema")
        record = {"DWH_DATUMTIJDGELDIGVANAF": valid_from, "DWH_DATUMTIJDGELDIGTOTMET": None, **row}
        records.append(tuple(record.get(c) for c in columns))
    frame = spark.createDataFrame(records, full_schema)
    LakeTable("silver", name).save(
        spark, frame.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    )


@dataclass
class Resident:
    """One resident of the known population."""

    natuurlijkpersoon_id: int
    pseudonym: str
    adres_id: int
    geboortedatum: date
    partner: str | None = None


@dataclass
class Population:
    """What ``write_population`` wrote, to build unit rows and expectations from."""

    residents: list[Resident] = field(default_factory=list)
    address_buurt: dict[int, str] = field(default_factory=dict)  # NUMMERAANDUIDING_ID -> buurtcode

    def resident(self, natuurlijkpersoon_id: int) -> Resident:
        return next(r for r in self.residents if r.natuurlijkpersoon_id == natuurlijkpersoon_id)


# Two wijken with two buurten each; CBS kerncijfers give round denominators.
WIJKEN = {"WK999901": "Centrum", "WK999902": "Noord"}
BUURTEN = {
    "BU99990101": ("Oude Kern", "WK999901"),
    "BU99990102": ("Haven", "WK999901"),
    "BU99990201": ("Parkwijk", "WK999902"),
    "BU99990202": ("Bosrand", "WK999902"),
}
CBS_INWONERS = {GEMEENTECODE: 4000, "WK999901": 2000, "WK999902": 2000,
                "BU99990101": 1000, "BU99990102": 1000, "BU99990201": 1500, "BU99990202": 500}


def buurt_id(code: str) -> int:
    return 1000 + sorted(BUURTEN).index(code)


def wijk_id(code: str) -> int:
    return 100 + sorted(WIJKEN).index(code)


def write_population(spark, households: dict[int, tuple[str, list[tuple[str, date]]]]) -> Population:
    """Write the area tables, addresses and residents; returns what was written.

    ``households`` maps an address id to (buurtcode, [(pseudonym, geboortedatum), …]). Each person
    gets NATUURLIJKPERSOON_ID = the address id × 100 + their position, so tests can name them.
    """
    population = Population()
    for adres_id, (buurtcode, people) in households.items():
        population.address_buurt[adres_id] = buurtcode
        for position, (pseudonym, born) in enumerate(people):
            population.residents.append(Resident(adres_id * 100 + position, pseudonym, adres_id, born))
    write_silver_table(spark, "WIJK", [{"WIJK_ID": wijk_id(c), "WIJKCODE": c, "WIJKNAAM": n} for c, n in WIJKEN.items()],
                       "WIJK_ID BIGINT, WIJKCODE STRING, WIJKNAAM STRING")
    write_silver_table(spark, "BUURT", [
        {"BUURT_ID": buurt_id(c), "CODE": c, "NAAM": n, "LIGT_IN_WIJK_ID": wijk_id(w)} for c, (n, w) in BUURTEN.items()
    ], "BUURT_ID BIGINT, CODE STRING, NAAM STRING, LIGT_IN_WIJK_ID BIGINT")
    write_silver_table(spark, "NUMMERAANDUIDING", [
        {"NUMMERAANDUIDING_ID": a, "IDENTIFICATIE": f"9999200000{a:06d}", "POSTCODE": f"{9000 + a % 1000:04d}AB",
         "HUISNUMMER": a % 1000, "LIGT_IN_BUURT_ID": buurt_id(b) if b in BUURTEN else None}
        for a, b in population.address_buurt.items()
    ], "NUMMERAANDUIDING_ID BIGINT, IDENTIFICATIE STRING, POSTCODE STRING, HUISNUMMER INT, LIGT_IN_BUURT_ID BIGINT")
    write_silver_table(spark, "NATUURLIJKPERSOON", [
        {"NATUURLIJKPERSOON_ID": r.natuurlijkpersoon_id, "BURGERSERVICENUMMER": r.pseudonym,
         "DATUMGEBOORTE": r.geboortedatum, "INDICATIEOVERLEDEN": False}
        for r in population.residents
    ], "NATUURLIJKPERSOON_ID BIGINT, BURGERSERVICENUMMER STRING, DATUMGEBOORTE DATE, INDICATIEOVERLEDEN BOOLEAN")
    write_silver_table(spark, "INGESCHREVENPERSOON", [
        {"NATUURLIJKPERSOON_ID": r.natuurlijkpersoon_id, "INGEZETENE": True, "PARTNERID": r.partner,
         "HEEFT_ALS_ADRES_NUMMERAANDUIDING_ID": r.adres_id}
        for r in population.residents
    ], "NATUURLIJKPERSOON_ID BIGINT, INGEZETENE BOOLEAN, PARTNERID STRING, HEEFT_ALS_ADRES_NUMMERAANDUIDING_ID BIGINT")
    soort = {"GM": "Gemeente", "WK": "Wijk", "BU": "Buurt"}
    write_silver_table(spark, "CBS_KERNCIJFERS", [
        {"GEBIEDSCODE": code, "GEBIEDSSOORT": soort[code[:2]], "GEMEENTENAAM": "Demodam",
         "AANTALINWONERS": inwoners, "AANTALHUISHOUDENS": inwoners // 2}
        for code, inwoners in CBS_INWONERS.items()
    ], "GEBIEDSCODE STRING, GEBIEDSSOORT STRING, GEMEENTENAAM STRING, AANTALINWONERS BIGINT, AANTALHUISHOUDENS BIGINT")
    return population
