# syntax=docker/dockerfile:1
#
# The Spark standalone image of the compose stack: spark-master and spark-worker.
#
# The executors run the project's Python UDFs (BSN pseudonyms, elfproef), so a worker
# needs the same Python minor version as the driver (3.11, the Airflow image), pyspark
# and pandas/pyarrow from constraints.txt, and the project's modules. Hence a Python
# 3.11 base with the Temurin Java 17 runtime copied in, rather than a Java base image
# whose distribution Python is another version.
#
# Build context is the repository root; docker/spark.Dockerfile.dockerignore keeps
# .venv, data, caches and .env (secrets) out of the context.

FROM eclipse-temurin:17.0.15_6-jre-noble AS jre

FROM python:3.11.13-slim-bookworm

ENV JAVA_HOME=/opt/java/openjdk
ENV PATH="${JAVA_HOME}/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GGM_PROJECT_ROOT=/opt/ggm \
    GGM_DATA_ROOT=/data \
    SPARK_WORKER_DIR=/opt/spark-work
COPY --from=jre /opt/java/openjdk /opt/java/openjdk

# Same uid/gid as the Airflow image's user, so both write the shared ggm-data volume
# with one owner.
RUN java -version \
 && useradd --uid 50000 --gid 0 --home-dir /home/spark --create-home --shell /bin/bash spark \
 && install -d -o spark -g 0 -m 2775 /data /opt/spark-work /opt/ggm

COPY --chown=spark:0 . /opt/ggm

# Only what executors import: pyspark (which also provides spark-class) and the UDFs'
# dependencies, pinned by constraints.txt; the project itself without its Airflow
# dependencies.
RUN pip install --no-cache-dir -c /opt/ggm/constraints.txt pyspark pandas pyarrow numpy PyYAML \
 && pip install --no-cache-dir --no-deps /opt/ggm \
 && python -c "import pyspark, pandas, pyarrow, ggm_lakehouse.pseudonym, ggm_lakehouse.bsn, jobs.silver" \
 && command -v spark-class

USER spark
WORKDIR /opt/spark-work
