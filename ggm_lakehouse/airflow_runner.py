"""Run one day of the platform through Airflow in-process (``dag.test``), as ``make run`` and ``ggm run`` do.

The scheduler chains the DAGs through Assets; without a scheduler this runner walks the
same chain for one logical date: every ingest DAG, then the silver DAGs whose sources all
succeeded, then the gold DAGs whose silver tables are all fresh, then the share DAG when a
mart some share exposes was rebuilt. A failed source therefore skips only what depends on
it, as in production. Started as a subprocess with the embedded Airflow environment; exits
0 only when every DAG succeeded.
"""
from __future__ import annotations

import argparse
import os
import sys
from datetime import date, datetime, timezone


PROGRESS_FILE: str | None = None  # where the parent (``ggm run``) follows the day, one JSON line per DAG run


def _progress(dag_id: str, state: str, seconds: float | None = None, detail: str | None = None) -> None:
    if PROGRESS_FILE:
        import json

        with open(PROGRESS_FILE, "a", encoding="utf-8") as out:
            out.write(json.dumps({"dag_id": dag_id, "state": state, "seconds": seconds, "detail": detail}) + "\n")


def _run(dag, logical: datetime) -> bool:
    import time

    _progress(dag.dag_id, "running")
    started = time.monotonic()
    run = dag.test(logical_date=logical)
    state = str(getattr(run, "state", "unknown")).rsplit(".", 1)[-1]
    seconds = round(time.monotonic() - started, 1)
    print(f"DAG run {dag.dag_id} {logical.date()}: {state} in {seconds} s", flush=True)
    _progress(dag.dag_id, state, seconds)
    return state.endswith("success")


def _skipped(dag_id: str, waits_for: list[str]) -> None:
    print(f"skipped {dag_id}: waits for {waits_for}", flush=True)
    _progress(dag_id, "skipped", detail=f"waits for {', '.join(waits_for)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", required=True, type=date.fromisoformat)
    parser.add_argument("--dag-id", help="run only this DAG")
    parser.add_argument("--sources", type=lambda v: [s for s in v.split(",") if s],
                        help="comma-separated sources to ingest; only what depends on them alone runs after")
    parser.add_argument("--progress", help="append one JSON line per DAG run to this file (for a live view)")
    args = parser.parse_args(argv)
    global PROGRESS_FILE
    PROGRESS_FILE = args.progress
    # dag.test cannot evaluate deadline alerts (see orchestration.daily_deadline); the scheduler does.
    os.environ["GGM_DEADLINE_HOURS"] = "off"

    from airflow.dag_processing.dagbag import DagBag

    from ggm_lakehouse.config import project_root
    from ggm_lakehouse.orchestration import SOURCES, ensure_pools, gold_domains, shared_gold_marts, silver_groups

    bag = DagBag(dag_folder=str(project_root() / "dags"))
    if bag.import_errors:
        for path, error in bag.import_errors.items():
            print(f"DAG import error in {path}:\n{error}", file=sys.stderr)
        return 2
    ensure_pools()
    logical = datetime(args.date.year, args.date.month, args.date.day, tzinfo=timezone.utc)
    if args.dag_id:
        dag = bag.get_dag(args.dag_id)
        if dag is None:
            print(f"DAG {args.dag_id!r} not found", file=sys.stderr)
            return 2
        return 0 if _run(dag, logical) else 1

    selected = args.sources or list(SOURCES)
    unknown = sorted(set(selected) - set(SOURCES))
    if unknown:
        print(f"unknown sources {unknown}; known: {sorted(SOURCES)}", file=sys.stderr)
        return 2
    ok_sources = {s for s in selected if _run(bag.get_dag(SOURCES[s].dag_id), logical)}
    fresh_tables: set[str] = set()
    all_ok = len(ok_sources) == len(selected)
    for group in silver_groups():
        if not set(group.needs) <= set(selected):
            continue  # not asked for: neither run nor a failure
        missing = sorted((set(group.needs) - ok_sources) | (set(group.references) - fresh_tables))
        if missing:
            _skipped(group.dag_id, missing)
            all_ok = False
            continue
        if _run(bag.get_dag(group.dag_id), logical):
            fresh_tables.update(group.tables)
        else:
            all_ok = False
    built_marts: set[str] = set()
    selected_tables = {t for g in silver_groups() if set(g.needs) <= set(selected) for t in g.tables}
    for domein, (marts, inputs) in gold_domains().items():
        if not set(inputs) <= selected_tables:
            continue
        if not set(inputs) <= fresh_tables:
            _skipped(f"ggm_gold_{domein}", sorted(set(inputs) - fresh_tables))
            all_ok = False
            continue
        if _run(bag.get_dag(f"ggm_gold_{domein}"), logical):
            built_marts.update(marts)
        else:
            all_ok = False
    # As the share DAG's Asset schedule does: it runs once a mart some share exposes was rebuilt.
    if built_marts & set(shared_gold_marts()):
        all_ok = _run(bag.get_dag("ggm_share"), logical) and all_ok
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
