"""The compose stack (docker-compose.yml, docker/, .env.example) is correct by construction.

No Docker engine runs in CI, so the stack cannot be started here. These tests check
what can be checked without one: the file against the Compose Specification schema,
`docker-compose config` when Debian's docker-compose is installed, every build
context, Dockerfile and base-image pin, health checks, secrets only from .env,
volumes and ports; and they run the stack's own entry scripts (secret guard, health
probe, demo stand-ins) for real on 127.0.0.1.
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
def test_docker_compose_refuses_to_run_without_a_required_secret(tmp_path, env_example):
    missing = "GGM_PSEUDONYM_KEY"
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


def test_named_volumes_are_declared_and_the_lake_is_shared(compose):
    declared = set(compose.get("volumes") or {})
    used = set()
    data_roots = {}
    for name, service in compose["services"].items():
        for entry in service.get("volumes") or []:
            if isinstance(entry, dict):
                source, target = entry.get("source"), entry.get("target")
                named = entry.get("type", "volume") == "volume" and source
            else:
                source, _, rest = str(entry).partition(":")
                target = rest.split(":")[0]
                named = rest and not source.startswith(("/", ".", "~", "$"))
            if named:
                used.add(source)
            if source == "ggm-data":
                data_roots[name] = target
        env = environment_of(service)
        if "GGM_DATA_ROOT" in env:
            assert data_roots.get(name) == env["GGM_DATA_ROOT"], f"{name}: ggm-data is not mounted at GGM_DATA_ROOT"
    assert used <= declared, f"named volumes used but not declared: {sorted(used - declared)}"
    assert {"ggm-data", "postgres-db"} <= declared
    assert len(set(data_roots.values())) == 1, f"ggm-data mounted at different paths: {data_roots}"
    expected = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                "airflow-triggerer", "spark-connect", "spark-worker", "sharing-server", "standins"}
    assert expected <= set(data_roots), f"services without the lake: {sorted(expected - set(data_roots))}"
    postgres_mounts = [str(v) for v in compose["services"]["postgres"]["volumes"]]
    assert "postgres-db:/var/lib/postgresql/data" in postgres_mounts


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
