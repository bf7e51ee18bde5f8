"""Where things live and where secrets come from.

Every path the platform writes to is derived here, so that tests, the CLI,
Airflow tasks and Spark jobs agree on one layout:

    <lake root>/<layer>/<table>          Delta tables (layer: bronze, silver, gold)
    <landing root>/<source>/<dataset>/   raw responses with a manifest per batch
    <dropzone root>/<source>/            files delivered by departmental systems

The defaults sit inside the checkout (``data/``); each root can be moved with an
environment variable so that a production deployment points at its own storage.
"""
from __future__ import annotations

import os
from pathlib import Path

# "quarantine" holds rejected source records in clear (like bronze): engineers only.
LAYERS = ("bronze", "silver", "gold", "quarantine")


def project_root() -> Path:
    """The checkout this package was installed from (editable install)."""
    return Path(os.environ.get("GGM_PROJECT_ROOT", Path(__file__).resolve().parent.parent))


def data_root() -> Path:
    """Root for all local data; ``GGM_DATA_ROOT`` overrides ``<checkout>/data``."""
    return Path(os.environ.get("GGM_DATA_ROOT", project_root() / "data"))


def lake_root() -> Path:
    """Root of the Delta lake; ``GGM_LAKE_ROOT`` overrides ``<data root>/lake``."""
    return Path(os.environ.get("GGM_LAKE_ROOT", data_root() / "lake"))


def landing_root() -> Path:
    """Root of the raw landing zone; ``GGM_LANDING_ROOT`` overrides ``<data root>/landing``."""
    return Path(os.environ.get("GGM_LANDING_ROOT", data_root() / "landing"))


def dropzone_root() -> Path:
    """Root of departmental drop zones; ``GGM_DROPZONE_ROOT`` overrides ``<data root>/dropzone``."""
    return Path(os.environ.get("GGM_DROPZONE_ROOT", data_root() / "dropzone"))


def sharing_root() -> Path:
    """State of the Delta Sharing server (recipients, token hashes, audit)."""
    return Path(os.environ.get("GGM_SHARING_ROOT", data_root() / "sharing"))


def table_path(layer: str, table: str) -> Path:
    """Filesystem location of a Delta table on the embedded default.

    Silver tables are stored under the lower-cased GGM table name, e.g.
    ``silver/natuurlijkpersoon`` for ``NATUURLIJKPERSOON``.
    """
    if layer not in LAYERS:
        raise ValueError(f"unknown lake layer {layer!r}; expected one of {LAYERS}")
    return lake_root() / layer / table.lower()


def parse_yaml(text: str):
    """The YAML document in ``text``, parsed safely (no Python objects), with libyaml where installed.

    libyaml's loader reads the same documents about ten times faster than the pure-Python one; a
    day asks for the mappings and mart definitions many times.
    """
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def read_yaml_config(path: Path, kind: str, error: type[Exception]):
    """The parsed YAML document of a configuration file, or ``error`` naming ``kind`` and the file.

    One reader for the project's YAML configuration files, so a missing or malformed file gives
    the same clear message whichever one it is.
    """
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{kind} {path} does not exist") from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as exc:
        raise error(f"{kind} {path} is not valid YAML: {exc}") from None


def file_stamp(path: Path) -> tuple[int, int] | None:
    """What tells that a file changed (its modification time in ns and its size), or None when it is missing.

    Readers of hot-reloaded files (the shares configuration, the recipient store) compare stamps
    instead of re-reading and re-parsing the file on every request.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size)


def has_commits(path: Path) -> bool:
    """True when the Delta table at ``path`` has a first commit, so that any reader can open it.

    A first writer creates ``_delta_log`` before it commits (commits appear atomically, by rename
    from a hidden temporary file); a reader that only looks for the folder meets a table that no
    reader can open yet when another process is creating it.
    """
    log = path / "_delta_log"
    return log.is_dir() and (any(log.glob("[0-9]*.json")) or any(log.glob("[0-9]*.checkpoint*.parquet")))
