"""The sources of the platform: their Airflow connection, owner, schedule and pool.

A declaration, read by the DAG factory (:mod:`ggm_lakehouse.orchestration`), the pipeline's
extract step (which connection holds a source's endpoint and secret) and the lineage. Which
datasets a source lands is the connector's own declaration (``connectors.<source>``).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceSpec:
    """One source of the platform as the scheduler sees it."""

    name: str
    conn_id: str
    owner: str
    schedule: str
    pool: str
    description: str

    @property
    def dag_id(self) -> str:
        return f"ggm_ingest_{self.name}"


# Schedules are UTC crons: registries are read after their nightly processing, drop zones after
# the departmental exports have run. Pools bound concurrency against each registry's rate limit.
SOURCES: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        SourceSpec("brp", "ggm_brp", "team-basisregistraties", "0 2 * * *", "registry_brp",
                   "BRP Personen (Haal Centraal) for the municipality's volglijst."),
        SourceSpec("bag", "ggm_bag", "team-basisregistraties", "0 2 * * *", "registry_bag",
                   "BAG Individuele Bevragingen: the municipality's woonplaatsen, streets, addresses, panden, VBOs."),
        SourceSpec("gebieden", "ggm_gebieden", "team-onderzoek-statistiek", "0 3 * * *", "dropzone",
                   "Wijk- en buurtindeling and CBS pc6-huisnummer file from the drop zone."),
        SourceSpec("kvk", "ggm_kvk", "team-basisregistraties", "30 2 * * *", "registry_kvk",
                   "KvK Handelsregister: Zoeken, Basisprofiel and Vestigingsprofiel; after the first full pull, "
                   "only the KvK numbers the Mutatieservice signals name."),
        SourceSpec("cbs", "ggm_cbs", "team-onderzoek-statistiek", "0 4 * * *", "registry_cbs",
                   "CBS StatLine Kerncijfers wijken en buurten (OData); data is pulled only when CBS republished."),
        # Departmental systems deliver into drop zones overnight (see docs/dropzones.md).
        SourceSpec("iwmo", "ggm_iwmo", "team-sociaal-domein", "30 5 * * *", "dropzone",
                   "iWmo 3.2 messages (toewijzing, levering, declaratie) from the GGk, bare or in a StUF envelope."),
        SourceSpec("ijw", "ggm_ijw", "team-sociaal-domein", "30 5 * * *", "dropzone",
                   "iJw 3.2 messages (toewijzing, levering, declaratie) from the GGk, bare or in a StUF envelope."),
        SourceSpec("suite4", "ggm_suite4", "team-sociaal-domein", "0 3 * * *", "source_databases",
                   "Suite4 Sociaal Domein: Wmo/Jeugdwet aanvragen, read-only and incremental from the application database."),
        SourceSpec("vroegsignalering", "ggm_vroegsignalering", "team-sociaal-domein", "30 5 * * *", "dropzone",
                   "Vroegsignalering schulden: signals of payment arrears and their follow-up."),
        SourceSpec("xaf", "ggm_xaf", "team-financien", "0 6 * * *", "dropzone",
                   "XML Auditfile Financieel 3.2: the ledger's year-to-date re-export, mapped to IV3 taakvelden."),
        SourceSpec("begroting", "ggm_begroting", "team-financien", "0 6 * * *", "dropzone",
                   "Begroting export (CSV) after every raadsbesluit: begrote lasten and baten per kostenplaats."),
        SourceSpec("subsidies", "ggm_subsidies", "team-financien", "0 6 * * *", "dropzone",
                   "Subsidy register export (Excel): programma's, verleningen and vaststellingen."),
        SourceSpec("vth", "ggm_vth", "team-veiligheid", "0 6 * * *", "dropzone",
                   "Handhaving meldingen from the VTH application (CSV)."),
        SourceSpec("hr", "ggm_hr", "team-bedrijfsvoering", "0 6 * * *", "dropzone",
                   "HR export of medewerkers (CSV): organisational unit, function, FTE."),
    )
}
