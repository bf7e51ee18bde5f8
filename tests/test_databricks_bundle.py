"""The Databricks Asset Bundle (databricks.yml) validates offline and deploys what the stages need.

No workspace is reachable from here, so the bundle is checked against Databricks' own bundle models
(the ``databricks-bundles`` package: an unknown or misspelt key is an error), its wheel is built for
real, and the entry point the jobs name is the one every other target runs.
"""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle() -> dict:
    return yaml.safe_load((ROOT / "databricks.yml").read_text(encoding="utf-8"))


def test_every_job_is_a_valid_bundle_job(bundle):
    from databricks.bundles.jobs import Job

    jobs = bundle["resources"]["jobs"]
    assert set(jobs) == {"ggm_bronze", "ggm_silver", "ggm_gold"}
    for name, definition in jobs.items():
        job = Job.from_dict(definition)  # raises on a key the bundle schema does not know
        assert job.as_dict()["tasks"][0]["python_wheel_task"]["entry_point"] == "ggm-stage", name


def test_a_misspelt_key_is_caught_by_the_same_validation(bundle):
    from databricks.bundles.jobs import Job

    broken = json.loads(json.dumps(bundle["resources"]["jobs"]["ggm_silver"]))
    broken["tasks"][0]["pyton_wheel_task"] = broken["tasks"][0].pop("python_wheel_task")
    with pytest.raises(ValueError, match="pyton_wheel_task"):
        Job.from_dict(broken)


def test_stage_parameters_match_the_entrypoint(bundle):
    from jobs.entrypoint import STAGES

    for name, definition in bundle["resources"]["jobs"].items():
        task = definition["tasks"][0]
        parameters = task["python_wheel_task"]["parameters"]
        assert parameters[0] in STAGES and parameters[0] == name.removeprefix("ggm_")
        assert parameters[1:3] == ["--logical-date", "{{job.parameters.logical_date}}"]
        declared = {p["name"] for p in definition["parameters"]}
        used = {part[len("{{job.parameters."):-2] for part in parameters if part.startswith("{{job.parameters.")}
        assert used <= declared, f"{name}: parameters used but not declared: {used - declared}"
        assert task["libraries"] == [{"whl": "./dist/ggm_lakehouse-*.whl"}]
        # The key reaches the job cluster as a secret reference, never as a value.
        env = definition["job_clusters"][0]["new_cluster"]["spark_env_vars"]
        assert env["GGM_PSEUDONYM_KEY"].startswith("{{secrets/")


def test_the_wheel_builds_with_the_stage_entry_point(bundle, tmp_path):
    artifact = bundle["artifacts"]["ggm_lakehouse_wheel"]
    assert artifact["type"] == "whl"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=600)
    [wheel] = list(tmp_path.glob("ggm_lakehouse-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert {"jobs/entrypoint.py", "jobs/silver.py", "ggm_lakehouse/spark.py"} <= names
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "ggm-stage = jobs.entrypoint:main" in archive.read(entry_points).decode()


def test_airflow_submits_runs_with_the_deployed_wheel(monkeypatch):
    from ggm_lakehouse.spark_target import spark_stage_task

    monkeypatch.setenv("GGM_SPARK_TARGET", "databricks")
    monkeypatch.setenv("GGM_DATABRICKS_CLUSTER", '{"spark_version": "17.3.x-scala2.13", "num_workers": 2}')
    monkeypatch.setenv("GGM_DATABRICKS_WHEEL", "/Workspace/ggm/.bundle/prod/artifacts/ggm_lakehouse-0.1.0-py3-none-any.whl")
    task = spark_stage_task("silver", source="brp").json["tasks"][0]
    assert task["libraries"] == [{"whl": "/Workspace/ggm/.bundle/prod/artifacts/ggm_lakehouse-0.1.0-py3-none-any.whl"}]
