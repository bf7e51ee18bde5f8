"""Gold mart definitions: one reviewed YAML file per mart in ``gold_marts/``.

A definition says, in terms a policy analyst can review (docs/gold-marts.md has the details):

* ``mart``, ``domein``, ``titel``, ``beschrijving``, ``eigenaar``: name, gold DAG and dashboard page,
  and the text readers see;
* ``bronnen``: the silver tables (and helper views such as ``INWONERS``) it reads;
* ``eenheden``: one Spark SQL query returning one row per counted unit;
* ``gebied`` (buurt | wijk | none) and, for area marts, ``gebiedskolommen``: area codes and names
  published as columns of their own next to ``gebiedscode``/``gebiedsnaam``;
* ``dimensies``, ``maten``, ``personen`` (the count that decides suppression) and ``per_1000_inwoners``.

This module is the one place that reads and validates definition files; ``jobs.gold`` executes
them. The engine, the gold DAGs, the catalog, the lineage and the dashboard all load them through
:func:`load_mart_definitions`. Like every model module it imports only core (``ggm_lakehouse.config``),
so the dashboard reads the definitions without Spark, wherever the lake files are.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ggm_lakehouse.config import project_root
from ggm_lakehouse.yaml_schema import DIALECT, parse_yaml_document

DOMEINEN = ("demografie", "sociaal_domein", "financien", "veiligheid", "subsidies", "bedrijfsvoering", "schuldhulp")
AGGREGATES = {
    "count": "count({van})",
    "count_distinct": "count(DISTINCT {van})",
    "sum": "sum({van})",
    "avg": "round(avg({van}), 2)",
    "median": "round(median({van}), 2)",
    "min": "min({van})",
    "max": "max({van})",
}
TOTAL = "Totaal"
UNKNOWN = "onbekend"
AREA_LEVELS = ("gemeente", "wijk", "buurt")
# The engine's own views and the silver tables they read: a mart that uses one depends on these.
HELPER_VIEWS = {
    "INWONERS": ("INGESCHREVENPERSOON", "NATUURLIJKPERSOON", "NUMMERAANDUIDING", "BUURT", "WIJK"),
    "PEILDATUM": (),
}
AREA_INPUTS = ("BUURT", "WIJK", "CBS_KERNCIJFERS")
# Area columns a mart may publish besides gebiedscode/gebiedsnaam (``gebiedskolommen``), in the order
# they appear, with the finest gebied that has them: partners that read a buurt's code and name as
# separate columns keep reading them.
AREA_NAME_COLUMNS = {"wijknaam": "wijk", "buurtcode": "buurt", "buurtnaam": "buurt"}
STATUS_TABLE = "mart_status"
RESERVED_COLUMNS = {"peildatum", "gebiedsniveau", "gebiedscode", "gebiedsnaam", "wijkcode", "buurtcode", "inwoners",
                    "huishoudens", "onderdrukt", "onderdrukking", *AREA_NAME_COLUMNS}
_COLUMN_NAME = {"type": "string", "pattern": r"^[a-z][a-z0-9_]*$",
                "patternErrorMessage": "must be a snake_case column name (a-z, 0-9 and _)"}
_TEXT = {"type": "string", "minLength": 1}
_NAMES = {"type": "array", "minItems": 1, "items": _COLUMN_NAME}
#: JSON schema of a definition file (``gold_marts/<mart>.yaml``); published as docs/schemas/gold-mart.schema.json.
MART_SCHEMA: dict[str, Any] = {
    "$schema": DIALECT,
    "title": "Gold mart definition",
    "description": "One reviewed gold mart: gold_marts/<mart>.yaml (docs/gold-marts.md explains every key).",
    "type": "object",
    "additionalProperties": False,
    "required": ["mart", "domein", "titel", "beschrijving", "bronnen", "eenheden", "maten"],
    "properties": {
        # mart and domein become table, DAG and file names: no path tricks, no free text.
        "mart": {**_COLUMN_NAME, "not": {"const": STATUS_TABLE}, "title": "Mart name",
                 "description": "The gold table's name; the file is named after it.",
                 "patternErrorMessage": "must be a snake_case name (a-z, 0-9 and _)"},
        "domein": {"enum": list(DOMEINEN), "title": "Domein", "description": "The gold DAG that builds the mart and "
                                                                           "its dashboard page."},
        "titel": {**_TEXT, "title": "Title readers see"},
        "beschrijving": {**_TEXT, "title": "Description readers see"},
        "eigenaar": {"type": ["string", "null"], "title": "Team that answers for the mart"},
        "bronnen": {"type": "array", "minItems": 1, "items": _TEXT, "title": "Silver tables read",
                    "description": "GGM silver tables and the engine's helper views (INWONERS, PEILDATUM)."},
        "eenheden": {**_TEXT, "title": "Units", "description": "One Spark SQL query returning one row per counted unit."},
        "gebied": {"enum": ["buurt", "wijk", "none", "geen", None], "title": "Area level",
                   "description": "buurt or wijk: cells per area with totals up to the gemeente; none: no areas."},
        "gebiedskolommen": {"type": "array", "uniqueItems": True, "items": {"enum": list(AREA_NAME_COLUMNS)},
                            "title": "Area codes and names published as columns of their own",
                            "description": "Next to gebiedscode/gebiedsnaam; each needs a gebied at least as fine."},
        "dimensies": {"type": ["array", "null"], "title": "Cell dimensions", "items": {
            "type": "object", "additionalProperties": False, "required": ["kolom"],
            "properties": {"kolom": {**_COLUMN_NAME, "title": "Unit column the cells are split by"},
                           "totaal": {"type": "boolean", "title": "Publish a 'Totaal' row across its values",
                                      "description": "Default: true."}}}},
        "maten": {"type": "array", "minItems": 1, "title": "Measures", "items": {
            "type": "object", "additionalProperties": False, "required": ["kolom", "functie"],
            "properties": {"kolom": {**_COLUMN_NAME, "title": "Published column"},
                           "functie": {"enum": sorted(AGGREGATES), "title": "Aggregate"},
                           "van": {"type": "string", "minLength": 1, "title": "Unit column aggregated",
                                   "description": "Required except for count."}},
            "if": {"required": ["functie"], "properties": {"functie": {"not": {"const": "count"}}}},
            "then": {"required": ["van"]}}},
        "personen": {"title": "Person counts that decide suppression",
                     "description": "One count (count or count_distinct measure), or a list whose first count hides "
                                    "a cell and whose further counts are hidden on their own.",
                     "oneOf": [{"title": "a measure name", **_COLUMN_NAME}, {"title": "a list of measure names", **_NAMES},
                               {"title": "empty", "type": "null"}]},
        "per_1000_inwoners": {"type": ["array", "null"], "items": _COLUMN_NAME,
                              "title": "Measures also published per 1,000 inwoners (needs a gebied)"},
    },
}


class GoldError(RuntimeError):
    """A mart cannot be defined or built; the message names the mart (or its file) and the cause."""


def marts_dir() -> Path:
    """Where the mart definitions live: ``GGM_GOLD_MARTS_DIR`` or ``<checkout>/gold_marts``."""
    return Path(os.environ.get("GGM_GOLD_MARTS_DIR", project_root() / "gold_marts"))


@dataclass(frozen=True)
class Dimension:
    """A cell dimension of a mart; ``totaal`` publishes a 'Totaal' row across its values."""

    kolom: str
    totaal: bool = True


@dataclass(frozen=True)
class Measure:
    """One published figure per cell: ``functie`` over unit column ``van``."""

    kolom: str
    functie: str
    van: str | None = None

    def sql(self) -> str:
        """The measure as a Spark SQL aggregate over the units."""
        return AGGREGATES[self.functie].format(van=f"`{self.van}`" if self.van else "1") + f" AS `{self.kolom}`"


@dataclass(frozen=True)
class MartDefinition:
    """A gold mart as its reviewed definition file states it (``gold_marts/<mart>.yaml``)."""

    mart: str
    domein: str
    titel: str
    beschrijving: str
    eigenaar: str
    bronnen: tuple[str, ...]
    eenheden: str
    gebied: str | None
    dimensies: tuple[Dimension, ...]
    maten: tuple[Measure, ...]
    personen: str | None
    per_1000_inwoners: tuple[str, ...]
    path: str
    sha256: str
    # Further person counts that are suppressed on their own (blanked in a published cell when small).
    ook_personen: tuple[str, ...] = ()
    # Area codes and names published as columns of their own (a subset of AREA_NAME_COLUMNS, in its order).
    gebiedskolommen: tuple[str, ...] = ()

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every silver table the mart reads: the declared ones, those behind helper views, and the area tables."""
        tables = [t for t in self.bronnen if t not in HELPER_VIEWS]
        for view, needs in HELPER_VIEWS.items():
            if view in self.bronnen or re.search(rf"\b{view}\b", self.eenheden):
                tables += needs
        if self.gebied:
            tables += AREA_INPUTS
        return tuple(dict.fromkeys(tables))


def _definition_error(path, message: str) -> GoldError:
    return GoldError(f"gold mart definition {path}: {message}")


def _read_raw(path: Path) -> tuple[str, dict]:
    """The file's text and its document, which MART_SCHEMA has checked; the file must be named after the mart."""
    text = path.read_text(encoding="utf-8")
    raw = parse_yaml_document(text, MART_SCHEMA, source=path, what="gold mart definition", error=GoldError)
    if path.stem != raw["mart"]:
        raise _definition_error(path, f"file name must be {raw['mart']}.yaml")
    return text, raw


def _area(path: Path, raw: dict) -> tuple[str | None, tuple[str, ...]]:
    """``gebied`` (None for none) and the ``gebiedskolommen`` it allows, in their published order."""
    gebied = raw.get("gebied")
    gebied = None if gebied in (None, "none", "geen") else gebied
    wanted = raw.get("gebiedskolommen") or []
    finest = {None: -1, "wijk": 1, "buurt": 2}[gebied]
    too_fine = [c for c in wanted if AREA_LEVELS.index(AREA_NAME_COLUMNS[c]) > finest]
    if too_fine:
        raise _definition_error(path, f"gebiedskolommen {too_fine} need a finer gebied than {gebied or 'none'}")
    return gebied, tuple(c for c in AREA_NAME_COLUMNS if c in wanted)


def _dimensions(raw: dict) -> tuple[Dimension, ...]:
    return tuple(Dimension(item["kolom"], item.get("totaal", True)) for item in raw.get("dimensies") or [])


def _measures(raw: dict) -> tuple[Measure, ...]:
    return tuple(Measure(item["kolom"], item["functie"], item.get("van")) for item in raw["maten"])


def _person_counts(path: Path, raw: dict, maten: tuple[Measure, ...]) -> list[str]:
    """``personen``: one count, or a list whose first count decides whether a cell is hidden and whose
    further counts are hidden on their own (a small sub-count inside a published cell)."""
    value = raw.get("personen")
    counts = [] if value is None else [value] if isinstance(value, str) else list(value)
    functions = {m.kolom: m.functie for m in maten}
    for personen in counts:
        if personen not in functions:
            raise _definition_error(path, f"personen {personen!r} must name one of the maten")
        if functions[personen] not in ("count", "count_distinct"):
            raise _definition_error(path, f"personen {personen!r} must be a count or count_distinct")
    return counts


def _check_columns(path: Path, dimensies, maten, gebied: str | None, per_1000: tuple[str, ...]) -> None:
    names = [d.kolom for d in dimensies] + [m.kolom for m in maten]
    clashes = sorted(set(names) & RESERVED_COLUMNS) + sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise _definition_error(path, f"column names {clashes} are reserved or repeated")
    if per_1000 and not gebied:
        raise _definition_error(path, "per_1000_inwoners needs a gebied (inwoners are per area)")
    if set(per_1000) - {m.kolom for m in maten}:
        raise _definition_error(path, f"per_1000_inwoners {sorted(set(per_1000) - {m.kolom for m in maten})} are not maten")


def load_mart_definition(path) -> MartDefinition:
    """Read and check one definition file; errors name the file and the key."""
    path = Path(path)
    text, raw = _read_raw(path)
    gebied, gebiedskolommen = _area(path, raw)
    dimensies, maten = _dimensions(raw), _measures(raw)
    per_1000 = tuple(raw.get("per_1000_inwoners") or ())
    _check_columns(path, dimensies, maten, gebied, per_1000)
    personen = _person_counts(path, raw, maten)
    return MartDefinition(
        mart=raw["mart"], domein=raw["domein"], titel=str(raw["titel"]), beschrijving=" ".join(str(raw["beschrijving"]).split()),
        eigenaar=str(raw.get("eigenaar") or ""), bronnen=tuple(str(b).upper() for b in raw["bronnen"]),
        eenheden=str(raw["eenheden"]), gebied=gebied, dimensies=dimensies, maten=maten,
        personen=personen[0] if personen else None, per_1000_inwoners=per_1000, path=str(path),
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), ook_personen=tuple(personen[1:]),
        gebiedskolommen=gebiedskolommen,
    )


def load_mart_definitions(directory=None) -> dict[str, MartDefinition]:
    """Every mart definition in ``directory`` (default: ``marts_dir()``), by mart name.

    A missing folder holds no definitions. File names equal mart names, so no mart is defined twice.
    """
    directory = Path(directory) if directory is not None else marts_dir()
    definitions = {}
    for path in sorted(directory.glob("*.yaml")):
        definition = load_mart_definition(path)
        definitions[definition.mart] = definition
    return definitions


def mart_inputs(definitions: dict[str, MartDefinition] | None = None) -> dict[str, tuple[str, ...]]:
    """The silver tables each mart reads (default: every definition); its gold DAG waits for exactly these."""
    definitions = load_mart_definitions() if definitions is None else definitions
    return {name: definition.inputs for name, definition in definitions.items()}


def mart_domeinen(definitions: dict[str, MartDefinition] | None = None) -> dict[str, str]:
    """The domein of each mart (default: every definition): which gold DAG builds it."""
    definitions = load_mart_definitions() if definitions is None else definitions
    return {name: definition.domein for name, definition in definitions.items()}
