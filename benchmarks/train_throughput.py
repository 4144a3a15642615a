"""Training throughput (samples/s) of every solver, by thread count, on synthetic interactions.

10,000,000 synthetic interactions by default (100k users, 20k Zipf(1.3) items: the
top item holds a quarter of the rows, ratings 1-5), 64 factors, fmrec's defaults
otherwise.  For each solver: one warm-up epoch (numba compilation, caches), then
the fastest of the remaining epochs of a 3-epoch fit; ``samples/s`` = rows of the
training set / that epoch's seconds (for BPR / WARP: distinct positive (user, item)
pairs, every row counts as positive here; binary: rating >= 4).
Same data, same process, one after another:

* ``sgd``: AdaGrad per-sample SGD, regression and binary (rating >= 4), 1 and all threads;
* ``als``: alternating least squares (regression), 1 and all threads;
* ``mcmc``: Gibbs sampling (regression), one thread (the chain is sequential);
* ``bpr`` / ``warp``: ranking with sampled negatives, 1 and all threads.

    .venv/bin/python benchmarks/train_throughput.py [--rows 10000000] [--solvers sgd,als,mcmc,bpr,warp]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import table, write_json

CONFIGS = {
    "sgd": [{"task": "regression"}, {"task": "binary"}],
    "als": [{"task": "regression", "solver": "als"}],
    "mcmc": [{"task": "regression", "solver": "mcmc"}],
    "bpr": [{"task": "ranking", "loss": "bpr"}],
    "warp": [{"task": "ranking", "loss": "warp"}],
}


def main() -> None:
    from fmrec._threads import available_cores
    from fmrec.data import IdMap, Interactions
    from fmrec.model import FactorizationMachine

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--solvers", default="sgd,als,mcmc,bpr,warp")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n_users, n_items = 100_000, 20_000
    u = rng.integers(0, n_users, args.rows)
    i = np.minimum(rng.zipf(1.3, args.rows) - 1, n_items - 1)
    r = rng.integers(1, 6, args.rows).astype(np.float32)
    data = Interactions(u, i, r, IdMap(np.arange(n_users)), IdMap(np.arange(n_items)))
    rows = []
    for solver in args.solvers.split(","):
        for cfg in CONFIGS[solver]:
            threads = [1] if solver == "mcmc" else sorted({1, available_cores()})
            for nt in threads:
                t0 = time.perf_counter()
                fm = FactorizationMachine(n_factors=args.factors, n_epochs=3, n_threads=nt, random_state=0,
                                          **cfg).fit(data)
                total = time.perf_counter() - t0
                best = min(h["seconds"] for h in fm.history_[1:])
                # ranking epochs visit each distinct positive (user, item) pair once
                samples = fm.train_pattern_.nnz if cfg["task"] == "ranking" else args.rows
                rows.append({"solver": solver, "task": cfg["task"], "threads": nt, "samples": samples,
                             "epoch_seconds": best, "samples_per_s": samples / best, "fit_seconds_3_epochs": total})
                print(f"  {solver} {cfg['task']} {nt} thread(s): {samples / best / 1e6:.2f} M samples/s "
                      f"(epoch {best:.2f} s)", flush=True)
    for r_ in rows:
        one = next(x for x in rows if x["solver"] == r_["solver"] and x["task"] == r_["task"] and x["threads"] == 1)
        r_["speed-up vs 1 thread"] = r_["samples_per_s"] / one["samples_per_s"]
    print(f"{args.rows:,} interactions ({n_users:,} users x {n_items:,} items), {args.factors} factors")
    print(table(rows, ["solver", "task", "threads", "samples", "epoch_seconds", "samples_per_s", "speed-up vs 1 thread",
                       "fit_seconds_3_epochs"]))
    print(f"wrote {write_json('train_throughput', {'rows': rows, 'n_rows': args.rows, 'factors': args.factors})}")


if __name__ == "__main__":
    main()
