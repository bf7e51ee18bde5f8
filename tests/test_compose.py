"""The compose stack (docker-compose.yml, docker/, .env.example) is correct by construction.

No Docker engine runs in CI, so the stack cannot be started here. These tests check
what can be checked without one: the file against the Compose Specification schema,
`docker-compose config` when Debian's docker-compose is installed, every build
context, Dockerfile and base-image pin, health checks, secrets only from .env and only
in the services that use them (never on a command line), each service's volume mounts
against what it reads and writes (read-only where it only reads), the Spark cluster's
RPC authentication, and ports; and they run the stack's own entry scripts (secret guard,
Spark auth wrapper, health probe, demo stand-ins) for real on 127.0.0.1.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest
import requests
import yaml

from tests.specs import require

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE_SCHEMA = "specs/compose/compose-spec.json"
# Where the images keep the checkout (GGM_PROJECT_ROOT in docker/*.Dockerfile).
IMAGE_PROJECT_ROOT = "/opt/ggm"
PLACEHOLDER = "REPLACE_ME"

# The secrets the stack must never start without (the compose file requires each with ${VAR:?...}).
REQUIRED_SECRETS = {
    "POSTGRES_PASSWORD",
    "AIRFLOW_ADMIN_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "GGM_PSEUDONYM_KEY",
    "GGM_SPARK_CONNECT_TOKEN",
    "GGM_SPARK_AUTH_SECRET",
    "GGM_SHARING_URL_KEY",
    "GGM_STANDIN_BRP_API_KEY",
    "GGM_STANDIN_BAG_API_KEY",
    "GGM_STANDIN_KVK_API_KEY",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN|CREDENTIAL", re.IGNORECASE)
# One compose variable reference: $$ (escaped dollar), ${...} or bare $NAME.
_VARIABLE_TOKEN = re.compile(r"\$\$|\$\{(?P<braced>[^}]*)\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>.*))?", re.DOTALL)
_REQUIRED_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}")
_URL_CREDENTIALS = re.compile(r"://[^/\s:@]+:(?P<password>[^@\s]+)@")
_JSON_PASSWORD = re.compile(r'"(?:password|token|secret|api_key)"\s*:\s*"(?P<value>[^"]*)"', re.IGNORECASE)

# What each service mounts: {container path: (volume, "rw" | "ro")}. Derived from what the service
# runs (docs/compose.md, "Mounts and secrets per service", has the same table with the reasons):
# a service mounts what it reads or writes and nothing else, read-only where it only reads.
DATA_ROOT = "/data"  # GGM_DATA_ROOT in every service
AIRFLOW_LOGS = "/opt/airflow/logs"
EXPECTED_MOUNTS: dict[str, dict[str, tuple[str, str]]] = {
    "postgres": {"/var/lib/postgresql/data": ("postgres-db", "rw")},
    # One-shot: creates every data volume's folder and hands it to the runtime user.
    "airflow-init": {
        "/data": ("ggm-data", "rw"),
        "/data/landing": ("ggm-landing", "rw"),
        "/data/lake": ("ggm-lake", "rw"),
        "/data/lake/shares": ("ggm-shares", "rw"),
        "/data/dropzone": ("ggm-dropzone", "rw"),
        "/data/sharing": ("ggm-sharing", "rw"),
        "/data/dashboard": ("ggm-dashboard", "rw"),
        "/data/standins": ("ggm-standins", "rw"),
        AIRFLOW_LOGS: ("airflow-logs", "rw"),
    },
    # Shows task logs; runs no task.
    "airflow-apiserver": {AIRFLOW_LOGS: ("airflow-logs", "ro")},
    # Runs every task: extracts (landing, drop zones), the Spark stages' client code (landing, run
    # reports, lineage, profiles), delta-rs steps (processing log, projections, audit table), the
    # dashboard build, and publish_share, which reads the sharing server's recipients and request log.
    "airflow-scheduler": {
        "/data": ("ggm-data", "rw"),
        "/data/landing": ("ggm-landing", "rw"),
        "/data/lake": ("ggm-lake", "rw"),
        "/data/lake/shares": ("ggm-shares", "rw"),
        "/data/dropzone": ("ggm-dropzone", "rw"),
        "/data/sharing": ("ggm-sharing", "ro"),
        "/data/dashboard": ("ggm-dashboard", "rw"),
        AIRFLOW_LOGS: ("airflow-logs", "rw"),
    },
    # Parse DAGs and run deferred callbacks (alerts): no data, only their own logs.
    "airflow-dag-processor": {AIRFLOW_LOGS: ("airflow-logs", "rw")},
    "airflow-triggerer": {AIRFLOW_LOGS: ("airflow-logs", "rw")},
    "spark-master": {},
    # Driver and executors read and write Delta tables; clients ship landed records with the query.
    "spark-connect": {"/data/lake": ("ggm-lake", "rw")},
    "spark-worker": {"/data/lake": ("ggm-lake", "rw")},
    # Serves recipients' projections only (serve_from: projections); its own state read-write.
    "sharing-server": {"/data/lake/shares": ("ggm-shares", "ro"), "/data/sharing": ("ggm-sharing", "rw")},
    "dashboard": {"/data/dashboard": ("ggm-dashboard", "ro")},
    "standins": {"/data/dropzone": ("ggm-dropzone", "rw"), "/data/standins": ("ggm-standins", "rw")},
}

# Which secrets from .env reach which service (through its environment). The Airflow services share
# x-airflow-common's environment; the Spark cluster's RPC secret goes only to the cluster and its one
# driver, the pseudonym key only to where the UDF runs.
_AIRFLOW_SECRETS = frozenset({
    "POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY",
    "GGM_SPARK_CONNECT_TOKEN", "GGM_STANDIN_BRP_API_KEY", "GGM_STANDIN_BAG_API_KEY", "GGM_STANDIN_KVK_API_KEY",
})
EXPECTED_SECRETS: dict[str, frozenset[str]] = {
    "postgres": frozenset({"POSTGRES_PASSWORD"}),
    "airflow-init": _AIRFLOW_SECRETS | {"AIRFLOW_ADMIN_PASSWORD"},
    "airflow-apiserver": _AIRFLOW_SECRETS,
    "airflow-scheduler": _AIRFLOW_SECRETS,
    "airflow-dag-processor": _AIRFLOW_SECRETS,
    "airflow-triggerer": _AIRFLOW_SECRETS,
    "spark-master": frozenset({"GGM_SPARK_AUTH_SECRET"}),
    "spark-connect": frozenset({"GGM_SPARK_CONNECT_TOKEN", "GGM_SPARK_AUTH_SECRET"}),
    "spark-worker": frozenset({"GGM_PSEUDONYM_KEY", "GGM_SPARK_AUTH_SECRET"}),
    "sharing-server": frozenset({"GGM_SHARING_URL_KEY"}),
    "dashboard": frozenset(),
    "standins": frozenset({"GGM_STANDIN_BRP_API_KEY", "GGM_STANDIN_BAG_API_KEY", "GGM_STANDIN_KVK_API_KEY"}),
}

# The standalone Spark cluster: its daemons and every driver that registers with the master start
# through the wrapper that turns GGM_SPARK_AUTH_SECRET into spark.authenticate settings.
SPARK_MASTER_URL = "spark://spark-master:7077"
SPARK_AUTH_SECRET = "GGM_SPARK_AUTH_SECRET"
SPARK_AUTH_ENTRYPOINT = ["/bin/bash", f"{IMAGE_PROJECT_ROOT}/docker/spark-auth.sh"]
SPARK_AUTH_SERVICES = {"spark-master", "spark-worker", "spark-connect"}
# The parts of a service definition that end up on a process's command line (visible in `ps`).
COMMAND_LINE_KEYS = ("command", "entrypoint")


# ----------------------------------------------------------------------------- helpers
def variable_references(text: str) -> list[tuple[str, str | None, str | None]]:
    """Every ``${NAME[op arg]}`` in ``text`` as (name, op, arg); bare ``$NAME`` comes back with op ``"bare"``."""
    found = []
    for match in _VARIABLE_TOKEN.finditer(text):
        if match.group("bare"):
            found.append((match.group("bare"), "bare", None))
        elif match.group("braced") is not None:
            braced = _BRACED.fullmatch(match.group("braced"))
            assert braced, f"malformed variable reference ${{{match.group('braced')}}}"
            found.append((braced.group("name"), braced.group("op"), braced.group("arg")))
    return found


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation of ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}`` and ``$$``."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("bare")
        op = arg = None
        if name is None:
            braced = _BRACED.fullmatch(match.group("braced"))
            name, op, arg = braced.group("name"), braced.group("op"), braced.group("arg")
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise KeyError(f"{name}: {arg}")
        return value or ""

    return _VARIABLE_TOKEN.sub(substitute, text)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of an env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: line without '=': {line!r}"
        values[key.strip()] = value.strip()
    return values


def _map_strings(node, function):
    """``node`` with ``function`` applied to every string value (mapping keys are left alone, as compose does)."""
    if isinstance(node, dict):
        return {key: _map_strings(value, function) for key, value in node.items()}
    if isinstance(node, list):
        return [_map_strings(value, function) for value in node]
    return function(node) if isinstance(node, str) else node


def string_values(node) -> list[str]:
    """Every string value of a parsed compose document (comments are not part of it)."""
    found: list[str] = []
    _map_strings(node, found.append)
    return found


def load_compose(env: dict[str, str] | None = None) -> dict:
    """The compose file as data (YAML anchors and merge keys resolved), optionally interpolated.

    Like compose, interpolation applies to values after parsing, so comments may mention
    ``${VAR}`` freely.
    """
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    if env is not None:
        document = _map_strings(document, lambda value: interpolate(value, env))
    return document


def compose_references(document: dict) -> list[tuple[str, str | None, str | None]]:
    """Every variable reference in the values of a parsed compose document."""
    return [ref for value in string_values(document) for ref in variable_references(value)]


def environment_of(service: dict) -> dict[str, str]:
    """A service's environment as a mapping (the list form ``KEY=VALUE`` converted)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def literal_secrets(compose: dict) -> list[str]:
    """Places in a (not interpolated) compose document where a secret is written as a literal.

    A secret-named environment entry must be exactly one required reference ``${VAR:?message}``;
    credentials inside URLs and JSON connection strings must be references too.
    """
    problems = []
    for name, service in (compose.get("services") or {}).items():
        for key, value in environment_of(service).items():
            if SECRET_NAME.search(key) and not _REQUIRED_REFERENCE.fullmatch(value):
                problems.append(f"{name}: {key}={value!r}")
            for pattern in (_URL_CREDENTIALS, _JSON_PASSWORD):
                for match in pattern.finditer(value):
                    secret = match.group(match.lastgroup)
                    if not _REQUIRED_REFERENCE.fullmatch(secret):
                        problems.append(f"{name}: {key} embeds {secret!r}")
    return problems


def service_mounts(service: dict) -> dict[str, tuple[str, str]]:
    """A service's mounts as ``{container path: (source, "rw" | "ro")}``, short and long syntax alike."""
    mounts: dict[str, tuple[str, str]] = {}
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            source, target = entry.get("source", ""), entry["target"]
            read_only = str(entry.get("read_only", False)).lower() == "true"
        else:
            parts = str(entry).split(":")
            if len(parts) == 1:  # an anonymous volume: only a container path
                source, target, options = "", parts[0], ""
            else:
                source, target, options = parts[0], parts[1], ",".join(parts[2:])
            read_only = "ro" in options.split(",")
        assert target not in mounts, f"two mounts at {target}"
        mounts[target] = (source, "ro" if read_only else "rw")
    return mounts


def secrets_of_service(service: dict) -> set[str]:
    """The secrets of .env (``REQUIRED_SECRETS``) a service's environment references."""
    return {
        name
        for value in environment_of(service).values()
        for name, _, _ in variable_references(value)
        if name in REQUIRED_SECRETS
    }


def command_line_parts(service: dict) -> list[str]:
    """Everything a service puts on a process's command line: command, entrypoint, health check."""
    parts: list[str] = []
    for key in COMMAND_LINE_KEYS:
        value = service.get(key)
        parts += [value] if isinstance(value, str) else list(value or [])
    test = (service.get("healthcheck") or {}).get("test")
    parts += [test] if isinstance(test, str) else list(test or [])
    return [str(part) for part in parts]


def secrets_on_command_lines(compose: dict, secret_values: dict[str, str]) -> list[str]:
    """Places where a secret's value (after interpolation) or reference (before) is on a command line."""
    problems = []
    for name, service in (compose.get("services") or {}).items():
        for part in command_line_parts(service):
            for secret, value in secret_values.items():
                if value and value in part:
                    problems.append(f"{name}: value of {secret} in {part!r}")
            for variable, _, _ in variable_references(part):
                if variable in REQUIRED_SECRETS:
                    problems.append(f"{name}: ${{{variable}}} in {part!r}")
    return problems


def dockerfile_from_images(dockerfile: Path) -> list[str]:
    """The external images a Dockerfile's FROM lines name (references to earlier stages left out)."""
    stages: set[str] = set()
    images = []
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if not words or words[0].upper() != "FROM":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        image = args[0]
        if len(args) >= 3 and args[1].upper() == "AS":
            stages.add(args[2].lower())
        if image.lower() not in stages:
            images.append(image)
    return images


def image_is_pinned(image: str) -> bool:
    """True for ``name:tag`` (tag not ``latest``) or ``name@sha256:…``; False for ARG-templated names."""
    if "$" in image:
        return False
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


def host_ports(service: dict) -> list[tuple[str, str]]:
    """(host port, protocol) of every published port of a service."""
    published = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published") is not None:
                published.append((str(entry["published"]), entry.get("protocol", "tcp")))
            continue
        spec, _, protocol = str(entry).partition("/")
        parts = spec.rsplit(":", 2)
        if len(parts) >= 2:  # "host:container" or "ip:host:container"; a bare container port publishes nothing fixed
            published.append((parts[-2], protocol or "tcp"))
    return published


def free_port_run(count: int = 4) -> int:
    """A port N such that N .. N+count-1 are free on 127.0.0.1 right now."""
    import contextlib

    for _ in range(50):
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(socket.socket())
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                for offset in range(1, count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port + offset))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no {count} consecutive free ports found")


def wait_until_healthy(command: list[str], process: subprocess.Popen, deadline_seconds: float = 60.0) -> None:
    """Run the health probe until it passes; fails if the server process dies or never gets healthy."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}")
        if subprocess.run(command, capture_output=True).returncode == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"never healthy: {' '.join(command)}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose_interpolated(env_example) -> dict:
    return load_compose(env_example)


# ----------------------------------------------------------------------------- the file itself
def test_compose_file_validates_against_compose_spec_schema(compose, compose_interpolated):
    """Valid per the Compose Specification, both as written and after interpolating .env.example."""
    schema = json.loads(require(COMPOSE_SCHEMA).read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    for label, document in (("as written", compose), ("interpolated", compose_interpolated)):
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        assert not errors, f"{label}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
        )


def _docker_compose_config(env_file: Path) -> subprocess.CompletedProcess:
    # A minimal environment: compose also interpolates from the process environment,
    # which must not hide a variable missing from the env file.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose (Debian's 1.29) is not installed; schema validation above still ran")
def test_docker_compose_config_accepts_the_file_with_env_example():
    result = _docker_compose_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose (Debian's 1.29) is not installed; required secrets are checked textually below")
@pytest.mark.parametrize("missing", ["GGM_PSEUDONYM_KEY", "GGM_SPARK_AUTH_SECRET"])
def test_docker_compose_refuses_to_run_without_a_required_secret(tmp_path, env_example, missing):
    env_file = tmp_path / "partial.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env_example.items() if k != missing), encoding="utf-8")
    result = _docker_compose_config(env_file)
    assert result.returncode != 0
    assert missing in result.stderr


def test_variables_only_in_braced_form_and_all_declared_in_env_example(compose, env_example):
    references = compose_references(compose)
    assert references, "the compose file reads nothing from .env"
    bare = sorted({name for name, op, _ in references if op == "bare"})
    assert not bare, f"use ${{VAR}} (not $VAR) so every reference is visible and checkable: {bare}"
    undeclared = sorted({name for name, _, _ in references} - set(env_example))
    assert not undeclared, f"used in docker-compose.yml but not declared in .env.example: {undeclared}"


def test_secrets_are_required_never_defaulted(compose, env_example):
    references = compose_references(compose)
    ops_by_name: dict[str, set] = {}
    for name, op, _ in references:
        ops_by_name.setdefault(name, set()).add(op)
    missing = sorted(REQUIRED_SECRETS - set(ops_by_name))
    assert not missing, f"required secrets the compose file does not use: {missing}"
    for name, ops in ops_by_name.items():
        if SECRET_NAME.search(name):
            assert ops == {":?"}, f"{name} must always be referenced as ${{{name}:?message}}, found {ops}"
            assert name in REQUIRED_SECRETS, f"new secret {name}: add it to REQUIRED_SECRETS and docs/compose.md"
    for name in REQUIRED_SECRETS:
        assert PLACEHOLDER in env_example[name], f".env.example must hold a {PLACEHOLDER} placeholder for {name}"


def test_no_literal_secrets_in_the_compose_file(compose):
    assert literal_secrets(compose) == []


def test_literal_secret_detection_catches_what_it_should(compose):
    """The check above is not vacuous: literals in each form it guards are reported."""
    tampered = copy.deepcopy(compose)
    postgres_env = tampered["services"]["postgres"]["environment"]
    postgres_env["POSTGRES_PASSWORD"] = "airflow"
    scheduler_env = tampered["services"]["airflow-scheduler"]["environment"]
    scheduler_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = "postgresql+psycopg2://airflow:airflow@postgres/airflow"
    scheduler_env["AIRFLOW_CONN_GGM_BRP"] = '{"conn_type": "http", "host": "http://x", "password": "hunter2hunter2"}'
    scheduler_env["AIRFLOW__CORE__FERNET_KEY"] = "${AIRFLOW_FERNET_KEY:-insecure-default}"
    problems = "\n".join(literal_secrets(tampered))
    assert "POSTGRES_PASSWORD" in problems
    assert "embeds 'airflow'" in problems
    assert "hunter2hunter2" in problems
    assert "AIRFLOW__CORE__FERNET_KEY" in problems


# ----------------------------------------------------------------------------- services
def test_every_service_has_a_pinned_image_or_an_existing_build(compose):
    for name, service in compose["services"].items():
        build = service.get("build")
        assert build or service.get("image"), f"{name}: neither image nor build"
        if service.get("image"):
            assert image_is_pinned(service["image"]), f"{name}: image {service['image']!r} is not pinned to a tag"
        if not build:
            continue
        build = {"context": build} if isinstance(build, str) else build
        context = (COMPOSE_FILE.parent / build["context"]).resolve()
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        images = dockerfile_from_images(dockerfile)
        assert images, f"{dockerfile}: no FROM line"
        unpinned = [image for image in images if not image_is_pinned(image)]
        assert not unpinned, f"{dockerfile}: base images not pinned to a tag: {unpinned}"
        ignore_file = dockerfile.with_name(dockerfile.name + ".dockerignore")
        assert ignore_file.is_file(), f"{dockerfile}: no {ignore_file.name} (keeps .env and data out of the image)"
        ignored = ignore_file.read_text(encoding="utf-8").splitlines()
        assert ".env" in ignored and ".venv" in ignored and "data" in ignored


def test_the_images_build_on_the_requested_bases():
    assert "apache/airflow:3.3.2-python3.11" in dockerfile_from_images(ROOT / "docker" / "airflow.Dockerfile")
    spark_bases = dockerfile_from_images(ROOT / "docker" / "spark.Dockerfile")
    assert any(image.startswith("python:3.11.") for image in spark_bases), spark_bases  # same minor as the driver


def test_every_service_has_a_healthcheck(compose):
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check, f"{name}: no healthcheck"
        assert not check.get("disable"), f"{name}: healthcheck disabled"
        test = check.get("test")
        assert test and test not in (["NONE"], "NONE"), f"{name}: healthcheck without a test"


def test_files_the_services_run_from_the_image_exist_in_the_repository():
    """Every /opt/ggm/... path the compose file names (entrypoints, probes) is part of the checkout."""
    referenced = set(re.findall(rf"{IMAGE_PROJECT_ROOT}/([\w./-]+)", COMPOSE_FILE.read_text(encoding="utf-8")))
    assert referenced
    missing = sorted(path for path in referenced if not (ROOT / path).exists())
    assert not missing, f"referenced under {IMAGE_PROJECT_ROOT} but missing in the repository: {missing}"


def test_named_volumes_are_declared(compose):
    declared = set(compose.get("volumes") or {})
    used = {
        source
        for service in compose["services"].values()
        for source, _ in service_mounts(service).values()
        if source and not source.startswith(("/", ".", "~", "$"))
    }
    assert used <= declared, f"named volumes used but not declared: {sorted(used - declared)}"
    assert not declared - used, f"declared but mounted nowhere: {sorted(declared - used)}"
    assert service_mounts(compose["services"]["postgres"]) == {"/var/lib/postgresql/data": ("postgres-db", "rw")}


def test_each_service_mounts_what_it_reads_or_writes_and_nothing_else(compose):
    """Least privilege: every service's mounts are exactly the declared ones, read-only where it only reads."""
    services = compose["services"]
    assert set(services) == set(EXPECTED_MOUNTS), (
        "every service needs an entry in EXPECTED_MOUNTS (and docs/compose.md): "
        f"missing {sorted(set(services) - set(EXPECTED_MOUNTS))}, stale {sorted(set(EXPECTED_MOUNTS) - set(services))}"
    )
    for name, service in services.items():
        assert service_mounts(service) == EXPECTED_MOUNTS[name], f"{name}: mounts differ from EXPECTED_MOUNTS"


def test_mount_parsing_reads_both_syntaxes_and_the_read_only_flag():
    """The check above is not vacuous: short and long syntax, ro and rw, all come out as written."""
    service = {"volumes": [
        "ggm-lake:/data/lake", "ggm-shares:/data/lake/shares:ro", "./config:/opt/ggm/config:ro,z",
        {"type": "volume", "source": "ggm-dashboard", "target": "/data/dashboard", "read_only": True},
        {"type": "volume", "source": "ggm-sharing", "target": "/data/sharing"},
    ]}
    assert service_mounts(service) == {
        "/data/lake": ("ggm-lake", "rw"), "/data/lake/shares": ("ggm-shares", "ro"),
        "/opt/ggm/config": ("./config", "ro"), "/data/dashboard": ("ggm-dashboard", "ro"),
        "/data/sharing": ("ggm-sharing", "rw"),
    }


def test_every_data_volume_sits_where_the_code_looks_for_it(compose, monkeypatch):
    """A volume has one path in every service, and that path is the one ggm_lakehouse.config derives
    from GGM_DATA_ROOT (no service could otherwise find another's files)."""
    from dashboard.cli import default_output_dir
    from ggm_lakehouse import config as ggm_config
    from sharing_server.projections import PROJECTIONS_DIR

    for variable in ("GGM_LAKE_ROOT", "GGM_LANDING_ROOT", "GGM_DROPZONE_ROOT", "GGM_SHARING_ROOT"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("GGM_DATA_ROOT", DATA_ROOT)
    derived = {
        "ggm-data": ggm_config.data_root(),
        "ggm-landing": ggm_config.landing_root(),
        "ggm-lake": ggm_config.lake_root(),
        "ggm-shares": ggm_config.lake_root() / PROJECTIONS_DIR,
        "ggm-dropzone": ggm_config.dropzone_root(),
        "ggm-sharing": ggm_config.sharing_root(),
        "ggm-dashboard": default_output_dir(),
        "ggm-standins": ggm_config.data_root() / "standins",  # docker/standins_serve.py
    }
    paths: dict[str, set[str]] = {}
    for name, service in compose["services"].items():
        env = environment_of(service)
        for target, (source, _) in service_mounts(service).items():
            paths.setdefault(source, set()).add(target)
            if target.startswith(DATA_ROOT):
                # The services that mount data all resolve their roots from GGM_DATA_ROOT.
                assert env.get("GGM_DATA_ROOT") == DATA_ROOT, f"{name}: mounts {target} but GGM_DATA_ROOT is not {DATA_ROOT}"
    for volume, expected in derived.items():
        assert paths.get(volume) == {str(expected)}, f"{volume} mounted at {paths.get(volume)}, the code uses {expected}"


def test_read_only_where_a_service_only_reads(compose):
    """Pure readers mount everything read-only; configuration, when mounted at all, is read-only everywhere."""
    services = compose["services"]
    for reader in ("dashboard", "airflow-apiserver"):
        assert {mode for _, mode in service_mounts(services[reader]).values()} == {"ro"}, reader
    shares = service_mounts(services["sharing-server"])
    assert shares["/data/lake/shares"] == ("ggm-shares", "ro")
    assert not any(target == "/data/lake" for target in shares), "the sharing server must not see bronze/silver/gold"
    for name, service in services.items():
        for target, (source, mode) in service_mounts(service).items():
            if target.startswith(IMAGE_PROJECT_ROOT) or source.startswith((".", "/")):
                assert mode == "ro", f"{name}: {source} at {target} (configuration or a host path) must be :ro"


def test_the_sharing_server_needs_no_more_of_the_lake_than_the_projections():
    """Its mount relies on serve_from: projections; serving from the source tables would need the lake."""
    from ggm_lakehouse.model.shares_config import load_shares_config

    assert load_shares_config(ROOT / "config" / "shares.yaml").serve_from == "projections", (
        "config/shares.yaml serves from the source tables: mount ggm-lake read-only in sharing-server "
        "(and update EXPECTED_MOUNTS and docs/compose.md)"
    )


def documented_mounts_and_secrets() -> dict[str, tuple[dict[str, tuple[str, str]], set[str]]]:
    """docs/compose.md's table "Mounts and secrets per service": {service: (mounts, secrets)}."""
    text = (ROOT / "docs" / "compose.md").read_text(encoding="utf-8")
    section = text.split("### Mounts and secrets per service", 1)[1]
    footnote = section.split("¹ The Airflow set", 1)[1].split("\n\n", 1)[0].split("No Airflow service gets", 1)[0]
    airflow_set = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", footnote))
    rows: dict[str, tuple[dict[str, tuple[str, str]], set[str]]] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            if rows and not line.startswith("|"):
                break
            continue
        service, mounts, secrets = [cell.strip() for cell in line.strip().strip("|").split("|")][:3]
        rows[service.strip("`")] = (
            {path: (volume, mode) for volume, path, mode in re.findall(r"`([\w-]+)` → `([^`]+)` (rw|ro)", mounts)},
            set(re.findall(r"`([A-Z][A-Z0-9_]+)`", secrets)) | (airflow_set if "Airflow set" in secrets else set()),
        )
    return rows


def test_the_documented_mounts_and_secrets_are_the_ones_the_stack_has():
    documented = documented_mounts_and_secrets()
    assert set(documented) == set(EXPECTED_MOUNTS), "docs/compose.md: a service is missing from the table"
    for name, (mounts, secrets) in documented.items():
        assert mounts == EXPECTED_MOUNTS[name], f"docs/compose.md: mounts of {name}"
        assert secrets == EXPECTED_SECRETS[name], f"docs/compose.md: secrets of {name}"


def test_each_service_gets_only_the_secrets_it_uses(compose):
    services = compose["services"]
    assert set(services) == set(EXPECTED_SECRETS)
    for name, service in services.items():
        assert secrets_of_service(service) == EXPECTED_SECRETS[name], f"{name}: secrets differ from EXPECTED_SECRETS"


def test_spark_auth_secret_is_required_and_reaches_master_worker_and_every_driver(compose, compose_interpolated,
                                                                                   env_example):
    """spark.authenticate on the standalone cluster: the master, the worker and every service that submits
    to the master start through docker/spark-auth.sh with GGM_SPARK_AUTH_SECRET, which has no default."""
    raw, services = compose["services"], compose_interpolated["services"]
    required = re.compile(rf"\$\{{{SPARK_AUTH_SECRET}:\?[^}}]+\}}")
    submitters = {name for name, service in services.items() if SPARK_MASTER_URL in " ".join(command_line_parts(service))}
    assert submitters == {"spark-worker", "spark-connect"}, submitters
    master = services["spark-master"]
    assert "org.apache.spark.deploy.master.Master" in master["command"]
    for name in SPARK_AUTH_SERVICES:
        reference = environment_of(raw[name]).get(SPARK_AUTH_SECRET, "")
        assert required.fullmatch(reference), f"{name}: {SPARK_AUTH_SECRET} must be exactly ${{{SPARK_AUTH_SECRET}:?message}}"
        assert environment_of(services[name])[SPARK_AUTH_SECRET] == env_example[SPARK_AUTH_SECRET]
        assert raw[name].get("entrypoint") == SPARK_AUTH_ENTRYPOINT, f"{name}: must start through docker/spark-auth.sh"
        assert raw[name]["command"][0] in ("spark-class", "spark-submit"), name
    # The Airflow services submit nothing to the master: their Spark stages are Spark Connect clients
    # (a `cluster` target would need the secret and the wrapper in the scheduler).
    for name, service in services.items():
        if name.startswith("airflow-"):
            assert environment_of(service)["GGM_SPARK_TARGET"] == "connect", name
    holders = {name for name, service in raw.items() if SPARK_AUTH_SECRET in secrets_of_service(service)}
    assert holders == SPARK_AUTH_SERVICES


def test_no_secret_on_a_command_line(compose, compose_interpolated, env_example):
    """Secrets travel in the environment (or a file made from it), never in command, entrypoint or health check."""
    values = {name: env_example[name] for name in REQUIRED_SECRETS}
    assert secrets_on_command_lines(compose, values) == []
    assert secrets_on_command_lines(compose_interpolated, values) == []


def test_command_line_secret_detection_catches_what_it_should(compose, env_example):
    tampered = copy.deepcopy(compose)
    connect = tampered["services"]["spark-connect"]
    connect["command"] = [*connect["command"], "--conf",
                          "spark.authenticate.secret=${GGM_SPARK_AUTH_SECRET:?set GGM_SPARK_AUTH_SECRET}"]
    tampered["services"]["spark-worker"]["healthcheck"]["test"] = ["CMD", "echo", env_example["GGM_PSEUDONYM_KEY"]]
    problems = "\n".join(secrets_on_command_lines(tampered, {k: env_example[k] for k in REQUIRED_SECRETS}))
    assert "spark-connect: ${GGM_SPARK_AUTH_SECRET}" in problems
    assert "spark-worker: value of GGM_PSEUDONYM_KEY" in problems
    interpolated = {"services": {"spark-connect": {"entrypoint": SPARK_AUTH_ENTRYPOINT, "command": [
        "spark-submit", f"--conf=spark.authenticate.secret={env_example['GGM_SPARK_AUTH_SECRET']}"]}}}
    problems = "\n".join(secrets_on_command_lines(interpolated, {k: env_example[k] for k in REQUIRED_SECRETS}))
    assert "spark-connect: value of GGM_SPARK_AUTH_SECRET" in problems


def test_host_ports_are_not_duplicated(compose):
    seen: dict[tuple[str, str], str] = {}
    for name, service in compose["services"].items():
        for port in host_ports(service):
            assert port not in seen, f"host port {port[0]}/{port[1]} published by {seen[port]} and {name}"
            seen[port] = name
    assert ("8080", "tcp") in seen and ("8765", "tcp") in seen


def test_the_stack_runs_spark_on_the_cluster_and_extracts_from_the_standins(compose_interpolated, env_example):
    from demo_gemeente.generator import DemoWorld
    from ggm_lakehouse.cli import DEFAULT_POPULATION, DEFAULT_SEED
    from standins.bag import DEFAULT_PATH_PREFIX as BAG_PREFIX
    from standins.brp import DEFAULT_PATH_PREFIX as BRP_PREFIX

    services = compose_interpolated["services"]
    expected_services = {"postgres", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                         "airflow-triggerer", "spark-master", "spark-worker", "sharing-server", "standins"}
    assert expected_services <= set(services)
    scheduler = environment_of(services["airflow-scheduler"])
    # Stages are Connect clients of the one spark-connect server, whose driver runs on the cluster.
    assert scheduler["GGM_SPARK_TARGET"] == "connect"
    spark_conn = json.loads(scheduler["AIRFLOW_CONN_GGM_SPARK"])
    assert spark_conn["conn_type"] == "spark_connect" and spark_conn["host"] == "sc://localhost"
    assert spark_conn["password"] == env_example["GGM_SPARK_CONNECT_TOKEN"]
    connect = services["spark-connect"]
    assert "org.apache.spark.sql.connect.service.SparkConnectServer" in connect["command"]
    assert connect["command"][connect["command"].index("--master") + 1] == "spark://spark-master:7077"
    assert "spark.connect.grpc.binding.address=127.0.0.1" in connect["command"]
    assert f"spark.connect.grpc.binding.port={spark_conn['port']}" in connect["command"]
    # The token reaches the server by environment, never on its command line; only the scheduler shares its loopback.
    assert environment_of(connect)["SPARK_CONNECT_AUTHENTICATE_TOKEN"] == spark_conn["password"]
    assert not any(spark_conn["password"] in part for part in connect["command"])
    assert services["airflow-scheduler"]["network_mode"] == "service:spark-connect"
    assert not host_ports(connect)
    # The pseudonym key is on the Spark side only (where the UDF runs), not in Airflow's environment.
    assert "GGM_PSEUDONYM_KEY" not in scheduler
    assert environment_of(services["spark-worker"])["GGM_PSEUDONYM_KEY"] == env_example["GGM_PSEUDONYM_KEY"]
    assert "spark://spark-master:7077" in services["spark-worker"]["command"]

    port_base = int(services["standins"]["command"][services["standins"]["command"].index("--port-base") + 1])
    brp = json.loads(scheduler["AIRFLOW_CONN_GGM_BRP"])
    bag = json.loads(scheduler["AIRFLOW_CONN_GGM_BAG"])
    assert brp["host"] == f"http://standins:{port_base}{BRP_PREFIX}"
    assert bag["host"] == f"http://standins:{port_base + 1}{BAG_PREFIX}"
    assert brp["password"] == env_example["GGM_STANDIN_BRP_API_KEY"]
    assert bag["password"] == env_example["GGM_STANDIN_BAG_API_KEY"]
    standins_env = environment_of(services["standins"])
    assert standins_env["GGM_STANDIN_BRP_API_KEY"] == brp["password"]
    assert standins_env["GGM_STANDIN_BAG_API_KEY"] == bag["password"]
    # The BAG crawl starts from the demo municipality's woonplaatsen, which follow from its seed.
    woonplaatsen = sorted(DemoWorld(DEFAULT_POPULATION, DEFAULT_SEED).base().woonplaatsen)
    assert bag["extra"]["woonplaats_ids"] == woonplaatsen


# ----------------------------------------------------------------------------- entry scripts, run for real
def test_check_secrets_refuses_placeholders_and_runs_the_command_otherwise():
    script = ROOT / "docker" / "check-secrets.sh"
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    refused = subprocess.run(
        ["bash", str(script), "echo", "started"],
        env={**base_env, "GGM_PSEUDONYM_KEY": f"{PLACEHOLDER}_ggm_pseudonym_key", "OTHER": "fine"},
        capture_output=True, text=True, timeout=30,
    )
    assert refused.returncode == 78
    assert "GGM_PSEUDONYM_KEY" in refused.stderr and "OTHER" not in refused.stderr
    assert "started" not in refused.stdout
    started = subprocess.run(
        ["bash", str(script), "echo", "started"],
        env={**base_env, "GGM_PSEUDONYM_KEY": "0123456789abcdef0123456789abcdef"},
        capture_output=True, text=True, timeout=30,
    )
    assert started.returncode == 0 and started.stdout.strip() == "started"


def _run_spark_auth(tmp_path: Path, env: dict[str, str], probe: str = "") -> subprocess.CompletedProcess:
    """docker/spark-auth.sh with a Python probe as COMMAND, its private folder under ``tmp_path``."""
    return subprocess.run(
        ["bash", str(ROOT / "docker" / "spark-auth.sh"), sys.executable, "-c", probe or "print('started')"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GGM_SPARK_AUTH_DIR": str(tmp_path), **env},
        capture_output=True, text=True, timeout=30,
    )


def test_spark_auth_wrapper_hands_the_secret_to_spark_in_a_private_file(tmp_path):
    """What spark-master, spark-worker and spark-connect start with: SPARK_CONF_DIR is a fresh 0700
    folder whose 0600 spark-defaults.conf enables spark.authenticate with the secret (and keeps the
    image's defaults); the secret is neither in the command's environment nor on its command line."""
    secret = "0123456789abcdef" * 4
    probe = (
        "import json, os, sys; print(json.dumps({'conf': os.environ['SPARK_CONF_DIR'], 'argv': sys.argv,"
        " 'env': {k: v for k, v in os.environ.items() if 'SECRET' in k or v == " + repr(secret) + "}}))"
    )
    result = _run_spark_auth(tmp_path, {"GGM_SPARK_AUTH_SECRET": secret,
                                        "SPARK_CONF_DIR": str(ROOT / "docker" / "spark-conf")}, probe)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["env"] == {}, f"the secret stayed in the environment: {sorted(seen['env'])}"
    assert not any(secret in arg for arg in seen["argv"])
    conf_dir = Path(seen["conf"])
    assert conf_dir.parent == tmp_path and conf_dir.stat().st_mode & 0o777 == 0o700
    defaults = conf_dir / "spark-defaults.conf"
    assert defaults.stat().st_mode & 0o777 == 0o600
    # Parsed as Spark reads spark-defaults.conf (java.util.Properties: key, whitespace, trimmed value).
    properties = dict(
        re.split(r"\s+", line.strip(), maxsplit=1)
        for line in defaults.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    assert properties["spark.authenticate"] == "true"
    assert properties["spark.authenticate.secret"] == secret
    assert properties["spark.pyspark.python"] == "python3"  # the image's defaults are kept
    assert secret not in result.stderr


@pytest.mark.parametrize("value, reason", [
    (None, "is not set"),
    ("", "is not set"),
    (f"{PLACEHOLDER}_ggm_spark_auth_secret", PLACEHOLDER),
    ("too-short-0123456789", "at least 32"),
    ("0123456789abcdef0123456789abcdef with space", "at least 32"),
    ("0123456789abcdef0123456789abcdef\\escaped", "at least 32"),
])
def test_spark_auth_wrapper_refuses_a_missing_placeholder_or_unsafe_secret(tmp_path, value, reason):
    env = {} if value is None else {"GGM_SPARK_AUTH_SECRET": value}
    result = _run_spark_auth(tmp_path, env)
    assert result.returncode == 78, result.stderr
    assert reason in result.stderr and "GGM_SPARK_AUTH_SECRET" in result.stderr
    assert "started" not in result.stdout
    assert not list(tmp_path.iterdir()), "nothing is written before the secret is accepted"


def test_airflow_init_runs_the_secret_guard_before_anything_else():
    script = (ROOT / "docker" / "airflow-init.sh").read_text(encoding="utf-8")
    assert script.index("check-secrets.sh") < script.index("mkdir -p") < script.index("exec /entrypoint")


def test_standins_and_health_probes_as_the_compose_stack_runs_them(tmp_path):
    """The standins entry point serves both registries with the keys from .env, delivers the
    drop zone, passes the compose health check and stops cleanly on SIGTERM."""
    port_base = free_port_run(5)
    keys = {"GGM_STANDIN_BRP_API_KEY": "brp-key-0123456789abcdef", "GGM_STANDIN_BAG_API_KEY": "bag-key-0123456789abcdef",
            "GGM_STANDIN_KVK_API_KEY": "kvk-key-0123456789abcdef"}
    env = {**os.environ, **keys, "GGM_DATA_ROOT": str(tmp_path), "GGM_PROJECT_ROOT": str(ROOT),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "docker" / "standins_serve.py"), "--host", "127.0.0.1", "--port-base", str(port_base)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    probe = [sys.executable, str(ROOT / "docker" / "healthcheck.py")]
    try:
        wait_until_healthy(probe + [f"http://127.0.0.1:{port_base}/_standin/health", "--contains", "brp"], process)
        assert subprocess.run(probe + [f"http://127.0.0.1:{port_base + 1}/_standin/health", "--contains", "bag"]).returncode == 0
        assert subprocess.run(probe + [f"http://127.0.0.1:{port_base + 2}/_standin/health", "--contains", "kvk"]).returncode == 0
        kvk_url = f"http://127.0.0.1:{port_base + 2}/api/v2/zoeken"
        assert requests.get(kvk_url, params={"plaats": "Demodam"}, headers={"apikey": keys["GGM_STANDIN_KVK_API_KEY"]},
                            timeout=10).status_code == 200
        cbs_url = f"http://127.0.0.1:{port_base + 3}/ODataFeed/odata/99260NED/TableInfos"
        assert requests.get(cbs_url, timeout=10).status_code == 200
        update_url = f"http://127.0.0.1:{port_base + 4}/haalcentraal/api/brpupdate/volgindicaties"
        assert requests.get(update_url, headers={"X-API-KEY": keys["GGM_STANDIN_BRP_API_KEY"]}, timeout=10).status_code == 200
        # The probe fails for a wrong expectation and for a closed port.
        assert subprocess.run(probe + [f"http://127.0.0.1:{port_base}/_standin/health", "--status", "401"],
                              capture_output=True).returncode == 1
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            closed_port = closed.getsockname()[1]
        assert subprocess.run(probe + [f"http://127.0.0.1:{closed_port}/"], capture_output=True).returncode == 1

        brp_url = f"http://127.0.0.1:{port_base}/haalcentraal/api/brp/personen"
        body = {"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999990019"],
                "fields": ["burgerservicenummer"]}
        assert requests.post(brp_url, json=body, timeout=10).status_code == 401
        assert requests.post(brp_url, json=body, headers={"X-API-KEY": keys["GGM_STANDIN_BRP_API_KEY"]},
                             timeout=10).status_code == 200
        bag_url = f"http://127.0.0.1:{port_base + 1}/lvbag/individuelebevragingen/v2/woonplaatsen/2415"
        assert requests.get(bag_url, headers={"X-Api-Key": keys["GGM_STANDIN_BAG_API_KEY"],
                                              "Accept-Crs": "epsg:28992"}, timeout=10).status_code == 200

        stamp = datetime.now(timezone.utc).strftime("%Y%m%d")
        assert (tmp_path / "dropzone" / "brp-volglijst" / f"volglijst_{stamp}.csv").is_file()
        assert list((tmp_path / "dropzone").glob(f"*/*_{stamp}.csv"))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, logs_so_far = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail("standins did not stop on SIGTERM")
    assert process.returncode == 0, logs_so_far
    assert keys["GGM_STANDIN_BRP_API_KEY"] not in logs_so_far  # keys are secrets: never logged


def test_standins_refuse_to_start_without_keys(tmp_path):
    env = {**os.environ, "GGM_DATA_ROOT": str(tmp_path), "GGM_STANDIN_BRP_API_KEY": "short",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("GGM_STANDIN_BAG_API_KEY", None)
    result = subprocess.run([sys.executable, str(ROOT / "docker" / "standins_serve.py"), "--port-base", "1"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "GGM_STANDIN_BRP_API_KEY" in result.stderr
    assert not (tmp_path / "dropzone").exists()
