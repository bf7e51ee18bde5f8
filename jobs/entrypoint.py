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

from ggm_lakehouse.reports import write_report  # noqa: E402

STAGES = ("bronze", "silver", "gold")


def run_stage(spark, stage: str, logical_date: date, run_id: str) -> dict:
    """Run one stage in an existing SparkSession and persist its report."""
    if stage == "bronze":
        from jobs import bronze

        report = bronze.run(spark, logical_date, run_id)
    elif stage == "silver":
        from jobs import silver

        report = silver.run(spark, logical_date, run_id)
    elif stage == "gold":
        from jobs import gold

        report = gold.run(spark, logical_date)
    else:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    report["run_id"] = run_id
    write_report(logical_date, stage, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one GGM Lakehouse Spark stage.")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--logical-date", required=True, type=date.fromisoformat)
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args(argv)

    from ggm_lakehouse.spark import get_spark

    spark = get_spark(f"ggm-{args.stage}")
    report = run_stage(spark, args.stage, args.logical_date, args.run_id)
    print(json.dumps(report, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
