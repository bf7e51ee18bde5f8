# syntax=docker/dockerfile:1
#
# The Airflow image of the compose stack (docker-compose.yml): api-server, scheduler,
# dag-processor, triggerer, airflow-init, and the sharing server and stand-ins, which
# need the same project code.
#
#   official apache/airflow 3.3.2 on Python 3.11
#   + a Java 17 runtime, because the scheduler (LocalExecutor) runs spark-submit for the
#     Spark stages and the Spark driver is a JVM
#   + this project, installed with the resolved constraints.txt
#   + the Delta Lake JARs, resolved from Maven Central at build time so no task run
#     needs the network
#
# Build context is the repository root; docker/airflow.Dockerfile.dockerignore keeps
# .venv, data, caches and .env (secrets) out of the context.

# The JRE comes from Eclipse Temurin instead of the distribution's package so that the
# Airflow and Spark images run exactly the same Java 17 build, whatever Debian release
# the Airflow image is based on.
FROM eclipse-temurin:17.0.15_6-jre-noble AS jre

FROM apache/airflow:3.3.2-python3.11

USER root
ENV JAVA_HOME=/opt/java/openjdk
ENV PATH="${JAVA_HOME}/bin:${PATH}"
COPY --from=jre /opt/java/openjdk /opt/java/openjdk
# /data is where the ggm-data volume is mounted; group 0 and setgid because the
# official image runs as uid 50000 with gid 0 (and may run with an arbitrary uid, gid 0).
RUN java -version \
 && install -d -o airflow -g 0 -m 2775 /data /opt/ggm

USER airflow
# The project's paths (dags/, jobs/entrypoint.py, ggm_mappings/, config/) are resolved
# from GGM_PROJECT_ROOT, not from site-packages, so the checkout is kept at /opt/ggm.
ENV GGM_PROJECT_ROOT=/opt/ggm \
    GGM_DATA_ROOT=/data \
    GGM_IVY_DIR=/opt/ggm/.cache/ivy \
    SPARK_CONF_DIR=/opt/ggm/docker/spark-conf

COPY --chown=airflow:0 . /opt/ggm

# apache-airflow is named explicitly (as the official image documentation advises) so that
# pip can never up- or downgrade the Airflow the image was built with.
RUN pip install --no-cache-dir -c /opt/ggm/constraints.txt "apache-airflow==3.3.2" /opt/ggm \
 && python -c "import airflow.providers.fab.auth_manager.fab_auth_manager, airflow.providers.apache.spark, airflow.providers.databricks, ggm_lakehouse.cli" \
 && python -m ggm_lakehouse.spark --fetch-jars \
 && chmod -R g+rwX /opt/ggm/.cache
