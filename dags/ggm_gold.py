"""Gold DAGs, one per mart: build the policy mart from silver as of each logical date.

``ggm_gold_<mart>`` is scheduled on the silver Assets of the tables the mart reads
(``jobs.gold.MART_INPUTS``) and updates ``ggm://gold/<mart>``.
"""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, get_current_context, task

from ggm_lakehouse.orchestration import all_of, asset_event_extra, default_args, gold_asset, gold_marts, run_dates, silver_asset
from ggm_lakehouse.spark_target import spark_stage_task

DATES = "{{ ti.xcom_pull(task_ids='run_dates') }}"


def gold_dag(mart: str, inputs: tuple[str, ...]):
    asset = gold_asset(mart)

    @dag(
        dag_id=f"ggm_gold_{mart}",
        schedule=all_of([silver_asset(table) for table in inputs]),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["ggm", "gold", mart],
        doc_md=f"### Gold mart `{mart}`\nBuilt from silver {', '.join(inputs)} as of each logical date, "
        "with small-cell suppression; a day's partition is replaced only when its content changed.",
        default_args=default_args("team-beleidsinformatie"),
    )
    def build():
        @task(task_id="run_dates")
        def dates() -> str:
            return ",".join(d.isoformat() for d in run_dates(get_current_context()))

        gold = spark_stage_task("gold", mart=mart, dates_template=DATES, pool="spark")

        @task(task_id="announce", outlets=[asset])
        def announce(days: str) -> str:
            context = get_current_context()
            context["outlet_events"][asset].extra = asset_event_extra(
                max(datetime.fromisoformat(d).date() for d in days.split(",")), context["run_id"], days=days.split(",")
            )
            return days

        days = dates()
        days >> gold >> announce(days)

    return build()


for _mart, _inputs in gold_marts().items():
    gold_dag(_mart, _inputs)
