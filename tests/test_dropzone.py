"""Drop-zone framework (connectors/dropzone.py) on real files: landing, archive, quarantine, reruns.

The framework is under test, so the source here is a tiny JSON-lines toy format defined
in this file: a first line ``#TOY``, then one JSON object per line (one unit, identity =
its ``id``). A line that is not JSON is a unit rejection; ``{"fatal": ...}`` and a missing
header reject the whole file.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import tracemalloc
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Iterator

import pytest

from connectors.base import ExtractWindow
from connectors.dropzone import (
    MANIFEST_DATASET,
    DropzoneConnector,
    FileRejected,
    ParsedUnit,
    Rejection,
    dropzone_config_schema,
    file_date,
)
from connectors.errors import SourceConfigError
from ggm_lakehouse.landing import BatchResult, iter_batch_records
from ggm_lakehouse.pipeline import connector_from_connection

DAY1 = date(2026, 3, 1)
DAY2 = date(2026, 3, 2)


class ToyConnector(DropzoneConnector):
    """JSON-lines toy source with two datasets and a source-specific duplicate rule."""

    name: ClassVar[str] = "toy"
    datasets: ClassVar[tuple[str, ...]] = ("regels", "bijlagen")
    file_patterns: ClassVar[tuple[str, ...]] = ("toy_*.jsonl",)
    duplicate_rule: ClassVar[str] = "duplicate_regel"
    config_schema: ClassVar[dict[str, Any]] = dropzone_config_schema({"afdeling": {"type": "string"}})

    def parse_file(self, path: Path) -> Iterator[ParsedUnit | Rejection]:
        with open(path, encoding="utf-8") as handle:
            header = handle.readline()
            if header.strip() != "#TOY":
                raise FileRejected("not_toy", "first line is not the #TOY header", "line 1")
            for number, line in enumerate(handle, start=2):
                try:
                    record = json.loads(line)
                except ValueError:
                    yield Rejection(path.name, f"line {number}", "bad_json", "line is not a JSON object")
                    continue
                if "fatal" in record:
                    raise FileRejected("truncated", record["fatal"], f"line {number}")
                records = {"regels": [record]}
                if "bijlage" in record:
                    records["bijlagen"] = [{"id": record["id"], "bijlage": record["bijlage"]}]
                yield ParsedUnit(f"line {number}", records, identity=record.get("id"))


class CrashingToyConnector(ToyConnector):
    """Simulates the worker dying mid-run (not an Exception, so the framework must not absorb it)."""

    def parse_file(self, path: Path) -> Iterator[ParsedUnit | Rejection]:
        for item in super().parse_file(path):
            yield item
            if path.name.startswith("toy_b"):
                raise KeyboardInterrupt("worker killed")


@pytest.fixture
def zone(tmp_path: Path) -> Path:
    path = tmp_path / "dropzone" / "toy"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    return tmp_path / "landing"


def deliver(zone: Path, name: str, *lines: Any, header: str = "#TOY", mtime: int = 1_772_000_000) -> Path:
    """Write a delivery the way a departmental system would (then set its arrival mtime)."""
    body = header + "\n" + "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path = zone / name
    path.write_text(body, encoding="utf-8")
    os.utime(path, (mtime, mtime))
    return path


def run(connector: DropzoneConnector, landing: Path, day: date, run_id: str | None = None) -> dict[str, BatchResult]:
    return {b.dataset: b for b in connector.extract(ExtractWindow.for_day(day, run_id), landing)}


def records(batch: BatchResult) -> list[dict]:
    return list(iter_batch_records(batch))


def zone_manifest(zone: Path, day: date) -> dict:
    return json.loads((zone / "_manifest" / f"{day.isoformat()}.json").read_text(encoding="utf-8"))


def entry(manifest: dict, name: str) -> dict:
    (found,) = [e for e in manifest["files"] if e["file"] == name]
    return found


def test_accepted_file_lands_is_archived_and_manifest_records_it(zone: Path, landing: Path) -> None:
    path = deliver(zone, "toy_a_20260301.jsonl", {"id": "r1", "bedrag": 10}, {"id": "r2", "bijlage": "x.pdf"})
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    size = path.stat().st_size
    connector = ToyConnector({"dropzone_dir": str(zone)})

    batches = run(connector, landing, DAY1)

    assert list(batches) == ["regels", "bijlagen", MANIFEST_DATASET]
    assert records(batches["regels"]) == [{"id": "r1", "bedrag": 10}, {"id": "r2", "bijlage": "x.pdf"}]
    assert records(batches["bijlagen"]) == [{"id": "r2", "bijlage": "x.pdf"}]
    (part,) = batches["regels"].manifest["parts"]
    assert batches["regels"].manifest["record_path"] == "records"
    assert part["source_file"] == "toy_a_20260301.jsonl"
    assert part["source_sha256"] == sha
    assert part["arrival_time"] == "2026-02-25T06:13:20+00:00"
    assert part["record_count"] == 2
    assert part["sha256"] == hashlib.sha256(batches["regels"].part_paths[0].read_bytes()).hexdigest()

    archived = zone / "archive" / "2026-03-01" / "toy_a_20260301.jsonl"
    assert archived.exists() and not path.exists()
    assert hashlib.sha256(archived.read_bytes()).hexdigest() == sha

    manifest = zone_manifest(zone, DAY1)
    e = entry(manifest, "toy_a_20260301.jsonl")
    assert e["size"] == size and e["sha256"] == sha
    assert e["arrival_time"] == "2026-02-25T06:13:20+00:00"
    assert e["outcome"] == "accepted" and e["units_accepted"] == 2 and e["rejections"] == []
    assert e["archive_path"] == str(archived) and e["quarantine_path"] is None
    assert manifest["report"] == connector.last_report
    assert connector.last_report["files_accepted"] == 1 and connector.last_report["units_accepted"] == 2
    assert connector.last_report["files_rejected"] == []
    # The audit trail lands too, as bronze table toy_dropzone_manifest.
    assert records(batches[MANIFEST_DATASET]) == manifest["files"]


def test_a_day_without_files_lands_only_the_manifest(zone: Path, landing: Path) -> None:
    """No delivery is not an empty delivery: a snapshot mapping must keep the last one."""
    batches = run(ToyConnector({"dropzone_dir": str(zone)}), landing, DAY1)

    assert set(batches) == {MANIFEST_DATASET}
    assert records(batches[MANIFEST_DATASET]) == []
    assert not (landing / "toy" / "regels").exists() or not any((landing / "toy" / "regels").rglob("_MANIFEST.json"))


def test_event_sources_can_land_every_dataset_every_day(zone: Path, landing: Path) -> None:
    class EventToy(ToyConnector):
        land_empty_batches: ClassVar[bool] = True

    batches = run(EventToy({"dropzone_dir": str(zone)}), landing, DAY1)

    for dataset in ("regels", "bijlagen", MANIFEST_DATASET):
        assert batches[dataset].manifest["status"] == "complete"
        assert len(batches[dataset].manifest["parts"]) == 1
        assert records(batches[dataset]) == []


def test_unparseable_file_is_quarantined_with_reason_and_the_rest_still_lands(zone: Path, landing: Path) -> None:
    bad = deliver(zone, "toy_bad.jsonl", {"id": "x1"}, header="<xml/>")
    bad_sha = hashlib.sha256(bad.read_bytes()).hexdigest()
    deliver(zone, "toy_good.jsonl", {"id": "g1"})
    connector = ToyConnector({"dropzone_dir": str(zone)})

    batches = run(connector, landing, DAY1, run_id="manual__1")

    assert records(batches["regels"]) == [{"id": "g1"}]
    quarantined = zone / "quarantine" / "2026-03-01" / "toy_bad.jsonl"
    assert quarantined.exists() and not bad.exists()
    reason = json.loads((quarantined.parent / "toy_bad.jsonl.reason.json").read_text(encoding="utf-8"))
    assert reason["file"] == "toy_bad.jsonl"
    assert reason["rule"] == "not_toy"
    assert reason["position"] == "line 1"
    assert "#TOY header" in reason["message"]
    assert reason["logical_date"] == "2026-03-01" and reason["run_id"] == "manual__1"
    assert reason["sha256"] == bad_sha
    e = entry(zone_manifest(zone, DAY1), "toy_bad.jsonl")
    assert e["outcome"] == "rejected" and e["quarantine_path"] == str(quarantined)
    assert connector.last_report["files_rejected"] == [
        {"file": "toy_bad.jsonl", "rule": "not_toy", "message": "first line is not the #TOY header",
         "position": "line 1"}
    ]
    assert (zone / "archive" / "2026-03-01" / "toy_good.jsonl").exists()


def test_rejected_unit_is_written_to_quarantine_and_the_rest_of_the_file_lands(zone: Path, landing: Path) -> None:
    deliver(zone, "toy_mixed.jsonl", {"id": "m1"}, "{not json", {"id": "m2"})
    connector = ToyConnector({"dropzone_dir": str(zone)})

    batches = run(connector, landing, DAY1)

    assert records(batches["regels"]) == [{"id": "m1"}, {"id": "m2"}]
    assert (zone / "archive" / "2026-03-01" / "toy_mixed.jsonl").exists()
    rejections = json.loads(
        (zone / "quarantine" / "2026-03-01" / "toy_mixed.jsonl.rejections.json").read_text(encoding="utf-8")
    )
    assert rejections["file"] == "toy_mixed.jsonl" and rejections["count"] == 1
    assert [(r["rule"], r["position"]) for r in rejections["rejections"]] == [("bad_json", "line 3")]
    e = entry(zone_manifest(zone, DAY1), "toy_mixed.jsonl")
    assert e["outcome"] == "partially_accepted"
    assert e["units_accepted"] == 2 and e["units_rejected"] == 1
    assert e["rejections"] == [
        {"rule": "bad_json", "position": "line 3", "message": "line is not a JSON object", "identity": None}
    ]
    assert connector.last_report["units_rejected_per_rule"] == {"bad_json": 1}
    assert connector.last_report["files_partially_accepted"] == 1


def test_duplicate_identities_across_files_and_days_are_rejected(zone: Path, landing: Path) -> None:
    connector = ToyConnector({"dropzone_dir": str(zone)})
    deliver(zone, "toy_a.jsonl", {"id": "d1"}, {"id": "d2"}, {"id": "d1", "again": True})
    deliver(zone, "toy_b.jsonl", {"id": "d2"}, {"id": "d3"})

    day1 = run(connector, landing, DAY1)

    assert records(day1["regels"]) == [{"id": "d1"}, {"id": "d2"}, {"id": "d3"}]
    manifest = zone_manifest(zone, DAY1)
    same_file = entry(manifest, "toy_a.jsonl")["rejections"]
    assert [(r["rule"], r["position"], r["identity"]) for r in same_file] == [("duplicate_regel", "line 4", "d1")]
    other_file = entry(manifest, "toy_b.jsonl")["rejections"]
    assert other_file[0]["rule"] == "duplicate_regel"
    assert "toy_a.jsonl" in other_file[0]["message"] and "earlier in this run" in other_file[0]["message"]

    deliver(zone, "toy_c.jsonl", {"id": "d3"}, {"id": "d4"})
    deliver(zone, "toy_d.jsonl", {"id": "d1"})
    day2 = run(connector, landing, DAY2)

    assert records(day2["regels"]) == [{"id": "d4"}]
    manifest2 = zone_manifest(zone, DAY2)
    (rejection,) = entry(manifest2, "toy_c.jsonl")["rejections"]
    assert rejection["identity"] == "d3"
    assert "toy_b.jsonl" in rejection["message"] and "2026-03-01" in rejection["message"]
    # A file whose every unit is a duplicate carries nothing new: quarantined, the rule is the reason.
    only_duplicates = entry(manifest2, "toy_d.jsonl")
    assert only_duplicates["outcome"] == "rejected" and only_duplicates["rule"] == "duplicate_regel"
    assert (zone / "quarantine" / "2026-03-02" / "toy_d.jsonl.reason.json").exists()
    assert (zone / "quarantine" / "2026-03-02" / "toy_d.jsonl.rejections.json").exists()
    assert connector.last_report["units_rejected_per_rule"] == {"duplicate_regel": 2}


def test_identical_file_redelivered_is_a_duplicate_file(zone: Path, landing: Path) -> None:
    connector = ToyConnector({"dropzone_dir": str(zone)})
    deliver(zone, "toy_x.jsonl", {"id": "i1"})
    run(connector, landing, DAY1)
    again = deliver(zone, "toy_x_resent.jsonl", {"id": "i1"})
    sha = hashlib.sha256(again.read_bytes()).hexdigest()

    batches = run(connector, landing, DAY2)

    assert "regels" not in batches  # nothing was accepted that day
    e = entry(zone_manifest(zone, DAY2), "toy_x_resent.jsonl")
    assert e["outcome"] == "duplicate_file"
    assert "toy_x.jsonl" in e["message"] and "2026-03-01" in e["message"]
    reason = json.loads((zone / "quarantine" / "2026-03-02" / "toy_x_resent.jsonl.reason.json").read_text())
    assert reason["rule"] == "duplicate_file" and reason["sha256"] == sha
    assert (zone / "quarantine" / "2026-03-02" / "toy_x_resent.jsonl").exists()


def test_empty_file_is_rejected_before_parsing(zone: Path, landing: Path) -> None:
    (zone / "toy_leeg.jsonl").write_bytes(b"")
    connector = ToyConnector({"dropzone_dir": str(zone)})

    run(connector, landing, DAY1)

    reason = json.loads((zone / "quarantine" / "2026-03-01" / "toy_leeg.jsonl.reason.json").read_text())
    assert reason["rule"] == "empty_file"
    assert entry(zone_manifest(zone, DAY1), "toy_leeg.jsonl")["size"] == 0


def test_hidden_partial_unmatched_and_future_files_stay_where_they_are(zone: Path, landing: Path) -> None:
    waiting = [
        deliver(zone, ".toy_hidden.jsonl", {"id": "h"}),
        deliver(zone, "toy_copying.jsonl.part", {"id": "p"}),
        deliver(zone, "toy_copying.tmp", {"id": "t"}),
        deliver(zone, "readme.txt", {"id": "r"}),
        deliver(zone, "toy_later_20260302.jsonl", {"id": "later"}),
    ]
    deliver(zone, "toy_now_20260301.jsonl", {"id": "now"})
    connector = ToyConnector({"dropzone_dir": str(zone)})

    batches = run(connector, landing, DAY1)

    assert records(batches["regels"]) == [{"id": "now"}]
    assert all(path.exists() for path in waiting)
    assert [e["file"] for e in zone_manifest(zone, DAY1)["files"]] == ["toy_now_20260301.jsonl"]
    assert connector.last_report["files_ignored"] == ["readme.txt"]
    assert connector.last_report["files_deferred"] == ["toy_later_20260302.jsonl"]

    next_day = run(connector, landing, DAY2)

    assert records(next_day["regels"]) == [{"id": "later"}]
    assert file_date("iwmo_2026-03-02_301.xml") == date(2026, 3, 2)
    assert file_date("bericht_12345678.xml") is None


def test_partial_yield_then_file_rejected_leaves_nothing_of_that_file(zone: Path, landing: Path) -> None:
    connector = ToyConnector({"dropzone_dir": str(zone)})
    deliver(zone, "toy_a_truncated.jsonl", {"id": "t1"}, {"id": "t2", "bijlage": "b"}, {"fatal": "afgebroken"})
    deliver(zone, "toy_b_retry.jsonl", {"id": "t1"}, {"id": "t2"})

    batches = run(connector, landing, DAY1)

    # t1/t2 of the truncated file neither landed nor count as accepted identities.
    assert records(batches["regels"]) == [{"id": "t1"}, {"id": "t2"}]
    assert all(part["source_file"] == "toy_b_retry.jsonl" for part in batches["regels"].manifest["parts"])
    assert records(batches["bijlagen"]) == []
    e = entry(zone_manifest(zone, DAY1), "toy_a_truncated.jsonl")
    assert (e["outcome"], e["rule"], e["position"], e["units_accepted"]) == ("rejected", "truncated", "line 4", 0)
    assert not list(batches["regels"].path.glob(".pending-*"))


def _outcomes(zone: Path, day: date) -> list[tuple]:
    return [
        (e["file"], e["outcome"], e["rule"], e["units_accepted"], e["units_rejected"],
         e["archive_path"], e["quarantine_path"])
        for e in zone_manifest(zone, day)["files"]
    ]


def _part_hashes(batches: dict[str, BatchResult]) -> dict[str, list[str]]:
    return {
        dataset: [hashlib.sha256(path.read_bytes()).hexdigest() for path in batch.part_paths]
        for dataset, batch in batches.items()
    }


def test_rerun_of_a_date_is_byte_identical_and_loses_nothing(zone: Path, landing: Path) -> None:
    connector = ToyConnector({"dropzone_dir": str(zone)})
    deliver(zone, "toy_0_earlier.jsonl", {"id": "e1"})
    run(connector, landing, DAY1)
    deliver(zone, "toy_a.jsonl", {"id": "a1", "bijlage": "a.pdf"}, "kapot", {"id": "e1"})
    deliver(zone, "toy_b.jsonl", {"id": "b1"}, header="nope")
    deliver(zone, "toy_c.jsonl", {"id": "e1"})  # identical to the file of day 1
    (zone / "toy_d.jsonl").write_bytes(b"")
    deliver(zone, "toy_e.jsonl", {"id": "a1"})

    first = run(connector, landing, DAY2, run_id="scheduled__2026-03-02")
    first_outcomes, first_hashes = _outcomes(zone, DAY2), _part_hashes(first)
    first_tree = sorted(str(p.relative_to(zone)) for p in zone.rglob("*") if p.is_file() and "_state" not in p.parts)
    first_report = dict(connector.last_report, run_id=None)

    assert {o[0]: o[1] for o in first_outcomes} == {
        "toy_a.jsonl": "partially_accepted", "toy_b.jsonl": "rejected", "toy_c.jsonl": "duplicate_file",
        "toy_d.jsonl": "rejected", "toy_e.jsonl": "rejected",
    }
    for rerun_id in ("manual__rerun", "scheduled__2026-03-02"):
        again = run(connector, landing, DAY2, run_id=rerun_id)
        assert _outcomes(zone, DAY2) == first_outcomes
        assert _part_hashes(again) == first_hashes
        assert dict(connector.last_report, run_id=None) == first_report
        tree = sorted(str(p.relative_to(zone)) for p in zone.rglob("*") if p.is_file() and "_state" not in p.parts)
        assert tree == first_tree
    assert records(again["regels"]) == [{"id": "a1", "bijlage": "a.pdf"}]

    # A new arrival for the same date joins the files already processed under that date.
    deliver(zone, "toy_f.jsonl", {"id": "f1"})
    with_new = run(connector, landing, DAY2, run_id="manual__late")
    assert records(with_new["regels"]) == [{"id": "a1", "bijlage": "a.pdf"}, {"id": "f1"}]
    assert len(zone_manifest(zone, DAY2)["files"]) == 6
    # Day 1 is untouched by any of this.
    assert [o[:2] for o in _outcomes(zone, DAY1)] == [("toy_0_earlier.jsonl", "accepted")]


class StrictToyConnector(ToyConnector):
    """The same source with a stricter parser version: files carrying an id starting with "z" are refused."""

    def parse_file(self, path: Path) -> Iterator[ParsedUnit | Rejection]:
        for item in super().parse_file(path):
            if isinstance(item, ParsedUnit) and str(item.identity).startswith("z"):
                raise FileRejected("id_z_refused", "ids starting with z are refused", item.position)
            yield item


def test_rerun_after_a_parser_fix_moves_the_file_from_quarantine_to_archive(zone: Path, landing: Path) -> None:
    deliver(zone, "toy_z.jsonl", {"id": "z1"}, "kapot")
    run(StrictToyConnector({"dropzone_dir": str(zone)}), landing, DAY1)
    quarantine_day = zone / "quarantine" / "2026-03-01"
    assert (quarantine_day / "toy_z.jsonl.reason.json").exists()

    batches = run(ToyConnector({"dropzone_dir": str(zone)}), landing, DAY1, run_id="manual__fixed")

    assert records(batches["regels"]) == [{"id": "z1"}]
    assert (zone / "archive" / "2026-03-01" / "toy_z.jsonl").exists()
    # The stale reason and the quarantined copy are gone; only the unit rejection remains.
    assert sorted(p.name for p in quarantine_day.iterdir()) == ["toy_z.jsonl.rejections.json"]


def test_same_name_delivered_twice_on_one_day_keeps_both(zone: Path, landing: Path) -> None:
    connector = ToyConnector({"dropzone_dir": str(zone)})
    first = deliver(zone, "toy_dag.jsonl", {"id": "n1"})
    first_sha = hashlib.sha256(first.read_bytes()).hexdigest()
    run(connector, landing, DAY1)
    second = deliver(zone, "toy_dag.jsonl", {"id": "n2"})
    second_sha = hashlib.sha256(second.read_bytes()).hexdigest()

    batches = run(connector, landing, DAY1, run_id="manual__again")

    assert sorted(r["id"] for r in records(batches["regels"])) == ["n1", "n2"]
    archive_day = zone / "archive" / "2026-03-01"
    first_copy = archive_day / first_sha[:12] / "toy_dag.jsonl"
    assert hashlib.sha256(first_copy.read_bytes()).hexdigest() == first_sha
    assert sorted(p.relative_to(archive_day).as_posix() for p in archive_day.rglob("*") if p.is_file()) == sorted(
        [f"{first_sha[:12]}/toy_dag.jsonl", f"{second_sha[:12]}/toy_dag.jsonl"]
    )
    again = run(connector, landing, DAY1, run_id="manual__third")
    assert _part_hashes(again) == _part_hashes(batches)


def test_archive_on_another_file_system_keeps_the_file_and_its_arrival_time(zone: Path, landing: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == zone.stat().st_dev:
        pytest.skip("needs /dev/shm on a file system other than the test's tmp_path to exercise the cross-device move")
    archive = Path(tempfile.mkdtemp(prefix="ggm-dropzone-archive-", dir=shm))
    try:
        path = deliver(zone, "toy_ver.jsonl", {"id": "v1"})
        content = path.read_bytes()
        connector = ToyConnector({"dropzone_dir": str(zone), "archive_dir": str(archive)})

        first = run(connector, landing, DAY1)
        archived = archive / "2026-03-01" / "toy_ver.jsonl"
        assert archived.read_bytes() == content and not path.exists()
        assert int(archived.stat().st_mtime) == 1_772_000_000

        again = run(connector, landing, DAY1, run_id="manual__rerun")
        assert _part_hashes(again) == _part_hashes(first)
        assert _outcomes(zone, DAY1)[0][:2] == ("toy_ver.jsonl", "accepted")
    finally:
        shutil.rmtree(archive, ignore_errors=True)


def test_crash_mid_run_moves_nothing_and_the_rerun_completes_the_day(zone: Path, landing: Path) -> None:
    deliver(zone, "toy_a.jsonl", {"id": "c1"})
    deliver(zone, "toy_b.jsonl", {"id": "c2"}, {"id": "c3"})

    with pytest.raises(KeyboardInterrupt):
        run(CrashingToyConnector({"dropzone_dir": str(zone)}), landing, DAY1)

    # Nothing moved, no batch complete, no manifest: the day simply did not happen yet.
    assert sorted(p.name for p in zone.glob("toy_*")) == ["toy_a.jsonl", "toy_b.jsonl"]
    assert not (zone / "_manifest" / "2026-03-01.json").exists()
    assert not list(landing.rglob("_MANIFEST.json"))

    batches = run(ToyConnector({"dropzone_dir": str(zone)}), landing, DAY1)

    assert records(batches["regels"]) == [{"id": "c1"}, {"id": "c2"}, {"id": "c3"}]
    assert [o[1] for o in _outcomes(zone, DAY1)] == ["accepted", "accepted"]


def test_large_file_is_streamed_with_bounded_memory(zone: Path, landing: Path) -> None:
    target_size = 20 * 1024 * 1024
    filler = "x" * 900
    path = zone / "toy_groot.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("#TOY\n")
        number = 0
        while handle.tell() < target_size:
            handle.write(json.dumps({"id": f"g{number}", "omschrijving": filler}) + "\n")
            number += 1
    file_size = path.stat().st_size
    connector = ToyConnector({"dropzone_dir": str(zone)})

    tracemalloc.start()
    try:
        batches = run(connector, landing, DAY1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert connector.last_report["units_accepted"] == number
    assert batches["regels"].manifest["record_count"] == number
    assert batches["regels"].manifest["parts"][0]["bytes"] > file_size * 0.9
    # Python-level peak stays a small fraction of the 20 MB file (records are never all held).
    assert peak < file_size / 10, f"peak {peak} bytes for a {file_size} byte file"


def test_configuration_from_airflow_connection_env_and_defaults(tmp_path: Path, monkeypatch) -> None:
    zone = tmp_path / "elders" / "toy"
    archive = tmp_path / "archief"
    monkeypatch.setenv(
        "AIRFLOW_CONN_TOY_DROPZONE",
        json.dumps({"conn_type": "fs", "extra": {"dropzone_dir": str(zone), "archive_dir": str(archive),
                                                 "file_patterns": ["*.jsonl"], "afdeling": "sociaal domein"}}),
    )
    connector = connector_from_connection(ToyConnector, "toy_dropzone")
    assert connector.zone_dir == zone
    assert connector.archive_root == archive
    assert connector.quarantine_root == zone / "quarantine"
    assert connector.patterns == ("*.jsonl",)
    assert connector.config["afdeling"] == "sociaal domein"

    # An Airflow File (path) connection names the folder in extra.path.
    monkeypatch.setenv("AIRFLOW_CONN_TOY_FS", json.dumps({"conn_type": "fs", "extra": {"path": str(zone)}}))
    assert connector_from_connection(ToyConnector, "toy_fs").zone_dir == zone

    monkeypatch.setenv("GGM_DROPZONE_ROOT", str(tmp_path / "root"))
    assert ToyConnector().zone_dir == tmp_path / "root" / "toy"
    monkeypatch.setenv("GGM_DROPZONE_TOY", str(tmp_path / "via-env"))
    assert ToyConnector().zone_dir == tmp_path / "via-env"
    assert ToyConnector({"dropzone_dir": str(zone)}).zone_dir == zone

    with pytest.raises(SourceConfigError, match="onbekend"):
        ToyConnector({"onbekend": 1})

    # The connection-configured zone works end to end, archive on its own root.
    zone.mkdir(parents=True)
    deliver(zone, "anything.jsonl", {"id": "z1"})
    connector.extract(ExtractWindow.for_day(DAY1), tmp_path / "landing")
    assert (archive / "2026-03-01" / "anything.jsonl").exists()
    assert datetime.fromisoformat(zone_manifest(zone, DAY1)["files"][0]["arrival_time"]).tzinfo == timezone.utc


def test_of_two_full_exports_in_one_run_only_the_newest_lands(zone: Path, landing: Path) -> None:
    """A missed day brings two year-to-date exports; landing both would give silver two states of each object."""

    class ExportToy(ToyConnector):
        supersede_older_deliveries: ClassVar[bool] = True

    deliver(zone, "toy_export_20260228.jsonl", {"id": "e1", "bedrag": "10"})
    deliver(zone, "toy_export_20260301.jsonl", {"id": "e1", "bedrag": "12"})
    connector = ExportToy({"dropzone_dir": str(zone)})

    batches = run(connector, landing, DAY1)

    assert records(batches["regels"]) == [{"id": "e1", "bedrag": "12"}]
    assert connector.last_report["files_superseded"] == ["toy_export_20260228.jsonl"]
    older = entry(zone_manifest(zone, DAY1), "toy_export_20260228.jsonl")
    assert older["outcome"] == "superseded" and "toy_export_20260301.jsonl" in older["message"]
    assert (zone / "archive" / DAY1.isoformat() / "toy_export_20260228.jsonl").exists()
    # A rerun of the day gives the same answer from the archive.
    again = run(ExportToy({"dropzone_dir": str(zone)}), landing, DAY1, run_id="manual__again")
    assert records(again["regels"]) == [{"id": "e1", "bedrag": "12"}]


def test_when_the_newest_export_is_bad_the_next_newest_lands(zone: Path, landing: Path) -> None:
    class ExportToy(ToyConnector):
        supersede_older_deliveries: ClassVar[bool] = True

    deliver(zone, "toy_export_20260228.jsonl", {"id": "e1", "bedrag": "10"})
    deliver(zone, "toy_export_20260301.jsonl", {"id": "e1"}, header="<xml/>")
    connector = ExportToy({"dropzone_dir": str(zone)})

    batches = run(connector, landing, DAY1)

    assert records(batches["regels"]) == [{"id": "e1", "bedrag": "10"}]
    assert [r["file"] for r in connector.last_report["files_rejected"]] == ["toy_export_20260301.jsonl"]
    assert connector.last_report["files_superseded"] == []
