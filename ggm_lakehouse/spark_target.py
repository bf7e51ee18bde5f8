"""One factory decides where a Spark stage runs: local spark-submit, a Spark cluster, or Databricks.

The target comes from configuration, never from DAG code:

* ``GGM_SPARK_TARGET`` environment variable or Airflow Variable ``ggm_spark_target``:
  ``connect`` (default), ``local``, ``cluster`` or ``databricks``;
* ``connect`` runs the stage in the task's own process as a thin Spark Connect client of the day's
  long-lived server (``PySparkOperator`` with Airflow connection ``ggm_spark`` of type
  ``spark_connect``, ``sc://localhost:15002`` on the embedded default, see
  :mod:`ggm_lakehouse.spark_connect`; the compose file's ``spark-connect`` service on a cluster):
  no JVM starts in a task;
* ``local`` and ``cluster`` use ``SparkSubmitOperator``, a JVM per stage, with Airflow connection
  ``ggm_spark`` (type ``spark``: host ``local[2]``, ``spark://host:7077`` or ``k8s://…``);
* ``databricks`` uses ``DatabricksSubmitRunOperator`` with connection ``ggm_databricks``
  and runs the same ``jobs/entrypoint.py`` as a ``spark_python_task``; the cluster spec
  comes from Airflow Variable ``ggm_databricks_cluster`` (JSON), the entry point's
  workspace path from ``ggm_databricks_entrypoint``.

The job code is identical for all three targets; only this configuration differs.
"""
from __future__ import annotations

import json
import os
import sys

from ggm_lakehouse.config import project_root

TARGETS = ("connect", "local", "cluster", "databricks")
# Scheduled runs process their own logical date; Asset-triggered runs pass the dates of their
# triggering events (see ggm_lakehouse.orchestration.run_dates) through ``dates_template``.
DEFAULT_DATES_TEMPLATE = "{{ ds }}"

# Environment the Spark driver needs on the embedded default: where the lake is, and nothing secret.
_FORWARDED_ENV = (
    "GGM_PROJECT_ROOT",
    "GGM_DATA_ROOT",
    "GGM_LAKE_ROOT",
    "GGM_LANDING_ROOT",
    "GGM_DROPZONE_ROOT",
    "GGM_MAPPINGS_DIR",
    "GGM_SUPPRESSION_THRESHOLD",
    "GGM_SPARK_DRIVER_MEMORY",
    "GGM_SPARK_SHUFFLE_PARTITIONS",
    "GGM_VERWERKINGSACTIVITEITEN",
)


def _setting(env_name: str, variable_name: str, default: str) -> str:
    value = os.environ.get(env_name)
    if value:
        return value
    try:
        from airflow.sdk import Variable

        return Variable.get(variable_name, default=default)
    except Exception:  # noqa: BLE001 - outside a running Airflow (tests, CLI) the default applies
        return default


def spark_target() -> str:
    """The configured target; raises on an unknown value so a typo fails loudly."""
    target = _setting("GGM_SPARK_TARGET", "ggm_spark_target", "connect")
    if target not in TARGETS:
        raise ValueError(f"GGM_SPARK_TARGET/ggm_spark_target must be one of {TARGETS}, got {target!r}")
    return target


def delta_spark_conf() -> dict[str, str]:
    """Spark settings that enable Delta Lake (the JARs are passed separately)."""
    from ggm_lakehouse.spark import delta_conf

    return delta_conf()


def stage_arguments(stage: str, dates_template: str = DEFAULT_DATES_TEMPLATE, source: str | None = None,
                    mart: str | None = None, domein: str | None = None) -> list[str]:
    """Command-line arguments of ``jobs/entrypoint.py`` for one stage run."""
    args = [stage, "--logical-date", dates_template, "--run-id", "{{ run_id }}"]
    if source:
        args += ["--source", source]
    if mart:
        args += ["--mart", mart]
    if domein:
        args += ["--domein", domein]
    return args


def spark_stage_task(stage: str, task_id: str | None = None, *, source: str | None = None, mart: str | None = None,
                     domein: str | None = None, dates_template: str = DEFAULT_DATES_TEMPLATE, **operator_kwargs):
    """An Airflow operator that runs ``jobs/entrypoint.py <stage>`` on the configured target.

    ``source`` limits bronze/silver to one connector's data, ``mart`` gold to one mart and
    ``domein`` gold to the marts of one domein;
    ``dates_template`` renders to the logical date(s) to process (comma separated).
    """
    target = spark_target()
    task_id = task_id or stage
    application_args = stage_arguments(stage, dates_template, source, mart, domein)
    label = "-".join(filter(None, [stage, source, mart, domein]))
    if target == "connect":
        from airflow.providers.apache.spark.operators.spark_pyspark import PySparkOperator

        return PySparkOperator(
            task_id=task_id,
            conn_id="ggm_spark",
            python_callable=run_stage_task,
            op_kwargs={"stage": stage, "dates": dates_template, "run_id": "{{ run_id }}", "source": source,
                       "mart": mart, "domein": domein},
            **operator_kwargs,
        )
    if target == "databricks":
        return _databricks_stage_task(task_id, application_args, label, **operator_kwargs)
    return _spark_submit_stage_task(task_id, application_args, label, **operator_kwargs)


def _databricks_stage_task(task_id: str, application_args: list[str], label: str, **operator_kwargs):
    """The ``databricks`` target: a one-task Databricks run of the entry point on the configured cluster."""
    from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator

    cluster = json.loads(_setting("GGM_DATABRICKS_CLUSTER", "ggm_databricks_cluster", "{}") or "{}")
    entrypoint = _setting(
        "GGM_DATABRICKS_ENTRYPOINT", "ggm_databricks_entrypoint", "/Workspace/ggm-lakehouse/jobs/entrypoint.py"
    )
    task = {"spark_python_task": {"python_file": entrypoint, "parameters": application_args}}
    # The project wheel `databricks bundle deploy` uploaded (databricks.yml): the cluster installs it,
    # so the entry point imports the same modules as every other target.
    wheel = _setting("GGM_DATABRICKS_WHEEL", "ggm_databricks_wheel", "")
    if wheel:
        task["libraries"] = [{"whl": wheel}]
    if cluster.get("existing_cluster_id"):
        # An existing cluster must carry GGM_* settings and the pseudonym key in its own configuration.
        task["existing_cluster_id"] = cluster["existing_cluster_id"]
    elif cluster:
        # Job clusters get the lake settings and the pseudonym key as a Databricks secret reference,
        # resolved by Databricks at cluster start; the key never passes through Airflow.
        scope = _setting("GGM_DATABRICKS_SECRET_SCOPE", "ggm_databricks_secret_scope", "ggm")
        env = {name: os.environ[name] for name in _FORWARDED_ENV if name in os.environ and name != "GGM_PROJECT_ROOT"}
        # The operator renders its JSON with Jinja, so the braces of Databricks' secret syntax are escaped.
        env["GGM_PSEUDONYM_KEY"] = "{{ '{{' }}secrets/" + scope + "/ggm_pseudonym_key{{ '}}' }}"
        cluster = {**cluster, "spark_env_vars": {**env, **cluster.get("spark_env_vars", {})}}
        task["new_cluster"] = cluster
    return DatabricksSubmitRunOperator(
        task_id=task_id,
        databricks_conn_id="ggm_databricks",
        json={"run_name": f"ggm-{label}-{{{{ run_id }}}}", "tasks": [{"task_key": label, **task}]},
        **operator_kwargs,
    )


def _spark_submit_stage_task(task_id: str, application_args: list[str], label: str, **operator_kwargs):
    """The ``spark-submit`` target: the entry point submitted to connection ``ggm_spark`` with the Delta JARs."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    from ggm_lakehouse.openlineage import spark_openlineage_conf
    from ggm_lakehouse.spark import session_jars

    lineage_conf = spark_openlineage_conf()
    env = {name: os.environ[name] for name in _FORWARDED_ENV if name in os.environ}
    env.setdefault("GGM_PROJECT_ROOT", str(project_root()))
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project_root()), os.environ.get("PYTHONPATH")]))
    return SparkSubmitOperator(
        task_id=task_id,
        conn_id="ggm_spark",
        application=str(project_root() / "jobs" / "entrypoint.py"),
        application_args=application_args,
        jars=",".join(str(j) for j in session_jars()) or None,
        # Lineage, when configured: the OpenLineage listener with our transport; the provider injects
        # the Airflow task as the parent job so Spark runs hang under the task that started them.
        conf={**delta_spark_conf(), **lineage_conf},
        openlineage_inject_parent_job_info=bool(lineage_conf),
        openlineage_inject_transport_info=bool(lineage_conf),
        driver_memory=os.environ.get("GGM_SPARK_DRIVER_MEMORY", "2g"),
        name=f"ggm-{label}",
        env_vars=env,
        **operator_kwargs,
    )


def run_stage_task(stage: str, dates: str, run_id: str, source: str | None = None, mart: str | None = None,
                   domein: str | None = None, spark=None) -> list[dict]:
    """The ``connect`` target's task body: run the stage for each date in the session the operator opened.

    ``PySparkOperator`` opens a Spark Connect session from connection ``ggm_spark`` and stops it when
    this returns, so each stage has its own server-side session and gives it back.
    """
    import logging

    from ggm_lakehouse.spark import adopt_session
    from jobs.entrypoint import parse_logical_dates, run_stages

    logging.getLogger("pyspark.sql.connect.logging").setLevel(logging.CRITICAL)
    try:
        adopt_session(spark)
    except Exception as err:  # pyspark raises grpc and Spark errors alike for an unreachable server
        raise RuntimeError(
            f"stage {stage}: the Spark Connect server of connection 'ggm_spark' does not answer ({err}). "
            "Start it with `ggm spark serve` (or `make spark`), or check the connection's host, port and token."
        ) from err
    reports = run_stages(spark, stage, parse_logical_dates(dates), run_id, source=source, mart=mart, domein=domein)
    return [{"logical_date": r.get("logical_date"), "stage": r.get("stage"), "tables": len(r.get("tables", {}))}
            for r in reports]


def spark_retention_task(task_id: str = "retention", **operator_kwargs):
    """The retention DAG's task: enforce the bewaartermijnen (``ggm_lakehouse.retention``) as of the run's date.

    ``connect`` runs it in the task as a thin client of connection ``ggm_spark``, like every stage. On the
    other targets it runs in the task with :func:`ggm_lakehouse.spark.get_spark` (``GGM_SPARK_REMOTE``, else a
    local session): a purge is a few SQL statements per table, not a job worth a cluster submission.
    """
    op_kwargs = {"as_of": "{{ ds }}", "run_id": "{{ run_id }}"}
    if spark_target() == "connect":
        from airflow.providers.apache.spark.operators.spark_pyspark import PySparkOperator

        return PySparkOperator(task_id=task_id, conn_id="ggm_spark", python_callable=run_retention_task,
                               op_kwargs=op_kwargs, **operator_kwargs)
    from airflow.providers.standard.operators.python import PythonOperator

    return PythonOperator(task_id=task_id, python_callable=run_retention_task, op_kwargs=op_kwargs, **operator_kwargs)


def run_retention_task(as_of: str, run_id: str, spark=None) -> dict:
    """The retention task's body: apply the terms in the session the operator opened (or a session of our own)."""
    from datetime import date

    from ggm_lakehouse.retention import run_retention
    from ggm_lakehouse.spark import adopt_session, get_spark

    if spark is None:
        spark = get_spark("ggm-retention")
    else:
        try:
            adopt_session(spark)
        except Exception as err:  # pyspark raises grpc and Spark errors alike for an unreachable server
            raise RuntimeError(f"retention: the Spark Connect server of connection 'ggm_spark' does not answer "
                               f"({err}). Start it with `ggm spark serve` (or `make spark`).") from err
    report = run_retention(spark, date.fromisoformat(as_of), run_id)
    return {"as_of": report["as_of"], **report["totals"]}
