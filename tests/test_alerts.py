"""Failure alerts reach operators through the configured webhook or e-mail connection.

The webhook and the SMTP server are real servers on loopback; the failing task is a real
ingest DAG run (``dag.test``) whose source connection is missing.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ggm_lakehouse.alerts import notify_deadline_missed, send_alert

REPO = Path(__file__).resolve().parents[1]


class _Webhook:
    """A webhook receiver that records every POST (path, headers, JSON body)."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):  # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/ggm"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture()
def webhook(monkeypatch):
    hook = _Webhook()
    monkeypatch.setenv("AIRFLOW_CONN_GGM_ALERTS", json.dumps({"conn_type": "http", "host": hook.url, "password": "hook-secret"}))
    yield hook
    hook.close()


def test_webhook_alert_carries_the_event_and_bearer_token(webhook):
    channel = send_alert("[GGM] test", "body text", {"kind": "task_failed", "dag_id": "d"})
    assert channel == "webhook"
    [call] = webhook.received
    assert call["path"] == "/hooks/ggm" and call["auth"] == "Bearer hook-secret"
    assert call["body"]["text"].startswith("[GGM] test") and call["body"]["event"]["dag_id"] == "d"


def test_deadline_callback_posts_a_late_run_alert(webhook):
    asyncio.run(notify_deadline_missed({"dag_run": {"dag_id": "ggm_ingest_brp", "run_id": "scheduled__x"}}, hours=4))
    [call] = webhook.received
    assert call["body"]["event"] == {"kind": "deadline_missed", "dag_id": "ggm_ingest_brp", "run_id": "scheduled__x", "hours": 4}


def test_without_a_connection_the_alert_is_logged(monkeypatch, caplog):
    monkeypatch.delenv("AIRFLOW_CONN_GGM_ALERTS", raising=False)
    monkeypatch.setenv("GGM_ALERTS_CONN_ID", "ggm_alerts_not_configured")
    assert send_alert("[GGM] nobody listens", "text", {}) == "log"
    assert "nobody listens" in caplog.text


def test_email_alert_through_smtp(monkeypatch):
    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd API
            self.messages.append(envelope)
            return "250 OK"

    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_GGM_ALERTS", json.dumps(
            {"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": {"to": ["beheer@demodam.nl"], "from": "ggm@demodam.nl"}}
        ))
        assert send_alert("[GGM] ggm_ingest_bag.extract failed", "details", {"kind": "task_failed"}) == "email"
    finally:
        controller.stop()
    [envelope] = inbox.messages
    assert envelope.rcpt_tos == ["beheer@demodam.nl"]
    assert b"Subject: [GGM] ggm_ingest_bag.extract failed" in envelope.content


def test_a_failing_task_notifies_through_the_webhook(webhook, tmp_path):
    """A real ingest run without its BRP connection fails, and the callback reports task and error."""
    from ggm_lakehouse.airflow_env import airflow_environment

    env = airflow_environment({
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "GGM_DATA_ROOT": str(tmp_path / "data"),
        "GGM_TASK_RETRIES": "0",
        "AIRFLOW_CONN_GGM_ALERTS": os.environ["AIRFLOW_CONN_GGM_ALERTS"],
    })
    env.pop("AIRFLOW_CONN_GGM_BRP", None)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    result = subprocess.run(
        [sys.executable, "-m", "ggm_lakehouse.airflow_runner", "--date", "2026-03-01", "--dag-id", "ggm_ingest_brp"],
        env=env, capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    failures = [c["body"]["event"] for c in webhook.received if c["body"]["event"].get("kind") == "task_failed"]
    assert failures, f"no alert received; runner output:\n{result.stdout[-3000:]}"
    event = failures[0]
    assert event["dag_id"] == "ggm_ingest_brp" and event["task_id"] == "extract"
    assert "ggm_brp" in event["error"]
