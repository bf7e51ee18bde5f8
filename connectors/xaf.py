"""XML Auditfile Financieel 3.2 (XAF) from the municipality's financial system.

The financial administration re-exports the audit file of the current fiscal year every
day into ``<dropzone>/xaf/`` (``auditfile_<YYYY>_<YYYYMMDD>.xaf``). The connector streams
it with :func:`lxml.etree.iterparse`, clearing every element once it is read, so memory
stays bounded by one transaction (plus the chart of accounts, the relation ids and the
small per-file aggregates) however large the file is.

Datasets (bronze ``xaf_<dataset>``):

* ``header`` - fiscal year, period, company, software and creation date of the file;
* ``grootboek`` - the ledger accounts (``generalLedger/ledgerAccount``);
* ``relaties`` - customers and suppliers (``customersSuppliers/customerSupplier``);
* ``kostenplaatsen`` - cost centres: ``generalLedger/basics/basic`` of basicType ``02``
  plus every ``costID`` booked on a line without such a description;
* ``subrekeningen`` - every (ledger account, cost centre) combination booked;
* ``mutaties`` - one record per ``trLine`` with its journal, transaction and line number,
  the amount as an exact decimal string, D/C, dates, references and the IV3 taakveld;
* ``facturen``/``factuurregels`` - purchase (journal type ``P``) and sales (``S``)
  transactions that carry an ``invRef``: the invoice and its expense/revenue lines;
* ``taakvelden`` - the IV3 taakvelden list the taakveld enrichment used;
* ``kostenplaats_taakvelden`` - every (cost centre, taakveld) pair booked;
* ``taakveld_ontbreekt`` - per file and (account, cost centre) the number of lines and
  the amount booked on a profit-and-loss account that the municipality's mapping does not
  assign to a taakveld. Those lines still land, with an empty taakveld.

Checks (rules of :class:`~connectors.dropzone.Rejection` / :class:`~connectors.dropzone.FileRejected`):

* ``not_well_formed`` (file): XML syntax errors, and a file that ends before ``</auditfile>``
  (truncated transfer);
* ``dtd_not_allowed`` (file): any DOCTYPE; XAF has none, and one is the carrier of
  entity-expansion and external-entity attacks (entities are never resolved either);
* ``unknown_namespace_or_version`` (file): a root other than ``{http://www.auditfiles.nl/XAF/3.2}auditfile``;
* ``xsd_invalid`` (file): when config ``xsd_path`` is set, the file is validated against that
  schema *during* the same streaming pass (libxml2 validates on the SAX events, so no tree is
  kept). libxml2 reports the violation at the end of the stream without a usable element
  position, so it cannot be pinned to a transaction: the whole file is rejected;
* ``unbalanced_transaction`` (transaction): the debit lines of a transaction do not add
  up to its credit lines (``decimal.Decimal``, no rounding);
* ``unknown_account`` (transaction): a ``trLine/accID`` that is not in the ``generalLedger``;
* ``bad_decimal`` (transaction): an amount that is not a decimal number (only reachable
  without XSD validation);
* ``duplicate_transaction`` (transaction): the same journal and transaction number twice in one file.

The taakveld of a line comes from the municipality's mapping CSV (config ``taakveld_mapping``,
default ``config/taakvelden.csv`` of the checkout) with columns ``grootboekrekening``,
``kostenplaats``, ``taakveld``: a row with both wins over a row with only the cost centre,
which wins over a row with only the account. Taakveld names come from ``iv3_taakvelden``
(default ``config/iv3_taakvelden.csv``, the BBV/Iv3 list of taakvelden).
"""
from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

from lxml import etree

from connectors.base import ExtractWindow
from connectors.dropzone import DropzoneConnector, FileRejected, ParsedUnit, Rejection, dropzone_config_schema
from connectors.errors import SourceConfigError
from ggm_lakehouse.config import project_root
from ggm_lakehouse.landing import BatchResult

log = logging.getLogger(__name__)

XAF_NAMESPACE = "http://www.auditfiles.nl/XAF/3.2"
_NS = "{" + XAF_NAMESPACE + "}"
COST_CENTRE_BASIC_TYPE = "02"  # XAF 3.2 basics: 02 = kostenplaats (03 kostendrager, 04 project, ...)
INVOICE_JOURNAL_TYPES = {"P": "inkoop", "S": "verkoop"}
PROFIT_AND_LOSS = "P"  # accTp: B = balans, P = winst-en-verlies (baten en lasten)
_CENT = Decimal("0.01")


def default_taakveld_mapping() -> Path:
    """The project's mapping of grootboekrekening/kostenplaats to IV3 taakveld."""
    return project_root() / "config" / "taakvelden.csv"


def default_iv3_taakvelden() -> Path:
    """The IV3 taakvelden list (code, name, hoofdtaakveld) shipped with the project."""
    return project_root() / "config" / "iv3_taakvelden.csv"


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _child_texts(element: etree._Element) -> dict[str, str]:
    """Direct simple children of ``element`` by local name (first occurrence; stripped text)."""
    values: dict[str, str] = {}
    for child in element:
        name = _local(child.tag)
        if name and len(child) == 0 and name not in values:
            values[name] = (child.text or "").strip()
    return values


def _release(element: etree._Element) -> None:
    """Drop a processed element and its already-processed siblings so the tree never grows."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


@dataclass(frozen=True)
class TaakveldMapping:
    """The municipality's grootboekrekening/kostenplaats → IV3 taakveld table."""

    by_account_and_cost: dict[tuple[str, str], str]
    by_cost: dict[str, str]
    by_account: dict[str, str]
    names: dict[str, str]
    taakvelden: tuple[dict[str, str], ...]

    @classmethod
    def load(cls, mapping_csv: Path, iv3_csv: Path) -> "TaakveldMapping":
        """Read and cross-check both CSVs; an unknown taakveld code or an empty row is a config error."""
        taakvelden = []
        with Path(iv3_csv).open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                taakvelden.append({
                    "taakveld": row["taakveld"].strip(),
                    "naam": row["naam"].strip(),
                    "hoofdtaakveld": row["hoofdtaakveld"].strip(),
                    "hoofdtaakveld_naam": row["hoofdtaakveld_naam"].strip(),
                })
        names = {t["taakveld"]: t["naam"] for t in taakvelden}
        both: dict[tuple[str, str], str] = {}
        cost: dict[str, str] = {}
        account: dict[str, str] = {}
        with Path(mapping_csv).open(encoding="utf-8", newline="") as handle:
            # Row 1 is the header, so data rows start at line 2.
            for line, row in enumerate(csv.DictReader(handle), start=2):
                rekening = (row.get("grootboekrekening") or "").strip()
                kostenplaats = (row.get("kostenplaats") or "").strip()
                taakveld = (row.get("taakveld") or "").strip()
                if taakveld not in names:
                    raise SourceConfigError("xaf", f"{mapping_csv} line {line}: taakveld {taakveld!r} is not in {iv3_csv}")
                if rekening and kostenplaats:
                    target, key = both, (rekening, kostenplaats)
                elif kostenplaats:
                    target, key = cost, kostenplaats
                elif rekening:
                    target, key = account, rekening
                else:
                    raise SourceConfigError("xaf", f"{mapping_csv} line {line}: needs a grootboekrekening and/or kostenplaats")
                if key in target and target[key] != taakveld:
                    raise SourceConfigError("xaf", f"{mapping_csv} line {line}: {key} is mapped twice")
                target[key] = taakveld
        return cls(both, cost, account, names, tuple(taakvelden))

    def resolve(self, rekening: str, kostenplaats: str | None) -> str | None:
        """The taakveld of a line: account+cost centre, else cost centre, else account; None if unmapped."""
        if kostenplaats:
            found = self.by_account_and_cost.get((rekening, kostenplaats)) or self.by_cost.get(kostenplaats)
            if found:
                return found
        return self.by_account.get(rekening)


class XafConnector(DropzoneConnector):
    """Drop-zone connector for XML Auditfile Financieel 3.2; see the module docstring."""

    name: ClassVar[str] = "xaf"
    # Every export is the whole year to date: of two exports in one run (a missed day), only the newest lands.
    supersede_older_deliveries: ClassVar[bool] = True
    datasets: ClassVar[tuple[str, ...]] = (
        "facturen",
        "factuurregels",
        "grootboek",
        "header",
        "kostenplaats_taakvelden",
        "kostenplaatsen",
        "mutaties",
        "relaties",
        "subrekeningen",
        "taakveld_ontbreekt",
        "taakvelden",
    )
    file_patterns: ClassVar[tuple[str, ...]] = ("*.xaf", "*.xml")
    config_schema: ClassVar[dict[str, Any]] = dropzone_config_schema({
        "xsd_path": {"type": "string", "minLength": 1,
                     "description": "XmlAuditfileFinancieel3.2.xsd; when set every file is validated while streaming."},
        "taakveld_mapping": {"type": "string", "minLength": 1,
                             "description": "CSV grootboekrekening,kostenplaats,taakveld (default config/taakvelden.csv)."},
        "iv3_taakvelden": {"type": "string", "minLength": 1,
                           "description": "CSV of the IV3 taakvelden (default config/iv3_taakvelden.csv)."},
    })

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.taakveld_mapping = TaakveldMapping.load(
            Path(self.config.get("taakveld_mapping") or default_taakveld_mapping()),
            Path(self.config.get("iv3_taakvelden") or default_iv3_taakvelden()),
        )
        xsd_path = self.config.get("xsd_path")
        self._schema: etree.XMLSchema | None = None
        if xsd_path:
            # The schema itself is trusted configuration, but parse it hardened all the same.
            schema_parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
            self._schema = etree.XMLSchema(etree.parse(str(xsd_path), schema_parser))
        #: Lines on profit-and-loss accounts without a taakveld, per file name and account.
        self.unmapped_accounts: dict[str, Counter[str]] = {}

    def report_extra(self) -> dict[str, Any]:
        """Connector-specific report fields: unmapped accounts per file (lines per grootboekrekening)."""
        return {"unmapped_accounts": {name: dict(sorted(counts.items())) for name, counts in self.unmapped_accounts.items()
                                      if counts}}

    def extract(self, window: ExtractWindow, landing_root: Path) -> list[BatchResult]:
        """The framework's extract; ``last_report`` additionally holds ``unmapped_accounts`` of the landed files.

        ``unmapped_accounts`` maps each accepted file to {grootboekrekening: number of lines without a taakveld};
        the same facts, with amounts and cost centres, land as dataset ``taakveld_ontbreekt``.
        """
        self.unmapped_accounts = {}
        batches = super().extract(window, landing_root)
        report = self.last_report
        if report is not None:
            rejected = {entry["file"] for entry in report.get("files_rejected", [])}
            for name in rejected:
                self.unmapped_accounts.pop(name, None)
            report.update(self.report_extra())
            unmapped = sum(sum(c.values()) for c in self.unmapped_accounts.values())
            if unmapped:
                log.warning("xaf %s: %d line(s) on baten/lasten accounts without a taakveld: %s",
                            window.logical_date, unmapped, report["unmapped_accounts"])
        return batches

    # -- parsing

    def parse_file(self, path: Path) -> Iterator[ParsedUnit | Rejection]:
        """Stream one audit file; see the module docstring for datasets and rules."""
        path = Path(path)
        state = _FileState(path.name)
        self.unmapped_accounts[path.name] = state.unmapped_lines
        context = etree.iterparse(
            str(path),
            events=("start", "end"),
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            schema=self._schema,
        )
        root_closed = False
        # libxml2 keeps one error log per thread; start this file with an empty one.
        etree.clear_error_log()
        try:
            for event, element in context:
                if event == "start":
                    if element.getparent() is None:
                        self._check_root(element)
                    elif _local(element.tag) == "journal":
                        state.journal = {}
                    continue
                name = _local(element.tag)
                parent = element.getparent()
                if parent is None:
                    root_closed = True
                    continue
                parent_name = _local(parent.tag)
                if name == "header" and parent_name == "auditfile":
                    state.header = _child_texts(element)
                    _release(element)
                elif name in ("companyIdent", "companyName", "taxRegIdent") and parent_name == "company":
                    state.company[name] = (element.text or "").strip()
                elif name == "customerSupplier" and parent_name == "customersSuppliers":
                    yield self._relation(state, element)
                    _release(element)
                elif name == "ledgerAccount" and parent_name == "generalLedger":
                    yield self._ledger_account(state, element)
                    _release(element)
                elif name == "basic" and parent_name == "basics":
                    self._basic(state, element)
                    _release(element)
                elif parent_name == "journal" and len(element) == 0:
                    # jrnID, desc, jrnTp...: kept aside because releasing a transaction drops its earlier siblings.
                    state.journal.setdefault(name, (element.text or "").strip())
                elif name == "journal" and parent_name == "transactions":
                    _release(element)
                elif name == "transaction" and parent_name == "journal":
                    yield self._transaction(state, element)
                    _release(element)
                elif name == "vatCode" and parent_name == "vatCodes":
                    vat_code = _child_texts(element)
                    state.vat_accounts.update(
                        a for a in (vat_code.get("vatToPayAccID"), vat_code.get("vatToClaimAccID")) if a)
                    _release(element)
                elif name in ("sbLine", "obLine", "obSbLine", "subledgers", "openingBalance"):
                    # Subledger lines repeat the transactions' lines and the opening balance is not a mutation:
                    # dropped line by line so that a large subledger does not pile up in memory either.
                    _release(element)
        except etree.XMLSyntaxError as exc:
            if self._schema is not None and not list(exc.error_log or ()):
                # With a schema attached libxml2 may drop the syntax error's details; find it in a plain pass.
                raise self._locate_syntax_error(path) from None
            raise self._syntax_rejection(exc) from None
        if not root_closed:
            raise FileRejected("not_well_formed", "the file ends before </auditfile> (truncated?)")
        if state.header is None:
            raise FileRejected("xsd_invalid", "the audit file has no header")
        yield self._closing_unit(state)

    def _check_root(self, root: etree._Element) -> None:
        docinfo = root.getroottree().docinfo
        if docinfo.doctype or docinfo.internalDTD is not None:
            raise FileRejected("dtd_not_allowed", "an audit file must not carry a DOCTYPE (entity declarations are refused)",
                               "line 1")
        if root.tag != _NS + "auditfile":
            raise FileRejected(
                "unknown_namespace_or_version",
                f"root element is {root.tag!r}; expected {{{XAF_NAMESPACE}}}auditfile (XAF 3.2)",
                f"line {root.sourceline}",
            )

    def _locate_syntax_error(self, path: Path) -> FileRejected:
        """Stream the file again without the schema to name the first syntax error and its line."""
        etree.clear_error_log()
        try:
            for _, element in etree.iterparse(str(path), events=("end",), resolve_entities=False, no_network=True,
                                              load_dtd=False, huge_tree=False):
                _release(element)
        except etree.XMLSyntaxError as exc:
            return self._syntax_rejection(exc)
        return FileRejected("xsd_invalid", "the file does not conform to the XAF 3.2 schema")

    @staticmethod
    def _syntax_rejection(exc: etree.XMLSyntaxError) -> FileRejected:
        """Classify a libxml2 error: the first syntax error wins over schema errors, which libxml2 reports late."""
        entries = list(exc.error_log or ())
        syntax = next((e for e in entries if e.domain != etree.ErrorDomains.SCHEMASV and e.level_name != "WARNING"), None)
        schema = next((e for e in entries if e.domain == etree.ErrorDomains.SCHEMASV), None)
        if syntax is not None:
            message, line, rule = syntax.message, syntax.line, "not_well_formed"
            if "entity" in message.lower():
                # libxml2 stops an expansion (e.g. in the root's attributes) before the DOCTYPE check runs.
                rule = "dtd_not_allowed"
                message = f"entities are refused (an audit file has no DOCTYPE; entity expansion attack?): {message}"
        elif schema is not None:
            message, line, rule = schema.message, schema.line, "xsd_invalid"
        else:
            message, line, rule = str(exc.msg or exc), exc.lineno, "not_well_formed"
        return FileRejected(rule, message, f"line {line}" if line else None)

    # -- master data

    def _relation(self, state: "_FileState", element: etree._Element) -> ParsedUnit:
        values = _child_texts(element)
        address = element.find(_NS + "streetAddress")
        city = _child_texts(address).get("city") if address is not None else None
        relatie = values.get("custSupID", "")
        state.relation_kvk[relatie] = values.get("commerceNr") or None
        record = {
            "boekjaar": state.fiscal_year,
            "relatie": relatie,
            "naam": values.get("custSupName"),
            "kvk_nummer": values.get("commerceNr") or None,
            "btw_nummer": values.get("taxRegIdent") or None,
            "soort": values.get("custSupTp") or None,
            "relatie_nummer": values.get("relationshipID") or None,
            "plaats": city,
            "bronbestand": state.file_name,
        }
        return ParsedUnit(position=f"customerSupplier {relatie}", records={"relaties": [record]})

    def _ledger_account(self, state: "_FileState", element: etree._Element) -> ParsedUnit:
        values = _child_texts(element)
        rekening = values.get("accID", "")
        state.accounts[rekening] = (values.get("accTp") or "", values.get("accDesc") or "")
        record = {
            "boekjaar": state.fiscal_year,
            "rekening": rekening,
            "omschrijving": values.get("accDesc"),
            "soort": values.get("accTp"),
            "rubriek_code": values.get("leadCode") or None,
            "rubriek_omschrijving": values.get("leadDescription") or None,
            "rubriek_verwijzing": values.get("leadReference") or None,
            "bronbestand": state.file_name,
        }
        return ParsedUnit(position=f"ledgerAccount {rekening}", records={"grootboek": [record]})

    def _basic(self, state: "_FileState", element: etree._Element) -> None:
        values = _child_texts(element)
        if values.get("basicType") == COST_CENTRE_BASIC_TYPE and values.get("basicID"):
            state.cost_centres[values["basicID"]] = values.get("basicDesc") or None

    # -- transactions

    def _transaction(self, state: "_FileState", element: etree._Element) -> ParsedUnit | Rejection:
        journal_values = state.journal
        jrn = journal_values.get("jrnID", "")
        values = _child_texts(element)
        nr = values.get("nr", "")
        position = f"journal {jrn} transaction {nr}"
        # One short string per transaction: the only state that grows with the number of transactions.
        identity_in_file = f"{jrn}\x00{nr}"
        if identity_in_file in state.seen_transactions:
            return Rejection(state.file_name, position, "duplicate_transaction",
                             "this journal and transaction number occur earlier in the same file")
        state.seen_transactions.add(identity_in_file)
        lines = self._balanced_lines(state, element, position)
        if isinstance(lines, Rejection):
            return lines
        mutaties = [self._mutation(state, values, nr, line, self._taakveld(state, line)) for line in lines]
        records: dict[str, list[dict[str, Any]]] = {"mutaties": mutaties}
        invoice_kind = INVOICE_JOURNAL_TYPES.get(journal_values.get("jrnTp", ""))
        if invoice_kind:
            invoice = self._invoice(state, invoice_kind, jrn, nr, values, lines)
            if invoice is not None:
                records["facturen"], records["factuurregels"] = invoice
        return ParsedUnit(position=position, records=records)

    def _balanced_lines(self, state: "_FileState", element: etree._Element,
                        position: str) -> list[dict[str, Any]] | Rejection:
        """The transaction's checked lines (:meth:`_transaction_line`), or why it is rejected.

        A transaction whose debit lines do not add up to its credit lines is rejected whole.
        """
        lines = []
        debit = credit = Decimal(0)
        for line_element in element.iterfind(_NS + "trLine"):
            line = self._transaction_line(state, line_element, position)
            if isinstance(line, Rejection):
                return line
            if line["amntTp"] == "D":
                debit += line["_amount"]
            else:
                credit += line["_amount"]
            lines.append(line)
        if debit != credit:
            return Rejection(state.file_name, position, "unbalanced_transaction",
                             f"debit {debit} does not equal credit {credit} (difference {debit - credit})")
        return lines

    @staticmethod
    def _transaction_line(state: "_FileState", line_element: etree._Element,
                          position: str) -> dict[str, Any] | Rejection:
        """One ``trLine`` as its child texts plus ``_amount`` (Decimal) and ``_vat``, or why it is rejected.

        The amount must be a finite decimal, ``amntTp`` D or C and the account one of the generalLedger.
        """
        line = _child_texts(line_element)
        where = f"{position} line {line.get('nr')}"
        try:
            amount = Decimal(line.get("amnt", ""))
        except InvalidOperation:
            return Rejection(state.file_name, where, "bad_decimal",
                             f"amount {line.get('amnt')!r} is not a decimal number")
        if not amount.is_finite():
            return Rejection(state.file_name, where, "bad_decimal",
                             f"amount {line.get('amnt')!r} is not a finite number")
        side = line.get("amntTp")
        if side not in ("D", "C"):
            return Rejection(state.file_name, where, "bad_debit_credit",
                             f"amntTp {side!r} is neither D nor C")
        if line.get("accID") not in state.accounts:
            return Rejection(state.file_name, where, "unknown_account",
                             f"account {line.get('accID')!r} is not in the generalLedger")
        vat = line_element.find(_NS + "vat")
        line["_vat"] = _child_texts(vat) if vat is not None else {}
        line["_amount"] = amount
        return line

    def _taakveld(self, state: "_FileState", line: dict[str, Any]) -> str | None:
        """The IV3 taakveld of a line; notes its cost centre, and a profit-and-loss line no taakveld maps."""
        rekening = line["accID"]
        kostenplaats = line.get("costID") or None
        taakveld = self.taakveld_mapping.resolve(rekening, kostenplaats)
        if kostenplaats:
            state.cost_centres.setdefault(kostenplaats, None)
            state.account_costs.add((rekening, kostenplaats))
            if taakveld:
                state.cost_taakvelden.add((kostenplaats, taakveld))
        if taakveld is None and state.accounts[rekening][0] == PROFIT_AND_LOSS:
            state.unmapped_lines[rekening] += 1
            key = (rekening, kostenplaats or "")
            count, total = state.unmapped.get(key, (0, Decimal(0)))
            signed = line["_amount"] if line["amntTp"] == "D" else -line["_amount"]
            state.unmapped[key] = (count + 1, total + signed)
        return taakveld

    def _mutation(self, state: "_FileState", values: dict[str, str], nr: str, line: dict[str, Any],
                  taakveld: str | None) -> dict[str, Any]:
        """The ``mutaties`` record of one checked transaction line."""
        journal_values = state.journal
        rekening = line["accID"]
        account_type, account_desc = state.accounts[rekening]
        return {
            "boekjaar": state.fiscal_year,
            "dagboek": journal_values.get("jrnID", ""),
            "dagboek_omschrijving": journal_values.get("desc"),
            "dagboek_soort": journal_values.get("jrnTp") or None,
            "boekstuk": nr,
            "transactie_omschrijving": values.get("desc") or None,
            "periode": values.get("periodNumber"),
            "transactiedatum": values.get("trDt"),
            "regel": line.get("nr"),
            "rekening": rekening,
            "rekening_omschrijving": account_desc,
            "rekening_soort": account_type,
            "documentverwijzing": line.get("docRef"),
            "boekdatum": line.get("effDate"),
            "omschrijving": line.get("desc") or None,
            # Exact decimal text: JSON floats would round cents.
            "bedrag": str(line["_amount"].quantize(_CENT)),
            "debet_credit": line["amntTp"],
            "relatie": line.get("custSupID") or None,
            "factuurnummer": line.get("invRef") or None,
            "kostenplaats": line.get("costID") or None,
            "product": line.get("prodID") or None,
            "project": line.get("projID") or None,
            "btw_code": line["_vat"].get("vatID"),
            "btw_percentage": line["_vat"].get("vatPerc"),
            "btw_bedrag": line["_vat"].get("vatAmnt"),
            "taakveld": taakveld,
            "taakveld_naam": self.taakveld_mapping.names.get(taakveld) if taakveld else None,
            "bronbestand": state.file_name,
        }

    def _invoice(self, state: "_FileState", kind: str, jrn: str, nr: str, values: dict[str, str],
                 lines: list[dict[str, Any]]) -> tuple[list[dict], list[dict]] | None:
        """Invoice and invoice lines of a purchase/sales transaction, or None when it has no ``invRef``.

        The line carrying ``invRef`` is the creditor/debtor line; the lines on VAT accounts carry
        the VAT; every other line is an invoice line (expense for purchases, revenue for sales).
        """
        counter = next((line for line in lines if line.get("invRef")), None)
        if counter is None:
            return None
        relatie = counter.get("custSupID") or None
        factuurnummer = counter["invRef"]
        # A purchase line is normally debit, a sales line credit; the other side is a credit note.
        regular_side = "D" if kind == "inkoop" else "C"
        excl = vat_total = Decimal(0)
        regels = []
        for line in lines:
            if line is counter:
                continue
            signed = line["_amount"] if line["amntTp"] == regular_side else -line["_amount"]
            if line["accID"] in state.vat_accounts:
                vat_total += signed
                continue
            excl += signed
            vat_amount = line["_vat"].get("vatAmnt")
            regels.append({
                "boekjaar": state.fiscal_year,
                "dagboek": jrn,
                "boekstuk": nr,
                "regel": line.get("nr"),
                "relatie": relatie,
                "factuurnummer": factuurnummer,
                "omschrijving": line.get("desc") or None,
                "rekening": line["accID"],
                "kostenplaats": line.get("costID") or None,
                "bedrag_excl_btw": str(signed.quantize(_CENT)),
                "btw_bedrag": vat_amount,
                "btw_percentage": line["_vat"].get("vatPerc"),
                "bronbestand": state.file_name,
            })
        first_cost = next((r["kostenplaats"] for r in regels if r["kostenplaats"]), None)
        factuur = {
            "boekjaar": state.fiscal_year,
            "dagboek": jrn,
            "boekstuk": nr,
            "soort": kind,
            "relatie": relatie,
            "relatie_kvk_nummer": state.relation_kvk.get(relatie or ""),
            "factuurnummer": factuurnummer,
            "factuurdatum": values.get("trDt"),
            "omschrijving": counter.get("desc") or values.get("desc") or None,
            "bedrag_excl_btw": str(excl.quantize(_CENT)),
            "bedrag_btw": str(vat_total.quantize(_CENT)),
            "kostenplaats": first_cost,
            "bronbestand": state.file_name,
        }
        return [factuur], regels

    def _closing_unit(self, state: "_FileState") -> ParsedUnit:
        header = state.header or {}
        header_record = {
            "boekjaar": header.get("fiscalYear"),
            "startdatum": header.get("startDate"),
            "einddatum": header.get("endDate"),
            "valuta": header.get("curCode"),
            "aanmaakdatum": header.get("dateCreated"),
            "software": header.get("softwareDesc"),
            "softwareversie": header.get("softwareVersion"),
            "administratie": state.company.get("companyIdent"),
            "administratie_naam": state.company.get("companyName"),
            "fiscaal_nummer": state.company.get("taxRegIdent"),
            "bronbestand": state.file_name,
        }
        names = self.taakveld_mapping.names
        return ParsedUnit(
            position="end of file",
            records={
                "header": [header_record],
                "kostenplaatsen": [
                    {"kostenplaats": code, "omschrijving": desc, "bronbestand": state.file_name}
                    for code, desc in sorted(state.cost_centres.items())
                ],
                "subrekeningen": [
                    {"rekening": rekening, "rekening_omschrijving": state.accounts[rekening][1],
                     "kostenplaats": kostenplaats, "bronbestand": state.file_name}
                    for rekening, kostenplaats in sorted(state.account_costs)
                ],
                "kostenplaats_taakvelden": [
                    {"kostenplaats": kostenplaats, "taakveld": taakveld, "taakveld_naam": names.get(taakveld),
                     "bronbestand": state.file_name}
                    for kostenplaats, taakveld in sorted(state.cost_taakvelden)
                ],
                "taakvelden": [dict(t) for t in self.taakveld_mapping.taakvelden],
                "taakveld_ontbreekt": [
                    {"bronbestand": state.file_name, "boekjaar": state.fiscal_year, "rekening": rekening,
                     "rekening_omschrijving": state.accounts[rekening][1], "kostenplaats": kostenplaats or None,
                     "regels": count, "bedrag_saldo": str(total.quantize(_CENT))}
                    for (rekening, kostenplaats), (count, total) in sorted(state.unmapped.items())
                ],
            },
        )


class _FileState:
    """What one file's stream needs to remember: master data (small) and per-file aggregates."""

    def __init__(self, file_name: str) -> None:
        self.file_name = file_name
        self.header: dict[str, str] | None = None
        self.company: dict[str, str] = {}
        self.accounts: dict[str, tuple[str, str]] = {}  # accID -> (accTp, accDesc)
        self.relation_kvk: dict[str, str | None] = {}
        self.cost_centres: dict[str, str | None] = {}
        self.account_costs: set[tuple[str, str]] = set()
        self.cost_taakvelden: set[tuple[str, str]] = set()
        self.seen_transactions: set[str] = set()
        self.unmapped: dict[tuple[str, str], tuple[int, Decimal]] = {}
        self.unmapped_lines: Counter[str] = Counter()
        self.vat_accounts: set[str] = set()
        self.journal: dict[str, str] = {}

    @property
    def fiscal_year(self) -> str | None:
        return self.header.get("fiscalYear") if self.header else None
