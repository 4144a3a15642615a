"""A reader in another process that polls the ``recommendations`` view while runs are published.

The runs are :func:`run_batches` (run ``r``: ``20 + 5*r`` users, ``k = 2 + r % 5``,
scores in ``[1000*r, 1000*r + k)``), so the reader can tell from the scores alone
which run it sees, and whether it sees a mix of runs or a partial one.  The same
script body serves SQLite (:data:`SQLITE_READER`) and PostgreSQL (:data:`PG_READER`);
only the connect lines and the driver's error class differ.  The script prints
``ready`` after its first poll and, once the stop file exists (and it polled more
than 20 times), one JSON line ``{"polls", "seen", "bad", "errors"}``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fmrec.store import open_sink
from fmrec.topk import TopK

_READER_TEMPLATE = textwrap.dedent(
    """
    import json, os, sys, time
    @CONNECT@
    def n_users(run): return 20 + 5 * run
    def k_of(run): return 2 + run % 5
    polls, seen, bad, errors = 0, set(), [], []
    ready = False
    deadline = time.time() + 60
    while time.time() < deadline:
        if os.path.exists(stop) and polls > 20:
            break
        try:
            rows = conn.execute(
                "SELECT user_id, count(*), min(rank), max(rank), min(score), max(score) "
                "FROM recommendations GROUP BY user_id"
            ).fetchall()
        except @ERROR@ as exc:
            errors.append(str(exc))
            continue
        polls += 1
        runs = {int(r[4] // 1000) for r in rows} | {int(r[5] // 1000) for r in rows}
        if len(runs) != 1:
            bad.append(("mixed", sorted(runs)))
        else:
            run = runs.pop()
            seen.add(run)
            if len(rows) != n_users(run):
                bad.append(("users", run, len(rows)))
            for _, cnt, lo, hi, _, _ in rows:
                if (cnt, lo, hi) != (k_of(run), 1, k_of(run)):
                    bad.append(("partial", run, cnt, lo, hi))
                    break
        if not ready:
            print("ready", flush=True)
            ready = True
    print(json.dumps({"polls": polls, "seen": sorted(seen), "bad": bad[:5], "errors": errors[:5]}), flush=True)
    """
)


def reader_script(connect: str, error: str) -> str:
    """The reader script; ``connect`` sets ``conn`` and ``stop`` (from argv), ``error`` is the driver's error class."""
    return _READER_TEMPLATE.replace("@CONNECT@", textwrap.dedent(connect).strip()).replace("@ERROR@", error)


#: argv: DB_FILE STOP_FILE
SQLITE_READER = reader_script(
    """
    import sqlite3
    db, stop = sys.argv[1], sys.argv[2]
    conn = sqlite3.connect(db, timeout=5, isolation_level=None)
    """,
    "sqlite3.Error",
)

#: argv: LIBPQ_URL SCHEMA STOP_FILE
PG_READER = reader_script(
    """
    import psycopg
    url, schema, stop = sys.argv[1], sys.argv[2], sys.argv[3]
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(f'SET search_path TO "{schema}"')
    """,
    "psycopg.Error",
)


def run_batches(run: int) -> list[TopK]:
    """Run ``run``: 20 + 5*run users, k = 2 + run % 5, scores in [1000*run, 1000*run + k)."""
    n, k = 20 + 5 * run, 2 + run % 5
    users = np.arange(1, n + 1, dtype=np.int64)
    items = np.tile(np.arange(1, k + 1, dtype=np.int64), (n, 1)) + users[:, None] * 10
    scores = np.tile((1000.0 * run + np.arange(k - 1, -1, -1)).astype(np.float32), (n, 1))
    return [TopK(users[s : s + 9], items[s : s + 9], scores[s : s + 9]) for s in range(0, n, 9)]


def publish(target: str, run_id: str, parts: list[TopK], **opts: Any) -> Any:
    """Write ``parts`` to a sink on ``target`` and publish them as ``run_id``; returns the sink."""
    with open_sink(target, run_id=run_id, **opts) as sink:
        for b in parts:
            sink.write(b)
    return sink


def table_rows(b: TopK) -> list[tuple[Any, ...]]:
    """(user_id, rank, item_id, score) rows of a full batch, as a run table holds them."""
    users = np.repeat(b.user_ids, b.k).tolist()
    ranks = np.tile(np.arange(1, b.k + 1), len(b)).tolist()
    return list(zip(users, ranks, b.item_ids.ravel().tolist(), b.scores.ravel().tolist()))


@contextmanager
def reader_process(script: str, *argv: str) -> Iterator[subprocess.Popen[str]]:
    """Start ``python -c script argv...``, wait for its first poll; kill it if still running at the end."""
    reader = subprocess.Popen([sys.executable, "-c", script, *argv],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "ready"
        yield reader
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()


def stop_reader(reader: subprocess.Popen[str], stop: Path, timeout: float) -> dict[str, Any]:
    """Touch the stop file, wait for the reader to exit cleanly; returns its JSON report."""
    stop.touch()
    out, err = reader.communicate(timeout=timeout)
    assert reader.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def publish_while_reading(target: str, runs: int, script: str, *argv: str, tmp_path: Path,
                          timeout: float) -> dict[str, Any]:
    """Publish run 0 to ``target``, start the reader (``argv`` + a stop file in ``tmp_path``), then publish
    runs 1..``runs`` (keep_runs=3, a slow writer) while it polls; returns its report."""
    publish(target, "run_0", run_batches(0))
    stop = tmp_path / "stop"
    with reader_process(script, *argv, str(stop)) as reader:
        for run in range(1, runs + 1):
            with open_sink(target, run_id=f"run_{run}", keep_runs=3) as sink:
                for b in run_batches(run):
                    sink.write(b)
                    time.sleep(0.003)  # a slow writer: the reader polls mid-run
            time.sleep(0.02)
        return stop_reader(reader, stop, timeout)
