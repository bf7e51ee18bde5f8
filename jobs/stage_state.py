"""Skip a silver or gold stage whose day is exactly as its last run of that day left it.

A rerun of a day whose sources answer as before lands nothing new in bronze (:mod:`jobs.bronze`).
Silver would then read the same batches, conform the same records and write nothing; gold would
build the same marts and write nothing. Finding that out costs the whole stage's Spark work.

So every silver and gold report keeps a ``state``: a hash of what defines the output (the mapping
or mart files, the job's code, the settings that change results) and the Delta version of every
table the stage reads and writes. A later run of the same stage and day that finds the same
definitions, the same input versions and its outputs still at the versions it left them skips the
work and reports the previous figures as unchanged. Any difference (a new bronze batch, another
stage's silver change, retention, an edited mapping, changed code) runs the stage in full.
``GGM_SKIP_UNCHANGED=0`` (``ggm run --full-refresh``) always runs in full.

A new pseudonym key is not part of the state: the server holds the key, not this process; keys are
changed by re-keying the lake, never by rerunning a day.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ggm_lakehouse.lake import LakeTable


@dataclass(frozen=True)
class StageScope:
    """What a stage reads, what it writes and what defines its output."""

    reads: tuple[LakeTable, ...]
    writes: tuple[LakeTable, ...]
    definitions: str


def skipping_enabled() -> bool:
    """False when ``GGM_SKIP_UNCHANGED`` is ``0``/``false``/``no``: every stage runs in full."""
    return os.environ.get("GGM_SKIP_UNCHANGED", "1").strip().lower() not in ("0", "false", "no")


def _digest(files: list[Path], settings: dict[str, object]) -> str:
    digest = hashlib.sha256()
    for file in sorted(set(files)):
        digest.update(file.name.encode("utf-8") + b"\0" + file.read_bytes() + b"\0")
    digest.update(repr(sorted(settings.items())).encode("utf-8"))
    return digest.hexdigest()


def silver_scope(source: str | None) -> StageScope:
    """The tables and definitions of the silver stage of ``source`` (all sources when None)."""
    from ggm_lakehouse.model import mappings as mapping_model
    from jobs import silver

    selected = silver.select_mappings(source=source)
    writes = sorted({m.target for m in selected})
    bronze = sorted({t for m in selected for t in (*m.source_tables, *(lookup.source for lookup in m.lookups))})
    references = sorted({t for m in selected for t in m.depends_on} - set(writes))
    return StageScope(
        reads=tuple(LakeTable("bronze", t) for t in bronze) + tuple(LakeTable("silver", t) for t in references),
        writes=tuple(LakeTable("silver", t) for t in writes),
        definitions=_digest([m.path for m in selected] + [Path(silver.__file__), Path(mapping_model.__file__)], {}),
    )


def gold_scope(mart: str | None, domein: str | None) -> StageScope:
    """The tables and definitions of the gold stage of one mart, one domein, or every mart."""
    from ggm_lakehouse.model import mart_definitions
    from jobs import gold

    marts = sorted(n for n in gold.DEFINITIONS if (not mart or n == mart) and (not domein or gold.MART_DOMEINEN[n] == domein))
    inputs = sorted({t for n in marts for t in gold.MART_INPUTS[n]})
    return StageScope(
        reads=tuple(LakeTable("silver", t) for t in inputs),
        writes=tuple(LakeTable("gold", n) for n in marts),
        definitions=_digest([Path(gold.DEFINITIONS[n].path) for n in marts]
                            + [Path(gold.__file__), Path(mart_definitions.__file__)],
                            {"suppression_threshold": gold.suppression_threshold()}),
    )


def scope_of(stage: str, source: str | None, mart: str | None, domein: str | None) -> StageScope | None:
    """The scope of a stage that can be skipped when unchanged, or None (bronze always looks at its batches)."""
    if stage == "silver":
        return silver_scope(source)
    if stage == "gold":
        return gold_scope(mart, domein)
    return None


def versions(spark, tables: tuple[LakeTable, ...]) -> dict[str, int | None]:
    """Current Delta version of each table by ``layer.table`` (None for a table not created yet)."""
    return {f"{t.layer}.{t.table.lower()}": t.version(spark) for t in tables}


def current_state(spark, scope: StageScope) -> dict:
    """The state a stage starts from: definitions, and versions of what it reads and writes."""
    return {"definitions": scope.definitions, "reads": versions(spark, scope.reads), "writes": versions(spark, scope.writes)}


def unchanged_since(previous: dict | None, state: dict) -> bool:
    """True when ``previous`` (the last report of this stage and day) left exactly ``state``."""
    return bool(skipping_enabled() and previous and previous.get("state") == state)


def unchanged_report(previous: dict) -> dict:
    """The report of a skipped run: the previous run's figures, with nothing new or closed or written."""
    tables = {}
    for table, entry in previous.get("tables", {}).items():
        entry = dict(entry)
        for counter in ("new_versions", "closed"):
            if counter in entry:
                entry[counter] = 0
        if "written" in entry:
            entry["written"] = False
        tables[table] = entry
    kept = {k: v for k, v in previous.items() if k not in ("tables", "run_id", "replayed_days", "unchanged_since")}
    return {**kept, "tables": tables, "unchanged_since": previous.get("unchanged_since") or previous.get("run_id")}
