"""Ranking task (BPR / WARP): gradient against finite differences, learning, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from fmrec.data import Interactions
from fmrec.errors import ConfigError, DataError
from fmrec.model import FactorizationMachine, load_model, save_model
from fmrec.model import _kernels as K
from fmrec.recommend import recommend_all
from fmrec.topk import TopK

from reference import fm_score_naive


def test_pair_update_matches_finite_difference_gradient() -> None:
    """One pairwise step with plain SGD moves every parameter by -lr * g * dd/dtheta,
    where d = y(x_u + x_i) - y(x_u + x_j), on multi-feature rows with shared features."""
    rng = np.random.default_rng(0)
    n_feat, k = 10, 3
    xu = np.zeros(n_feat); xu[[0, 1]] = [1.0, 0.5]           # user side: two features
    xi = np.zeros(n_feat); xi[[4, 7, 8]] = [1.0, 0.3, 0.6]   # item i
    xj = np.zeros(n_feat); xj[[5, 7]] = [1.0, 0.8]           # item j shares feature 7
    w = rng.normal(size=n_feat).astype(np.float32)
    V = rng.normal(size=(n_feat, k)).astype(np.float32)

    def d_of(w_, V_):
        return fm_score_naive(xu + xi, 0.0, w_, V_) - fm_score_naive(xu + xj, 0.0, w_, V_)

    eps = 1e-3
    grad_V = np.zeros_like(V, dtype=np.float64)
    for l in range(n_feat):
        for f in range(k):
            Vp, Vm = V.astype(np.float64), V.astype(np.float64)
            Vp[l, f] += eps; Vm[l, f] -= eps
            grad_V[l, f] = (d_of(w, Vp) - d_of(w, Vm)) / (2 * eps)
    grad_w = np.array([(d_of(w + eps * (np.arange(n_feat) == l), V) - d_of(w - eps * (np.arange(n_feat) == l), V))
                       / (2 * eps) for l in range(n_feat)])
    U = sp.csr_matrix(xu[None, :].astype(np.float32))
    It = sp.csr_matrix(np.stack([xi, xj]).astype(np.float32))
    p_u = (xu @ V.astype(np.float64))
    q_i = xi @ V.astype(np.float64)
    q_j = xj @ V.astype(np.float64)
    g, lr = 0.7, 1e-4
    w2, V2 = w.copy(), V.copy()
    # shared feature 7: the kernel applies i's then j's step; with a tiny lr the sum equals the joint gradient
    K._pair_update(U.indptr.astype(np.int64), U.indices.astype(np.int32), U.data, 0,
                   It.indptr.astype(np.int64), It.indices.astype(np.int32), It.data, 0, 1, g, K.OPT_SGD,
                   w2, V2, np.zeros(n_feat, np.float32), np.zeros((n_feat, k), np.float32),
                   lr, lr, np.zeros(n_feat, np.float32), np.zeros(n_feat, np.float32), p_u, q_i, q_j)
    np.testing.assert_allclose((V2 - V) / (-lr * g), grad_V, rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose((w2 - w) / (-lr * g), grad_w, rtol=2e-2, atol=2e-2)


def checkerboard(n_users: int = 40, n_items: int = 30, seed: int = 0):
    """Two user groups, two item groups; users interact with every item of their own group.
    One in-group item per user is held out: it must be ranked first among unseen items."""
    rng = np.random.default_rng(seed)
    rows, held = [], {}
    for u in range(n_users):
        group = u % 2
        items = [i for i in range(n_items) if i % 2 == group]
        out = int(rng.choice(items))
        held[u] = out
        rows += [(u, i) for i in items if i != out]
    df = pd.DataFrame(rows, columns=["user_id", "item_id"])
    return Interactions.from_frame(df), held


@pytest.mark.parametrize("loss", ["bpr", "warp"])
def test_ranking_learns_checkerboard(loss: str) -> None:
    data, held = checkerboard()
    fm = FactorizationMachine(task="ranking", loss=loss, n_factors=4, n_epochs=100, learning_rate=0.1,
                              init_std=0.1, l2_linear=0.0, l2_factors=0.0, random_state=0).fit(data)
    tk = TopK.concat(list(recommend_all(fm, 1, seen=data.to_csr(binary=True))))
    firsts = dict(zip(tk.user_ids.tolist(), tk.item_ids[:, 0].tolist()))
    assert all(firsts[u] == held[u] for u in held), {u: (firsts[u], held[u]) for u in held if firsts[u] != held[u]}


def test_ranking_same_seed_same_model_and_threads_learn() -> None:
    data, held = checkerboard(seed=1)
    a = FactorizationMachine(task="ranking", loss="bpr", n_factors=4, n_epochs=3, random_state=5).fit(data)
    b = FactorizationMachine(task="ranking", loss="bpr", n_factors=4, n_epochs=3, random_state=5).fit(data)
    np.testing.assert_array_equal(a.V_, b.V_)
    c = FactorizationMachine(task="ranking", loss="warp", n_factors=4, n_epochs=40, learning_rate=0.1,
                             init_std=0.1, l2_factors=0.0, n_threads=2, random_state=0).fit(data)
    tk = TopK.concat(list(recommend_all(c, 1, seen=data.to_csr(binary=True))))
    hits = np.mean([i == held[u] for u, i in zip(tk.user_ids.tolist(), tk.item_ids[:, 0].tolist())])
    assert hits >= 0.9


def test_positive_threshold_and_validation_early_stopping(tmp_path) -> None:
    data, held = checkerboard(seed=2)
    rated = Interactions(data.user_idx, data.item_idx, np.where(data.item_idx % 3 == 0, 1.0, 5.0),
                         data.user_map, data.item_map)
    fm = FactorizationMachine(task="ranking", positive_threshold=4, n_factors=4, n_epochs=2, random_state=0)
    fm.fit(rated)
    assert fm.train_pattern_.nnz == int((rated.rating >= 4).sum())
    valid = pd.DataFrame({"user_id": list(held), "item_id": list(held.values())})
    fm2 = FactorizationMachine(task="ranking", loss="bpr", n_factors=4, n_epochs=30, learning_rate=0.1,
                               init_std=0.1, patience=3, verbose=False, random_state=0).fit(data, valid=valid)
    vals = [h["valid_ndcg@10"] for h in fm2.history_]
    assert fm2.best_epoch_ == int(np.argmax(vals)) + 1
    assert max(vals) > 0.5
    path = save_model(fm2, tmp_path / "m", seen=data.to_csr(binary=True))
    loaded = load_model(path)
    assert loaded.task == "ranking" and loaded.loss == "bpr"
    np.testing.assert_array_equal(loaded.decision_function(valid), fm2.decision_function(valid))


def test_ranking_errors() -> None:
    data, _ = checkerboard()
    with pytest.raises(ConfigError, match="loss"):
        FactorizationMachine(task="ranking", loss="hinge").fit(data)
    with pytest.raises(ConfigError, match="Interactions"):
        FactorizationMachine(task="ranking").fit(sp.csr_matrix(np.eye(3)), np.ones(3))
    with pytest.raises(DataError, match="needs ratings"):
        FactorizationMachine(task="ranking", positive_threshold=4).fit(data)


def test_deterministic_mode_is_thread_count_independent() -> None:
    data, _ = checkerboard(seed=4)
    models = [FactorizationMachine(task=task, loss="warp", n_factors=4, n_epochs=3, n_threads=nt, deterministic=True,
                                   random_state=1).fit(data if task == "ranking" else Interactions(
                                       data.user_idx, data.item_idx, np.ones(len(data)), data.user_map, data.item_map))
              for task in ("ranking", "regression") for nt in (1, 2)]
    np.testing.assert_array_equal(models[0].V_, models[1].V_)
    np.testing.assert_array_equal(models[2].V_, models[3].V_)
