"""Faults on purpose: runs of one day at once, and processes killed with SIGKILL in the middle of their work.

What each test promises is in its name; ``docs/guarantees.md`` lists them. The races are made
certain, not left to chance: a barrier holds each run just before it writes, after it has looked at
what is already there, so every run decides on the same state, as overlapping runs on a busy
machine do. A kill comes the moment the victim's first output appears on disk.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pytest

from connectors import CONNECTORS
from connectors.base import ExtractWindow
from ggm_lakehouse.landing import BatchWriter, LandingWriteError
from demo_gemeente.dropzone import write_dropzone
from demo_gemeente.generator import DemoWorld
from ggm_lakehouse.config import dropzone_root, landing_root
from ggm_lakehouse.lake import LakeTable, table_path

pytestmark = pytest.mark.timeout(600)

DAY0, DAY1, DAY2 = date(2026, 4, 1), date(2026, 4, 2), date(2026, 4, 3)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class _HoldBeforeWriting:
    """Wrap ``module.name`` so that the first call of each of ``parties`` runs waits for the others.

    ``key(args)`` names the write a call is about to make; each run waits once per key (a retry
    after a lost commit race goes straight on).
    """

    def __init__(self, monkeypatch, module, name: str, key, parties: int = 2) -> None:
        self.original = getattr(module, name)
        self.key = key
        self.parties = parties
        self.barriers: dict[object, threading.Barrier] = {}
        self.passed: set[tuple[int, object]] = set()
        self.lock = threading.Lock()
        monkeypatch.setattr(module, name, self)

    def __call__(self, *args, **kwargs):
        write, run = self.key(args)
        with self.lock:
            barrier = self.barriers.setdefault(write, threading.Barrier(self.parties))
            first = (run, write) not in self.passed
            self.passed.add((run, write))
        if first:
            barrier.wait(timeout=120)
        return self.original(*args, **kwargs)


def _side_by_side(*calls) -> list:
    """Run the calls in threads at once; their results in order, or the first error raised."""
    results: list = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call) -> None:
        try:
            results[index] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    if errors:
        raise errors[0]
    return results


def _land_probe(day: date, run_id: str, names: list[str]) -> None:
    """A batch of the test-only dataset ``brp_probe`` (no mapping reads it) with these names."""
    body = json.dumps({"personen": [{"naam": name} for name in names]}).encode()
    with BatchWriter(landing_root(), "brp", "probe", ExtractWindow.for_day(day, run_id), endpoint="POST /personen",
                     record_path="personen") as writer:
        writer.add_part(body, request={"method": "POST", "url": "test://probe"}, status=200)


def _probe_batches(spark, day: date) -> dict[str, int]:
    rows = (LakeTable("bronze", "brp_probe").read(spark).where(f"_logical_date = DATE'{day}'")
            .groupBy("_run_id").count().collect())
    return {r["_run_id"]: r["count"] for r in rows}


def test_two_bronze_runs_of_one_day_at_once_land_the_same_delivery_once(spark, data_root, monkeypatch):
    from jobs import bronze

    _land_probe(DAY0, "earlier-day", ["X"])
    bronze.run(spark, DAY0, "earlier-day")
    # Two runs of DAY1 (a backfill beside the scheduled run) whose source answered alike.
    _land_probe(DAY1, "run-a", ["A", "B"])
    _land_probe(DAY1, "run-b", ["A", "B"])
    _HoldBeforeWriting(monkeypatch, bronze, "batch_rows", key=lambda args: (args[0].manifest["dataset"],
                                                                            args[0].manifest["run_id"]))
    reports = _side_by_side(lambda: bronze.run(spark, DAY1, "run-a"), lambda: bronze.run(spark, DAY1, "run-b"))

    landed = _probe_batches(spark, DAY1)
    assert len(landed) == 1 and list(landed.values()) == [2], landed
    assert all(r["tables"]["brp_probe"]["batches"] + r["tables"]["brp_probe"]["skipped_batches"] == 1 for r in reports)


def test_two_bronze_runs_of_one_day_at_once_with_different_answers_both_land(spark, data_root, monkeypatch):
    from jobs import bronze

    # The source answered differently to the two runs: neither delivery may be lost.
    _land_probe(DAY2, "run-c", ["C"])
    _land_probe(DAY2, "run-d", ["D"])
    if not LakeTable("bronze", "brp_probe").exists(spark):
        _land_probe(DAY0, "earlier-day", ["X"])
        bronze.run(spark, DAY0, "earlier-day")
    _HoldBeforeWriting(monkeypatch, bronze, "batch_rows", key=lambda args: (args[0].manifest["dataset"],
                                                                            args[0].manifest["run_id"]))
    _side_by_side(lambda: bronze.run(spark, DAY2, "run-c"), lambda: bronze.run(spark, DAY2, "run-d"))
    assert _probe_batches(spark, DAY2) == {"run-c": 1, "run-d": 1}


@pytest.fixture(scope="module")
def gebieden_bronze(spark, data_root) -> dict:
    """The wijk- en buurtindeling of two days in bronze; the second renames one buurt."""
    from jobs import bronze

    world = DemoWorld(200, seed=5)
    for day in (DAY1, DAY2):
        write_dropzone(world.at(day), dropzone_root())
        if day == DAY2:
            _rename_first_buurt(dropzone_root() / "gebieden" / f"wijkbuurtindeling_{day:%Y%m%d}.csv")
        CONNECTORS["gebieden"]({}).extract(ExtractWindow.for_day(day, f"deliver-{day}"), landing_root())
        bronze.run(spark, day, f"deliver-{day}", source="gebieden")
    return {"world": world}


def _rename_first_buurt(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(";")
    first = lines[1].split(";")
    first[header.index("buurtnaam")] = "Buurt Hernoemd"
    path.write_text("\n".join([lines[0], ";".join(first), *lines[2:]]) + "\n", encoding="utf-8")


def _versions(spark, table: str) -> list[tuple]:
    frame = LakeTable("silver", table).read(spark)
    key = next(c for c in frame.columns if c.endswith("_ID"))
    name = "NAAM" if "NAAM" in frame.columns else key
    return sorted((r[key], r[name], r["DWH_DATUMTIJDGELDIGTOTMET"] is None) for r in frame.collect())


def test_two_silver_runs_of_one_day_at_once_give_the_history_of_one_run(spark, gebieden_bronze, monkeypatch):
    from jobs import silver

    hold = _HoldBeforeWriting(monkeypatch, silver, "merge_scd2", key=lambda args: (args[1].target, args[0].run_id))
    for day in (DAY1, DAY2):
        hold.passed.clear()
        hold.barriers.clear()
        reports = _side_by_side(lambda: silver.run(spark, day, f"run-a-{day}", source="gebieden"),
                                lambda: silver.run(spark, day, f"run-b-{day}", source="gebieden"))
        assert {tuple(sorted(r["tables"])) for r in reports} == {("BUURT", "WIJK")}
    buurten = _versions(spark, "BUURT")
    keys = [key for key, _, _ in buurten]
    renamed = [v for v in buurten if v[1] == "Buurt Hernoemd"]
    # One version per buurt and day it changed: the renamed buurt has an old, closed one and a current one.
    assert len(renamed) == 1 and renamed[0][2]
    assert sorted(v[2] for v in buurten if v[0] == renamed[0][0]) == [False, True]
    assert len(keys) == len(set(keys)) + 1
    assert all(current for key, _, current in buurten if key != renamed[0][0])
    wijken = _versions(spark, "WIJK")
    assert len(wijken) == len({key for key, _, _ in wijken}) and all(current for _, _, current in wijken)


# --------------------------------------------------------------------------- processes killed mid-landing


def extract_drop_zone(data_root: str, source: str, day: str, run_id: str) -> None:
    """A departmental drop-zone run, as its Airflow task runs it (called in a child by ``tests/crash_at.py``)."""
    from connectors.exports import EXPORT_CONNECTORS

    os.environ["GGM_DATA_ROOT"] = data_root
    EXPORT_CONNECTORS[source]({}).extract(ExtractWindow.for_day(date.fromisoformat(day), run_id), landing_root())


def extract_brp(data_root: str, day: str, run_id: str, base_url: str, api_key: str) -> None:
    """The BRP connector's run for one day (called in a child by ``tests/crash_at.py``)."""
    os.environ["GGM_DATA_ROOT"] = data_root
    CONNECTORS["brp"]({"base_url": base_url, "api_key": api_key}).extract(
        ExtractWindow.for_day(date.fromisoformat(day), run_id), landing_root())


def _in_child(function: str, args: list, kill_before: tuple[str, int] | None = None, counts: Path | None = None) -> int:
    spec = {"call": f"tests.test_faults:{function}", "args": args, "kill_before": kill_before,
            "counts": str(counts) if counts else None}
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    completed = subprocess.run([sys.executable, str(PROJECT_ROOT / "tests" / "crash_at.py"), json.dumps(spec)],
                               env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode in (0, -signal.SIGKILL), completed.stderr[-3000:]
    return completed.returncode


def _landed(root: Path, source: str, day: date) -> dict[str, list[str]]:
    """The records of every complete batch of ``source`` on ``day``, per dataset and run, in landing order."""
    from ggm_lakehouse.landing import find_complete_batches, iter_batch_records, load_batch

    landed: dict[str, list[str]] = {}
    for dataset_dir in sorted((root / "landing" / source).iterdir()):
        for path in find_complete_batches(root / "landing", source, dataset_dir.name, day):
            records = [json.dumps(r, sort_keys=True) for r in iter_batch_records(load_batch(path))]
            landed[f"{dataset_dir.name}/{path.name}"] = records
    return landed


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_drop_zone_run_killed_at_any_step_loses_no_file_and_its_retry_completes_the_day(tmp_path, monkeypatch):
    """SIGKILL before each rename the run makes (landing manifests, archive moves, the zone's journal), then the retry."""
    import shutil

    from demo_gemeente.exports import write_subsidies_deliveries

    pristine = tmp_path / "pristine"
    write_subsidies_deliveries(DemoWorld(200, seed=5).at(DAY1), pristine / "dropzone", DAY1, delivery_weekday=None)
    zone = Path("dropzone") / "subsidies"
    delivered = sorted(_sha(p) for p in (pristine / zone).iterdir() if p.is_file())
    args = ["subsidies", DAY1.isoformat(), "scheduled__2026-04-02"]
    shutil.copytree(pristine, tmp_path / "reference")
    assert _in_child("extract_drop_zone", [str(tmp_path / "reference"), *args], counts=tmp_path / "counts.json") == 0
    expected = _landed(tmp_path / "reference", "subsidies", DAY1)
    renames = json.loads((tmp_path / "counts.json").read_text())["os.replace"]
    assert renames >= 7 and "dropzone_manifest/run_id=scheduled__2026-04-02" in expected

    for point in range(1, renames + 1):
        root = tmp_path / f"killed-before-rename-{point}"
        shutil.copytree(pristine, root)
        assert _in_child("extract_drop_zone", [str(root), *args], kill_before=("os.replace", point)) == -signal.SIGKILL
        monkeypatch.setenv("GGM_DATA_ROOT", str(root))
        extract_drop_zone(str(root), *args)  # the task's retry: same run id
        landed = _landed(root, "subsidies", DAY1)
        assert landed.keys() == expected.keys(), point
        assert {k: v for k, v in landed.items() if not k.startswith("dropzone_manifest")} == \
            {k: v for k, v in expected.items() if not k.startswith("dropzone_manifest")}, point
        assert [p.name for p in (root / zone).iterdir() if p.is_file()] == [], point
        assert sorted(_sha(p) for p in (root / zone / "archive").rglob("*") if p.is_file()) == delivered, point


def test_a_registry_extract_killed_mid_landing_leaves_no_batch_and_its_retry_lands_it_whole(tmp_path, monkeypatch):
    """SIGKILL before the fsync of the first, a middle and the last response part, and of the manifest."""
    from standins.server import StandinServers

    world = DemoWorld(300, seed=5)
    with StandinServers(world, as_of=DAY1) as servers:
        write_dropzone(world.at(DAY1), tmp_path / "reference" / "dropzone")
        args = [DAY1.isoformat(), "scheduled__2026-04-02", servers.brp.url, servers.brp.api_key]
        assert _in_child("extract_brp", [str(tmp_path / "reference"), *args], counts=tmp_path / "counts.json") == 0
        expected = _landed(tmp_path / "reference", "brp", DAY1)
        syncs = json.loads((tmp_path / "counts.json").read_text())["os.fsync"]
        assert syncs >= 10
        for point in (1, syncs // 2, syncs - 2, syncs - 1):
            root = tmp_path / f"killed-before-fsync-{point}"
            write_dropzone(world.at(DAY1), root / "dropzone")
            assert _in_child("extract_brp", [str(root), *args], kill_before=("os.fsync", point)) == -signal.SIGKILL
            assert _landed(root, "brp", DAY1) == {}, f"a batch looked complete after a kill before fsync {point}"
            monkeypatch.setenv("GGM_DATA_ROOT", str(root))
            extract_brp(str(root), *args)  # the task's retry: same run id
            assert _landed(root, "brp", DAY1) == expected, point
            batch_dir = next((root / "landing" / "brp").rglob("_MANIFEST.json")).parent
            named = {p["file"] for p in json.loads((batch_dir / "_MANIFEST.json").read_text())["parts"]}
            assert {p.name for p in batch_dir.iterdir()} == named | {"_MANIFEST.json"}, "parts of the killed try remain"


# --------------------------------------------------------------------------- Spark killed mid-MERGE


class _FirstNewFile:
    """Call ``react`` the moment a file ending in ``suffix`` is created in ``directory`` (inotify, no polling delay)."""

    def __init__(self, directory: Path, suffix: str, react) -> None:
        import ctypes
        import ctypes.util

        self.libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        self.libc.inotify_add_watch(self.fd, str(directory).encode(), 0x100)  # IN_CREATE
        self.suffix, self.react, self.seen = suffix, react, None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        import select
        import struct

        while not self.stopped.is_set():
            if not select.select([self.fd], [], [], 0.2)[0]:
                continue
            data, offset = os.read(self.fd, 65536), 0
            while offset < len(data):
                length = struct.unpack_from("iIII", data, offset)[3]
                name = data[offset + 16: offset + 16 + length].rstrip(b"\0").decode()
                offset += 16 + length
                if name.endswith(self.suffix) and not name.startswith("."):
                    self.seen = name
                    self.react()
                    return

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        os.close(self.fd)


_MERGE_CHILD = """
import sys
from datetime import date
from ggm_lakehouse.spark import connect_session
from jobs import silver
spark = connect_session(sys.argv[1], "ggm-fault-test")
silver.run(spark, date.fromisoformat(sys.argv[2]), "killed-run", tables=["BUURT"])
"""


def _own_server(tmp_path: Path, monkeypatch) -> dict:
    """A Spark Connect server of this test alone (its own state folder and port), to be killed."""
    import socket

    from ggm_lakehouse import spark_connect

    with monkeypatch.context() as env:
        env.setenv("GGM_SPARK_CONNECT_DIR", str(tmp_path / "victim-server"))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            env.setenv("GGM_SPARK_CONNECT_PORT", str(sock.getsockname()[1]))
        env.delenv("GGM_SPARK_CONNECT_TOKEN", raising=False)
        env.setenv("GGM_SPARK_DRIVER_MEMORY", "1g")
        info = spark_connect.start()
        return {"pid": info["pid"], "url": spark_connect.client_url(info["port"])}


def test_a_spark_server_killed_mid_merge_leaves_the_previous_version_and_the_rerun_completes_it(
        spark, gebieden_bronze, tmp_path, monkeypatch):
    """SIGKILL of the Spark server the moment its MERGE of day 2 has written a data file, before the commit."""
    import shutil

    from jobs import silver

    lake = tmp_path / "lake"
    shutil.copytree(table_path("bronze", "gebieden_wijkbuurtindeling").parent, lake / "bronze")
    monkeypatch.setenv("GGM_LAKE_ROOT", str(lake))
    silver.run(spark, DAY1, "day-1", source="gebieden")
    buurt = table_path("silver", "BUURT")
    day1 = _versions(spark, "BUURT")
    version_before = spark.sql(f"DESCRIBE HISTORY delta.`{buurt}` LIMIT 1").first()["version"]

    victim = _own_server(tmp_path, monkeypatch)
    watcher = _FirstNewFile(buurt, ".parquet", lambda: os.killpg(victim["pid"], signal.SIGSTOP))
    stage = subprocess.Popen([sys.executable, "-c", _MERGE_CHILD, victim["url"], DAY2.isoformat()],
                             env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while watcher.seen is None and stage.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(victim["pid"], signal.SIGKILL)
        stage.kill()
        watcher.close()
        stage.wait(timeout=60)
    assert watcher.seen, f"the stage ended before it wrote a data file of BUURT:\n{stage.stderr.read()[-3000:]}"

    # The data file is on disk, the commit is not: readers still see day 1, whole.
    assert (buurt / watcher.seen).exists()
    assert spark.sql(f"DESCRIBE HISTORY delta.`{buurt}` LIMIT 1").first()["version"] == version_before
    assert _versions(spark, "BUURT") == day1
    # The rerun on a healthy server completes the day once; the orphaned file stays out of the table.
    silver.run(spark, DAY2, "rerun", source="gebieden")
    buurten = _versions(spark, "BUURT")
    renamed = [v for v in buurten if v[1] == "Buurt Hernoemd"]
    assert len(renamed) == 1 and len(buurten) == len(day1) + 1
    assert sorted(v[2] for v in buurten if v[0] == renamed[0][0]) == [False, True]
    files = {r["path"] for r in spark.sql(f"SELECT input_file_name() AS path FROM delta.`{buurt}`").collect()}
    assert not any(path.endswith(watcher.seen) for path in files)


# --------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 384 KiB tmpfs: a disk that fills up during the write (needs root; skipped with the reason otherwise)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=384k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_disk_that_fills_up_while_landing_gives_a_clear_error_and_no_half_batch(small_disk, tmp_path, monkeypatch):
    """ENOSPC in the middle of a BRP extract: the error names the file, no batch looks complete, the retry lands it whole."""
    import shutil

    from standins.server import StandinServers

    world = DemoWorld(600, seed=5)
    monkeypatch.setenv("GGM_DATA_ROOT", str(tmp_path / "data"))
    write_dropzone(world.at(DAY1), dropzone_root())
    monkeypatch.setenv("GGM_LANDING_ROOT", str(small_disk / "landing"))
    with StandinServers(world, as_of=DAY1) as servers:
        connector = CONNECTORS["brp"]({"base_url": servers.brp.url, "api_key": servers.brp.api_key})
        window = ExtractWindow.for_day(DAY1, "scheduled__2026-04-02")
        with pytest.raises(LandingWriteError) as failed:
            connector.extract(window, landing_root())
        message = str(failed.value)
        assert failed.value.errno == 28 and "No space left on device" in message
        assert f"cannot write landing part {small_disk / 'landing' / 'brp' / 'personen'}" in message
        assert "free space or move GGM_LANDING_ROOT, then rerun the task" in message
        assert _landed(small_disk, "brp", DAY1) == {}
        # Space again (the operator moved the landing zone to a bigger disk): the retry lands the day whole.
        shutil.copytree(small_disk / "landing", tmp_path / "bigger" / "landing")
        monkeypatch.setenv("GGM_LANDING_ROOT", str(tmp_path / "bigger" / "landing"))
        [batch] = connector.extract(window, landing_root())
    assert batch.manifest["record_count"] == len(world.at(DAY1).persons)
    assert list(_landed(tmp_path / "bigger", "brp", DAY1)) == ["personen/run_id=scheduled__2026-04-02"]


def test_a_disk_that_fills_up_while_publishing_leaves_the_partners_previous_version(small_disk, tmp_path, monkeypatch):
    """ENOSPC while a partner's projection is rewritten: the publish fails, the partner keeps reading yesterday's."""
    from deltalake import DeltaTable, write_deltalake

    from sharing_server.projections import (PROJECTIONS_DIR, ProjectionError, materialise_recipient_tables,
                                            projection_location)
    from tests.test_sharing_projections import _clienten, _table, own_site

    lake = own_site(tmp_path, monkeypatch)
    lake.mkdir()
    (lake / PROJECTIONS_DIR).symlink_to(small_disk, target_is_directory=True)  # the shares on the small disk
    write_deltalake(str(lake / "gold" / "clienten"), _clienten(6), partition_by=["wijkcode"])
    materialise_recipient_tables(DAY1, run_id="day-1", export_audit=False)
    location = projection_location("partner-a", _table("clienten"))
    published = DeltaTable(str(location)).to_pandas().sort_values("bsn_pseudoniem").reset_index(drop=True)

    write_deltalake(str(lake / "gold" / "clienten"), _clienten(20_000), partition_by=["wijkcode"], mode="overwrite")
    with pytest.raises(ProjectionError) as failed:
        materialise_recipient_tables(DAY2, run_id="day-2", export_audit=False)
    message = str(failed.value)
    assert f"cannot write the projection at {location}" in message and "No space left on device" in message
    assert "Partners keep the version they had; free space and publish again" in message
    current = DeltaTable(str(location))
    assert current.version() == 0
    assert current.to_pandas().sort_values("bsn_pseudoniem").reset_index(drop=True).equals(published)
