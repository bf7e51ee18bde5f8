"""Files the municipality's own systems deliver to the drop zone.

Three deliveries per day, one folder per source (``<dropzone>/<source>/``):

* ``brp-volglijst/volglijst_<YYYYMMDD>.csv`` - the BSNs the municipality follows in
  the BRP, as exported by its burgerzaken application: everybody ingeschreven plus
  persons deceased in the last 30 days (so their final record is still fetched);
* ``gebieden/wijkbuurtindeling_<YYYYMMDD>.csv`` - the municipality's own wijk- en
  buurtindeling with the buurt geometry as WKT in RD (EPSG:28992);
* ``gebieden/pc6hnr_<YYYYMMDD>.csv`` - modelled on CBS's "Buurt, wijk en gemeente
  voor postcode huisnummer" file: which buurt each postcode + huisnummer lies in.

Writing is idempotent: the same state gives byte-identical files, written to a
temporary file in the target folder and renamed over the old one, so a reader
never sees a half-written file.
"""
from __future__ import annotations

import bisect
import csv
import io
from datetime import timedelta
from pathlib import Path

from demo_gemeente.generator import VOLGLIJST_NAZORG_DAYS
from demo_gemeente.delivery import write_atomic
from demo_gemeente.model import Buurt, Municipality

VOLGLIJST_SOURCE = "brp-volglijst"
GEBIEDEN_SOURCE = "gebieden"
VOLGLIJST_HEADER = ("burgerservicenummer",)
WIJKBUURT_HEADER = ("buurtcode", "buurtnaam", "wijkcode", "wijknaam", "gemeentecode", "gemeentenaam", "geometrie_wkt")
PC6HNR_HEADER = ("PC6", "Huisnummer", "Buurt", "Wijk", "Gemeente")


class BuurtLocator:
    """Finds the buurt whose rectangle contains a point, in O(log n) for a grid tiling."""

    def __init__(self, buurten: dict[str, Buurt]):
        self._buurten = list(buurten.values())
        self._xs = sorted({b.bbox[0] for b in self._buurten})
        self._ys = sorted({b.bbox[1] for b in self._buurten})
        self._by_corner = {(b.bbox[0], b.bbox[1]): b for b in self._buurten}

    def find(self, x: float, y: float) -> Buurt | None:
        """The buurt containing (x, y), or None when the point lies outside every buurt."""
        xi = bisect.bisect_right(self._xs, x) - 1
        yi = bisect.bisect_right(self._ys, y) - 1
        if xi >= 0 and yi >= 0:
            b = self._by_corner.get((self._xs[xi], self._ys[yi]))
            if b is not None and _contains(b, x, y):
                return b
        # Not a regular grid at this spot: fall back to a scan.
        return next((b for b in self._buurten if _contains(b, x, y)), None)


def _contains(b: Buurt, x: float, y: float) -> bool:
    minx, miny, maxx, maxy = b.bbox
    return minx <= x < maxx and miny <= y < maxy


def volglijst_bsns(muni: Municipality) -> list[str]:
    """Sorted BSNs on the volglijst at ``muni.as_of``: residents plus the recently deceased."""
    cutoff = muni.as_of - timedelta(days=VOLGLIJST_NAZORG_DAYS)
    return sorted(p.bsn for p in muni.persons.values()
                  if p.overlijdensdatum is None or p.overlijdensdatum >= cutoff)


def _fmt(v: float) -> str:
    """RD coordinate in metres with at most millimetre precision, no trailing zeros."""
    text = f"{v:.3f}".rstrip("0").rstrip(".")
    return text if text != "-0" else "0"


def buurt_wkt(b: Buurt) -> str:
    """The buurt rectangle as a closed, counter-clockwise WKT POLYGON in RD."""
    minx, miny, maxx, maxy = (_fmt(v) for v in b.bbox)
    return f"POLYGON (({minx} {miny}, {maxx} {miny}, {maxx} {maxy}, {minx} {maxy}, {minx} {miny}))"


def _write_csv(path: Path, header: tuple[str, ...], rows, delimiter: str) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_atomic(path, buffer.getvalue().encode("utf-8"))


def write_dropzone(muni: Municipality, dropzone_root: Path) -> list[Path]:
    """Write the day's drop-zone files for ``muni`` under ``dropzone_root``; returns the paths written.

    Rewriting the same state replaces each file with identical content.
    """
    root = Path(dropzone_root)
    stamp = muni.as_of.strftime("%Y%m%d")
    written = []

    written.append(_write_csv(root / VOLGLIJST_SOURCE / f"volglijst_{stamp}.csv", VOLGLIJST_HEADER,
                              ((bsn,) for bsn in volglijst_bsns(muni)), delimiter=","))

    wijken = muni.wijken
    written.append(_write_csv(
        root / GEBIEDEN_SOURCE / f"wijkbuurtindeling_{stamp}.csv", WIJKBUURT_HEADER,
        ((b.code, b.naam, b.wijk_code, wijken[b.wijk_code].naam, muni.gemeentecode, muni.naam, buurt_wkt(b))
         for b in sorted(muni.buurten.values(), key=lambda b: b.code)),
        delimiter=";",
    ))

    written.append(_write_csv(root / GEBIEDEN_SOURCE / f"pc6hnr_{stamp}.csv", PC6HNR_HEADER,
                              pc6hnr_rows(muni), delimiter=";"))
    return written


def pc6hnr_rows(muni: Municipality) -> list[tuple[str, int, str, str, str]]:
    """One row per distinct (postcode, huisnummer): the buurt, wijk and gemeente codes as bare digits."""
    locator = BuurtLocator(muni.buurten)
    vbo_by_address = {v.hoofdadres_id: v for v in muni.verblijfsobjecten.values()}
    seen: dict[tuple[str, int], tuple[str, int, str, str, str]] = {}
    for na in muni.nummeraanduidingen.values():
        key = (na.postcode, na.huisnummer)
        if key in seen:
            continue
        vbo = vbo_by_address.get(na.identificatie)
        if vbo is None:
            continue  # an address without an object has no location, as in the CBS file
        buurt = locator.find(*vbo.point)
        if buurt is None:
            continue
        seen[key] = (na.postcode, na.huisnummer, buurt.code[2:], buurt.wijk_code[2:], muni.gemeentecode)
    return [seen[k] for k in sorted(seen)]
