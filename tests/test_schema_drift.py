"""Schema drift: a source that adds a field, drops one or changes a type is reported in the run
summary, and bronze keeps every record exactly as delivered."""
from __future__ import annotations

import json
from datetime import date, timedelta

from connectors import ExtractWindow
from ggm_lakehouse.config import landing_root, table_path
from ggm_lakehouse.landing import BatchWriter
from ggm_lakehouse.pipeline import run_summary
from ggm_lakehouse.reports import write_report
from jobs import bronze
from jobs.schema_drift import batch_shape, compare

DAY1 = date(2026, 6, 1)
DAY2 = DAY1 + timedelta(days=1)


def _land(day: date, records: list[dict]) -> None:
    window = ExtractWindow.for_day(day, f"drift-{day}")
    body = json.dumps({"type": "RaadpleegMetBurgerservicenummer", "personen": records}).encode()
    with BatchWriter(landing_root(), "brp", "personen", window, endpoint="POST /personen", record_path="personen") as writer:
        writer.add_part(body, request={"method": "POST", "url": "https://brp.example.nl/personen"}, status=200)


def test_new_changed_and_missing_fields_are_reported_and_nothing_is_lost(spark, data_root):
    _land(DAY1, [
        {"burgerservicenummer": "999990019", "geboorte": {"datum": {"datum": "1980-01-01"}}, "leeftijd": 46, "geslacht": {"code": "V"}},
        {"burgerservicenummer": "999990020", "geboorte": {"datum": {"datum": "1990-05-05"}}, "leeftijd": 36, "geslacht": {"code": "M"}},
    ])
    first = bronze.run(spark, DAY1, f"drift-{DAY1}")
    assert "schema_drift" not in first["tables"]["brp_personen"]  # the first batch sets the profile

    # A newer API version: leeftijd arrives as text, a new nested field appears, geslacht is gone.
    _land(DAY2, [
        {"burgerservicenummer": "999990019", "geboorte": {"datum": {"datum": "1980-01-01"}, "plaats": {"code": "0363"}},
         "leeftijd": "46"},
    ])
    second = bronze.run(spark, DAY2, f"drift-{DAY2}")
    drift = second["tables"]["brp_personen"]["schema_drift"]
    assert "new field geboorte.plaats (object)" in drift
    assert "new field geboorte.plaats.code (string)" in drift
    assert "changed type of leeftijd: number → string" in drift
    assert "missing field geslacht (present in every earlier batch)" in drift

    write_report(DAY2, "bronze_brp", second)
    summary = run_summary(DAY2)
    assert "brp_personen: changed type of leeftijd: number → string" in summary["warnings"]

    # Nothing lost: bronze holds the record byte-equivalent to what was delivered, new field included.
    stored = spark.read.format("delta").load(str(table_path("bronze", "brp_personen"))).where(f"_logical_date = '{DAY2}'")
    payload = json.loads(stored.first()["payload"])
    assert payload["geboorte"]["plaats"] == {"code": "0363"} and payload["leeftijd"] == "46"

    # A rerun of the day lands nothing new and reports no drift again.
    again = bronze.run(spark, DAY2, f"drift-{DAY2}")
    assert again["tables"]["brp_personen"]["skipped_batches"] == 1 and "schema_drift" not in again["tables"]["brp_personen"]


def test_nulls_and_optional_fields_are_not_drift():
    profile_shape = batch_shape([{"a": 1, "b": None, "lijst": [{"x": "1"}]}, {"a": 2, "b": "t", "lijst": []}])
    profile = {"batches": 1, "fields": {p: {"types": sorted(t), "batches": 1} for p, t in profile_shape.items()}}
    # b held null and text before; null again is no type change, and the same fields give no messages.
    messages = compare(profile, batch_shape([{"a": 3, "b": None, "lijst": [{"x": "2"}]}]))
    assert messages == []
