"""Production authentication of HTTP connectors: OAuth2 client credentials and mutual TLS.

Everything runs over real sockets on 127.0.0.1: the OAuth2 stand-in (token endpoint
per RFC 6749 §4.4 plus a bearer-protected HAL resource) and an HTTPS server that
demands a client certificate from a PKI generated here with ``cryptography``.
Token lifetimes are asserted through the server's counters and an injected client
clock, retry waits through an injected ``sleep``; nothing is timed.
"""
from __future__ import annotations

import base64
import json
import os
import stat
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from connectors.auth import ClientTls, OAuth2ClientCredentialsAuth, build_auth
from connectors.base import ExtractWindow, HttpConnector, http_config_schema
from connectors.errors import SourceAuthError, SourceConfigError
from connectors.http import ApiKeyHeaderAuth, HttpSource, NoAuth, RetryPolicy, SourceTlsError
from ggm_lakehouse.landing import MANIFEST_NAME, BatchResult, BatchWriter, find_complete_batches, iter_batch_records
from ggm_lakehouse.pipeline import connector_from_connection
from standins.auth import (
    DEFAULT_TOKEN_PATH,
    OAuth2Server,
    create_echo_app,
    generate_test_pki,
    start_mtls_server,
    start_oauth2_server,
)

CLIENT_ID = "gemeente-9999-lakehouse"
CLIENT_SECRET = "s3cr3t/with+odd:chars"  # form-encoding in HTTP Basic matters for these
LOGICAL_DATE = date(2026, 3, 1)


class ItemsConnector(HttpConnector):
    """A minimal connector for the auth stand-ins: crawls ``GET /items`` (HAL pages) into one batch."""

    name: ClassVar[str] = "authdemo"
    datasets: ClassVar[tuple[str, ...]] = ("items",)
    config_schema: ClassVar[dict[str, Any]] = http_config_schema({}, required=["api_key"])

    def extract(self, window: ExtractWindow, landing_root: Path) -> list[BatchResult]:
        with self.http() as http, BatchWriter(
            landing_root, self.name, "items", window, endpoint="GET /items", record_path="_embedded.items"
        ) as batch:
            for page in http.iter_hal_pages("/items"):
                batch.add_response(page)
        return [batch.completed()]


class OpenItemsConnector(ItemsConnector):
    """The same crawl for a source that also allows ``auth: none`` (to show what TLS does without a client cert)."""

    config_schema: ClassVar[dict[str, Any]] = http_config_schema({}, required=[])


class SleepRecorder:
    """Stands in for time.sleep: records requested waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def window(run_id: str) -> ExtractWindow:
    return ExtractWindow.for_day(LOGICAL_DATE, run_id)


# ---------------------------------------------------------------- OAuth2 stand-in


@pytest.fixture(scope="module")
def oauth_server():
    server = OAuth2Server(clients={CLIENT_ID: CLIENT_SECRET}, client_scopes={CLIENT_ID: frozenset({"items.read", "items.admin"})})
    running = start_oauth2_server(server, items=25, page_size=10)
    yield server
    running.stop()


@pytest.fixture
def oauth(oauth_server):
    """The shared OAuth2 server with fresh counters and tokens for each test."""
    oauth_server.revoke_all()
    oauth_server.expires_in = 3600
    oauth_server.faults.clear()
    for counter in ("tokens_issued", "token_requests", "resource_requests", "resource_rejections"):
        setattr(oauth_server, counter, 0)
    oauth_server.token_errors.clear()
    return oauth_server


def oauth_config(server: OAuth2Server, **overrides: Any) -> dict[str, Any]:
    config = {
        "base_url": f"{server.base_url}/api",
        "auth": "oauth2",
        "token_url": f"{server.base_url}{DEFAULT_TOKEN_PATH}",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": "items.read",
    }
    config.update(overrides)
    return config


def issued_tokens(server: OAuth2Server) -> list[str]:
    return list(server._tokens)


def landed_text(root: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in root.rglob("*") if p.is_file())


def test_oauth2_token_is_fetched_once_and_reused_across_requests(oauth, tmp_path):
    connector = ItemsConnector(oauth_config(oauth))
    [result] = connector.extract(window("run-oauth"), tmp_path)
    assert result.record_count == 25 and len(result.manifest["parts"]) == 3
    assert oauth.tokens_issued == 1  # three pages, one token
    assert oauth.resource_requests == 3 and oauth.resource_rejections == 0
    assert connector.retry_log == []
    # neither the client secret nor the bearer token reaches the landing zone
    landed = landed_text(tmp_path)
    assert CLIENT_SECRET not in landed
    for token in issued_tokens(oauth):
        assert token not in landed
    assert "Authorization" not in json.dumps(result.manifest)
    assert CLIENT_SECRET not in repr(connector) and CLIENT_SECRET not in repr(build_auth(connector.config, "x", api_key_header="X"))


def test_oauth2_client_secret_in_body_also_works(oauth, tmp_path):
    connector = ItemsConnector(oauth_config(oauth, token_auth_method="client_secret_post", scope=["items.read", "items.admin"]))
    [result] = connector.extract(window("run-post"), tmp_path)
    assert result.record_count == 25 and oauth.tokens_issued == 1


def test_oauth2_token_is_refreshed_before_it_expires(oauth):
    clock = FakeClock()
    auth = OAuth2ClientCredentialsAuth(
        "authdemo", f"{oauth.base_url}{DEFAULT_TOKEN_PATH}", CLIENT_ID, CLIENT_SECRET, refresh_skew=60, clock=clock
    )
    with HttpSource("authdemo", f"{oauth.base_url}/api", auth=auth, sleep=SleepRecorder()) as source:
        source.get("/whoami")
        clock.now += 3500  # 100 s left on a 3600 s token: still outside the 60 s skew
        source.get("/whoami")
        assert oauth.tokens_issued == 1
        clock.now += 41  # 59 s left: inside the skew, so a new token before the request
        assert source.get("/whoami").json() == {"client_id": CLIENT_ID}
    assert oauth.tokens_issued == 2 and auth.tokens_fetched == 2
    assert oauth.resource_rejections == 0  # the source never saw an expired token


def test_oauth2_short_lived_tokens_within_the_skew_are_renewed_for_every_request(oauth):
    oauth.expires_in = 5  # shorter than the 30 s skew: no token is ever "fresh enough" to reuse
    auth = OAuth2ClientCredentialsAuth("authdemo", f"{oauth.base_url}{DEFAULT_TOKEN_PATH}", CLIENT_ID, CLIENT_SECRET, refresh_skew=30)
    with HttpSource("authdemo", f"{oauth.base_url}/api", auth=auth, sleep=SleepRecorder()) as source:
        for _ in range(3):
            source.get("/whoami")
    assert oauth.tokens_issued == 3 and oauth.resource_rejections == 0


def test_oauth2_401_refreshes_the_token_once_and_retries(oauth):
    sleep = SleepRecorder()
    connector = ItemsConnector(oauth_config(oauth), sleep=sleep)
    with connector.http() as source:
        source.get("/whoami")
        oauth.revoke_all()  # the provider rotated its keys: the cached token is now invalid
        response = source.get("/whoami")
    assert response.status == 200 and response.attempts == 2
    assert oauth.tokens_issued == 2 and oauth.resource_rejections == 1
    assert sleep.waits == [] and connector.retry_log == []


def test_oauth2_second_401_with_a_fresh_token_is_an_auth_error(oauth):
    oauth.expires_in = 0  # every token is expired on arrival at the resource
    sleep = SleepRecorder()
    connector = ItemsConnector(oauth_config(oauth, token_refresh_skew=0), sleep=sleep)
    with connector.http() as source, pytest.raises(SourceAuthError) as caught:
        source.get("/whoami")
    assert caught.value.status == 401 and caught.value.attempts == 2
    assert oauth.resource_requests == 2 and oauth.tokens_issued == 2  # exactly one refresh, then give up
    assert sleep.waits == []


def test_wrong_client_secret_is_a_clear_error_that_is_not_retried(oauth, tmp_path):
    sleep = SleepRecorder()
    connector = ItemsConnector(oauth_config(oauth, client_secret="not-the-secret", max_attempts=5), sleep=sleep)
    with pytest.raises(SourceAuthError) as caught:
        connector.extract(window("run-bad-secret"), tmp_path)
    error = caught.value
    message = str(error)
    assert error.source == "authdemo" and error.status == 401 and error.attempts == 1
    assert message.startswith(f"authdemo: POST {oauth.base_url}{DEFAULT_TOKEN_PATH} failed with HTTP 401")
    assert "invalid_client" in message and "not-the-secret" not in message
    assert oauth.token_requests == 1 and oauth.resource_requests == 0
    assert sleep.waits == [] and connector.retry_log == []
    assert find_complete_batches(tmp_path, "authdemo", "items") == []


def test_scope_the_client_may_not_have_is_refused(oauth):
    connector = ItemsConnector(oauth_config(oauth, scope="brp.personen"))
    with connector.http() as source, pytest.raises(SourceAuthError, match="invalid_scope"):
        source.get("/whoami")
    assert oauth.token_errors == {"invalid_scope": 1}


def test_oauth2_403_is_neither_refreshed_nor_retried():
    # A resource that needs a scope this client was not granted: a fresh token cannot help.
    server = OAuth2Server(clients={CLIENT_ID: CLIENT_SECRET})
    running = start_oauth2_server(server, required_scope="items.admin")
    try:
        sleep = SleepRecorder()
        connector = ItemsConnector(oauth_config(server, scope="items.read"), sleep=sleep)
        with connector.http() as source, pytest.raises(SourceAuthError) as caught:
            source.get("/whoami")
    finally:
        running.stop()
    assert caught.value.status == 403 and caught.value.attempts == 1
    assert server.resource_requests == 1 and server.tokens_issued == 1 and sleep.waits == []


def test_token_endpoint_outage_is_retried_with_its_retry_after(oauth):
    oauth.faults.fail_next(1, status=503, retry_after_seconds=3)
    sleep = SleepRecorder()
    connector = ItemsConnector(oauth_config(oauth), sleep=sleep)
    with connector.http() as source:
        assert source.get("/whoami").status == 200
    assert sleep.waits == [3.0]
    [record] = connector.retry_log
    assert (record.status, record.retry_after, record.error) == (503, 3.0, "SourceServerError")
    assert oauth.token_requests == 2 and oauth.tokens_issued == 1


def test_token_endpoint_speaks_rfc6749(oauth):
    """The stand-in itself: form encoding, one client authentication method, §5.2 error codes."""
    url = f"{oauth.base_url}{DEFAULT_TOKEN_PATH}"
    basic = "Basic " + base64.b64encode(b"gemeente-9999-lakehouse:s3cr3t%2Fwith%2Bodd%3Achars").decode()
    ok = requests.post(url, data={"grant_type": "client_credentials"}, headers={"Authorization": basic}, timeout=5)
    assert ok.status_code == 200
    assert ok.headers["Cache-Control"] == "no-store" and ok.headers["Content-Type"].startswith("application/json")
    body = ok.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["access_token"]
    assert set(body["scope"].split()) == {"items.read", "items.admin"}

    def error_of(response: requests.Response) -> tuple[int, str]:
        return response.status_code, response.json()["error"]

    as_json = requests.post(url, json={"grant_type": "client_credentials"}, headers={"Authorization": basic}, timeout=5)
    assert error_of(as_json) == (400, "invalid_request")
    both = requests.post(
        url,
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        headers={"Authorization": basic},
        timeout=5,
    )
    assert error_of(both) == (400, "invalid_request")
    anonymous = requests.post(url, data={"grant_type": "client_credentials"}, timeout=5)
    assert error_of(anonymous) == (401, "invalid_client") and anonymous.headers["WWW-Authenticate"].startswith("Basic")
    grant = requests.post(url, data={"grant_type": "password"}, headers={"Authorization": basic}, timeout=5)
    assert error_of(grant) == (400, "unsupported_grant_type")
    missing = requests.post(
        url, data={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}, timeout=5
    )
    assert error_of(missing) == (400, "invalid_request")
    # the protected resource: bare challenge without a token, invalid_token with a bad one
    bare = requests.get(f"{oauth.base_url}/api/whoami", timeout=5)
    assert bare.status_code == 401 and bare.headers["WWW-Authenticate"] == 'Bearer realm="ggm-standin"'
    bad = requests.get(f"{oauth.base_url}/api/whoami", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["WWW-Authenticate"]


def test_plain_http_token_url_is_refused_outside_loopback():
    with pytest.raises(SourceConfigError, match="not https"):
        OAuth2ClientCredentialsAuth("authdemo", "http://auth.example.nl/oauth2/token", CLIENT_ID, CLIENT_SECRET)


def test_config_schema_ties_auth_keys_to_the_mode():
    base = {"base_url": "https://api.example.nl"}
    with pytest.raises(SourceConfigError, match="token_url"):
        ItemsConnector({**base, "auth": "oauth2", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    with pytest.raises(SourceConfigError) as caught:
        ItemsConnector({**base, "auth": "none"})  # this source always needs a credential
    assert "auth" in str(caught.value)
    with pytest.raises(SourceConfigError, match="api_key"):
        ItemsConnector(base)  # no auth key: the API key mode of earlier configs
    with pytest.raises(SourceConfigError):
        ItemsConnector({**base, "auth": "mtls"})  # mtls without a certificate
    with pytest.raises(SourceConfigError) as caught:
        ItemsConnector({**base, "auth": "mtls", "client_cert": "/c.pem", "client_key_pem": "-----BEGIN PRIVATE KEY-----x"})
    assert "BEGIN PRIVATE KEY-----x" not in str(caught.value)  # a secret value is never echoed
    legacy = ItemsConnector({**base, "api_key": "k"})
    assert isinstance(build_auth(legacy.config, legacy.name, api_key_header=legacy.api_key_header), ApiKeyHeaderAuth)
    assert OpenItemsConnector(base).config.get("auth") is None
    assert isinstance(build_auth(OpenItemsConnector(base).config, "x", api_key_header="X"), NoAuth)


# --------------------------------------------------------------------- mutual TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return generate_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_url(pki):
    server = start_mtls_server(create_echo_app(), pki)
    yield f"https://127.0.0.1:{server.port}/api"
    server.stop()


def mtls_config(url: str, pki, **overrides: Any) -> dict[str, Any]:
    config = {
        "base_url": url,
        "auth": "mtls",
        "client_cert": str(pki.client_cert),
        "client_key": str(pki.client_key),
        "ca_bundle": str(pki.ca_cert),
    }
    config.update(overrides)
    return config


def test_mtls_handshake_with_the_right_client_certificate_succeeds(mtls_url, pki, tmp_path):
    [result] = ItemsConnector(mtls_config(mtls_url, pki)).extract(window("run-mtls"), tmp_path)
    assert [r["identificatie"] for r in iter_batch_records(result)] == ["item-0000", "item-0001", "item-0002"]
    assert str(pki.client_key) not in (result.path / MANIFEST_NAME).read_text()


def test_mtls_from_pem_text_uses_private_temporary_files(mtls_url, pki, tmp_path):
    key_pem = pki.client_key.read_text()
    connector = ItemsConnector(
        {
            "base_url": mtls_url,
            "auth": "mtls",
            "client_cert_pem": pki.client_cert.read_text(),
            "client_key_pem": key_pem,
            "ca_bundle_pem": pki.ca_cert.read_text(),
        }
    )
    assert key_pem not in repr(connector) and connector.public_config()["client_key_pem"] == "***"
    with connector.http() as source:
        key_file = Path(source.tls.client_key)
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
        assert key_file.read_text().strip() == key_pem.strip()
        assert source.get("/items").status == 200
    assert not key_file.exists() and not key_file.parent.exists()  # removed when the source closes


def test_mtls_without_a_client_certificate_fails_clearly_and_is_not_retried(mtls_url, pki, tmp_path):
    sleep = SleepRecorder()
    connector = OpenItemsConnector({"base_url": mtls_url, "ca_bundle": str(pki.ca_cert), "max_attempts": 4}, sleep=sleep)
    with pytest.raises(SourceTlsError) as caught:
        connector.extract(window("run-no-cert"), tmp_path)
    assert caught.value.attempts == 1 and sleep.waits == [] and connector.retry_log == []
    assert "TLS handshake" in str(caught.value) and "client certificate" in str(caught.value)
    assert find_complete_batches(tmp_path, "authdemo", "items") == []


def test_mtls_with_a_client_certificate_from_an_untrusted_ca_is_refused(mtls_url, pki, tmp_path):
    sleep = SleepRecorder()
    config = mtls_config(mtls_url, pki, client_cert=str(pki.untrusted_client_cert), client_key=str(pki.untrusted_client_key))
    with pytest.raises(SourceTlsError) as caught:
        ItemsConnector(config, sleep=sleep).extract(window("run-rogue"), tmp_path)
    assert caught.value.attempts == 1 and sleep.waits == []
    assert str(caught.value).startswith(f"authdemo: GET {mtls_url}/items failed in the TLS handshake")


def test_server_certificate_is_verified_against_the_configured_ca_bundle(mtls_url, pki):
    # Without the test CA the system store does not trust the server: refused before any request is sent.
    with HttpSource("authdemo", mtls_url, tls=ClientTls(client_cert=str(pki.client_cert), client_key=str(pki.client_key)),
                    sleep=SleepRecorder(), retry=RetryPolicy(max_attempts=3)) as source:
        with pytest.raises(SourceTlsError, match="CERTIFICATE_VERIFY_FAILED"):
            source.get("/items")
    with HttpSource("authdemo", mtls_url, tls=ClientTls(ca_bundle=str(pki.untrusted_ca_cert), client_cert=str(pki.client_cert),
                    client_key=str(pki.client_key)), sleep=SleepRecorder()) as source:
        with pytest.raises(SourceTlsError, match="CERTIFICATE_VERIFY_FAILED"):
            source.get("/items")


def test_missing_certificate_file_is_a_config_error_at_start(pki, tmp_path):
    connector = ItemsConnector(mtls_config("https://127.0.0.1:9/api", pki, client_cert=str(tmp_path / "nope.pem")))
    with pytest.raises(SourceConfigError, match="client_cert .* is not a readable file"):
        connector.http()


# ------------------------------------------------------- Airflow connections


def test_from_airflow_connection_builds_api_key_mode_from_uri(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AUTHDEMO_KEY", "http://:proef-key@127.0.0.1:5010/haalcentraal%2Fapi%2Fbrp")
    connector = connector_from_connection(ItemsConnector, "authdemo_key")
    assert connector.config["base_url"] == "http://127.0.0.1:5010/haalcentraal/api/brp"
    auth = build_auth(connector.config, connector.name, api_key_header="X-API-KEY")
    assert isinstance(auth, ApiKeyHeaderAuth) and "proef-key" not in repr(auth)


def test_from_airflow_connection_builds_oauth2_mode_and_extracts(oauth, monkeypatch, tmp_path):
    # URI form: login/password are client id/secret, the query string is the extra.
    from urllib.parse import quote

    uri = (
        f"http://{quote(CLIENT_ID, safe='')}:{quote(CLIENT_SECRET, safe='')}@{oauth.base_url.split('://')[1]}/api"
        f"?auth=oauth2&token_url={quote(oauth.base_url + DEFAULT_TOKEN_PATH, safe='')}&scope=items.read"
    )
    monkeypatch.setenv("AIRFLOW_CONN_AUTHDEMO_OAUTH", uri)
    connector = connector_from_connection(ItemsConnector, "authdemo_oauth")
    assert connector.config["client_id"] == CLIENT_ID and connector.config["client_secret"] == CLIENT_SECRET
    assert "api_key" not in connector.config and CLIENT_SECRET not in repr(connector)
    [result] = connector.extract(window("run-conn-oauth"), tmp_path)
    assert result.record_count == 25 and oauth.tokens_issued == 1
    # JSON form, as the README documents it for production
    monkeypatch.setenv(
        "AIRFLOW_CONN_AUTHDEMO_OAUTH_JSON",
        json.dumps(
            {
                "conn_type": "http",
                "host": f"{oauth.base_url}/api",
                "login": CLIENT_ID,
                "password": CLIENT_SECRET,
                "extra": {"auth": "oauth2", "token_url": oauth.base_url + DEFAULT_TOKEN_PATH, "scope": ["items.read"],
                          "token_refresh_skew": 120},
            }
        ),
    )
    connector = connector_from_connection(ItemsConnector, "authdemo_oauth_json")
    auth = build_auth(connector.config, connector.name, api_key_header="X")
    assert isinstance(auth, OAuth2ClientCredentialsAuth) and auth.refresh_skew == 120 and auth.scope == ["items.read"]


def test_from_airflow_connection_builds_mtls_mode_from_paths_and_from_pem(mtls_url, pki, monkeypatch, tmp_path):
    from urllib.parse import quote

    host = mtls_url.split("://")[1].split("/")[0]
    uri = (
        f"https://{host}/api?auth=mtls&client_cert={quote(str(pki.client_cert), safe='')}"
        f"&client_key={quote(str(pki.client_key), safe='')}&ca_bundle={quote(str(pki.ca_cert), safe='')}"
    )
    monkeypatch.setenv("AIRFLOW_CONN_AUTHDEMO_MTLS", uri)
    connector = connector_from_connection(ItemsConnector, "authdemo_mtls")
    assert connector.config["base_url"] == mtls_url
    [result] = connector.extract(window("run-conn-mtls"), tmp_path)
    assert result.record_count == 3
    monkeypatch.setenv(
        "AIRFLOW_CONN_AUTHDEMO_MTLS_PEM",
        json.dumps(
            {
                "conn_type": "https",
                "host": mtls_url,
                "password": "ignored-in-mtls-mode",
                "extra": {
                    "auth": "mtls",
                    "client_cert_pem": pki.client_cert.read_text(),
                    "client_key_pem": pki.client_key.read_text(),
                    "ca_bundle_pem": pki.ca_cert.read_text(),
                },
            }
        ),
    )
    connector = connector_from_connection(ItemsConnector, "authdemo_mtls_pem")
    assert "api_key" not in connector.config
    with connector.http() as source:
        assert source.get("/items").status == 200
    # keys written by the test PKI are private too
    assert stat.S_IMODE(os.stat(pki.client_key).st_mode) == 0o600
