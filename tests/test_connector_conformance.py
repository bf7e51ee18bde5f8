"""Connector conformance suite: every connector in ``connectors.CONNECTORS`` must pass it.

Each connector has one entry in :data:`STAND_INS`, saying how to stand up a source
for it (a stand-in registry over real HTTP on 127.0.0.1, or a drop zone) and how to
configure the connector against it. Adding a connector means adding one line there;
for registry stand-ins built on ``standins.common`` (``RegistryState`` + gate)::

    "kvk": RegistryStandIn(lambda state, register: create_kvk_app(state, register),
                           lambda src: {"base_url": src.url(KVK_PREFIX), "api_key": src.api_key,
                                        "plaatsen": sorted(w.naam for w in src.ctx.municipality.woonplaatsen.values())},
                           world=lambda ctx: KvkRegister(ctx.municipality)),
    "cbs": RegistryStandIn(lambda state, world: create_cbs_app(state, DemoKerncijfers(world)),
                           lambda src: {"base_url": src.root, "table_id": table_id_for_year(2026),
                                        "gemeentecode": src.ctx.municipality.gemeentecode},
                           bad_credentials=None, as_of=date(2026, 10, 1), rate_limited=False),

The checks (the connector contract of docs/architecture.md, "Landing batches"):

* re-extracting the same window lands the same batch (same part checksums);
* 429 and 5xx are retried after the server's ``Retry-After`` (asserted on the
  connector's retry log and an injected sleep, never on wall-clock time);
* authentication failures are not retried (counted at the stand-in);
* a batch that fails halfway is never complete (no ``_MANIFEST.json``, ignored by
  ``find_complete_batches``);
* the manifest is complete, its checksums match the files, and it holds no secret;
* bad input and faults: unexpected response fields land byte for byte; a registry
  that is down for a whole day fails that day's extract with a retryable error and
  the next day's extract works.

File-drop connectors make no HTTP requests; the HTTP-only checks skip for them
with the reason stated.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable, Protocol

import pytest

from connectors import CONNECTORS, ExtractWindow, find_complete_batches
from connectors.base import Connector, HttpConnector
from connectors.errors import (
    SourceAuthError,
    SourceRateLimitedError,
    SourceServerError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from connectors.files import FileDropConnector
from demo_gemeente.dropzone import GEBIEDEN_SOURCE, VOLGLIJST_SOURCE, write_dropzone
from demo_gemeente.generator import build_municipality
from demo_gemeente.model import Municipality
from ggm_lakehouse.landing import MANIFEST_NAME, BatchResult, count_records, read_manifest, safe_run_id
from standins.bag import DEFAULT_PATH_PREFIX as BAG_PREFIX
from standins.bag import create_bag_app
from standins.brp import DEFAULT_PATH_PREFIX as BRP_PREFIX
from standins.brp import create_brp_app
from demo_gemeente.cbs import DemoKerncijfers, table_id_for_year
from demo_gemeente.kvk import KvkRegister
from standins.cbs import create_cbs_app
from standins.kvk import DEFAULT_PATH_PREFIX as KVK_PREFIX
from standins.kvk import create_kvk_app
from standins.common import FaultInjector, RegistryState, ThreadedUvicorn, TokenBucketRateLimiter, WorldSource

AS_OF = date(2026, 3, 1)
POPULATION = 60  # three BRP requests of 20, one woonplaats with a handful of streets: quick, but multi-part

# Errors an orchestrator should retry later (the source is unhealthy, the request is fine).
RETRYABLE_ERRORS = (SourceServerError, SourceRateLimitedError, SourceTimeoutError, SourceUnavailableError)

# The manifest contract of docs/architecture.md ("Landing batches").
MANIFEST_FIELDS = {
    "manifest_version", "source", "dataset", "endpoint", "logical_date", "window_start", "window_end", "run_id",
    "record_path", "content_type", "parts", "record_count", "checksum", "started_at", "completed_at", "status",
}
PART_FIELDS = {"file", "request", "status", "record_count", "sha256", "bytes"}
REQUEST_FIELDS = {"method", "url", "params", "body"}

# An unexpected member as a newer API version might send it: raw UTF-8, a decimal with a
# trailing zero and odd spacing all change if anything decodes and re-encodes the body.
UNEXPECTED_MEMBER = '"onverwachtVeld" :{"toelichting":"nieuw in een latere versie: é ß \\u00e9","bedrag":1.50}'.encode()
UNEXPECTED_COLUMN = "onverwachte_kolom"

HTTP_ONLY = "file-drop connector: it makes no HTTP requests, so there is nothing to retry or authenticate"


# ------------------------------------------------------------------ test doubles


class SleepRecorder:
    """Stands in for time.sleep; moves an optional fake clock forward by each wait instead of waiting."""

    def __init__(self, clock: "FakeClock | None" = None) -> None:
        self.waits: list[float] = []
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.clock is not None:
            self.clock.now += seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SourceTap:
    """ASGI wrapper in front of a stand-in: counts the requests that reach it and can add an unexpected member.

    With ``unexpected_member`` set, every successful JSON object response gets that
    member inserted as its first member; the exact bytes sent are kept in ``sent``
    so the test can compare them with what landed.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests = 0
        self.unexpected_member: bytes | None = None
        self.sent: list[bytes] = []
        # (method, path, query, body) of every request, to tell a retried request from another one in flight.
        self.seen: list[tuple] = []
        self._lock = threading.Lock()

    def repeated_since(self, count: int) -> list[tuple]:
        """The requests received after the first ``count`` that repeat an earlier one of them."""
        with self._lock:
            recent = self.seen[count:]
        return [r for i, r in enumerate(recent) if r in recent[:i]]

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_standin"):
            await self.app(scope, receive, send)
            return
        # Read the whole body first (an app that refuses a request may never read it), then replay it.
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        with self._lock:
            self.requests += 1
            self.seen.append((scope["method"], scope["path"], scope.get("query_string"), body))
        await self._serve(scope, replay, send)

    async def _serve(self, scope: dict, receive: Callable, send: Callable) -> None:
        member = self.unexpected_member
        if member is None:
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def rewrite(message: dict) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            headers = dict((k.lower(), v) for k, v in start.get("headers", []))
            is_json = b"json" in headers.get(b"content-type", b"") and b"content-encoding" not in headers
            if start.get("status") == 200 and is_json and body.startswith(b"{"):
                rest = body[1:]
                body = b"{" + member + (b"," if rest.lstrip()[:1] != b"}" else b"") + rest
                with self._lock:
                    self.sent.append(body)
            new_headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            new_headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": new_headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, rewrite)


# ---------------------------------------------------------------- the registry


@dataclass
class SourceContext:
    """What every stand-in may build on: the demo municipality and a drop zone with its files for AS_OF."""

    municipality: Municipality
    dropzone: Path
    as_of: date = AS_OF


class RunningSource(Protocol):
    """A source that is up, and the knobs the conformance checks turn."""

    name: str
    is_http: bool
    logical_date: date

    def connector(self, sleep: Callable[[float], None] | None = None, **overrides: Any) -> Connector: ...
    def secret_values(self) -> list[str]: ...
    def reset(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class RunningRegistry:
    """An HTTP stand-in registry running on 127.0.0.1 behind a :class:`SourceTap`."""

    name: str
    ctx: SourceContext
    state: RegistryState
    tap: SourceTap
    server: ThreadedUvicorn
    port: int
    config_for: Callable[["RunningRegistry"], dict[str, Any]]
    bad_credentials: dict[str, Any] | None
    rate_limited: bool = True
    is_http: bool = True
    logical_date: date = AS_OF

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path_prefix: str) -> str:
        """Base URL of the API below ``path_prefix``."""
        return self.root + "/" + path_prefix.strip("/")

    @property
    def api_key(self) -> str:
        return sorted(self.state.api_keys)[0]

    @property
    def faults(self) -> FaultInjector:
        return self.state.faults

    def connector(self, sleep: Callable[[float], None] | None = None, **overrides: Any) -> Connector:
        connector = CONNECTORS[self.name]({**self.config_for(self), **overrides})
        if isinstance(connector, HttpConnector):
            # Never wait for real: retry and rate-limit waits go to a recorder (see HttpConnector.sleep).
            connector.sleep = sleep or SleepRecorder()
        return connector

    def secret_values(self) -> list[str]:
        return sorted(self.state.api_keys)

    def reset(self) -> None:
        self.state.faults.clear()
        self.state.rate_limiter = None
        self.state.set_as_of(self.logical_date)
        self.tap.unexpected_member = None
        self.tap.sent.clear()

    def stop(self) -> None:
        self.server.stop()


def _demo_municipality(ctx: SourceContext) -> Municipality:
    return ctx.municipality


@dataclass(frozen=True)
class RegistryStandIn:
    """How to stand up an HTTP registry stand-in built on ``standins.common``.

    ``world(ctx)`` is what the registry serves through time (default: the demo
    municipality; e.g. a ``KvkRegister`` built on it); ``create_app(state, world)``
    builds the ASGI app around a :class:`RegistryState` serving that world (fault
    injector, rate limiter, clock); ``config(running)`` is the connector config
    against it (``running.url(prefix)``, ``running.api_key``, ``running.ctx`` for
    the municipality and drop zone). ``bad_credentials`` overrides the config so
    the source refuses the connector (None: an open source without credentials).
    ``as_of`` is the logical date to extract when the source has nothing to say
    on the suite's default date (e.g. a table published later in the year).
    ``rate_limited`` False: the stand-in applies no ``state.rate_limiter`` (the 429
    check then skips with that reason).
    """

    create_app: Callable[[RegistryState, Any], Any]
    config: Callable[[RunningRegistry], dict[str, Any]]
    world: Callable[[SourceContext], Any] = _demo_municipality
    bad_credentials: dict[str, Any] | None = field(default_factory=lambda: {"api_key": "not-the-registry-key"})
    as_of: date | None = None
    rate_limited: bool = True

    def start(self, name: str, ctx: SourceContext) -> RunningRegistry:
        world = self.world(ctx)
        state = RegistryState(name=name, world=WorldSource(world), api_keys=frozenset({secrets.token_urlsafe(24)}))
        logical_date = self.as_of or ctx.as_of
        state.set_as_of(logical_date)
        tap = SourceTap(self.create_app(state, world))
        server = ThreadedUvicorn(tap, "127.0.0.1", 0, name=f"conformance-{name}")
        port = server.start()
        return RunningRegistry(
            name, ctx, state, tap, server, port, self.config, self.bad_credentials,
            rate_limited=self.rate_limited, logical_date=logical_date,
        )


@dataclass
class RunningDropZone:
    """A drop-zone folder with the deliveries of a file connector."""

    name: str
    ctx: SourceContext
    directory: Path
    config_for: Callable[["RunningDropZone"], dict[str, Any]]
    is_http: bool = False
    logical_date: date = AS_OF
    _originals: dict[Path, bytes] = field(default_factory=dict)

    def connector(self, sleep: Callable[[float], None] | None = None, **overrides: Any) -> Connector:
        return CONNECTORS[self.name]({**self.config_for(self), **overrides})

    def deliveries(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())

    def replace_delivery(self, path: Path, content: bytes) -> None:
        self._originals.setdefault(path, path.read_bytes())
        path.write_bytes(content)

    def secret_values(self) -> list[str]:
        return []

    def reset(self) -> None:
        for path, content in self._originals.items():
            path.write_bytes(content)
        self._originals.clear()

    def stop(self) -> None:
        self.reset()


@dataclass(frozen=True)
class DropZoneStandIn:
    """How to stand up a drop zone: ``folder`` below the context's drop zone (written by demo_gemeente.dropzone)."""

    folder: str
    config: Callable[[RunningDropZone], dict[str, Any]]

    def start(self, name: str, ctx: SourceContext) -> RunningDropZone:
        return RunningDropZone(name, ctx, ctx.dropzone / self.folder, self.config)


@dataclass
class RunningParsedDropZone(RunningDropZone):
    """A drop zone of a parsing connector (``connectors.dropzone``): files are validated, archived or quarantined.

    Every test starts from a fresh zone with the demo department's deliveries of the day,
    because an extract moves the files to ``archive/`` (a rerun of the day reads them there).
    """

    write: Callable[[SourceContext, Path], Any] = lambda ctx, zone_root: None
    zone_root: Path | None = None

    def deliveries(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())

    def reset(self) -> None:
        shutil.rmtree(self.zone_root, ignore_errors=True)
        self.zone_root.mkdir(parents=True)
        self.write(self.ctx, self.zone_root)
        self.directory.mkdir(parents=True, exist_ok=True)
        assert self.deliveries(), f"the demo delivered no {self.name} files on {self.ctx.as_of}"
        self._originals.clear()


@dataclass(frozen=True)
class ParsedDropZoneStandIn:
    """How to stand up a parsing connector's drop zone: ``write(ctx, zone_root)`` delivers the demo files."""

    write: Callable[[SourceContext, Path], Any]
    config: Callable[[RunningDropZone], dict[str, Any]] = lambda src: {"dropzone_dir": str(src.directory)}
    # Some departments have no traffic in a town of POPULATION; they get a bigger town of the same seed.
    population: int | None = None

    def start(self, name: str, ctx: SourceContext) -> RunningParsedDropZone:
        if self.population:
            ctx = SourceContext(build_municipality(population=self.population, seed=7, as_of=ctx.as_of), ctx.dropzone)
        zone_root = ctx.dropzone.parent / f"zones-{name}"
        running = RunningParsedDropZone(name, ctx, zone_root / name, self.config, write=self.write, zone_root=zone_root)
        running.reset()
        return running


@dataclass
class RunningDatabase(RunningDropZone):
    """An application database (SQLite, written by the demo) read by a SQL connector."""

    kind: str = "database"


@dataclass(frozen=True)
class DatabaseStandIn:
    """How to stand up an application database: the demo Suite4 database in SQLite."""

    config: Callable[[RunningDropZone], dict[str, Any]]

    def start(self, name: str, ctx: SourceContext) -> RunningDatabase:
        from demo_gemeente.suite4 import write_suite4_database

        path = ctx.dropzone.parent / f"db-{name}" / "suite4.sqlite"
        write_suite4_database(ctx.municipality, path, ctx.as_of)
        return RunningDatabase(name, ctx, path, self.config)


def _departmental(writer: str, **kwargs: Any) -> Callable[[SourceContext, Path], Any]:
    """A writer of ``demo_gemeente`` for one department, bound to the context's municipality and day."""

    def write(ctx: SourceContext, zone_root: Path) -> Any:
        module_name, function_name = writer.rsplit(".", 1)
        module = __import__(module_name, fromlist=[function_name])
        return getattr(module, function_name)(ctx.municipality, zone_root, ctx.as_of, **kwargs)

    return write


# One line per connector in connectors.CONNECTORS.
STAND_INS: dict[str, RegistryStandIn | DropZoneStandIn | ParsedDropZoneStandIn | DatabaseStandIn] = {
    "brp": RegistryStandIn(
        lambda state, _: create_brp_app(state),
        lambda src: {"base_url": src.url(BRP_PREFIX), "api_key": src.api_key, "volglijst_dir": str(src.ctx.dropzone / VOLGLIJST_SOURCE)},
    ),
    "bag": RegistryStandIn(
        lambda state, _: create_bag_app(state),
        lambda src: {"base_url": src.url(BAG_PREFIX), "api_key": src.api_key, "woonplaats_ids": sorted(src.ctx.municipality.woonplaatsen)},
    ),
    "gebieden": DropZoneStandIn(GEBIEDEN_SOURCE, lambda src: {"dropzone_dir": str(src.directory)}),
    "kvk": RegistryStandIn(
        lambda state, register: create_kvk_app(state, register),
        lambda src: {"base_url": src.url(KVK_PREFIX), "api_key": src.api_key,
                     "plaatsen": sorted(w.naam for w in src.ctx.municipality.woonplaatsen.values())},
        world=lambda ctx: KvkRegister(ctx.municipality),
    ),
    "cbs": RegistryStandIn(
        lambda state, world: create_cbs_app(state, DemoKerncijfers(world)),
        lambda src: {"base_url": src.root, "table_id": table_id_for_year(2026), "gemeentecode": src.ctx.municipality.gemeentecode},
        bad_credentials=None, as_of=date(2026, 10, 1), rate_limited=False,
    ),
    "iwmo": ParsedDropZoneStandIn(_departmental("demo_gemeente.sociaal_domein.write_iwmo_deliveries", include_backlog=True),
                                  population=400),
    "ijw": ParsedDropZoneStandIn(_departmental("demo_gemeente.sociaal_domein.write_ijw_deliveries", include_backlog=True),
                                 population=400),
    "xaf": ParsedDropZoneStandIn(_departmental("demo_gemeente.financien.write_xaf_deliveries")),
    "begroting": ParsedDropZoneStandIn(_departmental("demo_gemeente.begroting.write_begroting_deliveries",
                                                     first_delivery=True)),
    "subsidies": ParsedDropZoneStandIn(_departmental("demo_gemeente.exports.write_subsidies_deliveries", delivery_weekday=None)),
    "vth": ParsedDropZoneStandIn(_departmental("demo_gemeente.exports.write_vth_deliveries")),
    "hr": ParsedDropZoneStandIn(_departmental("demo_gemeente.exports.write_hr_deliveries", delivery_weekday=None)),
    "vroegsignalering": ParsedDropZoneStandIn(_departmental("demo_gemeente.vroegsignalering.write_vroegsignalering_deliveries")),
    "suite4": DatabaseStandIn(lambda src: {"url": f"sqlite:///{src.directory}"}),
    "sql": DatabaseStandIn(lambda src: {"url": f"sqlite:///{src.directory}", "tables": {
        "wmo_aanvragen": {"table": "wmo_aanvraag", "key": ["id"], "incremental": {"column": "gewijzigd_op"}}}}),
}


# ------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> SourceContext:
    municipality = build_municipality(population=POPULATION, seed=7, as_of=AS_OF)
    dropzone = tmp_path_factory.mktemp("dropzone")
    write_dropzone(municipality, dropzone)
    return SourceContext(municipality, dropzone)


@pytest.fixture(scope="module", params=sorted(CONNECTORS))
def running(request, context):
    name = request.param
    stand_in = STAND_INS.get(name)
    if stand_in is None:
        pytest.fail(f"connector {name!r} has no stand-in: add one line for it to STAND_INS in {__file__}")
    source = stand_in.start(name, context)
    yield source
    source.stop()


@pytest.fixture
def source(running):
    """The running source for one connector, reset to a healthy state after each test."""
    yield running
    running.reset()


def window(logical_date: date, run_id: str) -> ExtractWindow:
    return ExtractWindow.for_day(logical_date, run_id)


def source_name(connector: Connector) -> str:
    """The landing source name: the connector name, or the configured source of a generic file connector."""
    return connector.source_name if isinstance(connector, FileDropConnector) else connector.name


def batches_of_run(landing: Path, run_id: str) -> list[Path]:
    """Every batch directory of ``run_id``, complete or not."""
    return sorted(p for p in landing.glob(f"*/*/logical_date=*/run_id={safe_run_id(run_id)}") if p.is_dir())


def landed_parts(results: list[BatchResult]) -> dict[str, list[str]]:
    return {r.dataset: [part["sha256"] for part in r.manifest["parts"]] for r in results}


def assert_manifest_complete(result: BatchResult, connector: Connector, run: ExtractWindow, landing: Path, secrets_: list[str]) -> None:
    """The batch honours the manifest contract of docs/architecture.md and carries no secret."""
    manifest = result.manifest
    assert read_manifest(result.path) == manifest
    assert MANIFEST_FIELDS <= set(manifest), f"missing manifest fields: {MANIFEST_FIELDS - set(manifest)}"
    assert manifest["manifest_version"] == 1 and manifest["status"] == "complete"
    assert manifest["source"] == source_name(connector) and manifest["dataset"] == result.dataset
    assert manifest["logical_date"] == run.logical_date.isoformat()
    assert manifest["window_start"] == run.start.isoformat() and manifest["window_end"] == run.end.isoformat()
    assert manifest["run_id"] == run.run_id
    assert isinstance(manifest["endpoint"], str) and manifest["endpoint"]
    assert manifest["started_at"] <= manifest["completed_at"]
    files = {p.name for p in result.path.iterdir()}
    assert files == {MANIFEST_NAME} | {part["file"] for part in manifest["parts"]}, "stray files in the batch"
    for part in manifest["parts"]:
        assert PART_FIELDS <= set(part), f"missing part fields: {PART_FIELDS - set(part)}"
        assert REQUEST_FIELDS <= set(part["request"])
        content = (result.path / part["file"]).read_bytes()
        assert hashlib.sha256(content).hexdigest() == part["sha256"] and len(content) == part["bytes"]
        assert count_records(content, manifest["record_path"]) == part["record_count"]
        for header in part["request"].get("headers", {}):
            assert header.lower() not in {"authorization", "x-api-key", "apikey", "cookie"}
    assert manifest["record_count"] == sum(part["record_count"] for part in manifest["parts"])
    expected_checksum = hashlib.sha256("".join(p["sha256"] for p in manifest["parts"]).encode("ascii")).hexdigest()
    assert manifest["checksum"] == expected_checksum
    assert result.path in find_complete_batches(landing, manifest["source"], result.dataset, run.logical_date)
    text = (result.path / MANIFEST_NAME).read_text(encoding="utf-8")
    for secret in secrets_:
        assert secret not in text, "a credential was written to the manifest"


# ---------------------------------------------------------------------- checks


def test_every_registered_connector_has_a_stand_in():
    assert set(STAND_INS) == set(CONNECTORS), (
        f"STAND_INS must have exactly one line per connector; missing {sorted(set(CONNECTORS) - set(STAND_INS))}, "
        f"stale {sorted(set(STAND_INS) - set(CONNECTORS))}"
    )


def test_manifest_is_complete_and_matches_the_files(source, tmp_path):
    connector = source.connector()
    run = window(source.logical_date, "scheduled__2026-03-01T00:00:00+00:00")
    results = connector.extract(run, tmp_path)
    assert results, "an extraction lands at least one batch"
    assert any(r.manifest["parts"] for r in results), "the demo source has data, so something must land"
    landed = getattr(type(connector), "landed_datasets", None)
    declared = set(landed() if landed else type(connector).datasets)
    if declared:
        assert {r.dataset for r in results} <= declared, "landed a dataset the connector does not declare"
    secrets_ = source.secret_values() + [
        str(v) for k, v in connector.config.items() if k in connector.secret_keys() and v
    ]
    for result in results:
        assert_manifest_complete(result, connector, run, tmp_path, secrets_)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(s.encode() in content for s in secrets_), f"a credential landed in {path}"


def test_reextracting_a_window_lands_the_same_batch(source, tmp_path):
    # Into fresh landing zones: the same question gets the same answer, byte for byte.
    # (Separate roots, because connectors may decide what to ask from what already landed.)
    first = source.connector().extract(window(source.logical_date, "manual__first"), tmp_path / "first")
    second = source.connector().extract(window(source.logical_date, "manual__second"), tmp_path / "second")
    assert landed_parts(first) == landed_parts(second)
    assert [r.checksum for r in first] == [r.checksum for r in second]
    assert [r.record_count for r in first] == [r.record_count for r in second]
    for one, two in zip(first, second):
        assert [p.read_bytes() for p in one.part_paths] == [p.read_bytes() for p in two.part_paths]
    # A cleared and re-run task (same run id, same landing zone) replaces its batches, never duplicates them.
    rerun = source.connector().extract(window(source.logical_date, "manual__first"), tmp_path / "first")
    for result in rerun:
        complete = find_complete_batches(tmp_path / "first", result.source, result.dataset, source.logical_date)
        assert complete == [result.path]
    assert all((b / MANIFEST_NAME).exists() for b in batches_of_run(tmp_path / "first", "manual__first"))


def test_5xx_is_retried_after_the_servers_retry_after(source, tmp_path):
    if not source.is_http:
        pytest.skip(HTTP_ONLY)
    before = source.tap.requests
    clean = source.connector().extract(window(source.logical_date, "clean"), tmp_path / "clean")
    clean_requests = source.tap.requests - before
    source.faults.fail_next(1, status=503, retry_after_seconds=4)
    source.faults.fail_next(1, status=502, retry_after_seconds=2)
    sleep = SleepRecorder()
    connector = source.connector(sleep=sleep)
    before = source.tap.requests
    results = connector.extract(window(source.logical_date, "flaky"), tmp_path / "flaky")
    assert landed_parts(results) == landed_parts(clean)  # the retries did not change what landed
    assert source.tap.requests - before == clean_requests + 2  # each failed request was sent again exactly once
    first, second = connector.retry_log
    assert (first.status, second.status) == (503, 502)
    # Retry-After may come as delta-seconds or as an HTTP-date (whole seconds, so up to 1 s less).
    assert 3.0 <= first.retry_after <= 4.0 and 1.0 <= second.retry_after <= 2.0
    assert (first.wait, second.wait) == (first.retry_after, second.retry_after)
    # The connector asked sleep() for exactly these waits, in this order (the client-side rate
    # limiter's own small waits may come in between, since the recorder does not pass time).
    remaining = iter(sleep.waits)
    assert all(any(asked == wait for asked in remaining) for wait in (first.wait, second.wait)), sleep.waits


def test_429_is_retried_after_the_servers_retry_after(source, tmp_path):
    if not source.is_http:
        pytest.skip(HTTP_ONLY)
    if not source.rate_limited:
        pytest.skip(f"the {source.name} stand-in has no rate limit to hit (the real source publishes none)")
    clean = source.connector().extract(window(source.logical_date, "clean"), tmp_path / "clean")
    # One request per second and a clock that only moves when the connector sleeps: every
    # request that does not wait gets 429, and waiting the Retry-After is exactly enough.
    # One request in flight: the fake clock only moves when a sleep moves it, so requests waiting side by
    # side would each see the clock their neighbour moved (the client limiter keeps real parallel requests
    # under a provider's limit).
    clock = FakeClock()
    source.state.rate_limiter = TokenBucketRateLimiter(1.0, burst=1.0, clock=clock)
    connector = source.connector(sleep=SleepRecorder(clock), max_attempts=3, max_parallel_requests=1)
    results = connector.extract(window(source.logical_date, "limited"), tmp_path / "limited")
    assert landed_parts(results) == landed_parts(clean)
    throttled = [r for r in connector.retry_log if r.status == 429]
    assert throttled, "the rate limit should have been hit"
    assert all(r.retry_after is not None and r.wait == r.retry_after for r in throttled)
    assert all(r.status == 429 for r in connector.retry_log)


def test_auth_failures_are_not_retried(source, tmp_path):
    if not source.is_http:
        pytest.skip(HTTP_ONLY)
    if source.bad_credentials is None:
        pytest.skip("open source: it accepts every request, so there is no credential to get wrong")
    sleep = SleepRecorder()
    connector = source.connector(sleep=sleep, max_attempts=5, **source.bad_credentials)
    before = source.tap.requests
    run = window(source.logical_date, "bad-credentials")
    with pytest.raises(SourceAuthError) as caught:
        connector.extract(run, tmp_path)
    assert caught.value.status in (401, 403) and caught.value.attempts == 1
    # Requests already in flight beside the refused one are refused too; none is sent twice.
    assert 1 <= source.tap.requests - before <= connector.config["max_parallel_requests"]
    assert source.tap.repeated_since(before) == [], "a refused request was sent again"
    assert sleep.waits == [] and connector.retry_log == []
    assert not list(tmp_path.rglob(MANIFEST_NAME))


def _break_http_source_after(source: RunningRegistry, good_requests: int, landing: Path, run: ExtractWindow) -> bool:
    """Extract while the source answers ``good_requests`` requests and then fails for good.

    Returns False when the extraction needed no more requests than that (nothing broke).
    """
    source.faults.clear()
    if good_requests:
        source.faults.delay_next(good_requests, seconds=0)  # a zero delay is a pass-through
    source.faults.fail_next(10, status=503, retry_after_seconds=None)
    try:
        source.connector(max_attempts=2, backoff_base=0).extract(run, landing)
    except SourceServerError:
        return True
    finally:
        source.faults.clear()
    return False


def _incomplete(landing: Path, run_id: str) -> list[Path]:
    return [b for b in batches_of_run(landing, run_id) if not (b / MANIFEST_NAME).exists()]


def test_a_batch_that_fails_halfway_is_never_complete(source, tmp_path):
    run = window(source.logical_date, "halfway")
    if source.is_http:
        # Let 0, 1, 2, ... requests succeed until the break hits a batch after its first part
        # (where that is depends on the connector's request plan, so it is searched, not configured).
        # A source whose batches are all one request long cannot fail mid-batch; then the
        # batch that was open when it broke must still be incomplete.
        broken: list[Path] = []
        for good_requests in range(0, 11):
            landing = tmp_path / f"after-{good_requests}"
            if not _break_http_source_after(source, good_requests, landing, run):
                break
            broken.append(landing)
            if any(any(b.glob("part-*")) for b in _incomplete(landing, run.run_id)):
                break
        assert broken, "the connector did not fail although every request failed"
        landings = broken
    elif isinstance(source, RunningDatabase):
        pytest.skip("database source: each dataset is read in one read-only transaction; "
                    "connection and query failures are covered in tests/test_sql_connector.py")
    elif isinstance(source, RunningParsedDropZone):
        # Parsing sources quarantine a broken file with its reason; the rest of the day still lands.
        deliveries = source.deliveries()
        broken = deliveries[-1]
        source.replace_delivery(broken, broken.read_bytes()[: max(1, len(broken.read_bytes()) // 2)] + b"\xff\xfe\x00")
        connector = source.connector()
        results = connector.extract(run, tmp_path)
        report = connector.last_report
        assert [r["file"] for r in report["files_rejected"]] == [broken.name]
        assert report["files_rejected"][0]["rule"] and report["files_rejected"][0]["message"]
        reason = next(source.zone_root.rglob(f"quarantine/*/{broken.name}.reason.json"))
        assert json.loads(reason.read_text(encoding="utf-8"))["rule"] == report["files_rejected"][0]["rule"]
        if len(deliveries) > 1:
            assert report["files_accepted"] + report.get("files_partially_accepted", 0) >= 1
        for result in results:
            assert read_manifest(result.path)["status"] == "complete"
        return
    else:
        # The last delivery is not text: the connector notices only after writing its part.
        last = source.deliveries()[-1]
        source.replace_delivery(last, last.read_bytes() + b"\xff\xfe broken \xff\n")
        with pytest.raises(ValueError):
            source.connector().extract(run, tmp_path)
        landings = [tmp_path]
        assert any(any(b.glob("part-*")) for b in _incomplete(tmp_path, run.run_id))
    assert any(_incomplete(landing, run.run_id) for landing in landings), (
        "the batch open at the failure should stay behind, incomplete, for diagnosis"
    )
    for landing in landings:
        batches = batches_of_run(landing, run.run_id)
        for batch in _incomplete(landing, run.run_id):
            dataset_dir = batch.parent.parent
            assert batch not in find_complete_batches(landing, dataset_dir.parent.name, dataset_dir.name)
        for batch in batches:
            if (batch / MANIFEST_NAME).exists():  # datasets finished before the failure are whole batches
                manifest = read_manifest(batch)
                assert manifest["status"] == "complete"
                assert sorted(p.name for p in batch.glob("part-*")) == [p["file"] for p in manifest["parts"]]


def test_unexpected_fields_land_byte_for_byte(source, tmp_path):
    if isinstance(source, (RunningParsedDropZone, RunningDatabase)):
        pytest.skip("parsing source: records are parsed from a validated format (XSD, data contract, JSON "
                    "Schema, table columns), so there are no raw bytes to keep; the delivered file itself is "
                    "archived byte for byte and its sha256 is in the manifest (tests/test_dropzone.py)")
    if source.is_http:
        source.tap.unexpected_member = UNEXPECTED_MEMBER
        results = source.connector().extract(window(source.logical_date, "newer-api"), tmp_path)
        sent = {hashlib.sha256(body).hexdigest() for body in source.tap.sent}
        assert sent
        raw_parts = [
            (part, path)
            for result in results
            for part, path in zip(result.manifest["parts"], result.part_paths)
            if part["status"] is not None  # a response part; derived parts (status None) are built by the connector
        ]
        assert raw_parts
        for part, path in raw_parts:
            assert UNEXPECTED_MEMBER in path.read_bytes()
            assert part["sha256"] in sent  # exactly the bytes the registry sent
    else:
        for delivery in source.deliveries():
            text = delivery.read_bytes().decode("utf-8-sig")
            delimiter = ";" if text.split("\n", 1)[0].count(";") > text.split("\n", 1)[0].count(",") else ","
            lines = text.split("\n")
            widened = [lines[0] + delimiter + UNEXPECTED_COLUMN] + [
                line + delimiter + "é 1.50" if line else line for line in lines[1:]
            ]
            source.replace_delivery(delivery, "\n".join(widened).encode("utf-8"))
        results = source.connector().extract(window(source.logical_date, "wider-file"), tmp_path)
        delivered = {hashlib.sha256(p.read_bytes()).hexdigest() for p in source.deliveries()}
        for result in results:
            for path in result.part_paths:
                assert UNEXPECTED_COLUMN.encode() in path.read_bytes()
                assert hashlib.sha256(path.read_bytes()).hexdigest() in delivered


def test_registry_down_for_a_day_fails_that_day_retryably_and_the_next_day_works(source, tmp_path):
    if not source.is_http:
        pytest.skip(HTTP_ONLY)
    down_day = source.logical_date
    next_day = down_day + timedelta(days=1)
    # Down all day: more failures planned than the connector will ever try.
    source.faults.fail_next(100, status=503, retry_after_seconds=30)
    sleep = SleepRecorder()
    connector = source.connector(sleep=sleep, max_attempts=3)
    with pytest.raises(RETRYABLE_ERRORS) as caught:
        connector.extract(window(down_day, f"scheduled__{down_day.isoformat()}"), tmp_path)
    assert caught.value.attempts == 3 and caught.value.status == 503
    # Two retries of the failing request, and of each request in flight beside it.
    in_flight = connector.config["max_parallel_requests"]
    assert len(connector.retry_log) in range(2, 2 * in_flight + 1, 2)
    assert all(29.0 <= r.wait <= 30.0 for r in connector.retry_log)
    assert not list(tmp_path.rglob(MANIFEST_NAME)), "nothing of the down day may count as landed"

    # The registry is back the next day (and serves that day's state).
    source.faults.clear()
    source.state.set_as_of(next_day)
    next_run = window(next_day, f"scheduled__{next_day.isoformat()}")
    results = source.connector().extract(next_run, tmp_path)
    assert results and all(r.logical_date == next_day for r in results)
    for result in results:
        assert find_complete_batches(tmp_path, result.source, result.dataset, next_day) == [result.path]
        assert find_complete_batches(tmp_path, result.source, result.dataset, down_day) == []
