"""Declared data contracts for departmental CSV and Excel exports.

A municipality's own applications (subsidy register, VTH system, HR system, ...)
deliver full exports as CSV or Excel files. What such a file must look like is
declared in a YAML *data contract* (``config/contracts/<source>.yaml``) that a data
analyst can review without reading Python::

    source: vth
    description: Handhavingsmeldingen uit het VTH-systeem
    datasets:
      meldingen:
        files: ["vth_meldingen_*.csv"]      # fnmatch patterns on the file name
        encoding: auto                       # auto | utf-8 | utf-8-sig | windows-1252
        delimiter: auto                      # auto | ";" | "," | "\\t"
        header_row: auto                     # auto (found by the declared headers) | 1-based row number
        number_format: nl                    # nl: 1.234,56 | en: 1,234.56
        date_formats: [dd-mm-jjjj, jjjj-mm-dd]
        key: [meldingnummer]                 # unique within one file
        columns:
          meldingnummer: {header: Meldingnummer, type: string, required: true, pattern: '^M[0-9]+$'}
          melddatum: {header: Datum melding, aliases: [Meldingsdatum], type: date, required: true}
          status: {type: string, allowed: [Open, In behandeling, Afgehandeld]}

For Excel datasets ``sheet`` names the worksheet (default: the first) and
``header_row`` the row holding the column names (title rows above it are skipped).

Column types: ``string``, ``integer``, ``decimal``, ``date``, ``boolean``. Headers
match the column's ``header`` (default: its name) or one of its ``aliases``, ignoring
case, spaces, underscores and hyphens. Columns the contract does not declare are
never landed: that is how an export's personal data the GGM does not need (a BSN, a
date of birth) stays out of the lake.

Results follow the drop-zone contract (:mod:`connectors.dropzone`): good rows come as
:class:`ParsedUnit` chunks of typed, JSON-safe records (decimals as strings
``"1234.56"``, dates ISO ``"2026-03-01"``); a bad row is a :class:`Rejection` naming
the rule, the position (``line 12`` / ``sheet Subsidies row 7``) and the column; a
file that cannot be used as a whole raises :class:`FileRejected` (rules
``missing_columns``, ``undecodable``, ``unreadable_excel``, ``missing_sheet``,
``duplicate_columns``, ``empty``, and ``dtd_forbidden`` / ``entity_expansion`` for a workbook
whose XML declares a DTD, an external entity (XXE) or entities (billion laughs)).

Workbooks are read with openpyxl only while it parses through defusedxml
(:func:`require_defused_openpyxl`); otherwise a source that takes Excel files refuses to run.
"""
from __future__ import annotations

import codecs
import csv
import fnmatch
import re
import zipfile
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

from connectors.base import ExtractWindow
from connectors.dropzone import DropzoneConnector, FileRejected, ParsedUnit, Rejection, dropzone_config_schema
from connectors.errors import SourceConfigError
from ggm_lakehouse.config import project_root
from ggm_lakehouse.landing import BatchResult
from ggm_lakehouse.yaml_schema import DIALECT, load_yaml_document, validate

COLUMN_TYPES = ("string", "integer", "decimal", "date", "boolean")
ENCODINGS = ("auto", "utf-8", "utf-8-sig", "windows-1252")
DELIMITERS = ("auto", ";", ",", "\t")
NUMBER_FORMATS = ("nl", "en")
DEFAULT_DATE_FORMATS = ("dd-mm-jjjj", "jjjj-mm-dd")
# Rows per ParsedUnit: bounds the memory one unit holds while keeping the number of units small.
DEFAULT_CHUNK_ROWS = 500
# Rows searched for the header when header_row is auto (title blocks are a few rows high).
HEADER_SEARCH_ROWS = 30
# An .xlsx is a zip of XML parts; refuse archives that would inflate beyond this (zip bombs).
MAX_XLSX_UNCOMPRESSED_BYTES = 512 * 1024 * 1024
_SNIFF_BYTES = 64 * 1024
NUL = b"\x00"

_TRUE = {"ja", "j", "true", "waar", "yes", "y", "1"}
_FALSE = {"nee", "n", "false", "onwaar", "no", "0"}
# Windows-1252 leaves these five bytes undefined: a file containing them is neither UTF-8 nor 1252.
_CP1252_UNDEFINED = frozenset(b"\x81\x8d\x8f\x90\x9d")
_DATE_TOKENS = {"dd": r"(?P<d>\d{2})", "d": r"(?P<d>\d{1,2})", "mm": r"(?P<m>\d{2})", "m": r"(?P<m>\d{1,2})",
                "jjjj": r"(?P<y>\d{4})", "yyyy": r"(?P<y>\d{4})"}


class ContractError(ValueError):
    """A contract file is invalid; the message names the file and the problem."""


_NUMBER_FORMAT = {"enum": list(NUMBER_FORMATS), "title": "How numbers are written",
                  "description": "nl: 1.234,56 (default); en: 1,234.56."}
_DATE_FORMATS = {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1},
                 "title": "Date formats tried in order",
                 "description": "Written with dd, d, mm, m and jjjj (or yyyy), e.g. dd-mm-jjjj. Default: dd-mm-jjjj, "
                                "jjjj-mm-dd."}
_ONE_OR_MORE_TEXTS = {"oneOf": [{"title": "a text", "type": "string", "minLength": 1},
                                {"title": "a list of texts", "type": "array",
                                 "items": {"type": "string", "minLength": 1}}]}
_CONTRACT_COLUMN = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "properties": {
        "header": {"type": "string", "minLength": 1, "title": "Header text in the file (default: the column's name)"},
        "aliases": {**_ONE_OR_MORE_TEXTS, "title": "Other header texts that mean this column"},
        "type": {"enum": list(COLUMN_TYPES), "title": "Type the value is converted to", "description": "Default: string."},
        "required": {"type": "boolean", "title": "The header must be present and every row must have a value"},
        "allowed": {"type": "array", "minItems": 1, "title": "The only values accepted (compared after typing)"},
        "pattern": {"type": "string", "minLength": 1, "title": "Regular expression the whole value must match"},
        "number_format": _NUMBER_FORMAT,
        "date_formats": _DATE_FORMATS,
        "description": {"type": "string", "title": "What the column holds"},
    },
}
_DATASET = {
    "type": "object",
    "additionalProperties": False,
    "required": ["files", "columns"],
    "properties": {
        "files": {"title": "File name patterns (fnmatch, case-insensitive) that carry this dataset",
                  "oneOf": [{"title": "a pattern such as '*.csv'", "type": "string", "minLength": 1},
                            {"title": "a list of patterns", "type": "array", "minItems": 1,
                             "items": {"type": "string", "minLength": 1}}]},
        "description": {"type": "string", "title": "What one row is"},
        "encoding": {"enum": [*ENCODINGS, "cp1252"], "title": "Text encoding of a CSV file",
                     "description": "auto (default): UTF-8 with or without BOM, else Windows-1252."},
        "delimiter": {"enum": [*DELIMITERS, "tab", "\\t"], "title": "Field separator of a CSV file",
                      "description": "auto (default): the one under which the header matches best."},
        "header_row": {"anyOf": [{"const": "auto"}, {"type": "integer", "minimum": 1}],
                       "errorMessage": "must be auto or a row number from 1",
                       "title": "Row holding the column names",
                       "description": "auto (default): the first row that matches the declared headers; title rows "
                                      "above it are skipped."},
        "sheet": {"type": "string", "minLength": 1, "title": "Worksheet of an Excel file (default: the first)"},
        "number_format": _NUMBER_FORMAT,
        "date_formats": _DATE_FORMATS,
        "key": {"type": "array", "items": {"type": "string"}, "title": "Columns whose values are unique within one file"},
        "allow_empty": {"type": "boolean", "title": "A file without data rows is accepted",
                        "description": "Default false: a full snapshot without rows would close every object."},
        "chunk_rows": {"type": "integer", "minimum": 1, "title": "Rows per landed unit", "description": "Default 500."},
        "columns": {"type": "object", "minProperties": 1, "additionalProperties": _CONTRACT_COLUMN,
                    "title": "The columns landed; undeclared columns never are",
                    "propertyNames": {"pattern": r"^[a-z][a-z0-9_]*$",
                                      "patternErrorMessage": "must be snake_case (it becomes the record's JSON key)"}},
    },
}
#: JSON schema of a data contract (``config/contracts/<source>.yaml``); published as docs/schemas/data-contract.schema.json.
CONTRACT_SCHEMA: dict[str, Any] = {
    "$schema": DIALECT,
    "title": "Data contract of a departmental export",
    "description": "What the CSV or Excel files of one drop-zone source must look like: "
                   "config/contracts/<source>.yaml (docs/dropzones.md, connectors/contracts.py).",
    "type": "object",
    "additionalProperties": False,
    "required": ["source", "datasets"],
    "properties": {
        "source": {"type": "string", "pattern": r"^[a-z][a-z0-9_]*$", "title": "The connector's name",
                   "patternErrorMessage": "must be the connector's name in lower case (a-z, 0-9 and _)"},
        "owner": {"type": "string", "title": "Team that delivers the export"},
        "description": {"type": "string", "title": "What the export holds"},
        "datasets": {"type": "object", "minProperties": 1, "additionalProperties": _DATASET,
                     "title": "The datasets of the source, by name"},
    },
}


def normalise_header(text: str) -> str:
    """Header comparison key: case-, space-, underscore- and hyphen-insensitive (``Datum in dienst`` = ``datum_in-dienst``)."""
    return re.sub(r"[\s_\-.]+", "", str(text)).casefold()


def _date_regex(fmt: str) -> re.Pattern[str]:
    """Regex for a date format written with Dutch tokens (``dd-mm-jjjj``) or ``yyyy``."""
    parts = re.split(r"(jjjj|yyyy|dd|mm|d|m)", fmt)
    pattern = "".join(_DATE_TOKENS.get(p, re.escape(p)) for p in parts)
    if not all(g in pattern for g in ("?P<d>", "?P<m>", "?P<y>")):
        raise ValueError(f"date format {fmt!r} needs day, month and year (e.g. dd-mm-jjjj)")
    return re.compile(f"^{pattern}$")


@dataclass(frozen=True)
class ColumnContract:
    """One declared column: how to find it in the header and how to type and check its values."""

    name: str
    header: str
    aliases: tuple[str, ...] = ()
    type: str = "string"
    required: bool = False
    allowed: tuple[str, ...] | None = None
    pattern: re.Pattern[str] | None = None
    number_format: str = "nl"
    date_formats: tuple[str, ...] = DEFAULT_DATE_FORMATS
    description: str = ""

    @property
    def header_keys(self) -> frozenset[str]:
        """Normalised header texts that identify this column."""
        return frozenset(normalise_header(h) for h in (self.header, self.name, *self.aliases))


@dataclass(frozen=True)
class DatasetContract:
    """One dataset of a source: which files carry it and what their rows look like."""

    name: str
    files: tuple[str, ...]
    columns: tuple[ColumnContract, ...]
    key: tuple[str, ...] = ()
    encoding: str = "auto"
    delimiter: str = "auto"
    sheet: str | None = None
    header_row: int | None = None  # None: auto-detect by the declared headers
    allow_empty: bool = False
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    description: str = ""

    @property
    def required_columns(self) -> tuple[ColumnContract, ...]:
        return tuple(c for c in self.columns if c.required)


class DataContract:
    """A source's declared export contract (see the module docstring for the YAML format)."""

    def __init__(self, source: str, datasets: Mapping[str, DatasetContract], path: Path | None = None,
                 description: str = "", owner: str = "") -> None:
        self.source = source
        self.datasets = dict(datasets)
        self.path = path
        self.description = description
        self.owner = owner
        self._date_regexes: dict[str, re.Pattern[str]] = {}

    # -- loading

    @classmethod
    def from_file(cls, path: Path) -> "DataContract":
        """Read and validate a contract YAML file; raise :class:`ContractError` naming the problem."""
        path = Path(path)
        doc = load_yaml_document(path, CONTRACT_SCHEMA, source=path.name, error=ContractError)
        return cls._from_valid(doc, path)

    @classmethod
    def from_dict(cls, doc: Any, path: Path | None = None) -> "DataContract":
        """Build a contract from its parsed YAML document."""
        validate(doc, CONTRACT_SCHEMA, source=path.name if path else "contract", error=ContractError)
        return cls._from_valid(doc, path)

    @classmethod
    def _from_valid(cls, doc: dict, path: Path | None) -> "DataContract":
        """A contract from a document CONTRACT_SCHEMA has checked: what is left are the rules between its parts."""
        where = path.name if path else "contract"

        def fail(message: str) -> ContractError:
            return ContractError(f"{where}: {message}")

        datasets = {name: _dataset(name, spec, fail) for name, spec in doc["datasets"].items()}
        return cls(doc["source"], datasets, path, doc.get("description", ""), doc.get("owner", ""))

    # -- API

    def dataset_for(self, file_name: str) -> str | None:
        """The dataset whose file patterns match ``file_name`` (case-insensitive), or None."""
        lowered = Path(file_name).name.lower()
        for name, dataset in self.datasets.items():
            if any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in dataset.files):
                return name
        return None

    @property
    def file_patterns(self) -> tuple[str, ...]:
        """Every file pattern of every dataset."""
        return tuple(p for d in self.datasets.values() for p in d.files)

    def parse(self, path: Path, dataset: str) -> Iterator[ParsedUnit | Rejection]:
        """Stream ``path`` as ``dataset``: chunks of good rows as ParsedUnits, bad rows as Rejections.

        Raises :class:`FileRejected` when the file as a whole is unusable (missing required
        columns, undecodable, unreadable Excel, missing sheet, no data rows).
        """
        if dataset not in self.datasets:
            raise KeyError(f"{self.source}: unknown dataset {dataset!r}; known: {sorted(self.datasets)}")
        spec = self.datasets[dataset]
        path = Path(path)
        if path.suffix.lower() in (".xlsx", ".xlsm"):
            rows = _xlsx_rows(path, spec)
        elif path.suffix.lower() == ".xls":
            raise FileRejected("unreadable_excel", "the binary Excel 97-2003 format (.xls) is not accepted; "
                                                   "export as .xlsx or CSV")
        else:
            rows = _csv_rows(path, spec)
        yield from self._typed_units(path.name, dataset, spec, rows)

    # -- rows to units

    def _typed_units(self, file_name: str, dataset: str, spec: DatasetContract,
                     rows: Iterator[tuple[str, int, list[Any]]]) -> Iterator[ParsedUnit | Rejection]:
        # The first row that matches the declared headers is the header; the rows above it are titles.
        header_position, indexes = _find_header(file_name, spec, rows)
        seen_keys: dict[tuple[Any, ...], str] = {}
        chunk: list[dict[str, Any]] = []
        chunk_start = ""
        last_position = header_position
        data_rows = 0
        width = len(indexes.header_cells)
        key_headers = ", ".join(next(c.header for c in spec.columns if c.name == k) for k in spec.key)
        for label, position, cells in rows:
            if all(_blank(c) for c in cells):
                continue
            data_rows += 1
            where = f"{label} {position}"
            # In a CSV, cells beyond the header mean a delimiter inside an unquoted value; in Excel a
            # note beside the table is harmless.
            if label == "line" and len(cells) > width and any(not _blank(c) for c in cells[width:]):
                yield Rejection(file_name, where, "column_count",
                                f"row has {len(cells)} cells, the header {width}: a delimiter inside an unquoted value?")
                continue
            record, problem = self._typed_record(spec, indexes.by_column, cells)
            if problem is not None:
                rule, column, message = problem
                yield Rejection(file_name, f"{where} column {column}", rule, message)
                continue
            if spec.key:
                key_value = tuple(record[k] for k in spec.key)
                first = seen_keys.get(key_value)
                if first is not None:
                    yield Rejection(file_name, f"{where} column {key_headers}", "duplicate_key",
                                    f"key {_show_key(spec.key, key_value)} already at {first}")
                    continue
                seen_keys[key_value] = where
            if not chunk:
                chunk_start = where
            chunk.append(record)
            last_position = where
            if len(chunk) >= spec.chunk_rows:
                yield ParsedUnit(_span(chunk_start, last_position), {dataset: chunk})
                chunk = []
        if chunk:
            yield ParsedUnit(_span(chunk_start, last_position), {dataset: chunk})
        if data_rows == 0 and not spec.allow_empty:
            # A full snapshot without rows would close every object in silver: never take it silently.
            raise FileRejected("empty", f"no data rows below the header ({header_position})", header_position)

    def _typed_record(self, spec: DatasetContract, by_column: dict[str, int | None],
                      cells: list[Any]) -> tuple[dict[str, Any], tuple[str, str, str] | None]:
        record: dict[str, Any] = {}
        for column in spec.columns:
            index = by_column[column.name]
            raw = cells[index] if index is not None and index < len(cells) else None
            if _blank(raw):
                if column.required:
                    return record, ("required_missing", column.header, f"{column.header} is required but empty")
                record[column.name] = None
                continue
            try:
                value = self._convert(column, raw)
            except _BadValue as bad:
                return record, (bad.rule, column.header, f"{column.header}: {bad}")
            if column.allowed is not None and value not in column.allowed:
                return record, ("not_allowed", column.header,
                                f"{column.header}: {value!r} is not one of {list(column.allowed)}")
            if column.pattern is not None and not column.pattern.fullmatch(str(value)):
                return record, ("pattern_mismatch", column.header,
                                f"{column.header}: {value!r} does not match {column.pattern.pattern}")
            record[column.name] = value
        return record, None

    def _convert(self, column: ColumnContract, raw: Any) -> Any:
        if column.type == "string":
            return _as_string(raw)
        if column.type == "decimal":
            return _as_decimal(raw, column.number_format)
        if column.type == "integer":
            return _as_integer(raw, column.number_format)
        if column.type == "date":
            return self._as_date(raw, column.date_formats)
        return _as_boolean(raw)

    def _as_date(self, raw: Any, formats: tuple[str, ...]) -> str:
        if isinstance(raw, datetime):
            if raw.time() != datetime.min.time():
                raise _BadValue("bad_date", f"{raw.isoformat()} has a time of day; a date was expected")
            return raw.date().isoformat()
        if isinstance(raw, date):
            return raw.isoformat()
        text = _as_string(raw)
        for fmt in formats:
            regex = self._date_regexes.get(fmt)
            if regex is None:
                regex = self._date_regexes[fmt] = _date_regex(fmt)
            match = regex.match(text)
            if match:
                try:
                    return date(int(match["y"]), int(match["m"]), int(match["d"])).isoformat()
                except ValueError:
                    raise _BadValue("bad_date", f"{text!r} is not a calendar date") from None
        raise _BadValue("bad_date", f"{text!r} is not a date in format {' or '.join(formats)}")


class _BadValue(ValueError):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class _HeaderIndexes:
    by_column: dict[str, int | None]
    header_cells: tuple[Any, ...]


def _dataset(name: str, spec: dict, fail) -> DatasetContract:
    """One dataset of a checked contract; the date formats, headers and key must fit together."""
    files = [spec["files"]] if isinstance(spec["files"], str) else spec["files"]
    number_format = spec.get("number_format", "nl")
    date_formats = _date_formats(spec.get("date_formats") or DEFAULT_DATE_FORMATS, f"dataset {name}", fail)
    columns = tuple(_column(name, col, col_spec or {}, number_format, date_formats, fail)
                    for col, col_spec in spec["columns"].items())
    seen: dict[str, str] = {}
    for column in columns:
        for header_key in column.header_keys:
            if header_key in seen and seen[header_key] != column.name:
                raise fail(f"dataset {name}: header {header_key!r} identifies both {seen[header_key]} and {column.name}")
            seen[header_key] = column.name
    key = tuple(spec.get("key") or ())
    names = {c.name for c in columns}
    for key_column in key:
        if key_column not in names:
            raise fail(f"dataset {name}: key column {key_column!r} is not declared under 'columns'")
    header_row = spec.get("header_row", "auto")
    delimiter = spec.get("delimiter", "auto")
    return DatasetContract(
        name=name, files=tuple(files), columns=columns, key=key,
        encoding=spec.get("encoding", "auto").replace("cp1252", "windows-1252"),
        delimiter={"tab": "\t", "\\t": "\t"}.get(delimiter, delimiter),
        sheet=spec.get("sheet"), header_row=None if header_row == "auto" else header_row,
        allow_empty=spec.get("allow_empty", False), chunk_rows=spec.get("chunk_rows", DEFAULT_CHUNK_ROWS),
        description=spec.get("description", ""),
    )


def _date_formats(formats: list[str] | tuple[str, ...], where: str, fail) -> tuple[str, ...]:
    """The date formats, each checked to name a day, a month and a year."""
    for fmt in formats:
        try:
            _date_regex(fmt)
        except ValueError as exc:
            raise fail(f"{where}: {exc}") from None
    return tuple(formats)


def _column(dataset: str, name: str, spec: dict, number_format: str, date_formats: tuple[str, ...],
            fail) -> ColumnContract:
    pattern = spec.get("pattern")
    try:
        compiled = re.compile(pattern) if pattern else None
    except re.error as exc:
        raise fail(f"dataset {dataset} column {name}: invalid pattern ({exc})") from None
    column_formats = _date_formats(spec.get("date_formats") or date_formats, f"dataset {dataset} column {name}", fail)
    aliases = spec.get("aliases") or []
    allowed = spec.get("allowed")
    return ColumnContract(
        name=name, header=spec.get("header", name), aliases=tuple([aliases] if isinstance(aliases, str) else aliases),
        type=spec.get("type", "string"), required=spec.get("required", False),
        # Allowed values are compared after typing: a YAML list of strings for a string column.
        allowed=tuple(allowed) if allowed is not None else None,
        pattern=compiled, number_format=spec.get("number_format", number_format), date_formats=column_formats,
        description=spec.get("description", ""),
    )


# -- values

def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _as_string(raw: Any) -> str:
    if isinstance(raw, float) and raw.is_integer():
        # Excel stores a typed-in number such as a personeelsnummer as a float.
        return str(int(raw))
    if isinstance(raw, datetime):
        return raw.isoformat()
    return str(raw).strip()


_NL_NUMBER = re.compile(r"^[+-]?(\d{1,3}(\.\d{3})+|\d+)(,\d+)?$")
_EN_NUMBER = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?$")


def _as_decimal(raw: Any, number_format: str) -> str:
    if isinstance(raw, bool):
        raise _BadValue("bad_decimal", f"{raw!r} is not a number")
    if isinstance(raw, (int, float, Decimal)):
        # Excel keeps 15 significant digits of a binary float: 0.1 + 0.2 is 0.3 there, and here.
        value = Decimal(format(raw, ".15g")) if isinstance(raw, float) else Decimal(raw)
    else:
        text = _as_string(raw).replace("\u20ac", "").replace("EUR", "").replace("\u00a0", "").replace(" ", "")
        regex = _NL_NUMBER if number_format == "nl" else _EN_NUMBER
        if not regex.match(text):
            example = "1.234,56" if number_format == "nl" else "1,234.56"
            raise _BadValue("bad_decimal", f"{_as_string(raw)!r} is not a decimal written as {example}")
        if number_format == "nl":
            text = text.replace(".", "").replace(",", ".")
        else:
            text = text.replace(",", "")
        value = Decimal(text)
    if not value.is_finite():
        raise _BadValue("bad_decimal", f"{raw!r} is not a finite number")
    return _decimal_text(value)


def _decimal_text(value: Decimal) -> str:
    # Plain notation (no exponent), trailing zeros kept as written: "1234.50" stays "1234.50".
    return format(value, "f")


def _as_integer(raw: Any, number_format: str) -> int:
    if isinstance(raw, bool):
        raise _BadValue("bad_integer", f"{raw!r} is not a whole number")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        if raw.is_integer():
            return int(raw)
        raise _BadValue("bad_integer", f"{raw!r} is not a whole number")
    text = _as_string(raw).replace(" ", "")
    thousands = "." if number_format == "nl" else ","
    if re.fullmatch(rf"[+-]?\d{{1,3}}(\{thousands}\d{{3}})+", text):
        text = text.replace(thousands, "")
    if not re.fullmatch(r"[+-]?\d+", text):
        raise _BadValue("bad_integer", f"{_as_string(raw)!r} is not a whole number")
    return int(text)


def _as_boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = _as_string(raw).casefold()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _BadValue("bad_boolean", f"{_as_string(raw)!r} is not ja/nee, true/false or 1/0")


def _show_key(names: tuple[str, ...], values: tuple[Any, ...]) -> str:
    return ", ".join(f"{n}={v!r}" for n, v in zip(names, values))


def _span(first: str, last: str) -> str:
    """``line 2-501`` / ``sheet X row 5-504`` from the first and last row position."""
    if first == last:
        return first
    return f"{first}-{last.rsplit(' ', 1)[-1]}"


# -- header

def _find_header(file_name: str, spec: DatasetContract,
                 rows: Iterator[tuple[str, int, list[Any]]]) -> tuple[str, _HeaderIndexes]:
    """Consume rows up to and including the header; map each declared column to its cell index."""
    best: tuple[int, str, list[Any]] | None = None
    for label, position, cells in rows:
        if spec.header_row is not None and position < spec.header_row:
            continue
        if all(_blank(c) for c in cells):
            if spec.header_row is not None:
                raise FileRejected("missing_columns", f"the declared header row {spec.header_row} is empty",
                                   f"{label} {position}")
            continue
        matched = _match_header(spec, cells)
        score = sum(1 for index in matched.values() if index is not None)
        if best is None or score > best[0]:
            best = (score, f"{label} {position}", cells)
        required_found = all(matched[c.name] is not None for c in spec.required_columns)
        if spec.header_row is not None or (required_found and score > 0):
            break
        if position >= HEADER_SEARCH_ROWS:
            break
    if best is None:
        raise FileRejected("empty", "the file holds no header row (it is empty)")
    _score, where, cells = best
    by_column = _match_header(spec, cells)
    _check_duplicate_headers(spec, cells, where)
    missing = [c.header for c in spec.required_columns if by_column[c.name] is None]
    if missing:
        raise FileRejected("missing_columns", f"required column(s) missing from the header: {', '.join(missing)}", where)
    return where, _HeaderIndexes(by_column, tuple(cells))


def _match_header(spec: DatasetContract, cells: list[Any]) -> dict[str, int | None]:
    keys = [normalise_header(c) if not _blank(c) else "" for c in cells]
    found: dict[str, int | None] = {}
    for column in spec.columns:
        found[column.name] = next((i for i, k in enumerate(keys) if k in column.header_keys), None)
    return found


def _check_duplicate_headers(spec: DatasetContract, cells: list[Any], where: str) -> None:
    for column in spec.columns:
        hits = [str(cells[i]) for i, c in enumerate(cells) if not _blank(c) and normalise_header(c) in column.header_keys]
        if len(hits) > 1:
            raise FileRejected("duplicate_columns", f"column {column.header} appears {len(hits)} times "
                                                     f"({', '.join(hits)}): which one is meant is unclear", where)


# -- CSV

def detect_encoding(path: Path, declared: str = "auto") -> str:
    """The Python codec of a CSV file: a declared one, or UTF-8 (with or without BOM) else Windows-1252.

    Auto-detection reads the file once in blocks (bounded memory); a file that is valid
    UTF-8 is UTF-8, otherwise Windows-1252 as written by Excel on Dutch Windows. Raises
    :class:`FileRejected` (``undecodable``) for binary data or bytes that fit neither.
    """
    with open(path, "rb") as handle:
        head = handle.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise FileRejected("undecodable", "the file is UTF-16; export as UTF-8 or Windows-1252 CSV")
        if declared != "auto":
            return declared
        handle.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        utf8 = True
        offset = 0
        while block := handle.read(_SNIFF_BYTES):
            if NUL in block:
                raise FileRejected("undecodable", "the file holds NUL bytes: not a text (CSV) file",
                                   f"byte {offset + block.index(NUL)}")
            if utf8:
                try:
                    decoder.decode(block)
                except UnicodeDecodeError:
                    utf8 = False
            if not utf8:
                bad = _CP1252_UNDEFINED.intersection(block)
                if bad:
                    raise FileRejected("undecodable", "bytes that are neither UTF-8 nor Windows-1252 "
                                                      f"(0x{min(bad):02x})", f"byte {offset + block.index(bytes([min(bad)]))}")
            offset += len(block)
        if utf8:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                utf8 = False  # truncated multi-byte sequence at the end
        return "utf-8" if utf8 else "windows-1252"


def _sniff_delimiter(first_lines: list[str], spec: DatasetContract) -> str:
    """The delimiter among ``;`` ``,`` tab under which a line best matches the declared headers."""
    best = (-1, -1, ";")
    for delimiter in (";", ",", "\t"):
        for line in first_lines:
            cells = next(csv.reader([line], delimiter=delimiter), [])
            matched = sum(1 for i in _match_header(spec, cells).values() if i is not None)
            candidate = (matched, len(cells), delimiter)
            if candidate[:2] > best[:2]:
                best = candidate
    return best[2]


def _csv_rows(path: Path, spec: DatasetContract) -> Iterator[tuple[str, int, list[Any]]]:
    encoding = detect_encoding(path, spec.encoding)
    try:
        with open(path, "r", encoding=encoding, newline="") as handle:
            delimiter = spec.delimiter
            if delimiter == "auto":
                first = []
                for _ in range(HEADER_SEARCH_ROWS):
                    line = handle.readline()
                    if not line:
                        break
                    first.append(line)
                delimiter = _sniff_delimiter(first, spec)
                handle.seek(0)
            reader = csv.reader(handle, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
            start = 1
            for cells in reader:
                yield "line", start, cells
                start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        # Only with a declared encoding: auto-detection has checked every byte already.
        raise FileRejected("undecodable", f"not valid {encoding}: {exc.reason}", f"byte {exc.start}") from None
    except csv.Error as exc:
        raise FileRejected("malformed_csv", str(exc)) from None


# -- Excel

class UnsafeExcelParser(SourceConfigError):
    """openpyxl would read workbook XML without defusedxml: Excel files are not read at all then."""


def require_defused_openpyxl(source: str = "excel") -> None:
    """Raise :class:`UnsafeExcelParser` unless openpyxl parses worksheet XML through defusedxml.

    openpyxl streams sheets and shared strings with ``iterparse``, which is defusedxml's
    (refusing entity declarations: billion laughs, XXE) only when ``defusedxml`` is importable
    and ``OPENPYXL_DEFUSEDXML`` is not ``False``; otherwise it falls back to the standard library.
    """
    import openpyxl.xml
    from openpyxl.xml import functions

    if openpyxl.xml.DEFUSEDXML and getattr(functions.iterparse, "__module__", "").startswith("defusedxml"):
        return
    raise UnsafeExcelParser(source, "Excel workbooks are not read: openpyxl is not using defusedxml, so a workbook "
                                    "could expand entities (billion laughs) or read local files (XXE). Install the "
                                    "pinned dependency (pip install -c constraints.txt defusedxml) and do not set "
                                    "OPENPYXL_DEFUSEDXML=False.")


def _refuse_xml_declarations(archive: zipfile.ZipFile) -> None:
    """Reject a workbook whose XML parts declare a DTD or entities, before any parser sees them.

    OOXML parts never carry a DOCTYPE, so one is an attack (billion laughs, XXE). The entity's
    target is never repeated: it may name a local file.
    """
    for info in archive.infolist():
        if not info.filename.lower().endswith((".xml", ".rels", ".vml")):
            continue
        with archive.open(info) as part:
            head = part.read(_SNIFF_BYTES)
        encoding = "utf-16" if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8"
        text = head.decode(encoding, errors="ignore")
        if "<!ENTITY" in text:
            external = re.search(r"<!ENTITY[^>]*\b(SYSTEM|PUBLIC)\b", text) is not None
            raise _entity_rejection(f"the workbook part {info.filename}", f"part {info.filename}", external)
        if "<!DOCTYPE" in text:
            raise FileRejected("dtd_forbidden", f"the workbook part {info.filename} has a DOCTYPE declaration; "
                                                "Excel files never have one", f"part {info.filename}")


def _entity_rejection(what: str, position: str | None, external: bool) -> FileRejected:
    if external:
        return FileRejected("dtd_forbidden", f"{what} declares an external entity (XXE); "
                                             "DTDs and entities are refused", position)
    return FileRejected("entity_expansion", f"{what} declares entities (entity expansion "
                                            "attack); DTDs and entities are refused", position)


def _refusal_for(exc: BaseException | None, what: str, position: str | None) -> FileRejected | None:
    """The rejection for a defusedxml refusal raised while openpyxl reads ``what``; None for other errors."""
    from defusedxml import DefusedXmlException, EntitiesForbidden

    # openpyxl wraps parser errors (ValueError "could not read worksheets"): look down the chain.
    seen = 0
    while exc is not None and not isinstance(exc, DefusedXmlException) and seen < 10:
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    if not isinstance(exc, DefusedXmlException):
        return None
    if isinstance(exc, EntitiesForbidden):
        return _entity_rejection(what, position, bool(exc.sysid or exc.pubid))
    return FileRejected("dtd_forbidden", f"{what} carries a DTD or an external reference; refused "
                                         f"({type(exc).__name__})", position)


def _xlsx_rows(path: Path, spec: DatasetContract) -> Iterator[tuple[str, int, list[Any]]]:
    require_defused_openpyxl()
    import openpyxl

    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
            if inflated <= MAX_XLSX_UNCOMPRESSED_BYTES:
                _refuse_xml_declarations(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FileRejected("unreadable_excel", f"not an .xlsx workbook ({exc})") from None
    if inflated > MAX_XLSX_UNCOMPRESSED_BYTES:
        raise FileRejected("unreadable_excel", f"workbook inflates to {inflated} bytes, more than the "
                                               f"{MAX_XLSX_UNCOMPRESSED_BYTES} accepted")
    try:
        # read_only streams the sheet XML row by row; data_only gives cached formula results.
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types (KeyError, InvalidFileException, XML errors)
        raise _refusal_for(exc, "the workbook", None) or FileRejected(
            "unreadable_excel", f"cannot open workbook ({type(exc).__name__}: {exc})") from None
    try:
        sheet_name = _pick_sheet(workbook.sheetnames, spec.sheet)
        sheet = workbook[sheet_name]
        label = f"sheet {sheet_name} row"
        try:
            for position, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                yield label, position, list(values)
        except FileRejected:
            raise
        except Exception as exc:
            raise _refusal_for(exc, f"sheet {sheet_name}", f"sheet {sheet_name}") or FileRejected(
                "unreadable_excel", f"sheet {sheet_name} cannot be read ({type(exc).__name__}: {exc})") from None
    finally:
        workbook.close()


def _pick_sheet(names: list[str], wanted: str | None) -> str:
    if wanted is None:
        return names[0]
    for name in names:
        if normalise_header(name) == normalise_header(wanted):
            return name
    raise FileRejected("missing_sheet", f"worksheet {wanted!r} not found; the workbook has {names}")


# -- connector base

def default_contract_path(source: str) -> Path:
    """``<checkout>/config/contracts/<source>.yaml``."""
    return project_root() / "config" / "contracts" / f"{source}.yaml"


CONTRACT_CONFIG_PROPERTIES: dict[str, Any] = {
    "contract": {"type": "string", "minLength": 1,
                 "description": "Path of the data-contract YAML (default config/contracts/<source>.yaml)."},
}


class ContractConnector(DropzoneConnector):
    """A drop-zone source whose files are checked and typed by a declared :class:`DataContract`.

    The contract file comes from config key ``contract`` (default
    ``config/contracts/<name>.yaml`` in the checkout). Subclasses set ``name``,
    ``datasets`` and ``file_patterns`` to match their contract (a test checks they agree).
    """

    # A subclass with keys of its own builds its schema the same way, including CONTRACT_CONFIG_PROPERTIES.
    config_schema: ClassVar[dict[str, Any]] = dropzone_config_schema(CONTRACT_CONFIG_PROPERTIES)
    # Register exports are full snapshots: of two exports of one kind in a run, only the newest lands.
    supersede_older_deliveries: ClassVar[bool] = True

    @property
    def contract_path(self) -> Path:
        """The contract file this connector checks its files against."""
        configured = self.config.get("contract")
        return Path(configured) if configured else default_contract_path(self.name)

    @property
    def contract(self) -> DataContract:
        """The loaded contract (read once per connector instance)."""
        cached = getattr(self, "_contract", None)
        if cached is None:
            try:
                cached = DataContract.from_file(self.contract_path)
            except ContractError as exc:
                raise SourceConfigError(self.name, str(exc)) from exc
            if cached.source != self.name:
                raise SourceConfigError(self.name, f"contract {self.contract_path} is for source {cached.source!r}")
            if tuple(cached.datasets) != tuple(self.datasets):
                # The framework lands one batch per declared dataset; a contract must not add or drop one.
                raise SourceConfigError(self.name, f"contract {self.contract_path} declares datasets "
                                                   f"{list(cached.datasets)}, the connector {list(self.datasets)}")
            self._contract = cached
        return cached

    @property
    def patterns(self) -> tuple[str, ...]:
        """Files to pick up: config ``file_patterns``, else those of the contract (which may be a configured one)."""
        return tuple(self.config.get("file_patterns") or self.contract.file_patterns)

    def extract(self, window: ExtractWindow, landing_root: Path) -> list[BatchResult]:
        """The drop-zone extract; refused up front when Excel files may arrive and openpyxl is not defused.

        Refusing the run (rather than quarantining each workbook) leaves the files in the zone
        for a rerun once the installation is fixed.
        """
        if not all(pattern.lower().endswith(".csv") for pattern in self.patterns):
            require_defused_openpyxl(self.name)
        return super().extract(window, landing_root)

    def parse_file(self, path: Path) -> Iterator[ParsedUnit | Rejection]:
        """Parse ``path`` with the dataset its name matches in the contract."""
        dataset = self.contract.dataset_for(Path(path).name)
        if dataset is None:
            raise FileRejected("unknown_file", f"{Path(path).name} matches no dataset of the {self.name} contract "
                                               f"(patterns {list(self.contract.file_patterns)})")
        yield from self.contract.parse(Path(path), dataset)


__all__ = [
    "CONTRACT_CONFIG_PROPERTIES",
    "CONTRACT_SCHEMA",
    "ColumnContract",
    "ContractConnector",
    "ContractError",
    "DataContract",
    "DatasetContract",
    "UnsafeExcelParser",
    "default_contract_path",
    "detect_encoding",
    "normalise_header",
    "require_defused_openpyxl",
]
