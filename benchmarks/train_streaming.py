"""Streaming (out-of-core) training from Parquet: wall time, samples/s and peak RSS.

Writes a synthetic Parquet file of ``--rows`` rows (default 50,000,000; ~1M users,
~100k Zipf-popular items, ratings 1-5 from a planted bias model plus noise) in row
groups of 1M rows without ever holding more than one row group, then trains in
separate child processes, one at a time, so each peak RSS is that run's alone:

* ``stream``: ``FactorizationMachine.fit_parquet`` on the big file (regression,
  ``--factors`` factors, ``--epochs`` epochs, 1 thread, every row kept);
* ``stream-small`` and ``in-memory``: the same fit streamed and in memory
  (``read_interactions`` + ``fit``) on a ``--memory-rows`` file (default 5M) for
  a samples/s comparison on the same data.

Each child reports its own peak RSS (``VmHWM`` from ``/proc/self/status``, the
same as ``getrusage(RUSAGE_SELF).ru_maxrss``) at exit.  Results go to
``benchmarks/results/train_streaming.json``; the data files are deleted at the
end (``--keep`` keeps them).

    .venv/bin/python benchmarks/train_streaming.py [--rows 50000000] [--tmp /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import REPO, table, write_json

TARGET_RSS_GB = 3.0
BYTES_PER_ROW = 11  # measured on disk for this generator (snappy), with margin below


# ----------------------------------------------------------------------------- data
def write_synthetic(path: Path, n_rows: int, *, n_users: int, n_items: int, row_group: int, seed: int = 0) -> float:
    """Write the synthetic interactions row group by row group; returns seconds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    user_bias = rng.normal(0, 0.6, n_users)
    item_bias = rng.normal(0, 0.6, n_items)
    user_ids = (np.arange(n_users, dtype=np.int64) * 2654435761) % (1 << 40)  # scrambled, unique
    item_ids = rng.permutation(n_items).astype(np.int64) + 1
    cdf = np.cumsum(1.0 / np.arange(1, n_items + 1) ** 1.0)  # Zipf(1) popularity
    cdf /= cdf[-1]
    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("rating", pa.float32())])
    with pq.ParquetWriter(path, schema, compression="snappy") as writer:
        done = 0
        g = 0
        while done < n_rows:
            n = min(row_group, n_rows - done)
            r = np.random.default_rng([seed, g])  # row group g's rows do not depend on n_rows
            u = r.integers(0, n_users, n)
            i = np.minimum(np.searchsorted(cdf, r.random(n)), n_items - 1)
            rating = np.clip(np.rint(3.5 + user_bias[u] + item_bias[i] + r.normal(0, 0.8, n)), 1, 5)
            writer.write_table(pa.table({"user_id": user_ids[u], "item_id": item_ids[i],
                                         "rating": rating.astype(np.float32)}, schema=schema),
                               row_group_size=row_group)
            done += n
            g += 1
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- child runs
def peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(mode: str, path: str, factors: int, epochs: int, batch_rows: int, threads: int) -> None:
    from fmrec.data import read_interactions
    from fmrec.model import FactorizationMachine, save_model

    fm = FactorizationMachine(task="regression", n_factors=factors, n_epochs=epochs, n_threads=threads,
                              random_state=0)
    out: dict[str, Any] = {"mode": mode, "rss_start": peak_rss_bytes()}
    t0 = time.perf_counter()
    if mode == "in-memory":
        data = read_interactions(path, duplicates="keep")
        out["read_seconds"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        fm.fit(data)
        out["fit_seconds"] = time.perf_counter() - t1
        out["rows"] = len(data)
        out["n_users"], out["n_items"] = data.n_users, data.n_items
        seen = data.to_csr(binary=True)
    else:
        fm.fit_parquet(path, batch_rows=batch_rows, duplicates="keep")
        info = fm.stream_info_
        out["fit_seconds"] = time.perf_counter() - t0
        out["rows"] = info["n_rows"]
        out["n_users"], out["n_items"] = info["n_users"], info["n_items"]
        out["pass1_seconds"], out["pass2_seconds"] = info["pass1_seconds"], info["pass2_seconds"]
        out["seen_pairs"] = info["seen_pairs"]
        seen = fm.seen_
    out["total_seconds"] = time.perf_counter() - t0
    out["epoch_seconds"] = [h["seconds"] for h in fm.history_]
    out["train_rmse"] = fm.history_[-1]["train_loss"]
    out["samples_per_s"] = out["rows"] / min(out["epoch_seconds"])
    with tempfile.TemporaryDirectory(dir=Path(path).parent) as tmp:
        t2 = time.perf_counter()
        save_model(fm, Path(tmp) / "model", seen=seen)
        out["save_seconds"] = time.perf_counter() - t2
    out["peak_rss"] = peak_rss_bytes()
    print("RESULT " + json.dumps(out))


def run_child(mode: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--child-path", str(path), "--factors", str(args.factors),
           "--epochs", str(args.epochs), "--batch-rows", str(args.batch_rows), "--threads", str(args.threads)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO / "benchmarks")
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{mode} run failed:\n{proc.stderr[-4000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    res = json.loads(line[len("RESULT "):])
    res["process_wall_seconds"] = wall
    res["children_maxrss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # max so far
    return res


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000_000)
    ap.add_argument("--memory-rows", type=int, default=5_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--row-group", type=int, default=1_000_000)
    ap.add_argument("--batch-rows", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="folder for the data files")
    ap.add_argument("--keep", action="store_true", help="keep the data files")
    ap.add_argument("--label", default="", help="note stored with the results (e.g. 'extrapolated')")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-path", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.child_path, args.factors, args.epochs, args.batch_rows, args.threads)
        return

    need = (args.rows + args.memory_rows) * BYTES_PER_ROW * 2
    free = shutil.disk_usage(args.tmp).free
    print(f"disk: {free / 2**30:.1f} GiB free in {args.tmp}, need about {need / 2**30:.1f} GiB")
    if free < need:
        sys.exit(f"not enough free disk space in {args.tmp}")
    folder = Path(tempfile.mkdtemp(prefix="fmrec-stream-bench-", dir=args.tmp))
    big, small = folder / "big.parquet", folder / "small.parquet"
    rows: list[dict[str, Any]] = []
    try:
        gen_big = write_synthetic(big, args.rows, n_users=args.users, n_items=args.items, row_group=args.row_group)
        gen_small = write_synthetic(small, args.memory_rows, n_users=args.users, n_items=args.items,
                                    row_group=args.row_group)
        print(f"wrote {args.rows:,} rows ({big.stat().st_size / 2**20:.0f} MiB) in {gen_big:.1f}s and "
              f"{args.memory_rows:,} rows ({small.stat().st_size / 2**20:.0f} MiB) in {gen_small:.1f}s")
        for mode, path in (("in-memory", small), ("stream-small", small), ("stream", big)):
            res = run_child(mode.replace("stream-small", "stream"), path, args)
            res["mode"] = mode
            res["file_mib"] = path.stat().st_size / 2**20
            rows.append(res)
            print(f"  {mode}: {res['rows']:,} rows, {res['total_seconds']:.1f}s, "
                  f"peak RSS {res['peak_rss'] / 2**30:.2f} GiB", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    for r in rows:
        r["peak_rss_gib"] = r["peak_rss"] / 2**30
        r["epoch_s"] = min(r["epoch_seconds"])
        r["passes_s"] = r.get("pass1_seconds", 0.0) + r.get("pass2_seconds", 0.0)
        r["under_3gb"] = "yes" if r["peak_rss"] < TARGET_RSS_GB * 2**30 else "NO"
    print(f"\nregression FM, {args.factors} factors, {args.epochs} epoch(s), {args.threads} thread(s), "
          f"batch_rows {args.batch_rows:,}; ~{args.users:,} users, ~{args.items:,} Zipf items")
    print(table(rows, ["mode", "rows", "n_users", "n_items", "passes_s", "epoch_s", "samples_per_s",
                       "total_seconds", "train_rmse", "peak_rss_gib", "under_3gb"]))
    payload = {"rows_big": args.rows, "rows_small": args.memory_rows, "factors": args.factors,
               "epochs": args.epochs, "threads": args.threads, "batch_rows": args.batch_rows,
               "row_group": args.row_group, "users": args.users, "items": args.items,
               "generate_seconds": {"big": gen_big, "small": gen_small}, "target_rss_gib": TARGET_RSS_GB,
               "label": args.label, "runs": rows}
    print(f"wrote {write_json('train_streaming', payload)}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
