"""Approximate (faiss) indexes against brute force, on a small clustered FM-like data set.

Recall@k is *measured* against a brute-force float64 ranking and must clear a
stated floor per index type (floors sit well below what these specs reach here,
listed beside each).  Also: target-recall tuning, exclusions never leaking for
any index, save/load round trips, one-line errors.  The fused exact kernel is
checked against the sorting reference here too, ties included, because every
recall in fmrec is measured against it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from fmrec.errors import ArtifactError, ConfigError
from fmrec.index import ExactIndex, FaissIndex, make_index
from fmrec.index.faiss_index import family

from reference import topk_naive


def clustered(seed: int = 0, n_users: int = 300, n_items: int = 2000, d: int = 16,
              topics: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """FM-like vectors: users [p, 1], items [q, b]; p, q around shared topics, b a popularity bias."""
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(topics, d - 1))
    P = 0.8 * C[rng.integers(0, topics, n_users)] + 0.5 * rng.normal(size=(n_users, d - 1))
    Q = 0.8 * C[rng.integers(0, topics, n_items)] + 0.5 * rng.normal(size=(n_items, d - 1))
    b = -np.log(rng.permutation(n_items) + 1.0)
    U = np.hstack([P, np.ones((n_users, 1))]).astype(np.float32)
    V = np.hstack([Q, 0.5 * (b - b.mean())[:, None]]).astype(np.float32)
    return U, V


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    U, V = clustered()
    full = U.astype(np.float64) @ V.astype(np.float64).T
    return U, V, full


def brute_force(full: np.ndarray, k: int, excl: sp.csr_matrix | None = None) -> list[set[int]]:
    out = []
    for r in range(full.shape[0]):
        ex = set() if excl is None else set(excl.indices[excl.indptr[r]:excl.indptr[r + 1]].tolist())
        out.append(set(topk_naive(full[r], k, ex)[0]))
    return out


def recall(ids: np.ndarray, truth: list[set[int]]) -> float:
    hits = sum(len(set(row[row >= 0].tolist()) & t) for row, t in zip(ids, truth))
    return hits / sum(len(t) for t in truth)


# spec, parameters, floor (measured here: value in the comment)
CASES = [
    ("Flat", {}, 1.0),                                  # exact (IndexFlatIP)
    ("IVF32,Flat", {"nprobe": 8}, 0.95),                # 0.996
    ("IVF32,SQ8", {"nprobe": 8}, 0.95),                 # 0.996
    ("HNSW16", {"ef_search": 64}, 0.93),                # 0.975
    ("IVF16,PQ8x4", {"nprobe": 8}, 0.90),               # 0.984 (re-ranked 4k candidates)
    ("PQ8x4", {}, 0.85),                                # 0.955
    ("HNSW16", {"ef_search": 64, "metric": "ip"}, 0.90),  # 0.983, inner product forced
]


@pytest.mark.parametrize("spec,params,floor", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_recall_against_brute_force(data, spec: str, params: dict, floor: float) -> None:
    U, V, full = data
    k = 20
    idx = FaissIndex(spec, **params).build(V)
    ids, scores = idx.search(U, k)
    r = recall(ids, brute_force(full, k))
    assert r >= floor, f"{spec} {params}: recall@{k} {r:.3f} < {floor}"
    # reported scores are exact inner products of the returned items, best first
    valid = ids >= 0
    rows = np.nonzero(valid)[0]
    np.testing.assert_allclose(scores[valid], full[rows, ids[valid]], rtol=1e-5, atol=1e-4)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    assert np.all(valid.sum(axis=1) == k)


def test_metric_per_index_type() -> None:
    assert FaissIndex("Flat").metric_ == "ip"
    for spec in ("IVF64,Flat", "HNSW32", "IVF256,PQ16", "PQ8", "OPQ8_64,IVF64,PQ8"):
        assert FaissIndex(spec).metric_ == "l2", spec  # MIPS-to-L2 transform
    assert FaissIndex("HNSW32", metric="ip").metric_ == "ip"
    assert [family(s) for s in ("Flat", "IVF8,Flat", "HNSW8", "PQ4", "OPQ4_16,IVF8,PQ4", "LSH")] == \
        ["flat", "ivf", "hnsw", "pq", "ivf", "other"]


def test_pq_pads_dimensions_it_cannot_split(data) -> None:
    U, V, full = data
    idx = FaissIndex("PQ5x4").build(V)  # 16 dims + 1 transform dim -> padded to 20
    assert idx.pad_ == 3 and idx.index_.d == 20
    assert recall(idx.search(U[:50], 10)[0], brute_force(full[:50], 10)) >= 0.7


@pytest.mark.parametrize("spec,param", [("IVF32,Flat", "nprobe"), ("HNSW16", "efSearch")])
def test_target_recall_tuning_reaches_and_reports(data, caplog, spec: str, param: str) -> None:
    U, V, full = data
    idx = FaissIndex(spec).build(V)
    with caplog.at_level(logging.INFO, logger="fmrec.index"):
        result = idx.tune(U, 20, target_recall=0.97, n_users=200, random_state=1)
    assert result.reached and result.recall >= 0.97 and result.parameter == param
    assert result.n_users == 200 and len(result.history) >= 2  # started below the target and doubled
    values = [h[0] for h in result.history]
    n = values.index(max(values)) + 1
    assert all(b == 2 * a for a, b in zip(values[:n], values[1:n]))  # doubling up to the first value that reached ...
    assert all(values[n - 2] < v < values[n - 1] for v in values[n:])  # ... then bisection below it
    # a value reaches the target when its recall minus two standard errors does; the one kept is the
    # smallest tried that reaches it
    assert result.stderr > 0 and result.recall - 2 * result.stderr >= 0.97
    assert result.value == min(v for v, r, _, se in result.history if r - 2 * se >= 0.97)
    assert f"{param}={result.value}" in caplog.text and "recall@20" in caplog.text
    assert idx.tuned_ is result
    # the tuned setting holds on all users (the sample was representative)
    assert recall(idx.search(U, 20)[0], brute_force(full, 20)) >= 0.95


def test_unreachable_target_is_reported_not_hidden(data, caplog) -> None:
    U, V, _ = data
    idx = FaissIndex("PQ2x2", k_factor=1).build(V)  # 4 centroids per half: hopeless codes
    with caplog.at_level(logging.WARNING, logger="fmrec.index"):
        result = idx.tune(U, 20, target_recall=0.99, n_users=100)
    assert not result.reached and result.recall < 0.99
    assert "NOT reached" in caplog.text


@pytest.mark.parametrize("spec,params", [("Flat", {}), ("IVF32,Flat", {"nprobe": 2}), ("HNSW16", {"ef_search": 16}),
                                         ("IVF16,PQ8x4", {"nprobe": 2})])
def test_exclusions_never_leak_and_lists_stay_full(data, spec: str, params: dict) -> None:
    U, V, full = data
    rng = np.random.default_rng(4)
    n_users, n_items = U.shape[0], V.shape[0]
    # each user excludes its own top 30 (what an ANN returns first) plus random items;
    # user 0 excludes 1,500 items: past max_exclusions, answered by the exact index
    dense = rng.random((n_users, n_items)) < 0.05
    top = np.argsort(-full, axis=1)[:, :30]
    dense[np.arange(n_users)[:, None], top] = True
    dense[0, rng.permutation(n_items)[:1500]] = True
    excl = sp.csr_matrix(dense.astype(np.float32))
    idx = FaissIndex(spec, max_exclusions=400, batch_size=64, **params).build(V)
    k = 25
    ids, scores = idx.search(U, k, excl)
    for r in range(n_users):
        banned = set(excl.indices[excl.indptr[r]:excl.indptr[r + 1]].tolist())
        got = ids[r][ids[r] >= 0].tolist()
        assert not set(got) & banned, f"user {r}: excluded item leaked"
        assert len(got) == len(set(got)) == k
    if idx._ivf_lists() is None:  # faiss's own scan over-fetches: long histories go to the exact index
        assert idx.stats_["exact_fallback_users"] == 1
        exact_ids, exact_scores = ExactIndex().build(V).search(U[:1], k, excl[0])
        np.testing.assert_array_equal(ids[0], exact_ids[0])  # the fallback user is exact
    else:  # IVF,Flat list scan: every probed item is scored, whatever the history's length
        assert idx.stats_["exact_fallback_users"] == 0
    assert recall(ids, brute_force(full, k, excl)) >= (1.0 if spec == "Flat" else 0.6)


def test_short_approximate_lists_are_refilled_exactly(data) -> None:
    U, V, full = data
    idx = FaissIndex("IVF64,Flat", nprobe=1).build(V)  # ~31 items per list: fewer than k
    ids, _ = idx.search(U[:40], 60)
    assert np.all((ids >= 0).sum(axis=1) == 60)
    assert idx.stats_["short_lists_refilled"] > 0


def test_save_load_gives_identical_results(tmp_path: Path, data) -> None:
    U, V, _ = data
    excl = sp.random(U.shape[0], V.shape[0], density=0.02, random_state=0, format="csr")
    for spec, params in [("HNSW16", {"ef_search": 32}), ("IVF16,PQ8x4", {"nprobe": 4}), ("Flat", {})]:
        idx = FaissIndex(spec, **params).build(V)
        if spec == "HNSW16":
            idx.tune(U, 10, 0.9, n_users=50)
        before = idx.search(U, 10, excl)
        folder = idx.save(tmp_path / spec.replace(",", "_"))
        assert sorted(p.name for p in folder.iterdir()) == ["index.faiss", "index.json", "items.npy"]
        back = FaissIndex.load(folder)
        assert back.spec == spec and back.metric_ == idx.metric_
        assert back._param_value() == idx._param_value()
        after = back.build(V).search(U, 10, excl)  # build() with the same items keeps the loaded index
        np.testing.assert_array_equal(before[0], after[0])
        np.testing.assert_array_equal(before[1], after[1])
        if spec == "HNSW16":
            assert back.tuned_ is not None and back.tuned_.value == idx.tuned_.value
    meta = json.loads((tmp_path / "HNSW16" / "index.json").read_text())
    assert meta["transform"]["kind"] == "mips-to-l2" and meta["efSearch"] == idx_value(tmp_path / "HNSW16")


def idx_value(folder: Path) -> int:
    return FaissIndex.load(folder)._param_value()


def test_load_checks_the_sidecar(tmp_path: Path, data) -> None:
    U, V, _ = data
    folder = FaissIndex("HNSW16").build(V).save(tmp_path / "idx")
    with pytest.raises(ConfigError, match="different item vectors"):
        FaissIndex.load(folder).build(V[:-1])
    meta_path = folder / "index.json"
    good = meta_path.read_text()
    for mutate, phrase in [
        (lambda m: {**m, "format": "other"}, "not an fmrec faiss index"),
        (lambda m: {**m, "format_version": 99}, "newer"),
        (lambda m: {**m, "n_items": 5}, "disagree"),
        (lambda m: {**m, "metric": "ip"}, "disagree"),
        (lambda m: {**m, "checksums": {**m["checksums"], "index.faiss": "0" * 64}}, "checksum"),
    ]:
        meta_path.write_text(json.dumps(mutate(json.loads(good))))
        with pytest.raises(ArtifactError, match=phrase) as exc:
            FaissIndex.load(folder)
        assert "\n" not in str(exc.value)
    meta_path.write_text(good)
    (folder / "items.npy").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="checksum"):
        FaissIndex.load(folder)
    with pytest.raises(ArtifactError, match="not found"):
        FaissIndex.load(tmp_path / "nothing")


@pytest.mark.parametrize("spec,phrase", [
    ("IVF,Bogus", "unknown index"), ("hnsw-magic", "unknown index"), ("", "unknown index"),
])
def test_invalid_specs_are_one_line_config_errors(spec: str, phrase: str) -> None:
    with pytest.raises(ConfigError, match=phrase) as exc:
        make_index(spec)
    assert "\n" not in str(exc.value)


def test_invalid_parameters(data) -> None:
    _, V, _ = data
    with pytest.raises(ConfigError, match="IVF lists"):
        FaissIndex("IVF4096,Flat").build(V)
    with pytest.raises(ConfigError, match="nprobe applies to IVF"):
        FaissIndex("HNSW16", nprobe=4).build(V)
    with pytest.raises(ConfigError, match="ef_search applies to HNSW"):
        FaissIndex("IVF8,Flat", ef_search=4).build(V)
    with pytest.raises(ConfigError, match="metric"):
        FaissIndex("HNSW16", metric="cosine").build(V)
    with pytest.raises(ConfigError, match="apply to faiss"):
        make_index("exact", nprobe=3)
    with pytest.raises(ConfigError, match="target recall"):
        FaissIndex("HNSW16").build(V).tune(V[:3], 5, target_recall=1.5)


def test_cli_index_options(tmp_path: Path, capsys, data) -> None:
    from fmrec.cli.main import main

    U, V, _ = data
    path = tmp_path / "v.npz"
    np.savez(path, user_ids=np.arange(U.shape[0]), user_vectors=U, item_ids=np.arange(V.shape[0]), item_vectors=V)
    out = tmp_path / "r.jsonl"
    assert main(["-q", "recommend", "--vectors", str(path), "--k", "10", "--out", str(out), "--index", "IVF32,Flat",
                 "--target-recall", "0.95", "--tune-users", "100", "--save-index", str(tmp_path / "ix")]) == 0
    printed = capsys.readouterr().out
    assert "tuned IVF32,Flat: nprobe=" in printed and "target 0.950 reached" in printed
    assert main(["-q", "recommend", "--vectors", str(path), "--k", "10", "--out", str(tmp_path / "l.jsonl"),
                 "--load-index", str(tmp_path / "ix")]) == 0
    assert (tmp_path / "l.jsonl").read_text() == out.read_text()
    for argv, phrase in [(["--index", "IVF,Bogus"], "unknown index"), (["--nprobe", "4"], "need a faiss index"),
                         (["--index", "HNSW16", "--target-recall", "2"], "--target-recall")]:
        rc = main(["recommend", "--vectors", str(path), "--out", str(tmp_path / "e.jsonl"), *argv])
        err = capsys.readouterr().err
        assert rc == 1 and err.count("\n") == 1 and phrase in err, err
    assert not (tmp_path / "e.jsonl").exists()


# ----------------------------------------------------------------------------- the exact reference
@settings(max_examples=40, deadline=None)
@given(n_users=st.integers(1, 40), n_items=st.integers(1, 300), k=st.integers(1, 40), seed=st.integers(0, 9999),
       ties=st.booleans(), p_excl=st.sampled_from([0.0, 0.3, 1.0]), bu=st.integers(1, 30),
       bi=st.sampled_from([1, 7, 64, 100, 1000]), threads=st.sampled_from([1, 2]))
def test_fused_exact_index_matches_sorting_with_ties(n_users, n_items, k, seed, ties, p_excl, bu, bi,
                                                     threads) -> None:
    """ExactIndex (reordered items, 64-wide chunks, any block/thread split) == sort by (-score, position)."""
    rng = np.random.default_rng(seed)
    d = 3
    U = rng.normal(size=(n_users, d)).astype(np.float32)
    V = rng.normal(size=(n_items, d)).astype(np.float32)
    if ties:  # integer vectors: many exactly equal scores, computed exactly in float32
        U = np.round(U * 2).astype(np.float32)
        V = np.round(V * 2).astype(np.float32)
    excl = sp.csr_matrix((rng.random((n_users, n_items)) < p_excl).astype(np.float32))
    idx = ExactIndex(block_users=bu, block_items=bi, n_threads=threads).build(V)
    ids, scores = idx.search(U, k, excl)
    S = U @ V.T  # exact for the integer case; the tie-free case has no near ties at this size
    for r in range(n_users):
        banned = set(excl.indices[excl.indptr[r]:excl.indptr[r + 1]].tolist())
        ref_ids, ref_scores = topk_naive(S[r], k, banned)
        n = len(ref_ids)
        if ties:
            assert ids[r, :n].tolist() == ref_ids
        np.testing.assert_allclose(scores[r, :n], ref_scores, rtol=1e-5, atol=1e-5)
        assert np.all(ids[r, n:] == -1) and np.all(np.isneginf(scores[r, n:]))


@pytest.mark.parametrize("k", [1, 100, 300])
def test_fused_exact_index_wide_blocks_with_ties_and_exclusions(k: int) -> None:
    """Blocks wide enough for the sampled-threshold start (n_cols >= 8k), with many exact ties
    and exclusions, against a lexsort reference; and rows where the start must fall back."""
    rng = np.random.default_rng(k)
    n_users, n_items = 40, 5000
    U = rng.integers(-2, 3, size=(n_users, 4)).astype(np.float32)
    V = rng.integers(-2, 3, size=(n_items, 4)).astype(np.float32)
    dense = rng.random((n_users, n_items)) < 0.3
    dense[0, :] = True                      # nothing left
    dense[1, :] = True
    dense[1, rng.choice(n_items, k // 2 + 1, replace=False)] = False  # fewer than k left
    dense[2, :4900] = True                  # survivors only in the last block
    excl = sp.csr_matrix(dense.astype(np.float32))
    ids, scores = ExactIndex(block_items=2500).build(V).search(U, k, excl)
    S = U @ V.T
    for r in range(n_users):
        allowed = np.flatnonzero(~dense[r])
        order = allowed[np.lexsort((allowed, -S[r, allowed]))][:k]
        n = len(order)
        assert ids[r, :n].tolist() == order.tolist(), r
        np.testing.assert_array_equal(scores[r, :n], S[r, order])
        assert np.all(ids[r, n:] == -1) and np.all(np.isneginf(scores[r, n:]))


def _probed_reference(idx: FaissIndex, U: np.ndarray, V: np.ndarray, k: int, banned: np.ndarray):
    """Top-k by lexsort over exactly the items of each user's probed lists (faiss's quantizer)."""
    import faiss

    ivf = faiss.extract_index_ivf(idx.index_)
    _, probes = ivf.quantizer.search(idx._transform_queries(U), int(ivf.nprobe))
    inv = ivf.invlists
    members = [faiss.rev_swig_ptr(inv.get_ids(lst), inv.list_size(lst)).copy() if inv.list_size(lst) else
               np.zeros(0, np.int64) for lst in range(ivf.nlist)]
    S = U @ V.T
    ids = np.full((U.shape[0], k), -1, np.int64)
    scores = np.full((U.shape[0], k), -np.inf, np.float32)
    for r in range(U.shape[0]):
        cand = np.unique(np.concatenate([members[p] for p in probes[r] if p >= 0]))
        cand = cand[~banned[r, cand]]
        order = cand[np.lexsort((cand, -S[r, cand]))][:k]
        ids[r, :len(order)] = order
        scores[r, :len(order)] = S[r, order]
    return ids, scores


@pytest.mark.parametrize("metric", ["auto", "ip"])
@pytest.mark.parametrize("isa", [-1, 1, 0])
def test_list_scan_is_the_exact_top_k_of_the_probed_lists(metric: str, isa: int) -> None:
    """The C list scan (scan_lists) ranks every item of the probed lists by its true score,
    exclusions skipped, ties by smaller position: integer vectors make the reference exact.
    Portable C (isa 0), AVX2 (1) and AVX-512 give the same scores bit for bit."""
    from fmrec.index import _cbackend as C

    if not C.available():
        pytest.skip("the C kernels were not built here; test_c_kernels_are_built_in_ci covers CI")
    rng = np.random.default_rng(4)
    U = rng.integers(-3, 4, size=(150, 13)).astype(np.float32)
    V = rng.integers(-3, 4, size=(2000, 13)).astype(np.float32)
    banned = rng.random((150, 2000)) < 0.1
    excl = sp.csr_matrix(banned.astype(np.float32))
    idx = FaissIndex("IVF16,Flat", nprobe=3, metric=metric, batch_size=40, scan_lists=True).build(V)
    C.set_isa(isa)
    try:
        ids, scores = idx.search(U, 20, excl)
    finally:
        C.set_isa(-1)
    assert idx._ivf_lists() is not None
    ref_ids, ref_scores = _probed_reference(idx, U, V, 20, banned)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(scores, ref_scores)
    assert idx.stats_["exact_fallback_users"] == 0


def _seen(n_users: int, n_items: int) -> sp.csr_matrix:
    rng = np.random.default_rng(8)
    return sp.csr_matrix((rng.random((n_users, n_items)) < 0.02).astype(np.float32))


def test_list_scan_recall_is_at_least_faiss_own_scan(data) -> None:
    from fmrec.index import _cbackend as C

    if not (C.available() and C.ivf_fast()):
        pytest.skip("the C list scan needs the built kernels and AVX2 + FMA; test_c_kernels_are_built_in_ci covers CI")
    U, V, _ = data
    seen = _seen(U.shape[0], V.shape[0])
    fast = FaissIndex("IVF64,Flat", nprobe=4).build(V)
    slow = FaissIndex("IVF64,Flat", nprobe=4, scan_lists=False).build(V)
    exact_ids, _ = ExactIndex().build(V).search(U, 50, seen)
    a, _ = fast.search(U, 50, seen)
    b, _ = slow.search(U, 50, seen)
    assert slow._ivf_lists() is None and fast._ivf_lists() is not None

    def recall_(ids: np.ndarray) -> float:
        return float(np.mean([len(set(x) & set(y)) / 50 for x, y in zip(ids, exact_ids)]))

    assert recall_(a) >= recall_(b) - 1e-9
    for r in range(U.shape[0]):
        assert not set(a[r][a[r] >= 0].tolist()) & set(seen[r].indices.tolist())


def test_list_scan_short_lists_are_refilled_and_wrong_specs_refused(data) -> None:
    from fmrec.index import _cbackend as C

    U, V, _ = data
    seen = _seen(U.shape[0], V.shape[0])
    idx = FaissIndex("IVF64,Flat", nprobe=1).build(V)  # one list rarely holds k unseen items
    ids, scores = idx.search(U, 100, seen)
    want_ids, want_scores = ExactIndex().build(V).search(U, 100, seen)
    np.testing.assert_array_equal((ids >= 0).sum(axis=1), (want_ids >= 0).sum(axis=1))
    assert idx.stats_["short_lists_refilled"] > 0
    if C.available():
        with pytest.raises(ConfigError, match="scan_lists needs an IVF"):
            FaissIndex("HNSW8", scan_lists=True).build(V).search(U[:2], 5)


def test_flat_dedup_lists_are_not_scanned_in_c() -> None:
    """IVF…,FlatDedup keeps one copy of identical vectors in its lists; scanning them would
    drop the copies, so that index keeps faiss's own search (which expands duplicates)."""
    rng = np.random.default_rng(2)
    base = rng.normal(size=(200, 8)).astype(np.float32)
    V = np.concatenate([base, base])  # every vector twice
    U = rng.normal(size=(30, 8)).astype(np.float32)
    idx = FaissIndex("IVF4,FlatDedup", nprobe=4).build(V)
    ids, scores = idx.search(U, 10)
    assert idx._ivf_lists() is None
    full = U @ V.T
    want = -np.sort(-full, axis=1)[:, :10]
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-5)
