"""A SQLite writer killed before publishing leaves a staged table; the next publish drops it
(a live writer's staging table is never touched)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np

from fmrec.store import SqliteSink
from fmrec.topk import TopK

WRITER = r"""
import os, signal, sys
import numpy as np
from fmrec.store import SqliteSink
from fmrec.topk import TopK
sink = SqliteSink(sys.argv[1], run_id=sys.argv[2])
sink.write(TopK(np.arange(5), np.tile(np.arange(3), (5, 1)), np.ones((5, 3), np.float32)))
os.kill(os.getpid(), signal.SIGKILL)  # dies with its table staged, never published nor aborted
"""


def batch(n: int = 4) -> TopK:
    return TopK(np.arange(n), np.tile(np.arange(2), (n, 1)), np.ones((n, 2), np.float32))


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_killed_writers_table_is_dropped_by_the_next_publish(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    proc = subprocess.run([sys.executable, "-c", WRITER, str(db), "killed"], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "fmrec_run_killed" in tables(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name, run_id FROM fmrec_runs_staging").fetchall() == [
            ("fmrec_run_killed", "killed")]
    # a writer that is alive (this process) and has staged rows too
    live = SqliteSink(db, run_id="live")
    live.write(batch())
    with SqliteSink(db, run_id="next") as sink:
        sink.write(batch())
    names = tables(db)
    assert "fmrec_run_killed" not in names  # the dead writer's table is gone
    assert "fmrec_run_live" in names and "fmrec_run_next" in names
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name FROM fmrec_runs_staging").fetchall() == [("fmrec_run_live",)]
    live.abort()
    assert "fmrec_run_live" not in tables(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM fmrec_runs_staging").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM recommendations").fetchone()[0] == 8
