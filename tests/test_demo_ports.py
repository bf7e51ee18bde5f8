"""The demo's stand-ins listen on fixed ports per data root, so a rerun of a day lands identical batches."""
from __future__ import annotations

import socket
from datetime import date

from ggm_lakehouse import demo


def test_the_port_base_is_stable_per_data_root_and_below_the_ephemeral_range(tmp_path, monkeypatch):
    monkeypatch.delenv("GGM_STANDINS_PORT_BASE", raising=False)
    first, second = tmp_path / "a", tmp_path / "b"
    assert demo.standin_port_base(first) == demo.standin_port_base(first)
    assert demo.standin_port_base(first) != demo.standin_port_base(second)
    assert 20000 <= demo.standin_port_base(first) and demo.standin_port_base(first) + 4 < 32768
    monkeypatch.setenv("GGM_STANDINS_PORT_BASE", "8800")
    assert demo.standin_port_base(first) == 8800


def test_stand_ins_use_the_fixed_ports_and_free_ones_when_those_are_taken(tmp_path, monkeypatch):
    from demo_gemeente.generator import DemoWorld

    monkeypatch.setenv("GGM_DATA_ROOT", str(tmp_path))
    base = demo.standin_port_base(tmp_path)
    world, day = DemoWorld(20, 1), date(2026, 3, 2)
    with demo._started_standins(world, day, {}, tmp_path / "volg.json") as servers:
        assert (servers.brp.port, servers.bag.port, servers.kvk.port, servers.cbs.port) == (base, base + 1, base + 2, base + 3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 2))
        taken.listen()
        with demo._started_standins(world, day, {}, tmp_path / "volg.json") as servers:
            assert servers.kvk.port != base + 2 and servers.brp.port != base
