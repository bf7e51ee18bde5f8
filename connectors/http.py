"""Shared HTTP base for registry connectors.

:class:`HttpSource` wraps one :class:`requests.Session` per source and adds what
every registry call needs:

* pluggable authentication (:class:`SourceAuth`: :class:`ApiKeyHeaderAuth` here,
  OAuth2 client credentials in :mod:`connectors.auth`) and TLS client settings
  (PKIoverheid-style mutual TLS and a private CA bundle, :class:`connectors.auth.ClientTls`);
* separate connect and read timeouts;
* retries with exponential backoff and jitter for 429/500/502/503/504 and for
  transport failures, honouring ``Retry-After`` (delta-seconds or HTTP-date) up to
  a cap; authentication failures, TLS failures and other 4xx are never retried
  (a 401 only makes a token-based auth fetch a fresh token once, see
  :meth:`SourceAuth.refresh_after_unauthorized`); every retry is recorded in
  :attr:`HttpSource.retry_log` so callers can see what was waited for;
* an optional client-side rate limiter, so a crawl stays under a registry's
  per-key limit (BAG: 50 requests/second);
* a bound on requests in flight (:meth:`HttpSource.map_in_order`): independent
  requests (BRP's groups of 20 BSNs) overlap their network waits, and their
  responses still come back in the order asked, so a rerun lands the same bytes;
* paging helpers: a generic page iterator and HAL ``_links.next.href`` following;
* every response body kept as raw bytes (:attr:`RawResponse.content`) so the
  landing zone stores exactly what the source sent.

The retry loop is written out instead of delegated to ``urllib3.Retry`` because the
connector must turn the *final* outcome into a typed error that names the source,
request, status and attempt count, and must be able to refuse a ``Retry-After``
longer than its cap; urllib3 hides the attempt history and sleeps on its own.
"""
from __future__ import annotations

import email.utils
import json
import logging
import random
import ssl
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from connectors.errors import (
    SourceAuthError,
    SourceClientError,
    SourceDataError,
    SourceHTTPError,
    SourceRequestError,
    SourceTimeoutError,
    SourceUnavailableError,
    http_error_class,
)

if TYPE_CHECKING:  # pragma: no cover
    from connectors.auth import ClientTls

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_IN_FLIGHT = 32  # the schema's ceiling for max_parallel_requests

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def bounded_map(fn: Callable[[_Item], _Result], items: Iterable[_Item], max_in_flight: int) -> Iterator[_Result]:
    """``fn`` over ``items`` with at most ``max_in_flight`` calls running at once; results in input order.

    The first error is raised where its result would have been yielded; calls not yet started are
    cancelled and those in flight are waited for, so nothing runs on after the caller has failed.
    ``max_in_flight`` 1 calls ``fn`` in the caller's thread, one item at a time.
    """
    if max_in_flight <= 1:
        yield from map(fn, items)
        return
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="ggm-http") as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= max_in_flight:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

# Header names that carry credentials in the sources we know; always redacted
# from anything we persist or log, whatever auth class is in use.
ALWAYS_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "apikey"}
)


# --------------------------------------------------------------------------- auth


class SourceTlsError(SourceRequestError):
    """The TLS handshake failed: server certificate not trusted, client certificate missing or rejected.

    Never retried: a certificate problem does not go away by asking again; it
    needs the operator to fix the CA bundle or the client certificate.
    """


class SourceAuth(requests.auth.AuthBase):
    """Base of pluggable authentication.

    Subclasses implement :meth:`__call__` (per-request, e.g. a header or a bearer
    token) and/or override :meth:`configure_session` (per-session). Transport
    settings such as client certificates are not auth classes but
    :class:`connectors.auth.ClientTls`, so they combine with any auth.
    ``secret_headers`` names headers to redact.

    :meth:`__call__` may raise a :class:`~connectors.errors.SourceRequestError`
    (a token endpoint that is down or refuses the client); :class:`HttpSource`
    retries the transient ones and never the auth errors.
    """

    secret_headers: frozenset[str] = frozenset()

    def configure_session(self, session: requests.Session) -> None:
        """Install the auth on ``session``; the default attaches ``self`` as ``session.auth``."""
        session.auth = self

    def refresh_after_unauthorized(self, response: requests.Response) -> bool:
        """Called on a 401; return True when fresh credentials make one more try worthwhile.

        Static credentials (an API key) cannot get better by retrying, so the
        default is False and the 401 is raised at once.
        """
        return False

    def close(self) -> None:
        """Release what the auth holds (token sessions, temporary files)."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:  # pragma: no cover
        return request


class NoAuth(SourceAuth):
    """Open sources (drop zones, public data) need no credentials."""

    def configure_session(self, session: requests.Session) -> None:
        session.auth = None


class ApiKeyHeaderAuth(SourceAuth):
    """API key sent in a request header: ``X-API-KEY`` (BRP proef), ``X-Api-Key`` (BAG), ``apikey`` (KvK)."""

    def __init__(self, header_name: str, key: str) -> None:
        if not key:
            raise ValueError(f"API key for header {header_name!r} is empty")
        self.header_name = header_name
        self._key = key
        self.secret_headers = frozenset({header_name.lower()})

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers[self.header_name] = self._key
        return request

    def __repr__(self) -> str:  # never show the key in logs or tracebacks
        return f"ApiKeyHeaderAuth(header_name={self.header_name!r}, key='***')"


def redact_headers(headers: Mapping[str, str] | None, extra_secret: frozenset[str] = frozenset()) -> dict[str, str]:
    """Copy of ``headers`` without credential-bearing headers (case-insensitive)."""
    secret = ALWAYS_SECRET_HEADERS | {h.lower() for h in extra_secret}
    return {k: v for k, v in (headers or {}).items() if k.lower() not in secret}


# ------------------------------------------------------------------ retry + rate


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry transient failures.

    ``max_attempts`` counts the first try. The backoff before retry *n* is
    ``min(backoff_max, backoff_base * 2**(n-1))`` with "equal jitter" (half fixed,
    half random) so parallel workers do not retry in lock-step. A ``Retry-After``
    from the server replaces the backoff; if it asks for longer than
    ``max_retry_after`` seconds the request fails at once (the outage outlasts this
    task; the orchestrator's own retry is the right place to wait that long).
    """

    max_attempts: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 120.0
    retry_statuses: frozenset[int] = RETRYABLE_STATUSES

    def backoff(self, retry_number: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry_number`` (1-based) without a Retry-After."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (retry_number - 1)))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class RetryRecord:
    """One retry :class:`HttpSource` decided to make: what failed and how long it waited.

    ``retry_after`` is the server's ``Retry-After`` in seconds (None when absent);
    ``wait`` is what was passed to ``sleep`` (equal to ``retry_after`` when present).
    """

    method: str
    url: str
    attempt: int
    status: int | None
    error: str
    retry_after: float | None
    wait: float


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header (delta-seconds or HTTP-date).

    Returns ``None`` when absent or unparsable; dates in the past give ``0``.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 HTTP-dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


class RateLimiter:
    """Spaces requests at least ``1 / requests_per_second`` apart (thread-safe).

    A fixed minimum interval is stricter than a token bucket (no bursts), which is
    what a per-second registry limit such as BAG's 50 req/s needs.
    """

    def __init__(
        self,
        requests_per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive")
        self.interval = 1.0 / requests_per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = 0.0

    def acquire(self) -> None:
        """Block until the next request may be sent."""
        with self._lock:
            now = self._clock()
            wait = self._next_slot - now
            self._next_slot = max(now, self._next_slot) + self.interval
        if wait > 0:
            self._sleep(wait)


# ---------------------------------------------------------------------- response


@dataclass
class RawResponse:
    """One successful response, body kept byte for byte.

    ``url`` is the request URL without the query string when ``params`` were
    given separately, else the full URL (e.g. a followed HAL ``next`` link);
    ``final_url`` is what requests actually fetched. ``request_headers`` are the
    per-call headers the connector set (never the auth headers).
    """

    method: str
    url: str
    params: dict[str, Any]
    body: Any
    request_headers: dict[str, str]
    status: int
    headers: Mapping[str, str]
    content: bytes
    final_url: str
    attempts: int = 1
    _json: Any = field(default=None, repr=False)

    def json(self) -> Any:
        """The body decoded as JSON (cached)."""
        if self._json is None:
            self._json = json.loads(self.content)
        return self._json

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    def request_record(self) -> dict[str, Any]:
        """Description of the request for a landing manifest; contains no secrets."""
        record: dict[str, Any] = {"method": self.method, "url": self.url, "params": dict(self.params), "body": self.body}
        if self.request_headers:
            record["headers"] = redact_headers(self.request_headers)
        return record


def _problem_and_detail(response: requests.Response) -> tuple[dict[str, Any] | None, str | None]:
    """Decode a problem+json (or any JSON) error body and make a one-line detail of it."""
    content = response.content or b""
    problem = None
    if "json" in response.headers.get("Content-Type", "").lower() or content[:1] in (b"{",):
        try:
            decoded = json.loads(content)
            problem = decoded if isinstance(decoded, dict) else None
        except ValueError:
            problem = None
    if problem is not None:
        parts = [str(problem[k]) for k in ("title", "detail") if problem.get(k)]
        if problem.get("code"):
            parts.append(f"code={problem['code']}")
        detail = "; ".join(parts) or None
    else:
        text = content.decode("utf-8", errors="replace").strip()
        detail = (text[:200] + ("…" if len(text) > 200 else "")) if text else (response.reason or None)
    if detail and len(detail) > 500:
        detail = detail[:500] + "…"
    return problem, detail


def _is_read_timeout(exc: requests.ConnectionError) -> bool:
    """requests reports a read timeout while streaming the body as ConnectionError(ReadTimeoutError)."""
    return any(isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args)


# -------------------------------------------------------------------- the source


@dataclass(frozen=True)
class _Call:
    """One logical request of :meth:`HttpSource.request`, as every attempt of it sends it."""

    method: str
    url: str
    params: dict[str, Any]
    headers: dict[str, str]
    json_body: Any
    data: bytes | None


class HttpSource:
    """HTTP access to one source with auth, timeouts, retries, rate limit and paging.

    ``source`` is the connector name used in every error message. Paths given to
    :meth:`request` are appended to ``base_url``; absolute URLs are used as they are
    but must stay on the same scheme and host (credentials must never be sent to a
    host the operator did not configure, e.g. via a crafted ``next`` link).

    ``tls`` (a :class:`connectors.auth.ClientTls`) adds a client certificate and/or
    a CA bundle; they are passed with every request rather than set on the session
    because requests lets ``REQUESTS_CA_BUNDLE`` override a session's ``verify``.
    ``retry_log`` (a list) receives one :class:`RetryRecord` per retry; pass a
    shared list to see the retries of several sources.
    """

    def __init__(
        self,
        source: str,
        base_url: str,
        *,
        auth: SourceAuth | None = None,
        tls: "ClientTls | None" = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        requests_per_second: float | None = None,
        default_headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        user_agent: str = "ggm-lakehouse-connector/0.1",
        retry_log: list[RetryRecord] | None = None,
        max_in_flight: int = 1,
    ) -> None:
        self.source = source
        self.base_url = base_url.rstrip("/")
        base = urlsplit(self.base_url)
        if base.scheme not in ("http", "https") or not base.netloc:
            raise ValueError(f"{source}: base_url must be an absolute http(s) URL, got {base_url!r}")
        self._origin = (base.scheme, base.netloc)
        self.auth = auth or NoAuth()
        self.tls = tls
        self._verify: bool | str = tls.requests_verify() if tls is not None else True
        self._cert: str | tuple[str, str] | None = tls.requests_cert() if tls is not None else None
        self.retry_log: list[RetryRecord] = retry_log if retry_log is not None else []
        self.timeout = (connect_timeout, read_timeout)
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self._rng = rng or random.Random()
        self.rate_limiter = RateLimiter(requests_per_second, sleep=sleep) if requests_per_second else None
        if not 1 <= max_in_flight <= MAX_IN_FLIGHT:
            raise ValueError(f"{source}: max_in_flight must be between 1 and {MAX_IN_FLIGHT}, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self.session = requests.Session()
        # Our own loop does the retrying; urllib3 must not retry underneath it. The pool keeps a
        # connection per request in flight, so parallel requests do not open and close sockets.
        adapter = HTTPAdapter(max_retries=0, pool_connections=4, pool_maxsize=max(8, max_in_flight))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"})
        if default_headers:
            self.session.headers.update(default_headers)
        self.auth.configure_session(self.session)

    # -- lifecycle

    def close(self) -> None:
        """Release pooled connections, the auth's resources and temporary TLS files."""
        self.session.close()
        self.auth.close()
        if self.tls is not None:
            self.tls.close()

    def __enter__(self) -> "HttpSource":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests

    def url_for(self, path_or_url: str) -> str:
        """Absolute URL for a path below ``base_url`` (or an absolute URL on the same origin)."""
        if "://" in path_or_url:
            parts = urlsplit(path_or_url)
            if (parts.scheme, parts.netloc) != self._origin:
                raise SourceDataError(
                    self.source,
                    f"refusing to follow {path_or_url}: it is not on the configured origin "
                    f"{self._origin[0]}://{self._origin[1]}",
                )
            return path_or_url
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> RawResponse:
        """Send one request with retries; return the successful response or raise a typed error.

        Retries cover 429/500/502/503/504, connection failures and timeouts. POST is
        retried too: the registries' POSTs (BRP ``/personen``) are read-only queries.

        Raises :class:`~connectors.errors.SourceAuthError`, ``SourceClientError``,
        ``SourceRateLimitedError``, ``SourceServerError``, ``SourceTimeoutError`` or
        ``SourceUnavailableError``.
        """
        call = self._call(method, path_or_url, params, json_body, headers)
        attempt = 0
        refreshed_credentials = False
        while True:
            attempt += 1
            if self.rate_limiter is not None:
                self.rate_limiter.acquire()
            try:
                response = self._send(call)
            except (SourceAuthError, SourceClientError, SourceTlsError):
                # Raised by the auth itself (token endpoint refused the client): retrying cannot help.
                raise
            except SourceRequestError as exc:
                # The auth's token endpoint had a transient problem; same policy as the source itself.
                error: Exception = exc
                retry_after = getattr(exc, "retry_after", None)
                if retry_after is not None and retry_after > self.retry.max_retry_after:
                    raise
            except requests.exceptions.SSLError as exc:
                raise SourceTlsError(
                    self.source, call.method, call.url, f"in the TLS handshake ({tls_failure_reason(exc)})", attempt
                ) from exc
            except (requests.Timeout, requests.ConnectionError) as exc:
                error, retry_after = self._transport_error(call, exc, attempt), None
            else:
                if response.status_code < 400:
                    return self._raw_response(call, response, attempt)
                if (
                    response.status_code == 401
                    and not refreshed_credentials
                    and self.auth.refresh_after_unauthorized(response)
                ):
                    # An expired or revoked token: fetch a new one and try once more, at once.
                    # A second 401 with fresh credentials is a real authorisation failure.
                    refreshed_credentials = True
                    log.info("%s: %s %s answered 401; retrying once with fresh credentials",
                             self.source, call.method, call.url)
                    response.close()
                    continue
                error, retry_after = self._status_error(call, response, attempt)
            self._wait_before_retry(call, error, attempt, retry_after)

    def _call(
        self,
        method: str,
        path_or_url: str,
        params: Mapping[str, Any] | None,
        json_body: Any,
        headers: Mapping[str, str] | None,
    ) -> "_Call":
        """What :meth:`request` sends on every attempt: method, absolute URL, parameters, headers and body."""
        headers = dict(headers or {})
        data = None
        if json_body is not None:
            # Serialised here so the charset is explicit: BRP's requestBody media type is
            # "application/json; charset=utf-8" (requests' json= would send plain application/json).
            data = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json; charset=utf-8"
        return _Call(method.upper(), self.url_for(path_or_url), dict(params or {}), headers, json_body, data)

    def _send(self, call: "_Call") -> requests.Response:
        """One attempt on the wire: no redirects, the configured timeouts and TLS settings."""
        return self.session.request(
            call.method,
            call.url,
            params=call.params or None,
            data=call.data,
            headers=call.headers or None,
            timeout=self.timeout,
            allow_redirects=False,
            verify=self._verify,
            cert=self._cert,
        )

    def _raw_response(self, call: "_Call", response: requests.Response, attempt: int) -> RawResponse:
        """The successful answer to ``call``, body byte for byte and request headers without credentials."""
        return RawResponse(
            method=call.method,
            url=call.url,
            params=call.params,
            body=call.json_body,
            request_headers=redact_headers(call.headers, self.auth.secret_headers),
            status=response.status_code,
            headers=response.headers,
            content=response.content,
            final_url=response.url,
            attempts=attempt,
        )

    def _transport_error(self, call: "_Call", exc: requests.RequestException, attempt: int) -> SourceRequestError:
        """The typed error of a timeout or connection failure (both retried)."""
        if isinstance(exc, requests.Timeout):
            return SourceTimeoutError(
                self.source, call.method, call.url, f"with a timeout ({exc.__class__.__name__})", attempt
            )
        if _is_read_timeout(exc):
            return SourceTimeoutError(self.source, call.method, call.url, "with a read timeout", attempt)
        return SourceUnavailableError(
            self.source, call.method, call.url, f"because the source is unreachable ({_short(exc)})", attempt
        )

    def _status_error(
        self, call: "_Call", response: requests.Response, attempt: int
    ) -> tuple[SourceHTTPError, float | None]:
        """The typed error of a 4xx/5xx answer and its ``Retry-After``; raised at once when not worth retrying.

        Only :attr:`RetryPolicy.retry_statuses` are retried, and only when the server does not ask
        to wait longer than :attr:`RetryPolicy.max_retry_after`.
        """
        policy = self.retry
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        problem, detail = _problem_and_detail(response)
        error_class = http_error_class(response.status_code)
        error = error_class(
            self.source,
            call.method,
            call.url,
            response.status_code,
            detail,
            attempts=attempt,
            problem=problem,
            retry_after=retry_after,
        )
        if response.status_code not in policy.retry_statuses:
            raise error
        if retry_after is not None and retry_after > policy.max_retry_after:
            log.warning(
                "%s: %s %s asked to retry after %.0f s, above the cap of %.0f s; giving up",
                self.source, call.method, call.url, retry_after, policy.max_retry_after,
            )
            raise error
        return error, retry_after

    def _wait_before_retry(self, call: "_Call", error: Exception, attempt: int, retry_after: float | None) -> None:
        """Raise ``error`` when the attempts are used up; else record the retry and sleep before it.

        The wait is the server's ``Retry-After`` when it gave one, else the policy's backoff.
        """
        policy = self.retry
        if attempt >= policy.max_attempts:
            raise error
        wait = retry_after if retry_after is not None else policy.backoff(attempt, self._rng)
        log.warning("%s; retrying in %.2f s (attempt %d of %d)", error, wait, attempt + 1, policy.max_attempts)
        self.retry_log.append(
            RetryRecord(
                method=call.method,
                url=call.url,
                attempt=attempt,
                status=getattr(error, "status", None),
                error=type(error).__name__,
                retry_after=retry_after,
                wait=wait,
            )
        )
        self.sleep(wait)

    def get(self, path_or_url: str, **kwargs: Any) -> RawResponse:
        """GET with retries; see :meth:`request`."""
        return self.request("GET", path_or_url, **kwargs)

    def post(self, path_or_url: str, **kwargs: Any) -> RawResponse:
        """POST with retries; see :meth:`request`."""
        return self.request("POST", path_or_url, **kwargs)

    def map_in_order(self, send: Callable[[_Item], _Result], items: Iterable[_Item]) -> Iterator[_Result]:
        """``send(item)`` for every item, at most ``max_in_flight`` at once, results in the order of ``items``.

        For independent requests whose responses are landed in order: e.g.
        ``for response in http.map_in_order(lambda group: http.post("/personen", json_body=...), groups)``.
        The rate limiter, retries and auth apply to each request as usual; the first error is raised.
        """
        return bounded_map(send, items, self.max_in_flight)

    # -- paging

    def iter_pages(
        self,
        first: Callable[[], RawResponse],
        next_url: Callable[[RawResponse], str | None],
        *,
        headers: Mapping[str, str] | None = None,
        max_pages: int = 100_000,
    ) -> Iterator[RawResponse]:
        """Yield ``first()`` and then every page ``next_url(page)`` points to (GET), until it returns None.

        A URL seen before ends the walk with an error rather than looping forever.
        """
        page = first()
        seen = {page.final_url}
        count = 1
        yield page
        while True:
            link = next_url(page)
            if not link:
                return
            absolute = urljoin(page.final_url, link)
            if absolute in seen:
                raise SourceDataError(self.source, f"paging loop: {absolute} was already fetched")
            if count >= max_pages:
                raise SourceDataError(self.source, f"more than {max_pages} pages after {page.url}; aborting")
            page = self.get(absolute, headers=headers)
            seen.add(page.final_url)
            count += 1
            yield page

    def iter_hal_pages(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        max_pages: int = 100_000,
    ) -> Iterator[RawResponse]:
        """GET ``path`` and follow HAL ``_links.next.href`` until there is no next link."""
        return self.iter_pages(
            lambda: self.get(path, params=params, headers=headers),
            lambda page: hal_next_href(page, self.source),
            headers=headers,
            max_pages=max_pages,
        )


def hal_next_href(page: RawResponse, source: str = "http") -> str | None:
    """The ``_links.next.href`` of a HAL page, or None on the last page."""
    try:
        body = page.json()
    except ValueError as exc:
        raise SourceDataError(source, f"{page.method} {page.url} did not return JSON: {exc}") from exc
    links = body.get("_links") if isinstance(body, dict) else None
    nxt = links.get("next") if isinstance(links, dict) else None
    href = nxt.get("href") if isinstance(nxt, dict) else None
    return href or None


def tls_failure_reason(exc: BaseException) -> str:
    """The OpenSSL reason of a TLS failure, e.g. 'CERTIFICATE_VERIFY_FAILED' or 'TLSV13_ALERT_CERTIFICATE_REQUIRED'."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            reason = getattr(current, "reason", None)
            verify = getattr(current, "verify_message", None)
            if reason and verify:
                return f"{reason}: {verify}"
            if isinstance(current, ssl.SSLEOFError) or (reason and "EOF" in str(reason)):
                return (
                    f"{reason or 'EOF'}: the server closed the connection during the handshake, typically because "
                    "it requires a client certificate or does not trust the one sent"
                )
            return str(reason or current)
        stack.extend(a for a in current.args if isinstance(a, BaseException))
        for linked in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(linked, BaseException):
                stack.append(linked)
    text = str(exc)
    return text[:200] + ("…" if len(text) > 200 else "")


def _short(exc: BaseException) -> str:
    """The innermost useful reason of a requests/urllib3 exception, e.g. 'Connection refused'."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "Connection reset", "Remote end closed"):
        if marker in text:
            return marker
    return exc.__class__.__name__


__all__ = [
    "ALWAYS_SECRET_HEADERS",
    "ApiKeyHeaderAuth",
    "HttpSource",
    "NoAuth",
    "RateLimiter",
    "RawResponse",
    "RetryPolicy",
    "RetryRecord",
    "SourceAuth",
    "SourceHTTPError",
    "SourceTlsError",
    "hal_next_href",
    "parse_retry_after",
    "redact_headers",
    "tls_failure_reason",
]
