"""Top-k kernels and indexes against brute force (tie-aware)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from fmrec.errors import ConfigError
from fmrec.index import ExactIndex, FaissIndex, make_index
from fmrec.index import _kernels as K

from reference import assert_topk_equivalent, topk_naive


def random_exclusion(rng: np.random.Generator, n_users: int, n_items: int, p: float) -> sp.csr_matrix:
    m = sp.csr_matrix((rng.random((n_users, n_items)) < p).astype(np.float32))
    m.sort_indices()
    return m


def excl_sets(m: sp.csr_matrix | None, n: int) -> list[set[int]]:
    if m is None:
        return [set() for _ in range(n)]
    return [set(m.indices[m.indptr[r]:m.indptr[r + 1]].tolist()) for r in range(n)]


@settings(max_examples=60, deadline=None)
@given(
    n_users=st.integers(1, 12), n_items=st.integers(1, 40), k=st.integers(1, 50),
    seed=st.integers(0, 10_000), ties=st.booleans(), p_excl=st.sampled_from([0.0, 0.3, 1.0]),
    block=st.integers(1, 17),
)
def test_topk_kernel_matches_sorting(n_users, n_items, k, seed, ties, p_excl, block) -> None:
    rng = np.random.default_rng(seed)
    S = rng.normal(size=(n_users, n_items)).astype(np.float32)
    if ties:
        S = np.round(S).astype(np.float32)  # many exact ties
    excl = random_exclusion(rng, n_users, n_items, p_excl)
    heap_s = np.full((n_users, k), -np.inf, np.float32)
    heap_i = np.full((n_users, k), -1, np.int64)
    for j0 in range(0, n_items, block):  # blocks of items, like the index does
        j1 = min(n_items, j0 + block)
        K.topk_update(np.ascontiguousarray(S[:, j0:j1]), j0, 0, excl.indptr.astype(np.int64),
                      excl.indices.astype(np.int32), heap_s, heap_i)
    K.heaps_to_sorted(heap_s, heap_i)
    sets = excl_sets(excl, n_users)
    for r in range(n_users):
        ref_ids, ref_scores = topk_naive(S[r], k, sets[r])
        # deterministic tie order: exactly the sorted reference
        n = len(ref_ids)
        assert heap_i[r, :n].tolist() == ref_ids
        np.testing.assert_array_equal(heap_s[r, :n], np.array(ref_scores, np.float32))
        assert np.all(heap_i[r, n:] == -1) and np.all(np.isneginf(heap_s[r, n:]))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 8), m=st.integers(1, 30), k=st.integers(1, 12), seed=st.integers(0, 9999))
def test_filter_candidates_matches_python(n, m, k, seed) -> None:
    rng = np.random.default_rng(seed)
    n_items = 40
    ids = np.stack([rng.permutation(n_items)[:m] for _ in range(n)]).astype(np.int64)
    ids[rng.random(ids.shape) < 0.1] = -1
    scores = np.sort(rng.normal(size=(n, m)).astype(np.float32), axis=1)[:, ::-1].copy()
    excl = random_exclusion(rng, n, n_items, 0.3)
    out_i = np.empty((n, k), np.int64)
    out_s = np.empty((n, k), np.float32)
    K.filter_candidates(ids, scores, excl.indptr.astype(np.int64), excl.indices.astype(np.int32), 0, k, out_i, out_s)
    sets = excl_sets(excl, n)
    for r in range(n):
        keep = [(j, s) for j, s in zip(ids[r], scores[r]) if j >= 0 and j not in sets[r]][:k]
        assert out_i[r, :len(keep)].tolist() == [j for j, _ in keep]
        np.testing.assert_array_equal(out_s[r, :len(keep)], np.array([s for _, s in keep], np.float32))
        assert np.all(out_i[r, len(keep):] == -1)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), m=st.integers(0, 300), k=st.integers(1, 300), seed=st.integers(0, 9999),
       ties=st.booleans())
def test_rerank_candidates_matches_python(n, m, k, seed, ties) -> None:
    """Exact re-scoring of ANN candidates against a Python sort of the float32 scores (higher
    first, then smaller position): -1 padding, exclusions, integer-valued vectors with ties (and
    -0.0 next to 0.0), more or fewer candidates than k, rows past the rank-count limit."""
    rng = np.random.default_rng(seed)
    n_items, d = 400, 5
    # multiples of 1/64 (few distinct values with ties=True): every dot product is exact in float32,
    # so the reference order cannot differ from the kernel's by a rounding
    scale = 1.0 if ties else 64.0
    Q = (np.round(rng.normal(size=(n, d)) * scale) / scale).astype(np.float32)
    items = (np.round(rng.normal(size=(n_items, d)) * scale) / scale).astype(np.float32)
    if ties:
        Q[:, 0] = -0.0
    m = min(m, n_items)
    cand = np.stack([rng.permutation(n_items)[:m] for _ in range(n)]).astype(np.int64).reshape(n, m)
    if m > 1 and seed % 3 == 0:  # a merged index may return a vector twice: counted once
        cand[:, 1::7] = cand[:, 0:1]
    cand[rng.random(cand.shape) < 0.1] = -1
    excl = random_exclusion(rng, n, n_items, 0.2)
    out_i = np.empty((n, k), np.int64)
    out_s = np.empty((n, k), np.float32)
    K.rerank_candidates(Q, items, cand, excl.indptr.astype(np.int64), excl.indices.astype(np.int32), 0, k,
                        out_i, out_s)
    sets = excl_sets(excl, n)
    for r in range(n):
        kept = list(dict.fromkeys(int(j) for j in cand[r] if j >= 0 and j not in sets[r]))
        scores = {j: np.float32(np.dot(Q[r].astype(np.float64), items[j].astype(np.float64))) for j in kept}
        want = sorted(kept, key=lambda j: (-float(scores[j]), j))[:k]
        assert out_i[r, :len(want)].tolist() == want
        np.testing.assert_array_equal(out_s[r, :len(want)], np.array([scores[j] for j in want], np.float32))
        assert np.all(out_i[r, len(want):] == -1) and np.all(np.isneginf(out_s[r, len(want):]))


def fm_like(rng: np.random.Generator, n_users: int, n_items: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    U = rng.normal(size=(n_users, d)).astype(np.float32)
    U[:, -1] = 1.0
    It = rng.normal(size=(n_items, d)).astype(np.float32)
    It[:, -1] = rng.normal(size=n_items) * 2  # item bias column dominates, like FM popularity
    return U, It


@pytest.mark.parametrize("index_factory", [lambda: ExactIndex(), lambda: ExactIndex(block_users=7, block_items=13),
                                           lambda: FaissIndex("Flat", batch_size=9)])
@pytest.mark.parametrize("with_exclusion", [False, True])
def test_indexes_match_brute_force(index_factory, with_exclusion) -> None:
    rng = np.random.default_rng(42)
    U, It = fm_like(rng, 50, 120, 9)
    excl = random_exclusion(rng, 50, 120, 0.4) if with_exclusion else None
    excl_big = None
    if excl is not None:
        lil = excl.tolil()
        lil[0, :] = 1.0  # user 0 has every item excluded -> empty list
        excl_big = lil.tocsr()
    idx = index_factory().build(It)
    k = 20
    ids, scores = idx.search(U, k, excl_big)
    full = U.astype(np.float64) @ It.astype(np.float64).T
    sets = excl_sets(excl_big, 50)
    for r in range(50):
        assert_topk_equivalent(ids[r], scores[r], full[r], k, sets[r], rtol=1e-5, atol=1e-4)
    if with_exclusion:
        assert np.all(ids[0] == -1)


def test_chunked_equals_unchunked_and_batches_equal_single() -> None:
    rng = np.random.default_rng(3)
    U, It = fm_like(rng, 64, 300, 17)
    excl = random_exclusion(rng, 64, 300, 0.2)
    whole = ExactIndex().build(It).search(U, 25, excl)
    chunked = ExactIndex(block_users=5, block_items=31).build(It).search(U, 25, excl)
    np.testing.assert_array_equal(whole[0], chunked[0])
    # other block shapes may change the last bit of a BLAS dot product on some CPUs
    np.testing.assert_allclose(whole[1], chunked[1], rtol=1e-6, atol=1e-6)
    # a slice starting on a block boundary, searched with the whole set's item order: bit-identical
    bu = ExactIndex(block_users=16).build(It).user_block(25)
    ordered = ExactIndex(block_users=16, order_by=U.mean(axis=0, dtype=np.float64)).build(It)
    part = ordered.search(U[bu:], 25, excl[bu:])
    np.testing.assert_array_equal(part[0], whole[0][bu:])
    np.testing.assert_array_equal(part[1], ExactIndex(block_users=16).build(It).search(U, 25, excl)[1][bu:])
    idx = ExactIndex().build(It)
    for r in (0, 17, 63):
        single = idx.search(U[r:r + 1], 25, excl[r])
        np.testing.assert_array_equal(single[0][0], whole[0][r])


def test_k_larger_than_catalogue_pads() -> None:
    rng = np.random.default_rng(0)
    U, It = fm_like(rng, 3, 5, 4)
    for idx in (ExactIndex(), FaissIndex()):
        ids, scores = idx.build(It).search(U, 8)
        assert ids.shape == (3, 8)
        assert np.all(ids[:, 5:] == -1) and np.all(np.isneginf(scores[:, 5:]))
        assert sorted(ids[0, :5].tolist()) == list(range(5))


def test_index_errors() -> None:
    with pytest.raises(ConfigError, match="unknown index"):
        make_index("hnsw-magic")
    idx = ExactIndex()
    with pytest.raises(ConfigError, match="empty"):
        idx.search(np.ones((1, 3), np.float32), 2)
    idx.build(np.ones((4, 3), np.float32))
    with pytest.raises(ConfigError, match="dimensions"):
        idx.search(np.ones((1, 2), np.float32), 2)
    with pytest.raises(ConfigError, match="k must be"):
        idx.search(np.ones((1, 3), np.float32), 0)
    with pytest.raises(ConfigError, match="non-finite"):
        ExactIndex().build(np.full((2, 2), np.nan, np.float32))
    with pytest.raises(ConfigError, match="shape"):
        idx.search(np.ones((2, 3), np.float32), 2, sp.csr_matrix((3, 4)))
