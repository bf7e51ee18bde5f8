"""BRP Personen v2 (Haal Centraal "BRP API Personen") connector.

Why a follow list
-----------------
The BRP API has no bulk or change endpoint: the only way in is ``POST /personen``
with a query type. The realistic daily pattern for a municipality is to re-read the
persons it *follows*, at most 20 per request::

    {"type": "RaadpleegMetBurgerservicenummer",
     "burgerservicenummer": ["999993653", ...],      # 1..20
     "fields": ["burgerservicenummer", "naam", ...]}

Which BSNs are followed comes from the municipality's burgerzaken application: it
exports the *volglijst* daily into the drop zone as
``<dropzone>/brp-volglijst/volglijst_<YYYYMMDD>.csv`` with header
``burgerservicenummer``. For a logical date the newest volglijst dated on or before
that date is used, so a re-run asks the same question. In a later iteration (issue 3)
the volglijst is replaced by BRP Update API ``volgindicaties`` and
``GET /wijzigingen?vanaf=...`` (only changed BSNs are re-queried).

Spec notes (BRP API Personen 2.7.0, ``specificatie/resolved/openapi.yaml``):

* ``inclusiefOverledenPersonen`` is a property of the *Zoek...* query types only; the
  ``RaadpleegMetBurgerservicenummer`` schema does not have it and the fout-cases
  feature answers an unexpected parameter with ``400 unknownParam``. It is therefore
  not sent; raadplegen by BSN is not filtered on death in the first place.
* the proef environment authenticates with header ``X-API-KEY``; production uses
  PKIoverheid mTLS + OAuth2 client credentials (plug in a different ``SourceAuth``).

Dataset ``personen``; ``record_path`` ``personen``. BSNs are de-duplicated and sorted,
so the same volglijst always yields the same requests in the same order.
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
from pathlib import Path
from typing import Any, ClassVar, Iterator

from connectors.base import ExtractWindow, HttpConnector, http_config_schema
from connectors.errors import SourceDataError
from connectors.files import newest_delivery
from connectors.landing import BatchResult, BatchWriter
from ggm_lakehouse import config as ggm_config

log = logging.getLogger(__name__)

MAX_BSNS_PER_REQUEST = 20  # RaadpleegMetBurgerservicenummer.burgerservicenummer maxItems
VOLGLIJST_PATTERN = "volglijst_*.csv"
VOLGLIJST_COLUMN = "burgerservicenummer"
_BSN_PATTERN = re.compile(r"^[0-9]{9}$")  # the spec's Burgerservicenummer pattern

DEFAULT_FIELDS = [
    "burgerservicenummer",
    "naam",
    "geslacht",
    "geboorte",
    "overlijden",
    "verblijfplaats",
    "datumInschrijvingInGemeente",
    "gemeenteVanInschrijving",
    "partners",
    "ouders",
    "kinderen",
]


def read_volglijst(source: str, path: Path) -> tuple[list[str], list[str]]:
    """Read a volglijst CSV: (sorted unique valid BSNs, rejected raw values).

    Values that do not match the spec's ``^[0-9]{9}$`` would make the whole request
    of 20 fail with 400, so they are set aside (and reported in the manifest) instead.
    """
    text = path.read_bytes().decode("utf-8-sig")
    header_line = text.split("\n", 1)[0]
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    fieldnames = [name.strip() for name in (reader.fieldnames or [])]
    if VOLGLIJST_COLUMN not in fieldnames:
        raise SourceDataError(source, f"volglijst {path} has no column {VOLGLIJST_COLUMN!r} (header: {fieldnames})")
    reader.fieldnames = fieldnames
    valid: set[str] = set()
    rejected: list[str] = []
    for row in reader:
        value = (row.get(VOLGLIJST_COLUMN) or "").strip()
        if not value:
            continue
        if _BSN_PATTERN.match(value):
            valid.add(value)
        else:
            rejected.append(value)
    if rejected:
        log.warning("%s: %d invalid BSN values in %s were skipped", source, len(rejected), path)
    return sorted(valid), rejected


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    """Consecutive slices of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class BrpPersonenConnector(HttpConnector):
    """Reads the followed persons from BRP API Personen v2, at most 20 BSNs per request.

    ``base_url`` is the API root, e.g. ``http://127.0.0.1:5010/haalcentraal/api/brp``.
    """

    name: ClassVar[str] = "brp"
    datasets: ClassVar[tuple[str, ...]] = ("personen",)
    api_key_header: ClassVar[str] = "X-API-KEY"
    config_schema: ClassVar[dict[str, Any]] = http_config_schema(
        {
            "api_key_header": {"type": "string", "default": "X-API-KEY"},
            "volglijst_dir": {"type": "string", "minLength": 1, "description": "Default <dropzone>/brp-volglijst."},
            "fields": {
                "type": "array",
                "minItems": 1,
                "maxItems": 130,
                "uniqueItems": True,
                "items": {"type": "string", "pattern": "^[a-zA-Z0-9\\._]{1,200}$"},
                "default": DEFAULT_FIELDS,
            },
            "batch_size": {"type": "integer", "minimum": 1, "maximum": MAX_BSNS_PER_REQUEST, "default": 20},
            "requests_per_second": {"type": "number", "exclusiveMinimum": 0},
        },
        required=["api_key"],
    )

    @property
    def volglijst_dir(self) -> Path:
        """Where the burgerzaken application drops the volglijst."""
        configured = self.config.get("volglijst_dir")
        return Path(configured) if configured else ggm_config.dropzone_root() / "brp-volglijst"

    def followed_bsns(self, window: ExtractWindow) -> tuple[Path, list[str], list[str]]:
        """The volglijst used for ``window`` and its (valid, rejected) BSNs."""
        _, path = newest_delivery(self.name, self.volglijst_dir, VOLGLIJST_PATTERN, window.logical_date)
        valid, rejected = read_volglijst(self.name, path)
        return path, valid, rejected

    def extract(self, window: ExtractWindow, landing_root: Path) -> list[BatchResult]:
        """Land dataset ``personen``: one part per POST of at most ``batch_size`` BSNs."""
        volglijst, bsns, rejected = self.followed_bsns(window)
        fields = list(self.config["fields"])
        log.info("%s: %d followed BSNs from %s", self.name, len(bsns), volglijst)
        extra = {
            "volglijst": {
                "file": volglijst.name,
                "sha256": hashlib.sha256(volglijst.read_bytes()).hexdigest(),
                "bsn_count": len(bsns),
                "rejected_count": len(rejected),
            }
        }
        with self.http() as http, BatchWriter(
            landing_root,
            self.name,
            "personen",
            window,
            endpoint="POST /personen",
            record_path="personen",
            extra=extra,
        ) as batch:
            for group in chunks(bsns, int(self.config["batch_size"])):
                body = {"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": group, "fields": fields}
                response = http.post("/personen", json_body=body)
                batch.add_response(response)
        return [batch.completed()]
