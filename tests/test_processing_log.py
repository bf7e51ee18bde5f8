"""The verwerkingslog (Logboek Dataverwerkingen): one row per processing operation.

The Spark stages run through ``jobs.entrypoint.run_stage`` (what spark-submit and Databricks
run) on a small demo municipality extracted over real HTTP from the stand-ins; every stage
must leave one row with its activity's purpose and legal basis, what it read and wrote, and
data subjects only as pseudonyms.
"""
from __future__ import annotations

import io
import json
import threading
from contextlib import redirect_stdout
from datetime import date
from pathlib import Path

import pytest

from connectors import CONNECTORS, ExtractWindow
from demo_gemeente.dropzone import write_dropzone
from demo_gemeente.generator import DemoWorld
from ggm_lakehouse.bsn import is_valid_bsn
from ggm_lakehouse.cli import main as ggm
from ggm_lakehouse.config import dropzone_root, landing_root
from ggm_lakehouse.model.mappings import person_bronze_tables
from ggm_lakehouse.processing_log import (
    PSEUDONYM_TYPE,
    ProcessingLogError,
    load_register,
    log_location,
    processing_operation,
    read_processing_log,
    record_landed_batches,
    trace_context,
)
from ggm_lakehouse.pipeline import publish_share
from ggm_lakehouse.pseudonym import load_key, pseudonymise
from jobs.entrypoint import run_stage
from standins.server import StandinServers

DAY = date(2026, 3, 10)
RUN_ID = "scheduled__2026-03-10T00:00:00+00:00"
REGISTER_URI = "urn:nl:gemeente:9999:verwerkingsactiviteiten"
# Silver per source in reference order: BRP addresses refer to BAG, BAG addresses to the buurten.
# CBS brings the kerncijfers every area mart (inwoners_per_buurt too) carries as denominators.
SOURCES = ("gebieden", "bag", "brp", "cbs")
STAGE_RUNS = ("bronze", "silver_brp", "silver_bag", "silver_gebieden", "silver_cbs", "gold")
OPERATIONS = ("extract_brp", "extract_bag", "extract_gebieden", "extract_cbs", *STAGE_RUNS, "publish_share")
ACTIVITY = {"gold": "beleidsinformatie-sociaal-domein", "publish_share": "gegevensdeling-met-partners"}


@pytest.fixture(scope="module")
def world():
    return DemoWorld(120, seed=23)


@pytest.fixture(scope="module")
def stage_rows(spark, data_root, world):
    """Extract BRP, BAG, gebieden and CBS for one day, run bronze, silver (per source) and gold through the entry point.

    The extracts are logged as ``ggm_lakehouse.pipeline.extract`` logs them; ``publish_share`` logs itself.
    """
    muni = world.at(DAY)
    write_dropzone(muni, dropzone_root())
    window = ExtractWindow.for_day(DAY, RUN_ID)
    with StandinServers(world, as_of=DAY) as servers:
        configs = {
            "brp": {"base_url": servers.brp.url, "api_key": servers.brp.api_key},
            "bag": {"base_url": servers.bag.url, "api_key": servers.bag.api_key,
                    "woonplaats_ids": sorted(muni.woonplaatsen)},
            "gebieden": {},
            "cbs": {"base_url": servers.cbs.url, "table_id": servers.cbs.kerncijfers.table_ids(DAY)[-1],
                    "gemeentecode": muni.gemeentecode, "api_flavour": "v3-feed"},
        }
        for source, config in configs.items():
            with processing_operation(f"extract_{source}", logical_date=DAY, run_id=RUN_ID) as op:
                record_landed_batches(op, CONNECTORS[source](config).extract(window, landing_root()), person_bronze_tables())
    # Silver per source, as the per-source DAGs run it: only the sources gold needs are extracted here.
    reports = {"bronze": run_stage(spark, "bronze", DAY, RUN_ID)}
    for source in SOURCES:
        reports[f"silver_{source}"] = run_stage(spark, "silver", DAY, RUN_ID, source=source)
    reports["gold"] = run_stage(spark, "gold", DAY, RUN_ID)
    reports["publish_share"] = publish_share(DAY, RUN_ID)  # logs its own operation
    rows = {row["name"]: row for row in read_processing_log(DAY)}
    return {"rows": rows, "reports": reports}


def test_every_step_leaves_one_row_with_its_activity_purpose_and_legal_basis(stage_rows):
    rows = stage_rows["rows"]
    assert set(rows) == set(OPERATIONS)
    register = load_register()
    for name, row in rows.items():
        activity = register[ACTIVITY.get(name, "basisregistraties-bijhouden")]
        assert row["processing_activity_id"] == f"{REGISTER_URI}:{activity.id}"
        assert row["verwerkingsactiviteit"] == activity.naam
        assert row["doel"] == activity.doel and row["doel"]
        assert row["grondslag"] == activity.grondslag and "AVG" in row["grondslag"]
        assert row["bewaartermijn"] == activity.bewaartermijn
        assert row["status_code"] == "OK" and row["status_message"] is None
        assert row["start_time"] <= row["end_time"]
        assert row["logical_date"] == DAY and row["run_id"] == RUN_ID
        spark_systems = {"Apache Spark", "Delta Lake"} if name in STAGE_RUNS else set()
        assert {"ggm-lakehouse", *spark_systems} <= set(row["systemen"])
        assert row["resource_name"] == "ggm-lakehouse"


def test_stages_of_one_run_share_a_trace_under_the_run_span(stage_rows):
    rows = stage_rows["rows"].values()
    trace_id, run_span = trace_context(RUN_ID)
    assert {r["trace_id"] for r in rows} == {trace_id} and len(trace_id) == 32
    assert {r["parent_span_id"] for r in rows} == {run_span} and len(run_span) == 16
    assert len({r["span_id"] for r in rows}) == len(OPERATIONS) and all(len(r["span_id"]) == 16 for r in rows)


def test_reads_and_writes_come_from_the_stage_reports(stage_rows):
    rows, reports = stage_rows["rows"], stage_rows["reports"]
    extract = rows["extract_brp"]
    assert extract["gelezen"] == ["brp: POST /personen"]
    landed = dict(zip(extract["geschreven"], extract["rijen_geschreven"]))
    assert landed["landing.brp/personen"] == reports["bronze"]["tables"]["brp_personen"]["rows"]
    assert extract["betrokkenen"] == [] and extract["betrokkenen_aantal"] == landed["landing.brp/personen"]
    assert rows["extract_bag"]["betrokkenen_aantal"] is None  # addresses and buildings, no persons

    bronze = rows["bronze"]
    assert "landing.brp/personen" in bronze["gelezen"]
    written = dict(zip(bronze["geschreven"], bronze["rijen_geschreven"]))
    assert written["bronze.brp_personen"] == reports["bronze"]["tables"]["brp_personen"]["rows"] > 0
    # Bronze holds clear records: the log counts the persons and lists none.
    assert bronze["betrokkenen"] == [] and bronze["betrokkenen_aantal"] == written["bronze.brp_personen"]

    silver = rows["silver_brp"]
    assert silver["gelezen"] == ["bronze.brp_personen"]
    # NUMMERAANDUIDING reads BAG and looks up its buurt in the gebieden drop zone.
    assert {"bronze.bag_nummeraanduidingen", "bronze.gebieden_pc6hnr"} <= set(rows["silver_bag"]["gelezen"])
    written = dict(zip(silver["geschreven"], silver["rijen_geschreven"]))
    persons = reports["silver_brp"]["tables"]["NATUURLIJKPERSOON"]
    assert written["silver.natuurlijkpersoon"] == persons["new_versions"] + persons["closed"] > 0

    gold = rows["gold"]
    assert set(gold["gelezen"]) == {"silver.ingeschrevenpersoon", "silver.natuurlijkpersoon",
                                    "silver.nummeraanduiding", "silver.buurt", "silver.wijk", "silver.cbs_kerncijfers"}
    assert dict(zip(gold["geschreven"], gold["rijen_geschreven"])) == {
        "gold.inwoners_per_buurt": reports["gold"]["tables"]["inwoners_per_buurt"]["rows"]}
    assert gold["betrokkenen"] == []  # aggregated counts: no person is processed as an individual

    publish = rows["publish_share"]
    assert publish["gelezen"] == ["gold.inwoners_per_buurt"]
    assert publish["geschreven"] == ["share.gemeente_gold.demografie.inwoners_per_buurt"]
    assert publish["ontvangers"] == ["demo-partner"]  # ggd-regio's marts wait for departmental sources
    assert "Delta Sharing server" in publish["systemen"]


def test_silver_lists_the_changed_persons_as_pseudonyms_only(stage_rows, world):
    silver = stage_rows["rows"]["silver_brp"]
    residents = world.at(DAY).persons
    key = load_key()
    assert silver["betrokkenen_type"] == PSEUDONYM_TYPE
    assert silver["betrokkenen_aantal"] == len(silver["betrokkenen"])
    # First load: every person is new, so every person is a data subject of the operation.
    assert {pseudonymise(bsn, key) for bsn in residents} <= set(silver["betrokkenen"])


def test_no_bsn_appears_anywhere_in_the_log(stage_rows, world):
    bsns = set(world.at(DAY).persons)
    text = json.dumps([row for row in read_processing_log()], default=str)
    assert not any(bsn in text for bsn in bsns), "a clear BSN reached the verwerkingslog"
    # Nor any other nine-digit number that passes the elfproef.
    import re

    assert not [n for n in re.findall(r"(?<![0-9A-Za-z])\d{9}(?![0-9A-Za-z])", text) if is_valid_bsn(n)]


def test_a_bsn_offered_as_data_subject_is_refused(data_root, world):
    bsn = sorted(world.at(DAY).persons)[0]
    with pytest.raises(ProcessingLogError, match="never a BSN"):
        with processing_operation("publish_share", logical_date=DAY, run_id="run-refused") as op:
            op.betrokkenen([bsn])
    with pytest.raises(ProcessingLogError, match="never a BSN"):
        with processing_operation("publish_share", logical_date=DAY, run_id="run-refused-invalid") as op:
            op.betrokkenen(["123456789"])  # fails the elfproef, still a BSN as far as the log is concerned
    # The refused operation is still logged, as an error, and without the BSN.
    [row] = [r for r in read_processing_log(DAY) if r["run_id"] == "run-refused"]
    assert row["status_code"] == "ERROR" and row["status_message"] == "ProcessingLogError"
    assert bsn not in json.dumps(row, default=str)


def test_a_failing_operation_is_logged_as_error_and_the_error_propagates(data_root):
    with pytest.raises(RuntimeError, match="share missing"):
        with processing_operation("publish_share", logical_date=DAY, run_id="run-failing") as op:
            op.read("gold.inwoners_per_buurt")
            raise RuntimeError("share missing")
    [row] = [r for r in read_processing_log(DAY) if r["run_id"] == "run-failing"]
    assert row["status_code"] == "ERROR"
    # The class only: a message may quote the data that was processed.
    assert row["status_message"] == "RuntimeError"
    assert row["verwerkingsactiviteit"] == "Gegevensdeling met partners"
    assert row["gelezen"] == ["gold.inwoners_per_buurt"]


def test_concurrent_writers_all_land_in_the_log(tmp_path, monkeypatch):
    """Airflow tasks and Spark drivers log side by side; every row must survive, also on the first commit."""
    monkeypatch.setenv("GGM_LAKE_ROOT", str(tmp_path / "lake"))
    errors = []

    def log_one(index: int) -> None:
        try:
            with processing_operation(f"extract_source{index}", activiteit="basisregistraties-bijhouden",
                                      logical_date=DAY, run_id="run-concurrent") as op:
                op.wrote(f"landing.source{index}/dataset", index)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=log_one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(r["name"] for r in read_processing_log(DAY)) == [f"extract_source{i}" for i in range(4)]
    assert log_location() == tmp_path / "lake" / "governance" / "verwerkingslog"


def test_an_operation_in_two_activities_is_a_register_error(tmp_path, monkeypatch):
    register = tmp_path / "register.yaml"
    register.write_text(
        "register_uri: urn:test\nactiviteiten:\n"
        "  - {id: a, naam: A, doel: d, grondslag: g, bewaartermijn: b, operaties: [gold]}\n"
        "  - {id: b, naam: B, doel: d, grondslag: g, bewaartermijn: b, operaties: [gold]}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("GGM_VERWERKINGSACTIVITEITEN", str(register))
    with pytest.raises(ProcessingLogError, match="'gold' is in 'a' and 'b'"):
        load_register()


def test_ggm_processing_log_summarises_a_day(stage_rows):
    out = io.StringIO()
    with redirect_stdout(out):
        assert ggm(["processing-log", "--date", DAY.isoformat(), "--json"]) == 0
    summary = json.loads(out.getvalue())
    assert summary["logical_date"] == DAY.isoformat()
    activities = summary["activities"]
    basis = activities[f"{REGISTER_URI}:basisregistraties-bijhouden"]
    assert basis["doel"] and basis["grondslag"]
    assert set(OPERATIONS) - set(ACTIVITY) == {op["name"] for op in basis["operaties"]}
    beleid = activities[f"{REGISTER_URI}:beleidsinformatie-sociaal-domein"]
    [gold] = [op for op in beleid["operaties"] if op["run_id"] == RUN_ID]
    assert gold["status"] == "OK" and "gold.inwoners_per_buurt" in gold["geschreven"]
    sharing = activities[f"{REGISTER_URI}:gegevensdeling-met-partners"]
    published = [op for op in sharing["operaties"] if op["run_id"] == RUN_ID]
    assert [op["ontvangers"] for op in published] == [["demo-partner"]]
    assert Path(summary["location"]).name == "verwerkingslog"


def test_a_rerun_of_an_unchanged_day_skips_silver_and_gold_and_a_changed_input_does_not(spark, stage_rows, monkeypatch):
    from ggm_lakehouse.lake import LakeTable

    silver_tables = [LakeTable("silver", t) for t in ("BUURT", "WIJK")]
    versions = [t.version(spark) for t in silver_tables]
    first = stage_rows["reports"]["silver_gebieden"]

    again = run_stage(spark, "silver", DAY, "manual__rerun", source="gebieden")
    assert again["unchanged_since"] == RUN_ID and again["run_id"] == "manual__rerun"
    assert set(again["tables"]) == set(first["tables"])
    assert all(e["new_versions"] == 0 and e["closed"] == 0 and not e["written"] for e in again["tables"].values())
    assert again["tables"]["BUURT"]["total_rows"] == first["tables"]["BUURT"]["total_rows"]

    # Any new version of an input makes the stage look again, even one that changes no record.
    bronze = LakeTable("bronze", "gebieden_wijkbuurtindeling")
    spark.sql(f"ALTER TABLE {bronze.sql_name} SET TBLPROPERTIES ('ggm.test.touched' = 'true')")
    looked = run_stage(spark, "silver", DAY, "manual__touched", source="gebieden")
    assert "unchanged_since" not in looked
    assert all(not e["written"] for e in looked["tables"].values())
    assert run_stage(spark, "silver", DAY, "manual__again", source="gebieden")["unchanged_since"] == "manual__touched"
    assert [t.version(spark) for t in silver_tables] == versions

    gold_versions = LakeTable("gold", "inwoners_per_buurt").version(spark)
    assert run_stage(spark, "gold", DAY, "manual__rerun")["unchanged_since"] == RUN_ID
    monkeypatch.setenv("GGM_SKIP_UNCHANGED", "0")
    full = run_stage(spark, "gold", DAY, "manual__full")
    assert "unchanged_since" not in full and full["tables"]["inwoners_per_buurt"]["written"] is False
    assert LakeTable("gold", "inwoners_per_buurt").version(spark) == gold_versions
