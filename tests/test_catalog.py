"""The data catalog: generated JSON and static HTML from mappings, marts, shares and run reports.

No Spark: Delta tables for the freshness/schema checks are written with ``deltalake``.
"""
from __future__ import annotations

import json
import shutil
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ggm_lakehouse import catalog as cat
from ggm_lakehouse.config import project_root
from tests.specs import SHARED, available, missing_reason

GGM_DDL = SHARED / "ggm" / "ddl"
def _silver_tables() -> set[str]:
    """Every mapping's target: the catalog must list exactly the tables the mappings build."""
    from ggm_lakehouse.model.mappings import load_all

    return {m.target for m in load_all()}


SILVER_TABLES = _silver_tables()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty data root; mappings and shares from the checkout; no GGM descriptions unless asked."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("GGM_DATA_ROOT", str(root))
    for name in ("GGM_LAKE_ROOT", "GGM_MAPPINGS_DIR", "GGM_DESCRIPTIONS_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GGM_SHARES_CONFIG", str(project_root() / "config" / "shares.yaml"))
    return root


def _by_name(catalog: dict) -> dict[tuple[str, str], dict]:
    return {(t["layer"], t["ggm_name"] or t["name"]): t for t in catalog["tables"]}


def _column(table: dict, name: str) -> dict:
    return next(c for c in table["columns"] if c["name"] == name)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"])
        if tag in ("script", "link", "img"):
            self.scripts += 1


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_catalog_lists_every_table_with_sources_sensitivity_and_shares(env, tmp_path):
    out = tmp_path / "catalog"
    catalog = cat.build_catalog(out)
    on_disk = json.loads((out / "catalog.json").read_text(encoding="utf-8"))
    assert on_disk["tables"] == catalog["tables"]
    tables = _by_name(on_disk)

    assert {name for layer, name in tables if layer == "silver"} == SILVER_TABLES
    assert {"NATUURLIJKPERSOON", "VERBLIJFSOBJECT", "BUURT"} <= SILVER_TABLES
    from jobs.gold import DEFINITIONS

    assert {name for layer, name in tables if layer == "gold"} == set(DEFINITIONS)

    persoon = tables[("silver", "NATUURLIJKPERSOON")]
    assert persoon["name"] == "natuurlijkpersoon"
    assert persoon["source"] == {"bronze_table": "brp_personen", "source_system": "BRP", "lookups": []}
    assert persoon["owner"]
    assert _column(persoon, "BURGERSERVICENUMMER")["sensitivity"] == "bsn-derived"
    # An unkeyed hash of the BSN can be reversed by hashing every BSN: classified as the BSN itself.
    assert _column(persoon, "NATUURLIJKPERSOON_ID")["sensitivity"] == "bsn-derived"
    woonplaats = tables[("silver", "WOONPLAATS")]
    assert (_column(woonplaats, "WOONPLAATS_ID")["sensitivity"], _column(woonplaats, "WOONPLAATS_ID")["key_role"]) == ("key", "primary")
    assert _column(tables[("silver", "NUMMERAANDUIDING")], "LIGT_IN_BUURT_ID")["sensitivity"] == "reference"
    assert {r["rule"] for r in persoon["quality_rules"]} >= {"not_null", "elfproef"}
    assert "inwoners_per_buurt" in persoon["used_by"]

    ingeschreven = tables[("silver", "INGESCHREVENPERSOON")]
    adres = _column(ingeschreven, "HEEFT_ALS_ADRES_NUMMERAANDUIDING_ID")
    assert (adres["sensitivity"], adres["references"]) == ("reference", "NUMMERAANDUIDING")
    assert _column(ingeschreven, "PARTNERID")["sensitivity"] == "bsn-derived"
    assert _column(ingeschreven, "NATUURLIJKPERSOON_ID")["sensitivity"] == "bsn-derived"
    assert _column(ingeschreven, "DWH_DATUMTIJDGELADEN")["type"] == "timestamp"

    mart = tables[("gold", "inwoners_per_buurt")]
    assert mart["schema_source"] == "declared"  # no lake in this data root
    assert [c["name"] for c in mart["columns"]][0] == "peildatum"
    assert set(mart["source"]["silver_tables"]) <= SILVER_TABLES
    assert "INGESCHREVENPERSOON" in mart["source"]["silver_tables"]
    assert [s["qualified_name"] for s in mart["shared_as"]] == ["gemeente_gold.demografie.inwoners_per_buurt"]
    assert mart["shared_as"][0]["recipients"] == ["demo-partner"]
    # Nothing ran in this data root.
    assert persoon["freshness"]["report_date"] is None and persoon["quality_results"] is None


def test_every_mart_brings_its_catalog_text_from_its_definition_file():
    """Every mart is a gold_marts/*.yaml file; the catalog takes its description, inputs and columns from it."""
    from jobs.gold import DEFINITIONS

    assert not hasattr(cat, "GOLD_DEFINITIONS")  # no hand-written catalog text beside the definitions
    for name, mart in DEFINITIONS.items():
        entry = cat._declared_gold_definition(mart)
        assert entry.upstream == mart.inputs and mart.titel in entry.description
        assert {m.kolom for m in mart.maten} <= {c[0] for c in entry.columns}
    # inwoners_per_buurt declares every column its share gives demo-partner.
    from ggm_lakehouse.model.shares_config import load_shares_config

    shared = next(t for s in load_shares_config().shares for t in s.all_tables() if t.name == "inwoners_per_buurt")
    declared = [c[0] for c in cat._declared_gold_definition(DEFINITIONS["inwoners_per_buurt"]).columns]
    assert set(shared.columns) <= set(declared)
    assert declared.index("wijknaam") < declared.index("buurtcode") < declared.index("buurtnaam") < declared.index("leeftijdsklasse")


@pytest.mark.skipif(not available("ggm/ddl"), reason=missing_reason("ggm/ddl"))
def test_ggm_attribute_descriptions_from_json_schema(env, tmp_path, monkeypatch):
    monkeypatch.setenv("GGM_DESCRIPTIONS_PATH", str(GGM_DDL))
    catalog = cat.build_catalog(tmp_path / "catalog")
    ingeschreven = _by_name(catalog)[("silver", "INGESCHREVENPERSOON")]
    expected = json.loads(
        (GGM_DDL / "v2.5.1/ddl/0 Bestuur, Politiek en Ondersteuning/Burgerzaken/Burgerzaken.json").read_text("utf-8")
    )["$defs"]["INGESCHREVENPERSOON"]["properties"]["GEMEENTEVANINSCHRIJVING"]["description"]
    column = _column(ingeschreven, "GEMEENTEVANINSCHRIJVING")
    assert column["ggm_description"] == " ".join(expected.split())
    assert column["description"] == column["ggm_description"]
    assert ingeschreven["ggm_definition"]
    # A pseudonymised column keeps the mapping's note: it does not hold what the GGM describes.
    partner = _column(ingeschreven, "PARTNERID")
    assert partner["description"].startswith("Pseudonym")
    assert catalog["ggm_descriptions"] == str(GGM_DDL)


def test_missing_ggm_descriptions_path_is_an_error(env, tmp_path):
    with pytest.raises(FileNotFoundError):
        cat.build_catalog(tmp_path / "catalog", ggm_descriptions=tmp_path / "nowhere")
    assert cat.main(["build", "--out", str(tmp_path / "c"), "--ggm-descriptions", str(tmp_path / "nowhere")]) == 2


def test_one_page_per_table_and_every_link_resolves(env, tmp_path):
    out = tmp_path / "catalog"
    catalog = cat.build_catalog(out)
    pages = sorted(p.relative_to(out).as_posix() for p in (out / "tables").rglob("*.html"))
    assert pages == sorted(t["page"] for t in catalog["tables"])
    from jobs.gold import DEFINITIONS

    assert len(pages) == len(SILVER_TABLES) + len(DEFINITIONS)

    index = _parse(out / "index.html")
    assert sorted(index.hrefs) == pages
    for page in [out / "index.html", *(out / p for p in pages)]:
        parsed = _parse(page)
        assert parsed.scripts == 0, f"{page} loads external or script content"
        for href in parsed.hrefs:
            assert (page.parent / href).resolve().is_file(), f"{page.name}: broken link {href}"


def test_html_escapes_descriptions_from_mappings(env, tmp_path, monkeypatch):
    mappings = tmp_path / "mappings"
    shutil.copytree(project_root() / "ggm_mappings", mappings)
    hostile = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    text = (mappings / "woonplaats.yaml").read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.startswith("description:")]
    lines.insert(1, "description: " + json.dumps(hostile))
    (mappings / "woonplaats.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setenv("GGM_MAPPINGS_DIR", str(mappings))

    out = tmp_path / "catalog"
    catalog = cat.build_catalog(out)
    assert _by_name(catalog)[("silver", "WOONPLAATS")]["description"] == hostile
    for page in (out / "index.html", out / "tables" / "silver" / "woonplaats.html"):
        content = page.read_text(encoding="utf-8")
        assert "<script" not in content and "<img" not in content
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img" in content


def test_freshness_and_quality_results_come_from_newest_run_report(env, tmp_path):
    from deltalake import write_deltalake
    import pyarrow as pa

    runs = env / "runs"
    old = {"stage": "silver", "run_id": "old", "tables": {"NATUURLIJKPERSOON": {"quarantined": {"elfproef": 99}}}}
    new = {
        "stage": "silver",
        "logical_date": "2026-11-28",
        "run_id": "scheduled__2026-11-28",
        "tables": {
            "NATUURLIJKPERSOON": {
                "source": "brp_personen", "source_rows": 104, "conformed_rows": 100, "quarantined": {"elfproef": 3, "not_null": 1},
                "new_versions": 2, "closed": 0, "written": True, "current_rows": 100, "total_rows": 102,
            }
        },
    }
    gold = {"stage": "gold", "run_id": "scheduled__2026-11-28", "tables": {"inwoners_per_buurt": {"rows": 40, "suppressed_cells": 7, "written": True}}}
    (runs / "2026-11-26").mkdir(parents=True)
    (runs / "2026-11-26" / "silver.json").write_text(json.dumps(old), encoding="utf-8")
    (runs / "2026-11-28").mkdir()
    (runs / "2026-11-28" / "silver.json").write_text(json.dumps(new), encoding="utf-8")
    (runs / "2026-11-28" / "gold.json").write_text(json.dumps(gold), encoding="utf-8")
    (runs / "not-a-date").mkdir()  # stray folders are ignored

    loaded = datetime(2026, 11, 28, 2, 15, 0)
    write_deltalake(
        str(env / "lake" / "silver" / "natuurlijkpersoon"),
        pa.table({"NATUURLIJKPERSOON_ID": pa.array([1, 2], pa.int64()),
                  "DWH_DATUMTIJDGELADEN": pa.array([datetime(2026, 11, 27, 2, 0), loaded], pa.timestamp("us"))}),
    )
    write_deltalake(
        str(env / "lake" / "gold" / "inwoners_per_buurt"),
        pa.table({"peildatum": pa.array([loaded.date()]), "buurtcode": ["BU0001"], "aantal_inwoners": pa.array([None], pa.int32()),
                  "onderdrukt": [True]}),
    )

    out = tmp_path / "catalog"
    tables = _by_name(cat.build_catalog(out))
    persoon = tables[("silver", "NATUURLIJKPERSOON")]
    assert persoon["freshness"] == {"report_date": "2026-11-28", "run_id": "scheduled__2026-11-28",
                                    "dwh_loaded_at": loaded.isoformat()}
    results = persoon["quality_results"]
    assert results["quarantined_per_rule"] == {"elfproef": 3, "not_null": 1}
    assert results["quarantined_total"] == 4
    assert (results["current_rows"], results["source_rows"]) == (100, 104)
    # A table absent from the newest report has no results rather than stale ones.
    assert tables[("silver", "WIJK")]["quality_results"] is None

    mart = tables[("gold", "inwoners_per_buurt")]
    assert mart["schema_source"] == "delta"
    assert [(c["name"], c["type"]) for c in mart["columns"]] == [
        ("peildatum", "date"), ("buurtcode", "string"), ("aantal_inwoners", "integer"), ("onderdrukt", "boolean")
    ]
    assert _column(mart, "onderdrukt")["description"]  # declared text kept for existing columns
    assert mart["quality_results"] == {"report_date": "2026-11-28", "rows": 40, "suppressed_cells": 7}
    assert mart["freshness"]["dwh_loaded_at"]

    page = (out / "tables" / "silver" / "natuurlijkpersoon.html").read_text(encoding="utf-8")
    assert "2026-11-28" in page and "elfproef" in page and loaded.isoformat() in page


def test_cli_builds_into_data_root_by_default(env, capsys):
    assert cat.main(["build"]) == 0
    out = env / "catalog"
    assert (out / "catalog.json").is_file() and (out / "index.html").is_file()
    assert str(out) in capsys.readouterr().out
