"""Declarative GGM mappings: one YAML file per GGM target table in ``ggm_mappings/``.

A mapping says, in terms a municipal data analyst can review:

* ``target``: the GGM v2.5.1 table name, exactly as the GGM spells it;
* ``bronsysteem``: value of ``DWH_BRONSYSTEEM``;
* ``source``: the bronze table it reads (newest complete batch of the logical date), or a list of
  bronze tables with the same record shape whose batches are read together (a union, e.g. iWmo and
  iJw messages that conform to the same GGM table); the first one names the mapping's connector;
* ``fields``: named values taken from each source record with a JSON path;
* ``lookups`` (optional): other bronze tables joined (``match``) on named fields;
* ``business_key``: the fields that identify one real-world object;
* ``pseudonymised_fields``: fields holding a BSN; quality rules see the clear value, but every
  key and column built on them uses the keyed pseudonym, so no key can be traced back to a BSN;
* ``columns``: every GGM column with a Spark SQL expression over the fields and
  its type; ``key: TABLE`` makes a deterministic surrogate key of another GGM table
  (so foreign keys need no lookups), ``pseudonymise: true`` replaces a BSN by its
  keyed pseudonym;
* ``quality``: data-quality rules; rows that fail any rule go to quarantine;
* ``load``: ``snapshot`` (objects missing from the batch are closed) or ``incremental``;
* ``on_missing_batch`` (optional): ``keep`` when a day without a batch means "unchanged" (a source
  that publishes rarely, such as CBS); the default ``fail`` stops on a missing day;
* ``ggm: false`` (optional) marks a reference table of the lakehouse that is not a GGM table;
* ``key_table`` (optional): the GGM table whose key space the surrogate key is hashed in (default the
  target). A generalisation filled from the same records as one of its specialisations (AANVRAAGOFMELDING
  next to VTH_MELDING) names the specialisation, so both rows of one object carry the same key while
  keys of other specialisations (AOM_AANVRAAGWMOJEUGD) stay apart.

This module only reads and validates mapping files; ``jobs.silver`` executes them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ggm_lakehouse.config import project_root
from ggm_lakehouse.yaml_schema import DIALECT, load_yaml_document

SPARK_TYPES = {"string", "int", "bigint", "date", "timestamp", "boolean", "double", "decimal(18,2)"}
RULES = {"not_null", "elfproef", "pattern", "date", "in_set", "reference"}
# What each quality rule needs besides the field or column it looks at.
RULE_PARAMETERS = {"pattern": "pattern", "in_set": "values", "reference": "table"}
_GGM_NAME = r"^[A-Z0-9_]+$"
_GGM_TABLE = {"type": "string", "pattern": _GGM_NAME,
              "patternErrorMessage": "must be an upper-case GGM table name (A-Z, 0-9 and _), e.g. NATUURLIJKPERSOON"}
_TEXT = {"type": "string"}
_NAMES = {"type": "array", "items": {"type": "string", "minLength": 1}}
_JSON_PATHS = {
    "type": "object", "minProperties": 1,
    "additionalProperties": {"type": "string", "pattern": r"^\$",
                             "patternErrorMessage": "must be a JSON path into the record, starting with $ "
                                                    "(e.g. $.naam.voornamen)"},
}
_COLUMN = {
    "title": "GGM column",
    "description": "An expression over the fields (text), a computed column (expr, type) or the surrogate key of "
                   "another GGM table (key, of).",
    "oneOf": [
        {"title": "a Spark SQL expression over the fields (type string)", "type": "string", "minLength": 1},
        {"title": "a computed column (expr, type)", "type": "object", "additionalProperties": False,
         "required": ["expr"],
         "properties": {
             "expr": {"type": "string", "minLength": 1, "title": "Spark SQL expression over the fields"},
             "type": {"enum": sorted(SPARK_TYPES), "title": "Spark type", "description": "Default: string."},
             "pseudonymise": {"type": "boolean", "title": "Replace a BSN by its keyed pseudonym",
                              "description": "The field it reads must be listed under pseudonymised_fields."},
             "sensitivity": {**_TEXT, "title": "Sensitivity label in the catalog",
                             "description": "Default: bsn-derived for a pseudonymised column, else none."},
             "description": {**_TEXT, "title": "What the column holds (the catalog shows it)"},
         }},
        {"title": "the surrogate key of another GGM table (key, of)", "type": "object", "additionalProperties": False,
         "required": ["key", "of"],
         "properties": {
             "key": {**_GGM_TABLE, "title": "GGM table whose surrogate key the column holds"},
             "of": {"title": "The fields (or expressions) that identify the referenced object",
                    "oneOf": [{"type": "string", "minLength": 1}, {**_NAMES, "minItems": 1}]},
             "description": {**_TEXT, "title": "What the column holds (the catalog shows it)"},
         }},
    ],
}
_QUALITY_RULE = {
    "type": "object", "additionalProperties": False, "required": ["rule"],
    "properties": {
        "rule": {"enum": sorted(RULES), "title": "Rule",
                 "description": "not_null, elfproef (a valid BSN), pattern (regex), date, in_set (values) or "
                                "reference (a key that exists in another GGM table)."},
        "field": {"type": "string", "minLength": 1, "title": "The field the rule looks at"},
        "column": {"type": "string", "minLength": 1, "title": "The mapped column the rule looks at"},
        "pattern": {"type": "string", "title": "Regular expression the value must match (pattern rule)"},
        "values": {"type": "array", "minItems": 1, "title": "The allowed values (in_set rule)"},
        "table": {**_GGM_TABLE, "title": "GGM table the key must exist in (reference rule)"},
        "description": {**_TEXT, "title": "Why the rule exists (the catalog shows it)"},
    },
    "anyOf": [{"required": ["field"]}, {"required": ["column"]}],
    "allOf": [{"if": {"required": ["rule"], "properties": {"rule": {"const": rule}}}, "then": {"required": [needs]}}
              for rule, needs in RULE_PARAMETERS.items()],
}
_LOOKUP = {
    "type": "object", "additionalProperties": False, "required": ["source", "fields", "match"],
    "properties": {
        "source": {"type": "string", "minLength": 1, "title": "Bronze table joined"},
        "fields": {**_JSON_PATHS, "title": "Named values taken from each record of the joined table"},
        # "match", not "on": YAML 1.1 reads a bare `on` key as the boolean true.
        "match": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string", "minLength": 1},
                  "title": "Join condition: lookup field -> field of the mapping"},
    },
}
#: JSON schema of a mapping file (``ggm_mappings/<target>.yaml``); published as docs/schemas/mapping.schema.json.
MAPPING_SCHEMA: dict[str, Any] = {
    "$schema": DIALECT,
    "title": "GGM silver mapping",
    "description": "One GGM target table conformed from bronze: ggm_mappings/<target in lower case>.yaml "
                   "(ggm_lakehouse/model/mappings.py explains every key).",
    "type": "object",
    "additionalProperties": False,
    "required": ["target", "source", "fields", "business_key", "columns"],
    "properties": {
        "target": {**_GGM_TABLE, "title": "GGM table",
                   "description": "The GGM v2.5.1 table name, exactly as the GGM spells it; the file is named after it "
                                  "in lower case."},
        "description": {**_TEXT, "title": "What the table holds"},
        "owner": {**_TEXT, "title": "Team that answers for the mapping"},
        "bronsysteem": {"type": "string", "minLength": 1, "title": "Value of DWH_BRONSYSTEEM",
                        "description": "Default: the source table(s), comma-separated."},
        "source": {"title": "Bronze table(s)",
                   "description": "The bronze table read, or a list of bronze tables with the same record shape read "
                                  "together (a union); the first one names the mapping's connector.",
                   "oneOf": [{"title": "a bronze table name", "type": "string", "minLength": 1},
                             {"title": "a list of bronze table names", **_NAMES, "minItems": 1, "uniqueItems": True}]},
        "load": {"enum": ["snapshot", "incremental"], "title": "Load",
                 "description": "snapshot: objects missing from the batch are closed; incremental: they stay. "
                                "Default: snapshot."},
        "on_missing_batch": {"enum": ["fail", "keep"], "title": "A day without a batch",
                             "description": "fail (default) stops; keep means unchanged (a source that publishes "
                                            "rarely)."},
        "ggm": {"type": "boolean", "title": "A GGM v2.5.1 table",
                "description": "false marks a reference table of the lakehouse that is not a GGM table."},
        "key_table": {**_GGM_TABLE, "title": "GGM table whose key space the surrogate key is hashed in",
                      "description": "Default: the target. A generalisation filled from the same records as one of "
                                     "its specialisations names the specialisation."},
        "surrogate_key": {"type": "string", "pattern": _GGM_NAME, "title": "Name of the generated key column",
                          "description": "Default: <target>_ID."},
        "fields": {**_JSON_PATHS, "title": "Fields", "description": "Named values taken from each source record "
                                                                   "with a JSON path ($.naam.voornamen)."},
        "lookups": {"type": ["object", "null"], "additionalProperties": _LOOKUP, "title": "Lookups",
                    "description": "Other bronze tables joined on named fields (source, fields, match)."},
        "business_key": {**_NAMES, "minItems": 1, "title": "Business key",
                         "description": "The fields that identify one real-world object."},
        "pseudonymised_fields": {**_NAMES, "type": ["array", "null"], "title": "Fields holding a BSN",
                                 "description": "Quality rules see the clear value; every key and column built on "
                                                "them uses the keyed pseudonym."},
        "columns": {"type": "object", "minProperties": 1, "title": "GGM columns", "additionalProperties": _COLUMN,
                    "propertyNames": {"pattern": _GGM_NAME, "patternErrorMessage": "must be an upper-case GGM column "
                                                                                   "name (A-Z, 0-9 and _)"}},
        "quality": {"type": ["array", "null"], "items": _QUALITY_RULE, "title": "Data-quality rules",
                    "description": "Rows that fail any rule go to quarantine."},
    },
}


class MappingError(ValueError):
    """A mapping file is invalid; the message names the file and the problem."""


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    expr: str | None
    type: str
    key_of: str | None = None  # GGM table whose surrogate key this column holds
    key_fields: tuple[str, ...] = ()
    pseudonymise: bool = False
    description: str = ""
    sensitivity: str = ""


@dataclass(frozen=True)
class QualityRule:
    rule: str
    target: str  # field or column the rule looks at
    params: dict = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Lookup:
    name: str
    source: str
    fields: dict[str, str]
    on: dict[str, str]  # lookup field -> main field


@dataclass(frozen=True)
class Mapping:
    path: Path
    target: str
    bronsysteem: str
    source: str
    fields: dict[str, str]
    business_key: tuple[str, ...]
    columns: tuple[ColumnSpec, ...]
    quality: tuple[QualityRule, ...]
    lookups: tuple[Lookup, ...] = ()
    load: str = "snapshot"
    description: str = ""
    owner: str = ""
    depends_on: tuple[str, ...] = ()
    surrogate_key_column: str = ""
    pseudonymised_fields: tuple[str, ...] = ()
    ggm: bool = True  # false for the lakehouse's own reference tables (e.g. CBS_KERNCIJFERS)
    on_missing_batch: str = "fail"  # "keep": no batch that day means no change (sources that publish rarely)
    union_sources: tuple[str, ...] = ()  # all bronze tables of a union source (``source`` is the first)
    key_table_name: str = ""  # GGM table whose key space the surrogate key is hashed in (default: target)

    @property
    def surrogate_key(self) -> str:
        """The generated key column: ``<TARGET>_ID`` unless the mapping names a GGM variant."""
        return self.surrogate_key_column or f"{self.target}_ID"

    @property
    def key_table(self) -> str:
        """The table name hashed into the surrogate key: ``key_table`` if the mapping names one, else the target."""
        return self.key_table_name or self.target

    @property
    def silver_table(self) -> str:
        return self.target.lower()

    @property
    def source_tables(self) -> tuple[str, ...]:
        """Every bronze table the mapping reads its records from: ``(source,)`` or the tables of a union."""
        return self.union_sources or (self.source,)

    @property
    def source_system(self) -> str:
        """The connector whose bronze table this mapping reads (``brp`` for ``brp_personen``)."""
        return source_system_of(self.source)

    @property
    def bronze_sources(self) -> tuple[str, ...]:
        """Every connector this mapping needs a batch from on the day: its own and its lookups'."""
        return tuple(sorted({*(source_system_of(t) for t in self.source_tables),
                             *(source_system_of(l.source) for l in self.lookups)}))


def source_system_of(bronze_table: str) -> str:
    """Connector name of a bronze table: bronze tables are named ``<connector>_<dataset>``."""
    return bronze_table.split("_", 1)[0]


def mappings_dir() -> Path:
    """Folder with the mapping files (``GGM_MAPPINGS_DIR`` overrides ``<checkout>/ggm_mappings``)."""
    import os

    return Path(os.environ.get("GGM_MAPPINGS_DIR", project_root() / "ggm_mappings"))


def _fail(path: Path, message: str) -> MappingError:
    return MappingError(f"{path.name}: {message}")


def _column(name: str, spec: str | dict) -> ColumnSpec:
    """A column as MAPPING_SCHEMA allows it: an expression, a computed column or another table's key."""
    if isinstance(spec, str):
        return ColumnSpec(name=name, expr=spec, type="string")
    if "key" in spec:
        of = spec["of"]
        return ColumnSpec(name=name, expr=None, type="bigint", key_of=spec["key"],
                          key_fields=tuple([of] if isinstance(of, str) else of), description=spec.get("description", ""))
    return ColumnSpec(
        name=name,
        expr=spec["expr"],
        type=spec.get("type", "string"),
        pseudonymise=spec.get("pseudonymise", False),
        description=spec.get("description", ""),
        sensitivity=spec.get("sensitivity", "bsn-derived" if spec.get("pseudonymise") else ""),
    )


def load_mapping(path: Path) -> Mapping:
    """Parse and validate one mapping file: its structure by MAPPING_SCHEMA, then how its parts refer to each other."""
    doc = load_yaml_document(path, MAPPING_SCHEMA, source=path.name, error=MappingError)
    target = doc["target"]
    source = doc["source"] if isinstance(doc["source"], str) else doc["source"][0]
    union_sources = tuple(doc["source"]) if isinstance(doc["source"], list) and len(doc["source"]) > 1 else ()
    if path.stem != target.lower():
        raise _fail(path, f"file name must be the lower-cased target ({target.lower()}.yaml)")
    fields = dict(doc["fields"])
    business_key = tuple(doc["business_key"])
    for key_field in business_key:
        if key_field not in fields:
            raise _fail(path, f"business_key field {key_field!r} is not declared under 'fields'")
    columns = tuple(_column(name, spec) for name, spec in doc["columns"].items())
    surrogate = _check_generated_columns(path, doc, target, fields, columns)
    rules = _quality_rules(path, doc, fields, [c.name for c in columns])
    depends = {r.params["table"] for r in rules if r.rule == "reference" and r.params["table"] != target}
    return Mapping(
        path=path,
        target=target,
        bronsysteem=doc.get("bronsysteem", ",".join(union_sources or (source,))),
        source=source,
        union_sources=union_sources,
        ggm=doc.get("ggm", True),
        on_missing_batch=doc.get("on_missing_batch", "fail"),
        fields=fields,
        business_key=business_key,
        columns=columns,
        quality=tuple(rules),
        lookups=tuple(_lookups(path, doc, fields)),
        load=doc.get("load", "snapshot"),
        description=doc.get("description", ""),
        owner=doc.get("owner", ""),
        depends_on=tuple(sorted(depends)),
        surrogate_key_column=surrogate,
        pseudonymised_fields=_pseudonymised_fields(path, doc, fields, columns),
        key_table_name=doc.get("key_table", ""),
    )


def _check_generated_columns(path: Path, doc: dict, target: str, fields: dict[str, str],
                             columns: tuple[ColumnSpec, ...]) -> str:
    """The surrogate key column's name, after checking no mapped column shadows a field or a generated column."""
    # Spark resolves column names case-insensitively: a GGM column DATUMAANVANG computed from
    # something else would silently shadow a field named datumaanvang before the quality rules run.
    by_lower = {f.lower(): f for f in fields}
    for column in columns:
        field_name = by_lower.get(column.name.lower())
        if field_name is not None and column.expr != field_name:
            raise _fail(path, f"column {column.name} differs from field {field_name!r} only in case but is computed "
                              f"from {column.expr!r}; rename the field (Spark names are case-insensitive)")
    names = [c.name for c in columns]
    surrogate = doc.get("surrogate_key", f"{target}_ID")
    if surrogate in names:
        raise _fail(path, f"{surrogate} is the generated surrogate key; do not map it")
    if any(n.startswith("DWH_") for n in names):
        raise _fail(path, "DWH_* history columns are generated; do not map them")
    return surrogate


def _lookups(path: Path, doc: dict, fields: dict[str, str]) -> list[Lookup]:
    """The mapping's ``lookups``: joins to another bronze table on declared fields."""
    lookups = []
    for name, spec in (doc.get("lookups") or {}).items():
        for main_field in spec["match"].values():
            if main_field not in fields:
                raise _fail(path, f"lookup {name!r} joins on unknown field {main_field!r}")
        lookups.append(Lookup(name, spec["source"], dict(spec["fields"]), dict(spec["match"])))
    return lookups


def _quality_rules(path: Path, doc: dict, fields: dict[str, str], names: list[str]) -> list[QualityRule]:
    """The mapping's ``quality`` rules, each on a declared field or mapped column."""
    rules = []
    for raw in doc.get("quality") or []:
        rule = raw["rule"]
        target_name = raw.get("field") or raw["column"]
        if target_name not in fields and target_name not in names:
            raise _fail(path, f"quality rule {rule!r} looks at unknown field/column {target_name!r}")
        params = {k: v for k, v in raw.items() if k not in {"rule", "field", "column", "description"}}
        if rule == "pattern":
            try:
                re.compile(params["pattern"])
            except re.error as exc:
                raise _fail(path, f"pattern rule on {target_name}: invalid regex ({exc})") from exc
        rules.append(QualityRule(rule, target_name, params, raw.get("description", "")))
    return rules


def _pseudonymised_fields(path: Path, doc: dict, fields: dict[str, str],
                          columns: tuple[ColumnSpec, ...]) -> tuple[str, ...]:
    """``pseudonymised_fields``: declared fields, and every field a pseudonymising column reads."""
    pseudonymised_fields = tuple(doc.get("pseudonymised_fields") or ())
    for name in pseudonymised_fields:
        if name not in fields:
            raise _fail(path, f"pseudonymised field {name!r} is not declared under 'fields'")
    for column in columns:
        if column.pseudonymise and column.expr in fields and column.expr not in pseudonymised_fields:
            raise _fail(path, f"column {column.name} pseudonymises field {column.expr!r}; list it under pseudonymised_fields")
    return pseudonymised_fields


# Mappings parsed per file, keyed by path, modification time and size: the catalog, the DAG factory
# and every stage ask for all mappings many times, and parsing 50 YAML files costs most of a second.
_PARSED: dict[tuple[str, int, int], Mapping] = {}


def _load_cached(path: Path) -> Mapping:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _PARSED:
        _PARSED[key] = load_mapping(path)
    return _PARSED[key]


def load_all(directory: Path | None = None) -> list[Mapping]:
    """All mappings, ordered so that referenced tables are conformed first.

    A file parsed before is parsed again only when its modification time or size changed.
    """
    directory = directory or mappings_dir()
    mappings = {m.target: m for m in (_load_cached(p) for p in sorted(directory.glob("*.yaml")))}
    ordered: list[Mapping] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in {m.target for m in ordered}:
            return
        if name in visiting:
            raise MappingError(f"reference cycle through {name}")
        visiting.add(name)
        for dep in mappings[name].depends_on:
            if dep in mappings:
                visit(dep)
        visiting.discard(name)
        ordered.append(mappings[name])

    for name in sorted(mappings):
        visit(name)
    return ordered


def person_bronze_tables(mappings: Iterable[Mapping] | None = None) -> set[str]:
    """Bronze tables that hold persons: the sources of every mapping that pseudonymises a BSN.

    The processing log counts the data subjects of an extract or a bronze run with it.
    """
    mappings = load_all() if mappings is None else mappings
    return {table for m in mappings if m.pseudonymised_fields for table in m.source_tables}
