"""The embedded Airflow: a home inside the checkout with a SQLite metadata database."""
from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from ggm_lakehouse.config import data_root, project_root


def airflow_home() -> Path:
    """``AIRFLOW_HOME`` for the embedded default (``<checkout>/airflow_home``) unless already set."""
    return Path(os.environ.get("AIRFLOW_HOME", project_root() / "airflow_home"))


# SQLite, the embedded default's metadata database, admits one writer at a time. Python's default
# 5-second wait for the lock is too short when the scheduler, the API server and a CLI command such
# as `airflow backfill create` write at once; Airflow imports this through sql_alchemy_connect_args.
SQLITE_CONNECT_ARGS: dict[str, object] = {"timeout": 60}


def airflow_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Airflow processes of the embedded default."""
    env = dict(os.environ)
    home = airflow_home()
    venv_bin = str(Path(sys.executable).parent)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(project_root() / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": env.get(
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home / 'airflow.db'}"
            ),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": env.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
            "GGM_PROJECT_ROOT": str(project_root()),
            "PATH": os.pathsep.join([venv_bin, env.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(project_root()), env.get("PYTHONPATH")])),
            "AIRFLOW_CONN_GGM_SPARK": env.get("AIRFLOW_CONN_GGM_SPARK") or default_spark_connection(env),
        }
    )
    # DAG files import the orchestration module (mappings, shares); on a busy 2-core machine that
    # can take longer than Airflow's 30-second default, which would mark the DAGs as broken.
    env.setdefault("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "120")
    # Lineage is on for the embedded default: Airflow's OpenLineage provider and the Spark listener
    # write events to <data root>/lineage, which `ggm lineage TABLE` reads (GGM_OPENLINEAGE_TRANSPORT
    # =http with GGM_OPENLINEAGE_URL sends them to Marquez or another backend instead).
    from ggm_lakehouse.openlineage import airflow_openlineage_env

    env.setdefault("GGM_OPENLINEAGE_TRANSPORT", "file")
    env.update(airflow_openlineage_env({**env, **(extra or {})}))
    env.setdefault("AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT", "180")
    env.update(extra or {})
    if env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite"):
        env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", "ggm_lakehouse.airflow_env.SQLITE_CONNECT_ARGS")
    return env


def default_spark_connection(env: dict[str, str]) -> str:
    """Connection ``ggm_spark`` of the embedded default: the local Spark Connect server, or local mode for spark-submit."""
    if env.get("GGM_SPARK_TARGET", "connect") == "connect":
        from ggm_lakehouse.spark_connect import airflow_connection

        return airflow_connection()
    return '{"conn_type": "spark", "host": "local[2]"}'


def demo_pseudonym_key() -> str:
    """The demo's pseudonymisation key: ``GGM_PSEUDONYM_KEY`` if set, else a random key kept in the data folder.

    Production sets the key as a secret (environment or Airflow connection
    ``ggm_pseudonym_key``); the demo generates one per checkout so pseudonyms are
    stable across runs without any key in code.
    """
    if os.environ.get("GGM_PSEUDONYM_KEY"):
        return os.environ["GGM_PSEUDONYM_KEY"]
    path = data_root() / ".secrets" / "ggm_pseudonym_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        path.write_text(secrets.token_hex(32), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


def standalone() -> None:
    """Start ``airflow standalone`` on the embedded home and print where to log in."""
    import json

    home = airflow_home()
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "simple_auth_manager_passwords.json.generated"
    env = airflow_environment(
        {
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "GGM_PSEUDONYM_KEY": demo_pseudonym_key(),
        }
    )
    env.pop("AIRFLOW__CORE__EXECUTOR", None)
    # The DAGs' tasks run in pools that must exist before the scheduler will queue them.
    import subprocess

    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-c", "from ggm_lakehouse.orchestration import ensure_pools; ensure_pools()"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    if not passwords.exists():
        passwords.write_text(json.dumps({"admin": secrets.token_urlsafe(12)}), encoding="utf-8")
        passwords.chmod(0o600)
    login = json.loads(passwords.read_text(encoding="utf-8"))
    print("Airflow UI: http://localhost:8080")
    print(f"Login: admin / {login['admin']}  (stored in {passwords})")
    sys.stdout.flush()
    from ggm_lakehouse.spark_connect import running_server

    # The DAGs' Spark stages are clients of the day's Spark Connect server: start it for the UI's
    # lifetime unless it already runs (then it is left running afterwards, as it was found).
    with running_server():
        try:
            subprocess.run([sys.executable, "-m", "airflow", "standalone"], env=env, check=False)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    if sys.argv[1:] == ["standalone"]:
        standalone()
    else:
        sys.exit("usage: python -m ggm_lakehouse.airflow_env standalone")
