"""Conform: bronze → GGM v2.5.1 silver tables, driven by ``ggm_mappings/*.yaml``.

For each mapping and logical date D:

1. read the newest complete bronze batch of D for the mapping's source;
2. take the declared fields out of each record (JSON paths) and join lookups;
3. compute the GGM columns, check the data-quality rules and send failing records
   to the quarantine table with the rule, the reason and the source record;
4. replace BSNs by keyed HMAC pseudonyms and add deterministic surrogate keys;
5. merge into the silver table as SCD2 history in the GGM's DWH columns:
   an unchanged record creates no new version; a changed record closes the open
   version at D and opens a new one; a record missing from a snapshot is closed.

Re-running D is idempotent: with the same input nothing is written at all; with
different input the versions opened at D are corrected in place.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from pathlib import Path

import pandas as pd  # module level: pandas_udf resolves its type hints in this module's globals

from ggm_lakehouse.lake import LakeTable, retry_on_write_conflict, sql_date, sql_string, sql_timestamp
from ggm_lakehouse.model.mappings import Mapping, load_all

DWH_COLUMNS = (
    "DWH_BRONSYSTEEM",
    "DWH_DATUMTIJDGELADEN",
    "DWH_DATUMTIJDGELDIGVANAF",
    "DWH_DATUMTIJDGELDIGTOTMET",
)
QUARANTINE_TABLE = "silver_rejects"
QUARANTINE_SCHEMA_DDL = (
    "target_table STRING, rule STRING, reason STRING, source_table STRING, source_file STRING, "
    "record_index INT, record_hash STRING, run_id STRING, logical_date DATE, payload STRING, quarantined_at TIMESTAMP"
)


class SilverError(RuntimeError):
    """Conformance cannot proceed; the message names the table and the cause."""


@dataclass
class ConformContext:
    spark: object
    logical_date: date
    run_id: str
    loaded_at: datetime
    # Frames cached while conforming one day; released together once the quarantine is written,
    # because a long-lived session (tests, a replay of many days) would otherwise fill the driver.
    cached: list = field(default_factory=list)
    # True when the caller made sure silver holds nothing after this day (run() checks and rolls back).
    history_checked: bool = False

    @property
    def valid_from(self) -> datetime:
        return datetime.combine(self.logical_date, time.min)

    def cache(self, frame):
        """Cache ``frame`` for the rest of this day's conformance and remember to release it."""
        frame = frame.cache()
        self.cached.append(frame)
        return frame

    def release(self) -> None:
        """Unpersist every frame cached through :meth:`cache`."""
        while self.cached:
            self.cached.pop().unpersist()


# ---------------------------------------------------------------------------
# building blocks (each usable on its own in tests)
# ---------------------------------------------------------------------------


def surrogate_key_expr(table: str, parts: list):
    """Deterministic BIGINT key of ``table`` from column expressions ``parts``.

    The first 15 hex digits of sha256("TABLE|part1|part2…") as a positive 60-bit
    integer: reproducible in any engine, collision-free in practice at municipal
    scale (GGM declares INTEGER; 32 bits would collide at a million persons).
    Null when any part is null, so a missing reference stays missing.
    """
    from pyspark.sql import functions as F

    joined = F.concat_ws("|", F.lit(table), *[p.cast("string") for p in parts])
    any_null = None
    for p in parts:
        any_null = p.isNull() if any_null is None else (any_null | p.isNull())
    key = F.conv(F.substring(F.sha2(joined, 256), 1, 15), 16, 10).cast("bigint")
    return F.when(any_null, F.lit(None).cast("bigint")).otherwise(key)


def surrogate_key_value(table: str, *parts: str) -> int:
    """The same key as :func:`surrogate_key_expr`, computed in Python (for tests and tools).

    For a key built on a pseudonymised field (a BSN), pass the pseudonym, not the BSN.
    """
    import hashlib

    digest = hashlib.sha256("|".join([table, *parts]).encode("utf-8")).hexdigest()
    return int(digest[:15], 16)


def pseudonymise_column(column):
    """Spark column of HMAC pseudonyms (see ``ggm_lakehouse.pseudonym``) of a BSN column.

    The key is read where the UDF runs, from the Spark side's own secret (its environment, a
    Databricks secret scope), so it never travels with the query from the client that plans it.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    # The UDF hands back ASCII bytes that decode() turns into a plain string: a string-typed Python UDF
    # over Spark Connect yields "string collate UTF8_BINARY", which Delta would write into the table's
    # schema and which delta-rs readers (dashboard, sharing server, partners) cannot read.
    @pandas_udf("binary")
    def _pseudonymise(values: pd.Series) -> pd.Series:
        from ggm_lakehouse.pseudonym import load_key, pseudonymise

        key = load_key()
        return values.map(lambda v: pseudonymise(v, key).encode("ascii") if isinstance(v, str) else None)

    return F.decode(_pseudonymise(column), "UTF-8")


def latest_batch(spark, source: str, logical_date: date):
    """Rows of the newest complete bronze batch of ``source`` for ``logical_date``."""
    from pyspark.sql import functions as F

    bronze = LakeTable("bronze", source)
    if not bronze.exists(spark):
        raise SilverError(f"bronze table {source!r} does not exist at {bronze.location}; did the extract and bronze steps run?")
    rows = bronze.read(spark).where(F.col("_logical_date") == F.lit(logical_date))
    newest = rows.groupBy("_run_id").agg(F.max("_ingested_at").alias("t")).orderBy(F.desc("t")).limit(1).collect()
    if not newest:
        raise SilverError(f"bronze table {source!r} has no batch for {logical_date}; nothing is conformed on a partial day")
    return rows.where(F.col("_run_id") == newest[0]["_run_id"])


def latest_batches(spark, mapping: Mapping, logical_date: date):
    """Rows of the newest complete batch of ``logical_date`` of every bronze table the mapping reads.

    A union source (several bronze tables) may miss a batch of some of its tables when the
    mapping keeps versions on a missing day (``on_missing_batch: keep``); otherwise every table
    needs its batch, as a single source does.
    """
    frames, missing = [], []
    for source in mapping.source_tables:
        try:
            frames.append(latest_batch(spark, source, logical_date))
        except SilverError as exc:
            missing.append(exc)
    if missing and (not frames or mapping.on_missing_batch != "keep"):
        raise missing[0]
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame)
    return union


def elfproef_expr(value):
    """Spark column: true when ``value`` is a nine-digit BSN passing the elfproef.

    The same rule as ``ggm_lakehouse.bsn.is_valid_bsn``, in Spark SQL so that no Python
    worker is needed (``tests/test_jobs_pipeline.py`` checks both agree).
    """
    from pyspark.sql import functions as F

    weights = (9, 8, 7, 6, 5, 4, 3, 2, -1)
    total = None
    for position, weight in enumerate(weights, start=1):
        term = F.substring(value, position, 1).cast("int") * F.lit(weight)
        total = term if total is None else total + term
    return value.rlike("^[0-9]{9}$") & (value != F.lit("000000000")) & (F.pmod(total, F.lit(11)) == 0)


def _extract_fields(frame, fields: dict[str, str]):
    from pyspark.sql import functions as F

    return frame.select(
        "*", *[F.get_json_object("payload", path).alias(name) for name, path in fields.items()]
    )


def _apply_lookups(ctx: ConformContext, frame, mapping: Mapping):
    from pyspark.sql import functions as F

    for lookup in mapping.lookups:
        side = _extract_fields(latest_batch(ctx.spark, lookup.source, ctx.logical_date), lookup.fields)
        side = side.select(*lookup.fields.keys()).dropDuplicates(list(lookup.on.keys()))
        side = side.select(
            *[F.col(k).alias(f"__lk_{k}") for k in lookup.on], F.struct(*lookup.fields.keys()).alias(lookup.name)
        )
        condition = [frame[main] == side[f"__lk_{k}"] for k, main in lookup.on.items()]
        frame = frame.join(side, condition, "left").drop(*[f"__lk_{k}" for k in lookup.on])
    return frame


def _current_keys(spark, target: str):
    table = LakeTable("silver", target)
    if not table.exists(spark):
        return None
    return table.read(spark).where("DWH_DATUMTIJDGELDIGTOTMET IS NULL").select(f"{target}_ID")


def _rule_failures(ctx: ConformContext, frame, mapping: Mapping):
    """Add one ``__fail_<n>`` column per rule: null when the row passes, else the reason."""
    from pyspark.sql import functions as F

    fail_columns = []
    for n, rule in enumerate(mapping.quality):
        value = F.col(rule.target)
        name = f"__fail_{n}"
        label = f"{rule.rule}({rule.target})"
        if rule.rule == "not_null":
            failed = value.isNull() | (F.trim(value.cast("string")) == "")
            reason = F.lit(f"{label}: value is missing")
        elif rule.rule == "elfproef":
            failed = value.isNotNull() & ~elfproef_expr(value.cast("string"))
            reason = F.concat(F.lit(f"{label}: not a valid BSN (elfproef fails) in value of length "), F.length(value))
        elif rule.rule == "pattern":
            failed = value.isNotNull() & ~value.cast("string").rlike(rule.params["pattern"])
            reason = F.concat(F.lit(f"{label}: '"), value.cast("string"), F.lit(f"' does not match {rule.params['pattern']}"))
        elif rule.rule == "date":
            failed = value.isNotNull() & F.to_date(value.cast("string"), "yyyy-MM-dd").isNull()
            reason = F.concat(F.lit(f"{label}: '"), value.cast("string"), F.lit("' is not a valid date (yyyy-MM-dd)"))
        elif rule.rule == "in_set":
            allowed = [str(v) for v in rule.params.get("values", [])]
            failed = value.isNotNull() & ~value.cast("string").isin(allowed)
            reason = F.concat(F.lit(f"{label}: '"), value.cast("string"), F.lit(f"' not in {allowed}"))
        elif rule.rule == "reference":
            ref_table = rule.params["table"]
            if ref_table == mapping.target:
                known = frame.select(F.col(mapping.surrogate_key).alias("__ref"))
            else:
                known = _current_keys(ctx.spark, ref_table)
                if known is None:
                    raise SilverError(
                        f"{mapping.target}: reference rule on {rule.target} needs silver table {ref_table}, which does not exist yet"
                    )
                known = known.select(F.col(f"{ref_table}_ID").alias("__ref"))
            known = known.distinct().withColumn("__ref_ok", F.lit(True))
            frame = frame.join(known, frame[rule.target] == known["__ref"], "left").drop("__ref")
            failed = value.isNotNull() & F.col("__ref_ok").isNull()
            reason = F.lit(f"{label}: referenced {ref_table} does not exist")
            frame = frame.withColumn(name, F.when(failed, reason)).drop("__ref_ok")
            fail_columns.append((name, rule))
            continue
        else:  # pragma: no cover - validated in ggm_lakehouse.model.mappings
            raise SilverError(f"unknown rule {rule.rule}")
        frame = frame.withColumn(name, F.when(failed, reason))
        fail_columns.append((name, rule))
    return frame, fail_columns


def conform_frame(ctx: ConformContext, mapping: Mapping, bronze):
    """Apply fields, lookups, columns and rules; return ``(conformed, rejects, rejected_keys)``.

    ``conformed`` has the surrogate key, the mapped GGM columns (BSNs pseudonymised)
    and the business key in ``__bk``; ``rejects`` has the quarantine columns;
    ``rejected_keys`` the surrogate keys whose record was rejected (their silver version stays open).
    """
    from pyspark.sql import functions as F

    frame = _extract_fields(bronze, mapping.fields)
    frame = _apply_lookups(ctx, frame, mapping)
    frame = _mapped_columns(frame, mapping)

    frame, fail_columns = _rule_failures(ctx, frame, mapping)
    any_failure = F.coalesce(*[F.col(n) for n, _ in fail_columns], F.lit(None).cast("string")) if fail_columns else F.lit(None)
    # A record without a business key cannot be versioned at all.
    missing_key = F.col(mapping.surrogate_key).isNull()
    frame = ctx.cache(frame.withColumn("__failed", any_failure.isNotNull() | missing_key))

    reject_parts = [
        frame.where(F.col(n).isNotNull()).select(F.lit(rule.rule).alias("rule"), F.col(n).alias("reason"), "*")
        for n, rule in fail_columns
    ]
    reject_parts.append(
        frame.where(missing_key).select(
            F.lit("business_key").alias("rule"),
            F.lit(f"business key ({', '.join(mapping.business_key)}) is missing").alias("reason"),
            "*",
        )
    )
    conformed, conflicting = _one_record_per_key(frame, mapping)
    reject_parts.append(conflicting)
    rejects = _quarantine_rows(ctx, mapping, reject_parts)
    # Keys of rejected records keep their current silver version instead of being closed.
    rejected_keys = frame.where(F.col("__failed") & ~missing_key).select(mapping.surrogate_key).distinct()
    return conformed, rejects, rejected_keys


def _mapped_columns(frame, mapping: Mapping):
    """``frame`` with the surrogate key, the business key in ``__bk`` and every mapped GGM column.

    Keys built on a BSN are built on its keyed pseudonym: an unkeyed hash of a BSN could be
    reversed by hashing every possible BSN.
    """
    from pyspark.sql import functions as F

    for name in mapping.pseudonymised_fields:
        frame = frame.withColumn(f"__pseudonym_{name}", pseudonymise_column(F.col(name)))

    def key_part(expression: str):
        if expression in mapping.pseudonymised_fields:
            return F.col(f"__pseudonym_{expression}")
        return F.expr(expression)

    frame = frame.withColumn(
        mapping.surrogate_key, surrogate_key_expr(mapping.key_table, [key_part(k) for k in mapping.business_key])
    )
    frame = frame.withColumn("__bk", F.concat_ws("|", *[F.col(k) for k in mapping.business_key]))
    for column in mapping.columns:
        if column.key_of:
            value = surrogate_key_expr(column.key_of, [key_part(e) for e in column.key_fields])
        elif column.pseudonymise and column.expr in mapping.pseudonymised_fields:
            value = F.col(f"__pseudonym_{column.expr}")
        else:
            value = F.expr(column.expr).cast(column.type)
        frame = frame.withColumn(column.name, value)
    return frame


def _one_record_per_key(frame, mapping: Mapping):
    """The records that passed every rule, one per business key: ``(conformed, conflicting)``.

    Duplicates of one business key in one batch: copies that map to the same GGM values collapse
    (BAG objects on a tile border, a wijk repeated on every buurt row); copies that conflict keep
    the highest value hash and the rest go to quarantine (``conflicting``, shaped as a reject part).
    """
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    passed = frame.where(~F.col("__failed"))
    passed = passed.withColumn("__value_hash", _attribute_hash([c.name for c in mapping.columns]))
    by_key = Window.partitionBy("__bk").orderBy(F.desc("__value_hash"), F.asc("_source_file"), F.asc("_record_index"))
    ranked = passed.withColumn("__rank", F.row_number().over(by_key)).withColumn(
        "__top_hash", F.first("__value_hash").over(by_key)
    )
    conflicting = ranked.where((F.col("__rank") > 1) & (F.col("__value_hash") != F.col("__top_hash"))).select(
        F.lit("duplicate_key").alias("rule"),
        F.concat(F.lit("another record in this batch has the same business key with different content: "), F.col("__bk")).alias("reason"),
        *[c for c in frame.columns],
    )
    conformed = ranked.where(F.col("__rank") == 1)
    for column in mapping.columns:
        if column.pseudonymise and column.expr not in mapping.pseudonymised_fields:
            conformed = conformed.withColumn(column.name, pseudonymise_column(F.col(column.name)))
    conformed = conformed.select(mapping.surrogate_key, *[c.name for c in mapping.columns], "__bk")
    return conformed, conflicting


def _quarantine_rows(ctx: ConformContext, mapping: Mapping, reject_parts: list):
    """The reject parts (``rule``, ``reason`` and the record's columns) as rows of the quarantine table."""
    from pyspark.sql import functions as F

    rejects = None
    for part in reject_parts:
        shaped = part.select(
            F.lit(mapping.target).alias("target_table"),
            "rule",
            "reason",
            (F.lit(mapping.source) if len(mapping.source_tables) == 1
             else F.concat_ws("_", F.col("_source"), F.col("_dataset"))).alias("source_table"),
            F.col("_source_file").alias("source_file"),
            F.col("_record_index").alias("record_index"),
            F.col("_record_hash").alias("record_hash"),
            F.col("_run_id").alias("run_id"),
            F.lit(ctx.logical_date).alias("logical_date"),
            "payload",
            F.lit(ctx.loaded_at).cast("timestamp").alias("quarantined_at"),
        )
        rejects = shaped if rejects is None else rejects.unionByName(shaped)
    return rejects


def _attribute_hash(columns: list[str]):
    from pyspark.sql import functions as F

    return F.sha2(F.to_json(F.struct(*[F.col(c) for c in columns])), 256)


def merge_scd2(ctx: ConformContext, mapping: Mapping, conformed, rejected_keys, conformed_rows: int | None = None) -> dict:
    """Merge a conformed snapshot into the silver table as SCD2 history; returns counts.

    ``conformed_rows``, when the caller has counted ``conformed`` already, spares a first load counting it again.
    """
    from pyspark.sql import functions as F

    spark = ctx.spark
    table = LakeTable("silver", mapping.target)
    key = mapping.surrogate_key
    attributes = [c.name for c in mapping.columns]
    valid_from = F.lit(ctx.valid_from).cast("timestamp")
    dwh = {
        "DWH_BRONSYSTEEM": F.lit(mapping.bronsysteem),
        "DWH_DATUMTIJDGELADEN": F.lit(ctx.loaded_at).cast("timestamp"),
        "DWH_DATUMTIJDGELDIGVANAF": valid_from,
        "DWH_DATUMTIJDGELDIGTOTMET": F.lit(None).cast("timestamp"),
    }
    if not table.exists(spark):
        # First load: every record opens its first version; one write creates the table.
        first = conformed.select(key, *attributes)
        for name, value in dwh.items():
            first = first.withColumn(name, value)
        table.save(spark, first.select(*[F.col(c) for c in [key, *attributes, *DWH_COLUMNS]]).write.format("delta"))
        n_new = conformed.count() if conformed_rows is None else conformed_rows
        return {"new_or_changed": n_new, "closed": 0, "written": True, "sizes": {"total": n_new, "current": n_new}}
    existing = table.read(spark)

    # run() has rolled back later days already (history_checked); a caller of this building block on its own has not.
    if not ctx.history_checked and existing.where(F.col("DWH_DATUMTIJDGELDIGVANAF") > F.lit(ctx.valid_from)).limit(1).count():
        # run() rolls back before conforming an earlier day; reaching this is a programming error.
        raise SilverError(f"{mapping.target} has versions after {ctx.logical_date}; roll back before merging")

    current = existing.where(F.col("DWH_DATUMTIJDGELDIGTOTMET").isNull()).select(
        F.col(key).alias("__cur_key"),
        _attribute_hash(attributes).alias("__cur_hash"),
        F.col("DWH_DATUMTIJDGELDIGVANAF").alias("__cur_from"),
    )
    incoming = conformed.withColumn("__hash", _attribute_hash(attributes))
    compared = incoming.join(current, incoming[key] == current["__cur_key"], "left")
    changed = compared.where(F.col("__cur_key").isNull() | (F.col("__cur_hash") != F.col("__hash")))
    kept_keys = incoming.select(key).unionByName(rejected_keys.select(key)).distinct()
    closing = current.join(kept_keys, current["__cur_key"] == kept_keys[key], "left_anti") if mapping.load == "snapshot" else None

    changed = ctx.cache(changed)
    tally = _tally(changed=changed, total=existing, current=current, **({"closing": closing} if closing is not None else {}))
    n_changed, n_closing = tally.get("changed", 0), tally.get("closing", 0)
    counts = {"new_or_changed": n_changed, "closed": n_closing, "written": False}
    if n_changed == 0 and n_closing == 0:
        # Nothing to do: a rerun of the same day leaves the table untouched, at the sizes just counted.
        counts["sizes"] = {"total": tally.get("total", 0), "current": tally.get("current", 0)}
        return counts

    # Staged rows: every changed key once with __merge_key (to close or correct the open version) and,
    # when an open version exists, once more without it (to insert the new version).
    new_rows = changed.select(key, *attributes)
    for name, value in dwh.items():
        new_rows = new_rows.withColumn(name, value)
    staged = new_rows.withColumn("__merge_key", F.col(key)).unionByName(
        new_rows.join(
            current.where(F.col("__cur_from") != valid_from).select("__cur_key"),
            new_rows[key] == current["__cur_key"],
            "inner",
        )
        .drop("__cur_key")
        .withColumn("__merge_key", F.lit(None).cast("bigint"))
    )
    if closing is not None and n_closing:
        close_rows = closing.select(F.col("__cur_key").alias("__merge_key"))
        staged = staged.unionByName(close_rows.withColumn("__close", F.lit(True)), allowMissingColumns=True)
    if "__close" not in staged.columns:
        staged = staged.withColumn("__close", F.lit(False))
    staged = staged.fillna({"__close": False})

    _merge_versions(spark, table, staged, key, attributes, ctx.valid_from)
    counts["written"] = True
    return counts


def _merge_versions(spark, table: LakeTable, staged, key: str, attributes: list[str], valid_from: datetime) -> None:
    """One Delta ``MERGE INTO`` (SQL, so it runs the same locally and over Spark Connect) of the staged versions.

    A staged row with ``__merge_key`` closes the open version (or corrects it in place when it was
    opened today); a row with ``__close`` only ends it (or deletes one opened today); the rest opens
    a new version.
    """
    # A temp view rather than ``spark.sql(..., staged=frame)``: the client would copy the staged plan,
    # which is deep (joins, unions, many columns), into a message nested past protobuf's decoding limit.
    view = f"__ggm_staged_{uuid.uuid4().hex}"
    staged.createOrReplaceTempView(view)
    try:
        _merge_sql(spark, table, view, key, attributes, valid_from)
    finally:
        spark.catalog.dropTempView(view)


def _merge_sql(spark, table: LakeTable, view: str, key: str, attributes: list[str], valid_from: datetime) -> None:
    opened_today = f"t.DWH_DATUMTIJDGELDIGVANAF = {sql_timestamp(valid_from)}"
    correct = ", ".join(f"`{c}` = s.`{c}`" for c in [*attributes, "DWH_DATUMTIJDGELADEN"])
    columns = ", ".join(f"`{c}`" for c in [key, *attributes, *DWH_COLUMNS])
    values = ", ".join(f"s.`{c}`" for c in [key, *attributes, *DWH_COLUMNS])
    end_open = f"DWH_DATUMTIJDGELDIGTOTMET = {sql_timestamp(valid_from)}"
    spark.sql(
        f"MERGE INTO {table.sql_name} t USING `{view}` s "
        f"ON t.`{key}` = s.__merge_key AND t.DWH_DATUMTIJDGELDIGTOTMET IS NULL "
        f"WHEN MATCHED AND s.__close AND {opened_today} THEN DELETE "
        f"WHEN MATCHED AND s.__close THEN UPDATE SET {end_open} "
        f"WHEN MATCHED AND {opened_today} THEN UPDATE SET {correct} "
        f"WHEN MATCHED THEN UPDATE SET {end_open} "
        f"WHEN NOT MATCHED AND NOT s.__close THEN INSERT ({columns}) VALUES ({values})"
    )


def write_quarantine(ctx: ConformContext, targets: list[str], rejects: list) -> None:
    """Replace the quarantine rows of ``targets`` for the logical date with ``rejects`` (idempotent).

    One delete and one append per run, so reruns never duplicate rejected records.
    """

    spark = ctx.spark
    quarantine = LakeTable("quarantine", QUARANTINE_TABLE)
    exists = quarantine.exists(spark)
    if exists:
        names = ", ".join(sql_string(t) for t in targets)
        quarantine.delete(spark, f"target_table IN ({names}) AND logical_date = {sql_date(ctx.logical_date)}")
    combined = None
    for frame in (r for r in rejects if r is not None):
        combined = frame if combined is None else combined.unionByName(frame)
    if combined is not None and (not exists or not combined.isEmpty()):
        # Partitioned so that replacing one target's day touches only that partition.
        quarantine.save(spark, combined.write.format("delta").mode("append").partitionBy("target_table", "logical_date"))


def conform(ctx: ConformContext, mapping: Mapping) -> tuple[dict, object]:
    """Conform one mapping for the context's logical date; returns its report entry and its rejects."""
    try:
        bronze = latest_batches(ctx.spark, mapping, ctx.logical_date)
    except SilverError:
        if mapping.on_missing_batch != "keep":
            raise
        return {"source": mapping.source, "skipped": "no batch on this day; current versions kept"}, None
    conformed, rejects, rejected_keys = conform_frame(ctx, mapping, bronze)
    # Not cached: both derive cheaply from the rule-checked frame conform_frame cached, and each cache costs the server
    # an analysis, a plan and a cache-manager lookup per mapping.
    tally = _tally(bronze=bronze, conformed=conformed, rule=rejects)
    source_rows, n_conformed = tally.get("bronze", 0), tally.get("conformed", 0)
    quarantined = {name.removeprefix("rule:"): n for name, n in tally.items() if name.startswith("rule:")}
    counts = merge_scd2(ctx, mapping, conformed, rejected_keys, conformed_rows=n_conformed)
    sizes = counts.pop("sizes", None) or _table_sizes(ctx.spark, mapping.target)
    report = {
        "source": mapping.source,
        "source_rows": source_rows,
        "conformed_rows": n_conformed,
        "quarantined": quarantined,
        "new_versions": counts["new_or_changed"],
        "closed": counts["closed"],
        "written": counts["written"],
        "current_rows": sizes["current"],
        "total_rows": sizes["total"],
    }
    return report, rejects


def _table_sizes(spark, target: str) -> dict[str, int]:
    """Rows of silver table ``target``: every version (``total``) and the open ones (``current``)."""
    from pyspark.sql import functions as F

    sizes = LakeTable("silver", target).read(spark).agg(
        F.count(F.lit(1)).alias("total"),
        F.sum(F.col("DWH_DATUMTIJDGELDIGTOTMET").isNull().cast("int")).alias("current"),
    ).first()
    return {"total": int(sizes["total"]), "current": int(sizes["current"] or 0)}


def _tally(**frames) -> dict[str, int]:
    """Row counts of several frames in one Spark job: ``{name: rows}``; ``rule=frame`` gives ``{"rule:<rule>": rows}``.

    Each round trip to Spark costs more than counting a municipality's rows, so the counts a stage
    reports come back together. A frame passed as ``rule`` is counted per value of its ``rule`` column.
    """
    from pyspark.sql import functions as F

    parts = [
        frame.select((F.concat(F.lit("rule:"), F.col("rule")) if name == "rule" else F.lit(name)).alias("__tally"))
        for name, frame in frames.items()
    ]
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    return {row["__tally"]: row["count"] for row in union.groupBy("__tally").count().collect()}


def dependency_levels(mappings: list[Mapping]) -> list[list[Mapping]]:
    """Group mappings so that each level only references tables of earlier levels."""
    remaining = {m.target: m for m in mappings}
    done: set[str] = set()
    levels = []
    while remaining:
        ready = [m for m in remaining.values() if all(d in done or d not in remaining for d in m.depends_on)]
        if not ready:
            raise SilverError(f"reference cycle among {sorted(remaining)}")
        levels.append(sorted(ready, key=lambda m: m.target))
        for m in ready:
            done.add(m.target)
            del remaining[m.target]
    return levels


def select_mappings(tables: list[str] | None = None, source: str | None = None,
                    mappings_dir: Path | None = None) -> list[Mapping]:
    """The mappings to conform: all, the named GGM ``tables``, or those reading connector ``source``."""
    return [
        m for m in load_all(mappings_dir)
        if (not tables or m.target in tables) and (source is None or m.source_system == source)
    ]


def _later_dates(spark, selected: list[Mapping], logical_date: date) -> list[date]:
    """Days after ``logical_date`` that silver already holds versions (or closures) for.

    One query over every selected table: on a normal day the answer is empty, and each round
    trip to Spark costs more than the tiny scans it makes.
    """
    from pyspark.sql import functions as F

    moment = F.lit(datetime.combine(logical_date, time.min)).cast("timestamp")
    union = None
    for mapping in selected:
        table = LakeTable("silver", mapping.target)
        if not table.exists(spark):
            continue
        frame = table.read(spark)
        for column in ("DWH_DATUMTIJDGELDIGVANAF", "DWH_DATUMTIJDGELDIGTOTMET"):
            later = frame.where(F.col(column) > moment).select(F.to_date(column).alias("day"))
            union = later if union is None else union.unionByName(later)
    if union is None:
        return []
    return sorted(r["day"] for r in union.distinct().collect())


def _bronze_days_after(spark, selected: list[Mapping], logical_date: date) -> list[date]:
    """Days after ``logical_date`` with a bronze batch for every source table the mappings read."""
    from pyspark.sql import functions as F

    per_source: list[set[date]] = []
    # A union source has a day when any of its bronze tables has a batch that day.
    for tables in sorted({m.source_tables for m in selected}):
        days: set[date] = set()
        existing = [LakeTable("bronze", source) for source in tables]
        existing = [bronze for bronze in existing if bronze.exists(spark)]
        if not existing:
            return []
        for bronze in existing:
            rows = bronze.read(spark).where(F.col("_logical_date") > F.lit(logical_date)).select("_logical_date").distinct()
            days.update(r[0] for r in rows.collect())
        per_source.append(days)
    return sorted(set.intersection(*per_source)) if per_source else []


def roll_back(spark, selected: list[Mapping], logical_date: date) -> None:
    """Return the silver tables of ``selected`` to their state before ``logical_date`` was processed.

    Versions opened on or after the day are removed and versions closed on or after it are
    reopened: exactly the history that processing the earlier days in order produced.
    """

    moment = sql_timestamp(datetime.combine(logical_date, time.min))
    for mapping in selected:
        table = LakeTable("silver", mapping.target)
        if not table.exists(spark):
            continue
        table.delete(spark, f"DWH_DATUMTIJDGELDIGVANAF >= {moment}")
        table.update(spark, "DWH_DATUMTIJDGELDIGTOTMET = NULL", f"DWH_DATUMTIJDGELDIGTOTMET >= {moment}")


def _conform_in_thread(ctx: ConformContext, mapping: Mapping):
    """:func:`conform` in a pool thread, with the day's session active there (pyspark keeps it per thread).

    Two runs of one day at once (a backfill beside the scheduled run, a retried task whose first try
    still runs) race to create or merge into the same table; Delta lets one commit win. The loser
    conforms again against what the winner wrote, which for the same bronze changes nothing.
    """
    from ggm_lakehouse.spark import ensure_active

    ensure_active(ctx.spark)
    return retry_on_write_conflict(lambda: conform(ctx, mapping), f"silver {mapping.target}")


def _conform_day(spark, logical_date: date, run_id: str, selected: list[Mapping]) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    ctx = ConformContext(
        spark=spark,
        logical_date=logical_date,
        run_id=run_id,
        loaded_at=datetime.now(timezone.utc).replace(tzinfo=None),
        history_checked=True,
    )
    results: dict[str, tuple[dict, object]] = {}
    # Mappings of one dependency level are independent; running them side by side keeps both
    # cores busy while the driver plans, reads Delta logs and commits.
    workers = max(1, int(os.environ.get("GGM_SILVER_PARALLELISM", "3")))
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ggm-silver") as pool:
            for level in dependency_levels(selected):
                for mapping, result in zip(level, pool.map(lambda m: _conform_in_thread(ctx, m), level)):
                    results[mapping.target] = result
        # Silver DAGs of different sources share the quarantine table and may commit at the same time.
        retry_on_write_conflict(
            lambda: write_quarantine(ctx, [m.target for m in selected], [rejects for _, rejects in results.values()]),
            "quarantine silver_rejects",
        )
    finally:
        ctx.release()
    return {m.target: results[m.target][0] for m in selected}


def run(spark, logical_date: date, run_id: str, tables: list[str] | None = None, mappings_dir: Path | None = None,
        source: str | None = None) -> dict:
    """Conform every mapping (or the named GGM ``tables``, or those of connector ``source``) for ``logical_date``.

    Days may arrive out of order (a backfill, a source that was down): when silver already
    holds later days, the affected tables are rolled back to before ``logical_date`` and the
    later days are conformed again from bronze, oldest first, so the SCD2 history is the one
    that processing every day in order would have given.
    """
    selected = select_mappings(tables, source, mappings_dir)
    if not selected:
        raise SilverError(f"no mapping selected (tables={tables}, source={source!r})")
    later = _later_dates(spark, selected, logical_date)
    replayed: list[str] = []
    if later:
        replay_days = _bronze_days_after(spark, selected, logical_date)
        roll_back(spark, selected, logical_date)
        report = _conform_day(spark, logical_date, run_id, selected)
        for day in replay_days:
            _conform_day(spark, day, run_id, selected)
            replayed.append(day.isoformat())
    else:
        report = _conform_day(spark, logical_date, run_id, selected)
    result = {"stage": "silver", "logical_date": logical_date.isoformat(), "tables": report}
    if source is not None:
        result["source"] = source
    if replayed:
        result["replayed_days"] = replayed
    return result
