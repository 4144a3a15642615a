"""fmrec.store: sinks round-trip TopK batches and publish atomically (real files, no mocks)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from fmrec.errors import ConfigError, StoreError
from fmrec.store import (
    JsonlSink,
    ParquetSink,
    SqliteSink,
    list_runs,
    open_sink,
    read_jsonl,
    read_parquet_topk,
    read_sqlite_topk,
    validate_identifier,
    validate_run_id,
)
from fmrec.topk import TopK

from _readers import SQLITE_READER, publish, publish_while_reading, reader_process, run_batches, stop_reader, table_rows

# ---------------------------------------------------------------------------
# helpers


def make_topk(
    users: list[Any], k: int, counts: list[int], *, str_ids: bool = False, base: float = 0.0
) -> TopK:
    """A TopK with ``counts[r]`` real items in row r, strictly descending scores."""
    n = len(users)
    if str_ids:
        items = np.full((n, k), None, dtype=object)
        uid = np.empty(n, dtype=object)
        uid[:] = users
    else:
        items = np.full((n, k), -1, dtype=np.int64)
        uid = np.asarray(users, dtype=np.int64)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    for r, c in enumerate(counts):
        for j in range(c):
            item = 100 * (r + 1) + 7 * j + 1
            items[r, j] = f"item-{item:05d}" if str_ids else item
        # awkward float32 values: the shortest decimal must round-trip them exactly
        scores[r, :c] = (base + np.linspace(1.0, -1.0, c, dtype=np.float64) / 3.0 + r * 0.1).astype(np.float32)
    return TopK(uid, items, scores)


def empty_topk(k: int = 4, str_ids: bool = False) -> TopK:
    dtype = object if str_ids else np.int64
    return TopK(np.empty(0, dtype=dtype), np.empty((0, k), dtype=dtype), np.empty((0, k), dtype=np.float32))


def as_rows(t: TopK, drop_empty: bool = False) -> list[tuple[Any, list[Any], list[float]]]:
    """Comparable rows: (user, items best first, float32 scores), padding removed."""
    out = []
    for u, items, scores in t.rows():
        if drop_empty and len(items) == 0:
            continue
        u = u.item() if isinstance(u, np.generic) else u
        out.append((u, [v.item() if isinstance(v, np.generic) else v for v in items], np.asarray(scores, np.float32).tolist()))
    return out


def batches(str_ids: bool) -> list[TopK]:
    """Several batches: full rows, padded rows, an empty row, an empty batch, a different k."""
    if str_ids:
        users1, users2 = ["u-a", "u-b", "u-c"], ["u-d", "007"]
    else:
        users1, users2 = [1, 2, 3], [40, 7]
    return [
        make_topk(users1, 5, [5, 2, 0], str_ids=str_ids),
        empty_topk(5, str_ids),
        make_topk(users2, 3, [3, 1], str_ids=str_ids, base=10.0),
    ]


def read_back(kind: str, target: str) -> TopK:
    if kind == "jsonl":
        return read_jsonl(target)
    if kind == "parquet":
        return read_parquet_topk(target)
    return read_sqlite_topk(target)


def target_for(kind: str, folder: Path, name: str = "recs") -> str:
    return {
        "jsonl": str(folder / f"{name}.jsonl"),
        "parquet": str(folder / f"{name}.parquet"),
        "sqlite": f"sqlite:///{folder / name}.db",  # absolute path: sqlite:////...
    }[kind]


def view_rows(db: Path, view: str = "recommendations") -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT user_id, rank, item_id, score FROM {view} ORDER BY user_id, rank").fetchall()
    finally:
        conn.close()


def tables(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


KINDS = ["jsonl", "parquet", "sqlite"]


# ---------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("str_ids", [False, True], ids=["int-ids", "str-ids"])
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(kind: str, str_ids: bool, tmp_path: Path) -> None:
    parts = batches(str_ids)
    target = target_for(kind, tmp_path)
    with open_sink(target, run_id="rt_1") as sink:
        for b in parts:
            sink.write(b)
    assert sink.state == "published"
    assert sink.users_written == 5
    assert sink.rows_written == 5 + 2 + 0 + 3 + 1
    got = read_back(kind, target)
    expected = [row for b in parts for row in as_rows(b)]
    if kind != "jsonl":  # long formats have no row for a user without items
        expected = [row for row in expected if row[1]]
    assert as_rows(got) == expected
    # best first preserved, padding where the row is short
    assert got.k == 5
    assert np.all(np.diff(np.where(np.isfinite(got.scores), got.scores, -1e30), axis=1) <= 0)
    if str_ids:
        assert got.item_ids.dtype == object and got.item_ids[1, 2] is None  # u-b has 2 items
        assert all(isinstance(u, str) for u in got.user_ids)  # "007" stays a string
    else:
        assert got.item_ids.dtype == np.int64 and got.item_ids[1, 2] == -1
        assert got.user_ids.dtype == np.int64


@pytest.mark.parametrize("kind", KINDS)
def test_only_empty_batches_publish_empty_output(kind: str, tmp_path: Path) -> None:
    target = target_for(kind, tmp_path)
    with open_sink(target) as sink:
        sink.write(empty_topk())
    assert (sink.users_written, sink.rows_written) == (0, 0)
    got = read_back(kind, target)
    assert len(got) == 0


def test_jsonl_layout_and_number_format(tmp_path: Path) -> None:
    t = TopK(
        np.array([3, 9]),
        np.array([[5, 6, 7], [8, -1, -1]]),
        np.array([[2.672308, 0.1, -1.5], [1.0, -np.inf, -np.inf]], dtype=np.float32),
    )
    out = tmp_path / "r.jsonl"
    with open_sink(out) as sink:
        sink.write(t)
    lines = out.read_text().splitlines()
    assert lines == [
        '{"user_id": 3, "items": [5, 6, 7], "scores": [2.672308, 0.1, -1.5]}',
        '{"user_id": 9, "items": [8], "scores": [1.0]}',
    ]


def test_jsonl_rewrites_reference_file_byte_identical(interop: Path, tmp_path: Path) -> None:
    """The real fmrec-style reference file reads back and is rewritten byte for byte."""
    src = interop / "expected_top100.jsonl"
    t = read_jsonl(src)
    assert t.item_ids.shape == (943, 100) and t.user_ids[0] == 1
    out = tmp_path / "copy.jsonl"
    with open_sink(out) as sink:
        for start in range(0, len(t), 300):
            sink.write(TopK(t.user_ids[start : start + 300], t.item_ids[start : start + 300], t.scores[start : start + 300]))
    assert out.read_bytes() == src.read_bytes()


# ---------------------------------------------------------------------------
# sagemaker layout (FORMATS.md section 4)


def test_sagemaker_layout_ascending_best_last(tmp_path: Path) -> None:
    t = make_topk([1, 2, 3], 4, [4, 2, 0])
    out = tmp_path / "sm.jsonl"
    with open_sink(out, format="sagemaker") as sink:
        sink.write(t)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 3
    for line, (_, items, scores) in zip(lines, as_rows(t)):
        assert list(line) == ["predicted_label", "labels", "distances"]
        assert all(isinstance(v, float) for v in line["labels"])
        assert line["labels"] == [float(v) for v in reversed(items)]  # best LAST
        assert np.array_equal(np.float32(line["distances"]), np.float32(scores[::-1]))
        assert line["distances"] == sorted(line["distances"])  # ascending
        if items:
            assert line["predicted_label"] == float(items[0])
    assert lines[2] == {"predicted_label": None, "labels": [], "distances": []}
    # the reader reverses back to best first; users are the 1-based line numbers
    back = read_jsonl(out)
    assert as_rows(back) == as_rows(t)
    assert read_jsonl(out, user_ids=[10, 20, 30]).user_ids.tolist() == [10, 20, 30]


def test_sagemaker_reader_on_hosted_line(tmp_path: Path) -> None:
    hosted = tmp_path / "knn.out"
    hosted.write_text(
        '{"predicted_label": 90.0, "labels": [509.0, 1007.0, 90.0], "distances": [1.8703, 1.8852, 1.9]}\n'
        '{"predicted_label": 3.0, "labels": [4.0, 3.0], "distances": [0.5, 0.75]}\n'
    )
    t = read_jsonl(hosted)
    assert t.user_ids.tolist() == [1, 2]
    assert t.item_ids.tolist() == [[90, 1007, 509], [3, 4, -1]]
    assert t.scores[0].tolist() == np.float32([1.9, 1.8852, 1.8703]).tolist()


def test_sagemaker_matches_reference_layout(interop: Path, tmp_path: Path) -> None:
    """The reference top-100 written in sagemaker layout reverses each line and reads back equal."""
    ref = read_jsonl(interop / "expected_top100.jsonl")
    first_ref = json.loads((interop / "expected_top100.jsonl").open().readline())
    out = tmp_path / "sm.jsonl"
    with open_sink(out, format="sagemaker") as sink:
        sink.write(ref)
    first = json.loads(out.open().readline())
    assert set(first) == {"predicted_label", "labels", "distances"}
    assert first["labels"] == [float(v) for v in first_ref["items"][::-1]]
    assert first["distances"] == first_ref["scores"][::-1]
    back = read_jsonl(out)
    assert np.array_equal(back.item_ids, ref.item_ids) and np.array_equal(back.scores, ref.scores)


def test_sagemaker_rejects_string_items(tmp_path: Path) -> None:
    out = tmp_path / "sm.jsonl"
    out.write_text("previous\n")
    with pytest.raises(ConfigError, match="sagemaker"):
        with open_sink(out, format="sagemaker") as sink:
            sink.write(make_topk(["a"], 2, [2], str_ids=True))
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sm.jsonl"]


# ---------------------------------------------------------------------------
# atomic publish / abort


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_file_abort_leaves_published_file_byte_identical(kind: str, tmp_path: Path) -> None:
    target = target_for(kind, tmp_path)
    with open_sink(target) as sink:
        sink.write(make_topk([1, 2], 3, [3, 3]))
    before = Path(target).read_bytes()
    with pytest.raises(Boom):
        with open_sink(target) as sink:
            sink.write(make_topk([5, 6, 7], 3, [3, 2, 1], base=50.0))
            staged = list(tmp_path.glob(".*.tmp"))
            assert len(staged) == 1 and staged[0].parent == tmp_path  # same folder: rename is atomic
            assert Path(target).read_bytes() == before  # nothing visible before publish
            raise Boom("fail mid-run")
    assert sink.state == "aborted"
    assert Path(target).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [Path(target).name]  # temp file removed


def test_sqlite_abort_leaves_previous_view(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with open_sink(f"sqlite:///{db}", run_id="good") as sink:
        sink.write(make_topk([1, 2], 3, [3, 1]))
    before = view_rows(db)
    with pytest.raises(Boom):
        with open_sink(f"sqlite:///{db}", run_id="bad") as sink:
            sink.write(make_topk([1, 2, 3], 4, [4, 4, 4], base=99.0))
            assert "fmrec_run_bad" in tables(db)
            assert view_rows(db) == before
            raise Boom("fail mid-run")
    assert view_rows(db) == before
    assert "fmrec_run_bad" not in tables(db)
    assert [r.run_id for r in list_runs(db)] == ["good"]


def test_explicit_publish_abort_and_state(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "a.jsonl", run_id="x1")
    sink.write(make_topk([1], 2, [2]))
    sink.abort()
    sink.abort()  # idempotent
    assert not (tmp_path / "a.jsonl").exists()
    with pytest.raises(StoreError, match="aborted"):
        sink.write(make_topk([1], 2, [2]))
    sink = ParquetSink(tmp_path / "a.parquet")
    sink.publish()
    with pytest.raises(StoreError, match="already published"):
        sink.publish()


def test_sqlite_duplicate_user_fails_publish_and_keeps_view(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with open_sink(f"sqlite:///{db}") as sink:
        sink.write(make_topk([1], 2, [2]))
    before = view_rows(db)
    with pytest.raises(StoreError, match="twice"):
        with open_sink(f"sqlite:///{db}", run_id="dup") as sink:
            sink.write(make_topk([1, 2], 2, [2, 2]))
            sink.write(make_topk([2], 2, [2]))
    assert view_rows(db) == before and "fmrec_run_dup" not in tables(db)


# ---------------------------------------------------------------------------
# SQLite specifics


def test_sqlite_reader_in_other_process_never_sees_mixed_or_partial_run(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    url = f"sqlite:///{db}"
    result = publish_while_reading(url, 10, SQLITE_READER, str(db), tmp_path=tmp_path, timeout=30)
    assert result["bad"] == [], result
    assert result["errors"] == [], result
    assert result["polls"] > 20
    assert len(result["seen"]) >= 3, result  # it really watched several publishes
    assert 10 in result["seen"] or result["seen"][-1] >= 8
    assert [r.run_id for r in list_runs(db)] == ["run_10", "run_9", "run_8"]
    assert as_rows(read_sqlite_topk(db)) == [row for b in run_batches(10) for row in as_rows(b)]


def test_reader_detects_a_non_atomic_writer(tmp_path: Path) -> None:
    """Control for the test above: rewriting the served table in place IS caught by the reader."""
    db = tmp_path / "naive.db"
    publish(f"sqlite:///{db}", "run_0", run_batches(0))
    stop = tmp_path / "stop"
    with reader_process(SQLITE_READER, str(db), str(stop)) as reader:
        conn = sqlite3.connect(db, isolation_level=None)
        for run in range(1, 4):
            conn.execute("DELETE FROM fmrec_run_run_0")
            for b in run_batches(run):
                conn.executemany("INSERT INTO fmrec_run_run_0 VALUES (?, ?, ?, ?)", table_rows(b))
                time.sleep(0.01)
        conn.close()
        result = stop_reader(reader, stop, timeout=30)
    assert result["bad"] != []


def test_sqlite_wal_index_runs_table_and_keep_runs(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    for run in range(5):
        publish(f"sqlite:///{db}", f"r{run}", run_batches(run), keep_runs=2, meta={"note": run})
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        idx = conn.execute("SELECT sql FROM sqlite_master WHERE type='index' AND tbl_name='fmrec_run_r4'").fetchone()[0]
        assert "UNIQUE" in idx and "(user_id, rank)" in idx
        cols = [r[1] for r in conn.execute("PRAGMA table_info(fmrec_runs)")]
        assert cols == ["run_id", "started", "finished", "rows", "users", "published", "meta"]
        assert [r[1] for r in conn.execute("PRAGMA table_info(recommendations)")] == ["user_id", "rank", "item_id", "score"]
        rows, users, published = conn.execute("SELECT rows, users, published FROM fmrec_runs WHERE run_id='r4'").fetchone()
    finally:
        conn.close()
    assert (rows, users, published) == ((20 + 20) * (2 + 4), 40, 1)
    assert {t for t in tables(db) if t.startswith("fmrec_run_")} == {"fmrec_run_r3", "fmrec_run_r4"}
    runs = list_runs(db)
    assert [(r.run_id, r.current, r.meta) for r in runs] == [("r4", True, {"note": 4}), ("r3", False, {"note": 3})]
    assert runs[0].rows == rows and runs[0].k == 6 and runs[0].started <= runs[0].finished
    # an older kept run is still readable by run id; a pruned one is not
    assert as_rows(read_sqlite_topk(db, "r3")) == [row for b in run_batches(3) for row in as_rows(b)]
    with pytest.raises(StoreError, match="r1"):
        read_sqlite_topk(db, "r1")


def test_sqlite_run_id_conflict_and_replace(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    url = f"sqlite:///{db}"
    with open_sink(url, run_id="same") as sink:
        sink.write(make_topk([1], 2, [2]))
    with pytest.raises(StoreError, match="replace=True"):
        open_sink(url, run_id="same")
    sink = open_sink(url, run_id="same", replace=True)
    sink.write(make_topk([5, 6], 3, [3, 3], base=7.0))
    assert [r[0] for r in view_rows(db)] == [1, 1]  # old run still served while the new one stages
    sink.publish()
    assert as_rows(read_sqlite_topk(db)) == as_rows(make_topk([5, 6], 3, [3, 3], base=7.0))
    runs = list_runs(db)
    assert [(r.run_id, r.current, r.table) for r in runs] == [("same", True, "fmrec_run_same")]
    assert {t for t in tables(db) if t.startswith("fmrec_run_")} == {"fmrec_run_same"}


def test_sqlite_separate_views_do_not_prune_each_other(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    with open_sink(f"sqlite:///{db}", run_id="email_1", view="recs_email", keep_runs=1) as sink:
        sink.write(make_topk([1], 2, [2]))
    for i in range(3):
        with open_sink(f"sqlite:///{db}", run_id=f"dash_{i}", view="recs_dashboard", keep_runs=1) as sink:
            sink.write(make_topk([2], 2, [2]))
    assert [r.run_id for r in list_runs(db, view="recs_email")] == ["email_1"]
    assert [r.run_id for r in list_runs(db, view="recs_dashboard")] == ["dash_2"]
    assert view_rows(db, "recs_email")[0][0] == 1


def test_sqlite_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_sink("sqlite:///sub/rel.db") as sink:
        sink.write(make_topk([1], 1, [1]))
    assert (tmp_path / "sub" / "rel.db").is_file()
    assert isinstance(sink, SqliteSink)
    absolute = f"sqlite:///{tmp_path / 'abs.db'}"
    assert absolute.startswith("sqlite:////")
    with open_sink(absolute) as sink:
        sink.write(make_topk([1], 1, [1]))
    assert len(list_runs(tmp_path / "abs.db")) == 1
    assert len(list_runs(absolute)) == 1
    assert list_runs(tmp_path / "missing.db") == []


# ---------------------------------------------------------------------------
# Parquet specifics


def test_parquet_schema_and_bounded_row_groups(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    with open_sink(out, row_group_size=10) as sink:
        for s in range(0, 12, 4):
            sink.write(make_topk(list(range(s, s + 4)), 4, [4, 4, 3, 2]))
    f = pq.ParquetFile(out)
    schema = f.schema_arrow
    assert schema.names == ["user_id", "rank", "item_id", "score"]
    assert [str(schema.field(n).type) for n in schema.names] == ["int64", "int32", "int64", "float"]
    assert f.metadata.num_rows == 3 * 13
    assert [f.metadata.row_group(i).num_rows for i in range(f.num_row_groups)] == [10, 10, 10, 9]
    table = f.read()
    assert table.column("rank").to_pylist()[:6] == [1, 2, 3, 4, 1, 2]
    assert json.loads(schema.metadata[b"fmrec"])["run_id"] == sink.run_id


def test_parquet_id_type_change_rejected(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="changed type"):
        with open_sink(tmp_path / "p.parquet") as sink:
            sink.write(make_topk([1], 2, [2]))
            sink.write(make_topk(["x"], 2, [2], str_ids=True))
    assert not (tmp_path / "p.parquet").exists()


# ---------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    "opts",
    [
        {"table": "x; DROP TABLE fmrec_runs"},
        {"view": 'recommendations" AS SELECT 1; --'},
        {"view": "two words"},
        {"runs_table": "runs.log"},
        {"table": "1abc"},
        {"view": "sqlite_master"},
        {"keep_runs": 0},
    ],
)
def test_sqlite_invalid_identifiers_rejected(opts: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        open_sink(f"sqlite:///{tmp_path / 'x.db'}", **opts)
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("run_id", ["has-dash", "semi;colon", "", "a b", "x" * 49])
def test_invalid_run_id_rejected(run_id: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run_id"):
        open_sink(tmp_path / "r.jsonl", run_id=run_id)
    assert list(tmp_path.iterdir()) == []


def test_default_run_id_and_identifier_helpers() -> None:
    rid = validate_run_id(None)
    assert validate_run_id(rid) == rid and rid[:2] in ("20", "21") and rid.endswith(rid.split("_")[-1])
    assert validate_run_id(None) != rid
    assert validate_identifier("fmrec_run_2024") == "fmrec_run_2024"


@pytest.mark.parametrize("target", ["out.csv", "recs", "s3://bucket/recs.jsonl", "mysql://h/db"])
def test_unknown_target_one_line_error(target: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_sink(target)
    msg = str(info.value)
    assert "\n" not in msg and target in msg
    assert ".jsonl" in msg and ".parquet" in msg and "sqlite:///" in msg


def test_postgresql_connection_error_hides_the_password() -> None:
    """No server on port 1: a one-line StoreError without the password (tests/test_postgres.py has the rest)."""
    with pytest.raises(StoreError) as info:
        open_sink("postgresql://fm:secret@127.0.0.1:1/recs")
    msg = str(info.value)
    assert "secret" not in msg and "\n" not in msg and "fm:***@127.0.0.1:1/recs" in msg


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:relative.db"])
def test_bad_sqlite_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="SQLite URL"):
        open_sink(url)


def test_option_and_format_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        open_sink(tmp_path / "a.jsonl", keep_runs=2)
    with pytest.raises(ConfigError, match="JSON lines"):
        open_sink(tmp_path / "a.parquet", format="sagemaker")
    with pytest.raises(ConfigError, match="format"):
        open_sink(tmp_path / "a.jsonl", format="csv")
    assert list(tmp_path.iterdir()) == []


def test_bad_batches_rejected(tmp_path: Path) -> None:
    sink = open_sink(tmp_path / "a.jsonl")
    rising = TopK(np.array([1]), np.array([[1, 2]]), np.array([[0.5, 0.9]], dtype=np.float32))
    with pytest.raises(StoreError, match="best first"):
        sink.write(rising)
    gap = TopK(np.array([1]), np.array([[1, -1, 3]]), np.array([[0.9, -np.inf, 0.1]], dtype=np.float32))
    with pytest.raises(StoreError, match="padding"):
        sink.write(gap)
    nan = TopK(np.array([1]), np.array([[1, 2]]), np.array([[0.9, np.nan]], dtype=np.float32))
    with pytest.raises(StoreError, match="NaN"):
        sink.write(nan)
    with pytest.raises(StoreError, match="TopK"):
        sink.write("not a topk")
    sink.abort()
    assert list(tmp_path.iterdir()) == []
