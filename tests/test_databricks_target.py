"""The Databricks Spark target, end to end against a Databricks Jobs API 2.2 stand-in over real HTTP.

``GGM_SPARK_TARGET=databricks`` makes ``spark_stage_task`` build a
``DatabricksSubmitRunOperator``; these tests run that operator for real (the provider's
hook, its HTTP calls, its polling loop) against ``standins.databricks``:

* a full Airflow ``dag.test()`` run in a fresh Airflow home (own process, so the metadata
  DB and logging set-up do not leak into other test modules): templates rendered by Airflow,
  run submitted, polled to SUCCESS, run id and run page URL pushed to XCom;
* ``operator.execute`` with a minimal context for a FAILED run (the exception carries the
  state message) and for a hanging run that ``on_kill`` cancels.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import requests

from standins.databricks import API_PREFIX, DatabricksJobsStandin, RunOutcome

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CLUSTER = {"spark_version": "16.4.x-scala2.12", "node_type_id": "Standard_D4ds_v5", "num_workers": 2}
LOGICAL_DATE = "2026-11-27"
AIRFLOW_RUN_ID = "manual__2026-11-27T06:00:00+00:00"


@pytest.fixture
def workspace(monkeypatch):
    """A running stand-in with the Airflow connection and Spark target pointing at it."""
    with DatabricksJobsStandin(polls_before_terminal=2) as ws:
        monkeypatch.setenv("AIRFLOW_CONN_GGM_DATABRICKS", json.dumps(ws.airflow_connection()))
        monkeypatch.setenv("GGM_SPARK_TARGET", "databricks")
        monkeypatch.setenv("GGM_DATABRICKS_CLUSTER", json.dumps(CLUSTER))
        yield ws


class _RecordingTaskInstance:
    """Just enough of a task instance for ``execute``: the operator only pushes XComs."""

    def __init__(self) -> None:
        self.xcoms: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value


def _rendered_operator(stage: str):
    """The factory's operator with its templates rendered as Airflow would for one run."""
    from airflow.sdk import DAG
    import pendulum

    from ggm_lakehouse.spark_target import spark_stage_task

    with DAG(f"ggm_{stage}_databricks", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        operator = spark_stage_task(stage)
    # The factory leaves the provider default (30 s); poll quickly against the stand-in.
    operator.polling_period_seconds = 0.05
    context = {"ds": LOGICAL_DATE, "run_id": AIRFLOW_RUN_ID, "ti": _RecordingTaskInstance()}
    operator.render_template_fields(context)
    return operator, context


def test_standin_rejects_a_wrong_token(workspace):
    url = f"{workspace.url}{API_PREFIX}/runs/get"
    wrong = requests.get(url, params={"run_id": 1}, headers={"Authorization": "Bearer dapi-wrong"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error_code"] == "UNAUTHENTICATED"
    missing = requests.get(url, params={"run_id": 1}, timeout=10)
    assert missing.status_code == 401
    good_token = {"Authorization": f"Bearer {workspace.token}"}
    unknown = requests.get(url, params={"run_id": 1}, headers=good_token, timeout=10)
    assert unknown.status_code == 400 and unknown.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_failed_run_raises_with_the_state_message(workspace):
    from airflow.sdk.exceptions import AirflowException

    workspace.outcome = RunOutcome.FAILED
    workspace.failure_message = "AnalysisException: [TABLE_OR_VIEW_NOT_FOUND] bronze.brp_personen"
    operator, context = _rendered_operator("silver")

    with pytest.raises(AirflowException) as raised:
        operator.execute(context)

    assert "TABLE_OR_VIEW_NOT_FOUND" in str(raised.value) and "FAILED" in str(raised.value)
    [body] = workspace.submitted
    [task] = body["tasks"]
    assert task["spark_python_task"]["parameters"] == [
        "silver", "--logical-date", LOGICAL_DATE, "--run-id", AIRFLOW_RUN_ID]
    # The provider asks the failed task run (not the parent run) for its error output.
    assert ("GET", f"{API_PREFIX}/runs/get-output") in workspace.requests
    assert context["ti"].xcoms["run_id"] == operator.run_id


def test_on_kill_cancels_a_running_databricks_run(workspace):
    workspace.outcome = RunOutcome.HANG
    operator, context = _rendered_operator("gold")
    failure: list[BaseException] = []

    def execute() -> None:
        try:
            operator.execute(context)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread for the assertion
            failure.append(exc)

    runner = threading.Thread(target=execute, name="databricks-execute", daemon=True)
    runner.start()
    run_id = workspace.wait_for_submission()
    workspace.wait_until_polled(run_id, polls=3)  # submitted and seen RUNNING by the polling loop
    assert workspace.run_state(run_id)["life_cycle_state"] == "RUNNING"

    operator.on_kill()  # what Airflow calls when the task is stopped (UI "mark failed", timeout, SIGTERM)
    runner.join(timeout=30)

    assert not runner.is_alive()
    assert workspace.cancelled == [run_id]
    assert workspace.run_state(run_id)["result_state"] == "CANCELED"
    # After the cancel the polling loop sees the terminal CANCELED state and fails the task.
    assert failure and "CANCELED" in str(failure[0])


_DAG_FILE = '''
from datetime import datetime
from airflow.sdk import DAG
from ggm_lakehouse.spark_target import spark_stage_task

with DAG("ggm_databricks_stage", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    spark_stage_task("silver", polling_period_seconds=0)
'''

_RUNNER = '''
import json, sys
from datetime import datetime, timezone
from airflow.utils.db import initdb
initdb()
from airflow.dag_processing.dagbag import DagBag
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from sqlalchemy import select

dag = DagBag(dag_folder=sys.argv[1]).dags["ggm_databricks_stage"]
run = dag.test(logical_date=datetime(2026, 11, 27, tzinfo=timezone.utc))
with create_session() as session:
    xcoms = {x.key: XComModel.deserialize_value(x) for x in session.scalars(
        select(XComModel).where(XComModel.dag_id == run.dag_id, XComModel.run_id == run.run_id))}
    task_state = str(run.get_task_instance("silver", session=session).state)
result = {"dag_run_state": str(run.state), "task_state": task_state, "run_id": run.run_id, "xcoms": xcoms}
with open(sys.argv[2], "w") as out:
    json.dump(result, out, default=str)
'''


def test_dag_run_submits_the_entrypoint_and_succeeds(workspace, tmp_path):
    """A real Airflow DAG run (``dag.test``) of the factory's operator, in its own Airflow home."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "ggm_databricks_stage.py").write_text(textwrap.dedent(_DAG_FILE), encoding="utf-8")
    runner = tmp_path / "run_dag.py"
    runner.write_text(textwrap.dedent(_RUNNER), encoding="utf-8")
    result_file = tmp_path / "result.json"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }

    completed = subprocess.run([sys.executable, str(runner), str(dags), str(result_file)], env=env,
                               capture_output=True, text=True, timeout=300)

    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(result_file.read_text(encoding="utf-8"))
    assert result["dag_run_state"] == "success" and result["task_state"] == "success", completed.stdout[-4000:]

    [body] = workspace.submitted
    assert body["run_name"] == f"ggm-silver-{result['run_id']}"  # one Databricks run name per Airflow run
    [task] = body["tasks"]
    assert task["task_key"] == "silver"
    assert task["spark_python_task"]["python_file"].endswith("jobs/entrypoint.py")
    # Airflow rendered the templates: the logical date and this DAG run's id reach the job.
    assert task["spark_python_task"]["parameters"] == [
        "silver", "--logical-date", LOGICAL_DATE, "--run-id", result["run_id"]]
    # The provider sends every scalar as a string (normalise_json_content); Databricks accepts that.
    env = task["new_cluster"].pop("spark_env_vars")
    assert task["new_cluster"] == {key: str(value) for key, value in CLUSTER.items()}
    # The pseudonym key reaches the job cluster as a Databricks secret reference, never as a value.
    assert env["GGM_PSEUDONYM_KEY"] == "{{secrets/ggm/ggm_pseudonym_key}}"

    run_id = workspace.wait_for_submission()
    assert workspace.run_state(run_id)["result_state"] == "SUCCESS"
    assert workspace.requests[0] == ("POST", f"{API_PREFIX}/runs/submit")
    assert ("GET", f"{API_PREFIX}/runs/get") in workspace.requests
    assert ("POST", f"{API_PREFIX}/runs/cancel") not in workspace.requests
    xcoms = result["xcoms"]
    assert xcoms["run_id"] == run_id
    assert xcoms["run_page_url"].startswith(workspace.url)
