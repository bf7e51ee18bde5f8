"""One way to check every YAML declaration the project reads: a JSON Schema (Draft 2020-12) per kind of file.

Each loader keeps its schema beside the code that reads the file (``MAPPING_SCHEMA`` in
:mod:`ggm_lakehouse.model.mappings`, ``CONTRACT_SCHEMA`` in :mod:`connectors.contracts`, ...) and
calls :func:`validate` (or :func:`load_yaml_document`) before its own *semantic* checks: the schema
says which keys exist, what they hold and which are required; the loader checks what a schema cannot
(cross references, a file name that must equal the declared name, columns that must exist).

A structural error raises the loader's own error class with one message that names the file, the
path of the offending element in the document and the rule it breaks, in plain words::

    shares config config/shares.yaml: recipients[1].shares: must be a list or empty (found 'gemeente_gold')

The same schemas are published for editors (``ggm schemas export``, ``docs/schemas/``), so a YAML
editor flags the mistake while it is typed. ``patternErrorMessage`` and ``errorMessage`` are the
keywords VS Code's schema support reads for a message of the author's own; :func:`validate` uses
them too.

Layer: core. It imports nothing of the project but :mod:`ggm_lakehouse.config`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from ggm_lakehouse.config import parse_yaml

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: At most this many problems are named in one message: the first ones are what to fix first.
MAX_PROBLEMS = 3
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_\-.+]+$")
_TYPE_NAMES = {"string": "a string", "integer": "a whole number", "number": "a number", "boolean": "true or false",
               "array": "a list", "object": "a mapping (key: value)", "null": "empty"}

# Validators per schema, kept with the schema they were built for (schemas are plain dicts, not hashable).
_VALIDATORS: dict[int, tuple[Mapping, Any]] = {}


class YamlSchemaError(ValueError):
    """A YAML document breaks its schema; the message names the file, the element and the rule."""


def validate(document: object, schema: Mapping, *, source: Path | str | None = None, what: str = "",
             error: type[Exception] = YamlSchemaError) -> None:
    """Raise ``error`` when ``document`` breaks ``schema``; the message names the file, the path and the rule.

    ``what`` names the kind of file ("shares config") and ``source`` the file (a path or the name the
    loader's other messages use); the message starts with both, then up to :data:`MAX_PROBLEMS`
    problems, the most telling first, each as ``<path>: <rule>``.
    """
    found = problems(document, schema)
    if found:
        raise error(f"{_label(what, source)}: {'; '.join(found)}")


def problems(document: object, schema: Mapping, limit: int = MAX_PROBLEMS) -> list[str]:
    """What is wrong with ``document`` by ``schema``, as ``<path>: <rule>`` lines; empty when it is valid."""
    from jsonschema.exceptions import relevance

    errors = list(_validator(schema).iter_errors(document))
    if not errors:
        return []
    first = max(errors, key=relevance)
    ordered = [first] + sorted((e for e in errors if e is not first), key=lambda e: _path_key(e.absolute_path))
    lines: list[str] = []
    for error in ordered:
        line = _describe(_specific(error))
        if line not in lines:
            lines.append(line)
    return lines[:limit]


def parse_yaml_document(text: str, schema: Mapping, *, source: Path | str | None = None, what: str = "",
                        error: type[Exception] = YamlSchemaError) -> Any:
    """The YAML document in ``text``, validated against ``schema``; ``error`` for bad YAML or a broken rule."""
    import yaml

    try:
        document = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise error(f"{_label(what, source)}: not valid YAML ({exc})") from None
    validate(document, schema, source=source, what=what, error=error)
    return document


def load_yaml_document(path: Path | str, schema: Mapping, *, source: Path | str | None = None, what: str = "",
                       error: type[Exception] = YamlSchemaError) -> Any:
    """The YAML file at ``path``, read and validated against ``schema`` (``source`` names it; default ``path``)."""
    source = path if source is None else source
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{_label(what, source)}: cannot be read ({exc.strerror or exc})") from None
    return parse_yaml_document(text, schema, source=source, what=what, error=error)


def json_path(parts: Iterable[object]) -> str:
    """``recipients[2].shares`` for the parts ``("recipients", 2, "shares")``; ``(top level)`` for none."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(str(part)):
            text += f".{part}" if text else str(part)
        else:
            text += f"[{json.dumps(str(part), ensure_ascii=False)}]"
    return text or "(top level)"


def schema_json(schema: Mapping) -> str:
    """The text of a published schema file: indented JSON, keys in the order the schema declares them."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def export(schemas: Mapping[str, Mapping], directory: Path | str) -> list[Path]:
    """Write ``<directory>/<name>.schema.json`` for every schema; returns the files written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas.items():
        path = directory / f"{name}.schema.json"
        path.write_text(schema_json(schema), encoding="utf-8")
        written.append(path)
    return written


# --------------------------------------------------------------------------- from errors to plain words


def _validator(schema: Mapping):
    """The (cached) Draft 2020-12 validator of ``schema``."""
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        from jsonschema import Draft202012Validator

        cached = _VALIDATORS[id(schema)] = (schema, Draft202012Validator(schema))
    return cached[1]


def _label(what: str, source: Path | str | None) -> str:
    return " ".join(part for part in (what, "" if source is None else str(source)) if part) or "document"


def _path_key(parts) -> list[tuple[int, str]]:
    # Indexes and keys sort apart, so a list's items sort by number and mixed paths never compare int to str.
    return [(0, f"{p:09d}") if isinstance(p, int) else (1, str(p)) for p in parts]


def _only_required(branches: list) -> bool:
    """Whether every branch of a oneOf/anyOf only asks for a key: "one of these keys", said as a whole."""
    return all(isinstance(b, dict) and set(b) == {"required"} for b in branches)


def _specific(error):
    """The error inside a ``oneOf``/``anyOf`` that tells what to fix: that of the form the value most looks like."""
    from jsonschema.exceptions import relevance

    while error.context and "errorMessage" not in error.schema and not _only_required(error.validator_value):
        branches = error.validator_value
        by_branch: dict[int, list] = {}
        for inner in error.context:
            by_branch.setdefault(inner.relative_schema_path[0], []).append(inner)
        fitting = [i for i in by_branch if _fits_type(branches[i], error.instance)]
        if not fitting:
            return error
        # Fewest problems first: the form the author meant is the one the value nearly matches.
        chosen = min(fitting, key=lambda i: (len(by_branch[i]), -max(len(e.path) for e in by_branch[i])))
        error = max(by_branch[chosen], key=relevance)
    return error


def _fits_type(branch: object, instance: object) -> bool:
    """Whether ``instance`` has the JSON type a ``oneOf`` branch is about (a branch without one fits any)."""
    if not isinstance(branch, dict):
        return True
    from jsonschema import Draft202012Validator

    if "type" in branch:
        types = [branch["type"]] if isinstance(branch["type"], str) else branch["type"]
        return any(Draft202012Validator.TYPE_CHECKER.is_type(instance, t) for t in types)
    values = [branch["const"]] if "const" in branch else branch.get("enum")
    if values is not None:
        return any(type(v) is type(instance) for v in values)
    return True


def _describe(error) -> str:
    """``<path>: <rule>`` for one (specific) validation error."""
    parts = list(error.absolute_path)
    if "propertyNames" in error.relative_schema_path:
        # The error is about a key's name: point at the key itself.
        return f"{json_path(parts + [error.instance])}: the name {_rule(error, with_found=False)}"
    if error.validator == "additionalProperties" and error.validator_value is False:
        extras = _unknown_keys(error)
        allowed = ", ".join(error.schema.get("properties", {})) or "none"
        if len(extras) == 1:
            return f"{json_path(parts + extras)}: unknown key {extras[0]!r}; allowed here: {allowed}"
        return f"{json_path(parts)}: unknown keys {', '.join(repr(k) for k in extras)}; allowed here: {allowed}"
    return f"{json_path(parts)}: {_rule(error)}"


def _unknown_keys(error) -> list[str]:
    known = set(error.schema.get("properties", {}))
    patterns = [re.compile(p) for p in error.schema.get("patternProperties", {})]
    return sorted(str(k) for k in error.instance if k not in known and not any(p.search(str(k)) for p in patterns))


# Rules whose offending value is a whole mapping or list: showing it adds nothing.
_NOTHING_TO_SHOW = {"required", "uniqueItems", "minItems", "maxItems", "minProperties", "maxProperties"}


def _rule(error, with_found: bool = True) -> str:
    """The rule ``error`` breaks, in plain words, with the value found where that helps."""
    kind, expected, instance = error.validator, error.validator_value, error.instance
    own = error.schema.get("patternErrorMessage") if kind == "pattern" else None
    if kind == "required":
        missing = [k for k in expected if isinstance(instance, dict) and k not in instance]
        keys = _either(missing, quoted=True, joiner="and")
        return f"required key {keys} is missing" if len(missing) == 1 else f"required keys {keys} are missing"
    if own or error.schema.get("errorMessage"):
        text = own or error.schema["errorMessage"]
    elif kind in ("oneOf", "anyOf"):
        text = _alternatives(error)
    elif kind in _VALUE_RULES:
        text = _VALUE_RULES[kind](expected, instance)
    else:
        text = error.message
    quiet = kind in _NOTHING_TO_SHOW or (kind in ("oneOf", "anyOf") and _only_required(expected))
    return text if quiet or not with_found else f"{text} (found {_show(instance)})"


def _alternatives(error) -> str:
    branches = [b for b in error.validator_value if isinstance(b, dict)]
    if _only_required(branches):
        keys = [k for b in branches for k in b["required"]]
        if error.validator == "oneOf" and not error.context:
            return f"must have exactly one of the keys {_either(keys, quoted=True)}"
        return f"needs one of the keys {_either(keys, quoted=True)}"
    if error.validator == "oneOf" and not error.context:
        return f"fits more than one of its forms ({_either([_form(b) for b in branches])})"
    return "must be " + _either([_form(b) for b in branches])


def _form(branch: dict) -> str:
    """A oneOf branch in words: its title, else the value or type it asks for."""
    if "title" in branch:
        return str(branch["title"])
    if "const" in branch:
        return _value(branch["const"])
    types = [branch["type"]] if isinstance(branch.get("type"), str) else branch.get("type") or []
    return _either([_TYPE_NAMES.get(t, t) for t in types]) if types else "another form"


def _either(items: list, quoted: bool = False, joiner: str = "or") -> str:
    shown = [repr(i) if quoted else str(i) for i in items]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} {joiner} {shown[-1]}"


def _value(value: object) -> str:
    """A value as a rule names it: plain words bare, anything with spaces or punctuation quoted."""
    if isinstance(value, str):
        return value if _PLAIN_VALUE.match(value) else repr(value)
    return json.dumps(value, ensure_ascii=False)


def _show(instance: object) -> str:
    """The offending value, briefly: ``'gold'``, ``0``, ``true``, ``a list``, ``an empty value``."""
    if isinstance(instance, (dict, list)):
        return _TYPE_NAMES["object" if isinstance(instance, dict) else "array"]
    if instance is None:
        return "an empty value"
    if isinstance(instance, bool):
        return json.dumps(instance)
    text = repr(instance) if isinstance(instance, str) else str(instance)
    return text if len(text) <= 60 else text[:57] + "..."


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _first_repeated(items: list) -> object:
    seen: list = []
    for item in items:
        if item in seen:
            return item
        seen.append(item)
    return None


# Keyword -> the rule in words, from the keyword's value in the schema and the value found.
_VALUE_RULES = {
    "type": lambda expected, instance: "must be " + _either(
        [_TYPE_NAMES.get(t, t) for t in ([expected] if isinstance(expected, str) else expected)]),
    "enum": lambda expected, instance: "must be " + _either([_value(v) for v in expected]),
    "const": lambda expected, instance: f"must be {_value(expected)}",
    "pattern": lambda expected, instance: f"must match the pattern {expected}",
    "minLength": lambda n, instance: "must not be empty" if n == 1 else f"must be at least {_plural(n, 'character')}",
    "maxLength": lambda n, instance: f"must be at most {_plural(n, 'character')} long",
    "minItems": lambda n, instance: f"must list at least {'one item' if n == 1 else _plural(n, 'item')}",
    "maxItems": lambda n, instance: f"must list at most {_plural(n, 'item')}",
    "minProperties": lambda n, instance: f"must declare at least {'one entry' if n == 1 else f'{n} entries'}",
    "uniqueItems": lambda expected, instance: f"lists {_first_repeated(instance)!r} more than once",
    "minimum": lambda n, instance: f"must be at least {n}",
    "maximum": lambda n, instance: f"must be at most {n}",
    "exclusiveMinimum": lambda n, instance: f"must be more than {n}",
    "exclusiveMaximum": lambda n, instance: f"must be less than {n}",
    "not": lambda expected, instance: (f"must not be {_value(expected['const'])}" if "const" in expected
                                       else "is not allowed here"),
}
