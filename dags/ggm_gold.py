"""Gold DAGs, one per domein: build the domein's policy marts from silver as of each logical date.

``ggm_gold_<domein>`` is scheduled on the silver Assets of every table its marts read (declared
in ``gold_marts/*.yaml``, read by ``ggm_lakehouse.model.mart_definitions``), runs one Spark job for all of
them, updates ``ggm://gold/<mart>`` for each and republishes the policy dashboard. It builds the
logical dates its triggering Asset events name, plus any recent day whose silver is newer than
its gold (a day whose event reached no run).
"""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, get_current_context, task

from ggm_lakehouse.orchestration import (
    all_of,
    asset_event_extra,
    default_args,
    gold_asset,
    gold_domeinen,
    gold_run_dates,
    silver_asset,
)
from ggm_lakehouse.spark_target import spark_stage_task

DATES = "{{ ti.xcom_pull(task_ids='run_dates') }}"


def gold_dag(domein: str, marts: tuple[str, ...], inputs: tuple[str, ...]):
    assets = [gold_asset(mart) for mart in marts]

    @dag(
        dag_id=f"ggm_gold_{domein}",
        schedule=all_of([silver_asset(table) for table in inputs]),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["ggm", "gold", domein],
        doc_md=f"### Gold marts of domein `{domein}`\nMarts: {', '.join(marts)}. Built from silver "
        f"{', '.join(inputs)} as of each logical date, with small-cell and secondary suppression; a day's "
        "partition is replaced only when its content changed. Ends by republishing the dashboard.",
        default_args=default_args("team-beleidsinformatie"),
    )
    def build():
        @task(task_id="run_dates")
        def dates() -> str:
            return ",".join(d.isoformat() for d in gold_run_dates(get_current_context(), domein, inputs))

        gold = spark_stage_task("gold", domein=domein, dates_template=DATES, pool="spark")

        @task(task_id="announce", outlets=assets)
        def announce(days: str) -> str:
            context = get_current_context()
            newest = max(datetime.fromisoformat(d).date() for d in days.split(","))
            for asset in assets:
                context["outlet_events"][asset].extra = asset_event_extra(newest, context["run_id"], days=days.split(","))
            return days

        @task(task_id="dashboard")
        def dashboard() -> dict:
            from ggm_lakehouse.pipeline import publish_dashboard

            return publish_dashboard()

        days = dates()
        days >> gold >> announce(days) >> dashboard()

    return build()


for _domein, (_marts, _inputs) in gold_domeinen().items():
    gold_dag(_domein, _marts, _inputs)
