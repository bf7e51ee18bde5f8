"""Drop-zone connector for the begroting (budget) export of the financial system.

The financial system writes the begroting as a ``;``-separated CSV whenever the raad adopts
or changes it: the primitieve begroting in November and every begrotingswijziging after
(voorjaarsnota, najaarsnota). Each file, ``begroting_<YYYYMMDD>.csv``, is the complete
begroting of every begrotingsjaar the system holds open as it stands after that besluit, so
a file is a full snapshot and days without a besluit deliver nothing. The columns are
checked and typed by ``config/contracts/begroting.yaml``; the bronze table is
``begroting_begrotingsregels`` (GGM BEGROTING and BEGROTINGREGEL in silver).
"""
from __future__ import annotations

from typing import ClassVar

from connectors.contracts import ContractConnector


class BegrotingConnector(ContractConnector):
    """Begrote lasten and baten per begrotingsjaar, kostenplaats and grootboekrekening."""

    name: ClassVar[str] = "begroting"
    datasets: ClassVar[tuple[str, ...]] = ("begrotingsregels",)
    file_patterns: ClassVar[tuple[str, ...]] = ("begroting_*.csv",)


__all__ = ["BegrotingConnector"]
