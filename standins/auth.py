"""Local authentication stand-ins (test/demo only): an OAuth2 authorization server and mutual TLS.

* :class:`OAuth2Server` + :func:`create_oauth2_app`: a token endpoint for the
  client-credentials grant exactly as RFC 6749 §4.4 describes it (form-encoded
  ``POST``, client authentication with HTTP Basic *or* ``client_id``/``client_secret``
  in the body (§2.3.1), JSON ``access_token``/``token_type``/``expires_in``/``scope``
  with ``Cache-Control: no-store``, errors as §5.2 JSON with ``invalid_request``,
  ``invalid_client``, ``unsupported_grant_type``, ``invalid_scope``) and a protected
  resource that accepts only valid, unexpired bearer tokens (RFC 6750 §3: 401 with
  ``WWW-Authenticate: Bearer ... error="invalid_token"``). :func:`install_bearer_gate`
  puts the same check in front of any FastAPI app. The server counts what it issued
  and what it rejected, so tests assert on counts instead of on time.
* :func:`generate_test_pki` makes a throwaway PKI with the ``cryptography`` package
  (CA, server certificate for 127.0.0.1/localhost, client certificate, and a second
  CA with a client certificate the server must reject), and :func:`start_mtls_server`
  serves an app over HTTPS demanding a client certificate signed by the CA.

None of this is a production identity provider; it is as strict as the RFCs so the
connectors' auth code is tested against spec behaviour, not against our own guesses.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import ipaddress
import json
import os
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote_plus

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from standins.common import ADMIN_PREFIX, FaultInjector, ThreadedUvicorn

DEFAULT_TOKEN_PATH = "/oauth2/token"
DEFAULT_RESOURCE_PREFIX = "/api"
DEFAULT_REALM = "ggm-standin"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
CLIENT_CREDENTIALS = "client_credentials"


# ----------------------------------------------------------------- OAuth2 state


@dataclass
class _IssuedToken:
    client_id: str
    scopes: frozenset[str]
    expires_at: float


@dataclass
class OAuth2Server:
    """State of the stand-in authorization server.

    ``clients`` maps client id → secret; ``client_scopes`` optionally limits the
    scopes per client (absent: any scope is granted). ``expires_in`` is the token
    lifetime in seconds; ``clock`` is the server's clock (monotonic seconds).
    ``faults`` makes the token endpoint answer 5xx (``fail_next``) or slowly, like
    the registries' fault injector. ``base_url`` is set by :func:`start_oauth2_server`.
    """

    clients: dict[str, str]
    client_scopes: dict[str, frozenset[str]] = field(default_factory=dict)
    expires_in: int = 3600
    clock: Callable[[], float] = time.monotonic
    faults: FaultInjector = field(default_factory=FaultInjector)
    base_url: str | None = None
    tokens_issued: int = 0
    token_requests: int = 0
    token_errors: dict[str, int] = field(default_factory=dict)
    resource_requests: int = 0
    resource_rejections: int = 0
    _tokens: dict[str, _IssuedToken] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def issue(self, client_id: str, scopes: frozenset[str]) -> tuple[str, int]:
        """A new access token for ``client_id`` and its lifetime in seconds."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            lifetime = int(self.expires_in)
            self._tokens[token] = _IssuedToken(client_id, scopes, self.clock() + lifetime)
            self.tokens_issued += 1
        return token, lifetime

    def check(self, token: str) -> tuple[_IssuedToken | None, str]:
        """The token's grant if it is known and unexpired, else ``(None, reason)``."""
        with self._lock:
            grant = self._tokens.get(token)
            if grant is None:
                return None, "The access token is unknown or revoked"
            if self.clock() >= grant.expires_at:
                return None, "The access token expired"
            return grant, ""

    def bump(self, counter: str) -> None:
        """Add one to the counter attribute ``counter`` (request threads share this object)."""
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)

    def revoke_all(self) -> None:
        """Invalidate every issued token, as a key rotation at the provider would."""
        with self._lock:
            self._tokens.clear()

    def count_error(self, code: str) -> None:
        with self._lock:
            self.token_errors[code] = self.token_errors.get(code, 0) + 1


# ------------------------------------------------------------- token endpoint


def _oauth_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    """RFC 6749 §5.2 error response."""
    body = {"error": error, "error_description": description}
    all_headers = {"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})}
    return Response(json.dumps(body), status_code=status, media_type="application/json;charset=UTF-8", headers=all_headers)


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """Client id and secret from ``Authorization: Basic`` (form-urlencoded inside, RFC 6749 §2.3.1)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return None
    return unquote_plus(client_id), unquote_plus(secret)


def _token_endpoint(server: OAuth2Server, realm: str) -> Callable[[Request], Any]:
    challenge = {"WWW-Authenticate": f'Basic realm="{realm}"'}

    async def token(request: Request) -> Response:
        server.bump("token_requests")
        fault = server.faults.take()
        if fault is not None and fault.kind == "fail":
            headers = {} if fault.retry_after_seconds is None else {"Retry-After": str(fault.retry_after_seconds)}
            return _oauth_error(fault.status, "temporarily_unavailable", "Injected fault", headers)
        if fault is not None and fault.delay_seconds > 0:
            await asyncio.sleep(fault.delay_seconds)

        def fail(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
            server.count_error(error)
            return _oauth_error(status, error, description, headers)

        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != FORM_MEDIA_TYPE:
            return fail(400, "invalid_request", f"The token request must be {FORM_MEDIA_TYPE}")
        try:
            form = parse_qs((await request.body()).decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            return fail(400, "invalid_request", "The token request body is not UTF-8")
        repeated = sorted(name for name, values in form.items() if len(values) > 1)
        if repeated:  # §3.2: request parameters MUST NOT be included more than once
            return fail(400, "invalid_request", f"Repeated parameter(s): {', '.join(repeated)}")
        params = {name: values[0] for name, values in form.items()}

        authorization = request.headers.get("authorization")
        basic = _basic_credentials(authorization) if authorization else None
        if authorization and basic is None:
            return fail(401, "invalid_client", "Unsupported or malformed client authentication", challenge)
        in_body = "client_secret" in params
        if basic and in_body:  # §2.3: a client MUST NOT use more than one authentication method
            return fail(400, "invalid_request", "More than one client authentication method was used")
        if basic:
            client_id, client_secret = basic
        elif in_body:
            client_id, client_secret = params.get("client_id", ""), params["client_secret"]
        else:
            return fail(401, "invalid_client", "Client authentication is required", challenge)
        expected = server.clients.get(client_id)
        if expected is None or not secrets.compare_digest(expected.encode(), client_secret.encode()):
            return fail(401, "invalid_client", "Client authentication failed", challenge)

        grant_type = params.get("grant_type")
        if not grant_type:
            return fail(400, "invalid_request", "Missing grant_type")
        if grant_type != CLIENT_CREDENTIALS:
            return fail(400, "unsupported_grant_type", f"Grant type {grant_type!r} is not supported")
        requested = frozenset(params.get("scope", "").split())
        allowed = server.client_scopes.get(client_id)
        if allowed is not None:
            if not requested <= allowed:
                return fail(400, "invalid_scope", f"Scope not allowed: {' '.join(sorted(requested - allowed))}")
            granted = requested or allowed
        else:
            granted = requested
        access_token, lifetime = server.issue(client_id, granted)
        body: dict[str, Any] = {"access_token": access_token, "token_type": "Bearer", "expires_in": lifetime}
        if granted:
            body["scope"] = " ".join(sorted(granted))
        return Response(
            json.dumps(body),
            media_type="application/json;charset=UTF-8",
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    return token


# ------------------------------------------------------------ protected resource


def install_bearer_gate(
    app: FastAPI,
    server: OAuth2Server,
    *,
    realm: str = DEFAULT_REALM,
    required_scope: str | None = None,
    exempt_prefixes: tuple[str, ...] = (ADMIN_PREFIX, DEFAULT_TOKEN_PATH),
) -> None:
    """Accept only requests with a valid, unexpired bearer token (RFC 6750 §2.1, §3).

    No credentials → 401 with a bare ``Bearer`` challenge; an unknown, revoked or
    expired token → 401 ``invalid_token``; a token without ``required_scope`` →
    403 ``insufficient_scope``. Paths under ``exempt_prefixes`` pass unchecked.
    """

    def challenge(status: int, error: str | None, description: str) -> Response:
        value = f'Bearer realm="{realm}"'
        if error:
            value += f', error="{error}", error_description="{description}"'
        body = {"status": status, "title": "Unauthorized" if status == 401 else "Forbidden", "detail": description}
        return JSONResponse(body, status_code=status, headers={"WWW-Authenticate": value})

    @app.middleware("http")
    async def bearer_gate(request: Request, call_next):  # noqa: ANN001 - Starlette signature
        if request.url.path.startswith(exempt_prefixes):
            return await call_next(request)
        server.bump("resource_requests")
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            server.bump("resource_rejections")
            return challenge(401, None, "Bearer token required")
        grant, reason = server.check(token.strip())
        if grant is None:
            server.bump("resource_rejections")
            return challenge(401, "invalid_token", reason)
        if required_scope and required_scope not in grant.scopes:
            server.bump("resource_rejections")
            return challenge(403, "insufficient_scope", f"Scope {required_scope} required")
        request.state.client_id = grant.client_id
        return await call_next(request)


def create_oauth2_app(
    server: OAuth2Server,
    *,
    token_path: str = DEFAULT_TOKEN_PATH,
    resource_prefix: str = DEFAULT_RESOURCE_PREFIX,
    items: int = 25,
    page_size: int = 10,
    realm: str = DEFAULT_REALM,
    required_scope: str | None = None,
) -> FastAPI:
    """Token endpoint at ``token_path`` and a protected HAL collection at ``{resource_prefix}/items``.

    ``GET {resource_prefix}/items?page=N`` returns ``_embedded.items`` (``page_size``
    per page, ``items`` in total) with a relative ``_links.next.href``, the shape
    of the BAG API, so a connector can crawl it with the HAL paging helper.
    """
    app = FastAPI(title="GGM stand-in OAuth2 server", openapi_url=None, docs_url=None, redoc_url=None)
    app.add_api_route(token_path, _token_endpoint(server, realm), methods=["POST"])
    install_bearer_gate(app, server, realm=realm, required_scope=required_scope, exempt_prefixes=(ADMIN_PREFIX, token_path))

    @app.get(resource_prefix + "/items")
    def list_items(request: Request, page: int = 1) -> JSONResponse:
        start = (max(page, 1) - 1) * page_size
        chunk = [{"identificatie": f"item-{n:04d}", "nummer": n} for n in range(start, min(start + page_size, items))]
        links: dict[str, Any] = {"self": {"href": f"{resource_prefix}/items?page={page}"}}
        if start + page_size < items:
            links["next"] = {"href": f"{resource_prefix}/items?page={page + 1}"}
        return JSONResponse({"_embedded": {"items": chunk}, "_links": links}, media_type="application/hal+json")

    @app.get(resource_prefix + "/whoami")
    def whoami(request: Request) -> dict[str, str]:
        return {"client_id": request.state.client_id}

    @app.get(ADMIN_PREFIX + "/health")
    def health() -> dict[str, Any]:
        return {"name": "oauth2", "status": "ok", "tokens_issued": server.tokens_issued}

    return app


def start_oauth2_server(server: OAuth2Server, *, host: str = "127.0.0.1", port: int = 0, **app_options: Any) -> ThreadedUvicorn:
    """Serve :func:`create_oauth2_app` for ``server`` on a background thread; sets ``server.base_url``.

    The token endpoint is then ``server.base_url + DEFAULT_TOKEN_PATH`` and the
    protected resource ``server.base_url + DEFAULT_RESOURCE_PREFIX``. Stop it with ``.stop()``.
    """
    uvicorn_server = ThreadedUvicorn(create_oauth2_app(server, **app_options), host, port, name="oauth2")
    bound = uvicorn_server.start()
    server.base_url = f"http://{host}:{bound}"
    return uvicorn_server


# --------------------------------------------------------------------- test PKI


@dataclass(frozen=True)
class TestPki:
    """Paths of a throwaway PKI made by :func:`generate_test_pki` (all PEM)."""

    __test__ = False  # not a pytest test class despite the name

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    untrusted_ca_cert: Path
    untrusted_client_cert: Path
    untrusted_client_key: Path


def generate_test_pki(directory: Path, *, client_name: str = "gemeente-demodam-connector") -> TestPki:
    """Write a CA, a server certificate for 127.0.0.1/localhost, a client certificate and an untrusted pair.

    Keys are EC P-256 (fast to make), written 0600. Certificates are valid from one
    hour ago for one day: long enough for any test, useless afterwards.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    validity = (now - dt.timedelta(hours=1), now + dt.timedelta(days=1))

    ca = _make_test_ca("GGM test CA", validity)
    server_cert, server_key = _make_test_leaf(ca, "127.0.0.1", validity, server=True)
    client_cert, client_key = _make_test_leaf(ca, client_name, validity, server=False)
    rogue_ca = _make_test_ca("Untrusted test CA", validity)
    rogue_cert, rogue_key = _make_test_leaf(rogue_ca, client_name, validity, server=False)
    return TestPki(
        ca_cert=_write_test_cert(directory, ca[0], "ca.pem"),
        server_cert=_write_test_cert(directory, server_cert, "server.pem"),
        server_key=_write_test_key(directory, server_key, "server-key.pem"),
        client_cert=_write_test_cert(directory, client_cert, "client.pem"),
        client_key=_write_test_key(directory, client_key, "client-key.pem"),
        untrusted_ca_cert=_write_test_cert(directory, rogue_ca[0], "untrusted-ca.pem"),
        untrusted_client_cert=_write_test_cert(directory, rogue_cert, "untrusted-client.pem"),
        untrusted_client_key=_write_test_key(directory, rogue_key, "untrusted-client-key.pem"),
    )


def _test_pki_name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "GGM Lakehouse test PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_test_key(directory: Path, key, filename: str) -> Path:
    """The private key as PKCS#8 PEM, created 0600."""
    from cryptography.hazmat.primitives import serialization

    path = directory / filename
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return path


def _write_test_cert(directory: Path, cert, filename: str) -> Path:
    from cryptography.hazmat.primitives import serialization

    path = directory / filename
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _make_test_ca(common_name: str, validity: tuple[dt.datetime, dt.datetime]):
    """A self-signed CA certificate and its EC P-256 key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    subject = _test_pki_name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_test_leaf(ca, common_name: str, validity: tuple[dt.datetime, dt.datetime], *, server: bool):
    """A server (127.0.0.1/localhost) or client certificate signed by ``ca`` (a certificate and key), with its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_test_pki_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def start_mtls_server(app: Any, pki: TestPki, *, host: str = "127.0.0.1", port: int = 0) -> ThreadedUvicorn:
    """Serve ``app`` over HTTPS, demanding a client certificate signed by ``pki.ca_cert``; returns the started server."""
    server = ThreadedUvicorn(
        app,
        host,
        port,
        name="mtls",
        ssl_certfile=str(pki.server_cert),
        ssl_keyfile=str(pki.server_key),
        ssl_ca_certs=str(pki.ca_cert),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        ssl_maximum_version=ssl.TLSVersion.TLSv1_2,
    )
    server.start()
    return server


def create_echo_app() -> FastAPI:
    """A minimal JSON resource for TLS tests: ``GET /api/items`` (HAL, one page) and ``/_standin/health``."""
    app = FastAPI(title="GGM stand-in mTLS resource", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get(DEFAULT_RESOURCE_PREFIX + "/items")
    def list_items() -> JSONResponse:
        items = [{"identificatie": f"item-{n:04d}", "nummer": n} for n in range(3)]
        return JSONResponse({"_embedded": {"items": items}, "_links": {}}, media_type="application/hal+json")

    @app.get(ADMIN_PREFIX + "/health")
    def health() -> dict[str, str]:
        return {"name": "mtls", "status": "ok"}

    return app


__all__ = [
    "DEFAULT_RESOURCE_PREFIX",
    "DEFAULT_TOKEN_PATH",
    "OAuth2Server",
    "TestPki",
    "create_echo_app",
    "create_oauth2_app",
    "generate_test_pki",
    "install_bearer_gate",
    "start_mtls_server",
    "start_oauth2_server",
]
