"""Benchmark of the Spark Connect server's settings: one landed day through every stage, per setting.

    .venv/bin/python bench/server_settings.py --landed /path/to/data-root [--date 2026-11-28] [--settings on,off]
    .venv/bin/python bench/server_settings.py --population 3000            # lands a day first (ggm run)

For each value of ``GGM_SPARK_SMALL_DATA`` it starts a fresh server, copies the landing zone of the
landed day into a fresh data root, and runs bronze, then silver per source, then gold per domein,
one after another in one client (no Airflow, no parallel DAG runs, every stage in full), so that
the figures differ only by the server's settings. It reports per layer the wall time and the CPU
seconds the server's JVM used (Python UDF workers not included), with the machine's load average.

Figures are for comparing settings on the same machine, never for timed assertions in tests.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["gebieden", "bag", "cbs", "brp", "kvk", "hr", "iwmo", "xaf", "begroting", "subsidies", "vth",
           "vroegsignalering", "suite4"]
DOMEINEN = ["demografie", "sociaal_domein", "schuldhulp", "financien", "bedrijfsvoering", "subsidies", "veiligheid"]


def _server_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _land_a_day(day: date, population: int) -> Path:
    """A data root with ``day`` landed by ``ggm run`` (the whole day; only its landing zone is used)."""
    root = Path(tempfile.mkdtemp(prefix="ggm-bench-landed-"))
    env = {**os.environ, "GGM_DATA_ROOT": str(root / "data"), "AIRFLOW_HOME": str(root / "airflow"),
           "GGM_SPARK_CONNECT_DIR": str(root / "spark-connect")}
    subprocess.run([sys.executable, "-m", "ggm_lakehouse.cli", "run", "--date", day.isoformat(),
                    "--population", str(population)], env=env, cwd=PROJECT_ROOT, check=True, capture_output=True)
    return root / "data"


def _stages(day: date) -> dict:
    """Every stage of ``day`` in this process's data root, on the running server: seconds and server CPU per layer."""
    from ggm_lakehouse import spark_connect
    from ggm_lakehouse.spark import connect_session
    from jobs import bronze
    from jobs.entrypoint import run_stage

    pid = spark_connect.status()["pid"]
    spark = connect_session(spark_connect.client_url())
    started, cpu_before = time.monotonic(), _server_cpu_seconds(pid)
    layers = {}

    def mark(layer: str, since: tuple[float, float]) -> tuple[float, float]:
        now = (time.monotonic(), _server_cpu_seconds(pid))
        layers[layer] = {"seconds": round(now[0] - since[0], 1), "server_cpu_seconds": round(now[1] - since[1], 1)}
        return now

    since = (started, cpu_before)
    bronze.run(spark, day, None)  # every landed batch, whatever run landed it
    since = mark("bronze", since)
    for source in SOURCES:
        run_stage(spark, "silver", day, "bench", source=source)
    since = mark("silver", since)
    for domein in DOMEINEN:
        run_stage(spark, "gold", day, "bench", domein=domein)
    mark("gold", since)
    layers["total"] = {"seconds": round(time.monotonic() - started, 1),
                       "server_cpu_seconds": round(_server_cpu_seconds(pid) - cpu_before, 1)}
    spark.stop()
    return layers


def run_setting(setting: str, landed: Path, day: date) -> dict:
    """One fresh server with ``GGM_SPARK_SMALL_DATA=setting`` and one fresh lake: the day's stages."""
    root = Path(tempfile.mkdtemp(prefix=f"ggm-bench-settings-{setting}-"))
    (root / "data").mkdir()
    for part in ("landing", "config"):
        if (landed / part).is_dir():
            shutil.copytree(landed / part, root / "data" / part)
    os.environ.update({"GGM_DATA_ROOT": str(root / "data"), "GGM_SPARK_CONNECT_DIR": str(root / "spark-connect"),
                       "GGM_SPARK_SMALL_DATA": setting, "GGM_SKIP_UNCHANGED": "0"})
    from ggm_lakehouse import spark_connect

    load_before = os.getloadavg()
    spark_connect.start()
    try:
        layers = _stages(day)
    finally:
        spark_connect.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {"small_data": setting, "date": day.isoformat(), "layers": layers,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--landed", type=Path, help="a data root whose landing zone holds the day (else one is landed)")
    parser.add_argument("--date", type=date.fromisoformat, default=date(2026, 11, 28), help="YYYY-MM-DD")
    parser.add_argument("--population", type=int, default=3000, help="residents, when a day is landed first")
    parser.add_argument("--settings", default="on,off", help="values of GGM_SPARK_SMALL_DATA, comma separated")
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    for name in ("GGM_SPARK_REMOTE", "AIRFLOW_CONN_GGM_SPARK", "GGM_PSEUDONYM_KEY"):
        os.environ.pop(name, None)
    landed = args.landed or _land_a_day(args.date, args.population)
    results = [run_setting(setting, landed, args.date) for setting in args.settings.split(",")]
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT_ROOT))
    raise SystemExit(main())
