"""The Airflow UI in a real browser: DAGs listed, a run triggered by clicking goes green, a failure shows its error.

The module starts the embedded Airflow (api-server, scheduler, dag-processor) on a fresh
SQLite home with the environment of ``ggm_lakehouse.airflow_env``, logs in through the
simple auth manager's login page in headless Chromium and checks:

* every DAG of ``dags/`` (as a ``DagBag`` sees it) is listed and there are no import errors;
* a run of the drop-zone ingest DAG, triggered with the UI's "Trigger" dialog, succeeds and
  the UI shows it as successful;
* a run of the BRP ingest DAG whose connection points at a port nobody listens on fails,
  and the task log in the UI shows the connector's error.

Screenshots go to a temporary folder; with ``GGM_UPDATE_SCREENSHOTS=1`` they are copied to
``docs/screenshots/`` (the README shows them).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.browser

PROJECT = Path(__file__).resolve().parents[2]
DAGS = PROJECT / "dags"
SCREENSHOT_DIR = PROJECT / "docs" / "screenshots"
ADMIN = "admin"

# The green run: a file-based source needs only the drop zone. The failing run: BRP without a registry.
GREEN_DAG = "ggm_ingest_gebieden"
FAILING_DAG = "ggm_ingest_brp"
DEMO_POPULATION = 200

# Generous upper bounds for waiting on a loaded 2-core machine; they end a hang, they assert nothing.
STARTUP_TIMEOUT = 120
PARSE_TIMEOUT = 120
RUN_TIMEOUT = 240
UI_TIMEOUT_MS = 120_000  # generous: in `make test` the UI shares two cores with Spark jobs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path} missing)"
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


@dataclass
class AirflowUI:
    """A running embedded Airflow: where it listens, how to log in, and its processes."""

    base_url: str
    password: str
    env: dict[str, str]
    logs: Path
    dead_brp_url: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    _token: str | None = None

    def start(self, name: str, *args: str) -> None:
        """Start ``airflow <args>`` in its own process group (so teardown kills its children too)."""
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def stop(self) -> None:
        """Terminate every process group, then kill what is left."""
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Task runners and spark-submit JVMs share the group and may outlive their parent.
            _signal_group(process, signal.SIGKILL)
            process.wait()

    def diagnostics(self) -> str:
        """The end of every process log, for assertion messages."""
        return "\n".join(f"--- {name}.log ---\n{_tail(self.logs / f'{name}.log')}" for name in self.processes)

    def check_alive(self) -> None:
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if dead:
            pytest.fail(f"Airflow processes exited: {dead}\n{self.diagnostics()}")

    def api(self, path: str, **params) -> dict:
        """GET ``/api/v2/<path>`` with a token issued to the admin user."""
        if self._token is None:
            response = requests.post(
                f"{self.base_url}/auth/token", json={"username": ADMIN, "password": self.password}, timeout=30
            )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        response = requests.get(
            f"{self.base_url}/api/v2/{path}", params=params,
            headers={"Authorization": f"Bearer {self._token}"}, timeout=30,
        )
        response.raise_for_status()
        return response.json()

    def unpause(self, dag_id: str, attempts: int = 5) -> None:
        """Unpause ``dag_id`` through the REST API, again when SQLite was locked (a 5xx after its busy wait).

        The trigger dialog unpauses too, but on a loaded machine its PATCH can lose SQLite's lock
        to the run it creates at the same moment; the run then waits for ever behind a paused DAG.
        """
        self.api("dags", limit=1)  # make sure a token is issued
        for attempt in range(attempts):
            response = requests.patch(
                f"{self.base_url}/api/v2/dags/{dag_id}", json={"is_paused": False},
                headers={"Authorization": f"Bearer {self._token}"}, timeout=120,
            )
            if response.status_code < 500:
                response.raise_for_status()
                return
            time.sleep(2 + 3 * attempt)
        pytest.fail(f"could not unpause {dag_id}: {response.status_code} {response.text[:500]}\n{self.diagnostics()}")

    def wait_for(self, what: str, probe, timeout: float):
        """Poll ``probe()`` until it returns a truthy value; fail with the process logs after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                result = probe()
            except requests.RequestException:
                result = None
            if result:
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"gave up waiting for {what} after {timeout:.0f} s\n{self.diagnostics()}")
            time.sleep(2)

    def wait_for_run_to_finish(self, dag_id: str, run_id: str) -> dict:
        def finished():
            run = self.api(f"dags/{dag_id}/dagRuns/{run_id}")
            return run if run["state"] in ("success", "failed") else None

        return self.wait_for(f"run {run_id} of {dag_id} to finish", finished, RUN_TIMEOUT)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture(scope="module")
def expected_dag_ids() -> set[str]:
    """What ``dags/`` defines, as a DagBag parses it (the UI must list exactly these)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}, f"dags/ does not import cleanly: {bag.import_errors}"
    assert bag.dag_ids, "dags/ defines no DAG"
    return set(bag.dag_ids)


@pytest.fixture(scope="module")
def airflow_ui(chromium_executable, tmp_path_factory, spark_server):
    """Airflow 3 (api-server, scheduler, dag-processor) on free ports with a demo drop zone and a dead BRP.

    Its Spark tasks run on the test session's Spark Connect server (connection ``ggm_spark``).
    """
    from demo_gemeente.dropzone import write_dropzone
    from demo_gemeente.generator import build_municipality
    from ggm_lakehouse.airflow_env import airflow_environment

    root = tmp_path_factory.mktemp("airflow-ui")
    home, data, logs = root / "airflow_home", root / "data", root / "logs"
    for folder in (home, data, logs):
        folder.mkdir()

    # The drop zone as the municipality delivered it yesterday: the UI's default logical date is "now".
    yesterday = datetime.now(timezone.utc).date() - timedelta(days=1)
    write_dropzone(build_municipality(population=DEMO_POPULATION, as_of=yesterday), data / "dropzone")

    password = secrets.token_urlsafe(16)
    passwords = home / "simple_auth_manager_passwords.json.generated"
    passwords.write_text(json.dumps({ADMIN: password}), encoding="utf-8")
    port = _free_port()
    dead_brp_port = _free_port()  # bound and released: nothing listens there
    base_url = f"http://127.0.0.1:{port}"
    env = airflow_environment(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__API__PORT": str(port),
            # Another Airflow (a developer's `make airflow`, a parallel test) may hold the default log-server ports.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__API__WORKERS": "1",
            # The DAG files do not change during the test: parse them once, not every 30 s.
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            # Only runs the test triggers: unpausing a DAG must not also start its latest cron run.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "GGM_DATA_ROOT": str(data),
            "GGM_PSEUDONYM_KEY": secrets.token_hex(32),
            "GGM_TASK_RETRIES": "0",
            "AIRFLOW_CONN_GGM_BRP": json.dumps(
                {"conn_type": "http", "host": f"http://127.0.0.1:{dead_brp_port}", "password": secrets.token_urlsafe(16)}
            ),
        }
    )
    for leftover in ("GGM_LAKE_ROOT", "GGM_LANDING_ROOT", "GGM_DROPZONE_ROOT", "GGM_SHARING_ROOT"):
        env.pop(leftover, None)

    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-c", "from ggm_lakehouse.orchestration import ensure_pools; ensure_pools()"],
                   env=env, check=True, stdout=subprocess.DEVNULL)

    stack = AirflowUI(base_url=base_url, password=password, env=env, logs=logs,
                      dead_brp_url=f"http://127.0.0.1:{dead_brp_port}")
    try:
        stack.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port))
        stack.start("scheduler", "scheduler")
        stack.start("dag-processor", "dag-processor")

        def healthy():
            health = requests.get(f"{base_url}/api/v2/monitor/health", timeout=10).json()
            return all(health[part]["status"] == "healthy" for part in ("metadatabase", "scheduler", "dag_processor"))

        stack.wait_for("Airflow to become healthy", healthy, STARTUP_TIMEOUT)
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def page(airflow_ui, chromium_executable):
    """A headless Chromium page logged in through the Airflow login page."""
    from playwright.sync_api import expect, sync_playwright

    # The UI polls the API; on a loaded machine a page can take well over expect's default 5 s.
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable, headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 900}, timezone_id="UTC", locale="en-US")
            context.set_default_timeout(UI_TIMEOUT_MS)
            tab = context.new_page()
            tab.goto(f"{airflow_ui.base_url}/")
            tab.wait_for_url(re.compile(r"/auth/login"))
            tab.locator("input[name=username]").fill(ADMIN)
            tab.locator("input[name=password]").fill(airflow_ui.password)
            tab.get_by_role("button", name="Sign in").click()
            tab.wait_for_url(lambda url: "/auth/login" not in url)
            yield tab
        finally:
            browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    """Saves PNGs to a temporary folder; ``publish`` copies one to docs/screenshots when GGM_UPDATE_SCREENSHOTS=1."""
    folder = tmp_path_factory.mktemp("screenshots")

    class Screenshots:
        def save(self, tab, name: str, **kwargs) -> Path:
            path = folder / f"{name}.png"
            tab.screenshot(path=str(path), **kwargs)
            if os.environ.get("GGM_UPDATE_SCREENSHOTS") == "1":
                SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, SCREENSHOT_DIR / path.name)
            return path

    return Screenshots()


def _require(dag_id: str, dag_ids: set[str]) -> str:
    if dag_id not in dag_ids:
        pytest.fail(f"{dag_id} is not defined in dags/ (found {sorted(dag_ids)})")
    return dag_id


def _trigger_from_ui(tab, base_url: str, dag_id: str, run_id: str) -> None:
    """Open the DAG, click "Trigger", give the run a known id and submit (the DAG was unpaused through the API)."""
    tab.goto(f"{base_url}/dags/{dag_id}")
    tab.get_by_test_id("trigger-dag-button").click()
    dialog = tab.get_by_role("dialog")
    dialog.get_by_text("Advanced Options").click()
    dialog.locator("input[name=dagRunId]").fill(run_id)
    dialog.get_by_test_id("trigger-dag-submit").click()
    # The UI opens the new run's page once the API accepted the trigger.
    tab.wait_for_url(re.compile(rf"/dags/{re.escape(dag_id)}/runs/{re.escape(run_id)}"))


def _wait_for_dags_parsed(airflow_ui: AirflowUI, expected: set[str]) -> None:
    def parsed():
        listed = {d["dag_id"] for d in airflow_ui.api("dags", limit=100)["dags"]}
        errors = airflow_ui.api("importErrors")["total_entries"]
        return errors or expected <= listed

    airflow_ui.wait_for("the dag-processor to parse dags/", parsed, PARSE_TIMEOUT)


def test_every_dag_is_listed_without_import_errors(airflow_ui, page, expected_dag_ids, screenshots):
    _wait_for_dags_parsed(airflow_ui, expected_dag_ids)
    import_errors = airflow_ui.api("importErrors")
    assert import_errors["total_entries"] == 0, import_errors

    page.goto(f"{airflow_ui.base_url}/dags")
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name=re.compile(rf"^{len(expected_dag_ids)} Dags?$"))).to_be_visible()
    # The table view fits every DAG on one screen for the screenshot.
    page.get_by_role("button", name="Show table view").click()
    for dag_id in sorted(expected_dag_ids):
        expect(page.get_by_role("link", name=dag_id, exact=True)).to_be_visible()
    screenshots.save(page, "dag_list")

    # The dashboard announces import errors when there are any.
    page.goto(f"{airflow_ui.base_url}/")
    page.wait_for_load_state("networkidle")
    expect(page.get_by_text(re.compile("Dag Import Error"))).to_have_count(0)


@pytest.fixture(scope="module")
def triggered_runs(airflow_ui, page, expected_dag_ids) -> dict[str, tuple[str, str]]:
    """Both runs, triggered by clicking in the UI up front so that they run side by side.

    ``"green"``: the drop-zone ingest (needs nothing but the drop zone written above);
    ``"failing"``: the BRP ingest, whose connection points at a port nobody listens on.
    """
    _wait_for_dags_parsed(airflow_ui, expected_dag_ids)
    runs = {
        "green": (_require(GREEN_DAG, expected_dag_ids), f"ui_check_green_{secrets.token_hex(3)}"),
        "failing": (_require(FAILING_DAG, expected_dag_ids), f"ui_check_failing_{secrets.token_hex(3)}"),
    }
    for dag_id, _ in runs.values():
        airflow_ui.unpause(dag_id)
    for dag_id, run_id in runs.values():
        _trigger_from_ui(page, airflow_ui.base_url, dag_id, run_id)
    return runs


def test_run_triggered_in_the_ui_goes_green(airflow_ui, page, triggered_runs, screenshots):
    from playwright.sync_api import expect

    dag_id, run_id = triggered_runs["green"]
    run = airflow_ui.wait_for_run_to_finish(dag_id, run_id)
    assert run["state"] == "success", f"{dag_id} run {run_id} ended {run['state']}\n{airflow_ui.diagnostics()}"
    tasks = airflow_ui.api(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    assert tasks and all(t["state"] == "success" for t in tasks), tasks

    page.goto(f"{airflow_ui.base_url}/dags/{dag_id}/runs/{run_id}")
    expect(page.get_by_test_id("header-card").get_by_test_id("state-badge").first).to_have_text("Success")
    # The graph of the run: every task node carries the success badge.
    page.get_by_role("button", name=re.compile("^Show Graph")).click()
    for task in tasks:
        expect(page.get_by_test_id(f"rf__node-{task['task_id']}")).to_contain_text("success")
    page.wait_for_load_state("networkidle")
    screenshots.save(page, "green_run_graph")


def test_failed_task_shows_its_error_in_the_log(airflow_ui, page, triggered_runs, screenshots):
    from playwright.sync_api import expect

    dag_id, run_id = triggered_runs["failing"]
    run = airflow_ui.wait_for_run_to_finish(dag_id, run_id)
    assert run["state"] == "failed", f"{dag_id} run {run_id} ended {run['state']} although BRP is unreachable"
    tasks = airflow_ui.api(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    failed = [t for t in tasks if t["state"] == "failed"]
    assert [t["task_id"] for t in failed] == ["extract"], tasks
    task_id = failed[0]["task_id"]

    page.goto(f"{airflow_ui.base_url}/dags/{dag_id}/runs/{run_id}/tasks/{task_id}")
    # The grid layout gives the log the full width (the UI remembers the graph view of the other test).
    page.get_by_role("button", name=re.compile("^Show Grid")).click()
    # The task page opens on its log; the connector's error names the unreachable registry URL.
    error = re.compile(
        rf"SourceUnavailableError: brp: \w+ {re.escape(airflow_ui.dead_brp_url)}/\S+ failed because the source is unreachable"
    )
    expect(page.get_by_text(error).first).to_be_visible()
    # "w" toggles line wrapping in the log viewer, so the screenshot shows the whole message.
    page.keyboard.press("w")
    expect(page.get_by_text(error).first).to_be_visible()
    screenshots.save(page, "failed_task_log")
