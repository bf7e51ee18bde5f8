"""The day's runner: DAG runs start when what they read is made, side by side within the bounds.

These tests drive :func:`ggm_lakehouse.airflow_runner.run_plan` with real child processes that stand
in for DAG runs (a DAG run is any process whose exit code says how it went); the runner's Airflow
side runs in ``tests/test_e2e_daily.py``.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import time

import pytest

from ggm_lakehouse.airflow_runner import PlannedRun, day_plan, run_plan


def _ingest(source: str, pool: str = "dropzone") -> PlannedRun:
    return PlannedRun(f"ggm_ingest_{source}", frozenset(), frozenset({source}), pool)


def _starter(journal, fail: set[str] = frozenset(), seconds: float = 0.3):
    """Start a child per run that notes its start and end in ``journal`` and fails when named in ``fail``."""

    def start(run: PlannedRun):
        def child() -> None:
            with open(journal, "a", encoding="utf-8") as out:
                out.write(json.dumps({"dag": run.dag_id, "event": "start", "at": time.monotonic()}) + "\n")
            time.sleep(seconds)
            with open(journal, "a", encoding="utf-8") as out:
                out.write(json.dumps({"dag": run.dag_id, "event": "end", "at": time.monotonic()}) + "\n")
            os._exit(1 if run.dag_id in fail else 0)

        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        return process

    return start


def _events(journal) -> list[dict]:
    return [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]


def _most_at_once(events: list[dict], dags: set[str] | None = None) -> int:
    running = most = 0
    for event in sorted(events, key=lambda e: (e["at"], e["event"] == "start")):
        if dags is not None and event["dag"] not in dags:
            continue
        running += 1 if event["event"] == "start" else -1
        most = max(most, running)
    return most


def test_runs_start_only_after_what_they_read_is_made(tmp_path):
    journal = tmp_path / "journal.jsonl"
    plan = [
        _ingest("a"), _ingest("b"),
        PlannedRun("ggm_silver_a", frozenset({"a"}), frozenset({"A1", "A2"}), "spark"),
        PlannedRun("ggm_silver_b", frozenset({"b", "A1"}), frozenset({"B1"}), "spark"),
        PlannedRun("ggm_gold_x", frozenset({"A2", "B1"}), frozenset({"mart"}), "spark"),
    ]
    assert run_plan(plan, _starter(journal), parallel=3, pool_slots={"dropzone": 4, "spark": 2})
    events = _events(journal)
    at = {(e["dag"], e["event"]): e["at"] for e in events}
    assert at[("ggm_silver_a", "start")] >= at[("ggm_ingest_a", "end")]
    assert at[("ggm_silver_b", "start")] >= max(at[("ggm_ingest_b", "end")], at[("ggm_silver_a", "end")])
    assert at[("ggm_gold_x", "start")] >= max(at[("ggm_silver_a", "end")], at[("ggm_silver_b", "end")])
    assert at[("ggm_ingest_b", "start")] < at[("ggm_ingest_a", "end")], "independent ingests run side by side"


def test_a_failed_source_skips_only_what_depends_on_it(tmp_path, capsys):
    journal = tmp_path / "journal.jsonl"
    plan = [
        _ingest("a"), _ingest("b"),
        PlannedRun("ggm_silver_a", frozenset({"a"}), frozenset({"A"}), "spark"),
        PlannedRun("ggm_silver_b", frozenset({"b"}), frozenset({"B"}), "spark"),
        PlannedRun("ggm_gold_x", frozenset({"A", "B"}), frozenset({"mart_x"}), "spark"),
        PlannedRun("ggm_gold_y", frozenset({"B"}), frozenset({"mart_y"}), "spark"),
        PlannedRun("ggm_share", frozenset({"mart_x", "mart_y"}), frozenset(), "spark", any_need=True),
    ]
    assert not run_plan(plan, _starter(journal, fail={"ggm_ingest_a"}), parallel=3,
                        pool_slots={"dropzone": 4, "spark": 2})
    ran = {e["dag"] for e in _events(journal)}
    assert ran == {"ggm_ingest_a", "ggm_ingest_b", "ggm_silver_b", "ggm_gold_y", "ggm_share"}
    out = capsys.readouterr().out
    assert "skipped ggm_silver_a: waits for ['a']" in out
    assert "skipped ggm_gold_x: waits for ['A']" in out


def test_the_share_is_not_started_when_no_shared_mart_was_built(tmp_path, capsys):
    journal = tmp_path / "journal.jsonl"
    plan = [
        _ingest("a"),
        PlannedRun("ggm_gold_x", frozenset({"a"}), frozenset({"mart_x"}), "spark"),
        PlannedRun("ggm_share", frozenset({"mart_x"}), frozenset(), "spark", any_need=True),
    ]
    assert not run_plan(plan, _starter(journal, fail={"ggm_gold_x"}), parallel=2, pool_slots={})
    assert "ggm_share" not in {e["dag"] for e in _events(journal)}
    assert "skipped ggm_share" not in capsys.readouterr().out


@pytest.mark.parametrize("parallel", [1, 3])
def test_never_more_runs_at_once_than_allowed_overall_and_per_pool(tmp_path, parallel):
    journal = tmp_path / "journal.jsonl"
    plan = [_ingest(f"r{n}", pool="registry_bag") for n in range(3)] + [_ingest(f"d{n}") for n in range(5)]
    assert run_plan(plan, _starter(journal, seconds=0.4), parallel=parallel,
                    pool_slots={"registry_bag": 1, "dropzone": 4})
    events = _events(journal)
    assert len(events) == 16
    assert _most_at_once(events) == parallel
    assert _most_at_once(events, {f"ggm_ingest_r{n}" for n in range(3)}) == 1


def test_a_plan_that_waits_on_itself_is_refused_instead_of_spinning():
    plan = [PlannedRun("x", frozenset({"Y"}), frozenset({"X"}), "spark"),
            PlannedRun("y", frozenset({"X"}), frozenset({"Y"}), "spark")]
    with pytest.raises(RuntimeError, match="wait on each other"):
        run_plan(plan, lambda run: pytest.fail("nothing may start"), parallel=2, pool_slots={})


def test_the_day_plan_chains_every_source_to_its_silver_gold_and_share():
    from ggm_lakehouse.orchestration import SOURCES, gold_domeinen, silver_groups

    plan = {run.dag_id: run for run in day_plan(list(SOURCES))}
    assert {f"ggm_ingest_{s}" for s in SOURCES} | {g.dag_id for g in silver_groups()} \
        | {f"ggm_gold_{d}" for d in gold_domeinen()} | {"ggm_share"} == set(plan)
    assert plan["ggm_silver_brp"].needs >= {"brp", "NUMMERAANDUIDING"}
    assert plan["ggm_share"].any_need and "inwoners_per_buurt" in plan["ggm_share"].needs
    # Silver BRP is planned and will be skipped: it checks references against BAG's NUMMERAANDUIDING.
    assert {run.dag_id for run in day_plan(["brp"])} == {"ggm_ingest_brp", "ggm_silver_brp"}



def test_the_run_on_the_longest_remaining_path_starts_first(tmp_path):
    """Last run's seconds decide: a long ingest, or a short one whose chain is long, goes before short work with slack."""
    from ggm_lakehouse.airflow_runner import previous_durations

    progress = tmp_path / "runs" / "2026-06-08" / "logs" / "ggm-run-x.progress.jsonl"
    progress.parent.mkdir(parents=True)
    lines = [{"dag_id": "ggm_ingest_short", "state": "success", "seconds": 2.0},
             {"dag_id": "ggm_ingest_long", "state": "success", "seconds": 40.0},
             {"dag_id": "ggm_ingest_chain", "state": "success", "seconds": 5.0},
             {"dag_id": "ggm_silver_chain", "state": "success", "seconds": 60.0},
             {"dag_id": "ggm_ingest_short", "state": "running", "seconds": None}]
    progress.write_text("\n".join(json.dumps(line) for line in lines) + "\n{truncated", encoding="utf-8")
    rerun = tmp_path / "runs" / "2026-06-09" / "logs" / "ggm-run-y.progress.jsonl"
    rerun.parent.mkdir(parents=True)
    rerun.write_text(json.dumps({"dag_id": "ggm_silver_chain", "state": "success", "seconds": 1.5}) + "\n", encoding="utf-8")
    expected = previous_durations(tmp_path / "runs")
    # The longest of the recent runs: a rerun that skipped its work does not make a stage look short.
    assert expected == {"ggm_ingest_short": 2.0, "ggm_ingest_long": 40.0, "ggm_ingest_chain": 5.0, "ggm_silver_chain": 60.0}

    journal = tmp_path / "journal.jsonl"
    plan = [_ingest("short"), _ingest("long"), _ingest("chain"),
            PlannedRun("ggm_silver_chain", frozenset({"chain"}), frozenset({"C"}), "spark")]
    assert run_plan(plan, _starter(journal, seconds=0.05), parallel=1, pool_slots={}, expected=expected)
    starts = [e["dag"] for e in _events(journal) if e["event"] == "start"]
    assert starts == ["ggm_ingest_chain", "ggm_silver_chain", "ggm_ingest_long", "ggm_ingest_short"]
