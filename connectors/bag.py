"""BAG API Individuele Bevragingen v2 connector: a crawl of the municipality's objects.

The IB API is made for point lookups and has no change feed, so a municipality that
wants its own BAG objects in the lake walks them per woonplaats (``woonplaats_ids``):

=====================  ===============================================================  ===========================
dataset                requests                                                         record_path
=====================  ===============================================================  ===========================
``woonplaatsen``       ``GET /woonplaatsen/{id}?expand=geometrie`` per woonplaats        ``""`` (part = one record)
``openbareruimten``    ``GET /openbareruimten?woonplaatsIdentificatie=…`` all pages      ``_embedded.openbareruimten``
``nummeraanduidingen`` ``GET /nummeraanduidingen?openbareRuimteIdentificatie=…`` per     ``_embedded.nummeraanduidingen``
                       openbare ruimte, all pages
``panden``             ``GET /panden?bbox=…`` per tile, all pages                        ``_embedded.panden``
``verblijfsobjecten``  ``GET /verblijfsobjecten?bbox=…`` per tile, all pages             ``_embedded.verblijfsobjecten``
=====================  ===============================================================  ===========================

Tiles: the bounding box of each woonplaats geometry is covered with square tiles of
at most 250.000 m² (the spec's bbox limit) on one grid of whole metres, so the area
the server computes is exact and neighbouring woonplaatsen share tiles. An object on a tile border is returned for both tiles
(bbox search includes the border, ``bounding-box-zoeken.feature``); the raw parts
keep those duplicates as received and bronze/silver de-duplicate on identificatie.

Headers (spec v2.6.0 + ``foutafhandeling.feature``): ``X-Api-Key``;
``Accept-Crs: epsg:28992`` whenever geometry is returned (missing → 412
``acceptCrsMissing``); ``Content-Crs: epsg:28992`` whenever a bbox is sent (missing
→ 412 ``contentCrsMissing``). Paging: ``pageSize`` 10..100 (we use 100) and HAL
``_links.next.href``. The client-side rate limiter keeps the crawl under the
registry's 50 requests/second per key.

Daily refresh and change detection
----------------------------------
The IB API has no change feed, so every run crawls the whole municipality again and
lands a full snapshot per dataset. The five batches are committed together at the
end (all or nothing), so bronze never sees half a municipality. Change detection happens
downstream: silver compares an attribute hash of the mapped GGM columns with the open
version, so an unchanged object never gets a new version (``tests/test_brp_update.py``
proves it across two days). Bronze's ``_record_hash`` is *not* that signal: it covers
the HAL ``_links``, whose absolute URLs change with the server's host or port.

Daily request quota
-------------------
A registry subscription may cap requests per day. With ``daily_request_quota`` set,
every HTTP attempt (retries included: each one reaches the server) is counted per UTC
day across runs and processes in a small JSON state file,
``<landing>/_state/bag/request_quota.json`` by default (``quota_state_file``). Before
crawling, the size of the previous complete crawl is the estimate of what this run
needs; when the rest of today's quota is smaller, or when a request during the crawl
would go over it, the run stops with :class:`DailyQuotaExceededError` *before* sending
that request. The error is retryable: ``retry_after`` holds the seconds until the quota
resets at 00:00 UTC. No batch of the stopped run has a manifest, so nothing
half-crawled is ever read.
"""
from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import tempfile
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

from connectors.base import ExtractWindow, HttpConnector, http_config_schema
from connectors.errors import SourceDataError, SourceError
from connectors.http import HttpSource, RawResponse
from ggm_lakehouse.landing import BatchResult, BatchWriter, find_complete_batches, read_manifest, records_at

log = logging.getLogger(__name__)

RD_CRS = "epsg:28992"
MAX_BBOX_AREA_M2 = 250_000
MAX_TILE_SIDE_M = int(math.isqrt(MAX_BBOX_AREA_M2))  # 500 m
GEO_HEADERS = {"Accept-Crs": RD_CRS}
BBOX_HEADERS = {"Accept-Crs": RD_CRS, "Content-Crs": RD_CRS}

BBox = tuple[float, float, float, float]


QUOTA_STATE_RELATIVE = Path("_state") / "bag" / "request_quota.json"


class DailyQuotaExceededError(SourceError):
    """The source's daily request quota would be exceeded; retry after the quota resets (00:00 UTC).

    Retryable by design (``retryable`` is True): nothing is wrong with the request or the
    data, only today's budget is spent. ``retry_after`` is the number of seconds until
    the next UTC day; ``used``/``needed``/``quota`` tell the operator by how much.
    """

    retryable = True

    def __init__(self, source: str, day: date, used: int, needed: int, quota: int, retry_after: float,
                 reason: str) -> None:
        self.day = day
        self.used = used
        self.needed = needed
        self.quota = quota
        self.retry_after = retry_after
        super().__init__(
            source,
            f"daily request quota of {quota} for {day.isoformat()} (UTC) would be exceeded: {used} used, "
            f"{needed} more needed ({reason}); stopped before sending; retry after 00:00 UTC "
            f"(in {math.ceil(retry_after)} s)",
        )


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class DailyRequestQuota:
    """Requests per UTC day of one source, counted across runs and processes in a JSON state file.

    The file holds ``{"day": "YYYY-MM-DD", "requests": n, "quota": q}``; a new UTC day
    starts at zero. An exclusive ``flock`` on a sidecar lock file serialises concurrent
    runs, and the file is replaced atomically so a crash never leaves it half written.
    """

    def __init__(self, source: str, quota: int, state_file: Path, clock: Callable[[], datetime] = _utc_now) -> None:
        if quota < 1:
            raise ValueError("quota must be at least 1")
        self.source = source
        self.quota = int(quota)
        self.state_file = Path(state_file)
        self.clock = clock

    def _today(self) -> date:
        return self.clock().astimezone(timezone.utc).date()

    def _seconds_to_reset(self) -> float:
        now = self.clock().astimezone(timezone.utc)
        reset = datetime.combine(now.date() + timedelta(days=1), time.min, tzinfo=timezone.utc)
        return max(1.0, (reset - now).total_seconds())

    def _read(self, today: date) -> int:
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return 0
        except ValueError:
            # A corrupt counter must not hide spent quota forever, nor block every run: log and restart.
            log.warning("%s: unreadable quota state %s; counting from zero", self.source, self.state_file)
            return 0
        return int(state.get("requests", 0)) if state.get("day") == today.isoformat() else 0

    def _write(self, today: date, used: int) -> None:
        payload = json.dumps({"day": today.isoformat(), "requests": used, "quota": self.quota}).encode("utf-8")
        fd, tmp = tempfile.mkstemp(prefix=".quota-", suffix=".tmp", dir=self.state_file.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            os.replace(tmp, self.state_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _locked(self):
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.state_file.with_suffix(".lock"), "a+")
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle

    def used(self) -> int:
        """Requests counted today (UTC)."""
        handle = self._locked()
        try:
            return self._read(self._today())
        finally:
            handle.close()

    def check(self, needed: int, reason: str) -> None:
        """Raise :class:`DailyQuotaExceededError` when ``needed`` more requests do not fit today."""
        today = self._today()
        handle = self._locked()
        try:
            used = self._read(today)
        finally:
            handle.close()
        if used + needed > self.quota:
            raise DailyQuotaExceededError(self.source, today, used, needed, self.quota, self._seconds_to_reset(), reason)

    def charge(self, count: int = 1) -> int:
        """Count ``count`` requests about to be sent; raises instead when they would exceed the quota."""
        today = self._today()
        handle = self._locked()
        try:
            used = self._read(today)
            if used + count > self.quota:
                raise DailyQuotaExceededError(
                    self.source, today, used, count, self.quota, self._seconds_to_reset(), "next request"
                )
            self._write(today, used + count)
            return used + count
        finally:
            handle.close()


class _QuotaGate:
    """Stands in :attr:`HttpSource.rate_limiter`: charges the quota, then waits for the rate limiter.

    ``HttpSource`` calls ``rate_limiter.acquire()`` once before every attempt, which is
    exactly where a request must be counted (and refused before it is sent).
    """

    def __init__(self, quota: DailyRequestQuota, limiter: Any) -> None:
        self.quota = quota
        self.limiter = limiter

    @property
    def interval(self) -> float | None:
        return getattr(self.limiter, "interval", None)

    def acquire(self) -> None:
        self.quota.charge(1)
        if self.limiter is not None:
            self.limiter.acquire()


def geometry_bbox(geometry: dict[str, Any]) -> BBox:
    """Bounding box (minx, miny, maxx, maxy) of a BAG ``VlakOfMultivlak`` or a GeoJSON geometry."""
    if "vlak" in geometry or "multivlak" in geometry:
        geometry = geometry.get("vlak") or geometry.get("multivlak") or {}
    xs: list[float] = []
    ys: list[float] = []

    def walk(node: Any) -> None:
        if isinstance(node, list) and node and all(isinstance(v, (int, float)) for v in node):
            xs.append(float(node[0]))
            ys.append(float(node[1]))
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(geometry.get("coordinates"))
    if not xs:
        raise ValueError("geometry has no coordinates")
    return min(xs), min(ys), max(xs), max(ys)


def tiles(bbox: BBox, side: int = MAX_TILE_SIDE_M) -> list[tuple[int, int, int, int]]:
    """Whole-metre square tiles of ``side`` metres that together cover ``bbox``, row by row.

    Tiles lie on one global grid (corners at multiples of ``side``), so the tiles of
    two neighbouring woonplaatsen coincide instead of overlapping and are requested
    once. Every tile has exactly ``side * side`` m², never more than the API's
    250.000 m² bbox limit.
    """
    if side <= 0 or side * side > MAX_BBOX_AREA_M2:
        raise ValueError(f"tile side {side} m exceeds the {MAX_BBOX_AREA_M2} m² bbox limit")
    minx, miny, maxx, maxy = bbox
    x0, y0 = math.floor(minx / side) * side, math.floor(miny / side) * side
    columns = max(1, math.ceil((maxx - x0) / side))
    rows = max(1, math.ceil((maxy - y0) / side))
    return [
        (x0 + c * side, y0 + r * side, x0 + (c + 1) * side, y0 + (r + 1) * side)
        for r in range(rows)
        for c in range(columns)
    ]


def bbox_param(tile: tuple[int, int, int, int]) -> str:
    """``bbox`` query value: lower-left x, lower-left y, upper-right x, upper-right y (form, explode=false)."""
    return ",".join(str(v) for v in tile)


class BagConnector(HttpConnector):
    """Crawls the BAG objects of the configured woonplaatsen into five landing batches.

    ``base_url`` is the API root, e.g. ``http://127.0.0.1:8080/lvbag/individuelebevragingen/v2``.
    """

    name: ClassVar[str] = "bag"
    datasets: ClassVar[tuple[str, ...]] = (
        "woonplaatsen",
        "openbareruimten",
        "nummeraanduidingen",
        "panden",
        "verblijfsobjecten",
    )
    api_key_header: ClassVar[str] = "X-Api-Key"
    default_requests_per_second: ClassVar[float | None] = 50.0
    config_schema: ClassVar[dict[str, Any]] = http_config_schema(
        {
            "api_key_header": {"type": "string", "default": "X-Api-Key"},
            "woonplaats_ids": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"type": "string", "pattern": "^[0-9]{4}$"},
            },
            "page_size": {"type": "integer", "minimum": 10, "maximum": 100, "default": 100},
            "tile_size_m": {"type": "integer", "minimum": 10, "maximum": MAX_TILE_SIDE_M, "default": MAX_TILE_SIDE_M},
            "requests_per_second": {"type": "number", "exclusiveMinimum": 0, "default": 50},
            "daily_request_quota": {
                "type": "integer",
                "minimum": 1,
                "description": "Most requests per UTC day, counted across runs; unset = no quota.",
            },
            "quota_state_file": {
                "type": "string",
                "minLength": 1,
                "description": "Request counter file; default <landing>/_state/bag/request_quota.json.",
            },
        },
        required=["api_key", "woonplaats_ids"],
    )

    #: Clock of the quota's UTC day; replaceable in tests.
    utc_now: Callable[[], datetime] = staticmethod(_utc_now)

    def request_quota(self, landing_root: Path) -> DailyRequestQuota | None:
        """The daily request quota, or None when ``daily_request_quota`` is not configured."""
        quota = self.config.get("daily_request_quota")
        if not quota:
            return None
        configured = self.config.get("quota_state_file")
        state_file = Path(configured) if configured else Path(landing_root) / QUOTA_STATE_RELATIVE
        return DailyRequestQuota(self.name, int(quota), state_file, clock=self.utc_now)

    def expected_requests(self, landing_root: Path, window: ExtractWindow) -> int:
        """Requests the previous complete crawl needed (one per landed part), 0 when there is none.

        The municipality changes little from day to day, so this is a good estimate of the
        run ahead; the per-request check still guards against an underestimate.
        """
        total = 0
        for dataset in self.datasets:
            batches = [
                p for p in find_complete_batches(landing_root, self.name, dataset)
                if read_manifest(p)["logical_date"] <= window.logical_date.isoformat()
            ]
            if batches:
                total += len(read_manifest(batches[-1])["parts"])
        return total

    def extract(self, window: ExtractWindow, landing_root: Path) -> list[BatchResult]:
        """Crawl all five datasets into one complete batch each, in dependency order.

        All or nothing: the five batches are opened first (clearing an earlier attempt of
        the same run id) and their manifests are written only after the whole crawl
        succeeded, so a failed or stopped crawl never leaves a partial municipality that
        bronze could pick up.

        Raises :class:`DailyQuotaExceededError` (retryable) before the first request when
        the previous crawl's size does not fit in the rest of today's quota, or before
        the request that would exceed it.
        """
        woonplaats_ids = sorted(self.config["woonplaats_ids"])
        page_size = int(self.config["page_size"])
        quota = self.request_quota(landing_root)
        if quota is not None:
            expected = self.expected_requests(landing_root, window)
            quota.check(expected, f"the previous complete crawl took {expected} requests")
        writers = {
            "woonplaatsen": self._writer(landing_root, window, "woonplaatsen", "GET /woonplaatsen/{identificatie}", ""),
            "openbareruimten": self._writer(
                landing_root, window, "openbareruimten", "GET /openbareruimten", "_embedded.openbareruimten"
            ),
            "nummeraanduidingen": self._writer(
                landing_root, window, "nummeraanduidingen", "GET /nummeraanduidingen", "_embedded.nummeraanduidingen"
            ),
            "panden": self._writer(landing_root, window, "panden", "GET /panden", "_embedded.panden"),
            "verblijfsobjecten": self._writer(
                landing_root, window, "verblijfsobjecten", "GET /verblijfsobjecten", "_embedded.verblijfsobjecten"
            ),
        }
        for writer in writers.values():
            writer.open()
        try:
            with self.http() as http:
                if quota is not None:
                    http.rate_limiter = _QuotaGate(quota, http.rate_limiter)
                self._crawl(http, writers, woonplaats_ids, page_size)
        except BaseException as exc:
            log.warning(
                "%s: crawl for %s stopped (%s); no dataset of this run was committed",
                self.name, window.logical_date, type(exc).__name__,
            )
            raise
        return [writer.commit() for writer in writers.values()]

    def _crawl(self, http: HttpSource, writers: dict[str, BatchWriter], woonplaats_ids: list[str], page_size: int) -> None:
        # woonplaatsen: one record per response; the geometry drives the tiling.
        bboxes: list[BBox] = []
        for woonplaats_id in woonplaats_ids:
            response = http.get(f"/woonplaatsen/{woonplaats_id}", params={"expand": "geometrie"}, headers=GEO_HEADERS)
            writers["woonplaatsen"].add_response(response)
            bboxes.append(self._woonplaats_bbox(response, woonplaats_id))

        openbare_ruimte_ids: list[str] = []
        for woonplaats_id in woonplaats_ids:
            params = {"woonplaatsIdentificatie": woonplaats_id, "pageSize": page_size}
            for page in http.iter_hal_pages("/openbareruimten", params=params):
                writers["openbareruimten"].add_response(page)
                openbare_ruimte_ids.extend(_identificaties(page, "_embedded.openbareruimten", "openbareRuimte"))

        for openbare_ruimte_id in sorted(set(openbare_ruimte_ids)):
            params = {"openbareRuimteIdentificatie": openbare_ruimte_id, "pageSize": page_size}
            for page in http.iter_hal_pages("/nummeraanduidingen", params=params):
                writers["nummeraanduidingen"].add_response(page)

        grid = _unique(t for bbox in bboxes for t in tiles(bbox, int(self.config["tile_size_m"])))
        log.info("%s: %d tiles of %d m over %d woonplaatsen", self.name, len(grid), self.config["tile_size_m"], len(bboxes))
        for dataset in ("panden", "verblijfsobjecten"):
            for tile in grid:
                params = {"bbox": bbox_param(tile), "pageSize": page_size}
                for page in http.iter_hal_pages(f"/{dataset}", params=params, headers=BBOX_HEADERS):
                    writers[dataset].add_response(page)

    # -- helpers

    def _writer(self, landing_root: Path, window: ExtractWindow, dataset: str, endpoint: str, record_path: str) -> BatchWriter:
        return BatchWriter(
            landing_root,
            self.name,
            dataset,
            window,
            endpoint=endpoint,
            record_path=record_path,
            content_type="application/hal+json",
        )

    def _woonplaats_bbox(self, response: RawResponse, woonplaats_id: str) -> BBox:
        try:
            geometry = response.json()["_embedded"]["geometrie"]
            return geometry_bbox(geometry)
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceDataError(
                self.name,
                f"GET {response.url} returned woonplaats {woonplaats_id} without a usable "
                f"_embedded.geometrie (expand=geometrie): {exc!r}",
            ) from exc


def _identificaties(page: RawResponse, record_path: str, object_key: str) -> list[str]:
    """``<object_key>.identificatie`` of every record in a HAL page."""
    ids = []
    for record in records_at(page.json(), record_path):
        try:
            ids.append(str(record[object_key]["identificatie"]))
        except (KeyError, TypeError):
            raise SourceDataError("bag", f"record without {object_key}.identificatie in {page.url}") from None
    return ids


def _unique(items: Iterable[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Tiles of overlapping woonplaatsen may coincide; request each once, in first-seen order."""
    seen: dict[tuple[int, int, int, int], None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)
