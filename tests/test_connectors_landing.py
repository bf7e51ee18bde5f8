"""Landing contract: manifest completeness, checksums, atomicity and reproducibility.

Connectors run for real: the drop-zone connector on real files, the BRP connector
against a scripted local HTTP server (see test_connectors_http.ScriptedServer).
"""
from __future__ import annotations

import hashlib
import json
from collections import deque
from datetime import date
from pathlib import Path

import pytest

from connectors import CONNECTORS, ExtractWindow, find_complete_batches, read_manifest
from connectors.brp import BrpPersonenConnector
from connectors.errors import SourceDataError, SourceServerError
from connectors.files import GebiedenConnector
from ggm_lakehouse.bsn import complete_bsn
from ggm_lakehouse.landing import (
    MANIFEST_NAME,
    BatchWriter,
    batch_dir,
    count_records,
    iter_batch_records,
    load_batch,
    safe_run_id,
)
from test_connectors_http import PROBLEM, ScriptedServer

DAY = date(2026, 3, 1)


@pytest.fixture
def server():
    srv = ScriptedServer()
    yield srv
    srv.close()


def valid_bsns(n: int) -> list[str]:
    out, i = [], 10000000
    while len(out) < n:
        bsn = complete_bsn(str(i))
        if bsn:
            out.append(bsn)
        i += 7
    return out


def write_volglijst(directory: Path, day: date, bsns: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"volglijst_{day:%Y%m%d}.csv"
    path.write_text("burgerservicenummer\n" + "".join(f"{b}\n" for b in bsns), encoding="utf-8")
    return path


def brp_connector(server: ScriptedServer, volglijst_dir: Path, **extra) -> BrpPersonenConnector:
    return BrpPersonenConnector(
        {
            "base_url": server.base_url,
            "api_key": "proef-key-xyz",
            "volglijst_dir": str(volglijst_dir),
            "backoff_base": 0,
            "max_attempts": 2,
            **extra,
        }
    )


def script_personen(server: ScriptedServer, fail_bsn: str | None = None) -> None:
    """BRP stand-in in miniature: echoes the requested BSNs as personen; with ``fail_bsn``, every
    request that asks for that BSN gets 503 (its group fails on each attempt, the others succeed)."""

    def answer(handler) -> bytes:
        request = json.loads(handler.request_body)
        personen = [{"burgerservicenummer": b} for b in request["burgerservicenummer"]]
        return json.dumps({"type": "RaadpleegMetBurgerservicenummer", "personen": personen}).encode()

    def answer_or_fail(handler) -> bytes:
        if fail_bsn in json.loads(handler.request_body)["burgerservicenummer"]:
            return 503, {"Content-Type": PROBLEM}, b'{"status":503,"title":"Bron niet beschikbaar"}'
        return answer(handler)

    server.scripts["/api/personen"] = deque([(200, {"Content-Type": "application/json; charset=utf-8"},
                                               answer if fail_bsn is None else answer_or_fail, 0)])


# ------------------------------------------------------------------ BatchWriter


def test_manifest_is_complete_and_checksums_match(tmp_path):
    window = ExtractWindow.for_day(DAY)
    parts = [b'{"personen": [{"a": 1}, {"a": 2}]}', b'{"personen": []}', b'{"personen": [{"a": 3}]}']
    with BatchWriter(tmp_path, "brp", "personen", window, endpoint="POST /personen", record_path="personen") as batch:
        for i, content in enumerate(parts):
            batch.add_part(
                content,
                request={
                    "method": "POST",
                    "url": "http://x/personen",
                    "params": {"apikey": "leak-me-not"},
                    "body": {"n": i},
                    "headers": {"X-API-KEY": "leak-me-not", "Accept": "application/json"},
                },
                status=200,
            )
    path = batch_dir(tmp_path, "brp", "personen", DAY, window.run_id)
    assert path == tmp_path / "brp/personen/logical_date=2026-03-01/run_id=scheduled__2026-03-01T00_00_00_00_00"
    manifest = read_manifest(path)
    assert manifest["manifest_version"] == 1
    assert (manifest["source"], manifest["dataset"], manifest["endpoint"]) == ("brp", "personen", "POST /personen")
    assert manifest["logical_date"] == "2026-03-01"
    assert manifest["window_start"] == "2026-03-01T00:00:00+00:00"
    assert manifest["window_end"] == "2026-03-02T00:00:00+00:00"
    assert manifest["run_id"] == "scheduled__2026-03-01T00:00:00+00:00"  # original, not the safe form
    assert manifest["record_path"] == "personen" and manifest["content_type"] == "application/json"
    assert manifest["status"] == "complete" and manifest["started_at"] <= manifest["completed_at"]
    assert [p["record_count"] for p in manifest["parts"]] == [2, 0, 1]
    assert manifest["record_count"] == 3
    for part, content in zip(manifest["parts"], parts):
        assert (path / part["file"]).read_bytes() == content
        assert part["sha256"] == hashlib.sha256(content).hexdigest()
        assert part["bytes"] == len(content) and part["status"] == 200
    expected = hashlib.sha256("".join(hashlib.sha256(c).hexdigest() for c in parts).encode()).hexdigest()
    assert manifest["checksum"] == expected
    assert "leak-me-not" not in (path / MANIFEST_NAME).read_text()
    assert manifest["parts"][0]["request"]["headers"] == {"Accept": "application/json"}
    assert sorted(p.name for p in path.iterdir()) == [MANIFEST_NAME, "part-00001.json", "part-00002.json", "part-00003.json"]
    assert list(iter_batch_records(load_batch(path))) == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_failure_half_way_leaves_no_manifest_and_retry_clears_stale_parts(tmp_path):
    window = ExtractWindow.for_day(DAY, "manual__2026-03-01T10:00:00+00:00")
    with pytest.raises(RuntimeError, match="source went away"):
        with BatchWriter(tmp_path, "bag", "panden", window, endpoint="GET /panden", record_path="_embedded.panden") as b:
            for _ in range(3):
                b.add_part(b'{"_embedded": {"panden": [{"x": 1}]}}', request={"method": "GET", "url": "u", "params": {}, "body": None})
            raise RuntimeError("source went away")
    path = batch_dir(tmp_path, "bag", "panden", DAY, window.run_id)
    assert (path / "part-00003.json").exists() and not (path / MANIFEST_NAME).exists()
    assert find_complete_batches(tmp_path, "bag", "panden") == []

    with BatchWriter(tmp_path, "bag", "panden", window, endpoint="GET /panden", record_path="_embedded.panden") as b:
        b.add_part(b'{"_links": {}}', request={"method": "GET", "url": "u", "params": {}, "body": None})
    assert sorted(p.name for p in path.iterdir()) == [MANIFEST_NAME, "part-00001.json"]
    assert read_manifest(path)["record_count"] == 0  # HAL without _embedded = no results
    assert find_complete_batches(tmp_path, "bag", "panden") == [path]


def test_find_complete_batches_orders_and_filters(tmp_path):
    def land(day: date, run_id: str) -> Path:
        with BatchWriter(tmp_path, "gebieden", "pc6hnr", ExtractWindow.for_day(day, run_id), endpoint="FILE", record_path="csv") as b:
            b.add_part(b"postcode,huisnummer\n1234AB,1\n", request={"method": "FILE", "url": "file:///x", "params": {}, "body": None})
        return b.path

    first = land(date(2026, 3, 2), "run-a")
    older_day = land(date(2026, 3, 1), "run-z")
    second = land(date(2026, 3, 2), "run-b")
    (tmp_path / "gebieden/pc6hnr/logical_date=2026-03-02/run_id=broken").mkdir()
    assert find_complete_batches(tmp_path, "gebieden", "pc6hnr") == [older_day, first, second]
    assert find_complete_batches(tmp_path, "gebieden", "pc6hnr", date(2026, 3, 2)) == [first, second]
    assert find_complete_batches(tmp_path, "gebieden", "other") == []
    assert read_manifest(first)["record_count"] == 1


def test_safe_run_id_and_csv_counts():
    assert safe_run_id("scheduled__2026-11-27T00:00:00+00:00") == "scheduled__2026-11-27T00_00_00_00_00"
    assert safe_run_id("../etc") == ".._etc" and safe_run_id("..") == "__"
    assert count_records(b'\xef\xbb\xbfa;b\n1;"x\ny"\n2;z\n', "csv") == 2  # BOM, ';' and a quoted newline
    assert count_records(b'{"woonplaats": {}}', "") == 1


def test_manifest_never_keeps_a_header_the_http_layer_treats_as_secret(tmp_path):
    """The landing contract lives in core and keeps its own list of credential names; it must cover
    every header ``connectors.http`` never logs, so a request record cannot carry one into a manifest."""
    from connectors.http import ALWAYS_SECRET_HEADERS

    window = ExtractWindow.for_day(DAY, "run-a")
    headers = {name.title(): "secret" for name in ALWAYS_SECRET_HEADERS} | {"Accept": "application/json"}
    with BatchWriter(tmp_path, "brp", "personen", window, endpoint="POST /personen", record_path="") as batch:
        batch.add_part(b"{}", request={"method": "POST", "url": "https://x", "headers": headers}, status=200)
    assert batch.completed().manifest["parts"][0]["request"]["headers"] == {"Accept": "application/json"}


# ------------------------------------------------------------- drop-zone files


def test_gebieden_lands_newest_delivery_byte_for_byte(tmp_path):
    zone = tmp_path / "dropzone" / "gebieden"
    zone.mkdir(parents=True)
    (zone / "wijkbuurtindeling_20260101.csv").write_bytes(b"buurtcode;wijkcode\nBU1;WK1\n")
    newest = b"buurtcode;buurtnaam;wijkcode\r\nBU99990101;Centrum \xc3\xa9\r\nBU99990102;Oost\r\n"
    (zone / "wijkbuurtindeling_20260301.csv").write_bytes(newest)
    (zone / "wijkbuurtindeling_20260401.csv").write_bytes(b"future\n")  # after the logical date
    (zone / "pc6hnr_20260215.csv").write_bytes(b"postcode,huisnummer,buurtcode\n9999AA,1,BU99990101\n")
    connector = CONNECTORS["gebieden"]({"dropzone_dir": str(zone)})
    results = connector.extract(ExtractWindow.for_day(DAY, "run-1"), tmp_path / "landing")
    by_dataset = {r.dataset: r for r in results}
    assert set(by_dataset) == {"wijkbuurtindeling", "pc6hnr"}
    wbi = by_dataset["wijkbuurtindeling"]
    assert wbi.part_paths[0].read_bytes() == newest
    part = wbi.manifest["parts"][0]
    assert part["source_file"] == "wijkbuurtindeling_20260301.csv" and part["delivery_date"] == "2026-03-01"
    assert part["bytes"] == len(newest) and part["sha256"] == hashlib.sha256(newest).hexdigest()
    assert wbi.manifest["record_path"] == "csv" and wbi.manifest["content_type"] == "text/csv"
    assert wbi.record_count == 2 and by_dataset["pc6hnr"].record_count == 1
    assert wbi.path.parent.parent.parent.name == "gebieden"

    # same window again (new attempt): identical bytes and checksum
    again = {r.dataset: r for r in connector.extract(ExtractWindow.for_day(DAY, "run-2"), tmp_path / "landing")}
    assert again["wijkbuurtindeling"].checksum == wbi.checksum
    assert again["pc6hnr"].checksum == by_dataset["pc6hnr"].checksum


def test_gebieden_missing_dropzone_or_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SourceDataError, match=f"gebieden: drop zone {missing} does not exist"):
        GebiedenConnector({"dropzone_dir": str(missing)}).extract(ExtractWindow.for_day(DAY), tmp_path / "landing")
    zone = tmp_path / "zone"
    zone.mkdir()
    (zone / "wijkbuurtindeling_20260301.csv").write_bytes(b"a\n1\n")
    (zone / "pc6hnr_20260302.csv").write_bytes(b"a\n1\n")  # only delivered after the logical date
    with pytest.raises(SourceDataError, match=r"no file pc6hnr_\*\.csv dated on or before 2026-03-01"):
        GebiedenConnector({"dropzone_dir": str(zone)}).extract(ExtractWindow.for_day(DAY), tmp_path / "landing")
    # nothing was landed: files are resolved before any batch is written
    assert not (tmp_path / "landing").exists()


# --------------------------------------------------------------- BRP connector


def test_brp_uses_newest_volglijst_in_sorted_batches_of_20(server, tmp_path):
    script_personen(server)
    bsns = valid_bsns(45)
    volglijst_dir = tmp_path / "brp-volglijst"
    write_volglijst(volglijst_dir, date(2026, 2, 1), bsns[:5])
    write_volglijst(volglijst_dir, DAY, list(reversed(bsns)) + [bsns[0], "12345"])  # duplicate + invalid
    write_volglijst(volglijst_dir, date(2026, 3, 5), bsns[:1])  # future: ignored
    [result] = brp_connector(server, volglijst_dir).extract(ExtractWindow.for_day(DAY, "r1"), tmp_path / "landing")
    # Requests in flight side by side may arrive in any order; the manifest below keeps the asked order.
    bodies = sorted((json.loads(r["body"]) for r in server.requests), key=lambda b: b["burgerservicenummer"][0])
    assert [len(b["burgerservicenummer"]) for b in bodies] == [20, 20, 5]
    assert [bsn for b in bodies for bsn in b["burgerservicenummer"]] == sorted(bsns)
    assert all(b["type"] == "RaadpleegMetBurgerservicenummer" and "inclusiefOverledenPersonen" not in b for b in bodies)
    assert bodies[0]["fields"][0] == "burgerservicenummer"
    assert all(r["headers"]["X-API-KEY"] == "proef-key-xyz" for r in server.requests)
    manifest = result.manifest
    assert manifest["record_count"] == 45 and len(manifest["parts"]) == 3
    assert manifest["extra"]["volglijst"]["file"] == "volglijst_20260301.csv"
    assert manifest["extra"]["volglijst"]["rejected_count"] == 1
    assert [p["request"]["body"]["burgerservicenummer"] for p in manifest["parts"]] == [
        sorted(bsns)[:20], sorted(bsns)[20:40], sorted(bsns)[40:]]
    assert [r["burgerservicenummer"] for r in iter_batch_records(result)] == sorted(bsns)
    assert "proef-key-xyz" not in (result.path / MANIFEST_NAME).read_text()


def test_brp_failing_half_way_leaves_no_complete_batch_and_rerun_is_identical(server, tmp_path):
    bsns = valid_bsns(50)
    volglijst_dir = tmp_path / "brp-volglijst"
    write_volglijst(volglijst_dir, DAY, bsns)
    landing = tmp_path / "landing"
    window = ExtractWindow.for_day(DAY, "scheduled__2026-03-01T00:00:00+00:00")

    script_personen(server, fail_bsn=sorted(bsns)[20])  # the second group's POST fails on both attempts
    with pytest.raises(SourceServerError, match=r"brp: POST .*/personen failed with HTTP 503 .* after 2 attempts"):
        brp_connector(server, volglijst_dir).extract(window, landing)
    assert find_complete_batches(landing, "brp", "personen") == []
    stale = batch_dir(landing, "brp", "personen", DAY, window.run_id)
    assert (stale / "part-00001.json").exists() and not (stale / MANIFEST_NAME).exists()

    script_personen(server)
    [first] = brp_connector(server, volglijst_dir).extract(window, landing)  # Airflow retry, same run id
    [second] = brp_connector(server, volglijst_dir).extract(ExtractWindow.for_day(DAY, "manual__rerun"), landing)
    assert find_complete_batches(landing, "brp", "personen", DAY) == [first.path, second.path]
    assert first.checksum == second.checksum and first.record_count == 50
    assert [p.read_bytes() for p in first.part_paths] == [p.read_bytes() for p in second.part_paths]


def test_brp_without_volglijst_names_source_and_path(server, tmp_path):
    (tmp_path / "empty").mkdir()
    write_volglijst(tmp_path / "empty", date(2026, 3, 2), valid_bsns(1))  # delivered too late
    with pytest.raises(SourceDataError, match=r"brp: no file volglijst_\*\.csv dated on or before 2026-03-01"):
        brp_connector(server, tmp_path / "empty").extract(ExtractWindow.for_day(DAY), tmp_path / "landing")
    assert server.requests == []
