"""BRP Personen v2 (Haal Centraal "BRP API Personen") connector, with the BRP Update API.

Why a follow list
-----------------
The BRP API has no bulk endpoint: the only way in is ``POST /personen`` with a query
type. A municipality re-reads the persons it *follows*, at most 20 per request::

    {"type": "RaadpleegMetBurgerservicenummer",
     "burgerservicenummer": ["999993653", ...],      # 1..20
     "fields": ["burgerservicenummer", "naam", ...]}

Which BSNs are followed comes from the municipality's burgerzaken application: it
exports the *volglijst* daily into the drop zone as
``<dropzone>/brp-volglijst/volglijst_<YYYYMMDD>.csv`` with header
``burgerservicenummer``. For a logical date the newest volglijst dated on or before
that date is used, so a re-run asks the same question.

Only what changed: the BRP Update API
-------------------------------------
With ``update_base_url`` configured the connector follows the procedure of the Haal
Centraal BRP Update API 1.0.0 (``/volgindicaties``, ``/wijzigingen``):

1. **reconcile volgindicaties with the volglijst**: ``GET /volgindicaties``; every
   followed BSN without an active volgindicatie gets ``PUT /volgindicaties/{bsn}``
   with ``{}`` (this also clears a pending einddatum); every active volgindicatie no
   longer on the volglijst is ended with ``{"einddatum": <window end date>}`` (the
   first day the person is no longer followed);
2. **first run** (no complete ``personen`` batch of an earlier logical date, or one
   made with other ``fields``): query every followed BSN, at most 20 per POST;
3. **later runs**: ``GET /wijzigingen?vanaf=<logical date of that previous batch>``
   (``vanaf`` is inclusive, so a change late on the previous day is never missed),
   landed as dataset ``wijzigingen`` (bronze ``brp_wijzigingen``, record_path ``""``:
   one record per call). Only the BSNs that changed are re-queried, at most 20 per
   POST - plus the BSNs whose volgindicatie began after the previous batch's date
   (newly followed persons, or all of them when the Update API is switched on later):
   ``/wijzigingen`` only reports changes while a volgindicatie is active, so it cannot
   vouch for them.

The ``personen`` batch stays a **full-state snapshot** on every day, so silver's
``load: snapshot`` mappings keep working (persons dropped from the volglijst are
closed, a day without changes is a normal day): after the POST responses (raw,
byte for byte) the batch holds one *carried-forward part* with the records of every
other followed person copied unchanged from the previous complete batch. Its
manifest entry has an empty ``request`` and a ``carried_forward`` object naming the
batch it came from; the records are the previous JSON objects, so their bronze
``_record_hash`` and silver attribute hash are unchanged and silver writes no new
version for them. The previous batch's part checksums are verified before reuse.

Configuration (one Airflow connection ``ggm_brp``)
--------------------------------------------------
``host``/``password`` are the BRP Personen API root and key; the Update API goes in
the extras: ``update_base_url`` (required to enable it), ``update_api_key`` (secret;
default: the BRP key) and ``update_api_key_header`` (default ``X-API-KEY``)::

    AIRFLOW_CONN_GGM_BRP='{"conn_type": "http",
        "host": "https://brp.example.nl/haalcentraal/api/brp", "password": "<BRP key>",
        "extra": {"update_base_url": "https://brp.example.nl/haalcentraal/api/brpupdate",
                  "update_api_key": "<Update API key>"}}'

Without ``update_base_url`` every run queries the whole volglijst (the original
behaviour).

Spec notes (BRP API Personen 2.7.0, ``specificatie/resolved/openapi.yaml``):

* ``inclusiefOverledenPersonen`` is a property of the *Zoek...* query types only; the
  ``RaadpleegMetBurgerservicenummer`` schema does not have it and the fout-cases
  feature answers an unexpected parameter with ``400 unknownParam``. It is therefore
  not sent; raadplegen by BSN is not filtered on death in the first place.
* the proef environment authenticates with header ``X-API-KEY``; production uses
  PKIoverheid mTLS and/or OAuth2 client credentials (config ``auth``, ``client_cert``,
  ``ca_bundle``, ``token_url``, ...; see :mod:`connectors.auth`). The Update API is
  called with the same auth and TLS settings (:meth:`BrpPersonenConnector.update_http`).

Dataset ``personen``; ``record_path`` ``personen``. BSNs are de-duplicated and sorted,
so the same volglijst always yields the same requests in the same order.

Requests in parallel
--------------------
``max_parallel_requests`` (default 4) POSTs and volgindicatie PUTs are in flight at once;
the responses are landed in the order of the groups, so parallel and one-at-a-time runs
land the same bytes. RvIG publishes no number for it (the specification only declares
``429 Too Many Requests``, which is retried after its ``Retry-After``); 4 keeps a
municipality's extract a small, steady load, and ``requests_per_second`` caps the rate
when the provider names one.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, ClassVar, Iterator

from connectors.base import ExtractWindow, HttpConnector, http_config_schema, parallel_requests_property
from connectors.errors import SourceDataError
from connectors.files import newest_delivery
from connectors.http import HttpSource
from ggm_lakehouse import config as ggm_config
from ggm_lakehouse.landing import (
    BatchResult,
    BatchWriter,
    find_complete_batches,
    load_batch,
    read_manifest,
    records_at,
)

log = logging.getLogger(__name__)

MAX_BSNS_PER_REQUEST = 20  # RaadpleegMetBurgerservicenummer.burgerservicenummer maxItems
DEFAULT_PARALLEL_REQUESTS = 4  # see "Requests in parallel" above
VOLGLIJST_PATTERN = "volglijst_*.csv"
VOLGLIJST_COLUMN = "burgerservicenummer"
_BSN_PATTERN = re.compile(r"^[0-9]{9}$")  # the spec's Burgerservicenummer pattern
RAADPLEEG_TYPE = "RaadpleegMetBurgerservicenummer"
UPDATE_ACCEPT = {"Accept": "application/json, application/hal+json"}

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


@dataclass(frozen=True)
class PreviousState:
    """The newest complete ``personen`` batch before the run's logical date, as records by BSN."""

    logical_date: date
    run_id: str
    path: Path
    records: dict[str, dict[str, Any]]


@dataclass
class VolgindicatieReconciliation:
    """What reconciling the volgindicaties with the volglijst did."""

    registered: list[str] = field(default_factory=list)  # newly placed (or re-placed after an end)
    reactivated: list[str] = field(default_factory=list)  # active, but a pending einddatum was cleared
    ended: list[str] = field(default_factory=list)  # no longer on the volglijst
    begindatum: dict[str, date | None] = field(default_factory=dict)  # per followed BSN, as the registry says

    def begun_after(self, day: date) -> set[str]:
        """Followed BSNs whose volgindicatie began after ``day`` (or whose begin is unknown).

        ``/wijzigingen`` only reports changes while a volgindicatie is active, so for these
        persons it cannot cover the time since ``day``: they must be queried in full.
        """
        return {bsn for bsn, begin in self.begindatum.items() if begin is None or begin > day}

    def summary(self) -> dict[str, int]:
        return {"registered": len(self.registered), "reactivated": len(self.reactivated), "ended": len(self.ended)}


class BrpPersonenConnector(HttpConnector):
    """Reads the followed persons from BRP API Personen v2, at most 20 BSNs per request.

    ``base_url`` is the API root, e.g. ``http://127.0.0.1:5010/haalcentraal/api/brp``;
    ``update_base_url`` (optional) the BRP Update API root, e.g.
    ``http://127.0.0.1:5012/haalcentraal/api/brpupdate``. See the module docstring.
    """

    name: ClassVar[str] = "brp"
    datasets: ClassVar[tuple[str, ...]] = ("personen", "wijzigingen")
    secrets: ClassVar[tuple[str, ...]] = ("api_key", "update_api_key")
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
            "max_parallel_requests": parallel_requests_property(DEFAULT_PARALLEL_REQUESTS, "POSTs and volgindicatie PUTs"),
            "requests_per_second": {"type": "number", "exclusiveMinimum": 0},
            "update_base_url": {
                "type": "string",
                "pattern": "^https?://",
                "description": "Root URL of the BRP Update API; enables volgindicaties + wijzigingen.",
            },
            "update_api_key": {"type": "string", "minLength": 1, "description": "Update API key (secret); default api_key."},
            "update_api_key_header": {"type": "string", "default": "X-API-KEY"},
        },
        required=["api_key"],
    )

    @property
    def volglijst_dir(self) -> Path:
        """Where the burgerzaken application drops the volglijst."""
        configured = self.config.get("volglijst_dir")
        return Path(configured) if configured else ggm_config.dropzone_root() / "brp-volglijst"

    @property
    def uses_update_api(self) -> bool:
        """True when the BRP Update API is configured (only changed persons are re-queried)."""
        return bool(self.config.get("update_base_url"))

    def followed_bsns(self, window: ExtractWindow) -> tuple[Path, list[str], list[str]]:
        """The volglijst used for ``window`` and its (valid, rejected) BSNs."""
        _, path = newest_delivery(self.name, self.volglijst_dir, VOLGLIJST_PATTERN, window.logical_date)
        valid, rejected = read_volglijst(self.name, path)
        return path, valid, rejected

    def update_http(self) -> HttpSource:
        """A configured :class:`HttpSource` for the BRP Update API (close it when done).

        It comes from the shared :meth:`HttpConnector.http`, so the Update API gets the
        same auth mode (API key, OAuth2 client credentials or mTLS), client certificate,
        CA bundle, timeouts, retry policy, ``sleep`` and ``retry_log`` as BRP Personen.
        In ``api_key`` mode it sends ``update_api_key`` (default: ``api_key``) in header
        ``update_api_key_header``.
        """
        cfg = self.config
        if not cfg.get("update_base_url"):
            raise RuntimeError("update_base_url is not configured")
        overrides: dict[str, Any] = {"api_key_header": cfg["update_api_key_header"]}
        if cfg.get("update_api_key"):
            overrides["api_key"] = cfg["update_api_key"]
        source = self.http(cfg["update_base_url"], **overrides)
        # Errors name the Update API, not BRP Personen, so an operator knows which key or endpoint failed.
        source.source = f"{self.name}-update"
        return source

    # -- extraction

    def extract(self, window: ExtractWindow, landing_root: Path) -> list[BatchResult]:
        """Land ``personen`` (a full-state snapshot) and, on later Update API runs, ``wijzigingen``."""
        volglijst, bsns, rejected = self.followed_bsns(window)
        fields = list(self.config["fields"])
        log.info("%s: %d followed BSNs from %s", self.name, len(bsns), volglijst)
        extra: dict[str, Any] = {
            "volglijst": {
                "file": volglijst.name,
                "sha256": hashlib.sha256(volglijst.read_bytes()).hexdigest(),
                "bsn_count": len(bsns),
                "rejected_count": len(rejected),
            },
            "fields": fields,
        }
        if not self.uses_update_api:
            extra["mode"] = "full"
            return [self._land_personen(window, landing_root, bsns, extra, previous=None, carried=[])]

        results: list[BatchResult] = []
        with self.update_http() as update:
            reconciliation = self.reconcile_volgindicaties(update, bsns, window)
            previous = self.previous_state(landing_root, window, fields)
            followed = set(bsns)
            if previous is None:
                requery = bsns
                extra["mode"] = "full"
                update_info: dict[str, Any] = {"previous_batch": None}
            else:
                wijzigingen, changed = self._land_wijzigingen(update, window, landing_root, previous.logical_date)
                results.append(wijzigingen)
                # Persons followed only since after the previous batch (new on the volglijst, or a first
                # registration that an earlier failed attempt already made) and persons the previous
                # state lacks are not covered by wijzigingen: query them in full.
                unknown = {b for b in followed if b not in previous.records}
                late = reconciliation.begun_after(previous.logical_date)
                requery = sorted((set(changed) & followed) | (late & followed) | unknown)
                extra["mode"] = "changes"
                update_info = {
                    "previous_batch": {"logical_date": previous.logical_date.isoformat(), "run_id": previous.run_id},
                    "vanaf": previous.logical_date.isoformat(),
                    "changed_count": len(changed),
                }
            update_info["volgindicaties"] = reconciliation.summary()
            update_info["requeried_count"] = len(requery)
            extra["update_api"] = update_info
        carried: list[dict[str, Any]] = []
        if previous is not None:
            requeried = set(requery)
            carried = [previous.records[b] for b in bsns if b not in requeried and b in previous.records]
        extra["update_api"]["carried_count"] = len(carried)
        log.info(
            "%s: %s run, %d BSNs re-queried, %d records carried forward; volgindicaties %s",
            self.name, extra["mode"], len(requery), len(carried), reconciliation.summary(),
        )
        results.insert(0, self._land_personen(window, landing_root, requery, extra, previous, carried))
        return results

    def _land_personen(
        self,
        window: ExtractWindow,
        landing_root: Path,
        bsns: list[str],
        extra: dict[str, Any],
        previous: PreviousState | None,
        carried: list[dict[str, Any]],
    ) -> BatchResult:
        fields = list(self.config["fields"])
        with self.http() as http, BatchWriter(
            landing_root,
            self.name,
            "personen",
            window,
            endpoint="POST /personen",
            record_path="personen",
            extra=extra,
        ) as batch:
            def query(group: list[str]):
                body = {"type": RAADPLEEG_TYPE, "burgerservicenummer": group, "fields": fields}
                return http.post("/personen", json_body=body)

            for response in http.map_in_order(query, chunks(bsns, int(self.config["batch_size"]))):
                batch.add_response(response)
            if previous is not None and carried:
                content = json.dumps(
                    {"type": RAADPLEEG_TYPE, "personen": carried}, ensure_ascii=False, separators=(",", ":")
                ).encode("utf-8")
                batch.add_part(
                    content,
                    request={},
                    status=None,
                    extra={
                        "carried_forward": {
                            "logical_date": previous.logical_date.isoformat(),
                            "run_id": previous.run_id,
                            "batch": str(previous.path.relative_to(Path(landing_root))),
                        }
                    },
                )
        return batch.completed()

    def _land_wijzigingen(
        self, update: HttpSource, window: ExtractWindow, landing_root: Path, vanaf: date
    ) -> tuple[BatchResult, list[str]]:
        with BatchWriter(
            landing_root,
            self.name,
            "wijzigingen",
            window,
            endpoint="GET /wijzigingen",
            record_path="",
            content_type="application/hal+json",
            extra={"vanaf": vanaf.isoformat()},
        ) as batch:
            response = update.get("/wijzigingen", params={"vanaf": vanaf.isoformat()}, headers=UPDATE_ACCEPT)
            batch.add_response(response)
            changed = _changed_bsns(response, self.name)
        return batch.completed(), changed

    # -- Update API steps

    def reconcile_volgindicaties(
        self, update: HttpSource, bsns: list[str], window: ExtractWindow
    ) -> VolgindicatieReconciliation:
        """Make the active volgindicaties equal to the volglijst (see the module docstring)."""
        response = update.get("/volgindicaties", headers=UPDATE_ACCEPT)
        try:
            active = {
                str(v["burgerservicenummer"]): v for v in response.json().get("volgindicaties", []) or []
            }
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            raise SourceDataError(self.name, f"GET {response.url} did not return a VolgindicatieCollectie: {exc!r}") from exc
        followed = set(bsns)
        done = VolgindicatieReconciliation()
        # {} places the volgindicatie, or clears an einddatum still in the future.
        def put(targets: list[str], body: dict[str, str]) -> Iterator[Any]:
            return update.map_in_order(
                lambda bsn: update.request("PUT", f"/volgindicaties/{bsn}", json_body=body, headers=UPDATE_ACCEPT), targets)

        to_place = [bsn for bsn in bsns if active.get(bsn) is None or active[bsn].get("einddatum")]
        placed = dict(zip(to_place, put(to_place, {})))
        for bsn in bsns:
            current = active.get(bsn)
            if bsn in placed:
                (done.registered if current is None else done.reactivated).append(bsn)
                current = _json_object(placed[bsn], self.name)
            done.begindatum[bsn] = _date_or_none(current.get("begindatum"))
        einddatum = window.end.date().isoformat()
        # An einddatum already set to this window's end was set by an earlier attempt of this window.
        to_end = [bsn for bsn in sorted(set(active) - followed) if active[bsn].get("einddatum") != einddatum]
        done.ended.extend(bsn for bsn, _ in zip(to_end, put(to_end, {"einddatum": einddatum})))
        return done

    def previous_state(self, landing_root: Path, window: ExtractWindow, fields: list[str]) -> PreviousState | None:
        """The newest complete ``personen`` batch of an earlier logical date, usable as a base.

        None on a first run, and when that batch was made with other ``fields`` (its
        records could not stand in for today's answers).
        """
        earlier = [
            path
            for path in find_complete_batches(landing_root, self.name, "personen")
            if date.fromisoformat(read_manifest(path)["logical_date"]) < window.logical_date
        ]
        if not earlier:
            return None
        batch = load_batch(earlier[-1])
        if (batch.manifest.get("extra") or {}).get("fields") != fields:
            log.warning(
                "%s: previous batch %s was made with other fields; querying every followed person", self.name, batch.path
            )
            return None
        records: dict[str, dict[str, Any]] = {}
        for part in batch.manifest["parts"]:
            file = batch.path / part["file"]
            raw = file.read_bytes()
            if hashlib.sha256(raw).hexdigest() != part["sha256"]:
                raise SourceDataError(self.name, f"{file}: checksum differs from its manifest; the landing zone was altered")
            for record in records_at(json.loads(raw), batch.manifest["record_path"]):
                bsn = record.get("burgerservicenummer") if isinstance(record, dict) else None
                if bsn:
                    records[bsn] = record
        return PreviousState(batch.logical_date, batch.run_id, batch.path, records)


def _json_object(response: Any, source: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise SourceDataError(source, f"{response.method} {response.url} did not return JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise SourceDataError(source, f"{response.method} {response.url} did not return a JSON object")
    return body


def _date_or_none(value: Any) -> date | None:
    """A ``format: date`` value; None when absent or unreadable (treated as "begin unknown")."""
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _changed_bsns(response: Any, source: str) -> list[str]:
    """``burgerservicenummers`` of a GewijzigdePersonenHalCollectie (absent = none)."""
    try:
        values = response.json().get("burgerservicenummers") or []
    except (ValueError, AttributeError) as exc:
        raise SourceDataError(source, f"GET {response.url} did not return a GewijzigdePersonenHalCollectie: {exc!r}") from exc
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SourceDataError(source, f"GET {response.url}: burgerservicenummers is not a list of strings")
    return sorted(set(values))
