"""End to end: the departmental systems' DAGs through Airflow for one day, from drop zone to GGM silver.

`ggm run --sources …` writes the demo departments' deliveries in their real formats (iWmo/iJw XML,
the XAF ledger, Excel and CSV exports, vroegsignalering JSON/CSV, the Suite4 database), then runs
the ingest and silver DAGs of those sources through Airflow (`dag.test`, spark-submit per stage).
Checks: every file of the day is accepted, archived and listed in the drop-zone manifest, the GGM
tables fill, clients link to NATUURLIJKPERSOON through the pseudonym and no BSN is in clear in silver.
Runs on its own test worker next to tests/test_e2e_daily.py (the registries).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2700)]

POPULATION = 300
SEED = 5
DAY = date(2026, 6, 8)
DEPARTMENTS = ("iwmo", "ijw", "xaf", "subsidies", "vth", "hr", "vroegsignalering", "suite4")
DROP_ZONES = tuple(s for s in DEPARTMENTS if s != "suite4")
PSEUDONYM_KEY = "e2e-departments-" + "k" * 32


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-departments")
    patcher = pytest.MonkeyPatch()
    for name, value in {"GGM_DATA_ROOT": root / "data", "AIRFLOW_HOME": root / "airflow",
                        "GGM_PSEUDONYM_KEY": PSEUDONYM_KEY, "GGM_SHARING_ROOT": root / "data" / "sharing"}.items():
        patcher.setenv(name, str(value))
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "ggm_lakehouse.cli", "run", "--date", DAY.isoformat(), "--population",
             str(POPULATION), "--seed", str(SEED), "--sources", ",".join(DEPARTMENTS)],
            env=dict(os.environ), capture_output=True, text=True, timeout=2400,
        )
        assert completed.returncode == 0, f"ggm run failed:\n{completed.stdout[-6000:]}\n{completed.stderr[-6000:]}"
        from ggm_lakehouse.pipeline import run_summary

        yield {"root": root, "data": root / "data", "summary": run_summary(DAY)}
    finally:
        patcher.undo()


def test_every_delivered_file_is_accepted_archived_and_in_the_manifest(run):
    summary, zones = run["summary"], run["data"] / "dropzone"
    assert set(summary["extracted"]) == set(DEPARTMENTS)
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
                  "MUTATIE", "HOOFDREKENING", "KOSTENPLAATS", "TAAKVELD", "FACTUUR",
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
    muni = build_municipality(POPULATION, SEED, DAY)
    key = PSEUDONYM_KEY.encode("utf-8")
    expected = {surrogate_key_value("NATUURLIJKPERSOON", pseudonymise(bsn, key)) for bsn in muni.persons}
    clients = DeltaTable(str(lake / "client")).to_pandas()
    assert len(clients) and set(clients["NATUURLIJKPERSOON_ID"]) <= expected

    nine_digits = re.compile(r"(?<!\d)\d{9}(?!\d)")
    bsns = set(muni.persons)
    for table in (p.parent for p in lake.glob("*/_delta_log")):
        frame = DeltaTable(str(table)).to_pandas()
        for column in frame.columns:
            found = {m for v in frame[column].dropna().astype(str) for m in nine_digits.findall(v)} & bsns
            assert not found, f"clear BSN in {table.name}.{column}"
