"""How jobs address lake tables: by path on the embedded default, by catalog name when configured.

* Default: a Delta table directory at ``<lake root>/<layer>/<table>`` (``ggm_lakehouse.config``).
* ``GGM_TABLE_NAMESPACE=<catalog>``: the table ``<catalog>.<layer>.<table>``, e.g. Unity Catalog
  ``gemeente.silver.natuurlijkpersoon`` on Databricks, or ``spark_catalog.silver.…`` on any Spark
  with a metastore. Schemas (one per layer) are created on first write.

Jobs only use :class:`LakeTable`, so the same job code runs on both by configuration.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ggm_lakehouse.config import has_commits, table_path


def table_namespace() -> str | None:
    """The catalog that holds the layers as schemas, or None for path-addressed tables."""
    return os.environ.get("GGM_TABLE_NAMESPACE") or None


@dataclass(frozen=True)
class LakeTable:
    """One table of the lake, addressed by path or by catalog name according to configuration."""

    layer: str
    table: str

    @property
    def name(self) -> str | None:
        namespace = table_namespace()
        return f"{namespace}.{self.layer}.{self.table.lower()}" if namespace else None

    @property
    def location(self) -> str:
        """Human-readable address: the catalog name or the filesystem path."""
        return self.name or str(table_path(self.layer, self.table))

    @property
    def sql_name(self) -> str:
        """How SQL names the table: the catalog name, or ``delta.`<path>``` for a path-addressed table."""
        if self.name:
            return ".".join(f"`{part}`" for part in self.name.split("."))
        return "delta.`" + str(table_path(self.layer, self.table)).replace("`", "``") + "`"

    def exists(self, spark) -> bool:
        """True when the table exists (and, for paths, is a Delta table).

        Asked through SQL, so it works the same in a local session, over Spark Connect and on a
        cluster whose files this process cannot see.
        """
        if self.name:
            return spark.catalog.tableExists(self.name)
        path = table_path(self.layer, self.table)
        if path.parent.parent.is_dir():
            # The lake is on a file system this process sees too (the embedded default, a shared
            # volume): look, rather than ask Spark and have it raise for a missing table.
            return has_commits(path)
        from pyspark.errors import AnalysisException

        try:
            spark.sql(f"DESCRIBE DETAIL {self.sql_name}").collect()
        except AnalysisException as exc:
            if "DELTA_MISSING_DELTA_TABLE" in str(exc) or "PATH_NOT_FOUND" in str(exc) or "not a Delta table" in str(exc):
                return False
            raise
        return True

    def read(self, spark):
        """The table as a DataFrame."""
        if self.name:
            return spark.table(self.name)
        return spark.read.format("delta").load(str(table_path(self.layer, self.table)))

    def delete(self, spark, condition: str) -> None:
        """``DELETE FROM`` the table where the SQL ``condition`` holds."""
        spark.sql(f"DELETE FROM {self.sql_name} WHERE {condition}")

    def update(self, spark, assignments: str, condition: str) -> None:
        """``UPDATE`` the table: ``SET assignments`` where the SQL ``condition`` holds."""
        spark.sql(f"UPDATE {self.sql_name} SET {assignments} WHERE {condition}")

    def last_commit(self, spark) -> tuple[int, object] | None:
        """Version and timestamp of the newest commit (``DESCRIBE HISTORY``), or None for an empty history."""
        rows = spark.sql(f"DESCRIBE HISTORY {self.sql_name} LIMIT 1").select("version", "timestamp").collect()
        return (int(rows[0]["version"]), rows[0]["timestamp"]) if rows else None

    def version(self, spark) -> int | None:
        """The table's current Delta version, or None when it has no commit yet.

        Read from the transaction log's file names when this process sees the lake (the embedded
        default: no round trip to Spark), else asked with ``DESCRIBE HISTORY``.
        """
        if not self.name:
            path = table_path(self.layer, self.table)
            if path.parent.parent.is_dir():
                return delta_log_version(path)
        if not self.exists(spark):
            return None
        last = self.last_commit(spark)
        return last[0] if last else None

    def save(self, spark, writer) -> None:
        """Finish a ``DataFrame.write.format("delta")…`` chain into this table."""
        if self.name:
            namespace, schema, _ = self.name.split(".")
            spark.sql(f"CREATE SCHEMA IF NOT EXISTS `{namespace}`.`{schema}`")
            writer.saveAsTable(self.name)
        else:
            writer.save(str(table_path(self.layer, self.table)))


def delta_log_version(path) -> int | None:
    """The newest commit version in the ``_delta_log`` of the table at ``path``, or None without one.

    Commit files are named by version (``00000000000000000007.json``) and appear atomically, so
    the highest name is the current version; checkpoints name a version too (log cleanup may
    have removed the commit files before them).
    """
    log = path / "_delta_log"
    if not log.is_dir():
        return None
    versions = [int(entry.name.split(".", 1)[0]) for entry in log.iterdir()
                if entry.name[:1].isdigit() and (entry.name.endswith(".json") or ".checkpoint" in entry.name)]
    return max(versions) if versions else None


# Delta's optimistic-concurrency failures (io.delta.exceptions.* / their error classes).
_CONFLICT_CLASSES = (
    "ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException", "ConcurrentWriteException", "MetadataChangedException",
    "ProtocolChangedException",
)
_CONFLICT_ERROR_CLASSES = ("DELTA_CONCURRENT_", "DELTA_PROTOCOL_CHANGED", "DELTA_METADATA_CHANGED")


def is_write_conflict(exc: BaseException) -> bool:
    """True when ``exc`` is a lost Delta commit race, whether PySpark converted it or not.

    Under spark-submit PySpark often surfaces these as a plain ``Py4JJavaError``; the Java
    class (or its error class in the message) tells what happened.
    """
    from delta.exceptions import DeltaConcurrentModificationException

    if isinstance(exc, DeltaConcurrentModificationException):
        return True
    java = getattr(exc, "java_exception", None)
    while java is not None:
        name = java.getClass().getName()
        if name.rsplit(".", 1)[-1] in _CONFLICT_CLASSES:
            return True
        java = java.getCause()
    text = str(exc)
    return any(code in text for code in _CONFLICT_ERROR_CLASSES)


def retry_on_write_conflict(action, what: str, attempts: int = 5, first_wait: float = 1.0):
    """Run ``action()`` again when a concurrent writer won the Delta commit race.

    Runs of the same stage may overlap (a backfill next to the scheduled run, two sources
    writing the shared quarantine table). Delta's optimistic concurrency then rejects one
    commit; since every write here first checks what is already there, repeating the whole
    action is safe. Any other error, or a conflict that persists, is raised.
    """
    import logging
    import random
    import time

    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - filtered to Delta commit conflicts right below
            if not is_write_conflict(exc) or attempt == attempts:
                raise
            wait = first_wait * 2 ** (attempt - 1) * (1 + random.random())
            logging.getLogger(__name__).warning(
                "%s: concurrent Delta commit (%s); retrying in %.1f s (attempt %d of %d)",
                what, type(exc).__name__, wait, attempt + 1, attempts,
            )
            time.sleep(wait)
    raise AssertionError("unreachable")


def sql_timestamp(moment) -> str:
    """A SQL TIMESTAMP literal of a naive UTC datetime (sessions run in UTC).

    Delta's MERGE, UPDATE and DELETE do not bind SQL parameters, so their values are written as
    literals; only values the code computes (dates, times) are, never text from a source.
    """
    return f"TIMESTAMP'{moment.isoformat(sep=' ')}'"


def sql_date(day) -> str:
    """A SQL DATE literal."""
    return f"DATE'{day.isoformat()}'"


def sql_string(text: str) -> str:
    """A SQL string literal (quotes and backslashes escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
