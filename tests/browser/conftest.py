"""Browser tests: the Airflow UI driven by headless Chromium (Playwright with Debian's chromium).

``scripts/ensure_test_tools.sh`` installs the browser; without it these tests skip with
the reason. Run only them with ``pytest -m browser``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

DEFAULT_CHROMIUM = "/usr/bin/chromium"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: end-to-end tests that drive the Airflow UI in headless Chromium")


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """Path of the Chromium binary (``GGM_CHROMIUM`` or Debian's ``/usr/bin/chromium``); skips when absent."""
    configured = os.environ.get("GGM_CHROMIUM", DEFAULT_CHROMIUM)
    path = configured if Path(configured).is_file() else shutil.which(configured)
    if not path or not os.access(path, os.X_OK):
        pytest.skip(f"Chromium not found at {configured!r}; run scripts/ensure_test_tools.sh (as root) to install it")
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)")
    return str(path)
