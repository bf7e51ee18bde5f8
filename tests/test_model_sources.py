"""The source declaration (ggm_lakehouse/model/sources.yaml) as ggm_lakehouse.model.sources reads it."""
from __future__ import annotations

import pytest

from ggm_lakehouse.model.sources import SOURCES, load_sources


def test_every_source_uses_its_own_connection_and_dag():
    assert list(SOURCES)[:2] == ["brp", "bag"]  # file order is kept
    for name, spec in SOURCES.items():
        assert spec.name == name and spec.conn_id == f"ggm_{name}" and spec.dag_id == f"ggm_ingest_{name}"
        assert spec.owner.startswith("team-") and len(spec.schedule.split()) == 5 and spec.pool and spec.description


def test_a_source_with_a_missing_or_unknown_field_fails_on_loading(tmp_path):
    declaration = tmp_path / "sources.yaml"
    declaration.write_text("brp:\n  owner: team-x\n  schedule: '0 2 * * *'\n  pool: p\n  descriptoin: typo\n",
                           encoding="utf-8")
    with pytest.raises(ValueError) as error:
        load_sources(declaration)
    assert str(declaration) in str(error.value)
    assert "brp.descriptoin: unknown key 'descriptoin'" in str(error.value)
    assert "brp: required key 'description' is missing" in str(error.value)
