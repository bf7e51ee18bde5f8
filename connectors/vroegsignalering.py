"""Vroegsignalering schulden: signals of payment arrears and the municipality's follow-up.

Under the Wet gemeentelijke schuldhulpverlening (art. 2.2.1 Wgs, Besluit gemeentelijke
schuldhulpverlening) woningcorporaties, energieleveranciers, drinkwaterbedrijven and
zorgverzekeraars send early signals of payment arrears to the municipality. The
municipality's vroegsignalering system (VIS style) exports the signals together with
its follow-up (the vroegsignaalzaak and its contactpogingen) into the drop zone
``<dropzone>/vroegsignalering/``:

* ``vroegsignalen_<YYYYMMDD>.json``: the daily export, one JSON document
  ``{"export": {...}, "signalen": [...]}`` holding every signal that was **created or
  changed** that day, each in its full current state (a signal reappears on every day a
  contactpoging is added or its zaak is closed). ``laatstGewijzigd`` is the moment of the
  signal's last change; see :data:`SIGNAAL_SCHEMA` for one signal.
* ``vroegsignalen_<partner>_<YYYYMMDD>.csv``: ``;``-separated signals delivered directly
  by one partner, parsed through the data contract ``config/contracts/vroegsignalering.yaml``
  (see :mod:`connectors.contracts`); each row is reshaped into the JSON signal form, so
  both formats land identical records.

Each signal becomes one :class:`~connectors.dropzone.ParsedUnit` with records in three
datasets (bronze ``vroegsignalering_<dataset>``):

* ``signalen``: the signal without its contactpogingen (debtor, partner, aanleverende
  organisatie, achterstand, status, zaak id), plus ``exportdatum`` and ``gemeentecode``;
* ``zaken``: the vroegsignaalzaak the signal was picked up in (absent for a signal not
  picked up); signals of one household share a zaak, so identical copies collapse in silver;
* ``contactpogingen``: one record per contact attempt of that zaak, keyed by zaak id and
  ``volgnummer``.

The unit identity is ``<signaalId>@<laatstGewijzigd>``: a signal delivered again in the same
state (a re-sent file, the same signal twice in one file) is a duplicate
(``duplicate_signaal``), while a later change of the same signal is a new version that lands.

Memory: the daily export is a few hundred kilobytes even for a large municipality (signals
changed on one day), so the JSON document is read with the standard library's ``json``
(``ijson`` is not a dependency); ``max_file_bytes`` refuses anything unreasonably large
before it is read. Validation runs per signal, so one bad signal does not stop the others.
"""
from __future__ import annotations

import json
import logging
from datetime import date
from functools import partial
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Iterator

import jsonschema

from connectors.contracts import CONTRACT_CONFIG_PROPERTIES, ContractError, DataContract, default_contract_path
from connectors.dropzone import (
    DropzoneConnector,
    FileRejected,
    ParsedUnit,
    Rejection,
    dropzone_config_schema,
    file_date,
)
from connectors.errors import SourceConfigError
from ggm_lakehouse.bsn import is_valid_bsn
from ggm_lakehouse.yaml_schema import DIALECT, load_yaml_document

log = logging.getLogger(__name__)

SOURCE = "vroegsignalering"
DATASETS = ("signalen", "zaken", "contactpogingen")
JSON_PATTERN = "vroegsignalen_*.json"
CSV_PATTERN = "vroegsignalen_*.csv"
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
CSV_RECEIPT_TIME = "T06:00:00Z"  # partner files are collected early in the morning

#: The export's own vocabulary and the GGM v2.5.1 enumeration each value conforms to (ENUM tables of
#: the Vroegsignalering diagrams), as data beside this module (package data) for review.
CODELISTS_FILE = Path(__file__).with_name("vroegsignalering_codelists.yaml")
_GGM_CODE = {
    "type": "array", "minItems": 2, "maxItems": 2,
    "prefixItems": [{"type": "integer", "minimum": 1, "title": "GGM id (as the GGM DDL inserts it)"},
                    {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*$", "title": "GGM value"}],
    "title": "[GGM id, GGM value]",
}


def _codelist(enumeration: str, may_be_unmapped: bool = False) -> dict[str, Any]:
    code = {"oneOf": [_GGM_CODE, {"type": "null"}]} if may_be_unmapped else _GGM_CODE
    return {"type": "object", "minProperties": 1, "title": f"Export values and their {enumeration}",
            "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"}, "additionalProperties": code}


#: JSON schema of the codelists file; published as docs/schemas/vroegsignalering-codelists.schema.json.
CODELISTS_SCHEMA: dict[str, Any] = {
    "$schema": DIALECT,
    "title": "Vroegsignalering codelists",
    "description": "The vroegsignalering export's values and the GGM v2.5.1 enumeration value each conforms to.",
    "type": "object",
    "additionalProperties": False,
    "required": ["signaalpartner_types", "signaal_statussen", "zaak_resultaten", "contact_kanalen", "dagdelen"],
    "properties": {
        "signaalpartner_types": _codelist("ENUMSIGNAALPARTNER"),
        "signaal_statussen": {**_codelist("ENUMSIGNAALSTATUS", may_be_unmapped=True),
                              "description": "null: a status GGM expresses otherwise (opgepakt: by the zaak)."},
        "zaak_resultaten": _codelist("ENUMEINDRESULTAAT"),
        "contact_kanalen": _codelist("ENUMCONTACTSOORT"),
        "dagdelen": _codelist("ENUMDAGDEEL"),
    },
}


def load_codelists(path: Path = CODELISTS_FILE) -> dict[str, dict[str, tuple[int, str] | None]]:
    """The codelists in ``path``, each as export value -> (GGM id, GGM value), or None where GGM has no value."""
    document = load_yaml_document(path, CODELISTS_SCHEMA, what="codelists", error=partial(SourceConfigError, SOURCE))
    return {name: {value: None if code is None else (code[0], code[1]) for value, code in entries.items()}
            for name, entries in document.items()}


_CODELISTS = load_codelists()
SIGNAALPARTNER_TYPES: dict[str, tuple[int, str]] = _CODELISTS["signaalpartner_types"]
SIGNAAL_STATUSSEN: dict[str, tuple[int, str] | None] = _CODELISTS["signaal_statussen"]
ZAAK_RESULTATEN: dict[str, tuple[int, str]] = _CODELISTS["zaak_resultaten"]
CONTACT_KANALEN: dict[str, tuple[int, str]] = _CODELISTS["contact_kanalen"]
DAGDELEN: dict[str, tuple[int, str]] = _CODELISTS["dagdelen"]
# Outcome of one attempt; every value but geen_contact means the inwoner was reached (GGM BEREIKT).
CONTACT_RESULTATEN = ("geen_contact", "contact", "hulp_geaccepteerd", "hulp_geweigerd")

_DATE = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
_KVK = {"type": "string", "pattern": r"^[0-9]{8}$"}
_ORGANISATIE = {
    "type": "object",
    "required": ["naam", "kvkNummer"],
    "properties": {"naam": {"type": "string", "minLength": 1, "maxLength": 200}, "kvkNummer": _KVK},
}

#: JSON Schema (draft 2020-12) of one signal in the export.
SIGNAAL_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["signaalId", "laatstGewijzigd", "signaaldatum", "signaalpartner", "aanleverendeOrganisatie",
                 "debiteur", "achterstand", "status"],
    "properties": {
        "signaalId": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
        "laatstGewijzigd": {"type": "string", "format": "date-time",
                            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"},
        "signaaldatum": _DATE,
        "ontstaansdatum": _DATE,
        "signaalpartner": {
            **_ORGANISATIE,
            "required": ["naam", "kvkNummer", "type"],
            "properties": {**_ORGANISATIE["properties"], "type": {"enum": sorted(SIGNAALPARTNER_TYPES)}},
        },
        "aanleverendeOrganisatie": _ORGANISATIE,
        "debiteur": {
            "type": "object",
            # A signal names the debtor by BSN (matched in the BRP) or by name and address.
            "anyOf": [{"required": ["bsn"]}, {"required": ["geslachtsnaam", "adres"]}],
            "properties": {
                "bsn": {"type": "string", "pattern": r"^[0-9]{9}$"},
                "voorletters": {"type": "string", "maxLength": 40},
                "voorvoegsel": {"type": "string", "maxLength": 20},
                "geslachtsnaam": {"type": "string", "minLength": 1, "maxLength": 200},
                "geboortedatum": _DATE,
                "adres": {
                    "type": "object",
                    "required": ["postcode", "huisnummer"],
                    "properties": {
                        "postcode": {"type": "string", "pattern": r"^[1-9][0-9]{3}[A-Z]{2}$"},
                        "huisnummer": {"type": "integer", "minimum": 1, "maximum": 99999},
                        "huisletter": {"type": "string", "pattern": "^[A-Za-z]$"},
                        "huisnummertoevoeging": {"type": "string", "pattern": "^[A-Za-z0-9]{1,4}$"},
                        "woonplaats": {"type": "string"},
                        "nummeraanduidingIdentificatie": {"type": "string", "pattern": r"^[0-9]{16}$"},
                    },
                },
            },
        },
        "achterstand": {
            "type": "object",
            "required": ["bedrag", "aantalMaanden"],
            "properties": {
                "bedrag": {"type": "number", "exclusiveMinimum": 0, "maximum": 99999999.99},
                "aantalMaanden": {"type": "integer", "minimum": 1, "maximum": 120},
            },
        },
        "crisissignaal": {"type": "boolean"},
        "warmeOverdracht": {"type": "boolean"},
        "status": {"enum": sorted(SIGNAAL_STATUSSEN)},
        "zaak": {
            "type": "object",
            "required": ["zaakId", "datumOpgepakt"],
            "properties": {
                "zaakId": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
                "datumOpgepakt": _DATE,
                "matchingsdatum": _DATE,
                "startdatumMatchingperiode": _DATE,
                "einddatumMatchingperiode": _DATE,
                "einddatum": _DATE,
                "resultaat": {"enum": sorted(ZAAK_RESULTATEN)},
                "contactpogingen": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["volgnummer", "datum", "kanaal", "resultaat"],
                        "properties": {
                            "volgnummer": {"type": "integer", "minimum": 1},
                            "datum": _DATE,
                            "dagdeel": {"enum": sorted(DAGDELEN)},
                            "kanaal": {"enum": sorted(CONTACT_KANALEN)},
                            "resultaat": {"enum": list(CONTACT_RESULTATEN)},
                        },
                    },
                },
            },
        },
    },
    # Picked up means there is a zaak; a signal with a zaak is picked up.
    "if": {"properties": {"status": {"const": "opgepakt"}}, "required": ["status"]},
    "then": {"required": ["zaak"]},
    "else": {"not": {"required": ["zaak"]}},
}

#: JSON Schema of the export envelope; each signal is validated on its own with SIGNAAL_SCHEMA.
EXPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["export", "signalen"],
    "properties": {
        "export": {
            "type": "object",
            "required": ["gemeentecode", "exportdatum"],
            "properties": {
                "gemeentecode": {"type": "string", "pattern": r"^[0-9]{4}$"},
                "exportdatum": _DATE,
                "bronsysteem": {"type": "string"},
                "aantalSignalen": {"type": "integer", "minimum": 0},
            },
        },
        "signalen": {"type": "array"},
    },
}

_FORMAT_CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER
_SIGNAAL_VALIDATOR = jsonschema.Draft202012Validator(SIGNAAL_SCHEMA, format_checker=_FORMAT_CHECKER)
_EXPORT_VALIDATOR = jsonschema.Draft202012Validator(EXPORT_SCHEMA, format_checker=_FORMAT_CHECKER)


def _schema_problems(validator: jsonschema.Draft202012Validator, instance: Any, limit: int = 5) -> list[str]:
    """Readable schema violations, path first; a value under a ``bsn`` key is never quoted."""
    problems = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path]):
        path = ".".join(str(p) for p in error.absolute_path) or "(signaal)"
        if "bsn" in path.split("."):
            # jsonschema quotes the offending value; a (malformed) BSN must not reach logs in clear.
            problems.append(f"{path}: violates '{error.validator}'")
        else:
            problems.append(f"{path}: {error.message}")
        if len(problems) == limit:
            problems.append("...")
            break
    return problems


def signal_units(signal: Any, where: str, file_name: str, export: dict[str, Any]) -> ParsedUnit | Rejection:
    """Validate one signal found at ``where`` (``signaal 3``, ``line 12``) and split it into dataset records.

    The position becomes ``<where> (id <signaalId>)``. Returns a :class:`Rejection` (rule
    ``schema`` or ``bsn_elfproef``) for a bad signal. Shared by the JSON and the CSV path so
    both land the same record shapes.
    """
    signaal_id = signal.get("signaalId") if isinstance(signal, dict) else None
    shown_id = signaal_id if isinstance(signaal_id, str) and len(signaal_id) <= 64 else "?"
    position = f"{where} (id {shown_id})"
    problems = _schema_problems(_SIGNAAL_VALIDATOR, signal)
    if problems:
        return Rejection(file_name, position, "schema", "; ".join(problems),
                         identity=signaal_id if shown_id != "?" else None)
    bsn = signal["debiteur"].get("bsn")
    if bsn is not None and not is_valid_bsn(bsn):
        return Rejection(file_name, position, "bsn_elfproef", "debiteur.bsn fails the elfproef", identity=signaal_id)
    provenance = {"exportdatum": export["exportdatum"], "gemeentecode": export["gemeentecode"]}
    record = {k: v for k, v in signal.items() if k != "zaak"}
    zaak = signal.get("zaak")
    records: dict[str, list[dict[str, Any]]] = {"signalen": [], "zaken": [], "contactpogingen": []}
    if zaak is not None:
        record["zaakId"] = zaak["zaakId"]
        records["zaken"].append({**{k: v for k, v in zaak.items() if k != "contactpogingen"}, **provenance})
        seen: set[int] = set()
        for poging in zaak.get("contactpogingen", []):
            if poging["volgnummer"] in seen:
                return Rejection(file_name, position, "schema",
                                 f"zaak.contactpogingen: volgnummer {poging['volgnummer']} occurs twice",
                                 identity=signaal_id)
            seen.add(poging["volgnummer"])
            # No signaalId here: the attempts belong to the zaak, which several signals can share.
            records["contactpogingen"].append({"zaakId": zaak["zaakId"], **poging, **provenance})
    records["signalen"].append({**record, **provenance})
    return ParsedUnit(position=position, records={k: v for k, v in records.items() if v},
                      identity=f"{signaal_id}@{signal['laatstGewijzigd']}")


class VroegsignaleringConnector(DropzoneConnector):
    """Drop-zone source ``vroegsignalering``: daily JSON exports and partner CSV files.

    Config (all optional): the shared drop-zone keys (``dropzone_dir``, ...; see
    :func:`connectors.dropzone.dropzone_config_schema`), ``gemeentecode`` (refuse exports of
    another municipality), ``max_file_bytes`` and ``contract`` (the partner CSV data contract;
    default ``config/contracts/vroegsignalering.yaml``).
    """

    name: ClassVar[str] = SOURCE
    datasets: ClassVar[tuple[str, ...]] = DATASETS
    file_patterns: ClassVar[tuple[str, ...]] = (JSON_PATTERN, CSV_PATTERN)
    duplicate_rule: ClassVar[str] = "duplicate_signaal"
    config_schema: ClassVar[dict[str, Any]] = dropzone_config_schema({
        **CONTRACT_CONFIG_PROPERTIES,
        "gemeentecode": {"type": "string", "pattern": r"^[0-9]{4}$",
                         "description": "Refuse exports of another municipality (wrong_gemeente)."},
        "max_file_bytes": {"type": "integer", "minimum": 1, "default": DEFAULT_MAX_FILE_BYTES,
                           "description": "Larger files are quarantined unread (file_too_large)."},
    })

    @property
    def contract(self) -> DataContract:
        """The partner CSV contract (config ``contract``, default ``config/contracts/vroegsignalering.yaml``).

        Not a :class:`~connectors.contracts.ContractConnector`: the contract types the CSV rows (its
        dataset ``partnersignalen``), and the connector reshapes them into its own three datasets.
        """
        cached = getattr(self, "_contract", None)
        if cached is None:
            path = Path(self.config["contract"]) if self.config.get("contract") else default_contract_path(self.name)
            try:
                cached = DataContract.from_file(path)
            except ContractError as exc:
                raise SourceConfigError(self.name, str(exc)) from exc
            if cached.source != self.name:
                raise SourceConfigError(self.name, f"contract {path} is for source {cached.source!r}")
            self._contract = cached
        return cached

    # -- parsing

    def parse_file(self, path: Path) -> Iterator[ParsedUnit | Rejection]:
        """Yield one unit per valid signal and a rejection per bad one; see the module docstring."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            yield from self._parse_json(path)
        elif suffix == ".csv":
            yield from self._parse_csv(path)
        else:
            raise FileRejected("unknown_format", f"{path.name}: expected a .json export or a .csv partner file")

    def _check_size(self, path: Path) -> None:
        size = path.stat().st_size
        limit = int(self.config.get("max_file_bytes", DEFAULT_MAX_FILE_BYTES))
        if size > limit:
            raise FileRejected("file_too_large", f"{path.name} is {size} bytes; the limit is {limit}")

    def _parse_json(self, path: Path) -> Iterator[ParsedUnit | Rejection]:
        self._check_size(path)
        content = path.read_bytes()
        if not content.strip():
            raise FileRejected("empty_file", f"{path.name} holds only white space")
        try:
            document = json.loads(content.decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise FileRejected("not_utf8", f"{path.name} is not UTF-8 ({exc.reason})", f"byte {exc.start}") from None
        except json.JSONDecodeError as exc:
            raise FileRejected("not_well_formed", f"{path.name} is not well-formed JSON: {exc.msg}",
                               f"line {exc.lineno} column {exc.colno}") from None
        del content
        problems = _schema_problems(_EXPORT_VALIDATOR, document)
        if problems:
            raise FileRejected("schema", f"{path.name} is not a vroegsignalering export: " + "; ".join(problems))
        export = document["export"]
        self._check_gemeente(path, export["gemeentecode"])
        declared = export.get("aantalSignalen")
        if declared is not None and declared != len(document["signalen"]):
            # A count that does not match the list means a truncated or tampered export.
            raise FileRejected("count_mismatch", f"{path.name} declares {declared} signalen but holds "
                                                 f"{len(document['signalen'])}")
        for number, signal in enumerate(document["signalen"], start=1):
            yield signal_units(signal, f"signaal {number}", path.name, export)

    def _check_gemeente(self, path: Path, gemeentecode: str) -> None:
        expected = self.config.get("gemeentecode")
        if expected and gemeentecode != expected:
            raise FileRejected("wrong_gemeente", f"{path.name} is an export of gemeente {gemeentecode}, not {expected}")

    def _parse_csv(self, path: Path) -> Iterator[ParsedUnit | Rejection]:
        """Partner CSV: rows checked and typed by the data contract, then handled as JSON signals."""
        self._check_size(path)
        dataset = self.contract.dataset_for(path.name)
        if dataset is None:
            raise FileRejected("unknown_file", f"{path.name} matches no dataset of the {self.name} contract "
                                               f"(patterns {list(self.contract.file_patterns)})")
        received = file_date(path.name)
        if received is None:
            raise FileRejected("missing_file_date",
                               f"{path.name} carries no delivery date (vroegsignalen_<partner>_<YYYYMMDD>.csv)")
        export = {"exportdatum": received.isoformat(), "gemeentecode": self.config.get("gemeentecode")}
        for item in self.contract.parse(path, dataset):
            if isinstance(item, Rejection):
                yield item
                continue
            for row in item.records.get(dataset, []):
                yield signal_units(partner_row_to_signal(row, received), item.position, path.name, export)


def partner_row_to_signal(row: dict[str, Any], received: date) -> dict[str, Any]:
    """One typed contract row of a partner CSV in the signal form of the JSON export.

    A partner delivers directly, so it is its own aanleverende organisatie; the municipality has
    not picked the signal up yet when the file arrives (``nog_niet_opgepakt``), and the receipt
    (the delivery date in the file name) is the signal's ``laatstGewijzigd``.
    """
    partner = {"naam": row["signaalpartner"], "kvkNummer": row["signaalpartner_kvk"]}
    debiteur: dict[str, Any] = {k: row[k] for k in ("bsn", "voorletters", "voorvoegsel", "geslachtsnaam")
                                if row.get(k) is not None}
    if row.get("postcode") is not None or row.get("huisnummer") is not None:
        debiteur["adres"] = {k: row[k] for k in ("postcode", "huisnummer", "huisletter", "huisnummertoevoeging")
                             if row.get(k) is not None}
    signal: dict[str, Any] = {
        "signaalId": row["signaal_id"],
        "laatstGewijzigd": f"{received.isoformat()}{CSV_RECEIPT_TIME}",
        "signaaldatum": row["signaaldatum"],
    }
    if row.get("ontstaansdatum") is not None:
        signal["ontstaansdatum"] = row["ontstaansdatum"]
    signal.update({
        "signaalpartner": {**partner, "type": row["signaalpartner_type"]},
        "aanleverendeOrganisatie": dict(partner),
        "debiteur": debiteur,
        # The contract gives decimals as exact text; the JSON form carries a number (two decimals).
        "achterstand": {"bedrag": float(Decimal(row["achterstand_bedrag"])), "aantalMaanden": row["aantal_maanden"]},
        "status": "nog_niet_opgepakt",
    })
    if row.get("crisissignaal") is not None:
        signal["crisissignaal"] = row["crisissignaal"]
    return signal
