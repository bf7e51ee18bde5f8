"""The policy dashboard in a real browser: every page renders its data, charts and tables without errors.

The site is built from a small gold layer (``tests/dashboard_gold.py``, written with
``deltalake``), served by ``dashboard.site.make_server`` over real HTTP on 127.0.0.1 with an
ephemeral port (the same handler ``python -m dashboard serve`` uses, with its
Content-Security-Policy), and visited in headless Chromium. Per page:

* no console error, page error or failed request (plotly.min.js comes from the site itself);
* every chart is drawn by Plotly (``.main-svg``) and every table has rows;
* hidden cells read "–" and the notes box names freshness and suppression.

Screenshots go to a temporary folder; with ``GGM_UPDATE_SCREENSHOTS=1`` they are copied to
``docs/screenshots/dashboard-<page>.png`` (docs/dashboard.md shows them).
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from dashboard.site import HIDDEN, build_site, make_server
from dashboard_gold import NEWEST, write_definitions, write_sample_gold

pytestmark = pytest.mark.browser

PROJECT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = PROJECT / "docs" / "screenshots"
# Ends a hang on a loaded machine; asserts nothing about speed.
UI_TIMEOUT_MS = 30_000
PAGES = ("index", "demografie", "sociaal_domein", "financien")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dashboard")
    write_sample_gold(root / "lake")
    pages = build_site(root / "lake", root / "site", write_definitions(root / "gold_marts"))
    assert sorted(p.stem for p in pages) == sorted(PAGES)
    return root / "site"


@pytest.fixture(scope="module")
def base_url(site):
    server = make_server(site, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, name="dashboard-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def browser(chromium_executable):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_executable, headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()


class PageVisit:
    """A fresh tab that records console errors, page errors and failed or 4xx/5xx requests."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1440, "height": 900}, timezone_id="Europe/Amsterdam",
                                           locale="nl-NL")
        self.context.set_default_timeout(UI_TIMEOUT_MS)
        self.tab = self.context.new_page()
        self.problems: list[str] = []
        self.tab.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.tab.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.tab.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} {r.failure}"))
        self.tab.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser):
    opened: list[PageVisit] = []

    def open_page(url: str) -> PageVisit:
        page_visit = PageVisit(browser)
        opened.append(page_visit)
        page_visit.tab.goto(url)
        page_visit.tab.wait_for_load_state("networkidle")
        return page_visit

    yield open_page
    for page_visit in opened:
        page_visit.close()


def _screenshot(tab, name: str, folder: Path) -> Path:
    path = folder / f"dashboard-{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    if os.environ.get("GGM_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOT_DIR / path.name)
    return path


@pytest.mark.parametrize("page_name", PAGES)
def test_every_page_renders_its_data_without_errors(page_name, site, base_url, visit, tmp_path):
    from playwright.sync_api import expect

    page_visit = visit(f"{base_url}/{page_name}.html")
    tab = page_visit.tab
    expect(tab.locator("h1")).to_be_visible()
    expect(tab.locator("nav.domeinen a[aria-current=page]")).to_have_count(1)
    expect(tab.locator(".site-peildatum")).to_contain_text(NEWEST.isoformat())

    # Every chart placeholder holds a drawn Plotly figure.
    charts = tab.locator("[data-figure]")
    for index in range(charts.count()):
        expect(charts.nth(index).locator(".main-svg").first).to_be_attached()
        expect(charts.nth(index).locator("g.trace").first).to_be_attached()
    if page_name != "index":
        assert charts.count() >= 1, f"{page_name}: no chart on the page"
        expect(tab.locator("aside.notes").first).to_contain_text("Verborgen cellen")

    # Every table has rows.
    tables = tab.locator("table.data")
    assert tables.count() >= 1, f"{page_name}: no table"
    for index in range(tables.count()):
        assert tables.nth(index).locator("tbody tr").count() >= 1, f"{page_name}: table {index} has no rows"

    _screenshot(tab, page_name, tmp_path)
    assert page_visit.problems == [], f"{page_name}: {page_visit.problems}"


def test_sociaal_domein_shows_trend_gap_hidden_wijk_and_notes(site, base_url, visit):
    from playwright.sync_api import expect

    tab = visit(f"{base_url}/sociaal_domein.html").tab
    section = tab.locator("section#wmo_jeugd_voorzieningen")
    trend = section.locator("#wmo_jeugd_voorzieningen-trend")
    # The hidden month 2026-08 is a gap: Plotly draws the line as two segments, and only 5 markers.
    points = trend.evaluate("el => el.data[0].y")
    assert points[2] is None and all(v is not None for v in points[:2] + points[3:]), points
    expect(trend.locator("g.trace path.js-line")).to_have_count(2)
    expect(trend.locator("g.trace g.points path.point")).to_have_count(5)
    # The hidden wijk has no bar and a "–" in the chart.
    wijk = section.locator("#wmo_jeugd_voorzieningen-wijk")
    expect(wijk.locator("g.trace.bars g.point path")).to_have_count(3)
    assert wijk.evaluate("el => el.data[0].y") == [22.9, 21.0, None]
    expect(wijk.locator("g.annotation-text-g text", has_text=HIDDEN)).to_have_count(1)
    # Table: Havenkwartier's hidden cells read "–", never 0.
    havenkwartier = section.locator("table.cells tbody tr", has_text="Havenkwartier").first
    expect(havenkwartier.locator("td.hidden-cell")).to_have_count(3)
    expect(havenkwartier).to_contain_text("primair")
    notes = section.locator("aside.notes")
    expect(notes).to_contain_text("Bronnen bijgewerkt")
    expect(notes).to_contain_text("2026-11-28 02:05")
    expect(notes).to_contain_text("TOEWIJZING v41")
    expect(notes).to_contain_text("nooit als 0")


def test_index_links_every_mart_to_its_page(site, base_url, visit):
    from playwright.sync_api import expect

    page_visit = visit(f"{base_url}/index.html")
    tab = page_visit.tab
    expect(tab.locator("tr", has_text="Uitgaven sociaal domein").locator(".badge")).to_have_text("verouderd")
    tab.get_by_role("link", name="Cliënten met een Wmo- of jeugdvoorziening").click()
    tab.wait_for_url("**/sociaal_domein.html#wmo_jeugd_voorzieningen")
    expect(tab.locator("section#wmo_jeugd_voorzieningen .main-svg").first).to_be_attached()
    assert page_visit.problems == [], page_visit.problems
