"""``python -m standins [--port-base N] [--population N] [--seed N] [--as-of YYYY-MM-DD]``."""
from __future__ import annotations

import argparse
from datetime import date

from standins.server import serve_foreground


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve both stand-ins until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m standins", description=__doc__)
    parser.add_argument("--port-base", type=int, default=None, help="BRP on N, BAG on N+1 (default: free ports)")
    parser.add_argument("--population", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--as-of", type=date.fromisoformat, default=date.today())
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    serve_foreground(args.port_base, args.population, args.seed, args.as_of, host=args.host)


if __name__ == "__main__":
    main()
