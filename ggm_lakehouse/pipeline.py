"""The steps of the daily pipeline that are not Spark jobs, as plain functions.

Airflow tasks call these (the DAG files only wire them); the CLI and the tests
call them too. Spark stages live in ``jobs/`` and are started through
``ggm_lakehouse.spark_target``.
"""
from __future__ import annotations

import logging
from datetime import date
from typing import Any, Mapping

from ggm_lakehouse.config import has_commits
from ggm_lakehouse.config import landing_root
from ggm_lakehouse.lineage import shared_recipients
from ggm_lakehouse.model.mappings import person_bronze_tables
from ggm_lakehouse.model.sources import SOURCES as SOURCE_SPECS
from ggm_lakehouse.processing_log import processing_operation, record_landed_batches, record_published_share
from ggm_lakehouse.reports import read_reports, write_report

log = logging.getLogger(__name__)

# Sources of the daily pipeline and the Airflow connection each one reads its endpoint and secret from.
SOURCES = {name: spec.conn_id for name, spec in SOURCE_SPECS.items()}


def connection_fields(conn_id: str):
    """The fields of Airflow connection ``conn_id`` as connectors take them, or None when it is not configured.

    The one place that turns Airflow's connection model into :class:`connectors.base.ConnectionFields`,
    so connectors never import Airflow (as providers keep hooks apart from what they call).
    """
    from connectors.base import ConnectionFields
    from connectors.errors import SourceConfigError
    from ggm_lakehouse.secrets import get_connection

    conn = get_connection(conn_id)
    if conn is None:
        return None
    extra = conn.extra_dejson if getattr(conn, "extra", None) else {}
    if not isinstance(extra, dict):
        raise SourceConfigError(conn_id, f"extra of Airflow connection {conn_id!r} is not a JSON object")
    return ConnectionFields(conn_type=conn.conn_type, host=conn.host, port=conn.port, schema=conn.schema,
                            login=conn.login, password=conn.password, extra=extra)


def connector_from_connection(cls, conn_id: str, **overrides: Any):
    """Connector class ``cls`` configured from Airflow connection ``conn_id`` (keyword overrides win)."""
    from connectors.errors import SourceConfigError

    fields = connection_fields(conn_id)
    if fields is None:
        raise SourceConfigError(cls.name, f"Airflow connection {conn_id!r} is not configured; "
                                          f"set AIRFLOW_CONN_{conn_id.upper()} or add it in Airflow")
    return cls.from_connection(fields, **overrides)


def build_connector(source: str):
    """The connector of ``source``, configured from its Airflow connection when one exists."""
    from connectors import get_connector

    cls = get_connector(source)
    fields = connection_fields(SOURCES[source])
    if fields is not None:
        return cls.from_connection(fields)
    if getattr(cls, "secrets", ()):
        raise RuntimeError(f"source {source!r} needs Airflow connection {SOURCES[source]!r} (endpoint and credentials)")
    return cls({})


def extract(source: str, context: Mapping[str, Any]) -> dict:
    """Extract one source for the Airflow run in ``context``; returns the batches landed."""
    from connectors import ExtractWindow

    window = ExtractWindow.from_airflow_context(context)
    connector = build_connector(source)
    log.info("extracting %s for %s (%s → %s), run %s", source, window.logical_date, window.start, window.end, window.run_id)
    # Logboek dataverwerkingen: what this extract read (the source) and landed, under which activity.
    with processing_operation(f"extract_{source}", logical_date=window.logical_date, run_id=window.run_id) as op:
        results = connector.extract(window, landing_root())
        record_landed_batches(op, results, person_bronze_tables())
    summary = {
        "source": source,
        "logical_date": window.logical_date.isoformat(),
        "run_id": window.run_id,
        "batches": {r.dataset: {"records": r.record_count, "checksum": r.checksum, "path": str(r.path)} for r in results},
    }
    # Drop-zone sources also say which files they accepted and which they quarantined, and why.
    dropzone_report = getattr(connector, "last_report", None)
    if dropzone_report:
        summary["files"] = {
            "accepted": dropzone_report.get("files_accepted", 0),
            "partially_accepted": dropzone_report.get("files_partially_accepted", 0),
            "rejected": dropzone_report.get("files_rejected", []),
            "units_accepted": dropzone_report.get("units_accepted", 0),
            "units_rejected_per_rule": dropzone_report.get("units_rejected_per_rule", {}),
        }
        for key in ("unmapped_accounts",):
            if dropzone_report.get(key):
                summary["files"][key] = dropzone_report[key]
    write_report(window.logical_date, f"extract_{source}", summary)
    return summary


def publish_share(logical_date: date, run_id: str | None = None) -> dict:
    """Check the shared gold tables, materialise each recipient's projections and report how partners read them."""
    from deltalake import DeltaTable

    from ggm_lakehouse.model.shares_config import load_shares_config

    config = load_shares_config()
    tables, waiting = [], []
    for share in config.shares:
        for table in share.all_tables():
            path = table.resolve_location()
            if not has_commits(path):
                # Its mart waits for sources that have not delivered yet; the other tables are still published.
                waiting.append(table.qualified_name)
                continue
            tables.append({"table": table.qualified_name, "version": DeltaTable(str(path)).version(), "location": str(path)})
    report = {
        "logical_date": logical_date.isoformat(),
        "tables": tables,
        "waiting": waiting,
        "recipients": sorted(r.name for r in config.recipients),
        "how_to_read": "ggm sharing serve &  ggm sharing profile demo-partner > demo-partner.share; "
        "python -c \"import delta_sharing; print(delta_sharing.load_as_pandas("
        "'demo-partner.share#gemeente_gold.demografie.inwoners_per_buurt'))\"",
    }
    # Partners download whole Parquet files, so each recipient gets its own materialised copy with
    # only its columns and rows and pseudonyms re-keyed for it (sharing_server.projections).
    from sharing_server.projections import materialise_recipient_tables

    projections = materialise_recipient_tables(logical_date, run_id=run_id)
    report["projections"] = {
        recipient: {table: {k: v[k] for k in ("rows", "columns", "version", "changed")} for table, v in tables.items()}
        for recipient, tables in projections["recipients"].items()
    }
    report["audit_table"] = projections.get("audit")
    if not tables:
        raise RuntimeError(f"no shared gold table exists yet (waiting: {waiting}); nothing to publish")
    with processing_operation("publish_share", logical_date=logical_date, run_id=run_id) as op:
        record_published_share(op, report, shared_recipients(config))
    write_report(logical_date, "share", report)
    return report


def publish_dashboard() -> dict:
    """Rebuild the policy dashboard (static site) from the gold marts; returns the pages written."""
    from dashboard.site import build_site

    from ggm_lakehouse.config import data_root, lake_root

    output = data_root() / "dashboard"
    pages = build_site(lake_root(), output)
    return {"site": str(output), "pages": [p.name for p in pages]}


def run_summary(logical_date: date) -> dict:
    """Everything the run of ``logical_date`` reported, combined into one summary."""
    reports = read_reports(logical_date)

    def stage_tables(stage: str) -> dict:
        # Stages report per source or mart ("silver_brp", "gold_inwoners_per_buurt") or as a whole ("silver").
        tables: dict = {}
        for name, report in sorted(reports.items()):
            if name == stage or name.startswith(stage + "_"):
                tables.update(report.get("tables", {}))
        return tables

    silver = stage_tables("silver")
    bronze = stage_tables("bronze")
    # Schema drift: what changed in the shape of a source's records (bronze kept them as delivered).
    warnings = [f"{table}: {message}" for table, report in sorted(bronze.items()) for message in report.get("schema_drift", [])]
    quarantined = {t: r.get("quarantined", {}) for t, r in silver.items() if r.get("quarantined")}
    extracts = {k[len("extract_"):]: v for k, v in reports.items() if k.startswith("extract_")}
    return {
        "logical_date": logical_date.isoformat(),
        "extracted": {source: report.get("batches", {}) for source, report in extracts.items()},
        # Per drop-zone source: files accepted, files rejected with file/rule/position, units rejected per rule.
        "files": {source: report["files"] for source, report in extracts.items() if "files" in report},
        "bronze": bronze,
        "warnings": warnings,
        "silver": {
            t: {
                "current_rows": r["current_rows"],
                "total_rows": r["total_rows"],
                "new_versions": r["new_versions"],
                "closed": r["closed"],
                "quarantined": sum(r.get("quarantined", {}).values()),
            }
            for t, r in silver.items()
            if "skipped" not in r
        },
        "silver_unchanged": {t: r["skipped"] for t, r in silver.items() if "skipped" in r},
        "quarantined_rows_per_rule": quarantined,
        "gold": stage_tables("gold"),
        # Stages whose inputs and outputs were as their last run of the day left them (jobs.stage_state).
        "unchanged_stages": {name: r["unchanged_since"] for name, r in sorted(reports.items()) if r.get("unchanged_since")},
        "share": reports.get("share", {}),
    }
