"""BSN elfproef and keyed pseudonyms."""
from __future__ import annotations

import pytest

from ggm_lakehouse.bsn import complete_bsn, is_valid_bsn
from ggm_lakehouse.pseudonym import load_key, pseudonymise
from ggm_lakehouse.secrets import MissingSecretError, get_secret


@pytest.mark.parametrize("bsn", ["999993653", "999990639", "999993872", "111222333"])
def test_known_valid_bsns_pass(bsn):
    assert is_valid_bsn(bsn)


@pytest.mark.parametrize("value", ["123456789", "99999365", "9999936531", "abcdefghi", "000000000", None, 999993653])
def test_invalid_bsns_fail(value):
    assert not is_valid_bsn(value)


def test_complete_bsn_yields_valid_numbers():
    made = [complete_bsn(f"{n:08d}") for n in range(12345670, 12345700)]
    valid = [b for b in made if b is not None]
    assert valid and all(is_valid_bsn(b) for b in valid)


def test_pseudonym_is_keyed_and_context_separated():
    key_a, key_b = b"a" * 32, b"b" * 32
    p = pseudonymise("999993653", key_a)
    assert p == pseudonymise("999993653", key_a)
    assert p != pseudonymise("999993653", key_b)
    assert p != pseudonymise("999993653", key_a, context="recipient:ggd")
    assert "999993653" not in p and len(p) == 64
    assert pseudonymise(None, key_a) is None


def test_key_comes_from_environment_or_airflow_connection(monkeypatch):
    monkeypatch.delenv("GGM_PSEUDONYM_KEY", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_GGM_PSEUDONYM_KEY", '{"conn_type": "generic", "password": "k' + "x" * 31 + '"}')
    assert load_key() == ("k" + "x" * 31).encode()
    monkeypatch.setenv("GGM_PSEUDONYM_KEY", "y" * 32)
    assert load_key() == b"y" * 32


def test_missing_or_short_key_is_refused(monkeypatch):
    monkeypatch.delenv("GGM_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_GGM_PSEUDONYM_KEY", raising=False)
    with pytest.raises(MissingSecretError):
        get_secret("ggm_test_secret_that_does_not_exist")
    monkeypatch.setenv("GGM_PSEUDONYM_KEY", "short")
    with pytest.raises(ValueError, match="shorter than"):
        load_key()
