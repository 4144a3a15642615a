"""Exactness of the top-k selection kernels after the scale work (issue 4).

The reject loop compares 64 scores at a time into a bit mask and visits only the set
bits; the first block of a row is selected by compacting the columns that reach a
sampled threshold and keying only those.  Both must keep every result exact: these tests
compare the kernels and ``ExactIndex`` with a lexsort reference (ties by smaller
position) on random data, on heavy ties, and on edge cases around chunk and piece
boundaries.  Every test runs each kernel set: the numba kernels (``_kernels.py``) and
the C kernels (``_ctopk.c``) at every instruction-set level this CPU has (portable C,
AVX2, AVX-512).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp

from fmrec.index import ExactIndex
from fmrec.index import _cbackend as C
from fmrec.index import _kernels as K


def _c_levels() -> list[int]:
    if not C.available():
        return []
    best = C.set_isa(-1)
    return list(range(best + 1))


BACKENDS = ["numba"] + [f"c{isa}" for isa in _c_levels()]


def test_c_kernels_are_built_in_ci() -> None:
    """The C kernels are an optional extension; CI (a machine with a compiler) must build them."""
    if not C.available() and os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        pytest.skip("the C kernels were not built here (no C compiler at install time); the numba kernels ran")
    assert C.available(), "pip install did not build fmrec.index._ctopk"
    assert C.resolve("auto") == "c"
    from fmrec._threads import cpu_has_avx512

    if cpu_has_avx512():
        assert C.fused_available(), "an AVX-512 CPU must run the fused kernels"
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        flags = set()
    if {"avx2", "fma"} <= flags:
        assert C.fused_available() and C.ivf_fast(), "an AVX2 + FMA CPU must run the fused kernels and list scan"


# ExactIndex settings: numba kernels, C selection after BLAS GEMM blocks, fused C GEMM + selection
# (the fused kernels at each instruction set the CPU has: AVX-512 tiles 12 x 32, AVX2 6 x 16)
INDEX_KINDS: dict[str, tuple[dict, int]] = {"numba": ({"kernels": "numba"}, -1)}
if C.available():
    INDEX_KINDS["c-blas"] = ({"kernels": "c", "fused": False}, -1)
    for _isa, _name in ((2, "c-fused-avx512"), (1, "c-fused-avx2")):
        C.set_isa(_isa)
        if C.fused_available() and C.set_isa(_isa) == _isa:
            INDEX_KINDS[_name] = ({"kernels": "c", "fused": True}, _isa)
    C.set_isa(-1)


@pytest.fixture(params=sorted(INDEX_KINDS))
def index_kind(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    kwargs, isa = INDEX_KINDS[request.param]
    C.set_isa(isa) if C.available() else None
    yield kwargs
    C.set_isa(-1) if C.available() else None


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    name = request.param
    if name.startswith("c"):
        C.set_isa(int(name[1:]))
        yield name
        C.set_isa(-1)
    else:
        yield name


def reference(S: np.ndarray, k: int, banned: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of every row by lexsort: score descending, then smaller position; -1 / -inf padded."""
    n, m = S.shape
    ids = np.full((n, k), -1, np.int64)
    scores = np.full((n, k), -np.inf, np.float32)
    for r in range(n):
        allowed = np.arange(m) if banned is None else np.flatnonzero(~banned[r])
        order = allowed[np.lexsort((allowed, -S[r, allowed]))][:k]
        ids[r, :len(order)] = order
        scores[r, :len(order)] = S[r, order]
    return ids, scores


def run_kernels(S: np.ndarray, k: int, block: int, perm: np.ndarray | None = None,
                banned: np.ndarray | None = None, backend: str = "numba") -> tuple[np.ndarray, np.ndarray]:
    """Drive topk_block / finish_rows directly over column blocks of ``S`` (visiting order =
    ``perm``; the reported positions are catalogue positions)."""
    if backend != "numba":
        return run_c_kernels(S, k, block, perm, banned)
    n, m = S.shape
    perm = np.arange(m, dtype=np.int64) if perm is None else perm.astype(np.int64)
    inv = np.empty(m, np.int64)
    inv[perm] = np.arange(m)
    Sv = np.ascontiguousarray(S[:, perm])  # visiting order
    if banned is not None:
        ex = sp.csr_matrix(banned.astype(np.float32))
        indptr, indices = ex.indptr.astype(np.int64), ex.indices.astype(np.int32)
        ex_ptr = np.empty(n + 1, np.int64)
        ex_pos = np.empty(int(indptr[-1]), np.int64)
        K.remap_exclusions(indptr, indices, inv, 0, n, ex_ptr, ex_pos)
        ex_cur = ex_ptr[:-1].copy()
    else:
        ex_ptr = ex_pos = ex_cur = np.zeros(0, np.int64)
    keys = np.empty((n, k), np.uint64)
    fill = np.zeros(n, np.int64)
    sample = np.empty(block // 4 + 1, np.float32)
    cand = np.empty(4 * k + 1, np.uint64)
    scratch = np.empty((n, block), np.float32)
    for j0 in range(0, m, block):
        cols = min(block, m - j0)
        scratch[:, :cols] = Sv[:, j0:j0 + cols]
        K.topk_block(scratch, scratch.view(np.uint32), n, cols, j0, perm, ex_ptr, ex_pos, ex_cur, keys, fill,
                     sample, cand)
    out_s = np.empty((n, k), np.float32)
    out_i = np.empty((n, k), np.int64)
    K.finish_rows(keys, fill, n, out_s.view(np.uint32), out_i)
    return out_i, out_s


def run_c_kernels(S: np.ndarray, k: int, block: int, perm: np.ndarray | None = None,
                  banned: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The same through the C kernels (``_cbackend.Rows``), one block of columns at a time."""
    n, m = S.shape
    perm = np.arange(m, dtype=np.int64) if perm is None else perm.astype(np.int64)
    inv = np.empty(m, np.int64)
    inv[perm] = np.arange(m)
    Sv = np.ascontiguousarray(S[:, perm])
    st = C.Rows(n, block, k)
    st.start(n)
    ex, keep = (0, 0, 0, 0), ()
    if banned is not None:
        exm = sp.csr_matrix(banned.astype(np.float32))
        indptr, indices = exm.indptr.astype(np.int64), exm.indices.astype(np.int32)
        ex, keep = st.exclusions(indptr, indices, inv, 0, n)
    for j0 in range(0, m, block):
        cols = min(block, m - j0)
        st.S[:, :cols] = Sv[:, j0:j0 + cols]
        st.block(n, cols, j0, perm.ctypes.data, ex)
    out_s = np.empty((n, k), np.float32)
    out_i = np.empty((n, k), np.int64)
    st.finish(n, out_s.view(np.uint32), out_i)
    return out_i, out_s


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 7, 64, 100, 256, 257, 400])  # rows up to 256 sorted by rank counts, longer by heap
@pytest.mark.parametrize("ties", [False, True])
def test_kernels_match_lexsort_random(seed: int, k: int, ties: bool, backend: str) -> None:
    rng = np.random.default_rng(seed * 101 + k)
    n, m = 9, int(rng.integers(1, 3000))
    S = rng.normal(size=(n, m)).astype(np.float32)
    if ties:
        # few distinct values: ties everywhere, -0.0 among them (it ties with 0.0: smaller position first)
        S = np.round(S * 2).astype(np.float32)
    block = int(rng.choice([8, 63, 64, 65, 200, 4 * k, 4 * k + 3, 1024]))
    block = max(block, 1)
    perm = rng.permutation(m) if seed % 2 else None
    banned = rng.random((n, m)) < (0.3 if seed % 3 == 0 else 0.0)
    ids, scores = run_kernels(S, k, block, perm, banned if banned.any() else None, backend)
    ref_ids, ref_scores = reference(S, k, banned)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(scores, ref_scores)


@pytest.mark.parametrize("k", [1, 50, 100])
def test_all_equal_scores_fall_back_and_keep_smallest_positions(k: int, backend: str) -> None:
    """Every score equal: the sampled start sees more than 4k survivors (it must fall back)."""
    n, m = 4, 5000
    S = np.full((n, m), 0.5, np.float32)
    for block in (1024, 4 * k, 5000):
        ids, scores = run_kernels(S, k, block, backend=backend)
        ref_ids, ref_scores = reference(S, k)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(scores, ref_scores)


def test_single_passing_score_at_every_chunk_and_piece_boundary(backend: str) -> None:
    """After the heap is full, one score that can enter sits at each position of a 64-wide
    chunk (first / last of an 8-wide piece, the chunk's ends, the ragged tail)."""
    k, m = 4, 3 * 64 + 13
    positions = [0, 1, 7, 8, 15, 56, 63, 64, 71, 127, 128, 191, 192, 200, m - 1]
    rows = []
    for p in positions:
        row = np.full(m, -5.0, np.float32)
        row[:k] = 1.0  # fill the heap in the first block ...
        row[m - 1 - (p % 3)] = 0.0  # ... a score that cannot enter ...
        row[p if p >= k else p + k] = 3.0  # ... and one that must
        rows.append(row)
    S = np.stack(rows)
    for block in (m, 64, 72, 8):
        ids, scores = run_kernels(S, k, block, backend=backend)
        ref_ids, ref_scores = reference(S, k)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(scores, ref_scores)


def test_excluded_and_negative_infinite_scores_never_enter(backend: str) -> None:
    rng = np.random.default_rng(5)
    n, m, k = 6, 2100, 100
    S = rng.normal(size=(n, m)).astype(np.float32)
    banned = np.zeros((n, m), bool)
    banned[0] = True  # nothing left
    banned[1, : m - 40] = True  # fewer than k left, all in the last block
    banned[2, rng.choice(m, m - k, replace=False)] = True  # exactly k left
    banned[3, ::2] = True
    ids, scores = run_kernels(S, k, 1024, rng.permutation(m), banned, backend)
    ref_ids, ref_scores = reference(S, k, banned)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(scores, ref_scores)
    assert np.all(ids[0] == -1) and np.all(np.isneginf(scores[0]))
    assert (ids[1] >= 0).sum() == 40


@pytest.mark.parametrize("blocks", [(None, None), (256, 1024), (512, 512), (37, 450)])
def test_exact_index_default_and_custom_blocks_match_reference(blocks: tuple[int | None, int | None],
                                                              index_kind: dict) -> None:
    """FM-like vectors (popularity bias, so later blocks are mostly rejected) with ties and
    exclusions; every block layout gives the lexsort answer on the index's own scores."""
    rng = np.random.default_rng(11)
    n_users, n_items, d = 300, 4000, 9
    U = np.round(rng.normal(size=(n_users, d)) * 2).astype(np.float32)
    U[:, -1] = 1.0
    V = np.round(rng.normal(size=(n_items, d)) * 2).astype(np.float32)
    V[:, -1] = np.round(-np.log(rng.permutation(n_items) + 1.0) * 2)  # integer-valued: exact GEMM
    banned = rng.random((n_users, n_items)) < 0.01
    excl = sp.csr_matrix(banned.astype(np.float32))
    bu, bi = blocks
    ids, scores = ExactIndex(block_users=bu, block_items=bi, **index_kind).build(V).search(U, 100, excl)
    ref_ids, ref_scores = reference(U @ V.T, 100, banned)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(scores, ref_scores)


def test_default_blocks_are_two_mebibytes() -> None:
    idx = ExactIndex().build(np.zeros((50_000, 8), np.float32))
    assert idx._blocks(100) == (512, 1024)
    small = ExactIndex(max_block_bytes=1 << 16).build(np.zeros((50_000, 8), np.float32))
    assert small._blocks(100) == (16, 1024)


def test_ge_mask64_matches_numpy_on_ties_infinities_and_offsets() -> None:
    """The vector-compare mask (four 16-float compares) against ``row >= T`` bit by bit."""
    rng = np.random.default_rng(9)
    S = np.round(rng.normal(size=(5, 64 * 3 + 7)) * 2).astype(np.float32)  # many exact ties with T
    S[1, ::5] = -np.inf
    S[2, 10:20] = np.inf
    S[3] = np.float32(-3.4028235e38)  # the threshold of a heap not yet full: passes
    S[4] = np.nextafter(np.float32(1.0), np.float32(0.0))  # just below T
    for T in (np.float32(1.0), np.float32(0.0), K.LOWEST, np.float32(-np.inf), np.float32(np.inf)):
        for r in range(S.shape[0]):
            for c0 in (0, 1, 63, 64, 64 * 2 + 7):
                want = sum(1 << i for i in range(64) if S[r, c0 + i] >= T)
                assert int(K.ge_mask64(S, r, c0, T)) == want, (T, r, c0)


@pytest.mark.parametrize("k", [1, 3, 100])
def test_rising_scores_refill_the_buffer_and_infinities(k: int, backend: str) -> None:
    """Worst case for a running threshold: scores rise along the visiting order, so every
    later column enters and the C kernels' buffer fills and is cut back again and again;
    plus +inf scores (always kept), -inf (never) and heavy ties."""
    n, m = 5, 3000
    S = np.tile(np.arange(m, dtype=np.float32), (n, 1))
    S[1] = np.floor(S[1] / 7)  # rising with ties
    S[2, ::13] = np.inf
    S[3, :] = -np.inf
    S[3, 5::400] = 2.0
    S[4] = S[4][::-1]  # falling: the first block holds the answer
    for block in (64, 1024, m):
        ids, scores = run_kernels(S, k, block, backend=backend)
        ref_ids, ref_scores = reference(S, k, np.isneginf(S))  # -inf never enters: padding
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(scores, ref_scores)


@pytest.mark.parametrize("seed", range(4))
def test_c_and_numba_exact_index_agree_bit_for_bit(seed: int) -> None:
    """Both selection kernel sets after the same BLAS GEMM blocks, threads and batches: the same
    ids and score bits (the fused kernels compute their own scores: see the integer-vector test)."""
    if not C.available():
        pytest.skip("the C kernels were not built here; test_c_kernels_are_built_in_ci covers CI")
    rng = np.random.default_rng(seed)
    n, m, d = int(rng.integers(1, 1500)), int(rng.integers(1, 5000)), int(rng.integers(1, 40))
    U = rng.normal(size=(n, d)).astype(np.float32)
    V = rng.normal(size=(m, d)).astype(np.float32)
    excl = sp.random(n, m, density=0.05, format="csr", random_state=seed) if seed % 2 else None
    k = int(rng.integers(1, 300))
    for threads in (1, 2):
        a = ExactIndex(kernels="c", fused=False, n_threads=threads).build(V)
        b = ExactIndex(kernels="numba", n_threads=threads).build(V)
        ra = list(a.search_batches(U, k, excl, batch_size=700))
        rb = list(b.search_batches(U, k, excl, batch_size=700))
        assert [p[0] for p in ra] == [p[0] for p in rb]
        for (_, ia, sa), (_, ib, sb) in zip(ra, rb):
            np.testing.assert_array_equal(ia, ib)
            np.testing.assert_array_equal(sa.view(np.uint32), sb.view(np.uint32))


def test_kernels_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from fmrec.errors import ConfigError

    V = np.ones((10, 3), np.float32)
    with pytest.raises(ConfigError, match="kernels must be"):
        ExactIndex(kernels="fortran").build(V).search(V, 2)
    monkeypatch.setenv("FMREC_KERNELS", "numba")
    assert C.resolve("auto") == "numba"
    if C.available():
        assert C.resolve("c") == "c"  # an explicit choice wins over the environment
    else:
        with pytest.raises(ConfigError, match="not built"):
            C.resolve("c")
    monkeypatch.setenv("FMREC_KERNELS", "cuda")
    with pytest.raises(ConfigError, match="kernels must be"):
        C.resolve(None)


@pytest.mark.parametrize("seed", range(8))
def test_every_index_kind_matches_lexsort_on_integer_vectors(seed: int, index_kind: dict) -> None:
    """Integer-valued vectors (every GEMM exact in float32, so the reference scores are the
    index's scores): catalogues that are not multiples of a 32-item panel or of a 12-user
    tile, smaller than one panel, one first block only, or many L2 chunks; ties everywhere;
    exclusions; k above the catalogue; 1 and 2 threads; small batches."""
    rng = np.random.default_rng(100 + seed)
    n_users = int(rng.choice([1, 11, 12, 13, 250, 700]))
    n_items = int(rng.choice([1, 31, 32, 33, 1000, 1057, 4200, 9000]))
    d = int(rng.choice([1, 3, 16, 65]))
    k = int(rng.choice([1, 5, 100, 257]))
    U = rng.integers(-3, 4, size=(n_users, d)).astype(np.float32)
    V = rng.integers(-3, 4, size=(n_items, d)).astype(np.float32)
    banned = rng.random((n_users, n_items)) < (0.2 if seed % 2 else 0.0)
    excl = sp.csr_matrix(banned.astype(np.float32)) if banned.any() else None
    ref_ids, ref_scores = reference(U @ V.T, k, banned)
    for threads in (1, 2):
        idx = ExactIndex(n_threads=threads, **index_kind).build(V)
        parts = list(idx.search_batches(U, k, excl, batch_size=int(rng.choice([1, 37, 8192]))))
        ids = np.concatenate([p[1] for p in parts])
        scores = np.concatenate([p[2] for p in parts])
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(scores, ref_scores)


@pytest.mark.parametrize("seed", range(3))
def test_every_index_kind_is_tie_aware_exact_on_float_vectors(seed: int, index_kind: dict) -> None:
    """Random float vectors against brute force (tie-aware: scores may differ from numpy's
    GEMM in the last bit), with exclusions."""
    from reference import assert_topk_equivalent

    rng = np.random.default_rng(7 + seed)
    n_users, n_items, d, k = 130, 3000 + 17 * seed, 24, 50
    U = rng.normal(size=(n_users, d)).astype(np.float32)
    V = rng.normal(size=(n_items, d)).astype(np.float32)
    banned = rng.random((n_users, n_items)) < 0.05
    ids, scores = ExactIndex(**index_kind).build(V).search(U, k, sp.csr_matrix(banned.astype(np.float32)))
    full = (U.astype(np.float64) @ V.T.astype(np.float64))
    for r in range(n_users):
        assert_topk_equivalent(ids[r], scores[r].astype(np.float64), full[r], k, set(np.flatnonzero(banned[r]).tolist()),
                               rtol=1e-5, atol=1e-4)


def test_fused_slices_on_block_boundaries_are_bit_identical_to_the_whole() -> None:
    """What fmrec.distributed relies on: a slice of users starting on a block boundary,
    searched with the whole set's item order, gives the same lists and score bits."""
    if not any(name.startswith("c-fused") for name in INDEX_KINDS):
        pytest.skip("the fused kernels need the C library and a CPU with AVX2 or AVX-512 and FMA")
    rng = np.random.default_rng(3)
    U = rng.normal(size=(1300, 33)).astype(np.float32)
    V = rng.normal(size=(2500, 33)).astype(np.float32)
    order = U.mean(axis=0, dtype=np.float64)
    whole = ExactIndex(fused=True, kernels="c", order_by=order).build(V)
    ids, scores = whole.search(U, 40)
    bu = whole.user_block(40)
    part_ids, part_scores = ExactIndex(fused=True, kernels="c", order_by=order).build(V).search(U[bu:], 40)
    np.testing.assert_array_equal(part_ids, ids[bu:])
    np.testing.assert_array_equal(part_scores.view(np.uint32), scores[bu:].view(np.uint32))


def test_fused_scores_are_the_same_bits_at_every_instruction_set() -> None:
    """AVX-512 (12 x 32 tiles) and AVX2 (6 x 16) compute each score as the same FMA chain,
    so a Dask cluster mixing both CPUs still publishes one answer."""
    levels = [isa for name, (_, isa) in INDEX_KINDS.items() if name.startswith("c-fused")]
    if len(levels) < 2:
        pytest.skip("this CPU runs at most one fused instruction set")
    rng = np.random.default_rng(12)
    U = rng.normal(size=(700, 65)).astype(np.float32)
    V = rng.normal(size=(5000, 65)).astype(np.float32)
    excl = sp.random(700, 5000, density=0.01, format="csr", random_state=1)
    got = []
    for isa in levels:
        C.set_isa(isa)
        try:
            got.append(ExactIndex(kernels="c", fused=True).build(V).search(U, 100, excl))
        finally:
            C.set_isa(-1)
    for ids, scores in got[1:]:
        np.testing.assert_array_equal(ids, got[0][0])
        np.testing.assert_array_equal(scores.view(np.uint32), got[0][1].view(np.uint32))


def test_negative_zero_ties_with_zero_in_every_index_kind(index_kind: dict) -> None:
    """fma(-1e-30, 1e-30, +0) underflows to -0.0 while -1e-30 * 0 + 0 is +0.0: the two scores
    are equal, so the smaller position ranks first whatever sign the zero carries."""
    U = np.array([[-1e-30], [1e-30]], np.float32)
    V = np.array([[1e-30], [0.0], [-1e-30]], np.float32)
    ids, scores = ExactIndex(**index_kind).build(V).search(U, 3)
    assert ids.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert np.all(scores == 0)


@pytest.mark.parametrize("fused", [False, True])
def test_abandoned_search_waits_for_every_launched_batch(fused: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing search_batches after its first batch must not leave worker tasks running: the
    C kernels read the item order and user vectors through raw pointers, which the generator
    frees when it closes (the batch after the one being consumed is already launched)."""
    if not C.available() or (fused and not C.fused_available()):
        pytest.skip("needs the C kernels (and AVX2/AVX-512 + FMA for the fused path)")
    import threading

    state = {"closed": False, "late": 0}
    lock = threading.Lock()
    name = "fused_rest" if fused else "block"
    original = getattr(C.Rows, name)

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = original(self, *args, **kwargs)
        with lock:  # a kernel call still running (or starting) once close() has returned
            if state["closed"]:
                state["late"] += 1
        return out

    monkeypatch.setattr(C.Rows, name, counting)
    rng = np.random.default_rng(0)
    U = rng.normal(size=(6000, 16)).astype(np.float32)
    V = rng.normal(size=(40_000, 16)).astype(np.float32)
    gen = ExactIndex(kernels="c", fused=fused, n_threads=2).build(V).search_batches(U, 10, batch_size=1024)
    next(gen)
    gen.close()
    with lock:
        state["closed"] = True
    import time

    time.sleep(0.3)  # a task still running would call the kernel again within this time
    assert state["late"] == 0
