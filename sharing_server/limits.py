"""Bounds on everything a client sends: numbers, JSON, page tokens, body size.

Hostile input must get a 4xx, never a 500 or a hang. Python's own parsers are generous
(``int()`` takes ``" 1_0 "``, ``json.loads`` takes ``Infinity`` and recurses until the
interpreter gives up), so the server parses client values through these functions only.
Each raises :class:`InputError`; the app turns it into a Delta Sharing error body.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from array import array
from itertools import accumulate

#: Delta versions and the protocol's ``Long`` fields are signed 64-bit integers.
MAX_LONG = 2**63 - 1
#: Largest request body the server reads (a query body is a few KiB at most).
MAX_BODY_BYTES = 1024 * 1024
#: Deepest JSON accepted; a predicate of 64 nested ops (predicates.MAX_DEPTH) is about 130 deep.
MAX_JSON_DEPTH = 200
#: Longest page token accepted (the server's own are well under 100 characters).
MAX_PAGE_TOKEN_CHARS = 512

_DIGITS = re.compile(r"[0-9]{1,19}")
# A JSON string literal, written so the regex engine never backtracks.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# Opening brackets count +1, closing ones -1 (signed bytes, summed in C by accumulate()).
_BRACKET_STEP = str.maketrans({"[": "\x01", "{": "\x01", "]": "\xff", "}": "\xff"})


class InputError(ValueError):
    """A client value outside what the server accepts; ``code`` is the Delta Sharing error code."""

    def __init__(self, message: str, code: str = "INVALID_PARAMETER_VALUE", status: int = 400):
        super().__init__(message)
        self.code = code
        self.status = status


def parse_long(raw: str | None, name: str, maximum: int = MAX_LONG) -> int | None:
    """A non-negative integer query parameter (plain digits, at most ``maximum``); None if absent."""
    if raw is None:
        return None
    if not _DIGITS.fullmatch(raw) or int(raw) > maximum:
        raise InputError(f"{name} must be a non-negative integer of at most {maximum}")
    return int(raw)


def check_long(value: object, name: str) -> int | None:
    """A non-negative 64-bit integer from a JSON body (not a bool or float); None if absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LONG:
        raise InputError(f"{name} must be a non-negative integer of at most {MAX_LONG}")
    return value


def json_depth(text: str | bytes) -> int:
    """Deepest nesting of arrays/objects in JSON ``text``, counted without parsing it."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    skeleton = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if not skeleton:
        return 0
    steps = array("b", skeleton.translate(_BRACKET_STEP).encode("latin-1"))
    return max(0, max(accumulate(steps)))


def loads_bounded(text: str | bytes, what: str, code: str = "MALFORMED_REQUEST") -> object:
    """``json.loads`` for client JSON: too deep, non-finite numbers or invalid JSON are an :class:`InputError`."""
    if json_depth(text) > MAX_JSON_DEPTH:
        raise InputError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels", code)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InputError(f"{what} is not valid JSON", code) from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def encode_page_token(offset: int, listing: str) -> str:
    """An opaque page token for ``offset`` in the listing named ``listing``."""
    token = json.dumps({"o": offset, "l": listing}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(token).rstrip(b"=").decode()


def decode_page_token(token: str, listing: str, total: int) -> int:
    """The offset of a page token issued for ``listing`` (at most ``total``), else :class:`InputError`."""
    invalid = InputError("pageToken is not valid for this listing")
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        raise invalid
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)), parse_constant=_reject_constant)
    except (ValueError, binascii.Error, RecursionError):
        raise invalid from None
    offset = raw.get("o") if isinstance(raw, dict) else None
    # type() rather than isinstance(): True is an int too, and floats (1e308) are not offsets.
    if type(offset) is not int or not 0 <= offset <= total or raw.get("l") != listing:
        raise invalid
    return offset
