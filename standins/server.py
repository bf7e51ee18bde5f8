"""Run the BRP, BAG, KvK and CBS stand-ins in-process (tests) or in the foreground (demo CLI).

Typical test use::

    with StandinServers(municipality) as servers:
        requests.post(f"{servers.brp.url}/personen", headers={"X-API-KEY": servers.brp.api_key}, json=...)
        servers.bag.faults.fail_next(2, status=503)
        servers.set_as_of(date(2026, 11, 28))
"""
from __future__ import annotations

import json
import secrets
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any


from standins.bag import DEFAULT_PATH_PREFIX as BAG_PREFIX
from standins.bag import create_bag_app
from standins.brp import DEFAULT_PATH_PREFIX as BRP_PREFIX
from standins.brp import create_brp_app
from standins.brp_update import DEFAULT_PATH_PREFIX as BRP_UPDATE_PREFIX
from standins.brp_update import VolgindicatieStore, create_brp_update_app
from standins.kvk import DEFAULT_PATH_PREFIX as KVK_PREFIX
from standins.kvk import create_kvk_app
from standins.common import RegistryHandle, RegistryState, ThreadedUvicorn, TokenBucketRateLimiter, WorldLike, WorldSource

@dataclass
class Registry(RegistryHandle):
    """Handle on one running stand-in registry."""

    name: str
    state: RegistryState
    path_prefix: str
    host: str
    port: int | None = None

    @property
    def url(self) -> str:
        """Base URL including the spec's path prefix (no trailing slash)."""
        if self.port is None:
            raise RuntimeError(f"stand-in {self.name} is not running")
        return f"http://{self.host}:{self.port}{self.path_prefix}"


class StandinServers:
    """Both stand-in registries on 127.0.0.1, in background threads.

    ``world_or_provider`` is a ``Municipality``, an object with ``.at(date)`` (the
    demo generator's ``DemoWorld``) or a callable ``date -> Municipality``.
    ``api_keys`` maps ``"brp"``/``"bag"`` to the key each accepts (random when
    absent); ``rate_limit_per_second`` enables the per-key token bucket on both.
    With ``port_base`` the BRP listens on ``port_base`` and the BAG on
    ``port_base + 1``; without it both get free ephemeral ports.
    """

    def __init__(self, world_or_provider: WorldLike, host: str = "127.0.0.1", port_base: int | None = None,
                 api_keys: dict[str, str] | None = None, rate_limit_per_second: float | None = None,
                 as_of: date | None = None, strict_crs: bool = True,
                 volgindicaties_file: Path | None = None) -> None:
        source = WorldSource(world_or_provider)
        keys = api_keys or {}
        self.host = host
        self.port_base = port_base

        def state(name: str) -> RegistryState:
            limiter = TokenBucketRateLimiter(rate_limit_per_second) if rate_limit_per_second else None
            key = keys.get(name) or secrets.token_urlsafe(24)
            registry_state = RegistryState(name=name, world=source, api_keys=frozenset({key}), rate_limiter=limiter)
            if as_of is not None:
                registry_state.set_as_of(as_of)
            return registry_state

        from demo_gemeente.kvk import KvkRegister

        self.brp = Registry("brp", state("brp"), BRP_PREFIX, host)
        self.bag = Registry("bag", state("bag"), BAG_PREFIX, host)
        self.kvk = Registry("kvk", state("kvk"), KVK_PREFIX, host)
        # The BRP Update API: volgindicaties per afnemer and the daily wijzigingen. With a file the
        # volgindicaties outlive the process, as a real registry's do (``ggm run`` restarts daily).
        self.brp_update = Registry("brp_update", state("brp_update"), BRP_UPDATE_PREFIX, host)
        # The KvK register is derived from the same world: companies sit at its BAG addresses.
        self.kvk_register = KvkRegister(world_or_provider if hasattr(world_or_provider, "at") else source.at)
        self._apps = {
            "brp": create_brp_app(self.brp.state),
            "bag": create_bag_app(self.bag.state, strict_crs=strict_crs),
            "kvk": create_kvk_app(self.kvk.state, self.kvk_register),
            "brp_update": create_brp_update_app(self.brp_update.state, store=VolgindicatieStore(volgindicaties_file)),
        }
        self._servers: list[ThreadedUvicorn] = []
        # CBS StatLine is open data (no API key) and publishes rarely; it serves the same world.
        from standins.cbs import CbsStandin

        self.cbs = CbsStandin(source, as_of=as_of, host=host,
                              port=0 if port_base is None else port_base + 3)

    def start(self) -> "StandinServers":
        """Start both servers and wait until they accept connections."""
        if self._servers:
            return self
        try:
            # Fixed offsets from port_base: BRP 0, BAG 1, KvK 2, CBS 3, BRP Update API 4.
            for offset, registry in ((0, self.brp), (1, self.bag), (2, self.kvk), (4, self.brp_update)):
                port = 0 if self.port_base is None else self.port_base + offset
                server = ThreadedUvicorn(self._apps[registry.name], self.host, port)
                self._servers.append(server)
                registry.port = server.start()
            self.cbs.start()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both servers (idempotent)."""
        for server in self._servers:
            server.stop()
        self._servers.clear()
        self.brp.port = None
        self.bag.port = None
        self.kvk.port = None
        self.brp_update.port = None
        self.cbs.stop()

    def set_as_of(self, as_of: date) -> None:
        """Move both registries to ``as_of``."""
        self.brp.set_as_of(as_of)
        self.bag.set_as_of(as_of)
        self.kvk.set_as_of(as_of)
        self.brp_update.set_as_of(as_of)
        self.cbs.set_as_of(as_of)

    def __enter__(self) -> "StandinServers":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def serve_foreground(port_base: int | None, population: int, seed: int, as_of: date,
                     host: str = "127.0.0.1") -> None:
    """Serve a generated demo municipality until SIGINT/SIGTERM.

    Prints one JSON line per registry on stdout, e.g.
    ``{"name": "brp", "url": "http://127.0.0.1:8801/haalcentraal/api/brp", "api_key": "..."}``.
    """
    from demo_gemeente.generator import DemoWorld  # imported late: only the CLI needs the generator

    world = DemoWorld(population, seed)
    servers = StandinServers(world, host=host, port_base=port_base, as_of=as_of)
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal API
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    servers.start()
    try:
        for registry in (servers.brp, servers.bag, servers.kvk, servers.brp_update):
            sys.stdout.write(json.dumps(registry.describe()) + "\n")
        sys.stdout.write(json.dumps({"name": "cbs", "url": servers.cbs.url,
                                     "table_ids": servers.cbs.kerncijfers.table_ids(as_of)}) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        servers.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
