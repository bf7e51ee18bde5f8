"""Policy dashboard: a static site with one page per domein, generated from the gold marts.

``dashboard.site.build_site`` reads the mart definitions (``gold_marts/*.yaml``), the gold
Delta tables and ``gold/mart_status`` with the ``deltalake`` package (no Spark) and writes
plain HTML pages with Plotly charts; ``dashboard.site.serve`` serves them. The command line
is ``python -m dashboard build|serve``. docs/dashboard.md describes the pages.
"""
from __future__ import annotations

from dashboard.site import DashboardError, build_site, serve

__all__ = ["DashboardError", "build_site", "serve"]
