"""Drop-zone connectors for departmental CSV/Excel exports checked by a data contract.

Each source delivers full snapshots of its register into ``<dropzone root>/<name>/``;
the files are checked and typed by ``config/contracts/<name>.yaml`` (see
:mod:`connectors.contracts`). Bronze tables are ``<name>_<dataset>``:

* ``subsidies`` (Excel, weekly): ``subsidies_programmas``, ``subsidies_subsidies``,
  ``subsidies_beschikkingen`` → GGM SUBSIDIEPROGRAMMA, SUBSIDIE, SUBSIDIEBESCHIKKING;
* ``vth`` (Windows-1252 ``;`` CSV, daily): ``vth_meldingen`` → GGM VTH_MELDING;
* ``hr`` (UTF-8-with-BOM CSV, weekly): ``hr_medewerkers`` → GGM MEDEWERKER. Names,
  dates of birth, BSNs and bank accounts in the HR export are not in the contract and
  therefore never land.

``datasets`` and ``file_patterns`` repeat what the default contract declares so the
drop-zone framework knows them without reading a file; ``tests/test_contracts.py``
checks they agree.
"""
from __future__ import annotations

from typing import ClassVar

from connectors.contracts import ContractConnector


class SubsidiesConnector(ContractConnector):
    """Subsidy register exports: programma's, subsidies (aanvraag/verlening/vaststelling) and beschikkingen."""

    name: ClassVar[str] = "subsidies"
    datasets: ClassVar[tuple[str, ...]] = ("programmas", "subsidies", "beschikkingen")
    file_patterns: ClassVar[tuple[str, ...]] = ("subsidieprogrammas_*.xlsx", "subsidies_*.xlsx",
                                                "subsidiebeschikkingen_*.xlsx")


class VthConnector(ContractConnector):
    """Handhaving meldingen from the VTH system."""

    name: ClassVar[str] = "vth"
    datasets: ClassVar[tuple[str, ...]] = ("meldingen",)
    file_patterns: ClassVar[tuple[str, ...]] = ("vth_meldingen_*.csv",)


class HrConnector(ContractConnector):
    """Medewerkers from the HR system (only the columns the GGM needs)."""

    name: ClassVar[str] = "hr"
    datasets: ClassVar[tuple[str, ...]] = ("medewerkers",)
    file_patterns: ClassVar[tuple[str, ...]] = ("hr_medewerkers_*.csv",)


EXPORT_CONNECTORS: dict[str, type[ContractConnector]] = {
    c.name: c for c in (SubsidiesConnector, VthConnector, HrConnector)
}

__all__ = ["EXPORT_CONNECTORS", "HrConnector", "SubsidiesConnector", "VthConnector"]
