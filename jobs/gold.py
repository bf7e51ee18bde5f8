"""Build: silver → gold policy marts.

Marts read silver *as of* the logical date (the SCD2 version valid on that day), so
rebuilding an earlier date gives the figures of that date. Every mart derived from
persons suppresses small cells: a count below the threshold (default 5, env
``GGM_SUPPRESSION_THRESHOLD``) is published as null with ``onderdrukt = true``.

A mart's partition for the logical date is replaced only when its content changed,
so re-running a day leaves gold untouched.
"""
from __future__ import annotations

import os
from datetime import date, datetime, time
from typing import Callable

from ggm_lakehouse.lake import LakeTable

DEFAULT_SUPPRESSION_THRESHOLD = 5
AGE_BANDS = ((0, 14, "0-14"), (15, 24, "15-24"), (25, 44, "25-44"), (45, 64, "45-64"), (65, 200, "65+"))


class GoldError(RuntimeError):
    """A mart cannot be built; the message names the mart and the cause."""


def suppression_threshold() -> int:
    """Smallest count that may be published (configurable, default 5)."""
    value = int(os.environ.get("GGM_SUPPRESSION_THRESHOLD", DEFAULT_SUPPRESSION_THRESHOLD))
    if value < 1:
        raise GoldError("GGM_SUPPRESSION_THRESHOLD must be at least 1")
    return value


def silver_as_of(spark, table: str, peildatum: date):
    """The versions of a silver table valid on ``peildatum`` (one row per object)."""
    from pyspark.sql import functions as F

    source = LakeTable("silver", table)
    if not source.exists(spark):
        raise GoldError(f"silver table {table} does not exist at {source.location}")
    moment = F.lit(datetime.combine(peildatum, time.min)).cast("timestamp")
    frame = source.read(spark)
    return frame.where(
        (F.col("DWH_DATUMTIJDGELDIGVANAF") <= moment)
        & (F.col("DWH_DATUMTIJDGELDIGTOTMET").isNull() | (F.col("DWH_DATUMTIJDGELDIGTOTMET") > moment))
    )


def suppress_small_cells(frame, count_column: str, threshold: int):
    """Hide counts below ``threshold``: the count becomes null and ``onderdrukt`` true."""
    from pyspark.sql import functions as F

    small = F.col(count_column) < threshold
    return frame.withColumn("onderdrukt", small).withColumn(
        count_column, F.when(small, F.lit(None).cast("int")).otherwise(F.col(count_column).cast("int"))
    )


def age_band(age_column):
    """CBS age band label for an age in years."""
    from pyspark.sql import functions as F

    expr = None
    for low, high, label in AGE_BANDS:
        condition = age_column.between(low, high)
        expr = F.when(condition, label) if expr is None else expr.when(condition, label)
    return expr.otherwise("onbekend")


def residents_with_household(spark, peildatum: date):
    """Residents on ``peildatum`` with age, address, buurt/wijk and the type of their household.

    A household is everyone registered at the same address (a "woonhuishouden", as CBS counts
    them). Its type follows from adults, minors and whether two adults are each other's partner.
    """
    from pyspark.sql import functions as F

    ingeschreven = silver_as_of(spark, "INGESCHREVENPERSOON", peildatum).where("INGEZETENE")
    personen = silver_as_of(spark, "NATUURLIJKPERSOON", peildatum).where("NOT coalesce(INDICATIEOVERLEDEN, false)")
    adressen = silver_as_of(spark, "NUMMERAANDUIDING", peildatum)
    buurten = silver_as_of(spark, "BUURT", peildatum)
    wijken = silver_as_of(spark, "WIJK", peildatum)

    peil = F.lit(peildatum)
    residents = (
        ingeschreven.alias("i")
        .join(personen.alias("p"), F.col("i.NATUURLIJKPERSOON_ID") == F.col("p.NATUURLIJKPERSOON_ID"))
        .select(
            F.col("p.BURGERSERVICENUMMER").alias("pseudonym"),
            F.col("i.PARTNERID").alias("partner"),
            F.col("i.HEEFT_ALS_ADRES_NUMMERAANDUIDING_ID").alias("adres"),
            F.floor(F.months_between(peil, F.col("p.DATUMGEBOORTE")) / 12).cast("int").alias("leeftijd"),
        )
    )
    at_address = residents.alias("a").join(
        residents.select(F.col("adres").alias("b_adres"), F.col("pseudonym").alias("b_pseudonym")).alias("b"),
        (F.col("a.adres") == F.col("b_adres")) & (F.col("a.partner") == F.col("b_pseudonym")),
        "left",
    )
    per_household = at_address.groupBy("adres").agg(
        F.count("*").alias("personen"),
        F.sum(F.when(F.col("leeftijd") >= 18, 1).otherwise(0)).alias("volwassenen"),
        F.sum(F.when(F.col("leeftijd") < 18, 1).otherwise(0)).alias("minderjarigen"),
        F.max(F.col("b_pseudonym").isNotNull().cast("int")).alias("met_partner"),
    )
    huishoudtype = (
        F.when(F.col("personen") == 1, "eenpersoonshuishouden")
        .when((F.col("met_partner") == 1) & (F.col("minderjarigen") == 0), "paar zonder kinderen")
        .when(F.col("met_partner") == 1, "paar met kinderen")
        .when((F.col("volwassenen") == 1) & (F.col("minderjarigen") > 0), "eenouderhuishouden")
        .otherwise("overig meerpersoonshuishouden")
    )
    per_household = per_household.withColumn("huishoudtype", huishoudtype)
    area = (
        adressen.select(F.col("NUMMERAANDUIDING_ID").alias("adres"), F.col("LIGT_IN_BUURT_ID"))
        .join(buurten.select("BUURT_ID", "CODE", "NAAM", "LIGT_IN_WIJK_ID"), F.col("LIGT_IN_BUURT_ID") == F.col("BUURT_ID"), "left")
        .join(wijken.select("WIJK_ID", "WIJKCODE", "WIJKNAAM"), F.col("LIGT_IN_WIJK_ID") == F.col("WIJK_ID"), "left")
        .select(
            "adres",
            F.coalesce("WIJKCODE", F.lit("onbekend")).alias("wijkcode"),
            F.coalesce("WIJKNAAM", F.lit("onbekend")).alias("wijknaam"),
            F.coalesce("CODE", F.lit("onbekend")).alias("buurtcode"),
            F.coalesce("NAAM", F.lit("onbekend")).alias("buurtnaam"),
        )
    )
    return residents.join(per_household.select("adres", "huishoudtype"), "adres", "left").join(area, "adres", "left")


def build_inwoners_per_buurt(spark, peildatum: date):
    """Residents per wijk and buurt by age band and household type, with small-cell suppression."""
    from pyspark.sql import functions as F

    residents = residents_with_household(spark, peildatum)
    counts = (
        residents.withColumn("leeftijdsklasse", age_band(F.col("leeftijd")))
        .groupBy("wijkcode", "wijknaam", "buurtcode", "buurtnaam", "leeftijdsklasse", "huishoudtype")
        .agg(F.count("*").alias("aantal_inwoners"))
    )
    counts = suppress_small_cells(counts, "aantal_inwoners", suppression_threshold())
    return counts.select(
        F.lit(peildatum).alias("peildatum"),
        "wijkcode",
        "wijknaam",
        "buurtcode",
        "buurtnaam",
        "leeftijdsklasse",
        "huishoudtype",
        "aantal_inwoners",
        "onderdrukt",
    ).orderBy("wijkcode", "buurtcode", "leeftijdsklasse", "huishoudtype")


MARTS: dict[str, Callable] = {
    "inwoners_per_buurt": build_inwoners_per_buurt,
}

# The silver tables each mart reads: the gold DAG of a mart waits for exactly these.
MART_INPUTS: dict[str, tuple[str, ...]] = {
    "inwoners_per_buurt": ("INGESCHREVENPERSOON", "NATUURLIJKPERSOON", "NUMMERAANDUIDING", "BUURT", "WIJK"),
}


def _content_hash(frame) -> str:
    from pyspark.sql import functions as F

    row_hashes = frame.select(F.sha2(F.to_json(F.struct(*frame.columns)), 256).alias("h"))
    ordered = row_hashes.orderBy("h").agg(F.sha2(F.concat_ws("", F.collect_list("h")), 256).alias("t")).collect()
    return ordered[0]["t"] or ""


def write_mart_partition(spark, name: str, frame, peildatum: date) -> bool:
    """Replace the ``peildatum`` partition of gold table ``name`` if its content changed."""
    from pyspark.sql import functions as F

    target = LakeTable("gold", name)
    frame = frame.cache()
    if target.exists(spark):
        existing = target.read(spark).where(F.col("peildatum") == F.lit(peildatum))
        if existing.columns == frame.columns and _content_hash(existing) == _content_hash(frame):
            return False
        target.save(
            spark,
            frame.write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", f"peildatum = DATE'{peildatum.isoformat()}'"),
        )
    else:
        target.save(
            spark, frame.write.format("delta").partitionBy("peildatum").option("delta.enableChangeDataFeed", "true")
        )
    return True


def run(spark, logical_date: date, marts: list[str] | None = None) -> dict:
    """Build every mart (or the named ones) for ``logical_date``; returns a report."""
    report = {}
    for name, builder in MARTS.items():
        if marts and name not in marts:
            continue
        frame = builder(spark, logical_date)
        written = write_mart_partition(spark, name, frame, logical_date)
        rows = LakeTable("gold", name).read(spark).where(f"peildatum = DATE'{logical_date}'")
        report[name] = {
            "rows": rows.count(),
            "suppressed_cells": rows.where("onderdrukt").count(),
            "written": written,
        }
    return {"stage": "gold", "logical_date": logical_date.isoformat(), "tables": report}
