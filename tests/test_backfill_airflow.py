"""A backfill through the real Airflow scheduler gives the same silver history as the days one by one.

The scheduler (``airflow standalone``: scheduler, dag-processor, triggerer and the API server
that task runners report to, on SQLite) runs ``airflow backfill create`` over two days of
``ggm_ingest_gebieden`` *newest first*, so the silver DAG, which the bronze Asset events
trigger, sees the days out of order. The drop zone changes between the days (a buurt and a
wijk are renamed and a buurt is added), so the history has something to get wrong. Unpaused,
the DAG also gets its latest scheduled run (today), which carries the newest delivery.
The reference history is built from the same bronze batches by conforming the days in order.

With ``max_active_runs=1`` on the silver DAG, Airflow can leave a bronze event that arrives
while a silver run is queued without a run of its own (seen here: the second backfill day's
event). The queued run then conforms that day through the catch-up of days whose bronze is
newer than their silver, which is what this test also proves.
"""
from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from demo_gemeente.dropzone import write_dropzone
from demo_gemeente.generator import DemoWorld

# Starting Airflow, three ingest runs and the silver runs they trigger.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(2700),
]

DAYS = [date(2026, 3, 2), date(2026, 3, 3)]
INGEST = "ggm_ingest_gebieden"
SILVER = "ggm_silver_gebieden"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rewrite_indeling(path: Path, edit) -> None:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    header, body = rows[0], rows[1:]
    body = edit(header, body)
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, delimiter=";", lineterminator="\n").writerows([header, *body])


def _write_deliveries(dropzone: Path) -> None:
    """Two daily deliveries of the wijk- en buurtindeling, the second a real change of the first."""
    world = DemoWorld(200, seed=5)
    for day in DAYS:
        write_dropzone(world.at(day), dropzone)
    gebieden = dropzone / "gebieden"

    def rename_first_buurt(header, body):
        body[0][header.index("buurtnaam")] = "Buurt Hernoemd"
        return body

    def rename_wijk_and_add_buurt(header, body):
        body = rename_first_buurt(header, body)
        wijk_name = header.index("wijknaam")
        first_wijk = body[0][header.index("wijkcode")]
        for row in body:
            if row[header.index("wijkcode")] == first_wijk:
                row[wijk_name] = "Wijk Nieuw"
        extra = list(body[-1])
        extra[header.index("buurtcode")] = extra[header.index("buurtcode")][:-2] + "99"
        extra[header.index("buurtnaam")] = "Nieuwbouwbuurt"
        return [*body, extra]

    _rewrite_indeling(gebieden / f"wijkbuurtindeling_{DAYS[1]:%Y%m%d}.csv", rename_wijk_and_add_buurt)


def _airflow(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # The CLI shares the SQLite metadata DB with the running scheduler and DAG processor. SQLite
    # refuses a write at once ("database is locked", no busy wait) when another connection committed
    # since this one started reading; the command did nothing then, so it is simply run again.
    for attempt in range(6):
        result = subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True,
                                timeout=300)
        if result.returncode == 0 or "database is locked" not in result.stderr + result.stdout:
            break
        time.sleep(2 + 3 * attempt)
    if check and result.returncode != 0:
        pytest.fail(f"airflow {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _api(env: dict, path: str, **params) -> dict | None:
    """GET ``/api/v2/<path>`` of the standalone API server; None while it is not answering yet.

    Polling through the REST API instead of ``airflow dags list-runs`` keeps a core free: every
    CLI call is a new interpreter that imports Airflow (seconds of CPU, every three seconds).
    """
    import requests

    base = env["AIRFLOW__API__BASE_URL"]
    try:
        token = requests.get(f"{base}/auth/token", timeout=10).json()["access_token"]  # all admins: no login
        response = requests.get(f"{base}/api/v2/{path}", params=params,
                                headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except (requests.RequestException, ValueError, KeyError):
        return None
    return response.json() if response.status_code == 200 else None


def _runs(env: dict, dag_id: str) -> list[dict]:
    """The DAG's runs as ``run_id``, ``state`` and ``logical_date`` (the keys ``airflow dags list-runs`` prints)."""
    found = _api(env, f"dags/{dag_id}/dagRuns", limit=100) or {}
    return [{"run_id": r["dag_run_id"], "state": r["state"], "logical_date": r.get("logical_date") or ""}
            for r in found.get("dag_runs", [])]


def _wait(predicate, what: str, timeout: float, proc: subprocess.Popen, log: Path, state=lambda: ""):
    """Poll ``predicate`` until it is truthy; on failure report ``state()`` (runs, reports) and the log's end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"airflow standalone exited ({proc.returncode}) while waiting for {what}:\n{state()}\n"
                        f"{log.read_text()[-4000:]}")
        time.sleep(3)
    pytest.fail(f"timed out waiting for {what}:\n{state()}\nlast log lines:\n{log.read_text()[-4000:]}")


def _state(env: dict, data: Path) -> str:
    """The DAG runs and the run reports so far, for a failure message."""
    lines = [f"{dag}: {[(r['run_id'], r['state']) for r in _runs(env, dag)]}" for dag in (INGEST, SILVER)]
    runs = data / "runs"
    if runs.is_dir():
        lines += [f"{day.name}: {sorted(p.name for p in day.iterdir())}" for day in sorted(runs.iterdir())]
    return "\n".join(lines)


def _history(spark, lake: Path, table: str) -> list[tuple]:
    frame = spark.read.format("delta").load(str(lake / "silver" / table.lower())).drop("DWH_DATUMTIJDGELADEN")
    return sorted(tuple(row) for row in frame.collect())


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory, spark_server):
    from ggm_lakehouse.airflow_env import airflow_environment

    root = tmp_path_factory.mktemp("backfill")
    home, data = root / "airflow_home", root / "data"
    home.mkdir()
    _write_deliveries(data / "dropzone")
    port = _free_port()
    env = airflow_environment({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__PORT": str(port),
        # Other Airflow instances (a developer's `make airflow`) may hold the default log-server ports.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        # The DAG files do not change during the test: parse them once, not every 30 s (each parse
        # imports the orchestration and builds all 36 DAGs, CPU the two cores need for the runs).
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "GGM_DATA_ROOT": str(data),
        "GGM_TASK_RETRIES": "0",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    })
    env.pop("AIRFLOW__CORE__EXECUTOR", None)
    # What `ggm airflow-init` does: the metadata DB and the pools the DAGs' tasks run in.
    _airflow(env, "db", "migrate")
    subprocess.run([sys.executable, "-c", "from ggm_lakehouse.orchestration import ensure_pools; ensure_pools()"],
                   env=env, check=True, capture_output=True, timeout=300)
    log = root / "standalone.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def serialized():
            listed = (_api(env, "dags", limit=100) or {}).get("dags", [])
            return {INGEST, SILVER} <= {d.get("dag_id") for d in listed}
        _wait(serialized, "the DAGs to be serialized", 300, proc, log)
        # Backfill runs of a paused DAG stay queued. Unpaused, the ingest DAG also gets its latest
        # scheduled run (today); that day carries the newest delivery and changes nothing further.
        _airflow(env, "dags", "unpause", SILVER)
        _airflow(env, "dags", "unpause", INGEST)
        _airflow(env, "backfill", "create", "--dag-id", INGEST, "--from-date", DAYS[0].isoformat(),
                 "--to-date", (DAYS[-1] + timedelta(days=1)).isoformat(), "--run-backwards",
                 "--max-active-runs", "1")

        def ingest_done():
            runs = _runs(env, INGEST)
            states = [r["state"] for r in runs]
            if "failed" in states:
                pytest.fail(f"an ingest run failed: {runs}\n{log.read_text()[-4000:]}")
            backfill = [r for r in runs if r["run_id"].startswith("backfill__")]
            return len(backfill) == len(DAYS) and all(s == "success" for s in states)
        _wait(ingest_done, "three successful backfill runs of the ingest DAG", 900, proc, log,
              lambda: _state(env, data))

        def silver_settled():
            runs = _runs(env, SILVER)
            if any(r["state"] == "failed" for r in runs):
                pytest.fail(f"a silver run failed: {runs}\n{log.read_text()[-4000:]}")
            ingested = {r["logical_date"][:10] for r in _runs(env, INGEST)}
            reports = all((data / "runs" / d / "silver_gebieden.json").exists() for d in ingested)
            return reports and runs and all(r["state"] == "success" for r in runs) and runs
        silver_runs = _wait(silver_settled, "the Asset-triggered silver runs of every day", 900, proc, log,
                            lambda: _state(env, data))
        yield {"data": data, "ingest_runs": _runs(env, INGEST), "silver_runs": silver_runs, "env": env}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_backfill_creates_one_run_per_day(backfilled):
    runs = [r for r in backfilled["ingest_runs"] if r["run_id"].startswith("backfill__")]
    assert sorted(r["logical_date"][:10] for r in runs) == [d.isoformat() for d in DAYS]
    assert all(r["state"] == "success" for r in runs)


def test_backfill_gives_the_history_of_the_days_in_order(backfilled, spark, monkeypatch):
    from jobs import silver

    data = backfilled["data"]
    reference_lake = data.parent / "reference_lake"
    shutil.copytree(data / "lake" / "bronze", reference_lake / "bronze")
    monkeypatch.setenv("GGM_DATA_ROOT", str(data))
    monkeypatch.setenv("GGM_LAKE_ROOT", str(reference_lake))
    for day in DAYS:
        silver.run(spark, day, f"reference-{day}", source="gebieden")

    for table in ("WIJK", "BUURT"):
        assert _history(spark, data / "lake", table) == _history(spark, reference_lake, table), table

    buurten = spark.read.format("delta").load(str(data / "lake" / "silver" / "buurt"))
    renamed = buurten.where("NAAM = 'Buurt Hernoemd'").collect()
    assert [r["DWH_DATUMTIJDGELDIGVANAF"].date() for r in renamed] == [DAYS[1]]
    added = buurten.where("NAAM = 'Nieuwbouwbuurt'").collect()
    assert [r["DWH_DATUMTIJDGELDIGVANAF"].date() for r in added] == [DAYS[1]]
    # The version the rename replaced was closed on the day of the rename, not deleted.
    first_name = buurten.where(f"CODE = '{renamed[0]['CODE']}' AND DWH_DATUMTIJDGELDIGTOTMET IS NOT NULL").collect()
    assert [r["DWH_DATUMTIJDGELDIGTOTMET"].date() for r in first_name] == [DAYS[1]]
    wijken = spark.read.format("delta").load(str(data / "lake" / "silver" / "wijk"))
    assert [r["DWH_DATUMTIJDGELDIGVANAF"].date() for r in wijken.where("WIJKNAAM = 'Wijk Nieuw'").collect()] == [DAYS[1]]
