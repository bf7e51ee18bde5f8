"""What `ggm run` shows a person: one line per DAG run, the logs in a file, the day in tables."""
from __future__ import annotations

import json
import sys

from ggm_lakehouse.run_console import follow, print_summary, run_log_paths


def _summary() -> dict:
    return {
        "logical_date": "2026-06-08",
        "extracted": {"brp": {"personen": {}}, "iwmo": {"a": {}, "b": {}}},
        "files": {"iwmo": {"accepted": 19, "rejected": [
            {"file": "bad_301.xml", "rule": "xsd", "message": "element Begindatum missing", "position": "line 4"}]}},
        "silver": {"CLIENT": {"current_rows": 40, "new_versions": 3, "closed": 1, "quarantined": 2}},
        "gold": {"sociaal_domein_voorzieningen": {"rows": 558, "suppressed_cells": 534, "written": True},
                 "sociaal_domein_doorlooptijden": {"waiting_for": ["VERZOEK_OM_TOEWIJZING"]}},
        "warnings": ["iwmo_declaraties: new field x"],
        "share": {"tables": [{"table": "t"}], "recipients": ["demo-partner"], "waiting": []},
        "silver_unchanged": {"BEGROTING": "no batch"},
        "state": "success",
    }


def test_the_summary_reads_as_tables_with_refusals_and_their_rule(capsys):
    print_summary(_summary())
    out = capsys.readouterr().out
    iwmo = next(line for line in out.splitlines() if "iwmo" in line and "│" in line and "bad_301" not in line)
    assert [cell.strip() for cell in iwmo.split("│")[1:-1]] == ["iwmo", "2", "19", "1"]
    assert "bad_301.xml" in out and "xsd: element Begindatum missing" in out
    assert "CLIENT" in out and "waiting" in out and "schema drift: iwmo_declaraties: new field x" in out
    assert "Share: 1 tables published to demo-partner" in out and "Run state: success" in out
    assert len(out.splitlines()) < 60


def test_follow_prints_a_line_per_dag_run_and_keeps_the_logs_in_the_file(tmp_path, capsys):
    log, progress = run_log_paths(tmp_path / "logs")
    script = (
        "import json, sys\n"
        f"p = open({str(progress)!r}, 'a')\n"
        "for dag, state in [('ggm_ingest_brp', 'success'), ('ggm_silver_brp', 'failed')]:\n"
        "    p.write(json.dumps({'dag_id': dag, 'state': 'running', 'seconds': None, 'detail': None}) + '\\n')\n"
        "    p.write(json.dumps({'dag_id': dag, 'state': state, 'seconds': 1.5, 'detail': None}) + '\\n')\n"
        "p.close()\n"
        "for i in range(100):\n"
        "    print('INFO spark log line', i)\n"
        "print('Traceback: the silver stage failed', file=sys.stderr)\n"
        "sys.exit(1)\n"
    )
    assert follow([sys.executable, "-c", script], {}, log, progress) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if "ggm_" in line]
    assert len(lines) == 2 and "ok" in lines[0] and "FAILED" in lines[1] and "1.5 s" in lines[1]
    assert "INFO spark log line 5" not in captured.out  # the logs stay in the file ...
    assert "INFO spark log line 5\n" in log.read_text()
    assert "the silver stage failed" in captured.err and "INFO spark log line 99" in captured.err  # ... but for the tail
    assert "INFO spark log line 50" not in captured.err
    assert str(log) in captured.out
    assert json.loads(progress.read_text().splitlines()[-1])["state"] == "failed"
