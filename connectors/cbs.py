"""CBS StatLine connector: the municipality's rows of a *Kerncijfers wijken en buurten* table.

CBS republishes a table a few times a year at most, so a daily run first asks when
the table last changed and only pulls the data when that differs from the data
already landed:

==============================  ===================================================  ==============
dataset                         requests                                             record_path
==============================  ===================================================  ==============
``tableinfos`` (every run)      v3 ``GET {flavour}/odata/{table}/TableInfos``        ``value``
                                v4 ``GET {catalog}/{table}/Properties``              ``""``
``kerncijfers`` (v3, changed)   ``GET {flavour}/odata/{table}/UntypedDataSet``       ``value``
                                with ``$filter`` on the gemeente's codes
``kerncijfers_observations``    ``GET {catalog}/{table}/Observations`` with          ``value``
(v4, changed)                   ``$filter`` on the gemeente's codes
==============================  ===================================================  ==============

*Changed* means: no complete data batch of this table, query and publication
(``TableInfos.Modified`` in v3, ``Properties.ObservationsModified`` in v4) exists
in the landing zone for this or an earlier logical date. On an unchanged day only
the small ``tableinfos`` batch lands, its manifest ``extra`` says
``"unchanged": true`` and points at the data batch that holds this publication.

API flavours (``api_flavour``):

* ``v3-feed`` (default): ``ODataFeed``, server-driven paging, ``odata.nextLink``
  followed until absent;
* ``v3-api``: ``ODataApi``, which refuses results above 10.000 cells
  (rows × properties). The connector counts the properties (``$select`` or the
  table's ``DataProperties``) and asks ``$top``/``$skip`` windows that stay under
  ``max_cells_per_request``;
* ``v4``: the OData v4 service (``odata4.cbs.nl`` / ``datasets.cbs.nl/odata/v1``),
  ``@odata.nextLink`` paging. Observations are one cell per record (long format).

The municipality filter selects ``GM<code>``, ``WK<code>..`` and ``BU<code>....``
with ``startswith`` (CBS pads region codes to 10 characters, so ``eq`` on a bare
code is avoided). CBS open data needs no API key.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Iterator

from connectors.base import ExtractWindow, HttpConnector, http_config_schema
from connectors.errors import SourceDataError
from connectors.http import HttpSource, RawResponse
from ggm_lakehouse.landing import BatchResult, BatchWriter, find_complete_batches, read_manifest

log = logging.getLogger(__name__)

FLAVOURS = ("v3-feed", "v3-api", "v4")
V3_PATHS = {"v3-feed": "ODataFeed/odata", "v3-api": "ODataApi/odata"}
ODATA_API_CELL_LIMIT = 10_000
_V3_DIMENSION_TYPES = {"Dimension", "GeoDimension", "TimeDimension"}
ACCEPT_JSON = {"Accept": "application/json"}


def municipality_filter(gemeentecode: str, property_name: str = "WijkenEnBuurten") -> str:
    """OData ``$filter`` selecting the gemeente, its wijken and its buurten by CBS code prefix."""
    return " or ".join(f"startswith({property_name},'{prefix}{gemeentecode}')" for prefix in ("GM", "WK", "BU"))


def v3_next_link(page: RawResponse, source: str = "cbs") -> str | None:
    """The v3 ``odata.nextLink`` of a page (no ``@`` in OData v3 JSON), or None on the last page."""
    return _body(page, source).get("odata.nextLink") or None


def v4_next_link(page: RawResponse, source: str = "cbs") -> str | None:
    """The v4 ``@odata.nextLink`` of a page, or None on the last page."""
    return _body(page, source).get("@odata.nextLink") or None


def _body(page: RawResponse, source: str) -> dict[str, Any]:
    try:
        body = page.json()
    except ValueError as exc:
        raise SourceDataError(source, f"{page.method} {page.url} did not return JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise SourceDataError(source, f"{page.method} {page.url} returned {type(body).__name__}, not an OData object")
    return body


class CbsStatlineConnector(HttpConnector):
    """Lands the gemeente's Kerncijfers rows of one CBS table when CBS republished it.

    ``base_url`` is the service root: ``https://opendata.cbs.nl`` (v3),
    ``https://odata4.cbs.nl`` or ``https://datasets.cbs.nl/odata/v1`` (v4) or a stand-in.
    """

    name: ClassVar[str] = "cbs"
    datasets: ClassVar[tuple[str, ...]] = ("tableinfos", "kerncijfers", "kerncijfers_observations")
    config_schema: ClassVar[dict[str, Any]] = http_config_schema(
        {
            "table_id": {"type": "string", "pattern": "^[0-9]{5,6}[A-Za-z]{3}$",
                         "description": "StatLine table id, e.g. 85984NED (Kerncijfers wijken en buurten 2024)."},
            "gemeentecode": {"type": "string", "pattern": "^[0-9]{4}$"},
            "api_flavour": {"enum": list(FLAVOURS), "default": "v3-feed"},
            "data_set": {"enum": ["UntypedDataSet", "TypedDataSet"], "default": "UntypedDataSet",
                         "description": "v3 entity set to land; Untyped keeps CBS's '.' for missing values."},
            "measures": {"type": "array", "uniqueItems": True, "minItems": 1,
                         "items": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                         "description": "v3 measure keys to $select (default: all)."},
            "max_cells_per_request": {"type": "integer", "minimum": 1, "maximum": ODATA_API_CELL_LIMIT,
                                      "default": ODATA_API_CELL_LIMIT},
            "v4_catalog": {"type": "string", "pattern": "^[A-Za-z-]+$", "default": "CBS"},
        },
        required=["table_id", "gemeentecode"],
    )

    # -- paths and queries

    @property
    def flavour(self) -> str:
        return str(self.config["api_flavour"])

    @property
    def table_path(self) -> str:
        table = self.config["table_id"]
        if self.flavour == "v4":
            return f"/{self.config['v4_catalog']}/{table}"
        return f"/{V3_PATHS[self.flavour]}/{table}"

    @property
    def data_dataset(self) -> str:
        return "kerncijfers_observations" if self.flavour == "v4" else "kerncijfers"

    def _select(self) -> str | None:
        measures = self.config.get("measures")
        if not measures or self.flavour == "v4":
            return None
        return ",".join(["ID", "WijkenEnBuurten", *[m for m in measures if m not in ("ID", "WijkenEnBuurten")]])

    def query_fingerprint(self) -> dict[str, Any]:
        """What the data request asks; a change in any of these means the landed data no longer fits."""
        return {
            "table_id": self.config["table_id"].upper(),
            "api_flavour": self.flavour,
            "entity_set": "Observations" if self.flavour == "v4" else self.config["data_set"],
            "filter": municipality_filter(self.config["gemeentecode"]),
            "select": self._select(),
        }

    # -- extraction

    def extract(self, window: ExtractWindow, landing_root: Path) -> list[BatchResult]:
        """Land ``tableinfos`` always and the data only when CBS published something new."""
        fingerprint = self.query_fingerprint()
        with self.http() as http:
            info_response, modified = self._table_modified(http)
            previous = self.previous_data_batch(landing_root, window, modified)
            extra: dict[str, Any] = {**fingerprint, "modified": modified}
            results: list[BatchResult] = []
            if previous is not None:
                log.info("%s: %s unchanged since %s (Modified %s); data not pulled",
                         self.name, fingerprint["table_id"], previous["logical_date"], modified)
                extra.update(unchanged=True, data_batch=previous)
            else:
                data = self._land_data(http, landing_root, window, extra)
                results.append(data)
                extra.update(unchanged=False, data_batch={"logical_date": window.logical_date.isoformat(),
                                                          "run_id": window.run_id, "dataset": self.data_dataset})
            record_path = "" if self.flavour == "v4" else "value"
            endpoint = f"GET {self.table_path}/" + ("Properties" if self.flavour == "v4" else "TableInfos")
            with BatchWriter(landing_root, self.name, "tableinfos", window, endpoint=endpoint,
                             record_path=record_path, extra=extra) as batch:
                batch.add_response(info_response)
            results.insert(0, batch.completed())
        return results

    def _table_modified(self, http: HttpSource) -> tuple[RawResponse, str]:
        """The TableInfos/Properties response and the publication timestamp it carries."""
        if self.flavour == "v4":
            response = http.get(f"{self.table_path}/Properties", headers=ACCEPT_JSON)
            body = _body(response, self.name)
            modified = body.get("ObservationsModified") or body.get("Modified")
        else:
            response = http.get(f"{self.table_path}/TableInfos", params={"$format": "json"}, headers=ACCEPT_JSON)
            values = _body(response, self.name).get("value")
            modified = values[0].get("Modified") if isinstance(values, list) and values and isinstance(values[0], dict) else None
        if not isinstance(modified, str) or not modified:
            raise SourceDataError(self.name, f"GET {response.url} carries no Modified timestamp; cannot tell whether "
                                             f"table {self.config['table_id']} changed")
        return response, modified

    def previous_data_batch(self, landing_root: Path, window: ExtractWindow, modified: str) -> dict[str, str] | None:
        """The newest complete data batch (up to this logical date) holding this publication and query, if any.

        Reads the landing zone's own manifests, so a deleted or incomplete data batch
        simply makes the next run pull again.
        """
        fingerprint = self.query_fingerprint()
        for path in reversed(find_complete_batches(landing_root, self.name, self.data_dataset)):
            manifest = read_manifest(path)
            if manifest.get("logical_date", "") > window.logical_date.isoformat():
                continue  # a backfill must not rely on data landed for a later day
            extra = manifest.get("extra") or {}
            same_query = all(extra.get(key) == value for key, value in fingerprint.items())
            if same_query and extra.get("modified") == modified:
                return {"logical_date": manifest["logical_date"], "run_id": manifest["run_id"],
                        "dataset": self.data_dataset}
            # Only the newest batch of this dataset counts: an older one with the same Modified
            # would hide a republication that was reverted in between.
            return None
        return None

    def _land_data(self, http: HttpSource, landing_root: Path, window: ExtractWindow,
                   extra: dict[str, Any]) -> BatchResult:
        entity_set = self.query_fingerprint()["entity_set"]
        with BatchWriter(landing_root, self.name, self.data_dataset, window,
                         endpoint=f"GET {self.table_path}/{entity_set}", record_path="value",
                         extra=extra) as batch:
            for page in self._data_pages(http, entity_set):
                batch.add_response(page)
        return batch.completed()

    def _data_pages(self, http: HttpSource, entity_set: str) -> Iterator[RawResponse]:
        gemeentecode = self.config["gemeentecode"]
        path = f"{self.table_path}/{entity_set}"
        if self.flavour == "v4":
            params = {"$filter": municipality_filter(gemeentecode)}
            yield from http.iter_pages(lambda: http.get(path, params=params, headers=ACCEPT_JSON),
                                       lambda page: v4_next_link(page, self.name), headers=ACCEPT_JSON)
            return
        params: dict[str, Any] = {"$format": "json", "$filter": municipality_filter(gemeentecode)}
        select = self._select()
        if select:
            params["$select"] = select
        if self.flavour == "v3-feed":
            yield from http.iter_pages(lambda: http.get(path, params=params, headers=ACCEPT_JSON),
                                       lambda page: v3_next_link(page, self.name), headers=ACCEPT_JSON)
            return
        yield from self._api_windows(http, path, params)

    def _api_windows(self, http: HttpSource, path: str, params: dict[str, Any]) -> Iterator[RawResponse]:
        """ODataApi: ``$top``/``$skip`` windows of at most ``max_cells_per_request`` cells each."""
        columns = len(params["$select"].split(",")) if "$select" in params else self._v3_column_count(http)
        rows_per_request = int(self.config["max_cells_per_request"]) // columns
        if rows_per_request < 1:
            raise SourceDataError(self.name, f"one row of {self.config['table_id']} has {columns} cells, more than "
                                             f"max_cells_per_request={self.config['max_cells_per_request']}")
        skip = 0
        while True:
            page = http.get(path, params={**params, "$top": rows_per_request, "$skip": skip}, headers=ACCEPT_JSON)
            yield page
            received = _body(page, self.name).get("value")
            if not isinstance(received, list):
                raise SourceDataError(self.name, f"GET {page.url} has no value list")
            if len(received) < rows_per_request:
                return
            skip += rows_per_request

    def _v3_column_count(self, http: HttpSource) -> int:
        """Properties of one data row: ID plus every dimension and topic in ``DataProperties``."""
        response = http.get(f"{self.table_path}/DataProperties", params={"$format": "json"}, headers=ACCEPT_JSON)
        properties = _body(response, self.name).get("value")
        if not isinstance(properties, list) or not properties:
            raise SourceDataError(self.name, f"GET {response.url} returned no DataProperties")
        counted = [p for p in properties if isinstance(p, dict) and (p.get("Type") == "Topic" or p.get("Type") in _V3_DIMENSION_TYPES)]
        return 1 + len(counted)
