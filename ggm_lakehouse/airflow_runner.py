"""Run one day of the platform through Airflow in-process (``dag.test``), as ``make run`` and ``ggm run`` do.

The scheduler chains the DAGs through Assets; without a scheduler this runner walks the
same chain for one logical date: every ingest DAG, then the silver DAGs whose sources all
succeeded, then the gold DAGs whose silver tables are all fresh, then the share DAG when a
mart some share exposes was rebuilt. A failed source therefore skips only what depends on
it, as in production.

DAG runs whose inputs are ready run side by side, as the scheduler would run them: at most
``GGM_RUN_PARALLEL`` at once (default 3), and no more per pool than the pool has slots (an
ingest DAG holds a slot of its source's pool, a silver, gold or share DAG one of ``spark``).
Each DAG run is a child process forked after the DAGs are parsed, so a run costs no
interpreter start and no DAG parsing. Started as a subprocess with the embedded Airflow
environment; exits 0 only when every DAG succeeded.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

PROGRESS_FILE: str | None = None  # where the parent (``ggm run``) follows the day, one JSON line per DAG run
DEFAULT_PARALLEL = 3


@dataclass(frozen=True)
class PlannedRun:
    """One DAG run of the day: what it needs before it can start and what it provides when it succeeds.

    ``needs`` and ``provides`` name sources (ingest), silver tables and gold marts. A run whose
    needs are not all provided is skipped; with ``any_need`` (the share DAG) one provided need is
    enough, and a run with none of them is not started at all (nothing to publish is not a failure).
    """

    dag_id: str
    needs: frozenset[str]
    provides: frozenset[str]
    pool: str
    any_need: bool = False


def _progress(dag_id: str, state: str, seconds: float | None = None, detail: str | None = None) -> None:
    if PROGRESS_FILE:
        import json

        # One short line per write with O_APPEND: lines of runs that end together never interleave.
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


def day_plan(selected: list[str]) -> list[PlannedRun]:
    """The DAG runs of a day that ingests the ``selected`` sources, in the order they are started.

    Only what depends on the selected sources alone is planned: a silver DAG whose sources were not
    asked for is neither run nor a failure, nor is a gold DAG reading its tables.
    """
    from ggm_lakehouse.orchestration import SOURCES, gold_domeinen, shared_gold_marts, silver_groups

    plan = [PlannedRun(SOURCES[s].dag_id, frozenset(), frozenset({s}), SOURCES[s].pool) for s in selected]
    planned_tables: set[str] = set()
    for group in silver_groups():
        if set(group.needs) <= set(selected):
            plan.append(PlannedRun(group.dag_id, frozenset(group.needs) | frozenset(group.references),
                                   frozenset(group.tables), "spark"))
            planned_tables.update(group.tables)
    planned_marts: set[str] = set()
    for domein, (marts, inputs) in gold_domeinen().items():
        if set(inputs) <= planned_tables:
            plan.append(PlannedRun(f"ggm_gold_{domein}", frozenset(inputs), frozenset(marts), "spark"))
            planned_marts.update(marts)
    # As the share DAG's Asset schedule does: it runs once a mart some share exposes was rebuilt.
    shared = frozenset(shared_gold_marts()) & planned_marts
    if shared:
        plan.append(PlannedRun("ggm_share", shared, frozenset(), "spark", any_need=True))
    return plan


def _missing(run: PlannedRun, provided: set[str]) -> list[str]:
    if run.any_need:
        return [] if run.needs & provided else sorted(run.needs)
    return sorted(run.needs - provided)


def _pool_slots() -> dict[str, int]:
    from ggm_lakehouse.orchestration import POOLS

    return {name: slots for name, (slots, _) in POOLS.items()}


def _sync_dags_once() -> None:
    """Write every DAG of the bundles to the metadata DB once, before the day's runs fork.

    ``dag.test`` parses and syncs the whole bundle on every call: run side by side on a fresh
    database, those syncs would race to insert the same Assets. After this, the children's syncs
    find nothing new, so each child skips them (:func:`_skip_resync`).
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        sync_bag_to_db(bag, bundle.name, bundle.version)


def _warm_up_before_forking() -> None:
    """Build once, in the parent, what every DAG run would otherwise build for itself after the fork.

    ``dag.test`` runs tasks against Airflow's in-process Execution API, whose versioned routes take
    seconds of CPU to generate on first use, and each stage imports pyspark's Connect client, pandas
    and the jobs. Done here, every forked run starts with them ready. Nothing here opens a connection
    or starts a thread: the API's event loop and every Spark session start in the child.
    """
    import importlib

    from airflow.sdk.execution_time.supervisor import in_process_api_server

    app = in_process_api_server().app
    for candidate in (app, *(getattr(route, "app", None) for route in app.routes)):
        if getattr(candidate, "_cadwyn_initialized", True) is False:
            candidate._cadwyn_initialize()
    for module in ("pandas", "pyarrow", "pyspark.sql.connect.session", "jobs.entrypoint", "jobs.bronze",
                   "jobs.silver", "jobs.gold", "connectors"):
        importlib.import_module(module)


def _skip_resync() -> None:
    """In a child: make ``dag.test``'s re-parse and re-sync of the bundle a no-op (the parent did both).

    Saves a second or more of CPU per DAG run; ``dag.test`` imports both names when called, so
    replacing them on their module is enough.
    """
    from airflow.dag_processing import dagbag

    class _AlreadySynced:
        def __init__(self, *args, **kwargs) -> None:
            pass

    dagbag.BundleDagBag = _AlreadySynced
    dagbag.sync_bag_to_db = lambda *args, **kwargs: None


class _DayRunner:
    """The component that stops, as Airflow's listener hooks name it (a job names itself)."""


def _stop_listeners() -> None:
    """Tell Airflow's listeners the process stops, as an Airflow job does on its way out.

    A forked child ends without exit handlers; OpenLineage's listener would leave the pool that sends
    its events running (and with it, the events of the run's last moments unsent).
    """
    from airflow.listeners.listener import get_listener_manager

    get_listener_manager().hook.before_stopping(component=_DayRunner())


def _start(dag, logical: datetime):
    """Fork a child that runs ``dag`` for ``logical`` and exits 0 on success."""
    import multiprocessing
    import traceback

    def child() -> None:
        try:
            _skip_resync()
            ok = _run(dag, logical)
        except BaseException:  # noqa: BLE001 - the child reports any failure as a failed run
            traceback.print_exc()
            _progress(dag.dag_id, "failed", detail="the DAG run raised; see the log")
            ok = False
        _stop_listeners()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0 if ok else 1)

    # Forked after the DAGs are parsed: a child starts in milliseconds with everything loaded.
    process = multiprocessing.get_context("fork").Process(target=child, name=dag.dag_id)
    process.start()
    return process


def previous_durations(runs_root: Path, runs: int = 5) -> dict[str, float]:
    """The longest a DAG run took in the newest ``runs`` earlier ``ggm run``s (their progress files), by DAG id.

    The longest, not the last: a rerun whose stages found nothing changed says little about a day
    with new data.
    """
    progress = sorted(runs_root.glob("*/logs/*.progress.jsonl"), key=lambda p: p.stat().st_mtime)[-runs:]
    seconds: dict[str, float] = {}
    for line in (line for path in progress for line in path.read_text(encoding="utf-8").splitlines()):
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a run that was killed mid-line
        if event.get("seconds") is not None:
            seconds[event["dag_id"]] = max(seconds.get(event["dag_id"], 0.0), float(event["seconds"]))
    return seconds


# Seconds assumed for a run without history: every run costs something, so deeper chains rank higher.
DEFAULT_RUN_SECONDS = 10.0


def _critical_path_seconds(plan: list[PlannedRun], producers: dict[str, set[str]],
                           expected: dict[str, float]) -> dict[str, float]:
    """Each run's seconds plus the longest chain of runs after it (list scheduling's upward rank)."""
    consumers = {run.dag_id: [r.dag_id for r in plan if run.dag_id in producers[r.dag_id]] for run in plan}
    rank: dict[str, float] = {}
    visiting: set[str] = set()

    def of(dag_id: str) -> float:
        if dag_id in visiting:
            return 0.0  # a cycle: run_plan refuses such a plan with its own message
        if dag_id not in rank:
            visiting.add(dag_id)
            after = max((of(c) for c in consumers[dag_id]), default=0.0)
            visiting.discard(dag_id)
            rank[dag_id] = expected.get(dag_id, DEFAULT_RUN_SECONDS) + after
        return rank[dag_id]

    for run in plan:
        of(run.dag_id)
    return rank


def run_plan(plan: list[PlannedRun], start, parallel: int, pool_slots: dict[str, int],
             expected: dict[str, float] | None = None) -> bool:
    """Run ``plan``: each run once every run providing one of its needs has ended, within the bounds.

    ``start(run)`` starts a run and returns a process-like object (``is_alive``, ``join``, ``exitcode``).
    ``expected`` gives the seconds each run took last time. Whenever a slot frees, the ready run on
    the longest remaining path (its own seconds plus the longest chain of runs that read what it
    makes) starts first: the critical path of the day never waits behind work that has slack.
    Returns True when every planned run that was due succeeded and none was skipped.
    """
    import time

    producers = {run.dag_id: {p.dag_id for p in plan if p.provides & run.needs} for run in plan}
    rank = _critical_path_seconds(plan, producers, expected or {})
    pending = sorted(plan, key=lambda run: (-rank[run.dag_id], plan.index(run)))
    running, ended = {}, set()
    provided: set[str] = set()
    all_ok = True
    while pending or running:
        started_or_ended = False
        for run in list(pending):
            if not producers[run.dag_id] <= ended:
                continue  # what it reads is still being made
            missing = _missing(run, provided)
            if missing:
                pending.remove(run)
                ended.add(run.dag_id)
                started_or_ended = True
                if not run.any_need:
                    _skipped(run.dag_id, missing)
                    all_ok = False
                continue
            busy = sum(1 for r in running.values() if r.pool == run.pool)
            if len(running) < parallel and busy < max(1, pool_slots.get(run.pool, parallel)):
                pending.remove(run)
                running[start(run)] = run
                started_or_ended = True
        if not running:
            if not started_or_ended:
                raise RuntimeError(f"the day's plan cannot go on: {[r.dag_id for r in pending]} wait on each other")
            continue
        # Polled rather than waited on: a child's own children (a listener's pool) inherit its
        # sentinel pipe and would keep it open after the child ended.
        while not (finished := [p for p in running if not p.is_alive()]):
            time.sleep(0.2)
        for process in finished:
            process.join()
            run = running.pop(process)
            ended.add(run.dag_id)
            if process.exitcode == 0:
                provided |= run.provides
            else:
                all_ok = False
    return all_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", required=True, type=date.fromisoformat)
    parser.add_argument("--dag-id", help="run only this DAG")
    parser.add_argument("--sources", type=lambda v: [s for s in v.split(",") if s],
                        help="comma-separated sources to ingest; only what depends on them alone runs after")
    parser.add_argument("--parallel", type=int, default=int(os.environ.get("GGM_RUN_PARALLEL", DEFAULT_PARALLEL)),
                        help=f"DAG runs at once (default GGM_RUN_PARALLEL or {DEFAULT_PARALLEL}; 1 runs them in turn)")
    parser.add_argument("--progress", help="append one JSON line per DAG run to this file (for a live view)")
    args = parser.parse_args(argv)
    global PROGRESS_FILE
    PROGRESS_FILE = args.progress
    # dag.test cannot evaluate deadline alerts (see orchestration.daily_deadline); the scheduler does.
    os.environ["GGM_DEADLINE_HOURS"] = "off"

    from airflow.dag_processing.dagbag import DagBag

    from ggm_lakehouse.config import project_root
    from ggm_lakehouse.orchestration import SOURCES, ensure_pools

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
    _sync_dags_once()
    _warm_up_before_forking()
    from ggm_lakehouse.reports import runs_root

    ok = run_plan(day_plan(selected), lambda run: _start(bag.get_dag(run.dag_id), logical),
                  max(1, args.parallel), _pool_slots(), expected=previous_durations(runs_root()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
