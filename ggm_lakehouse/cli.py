"""The ``ggm`` command line.

    ggm run --date YYYY-MM-DD          the daily pipeline through Airflow for one logical date
    ggm standins serve [--port-base N] the demo BRP and BAG stand-ins in the foreground
    ggm sharing serve [--host H --port P]
    ggm sharing profile RECIPIENT      issue a token and print the recipient's profile JSON
    ggm sharing revoke RECIPIENT
    ggm sharing recipient add|list|revoke|rotate
    ggm sharing audit [--since D]
    ggm catalog build [--out DIR]      data catalog: catalog.json + one HTML page per table
    ggm dashboard build|serve          the policy dashboard: static site from the gold marts, and its server
    ggm demo dropzone --date D         write the demo municipality's drop-zone files
    ggm lineage TABLE [--json]         upstream (source endpoint …) and downstream (… partner) of a table
    ggm processing-log [--date D]      verwerkingslog summary per processing activity
    ggm access plan|apply [--local]    access roles per layer: Unity Catalog grants or folder modes
    ggm sharing unity-catalog plan|apply   shares.yaml as Unity Catalog shares, recipients and grants
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date, timedelta

DEFAULT_POPULATION = 3000
DEFAULT_SEED = 42


def _yesterday() -> date:
    return date.today() - timedelta(days=1)


def cmd_run(args: argparse.Namespace) -> int:
    from ggm_lakehouse.demo import run_demo_day

    summary = run_demo_day(args.date, population=args.population, seed=args.seed, sources=args.sources)
    print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return 0 if summary.get("state") == "success" else 1


def cmd_standins_serve(args: argparse.Namespace) -> int:
    from standins.server import serve_foreground

    serve_foreground(args.port_base, args.population, args.seed, args.as_of, host=args.host)
    return 0


def cmd_sharing_serve(args: argparse.Namespace) -> int:
    from sharing_server.app import serve

    serve(host=args.host, port=args.port)
    return 0


def cmd_sharing_profile(args: argparse.Namespace) -> int:
    from sharing_server.recipients import UnknownRecipientError, profile_json

    try:
        print(profile_json(args.recipient, endpoint=args.endpoint, expires_days=args.expires))
    except UnknownRecipientError as exc:
        print(f"ggm sharing profile: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_sharing_revoke(args: argparse.Namespace) -> int:
    from sharing_server.recipients import UnknownRecipientError, revoke

    try:
        count = revoke(args.recipient)
    except UnknownRecipientError as exc:
        print(f"ggm sharing revoke: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"recipient": args.recipient, "revoked_tokens": count}))
    return 0


def cmd_recipient_add(args: argparse.Namespace) -> int:
    from sharing_server.recipients import add_recipient

    try:
        result = add_recipient(args.name, args.share, expires_days=args.expires, endpoint=args.endpoint)
    except ValueError as exc:
        print(f"ggm sharing recipient add: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result["profile"], indent=2))
    return 0


def cmd_recipient_list(args: argparse.Namespace) -> int:  # noqa: ARG001 - uniform handler signature
    from sharing_server.recipients import list_recipients

    print(json.dumps(list_recipients(), indent=2, default=str))
    return 0


def cmd_recipient_revoke(args: argparse.Namespace) -> int:
    return cmd_sharing_revoke(argparse.Namespace(recipient=args.name))


def cmd_recipient_rotate(args: argparse.Namespace) -> int:
    from sharing_server.recipients import UnknownRecipientError, rotate

    try:
        result = rotate(args.name, endpoint=args.endpoint)
    except UnknownRecipientError as exc:
        print(f"ggm sharing recipient rotate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result["profile"], indent=2))
    return 0


def cmd_sharing_audit(args: argparse.Namespace) -> int:
    from sharing_server.audit import summarise_audit

    print(json.dumps(summarise_audit(args.since), indent=2, sort_keys=True, default=str))
    return 0


def cmd_demo_dropzone(args: argparse.Namespace) -> int:
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
    from ggm_lakehouse import catalog

    argv = ["build"] + (["--out", args.out] if args.out else [])
    if args.ggm_descriptions:
        argv += ["--ggm-descriptions", args.ggm_descriptions]
    return catalog.main(argv)


def cmd_access(args: argparse.Namespace) -> int:
    from ggm_lakehouse import access
    from ggm_lakehouse.secrets import MissingSecretError
    from sharing_server.shares_config import SharesConfigError

    try:
        config = access.load_access_config(args.config)
        if args.local:
            plan = access.apply_local(config, args.lake_root, dry_run=args.action == "plan")
        else:
            plan = access.apply_grants(access.workspace_client(args.conn_id), config, args.catalog,
                                       dry_run=args.action == "plan")
    except (access.AccessConfigError, SharesConfigError, MissingSecretError) as exc:
        print(f"ggm access {args.action}: {exc}", file=sys.stderr)
        return 2
    except access.AccessApplyError as exc:
        print(f"ggm access {args.action}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(plan.as_dict(), indent=2))
    return 0


def cmd_sharing_unity_catalog(args: argparse.Namespace) -> int:
    from ggm_lakehouse.access import workspace_client
    from ggm_lakehouse.secrets import MissingSecretError
    from sharing_server.shares_config import SharesConfigError
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


def _add_access_commands(sub, sharing) -> None:
    """``ggm access plan|apply`` and ``ggm sharing unity-catalog plan|apply``."""
    access = sub.add_parser("access", help="access roles per lake layer").add_subparsers(dest="action", required=True)
    for action, help_text in (("plan", "show the changes without making them"), ("apply", "make the changes")):
        a = access.add_parser(action, help=help_text)
        a.add_argument("--local", action="store_true", help="POSIX group/mode on the layer folders (embedded default)")
        a.add_argument("--config", default=None, help="access.yaml (default: GGM_ACCESS_CONFIG or config/access.yaml)")
        a.add_argument("--catalog", default=None, help="Unity Catalog catalog (default: access.yaml, GGM_TABLE_NAMESPACE)")
        a.add_argument("--conn-id", default="ggm_databricks", help="Airflow connection of the workspace")
        a.add_argument("--lake-root", default=None, help="with --local: lake root (default: GGM_LAKE_ROOT)")
        a.set_defaults(handler=cmd_access)
    uc = sharing.add_parser("unity-catalog", help="apply shares.yaml to Unity Catalog (Databricks)")
    uc_actions = uc.add_subparsers(dest="uc_action", required=True)
    for action, help_text in (("plan", "show the changes without making them"), ("apply", "make the changes")):
        u = uc_actions.add_parser(action, help=help_text)
        u.add_argument("--config", default=None, help="shares.yaml (default: GGM_SHARES_CONFIG or config/shares.yaml)")
        u.add_argument("--catalog", default=None, help="catalog of the lake tables (default: GGM_TABLE_NAMESPACE)")
        u.add_argument("--conn-id", default="ggm_databricks", help="Airflow connection of the workspace")
        u.set_defaults(handler=cmd_sharing_unity_catalog)


def cmd_lineage(args: argparse.Namespace) -> int:
    from ggm_lakehouse import lineage

    return lineage.main([args.table] + (["--json"] if args.json else []))


def cmd_processing_log(args: argparse.Namespace) -> int:
    from ggm_lakehouse.processing_log import summarise

    print(json.dumps(summarise(args.date), indent=2, sort_keys=True, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ggm", description="GGM Lakehouse: the municipal data platform.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daily pipeline through Airflow for one logical date")
    run.add_argument("--date", type=date.fromisoformat, default=_yesterday(), help="logical date (default: yesterday)")
    run.add_argument("--population", type=int, default=DEFAULT_POPULATION, help="demo municipality size")
    run.add_argument("--seed", type=int, default=DEFAULT_SEED)
    run.add_argument("--sources", type=lambda v: [s for s in v.split(",") if s], default=None,
                     help="comma-separated sources to run (default: all); downstream runs where it needs only these")
    run.set_defaults(handler=cmd_run)

    standins = sub.add_parser("standins", help="stand-in registries").add_subparsers(dest="action", required=True)
    serve = standins.add_parser("serve", help="serve BRP and BAG stand-ins in the foreground")
    serve.add_argument("--port-base", type=int, default=None, help="BRP on N, BAG on N+1 (default: free ports)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--population", type=int, default=DEFAULT_POPULATION)
    serve.add_argument("--seed", type=int, default=DEFAULT_SEED)
    serve.add_argument("--as-of", type=date.fromisoformat, default=_yesterday())
    serve.set_defaults(handler=cmd_standins_serve)

    sharing = sub.add_parser("sharing", help="Delta Sharing server and recipients").add_subparsers(dest="action", required=True)
    s_serve = sharing.add_parser("serve", help="run the Delta Sharing server")
    s_serve.add_argument("--host", default="127.0.0.1")
    s_serve.add_argument("--port", type=int, default=8765)
    s_serve.set_defaults(handler=cmd_sharing_serve)
    s_profile = sharing.add_parser("profile", help="issue a bearer token and print the recipient's profile JSON")
    s_profile.add_argument("recipient")
    s_profile.add_argument("--endpoint", default=None, help="public URL of the sharing server")
    s_profile.add_argument("--expires", type=int, default=None, help="token lifetime in days")
    s_profile.set_defaults(handler=cmd_sharing_profile)
    s_revoke = sharing.add_parser("revoke", help="revoke every token of a recipient")
    s_revoke.add_argument("recipient")
    s_revoke.set_defaults(handler=cmd_sharing_revoke)

    s_audit = sharing.add_parser("audit", help="summarise the sharing audit log per recipient and table")
    s_audit.add_argument("--since", type=date.fromisoformat, default=None)
    s_audit.set_defaults(handler=cmd_sharing_audit)
    recipient = sharing.add_parser("recipient", help="manage recipients").add_subparsers(dest="recipient_action", required=True)
    r_add = recipient.add_parser("add", help="add a recipient and print its profile JSON")
    r_add.add_argument("name")
    r_add.add_argument("--share", action="append", required=True, help="share the recipient may read (repeatable)")
    r_add.add_argument("--expires", type=int, default=None, help="token lifetime in days")
    r_add.add_argument("--endpoint", default=None)
    r_add.set_defaults(handler=cmd_recipient_add)
    r_list = recipient.add_parser("list", help="list recipients (never token values)")
    r_list.set_defaults(handler=cmd_recipient_list)
    r_revoke = recipient.add_parser("revoke", help="revoke every token of a recipient")
    r_revoke.add_argument("name")
    r_revoke.set_defaults(handler=cmd_recipient_revoke)
    r_rotate = recipient.add_parser("rotate", help="issue a new token, revoke the old ones, print the profile")
    r_rotate.add_argument("name")
    r_rotate.add_argument("--endpoint", default=None)
    r_rotate.set_defaults(handler=cmd_recipient_rotate)

    demo = sub.add_parser("demo", help="demo municipality").add_subparsers(dest="action", required=True)
    d_drop = demo.add_parser("dropzone", help="write the demo drop-zone files for a date (registries and departments)")
    d_drop.add_argument("--date", type=date.fromisoformat, default=_yesterday())
    d_drop.add_argument("--population", type=int, default=DEFAULT_POPULATION)
    d_drop.add_argument("--seed", type=int, default=DEFAULT_SEED)
    d_drop.add_argument("--no-departments", dest="departments", action="store_false",
                        help="only the registry-related files (volglijst, wijk- en buurtindeling)")
    d_drop.set_defaults(handler=cmd_demo_dropzone)

    catalog = sub.add_parser("catalog", help="data catalog").add_subparsers(dest="action", required=True)
    c_build = catalog.add_parser("build", help="write catalog.json and a static HTML site, one page per table")
    c_build.add_argument("--out", default=None, help="output folder (default: <data root>/catalog)")
    c_build.add_argument("--ggm-descriptions", default=None, help="GGM JSON-schema folder or ggm_tables.json for descriptions")
    c_build.set_defaults(handler=cmd_catalog)

    from dashboard.cli import add_dashboard_commands

    add_dashboard_commands(
        sub.add_parser("dashboard", help="policy dashboard over the gold marts").add_subparsers(dest="action", required=True)
    )

    _add_access_commands(sub, sharing)
    lineage = sub.add_parser("lineage", help="upstream and downstream of a table, from source endpoint to partner")
    lineage.add_argument("table", help="any layer's name: NATUURLIJKPERSOON, silver.natuurlijkpersoon, inwoners_per_buurt, …")
    lineage.add_argument("--json", action="store_true", help="machine-readable output")
    lineage.set_defaults(handler=cmd_lineage)

    plog = sub.add_parser("processing-log", help="summary of the verwerkingslog (Logboek Dataverwerkingen)")
    plog.add_argument("--date", type=date.fromisoformat, default=None, help="one logical date (default: all)")
    plog.set_defaults(handler=cmd_processing_log)

    airflow = sub.add_parser("airflow-init", help="create the embedded Airflow home and metadata DB")
    airflow.set_defaults(handler=cmd_airflow_init)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
