"""Reproducible multi-threaded SGD (fmrec.model._strata): same seed + same thread count = same model."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from fmrec.data import Interactions
from fmrec.model import FactorizationMachine
from fmrec.model import _kernels as K
from fmrec.model._strata import Strata, balanced_blocks

from reference import sgd_step_naive


def data_with_features(seed: int = 0) -> tuple[Interactions, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows = [(u, i) for u in range(40) for i in range(30) if rng.random() < 0.3]
    df = pd.DataFrame(rows, columns=["user_id", "item_id"])
    df["rating"] = rng.integers(1, 6, len(df)).astype(float)
    users = pd.DataFrame({"user_id": range(40), "group": rng.choice(["a", "b", "c"], 40)})
    items = pd.DataFrame({"item_id": range(30), "genre": rng.choice(["x", "y"], 30)})
    return Interactions.from_frame(df), users, items


@pytest.mark.parametrize("kw", [
    dict(task="regression"),
    dict(task="binary"),
    dict(task="ranking", loss="bpr"),
    dict(task="ranking", loss="warp"),
], ids=["regression", "binary", "bpr", "warp"])
def test_two_threads_same_seed_same_model(kw: dict) -> None:
    from fmrec.data.features import FeatureTable

    data, users, items = data_with_features()
    ut = FeatureTable.from_frame(users, "user_id", {"group": "categorical"})
    it = FeatureTable.from_frame(items, "item_id", {"genre": "categorical"})
    fits = [FactorizationMachine(n_factors=4, n_epochs=4, n_threads=2, random_state=3, **kw)
            .fit(data, user_features=ut, item_features=it) for _ in range(3)]
    for other in fits[1:]:
        np.testing.assert_array_equal(other.V_, fits[0].V_)
        np.testing.assert_array_equal(other.w_, fits[0].w_)
        assert other.w0_ == fits[0].w0_
    # another seed is another model, and 2 threads is not the 1-thread schedule
    b = FactorizationMachine(n_factors=4, n_epochs=4, n_threads=2, random_state=4, **kw).fit(
        data, user_features=ut, item_features=it)
    c = FactorizationMachine(n_factors=4, n_epochs=4, n_threads=1, random_state=3, **kw).fit(
        data, user_features=ut, item_features=it)
    assert not np.array_equal(b.V_, fits[0].V_) and not np.array_equal(c.V_, fits[0].V_)


def test_two_threads_on_a_plain_design_matrix_are_reproducible() -> None:
    data, _, _ = data_with_features(1)
    X = data.to_csr(binary=True)
    M = sp.hstack([sp.identity(X.shape[0]), X], format="csr")  # any matrix: every column shared
    y = np.random.default_rng(0).normal(size=M.shape[0])
    a, b = (FactorizationMachine(n_factors=3, n_epochs=3, n_threads=2, random_state=0).fit(M, y) for _ in range(2))
    np.testing.assert_array_equal(a.V_, b.V_)
    assert np.isfinite(a.predict(M)).all()


def strata_epoch_reference(X: np.ndarray, y: np.ndarray, user_block: np.ndarray, item_block: np.ndarray, T: int,
                           order: np.ndarray, params: dict, lr: tuple, l2: tuple) -> dict:
    """The schedule written out: in round s thread t runs plain SGD (one naive step per
    row) on its own copy of the round's starting state over the rows of stratum
    (t, (t + s) % T) in epoch order (``user_block``/``item_block``: each row's blocks);
    then every parameter becomes G + sum_t (P_t - G).  (Exclusive columns change in
    one thread only, so this is exact for them too.)"""
    for s in range(T):
        start = copy.deepcopy(params)
        copies = []
        for t in range(T):
            P = copy.deepcopy(start)
            for r in order:
                if user_block[r] == t and item_block[r] == (t + s) % T:
                    sgd_step_naive(X[r], y[r], "regression", P, lr, l2, "adagrad")
            copies.append(P)
        for key in params:
            g = start[key].astype(np.float64)
            params[key] = (g + sum(P[key].astype(np.float64) - g for P in copies)).astype(start[key].dtype)
    return params


def test_strata_rounds_equal_the_schedule_written_out() -> None:
    from fmrec.model._strata import id_columns

    data, users, _ = data_with_features(2)
    from fmrec.data.encode import Encoder
    from fmrec.data.features import FeatureTable, SideFeatures

    ut = SideFeatures.fit(FeatureTable.from_frame(users, "user_id", {"group": "categorical"}))
    enc = Encoder(data.user_map, data.item_map, ut)
    M = enc.transform(data)
    n, k, T = M.shape[1], 3, 2
    rng = np.random.default_rng(0)
    y = rng.normal(3, 1, M.shape[0])
    params = {"w0": np.array([3.0]), "w": np.zeros(n, np.float32),
              "V": (rng.normal(size=(n, k)) * 0.1).astype(np.float32),
              "g_w0": np.zeros(1), "g_w": np.zeros(n, np.float32), "g_V": np.zeros((n, k), np.float32)}
    lr = (0.05, 0.05, 0.05)
    l2 = (0.0, rng.uniform(0, 0.05, n).astype(np.float32), rng.uniform(0, 0.05, n).astype(np.float32))
    order = rng.permutation(M.shape[0])
    strata = Strata(T, n, id_columns(enc), np.bincount(data.user_idx), np.bincount(data.item_idx))
    want = strata_epoch_reference(M.toarray(), y, strata.user_block[data.user_idx],
                                  strata.item_block[data.item_idx], T, order, copy.deepcopy(params), lr, l2)

    assert strata.n_shared == enc._field("user:group").size  # only the feature field is shared
    idx = strata.remap(M, strata.thread_of(data.user_idx, M.shape[0]))
    w_e, V_e, gw_e, gV_e = (strata.extend(params[key].copy()) for key in ("w", "V", "g_w", "g_V"))
    w0, g_w0 = params["w0"].copy(), params["g_w0"].copy()
    w0s, g_w0s = np.zeros(T), np.zeros(T)
    l2_ext = (l2[0], *strata.penalties(l2[1], l2[2]))  # each thread copy keeps its column's penalty
    for rows, bounds, _ in strata.rounds(order, data.user_idx, data.item_idx):
        strata.begin_round(w_e, V_e, gw_e, gV_e)
        w0s[:], g_w0s[:] = w0[0], g_w0[0]
        K.sgd_round(M.indptr.astype(np.int64), idx, M.data.astype(np.float32), y, rows, bounds,
                    K.TASK_REGRESSION, K.OPT_ADAGRAD, w0s, w_e, V_e, g_w0s, gw_e, gV_e, *lr, *l2_ext)
        strata.end_round(w_e, V_e, gw_e, gV_e)
        w0[0] += np.sum(w0s - w0[0])
        g_w0[0] += np.sum(g_w0s - g_w0[0])
    np.testing.assert_allclose(w0, want["w0"], rtol=1e-6)
    np.testing.assert_allclose(w_e[:n], want["w"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(V_e[:n], want["V"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gV_e[:n], want["g_V"], rtol=1e-4, atol=1e-7)


def test_round_schedule_covers_every_row_once_with_disjoint_blocks() -> None:
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, 50, 500), rng.integers(0, 40, 500)
    for T in (2, 3):
        st = Strata(T, 90, np.ones(90, bool), np.bincount(u, minlength=50), np.bincount(i, minlength=40))
        order = rng.permutation(500)
        seen = []
        for rows, bounds, blocks in st.rounds(order, u, i):
            assert sorted(blocks.tolist()) == list(range(T))  # a permutation of item blocks
            for t in range(T):
                mine = rows[bounds[t, 0]:bounds[t, 1]]
                assert np.all(st.user_block[u[mine]] == t) and np.all(st.item_block[i[mine]] == blocks[t])
                assert list(mine) == [r for r in order if r in set(mine.tolist())]  # epoch order kept
                seen.extend(mine.tolist())
        assert sorted(seen) == list(range(500))


def test_streaming_with_two_threads_is_reproducible(tmp_path) -> None:
    data, _, _ = data_with_features(3)
    data.to_frame().to_parquet(tmp_path / "d.parquet", row_group_size=100)
    for kw in (dict(task="regression"), dict(task="ranking", loss="bpr")):
        a, b = (FactorizationMachine(n_factors=3, n_epochs=3, n_threads=2, random_state=0, **kw)
                .fit_parquet(tmp_path / "d.parquet", batch_rows=150) for _ in range(2))
        np.testing.assert_array_equal(a.V_, b.V_)


# ------------------------------------------------------------------ per-field L2 (SGD, ALS)
@pytest.mark.parametrize("solver", ["sgd", "als"])
def test_field_l2_penalises_only_the_named_field(solver: str) -> None:
    from fmrec.data.features import FeatureTable

    data, users, items = data_with_features(4)
    it = FeatureTable.from_frame(items, "item_id", {"genre": "categorical"})
    kw = dict(n_factors=3, n_epochs=8, solver=solver, random_state=0)
    free = FactorizationMachine(**kw).fit(data, item_features=it)
    tied = FactorizationMachine(**kw, field_l2={"item:genre": 1e4}).fit(data, item_features=it)
    f = free.encoder_._field("item:genre")
    genre = slice(f.offset, f.offset + f.size)
    assert np.abs(tied.V_[genre]).max() < 0.05 * np.abs(free.V_[genre]).max()
    assert np.abs(tied.w_[genre]).max() < 0.05 * max(np.abs(free.w_[genre]).max(), 1e-6)
    # naming a field with the default penalties changes nothing: the mapping touches only that field
    same = FactorizationMachine(**kw, field_l2={"item:genre": (free._l2_linear(), free._l2_factors())}).fit(
        data, item_features=it)
    np.testing.assert_array_equal(same.V_, free.V_)
    np.testing.assert_array_equal(same.w_, free.w_)


def test_field_l2_errors_and_cli(tmp_path, capsys) -> None:
    from fmrec.cli.main import main
    from fmrec.errors import ConfigError
    from fmrec.model import load_model

    data, _, _ = data_with_features(5)
    with pytest.raises(ConfigError, match="unknown field 'item:colour'.*'user', 'item'"):
        FactorizationMachine(n_epochs=1, field_l2={"item:colour": 1.0}).fit(data)
    with pytest.raises(ConfigError, match="non-negative"):
        FactorizationMachine(n_epochs=1, field_l2={"user": -1.0}).fit(data)
    with pytest.raises(ConfigError, match="mcmc"):
        FactorizationMachine(solver="mcmc", field_l2={"user": 1.0}).fit(data)
    with pytest.raises(ConfigError, match="field layout"):
        X = data.to_csr(binary=True)
        FactorizationMachine(n_epochs=1, field_l2={"user": 1.0}).fit(X, np.ones(X.shape[0]))
    data.to_frame().to_csv(tmp_path / "t.csv", index=False)
    assert main(["-q", "train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m"), "--epochs", "2",
                 "--field-l2", "user=0.5,item=0.1/0.2"]) == 0
    assert load_model(tmp_path / "m").field_l2 == {"user": 0.5, "item": [0.1, 0.2]}
    assert main(["train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m2"), "--field-l2", "user"]) == 1
    assert "--field-l2: expected FIELD=L2" in capsys.readouterr().err


def test_blocks_are_balanced_by_rows_even_for_skewed_popularity() -> None:
    rng = np.random.default_rng(0)
    counts = np.bincount(np.minimum(rng.zipf(1.3, 200_000) - 1, 4999), minlength=5000)
    for T in (2, 3, 4):
        b = balanced_blocks(counts, T)
        load = np.bincount(b, weights=counts, minlength=T)
        assert set(b.tolist()) == set(range(T))
        # the heaviest item alone may exceed total / T; otherwise the blocks are within 2 %
        assert load.max() <= max(1.02 * counts.sum() / T, counts.max() * 1.02)
        assert np.array_equal(b, balanced_blocks(counts, T))  # deterministic
    assert np.all(balanced_blocks(counts, 1) == 0)
