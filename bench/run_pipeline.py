"""Benchmark of the daily pipeline: generate → extract (real HTTP) → bronze → silver → gold.

    .venv/bin/python bench/run_pipeline.py --population 10000 [--seed 42] [--date 2026-01-01] [--out report.json]

Every run uses a fresh temporary data root (lake, landing and drop zone follow
``GGM_DATA_ROOT``) and a random pseudonymisation key, so it never touches the
checkout's ``data/`` and two runs never see each other's tables. Each stage is
timed as wall time and reports the rows it processed, giving rows per second.

The *engine floor* is a plain Delta copy of the same bronze rows in the same
SparkSession (read every bronze table, write it unchanged to a new Delta path).
``silver_time / plain_copy_time`` says how much of the silver time is the mapping
logic itself rather than what any Delta read + write of that data costs.

The report is printed as JSON and as a Markdown table; ``--out`` writes the JSON.
Figures are wall times on a shared machine: they are for comparison between runs
on the same machine, never for timed assertions in tests.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import date, datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATE = date(2026, 1, 1)  # the demo world's epoch: no daily simulation needed before generating
REPORT_VERSION = 1
STAGE_ORDER = ("generate", "extract", "bronze", "silver", "gold")


# ---------------------------------------------------------------------------
# environment (must happen before any project module is imported)
# ---------------------------------------------------------------------------


def prepare_environment(data_root: Path) -> None:
    """Point every project root at ``data_root`` and set a throw-away pseudonymisation key.

    The more specific roots (``GGM_LAKE_ROOT`` …) would win over ``GGM_DATA_ROOT``, so
    they are removed: a benchmark must never write into a real lake by accident.
    """
    os.environ["GGM_DATA_ROOT"] = str(data_root)
    for specific in ("GGM_LAKE_ROOT", "GGM_LANDING_ROOT", "GGM_DROPZONE_ROOT", "GGM_SHARING_ROOT"):
        os.environ.pop(specific, None)
    os.environ["GGM_PSEUDONYM_KEY"] = secrets.token_hex(32)
    # spark-submit style: the checkout must be importable when the project is not installed.
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))


# ---------------------------------------------------------------------------
# timing helpers
# ---------------------------------------------------------------------------


class StageTimer:
    """Collects wall-time stages; ``with timer.stage(name) as entry: ... entry["rows"] = n``."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, Any]] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        entry: dict[str, Any] = {"rows": 0, "detail": {}}
        started = time.perf_counter()
        try:
            yield entry
        finally:
            entry["seconds"] = round(time.perf_counter() - started, 3)
            entry["rows_per_second"] = round(entry["rows"] / entry["seconds"], 1) if entry["seconds"] > 0 else None
            self.stages[name] = {"seconds": entry["seconds"], "rows": entry["rows"],
                                 "rows_per_second": entry["rows_per_second"], "detail": entry["detail"]}


def timed_calls(module: Any, attribute: str, sink: dict[str, float], key: Callable[..., str]) -> Callable[[], None]:
    """Wrap ``module.attribute`` so that each call's wall time is added to ``sink[key(*args)]``.

    Only instrumentation of this process (the module's code is unchanged): it gives the
    per-table breakdown that the stage reports do not carry. Returns the undo function.
    """
    original = getattr(module, attribute)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            name = key(*args, **kwargs)
            sink[name] = round(sink.get(name, 0.0) + time.perf_counter() - started, 3)

    setattr(module, attribute, wrapper)
    return lambda: setattr(module, attribute, original)


# ---------------------------------------------------------------------------
# machine description
# ---------------------------------------------------------------------------


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _java_version() -> str | None:
    java = shutil.which("java", path=os.path.join(os.environ["JAVA_HOME"], "bin") if os.environ.get("JAVA_HOME") else None)
    java = java or shutil.which("java")
    if not java:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (out.stderr or out.stdout).strip().splitlines()
    return lines[0] if lines else None


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def describe_machine(spark: Any = None) -> dict[str, Any]:
    """Machine and software versions, so that figures from different machines are not compared blindly."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_total_gib": _memory_total_gib(),
        "python": platform.python_version(),
        "java": _java_version(),
        "pyspark": _package_version("pyspark"),
        "delta_spark_pip": _package_version("delta-spark"),
    }
    try:
        from ggm_lakehouse.spark import DELTA_VERSION, cached_delta_jars

        info["delta_jar"] = DELTA_VERSION
        info["delta_jars_cached"] = [p.name for p in cached_delta_jars() if p.name.startswith("io.delta_delta-spark")]
    except ImportError:  # pragma: no cover - the harness runs inside the checkout
        pass
    if spark is not None:
        info["spark"] = spark.version
        info["spark_master"] = spark.sparkContext.master
        info["spark_shuffle_partitions"] = spark.conf.get("spark.sql.shuffle.partitions")
        info["spark_driver_memory"] = spark.conf.get("spark.driver.memory", None)
    return info


# ---------------------------------------------------------------------------
# the stages
# ---------------------------------------------------------------------------


def stage_generate(timer: StageTimer, population: int, seed: int, logical_date: date):
    """(1) Generate the demo municipality and write the day's drop zone."""
    from demo_gemeente.dropzone import write_dropzone
    from demo_gemeente.generator import build_municipality
    from ggm_lakehouse.config import dropzone_root

    with timer.stage("generate") as entry:
        started = time.perf_counter()
        muni = build_municipality(population=population, seed=seed, as_of=logical_date)
        generated = time.perf_counter()
        files = write_dropzone(muni, dropzone_root())
        objects = {
            "persons": len(muni.persons),
            "woonplaatsen": len(muni.woonplaatsen),
            "openbare_ruimten": len(muni.openbare_ruimten),
            "nummeraanduidingen": len(muni.nummeraanduidingen),
            "panden": len(muni.panden),
            "verblijfsobjecten": len(muni.verblijfsobjecten),
            "wijken": len(muni.wijken),
            "buurten": len(muni.buurten),
        }
        entry["rows"] = sum(objects.values())
        entry["detail"] = {
            "objects": objects,
            "residents": len(muni.residents()),
            "build_seconds": round(generated - started, 3),
            "dropzone_seconds": round(time.perf_counter() - generated, 3),
            "dropzone_files": [p.name for p in files],
        }
    return muni


def stage_extract(timer: StageTimer, muni, logical_date: date, run_id: str, bag_requests_per_second: float | None) -> None:
    """(2) Extract BRP and BAG over real HTTP from the stand-ins, and the gebieden drop zone."""
    from connectors import CONNECTORS, ExtractWindow
    from ggm_lakehouse.config import landing_root
    from standins.server import StandinServers

    window = ExtractWindow.for_day(logical_date, run_id)
    with StandinServers(muni, as_of=logical_date, rate_limit_per_second=None) as servers:
        bag_config: dict[str, Any] = {
            "base_url": servers.bag.url,
            "api_key": servers.bag.api_key,
            "woonplaats_ids": sorted(muni.woonplaatsen),
        }
        if bag_requests_per_second is not None:
            bag_config["requests_per_second"] = bag_requests_per_second
        connectors = {
            "brp": CONNECTORS["brp"]({"base_url": servers.brp.url, "api_key": servers.brp.api_key}),
            "bag": CONNECTORS["bag"](bag_config),
            "gebieden": CONNECTORS["gebieden"]({}),
        }
        with timer.stage("extract") as entry:
            per_connector: dict[str, Any] = {}
            for name, connector in connectors.items():
                started = time.perf_counter()
                results = connector.extract(window, landing_root())
                seconds = time.perf_counter() - started
                records = sum(r.record_count for r in results)
                requests_made = sum(len(r.manifest["parts"]) for r in results)
                per_connector[name] = {
                    "seconds": round(seconds, 3),
                    "records": records,
                    "parts": requests_made,
                    "bytes": sum(int(p.get("bytes", 0)) for r in results for p in r.manifest["parts"]),
                    "datasets": {r.dataset: r.record_count for r in results},
                }
                if name == "bag":
                    rps = connector.config.get("requests_per_second", connector.default_requests_per_second)
                    per_connector[name]["client_requests_per_second"] = rps
                    # The connector spaces requests 1/rps apart: a floor that no server speed can beat.
                    per_connector[name]["throttle_floor_seconds"] = round(requests_made / rps, 1) if rps else 0.0
                entry["rows"] += records
            entry["detail"] = per_connector


def spark_jobs_in_group(spark, group: str) -> int:
    """How many Spark jobs ran under job group ``group`` (0 when the status store forgot them)."""
    return len(spark.sparkContext.statusTracker().getJobIdsForGroup(group))


@contextmanager
def job_group(spark, group: str) -> Iterator[None]:
    """Tag the Spark jobs started inside the block, so that they can be counted afterwards."""
    spark.sparkContext.setJobGroup(group, group)
    try:
        yield
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)


def stage_spark(timer: StageTimer, logical_date: date, run_id: str, spark) -> dict[str, Any]:
    """(3–5) Bronze, silver and gold via the production entry point, with a per-table breakdown."""
    from jobs import bronze, silver
    from jobs.entrypoint import run_stage

    reports: dict[str, Any] = {}

    parse_seconds: dict[str, float] = {}
    undo = timed_calls(bronze, "batch_rows", parse_seconds, key=lambda batch, *_a, **_k: batch.bronze_table)
    try:
        with timer.stage("bronze") as entry, job_group(spark, "bench-bronze"):
            report = run_stage(spark, "bronze", logical_date, run_id)
            entry["rows"] = sum(t["rows"] for t in report["tables"].values())
            entry["detail"] = {
                "tables": {name: t["rows"] for name, t in report["tables"].items()},
                # Python-side work in the driver (read parts, parse JSON/CSV, hash every record).
                "python_parse_seconds": parse_seconds,
            }
        entry["detail"]["spark_jobs"] = spark_jobs_in_group(spark, "bench-bronze")
    finally:
        undo()
    reports["bronze"] = report

    conform_seconds: dict[str, float] = {}
    undo_timing = timed_calls(silver, "conform", conform_seconds, key=lambda ctx, mapping, *_a, **_k: mapping.target)
    timed_conform = silver.conform

    def conform_in_job_group(ctx, mapping, *args, **kwargs):
        with job_group(spark, f"bench-silver-{mapping.target}"):
            return timed_conform(ctx, mapping, *args, **kwargs)

    silver.conform = conform_in_job_group

    def undo() -> None:
        silver.conform = timed_conform
        undo_timing()

    try:
        with timer.stage("silver") as entry:
            report = run_stage(spark, "silver", logical_date, run_id)
            entry["rows"] = sum(t["source_rows"] for t in report["tables"].values())
            entry["detail"] = {
                "tables": {
                    name: {
                        "seconds": conform_seconds.get(name),
                        "spark_jobs": spark_jobs_in_group(spark, f"bench-silver-{name}"),
                        "source": t["source"],
                        "source_rows": t["source_rows"],
                        "conformed_rows": t["conformed_rows"],
                        "quarantined": sum(t["quarantined"].values()),
                    }
                    for name, t in report["tables"].items()
                },
                "note": "rows = bronze rows read per mapping (brp_personen is read by two mappings)",
            }
    finally:
        undo()
    reports["silver"] = report

    with timer.stage("gold"), job_group(spark, "bench-gold"):
        report = run_stage(spark, "gold", logical_date, run_id)
    reports["gold"] = report
    return reports


def gold_input_rows(spark, logical_date: date) -> dict[str, int]:
    """Silver rows valid on the logical date of the tables the gold mart reads (counted after timing)."""
    from jobs.gold import silver_as_of

    tables = ("INGESCHREVENPERSOON", "NATUURLIJKPERSOON", "NUMMERAANDUIDING", "BUURT", "WIJK")
    return {t: silver_as_of(spark, t, logical_date).count() for t in tables}


def plain_delta_copy(timer: StageTimer, spark, copy_root: Path) -> None:
    """The engine floor: every bronze table read and written unchanged to a new Delta path."""
    from ggm_lakehouse.config import lake_root

    bronze_tables = sorted(p for p in (lake_root() / "bronze").iterdir() if (p / "_delta_log").is_dir())
    with timer.stage("plain_delta_copy") as entry, job_group(spark, "bench-copy"):
        per_table = {}
        for table in bronze_tables:
            started = time.perf_counter()
            frame = spark.read.format("delta").load(str(table))
            frame.write.format("delta").mode("overwrite").save(str(copy_root / table.name))
            per_table[table.name] = round(time.perf_counter() - started, 3)
        entry["detail"] = {"spark_jobs": spark_jobs_in_group(spark, "bench-copy")}
    # Counted from the copies after the timed block, so the count is not part of the floor.
    rows = {t.name: spark.read.format("delta").load(str(copy_root / t.name)).count() for t in bronze_tables}
    stage = timer.stages["plain_delta_copy"]
    stage["rows"] = sum(rows.values())
    stage["rows_per_second"] = round(stage["rows"] / stage["seconds"], 1) if stage["seconds"] > 0 else None
    stage["detail"]["tables"] = {name: {"seconds": per_table[name], "rows": rows[name]} for name in rows}


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------


def markdown_table(report: dict[str, Any]) -> str:
    """The stage figures as a Markdown table (plus the engine-floor ratio)."""
    lines = [
        f"population {report['population']:,}, seed {report['seed']}, logical date {report['logical_date']}",
        "",
        "| stage | wall time (s) | rows | rows/s |",
        "|---|---:|---:|---:|",
    ]
    for name in (*STAGE_ORDER, "plain_delta_copy"):
        stage = report["stages"].get(name)
        if stage is None:
            continue
        rps = f"{stage['rows_per_second']:,.0f}" if stage["rows_per_second"] is not None else "–"
        lines.append(f"| {name} | {stage['seconds']:,.1f} | {stage['rows']:,} | {rps} |")
    lines.append(f"| **pipeline total** (generate…gold) | {report['pipeline_seconds']:,.1f} | | |")
    lines.append("")
    lines.append(f"Spark session start: {report['spark_startup_seconds']:.1f} s (not in any stage).")
    lines.append(f"silver / plain Delta copy of the same bronze rows: **{report['silver_to_plain_copy_ratio']:.1f}×**")
    return "\n".join(lines)


def run_benchmark(population: int, seed: int, logical_date: date, keep: bool = False,
                  bag_requests_per_second: float | None = None) -> dict[str, Any]:
    """Run every stage once in a fresh data root; returns the JSON-serialisable report."""
    data_root = Path(tempfile.mkdtemp(prefix="ggm-bench-"))
    prepare_environment(data_root)
    run_id = f"manual__bench-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}"
    timer = StageTimer()
    load_before = os.getloadavg()
    started_at = datetime.now(timezone.utc)
    try:
        muni = stage_generate(timer, population, seed, logical_date)
        stage_extract(timer, muni, logical_date, run_id, bag_requests_per_second)
        del muni  # the stand-ins are down; free the object graph before Spark starts

        from ggm_lakehouse.spark import get_spark

        spark_started = time.perf_counter()
        spark = get_spark("ggm-bench")
        spark.range(1).count()  # the JVM and Delta classes are really up before any stage is timed
        spark_startup = time.perf_counter() - spark_started

        reports = stage_spark(timer, logical_date, run_id, spark)
        timer.stages["gold"]["rows"] = sum(gold_input_rows(spark, logical_date).values())
        gold = timer.stages["gold"]
        gold["rows_per_second"] = round(gold["rows"] / gold["seconds"], 1) if gold["seconds"] > 0 else None
        gold["detail"] = {
            "marts": reports["gold"]["tables"],
            "spark_jobs": spark_jobs_in_group(spark, "bench-gold"),
            "note": "rows = silver rows valid on the logical date in the five tables the mart reads",
        }
        plain_delta_copy(timer, spark, data_root / "bench-copy")
        machine = describe_machine(spark)
    finally:
        if not keep:
            shutil.rmtree(data_root, ignore_errors=True)

    pipeline_seconds = sum(timer.stages[s]["seconds"] for s in STAGE_ORDER)
    copy_seconds = timer.stages["plain_delta_copy"]["seconds"]
    return {
        "report_version": REPORT_VERSION,
        "population": population,
        "seed": seed,
        "logical_date": logical_date.isoformat(),
        "run_id": run_id,
        "started_at": started_at.isoformat(),
        "data_root": str(data_root) if keep else None,
        "stages": {name: timer.stages[name] for name in (*STAGE_ORDER, "plain_delta_copy")},
        "pipeline_seconds": round(pipeline_seconds, 3),
        "spark_startup_seconds": round(spark_startup, 3),
        "silver_to_plain_copy_ratio": round(timer.stages["silver"]["seconds"] / copy_seconds, 2) if copy_seconds else None,
        # The machine is shared (other engineers run tests on it): load average says how shared.
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "peak_rss_mib_python_driver": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": machine,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the GGM Lakehouse daily pipeline on the demo municipality.")
    parser.add_argument("--population", type=int, required=True, help="persons in the demo municipality")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--date", type=date.fromisoformat, default=DEFAULT_DATE,
                        help=f"logical date (default {DEFAULT_DATE}, the demo epoch; later dates simulate every day in between)")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data root for inspection")
    parser.add_argument("--bag-requests-per-second", type=float, default=None,
                        help="override the BAG connector's client-side request spacing (default: the connector's own)")
    args = parser.parse_args(argv)
    if args.population < 1:
        parser.error("--population must be positive")

    report = run_benchmark(args.population, args.seed, args.date, keep=args.keep,
                           bag_requests_per_second=args.bag_requests_per_second)
    print(json.dumps(report, indent=2, sort_keys=False))
    print()
    print(markdown_table(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
