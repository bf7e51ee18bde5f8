"""shares.yaml validation, the shipped configuration and the URL-signing key fallback."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from ggm_lakehouse.model.shares_config import SharesConfigError, load_shares_config, parse_shares_config
from sharing_server.signing import FileClaims, InvalidSignedUrl, UrlSigner, load_url_key

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _doc(location: str = "gold/t", share: str = "s", schema: str = "sc", table: str = "t", shares=("s",)) -> dict:
    return {
        "shares": [{"name": share, "schemas": [{"name": schema, "tables": [{"name": table, "location": location}]}]}],
        "recipients": [{"name": "partner", "shares": list(shares)}],
    }


def test_shipped_config_shares_inwoners_per_buurt_with_demo_partner():
    config = load_shares_config(PROJECT_ROOT / "config" / "shares.yaml")
    share = config.share("GEMEENTE_GOLD")  # names are case-insensitive
    table = share.schema("demografie").table("inwoners_per_buurt")
    assert table.location == "gold/inwoners_per_buurt"
    assert table.history_shared is False
    assert config.recipient("demo-partner").may_read("gemeente_gold")


@pytest.mark.parametrize("location", ["/etc", "../outside", "gold/../../x", "", "."])
def test_locations_must_stay_inside_the_lake(location):
    with pytest.raises(SharesConfigError, match="location"):
        parse_shares_config(_doc(location=location))


@pytest.mark.parametrize(
    ("field", "value"),
    [("share", "a/b"), ("share", ".."), ("schema", "a.b"), ("table", "with space"), ("table", "x" * 256)],
)
def test_names_follow_the_protocol_rules(field, value):
    with pytest.raises(SharesConfigError):
        parse_shares_config(_doc(**{field: value}))


def test_recipient_entitlements_must_name_existing_shares():
    with pytest.raises(SharesConfigError, match="unknown share"):
        parse_shares_config(_doc(shares=("elders",)))


def test_duplicate_tables_are_rejected():
    doc = _doc()
    doc["shares"][0]["schemas"][0]["tables"].append({"name": "T", "location": "gold/other"})
    with pytest.raises(SharesConfigError, match="duplicate"):
        parse_shares_config(doc)


def test_broken_yaml_is_reported_with_the_file(tmp_path):
    path = tmp_path / "shares.yaml"
    path.write_text("shares: [unclosed", encoding="utf-8")
    with pytest.raises(SharesConfigError, match=str(path)):
        load_shares_config(path)
    path.write_text(yaml.safe_dump(_doc()), encoding="utf-8")
    assert load_shares_config(path).share("s") is not None


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_url_key_falls_back_to_a_generated_key_kept_in_the_state_dir(monkeypatch, tmp_path):
    import stat

    monkeypatch.delenv("GGM_SHARING_URL_KEY", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_GGM_SHARING_URL_KEY", raising=False)
    # A handler on the module logger itself: importing Airflow (the secrets fallback)
    # reconfigures root logging, which would hide the record from caplog.
    collect = _Collect()
    logger = logging.getLogger("sharing_server.signing")
    logger.addHandler(collect)
    try:
        first, second = load_url_key(tmp_path), load_url_key(tmp_path)
    finally:
        logger.removeHandler(collect)
    # Generated once, then reused: URLs survive restarts and hold across worker processes.
    assert len(first) == 32 and first == second
    key_file = tmp_path / "url_signing.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_url_key(tmp_path / "elsewhere") != first
    assert any("ggm_sharing_url_key" in m for m in collect.messages)

    key_file.chmod(0o644)  # widened by hand: narrowed again on the next start
    assert load_url_key(tmp_path) == first and stat.S_IMODE(key_file.stat().st_mode) == 0o600

    monkeypatch.setenv("GGM_SHARING_URL_KEY", "configured-key-0123456789")
    assert load_url_key(tmp_path) == b"configured-key-0123456789"


def test_signed_claims_round_trip_and_other_keys_are_refused():
    claims = FileClaims("s", "sc", "t", "id-1", 3, "part-0.parquet", expires_ms=2_000, token_id="tok")
    signed = UrlSigner(b"k" * 32).sign(claims)
    assert UrlSigner(b"k" * 32).verify(signed, now_ms=1_000) == claims
    with pytest.raises(InvalidSignedUrl, match="signature"):
        UrlSigner(b"z" * 32).verify(signed, now_ms=1_000)
    with pytest.raises(InvalidSignedUrl, match="expired"):
        UrlSigner(b"k" * 32).verify(signed, now_ms=2_000)


def test_shipped_config_serves_projections_with_a_rate_limit_and_explicit_columns():
    config = load_shares_config(PROJECT_ROOT / "config" / "shares.yaml")
    assert config.serve_from == "projections"
    assert config.rate_limit.burst >= 1 and config.rate_limit.requests_per_second > 0
    table = config.share("gemeente_gold").schema("demografie").table("inwoners_per_buurt")
    assert table.columns is not None and "aantal_inwoners" in table.columns


@pytest.mark.parametrize(
    ("server", "fragment"),
    [
        ({"rate_limit": {"requests_per_second": 0}}, "requests_per_second"),
        ({"rate_limit": {"burst": 0}}, "burst"),
        ({"serve_from": "gold"}, "serve_from"),
    ],
)
def test_server_section_is_validated(server, fragment):
    with pytest.raises(SharesConfigError, match=fragment):
        parse_shares_config({**_doc(), "server": server})


@pytest.mark.parametrize(
    "row_filter",
    [
        [{"column": "x", "equals": 1, "in": [1]}],  # two operators
        [{"column": "x", "in": "notalist"}],
        [{"equals": 1}],  # no column
        [{"column": "x", "sql": "1=1"}],  # free SQL is never accepted
    ],
)
def test_row_filters_are_structured(row_filter):
    doc = _doc()
    doc["shares"][0]["schemas"][0]["tables"][0]["row_filter"] = row_filter
    with pytest.raises(SharesConfigError, match="row_filter"):
        parse_shares_config(doc)


def test_recipient_table_declarations_name_entitled_tables_and_merge_with_the_table():
    doc = _doc()
    doc["shares"][0]["schemas"][0]["tables"][0].update(columns=["a", "b", "p"], pseudonym_columns=["p"])
    doc["recipients"][0]["tables"] = {"s.sc.t": {"columns": ["a", "p"], "row_filter": [{"column": "a", "in": [1, 2]}]}}
    config = parse_shares_config(doc)
    table = config.share("s").schema("sc").table("t")
    projection = config.recipient("partner").projection(table)
    assert projection.columns == ("a", "p") and projection.pseudonym_columns == ("p",)
    assert [(c.column, c.op, c.value) for c in projection.row_filter] == [("a", "in", (1, 2))]
    doc["recipients"][0]["tables"] = {"s.sc.other": {}}
    with pytest.raises(SharesConfigError, match="no shared table"):
        parse_shares_config(doc)


@pytest.mark.parametrize("kind", ["share", "recipient", "schema", "table"])
def test_the_schema_patterns_and_validate_name_agree(kind):
    """shares.yaml's schema states validate_name's rules as patterns (for editors); they must not drift apart."""
    import re

    from ggm_lakehouse.model.shares_config import _DOTLESS_NAME, _SHARING_NAME, InvalidNameError, validate_name

    pattern = re.compile((_DOTLESS_NAME if kind in ("schema", "table") else _SHARING_NAME)["pattern"])
    names = ["gemeente_gold", "demo-partner", "a.b", "a..b", ".", "..", "a b", "a/b", "a\\b", "tab\there",
             "nul\x00", "del\x7f", "ünïcode", "x" * 255, "ok.", ".ok"]
    for name in names:
        try:
            validate_name(name, kind)
            accepted = True
        except InvalidNameError:
            accepted = False
        assert accepted == bool(pattern.fullmatch(name)), (kind, name)
