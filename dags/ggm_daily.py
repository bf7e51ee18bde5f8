"""Daily GGM pipeline: registries → landing → bronze → GGM silver → gold → partner share.

Thin by design: every task calls a function from ``ggm_lakehouse.pipeline`` or runs a
Spark stage of ``jobs/entrypoint.py`` through ``ggm_lakehouse.spark_target``, which
decides from configuration whether Spark runs locally, on a cluster or on Databricks.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, dag, get_current_context, task, task_group

from ggm_lakehouse.pipeline import SOURCES
from ggm_lakehouse.spark_target import spark_stage_task

SILVER = Asset("ggm://silver/ggm")
GOLD = Asset("ggm://gold/inwoners_per_buurt")

DOC = """
### GGM daily pipeline
Pulls BRP (Haal Centraal Personen v2), BAG (Individuele Bevragingen v2) and the
wijk- en buurtindeling, lands raw responses with a manifest per batch, appends them
to bronze, conforms them to GGM v2.5.1 silver tables (SCD2, pseudonymised BSN,
quarantine for bad records), builds the gold mart `inwoners_per_buurt` and checks the
Delta Sharing share `gemeente_gold`.

*Re-running a date* is safe: bronze skips batches it has, silver and gold write
nothing when nothing changed. See README "Operating the platform".
"""


@dag(
    dag_id="ggm_daily",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["ggm", "brp", "bag", "daily"],
    doc_md=DOC,
    default_args={"owner": "ggm-data-team", "retries": 2, "retry_delay": timedelta(minutes=2)},
)
def ggm_daily():
    @task_group(group_id="extract")
    def extract():
        for source in SOURCES:

            @task(task_id=source)
            def extract_source(source: str = source) -> dict:
                from ggm_lakehouse import pipeline

                return pipeline.extract(source, get_current_context())

            extract_source()

    bronze = spark_stage_task("bronze")
    silver = spark_stage_task("silver", outlets=[SILVER])
    gold = spark_stage_task("gold", outlets=[GOLD])

    @task(task_id="publish_share")
    def publish_share() -> dict:
        from ggm_lakehouse import pipeline

        return pipeline.publish_share(get_current_context()["logical_date"].date())

    @task(task_id="summary")
    def summary() -> dict:
        from ggm_lakehouse import pipeline

        return pipeline.run_summary(get_current_context()["logical_date"].date())

    extract() >> bronze >> silver >> gold >> publish_share() >> summary()


ggm_daily()
