"""``python -m demo_gemeente``: build the demo municipality for a day and write its drop zone.

Prints a JSON summary on stdout, e.g.::

    python -m demo_gemeente --population 3000 --seed 42 --as-of 2026-03-01 --dropzone data/dropzone
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import date
from pathlib import Path

from demo_gemeente.dropzone import write_dropzone
from demo_gemeente.generator import EPOCH, build_municipality
from demo_gemeente.model import Municipality
from ggm_lakehouse.config import dropzone_root


def summarise(muni: Municipality, files: list[Path]) -> dict:
    """Counts that show at a glance what was generated for ``muni.as_of``."""
    residents = muni.residents()
    today = muni.changes_on(muni.as_of)
    return {
        "gemeentecode": muni.gemeentecode,
        "gemeentenaam": muni.naam,
        "seed": muni.seed,
        "as_of": muni.as_of.isoformat(),
        "population_requested": muni.population,
        "persons": len(muni.persons),
        "residents": len(residents),
        "households": len({p.household_id for p in residents}),
        "addresses": len(muni.nummeraanduidingen),
        "verblijfsobjecten": len(muni.verblijfsobjecten),
        "panden": len(muni.panden),
        "openbare_ruimten": len(muni.openbare_ruimten),
        "woonplaatsen": len(muni.woonplaatsen),
        "wijken": len(muni.wijken),
        "buurten": len(muni.buurten),
        "changes_on_day": len(today),
        "changes_on_day_by_kind": dict(sorted(Counter(c.kind for c in today).items())),
        "changes_since_epoch": len(muni.changes),
        "files": [str(f) for f in files],
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m demo_gemeente", description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=3000, help="residents at the epoch (default 3000)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--as-of", type=date.fromisoformat, default=EPOCH,
                        help=f"state at the end of this day, YYYY-MM-DD (default {EPOCH})")
    parser.add_argument("--gemeentecode", default="9999")
    parser.add_argument("--naam", default="Demodam")
    parser.add_argument("--dropzone", type=Path, default=None,
                        help="drop-zone root (default: GGM_DROPZONE_ROOT or <data>/dropzone)")
    args = parser.parse_args(argv)
    try:
        muni = build_municipality(population=args.population, seed=args.seed, as_of=args.as_of,
                                  gemeentecode=args.gemeentecode, naam=args.naam)
    except ValueError as exc:
        parser.error(str(exc))
    files = write_dropzone(muni, args.dropzone if args.dropzone is not None else dropzone_root())
    json.dump(summarise(muni, files), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
