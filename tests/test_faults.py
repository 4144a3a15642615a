"""Fault tests: a real process running recommend + publish is killed with SIGKILL
(a) while scoring / writing batches and (b) inside the publish transaction, for
SQLite and PostgreSQL.  The previously published lists must stay served and
intact, and the next run must succeed and publish.

(b) uses the test hook ``FMREC_TEST_PAUSE_BEFORE_COMMIT=<seconds>``: the sinks
print one line to stderr and sleep inside the publish transaction, just before
COMMIT, so the kill lands exactly there.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from fmrec.cli.main import main
from fmrec.store import list_published_runs
from test_postgres import split, sql

#: A real recommend + publish, slowed down between batches so the kill lands mid-scoring.
SCORER = textwrap.dedent(
    """
    import sys, time
    from fmrec.model import load_model
    from fmrec.model.io import load_seen
    from fmrec.recommend import recommend_all
    from fmrec.store import open_sink
    model_dir, target, run_id = sys.argv[1:4]
    model, seen = load_model(model_dir), load_seen(model_dir)
    with open_sink(target, run_id=run_id) as sink:
        for i, batch in enumerate(recommend_all(model, 20, seen=seen, batch_size=50)):
            sink.write(batch)
            print(f"wrote {i + 1}", flush=True)
            time.sleep(0.2)
    print("done", flush=True)
    """
)


def wait_for_line(stream: Any, marker: str, proc: subprocess.Popen, timeout: float = 60) -> list[str]:
    """Read lines until one contains ``marker`` (fails if the process ends first)."""
    lines: list[str] = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = stream.readline()
        if not line:
            proc.wait(timeout=5)
            pytest.fail(f"process ended (rc {proc.returncode}) before {marker!r}; output: {lines}")
        lines.append(line.rstrip())
        if marker in line:
            return lines
    pytest.fail(f"no {marker!r} within {timeout}s; output: {lines}")


def sigkill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL


# --------------------------------------------------------------------------- per-database helpers


class Db:
    """What the tests need to know about one database: served rows, runs, run tables, the check hooks."""

    def __init__(self, target: str, rows: Callable[[], list[Any]], run_tables: Callable[[], set[str]],
                 table_rows: Callable[[str], int | None]) -> None:
        self.target = target
        self.rows = rows
        self.run_tables = run_tables
        self.table_rows = table_rows

    def runs(self) -> list[tuple[str, bool]]:
        return [(r.run_id, r.current) for r in list_published_runs(self.target)]


def sqlite_db(tmp_path: Path) -> Db:
    path = tmp_path / "recs.db"

    def q(query: str) -> list[Any]:
        conn = sqlite3.connect(path, timeout=10)
        try:
            return conn.execute(query).fetchall()
        finally:
            conn.close()

    def table_rows(name: str) -> int | None:
        if not q(f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{name}'"):
            return None
        return int(q(f'SELECT count(*) FROM "{name}"')[0][0])

    return Db(
        f"sqlite:///{path}",
        lambda: q("SELECT user_id, rank, item_id, score FROM recommendations ORDER BY user_id, rank"),
        lambda: {r[0] for r in q("SELECT name FROM sqlite_master WHERE type = 'table'")
                 if r[0].startswith("fmrec_run_")},
        table_rows,
    )


def postgres_db(target: str) -> Db:
    _, schema = split(target)

    def table_rows(name: str) -> int | None:
        if not sql(target, "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s", (schema, name)):
            return None
        return int(sql(target, f'SELECT count(*) FROM "{name}"')[0][0])

    return Db(
        target,
        lambda: sql(target, "SELECT user_id, rank, item_id, score FROM recommendations ORDER BY user_id, rank"),
        lambda: {r[0] for r in sql(target, "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
                 if r[0].startswith("fmrec_run_")},
        table_rows,
    )


def fmrec_sessions(target: str) -> list[tuple[Any, ...]]:
    """(pid, state, has an xid) of the fmrec sessions in the test database, other than ours."""
    return sql(target, "SELECT pid, state, backend_xid IS NOT NULL FROM pg_stat_activity "
                       "WHERE datname = current_database() AND application_name = 'fmrec' AND pid <> pg_backend_pid()")


def wait_sessions_gone(target: str, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while fmrec_sessions(target):
        assert time.time() < deadline, f"killed client's session still open: {fmrec_sessions(target)}"
        time.sleep(0.05)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    if request.param == "sqlite":
        return sqlite_db(tmp_path)
    return postgres_db(request.getfixturevalue("pg_target"))


def publish_previous(db: Db, model: Path, capsys: pytest.CaptureFixture[str]) -> list[Any]:
    assert main(["-q", "recommend", str(model), "--k", "4", "--out", db.target, "--run-id", "before"]) == 0
    capsys.readouterr()
    rows = db.rows()
    assert len(rows) == 943 * 4 and db.runs() == [("before", True)]
    return rows


def check_next_run(db: Db, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "recommend", str(model), "--k", "6", "--out", db.target, "--run-id", "after"]) == 0
    capsys.readouterr()
    rows = db.rows()
    assert len(rows) == 943 * 6 and max(r[1] for r in rows) == 6
    assert db.runs() == [("after", True), ("before", False)]


# --------------------------------------------------------------------------- (a) killed while scoring


def test_sigkill_during_scoring(db: Db, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = publish_previous(db, tiny_model, capsys)
    proc = subprocess.Popen([sys.executable, "-c", SCORER, str(tiny_model), db.target, "killed"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        wait_for_line(proc.stdout, "wrote 2", proc)  # two batches (100 users x 20 items) are in the run table
        if db.target.startswith("sqlite"):
            assert (db.table_rows("fmrec_run_killed") or 0) >= 2 * 50 * 20  # staged, committed, not served
        else:
            # the run's one transaction is open and has written (PostgreSQL shows no uncommitted table)
            assert [s[2] for s in fmrec_sessions(db.target)] == [True]
        assert db.rows() == before  # mid-run: readers see the previous lists
        sigkill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read() if proc.stdout else ""
    assert "done" not in out
    if not db.target.startswith("sqlite"):
        wait_sessions_gone(db.target)
        assert db.table_rows("fmrec_run_killed") is None  # rolled back with the connection
    assert db.rows() == before
    assert db.runs() == [("before", True)]
    check_next_run(db, tiny_model, capsys)


# --------------------------------------------------------------------------- (b) killed inside the publish transaction


def test_sigkill_during_publish(db: Db, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = publish_previous(db, tiny_model, capsys)
    env = dict(os.environ, FMREC_TEST_PAUSE_BEFORE_COMMIT="60")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fmrec.cli.main", "-q", "recommend", str(tiny_model), "--k", "5",
         "--out", db.target, "--run-id", "killed"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stderr is not None
        lines = wait_for_line(proc.stderr, "fmrec test hook", proc)
        assert "before COMMIT" in lines[-1] and "run killed" in lines[-1]
        if db.target.startswith("sqlite"):
            # WAL: readers are not blocked by the open publish transaction and still see the old run
            assert db.rows() == before
        sigkill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if db.target.startswith("sqlite"):
        path = db.target[len("sqlite:///"):]
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # the run table was staged (committed batch by batch) but never published: not served, not recorded
        assert db.table_rows("fmrec_run_killed") == 943 * 5
    else:
        wait_sessions_gone(db.target)
        assert db.table_rows("fmrec_run_killed") is None
        assert db.run_tables() == {"fmrec_run_before"}
    assert db.rows() == before
    assert db.runs() == [("before", True)]
    check_next_run(db, tiny_model, capsys)


@pytest.mark.postgres
def test_sigkill_during_publish_same_run_id_reruns(pg_target: str, tiny_model: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """PostgreSQL leaves nothing behind, so re-running the killed run id simply works."""
    db = postgres_db(pg_target)
    before = publish_previous(db, tiny_model, capsys)
    env = dict(os.environ, FMREC_TEST_PAUSE_BEFORE_COMMIT="60")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fmrec.cli.main", "-q", "recommend", str(tiny_model), "--k", "5",
         "--out", pg_target, "--run-id", "before"],  # re-publishing the served run itself
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stderr is not None
        wait_for_line(proc.stderr, "fmrec test hook", proc)
        sigkill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_sessions_gone(pg_target)
    assert db.rows() == before and db.run_tables() == {"fmrec_run_before"}
    assert main(["-q", "recommend", str(tiny_model), "--k", "5", "--out", pg_target, "--run-id", "before"]) == 0
    assert len(db.rows()) == 943 * 5 and db.runs() == [("before", True)]
