"""The SparkSession every job uses, with Delta Lake from a project-local JAR cache.

The Delta JARs are resolved from Maven Central once (``python -m ggm_lakehouse.spark
--fetch-jars``, run by ``make``) into ``.cache/ivy`` inside the checkout. Later
sessions put the cached JARs on the class path directly, so no run resolves again
and a laptop without network still starts Spark.

On a Spark cluster or Databricks the session already exists and already has Delta;
:func:`get_spark` then only returns it.

OpenLineage: the ``openlineage-spark`` listener JAR is fetched into the same cache. When
lineage is configured (``GGM_OPENLINEAGE_TRANSPORT``, see :mod:`ggm_lakehouse.openlineage`) a
session started here attaches the listener, which reports every Delta read and write as an
OpenLineage run event. Under spark-submit the submitter passes the same settings
(:func:`ggm_lakehouse.openlineage.spark_openlineage_conf` and :func:`session_jars`).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import weakref
from pathlib import Path

from ggm_lakehouse.config import project_root

DELTA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
# The newest openlineage-spark on Maven Central; its Scala 2.13 build supports Spark 4.x.
OPENLINEAGE_SPARK_VERSION = "1.53.0"


def delta_maven_coordinates() -> list[str]:
    """Maven coordinates of Delta Lake for the installed pyspark (as ``configure_spark_with_delta_pip`` names them)."""
    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    return [f"io.delta:delta-spark_{spark_minor}_{SCALA_VERSION}:{DELTA_VERSION}"]


def openlineage_maven_coordinates() -> list[str]:
    """Maven coordinates of the OpenLineage Spark listener (a shaded JAR without dependencies)."""
    return [f"io.openlineage:openlineage-spark_{SCALA_VERSION}:{OPENLINEAGE_SPARK_VERSION}"]


def ivy_cache_dir() -> Path:
    """Project-local Ivy cache; ``GGM_IVY_DIR`` overrides ``<checkout>/.cache/ivy``."""
    return Path(os.environ.get("GGM_IVY_DIR", project_root() / ".cache" / "ivy"))


def cached_delta_jars() -> list[Path]:
    """The resolved Delta JARs in the project cache (empty until fetched)."""
    jar_dir = ivy_cache_dir() / "jars"
    if not jar_dir.is_dir():
        return []
    return sorted(p for p in jar_dir.glob("*.jar") if p.name.startswith(("io.delta_", "io.unitycatalog_")))


def cached_openlineage_jars() -> list[Path]:
    """The OpenLineage Spark listener JAR of the pinned version in the project cache (empty until fetched)."""
    jar = ivy_cache_dir() / "jars" / f"io.openlineage_openlineage-spark_{SCALA_VERSION}-{OPENLINEAGE_SPARK_VERSION}.jar"
    return [jar] if jar.is_file() else []


def session_jars() -> list[Path]:
    """JARs a session needs on its class path: Delta always, the OpenLineage listener when lineage is on."""
    from ggm_lakehouse.openlineage import openlineage_transport

    return cached_delta_jars() + (cached_openlineage_jars() if openlineage_transport() else [])


def delta_conf() -> dict[str, str]:
    """Settings that enable Delta Lake in a session (the JARs are passed separately)."""
    return {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
    }


def session_conf() -> dict[str, str]:
    """Every Spark setting of the project, in one place: local sessions, spark-submit and the Connect server."""
    return {
        **delta_conf(),
        # Small local data: a handful of shuffle partitions is far faster than the default 200.
        "spark.sql.shuffle.partitions": os.environ.get("GGM_SPARK_SHUFFLE_PARTITIONS", "2"),
        # Delta reads its log with 50 partitions by default; municipal tables have small logs.
        "spark.databricks.delta.snapshotPartitions": os.environ.get("GGM_DELTA_SNAPSHOT_PARTITIONS", "2"),
        # Bronze hands batches to Spark as pandas frames; Arrow ships them in columnar chunks.
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.driver.memory": os.environ.get("GGM_SPARK_DRIVER_MEMORY", "3g"),
        "spark.sql.warehouse.dir": str(project_root() / ".cache" / "spark-warehouse"),
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={project_root() / '.cache' / 'derby'}",
    }


def small_data_conf(master: str) -> dict[str, str]:
    """Settings for a municipality's day on one machine (``GGM_SPARK_SMALL_DATA``: ``auto``, ``on``, ``off``).

    The Connect server, a local session and a spark-submit driver on a local master all get them
    (:func:`apply_small_data_conf`). A municipal day is over a thousand small queries; on a local
    master Spark spends more CPU planning and compiling for each of them than running it. ``auto`` (the default) turns these
    on for a ``local`` master and leaves a cluster, where the data is big, as Spark sets it:

    - expressions are interpreted, not compiled to generated code (a quarter less server CPU per
      silver stage, ``docs/benchmarks.md``);
    - adaptive query execution is off: it re-plans every query after each shuffle, which pays off
      on skewed or mis-estimated big joins and costs a third of the server's CPU on a small day;
    - the JVM collects garbage with the throughput collector: G1's concurrent threads compete with
      the queries for two cores.
    """
    setting = os.environ.get("GGM_SPARK_SMALL_DATA", "auto").lower()
    if setting == "off" or (setting == "auto" and not master.startswith("local")):
        return {}
    return {
        "spark.sql.codegen.factoryMode": "NO_CODEGEN",
        "spark.sql.codegen.wholeStage": "false",
        "spark.sql.adaptive.enabled": "false",
        "spark.driver.extraJavaOptions": "-XX:+UseParallelGC",
    }


def apply_small_data_conf(spark) -> None:
    """Give a classic session (a local one, a spark-submit driver) the small-data settings of its master.

    Under spark-submit the master is only known once the session exists; the SQL settings are
    runtime settings, so they are set on the session then. The JVM's collector was chosen at its
    start and stays as it is.
    """
    master = spark.conf.get("spark.master", "")
    for key, value in small_data_conf(master).items():
        if key.startswith("spark.sql."):
            spark.conf.set(key, value)


def _base_builder(app_name: str, master: str | None):
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for key, value in session_conf().items():
        builder = builder.config(key, value)
    return builder


def remote_url() -> str | None:
    """The Spark Connect URL jobs use (``GGM_SPARK_REMOTE``, e.g. ``sc://localhost:15002/;token=…``), if any."""
    return os.environ.get("GGM_SPARK_REMOTE") or None


def connect_session(url: str, app_name: str = "ggm-lakehouse"):
    """A new Spark Connect session on ``url``: a thin client, no JVM in this process.

    Every caller gets its own server-side session (its own temp views, conf and cached
    frames); stopping the session gives it back.
    """
    import logging

    from pyspark.sql import SparkSession

    # The client logs every server-side error at ERROR before raising it as an exception, and warns
    # about releasing executions of a session already closed: the exceptions say all of it.
    logging.getLogger("pyspark.sql.connect.logging").setLevel(logging.CRITICAL)
    # No builder options: the builder would send them before our retry policy is in place, and a
    # server that is gone would hold this call for pyspark's ten minutes of retries. The app name
    # travels as the client's user agent instead, which the server logs with each session.
    session = SparkSession.builder.remote(_with_user_agent(url, app_name)).create()
    adopt_session(session)
    return session


def _with_user_agent(url: str, app_name: str) -> str:
    """``url`` with ``user_agent`` set to ``app_name`` (kept when the URL names one already)."""
    import re

    if ";user_agent=" in url:
        return url
    agent = re.sub(r"[^A-Za-z0-9_.-]", "_", app_name)[:200] or "ggm-lakehouse"
    # Parameters follow "/;" (sc://host:port/;token=...): append to them, or start them.
    base = url if "/;" in url else url.rstrip("/") + "/"
    return f"{base};user_agent={agent}"


def adopt_session(session) -> None:
    """Set up a Connect session, ours or one an operator opened: in use, failing fast, with our settings.

    The Airflow provider's ``PySparkOperator`` opens the session a stage runs in; this gives it the same
    short retry policy and session settings as the sessions :func:`connect_session` opens.
    """
    # pyspark resolves some settings (UDF debugging, for one) through the active or default session, and
    # keeps the first one ever created there: make this session the one in use.
    session_class = type(session)
    with session_class._lock:
        session_class._default_session = session
    session_class._active_session.session = session
    _fail_fast_and_exit_cleanly(session)
    # Session-level settings travel with the client; the server's static settings (Delta, memory) it has already.
    for key in ("spark.sql.shuffle.partitions", "spark.databricks.delta.snapshotPartitions"):
        session.conf.set(key, session_conf()[key])


def _fail_fast_and_exit_cleanly(session) -> None:
    """Short retries, and no clean-up calls at exit to a server that is gone.

    pyspark's default policy retries an unreachable server for about ten minutes, and at interpreter
    exit every open client sends clean-up calls under that policy: a process whose server was stopped
    first would hang. The day's server is on this machine, so a few seconds of retries are enough.
    """
    from pyspark.sql.connect.client.retries import DefaultPolicy

    client = session.client
    client.set_retry_policies([DefaultPolicy(max_retries=5, max_backoff=2000)])
    _clients_to_check_at_exit().add(client)


@functools.lru_cache(maxsize=1)
def _clients_to_check_at_exit() -> "weakref.WeakSet":
    """The Connect clients to close at exit when their server is gone, behind one exit hook for all.

    Registered after pyspark's own exit hook (on the first session), so it runs before it: atexit is
    last in, first out.
    """
    import atexit

    clients: weakref.WeakSet = weakref.WeakSet()
    atexit.register(_close_clients_whose_server_is_gone, clients)
    return clients


def _close_clients_whose_server_is_gone(clients) -> None:
    import socket

    for client in list(clients):
        if client.is_closed:
            continue
        host, _, port = client._builder.endpoint.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
        except OSError:
            client.close()


def ensure_active(spark) -> None:
    """Make ``spark`` this thread's active session (and the default when none is left).

    pyspark's Connect client looks some settings up through the active or default session, which it
    keeps per thread and forgets when any session that held the role is stopped; stages that fan out
    to threads, or run after another session ended, call this first.
    """
    if not is_connect(spark):
        return
    session_class = type(spark)
    with session_class._lock:
        if session_class._get_default_session() is None:
            session_class._default_session = spark
    session_class._active_session.session = spark


def is_connect(spark) -> bool:
    """True when ``spark`` is a Spark Connect client session."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def get_spark(app_name: str = "ggm-lakehouse", master: str | None = None):
    """Return the active SparkSession, a Connect session when ``GGM_SPARK_REMOTE`` is set, or a local one with Delta."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # Under spark-submit (PYSPARK_GATEWAY_PORT is set) or on Databricks the master is already decided.
    launched_by_spark = "PYSPARK_GATEWAY_PORT" in os.environ or os.environ.get("DATABRICKS_RUNTIME_VERSION")
    if remote_url() and not launched_by_spark:
        return connect_session(remote_url(), app_name)
    # A parent that used Spark Connect leaves pyspark's remote-mode marker in the environment it passes
    # on; a classic session (spark-submit's driver, a local session) must not inherit it.
    os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
    os.environ.pop("SPARK_REMOTE", None)
    if master is None and not launched_by_spark:
        master = os.environ.get("GGM_SPARK_MASTER", "local[2]")
    # Python workers must use this interpreter (with pandas/pyarrow), not whatever python3 is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = _base_builder(app_name, master)
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return builder.getOrCreate()
    from ggm_lakehouse.openlineage import spark_openlineage_conf

    # Under spark-submit the JVM already runs: a listener JAR added now would not reach the
    # driver's class path, so there the submitter passes the lineage settings instead.
    lineage_conf = {} if launched_by_spark else spark_openlineage_conf()
    for key, value in lineage_conf.items():
        builder = builder.config(key, value)
    packages = delta_maven_coordinates() + (openlineage_maven_coordinates() if lineage_conf else [])
    jars = cached_delta_jars() + (cached_openlineage_jars() if lineage_conf else [])
    if cached_delta_jars() and (not lineage_conf or cached_openlineage_jars()):
        builder = builder.config("spark.jars", ",".join(str(j) for j in jars))
    else:
        # First use without `make`: resolve into the project cache so the next run is offline.
        builder = builder.config("spark.jars.packages", ",".join(packages))
        builder = builder.config("spark.jars.ivy", str(ivy_cache_dir()))
    session = builder.getOrCreate()
    apply_small_data_conf(session)
    return session


def fetch_jars() -> list[Path]:
    """Resolve the Delta and OpenLineage JARs from Maven Central into the project cache (idempotent)."""
    if cached_delta_jars() and cached_openlineage_jars():
        return cached_delta_jars() + cached_openlineage_jars()
    from pyspark.sql import SparkSession

    # Ivy resolves only what is missing; the Delta artefacts already cached are not downloaded again.
    spark = (
        _base_builder("ggm-fetch-jars", "local[1]")
        .config("spark.jars.packages", ",".join(delta_maven_coordinates() + openlineage_maven_coordinates()))
        .config("spark.jars.ivy", str(ivy_cache_dir()))
        .getOrCreate()
    )
    spark.range(1).count()
    spark.stop()
    SparkSession._instantiatedSession = None
    if not cached_delta_jars():
        raise RuntimeError(f"Delta JARs were not resolved into {ivy_cache_dir()}")
    if not cached_openlineage_jars():
        raise RuntimeError(f"the OpenLineage Spark JAR was not resolved into {ivy_cache_dir()}")
    return cached_delta_jars() + cached_openlineage_jars()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetch-jars", action="store_true", help="resolve Delta and OpenLineage JARs into the project cache")
    args = parser.parse_args(argv)
    if args.fetch_jars:
        for jar in fetch_jars():
            print(jar)


if __name__ == "__main__":
    main()
