"""Bewaartermijnen enforced: what is older than a term is gone from landing, bronze, quarantine and time travel.

Three days of two small sources with BSNs land and go to bronze: BRP persons of the demo
municipality (with one rejected person a day, so quarantine fills too, and two persons who leave)
and the HR export through its drop zone (whose archived CSV files hold the employees' BSNs). The
test register gives BRP 30 days everywhere and HR 30 days of landing but 60 of bronze; as of
2026-03-12 the first two days expire for BRP and for HR's landing, and only the first day of HR's
bronze. After ``apply``:

* no BSN that only the expired days held can be read back: not from landing or drop-zone files,
  not from bronze or quarantine, not from any earlier Delta version (every version in the table's
  history is read with VERSION AS OF), not from the data files on disk;
* the days within the term are intact, silver history and gold are unchanged;
* ``plan`` (Python and ``ggm retention plan --json``) said exactly what ``apply`` did, each purge is
  a row of the verwerkingslog, and a second ``apply`` changes nothing;
* a term below the safety minimum is refused before anything is touched.

The last test declares a silver term: only the SCD2 versions closed before its cutoff go.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
from datetime import date, datetime, time
from pathlib import Path

import pytest
import yaml

from connectors.base import ExtractWindow
from connectors.exports import EXPORT_CONNECTORS
from demo_gemeente import exports as demo_exports
from demo_gemeente.generator import DemoWorld
from ggm_lakehouse import retention
from ggm_lakehouse.bsn import complete_bsn
from ggm_lakehouse.config import dropzone_root, lake_root, landing_root, project_root
from ggm_lakehouse.lake import LakeTable
from ggm_lakehouse.landing import BatchWriter
from ggm_lakehouse.spark import ensure_active
from jobs import bronze, silver
from standins.brp import render_persoon

DAYS = (date(2026, 1, 10), date(2026, 1, 20), date(2026, 3, 10))
AS_OF = date(2026, 3, 12)
CUTOFF = date(2026, 2, 10)  # P30D before AS_OF: the first two days expire
HR_BRONZE_CUTOFF = date(2026, 1, 11)  # P60D: only the first day's HR bronze expires
BRP = "basisregistraties-bijhouden"
HR = "personeelsadministratie"
TERMS = {BRP: {"landing": "P30D", "bronze": "P30D", "quarantaine": "P30D"},
         HR: {"landing": "P30D", "bronze": "P60D", "quarantaine": "P60D"}}
PERSONS = LakeTable("silver", "NATUURLIJKPERSOON")
QUARANTINE = LakeTable("quarantine", "silver_rejects")
PROBE = LakeTable("gold", "retention_probe")


def write_register(folder: Path, terms: dict[str, dict[str, str]], name: str = "register.yaml") -> Path:
    """The project's register with other ``bewaartermijnen`` for the named activities."""
    doc = yaml.safe_load((project_root() / "config" / "verwerkingsactiviteiten.yaml").read_text(encoding="utf-8"))
    for activity in doc["activiteiten"]:
        if activity["id"] in terms:
            activity["bewaartermijnen"] = terms[activity["id"]]
    path = folder / name
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def register(tmp_path_factory, data_root):
    path = write_register(tmp_path_factory.mktemp("register"), TERMS)
    patcher = pytest.MonkeyPatch()
    patcher.setenv("GGM_VERWERKINGSACTIVITEITEN", str(path))
    patcher.delenv(retention.MINIMUM_ENV, raising=False)
    yield path
    patcher.undo()


# --------------------------------------------------------------------------- the data


def _fresh_bsn(n: int, taken: set[str]) -> str:
    """A valid BSN no demo person or employee has."""
    while True:
        bsn = complete_bsn(f"{11_111_000 + n:08d}")
        if bsn and bsn not in taken:
            return bsn
        n += 1


def _land_brp(day: date, people: list[dict], run_id: str) -> None:
    """The day's BRP batch as the connector lands it: ``POST /personen`` responses of 20 persons each."""
    window = ExtractWindow.for_day(day, run_id)
    with BatchWriter(landing_root(), "brp", "personen", window, endpoint="POST /personen", record_path="personen") as batch:
        for start in range(0, len(people), 20):
            body = json.dumps({"type": "RaadpleegMetBurgerservicenummer", "personen": people[start:start + 20]})
            batch.add_part(body.encode(), request={"method": "POST", "url": "test://personen"}, status=200)


def _brp_days(world: DemoWorld) -> tuple[dict[date, list[dict]], dict[str, str]]:
    """Per day the persons BRP returns, and two leavers: A is gone from day 2 on, B from day 3."""
    rendered = {day: {p.bsn: render_persoon(p, world.at(day), day) for p in world.at(day).residents()} for day in DAYS}
    common = sorted(set.intersection(*(set(people) for people in rendered.values())))

    def named_by_others(bsn: str, days) -> bool:
        # A relative's record (partner, parent, child) names the BSN too, and would keep it on later days.
        return any(bsn in json.dumps([r for b, r in rendered[d].items() if b != bsn]) for d in days)

    leaver_a = next(b for b in common if not named_by_others(b, DAYS[1:]))
    leaver_b = next(b for b in common if b != leaver_a and not named_by_others(b, DAYS[2:]))
    gone = {DAYS[0]: set(), DAYS[1]: {leaver_a}, DAYS[2]: {leaver_a, leaver_b}}
    people = {day: [r for b, r in sorted(rendered[day].items()) if b not in gone[day]] for day in DAYS}
    return people, {"A": leaver_a, "B": leaver_b}


def _hr_bsns(world: DemoWorld, day: date) -> set[str]:
    """The BSNs in the day's HR export (the contract keeps them out of landing; the archived CSV has them)."""
    roster = demo_exports.medewerkers(world.at(day).population or len(world.at(day).residents()))
    return {m.bsn for m in demo_exports.hr_snapshot(roster, day)}


@pytest.fixture(scope="module")
def lake(spark, data_root, register):
    return build_lake(spark)


def build_lake(spark) -> dict:
    """Three days of BRP and HR landed and in bronze, NATUURLIJKPERSOON in silver, a gold table built from it."""
    world = DemoWorld(60, seed=7)
    people, leavers = _brp_days(world)
    hr = {day: _hr_bsns(world, day) for day in DAYS}
    taken = {p.bsn for p in world.at(DAYS[-1]).persons.values()} | set().union(*hr.values())
    rejected = {}
    for index, day in enumerate(DAYS):
        run_id = f"retention-{day}"
        # One person a day whose record is rejected (unknown geslacht): quarantine keeps it with its BSN.
        rejected[day] = _fresh_bsn(index * 97, taken)
        bad = {"burgerservicenummer": rejected[day], "naam": {"geslachtsnaam": "Verlopen"}, "geslacht": {"code": "X"}}
        _land_brp(day, people[day] + [bad], run_id)
        demo_exports.write_hr_deliveries(world.at(day), dropzone_root(), day, delivery_weekday=None)
        EXPORT_CONNECTORS["hr"]({}).extract(ExtractWindow.for_day(day, run_id), landing_root())
        bronze.run(spark, day, run_id)
        silver.run(spark, day, run_id, tables=["NATUURLIJKPERSOON"])
    current = PERSONS.read(spark).where("DWH_DATUMTIJDGELDIGTOTMET IS NULL")
    PROBE.save(spark, current.groupBy("GESLACHTSAANDUIDING").count().write.format("delta").mode("overwrite"))
    expired_only = {rejected[DAYS[0]], rejected[DAYS[1]], leavers["A"], leavers["B"]}
    expired_only |= (hr[DAYS[0]] | hr[DAYS[1]]) - hr[DAYS[2]]
    kept_brp = {rejected[DAYS[2]]} | {p["burgerservicenummer"] for p in people[DAYS[2]]}
    return {"leavers": leavers, "rejected": rejected, "expired_only": expired_only, "kept_brp": kept_brp,
            "kept_hr": hr[DAYS[2]]}


# --------------------------------------------------------------------------- looking at the lake


def _bronze_tables() -> list[LakeTable]:
    return [LakeTable("bronze", p.name) for p in sorted((lake_root() / "bronze").iterdir())]


def _files(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _sorted_rows(frame) -> list[tuple]:
    return sorted((tuple(row) for row in frame.collect()), key=repr)


def _snapshot(spark) -> dict:
    """Versions of every Delta table, the content of silver, gold and the kept days, every landing and drop-zone file."""
    tables = _bronze_tables() + [QUARANTINE, PERSONS, PROBE]
    return {
        "versions": {t.location: t.last_commit(spark)[0] for t in tables},
        "silver": _sorted_rows(PERSONS.read(spark)),
        "gold": _sorted_rows(PROBE.read(spark)),
        "landing": _files(landing_root()),
        "dropzone": _files(dropzone_root()),
        "bronze_kept": {t.table: _sorted_rows(t.read(spark).where(f"_logical_date >= DATE'{CUTOFF}'"))
                        for t in _bronze_tables()},
        "quarantine_kept": _sorted_rows(QUARANTINE.read(spark).where(f"logical_date >= DATE'{CUTOFF}'")),
    }


def _is_gone(exc: Exception) -> bool:
    """The error Spark gives for a version whose data files VACUUM deleted."""
    return any(code in str(exc) for code in ("FILE_NOT_EXIST", "FileNotFound", "DELTA_FILE_NOT_FOUND"))


def _every_version(spark, table: LakeTable) -> dict[int, list | None]:
    """Every version in the table's history read with VERSION AS OF: its rows, or None when its files are gone."""
    versions = {}
    for (version,) in spark.sql(f"DESCRIBE HISTORY {table.sql_name}").select("version").collect():
        try:
            versions[version] = spark.sql(f"SELECT * FROM {table.sql_name} VERSION AS OF {version}").collect()
        except Exception as exc:  # noqa: BLE001 - only a deleted data file is an acceptable failure
            assert _is_gone(exc), f"{table.location} version {version}: {exc}"
            versions[version] = None
    return versions


def _data_file_text(table: LakeTable) -> str:
    """Every value of every Parquet data file still on disk in the table's folder, as text."""
    import pyarrow.parquet as pq

    files = [p for p in Path(table.location).rglob("*.parquet") if "_delta_log" not in p.parts]
    return "\n".join(json.dumps(pq.ParquetFile(p).read().to_pylist(), default=str) for p in files)


def _readable_text(spark) -> str:
    """Everything landing, the drop zones, bronze and quarantine hold now, as text."""
    files = [p.read_bytes().decode("utf-8", "replace") for root in (landing_root(), dropzone_root())
             for p in root.rglob("*") if p.is_file()]
    tables = [json.dumps([r.asDict() for r in t.read(spark).collect()], default=str) for t in _bronze_tables() + [QUARANTINE]]
    return "\n".join(files + tables)


@pytest.fixture(scope="module")
def planned(spark, lake):
    """The plan (Python and ``ggm retention plan --json``) and the lake just before applying it."""
    from ggm_lakehouse.cli import main as ggm

    before = _snapshot(spark)
    before["readable"] = _readable_text(spark)
    plan = retention.plan(spark, AS_OF).as_dict()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = ggm(["retention", "plan", "--as-of", AS_OF.isoformat(), "--json"])
    ensure_active(spark)  # the command's own session was the active one until it stopped
    return {"before": before, "plan": plan, "cli": (status, out.getvalue())}


@pytest.fixture(scope="module")
def applied(spark, planned):
    progress: list[str] = []
    report = retention.apply(spark, AS_OF, run_id="retention-test", progress=progress.append)
    return {"report": report, "progress": progress, "after": _snapshot(spark)}


def _expired(entries: list[dict], rows: str = "rows", files: str = "files") -> dict[tuple[str, str], tuple]:
    return {(e["target"], e["activity"]): (e[rows], e[files]) for e in entries if e[rows] or e[files]}


# --------------------------------------------------------------------------- plan


def test_plan_lists_per_table_and_folder_what_the_terms_expire(spark, planned):
    plan = planned["plan"]
    items = {(i["target"], i["activity"]): i for i in plan["items"]}
    brp = items["bronze.brp_personen", BRP]
    assert (brp["term"], brp["cutoff"], brp["oldest"]) == ("P30D", CUTOFF.isoformat(), DAYS[0].isoformat())
    persons = LakeTable("bronze", "brp_personen").read(spark)
    assert brp["rows"] == persons.where(f"_logical_date < DATE'{CUTOFF}'").count() > 0
    hr = items["bronze.hr_medewerkers", HR]
    assert (hr["term"], hr["cutoff"], hr["oldest"]) == ("P60D", HR_BRONZE_CUTOFF.isoformat(), DAYS[0].isoformat())
    employees = LakeTable("bronze", "hr_medewerkers").read(spark)
    assert hr["rows"] == employees.where(f"_logical_date = DATE'{DAYS[0]}'").count() > 0
    # Landing: the batch folders of the two expired days; the rows their manifests count are bronze's.
    landing = items["landing.brp/personen", BRP]
    expired_dirs = [landing_root() / "brp" / "personen" / f"logical_date={day}" for day in DAYS[:2]]
    assert landing["files"] == sum(1 for d in expired_dirs for p in d.rglob("*") if p.is_file())
    assert landing["rows"] == brp["rows"]
    # The drop zone's delivered files: day 1's export archived, day 2's identical one quarantined as a duplicate.
    for kind in ("archive", "quarantine"):
        zone = items[f"dropzone.hr/{kind}", HR]
        expired_files = [p for day in DAYS[:2] for p in (dropzone_root() / "hr" / kind / day.isoformat()).glob("*")]
        assert zone["files"] == len(expired_files) > 0 and zone["rows"] is None
    assert items["quarantine.silver_rejects", BRP]["rows"] == 2  # the rejected person of each expired day
    # Nothing of silver or gold: no silver term is declared, gold is never purged.
    assert {i["layer"] for i in plan["items"]} == {"landing", "bronze", "quarantaine"}
    assert set(plan["vacuum"]) == {"bronze.brp_personen", "bronze.hr_medewerkers", "bronze.hr_dropzone_manifest",
                                   "quarantine.silver_rejects"}
    assert plan["totals"]["rows"] == sum(i["rows"] or 0 for i in plan["items"])


def test_cli_plan_json_is_the_plan(planned):
    status, stdout = planned["cli"]
    assert status == 0
    assert json.loads(stdout) == json.loads(json.dumps(planned["plan"]))


# --------------------------------------------------------------------------- apply


def test_apply_does_exactly_what_the_plan_showed(planned, applied):
    report = applied["report"]
    assert _expired(report["purged"], "rows_deleted", "files_removed") == _expired(planned["plan"]["items"])
    assert report["vacuumed"] == planned["plan"]["vacuum"]
    assert any("VACUUM removed" in line for line in applied["progress"])
    assert any(line.startswith("bronze.brp_personen: deleted") for line in applied["progress"])


def test_no_expired_bsn_can_be_read_back_from_any_layer_or_version(spark, lake, planned, applied):
    expired, kept = lake["expired_only"], lake["kept_brp"] | lake["kept_hr"]
    assert expired and not expired & kept
    assert {bsn for bsn in expired if bsn not in planned["before"]["readable"]} == set(), "the lake held them before"
    # Landing batches and drop-zone deliveries: the expired days' folders are gone, nothing else names them.
    raw = "\n".join(p.read_bytes().decode("utf-8", "replace")
                    for root in (landing_root(), dropzone_root()) for p in root.rglob("*") if p.is_file())
    assert not {bsn for bsn in expired if bsn in raw}
    assert not list((landing_root() / "brp" / "personen").glob(f"logical_date={DAYS[0]}"))
    assert sorted(p.name for p in (dropzone_root() / "hr" / "archive").iterdir()) == [DAYS[2].isoformat()]
    assert not list((dropzone_root() / "hr" / "quarantine").iterdir())
    cutoffs = {"brp": CUTOFF, "hr": HR_BRONZE_CUTOFF}
    for table in _bronze_tables() + [QUARANTINE]:
        date_column = "logical_date" if table is QUARANTINE else "_logical_date"
        versions = _every_version(spark, table)
        readable = {v: rows for v, rows in versions.items() if rows is not None}
        text = json.dumps([[r.asDict() for r in rows] for rows in readable.values()], default=str)
        assert not {bsn for bsn in expired if bsn in text}, table.location
        assert not {bsn for bsn in expired if bsn in _data_file_text(table)}, table.location
        cutoff = CUTOFF if table is QUARANTINE else cutoffs[table.table.split("_")[0]]
        assert all(r[date_column] >= cutoff for rows in readable.values() for r in rows), table.location
        # The versions that held expired rows exist in the history but can no longer be read.
        assert versions[0] is None, f"{table.location}: its first version can still be read"
    # TIMESTAMP AS OF is the same history by time: the first version's moment cannot be read either.
    # (the moment as the server spells it, in the session's time zone, as TIMESTAMP AS OF reads it)
    history = spark.sql(f"DESCRIBE HISTORY {QUARANTINE.sql_name}")
    first = history.orderBy("version").selectExpr("CAST(timestamp AS STRING) AS moment").first()["moment"]
    with pytest.raises(Exception) as failure:
        spark.sql(f"SELECT * FROM {QUARANTINE.sql_name} TIMESTAMP AS OF '{first}'").collect()
    assert _is_gone(failure.value)
    # The Delta log keeps no whole BSN either (per-file statistics keep only a 32-character prefix of payload).
    log_text = "\n".join(p.read_bytes().decode("utf-8", "replace") for t in _bronze_tables() + [QUARANTINE]
                         for p in (Path(t.location) / "_delta_log").iterdir() if p.is_file())
    assert not {bsn for bsn in expired if bsn in log_text}


def test_the_days_within_their_term_are_intact(spark, lake, planned, applied):
    before, after = planned["before"], applied["after"]
    assert after["bronze_kept"] == before["bronze_kept"]
    assert after["quarantine_kept"] == before["quarantine_kept"] and after["quarantine_kept"]
    day3 = f"logical_date={DAYS[2]}"
    assert {k: v for k, v in after["landing"].items() if day3 in k} == {k: v for k, v in before["landing"].items() if day3 in k}
    # HR's bronze keeps its second day (60 days), though its landing did not (30 days). (Day 2's export
    # repeated day 1's, so only the drop-zone manifest, which records the duplicate, has a row that day.)
    manifest = LakeTable("bronze", "hr_dropzone_manifest").read(spark)
    assert {r[0] for r in manifest.select("_logical_date").distinct().collect()} == {DAYS[1], DAYS[2]}
    # Every BSN of the kept day is still there: in bronze (BRP) and in the archived export (HR).
    text = json.dumps([r.asDict() for r in LakeTable("bronze", "brp_personen").read(spark).collect()], default=str)
    assert {bsn for bsn in lake["kept_brp"] if bsn not in text} == set()
    archived = "".join(p.read_text(encoding="utf-8-sig") for p in (dropzone_root() / "hr" / "archive").rglob("*.csv"))
    assert lake["kept_hr"] and {bsn for bsn in lake["kept_hr"] if bsn not in archived} == set()


def test_silver_history_and_gold_are_unchanged(planned, applied):
    before, after = planned["before"], applied["after"]
    assert after["silver"] == before["silver"] and after["gold"] == before["gold"]
    for location in (PERSONS.location, PROBE.location):
        assert after["versions"][location] == before["versions"][location]


def test_each_purge_is_a_row_of_the_verwerkingslog(applied):
    from ggm_lakehouse.processing_log import read_processing_log

    rows = [r for r in read_processing_log(AS_OF) if r["name"].startswith("retention_")]
    logged = {(r["verwijderd"][0], r["processing_activity_id"].rsplit(":", 1)[1]): r for r in rows}
    purged = applied["report"]["purged"]
    assert len(rows) == len(purged) and set(logged) == {(e["target"], e["activity"]) for e in purged}
    for entry in purged:
        row = logged[entry["target"], entry["activity"]]
        assert row["status_code"] == "OK" and row["name"] == f"retention_{entry['layer']}"
        assert row["rijen_verwijderd"] == [entry["rows_deleted"]]
        assert row["bestanden_verwijderd"] == [entry["files_removed"]]
        assert row["verwijderd_tot"] == [date.fromisoformat(entry["cutoff"])]
        assert row["bewaartermijn_toegepast"] == [f"{entry['layer']} {entry['term']}"]


def test_a_second_apply_changes_nothing(spark, applied):
    """Through the retention DAG's task body, as Airflow's operator calls it with its session."""
    from ggm_lakehouse.reports import report_path
    from ggm_lakehouse.spark_target import run_retention_task

    assert run_retention_task(AS_OF.isoformat(), "scheduled__retention", spark=spark) == {
        "as_of": AS_OF.isoformat(), "targets": 0, "rows": 0, "files": 0, "vacuumed_files": 0}
    again = json.loads(report_path(AS_OF, "retention").read_text(encoding="utf-8"))
    assert again["run_id"] == "scheduled__retention" and again["purged"] == [] and again["vacuumed"] == {}
    assert _snapshot(spark)["versions"] == applied["after"]["versions"]
    assert _files(landing_root()) == applied["after"]["landing"]
    assert retention.plan(spark, AS_OF).as_dict()["totals"] == {"targets": 0, "rows": 0, "files": 0}


# --------------------------------------------------------------------------- refusals and validation


def test_a_term_below_the_safety_minimum_is_refused_before_anything_is_touched(spark, applied, tmp_path, capsys):
    from ggm_lakehouse.cli import main as ggm

    short = write_register(tmp_path, {BRP: {"landing": "P30D", "bronze": "P3D"}})
    versions = _snapshot(spark)["versions"]
    with pytest.raises(retention.RetentionError, match=r"shorter than the safety minimum P14D.*bronze P3D"):
        retention.apply(spark, date(2026, 6, 1), policy=retention.load_policy(short))
    assert ggm(["retention", "apply", "--register", str(short), "--as-of", "2026-06-01"]) == 2
    assert "basisregistraties-bijhouden: bronze P3D" in capsys.readouterr().err
    assert _snapshot(spark)["versions"] == versions
    ensure_active(spark)


def test_the_register_terms_are_validated(tmp_path, monkeypatch):
    policy = retention.load_policy(project_root() / "config" / "verwerkingsactiviteiten.yaml")
    assert policy.minimum.text == "P14D" and policy.term(BRP, "bronze").text == "P1Y"
    assert policy.term("gegevensdeling-met-partners", "bronze") is None
    policy.check(AS_OF)
    with pytest.raises(retention.RetentionError, match=r"bewaartermijnen\.gold: unknown key 'gold'"):
        retention.load_policy(write_register(tmp_path, {BRP: {"gold": "P1Y"}}, "gold.yaml"))
    with pytest.raises(retention.RetentionError, match=r"bewaartermijnen\.bronze: must be an ISO 8601 duration"):
        retention.load_policy(write_register(tmp_path, {BRP: {"bronze": "1 jaar"}}, "words.yaml"))
    monkeypatch.setenv(retention.MINIMUM_ENV, "P2Y")
    with pytest.raises(retention.RetentionError, match="minimum P2Y"):
        retention.load_policy(project_root() / "config" / "verwerkingsactiviteiten.yaml").check(AS_OF)


# --------------------------------------------------------------------------- silver (last: it changes silver)


def test_a_silver_term_purges_only_versions_closed_before_its_cutoff(spark, lake, applied, tmp_path, monkeypatch):
    from ggm_lakehouse.pseudonym import load_key, pseudonymise

    monkeypatch.setenv("GGM_VERWERKINGSACTIVITEITEN", str(write_register(tmp_path, {BRP: {"silver": "P30D"}})))
    bound = datetime.combine(CUTOFF, time.min)
    rows = PERSONS.read(spark).collect()
    closed_before = [r for r in rows if r["DWH_DATUMTIJDGELDIGTOTMET"] and r["DWH_DATUMTIJDGELDIGTOTMET"] < bound]
    assert closed_before, "leaver A's version closed on day 2 and must be there to purge"
    plan = retention.plan(spark, AS_OF).as_dict()
    assert {key: rows for key, (rows, _) in _expired(plan["items"]).items()} == {
        ("silver.natuurlijkpersoon", BRP): len(closed_before)}
    report = retention.apply(spark, AS_OF, run_id="retention-silver")
    assert [(e["target"], e["rows_deleted"]) for e in report["purged"]] == [("silver.natuurlijkpersoon", len(closed_before))]
    remaining = PERSONS.read(spark).collect()
    assert sorted(map(repr, remaining)) == sorted(repr(r) for r in rows if r not in closed_before)
    stored = {r["BURGERSERVICENUMMER"] for r in remaining}
    assert pseudonymise(lake["leavers"]["A"], load_key()) not in stored  # closed 2026-01-20: purged
    assert pseudonymise(lake["leavers"]["B"], load_key()) in stored  # closed 2026-03-10: within the term
    # No version of the history that can still be read holds leaver A at all, open or closed.
    readable = [rows for rows in _every_version(spark, PERSONS).values() if rows is not None]
    assert not any(r["BURGERSERVICENUMMER"] == pseudonymise(lake["leavers"]["A"], load_key()) for v in readable for r in v)


def test_a_verwerkingslog_written_before_the_retention_columns_gains_them(tmp_path, register):
    """Existing logs were written without ``verwijderd`` and its companions: the next append merges them in."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from ggm_lakehouse import processing_log

    location = tmp_path / "verwerkingslog"
    purge_columns = {"verwijderd", "rijen_verwijderd", "bestanden_verwijderd", "verwijderd_tot", "bewaartermijn_toegepast"}
    old = pa.schema([f for f in processing_log._schema() if f.name not in purge_columns])
    with processing_log.processing_operation("bronze_brp", logical_date=DAYS[0], run_id="old") as op:
        op.wrote("bronze.brp_personen", 3)
    [written] = [r for r in processing_log.read_processing_log(DAYS[0]) if r["run_id"] == "old"]
    write_deltalake(str(location), pa.Table.from_pylist([{k: written[k] for k in old.names}], schema=old),
                    partition_by=["logical_date"])
    op = processing_log.ProcessingOperation("retention_bronze", processing_log.activity_for(BRP), AS_OF, "new",
                                            trace_id="0" * 32, parent_span_id=None)
    op.purged("bronze.brp_personen", 12, 2, CUTOFF, "bronze P30D")
    processing_log.append_records([op.record("OK", None, datetime.now().astimezone())], location)
    rows = {r["run_id"]: r for r in processing_log.read_processing_log(location=location)}
    assert rows["old"]["verwijderd"] is None and rows["old"]["rijen_geschreven"] == [3]
    assert (rows["new"]["verwijderd"], rows["new"]["rijen_verwijderd"], rows["new"]["verwijderd_tot"]) == (
        ["bronze.brp_personen"], [12], [CUTOFF])
    summary = processing_log.summarise(AS_OF, location)
    [operation] = summary["activities"][processing_log.activity_for(BRP).uri]["operaties"]
    assert operation["verwijderd"] == {"bronze.brp_personen": {"rijen": 12, "bestanden": 2, "tot": CUTOFF.isoformat(),
                                                               "termijn": "bronze P30D"}}
