"""The policy dashboard built from a known gold layer: pages, numbers, hidden cells, freshness, errors, serving.

The gold tables and mart_status are written with ``deltalake`` by ``tests/dashboard_gold.py``
as the gold engine's contract describes them (no Spark). The tests read the built HTML,
the figure JSON embedded in it and the CSVs, and compare them with the gold rows.
"""
from __future__ import annotations

import json
import re
import shutil
import threading
import urllib.error
import urllib.request
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pytest

from dashboard.cli import main as dashboard_main
from dashboard.site import HIDDEN, DashboardError, build_site, format_value, make_server
from dashboard_gold import (
    GAP_MONTH,
    MONTHS,
    NEWEST,
    OLD,
    PREVIOUS,
    huishoudens_rows,
    inwoners_rows,
    wmo_rows,
    write_definitions,
    write_sample_gold,
)

DOMEIN_PAGES = ["demografie", "sociaal_domein", "financien"]
GENERATED_AT = re.compile(r'<span id="generated-at">[^<]*</span>')
VEILIGHEID_DEFINITION = """\
mart: overlast_per_wijk
domein: veiligheid
titel: Meldingen overlast per wijk
beschrijving: Meldingen van overlast per wijk en soort.
bronnen: [VTH_MELDING]
eenheden: SELECT 1
gebied: wijk
dimensies: [{kolom: soort}]
maten: [{kolom: aantal_meldingen, functie: count, van: melding}]
"""


class _Page(HTMLParser):
    """The parts of a built page the tests look at: tables (rows of cell texts), figures, sections."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}  # "<section id>/<table class>" -> body rows
        self.figures: dict[str, dict] = {}
        self.script_srcs: list[str] = []
        self._section = ""
        self._table: list[list[str]] | None = None
        self._in_body = False
        self._cell: list[str] | None = None
        self._figure_id: str | None = None
        self._figure_text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "section" and "id" in attributes:
            self._section = attributes["id"]
        elif tag == "table":
            self._table = self.tables.setdefault(f"{self._section}/{attributes.get('class', '')}", [])
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body and self._table is not None:
            self._table.append([])
        elif tag == "td" and self._in_body:
            self._cell = []
        elif tag == "script":
            if attributes.get("type") == "application/json":
                self._figure_id, self._figure_text = attributes["id"], []
            elif "src" in attributes:
                self.script_srcs.append(attributes["src"])

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._table[-1].append(" ".join(part.strip() for part in self._cell if part.strip()))
            self._cell = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None
        elif tag == "script" and self._figure_id:
            self.figures[self._figure_id.removesuffix("-data")] = json.loads("".join(self._figure_text))
            self._figure_id = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        elif self._figure_id:
            self._figure_text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dashboard-lake")
    write_sample_gold(root / "lake")
    return root / "lake"


@pytest.fixture(scope="module")
def definitions(tmp_path_factory) -> Path:
    return write_definitions(tmp_path_factory.mktemp("gold_marts"))


@pytest.fixture(scope="module")
def site(lake, definitions, tmp_path_factory) -> tuple[Path, list[Path]]:
    output = tmp_path_factory.mktemp("site")
    return output, build_site(lake, output, definitions)


def test_one_page_per_domein_plus_overview_with_local_plotly(site):
    from plotly.offline import get_plotlyjs

    output, pages = site
    assert pages == [output / "index.html", *(output / f"{d}.html" for d in DOMEIN_PAGES)]
    assert (output / "assets" / "plotly.min.js").read_text(encoding="utf-8") == get_plotlyjs()
    for page in pages:
        srcs = _parse(page).script_srcs
        # No CDN: every script is the site's own file.
        assert all(not re.match(r"^(https?:)?//", src) for src in srcs), (page.name, srcs)
        assert all((output / src).is_file() for src in srcs), (page.name, srcs)


def test_index_lists_every_mart_with_freshness_rows_and_hidden_cells(site):
    output, _ = site
    page = _parse(output / "index.html")
    rows = {cells[0].split()[-1]: cells for cells in (r for table in page.tables.values() for r in table)}
    assert set(rows) == {"wmo_jeugd_voorzieningen", "uitgaven_sociaal_domein", "huishoudens_per_wijk",
                         "inwoners_per_buurt"}
    newest = wmo_rows(NEWEST)
    primary = sum(r["onderdrukking"] == "primair" for r in newest)
    secondary = sum(r["onderdrukking"] == "secundair" for r in newest)
    # Bron bijgewerkt 01:05 UTC and gebouwd 03:15 UTC on the next day are shown in Dutch (winter) time.
    assert rows["wmo_jeugd_voorzieningen"][1:] == [
        NEWEST.isoformat(), "2026-11-28 02:05", "2026-11-28 04:15", str(len(newest)), f"{primary} / {secondary}",
        "actueel",
    ]
    assert rows["uitgaven_sociaal_domein"][1] == OLD.isoformat()
    assert rows["uitgaven_sociaal_domein"][-1] == "verouderd"
    # inwoners_per_buurt is a mart like any other: a status row and hidden cells of both kinds.
    assert rows["inwoners_per_buurt"][1:] == [
        NEWEST.isoformat(), "2026-11-28 02:05", "2026-11-28 04:15", str(len(inwoners_rows(NEWEST))), "2 / 2", "actueel",
    ]


def test_trend_per_month_has_a_gap_for_the_hidden_month(site):
    output, _ = site
    figure = _parse(output / "sociaal_domein.html").figures["wmo_jeugd_voorzieningen-trend"]
    (trace,) = figure["data"]
    assert trace["x"] == list(MONTHS)
    expected = {r["maand"]: r["aantal_clienten"] for r in wmo_rows(NEWEST)
                if r["gebiedsniveau"] == "gemeente" and r["wet"] == "Totaal"}
    assert trace["y"] == [expected[m] for m in MONTHS]
    assert trace["y"][MONTHS.index(GAP_MONTH)] is None  # a gap, not a 0
    assert trace["connectgaps"] is False


def test_comparison_per_wijk_uses_per_1000_of_the_newest_month(site):
    output, _ = site
    figure = _parse(output / "sociaal_domein.html").figures["wmo_jeugd_voorzieningen-wijk"]
    (trace,) = figure["data"]
    expected = {r["gebiedsnaam"]: r["aantal_clienten_per_1000_inwoners"] for r in wmo_rows(NEWEST)
                if r["gebiedsniveau"] == "wijk" and r["wet"] == "Totaal" and r["maand"] == MONTHS[-1]}
    assert trace["x"] == ["Centrum", "Noord", "Havenkwartier"]
    assert trace["y"] == [expected[name] for name in trace["x"]]
    assert trace["y"][2] is None
    assert [(a["x"], a["text"]) for a in figure["layout"]["annotations"]] == [("Havenkwartier", HIDDEN)]
    # A mart with areas but without months compares the wijken as well (huishoudtype 'Totaal').
    demografie = _parse(output / "demografie.html").figures
    assert set(demografie) == {"huishoudens_per_wijk-wijk", "inwoners_per_buurt-wijk"}
    (bars,) = demografie["huishoudens_per_wijk-wijk"]["data"]
    expected = {r["gebiedsnaam"]: r["aantal_huishoudens_per_1000_inwoners"] for r in huishoudens_rows(NEWEST)
                if r["gebiedsniveau"] == "wijk" and r["huishoudtype"] == "Totaal"}
    assert dict(zip(bars["x"], bars["y"])) == expected


def test_table_shows_hidden_cells_as_dash_never_zero(site):
    output, _ = site
    page = _parse(output / "sociaal_domein.html")
    table = page.tables["wmo_jeugd_voorzieningen/data cells"]
    # Newest month, gemeente then wijken, 'Totaal' first: 4 areas × 3 wet values.
    assert len(table) == 12
    assert table[0][:4] == ["Demodam", "gemeente", "Totaal", MONTHS[-1]]
    newest = {(r["gebiedsnaam"], r["wet"]): r for r in wmo_rows(NEWEST) if r["maand"] == MONTHS[-1]}
    assert table[0][4] == format_value(newest[("Demodam", "Totaal")]["aantal_clienten"])
    havenkwartier = [row for row in table if row[0] == "Havenkwartier"]
    assert len(havenkwartier) == 3
    for row in havenkwartier:
        assert row[4:7] == [HIDDEN, HIDDEN, HIDDEN] and row[7] == "primair"
    noord_jeugd = next(row for row in table if row[0] == "Noord" and row[2] == "Jeugdwet")
    assert noord_jeugd[4:8] == [HIDDEN, HIDDEN, HIDDEN, "secundair"]
    assert all(cell != "0" for row in havenkwartier + [noord_jeugd] for cell in row)
    # Amounts in Dutch notation.
    centrum = next(row for row in table if row[0] == "Centrum" and row[2] == "Totaal")
    assert centrum[5] == format_value(newest[("Centrum", "Totaal")]["toegewezen_bedrag"])
    assert re.fullmatch(r"\d{1,3}(\.\d{3})*,\d{2}", centrum[5])


def test_notes_show_freshness_versions_threshold_and_suppression(site):
    output, _ = site
    html = (output / "sociaal_domein.html").read_text(encoding="utf-8")
    notes = re.search(r'<aside class="notes".*?</aside>', html, re.S).group(0)
    newest = wmo_rows(NEWEST)
    primary = sum(r["onderdrukking"] == "primair" for r in newest)
    secondary = sum(r["onderdrukking"] == "secundair" for r in newest)
    for text in ("Bronnen bijgewerkt", "2026-11-28 02:05", "Gebouwd op", "2026-11-28 04:15",
                 "CBS_KERNCIJFERS v3, TOEWIJZING v41", "minder dan 5 personen",
                 f"{primary} primair, {secondary} secundair", "nooit als 0"):
        assert text in notes, text


def test_csv_holds_the_whole_partition_with_hidden_cells_empty(site):
    import csv

    output, _ = site
    with (output / "data" / "wmo_jeugd_voorzieningen.csv").open(encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == len(wmo_rows(NEWEST))
    hidden = [r for r in rows if r["onderdrukt"] == "True"]
    assert hidden and all(r["aantal_clienten"] == "" for r in hidden)
    assert {r["peildatum"] for r in rows} == {NEWEST.isoformat()}


def test_csv_neutralises_text_that_a_spreadsheet_would_run_as_a_formula(lake, definitions, tmp_path):
    import csv

    import pyarrow as pa
    from deltalake import write_deltalake

    from dashboard_gold import INWONERS_SCHEMA

    hostile_lake = tmp_path / "lake"
    shutil.copytree(lake, hostile_lake)
    payloads = ['=HYPERLINK("http://evil.example","klik")', "+1+1", "-2+3", "@SUM(A1)", "\t=1"]
    rows = inwoners_rows(NEWEST)[: len(payloads)]
    for row, payload in zip(rows, payloads):
        row["buurtnaam"] = payload
    write_deltalake(str(hostile_lake / "gold" / "inwoners_per_buurt"), pa.Table.from_pylist(rows, schema=INWONERS_SCHEMA),
                    mode="overwrite", partition_by=["peildatum"])
    output = tmp_path / "site"
    build_site(hostile_lake, output, definitions)
    with (output / "data" / "inwoners_per_buurt.csv").open(encoding="utf-8", newline="") as stream:
        written = list(csv.DictReader(stream))
    assert [r["buurtnaam"] for r in written] == ["'" + p for p in payloads]
    # Numbers stay numbers, and harmless text is untouched.
    assert all(r["aantal_inwoners"] in ("", *map(str, range(1000))) for r in written)
    assert {r["wijkcode"] for r in written} <= {row["wijkcode"] for row in rows}


def test_inwoners_per_buurt_is_shown_like_every_mart_and_a_table_without_definition_is_left_out(site):
    output, pages = site
    page = _parse(output / "demografie.html")
    table = page.tables["inwoners_per_buurt/data cells"]
    # Gemeente and wijken (the buurten are in the CSV) × leeftijdsklasse, 'Totaal' first.
    newest = {(r["gebiedsnaam"], r["leeftijdsklasse"]): r for r in inwoners_rows(NEWEST) if r["gebiedsniveau"] != "buurt"}
    assert len(table) == len(newest) == 12
    assert table[0] == ["Demodam", "gemeente", "Totaal", format_value(newest[("Demodam", "Totaal")]["aantal_inwoners"]), ""]
    (bars,) = page.figures["inwoners_per_buurt-wijk"]["data"]
    assert dict(zip(bars["x"], bars["y"])) == {name: newest[(name, "Totaal")]["aantal_inwoners"]
                                               for name in ("Centrum", "Noord", "Havenkwartier")}
    html = (output / "demografie.html").read_text(encoding="utf-8")
    assert "Inwoners per wijk en buurt" in html and "inwoners_per_buurt.yaml" in html
    # The buurt cells, the hidden ones empty, are in the CSV.
    import csv

    with (output / "data" / "inwoners_per_buurt.csv").open(encoding="utf-8") as stream:
        written = list(csv.DictReader(stream))
    havenkwartier = [r for r in written if r["buurtcode"].startswith("BU999903") and r["leeftijdsklasse"] != "Totaal"]
    assert {(r["onderdrukking"], r["aantal_inwoners"]) for r in havenkwartier} == {("primair", ""), ("secundair", "")}
    # verdwenen_mart has a gold table and status rows but no definition file: no page, row or CSV.
    assert all("verdwenen_mart" not in p.read_text(encoding="utf-8") for p in pages)
    assert not (output / "data" / "verdwenen_mart.csv").exists()


def test_an_earlier_peildatum_shows_that_day_and_marks_unbuilt_marts(lake, definitions, tmp_path):
    pages = build_site(lake, tmp_path, definitions, peildatum=PREVIOUS)
    assert [p.stem for p in pages] == ["index", *DOMEIN_PAGES]
    trend = _parse(tmp_path / "sociaal_domein.html").figures["wmo_jeugd_voorzieningen-trend"]["data"][0]
    expected = [r["aantal_clienten"] for r in wmo_rows(PREVIOUS) if r["gebiedsniveau"] == "gemeente"
                and r["wet"] == "Totaal"]
    assert trend["y"] == expected
    index = {row[0].split()[-1]: row for t in _parse(tmp_path / "index.html").tables.values() for row in t}
    assert index["huishoudens_per_wijk"][-1] == "niet gebouwd"
    assert index["wmo_jeugd_voorzieningen"][1] == PREVIOUS.isoformat()
    assert "Nog niet gebouwd" in (tmp_path / "demografie.html").read_text(encoding="utf-8")


def test_build_is_deterministic_apart_from_the_timestamp(lake, definitions, site, tmp_path):
    output, pages = site
    build_site(lake, tmp_path, definitions)
    files = sorted(p.relative_to(output) for p in output.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for relative in files:
        first, second = (output / relative).read_bytes(), (tmp_path / relative).read_bytes()
        if relative.suffix == ".html":
            first = GENERATED_AT.sub("", first.decode()).encode()
            second = GENERATED_AT.sub("", second.decode()).encode()
        assert first == second, relative


def test_a_defined_but_unbuilt_mart_gets_its_page_and_a_removed_one_leaves_no_page(lake, definitions, tmp_path):
    extra = tmp_path / "gold_marts"
    shutil.copytree(definitions, extra)
    (extra / "overlast_per_wijk.yaml").write_text(VEILIGHEID_DEFINITION, encoding="utf-8")
    output = tmp_path / "site"
    pages = build_site(lake, output, extra)
    assert output / "veiligheid.html" in pages
    html = (output / "veiligheid.html").read_text(encoding="utf-8")
    assert "Meldingen overlast per wijk" in html and "niet gebouwd" in html
    # Without the definition the page goes away on the next build.
    (extra / "overlast_per_wijk.yaml").unlink()
    build_site(lake, output, extra)
    assert not (output / "veiligheid.html").exists()


def test_missing_gold_is_a_clear_error_naming_the_path(tmp_path, definitions, lake):
    with pytest.raises(DashboardError, match=re.escape(str(tmp_path / "nolake" / "gold"))):
        build_site(tmp_path / "nolake", tmp_path / "site", definitions)
    (tmp_path / "empty" / "gold").mkdir(parents=True)
    with pytest.raises(DashboardError, match=r"no gold marts in .*empty/gold"):
        build_site(tmp_path / "empty", tmp_path / "site", definitions)
    with pytest.raises(DashboardError, match="on or before peildatum 2020-01-01"):
        build_site(lake, tmp_path / "site", definitions, peildatum=date(2020, 1, 1))


def test_a_broken_definition_names_its_file(lake, tmp_path):
    # The dashboard reads definitions with the gold engine's loader, so its errors are the engine's.
    (tmp_path / "kapot.yaml").write_text("mart: kapot\ndomein: [niet, een, tekst]\n", encoding="utf-8")
    with pytest.raises(DashboardError, match=r"kapot\.yaml: \(top level\): required keys 'titel', 'beschrijving', "
                                             r"'bronnen', 'eenheden' and 'maten' are missing"):
        build_site(lake, tmp_path / "site", tmp_path)
    valid = VEILIGHEID_DEFINITION.replace("overlast_per_wijk", "kapot")
    (tmp_path / "kapot.yaml").write_text(valid.replace("domein: veiligheid", "domein: [niet, een, tekst]"),
                                         encoding="utf-8")
    with pytest.raises(DashboardError, match=r"kapot\.yaml: domein: must be demografie, .* \(found a list\)"):
        build_site(lake, tmp_path / "site", tmp_path)
    # Names become file names: no path tricks.
    (tmp_path / "kapot.yaml").write_text(valid.replace("domein: veiligheid", "domein: ../buiten"), encoding="utf-8")
    with pytest.raises(DashboardError, match=r"kapot\.yaml: domein: must be demografie, .* \(found '\.\./buiten'\)"):
        build_site(lake, tmp_path / "site", tmp_path)
    (tmp_path / "kapot.yaml").write_text(valid.replace("mart: kapot", "mart: ../kapot"), encoding="utf-8")
    with pytest.raises(DashboardError, match=r"kapot\.yaml: mart: must be a snake_case name .* \(found '\.\./kapot'\)"):
        build_site(lake, tmp_path / "site", tmp_path)


def test_format_value_dutch_notation():
    assert format_value(None) == HIDDEN
    assert format_value(float("nan")) == HIDDEN
    assert format_value(1234567) == "1.234.567"
    assert format_value(0) == "0"
    assert format_value(12.26, "aantal_clienten_per_1000_inwoners") == "12,3"
    assert format_value(1500.5) == "1.500,50"
    assert format_value(True) == "ja"
    assert format_value(205000.0, "bedrag", 2) == "205.000,00"


def _get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def served(tmp_path):
    """A running dashboard server on an ephemeral port for ``tmp_path / 'site'``."""
    server = make_server(tmp_path / "site", "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path / "site", f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_server_answers_before_and_after_the_first_build(served, lake, definitions):
    output, url = served
    assert _get(f"{url}/healthz")[:1] == (200,)
    status, _, body = _get(f"{url}/")
    assert status == 503 and b"nog niet gebouwd" in body

    build_site(lake, output, definitions)
    status, headers, body = _get(f"{url}/")
    assert status == 200 and b"Beleidsdashboard" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert _get(f"{url}/sociaal_domein.html")[0] == 200
    assert _get(f"{url}/assets/plotly.min.js")[0] == 200
    assert _get(f"{url}/data/")[0] == 404  # no directory listings
    assert _get(f"{url}/healthz")[2] == b"ok"


def test_command_line_build_and_its_error(lake, definitions, tmp_path, capsys):
    output = tmp_path / "site"
    assert dashboard_main(["build", "--lake-root", str(lake), "--output", str(output),
                           "--definitions", str(definitions), "--peildatum", NEWEST.isoformat()]) == 0
    assert capsys.readouterr().out.split() == [str(output / "index.html"),
                                               *(str(output / f"{d}.html") for d in DOMEIN_PAGES)]
    assert dashboard_main(["build", "--lake-root", str(tmp_path / "none"), "--output", str(output)]) == 2
    assert f"dashboard build: no gold layer at {tmp_path / 'none' / 'gold'}" in capsys.readouterr().err


def test_the_checked_in_mart_definitions_build_a_page_each(lake, tmp_path):
    """Every gold_marts/*.yaml of the project parses (incl. a list of person counts) and gets its section."""
    import yaml

    from ggm_lakehouse.config import project_root

    definitions = project_root() / "gold_marts"
    pages = build_site(lake, tmp_path / "site", definitions)
    marts = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(definitions.glob("*.yaml"))]
    assert any(isinstance(m.get("personen"), list) for m in marts)
    html = "".join(p.read_text(encoding="utf-8") for p in pages)
    for mart in marts:
        assert mart["titel"] in html or mart["mart"] in html, mart["mart"]
