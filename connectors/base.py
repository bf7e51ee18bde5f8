"""Connector base class, extraction window and the connector registry.

A connector (in the spirit of a Singer/Meltano tap) is a small class that declares

* ``name``: the source name, used in landing paths, manifests and bronze table names;
* ``config_schema``: a JSON Schema of its configuration, validated on construction;
* ``secrets``: the config keys that hold credentials (never logged, never landed);

and implements :meth:`Connector.extract`, which writes one landing batch per dataset
for an :class:`ExtractWindow`. Configuration comes from a plain dict (tests, CLI)
or from an Airflow connection (:meth:`Connector.from_airflow_connection`).
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar, Mapping
from urllib.parse import urlsplit, urlunsplit

import jsonschema

from connectors.errors import SourceConfigError
from connectors.http import ApiKeyHeaderAuth, HttpSource, RetryPolicy
from connectors.landing import BatchResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractWindow:
    """What one extraction covers: the Airflow data interval of one logical date.

    Re-running a logical date (same ``logical_date``, ``start``, ``end``) asks the
    sources the same question, so its landed part bytes are the same as long as the
    source did not change. ``run_id`` separates attempts in the landing zone.
    """

    logical_date: date
    start: datetime
    end: datetime
    run_id: str

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("ExtractWindow start and end must be timezone-aware")
        if self.end < self.start:
            raise ValueError(f"ExtractWindow end {self.end} is before start {self.start}")
        if not self.run_id:
            raise ValueError("ExtractWindow run_id must not be empty")

    @classmethod
    def for_day(cls, logical_date: date, run_id: str | None = None) -> "ExtractWindow":
        """The UTC day ``[logical_date 00:00, +1 day)``; run id defaults to Airflow's scheduled form."""
        start = datetime.combine(logical_date, time.min, tzinfo=timezone.utc)
        run_id = run_id or f"scheduled__{start.isoformat()}"
        return cls(logical_date=logical_date, start=start, end=start + timedelta(days=1), run_id=run_id)

    @classmethod
    def from_airflow_context(cls, context: Mapping[str, Any]) -> "ExtractWindow":
        """Window of a running Airflow task (``data_interval_start/end``, ``logical_date``, ``run_id``).

        Airflow 3's default ``CronTriggerTimetable`` gives an empty interval
        (start == end == logical date) and manual runs may have no logical date; in
        those cases the window is the whole UTC day of the logical date (or of the
        interval start).
        """
        start = context.get("data_interval_start")
        end = context.get("data_interval_end")
        logical = context.get("logical_date") or start or end
        if logical is None:
            raise ValueError("Airflow context has neither logical_date nor a data interval")
        logical_date = logical.date() if isinstance(logical, datetime) else logical
        run_id = str(context["run_id"])
        if start is None or end is None or start >= end:
            return cls.for_day(logical_date, run_id)
        return cls(logical_date=logical_date, start=_aware(start), end=_aware(end), run_id=run_id)


def _aware(value: datetime) -> datetime:
    # pendulum DateTimes from Airflow are datetime subclasses; normalise to stdlib UTC.
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(value.timestamp(), tz=timezone.utc)


class Connector:
    """Base class of all connectors. Subclasses set the class attributes and implement :meth:`extract`."""

    name: ClassVar[str] = ""
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    secrets: ClassVar[tuple[str, ...]] = ()
    datasets: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config = self.validate_config(dict(config or {}))

    # -- configuration

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Apply top-level schema defaults and validate; raise :class:`SourceConfigError` on violations.

        Messages for secret keys never quote the offending value.
        """
        resolved = copy.deepcopy(config)
        for key, spec in cls.config_schema.get("properties", {}).items():
            if key not in resolved and isinstance(spec, dict) and "default" in spec:
                resolved[key] = copy.deepcopy(spec["default"])
        validator = jsonschema.Draft202012Validator(cls.config_schema)
        problems = []
        for error in sorted(validator.iter_errors(resolved), key=lambda e: list(e.absolute_path)):
            location = ".".join(str(p) for p in error.absolute_path) or "(config)"
            top = str(error.absolute_path[0]) if error.absolute_path else None
            if top in cls.secrets:
                problems.append(f"{location}: invalid value (secret, not shown): {error.validator} violated")
            else:
                problems.append(f"{location}: {error.message}")
        if problems:
            raise SourceConfigError(cls.name or cls.__name__, "invalid configuration: " + "; ".join(problems))
        return resolved

    def public_config(self) -> dict[str, Any]:
        """The configuration with secret values masked (safe for logs)."""
        return {k: ("***" if k in self.secrets and v else v) for k, v in self.config.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.public_config()!r})"

    @classmethod
    def from_airflow_connection(cls, conn_id: str, **overrides: Any) -> "Connector":
        """Build the connector from Airflow connection ``conn_id`` (plus keyword overrides).

        Mapping: ``host`` (may hold scheme, port and path) with ``port``/``schema``
        → ``base_url``; ``password`` → ``api_key``; every key of the ``extra`` JSON
        → the config key of the same name. Overrides win over the connection.
        """
        from airflow.sdk import Connection  # lazy: connectors also run outside Airflow

        conn = Connection.get(conn_id)
        config: dict[str, Any] = {}
        extra = conn.extra_dejson if conn.extra else {}
        if not isinstance(extra, dict):
            raise SourceConfigError(cls.name, f"extra of Airflow connection {conn_id!r} is not a JSON object")
        config.update(extra)
        base_url = _base_url_from_connection(conn.conn_type, conn.host, conn.port, conn.schema)
        if base_url:
            config["base_url"] = base_url
        if conn.password:
            config["api_key"] = conn.password
        config.update(overrides)
        return cls(config)

    # -- extraction

    def extract(self, window: ExtractWindow, landing_root: Path) -> list[BatchResult]:
        """Extract every dataset of this source for ``window``; one complete batch per dataset."""
        raise NotImplementedError


def _base_url_from_connection(conn_type: str | None, host: str | None, port: int | None, schema: str | None) -> str | None:
    """Reassemble a base URL from Airflow connection fields.

    Two styles are accepted: the whole URL in ``host`` (``http://bag:8080/lvbag/...``),
    or Airflow's URI decomposition (``conn_type`` http/https, ``host``, ``port``, path in ``schema``).
    """
    if not host:
        return None
    if "://" in host:
        parts = urlsplit(host)
        netloc = parts.netloc
        if port and ":" not in netloc.rsplit("@", 1)[-1]:
            netloc = f"{netloc}:{port}"
        path = parts.path or (f"/{schema.strip('/')}" if schema else "")
        return urlunsplit((parts.scheme, netloc, path, "", "")).rstrip("/")
    scheme = conn_type if conn_type in ("http", "https") else "https"
    netloc = f"{host}:{port}" if port else host
    path = f"/{schema.strip('/')}" if schema else ""
    return f"{scheme}://{netloc}{path}".rstrip("/")


# Config keys shared by every HTTP connector (merged into each connector's schema).
HTTP_CONFIG_PROPERTIES: dict[str, Any] = {
    "base_url": {"type": "string", "pattern": "^https?://", "description": "Root URL of the API (without the resource path)."},
    "api_key": {"type": "string", "minLength": 1, "description": "API key (secret)."},
    "connect_timeout": {"type": "number", "exclusiveMinimum": 0, "default": 5},
    "read_timeout": {"type": "number", "exclusiveMinimum": 0, "default": 60},
    "max_attempts": {"type": "integer", "minimum": 1, "maximum": 10, "default": 4},
    "backoff_base": {"type": "number", "minimum": 0, "default": 0.5},
    "backoff_max": {"type": "number", "minimum": 0, "default": 30},
    "max_retry_after": {"type": "number", "minimum": 0, "default": 120},
}


class HttpConnector(Connector):
    """A connector that talks to one HTTP API with an API key header."""

    secrets: ClassVar[tuple[str, ...]] = ("api_key",)
    api_key_header: ClassVar[str] = "X-API-KEY"
    default_requests_per_second: ClassVar[float | None] = None

    def http(self) -> HttpSource:
        """A configured :class:`HttpSource` for this connector (close it when done)."""
        cfg = self.config
        header = cfg.get("api_key_header", self.api_key_header)
        auth = ApiKeyHeaderAuth(header, cfg["api_key"]) if cfg.get("api_key") else None
        return HttpSource(
            self.name,
            cfg["base_url"],
            auth=auth,
            connect_timeout=float(cfg["connect_timeout"]),
            read_timeout=float(cfg["read_timeout"]),
            retry=RetryPolicy(
                max_attempts=int(cfg["max_attempts"]),
                backoff_base=float(cfg["backoff_base"]),
                backoff_max=float(cfg["backoff_max"]),
                max_retry_after=float(cfg["max_retry_after"]),
            ),
            requests_per_second=cfg.get("requests_per_second", self.default_requests_per_second),
        )


def http_config_schema(properties: Mapping[str, Any], required: list[str]) -> dict[str, Any]:
    """JSON Schema of an HTTP connector: the shared HTTP keys plus ``properties``."""
    merged = {**HTTP_CONFIG_PROPERTIES, **properties}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": merged,
        "required": ["base_url", *required],
        "additionalProperties": False,
    }


