"""SGD training throughput (samples/s) of the numba FM kernel, by thread count.

Synthetic one-hot data (users x items, Zipf-like items), squared and logistic loss,
64 factors; one warm-up epoch, then the best of 3 epochs.  Same run, same data.

    .venv/bin/python benchmarks/train_throughput.py [--rows 2000000]
"""

from __future__ import annotations

import argparse

import numpy as np

from _common import table, write_json


def main() -> None:
    from fmrec._threads import available_cores
    from fmrec.data import IdMap, Interactions
    from fmrec.model import FactorizationMachine

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--factors", type=int, default=64)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n_users, n_items = 100_000, 20_000
    u = rng.integers(0, n_users, args.rows)
    i = np.minimum(rng.zipf(1.3, args.rows) - 1, n_items - 1)
    r = rng.integers(1, 6, args.rows).astype(np.float32)
    data = Interactions(u, i, r, IdMap(np.arange(n_users)), IdMap(np.arange(n_items)))
    rows = []
    threads = sorted({1, available_cores()})
    for task in ("regression", "binary"):
        for nt in threads:
            best = np.inf
            for _ in range(2):
                fm = FactorizationMachine(task=task, n_factors=args.factors, n_epochs=3, n_threads=nt,
                                          random_state=0)
                fm.fit(data)
                best = min(best, min(h["seconds"] for h in fm.history_[1:]))
            rows.append({"task": task, "threads": nt, "epoch_seconds": best, "samples_per_s": args.rows / best})
    for r_ in rows:
        one = next(x for x in rows if x["task"] == r_["task"] and x["threads"] == 1)
        r_["speed-up vs 1 thread"] = r_["samples_per_s"] / one["samples_per_s"]
    print(f"{args.rows:,} one-hot rows, {args.factors} factors, AdaGrad per-sample SGD")
    print(table(rows, ["task", "threads", "epoch_seconds", "samples_per_s", "speed-up vs 1 thread"]))
    print(f"wrote {write_json('train_throughput', {'rows': rows, 'n_rows': args.rows, 'factors': args.factors})}")


if __name__ == "__main__":
    main()
