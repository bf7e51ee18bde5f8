"""One demo day end to end: the demo municipality's systems deliver, the stand-ins serve, Airflow runs.

``ggm run --date D`` (and ``make run``) use this on the embedded default:

1. the demo municipality's state at the end of D is generated (seeded);
2. its departmental exports (BRP volglijst, wijk- en buurtindeling) land in the drop zones;
3. BRP and BAG stand-ins serve that state on loopback, and the Airflow connections
   ``ggm_brp``/``ggm_bag`` point at them (through ``AIRFLOW_CONN_*`` variables);
4. the ``ggm_daily`` DAG runs for D through Airflow (``dag.test``) with Spark in local mode;
5. the run summary is assembled from the stage reports.
"""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import date

from ggm_lakehouse.airflow_env import airflow_environment, airflow_home, demo_pseudonym_key


def _ensure_airflow_db(env: dict[str, str]) -> None:
    if (airflow_home() / "airflow.db").exists():
        return
    airflow_home().mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)


def connection_env(servers, muni) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` variables that point the connectors at running stand-ins."""
    return {
        "AIRFLOW_CONN_GGM_BRP": json.dumps(
            {"conn_type": "http", "host": servers.brp.url, "password": servers.brp.api_key}
        ),
        "AIRFLOW_CONN_GGM_BAG": json.dumps(
            {
                "conn_type": "http",
                "host": servers.bag.url,
                "password": servers.bag.api_key,
                "extra": {"woonplaats_ids": sorted(muni.woonplaatsen)},
            }
        ),
    }


def run_demo_day(logical_date: date, population: int = 3000, seed: int = 42, extra_env: dict | None = None) -> dict:
    """Run the daily pipeline for ``logical_date`` against the demo municipality; returns the summary."""
    from demo_gemeente.dropzone import write_dropzone
    from demo_gemeente.generator import DemoWorld
    from ggm_lakehouse.config import dropzone_root
    from ggm_lakehouse.pipeline import run_summary
    from standins.server import StandinServers

    world = DemoWorld(population, seed)
    muni = world.at(logical_date)
    write_dropzone(muni, dropzone_root())
    with StandinServers(world, as_of=logical_date) as servers:
        env = airflow_environment(
            {**connection_env(servers, muni), "GGM_PSEUDONYM_KEY": demo_pseudonym_key(), **(extra_env or {})}
        )
        _ensure_airflow_db(env)
        result = subprocess.run(
            [sys.executable, "-m", "ggm_lakehouse.airflow_runner", "--date", logical_date.isoformat()], env=env
        )
    summary = run_summary(logical_date)
    summary["state"] = "success" if result.returncode == 0 else "failed"
    return summary
