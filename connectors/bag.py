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
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, ClassVar, Iterable

from connectors.base import ExtractWindow, HttpConnector, http_config_schema
from connectors.errors import SourceDataError
from connectors.http import HttpSource, RawResponse
from connectors.landing import BatchResult, BatchWriter, records_at

log = logging.getLogger(__name__)

RD_CRS = "epsg:28992"
MAX_BBOX_AREA_M2 = 250_000
MAX_TILE_SIDE_M = int(math.isqrt(MAX_BBOX_AREA_M2))  # 500 m
GEO_HEADERS = {"Accept-Crs": RD_CRS}
BBOX_HEADERS = {"Accept-Crs": RD_CRS, "Content-Crs": RD_CRS}

BBox = tuple[float, float, float, float]


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
        },
        required=["api_key", "woonplaats_ids"],
    )

    def extract(self, window: ExtractWindow, landing_root: Path) -> list[BatchResult]:
        """Crawl all five datasets; each lands as one complete batch, in dependency order."""
        woonplaats_ids = sorted(self.config["woonplaats_ids"])
        page_size = int(self.config["page_size"])
        results: list[BatchResult] = []
        with self.http() as http:
            # woonplaatsen: one record per response; the geometry drives the tiling.
            bboxes: list[BBox] = []
            with self._writer(landing_root, window, "woonplaatsen", "GET /woonplaatsen/{identificatie}", "") as batch:
                for woonplaats_id in woonplaats_ids:
                    response = http.get(
                        f"/woonplaatsen/{woonplaats_id}", params={"expand": "geometrie"}, headers=GEO_HEADERS
                    )
                    batch.add_response(response)
                    bboxes.append(self._woonplaats_bbox(response, woonplaats_id))
            results.append(batch.completed())

            openbare_ruimte_ids: list[str] = []
            with self._writer(
                landing_root, window, "openbareruimten", "GET /openbareruimten", "_embedded.openbareruimten"
            ) as batch:
                for woonplaats_id in woonplaats_ids:
                    params = {"woonplaatsIdentificatie": woonplaats_id, "pageSize": page_size}
                    for page in http.iter_hal_pages("/openbareruimten", params=params):
                        batch.add_response(page)
                        openbare_ruimte_ids.extend(
                            _identificaties(page, "_embedded.openbareruimten", "openbareRuimte")
                        )
            results.append(batch.completed())

            with self._writer(
                landing_root, window, "nummeraanduidingen", "GET /nummeraanduidingen", "_embedded.nummeraanduidingen"
            ) as batch:
                for openbare_ruimte_id in sorted(set(openbare_ruimte_ids)):
                    params = {"openbareRuimteIdentificatie": openbare_ruimte_id, "pageSize": page_size}
                    for page in http.iter_hal_pages("/nummeraanduidingen", params=params):
                        batch.add_response(page)
            results.append(batch.completed())

            grid = _unique(t for bbox in bboxes for t in tiles(bbox, int(self.config["tile_size_m"])))
            log.info("%s: %d tiles of %d m over %d woonplaatsen", self.name, len(grid), self.config["tile_size_m"], len(bboxes))
            for dataset in ("panden", "verblijfsobjecten"):
                results.append(self._crawl_tiles(http, landing_root, window, dataset, grid, page_size))
        return results

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

    def _crawl_tiles(
        self,
        http: HttpSource,
        landing_root: Path,
        window: ExtractWindow,
        dataset: str,
        grid: list[tuple[int, int, int, int]],
        page_size: int,
    ) -> BatchResult:
        with self._writer(landing_root, window, dataset, f"GET /{dataset}", f"_embedded.{dataset}") as batch:
            for tile in grid:
                params = {"bbox": bbox_param(tile), "pageSize": page_size}
                for page in http.iter_hal_pages(f"/{dataset}", params=params, headers=BBOX_HEADERS):
                    batch.add_response(page)
        return batch.completed()

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
