"""End to end: one whole day through Airflow, every source, from drop zone to gold, dashboard and share.

`ggm run` (what `make run` does, at a small population) writes the demo departments' deliveries in
their real formats (iWmo/iJw XML, the XAF ledger, Excel and CSV exports, vroegsignalering JSON/CSV,
the Suite4 database), serves the registries from the stand-ins, and runs every ingest, silver and
gold DAG and the share DAG through Airflow (`dag.test`, a Spark Connect client per stage).
Checks: every departmental file of the day is accepted, archived and listed in the drop-zone
manifest; the GGM tables fill; clients link to NATUURLIJKPERSOON through the pseudonym; every
domein's marts are built with their status rows; the dashboard has a page per domein; partners'
projections exist; and no BSN is in clear in silver, gold or any projection.
Runs on its own test worker next to tests/test_e2e_daily.py (the registries over two days).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(4200)]

POPULATION = 300
SEED = 5
DAY = date(2026, 6, 8)
DEPARTMENTS = ("iwmo", "ijw", "xaf", "begroting", "subsidies", "vth", "hr", "vroegsignalering", "suite4")
DROP_ZONES = tuple(s for s in DEPARTMENTS if s != "suite4")


@pytest.fixture(scope="module")
def run(tmp_path_factory, spark_server):
    root = tmp_path_factory.mktemp("e2e-departments")
    patcher = pytest.MonkeyPatch()
    for name, value in {"GGM_DATA_ROOT": root / "data", "AIRFLOW_HOME": root / "airflow",
                        "GGM_SHARING_ROOT": root / "data" / "sharing"}.items():
        patcher.setenv(name, str(value))
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "ggm_lakehouse.cli", "run", "--date", DAY.isoformat(), "--population",
             str(POPULATION), "--seed", str(SEED)],
            env=dict(os.environ), capture_output=True, text=True, timeout=3900,
        )
        assert completed.returncode == 0, f"ggm run failed:\n{completed.stdout[-6000:]}\n{completed.stderr[-6000:]}"
        from ggm_lakehouse.pipeline import run_summary

        yield {"root": root, "data": root / "data", "summary": run_summary(DAY)}
    finally:
        patcher.undo()


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

    from jobs.gold import MART_DOMAINS
    from ggm_lakehouse.orchestration import gold_domains

    gold = run["data"] / "lake" / "gold"
    status = DeltaTable(str(gold / "mart_status")).to_pandas()
    today = status[status["peildatum"].astype(str) == DAY.isoformat()]
    scheduled = {mart for marts, _ in gold_domains().values() for mart in marts}
    assert scheduled == set(MART_DOMAINS), "every mart has a source for each of its inputs"
    for mart, domein in MART_DOMAINS.items():
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
    from jobs.gold import MART_DOMAINS

    site = run["data"] / "dashboard"
    assert (site / "index.html").is_file()
    for domein in set(MART_DOMAINS.values()):
        assert (site / f"{domein}.html").is_file(), domein
    from sharing_server.shares_config import load_shares_config

    config = load_shares_config()
    projections = run["data"] / "lake" / "shares"
    for recipient in config.recipients:
        for share in config.shares_for(recipient):
            for table in share.all_tables():
                location = projections / recipient.name / table.share / table.schema / table.name
                assert (location / "_delta_log").is_dir(), f"{recipient.name} has no projection of {table.qualified_name}"
