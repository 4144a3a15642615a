"""``fmrec recommend --vectors`` at scale (issue 4): the fast paths keep the output exact.

Covers the Parquet sink's Arrow conversion (full batches reshaped, padded batches
masked, string IDs), its encodings (scores PLAIN, no dictionary), the
``recommend_all`` fast path for full rows against the padded path, and the lazy
imports of the ``--vectors`` command (no pandas).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from fmrec.cli.main import main
from fmrec.recommend import recommend_all
from fmrec.store import open_sink, read_parquet_topk
from fmrec.topk import TopK
from fmrec.vectors import VectorSet, load_vectors, save_vectors


def vector_set(n_users: int = 300, n_items: int = 150, d: int = 6, *, str_ids: bool = False,
               constants: bool = True, seed: int = 0) -> VectorSet:
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(n_users, d)).astype(np.float32)
    V = rng.normal(size=(n_items, d)).astype(np.float32)
    users = np.arange(10, 10 + n_users, dtype=np.int64)
    items = np.arange(1000, 1000 + n_items, dtype=np.int64) * 3
    if str_ids:
        users = np.array([f"u{u}" for u in users])
        items = np.array([f"item-{i}" for i in items])
    dense = rng.random((n_users, n_items)) < 0.2
    dense[0, :] = True  # user 0 saw everything: an empty list when seen items are masked
    dense[1, :] = True
    dense[1, :3] = False  # user 1: fewer than k candidates (padding)
    dense[2, :] = True  # every item seen by someone, so no item is dropped as "untrained"
    seen = sp.csr_matrix(dense.astype(np.float32))
    c = rng.normal(size=n_users) if constants else None
    return VectorSet(users, U, items, V, c, seen)


def brute_force(vs: VectorSet, k: int, exclude_seen: bool) -> TopK:
    S = vs.user_vectors.astype(np.float32) @ vs.item_vectors.T.astype(np.float32)
    rows_ids, rows_scores = [], []
    for r in range(vs.n_users):
        allowed = np.arange(vs.n_items)
        if exclude_seen:
            allowed = np.setdiff1d(allowed, vs.seen.indices[vs.seen.indptr[r]:vs.seen.indptr[r + 1]])
        order = allowed[np.lexsort((allowed, -S[r, allowed]))][:k]
        sc = S[r, order].astype(np.float64) + (0.0 if vs.user_constants is None else vs.user_constants[r])
        ids = np.full(k, -1 if vs.item_ids.dtype.kind == "i" else None, dtype=vs.item_ids.dtype if
                      vs.item_ids.dtype.kind == "i" else object)
        ids[:len(order)] = vs.item_ids[order]
        full = np.full(k, -np.inf, np.float32)
        full[:len(order)] = sc.astype(np.float32)
        rows_ids.append(ids)
        rows_scores.append(full)
    return TopK(vs.user_ids, np.stack(rows_ids), np.stack(rows_scores))


def assert_same(a: TopK, b: TopK) -> None:
    assert a.user_ids.tolist() == b.user_ids.tolist()
    assert a.item_ids.tolist() == b.item_ids.tolist()
    np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("str_ids", [False, True])
@pytest.mark.parametrize("exclude_seen", [False, True])
@pytest.mark.parametrize("constants", [False, True])
def test_recommend_all_fast_and_padded_batches_match_brute_force(str_ids: bool, exclude_seen: bool,
                                                                 constants: bool) -> None:
    vs = vector_set(str_ids=str_ids, constants=constants)
    want = brute_force(vs, 20, exclude_seen)
    # batch_size 64: batches 1.. are full (fast path); batch 0 holds the padded users
    got = TopK.concat(list(recommend_all(vs, 20, exclude_seen=exclude_seen, batch_size=64)))
    assert_same(got, want)
    if not str_ids:
        assert got.item_ids.dtype == np.int64
    else:
        assert got.item_ids.dtype == object and all(isinstance(v, str) for v in got.item_ids[5])


@pytest.mark.parametrize("str_ids", [False, True])
@pytest.mark.parametrize("row_group_size", [7, 1000, 262_144])
def test_parquet_round_trip_full_and_padded_batches(tmp_path: Path, str_ids: bool, row_group_size: int) -> None:
    vs = vector_set(str_ids=str_ids)
    batches = list(recommend_all(vs, 20, exclude_seen=True, batch_size=64))
    out = tmp_path / "x.parquet"
    with open_sink(out, row_group_size=row_group_size) as sink:
        for b in batches:
            sink.write(b)
    got = read_parquet_topk(out, k=20)
    want = TopK.concat(batches)
    keep = np.isfinite(want.scores[:, 0])  # users with an empty list have no row
    assert got.user_ids.tolist() == want.user_ids[keep].tolist()
    assert got.item_ids.tolist() == want.item_ids[keep].tolist()
    np.testing.assert_array_equal(got.scores, want.scores[keep])
    f = pq.ParquetFile(out)
    sizes = [f.metadata.row_group(i).num_rows for i in range(f.num_row_groups)]
    assert all(s == row_group_size for s in sizes[:-1]) and 0 < sizes[-1] <= row_group_size
    schema = f.schema_arrow
    assert [str(schema.field(n).type) for n in schema.names] == (
        ["string", "int32", "string", "float"] if str_ids else ["int64", "int32", "int64", "float"])
    assert json.loads(schema.metadata[b"fmrec"])["layout"] == "topk-long-1"
    table = f.read()
    ranks = table.column("rank").to_numpy()
    users = table.column("user_id").to_pylist()
    assert ranks[0] == 1 and np.all((np.diff(ranks) == 1) | (ranks[1:] == 1))
    assert users[0] == want.user_ids[keep][0]


def test_parquet_scores_are_plain_and_ids_dictionary_encoded(tmp_path: Path) -> None:
    vs = vector_set(n_users=500, n_items=400)
    out = tmp_path / "x.parquet"
    with open_sink(out) as sink:
        for b in recommend_all(vs, 100, exclude_seen=False):
            sink.write(b)
    meta = pq.ParquetFile(out).metadata.row_group(0)
    cols = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert not cols["score"].has_dictionary_page
    assert cols["user_id"].has_dictionary_page and cols["item_id"].has_dictionary_page
    assert cols["score"].compression == "ZSTD"


def test_cli_vectors_to_parquet_equals_library_and_skips_pandas(tmp_path: Path) -> None:
    vs = vector_set()
    path = save_vectors(tmp_path / "v.npz", vs)
    out = tmp_path / "x.parquet"
    code = (
        "import sys\n"
        "from fmrec.cli.main import console_main\n"
        f"sys.argv = ['fmrec', '-q', 'recommend', '--vectors', {str(path)!r}, '--k', '20', '--include-seen', "
        f"'--out', {str(out)!r}]\n"
        "rc = console_main()\n"
        "assert rc == 0, rc\n"
        "from fmrec.index import _cbackend\n"
        "light = ('numba',) if _cbackend.available() else ()  # C kernels: numba's 0.3 s start-up is skipped\n"
        "heavy = sorted(m for m in ('pandas', 'faiss', 'dask', 'psycopg', 'fmrec.model', 'fmrec.data',"
        " 'scipy.sparse') + light if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
        "import gc, os\n"
        "print('GC', gc.isenabled(), os.environ.get('OPENBLAS_THREAD_TIMEOUT'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout
    # the collector paused for start-up runs again afterwards; idle OpenBLAS threads sleep early
    assert "GC True 20" in proc.stdout, proc.stdout
    got = read_parquet_topk(out, k=20)
    want = TopK.concat(list(recommend_all(load_vectors(path), 20, exclude_seen=False)))
    assert_same(got, want)


def test_cli_vectors_masked_and_options_still_work(tmp_path: Path, capsys) -> None:
    vs = vector_set(str_ids=True)
    path = save_vectors(tmp_path / "v.npz", vs)
    users = tmp_path / "users.txt"
    users.write_text("\n".join(vs.user_ids[[5, 3, 0]].tolist()) + "\n")
    banned = tmp_path / "banned.txt"
    banned.write_text(f"{vs.item_ids[0]}\n")
    out = tmp_path / "x.parquet"
    rc = main(["-q", "recommend", "--vectors", str(path), "--k", "10", "--out", str(out), "--users", str(users),
               "--exclude-items", str(banned), "--batch-size", "2"])
    assert rc == 0
    got = read_parquet_topk(out, k=10)
    want = TopK.concat(list(recommend_all(load_vectors(path), 10, users=vs.user_ids[[5, 3, 0]],
                                          exclude_items=[vs.item_ids[0]], batch_size=2)))
    keep = np.isfinite(want.scores[:, 0])
    assert got.user_ids.tolist() == want.user_ids[keep].tolist()
    assert got.item_ids.tolist() == want.item_ids[keep].tolist()
    assert vs.item_ids[0] not in set(got.item_ids.ravel().tolist())
    assert "published top-10 for 3 users" in capsys.readouterr().out


def test_main_in_process_leaves_the_garbage_collector_alone(tmp_path: Path) -> None:
    """Only the ``fmrec`` command (console_main) pauses and freezes the collector; ``main``
    called from a program must neither freeze the caller's objects nor leave GC off."""
    import gc

    vs = vector_set()
    path = save_vectors(tmp_path / "v.npz", vs)
    frozen = gc.get_freeze_count()
    for _ in range(2):
        assert main(["-q", "recommend", "--vectors", str(path), "--k", "5", "--out", str(tmp_path / "x.jsonl")]) == 0
        assert gc.isenabled()
        assert gc.get_freeze_count() == frozen


def test_a_forced_older_blas_kernel_on_an_avx512_cpu_is_pointed_out(tmp_path: Path, monkeypatch) -> None:
    from fmrec._threads import blas_kernel_hint

    avx512 = tmp_path / "avx512"
    avx512.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n")
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    assert blas_kernel_hint(str(avx512)) is None  # OpenBLAS chooses: nothing to say
    monkeypatch.setenv("OPENBLAS_CORETYPE", "SkylakeX")
    assert blas_kernel_hint(str(avx512)) is None
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert blas_kernel_hint(str(avx2)) is None  # the right kernel for that CPU
    assert blas_kernel_hint(str(tmp_path / "missing")) is None
    hint = blas_kernel_hint(str(avx512))
    assert hint is not None and "OPENBLAS_CORETYPE=Haswell" in hint and "\n" not in hint


def test_the_blas_hint_applies_only_where_blas_computes_the_scores() -> None:
    """With the fused C kernels numpy's BLAS plays no part in the exact search, so the
    command does not mention its kernel (cli.recommend checks ``gemm_engine``)."""
    from fmrec.index import ExactIndex
    from fmrec.index import _cbackend as C

    assert ExactIndex(fused=False).gemm_engine() == "blas"
    assert ExactIndex(kernels="numba").gemm_engine() == "blas"
    assert ExactIndex().gemm_engine() == ("fused" if C.available() and C.fused_available() else "blas")


def test_candidates_from_a_pattern_with_positions_outside_the_catalogue_are_refused() -> None:
    """Untrained items are found by scattering the pattern's positions; a hand-made CSR with
    a negative or too large position must not wrap around silently."""
    from fmrec.errors import ConfigError

    vs = vector_set(n_users=4, n_items=10)
    for bad in (-1, 10):
        seen = sp.csr_matrix((np.ones(2, np.float32), np.array([0, bad]), np.array([0, 1, 2, 2, 2])),
                             shape=(4, 10))
        with pytest.raises(ConfigError, match="outside 0..9"):
            list(recommend_all(vs, 3, seen=seen, exclude_seen=False))
    ok = sp.csr_matrix((np.ones(2, np.float32), np.array([0, 9]), np.array([0, 1, 2, 2, 2])), shape=(4, 10))
    got = TopK.concat(list(recommend_all(vs, 3, seen=ok, exclude_seen=False)))
    assert set(np.unique(got.item_ids[got.item_ids >= 0]).tolist()) <= {vs.item_ids[0], vs.item_ids[9]}
