"""Typed extraction errors that always name the source and the failing request.

An operator reading an Airflow task log should see at a glance *which* registry
failed, *which* call, *how* (status or transport problem) and how often it was
tried, e.g.::

    brp: POST http://127.0.0.1:5010/haalcentraal/api/brp/personen failed with HTTP 503
    (Bronservice BRP is tijdelijk niet beschikbaar.) after 4 attempts

The hierarchy lets callers react per class: authentication problems need a new
key (never retried), client errors need a code fix (never retried), server,
rate-limit, timeout and unavailability problems are transient and were already
retried by :class:`connectors.http.HttpSource` before they surface.
"""
from __future__ import annotations

from typing import Any


class SourceError(RuntimeError):
    """Base class of every error raised while extracting from a source."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


class SourceConfigError(SourceError):
    """The connector configuration is invalid (schema violation, missing secret, bad path)."""


class SourceDataError(SourceError):
    """A source delivered something the connector cannot use (missing drop-zone file, unparsable body)."""


def _attempts_suffix(attempts: int) -> str:
    return f" after {attempts} attempt{'s' if attempts != 1 else ''}"


class SourceRequestError(SourceError):
    """A request to the source failed; carries method, URL and number of attempts."""

    def __init__(self, source: str, method: str, url: str, reason: str, attempts: int = 1) -> None:
        self.method = method
        self.url = url
        self.attempts = attempts
        self.reason = reason
        super().__init__(source, f"{method} {url} failed {reason}{_attempts_suffix(attempts)}")


class SourceHTTPError(SourceRequestError):
    """The source answered with an HTTP error status.

    ``detail`` is a short human-readable explanation taken from a problem+json
    body (``title``/``detail``) when the source sent one, else the start of the body.
    ``problem`` holds the decoded problem+json document (or ``None``).
    """

    def __init__(
        self,
        source: str,
        method: str,
        url: str,
        status: int,
        detail: str | None = None,
        *,
        attempts: int = 1,
        problem: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.detail = detail
        self.problem = problem
        self.retry_after = retry_after
        reason = f"with HTTP {status}" + (f" ({detail})" if detail else "")
        super().__init__(source, method, url, reason, attempts)


class SourceAuthError(SourceHTTPError):
    """401/403: the credentials are missing, wrong or not authorised. Never retried."""


class SourceClientError(SourceHTTPError):
    """Any other 4xx: the request itself is wrong. Never retried.

    ``invalid_params`` carries the per-parameter validation errors of the
    problem+json body: BRP names the member ``invalidParams``, BAG ``invalid-params``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        problem = self.problem or {}
        params = problem.get("invalidParams", problem.get("invalid-params")) or []
        self.invalid_params: list[dict[str, Any]] = [p for p in params if isinstance(p, dict)]
        if self.invalid_params:
            names = ", ".join(
                f"{p.get('name', '?')}: {p.get('code') or p.get('reason') or 'invalid'}" for p in self.invalid_params
            )
            self.args = (f"{self.args[0]} [invalid params: {names}]",)


class SourceRateLimitedError(SourceHTTPError):
    """429 Too Many Requests, still returned after every retry."""


class SourceServerError(SourceHTTPError):
    """5xx: the source failed, still failing after every retry."""


class SourceTimeoutError(SourceRequestError):
    """Connecting or reading timed out on every attempt."""


class SourceUnavailableError(SourceRequestError):
    """The source could not be reached at all (connection refused, DNS failure, reset)."""


def http_error_class(status: int) -> type[SourceHTTPError]:
    """The :class:`SourceHTTPError` subclass for an HTTP status code."""
    if status in (401, 403):
        return SourceAuthError
    if status == 429:
        return SourceRateLimitedError
    if 400 <= status < 500:
        return SourceClientError
    if status >= 500:
        return SourceServerError
    return SourceHTTPError
