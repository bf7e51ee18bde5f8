"""Per-recipient projections: physically separate, column/row restricted, pseudonyms re-keyed.

A temporary lake holds a gold table with an internal person pseudonym column; two partners
are entitled to it with different columns and rows. The projections are materialised with
``materialise_recipient_tables`` and then read from disk (what a client could download) and
through the running server with the official ``delta-sharing`` client.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
from pathlib import Path

import delta_sharing
import pandas as pd
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from ggm_lakehouse.model.shares_config import load_shares_config
from sharing_server.app import create_app
from sharing_server.embedded import EmbeddedServer
from sharing_server.projections import (
    ProjectionError,
    materialise_recipient_tables,
    projection_location,
)
from sharing_server.recipients import issue_profile

URL_KEY = b"projection-test-url-key-0123456789abcdef"
SHARING_SECRET = "projection-test-sharing-secret-0123456789"
DAY1, DAY2 = dt.date(2026, 6, 1), dt.date(2026, 6, 2)

SHARES_YAML = """
server:
  serve_from: projections
shares:
  - name: zorg
    schemas:
      - name: wmo
        tables:
          - name: clienten
            location: gold/clienten
            history_shared: true
            columns: [bsn_pseudoniem, wijkcode, zorgvorm, leeftijd]
            pseudonym_columns: [bsn_pseudoniem]
recipients:
  - name: partner-a
    shares: [zorg]
  - name: partner-b
    shares: [zorg]
    tables:
      zorg.wmo.clienten:
        columns: [bsn_pseudoniem, wijkcode, zorgvorm]
        row_filter:
          - {column: wijkcode, in: [WK01]}
"""


def _internal(n: int) -> str:
    # Stand-in for the municipality's internal pseudonym (64 hex characters like the real ones).
    return hashlib.sha256(f"internal-{n}".encode()).hexdigest()


def _clienten(count: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "bsn_pseudoniem": [_internal(i) for i in range(count)],
            "wijkcode": ["WK01" if i % 2 == 0 else "WK02" for i in range(count)],
            "zorgvorm": ["huishoudelijke hulp" if i % 3 else "begeleiding" for i in range(count)],
            "leeftijd": [60 + i for i in range(count)],
            "interne_notitie": [f"dossier {i}" for i in range(count)],
        }
    )


def _expected_pseudonym(recipient: str, internal: str) -> str:
    # Written out independently of the product code: recipient key, then HMAC in its context.
    key = hmac.new(SHARING_SECRET.encode(), f"ggm-sharing-recipient-key-v1\x1f{recipient}".encode(), hashlib.sha256).digest()
    return hmac.new(key, f"share:{recipient}\x1f{internal}".encode(), hashlib.sha256).hexdigest()


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("projections")
    lake_root, sharing_root, config_path = root / "lake", root / "sharing", root / "shares.yaml"
    write_deltalake(str(lake_root / "gold" / "clienten"), _clienten(6), partition_by=["wijkcode"])
    config_path.write_text(SHARES_YAML, encoding="utf-8")
    env = {
        "GGM_LAKE_ROOT": str(lake_root),
        "GGM_SHARING_ROOT": str(sharing_root),
        "GGM_SHARES_CONFIG": str(config_path),
        "GGM_SHARING_PSEUDONYM_KEY": SHARING_SECRET,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    first = materialise_recipient_tables(DAY1, run_id="test-day1")
    try:
        yield {"root": root, "lake": lake_root, "config_path": config_path, "sharing_root": sharing_root, "first": first}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def own_site(tmp_path: Path, monkeypatch, lake_root: Path | None = None) -> Path:
    """A lake, sharing root and shares.yaml (``SHARES_YAML``) of one test under ``tmp_path``; returns the lake root."""
    lake_root = lake_root or tmp_path / "lake"
    config_path = tmp_path / "shares.yaml"
    config_path.write_text(SHARES_YAML, encoding="utf-8")
    for name, value in {"GGM_LAKE_ROOT": lake_root, "GGM_SHARING_ROOT": tmp_path / "sharing",
                        "GGM_SHARES_CONFIG": config_path, "GGM_SHARING_PSEUDONYM_KEY": SHARING_SECRET}.items():
        monkeypatch.setenv(name, str(value))
    return lake_root


def _table(name: str):
    config = load_shares_config()
    return next(t for s in config.shares for t in s.all_tables() if t.name == name)


def _files_on_disk(location: Path) -> pd.DataFrame:
    """Every Parquet file of the projection, as a client downloading them would get them."""
    frames = []
    for path in sorted(location.rglob("*.parquet")):
        frame = pq.read_table(path).to_pandas()
        frame["__file"] = str(path)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_report_names_rows_columns_and_version_per_recipient(lake):
    report = lake["first"]["recipients"]
    a, b = report["partner-a"]["zorg.wmo.clienten"], report["partner-b"]["zorg.wmo.clienten"]
    assert (a["rows"], a["columns"], a["version"]) == (6, ["bsn_pseudoniem", "wijkcode", "zorgvorm", "leeftijd"], 0)
    assert (b["rows"], b["columns"], b["version"]) == (3, ["bsn_pseudoniem", "wijkcode", "zorgvorm"], 0)
    assert a["pseudonym_columns"] == ["bsn_pseudoniem"]
    assert Path(a["location"]) == lake["lake"] / "shares" / "partner-a" / "zorg" / "wmo" / "clienten"


def test_projection_files_hold_only_the_entitled_columns_and_rows(lake):
    location_b = projection_location("partner-b", _table("clienten"))
    on_disk = _files_on_disk(location_b)
    parquet_columns = {c for path in location_b.rglob("*.parquet") for c in pq.read_schema(path).names}
    # wijkcode is the partition column: in the path, not in the file.
    assert parquet_columns == {"bsn_pseudoniem", "zorgvorm"}
    assert "leeftijd" not in on_disk and "interne_notitie" not in on_disk
    assert all("wijkcode=WK01" in f for f in on_disk["__file"])
    assert len(on_disk) == 3
    # partner-a's copy has leeftijd but never the unshared interne_notitie.
    location_a = projection_location("partner-a", _table("clienten"))
    assert {c for p in location_a.rglob("*.parquet") for c in pq.read_schema(p).names} == {"bsn_pseudoniem", "zorgvorm", "leeftijd"}


def test_pseudonyms_are_rekeyed_per_recipient_and_unlinkable(lake):
    table = _table("clienten")
    a = DeltaTable(str(projection_location("partner-a", table))).to_pandas()
    b = DeltaTable(str(projection_location("partner-b", table))).to_pandas()
    internal = {_internal(i) for i in range(6)}
    assert not internal & set(a["bsn_pseudoniem"]) and not internal & set(b["bsn_pseudoniem"])
    assert not set(a["bsn_pseudoniem"]) & set(b["bsn_pseudoniem"])
    assert set(a["bsn_pseudoniem"]) == {_expected_pseudonym("partner-a", _internal(i)) for i in range(6)}
    assert set(b["bsn_pseudoniem"]) == {_expected_pseudonym("partner-b", _internal(i)) for i in range(0, 6, 2)}


def test_projections_have_change_data_feed_enabled(lake):
    for recipient in ("partner-a", "partner-b"):
        config = DeltaTable(str(projection_location(recipient, _table("clienten")))).metadata().configuration
        assert config.get("delta.enableChangeDataFeed") == "true"


def test_rerun_with_unchanged_gold_adds_no_version_and_changes_add_one(lake):
    again = materialise_recipient_tables(DAY1, run_id="test-day1-rerun")
    for recipient in ("partner-a", "partner-b"):
        entry = again["recipients"][recipient]["zorg.wmo.clienten"]
        assert (entry["version"], entry["changed"]) == (0, False)
    # Gold rewritten with the same rows (a new gold version): compared, not republished.
    write_deltalake(str(lake["lake"] / "gold" / "clienten"), _clienten(6), partition_by=["wijkcode"], mode="overwrite")
    same = materialise_recipient_tables(DAY1, run_id="test-day1-gold-rewritten")
    assert [(same["recipients"][r]["zorg.wmo.clienten"]["version"], same["recipients"][r]["zorg.wmo.clienten"]["changed"])
            for r in ("partner-a", "partner-b")] == [(0, False), (0, False)]
    write_deltalake(str(lake["lake"] / "gold" / "clienten"), _clienten(8), partition_by=["wijkcode"], mode="overwrite")
    second = materialise_recipient_tables(DAY2, run_id="test-day2")
    a, b = second["recipients"]["partner-a"]["zorg.wmo.clienten"], second["recipients"]["partner-b"]["zorg.wmo.clienten"]
    assert (a["version"], a["rows"], a["changed"]) == (1, 8, True)
    assert (b["version"], b["rows"], b["changed"]) == (1, 4, True)


def test_official_client_reads_only_its_own_projection(lake):
    config_path = lake["config_path"]
    with EmbeddedServer(create_app(config_path, url_key=URL_KEY, audit_dir=lake["root"] / "audit")) as server:
        frames = {}
        for recipient in ("partner-a", "partner-b"):
            profile = lake["root"] / f"{recipient}.share"
            profile.write_text(json.dumps(issue_profile(recipient, endpoint=server.endpoint)), encoding="utf-8")
            frames[recipient] = delta_sharing.load_as_pandas(f"{profile}#zorg.wmo.clienten")
    a, b = frames["partner-a"], frames["partner-b"]
    assert sorted(a.columns) == ["bsn_pseudoniem", "leeftijd", "wijkcode", "zorgvorm"]
    assert sorted(b.columns) == ["bsn_pseudoniem", "wijkcode", "zorgvorm"]
    assert set(b["wijkcode"]) == {"WK01"}
    expected_b = DeltaTable(str(projection_location("partner-b", _table("clienten")))).to_pandas()
    assert sorted(b["bsn_pseudoniem"]) == sorted(expected_b["bsn_pseudoniem"])
    assert not set(a["bsn_pseudoniem"]) & set(b["bsn_pseudoniem"])


def test_a_lake_moved_elsewhere_keeps_its_projections_and_partners_read_them(lake, tmp_path, monkeypatch):
    """A restore from backup or a new mount puts the lake under another path; the next publish of
    the same day must find its projections current, not delete them as stale."""
    import shutil

    moved = tmp_path / "restored" / "lake"
    shutil.copytree(lake["lake"], moved)
    monkeypatch.setenv("GGM_LAKE_ROOT", str(moved))
    before = {r: DeltaTable(str(projection_location(r, _table("clienten")))).version() for r in ("partner-a", "partner-b")}
    report = materialise_recipient_tables(DAY2, run_id="test-day2-after-restore")
    assert report["removed"] == []
    for recipient in ("partner-a", "partner-b"):
        entry = report["recipients"][recipient]["zorg.wmo.clienten"]
        assert (entry["changed"], entry["version"]) == (False, before[recipient])
        assert Path(entry["location"]) == projection_location(recipient, _table("clienten"))
        assert Path(entry["location"]).is_relative_to(moved)
    with EmbeddedServer(create_app(lake["config_path"], url_key=URL_KEY, audit_dir=tmp_path / "audit")) as server:
        profile = tmp_path / "partner-a.share"
        profile.write_text(json.dumps(issue_profile("partner-a", endpoint=server.endpoint)), encoding="utf-8")
        frame = delta_sharing.load_as_pandas(f"{profile}#zorg.wmo.clienten")
    assert len(frame) == DeltaTable(str(moved / "gold" / "clienten")).to_pyarrow_table().num_rows


def test_a_change_of_partitioning_is_a_new_version_not_a_deleted_table(tmp_path, monkeypatch):
    """Gold partitioned differently: the projection gets a new version in place, the old one stays readable meanwhile."""
    lake_root = own_site(tmp_path, monkeypatch)
    write_deltalake(str(lake_root / "gold" / "clienten"), _clienten(6), partition_by=["wijkcode"])
    materialise_recipient_tables(DAY1, run_id="day-1", export_audit=False)
    location = projection_location("partner-a", _table("clienten"))
    table_id = DeltaTable(str(location)).metadata().id
    write_deltalake(str(lake_root / "gold" / "clienten"), _clienten(6), mode="overwrite", schema_mode="overwrite",
                    partition_by=["zorgvorm"])
    report = materialise_recipient_tables(DAY2, run_id="day-2", export_audit=False)
    entry = report["recipients"]["partner-a"]["zorg.wmo.clienten"]
    projection = DeltaTable(str(location))
    assert (entry["changed"], entry["version"], projection.metadata().id) == (True, 1, table_id)
    assert projection.metadata().partition_columns == ["zorgvorm"]
    assert len(projection.to_pandas()) == 6
    # The version partners read before the change is still there (time travel, change data feed).
    assert len(DeltaTable(str(location), version=0).to_pandas()) == 6


def test_a_publish_pointed_at_another_sharing_root_keeps_the_projections_of_recipients_it_cannot_see(tmp_path, monkeypatch):
    """A recipient added with the CLI lives in one sharing root's state; a publish reading another root must not withdraw it."""
    from sharing_server.recipients import add_recipient

    lake_root = own_site(tmp_path, monkeypatch)
    write_deltalake(str(lake_root / "gold" / "clienten"), _clienten(6), partition_by=["wijkcode"])
    add_recipient("ggd-regio", ["zorg"], endpoint="http://127.0.0.1:1/delta-sharing")
    first = materialise_recipient_tables(DAY1, run_id="day-1", export_audit=False)
    assert set(first["recipients"]) == {"partner-a", "partner-b", "ggd-regio"}
    location = projection_location("ggd-regio", _table("clienten"))

    monkeypatch.setenv("GGM_SHARING_ROOT", str(tmp_path / "another-sharing-root"))
    wrong = materialise_recipient_tables(DAY2, run_id="day-2", export_audit=False)
    assert (wrong["removed"], wrong["kept_unknown"]) == ([], ["ggd-regio"])
    assert location.is_dir() and len(DeltaTable(str(location)).to_pandas()) == 6
    # The same publish against the right root again: nothing unknown, nothing removed.
    monkeypatch.setenv("GGM_SHARING_ROOT", str(tmp_path / "sharing"))
    right = materialise_recipient_tables(DAY2, run_id="day-2-again", export_audit=False)
    assert right["removed"] == [] and "kept_unknown" not in right and "ggd-regio" in right["recipients"]


def test_undeclared_person_identifier_column_fails_the_publication(lake, tmp_path):
    config_path = tmp_path / "shares.yaml"
    config_path.write_text(
        SHARES_YAML.replace("            columns: [bsn_pseudoniem, wijkcode, zorgvorm, leeftijd]\n", "")
        .replace("            pseudonym_columns: [bsn_pseudoniem]\n", "")
        .replace("        columns: [bsn_pseudoniem, wijkcode, zorgvorm]\n", "        columns: [wijkcode, zorgvorm]\n"),
        encoding="utf-8",
    )
    with pytest.raises(ProjectionError, match="bsn_pseudoniem"):
        materialise_recipient_tables(DAY2, config_path=config_path, lake_root=lake["lake"])


def test_recipient_narrowing_cannot_widen_the_shared_columns(tmp_path):
    from ggm_lakehouse.model.shares_config import SharesConfigError

    path = tmp_path / "shares.yaml"
    path.write_text(SHARES_YAML.replace("columns: [bsn_pseudoniem, wijkcode, zorgvorm]\n", "columns: [bsn_pseudoniem, interne_notitie]\n"))
    with pytest.raises(SharesConfigError, match="interne_notitie"):
        load_shares_config(path)


def test_withdrawn_recipient_loses_its_projection(lake, tmp_path):
    config_path = tmp_path / "shares.yaml"
    only_a = SHARES_YAML.split("  - name: partner-b")[0]
    config_path.write_text(only_a, encoding="utf-8")
    location_b = projection_location("partner-b", _table("clienten"))
    assert location_b.is_dir()
    report = materialise_recipient_tables(DAY2, config_path=config_path)
    assert str(location_b) in report["removed"]
    assert not location_b.exists()
    # Restore partner-b for any later test in this module.
    materialise_recipient_tables(DAY2)
    assert location_b.is_dir()


def test_shipped_config_materialises_the_demo_mart(tmp_path):
    from ggm_lakehouse.config import project_root

    lake_root = tmp_path / "lake"
    mart = pd.DataFrame(
        {
            "peildatum": [dt.date(2026, 6, 1)] * 2,
            "wijkcode": ["WK999901", "WK999901"],
            "wijknaam": ["Centrum", "Centrum"],
            "buurtcode": ["BU99990101", "BU99990102"],
            "buurtnaam": ["Markt", "Haven"],
            "leeftijdsklasse": ["0-17", "18-64"],
            "huishoudtype": ["gezin", "alleenstaand"],
            "aantal_inwoners": pd.array([12, None], dtype="Int32"),
            "onderdrukt": [False, True],
        }
    )
    write_deltalake(str(lake_root / "gold" / "inwoners_per_buurt"), mart, partition_by=["peildatum"])
    shipped = project_root() / "config" / "shares.yaml"
    config = load_shares_config(shipped)
    demo = config.recipient("demo-partner")
    report = materialise_recipient_tables(DAY1, config_path=shipped, lake_root=lake_root, recipients=[demo])
    entry = report["recipients"]["demo-partner"]["gemeente_gold.demografie.inwoners_per_buurt"]
    assert entry["rows"] == 2 and entry["version"] == 0
    assert entry["columns"] == list(mart.columns)


# The zorg share of SHARES_YAML, with a second table that links to the first through the pseudonym.
ROTATION_YAML = SHARES_YAML.split("          - name: clienten")[0] + """\
          - {name: clienten, location: gold/clienten, columns: [bsn_pseudoniem, wijkcode, zorgvorm],
             pseudonym_columns: [bsn_pseudoniem]}
          - {name: indicaties, location: gold/indicaties, pseudonym_columns: [bsn_pseudoniem]}
recipients:
  - {name: partner-a, shares: [zorg]}
  - {name: partner-b, shares: [zorg]}
"""


def _pseudonym_of_generation(recipient: str, generation: int, internal: str) -> str:
    # Written out independently of the product code: the generation joins the recipient's name in the key label.
    label = f"ggm-sharing-recipient-key-v1\x1f{recipient}\x1f{generation}"
    key = hmac.new(SHARING_SECRET.encode(), label.encode(), hashlib.sha256).digest()
    return hmac.new(key, f"share:{recipient}\x1f{internal}".encode(), hashlib.sha256).hexdigest()


def _read_projections(recipient: str) -> dict[str, pd.DataFrame]:
    return {name: DeltaTable(str(projection_location(recipient, _table(name)))).to_pandas() for name in ("clienten", "indicaties")}


def test_rotating_one_recipients_key_changes_its_pseudonyms_only_and_keeps_counts_and_links(tmp_path, monkeypatch, capsys):
    from ggm_lakehouse.cli import main as ggm

    lake_root = own_site(tmp_path, monkeypatch)
    (tmp_path / "shares.yaml").write_text(ROTATION_YAML, encoding="utf-8")
    write_deltalake(str(lake_root / "gold" / "clienten"), _clienten(6).drop(columns=["interne_notitie"]))
    indicaties = pd.DataFrame({"bsn_pseudoniem": [_internal(i % 4) for i in range(10)], "product": [f"P{i}" for i in range(10)]})
    write_deltalake(str(lake_root / "gold" / "indicaties"), indicaties)
    materialise_recipient_tables(DAY1, run_id="before-rotation")
    before = {r: _read_projections(r) for r in ("partner-a", "partner-b")}
    b_version = DeltaTable(str(projection_location("partner-b", _table("clienten")))).version()

    assert ggm(["sharing", "recipient", "rotate-key", "partner-a", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["key_generation"] == 2
    assert {t: (e["rows"], e["changed"]) for t, e in result["tables"].items()} == {
        "zorg.wmo.clienten": (6, True), "zorg.wmo.indicaties": (10, True)}

    after = _read_projections("partner-a")
    for name in ("clienten", "indicaties"):
        assert len(after[name]) == len(before["partner-a"][name])
        assert not set(after[name]["bsn_pseudoniem"]) & set(before["partner-a"][name]["bsn_pseudoniem"])
    assert set(after["clienten"]["bsn_pseudoniem"]) == {_pseudonym_of_generation("partner-a", 2, _internal(i)) for i in range(6)}
    # The recipient's own links hold: every indicatie still finds its client, as before the rotation.
    joined = lambda p: len(p["indicaties"].merge(p["clienten"], on="bsn_pseudoniem"))  # noqa: E731
    assert joined(after) == joined(before["partner-a"]) == 10
    # Nobody else is touched, and the next publish keeps the new generation instead of going back.
    assert _read_projections("partner-b")["clienten"].equals(before["partner-b"]["clienten"])
    assert DeltaTable(str(projection_location("partner-b", _table("clienten")))).version() == b_version
    again = materialise_recipient_tables(DAY1, run_id="after-rotation")
    assert not any(e["changed"] for tables in again["recipients"].values() for e in tables.values())


def test_a_recipient_added_again_under_an_old_name_never_gets_the_old_pseudonyms(tmp_path):
    from sharing_server.recipients import TokenStore

    store = TokenStore(tmp_path / "recipients.json")
    store.issue("partner-c", None)
    assert store.key_generation("partner-c") == 1
    store.reconcile([])  # partner-c left the configuration: its incarnation is retired
    store.issue("partner-c", None)  # and a new partner came under the same name
    assert store.key_generation("partner-c") == 2
    assert store.rotate_pseudonym_key("partner-c") == 3 and store.key_generation("partner-c") == 3
