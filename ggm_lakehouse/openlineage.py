"""OpenLineage settings: one set of environment variables for Airflow and Spark alike.

Core configuration, like :mod:`ggm_lakehouse.config`: the Spark session (:mod:`ggm_lakehouse.spark`),
the Airflow environment and the spark-submit target read it, and ``ggm lineage``
(:mod:`ggm_lakehouse.lineage`) reads the events it makes them write.

    GGM_OPENLINEAGE_TRANSPORT=file   events as JSON lines in GGM_OPENLINEAGE_DIR (default <data root>/lineage)
    GGM_OPENLINEAGE_TRANSPORT=http   events to GGM_OPENLINEAGE_URL (+ GGM_OPENLINEAGE_ENDPOINT), e.g. Marquez
    GGM_OPENLINEAGE_NAMESPACE        job namespace (default "ggm")

:func:`airflow_openlineage_env` turns them into Airflow's ``AIRFLOW__OPENLINEAGE__*``
settings, :func:`spark_openlineage_conf` into the Spark listener's ``spark.openlineage.*``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from ggm_lakehouse.config import data_root

# The Airflow tasks and the Spark stages they start report to the same place under one namespace.

#: ``file`` (JSON lines under GGM_OPENLINEAGE_DIR), ``http`` (GGM_OPENLINEAGE_URL) or unset/``none``.
TRANSPORT_ENV = "GGM_OPENLINEAGE_TRANSPORT"
DIR_ENV = "GGM_OPENLINEAGE_DIR"
URL_ENV = "GGM_OPENLINEAGE_URL"
ENDPOINT_ENV = "GGM_OPENLINEAGE_ENDPOINT"
NAMESPACE_ENV = "GGM_OPENLINEAGE_NAMESPACE"
DEFAULT_NAMESPACE = "ggm"
#: The event files each producer appends to (one JSON event per line).
AIRFLOW_EVENTS_FILE = "airflow.jsonl"
SPARK_EVENTS_FILE = "spark.jsonl"


def openlineage_transport(environ: Mapping[str, str] | None = None) -> str | None:
    """The configured transport kind (``file`` or ``http``), or None when lineage is off.

    ``environ`` defaults to ``os.environ``; pass the environment of a process to be started.
    """
    environ = os.environ if environ is None else environ
    kind = environ.get(TRANSPORT_ENV, "").strip().lower()
    if kind in ("", "none", "off", "false", "0"):
        return None
    if kind not in ("file", "http"):
        raise ValueError(f"{TRANSPORT_ENV} must be 'file', 'http' or unset, got {kind!r}")
    if kind == "http" and not environ.get(URL_ENV):
        raise ValueError(f"{TRANSPORT_ENV}=http needs {URL_ENV} (e.g. http://marquez:5000)")
    return kind


def openlineage_namespace(environ: Mapping[str, str] | None = None) -> str:
    """The OpenLineage job namespace of this platform (``GGM_OPENLINEAGE_NAMESPACE``, default ``ggm``)."""
    return (os.environ if environ is None else environ).get(NAMESPACE_ENV) or DEFAULT_NAMESPACE


def openlineage_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Folder of the file transport's event files: ``GGM_OPENLINEAGE_DIR`` or ``<data root>/lineage``."""
    environ = os.environ if environ is None else environ
    if environ.get(DIR_ENV):
        return Path(environ[DIR_ENV])
    if environ.get("GGM_DATA_ROOT"):
        return Path(environ["GGM_DATA_ROOT"]) / "lineage"
    return data_root() / "lineage"


def airflow_openlineage_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``AIRFLOW__OPENLINEAGE__*`` settings for Airflow processes; empty when lineage is off.

    Airflow's OpenLineage provider reads its transport as JSON from
    ``AIRFLOW__OPENLINEAGE__TRANSPORT``; Spark stages started through ``SparkSubmitOperator``
    get the parent job (the Airflow task) injected by the provider.
    """
    environ = os.environ if environ is None else environ
    kind = openlineage_transport(environ)
    if kind is None:
        return {}
    if kind == "file":
        folder = openlineage_dir(environ)
        folder.mkdir(parents=True, exist_ok=True)
        transport = {"type": "file", "log_file_path": str(folder / AIRFLOW_EVENTS_FILE), "append": True}
    else:
        transport = {
            "type": "http",
            "url": environ[URL_ENV],
            "endpoint": environ.get(ENDPOINT_ENV, "api/v1/lineage"),
        }
    return {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": openlineage_namespace(environ),
        # The SparkSubmitOperator passes the Airflow task as parent run to the Spark listener.
        "AIRFLOW__OPENLINEAGE__SPARK_INJECT_PARENT_JOB_INFO": "True",
        # Events from a thread, not a fork per event: a task holds a Spark Connect client, whose gRPC
        # threads a fork copies mid-call, and the forked emitter then hangs until its timeout.
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
    }


def spark_openlineage_conf() -> dict[str, str]:
    """``spark.*`` settings that attach the OpenLineage listener; empty when lineage is off.

    The listener JAR must be on the driver class path (:func:`ggm_lakehouse.spark.cached_openlineage_jars`).
    """
    kind = openlineage_transport()
    if kind is None:
        return {}
    conf = {
        "spark.extraListeners": "io.openlineage.spark.agent.OpenLineageSparkListener",
        "spark.openlineage.namespace": openlineage_namespace(),
    }
    if kind == "file":
        folder = openlineage_dir()
        folder.mkdir(parents=True, exist_ok=True)
        conf.update(
            {
                "spark.openlineage.transport.type": "file",
                "spark.openlineage.transport.location": str(folder / SPARK_EVENTS_FILE),
            }
        )
    else:
        conf.update(
            {
                "spark.openlineage.transport.type": "http",
                "spark.openlineage.transport.url": os.environ[URL_ENV],
                "spark.openlineage.transport.endpoint": os.environ.get(ENDPOINT_ENV, "api/v1/lineage"),
            }
        )
    return conf
