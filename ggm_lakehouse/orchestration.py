"""What the DAG files wire: sources, their schedules and owners, pools, Assets and run dates.

The DAG files in ``dags/`` only loop over what this module declares, so adding a
source, a mapping or a mart changes the DAGs without touching them:

* one **ingest DAG** per source (``ggm_ingest_<source>``): extract → bronze, on the
  source's own schedule, owner and pool; it updates the Asset ``ggm://bronze/<source>``;
* one **silver DAG** per source (``ggm_silver_<source>``), scheduled on the bronze Assets
  of every source its mappings read (a lookup makes a dependency); it updates one Asset
  per GGM table, ``ggm://silver/<TABLE>``;
* one **gold DAG** per domein (``ggm_gold_<domein>``), scheduled on the silver Assets its marts
  read, updating ``ggm://gold/<mart>`` for each mart and publishing the dashboard;
* the **share DAG** (``ggm_share``), scheduled on any shared gold Asset.

A late source therefore delays only the silver tables and marts that read it.

Asset-triggered runs have no logical date of their own; every Asset event carries the
logical date it was produced for in its ``extra``, and downstream runs process the
dates of their triggering events, oldest first (:func:`run_dates`).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Mapping

# The sources are a declaration of the model layer; the DAG files loop over them from here.
from ggm_lakehouse.model.sources import SOURCES, SourceSpec  # noqa: F401

ASSET_SCHEME = "ggm"
DEFAULT_RETRY_DELAY = timedelta(minutes=5)

# Pools and their sizes; a pool's slots bound how many tasks hit that system at once. BAG has a
# 50 requests/second limit per key that one extract already uses up, so it gets a single slot.
POOLS: dict[str, tuple[int, str]] = {
    "registry_brp": (2, "BRP Personen: concurrent extracts against the Haal Centraal API"),
    "registry_bag": (1, "BAG IB: one extract at a time (50 requests/second per API key)"),
    "registry_kvk": (1, "KvK API: one extract at a time (rate limit per API key)"),
    "registry_cbs": (1, "CBS StatLine OData: one extract at a time"),
    "dropzone": (4, "Departmental drop zones on local disk"),
    "source_databases": (2, "Application databases read by SQL connectors (read-only)"),
    "spark": (2, "Spark stages on the embedded default (2 cores)"),
}


def task_retries() -> int:
    """Retries per task: ``GGM_TASK_RETRIES`` (default 2; tests and the UI check set 0)."""
    return int(os.environ.get("GGM_TASK_RETRIES", "2"))


def default_args(owner: str) -> dict[str, Any]:
    """Task defaults of every GGM DAG: owner, retries with back-off, failure notification."""
    from ggm_lakehouse.alerts import notify_task_failure

    return {
        "owner": owner,
        "retries": task_retries(),
        "retry_delay": DEFAULT_RETRY_DELAY,
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "on_failure_callback": notify_task_failure,
    }


def daily_deadline(hours_after_queued: float | None = None):
    """A deadline alert for a daily run that is late (``GGM_DEADLINE_HOURS``, default 4 hours after queueing).

    ``GGM_DEADLINE_HOURS=off`` disables it: in-process ``dag.test`` runs (``ggm run``) cannot
    evaluate deadline alerts in Airflow 3.3, which looks them up by the id the scheduler's
    DAG serialisation gives them.
    """
    setting = os.environ.get("GGM_DEADLINE_HOURS", "4")
    if hours_after_queued is None and setting.lower() == "off":
        return None
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    from ggm_lakehouse.alerts import notify_deadline_missed

    hours = hours_after_queued if hours_after_queued is not None else float(setting)
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=hours),
        callback=AsyncCallback(notify_deadline_missed, kwargs={"hours": hours}),
        name="daily run late",
    )


# ---------------------------------------------------------------------------
# Assets
# ---------------------------------------------------------------------------

def bronze_asset(source: str):
    from airflow.sdk import Asset

    return Asset(f"{ASSET_SCHEME}://bronze/{source}", group="bronze")


def silver_asset(table: str):
    from airflow.sdk import Asset

    return Asset(f"{ASSET_SCHEME}://silver/{table}", group="silver")


def gold_asset(mart: str):
    from airflow.sdk import Asset

    return Asset(f"{ASSET_SCHEME}://gold/{mart}", group="gold")


def all_of(assets: list):
    """Asset condition true when every one of ``assets`` was updated."""
    from functools import reduce

    return assets[0] if len(assets) == 1 else reduce(lambda a, b: a & b, assets)


def any_of(assets: list):
    """Asset condition true when any of ``assets`` was updated."""
    from functools import reduce

    return assets[0] if len(assets) == 1 else reduce(lambda a, b: a | b, assets)


@dataclass(frozen=True)
class SilverGroup:
    """The silver tables conformed from one source, the sources whose bronze they need and
    the silver tables of other groups their reference rules check (``references``)."""

    source: str
    tables: tuple[str, ...]
    needs: tuple[str, ...]
    references: tuple[str, ...] = ()

    def schedule_assets(self) -> list:
        """Bronze Assets of the needed sources and silver Assets of the referenced tables."""
        return [bronze_asset(s) for s in self.needs] + [silver_asset(t) for t in self.references]

    @property
    def dag_id(self) -> str:
        return f"ggm_silver_{self.source}"


def silver_groups() -> list[SilverGroup]:
    """One group per source that has mappings, from the mapping files, in dependency order."""
    from ggm_lakehouse.model.mappings import load_all

    mappings = load_all()
    groups: dict[str, dict[str, set]] = {}
    for mapping in mappings:
        group = groups.setdefault(mapping.source_system, {"tables": set(), "needs": set(), "deps": set()})
        group["tables"].add(mapping.target)
        group["needs"].update(mapping.bronze_sources)
        group["deps"].update(mapping.depends_on)
    known = {m.target for m in mappings}
    result = [
        SilverGroup(s, tuple(sorted(g["tables"])), tuple(sorted(g["needs"])),
                    tuple(sorted((g["deps"] & known) - g["tables"])))
        for s, g in sorted(groups.items())
    ]
    ordered: list[SilverGroup] = []
    done: set[str] = set()
    while result:
        ready = [g for g in result if set(g.references) <= done]
        if not ready:
            raise ValueError(f"silver groups reference each other in a cycle: {[g.source for g in result]}")
        for group in ready:
            ordered.append(group)
            done.update(group.tables)
            result.remove(group)
    return ordered


def gold_marts() -> dict[str, tuple[str, ...]]:
    """Each gold mart and the silver tables it reads."""
    from ggm_lakehouse.model.mart_definitions import mart_inputs

    return mart_inputs()


def gold_domeinen() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Each domein with a gold DAG: (its marts, the silver tables that schedule it).

    A mart that reads a table no mapping fills yet (one a municipality declares before wiring its
    source) does not hold its domein's DAG back: its tables are left out of the schedule, and the gold job
    builds it on the first day they exist.
    """
    from ggm_lakehouse.model.mappings import load_all
    from ggm_lakehouse.model.mart_definitions import load_mart_definitions, mart_domeinen, mart_inputs

    definitions = load_mart_definitions()
    domein_of, inputs_of = mart_domeinen(definitions), mart_inputs(definitions)
    mapped = {m.target for m in load_all()}
    domeinen: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for domein in sorted(set(domein_of.values())):
        marts = tuple(sorted(m for m, d in domein_of.items() if d == domein))
        live = [m for m in marts if set(inputs_of[m]) <= mapped] or list(marts)
        inputs = tuple(dict.fromkeys(t for m in live for t in inputs_of[m]))
        domeinen[domein] = (marts, inputs)
    return domeinen


def shared_gold_marts() -> list[str]:
    """Gold marts that some share in ``config/shares.yaml`` exposes."""
    from ggm_lakehouse.model.shares_config import load_shares_config

    marts = set(gold_marts())
    shared = set()
    for share in load_shares_config().shares:
        for table in share.all_tables():
            name = table.resolve_location().name
            if name in marts:
                shared.add(name)
    return sorted(shared)


# ---------------------------------------------------------------------------
# run dates
# ---------------------------------------------------------------------------

def asset_event_extra(logical_date: date, run_id: str, **more: Any) -> dict[str, Any]:
    """The ``extra`` every GGM Asset event carries: the day it covers and the run that made it."""
    return {"logical_date": logical_date.isoformat(), "run_id": run_id, **more}


def run_dates(context: Mapping[str, Any]) -> list[date]:
    """The logical dates a run processes, oldest first.

    Scheduled and manual runs have a logical date. Asset-triggered runs take the dates of
    their triggering events (several when upstream ran more than once before this run
    started, e.g. during a backfill, or when an upstream run caught up missed days and lists
    them in the event's ``days``); ``dag_run.conf["logical_dates"]`` overrides both.
    """
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    if conf.get("logical_dates"):
        return sorted({date.fromisoformat(d) for d in conf["logical_dates"]})
    logical = context.get("logical_date")
    if logical is not None:
        return [logical.date() if isinstance(logical, datetime) else logical]
    dates: set[date] = set()
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in events:
            extra = getattr(event, "extra", None) or {}
            # A run that conformed several days (a catch-up) names them all in ``days``.
            for day in [extra.get("logical_date"), *(extra.get("days") or [])]:
                if day:
                    dates.add(date.fromisoformat(day))
    if not dates:
        raise ValueError("this run has no logical date and no triggering Asset event names one")
    return sorted(dates)


def catch_up_window_days() -> int:
    """How recent (in days of wall-clock time) an upstream report must be for an Asset-triggered
    silver or gold run to catch its day up (``GGM_CATCHUP_DAYS``, default 14)."""
    return int(os.environ.get("GGM_CATCHUP_DAYS", "14"))


def stale_days(inputs: list[str], own: str, window_days: int | None = None, now: float | None = None) -> list[date]:
    """Days whose run reports ``inputs`` all exist and are newer than the report ``own``, oldest first.

    Only days whose newest input report was written in the last ``window_days`` days (wall-clock
    time) count. This is the scheduler safety net of the Asset-triggered DAGs: Airflow can leave an
    Asset event that arrives while a run of the consuming DAG is queued (``max_active_runs=1``)
    without a run of its own (apache/airflow#56050), and without this the day would never be
    processed. The window is wall-clock time, not distance to the triggering date, because a
    backfill lands days far in the past next to today's run and any of their events can be the
    one that reached no run; a day that keeps failing drops out of the safety net once its input
    is older than the window.
    """
    from ggm_lakehouse.reports import report_times

    window_days = catch_up_window_days() if window_days is None else window_days
    oldest_write = (time.time() if now is None else now) - window_days * 86400
    if not inputs:
        return []
    stale = []
    for day, written in sorted(report_times({*inputs, own}).items()):
        if not all(name in written for name in inputs):
            continue
        newest_input = max(written[name] for name in inputs).timestamp()
        if newest_input < oldest_write:
            continue
        if own not in written or written[own].timestamp() < newest_input:
            stale.append(day)
    return stale


def _silver_producers() -> dict[str, str]:
    return {table: g.source for g in silver_groups() for table in g.tables}


def missed_silver_dates(group: "SilverGroup", window_days: int | None = None, now: float | None = None) -> list[date]:
    """Days whose bronze is newer than this group's silver (:func:`stale_days`), oldest first.

    The inputs are the bronze reports of every source the group needs and the silver reports of
    the groups whose tables its reference rules check.
    """
    producers = _silver_producers()
    inputs = [f"bronze_{s}" for s in group.needs] + sorted(
        {f"silver_{producers[t]}" for t in group.references if t in producers}
    )
    return stale_days(inputs, f"silver_{group.source}", window_days, now)


def missed_gold_dates(domein: str, inputs: tuple[str, ...], window_days: int | None = None,
                      now: float | None = None) -> list[date]:
    """Days whose silver inputs are newer than the domein's gold (:func:`stale_days`), oldest first.

    ``inputs`` are the silver tables that schedule the domein's DAG; the reports compared are
    those of the silver groups that produce them.
    """
    producers = _silver_producers()
    reports = sorted({f"silver_{producers[t]}" for t in inputs if t in producers})
    return stale_days(reports, f"gold_{domein}", window_days, now)


def _explicit_dates(context: Mapping[str, Any]) -> bool:
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    return bool(conf.get("logical_dates")) or context.get("logical_date") is not None


def silver_run_dates(context: Mapping[str, Any], group: "SilverGroup") -> list[date]:
    """:func:`run_dates` of a silver run, plus the missed days (:func:`missed_silver_dates`) when Asset-triggered.

    Runs with explicit dates (``conf["logical_dates"]`` or a logical date) process exactly
    those; only Asset-triggered runs catch up.
    """
    dates = run_dates(context)
    if _explicit_dates(context):
        return dates
    return sorted(set(dates) | set(missed_silver_dates(group)))


def gold_run_dates(context: Mapping[str, Any], domein: str, inputs: tuple[str, ...]) -> list[date]:
    """:func:`run_dates` of a gold run, plus the missed days (:func:`missed_gold_dates`) when Asset-triggered."""
    dates = run_dates(context)
    if _explicit_dates(context):
        return dates
    return sorted(set(dates) | set(missed_gold_dates(domein, inputs)))


def ensure_pools() -> dict[str, int]:
    """Create or resize the pools of :data:`POOLS` in the Airflow metadata DB (idempotent)."""
    from airflow.models.pool import Pool

    for name, (slots, description) in POOLS.items():
        Pool.create_or_update_pool(name=name, slots=slots, description=description, include_deferred=False)
    return {name: slots for name, (slots, _) in POOLS.items()}
