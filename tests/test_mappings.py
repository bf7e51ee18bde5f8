"""The declarative GGM mappings: valid, complete and spelled exactly as GGM v2.5.1."""
from __future__ import annotations

from pathlib import Path

import pytest

from ggm_lakehouse.model.mappings import MappingError, load_all, load_mapping

REQUIRED_TARGETS = {
    "NATUURLIJKPERSOON",
    "INGESCHREVENPERSOON",
    "WOONPLAATS",
    "OPENBARERUIMTE",
    "PAND",
    "VERBLIJFSOBJECT",
    "NUMMERAANDUIDING",
    "WIJK",
    "BUURT",
}


def test_every_required_ggm_target_has_exactly_one_mapping_file():
    targets = [m.target for m in load_all()]
    assert sorted(targets) == sorted(set(targets))
    assert REQUIRED_TARGETS <= set(targets)


@pytest.mark.parametrize("mapping", load_all(), ids=lambda m: m.target)
def test_mapping_uses_ggm_table_and_column_names(mapping, ggm_tables):
    if not mapping.ggm:
        # The lakehouse's own reference tables must never shadow a GGM table name.
        assert mapping.target not in ggm_tables, f"{mapping.target} is a GGM table; it cannot be marked ggm: false"
        return
    assert mapping.target in ggm_tables, f"{mapping.target} is not a GGM v2.5.1 table"
    table = ggm_tables[mapping.target]
    known = set(table["columns"]) | set(table.get("columns_union", []))
    mapped = {c.name for c in mapping.columns} | {mapping.surrogate_key}
    assert mapped <= known, f"{mapping.target}: not in GGM: {sorted(mapped - known)}"


def test_references_are_ordered_before_their_users():
    order = [m.target for m in load_all()]
    for mapping in load_all():
        for dependency in mapping.depends_on:
            assert order.index(dependency) < order.index(mapping.target)


def test_bsn_columns_are_pseudonymised():
    mappings = {m.target: m for m in load_all()}
    person = mappings["NATUURLIJKPERSOON"]
    bsn = next(c for c in person.columns if c.name == "BURGERSERVICENUMMER")
    assert bsn.pseudonymise and bsn.sensitivity == "bsn-derived"
    # Every mapping keyed on a BSN keys on its pseudonym.
    for mapping in mappings.values():
        if "bsn" in mapping.business_key:
            assert "bsn" in mapping.pseudonymised_fields, mapping.target


@pytest.mark.parametrize(
    "body, message",
    [
        ("target: wijk\nsource: x\nfields: {a: $.a}\nbusiness_key: [a]\ncolumns: {WIJKCODE: a}\n",
         "target: must be an upper-case GGM table name"),
        ("target: WIJK\nsource: x\nfields: {a: $.a}\nbusiness_key: [b]\ncolumns: {WIJKCODE: a}\n", "business_key field 'b'"),
        ("target: WIJK\nsource: x\nfields: {a: $.a}\nbusiness_key: [a]\ncolumns: {WijkCode: a}\n",
         "columns.WijkCode: the name must be an upper-case GGM column name"),
        (
            "target: WIJK\nsource: x\nfields: {a: $.a}\nbusiness_key: [a]\ncolumns: {WIJKCODE: a}\n"
            "quality: [{rule: shiny, field: a}]\n",
            "quality[0].rule: must be date, elfproef, in_set, not_null, pattern or reference (found 'shiny')",
        ),
        ("target: WIJK\nsource: x\nfields: {a: $.a}\nbusiness_key: [a]\ncolumns: {DWH_BRONSYSTEEM: a}\n", "DWH_"),
        (
            "target: WIJK\nsource: x\nfields: {a: $.a}\nbusiness_key: [a]\n"
            "columns: {WIJKCODE: {expr: a, pseudonymise: true}}\n",
            "list it under pseudonymised_fields",
        ),
        (
            "target: WIJK\nsource: x\nfields: {a: $.a, wijkcode: $.c}\nbusiness_key: [a]\n"
            "columns: {WIJKCODE: 'trim(wijkcode)'}\n",
            "only in case",
        ),
        (
            "target: WIJK\nsource: x\nfields: {a: $.a}\nbusiness_key: [a]\ncolumns: {WIJKCODE: a}\n"
            "on_missing_batch: ignore\n",
            "on_missing_batch: must be fail or keep (found 'ignore')",
        ),
    ],
)
def test_invalid_mapping_names_file_and_problem(tmp_path: Path, body, message):
    path = tmp_path / "wijk.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(MappingError) as error:
        load_mapping(path)
    assert "wijk.yaml" in str(error.value) and message in str(error.value)
