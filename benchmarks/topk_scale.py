"""Top-100 for every user at scale: GEMM rate, ExactIndex, faiss Flat / IVF / HNSW, and the CLI.

For each size (users x items, 64 factors -> 65 dims: users [p, 1], items [q, b] with a
popularity-like bias b, ~50 seen items per user), in the same run:

* ``gemm``: float32 matmul alone over ExactIndex's blocks and threads (no selection),
  and numpy's multi-threaded matmul over 4096-user blocks; the faster is the rate
  reference every row's "fraction of GEMM" divides by.
* ``exact``: ExactIndex top-100 with the seen items masked.
* ``exact (before)``: the pre-fusion implementation (one multi-threaded GEMM into a
  64 MiB block, then the parallel numba merge; pools alternate) -- same run.
* ``faiss IndexFlatIP``: ``index.search(U, 100)`` alone (no masking), in a subprocess
  with ``OPENBLAS_CORETYPE=SkylakeX`` set before faiss loads (at the first size also
  without it, to record whether it matters); and fmrec's ``FaissIndex("Flat")`` with
  masking (over-fetch + filter).
* ``IVF`` / ``HNSW``: built (trained on a sample), ``nprobe``/``efSearch`` tuned to
  recall@100 >= 0.95 on 1,000 users, then all users searched with masking; build and
  tuning seconds reported beside the search.
* ``cli``: ``fmrec recommend --vectors v.npz --k 100 --include-seen --out x.parquet``
  as a fresh process, end to end (start-up, loading, scoring, Parquet), and the same
  without ``--include-seen`` (seen items masked) -- at every size.
* ``cli rounds`` (the headline CLI ratios): ``--repeat`` rounds, each running the CLI
  (``--include-seen``), the GEMM-alone worker and the faiss ``IndexFlatIP`` search-alone
  worker back to back as fresh processes, order rotating per round, so the three see the
  same machine load; the ratios are per round (median reported).  ``--compare-src DIR``
  adds the CLI run from another fmrec source tree (e.g. a worktree of the previous commit)
  to every round.

Every faiss row runs with ``OMP_WAIT_POLICY=PASSIVE`` (fmrec's own default for faiss;
spinning OpenMP threads lose badly on a shared machine), and ``OPENBLAS_CORETYPE=SkylakeX``
only on a CPU with AVX-512 (on an AVX2-only CPU that kernel dies with an illegal
instruction).  ``--only`` runs a subset
of the row groups (paired, gemm, exact, before, faiss, ann, cli, rounds).

Every measurement runs in its own subprocess, so peak RSS (``VmHWM``) is per row;
recall@100 is measured against ExactIndex on 2,000 random users (seen items excluded
on both sides).  GFLOP/s counts 2 * users * items * dims for every row, so rows are
comparable as rates.

    .venv/bin/python benchmarks/topk_scale.py                 # 100k x 20k and 200k x 60k
    .venv/bin/python benchmarks/topk_scale.py --big           # + 1M x 100k
    .venv/bin/python benchmarks/topk_scale.py --sizes 20000x5000 --quick   # smoke run
    .venv/bin/python benchmarks/topk_scale.py --only paired,gemm,exact,cli,rounds --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import table, write_json  # noqa: E402

K = 100
SEEN = 50
FACTORS = 64


# ----------------------------------------------------------------------------- data
def fm_like(n_users: int, n_items: int, factors: int = FACTORS, seed: int = 0, topics: int = 50,
            chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """FM-like exact-MIPS vectors: users [p, 1], items [q, b].

    p and q scatter around 50 shared "topics" (interaction term std ~1 across
    pairs); b is a popularity bias (standardised -log rank, std ~1, plus noise), so
    items differ in norm like a trained FM's.
    """
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(topics, factors)).astype(np.float32)
    scale = np.float32(0.9 / np.sqrt(np.sqrt(factors)))
    items = np.empty((n_items, factors + 1), np.float32)
    ti = rng.integers(0, topics, n_items)
    items[:, :-1] = (0.8 * C[ti] + 0.6 * rng.normal(size=(n_items, factors)).astype(np.float32)) * scale
    b = -np.log(rng.permutation(n_items) + 1.0)
    items[:, -1] = (b - b.mean()) / b.std() + 0.3 * rng.normal(size=n_items)
    users = np.empty((n_users, factors + 1), np.float32)
    for s in range(0, n_users, chunk):
        e = min(n_users, s + chunk)
        tu = rng.integers(0, topics, e - s)
        users[s:e, :-1] = (0.8 * C[tu] + 0.6 * rng.normal(size=(e - s, factors)).astype(np.float32)) * scale
    users[:, -1] = 1.0
    return users, items


def seen_pattern(n_users: int, n_items: int, per_user: int = SEEN, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """~per_user distinct items per user, skewed towards popular (low position) items; CSR arrays."""
    rng = np.random.default_rng(seed)
    indptr = np.zeros(n_users + 1, np.int64)
    parts = []
    for s in range(0, n_users, 100_000):
        e = min(n_users, s + 100_000)
        cols = np.minimum((rng.pareto(1.2, size=(e - s, per_user)) * n_items / 20).astype(np.int64), n_items - 1)
        cols.sort(axis=1)
        keep = np.ones_like(cols, dtype=bool)
        keep[:, 1:] = cols[:, 1:] != cols[:, :-1]
        parts.append(cols[keep].astype(np.int32))
        indptr[s + 1:e + 1] = np.cumsum(keep.sum(axis=1)) + indptr[s]
    return indptr, np.concatenate(parts)


# ----------------------------------------------------------------------------- worker side
def vm_hwm_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load(folder: Path) -> tuple[np.ndarray, np.ndarray, Any]:
    import scipy.sparse as sp

    U = np.load(folder / "users.npy")
    V = np.load(folder / "items.npy")
    seen = sp.csr_matrix((np.ones(len(np.load(folder / "seen_indices.npy")), np.float32),
                          np.load(folder / "seen_indices.npy"), np.load(folder / "seen_indptr.npy")),
                         shape=(U.shape[0], V.shape[0]))
    return U, V, seen


def eval_sample(n_users: int, size: int = 2000, seed: int = 7) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n_users, min(size, n_users), replace=False))


def recall_vs_exact(ids: np.ndarray, U: np.ndarray, V: np.ndarray, seen: Any, rows: np.ndarray) -> float:
    from fmrec.index import ExactIndex

    truth, _ = ExactIndex().build(V).search(U[rows], K, seen[rows])
    hits = sum(len(set(a[a >= 0].tolist()) & set(b[b >= 0].tolist())) for a, b in zip(ids[rows], truth))
    return hits / max(1, int((truth >= 0).sum()))


def consume(index: Any, U: np.ndarray, seen: Any) -> tuple[float, np.ndarray]:
    """Search every user (streaming batches as recommend_all does); keep the ids for recall."""
    ids = np.empty((U.shape[0], K), np.int64)
    t = time.perf_counter()
    for start, i, _ in index.search_batches(U, K, seen, batch_size=8192):
        ids[start:start + i.shape[0]] = i
    return time.perf_counter() - t, ids


class LegacyExactIndex:
    """The ExactIndex before this change, for the before/after row: one multi-threaded
    BLAS GEMM into a scratch block of up to 64 MiB, then the parallel numba merge
    (``_kernels.topk_update`` / ``heaps_to_sorted``); the two pools alternate."""

    def __init__(self, max_block_bytes: int = 64 << 20) -> None:
        self.max_block_bytes = max_block_bytes

    def build(self, items: np.ndarray) -> "LegacyExactIndex":
        self.items_ = np.ascontiguousarray(items, np.float32)
        return self

    def search_batches(self, U: np.ndarray, k: int, exclude: Any, batch_size: int = 8192) -> Any:
        from fmrec.index import _kernels as Kn

        n_items = self.items_.shape[0]
        bi = min(n_items, 32768)
        bu = max(16, min(8192, self.max_block_bytes // (4 * bi)))
        indptr = exclude.indptr.astype(np.int64)
        indices = exclude.indices.astype(np.int32)
        scratch = np.empty((bu, bi), np.float32)
        for start in range(0, U.shape[0], bu):
            stop = min(U.shape[0], start + bu)
            hs = np.full((stop - start, k), -np.inf, np.float32)
            hi = np.full((stop - start, k), -1, np.int64)
            for j0 in range(0, n_items, bi):
                j1 = min(n_items, j0 + bi)
                S = scratch[:stop - start, :j1 - j0]
                np.matmul(U[start:stop], self.items_[j0:j1].T, out=S)
                Kn.topk_update(S, j0, start, indptr, indices, hs, hi)
            Kn.heaps_to_sorted(hs, hi)
            yield start, hi, hs


def worker(method: str, folder: Path, options: dict[str, Any]) -> dict[str, Any]:
    U, V, seen = load(folder)
    n_users, n_items, d = U.shape[0], V.shape[0], U.shape[1]
    out: dict[str, Any] = {}
    if method == "gemm":
        from concurrent.futures import ThreadPoolExecutor

        from fmrec._threads import available_cores, blas_limit
        from fmrec.index import ExactIndex

        bu, bi = ExactIndex().build(V)._blocks()
        bi = min(bi, n_items)
        n_threads = available_cores()
        blocks = [np.ascontiguousarray(V[j:j + bi].T) for j in range(0, n_items, bi)]  # as ExactIndex lays them out

        def part(p: int) -> None:
            S = np.empty((bu, bi), np.float32)
            for s in range(p * bu, n_users, n_threads * bu):
                e = min(n_users, s + bu)
                for B in blocks:
                    np.matmul(U[s:e], B, out=S[:e - s, :B.shape[1]])

        with blas_limit(1), ThreadPoolExecutor(n_threads) as pool:
            list(pool.map(lambda p: np.matmul(U[:bu], blocks[0], out=np.empty((bu, blocks[0].shape[1]),
                                                                                np.float32)), range(n_threads)))
            part_t, part_c = time.perf_counter(), time.process_time()
            list(pool.map(part, range(n_threads)))
            out["fused_blocks_s"] = time.perf_counter() - part_t
            out["cpu_s"] = time.process_time() - part_c
        out["blocks"] = [bu, bi]
        out["threads"] = n_threads
        if options.get("fused_only"):
            out["seconds"] = out["fused_blocks_s"]
        else:
            S = np.empty((4096, n_items), np.float32)
            t = time.perf_counter()
            for s in range(0, n_users, 4096):
                e = min(n_users, s + 4096)
                np.matmul(U[s:e], V.T, out=S[:e - s])
            out["numpy_4096_s"] = time.perf_counter() - t
            out["seconds"] = min(out["fused_blocks_s"], out["numpy_4096_s"])
    elif method == "paired":
        # GEMM, ExactIndex and faiss IndexFlatIP on the same user chunks, interleaved (the order
        # rotates per chunk), so all three see the same machine load: the ratios are paired.
        from concurrent.futures import ThreadPoolExecutor

        import faiss

        from fmrec._threads import available_cores, blas_limit
        from fmrec.index import ExactIndex

        n_threads = available_cores()
        faiss.omp_set_num_threads(n_threads)
        flat = faiss.IndexFlatIP(d)
        flat.add(V)
        exact = ExactIndex().build(V)
        bu, bi = exact._blocks()
        bi = min(bi, n_items)
        blocks = [np.ascontiguousarray(V[j:j + bi].T) for j in range(0, n_items, bi)]

        def gemm_chunk(Uc: np.ndarray) -> None:
            def part(p: int) -> None:
                S = np.empty((bu, bi), np.float32)
                for s0 in range(p * bu, Uc.shape[0], n_threads * bu):
                    e0 = min(Uc.shape[0], s0 + bu)
                    for B in blocks:
                        np.matmul(Uc[s0:e0], B, out=S[:e0 - s0, :B.shape[1]])

            with blas_limit(1), ThreadPoolExecutor(n_threads) as pool:
                list(pool.map(part, range(n_threads)))

        def exact_chunk(Uc: np.ndarray, Sc: Any) -> None:
            for _ in exact.search_batches(Uc, K, Sc, batch_size=8192):
                pass

        def flat_chunk(Uc: np.ndarray) -> None:
            for s0 in range(0, Uc.shape[0], 16384):
                flat.search(Uc[s0:s0 + 16384], K)

        warm = slice(0, min(2000, n_users))
        gemm_chunk(U[warm]), exact_chunk(U[warm], seen[warm]), flat_chunk(U[warm])
        n_chunks = int(options.get("chunks", 5))
        edges = np.linspace(0, n_users, n_chunks + 1).astype(int)
        totals = {"gemm": 0.0, "exact": 0.0, "flat": 0.0}
        per_chunk = []
        for c in range(n_chunks):
            a, b = edges[c], edges[c + 1]
            Uc, Sc = U[a:b], seen[a:b]
            jobs = [("gemm", lambda: gemm_chunk(Uc)), ("exact", lambda: exact_chunk(Uc, Sc)),
                    ("flat", lambda: flat_chunk(Uc))]
            jobs = jobs[c % 3:] + jobs[:c % 3]
            row = {}
            for name, fn in jobs:
                t = time.perf_counter()
                fn()
                row[name] = time.perf_counter() - t
                totals[name] += row[name]
            per_chunk.append(row)
        out.update({f"{k}_s": v for k, v in totals.items()})
        out["per_chunk"] = per_chunk
        out["seconds"] = totals["exact"]
        out["blocks"] = [bu, bi]
    elif method in ("exact", "exact_before"):
        from fmrec.index import ExactIndex

        idx = ExactIndex().build(V) if method == "exact" else LegacyExactIndex().build(V)
        idx_small = U[:2000]
        list(idx.search_batches(idx_small, K, seen[:2000]))  # numba cache load / warm-up, not timed
        out["seconds"], ids = consume(idx, U, seen)
        if method == "exact":
            out["blocks"] = list(idx._blocks())
        rows = eval_sample(n_users)
        out["recall"] = recall_vs_exact(ids, U, V, seen, rows)
    elif method == "faiss_flat":
        import faiss

        from fmrec._threads import available_cores

        faiss.omp_set_num_threads(available_cores())
        index = faiss.IndexFlatIP(d)
        index.add(V)
        index.search(U[:256], K)  # warm-up
        t, c = time.perf_counter(), time.process_time()
        ids = np.empty((n_users, K), np.int64)
        for s in range(0, n_users, 16384):
            e = min(n_users, s + 16384)
            ids[s:e] = index.search(U[s:e], K)[1]
        out["seconds"] = time.perf_counter() - t
        out["cpu_s"] = time.process_time() - c
        out["env_OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY")
        from threadpoolctl import threadpool_info

        out["faiss_blas"] = [i.get("architecture") for i in threadpool_info() if i.get("prefix") == "libopenblas"]
        out["env_OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    elif method == "fmrec_flat":
        from fmrec.index import FaissIndex

        idx = FaissIndex("Flat").build(V)
        list(idx.search_batches(U[:2000], K, seen[:2000]))
        out["seconds"], ids = consume(idx, U, seen)
        out["recall"] = recall_vs_exact(ids, U, V, seen, eval_sample(n_users))
    elif method in ("ivf", "hnsw"):
        from fmrec.index import FaissIndex

        spec = options["spec"]
        idx = FaissIndex(spec)
        t = time.perf_counter()
        idx.build(V)
        out["build_s"] = time.perf_counter() - t
        t = time.perf_counter()
        tuned = idx.tune(U, K, options.get("target", 0.95), exclude=seen, n_users=1000, random_state=3)
        out["tune_s"] = time.perf_counter() - t
        out["tuned"] = {"parameter": tuned.parameter, "value": tuned.value, "recall_on_tuning_sample": tuned.recall,
                        "history": tuned.history}
        out["spec"] = spec
        out["seconds"], ids = consume(idx, U, seen)
        out["recall"] = recall_vs_exact(ids, U, V, seen, eval_sample(n_users))
        out["fallback"] = dict(idx.stats_)
    out["peak_rss_mb"] = vm_hwm_mb()
    return out


# ----------------------------------------------------------------------------- driver side
REPEAT = 1


def best_of(fn: Any) -> dict[str, Any]:
    """Run ``fn`` REPEAT times; keep the fastest result, with every wall time and load average seen."""
    runs = []
    for _ in range(REPEAT):
        load_before = os.getloadavg()[0]
        res = fn()
        res["load_avg_1min_before"] = load_before
        runs.append(res)
    best = min(runs, key=lambda r: r["seconds"])
    best["all_seconds"] = [r["seconds"] for r in runs]
    best["load_avg"] = [r["load_avg_1min_before"] for r in runs]
    return best


def run_worker(method: str, folder: Path, options: dict[str, Any] | None = None,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    return best_of(lambda: _run_worker(method, folder, options, env))


def _run_worker(method: str, folder: Path, options: dict[str, Any] | None = None,
                env: dict[str, str] | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--data", str(folder),
           "--options", json.dumps(options or {})]
    full_env = dict(os.environ)
    full_env.pop("OPENBLAS_CORETYPE", None)
    full_env.update(env or {})
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env)
    if proc.returncode != 0:
        raise SystemExit(f"worker {method} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t
    return result


def run_cli(folder: Path, include_seen: bool) -> dict[str, Any]:
    return best_of(lambda: _run_cli(folder, include_seen))


def faiss_env() -> dict[str, str]:
    """Environment of the faiss rows: ``OMP_WAIT_POLICY=PASSIVE`` (as fmrec's own
    ``import_faiss`` sets it: on a machine shared with other jobs spinning OpenMP threads
    made faiss's flat search 1.7x slower, 16.5 s against 9.6 s at 100k x 20k), and
    ``OPENBLAS_CORETYPE=SkylakeX`` where the CPU has AVX-512 (that kernel dies with
    SIGILL on an AVX2-only CPU)."""
    env = {"OMP_WAIT_POLICY": "PASSIVE"}
    from fmrec._threads import cpu_has_avx512

    if cpu_has_avx512():
        env["OPENBLAS_CORETYPE"] = "SkylakeX"
    return env


def _run_cli(folder: Path, include_seen: bool, src: str | None = None) -> dict[str, Any]:
    """The whole command in a fresh process; peak RSS of that process from wait4.

    ``src``: run fmrec from this source tree (PYTHONPATH) instead of the installed one."""
    out = folder / "x.parquet"
    if src is None:
        argv = [str(Path(sys.executable).with_name("fmrec"))]
    else:
        argv = [sys.executable, "-c", "import sys; import fmrec.cli.main as m; sys.exit(getattr(m, 'console_main', m.main)())"]
    argv += ["-q", "recommend", "--vectors", str(folder / "v.npz"), "--k", str(K), "--out", str(out)]
    if include_seen:
        argv.append("--include-seen")
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    if src is not None:
        env["PYTHONPATH"] = str(Path(src).resolve())
    t = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"fmrec recommend failed: {stderr[-2000:]}")
    rows = 0
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(out).metadata.num_rows
    out.unlink()
    return {"seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "rows": rows,
            "cpu_s": usage.ru_utime + usage.ru_stime, "argv": " ".join(argv[1:]), "src": src}


def cli_rounds(folder: Path, rounds: int, compare_src: str | None = None) -> dict[str, Any]:
    """The CLI end to end next to GEMM alone and faiss IndexFlatIP search alone, same load.

    Each round runs every contender once, back to back, as a fresh process; the order
    rotates per round.  GEMM and faiss report their compute alone (no start-up, no
    loading); the CLI is its whole wall time.  Ratios are taken within a round.  CPU
    seconds are recorded too (the CLI's whole process; GEMM's and faiss's compute, faiss
    with ``OMP_WAIT_POLICY=PASSIVE`` so idle threads do not spin): on a machine shared
    with other jobs the CPU ratio is the steadier measure of the work each one does.
    """
    jobs: list[tuple[str, Any]] = [
        ("cli", lambda: _run_cli(folder, True)),
        ("gemm", lambda: _run_worker("gemm", folder, {"fused_only": True})),
        ("flat", lambda: _run_worker("faiss_flat", folder, env=faiss_env())),
    ]
    if compare_src:
        jobs.append(("cli_compare", lambda: _run_cli(folder, True, compare_src)))
    per_round: list[dict[str, Any]] = []
    for r in range(rounds):
        order = jobs[r % len(jobs):] + jobs[:r % len(jobs)]
        row: dict[str, Any] = {"load_avg_1min_before": os.getloadavg()[0]}
        for name, fn in order:
            res = fn()
            row[name] = res["seconds"]
            row[f"{name}_cpu_s"] = res["cpu_s"]
            if name.startswith("cli"):
                row[f"{name}_peak_rss_mb"] = res["peak_rss_mb"]
        row["cli_vs_flat"] = row["flat"] / row["cli"]
        row["cli_gemm_fraction"] = row["gemm"] / row["cli"]
        row["cpu_cli_vs_flat"] = row["flat_cpu_s"] / row["cli_cpu_s"]
        row["cpu_cli_gemm_fraction"] = row["gemm_cpu_s"] / row["cli_cpu_s"]
        if compare_src:
            row["compare_vs_flat"] = row["flat"] / row["cli_compare"]
            row["compare_gemm_fraction"] = row["gemm"] / row["cli_compare"]
            row["cpu_compare_vs_flat"] = row["flat_cpu_s"] / row["cli_compare_cpu_s"]
            row["cpu_compare_gemm_fraction"] = row["gemm_cpu_s"] / row["cli_compare_cpu_s"]
        per_round.append(row)
        print(f"    round {r + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    med = {k: float(np.median([row[k] for row in per_round])) for k in per_round[0]}
    best = {k: float(min(row[k] for row in per_round))
            for k in ("cli", "gemm", "flat", "cli_compare",
                      "cli_cpu_s", "gemm_cpu_s", "flat_cpu_s", "cli_compare_cpu_s")
            if k in per_round[0]}
    return {"rounds": per_round, "median": med, "best": best}


def prepare(folder: Path, n_users: int, n_items: int, with_npz: bool) -> None:
    from fmrec.vectors import VectorSet, save_vectors

    U, V = fm_like(n_users, n_items)
    indptr, indices = seen_pattern(n_users, n_items)
    np.save(folder / "users.npy", U)
    np.save(folder / "items.npy", V)
    np.save(folder / "seen_indptr.npy", indptr)
    np.save(folder / "seen_indices.npy", indices)
    if with_npz:
        import scipy.sparse as sp

        seen = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(n_users, n_items))
        save_vectors(folder / "v.npz", VectorSet(np.arange(n_users, dtype=np.int64), U,
                                                 np.arange(n_items, dtype=np.int64), V, None, seen))


def ann_specs(n_items: int) -> list[tuple[str, str]]:
    nlist = int(2 ** round(np.log2(4 * np.sqrt(n_items))))
    return [("ivf", f"IVF{nlist},Flat"), ("hnsw", "HNSW32")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000x20000,200000x60000", help="USERSxITEMS,... (65 dims)")
    ap.add_argument("--big", action="store_true", help="add 1000000x100000")
    ap.add_argument("--quick", action="store_true", help="skip the slow comparison rows (before, faiss no-env)")
    ap.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI rows")
    ap.add_argument("--skip-flat-at-big", action="store_true", help="no faiss IndexFlatIP row at 1M x 100k")
    ap.add_argument("--repeat", type=int, default=2,
                    help="run every row this many times in a row and keep the fastest (default 2; "
                         "the development machine is shared, so single runs are noisy)")
    ap.add_argument("--out", default="topk_scale", help="results/<name>.json")
    ap.add_argument("--only", default="paired,gemm,exact,before,faiss,ann,cli,rounds",
                    help="row groups to run (comma list of paired, gemm, exact, before, faiss, ann, cli, rounds)")
    ap.add_argument("--compare-src", metavar="DIR", default=None,
                    help="also time the CLI from this fmrec source tree (e.g. a worktree of the previous "
                         "commit's src/) in every CLI round")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.data), json.loads(args.options)), default=float))
        return

    global REPEAT
    REPEAT = max(1, args.repeat)
    sizes = [tuple(int(x) for x in s.lower().split("x")) for s in args.sizes.split(",") if s]
    if args.big:
        sizes.append((1_000_000, 100_000))
    rows: list[dict[str, Any]] = []
    details: list[dict[str, Any]] = []
    verdicts: list[str] = []
    started = time.perf_counter()
    only = {g.strip() for g in args.only.split(",") if g.strip()}
    unknown = only - {"paired", "gemm", "exact", "before", "faiss", "ann", "cli", "rounds"}
    if unknown:
        ap.error(f"unknown row group(s) in --only: {', '.join(sorted(unknown))}")
    fenv = faiss_env()
    fnote = ("OPENBLAS_CORETYPE=SkylakeX" if "OPENBLAS_CORETYPE" in fenv else "OPENBLAS_CORETYPE unset (no AVX-512)") \
        + ", OMP_WAIT_POLICY=PASSIVE"
    for n, (n_users, n_items) in enumerate(sizes):
        big = n_users >= 1_000_000
        tmp = Path(tempfile.mkdtemp(prefix="topk_scale_"))
        try:
            t = time.perf_counter()
            want_cli = not args.no_cli and bool(only & {"cli", "rounds"})
            prepare(tmp, n_users, n_items, with_npz=want_cli)
            size = f"{n_users // 1000}k x {n_items // 1000}k"
            print(f"[{size}] data ready in {time.perf_counter() - t:.1f}s", flush=True)
            flops = 2.0 * n_users * n_items * (FACTORS + 1)
            gemm: dict[str, Any] = {"seconds": float("nan")}

            def add(method: str, res: dict[str, Any], recall: Any = None, note: str = "",
                    ref: float | None = None) -> None:
                ref_s = gemm["seconds"] if ref is None else ref
                rows.append({"size": size, "method": method, "wall s": res["seconds"],
                             "GFLOP/s": flops / res["seconds"] / 1e9,
                             "x GEMM rate": ref_s / res["seconds"], "peak RSS MB": res.get("peak_rss_mb"),
                             "recall@100": recall if recall is not None else "", "note": note})
                details.append({"size": size, "method": method, **res})
                runs = "/".join(f"{x:.2f}" for x in res.get("all_seconds", [res["seconds"]]))
                print(f"[{size}] {method}: best {res['seconds']:.2f}s (runs {runs}; load "
                      f"{'/'.join(f'{x:.1f}' for x in res.get('load_avg', []))}) {note}", flush=True)

            pr = None
            if "paired" in only:
                paired = run_worker("paired", tmp, env=fenv)
                gemm_s = paired["gemm_s"]
                pr = {"exact": paired["exact_s"], "flat": paired["flat_s"]}
                gemm = {"seconds": gemm_s}  # the paired rows' reference
                add("paired: GEMM alone, same blocks (reference)", {"seconds": gemm_s},
                    note=f"GEMM, ExactIndex and IndexFlatIP interleaved on 5 user chunks in one process; "
                         f"blocks {paired['blocks'][0]}x{paired['blocks'][1]}")
                add("paired: fmrec ExactIndex, seen masked", {"seconds": pr["exact"]}, 1.0)
                add("paired: faiss IndexFlatIP search alone (no masking)", {"seconds": pr["flat"]}, 1.0, note=fnote)
                verdicts.append(f"{size} (paired, same load): ExactIndex with masking {pr['flat'] / pr['exact']:.2f}x "
                                f"faster than faiss IndexFlatIP search alone (target >= 1.5x), "
                                f"{gemm_s / pr['exact']:.0%} of the GEMM rate (target >= 60%)")
            if "rounds" in only and want_cli:
                rr = cli_rounds(tmp, REPEAT, args.compare_src)
                med, best = rr["median"], rr["best"]
                note = f"{REPEAT} rounds, same load; per-round ratios, median"
                details.append({"size": size, "method": "CLI rounds", **rr})
                for name, label in (("gemm", "rounds: GEMM alone, same blocks (reference)"),
                                    ("flat", "rounds: faiss IndexFlatIP search alone (no masking)"),
                                    ("cli", "rounds: **CLI end to end** `--include-seen` to Parquet"),
                                    ("cli_compare", "rounds: CLI end to end, --compare-src tree")):
                    if name not in med:
                        continue
                    res = {"seconds": med[name], "all_seconds": [row[name] for row in rr["rounds"]],
                           "peak_rss_mb": med.get(f"{name}_peak_rss_mb")}
                    cpu_frac = float(np.median([row["gemm_cpu_s"] / row[f"{name}_cpu_s"] for row in rr["rounds"]]))
                    rows.append({"size": size, "method": label, "wall s": med[name],
                                 "GFLOP/s": flops / med[name] / 1e9,
                                 "x GEMM rate": float(np.median([row["gemm"] / row[name] for row in rr["rounds"]])),
                                 "peak RSS MB": res["peak_rss_mb"], "recall@100": "",
                                 "note": f"{note}; {med[f'{name}_cpu_s']:.1f} CPU s, {cpu_frac:.2f} x GEMM in CPU s"})
                    print(f"[{size}] {label}: median {med[name]:.2f}s (best {best[name]:.2f}s)", flush=True)
                verdicts.append(
                    f"{size} CLI end to end (--include-seen, {REPEAT} rounds, same load): "
                    f"{med['cli_vs_flat']:.2f}x faster than faiss IndexFlatIP search alone (target >= 1.5x), "
                    f"{med['cli_gemm_fraction']:.0%} of the GEMM rate (target >= 60%); median of per-round ratios "
                    f"(CLI {med['cli']:.2f}s, faiss {med['flat']:.2f}s, GEMM {med['gemm']:.2f}s); in CPU seconds "
                    f"{med['cpu_cli_vs_flat']:.2f}x faiss, {med['cpu_cli_gemm_fraction']:.0%} of GEMM "
                    f"(CLI {med['cli_cpu_s']:.1f}, faiss {med['flat_cpu_s']:.1f}, GEMM {med['gemm_cpu_s']:.1f} CPU s)")
                if "cli_compare" in med:
                    verdicts.append(
                        f"{size} CLI from --compare-src, same rounds: {med['compare_vs_flat']:.2f}x faiss, "
                        f"{med['compare_gemm_fraction']:.0%} of the GEMM rate (CLI {med['cli_compare']:.2f}s); "
                        f"in CPU seconds {med['cpu_compare_vs_flat']:.2f}x faiss, "
                        f"{med['cpu_compare_gemm_fraction']:.0%} of GEMM (CLI {med['cli_compare_cpu_s']:.1f} CPU s)")
            standalone = only & {"exact", "before", "faiss", "ann", "cli"}
            if "gemm" in only or (not np.isfinite(gemm["seconds"]) and standalone):
                gemm = run_worker("gemm", tmp)  # the standalone rows' reference
                add("GEMM alone, standalone process (reference below)", gemm,
                    note=f"fused blocks {gemm['blocks'][0]}x{gemm['blocks'][1]} x{gemm['threads']} threads "
                         f"{gemm['fused_blocks_s']:.2f}s; numpy 4096-row blocks {gemm['numpy_4096_s']:.2f}s")
            exact = None
            if "exact" in only or "ann" in only:
                exact = run_worker("exact", tmp)
                add("fmrec ExactIndex, seen masked", exact, exact["recall"], note=f"blocks {exact['blocks']}")
            if "before" in only and not args.quick and not big:
                before = run_worker("exact_before", tmp)
                add("ExactIndex before this change, seen masked", before, before["recall"])
            flat = None
            if "faiss" in only and not (big and args.skip_flat_at_big):
                flat = run_worker("faiss_flat", tmp, env=fenv)
                add("faiss IndexFlatIP search alone (no masking)", flat, 1.0,
                    note=f"{fnote}, faiss BLAS kernel {flat['faiss_blas']}")
                if n == 0 and not args.quick and "OPENBLAS_CORETYPE" in fenv:
                    flat0 = run_worker("faiss_flat", tmp, env={"OMP_WAIT_POLICY": "PASSIVE"})
                    add("faiss IndexFlatIP, OPENBLAS_CORETYPE unset", flat0, 1.0,
                        note=f"faiss BLAS kernel {flat0['faiss_blas']}")
                if not big:
                    ff = run_worker("fmrec_flat", tmp, env=fenv)
                    add("fmrec FaissIndex('Flat'), seen masked", ff, ff["recall"])

            if "ann" in only:
                for kind, spec in ann_specs(n_items):
                    res = run_worker(kind, tmp, {"spec": spec, "target": 0.95}, env=fenv)
                    tuned = res["tuned"]
                    add(f"faiss {spec}, tuned, seen masked", res, res["recall"],
                        note=f"{tuned['parameter']}={tuned['value']} (tuning-sample recall "
                             f"{tuned['recall_on_tuning_sample']:.3f}); build {res['build_s']:.1f}s, "
                             f"tune {res['tune_s']:.1f}s; {exact['seconds'] / res['seconds']:.2f}x exact")
            if "cli" in only and want_cli:
                for include_seen in (True, False):
                    res = run_cli(tmp, include_seen)
                    label = "--include-seen" if include_seen else "seen masked"
                    add(f"CLI end to end: fmrec recommend --vectors, {label}", res,
                        note=f"{res['rows']:,} Parquet rows")
                    if include_seen and flat is not None and pr is not None:
                        verdicts.append(
                            f"{size} CLI end to end (--include-seen), standalone rows: "
                            f"{flat['seconds'] / res['seconds']:.2f}x faster than faiss IndexFlatIP search alone "
                            f"(target >= 1.5x), {gemm['seconds'] / res['seconds']:.0%} of the standalone GEMM "
                            f"rate (target >= 60%)")
                    if big and not include_seen:
                        verdicts.append(f"{size} CLI to Parquet, seen masked: {res['seconds'] / 60:.1f} min "
                                        f"(target < 10), peak RSS {res['peak_rss_mb'] / 1024:.2f} GB (target < 4)")
            anns = [r for r in details if r["size"] == size and r["method"].startswith(("faiss IVF", "faiss HNSW"))]
            good = [r for r in anns if r.get("recall", 0) >= 0.95]
            if good and exact is not None:
                best_ann = min(good, key=lambda r: r["seconds"])
                verdicts.append(f"{size}: fastest ANN at recall@100 >= 0.95: {best_ann['method']} "
                                f"{exact['seconds'] / best_ann['seconds']:.2f}x faster than exact search"
                                f"{' (target >= 3x at 1M x 100k)' if big else ''}")
            elif anns:
                verdicts.append(f"{size}: no ANN reached recall@100 0.95 on the evaluation users")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    cols = ["size", "method", "wall s", "GFLOP/s", "x GEMM rate", "peak RSS MB", "recall@100", "note"]
    print()
    print(table(rows, cols))
    print()
    for v in verdicts:
        print(v)
    print(f"total {time.perf_counter() - started:.0f}s")
    path = write_json(args.out, {"rows": rows, "details": details, "verdicts": verdicts, "k": K,
                                 "dims": FACTORS + 1, "seen_per_user": SEEN, "repeat": REPEAT,
                                 "argv": sys.argv[1:],
                                 "total_seconds": time.perf_counter() - started})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
