"""Shared fixtures: one Spark Connect server for the test session, a client session per worker, and an isolated data root per test module."""
from __future__ import annotations

import logging
import os
import secrets
import tempfile

import pytest

# Airflow reads its home at import time: keep tests away from ~/airflow and the checkout's own home.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="ggm-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# py4j logs "Closing down clientserver connection" from __del__ after pytest closed its streams.
logging.getLogger("py4j").setLevel(logging.WARNING)

from tests.specs import SHARED  # noqa: E402,F401 - re-exported for older imports

# One Spark Connect server serves the whole test session (both xdist workers and every Airflow day the
# tests run), as one server serves a production day. The controller picks its port, token, state folder
# and pseudonym key before the workers start, so they inherit the same settings; the first worker that
# needs Spark starts the server, and the controller stops it at the end.
_SESSIONS: list = []  # this worker's client session, once a test asked for it


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pytest_configure(config):
    """Choose the session's Spark Connect settings (controller only; xdist workers inherit them)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    os.environ.setdefault("GGM_SPARK_CONNECT_DIR", tempfile.mkdtemp(prefix="ggm-spark-connect-"))
    os.environ.setdefault("GGM_SPARK_CONNECT_PORT", str(_free_port()))
    os.environ.setdefault("GGM_SPARK_CONNECT_TOKEN", secrets.token_urlsafe(24))
    # The server pseudonymises with its own key: tests that recompute a pseudonym use this same one.
    os.environ.setdefault("GGM_PSEUDONYM_KEY", secrets.token_hex(32))
    os.environ.setdefault("GGM_SPARK_DRIVER_MEMORY", "6g")
    from ggm_lakehouse import spark_connect

    # Leave a server that was already running (GGM_SPARK_CONNECT_DIR given) as we found it.
    config.ggm_server_was_running = spark_connect.status()["running"]


def pytest_unconfigure(config):
    """Stop the session's Spark Connect server (controller only)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    from ggm_lakehouse import spark_connect

    if not getattr(config, "ggm_server_was_running", True):
        spark_connect.stop()


def pytest_collection_modifyitems(config, items):
    """Run the long Airflow end-to-end files first: with two workers (``make test``) they then
    overlap with everything else instead of starting last."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("e2e") else 1)


@pytest.fixture(scope="session")
def spark_server() -> str:
    """The URL (with token) of the session's Spark Connect server, started by the first worker that asks."""
    import fcntl

    from ggm_lakehouse import spark_connect

    lock_path = spark_connect.state_dir() / "start.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker waits here while the first one starts it
        info = spark_connect.start()
    url = spark_connect.client_url(info["port"])
    # Code under test that asks ggm_lakehouse.spark.get_spark() for a session gets one on this server.
    os.environ["GGM_SPARK_REMOTE"] = url
    return url


@pytest.fixture(scope="session")
def spark(spark_server):
    """A Spark Connect client session for this worker (no JVM in the test process)."""
    from ggm_lakehouse.spark import connect_session

    session = connect_session(spark_server, "ggm-tests")
    _SESSIONS.append(session)
    yield session
    _SESSIONS.clear()
    session.stop()


@pytest.fixture(scope="module", autouse=True)
def release_spark_cache():
    """Drop what a test module left cached on the server before the next module runs.

    Every module writes its Delta tables under its own data root; frames it cached would otherwise
    pile up in the server's storage memory until a broadcast no longer fits next to them.
    """
    yield
    if _SESSIONS:
        _SESSIONS[0].catalog.clearCache()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A fresh data root (lake, landing, drop zones); the pseudonym key is the session's (the Spark server's)."""
    root = tmp_path_factory.mktemp("data")
    patcher = pytest.MonkeyPatch()
    patcher.setenv("GGM_DATA_ROOT", str(root))
    yield root
    patcher.undo()


@pytest.fixture(scope="session")
def ggm_tables() -> dict:
    """The GGM v2.5.1 table extract from ../shared (reference material, read by tests only)."""
    import json

    from tests.specs import require

    path = require("ggm/ggm_tables.json")
    return json.loads(path.read_text(encoding="utf-8"))["tables"]
