"""The official ``delta-sharing`` Python client (1.4.2) against recipient projections.

Covers what partners do with the client: ``load_as_pandas`` in the parquet and the delta
response format, ``limit``, ``jsonPredicateHints``, time travel by version and by
timestamp, and ``load_table_changes_as_pandas`` (change data feed) over version and
timestamp ranges. The gold table changes between two publication days, so the recipient's
projection has two versions. Everything over real HTTP on 127.0.0.1.
"""
from __future__ import annotations

import datetime as dt
import json
import os

import delta_sharing
import pandas as pd
import pytest
from deltalake import DeltaTable, write_deltalake

from ggm_lakehouse.model.shares_config import load_shares_config
from sharing_server.app import create_app
from sharing_server.embedded import EmbeddedServer
from sharing_server.projections import materialise_recipient_tables, projection_location
from sharing_server.recipients import issue_profile

URL_KEY = b"clients-test-url-key-0123456789abcdef"
TABLE = "gemeente_gold.demografie.inwoners_per_buurt"

SHARES_YAML = """
shares:
  - name: gemeente_gold
    schemas:
      - name: demografie
        tables:
          - name: inwoners_per_buurt
            location: gold/inwoners_per_buurt
            history_shared: true
            columns: [peildatum, wijkcode, buurtcode, aantal_inwoners]
recipients:
  - name: analist
    shares: [gemeente_gold]
"""


def _mart(day: dt.date, buurten: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "peildatum": [day] * buurten,
            "wijkcode": [f"WK9999{(i % 3) + 1:02d}" for i in range(buurten)],
            "buurtcode": [f"BU9999{i:04d}" for i in range(buurten)],
            "aantal_inwoners": [100 + i for i in range(buurten)],
            "onderdrukt": [False] * buurten,
        }
    )


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("clients")
    lake, config_path = root / "lake", root / "shares.yaml"
    config_path.write_text(SHARES_YAML, encoding="utf-8")
    env = {"GGM_LAKE_ROOT": str(lake), "GGM_SHARING_ROOT": str(root / "sharing"), "GGM_SHARES_CONFIG": str(config_path)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    gold = lake / "gold" / "inwoners_per_buurt"
    write_deltalake(str(gold), _mart(dt.date(2026, 6, 1), 9), partition_by=["wijkcode"])
    materialise_recipient_tables(dt.date(2026, 6, 1))
    write_deltalake(str(gold), _mart(dt.date(2026, 6, 2), 12), partition_by=["wijkcode"], mode="overwrite")
    materialise_recipient_tables(dt.date(2026, 6, 2))
    table = next(t for s in load_shares_config().shares for t in s.all_tables())
    projection = DeltaTable(str(projection_location("analist", table)))
    server = EmbeddedServer(create_app(config_path, url_key=URL_KEY, audit_dir=root / "audit")).start()
    profile = root / "analist.share"
    profile.write_text(json.dumps(issue_profile("analist", endpoint=server.endpoint)), encoding="utf-8")
    try:
        yield {"url": f"{profile}#{TABLE}", "profile": str(profile), "projection": projection}
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _rows(df: pd.DataFrame) -> list[tuple]:
    return sorted(zip(df["buurtcode"], df["aantal_inwoners"].astype(int), df["peildatum"].astype(str)))


def _iso_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _commit_ms(projection: DeltaTable, version: int) -> int:
    return next(int(c["timestamp"]) for c in projection.history() if int(c["version"]) == version)


def test_parquet_format_returns_the_latest_projection(shared):
    df = delta_sharing.load_as_pandas(shared["url"])
    assert sorted(df.columns) == ["aantal_inwoners", "buurtcode", "peildatum", "wijkcode"]
    assert _rows(df) == _rows(shared["projection"].to_pandas())
    assert len(df) == 12


def test_delta_format_returns_the_same_rows(shared):
    parquet = delta_sharing.load_as_pandas(shared["url"])
    delta = delta_sharing.load_as_pandas(shared["url"], use_delta_format=True)
    assert _rows(delta) == _rows(parquet)


def test_limit_caps_the_rows(shared):
    assert len(delta_sharing.load_as_pandas(shared["url"], limit=4)) == 4


def test_json_predicate_hints_through_the_client(shared):
    hint = json.dumps(
        {"op": "equal", "children": [
            {"op": "column", "name": "wijkcode", "valueType": "string"},
            {"op": "literal", "value": "WK999902", "valueType": "string"},
        ]}
    )
    df = delta_sharing.load_as_pandas(shared["url"], jsonPredicateHints=hint)
    # Hints prune files; the partition holds exactly the matching rows.
    assert set(df["wijkcode"]) == {"WK999902"} and len(df) == 4


def test_time_travel_by_version_and_by_timestamp(shared):
    v0 = delta_sharing.load_as_pandas(shared["url"], version=0)
    assert len(v0) == 9 and set(v0["peildatum"].astype(str)) == {"2026-06-01"}
    at_v0 = delta_sharing.load_as_pandas(shared["url"], timestamp=_iso_ms(_commit_ms(shared["projection"], 0)))
    assert _rows(at_v0) == _rows(v0)
    at_v1 = delta_sharing.load_as_pandas(shared["url"], timestamp=_iso_ms(_commit_ms(shared["projection"], 1)))
    assert len(at_v1) == 12


def test_change_data_feed_by_versions(shared):
    changes = delta_sharing.load_table_changes_as_pandas(shared["url"], starting_version=0, ending_version=1)
    by_type = changes.groupby("_change_type").size().to_dict()
    inserted_v0 = changes[(changes["_change_type"] == "insert") & (changes["_commit_version"] == 0)]
    assert len(inserted_v0) == 9
    # The republication of day 2 replaced the projection: day-1 rows out, day-2 rows in.
    v1 = changes[changes["_commit_version"] == 1]
    assert set(v1.loc[v1["_change_type"] == "insert", "peildatum"].astype(str)) == {"2026-06-02"}
    assert len(v1[v1["_change_type"] == "insert"]) == 12
    assert by_type.get("delete", 0) == 9
    assert set(v1.loc[v1["_change_type"] == "delete", "peildatum"].astype(str)) == {"2026-06-01"}


def test_change_data_feed_by_timestamps(shared):
    start = _iso_ms(_commit_ms(shared["projection"], 1))
    changes = delta_sharing.load_table_changes_as_pandas(shared["url"], starting_timestamp=start)
    assert set(changes["_commit_version"]) == {1}
    assert len(changes[changes["_change_type"] == "insert"]) == 12


def test_delta_format_change_data_feed(shared):
    changes = delta_sharing.load_table_changes_as_pandas(shared["url"], starting_version=1, use_delta_format=True)
    assert len(changes[changes["_change_type"] == "insert"]) == 12
    assert len(changes[changes["_change_type"] == "delete"]) == 9


def test_listing_and_version_through_the_client(shared):
    client = delta_sharing.SharingClient(shared["profile"])
    tables = client.list_all_tables()
    assert [(t.share, t.schema, t.name) for t in tables] == [("gemeente_gold", "demografie", "inwoners_per_buurt")]
    assert delta_sharing.get_table_version(shared["url"]) == 1
    assert delta_sharing.get_table_version(shared["url"], starting_timestamp=_iso_ms(_commit_ms(shared["projection"], 1))) == 1


def test_file_pruning_by_column_statistics(shared):
    """A hint on a data column drops the files whose min/max statistics rule it out."""
    token = json.loads(open(shared["profile"]).read())
    hint = json.dumps({"op": "greaterThanOrEqual", "children": [
        {"op": "column", "name": "aantal_inwoners", "valueType": "int"},
        {"op": "literal", "value": "111", "valueType": "int"},
    ]})
    import requests

    def files(body: dict) -> list[dict]:
        response = requests.post(
            f"{token['endpoint']}/shares/gemeente_gold/schemas/demografie/tables/inwoners_per_buurt/query",
            headers={"Authorization": f"Bearer {token['bearerToken']}"}, json=body, timeout=30,
        )
        return [json.loads(line)["file"] for line in response.text.splitlines() if '"file"' in line]

    everything = files({})
    pruned = files({"jsonPredicateHints": hint})
    # Day 2: 12 buurten with 100..111 over three wijken; only the wijk holding 111 can match.
    assert len(everything) == 3 and len(pruned) == 1
    assert json.loads(pruned[0]["stats"])["maxValues"]["aantal_inwoners"] == 111
    # The Python client reads the remaining file whole (hints prune files, not rows).
    df = delta_sharing.load_as_pandas(shared["url"], jsonPredicateHints=hint)
    assert sorted(df["aantal_inwoners"]) == [102, 105, 108, 111]
