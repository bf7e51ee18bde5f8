"""iWmo and iJw release 3.2 messages (Zorginstituut iStandaarden) from a drop zone.

The municipality's Wmo/Jeugd application (or a GGk export) drops one XML file per
message (``bericht``) into ``<dropzone>/iwmo/`` resp. ``<dropzone>/ijw/``. A file holds either
a bare message (root ``Bericht`` in ``http://www.istandaarden.nl/iwmo/3_2/wmo301/schema`` etc.)
or a StUF-GGk envelope (``ggk0310`` ``Di01`` heenbericht / ``Du01`` retourbericht) that carries
the message base64-encoded in ``GGK:bericht``; the envelope is unwrapped.

Every file is streamed with a hardened lxml parser (no DTD, no entity expansion, no network,
no huge trees), in passes that keep nothing but the header:

1. *check*: DTDs refused, well-formedness, namespace and release, the elfproef of every
   client BSN;
2. *validate* (only with config ``xsd_dir``): against the XSD of the message's own type;
3. *extract*: the records per dataset, element by element, freeing what was read.

So memory stays bounded by the largest single product/prestatie, not by the file, and a
message that fails a check contributes nothing. A message with more than
:data:`RECORDS_PER_UNIT` records (a large 323 declaratie) is yielded in several units; the first
carries the identity ``<standard>:<berichtcode>:<afzender>:<BerichtIdentificatie>``, later ones append ``#<n>``,
so a re-delivered message is a duplicate in every unit.

Datasets (bronze ``<source>_<dataset>``; every record carries the message provenance
``standaard``, ``wet``, ``berichttype``, ``berichtcode``, ``bericht_identificatie``, ``dagtekening``,
``afzender``, ``ontvanger``, ``gemeentecode``, ``agb_code`` and, when the AGB→KvK register is
configured, ``kvk_nummer``):

========================  ====================================================================
``berichten``             one per message (also retourberichten, with their retourcodes)
``clienten``              one per Client element (BSN; plus juridische status etc. where the message has them)
``toewijzingen``          one per ToegewezenProduct of a 301
``leveringen``            one per StartProduct (305, status ``gestart``) / StopProduct (307, ``gestopt``)
``aanvragen``             one per AangevraagdProduct of a 315 (carries the BeschikkingNummer)
``verzoeken``             one per product line of a 317 verzoek om wijziging
``producten``             one per distinct product (categorie, code) a message names
``declaraties``           one per 323 declaratie
``prestaties``            one per Prestatie of a 323
``zorgaanbieders``        one per message: the AGB-code of the zorgaanbieder (and its KvK-nummer)
========================  ====================================================================

Rejection rules: ``empty_file``, ``not_well_formed``, ``dtd_forbidden``, ``entity_expansion``,
``unknown_namespace_or_version``, ``envelope_invalid`` (file level, :class:`FileRejected`);
``xsd_invalid``, ``xsd_missing``, ``structure_invalid``, ``required_date_missing``, ``invalid_date``,
``bsn_elfproef`` (message level, :class:`Rejection`); ``duplicate_bericht`` (by the framework, from
``ParsedUnit.identity``).

The mandatory dates (:data:`MANDATORY_DATES`: a 305 StartProduct's ``Begindatum``, a 323's
``DeclaratiePeriode``, ...) are checked by the connector itself, so a message without one is
refused on the embedded default too, where no XSDs are configured. A refused message registers
nothing: its BerichtIdentificatie stays free for the corrected message.
"""
from __future__ import annotations

import base64
import binascii
import csv
import io
import re
from collections import Counter
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, ClassVar, Iterator

from lxml import etree

from connectors.dropzone import DropzoneConnector, FileRejected, ParsedUnit, Rejection, dropzone_config_schema
from connectors.errors import SourceConfigError
from ggm_lakehouse.bsn import is_valid_bsn
from ggm_lakehouse.config import project_root

#: Above this many records a message is split over several units (bounded memory per unit).
RECORDS_PER_UNIT = 2_000

GGK_NAMESPACE = "http://www.stufstandaarden.nl/sectormodel/ggk/0210"
GGK_ENVELOPES = ("envelopHeenbericht-ggk_Di01", "envelopRetourbericht-ggk_Du01")
STUF_NAMESPACE = "http://www.egem.nl/StUF/StUF0301"

_PROLOG_BYTES = 64 * 1024
# http://www.istandaarden.nl/iwmo/3_2/wmo301/schema, .../ijw/3_2/jw301/schema (any release, to name it).
_MESSAGE_NAMESPACE = re.compile(
    r"^http://www\.istandaarden\.nl/(?P<standard>iwmo|ijw)/(?P<release>\d+_\d+)/(?P<prefix>wmo|jw)(?P<number>\d{3})/schema$"
)
# Repeating elements freed once read, so a message of any size streams in bounded memory; their
# ancestors (Header fields, Client data, Declaratie totals) stay until they end themselves.
_RELEASE_AFTER = frozenset({
    "Header", "Client", "Prestatie", "ToegewezenProduct", "StartProduct", "StopProduct", "AangevraagdProduct",
    "OngewijzigdProduct", "TeWijzigenProduct", "NieuwProduct", "Relatie", "Contact",
})
# The elements the check and the extraction look at (see _on_end); lxml skips all others in C.
# Date elements the release 3.2 XSDs (iWmo and iJw alike) require, by the element that holds them;
# the same element name has the same mandatory dates in every message type (302, 306 ... repeat them).
MANDATORY_DATES: dict[str, tuple[str, ...]] = {
    "ToegewezenProduct": ("Toewijzingsdatum", "Ingangsdatum"),
    "StartProduct": ("Begindatum",),
    "StopProduct": ("Begindatum", "Einddatum"),
    "AangevraagdProduct": ("ToewijzingIngangsdatum",),
    "TeWijzigenProduct": ("GewensteIngangsdatum",),
    "NieuwProduct": ("GewensteIngangsdatum",),
    "Prestatie": ("ProductPeriode/Begindatum", "ProductPeriode/Einddatum"),
    "Declaratie": ("DeclaratieDagtekening", "DeclaratiePeriode/Begindatum", "DeclaratiePeriode/Einddatum"),
}
_CHECKED = frozenset({"Header", "Bsn", *MANDATORY_DATES})
_XSD_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_EXTRACTED = frozenset({
    "IdentificatieRetour", "DagtekeningRetour", "RetourCode", "Bsn", "DeclaratieNummer", "DeclaratieDagtekening",
    "DeclaratiePeriode", "TotaalIngediendBedrag", "Declaratie", "Prestatie", "ToegewezenProduct", "StartProduct",
    "StopProduct", "AangevraagdProduct", "OngewijzigdProduct", "TeWijzigenProduct", "NieuwProduct", "Client",
})
_SCHEMA_END = re.compile(rb"</(?:[A-Za-z_][\w.-]*:)?schema\s*>")


@dataclass(frozen=True)
class Standard:
    """One of the two iStandaarden this connector reads, with its message codes (COD002-VEKTIS)."""

    name: str  # "iwmo" | "ijw": the namespace segment and the connector name
    prefix: str  # "WMO" | "JW": the message type prefix (WMO301, JW301)
    wet: str  # value of GGM WET_ENUM
    codes: dict[str, str]  # message number -> BerichtCode

    @property
    def release_namespace(self) -> str:
        return f"http://www.istandaarden.nl/{self.name}/3_2/"


IWMO = Standard("iwmo", "WMO", "WMO", {
    "301": "414", "302": "415", "305": "418", "306": "419", "307": "420", "308": "421", "315": "444",
    "316": "445", "317": "480", "318": "481", "319": "482", "320": "483", "323": "484", "325": "485",
})
IJW = Standard("ijw", "JW", "JEUGDWET", {
    "301": "436", "302": "437", "305": "438", "306": "439", "307": "440", "308": "441", "315": "446",
    "316": "447", "317": "486", "318": "487", "319": "488", "320": "489", "323": "490", "325": "491",
})
STANDARDS = {s.name: s for s in (IWMO, IJW)}
RELEASE = "3_2"
BERICHT_VERSIE, BERICHT_SUBVERSIE = "3", "2"


@dataclass(frozen=True)
class MessageType:
    """The type of one message, derived from the namespace of its root element."""

    standard: Standard
    number: str  # "301"
    namespace: str

    @property
    def name(self) -> str:
        return f"{self.standard.prefix}{self.number}"

    @property
    def code(self) -> str:
        return self.standard.codes[self.number]


@dataclass
class _Header:
    """The header fields every record of a message repeats as provenance."""

    values: dict[str, Any] = field(default_factory=dict)

    @property
    def identification(self) -> str | None:
        return self.values.get("bericht_identificatie")

    @property
    def afzender(self) -> str | None:
        return self.values.get("afzender")


def _local(tag: object) -> str:
    if not isinstance(tag, str):
        return ""
    # "{ns}name", or "prefix:name" when a prefix is undeclared (lxml keeps it in the tag then).
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def _namespace(tag: object) -> str:
    return tag[1:].split("}", 1)[0] if isinstance(tag, str) and tag.startswith("{") else ""


def _hardened_parse_options() -> dict[str, Any]:
    """lxml options that never fetch, expand or load anything a message points at."""
    return {
        "resolve_entities": False,
        "no_network": True,
        "load_dtd": False,
        "dtd_validation": False,
        "huge_tree": False,
        "remove_comments": True,
        "remove_pis": True,
    }


def clean_schema_bytes(raw: bytes) -> bytes:
    """Schema text without the defects of third-party copies.

    Drops anything before the first ``<`` (a markdown heading such as ``## WMO301.xsd``) and
    everything after the closing ``</xs:schema>`` (one copy carries a sample message there).
    A clean, official XSD passes through unchanged.
    """
    start = raw.find(b"<")
    if start < 0:
        return raw
    cleaned = raw[start:]
    end = _SCHEMA_END.search(cleaned)
    return cleaned[: end.end()] if end else cleaned


class _FolderResolver(etree.Resolver):
    """Resolves ``schemaLocation`` imports inside one folder only, matching file names case-insensitively.

    Official imports name ``basisschema.xsd`` while some copies ship ``Basisschema.xsd``; anything
    outside the folder (http URLs, ``..``) is refused so a schema cannot make the parser reach out.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def resolve(self, system_url, public_id, context):  # noqa: D401 - lxml API
        wanted = str(system_url or "").replace("\\", "/").rsplit("/", 1)[-1].lower()
        found = find_case_insensitive(self.folder, wanted)
        if found is None:
            raise etree.XMLSchemaParseError(f"schema import {wanted!r} not found in {self.folder}")
        return self.resolve_string(clean_schema_bytes(found.read_bytes()), context, base_url=str(found))


def find_case_insensitive(folder: Path, file_name: str) -> Path | None:
    """The file in ``folder`` whose name equals ``file_name`` ignoring case (None when absent)."""
    lowered = file_name.lower()
    for candidate in sorted(folder.iterdir()):
        if candidate.is_file() and candidate.name.lower() == lowered:
            return candidate
    return None


def load_message_schema(xsd_dir: Path, message_name: str) -> etree.XMLSchema | None:
    """Compile the XSD of ``message_name`` (``WMO301``) from ``xsd_dir``; None when the folder has none.

    Works with the official schemas and with copies that carry a markdown first line, trailing
    junk or differently cased import names.
    """
    path = find_case_insensitive(xsd_dir, f"{message_name}.xsd")
    if path is None:
        return None
    parser = etree.XMLParser(**_hardened_parse_options())
    parser.resolvers.add(_FolderResolver(xsd_dir))
    document = etree.fromstring(clean_schema_bytes(path.read_bytes()), parser, base_url=str(path))
    return etree.XMLSchema(etree.ElementTree(document))


def load_agb_kvk_mapping(path: Path) -> dict[str, str]:
    """The municipality's AGB-code → KvK-nummer register (CSV ``agb_code;kvk_nummer`` with a header)."""
    mapping: dict[str, str] = {}
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader((line for line in handle if line.strip() and not line.startswith("#")), delimiter=";")
        if reader.fieldnames is None or not {"agb_code", "kvk_nummer"} <= {f.strip() for f in reader.fieldnames}:
            raise ValueError(f"{path}: header must be 'agb_code;kvk_nummer'")
        for number, row in enumerate(reader, start=2):
            agb, kvk = (row.get("agb_code") or "").strip(), (row.get("kvk_nummer") or "").strip()
            if not re.fullmatch(r"[0-9]{8}", agb) or not re.fullmatch(r"[0-9]{8}", kvk):
                raise ValueError(f"{path}: row {number}: agb_code and kvk_nummer must be 8 digits")
            if mapping.get(agb, kvk) != kvk:
                raise ValueError(f"{path}: row {number}: AGB-code {agb} maps to two KvK-nummers")
            mapping[agb] = kvk
    return mapping


class _Opener:
    """Re-openable byte source: the dropped file or an unwrapped envelope payload."""

    def __init__(self, path: Path, payload: bytes | None = None) -> None:
        self.path = path
        self.payload = payload

    def __call__(self) -> AbstractContextManager:
        return io.BytesIO(self.payload) if self.payload is not None else self.path.open("rb")

    def prolog(self) -> bytes:
        with self() as handle:
            return handle.read(_PROLOG_BYTES)


class IstandaardConnector(DropzoneConnector):
    """Shared implementation of :class:`IwmoConnector` and :class:`IjwConnector` (see module docstring)."""

    standard: ClassVar[Standard]
    file_patterns: ClassVar[tuple[str, ...]] = ("*.xml", "*.XML")
    duplicate_rule: ClassVar[str] = "duplicate_bericht"
    datasets: ClassVar[tuple[str, ...]] = (
        "berichten", "clienten", "toewijzingen", "leveringen", "aanvragen", "verzoeken",
        "producten", "declaraties", "prestaties", "zorgaanbieders",
    )
    config_schema: ClassVar[dict[str, Any]] = dropzone_config_schema({
        "xsd_dir": {
            "type": ["string", "null"],
            "description": "Folder with the release 3.2 XSDs (WMO301.xsd, Basisschema.xsd, ...); when set every message "
                           "is validated against the XSD of its own type.",
        },
        "agb_kvk_mapping": {
            "type": ["string", "null"],
            "description": "CSV agb_code;kvk_nummer maintained by the municipality; relative paths are taken from the checkout.",
        },
    })

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self._schemas: dict[str, etree.XMLSchema | None] = {}
        xsd_dir = self.config.get("xsd_dir")
        self._xsd_dir = Path(xsd_dir) if xsd_dir else None
        if self._xsd_dir is not None and not self._xsd_dir.is_dir():
            raise SourceConfigError(self.name, f"xsd_dir {self._xsd_dir} is not a folder")
        self._agb_kvk: dict[str, str] = {}
        mapping_path = self.config.get("agb_kvk_mapping")
        if mapping_path:
            resolved = Path(mapping_path)
            if not resolved.is_absolute():
                resolved = project_root() / resolved
            try:
                self._agb_kvk = load_agb_kvk_mapping(resolved)
            except (OSError, ValueError) as exc:
                raise SourceConfigError(self.name, f"agb_kvk_mapping: {exc}") from exc

    # ------------------------------------------------------------------ public API

    def parse_file(self, path: Path) -> Iterator[ParsedUnit | Rejection]:
        """Yield the units of the message in ``path`` (bare or in a StUF-GGk envelope), or its rejection."""
        path = Path(path)
        opener = _Opener(path)
        if not _has_content(opener):
            raise FileRejected("empty_file", "the file is empty", "line 1")
        _refuse_doctype_in_prolog(opener.prolog())
        root_namespace, root_name = _root_element(opener)
        envelope: dict[str, Any] = {}
        if root_namespace == GGK_NAMESPACE:
            if root_name not in GGK_ENVELOPES:
                raise FileRejected("unknown_namespace_or_version",
                                   f"StUF-GGk element {root_name!r} is not a Di01/Du01 envelope", "line 1")
            payload, envelope = _unwrap_envelope(opener)
            opener = _Opener(path, payload)
            if not _has_content(opener):
                raise FileRejected("envelope_invalid", "the envelope carries an empty bericht", "GGK:bericht")
            _refuse_doctype_in_prolog(opener.prolog())
            root_namespace, root_name = _root_element(opener)
        message_type = self._message_type(root_namespace, root_name)
        header, problem = self._check(opener, message_type, path.name)
        if problem is not None:
            yield problem
            return
        yield from self._extract(opener, message_type, header, envelope)

    # ------------------------------------------------------------------ checks

    def _message_type(self, namespace: str, root_name: str) -> MessageType:
        match = _MESSAGE_NAMESPACE.match(namespace or "")
        if root_name != "Bericht" or match is None:
            raise FileRejected(
                "unknown_namespace_or_version",
                f"root element {{{namespace}}}{root_name} is not an iStandaarden Bericht", "line 1")
        if match["standard"] != self.standard.name or match["release"] != RELEASE:
            raise FileRejected(
                "unknown_namespace_or_version",
                f"namespace {namespace} is not {self.standard.name} release 3.2; this drop zone takes "
                f"{self.standard.release_namespace}...", "line 1")
        number = match["number"]
        if (match["prefix"] == "wmo") != (self.standard is IWMO) or number not in self.standard.codes:
            raise FileRejected("unknown_namespace_or_version",
                               f"message type {match['prefix'].upper()}{number} is not part of {self.standard.name} 3.2", "line 1")
        return MessageType(self.standard, number, namespace)

    def _schema(self, message_type: MessageType) -> etree.XMLSchema | None:
        if message_type.name not in self._schemas:
            self._schemas[message_type.name] = load_message_schema(self._xsd_dir, message_type.name)
        return self._schemas[message_type.name]

    def _check(self, opener: _Opener, message_type: MessageType, file_name: str) -> tuple[_Header, Rejection | None]:
        """Check the whole message without keeping it; returns its header and a rejection, if any.

        Well-formedness is checked without a schema: lxml's streaming schema validation reports
        (or even swallows) some parser errors differently, so validation runs as a second pass
        over a document already known to be well-formed.
        """
        schema = None
        if self._xsd_dir is not None:
            schema = self._schema(message_type)
            if schema is None:
                return _Header(), Rejection(
                    file_name, "bericht 1", "xsd_missing",
                    f"xsd_dir {self._xsd_dir} has no {message_type.name}.xsd; the message cannot be validated")
        header = _Header()
        clients = 0
        bad_clients: list[int] = []
        dates = _MandatoryDates(message_type.name)
        for name, parent, element in _stream(opener, _CHECKED):
            if name == "Header" and parent == "Bericht":
                header = self._read_header(element, message_type)
            elif name == "Bsn" and parent == "Client":
                clients += 1
                if not is_valid_bsn((element.text or "").strip()):
                    bad_clients.append(clients)
            elif name in MANDATORY_DATES:
                dates.see(name, element)
        if schema is not None:
            problem = _validate(opener, schema)
            if problem is not None:
                position, message = problem
                return header, Rejection(
                    file_name, f"{_bericht_position(header)} {position}", "xsd_invalid",
                    f"{message_type.name}.xsd: {message}", identity=self._identity(header))
        problem = self._check_structure(header, message_type)
        if problem:
            return header, Rejection(file_name, _bericht_position(header), "structure_invalid", problem,
                                     identity=self._identity(header))
        date_problem = dates.problem()
        if date_problem is not None:
            where, rule, message = date_problem
            return header, Rejection(file_name, f"{_bericht_position(header)} {where}", rule, message,
                                     identity=self._identity(header))
        if bad_clients:
            which = ", ".join(str(n) for n in bad_clients[:10])
            # The BSN itself is not repeated: rejections are logged and reported.
            return header, Rejection(
                file_name, _bericht_position(header), "bsn_elfproef",
                f"the BSN of client {which} of {clients} fails the elfproef; the message is not accepted",
                identity=self._identity(header))
        return header, None

    def _check_structure(self, header: _Header, message_type: MessageType) -> str | None:
        values = header.values
        if not values:
            return "the message has no Header"
        if values.get("berichtversie") != BERICHT_VERSIE or values.get("berichtsubversie") != BERICHT_SUBVERSIE:
            raise FileRejected(
                "unknown_namespace_or_version",
                f"BerichtVersie/BerichtSubversie {values.get('berichtversie')}.{values.get('berichtsubversie')} is not 3.2",
                _bericht_position(header))
        missing = [k for k in ("berichtcode", "afzender", "ontvanger", "bericht_identificatie", "dagtekening") if not values.get(k)]
        if missing:
            return f"the Header lacks {', '.join(missing)}"
        if values["berichtcode"] != message_type.code:
            return f"BerichtCode {values['berichtcode']} does not belong to {message_type.name} (expected {message_type.code})"
        return None

    def _identity(self, header: _Header) -> str | None:
        if not header.identification or not header.afzender:
            return None
        # BerichtIdentificatie is unique per sender and berichtsoort (RetourCode 9056); a retourbericht
        # repeats the header of its heenbericht, so the berichtcode keeps the two apart.
        return f"{self.standard.name}:{header.values.get('berichtcode')}:{header.afzender}:{header.identification}"

    # ------------------------------------------------------------------ extraction

    def _read_header(self, element, message_type: MessageType) -> _Header:
        fields = _children_text(element)
        identification = element.find("{*}BerichtIdentificatie")
        afzender, ontvanger = fields.get("Afzender"), fields.get("Ontvanger")
        # Gemeentecodes have four digits, AGB-codes eight: which side is which depends on the direction.
        gemeente = next((c for c in (afzender, ontvanger) if c and re.fullmatch(r"[0-9]{4}", c)), None)
        agb = next((c for c in (afzender, ontvanger) if c and re.fullmatch(r"[0-9]{8}", c)), None)
        values: dict[str, Any] = {
            "standaard": self.standard.name,
            "wet": self.standard.wet,
            "berichttype": message_type.name,
            "berichtcode": fields.get("BerichtCode"),
            "berichtversie": fields.get("BerichtVersie"),
            "berichtsubversie": fields.get("BerichtSubversie"),
            "bericht_identificatie": _text(identification, "Identificatie"),
            "dagtekening": _text(identification, "Dagtekening"),
            "afzender": afzender,
            "ontvanger": ontvanger,
            "gemeentecode": gemeente,
            "agb_code": agb,
            "kvk_nummer": self._agb_kvk.get(agb) if agb else None,
        }
        return _Header(values)

    def _extract(self, opener: _Opener, message_type: MessageType, header: _Header,
                 envelope: dict[str, Any]) -> Iterator[ParsedUnit]:
        """Pass 2: stream the records of a checked message, in units of at most RECORDS_PER_UNIT records."""
        base = {k: v for k, v in header.values.items() if k not in ("berichtversie", "berichtsubversie")}
        identity = self._identity(header)
        position = _bericht_position(header)
        emitter = _UnitEmitter(identity, position)
        state = _MessageState()
        for name, parent, element in _stream(opener, _EXTRACTED):
            self._on_end(name, parent, element, base, state, emitter, message_type)
            yield from emitter.full_units()
        for product in state.products.values():
            emitter.add("producten", {**base, **product})
        if base.get("agb_code"):
            emitter.add("zorgaanbieders", {**base, "soort": "ZORGAANBIEDER"})
        emitter.add("berichten", {
            **base,
            "client_bsn": state.first_client_bsn if state.client_count == 1 else None,
            "aantal_clienten": state.client_count,
            "identificatie_retour": state.retour.get("IdentificatieRetour"),
            "dagtekening_retour": state.retour.get("DagtekeningRetour"),
            "retourcodes": state.retourcodes,
            "is_retourbericht": bool(state.retour) or bool(state.retourcodes),
            "aantal_records": emitter.total,
            **{f"envelop_{k}": v for k, v in envelope.items()},
        })
        yield from emitter.last_units()

    def _on_end(self, name: str, parent: str, element, base: dict[str, Any], state: "_MessageState",
                emitter: "_UnitEmitter", message_type: MessageType) -> bool:
        """Turn one finished element into records or message state; True when it produced a record."""
        number = message_type.number
        if parent == "Header" and name in ("IdentificatieRetour", "DagtekeningRetour"):
            state.retour[name] = (element.text or "").strip()
        elif name == "RetourCode":
            code = (element.text or "").strip()
            if code and code not in state.retourcodes:
                state.retourcodes.append(code)
        elif name == "Bsn" and parent == "Client":
            state.client_bsn = (element.text or "").strip()
            state.client_count += 1
            state.first_client_bsn = state.first_client_bsn or state.client_bsn
        elif name in ("DeclaratieNummer", "DeclaratieDagtekening") and parent == "Declaratie":
            state.declaratie[name] = (element.text or "").strip()
        elif name in ("DeclaratiePeriode", "TotaalIngediendBedrag") and parent == "Declaratie":
            state.declaratie[name] = _children_text(element)
        elif name == "Declaratie" and number == "323":
            period = state.declaratie.get("DeclaratiePeriode", {})
            totaal = state.declaratie.get("TotaalIngediendBedrag", {})
            emitter.add("declaraties", {
                **base,
                "declaratienummer": state.declaratie.get("DeclaratieNummer"),
                "declaratie_dagtekening": state.declaratie.get("DeclaratieDagtekening"),
                "periode_begin": period.get("Begindatum"),
                "periode_eind": period.get("Einddatum"),
                "totaal_bedrag_centen": _int(totaal.get("TotaalBedrag")),
                "debet_credit": totaal.get("DebetCredit"),
                "totaal_bedrag": _euros(totaal.get("TotaalBedrag"), totaal.get("DebetCredit")),
            })
            return True
        elif name == "Prestatie" and number == "323":
            self._prestatie(element, base, state, emitter)
            return True
        elif name == "ToegewezenProduct" and number == "301":
            self._toegewezen_product(element, base, state, emitter)
            return True
        elif name in ("StartProduct", "StopProduct") and number in ("305", "307"):
            self._levering(element, name, base, state, emitter)
            return True
        elif name == "AangevraagdProduct" and number == "315":
            self._aangevraagd_product(element, base, state, emitter)
            return True
        elif name in ("OngewijzigdProduct", "TeWijzigenProduct", "NieuwProduct") and number == "317":
            self._verzoek_product(element, name, base, state, emitter)
            return True
        elif name == "Client":
            self._client(element, base, state, emitter)
            return True
        return False

    # --- one method per record kind (the element is small: product lists were released already)

    def _client(self, element, base, state, emitter) -> None:
        emitter.add("clienten", {
            **base,
            "bsn": state.client_bsn,
            "geboortedatum": _text(element.find("{*}Geboortedatum"), "Datum"),
            **_texts(element, geslacht="Geslacht", juridische_status="JuridischeStatus",
                     wettelijke_vertegenwoordiging="WettelijkeVertegenwoordiging",
                     gezagsdrager_bekend="GezagsdragerBekend"),
        })

    def _toegewezen_product(self, element, base, state, emitter) -> None:
        emitter.add("toewijzingen", {
            **base,
            "bsn": state.client_bsn,
            **_texts(element, toewijzingnummer="ToewijzingNummer", referentie_aanbieder="ReferentieAanbieder"),
            **_registered_product(element, state),
            **_texts(element, toewijzingsdatum="Toewijzingsdatum", toewijzingstijd="Toewijzingstijd",
                     ingangsdatum="Ingangsdatum", einddatum="Einddatum", reden_wijziging="RedenWijziging"),
            **_omvang(element),
            "budget": _int(_text(element, "Budget")),
            "commentaar": _text(element, "Commentaar"),
        })

    def _levering(self, element, name, base, state, emitter) -> None:
        emitter.add("leveringen", {
            **base,
            "bsn": state.client_bsn,
            "toewijzingnummer": _text(element, "ToewijzingNummer"),
            **_registered_product(element, state),
            "status": "gestart" if name == "StartProduct" else "gestopt",
            **_texts(element, toewijzing_ingangsdatum="ToewijzingIngangsdatum", begindatum="Begindatum",
                     einddatum="Einddatum", reden_beeindiging="RedenBeeindiging",
                     status_aanlevering="StatusAanlevering"),
        })

    def _aangevraagd_product(self, element, base, state, emitter) -> None:
        emitter.add("aanvragen", {
            **base,
            "bsn": state.client_bsn,
            **_texts(element, beschikkingnummer="BeschikkingNummer", beschikking_ingangsdatum="BeschikkingIngangsdatum",
                     referentie_aanbieder="ReferentieAanbieder"),
            **_registered_product(element, state),
            **_texts(element, toewijzing_ingangsdatum="ToewijzingIngangsdatum",
                     toewijzing_einddatum="ToewijzingEinddatum"),
            **_omvang(element),
            "verwijzer_type": _text(element.find("{*}Verwijzer"), "Type"),
            "raamcontract": _text(element, "Raamcontract"),
        })

    def _verzoek_product(self, element, name, base, state, emitter) -> None:
        verzoek = element.getparent().getparent() if element.getparent() is not None else None
        emitter.add("verzoeken", {
            **base,
            "bsn": state.client_bsn,
            "soort": {"OngewijzigdProduct": "ongewijzigd", "TeWijzigenProduct": "te_wijzigen", "NieuwProduct": "nieuw"}[name],
            **_texts(verzoek, referentie_aanbieder="ReferentieAanbieder", reden_verzoek="RedenVerzoek"),
            "toewijzingnummer": _text(element, "ToewijzingNummer"),
            **_registered_product(element, state),
            **_texts(element, gewenste_ingangsdatum="GewensteIngangsdatum", einddatum="Einddatum"),
            **_omvang(element),
        })

    def _prestatie(self, element, base, state, emitter) -> None:
        categorie, code = _text(element, "ProductCategorie"), _text(element, "ProductCode")
        product = {"productcategorie": categorie, "productcode": code}
        state.add_product(product)
        period = _children_text(element.find("{*}ProductPeriode"))
        bedrag = _children_text(element.find("{*}IngediendBedrag"))
        emitter.add("prestaties", {
            **base,
            "declaratienummer": state.declaratie.get("DeclaratieNummer"),
            "bsn": state.client_bsn,
            "referentienummer": _text(element.find("{*}ProductReferentie"), "ReferentieNummer"),
            "vorig_referentienummer": _text(element.find("{*}ProductReferentie"), "VorigReferentieNummer"),
            "toewijzingnummer": _text(element, "ToewijzingNummer"),
            **product,
            "periode_begin": period.get("Begindatum"),
            "periode_eind": period.get("Einddatum"),
            "geleverd_volume": _int(_text(element, "GeleverdVolume")),
            "eenheid": _text(element, "Eenheid"),
            "producttarief_centen": _int(_text(element, "ProductTarief")),
            "bedrag_centen": _int(bedrag.get("Bedrag")),
            "debet_credit": bedrag.get("DebetCredit"),
            "bedrag": _euros(bedrag.get("Bedrag"), bedrag.get("DebetCredit")),
        })


class IwmoConnector(IstandaardConnector):
    """iWmo 3.2 messages (Wmo 2015) from ``<dropzone>/iwmo/``."""

    name: ClassVar[str] = "iwmo"
    standard: ClassVar[Standard] = IWMO


class IjwConnector(IstandaardConnector):
    """iJw 3.2 messages (Jeugdwet) from ``<dropzone>/ijw/``."""

    name: ClassVar[str] = "ijw"
    standard: ClassVar[Standard] = IJW


# ---------------------------------------------------------------------- helpers


@dataclass
class _MessageState:
    client_bsn: str | None = None  # of the Client being read
    first_client_bsn: str | None = None
    client_count: int = 0
    declaratie: dict[str, Any] = field(default_factory=dict)
    retour: dict[str, str] = field(default_factory=dict)
    retourcodes: list[str] = field(default_factory=list)
    products: dict[tuple, dict[str, Any]] = field(default_factory=dict)

    def add_product(self, product: dict[str, Any]) -> None:
        key = (product.get("productcategorie"), product.get("productcode"))
        if any(key):
            self.products.setdefault(key, dict(product))


class _UnitEmitter:
    """Collects records into units of at most RECORDS_PER_UNIT records."""

    def __init__(self, identity: str | None, position: str) -> None:
        self.identity = identity
        self.position = position
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.count = 0
        self.total = 0
        self.units = 0

    def add(self, dataset: str, record: dict[str, Any]) -> None:
        self.records.setdefault(dataset, []).append(record)
        self.count += 1
        self.total += 1

    def _take(self) -> ParsedUnit:
        self.units += 1
        identity = self.identity if self.units == 1 or self.identity is None else f"{self.identity}#{self.units}"
        position = self.position if self.units == 1 else f"{self.position} part {self.units}"
        unit = ParsedUnit(position=position, records=self.records, identity=identity)
        self.records, self.count = {}, 0
        return unit

    def full_units(self) -> Iterator[ParsedUnit]:
        if self.count >= RECORDS_PER_UNIT:
            yield self._take()

    def last_units(self) -> Iterator[ParsedUnit]:
        if self.count or self.units == 0:
            yield self._take()


class _MandatoryDates:
    """The first record of a message that lacks a date :data:`MANDATORY_DATES` requires, or has one that is no date."""

    def __init__(self, message_name: str) -> None:
        self.message_name = message_name
        self.seen: Counter[str] = Counter()
        self.problems = 0
        self.first: tuple[str, str, str] | None = None  # (position, rule, message)

    def see(self, name: str, element) -> None:
        """Check one finished element named in MANDATORY_DATES (its children are still in the tree)."""
        self.seen[name] += 1
        for path in MANDATORY_DATES[name]:
            found = element.find("/".join(f"{{*}}{step}" for step in path.split("/")))
            text = (found.text or "").strip() if found is not None else ""
            if text and _is_xsd_date(text):
                continue
            self.problems += 1
            if self.first is None:
                self.first = self._describe(name, element, path, text)

    def problem(self) -> tuple[str, str, str] | None:
        """``(position, rule, message)`` of the first problem, counting the others; None when all dates are fine."""
        if self.first is None:
            return None
        position, rule, message = self.first
        if self.problems > 1:
            message += f" (and {self.problems - 1} more date problem(s) in this message)"
        return position, rule, message

    def _describe(self, name: str, element, path: str, text: str) -> tuple[str, str, str]:
        number = _text(element, "ToewijzingNummer") or _text(element, "DeclaratieNummer")
        record = f"{name} {self.seen[name]}" + (f" (nummer {number})" if number else "")
        position = f"line {element.sourceline} ({name} {self.seen[name]})"
        if not text:
            return position, "required_date_missing", f"{record} lacks {path}, which {self.message_name} requires"
        return position, "invalid_date", f"{record}: {path} {text[:40]!r} is not a date (YYYY-MM-DD)"


def _is_xsd_date(text: str) -> bool:
    """Whether ``text`` is an xs:date as the iStandaarden write it: ``YYYY-MM-DD``, a real calendar day."""
    if not _XSD_DATE.match(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _has_content(opener: _Opener) -> bool:
    with opener() as handle:
        while True:
            chunk = handle.read(65536)
            if not chunk:
                return False
            if chunk.strip(b" \t\r\n\x00\xef\xbb\xbf\xfe\xff"):
                return True


def _refuse_doctype_in_prolog(prolog: bytes) -> None:
    """Reject DTDs before any parser sees them (billion laughs, XXE): a message never has one."""
    for encoding in ("utf-8", "utf-16"):
        text = prolog.decode(encoding, errors="ignore")
        if "<!DOCTYPE" in text or "<!ENTITY" in text:
            _raise_for_dtd(text)


def _raise_for_dtd(text: str) -> None:
    if "<!ENTITY" in text:
        # The URL of an external entity is not repeated: it may name a secret file.
        if re.search(r"<!ENTITY[^>]*\b(SYSTEM|PUBLIC)\b", text):
            raise FileRejected("dtd_forbidden", "the file declares an external entity (XXE); DTDs are not allowed", "prolog")
        raise FileRejected("entity_expansion", "the file declares entities (entity expansion attack); DTDs are not allowed",
                           "prolog")
    raise FileRejected("dtd_forbidden", "the file has a DOCTYPE declaration; DTDs are not allowed", "prolog")


def _refuse_doctype(element) -> None:
    """Second line of defence: a DOCTYPE further down than the prolog sniff reached."""
    if element.getparent() is not None:
        return
    info = element.getroottree().docinfo
    dtd = info.internalDTD or info.externalDTD
    if dtd is None and not info.doctype and not info.system_url:
        return
    entities = list(dtd.iterentities()) if dtd is not None else []
    if any(e.system_url for e in entities) or info.system_url:
        raise FileRejected("dtd_forbidden", "the file refers to an external DTD or entity (XXE); DTDs are not allowed", "prolog")
    if entities:
        raise FileRejected("entity_expansion", "the file declares entities (entity expansion attack); DTDs are not allowed",
                           "prolog")
    raise FileRejected("dtd_forbidden", "the file has a DOCTYPE declaration; DTDs are not allowed", "prolog")


def _stream(opener: _Opener, names: frozenset[str]) -> Iterator[tuple[str, str, Any]]:
    """Yield ``(local name, parent's local name, element)`` at the end of every element named in ``names``.

    Only those elements reach Python (lxml filters the rest in C), and the repeating ones are
    freed once read. Raises :class:`FileRejected` (``not_well_formed``) for XML that is not
    well-formed. DTDs were refused before (:func:`_root_element`).
    """
    tags = sorted({f"{{*}}{n}" for n in names | _RELEASE_AFTER})
    line = 1
    with opener() as handle:
        try:
            for _event, element in etree.iterparse(handle, events=("end",), tag=tags, **_hardened_parse_options()):
                line = element.sourceline or line
                name = _local(element.tag)
                parent = element.getparent()
                yield name, (_local(parent.tag) if parent is not None else ""), element
                if name in _RELEASE_AFTER:
                    _release(element)
        except etree.XMLSyntaxError as exc:
            raise FileRejected("not_well_formed", f"not well-formed XML: {_first_error(exc)}",
                               f"line {_error_line(exc) or line}") from None


def _validate(opener: _Opener, schema: etree.XMLSchema) -> tuple[str, str] | None:
    """Stream a well-formed document through ``schema``; ``(position, message)`` of the first error or None."""
    with opener() as handle:
        try:
            tags = sorted(f"{{*}}{n}" for n in _RELEASE_AFTER)
            for _event, element in etree.iterparse(handle, events=("end",), tag=tags, schema=schema,
                                                   **_hardened_parse_options()):
                _release(element)
        except etree.XMLSyntaxError as exc:
            return _locate_schema_error(opener, schema) or ("(position not reported for large messages)", _first_error(exc))
    return None


def _root_element(opener: _Opener) -> tuple[str, str]:
    with opener() as handle:
        try:
            for _event, element in etree.iterparse(handle, events=("start",), **_hardened_parse_options()):
                _refuse_doctype(element)
                return _namespace(element.tag), _local(element.tag)
        except etree.XMLSyntaxError as exc:
            raise FileRejected("not_well_formed", f"not well-formed XML: {_first_error(exc)}",
                               f"line {_error_line(exc) or 1}") from None
    raise FileRejected("not_well_formed", "the file has no root element", "line 1")


def _unwrap_envelope(opener: _Opener) -> tuple[bytes, dict[str, Any]]:
    """The base64 payload of a StUF-GGk envelope and the envelope's routing data."""
    meta: dict[str, Any] = {}
    payload: bytes | None = None
    with opener() as handle:
        try:
            for _event, element in etree.iterparse(handle, events=("end",), **_hardened_parse_options()):
                name, ns = _local(element.tag), _namespace(element.tag)
                if ns == STUF_NAMESPACE and name in ("berichtcode", "functie", "referentienummer", "crossRefnummer",
                                                     "tijdstipBericht"):
                    meta[name.lower()] = (element.text or "").strip()
                elif ns == STUF_NAMESPACE and name == "organisatie":
                    parent = _local(element.getparent().tag) if element.getparent() is not None else ""
                    meta[f"{parent.lower()}_organisatie"] = (element.text or "").strip()
                elif ns == GGK_NAMESPACE and name == "bericht":
                    if payload is not None:
                        raise FileRejected("envelope_invalid", "the envelope carries more than one bericht", "GGK:bericht")
                    meta["bestandsnaam"] = element.get(f"{{{STUF_NAMESPACE}}}bestandsnaam")
                    try:
                        payload = base64.b64decode("".join((element.text or "").split()), validate=True)
                    except (binascii.Error, ValueError):
                        raise FileRejected("envelope_invalid", "GGK:bericht is not valid base64",
                                           f"line {element.sourceline}") from None
                    element.clear()
        except etree.XMLSyntaxError as exc:
            raise FileRejected("not_well_formed", f"not well-formed XML: {_first_error(exc)}",
                               f"line {_error_line(exc) or 1}") from None
    if payload is None:
        raise FileRejected("envelope_invalid", "the StUF-GGk envelope has no GGK:bericht", "GGK:parameters")
    return payload, meta


def _release(element) -> None:
    """Free a finished element and the siblings before it (bounded memory while streaming)."""
    element.clear(keep_tail=True)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


#: Up to this size a message that failed streaming validation is validated again as a tree, which
#: names the exact line and element path (streaming validation reports neither reliably).
_LOCATE_ERRORS_UP_TO_BYTES = 8 * 1024 * 1024


def _locate_schema_error(opener: _Opener, schema: etree.XMLSchema) -> tuple[str, str] | None:
    """``("line N (/Bericht/Client/Geslacht)", message)`` of the first XSD error, or None for big messages."""
    with opener() as handle:
        data = handle.read(_LOCATE_ERRORS_UP_TO_BYTES + 1)
    if len(data) > _LOCATE_ERRORS_UP_TO_BYTES:
        return None
    tree = etree.ElementTree(etree.fromstring(data, etree.XMLParser(**_hardened_parse_options())))
    if schema.validate(tree):
        return None
    error = schema.error_log[0]
    path = re.sub(r"\{[^}]*\}|[a-zA-Z0-9_]+:(?=[A-Za-z])", "", error.path or "")
    return f"line {error.line}" + (f" ({path})" if path else ""), error.message[:500]


def _first_error(exc: etree.XMLSyntaxError) -> str:
    entries = [e for e in exc.error_log if e.level_name in ("ERROR", "FATAL")]
    message = entries[0].message if entries else str(exc)
    return message[:500]


def _error_line(exc: etree.XMLSyntaxError) -> int | None:
    entries = [e for e in exc.error_log if e.level_name in ("ERROR", "FATAL") and e.line]
    return entries[0].line if entries else (exc.lineno or None)


def _bericht_position(header: _Header) -> str:
    ident = header.identification
    return f"bericht 1 (BerichtIdentificatie {ident})" if ident else "bericht 1"


def _text(element, child: str) -> str | None:
    if element is None:
        return None
    found = element.find(f"{{*}}{child}")
    if found is None or found.text is None:
        return None
    value = found.text.strip()
    return value or None


def _children_text(element) -> dict[str, str]:
    if element is None:
        return {}
    return {_local(c.tag): c.text.strip() for c in element if isinstance(c.tag, str) and c.text and c.text.strip()}


def _texts(element, **columns: str) -> dict[str, str | None]:
    """The text of ``element``'s children, keyed by record column: ``column="ChildElement"``."""
    return {column: _text(element, child) for column, child in columns.items()}


def _registered_product(element, state) -> dict[str, Any]:
    """The element's ``Product`` (categorie, code), also recorded in the message's product list."""
    product = _product(element.find("{*}Product"))
    state.add_product(product)
    return product


def _omvang(element) -> dict[str, Any]:
    """The ``Omvang`` of a toewijzing, aanvraag or verzoek: volume, eenheid and frequentie."""
    omvang = _children_text(element.find("{*}Omvang"))
    return {"volume": _int(omvang.get("Volume")), "eenheid": omvang.get("Eenheid"), "frequentie": omvang.get("Frequentie")}


def _product(element) -> dict[str, Any]:
    values = _children_text(element)
    return {"productcategorie": values.get("Categorie"), "productcode": values.get("Code")}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _euros(cents: str | None, debet_credit: str | None) -> str | None:
    """An iStandaarden amount (whole eurocents plus D/C) as a signed decimal string in euros."""
    amount = _int(cents)
    if amount is None:
        return None
    sign = "-" if debet_credit == "C" and amount else ""
    return f"{sign}{amount // 100}.{amount % 100:02d}"
