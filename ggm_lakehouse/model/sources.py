"""The sources of the platform: their Airflow connection, owner, schedule and pool.

A declaration (``sources.yaml`` beside this module), read by the DAG factory
(:mod:`ggm_lakehouse.orchestration`), the pipeline's extract step (which connection holds a
source's endpoint and secret) and the lineage. Which datasets a source lands is the connector's
own declaration (``connectors.<source>``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ggm_lakehouse.yaml_schema import DIALECT, load_yaml_document


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
#: JSON schema of ``sources.yaml``; published as docs/schemas/sources.schema.json.
SOURCES_SCHEMA: dict[str, Any] = {
    "$schema": DIALECT,
    "title": "Sources of the platform",
    "description": "One entry per source (the connector's name): who owns it, when its DAG runs and in which pool. "
                   "Its Airflow connection is always ggm_<source>.",
    "type": "object",
    "minProperties": 1,
    "propertyNames": {"pattern": r"^[a-z][a-z0-9_]*$",
                      "patternErrorMessage": "must be a connector name in lower case (a-z, 0-9 and _)"},
    "additionalProperties": {
        "type": "object",
        "additionalProperties": False,
        "required": ["owner", "schedule", "pool", "description"],
        "properties": {
            "owner": {"type": "string", "minLength": 1, "title": "Team paged for the source"},
            "schedule": {"type": "string", "pattern": r"^\S+( +\S+){4}$", "title": "When the ingest DAG runs",
                         "description": "A cron expression in UTC: minute hour day-of-month month day-of-week.",
                         "patternErrorMessage": "must be a cron expression of five fields in UTC, e.g. '0 2 * * *'"},
            "pool": {"type": "string", "minLength": 1, "title": "Airflow pool bounding concurrency against the source"},
            "description": {"type": "string", "minLength": 1, "title": "What the source delivers"},
        },
    },
}


def load_sources(path: Path = SOURCES_FILE) -> dict[str, SourceSpec]:
    """The sources declared in ``path`` (``sources.yaml``), by name and in the file's order.

    Every source's Airflow connection is ``ggm_<name>``, so the file does not repeat it. A
    missing or unknown field fails here, at import, rather than as a DAG without a schedule.
    """
    declared = load_yaml_document(path, SOURCES_SCHEMA, what="sources declaration")
    return {name: SourceSpec(name=name, conn_id=f"ggm_{name}", **fields) for name, fields in declared.items()}


SOURCES: dict[str, SourceSpec] = load_sources()
