"""Ingest DAGs, one per source: extract from the registry or drop zone → land → bronze.

Each source has its own schedule, owner and pool (``ggm_lakehouse.model.sources.SOURCES``).
A successful run updates the Asset ``ggm://bronze/<source>`` with the logical date in its
``extra``; the silver DAG of every table that reads the source is scheduled on it.
"""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, get_current_context, task

from ggm_lakehouse.orchestration import SOURCES, asset_event_extra, bronze_asset, daily_deadline, default_args
from ggm_lakehouse.spark_target import spark_stage_task

DOC = """
### Ingest `{source}`
{description}

1. **extract**: the connector reads its endpoint and credentials from Airflow connection
   `{conn_id}` and writes raw responses plus a `_MANIFEST.json` to the landing zone
   (pool `{pool}` bounds concurrency against the source's rate limit);
2. **bronze**: the day's complete landing batches of this run are appended to
   `bronze/{source}_*` (a batch already in bronze is skipped, so re-running is safe);
3. **announce**: updates Asset `ggm://bronze/{source}`, which starts the silver DAGs.

*When it fails*: the failure alert names the task and error. A source that is down leaves
the day failed and retryable; clear the failed task to retry, the next day runs normally.
"""


def ingest_dag(source: str):
    spec = SOURCES[source]
    asset = bronze_asset(source)

    @dag(
        dag_id=spec.dag_id,
        schedule=spec.schedule,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["ggm", "ingest", source],
        doc_md=DOC.format(source=source, description=spec.description, conn_id=spec.conn_id, pool=spec.pool),
        default_args=default_args(spec.owner),
        deadline=daily_deadline(),
    )
    def ingest():
        @task(task_id="extract", pool=spec.pool)
        def extract() -> dict:
            from ggm_lakehouse import pipeline

            return pipeline.extract(source, get_current_context())

        bronze = spark_stage_task("bronze", source=source, pool="spark")

        @task(task_id="announce", outlets=[asset])
        def announce() -> str:
            context = get_current_context()
            day = context["logical_date"].date()
            context["outlet_events"][asset].extra = asset_event_extra(day, context["run_id"], source=source)
            return day.isoformat()

        extract() >> bronze >> announce()

    return ingest()


for _source in SOURCES:
    ingest_dag(_source)
