"""HttpSource against a small throwaway HTTP server on 127.0.0.1 (real sockets, no mocks).

Each test scripts the responses of one path; the server counts requests, so retry
behaviour is asserted on attempt counts. Waits are asserted through the injected
``sleep`` function (the wait the client *requested*), never by measuring time.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from collections import defaultdict, deque
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.base import ExtractWindow, HttpConnector, http_config_schema
from connectors.errors import (
    SourceAuthError,
    SourceClientError,
    SourceConfigError,
    SourceDataError,
    SourceRateLimitedError,
    SourceServerError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from connectors.http import ApiKeyHeaderAuth, HttpSource, RateLimiter, RetryPolicy, bounded_map, parse_retry_after
from ggm_lakehouse.pipeline import connector_from_connection

PROBLEM = "application/problem+json"


class ScriptedServer:
    """An HTTP server whose answers per path are scripted as a queue; the last answer repeats."""

    def __init__(self) -> None:
        self.scripts: dict[str, deque] = {}
        self.hits: dict[str, int] = defaultdict(int)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def _serve(self) -> None:
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                self.request_body = body  # for a callable answer: its own request, whatever else is in flight
                server.hits[path] += 1
                server.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                script = server.scripts.get(path)
                if not script:
                    status, headers, payload, delay = 404, {"Content-Type": PROBLEM}, b'{"status":404}', 0
                elif len(script) > 1:
                    status, headers, payload, delay = script.popleft()
                else:
                    status, headers, payload, delay = script[0]
                if delay:
                    time.sleep(delay)
                if callable(payload):
                    # A callable answers with a body, or with (status, headers, body) to decide the status too.
                    payload = payload(self)
                    if isinstance(payload, tuple):
                        status, headers, payload = payload
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # client gave up (timeout test)
                    pass

            do_GET = _serve
            do_POST = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api"

    def script(self, path: str, *answers: tuple) -> None:
        """Queue answers ``(status, headers, body[, delay])`` for ``/api<path>``."""
        normalised = []
        for answer in answers:
            status, headers, body, *rest = answer
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            normalised.append((status, headers, body, rest[0] if rest else 0))
        self.scripts["/api" + path] = deque(normalised)

    def count(self, path: str) -> int:
        return self.hits["/api" + path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = ScriptedServer()
    yield srv
    srv.close()


class SleepRecorder:
    """Stands in for time.sleep: records requested waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def make_source(server: ScriptedServer, sleep: SleepRecorder, **kwargs) -> HttpSource:
    kwargs.setdefault("retry", RetryPolicy(max_attempts=4, backoff_base=0.5, backoff_max=8, max_retry_after=60))
    kwargs.setdefault("auth", ApiKeyHeaderAuth("X-Api-Key", "secret-key-123"))
    return HttpSource("testsrc", server.base_url, sleep=sleep, **kwargs)


OK = (200, {"Content-Type": "application/json"}, {"ok": True})


def test_success_keeps_raw_bytes_and_sends_api_key_but_never_records_it(server):
    raw = b'{"a": 1,  "b": "\xc3\xa9"}'  # odd spacing and UTF-8 must survive byte for byte
    server.script("/thing", (200, {"Content-Type": "application/json"}, raw))
    with make_source(server, SleepRecorder()) as source:
        response = source.get("/thing", params={"q": "x"}, headers={"Accept-Crs": "epsg:28992"})
    assert response.content == raw
    assert response.json() == {"a": 1, "b": "é"}
    assert server.requests[0]["headers"]["X-Api-Key"] == "secret-key-123"
    assert server.requests[0]["path"] == "/api/thing?q=x"
    record = response.request_record()
    assert record == {
        "method": "GET",
        "url": server.base_url + "/thing",
        "params": {"q": "x"},
        "body": None,
        "headers": {"Accept-Crs": "epsg:28992"},
    }
    assert "secret-key-123" not in json.dumps(record)
    assert "secret-key-123" not in repr(ApiKeyHeaderAuth("X-Api-Key", "secret-key-123"))


def test_post_sends_json_with_explicit_utf8_charset(server):
    server.script("/personen", OK)
    with make_source(server, SleepRecorder()) as source:
        source.post("/personen", json_body={"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999993653"]})
    sent = server.requests[0]
    assert sent["headers"]["Content-Type"] == "application/json; charset=utf-8"
    assert json.loads(sent["body"])["burgerservicenummer"] == ["999993653"]


def test_400_is_not_retried_and_carries_problem_details(server):
    problem = {
        "type": "https://datatracker.ietf.org/doc/html/rfc7231#section-6.5.1",
        "title": "Een of meerdere parameters zijn niet correct.",
        "status": 400,
        "detail": "De foutieve parameter(s) zijn: burgerservicenummer.",
        "code": "paramsValidation",
        "instance": "/haalcentraal/api/brp/personen",
        "invalidParams": [{"type": "x", "name": "burgerservicenummer", "code": "maxItems", "reason": "te veel"}],
    }
    server.script("/personen", (400, {"Content-Type": PROBLEM}, problem))
    sleep = SleepRecorder()
    with make_source(server, sleep) as source, pytest.raises(SourceClientError) as caught:
        source.post("/personen", json_body={"type": "RaadpleegMetBurgerservicenummer"})
    error = caught.value
    assert server.count("/personen") == 1
    assert sleep.waits == []
    assert error.status == 400 and error.source == "testsrc" and error.attempts == 1
    assert error.invalid_params[0]["name"] == "burgerservicenummer"
    message = str(error)
    assert message.startswith(f"testsrc: POST {server.base_url}/personen failed with HTTP 400")
    assert "De foutieve parameter(s) zijn: burgerservicenummer." in message
    assert "burgerservicenummer: maxItems" in message


def test_bag_style_hyphenated_invalid_params_are_read(server):
    problem = {"status": 400, "title": "Bad", "invalid-params": [{"name": "pageSize", "code": "maximum"}]}
    server.script("/panden", (400, {"Content-Type": PROBLEM}, problem))
    with make_source(server, SleepRecorder()) as source, pytest.raises(SourceClientError) as caught:
        source.get("/panden", params={"pageSize": 500})
    assert caught.value.invalid_params == [{"name": "pageSize", "code": "maximum"}]


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_not_retried(server, status):
    server.script("/x", (status, {"Content-Type": PROBLEM}, {"status": status, "title": "Niet geautoriseerd"}))
    sleep = SleepRecorder()
    with make_source(server, sleep) as source, pytest.raises(SourceAuthError) as caught:
        source.get("/x")
    assert server.count("/x") == 1
    assert sleep.waits == []
    assert caught.value.status == status
    assert f"HTTP {status} (Niet geautoriseerd)" in str(caught.value)


def test_429_honours_retry_after_seconds(server):
    server.script(
        "/limited",
        (429, {"Content-Type": PROBLEM, "Retry-After": "7"}, {"status": 429, "title": "Too Many Requests"}),
        (429, {"Content-Type": PROBLEM, "Retry-After": "3"}, {"status": 429, "title": "Too Many Requests"}),
        OK,
    )
    sleep = SleepRecorder()
    with make_source(server, sleep) as source:
        response = source.get("/limited")
    assert response.status == 200 and response.attempts == 3
    assert server.count("/limited") == 3
    assert sleep.waits == [7.0, 3.0]


def test_503_honours_retry_after_http_date(server):
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    server.script("/maint", (503, {"Retry-After": format_datetime(when, usegmt=True)}, b"maintenance"), OK)
    sleep = SleepRecorder()
    with make_source(server, sleep) as source:
        source.get("/maint")
    assert server.count("/maint") == 2
    assert len(sleep.waits) == 1 and 25 <= sleep.waits[0] <= 31


def test_retry_after_beyond_cap_fails_at_once(server):
    server.script("/long", (503, {"Retry-After": "3600", "Content-Type": PROBLEM}, {"title": "Onderhoud"}))
    sleep = SleepRecorder()
    with make_source(server, sleep) as source, pytest.raises(SourceServerError) as caught:
        source.get("/long")
    assert server.count("/long") == 1 and sleep.waits == []
    assert caught.value.retry_after == 3600


def test_429_exhausted_is_rate_limited_error(server):
    server.script("/limited", (429, {"Retry-After": "1"}, b""))
    with make_source(server, SleepRecorder()) as source, pytest.raises(SourceRateLimitedError) as caught:
        source.get("/limited")
    assert caught.value.attempts == 4 and server.count("/limited") == 4


def test_500_and_503_are_retried_with_growing_backoff_then_succeed(server):
    server.script("/flaky", (500, {}, b"boom"), (503, {}, b"busy"), (502, {}, b"gateway"), OK)
    sleep = SleepRecorder()
    with make_source(server, sleep) as source:
        response = source.get("/flaky")
    assert response.json() == {"ok": True}
    assert server.count("/flaky") == 4
    # equal jitter: retry n waits between half and all of 0.5 * 2**(n-1)
    assert len(sleep.waits) == 3
    for n, wait in enumerate(sleep.waits, start=1):
        ceiling = 0.5 * 2 ** (n - 1)
        assert ceiling / 2 <= wait <= ceiling


def test_503_exhausting_retries_names_source_status_and_attempts(server):
    problem = {"status": 503, "title": "Bronservice BRP is tijdelijk niet beschikbaar.", "code": "notAvailable"}
    server.script("/personen", (503, {"Content-Type": PROBLEM}, problem))
    with make_source(server, SleepRecorder()) as source, pytest.raises(SourceServerError) as caught:
        source.post("/personen", json_body={"type": "RaadpleegMetBurgerservicenummer"})
    error = caught.value
    assert server.count("/personen") == 4
    assert error.status == 503 and error.attempts == 4 and error.source == "testsrc"
    assert str(error) == (
        f"testsrc: POST {server.base_url}/personen failed with HTTP 503 "
        "(Bronservice BRP is tijdelijk niet beschikbaar.; code=notAvailable) after 4 attempts"
    )


def test_read_timeout_is_retried_then_typed(server):
    server.script("/slow", (200, {}, b"{}", 1.5))
    sleep = SleepRecorder()
    source = make_source(server, sleep, read_timeout=0.2, retry=RetryPolicy(max_attempts=2, backoff_base=0.1))
    with source, pytest.raises(SourceTimeoutError) as caught:
        source.get("/slow")
    assert caught.value.attempts == 2
    assert server.count("/slow") == 2
    assert len(sleep.waits) == 1
    assert "testsrc: GET" in str(caught.value) and "timeout" in str(caught.value)


def test_connection_refused_is_unavailable_error():
    with socket.socket() as probe:  # find a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleep = SleepRecorder()
    source = HttpSource("bag", f"http://127.0.0.1:{port}/lvbag", sleep=sleep, retry=RetryPolicy(max_attempts=3))
    with source, pytest.raises(SourceUnavailableError) as caught:
        source.get("/panden")
    assert caught.value.attempts == 3 and len(sleep.waits) == 2
    assert str(caught.value).startswith(f"bag: GET http://127.0.0.1:{port}/lvbag/panden failed because")
    assert "Connection refused" in str(caught.value)


def test_hal_paging_follows_next_links_until_last_page(server):
    def page(n: int, last: int):
        links = {"self": {"href": f"/api/items?page={n}&pageSize=10"}}
        if n < last:  # relative href, as the BAG spec examples show
            links["next"] = {"href": f"/api/items?page={n + 1}&pageSize=10"}
        return {"_embedded": {"items": [{"id": f"{n}-{i}"} for i in range(2)]}, "_links": links}

    def answer(handler):
        n = int(handler.path.split("page=")[1].split("&")[0]) if "page=" in handler.path else 1
        return json.dumps(page(n, 3)).encode()

    server.scripts["/api/items"] = deque([(200, {"Content-Type": "application/hal+json"}, answer, 0)])
    with make_source(server, SleepRecorder()) as source:
        pages = list(source.iter_hal_pages("/items", params={"pageSize": 10}))
    assert [p.json()["_embedded"]["items"][0]["id"] for p in pages] == ["1-0", "2-0", "3-0"]
    assert pages[0].params == {"pageSize": 10}
    assert pages[1].url == f"{server.base_url}/items?page=2&pageSize=10" and pages[1].params == {}


def test_hal_paging_refuses_foreign_hosts_and_loops(server):
    server.script("/foreign", (200, {}, {"_links": {"next": {"href": "http://evil.example/steal"}}}))
    server.script("/loop", (200, {}, {"_links": {"next": {"href": "/api/loop"}}}))
    with make_source(server, SleepRecorder()) as source:
        with pytest.raises(SourceDataError, match="not on the configured origin"):
            list(source.iter_hal_pages("/foreign"))
        with pytest.raises(SourceDataError, match="paging loop"):
            list(source.iter_hal_pages("/loop"))


def test_rate_limiter_spaces_requests():
    clock = [100.0]
    sleep = SleepRecorder()

    def fake_sleep(seconds: float) -> None:
        sleep(seconds)
        clock[0] += seconds

    limiter = RateLimiter(50, clock=lambda: clock[0], sleep=fake_sleep)
    for _ in range(5):
        limiter.acquire()
    # first request immediately, then 1/50 s apart: 4 waits of 0.02 s
    assert sleep.waits == pytest.approx([0.02] * 4)


class _InFlight:
    """Counts the requests the server is answering at once; each waits at a barrier of ``parties``.

    A client that sent fewer than ``parties`` requests at once would leave the barrier broken
    (its wait times out) and get no answer, so a passing test proves the overlap.
    """

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=10)
        self.lock = threading.Lock()
        self.now = self.most = 0

    def __call__(self, handler) -> bytes:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            self.barrier.wait()
            return handler.path.encode()
        finally:
            with self.lock:
                self.now -= 1


def test_map_in_order_overlaps_requests_up_to_its_bound_and_answers_in_order(server):
    in_flight = _InFlight(parties=3)
    server.script("/echo", (200, {"Content-Type": "text/plain"}, in_flight))
    source = make_source(server, SleepRecorder(), max_in_flight=3)
    answers = list(source.map_in_order(lambda i: source.get(f"/echo?i={i}"), range(9)))
    assert [a.content.decode() for a in answers] == [f"/api/echo?i={i}" for i in range(9)]
    assert in_flight.most == 3  # three at once, never more


def test_bounded_map_raises_the_first_error_and_starts_nothing_after_it():
    started: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        if i == 3:
            raise ValueError("item 3 is bad")
        return i * 10

    results = []
    with pytest.raises(ValueError, match="item 3 is bad"):
        for value in bounded_map(work, range(100), max_in_flight=2):
            results.append(value)
    assert results == [0, 10, 20]
    assert max(started) <= 4  # at most one call beyond the failing one was in flight


def test_bounded_map_of_one_runs_in_the_callers_thread():
    caller = threading.current_thread()
    assert list(bounded_map(lambda i: (i, threading.current_thread() is caller), range(3), 1)) == [
        (0, True), (1, True), (2, True)]


def test_max_in_flight_outside_its_bounds_is_refused(server):
    with pytest.raises(ValueError, match="max_in_flight must be between 1 and 32"):
        make_source(server, SleepRecorder(), max_in_flight=0)


def test_parse_retry_after_forms():
    now = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Sun, 01 Mar 2026 12:00:30 GMT", now) == 30
    assert parse_retry_after("Sun, 01 Mar 2026 11:00:00 GMT", now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


class _DemoConnector(HttpConnector):
    name = "demo"
    config_schema = http_config_schema({"items": {"type": "array", "items": {"type": "string"}}}, required=["api_key"])


def test_config_validation_errors_never_echo_secrets():
    with pytest.raises(SourceConfigError) as caught:
        _DemoConnector({"base_url": "http://x", "api_key": 12345678, "items": "not-a-list"})
    message = str(caught.value)
    assert message.startswith("demo: invalid configuration")
    assert "items" in message and "12345678" not in message
    connector = _DemoConnector({"base_url": "http://x", "api_key": "very-secret"})
    assert connector.config["max_attempts"] == 4  # schema default applied
    assert "very-secret" not in repr(connector)


def test_from_airflow_connection_maps_host_password_and_extra(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_DEMO_API",
        json.dumps(
            {
                "conn_type": "http",
                "host": "http://127.0.0.1:5010/haalcentraal/api/brp",
                "password": "proef-key-123",
                "extra": {"items": ["a"], "max_attempts": 2},
            }
        ),
    )
    connector = connector_from_connection(_DemoConnector, "demo_api", read_timeout=9)
    assert connector.config["base_url"] == "http://127.0.0.1:5010/haalcentraal/api/brp"
    assert connector.config["api_key"] == "proef-key-123"
    assert connector.config["items"] == ["a"] and connector.config["max_attempts"] == 2
    assert connector.config["read_timeout"] == 9
    # Airflow's URI form: host, port and path (schema) separately
    monkeypatch.setenv("AIRFLOW_CONN_DEMO_URI", "http://:key-456@bag.local:8080/lvbag%2Findividuelebevragingen%2Fv2")
    connector = connector_from_connection(_DemoConnector, "demo_uri")
    assert connector.config["base_url"] == "http://bag.local:8080/lvbag/individuelebevragingen/v2"
    assert connector.config["api_key"] == "key-456"


def test_extract_window_from_airflow_context_and_for_day():
    from datetime import date

    window = ExtractWindow.for_day(date(2026, 11, 27))
    assert window.run_id == "scheduled__2026-11-27T00:00:00+00:00"
    assert window.end - window.start == timedelta(days=1)
    start = datetime(2026, 11, 27, tzinfo=timezone.utc)
    ctx = {"data_interval_start": start, "data_interval_end": start, "logical_date": start, "run_id": "manual__x"}
    assert ExtractWindow.from_airflow_context(ctx) == ExtractWindow.for_day(date(2026, 11, 27), "manual__x")
    ctx["data_interval_end"] = start + timedelta(hours=6)
    assert ExtractWindow.from_airflow_context(ctx).end == start + timedelta(hours=6)
