"""The same job code against catalog names (as on Unity Catalog) instead of paths, by configuration only."""
from __future__ import annotations

import json
import shutil
from datetime import date

import pytest

from connectors import ExtractWindow
from ggm_lakehouse.config import landing_root, table_path
from ggm_lakehouse.lake import LakeTable
from ggm_lakehouse.landing import BatchWriter
from jobs import bronze, silver

DAY = date(2026, 4, 1)
NAMESPACE = "spark_catalog"
LAYERS = ("bronze", "silver", "quarantine")

INDELING = (
    "buurtcode;buurtnaam;wijkcode;wijknaam;gemeentecode;gemeentenaam;geometrie_wkt\n"
    "BU99990101;Centrum-Noord;WK999901;Centrum;9999;Demodam;POLYGON((0 0,1 0,1 1,0 1,0 0))\n"
    "BU99990102;Centrum-Zuid;WK999901;Centrum;9999;Demodam;POLYGON((1 0,2 0,2 1,1 1,1 0))\n"
    "BU9999;Kapot;WK999901;Centrum;9999;Demodam;\n"
)


def _drop_schemas(spark):
    for layer in LAYERS:
        spark.sql(f"DROP SCHEMA IF EXISTS {NAMESPACE}.{layer} CASCADE")


@pytest.fixture
def catalog_mode(spark, data_root, monkeypatch):
    _drop_schemas(spark)
    warehouse = spark.conf.get("spark.sql.warehouse.dir").removeprefix("file:")
    for layer in LAYERS:  # leftovers of an interrupted earlier run would block managed tables
        shutil.rmtree(f"{warehouse}/{layer}.db", ignore_errors=True)
    monkeypatch.setenv("GGM_TABLE_NAMESPACE", NAMESPACE)
    yield
    _drop_schemas(spark)


def test_bronze_and_silver_write_catalog_tables_when_a_namespace_is_configured(spark, catalog_mode):
    window = ExtractWindow.for_day(DAY, "catalog-run")
    with BatchWriter(landing_root(), "gebieden", "wijkbuurtindeling", window, endpoint="file", record_path="csv",
                     content_type="text/csv", extension="csv") as writer:
        writer.add_part(INDELING.encode("utf-8"), request={"method": "FILE", "url": "wijkbuurtindeling.csv"})

    assert bronze.run(spark, DAY, "catalog-run")["tables"]["gebieden_wijkbuurtindeling"]["rows"] == 3
    report = silver.run(spark, DAY, "catalog-run", tables=["WIJK", "BUURT"])

    assert LakeTable("silver", "BUURT").name == "spark_catalog.silver.buurt"
    buurten = {r["CODE"] for r in spark.table("spark_catalog.silver.buurt").collect()}
    assert buurten == {"BU99990101", "BU99990102"}
    assert spark.table("spark_catalog.silver.wijk").count() == 1
    assert report["tables"]["BUURT"]["quarantined"] == {"pattern": 1}
    rejects = spark.table("spark_catalog.quarantine.silver_rejects").collect()
    assert [json.loads(r["payload"])["buurtcode"] for r in rejects] == ["BU9999"]
    # Nothing was written to the path-addressed lake.
    assert not table_path("silver", "BUURT").exists() and not table_path("bronze", "gebieden_wijkbuurtindeling").exists()


def test_concurrent_first_writes_to_one_table_all_land(spark, tmp_path):
    """Overlapping runs (a backfill next to the scheduled run) race to create and append to the same
    bronze table; the losers of Delta's commit race retry and every batch lands exactly once."""
    import threading

    from pyspark.sql import functions as F

    from ggm_lakehouse.lake import retry_on_write_conflict

    path = str(tmp_path / "bronze_race")
    failures: list[BaseException] = []

    def write(day: int) -> None:
        frame = spark.range(25).withColumn("_logical_date", F.lit(day))
        try:
            retry_on_write_conflict(
                lambda: frame.write.format("delta").mode("append").partitionBy("_logical_date").save(path),
                f"writer {day}", first_wait=0.1,
            )
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(exc)

    writers = [threading.Thread(target=write, args=(day,)) for day in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert failures == []
    landed = spark.read.format("delta").load(path).groupBy("_logical_date").count().collect()
    assert sorted((r["_logical_date"], r["count"]) for r in landed) == [(d, 25) for d in range(4)]


def test_other_errors_are_not_retried():
    from ggm_lakehouse.lake import retry_on_write_conflict

    calls = []

    def broken():
        calls.append(1)
        raise ValueError("schema mismatch")

    with pytest.raises(ValueError, match="schema mismatch"):
        retry_on_write_conflict(broken, "broken")
    assert len(calls) == 1


def test_a_table_being_created_is_not_there_for_readers_until_its_first_commit(tmp_path):
    """Gold DAGs run side by side: one builds the dashboard while another creates a mart's first version."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from dashboard.site import gold_tables
    from ggm_lakehouse.config import has_commits

    creating = tmp_path / "veiligheid_meldingen"
    (creating / "_delta_log").mkdir(parents=True)
    (creating / "_delta_log" / ".00000000000000000000.json.tmp").write_text("{}", encoding="utf-8")
    built = tmp_path / "inwoners_per_buurt"
    write_deltalake(str(built), pa.table({"buurt": ["BU00010000"], "inwoners": [12]}))

    assert not has_commits(creating) and has_commits(built)
    assert not has_commits(tmp_path / "absent")
    assert gold_tables(tmp_path) == ["inwoners_per_buurt"]
