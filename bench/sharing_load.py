"""Load benchmark of the Delta Sharing server: many concurrent clients, and a memory soak.

Usage::

    .venv/bin/python bench/sharing_load.py [--clients 50] [--duration 60] [--recipients 5] [--json out.json]
    .venv/bin/python bench/sharing_load.py --soak 10 --clients 10 [--json soak.json]

Builds, in ``--work-dir`` (never in the repository), a small gold lake: the Demodam-sized mart
``inwoners_per_buurt`` of ``bench/sharing_bench.py`` (1,800 rows) and its wijk totals; shares
both with ``--recipients`` recipients and materialises their projections
(``sharing_server.projections``). It starts the real server as operators do, ``ggm sharing serve``
in a child process (uvicorn, one worker, 127.0.0.1; its log in ``<work-dir>/server.log``), and
runs ``--clients`` client threads for ``--duration`` seconds. Each client reads with its own
recipient's token (round robin over the recipients) one of the two tables, and repeats a fixed
cycle of calls, each client starting at another point of the cycle:

* through the official ``delta-sharing`` client: ``SharingClient.list_all_tables``,
  ``get_table_metadata`` and ``load_as_pandas`` (query plus downloads of the signed files);
* raw protocol requests with ``requests``: list shares, table version, table metadata, query,
  and the download of a signed data file.

Every answer is checked as a protocol answer (status, headers, JSON or NDJSON lines, Parquet
bytes, the expected tables, rows and columns); an exception, a timeout (60 s) or a wrong answer
counts as an error. The official client retries 429 and 5xx answers by itself, so the server's
own audit log is read afterwards as well: the HTTP requests it answered and their status codes.
The server log is searched for errors. Every ``--sample-every`` seconds (10) the server's RSS
(``VmRSS`` of ``/proc/<pid>/status``) and the machine's load average are sampled.

``--soak MINUTES`` runs that long instead of ``--duration``. Either way the report shows the RSS
before the load, after the first interval (imports, caches and the thread pool warmed up), at the
end and at most, and the slope of the samples from the first interval on and over the second half
(least squares, MiB per hour): whether memory stays flat. It also gives the CPU seconds of the
server and of the client threads (``/proc/<pid>/stat``).

The bench's shares.yaml raises the per-recipient rate limit (the load is meant to reach the
server, not the limiter). The clients are threads of this process and share the machine's cores
with the server. Prints a table; ``--json FILE`` also writes everything, samples included.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import requests

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from bench.sharing_bench import demo_mart, start_server

SHARE, SCHEMA = "load", "marts"
TABLES = ("inwoners_per_buurt", "inwoners_per_wijk")
URL_KEY = "load-bench-url-signing-key-0123456789abcdef"
TIMEOUT_S = 60
OPERATIONS = (
    "raw.list_shares", "raw.table_version", "raw.metadata", "raw.query", "raw.file",
    "client.list_all_tables", "client.table_metadata", "client.load_as_pandas",
)
LOG_ERROR = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback")


class InvalidAnswer(Exception):
    """An answer that is not what the protocol and the shared tables say it must be."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidAnswer(message)


# ----------------------------------------------------------------------------- the lake and the site
@dataclass
class Site:
    """The bench's lake, shares.yaml and sharing root, and what each recipient must read."""

    work: Path
    recipients: list[str]
    expected: dict[tuple[str, str], dict]  # (recipient, table) -> rows, columns, version, files
    env: dict = field(default_factory=dict)

    @property
    def config(self) -> Path:
        """The bench's shares.yaml."""
        return self.work / "shares.yaml"

    @property
    def state(self) -> Path:
        """The server's recipient state (tokens)."""
        return self.work / "sharing" / "recipients.json"

    @property
    def audit_dir(self) -> Path:
        """The server's request audit log."""
        return self.work / "sharing" / "audit"


def _shares_yaml(recipients: list[str]) -> str:
    lines = ["server:", "  rate_limit: {requests_per_second: 100000, burst: 1000000}", "shares:",
             f"  - name: {SHARE}", "    schemas:", f"      - name: {SCHEMA}", "        tables:"]
    for table in TABLES:
        lines += [f"          - name: {table}", f"            location: gold/{table}"]
    lines.append("recipients:")
    for name in recipients:
        lines += [f"  - name: {name}", f"    shares: [{SHARE}]"]
    return "\n".join(lines) + "\n"


def _wijk_totals(mart: pa.Table) -> pa.Table:
    totals = mart.group_by(["peildatum", "wijkcode", "wijknaam"]).aggregate([("aantal_inwoners", "sum")])
    return totals.rename_columns(["peildatum", "wijkcode", "wijknaam", "aantal_inwoners"]).sort_by("wijkcode")


def build_site(work: Path, recipients: int) -> Site:
    """Write the gold tables and shares.yaml into ``work`` (emptied first) and materialise the projections."""
    from deltalake import DeltaTable, write_deltalake

    from ggm_lakehouse.model.shares_config import load_shares_config
    from sharing_server.projections import materialise_recipient_tables

    if work.resolve().is_relative_to(PROJECT_ROOT):
        raise ValueError("the work dir must be outside the repository")
    shutil.rmtree(work, ignore_errors=True)
    names = [f"load-partner-{i + 1}" for i in range(recipients)]
    site = Site(work, names, {})
    (work / "lake" / "gold").mkdir(parents=True)
    site.config.write_text(_shares_yaml(names), encoding="utf-8")
    mart = demo_mart()
    write_deltalake(str(work / "lake" / "gold" / TABLES[0]), mart, partition_by=["peildatum"])
    write_deltalake(str(work / "lake" / "gold" / TABLES[1]), _wijk_totals(mart))
    config = load_shares_config(site.config)
    report = materialise_recipient_tables(pc.max(mart["peildatum"]).as_py(), config_path=site.config,
                                          lake_root=work / "lake", recipients=list(config.recipients), export_audit=False)
    for name, tables in report["recipients"].items():
        for qualified, entry in tables.items():
            files = len(DeltaTable(entry["location"]).file_uris())
            site.expected[(name, qualified.split(".")[-1])] = {
                "rows": entry["rows"], "columns": list(entry["columns"]), "version": entry["version"], "files": files,
            }
    site.env = {
        **os.environ, "GGM_DATA_ROOT": str(work), "GGM_LAKE_ROOT": str(work / "lake"),
        "GGM_SHARING_ROOT": str(work / "sharing"), "GGM_SHARES_CONFIG": str(site.config),
        "GGM_SHARING_URL_KEY": URL_KEY,
    }
    return site


# ----------------------------------------------------------------------------- one client
class Client:
    """One load client: a recipient's profile and token, its own HTTP sessions and its cycle of calls."""

    def __init__(self, index: int, endpoint: str, profile: Path, token: str, table: str, expected: dict, deadline: float):
        self.index, self.endpoint, self.profile, self.table = index, endpoint, profile, table
        self.expected, self.deadline = expected, deadline
        self.path = f"/shares/{SHARE}/schemas/{SCHEMA}/tables/{table}"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.files = requests.Session()  # signed file URLs carry their own credential, as for the official client
        self.file: tuple[str, int] | None = None
        self.latencies: dict[str, list[float]] = collections.defaultdict(list)
        self.errors: collections.Counter = collections.Counter()
        self.examples: list[str] = []

    def run(self) -> None:
        """Call the cycle (starting at this client's own point) until the deadline."""
        self.call("raw.query")  # the first signed file URL for raw.file
        start = self.index % len(OPERATIONS)
        cycle = OPERATIONS[start:] + OPERATIONS[:start]
        while time.monotonic() < self.deadline:
            for name in cycle:
                if time.monotonic() >= self.deadline:
                    break
                self.call(name)
        self.session.close()
        self.files.close()

    def call(self, name: str) -> None:
        """One timed call; an exception or an invalid answer counts as an error of ``name``."""
        started = time.perf_counter()
        try:
            getattr(self, name.replace(".", "_"))()
        except Exception as exc:  # noqa: BLE001 - every failure is counted and one example kept
            self.errors[name] += 1
            if len(self.examples) < 5:
                self.examples.append(f"{name}: {type(exc).__name__}: {exc}"[:400])
        else:
            self.latencies[name].append(time.perf_counter() - started)

    # --- raw protocol requests
    def _get(self, method: str, path: str, **kwargs) -> requests.Response:
        response = self.session.request(method, f"{self.endpoint}{path}", timeout=TIMEOUT_S, **kwargs)
        _check(response.status_code == 200, f"{method} {path}: HTTP {response.status_code} {response.text[:200]}")
        return response

    def _ndjson(self, method: str, path: str, **kwargs) -> list[dict]:
        response = self._get(method, path, **kwargs)
        _check(response.headers.get("Content-Type", "").startswith("application/x-ndjson"), "not NDJSON")
        _check(response.headers.get("Delta-Table-Version") == str(self.expected["version"]), "wrong version header")
        lines = [json.loads(line) for line in response.text.splitlines() if line]
        _check(len(lines) >= 2 and "protocol" in lines[0] and "metaData" in lines[1], "no protocol and metaData lines")
        _check(isinstance(lines[0]["protocol"].get("minReaderVersion"), int), "protocol without minReaderVersion")
        fields = [f["name"] for f in json.loads(lines[1]["metaData"]["schemaString"])["fields"]]
        _check(fields == self.expected["columns"], f"columns {fields}")
        return lines

    def raw_list_shares(self) -> None:
        """``GET /shares``: exactly the one share, as JSON items."""
        body = self._get("GET", "/shares").json()
        _check([item.get("name") for item in body.get("items", [])] == [SHARE], f"shares {body}")

    def raw_table_version(self) -> None:
        """``GET …/version``: the projection's version in the ``Delta-Table-Version`` header."""
        response = self._get("GET", f"{self.path}/version")
        _check(response.headers.get("Delta-Table-Version") == str(self.expected["version"]), "wrong version")

    def raw_metadata(self) -> None:
        """``GET …/metadata``: a protocol and a metaData line with the shared columns."""
        _check(len(self._ndjson("GET", f"{self.path}/metadata")) == 2, "metadata answer is not two lines")

    def raw_query(self) -> None:
        """``POST …/query``: protocol, metaData and one line per file of the projection, each with a signed URL."""
        files = [line.get("file") for line in self._ndjson("POST", f"{self.path}/query", json={})[2:]]
        _check(len(files) == self.expected["files"], f"{len(files)} files, expected {self.expected['files']}")
        _check(all(f and f.get("url") and f.get("id") and isinstance(f.get("size"), int) for f in files), "bad file line")
        self.file = (files[0]["url"], files[0]["size"])

    def raw_file(self) -> None:
        """``GET`` of the last signed file URL: the whole Parquet file of the announced size."""
        url, size = self.file
        response = self.files.get(url, timeout=TIMEOUT_S)
        _check(response.status_code == 200, f"file: HTTP {response.status_code}")
        body = response.content
        _check(len(body) == size and body[:4] == b"PAR1" and body[-4:] == b"PAR1", "not the Parquet file announced")

    # --- the official delta-sharing client
    def client_list_all_tables(self) -> None:
        """``SharingClient.list_all_tables``: both shared tables, nothing else."""
        import delta_sharing

        tables = delta_sharing.SharingClient(str(self.profile)).list_all_tables()
        _check(sorted(t.name for t in tables) == sorted(TABLES), f"tables {tables}")
        _check({(t.share, t.schema) for t in tables} == {(SHARE, SCHEMA)}, f"tables {tables}")

    def client_table_metadata(self) -> None:
        """``delta_sharing.get_table_metadata`` (delta response format): the shared columns."""
        import delta_sharing

        metadata = delta_sharing.get_table_metadata(f"{self.profile}#{SHARE}.{SCHEMA}.{self.table}")
        fields = [f["name"] for f in json.loads(metadata.schema_string)["fields"]]
        _check(fields == self.expected["columns"] and metadata.id, f"metadata {metadata}")

    def client_load_as_pandas(self) -> None:
        """``delta_sharing.load_as_pandas``: every row and exactly the shared columns."""
        import delta_sharing

        frame = delta_sharing.load_as_pandas(f"{self.profile}#{SHARE}.{SCHEMA}.{self.table}")
        _check(len(frame) == self.expected["rows"], f"{len(frame)} rows, expected {self.expected['rows']}")
        _check(list(frame.columns) == self.expected["columns"], f"columns {list(frame.columns)}")


# ----------------------------------------------------------------------------- the server and the run
def rss_kib(pid: int) -> dict:
    """``VmRSS`` and ``VmHWM`` (peak) of process ``pid`` in KiB, from ``/proc/<pid>/status``."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads), from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sample(pid: int, started: float) -> dict:
    memory = rss_kib(pid)
    return {"t_s": round(time.monotonic() - started, 1), "rss_kib": memory["VmRSS"], "hwm_kib": memory["VmHWM"],
            "load1": os.getloadavg()[0], "server_cpu_s": round(cpu_seconds(pid), 2),
            "clients_cpu_s": round(cpu_seconds(os.getpid()), 2)}


def _drive(clients: list[Client], pid: int, sample_every_s: float) -> tuple[list[dict], float]:
    """Run every client in its own thread; sample the server meanwhile. Returns the samples and the wall time."""
    threads = [threading.Thread(target=c.run, name=f"load-client-{c.index}", daemon=True) for c in clients]
    started = time.monotonic()
    samples = [_sample(pid, started)]
    for thread in threads:
        thread.start()
    next_sample = started + sample_every_s
    while any(thread.is_alive() for thread in threads):
        time.sleep(0.1)
        if time.monotonic() >= next_sample:
            samples.append(_sample(pid, started))
            next_sample += sample_every_s
    elapsed = time.monotonic() - started
    samples.append(_sample(pid, started))
    return samples, elapsed


def _issue_profiles(site: Site, endpoint: str) -> dict[str, tuple[Path, str]]:
    from sharing_server.recipients import issue_profile

    profiles = {}
    for name in site.recipients:
        profile = issue_profile(name, endpoint=endpoint, config_path=site.config, state_path=site.state)
        path = site.work / "profiles" / f"{name}.share"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(profile), encoding="utf-8")
        profiles[name] = (path, profile["bearerToken"])
    return profiles


def _audit_lines(site: Site) -> list[dict]:
    from sharing_server.audit import read_audit

    return read_audit(audit_dir=site.audit_dir)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def run(work: Path, clients: int = 50, duration_s: float = 60, recipients: int = 5, sample_every_s: float = 10) -> dict:
    """Build the site, start ``ggm sharing serve``, run the clients and return the summary (see :func:`summarise`)."""
    site = build_site(Path(work), recipients)
    log_path = site.work / "server.log"
    with open(log_path, "wb") as log:
        process, endpoint = start_server(site.env, via_cli=True, log=log)
    try:
        profiles = _issue_profiles(site, endpoint)
        audit_before = len(_audit_lines(site))  # the start-up probes, before the load
        load_before = os.getloadavg()
        deadline = time.monotonic() + duration_s
        workers = []
        for i in range(clients):
            recipient, table = site.recipients[i % recipients], TABLES[i % len(TABLES)]
            profile, token = profiles[recipient]
            workers.append(Client(i, endpoint, profile, token, table, site.expected[(recipient, table)], deadline))
        samples, elapsed = _drive(workers, process.pid, sample_every_s)
        load_after = os.getloadavg()
    finally:
        _stop(process)
    audit = _audit_lines(site)[audit_before:]
    log_errors = [line for line in log_path.read_text(errors="replace").splitlines() if LOG_ERROR.search(line)]
    return summarise(workers, samples, elapsed, audit, log_errors, load=(load_before, load_after),
                     setup={"clients": clients, "recipients": recipients, "duration_s": duration_s, "pid": process.pid})


# ----------------------------------------------------------------------------- figures
def _percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    p50, p95, p99 = np.percentile(np.array(seconds) * 1000, [50, 95, 99])
    return {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1), "p99_ms": round(float(p99), 1)}


def _slope_mib_per_h(samples: list[dict]) -> float | None:
    if len(samples) < 3 or samples[-1]["t_s"] - samples[0]["t_s"] <= 0:
        return None
    t_h = np.array([s["t_s"] for s in samples]) / 3600
    rss_mib = np.array([s["rss_kib"] for s in samples]) / 1024
    return round(float(np.polyfit(t_h, rss_mib, 1)[0]), 2)


def _memory(samples: list[dict]) -> dict:
    """RSS before the load, after the first interval (warm), at the end and at most; slopes once warm."""
    rss = [s["rss_kib"] / 1024 for s in samples]
    elapsed = samples[-1]["t_s"] - samples[0]["t_s"]
    return {
        "rss_first_mib": round(rss[0], 1), "rss_warm_mib": round(rss[1], 1) if len(rss) > 2 else None,
        "rss_last_mib": round(rss[-1], 1), "rss_max_mib": round(max(rss), 1),
        "peak_vmhwm_mib": round(samples[-1]["hwm_kib"] / 1024, 1),
        "slope_warm_mib_per_h": _slope_mib_per_h(samples[1:]),
        "slope_second_half_mib_per_h": _slope_mib_per_h(samples[len(samples) // 2:]),
        "server_cpu_s": round(samples[-1]["server_cpu_s"] - samples[0]["server_cpu_s"], 1),
        "clients_cpu_s": round(samples[-1]["clients_cpu_s"] - samples[0]["clients_cpu_s"], 1),
        "server_cores_used": round((samples[-1]["server_cpu_s"] - samples[0]["server_cpu_s"]) / elapsed, 2) if elapsed else None,
    }


def summarise(workers: list[Client], samples: list[dict], elapsed: float, audit: list[dict], log_errors: list[str],
              *, load: tuple, setup: dict) -> dict:
    """The figures of one run: calls, errors and latency per operation, the server's view, memory and machine."""
    per_operation, everything = {}, []
    for name in OPERATIONS:
        seconds = [s for w in workers for s in w.latencies.get(name, [])]
        everything += seconds
        errors = sum(w.errors[name] for w in workers)
        per_operation[name] = {"calls": len(seconds) + errors, "errors": errors, **_percentiles(seconds)}
    calls = sum(op["calls"] for op in per_operation.values())
    statuses = collections.Counter(str(line.get("status")) for line in audit)
    return {
        **setup, "elapsed_s": round(elapsed, 1),
        "machine": {"cores": os.cpu_count(), "load_avg_before": [round(x, 2) for x in load[0]],
                    "load_avg_after": [round(x, 2) for x in load[1]],
                    "load1_max": round(max(s["load1"] for s in samples), 2),
                    "load1_mean": round(sum(s["load1"] for s in samples) / len(samples), 2)},
        "calls": calls, "calls_per_s": round(calls / elapsed, 1),
        "errors": sum(op["errors"] for op in per_operation.values()),
        "error_examples": [e for w in workers for e in w.examples][:10],
        "latency_all": _percentiles(everything), "per_operation": per_operation,
        "server": {"http_requests": len(audit), "http_requests_per_s": round(len(audit) / elapsed, 1),
                   "statuses": dict(sorted(statuses.items())),
                   "not_2xx": sum(n for s, n in statuses.items() if not s.startswith("2")),
                   "endpoints": dict(collections.Counter(line.get("endpoint") for line in audit).most_common()),
                   "log_error_lines": len(log_errors), "log_error_examples": log_errors[:5],
                   **_memory(samples)},
        "samples": samples,
    }


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False, cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes' if dirty else ''}"


def print_report(summary: dict) -> None:
    """The summary as a readable table."""
    m, s = summary["machine"], summary["server"]
    print(f"\nSharing server under load: {summary['clients']} clients ({summary['recipients']} recipients) for "
          f"{summary['elapsed_s']} s; {m['cores']} cores; load average (1 min) before {m['load_avg_before'][0]}, "
          f"mean {m['load1_mean']}, max {m['load1_max']}; commit {summary.get('commit', '?')}")
    print("| operation | calls | errors | p50 ms | p95 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, op in summary["per_operation"].items():
        print(f"| {name} | {op['calls']:,} | {op['errors']} | {op['p50_ms']} | {op['p95_ms']} | {op['p99_ms']} |")
    a = summary["latency_all"]
    print(f"| **all** | {summary['calls']:,} | {summary['errors']} | {a['p50_ms']} | {a['p95_ms']} | {a['p99_ms']} |")
    print(f"\ncalls/s: {summary['calls_per_s']}; HTTP requests answered (server audit log): {s['http_requests']:,} "
          f"({s['http_requests_per_s']}/s), status codes {s['statuses']}, not 2xx: {s['not_2xx']}; "
          f"error lines in the server log: {s['log_error_lines']}")
    print(f"server RSS: before the load {s['rss_first_mib']} MiB, after {summary['samples'][1]['t_s']} s "
          f"{s['rss_warm_mib']} MiB, last {s['rss_last_mib']} MiB, max sampled {s['rss_max_mib']} MiB, peak (VmHWM) "
          f"{s['peak_vmhwm_mib']} MiB; slope from then on {s['slope_warm_mib_per_h']} MiB/h (second half "
          f"{s['slope_second_half_mib_per_h']} MiB/h), {len(summary['samples'])} samples")
    print(f"CPU: server {s['server_cpu_s']} s ({s['server_cores_used']} cores on average), "
          f"load-generating clients {s['clients_cpu_s']} s")
    for example in summary["error_examples"] + s["log_error_examples"]:
        print(f"  error: {example}")


def main(argv: list[str] | None = None) -> dict:
    """Command line: run the load (or the soak), print the table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="/tmp/ggm-sharing-load")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60, help="seconds of load (default 60)")
    parser.add_argument("--soak", type=float, default=None, metavar="MINUTES", help="run this many minutes instead")
    parser.add_argument("--recipients", type=int, default=5)
    parser.add_argument("--sample-every", type=float, default=10, help="seconds between RSS samples (default 10)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the summary to this file")
    args = parser.parse_args(argv)
    duration = args.soak * 60 if args.soak else args.duration
    summary = run(Path(args.work_dir), args.clients, duration, args.recipients, args.sample_every)
    summary["mode"] = "soak" if args.soak else "load"
    summary["commit"] = _git_commit()
    summary["command"] = " ".join([".venv/bin/python", "bench/sharing_load.py", *(argv if argv is not None else sys.argv[1:])])
    print_report(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


if __name__ == "__main__":
    result = main()
    sys.exit(1 if result["errors"] or result["server"]["not_2xx"] or result["server"]["log_error_lines"] else 0)
