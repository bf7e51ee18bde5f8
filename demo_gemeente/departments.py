"""Every departmental delivery of one demo day, consistent with the registries.

The demo municipality's own systems deliver in their real formats:

* ``iwmo/``, ``ijw/`` - iWmo/iJw 3.2 messages with zorgaanbieders (``demo_gemeente.sociaal_domein``);
* ``xaf/`` - the ledger's year-to-date XML Auditfile Financieel, booking the same declaraties
  (``demo_gemeente.financien``);
* ``begroting/`` - the begroting after every raadsbesluit (CSV, ``demo_gemeente.begroting``);
* ``subsidies/`` (Excel), ``vth/`` and ``hr/`` (CSV) - register exports (``demo_gemeente.exports``);
* ``vroegsignalering/`` - signals of payment arrears (``demo_gemeente.vroegsignalering``);
* the Suite4 sociaal-domein database (SQLite) the SQL connector reads (``demo_gemeente.suite4``);
* the municipality's AGB-to-KvK mapping of zorgaanbieders (a CSV it maintains).

Clients are residents, zorgaanbieders and subsidy recipients are KvK companies, declaraties
follow toewijzingen and the ledger carries the sociaal-domein spending. Every writer is
deterministic for the same inputs and writes atomically.
"""
from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

from demo_gemeente.delivery import write_atomic
from demo_gemeente.model import Municipality

AGB_KVK_HEADER = ("agb_code", "kvk_nummer")



def write_agb_kvk_mapping(kvk_register, logical_date: date, path: Path) -> Path:
    """The municipality's AGB-code → KvK-nummer list of the zorgaanbieders registered on ``logical_date``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\n")
    writer.writerow(AGB_KVK_HEADER)
    pairs = sorted({(o.agb_code, o.kvk_nummer) for o in kvk_register.zorgaanbieders(logical_date) if o.agb_code})
    writer.writerows(pairs)
    return write_atomic(Path(path), buffer.getvalue().encode("utf-8"))


def write_departmental_deliveries(
    muni: Municipality,
    dropzone_root: Path,
    logical_date: date,
    *,
    kvk_register,
    suite4_database: Path,
    agb_kvk_mapping: Path,
    seed: int = 42,
    first_delivery: bool = False,
) -> dict[str, list[Path]]:
    """Write every departmental delivery of ``logical_date``; returns the written paths per source.

    ``muni`` is the demo world at ``logical_date``. ``first_delivery`` marks the first day the
    platform receives the departments' files: the message traffic then includes the current
    toewijzingen (backlog) and the weekly exports deliver on that day too, so every table starts filled.
    """
    from demo_gemeente.begroting import write_begroting_deliveries
    from demo_gemeente.exports import write_hr_deliveries, write_subsidies_deliveries, write_vth_deliveries
    from demo_gemeente.financien import write_xaf_deliveries
    from demo_gemeente.sociaal_domein import sociaal_domein_state, write_ijw_deliveries, write_iwmo_deliveries
    from demo_gemeente.suite4 import write_suite4_database
    from demo_gemeente.vroegsignalering import write_vroegsignalering_deliveries

    root = Path(dropzone_root)
    weekly = {"delivery_weekday": None} if first_delivery else {}
    spending = sociaal_domein_state(muni, until=logical_date, kvk_register=kvk_register, seed=seed).declaratie_regels()
    return {
        "iwmo": write_iwmo_deliveries(muni, root, logical_date, kvk_register=kvk_register, seed=seed,
                                      include_backlog=first_delivery),
        "ijw": write_ijw_deliveries(muni, root, logical_date, kvk_register=kvk_register, seed=seed,
                                    include_backlog=first_delivery),
        "xaf": write_xaf_deliveries(muni, root, logical_date, seed=seed, sociaal_domein_spending=spending),
        "begroting": write_begroting_deliveries(muni, root, logical_date, seed=seed, first_delivery=first_delivery),
        "subsidies": write_subsidies_deliveries(muni, root, logical_date, seed=seed, kvk_register=kvk_register,
                                                **weekly),
        "vth": write_vth_deliveries(muni, root, logical_date, seed=seed),
        "hr": write_hr_deliveries(muni, root, logical_date, seed=seed, **weekly),
        "vroegsignalering": write_vroegsignalering_deliveries(muni, root, logical_date, seed=seed),
        "suite4": [write_suite4_database(muni, Path(suite4_database), logical_date, seed=seed)],
        "agb_kvk": [write_agb_kvk_mapping(kvk_register, logical_date, Path(agb_kvk_mapping))],
    }
