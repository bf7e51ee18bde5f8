"""Benchmark of the Delta Sharing server: latency, throughput, and client reads vs. local reads.

Usage::

    .venv/bin/python bench/sharing_bench.py [--work-dir /tmp/ggm-sharing-bench] [--rows 10000000] [--json out.json]

Builds, in ``--work-dir`` (never in the repository):

* a demo mart with the schema of ``gold/inwoners_per_buurt`` (Demodam-sized: 60 buurten x
  age classes x household types, partitioned by ``peildatum``), and
* a 10-million-row table (``--rows``), 20 ``wijkcode`` partitions, written with deltalake+pyarrow,

materialises a recipient projection of both (``sharing_server.projections``) and starts the
server in a separate process (uvicorn, 127.0.0.1, free port) so client and server do not share
a GIL. It then measures, per table:

* ``query`` latency (POST .../query: protocol, metadata and signed file list), median and p95,
  sequential throughput (queries/s) and throughput with 4 concurrent clients;
* a full read through the official ``delta-sharing`` client (``load_as_pandas``, parquet format),
* the same table read directly from disk (``deltalake`` ``DeltaTable.to_pyarrow_table().to_pandas()``),

and prints the figures and the ratio client/direct as JSON and as a Markdown table.
Bounded: fixed repetition counts, every request to 127.0.0.1 only.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import requests
from deltalake import DeltaTable, write_deltalake

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

SHARES_YAML = """
server:
  rate_limit: {requests_per_second: 100000, burst: 1000000}
shares:
  - name: bench
    schemas:
      - name: marts
        tables:
          - name: inwoners_per_buurt
            location: gold/inwoners_per_buurt
          - name: groot
            location: gold/groot
            columns: [id, wijkcode, buurtcode, leeftijd, bedrag, peildatum]
recipients:
  - name: bench-partner
    shares: [bench]
"""


def demo_mart() -> pa.Table:
    """A mart with the schema of ``gold/inwoners_per_buurt``, Demodam-sized (1,800 rows, one peildatum)."""
    leeftijd = ["0-17", "18-29", "30-44", "45-64", "65-79", "80+"]
    huishouden = ["alleenstaand", "paar", "gezin", "eenouder", "overig"]
    rows = []
    for b in range(60):
        for lk in leeftijd:
            for ht in huishouden:
                count = (b * 7 + len(lk) * 3 + len(ht)) % 40
                rows.append((dt.date(2026, 6, 1), f"WK9999{b // 10:02d}", f"Wijk {b // 10}", f"BU9999{b:04d}",
                             f"Buurt {b}", lk, ht, None if count < 5 else count, count < 5))
    names = ["peildatum", "wijkcode", "wijknaam", "buurtcode", "buurtnaam", "leeftijdsklasse", "huishoudtype",
             "aantal_inwoners", "onderdrukt"]
    columns = list(zip(*rows))
    types = [pa.date32(), pa.string(), pa.string(), pa.string(), pa.string(), pa.string(), pa.string(), pa.int32(), pa.bool_()]
    return pa.table({n: pa.array(c, type=t) for n, c, t in zip(names, columns, types)})


def _write_big(path: Path, rows: int) -> None:
    rng = np.random.default_rng(42)
    chunk = 1_000_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        ids = np.arange(start, start + n, dtype=np.int64)
        table = pa.table(
            {
                "id": ids,
                "wijkcode": pa.array([f"WK{w:02d}" for w in (ids % 20)]),
                "buurtcode": pa.array([f"BU{b:04d}" for b in (ids % 400)]),
                "leeftijd": pa.array(rng.integers(0, 100, n).astype(np.int32)),
                "bedrag": pa.array(rng.random(n) * 1000),
                "peildatum": pa.array([dt.date(2026, 6, 1)] * n, type=pa.date32()),
                "interne_notitie": pa.array(["x"] * n),
            }
        )
        write_deltalake(str(path), table, mode="append" if start else "overwrite", partition_by=["wijkcode"])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(env: dict, *, via_cli: bool = False, log=None) -> tuple[subprocess.Popen, str]:
    """Start the sharing server in a child process on a free 127.0.0.1 port; returns it and its endpoint.

    By default ``uvicorn --factory sharing_server.app:create_app`` without access log; with
    ``via_cli`` the operators' command ``ggm sharing serve`` (uvicorn with the redacting log
    configuration, one line per request). ``log``: a file for the server's stdout and stderr.
    """
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/delta-sharing"
    if via_cli:
        ggm = Path(sys.executable).parent / "ggm"
        prefix = [str(ggm)] if ggm.exists() else [sys.executable, "-c", "import sys; from ggm_lakehouse.cli import main; sys.exit(main())"]
        command = [*prefix, "sharing", "serve", "--host", "127.0.0.1", "--port", str(port)]
    else:
        command = [sys.executable, "-m", "uvicorn", "--factory", "sharing_server.app:create_app", "--host", "127.0.0.1",
                   "--port", str(port), "--log-level", "warning", "--no-access-log", "--no-proxy-headers"]
    # File URLs are built from the configured endpoint; X-Forwarded-For is not believed from anyone.
    process = subprocess.Popen(command, env={**env, "GGM_SHARING_ENDPOINT": endpoint}, cwd=str(PROJECT_ROOT),
                               stdout=log, stderr=log)
    for _ in range(600):
        try:
            requests.get(f"{endpoint}/shares", timeout=1)
            return process, endpoint
        except requests.ConnectionError:
            if process.poll() is not None:
                raise RuntimeError("sharing server exited during startup")
            time.sleep(0.1)
    process.terminate()
    raise RuntimeError("sharing server did not start")


def _timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def _bench_table(endpoint: str, token: str, profile: Path, table: str, location: Path, repeat: int, full_reads: int) -> dict:
    import delta_sharing

    url = f"{endpoint}/shares/bench/schemas/marts/tables/{table}/query"
    headers = {"Authorization": f"Bearer {token}"}
    session = requests.Session()

    def query() -> None:
        response = session.post(url, headers=headers, json={}, timeout=60)
        response.raise_for_status()

    query()  # warm-up: first snapshot load
    latencies = _timed(query, repeat)

    def burst(n: int) -> None:
        with requests.Session() as own:
            for _ in range(n):
                own.post(url, headers=headers, json={}, timeout=60).raise_for_status()

    concurrency, per_worker = 4, max(5, repeat // 4)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(burst, [per_worker] * concurrency))
    concurrent_qps = concurrency * per_worker / (time.perf_counter() - started)

    rows = len(DeltaTable(str(location)).to_pyarrow_table(columns=["wijkcode"]))
    client = _timed(lambda: delta_sharing.load_as_pandas(f"{profile}#bench.marts.{table}"), full_reads)
    direct = _timed(lambda: DeltaTable(str(location)).to_pyarrow_table().to_pandas(), full_reads)
    files = len(DeltaTable(str(location)).file_uris())
    return {
        "table": table,
        "rows": rows,
        "files": files,
        "query_latency_ms_median": round(statistics.median(latencies) * 1000, 1),
        "query_latency_ms_p95": round(sorted(latencies)[int(0.95 * (len(latencies) - 1))] * 1000, 1),
        "queries_per_s_sequential": round(len(latencies) / sum(latencies), 1),
        "queries_per_s_4_clients": round(concurrent_qps, 1),
        "client_full_read_s_median": round(statistics.median(client), 3),
        "direct_read_s_median": round(statistics.median(direct), 3),
        "client_over_direct": round(statistics.median(client) / statistics.median(direct), 2),
        "client_rows_per_s": round(rows / statistics.median(client)),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="/tmp/ggm-sharing-bench")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=50, help="query latency samples per table")
    parser.add_argument("--full-reads", type=int, default=3, help="full-table reads per method")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    work = Path(args.work_dir)
    if work.resolve().is_relative_to(PROJECT_ROOT):
        parser.error("--work-dir must be outside the repository")
    shutil.rmtree(work, ignore_errors=True)
    lake, config_path = work / "lake", work / "shares.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(SHARES_YAML, encoding="utf-8")
    env = {
        **os.environ,
        "GGM_LAKE_ROOT": str(lake),
        "GGM_SHARING_ROOT": str(work / "sharing"),
        "GGM_SHARES_CONFIG": str(config_path),
        "GGM_SHARING_URL_KEY": "bench-url-signing-key-0123456789abcdef",
    }
    os.environ.update({k: env[k] for k in ("GGM_LAKE_ROOT", "GGM_SHARING_ROOT", "GGM_SHARES_CONFIG", "GGM_SHARING_URL_KEY")})

    from sharing_server.projections import materialise_recipient_tables
    from sharing_server.recipients import issue_profile

    setup_started = time.perf_counter()
    write_deltalake(str(lake / "gold" / "inwoners_per_buurt"), demo_mart(), partition_by=["peildatum"])
    _write_big(lake / "gold" / "groot", args.rows)
    generated = time.perf_counter() - setup_started
    started = time.perf_counter()
    report = materialise_recipient_tables(dt.date(2026, 6, 1), export_audit=False)
    materialised = time.perf_counter() - started
    started = time.perf_counter()
    rerun = materialise_recipient_tables(dt.date(2026, 6, 1), export_audit=False)
    rematerialised = time.perf_counter() - started
    assert not any(t["changed"] for t in rerun["recipients"]["bench-partner"].values())

    process, endpoint = start_server(env)
    try:
        profile = work / "bench-partner.share"
        profile.write_text(json.dumps(issue_profile("bench-partner", endpoint=endpoint)), encoding="utf-8")
        token = json.loads(profile.read_text())["bearerToken"]
        tables = report["recipients"]["bench-partner"]
        results = [
            _bench_table(endpoint, token, profile, name.split(".")[-1], Path(entry["location"]), args.repeat, args.full_reads)
            for name, entry in tables.items()
        ]
    finally:
        process.terminate()
        process.wait(timeout=30)
    summary = {
        "machine": f"{os.cpu_count()} cores (shared with other work during the run)",
        "generate_s": round(generated, 1),
        "materialise_s": round(materialised, 1),
        "rematerialise_unchanged_s": round(rematerialised, 1),
        "tables": results,
    }
    print(json.dumps(summary, indent=2))
    header = "| table | rows | files | query p50 ms | query p95 ms | q/s seq | q/s 4 clients | client read s | direct read s | client/direct |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in results:
        print(f"| {r['table']} | {r['rows']:,} | {r['files']} | {r['query_latency_ms_median']} | {r['query_latency_ms_p95']} | "
              f"{r['queries_per_s_sequential']} | {r['queries_per_s_4_clients']} | {r['client_full_read_s_median']} | "
              f"{r['direct_read_s_median']} | {r['client_over_direct']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


if __name__ == "__main__":
    main()
