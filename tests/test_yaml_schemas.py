"""One schema mechanism for every YAML declaration (ggm_lakehouse/yaml_schema.py), and the schemas editors use.

* the files in docs/schemas are exactly what ``ggm schemas export`` writes from the Python schemas;
* every YAML declaration shipped in the checkout validates against its published schema with plain
  ``jsonschema``, as an editor would check it;
* a structural error in each kind of file names the file, the path of the element and the rule, and
  an unknown key is refused in each.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import yaml
from jsonschema import Draft202012Validator

from connectors.contracts import ContractError, DataContract
from connectors.errors import SourceConfigError
from connectors.vroegsignalering import load_codelists
from ggm_lakehouse import retention
from ggm_lakehouse.access import AccessConfigError, load_access_config
from ggm_lakehouse.cli import SCHEMA_FILES, main, published_schemas
from ggm_lakehouse.model.mappings import MappingError, load_mapping
from ggm_lakehouse.model.mart_definitions import GoldError, load_mart_definition
from ggm_lakehouse.model.shares_config import SharesConfigError, load_shares_config
from ggm_lakehouse.model.sources import load_sources
from ggm_lakehouse.yaml_schema import YamlSchemaError, json_path, schema_json

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "docs" / "schemas"
# Folders whose YAML files are declarations the platform reads; each file must have a schema.
DECLARATION_FOLDERS = ("config", "config/contracts", "ggm_mappings", "gold_marts", "ggm_lakehouse/model", "connectors")


def _shipped(name: str) -> list[Path]:
    return sorted(path for pattern in SCHEMA_FILES[name] for path in ROOT.glob(pattern))


SHIPPED = [(name, path) for name in SCHEMA_FILES for path in _shipped(name)]


# --------------------------------------------------------------------------- the published schemas


def test_the_published_schemas_are_what_the_code_generates():
    schemas = published_schemas()
    assert set(schemas) == set(SCHEMA_FILES)
    assert {p.name for p in PUBLISHED.glob("*.schema.json")} == {f"{name}.schema.json" for name in schemas}, (
        "docs/schemas holds a schema no loader uses, or misses one: run `ggm schemas export`")
    for name, schema in schemas.items():
        committed = (PUBLISHED / f"{name}.schema.json").read_text(encoding="utf-8")
        assert committed == schema_json(schema), f"docs/schemas/{name}.schema.json is stale: run `ggm schemas export`"


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_each_published_schema_is_draft_2020_12_and_documents_its_keys(name):
    schema = json.loads((PUBLISHED / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] and schema["description"]
    # Editors show the title or description of a key as its help.
    properties = schema.get("properties") or schema["additionalProperties"]["properties"]  # sources: one entry per source
    undocumented = [key for key, spec in properties.items() if not ({"title", "description"} & set(spec))]
    assert not undocumented, f"{name}: keys without a title or description: {undocumented}"


def test_every_declaration_in_the_checkout_has_a_schema():
    covered = {path for _, path in SHIPPED}
    declarations = {path for folder in DECLARATION_FOLDERS for path in (ROOT / folder).glob("*.yaml")}
    assert declarations - covered == set(), "a YAML declaration without a schema: add it to SCHEMA_FILES"
    assert all(_shipped(name) for name in SCHEMA_FILES), "a pattern of SCHEMA_FILES matches no file"


@pytest.mark.parametrize(("name", "path"), SHIPPED, ids=[str(p.relative_to(ROOT)) for _, p in SHIPPED])
def test_every_shipped_declaration_validates_against_its_published_schema(name, path):
    schema = json.loads((PUBLISHED / f"{name}.schema.json").read_text(encoding="utf-8"))
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = [f"{json_path(e.absolute_path)}: {e.message}" for e in Draft202012Validator(schema).iter_errors(document)]
    assert errors == []


def test_ggm_schemas_export_writes_the_schemas_and_prints_the_editor_setting(tmp_path, capsys):
    assert main(["schemas", "export", "--dir", str(tmp_path), "--json"]) == 0
    setting = json.loads(capsys.readouterr().out)
    assert setting == {str(tmp_path.resolve() / f"{name}.schema.json"): list(files) for name, files in SCHEMA_FILES.items()}
    for name in SCHEMA_FILES:
        assert (tmp_path / f"{name}.schema.json").read_text(encoding="utf-8") == \
            (PUBLISHED / f"{name}.schema.json").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- errors in each kind of file


def _dict(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# Per kind: a shipped file to start from, how its loader is called and the error class callers catch.
KINDS: dict[str, tuple[Path, Callable[[Path], object], type[Exception]]] = {
    "mapping": (ROOT / "ggm_mappings" / "wijk.yaml", load_mapping, MappingError),
    "gold-mart": (ROOT / "gold_marts" / "inwoners_per_buurt.yaml", load_mart_definition, GoldError),
    "shares": (ROOT / "config" / "shares.yaml", load_shares_config, SharesConfigError),
    "sources": (ROOT / "ggm_lakehouse" / "model" / "sources.yaml", load_sources, YamlSchemaError),
    "data-contract": (ROOT / "config" / "contracts" / "vth.yaml", DataContract.from_file, ContractError),
    "access": (ROOT / "config" / "access.yaml", load_access_config, AccessConfigError),
    "verwerkingsactiviteiten": (ROOT / "config" / "verwerkingsactiviteiten.yaml", retention.load_policy,
                                retention.RetentionError),
    "vroegsignalering-codelists": (ROOT / "connectors" / "vroegsignalering_codelists.yaml", load_codelists,
                                   SourceConfigError),
}

# Per kind: a value of the wrong shape, the path it is at and the rule the message must state.
STRUCTURAL_ERRORS = {
    "mapping": (lambda d: d.update(load="daily"), "load", "must be snapshot or incremental (found 'daily')"),
    "gold-mart": (lambda d: d["maten"][0].update(functie="total"), "maten[0].functie",
                  "must be avg, count, count_distinct, max, median, min or sum (found 'total')"),
    "shares": (lambda d: d["recipients"][1].update(shares="gemeente_gold"), "recipients[1].shares",
               "must be a list or empty (found 'gemeente_gold')"),
    "sources": (lambda d: d["brp"].update(schedule="nightly"), "brp.schedule",
                "must be a cron expression of five fields in UTC"),
    "data-contract": (lambda d: d["datasets"]["meldingen"]["columns"]["huisnummer"].update(type="number"),
                      "datasets.meldingen.columns.huisnummer.type",
                      "must be string, integer, decimal, date or boolean (found 'number')"),
    "access": (lambda d: d["roles"]["policy"]["grants"].update(gold="SELECT"), "roles.policy.grants.gold",
               "must be a list (found 'SELECT')"),
    "verwerkingsactiviteiten": (lambda d: d["activiteiten"][0]["bewaartermijnen"].update(bronze="1 jaar"),
                                "activiteiten[0].bewaartermijnen.bronze",
                                "must be an ISO 8601 duration in years, months, weeks or days"),
    "vroegsignalering-codelists": (lambda d: d["contact_kanalen"].update(brief=[3]), "contact_kanalen.brief",
                                   "must list at least 2 items"),
}

# Per kind: a key the schema does not know (a typo of a real one, the mistake that would otherwise go unseen).
UNKNOWN_KEYS = {
    "mapping": (lambda d: d.update(on_missing_batches="keep"), "on_missing_batches"),
    "gold-mart": (lambda d: d["maten"][0].update(functies="count"), "maten[0].functies"),
    "shares": (lambda d: d["shares"][0]["schemas"][0]["tables"][0].update(colums=["peildatum"]),
               "shares[0].schemas[0].tables[0].colums"),
    "sources": (lambda d: d["brp"].update(owners="team-x"), "brp.owners"),
    "data-contract": (lambda d: d["datasets"]["meldingen"]["columns"]["status"].update(alowed=["Open"]),
                      "datasets.meldingen.columns.status.alowed"),
    "access": (lambda d: d["local"].update(folder_role={"gold": "policy"}), "local.folder_role"),
    "verwerkingsactiviteiten": (lambda d: d["activiteiten"][0].update(bewaartermijn_silver="P1Y"),
                                "activiteiten[0].bewaartermijn_silver"),
    "vroegsignalering-codelists": (lambda d: d.update(dagdeel={"avond": [1, "AVOND"]}), "dagdeel"),
}


def _broken(kind: str, change: Callable[[dict], object], folder: Path) -> tuple[Path, Callable, type[Exception]]:
    """The kind's shipped file with ``change`` applied, under the same name in ``folder``."""
    original, loader, error = KINDS[kind]
    document = _dict(original)
    change(document)
    path = folder / original.name
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path, loader, error


def test_every_kind_of_file_is_covered():
    assert set(KINDS) == set(STRUCTURAL_ERRORS) == set(UNKNOWN_KEYS) == set(SCHEMA_FILES)
    for kind, (path, loader, _) in KINDS.items():
        loader(path)  # the shipped file itself loads


@pytest.mark.parametrize("kind", sorted(STRUCTURAL_ERRORS))
def test_a_structural_error_names_the_file_the_path_and_the_rule(kind, tmp_path):
    change, where, rule = STRUCTURAL_ERRORS[kind]
    path, loader, error = _broken(kind, change, tmp_path)
    with pytest.raises(error) as caught:
        loader(path)
    message = str(caught.value)
    assert path.name in message and f"{where}: {rule}" in message


@pytest.mark.parametrize("kind", sorted(UNKNOWN_KEYS))
def test_an_unknown_key_is_refused_in_every_kind_of_file(kind, tmp_path):
    change, where = UNKNOWN_KEYS[kind]
    path, loader, error = _broken(kind, change, tmp_path)
    key = where.rsplit(".", 1)[-1]
    with pytest.raises(error) as caught:
        loader(path)
    message = str(caught.value)
    assert path.name in message and f"{where}: unknown key {key!r}; allowed here: " in message


# --------------------------------------------------------------------------- the messages themselves


@pytest.mark.parametrize(("parts", "text"), [
    ((), "(top level)"),
    (("recipients", 2, "shares"), "recipients[2].shares"),
    (("recipients", 0, "tables", "s.sc.t", "columns"), 'recipients[0].tables["s.sc.t"].columns'),
    (("columns", "Bad Name"), 'columns["Bad Name"]'),
])
def test_json_paths_read_like_the_yaml(parts, text):
    assert json_path(parts) == text


def test_a_value_in_the_wrong_form_is_told_by_the_form_it_most_looks_like(tmp_path):
    path = tmp_path / "wijk.yaml"
    base = "target: WIJK\nsource: x\nfields: {a: $.a}\nbusiness_key: [a]\n"
    cases = {
        "columns: {WIJKCODE: {expr: a, type: float}}": "columns.WIJKCODE.type: must be bigint, boolean",
        "columns: {WIJKCODE: {key: WIJK}}": "columns.WIJKCODE: required key 'of' is missing",
        "columns: {WIJKCODE: 5}": "columns.WIJKCODE: must be a Spark SQL expression over the fields (type string), "
                                 "a computed column (expr, type) or the surrogate key of another GGM table (key, of) "
                                 "(found 5)",
        "columns: {WIJKCODE: a}\nquality: [{rule: not_null}]": "quality[0]: needs one of the keys 'field' or 'column'",
        "columns: {WIJKCODE: a}\nquality: [{rule: pattern, field: a}]": "quality[0]: required key 'pattern' is missing",
    }
    for body, expected in cases.items():
        path.write_text(base + body + "\n", encoding="utf-8")
        with pytest.raises(MappingError) as caught:
            load_mapping(path)
        assert expected in str(caught.value), body


def test_several_problems_are_named_at_once_most_telling_first(tmp_path):
    path = tmp_path / "wijk.yaml"
    path.write_text("target: WIJK\nfields: {a: a}\nbusiness_key: a\ncolumns: {WIJKCODE: a}\n", encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    assert str(caught.value) == (
        "wijk.yaml: (top level): required key 'source' is missing; business_key: must be a list (found 'a'); "
        "fields.a: must be a JSON path into the record, starting with $ (e.g. $.naam.voornamen) (found 'a')")
