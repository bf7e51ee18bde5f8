"""Connector base class, extraction window and the connector registry.

A connector (in the spirit of a Singer/Meltano tap) is a small class that declares

* ``name``: the source name, used in landing paths, manifests and bronze table names;
* ``config_schema``: a JSON Schema of its configuration, validated on construction;
* ``secrets``: the config keys that hold credentials (never logged, never landed);

and implements :meth:`Connector.extract`, which writes one landing batch per dataset
for an :class:`ExtractWindow`. Configuration comes from a plain dict (tests, CLI)
or from a stored connection's fields (:meth:`Connector.from_connection`; the app layer reads Airflow's).

HTTP connectors authenticate with an API key, OAuth2 client credentials or a
client certificate, chosen by the config key ``auth`` (see :mod:`connectors.auth`).
"""
from __future__ import annotations

import copy
import logging
import time as _time
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping
from urllib.parse import urlsplit, urlunsplit

import jsonschema

from connectors.auth import (
    AUTH_CONFIG_PROPERTIES,
    AUTH_SECRET_KEYS,
    ClientTls,
    auth_schema_rules,
    build_auth,
)
from connectors.errors import SourceConfigError
from connectors.http import MAX_IN_FLIGHT, HttpSource, RetryPolicy, RetryRecord
from ggm_lakehouse.landing import BatchResult

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
        secret_keys = cls.secret_keys()
        for error in sorted(validator.iter_errors(resolved), key=lambda e: list(e.absolute_path)):
            location = ".".join(str(p) for p in error.absolute_path) or "(config)"
            top = str(error.absolute_path[0]) if error.absolute_path else None
            if top in secret_keys:
                problems.append(f"{location}: invalid value (secret, not shown): {error.validator} violated")
            else:
                problems.append(f"{location}: {error.message}")
        if problems:
            raise SourceConfigError(cls.name or cls.__name__, "invalid configuration: " + "; ".join(problems))
        return resolved

    @classmethod
    def secret_keys(cls) -> frozenset[str]:
        """Config keys whose values are credentials: the class's ``secrets`` plus every auth secret.

        The auth secrets are always included so a connector that lists only
        ``api_key`` still masks an OAuth2 client secret or a private key.
        """
        return frozenset(cls.secrets) | frozenset(AUTH_SECRET_KEYS)

    def public_config(self) -> dict[str, Any]:
        """The configuration with secret values masked (safe for logs)."""
        secret_keys = self.secret_keys()
        return {k: ("***" if k in secret_keys and v else v) for k, v in self.config.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.public_config()!r})"

    @classmethod
    def from_connection(cls, connection: "ConnectionFields", **overrides: Any) -> "Connector":
        """Build the connector from a stored connection's fields (plus keyword overrides, which win).

        Where the fields come from (an Airflow connection, a secrets manager) is the caller's concern:
        ``ggm_lakehouse.pipeline.connector_from_connection`` reads Airflow's. Each connector says
        how fields become config in :meth:`config_from_connection`.
        """
        config = cls.config_from_connection(connection, overrides.get("auth"))
        config.update(overrides)
        return cls(config)

    @classmethod
    def config_from_connection(cls, connection: "ConnectionFields", auth: str | None = None) -> dict[str, Any]:
        """An HTTP source's config from connection fields.

        Mapping: ``host`` (may hold scheme, port and path) with ``port``/``schema``
        → ``base_url``; every key of the ``extra`` JSON → the config key of the
        same name; ``login``/``password`` depend on ``auth`` (an override) or the extra's ``auth``:

        * ``oauth2``: ``login`` → ``client_id``, ``password`` → ``client_secret``;
        * ``mtls`` and ``none``: not used (the certificate is the credential);
        * ``api_key`` or absent: ``password`` → ``api_key``.

        Examples as Airflow connections (``AIRFLOW_CONN_BRP_API``)::

            http://:proef-key@127.0.0.1:5010/haalcentraal%2Fapi%2Fbrp
            https://my-client:s3cret@brp.example.nl/haalcentraal%2Fapi%2Fbrp?auth=oauth2&token_url=https%3A%2F%2Fauth.example.nl%2Foauth2%2Ftoken&scope=brp.personen
            https://brp.example.nl/haalcentraal%2Fapi%2Fbrp?auth=mtls&client_cert=%2Fcerts%2Fclient.pem&client_key=%2Fcerts%2Fclient.key&ca_bundle=%2Fcerts%2Fpkio-private-root.pem
        """
        config: dict[str, Any] = dict(connection.extra)
        base_url = _base_url_from_connection(connection.conn_type, connection.host, connection.port, connection.schema)
        if base_url:
            config["base_url"] = base_url
        mode = auth or config.get("auth")
        if mode == "oauth2":
            if connection.login:
                config["client_id"] = connection.login
            if connection.password:
                config["client_secret"] = connection.password
        elif mode not in ("mtls", "none") and connection.password:
            config["api_key"] = connection.password
        return config

    # -- extraction

    def extract(self, window: ExtractWindow, landing_root: Path) -> list[BatchResult]:
        """Extract every dataset of this source for ``window``; one complete batch per dataset."""
        raise NotImplementedError


@dataclass(frozen=True)
class ConnectionFields:
    """The fields of a stored connection (Airflow's model, without Airflow): what a source's endpoint and secrets are.

    ``extra`` is the connection's JSON object of further settings.
    """

    conn_type: str | None = None
    host: str | None = None
    port: int | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


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
def parallel_requests_property(default: int, what: str = "Independent requests of one extract") -> dict[str, Any]:
    """Schema of ``max_parallel_requests``: ``what`` is sent at most this many at once (responses are landed in order)."""
    return {"type": "integer", "minimum": 1, "maximum": MAX_IN_FLIGHT, "default": default,
            "description": f"{what} in flight at once (responses are landed in order)."}


HTTP_CONFIG_PROPERTIES: dict[str, Any] = {
    "base_url": {"type": "string", "pattern": "^https?://", "description": "Root URL of the API (without the resource path)."},
    "api_key": {"type": "string", "minLength": 1, "description": "API key (secret)."},
    "connect_timeout": {"type": "number", "exclusiveMinimum": 0, "default": 5},
    "read_timeout": {"type": "number", "exclusiveMinimum": 0, "default": 60},
    "max_attempts": {"type": "integer", "minimum": 1, "maximum": 10, "default": 4},
    "backoff_base": {"type": "number", "minimum": 0, "default": 0.5},
    "backoff_max": {"type": "number", "minimum": 0, "default": 30},
    "max_retry_after": {"type": "number", "minimum": 0, "default": 120},
    "max_parallel_requests": parallel_requests_property(1),
    **AUTH_CONFIG_PROPERTIES,
}


class HttpConnector(Connector):
    """A connector that talks to one HTTP API with an API key, OAuth2 client credentials or mTLS.

    ``sleep`` replaces ``time.sleep`` for retry and rate-limit waits (tests pass a
    recorder); ``retry_log`` collects a :class:`~connectors.http.RetryRecord` for
    every retry of every :meth:`http` source of this connector.
    """

    secrets: ClassVar[tuple[str, ...]] = AUTH_SECRET_KEYS
    api_key_header: ClassVar[str] = "X-API-KEY"
    default_requests_per_second: ClassVar[float | None] = None

    def __init__(self, config: Mapping[str, Any] | None = None, *, sleep: Callable[[float], None] | None = None) -> None:
        super().__init__(config)
        self.sleep: Callable[[float], None] = sleep or _time.sleep
        self.retry_log: list[RetryRecord] = []

    def http(self, base_url: str | None = None, **config_overrides: Any) -> HttpSource:
        """A configured :class:`HttpSource` for this connector (close it when done).

        ``base_url`` and ``config_overrides`` serve a second API of the same source
        (e.g. the BRP Update API next to BRP Personen) with the same auth, TLS,
        retry policy, ``sleep`` and ``retry_log``; e.g.
        ``self.http(cfg["update_base_url"], api_key=cfg["update_api_key"])``.
        """
        cfg = {**self.config, **config_overrides}
        if base_url is not None:
            cfg["base_url"] = base_url
        tls = ClientTls.from_config(cfg, self.name)
        try:
            auth = build_auth(cfg, self.name, api_key_header=self.api_key_header, tls=tls)
            return HttpSource(
                self.name,
                cfg["base_url"],
                auth=auth,
                tls=tls,
                connect_timeout=float(cfg["connect_timeout"]),
                read_timeout=float(cfg["read_timeout"]),
                retry=RetryPolicy(
                    max_attempts=int(cfg["max_attempts"]),
                    backoff_base=float(cfg["backoff_base"]),
                    backoff_max=float(cfg["backoff_max"]),
                    max_retry_after=float(cfg["max_retry_after"]),
                ),
                requests_per_second=cfg.get("requests_per_second", self.default_requests_per_second),
                sleep=self.sleep,
                retry_log=self.retry_log,
                max_in_flight=int(cfg["max_parallel_requests"]),
            )
        except BaseException:
            if tls is not None:
                tls.close()
            raise


def http_config_schema(properties: Mapping[str, Any], required: list[str]) -> dict[str, Any]:
    """JSON Schema of an HTTP connector: the shared HTTP and auth keys plus ``properties``.

    Listing ``api_key`` in ``required`` means "this source always needs a
    credential": ``auth`` then defaults to ``api_key`` (and requires the key) but
    may be ``oauth2`` or ``mtls`` instead; ``none`` is refused.
    """
    credentials_required = "api_key" in required
    merged = {**HTTP_CONFIG_PROPERTIES, **properties}
    if credentials_required:
        merged["auth"] = {**merged["auth"], "enum": [m for m in merged["auth"]["enum"] if m != "none"]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": merged,
        "required": ["base_url", *[key for key in required if key != "api_key"]],
        "allOf": auth_schema_rules(credentials_required),
        "additionalProperties": False,
    }
