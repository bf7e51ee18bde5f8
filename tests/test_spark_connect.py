"""The day's Spark Connect server: its lifecycle, its authentication, and stages that run over it.

These tests start their own server in their own state folder (the session's server stays as it is),
and prove what the runtime promises: a token is required, the server binds to loopback only, the
pseudonym key is the server's own (a client without the key gets the same pseudonyms), and every
Spark stage runs as a thin Connect client with no JVM in the client process.
"""
from __future__ import annotations

import os
import socket
import sys
from datetime import date

import pytest

from ggm_lakehouse import spark_connect


def test_the_session_server_is_reported_running_with_its_memory(spark_server):
    info = spark_connect.status()
    assert info["running"] and info["pid"] and info["memory_mb"] > 0
    assert info["url"] == f"sc://localhost:{os.environ['GGM_SPARK_CONNECT_PORT']}"
    assert "token" not in info["url"]
    assert (spark_connect.state_dir() / "token").exists() or os.environ.get("GGM_SPARK_CONNECT_TOKEN")


def test_a_client_without_the_token_is_refused(spark_server):
    from pyspark.errors.exceptions.connect import SparkConnectGrpcException
    from pyspark.sql import SparkSession

    port = os.environ["GGM_SPARK_CONNECT_PORT"]
    intruder = SparkSession.builder.remote(f"sc://localhost:{port}/;token=not-the-token").create()
    try:
        with pytest.raises(SparkConnectGrpcException, match="UNAUTHENTICATED|Invalid authentication token"):
            intruder.sql("SELECT 1").collect()
    finally:
        intruder.client.close()


def test_the_server_listens_on_loopback_only(spark_server):
    port = int(os.environ["GGM_SPARK_CONNECT_PORT"])
    addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    outside = sorted(a for a in addresses if not a.startswith("127."))
    if not outside:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    with socket.socket() as sock:
        sock.settimeout(2)
        assert sock.connect_ex((outside[0], port)) != 0


def test_the_properties_file_with_the_token_is_private_and_not_on_the_command_line(spark_server):
    properties = spark_connect.state_dir() / "spark.properties"
    assert oct(properties.stat().st_mode & 0o777) == "0o600"
    command = spark_connect.server_command(int(os.environ["GGM_SPARK_CONNECT_PORT"]))
    assert spark_connect.token() not in " ".join(command)
    assert "org.apache.spark.sql.connect.service.SparkConnectServer" in command


def test_pseudonyms_use_the_servers_key_not_the_clients(spark, monkeypatch):
    """A client that has no key (an Airflow worker) still gets the server's pseudonyms: the key never travels."""
    from pyspark.sql import functions as F

    from ggm_lakehouse.pseudonym import pseudonymise
    from jobs.silver import pseudonymise_column

    server_key = os.environ["GGM_PSEUDONYM_KEY"].encode()
    monkeypatch.setenv("GGM_PSEUDONYM_KEY", "a-different-client-key-" + "x" * 20)
    frame = spark.createDataFrame([("999993653",), (None,)], "bsn string")
    rows = frame.select(pseudonymise_column(F.col("bsn")).alias("p")).collect()
    assert rows[0]["p"] == pseudonymise("999993653", server_key)
    assert rows[0]["p"] != pseudonymise("999993653", b"a-different-client-key-" + b"x" * 20)
    assert rows[1]["p"] is None


def test_every_stage_runs_over_connect_as_a_thin_client(spark, data_root):
    """Bronze, silver and gold of one small source through the connect target's task body."""
    from connectors import CONNECTORS, ExtractWindow
    from demo_gemeente.dropzone import write_dropzone
    from demo_gemeente.generator import DemoWorld
    from ggm_lakehouse.config import dropzone_root, landing_root
    from ggm_lakehouse.spark import is_connect
    from ggm_lakehouse.spark_target import run_stage_task

    assert is_connect(spark)
    day = date(2026, 3, 10)
    write_dropzone(DemoWorld(200, 3).at(day), dropzone_root())
    CONNECTORS["gebieden"]({}).extract(ExtractWindow.for_day(day, "connect-1"), landing_root())
    bronze = run_stage_task("bronze", day.isoformat(), "connect-1", source="gebieden", spark=spark)
    silver = run_stage_task("silver", day.isoformat(), "connect-1", source="gebieden", spark=spark)
    gold = run_stage_task("gold", day.isoformat(), "connect-1", domein="demografie", spark=spark)
    assert bronze[0]["tables"] >= 1 and silver[0]["tables"] >= 2 and gold[0]["stage"] == "gold"
    from ggm_lakehouse.lake import LakeTable

    assert LakeTable("silver", "BUURT").read(spark).count() > 0
    # No JVM in this process: pyspark's classic gateway was never started.
    assert "pyspark.java_gateway" not in sys.modules or not _classic_gateway_started()


def _classic_gateway_started() -> bool:
    from pyspark import SparkContext

    return SparkContext._gateway is not None


def test_a_second_server_starts_and_stops_in_its_own_state_folder(tmp_path, monkeypatch):
    """``ggm spark serve|status|stop`` on a fresh state folder: it starts, answers, and stops cleanly."""
    from ggm_lakehouse.cli import main as ggm

    monkeypatch.setenv("GGM_SPARK_CONNECT_DIR", str(tmp_path / "state"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("GGM_SPARK_CONNECT_PORT", str(sock.getsockname()[1]))
    monkeypatch.delenv("GGM_SPARK_CONNECT_TOKEN", raising=False)
    monkeypatch.setenv("GGM_SPARK_DRIVER_MEMORY", "1g")
    try:
        assert ggm(["spark", "serve"]) == 0
        info = spark_connect.status()
        assert info["running"]
        assert oct((tmp_path / "state" / "token").stat().st_mode & 0o777) == "0o600"
        assert spark_connect._answers(info["port"])
        # Serving again reuses the running server.
        assert spark_connect.start()["pid"] == info["pid"]
    finally:
        assert ggm(["spark", "stop"]) == 0
    assert not spark_connect.status()["running"]
    assert not spark_connect._pid_alive(info["pid"])


def test_a_stage_whose_server_is_gone_fails_fast_and_says_what_to_do():
    """A task whose Spark Connect server is not running fails with the way out, instead of retrying for minutes.

    In a child process: the stage makes the dead session its default, which must not touch this worker's.
    """
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]  # released: nothing listens there
    script = (
        "from pyspark.sql import SparkSession\n"
        "from ggm_lakehouse.spark_target import run_stage_task\n"
        f"session = SparkSession.builder.remote('sc://localhost:{dead_port}').create()\n"
        "run_stage_task('bronze', '2026-03-10', 'dead-1', source='gebieden', spark=session)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert result.returncode != 0
    assert "RuntimeError: stage bronze: the Spark Connect server of connection 'ggm_spark' does not answer" in result.stderr
    assert "ggm spark serve" in result.stderr


def test_a_client_session_on_a_server_that_is_gone_fails_within_its_short_retries():
    """``connect_session`` sends nothing before the short retry policy is set, so no call waits for pyspark's ten minutes.

    In a child process with a 60-second limit: the builder's own options used to go out under the default
    policy (a hang of minutes when the server was gone).
    """
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]  # released: nothing listens there
    script = (
        "from ggm_lakehouse.spark import connect_session\n"
        f"connect_session('sc://127.0.0.1:{dead_port}', 'a probe').sql('SELECT 1').collect()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "StatusCode.UNAVAILABLE" in result.stderr
    assert "Connection refused" in result.stderr


def test_the_app_name_travels_as_the_user_agent_without_touching_the_url_otherwise():
    from ggm_lakehouse.spark import _with_user_agent

    assert _with_user_agent("sc://127.0.0.1:15002", "ggm-silver") == "sc://127.0.0.1:15002/;user_agent=ggm-silver"
    assert (_with_user_agent("sc://127.0.0.1:15002/;token=t", "a b/c")
            == "sc://127.0.0.1:15002/;token=t;user_agent=a_b_c")
    assert _with_user_agent("sc://h:1/;user_agent=mine", "other") == "sc://h:1/;user_agent=mine"


def test_a_local_server_tunes_for_small_queries_and_a_cluster_keeps_sparks_defaults(monkeypatch):
    from ggm_lakehouse.spark import small_data_conf
    from ggm_lakehouse.spark_connect import server_conf

    monkeypatch.delenv("GGM_SPARK_SMALL_DATA", raising=False)
    assert small_data_conf("local[2]") == {"spark.sql.codegen.factoryMode": "NO_CODEGEN",
                                           "spark.sql.codegen.wholeStage": "false",
                                           "spark.sql.adaptive.enabled": "false",
                                           "spark.driver.extraJavaOptions": "-XX:+UseParallelGC"}
    assert small_data_conf("spark://master:7077") == {}
    monkeypatch.setenv("GGM_SPARK_SMALL_DATA", "off")
    assert small_data_conf("local[2]") == {}
    monkeypatch.setenv("GGM_SPARK_SMALL_DATA", "on")
    assert small_data_conf("spark://master:7077")["spark.sql.adaptive.enabled"] == "false"
    monkeypatch.delenv("GGM_SPARK_SMALL_DATA")
    monkeypatch.setenv("GGM_SPARK_MASTER", "local[2]")
    conf = server_conf(15002)
    assert conf["spark.sql.codegen.factoryMode"] == "NO_CODEGEN" and conf["spark.sql.adaptive.enabled"] == "false"
    assert conf["spark.driver.extraJavaOptions"].startswith("-Dderby.system.home=")
    assert conf["spark.driver.extraJavaOptions"].endswith(" -XX:+UseParallelGC")
    monkeypatch.setenv("GGM_SPARK_MASTER", "spark://master:7077")
    assert "spark.sql.adaptive.enabled" not in server_conf(15002)
