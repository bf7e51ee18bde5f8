"""The `ggm` command line, run as a real subprocess the way an engineer uses it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest


def _ggm(*args: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ggm_lakehouse.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "GGM_DATA_ROOT": str(tmp_path / "data"), "GGM_SHARING_ROOT": str(tmp_path / "sharing")}


def test_sharing_profile_prints_a_profile_for_the_demo_partner(env):
    result = _ggm("sharing", "profile", "demo-partner", "--endpoint", "https://ggm.example.nl/delta-sharing", env=env)
    assert result.returncode == 0, result.stderr
    profile = json.loads(result.stdout)
    assert profile["shareCredentialsVersion"] == 1
    assert profile["endpoint"] == "https://ggm.example.nl/delta-sharing"
    assert len(profile["bearerToken"]) >= 32


def test_unknown_recipient_is_a_clear_error(env):
    result = _ggm("sharing", "profile", "nobody", env=env)
    assert result.returncode == 2 and "nobody" in result.stderr


def test_recipient_lifecycle(env):
    added = _ggm("sharing", "recipient", "add", "ggd-gooi", "--share", "gemeente_gold", "--expires", "30", env=env)
    assert added.returncode == 0, added.stderr
    token = json.loads(added.stdout)["bearerToken"]
    listed = _ggm("sharing", "recipient", "list", env=env)
    names = {r["name"]: r for r in json.loads(listed.stdout)}
    assert names["ggd-gooi"]["active_tokens"] == 1 and token not in listed.stdout
    rotated = _ggm("sharing", "recipient", "rotate", "ggd-gooi", env=env)
    assert rotated.returncode == 0 and json.loads(rotated.stdout)["bearerToken"] != token
    revoked = _ggm("sharing", "recipient", "revoke", "ggd-gooi", env=env)
    assert json.loads(revoked.stdout)["revoked_tokens"] >= 1


def test_standins_serve_prints_one_json_line_per_registry(env):
    process = subprocess.Popen(
        [sys.executable, "-m", "ggm_lakehouse.cli", "standins", "serve", "--population", "120", "--as-of", "2026-02-01"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = [json.loads(process.stdout.readline()) for _ in range(2)]
        assert [line["name"] for line in lines] == ["brp", "bag"]
        import requests

        brp = lines[0]
        response = requests.post(
            f"{brp['url']}/personen",
            json={"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999993653"], "fields": ["naam"]},
            headers={"X-API-KEY": brp["api_key"]},
            timeout=10,
        )
        assert response.status_code == 200 and response.json()["personen"] == []
    finally:
        process.terminate()
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0


def test_catalog_build_writes_json_and_one_page_per_table(env, tmp_path):
    out = tmp_path / "catalog"
    result = _ggm("catalog", "build", "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    catalog = json.loads((out / "catalog.json").read_text())
    names = {t["ggm_name"] or t["name"] for t in catalog["tables"]}
    assert {"NATUURLIJKPERSOON", "BUURT"} <= names and "inwoners_per_buurt" in {t["name"] for t in catalog["tables"]}
    assert len(list((out / "tables").rglob("*.html"))) == len(catalog["tables"])


def test_demo_dropzone_delivers_every_department_in_its_real_format(env, tmp_path):
    result = _ggm("demo", "dropzone", "--date", "2026-05-04", "--population", "300", "--seed", "5", env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    zone = tmp_path / "data" / "dropzone"
    written = {line.strip() for line in result.stdout.splitlines() if line.strip()}
    for source, suffixes in {"iwmo": {".xml"}, "ijw": {".xml"}, "xaf": {".xaf"}, "subsidies": {".xlsx"},
                             "vth": {".csv"}, "hr": {".csv"}, "vroegsignalering": {".json", ".csv"},
                             "begroting": {".csv"}}.items():
        files = [p for p in (zone / source).iterdir() if p.is_file()]
        assert files, f"no {source} delivery"
        assert {p.suffix for p in files} <= suffixes and {str(p) for p in files} <= written
    # The Suite4 database and the AGB-KvK list the iWmo connectors read.
    assert (tmp_path / "data" / "suite4" / "suite4_sociaal_domein.sqlite").is_file()
    assert (tmp_path / "data" / "config" / "agb_kvk.csv").read_text(encoding="utf-8").startswith("agb_code;kvk_nummer\n")
