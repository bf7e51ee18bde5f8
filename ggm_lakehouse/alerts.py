"""Notify operators when a task fails or a daily run is late.

The channel is the Airflow connection ``ggm_alerts`` (override with ``GGM_ALERTS_CONN_ID``):

* ``http``/``https`` connection: a webhook. The message is POSTed as JSON
  ``{"text": ..., "event": {...}}``, which Mattermost, Slack-compatible and Teams
  workflow webhooks accept. ``host`` is the full webhook URL; a password, when set, is
  sent as ``Authorization: Bearer``.
* ``smtp``/``email`` connection: an e-mail through that SMTP server (``login``/``password``
  when set, STARTTLS when ``extra.starttls`` is true); ``extra.to`` lists the recipients
  and ``extra.from`` the sender.

Without the connection the alert is only logged: the platform never fails a run because
its alerting is not configured. Alerts never contain data, only where to look.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import smtplib
from email.message import EmailMessage
from typing import Any, Mapping

import requests

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "ggm_alerts"


def _alerts_connection():
    from ggm_lakehouse.secrets import get_connection

    return get_connection(os.environ.get("GGM_ALERTS_CONN_ID", DEFAULT_CONN_ID))


def send_alert(subject: str, text: str, event: Mapping[str, Any]) -> str:
    """Deliver one alert through the configured channel; returns the channel used (``log`` when none)."""
    conn = _alerts_connection()
    if conn is None:
        log.warning("ALERT (no %s connection configured): %s\n%s", DEFAULT_CONN_ID, subject, text)
        return "log"
    conn_type = (conn.conn_type or "").lower()
    extra = conn.extra_dejson
    if conn_type in {"http", "https"}:
        url = conn.host if "://" in (conn.host or "") else f"{conn_type}://{conn.host}{':' + str(conn.port) if conn.port else ''}/{(conn.schema or '').lstrip('/')}"
        headers = {"Content-Type": "application/json"}
        if conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"
        response = requests.post(url, data=json.dumps({"text": f"{subject}\n{text}", "event": dict(event)}),
                                 headers=headers, timeout=float(extra.get("timeout", 10)))
        response.raise_for_status()
        return "webhook"
    if conn_type in {"smtp", "email"}:
        recipients = extra.get("to") or []
        if isinstance(recipients, str):
            recipients = [r.strip() for r in recipients.split(",") if r.strip()]
        if not recipients:
            raise ValueError(f"{DEFAULT_CONN_ID} e-mail connection needs extra.to (the recipients)")
        message = EmailMessage()
        message["Subject"] = subject
        message["From"] = extra.get("from", "ggm-lakehouse@localhost")
        message["To"] = ", ".join(recipients)
        message.set_content(text + "\n\n" + json.dumps(dict(event), indent=2, default=str))
        with smtplib.SMTP(conn.host, conn.port or 25, timeout=float(extra.get("timeout", 10))) as smtp:
            if extra.get("starttls"):
                smtp.starttls()
            if conn.login:
                smtp.login(conn.login, conn.password or "")
            smtp.send_message(message)
        return "email"
    raise ValueError(f"{DEFAULT_CONN_ID} has unsupported conn_type {conn.conn_type!r}; use http(s) or smtp")


def _describe_failure(context: Mapping[str, Any]) -> tuple[str, str, dict]:
    ti = context.get("task_instance") or context.get("ti")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = str(context.get("run_id", getattr(ti, "run_id", "?")))
    error = context.get("exception")
    event = {
        "kind": "task_failed",
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run_id,
        "try_number": getattr(ti, "try_number", None),
        "error": f"{type(error).__name__}: {error}" if error else None,
        "log_url": getattr(ti, "log_url", None),
    }
    subject = f"[GGM] {dag_id}.{task_id} failed ({run_id})"
    text = f"Task {task_id} of {dag_id} failed in run {run_id}.\nError: {event['error']}\nLog: {event['log_url']}"
    return subject, text, event


def notify_task_failure(context: Mapping[str, Any]) -> None:
    """``on_failure_callback`` of every GGM task: one alert naming DAG, task, run and error."""
    subject, text, event = _describe_failure(context)
    try:
        send_alert(subject, text, event)
    except Exception:  # noqa: BLE001 - a broken alert channel must not hide the task's own failure
        log.exception("could not deliver the failure alert for %s", event["task_id"])


async def notify_deadline_missed(context: Mapping[str, Any] | None = None, hours: float | None = None, **_: Any) -> None:
    """Deadline-alert callback (runs in the triggerer): the daily run is not done in time."""
    dag_run = (context or {}).get("dag_run") or {}
    dag_id = dag_run.get("dag_id") if isinstance(dag_run, Mapping) else getattr(dag_run, "dag_id", "?")
    run_id = dag_run.get("run_id") if isinstance(dag_run, Mapping) else getattr(dag_run, "run_id", "?")
    event = {"kind": "deadline_missed", "dag_id": dag_id, "run_id": run_id, "hours": hours}
    subject = f"[GGM] {dag_id} run {run_id} is late"
    text = f"The run {run_id} of {dag_id} has not finished {hours} hours after it was queued."
    await asyncio.to_thread(send_alert, subject, text, event)
