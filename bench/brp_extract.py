"""Benchmark of a first BRP day with the Update API: requests one at a time against requests in parallel.

    .venv/bin/python bench/brp_extract.py --population 10000 [--parallel 1 4 8] [--seed 42] [--out report.json]

A first day registers a volgindicatie for every followed person (one ``PUT`` each) and then
queries all of them (one ``POST /personen`` per 20 BSNs). Each setting of
``max_parallel_requests`` runs against fresh stand-ins (BRP Personen and the BRP Update API)
in a child process of their own, so the stand-ins do not share the connector's interpreter,
and lands into a fresh landing zone. The report gives wall time, requests and requests per
second per setting, and the ratio to one request at a time on the same machine; the landed
parts must be byte-identical across settings (the run fails otherwise).

Figures are wall times on a shared machine: for comparison between settings and runs on the
same machine, never for timed assertions in tests.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(PROJECT_ROOT / "bench"))

DAY = date(2026, 1, 1)
UPDATE_KEY = "bench-afnemer"


def _serve(population: int, seed: int, pipe) -> None:
    """Child process: BRP Personen and BRP Update stand-ins until the parent closes the pipe."""
    from demo_gemeente.generator import DemoWorld
    from standins.brp_update import start_brp_update_standin
    from standins.server import StandinServers

    world = DemoWorld(population, seed)
    with StandinServers(world, as_of=DAY, rate_limit_per_second=None) as servers, \
            start_brp_update_standin(world, as_of=DAY, api_keys=[UPDATE_KEY]) as update:
        pipe.send({"base_url": servers.brp.url, "api_key": servers.brp.api_key, "update_base_url": update.url})
        pipe.recv()  # blocks until the parent is done


def _first_day(population: int, seed: int, parallel: int, root: Path) -> dict:
    """One first day at ``parallel`` requests in flight; wall time, counts and a digest of the landed parts."""
    from connectors.base import ExtractWindow
    from connectors.brp import BrpPersonenConnector
    from demo_gemeente.dropzone import write_dropzone
    from demo_gemeente.generator import DemoWorld

    zone = root / f"dropzone-{parallel}"
    write_dropzone(DemoWorld(population, seed).at(DAY), zone)
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(population, seed, child), daemon=True)
    server.start()
    try:
        urls = parent.recv()
        connector = BrpPersonenConnector({**urls, "update_api_key": UPDATE_KEY, "volglijst_dir": str(zone / "brp-volglijst"),
                                          "max_parallel_requests": parallel})
        started = time.perf_counter()
        results = connector.extract(ExtractWindow.for_day(DAY, f"bench-{parallel}"), root / f"landing-{parallel}")
        seconds = time.perf_counter() - started
    finally:
        parent.send("stop")
        server.join(timeout=30)
    [personen] = [r for r in results if r.dataset == "personen"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in personen.part_paths)).hexdigest()
    volgindicaties = personen.manifest["extra"]["update_api"]["volgindicaties"]
    requests = len(personen.part_paths) + volgindicaties.get("registered", 0) + 1  # + the GET /volgindicaties
    return {"parallel": parallel, "seconds": round(seconds, 2), "requests": requests,
            "requests_per_second": round(requests / seconds, 1), "persons": personen.record_count, "parts_sha256": digest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--population", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    from run_pipeline import describe_machine

    with tempfile.TemporaryDirectory(prefix="ggm-bench-brp-") as tmp:
        os.environ["GGM_DATA_ROOT"] = tmp
        rows = [_first_day(args.population, args.seed, n, Path(tmp)) for n in args.parallel]
    base = next((r for r in rows if r["parallel"] == 1), rows[0])
    for row in rows:
        row["ratio_to_one_at_a_time"] = round(row["seconds"] / base["seconds"], 2)
    if len({r["parts_sha256"] for r in rows}) != 1:
        print("landed parts differ between settings", file=sys.stderr)
        return 1
    report = {"population": args.population, "machine": describe_machine(), "load_average": os.getloadavg(), "runs": rows}
    print(json.dumps(report, indent=2))
    print("\n| requests in flight | seconds | requests | requests/s | × one at a time |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['parallel']} | {r['seconds']} | {r['requests']} | {r['requests_per_second']} | {r['ratio_to_one_at_a_time']} |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
