"""The ``cluster`` Spark target against a real Spark standalone cluster on 127.0.0.1.

A master and one worker are started from the Spark distribution inside the pyspark wheel
(``pyspark/bin/spark-class``; the wheel ships no ``sbin/start-*.sh``). The bronze stage is
then submitted exactly as the DAG does it: ``GGM_SPARK_TARGET=cluster`` and connection
``ggm_spark`` = ``spark://127.0.0.1:<port>`` make ``spark_stage_task("bronze")`` build the
``SparkSubmitOperator``, whose ``execute`` runs ``spark-submit --master spark://…
jobs/entrypoint.py bronze --logical-date … --run-id …`` with the cached Delta JARs.

Asserted: the operator succeeds, the bronze Delta table holds the landed records (read
back with ``deltalake``, not Spark), and the master lists the application as finished,
so the stage really ran on the cluster and not in a local master.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
import requests

import pyspark

from connectors.base import ExtractWindow
from ggm_lakehouse.config import landing_root, table_path
from ggm_lakehouse.landing import BatchWriter
from ggm_lakehouse.spark import cached_delta_jars

PYSPARK_BIN = Path(pyspark.__file__).resolve().parent / "bin"
LOGICAL_DATE = date(2026, 11, 27)
RUN_ID = "manual__2026-11-27T06:00:00+00:00"
APP_NAME = "ggm-bronze"
# A liveness guard for JVM start-up on a busy 2-core CI machine, not a performance assertion.
STARTUP_DEADLINE_SECONDS = 90

PERSONEN = [
    {"burgerservicenummer": "999993653", "naam": {"voornamen": "Suzanne", "geslachtsnaam": "Moulin"}},
    {"burgerservicenummer": "999990019", "naam": {"voornamen": "Pieter", "geslachtsnaam": "Jansen"}},
    {"burgerservicenummer": "999991772", "naam": {"voornamen": "Fatima", "geslachtsnaam": "El Amrani"}},
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StandaloneCluster:
    """A Spark standalone master + one worker as child processes, each in its own process group."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.port = _free_port()
        self.webui_port = _free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"
        self.json_url = f"http://127.0.0.1:{self.webui_port}/json/"
        self.processes: list[tuple[subprocess.Popen, Path]] = []

    def _spawn(self, name: str, *args: str) -> None:
        log = self.work_dir / f"{name}.log"
        env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1"}
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [str(PYSPARK_BIN / "spark-class"), *args], stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=self.work_dir, start_new_session=True,  # own group: the finalizer can end it whole
            )
        self.processes.append((process, log))

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for _, log in self.processes)

    def state(self) -> dict:
        """The master's JSON status page (workers, active and completed applications)."""
        return requests.get(self.json_url, timeout=5).json()

    def wait_for(self, condition, what: str) -> dict:
        """Poll the master's status until ``condition(state)`` holds; fail with the cluster logs otherwise."""
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        while True:
            for process, _ in self.processes:
                if process.poll() is not None:
                    pytest.fail(f"a cluster process exited with {process.returncode} "
                                f"while waiting for {what}\n{self.logs()}")
            try:
                state = self.state()
                if condition(state):
                    return state
            except requests.RequestException:
                pass  # the master's web UI is not up yet
            if time.monotonic() > deadline:
                pytest.fail(f"Spark standalone cluster: {what} did not happen\n{self.logs()}")
            time.sleep(0.5)

    def start(self) -> "StandaloneCluster":
        self._spawn("master", "org.apache.spark.deploy.master.Master",
                    "--host", "127.0.0.1", "--port", str(self.port), "--webui-port", str(self.webui_port))
        self.wait_for(lambda s: s.get("status") == "ALIVE", "master ALIVE")
        worker_dir = self.work_dir / "worker"
        worker_dir.mkdir()
        self._spawn("worker", "org.apache.spark.deploy.worker.Worker", self.master_url,
                    "--host", "127.0.0.1", "--cores", "1", "--memory", "1g",
                    "--webui-port", str(_free_port()), "--work-dir", str(worker_dir))
        self.wait_for(lambda s: any(w.get("state") == "ALIVE" for w in s.get("workers", [])), "worker registered")
        return self

    def stop(self) -> None:
        # Worker first (it ends its executor JVMs), then the master; SIGKILL whatever lingers.
        for process, _ in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process, _ in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running standalone cluster for this module; always torn down."""
    standalone = StandaloneCluster(tmp_path_factory.mktemp("spark-standalone"))
    try:
        yield standalone.start()
    finally:
        standalone.stop()


class _MinimalTaskInstance:
    """Just enough of a task instance for ``SparkSubmitOperator.execute`` (which may push tracking XComs)."""

    def __init__(self) -> None:
        self.xcoms: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value


def _land_personen(day: date = LOGICAL_DATE, run_id: str = RUN_ID) -> Path:
    window = ExtractWindow.for_day(day, run_id)
    with BatchWriter(landing_root(), "brp", "personen", window,
                     endpoint="POST /personen", record_path="personen") as batch:
        batch.add_part(json.dumps({"type": "RaadpleegMetBurgerservicenummer", "personen": PERSONEN}).encode(),
                       request={"method": "POST", "url": "http://127.0.0.1/personen", "params": {}, "body": {}},
                       status=200)
    return batch.path


def test_bronze_stage_runs_on_a_standalone_cluster(cluster, data_root, monkeypatch):
    if not cached_delta_jars():
        pytest.fail("Delta JARs are not cached; run `python -m ggm_lakehouse.spark --fetch-jars` (make) first")
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    from ggm_lakehouse.spark_target import spark_stage_task

    _land_personen()
    monkeypatch.setenv("GGM_SPARK_TARGET", "cluster")
    monkeypatch.setenv("AIRFLOW_CONN_GGM_SPARK", cluster.master_url)
    # The hook runs `spark-submit` from PATH; the one that matches this pyspark is next to the interpreter.
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    operator = spark_stage_task("bronze")
    assert isinstance(operator, SparkSubmitOperator)
    context = {"ds": LOGICAL_DATE.isoformat(), "run_id": RUN_ID, "ti": _MinimalTaskInstance()}
    operator.render_template_fields(context)
    assert operator.application_args == ["bronze", "--logical-date", LOGICAL_DATE.isoformat(), "--run-id", RUN_ID]

    operator.execute(context)  # raises if spark-submit exits non-zero

    from deltalake import DeltaTable

    bronze = DeltaTable(str(table_path("bronze", "brp_personen"))).to_pyarrow_table().to_pylist()
    assert sorted(json.loads(row["payload"])["burgerservicenummer"] for row in bronze) == sorted(
        p["burgerservicenummer"] for p in PERSONEN)
    assert {row["_run_id"] for row in bronze} == {RUN_ID}
    assert {row["_logical_date"] for row in bronze} == {LOGICAL_DATE}
    assert sorted(row["_record_index"] for row in bronze) == [0, 1, 2]

    report = json.loads((data_root / "runs" / LOGICAL_DATE.isoformat() / "bronze.json").read_text(encoding="utf-8"))
    assert {k: report["tables"]["brp_personen"][k] for k in ("batches", "rows", "skipped_batches")} == {
        "batches": 1, "rows": 3, "skipped_batches": 0}

    # The master saw the application through to the end: it ran on the cluster, not in local mode.
    state = cluster.wait_for(
        lambda s: any(app.get("name") == APP_NAME for app in s.get("completedapps", [])), "application completed")
    [app] = [a for a in state["completedapps"] if a.get("name") == APP_NAME]
    assert app["state"] == "FINISHED"
    assert app["cores"] >= 1
    # …and the worker launched an executor JVM for it (its logs live under the worker's work dir).
    assert list((cluster.work_dir / "worker").glob(f"{app['id']}/*/stderr"))


def test_a_stage_runs_over_spark_connect_on_the_cluster(cluster, data_root, tmp_path, monkeypatch):
    """The compose topology: the day's Spark Connect server runs its jobs on the standalone master.

    The server (``ggm spark serve`` with ``GGM_SPARK_MASTER=spark://…``) is the driver; the stage is a
    thin client that opens a session on it, as a DAG task of the ``connect`` target does; the work
    runs in an executor the cluster's worker launched.
    """
    from deltalake import DeltaTable

    from ggm_lakehouse import spark_connect
    from ggm_lakehouse.spark import connect_session
    from ggm_lakehouse.spark_target import run_stage_task

    day, run_id = date(2026, 11, 28), "manual__2026-11-28T06:00:00+00:00"
    _land_personen(day, run_id)
    monkeypatch.setenv("GGM_SPARK_CONNECT_DIR", str(tmp_path / "connect"))
    monkeypatch.setenv("GGM_SPARK_CONNECT_PORT", str(_free_port()))
    monkeypatch.delenv("GGM_SPARK_CONNECT_TOKEN", raising=False)
    monkeypatch.setenv("GGM_SPARK_MASTER", cluster.master_url)
    monkeypatch.setenv("GGM_SPARK_DRIVER_MEMORY", "1g")
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    from ggm_lakehouse.spark import ensure_active

    # The stage makes its session this process's active one; the worker's own session is given back after.
    worker_session = ConnectSession.getActiveSession()
    info = spark_connect.start()
    try:
        session = connect_session(spark_connect.client_url(info["port"]), "ggm-bronze-over-connect")
        try:
            [summary] = run_stage_task("bronze", day.isoformat(), run_id, source="brp", spark=session)
        finally:
            session.stop()
            if worker_session is not None:
                ensure_active(worker_session)
        state = cluster.state()
    finally:
        spark_connect.stop()
    assert summary == {"logical_date": day.isoformat(), "stage": "bronze", "tables": 1}
    rows = [r for r in DeltaTable(str(table_path("bronze", "brp_personen"))).to_pyarrow_table().to_pylist()
            if r["_run_id"] == run_id]
    assert sorted(json.loads(r["payload"])["burgerservicenummer"] for r in rows) == sorted(
        p["burgerservicenummer"] for p in PERSONEN)
    # The server was an application of the cluster, with an executor on its worker.
    [app] = [a for a in state.get("activeapps", []) if a.get("name") == "ggm-spark-connect"]
    assert app["cores"] >= 1
    assert list((cluster.work_dir / "worker").glob(f"{app['id']}/*/stderr"))
