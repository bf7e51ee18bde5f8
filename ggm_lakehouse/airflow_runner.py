"""Run the daily DAG for one logical date in-process (``dag.test``), as ``make run`` and ``ggm run`` do.

Started as a subprocess with the embedded Airflow environment; exits 0 only when
the DAG run succeeded.
"""
from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, timezone

DAG_ID = "ggm_daily"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", required=True, type=date.fromisoformat)
    parser.add_argument("--dag-id", default=DAG_ID)
    args = parser.parse_args(argv)

    from airflow.dag_processing.dagbag import DagBag

    from ggm_lakehouse.config import project_root

    bag = DagBag(dag_folder=str(project_root() / "dags"))
    if bag.import_errors:
        for path, error in bag.import_errors.items():
            print(f"DAG import error in {path}:\n{error}", file=sys.stderr)
        return 2
    dag = bag.get_dag(args.dag_id)
    if dag is None:
        print(f"DAG {args.dag_id!r} not found", file=sys.stderr)
        return 2
    logical = datetime(args.date.year, args.date.month, args.date.day, tzinfo=timezone.utc)
    run = dag.test(logical_date=logical)
    state = str(getattr(run, "state", "unknown"))
    print(f"DAG run {args.dag_id} {args.date}: {state}")
    return 0 if state.endswith("success") else 1


if __name__ == "__main__":
    sys.exit(main())
