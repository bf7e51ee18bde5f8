"""Share DAG: check the shared gold tables after any of them changed and summarise the day."""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, get_current_context, task

from ggm_lakehouse.orchestration import any_of, default_args, gold_asset, run_dates, shared_gold_marts


@dag(
    dag_id="ggm_share",
    schedule=any_of([gold_asset(mart) for mart in shared_gold_marts()]),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["ggm", "share", "delta-sharing"],
    doc_md="### Partner shares\nChecks that every table in `config/shares.yaml` exists with the day's data, "
    "records versions and recipients, and writes the run summary of each logical date.",
    default_args=default_args("team-gegevensdeling"),
)
def ggm_share():
    @task(task_id="publish_share")
    def publish_share() -> list[dict]:
        from ggm_lakehouse import pipeline

        context = get_current_context()
        return [pipeline.publish_share(day, context["run_id"]) for day in run_dates(context)]

    @task(task_id="summary")
    def summary() -> list[dict]:
        from ggm_lakehouse import pipeline

        return [pipeline.run_summary(day) for day in run_dates(get_current_context())]

    publish_share() >> summary()


ggm_share()
