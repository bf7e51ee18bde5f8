"""Retention DAG: enforce the bewaartermijnen of the register of processing activities every day.

Only wiring: what is purged, and how, is ``ggm_lakehouse.retention`` (docs/retention.md).
"""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from ggm_lakehouse.orchestration import default_args
from ggm_lakehouse.spark_target import spark_retention_task

DOC = """
### Bewaartermijnen
Deletes, as of the run's logical date, what is older than the terms per layer in
`config/verwerkingsactiviteiten.yaml` (`bewaartermijnen`): landing batches and the drop zones'
archived and quarantined deliveries, bronze rows, quarantined records and, where a silver term is
declared, closed silver versions; then VACUUMs the tables so the rows cannot be read back through
time travel. Gold is never touched. Each purge is logged in the verwerkingslog under its activity.

Runs at 01:00 UTC, before the first ingest (02:00), so no writer runs beside it. A term shorter
than `bewaartermijn_minimum` fails the run and purges nothing. `ggm retention plan` shows what a
run would do.
"""


@dag(
    dag_id="ggm_retention",
    schedule="0 1 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["ggm", "governance", "retention"],
    doc_md=DOC,
    default_args=default_args("team-informatiebeheer"),
)
def ggm_retention():
    spark_retention_task(pool="spark")


ggm_retention()
