"""Run one callable in a fresh process and kill it with SIGKILL at a chosen point (fault injection for tests).

    python tests/crash_at.py '{"call": "tests.test_faults:extract_gebieden", "args": [...],
                               "kill_before": ["os.replace", 3], "counts": "/tmp/counts.json"}'

``kill_before`` names a function of the ``os`` module and which call of it (1-based) the process
dies on, just before that call does anything: SIGKILL, no exception, no ``finally``, no exit
handler, exactly as the kernel's OOM killer or a pulled plug leaves a process. Without it the
callable runs to the end, and ``counts`` receives how often each watched function was called, so
a test can enumerate every point at which the work could be cut off. The code under test is the
product's own; only the ``os`` functions are wrapped, to count and to kill.
"""
from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import sys

WATCHED = ("replace", "rename", "fsync", "unlink", "rmdir", "mkdir")


def _watch(counts: dict[str, int], kill_before: tuple[str, int] | None) -> None:
    for name in WATCHED:
        original = getattr(os, name)

        @functools.wraps(original)
        def counted(*args, __name=f"os.{name}", __original=original, **kwargs):
            counts[__name] = counts.get(__name, 0) + 1
            if kill_before and kill_before[0] == __name and counts[__name] == kill_before[1]:
                os.kill(os.getpid(), signal.SIGKILL)
            return __original(*args, **kwargs)

        setattr(os, name, counted)


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    module_name, function_name = spec["call"].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    counts: dict[str, int] = {}
    kill_before = tuple(spec["kill_before"]) if spec.get("kill_before") else None
    _watch(counts, kill_before)
    function(*spec.get("args", []))
    if spec.get("counts"):
        with open(spec["counts"], "w", encoding="utf-8") as handle:
            json.dump(counts, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
