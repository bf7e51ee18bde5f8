"""Machinery shared by the BRP and BAG stand-ins.

* :class:`WorldSource` turns whatever describes the demo municipality (a fixed
  :class:`~demo_gemeente.model.Municipality`, a generator world with ``.at(date)``
  or a plain callable) into "the municipality as it was on date X";
* :class:`RegistryState` is everything one registry needs at request time: the
  world, its own clock (``as_of``), accepted API keys, rate limiter and fault
  injector;
* :class:`TokenBucketRateLimiter` and :class:`FaultInjector` implement the
  operational behaviour that clients must survive (429, 5xx, slow answers);
* :func:`admin_router` exposes the test/demo controls under ``/_standin/``,
  deliberately outside every path the official specs define.
"""
from __future__ import annotations

import asyncio
import json
import math
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, Callable, Protocol, Self

import uvicorn
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from demo_gemeente.model import Municipality

ADMIN_PREFIX = "/_standin"
PROBLEM_JSON = "application/problem+json"


class _HasAt(Protocol):
    def at(self, as_of: date) -> Municipality: ...


WorldLike = Municipality | _HasAt | Callable[[date], Municipality]


class WorldSource:
    """Serves the municipality state for a given date, with a small cache.

    Accepted inputs:

    * a ``Municipality``: one fixed snapshot. Objects and persons whose start date
      lies after the requested date are hidden and deaths after that date are
      ignored (the apps check :func:`exists_on` and :func:`is_deceased_on`), so tests
      can still move the clock;
    * an object with ``.at(as_of) -> Municipality`` (``demo_gemeente.generator.DemoWorld``);
    * a callable ``f(as_of) -> Municipality``.

    Building a municipality for a date can be expensive, so the last few dates are
    cached; the lock keeps two request threads from building the same date twice.
    """

    def __init__(self, world: WorldLike, cache_size: int = 4) -> None:
        self._world = world
        self._cache: OrderedDict[date, Municipality] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def default_as_of(self) -> date:
        """The date a registry starts at when nobody set one."""
        if isinstance(self._world, Municipality):
            return self._world.as_of
        return date.today()

    def at(self, as_of: date) -> Municipality:
        """The municipality at the end of ``as_of``."""
        with self._lock:
            cached = self._cache.get(as_of)
            if cached is not None:
                self._cache.move_to_end(as_of)
                return cached
            if isinstance(self._world, Municipality):
                state = self._world
            elif hasattr(self._world, "at"):
                state = self._world.at(as_of)  # type: ignore[union-attr]
            elif callable(self._world):
                state = self._world(as_of)
            else:  # pragma: no cover - guarded by the type hints
                raise TypeError(f"cannot serve a world of type {type(self._world).__name__}")
            self._cache[as_of] = state
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return state


def exists_on(start: date | None, as_of: date) -> bool:
    """True when something that started on ``start`` already existed at the end of ``as_of``."""
    return start is None or start <= as_of


def is_deceased_on(overlijdensdatum: date | None, as_of: date) -> bool:
    """True when a person with this date of death had died by the end of ``as_of``."""
    return overlijdensdatum is not None and overlijdensdatum <= as_of


class TokenBucketRateLimiter:
    """Requests per second per API key, as a token bucket.

    The bucket holds at most ``burst`` tokens (default: one second worth, at least
    one) and refills at ``rate`` tokens per second; each request takes one token.
    """

    def __init__(self, rate_per_second: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")
        self.rate = float(rate_per_second)
        self.burst = float(burst if burst is not None else max(1.0, rate_per_second))
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        """Whole requests per second, for the rate-limit response headers."""
        return max(1, int(self.rate))

    def acquire(self, key: str) -> tuple[bool, int, float]:
        """Take one token for ``key``.

        Returns ``(allowed, remaining_whole_tokens, seconds_until_next_token)``.
        """
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                tokens -= 1.0
                self._buckets[key] = (tokens, now)
                return True, int(tokens), 0.0
            self._buckets[key] = (tokens, now)
            return False, 0, (1.0 - tokens) / self.rate


@dataclass(frozen=True, slots=True)
class Fault:
    """One planned misbehaviour: answer with ``status`` or answer after ``delay_seconds``."""

    kind: str  # "fail" or "delay"
    status: int = 503
    retry_after_seconds: int | None = 1
    delay_seconds: float = 0.0


class FaultInjector:
    """Makes the next N requests fail or slow down, for client resilience tests and demos.

    Faults are consumed first-in first-out, one per request that passed
    authentication and the rate limiter (those are gateway concerns that come
    before the "backend" in a real deployment).
    """

    def __init__(self) -> None:
        self._queue: list[Fault] = []
        self._lock = threading.Lock()

    def fail_next(self, count: int = 1, status: int = 503, retry_after_seconds: int | None = 1) -> None:
        """Answer the next ``count`` requests with ``status`` (500, 502, 503 or 504)."""
        if status not in (500, 502, 503, 504):
            raise ValueError(f"unsupported fault status {status}; use 500, 502, 503 or 504")
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._queue.extend([Fault("fail", status=status, retry_after_seconds=retry_after_seconds)] * count)

    def delay_next(self, count: int = 1, seconds: float = 1.0) -> None:
        """Answer the next ``count`` requests normally, but only after ``seconds``."""
        if count < 1 or seconds < 0:
            raise ValueError("count must be >= 1 and seconds >= 0")
        with self._lock:
            self._queue.extend([Fault("delay", delay_seconds=float(seconds))] * count)

    def clear(self) -> None:
        """Drop all planned faults."""
        with self._lock:
            self._queue.clear()

    def pending(self) -> int:
        """How many planned faults have not been used yet."""
        with self._lock:
            return len(self._queue)

    def take(self) -> Fault | None:
        """Consume the next planned fault, if any."""
        with self._lock:
            return self._queue.pop(0) if self._queue else None


@dataclass
class RegistryState:
    """Runtime state of one stand-in registry."""

    name: str
    world: WorldSource
    api_keys: frozenset[str]
    rate_limiter: TokenBucketRateLimiter | None = None
    faults: FaultInjector = field(default_factory=FaultInjector)
    _as_of: date | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def as_of(self) -> date:
        """The registry's current date: it serves the state at the end of this day."""
        with self._lock:
            return self._as_of or self.world.default_as_of

    def set_as_of(self, as_of: date) -> None:
        """Move the registry's clock (forwards or backwards)."""
        if not isinstance(as_of, date) or isinstance(as_of, datetime):
            raise TypeError("as_of must be a datetime.date")
        with self._lock:
            self._as_of = as_of

    def municipality(self) -> Municipality:
        """The municipality state this registry serves right now."""
        return self.world.at(self.as_of)


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """An RFC 7807 ``application/problem+json`` response with ``body['status']``."""
    return Response(
        content=json.dumps(body, ensure_ascii=False),
        status_code=int(body["status"]),
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def http_date_after(seconds: int) -> str:
    """An HTTP-date ``seconds`` from now (IMF-fixdate), for ``Retry-After`` as a date."""
    moment = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return format_datetime(moment.replace(microsecond=0), usegmt=True)


def retry_after_seconds(wait: float) -> str:
    """``Retry-After`` delta-seconds: whole seconds, never 0 so clients really back off."""
    return str(max(1, math.ceil(wait)))


def request_instance(request: Request) -> str:
    """Path plus query string of the request, the ``instance`` of a problem report."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


class GateErrors(Protocol):
    """How a registry phrases the gateway errors (its spec decides the wording)."""

    def unauthenticated(self, request: Request) -> Response: ...
    def forbidden(self, request: Request) -> Response: ...
    def too_many_requests(self, request: Request, retry_after: str, headers: dict[str, str]) -> Response: ...
    def injected_failure(self, request: Request, fault: Fault) -> Response: ...


def install_gate(app: Any, state: RegistryState, api_key_header: str, errors: GateErrors,
                 rate_limit_headers: Callable[[TokenBucketRateLimiter, int], dict[str, str]] | None = None) -> None:
    """Add the gateway middleware: API key → rate limit → injected faults.

    The ``/_standin`` admin paths skip the gate so a test can always reconfigure
    a registry that is busy failing.
    """

    @app.middleware("http")
    async def gate(request: Request, call_next):  # noqa: ANN001 - Starlette signature
        if request.url.path.startswith(ADMIN_PREFIX):
            return await call_next(request)
        key = request.headers.get(api_key_header)
        if not key:
            return errors.unauthenticated(request)
        if key not in state.api_keys:
            return errors.forbidden(request)
        extra_headers: dict[str, str] = {}
        limiter = state.rate_limiter
        if limiter is not None:
            allowed, remaining, wait = limiter.acquire(key)
            if rate_limit_headers is not None:
                extra_headers = rate_limit_headers(limiter, remaining)
            if not allowed:
                return errors.too_many_requests(request, retry_after_seconds(wait), extra_headers)
        fault = state.faults.take()
        if fault is not None and fault.kind == "fail":
            response = errors.injected_failure(request, fault)
        else:
            if fault is not None and fault.delay_seconds > 0:
                await asyncio.sleep(fault.delay_seconds)
            response = await call_next(request)
        for name, value in extra_headers.items():
            response.headers[name] = value
        return response


def admin_router(state: RegistryState) -> APIRouter:
    """Test/demo controls of one registry under ``/_standin``.

    * ``GET  /_standin/health``: liveness, registry name and current as-of date;
    * ``GET|PUT /_standin/as-of``: read or set the registry clock, body ``{"as_of": "YYYY-MM-DD"}``;
    * ``POST /_standin/faults``: plan faults, body ``{"mode": "fail", "count": 2, "status": 503,
      "retry_after": 1}`` or ``{"mode": "delay", "count": 1, "seconds": 2.5}``;
    * ``DELETE /_standin/faults``: drop planned faults.

    The stand-ins are local test doubles bound to 127.0.0.1 by default; these
    controls are unauthenticated on purpose so a demo can drive them with curl.
    """
    router = APIRouter(prefix=ADMIN_PREFIX)

    def _bad(detail: str) -> JSONResponse:
        return JSONResponse({"error": detail}, status_code=400)

    @router.get("/health")
    def health() -> dict[str, Any]:
        return {"name": state.name, "status": "ok", "as_of": state.as_of.isoformat()}

    @router.get("/as-of")
    def get_as_of() -> dict[str, str]:
        return {"as_of": state.as_of.isoformat()}

    @router.put("/as-of")
    async def put_as_of(request: Request) -> Response:
        try:
            payload = await request.json()
            new_date = date.fromisoformat(payload["as_of"])
        except (ValueError, KeyError, TypeError):
            return _bad('expected JSON body {"as_of": "YYYY-MM-DD"}')
        state.set_as_of(new_date)
        return JSONResponse({"as_of": new_date.isoformat()})

    @router.post("/faults")
    async def post_faults(request: Request) -> Response:
        try:
            payload = await request.json()
            mode = payload["mode"]
            count = int(payload.get("count", 1))
            if mode == "fail":
                retry = payload.get("retry_after", 1)
                state.faults.fail_next(count, status=int(payload.get("status", 503)),
                                       retry_after_seconds=None if retry is None else int(retry))
            elif mode == "delay":
                state.faults.delay_next(count, seconds=float(payload["seconds"]))
            else:
                return _bad('mode must be "fail" or "delay"')
        except (ValueError, KeyError, TypeError) as exc:
            return _bad(f"invalid fault request: {exc}")
        return JSONResponse({"pending": state.faults.pending()})

    @router.delete("/faults")
    def delete_faults() -> dict[str, int]:
        state.faults.clear()
        return {"pending": 0}

    return router


_STARTUP_TIMEOUT_SECONDS = 15.0


class ThreadedUvicorn:
    """One uvicorn server on a background thread; port 0 means "any free port".

    With ``ssl_certfile``/``ssl_keyfile`` it serves HTTPS; ``ssl_ca_certs`` with
    ``ssl_cert_reqs=ssl.CERT_REQUIRED`` makes it demand a client certificate
    signed by that CA (mutual TLS, as PKIoverheid endpoints do). ``ssl_maximum_version``
    caps the protocol (e.g. ``ssl.TLSVersion.TLSv1_2`` so a refused client certificate
    fails the handshake itself instead of the first read).
    """

    def __init__(self, app, host: str, port: int, name: str = "standin", *,
                 ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
                 ssl_ca_certs: str | None = None, ssl_cert_reqs: int | None = None,
                 ssl_maximum_version: "ssl.TLSVersion | None" = None) -> None:
        ssl_options: dict[str, Any] = {}
        if ssl_certfile is not None:
            ssl_options.update(ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
        if ssl_ca_certs is not None:
            ssl_options["ssl_ca_certs"] = ssl_ca_certs
        if ssl_cert_reqs is not None:
            ssl_options["ssl_cert_reqs"] = ssl_cert_reqs
        if ssl_maximum_version is not None:
            def capped_context(_config: uvicorn.Config, default: Callable[[], Any]) -> Any:
                context = default()
                context.maximum_version = ssl_maximum_version
                return context

            ssl_options["ssl_context_factory"] = capped_context
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2, **ssl_options)
        self.server = uvicorn.Server(config)
        self.name = name
        self.thread = threading.Thread(target=self.server.run, name=f"{name}-{port}", daemon=True)
        self.port: int | None = None

    def start(self) -> int:
        """Start serving; returns the bound port once the server accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"{self.name} server thread exited during startup (port in use?)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} server did not start in time")
            time.sleep(0.01)
        sockets = [s for server in self.server.servers for s in server.sockets]
        self.port = int(sockets[0].getsockname()[1])
        return self.port

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class RegistryHandle:
    """What a running registry stand-in offers a test: its admin URL, API key, faults and clock.

    Mixed into the handles of the registry stand-ins (:class:`standins.server.Registry`,
    ``BrpUpdateStandin``, ``KvkStandin``), which provide ``state`` (a :class:`RegistryState`),
    ``host``, ``port`` and ``url``.
    """

    @property
    def admin_url(self) -> str:
        """Root of the ``/_standin`` test controls of this registry."""
        if self.port is None:
            raise RuntimeError(f"stand-in {self.state.name} is not running")
        return f"http://{self.host}:{self.port}/_standin"

    @property
    def api_key(self) -> str:
        """The (first) accepted API key."""
        return sorted(self.state.api_keys)[0]

    @property
    def faults(self) -> FaultInjector:
        """Fault injector: ``fail_next(n, status, retry_after_seconds)``, ``delay_next(n, seconds)``."""
        return self.state.faults

    @property
    def as_of(self) -> date:
        return self.state.as_of

    def set_as_of(self, as_of: date) -> None:
        """Serve the registry's state at the end of ``as_of`` from now on (BRP Update keeps its volgindicaties)."""
        self.state.set_as_of(as_of)

    def describe(self) -> dict[str, str]:
        """The one-line JSON announcement of a running stand-in."""
        return {"name": self.state.name, "url": self.url, "api_key": self.api_key}


class WorkspaceStandin:
    """Lifecycle of a Databricks workspace stand-in serving ``self.app`` on a background thread.

    Subclasses set ``app``, ``host``, ``token``, ``port = None`` and ``_server = None`` in their
    ``__init__`` and name their server thread with ``thread_name``.
    """

    thread_name = "workspace-standin"

    @property
    def url(self) -> str:
        """Workspace base URL, e.g. ``http://127.0.0.1:54321`` (the APIs live under ``/api``)."""
        if self.port is None:
            raise RuntimeError("stand-in is not started")
        return f"http://{self.host}:{self.port}"

    def airflow_connection(self) -> dict[str, Any]:
        """An Airflow connection (JSON form for ``AIRFLOW_CONN_<ID>``) that reaches this stand-in.

        The provider builds ``<schema or https>://<host>:<port>/api/...`` and strips any scheme
        written into ``host``, so plain HTTP needs ``schema="http"`` and a separate ``port``.
        Token auth needs an empty login and the token as password.
        """
        if self.port is None:
            raise RuntimeError("stand-in is not started")
        return {"conn_type": "databricks", "host": self.host, "port": self.port, "schema": "http",
                "login": "", "password": self.token}

    def start(self) -> Self:
        """Serve on a background thread; returns once the port is bound."""
        self._server = ThreadedUvicorn(self.app, self.host, 0, name=self.thread_name)
        self.port = self._server.start()
        return self

    def stop(self) -> None:
        """Stop the server thread."""
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
