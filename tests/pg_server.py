"""A throw-away PostgreSQL server on loopback for tests: ``initdb`` into a temporary directory, ``pg_ctl start``.

Usage::

    with start_postgres() as pg:
        admin = pg.url()                       # postgresql+psycopg://ggm_admin:...@127.0.0.1:<port>/postgres
        pg.execute("CREATE DATABASE suite4")

The server listens on 127.0.0.1 only, on a free ephemeral port, without a Unix socket, with
``scram-sha-256`` password authentication for every connection (so a wrong password is refused
exactly as in production) and durability switched off (``fsync=off``: a test server never needs
to survive a crash, and fsyncs are slow on a shared machine).

PostgreSQL refuses to run as root. When the tests run as root, the data directory is handed to an
unprivileged system user (``ggmtest``, created with ``useradd`` when missing) and the server is
started with ``runuser``. When the binaries are missing, :func:`postgres_bin_dir` raises
:class:`PostgresNotAvailable` with the package to install.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

TEST_OS_USER = "ggmtest"
SUPERUSER = "ggm_admin"
INSTALL_HINT = "apt-get install -y --no-install-recommends postgresql"


class PostgresNotAvailable(RuntimeError):
    """The PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed."""


def postgres_bin_dir() -> Path:
    """Directory holding ``initdb`` and ``pg_ctl``: ``GGM_PG_BIN``, the newest Debian cluster version, or ``PATH``."""
    candidates: list[Path] = []
    if os.environ.get("GGM_PG_BIN"):
        candidates.append(Path(os.environ["GGM_PG_BIN"]))
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted((p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: int(p.name), reverse=True)
        candidates.extend(p / "bin" for p in versions)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if all((candidate / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return candidate
    raise PostgresNotAvailable(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in GGM_PG_BIN, /usr/lib/postgresql/*/bin "
        f"or PATH; install them with: {INSTALL_HINT}"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ensure_os_user() -> pwd.struct_passwd:
    """The unprivileged user that runs the server when the tests run as root."""
    try:
        return pwd.getpwnam(TEST_OS_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_OS_USER],
            check=True, capture_output=True,
        )
        return pwd.getpwnam(TEST_OS_USER)


@dataclass
class PostgresServer:
    """A running test server; :meth:`url` builds SQLAlchemy URLs for it."""

    host: str
    port: int
    superuser: str
    superuser_password: str
    base_dir: Path

    def url(self, user: str | None = None, password: str | None = None, database: str = "postgres") -> str:
        """A ``postgresql+psycopg://`` URL (superuser unless ``user`` is given)."""
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg",
            username=user or self.superuser,
            password=password if user else self.superuser_password,
            host=self.host,
            port=self.port,
            database=database,
        ).render_as_string(hide_password=False)

    def execute(self, *statements: str, database: str = "postgres") -> None:
        """Run statements as superuser in autocommit mode (CREATE DATABASE cannot run in a transaction)."""
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user=self.superuser, password=self.superuser_password,
            dbname=database, autocommit=True,
        ) as conn:
            for statement in statements:
                conn.execute(statement)


def _run(command: list[str], as_user: pwd.struct_passwd | None) -> subprocess.CompletedProcess:
    if as_user is not None:
        command = ["runuser", "-u", as_user.pw_name, "--", *command]
    # A clean locale: initdb fails on a LANG the machine has no locale for.
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@contextlib.contextmanager
def start_postgres(attempts: int = 3) -> Iterator[PostgresServer]:
    """Start a fresh PostgreSQL server on 127.0.0.1; stop it and remove its files on exit."""
    bin_dir = postgres_bin_dir()
    as_user = _ensure_os_user() if os.geteuid() == 0 else None
    # Not under pytest's tmp_path: that tree is private to root and the server user must reach its files.
    base = Path(tempfile.mkdtemp(prefix="ggm-pg-"))
    data = base / "data"
    password = secrets.token_urlsafe(18)
    pwfile = base / "superuser.pw"
    pwfile.write_text(password + "\n", encoding="utf-8")
    if as_user is not None:
        os.chown(base, as_user.pw_uid, as_user.pw_gid)
        os.chown(pwfile, as_user.pw_uid, as_user.pw_gid)
    os.chmod(base, 0o700)
    os.chmod(pwfile, 0o600)
    started = False
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, f"--pwfile={pwfile}",
              "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync", "--no-instructions"], as_user)
        pwfile.unlink()
        port = 0
        for attempt in range(attempts):
            port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=30")
            try:
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-o", options,
                      "-w", "-t", "120", "start"], as_user)
                started = True
                break
            except RuntimeError:
                # Another process took the port between probing and binding: try another one.
                if attempt == attempts - 1:
                    log = (base / "server.log").read_text(errors="replace") if (base / "server.log").exists() else ""
                    raise RuntimeError(f"PostgreSQL did not start; server log:\n{log[-4000:]}") from None
        yield PostgresServer("127.0.0.1", port, SUPERUSER, password, base)
    finally:
        if started:
            with contextlib.suppress(RuntimeError):
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"], as_user)
        shutil.rmtree(base, ignore_errors=True)
