"""Lineage: ``ggm lineage`` from source endpoint to partner, and real OpenLineage events from Airflow and Spark.

* The static graph: a BRP batch landed over real HTTP from the stand-in gives the source
  endpoint; mappings, the gold mart definitions and ``config/shares.yaml`` give the rest.
* OpenLineage: one Airflow DAG run (``dag.test()`` in its own process and Airflow home, the
  provider configured by :func:`ggm_lakehouse.openlineage.airflow_openlineage_env`) with a Python
  task and a ``SparkSubmitOperator`` task that writes Delta tables with the listener attached
  (:func:`spark_openlineage_conf`, file transport). Nothing is mocked: the events are the
  ones the provider and the ``openlineage-spark`` JAR wrote.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from contextlib import redirect_stdout
from datetime import date
from pathlib import Path

import pytest

from connectors import CONNECTORS, ExtractWindow
from demo_gemeente.dropzone import write_dropzone
from demo_gemeente.generator import DemoWorld
from ggm_lakehouse import lineage, openlineage
from ggm_lakehouse.cli import main as ggm
from ggm_lakehouse.config import dropzone_root, landing_root
from standins.server import StandinServers

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 3, 10)
SHARE = "gemeente_gold.demografie.inwoners_per_buurt"


def _run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = ggm(list(argv))
    return code, out.getvalue()


def _chain(tree: list[dict]) -> list[list[str]]:
    """Every root-to-leaf path of a lineage tree, as labels."""
    paths = []
    for node in tree:
        below = _chain(node["children"]) or [[]]
        paths += [[node["label"], *rest] for rest in below]
    return paths


@pytest.fixture(scope="module")
def brp_url(data_root):
    """Land one BRP batch from the stand-in so the source endpoint comes from a real manifest."""
    world = DemoWorld(60, seed=5)
    write_dropzone(world.at(DAY), dropzone_root())  # the volglijst says which BSNs the connector asks for
    with StandinServers(world, as_of=DAY) as servers:
        CONNECTORS["brp"]({"base_url": servers.brp.url, "api_key": servers.brp.api_key}).extract(
            ExtractWindow.for_day(DAY, "run-lineage"), landing_root()
        )
        return servers.brp.url


def test_lineage_of_natuurlijkpersoon_runs_from_the_brp_endpoint_to_the_demo_partner(brp_url):
    code, out = _run_cli("lineage", "NATUURLIJKPERSOON", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["table"]["label"] == "silver.NATUURLIJKPERSOON"
    assert result["table"]["mapping"] == "natuurlijkpersoon.yaml"

    assert _chain(result["upstream"]) == [["bronze.brp_personen", "landing brp/personen", "source brp/personen"]]
    source = result["upstream"][0]["children"][0]["children"][0]
    assert source["endpoint"] == "POST /personen"
    assert source["url"] == f"{brp_url.rstrip('/')}/personen"
    assert source["airflow_connection"] == "ggm_brp"
    assert source["connector"] == "brp"
    landing = result["upstream"][0]["children"][0]
    assert landing["last_batch"] == DAY.isoformat() and landing["last_run_id"] == "run-lineage"

    chains = _chain(result["downstream"])
    assert ["gold.inwoners_per_buurt", f"share {SHARE}", "recipient demo-partner"] in chains
    # Every mart that reads residents (the INWONERS view) is downstream of NATUURLIJKPERSOON too.
    from jobs.gold import MART_INPUTS

    readers = {f"gold.{m}" for m, inputs in MART_INPUTS.items() if "NATUURLIJKPERSOON" in inputs}
    assert {chain[0] for chain in chains} == readers


def test_lineage_of_the_gold_mart_covers_every_source_and_the_share(brp_url):
    code, out = _run_cli("lineage", "inwoners_per_buurt", "--json")
    assert code == 0
    result = json.loads(out)
    paths = _chain(result["upstream"])
    assert ["silver.NATUURLIJKPERSOON", "bronze.brp_personen", "landing brp/personen", "source brp/personen"] in paths
    assert ["silver.INGESCHREVENPERSOON", "bronze.brp_personen", "landing brp/personen", "source brp/personen"] in paths
    # NUMMERAANDUIDING reads BAG and looks up the buurt in the gebieden drop zone.
    assert ["silver.NUMMERAANDUIDING", "bronze.bag_nummeraanduidingen", "landing bag/nummeraanduidingen",
            "source bag/nummeraanduidingen"] in paths
    assert ["silver.NUMMERAANDUIDING", "bronze.gebieden_pc6hnr", "landing gebieden/pc6hnr", "source gebieden/pc6hnr"] in paths
    assert {p[0] for p in paths} == {f"silver.{t}" for t in lineage.mart_inputs()["inwoners_per_buurt"]}
    assert _chain(result["downstream"]) == [[f"share {SHARE}", "recipient demo-partner"]]


def test_the_readable_tree_shows_the_chain_in_order(brp_url):
    code, out = _run_cli("lineage", "NATUURLIJKPERSOON")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("silver.NATUURLIJKPERSOON")
    order = ["bronze.brp_personen", "landing brp/personen", "source brp/personen", "downstream",
             "gold.inwoners_per_buurt", f"share {SHARE}", "recipient demo-partner"]
    positions = [next(i for i, line in enumerate(lines) if name in line) for name in order]
    assert positions == sorted(positions)
    assert "POST /personen" in out and "connection ggm_brp" in out


@pytest.mark.parametrize(
    "name, label",
    [
        ("silver.natuurlijkpersoon", "silver.NATUURLIJKPERSOON"),
        ("natuurlijkpersoon", "silver.NATUURLIJKPERSOON"),
        ("gemeente.silver.natuurlijkpersoon", "silver.NATUURLIJKPERSOON"),
        ("bronze.brp_personen", "bronze.brp_personen"),
        ("brp_personen", "bronze.brp_personen"),
        ("gold.inwoners_per_buurt", "gold.inwoners_per_buurt"),
        ("landing.brp/personen", "landing brp/personen"),
        (SHARE, f"share {SHARE}"),
    ],
)
def test_any_layers_spelling_resolves(brp_url, name, label):
    assert lineage.resolve(lineage.static_graph(), name).label == label


def test_an_unknown_table_is_a_clear_error(brp_url, capsys):
    assert ggm(["lineage", "no_such_table"]) == 2
    assert "no_such_table" in capsys.readouterr().err


# --------------------------------------------------------------------------- OpenLineage, observed

_SPARK_APP = '''
"""Two Delta writes as a stage does them: silver from "bronze", then gold from silver."""
from ggm_lakehouse.lake import LakeTable
from ggm_lakehouse.spark import get_spark

spark = get_spark("ggm-probe-app")
# The driver spark-submit started on a local master runs with the same small-data settings as the server.
import json, os
settings = {key: spark.conf.get(key) for key in ("spark.master", "spark.sql.codegen.factoryMode", "spark.sql.adaptive.enabled")}
os.makedirs(os.environ["GGM_DATA_ROOT"], exist_ok=True)
with open(os.path.join(os.environ["GGM_DATA_ROOT"], "probe_settings.json"), "w") as out:
    json.dump(settings, out)
silver = LakeTable("silver", "NATUURLIJKPERSOON")
silver.save(spark, spark.range(12).selectExpr("id AS NATUURLIJKPERSOON_ID").write.format("delta").mode("overwrite"))
gold = LakeTable("gold", "inwoners_per_buurt")
frame = silver.read(spark).selectExpr("count(*) AS aantal_inwoners")
gold.save(spark, frame.write.format("delta").mode("overwrite"))
spark.stop()
'''

_DAG = '''
from datetime import datetime
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Asset, task

from ggm_lakehouse.config import table_path
from ggm_lakehouse.openlineage import spark_openlineage_conf
from ggm_lakehouse.spark import session_jars
from ggm_lakehouse.spark_target import delta_spark_conf

SHARED = Asset("file://" + str(table_path("gold", "inwoners_per_buurt")))

with DAG("ggm_lineage_probe", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    build = SparkSubmitOperator(
        task_id="gold",
        conn_id="ggm_spark",
        application=APP,
        jars=",".join(str(j) for j in session_jars()),
        conf={**delta_spark_conf(), **spark_openlineage_conf()},
        env_vars=ENV,
        openlineage_inject_parent_job_info=True,
        openlineage_inject_transport_info=True,
    )

    @task(task_id="publish_share", inlets=[SHARED])
    def publish_share() -> str:
        return "published"

    build >> publish_share()
'''

_RUNNER = '''
import json, sys
from datetime import datetime, timezone
from airflow.utils.db import initdb
initdb()
from airflow.dag_processing.dagbag import DagBag

dag = DagBag(dag_folder=sys.argv[1]).dags["ggm_lineage_probe"]
run = dag.test(logical_date=datetime(2026, 3, 10, tzinfo=timezone.utc))
with open(sys.argv[2], "w") as out:
    json.dump({"state": str(run.state), "run_id": run.run_id}, out)
'''


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """One real Airflow DAG run with the OpenLineage provider and a spark-submit task with the listener."""
    root = tmp_path_factory.mktemp("observed")
    data, dags = root / "data", root / "dags"
    dags.mkdir()
    app = root / "probe_app.py"
    app.write_text(textwrap.dedent(_SPARK_APP), encoding="utf-8")
    stage_env = {
        "GGM_DATA_ROOT": str(data),
        "GGM_PROJECT_ROOT": str(PROJECT_ROOT),
        "PYSPARK_PYTHON": sys.executable,
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    dag_source = textwrap.dedent(_DAG).replace("APP,", f"{str(app)!r},").replace("ENV,", f"{stage_env!r},")
    (dags / "ggm_lineage_probe.py").write_text(dag_source, encoding="utf-8")
    runner = root / "run_dag.py"
    runner.write_text(textwrap.dedent(_RUNNER), encoding="utf-8")
    result_file = root / "result.json"
    env = {
        **os.environ,
        "GGM_DATA_ROOT": str(data),
        "GGM_OPENLINEAGE_TRANSPORT": "file",
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_GGM_SPARK": '{"conn_type": "spark", "host": "local[1]"}',
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("GGM_OPENLINEAGE_DIR", None)
    # The Airflow settings derive from the GGM ones, as ggm_lakehouse.airflow_env derives them.
    env.update(openlineage.airflow_openlineage_env(env))
    completed = subprocess.run([sys.executable, str(runner), str(dags), str(result_file)], env=env,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(result_file.read_text(encoding="utf-8"))
    assert result["state"] == "success", completed.stdout[-4000:]
    events = lineage.read_openlineage_events(data / "lineage")
    return {"data": data, "events": events, "airflow_env": env, "run_id": result["run_id"]}


def test_a_spark_submit_driver_on_a_local_master_gets_the_small_data_settings(observed):
    settings = json.loads((observed["data"] / "probe_settings.json").read_text(encoding="utf-8"))
    assert settings["spark.master"].startswith("local")
    assert settings["spark.sql.codegen.factoryMode"] == "NO_CODEGEN"
    assert settings["spark.sql.adaptive.enabled"] == "false"


def test_airflow_provider_configuration_comes_from_the_ggm_settings(observed):
    env = observed["airflow_env"]
    transport = json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert transport == {"type": "file", "log_file_path": str(observed["data"] / "lineage" / "airflow.jsonl"),
                         "append": True}
    assert env["AIRFLOW__OPENLINEAGE__NAMESPACE"] == "ggm"
    # Emitted from a thread: a fork of a task holding a Spark Connect client can hang (see the next test's events).
    assert env["AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD"] == "True"


def test_airflow_emits_task_events_with_the_task_inlets(observed):
    airflow_events = [e for e in observed["events"] if e["producer"].startswith("https://github.com/apache/airflow")]
    by_job = {(e["job"]["name"], e["eventType"]) for e in airflow_events}
    assert {("ggm_lineage_probe.gold", "START"), ("ggm_lineage_probe.gold", "COMPLETE"),
            ("ggm_lineage_probe.publish_share", "COMPLETE")} <= by_job
    assert all(e["job"]["namespace"] == "ggm" for e in airflow_events)
    publish = next(e for e in airflow_events if e["job"]["name"] == "ggm_lineage_probe.publish_share"
                   and e["eventType"] == "COMPLETE")
    gold_path = str(observed["data"] / "lake" / "gold" / "inwoners_per_buurt")
    assert {(d["namespace"], d["name"]) for d in publish["inputs"]} == {("file", gold_path)}


def test_spark_delta_writes_emit_events_with_inputs_outputs_and_the_airflow_parent(observed):
    spark_events = [e for e in observed["events"] if "integration/spark" in e["producer"]]
    lake = observed["data"] / "lake"
    writes = {}
    for event in spark_events:
        if event["eventType"] == "COMPLETE" and event.get("outputs"):
            for output in event["outputs"]:
                writes[output["name"]] = event
    silver, gold = str(lake / "silver" / "natuurlijkpersoon"), str(lake / "gold" / "inwoners_per_buurt")
    assert {silver, gold} <= set(writes)
    assert [(d["namespace"], d["name"]) for d in writes[gold]["inputs"]] == [("file", silver)]
    assert writes[gold]["job"]["namespace"] == "ggm"
    # The write hangs under the Spark application, and the application under the Airflow task
    # run that submitted it (the provider's parent-job injection).
    application = next(e for e in spark_events if e["job"]["name"] == "ggm_probe_app" and e["eventType"] == "START")
    parent = writes[gold]["run"]["facets"]["parent"]
    assert parent["job"] == {"namespace": "ggm", "name": "ggm_probe_app"}
    assert parent["run"]["runId"] == application["run"]["runId"]
    airflow_gold = next(e for e in observed["events"] if e["job"]["name"] == "ggm_lineage_probe.gold"
                        and e["eventType"] == "START")
    task = application["run"]["facets"]["parent"]
    assert task["job"] == {"namespace": "ggm", "name": "ggm_lineage_probe.gold"}
    assert task["run"]["runId"] == airflow_gold["run"]["runId"]


def test_ggm_lineage_combines_the_declared_graph_with_the_observed_runs(observed, monkeypatch):
    monkeypatch.setenv("GGM_DATA_ROOT", str(observed["data"]))
    result = lineage.table_lineage("inwoners_per_buurt")
    observation = result["table"]["observed"]
    assert observation["job"].startswith("ggm/ggm_probe_app.")
    # Who loaded it: the Spark application, under the Airflow task, under the DAG run.
    assert [p["job"] for p in observation["parents"]] == [
        "ggm/ggm_probe_app", "ggm/ggm_lineage_probe.gold", "ggm/ggm_lineage_probe"]
    natuurlijkpersoon = next(n for n in result["upstream"] if n["name"] == "NATUURLIJKPERSOON")
    assert natuurlijkpersoon["known_from"] == ["gold mart definition", "openlineage"]
    # The share node carries the last publish task run (an Airflow task without output datasets).
    [share] = result["downstream"]
    assert share["observed"]["job"] == "ggm/ggm_lineage_probe.publish_share"
    code, out = _run_cli("lineage", "gold.inwoners_per_buurt")
    assert code == 0 and "last run " in out and "ggm/ggm_lineage_probe.gold" in out
