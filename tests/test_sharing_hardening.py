"""Hardening of the sharing server against hostile clients and operator slips (issue 15).

Every test talks to the real server over real HTTP on 127.0.0.1: in a background thread
(:class:`EmbeddedServer`) or, where logging and shutdown are the point, as the production
entry point ``serve()`` in a child process. Hostile input must get a 4xx in the protocol's
error shape, never a 500 or a hang; the client timeouts only guard against a hang.
"""
from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
import requests
from deltalake import write_deltalake

from ggm_lakehouse.model.shares_config import parse_lifetime
from sharing_server.app import SIGNATURE_PARAM, create_app
from sharing_server.audit import read_audit
from sharing_server.embedded import EmbeddedServer
from sharing_server.recipients import AUDIT_FILE_NAME, AUDIT_MAX_BYTES, TokenStore, add_recipient, issue_profile, list_recipients

URL_KEY = b"hardening-test-url-key-0123456789abcdef"
TABLE = "/shares/share_a/schemas/wmo/tables/clienten"

SHARES_YAML = """
server:
  serve_from: source
  rate_limit: {requests_per_second: 1000, burst: 100000}
shares:
  - name: share_a
    schemas:
      - name: wmo
        tables:
          - name: clienten
            location: gold/clienten
            history_shared: true
recipients:
  - name: partner-a
    shares: [share_a]
  - name: partner-x
    shares: [share_a]
"""
STRICT_LIMIT = "rate_limit: {requests_per_second: 0.001, burst: 5}"
LOOSE_LIMIT = "rate_limit: {requests_per_second: 1000, burst: 100000}"


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    """A lake with one partitioned table in two versions (0 and 1), change data feed on."""
    root = tmp_path_factory.mktemp("hardening-lake")
    path = str(root / "gold" / "clienten")
    frame = pd.DataFrame({"wijkcode": ["WK01", "WK02"], "aantal": [3, 5]})
    config = {"delta.enableChangeDataFeed": "true"}
    write_deltalake(path, frame, partition_by=["wijkcode"], configuration=config)
    write_deltalake(path, frame.assign(aantal=[4, 6]), partition_by=["wijkcode"], mode="overwrite")
    return root


class Site:
    """One sharing root (config, state, audit) over the shared lake, and servers on it."""

    def __init__(self, root: Path, lake: Path, yaml_text: str = SHARES_YAML):
        self.root, self.lake = root, lake
        self.config = root / "shares.yaml"
        self.state = root / "sharing" / "recipients.json"
        self.audit = root / "sharing" / "audit"
        self.config.write_text(yaml_text, encoding="utf-8")
        self.servers: list[EmbeddedServer] = []

    def start(self, **kwargs) -> EmbeddedServer:
        kwargs.setdefault("url_key", URL_KEY)
        app = create_app(self.config, state_path=self.state, audit_dir=self.audit, **kwargs)
        server = EmbeddedServer(app).start()
        self.servers.append(server)
        return server

    def token(self, recipient: str = "partner-a", **kwargs) -> str:
        return issue_profile(recipient, config_path=self.config, state_path=self.state, **kwargs)["bearerToken"]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def site(tmp_path, lake, monkeypatch):
    monkeypatch.setenv("GGM_LAKE_ROOT", str(lake))
    monkeypatch.setenv("GGM_SHARING_ROOT", str(tmp_path / "sharing"))
    monkeypatch.delenv("GGM_SHARING_ENDPOINT", raising=False)
    created = Site(tmp_path, lake)
    try:
        yield created
    finally:
        created.stop()


@pytest.fixture
def server(site):
    return site.start()


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _assert_error(response: requests.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errorCode", "message"} and body["message"]
    if code is not None:
        assert body["errorCode"] == code, body


def _query(server: EmbeddedServer, token: str, body, headers: dict | None = None) -> requests.Response:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.post(f"{server.endpoint}{TABLE}/query", data=data, headers={**_auth(token), **(headers or {})}, timeout=60)


def _file_urls(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.text.splitlines()]
    return [line["file"]["url"] for line in lines if "file" in line]


# ----------------------------------------------------------------- 1. bounded input
@pytest.mark.parametrize(
    "version",
    ["9223372036854775807", "9223372036854775808", str(10**30), "2", "-1", "1e3", " 1", "1_0", "1" * 5000],
)
def test_metadata_versions_out_of_range_are_400_not_a_hang(site, server, version):
    response = requests.get(f"{server.endpoint}{TABLE}/metadata", params={"version": version}, headers=_auth(site.token()), timeout=60)
    _assert_error(response, 400, "INVALID_PARAMETER_VALUE")


def test_the_newest_version_itself_still_answers(site, server):
    response = requests.get(f"{server.endpoint}{TABLE}/metadata", params={"version": "1"}, headers=_auth(site.token()), timeout=60)
    assert response.status_code == 200 and response.headers["Delta-Table-Version"] == "1"


@pytest.mark.parametrize(
    "body",
    [
        {"version": 2**63 - 1}, {"version": 2**63}, {"version": 10**30}, {"version": 2}, {"version": 1.0},
        {"limitHint": 10**30}, {"limitHint": -1}, {"limitHint": 1.5},
        {"timestamp": "0001-01-01T00:00:00+01:00"}, {"timestamp": 10**30}, {"timestamp": "x" * 10_000},
    ],
)
def test_query_body_numbers_and_timestamps_are_bounded(site, server, body):
    _assert_error(_query(server, site.token(), body), 400)


@pytest.mark.parametrize(
    "params",
    [
        {"startingVersion": str(2**63)}, {"startingVersion": "0", "endingVersion": str(10**30)},
        {"startingVersion": "9223372036854775807"}, {"startingTimestamp": "x" * 100},
    ],
)
def test_change_feed_bounds_are_validated(site, server, params):
    response = requests.get(f"{server.endpoint}{TABLE}/changes", params=params, headers=_auth(site.token()), timeout=60)
    _assert_error(response, 400)


def test_version_with_hostile_starting_timestamp_is_400(site, server):
    response = requests.get(
        f"{server.endpoint}{TABLE}/version", params={"startingTimestamp": "9999-12-31T23:59:59-14:00"}, headers=_auth(site.token()), timeout=60
    )
    _assert_error(response, 400, "INVALID_PARAMETER_VALUE")


def _token_text(raw: str) -> str:
    import base64

    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "params",
    [
        {"pageToken": _token_text('{"o":Infinity,"l":"shares"}')},
        {"pageToken": _token_text('{"o":1e308,"l":"shares"}')},
        {"pageToken": _token_text('{"o":true,"l":"shares"}')},
        {"pageToken": _token_text('{"o":100000000000000000000000000000,"l":"shares"}')},
        {"pageToken": _token_text("[" * 5000)},
        {"pageToken": "A" * 8000},
        {"maxResults": str(10**30)},
        {"maxResults": "1" * 5000},
        {"maxResults": "NaN"},
    ],
)
def test_page_tokens_and_limits_are_validated(site, server, params):
    response = requests.get(f"{server.endpoint}/shares", params=params, headers=_auth(site.token()), timeout=60)
    _assert_error(response, 400, "INVALID_PARAMETER_VALUE")


def test_deeply_nested_request_body_is_400(site, server):
    deep = "[" * 100_000 + "]" * 100_000
    _assert_error(_query(server, site.token(), '{"x":' + deep + "}"), 400, "MALFORMED_REQUEST")
    _assert_error(_query(server, site.token(), '{"limitHint": NaN}'), 400, "MALFORMED_REQUEST")


def test_deeply_nested_predicate_hint_is_400(site, server):
    leaf = '{"op":"column","name":"wijkcode","valueType":"string"}'
    deep = "[" * 100_000 + "]" * 100_000  # far over the interpreter's recursion limit
    _assert_error(_query(server, site.token(), {"jsonPredicateHints": deep}), 400, "INVALID_PARAMETER_VALUE")
    # A sane predicate still prunes.
    hint = json.dumps({"op": "equal", "children": [json.loads(leaf), {"op": "literal", "value": "WK01", "valueType": "string"}]})
    assert len(_file_urls(_query(server, site.token(), {"jsonPredicateHints": hint}))) == 1


# ----------------------------------------------------------------- 2. failed logins
def test_a_flood_of_bad_tokens_never_locks_out_a_valid_one(site):
    site.config.write_text(SHARES_YAML.replace(LOOSE_LIMIT, STRICT_LIMIT), encoding="utf-8")
    server = site.start()
    bad = [requests.get(f"{server.endpoint}/shares", headers=_auth(f"{i:016x}.wrong"), timeout=30).status_code for i in range(60)]
    assert bad[:5] == [401] * 5 and set(bad[5:]) == {429}
    valid = requests.get(f"{server.endpoint}/shares", headers=_auth(site.token()), timeout=30)
    assert valid.status_code == 200 and [s["name"] for s in valid.json()["items"]] == ["share_a"]


def test_forwarded_for_is_not_believed_without_configured_proxies(site):
    site.config.write_text(SHARES_YAML.replace(LOOSE_LIMIT, STRICT_LIMIT), encoding="utf-8")
    server = site.start()
    statuses = [
        requests.get(f"{server.endpoint}/shares", headers={**_auth("bad.token"), "X-Forwarded-For": f"203.0.113.{i}"}, timeout=30).status_code
        for i in range(6)
    ]
    # One caller on 127.0.0.1 cannot spread its failures over invented addresses ...
    assert statuses == [401] * 5 + [429]
    # ... nor write them into the audit log.
    addresses = {r["client_ip"] for r in read_audit(audit_dir=site.audit) if r["endpoint"] == "list_shares"}
    assert addresses == {"127.0.0.1"}


def test_forwarded_for_is_believed_from_a_configured_proxy(site):
    limited = SHARES_YAML.replace(LOOSE_LIMIT, STRICT_LIMIT + "\n  trusted_proxies: [127.0.0.1]")
    site.config.write_text(limited, encoding="utf-8")
    server = site.start()
    statuses = [
        requests.get(f"{server.endpoint}/shares", headers={**_auth("bad.token"), "X-Forwarded-For": f"203.0.113.{i}"}, timeout=30).status_code
        for i in range(6)
    ]
    assert statuses == [401] * 6  # six clients behind the proxy, one failure each
    addresses = {r["client_ip"] for r in read_audit(audit_dir=site.audit) if r["endpoint"] == "list_shares"}
    assert addresses == {f"203.0.113.{i}" for i in range(6)}


# ----------------------------------------------------------------- 3. recipient identity
def test_a_removed_recipients_token_does_not_come_back_with_a_new_recipient_of_that_name(site, server):
    old_token = site.token("partner-x")
    assert requests.get(f"{server.endpoint}/shares", headers=_auth(old_token), timeout=30).status_code == 200

    without_x = SHARES_YAML.replace("  - name: partner-x\n    shares: [share_a]\n", "")
    site.config.write_text(without_x, encoding="utf-8")
    _assert_error(requests.get(f"{server.endpoint}/shares", headers=_auth(old_token), timeout=30), 401, "UNAUTHENTICATED")
    assert "partner-x" not in {r["name"] for r in list_recipients(config_path=site.config, state_path=site.state)}

    # A new partner under the old name: its own token works, the old one stays dead.
    site.config.write_text(without_x + "  - name: partner-x\n    shares: [share_a]\n    comment: another organisation\n", encoding="utf-8")
    new_token = site.token("partner-x")
    assert requests.get(f"{server.endpoint}/shares", headers=_auth(new_token), timeout=30).status_code == 200
    _assert_error(requests.get(f"{server.endpoint}/shares", headers=_auth(old_token), timeout=30), 401, "UNAUTHENTICATED")
    records = TokenStore(site.state).records()
    old_record, new_record = records[old_token.split(".")[0]], records[new_token.split(".")[0]]
    assert old_record.revoked_at is not None and old_record.recipient_id != new_record.recipient_id


def test_removal_is_noticed_by_the_cli_while_no_server_runs(site):
    old_token = site.token("partner-x")
    without_x = SHARES_YAML.replace("  - name: partner-x\n    shares: [share_a]\n", "")
    site.config.write_text(without_x, encoding="utf-8")
    list_recipients(config_path=site.config, state_path=site.state)  # any ggm sharing command
    site.config.write_text(SHARES_YAML, encoding="utf-8")
    server = site.start()
    _assert_error(requests.get(f"{server.endpoint}/shares", headers=_auth(old_token), timeout=30), 401, "UNAUTHENTICATED")


def test_recipient_list_shows_every_live_token(site):
    first = site.token("partner-a", expires_days="30m")
    second = site.token("partner-a", expires_days="12h")
    revoked = site.token("partner-x")
    TokenStore(site.state).revoke("partner-x")
    listing = {r["name"]: r for r in list_recipients(config_path=site.config, state_path=site.state)}
    tokens = listing["partner-a"]["tokens"]
    assert [t["token_id"] for t in tokens] == [first.split(".")[0], second.split(".")[0]]
    assert all(set(t) == {"token_id", "created_at", "expires_at"} for t in tokens)
    lifetimes = [dt.datetime.fromisoformat(t["expires_at"][:-1]) - dt.datetime.fromisoformat(t["created_at"][:-1]) for t in tokens]
    assert lifetimes == [dt.timedelta(minutes=30), dt.timedelta(hours=12)]
    assert listing["partner-x"]["tokens"] == [] and revoked.split(".")[0] not in json.dumps(listing)
    assert listing["partner-a"]["recipient_id"] and listing["partner-a"]["recipient_id"] != listing["partner-x"]["recipient_id"]


# ----------------------------------------------------------------- 4 + 7. logs and shutdown of serve()
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(site: Site, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "GGM_SHARES_CONFIG": str(site.config),
        "GGM_SHARING_ROOT": str(site.state.parent),
        "GGM_SHARING_URL_KEY": URL_KEY.decode(),
    }
    code = f"from sharing_server.app import serve; serve('127.0.0.1', {port}, config_path={str(site.config)!r})"
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for _ in range(600):
        try:
            requests.get(f"http://127.0.0.1:{port}/delta-sharing/shares", timeout=1)
            return process
        except requests.ConnectionError:
            if process.poll() is not None:
                raise RuntimeError(f"serve() exited: {process.stderr.read()}")
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("serve() did not start")


def test_logs_of_serve_hold_no_signatures_or_tokens_and_sigterm_stops_it(site):
    token = site.token()
    port = _free_port()
    process = _serve(site, port)
    try:
        endpoint = f"http://127.0.0.1:{port}/delta-sharing"
        url = _file_urls(requests.post(f"{endpoint}{TABLE}/query", json={}, headers=_auth(token), timeout=60))[0]
        assert requests.get(url, timeout=60).status_code == 200
        requests.get(f"{endpoint}/shares?token={token}", headers=_auth(token), timeout=60)
        process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
    logs = process.stderr.read()
    signature = url.split(f"{SIGNATURE_PARAM}=")[1]
    payload = urlparse(url).path.rsplit("/", 1)[1]
    assert "/delta-sharing/files/[REDACTED]" in logs  # the download is logged ...
    for secret in (signature, payload, token, token.split(".")[1]):
        assert secret not in logs  # ... without what makes it a credential


def test_shutdown_does_not_wait_forever_for_a_stalled_download(site, tmp_path, monkeypatch):
    import numpy as np
    import pyarrow as pa

    # A file far larger than the socket buffers: the server blocks sending it to a client that never reads.
    big = tmp_path / "big-lake"
    blobs = pa.table({"blob": pa.array([np.random.default_rng(1).bytes(1 << 20) for _ in range(48)], pa.binary())})
    write_deltalake(str(big / "gold" / "clienten"), blobs)
    site.config.write_text(SHARES_YAML.replace("  serve_from: source\n", "  serve_from: source\n  shutdown_timeout_seconds: 1\n"), encoding="utf-8")
    monkeypatch.setenv("GGM_LAKE_ROOT", str(big))
    port = _free_port()
    process = _serve(site, port)
    stalled = None
    try:
        url = _file_urls(requests.post(f"http://127.0.0.1:{port}/delta-sharing{TABLE}/query", json={}, headers=_auth(site.token()), timeout=60))[0]
        parsed = urlparse(url)
        stalled = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        stalled.request("GET", f"{parsed.path}?{parsed.query}")
        stalled.sock.recv(1)  # the response has started; nothing more is read
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) in (0, -signal.SIGTERM)
    finally:
        if stalled is not None:
            stalled.close()
        if process.poll() is None:
            process.kill()
    assert "timeout graceful shutdown exceeded" in process.stderr.read()


# ----------------------------------------------------------------- 5. request size
def _raw_post(server: EmbeddedServer, headers: dict[str, str], chunks: list[bytes], chunked: bool) -> tuple[int, dict]:
    """Send a POST part by part and read the answer, whether or not the server read it all."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.putrequest("POST", f"/delta-sharing{TABLE}/query")
        for name, value in headers.items():
            connection.putheader(name, value)
        if chunked:
            connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        try:
            for chunk in chunks:
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        except OSError:
            pass  # the server answered and closed before taking everything: that is the point
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_declared_oversized_body_is_refused_before_it_is_read(site, server):
    for headers in ({}, _auth(site.token())):
        status, body = _raw_post(server, {**headers, "Content-Length": str(300 * 1024 * 1024)}, [b"{" * 1024], chunked=False)
        assert status == 413 and body["errorCode"] == "MALFORMED_REQUEST"


def test_an_anonymous_upload_is_refused_before_its_body_is_read(site, server):
    # Chunked, no length, and the body never ends: only an answer before reading it returns.
    status, body = _raw_post(server, {}, [b" " * 65536], chunked=True)
    assert status == 401 and body["errorCode"] == "UNAUTHENTICATED"


def test_a_chunked_body_over_the_limit_is_413(site, server):
    status, body = _raw_post(server, _auth(site.token()), [b" " * 65536] * 40 + [b""], chunked=True)
    assert status == 413 and body["errorCode"] == "MALFORMED_REQUEST"


# ----------------------------------------------------------------- 6. file URLs
def test_file_urls_ignore_the_host_header(site, server):
    urls = _file_urls(_query(server, site.token(), {}, {"Host": "evil.example"}))
    assert urls and all(u.startswith(f"{server.endpoint}/files/") for u in urls)


def test_file_urls_use_the_configured_public_endpoint(site):
    site.config.write_text(SHARES_YAML.replace("  serve_from: source\n", "  serve_from: source\n  public_endpoint: https://data.example.nl/delta-sharing/\n"), encoding="utf-8")
    server = site.start()
    urls = _file_urls(_query(server, site.token(), {}, {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}))
    assert urls and all(u.startswith("https://data.example.nl/delta-sharing/files/") for u in urls)
    # The path part is served by this server as usual.
    parsed = urlparse(urls[0])
    assert requests.get(f"{server.base_url}{parsed.path}?{parsed.query}", timeout=60).status_code == 200


# ----------------------------------------------------------------- 7. smaller findings
@pytest.mark.parametrize(("text", "expected"), [("30m", dt.timedelta(minutes=30)), ("12h", dt.timedelta(hours=12)), ("7d", dt.timedelta(days=7)), ("90", dt.timedelta(days=90)), (3, dt.timedelta(days=3))])
def test_token_lifetimes_in_minutes_hours_or_days(text, expected):
    assert parse_lifetime(text) == expected


@pytest.mark.parametrize("text", ["0m", "30s", "abc", "-5d", "", "99999d", True, 1.5])
def test_token_lifetime_nonsense_is_refused(text):
    with pytest.raises(ValueError):
        parse_lifetime(text)


def test_a_thirty_minute_token_works_and_expires_in_thirty_minutes(site, server):
    before = dt.datetime.now(dt.timezone.utc)
    profile = issue_profile("partner-a", expires_days="30m", config_path=site.config, state_path=site.state)
    expiry = dt.datetime.fromisoformat(profile["expirationTime"].replace("Z", "+00:00"))
    assert dt.timedelta(minutes=29) < expiry - before <= dt.timedelta(minutes=30, seconds=1)
    assert requests.get(f"{server.endpoint}/shares", headers=_auth(profile["bearerToken"]), timeout=30).status_code == 200
    added = add_recipient("cli-partner", ["share_a"], expires_days="90m", config_path=site.config, state_path=site.state)
    later = issue_profile("cli-partner", config_path=site.config, state_path=site.state)  # inherits 90 minutes
    later_expiry = dt.datetime.fromisoformat(later["expirationTime"].replace("Z", "+00:00"))
    assert later_expiry - before <= dt.timedelta(minutes=90, seconds=5)
    assert added["profile"]["expirationTime"] <= later["expirationTime"]


def test_a_broken_config_edit_fails_closed(site, server):
    token_a, token_x = site.token("partner-a"), site.token("partner-x")
    # Invalid (unknown share) but parseable: partner-x, no longer listed, is out at once.
    broken = SHARES_YAML.replace("  - name: partner-x\n    shares: [share_a]\n", "  - name: partner-y\n    shares: [no_such_share]\n")
    site.config.write_text(broken, encoding="utf-8")
    _assert_error(requests.get(f"{server.endpoint}/shares", headers=_auth(token_x), timeout=30), 401)
    assert requests.get(f"{server.endpoint}/shares", headers=_auth(token_a), timeout=30).status_code == 200
    # Not even YAML: nobody is admitted until it is fixed.
    site.config.write_text("recipients: [unclosed", encoding="utf-8")
    _assert_error(requests.get(f"{server.endpoint}/shares", headers=_auth(token_a), timeout=30), 401)
    # Fixed: both are back (a broken edit is not a removal, so nothing was revoked).
    site.config.write_text(SHARES_YAML + "\n", encoding="utf-8")
    assert requests.get(f"{server.endpoint}/shares", headers=_auth(token_a), timeout=30).status_code == 200
    assert requests.get(f"{server.endpoint}/shares", headers=_auth(token_x), timeout=30).status_code == 200


def test_rate_limit_buckets_are_shared_between_workers(site):
    site.config.write_text(SHARES_YAML.replace(LOOSE_LIMIT, STRICT_LIMIT), encoding="utf-8")
    first, second = site.start(), site.start()  # two workers of one server: same state directory
    headers = _auth(site.token())
    statuses = [requests.get(f"{s.endpoint}/shares", headers=headers, timeout=30).status_code for s in (first, second) * 3]
    assert statuses == [200] * 5 + [429]
    assert (site.state.parent / "ratelimit.sqlite3").stat().st_mode & 0o077 == 0


def test_audit_logs_are_private_and_the_token_log_rotates(site, server):
    token = site.token()
    assert requests.get(f"{server.endpoint}/shares", headers=_auth(token), timeout=30).status_code == 200
    request_logs = list(site.audit.glob("requests-*.jsonl"))
    assert request_logs and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in request_logs)
    assert stat.S_IMODE(site.audit.stat().st_mode) == 0o700
    events = site.state.parent / AUDIT_FILE_NAME
    assert stat.S_IMODE(events.stat().st_mode) == 0o600
    with events.open("a") as handle:  # a year of events
        handle.write("x" * AUDIT_MAX_BYTES + "\n")
    site.token()
    rolled = events.with_name(f"{AUDIT_FILE_NAME}.1")
    assert rolled.stat().st_size > AUDIT_MAX_BYTES and events.stat().st_size < 1000
    assert stat.S_IMODE(events.stat().st_mode) == 0o600 and "token_issued" in events.read_text()


def test_generated_signing_key_is_kept_so_urls_survive_a_restart(site, monkeypatch):
    monkeypatch.delenv("GGM_SHARING_URL_KEY", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_GGM_SHARING_URL_KEY", raising=False)
    first = site.start(url_key=None)
    url = _file_urls(_query(first, site.token(), {}))[0]
    first.stop()
    site.servers.remove(first)
    restarted = site.start(url_key=None)  # a new process would read the same key file
    parsed = urlparse(url)
    assert requests.get(f"{restarted.base_url}{parsed.path}?{parsed.query}", timeout=60).status_code == 200
    key_file = site.state.parent / "url_signing.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_revocation_survives_a_power_loss_the_state_folder_is_synced_after_the_rename(site, monkeypatch):
    site.token("partner-x")
    synced: list[str] = []
    real_fsync = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    assert TokenStore(site.state).revoke("partner-x") == 1
    # The new state file's data first, then the directory that holds the rename.
    assert synced[-1] == str(site.state.parent.resolve()) and len(synced) >= 2
