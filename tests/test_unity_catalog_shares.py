"""shares.yaml → Unity Catalog shares, recipients and share grants: the real Databricks SDK over real HTTP
against the Unity Catalog stand-in (standins/unity_catalog.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ggm_lakehouse.access import workspace_client
from ggm_lakehouse.model.shares_config import SharesConfigError, load_shares_config, parse_shares_config
from sharing_server.unity_catalog import (
    UnityCatalogSharingError,
    apply_unity_catalog,
    plan_unity_catalog,
)
from standins.unity_catalog import UnityCatalogStandin

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CATALOG = "gemeente"
GOLD_TABLES = ["inwoners_per_buurt", "woningvoorraad_per_wijk", "verhuizingen_per_buurt",
               "sociaal_domein_voorzieningen", "schuldhulp_vroegsignalen"]
CBS_METASTORE = "azure:westeurope:8d9f3c2a-1b4e-4f6a-9c7d-2e5b8a1f0c3d"


@pytest.fixture
def workspace(monkeypatch):
    """The stand-in with the lake's gold tables registered; page size 1 so every list must page."""
    tables = [f"{CATALOG}.gold.{t}" for t in GOLD_TABLES] + [f"{CATALOG}.silver.natuurlijkpersoon"]
    with UnityCatalogStandin(catalogs={CATALOG: ["bronze", "silver", "gold", "quarantine"]}, tables=tables,
                             page_size=1) as uc:
        monkeypatch.setenv("AIRFLOW_CONN_GGM_DATABRICKS", json.dumps(uc.airflow_connection()))
        monkeypatch.setenv("GGM_TABLE_NAMESPACE", CATALOG)
        monkeypatch.setenv("GGM_DATABRICKS_WAREHOUSE_ID", uc.warehouse_id)
        yield uc


def _shares_doc(tables: list[tuple[str, bool]], recipients: list[dict]) -> dict:
    return {
        "shares": [
            {"name": "gemeente_gold", "comment": "Gold marts",
             "schemas": [{"name": "demografie", "tables": [
                 {"name": name, "location": f"gold/{name}", "history_shared": history} for name, history in tables]}]},
            {"name": "wonen", "schemas": [{"name": "woningen", "tables": [
                {"name": "voorraad", "location": "ignored/by/catalog_name",
                 "catalog_name": f"{CATALOG}.gold.woningvoorraad_per_wijk"}]}]},
        ],
        "recipients": recipients,
    }


def _write(tmp_path: Path, doc: dict, name: str) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def test_optional_unity_catalog_fields_parse_and_the_default_file_is_unchanged():
    default = load_shares_config(PROJECT_ROOT / "config" / "shares.yaml")
    assert default.recipients[0].sharing_identifier is None
    assert default.shares[0].all_tables()[0].catalog_name is None
    doc = _shares_doc([("inwoners_per_buurt", False)],
                      [{"name": "cbs", "shares": ["wonen"], "sharing_identifier": CBS_METASTORE}])
    parsed = parse_shares_config(doc)
    assert parsed.recipient("cbs").sharing_identifier == CBS_METASTORE
    assert parsed.share("wonen").all_tables()[0].catalog_name == "gemeente.gold.woningvoorraad_per_wijk"
    doc["recipients"][0]["sharing_identifier"] = "azure: westeurope"
    with pytest.raises(SharesConfigError, match="sharing_identifier"):
        parse_shares_config(doc)


def test_default_shares_yaml_gives_each_recipient_its_own_share_of_views(workspace):
    # Every table of config/shares.yaml lists its columns, so both recipients read views through their own
    # share; the base shares hold gold tables nobody reads whole and are therefore not created.
    client = workspace_client()
    started_ms = int(time.time() * 1000)
    plan = apply_unity_catalog(client)

    assert plan.applied and plan.conflicts == [] and plan.warnings == []
    posts = {c.body["name"]: c.body for c in workspace.calls("POST", "recipients")}
    assert sorted(posts) == ["demo-partner", "ggd-regio"]
    body = posts["demo-partner"]
    assert {k: body[k] for k in ("name", "authentication_type", "comment")} == {
        "name": "demo-partner", "authentication_type": "TOKEN", "comment": "Demonstration partner organisation"}
    # token_lifetime_days: 90 in shares.yaml → token expiry 90 days after creation.
    assert abs(body["expiration_time"] - (started_ms + 90 * 86_400_000)) < 600_000

    demo_view = f"{CATALOG}.shares_demo_partner.gemeente_gold__demografie__inwoners_per_buurt"
    assert workspace.view(demo_view)["definition"] == (
        "SELECT `peildatum`, `wijkcode`, `wijknaam`, `buurtcode`, `buurtnaam`, `leeftijdsklasse`, `huishoudtype`, "
        "`aantal_inwoners`, `onderdrukt` FROM `gemeente`.`gold`.`inwoners_per_buurt`")
    ggd_view = f"{CATALOG}.shares_ggd_regio.sociaal_domein_monitor__sociaal_domein__sociaal_domein_voorzieningen"
    assert workspace.view(ggd_view)["definition"].endswith(
        "FROM `gemeente`.`gold`.`sociaal_domein_voorzieningen` WHERE `gebiedsniveau` IN ('gemeente', 'wijk')")
    assert "`aantal_clienten`" in workspace.view(ggd_view)["definition"]
    assert workspace.sql_statements[0] == ("CREATE SCHEMA IF NOT EXISTS `gemeente`.`shares_demo_partner` "
                                           "COMMENT 'GGM per-recipient share views of demo-partner'")

    assert workspace.calls("POST", "shares")[0].body == {
        "name": "gemeente_gold__demo_partner",
        "comment": "Gold policy marts of the municipality, small cells suppressed (for recipient demo-partner)"}
    assert workspace.calls("PATCH", "shares/gemeente_gold__demo_partner")[0].body == {"updates": [{
        "action": "ADD",
        "data_object": {"name": demo_view, "data_object_type": "VIEW", "shared_as": "demografie.inwoners_per_buurt"},
    }]}
    assert workspace.calls("PATCH", "shares/gemeente_gold__demo_partner/permissions")[0].body == {
        "changes": [{"principal": "demo-partner", "add": ["SELECT"]}]}
    assert workspace.share_state("gemeente_gold__demo_partner")["grants"] == {"demo-partner": {"SELECT"}}
    ggd_share = workspace.share_state("sociaal_domein_monitor__ggd_regio")
    assert ggd_share["grants"] == {"ggd-regio": {"SELECT"}}
    assert {(o["shared_as"], o["data_object_type"]) for o in ggd_share["objects"]} == {
        ("sociaal_domein.sociaal_domein_voorzieningen", "VIEW"), ("schuldhulp.schuldhulp_vroegsignalen", "VIEW")}
    assert workspace.share_state("gemeente_gold") is None and workspace.share_state("sociaal_domein_monitor") is None
    created = {c["name"]: c for c in plan.created_recipients}
    assert created["demo-partner"]["activation_url"].startswith(workspace.url)

    mutations = len(workspace.mutating_calls())
    again = apply_unity_catalog(client)
    assert not again.has_changes and again.views == []
    assert again.as_dict()["in_sync"] == ["gemeente_gold__demo_partner", "sociaal_domein_monitor__ggd_regio"]
    assert len(workspace.mutating_calls()) == mutations


def test_two_recipients_then_a_removed_table_and_a_withdrawn_share(workspace, tmp_path):
    client = workspace_client()
    recipients = [
        {"name": "ggd-gooi", "shares": ["gemeente_gold", "wonen"], "comment": "GGD Gooi en Vechtstreek"},
        {"name": "cbs", "shares": ["wonen"], "sharing_identifier": CBS_METASTORE},
    ]
    first = _write(tmp_path, _shares_doc([("inwoners_per_buurt", False), ("verhuizingen_per_buurt", False)],
                                         recipients), "shares-v1.yaml")
    apply_unity_catalog(client, first)

    posts = {c.body["name"]: c.body for c in workspace.calls("POST", "recipients")}
    assert posts["ggd-gooi"]["authentication_type"] == "TOKEN"
    assert posts["cbs"]["authentication_type"] == "DATABRICKS"
    assert posts["cbs"]["data_recipient_global_metastore_id"] == CBS_METASTORE and "expiration_time" not in posts["cbs"]
    assert workspace.calls("PATCH", "shares/wonen")[0].body["updates"][0]["data_object"] == {
        "name": "gemeente.gold.woningvoorraad_per_wijk", "data_object_type": "TABLE",
        "shared_as": "woningen.voorraad", "history_data_sharing_status": "DISABLED"}
    assert workspace.calls("PATCH", "shares/wonen/permissions")[0].body == {"changes": [
        {"principal": "cbs", "add": ["SELECT"]}, {"principal": "ggd-gooi", "add": ["SELECT"]}]}
    assert {o["shared_as"] for o in workspace.share_state("gemeente_gold")["objects"]} == {
        "demografie.inwoners_per_buurt", "demografie.verhuizingen_per_buurt"}

    # Next version: verhuizingen leaves the share, inwoners gets history, GGD loses "wonen".
    recipients[0]["shares"] = ["gemeente_gold"]
    second = _write(tmp_path, _shares_doc([("inwoners_per_buurt", True)], recipients), "shares-v2.yaml")
    plan = plan_unity_catalog(client, second)
    assert plan.recipients == []
    before = len(workspace.mutating_calls())
    apply_unity_catalog(client, second)
    new_calls = workspace.mutating_calls()[before:]
    assert [(c.method, c.path.split("unity-catalog/")[1]) for c in new_calls] == [
        ("PATCH", "shares/gemeente_gold"), ("PATCH", "shares/wonen/permissions")]
    assert new_calls[0].body == {"updates": [
        {"action": "REMOVE", "data_object": {"name": "gemeente.gold.verhuizingen_per_buurt",
                                             "data_object_type": "TABLE"}},
        {"action": "UPDATE", "data_object": {"name": "gemeente.gold.inwoners_per_buurt", "data_object_type": "TABLE",
                                             "shared_as": "demografie.inwoners_per_buurt",
                                             "history_data_sharing_status": "ENABLED"}},
    ]}
    assert new_calls[1].body == {"changes": [{"principal": "ggd-gooi", "remove": ["SELECT"]}]}
    state = workspace.share_state("gemeente_gold")
    assert [(o["name"], o["history_data_sharing_status"]) for o in state["objects"]] == [
        ("gemeente.gold.inwoners_per_buurt", "ENABLED")]
    assert workspace.share_state("wonen")["grants"] == {"cbs": {"SELECT"}}
    assert not plan_unity_catalog(client, second).has_changes


def test_plan_only_reads_and_reports_unmanaged_shares(workspace):
    client = workspace_client()
    client.shares.create("handmatig", comment="made in the UI")
    before = len(workspace.mutating_calls())
    plan = plan_unity_catalog(client)
    assert workspace.mutating_calls()[before:] == []
    summary = plan.as_dict()
    assert summary["unmanaged_shares"] == ["handmatig"]
    assert summary["shares"][0]["create"] is True and summary["recipients"][0]["action"] == "create"
    apply_unity_catalog(client)
    assert workspace.share_state("handmatig") is not None  # reported, never deleted


def test_grants_given_by_hand_to_other_recipients_are_revoked(workspace):
    client = workspace_client()
    apply_unity_catalog(client)
    from databricks.sdk.service.sharing import AuthenticationType, PermissionsChange

    client.recipients.create("onbekende-partij", AuthenticationType.TOKEN)
    client.shares.update_permissions("gemeente_gold__demo_partner",
                                     changes=[PermissionsChange(principal="onbekende-partij", add=["SELECT"])])
    plan = apply_unity_catalog(client)
    assert plan.shares[0].share == "gemeente_gold__demo_partner"
    assert plan.shares[0].revoke == {"onbekende-partij": ["SELECT"]}
    assert workspace.share_state("gemeente_gold__demo_partner")["grants"] == {"demo-partner": {"SELECT"}}


def test_only_gold_tables_may_be_shared(workspace, tmp_path):
    doc = {"shares": [{"name": "lek", "schemas": [{"name": "personen", "tables": [
        {"name": "natuurlijkpersoon", "location": "silver/natuurlijkpersoon"}]}]}]}
    with pytest.raises(UnityCatalogSharingError, match="only gold tables may be shared"):
        apply_unity_catalog(workspace_client(), _write(tmp_path, doc, "silver.yaml"))
    assert workspace.mutating_calls() == []


def test_workspace_errors_surface_with_the_failing_step(workspace, tmp_path):
    client = workspace_client()
    workspace.fail_next("PATCH", "shares/gemeente_gold__demo_partner/permissions", status=403,
                        error_code="PERMISSION_DENIED", message="User is not an owner of Recipient 'demo-partner'.")
    with pytest.raises(UnityCatalogSharingError) as failure:
        apply_unity_catalog(client)
    assert "update permissions of share gemeente_gold__demo_partner failed: PERMISSION_DENIED" in str(failure.value)
    views = f"{CATALOG}.shares_ggd_regio.sociaal_domein_monitor__"
    assert failure.value.applied == [
        "create recipient ggd-regio", "create recipient demo-partner",
        f"create view {CATALOG}.shares_demo_partner.gemeente_gold__demografie__inwoners_per_buurt",
        f"create view {views}sociaal_domein__sociaal_domein_voorzieningen",
        f"create view {views}schuldhulp__schuldhulp_vroegsignalen",
        "create share gemeente_gold__demo_partner", "update share gemeente_gold__demo_partner"]
    # A rerun picks up where it stopped.
    plan = apply_unity_catalog(client)
    assert plan.views == []
    assert [c.as_dict()["grant_select"] for c in plan.shares] == [["demo-partner"], ["ggd-regio"]]

    doc = _shares_doc([("bestaat_niet", False)], [{"name": "ggd-gooi", "shares": ["gemeente_gold"]}])
    with pytest.raises(UnityCatalogSharingError, match="TABLE_DOES_NOT_EXIST.*gemeente.gold.bestaat_niet"):
        apply_unity_catalog(client, _write(tmp_path, doc, "missing-table.yaml"))


def test_authentication_type_conflict_stops_before_any_change(workspace, tmp_path):
    client = workspace_client()
    from databricks.sdk.service.sharing import AuthenticationType

    client.recipients.create("cbs", AuthenticationType.TOKEN)
    doc = _shares_doc([("inwoners_per_buurt", False)],
                      [{"name": "cbs", "shares": ["wonen"], "sharing_identifier": CBS_METASTORE}])
    path = _write(tmp_path, doc, "conflict.yaml")
    assert "authentication TOKEN" in plan_unity_catalog(client, path).conflicts[0]
    before = len(workspace.mutating_calls())
    with pytest.raises(UnityCatalogSharingError, match="conflicts with the metastore"):
        apply_unity_catalog(client, path)
    assert len(workspace.mutating_calls()) == before


def test_cli_plan_then_apply(workspace, capsys):
    from ggm_lakehouse.cli import main

    # plan in-process (cheap), apply as the real command an operator runs.
    assert main(["sharing", "unity-catalog", "plan"]) == 0
    assert json.loads(capsys.readouterr().out)["shares"][0]["share"] == "gemeente_gold__demo_partner"
    assert workspace.mutating_calls() == []
    applied = subprocess.run([sys.executable, "-m", "ggm_lakehouse.cli", "sharing", "unity-catalog", "apply"],
                             env={**os.environ}, capture_output=True, text=True, timeout=180)
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["applied"] is True
    assert workspace.share_state("gemeente_gold__demo_partner")["grants"] == {"demo-partner": {"SELECT"}}


# ---- per-recipient views --------------------------------------------------------------------


def _narrowing_doc(ggd_columns: list[str], ggd_shares: list[str]) -> dict:
    """A monitor share with one narrowed and one whole table, an open share, and two recipients."""
    ggd: dict = {"name": "ggd-regio", "shares": ggd_shares}
    if "monitor" in ggd_shares:
        ggd["tables"] = {"monitor.sociaal_domein.voorzieningen": {
            "columns": ggd_columns,
            "row_filter": [{"column": "wet", "equals": "Wmo 2015 'O\\Brien'"},
                           {"column": "gebiedscode", "not_in": ["WK999901", None]}]}}
    return {
        "shares": [
            {"name": "monitor", "comment": "Monitor", "schemas": [
                {"name": "sociaal_domein", "tables": [
                    {"name": "voorzieningen", "location": "gold/sociaal_domein_voorzieningen",
                     "columns": ["peildatum", "gebiedsniveau", "gebiedscode", "wet", "aantal_clienten",
                                 "client_pseudonym"],
                     "pseudonym_columns": ["client_pseudonym"],
                     "row_filter": [{"column": "gebiedsniveau", "in": ["gemeente", "wijk"]}]},
                    {"name": "inwoners", "location": "gold/inwoners_per_buurt"}]}]},
            {"name": "open", "schemas": [{"name": "wonen", "tables": [
                {"name": "voorraad", "location": "gold/woningvoorraad_per_wijk"}]}]},
        ],
        "recipients": [ggd, {"name": "intern", "shares": ["open"]}],
    }


def test_narrowed_recipient_reads_views_with_exactly_its_columns_and_rows(workspace, tmp_path):
    client = workspace_client()
    path = _write(tmp_path, _narrowing_doc(["peildatum", "gebiedscode", "aantal_clienten", "client_pseudonym"],
                                           ["monitor", "open"]), "narrow-v1.yaml")
    plan = apply_unity_catalog(client, path)

    view = f"{CATALOG}.shares_ggd_regio.monitor__sociaal_domein__voorzieningen"
    expected = ("SELECT `peildatum`, `gebiedscode`, `aantal_clienten` "
                "FROM `gemeente`.`gold`.`sociaal_domein_voorzieningen` "
                "WHERE `gebiedsniveau` IN ('gemeente', 'wijk') AND `wet` = 'Wmo 2015 \\'O\\\\Brien\\'' "
                "AND `gebiedscode` IS NOT NULL AND `gebiedscode` NOT IN ('WK999901')")
    assert [v.view.full_name for v in plan.views] == [view]
    assert workspace.view(view)["definition"] == expected
    assert workspace.sql_statements[-1].endswith(f" AS {expected}")
    # The internal pseudonym cannot be re-keyed inside a view: left out, and said so.
    assert len(plan.warnings) == 1 and "client_pseudonym" in plan.warnings[0]

    # ggd-regio's own share: the view under the table's alias, and the untouched table as the gold table itself.
    derived = workspace.share_state("monitor__ggd_regio")
    assert sorted((o["name"], o["data_object_type"], o["shared_as"]) for o in derived["objects"]) == [
        (f"{CATALOG}.gold.inwoners_per_buurt", "TABLE", "sociaal_domein.inwoners"),
        (view, "VIEW", "sociaal_domein.voorzieningen")]
    assert derived["grants"] == {"ggd-regio": {"SELECT"}}
    # Nobody reads "monitor" whole, so it is not created; "open" narrows nothing and is granted as it is.
    assert workspace.share_state("monitor") is None
    assert workspace.share_state("open")["grants"] == {"ggd-regio": {"SELECT"}, "intern": {"SELECT"}}

    second = plan_unity_catalog(client, path)
    assert not second.has_changes and second.views == []

    # Narrowing change: the amounts column is withdrawn → only the view is replaced.
    narrower = _write(tmp_path, _narrowing_doc(["peildatum", "gebiedscode"], ["monitor", "open"]), "narrow-v2.yaml")
    change = plan_unity_catalog(client, narrower)
    assert [(v.action, v.view.full_name) for v in change.views] == [("replace", view)]
    assert change.views[0].current_definition == expected
    assert change.views[0].view.definition.startswith("SELECT `peildatum`, `gebiedscode` FROM ")
    assert not any(s.has_changes for s in change.shares)
    apply_unity_catalog(client, narrower)
    assert "`aantal_clienten`" not in workspace.view(view)["definition"]
    assert not plan_unity_catalog(client, narrower).has_changes

    # Withdrawing the monitor share from ggd-regio empties its own share and revokes the grant.
    withdrawn = _write(tmp_path, _narrowing_doc([], ["open"]), "narrow-v3.yaml")
    plan = apply_unity_catalog(client, withdrawn)
    assert plan.unmanaged_shares == []
    assert workspace.share_state("monitor__ggd_regio") == {"comment": "Monitor (for recipient ggd-regio)",
                                                           "objects": [], "grants": {}}
    assert not plan_unity_catalog(client, withdrawn).has_changes


def test_row_filter_literals_and_identifiers_are_quoted_never_interpolated():
    import datetime as dt

    from ggm_lakehouse.model.shares_config import RowCondition
    from sharing_server.unity_catalog import render_condition, sql_literal

    assert render_condition(RowCondition("a`b", "equals", "x' OR '1'='1")) == "`a``b` = 'x\\' OR \\'1\\'=\\'1'"
    assert render_condition(RowCondition("n", "in", (1, None))) == "(`n` IN (1) OR `n` IS NULL)"
    assert render_condition(RowCondition("n", "in", ())) == "FALSE"
    assert render_condition(RowCondition("n", "not_in", ())) == "`n` IS NOT NULL"
    assert render_condition(RowCondition("n", "equals", None)) == "`n` IS NULL"
    assert render_condition(RowCondition("n", "not_null", True)) == "`n` IS NOT NULL"
    assert sql_literal(True) == "TRUE" and sql_literal(2.5) == "2.5"
    assert sql_literal(dt.date(2026, 1, 31)) == "DATE '2026-01-31'"
    assert sql_literal("regel\nnieuw \\") == "'regel\\nnieuw \\\\'"
    for unsafe in (float("nan"), {"a": 1}, ["x"]):
        with pytest.raises(UnityCatalogSharingError, match="no SQL literal"):
            sql_literal(unsafe)


def test_undeclared_person_identifier_and_missing_warehouse_stop_before_any_change(workspace, tmp_path,
                                                                                    monkeypatch):
    client = workspace_client()
    doc = _narrowing_doc(["peildatum", "aantal_clienten", "client_pseudonym"], ["monitor"])
    doc["shares"][0]["schemas"][0]["tables"][0]["pseudonym_columns"] = []  # client_pseudonym no longer declared
    with pytest.raises(UnityCatalogSharingError, match="look like person identifiers"):
        apply_unity_catalog(client, _write(tmp_path, doc, "leak.yaml"))

    monkeypatch.delenv("GGM_DATABRICKS_WAREHOUSE_ID")
    with pytest.raises(UnityCatalogSharingError, match="GGM_DATABRICKS_WAREHOUSE_ID"):
        apply_unity_catalog(client)
    assert workspace.mutating_calls() == []


def test_a_view_over_a_missing_gold_table_fails_with_the_warehouse_error(workspace, tmp_path):
    doc = _narrowing_doc(["peildatum"], ["monitor"])
    doc["shares"][0]["schemas"][0]["tables"][0]["location"] = "gold/bestaat_niet"
    with pytest.raises(UnityCatalogSharingError) as failure:
        apply_unity_catalog(workspace_client(), _write(tmp_path, doc, "missing.yaml"))
    assert "create view gemeente.shares_ggd_regio.monitor__sociaal_domein__voorzieningen failed" in str(failure.value)
    assert "TABLE_OR_VIEW_NOT_FOUND" in str(failure.value)
    assert failure.value.applied == ["create recipient ggd-regio", "create recipient intern"]
    assert workspace.share_state("monitor__ggd_regio") is None
