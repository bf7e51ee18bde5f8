"""Benchmark of one whole day through Airflow, per runtime: one Spark Connect server, or a spark-submit per stage.

    .venv/bin/python bench/day_runtime.py --population 3000 --targets connect,local [--date 2026-11-28] [--out r.json]

For each target it runs ``ggm run`` (the same command as ``make run``) in a fresh data root and a
fresh Airflow home, reads the run's progress file (one line per DAG run with its seconds), and
reports per DAG and in total: wall time, the terminal lines printed, and for ``connect`` the Spark
server's resident memory after the day. A second run of the same date (``--rerun``) shows what a
rerun costs and checks that it changed nothing.

Figures are wall times on a shared machine, reported with its load average: for comparing the two
runtimes on the same machine, never for timed assertions in tests.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _run_day(target: str, day: date, population: int, root: Path) -> dict:
    env = dict(os.environ)
    env.update({"GGM_DATA_ROOT": str(root / "data"), "AIRFLOW_HOME": str(root / "airflow"),
                "GGM_SPARK_TARGET": target, "GGM_SPARK_CONNECT_DIR": str(root / "spark-connect")})
    for name in ("AIRFLOW_CONN_GGM_SPARK", "GGM_SPARK_REMOTE", "GGM_PSEUDONYM_KEY"):
        env.pop(name, None)
    started, load_before = time.monotonic(), os.getloadavg()
    completed = subprocess.run([sys.executable, "-m", "ggm_lakehouse.cli", "run", "--date", day.isoformat(),
                                "--population", str(population)], env=env, capture_output=True, text=True,
                               cwd=PROJECT_ROOT)
    seconds = round(time.monotonic() - started, 1)
    progresses = sorted((root / "data" / "runs" / day.isoformat() / "logs").glob("*.progress.jsonl"))
    if not progresses:
        raise SystemExit(f"ggm run ({target}, {day}) ran no DAG (exit {completed.returncode}):\n"
                         f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    progress = progresses[-1]
    events = [json.loads(line) for line in progress.read_text().splitlines() if line.strip()]
    return {
        "target": target, "date": day.isoformat(), "population": population, "returncode": completed.returncode,
        "wall_seconds": seconds, "terminal_lines": len(completed.stdout.splitlines()) + len(completed.stderr.splitlines()),
        "load_average_before": [round(x, 2) for x in load_before], "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "dags": {e["dag_id"]: e["seconds"] for e in events if e["state"] != "running"},
    }


def _server_memory(root: Path) -> float | None:
    os.environ["GGM_SPARK_CONNECT_DIR"] = str(root / "spark-connect")
    from ggm_lakehouse.spark_connect import status

    return status().get("memory_mb")


def run(targets: list[str], population: int, day: date, rerun: bool) -> list[dict]:
    """One day (and optionally its rerun and the next day) per target; the server is kept across them."""
    results = []
    for target in targets:
        root = Path(tempfile.mkdtemp(prefix=f"ggm-bench-{target}-"))
        server = None
        if target == "connect":
            # Started here so it outlives each `ggm run` and serves the rerun and the next day warm.
            os.environ["GGM_SPARK_CONNECT_DIR"] = str(root / "spark-connect")
            os.environ["GGM_DATA_ROOT"] = str(root / "data")
            from ggm_lakehouse import spark_connect

            server = spark_connect.start()
        days = [day, day, day + timedelta(days=1)] if rerun else [day]
        try:
            for index, each in enumerate(days):
                result = _run_day(target, each, population, root)
                result["run"] = ["first", "rerun", "next day"][index] if rerun else "first"
                if server:
                    result["server_memory_mb"] = _server_memory(root)
                results.append(result)
        finally:
            if server:
                from ggm_lakehouse import spark_connect

                spark_connect.stop()
    return results


def markdown(results: list[dict]) -> str:
    """A per-DAG table with one column per run."""
    dags = sorted({d for r in results for d in r["dags"]})
    header = "| DAG | " + " | ".join(f"{r['target']} {r['run']}" for r in results) + " |"
    lines = [header, "|---|" + "---:|" * len(results)]
    for dag in dags:
        lines.append(f"| {dag} | " + " | ".join(f"{r['dags'].get(dag, '-')}" for r in results) + " |")
    lines.append("| **wall time (s)** | " + " | ".join(f"**{r['wall_seconds']}**" for r in results) + " |")
    lines.append("| terminal lines | " + " | ".join(str(r["terminal_lines"]) for r in results) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=3000)
    parser.add_argument("--date", type=date.fromisoformat, default=date(2026, 11, 28))
    parser.add_argument("--targets", default="connect,local", help="comma separated: connect, local")
    parser.add_argument("--rerun", action="store_true", help="also rerun the same date and run the next one")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = run([t for t in args.targets.split(",") if t], args.population, args.date, args.rerun)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(markdown(results))
    return 0 if all(r["returncode"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
