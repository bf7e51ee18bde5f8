"""The declarative gold engine on known inputs: cells, totals, suppression, denominators and status.

A small municipality (tests/gold_support.py: two wijken, four buurten, CBS inwoners 4,000) with
known clients; the expected cells are counted by hand in the comments. The proof that no hidden
cell can be recomputed runs on a test mart and on ``inwoners_per_buurt`` (its checked-in definition)
as demo-partner's share of it holds it.
"""
from __future__ import annotations

import itertools
import textwrap
from datetime import date

import pytest

from tests.gold_support import write_population, write_silver_table

PEILDATUM = date(2026, 6, 8)

# buurt → number of Wmo and Jeugd clients living there (one person per household address).
CLIENTS = {
    "BU99990101": {"Wmo": 7, "Jeugdwet": 2},   # Jeugd 2 < 5: hidden (primary)
    "BU99990102": {"Wmo": 6, "Jeugdwet": 5},
    "BU99990201": {"Wmo": 12, "Jeugdwet": 9},
    "BU99990202": {"Wmo": 5, "Jeugdwet": 8},
}

MART_YAML = """
mart: test_clienten
domein: sociaal_domein
titel: Cliënten per buurt en wet
beschrijving: Test mart over known clients.
eigenaar: test
bronnen: [CLIENTEN_TEST, INWONERS]
eenheden: |
  SELECT i.buurtcode, c.WET AS wet, c.NATUURLIJKPERSOON_ID AS client, c.BEDRAG AS bedrag
  FROM CLIENTEN_TEST c JOIN INWONERS i ON i.NATUURLIJKPERSOON_ID = c.NATUURLIJKPERSOON_ID
gebied: buurt
dimensies: [{kolom: wet}]
maten:
  - {kolom: aantal_clienten, functie: count_distinct, van: client}
  - {kolom: bedrag, functie: sum, van: bedrag}
personen: aantal_clienten
per_1000_inwoners: [aantal_clienten]
"""


@pytest.fixture(scope="module")
def built(spark, data_root, tmp_path_factory):
    from jobs import gold

    households, clients = {}, []
    address = 1
    for buurt, per_wet in CLIENTS.items():
        for wet, count in per_wet.items():
            for _ in range(count):
                households[address] = (buurt, [(f"pseudo-{address}", date(1950, 1, 1))])
                clients.append({"NATUURLIJKPERSOON_ID": address * 100, "WET": wet, "BEDRAG": 100})
                address += 1
    for _ in range(5):  # addresses outside every known buurt
        households[address] = ("BU00000000", [(f"pseudo-{address}", date(1950, 1, 1))])
        clients.append({"NATUURLIJKPERSOON_ID": address * 100, "WET": "Wmo", "BEDRAG": 100})
        address += 1
    write_population(spark, households)
    write_silver_table(spark, "CLIENTEN_TEST", clients, "NATUURLIJKPERSOON_ID BIGINT, WET STRING, BEDRAG INT")
    folder = tmp_path_factory.mktemp("marts")
    path = folder / "test_clienten.yaml"
    path.write_text(MART_YAML, encoding="utf-8")
    definition = gold.load_mart_definition(path)
    frame = gold.build_mart(spark, definition, PEILDATUM)
    rows = [r.asDict() for r in frame.collect()]
    return {"definition": definition, "frame": frame, "rows": rows}


def cell(rows, level, code, wet):
    return next(r for r in rows if r["gebiedsniveau"] == level and r["gebiedscode"] == code and r["wet"] == wet)


def test_cells_and_totals_count_known_clients(built):
    rows = built["rows"]
    assert cell(rows, "buurt", "BU99990201", "Wmo")["aantal_clienten"] == 12
    assert cell(rows, "buurt", "BU99990201", "Totaal")["aantal_clienten"] == 21
    assert cell(rows, "wijk", "WK999902", "Jeugdwet")["aantal_clienten"] == 17
    gemeente = cell(rows, "gemeente", "GM9999", "Totaal")
    assert gemeente["aantal_clienten"] == sum(sum(v.values()) for v in CLIENTS.values()) + 5
    assert gemeente["gebiedsnaam"] == "Demodam"
    # Addresses outside every known buurt land in buurt and wijk 'onbekend', and count in the gemeente.
    onbekend = [r for r in rows if r["gebiedscode"] == "onbekend"]
    assert {r["gebiedsniveau"] for r in onbekend} == {"buurt", "wijk"}


def test_denominators_come_from_cbs(built):
    row = cell(built["rows"], "buurt", "BU99990201", "Totaal")
    assert row["inwoners"] == 1500 and row["huishoudens"] == 750
    assert row["aantal_clienten_per_1000_inwoners"] == pytest.approx(14.0)
    assert cell(built["rows"], "wijk", "WK999901", "Totaal")["wijkcode"] == "WK999901"
    assert cell(built["rows"], "buurt", "BU99990102", "Wmo")["wijkcode"] == "WK999901"


def test_small_cells_are_hidden_with_all_their_measures(built):
    small = cell(built["rows"], "buurt", "BU99990101", "Jeugdwet")
    assert small["onderdrukt"] and small["onderdrukking"] == "primair"
    assert small["aantal_clienten"] is None and small["bedrag"] is None
    assert small["aantal_clienten_per_1000_inwoners"] is None
    published = [r["aantal_clienten"] for r in built["rows"] if not r["onderdrukt"]]
    assert min(published) >= 5


def test_secondary_suppression_protects_the_hidden_cell(built):
    rows = built["rows"]
    secondary = {(r["gebiedscode"], r["wet"]) for r in rows if r["onderdrukking"] == "secundair"}
    # Worked by hand: buurt 0101's total (9) would reveal its hidden Jeugd cell, so its Wmo cell (the only
    # other component) goes; wijk 01's Jeugd (7) and Wmo (13) totals would then reveal 0101's cells, so
    # buurt 0102's Jeugd (5) and Wmo (6) go as well. Wijk 02 and the gemeente stay untouched.
    assert secondary == {("BU99990101", "Wmo"), ("BU99990102", "Jeugdwet"), ("BU99990102", "Wmo")}
    assert all(r["aantal_clienten"] is None for r in rows if r["onderdrukking"] == "secundair")
    assert cell(rows, "buurt", "BU99990102", "Totaal")["aantal_clienten"] == 11


# inwoners_per_buurt on a known population: address → (buurt, [(pseudonym, born)]). On PEILDATUM someone born
# 1996 is 30 (25-44), 1956 is 70 (65+), 1976 is 50 (45-64), 1986 is 40, 2006 is 20 (15-24), 2018 is 8 (0-14).
def _inwoners_households() -> dict:
    households: dict = {}

    def add(buurt, *born):
        households[len(households) + 1] = (buurt, [(f"inw-{len(households)}-{i}", b) for i, b in enumerate(born)])

    for _ in range(8):
        add("BU99990101", date(1996, 1, 1))                    # eenpersoons 25-44: 8
    for _ in range(3):
        add("BU99990101", date(1956, 1, 1))                    # eenpersoons 65+: 3 < 5, hidden
    for _ in range(6):
        add("BU99990102", date(1996, 1, 1))
        add("BU99990102", date(1956, 1, 1))
    for _ in range(5):
        add("BU99990201", date(1986, 1, 1), date(2018, 1, 1))  # eenouderhuishouden: 25-44 and 0-14
    for _ in range(9):
        add("BU99990201", date(1976, 1, 1))
    for _ in range(4):
        add("BU99990202", date(2006, 1, 1), date(1976, 1, 1))  # two adults, no partners: overig
    for _ in range(7):
        add("BU99990202", date(1956, 1, 1))
    add("BU00000000", date(1996, 1, 1))                        # an address outside every known buurt
    return households


INWONERS_TOTAL = 8 + 3 + 12 + 10 + 9 + 8 + 7 + 1  # residents of _inwoners_households


def _as_partner_sees_it(row: dict) -> dict:
    """A row with its area level and code taken from the columns the share gives the partner:
    a gemeente row has no wijkcode, a wijk row no buurtcode."""
    level = "gemeente" if row["wijkcode"] is None else "wijk" if row["buurtcode"] is None else "buurt"
    code = {"gemeente": None, "wijk": row["wijkcode"], "buurt": row["buurtcode"]}[level]
    return {**row, "gebiedsniveau": level, "gebiedscode": code}


@pytest.fixture(scope="module")
def partner_inwoners(spark, tmp_path_factory):
    """inwoners_per_buurt from its checked-in definition on the known population, written to gold, and
    demo-partner's projection of it as config/shares.yaml declares it (the files the partner downloads)."""
    from deltalake import DeltaTable

    from ggm_lakehouse.config import lake_root, project_root
    from ggm_lakehouse.lake import LakeTable
    from ggm_lakehouse.model.shares_config import load_shares_config
    from jobs import gold
    from sharing_server.projections import materialise_table

    definition = gold.DEFINITIONS["inwoners_per_buurt"]
    with pytest.MonkeyPatch.context() as patch:
        # A lake of its own: the other tests of this module count clients in theirs.
        patch.setenv("GGM_DATA_ROOT", str(tmp_path_factory.mktemp("inwoners")))
        write_population(spark, _inwoners_households())
        gold.write_mart_partition(spark, definition.mart, gold.build_mart(spark, definition, PEILDATUM), PEILDATUM)
        gold_rows = [r.asDict() for r in LakeTable("gold", definition.mart).read(spark).collect()]
        config = load_shares_config(project_root() / "config" / "shares.yaml")
        partner = config.recipient("demo-partner")
        table = next(t for share in config.shares_for(partner) for t in share.all_tables() if t.name == definition.mart)
        report = materialise_table(partner, table, lake_root=lake_root())
        shared = DeltaTable(report["location"]).to_pyarrow_table().to_pylist()
    return {"definition": definition, "gold": gold_rows, "shared": shared, "columns": report["columns"],
            "share_columns": list(table.columns)}


def _dims_key(row: dict, definition) -> tuple:
    return (row["gebiedsniveau"], row["gebiedscode"], *[row[d.kolom] for d in definition.dimensies])


@pytest.fixture(params=["test_clienten", "inwoners_per_buurt, demo-partner's share"])
def published(request):
    """What a reader gets of a mart: the rows (with area level and code), the definition, the cells hidden
    secondarily and a primary cell that a total would reveal without them."""
    if request.param == "test_clienten":
        built = request.getfixturevalue("built")
        rows, definition = built["rows"], built["definition"]
        secondary = {_dims_key(r, definition) for r in rows if r["onderdrukking"] == "secundair"}
        return {"rows": rows, "definition": definition, "secondary": secondary,
                "revealed": ("buurt", "BU99990101", "Jeugdwet")}
    inwoners = request.getfixturevalue("partner_inwoners")
    definition = inwoners["definition"]
    secondary = {_dims_key(_as_partner_sees_it(r), definition) for r in inwoners["gold"] if r["onderdrukking"] == "secundair"}
    # Buurt 0101's eenpersoons total (11) minus its published 25-44 cell (8) would give its 65+ cell (3).
    return {"rows": [_as_partner_sees_it(r) for r in inwoners["shared"]], "definition": definition,
            "secondary": secondary, "revealed": ("buurt", "BU99990101", "65+", "eenpersoonshuishouden")}


def _unknown_is_determined(rows, definition) -> list[str]:
    """Hidden cells that the published rows pin down exactly (linear algebra over every relation).

    ``rows`` carry gebiedsniveau, gebiedscode, wijkcode, the dimensions, ``onderdrukt`` and the
    definition's person count, the measure that decides suppression.
    """
    import numpy as np

    from jobs.gold import TOTAL

    dims = [d.kolom for d in definition.dimensies]
    measure = definition.personen

    def key(r):
        return (r["gebiedsniveau"], r["gebiedscode"], *[r[d] for d in dims])

    by_key = {key(r): r for r in rows}
    hidden = sorted(k for k, r in by_key.items() if r["onderdrukt"])
    index = {k: i for i, k in enumerate(hidden)}
    equations = []  # (coefficients over hidden cells, constant)

    def relation(parent, children):
        coefficients = np.zeros(len(hidden))
        constant = 0.0
        for child in children:
            if child in index:
                coefficients[index[child]] += 1
            else:
                constant += by_key[child][measure]
        if parent in index:
            coefficients[index[parent]] -= 1
        else:
            constant -= by_key[parent][measure]
        equations.append((coefficients, -constant))

    for parent in by_key:
        level, code, *values = parent
        for axis, value in enumerate(values):
            if value == TOTAL:
                children = [k for k in by_key if k[:2] == parent[:2] and k[2 + axis] != TOTAL
                            and all(k[2 + j] == v for j, v in enumerate(values) if j != axis)]
                relation(parent, children)
        finer = {"gemeente": "wijk", "wijk": "buurt"}.get(level)
        if finer:
            children = [k for k in by_key if k[0] == finer and tuple(k[2:]) == tuple(values)
                        and (level == "gemeente" or by_key[k]["wijkcode"] == code)]
            relation(parent, children)
    matrix = np.array([c for c, _ in equations]) if equations else np.zeros((0, len(hidden)))
    rank = np.linalg.matrix_rank(matrix) if len(matrix) else 0
    determined = []
    for k, i in index.items():
        unit = np.zeros(len(hidden))
        unit[i] = 1
        # e_i is in the row space exactly when adding it does not raise the rank.
        if np.linalg.matrix_rank(np.vstack([matrix, unit])) == rank:
            determined.append(k)
    return determined


def test_no_hidden_cell_can_be_recomputed_from_the_published_rows(published):
    assert published["secondary"], "the known inputs need secondary suppression"
    assert _unknown_is_determined(published["rows"], published["definition"]) == []


def test_without_secondary_suppression_the_hidden_cell_would_be_recomputable(published):
    """The check above can fail: drop the secondary cells' protection and it finds the primary cell."""
    definition = published["definition"]
    rows = [dict(r) for r in published["rows"]]
    for r in rows:
        if _dims_key(r, definition) in published["secondary"]:
            r["onderdrukt"] = False
            r[definition.personen] = 1  # any published value
    determined = _unknown_is_determined(rows, definition)
    assert published["revealed"] in determined


def _expected_inwoners() -> dict:
    """Residents per (wijkcode, buurtcode, leeftijdsklasse, huishoudtype) of the known population, totals
    included (None for the gemeente's wijkcode and a wijk's buurtcode), counted here without Spark."""
    from collections import Counter

    from tests.gold_support import BUURTEN

    bands = ((0, 14, "0-14"), (15, 24, "15-24"), (25, 44, "25-44"), (45, 64, "45-64"), (65, 200, "65+"))
    counts: Counter = Counter()
    for buurt, people in _inwoners_households().values():
        ages = [PEILDATUM.year - born.year - ((PEILDATUM.month, PEILDATUM.day) < (born.month, born.day))
                for _, born in people]
        adults = sum(age >= 18 for age in ages)  # nobody in the population has a partner
        kind = ("eenpersoonshuishouden" if len(ages) == 1 else "eenouderhuishouden" if adults == 1
                else "overig meerpersoonshuishouden")
        wijk, buurtcode = (BUURTEN[buurt][1], buurt) if buurt in BUURTEN else ("onbekend", "onbekend")
        for age in ages:
            band = next(label for low, high, label in bands if low <= age <= high)
            for area in ((None, None), (wijk, None), (wijk, buurtcode)):
                for klasse in (band, "Totaal"):
                    for huishoudtype in (kind, "Totaal"):
                        counts[(*area, klasse, huishoudtype)] += 1
    return counts


def test_inwoners_per_buurt_counts_residents_and_demo_partner_gets_the_shared_columns(partner_inwoners):
    """The declared mart keeps the columns and names the share has always given demo-partner, and every
    cell it publishes is the count of the known population."""
    shared = partner_inwoners["shared"]
    assert partner_inwoners["columns"] == partner_inwoners["share_columns"] == [
        "peildatum", "wijkcode", "wijknaam", "buurtcode", "buurtnaam", "leeftijdsklasse", "huishoudtype",
        "aantal_inwoners", "onderdrukt"]
    expected = _expected_inwoners()
    rows = {(r["wijkcode"], r["buurtcode"], r["leeftijdsklasse"], r["huishoudtype"]): r for r in shared}
    assert len(rows) == len(shared) and set(rows) == set(expected)  # every cell and total, once
    assert all(r["aantal_inwoners"] == expected[k] for k, r in rows.items() if not r["onderdrukt"])
    assert rows[(None, None, "Totaal", "Totaal")]["aantal_inwoners"] == INWONERS_TOTAL == 58
    # Small cells are hidden; so are the cells that would let them be recomputed (secundair in gold).
    assert all(r["onderdrukt"] and r["aantal_inwoners"] is None for k, r in rows.items() if expected[k] < 5)
    assert all(r["onderdrukt"] == (r["aantal_inwoners"] is None) for r in shared)
    reasons = {r["onderdrukking"] for r in partner_inwoners["gold"]}
    assert reasons == {None, "primair", "secundair"}
    assert sum(r["onderdrukt"] for r in shared) > sum(1 for v in expected.values() if v < 5)
    # Area names as columns of their own; a wijk row has no buurt, an address outside every buurt is 'onbekend'.
    oude_kern = rows[("WK999901", "BU99990101", "25-44", "eenpersoonshuishouden")]
    assert (oude_kern["buurtnaam"], oude_kern["wijknaam"]) == ("Oude Kern", "Centrum")
    noord = rows[("WK999902", None, "Totaal", "Totaal")]
    assert (noord["wijknaam"], noord["buurtnaam"]) == ("Noord", None)
    assert rows[("onbekend", "onbekend", "Totaal", "Totaal")]["wijknaam"] == "onbekend"
    assert {r["peildatum"] for r in shared} == {PEILDATUM}


def test_secondary_suppression_rule_on_a_table():
    from jobs.gold import secondary_suppression

    # total T = a + b + c; a hidden; b is the smallest published → hidden too; nothing else.
    relations = [("T", ["a", "b", "c"])]
    counts = {"T": 20, "a": 2, "b": 6, "c": 12}
    assert secondary_suppression(relations, {"a"}, counts) == {"a": "primair", "b": "secundair"}
    # A hidden total with all components published → the smallest component goes too.
    assert secondary_suppression(relations, {"T"}, counts) == {"T": "primair", "a": "secundair"}
    # Chains: hiding b in the second relation makes it lone there → d is hidden as well.
    chained = [("T", ["a", "b", "c"]), ("U", ["b", "d"])]
    result = secondary_suppression(chained, {"a"}, {**counts, "U": 15, "d": 9})
    assert result == {"a": "primair", "b": "secundair", "d": "secundair"}


def test_status_records_silver_versions_and_reruns_leave_gold_alone(spark, built):
    from ggm_lakehouse.lake import LakeTable
    from jobs import gold

    definition = built["definition"]
    assert gold.write_mart_partition(spark, definition.mart, built["frame"], PEILDATUM) is True
    first = gold.write_mart_status(spark, definition.mart, definition.domein, PEILDATUM, definition.inputs, definition.sha256)
    assert first["changed"] and set(first["bronversies"]) == set(definition.inputs)
    assert first["onderdrukte_cellen_primair"] >= 1 and first["onderdrukte_cellen_secundair"] >= 1
    again = gold.build_mart(spark, definition, PEILDATUM)
    assert gold.write_mart_partition(spark, definition.mart, again, PEILDATUM) is False
    second = gold.write_mart_status(spark, definition.mart, definition.domein, PEILDATUM, definition.inputs, definition.sha256)
    assert second["changed"] is False and second["gebouwd_op"] == first["gebouwd_op"]
    status = LakeTable("gold", gold.STATUS_TABLE).read(spark).where(f"mart = '{definition.mart}'").collect()
    assert len(status) == 1 and status[0]["definitie_sha256"] == definition.sha256


@pytest.mark.parametrize("change, message", [
    ({"domein": "sport"}, "domein"),
    ({"gebied": "provincie"}, "gebied"),
    ({"personen": "bedrag"}, "count"),
    ({"per_1000_inwoners": ["onbekende_maat"]}, "per_1000_inwoners"),
    ({"extra": 1}, "extra: unknown key 'extra'"),
    ({"gebied": "wijk", "gebiedskolommen": ["wijknaam", "buurtnaam"]}, "gebiedskolommen"),
])
def test_definition_errors_name_the_file_and_the_key(tmp_path, change, message):
    import yaml

    from jobs.gold import GoldError, load_mart_definition

    raw = yaml.safe_load(MART_YAML)
    raw.update(change)
    path = tmp_path / "test_clienten.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(GoldError, match=message) as error:
        load_mart_definition(path)
    assert str(path) in str(error.value)


def test_every_checked_in_mart_definition_loads_and_names_silver_tables_that_have_mappings():
    from jobs.gold import DEFINITIONS, HELPER_VIEWS
    from ggm_lakehouse.model.mappings import load_all

    targets = {m.target for m in load_all()}
    for name, definition in DEFINITIONS.items():
        unknown = set(definition.inputs) - targets - set(HELPER_VIEWS)
        assert unknown == set(), f"{definition.path}: bronnen {sorted(unknown)} have no silver mapping"


def test_a_source_that_has_not_delivered_yet_reads_as_empty_only_when_it_may_skip_days(spark, data_root):
    """CONTACTPOGING comes from a weekly partner file (on_missing_batch: keep): once its source system has
    delivered (VROEGSIGNAAL exists) a mart counts no contacts instead of waiting. Before that, and for a
    daily source, a missing table is an error."""
    from jobs.gold import GoldError, silver_as_of
    from ggm_lakehouse.model.mappings import load_all

    contactpoging = next(m for m in load_all() if m.target == "CONTACTPOGING")
    with pytest.raises(GoldError, match="CONTACTPOGING"):
        silver_as_of(spark, "CONTACTPOGING", PEILDATUM)  # nothing of vroegsignalering delivered yet
    write_silver_table(spark, "VROEGSIGNAAL", [{"VROEGSIGNAAL_ID": 1}], "VROEGSIGNAAL_ID BIGINT")
    frame = silver_as_of(spark, "CONTACTPOGING", PEILDATUM)
    assert frame.count() == 0
    assert {c.name for c in contactpoging.columns} | {"CONTACTPOGING_ID", "DWH_DATUMTIJDGELDIGVANAF"} <= set(frame.columns)
    assert dict(frame.dtypes)["DATUM"] == "date"
    pand = next(m for m in load_all() if m.target == "PAND")  # BAG: delivered every day
    assert pand.on_missing_batch != "keep"
    with pytest.raises(GoldError, match="PAND"):
        silver_as_of(spark, "PAND", PEILDATUM)
