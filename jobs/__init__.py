"""Spark jobs: land (bronze), conform (silver) and build (gold).

Each stage has a ``run(spark, logical_date, run_id, ...)`` function that returns a
JSON-serialisable report, and ``jobs.entrypoint`` exposes them to spark-submit,
Databricks ``spark_python_task`` and the tests alike.
"""
