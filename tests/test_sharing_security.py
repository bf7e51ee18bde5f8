"""Security of the sharing server: authentication, scope, names, file URLs, rate limits, API contract.

Two partners read the same gold table through identically named shares of their own
(``share_a.wmo.clienten`` / ``share_b.wmo.clienten``) from their own projections. Each
attack is one test, over real HTTP on 127.0.0.1. The API contract test runs schemathesis
against the server's own OpenAPI description and requires that no input produces a 500.
"""
from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import os
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest
import requests
import schemathesis
from deltalake import write_deltalake
from hypothesis import HealthCheck, settings

from sharing_server.app import SIGNATURE_PARAM, create_app
from sharing_server.embedded import EmbeddedServer
from sharing_server.projections import materialise_recipient_tables
from sharing_server.recipients import TokenStore, issue_profile, revoke
from sharing_server.signing import FileClaims, UrlSigner

URL_KEY = b"security-test-url-key-0123456789abcdef"

SHARES_YAML = """
server:
  url_ttl_seconds: 600
  rate_limit: {requests_per_second: 1000, burst: 100000}
shares:
  - name: share_a
    schemas:
      - name: wmo
        tables:
          - name: clienten
            location: gold/clienten
            history_shared: true
  - name: share_b
    schemas:
      - name: wmo
        tables:
          - name: clienten
            location: gold/clienten
            history_shared: true
recipients:
  - name: partner-a
    shares: [share_a]
  - name: partner-b
    shares: [share_b]
  - name: partner-revoked
    shares: [share_a]
"""

RATE_LIMITED_YAML = SHARES_YAML.replace(
    "rate_limit: {requests_per_second: 1000, burst: 100000}", "rate_limit: {requests_per_second: 0.001, burst: 5}"
)


def _start(root, yaml_text: str, name: str) -> EmbeddedServer:
    config_path = root / f"{name}.yaml"
    config_path.write_text(yaml_text, encoding="utf-8")
    return EmbeddedServer(create_app(config_path, url_key=URL_KEY, audit_dir=root / f"audit-{name}")).start()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    lake = root / "lake"
    write_deltalake(
        str(lake / "gold" / "clienten"),
        pd.DataFrame({"wijkcode": ["WK01", "WK02", "WK01"], "zorgvorm": ["hulp", "begeleiding", "hulp"], "aantal": [3, 5, 7]}),
        partition_by=["wijkcode"],
    )
    (root / "shares.yaml").write_text(SHARES_YAML, encoding="utf-8")
    variables = {"GGM_LAKE_ROOT": str(lake), "GGM_SHARING_ROOT": str(root / "sharing"), "GGM_SHARES_CONFIG": str(root / "shares.yaml")}
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    materialise_recipient_tables(dt.date(2026, 6, 1))
    server = _start(root, SHARES_YAML, "main")
    tokens = {r: issue_profile(r, endpoint=server.endpoint)["bearerToken"] for r in ("partner-a", "partner-b", "partner-revoked")}
    revoke("partner-revoked")
    expired_token, _ = TokenStore().issue("partner-a", timedelta(seconds=-1))
    try:
        yield {"root": root, "server": server, "tokens": tokens, "expired": expired_token}
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _get(env, path: str, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(f"{env['server'].endpoint}{path}", headers=headers, timeout=30)


def _query(env, token: str, share: str = "share_a") -> requests.Response:
    return requests.post(
        f"{env['server'].endpoint}/shares/{share}/schemas/wmo/tables/clienten/query",
        headers={"Authorization": f"Bearer {token}"}, json={}, timeout=30,
    )


def _assert_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["errorCode"] == code and isinstance(body["message"], str) and body["message"]


# -- authentication -------------------------------------------------------------------------
def test_missing_token_is_unauthenticated(env):
    response = _get(env, "/shares", None)
    _assert_error(response, 401, "UNAUTHENTICATED")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_token_is_unauthenticated(env):
    token_id = env["tokens"]["partner-a"].split(".")[0]
    _assert_error(_get(env, "/shares", f"{token_id}.not-the-secret"), 401, "UNAUTHENTICATED")
    _assert_error(_get(env, "/shares", "garbage"), 401, "UNAUTHENTICATED")


def test_expired_token_is_unauthenticated(env):
    _assert_error(_get(env, "/shares", env["expired"]), 401, "UNAUTHENTICATED")
    _assert_error(_query(env, env["expired"]), 401, "UNAUTHENTICATED")


def test_revoked_token_is_unauthenticated(env):
    _assert_error(_get(env, "/shares", env["tokens"]["partner-revoked"]), 401, "UNAUTHENTICATED")
    _assert_error(_query(env, env["tokens"]["partner-revoked"]), 401, "UNAUTHENTICATED")


# -- scope -----------------------------------------------------------------------------------
def test_recipient_lists_only_its_own_shares(env):
    body = _get(env, "/shares", env["tokens"]["partner-a"]).json()
    assert [s["name"] for s in body["items"]] == ["share_a"]


@pytest.mark.parametrize(
    "path",
    [
        "/shares/share_b",
        "/shares/share_b/schemas",
        "/shares/share_b/all-tables",
        "/shares/share_b/schemas/wmo/tables",
        "/shares/share_b/schemas/wmo/tables/clienten/version",
        "/shares/share_b/schemas/wmo/tables/clienten/metadata",
        "/shares/share_b/schemas/wmo/tables/clienten/changes?startingVersion=0",
        "/shares/SHARE_B/schemas/wmo/tables/clienten/metadata",
    ],
)
def test_another_recipients_share_answers_exactly_like_a_missing_one(env, path):
    token = env["tokens"]["partner-a"]
    guessed = _get(env, path, token)
    missing = _get(env, path.replace("share_b", "share_x").replace("SHARE_B", "SHARE_X"), token)
    _assert_error(guessed, 404, "RESOURCE_DOES_NOT_EXIST")
    assert missing.status_code == 404
    assert guessed.json()["message"].replace("share_b", "?").replace("SHARE_B", "?") == \
        missing.json()["message"].replace("share_x", "?").replace("SHARE_X", "?")


def test_another_recipients_table_cannot_be_queried(env):
    _assert_error(_query(env, env["tokens"]["partner-a"], share="share_b"), 404, "RESOURCE_DOES_NOT_EXIST")


def test_each_recipient_is_served_from_its_own_projection(env):
    a_files = [json.loads(line) for line in _query(env, env["tokens"]["partner-a"]).text.splitlines()]
    b_files = [json.loads(line) for line in _query(env, env["tokens"]["partner-b"], share="share_b").text.splitlines()]
    # Same gold data, but physically separate tables: different Delta table ids.
    assert a_files[1]["metaData"]["id"] != b_files[1]["metaData"]["id"]


def test_file_url_signed_for_another_recipients_share_is_refused(env):
    """Even with a valid signature, a URL naming share_b under partner-a's token serves nothing."""
    url = next(json.loads(line)["file"]["url"] for line in _query(env, env["tokens"]["partner-a"]).text.splitlines() if '"file"' in line)
    claims = json.loads(base64.urlsafe_b64decode(urlparse(url).path.rsplit("/", 1)[1] + "=="))
    forged = FileClaims(
        share="share_b", schema=claims["c"], table=claims["t"], table_id=claims["i"], version=claims["v"],
        path=claims["p"], expires_ms=claims["e"], token_id=claims["k"],
    )
    response = requests.get(f"{env['server'].endpoint}/files/{UrlSigner(URL_KEY).sign(forged)}", timeout=30)
    _assert_error(response, 403, "PERMISSION_DENIED")


# -- hostile names ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw_path",
    [
        "/delta-sharing/shares/..",
        "/delta-sharing/shares/%2e%2e/schemas",
        "/delta-sharing/shares/share_a/schemas/..%2F..%2Fshare_b/tables",
        "/delta-sharing/shares/share_a%2Fschemas/schemas",
        "/delta-sharing/shares/share_a/schemas/wmo/tables/clienten%00/metadata",
        "/delta-sharing/shares/share_a/schemas/wmo/tables/clien%0Aten/metadata",
        "/delta-sharing/shares/share_a/schemas/wmo%5C..%5Cx/tables",
        "/delta-sharing/shares/share_a/schemas/w.mo/tables",
        "/delta-sharing/shares/" + "a" * 300,
        "/delta-sharing/shares/share_a/schemas/wmo/tables/..%252F..%252Fgold/metadata",
    ],
)
def test_hostile_names_are_rejected(env, raw_path):
    connection = http.client.HTTPConnection("127.0.0.1", env["server"].port, timeout=30)
    try:
        connection.putrequest("GET", raw_path, skip_accept_encoding=True)
        connection.putheader("Authorization", f"Bearer {env['tokens']['partner-a']}")
        connection.endheaders()
        response = connection.getresponse()
        status, body = response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()
    assert status in (400, 404)
    assert body["errorCode"] in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")


# -- signed file URLs ------------------------------------------------------------------------
def _first_url(env) -> str:
    return next(json.loads(line)["file"]["url"] for line in _query(env, env["tokens"]["partner-a"]).text.splitlines() if '"file"' in line)


def test_tampered_file_url_is_refused(env):
    url = _first_url(env)
    assert requests.get(url, timeout=30).status_code == 200
    parsed = urlparse(url)
    payload = parsed.path.rsplit("/", 1)[1]
    mac = parse_qs(parsed.query)[SIGNATURE_PARAM][0]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    longer = base64.urlsafe_b64encode(json.dumps({**claims, "e": claims["e"] + 10**9}).encode()).rstrip(b"=").decode()
    _assert_error(requests.get(f"{env['server'].endpoint}/files/{longer}?{SIGNATURE_PARAM}={mac}", timeout=30), 403, "PERMISSION_DENIED")
    flipped = mac[:-2] + ("AA" if not mac.endswith("AA") else "BB")
    _assert_error(requests.get(f"{env['server'].endpoint}/files/{payload}?{SIGNATURE_PARAM}={flipped}", timeout=30), 403, "PERMISSION_DENIED")


def test_expired_file_url_is_refused(env):
    url = _first_url(env)
    payload = urlparse(url).path.rsplit("/", 1)[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    expired = FileClaims(
        share=claims["s"], schema=claims["c"], table=claims["t"], table_id=claims["i"], version=claims["v"],
        path=claims["p"], expires_ms=1_000, token_id=claims["k"],
    )
    response = requests.get(f"{env['server'].endpoint}/files/{UrlSigner(URL_KEY).sign(expired)}", timeout=30)
    _assert_error(response, 403, "PERMISSION_DENIED")
    assert "expired" in response.json()["message"]


# -- rate limiting -----------------------------------------------------------------------------
def test_a_burst_is_limited_per_recipient_without_starving_others(env):
    server = _start(env["root"], RATE_LIMITED_YAML, "limited")
    try:
        headers_a = {"Authorization": f"Bearer {env['tokens']['partner-a']}"}
        statuses = [requests.get(f"{server.endpoint}/shares", headers=headers_a, timeout=30).status_code for _ in range(5)]
        assert statuses == [200] * 5
        limited = requests.get(f"{server.endpoint}/shares", headers=headers_a, timeout=30)
        _assert_error(limited, 429, "RESOURCE_EXHAUSTED")
        assert int(limited.headers["Retry-After"]) >= 1
        # partner-b has its own bucket: unaffected by partner-a's burst.
        other = requests.get(f"{server.endpoint}/shares", headers={"Authorization": f"Bearer {env['tokens']['partner-b']}"}, timeout=30)
        assert other.status_code == 200 and [s["name"] for s in other.json()["items"]] == ["share_b"]
    finally:
        server.stop()


def test_guessing_tokens_is_limited_per_client(env):
    server = _start(env["root"], RATE_LIMITED_YAML, "guessing")
    try:
        wrong = [requests.get(f"{server.endpoint}/shares", headers={"Authorization": f"Bearer x{i}.y"}, timeout=30) for i in range(6)]
        assert [r.status_code for r in wrong] == [401] * 5 + [429]
    finally:
        server.stop()


def test_token_bucket_refills_at_the_configured_rate():
    from ggm_lakehouse.model.shares_config import RateLimit
    from sharing_server.ratelimit import TokenBuckets

    now = [0.0]
    buckets = TokenBuckets(clock=lambda: now[0])
    limit = RateLimit(requests_per_second=2.0, burst=3)
    assert [buckets.take("a", limit) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", limit) == pytest.approx(0.5)
    assert buckets.take("b", limit) == 0.0  # another key has its own bucket
    now[0] += 0.5  # one token back after 1/rate seconds (fake clock, no waiting)
    assert buckets.take("a", limit) == 0.0
    assert buckets.take("a", limit) > 0


# -- API contract ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api_schema(env):
    schema = schemathesis.openapi.from_url(f"{env['server'].endpoint}/openapi.json")
    schema.config.base_url = env["server"].base_url
    return schema


contract = schemathesis.pytest.from_fixture("api_schema")


@contract.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_contract_has_no_server_errors(case, env):
    from schemathesis.checks import not_a_server_error

    response = case.call(headers={"Authorization": f"Bearer {env['tokens']['partner-a']}"}, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])
    # Errors always come in the protocol's shape.
    if response.status_code >= 400 and response.request.method != "HEAD":
        assert set(response.json()) == {"errorCode", "message"}


# -- audit -------------------------------------------------------------------------------------
def test_every_request_lands_in_the_audit_delta_table(env):
    from deltalake import DeltaTable

    from sharing_server.audit import export_audit_table

    assert requests.get(f"{env['server'].endpoint}/shares", timeout=30).status_code == 401
    marker = requests.get(f"{env['server'].endpoint}/shares/share_b", headers={"Authorization": f"Bearer {env['tokens']['partner-b']}"}, timeout=30)
    assert marker.status_code == 200
    url = _first_url(env)
    assert requests.get(url, timeout=30).status_code == 200
    first = export_audit_table(audit_dir=env["root"] / "audit-main", lake_root=env["root"] / "lake")
    rows = DeltaTable(first["table"]).to_pandas()
    assert len(rows) == first["rows"] > 0
    assert {"recipient", "endpoint", "table", "version", "files", "bytes", "status", "ts"} <= set(rows.columns)
    assert ((rows["recipient"] == "partner-b") & (rows["endpoint"] == "get_share") & (rows["status"] == 200)).any()
    assert ((rows["endpoint"] == "list_shares") & (rows["status"] == 401)).any()
    downloads = rows[(rows["endpoint"] == "data_file") & (rows["status"] == 200)]
    assert (downloads["recipient"] == "partner-a").all() and (downloads["bytes"] > 0).all()
    answered = rows[(rows["endpoint"] == "query_table") & (rows["status"] == 200)]
    assert set(answered["table"]) == {"clienten"} and (answered["files"] == 2).all()
    # Re-exporting the same log replaces the days: no duplicates.
    again = export_audit_table(audit_dir=env["root"] / "audit-main", lake_root=env["root"] / "lake")
    assert len(DeltaTable(again["table"]).to_pandas()) == len(rows)
