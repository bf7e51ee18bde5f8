"""KvK Handelsregister connector: Zoeken v2, Basisprofiel, Vestigingsprofiel and the Mutatieservice.

How a municipality keeps its companies current
----------------------------------------------
The KvK APIs answer one question at a time, and the Mutatieservice (a paid
subscription on the municipality's population) tells which inschrijvingen changed.
The connector therefore works in two modes (config ``mode``; ``auto`` picks one):

* **full** (the first run: no earlier ``basisprofielen`` batch in the landing zone):
  ``GET /v2/zoeken?plaats=<plaats>`` for every configured plaats, all pages
  (``resultatenPerPagina`` 100). Zoeken shows at most 1000 results; when ``totaal``
  reaches that cap the question is split, first by ``type`` (hoofdvestiging,
  nevenvestiging, rechtspersoon), then per street (``straatnaam`` + ``plaats``; the
  API accepts a postcode only together with a huisnummer, so streets are the finest
  split that needs no address list). Street names come from config ``straatnamen`` or
  from the newest BAG ``openbareruimten``/``woonplaatsen`` landing batches.
* **incremental** (later runs): the Mutatieservice signals since the end of the
  previous run's window (``GET /v1/abonnementen/{abonnementId}?vanaf=…&tot=…``, all
  pages), then the profiles of only the KvK-nummers the signals name (plus those a
  previous run could not get, see below).

Both modes then read, per KvK-nummer, ``GET /v1/basisprofielen/{kvkNummer}?geoData=true``
and ``GET /v1/basisprofielen/{kvkNummer}/vestigingen``, and per vestiging
``GET /v1/vestigingsprofielen/{vestigingsnummer}?geoData=true``.

Datasets (bronze table ``kvk_<dataset>``):

=======================  ==================================================  ================
dataset                  content                                             record_path
=======================  ==================================================  ================
``zoekresultaten``       raw Zoeken pages (full mode only)                   ``resultaten``
``signalen``             raw Mutatieservice pages (incremental mode only)     ``signalen``
``basisprofielen``       raw Basisprofiel, one response per part              ``""``
``vestigingsprofielen``  raw Vestigingsprofiel, one response per part         ``""``
``rechtspersonen``       derived: one record per basisprofiel whose owner    ``rechtspersonen``
                         is a rechtspersoon (has an RSIN)
``handelsnamen``         derived: one record per handelsnaam of a            ``handelsnamen``
                         basisprofiel or vestigingsprofiel
``sbiactiviteiten``      derived: one record per SBI activity of a           ``sbiactiviteiten``
                         vestigingsprofiel
=======================  ==================================================  ================

The derived datasets flatten nested arrays into one record per child that carries
its parent key (``kvkNummer``, ``vestigingsnummer``), so GGM mappings need no explode.
Their parts are written by the connector (request method ``DERIVED``), the raw
profiles stay byte for byte as KvK sent them.

Errors: a profile that KvK cannot deliver (404 with ``fout`` IPD0005/IPD0007) is
listed in the manifest ``extra.niet_geleverd`` and skipped; a temporary refusal
(IPD1002, "in behandeling") is listed in ``extra.retry_kvk_nummers`` and asked again
by the next incremental run. Everything else (auth, 5xx after retries, 429 after
retries) fails the run. KvK allows 100 requests/second per key; the default client
rate is 50/second so that other users of the key keep room. Profiles are requested
``max_parallel_requests`` (default 4) at a time within that rate, so a request's own
latency does not lower it; they are landed in the order asked, as one at a time would.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Iterable

from connectors.base import ExtractWindow, HttpConnector, http_config_schema, parallel_requests_property
from connectors.errors import SourceClientError, SourceConfigError, SourceDataError
from connectors.http import HttpSource, RawResponse
from ggm_lakehouse.landing import BatchResult, BatchWriter, find_complete_batches, iter_batch_records, load_batch

log = logging.getLogger(__name__)

ZOEKEN_MAX_RESULTS = 1000
ZOEKEN_TYPES = ("hoofdvestiging", "nevenvestiging", "rechtspersoon")
SIGNALEN_PAGE_SIZE = 500
NIET_LEVERBAAR_CODES = frozenset({"IPD0005", "IPD0007"})
TEMPORARY_CODES = frozenset({"IPD1002", "IPD1003"})
HAL_JSON = "application/hal+json"


def fout_codes(error: SourceClientError) -> list[str]:
    """The IPD codes of a KvK ``{"fout": [{"code": …}]}`` error body."""
    problem = error.problem or {}
    fouten = problem.get("fout") or (problem.get("meldingen") or {}).get("fout") or []
    return [str(f.get("code")) for f in fouten if isinstance(f, dict) and f.get("code")]


class KvkConnector(HttpConnector):
    """Lands the municipality's KvK inschrijvingen: a full crawl first, signal-driven updates after.

    ``base_url`` is the API root, e.g. ``https://api.kvk.nl/api`` (production),
    ``https://api.kvk.nl/test/api`` (KvK test environment) or the stand-in's ``/api``.
    """

    name: ClassVar[str] = "kvk"
    datasets: ClassVar[tuple[str, ...]] = (
        "zoekresultaten", "signalen", "basisprofielen", "vestigingsprofielen",
        "rechtspersonen", "handelsnamen", "sbiactiviteiten",
    )
    api_key_header: ClassVar[str] = "apikey"
    default_requests_per_second: ClassVar[float | None] = 50.0
    config_schema: ClassVar[dict[str, Any]] = http_config_schema(
        {
            "api_key_header": {"type": "string", "default": "apikey"},
            "plaatsen": {
                "type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string", "minLength": 1},
                "description": "Woonplaats names of the municipality, as KvK writes them in addresses.",
            },
            "straatnamen": {
                "type": "array", "uniqueItems": True, "items": {"type": "string", "minLength": 1},
                "description": "Streets to split a capped Zoeken question by; default: from the BAG landing batches.",
            },
            "abonnement_id": {"type": "string", "minLength": 1,
                              "description": "Mutatieservice subscription id; default: the first of GET /v1/abonnementen."},
            "mode": {"enum": ["auto", "full", "incremental"], "default": "auto"},
            "page_size": {"type": "integer", "minimum": 1, "maximum": 100, "default": 100},
            "zoeken_max_results": {"type": "integer", "minimum": 1, "maximum": ZOEKEN_MAX_RESULTS,
                                   "default": ZOEKEN_MAX_RESULTS},
            "geo_data": {"type": "boolean", "default": True},
            "requests_per_second": {"type": "number", "exclusiveMinimum": 0, "default": 50},
            "max_parallel_requests": parallel_requests_property(4, "Profile requests (within requests_per_second)"),
        },
        required=["api_key", "plaatsen"],
    )

    # ------------------------------------------------------------------ entry point

    def extract(self, window: ExtractWindow, landing_root: Path) -> list[BatchResult]:
        """Land one batch per dataset of this run's mode (see the module docstring)."""
        previous = self._previous_profiles_batch(landing_root, window)
        mode = self.config["mode"]
        if mode == "auto":
            mode = "incremental" if previous is not None else "full"
        if mode == "incremental" and previous is None and self.config["mode"] == "incremental":
            log.warning("%s: incremental mode without an earlier batch; signals of this window only", self.name)
        results: list[BatchResult] = []
        extra: dict[str, Any] = {"mode": mode}
        with self.http() as http:
            if mode == "full":
                batch, kvk_nummers = self._full_search(http, landing_root, window)
                results.append(batch)
            else:
                batch, kvk_nummers, vanaf, tot = self._signals(http, landing_root, window, previous)
                results.append(batch)
                retry = list((previous.manifest.get("extra") or {}).get("retry_kvk_nummers", [])) if previous else []
                kvk_nummers = sorted(set(kvk_nummers) | set(retry))
                extra.update(signalen_vanaf=vanaf, signalen_tot=tot, carried_over=len(retry))
            log.info("%s: %s run for %d KvK-nummers", self.name, mode, len(kvk_nummers))
            results.extend(self._profiles(http, landing_root, window, kvk_nummers, extra))
        return results

    # ------------------------------------------------------------------ full: Zoeken

    def _full_search(self, http: HttpSource, landing_root: Path, window: ExtractWindow) -> tuple[BatchResult, list[str]]:
        kvk_nummers: set[str] = set()
        with self._writer(landing_root, window, "zoekresultaten", "GET /v2/zoeken", "resultaten",
                          content_type="application/json") as batch:
            for plaats in self.config["plaatsen"]:
                for item in self._zoek(http, batch, landing_root, window, {"plaats": plaats}):
                    kvk_nummers.add(str(item["kvkNummer"]))
        return batch.completed(), sorted(kvk_nummers)

    def _zoek(self, http: HttpSource, batch: BatchWriter, landing_root: Path, window: ExtractWindow,
              question: dict[str, str]) -> list[dict[str, Any]]:
        """All results of one Zoeken question, splitting it while KvK's result cap is reached."""
        params = {**question, "pagina": 1, "resultatenPerPagina": int(self.config["page_size"])}
        first = self._zoek_page(http, params)
        if first is None:
            return []
        cap = int(self.config["zoeken_max_results"])
        if int(first.json().get("totaal", 0)) >= cap:
            return self._split(http, batch, landing_root, window, question, cap)
        items: list[dict[str, Any]] = []
        page: RawResponse | None = first
        seen: set[str] = set()
        while page is not None:
            batch.add_response(page)
            document = page.json()
            items.extend(document.get("resultaten") or [])
            link = document.get("volgende")
            if not link or link in seen:
                break
            seen.add(link)
            page = http.get(link)
        return items

    def _split(self, http: HttpSource, batch: BatchWriter, landing_root: Path, window: ExtractWindow,
               question: dict[str, str], cap: int) -> list[dict[str, Any]]:
        if "type" not in question:
            log.info("%s: %s reaches the Zoeken cap of %d; splitting by type", self.name, question, cap)
            return [item for kind in ZOEKEN_TYPES
                    for item in self._zoek(http, batch, landing_root, window, {**question, "type": kind})]
        if "straatnaam" not in question:
            streets = self._straatnamen(landing_root, window, question.get("plaats"))
            log.info("%s: %s reaches the Zoeken cap of %d; splitting over %d streets", self.name, question, cap, len(streets))
            return [item for street in streets
                    for item in self._zoek(http, batch, landing_root, window, {**question, "straatnaam": street})]
        raise SourceDataError(self.name, f"Zoeken {question} still returns the maximum of {cap} results; "
                                         "no finer split is available")

    def _zoek_page(self, http: HttpSource, params: dict[str, Any]) -> RawResponse | None:
        try:
            return http.get("/v2/zoeken", params=params)
        except SourceClientError as error:
            if error.status == 404 and "IPD5200" in fout_codes(error):
                return None  # "Er zijn geen gegevens gevonden": an empty answer, not a failure
            raise

    def _straatnamen(self, landing_root: Path, window: ExtractWindow, plaats: str | None) -> list[str]:
        """Streets to split by: configured, else the BAG openbare ruimten of ``plaats`` from the landing zone."""
        if self.config.get("straatnamen"):
            return sorted(self.config["straatnamen"])
        woonplaatsen = self._newest_batch(landing_root, "bag", "woonplaatsen", window)
        ruimten = self._newest_batch(landing_root, "bag", "openbareruimten", window)
        if woonplaatsen is None or ruimten is None:
            raise SourceConfigError(self.name, "a Zoeken question reaches the 1000-result cap; configure 'straatnamen' "
                                               "or run the BAG connector before this one")
        ids = {str(r["woonplaats"]["identificatie"]) for r in iter_batch_records(woonplaatsen)
               if plaats is None or str(r["woonplaats"]["naam"]).lower() == plaats.lower()}
        return sorted({str(r["openbareRuimte"]["naam"]) for r in iter_batch_records(ruimten)
                       if str(r["openbareRuimte"].get("ligtIn")) in ids})

    @staticmethod
    def _newest_batch(landing_root: Path, source: str, dataset: str, window: ExtractWindow) -> BatchResult | None:
        paths = [p for p in find_complete_batches(landing_root, source, dataset)
                 if load_batch(p).logical_date <= window.logical_date]
        return load_batch(paths[-1]) if paths else None

    # ------------------------------------------------------------------ incremental: signals

    def _previous_profiles_batch(self, landing_root: Path, window: ExtractWindow) -> BatchResult | None:
        """The newest complete ``basisprofielen`` batch of an earlier logical date (the connector's state)."""
        earlier = [p for p in find_complete_batches(landing_root, self.name, "basisprofielen")
                   if load_batch(p).logical_date < window.logical_date]
        return load_batch(earlier[-1]) if earlier else None

    def _signals(self, http: HttpSource, landing_root: Path, window: ExtractWindow,
                 previous: BatchResult | None) -> tuple[BatchResult, list[str], str, str]:
        abonnement_id = self.config.get("abonnement_id") or self._abonnement_id(http)
        # Continue where the previous run stopped, so a skipped day loses no signals.
        vanaf = datetime.fromisoformat(previous.manifest["window_end"]) if previous else window.start
        vanaf = min(vanaf, window.start)
        params = {"vanaf": vanaf.isoformat(), "tot": window.end.isoformat(), "aantal": SIGNALEN_PAGE_SIZE}
        kvk_nummers: set[str] = set()
        with self._writer(landing_root, window, "signalen", "GET /v1/abonnementen/{abonnementId}", "signalen",
                          content_type="application/json", extra={"abonnement_id": abonnement_id}) as batch:
            pagina = 1
            while True:
                page = http.get(f"/v1/abonnementen/{abonnement_id}", params={**params, "pagina": pagina})
                batch.add_response(page)
                document = page.json()
                for signaal in document.get("signalen") or []:
                    kvk = signaal.get("kvknummer") or signaal.get("kvkNummer")
                    if kvk:
                        kvk_nummers.add(str(kvk))
                if pagina >= int(document.get("totaalPaginas") or 0):
                    break
                pagina += 1
        return batch.completed(), sorted(kvk_nummers), params["vanaf"], params["tot"]

    def _abonnement_id(self, http: HttpSource) -> str:
        abonnementen = http.get("/v1/abonnementen").json().get("abonnementen") or []
        if not abonnementen:
            raise SourceConfigError(self.name, "the API key has no Mutatieservice subscription (GET /v1/abonnementen is empty)")
        return str(abonnementen[0]["id"])

    # ------------------------------------------------------------------ profiles

    def _profiles(self, http: HttpSource, landing_root: Path, window: ExtractWindow, kvk_nummers: list[str],
                  extra: dict[str, Any]) -> list[BatchResult]:
        geo = {"geoData": "true"} if self.config["geo_data"] else {}
        niet_geleverd: list[dict[str, Any]] = []
        retry: list[str] = []
        basisprofielen: list[dict[str, Any]] = []
        vestigingsnummers: list[str] = []
        manifest_extra = {**extra, "kvk_nummers": len(kvk_nummers), "niet_geleverd": niet_geleverd,
                          "retry_kvk_nummers": retry}
        with self._writer(landing_root, window, "basisprofielen", "GET /v1/basisprofielen/{kvkNummer}", "",
                          extra=manifest_extra) as batch:
            def basisprofiel(kvk: str):
                # Own lists per call: the calls run side by side, their notes are kept in the order asked.
                notes: tuple[list, list] = ([], [])
                response = self._profile(http, f"/v1/basisprofielen/{kvk}", geo, kvk, *notes)
                lijst = None if response is None else self._profile(
                    http, f"/v1/basisprofielen/{kvk}/vestigingen", {}, kvk, *notes)
                return response, lijst, notes

            for response, lijst, (not_delivered, to_retry) in http.map_in_order(basisprofiel, kvk_nummers):
                niet_geleverd.extend(not_delivered)
                retry.extend(r for r in to_retry if r not in retry)
                if response is None:
                    continue
                batch.add_response(response)
                basisprofielen.append(response.json())
                if lijst is not None:
                    vestigingsnummers.extend(str(v["vestigingsnummer"]) for v in lijst.json().get("vestigingen") or [])
        results = [batch.completed()]

        vestigingsprofielen: list[dict[str, Any]] = []
        vestiging_niet_geleverd: list[dict[str, Any]] = []
        with self._writer(landing_root, window, "vestigingsprofielen", "GET /v1/vestigingsprofielen/{vestigingsnummer}", "",
                          extra={"mode": extra["mode"], "niet_geleverd": vestiging_niet_geleverd}) as batch:
            def vestigingsprofiel(nummer: str):
                notes: tuple[list, list] = ([], [])
                return self._profile(http, f"/v1/vestigingsprofielen/{nummer}", geo, nummer, *notes), notes

            for response, (not_delivered, to_retry) in http.map_in_order(vestigingsprofiel, sorted(set(vestigingsnummers))):
                vestiging_niet_geleverd.extend(not_delivered)
                retry.extend(r for r in to_retry if r not in retry)
                if response is None:
                    continue
                batch.add_response(response)
                vestigingsprofielen.append(response.json())
        results.append(batch.completed())

        results.append(self._derived(landing_root, window, "rechtspersonen", "basisprofielen",
                                     rechtspersoon_records(basisprofielen)))
        results.append(self._derived(landing_root, window, "handelsnamen", "basisprofielen+vestigingsprofielen",
                                     handelsnaam_records(basisprofielen, vestigingsprofielen)))
        results.append(self._derived(landing_root, window, "sbiactiviteiten", "vestigingsprofielen",
                                     sbi_records(vestigingsprofielen)))
        return results

    def _profile(self, http: HttpSource, path: str, params: dict[str, str], nummer: str,
                 niet_geleverd: list[dict[str, Any]], retry: list[str]) -> RawResponse | None:
        """One profile request; KvK's "cannot deliver" answers are recorded instead of failing the run."""
        try:
            return http.get(path, params=params)
        except SourceClientError as error:
            codes = fout_codes(error)
            if error.status == 404 and (set(codes) & (NIET_LEVERBAAR_CODES | TEMPORARY_CODES)):
                niet_geleverd.append({"path": path, "status": error.status, "codes": codes})
                if set(codes) & TEMPORARY_CODES and len(nummer) == 8 and nummer not in retry:
                    retry.append(nummer)
                log.warning("%s: %s not delivered (%s)", self.name, path, ", ".join(codes))
                return None
            raise

    # ------------------------------------------------------------------ helpers

    def _writer(self, landing_root: Path, window: ExtractWindow, dataset: str, endpoint: str, record_path: str,
                content_type: str = HAL_JSON, extra: dict[str, Any] | None = None) -> BatchWriter:
        return BatchWriter(landing_root, self.name, dataset, window, endpoint=endpoint, record_path=record_path,
                           content_type=content_type, extra=extra)

    def _derived(self, landing_root: Path, window: ExtractWindow, dataset: str, parent: str,
                 records: list[dict[str, Any]]) -> BatchResult:
        with self._writer(landing_root, window, dataset, f"DERIVED {parent}", dataset,
                          content_type="application/json", extra={"derived_from": parent}) as batch:
            if records:
                content = json.dumps({dataset: records}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
                batch.add_part(content, request={"method": "DERIVED", "url": f"kvk/{parent}", "params": {}, "body": None},
                               status=None)
        return batch.completed()


# ---------------------------------------------------------------------- child records


def rechtspersoon_records(basisprofielen: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per basisprofiel owned by a rechtspersoon (the eigenaar has an RSIN)."""
    records = []
    for profiel in basisprofielen:
        eigenaar = (profiel.get("_embedded") or {}).get("eigenaar") or {}
        if not eigenaar.get("rsin"):
            continue
        hoofdvestiging = (profiel.get("_embedded") or {}).get("hoofdvestiging") or {}
        records.append({
            "kvkNummer": profiel.get("kvkNummer"),
            "rsin": eigenaar.get("rsin"),
            "rechtsvorm": eigenaar.get("rechtsvorm"),
            "uitgebreideRechtsvorm": eigenaar.get("uitgebreideRechtsvorm"),
            "naam": profiel.get("naam"),
            "statutaireNaam": profiel.get("statutaireNaam"),
            "formeleRegistratiedatum": profiel.get("formeleRegistratiedatum"),
            "materieleRegistratie": profiel.get("materieleRegistratie") or {},
            "websites": hoofdvestiging.get("websites") or [],
        })
    return records


def handelsnaam_records(basisprofielen: Iterable[dict[str, Any]],
                        vestigingsprofielen: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per handelsnaam: of the onderneming (vestigingsnummer null) and of each vestiging."""
    records = []
    for profiel in basisprofielen:
        for naam in profiel.get("handelsnamen") or []:
            records.append({"kvkNummer": profiel.get("kvkNummer"), "vestigingsnummer": None,
                            "naam": naam.get("naam"), "volgorde": naam.get("volgorde")})
    for profiel in vestigingsprofielen:
        for naam in profiel.get("handelsnamen") or []:
            records.append({"kvkNummer": profiel.get("kvkNummer"), "vestigingsnummer": profiel.get("vestigingsnummer"),
                            "naam": naam.get("naam"), "volgorde": naam.get("volgorde")})
    return records


def sbi_records(vestigingsprofielen: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per SBI activity of a vestiging, in the order KvK lists them."""
    records = []
    for profiel in vestigingsprofielen:
        for volgorde, activiteit in enumerate(profiel.get("sbiActiviteiten") or []):
            records.append({"kvkNummer": profiel.get("kvkNummer"), "vestigingsnummer": profiel.get("vestigingsnummer"),
                            "sbiCode": activiteit.get("sbiCode"), "sbiOmschrijving": activiteit.get("sbiOmschrijving"),
                            "indHoofdactiviteit": activiteit.get("indHoofdactiviteit"), "volgorde": volgorde})
    return records
