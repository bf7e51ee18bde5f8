"""DAG layout: one ingest DAG per source, Asset-scheduled silver/gold/share DAGs, owners, docs,
retries, failure callbacks, deadlines and pools; the Spark target is configuration."""
from __future__ import annotations

import os

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

DAGS = Path(__file__).resolve().parents[1] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def _asset_uris(condition) -> set[str]:
    """Every Asset URI inside an Asset condition (a single Asset, AssetAll or AssetAny)."""
    if hasattr(condition, "objects"):
        return set().union(*(_asset_uris(o) for o in condition.objects))
    return {condition.uri}


def test_every_dag_imports_without_errors(dagbag):
    from ggm_lakehouse.orchestration import SOURCES, gold_domeinen, silver_groups

    assert dagbag.import_errors == {}
    expected = {s.dag_id for s in SOURCES.values()} | {g.dag_id for g in silver_groups()}
    expected |= {f"ggm_gold_{d}" for d in gold_domeinen()} | {"ggm_share", "ggm_retention"}
    assert set(dagbag.dag_ids) == expected


def test_every_dag_has_owner_tags_docs_retries_and_failure_callback(dagbag):
    from ggm_lakehouse.alerts import notify_task_failure

    for dag in dagbag.dags.values():
        assert dag.doc_md and "ggm" in dag.tags, dag.dag_id
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", (dag.dag_id, task.task_id)
            assert task.retries >= 1 and task.retry_exponential_backoff, (dag.dag_id, task.task_id)
            callbacks = task.on_failure_callback if isinstance(task.on_failure_callback, list) else [task.on_failure_callback]
            assert notify_task_failure in callbacks, (dag.dag_id, task.task_id)


def test_retention_dag_runs_daily_before_the_ingests_on_the_spark_target(dagbag):
    from airflow.providers.apache.spark.operators.spark_pyspark import PySparkOperator

    from ggm_lakehouse.spark_target import run_retention_task

    dag = dagbag.dags["ggm_retention"]
    assert type(dag.timetable).__name__ == "CronTriggerTimetable" and dag.timetable.expression == "0 1 * * *"
    (task,) = dag.tasks
    assert task.task_id == "retention" and task.pool == "spark"
    if os.environ.get("GGM_SPARK_TARGET", "connect") == "connect":
        assert isinstance(task, PySparkOperator) and task.conn_id == "ggm_spark"
    assert task.python_callable is run_retention_task
    assert task.op_kwargs == {"as_of": "{{ ds }}", "run_id": "{{ run_id }}"}


def test_ingest_dags_are_daily_per_source_with_pools_and_deadline(dagbag):
    from ggm_lakehouse.orchestration import POOLS, SOURCES

    for source, spec in SOURCES.items():
        dag = dagbag.dags[spec.dag_id]
        assert type(dag.timetable).__name__ == "CronTriggerTimetable"
        assert dag.deadline, f"{spec.dag_id} has no deadline alert"
        tasks = {t.task_id: t for t in dag.tasks}
        assert tasks["extract"].pool == spec.pool and spec.pool in POOLS
        assert tasks["bronze"].upstream_task_ids == {"extract"}
        assert tasks["bronze"].op_kwargs["stage"] == "bronze" and tasks["bronze"].op_kwargs["source"] == source
        outlets = {o.uri for o in tasks["announce"].outlets}
        assert outlets == {f"ggm://bronze/{source}"}


def test_silver_dags_wait_only_for_the_sources_their_mappings_read(dagbag):
    silver_bag = dagbag.dags["ggm_silver_bag"]
    # NUMMERAANDUIDING looks up the CBS pc6-huisnummer file of the gebieden source and its
    # reference rule checks LIGT_IN_BUURT_ID against silver BUURT.
    assert _asset_uris(silver_bag.timetable.asset_condition) == {
        "ggm://bronze/bag", "ggm://bronze/gebieden", "ggm://silver/BUURT"
    }
    silver_brp = dagbag.dags["ggm_silver_brp"]
    assert _asset_uris(silver_brp.timetable.asset_condition) == {"ggm://bronze/brp", "ggm://silver/NUMMERAANDUIDING"}
    announce = {t.task_id: t for t in silver_brp.tasks}["announce"]
    assert {o.uri for o in announce.outlets} == {"ggm://silver/NATUURLIJKPERSOON", "ggm://silver/INGESCHREVENPERSOON"}


def test_gold_and_share_dags_are_chained_on_assets(dagbag):
    from jobs.gold import MART_DOMEINEN, MART_INPUTS

    gold = dagbag.dags["ggm_gold_demografie"]
    assert _asset_uris(gold.timetable.asset_condition) == {
        f"ggm://silver/{t}" for m, d in MART_DOMEINEN.items() if d == "demografie" for t in MART_INPUTS[m]
    }
    share = dagbag.dags["ggm_share"]
    assert "ggm://gold/inwoners_per_buurt" in _asset_uris(share.timetable.asset_condition)
    tasks = {t.task_id: t for t in gold.tasks}
    assert tasks["gold"].op_kwargs["dates"] == "{{ ti.xcom_pull(task_ids='run_dates') }}"
    assert tasks["gold"].op_kwargs["domein"] == "demografie"
    assert {o.uri for o in tasks["announce"].outlets} == {"ggm://gold/inwoners_per_buurt"}
    assert "dashboard" in tasks and tasks["dashboard"].upstream_task_ids == {"announce"}


def test_every_mart_is_built_by_the_gold_dag_of_its_domein(dagbag):
    from jobs.gold import MART_DOMEINEN

    for mart, domein in MART_DOMEINEN.items():
        announce = {t.task_id: t for t in dagbag.dags[f"ggm_gold_{domein}"].tasks}["announce"]
        assert f"ggm://gold/{mart}" in {o.uri for o in announce.outlets}, mart


def test_run_dates_come_from_logical_date_or_triggering_events():
    from ggm_lakehouse.orchestration import run_dates

    scheduled = {"logical_date": datetime(2026, 3, 2, tzinfo=timezone.utc)}
    assert run_dates(scheduled) == [date(2026, 3, 2)]
    events = [SimpleNamespace(extra={"logical_date": "2026-03-04"}), SimpleNamespace(extra={"logical_date": "2026-03-03"})]
    triggered = {"logical_date": None, "triggering_asset_events": {"ggm://bronze/brp": events}}
    assert run_dates(triggered) == [date(2026, 3, 3), date(2026, 3, 4)]
    # A silver run that caught up missed days announces them all; gold builds every one of them.
    caught_up = SimpleNamespace(extra={"logical_date": "2026-11-29", "days": ["2026-03-02", "2026-11-29"]})
    from_silver = {"logical_date": None, "triggering_asset_events": {"ggm://silver/buurt": [caught_up]}}
    assert run_dates(from_silver) == [date(2026, 3, 2), date(2026, 11, 29)]
    with pytest.raises(ValueError, match="no logical date"):
        run_dates({"logical_date": None, "triggering_asset_events": {}})


def test_asset_triggered_silver_runs_catch_up_days_whose_bronze_is_newer(tmp_path, monkeypatch):
    """The scheduler safety net: a day whose bronze event reached no silver run is conformed by the next one."""
    import time

    from ggm_lakehouse.orchestration import SilverGroup, missed_silver_dates, silver_run_dates
    from ggm_lakehouse.reports import write_report

    monkeypatch.setenv("GGM_DATA_ROOT", str(tmp_path))
    group = SilverGroup("gebieden", ("BUURT", "WIJK"), ("gebieden",))
    done, missed, rerun, no_bronze = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)
    backfilled, abandoned = date(2024, 6, 3), date(2026, 2, 2)
    now = datetime.now(timezone.utc)

    def report(day, name, seconds=0):
        write_report(day, name, {}, written_at=now + timedelta(seconds=seconds))

    for day in (done, missed, backfilled):
        report(day, "bronze_gebieden")
    # The bronze of `rerun` was landed again after its silver ran: silver is stale.
    report(rerun, "bronze_gebieden", 60)
    # `abandoned` was landed 20 days ago and its silver never ran (it kept failing, say).
    report(abandoned, "bronze_gebieden", -20 * 86400)
    for day in (done, rerun, no_bronze):
        report(day, "silver_gebieden")
    (tmp_path / "runs" / "notes").mkdir()

    # `backfilled` is a day far in the past that a backfill landed just now: its event may be the lost one.
    assert missed_silver_dates(group, window_days=14) == [backfilled, missed, rerun]
    assert missed_silver_dates(group, window_days=30) == [backfilled, abandoned, missed, rerun]
    # The window is wall-clock time since the bronze was written.
    assert missed_silver_dates(group, window_days=14, now=time.time() + 15 * 86400) == []

    events = [SimpleNamespace(extra={"logical_date": "2026-03-04"})]
    triggered = {"logical_date": None, "triggering_asset_events": {"ggm://bronze/gebieden": events}}
    assert silver_run_dates(triggered, group) == [backfilled, missed, rerun, no_bronze]
    # Explicit dates are processed exactly, without catching up.
    manual = {"logical_date": None, "dag_run": SimpleNamespace(conf={"logical_dates": ["2026-03-04"]})}
    assert silver_run_dates(manual, group) == [no_bronze]


def test_asset_triggered_gold_runs_catch_up_days_whose_silver_is_newer(tmp_path, monkeypatch):
    """The same safety net for gold: a day whose silver event reached no gold run is built by the next one."""

    from ggm_lakehouse.orchestration import gold_run_dates, missed_gold_dates, silver_groups
    from ggm_lakehouse.reports import write_report

    monkeypatch.setenv("GGM_DATA_ROOT", str(tmp_path))
    producers = {table: g.source for g in silver_groups() for table in g.tables}
    inputs = ("WIJK", "BUURT", "NATUURLIJKPERSOON")
    sources = sorted({producers[t] for t in inputs})
    assert len(sources) == 2, sources  # gebieden and brp: the day needs both silver reports
    built, lost, half, stale = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)
    now = datetime.now(timezone.utc)
    for day in (built, lost, stale):
        for source in sources:
            write_report(day, f"silver_{source}", {}, written_at=now)
    write_report(half, f"silver_{sources[0]}", {}, written_at=now)
    for day in (built, stale):
        write_report(day, "gold_demografie", {}, written_at=now + timedelta(seconds=30))
    # Silver of `stale` was conformed again (a late delivery replayed it) after its gold was built.
    write_report(stale, f"silver_{sources[1]}", {}, written_at=now + timedelta(seconds=60))
    assert missed_gold_dates("demografie", inputs) == [lost, stale]
    # Another domein's gold report does not count.
    assert missed_gold_dates("veiligheid", inputs) == [built, lost, stale]

    events = [SimpleNamespace(extra={"logical_date": "2026-03-01"})]
    triggered = {"logical_date": None, "triggering_asset_events": {"ggm://silver/buurt": events}}
    assert gold_run_dates(triggered, "demografie", inputs) == [built, lost, stale]
    scheduled = {"logical_date": datetime(2026, 3, 1, tzinfo=timezone.utc)}
    assert gold_run_dates(scheduled, "demografie", inputs) == [built]


def test_retries_are_configurable_for_operators(monkeypatch):
    from ggm_lakehouse.orchestration import default_args

    monkeypatch.setenv("GGM_TASK_RETRIES", "0")
    assert default_args("x")["retries"] == 0
    monkeypatch.setenv("GGM_TASK_RETRIES", "3")
    assert default_args("x")["retries"] == 3


def test_pools_are_created_in_the_metadata_db():
    from airflow.models.pool import Pool
    from airflow.utils.db import initdb

    from ggm_lakehouse.orchestration import POOLS, ensure_pools

    initdb()
    ensure_pools()
    for name, (slots, _) in POOLS.items():
        assert Pool.get_pool(name).slots == slots


def test_local_target_submits_the_shared_entrypoint_with_delta(monkeypatch):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    from ggm_lakehouse.spark_target import spark_stage_task

    monkeypatch.setenv("GGM_SPARK_TARGET", "local")
    task = spark_stage_task("silver", source="brp")
    assert isinstance(task, SparkSubmitOperator)
    assert task.application.endswith("jobs/entrypoint.py")
    assert task.application_args[:3] == ["silver", "--logical-date", "{{ ds }}"]
    assert task.application_args[-2:] == ["--source", "brp"]
    assert task.conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert task.jars and "delta-spark" in task.jars


def test_connect_target_is_the_default_and_runs_the_stage_in_the_task(monkeypatch):
    from airflow.providers.apache.spark.operators.spark_pyspark import PySparkOperator

    from ggm_lakehouse.spark_target import run_stage_task, spark_stage_task

    monkeypatch.delenv("GGM_SPARK_TARGET", raising=False)
    task = spark_stage_task("silver", source="brp", dates_template="{{ params.days }}")
    assert isinstance(task, PySparkOperator)
    assert task.conn_id == "ggm_spark" and task.python_callable is run_stage_task
    assert task.op_kwargs == {"stage": "silver", "dates": "{{ params.days }}", "run_id": "{{ run_id }}",
                              "source": "brp", "mart": None, "domein": None}


def test_embedded_connection_ggm_spark_is_the_local_connect_server(monkeypatch, tmp_path):
    import json

    from ggm_lakehouse.airflow_env import airflow_environment

    monkeypatch.delenv("AIRFLOW_CONN_GGM_SPARK", raising=False)
    monkeypatch.delenv("GGM_SPARK_TARGET", raising=False)
    monkeypatch.setenv("GGM_SPARK_CONNECT_PORT", "15123")
    conn = json.loads(airflow_environment()["AIRFLOW_CONN_GGM_SPARK"])
    assert conn["conn_type"] == "spark_connect" and conn["host"] == "sc://localhost" and conn["port"] == 15123
    assert conn["password"] == os.environ["GGM_SPARK_CONNECT_TOKEN"]
    monkeypatch.setenv("GGM_SPARK_TARGET", "local")
    assert json.loads(airflow_environment()["AIRFLOW_CONN_GGM_SPARK"]) == {"conn_type": "spark", "host": "local[2]"}


def test_databricks_target_runs_the_same_entrypoint(monkeypatch):
    from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator

    from ggm_lakehouse.spark_target import spark_stage_task

    monkeypatch.setenv("GGM_SPARK_TARGET", "databricks")
    monkeypatch.setenv("GGM_DATABRICKS_CLUSTER", '{"spark_version": "16.4.x-scala2.12", "num_workers": 2}')
    task = spark_stage_task("gold", mart="inwoners_per_buurt")
    assert isinstance(task, DatabricksSubmitRunOperator)
    spark_task = task.json["tasks"][0]
    assert spark_task["spark_python_task"]["python_file"].endswith("jobs/entrypoint.py")
    assert spark_task["spark_python_task"]["parameters"][0] == "gold"
    assert spark_task["spark_python_task"]["parameters"][-2:] == ["--mart", "inwoners_per_buurt"]
    assert spark_task["new_cluster"]["num_workers"] == 2


def test_unknown_target_fails_loudly(monkeypatch):
    from ggm_lakehouse.spark_target import spark_stage_task

    monkeypatch.setenv("GGM_SPARK_TARGET", "mainframe")
    with pytest.raises(ValueError, match="mainframe"):
        spark_stage_task("bronze")


def test_embedded_sqlite_metadata_db_waits_for_its_write_lock(tmp_path):
    """Scheduler, API server and CLI write the SQLite DB at once; a 5-second lock wait made backfills fail."""
    from importlib import import_module

    from ggm_lakehouse.airflow_env import airflow_environment

    sqlite = airflow_environment({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}"})
    module, _, name = sqlite["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"].rpartition(".")
    assert getattr(import_module(module), name)["timeout"] >= 30
    postgres = airflow_environment({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow@db/airflow"})
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS" not in postgres
