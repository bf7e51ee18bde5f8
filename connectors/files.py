"""Drop-zone file connector: land files delivered by departmental systems byte for byte.

Departmental applications deliver exports into ``<dropzone root>/<source>/`` with the
delivery date in the file name, e.g. ``wijkbuurtindeling_20260301.csv``. For a logical
date the connector lands, per dataset, the newest delivery dated on or before that
date, so re-running an old logical date lands the file that was current then (and
the same bytes as the first time).

The generic :class:`FileDropConnector` takes its source name and its dataset →
file-pattern map from config; :class:`GebiedenConnector` is the configured instance
for the municipality's area division (wijken/buurten and postcode-huisnummer table).
"""
from __future__ import annotations

import hashlib
import logging
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any, ClassVar

from connectors.base import Connector, ExtractWindow
from connectors.errors import SourceConfigError, SourceDataError
from ggm_lakehouse import config as ggm_config
from ggm_lakehouse.landing import BatchResult, BatchWriter

log = logging.getLogger(__name__)

_DATE_TOKEN = "*"


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Regex for a delivery pattern; the single ``*`` stands for the delivery date ``YYYYMMDD``."""
    if pattern.count(_DATE_TOKEN) != 1 or "/" in pattern:
        raise ValueError(f"file pattern {pattern!r} must be a file name with exactly one '*' for the date YYYYMMDD")
    before, after = pattern.split(_DATE_TOKEN)
    return re.compile(f"^{re.escape(before)}(\\d{{8}}){re.escape(after)}$")


def dated_deliveries(directory: Path, pattern: str) -> list[tuple[date, Path]]:
    """All files in ``directory`` matching ``pattern`` with their delivery date, oldest first.

    Names whose date part is not a real calendar date are ignored with a warning.
    """
    regex = _pattern_regex(pattern)
    found: list[tuple[date, Path]] = []
    for path in Path(directory).iterdir():
        match = regex.match(path.name)
        if not match or not path.is_file():
            continue
        try:
            delivered = datetime.strptime(match.group(1), "%Y%m%d").date()
        except ValueError:
            log.warning("ignoring %s: %r is not a date", path, match.group(1))
            continue
        found.append((delivered, path))
    found.sort()
    return found


def newest_delivery(source: str, directory: Path, pattern: str, logical_date: date) -> tuple[date, Path]:
    """The newest file matching ``pattern`` in ``directory`` dated on or before ``logical_date``.

    Raises :class:`SourceDataError` naming the source and the path when the
    directory or a suitable file is missing.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SourceDataError(source, f"drop zone {directory} does not exist or is not a directory")
    candidates = [(d, p) for d, p in dated_deliveries(directory, pattern) if d <= logical_date]
    if not candidates:
        raise SourceDataError(
            source, f"no file {pattern} dated on or before {logical_date.isoformat()} in drop zone {directory}"
        )
    return candidates[-1]


class FileDropConnector(Connector):
    """Lands the newest delivered file per dataset from a drop-zone directory.

    Config: ``source`` (landing source name), ``datasets`` (dataset → file pattern
    with one ``*`` for ``YYYYMMDD``), optional ``dropzone_dir`` (default
    ``<GGM_DROPZONE_ROOT>/<source>``), ``content_type`` and ``record_path``.
    """

    name: ClassVar[str] = "files"
    config_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "source": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
            "dropzone_dir": {"type": "string", "minLength": 1},
            "datasets": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
                "additionalProperties": {"type": "string", "pattern": "^[^/*]*\\*[^/*]*$"},
            },
            "content_type": {"type": "string", "default": "text/csv"},
            "record_path": {"type": "string", "default": "csv"},
        },
        "required": ["source", "datasets"],
        "additionalProperties": False,
    }

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.source_name: str = self.config["source"]

    @property
    def dropzone_dir(self) -> Path:
        """Directory the departmental system delivers into."""
        configured = self.config.get("dropzone_dir")
        return Path(configured) if configured else ggm_config.dropzone_root() / self.source_name

    def extract(self, window: ExtractWindow, landing_root: Path) -> list[BatchResult]:
        """Copy the newest delivery (dated <= logical date) of every dataset into its own batch."""
        # Resolve every file before writing anything, so a missing delivery fails the
        # extraction as a whole instead of landing half of the datasets.
        chosen = {
            dataset: newest_delivery(self.source_name, self.dropzone_dir, pattern, window.logical_date)
            for dataset, pattern in sorted(self.config["datasets"].items())
        }
        results = []
        for dataset, (delivered, path) in chosen.items():
            content = path.read_bytes()
            extension = path.suffix.lstrip(".") or "dat"
            with BatchWriter(
                landing_root,
                self.source_name,
                dataset,
                window,
                endpoint=f"FILE {self.config['datasets'][dataset]}",
                record_path=self.config["record_path"],
                content_type=self.config["content_type"],
                extension=extension,
            ) as batch:
                batch.add_part(
                    content,
                    request={"method": "FILE", "url": path.resolve().as_uri(), "params": {}, "body": None},
                    status=None,
                    extra={
                        "source_file": path.name,
                        "source_sha256": hashlib.sha256(content).hexdigest(),
                        "delivery_date": delivered.isoformat(),
                    },
                )
            results.append(batch.completed())
        return results


class GebiedenConnector(FileDropConnector):
    """Area division of the municipality from the GIS department's drop zone ``<dropzone>/gebieden``.

    Datasets: ``wijkbuurtindeling`` (``wijkbuurtindeling_YYYYMMDD.csv``) and
    ``pc6hnr`` (``pc6hnr_YYYYMMDD.csv``, postcode-huisnummer → buurt).
    """

    name: ClassVar[str] = "gebieden"
    datasets: ClassVar[tuple[str, ...]] = ("pc6hnr", "wijkbuurtindeling")
    DEFAULT_PATTERNS: ClassVar[dict[str, str]] = {
        "wijkbuurtindeling": "wijkbuurtindeling_*.csv",
        "pc6hnr": "pc6hnr_*.csv",
    }

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        if config.get("source", self.name) != self.name:
            raise SourceConfigError(self.name, f"source must be {self.name!r}, got {config['source']!r}")
        config["source"] = self.name
        config.setdefault("datasets", dict(self.DEFAULT_PATTERNS))
        super().__init__(config)

    @classmethod
    def config_from_connection(cls, connection, auth: str | None = None) -> dict[str, Any]:
        """Drop zones need no connection; its ``extra`` may still carry ``dropzone_dir``."""
        return dict(connection.extra)
