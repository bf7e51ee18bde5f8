"""Production authentication for HTTP connectors: OAuth2 client credentials and mutual TLS.

Every HTTP connector picks its credential with the config key ``auth`` (from the
``extra`` of its Airflow connection, see :meth:`connectors.base.Connector.config_from_connection`):

=============  ===================================================================  ============================
``auth``       what is sent                                                         config keys
=============  ===================================================================  ============================
``api_key``    the key in a header (``X-API-KEY`` BRP proef, ``X-Api-Key`` BAG)     ``api_key``
``oauth2``     ``Authorization: Bearer`` with a token from a client-credentials      ``token_url``, ``client_id``,
               grant (RFC 6749 §4.4), cached and refreshed before it expires        ``client_secret``, ``scope``
``mtls``       nothing per request: the client certificate is the credential         ``client_cert`` (+ ``client_key``)
``none``       nothing (open data)
=============  ===================================================================  ============================

TLS settings are independent of the mode and combine with each of them, as
PKIoverheid deployments do (mTLS *and* an API key or OAuth2 token):
``client_cert``/``client_key`` (file paths) or ``client_cert_pem``/``client_key_pem``
(PEM text, e.g. pasted into the Airflow connection extra; written to a private
0600 file in a 0700 temporary directory for the lifetime of the HTTP source) and
``ca_bundle``/``ca_bundle_pem`` (the CA that signed the *server* certificate, e.g.
the PKIoverheid Private Root, instead of the system store).

The token logic leans on :mod:`oauthlib` (``BackendApplicationClient`` builds the
grant request and parses/validates the token response, including the RFC 6749
§5.2 error codes); this module adds what a long crawl needs: a thread-safe cache,
refresh ``token_refresh_skew`` seconds before expiry on an injectable clock,
a refresh on 401 (via :meth:`SourceAuth.refresh_after_unauthorized`) and typed
errors that never contain the secret.
"""
from __future__ import annotations

import base64
import ipaddress
import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote_plus, urlsplit

import requests
from oauthlib.oauth2 import BackendApplicationClient, OAuth2Error

from connectors.errors import (
    SourceAuthError,
    SourceConfigError,
    SourceTimeoutError,
    SourceUnavailableError,
    http_error_class,
)
from connectors.http import (
    ApiKeyHeaderAuth,
    NoAuth,
    SourceAuth,
    SourceTlsError,
    parse_retry_after,
    tls_failure_reason,
)

log = logging.getLogger(__name__)

AUTH_MODES = ("api_key", "oauth2", "mtls", "none")
TOKEN_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
DEFAULT_TOKEN_REFRESH_SKEW = 60.0

# Config keys that hold credentials in any HTTP connector (masked in logs and errors).
AUTH_SECRET_KEYS = ("api_key", "client_secret", "client_key_pem")

_PEM_PATTERN = "^\\s*-----BEGIN [A-Z0-9 ]+-----"

# JSON Schema properties of the auth and TLS keys, merged into every HTTP connector's schema.
AUTH_CONFIG_PROPERTIES: dict[str, Any] = {
    "auth": {"enum": list(AUTH_MODES), "description": "Credential sent per request (see connectors.auth)."},
    "token_url": {"type": "string", "pattern": "^https?://", "description": "OAuth2 token endpoint."},
    "client_id": {"type": "string", "minLength": 1, "description": "OAuth2 client id."},
    "client_secret": {"type": "string", "minLength": 1, "description": "OAuth2 client secret (secret)."},
    "scope": {
        "oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        ],
        "description": "OAuth2 scope: space-separated string or list.",
    },
    "token_auth_method": {
        "enum": list(TOKEN_AUTH_METHODS),
        "default": "client_secret_basic",
        "description": "How the client authenticates at the token endpoint (RFC 6749 §2.3.1).",
    },
    "token_refresh_skew": {
        "type": "number",
        "minimum": 0,
        "default": DEFAULT_TOKEN_REFRESH_SKEW,
        "description": "Fetch a new token this many seconds before the current one expires.",
    },
    "allow_insecure_token_url": {
        "type": "boolean",
        "default": False,
        "description": "Allow an http:// token endpoint on a non-loopback host (never in production).",
    },
    "client_cert": {"type": "string", "minLength": 1, "description": "Path of the PEM client certificate (mTLS)."},
    "client_key": {"type": "string", "minLength": 1, "description": "Path of the PEM private key of client_cert."},
    "client_cert_pem": {"type": "string", "pattern": _PEM_PATTERN, "description": "PEM client certificate text."},
    "client_key_pem": {"type": "string", "pattern": _PEM_PATTERN, "description": "PEM private key text (secret)."},
    "ca_bundle": {"type": "string", "minLength": 1, "description": "Path of the CA bundle that verifies the server."},
    "ca_bundle_pem": {"type": "string", "pattern": _PEM_PATTERN, "description": "PEM CA bundle text."},
}


def _mode_is(mode: str) -> dict[str, Any]:
    return {"properties": {"auth": {"const": mode}}, "required": ["auth"]}


def auth_schema_rules(credentials_required: bool) -> list[dict[str, Any]]:
    """``allOf`` rules that tie the auth keys to the chosen mode.

    With ``credentials_required`` (the source never answers anonymous requests) the
    mode ``none`` is refused and a missing ``auth`` means ``api_key``, which is what
    configurations written before the ``auth`` key existed mean.
    """
    rules: list[dict[str, Any]] = [
        {"if": _mode_is("oauth2"), "then": {"required": ["token_url", "client_id", "client_secret"]}},
        {
            "if": _mode_is("mtls"),
            "then": {"anyOf": [{"required": ["client_cert"]}, {"required": ["client_cert_pem"]}]},
        },
        {"not": {"required": ["client_cert", "client_cert_pem"]}},
        {"not": {"required": ["client_key", "client_key_pem"]}},
        {"not": {"required": ["ca_bundle", "ca_bundle_pem"]}},
        {"if": {"required": ["client_key"]}, "then": {"required": ["client_cert"]}},
        {"if": {"required": ["client_key_pem"]}, "then": {"required": ["client_cert_pem"]}},
    ]
    if credentials_required:
        rules.append(
            {
                "if": {"anyOf": [{"not": {"required": ["auth"]}}, _mode_is("api_key")]},
                "then": {"required": ["api_key"]},
            }
        )
        rules.append({"not": _mode_is("none")})
    else:
        rules.append({"if": _mode_is("api_key"), "then": {"required": ["api_key"]}})
    return rules


def auth_mode(config: Mapping[str, Any]) -> str:
    """The auth mode of a validated config; without ``auth`` it is ``api_key`` when a key is set, else ``none``."""
    mode = config.get("auth")
    if mode:
        return str(mode)
    return "api_key" if config.get("api_key") else "none"


# --------------------------------------------------------------------------- TLS


def _write_private(directory: Path, name: str, content: str) -> str:
    """Write ``content`` to ``directory/name`` readable by the owner only (0600), never following a link."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(content if content.endswith("\n") else content + "\n")
    return str(path)


@dataclass
class ClientTls:
    """TLS settings of one source: client certificate (mutual TLS) and the CA bundle that verifies the server.

    ``client_cert`` may hold the private key too, in which case ``client_key`` is None.
    ``ca_bundle`` None means the system trust store. Build it with :meth:`from_config`;
    :meth:`close` removes the temporary files made from PEM text.
    """

    client_cert: str | None = None
    client_key: str | None = None
    ca_bundle: str | None = None
    _temp_dir: str | None = field(default=None, repr=False)
    _finalizer: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], source: str) -> "ClientTls | None":
        """TLS settings from connector config, or None when none are configured.

        Paths must exist (a typo should fail at start-up, not as a TLS error later);
        PEM text is written to a private temporary directory.
        """
        has_pem = any(config.get(k) for k in ("client_cert_pem", "client_key_pem", "ca_bundle_pem"))
        has_path = any(config.get(k) for k in ("client_cert", "client_key", "ca_bundle"))
        if not (has_pem or has_path):
            return None
        for key in ("client_cert", "client_key", "ca_bundle"):
            value = config.get(key)
            if value and not Path(value).is_file():
                raise SourceConfigError(source, f"{key} {value!r} is not a readable file")
        tls = cls(client_cert=config.get("client_cert"), client_key=config.get("client_key"), ca_bundle=config.get("ca_bundle"))
        if has_pem:
            temp_dir = tempfile.mkdtemp(prefix=f"ggm-{source}-tls-")  # mkdtemp makes it 0700
            tls._temp_dir = temp_dir
            # Removed on close(), and at the latest when the object is collected or the process exits.
            tls._finalizer = weakref.finalize(tls, shutil.rmtree, temp_dir, True)
            directory = Path(temp_dir)
            if config.get("client_cert_pem"):
                tls.client_cert = _write_private(directory, "client-cert.pem", config["client_cert_pem"])
            if config.get("client_key_pem"):
                tls.client_key = _write_private(directory, "client-key.pem", config["client_key_pem"])
            if config.get("ca_bundle_pem"):
                tls.ca_bundle = _write_private(directory, "ca-bundle.pem", config["ca_bundle_pem"])
        return tls

    def requests_cert(self) -> str | tuple[str, str] | None:
        """The ``cert`` argument of requests."""
        if not self.client_cert:
            return None
        return (self.client_cert, self.client_key) if self.client_key else self.client_cert

    def requests_verify(self) -> bool | str:
        """The ``verify`` argument of requests: the CA bundle path, or True for the system store."""
        return self.ca_bundle or True

    def close(self) -> None:
        """Delete the temporary PEM files (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()


# ------------------------------------------------------------------------ OAuth2


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _form_encode(value: str) -> str:
    # RFC 6749 §2.3.1: client id and secret are form-urlencoded before they go into Basic auth.
    return quote_plus(value, safe="")


class OAuth2ClientCredentialsAuth(SourceAuth):
    """Bearer tokens from an OAuth2 client-credentials grant (RFC 6749 §4.4), cached until shortly before expiry.

    * the token is fetched on first use and reused for every request while
      ``clock() < expires_at - refresh_skew``; ``expires_at`` counts from the moment
      the token request was sent, so network time never makes a token outlive
      the server's view of it;
    * a token response without ``expires_in`` is used until the source answers 401;
    * a 401 from the source drops the token; :class:`~connectors.http.HttpSource`
      then retries the request once with a new one;
    * the token endpoint refusing the client (400/401/403, e.g. ``invalid_client``)
      raises :class:`~connectors.errors.SourceAuthError`, never retried; 429/5xx
      and transport failures raise the transient error classes, which the
      source's retry policy retries.

    ``tls`` is used for the token endpoint as well: PKIoverheid token endpoints
    usually demand the same client certificate. ``tokens_fetched`` counts grants.
    """

    secret_headers = frozenset({"authorization"})

    def __init__(
        self,
        source: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | list[str] | None = None,
        token_auth_method: str = "client_secret_basic",
        refresh_skew: float = DEFAULT_TOKEN_REFRESH_SKEW,
        tls: ClientTls | None = None,
        timeout: tuple[float, float] = (5.0, 30.0),
        clock: Callable[[], float] = time.monotonic,
        allow_insecure_token_url: bool = False,
    ) -> None:
        if not client_id or not client_secret:
            raise SourceConfigError(source, "OAuth2 needs a client_id and a client_secret")
        if token_auth_method not in TOKEN_AUTH_METHODS:
            raise SourceConfigError(source, f"token_auth_method must be one of {TOKEN_AUTH_METHODS}")
        parts = urlsplit(token_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SourceConfigError(source, f"token_url must be an absolute http(s) URL, got {token_url!r}")
        if parts.scheme == "http" and not (_is_loopback(parts.hostname) or allow_insecure_token_url):
            # The client secret would travel in clear text.
            raise SourceConfigError(
                source, f"token_url {token_url} is not https; set allow_insecure_token_url only for local test servers"
            )
        self.source = source
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = scope.split() if isinstance(scope, str) else (list(scope) if scope else None)
        self.token_auth_method = token_auth_method
        self.refresh_skew = float(refresh_skew)
        self.tls = tls
        self.timeout = timeout
        self._clock = clock
        self._oauth = BackendApplicationClient(client_id, scope=self.scope)
        self._lock = threading.Lock()
        self._access_token: str | None = None
        self._expires_at: float | None = None
        self._session: requests.Session | None = None
        self.tokens_fetched = 0

    def __repr__(self) -> str:  # never show the secret or the token
        return (
            f"OAuth2ClientCredentialsAuth(token_url={self.token_url!r}, client_id={self.client_id!r}, "
            f"client_secret='***', scope={self.scope!r})"
        )

    # -- requests.auth

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.access_token()}"
        return request

    def refresh_after_unauthorized(self, response: requests.Response) -> bool:
        """Forget the token the source just rejected, so the retry fetches a new one."""
        sent = response.request.headers.get("Authorization") if response.request is not None else None
        with self._lock:
            # Another thread may already have replaced the token; only drop the rejected one.
            if self._access_token is not None and sent == f"Bearer {self._access_token}":
                self._access_token = None
                self._expires_at = None
        return True

    def close(self) -> None:
        """Close the token endpoint's connection pool."""
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- token cache

    def access_token(self) -> str:
        """A valid access token: the cached one, or a new one when missing or about to expire."""
        with self._lock:
            if self._access_token is None or self._expiring():
                self._fetch()
            assert self._access_token is not None
            return self._access_token

    def _expiring(self) -> bool:
        return self._expires_at is not None and self._clock() >= self._expires_at - self.refresh_skew

    def _fetch(self) -> None:
        method, url = "POST", self.token_url
        post_secret = self.token_auth_method == "client_secret_post"
        body = self._oauth.prepare_request_body(
            scope=self.scope,
            include_client_id=post_secret,
            **({"client_secret": self._client_secret} if post_secret else {}),
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if not post_secret:
            pair = f"{_form_encode(self.client_id)}:{_form_encode(self._client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
        if self._session is None:
            self._session = requests.Session()
        sent_at = self._clock()
        try:
            response = self._session.post(
                url,
                data=body,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
                verify=self.tls.requests_verify() if self.tls else True,
                cert=self.tls.requests_cert() if self.tls else None,
            )
        except requests.exceptions.SSLError as exc:
            raise SourceTlsError(
                self.source, method, url, f"in the TLS handshake with the token endpoint ({tls_failure_reason(exc)})"
            ) from exc
        except requests.Timeout as exc:
            raise SourceTimeoutError(self.source, method, url, f"with a timeout at the token endpoint ({type(exc).__name__})") from exc
        except requests.ConnectionError as exc:
            raise SourceUnavailableError(self.source, method, url, "because the token endpoint is unreachable") from exc

        status = response.status_code
        if status == 429 or status >= 500:
            error_class = http_error_class(status)
            raise error_class(
                self.source, method, url, status, "token endpoint", retry_after=parse_retry_after(response.headers.get("Retry-After"))
            )
        try:
            token = self._oauth.parse_request_body_response(response.text, scope=self.scope)
        except OAuth2Error as exc:
            # RFC 6749 §5.2 error response (invalid_client, invalid_scope, ...) or a token-less answer.
            detail = f"token endpoint: {exc.error}" + (f": {exc.description}" if exc.description else "")
            raise SourceAuthError(self.source, method, url, status, detail) from None
        except Warning as warning:
            # oauthlib signals a narrowed scope with a Warning carrying the token (RFC 6749 §3.3 allows it).
            token = getattr(warning, "token", None)
            if token is None:
                raise
            log.warning("%s: token endpoint granted scope %s instead of %s", self.source, token.get("scope"), self.scope)
        except ValueError:
            raise SourceAuthError(self.source, method, url, status, "token endpoint did not answer JSON") from None
        if status != 200:
            raise SourceAuthError(self.source, method, url, status, "token endpoint refused the request")
        token_type = str(token.get("token_type", "Bearer"))
        if token_type.lower() != "bearer":
            raise SourceAuthError(self.source, method, url, status, f"token endpoint issued unsupported token_type {token_type!r}")
        expires_in = token.get("expires_in")
        self._access_token = str(token["access_token"])
        self._expires_at = sent_at + float(expires_in) if expires_in is not None else None
        self.tokens_fetched += 1
        log.info(
            "%s: obtained OAuth2 access token from %s (expires in %s s)",
            self.source, url, expires_in if expires_in is not None else "unknown",
        )


# ---------------------------------------------------------------------- factory


def build_auth(
    config: Mapping[str, Any],
    source: str,
    *,
    api_key_header: str,
    tls: ClientTls | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SourceAuth:
    """The :class:`SourceAuth` for a validated HTTP connector config (see the module docstring)."""
    mode = auth_mode(config)
    if mode == "api_key":
        if not config.get("api_key"):
            raise SourceConfigError(source, "auth 'api_key' needs an api_key")
        return ApiKeyHeaderAuth(str(config.get("api_key_header") or api_key_header), str(config["api_key"]))
    if mode == "oauth2":
        missing = [k for k in ("token_url", "client_id", "client_secret") if not config.get(k)]
        if missing:
            raise SourceConfigError(source, f"auth 'oauth2' needs {', '.join(missing)}")
        return OAuth2ClientCredentialsAuth(
            source,
            str(config["token_url"]),
            str(config["client_id"]),
            str(config["client_secret"]),
            scope=config.get("scope"),
            token_auth_method=str(config.get("token_auth_method") or "client_secret_basic"),
            refresh_skew=float(config.get("token_refresh_skew", DEFAULT_TOKEN_REFRESH_SKEW)),
            tls=tls,
            timeout=(float(config.get("connect_timeout", 5)), float(config.get("read_timeout", 30))),
            clock=clock,
            allow_insecure_token_url=bool(config.get("allow_insecure_token_url", False)),
        )
    if mode == "mtls":
        if tls is None or tls.client_cert is None:
            raise SourceConfigError(source, "auth 'mtls' needs client_cert (path) or client_cert_pem")
        return NoAuth()
    if mode == "none":
        return NoAuth()
    raise SourceConfigError(source, f"unknown auth mode {mode!r}; expected one of {AUTH_MODES}")


__all__ = [
    "AUTH_CONFIG_PROPERTIES",
    "AUTH_MODES",
    "AUTH_SECRET_KEYS",
    "ClientTls",
    "OAuth2ClientCredentialsAuth",
    "SourceTlsError",
    "auth_mode",
    "auth_schema_rules",
    "build_auth",
]
