"""Schema drift in what sources deliver: new fields, vanished fields and changed types.

Bronze keeps every record as it arrived, so drift never loses data; but a registry that
adds a field or starts sending a number as text may need a mapping change, and the
operator should hear of it. For each bronze table the *shape* of the records seen so far
(every field path with the JSON types it held) is kept in
``<data root>/profiles/bronze/<table>.json``. Each new batch is compared with it:

* a field path never seen before → ``new field``;
* a field path that held one type and now holds another (null does not count) → ``changed type``;
* a field path present in every earlier batch but absent from this whole batch → ``missing field``.

The comparison runs on the driver over the records bronze parses anyway. Paths use dots for
objects and ``[]`` for list elements (``verblijfplaats.adres.huisnummer``, ``nationaliteiten[].code``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ggm_lakehouse.config import data_root

MAX_DEPTH = 8
# Per-table cap on listed drift messages; the count says how many there were in all.
MAX_MESSAGES = 20


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _walk(value: Any, path: str, shape: dict[str, set[str]], depth: int) -> None:
    if path:
        shape.setdefault(path, set()).add(_json_type(value))
    if depth >= MAX_DEPTH:
        return
    if isinstance(value, dict):
        for key, child in value.items():
            _walk(child, f"{path}.{key}" if path else str(key), shape, depth + 1)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                _walk(item, f"{path}[]", shape, depth + 1)


def batch_shape(records: Iterable[Any]) -> dict[str, set[str]]:
    """Every field path of ``records`` with the JSON types it held."""
    shape: dict[str, set[str]] = {}
    for record in records:
        _walk(record, "", shape, 0)
    return shape


def profile_path(table: str) -> Path:
    return data_root() / "profiles" / "bronze" / f"{table}.json"


def load_profile(table: str) -> dict[str, Any] | None:
    """The stored shape of ``table``: ``{"batches": n, "fields": {path: {"types": [...], "batches": n}}}``."""
    path = profile_path(table)
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def compare(profile: dict[str, Any] | None, shape: dict[str, set[str]]) -> list[str]:
    """Drift messages of a batch with ``shape`` against the stored ``profile`` (none for a first batch)."""
    if not profile:
        return []
    known = profile["fields"]
    messages = []
    for path in sorted(shape):
        types = shape[path] - {"null"}
        if path not in known:
            messages.append(f"new field {path} ({', '.join(sorted(types)) or 'null'})")
            continue
        before = set(known[path]["types"]) - {"null"}
        if before and types and not types <= before:
            messages.append(f"changed type of {path}: {', '.join(sorted(before))} → {', '.join(sorted(types))}")
    for path in sorted(set(known) - set(shape)):
        if known[path]["batches"] == profile["batches"]:
            messages.append(f"missing field {path} (present in every earlier batch)")
    return messages


def update_profile(table: str, profile: dict[str, Any] | None, shape: dict[str, set[str]]) -> None:
    """Fold a batch's shape into the stored profile (written atomically)."""
    profile = profile or {"batches": 0, "fields": {}}
    profile["batches"] += 1
    for path, types in shape.items():
        field = profile["fields"].setdefault(path, {"types": [], "batches": 0})
        field["types"] = sorted(set(field["types"]) | types)
        field["batches"] += 1
    target = profile_path(table)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps(profile, indent=1, sort_keys=True), encoding="utf-8")
    temporary.replace(target)


def check_batch(table: str, records: list[Any]) -> list[str]:
    """Compare a batch with the table's profile, record it, and return the drift messages."""
    shape = batch_shape(records)
    profile = load_profile(table)
    messages = compare(profile, shape)
    update_profile(table, profile, shape)
    return messages
