"""Relational (block) designs for MCMC, implicit-feedback fields and the day context field."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from fmrec.data import Interactions
from fmrec.data.encode import Encoder
from fmrec.errors import ConfigError, DataError
from fmrec.export import export_vectors
from fmrec.model import FactorizationMachine, load_model, save_model
from fmrec.model._als import scores_into
from fmrec.model._blocks import BlockDesign, block_scores_into
from fmrec.model._mcmc import fit_mcmc
from fmrec.recommend import recommend_all
from fmrec.topk import TopK

from reference import assert_topk_equivalent, fm_score_naive


def random_design(seed: int, n_rows: int = 80) -> tuple[BlockDesign, np.ndarray]:
    """Three blocks: user-like (one-hot + dense-ish extras), item-like, and a context
    block whose last row is all zeros; some block rows unused, maps repeat."""
    rng = np.random.default_rng(seed)
    nu, ni, nd = 9, 11, 5
    BU = sp.hstack([sp.identity(nu), sp.random(nu, 6, density=0.6, random_state=seed,
                                               data_rvs=lambda n: rng.normal(size=n))], format="csr")
    BI = sp.hstack([sp.identity(ni), sp.random(ni, 4, density=0.5, random_state=seed + 1)], format="csr")
    BD = sp.vstack([sp.identity(nd), sp.csr_matrix((1, nd))], format="csr")
    u = rng.integers(0, nu - 1, n_rows)  # the last user row is never used
    i = rng.integers(0, ni, n_rows)
    d = rng.integers(0, nd + 1, n_rows)  # nd = the zero row
    design = BlockDesign([(BU, u), (BI, i), (BD, d)])
    groups = np.repeat(np.arange(5), [nu, 6, ni, 4, nd])
    return design, groups


@pytest.mark.parametrize("task", ["regression", "binary"])
@pytest.mark.parametrize("seed", [0, 1])
def test_block_chain_equals_the_expanded_chain(task: str, seed: int) -> None:
    """Same seed, same conditionals, same random numbers: the block sweep must
    reproduce the plain sampler on the expanded matrix (up to float rounding)."""
    design, groups = random_design(seed)
    X = design.expand()
    rng = np.random.default_rng(seed + 10)
    y = rng.normal(3, 1, X.shape[0])
    if task == "binary":
        y = (y > 3).astype(np.float64)
    kw = dict(task=task, n_factors=3, n_iter=6, n_burn_in=2, n_kept=3, groups=groups, init_std=0.1)
    pred_design = design.take(np.arange(0, X.shape[0], 3))
    a = fit_mcmc(X, y, rng=np.random.default_rng(7), X_pred=pred_design.expand(), **kw)
    b = fit_mcmc(design, y, rng=np.random.default_rng(7), X_pred=pred_design, **kw)
    np.testing.assert_allclose(b["w0"], a["w0"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(b["w"], a["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b["V"], a["V"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b["pred"], a["pred"], rtol=1e-9, atol=1e-9)
    assert [h["alpha"] for h in b["history"]] == pytest.approx([h["alpha"] for h in a["history"]], rel=1e-9)


def test_block_scores_equal_plain_scores_and_naive_fm() -> None:
    design, _ = random_design(3, n_rows=50)
    X = design.expand()
    rng = np.random.default_rng(0)
    n, k = X.shape[1], 4
    w0, w, V = 0.3, rng.normal(size=n), rng.normal(size=(n, k))
    arr = design.arrays()
    col_off, r_off, nz_off, rp_off, _, ip, ix, dt, _, _, _, maps, _ = arr
    R = r_off[-1]
    got = np.empty(X.shape[0])
    block_scores_into(col_off, r_off, nz_off, rp_off, ip, ix, dt, maps, w0, w, V, got,
                      np.empty(R), np.empty((R, k)), np.empty((R, k)))
    plain = np.empty(X.shape[0])
    Xc = sp.csr_matrix(X)
    scores_into(Xc.indptr.astype(np.int64), Xc.indices.astype(np.int32), Xc.data.astype(np.float32), w0, w, V,
                plain, np.empty(k))
    naive = np.array([fm_score_naive(x, w0, w, V) for x in X.toarray()])
    np.testing.assert_allclose(got, plain, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got, naive, rtol=1e-5, atol=1e-5)  # naive sums the float32 data


def test_block_design_rejects_bad_blocks() -> None:
    B = sp.identity(3, format="csr")
    with pytest.raises(DataError, match="maps 2 rows"):
        BlockDesign([(B, [0, 1, 2]), (B, [0, 1])])
    with pytest.raises(DataError, match="outside its 3 rows"):
        BlockDesign([(B, [0, 3])])
    bad = sp.csr_matrix(np.array([[np.nan, 1.0]]))
    with pytest.raises(DataError, match="non-finite"):
        BlockDesign([(bad, [0])])
    with pytest.raises(DataError, match="at least one block"):
        BlockDesign([])


# ------------------------------------------------------------------ implicit fields
def small_interactions(with_time: bool = True) -> Interactions:
    rng = np.random.default_rng(5)
    rows = [(u, i) for u in range(1, 16) for i in range(100, 126) if rng.random() < 0.3]
    df = pd.DataFrame(rows, columns=["user_id", "item_id"])
    df["rating"] = rng.integers(1, 6, len(df)).astype(float)
    if with_time:
        df["timestamp"] = 1_000_000_000 + rng.integers(0, 6, len(df)) * 86400 + rng.integers(0, 86400, len(df))
    return Interactions.from_frame(df)


def test_implicit_matrices_are_the_scaled_training_pattern() -> None:
    data = small_interactions()
    ui, ii = Encoder.implicit_matrices(data, "both")
    P = data.to_csr(binary=True).toarray()
    n_u = P.sum(axis=1, keepdims=True)
    n_i = P.sum(axis=0, keepdims=True)
    np.testing.assert_allclose(ui.toarray(), P / np.sqrt(np.maximum(n_u, 1)), rtol=1e-6)
    np.testing.assert_allclose(ii.toarray(), (P / np.sqrt(np.maximum(n_i, 1))).T, rtol=1e-6)
    assert Encoder.implicit_matrices(data, "user")[1] is None
    assert Encoder.implicit_matrices(data, None) == (None, None)
    with pytest.raises(ConfigError, match="implicit must be one of"):
        Encoder.implicit_matrices(data, "items")
    # a repeated (user, item) row counts once
    df = data.to_frame()
    dup = pd.concat([df, df.iloc[:3]], ignore_index=True)
    twice = Interactions.from_frame(dup, duplicates="keep")
    np.testing.assert_allclose(Encoder.implicit_matrices(twice, "user")[0].toarray(), ui.toarray(), rtol=1e-6)


def test_encoder_rows_with_implicit_and_context_fields() -> None:
    data = small_interactions()
    fm = FactorizationMachine(task="regression", solver="mcmc", n_factors=2, n_epochs=3, implicit="both",
                              context="day", random_state=0).fit(data)
    enc = fm.encoder_
    names = [f["name"] for f in enc.layout()]
    assert names == ["user", "user/implicit", "item", "item/implicit", "context/day"]
    # a known user's row: its ID column + its implicit row; a cold user: nothing
    u_row = enc.user_rows_for(np.array([1, 999])).toarray()
    f_imp = enc._field("user/implicit")
    uidx = enc.user_map.to_index([1])[0]
    np.testing.assert_allclose(u_row[0, f_imp.offset:f_imp.offset + f_imp.size], enc.user_implicit[uidx].toarray()[0])
    assert u_row[1].sum() == 0
    # the day column of a training row, none for an unseen day or a missing time
    X = enc.transform(data)
    f_day = enc._field("context/day")
    days = Encoder.days_of(data.timestamp)
    expected = np.searchsorted(np.unique(days), days)
    got = X[:, f_day.offset:f_day.offset + f_day.size].toarray()
    assert np.array_equal(got.argmax(axis=1), expected) and np.all(got.sum(axis=1) == 1)
    late = Interactions(data.user_idx[:2], data.item_idx[:2], data.rating[:2], data.user_map, data.item_map,
                        np.array([4_000_000_000, data.timestamp[0]]))
    row = enc.transform(late)[:, f_day.offset:f_day.offset + f_day.size].toarray()
    assert row[0].sum() == 0 and row[1].sum() == 1
    # the block design of the fit is the expanded design
    from fmrec.model._blocks import BlockDesign as BD

    blocks = BD([(enc.side_block("user")[0], data.user_idx), (enc.side_block("item")[0], data.item_idx),
                 enc.context_block(data.timestamp, len(data))])
    np.testing.assert_allclose(blocks.expand().toarray(), X.toarray(), rtol=1e-7)


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_mcmc_with_implicit_features_and_context_is_exact_through_the_index(task: str, tmp_path) -> None:
    from test_features import item_table, user_table

    data = small_interactions()
    ids_u = np.unique(data.user_map.ids)
    ut = user_table(tuple(ids_u.tolist()) + (77,))          # 77: a cold user with features
    it = item_table(tuple(range(100, 126)) + (300,))        # 300: a cold item
    fm = FactorizationMachine(task=task, solver="mcmc", n_factors=3, n_epochs=15, n_samples=4, implicit="both",
                              context="day", random_state=1).fit(data, user_features=ut, item_features=it)
    fm = load_model(save_model(fm, tmp_path / "m", seen=data.to_csr(binary=True)))  # through the artifact
    users = np.r_[ids_u, 77]
    items = np.r_[np.arange(100, 126), 300]
    uv, iv = export_vectors(fm, users=users, items=items)
    got = uv.vectors.astype(np.float64) @ iv.vectors.astype(np.float64).T + uv.constants[:, None]
    uu, ii = np.meshgrid(users, items, indexing="ij")
    X = fm.encoder_.transform_ids(uu.ravel(), ii.ravel())
    naive = np.array([fm_score_naive(x, fm.w0_, fm.w_, fm.V_) for x in X.toarray()]).reshape(got.shape)
    np.testing.assert_allclose(got, naive, rtol=1e-4, atol=1e-4)
    # recommend (no context) == decision_function of the pairs without a time, for every list
    seen = data.to_csr(binary=True)
    tk = TopK.concat(list(recommend_all(fm, 6, seen=seen, user_features=ut, item_features=it)))
    assert 77 in tk.user_ids.tolist()
    for r, u in enumerate(tk.user_ids.tolist()):
        truth = fm.decision_function(pd.DataFrame({"user_id": [u] * len(items), "item_id": items}))
        np.testing.assert_allclose(truth, naive[list(users).index(u)], rtol=1e-4, atol=1e-4)
        uidx = fm.encoder_.user_map.to_index([u])[0]
        excl = set()
        if uidx >= 0:
            seen_ids = fm.encoder_.item_map.ids[seen.indices[seen.indptr[uidx]:seen.indptr[uidx + 1]]]
            excl = {int(np.flatnonzero(items == s)[0]) for s in seen_ids}
        pos = np.array([int(np.flatnonzero(items == x)[0]) for x in tk.item_ids[r]])
        assert_topk_equivalent(pos, tk.scores[r].astype(np.float64), truth, 6, excl, rtol=1e-4, atol=1e-4)


def test_predict_uses_the_day_when_there_is_one() -> None:
    data = small_interactions()
    fm = FactorizationMachine(task="regression", solver="mcmc", n_factors=2, n_epochs=20, context="day",
                              random_state=0).fit(data)
    with_time = fm.decision_function(data)
    df = data.to_frame().drop(columns="timestamp")
    without = fm.decision_function(df)
    X = fm.encoder_.transform(data).toarray()
    naive = np.array([fm_score_naive(x, fm.w0_, fm.w_, fm.V_) for x in X])
    np.testing.assert_allclose(with_time, naive, rtol=1e-5, atol=1e-5)
    assert np.abs(with_time - without).max() > 1e-4
    np.testing.assert_allclose(without, fm.score_pairs(df.user_id.to_numpy(), df.item_id.to_numpy()), rtol=1e-6)


def test_implicit_and_context_errors(tmp_path) -> None:
    data = small_interactions(with_time=False)
    with pytest.raises(ConfigError, match="needs timestamps"):
        FactorizationMachine(solver="mcmc", n_epochs=2, context="day").fit(data)
    with pytest.raises(ConfigError, match="context must be"):
        FactorizationMachine(context="hour").fit(data)
    with pytest.raises(ConfigError, match="implicit must be"):
        FactorizationMachine(implicit="yes").fit(data)
    with pytest.raises(ConfigError, match="ranking"):
        FactorizationMachine(task="ranking", context="day").fit(data)
    X = data.to_csr(binary=True)
    with pytest.raises(ConfigError, match="built from interactions"):
        FactorizationMachine(implicit="user").fit(X, np.ones(X.shape[0]))
    from fmrec.model.streaming import ParquetSource

    data.to_frame().to_parquet(tmp_path / "d.parquet")
    with pytest.raises(ConfigError, match="streaming"):
        FactorizationMachine(implicit="both").fit(ParquetSource(tmp_path / "d.parquet"))


@pytest.mark.parametrize("solver", ["sgd", "als"])
def test_other_solvers_train_with_implicit_fields(solver: str) -> None:
    """SGD and ALS use the expanded rows: slower, same model family, still exact to export."""
    data = small_interactions()
    fm = FactorizationMachine(task="regression", solver=solver, n_factors=3, n_epochs=5, implicit="user",
                              random_state=0).fit(data)
    users, items = data.user_map.ids, data.item_map.ids
    uv, iv = export_vectors(fm, users=users, items=items)
    got = uv.vectors.astype(np.float64) @ iv.vectors.astype(np.float64).T + uv.constants[:, None]
    uu, ii = np.meshgrid(users, items, indexing="ij")
    truth = fm.decision_function(pd.DataFrame({"user_id": uu.ravel(), "item_id": ii.ravel()})).reshape(got.shape)
    np.testing.assert_allclose(got, truth, rtol=1e-4, atol=1e-4)


def test_ranking_with_implicit_user_field_is_exact() -> None:
    data = small_interactions()
    fm = FactorizationMachine(task="ranking", n_factors=4, n_epochs=5, implicit="user", random_state=0).fit(data)
    seen = data.to_csr(binary=True)
    tk = TopK.concat(list(recommend_all(fm, 5, seen=seen)))
    items = fm.encoder_.item_map.ids
    for r, u in enumerate(tk.user_ids.tolist()):
        truth = fm.decision_function(pd.DataFrame({"user_id": [u] * len(items), "item_id": items}))
        uidx = fm.encoder_.user_map.to_index([u])[0]
        excl = set(seen.indices[seen.indptr[uidx]:seen.indptr[uidx + 1]].tolist())
        pos = fm.encoder_.item_map.to_index(tk.item_ids[r])
        assert_topk_equivalent(pos, tk.scores[r].astype(np.float64), truth, 5, excl, rtol=1e-4, atol=1e-4)


def test_cli_train_with_implicit_and_context(tmp_path, capsys) -> None:
    from fmrec.cli.main import main

    data = small_interactions()
    data.to_frame().to_csv(tmp_path / "train.csv", index=False)
    model = tmp_path / "model"
    assert main(["-q", "train", str(tmp_path / "train.csv"), "--out", str(model), "--solver", "mcmc",
                 "--epochs", "5", "--factors", "2", "--implicit", "both", "--context", "day"]) == 0
    assert "train_rmse=" in capsys.readouterr().out
    loaded = load_model(model)
    assert [f["name"] for f in loaded.manifest_["layout"]] == [
        "user", "user/implicit", "item", "item/implicit", "context/day"]
    assert loaded.implicit == "both" and loaded.context == "day"
    assert main(["-q", "predict", str(model), str(tmp_path / "train.csv"), "--out", str(tmp_path / "p.csv")]) == 0
    p = pd.read_csv(tmp_path / "p.csv")
    np.testing.assert_allclose(p.iloc[:, -1].to_numpy(), loaded.predict(data), rtol=1e-5)


def test_predict_through_blocks_equals_the_expanded_rows() -> None:
    """decision_function builds a block design for models with extra fields; it must
    score exactly like the expanded rows, string IDs, cold users and items included."""
    from test_features import item_table

    rng = np.random.default_rng(2)
    df = small_interactions().to_frame()
    df["user_id"] = "u" + df["user_id"].astype(str)
    train = Interactions.from_frame(df)
    it = item_table(tuple(range(100, 126)) + (300,))
    fm = FactorizationMachine(task="regression", solver="mcmc", n_factors=3, n_epochs=8, n_samples=3,
                              implicit="both", context="day", random_state=0).fit(train, item_features=it)
    test = pd.DataFrame({"user_id": rng.choice(["u1", "u2", "u3", "new"], 40),
                         "item_id": rng.choice([100, 101, 105, 300, 999], 40),
                         "timestamp": rng.choice(df["timestamp"].to_numpy(), 40)})
    inter = Interactions.from_frame(test, duplicates="keep", allow_empty=True)
    got = fm.decision_function(test)
    expanded = fm._raw(fm.encoder_.transform(inter))
    np.testing.assert_allclose(got, expanded, rtol=1e-6, atol=1e-6)
    assert np.abs(got).max() > 0
