"""The Delta Sharing server end to end: real Delta tables, real HTTP, the official client.

A temporary lake gets real Delta tables written with ``deltalake`` (several
versions), a temporary ``shares.yaml`` and sharing root; the server runs under
uvicorn on an ephemeral port in a background thread. Partners' view is checked
with the official ``delta-sharing`` Python client; protocol details the client
does not expose (headers, error bodies, signed URLs) with ``requests``/``http.client``.
"""
from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import os
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import delta_sharing
import pandas as pd
import pytest
import requests
import uvicorn
from deltalake import write_deltalake

from sharing_server.app import create_app
from sharing_server.recipients import TokenStore, UnknownRecipientError, issue_profile, revoke
from sharing_server.signing import FileClaims, UrlSigner

URL_KEY = b"test-url-signing-key-0123456789abcdef"
TABLE_URL = "gemeente_gold.demografie.inwoners_per_buurt"

# The protocol tests serve hand-built gold tables directly (serve_from: source) so that
# their exact commits are on the wire; per-recipient projections: test_sharing_projections.py.
SHARES_YAML = """
server:
  url_ttl_seconds: 600
  serve_from: source
shares:
  - name: gemeente_gold
    comment: gold marts
    schemas:
      - name: demografie
        tables:
          - name: inwoners_per_buurt
            location: gold/inwoners_per_buurt
          - name: inwoners_historie
            location: gold/inwoners_per_buurt
            history_shared: true
  - name: zorg_gold
    schemas:
      - name: wmo
        tables:
          - name: voorzieningen
            location: gold/wmo_voorzieningen
recipients:
  - name: demo-partner
    shares: [gemeente_gold]
  - name: zorg-partner
    shares: [zorg_gold]
  - name: breed-partner
    shares: [gemeente_gold, zorg_gold]
"""


def _inwoners(version: int) -> pd.DataFrame:
    """Version 0 and 1 of the table: same buurten, different counts."""
    peildatum = dt.date(2026, 1, 1) if version == 0 else dt.date(2026, 7, 1)
    rows = [
        ("BU03630000", "Burgwallen-Oude Zijde", "WK036300", 4_200 + version * 10, 0.11),
        ("BU03630001", "Burgwallen-Nieuwe Zijde", "WK036300", 3_900 + version * 10, 0.09),
        ("BU03630100", "Grachtengordel-West", "WK036301", 6_100 + version * 10, 0.17),
        ("BU03630200", "Jordaan", "WK036302", 20_500 + version * 10, 0.14),
        ("BU03630201", "Westelijke Eilanden", "WK036302", 2_800 + version * 10, None),
    ]
    return pd.DataFrame(
        {
            "buurt_code": [r[0] for r in rows],
            "buurt_naam": [r[1] for r in rows],
            "wijk_code": [r[2] for r in rows],
            "inwoners": pd.array([r[3] for r in rows], dtype="int64"),
            "aandeel_65_plus": [r[4] for r in rows],
            "peildatum": [peildatum] * len(rows),
        }
    )


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("buurt_code").reset_index(drop=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A running sharing server over a temporary lake; yields a small handle dict."""
    root = tmp_path_factory.mktemp("sharing")
    lake, sharing_root, config_path = root / "lake", root / "sharing", root / "shares.yaml"
    table_path = lake / "gold" / "inwoners_per_buurt"
    write_deltalake(str(table_path), _inwoners(0), partition_by=["wijk_code"])
    write_deltalake(str(table_path), _inwoners(1), partition_by=["wijk_code"], mode="overwrite")
    write_deltalake(str(lake / "gold" / "wmo_voorzieningen"), pd.DataFrame({"voorziening": ["hulp"], "aantal": [3]}))
    config_path.write_text(SHARES_YAML, encoding="utf-8")

    saved = {k: os.environ.get(k) for k in ("GGM_LAKE_ROOT", "GGM_SHARING_ROOT", "GGM_SHARES_CONFIG")}
    os.environ.update(GGM_LAKE_ROOT=str(lake), GGM_SHARING_ROOT=str(sharing_root), GGM_SHARES_CONFIG=str(config_path))

    app = create_app(config_path, url_key=URL_KEY)
    uv_server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=uv_server.run, daemon=True)
    thread.start()
    while not uv_server.started:  # startup takes well under a second; the test timeout guards a hang
        if not thread.is_alive():
            raise RuntimeError("uvicorn failed to start")
        time.sleep(0.02)
    port = uv_server.servers[0].sockets[0].getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}/delta-sharing"

    def profile_file(recipient: str, name: str | None = None) -> str:
        path = root / f"{name or recipient}.share"
        path.write_text(json.dumps(issue_profile(recipient, endpoint=endpoint)), encoding="utf-8")
        return str(path)

    try:
        yield {
            "endpoint": endpoint,
            "port": port,
            "root": root,
            "config_path": config_path,
            "sharing_root": sharing_root,
            "table_path": table_path,
            "profile_file": profile_file,
            "demo_profile": profile_file("demo-partner"),
        }
    finally:
        uv_server.should_exit = True
        thread.join()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _token(profile_path: str) -> str:
    return json.loads(Path(profile_path).read_text())["bearerToken"]


def _get(server, path: str, token: str | None, **kwargs) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(server["endpoint"] + path, headers=headers, timeout=30, **kwargs)


def _query(server, token: str, body: dict | None = None, table: str = "inwoners_per_buurt", headers: dict | None = None):
    return requests.post(
        f"{server['endpoint']}/shares/gemeente_gold/schemas/demografie/tables/{table}/query",
        json=body if body is not None else {},
        headers={"Authorization": f"Bearer {token}", **(headers or {})},
        timeout=30,
    )


def _ndjson(response: requests.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def _raw_get(server, raw_path: str, token: str) -> tuple[int, dict]:
    """GET a path byte for byte (requests/urllib3 would normalise '..' and escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=30)
    try:
        conn.putrequest("GET", raw_path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else {}
    finally:
        conn.close()


# ----------------------------------------------------------------- official client
def test_official_client_lists_only_entitled_tables(server):
    client = delta_sharing.SharingClient(server["demo_profile"])
    tables = client.list_all_tables()
    assert {(t.share, t.schema, t.name) for t in tables} == {
        ("gemeente_gold", "demografie", "inwoners_per_buurt"),
        ("gemeente_gold", "demografie", "inwoners_historie"),
    }
    assert [s.name for s in client.list_shares()] == ["gemeente_gold"]
    schemas = client.list_schemas(delta_sharing.Share("gemeente_gold"))
    assert [s.name for s in schemas] == ["demografie"]
    assert len(client.list_tables(schemas[0])) == 2


def test_official_client_reads_latest_version_equal_to_source(server):
    df = delta_sharing.load_as_pandas(f"{server['demo_profile']}#{TABLE_URL}")
    expected = _inwoners(1)
    assert list(df.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(_sorted(df), _sorted(expected), check_dtype=False)


def test_delta_response_format_query_wraps_add_actions_with_signed_urls(server):
    # The official client reads delta-format answers with delta-kernel-rs, which (seen
    # with client 1.4.2) treats a plain-http file URL as a path inside its local temporary
    # table instead of fetching it; pre-signed URLs are https in production. Over this
    # plain-http test server the answer's shape and URLs are therefore checked directly.
    token = _token(server["demo_profile"])
    response = _query(server, token, headers={"delta-sharing-capabilities": "responseformat=delta;readerfeatures=deletionvectors"})
    assert response.headers["delta-sharing-capabilities"] == "responseformat=delta"
    assert response.headers["Delta-Table-Version"] == "1"
    protocol_line, metadata_line, *file_lines = _ndjson(response)
    assert protocol_line["protocol"]["deltaProtocol"] == {"minReaderVersion": 1, "minWriterVersion": 2}
    assert metadata_line["metaData"]["deltaMetadata"]["format"]["provider"] == "parquet"
    assert len(file_lines) == 3
    for line in file_lines:
        add = line["file"]["deltaSingleAction"]["add"]
        assert add["path"].startswith(server["endpoint"] + "/files/")
        assert requests.get(add["path"], timeout=30).content[:4] == b"PAR1"
        assert line["file"]["id"] and line["file"]["expirationTimestamp"] > time.time() * 1000


def test_limit_returns_requested_rows_and_limit_hint_prunes_files(server):
    df = delta_sharing.load_as_pandas(f"{server['demo_profile']}#{TABLE_URL}", limit=2)
    assert len(df) == 2
    assert set(df["buurt_code"]) <= set(_inwoners(1)["buurt_code"])

    token = _token(server["demo_profile"])
    all_files = [line for line in _ndjson(_query(server, token)) if "file" in line]
    limited = [line for line in _ndjson(_query(server, token, {"limitHint": 1})) if "file" in line]
    assert len(all_files) == 3  # one file per wijk_code partition
    assert len(limited) == 1
    assert json.loads(limited[0]["file"]["stats"])["numRecords"] >= 1


def test_version_header_on_version_metadata_and_query(server):
    assert delta_sharing.get_table_version(f"{server['demo_profile']}#{TABLE_URL}") == 1
    token = _token(server["demo_profile"])
    base = "/shares/gemeente_gold/schemas/demografie/tables/inwoners_per_buurt"
    version = _get(server, f"{base}/version", token)
    assert version.status_code == 200 and version.headers["Delta-Table-Version"] == "1"
    assert version.content == b""

    metadata = _get(server, f"{base}/metadata", token)
    assert metadata.headers["Delta-Table-Version"] == "1"
    assert metadata.headers["Content-Type"].startswith("application/x-ndjson")
    protocol_line, metadata_line = _ndjson(metadata)
    assert protocol_line == {"protocol": {"minReaderVersion": 1}}
    meta = metadata_line["metaData"]
    assert meta["format"] == {"provider": "parquet"}
    assert meta["partitionColumns"] == ["wijk_code"]
    assert [f["name"] for f in json.loads(meta["schemaString"])["fields"]] == list(_inwoners(1).columns)

    query = _query(server, token)
    assert query.headers["Delta-Table-Version"] == "1"
    lines = _ndjson(query)
    assert list(lines[0]) == ["protocol"] and list(lines[1]) == ["metaData"]
    for line in lines[2:]:
        entry = line["file"]
        assert {"url", "id", "partitionValues", "size", "stats", "expirationTimestamp"} <= set(entry)
        assert entry["partitionValues"]["wijk_code"].startswith("WK0363")
        assert entry["expirationTimestamp"] > time.time() * 1000


def test_time_travel_only_on_history_shared_tables(server):
    old = delta_sharing.load_as_pandas(f"{server['demo_profile']}#gemeente_gold.demografie.inwoners_historie", version=0)
    pd.testing.assert_frame_equal(_sorted(old), _sorted(_inwoners(0)), check_dtype=False)

    token = _token(server["demo_profile"])
    travelled = _query(server, token, {"version": 0}, table="inwoners_historie")
    assert travelled.headers["Delta-Table-Version"] == "0"
    assert all(line["file"]["version"] == 0 for line in _ndjson(travelled)[2:])

    refused = _query(server, token, {"version": 0})
    assert refused.status_code == 400
    assert refused.json()["errorCode"] == "INVALID_PARAMETER_VALUE"


def test_capabilities_negotiation_and_fileidhash(server):
    token = _token(server["demo_profile"])
    base = "/shares/gemeente_gold/schemas/demografie/tables/inwoners_per_buurt"
    delta = _get(server, f"{base}/metadata", token, headers={"delta-sharing-capabilities": "responseformat=delta"})
    assert delta.headers["delta-sharing-capabilities"] == "responseformat=delta"
    protocol_line, metadata_line = _ndjson(delta)
    assert protocol_line["protocol"]["deltaProtocol"]["minReaderVersion"] == 1
    assert metadata_line["metaData"]["deltaMetadata"]["partitionColumns"] == ["wijk_code"]

    either = _get(server, f"{base}/metadata", token, headers={"delta-sharing-capabilities": "responseformat=delta,parquet"})
    assert either.headers["delta-sharing-capabilities"] == "responseformat=parquet"

    echoed = _query(server, token, headers={"fileidhash": "PARQUET"})
    assert echoed.headers["fileidhash"] == "parquet"
    assert _query(server, token, headers={"fileidhash": "sha1"}).status_code == 400


# ----------------------------------------------------------------- authentication
def test_missing_wrong_expired_and_revoked_tokens_are_401(server):
    shares_path = "/shares"
    missing = _get(server, shares_path, None)
    assert missing.status_code == 401
    assert set(missing.json()) == {"errorCode", "message"}

    assert _get(server, shares_path, "not-a-token").status_code == 401
    real = _token(server["demo_profile"])
    token_id, _, secret = real.partition(".")
    assert _get(server, shares_path, f"{token_id}.{secret[:-1]}x").status_code == 401

    expired_token, _ = TokenStore(server["sharing_root"] / "recipients.json").issue(
        "demo-partner", dt.timedelta(seconds=-1)
    )
    assert _get(server, shares_path, expired_token).status_code == 401

    victim = server["profile_file"]("zorg-partner", name="zorg-revoked")
    client = delta_sharing.SharingClient(victim)
    assert [s.name for s in client.list_shares()] == ["zorg_gold"]
    assert revoke("zorg-partner") >= 1
    with pytest.raises(requests.HTTPError) as excinfo:
        client.list_shares()
    assert excinfo.value.response.status_code == 401


def test_tokens_are_stored_only_as_salted_hashes(server):
    profile = issue_profile("demo-partner", endpoint=server["endpoint"], expires_days=7)
    assert profile["shareCredentialsVersion"] == 1
    assert profile["endpoint"] == server["endpoint"]
    expiry = dt.datetime.fromisoformat(profile["expirationTime"].replace("Z", "+00:00"))
    assert dt.timedelta(days=6) < expiry - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(days=7)
    state = (server["sharing_root"] / "recipients.json").read_text()
    secret = profile["bearerToken"].partition(".")[2]
    assert secret not in state
    assert profile["bearerToken"].partition(".")[0] in state
    with pytest.raises(UnknownRecipientError):
        issue_profile("nobody-partner")


# ----------------------------------------------------------------- entitlement
def test_recipient_cannot_see_or_read_other_shares(server):
    token = _token(server["demo_profile"])
    other = _get(server, "/shares/zorg_gold", token)
    absent = _get(server, "/shares/bestaat_niet", token)
    assert other.status_code == absent.status_code == 404
    assert other.json()["errorCode"] == absent.json()["errorCode"] == "RESOURCE_DOES_NOT_EXIST"
    assert other.json()["message"].replace("zorg_gold", "X") == absent.json()["message"].replace("bestaat_niet", "X")

    for path in ("/shares/zorg_gold/schemas", "/shares/zorg_gold/all-tables", "/shares/zorg_gold/schemas/wmo/tables"):
        assert _get(server, path, token).status_code == 404
    denied = requests.post(
        f"{server['endpoint']}/shares/zorg_gold/schemas/wmo/tables/voorzieningen/query",
        json={}, headers={"Authorization": f"Bearer {token}"}, timeout=30,
    )
    assert denied.status_code == 404
    with pytest.raises(requests.HTTPError):
        delta_sharing.load_as_pandas(f"{server['demo_profile']}#zorg_gold.wmo.voorzieningen")


def test_pagination_of_shares(server):
    token = _token(server["profile_file"]("breed-partner"))
    first = _get(server, "/shares", token, params={"maxResults": 1}).json()
    assert [s["name"] for s in first["items"]] == ["gemeente_gold"]
    second = _get(server, "/shares", token, params={"maxResults": 1, "pageToken": first["nextPageToken"]}).json()
    assert [s["name"] for s in second["items"]] == ["zorg_gold"]
    assert not second.get("nextPageToken")
    assert _get(server, "/shares", token, params={"maxResults": -1}).status_code == 400
    assert _get(server, "/shares", token, params={"pageToken": "garbage"}).status_code == 400
    zero = _get(server, "/shares", token, params={"maxResults": 0}).json()
    assert zero["items"] == [] and zero["nextPageToken"]


def test_config_changes_apply_without_restart(server):
    config_path = server["config_path"]
    original = config_path.read_text()
    try:
        config_path.write_text(original + "  - name: nieuwe-partner\n    shares: [zorg_gold]\n")
        client = delta_sharing.SharingClient(server["profile_file"]("nieuwe-partner"))
        assert [s.name for s in client.list_shares()] == ["zorg_gold"]
    finally:
        config_path.write_text(original)


# ----------------------------------------------------------------- signed file URLs
def _first_file_url(server, token: str) -> str:
    return next(line["file"]["url"] for line in _ndjson(_query(server, token)) if "file" in line)


def test_signed_file_url_serves_ranges_and_rejects_tampering_and_expiry(server):
    token = _token(server["demo_profile"])
    url = _first_file_url(server, token)
    assert urlparse(url).path.startswith("/delta-sharing/files/")
    whole = requests.get(url, timeout=30)
    assert whole.status_code == 200 and whole.content[:4] == b"PAR1"
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(whole.content)
    ranged = requests.get(url, headers={"Range": "bytes=4-19"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == whole.content[4:20]

    payload = urlparse(url).path.rsplit("/", 1)[1]
    mac = parse_qs(urlparse(url).query)["X-Databricks-Signature"][0]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged_payload = base64.urlsafe_b64encode(json.dumps({**claims, "e": claims["e"] + 10**9}).encode()).rstrip(b"=").decode()
    tampered = requests.get(f"{server['endpoint']}/files/{forged_payload}.{mac}", timeout=30)
    assert tampered.status_code == 403 and tampered.json()["errorCode"] == "PERMISSION_DENIED"

    signer = UrlSigner(URL_KEY)
    base_claims = FileClaims(
        share=claims["s"], schema=claims["c"], table=claims["t"], table_id=claims["i"],
        version=claims["v"], path=claims["p"], expires_ms=claims["e"], token_id=claims["k"],
    )
    expired = signer.sign(FileClaims(**{**base_claims.__dict__, "expires_ms": int(time.time() * 1000) - 1}))
    assert requests.get(f"{server['endpoint']}/files/{expired}", timeout=30).status_code == 403

    # Even a correctly signed URL only serves data files of that table version.
    for path in ("../../../../etc/passwd", "_delta_log/00000000000000000000.json", claims["p"] + "x"):
        outside = signer.sign(FileClaims(**{**base_claims.__dict__, "path": path}))
        assert requests.get(f"{server['endpoint']}/files/{outside}", timeout=30).status_code == 403


def test_file_urls_die_with_the_token(server):
    profile = server["profile_file"]("breed-partner", name="breed-revoked")
    url = _first_file_url(server, _token(profile))
    assert requests.get(url, timeout=30).status_code == 200
    revoke("breed-partner")
    assert requests.get(url, timeout=30).status_code == 403


# ----------------------------------------------------------------- hostile names
@pytest.mark.parametrize(
    "raw_path",
    [
        "/delta-sharing/shares/..",
        "/delta-sharing/shares/../schemas",
        "/delta-sharing/shares/%2E%2E/schemas",
        "/delta-sharing/shares/gemeente_gold%2F..%2Fzorg_gold/schemas",
        "/delta-sharing/shares/gemeente_gold/schemas/demo%2Fgrafie/tables",
        "/delta-sharing/shares/gemeente_gold/schemas/demografie/tables/..%5C..%5Cx/metadata",
        "/delta-sharing/shares/gemeente_gold/schemas/demo.grafie/tables/x/version",
        "/delta-sharing/shares/gemeente%20gold/all-tables",
        "/delta-sharing/shares/gemeente_gold/schemas/demografie/tables/%00/metadata",
        "/delta-sharing/files/..%2F..%2Fetc%2Fpasswd",
    ],
)
def test_hostile_names_are_rejected_with_4xx(server, raw_path):
    status, body = _raw_get(server, raw_path, _token(server["demo_profile"]))
    assert 400 <= status < 500
    assert set(body) == {"errorCode", "message"}
