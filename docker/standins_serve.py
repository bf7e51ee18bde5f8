"""The demo municipality for the compose stack: BRP, BAG, KvK and CBS stand-ins plus its daily deliveries.

    python /opt/ggm/docker/standins_serve.py --host 0.0.0.0 --port-base 8801

``ggm standins serve`` draws random API keys and announces them on stdout, which suits
a terminal. In the compose stack Airflow's connections (``AIRFLOW_CONN_GGM_BRP`` and
``AIRFLOW_CONN_GGM_BAG``) must know the keys before anything starts, so this entry
point takes them from the environment (filled from ``.env``):

* ``GGM_STANDIN_BRP_API_KEY``: the ``X-API-KEY`` the BRP stand-in accepts;
* ``GGM_STANDIN_BAG_API_KEY``: the ``X-Api-Key`` the BAG stand-in accepts;
* ``GGM_STANDIN_KVK_API_KEY``: the ``apikey`` the KvK stand-in accepts (CBS open data needs none).

It also plays the municipality's own systems: for the day it serves it delivers the
BRP *volglijst* and the wijk- en buurtindeling into the shared drop zone, and it moves
on to the next day by itself, so a stack left running gets births, deaths, moves and
new buildings every day.

The day served is today in UTC, the same as ``ggm run --date D`` serving day D to the
run with logical date D: Airflow 3 runs ``@daily`` with a cron *trigger* timetable, so
the run started at 00:00 UTC on D has logical date D, and a manual trigger without a
logical date gets today as well.

The demo municipality is the ``ggm`` CLI's default one (population and seed), because
the BAG connection names its woonplaats ids and those follow from the seed.
Production has no stand-ins: the connections point at the real registries and the
burgerzaken application delivers the volglijst.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from datetime import date, datetime, timezone
from typing import Any

# How often the clock is checked for a new day; a delivery a minute late is harmless
# because the DAG's extract tasks retry.
CLOCK_CHECK_SECONDS = 60.0
API_KEY_ENV = {"brp": "GGM_STANDIN_BRP_API_KEY", "bag": "GGM_STANDIN_BAG_API_KEY", "kvk": "GGM_STANDIN_KVK_API_KEY"}
MIN_API_KEY_LENGTH = 16

log = logging.getLogger("ggm.standins")


class ConfigurationError(RuntimeError):
    """The environment lacks what the stand-ins need."""


def api_keys_from_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The API key per registry from ``GGM_STANDIN_*_API_KEY``; raises when one is missing or short."""
    environ = dict(os.environ if environ is None else environ)
    keys = {}
    for registry, variable in API_KEY_ENV.items():
        value = environ.get(variable, "")
        if len(value) < MIN_API_KEY_LENGTH:
            raise ConfigurationError(
                f"{variable} must be set to a random key of at least {MIN_API_KEY_LENGTH} characters (see .env.example)"
            )
        keys[registry] = value
    return keys


def served_day(now: datetime | None = None) -> date:
    """The day the stand-ins serve: today in UTC, the logical date of today's daily run."""
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).date()


def deliver(world: Any, day: date) -> None:
    """Write the municipality's drop-zone files for ``day`` (volglijst, wijk- en buurtindeling)."""
    from demo_gemeente.dropzone import write_dropzone
    from ggm_lakehouse.config import dropzone_root

    for path in write_dropzone(world.at(day), dropzone_root()):
        log.info("delivered %s", path)


def serve(host: str, port_base: int) -> None:
    """Serve both stand-ins until SIGTERM/SIGINT, advancing one day at a time."""
    from demo_gemeente.generator import DemoWorld
    from ggm_lakehouse.cli import DEFAULT_POPULATION, DEFAULT_SEED
    from standins.server import StandinServers

    from ggm_lakehouse.config import data_root

    keys = api_keys_from_environment()
    # The BRP Update API is the same afnemer's second BRP service: it accepts the BRP key.
    keys["brp_update"] = keys["brp"]
    world = DemoWorld(DEFAULT_POPULATION, DEFAULT_SEED)
    day = served_day()
    deliver(world, day)
    volgindicaties = data_root() / "standins" / "brp_update_volgindicaties.json"
    volgindicaties.parent.mkdir(parents=True, exist_ok=True)
    servers = StandinServers(world, host=host, port_base=port_base, api_keys=keys, as_of=day,
                             volgindicaties_file=volgindicaties)
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal API
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    servers.start()
    try:
        # URLs only: the keys are secrets from .env and stay out of the logs.
        for registry in (servers.brp, servers.bag, servers.kvk):
            log.info("%s stand-in serving %s on %s", registry.name, day, registry.url)
        while not stop.wait(CLOCK_CHECK_SECONDS):
            next_day = served_day()
            if next_day != day:
                deliver(world, next_day)
                servers.set_as_of(next_day)
                day = next_day
                log.info("stand-ins now serve %s", day)
    finally:
        servers.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="BRP and BAG stand-ins of the demo municipality (compose stack).")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0 inside a container)")
    parser.add_argument("--port-base", type=int, default=8801,
                        help="BRP on N, BAG on N+1, KvK on N+2, CBS on N+3, BRP Update API on N+4 (default 8801)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve(args.host, args.port_base)
    except ConfigurationError as exc:
        print(f"standins: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
