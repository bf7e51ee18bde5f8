"""The sources of the platform: their Airflow connection, owner, schedule and pool.

A declaration (``sources.yaml`` beside this module), read by the DAG factory
(:mod:`ggm_lakehouse.orchestration`), the pipeline's extract step (which connection holds a
source's endpoint and secret) and the lineage. Which datasets a source lands is the connector's
own declaration (``connectors.<source>``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class SourceSpec:
    """One source of the platform as the scheduler sees it."""

    name: str
    conn_id: str
    owner: str
    schedule: str
    pool: str
    description: str

    @property
    def dag_id(self) -> str:
        return f"ggm_ingest_{self.name}"


#: The declaration file, beside this module so that it ships in the wheel (package data).
SOURCES_FILE = Path(__file__).with_name("sources.yaml")
_DECLARED_FIELDS = frozenset({"owner", "schedule", "pool", "description"})


def load_sources(path: Path = SOURCES_FILE) -> dict[str, SourceSpec]:
    """The sources declared in ``path`` (``sources.yaml``), by name and in the file's order.

    Every source's Airflow connection is ``ggm_<name>``, so the file does not repeat it. A
    missing or unknown field fails here, at import, rather than as a DAG without a schedule.
    """
    declared = yaml.safe_load(path.read_text(encoding="utf-8"))
    sources: dict[str, SourceSpec] = {}
    for name, fields in declared.items():
        if not isinstance(fields, dict) or set(fields) != _DECLARED_FIELDS:
            found = sorted(fields) if isinstance(fields, dict) else fields
            raise ValueError(f"{path}: source {name!r} must declare exactly {sorted(_DECLARED_FIELDS)}, found {found}")
        sources[name] = SourceSpec(name=name, conn_id=f"ggm_{name}", **fields)
    return sources


SOURCES: dict[str, SourceSpec] = load_sources()
