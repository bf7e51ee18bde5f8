"""Change data feed, predicate pruning, the request audit log and recipient management.

Real Delta tables (``deltalake``, change data feed enabled) over several versions, the
server under uvicorn on an ephemeral port, the official ``delta-sharing`` client for the
partner's view and ``requests`` for protocol details the client hides.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
from pathlib import Path

import delta_sharing
import pandas as pd
import pytest
import requests
import uvicorn
from deltalake import DeltaTable, write_deltalake

from sharing_server import predicates
from sharing_server.app import create_app
from sharing_server.audit import read_audit, summarise_audit
from sharing_server.recipients import (
    RecipientExistsError,
    UnknownRecipientError,
    UnknownShareError,
    add_recipient,
    issue_profile,
    list_recipients,
    rotate,
)
from sharing_server.signing import FileClaims, UrlSigner

URL_KEY = b"cdf-audit-test-url-key-0123456789abcdef"
CDF_CONFIG = {"delta.enableChangeDataFeed": "true"}

# Served directly (serve_from: source): the change data feed tests need the exact gold
# commits; per-recipient projections are covered by test_sharing_projections.py.
SHARES_YAML = """
server:
  serve_from: source
shares:
  - name: mutaties_share
    schemas:
      - name: brp
        tables:
          - name: verhuizingen
            location: gold/verhuizingen
            history_shared: true
          - name: verhuizingen_actueel
            location: gold/verhuizingen
          - name: zonder_cdf
            location: gold/zonder_cdf
            history_shared: true
          - name: inwoners
            location: gold/inwoners
  - name: extra_share
    schemas:
      - name: overig
        tables:
          - name: zonder_cdf
            location: gold/zonder_cdf
recipients:
  - name: yaml-partner
    shares: [mutaties_share]
"""


def _verhuizingen(ids: list[int], wijk: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "persoon_id": pd.array(ids, dtype="int64"),
            "wijk_code": [wijk] * len(ids),
            "buurt_code": [f"BU{wijk[2:]}{i:02d}" for i in ids],
        }
    )


def _inwoners() -> pd.DataFrame:
    rows = [
        ("BU03630000", "WK036300", 2025, 4_200),
        ("BU03630001", "WK036300", 2026, 3_900),
        ("BU03630100", "WK036301", 2025, 6_100),
        ("BU03630200", "WK036302", 2026, 20_500),
    ]
    return pd.DataFrame(
        {
            "buurt_code": [r[0] for r in rows],
            "wijk_code": [r[1] for r in rows],
            "peiljaar": pd.array([r[2] for r in rows], dtype="int32"),
            "inwoners": pd.array([r[3] for r in rows], dtype="int64"),
        }
    )


def _build_lake(lake: Path) -> None:
    path = str(lake / "gold" / "verhuizingen")
    # v0: three inserts in two partitions; v1: one append; v2: a delete (writes a cdc file);
    # v3: an overwrite (removes every file, adds one).
    write_deltalake(
        path,
        pd.concat([_verhuizingen([1, 2], "WK036300"), _verhuizingen([3], "WK036301")], ignore_index=True),
        partition_by=["wijk_code"],
        configuration=CDF_CONFIG,
    )
    write_deltalake(path, _verhuizingen([4], "WK036301"), partition_by=["wijk_code"], mode="append")
    DeltaTable(path).delete("persoon_id = 2")
    write_deltalake(path, _verhuizingen([7, 8], "WK036302"), partition_by=["wijk_code"], mode="overwrite")

    write_deltalake(str(lake / "gold" / "zonder_cdf"), pd.DataFrame({"x": [1]}))
    write_deltalake(str(lake / "gold" / "inwoners"), _inwoners(), partition_by=["wijk_code", "peiljaar"])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("cdf")
    lake, sharing_root, config_path = root / "lake", root / "sharing", root / "shares.yaml"
    _build_lake(lake)
    config_path.write_text(SHARES_YAML, encoding="utf-8")
    patcher = pytest.MonkeyPatch()
    patcher.setenv("GGM_LAKE_ROOT", str(lake))
    patcher.setenv("GGM_SHARING_ROOT", str(sharing_root))
    patcher.setenv("GGM_SHARES_CONFIG", str(config_path))

    state_path, audit_dir = sharing_root / "recipients.json", sharing_root / "audit"
    app = create_app(config_path, state_path=state_path, url_key=URL_KEY, audit_dir=audit_dir)
    uv_server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=uv_server.run, daemon=True)
    thread.start()
    while not uv_server.started:  # the test timeout guards a hang
        if not thread.is_alive():
            raise RuntimeError("uvicorn failed to start")
        time.sleep(0.02)
    endpoint = f"http://127.0.0.1:{uv_server.servers[0].sockets[0].getsockname()[1]}/delta-sharing"
    paths = {"config_path": config_path, "state_path": state_path}

    def profile_file(recipient: str, name: str | None = None) -> str:
        path = root / f"{name or recipient}.share"
        path.write_text(json.dumps(issue_profile(recipient, endpoint=endpoint, **paths)), encoding="utf-8")
        return str(path)

    def write_profile(profile: dict, name: str) -> str:
        path = root / f"{name}.share"
        path.write_text(json.dumps(profile), encoding="utf-8")
        return str(path)

    try:
        yield {
            "endpoint": endpoint,
            "root": root,
            "lake": lake,
            "audit_dir": audit_dir,
            "paths": paths,
            "profile_file": profile_file,
            "write_profile": write_profile,
            "profile": profile_file("yaml-partner"),
        }
    finally:
        uv_server.should_exit = True
        thread.join()
        patcher.undo()


def _token(profile_path: str) -> str:
    return json.loads(Path(profile_path).read_text())["bearerToken"]


def _ndjson(response: requests.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def _changes(server, token: str, table: str = "verhuizingen", **params) -> requests.Response:
    return requests.get(
        f"{server['endpoint']}/shares/mutaties_share/schemas/brp/tables/{table}/changes",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _query(server, token: str, body: dict, table: str = "inwoners") -> requests.Response:
    return requests.post(
        f"{server['endpoint']}/shares/mutaties_share/schemas/brp/tables/{table}/query",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _changes_by_version(df: pd.DataFrame) -> dict[int, list[tuple[str, int]]]:
    result: dict[int, list[tuple[str, int]]] = {}
    for row in df.to_dict("records"):
        result.setdefault(int(row["_commit_version"]), []).append((row["_change_type"], int(row["persoon_id"])))
    return {version: sorted(changes) for version, changes in result.items()}


# ----------------------------------------------------------------- change data feed
def test_official_client_reads_change_data_feed_across_versions(server):
    url = f"{server['profile']}#mutaties_share.brp.verhuizingen"
    df = delta_sharing.load_table_changes_as_pandas(url, starting_version=0, ending_version=3)
    assert {"persoon_id", "wijk_code", "buurt_code", "_change_type", "_commit_version", "_commit_timestamp"} <= set(df.columns)
    assert _changes_by_version(df) == {
        0: [("insert", 1), ("insert", 2), ("insert", 3)],
        1: [("insert", 4)],
        2: [("delete", 2)],  # from the cdc file the DELETE wrote, not from its add/remove
        3: [("delete", 1), ("delete", 3), ("delete", 4), ("insert", 7), ("insert", 8)],
    }
    history = {int(c["version"]): int(c["timestamp"]) for c in DeltaTable(str(server["lake"] / "gold" / "verhuizingen")).history()}
    assert all(int(row["_commit_timestamp"]) == history[int(row["_commit_version"])] for row in df.to_dict("records"))

    only_delete = delta_sharing.load_table_changes_as_pandas(url, starting_version=2, ending_version=2)
    assert _changes_by_version(only_delete) == {2: [("delete", 2)]}


def test_change_data_feed_by_timestamps(server):
    history = {int(c["version"]): int(c["timestamp"]) for c in DeltaTable(str(server["lake"] / "gold" / "verhuizingen")).history()}

    def iso(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"

    url = f"{server['profile']}#mutaties_share.brp.verhuizingen"
    df = delta_sharing.load_table_changes_as_pandas(url, starting_timestamp=iso(history[1]), ending_timestamp=iso(history[2]))
    assert _changes_by_version(df) == {1: [("insert", 4)], 2: [("delete", 2)]}


def test_change_data_feed_wire_format_and_signed_urls(server):
    token = _token(server["profile"])
    response = _changes(server, token, startingVersion=1, endingVersion=99)  # the end is capped at the latest
    assert response.status_code == 200
    assert response.headers["Delta-Table-Version"] == "1"
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    protocol_line, metadata_line, *actions = _ndjson(response)
    assert protocol_line == {"protocol": {"minReaderVersion": 1}}
    assert metadata_line["metaData"]["configuration"]["delta.enableChangeDataFeed"] == "true"
    kinds = [(next(iter(a)), a[next(iter(a))]["version"]) for a in actions]
    assert kinds == [("add", 1), ("cdf", 2), ("remove", 3), ("remove", 3), ("remove", 3), ("add", 3)]
    for action in actions:
        entry = next(iter(action.values()))
        assert {"url", "id", "partitionValues", "size", "timestamp", "version", "expirationTimestamp"} <= set(entry)
        fetched = requests.get(entry["url"], timeout=30)
        assert fetched.status_code == 200 and fetched.content[:4] == b"PAR1" and len(fetched.content) == entry["size"]

    # A correctly signed URL for a path the commit did not remove is refused.
    cdf_entry = next(a["cdf"] for a in actions if "cdf" in a)
    payload = cdf_entry["url"].rsplit("/", 1)[1].partition("?")[0]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = FileClaims(
        share=claims["s"], schema=claims["c"], table=claims["t"], table_id=claims["i"], version=2,
        path=claims["p"], expires_ms=claims["e"], token_id=claims["k"], kind="remove",
    )
    assert requests.get(f"{server['endpoint']}/files/{UrlSigner(URL_KEY).sign(forged)}", timeout=30).status_code == 403


def test_change_data_feed_in_delta_response_format(server):
    response = requests.get(
        f"{server['endpoint']}/shares/mutaties_share/schemas/brp/tables/verhuizingen/changes",
        params={"startingVersion": 2, "endingVersion": 3},
        headers={
            "Authorization": f"Bearer {_token(server['profile'])}",
            "delta-sharing-capabilities": "responseformat=delta;readerfeatures=deletionvectors,columnmapping",
        },
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["delta-sharing-capabilities"] == "responseformat=delta"
    protocol_line, metadata_line, *files = _ndjson(response)
    assert "deltaProtocol" in protocol_line["protocol"] and "deltaMetadata" in metadata_line["metaData"]
    actions = [(f["file"]["version"], next(iter(f["file"]["deltaSingleAction"]))) for f in files]
    assert actions == [(2, "cdc"), (3, "remove"), (3, "remove"), (3, "remove"), (3, "add")]
    for line in files:
        action = next(iter(line["file"]["deltaSingleAction"].values()))
        assert action["path"].startswith(server["endpoint"] + "/files/")


@pytest.mark.parametrize(
    ("table", "params", "fragment"),
    [
        ("verhuizingen_actueel", {"startingVersion": 0}, "without history"),
        ("zonder_cdf", {"startingVersion": 0}, "enableChangeDataFeed"),
        ("verhuizingen", {"startingVersion": 4}, "after the latest"),
        ("verhuizingen", {"startingVersion": 3, "endingVersion": 1}, "after the ending"),
        ("verhuizingen", {"endingVersion": 1}, "required"),
        ("verhuizingen", {"startingVersion": -1}, "non-negative"),
        ("verhuizingen", {"startingVersion": 0, "startingTimestamp": "2026-01-01T00:00:00Z"}, "exclusive"),
        ("verhuizingen", {"startingTimestamp": "2999-01-01T00:00:00Z"}, "after the latest"),
    ],
)
def test_change_data_feed_errors(server, table, params, fragment):
    response = _changes(server, _token(server["profile"]), table=table, **params)
    assert response.status_code == 400
    body = response.json()
    assert body["errorCode"] == "INVALID_PARAMETER_VALUE" and fragment in body["message"]


# ----------------------------------------------------------------- predicate hints
def _hint(tree: dict) -> str:
    return json.dumps(tree)


def _col(name: str, value_type: str = "string") -> dict:
    return {"op": "column", "name": name, "valueType": value_type}


def _lit(value: str, value_type: str = "string") -> dict:
    return {"op": "literal", "value": value, "valueType": value_type}


def test_json_predicate_hints_prune_partitions_over_http(server):
    token = _token(server["profile"])
    all_files = [line["file"] for line in _ndjson(_query(server, token, {})) if "file" in line]
    assert len(all_files) == 4
    equal = _hint({"op": "equal", "children": [_col("wijk_code"), _lit("WK036300")]})
    pruned = [line["file"] for line in _ndjson(_query(server, token, {"jsonPredicateHints": equal})) if "file" in line]
    assert len(pruned) == 2
    assert {f["partitionValues"]["wijk_code"] for f in pruned} == {"WK036300"}

    # Typed comparison on an int partition combined with a hint on a data column: the
    # partition drops the 2025 files, the column statistics (inwoners max 20500) the WK036302 file.
    mixed = _hint(
        {
            "op": "and",
            "children": [
                {"op": "greaterThan", "children": [_col("peiljaar", "int"), _lit("2025", "int")]},
                {"op": "lessThan", "children": [_col("inwoners", "long"), _lit("5000", "long")]},
            ],
        }
    )
    files = [line["file"] for line in _ndjson(_query(server, token, {"jsonPredicateHints": mixed})) if "file" in line]
    assert [(f["partitionValues"]["peiljaar"], f["partitionValues"]["wijk_code"]) for f in files] == [("2026", "WK036300")]

    # A data column without usable statistics for the literal's type is never a reason to drop.
    text_hint = _hint({"op": "equal", "children": [_col("buurt_code"), _lit("BU03630200")]})
    assert len([line for line in _ndjson(_query(server, token, {"jsonPredicateHints": text_hint})) if "file" in line]) == 4

    # Malformed hints are ignored (best effort), never an error.
    for bad in ("not json", _hint({"op": "frobnicate", "children": []}), _hint({"op": "equal", "children": [_col("wijk_code")]})):
        response = _query(server, token, {"jsonPredicateHints": bad})
        assert response.status_code == 200
        assert len([line for line in _ndjson(response) if "file" in line]) == 4


def test_official_client_with_json_predicate_hints_gets_the_partition_rows(server):
    hint = _hint({"op": "equal", "children": [_col("wijk_code"), _lit("WK036302")]})
    df = delta_sharing.load_as_pandas(f"{server['profile']}#mutaties_share.brp.inwoners", jsonPredicateHints=hint)
    assert list(df["buurt_code"]) == ["BU03630200"]
    assert int(df["inwoners"].iloc[0]) == 20_500


@pytest.mark.parametrize(
    ("tree", "values", "expected"),
    [
        ({"op": "equal", "children": [_col("w"), _lit("a")]}, {"w": "a"}, True),
        ({"op": "equal", "children": [_col("w"), _lit("a")]}, {"w": "b"}, False),
        ({"op": "equal", "children": [_col("w"), _lit("a")]}, {"w": None}, False),  # NULL = 'a' is not true
        ({"op": "isNull", "children": [_col("w")]}, {"w": None}, True),
        ({"op": "not", "children": [{"op": "isNull", "children": [_col("w")]}]}, {"w": None}, False),
        ({"op": "lessThan", "children": [_col("d", "date"), _lit("2026-01-01", "date")]}, {"d": "2025-12-31"}, True),
        ({"op": "greaterThanOrEqual", "children": [_col("n", "int"), _lit("10", "int")]}, {"n": "9"}, False),
        ({"op": "lessThanOrEqual", "children": [_col("t", "timestamp"), _lit("2026-01-01T00:00:00Z", "timestamp")]}, {"t": "2025-12-31 23:59:59"}, True),
        ({"op": "or", "children": [{"op": "equal", "children": [_col("w"), _lit("x")]}, {"op": "equal", "children": [_col("w"), _lit("b")]}]}, {"w": "b"}, True),
        ({"op": "not", "children": [{"op": "equal", "children": [_col("data"), _lit("x")]}]}, {"w": "b"}, True),  # not a partition column
        ({"op": "equal", "children": [_col("n", "int"), _lit("abc", "int")]}, {"n": "1"}, True),  # unparsable: keep
        ({"op": "equal", "children": [_col("b", "bool"), _lit("true", "bool")]}, {"b": "false"}, False),
    ],
)
def test_predicate_evaluation_keeps_files_when_unsure(tree, values, expected):
    columns = list(values)
    assert predicates.may_match(tree, values, columns) is expected


def test_predicate_depth_is_bounded():
    tree: dict = {"op": "equal", "children": [_col("w"), _lit("a")]}
    for _ in range(predicates.MAX_DEPTH + 5):
        tree = {"op": "not", "children": [tree]}
    files = [{"w": "a"}, {"w": "b"}]
    assert predicates.prune_files(files, tree, ["w"], lambda f: f) == files


# ----------------------------------------------------------------- audit log
def test_requests_are_audited_and_summarised(server):
    profile = server["profile_file"]("yaml-partner", name="audit-partner")
    token = _token(profile)
    before = summarise_audit(audit_dir=server["audit_dir"])

    unauthenticated = requests.get(f"{server['endpoint']}/shares", headers={"Authorization": "Bearer nope.nope"}, timeout=30)
    assert unauthenticated.status_code == 401
    query = _query(server, token, {})
    files = [line["file"] for line in _ndjson(query) if "file" in line]
    downloaded = requests.get(files[0]["url"], timeout=30)
    assert downloaded.status_code == 200

    today = dt.datetime.now(dt.timezone.utc).date()
    assert (server["audit_dir"] / f"requests-{today:%Y%m%d}.jsonl").is_file()
    records = read_audit(today, audit_dir=server["audit_dir"])
    refused = [r for r in records if r["status"] == 401]
    assert refused and refused[-1]["recipient"] is None and refused[-1]["endpoint"] == "list_shares"
    download = [r for r in records if r["endpoint"] == "data_file"][-1]
    assert download["recipient"] == "yaml-partner"
    assert (download["share"], download["schema"], download["table"]) == ("mutaties_share", "brp", "inwoners")
    assert download["bytes"] == len(downloaded.content) == files[0]["size"]
    assert download["client_ip"] == "127.0.0.1" and download["status"] == 200
    query_record = [r for r in records if r["endpoint"] == "query_table"][-1]
    assert query_record["files"] == 4 and query_record["version"] == 0
    assert "files/" not in json.dumps(records)  # signed URLs never reach the log

    after = summarise_audit(today, audit_dir=server["audit_dir"])
    table = "mutaties_share.brp.inwoners"

    def delta(recipient: str, key: str, field: str) -> int:
        old = before.get(recipient, {}).get(key, {}).get(field, 0)
        return after[recipient][key][field] - old

    assert delta("yaml-partner", table, "requests") == 2
    assert delta("yaml-partner", table, "files") == 4
    assert delta("yaml-partner", table, "downloads") == 1
    assert delta("yaml-partner", table, "bytes") == files[0]["size"]
    assert delta("yaml-partner", table, "errors") == 0
    assert delta("(anonymous)", "(none)", "errors") == 1
    tomorrow = today + dt.timedelta(days=1)
    assert summarise_audit(tomorrow, audit_dir=server["audit_dir"]) == {}


# ----------------------------------------------------------------- recipient management
def test_add_recipient_gives_a_working_profile_for_its_shares_only(server):
    added = add_recipient("cli-partner", ["EXTRA_SHARE"], expires_days=10, endpoint=server["endpoint"], **server["paths"])
    assert added["name"] == "cli-partner" and added["shares"] == ["extra_share"]
    expiry = dt.datetime.fromisoformat(added["profile"]["expirationTime"].replace("Z", "+00:00"))
    assert dt.timedelta(days=9) < expiry - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(days=10)
    client = delta_sharing.SharingClient(server["write_profile"](added["profile"], "cli-partner"))
    assert [s.name for s in client.list_shares()] == ["extra_share"]
    # Later profiles of a CLI-added recipient inherit its token lifetime.
    later = issue_profile("cli-partner", endpoint=server["endpoint"], **server["paths"])
    later_expiry = dt.datetime.fromisoformat(later["expirationTime"].replace("Z", "+00:00"))
    assert later_expiry - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(days=10)

    with pytest.raises(RecipientExistsError):
        add_recipient("cli-partner", ["extra_share"], **server["paths"])
    with pytest.raises(RecipientExistsError):
        add_recipient("yaml-partner", ["extra_share"], **server["paths"])
    with pytest.raises(UnknownShareError):
        add_recipient("other-partner", ["bestaat_niet"], **server["paths"])
    with pytest.raises(ValueError):
        add_recipient("with space", ["extra_share"], **server["paths"])


def test_list_recipients_reports_tokens_without_secrets(server):
    added = add_recipient("lijst-partner", ["mutaties_share", "extra_share"], expires_days=5, **server["paths"])
    listing = {item["name"]: item for item in list_recipients(**server["paths"])}
    assert listing["yaml-partner"]["source"] == "shares.yaml"
    assert listing["yaml-partner"]["shares"] == ["mutaties_share"]
    assert listing["yaml-partner"]["active_tokens"] >= 1
    entry = listing["lijst-partner"]
    token_id = added["profile"]["bearerToken"].partition(".")[0]
    assert entry["recipient_id"] and entry["recipient_id"] != listing["yaml-partner"]["recipient_id"]
    assert entry["tokens"] == [
        {"token_id": token_id, "created_at": entry["tokens"][0]["created_at"], "expires_at": added["profile"]["expirationTime"]}
    ]
    assert {k: v for k, v in entry.items() if k not in ("recipient_id", "tokens")} == {
        "name": "lijst-partner",
        "shares": ["mutaties_share", "extra_share"],
        "source": "state",
        "active_tokens": 1,
        "earliest_expiry": added["profile"]["expirationTime"],
        "key_generation": 1,
    }
    text = json.dumps(list_recipients(**server["paths"]))
    assert added["profile"]["bearerToken"] not in text
    assert added["profile"]["bearerToken"].partition(".")[2] not in text


def test_rotate_revokes_old_tokens_and_issues_a_new_profile(server):
    old_profile = server["profile_file"]("yaml-partner", name="rotate-old")
    old_client = delta_sharing.SharingClient(old_profile)
    assert [s.name for s in old_client.list_shares()] == ["mutaties_share"]

    rotated = rotate("yaml-partner", endpoint=server["endpoint"], **server["paths"])
    assert rotated["name"] == "yaml-partner" and rotated["revoked_tokens"] >= 1
    with pytest.raises(requests.HTTPError) as excinfo:
        old_client.list_shares()
    assert excinfo.value.response.status_code == 401
    new_client = delta_sharing.SharingClient(server["write_profile"](rotated["profile"], "rotate-new"))
    assert [s.name for s in new_client.list_shares()] == ["mutaties_share"]
    status = {item["name"]: item for item in list_recipients(**server["paths"])}["yaml-partner"]
    assert status["active_tokens"] == 1
    # Profiles issued before the rotation are used by other tests: reissue for them.
    server["profile"] = server["profile_file"]("yaml-partner")

    with pytest.raises(UnknownRecipientError):
        rotate("nobody-partner", **server["paths"])
