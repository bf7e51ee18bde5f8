"""Silver DAGs, one per source: conform the source's bronze batches to GGM v2.5.1 tables.

``ggm_silver_<source>`` is scheduled on the bronze Assets of every source its mappings read
(``ggm_lakehouse.orchestration.silver_groups``), so it waits for exactly what it needs. It
processes the logical dates of its triggering Asset events, oldest first, plus any recent day
whose bronze is newer than its silver (a day whose event reached no run); an earlier date that
arrives late (a backfill) is merged into the SCD2 history by replaying later days.
"""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, get_current_context, task

from ggm_lakehouse.orchestration import (
    all_of,
    asset_event_extra,
    default_args,
    silver_asset,
    silver_groups,
    silver_run_dates,
)
from ggm_lakehouse.spark_target import spark_stage_task

DATES = "{{ ti.xcom_pull(task_ids='run_dates') }}"


def silver_dag(group):
    outlets = [silver_asset(table) for table in group.tables]

    @dag(
        dag_id=group.dag_id,
        schedule=all_of(group.schedule_assets()),
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["ggm", "silver", group.source],
        doc_md=f"### Silver from `{group.source}`\nConforms {', '.join(group.tables)} from bronze "
        f"({', '.join(group.needs)}) with SCD2 history, pseudonymised BSN and quarantine of bad records."
        + (f" Waits for {', '.join(group.references)}, which its reference rules check." if group.references else ""),
        default_args=default_args("team-datakwaliteit"),
    )
    def conform():
        @task(task_id="run_dates")
        def dates() -> str:
            return ",".join(d.isoformat() for d in silver_run_dates(get_current_context(), group))

        silver = spark_stage_task("silver", source=group.source, dates_template=DATES, pool="spark")

        @task(task_id="announce", outlets=outlets)
        def announce(days: str) -> str:
            context = get_current_context()
            for asset in outlets:
                context["outlet_events"][asset].extra = asset_event_extra(
                    max(datetime.fromisoformat(d).date() for d in days.split(",")), context["run_id"], days=days.split(",")
                )
            return days

        days = dates()
        days >> silver >> announce(days)

    return conform()


for _group in silver_groups():
    silver_dag(_group)
