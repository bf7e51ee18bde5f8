"""Secrets are read from the environment or from an Airflow connection, never from code.

Lookup order for a secret named ``ggm_pseudonym_key``:

1. environment variable ``GGM_PSEUDONYM_KEY`` (upper-cased name);
2. the password of Airflow connection ``ggm_pseudonym_key`` (which itself may come
   from ``AIRFLOW_CONN_GGM_PSEUDONYM_KEY`` or Airflow's secrets backend).
"""
from __future__ import annotations

import os


def _password_from_conn_string(value: str) -> str | None:
    """Password of an Airflow connection given as JSON or URI (the AIRFLOW_CONN_* formats)."""
    import json
    from urllib.parse import unquote, urlsplit

    value = value.strip()
    if value.startswith("{"):
        return json.loads(value).get("password")
    return unquote(urlsplit(value).password or "") or None


class MissingSecretError(RuntimeError):
    """Raised when a required secret is configured nowhere."""


def get_secret(name: str) -> str:
    """Return the secret called ``name`` or raise :class:`MissingSecretError`."""
    value = os.environ.get(name.upper())
    if value:
        return value
    # Processes started by a task (spark-submit drivers) inherit AIRFLOW_CONN_* but have no
    # task-SDK supervisor to ask, so read the environment form of the connection directly.
    env_conn = os.environ.get(f"AIRFLOW_CONN_{name.upper()}")
    if env_conn:
        password = _password_from_conn_string(env_conn)
        if password:
            return password
    try:
        from airflow.sdk import Connection  # imported lazily: Spark jobs run without Airflow
    except ImportError:  # pragma: no cover - Airflow is a declared dependency
        Connection = None
    if Connection is not None:
        try:
            conn = Connection.get(name)
        except Exception as exc:  # noqa: BLE001 - Airflow raises several types for "not found"
            raise MissingSecretError(
                f"secret {name!r} not found: set environment variable {name.upper()} "
                f"or Airflow connection {name!r} ({exc.__class__.__name__})"
            ) from exc
        if conn.password:
            return conn.password
    raise MissingSecretError(
        f"secret {name!r} not found: set environment variable {name.upper()} or Airflow connection {name!r}"
    )


def get_connection(conn_id: str):
    """The Airflow connection ``conn_id`` (``conn_type``, ``host``, ``login``, ``password``, ``extra_dejson``), or None.

    ``AIRFLOW_CONN_<ID>`` in JSON or URI form is read directly so that this also works in
    processes without a task supervisor (callbacks, spark drivers, the CLI).
    """
    env_value = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if env_value:
        from airflow.models.connection import Connection as StoredConnection

        env_value = env_value.strip()
        if env_value.startswith("{"):
            return StoredConnection.from_json(env_value, conn_id=conn_id)
        return StoredConnection(conn_id=conn_id, uri=env_value)
    try:
        from airflow.sdk import Connection

        return Connection.get(conn_id)
    except Exception:  # noqa: BLE001 - "not configured" surfaces in several exception types
        return None
