"""Run reports live in the lake (a Delta table) as well as in files, so they reach Airflow wherever Spark ran."""
from __future__ import annotations

import json
import threading
from datetime import date, datetime, timedelta, timezone

import pytest
from deltalake import DeltaTable

from ggm_lakehouse import reports

DAY = date(2026, 3, 10)


@pytest.fixture()
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("GGM_DATA_ROOT", str(tmp_path))
    return tmp_path


def test_a_report_is_a_row_of_the_lake_and_a_file(root):
    path = reports.write_report(DAY, "silver_brp", {"stage": "silver", "run_id": "r1", "tables": {"BUURT": {"rows": 3}}})
    [row] = DeltaTable(str(root / "lake" / "governance" / "run_reports")).to_pyarrow_table().to_pylist()
    assert (row["logical_date"], row["name"], row["stage"], row["run_id"]) == (DAY, "silver_brp", "silver", "r1")
    assert json.loads(row["report"]) == json.loads(path.read_text(encoding="utf-8"))
    assert reports.read_report(DAY, "silver_brp")["tables"] == {"BUURT": {"rows": 3}}
    assert reports.read_report(DAY, "silver_bag") is None


def test_a_report_that_only_reached_the_lake_is_read_as_well(root):
    """A stage on a cluster or Databricks writes the lake's row; the file lands on the driver's disk, not here."""
    from ggm_lakehouse.pipeline import run_summary

    reports.write_report(DAY, "silver_brp", {"stage": "silver", "tables": {
        "BUURT": {"current_rows": 3, "total_rows": 3, "new_versions": 3, "closed": 0}}}).unlink()
    assert reports.read_reports(DAY)["silver_brp"]["tables"]["BUURT"]["new_versions"] == 3
    assert run_summary(DAY)["silver"]["BUURT"]["new_versions"] == 3


def test_the_newest_write_wins_and_older_files_are_still_read(root):
    first = datetime(2026, 3, 11, 6, tzinfo=timezone.utc)
    reports.write_report(DAY, "gold_demografie", {"run_id": "first"}, written_at=first)
    reports.write_report(DAY, "gold_demografie", {"run_id": "second"}, written_at=first + timedelta(minutes=5))
    assert reports.read_report(DAY, "gold_demografie")["run_id"] == "second"
    # A data root from before the table existed: only its files.
    older = root / "runs" / "2026-03-01"
    older.mkdir(parents=True)
    (older / "bronze_brp.json").write_text(json.dumps({"run_id": "from-a-file"}), encoding="utf-8")
    assert reports.read_report(date(2026, 3, 1), "bronze_brp") == {"run_id": "from-a-file"}
    assert set(reports.report_times({"gold_demografie", "bronze_brp"})) == {DAY, date(2026, 3, 1)}
    assert reports.report_times({"gold_demografie"})[DAY]["gold_demografie"] == first + timedelta(minutes=5)


def test_concurrent_writers_all_land(root):
    errors = []

    def write(index: int) -> None:
        try:
            reports.write_report(DAY, f"extract_source{index}", {"run_id": f"r{index}"})
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {f"extract_source{i}" for i in range(8)} <= set(reports.read_reports(DAY))
    rows = DeltaTable(str(root / "lake" / "governance" / "run_reports")).to_pyarrow_table().num_rows
    assert rows == 8


def test_the_newest_report_on_each_table_comes_from_whichever_source_reported_it(root):
    reports.write_report(DAY, "silver_brp", {"stage": "silver", "tables": {"NATUURLIJKPERSOON": {"run": "brp"}}})
    reports.write_report(DAY + timedelta(days=1), "silver_gebieden", {"stage": "silver", "tables": {"BUURT": {"run": "g"}}})
    reports.write_report(DAY, "silver_gebieden", {"stage": "silver", "tables": {"BUURT": {"run": "old"}}})
    found = reports.newest_reports_covering("silver", ["NATUURLIJKPERSOON", "BUURT", "WIJK"])
    assert {table: (day, body["tables"][table]["run"]) for table, (day, body) in found.items()} == {
        "NATUURLIJKPERSOON": ("2026-03-10", "brp"), "BUURT": ("2026-03-11", "g")}
