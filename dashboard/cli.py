"""Command line of the dashboard: ``build`` and ``serve``.

Mounted twice: as ``python -m dashboard build|serve`` (``dashboard/__main__.py``) and, through
``add_dashboard_commands``, as ``ggm dashboard build|serve``.

    build [--lake-root DIR] [--output DIR] [--definitions DIR] [--peildatum YYYY-MM-DD]
    serve [--dir DIR] [--host HOST] [--port PORT]

Defaults come from ``ggm_lakehouse.config``: the lake at ``lake_root()``, the site at
``<data root>/dashboard``, the definitions in ``<project>/gold_marts``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from datetime import date
from pathlib import Path

from dashboard.site import DEFAULT_PORT, DashboardError, build_site, serve


def default_output_dir() -> Path:
    """Where the site is written and served from: ``<data root>/dashboard``."""
    from ggm_lakehouse.config import data_root

    return data_root() / "dashboard"


def cmd_build(args: argparse.Namespace) -> int:
    """Build the site; exit status 2 with the reason on stderr when gold is missing or unusable."""
    from ggm_lakehouse.config import lake_root

    _configure_logging()
    try:
        pages = build_site(args.lake_root or lake_root(), args.output or default_output_dir(),
                           args.definitions, args.peildatum)
    except DashboardError as error:
        print(f"dashboard build: {error}", file=sys.stderr)
        return 2
    for page in pages:
        print(page)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the site in the foreground until interrupted."""
    _configure_logging()
    serve(args.dir or default_output_dir(), args.host, args.port)
    return 0


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def add_dashboard_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``build`` and ``serve`` to ``commands``; each sets ``handler`` (args -> exit status)."""
    build = commands.add_parser("build", help="write the static site from the gold Delta tables")
    build.add_argument("--lake-root", type=Path, default=None, help="lake root (default: GGM_LAKE_ROOT or <data>/lake)")
    build.add_argument("--output", type=Path, default=None, help="site folder (default: <data root>/dashboard)")
    build.add_argument("--definitions", type=Path, default=None, help="mart definitions (default: <project>/gold_marts)")
    build.add_argument("--peildatum", type=date.fromisoformat, default=None,
                       help="YYYY-MM-DD (default: the newest peildatum in gold/mart_status)")
    build.set_defaults(handler=cmd_build)
    server = commands.add_parser("serve", help="serve the built site over HTTP")
    server.add_argument("--dir", type=Path, default=None, help="site folder (default: <data root>/dashboard)")
    server.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a container)")
    server.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    server.set_defaults(handler=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m dashboard``."""
    parser = argparse.ArgumentParser(prog="python -m dashboard", description="Policy dashboard over the gold marts.")
    add_dashboard_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand and return its exit status."""
    args = build_parser().parse_args(argv)
    return args.handler(args)
