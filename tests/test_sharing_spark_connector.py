"""The Delta Sharing Spark connector reading a recipient's share in a local SparkSession.

The connector for Spark 4.x / Scala 2.13 is Delta's ``io.delta:delta-sharing-spark_<spark>_2.13``
(with ``delta-sharing-client``). It runs in a separate ``spark-submit``-free Python process
with its own SparkSession and ``spark.jars`` pointing at the project jar cache
(``ggm_lakehouse.spark.ivy_cache_dir()/jars``), so the session ``spark`` fixture of the suite
is not disturbed.

When the jars are not in the cache the test is skipped with that reason: the Maven Central
mirror reachable from the build machines does not serve the ``io.delta:delta-sharing-*``
artifacts (checked for delta-sharing-spark_4.2_2.13:4.4.0 and delta-sharing-spark_2.13:4.0.0),
so they cannot be fetched here; on a machine with full Maven Central access run
``ivy`` / ``mvn dependency:copy`` for them into the cache (see docs/sharing.md).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from deltalake import write_deltalake

from ggm_lakehouse.spark import cached_delta_jars, ivy_cache_dir
from sharing_server.app import create_app
from sharing_server.embedded import EmbeddedServer
from sharing_server.projections import materialise_recipient_tables
from sharing_server.recipients import issue_profile

URL_KEY = b"spark-connector-test-url-key-0123456789"
SHARES_YAML = """
shares:
  - name: gemeente_gold
    schemas:
      - name: demografie
        tables:
          - name: inwoners_per_buurt
            location: gold/inwoners_per_buurt
recipients:
  - name: spark-partner
    shares: [gemeente_gold]
"""


def _sharing_jars() -> list:
    jar_dir = ivy_cache_dir() / "jars"
    if not jar_dir.is_dir():
        return []
    return sorted(p for p in jar_dir.glob("io.delta_delta-sharing-*.jar"))


def test_spark_connector_reads_the_share(tmp_path):
    jars = _sharing_jars()
    if not any("delta-sharing-spark" in j.name for j in jars) or not any("delta-sharing-client" in j.name for j in jars):
        pytest.skip(
            "io.delta:delta-sharing-spark (Spark 4.x, Scala 2.13) and delta-sharing-client are not in the project "
            f"jar cache {ivy_cache_dir() / 'jars'}; the Maven mirror reachable here does not serve them"
        )
    lake = tmp_path / "lake"
    write_deltalake(
        str(lake / "gold" / "inwoners_per_buurt"),
        pd.DataFrame({"wijkcode": ["WK01", "WK02"], "buurtcode": ["BU1", "BU2"], "aantal_inwoners": [10, 20]}),
        partition_by=["wijkcode"],
    )
    config_path = tmp_path / "shares.yaml"
    config_path.write_text(SHARES_YAML, encoding="utf-8")
    env = {"GGM_LAKE_ROOT": str(lake), "GGM_SHARING_ROOT": str(tmp_path / "sharing"), "GGM_SHARES_CONFIG": str(config_path)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        materialise_recipient_tables(dt.date(2026, 6, 1))
        with EmbeddedServer(create_app(config_path, url_key=URL_KEY, audit_dir=tmp_path / "audit")) as server:
            profile = tmp_path / "spark-partner.share"
            profile.write_text(json.dumps(issue_profile("spark-partner", endpoint=server.endpoint)), encoding="utf-8")
            script = textwrap.dedent(
                f"""
                import json
                from pyspark.sql import SparkSession
                spark = (SparkSession.builder.master("local[1]").appName("sharing-connector-test")
                         .config("spark.jars", {",".join(str(j) for j in jars + cached_delta_jars())!r})
                         .config("spark.ui.enabled", "false").getOrCreate())
                df = spark.read.format("deltaSharing").load({str(profile) + "#gemeente_gold.demografie.inwoners_per_buurt"!r})
                rows = sorted((r.buurtcode, r.aantal_inwoners, r.wijkcode) for r in df.collect())
                print("ROWS=" + json.dumps(rows))
                spark.stop()
                """
            )
            result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=os.environ.copy())
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("ROWS="))
    assert json.loads(line[len("ROWS="):]) == [["BU1", 10, "WK01"], ["BU2", 20, "WK02"]]
