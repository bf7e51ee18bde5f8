"""Keep credentials out of every log line.

A signed file URL is a credential until it expires, and a bearer token until it is
revoked; uvicorn's access log writes the full request line, query string included.
:class:`RedactingFilter` rewrites a record's message *and* its arguments (uvicorn's
access formatter reads the request line from ``record.args``), and :func:`logging_config`
is the dictConfig the server runs with: the filter sits on every handler, so records of
any logger (the app's, uvicorn's, libraries') pass through it.
"""
from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[REDACTED]"

_PATTERNS = (
    # The signature of a file URL, in any query parameter spelling.
    (re.compile(r"((?:X-Databricks-Signature|signature|sig)=)[^&\s\"']+", re.IGNORECASE), r"\1" + REDACTED),
    # The signed claims ("<payload>" or "<payload>.<mac>") in the file URL path.
    (re.compile(r"(/files/)[A-Za-z0-9_\-.%]+"), r"\1" + REDACTED),
    # Bearer tokens in headers or messages.
    (re.compile(r"(Bearer\s+)[^\s\"',;]+", re.IGNORECASE), r"\1" + REDACTED),
    # A bare token "<16 hex id>.<secret>" wherever it appears.
    (re.compile(r"\b([0-9a-f]{16})\.[A-Za-z0-9_\-]{20,}"), r"\1." + REDACTED),
)


def redact(text: str) -> str:
    """``text`` with signatures, signed URL claims and bearer tokens replaced by ``[REDACTED]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactingFilter(logging.Filter):
    """A handler filter that redacts credentials in the message and its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_value(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_value(v) for k, v in record.args.items()}
        return True


def logging_config(level: str = "INFO") -> dict:
    """The logging dictConfig of the sharing server: uvicorn's formats, redaction on every handler."""
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "filters": ["redact"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactingFilter}},
        "formatters": {
            "default": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(asctime)s %(levelprefix)s %(name)s: %(message)s",
                "use_colors": False,
            },
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(asctime)s %(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
                "use_colors": False,
            },
        },
        "handlers": {
            "default": {**handler, "formatter": "default"},
            "access": {**handler, "formatter": "access"},
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"level": level, "propagate": True},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
        },
    }
