"""FactorizationMachine: kernels vs references, learning, persistence, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from fmrec.data import Interactions
from fmrec.errors import ArtifactError, ConfigError, DataError, DivergenceError, NotFittedError
from fmrec.model import FactorizationMachine, load_model, save_model
from fmrec.model import _kernels as K

from reference import fm_predict_naive, sgd_step_naive


def random_csr(rng: np.random.Generator, n_rows: int, n_cols: int, max_nnz: int, binary: bool = False) -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    for r in range(n_rows):
        nnz = int(rng.integers(0, max_nnz + 1))
        cs = rng.choice(n_cols, size=min(nnz, n_cols), replace=False)
        rows += [r] * len(cs)
        cols += cs.tolist()
        vals += (np.ones(len(cs)) if binary else rng.normal(size=len(cs))).tolist()
    return sp.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(n_rows, n_cols))


def csr_args(X: sp.csr_matrix):
    return X.indptr.astype(np.int64), X.indices.astype(np.int32), X.data.astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_predict_kernel_matches_naive_double_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_cols, k = 13, 4
    X = random_csr(rng, 40, n_cols, 6)
    X = sp.vstack([X[:3], sp.csr_matrix((1, n_cols), dtype=np.float32), X[3:]]).tocsr()  # an empty row
    w0 = float(rng.normal())
    w = rng.normal(size=n_cols).astype(np.float32)
    V = rng.normal(size=(n_cols, k)).astype(np.float32)
    got = K.predict_raw(*csr_args(X), w0, w, V, 3)
    np.testing.assert_allclose(got, fm_predict_naive(X, w0, w, V), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task", ["regression", "binary"])
@pytest.mark.parametrize("optimizer", ["adagrad", "sgd"])
def test_sgd_epoch_matches_naive_steps(task: str, optimizer: str) -> None:
    rng = np.random.default_rng(7)
    n_cols, k, n = 9, 3, 25
    X = random_csr(rng, n, n_cols, 4)
    y = rng.normal(size=n) if task == "regression" else rng.integers(0, 2, size=n).astype(float)
    w0 = np.array([0.1])
    w = (rng.normal(size=n_cols) * 0.1).astype(np.float32)
    V = (rng.normal(size=(n_cols, k)) * 0.1).astype(np.float32)
    ref = {"w0": w0.copy(), "w": w.astype(np.float64), "V": V.astype(np.float64),
           "g_w0": np.zeros(1), "g_w": np.zeros(n_cols), "g_V": np.zeros((n_cols, k))}
    order = rng.permutation(n).astype(np.int64)
    # per-column penalties (one field pair per column here), as field_l2 produces them
    lr, l2 = (0.05, 0.04, 0.03), (0.0, rng.uniform(0, 0.05, n_cols).astype(np.float32),
                                  rng.uniform(0, 0.05, n_cols).astype(np.float32))
    dense = X.toarray()
    ref_loss = sum(sgd_step_naive(dense[r], y[r], task, ref, lr, l2, optimizer) for r in order)
    g_w0, g_w, g_V = np.zeros(1), np.zeros(n_cols, np.float32), np.zeros((n_cols, k), np.float32)
    loss = K.sgd_epoch(*csr_args(X), y.astype(np.float64), order,
                       K.TASK_REGRESSION if task == "regression" else K.TASK_BINARY,
                       K.OPT_ADAGRAD if optimizer == "adagrad" else K.OPT_SGD,
                       w0, w, V, g_w0, g_w, g_V, *lr, *l2, 1)
    assert loss == pytest.approx(ref_loss, rel=1e-4)
    np.testing.assert_allclose(w0, ref["w0"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(w, ref["w"], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(V, ref["V"], rtol=1e-3, atol=1e-5)


def planted(seed: int = 0, n_users: int = 60, n_items: int = 50, k: int = 3, density: float = 0.5,
            noise: float = 0.0):
    """Ratings from a planted FM over one-hot users/items (noise-free)."""
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(n_users, k)) * 0.7
    Q = rng.normal(size=(n_items, k)) * 0.7
    bu = rng.normal(size=n_users) * 0.3
    bi = rng.normal(size=n_items) * 0.3
    full = 3.0 + bu[:, None] + bi[None, :] + P @ Q.T
    mask = rng.random((n_users, n_items)) < density
    u, i = np.nonzero(mask)
    df = pd.DataFrame({"user_id": u + 1, "item_id": i + 1,
                       "rating": full[u, i] + noise * rng.normal(size=len(u))})
    test_mask = rng.random(len(df)) < 0.15
    return df[~test_mask].reset_index(drop=True), df[test_mask].reset_index(drop=True), full


def test_planted_model_is_recovered() -> None:
    train, test, _ = planted()
    fm = FactorizationMachine(n_factors=3, n_epochs=150, learning_rate=0.1, l2_linear=0.0, l2_factors=0.001,
                              init_std=0.1, random_state=0, clip_predictions=False)
    fm.fit(Interactions.from_frame(train))
    pred = fm.predict(test)
    base = np.sqrt(np.mean((test.rating - train.rating.mean()) ** 2))
    err = np.sqrt(np.mean((pred - test.rating.to_numpy()) ** 2))
    assert err < 0.15 * base, (err, base)


def test_binary_planted_separates_classes() -> None:
    train, test, _ = planted(seed=3)
    thr = float(np.median(train.rating))
    fm = FactorizationMachine(task="binary", threshold=thr, n_factors=3, n_epochs=60, learning_rate=0.1,
                              init_std=0.1, random_state=1).fit(Interactions.from_frame(train))
    prob = fm.predict(test)
    assert np.all((prob >= 0) & (prob <= 1))
    acc = np.mean((prob >= 0.5) == (test.rating.to_numpy() >= thr))
    assert acc > 0.85


def test_same_seed_same_model_and_different_seed_differs() -> None:
    train, _, _ = planted(seed=5)
    data = Interactions.from_frame(train)
    a = FactorizationMachine(n_factors=4, n_epochs=3, random_state=11).fit(data)
    b = FactorizationMachine(n_factors=4, n_epochs=3, random_state=11).fit(data)
    c = FactorizationMachine(n_factors=4, n_epochs=3, random_state=12).fit(data)
    np.testing.assert_array_equal(a.V_, b.V_)
    np.testing.assert_array_equal(a.w_, b.w_)
    assert not np.array_equal(a.V_, c.V_)


def test_multithreaded_training_learns() -> None:
    train, test, _ = planted(seed=6, n_users=200, n_items=100)
    fm = FactorizationMachine(n_factors=3, n_epochs=40, learning_rate=0.1, l2_factors=0.001, init_std=0.1,
                              n_threads=2, random_state=0).fit(Interactions.from_frame(train))
    err = np.sqrt(np.mean((fm.predict(test) - test.rating.to_numpy()) ** 2))
    base = np.sqrt(np.mean((test.rating - train.rating.mean()) ** 2))
    assert err < 0.3 * base


def test_divergence_guard_names_the_learning_rate() -> None:
    train, _, _ = planted(seed=2)
    train = train.assign(rating=train.rating * 1e20)
    fm = FactorizationMachine(optimizer="sgd", learning_rate=10.0, n_epochs=5, random_state=0)
    with pytest.raises(DivergenceError, match="lower the learning rate"):
        fm.fit(Interactions.from_frame(train))


def test_early_stopping_restores_best_epoch() -> None:
    train, test, _ = planted(seed=4, noise=1.0, density=0.2)
    fm = FactorizationMachine(n_factors=16, n_epochs=60, learning_rate=0.2, l2_linear=0, l2_factors=0,
                              init_std=0.3, patience=3, random_state=0)
    fm.fit(Interactions.from_frame(train), valid=test)
    vals = [h["valid_rmse"] for h in fm.history_]
    assert len(vals) < 60
    assert fm.best_epoch_ == int(np.argmin(vals)) + 1
    err = np.sqrt(np.mean((fm.predict(test) - test.rating.to_numpy()) ** 2))
    assert err == pytest.approx(min(vals), rel=1e-6)


def test_progress_logging_can_be_silenced(caplog: pytest.LogCaptureFixture) -> None:
    train, test, _ = planted(seed=1)
    data = Interactions.from_frame(train)
    with caplog.at_level("INFO", logger="fmrec"):
        FactorizationMachine(n_epochs=2, verbose=True, random_state=0).fit(data, valid=test)
    assert sum("epoch" in r.message and "valid_rmse" in r.message for r in caplog.records) == 2
    caplog.clear()
    with caplog.at_level("INFO", logger="fmrec"):
        FactorizationMachine(n_epochs=2, verbose=False, random_state=0).fit(data)
    assert not caplog.records


def test_sklearn_conventions() -> None:
    fm = FactorizationMachine(n_factors=7)
    assert fm.get_params()["n_factors"] == 7
    assert fm.set_params(n_epochs=3) is fm and fm.n_epochs == 3
    assert not hasattr(fm, "V_")
    with pytest.raises(NotFittedError):
        fm.predict(pd.DataFrame({"user_id": [1], "item_id": [1]}))
    with pytest.raises(ConfigError, match="invalid parameter"):
        fm.set_params(bogus=1)
    clone = FactorizationMachine(**fm.get_params())
    assert clone.get_params() == fm.get_params()


@pytest.mark.parametrize("bad", [{"task": "clustering"}, {"loss": "hinge"}, {"n_factors": 0}, {"learning_rate": -1.0},
                                 {"l2_factors": float("nan")}, {"optimizer": "lbfgs"}, {"n_epochs": 0}])
def test_invalid_parameters_fail_at_fit(bad: dict) -> None:
    train, _, _ = planted()
    fm = FactorizationMachine(**bad)  # no validation in __init__
    with pytest.raises(ConfigError):
        fm.fit(Interactions.from_frame(train))


def test_matrix_input_and_errors() -> None:
    rng = np.random.default_rng(0)
    X = random_csr(rng, 30, 8, 3)
    y = rng.normal(size=30)
    fm = FactorizationMachine(n_factors=2, n_epochs=2, random_state=0).fit(X, y)
    assert fm.predict(X).shape == (30,)
    with pytest.raises(DataError, match="rows"):
        FactorizationMachine().fit(X, y[:-1])
    with pytest.raises(DataError, match="columns"):
        fm.predict(random_csr(rng, 3, 9, 2))
    y_bad = y.copy()
    y_bad[4] = np.nan
    with pytest.raises(DataError, match="not finite"):
        FactorizationMachine().fit(X, y_bad)


def test_unknown_ids_at_predict_use_known_terms() -> None:
    train, _, _ = planted()
    fm = FactorizationMachine(n_factors=3, n_epochs=3, random_state=0, clip_predictions=False).fit(
        Interactions.from_frame(train))
    both_unknown = fm.predict(pd.DataFrame({"user_id": [999], "item_id": [999]}))
    assert both_unknown[0] == pytest.approx(fm.w0_)
    user_known = fm.predict(pd.DataFrame({"user_id": [1], "item_id": [999]}))
    j = fm.encoder_.user_map.to_index([1])[0]
    assert user_known[0] == pytest.approx(fm.w0_ + fm.w_[j], rel=1e-6)


def test_save_load_roundtrip_and_tamper_detection(tmp_path) -> None:
    train, test, _ = planted()
    data = Interactions.from_frame(train)
    fm = FactorizationMachine(n_factors=3, n_epochs=2, random_state=0).fit(data)
    path = save_model(fm, tmp_path / "m", seen=data.to_csr(binary=True), item_names={1: "One"})
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(test), fm.predict(test))
    assert loaded.get_params() == fm.get_params()
    assert not list(tmp_path.glob(".m.tmp-*"))
    # no pickle anywhere
    with np.load(path / "arrays.npz", allow_pickle=False) as z:
        assert set(z.files) >= {"w0", "w", "V"}
    # tampering is detected with one-line errors
    arr = (path / "arrays.npz").read_bytes()
    (path / "arrays.npz").write_bytes(arr[:-10])
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_model(path)
    save_model(fm, path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="newer than this fmrec"):
        load_model(path)
    with pytest.raises(ArtifactError, match="not found"):
        load_model(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON") as exc:
        load_model(tmp_path / "junk")
    assert "\n" not in str(exc.value)
