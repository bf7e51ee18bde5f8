"""One long-lived Spark for the day: the Spark Connect server the project starts, checks and stops.

Every Spark stage used to be its own ``spark-submit`` with its own JVM, Ivy resolution and Delta
log replay. Now one server runs the day and each stage is a thin Connect client
(:func:`ggm_lakehouse.spark.connect_session`) that opens its own session and releases it.

* The server is the class pyspark ships (``SparkConnectServer`` in ``pyspark/jars/spark-connect_*.jar``),
  started with ``spark-submit --class``, bound to 127.0.0.1, with Delta, the OpenLineage listener
  and every project setting (:func:`ggm_lakehouse.spark.session_conf`).
* Clients authenticate with a pre-shared token (``spark.connect.authenticate.token``): from
  ``GGM_SPARK_CONNECT_TOKEN``, or generated once into the state folder (mode 0600). The token and
  the settings go to the server in a properties file, never on its command line.
* The pseudonym key is the server's own: it reads it from its environment at start (as a Databricks
  job cluster reads its secret scope); no client ever sends it.
* State lives in ``GGM_SPARK_CONNECT_DIR`` (default ``<checkout>/.cache/spark-connect``): ``server.json``
  (pid, port, url, log), ``token``, ``spark.properties`` and ``server.log``.

``ggm spark serve|status|stop`` and ``make spark`` drive it; ``make run``, ``ggm run``, ``make airflow``
and the test session use :func:`running_server`, which starts it only when it is not running and
stops it afterwards only if it started it.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from ggm_lakehouse.config import project_root

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
DEFAULT_PORT = 15002
# pyspark's client sends a token over a plain local channel only to the host name "localhost";
# to any other name (127.0.0.1 included) it would insist on TLS.
CLIENT_HOST = "localhost"
START_TIMEOUT_S = float(os.environ.get("GGM_SPARK_CONNECT_START_TIMEOUT", "180"))
STOP_TIMEOUT_S = 30.0


class SparkServerError(RuntimeError):
    """The Spark Connect server could not be started or reached; the message says where its log is."""


def state_dir() -> Path:
    """Folder of the server's state: ``GGM_SPARK_CONNECT_DIR`` or ``<checkout>/.cache/spark-connect``."""
    return Path(os.environ.get("GGM_SPARK_CONNECT_DIR") or project_root() / ".cache" / "spark-connect")


def configured_port() -> int:
    """The port to serve on: ``GGM_SPARK_CONNECT_PORT`` or 15002."""
    return int(os.environ.get("GGM_SPARK_CONNECT_PORT", DEFAULT_PORT))


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (created with 0600, never world-readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(0o600)


def token() -> str:
    """The clients' pre-shared token: ``GGM_SPARK_CONNECT_TOKEN``, else one generated once into the state folder."""
    if os.environ.get("GGM_SPARK_CONNECT_TOKEN"):
        return os.environ["GGM_SPARK_CONNECT_TOKEN"]
    path = state_dir() / "token"
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(32))
    return path.read_text(encoding="utf-8").strip()


def client_url(port: int | None = None, with_token: bool = True) -> str:
    """The ``sc://`` URL of the local server, with the token unless ``with_token`` is False (for display)."""
    url = f"sc://{CLIENT_HOST}:{port or configured_port()}"
    return f"{url}/;token={token()}" if with_token else url


def airflow_connection(port: int | None = None) -> str:
    """Airflow connection ``ggm_spark`` (type ``spark_connect``) for the local server, as AIRFLOW_CONN_* JSON."""
    return json.dumps({"conn_type": "spark_connect", "host": f"sc://{CLIENT_HOST}", "port": port or configured_port(),
                       "password": token()})


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (ended but not reaped) holds its pid without running.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[-1].startswith("Z"))


def _port_open(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _read_state() -> dict:
    path = state_dir() / "server.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _memory_mb(pid: int | None) -> float | None:
    """Resident memory of the server process in MiB (Linux /proc), or None when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def status() -> dict:
    """What the state folder says of the server: running, url (without token), pid, port, log, memory_mb."""
    state = _read_state()
    port = int(state.get("port") or configured_port())
    pid = state.get("pid")
    running = _pid_alive(pid) and _port_open(port)
    return {
        "running": running,
        "url": client_url(port, with_token=False),
        "pid": pid if running else None,
        "port": port,
        "log": str(state.get("log") or state_dir() / "server.log"),
        "memory_mb": _memory_mb(pid) if running else None,
        "started_at": state.get("started_at") if running else None,
    }


def server_conf(port: int) -> dict[str, str]:
    """Every setting of the server: the project's Spark settings, lineage, the binding and the token."""
    from ggm_lakehouse.openlineage import spark_openlineage_conf
    from ggm_lakehouse.spark import session_conf, small_data_conf

    master = os.environ.get("GGM_SPARK_MASTER", "local[2]")
    conf = {key: value for key, value in session_conf().items() if key != "spark.driver.memory"}
    conf.update(spark_openlineage_conf())
    for key, value in small_data_conf(master).items():
        # JVM options add to the project's own (Derby's home) instead of replacing them.
        joined = key.endswith("extraJavaOptions") and conf.get(key)
        conf[key] = f"{conf[key]} {value}" if joined else value
    conf.update({
        "spark.app.name": "ggm-spark-connect",
        "spark.master": master,
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.connect.authenticate.token": token(),
        # A day's stages come and go; sessions idle this long are released with what they cached.
        "spark.connect.session.manager.defaultSessionTimeout": "30min",
        "spark.log.level": os.environ.get("GGM_SPARK_LOG_LEVEL", "WARN"),
    })
    return conf


def _properties_text(conf: dict[str, str]) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace(":", "\\:").replace("=", "\\=")

    return "".join(f"{key}={escape(value)}\n" for key, value in sorted(conf.items()))


def _server_env() -> dict[str, str]:
    """The server's environment: the project importable for Python UDFs, this interpreter, and the pseudonym key."""
    env = dict(os.environ)
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project_root()), env.get("PYTHONPATH")]))
    env["GGM_PSEUDONYM_KEY"] = server_pseudonym_key()
    env.pop("GGM_SPARK_REMOTE", None)
    return env


def server_pseudonym_key() -> str:
    """The key the server pseudonymises with: the configured secret, else the demo key of this checkout."""
    from ggm_lakehouse.secrets import MissingSecretError, get_secret

    try:
        return get_secret("ggm_pseudonym_key")
    except MissingSecretError:
        from ggm_lakehouse.airflow_env import demo_pseudonym_key

        return demo_pseudonym_key()


def server_command(port: int) -> list[str]:
    """The ``spark-submit --class SparkConnectServer`` command line (no secret on it)."""
    import pyspark

    from ggm_lakehouse.spark import session_jars

    properties = state_dir() / "spark.properties"
    _write_private(properties, _properties_text(server_conf(port)))
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    command = [str(submit), "--class", SERVER_CLASS, "--properties-file", str(properties),
               "--driver-memory", os.environ.get("GGM_SPARK_DRIVER_MEMORY", "4g")]
    jars = session_jars()
    if jars:
        command += ["--jars", ",".join(str(j) for j in jars)]
    return command


def _wait_ready(process: subprocess.Popen, port: int, log: Path) -> None:
    """Wait until the server answers a query; raise with the log's tail when it dies or times out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SparkServerError(f"the Spark Connect server exited with code {process.returncode}; "
                                   f"see {log}:\n{_tail(log)}")
        if _port_open(port) and _answers(port):
            return
        time.sleep(0.5)
    process.terminate()
    raise SparkServerError(f"the Spark Connect server did not answer within {START_TIMEOUT_S:.0f} s; see {log}:\n{_tail(log)}")


def _answers(port: int) -> bool:
    """True when a client can open a session and run ``SELECT 1`` (the health check)."""
    from ggm_lakehouse.spark import connect_session

    try:
        session = connect_session(client_url(port), "ggm-health-check")
    except Exception:  # noqa: BLE001 - not ready yet: the gRPC service starts after the port opens
        return False
    try:
        return session.sql("SELECT 1 AS ok").collect()[0]["ok"] == 1
    except Exception:  # noqa: BLE001 - still starting
        return False
    finally:
        with contextlib.suppress(Exception):
            session.stop()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log written)"


def start(port: int | None = None) -> dict:
    """Start the server in the background (if it is not running) and wait until it answers; returns :func:`status`."""
    current = status()
    if current["running"]:
        return current
    port = port or configured_port()
    if _port_open(port):
        raise SparkServerError(f"port {port} is taken by another process; set GGM_SPARK_CONNECT_PORT to a free port")
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "server.log"
    with open(log, "ab") as out:
        # A session of its own: the server outlives the command that started it (``ggm spark serve``).
        process = subprocess.Popen(server_command(port), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=_server_env(), cwd=str(folder), start_new_session=True)
    _write_private(folder / "server.json", json.dumps(
        {"pid": process.pid, "port": port, "log": str(log), "started_at": time.time()}))
    _wait_ready(process, port, log)
    return status()


def stop() -> bool:
    """Stop the server gracefully (SIGTERM, then SIGKILL after 30 s); True when one was running."""
    state = _read_state()
    pid = state.get("pid")
    if not _pid_alive(pid):
        (state_dir() / "server.json").unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    (state_dir() / "server.json").unlink(missing_ok=True)
    return True


def serve(foreground: bool = False) -> int:
    """``ggm spark serve``: start the server (or report the running one); in the foreground, wait until Ctrl-C."""
    try:
        info = start()
    except SparkServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Spark Connect server on {info['url']} (pid {info['pid']}, log {info['log']})")
    if not foreground:
        return 0
    try:
        while status()["running"]:
            time.sleep(1)
    except KeyboardInterrupt:
        stop()
    return 0


@contextlib.contextmanager
def running_server() -> Iterator[str]:
    """The URL (with token) of a running server: the one already running, or one started now and stopped after."""
    started = not status()["running"]
    info = start()
    try:
        yield client_url(info["port"])
    finally:
        if started:
            stop()
