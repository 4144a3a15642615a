"""Publishing top-100 for 100,000 users (10 M rows) into PostgreSQL: COPY vs batched INSERT.

Synthetic ``TopK`` batches (10,000 users x 100 items each, integer IDs, float32
scores best first) go to the real server, in the same run:

- ``PostgresSink`` (what ``fmrec`` uses): binary ``COPY ... FROM STDIN`` into the
  run table, then the publish (unique index, ANALYZE, view flip, run record) in
  the same transaction.  Load rows/s counts the COPY phase; end-to-end counts
  everything up to COMMIT.
- batched INSERT: the same table in one transaction, ``cursor.executemany`` of
  ``INSERT ... VALUES (%s, %s, %s, %s)`` in 10,000-row batches (psycopg 3 runs
  executemany in pipeline mode), timed from the same TopK batches (validation
  and conversion to tuples included, as the sink's timing includes its
  encoding; generating the synthetic batches is outside both timings).  Its
  end-to-end time has no index build, so the end-to-end ratio is conservative.  On 10 M rows
  this takes minutes, so by default it runs on the first 1 M rows
  (``--insert-rows 10000000`` for all of them); rows/s is what is compared.
- for reference, COPY with string IDs (the ``write_row`` path) on 1 M rows.

Prints a table and writes ``benchmarks/results/publish_postgres.json``.  Needs a
server: ``--url`` (default ``$FMREC_BENCH_PG`` or
``postgresql://postgres@127.0.0.1:5432/test``); everything happens in a
throw-away schema that is dropped at the end.

    .venv/bin/python benchmarks/publish_postgres.py [--users 100000] [--k 100]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_json  # noqa: E402

from fmrec.store import open_sink  # noqa: E402
from fmrec.topk import TopK  # noqa: E402


def synthetic_batches(n_users: int, k: int, batch_users: int, n_items: int = 50_000,
                      str_ids: bool = False) -> Iterator[TopK]:
    rng = np.random.default_rng(0)
    for start in range(0, n_users, batch_users):
        n = min(batch_users, n_users - start)
        users = np.arange(start + 1, start + n + 1, dtype=np.int64)
        items = rng.integers(1, n_items, size=(n, k), dtype=np.int64)
        scores = -np.sort(-rng.standard_normal((n, k)).astype(np.float32), axis=1)
        if str_ids:
            u = np.empty(n, dtype=object)
            u[:] = [f"user-{x}" for x in users]
            it = np.empty((n, k), dtype=object)
            it[:] = np.char.add("item-", items.astype(str)).astype(object)
            yield TopK(u, it, scores)
        else:
            yield TopK(users, items, scores)


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def bench_copy(url: str, n_users: int, k: int, batch_users: int, str_ids: bool = False) -> dict[str, float]:
    t = time.perf_counter()
    sink = open_sink(url, run_id="copy_str" if str_ids else "copy", keep_runs=5)
    opened = time.perf_counter() - t
    load = 0.0
    for batch in synthetic_batches(n_users, k, batch_users, str_ids=str_ids):
        t = time.perf_counter()  # the batch is generated outside the timing
        sink.write(batch)
        load += time.perf_counter() - t
    t = time.perf_counter()
    sink.publish()
    publish = time.perf_counter() - t
    total = opened + load + publish
    rows = sink.rows_written
    return {"rows": rows, "load_s": load, "publish_s": publish, "total_s": total,
            "load_rows_per_s": rows / load, "end_to_end_rows_per_s": rows / total}


def bench_insert(url: str, schema: str, n_rows: int, k: int, batch_users: int, chunk: int = 10_000) -> dict[str, float]:
    import psycopg

    from fmrec.store._base import normalize_batch

    plain = url.split("?")[0]
    n_users = -(-n_rows // k)
    with psycopg.connect(plain, application_name="fmrec-bench") as conn:
        cur = conn.cursor()
        cur.execute(f'CREATE TABLE "{schema}".insert_run (user_id bigint NOT NULL, rank integer NOT NULL, '
                    "item_id bigint NOT NULL, score real NOT NULL)")
        sql = f'INSERT INTO "{schema}".insert_run (user_id, rank, item_id, score) VALUES (%s, %s, %s, %s)'
        rows, load = 0, 0.0
        for batch in synthetic_batches(n_users, k, batch_users):
            t = time.perf_counter()  # timed like the sink: from the TopK batch to rows sent
            users, ranks, items, scores = normalize_batch(batch).long()
            data = list(zip(users.tolist(), ranks.tolist(), items.tolist(), scores.tolist()))
            for start in range(0, len(data), chunk):
                cur.executemany(sql, data[start:start + chunk])
            rows += len(data)
            load += time.perf_counter() - t
        t = time.perf_counter()
        conn.commit()
        total = load + time.perf_counter() - t
    return {"rows": rows, "load_s": load, "total_s": total, "load_rows_per_s": rows / load,
            "end_to_end_rows_per_s": rows / total}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=os.environ.get("FMREC_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--batch-users", type=int, default=10_000)
    ap.add_argument("--insert-rows", type=int, default=1_000_000,
                    help="rows timed with batched INSERT (default 1,000,000; 10 M takes minutes)")
    ap.add_argument("--str-rows", type=int, default=1_000_000, help="rows for the string-ID COPY reference (0: skip)")
    args = ap.parse_args()

    import psycopg

    schema = f"fmrec_bench_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(args.url.split("?")[0], autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        print(f"PostgreSQL not reachable at {args.url}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    server_version = admin.info.parameter_status("server_version")
    target = with_schema(args.url, schema)
    n_rows = args.users * args.k
    results = []
    try:
        copy = bench_copy(target, args.users, args.k, args.batch_users)
        results.append({"method": "COPY (PostgresSink, binary)", **copy})
        insert_rows = min(args.insert_rows, n_rows)
        ins = bench_insert(target, schema, insert_rows, args.k, args.batch_users)
        results.append({"method": "batched INSERT (executemany, 10k rows)", **ins})
        if args.str_rows:
            s = bench_copy(target, -(-min(args.str_rows, n_rows) // args.k), args.k, args.batch_users, str_ids=True)
            results.append({"method": "COPY, string IDs (write_row)", **s})
        size = admin.execute(
            "SELECT pg_size_pretty(pg_total_relation_size(%s::regclass))", (f'"{schema}".fmrec_run_copy',)
        ).fetchone()[0]
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()

    ratio = copy["load_rows_per_s"] / ins["load_rows_per_s"]
    ratio_e2e = copy["end_to_end_rows_per_s"] / ins["end_to_end_rows_per_s"]
    rows_out = [{"method": r["method"], "rows": f"{int(r['rows']):,}", "load s": r["load_s"],
                 "load rows/s": f"{r['load_rows_per_s']:,.0f}", "end-to-end s": r["total_s"],
                 "end-to-end rows/s": f"{r['end_to_end_rows_per_s']:,.0f}"} for r in results]
    print(f"top-{args.k} for {args.users:,} users = {n_rows:,} rows; run table with index: {size}")
    print(table(rows_out, ["method", "rows", "load s", "load rows/s", "end-to-end s", "end-to-end rows/s"]))
    if ins["rows"] < n_rows:
        print(f"batched INSERT was timed on the first {int(ins['rows']):,} rows (not all {n_rows:,}): "
              f"at its rate all {n_rows:,} rows would take ~{n_rows / ins['load_rows_per_s']:.0f} s")
    print(f"COPY / INSERT: {ratio:.1f}x on load rows/s, {ratio_e2e:.1f}x end to end "
          f"(target >= 5x: {'met' if ratio >= 5 else 'NOT met'})")
    path = write_json("publish_postgres", {
        "users": args.users, "k": args.k, "rows": n_rows, "batch_users": args.batch_users,
        "insert_rows_timed": ins["rows"], "table_size": size, "results": results,
        "copy_over_insert_load": ratio, "copy_over_insert_end_to_end": ratio_e2e, "target_met": ratio >= 5,
        "server": server_version,
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
