"""End to end: two days of the whole platform through Airflow, then the partner reads the share.

This is what `make run` does, on a small population, in an isolated data root and Airflow home.
The first day runs every source (`ggm run`): the demo departments' deliveries in their real
formats (iWmo/iJw XML, the XAF ledger, Excel and CSV exports, vroegsignalering JSON/CSV, the
Suite4 database), the registries from the stand-ins, and every ingest, silver, gold and share DAG
(`dag.test`, a Spark Connect client per stage). The second day runs the registries again, a day
with moves, so SCD2 history has something to version.

Checks after the first day: every departmental file is accepted, archived and listed in the
drop-zone manifest; the GGM tables fill; clients link to NATUURLIJKPERSOON through the pseudonym;
every domein's marts are built with their status rows; the dashboard has a page per domein and
partners their projections. After the second: both days are green, the second only versions what
changed, no BSN is in clear in silver, gold or any projection, and the partner reads the gold
mart with the official delta-sharing client.
One module, so the first day serves both sets of checks (the day is most of the suite's time).
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
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(4200)]

POPULATION = 300
SEED = 5
REGISTRIES = ("brp", "bag", "gebieden", "kvk", "cbs")
DEPARTMENTS = ("iwmo", "ijw", "xaf", "begroting", "subsidies", "vth", "hr", "vroegsignalering", "suite4")
DROP_ZONES = tuple(s for s in DEPARTMENTS if s != "suite4")
# The first day every source delivers; the second has moves in the BRP (the demo town of 300 has quiet days).
DATES = (date(2026, 6, 8), date(2026, 6, 9))
DAY = DATES[0]


def test_the_second_day_has_moves():
    """The dates above still give the second day something to version (the demo generator may change)."""
    from demo_gemeente.generator import DemoWorld

    assert any(c.kind == "move" for c in DemoWorld(POPULATION, SEED).at(DATES[1]).changes_on(DATES[1]))


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


def _ggm_run(day: date, *args: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", "ggm_lakehouse.cli", "run", "--date", day.isoformat(),
         "--population", str(POPULATION), "--seed", str(SEED), *args],
        env=dict(os.environ), capture_output=True, text=True, timeout=3000,
    )
    assert completed.returncode == 0, f"ggm run {day} failed:\n{completed.stdout[-6000:]}\n{completed.stderr[-6000:]}"
    from ggm_lakehouse.pipeline import run_summary

    return run_summary(day)


@pytest.fixture(scope="module")
def run(e2e_env):
    """The first day, every source."""
    return {"root": e2e_env, "data": e2e_env / "data", "summary": _ggm_run(DAY)}


@pytest.fixture(scope="module")
def runs(run):
    """Both days' summaries: the second day runs the registries and everything built on them."""
    return [run["summary"], _ggm_run(DATES[1], "--sources", ",".join(REGISTRIES))]


# --- after the first day: the departmental systems --------------------------------------------

def test_every_delivered_file_is_accepted_archived_and_in_the_manifest(run):
    summary, zones = run["summary"], run["data"] / "dropzone"
    assert set(DEPARTMENTS) <= set(summary["extracted"])
    assert set(summary["files"]) == set(DROP_ZONES)
    for source in DROP_ZONES:
        files = summary["files"][source]
        assert files["rejected"] == [], f"{source}: demo files were rejected: {files['rejected']}"
        manifest = json.loads((zones / source / "_manifest" / f"{DAY.isoformat()}.json").read_text(encoding="utf-8"))
        assert manifest["files"], source
        for entry in manifest["files"]:
            assert entry["outcome"] in ("accepted", "superseded"), (source, entry)
            assert (zones / source / "archive" / DAY.isoformat() / entry["file"]).is_file(), (source, entry["file"])
        # Nothing is left behind in the zone itself.
        assert not [p for p in (zones / source).iterdir() if p.is_file()], source


def test_ggm_tables_of_every_department_fill(run):
    silver = run["summary"]["silver"]
    for table in ("CLIENT", "TOEWIJZING", "BESCHIKTE_VOORZIENING", "LEVERANCIER", "VOORZIENING",
                  "MUTATIE", "HOOFDREKENING", "KOSTENPLAATS", "TAAKVELD", "FACTUUR", "BEGROTING", "BEGROTINGREGEL",
                  "SUBSIDIE", "SUBSIDIEPROGRAMMA", "VTH_MELDING", "MEDEWERKER",
                  "VROEGSIGNAAL", "VROEGSIGNAALZAAK", "SIGNAALPARTNER", "AOM_AANVRAAGWMOJEUGD"):
        assert silver[table]["current_rows"] > 0, table
    # The day's two signals have had no contactpoging yet: an empty delivery, kept as "no change".
    assert "CONTACTPOGING" in run["summary"]["silver_unchanged"] or "CONTACTPOGING" in silver


def test_clients_link_to_natuurlijkpersoon_and_no_bsn_is_in_clear(run):
    from deltalake import DeltaTable

    from demo_gemeente.generator import build_municipality
    from ggm_lakehouse.pseudonym import pseudonymise
    from jobs.silver import surrogate_key_value

    lake = run["data"] / "lake" / "silver"
    gold = run["data"] / "lake" / "gold"
    muni = build_municipality(POPULATION, SEED, DAY)
    key = os.environ["GGM_PSEUDONYM_KEY"].encode("utf-8")  # the session's Spark server pseudonymises with it
    expected = {surrogate_key_value("NATUURLIJKPERSOON", pseudonymise(bsn, key)) for bsn in muni.persons}
    clients = DeltaTable(str(lake / "client")).to_pandas()
    assert len(clients) and set(clients["NATUURLIJKPERSOON_ID"]) <= expected

    nine_digits = re.compile(r"(?<!\d)\d{9}(?!\d)")
    bsns = set(muni.persons)
    tables = [p.parent for root in (lake, gold, run["data"] / "lake" / "shares") for p in root.glob("**/_delta_log")]
    assert len(tables) > 40
    for table in tables:
        frame = DeltaTable(str(table)).to_pandas()
        for column in frame.columns:
            found = {m for v in frame[column].dropna().astype(str) for m in nine_digits.findall(v)} & bsns
            assert not found, f"clear BSN in {table.name}.{column}"


def test_every_domein_has_its_marts_with_freshness(run):
    from deltalake import DeltaTable

    from jobs.gold import MART_DOMEINEN
    from ggm_lakehouse.orchestration import gold_domeinen

    gold = run["data"] / "lake" / "gold"
    status = DeltaTable(str(gold / "mart_status")).to_pandas()
    today = status[status["peildatum"].astype(str) == DAY.isoformat()]
    scheduled = {mart for marts, _ in gold_domeinen().values() for mart in marts}
    assert scheduled == set(MART_DOMEINEN), "every mart has a source for each of its inputs"
    for mart, domein in MART_DOMEINEN.items():
        assert (gold / mart / "_delta_log").is_dir(), f"{domein}: mart {mart} was not built"
        rows = DeltaTable(str(gold / mart)).to_pandas()
        built = rows[rows["peildatum"].astype(str) == DAY.isoformat()]
        entry = today[today["mart"] == mart]
        assert len(entry) == 1, mart
        assert entry.iloc[0]["domein"] == domein and entry.iloc[0]["bronversies"], mart
        assert entry.iloc[0]["rijen"] == len(built), mart
        # The first delivery is a backlog of running toewijzingen without their 315 verzoeken, so the
        # lead-time mart has nothing to measure yet; every other mart has cells on the first day.
        if mart != "sociaal_domein_doorlooptijden":
            assert len(built) > 0, mart
        # Every published person count is at least the threshold.
        from jobs.gold import DEFINITIONS
        definition = DEFINITIONS.get(mart)
        if definition is not None and definition.personen:
            published = built.loc[~built["onderdrukt"], definition.personen]
            assert (published >= 5).all(), mart
    # The begroting of the first delivery stands next to the ledger's year to date.
    begroting = DeltaTable(str(gold / "financien_realisatie_begroting")).to_pandas()
    total = begroting[(begroting["taakveld"] == "Totaal") & (begroting["kostenplaats"] == "Totaal")].iloc[0]
    assert total["begroot_lasten"] > 0 and total["lasten"] > 0 and total["begroot_baten"] > 0


def test_dashboard_has_a_page_per_domein_and_partners_their_projections(run):
    from jobs.gold import MART_DOMEINEN

    site = run["data"] / "dashboard"
    assert (site / "index.html").is_file()
    for domein in set(MART_DOMEINEN.values()):
        assert (site / f"{domein}.html").is_file(), domein
    from ggm_lakehouse.model.shares_config import load_shares_config

    config = load_shares_config()
    projections = run["data"] / "lake" / "shares"
    for recipient in config.recipients:
        for share in config.shares_for(recipient):
            for table in share.all_tables():
                location = projections / recipient.name / table.share / table.schema / table.name
                assert (location / "_delta_log").is_dir(), f"{recipient.name} has no projection of {table.qualified_name}"


def _lake_versions(lake: Path) -> dict[str, int | None]:
    from ggm_lakehouse.lake import delta_log_version

    # The verwerkingslog (governance) records the rerun itself, as it should; every data table is compared.
    return {str(log.parent.relative_to(lake)): delta_log_version(log.parent) for log in sorted(lake.glob("**/_delta_log"))
            if log.parent.relative_to(lake).parts[0] != "governance"}


def test_a_rerun_of_the_first_day_through_airflow_changes_nothing(run):
    """The registries and what is built on them again, same date: no table of the lake gets a new version.

    Runs before the second day (a rerun of an earlier day after a later one replays history on purpose).
    """
    lake = run["data"] / "lake"
    before = _lake_versions(lake)
    again = _ggm_run(DAY, "--sources", "brp,bag,gebieden,cbs")
    assert _lake_versions(lake) == before
    unchanged = again["unchanged_stages"]
    assert {"silver_brp", "silver_bag", "silver_gebieden", "silver_cbs", "gold_demografie"} <= set(unchanged)
    assert all(entry["rows"] == 0 for name, entry in again["bronze"].items() if name.split("_")[0] in {"brp", "bag"})


# --- after the second day: history, privacy and the share ---------------------------------

def test_both_days_run_green_and_report_every_stage(runs):
    first, second = runs
    assert set(REGISTRIES) | set(DEPARTMENTS) <= set(first["extracted"])
    assert set(second["extracted"]) == set(REGISTRIES)
    for summary in runs:
        assert summary["silver"]["NATUURLIJKPERSOON"]["current_rows"] > 0
        assert summary["gold"]["inwoners_per_buurt"]["rows"] > 0
        assert "gemeente_gold.demografie.inwoners_per_buurt" in [t["table"] for t in summary["share"]["tables"]]
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
