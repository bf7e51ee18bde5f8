"""DAG files import cleanly and are wired extract → bronze → silver → gold → share; the Spark target is configuration."""
from __future__ import annotations

from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[1] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_dag_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "ggm_daily" in dagbag.dag_ids


def test_daily_dag_is_scheduled_daily_and_documented(dagbag):
    dag = dagbag.dags["ggm_daily"]
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"  # what schedule="@daily" becomes in Airflow 3
    assert dag.doc_md and dag.tags and dag.default_args["owner"]


def test_daily_dag_chain(dagbag):
    dag = dagbag.dags["ggm_daily"]
    tasks = {t.task_id: t for t in dag.tasks}
    assert {"extract.brp", "extract.bag", "extract.gebieden", "bronze", "silver", "gold", "publish_share", "summary"} <= set(tasks)
    assert {"extract.brp", "extract.bag", "extract.gebieden"} <= tasks["bronze"].upstream_task_ids
    assert tasks["silver"].upstream_task_ids == {"bronze"}
    assert tasks["gold"].upstream_task_ids == {"silver"}
    assert tasks["publish_share"].upstream_task_ids == {"gold"}


def test_local_target_submits_the_shared_entrypoint_with_delta(monkeypatch):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    from ggm_lakehouse.spark_target import spark_stage_task

    monkeypatch.setenv("GGM_SPARK_TARGET", "local")
    task = spark_stage_task("silver")
    assert isinstance(task, SparkSubmitOperator)
    assert task.application.endswith("jobs/entrypoint.py")
    assert task.application_args[0] == "silver" and "{{ ds }}" in task.application_args
    assert task.conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert task.jars and "delta-spark" in task.jars


def test_databricks_target_runs_the_same_entrypoint(monkeypatch):
    from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator

    from ggm_lakehouse.spark_target import spark_stage_task

    monkeypatch.setenv("GGM_SPARK_TARGET", "databricks")
    monkeypatch.setenv("GGM_DATABRICKS_CLUSTER", '{"spark_version": "16.4.x-scala2.12", "num_workers": 2}')
    task = spark_stage_task("gold")
    assert isinstance(task, DatabricksSubmitRunOperator)
    spark_task = task.json["tasks"][0]
    assert spark_task["spark_python_task"]["python_file"].endswith("jobs/entrypoint.py")
    assert spark_task["spark_python_task"]["parameters"][0] == "gold"
    assert spark_task["new_cluster"]["num_workers"] == 2


def test_unknown_target_fails_loudly(monkeypatch):
    from ggm_lakehouse.spark_target import spark_stage_task

    monkeypatch.setenv("GGM_SPARK_TARGET", "mainframe")
    with pytest.raises(ValueError, match="mainframe"):
        spark_stage_task("bronze")
