"""Build: silver → gold policy marts.

Each mart is declared in one reviewed file, ``gold_marts/<mart>.yaml``: the silver tables it
reads, one Spark SQL query returning one row per counted unit (a client, a melding, a booking),
its dimensions and its measures. The engine here does the rest the same way for every mart:

* silver is read *as of* the logical date (the SCD2 versions valid on that day), so rebuilding an
  earlier date gives the figures of that date;
* cells and totals come from one GROUPING SETS aggregation over the area hierarchy (gemeente,
  wijk, buurt) and every dimension that publishes a 'Totaal';
* marts derived from persons hide every cell whose person count is below the threshold (default
  5, env ``GGM_SUPPRESSION_THRESHOLD``), then hide further cells until no published total lets a
  hidden cell be recomputed (secondary suppression);
* area marts carry CBS kerncijfers as denominators (inwoners, huishoudens, per 1,000 inwoners);
* ``gold/mart_status`` records each mart's freshness and the silver versions it was built from.

The definition files are read and checked by ``ggm_lakehouse.model.mart_definitions``, the one
loader that the catalog, the lineage and the dashboard use as well.

A mart's partition for the logical date is replaced only when its content changed, so
re-running a day leaves gold untouched.
"""
from __future__ import annotations

import os
from functools import lru_cache
from datetime import date, datetime, time
from typing import NamedTuple

from ggm_lakehouse.lake import LakeTable, retry_on_write_conflict
# The definition model and its one loader live in the model layer; load_mart_definition and marts_dir
# are re-exported because callers and tests know the gold marts as jobs.gold.
from ggm_lakehouse.model.mart_definitions import (  # noqa: F401
    HELPER_VIEWS,
    STATUS_TABLE,
    TOTAL,
    UNKNOWN,
    GoldError,
    MartDefinition,
    load_mart_definition,
    load_mart_definitions,
    mart_domeinen,
    mart_inputs,
    marts_dir,
)

DEFAULT_SUPPRESSION_THRESHOLD = 5


def suppression_threshold() -> int:
    """Smallest count that may be published (configurable, default 5)."""
    value = int(os.environ.get("GGM_SUPPRESSION_THRESHOLD", DEFAULT_SUPPRESSION_THRESHOLD))
    if value < 1:
        raise GoldError("GGM_SUPPRESSION_THRESHOLD must be at least 1")
    return value


def silver_as_of(spark, table: str, peildatum: date):
    """The versions of a silver table valid on ``peildatum`` (one row per object).

    A table whose source has not delivered yet but is allowed to skip days (a mapping with
    ``on_missing_batch: keep``, such as a weekly partner file) reads as empty: no deliveries
    means nothing to count, not a broken mart.
    """
    from pyspark.sql import functions as F

    source = LakeTable("silver", table)
    if not source.exists(spark):
        mapping = _awaited_mapping(spark, table)
        if mapping is None:
            raise GoldError(f"silver table {table} does not exist at {source.location}")
        return _empty_silver_frame(spark, mapping)
    moment = F.lit(datetime.combine(peildatum, time.min)).cast("timestamp")
    frame = source.read(spark)
    return frame.where(
        (F.col("DWH_DATUMTIJDGELDIGVANAF") <= moment)
        & (F.col("DWH_DATUMTIJDGELDIGTOTMET").isNull() | (F.col("DWH_DATUMTIJDGELDIGTOTMET") > moment))
    )


@lru_cache(maxsize=4)
def _mappings(directory) -> tuple:
    """The silver mappings of ``directory``, parsed once per process (every mart input asks)."""
    from ggm_lakehouse.model.mappings import load_all

    return tuple(load_all(directory))


def _awaited_mapping(spark, table: str):
    """The mapping of ``table`` when it may legitimately not exist yet: its source may skip days
    (``on_missing_batch: keep``) and the same source system already delivered other tables."""
    from ggm_lakehouse.model.mappings import mappings_dir

    mappings = _mappings(mappings_dir())
    mapping = next((m for m in mappings if m.target == table and m.on_missing_batch == "keep"), None)
    if mapping is None:
        return None
    siblings = [m.target for m in mappings if m.bronsysteem == mapping.bronsysteem and m.target != table]
    return mapping if any(LakeTable("silver", t).exists(spark) for t in siblings) else None


def _empty_silver_frame(spark, mapping):
    """An empty frame with the columns the silver table will have once its first delivery lands."""
    from pyspark.sql import types as T

    fields = [T.StructField(mapping.surrogate_key, T.LongType())]
    for column in mapping.columns:
        kind = "bigint" if column.key_of else (column.type or "string")
        fields.append(T.StructField(column.name, T._parse_datatype_string(kind)))
    fields += [T.StructField("DWH_BRONSYSTEEM", T.StringType()), T.StructField("DWH_DATUMTIJDGELADEN", T.TimestampType()),
               T.StructField("DWH_DATUMTIJDGELDIGVANAF", T.TimestampType()),
               T.StructField("DWH_DATUMTIJDGELDIGTOTMET", T.TimestampType())]
    return spark.createDataFrame([], T.StructType(fields))


def _exists_or_awaited(spark, table: str) -> bool:
    return LakeTable("silver", table).exists(spark) or _awaited_mapping(spark, table) is not None


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
            F.col("p.NATUURLIJKPERSOON_ID").alias("NATUURLIJKPERSOON_ID"),
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
    return (
        residents.join(per_household.select("adres", "huishoudtype"), "adres", "left")
        .join(area, "adres", "left")
        .withColumn("huishouden", F.col("adres"))
    )


def register_views(spark, tables, peildatum: date) -> None:
    """Register each silver table as a temp view of its GGM name holding the versions valid on ``peildatum``,
    plus the helper views INWONERS and PEILDATUM."""
    for table in tables:
        silver_as_of(spark, table, peildatum).createOrReplaceTempView(table)
    spark.createDataFrame([(peildatum,)], "peildatum DATE").createOrReplaceTempView("PEILDATUM")
    if all(LakeTable("silver", t).exists(spark) for t in HELPER_VIEWS["INWONERS"]):
        residents_with_household(spark, peildatum).drop("partner").createOrReplaceTempView("INWONERS")


class _Areas(NamedTuple):
    """The area hierarchy on the peildatum: buurt → wijk, names, the gemeente's code and CBS figures."""

    parents: dict
    names: dict
    gemeentecode: str | None
    cbs: dict


def _area_lookup(spark, peildatum: date) -> _Areas:
    """buurtcode → wijk and names, and the gemeente's code and name (from the buurtcodes and CBS)."""
    from pyspark.sql import functions as F

    buurten = silver_as_of(spark, "BUURT", peildatum).alias("b").join(
        silver_as_of(spark, "WIJK", peildatum).alias("w"), F.col("b.LIGT_IN_WIJK_ID") == F.col("w.WIJK_ID"), "left"
    ).select(
        F.col("b.CODE").alias("buurtcode"), F.col("b.NAAM").alias("buurtnaam"),
        F.coalesce(F.col("w.WIJKCODE"), F.lit(UNKNOWN)).alias("wijkcode"),
        F.coalesce(F.col("w.WIJKNAAM"), F.lit(UNKNOWN)).alias("wijknaam"),
    ).collect()
    names = {("buurt", r["buurtcode"]): r["buurtnaam"] for r in buurten}
    names.update({("wijk", r["wijkcode"]): r["wijknaam"] for r in buurten})
    parents = {r["buurtcode"]: r["wijkcode"] for r in buurten}
    codes = sorted(r["buurtcode"] for r in buurten if r["buurtcode"])
    gemeentecode = f"GM{codes[0][2:6]}" if codes and codes[0].startswith("BU") else "gemeente"
    cbs = {}
    if LakeTable("silver", "CBS_KERNCIJFERS").exists(spark):
        for row in silver_as_of(spark, "CBS_KERNCIJFERS", peildatum).select(
            "GEBIEDSCODE", "GEBIEDSSOORT", "GEMEENTENAAM", "AANTALINWONERS", "AANTALHUISHOUDENS"
        ).collect():
            cbs[row["GEBIEDSCODE"]] = row
    gemeentenaam = cbs[gemeentecode]["GEMEENTENAAM"] if gemeentecode in cbs else "Gemeente"
    names[("gemeente", gemeentecode)] = gemeentenaam or "Gemeente"
    return _Areas(parents, names, gemeentecode, cbs)


def _aggregate_sql(definition: MartDefinition) -> str:
    """GROUPING SETS over the area hierarchy and every dimension that publishes totals."""
    from itertools import product

    trend = [d.kolom for d in definition.dimensies if not d.totaal]
    totalled = [d.kolom for d in definition.dimensies if d.totaal]
    area_sets = {None: [[]], "wijk": [[], ["wijkcode"]], "buurt": [[], ["wijkcode"], ["wijkcode", "buurtcode"]]}
    area_sets = area_sets[definition.gebied]
    sets = []
    for area in area_sets:
        for choice in product([True, False], repeat=len(totalled)):
            sets.append(area + trend + [c for c, keep in zip(totalled, choice) if keep])
    area_columns = {None: [], "wijk": ["wijkcode"], "buurt": ["wijkcode", "buurtcode"]}[definition.gebied]
    keys = area_columns + trend + totalled
    grouping = ", ".join("(" + ", ".join(f"`{c}`" for c in s) + ")" for s in sets)
    selected = [f"`{k}`" for k in keys] + [f"grouping(`{k}`) AS `_g_{k}`" for k in keys]
    selected += [m.sql() for m in definition.maten]
    return f"SELECT {', '.join(selected)} FROM _units GROUP BY GROUPING SETS ({grouping})"


def secondary_suppression(relations: list[tuple], primary: set, person_count: dict) -> dict:
    """Hide further cells until no published total reveals a hidden cell.

    ``relations`` are (total cell, [component cells]) groups in which the total is (at most) the
    sum of its components. A group with exactly one hidden member would let anyone recompute it
    (total minus the published components, or the sum of the components), so another member is
    hidden: the smallest published component by person count (ties by key, for a deterministic
    result), or the total when no component is left. Repeats until every group is safe.
    Returns each hidden cell's reason: 'primair' or 'secundair'.
    """
    reasons = {cell: "primair" for cell in primary}
    membership: dict = {}
    for index, (total, components) in enumerate(relations):
        for cell in (total, *components):
            membership.setdefault(cell, []).append(index)
    pending = set(range(len(relations)))
    while pending:
        index = min(pending)
        pending.discard(index)
        total, components = relations[index]
        members = [total, *components]
        hidden = [c for c in members if c in reasons]
        if len(hidden) != 1:
            continue
        candidates = sorted((c for c in components if c not in reasons), key=lambda c: (person_count.get(c) or 0, repr(c)))
        extra = candidates[0] if candidates else (total if total not in reasons else None)
        if extra is None:
            continue
        reasons[extra] = "secundair"
        pending.update(membership.get(extra, ()))
    return reasons


def _relations(keys: list[tuple], key_names: list[str], definition: MartDefinition, parents: dict) -> list[tuple]:
    """Each published total with the cells it sums, along every totalled dimension and the area hierarchy."""
    positions = {name: i for i, name in enumerate(key_names)}
    existing = set(keys)
    groups: dict = {}

    def add(parent, child):
        if parent in existing:
            groups.setdefault(parent, {}).setdefault(axis, []).append(child)

    for key in keys:
        for dimension in definition.dimensies:
            if not dimension.totaal:
                continue
            axis = dimension.kolom
            i = positions[axis]
            if key[i] != TOTAL:
                add(key[:i] + (TOTAL,) + key[i + 1:], key)
        if definition.gebied:
            axis = "gebied"
            level, code = key[0], key[1]
            if level == "buurt":
                add(("wijk", parents.get(code, UNKNOWN)) + key[2:], key)
            elif level == "wijk":
                add(("gemeente", None) + key[2:], key)
    return [(parent, children) for parent, axes in groups.items() for children in axes.values()]


def _units(spark, definition: MartDefinition, peildatum: date):
    """The rows of the definition's eenheden query on ``peildatum``, checked for the columns it must return."""
    missing = [t for t in definition.inputs if not _exists_or_awaited(spark, t)]
    if missing:
        raise GoldError(f"mart {definition.mart}: silver tables {missing} do not exist yet")
    register_views(spark, definition.inputs, peildatum)
    try:
        units = spark.sql(definition.eenheden)
    except Exception as exc:
        raise GoldError(f"mart {definition.mart} ({definition.path}): the eenheden query fails: {exc}") from exc
    area_column = {None: None, "wijk": "wijkcode", "buurt": "buurtcode"}[definition.gebied]
    needed = [d.kolom for d in definition.dimensies] + [m.van for m in definition.maten if m.van]
    needed += [area_column] if area_column else []
    absent = sorted(set(needed) - set(units.columns))
    if absent:
        raise GoldError(f"mart {definition.mart} ({definition.path}): the eenheden query returns no column(s) {absent}")
    return units


def _prepare_units(spark, units, definition: MartDefinition, parents: dict):
    """Units with every dimension as text ('onbekend' for null) and their area mapped onto the known buurten and wijken."""
    from pyspark.sql import functions as F

    prepared = units
    for dimension in definition.dimensies:
        prepared = prepared.withColumn(dimension.kolom, F.coalesce(F.col(dimension.kolom).cast("string"), F.lit(UNKNOWN)))
    if definition.gebied == "buurt":
        lookup = spark.createDataFrame(sorted(parents.items()), "_buurt STRING, _wijk STRING")
        prepared = (
            prepared.withColumn("buurtcode", F.coalesce(F.col("buurtcode"), F.lit(UNKNOWN)))
            .join(F.broadcast(lookup), F.col("buurtcode") == F.col("_buurt"), "left")
            .withColumn("wijkcode", F.coalesce(F.col("_wijk"), F.lit(UNKNOWN)))
            .withColumn("buurtcode", F.when(F.col("_buurt").isNull(), F.lit(UNKNOWN)).otherwise(F.col("buurtcode")))
            .drop("_buurt", "_wijk")
        )
    elif definition.gebied == "wijk":
        known = set(parents.values())
        prepared = prepared.withColumn(
            "wijkcode", F.when(F.col("wijkcode").isin(*sorted(known)), F.col("wijkcode")).otherwise(F.lit(UNKNOWN))
        )
    return prepared


def _cells(spark, definition: MartDefinition, prepared) -> tuple[dict, dict]:
    """Every cell and total, ``{key: {measure: value}}`` (key: area level and code, then the dimension values),
    and the Spark type of each measure."""
    prepared.createOrReplaceTempView("_units")
    aggregate = spark.sql(_aggregate_sql(definition))
    dims = [d.kolom for d in definition.dimensies]
    cells: dict = {}
    for row in aggregate.collect():
        if definition.gebied == "buurt":
            area = ("gemeente", None) if row["_g_wijkcode"] else ("wijk", row["wijkcode"]) if row["_g_buurtcode"] else ("buurt", row["buurtcode"])
        elif definition.gebied == "wijk":
            area = ("gemeente", None) if row["_g_wijkcode"] else ("wijk", row["wijkcode"])
        else:
            area = ()
        key = area + tuple(TOTAL if row[f"_g_{d}"] else row[d] for d in dims)
        cells[key] = {m.kolom: row[m.kolom] for m in definition.maten}
    return cells, {f.name: f.dataType for f in aggregate.schema.fields}


def _suppress(definition: MartDefinition, cells: dict, parents: dict) -> tuple[dict, dict]:
    """Each hidden cell's reason ('primair' or 'secundair'), and the further person counts hidden inside
    published cells (``ook_personen``). A mart that counts no persons hides nothing."""
    if not definition.personen:
        return {}, {}
    keys = sorted(cells, key=repr)
    key_names = (["gebiedsniveau", "gebiedscode"] if definition.gebied else []) + [d.kolom for d in definition.dimensies]
    threshold = suppression_threshold()
    relations = _relations(keys, key_names, definition, parents)
    counts = {k: cells[k][definition.personen] or 0 for k in keys}
    reasons = secondary_suppression(relations, {k for k in keys if counts[k] < threshold}, counts)
    hidden_measures: dict = {}
    for measure in definition.ook_personen:
        sub_counts = {k: cells[k][measure] or 0 for k in keys}
        # Zero is published (it reveals no one); a small positive count is hidden, with the same
        # secondary rule so that the measure's own totals cannot give it away.
        sub_primary = set(reasons) | {k for k in keys if 0 < sub_counts[k] < threshold}
        for key in secondary_suppression(relations, sub_primary, sub_counts):
            hidden_measures.setdefault(key, set()).add(measure)
    return reasons, hidden_measures


def _schema(definition: MartDefinition, measure_types: dict):
    """The published columns: peildatum, area, dimensions, measures, denominators, suppression."""
    from pyspark.sql import types as T

    fields = [T.StructField("peildatum", T.DateType(), False)]
    if definition.gebied:
        area_columns = ("gebiedsniveau", "gebiedscode", "gebiedsnaam", "wijkcode", *definition.gebiedskolommen)
        fields += [T.StructField(n, T.StringType()) for n in area_columns]
    fields += [T.StructField(d.kolom, T.StringType()) for d in definition.dimensies]
    fields += [T.StructField(m.kolom, measure_types[m.kolom]) for m in definition.maten]
    if definition.gebied:
        fields += [T.StructField("inwoners", T.LongType()), T.StructField("huishoudens", T.LongType())]
        fields += [T.StructField(f"{m}_per_1000_inwoners", T.DoubleType()) for m in definition.per_1000_inwoners]
    fields += [T.StructField("onderdrukt", T.BooleanType(), False), T.StructField("onderdrukking", T.StringType())]
    return T.StructType(fields)


def _area_name(areas: _Areas, level: str, code: str | None) -> str | None:
    return areas.names.get((level, code), UNKNOWN if code == UNKNOWN else code)


def _area_values(definition: MartDefinition, key: tuple, areas: _Areas) -> tuple[list, str | None]:
    """The area columns of the row of ``key``, and the CBS code its denominators belong to."""
    level, code = key[0], key[1]
    code = areas.gemeentecode if level == "gemeente" else code
    wijk = None if level == "gemeente" else code if level == "wijk" else areas.parents.get(code, UNKNOWN)
    values = [level, code, _area_name(areas, level, code), wijk]
    # gebiedskolommen: the finer columns stay empty on the coarser levels (a wijk row has no buurtcode).
    extra = {
        "wijknaam": None if wijk is None else _area_name(areas, "wijk", wijk),
        "buurtcode": code if level == "buurt" else None,
        "buurtnaam": _area_name(areas, "buurt", code) if level == "buurt" else None,
    }
    return values + [extra[c] for c in definition.gebiedskolommen], code


def _row(definition: MartDefinition, key: tuple, values: dict, reason: str | None, areas: _Areas,
         peildatum: date) -> tuple:
    """One published row in the order of ``_schema``; ``values`` already hold None for hidden measures."""
    record: list = [peildatum]
    code = None
    if definition.gebied:
        area_values, code = _area_values(definition, key, areas)
        record += area_values
    record += list(key[2:] if definition.gebied else key)
    record += [values[m.kolom] for m in definition.maten]
    if definition.gebied:
        figures = areas.cbs.get(code)
        inwoners = figures["AANTALINWONERS"] if figures else None
        record += [inwoners, figures["AANTALHUISHOUDENS"] if figures else None]
        for m in definition.per_1000_inwoners:
            value = values[m]
            record.append(round(float(value) * 1000 / inwoners, 1) if value is not None and inwoners else None)
    record += [reason is not None, reason]
    return tuple(record)


def build_mart(spark, definition: MartDefinition, peildatum: date):
    """The mart's rows for ``peildatum``: cells and totals, suppressed, with CBS denominators."""
    units = _units(spark, definition, peildatum)
    areas = _area_lookup(spark, peildatum) if definition.gebied else _Areas({}, {}, None, {})
    cells, measure_types = _cells(spark, definition, _prepare_units(spark, units, definition, areas.parents))
    reasons, hidden_measures = _suppress(definition, cells, areas.parents)
    rows = []
    for key in sorted(cells, key=repr):
        reason = reasons.get(key)
        values = {m: None if reason or m in hidden_measures.get(key, ()) else v for m, v in cells[key].items()}
        rows.append(_row(definition, key, values, reason, areas, peildatum))
    schema = _schema(definition, measure_types)
    order = [f.name for f in schema.fields if f.name in ("gebiedsniveau", "gebiedscode", *(d.kolom for d in definition.dimensies))]
    frame = spark.createDataFrame(rows, schema)
    return frame.orderBy(*order) if order else frame


# --------------------------------------------------------------------------------------------
# The registry: every mart is a definition file in gold_marts/
# --------------------------------------------------------------------------------------------

DEFINITIONS: dict[str, MartDefinition] = load_mart_definitions()
# The silver tables each mart reads: the gold DAG of its domein waits for exactly these.
MART_INPUTS: dict[str, tuple[str, ...]] = mart_inputs(DEFINITIONS)
MART_DOMEINEN: dict[str, str] = mart_domeinen(DEFINITIONS)


def marts_of_domein(domein: str) -> list[str]:
    """The marts one gold DAG builds."""
    return sorted(n for n, d in MART_DOMEINEN.items() if d == domein)


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
            frame.unpersist()
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
    frame.unpersist()
    return True




def silver_versions(spark, tables) -> dict[str, tuple[int, datetime]]:
    """Delta version and commit time of each silver table's newest commit (tables not delivered yet are left out)."""
    versions = {}
    for table in tables:
        if not LakeTable("silver", table).exists(spark):
            continue
        last = LakeTable("silver", table).last_commit(spark)
        if last:
            versions[table] = last
    return versions


def write_mart_status(spark, name: str, domein: str, peildatum: date, inputs, definition_sha256: str | None) -> dict:
    """Record the mart's freshness and the silver versions it was built from (one row per mart and peildatum).

    The row is replaced only when something it states changed, so a rerun of the same day leaves it
    (and its ``gebouwd_op``) as it was.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    mart_rows = LakeTable("gold", name).read(spark).where(F.col("peildatum") == F.lit(peildatum))
    counts = mart_rows.agg(
        F.count(F.lit(1)).alias("rijen"),
        F.sum(F.when(F.col("onderdrukking") == "primair", 1).otherwise(0)).alias("primair"),
        F.sum(F.when(F.col("onderdrukking") == "secundair", 1).otherwise(0)).alias("secundair"),
    ).collect()[0]
    versions = silver_versions(spark, inputs)
    status = {
        "mart": name,
        "domein": domein,
        "peildatum": peildatum,
        "bronversies": {t: v for t, (v, _) in sorted(versions.items())},
        "bron_bijgewerkt": min((stamp for _, stamp in versions.values()), default=None),
        "rijen": int(counts["rijen"] or 0),
        "onderdrukte_cellen_primair": int(counts["primair"] or 0),
        "onderdrukte_cellen_secundair": int(counts["secundair"] or 0),
        "drempel": suppression_threshold(),
        "definitie_sha256": definition_sha256,
    }
    schema = T.StructType([
        T.StructField("mart", T.StringType(), False), T.StructField("domein", T.StringType()),
        T.StructField("peildatum", T.DateType(), False), T.StructField("gebouwd_op", T.TimestampType()),
        T.StructField("bronversies", T.MapType(T.StringType(), T.LongType())),
        T.StructField("bron_bijgewerkt", T.TimestampType()), T.StructField("rijen", T.LongType()),
        T.StructField("onderdrukte_cellen_primair", T.LongType()),
        T.StructField("onderdrukte_cellen_secundair", T.LongType()), T.StructField("drempel", T.IntegerType()),
        T.StructField("definitie_sha256", T.StringType()),
    ])
    # Gold DAGs of different domeinen run side by side and each replaces its marts' rows here.
    return retry_on_write_conflict(lambda: _replace_status_row(spark, name, peildatum, status, schema),
                                   f"gold {STATUS_TABLE}")


def _replace_status_row(spark, name: str, peildatum: date, status: dict, schema) -> dict:
    target = LakeTable("gold", STATUS_TABLE)
    where = f"mart = '{name}' AND peildatum = DATE'{peildatum.isoformat()}'"
    if target.exists(spark):
        existing = target.read(spark).where(where).collect()
        if existing:
            old = existing[0].asDict()
            if all(old.get(k) == v for k, v in status.items()):
                return {**status, "gebouwd_op": old["gebouwd_op"], "changed": False}
    now = datetime.now().replace(microsecond=0)
    row = {**status, "gebouwd_op": now}
    frame = spark.createDataFrame([tuple(row[f.name] for f in schema.fields)], schema)
    if target.exists(spark):
        target.save(spark, frame.write.format("delta").mode("overwrite").option("replaceWhere", where))
    else:
        target.save(spark, frame.write.format("delta"))
    return {**row, "changed": True}


def run(spark, logical_date: date, marts: list[str] | None = None, domein: str | None = None) -> dict:
    """Build every mart (or the named ones, or one domein's) for ``logical_date``; returns a report.

    A mart whose silver inputs do not all exist yet is reported as waiting, not built: a domein's
    marts need different sources and the first days of a new source are normal.
    """
    report = {}
    selected = [n for n in sorted(DEFINITIONS) if (not marts or n in marts) and (not domein or MART_DOMEINEN[n] == domein)]
    if marts and set(marts) - set(DEFINITIONS):
        raise GoldError(f"unknown gold marts {sorted(set(marts) - set(DEFINITIONS))}; known: {sorted(DEFINITIONS)}")
    for name in selected:
        missing = [t for t in MART_INPUTS[name] if not _exists_or_awaited(spark, t)]
        if missing:
            report[name] = {"waiting_for": missing, "written": False, "rows": 0, "suppressed_cells": 0}
            continue
        definition = DEFINITIONS[name]
        written = write_mart_partition(spark, name, build_mart(spark, definition, logical_date), logical_date)
        status = write_mart_status(spark, name, definition.domein, logical_date, definition.inputs, definition.sha256)
        report[name] = {
            "rows": status["rijen"],
            "suppressed_cells": status["onderdrukte_cellen_primair"] + status["onderdrukte_cellen_secundair"],
            "suppressed_secondary": status["onderdrukte_cellen_secundair"],
            "written": written,
            "silver_versions": status["bronversies"],
            "freshness": status["bron_bijgewerkt"].isoformat() if status["bron_bijgewerkt"] else None,
        }
    return {"stage": "gold", "logical_date": logical_date.isoformat(), "tables": report}
