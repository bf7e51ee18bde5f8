"""Where the tests find the official reference material (GGM DDL, source specs) and how they skip without it.

The material lives outside the project (``../shared`` in this workplace); ``GGM_SPECS_DIR`` points
elsewhere. Tests that need it call :func:`require`, which skips with the reason when it is absent,
so the suite passes on a clone that has no reference material at all.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("GGM_SPECS_DIR") or Path(__file__).resolve().parents[1].parent / "shared")


def require(relative: str) -> Path:
    """The path ``SHARED/relative``; skips the calling test (or module) when it does not exist."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"reference material {relative!r} not found under {SHARED} (set GGM_SPECS_DIR to the shared folder)")
    return path


def available(relative: str) -> bool:
    """True when ``SHARED/relative`` exists (for ``skipif`` markers)."""
    return (SHARED / relative).exists()


def missing_reason(relative: str) -> str:
    """The skip reason for a missing piece of reference material."""
    return f"reference material {relative!r} not found under {SHARED} (set GGM_SPECS_DIR to the shared folder)"
