# GGM Lakehouse — the two commands: `make run` (daily pipeline end to end) and `make test`.
# Every target installs what it needs; finished steps are skipped on the next run.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP_INSTALL := $(VENV)/.installed
STAMP_JARS := .cache/ivy/.fetched
AIRFLOW_DB := airflow_home/airflow.db
DATE ?= $(shell date -u -d yesterday +%F)
POPULATION ?= 3000
PYTEST_ARGS ?=
# Two workers, one test file each at a time: the Airflow end-to-end files mostly wait on
# spark-submit and subprocesses, so they overlap well with the rest (PYTEST_WORKERS= to run serially).
# --no-loadscope-reorder keeps tests/conftest.py's order (the long end-to-end files first); xdist
# would otherwise start the files with the most tests first and leave the long ones for last.
PYTEST_WORKERS ?= -n 2 --dist loadfile --no-loadscope-reorder

.PHONY: setup run test airflow spark spark-stop sharing standins clean

setup: $(STAMP_INSTALL) $(STAMP_JARS) $(AIRFLOW_DB)

$(STAMP_INSTALL): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found %d.%d)" % sys.version_info[:2])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

# Delta Lake and OpenLineage-Spark JARs from Maven Central into a project-local cache (resolved once;
# again when ggm_lakehouse/spark.py changes the pinned versions).
$(STAMP_JARS): $(STAMP_INSTALL) ggm_lakehouse/spark.py
	$(BIN)/python -m ggm_lakehouse.spark --fetch-jars
	touch $@

# Embedded Airflow: home inside the checkout, SQLite metadata DB.
$(AIRFLOW_DB): $(STAMP_INSTALL)
	$(BIN)/ggm airflow-init

## The daily pipeline end to end through Airflow for one logical date (default: yesterday).
run: setup
	$(BIN)/ggm run --date $(DATE) --population $(POPULATION)

## The whole test suite (installs Debian's chromium and docker-compose for the tests that drive them, when run as root).
test: setup
	scripts/ensure_test_tools.sh
	$(BIN)/python -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

## The Airflow UI with every DAG loaded (prints URL and login).
airflow: setup
	$(BIN)/python -m ggm_lakehouse.airflow_env standalone

## The day's Spark Connect server (127.0.0.1:15002, token in .cache/spark-connect); `make run` starts it when needed.
spark: setup
	$(BIN)/ggm spark serve

spark-stop: setup
	$(BIN)/ggm spark stop

## The Delta Sharing server on http://127.0.0.1:8765/delta-sharing
sharing: setup
	$(BIN)/ggm sharing serve

## The demo BRP and BAG stand-ins in the foreground.
standins: setup
	$(BIN)/ggm standins serve

clean:
	rm -rf data airflow_home .cache/spark-warehouse
