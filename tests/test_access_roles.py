"""Access roles per layer: config/access.yaml → Unity Catalog grants (real Databricks SDK over real HTTP
against the Unity Catalog stand-in) and → POSIX group/mode on the layer folders of a temporary lake."""
from __future__ import annotations

import grp
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ggm_lakehouse import access
from ggm_lakehouse.access import (
    AccessApplyError,
    AccessConfigError,
    apply_grants,
    apply_local,
    load_access_config,
    parse_access_config,
    plan_grants,
    plan_local,
    workspace_client,
)
from standins.unity_catalog import UnityCatalogStandin

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CATALOG = "gemeente"
LAYER_SCHEMAS = ["bronze", "silver", "gold", "quarantine"]
GROUPS = {"ggm-pipeline", "ggm-engineers", "ggm-analisten", "ggm-beleid", "metastore-admins", "ggm-old-team"}


def _default_doc() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "config" / "access.yaml").read_text(encoding="utf-8"))


def _write(tmp_path: Path, doc: dict, name: str = "access.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def workspace(monkeypatch):
    """The stand-in with the lake's catalog and layer schemas; page size 2 so reads must follow pages."""
    with UnityCatalogStandin(catalogs={CATALOG: LAYER_SCHEMAS}, groups=GROUPS, page_size=2) as uc:
        monkeypatch.setenv("AIRFLOW_CONN_GGM_DATABRICKS", json.dumps(uc.airflow_connection()))
        monkeypatch.setenv("GGM_TABLE_NAMESPACE", CATALOG)
        yield uc


def _patch_bodies(uc: UnityCatalogStandin) -> dict[str, list[dict]]:
    """PATCH permission bodies by securable path suffix, e.g. ``schema/gemeente.silver``."""
    bodies: dict[str, list[dict]] = {}
    prefix = "/api/2.1/unity-catalog/permissions/"
    for call in uc.calls("PATCH"):
        assert call.path.startswith(prefix)
        bodies.setdefault(call.path[len(prefix):], []).append(call.body)
    return bodies


# ---- configuration -------------------------------------------------------------------------------


def test_default_config_roles_per_layer_and_quarantine_is_bronze_level():
    config = load_access_config()
    desired = access.desired_grants(config, CATALOG)
    schema = {s.full_name.split(".")[1]: grants for s, grants in desired.items() if s.securable_type == "schema"}
    assert schema["quarantine"] == schema["bronze"]
    # Clear data (bronze, quarantine) is for the pipeline and engineers only.
    assert set(schema["bronze"]) == {"ggm-pipeline", "ggm-engineers"}
    assert set(schema["silver"]) == {"ggm-pipeline", "ggm-engineers", "ggm-analisten"}
    assert set(schema["gold"]) == {"ggm-pipeline", "ggm-engineers", "ggm-analisten", "ggm-beleid"}
    assert schema["gold"]["ggm-beleid"] == {"USE_SCHEMA", "SELECT"}
    assert schema["silver"]["ggm-analisten"] == {"USE_SCHEMA", "SELECT"}
    catalog_grants = next(g for s, g in desired.items() if s.securable_type == "catalog")
    assert all("USE_CATALOG" in privileges for privileges in catalog_grants.values())
    partners = config.role("partners")
    assert partners is not None and partners.is_partner_role and partners.group is None
    assert access.partner_summary() == [{"recipient": "ggd-regio", "shares": ["sociaal_domein_monitor"]},
                                        {"recipient": "demo-partner", "shares": ["gemeente_gold"]}]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["roles"]["analysts"]["grants"].update(bronze=["USE_SCHEMA", "SELECT"]), "clear_data"),
        (lambda d: d["roles"]["policy"]["grants"].update(gold=["USE_SCHEMA", "SELEKT"]), "SELEKT"),
        (lambda d: d["roles"]["policy"]["grants"].update(gold=["USE_CATALOG", "USE_SCHEMA"]), "USE_CATALOG"),
        (lambda d: d["roles"]["policy"]["grants"].update(quarantine=["USE_SCHEMA"]), "quarantine"),
        (lambda d: d["roles"]["policy"]["grants"].update(gold=["SELECT"]), "USE_SCHEMA"),
        (lambda d: d["roles"]["policy"]["grants"].update(catalog=[]), "USE_CATALOG"),
        (lambda d: d["roles"]["policy"].update(group="ggm-analisten"), "share group"),
        (lambda d: d.update(retired_groups=["ggm-beleid"]), "still hold a role"),
        (lambda d: d["local"]["folder_roles"].update(bronze="policy"), "no grant on bronze"),
        (lambda d: d["roles"]["partners"].update(grants={"gold": ["SELECT"]}), "partners"),
    ],
)
def test_invalid_configs_are_refused_with_a_clear_message(mutate, message):
    doc = _default_doc()
    mutate(doc)
    with pytest.raises(AccessConfigError, match=message):
        parse_access_config(doc)


def test_missing_catalog_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("GGM_TABLE_NAMESPACE", raising=False)
    with pytest.raises(AccessConfigError, match="GGM_TABLE_NAMESPACE"):
        access.resolve_catalog(load_access_config())


# ---- Databricks mode ----------------------------------------------------------------------------


def test_apply_grants_each_layer_as_configured(workspace):
    client = workspace_client()
    plan = apply_grants(client, load_access_config())
    assert plan.applied and plan.catalog == CATALOG

    bodies = _patch_bodies(workspace)
    # One PATCH per securable, carrying every principal's change, exactly as the SDK serialises it.
    assert sorted(bodies) == ["catalog/gemeente", "schema/gemeente.bronze", "schema/gemeente.gold",
                              "schema/gemeente.quarantine", "schema/gemeente.silver"]
    assert all(len(patches) == 1 for patches in bodies.values())
    writer = ["CREATE_TABLE", "MODIFY", "SELECT", "USE_SCHEMA"]
    reader = ["SELECT", "USE_SCHEMA"]
    assert bodies["catalog/gemeente"][0] == {"changes": [
        {"add": ["USE_CATALOG"], "principal": "ggm-analisten"},
        {"add": ["USE_CATALOG"], "principal": "ggm-beleid"},
        {"add": ["USE_CATALOG"], "principal": "ggm-engineers"},
        {"add": ["CREATE_SCHEMA", "USE_CATALOG"], "principal": "ggm-pipeline"},
    ]}
    clear_data = {"changes": [{"add": ["MODIFY", "SELECT", "USE_SCHEMA"], "principal": "ggm-engineers"},
                              {"add": writer, "principal": "ggm-pipeline"}]}
    assert bodies["schema/gemeente.bronze"][0] == clear_data
    assert bodies["schema/gemeente.quarantine"][0] == clear_data
    assert bodies["schema/gemeente.silver"][0] == {"changes": [
        {"add": reader, "principal": "ggm-analisten"},
        {"add": reader, "principal": "ggm-engineers"},
        {"add": writer, "principal": "ggm-pipeline"},
    ]}
    assert bodies["schema/gemeente.gold"][0] == {"changes": [
        {"add": reader, "principal": "ggm-analisten"},
        {"add": reader, "principal": "ggm-beleid"},
        {"add": reader, "principal": "ggm-engineers"},
        {"add": writer, "principal": "ggm-pipeline"},
    ]}
    # The metastore now holds exactly the configured grants.
    assert workspace.grants("schema", "gemeente.gold")["ggm-beleid"] == {"USE_SCHEMA", "SELECT"}
    assert "ggm-analisten" not in workspace.grants("schema", "gemeente.quarantine")
    assert {c.as_dict()["principal"] for c in plan.changes} == {"ggm-pipeline", "ggm-engineers", "ggm-analisten",
                                                                 "ggm-beleid"}


def test_second_apply_changes_nothing(workspace):
    client = workspace_client()
    config = load_access_config()
    apply_grants(client, config)
    patches_before = len(workspace.calls("PATCH"))
    again = apply_grants(client, config)
    assert again.changes == [] and not again.applied
    assert len(workspace.calls("PATCH")) == patches_before
    assert sorted(again.in_sync) == ["catalog gemeente", "schema gemeente.bronze", "schema gemeente.gold",
                                     "schema gemeente.quarantine", "schema gemeente.silver"]
    # Reads follow pagination (page size 2, up to four principals per securable).
    assert any(call.query.get("page_token") for call in workspace.calls("GET"))


def test_a_removed_grant_is_revoked_and_foreign_grants_are_kept(workspace, tmp_path):
    client = workspace_client()
    apply_grants(client, load_access_config())
    # Granted by hand: a managed group where the config gives it nothing, and an admin group.
    workspace.set_grants("schema", "gemeente.silver", "ggm-beleid", ["USE_SCHEMA", "SELECT"])
    workspace.set_grants("schema", "gemeente.silver", "metastore-admins", ["ALL_PRIVILEGES"])
    doc = _default_doc()
    doc["roles"]["analysts"]["grants"].pop("gold")  # analysts lose gold
    doc["roles"]["engineers"]["grants"]["bronze"] = ["USE_SCHEMA", "SELECT"]  # engineers lose MODIFY on clear data
    config = load_access_config(_write(tmp_path, doc))
    before = len(workspace.calls("PATCH"))

    plan = apply_grants(client, config)

    bodies = _patch_bodies(workspace)
    new_calls = workspace.calls("PATCH")[before:]
    assert {c.path.rsplit("/", 2)[-2] + "/" + c.path.rsplit("/", 1)[-1] for c in new_calls} == {
        "schema/gemeente.gold", "schema/gemeente.bronze", "schema/gemeente.quarantine", "schema/gemeente.silver"}
    assert bodies["schema/gemeente.gold"][-1] == {"changes": [{"principal": "ggm-analisten",
                                                                "remove": ["SELECT", "USE_SCHEMA"]}]}
    assert bodies["schema/gemeente.bronze"][-1] == {"changes": [{"principal": "ggm-engineers", "remove": ["MODIFY"]}]}
    assert bodies["schema/gemeente.quarantine"][-1] == bodies["schema/gemeente.bronze"][-1]
    assert bodies["schema/gemeente.silver"][-1] == {"changes": [{"principal": "ggm-beleid",
                                                                  "remove": ["SELECT", "USE_SCHEMA"]}]}
    assert workspace.grants("schema", "gemeente.silver")["metastore-admins"] == {"ALL_PRIVILEGES"}
    assert "ggm-analisten" not in workspace.grants("schema", "gemeente.gold")
    assert len(plan.changes) == 4


def test_retired_groups_and_exclusive_mode_revoke_the_rest(workspace, tmp_path):
    client = workspace_client()
    workspace.set_grants("schema", "gemeente.bronze", "ggm-old-team", ["USE_SCHEMA", "SELECT"])
    workspace.set_grants("catalog", "gemeente", "metastore-admins", ["USE_CATALOG"])
    doc = _default_doc()
    doc["retired_groups"] = ["ggm-old-team"]
    apply_grants(client, load_access_config(_write(tmp_path, doc)))
    assert "ggm-old-team" not in workspace.grants("schema", "gemeente.bronze")
    assert "metastore-admins" in workspace.grants("catalog", "gemeente")

    doc["exclusive"] = True
    plan = apply_grants(client, load_access_config(_write(tmp_path, doc, "exclusive.yaml")))
    assert [c.as_dict() for c in plan.changes] == [{"securable_type": "catalog", "full_name": "gemeente",
                                                    "principal": "metastore-admins", "add": [],
                                                    "remove": ["USE_CATALOG"]}]
    assert "metastore-admins" not in workspace.grants("catalog", "gemeente")


def test_plan_reads_only(workspace):
    plan = plan_grants(workspace_client(), load_access_config())
    assert len(plan.changes) == 4 + 2 + 2 + 3 + 4
    assert workspace.mutating_calls() == []
    assert workspace.grants("schema", "gemeente.gold") == {}
    dry = apply_grants(workspace_client(), load_access_config(), dry_run=True)
    assert not dry.applied and workspace.mutating_calls() == []


def test_workspace_refusal_surfaces_with_securable_and_error_code(workspace):
    workspace.fail_next("PATCH", "permissions/schema/gemeente.silver", status=403, error_code="PERMISSION_DENIED",
                        message="User does not have MANAGE on Schema 'gemeente.silver'.")
    with pytest.raises(AccessApplyError) as failure:
        apply_grants(workspace_client(), load_access_config())
    text = str(failure.value)
    assert "schema gemeente.silver" in text and "PERMISSION_DENIED" in text and "MANAGE" in text
    # Securables are applied in name order: catalog, bronze, gold, quarantine came before silver.
    assert {c.full_name for c in failure.value.applied} == {"gemeente", "gemeente.bronze", "gemeente.gold",
                                                            "gemeente.quarantine"}
    assert "ggm-analisten" not in workspace.grants("schema", "gemeente.silver")


def test_unknown_group_and_missing_schema_surface(monkeypatch):
    # A workspace without the policy group, and a catalog without the quarantine schema.
    with UnityCatalogStandin(catalogs={CATALOG: ["bronze", "silver", "gold"]},
                             groups=GROUPS - {"ggm-beleid"}) as uc:
        monkeypatch.setenv("AIRFLOW_CONN_GGM_DATABRICKS", json.dumps(uc.airflow_connection()))
        with pytest.raises(AccessApplyError, match=r"reading grants on schema gemeente\.quarantine failed: "
                                                   r"SCHEMA_DOES_NOT_EXIST"):
            plan_grants(workspace_client(), load_access_config(), CATALOG)
    with UnityCatalogStandin(catalogs={CATALOG: LAYER_SCHEMAS}, groups=GROUPS - {"ggm-beleid"}) as uc:
        monkeypatch.setenv("AIRFLOW_CONN_GGM_DATABRICKS", json.dumps(uc.airflow_connection()))
        with pytest.raises(AccessApplyError, match="PRINCIPAL_DOES_NOT_EXIST.*ggm-beleid"):
            apply_grants(workspace_client(), load_access_config(), CATALOG)


def test_wrong_token_is_refused(workspace, monkeypatch):
    conn = {**workspace.airflow_connection(), "password": "dapi-not-the-token"}
    monkeypatch.setenv("AIRFLOW_CONN_GGM_DATABRICKS", json.dumps(conn))
    with pytest.raises(AccessApplyError, match="UNAUTHENTICATED"):
        plan_grants(workspace_client(), load_access_config())


def test_cli_plan_and_apply_against_the_workspace(workspace, capsys):
    from ggm_lakehouse.cli import main

    # plan in-process (cheap), apply as the real command an operator runs.
    assert main(["access", "plan"]) == 0
    assert json.loads(capsys.readouterr().out)["applied"] is False and workspace.mutating_calls() == []
    applied = subprocess.run([sys.executable, "-m", "ggm_lakehouse.cli", "access", "apply"], env={**os.environ},
                             capture_output=True, text=True, timeout=180)
    assert applied.returncode == 0, applied.stderr
    result = json.loads(applied.stdout)
    assert result["applied"] is True and result["partners"] == [
        {"recipient": "ggd-regio", "shares": ["sociaal_domein_monitor"]},
        {"recipient": "demo-partner", "shares": ["gemeente_gold"]}]
    assert workspace.grants("schema", "gemeente.bronze")["ggm-engineers"] == {"USE_SCHEMA", "SELECT", "MODIFY"}


def test_cli_reports_a_refusal_on_stderr(workspace, capsys):
    from ggm_lakehouse.cli import main

    workspace.fail_next("PATCH", "permissions/catalog/gemeente")
    assert main(["access", "apply"]) == 1
    captured = capsys.readouterr()
    assert "catalog gemeente" in captured.err and "PERMISSION_DENIED" in captured.err and captured.out == ""


# ---- embedded default: folder permissions ---------------------------------------------------------


def _existing_groups(count: int) -> list[str]:
    names = sorted(g.gr_name for g in grp.getgrall() if g.gr_gid != 0 and not g.gr_name.startswith("ggm-"))
    assert len(names) >= count, "the test needs a few POSIX groups besides root"
    return names[:count]


def test_local_apply_sets_group_and_mode_per_layer_folder(tmp_path):
    engineers_group, analysts_group = _existing_groups(2)
    doc = _default_doc()
    doc["roles"]["engineers"]["group"] = engineers_group
    doc["roles"]["analysts"]["group"] = analysts_group
    doc["roles"]["policy"]["group"] = "ggm-beleid-not-on-this-host"
    config = load_access_config(_write(tmp_path, doc))
    lake = tmp_path / "lake"
    table = lake / "bronze" / "brp_personen"
    (table / "_delta_log").mkdir(parents=True)
    (table / "part-00000.parquet").write_bytes(b"PAR1")
    os.chmod(table / "part-00000.parquet", 0o644)
    (lake / "gold").mkdir()
    os.chmod(lake / "gold", 0o755)

    planned = plan_local(config, lake)
    assert [f.layer for f in planned.folders] == ["bronze", "silver", "gold", "quarantine"]
    assert planned.has_changes

    result = apply_local(config, lake)

    def mode_and_group(path: Path) -> tuple[int, str]:
        st = path.stat()
        return stat.S_IMODE(st.st_mode), grp.getgrgid(st.st_gid).gr_name

    assert mode_and_group(lake / "bronze") == (0o2770, engineers_group)
    assert mode_and_group(lake / "quarantine") == (0o2770, engineers_group)  # created, bronze-level
    assert mode_and_group(lake / "silver") == (0o2750, analysts_group)
    assert mode_and_group(table) == (0o2770, engineers_group)
    # Files: owner's bits mirrored to the group (engineers may write bronze), nothing for others.
    assert mode_and_group(table / "part-00000.parquet") == (0o660, engineers_group)
    # The policy group does not exist: gold is left as it was and the plan says why.
    assert stat.S_IMODE((lake / "gold").stat().st_mode) == 0o755
    assert sorted(result.applied) == ["bronze", "quarantine", "silver"]
    gold = next(f for f in result.as_dict()["folders"] if f["layer"] == "gold")
    assert gold["group_exists"] is False and "does not exist" in gold["action"]
    assert gold["mode"] == "2750"

    again = plan_local(config, lake)
    assert [f.layer for f in again.folders if not f.in_sync] == ["gold"]


def test_cli_local_plan_reports_without_changing(tmp_path):
    lake = tmp_path / "lake"
    (lake / "silver").mkdir(parents=True)
    os.chmod(lake / "silver", 0o755)
    result = subprocess.run([sys.executable, "-m", "ggm_lakehouse.cli", "access", "plan", "--local",
                             "--lake-root", str(lake)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    folders = {f["layer"]: f for f in json.loads(result.stdout)["folders"]}
    assert folders["silver"]["mode"] == "2750" and folders["silver"]["current_mode"] == "0755"
    assert folders["bronze"]["group"] == "ggm-engineers"
    assert stat.S_IMODE((lake / "silver").stat().st_mode) == 0o755
    assert not (lake / "bronze").exists()

