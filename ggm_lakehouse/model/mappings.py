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
from typing import Iterable

import yaml

from ggm_lakehouse.config import parse_yaml, project_root

SPARK_TYPES = {"string", "int", "bigint", "date", "timestamp", "boolean", "double", "decimal(18,2)"}
RULES = {"not_null", "elfproef", "pattern", "date", "in_set", "reference"}
_GGM_NAME = re.compile(r"^[A-Z0-9_]+$")


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


def _column(path: Path, name: str, spec: object) -> ColumnSpec:
    if not _GGM_NAME.match(name):
        raise _fail(path, f"column {name!r} is not an upper-case GGM column name")
    if isinstance(spec, str):
        return ColumnSpec(name=name, expr=spec, type="string")
    if not isinstance(spec, dict):
        raise _fail(path, f"column {name}: expected an expression or a mapping, got {type(spec).__name__}")
    if "key" in spec:
        of = spec.get("of")
        if not of:
            raise _fail(path, f"column {name}: 'key' needs 'of' (the fields that identify the referenced object)")
        return ColumnSpec(
            name=name,
            expr=None,
            type="bigint",
            key_of=str(spec["key"]),
            key_fields=tuple([of] if isinstance(of, str) else of),
            description=spec.get("description", ""),
        )
    expr = spec.get("expr")
    if not expr:
        raise _fail(path, f"column {name}: 'expr' is required")
    col_type = spec.get("type", "string")
    if col_type not in SPARK_TYPES:
        raise _fail(path, f"column {name}: type {col_type!r} not one of {sorted(SPARK_TYPES)}")
    return ColumnSpec(
        name=name,
        expr=str(expr),
        type=col_type,
        pseudonymise=bool(spec.get("pseudonymise", False)),
        description=spec.get("description", ""),
        sensitivity=spec.get("sensitivity", "bsn-derived" if spec.get("pseudonymise") else ""),
    )


def _sources(path: Path, raw: object) -> tuple[str, tuple[str, ...]]:
    """``(source, union_sources)`` of a ``source:`` entry that names one bronze table or a list of them."""
    if isinstance(raw, str) and raw:
        return raw, ()
    if not isinstance(raw, list) or not raw or not all(isinstance(t, str) and t for t in raw):
        raise _fail(path, "source must be a bronze table name or a non-empty list of them")
    if len(set(raw)) != len(raw):
        raise _fail(path, f"source lists a bronze table twice: {raw}")
    return raw[0], (tuple(raw) if len(raw) > 1 else ())


def load_mapping(path: Path) -> Mapping:
    """Parse and validate one mapping file."""
    doc = _read_mapping_document(path)
    target = str(doc["target"])
    source, union_sources = _sources(path, doc["source"])
    if not _GGM_NAME.match(target):
        raise _fail(path, f"target {target!r} is not an upper-case GGM table name")
    if path.stem != target.lower():
        raise _fail(path, f"file name must be the lower-cased target ({target.lower()}.yaml)")
    fields = {str(k): str(v) for k, v in doc["fields"].items()}
    business_key = tuple(doc["business_key"])
    for key_field in business_key:
        if key_field not in fields:
            raise _fail(path, f"business_key field {key_field!r} is not declared under 'fields'")
    columns = tuple(_column(path, name, spec) for name, spec in doc["columns"].items())
    surrogate = _check_generated_columns(path, doc, target, fields, columns)
    lookups = _lookups(path, doc, fields)
    rules = _quality_rules(path, doc, fields, [c.name for c in columns])
    pseudonymised_fields = _pseudonymised_fields(path, doc, fields, columns)
    load = doc.get("load", "snapshot")
    if load not in {"snapshot", "incremental"}:
        raise _fail(path, f"load must be snapshot or incremental, got {load!r}")
    on_missing_batch = doc.get("on_missing_batch", "fail")
    if on_missing_batch not in {"fail", "keep"}:
        raise _fail(path, f"on_missing_batch must be fail or keep, got {on_missing_batch!r}")
    ggm = doc.get("ggm", True)
    if not isinstance(ggm, bool):
        raise _fail(path, "ggm must be true (a GGM v2.5.1 table) or false (a reference table of the lakehouse)")
    key_table = str(doc.get("key_table", ""))
    if key_table and not _GGM_NAME.match(key_table):
        raise _fail(path, f"key_table {key_table!r} is not an upper-case GGM table name")
    depends = {r.params["table"] for r in rules if r.rule == "reference" and r.params["table"] != target}
    return Mapping(
        path=path,
        target=target,
        bronsysteem=str(doc.get("bronsysteem", ",".join(union_sources or (source,)))),
        source=source,
        union_sources=union_sources,
        ggm=ggm,
        on_missing_batch=on_missing_batch,
        fields=fields,
        business_key=business_key,
        columns=columns,
        quality=tuple(rules),
        lookups=tuple(lookups),
        load=load,
        description=str(doc.get("description", "")),
        owner=str(doc.get("owner", "")),
        depends_on=tuple(sorted(depends)),
        surrogate_key_column=surrogate,
        pseudonymised_fields=pseudonymised_fields,
        key_table_name=key_table,
    )


def _read_mapping_document(path: Path) -> dict:
    """The mapping file as a dict that has every required top-level key."""
    try:
        doc = parse_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise _fail(path, f"not valid YAML ({exc})") from exc
    if not isinstance(doc, dict):
        raise _fail(path, "expected a mapping at the top level")
    for required in ("target", "source", "fields", "business_key", "columns"):
        if required not in doc:
            raise _fail(path, f"'{required}' is required")
    return doc


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
    surrogate = str(doc.get("surrogate_key", f"{target}_ID"))
    if surrogate in names:
        raise _fail(path, f"{surrogate} is the generated surrogate key; do not map it")
    if any(n.startswith("DWH_") for n in names):
        raise _fail(path, "DWH_* history columns are generated; do not map them")
    return surrogate


def _lookups(path: Path, doc: dict, fields: dict[str, str]) -> list[Lookup]:
    """The mapping's ``lookups``: joins to another bronze table on declared fields."""
    lookups = []
    for name, spec in (doc.get("lookups") or {}).items():
        # "match", not "on": YAML 1.1 reads a bare `on` key as the boolean true.
        if not {"source", "fields", "match"} <= set(spec):
            raise _fail(path, f"lookup {name!r} needs source, fields and match")
        for main_field in spec["match"].values():
            if main_field not in fields:
                raise _fail(path, f"lookup {name!r} joins on unknown field {main_field!r}")
        lookups.append(Lookup(name, spec["source"], dict(spec["fields"]), dict(spec["match"])))
    return lookups


def _quality_rules(path: Path, doc: dict, fields: dict[str, str], names: list[str]) -> list[QualityRule]:
    """The mapping's ``quality`` rules, each on a declared field or mapped column."""
    rules = []
    for raw in doc.get("quality") or []:
        rule = raw.get("rule")
        if rule not in RULES:
            raise _fail(path, f"quality rule {rule!r} not one of {sorted(RULES)}")
        target_name = raw.get("field") or raw.get("column")
        if not target_name:
            raise _fail(path, f"quality rule {rule!r} needs 'field' or 'column'")
        if target_name not in fields and target_name not in names:
            raise _fail(path, f"quality rule {rule!r} looks at unknown field/column {target_name!r}")
        params = {k: v for k, v in raw.items() if k not in {"rule", "field", "column", "description"}}
        if rule == "reference" and "table" not in params:
            raise _fail(path, "reference rule needs 'table'")
        if rule == "pattern":
            try:
                re.compile(params.get("pattern", ""))
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
