"""Stand-in for CBS StatLine open data (OData v3 ``opendata.cbs.nl`` and OData v4 ``odata4.cbs.nl``).

Serves the demo municipality's *Kerncijfers wijken en buurten* tables
(:mod:`demo_gemeente.cbs`) the way CBS serves its own:

OData v3, two flavours per table (``{flavour}/odata/{table}/...``):

* ``ODataFeed`` – bulk access. Server-driven paging: at most ``feed_page_size``
  entities per response (CBS: 10.000) and an ``odata.nextLink`` (v3 key, no ``@``)
  to the rest, followed until absent;
* ``ODataApi`` – direct use, no paging, but a request whose result would hold more
  than ``api_cell_limit`` cells (CBS: "limiet van 10.000 cellen"; cells = entities ×
  returned properties) is refused. Public reports show CBS answering such a query
  with HTTP 500 and an OData error, so that is what this stand-in does.

Entity sets: the service document (``/{table}``), ``TableInfos`` (with ``Modified``),
``DataProperties``, ``WijkenEnBuurten`` (the geo dimension), ``TypedDataSet``
(nulls) and ``UntypedDataSet`` (text, ``"."`` for missing values), plus the
catalog ``/ODataCatalog/Tables``.

OData v4 (``/CBS/{table}/...``, the datasets.cbs.nl/odata4.cbs.nl layout): the
service document, ``Properties`` (singleton with ``Modified`` and
``ObservationsModified``), ``Dimensions``, ``MeasureCodes``, ``MeasureGroups``,
``WijkenEnBuurtenCodes``, ``WijkenEnBuurtenGroups`` and ``Observations`` (one cell
per entity; empty cells are not returned, confidential cells carry
``ValueAttribute`` ``"Confidential"`` and a null ``Value``), paged with
``@odata.nextLink``.

Query options: ``$filter``, ``$select``, ``$top``, ``$skip``, ``$format`` (JSON only),
``$inlinecount=allpages`` (v3) and ``$count=true`` (v4). ``$filter`` is parsed by a
small strict recursive-descent parser (:func:`parse_filter`): comparisons ``eq ne
gt ge lt le``, ``and``/``or``/``not``, parentheses and the string functions of the
protocol version (v3 ``substringof``/``startswith``/``endswith``, v4
``contains``/``startswith``/``endswith``, both ``tolower``/``toupper``/``trim``).
Anything else is a 400 with an OData error naming the problem. String equality
ignores trailing spaces, as CBS's SQL Server back end does, so both
``WijkenEnBuurten eq 'GM9999'`` and ``eq 'GM9999    '`` match the padded code.

Repeated identical query options are accepted (clients such as ``cbsodata`` append
``$format=json`` to every ``odata.nextLink`` they follow); conflicting repeats are a 400.

CBS open data needs no API key. A ``state.rate_limiter``, when set, throttles per client
address with 429 and ``Retry-After`` (CBS itself only asks for fair use). Faults injected through ``state.faults`` (or the
``/_standin/faults`` admin route) answer with the given status and ``Retry-After``.
"""
from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import date
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from demo_gemeente.cbs import (
    DIMENSION_KEY,
    MEASURES,
    TOPIC_GROUPS,
    DemoKerncijfers,
    KerncijfersTable,
    Release,
    default_schedule,
)
from standins.common import (
    ADMIN_PREFIX,
    FaultInjector,
    RegistryState,
    ThreadedUvicorn,
    WorldLike,
    WorldSource,
    admin_router,
    retry_after_seconds,
)

V3_FLAVOURS = ("ODataFeed", "ODataApi")
V4_CATALOG = "CBS"
DEFAULT_FEED_PAGE_SIZE = 10_000
DEFAULT_API_CELL_LIMIT = 10_000
DEFAULT_V4_PAGE_SIZE = 10_000
V3_MEDIA_TYPE = "application/json;odata=minimalmetadata;streaming=true;charset=utf-8"
V4_MEDIA_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;charset=utf-8"
V3_DATA_NAMESPACE = "Cbs.OData.WebAPI"


class ODataError(Exception):
    """A request the service refuses; rendered in the protocol version's error format."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- $filter


_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>[(),]))"
)
_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}
_V3_FUNCTIONS = {"substringof": 2, "startswith": 2, "endswith": 2, "tolower": 1, "toupper": 1, "trim": 1}
_V4_FUNCTIONS = {"contains": 2, "startswith": 2, "endswith": 2, "tolower": 1, "toupper": 1, "trim": 1}
_BOOLEAN_FUNCTIONS = {"substringof", "startswith", "endswith", "contains"}

Predicate = Callable[[dict], Any]


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ODataError(400, f"$filter: unexpected character {text[position:].strip()[:1]!r} at position {position}")
        position = match.end()
        if match.group("string") is not None:
            tokens.append(("string", match.group("string")[1:-1].replace("''", "'")))
        elif match.group("number") is not None:
            raw = match.group("number")
            tokens.append(("number", float(raw) if "." in raw else int(raw)))
        elif match.group("name") is not None:
            tokens.append(("name", match.group("name")))
        else:
            tokens.append(("punct", match.group("punct")))
    return tokens


def _text(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ODataError(400, f"$filter: {where} needs a string, got {type(value).__name__}")


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is None or right is None:
        if op == "eq":
            return left is None and right is None
        if op == "ne":
            return not (left is None and right is None)
        return False
    if isinstance(left, str) != isinstance(right, str) or isinstance(left, bool) != isinstance(right, bool):
        raise ODataError(400, f"$filter: cannot compare {type(left).__name__} with {type(right).__name__} using {op}")
    if isinstance(left, str):
        # SQL Server (CBS's back end) compares strings without trailing spaces: padded codes match.
        left, right = left.rstrip(" "), right.rstrip(" ")
    return {"eq": left == right, "ne": left != right, "gt": left > right, "ge": left >= right,
            "lt": left < right, "le": left <= right}[op]


class _FilterParser:
    """Recursive descent over the token list; builds a closure ``row -> value``."""

    def __init__(self, text: str, properties: Sequence[str], functions: dict[str, int]) -> None:
        self.tokens = _tokenize(text)
        self.index = 0
        self.properties = set(properties)
        self.functions = functions

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> tuple[str, Any]:
        token = self.peek()
        if token is None:
            raise ODataError(400, "$filter: unexpected end of expression")
        self.index += 1
        return token

    def expect(self, kind: str, value: Any) -> None:
        token = self.take()
        if token != (kind, value):
            raise ODataError(400, f"$filter: expected {value!r}, found {token[1]!r}")

    def at_keyword(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "name" and token[1] in words

    def parse(self) -> Predicate:
        if not self.tokens:
            raise ODataError(400, "$filter: empty expression")
        expression = self.parse_or()
        if self.peek() is not None:
            raise ODataError(400, f"$filter: unexpected {self.peek()[1]!r} after a complete expression")
        return expression

    def parse_or(self) -> Predicate:
        left = self.parse_and()
        while self.at_keyword("or"):
            self.take()
            right = self.parse_and()
            left = (lambda a, b: lambda row: bool(a(row)) or bool(b(row)))(left, right)
        return left

    def parse_and(self) -> Predicate:
        left = self.parse_not()
        while self.at_keyword("and"):
            self.take()
            right = self.parse_not()
            left = (lambda a, b: lambda row: bool(a(row)) and bool(b(row)))(left, right)
        return left

    def parse_not(self) -> Predicate:
        if self.at_keyword("not"):
            self.take()
            inner = self.parse_not()
            return lambda row: not bool(inner(row))
        return self.parse_comparison()

    def parse_comparison(self) -> Predicate:
        left = self.parse_operand()
        if self.at_keyword(*_COMPARISONS):
            op = self.take()[1]
            right = self.parse_operand()
            return lambda row: _compare(op, left(row), right(row))
        return left

    def parse_operand(self) -> Predicate:
        kind, value = self.take()
        if kind == "punct" and value == "(":
            inner = self.parse_or()
            self.expect("punct", ")")
            return inner
        if kind in ("string", "number"):
            return lambda row: value
        if kind != "name":
            raise ODataError(400, f"$filter: unexpected {value!r}")
        if value in ("true", "false"):
            return (lambda constant: lambda row: constant)(value == "true")
        if value == "null":
            return lambda row: None
        nxt = self.peek()
        if nxt == ("punct", "("):
            return self.parse_call(value)
        if value in _COMPARISONS or value in ("and", "or", "not"):
            raise ODataError(400, f"$filter: operator {value!r} needs an operand before it")
        if value not in self.properties:
            raise ODataError(400, f"$filter: unknown property {value!r}")
        return lambda row: row.get(value)

    def parse_call(self, name: str) -> Predicate:
        if name not in self.functions:
            raise ODataError(400, f"$filter: function {name!r} is not supported in this OData version")
        self.expect("punct", "(")
        args: list[Predicate] = [self.parse_or()]
        while self.peek() == ("punct", ","):
            self.take()
            args.append(self.parse_or())
        self.expect("punct", ")")
        if len(args) != self.functions[name]:
            raise ODataError(400, f"$filter: {name} takes {self.functions[name]} argument(s), got {len(args)}")
        return _function(name, args)


def _function(name: str, args: list[Predicate]) -> Predicate:
    if name in ("tolower", "toupper", "trim"):
        (arg,) = args

        def unary(row: dict) -> Any:
            value = _text(arg(row), name)
            if value is None:
                return None
            return value.lower() if name == "tolower" else value.upper() if name == "toupper" else value.strip()

        return unary
    first, second = args

    def binary(row: dict) -> bool:
        a, b = _text(first(row), name), _text(second(row), name)
        if a is None or b is None:
            return False
        if name == "substringof":  # v3: substringof(needle, haystack)
            return a in b
        if name == "contains":  # v4: contains(haystack, needle)
            return b in a
        if name == "startswith":
            return a.startswith(b)
        return a.rstrip(" ").endswith(b.rstrip(" "))

    return binary


def parse_filter(text: str, properties: Sequence[str], version: int = 3) -> Predicate:
    """Compile an OData ``$filter`` over ``properties`` into ``row -> truthy``; raises :class:`ODataError` (400)."""
    return _FilterParser(text, properties, _V3_FUNCTIONS if version == 3 else _V4_FUNCTIONS).parse()


# --------------------------------------------------------------------------- query options


@dataclass(frozen=True)
class QueryOptions:
    """The system query options of one request."""

    filter: str | None = None
    select: tuple[str, ...] | None = None
    top: int | None = None
    skip: int = 0
    count: bool = False


_KNOWN_OPTIONS = {3: {"$filter", "$select", "$top", "$skip", "$format", "$inlinecount"},
                  4: {"$filter", "$select", "$top", "$skip", "$format", "$count"}}


def _non_negative(name: str, raw: str) -> int:
    if not raw.isdigit():
        raise ODataError(400, f"{name} must be a non-negative integer, got {raw!r}")
    return int(raw)


def parse_options(query_string: str, version: int) -> QueryOptions:
    """Validate the query string of a request; raises :class:`ODataError` (400/415)."""
    values: dict[str, str] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name in values and values[name] != value:
            raise ODataError(400, f"query option {name} is given twice with different values")
        values[name] = value
    for name in values:
        if name.startswith("$") and name not in _KNOWN_OPTIONS[version]:
            raise ODataError(400, f"query option {name} is not supported")
    fmt = values.get("$format")
    if fmt is not None and fmt.split(";")[0].strip().lower() not in ("json", "application/json"):
        raise ODataError(415, f"$format {fmt!r} is not supported; use $format=json")
    select = None
    if values.get("$select"):
        select = tuple(part.strip() for part in values["$select"].split(","))
        if any(not part for part in select):
            raise ODataError(400, "$select has an empty property name")
    count = False
    if version == 3 and "$inlinecount" in values:
        if values["$inlinecount"] not in ("allpages", "none"):
            raise ODataError(400, "$inlinecount must be allpages or none")
        count = values["$inlinecount"] == "allpages"
    if version == 4 and "$count" in values:
        if values["$count"] not in ("true", "false"):
            raise ODataError(400, "$count must be true or false")
        count = values["$count"] == "true"
    return QueryOptions(
        filter=values.get("$filter") or None,
        select=select,
        top=_non_negative("$top", values["$top"]) if "$top" in values else None,
        skip=_non_negative("$skip", values["$skip"]) if "$skip" in values else 0,
        count=count,
    )


@dataclass(frozen=True)
class EntitySet:
    """Rows of one entity set and its declared properties (for $select/$filter validation)."""

    name: str
    properties: tuple[str, ...]
    rows: Sequence[dict[str, Any]]


@dataclass(frozen=True)
class QueryResult:
    rows: list[dict[str, Any]]
    properties: tuple[str, ...]
    total: int  # entities matching the filter (before $skip/$top)
    remaining_after: int  # entities of the $skip/$top window not in ``rows``


def run_query(entity_set: EntitySet, options: QueryOptions, version: int, page_size: int | None) -> QueryResult:
    """Apply $filter, $skip, $top, server paging and $select to an entity set."""
    rows: Iterable[dict[str, Any]] = entity_set.rows
    if options.filter:
        predicate = parse_filter(options.filter, entity_set.properties, version)
        rows = [row for row in rows if predicate(row)]
    rows = list(rows)
    selected = entity_set.properties
    if options.select and options.select != ("*",):
        unknown = [p for p in options.select if p not in entity_set.properties]
        if unknown:
            raise ODataError(400, f"$select: unknown property {unknown[0]!r} of {entity_set.name}")
        selected = tuple(p for p in entity_set.properties if p in options.select)
    window = rows[options.skip:]
    if options.top is not None:
        window = window[:options.top]
    page = window if page_size is None else window[:page_size]
    return QueryResult(
        rows=[{p: row.get(p) for p in selected} for row in page],
        properties=selected,
        total=len(rows),
        remaining_after=len(window) - len(page),
    )


def next_link(request: Request, options: QueryOptions, returned: int) -> str:
    """The URL of the next page: same query, ``$skip`` advanced, ``$top`` reduced."""
    params = [(k, v) for k, v in parse_qsl(request.url.query, keep_blank_values=True) if k not in ("$skip", "$top")]
    params = list(dict.fromkeys(params))  # drop repeats that clients appended
    if options.top is not None:
        params.append(("$top", str(options.top - returned)))
    params.append(("$skip", str(options.skip + returned)))
    base = str(request.url.replace(query=""))
    return f"{base}?{urlencode(params, quote_via=quote, safe=chr(36) + chr(39) + '(),')}"


# --------------------------------------------------------------------------- entity sets


def _measure_code(position: int) -> str:
    """v4 measure identifier (CBS v4 uses opaque codes such as ``M000352``)."""
    return f"M{1000 + position:06d}"


def _area_kind(code: str) -> str:
    return {"NL": "Land", "GM": "Gemeente", "WK": "Wijk", "BU": "Buurt"}.get(code[:2], "Onbekend")


def v3_entity_sets(table: KerncijfersTable) -> dict[str, EntitySet]:
    """The v3 entity sets of one table, by name."""
    data_props = (DIMENSION_KEY, *(m.key for m in MEASURES))
    return {
        "TableInfos": EntitySet("TableInfos", tuple(table.table_info()), [table.table_info()]),
        "DataProperties": EntitySet(
            "DataProperties",
            ("ID", "Position", "ParentID", "Type", "Key", "Title", "Description", "Datatype", "Unit", "Decimals",
             "Default", "PresentationType", "MapYear", "ReleasePolicy"),
            table.data_properties()),
        DIMENSION_KEY: EntitySet(DIMENSION_KEY, ("Key", "Title", "Description", "Municipality"), list(table.regions)),
        "TypedDataSet": EntitySet("TypedDataSet", ("ID", *data_props), list(table.rows)),
        "UntypedDataSet": EntitySet("UntypedDataSet", ("ID", *data_props), table.untyped_rows()),
    }


def v4_entity_sets(table: KerncijfersTable) -> tuple[dict[str, EntitySet], dict[str, Any]]:
    """The v4 entity sets of one table by name, and the ``Properties`` singleton."""
    numeric = [(position, m) for position, m in enumerate(MEASURES) if m.numeric]
    groups = {key: index for index, (key, _) in enumerate(TOPIC_GROUPS)}
    measure_codes = [{
        "Identifier": _measure_code(position), "Index": index, "Title": m.title, "Description": None,
        "MeasureGroupId": m.group or None, "DataType": m.datatype, "Unit": m.unit or None,
        "Decimals": m.decimals, "PresentationType": m.presentation,
    } for index, (position, m) in enumerate(numeric)]
    measure_groups = [{"Id": key, "Index": groups[key], "Title": title, "Description": None, "ParentId": None}
                      for key, title in TOPIC_GROUPS]
    region_groups = [{"Id": kind, "Index": i, "Title": kind, "Description": None, "ParentId": None}
                     for i, kind in enumerate(("Land", "Gemeente", "Wijk", "Buurt"))]
    region_codes = [{"Identifier": r["Key"].strip(), "Index": i, "Title": r["Title"], "Description": r["Description"],
                     "DimensionGroupId": _area_kind(r["Key"])} for i, r in enumerate(table.regions)]
    observations = []
    for row in table.rows:
        code = row[DIMENSION_KEY].strip()
        for position, measure in numeric:
            value = row[measure.key]
            confidential = value is None and not (measure.household and not table.release.households)
            if value is None and not confidential:
                continue  # v4 does not return empty cells
            observations.append({
                "Id": len(observations), "Measure": _measure_code(position),
                "ValueAttribute": "Confidential" if confidential else "None",
                "Value": float(value) if value is not None else None, "StringValue": None,
                DIMENSION_KEY: code,
            })
    sets = {
        "Dimensions": EntitySet("Dimensions", ("Identifier", "Title", "Description", "Kind", "MapYear", "ReleasePolicy"),
                                [{"Identifier": DIMENSION_KEY, "Title": "Wijken en buurten", "Description": None,
                                  "Kind": "GeoDimension", "MapYear": str(table.year), "ReleasePolicy": True}]),
        "MeasureCodes": EntitySet("MeasureCodes", tuple(measure_codes[0]), measure_codes),
        "MeasureGroups": EntitySet("MeasureGroups", tuple(measure_groups[0]), measure_groups),
        f"{DIMENSION_KEY}Codes": EntitySet(f"{DIMENSION_KEY}Codes", tuple(region_codes[0]), region_codes),
        f"{DIMENSION_KEY}Groups": EntitySet(f"{DIMENSION_KEY}Groups", tuple(region_groups[0]), region_groups),
        "Observations": EntitySet("Observations", ("Id", "Measure", "ValueAttribute", "Value", "StringValue",
                                                   DIMENSION_KEY), observations),
    }
    info = table.table_info()
    properties = {
        "Identifier": table.table_id, "Title": info["Title"], "Description": info["Description"],
        "Language": "nl", "Catalog": V4_CATALOG, "Frequency": "Yearly", "Status": "Regular",
        "Modified": info["Modified"], "ObservationsModified": info["Modified"],
        "ReasonDelivery": table.release.reason, "Period": info["Period"],
        "ObservationCount": len(observations), "DatasetType": "Numeric", "Source": info["Source"],
    }
    return sets, properties


# --------------------------------------------------------------------------- app


@dataclass
class CbsSettings:
    """Operational limits of the stand-in (CBS's values by default; tests lower them)."""

    feed_page_size: int = DEFAULT_FEED_PAGE_SIZE
    api_cell_limit: int = DEFAULT_API_CELL_LIMIT
    v4_page_size: int = DEFAULT_V4_PAGE_SIZE


def _json(payload: Any, media_type: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=json.dumps(payload, ensure_ascii=False).encode("utf-8"), status_code=status,
                    media_type=media_type, headers=headers)


def _error(version: int, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    if version == 3:
        body = {"odata.error": {"code": "", "message": {"lang": "nl-NL", "value": message}}}
        return _json(body, V3_MEDIA_TYPE, status, headers)
    return _json({"error": {"code": str(status), "message": message}}, V4_MEDIA_TYPE, status, headers)


def _protocol_version(request: Request) -> int:
    """The OData version a request speaks: v4 under the CBS catalog path, v3 everywhere else."""
    return 4 if request.url.path.startswith(f"/{V4_CATALOG}/") else 3


def create_cbs_app(state: RegistryState, kerncijfers: DemoKerncijfers, settings: CbsSettings | None = None) -> FastAPI:
    """The CBS open data stand-in as an ASGI app; ``state.as_of`` decides which releases are visible."""
    settings = settings or CbsSettings()
    app = FastAPI(title="CBS StatLine open data (stand-in)", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(admin_router(state))

    @app.middleware("http")
    async def faults(request: Request, call_next):  # noqa: ANN001 - Starlette signature
        if request.url.path.startswith(ADMIN_PREFIX):
            return await call_next(request)
        version = _protocol_version(request)
        limiter = state.rate_limiter
        if limiter is not None:
            # CBS publishes no numbers ("fair use"); a configured limiter throttles per client address.
            allowed, _, wait = limiter.acquire(request.client.host if request.client else "unknown")
            if not allowed:
                return _error(version, 429, "Te veel verzoeken; probeer het later opnieuw.",
                              {"Retry-After": retry_after_seconds(wait)})
        fault = state.faults.take()
        if fault is not None and fault.kind == "fail":
            headers = {"Retry-After": str(fault.retry_after_seconds)} if fault.retry_after_seconds is not None else None
            return _error(version, fault.status, "De service is tijdelijk niet beschikbaar.", headers)
        if fault is not None and fault.delay_seconds > 0:
            await asyncio.sleep(fault.delay_seconds)
        return await call_next(request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(_protocol_version(request), exc.status_code, str(exc.detail))

    # Routes raise ODataError wherever they refuse a request; it is rendered here, in one place.
    @app.exception_handler(ODataError)
    async def odata_error(request: Request, exc: ODataError) -> Response:
        return _error(_protocol_version(request), exc.status, exc.message)

    def current_table(table_id: str) -> KerncijfersTable:
        table = kerncijfers.table(table_id, state.as_of)
        if table is None:
            raise ODataError(404, f"Tabel {table_id} bestaat niet (of is nog niet gepubliceerd).")
        return table

    def visible_table_ids() -> Iterable[str]:
        return kerncijfers.table_ids(state.as_of)

    def root(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    _add_catalog_route(app, visible_table_ids, current_table, root)
    for flavour in V3_FLAVOURS:
        _add_v3_routes(app, flavour, settings, current_table, root)
    _add_v4_routes(app, settings, current_table, root)
    return app


def _add_catalog_route(app: FastAPI, visible_table_ids: Callable[[], Iterable[str]],
                       current_table: Callable[[str], KerncijfersTable], root: Callable[[Request], str]) -> None:
    @app.get("/ODataCatalog/Tables")
    async def catalog(request: Request) -> Response:
        options = parse_options(request.url.query, 3)
        entries = []
        for table_id in visible_table_ids():
            table = current_table(table_id)
            info = table.table_info()
            entries.append({
                "Updated": info["Modified"], "ID": len(entries) + 1, "Identifier": table_id,
                "Title": info["Title"], "ShortTitle": info["ShortTitle"], "Summary": info["Summary"],
                "Modified": info["Modified"], "MetaDataModified": info["MetaDataModified"],
                "ReasonDelivery": info["ReasonDelivery"], "Language": "nl", "Catalog": "CBS",
                "Frequency": info["Frequency"], "Period": info["Period"], "RecordCount": info["RecordCount"],
                "ApiUrl": f"{root(request)}/ODataApi/OData/{table_id}",
                "FeedUrl": f"{root(request)}/ODataFeed/OData/{table_id}",
            })
        props = tuple(entries[0]) if entries else ("Identifier", "Title", "Modified")
        result = run_query(EntitySet("Tables", props, entries), options, 3, None)
        return _json({"odata.metadata": f"{root(request)}/ODataCatalog/$metadata#Tables", "value": result.rows},
                     V3_MEDIA_TYPE)


def _add_v3_routes(app: FastAPI, flavour: str, settings: CbsSettings,
                   current_table: Callable[[str], KerncijfersTable], root: Callable[[Request], str]) -> None:
    # CBS URLs exist as .../odata/... and .../OData/...; both spellings are in circulation.
    for odata in ("odata", "OData"):
        prefix = f"/{flavour}/{odata}"

        @app.get(prefix + "/{table_id}")
        @app.get(prefix + "/{table_id}/")
        async def service_document(request: Request, table_id: str) -> Response:
            parse_options(request.url.query, 3)
            table = current_table(table_id)
            base = f"{root(request)}{request.url.path.rstrip('/')}"
            names = list(v3_entity_sets(table))
            return _json({"odata.metadata": f"{base}/$metadata",
                          "value": [{"name": n, "url": f"{base}/{n}"} for n in names]}, V3_MEDIA_TYPE)

        @app.get(prefix + "/{table_id}/{entity_set}")
        async def entity_set(request: Request, table_id: str, entity_set: str) -> Response:
            options = parse_options(request.url.query, 3)
            table = current_table(table_id)
            sets = v3_entity_sets(table)
            if entity_set not in sets:
                raise ODataError(404, f"Resource {entity_set} bestaat niet in tabel {table_id}.")
            feed = flavour == "ODataFeed"
            result = run_query(sets[entity_set], options, 3, settings.feed_page_size if feed else None)
            # The cap guards the data sets; metadata sets are small (and the test limit is tiny).
            if not feed and entity_set in ("TypedDataSet", "UntypedDataSet"):
                _check_api_cell_limit(result, settings.api_cell_limit)
            base = f"{root(request)}{request.url.path.rsplit('/', 1)[0]}"
            payload: dict[str, Any] = {"odata.metadata": f"{base}/$metadata#{V3_DATA_NAMESPACE}.{entity_set}"}
            if options.count:
                payload["odata.count"] = str(result.total)
            payload["value"] = result.rows
            if result.remaining_after > 0:
                payload["odata.nextLink"] = next_link(request, options, len(result.rows))
            return _json(payload, V3_MEDIA_TYPE)


def _check_api_cell_limit(result: QueryResult, limit: int) -> None:
    """The ODataApi refuses an answer of more than ``limit`` cells (the ODataFeed pages instead)."""
    cells = len(result.rows) * len(result.properties)
    if cells > limit:
        raise ODataError(500, (
            f"De query levert {cells} cellen op; de ODataApi geeft maximaal "
            f"{limit} cellen terug. Beperk de vraag met $filter, $select of "
            "$top/$skip, of gebruik de ODataFeed."))


def _add_v4_routes(app: FastAPI, settings: CbsSettings,
                   current_table: Callable[[str], KerncijfersTable], root: Callable[[Request], str]) -> None:
    prefix = f"/{V4_CATALOG}"

    @app.get(prefix + "/{table_id}")
    @app.get(prefix + "/{table_id}/")
    async def service_document(request: Request, table_id: str) -> Response:
        parse_options(request.url.query, 4)
        table = current_table(table_id)
        base = f"{root(request)}{prefix}/{table_id}"
        sets, _ = v4_entity_sets(table)
        value = [{"name": n, "kind": "EntitySet", "url": n} for n in sets]
        value.append({"name": "Properties", "kind": "Singleton", "url": "Properties"})
        return _json({"@odata.context": f"{base}/$metadata", "value": value}, V4_MEDIA_TYPE)

    @app.get(prefix + "/{table_id}/Properties")
    async def properties(request: Request, table_id: str) -> Response:
        parse_options(request.url.query, 4)
        table = current_table(table_id)
        _, props = v4_entity_sets(table)
        base = f"{root(request)}{prefix}/{table_id}"
        return _json({"@odata.context": f"{base}/$metadata#Properties", **props}, V4_MEDIA_TYPE)

    @app.get(prefix + "/{table_id}/{entity_set}")
    async def entity_set(request: Request, table_id: str, entity_set: str) -> Response:
        options = parse_options(request.url.query, 4)
        table = current_table(table_id)
        sets, _ = v4_entity_sets(table)
        if entity_set not in sets:
            raise ODataError(404, f"Resource {entity_set} bestaat niet in dataset {table_id}.")
        result = run_query(sets[entity_set], options, 4, settings.v4_page_size)
        base = f"{root(request)}{prefix}/{table_id}"
        payload: dict[str, Any] = {"@odata.context": f"{base}/$metadata#{entity_set}"}
        if options.count:
            payload["@odata.count"] = result.total
        payload["value"] = result.rows
        if result.remaining_after > 0:
            payload["@odata.nextLink"] = next_link(request, options, len(result.rows))
        return _json(payload, V4_MEDIA_TYPE)


# --------------------------------------------------------------------------- runner


class CbsStandin:
    """Handle on a running CBS stand-in: ``url`` (server root), ``faults``, ``set_as_of``, ``stop``.

    v3 tables live at ``{url}/ODataFeed/odata/{table}`` and ``{url}/ODataApi/odata/{table}``,
    v4 datasets at ``{url}/CBS/{table}``.
    """

    def __init__(self, world: WorldLike, *, as_of: date | None = None, host: str = "127.0.0.1", port: int = 0,
                 years: Iterable[int] | None = None, schedule: Callable[[int], Sequence[Release]] = default_schedule,
                 settings: CbsSettings | None = None) -> None:
        source = world if isinstance(world, WorldSource) else WorldSource(world)
        self.state = RegistryState(name="cbs", world=source, api_keys=frozenset())
        if as_of is not None:
            self.state.set_as_of(as_of)
        self.kerncijfers = DemoKerncijfers(source.at, years=years, schedule=schedule)
        self.settings = settings or CbsSettings()
        self.app = create_cbs_app(self.state, self.kerncijfers, self.settings)
        self.host = host
        self._server = ThreadedUvicorn(self.app, host, port, name="cbs")
        self.port: int | None = None

    def start(self) -> "CbsStandin":
        """Start serving on a background thread; returns once connections are accepted."""
        if self.port is None:
            self.port = self._server.start()
        return self

    @property
    def url(self) -> str:
        """Server root, e.g. ``http://127.0.0.1:50123`` (no trailing slash)."""
        if self.port is None:
            raise RuntimeError("CBS stand-in is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def faults(self) -> FaultInjector:
        """Fault injector: ``fail_next(n, status, retry_after_seconds)``, ``delay_next(n, seconds)``."""
        return self.state.faults

    @property
    def as_of(self) -> date:
        return self.state.as_of

    def set_as_of(self, as_of: date) -> None:
        """Serve the releases published on or before ``as_of`` from now on."""
        self.state.set_as_of(as_of)

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        if self.port is not None:
            self._server.stop()
            self.port = None

    def __enter__(self) -> "CbsStandin":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def start_cbs_standin(world: WorldLike, as_of: date | None = None, **kwargs: Any) -> CbsStandin:
    """Start a CBS stand-in for ``world`` on 127.0.0.1 (ephemeral port unless ``port`` is given).

    Keyword arguments: ``host``, ``port``, ``years``, ``schedule`` and ``settings``
    (:class:`CbsSettings`: ``feed_page_size``, ``api_cell_limit``, ``v4_page_size``).
    """
    return CbsStandin(world, as_of=as_of, **kwargs).start()
