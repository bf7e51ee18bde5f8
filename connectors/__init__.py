"""Extract stage: one connector per source on a shared HTTP base, writing landing batches.

Public entry points::

    from connectors import CONNECTORS, ExtractWindow
    connector = CONNECTORS["bag"].from_connection(fields)  # fields: connectors.base.ConnectionFields
    results = connector.extract(ExtractWindow.for_day(date(2026, 3, 1), run_id), landing_root())

See docs/architecture.md ("Landing batches") for the batch + manifest contract.
"""
from __future__ import annotations

from connectors.bag import BagConnector
from connectors.begroting import BegrotingConnector
from connectors.base import Connector, ExtractWindow, HttpConnector
from connectors.brp import BrpPersonenConnector
from connectors.cbs import CbsStatlineConnector
from connectors.dropzone import DropzoneConnector
from connectors.exports import HrConnector, SubsidiesConnector, VthConnector
from connectors.files import FileDropConnector, GebiedenConnector
from connectors.iwmo import IjwConnector, IwmoConnector
from connectors.kvk import KvkConnector
from connectors.sql import SqlConnector, Suite4Connector
from connectors.vroegsignalering import VroegsignaleringConnector
from connectors.xaf import XafConnector
from ggm_lakehouse.landing import BatchResult, BatchWriter, find_complete_batches, read_manifest

CONNECTORS: dict[str, type[Connector]] = {
    cls.name: cls
    for cls in (
        # External registries (HTTP APIs).
        BrpPersonenConnector,
        BagConnector,
        CbsStatlineConnector,
        KvkConnector,
        # Departmental systems: drop zones and application databases.
        GebiedenConnector,
        IwmoConnector,
        IjwConnector,
        XafConnector,
        BegrotingConnector,
        SubsidiesConnector,
        VthConnector,
        HrConnector,
        VroegsignaleringConnector,
        Suite4Connector,
        SqlConnector,
    )
}


def get_connector(name: str) -> type[Connector]:
    """The connector class registered under ``name``."""
    try:
        return CONNECTORS[name]
    except KeyError:
        raise KeyError(f"unknown connector {name!r}; known: {sorted(CONNECTORS)}") from None


__all__ = [
    "CONNECTORS",
    "BagConnector",
    "BatchResult",
    "BatchWriter",
    "BegrotingConnector",
    "BrpPersonenConnector",
    "CbsStatlineConnector",
    "Connector",
    "DropzoneConnector",
    "ExtractWindow",
    "FileDropConnector",
    "GebiedenConnector",
    "HttpConnector",
    "HrConnector",
    "IjwConnector",
    "IwmoConnector",
    "KvkConnector",
    "SqlConnector",
    "SubsidiesConnector",
    "Suite4Connector",
    "VroegsignaleringConnector",
    "VthConnector",
    "XafConnector",
    "find_complete_batches",
    "get_connector",
    "read_manifest",
]
