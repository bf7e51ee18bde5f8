"""Silver links of the Sociaal Domein: VERZOEK_OM_TOEWIJZING (315) and the koppeltabel CLIENT_TOEWIJZING (301).

The demo municipality's iWmo/iJw traffic goes through the real drop-zone connectors, bronze and silver:
the zones receive the backlog (the latest 301/305 of every current toewijzing) and a fortnight of daily
traffic, and are read once at the end of the fortnight (a drop zone that was not read for two weeks), so
that 315 verzoeken and the 301s answering them reach silver in one run.
"""
from __future__ import annotations

import json
import re
from datetime import date, timedelta

import pytest

from connectors.base import ExtractWindow
from connectors.iwmo import IjwConnector, IwmoConnector

DAY1 = date(2026, 4, 28)
DAY2 = DAY1 + timedelta(days=13)
TABLES = ["CLIENT", "BESCHIKKING", "TOEWIJZING", "CLIENT_TOEWIJZING", "VERZOEK_OM_TOEWIJZING"]
_BSN = re.compile(rb"<[A-Za-z0-9]+:Bsn>([0-9]{9})</")


@pytest.fixture(scope="module")
def delivered_bsns(data_root) -> set[str]:
    """Write the demo deliveries of DAY1..DAY2 into the drop zones; return every BSN they name."""
    from demo_gemeente.generator import DemoWorld
    from demo_gemeente.kvk import KvkRegister
    from demo_gemeente.sociaal_domein import write_ijw_deliveries, write_iwmo_deliveries
    from ggm_lakehouse.config import dropzone_root

    world = DemoWorld(population=3000, seed=42)
    kvk = KvkRegister(world)
    bsns: set[str] = set()
    day = DAY1
    while day <= DAY2:
        muni = world.at(day)
        backlog = day == DAY1
        for path in (write_iwmo_deliveries(muni, dropzone_root(), day, kvk_register=kvk, include_backlog=backlog)
                     + write_ijw_deliveries(muni, dropzone_root(), day, kvk_register=kvk, include_backlog=backlog)):
            bsns.update(m.decode() for m in _BSN.findall(path.read_bytes()))
        day += timedelta(days=1)
    return bsns


@pytest.fixture(scope="module")
def conformed(spark, data_root, delivered_bsns):
    """Extract, land and conform the fortnight on DAY2; returns the silver report per table."""
    from ggm_lakehouse.config import landing_root
    from jobs import bronze, silver

    run_id = f"sd-links-{DAY2}"
    for connector in (IwmoConnector(), IjwConnector()):
        connector.extract(ExtractWindow.for_day(DAY2, run_id), landing_root())
        assert connector.last_report["files_rejected"] == [], connector.last_report
    bronze.run(spark, DAY2, run_id)
    return silver.run(spark, DAY2, run_id, tables=TABLES)["tables"]


def _current(spark, table: str):
    from ggm_lakehouse.config import table_path

    frame = spark.read.format("delta").load(str(table_path("silver", table)))
    return frame.where("DWH_DATUMTIJDGELDIGTOTMET IS NULL")


def test_every_toewijzing_has_its_client(conformed, spark):
    toewijzingen = _current(spark, "TOEWIJZING")
    links = _current(spark, "CLIENT_TOEWIJZING")
    assert toewijzingen.count() > 50  # the backlog alone holds dozens of current toewijzingen
    # One link per toewijzing, and every toewijzing has one.
    assert links.count() == links.select("TOEWIJZING_ID").distinct().count()
    unlinked = toewijzingen.join(links, "TOEWIJZING_ID", "left_anti")
    assert unlinked.count() == 0
    both_laws = {r["WET_ENUM_ID"] for r in links.select("WET_ENUM_ID").distinct().collect()}
    assert both_laws == {4, 9}
    # Every linked client is a CLIENT (the same BSN pseudonym key), so the client's resident can be reached.
    orphans = links.join(_current(spark, "CLIENT"), "CLIENT_ID", "left_anti")
    assert orphans.count() == 0 and links.where("CLIENT_ID IS NULL").count() == 0


def test_client_link_is_the_pseudonym_key_of_the_bsn_in_the_301(conformed, spark, data_root):
    from ggm_lakehouse.config import dropzone_root
    from ggm_lakehouse.pseudonym import load_key, pseudonymise
    from jobs.silver import surrogate_key_value

    # A plain (not enveloped) iWmo 301 of the backlog: read its client and toewijzingnummer directly.
    archived = sorted((dropzone_root() / "iwmo" / "archive").rglob("414_*.xml"))
    text = next(p.read_text(encoding="utf-8") for p in archived if "<wmo301:Bericht" in p.read_text(encoding="utf-8"))
    bsn = re.search(r"<wmo301:Bsn>([0-9]{9})</", text).group(1)
    nummer = re.search(r"<wmo301:ToewijzingNummer>([0-9]+)</", text).group(1)
    referentie = re.search(r"<wmo301:ReferentieAanbieder>([^<]+)</", text).group(1)
    link = _current(spark, "CLIENT_TOEWIJZING").where(
        f"TOEWIJZING_ID = {surrogate_key_value('TOEWIJZING', 'WMO', nummer)}").collect()
    assert len(link) == 1
    assert link[0]["CLIENT_ID"] == surrogate_key_value("CLIENT", pseudonymise(bsn, load_key()))
    assert (link[0]["REFERENTIEAANBIEDER"], link[0]["WET_ENUM_ID"]) == (referentie, 9)


def test_verzoeken_link_to_client_beschikking_voorziening_and_the_answering_toewijzing(conformed, spark):
    from pyspark.sql import functions as F

    verzoeken = _current(spark, "VERZOEK_OM_TOEWIJZING")
    rows = verzoeken.collect()
    assert len(rows) >= 3, "the fortnight has 315 verzoeken of both laws"
    assert all(r["DATUMONTVANGST"] is not None and DAY1 <= r["DATUMONTVANGST"] <= DAY2 for r in rows)
    assert all(r["BETREFT_RECHTSPERSOON_ID"] is not None and r["LEVERANCIER_RECHTSPERSOON_ID"] is not None
               and r["BETREFT_VOORZIENING_ID"] is not None for r in rows)
    clients = _current(spark, "CLIENT").select(F.col("CLIENT_ID").alias("BETREFT_RECHTSPERSOON_ID"))
    assert verzoeken.join(clients, "BETREFT_RECHTSPERSOON_ID", "left_anti").count() == 0
    # Wmo 315s name the gemeente's BeschikkingNummer; jeugdhulp on a verwijzing has none.
    with_beschikking = [r for r in rows if r["BESCHIKKINGSNUMMER"] is not None]
    assert with_beschikking and any(r["LEIDT_TOT_BESCHIKKING_ID"] is None for r in rows)
    beschikkingen = _current(spark, "BESCHIKKING").select(
        F.col("BESCHIKKING_ID").alias("LEIDT_TOT_BESCHIKKING_ID"), F.col("CLIENT_ID").alias("BESCHIKKING_CLIENT"),
        F.col("CODE"))
    joined = verzoeken.where("LEIDT_TOT_BESCHIKKING_ID IS NOT NULL").join(beschikkingen, "LEIDT_TOT_BESCHIKKING_ID")
    assert joined.count() == len(with_beschikking)
    # The beschikking belongs to the same client as the verzoek.
    assert joined.where("BESCHIKKING_CLIENT <> BETREFT_RECHTSPERSOON_ID OR CODE <> BESCHIKKINGSNUMMER").count() == 0
    # A 301 that answers a 315 repeats its ReferentieAanbieder and names the same client.
    answered = verzoeken.join(
        _current(spark, "CLIENT_TOEWIJZING").select(
            "REFERENTIEAANBIEDER", F.col("CLIENT_ID").alias("BETREFT_RECHTSPERSOON_ID"), "TOEWIJZING_ID"),
        ["REFERENTIEAANBIEDER", "BETREFT_RECHTSPERSOON_ID"])
    assert answered.count() >= 1
    lead = answered.join(_current(spark, "TOEWIJZING").select("TOEWIJZING_ID", "DATUMTOEWIJZING"), "TOEWIJZING_ID")
    assert lead.where("DATUMTOEWIJZING < DATUMONTVANGST").count() == 0


def test_no_clear_bsn_in_the_linked_tables(conformed, spark, delivered_bsns):
    from ggm_lakehouse.config import table_path

    assert len(delivered_bsns) > 50
    for name in TABLES:
        frame = spark.read.format("delta").load(str(table_path("silver", name)))
        text = "\n".join(json.dumps(r.asDict(), default=str) for r in frame.collect())
        assert not any(bsn in text for bsn in delivered_bsns), name
        for path in table_path("silver", name).rglob("*"):
            if path.is_file():
                content = path.read_bytes()
                assert not any(bsn.encode() in content for bsn in delivered_bsns), path


def test_links_add_no_quarantine_beyond_the_source_defects(conformed):
    # The demo messages are valid: the new mappings quarantine nothing.
    for table in ("CLIENT_TOEWIJZING", "VERZOEK_OM_TOEWIJZING"):
        assert not conformed[table].get("quarantined"), (table, conformed[table])
