"""Stand-in for the Databricks Jobs API 2.2 run endpoints that Airflow's Databricks provider calls.

``DatabricksSubmitRunOperator`` (apache-airflow-providers-databricks 7.x) talks to a
workspace through four endpoints, all under ``/api/2.2/jobs``:

* ``POST runs/submit`` — one-time run; answers ``{"run_id": <int>}``;
* ``GET runs/get?run_id=`` — the run with ``state`` (``life_cycle_state``, ``result_state``,
  ``state_message``, ``user_cancelled_or_timedout``), ``status``, ``run_page_url`` and
  ``tasks`` (one task run per submitted task, each with its own ``run_id`` and ``state``);
* ``GET runs/get-output?run_id=<task run id>`` — read for every FAILED task to get ``error``;
* ``POST runs/cancel`` — ``operator.on_kill``; answers ``{}``.

Authentication is a personal access token: ``Authorization: Bearer <token>``; anything else
is answered 401 the way a workspace answers (``error_code``/``message``). Unknown run ids are
``400 INVALID_PARAMETER_VALUE``, as the Jobs API does.

The stand-in executes nothing. A run walks ``PENDING`` → ``RUNNING`` → ``TERMINATED`` over
successive ``runs/get`` calls and ends as the test decides (:attr:`RunOutcome`): ``SUCCESS``,
``FAILED`` (with a state message and a task error), or ``HANG`` (stays ``RUNNING`` until
``runs/cancel``, then ``TERMINATED``/``CANCELED``). Demo/test only.
"""
from __future__ import annotations

import copy
import enum
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from standins.common import ThreadedUvicorn, WorkspaceStandin

API_PREFIX = "/api/2.2/jobs"


class RunOutcome(str, enum.Enum):
    """How the stand-in ends a submitted run."""

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    HANG = "HANG"  # RUNNING until cancelled


@dataclass
class _Run:
    run_id: int
    body: dict[str, Any]
    outcome: RunOutcome
    polls_before_terminal: int
    failure_message: str
    task_run_ids: dict[str, int]
    start_time_ms: int
    polls: int = 0
    cancelled: bool = False
    end_time_ms: int | None = None

    def life_cycle(self) -> tuple[str, str | None, str]:
        """(life_cycle_state, result_state, state_message) as of now."""
        if self.cancelled:
            return "TERMINATED", "CANCELED", "Run cancelled."
        if self.outcome is RunOutcome.HANG or self.polls <= self.polls_before_terminal:
            # The first poll sees the cluster being prepared, later ones the running task.
            return ("PENDING", None, "Waiting for cluster") if self.polls <= 1 else ("RUNNING", None, "In run")
        if self.outcome is RunOutcome.SUCCESS:
            return "TERMINATED", "SUCCESS", ""
        return "TERMINATED", "FAILED", self.failure_message


class DatabricksJobsStandin(WorkspaceStandin):
    """A Databricks workspace's Jobs API 2.2 run endpoints on ``127.0.0.1:<ephemeral port>``.

    Usage::

        with DatabricksJobsStandin(outcome=RunOutcome.FAILED, failure_message="boom") as ws:
            os.environ["AIRFLOW_CONN_GGM_DATABRICKS"] = json.dumps(ws.airflow_connection())
            ...  # run the operator; ws.submitted holds the runs/submit request bodies

    ``outcome`` and ``failure_message`` apply to runs submitted after they are set, so a test
    can change them between runs. ``polls_before_terminal`` is how many ``runs/get`` calls see
    a non-terminal state before SUCCESS/FAILED is reported.
    """

    thread_name = "databricks-standin"

    def __init__(
        self,
        *,
        outcome: RunOutcome | str = RunOutcome.SUCCESS,
        failure_message: str = "Task failed with error: Python process exited with code 1",
        polls_before_terminal: int = 2,
        token: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.outcome = RunOutcome(outcome)
        self.failure_message = failure_message
        self.polls_before_terminal = polls_before_terminal
        self.token = token or f"dapi{secrets.token_hex(16)}"
        self.host = host
        self.submitted: list[dict[str, Any]] = []
        self.cancelled: list[int] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of every authenticated call
        self._runs: dict[int, _Run] = {}
        self._next_id = 1000
        self._lock = threading.Lock()
        self._server: ThreadedUvicorn | None = None
        self.port: int | None = None
        self.app = self._build_app()

    # ---- inspection ------------------------------------------------------------------------

    def run_state(self, run_id: int) -> dict[str, Any]:
        """The ``state`` object ``runs/get`` would answer for ``run_id`` right now (no poll counted)."""
        with self._lock:
            return self._state_json(self._runs[run_id])

    def wait_until_polled(self, run_id: int, polls: int, timeout: float = 30.0) -> None:
        """Block until ``runs/get`` has been called ``polls`` times for ``run_id`` (raises on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                run = self._runs.get(run_id)
                if run is not None and run.polls >= polls:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} was not polled {polls} times within {timeout} s")
            time.sleep(0.02)

    def wait_for_submission(self, timeout: float = 30.0) -> int:
        """Block until a run has been submitted; returns the newest run id."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._runs:
                    return max(self._runs)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no run submitted within {timeout} s")
            time.sleep(0.02)

    # ---- API -------------------------------------------------------------------------------

    @staticmethod
    def _error(status: int, error_code: str, message: str) -> JSONResponse:
        return JSONResponse({"error_code": error_code, "message": message}, status_code=status)

    def _state_json(self, run: _Run) -> dict[str, Any]:
        life_cycle, result, message = run.life_cycle()
        state: dict[str, Any] = {"life_cycle_state": life_cycle, "state_message": message,
                                 "user_cancelled_or_timedout": run.cancelled}
        if result is not None:  # only present on terminal states, as on a workspace
            state["result_state"] = result
        return state

    def _run_json(self, run: _Run) -> dict[str, Any]:
        state = self._state_json(run)
        terminal = state["life_cycle_state"] == "TERMINATED"
        if terminal and run.end_time_ms is None:
            run.end_time_ms = int(time.time() * 1000)
        end_time = run.end_time_ms if terminal else 0
        tasks = []
        for spec in run.body.get("tasks", []):
            task_key = spec.get("task_key", "")
            task = {k: copy.deepcopy(v) for k, v in spec.items() if k != "task_key"}
            task.update({"run_id": run.task_run_ids[task_key], "task_key": task_key, "state": dict(state),
                         "start_time": run.start_time_ms, "end_time": end_time, "attempt_number": 0,
                         "run_page_url": f"{self.url}/#job/runs/{run.task_run_ids[task_key]}"})
            tasks.append(task)
        status: dict[str, Any] = {"state": state["life_cycle_state"]}
        if terminal:
            status["termination_details"] = {
                "code": {"SUCCESS": "SUCCESS", "FAILED": "RUN_EXECUTION_ERROR", "CANCELED": "USER_CANCELED"}[
                    state["result_state"]],
                "type": "SUCCESS" if state["result_state"] == "SUCCESS" else "CLIENT_ERROR",
                "message": state["state_message"],
            }
        return {
            "job_id": run.run_id,  # one-time runs get an anonymous job of their own
            "run_id": run.run_id,
            "original_attempt_run_id": run.run_id,
            "number_in_job": run.run_id,
            "run_name": run.body.get("run_name", "Untitled"),
            "creator_user_name": "ggm-airflow@example.org",
            "run_type": "SUBMIT_RUN",
            "trigger": "ONE_TIME",
            "format": "MULTI_TASK",
            "state": state,
            "status": status,
            "tasks": tasks,
            "start_time": run.start_time_ms,
            "end_time": end_time,
            "setup_duration": 0,
            "execution_duration": 0,
            "cleanup_duration": 0,
            "run_page_url": f"{self.url}/#job/{run.run_id}/run/{run.run_id}",
        }

    def _find_task(self, task_run_id: int) -> tuple[_Run, str] | None:
        for run in self._runs.values():
            for task_key, candidate in run.task_run_ids.items():
                if candidate == task_run_id:
                    return run, task_key
        return None

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Databricks Jobs API 2.2 stand-in", docs_url=None, redoc_url=None, openapi_url=None)

        @app.middleware("http")
        async def require_token(request: Request, call_next):
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return self._error(401, "UNAUTHENTICATED", "Invalid access token.")
            self.requests.append((request.method, request.url.path))
            return await call_next(request)

        @app.post(f"{API_PREFIX}/runs/submit")
        async def submit(request: Request):
            return self._submit(await request.json())

        @app.get(f"{API_PREFIX}/runs/get")
        async def get_run(request: Request):
            return self._get_run(request.query_params.get("run_id"))

        @app.get(f"{API_PREFIX}/runs/get-output")
        async def get_output(request: Request):
            return self._get_output(request.query_params.get("run_id"))

        @app.post(f"{API_PREFIX}/runs/cancel")
        async def cancel(request: Request):
            return self._cancel(await request.json())

        @app.api_route("/{path:path}", methods=["GET", "POST", "PATCH", "DELETE"])
        async def not_implemented(path: str):
            return self._error(404, "ENDPOINT_NOT_FOUND", f"No API found for '/{path}' in this stand-in.")

        return app

    @staticmethod
    def _parse_run_id(raw: Any) -> int | None:
        try:
            return int(raw)
        except (TypeError, ValueError):
            return None

    def _submit(self, body: dict[str, Any]):
        """``runs/submit``: a one-time run of uniquely keyed tasks; its task runs get the ids after the run's."""
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            return self._error(400, "INVALID_PARAMETER_VALUE", "A one-time run needs at least one task in 'tasks'.")
        keys = [t.get("task_key") for t in tasks]
        if any(not k for k in keys) or len(set(keys)) != len(keys):
            return self._error(400, "INVALID_PARAMETER_VALUE", "Every task needs a unique 'task_key'.")
        with self._lock:
            self.submitted.append(copy.deepcopy(body))
            run_id = self._next_id
            self._next_id += 1 + len(tasks)
            task_run_ids = {key: run_id + 1 + i for i, key in enumerate(keys)}
            self._runs[run_id] = _Run(run_id, copy.deepcopy(body), self.outcome, self.polls_before_terminal,
                                      self.failure_message, task_run_ids, int(time.time() * 1000))
        return {"run_id": run_id}

    def _get_run(self, raw_id: Any):
        """``runs/get``: every poll moves the run one step further along its life cycle."""
        run_id = self._parse_run_id(raw_id)
        with self._lock:
            run = self._runs.get(run_id) if run_id is not None else None
            if run is None:
                return self._error(400, "INVALID_PARAMETER_VALUE", f"Run {raw_id} does not exist.")
            run.polls += 1
            return self._run_json(run)

    def _get_output(self, raw_id: Any):
        """``runs/get-output`` of one task run (a multi-task parent run has none)."""
        run_id = self._parse_run_id(raw_id)
        with self._lock:
            found = self._find_task(run_id) if run_id is not None else None
            if found is None:
                if run_id in self._runs:
                    # The Jobs API refuses output of a multi-task parent run.
                    return self._error(400, "INVALID_PARAMETER_VALUE",
                                       "Retrieving the output of runs with multiple tasks is not supported. "
                                       "Please retrieve the output of each individual task run instead.")
                return self._error(400, "INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")
            run, task_key = found
            output: dict[str, Any] = {"metadata": {"run_id": run_id, "task_key": task_key,
                                                   "state": self._state_json(run)}}
            if self._state_json(run).get("result_state") == "FAILED":
                output["error"] = run.failure_message
                output["error_trace"] = f"Traceback (most recent call last):\n{run.failure_message}"
            return output

    def _cancel(self, body: dict[str, Any]):
        run_id = self._parse_run_id(body.get("run_id"))
        with self._lock:
            run = self._runs.get(run_id) if run_id is not None else None
            if run is None:
                return self._error(400, "INVALID_PARAMETER_VALUE", f"Run {body.get('run_id')} does not exist.")
            self.cancelled.append(run_id)
            # Cancelling a run that already terminated is a no-op on a workspace as well.
            if run.life_cycle()[0] != "TERMINATED":
                run.cancelled = True
        return {}
