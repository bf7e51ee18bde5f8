"""The ``ggm`` command line. ``ggm`` alone, or ``ggm COMMAND --help``, explains every command with examples.

    ggm run [--date YYYY-MM-DD]        the daily pipeline for the demo municipality Demodam, through Airflow
    ggm standins serve [--port-base N] the demo registries (BRP, BAG, KvK, CBS, BRP Update API) in the foreground
    ggm spark serve|status|stop        the project's Spark Connect server
    ggm sharing serve [--host H --port P]
    ggm sharing profile RECIPIENT      issue a token and print the recipient's profile JSON
    ggm sharing revoke RECIPIENT
    ggm sharing recipient add|list|revoke|rotate|rotate-key
    ggm sharing audit [--since YYYY-MM-DD]
    ggm sharing unity-catalog plan|apply   shares.yaml as Unity Catalog shares, recipients and grants
    ggm catalog build [--out DIR]      data catalog: catalog.json + one HTML page per table
    ggm dashboard build|serve          the policy dashboard: static site from the gold marts, and its server
    ggm demo dropzone [--date YYYY-MM-DD]  write the demo municipality's drop-zone files
    ggm lineage TABLE [--json]         upstream (source endpoint …) and downstream (… partner) of a table
    ggm processing-log [--date YYYY-MM-DD] [--json]  verwerkingslog summary per processing activity
    ggm retention plan|apply [--as-of YYYY-MM-DD] [--json]  purge what is older than the bewaartermijnen
    ggm access plan|apply [--local]    access roles per layer: Unity Catalog grants or folder modes
    ggm schemas export [--dir DIR] [--json]  the JSON schemas of the YAML declarations, for editors
    ggm airflow-init                   the embedded Airflow home and metadata DB

Listings (``processing-log``, ``sharing audit``, ``sharing recipient list``, ``spark status``) print a
table for people by default and JSON with ``--json`` for scripts.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import textwrap
from datetime import date, timedelta
from importlib import metadata
from typing import Any, Callable, Iterable

DEFAULT_POPULATION = 3000
DEFAULT_SEED = 42
PACKAGE = "ggm-lakehouse"
DATE_METAVAR = "YYYY-MM-DD"
_DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")

Handler = Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------- shared pieces


def _yesterday() -> date:
    return date.today() - timedelta(days=1)


def iso_date(value: str) -> date:
    """``argparse`` type of every date option: exactly ``YYYY-MM-DD``, with a message that says so."""
    text = value.strip()
    # date.fromisoformat also takes 20260301 and 2026-W10-1; one spelling keeps scripts and docs alike.
    if not _DATE_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"{value!r} is not a date: use {DATE_METAVAR}, e.g. 2026-03-01")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid date ({exc}); use {DATE_METAVAR}, e.g. 2026-03-01")


def package_version() -> str:
    """The installed version of the ``ggm-lakehouse`` package (from its metadata)."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown (the package is not installed: run make setup)"


def _examples(lines: Iterable[str]) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _wrap(text: str, width: int = 88) -> str:
    """Wrap a description's plain paragraphs; paragraphs with indented lines (lists, commands) stay as written.

    RawDescriptionHelpFormatter keeps the examples' line breaks, so it does not wrap descriptions either.
    """
    paragraphs = text.split("\n\n")
    return "\n\n".join(p if any(line.startswith(" ") for line in p.splitlines()) else textwrap.fill(" ".join(p.split()), width)
                       for p in paragraphs)


def _command(commands: argparse._SubParsersAction, name: str, *, help: str, description: str,
             examples: Iterable[str], handler: Handler | None = None) -> argparse.ArgumentParser:
    """Add subcommand ``name``: one line for the list (``help``), a ``description`` and worked examples."""
    parser = commands.add_parser(name, help=help, description=_wrap(description), epilog=_examples(examples),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def _print_help(parser: argparse.ArgumentParser) -> Handler:
    """Handler of a command group run without a subcommand: its help, exit status 0."""
    def handler(args: argparse.Namespace) -> int:  # noqa: ARG001 - uniform handler signature
        parser.print_help()
        return 0
    return handler


def _group(commands: argparse._SubParsersAction, name: str, *, help: str, description: str,
           examples: Iterable[str], dest: str = "action") -> argparse._SubParsersAction:
    """A command with subcommands (``ggm sharing ...``); alone it prints its help."""
    parser = _command(commands, name, help=help, description=description, examples=examples)
    parser.set_defaults(handler=_print_help(parser))
    return parser.add_subparsers(dest=dest, title="commands", metavar="COMMAND")


def _add_date(parser: argparse.ArgumentParser, flag: str, help: str, default: date | None) -> None:
    parser.add_argument(flag, type=iso_date, default=default, metavar=DATE_METAVAR, help=help)


def _add_demo_world(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--population", type=int, default=DEFAULT_POPULATION,
                        help=f"residents of the demo municipality Demodam (default: {DEFAULT_POPULATION})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed of the demo generator: the same seed and population always give the same "
                             f"Demodam (default: {DEFAULT_SEED})")


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")


def _print_table(title: str, columns: list[str], rows: list[list[Any]], *, empty: str = "nothing to show",
                 show_header: bool = True) -> None:
    """A readable table on stdout (rich; no colours when stdout is not a terminal); ``empty`` when there are no rows."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not rows:
        console.print(f"{title}: {empty}", highlight=False)
        return
    table = Table(title=title, title_justify="left", show_header=show_header)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


# --------------------------------------------------------------------------- run, standins, spark


def cmd_run(args: argparse.Namespace) -> int:
    """``ggm run``: one day of the pipeline for Demodam; the summary as JSON, 0 when every DAG run succeeded."""
    from ggm_lakehouse.demo import run_demo_day

    summary = run_demo_day(args.date, population=args.population, seed=args.seed, sources=args.sources,
                           quiet=not args.verbose,
                           extra_env={"GGM_SKIP_UNCHANGED": "0"} if args.full_refresh else None)
    if args.json:
        _print_json(summary)
    else:
        from ggm_lakehouse.run_console import print_summary

        print_summary(summary)
    return 0 if summary.get("state") == "success" else 1


def cmd_standins_serve(args: argparse.Namespace) -> int:
    """``ggm standins serve``: the demo registries until Ctrl-C."""
    from standins.server import serve_foreground

    serve_foreground(args.port_base, args.population, args.seed, args.as_of, host=args.host)
    return 0


def cmd_spark_serve(args: argparse.Namespace) -> int:
    """``ggm spark serve``: start the Spark Connect server (or report the running one)."""
    from ggm_lakehouse import spark_connect  # lazy: only this command needs Spark

    return spark_connect.serve(foreground=args.foreground)


def cmd_spark_status(args: argparse.Namespace) -> int:
    """``ggm spark status``: whether the server runs, where, and how much memory it holds; exit 0 either way."""
    from ggm_lakehouse import spark_connect

    info = spark_connect.status()
    if args.json:
        _print_json(info)
        return 0
    memory = f"{info['memory_mb']:.0f} MB" if info.get("memory_mb") is not None else "-"
    rows = [["running", "yes" if info["running"] else "no"], ["url", info["url"]], ["pid", info.get("pid") or "-"],
            ["port", info["port"]], ["memory", memory], ["log", info["log"]]]
    _print_table("Spark Connect server", ["", ""], rows, show_header=False)
    return 0


def cmd_spark_stop(args: argparse.Namespace) -> int:  # noqa: ARG001 - uniform handler signature
    """``ggm spark stop``: stop the server; stopping one that does not run is not an error."""
    from ggm_lakehouse import spark_connect

    print("Spark Connect server stopped" if spark_connect.stop() else "Spark Connect server was not running")
    return 0


# --------------------------------------------------------------------------- sharing


def cmd_sharing_serve(args: argparse.Namespace) -> int:
    """``ggm sharing serve``: the Delta Sharing server until Ctrl-C."""
    from sharing_server.app import serve

    serve(host=args.host, port=args.port)
    return 0


def cmd_sharing_profile(args: argparse.Namespace) -> int:
    """``ggm sharing profile``: a new token for a recipient, printed as its profile JSON."""
    from sharing_server.recipients import UnknownRecipientError, profile_json

    try:
        print(profile_json(args.recipient, endpoint=args.endpoint, expires_days=args.expires))
    except UnknownRecipientError as exc:
        print(f"ggm sharing profile: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_sharing_revoke(args: argparse.Namespace) -> int:
    """``ggm sharing revoke``: revoke every token of a recipient."""
    from sharing_server.recipients import UnknownRecipientError, revoke

    try:
        count = revoke(args.recipient)
    except UnknownRecipientError as exc:
        print(f"ggm sharing revoke: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"recipient": args.recipient, "revoked_tokens": count}))
    return 0


def cmd_recipient_add(args: argparse.Namespace) -> int:
    """``ggm sharing recipient add``: a new recipient and its profile JSON."""
    from sharing_server.recipients import add_recipient

    try:
        result = add_recipient(args.name, args.share, expires_days=args.expires, endpoint=args.endpoint)
    except ValueError as exc:
        print(f"ggm sharing recipient add: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result["profile"], indent=2))
    return 0


def _lifetime(text: str) -> str:
    """``--expires``: a token lifetime as ``30m``, ``12h``, ``7d`` or whole days, checked here for a clear error."""
    from ggm_lakehouse.model.shares_config import parse_lifetime

    try:
        parse_lifetime(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (examples: 30m, 12h, 7d, 90)") from None
    return text


def cmd_recipient_list(args: argparse.Namespace) -> int:
    """``ggm sharing recipient list``: recipients, their shares and token status (never token values)."""
    from sharing_server.recipients import list_recipients

    recipients = list_recipients()
    if args.json:
        print(json.dumps(recipients, indent=2, default=str))
        return 0
    rows = [[r["name"], ", ".join(r["shares"]) or "-", r["source"], r["active_tokens"], r["earliest_expiry"] or "-"]
            for r in recipients]
    _print_table(f"Recipients ({len(rows)})", ["Recipient", "Shares", "Defined in", "Active tokens", "First expiry"],
                 rows, empty="none (add one with 'ggm sharing recipient add')")
    tokens = [[r["name"], t.get("token_id", "-"), t.get("created_at") or "-", t.get("expires_at") or "never"]
              for r in recipients for t in r.get("tokens", [])]
    if tokens:
        _print_table("Live tokens", ["Recipient", "Token id", "Created", "Expires"], tokens)
    return 0


def cmd_recipient_revoke(args: argparse.Namespace) -> int:
    """``ggm sharing recipient revoke``: the same as ``ggm sharing revoke``."""
    return cmd_sharing_revoke(argparse.Namespace(recipient=args.name))


def cmd_recipient_rotate_key(args: argparse.Namespace) -> int:
    """``ggm sharing recipient rotate-key``: a new pseudonym key generation, the recipient's projections rebuilt."""
    from datetime import datetime, timezone

    from sharing_server.projections import materialise_recipient_tables
    from sharing_server.recipients import UnknownRecipientError, rotate_pseudonym_key

    try:
        recipient, generation = rotate_pseudonym_key(args.name)
    except UnknownRecipientError as exc:
        print(f"ggm sharing recipient rotate-key: {exc}; see 'ggm sharing recipient list'", file=sys.stderr)
        return 2
    today = datetime.now(timezone.utc).date()
    report = materialise_recipient_tables(today, f"rotate-key-{args.name}", recipients=[recipient], export_audit=False)
    tables = report["recipients"].get(args.name, {})
    result = {"name": args.name, "key_generation": generation, "tables": {name: {"rows": t["rows"], "version": t["version"], "changed": t["changed"]}
                                    for name, t in tables.items()}, "waiting": report.get("waiting", [])}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = [[name, t["rows"], t["version"], "new pseudonyms" if t["changed"] else "unchanged"] for name, t in result["tables"].items()]
    _print_table(f"{args.name}: pseudonym key generation {generation}", ["Table", "Rows", "Version", "Result"],
                 rows, empty="no table published yet: the next publish uses the new key")
    return 0


def cmd_recipient_rotate(args: argparse.Namespace) -> int:
    """``ggm sharing recipient rotate``: a new token, the old ones revoked, the new profile printed."""
    from sharing_server.recipients import UnknownRecipientError, rotate

    try:
        result = rotate(args.name, endpoint=args.endpoint)
    except UnknownRecipientError as exc:
        print(f"ggm sharing recipient rotate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result["profile"], indent=2))
    return 0


def audit_rows(summary: dict) -> list[list[Any]]:
    """Table rows of :func:`sharing_server.audit.summarise_audit`: one per recipient and table."""
    return [[recipient, table, t["requests"], t["files"], t["downloads"], t["bytes"], t["errors"]]
            for recipient, tables in sorted(summary.items()) for table, t in sorted(tables.items())]


def cmd_sharing_audit(args: argparse.Namespace) -> int:
    """``ggm sharing audit``: requests, files, downloads, bytes and errors per recipient and table."""
    from sharing_server.audit import summarise_audit

    summary = summarise_audit(args.since)
    if args.json:
        _print_json(summary)
        return 0
    since = f" since {args.since.isoformat()}" if args.since else ""
    _print_table(f"Sharing requests{since}", ["Recipient", "Table", "Requests", "Files", "Downloads", "Bytes", "Errors"],
                 audit_rows(summary), empty="no requests logged")
    return 0


# --------------------------------------------------------------------------- demo, catalog, lineage, logs


def cmd_demo_dropzone(args: argparse.Namespace) -> int:
    """``ggm demo dropzone``: Demodam's drop-zone files for one date; prints every path written."""
    from demo_gemeente.dropzone import write_dropzone
    from demo_gemeente.generator import DemoWorld
    from demo_gemeente.kvk import KvkRegister
    from ggm_lakehouse.config import dropzone_root
    from ggm_lakehouse.demo import write_departmental_deliveries_for_demo

    world = DemoWorld(args.population, args.seed)
    muni = world.at(args.date)
    for path in write_dropzone(muni, dropzone_root()):
        print(path)
    if args.departments:
        delivered = write_departmental_deliveries_for_demo(muni, args.date, KvkRegister(world), args.seed)
        for paths in delivered.values():
            for path in paths:
                print(path)
    return 0


def cmd_airflow_init(args: argparse.Namespace) -> int:  # noqa: ARG001 - uniform handler signature
    """``ggm airflow-init``: migrate the embedded Airflow metadata DB and create the pools."""
    from ggm_lakehouse.airflow_env import airflow_environment, airflow_home

    airflow_home().mkdir(parents=True, exist_ok=True)
    env = airflow_environment()
    status = subprocess.call([sys.executable, "-m", "airflow", "db", "migrate"], env=env)
    if status:
        return status
    # Pools bound concurrency against each registry's rate limit; the scheduler needs them to exist.
    return subprocess.call(
        [sys.executable, "-c", "from ggm_lakehouse.orchestration import ensure_pools; print(ensure_pools())"], env=env
    )


def cmd_catalog(args: argparse.Namespace) -> int:
    """``ggm catalog build``: catalog.json and the static HTML site."""
    from ggm_lakehouse import catalog

    argv = ["build"] + (["--out", args.out] if args.out else [])
    if args.ggm_descriptions:
        argv += ["--ggm-descriptions", args.ggm_descriptions]
    return catalog.main(argv)


def cmd_lineage(args: argparse.Namespace) -> int:
    """``ggm lineage``: upstream and downstream of one table."""
    from ggm_lakehouse import lineage

    return lineage.main([args.table] + (["--json"] if args.json else []))


def processing_log_rows(summary: dict) -> list[list[Any]]:
    """Table rows of :func:`ggm_lakehouse.processing_log.summarise`: one per activity and operation name.

    Runs and errors are counted over the selected dates; data subjects are those of the newest run
    (adding them up over days would count the same residents again); rows written are totals.
    """
    from ggm_lakehouse.processing_log import STATUS_ERROR

    rows = []
    for activity in summary["activities"].values():
        by_name: dict[str, list[dict]] = {}
        for operation in activity["operaties"]:
            by_name.setdefault(operation["name"], []).append(operation)
        for name, runs in sorted(by_name.items()):
            newest = max(runs, key=lambda o: (o["logical_date"] or "", o["end_time"]))
            errors = sum(1 for o in runs if o["status"] == STATUS_ERROR)
            written = sum(sum(v or 0 for v in o["geschreven"].values()) for o in runs)
            rows.append([activity["verwerkingsactiviteit"], name, len(runs), errors, newest["logical_date"] or "-",
                         newest["betrokkenen"] if newest["betrokkenen"] is not None else "-", written])
    return rows


def cmd_processing_log(args: argparse.Namespace) -> int:
    """``ggm processing-log``: the verwerkingslog per processing activity and operation."""
    from ggm_lakehouse.processing_log import summarise

    summary = summarise(args.date)
    if args.json:
        _print_json(summary)
        return 0
    day = args.date.isoformat() if args.date else "all dates"
    title = (f"Verwerkingslog, {day}: {summary['operations']} operations, {summary['errors']} errors "
             f"({summary['location']})")
    _print_table(title, ["Processing activity", "Operation", "Runs", "Errors", "Last date", "Data subjects (last run)",
                         "Rows written"], processing_log_rows(summary), empty="no operations logged")
    return 0


# --------------------------------------------------------------------------- access


def _access_advice(args: argparse.Namespace) -> str:
    """What to do when the Databricks workspace connection is missing: --local, or add the connection."""
    env = f"AIRFLOW_CONN_{args.conn_id.upper()}"
    return (
        "  On the embedded default (no Databricks workspace) manage the layer folders instead:\n"
        f"    ggm access {args.action} --local\n"
        f"  For Unity Catalog, add Airflow connection {args.conn_id!r} (workspace host, token as password), e.g.\n"
        f"    export {env}='{{\"conn_type\": \"databricks\", \"host\": \"https://adb-<id>.azuredatabricks.net\", "
        "\"password\": \"<token>\"}'\n"
        f"  or: airflow connections add {args.conn_id} --conn-type databricks "
        "--conn-host https://adb-<id>.azuredatabricks.net --conn-password <token>\n"
        "  (see docs/access.md)"
    )


def cmd_access(args: argparse.Namespace) -> int:
    """``ggm access plan|apply``: the access roles of access.yaml as grants (Unity Catalog) or folder modes (--local)."""
    from ggm_lakehouse import access
    from ggm_lakehouse.model.shares_config import SharesConfigError
    from ggm_lakehouse.secrets import MissingSecretError

    try:
        config = access.load_access_config(args.config)
        if args.local:
            plan = access.apply_local(config, args.lake_root, dry_run=args.action == "plan")
        else:
            plan = access.apply_grants(access.workspace_client(args.conn_id), config, args.catalog,
                                       dry_run=args.action == "plan")
    except MissingSecretError as exc:
        advice = "" if args.local else "\n" + _access_advice(args)
        print(f"ggm access {args.action}: {exc}{advice}", file=sys.stderr)
        return 2
    except (access.AccessConfigError, SharesConfigError) as exc:
        print(f"ggm access {args.action}: {exc}", file=sys.stderr)
        return 2
    except access.AccessApplyError as exc:
        print(f"ggm access {args.action}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(plan.as_dict(), indent=2))
    return 0


def cmd_sharing_unity_catalog(args: argparse.Namespace) -> int:
    """``ggm sharing unity-catalog plan|apply``: shares.yaml as Unity Catalog shares, recipients and grants."""
    from ggm_lakehouse.access import workspace_client
    from ggm_lakehouse.model.shares_config import SharesConfigError
    from ggm_lakehouse.secrets import MissingSecretError
    from sharing_server.unity_catalog import UnityCatalogSharingError, apply_unity_catalog

    try:
        plan = apply_unity_catalog(workspace_client(args.conn_id), args.config, args.catalog,
                                   dry_run=args.uc_action == "plan")
    except (SharesConfigError, MissingSecretError) as exc:
        print(f"ggm sharing unity-catalog {args.uc_action}: {exc}", file=sys.stderr)
        return 2
    except UnityCatalogSharingError as exc:
        print(f"ggm sharing unity-catalog {args.uc_action}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(plan.as_dict(), indent=2))
    return 1 if plan.conflicts else 0


# --------------------------------------------------------------------------- schemas

# The YAML declarations of a checkout, by the name their schema is published under (docs/schemas/<name>.schema.json).
SCHEMA_FILES = {
    "mapping": ("ggm_mappings/*.yaml",),
    "gold-mart": ("gold_marts/*.yaml",),
    "shares": ("config/shares.yaml",),
    "sources": ("ggm_lakehouse/model/sources.yaml",),
    "data-contract": ("config/contracts/*.yaml",),
    "access": ("config/access.yaml",),
    "verwerkingsactiviteiten": ("config/verwerkingsactiviteiten.yaml",),
    "vroegsignalering-codelists": ("connectors/vroegsignalering_codelists.yaml",),
}


def published_schemas() -> dict[str, dict[str, Any]]:
    """The JSON schema of every kind of YAML declaration, by its published name (the keys of SCHEMA_FILES)."""
    from connectors.contracts import CONTRACT_SCHEMA
    from connectors.vroegsignalering import CODELISTS_SCHEMA
    from ggm_lakehouse.access import ACCESS_CONFIG_SCHEMA
    from ggm_lakehouse.model.mappings import MAPPING_SCHEMA
    from ggm_lakehouse.model.mart_definitions import MART_SCHEMA
    from ggm_lakehouse.model.shares_config import SHARES_CONFIG_SCHEMA
    from ggm_lakehouse.model.sources import SOURCES_SCHEMA
    from ggm_lakehouse.retention import REGISTER_SCHEMA

    return {"mapping": MAPPING_SCHEMA, "gold-mart": MART_SCHEMA, "shares": SHARES_CONFIG_SCHEMA,
            "sources": SOURCES_SCHEMA, "data-contract": CONTRACT_SCHEMA, "access": ACCESS_CONFIG_SCHEMA,
            "verwerkingsactiviteiten": REGISTER_SCHEMA, "vroegsignalering-codelists": CODELISTS_SCHEMA}


def cmd_schemas_export(args: argparse.Namespace) -> int:
    """``ggm schemas export``: write docs/schemas/<name>.schema.json and show which files each one describes."""
    from pathlib import Path

    from ggm_lakehouse.config import project_root
    from ggm_lakehouse.yaml_schema import export

    root = project_root().resolve()
    directory = Path(args.dir).resolve() if args.dir else root / "docs" / "schemas"
    schemas = published_schemas()
    written = dict(zip(schemas, export(schemas, directory)))
    if args.json:
        # Paths relative to the checkout, as VS Code's yaml.schemas setting takes them from the workspace root.
        _print_json({str(path.relative_to(root)) if path.is_relative_to(root) else str(path): list(SCHEMA_FILES[name])
                     for name, path in written.items()})
        return 0
    _print_table(f"JSON schemas written to {directory}", ["Schema", "Describes"],
                 [[path.name, ", ".join(SCHEMA_FILES[name])] for name, path in written.items()])
    return 0


# --------------------------------------------------------------------------- retention

RETENTION_COLUMNS = ["Layer", "Table or folder", "Activity", "Term", "Cutoff", "Oldest"]


def retention_rows(entries: list[dict], rows_key: str = "rows", files_key: str = "files") -> list[list[Any]]:
    """Table rows of a retention plan's items (or, with ``rows_deleted``/``files_removed``, of what apply did)."""
    return [[e["layer"], e["target"], e["activity"], e["term"], e["cutoff"], e.get("oldest") or "-",
             "-" if e[rows_key] is None else e[rows_key], e[files_key]] for e in entries]


def _retention_result(args: argparse.Namespace) -> dict:
    """Plan or apply the terms in a Spark Connect session (``GGM_SPARK_REMOTE``, else the project's server)."""
    from contextlib import ExitStack

    from ggm_lakehouse import retention
    from ggm_lakehouse.spark import connect_session, remote_url
    from ggm_lakehouse.spark_connect import running_server

    policy = retention.load_policy(args.register)
    policy.check(args.as_of)  # a refused term needs no Spark
    with ExitStack() as stack:
        url = remote_url() or stack.enter_context(running_server())
        spark = connect_session(url, "ggm-retention")
        stack.callback(spark.stop)
        if args.action == "plan":
            return retention.plan(spark, args.as_of, policy).as_dict()
        # Progress goes where it does not mix with the JSON a script reads.
        progress = (lambda text: print(text, file=sys.stderr)) if args.json else (lambda text: print(text, flush=True))
        return retention.apply(spark, args.as_of, policy=policy, progress=progress)


def cmd_retention(args: argparse.Namespace) -> int:
    """``ggm retention plan|apply``: what the bewaartermijnen expire, and purging it."""
    from ggm_lakehouse.processing_log import ProcessingLogError
    from ggm_lakehouse.retention import RetentionError

    try:
        result = _retention_result(args)
    except (RetentionError, ProcessingLogError) as exc:
        print(f"ggm retention {args.action}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        _print_json(result)
        return 0
    if args.action == "plan":
        totals = result["totals"]
        _print_table(f"Retention plan as of {result['as_of']} (minimum term {result['minimum']}): {totals['rows']} rows "
                     f"and {totals['files']} files to purge in {totals['targets']} tables and folders",
                     RETENTION_COLUMNS + ["Rows", "Files"], retention_rows(result["items"]),
                     empty="no table or folder has a bewaartermijn")
        _print_table("Then VACUUM deletes", ["Table", "Data files"],
                     [[table, files] for table, files in result["vacuum"].items()], empty="nothing to vacuum")
        return 0
    totals = result["totals"]
    _print_table(f"Retention applied as of {result['as_of']}: {totals['rows']} rows and {totals['files']} files deleted, "
                 f"{totals['vacuumed_files']} data files vacuumed", RETENTION_COLUMNS + ["Rows deleted", "Files removed"],
                 retention_rows(result["purged"], "rows_deleted", "files_removed"),
                 empty="nothing was older than its term")
    return 0


# --------------------------------------------------------------------------- the parser


RUN_DESCRIPTION = """\
Run one day of the daily pipeline for the demo municipality Demodam, end to end through the embedded
Airflow. It generates Demodam (a synthetic municipality of --population residents), starts the stand-in
registries (BRP Personen, BRP Update API, BAG, KvK, CBS) on 127.0.0.1, writes Demodam's drop-zone
deliveries and runs the ingest, bronze, silver, gold and share DAGs for --date. It prints the run's
summary as JSON and exits 0 when every DAG run succeeded.

ggm run always uses Demodam. To point the platform at real sources, give every source you use an
Airflow connection (or an AIRFLOW_CONN_<CONN_ID> environment variable, or a secrets backend) and let
the Airflow scheduler run the DAGs (make airflow, or your own Airflow deployment). The connection of
each source:

{connections}

For example:

  export AIRFLOW_CONN_GGM_BRP='{{"conn_type": "http",
    "host": "https://brp.example.nl/haalcentraal/api/brp", "password": "<X-API-KEY>"}}'

Each connection's fields, OAuth2 and mTLS: README.md ("Configuration for real endpoints"); drop zones:
docs/dropzones.md; the container stack: docs/compose.md."""


def _run_description() -> str:
    from ggm_lakehouse.orchestration import SOURCES  # light: plain data, no Airflow import

    connections = "\n".join(f"  {spec.conn_id:<21} {textwrap.shorten(spec.description, 70, placeholder=' …')}"
                            for spec in SOURCES.values())
    return RUN_DESCRIPTION.format(connections=connections)


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = _command(sub, "run", help="run one day of the pipeline for the demo municipality Demodam (through Airflow)",
                   description=_run_description(), handler=cmd_run,
                   examples=["ggm run                                 # yesterday, 3000 residents",
                             "ggm run --date 2026-03-01 --population 500",
                             "ggm run --date 2026-03-01 --sources brp,bag   # only these and what needs only them",
                             "ggm run --date 2026-03-01 --full-refresh      # redo stages whose inputs did not change"])
    _add_date(run, "--date", "logical date of the run (default: yesterday)", _yesterday())
    _add_demo_world(run)
    run.add_argument("--sources", type=lambda v: [s for s in v.split(",") if s], default=None, metavar="SOURCE,...",
                     help="comma-separated sources to run (default: all); downstream runs where it needs only these")
    run.add_argument("--json", action="store_true", help="print the day's summary as JSON instead of tables")
    run.add_argument("--full-refresh", action="store_true",
                     help="conform and build every table again even where the day's inputs did not change since "
                          "its last run (by default such silver and gold stages report 'unchanged' and skip)")
    run.add_argument("--verbose", action="store_true",
                     help="stream every Airflow and Spark log line to the terminal instead of the run's log file")


def _add_standins(sub: argparse._SubParsersAction) -> None:
    standins = _group(sub, "standins", help="stand-in registries for the demo municipality",
                      description="Local stand-ins of the registries (test and demo only), serving Demodam.",
                      examples=["ggm standins serve --port-base 8800"])
    serve = _command(standins, "serve", help="serve the BRP, BAG, KvK, CBS and BRP Update API stand-ins",
                     description="Serve Demodam's registries in the foreground until Ctrl-C: BRP Personen, BAG, KvK, "
                                 "BRP Update API and CBS StatLine. Prints one JSON line per registry (name, url and "
                                 "API key) on stdout, in that order.",
                     examples=["ggm standins serve                      # free ports",
                               "ggm standins serve --port-base 8800 --as-of 2026-03-01"],
                     handler=cmd_standins_serve)
    serve.add_argument("--port-base", type=int, default=None, metavar="N",
                       help="fixed ports: BRP on N, BAG on N+1, KvK on N+2, CBS on N+3, BRP Update API on N+4 "
                            "(default: free ports)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; 0.0.0.0 in a container)")
    _add_demo_world(serve)
    _add_date(serve, "--as-of", "the registries' date: they serve Demodam as it is at the end of that day "
                                "(default: yesterday)", _yesterday())


def _add_spark(sub: argparse._SubParsersAction) -> None:
    spark = _group(sub, "spark", help="the project's Spark Connect server (one Spark for the day's stages)",
                   description="One long-lived Spark Connect server on 127.0.0.1 with Delta, lineage and the "
                               "project's settings; every Spark stage connects to it instead of starting its own JVM.",
                   examples=["ggm spark serve", "ggm spark status", "ggm spark stop"])
    serve = _command(spark, "serve", help="start the Spark Connect server (in the background)",
                     description="Start the Spark Connect server, or report the one already running, and print its "
                                 "URL, pid and log. It keeps running after the command returns, unless --foreground.",
                     examples=["ggm spark serve", "ggm spark serve --foreground   # until Ctrl-C"],
                     handler=cmd_spark_serve)
    serve.add_argument("--foreground", action="store_true", help="stay attached and stop the server on Ctrl-C")
    status = _command(spark, "status", help="whether the server runs, its URL, pid, port, memory and log",
                      description="Show whether the Spark Connect server runs, its URL (without token), pid, port, "
                                  "resident memory and log file. Exits 0 whether it runs or not.",
                      examples=["ggm spark status", "ggm spark status --json"], handler=cmd_spark_status)
    _add_json(status)
    _command(spark, "stop", help="stop the Spark Connect server",
             description="Stop the Spark Connect server (SIGTERM, then SIGKILL if it does not stop). "
                         "Stopping a server that does not run is not an error.",
             examples=["ggm spark stop"], handler=cmd_spark_stop)


def _add_recipient(sharing: argparse._SubParsersAction) -> None:
    recipient = _group(sharing, "recipient", help="add, list, revoke or rotate recipients", dest="recipient_action",
                       description="Recipients of the Delta Sharing server: who may read which shares, with which token.",
                       examples=["ggm sharing recipient list", "ggm sharing recipient add ggd --share gemeente_gold"])
    r_add = _command(recipient, "add", help="add a recipient and print its profile JSON",
                     description="Add a recipient entitled to the given shares and print its profile JSON (endpoint "
                                 "and a new bearer token): the file to hand to the partner.",
                     examples=["ggm sharing recipient add ggd-gooi --share gemeente_gold --expires 90 > ggd.share"],
                     handler=cmd_recipient_add)
    r_add.add_argument("name", help="recipient name, e.g. ggd-gooi")
    r_add.add_argument("--share", action="append", required=True, help="share the recipient may read (repeatable)")
    r_add.add_argument("--expires", type=_lifetime, default=None, metavar="DURATION",
                       help="token lifetime: 30m, 12h, 7d or a number of days (default: none)")
    r_add.add_argument("--endpoint", default=None, metavar="URL",
                       help="public URL of the sharing server written into the profile (default: the local server)")
    r_list = _command(recipient, "list", help="list recipients, their shares and token status",
                      description="List every recipient with its shares, where it is defined, its active tokens and "
                                  "the first expiry. Token values are never shown.",
                      examples=["ggm sharing recipient list", "ggm sharing recipient list --json"],
                      handler=cmd_recipient_list)
    _add_json(r_list)
    r_revoke = _command(recipient, "revoke", help="revoke every token of a recipient",
                        description="Revoke every token of a recipient; takes effect without restarting the server.",
                        examples=["ggm sharing recipient revoke ggd-gooi"], handler=cmd_recipient_revoke)
    r_revoke.add_argument("name", help="recipient name")
    r_rotate = _command(recipient, "rotate", help="issue a new token, revoke the old ones, print the profile",
                        description="Issue a new token for a recipient, revoke its old ones and print the new profile.",
                        examples=["ggm sharing recipient rotate ggd-gooi > ggd.share"], handler=cmd_recipient_rotate)
    r_rotate.add_argument("name", help="recipient name")
    r_rotate.add_argument("--endpoint", default=None, metavar="URL",
                          help="public URL of the sharing server written into the profile (default: the local server)")
    r_key = _command(recipient, "rotate-key", help="give a recipient new pseudonyms and rebuild its projections",
                     description="Raise the recipient's pseudonym key generation and rebuild its projections at once: "
                                 "every pseudonym it reads changes (consistently across its tables, so its own joins "
                                 "keep working), row counts do not, and no other recipient is affected. For a "
                                 "partner whose copy of the pseudonyms leaked or that must stop linking to earlier "
                                 "deliveries. Its tokens stay valid.",
                     examples=["ggm sharing recipient rotate-key ggd-gooi",
                               "ggm sharing recipient rotate-key ggd-gooi --json"], handler=cmd_recipient_rotate_key)
    r_key.add_argument("name", help="recipient name")
    _add_json(r_key)


def _add_unity_catalog(sharing: argparse._SubParsersAction) -> None:
    uc = _group(sharing, "unity-catalog", help="apply shares.yaml to Unity Catalog (Databricks)", dest="uc_action",
                description="shares.yaml as Unity Catalog shares, recipients and grants in a Databricks workspace "
                            "(Airflow connection ggm_databricks).",
                examples=["ggm sharing unity-catalog plan", "ggm sharing unity-catalog apply"])
    for action, help_text in (("plan", "show the changes without making them"), ("apply", "make the changes")):
        u = _command(uc, action, help=help_text,
                     description=f"{help_text.capitalize()}: shares, recipients and share grants of shares.yaml in "
                                 "Unity Catalog. Prints the plan as JSON; exits 1 on conflicts or a refusal.",
                     examples=[f"ggm sharing unity-catalog {action} --catalog gemeente"],
                     handler=cmd_sharing_unity_catalog)
        u.add_argument("--config", default=None, help="shares.yaml (default: GGM_SHARES_CONFIG or config/shares.yaml)")
        u.add_argument("--catalog", default=None, help="catalog of the lake tables (default: GGM_TABLE_NAMESPACE)")
        u.add_argument("--conn-id", default="ggm_databricks", help="Airflow connection of the workspace "
                                                                    "(default: ggm_databricks)")


def _add_sharing(sub: argparse._SubParsersAction) -> None:
    sharing = _group(sub, "sharing", help="Delta Sharing server, recipients and audit",
                     description="The Delta Sharing server that publishes gold tables to partners, its recipients "
                                 "and tokens, and its audit log.",
                     examples=["ggm sharing serve", "ggm sharing recipient list", "ggm sharing audit --since 2026-03-01"])
    s_serve = _command(sharing, "serve", help="run the Delta Sharing server",
                       description="Run the Delta Sharing server in the foreground until Ctrl-C.",
                       examples=["ggm sharing serve", "ggm sharing serve --host 0.0.0.0 --port 8765"],
                       handler=cmd_sharing_serve)
    s_serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; 0.0.0.0 in a container)")
    s_serve.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    s_profile = _command(sharing, "profile", help="issue a bearer token and print the recipient's profile JSON",
                         description="Issue a new bearer token for an existing recipient and print its profile JSON.",
                         examples=["ggm sharing profile demo-partner --endpoint https://data.gemeente.nl/delta-sharing"],
                         handler=cmd_sharing_profile)
    s_profile.add_argument("recipient", help="recipient name (shares.yaml or added with 'recipient add')")
    s_profile.add_argument("--endpoint", default=None, metavar="URL",
                           help="public URL of the sharing server written into the profile (default: the local server)")
    s_profile.add_argument("--expires", type=_lifetime, default=None, metavar="DURATION",
                           help="token lifetime: 30m, 12h, 7d or a number of days")
    s_revoke = _command(sharing, "revoke", help="revoke every token of a recipient",
                        description="Revoke every token of a recipient; takes effect without restarting the server.",
                        examples=["ggm sharing revoke demo-partner"], handler=cmd_sharing_revoke)
    s_revoke.add_argument("recipient", help="recipient name")
    s_audit = _command(sharing, "audit", help="requests, files and bytes per recipient and table",
                       description="Summarise the sharing audit log: requests, files handed out, downloads, bytes and "
                                   "errors per recipient and table.",
                       examples=["ggm sharing audit", "ggm sharing audit --since 2026-03-01 --json"],
                       handler=cmd_sharing_audit)
    _add_date(s_audit, "--since", "count requests from this UTC day on (default: the whole log)", None)
    _add_json(s_audit)
    _add_recipient(sharing)
    _add_unity_catalog(sharing)


def _add_demo_and_catalog(sub: argparse._SubParsersAction) -> None:
    demo = _group(sub, "demo", help="the demo municipality Demodam",
                  description="Files of the demo municipality Demodam, as its own systems would deliver them.",
                  examples=["ggm demo dropzone --date 2026-03-01"])
    d_drop = _command(demo, "dropzone", help="write Demodam's drop-zone files for a date (registries and departments)",
                      description="Write the drop-zone files of Demodam for one date (volglijst, wijk- en buurtindeling "
                                  "and, unless --no-departments, every department's export) and print their paths.",
                      examples=["ggm demo dropzone --date 2026-03-01 --population 500"], handler=cmd_demo_dropzone)
    _add_date(d_drop, "--date", "delivery date (default: yesterday)", _yesterday())
    _add_demo_world(d_drop)
    d_drop.add_argument("--no-departments", dest="departments", action="store_false",
                        help="only the registry-related files (volglijst, wijk- en buurtindeling)")
    catalog = _group(sub, "catalog", help="data catalog of every layer",
                     description="The data catalog: every bronze, silver and gold table with columns, lineage, "
                                 "freshness and sharing.", examples=["ggm catalog build"])
    c_build = _command(catalog, "build", help="write catalog.json and a static HTML site, one page per table",
                       description="Write catalog.json and a static HTML site with one page per table.",
                       examples=["ggm catalog build --out /tmp/catalog",
                                 "ggm catalog build --ggm-descriptions /path/to/ggm/ddl"], handler=cmd_catalog)
    c_build.add_argument("--out", default=None, metavar="DIR", help="output folder (default: <data root>/catalog)")
    c_build.add_argument("--ggm-descriptions", default=None, metavar="PATH",
                         help="GGM JSON-schema folder or ggm_tables.json for attribute descriptions "
                              "(default: GGM_DESCRIPTIONS_PATH, else none)")


# Descriptions and examples of the dashboard's commands, which dashboard/cli.py adds with a help line only.
_DASHBOARD_DOCS = {
    "build": ("Write the policy dashboard (a static site) from the gold Delta tables.",
              ["ggm dashboard build", "ggm dashboard build --peildatum 2026-03-01"]),
    "serve": ("Serve the built dashboard over HTTP in the foreground until Ctrl-C.",
              ["ggm dashboard serve --port 8050"]),
}


def _add_dashboard(sub: argparse._SubParsersAction) -> None:
    from dashboard.cli import add_dashboard_commands

    commands = _group(sub, "dashboard", help="policy dashboard over the gold marts",
                      description="The policy dashboard: a static site built from the gold marts, and its server.",
                      examples=["ggm dashboard build && ggm dashboard serve"])
    add_dashboard_commands(commands)
    for name, parser in commands.choices.items():
        description, examples = _DASHBOARD_DOCS.get(name, (None, None))
        if description and not parser.description:
            parser.description, parser.epilog = description, _examples(examples)
            parser.formatter_class = argparse.RawDescriptionHelpFormatter
        for action in parser._actions:
            # The dashboard parses dates with date.fromisoformat ("invalid fromisoformat value"); ggm says why.
            if action.type == date.fromisoformat:  # a fresh bound method per access: compare, not "is"
                action.type, action.metavar = iso_date, DATE_METAVAR


def _add_access(sub: argparse._SubParsersAction) -> None:
    access = _group(sub, "access", help="access roles per lake layer (grants or folder modes)",
                    description="The access roles of config/access.yaml: Unity Catalog grants on Databricks, or with "
                                "--local the POSIX group and mode of the layer folders (the embedded default).",
                    examples=["ggm access plan --local", "ggm access apply --local", "ggm access plan"])
    for action, help_text in (("plan", "show the changes without making them"), ("apply", "make the changes")):
        a = _command(access, action, help=help_text,
                     description=f"{help_text.capitalize()}: the roles of access.yaml as Unity Catalog grants "
                                 "(Airflow connection --conn-id) or, with --local, as folder group and mode. Prints "
                                 "the changes as JSON.",
                     examples=[f"ggm access {action} --local", f"ggm access {action} --catalog gemeente"],
                     handler=cmd_access)
        a.add_argument("--local", action="store_true", help="POSIX group/mode on the layer folders (embedded default)")
        a.add_argument("--config", default=None, help="access.yaml (default: GGM_ACCESS_CONFIG or config/access.yaml)")
        a.add_argument("--catalog", default=None, help="Unity Catalog catalog (default: access.yaml, GGM_TABLE_NAMESPACE)")
        a.add_argument("--conn-id", default="ggm_databricks", help="Airflow connection of the workspace "
                                                                    "(default: ggm_databricks)")
        a.add_argument("--lake-root", default=None, metavar="DIR", help="with --local: lake root (default: GGM_LAKE_ROOT)")


SCHEMAS_DESCRIPTION = """\
Every YAML declaration the platform reads (silver mappings, gold marts, shares.yaml, sources.yaml, the
drop-zone data contracts, access.yaml and the register of processing activities) is checked against a
JSON Schema when it is loaded. export writes those schemas as files, so that an editor checks a
declaration while it is typed and shows what each key means: in VS Code with the YAML extension, add
the printed mapping to the setting yaml.schemas, or put a modeline at the top of a file:

  # yaml-language-server: $schema=../docs/schemas/mapping.schema.json

docs/architecture.md ("Schemas of the YAML declarations") has the details."""


def _add_schemas(sub: argparse._SubParsersAction) -> None:
    schemas = _group(sub, "schemas", help="JSON schemas of the YAML declarations, for editors",
                     description=SCHEMAS_DESCRIPTION, examples=["ggm schemas export", "ggm schemas export --json"])
    export = _command(schemas, "export", help="write docs/schemas/<name>.schema.json for every kind of YAML declaration",
                      description="Write the JSON schema of every kind of YAML declaration and list which files of the "
                                  "checkout each one describes (with --json: VS Code's yaml.schemas setting).\n\n"
                                  + SCHEMAS_DESCRIPTION,
                      examples=["ggm schemas export", "ggm schemas export --dir /tmp/schemas",
                                "ggm schemas export --json    # paste into .vscode/settings.json as \"yaml.schemas\""],
                      handler=cmd_schemas_export)
    export.add_argument("--dir", default=None, metavar="DIR", help="folder to write to (default: docs/schemas)")
    export.add_argument("--json", action="store_true",
                        help="print {schema file: [files it describes]} (the yaml.schemas setting) instead of a table")


def _add_lineage_logs_airflow(sub: argparse._SubParsersAction) -> None:
    lineage = _command(sub, "lineage", help="upstream and downstream of a table, from source endpoint to partner",
                       description="Show where a table's data comes from (source endpoints, landing, bronze, silver) "
                                   "and where it goes (gold marts, shares, partners).",
                       examples=["ggm lineage NATUURLIJKPERSOON", "ggm lineage inwoners_per_buurt --json"],
                       handler=cmd_lineage)
    lineage.add_argument("table", help="any layer's name: NATUURLIJKPERSOON, silver.natuurlijkpersoon, inwoners_per_buurt, …")
    lineage.add_argument("--json", action="store_true", help="machine-readable output")
    plog = _command(sub, "processing-log", help="summary of the verwerkingslog (Logboek Dataverwerkingen)",
                    description="Summarise the verwerkingslog (Logboek Dataverwerkingen) per processing activity and "
                                "operation: runs, errors, data subjects and rows written.",
                    examples=["ggm processing-log --date 2026-03-01", "ggm processing-log --json"],
                    handler=cmd_processing_log)
    _add_date(plog, "--date", "one logical date (default: all)", None)
    _add_json(plog)
    _command(sub, "airflow-init", help="create the embedded Airflow home and metadata DB",
             description="Create the embedded Airflow home, migrate its metadata database and create the pools "
                         "(make setup runs this).", examples=["ggm airflow-init"], handler=cmd_airflow_init)


RETENTION_DESCRIPTION = """\
Enforce the bewaartermijnen: config/verwerkingsactiviteiten.yaml declares per processing activity how
long each layer keeps data (bewaartermijnen, ISO 8601 durations such as P90D, P6M, P1Y). Counted back
from --as-of, what is dated before the cutoff is purged: landing batches and the drop zones' archived and
quarantined deliveries, bronze rows, quarantined records and, where a silver term is declared, silver
versions closed before it. Delta rows are deleted and their data files vacuumed at once, so no older
table version (time travel) can read them back. Gold is never purged, nor any layer without a term.

A term shorter than the safety minimum (bewaartermijn_minimum, GGM_RETENTION_MINIMUM; default P14D) is
refused (exit status 2) before anything is read. Uses the Spark Connect server (GGM_SPARK_REMOTE, else
the project's, started and stopped when it is not running). docs/retention.md has the details."""


def _add_retention(sub: argparse._SubParsersAction) -> None:
    retention = _group(sub, "retention", help="enforce the bewaartermijnen: plan or apply the purge of expired data",
                       description=RETENTION_DESCRIPTION,
                       examples=["ggm retention plan", "ggm retention apply", "ggm retention plan --as-of 2027-03-01 --json"])
    actions = (
        ("plan", "show per table and folder what would be purged (rows, files, oldest date, term)",
         ["ggm retention plan", "ggm retention plan --json | jq '.totals'", "ggm retention plan --as-of 2027-03-01"]),
        ("apply", "purge and vacuum what is older than its term; prints progress and a summary",
         ["ggm retention apply", "ggm retention apply --json > retention-report.json"]),
    )
    for action, help_text, examples in actions:
        command = _command(retention, action, help=help_text, description=f"{help_text[0].upper()}{help_text[1:]}.\n\n"
                           + RETENTION_DESCRIPTION, examples=examples, handler=cmd_retention)
        _add_date(command, "--as-of", "the day the terms are counted back from (default: today)", date.today())
        command.add_argument("--register", default=None, metavar="FILE",
                             help="register of processing activities (default: GGM_VERWERKINGSACTIVITEITEN or "
                                  "config/verwerkingsactiviteiten.yaml)")
        _add_json(command)


def build_parser() -> argparse.ArgumentParser:
    """The ``ggm`` parser: every command sets ``handler`` (args -> exit status)."""
    parser = argparse.ArgumentParser(
        prog="ggm", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap("GGM Lakehouse: the municipal data platform. Registries and departmental systems to GGM "
                          "silver, gold policy marts and Delta Sharing.\n\nRun 'ggm COMMAND --help' for a command's "
                          "options and examples."),
        epilog=_examples(["ggm run --date 2026-03-01        # one day for the demo municipality Demodam",
                          "ggm standins serve               # the demo registries",
                          "ggm processing-log --date 2026-03-01"]))
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the installed version and exit")
    parser.set_defaults(handler=_print_help(parser))
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    _add_run(sub)
    _add_standins(sub)
    _add_spark(sub)
    _add_sharing(sub)
    _add_demo_and_catalog(sub)
    _add_dashboard(sub)
    _add_access(sub)
    _add_lineage_logs_airflow(sub)
    _add_retention(sub)
    _add_schemas(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``ggm`` with ``argv`` (default: the process arguments); returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
