"""The `ggm` command line, run as a real subprocess the way an engineer uses it, and its help walked in process."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
from datetime import date
from pathlib import Path

import pytest

from ggm_lakehouse.cli import DATE_METAVAR, build_parser, iso_date, main, processing_log_rows

PROJECT = Path(__file__).resolve().parents[1]


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
    added = _ggm("sharing", "recipient", "add", "ggd-gooi", "--share", "gemeente_gold", "--expires", "30d", env=env)
    assert added.returncode == 0, added.stderr
    token = json.loads(added.stdout)["bearerToken"]
    listed = _ggm("sharing", "recipient", "list", "--json", env=env)
    names = {r["name"]: r for r in json.loads(listed.stdout)}
    assert names["ggd-gooi"]["active_tokens"] == 1 and token not in listed.stdout
    table = _ggm("sharing", "recipient", "list", env=env)  # for people: a table, still never the token
    assert table.returncode == 0 and token not in table.stdout
    recipient_row, token_row = [line for line in table.stdout.splitlines() if "ggd-gooi" in line]
    assert "gemeente_gold" in recipient_row and " 1 " in recipient_row
    # The live token shows by id with its times (the 30-day lifetime), never by value.
    [live] = [t for r in json.loads(listed.stdout) if r["name"] == "ggd-gooi" for t in r["tokens"]]
    assert live["token_id"][:8] in token_row and live["expires_at"][:10] in token_row
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


# ----------------------------------------------------------------------------- help for every command


def _command_tree(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every (command path, parser) of the ``ggm`` tree, the root as ``()``."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _command_tree(child, (*path, name))


COMMANDS = dict(_command_tree(build_parser()))


def test_the_command_tree_is_walked_whole():
    # Guards the walk below: if it found nothing, every help test would pass vacuously.
    paths = {" ".join(path) for path in COMMANDS}
    assert {"run", "standins serve", "spark serve", "spark status", "spark stop", "sharing recipient list",
            "sharing unity-catalog plan", "dashboard build", "access plan", "processing-log"} <= paths
    assert len(paths) >= 30


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda path: " ".join(path) or "ggm")
def test_every_command_has_a_description_an_example_and_help_on_every_option(path, capsys):
    parser = COMMANDS[path]
    with pytest.raises(SystemExit) as done:
        main([*path, "--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert parser.description, f"ggm {' '.join(path)} has no description"
    assert " ".join(parser.description.split())[:80] in out
    assert "examples: ggm " in out, f"ggm {' '.join(path)} shows no example"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            assert all(choice.help for choice in action._choices_actions), f"a subcommand of ggm {' '.join(path)}"
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help != argparse.SUPPRESS, f"ggm {' '.join(path)} {name} has no help"
        # Dates parse one way everywhere, and the help says which.
        assert action.type != date.fromisoformat, f"ggm {' '.join(path)} {name} parses dates with fromisoformat"
        if action.type is iso_date:
            assert action.metavar == DATE_METAVAR and DATE_METAVAR in out


def test_bare_ggm_prints_help_and_exits_0(env):
    result = _ggm(env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ggm") and "commands:" in result.stdout
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ") and line.split()}
    assert {"run", "standins", "spark", "sharing", "processing-log", "access"} <= listed
    assert result.stderr == ""


def test_a_bare_command_group_prints_its_help(capsys):
    assert main(["sharing", "recipient"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ggm sharing recipient") and "rotate" in out


def test_version_is_the_package_version(env):
    result = _ggm("--version", env=env)
    expected = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert result.returncode == 0 and result.stdout == f"ggm {expected}\n"


@pytest.mark.parametrize("argv", [
    ["run", "--date", "2026-02-30"],
    ["run", "--date", "01-03-2026"],
    ["demo", "dropzone", "--date", "20260301"],
    ["processing-log", "--date", "yesterday"],
    ["sharing", "audit", "--since", "2026-3-1"],
    ["standins", "serve", "--as-of", "2026-13-01"],
    ["dashboard", "build", "--peildatum", "2026/03/01"],
])
def test_a_wrong_date_is_refused_with_a_clear_message(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argv[-2]}: {argv[-1]!r} is not a" in err and "use YYYY-MM-DD, e.g. 2026-03-01" in err
    assert "fromisoformat" not in err


def test_a_valid_date_parses():
    assert build_parser().parse_args(["run", "--date", "2026-03-01"]).date == date(2026, 3, 1)


def test_access_plan_without_the_workspace_connection_points_to_local_and_to_the_connection(env):
    env = {k: v for k, v in env.items() if k != "AIRFLOW_CONN_GGM_DATABRICKS"}
    result = _ggm("access", "plan", env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert "Airflow connection 'ggm_databricks' not found" in result.stderr
    assert "ggm access plan --local" in result.stderr
    assert "export AIRFLOW_CONN_GGM_DATABRICKS=" in result.stderr
    assert "airflow connections add ggm_databricks" in result.stderr


def test_processing_log_table_rows_count_runs_and_errors_per_operation():
    def operation(name, day, status, betrokkenen, written):
        return {"name": name, "logical_date": day, "status": status, "end_time": f"{day}T03:00:00",
                "betrokkenen": betrokkenen, "geschreven": written}

    summary = {"activities": {"urn:a": {"verwerkingsactiviteit": "Basisregistraties bijhouden", "operaties": [
        operation("silver", "2026-03-01", "OK", 90, {"silver.natuurlijkpersoon": 90, "silver.adres": 10}),
        operation("silver", "2026-03-02", "ERROR", 95, {"silver.natuurlijkpersoon": None}),
        operation("bronze", "2026-03-02", "OK", None, {"bronze.brp_personen": 95}),
    ]}}}
    assert processing_log_rows(summary) == [
        ["Basisregistraties bijhouden", "bronze", 1, 0, "2026-03-02", "-", 95],
        # data subjects of the newest run, not a sum that would count the same residents twice
        ["Basisregistraties bijhouden", "silver", 2, 1, "2026-03-02", 95, 100],
    ]
