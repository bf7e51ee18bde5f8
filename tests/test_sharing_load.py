"""The sharing server under concurrent load answers every request correctly (``bench/sharing_load.py``, short).

The load benchmark's own code, with 8 clients for 5 seconds: ``ggm sharing serve`` in a child
process, every client thread calling the official ``delta-sharing`` client and raw protocol
requests with its own recipient's token. Every answer must be a valid protocol answer (status,
headers, NDJSON lines, Parquet bytes, the expected tables, rows and columns), the server's audit
log must show only 2xx answers (the official client would hide a retried 429 or 5xx) and its log no
errors. Nothing here asserts a duration or a latency: the figures are in docs/benchmarks.md.
"""
from __future__ import annotations

import pytest

from bench import sharing_load


@pytest.fixture(scope="module")
def load_run(tmp_path_factory) -> dict:
    """One short load run (8 clients, 2 recipients, 5 s) against ``ggm sharing serve``; its summary."""
    return sharing_load.run(tmp_path_factory.mktemp("sharing-load") / "site", clients=8, duration_s=5, recipients=2,
                            sample_every_s=1)


@pytest.mark.timeout(180)
def test_concurrent_clients_get_only_valid_protocol_answers(load_run):
    assert load_run["errors"] == 0, load_run["error_examples"]
    # Every kind of call was made and answered: the official client's and the raw protocol requests.
    assert all(load_run["per_operation"][name]["calls"] > 0 for name in sharing_load.OPERATIONS)
    assert load_run["calls"] == sum(op["calls"] for op in load_run["per_operation"].values())


@pytest.mark.timeout(180)
def test_the_server_answered_every_request_with_2xx_and_logged_no_error(load_run):
    server = load_run["server"]
    assert server["http_requests"] >= load_run["calls"]  # every call is at least one HTTP request
    assert server["not_2xx"] == 0 and set(server["statuses"]) <= {"200", "206"}, server["statuses"]
    assert server["log_error_lines"] == 0, server["log_error_examples"]
    assert {"list_shares", "list_all_tables", "table_version", "table_metadata", "query_table", "data_file"} <= set(
        server["endpoints"]
    )


@pytest.mark.timeout(180)
def test_server_memory_was_sampled_from_proc(load_run):
    samples = load_run["samples"]
    assert len(samples) >= 3 and all(s["rss_kib"] > 0 for s in samples)
    assert load_run["machine"]["cores"] >= 1
