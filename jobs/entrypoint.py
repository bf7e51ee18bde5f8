"""One entry point for every Spark stage: spark-submit, Databricks and tests call the same code.

    spark-submit jobs/entrypoint.py silver --logical-date 2026-11-27 --run-id manual__1

Each stage prints its report as one JSON line and writes it to
``<data root>/runs/<logical date>/<stage>.json`` so that the run summary and the
processing log can be assembled after the Spark process has ended.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

# spark-submit runs this file as a script; make the checkout importable when it is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ggm_lakehouse.processing_log import ProcessingOperation, processing_operation  # noqa: E402
from ggm_lakehouse.reports import read_report, write_report  # noqa: E402

STAGES = ("bronze", "silver", "gold")
# Systems every Spark stage involves, as the verwerkingslog names them.
SPARK_SYSTEMS = ("Apache Spark", "Delta Lake")


def run_stage(spark, stage: str, logical_date: date, run_id: str, source: str | None = None,
              mart: str | None = None, domein: str | None = None) -> dict:
    """Run one stage in an existing SparkSession and persist its report.

    ``source`` narrows bronze and silver to one source (the per-source ingest and silver
    DAGs), ``mart`` gold to one mart and ``domein`` gold to one domein's marts (the gold DAGs);
    without them everything of the day is processed.
    Every run is one operation in the verwerkingslog (``ggm_lakehouse.processing_log``), with
    what it read and wrote and, for silver, the pseudonyms of the persons whose data changed.
    """
    from ggm_lakehouse.spark import ensure_active

    ensure_active(spark)
    name = "_".join(filter(None, [stage, source, mart, domein]))
    with processing_operation(name, logical_date=logical_date, run_id=run_id, systemen=SPARK_SYSTEMS) as op:
        report = _run_unless_unchanged(spark, name, stage, logical_date, run_id, source, mart, domein)
        report["run_id"] = run_id
        record_stage_io(op, spark, report, logical_date)
    write_report(logical_date, name, report)
    return report


def _run_unless_unchanged(spark, name: str, stage: str, logical_date: date, run_id: str, source: str | None,
                          mart: str | None, domein: str | None) -> dict:
    """The stage's report: from its work, or, when its day is as its last run left it, from that run (see stage_state)."""
    from jobs import stage_state

    previous = read_report(logical_date, name)
    scope = stage_state.scope_of(stage, source, mart, domein)
    if scope is None:
        return _execute_stage(spark, stage, logical_date, run_id, source, mart, domein, previous=previous)
    before = stage_state.current_state(spark, scope)
    if stage_state.unchanged_since(previous, before):
        return stage_state.unchanged_report(previous)
    report = _execute_stage(spark, stage, logical_date, run_id, source, mart, domein)
    # Inputs as this run found them: a batch that landed meanwhile must make the next run look.
    report["state"] = {**before, "writes": stage_state.versions(spark, scope.writes)}
    return report


def _execute_stage(spark, stage: str, logical_date: date, run_id: str, source: str | None, mart: str | None,
                   domein: str | None = None, previous: dict | None = None) -> dict:
    if stage == "bronze":
        from jobs import bronze

        report = bronze.run(spark, logical_date, run_id, source=source, previous=previous)
    elif stage == "silver":
        from jobs import silver

        report = silver.run(spark, logical_date, run_id, source=source)
    elif stage == "gold":
        from jobs import gold

        report = gold.run(spark, logical_date, marts=[mart] if mart else None, domein=domein)
    else:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    return report


def record_stage_io(op: ProcessingOperation, spark, report: dict, logical_date: date) -> None:
    """Tell the processing log what a stage read and wrote, from its report and the declared lineage."""
    from ggm_lakehouse.model.mappings import load_all, person_bronze_tables

    mappings = load_all()
    tables = report.get("tables", {})
    if report["stage"] == "bronze":
        # Bronze keeps records in clear; the log counts the persons instead of listing them.
        person_sources = person_bronze_tables(mappings)
        for table, entry in tables.items():
            source, _, dataset = table.partition("_")
            op.read(f"landing.{source}/{dataset}")
            op.wrote(f"bronze.{table}", entry["rows"])
        persons = sum(entry["rows"] for table, entry in tables.items() if table in person_sources)
        if persons:
            op.betrokkenen_aantal(persons)
    elif report["stage"] == "silver":
        by_target = {m.target: m for m in mappings}
        quarantined = 0
        for target, entry in tables.items():
            mapping = by_target[target]
            op.read(*(f"bronze.{table}" for table in mapping.source_tables), *(f"bronze.{lookup.source}" for lookup in mapping.lookups))
            op.wrote(f"silver.{target.lower()}", entry.get("new_versions", 0) + entry.get("closed", 0))
            quarantined += sum(entry.get("quarantined", {}).values())
        if quarantined:
            op.wrote("quarantine.silver_rejects", quarantined)
        changed = [by_target[t] for t, e in tables.items() if e.get("new_versions", 0) + e.get("closed", 0)]
        op.betrokkenen(changed_person_pseudonyms(spark, changed, logical_date))
    elif report["stage"] == "gold":
        from jobs.gold import MART_INPUTS as inputs

        for mart, entry in tables.items():
            if entry.get("waiting_for"):
                continue  # not built: its silver inputs do not exist yet
            op.read(*(f"silver.{table.lower()}" for table in inputs.get(mart, ())))
            op.wrote(f"gold.{mart}", entry["rows"] if entry.get("written") else 0)


def changed_person_pseudonyms(spark, mappings: list, logical_date: date) -> list[str]:
    """Pseudonyms of the persons whose silver versions start or end on ``logical_date``.

    These are the data subjects of the silver operation (LDV ``data_subject_id``); the
    columns are the ones a mapping pseudonymises, so no BSN can be picked up by accident.
    """
    from datetime import datetime, time

    from pyspark.sql import functions as F

    from ggm_lakehouse.lake import LakeTable

    moment = F.lit(datetime.combine(logical_date, time.min)).cast("timestamp")
    frames = []
    for mapping in mappings:
        columns = [c.name for c in mapping.columns if c.pseudonymise]
        table = LakeTable("silver", mapping.target)
        if not columns or not table.exists(spark):
            continue
        changed = table.read(spark).where(
            (F.col("DWH_DATUMTIJDGELDIGVANAF") == moment) | (F.col("DWH_DATUMTIJDGELDIGTOTMET") == moment)
        )
        frames += [changed.select(F.col(c).alias("pseudonym")) for c in columns]
    if not frames:
        return []
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame)
    return [row["pseudonym"] for row in union.where("pseudonym IS NOT NULL").distinct().collect()]


def parse_logical_dates(text: str) -> list[date]:
    """The dates of ``2026-11-27`` or ``2026-11-26,2026-11-27`` (an Asset-triggered run's days), oldest first."""
    try:
        dates = sorted({date.fromisoformat(part.strip()) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"logical dates must be YYYY-MM-DD, comma separated; got {text!r}") from exc
    if not dates:
        raise argparse.ArgumentTypeError("no logical date given")
    return dates


def run_stages(spark, stage: str, dates: list[date], run_id: str, source: str | None = None, mart: str | None = None,
               domein: str | None = None) -> list[dict]:
    """Run one stage for each of ``dates`` (oldest first) in ``spark``; returns the reports."""
    return [run_stage(spark, stage, day, run_id, source=source, mart=mart, domein=domein) for day in dates]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one GGM Lakehouse Spark stage.")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument(
        "--logical-date",
        required=True,
        type=parse_logical_dates,
        help="one date, or several separated by commas (an Asset-triggered run can cover several days; "
        "they are processed oldest first)",
    )
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--source", help="only this source (bronze: landing source; silver: mappings reading it)")
    parser.add_argument("--mart", help="gold: only this mart")
    parser.add_argument("--domein", help="gold: only the marts of this domein")
    args = parser.parse_args(argv)

    from ggm_lakehouse.spark import get_spark

    spark = get_spark(f"ggm-{args.stage}")
    for report in run_stages(spark, args.stage, args.logical_date, args.run_id, source=args.source, mart=args.mart,
                             domein=args.domein):
        print(json.dumps(report, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
