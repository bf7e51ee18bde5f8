"""Build and serve the policy dashboard: a static site generated from the gold marts.

One page per domein (demografie, sociaal_domein, ...) and an overview page. Per mart a
domein page shows

* the trend per month (line chart) when the mart has the dimension ``maand``;
* a comparison per wijk (bar chart) when the mart has areas (``gebied``);
* a compact table of the newest rows, with the full partition as CSV next to it;
* a notes box with freshness (``bron_bijgewerkt``, ``gebouwd_op``, silver versions) and
  small-cell suppression (threshold, cells hidden primarily and secondarily).

Inputs are the mart definitions ``gold_marts/*.yaml``, the gold Delta tables
``<lake>/gold/<mart>`` and ``<lake>/gold/mart_status``, read with the ``deltalake`` package:
no Spark, so the site can be built wherever the lake files are. Hidden (suppressed) cells
have null measures; the site shows them as "–" in tables and as gaps in charts, never as 0.

The output is plain HTML + one local copy of plotly.min.js (no CDN, works offline). Apart
from the "generated at" timestamp in the footer, the same inputs give the same bytes.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from ggm_lakehouse.config import has_commits

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"

STATUS_TABLE = "mart_status"
# Page order and labels of the domeinen the gold engine knows; other domeinen follow alphabetically.
DOMEINEN: dict[str, str] = {
    "demografie": "Demografie",
    "sociaal_domein": "Sociaal domein",
    "financien": "Financiën",
    "veiligheid": "Veiligheid",
    "subsidies": "Subsidies",
    "bedrijfsvoering": "Bedrijfsvoering",
    "schuldhulp": "Schuldhulp",
}

TOTAAL = "Totaal"
TREND_DIMENSION = "maand"
PER_1000_SUFFIX = "_per_1000_inwoners"
AREA_COLUMNS = ("gebiedsniveau", "gebiedscode", "gebiedsnaam", "wijkcode")
DENOMINATOR_COLUMNS = ("inwoners", "huishoudens")
SUPPRESSION_COLUMNS = ("onderdrukt", "onderdrukking")
AREA_LEVEL_ORDER = {"gemeente": 0, "wijk": 1, "buurt": 2}
# The table on a page stays readable; the CSV next to it holds the whole partition.
TABLE_ROW_LIMIT = 40
# More lines or bar groups than this make a chart unreadable; the rest is in the table and CSV.
MAX_SERIES = 8
HIDDEN = "–"
HEADER_LABELS = {"gebiedsnaam": "Gebied", "gebiedsniveau": "Niveau", "onderdrukking": "Verborgen", "onderdrukt": "Verborgen"}
HIDDEN_CELLS_SENTENCE = (
    "Primair verborgen: minder personen dan de drempel. Secundair verborgen: verborgen zodat een primair "
    "verborgen cel niet uit de totalen terug te rekenen is. "
    f"Verborgen cellen staan in tabellen als „{HIDDEN}” en in grafieken als een onderbreking, nooit als 0."
)
DISPLAY_ZONE = ZoneInfo("Europe/Amsterdam")
COLORS = ("#1f5fa8", "#e07b39", "#2a9d8f", "#8e6bbf", "#c44e52", "#6c757d", "#b8860b", "#17a2b8")
PLOTLY_JS = "plotly.min.js"
DEFAULT_PORT = 8050


class DashboardError(RuntimeError):
    """The dashboard cannot be built; the message names the path or file and the cause."""


@dataclass(frozen=True)
class MartView:
    """What the dashboard needs of a mart definition (``gold_marts/<mart>.yaml``); ``source`` is the file."""

    mart: str
    domein: str
    titel: str
    source: Path
    beschrijving: str = ""
    eigenaar: str = ""
    gebied: str = "none"
    dimensies: tuple[str, ...] = ()
    maten: tuple[str, ...] = ()
    personen: str | None = None  # the count that hides a cell
    ook_personen: tuple[str, ...] = ()  # further counts hidden on their own when small
    per_1000_inwoners: tuple[str, ...] = ()


@dataclass
class Chart:
    """One Plotly figure on a page: its element id, caption and figure JSON."""

    id: str
    title: str
    figure_json: str
    note: str = ""


@dataclass
class MartSection:
    """Everything a domein page shows of one mart."""

    view: MartView
    peildatum: date | None
    status: dict[str, Any] | None
    rows: list[dict[str, Any]]
    charts: list[Chart] = field(default_factory=list)
    table_headers: list[str] = field(default_factory=list)
    table_rows: list[list[str]] = field(default_factory=list)
    table_note: str = ""
    notes: list[tuple[str, str]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    state: str = "actueel"  # actueel | verouderd | niet gebouwd
    suppressed_primary: int | None = None
    suppressed_secondary: int | None = None
    csv_name: str | None = None


# --------------------------------------------------------------------------- definitions


def load_definitions(definitions_dir: Path | None = None) -> dict[str, MartView]:
    """The mart definitions in ``definitions_dir`` (default: the project's ``gold_marts``), keyed by mart name.

    They are read and checked by the loader the gold engine uses (``ggm_lakehouse.model.mart_definitions``),
    so the dashboard shows exactly the marts gold builds. A missing folder gives no definitions.
    """
    from ggm_lakehouse.model.mart_definitions import GoldError, load_mart_definitions, marts_dir

    directory = Path(definitions_dir) if definitions_dir else marts_dir()
    if not directory.is_dir():
        log.warning("no mart definitions folder at %s; no marts to show", directory)
        return {}
    try:
        definitions = load_mart_definitions(directory)
    except GoldError as error:
        raise DashboardError(str(error)) from error
    return {name: _view(definition) for name, definition in definitions.items()}


def _view(definition) -> MartView:
    """What the dashboard shows of a ``ggm_lakehouse.model.mart_definitions.MartDefinition``."""
    return MartView(
        mart=definition.mart,
        domein=definition.domein,
        titel=definition.titel,
        beschrijving=definition.beschrijving,
        eigenaar=definition.eigenaar,
        gebied=definition.gebied or "none",
        dimensies=tuple(d.kolom for d in definition.dimensies),
        maten=tuple(m.kolom for m in definition.maten),
        personen=definition.personen,
        ook_personen=definition.ook_personen,
        per_1000_inwoners=definition.per_1000_inwoners,
        source=Path(definition.path),
    )


# --------------------------------------------------------------------------- reading gold


def _delta_table(path: Path):
    from deltalake import DeltaTable

    return DeltaTable(str(path))


def _is_delta_table(path: Path) -> bool:
    # A mart that another gold DAG is creating right now has a log folder without a commit yet.
    return has_commits(path)


def gold_tables(gold_dir: Path) -> list[str]:
    """Names of the mart tables under ``gold_dir`` (every Delta table except mart_status)."""
    return sorted(p.name for p in gold_dir.iterdir() if p.name != STATUS_TABLE and _is_delta_table(p))


def read_status(gold_dir: Path) -> list[dict[str, Any]] | None:
    """The rows of ``gold/mart_status``, or None when the table does not exist."""
    path = gold_dir / STATUS_TABLE
    if not _is_delta_table(path):
        return None
    return _delta_table(path).to_pyarrow_table().to_pylist()


def _available_peildata(table) -> list[date]:
    if "peildatum" in (table.metadata().partition_columns or []):
        values = {p["peildatum"] for p in table.partitions() if p.get("peildatum") is not None}
        return sorted(date.fromisoformat(v[:10]) for v in values)
    column = table.to_pyarrow_table(columns=["peildatum"]).column("peildatum").to_pylist()
    return sorted({_as_date(v) for v in column if v is not None})


def _read_partition(table, peildatum: date) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    # On the partition column the filter prunes files: only the one partition is read.
    arrow = table.to_pyarrow_table(filters=[("peildatum", "=", peildatum)])
    schema = [(f.name, str(f.type)) for f in arrow.schema]
    return arrow.to_pylist(), schema


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


# --------------------------------------------------------------------------- formatting


def _humanize(column: str) -> str:
    text = column.replace(PER_1000_SUFFIX, " per 1.000 inwoners").replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _number(value: Any) -> float | None:
    """A measure as float for a chart; None (a gap) for hidden or missing values."""
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _dutch_number(number: float, decimals: int) -> str:
    text = f"{number:,.{decimals}f}"
    return text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")


def format_value(value: Any, column: str = "", decimals: int | None = None) -> str:
    """A cell as a policy maker reads it: Dutch number format, "–" for hidden or missing values.

    Fractional numbers get ``decimals`` places (default: 1 for per-1,000 rates, else 2, and
    none for whole numbers).
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return HIDDEN
    if isinstance(value, bool):
        return "ja" if value else "nee"
    if isinstance(value, int):
        return _dutch_number(value, 0)
    if isinstance(value, (float, Decimal)):
        number = float(value)
        if decimals is not None:
            return _dutch_number(number, decimals)
        if column.endswith(PER_1000_SUFFIX):
            return _dutch_number(number, 1)
        return _dutch_number(number, 0 if number.is_integer() else 2)
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def count_text(count: int | None) -> str:
    """A count of rows or cells; None is "onbekend" (not "–", which means a hidden cell)."""
    return "onbekend" if count is None else format_value(count)


def format_timestamp(value: datetime | None) -> str:
    """A timestamp in Dutch local time; naive timestamps are taken as UTC (as Spark stores them)."""
    if value is None:
        return "onbekend"
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(DISPLAY_ZONE).strftime("%Y-%m-%d %H:%M")


def _source_versions(value: Any) -> str:
    """``bronversies`` (map<string,bigint>; arrow gives a list of pairs) as "TABLE v3, ..."."""
    if not value:
        return HIDDEN
    pairs = value.items() if isinstance(value, dict) else value
    return ", ".join(f"{name} v{version}" for name, version in sorted(pairs))


# --------------------------------------------------------------------------- cells and charts


def _dimension_filter(rows: list[dict], dimensions: Iterable[str]) -> tuple[list[dict], list[str]]:
    """Keep the 'Totaal' cells of every dimension that publishes a total.

    Returns the rows and the dimensions without a total (their values become series).
    """
    split = []
    for dimension in dimensions:
        if not any(dimension in row for row in rows):
            continue
        if any(row.get(dimension) == TOTAAL for row in rows):
            rows = [row for row in rows if row.get(dimension) == TOTAAL]
        else:
            split.append(dimension)
    return rows, split


def _series_label(row: dict, split: list[str]) -> str:
    return " · ".join(str(row.get(d)) if row.get(d) is not None else "onbekend" for d in split) or ""


def _layout(**extra: Any) -> dict[str, Any]:
    layout = {
        "template": "none",
        "separators": ",.",
        "font": {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13, "color": "#1f2933"},
        "margin": {"l": 56, "r": 16, "t": 16, "b": 56},
        "height": 340,
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "hovermode": "closest",
        # Full numbers in Dutch notation (300.000), not SI suffixes (300k).
        "yaxis": {"rangemode": "tozero", "gridcolor": "#e4e7eb", "zeroline": True, "zerolinecolor": "#9aa5b1",
                  "separatethousands": True, "exponentformat": "none", "automargin": True},
        "xaxis": {"type": "category", "linecolor": "#9aa5b1"},
        "legend": {"orientation": "h", "y": -0.22},
        "showlegend": False,
    }
    layout.update(extra)
    return layout


def _figure_json(traces: list[dict], layout: dict) -> str:
    import plotly.graph_objects as go
    import plotly.io as pio

    figure = go.Figure(data=traces, layout=layout)
    # "</" would end the <script> element the JSON is embedded in.
    return pio.to_json(figure, validate=True, pretty=False).replace("</", "<\\/")


def trend_chart(view: MartView, rows: list[dict]) -> Chart | None:
    """Line chart of the first measure per month at gemeente level (other dimensions at 'Totaal').

    Hidden months are null and so a gap in the line, never a 0.
    """
    if TREND_DIMENSION not in view.dimensies or not view.maten or not rows:
        return None
    measure = view.maten[0]
    if measure not in rows[0] or TREND_DIMENSION not in rows[0]:
        return None
    cells = [r for r in rows if r.get("gebiedsniveau") == "gemeente"] if "gebiedsniveau" in rows[0] else rows
    cells, split = _dimension_filter(cells, [d for d in view.dimensies if d != TREND_DIMENSION])
    cells = [r for r in cells if r.get(TREND_DIMENSION) is not None]
    if not cells:
        return None
    months = sorted({str(r[TREND_DIMENSION]) for r in cells})
    series: dict[str, dict[str, Any]] = {}
    for row in cells:
        series.setdefault(_series_label(row, split), {})[str(row[TREND_DIMENSION])] = row.get(measure)
    labels = sorted(series)
    note = ""
    if len(labels) > MAX_SERIES:
        note = f"De eerste {MAX_SERIES} van {len(labels)} reeksen; de rest staat in de CSV."
        labels = labels[:MAX_SERIES]
    traces, hidden = [], 0
    for index, label in enumerate(labels):
        values = [_number(series[label].get(month)) for month in months]
        hidden += sum(1 for month in months if month in series[label] and series[label][month] is None)
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": label or _humanize(measure),
            "x": months, "y": values, "connectgaps": False,
            "line": {"color": COLORS[index % len(COLORS)], "width": 2.5}, "marker": {"size": 7},
            "hovertemplate": "%{x}: %{y:,.0f}<extra>" + (label or "") + "</extra>",
        })
    if hidden:
        note = (note + " " if note else "") + f"{hidden} verborgen maand(en): onderbreking in de lijn."
    layout = _layout(showlegend=len(traces) > 1, yaxis={**_layout()["yaxis"], "title": {"text": _humanize(measure)}})
    title = f"{_humanize(measure)} per maand, gemeente"
    return Chart(id=f"{view.mart}-trend", title=title, figure_json=_figure_json(traces, layout), note=note)


def wijk_chart(view: MartView, rows: list[dict]) -> Chart | None:
    """Bar chart per wijk of the first per-1000 measure (else the first measure), newest month, 'Totaal'.

    A hidden wijk has no bar but a "–" above its name.
    """
    if view.gebied == "none" or not rows or "gebiedsniveau" not in rows[0] or not view.maten:
        return None
    measure = next((f"{m}{PER_1000_SUFFIX}" for m in view.per_1000_inwoners if f"{m}{PER_1000_SUFFIX}" in rows[0]),
                   view.maten[0])
    if measure not in rows[0]:
        return None
    cells = [r for r in rows if r.get("gebiedsniveau") == "wijk"]
    month = None
    if TREND_DIMENSION in view.dimensies and cells and TREND_DIMENSION in cells[0]:
        months = sorted({str(r[TREND_DIMENSION]) for r in cells if r.get(TREND_DIMENSION) is not None})
        if months:
            month = months[-1]
            cells = [r for r in cells if str(r.get(TREND_DIMENSION)) == month]
    cells, split = _dimension_filter(cells, [d for d in view.dimensies if d != TREND_DIMENSION])
    if not cells:
        return None
    areas = sorted({(r.get("gebiedscode") or "", r.get("gebiedsnaam") or r.get("gebiedscode") or "onbekend")
                    for r in cells})
    names = [name for _, name in areas]
    series: dict[str, dict[str, Any]] = {}
    for row in cells:
        name = row.get("gebiedsnaam") or row.get("gebiedscode") or "onbekend"
        series.setdefault(_series_label(row, split), {})[name] = row.get(measure)
    labels = sorted(series)
    note = ""
    if len(labels) > MAX_SERIES:
        note = f"De eerste {MAX_SERIES} van {len(labels)} reeksen; de rest staat in de CSV."
        labels = labels[:MAX_SERIES]
    traces, annotations, hidden = [], [], 0
    for index, label in enumerate(labels):
        values = [_number(series[label].get(name)) for name in names]
        traces.append({
            "type": "bar", "name": label or _humanize(measure), "x": names, "y": values,
            "marker": {"color": COLORS[index % len(COLORS)]},
            "hovertemplate": "%{x}: %{y:,." + ("1" if measure.endswith(PER_1000_SUFFIX) else "0") + "f}<extra>"
                             + (label or "") + "</extra>",
        })
        for name in names:
            if name in series[label] and series[label][name] is None:
                hidden += 1
                if len(labels) == 1:
                    annotations.append({"x": name, "y": 0, "text": HIDDEN, "showarrow": False, "yanchor": "bottom",
                                        "font": {"size": 16, "color": "#52606d"}})
    if hidden:
        note = (note + " " if note else "") + f"{hidden} verborgen wijk(en), weergegeven als „{HIDDEN}”."
    layout = _layout(barmode="group", showlegend=len(traces) > 1, annotations=annotations,
                     yaxis={**_layout()["yaxis"], "title": {"text": _humanize(measure)}})
    title = f"{_humanize(measure)} per wijk" + (f", {month}" if month else "")
    return Chart(id=f"{view.mart}-wijk", title=title, figure_json=_figure_json(traces, layout), note=note)


def _measure_columns(view: MartView, columns: list[str]) -> set[str]:
    """The columns whose null means "hidden" (measures and their per-1000 variants)."""
    measures = set(view.maten) | {f"{m}{PER_1000_SUFFIX}" for m in view.maten}
    return {c for c in columns if c in measures or c.endswith(PER_1000_SUFFIX)}


def format_cell(value: Any, column: str, measures: set[str], decimals: int | None = None) -> str:
    """A table cell: a null measure is a hidden cell ("–"); a null area or category is unknown."""
    if value is None and column not in measures:
        return "" if column in SUPPRESSION_COLUMNS else "onbekend"
    return format_value(value, column, decimals)


def column_decimals(rows: list[dict], column: str) -> int | None:
    """One number of decimals per column, so amounts line up (205.000,00 under 100.500,25)."""
    if column.endswith(PER_1000_SUFFIX):
        return 1
    fractional = any(isinstance(r.get(column), (float, Decimal)) and not float(r[column]).is_integer() for r in rows)
    return 2 if fractional else None


def _table_columns(view: MartView, rows: list[dict]) -> list[str]:
    present = list(rows[0]) if rows else []
    wanted = []
    if "gebiedsnaam" in present:
        wanted += ["gebiedsnaam", "gebiedsniveau"]
    wanted += list(view.dimensies) + list(view.maten)
    wanted += [f"{m}{PER_1000_SUFFIX}" for m in view.per_1000_inwoners]
    wanted.append("onderdrukking")
    return [c for c in wanted if c in present]


def _row_order(view: MartView, row: dict) -> tuple:
    def text(value: Any) -> tuple[int, str]:
        # 'Totaal' first, unknown (null) last, then alphabetically.
        if value == TOTAAL:
            return (0, "")
        return (2, "") if value is None else (1, str(value))

    return (
        AREA_LEVEL_ORDER.get(row.get("gebiedsniveau"), 9),
        text(row.get("gebiedscode")),
        *(text(row.get(d)) for d in view.dimensies if d != TREND_DIMENSION),
    )


def newest_rows(view: MartView, rows: list[dict]) -> list[dict]:
    """The rows the page table shows: the newest month, gemeente and wijk level, in a stable order."""
    selected = rows
    if selected and TREND_DIMENSION in selected[0]:
        months = sorted({str(r[TREND_DIMENSION]) for r in selected if r.get(TREND_DIMENSION) is not None})
        if months:
            selected = [r for r in selected if str(r.get(TREND_DIMENSION)) == months[-1]]
    if selected and "gebiedsniveau" in selected[0]:
        upper = [r for r in selected if r.get("gebiedsniveau") in ("gemeente", "wijk")]
        selected = upper or selected
    return sorted(selected, key=lambda r: _row_order(view, r))


# --------------------------------------------------------------------------- sections


def _suppression_counts(rows: list[dict]) -> tuple[int, int]:
    """Hidden cells (primary, secondary) counted in the rows (``onderdrukking``)."""
    primary = sum(1 for r in rows if r.get("onderdrukking") == "primair")
    secondary = sum(1 for r in rows if r.get("onderdrukking") == "secundair")
    return primary, secondary


def build_section(view: MartView, peildatum: date | None, status: dict | None, rows: list[dict],
                  site_peildatum: date) -> MartSection:
    """Charts, table and notes of one mart for the partition ``peildatum`` (None: not built yet)."""
    section = MartSection(view=view, peildatum=peildatum, status=status, rows=rows)
    if peildatum is None:
        section.state = "niet gebouwd"
        section.messages.append(f"Nog niet gebouwd: geen gegevens op of vóór peildatum {site_peildatum.isoformat()}.")
        return section
    if peildatum < site_peildatum:
        section.state = "verouderd"
        section.messages.append(
            f"Laatst gebouwd voor peildatum {peildatum.isoformat()}; er zijn geen gegevens van {site_peildatum.isoformat()}."
        )
    section.charts = [c for c in (trend_chart(view, rows), wijk_chart(view, rows)) if c is not None]
    if not rows:
        section.messages.append("De partitie van deze peildatum is leeg.")

    shown = newest_rows(view, rows)
    columns = _table_columns(view, rows)
    measures = _measure_columns(view, columns)
    section.table_headers = [HEADER_LABELS.get(c) or _humanize(c) for c in columns]
    decimals = {c: column_decimals(rows, c) for c in columns}
    section.table_rows = [[format_cell(row.get(c), c, measures, decimals[c]) for c in columns]
                          for row in shown[:TABLE_ROW_LIMIT]]
    if len(shown) > TABLE_ROW_LIMIT or len(shown) < len(rows):
        selection = [part for part, applies in (
            ("nieuwste maand", bool(rows) and TREND_DIMENSION in rows[0]),
            ("gemeente en wijken", bool(rows) and "gebiedsniveau" in rows[0]),
        ) if applies]
        section.table_note = (
            f"{min(len(shown), TABLE_ROW_LIMIT)} van {len(rows)} rijen getoond"
            + (f" ({', '.join(selection)})" if selection and len(shown) < len(rows) else "")
            + "; alle rijen staan in de CSV."
        )
    section.csv_name = f"{view.mart}.csv"

    counted = _suppression_counts(rows)
    if status is not None:
        section.suppressed_primary = status.get("onderdrukte_cellen_primair")
        section.suppressed_secondary = status.get("onderdrukte_cellen_secundair")
    else:
        section.suppressed_primary, section.suppressed_secondary = counted
    section.notes = _notes(view, peildatum, status, section)
    return section


def _threshold_text(view: MartView, threshold: int | None) -> str:
    if not view.personen:
        return "niet van toepassing: de mart telt geen personen"
    if threshold is None:
        return "onbekend"
    return f"minder dan {format_value(threshold)} personen: cel verborgen"


def _notes(view: MartView, peildatum: date, status: dict | None, section: MartSection) -> list[tuple[str, str]]:
    notes = [("Peildatum", peildatum.isoformat())]
    if status is not None:
        notes += [
            ("Bronnen bijgewerkt", format_timestamp(status.get("bron_bijgewerkt"))),
            ("Gebouwd op", format_timestamp(status.get("gebouwd_op"))),
            ("Silver-versies", _source_versions(status.get("bronversies"))),
            ("Drempel", _threshold_text(view, status.get("drempel"))),
        ]
    else:
        notes.append(("Versheid", "onbekend: geen regel in gold/mart_status"))
    notes.append((
        "Verborgen cellen",
        f"{count_text(section.suppressed_primary)} primair, {count_text(section.suppressed_secondary)} secundair",
    ))
    if view.personen:
        notes.append(("Telt voor onderdrukking", _humanize(view.personen)))
    if view.ook_personen:
        notes.append(("Ook apart verborgen als klein", ", ".join(_humanize(m) for m in view.ook_personen)))
    if status is not None and status.get("definitie_sha256"):
        notes.append(("Definitie", f"{view.source.name} "
                                   f"(sha256 {str(status['definitie_sha256'])[:12]})"))
    return notes


# --------------------------------------------------------------------------- build


def _domein_order(domein: str) -> tuple[int, str]:
    keys = list(DOMEINEN)
    return (keys.index(domein), "") if domein in DOMEINEN else (len(keys), domein)


def _domein_label(domein: str) -> str:
    return DOMEINEN.get(domein, _humanize(domein))


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` in one step, so the server never hands out half a page; unchanged files are kept."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _csv_bytes(rows: list[dict]) -> bytes:
    buffer = io.StringIO()
    if rows:
        writer = csv.writer(buffer, lineterminator="\n")
        columns = list(rows[0])
        writer.writerow([neutralise_csv_text(str(c)) for c in columns])
        for row in rows:
            # Hidden cells stay empty: a 0 would be a wrong number.
            writer.writerow(["" if row.get(c) is None else _csv_value(row.get(c)) for c in columns])
    return buffer.getvalue().encode("utf-8")


#: First characters that make a spreadsheet read a cell as a formula (OWASP "CSV Injection").
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise_csv_text(text: str) -> str:
    """``text`` with a leading single quote if a spreadsheet would take it for a formula.

    Gold text columns hold names from source systems (street, organisation, free text);
    a value such as ``=HYPERLINK(...)`` must stay text when the CSV is opened in Excel
    or LibreOffice, as the OWASP CSV injection guidance prescribes.
    """
    return "'" + text if text.startswith(CSV_FORMULA_PREFIXES) else text


def _csv_value(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple, dict)):
        return neutralise_csv_text(json.dumps(value, default=str, sort_keys=True))
    if isinstance(value, (bool, int, float, Decimal)):
        # Real numbers stay numbers: a negative amount is data, not a formula.
        return str(value)
    return neutralise_csv_text(str(value))


def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def _sections(gold_dir: Path, definitions: dict[str, MartView], peildatum: date | None) -> tuple[list[MartSection], date]:
    """One section per defined mart, each with its newest partition on or before ``peildatum``, and that peildatum.

    A gold table without a definition file (a mart whose definition was removed) is left out: the
    dashboard shows the marts gold builds, no more.
    """
    tables = [name for name in gold_tables(gold_dir) if name in definitions]
    for orphan in sorted(set(gold_tables(gold_dir)) - set(definitions)):
        log.warning("gold table %s has no definition gold_marts/%s.yaml; not shown", orphan, orphan)
    if not tables:
        raise DashboardError(f"no gold marts in {gold_dir}: build the gold marts first (ggm_gold_* DAGs)")
    status_rows = [r for r in read_status(gold_dir) or [] if r["mart"] in definitions]
    status_by_key = {(r["mart"], _as_date(r["peildatum"])): r for r in status_rows}
    handles = {name: _delta_table(gold_dir / name) for name in tables}
    available = {name: _available_peildata(handle) for name, handle in handles.items()}
    if peildatum is None:
        candidates = [_as_date(r["peildatum"]) for r in status_rows] or [d for ds in available.values() for d in ds]
        if not candidates:
            raise DashboardError(f"the gold marts in {gold_dir} hold no partitions yet")
        peildatum = max(candidates)
    sections = []
    for name, view in sorted(definitions.items()):
        chosen = max((d for d in available.get(name, []) if d <= peildatum), default=None)
        rows = _read_partition(handles[name], chosen)[0] if chosen else []
        sections.append(build_section(view, chosen, status_by_key.get((name, chosen)) if chosen else None,
                                      rows, peildatum))
    if all(s.peildatum is None for s in sections):
        raise DashboardError(f"no gold mart in {gold_dir} has data on or before peildatum {peildatum.isoformat()}")
    return sections, peildatum


def _render_pages(output_dir: Path, sections: list[MartSection], peildatum: date) -> list[tuple[Path, str]]:
    """The overview page and one page per domein, in page order, as (path, html)."""
    by_domein: dict[str, list[MartSection]] = {}
    for section in sections:
        by_domein.setdefault(section.view.domein, []).append(section)
    domeinen = [
        {"key": d, "label": _domein_label(d), "page": f"{d}.html", "marts": by_domein[d]}
        for d in sorted(by_domein, key=_domein_order)
    ]
    for domein in domeinen:
        domein["marts"].sort(key=lambda s: (s.view.titel, s.view.mart))

    environment = _environment()
    common = {
        "peildatum": peildatum.isoformat(),
        "domeinen": domeinen,
        "generated_at": format_timestamp(datetime.now(timezone.utc)),
        "hidden_sentence": HIDDEN_CELLS_SENTENCE,
        "hidden": HIDDEN,
        "format_value": format_value,
        "format_timestamp": format_timestamp,
        "count_text": count_text,
    }
    pages: list[tuple[Path, str]] = [
        (output_dir / "index.html", environment.get_template("index.html").render(current="index", **common))
    ]
    for domein in domeinen:
        html = environment.get_template("domein.html").render(current=domein["key"], domein=domein, **common)
        pages.append((output_dir / domein["page"], html))
    return pages


def build_site(lake_root: Path, output_dir: Path, definitions_dir: Path | None = None,
               peildatum: date | None = None) -> list[Path]:
    """Write the dashboard for the gold layer under ``lake_root`` to ``output_dir``; returns the pages.

    ``definitions_dir`` defaults to the project's ``gold_marts`` (``GGM_GOLD_MARTS_DIR``); ``peildatum``
    defaults to the newest peildatum in ``gold/mart_status`` (or in the marts when there is no status
    table). Each mart shows its newest partition on or before that date. Raises DashboardError,
    naming the path, when the gold layer is missing or holds no data.
    """
    lake_root, output_dir = Path(lake_root), Path(output_dir)
    gold_dir = lake_root / "gold"
    if not gold_dir.is_dir():
        raise DashboardError(f"no gold layer at {gold_dir}: build the gold marts first (ggm_gold_* DAGs)")
    sections, peildatum = _sections(gold_dir, load_definitions(definitions_dir), peildatum)
    pages = _render_pages(output_dir, sections, peildatum)

    written: set[Path] = set()
    for path, html in pages:
        _write_atomic(path, html.encode("utf-8"))
        written.add(path)
    for section in sections:
        if section.csv_name:
            path = output_dir / "data" / section.csv_name
            _write_atomic(path, _csv_bytes(section.rows))
            written.add(path)
    _write_atomic(output_dir / "assets" / PLOTLY_JS, _plotly_js())
    for asset in sorted(STATIC_DIR.iterdir()):
        if asset.is_file():
            _write_atomic(output_dir / "assets" / asset.name, asset.read_bytes())
    # Pages and CSVs of marts or domeinen that no longer exist would otherwise linger.
    for stale in [*output_dir.glob("*.html"), *(output_dir / "data").glob("*.csv")]:
        if stale not in written:
            stale.unlink()
    log.info("dashboard for peildatum %s: %d pages in %s", peildatum, len(pages), output_dir)
    return [path for path, _ in pages]


# --------------------------------------------------------------------------- serve

# The pages run only their own scripts (plotly + dashboard.js); Plotly sets inline styles.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
NOT_BUILT_PAGE = (
    "<!doctype html><html lang=\"nl\"><head><meta charset=\"utf-8\"><title>Beleidsdashboard</title></head>"
    "<body><h1>Beleidsdashboard</h1><p>Het dashboard is nog niet gebouwd. Het wordt gemaakt door de gold-DAG's "
    "(of <code>python -m dashboard build</code>).</p></body></html>"
)


class DashboardRequestHandler(SimpleHTTPRequestHandler):
    """Static files of the built site, without directory listings, with security headers and ``/healthz``."""

    server_version = "GGMDashboard"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path.split("?", 1)[0] == "/healthz":
            built = (Path(self.directory) / "index.html").is_file()
            self._send_text(HTTPStatus.OK, "ok" if built else "ok (not built yet)", "text/plain")
            return
        if not (Path(self.directory) / "index.html").is_file():
            self._send_text(HTTPStatus.SERVICE_UNAVAILABLE, NOT_BUILT_PAGE, "text/html")
            return
        super().do_GET()

    def _send_text(self, status: HTTPStatus, text: str, content_type: str) -> None:
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def list_directory(self, path):  # noqa: ANN001 - http.server signature
        self.send_error(HTTPStatus.NOT_FOUND, "Not found")
        return None

    def end_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server signature
        log.info("%s %s", self.address_string(), format % args)


def make_server(output_dir: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> ThreadingHTTPServer:
    """A threaded HTTP server for the site in ``output_dir`` (port 0: an ephemeral port); not yet serving."""
    handler = partial(DashboardRequestHandler, directory=str(Path(output_dir).resolve()))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve(output_dir: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Serve the site in ``output_dir`` on ``host:port`` until interrupted.

    The folder may not exist yet: until the gold DAG built the site, pages answer 503 and
    ``/healthz`` still answers 200, so the service is healthy before the first build.
    """
    server = make_server(output_dir, host, port)
    log.info("dashboard at http://%s:%d/ serving %s", host, server.server_address[1], output_dir)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
