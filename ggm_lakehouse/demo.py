"""One demo day end to end: the demo municipality's systems deliver, the stand-ins serve, Airflow runs.

``ggm run --date D`` (and ``make run``) use this on the embedded default:

1. the demo municipality's state at the end of D is generated (seeded);
2. its departmental exports land in the drop zones (BRP volglijst, wijk- en buurtindeling,
   iWmo/iJw messages, the XAF ledger, subsidy/VTH/HR exports, vroegsignalering signals) and its
   Suite4 sociaal-domein database is updated (``demo_gemeente.departments``);
3. BRP, BAG and CBS stand-ins serve that state on loopback, and the Airflow connections
   ``ggm_brp``/``ggm_bag``/``ggm_cbs`` point at them (through ``AIRFLOW_CONN_*`` variables);
4. the DAGs run for D through Airflow (``dag.test``, see ``ggm_lakehouse.airflow_runner``): every
   ingest DAG, then the silver, gold and share DAGs their Assets chain, with Spark in local mode;
5. the run summary is assembled from the stage reports.
"""
from __future__ import annotations

import contextlib

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

from ggm_lakehouse.airflow_env import airflow_environment, airflow_home, demo_pseudonym_key


def _ensure_airflow_db(env: dict[str, str]) -> None:
    if (airflow_home() / "airflow.db").exists():
        return
    airflow_home().mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)


def _standin_api_keys(path) -> dict[str, str]:
    """Stable demo API keys per stand-in (the Update API's volgindicaties belong to the key that set them)."""
    import secrets as token_source

    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    keys = {name: token_source.token_urlsafe(24) for name in ("brp", "bag", "kvk", "brp_update")}
    path.write_text(json.dumps(keys), encoding="utf-8")
    path.chmod(0o600)
    return keys


def connection_env(servers, muni) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` variables that point the connectors at running stand-ins."""
    return {
        "AIRFLOW_CONN_GGM_BRP": json.dumps(
            {
                "conn_type": "http",
                "host": servers.brp.url,
                "password": servers.brp.api_key,
                # Daily changes through the BRP Update API (volgindicaties + wijzigingen).
                "extra": {"update_base_url": servers.brp_update.url, "update_api_key": servers.brp_update.api_key},
            }
        ),
        "AIRFLOW_CONN_GGM_BAG": json.dumps(
            {
                "conn_type": "http",
                "host": servers.bag.url,
                "password": servers.bag.api_key,
                "extra": {"woonplaats_ids": sorted(muni.woonplaatsen)},
            }
        ),
        "AIRFLOW_CONN_GGM_KVK": json.dumps(
            {
                "conn_type": "http",
                "host": servers.kvk.url,
                "password": servers.kvk.api_key,
                "extra": {"plaatsen": sorted(w.naam for w in muni.woonplaatsen.values())},
            }
        ),
        # The newest Kerncijfers table CBS had published about the demo municipality by that day.
        "AIRFLOW_CONN_GGM_CBS": json.dumps(
            {
                "conn_type": "http",
                "host": servers.cbs.url,
                "extra": {"table_id": servers.cbs.kerncijfers.table_ids(servers.cbs.as_of)[-1],
                          "gemeentecode": muni.gemeentecode, "api_flavour": "v3-feed"},
            }
        ),
    }


def write_departmental_deliveries_for_demo(muni, logical_date: date, kvk_register, seed: int) -> dict:
    """The departments' deliveries of the day (drop zones, Suite4 database, AGB-KvK list)."""
    from connectors.sql import suite4_demo_database_path
    from demo_gemeente.departments import write_departmental_deliveries
    from ggm_lakehouse.config import data_root, dropzone_root

    # The first day the platform receives the departments' files brings the current state along.
    first_delivery = not (dropzone_root() / "iwmo" / "archive").exists()
    return write_departmental_deliveries(
        muni, dropzone_root(), logical_date, kvk_register=kvk_register, seed=seed,
        suite4_database=suite4_demo_database_path(), agb_kvk_mapping=data_root() / "config" / "agb_kvk.csv",
        first_delivery=first_delivery,
    )


def departmental_connection_env(departmental: dict) -> dict[str, str]:
    """Connections of the departmental sources that need more than their defaults.

    The iWmo/iJw connectors link zorgaanbieders to KvK through the municipality's AGB-KvK list.
    The drop zones, the XAF taakveld mapping and the demo Suite4 database use their defaults.
    """
    mapping = str(departmental["agb_kvk"][0])
    return {
        f"AIRFLOW_CONN_GGM_{source.upper()}": json.dumps({"conn_type": "fs", "extra": {"agb_kvk_mapping": mapping}})
        for source in ("iwmo", "ijw")
    }


@contextlib.contextmanager
def spark_for_the_day(env: dict[str, str]):
    """The day's Spark Connect server for the ``connect`` target: started unless running, stopped after if started here."""
    if env.get("GGM_SPARK_TARGET", "connect") != "connect":
        yield
        return
    from ggm_lakehouse.spark_connect import running_server

    with running_server():
        yield


def _run_airflow_day(command: list[str], env: dict[str, str], logical_date: date, quiet: bool) -> int:
    """Run the Airflow runner; ``quiet`` sends its logs to a file per run and prints one line per DAG run."""
    if not quiet:
        return subprocess.run(command, env=env).returncode
    from ggm_lakehouse.config import data_root
    from ggm_lakehouse.run_console import follow, run_log_paths

    log, progress = run_log_paths(data_root() / "runs" / logical_date.isoformat() / "logs")
    print(f"Running {logical_date} through Airflow (logs: {log})", flush=True)
    return follow([*command, "--progress", str(progress)], env, log, progress)


def standin_port_base(root: Path) -> int:
    """Where the demo's five stand-in registries listen: fixed per data root, below the ephemeral range.

    Registries write their own address into what they answer (HAL links, OData metadata, paging
    links). On fixed ports a rerun of a day lands byte-identical batches, which bronze then
    recognises as already landed, so the rerun changes nothing; two data roots (two test runs)
    get different ports. ``GGM_STANDINS_PORT_BASE`` sets it explicitly.
    """
    import os
    import zlib

    configured = os.environ.get("GGM_STANDINS_PORT_BASE")
    if configured:
        return int(configured)
    return 20000 + (zlib.crc32(str(root.resolve()).encode("utf-8")) % 1900) * 5


def _ports_free(host: str, ports) -> bool:
    import socket

    for port in ports:
        with socket.socket() as probe:
            # As uvicorn binds: a port whose last connections linger in TIME_WAIT is still free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


@contextlib.contextmanager
def _started_standins(world, logical_date: date, keys: dict, volgindicaties: Path):
    """The stand-ins on the data root's fixed ports, or on free ports when those are taken."""
    from ggm_lakehouse.config import data_root
    from standins.server import StandinServers

    def servers(port_base):
        return StandinServers(world, as_of=logical_date, api_keys=keys, volgindicaties_file=volgindicaties,
                              port_base=port_base)

    base = standin_port_base(data_root())
    if not _ports_free("127.0.0.1", range(base, base + 5)):
        print(f"stand-ins: ports {base}-{base + 4} are taken; using free ports, so a rerun of this day lands "
              "new batches (set GGM_STANDINS_PORT_BASE to choose others)", file=sys.stderr)
        base = None
    started = servers(base).start()
    try:
        yield started
    finally:
        started.stop()


def run_demo_day(logical_date: date, population: int = 3000, seed: int = 42, extra_env: dict | None = None,
                 sources: list[str] | None = None, quiet: bool = False) -> dict:
    """Run the daily pipeline for ``logical_date`` against the demo municipality; returns the summary.

    ``sources`` limits the run to those sources and what depends on them alone (default: all).
    """
    from demo_gemeente.dropzone import write_dropzone
    from demo_gemeente.generator import DemoWorld
    from ggm_lakehouse.config import dropzone_root
    from ggm_lakehouse.pipeline import run_summary

    world = DemoWorld(population, seed)
    muni = world.at(logical_date)
    write_dropzone(muni, dropzone_root())
    from ggm_lakehouse.config import data_root

    # The stand-in registries keep the municipality's volgindicaties across daily runs.
    volgindicaties = data_root() / "standins" / "brp_update_volgindicaties.json"
    volgindicaties.parent.mkdir(parents=True, exist_ok=True)
    keys = _standin_api_keys(data_root() / "standins" / "api_keys.json")
    with _started_standins(world, logical_date, keys, volgindicaties) as servers:
        departmental = write_departmental_deliveries_for_demo(muni, logical_date, servers.kvk_register, seed)
        env = airflow_environment(
            {**connection_env(servers, muni), **departmental_connection_env(departmental),
             "GGM_PSEUDONYM_KEY": demo_pseudonym_key(), **(extra_env or {})}
        )
        _ensure_airflow_db(env)
        command = [sys.executable, "-m", "ggm_lakehouse.airflow_runner", "--date", logical_date.isoformat(),
                   *(["--sources", ",".join(sources)] if sources else [])]
        with spark_for_the_day(env):
            returncode = _run_airflow_day(command, env, logical_date, quiet)
    summary = run_summary(logical_date)
    summary["state"] = "success" if returncode == 0 else "failed"
    return summary
