"""PostgreSQL sink against the REAL server (no mocks).

The server is ``$FMREC_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``,
trust auth).  The session creates a throw-away database ``fmrec_test_<random>``
and drops it at the end; every test works in its own schema of it.  When the
server is unreachable the tests are skipped with the reason -- except when
``CI=true``, where that is a failure, so CI cannot go green without them.

The fixtures ``pg_url``, ``pg_target`` and ``tiny_model`` live in tests/conftest.py
(shared with tests/test_runs.py and tests/test_faults.py: one database per session);
the helpers ``split``, ``sql`` and ``sorted_rows`` here are imported by those files.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest

from fmrec.errors import ConfigError, StoreError
from fmrec.store import (
    PostgresSink,
    list_published_runs,
    open_sink,
    read_jsonl,
    read_postgres_topk,
    rollback_run,
)
from fmrec.topk import TopK

from _readers import PG_READER, publish, publish_while_reading, reader_process, run_batches, stop_reader, table_rows
from test_store import as_rows, batches, make_topk

pytestmark = pytest.mark.postgres

# --------------------------------------------------------------------------- helpers


def split(target: str) -> tuple[str, str]:
    """(plain libpq URL, schema) of a test target."""
    parts = urlsplit(target)
    schema = dict(p.split("=", 1) for p in parts.query.split("&") if p).get("schema", "public")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), schema


def sql(target: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one query in the target's schema; returns all rows (empty for statements)."""
    import psycopg

    url, schema = split(target)
    with psycopg.connect(url, autocommit=True, options="-c statement_timeout=20000") as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def view_rows(target: str, view: str = "recommendations") -> list[tuple[Any, ...]]:
    return sql(target, f"SELECT user_id, rank, item_id, score FROM {view} ORDER BY user_id, rank")


def tables(target: str) -> set[str]:
    _, schema = split(target)
    return {r[0] for r in sql(target, "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))}


def run_tables(target: str) -> set[str]:
    return {t for t in tables(target) if t.startswith("fmrec_run_")}


def sorted_rows(t: TopK) -> list[Any]:
    return sorted(as_rows(t, drop_empty=True), key=lambda r: str(r[0]))


class Boom(Exception):
    pass


# --------------------------------------------------------------------------- round trips and layout


@pytest.mark.parametrize("str_ids", [False, True], ids=["int-ids", "str-ids"])
def test_round_trip_padded_rows(pg_target: str, str_ids: bool) -> None:
    parts = batches(str_ids)  # full rows, padded rows, an empty row, an empty batch, a different k
    sink = publish(pg_target, "rt", parts)
    assert isinstance(sink, PostgresSink) and sink.state == "published"
    back = read_postgres_topk(pg_target)
    expected = [row for b in parts for row in as_rows(b, drop_empty=True)]
    assert sorted_rows(back) == sorted(expected, key=lambda r: str(r[0]))  # float32 scores exact
    assert sink.rows_written == sum(len(r[1]) for r in expected) == len(view_rows(pg_target))
    # ranks start at 1 and are dense per user
    for user, n, lo, hi in sql(pg_target, "SELECT user_id, count(*), min(rank), max(rank) FROM recommendations "
                                          "GROUP BY user_id"):
        assert (lo, hi) == (1, n), user


def test_view_columns_types_index_and_run_record(pg_target: str) -> None:
    publish(pg_target, "r1", [make_topk([1, 2], 3, [3, 2])], meta={"model_checksum": "c0ffee", "config": {"k": 3},
                                                                   "note": "x"})
    _, schema = split(pg_target)
    cols = sql(pg_target, "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
                          "AND table_name = 'recommendations' ORDER BY ordinal_position", (schema,))
    assert cols == [("user_id", "bigint"), ("rank", "integer"), ("item_id", "bigint"), ("score", "real")]
    assert sql(pg_target, "SELECT relkind, relpersistence FROM pg_class WHERE oid = 'fmrec_run_r1'::regclass") == [
        ("r", "p")  # an ordinary, LOGGED table: survives a server crash, replicates
    ]
    idx = sql(pg_target, "SELECT indexdef FROM pg_indexes WHERE tablename = 'fmrec_run_r1'")
    assert len(idx) == 1 and "UNIQUE" in idx[0][0] and "(user_id, rank)" in idx[0][0]
    cols = [r[0] for r in sql(pg_target, "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                                         "AND table_name = 'fmrec_runs' ORDER BY ordinal_position", (schema,))]
    assert cols[:8] == ["run_id", "started", "finished", "rows", "users", "model_checksum", "config", "published"]
    (row,) = sql(pg_target, "SELECT run_id, rows, users, model_checksum, config, published, view_name, table_name, "
                            "k, meta, started <= finished FROM fmrec_runs")
    assert row == ("r1", 5, 2, "c0ffee", {"k": 3}, True, "recommendations", "fmrec_run_r1", 3, {"note": "x"}, True)
    (info,) = list_published_runs(pg_target)
    assert (info.run_id, info.current, info.rows, info.users, info.k) == ("r1", True, 5, 2, 3)
    assert info.meta == {"model_checksum": "c0ffee", "config": {"k": 3}, "note": "x"}


def test_empty_run_publishes_an_empty_view(pg_target: str) -> None:
    publish(pg_target, "e", [TopK(np.empty(0, np.int64), np.empty((0, 3), np.int64), np.empty((0, 3), np.float32))])
    assert view_rows(pg_target) == []
    assert list_published_runs(pg_target)[0].rows == 0


def test_postgres_scheme_alias_and_pg_environment(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = urlsplit(pg_url)
    schema = f"t_{secrets.token_hex(4)}"
    publish(f"postgres://{parts.netloc}{parts.path}?schema={schema}", "alias", [make_topk([1], 2, [2])])
    # postgresql:///dbname: host, port and user come from PG* variables
    monkeypatch.setenv("PGHOST", parts.hostname or "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(parts.port or 5432))
    monkeypatch.setenv("PGUSER", parts.username or "postgres")
    target = f"postgresql://{parts.path}?schema={schema}"
    assert target.startswith("postgresql:///fmrec_test_")
    publish(target, "env", [make_topk([7], 2, [2])])
    assert [r.run_id for r in list_published_runs(target)] == ["env", "alias"]
    assert [r[0] for r in view_rows(f"{pg_url}?schema={schema}")] == [7, 7]


# --------------------------------------------------------------------------- runs: pruning, idempotency, abort


def test_keep_runs_prunes_old_tables(pg_target: str) -> None:
    for run in range(5):
        publish(pg_target, f"r{run}", run_batches(run), keep_runs=2)
    assert run_tables(pg_target) == {"fmrec_run_r3", "fmrec_run_r4"}
    runs = list_published_runs(pg_target)
    assert [(r.run_id, r.current) for r in runs] == [("r4", True), ("r3", False)]
    assert sorted_rows(read_postgres_topk(pg_target, "r3")) == sorted(
        [row for b in run_batches(3) for row in as_rows(b)], key=lambda r: str(r[0]))
    with pytest.raises(StoreError, match="r1"):
        read_postgres_topk(pg_target, "r1")


def test_prune_skips_a_table_in_use_and_retries_later(pg_target: str, caplog: pytest.LogCaptureFixture) -> None:
    import psycopg

    publish(pg_target, "r0", [make_topk([1], 2, [2])], keep_runs=1)
    publish(pg_target, "r1", [make_topk([2], 2, [2])], keep_runs=1)
    assert run_tables(pg_target) == {"fmrec_run_r1"}
    publish(pg_target, "r2", [make_topk([3], 2, [2])], keep_runs=2)
    url, schema = split(pg_target)
    with psycopg.connect(url) as holder:  # a reader transaction on the run table that is due for pruning
        holder.execute(f'SELECT count(*) FROM "{schema}".fmrec_run_r1').fetchall()
        t0 = time.perf_counter()
        publish(pg_target, "r3", [make_topk([4], 2, [2])], keep_runs=1)
        assert time.perf_counter() - t0 < 10  # published without waiting for the reader
        assert [r[0] for r in view_rows(pg_target)] == [4, 4]
        assert run_tables(pg_target) == {"fmrec_run_r1", "fmrec_run_r3"}  # r1 kept, r2 pruned
        assert any("keeping table" in r.getMessage() and "fmrec_run_r1" in r.getMessage() for r in caplog.records)
        holder.rollback()
    publish(pg_target, "r4", [make_topk([5], 2, [2])], keep_runs=1)
    assert run_tables(pg_target) == {"fmrec_run_r4"}
    assert [r.run_id for r in list_published_runs(pg_target)] == ["r4"]


def test_rerun_same_run_id_is_idempotent(pg_target: str) -> None:
    publish(pg_target, "same", [make_topk([1], 2, [2])])
    publish(pg_target, "other", [make_topk([2], 2, [2])])
    # the same run id again, while "other" is served: replaced without error, and served
    second = [make_topk([5, 6], 3, [3, 3], base=7.0)]
    publish(pg_target, "same", second)
    assert sorted_rows(read_postgres_topk(pg_target)) == sorted_rows(second[0])
    # and again, now while "same" itself is served (the old table is swapped out in the publish)
    third = [make_topk([8], 4, [4], base=3.0)]
    sink = open_sink(pg_target, run_id="same")
    sink.write(third[0])
    assert [r[0] for r in view_rows(pg_target)] == [5, 5, 5, 6, 6, 6]  # still the previous lists
    sink.publish()
    assert sorted_rows(read_postgres_topk(pg_target)) == sorted_rows(third[0])
    runs = list_published_runs(pg_target)
    assert [(r.run_id, r.current, r.table, r.rows) for r in runs] == [
        ("same", True, "fmrec_run_same", 4), ("other", False, "fmrec_run_other", 2)]
    assert run_tables(pg_target) == {"fmrec_run_same", "fmrec_run_other"}  # no staging table left
    with pytest.raises(StoreError, match="replace=True"):
        open_sink(pg_target, run_id="same", replace=False)


def test_two_sessions_cannot_write_the_same_run(pg_target: str) -> None:
    first = open_sink(pg_target, run_id="busy")
    first.write(make_topk([1], 2, [2]))
    with pytest.raises(StoreError, match="being written by another session"):
        open_sink(pg_target, run_id="busy")
    first.publish()
    assert [r.run_id for r in list_published_runs(pg_target)] == ["busy"]


def test_abort_leaves_previous_view(pg_target: str) -> None:
    publish(pg_target, "good", [make_topk([1, 2], 3, [3, 1])])
    before = view_rows(pg_target)
    with pytest.raises(Boom):
        with open_sink(pg_target, run_id="bad") as sink:
            sink.write(make_topk([1, 2, 3], 4, [4, 4, 4], base=99.0))
            assert view_rows(pg_target) == before  # nothing visible before publish
            raise Boom("fail mid-run")
    assert sink.state == "aborted"
    assert view_rows(pg_target) == before
    assert run_tables(pg_target) == {"fmrec_run_good"}  # the aborted run's table is gone
    assert [r.run_id for r in list_published_runs(pg_target)] == ["good"]
    # explicit abort, and a publish that fails (a user written twice): same outcome
    sink = open_sink(pg_target, run_id="bad2")
    sink.write(make_topk([9], 2, [2]))
    sink.abort()
    with pytest.raises(StoreError, match="twice"):
        publish(pg_target, "dup", [make_topk([1, 2], 2, [2, 2]), make_topk([2], 2, [2])])
    assert view_rows(pg_target) == before and run_tables(pg_target) == {"fmrec_run_good"}
    publish(pg_target, "next", [make_topk([4], 2, [2])])  # the next run publishes normally
    assert [r[0] for r in view_rows(pg_target)] == [4, 4]


def test_id_type_change_between_runs_keeps_view_grants(pg_target: str) -> None:
    publish(pg_target, "ints", [make_topk([1], 2, [2])])
    role = f"fmrec_reader_{secrets.token_hex(4)}"
    _, schema = split(pg_target)
    sql(pg_target, f'CREATE ROLE "{role}"')
    try:
        sql(pg_target, f'GRANT SELECT ON recommendations TO "{role}"')
        publish(pg_target, "strs", [make_topk(["a"], 2, [2], str_ids=True)])
        assert [r[0] for r in view_rows(pg_target)] == ["a", "a"]
        assert sql(pg_target, "SELECT has_table_privilege(%s, %s, 'SELECT')",
                   (role, f"{schema}.recommendations")) == [(True,)]
        rollback_run(pg_target, "ints")  # back to integer IDs: the view's column types change again
        assert [r[0] for r in view_rows(pg_target)] == [1, 1]
        assert sql(pg_target, "SELECT has_table_privilege(%s, %s, 'SELECT')",
                   (role, f"{schema}.recommendations")) == [(True,)]
    finally:
        sql(pg_target, f'DROP OWNED BY "{role}"')
        sql(pg_target, f'DROP ROLE "{role}"')


def test_publish_waits_for_reader_transactions_without_blocking_new_readers(pg_target: str) -> None:
    import threading

    import psycopg

    publish(pg_target, "old", [make_topk([1], 2, [2])])
    url, schema = split(pg_target)
    holder = psycopg.connect(url)
    try:
        holder.execute(f'SET search_path TO "{schema}"')
        holder.execute("SELECT count(*) FROM recommendations").fetchall()  # open transaction: share lock held
        with pytest.raises(StoreError, match=r"waited 1s for readers .* pid \d+ \(idle in transaction\)"):
            publish(pg_target, "blocked", [make_topk([2], 2, [2])], lock_wait=1)
        assert [r[0] for r in view_rows(pg_target)] == [1, 1] and "fmrec_run_blocked" not in run_tables(pg_target)
        # a publish waiting for that reader does not queue NEW readers behind it for long
        result: dict[str, Any] = {}

        def waiting_publish() -> None:
            try:
                publish(pg_target, "waits", [make_topk([3], 2, [2])], lock_wait=60)
                result["ok"] = True
            except Exception as exc:  # noqa: BLE001 - reported below
                result["error"] = exc

        thread = threading.Thread(target=waiting_publish)
        thread.start()
        time.sleep(1.5)
        for _ in range(3):
            t0 = time.perf_counter()
            assert [r[0] for r in view_rows(pg_target)] == [1, 1]
            assert time.perf_counter() - t0 < 3.0  # without the short lock tries: stuck until the holder ends
        assert thread.is_alive()
    finally:
        holder.rollback()
        holder.close()
    thread.join(60)
    assert result == {"ok": True}
    assert [r[0] for r in view_rows(pg_target)] == [3, 3]


# --------------------------------------------------------------------------- secrets and identifiers


def test_password_never_in_errors_reprs_or_logs(pg_url: str, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    secret = "Pa55-" + secrets.token_hex(6)
    parts = urlsplit(pg_url)
    user = parts.username or "postgres"
    # unreachable port: the driver's error, redacted
    for url in (f"postgresql://{user}:{secret}@127.0.0.1:1/x", f"postgresql://{user}@127.0.0.1:1/x?password={secret}"):
        with pytest.raises(StoreError) as info:
            open_sink(url)
        msg = str(info.value)
        assert secret not in msg and "\n" not in msg and "***" in msg and "Connection refused" in msg
        assert info.value.__cause__ is None
    # the server's error (no such database), redacted
    with pytest.raises(StoreError) as info:
        open_sink(f"postgresql://{user}:{secret}@{parts.hostname}:{parts.port}/no_such_db_{secrets.token_hex(3)}")
    assert secret not in str(info.value) and "does not exist" in str(info.value)
    # PGPASSWORD is scrubbed too
    monkeypatch.setenv("PGPASSWORD", secret)
    with pytest.raises(StoreError) as info:
        open_sink("postgresql://127.0.0.1:1/x")
    assert secret not in str(info.value)
    monkeypatch.delenv("PGPASSWORD")
    # a working connection (trust auth ignores the password): repr, target, logs, errors
    caplog.set_level(logging.DEBUG)
    target = f"postgresql://{user}:{secret}@{parts.hostname}:{parts.port}{parts.path}?schema=t_{secrets.token_hex(4)}"
    sink = open_sink(target, run_id="pw")
    assert secret not in repr(sink) and secret not in sink.target and ":***@" in sink.target
    sink.write(make_topk([1], 2, [2]))
    sink.publish()
    with pytest.raises(StoreError) as info:
        read_postgres_topk(target, "missing")
    assert secret not in str(info.value)
    assert list_published_runs(target)[0].run_id == "pw"
    assert caplog.records and not any(secret in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "opts",
    [{"view": "recs; DROP TABLE x"}, {"view": "Recs"}, {"table": "a b"}, {"runs_table": 'x"y'},
     {"schema": "s.t"}, {"schema": "Upper"}, {"view": "fmrec_runs"}, {"keep_runs": 0}, {"meta": {"x": object()}},
     {"meta": {"model_checksum": 5}}],
)
def test_invalid_options_rejected_before_connecting(opts: dict[str, Any]) -> None:
    # port 1: nothing listens, so an error about the option proves nothing was connected
    with pytest.raises(ConfigError) as info:
        open_sink("postgresql://u:pw@127.0.0.1:1/db", run_id="r", **opts)
    assert "\n" not in str(info.value) and "pw" not in str(info.value)


@pytest.mark.parametrize("url", ["postgresql://127.0.0.1:1/db?schema=x;drop", "postgresql://127.0.0.1:1/db?schema=A"])
def test_invalid_schema_in_url(url: str) -> None:
    with pytest.raises(ConfigError, match="schema"):
        open_sink(url)


def test_option_errors(pg_target: str) -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        open_sink(pg_target, chunk_size=5)
    with pytest.raises(ConfigError, match="JSON lines"):
        open_sink(pg_target, format="sagemaker")
    with pytest.raises(ConfigError, match="disagrees"):
        open_sink(pg_target, schema="other")
    with pytest.raises(ConfigError, match="invalid run_id"):
        open_sink(pg_target, run_id="x'; drop table y; --")


def test_view_name_taken_by_a_table(pg_target: str) -> None:
    publish(pg_target, "a", [make_topk([1], 2, [2])], view="recs_a")
    sql(pg_target, "CREATE TABLE not_a_view (x int)")
    with pytest.raises(StoreError, match="not a view"):
        publish(pg_target, "b", [make_topk([1], 2, [2])], view="not_a_view")
    assert run_tables(pg_target) == {"fmrec_run_a"}


# --------------------------------------------------------------------------- the command line


def test_cli_recommend_to_postgres(pg_target: str, tiny_model: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from fmrec.cli.main import main

    assert main(["-q", "recommend", str(tiny_model), "--k", "5", "--out", pg_target, "--run-id", "cli1"]) == 0
    assert main(["-q", "recommend", str(tiny_model), "--k", "5", "--out", str(tmp_path / "r.jsonl")]) == 0
    capsys.readouterr()
    pg, js = read_postgres_topk(pg_target), read_jsonl(tmp_path / "r.jsonl")
    assert len(pg) == len(js) == 943
    assert sorted_rows(pg) == sorted_rows(js)
    # the same run id again through the CLI: idempotent
    assert main(["-q", "recommend", str(tiny_model), "--k", "3", "--out", pg_target, "--run-id", "cli1"]) == 0
    runs = list_published_runs(pg_target)
    assert [(r.run_id, r.k, r.users, r.current) for r in runs] == [("cli1", 3, 943, True)]
    assert sql(pg_target, "SELECT max(rank) FROM recommendations") == [(3,)]


def test_cli_runs_list_show_rollback_postgres(pg_target: str, capsys: pytest.CaptureFixture[str]) -> None:
    from fmrec.cli.main import main

    for run in range(3):
        publish(pg_target, f"r{run}", run_batches(run), meta={"model_checksum": f"sum{run}" * 4,
                                                               "config": {"run": run}})
    capsys.readouterr()
    assert main(["runs", "list", "--target", pg_target]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["run_id", "started", "finished"]
    assert [line.split()[:2] for line in lines[1:]] == [["*", "r2"], ["r1", lines[2].split()[1]],
                                                        ["r0", lines[3].split()[1]]]
    assert "sum2sum2sum2" in lines[1]
    assert main(["runs", "show", "r1", "--target", pg_target, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run_id"] == "r1" and shown["current"] is False and shown["model_checksum"] == "sum1" * 4
    assert shown["meta"]["config"] == {"run": 1} and shown["rows"] == (20 + 5) * 3
    assert main(["runs", "rollback", "r1", "--target", pg_target]) == 0
    assert "now serves run r1" in capsys.readouterr().out
    assert sorted_rows(read_postgres_topk(pg_target)) == sorted(
        [row for b in run_batches(1) for row in as_rows(b)], key=lambda r: str(r[0]))
    assert [r.run_id for r in list_published_runs(pg_target) if r.current] == ["r1"]
    assert main(["runs", "rollback", "nope", "--target", pg_target]) == 1
    err = capsys.readouterr().err
    assert "no run 'nope'" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- a reader in another process

def test_reader_in_other_process_never_sees_mixed_or_partial_run(pg_target: str, tmp_path: Path) -> None:
    url, schema = split(pg_target)
    result = publish_while_reading(pg_target, 20, PG_READER, url, schema, tmp_path=tmp_path, timeout=60)
    assert result["bad"] == [], result
    assert result["errors"] == [], result
    assert result["polls"] > 20
    assert len(result["seen"]) >= 5, result  # it really watched several publishes
    assert [r.run_id for r in list_published_runs(pg_target)] == ["run_20", "run_19", "run_18"]
    assert run_tables(pg_target) == {"fmrec_run_run_20", "fmrec_run_run_19", "fmrec_run_run_18"}
    assert sorted_rows(read_postgres_topk(pg_target)) == sorted(
        [row for b in run_batches(20) for row in as_rows(b)], key=lambda r: str(r[0]))


def test_reader_control_detects_a_non_atomic_writer(pg_target: str, tmp_path: Path) -> None:
    """Control for the test above: rewriting the served table in place, row batch by row batch, IS caught."""
    publish(pg_target, "run_0", run_batches(0))
    url, schema = split(pg_target)
    stop = tmp_path / "stop"
    import psycopg

    with reader_process(PG_READER, url, schema, str(stop)) as reader:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            for run in range(1, 4):
                conn.execute("DELETE FROM fmrec_run_run_0")
                for b in run_batches(run):
                    conn.cursor().executemany("INSERT INTO fmrec_run_run_0 VALUES (%s, %s, %s, %s)", table_rows(b))
                    time.sleep(0.01)
        result = stop_reader(reader, stop, timeout=60)
    assert result["bad"] != []
