"""SQL source connector: read-only, incremental extraction from an application's own database.

Many departmental applications (Suite4 Sociaal Domein, zaaksystemen, financial systems) keep
their data in a database the municipality may read. :class:`SqlConnector` reads configured
tables or queries through SQLAlchemy Core and lands them as JSON parts ``{"records": [...]}``
(``record_path`` ``records``), one part per ``batch_size`` rows, one batch per dataset per
logical date. The bronze table is ``<source>_<dataset>`` (``sql_<dataset>`` for the generic
connector, ``suite4_<dataset>`` for the Suite4 one).

Configuration (JSON; from a dict or an Airflow connection, see :func:`url_from_connection`)::

    url: postgresql+psycopg://reader@db.gemeente.local:5432/suite4   # SQLAlchemy URL, password apart
    password: ...                       # secret (Airflow connection password)
    source_timezone: Europe/Amsterdam   # zone of the source's naive timestamps
    tables:
      aanvragen:                        # dataset → bronze table <source>_aanvragen
        table: wmo_aanvraag             # or  query: "SELECT ... FROM ... JOIN ..."
        schema: sociaal                 # optional, with table
        key: [id]                       # identifying columns (default: the table's primary key)
        incremental: {column: gewijzigd_op}   # or {key: id}; absent = full snapshot every day
        batch_size: 5000

Incremental extraction and its watermark
----------------------------------------
The watermark of a dataset is kept in the manifest (``extra.watermark``) of its newest complete
batch of an *earlier* logical date, so it is exactly as durable as the landing zone and needs no
separate state store:

* ``incremental.column`` (modification timestamp): rows with ``previous upper <= column <
  upper``, where ``upper`` is the end of the logical day (the window end, in ``source_timezone``);
  the first run has no lower bound. The window depends only on the landing zone before the
  logical date, so re-running a date asks the same question and (while the rows did not change
  again) lands byte-identical parts. A window that ends in the future is cut at "now" and the cut
  is recorded, so the next day continues from there and nothing is skipped.
* ``incremental.key`` (increasing key, for append-only tables): rows with ``previous upper <
  key <= upper``, ``upper`` being the largest key at the first extraction of the logical date; a
  re-run of the date reuses the recorded ``upper``, so it reads the same key range.
* no ``incremental``: the whole table or query, every day (``load: snapshot`` in silver).

Hard deletes are invisible to a modification column; sources that delete rows need a full
snapshot dataset (or a soft-delete status column) next to the incremental one.

Read-only and bounded memory
----------------------------
Every session is read-only on the database side: PostgreSQL and Oracle start each transaction
with ``SET TRANSACTION READ ONLY`` (PostgreSQL also sets ``default_transaction_read_only``),
SQLite is opened with ``mode=ro`` (whatever the URL asks) and ``PRAGMA query_only``. Dialects on
which the connector applies no such guarantee (SQL Server, MySQL, ...) are refused at
configuration time (:data:`READ_ONLY_BACKENDS`). Production accounts must be read-only as well
(docs/sql-sources.md). The connector issues only
SELECT statements, in one transaction per dataset (REPEATABLE READ on PostgreSQL, so the key
maximum and the rows are one snapshot). Rows are streamed with a server-side cursor
(``yield_per``), so memory holds one batch at a time.

Values are made JSON-safe deterministically: ``Decimal`` → string (no float rounding), ``datetime``
→ ISO 8601 (aware values in UTC), ``date``/``time`` → ISO 8601, bytes → base64, UUID → string.

Errors: unreachable server → :class:`~connectors.errors.SourceUnavailableError`, refused login
→ :class:`SqlAuthError` (a :class:`~connectors.errors.SourceAuthError`), timeout →
:class:`~connectors.errors.SourceTimeoutError`, a wrong table, column or query →
:class:`~connectors.errors.SourceConfigError`. Messages name the server and database, never the
password.
"""
from __future__ import annotations

import base64
import json
import logging
import math
import re
import uuid
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connectors.base import Connector, ExtractWindow
from connectors.errors import (
    SourceAuthError,
    SourceConfigError,
    SourceDataError,
    SourceRequestError,
    SourceTimeoutError,
    SourceUnavailableError,
)
from ggm_lakehouse.landing import BatchResult, BatchWriter, find_complete_batches, load_batch

log = logging.getLogger(__name__)

RECORD_PATH = "records"
DEFAULT_BATCH_SIZE = 5000
WATERMARK_VERSION = 1

# Airflow connection types → SQLAlchemy dialect+driver. ``extra.sqlalchemy_scheme`` overrides
# (e.g. ``mssql+pymssql``). SqlConnector refuses the dialects outside READ_ONLY_BACKENDS with a
# message that says why; their URLs are still built so that the refusal is that clear message.
SCHEME_BY_CONN_TYPE: dict[str, str] = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "oracle": "oracle+oracledb",
    "mssql": "mssql+pyodbc",
    "mysql": "mysql+pymysql",
    "sqlite": "sqlite",
}
DEFAULT_MSSQL_ODBC_DRIVER = "ODBC Driver 18 for SQL Server"
# The dialects whose sessions the connector makes read-only on the database side (see _session);
# any other is refused, because a read-only account would then be the only guard.
READ_ONLY_BACKENDS = ("postgresql", "oracle", "sqlite")

_DATASET_NAME = r"^[a-z][a-z0-9_]*$"
_TABLE_SPEC: dict[str, Any] = {
    "type": "object",
    "properties": {
        "table": {"type": "string", "minLength": 1},
        "schema": {"type": "string", "minLength": 1},
        "query": {"type": "string", "minLength": 1, "description": "A single SELECT (or WITH ... SELECT)."},
        "key": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
        "incremental": {
            "type": "object",
            "properties": {"column": {"type": "string", "minLength": 1}, "key": {"type": "string", "minLength": 1}},
            "additionalProperties": False,
            "minProperties": 1,
            "maxProperties": 1,
        },
        "batch_size": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
    },
    "oneOf": [{"required": ["table"], "not": {"required": ["query"]}},
              {"required": ["query", "key"], "not": {"anyOf": [{"required": ["table"]}, {"required": ["schema"]}]}}],
    "additionalProperties": False,
}
SQL_CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "url": {"type": "string", "minLength": 1, "description": "SQLAlchemy URL; the password may be given apart."},
        "password": {"type": "string", "minLength": 1, "description": "Database password (secret)."},
        "tables": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": _DATASET_NAME},
            "additionalProperties": _TABLE_SPEC,
        },
        "source_timezone": {"type": "string", "minLength": 1, "default": "Europe/Amsterdam",
                            "description": "Time zone of the source's timestamps without zone."},
        "batch_size": {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": DEFAULT_BATCH_SIZE},
        "connect_timeout": {"type": "integer", "minimum": 1, "default": 15},
        "connect_args": {"type": "object", "description": "Extra DBAPI connect() arguments (driver-specific)."},
    },
    "required": ["url", "tables"],
    "additionalProperties": False,
}


class SqlAuthError(SourceAuthError):
    """The database refused the login (wrong user or password, account locked). Never retried."""

    def __init__(self, source: str, url: str, detail: str) -> None:
        # SourceAuthError is shaped for HTTP; a database login has no status code.
        self.status = None
        self.detail = detail
        self.problem = None
        self.retry_after = None
        SourceRequestError.__init__(self, source, "CONNECT", url, f"because the database refused the login ({detail})")


# ---------------------------------------------------------------------------- URLs and connections


def url_from_connection(
    conn_type: str | None,
    host: str | None,
    port: int | None,
    schema: str | None,
    login: str | None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The SQLAlchemy URL (without password) for the fields of an Airflow connection.

    * ``postgres`` → ``postgresql+psycopg://login@host:port/schema`` (``schema`` is the database);
    * ``oracle`` → ``oracle+oracledb://login@host:port/`` with ``?service_name=`` from the extra
      ``service_name`` (or ``schema`` as the service name);
    * ``mssql`` → ``mssql+pyodbc://login@host:port/schema?driver=ODBC Driver 18 for SQL Server``
      (``extra.driver`` overrides the ODBC driver, ``extra.sqlalchemy_scheme`` the dialect, e.g.
      ``mssql+pymssql``); :class:`SqlConnector` refuses it (no read-only session guarantee);
    * ``sqlite`` → ``sqlite:///<host>`` (the file path);
    * a ``host`` that is itself a URL (``postgresql+psycopg://...``) is taken as is.

    Extra keys not known to the connector become URL query parameters (``sslmode``,
    ``ApplicationIntent``, ``TrustServerCertificate`` ...).
    """
    from sqlalchemy.engine import URL, make_url

    extra = dict(extra or {})
    query = {k: str(v) for k, v in extra.items() if k not in SQL_CONFIG_SCHEMA["properties"] and k != "sqlalchemy_scheme"}
    if host and "://" in host:
        # The password travels apart (the connection's password field), never inside the URL.
        url = make_url(host)._replace(password=None)
        return url.update_query_dict(query).render_as_string() if query else url.render_as_string()
    kind = (conn_type or "").lower()
    scheme = extra.get("sqlalchemy_scheme") or SCHEME_BY_CONN_TYPE.get(kind)
    if not scheme:
        raise SourceConfigError("sql", f"unsupported Airflow connection type {conn_type!r}; "
                                       f"use one of {sorted(SCHEME_BY_CONN_TYPE)} or set extra.sqlalchemy_scheme")
    if scheme.startswith("sqlite"):
        if not host:
            raise SourceConfigError("sql", "a sqlite connection needs the database file path in host")
        return str(URL.create(scheme, database=host))
    database = schema or None
    if scheme.startswith("oracle"):
        if "service_name" not in query and schema:
            query["service_name"] = schema
        database = None
    if scheme == "mssql+pyodbc":
        query.setdefault("driver", DEFAULT_MSSQL_ODBC_DRIVER)
    url = URL.create(scheme, username=login or None, host=host or None, port=port or None, database=database,
                     query=query)
    return url.render_as_string(hide_password=True)


def safe_url(url: str) -> str:
    """``url`` with the password masked (for logs, errors and manifests)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported without its content
        return "<unparsable database URL>"


# ---------------------------------------------------------------------------- values


def json_value(value: Any) -> Any:
    """A deterministic JSON-safe form of one database value (see the module docstring)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        # NaN/Infinity are not JSON; keep them readable rather than dropping them.
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return str(value)


def _encode_bound(value: Any) -> dict[str, Any] | None:
    """A watermark value as typed JSON, so the next run binds the same Python type again."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise SourceDataError("sql", "a boolean column cannot be a watermark")
    if isinstance(value, int):
        return {"type": "int", "value": value}
    if isinstance(value, Decimal):
        return {"type": "decimal", "value": str(value)}
    if isinstance(value, datetime):
        return {"type": "datetime", "value": value.isoformat()}
    if isinstance(value, date):
        return {"type": "date", "value": value.isoformat()}
    return {"type": "str", "value": str(value)}


def _decode_bound(encoded: Mapping[str, Any] | None) -> Any:
    if not encoded:
        return None
    kind, value = encoded["type"], encoded["value"]
    if kind == "int":
        return int(value)
    if kind == "decimal":
        return Decimal(value)
    if kind == "datetime":
        return datetime.fromisoformat(value)
    if kind == "date":
        return date.fromisoformat(value)
    return str(value)


# ---------------------------------------------------------------------------- connector


class SqlConnector(Connector):
    """Reads configured tables/queries of a relational database, read-only and incrementally.

    See the module docstring for the configuration, the watermark rules and the errors.
    """

    name: ClassVar[str] = "sql"
    config_schema: ClassVar[dict[str, Any]] = SQL_CONFIG_SCHEMA
    secrets: ClassVar[tuple[str, ...]] = ("password",)

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self._check_config()

    # -- configuration

    @classmethod
    def secret_keys(cls) -> frozenset[str]:
        """The password is a secret for every SQL source, also for subclasses that need none by default."""
        return super().secret_keys() | {"password"}

    def public_config(self) -> dict[str, Any]:
        """The configuration with the password masked, also inside ``url``."""
        public = super().public_config()
        public["url"] = safe_url(self.config["url"])
        return public

    def _check_config(self) -> None:
        try:
            ZoneInfo(self.config["source_timezone"])
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SourceConfigError(self.name, f"source_timezone {self.config['source_timezone']!r} is not a time zone") from exc
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(self.config["url"]).get_backend_name()
        except ArgumentError as exc:
            raise SourceConfigError(self.name, f"url is not a SQLAlchemy URL: {safe_url(self.config['url'])}") from exc
        if backend not in READ_ONLY_BACKENDS:
            raise SourceConfigError(self.name, _unsupported_backend_message(backend))
        for dataset, spec in self.config["tables"].items():
            query = spec.get("query")
            if query is not None:
                body = query.strip().rstrip(";").strip()
                # One read statement only: the read-only session is the real guard, this is the early, clear message.
                if not re.match(r"(?is)^(select|with)\b", body) or ";" in body:
                    raise SourceConfigError(self.name, f"tables.{dataset}.query must be one SELECT statement")

    @property
    def dataset_names(self) -> tuple[str, ...]:
        """The configured datasets, in configuration order."""
        return tuple(self.config["tables"])

    @classmethod
    def config_from_connection(cls, connection, auth: str | None = None) -> dict[str, Any]:
        """A database source's config from connection fields.

        ``conn_type``/``host``/``port``/``schema``/``login`` → ``url`` (:func:`url_from_connection`),
        ``password`` → ``password``; extra keys that are config keys of this connector
        (``tables``, ``source_timezone``, ``batch_size``, ...) → config, other extra keys → URL
        query parameters. Example as an Airflow connection (``AIRFLOW_CONN_GGM_SUITE4``)::

            {"conn_type": "postgres", "host": "suite4-db.gemeente.local", "port": 5432,
             "schema": "suite4", "login": "ggm_reader", "password": "...",
             "extra": {"sslmode": "verify-full", "source_timezone": "Europe/Amsterdam"}}
        """
        extra = connection.extra
        config: dict[str, Any] = {k: v for k, v in extra.items() if k in cls.config_schema["properties"]}
        config["url"] = url_from_connection(connection.conn_type, connection.host, connection.port,
                                            connection.schema, connection.login, extra)
        password = connection.password
        if not password and connection.host and "://" in connection.host:
            from sqlalchemy.engine import make_url

            password = make_url(connection.host).password
        if password:
            config["password"] = password
        return config

    # -- engine and sessions

    def _url(self):
        from sqlalchemy.engine import make_url

        url = make_url(self.config["url"])
        if self.config.get("password"):
            url = url.set(password=self.config["password"])
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if not database or database == ":memory:":
                return url  # a new, private, empty database: nothing to protect (query_only still applies)
            if database.startswith("file:"):
                # A URI may ask for mode=rw or rwc: it is opened read-only all the same.
                return url.update_query_dict({"mode": "ro", "uri": "true"})
            if not Path(database).is_file():
                raise SourceUnavailableError(self.name, "CONNECT", safe_url(self.config["url"]),
                                             "because the SQLite database file does not exist")
            # mode=ro: SQLite would otherwise create a missing file, and could write.
            url = url.set(database=f"file:{Path(database).resolve()}").update_query_dict({"mode": "ro", "uri": "true"})
        return url

    def _engine(self):
        from sqlalchemy import create_engine

        url = self._url()
        backend = url.get_backend_name()
        connect_args: dict[str, Any] = {}
        timeout = int(self.config["connect_timeout"])
        if backend == "postgresql":
            # Server-side guarantees: every transaction of this session is read-only, and naive
            # timestamps compare in the source's zone (timestamptz columns included).
            connect_args["connect_timeout"] = timeout
            connect_args["options"] = (f"-c default_transaction_read_only=on "
                                       f"-c TimeZone={self.config['source_timezone']}")
            connect_args["application_name"] = "ggm-lakehouse"
        elif backend == "sqlite":
            connect_args["timeout"] = timeout
        elif backend == "mssql" and url.get_driver_name() == "pyodbc":
            connect_args["timeout"] = timeout
        elif backend == "mssql" and url.get_driver_name() == "pymssql":
            connect_args["login_timeout"] = timeout
        elif backend == "oracle":
            connect_args["tcp_connect_timeout"] = timeout
        connect_args.update(self.config.get("connect_args") or {})
        engine = create_engine(url, connect_args=connect_args, poolclass=_null_pool())
        if backend == "sqlite":
            from sqlalchemy import event

            # Per connection, whatever connect_args say: no statement may change any attached database.
            event.listen(engine, "connect", _sqlite_query_only)
        return engine

    @contextmanager
    def _session(self) -> Iterator[Any]:
        """One read-only connection with one transaction; errors become typed source errors."""
        engine = self._engine()
        backend = engine.dialect.name
        try:
            with self._translate_errors("CONNECT"):
                connection = engine.connect()
            try:
                if backend == "postgresql":
                    connection = connection.execution_options(isolation_level="REPEATABLE READ")
                with connection.begin():
                    if backend in ("oracle", "postgresql"):
                        from sqlalchemy import text

                        # The first statement of the transaction, so neither connect_args (a session
                        # default) nor a later statement of the query can make it read-write again.
                        connection.execute(text("SET TRANSACTION READ ONLY"))
                    yield connection
            finally:
                connection.close()
        finally:
            engine.dispose()

    @contextmanager
    def _translate_errors(self, action: str) -> Iterator[None]:
        from sqlalchemy import exc as sa_exc

        where = safe_url(self.config["url"])
        try:
            yield
        except sa_exc.DBAPIError as error:
            raise self._classify(error, action, where) from None
        except sa_exc.SQLAlchemyError as error:
            raise SourceConfigError(self.name, f"{action} on {where}: {self._scrub(str(error))}") from None

    def _scrub(self, message: str) -> str:
        """Drop a password a driver might echo, and the SQLAlchemy background link."""
        message = message.split("\n(Background on this error", 1)[0].strip()
        password = self.config.get("password")
        try:
            from sqlalchemy.engine import make_url

            password = password or make_url(self.config["url"]).password
        except Exception:  # noqa: BLE001
            pass
        if password:
            message = message.replace(str(password), "***")
        return message

    def _classify(self, error: Exception, action: str, where: str) -> Exception:
        from sqlalchemy import exc as sa_exc

        original = getattr(error, "orig", None)
        detail = self._scrub(str(original) if original is not None else str(error))
        first_line = " ".join(detail.split())[:500]
        sqlstate = getattr(original, "sqlstate", None) or getattr(getattr(original, "diag", None), "sqlstate", None)
        lowered = detail.lower()
        if (sqlstate in ("28P01", "28000")
                or any(s in lowered for s in ("password authentication failed", "authentication failed",
                                              "ora-01017", "login failed for user", "access denied for user"))):
            return SqlAuthError(self.name, where, first_line)
        if "timeout" in lowered or "timed out" in lowered or sqlstate == "57014":
            return SourceTimeoutError(self.name, action, where, f"with timeout ({first_line})")
        if action == "CONNECT" or isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError)) and (
                sqlstate is None or str(sqlstate).startswith("08")):
            return SourceUnavailableError(self.name, action, where, f"because the database is unreachable ({first_line})")
        if isinstance(error, sa_exc.ProgrammingError) or (sqlstate and str(sqlstate)[:2] in ("42", "3F")):
            return SourceConfigError(self.name, f"{action} on {where} failed; check the table, column and query "
                                                f"configuration: {first_line}")
        return SourceDataError(self.name, f"{action} on {where} failed: {first_line}")

    # -- extraction

    def extract(self, window: ExtractWindow, landing_root: Path) -> list[BatchResult]:
        """Land one batch per configured dataset for ``window`` (see the module docstring)."""
        results = []
        with self._session() as connection:
            for dataset, spec in self.config["tables"].items():
                results.append(self._extract_dataset(connection, dataset, spec, window, Path(landing_root)))
        return results

    def _extract_dataset(self, connection, dataset: str, spec: Mapping[str, Any], window: ExtractWindow,
                         landing_root: Path) -> BatchResult:
        from sqlalchemy import and_, literal_column, select, table, text

        if "table" in spec:
            source = table(spec["table"], schema=spec.get("schema"))
            described = f"{spec['schema']}.{spec['table']}" if spec.get("schema") else spec["table"]
        else:
            source = text(spec["query"].strip().rstrip(";")).columns().subquery("src")
            described = "query"
        key_columns = list(spec.get("key") or self._primary_key(connection, spec, dataset))
        watermark, conditions, params, order = self._incremental_range(
            connection, dataset, spec, window, landing_root, source, described, key_columns)

        statement = select(literal_column("*")).select_from(source)
        if conditions:
            statement = statement.where(and_(*conditions))
        statement = statement.order_by(*order)
        batch_size = int(spec.get("batch_size") or self.config["batch_size"])
        request = {"method": "SELECT", "url": safe_url(self.config["url"]),
                   "params": {"dataset": dataset, "from": described, **params, "mode": watermark["mode"]},
                   # The statement as the database received it (bound values in params), for the audit trail.
                   "body": str(statement.compile(connection, compile_kwargs={"literal_binds": False}))}
        extra = {"watermark": watermark, "key": key_columns, "source_timezone": self.config["source_timezone"]}

        with BatchWriter(landing_root, self.name, dataset, window, endpoint=f"SELECT {described}",
                         record_path=RECORD_PATH, extra=extra) as batch:
            rows_read = 0
            with self._translate_errors(f"SELECT {described}"):
                result = connection.execute(statement, execution_options={"yield_per": batch_size})
                names = list(result.keys())
                for number, rows in enumerate(result.partitions(batch_size), start=1):
                    records = [{n: json_value(v) for n, v in zip(names, row)} for row in rows]
                    rows_read += len(records)
                    batch.add_part(self._part(records), request={**request, "params": {**request["params"], "part": number}},
                                   status=None)
            if rows_read == 0:
                # An empty part documents the question asked; bronze lands no rows from it.
                batch.add_part(self._part([]), request={**request, "params": {**request["params"], "part": 1}}, status=None)
        log.info("%s/%s: %d rows (%s) into %s", self.name, dataset, rows_read, watermark["mode"], batch.path)
        return batch.completed()

    def _incremental_range(self, connection, dataset: str, spec: Mapping[str, Any], window: ExtractWindow,
                           landing_root: Path, source, described: str,
                           key_columns: list[str]) -> tuple[dict[str, Any], list, dict[str, Any], list]:
        """What this run reads of ``dataset``: (watermark, WHERE conditions, bound params, ORDER BY columns).

        ``incremental.column`` reads from the previous batch's upper bound to the end of the logical day;
        ``incremental.key`` from the previous upper key to today's maximum (a re-run of a date keeps the
        range its first attempt fixed); without either, the whole table is read in key order.
        """
        from sqlalchemy import bindparam, column, func, literal_column, select

        backend = connection.dialect.name
        incremental = spec.get("incremental") or {}
        previous = self._previous_watermark(landing_root, dataset, window)
        if previous and (previous.get("mode"), previous.get("column")) != (
                "column" if "column" in incremental else "key", incremental.get("column") or incremental.get("key")):
            # The incremental column was reconfigured: the old watermark means nothing for the new one.
            log.warning("%s/%s: incremental setting changed since the previous batch (%s); reading from the start",
                        self.name, dataset, previous)
            previous = None
        watermark: dict[str, Any] = {"version": WATERMARK_VERSION}
        conditions = []
        params: dict[str, Any] = {}

        if "column" in incremental:
            name = incremental["column"]
            lower = _decode_bound(previous.get("upper")) if previous else None
            upper = self._day_end(window)
            watermark.update(mode="column", column=name, lower=_encode_bound(lower), upper=_encode_bound(upper))
            if lower is not None:
                conditions.append(column(name) >= bindparam("lower", self._bind(lower, backend)))
            conditions.append(column(name) < bindparam("upper", self._bind(upper, backend)))
            order = [column(name), *[column(k) for k in key_columns]]
            params.update(lower=json_value(lower), upper=json_value(upper))
        elif "key" in incremental:
            name = incremental["key"]
            lower = _decode_bound(previous.get("upper")) if previous else None
            same_day = self._same_day_watermark(landing_root, dataset, window)
            if same_day is not None:
                # A re-run reads the key range the first attempt of this date fixed.
                upper = _decode_bound(same_day.get("upper"))
            else:
                with self._translate_errors(f"SELECT max({name}) FROM {described}"):
                    upper = connection.execute(select(func.max(column(name))).select_from(source)).scalar()
                if upper is None:  # empty table: nothing to read, keep the old watermark
                    upper = lower
            watermark.update(mode="key", column=name, lower=_encode_bound(lower), upper=_encode_bound(upper))
            if lower is not None:
                conditions.append(column(name) > bindparam("lower", lower))
            conditions.append(column(name) <= bindparam("upper", upper) if upper is not None else literal_column("1") == 0)
            order = [column(name), *[column(k) for k in key_columns if k != name]]
            params.update(lower=json_value(lower), upper=json_value(upper))
        else:
            watermark.update(mode="full")
            order = [column(k) for k in key_columns]
        return watermark, conditions, params, order

    @staticmethod
    def _part(records: list[dict[str, Any]]) -> bytes:
        return json.dumps({RECORD_PATH: records}, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")

    def _primary_key(self, connection, spec: Mapping[str, Any], dataset: str) -> list[str]:
        from sqlalchemy import inspect

        with self._translate_errors(f"reflect primary key of {spec['table']}"):
            pk = inspect(connection).get_pk_constraint(spec["table"], schema=spec.get("schema"))
        columns = list(pk.get("constrained_columns") or [])
        if not columns:
            raise SourceConfigError(self.name, f"tables.{dataset}: table {spec['table']!r} has no primary key; "
                                               "configure 'key' (the columns that identify a row)")
        return columns

    def _day_end(self, window: ExtractWindow) -> datetime:
        """The window end as a naive timestamp in the source's zone, cut at now for a day not yet over."""
        end = min(window.end, datetime.now(timezone.utc))
        if end < window.end:
            log.warning("%s: window of %s ends in the future; reading up to now (%s) and continuing from there",
                        self.name, window.logical_date, end.isoformat())
        return end.astimezone(ZoneInfo(self.config["source_timezone"])).replace(tzinfo=None)

    @staticmethod
    def _bind(value: Any, backend: str) -> Any:
        # SQLite stores timestamps as text 'YYYY-MM-DD HH:MM:SS[.ffffff]'; compare in that form.
        if backend == "sqlite" and isinstance(value, datetime):
            return value.isoformat(sep=" ")
        return value

    def _previous_watermark(self, landing_root: Path, dataset: str, window: ExtractWindow) -> dict[str, Any] | None:
        """The watermark of the newest complete batch of an earlier logical date, or None (first run)."""
        batches = [load_batch(p) for p in find_complete_batches(landing_root, self.name, dataset)]
        for batch in reversed(batches):
            if batch.logical_date >= window.logical_date:
                continue
            watermark = (batch.manifest.get("extra") or {}).get("watermark")
            if watermark and watermark.get("mode") != "full":
                return watermark
        return None

    def _same_day_watermark(self, landing_root: Path, dataset: str, window: ExtractWindow) -> dict[str, Any] | None:
        batches = find_complete_batches(landing_root, self.name, dataset, window.logical_date)
        for path in reversed(batches):
            watermark = (load_batch(path).manifest.get("extra") or {}).get("watermark")
            if watermark and watermark.get("mode") == "key":
                return watermark
        return None


def _unsupported_backend_message(backend: str) -> str:
    """Why a dialect is refused, and what to do instead."""
    why = ""
    if backend == "mssql":
        why = " (ApplicationIntent=ReadOnly only routes to a secondary; it does not forbid writes)"
    return (f"database dialect {backend!r} is refused: the connector only reads databases whose sessions it "
            f"can make read-only on the database side ({', '.join(READ_ONLY_BACKENDS)}), and applies no such "
            f"guarantee for {backend}{why}. What to do: read the data from a PostgreSQL or Oracle copy (a reporting "
            "replica), or have the application export files into a drop zone with a data contract (docs/dropzones.md).")


def _sqlite_query_only(dbapi_connection, _record) -> None:
    """SQLite ``connect`` hook: ``PRAGMA query_only`` refuses every change, also to attached databases."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA query_only = ON")
    finally:
        cursor.close()


def _null_pool():
    from sqlalchemy.pool import NullPool

    # One extraction opens one connection; no pool keeps a session to the source open afterwards.
    return NullPool


# ---------------------------------------------------------------------------- Suite4 Sociaal Domein

SUITE4_DEMO_DATABASE = Path("suite4") / "suite4_sociaal_domein.sqlite"


def suite4_demo_database_path() -> Path:
    """Where the demo Suite4 database lives: ``<data root>/suite4/suite4_sociaal_domein.sqlite``."""
    from ggm_lakehouse.config import data_root

    return data_root() / SUITE4_DEMO_DATABASE


class Suite4Connector(SqlConnector):
    """Suite4 Sociaal Domein (Centric): Wmo and Jeugdwet aanvragen from the application database.

    The tables are those of the municipality's reporting view of Suite4; the demo municipality
    writes the same shape into SQLite (``demo_gemeente.suite4``). Without configuration (no
    Airflow connection ``ggm_suite4``) the connector reads the demo database, so the embedded
    ``make run`` works out of the box; production points ``url`` at the real database.
    """

    name: ClassVar[str] = "suite4"
    # The embedded default needs no credential; production passwords come from the connection.
    secrets: ClassVar[tuple[str, ...]] = ()
    datasets: ClassVar[tuple[str, ...]] = ("aanvragen",)
    DEFAULT_TABLES: ClassVar[dict[str, Any]] = {
        "aanvragen": {"table": "wmo_aanvraag", "key": ["id"], "incremental": {"column": "gewijzigd_op"}},
    }

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        resolved = dict(config or {})
        resolved.setdefault("tables", self.DEFAULT_TABLES)
        resolved.setdefault("url", f"sqlite:///{suite4_demo_database_path()}")
        super().__init__(resolved)
