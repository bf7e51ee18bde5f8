"""End to end: the registries' DAGs through Airflow for two consecutive dates, then the partner reads the share.

This is what `make run` does for the registries, on a small population, in an isolated data root and
Airflow home (the departmental systems: tests/test_e2e_departments.py).
Checks: both runs succeed, the second date adds SCD2 versions, no BSN appears in any silver or
gold table, and the partner reads the gold mart with the official delta-sharing client.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import date

import pytest

# Two full Airflow days, each a chain of ingest, silver and gold DAGs with a Spark Connect client per stage.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2700)]

POPULATION = 300
SEED = 5
REGISTRIES = ("brp", "bag", "gebieden", "kvk", "cbs")


def _consecutive_days_with_a_move(start: date) -> tuple[date, date]:
    """Two consecutive dates, the second with at least one move (a town of 300 has quiet days)."""
    from datetime import timedelta

    from demo_gemeente.generator import DemoWorld

    world = DemoWorld(POPULATION, SEED)
    day = start
    for _ in range(90):
        day += timedelta(days=1)
        if any(c.kind == "move" for c in world.at(day).changes_on(day)):
            return day - timedelta(days=1), day
    raise AssertionError("no move within 90 days in the demo municipality")


DATES = _consecutive_days_with_a_move(date(2026, 5, 3))


@pytest.fixture(scope="module")
def e2e_env(tmp_path_factory, spark_server):
    root = tmp_path_factory.mktemp("e2e")
    env = {
        "GGM_DATA_ROOT": str(root / "data"),
        "AIRFLOW_HOME": str(root / "airflow"),
        "GGM_SHARING_ROOT": str(root / "data" / "sharing"),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def runs(e2e_env):
    results = []
    for day in DATES:
        # The registries and everything built on them; the departmental systems run through Airflow in
        # tests/test_e2e_departments.py, on the other test worker at the same time.
        sources = ["--sources", ",".join(REGISTRIES)]
        completed = subprocess.run(
            [sys.executable, "-m", "ggm_lakehouse.cli", "run", "--date", day.isoformat(),
             "--population", str(POPULATION), "--seed", str(SEED), *sources],
            env=dict(os.environ), capture_output=True, text=True, timeout=2400,
        )
        assert completed.returncode == 0, f"ggm run {day} failed:\n{completed.stdout[-6000:]}\n{completed.stderr[-6000:]}"
        from ggm_lakehouse.pipeline import run_summary

        results.append(run_summary(day))
    return results


def test_both_days_run_green_and_report_every_stage(runs):
    first, second = runs
    assert set(first["extracted"]) == set(second["extracted"]) == set(REGISTRIES)
    for summary in runs:
        assert summary["silver"]["NATUURLIJKPERSOON"]["current_rows"] > 0
        assert summary["gold"]["inwoners_per_buurt"]["rows"] > 0
        assert summary["share"]["tables"][0]["table"] == "gemeente_gold.demografie.inwoners_per_buurt"
    assert first["silver"]["INGESCHREVENPERSOON"]["new_versions"] == first["silver"]["INGESCHREVENPERSOON"]["current_rows"]
    # KvK: the first day is a full pull (establishments at BAG addresses); later days only what the
    # Mutatieservice signals name, so a quiet day leaves the KvK tables unchanged.
    assert first["silver"]["VESTIGING"]["current_rows"] > 0
    assert "VESTIGING" in second["silver"] or "VESTIGING" in second["silver_unchanged"]
    # The second day only versions what changed.
    assert 0 < second["silver"]["INGESCHREVENPERSOON"]["new_versions"] < first["silver"]["INGESCHREVENPERSOON"]["new_versions"]


def test_no_bsn_in_any_silver_or_gold_table(runs, e2e_env):
    from deltalake import DeltaTable

    from demo_gemeente.generator import build_municipality

    bsns = set(build_municipality(POPULATION, SEED, DATES[-1]).persons)
    nine_digits = re.compile(r"(?<!\d)\d{9}(?!\d)")
    lake = e2e_env / "data" / "lake"
    tables = [p.parent for layer in ("silver", "gold") for p in (lake / layer).glob("*/_delta_log")]
    assert len(tables) >= 10
    for table in tables:
        frame = DeltaTable(str(table)).to_pandas()
        for column in frame.columns:
            values = frame[column].dropna().astype(str)
            found = {m for v in values for m in nine_digits.findall(v)} & bsns
            assert not found, f"clear BSN in {table.name}.{column}"


def test_partner_reads_the_gold_share_with_the_official_client(runs, e2e_env, tmp_path):
    import delta_sharing
    import uvicorn

    from sharing_server.app import create_app
    from sharing_server.recipients import issue_profile

    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # File URLs come from the configured public endpoint only (never the Host header).
    app = create_app(public_endpoint=f"http://127.0.0.1:{port}/delta-sharing")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        profile = tmp_path / "demo-partner.share"
        profile.write_text(json.dumps(issue_profile("demo-partner", endpoint=f"http://127.0.0.1:{port}/delta-sharing")))
        tables = delta_sharing.SharingClient(str(profile)).list_all_tables()
        assert [(t.share, t.schema, t.name) for t in tables] == [("gemeente_gold", "demografie", "inwoners_per_buurt")]
        frame = delta_sharing.load_as_pandas(f"{profile}#gemeente_gold.demografie.inwoners_per_buurt")
        assert sorted(frame["peildatum"].astype(str).unique()) == [d.isoformat() for d in DATES]
        visible = frame.dropna(subset=["aantal_inwoners"])
        assert (visible["aantal_inwoners"] >= 5).all()
        assert frame[frame["aantal_inwoners"].isna()]["onderdrukt"].all()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
