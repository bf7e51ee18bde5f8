"""Partition and file (column statistics) pruning with the protocol's ``jsonPredicateHints`` (PROTOCOL.md "JSON predicates for Filtering").

Hints are best effort: the client re-applies the predicate to the rows it reads, so the
server may return too many files but never too few. Every doubt therefore resolves to
"keep the file": a malformed tree, an unknown op or value type, a column that is not a
partition column, or a value that does not parse.

Evaluation uses SQL three-valued logic over *sets* of possible outcomes. A partition
column has one known value per file, so a comparison on it gives one outcome (``True``,
``False`` or ``None`` for SQL NULL); anything the server cannot evaluate gives all three.
``and``/``or``/``not`` combine the sets pointwise, and a file is kept when ``True`` is
among the possible outcomes of the whole tree. A file whose partition value is NULL is
dropped by ``equal`` (NULL = x is not true), exactly as a SQL ``WHERE`` would drop its rows.

The legacy SQL ``predicateHints`` are ignored, as the reference server does by default.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from sharing_server import limits

log = logging.getLogger(__name__)

#: Guards against hostile trees: the reference server also bounds the predicate size.
MAX_HINT_CHARS = 256 * 1024
MAX_DEPTH = 64

_ALL = frozenset({True, False, None})
_UNKNOWN_VALUE = object()  # a leaf the server cannot evaluate for this file


class _ValueRange:
    """What a file's statistics say about a data column: ``low <= value <= high``, maybe NULL."""

    __slots__ = ("low", "high", "may_be_null", "may_be_non_null")

    def __init__(self, low: Any, high: Any, may_be_null: bool, may_be_non_null: bool = True):
        self.low, self.high = low, high
        self.may_be_null, self.may_be_non_null = may_be_null, may_be_non_null


# For "literal op column": the same test with the operands swapped.
_MIRRORED = {"equal": "equal", "lessThan": "greaterThan", "lessThanOrEqual": "greaterThanOrEqual",
             "greaterThan": "lessThan", "greaterThanOrEqual": "lessThanOrEqual"}


def _range_outcomes(op: str, column: _ValueRange, literal: Any) -> frozenset:
    """Possible outcomes of ``column op literal`` over the rows of one file, from min/max stats."""
    lo, hi = column.low, column.high
    if op == "equal":
        can_true, can_false = lo <= literal <= hi, not (lo == hi == literal)
    elif op == "lessThan":
        can_true, can_false = lo < literal, hi >= literal
    elif op == "lessThanOrEqual":
        can_true, can_false = lo <= literal, hi > literal
    elif op == "greaterThan":
        can_true, can_false = hi > literal, lo <= literal
    else:  # greaterThanOrEqual
        can_true, can_false = hi >= literal, lo < literal
    outcomes = set()
    if column.may_be_non_null:
        if can_true:
            outcomes.add(True)
        if can_false:
            outcomes.add(False)
    if column.may_be_null:
        outcomes.add(None)
    return frozenset(outcomes)

F = TypeVar("F")


class InvalidPredicate(ValueError):
    """The predicate tree does not follow the protocol's JSON predicate format."""


def _parse_timestamp(text: str) -> dt.datetime:
    # Literals use the protocol timestamp format (2022-01-01T00:00:00Z); partition values
    # the partition serialization (1970-01-01 00:00:00[.ffffff]), taken as UTC.
    parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace(" ", "T", 1))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError(f"not a boolean: {text!r}")
    return lowered == "true"


_PARSERS: dict[str, Callable[[str], Any]] = {
    "bool": _parse_bool,
    "int": int,
    "long": int,
    "string": str,
    "date": dt.date.fromisoformat,
    "float": float,
    "double": float,
    "timestamp": _parse_timestamp,
}


def _typed(raw: object, value_type: object) -> object:
    """``raw`` cast to ``value_type``; None stays SQL NULL, anything unparsable is unknown."""
    if raw is None:
        return None
    parser = _PARSERS.get(value_type) if isinstance(value_type, str) else None
    if parser is None:
        return _UNKNOWN_VALUE
    text = raw if isinstance(raw, str) else json.dumps(raw)
    if text == "" and value_type != "string":
        return None  # an empty partition string is NULL for non-string types
    try:
        return parser(text)
    except (ValueError, TypeError, OverflowError):  # OverflowError: e.g. 0001-01-01T00:00+01:00
        return _UNKNOWN_VALUE


def _children(node: Mapping, count: int | None = None, minimum: int | None = None) -> list:
    children = node.get("children")
    if not isinstance(children, list):
        raise InvalidPredicate(f"op {node.get('op')!r} needs a 'children' list")
    if count is not None and len(children) != count:
        raise InvalidPredicate(f"op {node.get('op')!r} needs exactly {count} children")
    if minimum is not None and len(children) < minimum:
        raise InvalidPredicate(f"op {node.get('op')!r} needs at least {minimum} children")
    return children


def _stats_range(stats: Mapping | None, name: str, value_type: object) -> object:
    """A :class:`_ValueRange` for data column ``name`` from a file's Delta statistics, else unknown."""
    if not stats:
        return _UNKNOWN_VALUE
    # Stats of nested columns are nested dicts; only top-level columns are judged.
    def pick(section: str) -> object:
        values = stats.get(section)
        if not isinstance(values, Mapping):
            return None
        return next((v for k, v in values.items() if k.lower() == name.lower()), None)

    num_records, null_count = stats.get("numRecords"), pick("nullCount")
    if isinstance(num_records, int) and isinstance(null_count, int) and null_count >= num_records:
        return _ValueRange(None, None, may_be_null=True, may_be_non_null=False)
    # String statistics may be truncated prefixes: only exact types are compared.
    if value_type == "string":
        return _UNKNOWN_VALUE
    low, high = _typed(pick("minValues"), value_type), _typed(pick("maxValues"), value_type)
    if low is None or high is None or low is _UNKNOWN_VALUE or high is _UNKNOWN_VALUE:
        return _UNKNOWN_VALUE
    may_be_null = not (isinstance(null_count, int) and null_count == 0)
    return _ValueRange(low, high, may_be_null=may_be_null)


def _leaf_value(
    node: object,
    partition_values: Mapping[str, str | None],
    partition_columns: Sequence[str],
    stats: Mapping | None = None,
) -> object:
    if not isinstance(node, Mapping):
        raise InvalidPredicate("a predicate node must be a JSON object")
    op = node.get("op")
    if op == "column":
        name = node.get("name")
        if not isinstance(name, str):
            raise InvalidPredicate("a column op needs a 'name'")
        # Column names are case-insensitive in Delta; data columns are judged by file statistics.
        match = next((c for c in partition_columns if c.lower() == name.lower()), None)
        if match is None:
            return _stats_range(stats, name, node.get("valueType"))
        return _typed(partition_values.get(match), node.get("valueType"))
    if op == "literal":
        if "value" not in node:
            raise InvalidPredicate("a literal op needs a 'value'")
        return _typed(node.get("value"), node.get("valueType"))
    raise InvalidPredicate(f"comparison children must be column or literal ops, not {op!r}")


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "equal": lambda a, b: a == b,
    "lessThan": lambda a, b: a < b,
    "lessThanOrEqual": lambda a, b: a <= b,
    "greaterThan": lambda a, b: a > b,
    "greaterThanOrEqual": lambda a, b: a >= b,
}


def _and3(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    if a is None or b is None:
        return None
    return True


def _or3(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    if a is None or b is None:
        return None
    return False


def _outcomes(
    node: object, values: Mapping[str, str | None], columns: Sequence[str], depth: int = 0, stats: Mapping | None = None
) -> frozenset:
    """The set of outcomes the predicate may have for the rows of one file."""
    if depth > MAX_DEPTH:
        raise InvalidPredicate(f"predicate nested deeper than {MAX_DEPTH} levels")
    if not isinstance(node, Mapping):
        raise InvalidPredicate("a predicate node must be a JSON object")
    op = node.get("op")
    if op in _COMPARISONS:
        left, right = (_leaf_value(child, values, columns, stats) for child in _children(node, count=2))
        if left is _UNKNOWN_VALUE or right is _UNKNOWN_VALUE:
            return _ALL
        if isinstance(left, _ValueRange) or isinstance(right, _ValueRange):
            if isinstance(left, _ValueRange) and isinstance(right, _ValueRange):
                return _ALL  # column against column: statistics cannot decide
            column, literal, test = (left, right, op) if isinstance(left, _ValueRange) else (right, left, _MIRRORED[op])
            if literal is None:
                return frozenset({None})
            if not column.may_be_non_null:
                return frozenset({None})
            try:
                return _range_outcomes(test, column, literal)
            except TypeError:
                return _ALL
        if left is None or right is None:
            return frozenset({None})
        try:
            return frozenset({bool(_COMPARISONS[op](left, right))})
        except TypeError:  # e.g. a date compared with a number: mismatched valueTypes
            return _ALL
    if op == "isNull":
        (child,) = _children(node, count=1)
        value = _leaf_value(child, values, columns, stats)
        if isinstance(value, _ValueRange):
            return frozenset(({True} if value.may_be_null else set()) | ({False} if value.may_be_non_null else set()))
        return _ALL - {None} if value is _UNKNOWN_VALUE else frozenset({value is None})
    if op == "not":
        (child,) = _children(node, count=1)
        return frozenset(None if o is None else not o for o in _outcomes(child, values, columns, depth + 1, stats))
    if op in ("and", "or"):
        combine = _and3 if op == "and" else _or3
        children = _children(node, minimum=2)
        result = _outcomes(children[0], values, columns, depth + 1, stats)
        for child in children[1:]:
            other = _outcomes(child, values, columns, depth + 1, stats)
            result = frozenset(combine(a, b) for a in result for b in other)
        return result
    raise InvalidPredicate(f"unsupported op {op!r}")


def parse_hints(raw: object) -> Mapping | None:
    """The predicate tree of a ``jsonPredicateHints`` body value, or None to skip filtering.

    Anything malformed is logged and ignored (best effort). Only JSON nested deeper than
    :data:`~sharing_server.limits.MAX_JSON_DEPTH` is refused (:class:`~sharing_server.limits.InputError`):
    no client writes such a predicate, and parsing it would exhaust the interpreter's stack.
    """
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > MAX_HINT_CHARS:
        log.info("ignoring jsonPredicateHints: not a string of at most %d characters", MAX_HINT_CHARS)
        return None
    if limits.json_depth(raw) > limits.MAX_JSON_DEPTH:
        raise limits.InputError(f"jsonPredicateHints is nested deeper than {limits.MAX_JSON_DEPTH} levels")
    try:
        tree = json.loads(raw)
    except (ValueError, RecursionError):
        log.info("ignoring jsonPredicateHints: not valid JSON")
        return None
    if not isinstance(tree, Mapping):
        log.info("ignoring jsonPredicateHints: the predicate must be a JSON object")
        return None
    return tree


def may_match(
    tree: Mapping,
    partition_values: Mapping[str, str | None],
    partition_columns: Sequence[str],
    stats: Mapping | None = None,
) -> bool:
    """Whether a file with these partition values (and column ``stats``) may hold rows satisfying ``tree``.

    ``stats`` is the file's Delta statistics object (``numRecords``, ``minValues``,
    ``maxValues``, ``nullCount``); without it data columns are never used to drop a file.
    Raises :class:`InvalidPredicate` for trees that break the format.
    """
    return True in _outcomes(tree, partition_values, partition_columns, stats=stats)


def _parsed_stats(raw: str | Mapping | None) -> Mapping | None:
    if raw is None or isinstance(raw, Mapping):
        return raw
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, Mapping) else None


def prune_files(
    files: Iterable[F],
    tree: Mapping | None,
    partition_columns: Sequence[str],
    partition_values_of: Callable[[F], Mapping[str, str | None]],
    stats_of: Callable[[F], str | Mapping | None] | None = None,
) -> list[F]:
    """The files that may match ``tree``: partition pruning, and file pruning by column statistics
    when ``stats_of`` gives a file's Delta stats (JSON text or dict). All files if there is no
    usable predicate."""
    files = list(files)
    if tree is None or (not partition_columns and stats_of is None):
        return files
    try:
        return [
            f for f in files
            if may_match(tree, partition_values_of(f), partition_columns, _parsed_stats(stats_of(f)) if stats_of else None)
        ]
    except InvalidPredicate as exc:
        log.info("ignoring jsonPredicateHints: %s", exc)
        return files
