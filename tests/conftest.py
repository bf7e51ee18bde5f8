"""Shared fixtures: a session-wide SparkSession with Delta, and an isolated data root per test module."""
from __future__ import annotations

import logging
import os
import secrets
import sys
import tempfile
from pathlib import Path

import pytest

# Airflow reads its home at import time: keep tests away from ~/airflow and the checkout's own home.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="ggm-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# py4j logs "Closing down clientserver connection" from __del__ after pytest closed its streams.
logging.getLogger("py4j").setLevel(logging.WARNING)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def pytest_collection_modifyitems(config, items):
    """Run the long Airflow end-to-end files first: with two workers (``make test``) they then
    overlap with everything else instead of starting last."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("e2e") else 1)


@pytest.fixture(scope="session")
def spark():
    """One local SparkSession with Delta Lake for the whole run (JVM start-up is the expensive part)."""
    from ggm_lakehouse.spark import get_spark

    session = get_spark("ggm-tests")
    yield session
    session.stop()


@pytest.fixture(scope="module", autouse=True)
def release_spark_cache():
    """Drop what a test module left cached in the shared session before the next module runs.

    One session serves a worker for the whole run, and every module writes its Delta tables under
    its own data root. Cached frames and Delta's cached log states of those tables would otherwise
    pile up in the driver's storage memory until a broadcast no longer fits next to them.
    """
    yield
    if "pyspark" not in sys.modules:
        return
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is None:
        return
    active.catalog.clearCache()
    active._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
    for rdd in active.sparkContext._jsc.getPersistentRDDs().values():
        rdd.unpersist(False)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A fresh data root (lake, landing, drop zones) with a random pseudonymisation key."""
    root = tmp_path_factory.mktemp("data")
    patcher = pytest.MonkeyPatch()
    patcher.setenv("GGM_DATA_ROOT", str(root))
    patcher.setenv("GGM_PSEUDONYM_KEY", secrets.token_hex(32))
    yield root
    patcher.undo()


@pytest.fixture(scope="session")
def ggm_tables() -> dict:
    """The GGM v2.5.1 table extract from ../shared (reference material, read by tests only)."""
    import json

    path = SHARED / "ggm" / "ggm_tables.json"
    if not path.exists():
        pytest.fail(f"GGM reference extract not found at {path}; tests need ../shared next to the checkout")
    return json.loads(path.read_text(encoding="utf-8"))["tables"]
