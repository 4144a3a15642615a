"""ALS and MCMC solvers: single updates against slow references, recovery, determinism, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from fmrec.errors import ConfigError, DataError
from fmrec.model import _als as A
from fmrec.model import _mcmc as MC
from fmrec.model._kernels import predict_raw

from reference import fm_predict_naive
from reference_solvers import (
    gaussian_conditional,
    get_param,
    logistic_newton_coordinate,
    logistic_objective,
    mean_conditional,
    noise_precision_conditional,
    planted_fm,
    precision_conditional,
    truncated_normal_mean,
    with_param,
)

PARAMS = [("w0",), ("w", 2), ("w", 5), ("v", 1, 0), ("v", 3, 1), ("v", 5, 2)]  # column 5 never occurs


def tiny_problem(seed: int = 0, n_rows: int = 14, n_cols: int = 6, k: int = 3):
    """Random real-valued rows (some empty) over n_cols columns, the last of which never occurs."""
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(n_rows, n_cols)) * (rng.random((n_rows, n_cols)) < 0.55)
    dense[:, -1] = 0.0
    dense[3] = 0.0  # an empty row
    X = sp.csr_matrix(dense.astype(np.float32))
    y = rng.normal(size=n_rows) + 1.0
    w0 = 0.3
    w = rng.normal(size=n_cols) * 0.5
    V = rng.normal(size=(n_cols, k)) * 0.5
    return X, y, w0, w, V


def caches(X, target_minus, w0, w, V, f):
    """c[:, 0] = score - target_minus (or the score itself), c[:, 1] = q_f, both by brute force."""
    s = fm_predict_naive(sp.csr_matrix(X, dtype=np.float64), w0, w, V)
    c = np.empty((X.shape[0], 2))
    c[:, 0] = s - target_minus
    c[:, 1] = X.toarray().astype(np.float64) @ V[:, f]
    return c


def csc_of(X):
    _, _, csc = A.design_arrays(X)
    return csc


def ls_update(X, c, w0, w, V, param, alpha, mu, lam, z):
    colptr, rows, vals = csc_of(X)
    theta = get_param(w0, w, V, param)
    if param[0] == "w0":
        return A.coord_ls_w0(theta, c, alpha, mu, lam, z)
    return A.coord_ls(colptr, rows, vals, param[1], theta, param[0] == "v", c, alpha, mu, lam, z)


def logistic_update(X, c, w0, w, V, param, y, lam):
    colptr, rows, vals = csc_of(X)
    theta = get_param(w0, w, V, param)
    if param[0] == "w0":
        return A.coord_logistic_w0(theta, c, y, lam)
    return A.coord_logistic(colptr, rows, vals, param[1], theta, param[0] == "v", c, y, lam)


# ------------------------------------------------------------------ one update vs reference
@pytest.mark.parametrize("param", PARAMS)
def test_als_coordinate_update_matches_reference(param: tuple) -> None:
    X, y, w0, w, V = tiny_problem()
    f = param[2] if param[0] == "v" else 0
    lam = 0.7
    c = caches(X, y, w0, w, V, f)
    new = ls_update(X, c, w0, w, V, param, 1.0, 0.0, lam, 0.0)
    ref_mean, _ = gaussian_conditional(X, y, w0, w, V, param, 1.0, 0.0, lam)
    assert new == pytest.approx(ref_mean, rel=1e-10, abs=1e-12)
    # the minimiser: the penalised loss is no lower a little either side
    def objective(t):
        s = fm_predict_naive(sp.csr_matrix(X, dtype=np.float64), *with_param(w0, w, V, param, t))
        return float(np.sum((s - y) ** 2) + lam * t * t)
    assert objective(new) <= min(objective(new - 1e-3), objective(new + 1e-3))
    # caches were updated in place to what a fresh computation gives
    np.testing.assert_allclose(c, caches(X, y, *with_param(w0, w, V, param, new), f), atol=1e-10)
    if param == ("w", 5) or param[:2] == ("v", 5):  # never-occurring column: shrunk to the prior mean
        assert new == 0.0


@pytest.mark.parametrize("param", PARAMS)
def test_gibbs_conditional_draw_matches_reference(param: tuple) -> None:
    X, y, w0, w, V = tiny_problem(seed=1)
    f = param[2] if param[0] == "v" else 0
    alpha, mu, lam, z = 2.5, -0.2, 1.3, 0.8173
    c = caches(X, y, w0, w, V, f)
    # the kernel's conditional (mean, precision) ...
    colptr, rows, vals = csc_of(X)
    theta = get_param(w0, w, V, param)
    if param[0] == "w0":
        s_hh, s_he = float(X.shape[0]), float(c[:, 0].sum())
    else:
        col = slice(colptr[param[1]], colptr[param[1] + 1])
        x = vals[col].astype(np.float64)
        r = rows[col]
        h = x * (c[r, 1] - theta * x) if param[0] == "v" else x
        s_hh, s_he = float(h @ h), float(h @ c[r, 0])
    mean, prec = A.posterior_normal(theta, s_hh, s_he, alpha, mu, lam)
    ref_mean, ref_var = gaussian_conditional(X, y, w0, w, V, param, alpha, mu, lam)
    assert mean == pytest.approx(ref_mean, rel=1e-10, abs=1e-12)
    assert 1.0 / prec == pytest.approx(ref_var, rel=1e-10)
    # ... and the draw with a fixed standard-normal value z is mean + z * sd
    new = ls_update(X, c, w0, w, V, param, alpha, mu, lam, z)
    assert new == pytest.approx(ref_mean + z * math.sqrt(ref_var), rel=1e-10, abs=1e-12)
    np.testing.assert_allclose(c, caches(X, y, *with_param(w0, w, V, param, new), f), atol=1e-10)


@pytest.mark.parametrize("param", PARAMS)
def test_logistic_coordinate_step_matches_reference(param: tuple) -> None:
    X, _, w0, w, V = tiny_problem(seed=2)
    rng = np.random.default_rng(5)
    y = (rng.random(X.shape[0]) < 0.5).astype(np.float64)
    f = param[2] if param[0] == "v" else 0
    lam = 0.4
    c = caches(X, 0.0, w0, w, V, f)  # c[:, 0] = scores
    new = logistic_update(X, c, w0, w, V, param, y, lam)
    ref = logistic_newton_coordinate(X, y, w0, w, V, param, lam)
    assert new == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert logistic_objective(X, y, *with_param(w0, w, V, param, new), lam, param) <= \
        logistic_objective(X, y, w0, w, V, lam, param) + 1e-12
    np.testing.assert_allclose(c, caches(X, 0.0, *with_param(w0, w, V, param, new), f), atol=1e-10)


def test_hyperparameter_conditionals_match_reference() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=11) * 0.4 + 0.1
    members = np.array([0, 2, 3, 7, 9, 10], dtype=np.int64)
    shape, rate = MC.lambda_posterior(values, members, 0.25, 1.0, 1.0, 1.0, 0.0)
    assert (shape, rate) == pytest.approx(precision_conditional(values[members], 0.25))
    mean, var = MC.mu_posterior(values, members, 3.0, 1.0, 0.0)
    assert (mean, var) == pytest.approx(mean_conditional(values[members], 3.0))
    # an empty group falls back to the prior
    none = np.zeros(0, dtype=np.int64)
    assert MC.lambda_posterior(values, none, 0.5, 1.0, 1.0, 1.0, 0.0) == pytest.approx(precision_conditional([], 0.5))
    r = rng.normal(size=50)
    assert MC.alpha_posterior(float(r @ r), 50, 1.0, 1.0) == pytest.approx(noise_precision_conditional(r))


@pytest.mark.parametrize("a", [-1.5, 0.0, 0.4, 2.5])
def test_truncated_normal_sampler(a: float) -> None:
    from numba import njit

    @njit
    def draws(a, n, seed):
        np.random.seed(seed)
        out = np.empty(n)
        for i in range(n):
            out[i] = MC.trunc_std_normal_lower(a)
        return out

    x = draws(a, 40_000, 7)
    assert np.all(x > a)
    sd = math.sqrt(max(1e-3, 1 + a * truncated_normal_mean(a) - truncated_normal_mean(a) ** 2))
    assert abs(x.mean() - truncated_normal_mean(a)) < 5 * sd / math.sqrt(len(x))


def test_latent_draw_lies_on_the_label_side() -> None:
    from numba import njit

    @njit
    def run(yhat, y, c, seed):
        np.random.seed(seed)
        MC.draw_latent(yhat, y, c)

    yhat = np.linspace(-3, 3, 200)
    y = (np.arange(200) % 2).astype(np.float64)
    c = np.zeros((200, 2))
    run(yhat, y, c, 1)
    z = yhat - c[:, 0]
    assert np.all(z[y == 1] > 0) and np.all(z[y == 0] < 0)


# ------------------------------------------------------------------ learning
def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def csr_predict(X, w0, w, V):
    X = sp.csr_matrix(X)
    return predict_raw(X.indptr.astype(np.int64), X.indices.astype(np.int32), X.data.astype(np.float32),
                       w0, w, V, 1)


def test_als_recovers_planted_fm() -> None:
    Xtr, ytr, Xte, yte, _ = planted_fm(0)
    w0, w, V = A.fit_als(Xtr, ytr, task="regression", n_factors=3, n_epochs=60, l2_bias=0.0, l2_linear=0.01,
                         l2_factors=0.01, init_std=0.1, rng=np.random.default_rng(0))
    assert w.dtype == np.float32 and V.dtype == np.float32 and V.shape == (Xtr.shape[1], 3)
    base = rmse(yte, ytr.mean())
    assert rmse(csr_predict(Xte, w0, w, V), yte) < 0.1 * base


def test_als_objective_never_increases() -> None:
    Xtr, ytr, _, _, _ = planted_fm(1, noise=0.3)
    lam = (0.5, 1.0, 2.0)
    objs: list[float] = []

    def obj(epoch, w0, w, V, loss):
        s = csr_predict(Xtr, w0, w, V)
        objs.append(float(np.sum((s - ytr) ** 2) + lam[0] * w0 ** 2 + lam[1] * np.sum(w.astype(float) ** 2)
                          + lam[2] * np.sum(V.astype(float) ** 2)))
        assert loss == pytest.approx(rmse(s, ytr), rel=1e-4)

    A.fit_als(Xtr, ytr, task="regression", n_factors=4, n_epochs=15, l2_bias=lam[0], l2_linear=lam[1],
              l2_factors=lam[2], init_std=0.1, rng=np.random.default_rng(0), callback=obj)
    assert len(objs) == 15
    assert all(b <= a * (1 + 1e-5) for a, b in zip(objs, objs[1:]))


def test_mcmc_recovers_planted_fm() -> None:
    Xtr, ytr, Xte, yte, groups = planted_fm(2, noise=0.05)
    res = MC.fit_mcmc(Xtr, ytr, task="regression", n_factors=3, n_iter=150, n_burn_in=50, n_kept=10,
                      groups=groups, init_std=0.1, rng=np.random.default_rng(0), X_pred=Xte)
    base = rmse(yte, ytr.mean())
    assert rmse(res["pred"], yte) < 0.15 * base
    # the kept samples' mean score is close to the all-iteration posterior mean
    mean_of_kept = np.mean([csr_predict(Xte, res["w0"][s], res["w"][s], res["V"][s]) for s in range(10)], axis=0)
    assert rmse(mean_of_kept, yte) < 0.2 * base
    assert res["history"][-1]["alpha"] > 50  # the noise precision is learnt (true 1/0.05^2 = 400)


def planted_binary(seed: int, margin: float = 0.4):
    """Labels = planted FM score above its median; rows within ``margin`` of the median dropped
    (separable with a margin)."""
    Xtr, ytr, Xte, yte, groups = planted_fm(seed, n_users=80, n_items=60, density=0.6)
    thr = float(np.median(ytr))
    tr, te = np.abs(ytr - thr) > margin, np.abs(yte - thr) > margin
    return Xtr[tr], (ytr[tr] > thr).astype(float), Xte[te], (yte[te] > thr).astype(float), groups


def test_probit_mcmc_learns_a_separable_planted_problem() -> None:
    Xtr, ytr, Xte, yte, groups = planted_binary(4)
    res = MC.fit_mcmc(Xtr, ytr, task="binary", n_factors=3, n_iter=120, n_burn_in=40, n_kept=5,
                      groups=groups, init_std=0.1, rng=np.random.default_rng(0), X_pred=Xte)
    p = res["pred"]
    assert np.all((p >= 0) & (p <= 1))
    assert np.mean((p >= 0.5) == (yte == 1)) > 0.85  # majority class: about 0.5
    assert res["history"][-1]["train_accuracy"] > 0.93
    assert all(h["alpha"] == 1.0 for h in res["history"])


def test_binary_als_learns_a_separable_planted_problem_and_scores_are_logits() -> None:
    Xtr, ytr, Xte, yte, _ = planted_binary(5)
    w0, w, V = A.fit_als(Xtr, ytr, task="binary", n_factors=3, n_epochs=30, l2_bias=0.0, l2_linear=0.1,
                         l2_factors=0.5, init_std=0.1, rng=np.random.default_rng(0))
    s = csr_predict(Xte, w0, w, V)
    assert np.mean((s >= 0) == (yte == 1)) > 0.9
    # with no features the fit is the intercept-only logistic model: w0 = logit(mean y)
    y = np.array([1, 1, 1, 0], float)
    w0, _, _ = A.fit_als(sp.csr_matrix((4, 3), dtype=np.float32), y, task="binary", n_factors=2, n_epochs=20,
                         l2_bias=0.0, l2_linear=1.0, l2_factors=1.0, init_std=0.1, rng=np.random.default_rng(0))
    assert w0 == pytest.approx(math.log(3.0), abs=1e-6)
    w0, _, _ = A.fit_als(sp.csr_matrix((4, 3), dtype=np.float32), y, task="regression", n_factors=2, n_epochs=1,
                         l2_bias=0.0, l2_linear=1.0, l2_factors=1.0, init_std=0.1, rng=np.random.default_rng(0))
    assert w0 == pytest.approx(0.75)


# ------------------------------------------------------------------ contract, determinism, edges
def test_mcmc_samples_thinning_and_posterior_mean() -> None:
    Xtr, ytr, Xte, _, groups = planted_fm(6, n_users=20, n_items=15)
    seen: dict[int, tuple] = {}

    def keep(it, w0, w, V, entry):
        seen[it] = (w0, w.copy(), V.copy())
        assert entry["iteration"] == it

    for task, y in (("regression", ytr), ("binary", (ytr > np.median(ytr)).astype(float))):
        seen.clear()
        res = MC.fit_mcmc(Xtr, y, task=task, n_factors=2, n_iter=23, n_burn_in=8, n_kept=4, groups=groups,
                          init_std=0.1, rng=np.random.default_rng(1), X_pred=Xte, callback=keep)
        n, k = Xtr.shape[1], 2
        assert res["w0"].shape == (4,) and res["w0"].dtype == np.float64
        assert res["w"].shape == (4, n) and res["w"].dtype == np.float32
        assert res["V"].shape == (4, n, k) and res["V"].dtype == np.float32
        assert res["kept_iterations"] == [11, 15, 19, 23]  # evenly over 9..23, the last one included
        assert [h["kept"] for h in res["history"]].count(True) == 4 and len(res["history"]) == 23
        for s, it in enumerate(res["kept_iterations"]):
            assert res["w0"][s] == seen[it][0]
            np.testing.assert_array_equal(res["w"][s], seen[it][1])
            np.testing.assert_array_equal(res["V"][s], seen[it][2])
        scores = np.array([csr_predict(Xte, *seen[it]) for it in range(9, 24)])
        per_iter = scores if task == "regression" else 0.5 * np.vectorize(math.erfc)(-scores / math.sqrt(2))
        np.testing.assert_allclose(res["pred"], per_iter.mean(axis=0), rtol=1e-4, atol=1e-4)


def test_same_seed_same_result() -> None:
    Xtr, ytr, Xte, _, groups = planted_fm(7, n_users=25, n_items=20, noise=0.2)
    yb = (ytr > np.median(ytr)).astype(float)
    for task, y in (("regression", ytr), ("binary", yb)):
        runs = [MC.fit_mcmc(Xtr, y, task=task, n_factors=3, n_iter=12, n_burn_in=2, n_kept=3, groups=groups,
                            init_std=0.1, rng=np.random.default_rng(seed), X_pred=Xte) for seed in (5, 5, 6)]
        for key in ("w0", "w", "V", "pred"):
            np.testing.assert_array_equal(runs[0][key], runs[1][key])
        assert not np.array_equal(runs[0]["V"], runs[2]["V"])
        als = [A.fit_als(Xtr, y, task=task, n_factors=3, n_epochs=4, l2_bias=0.0, l2_linear=0.5, l2_factors=0.5,
                         init_std=0.1, rng=np.random.default_rng(seed)) for seed in (5, 5)]
        assert als[0][0] == als[1][0]
        np.testing.assert_array_equal(als[0][1], als[1][1])
        np.testing.assert_array_equal(als[0][2], als[1][2])


def test_edge_cases_empty_columns_rows_and_one_factor() -> None:
    Xtr, ytr, Xte, yte, groups = planted_fm(8, n_users=30, n_items=20)
    n = Xtr.shape[1]
    # two extra columns that never occur, in a group of their own; and an empty training row
    X = sp.vstack([sp.hstack([Xtr, sp.csr_matrix((Xtr.shape[0], 2), dtype=np.float32)]),
                   sp.csr_matrix((1, n + 2), dtype=np.float32)]).tocsr()
    y = np.r_[ytr, ytr.mean()]
    g = np.r_[groups, 7, 7]
    Xp = sp.hstack([Xte, sp.csr_matrix((Xte.shape[0], 2), dtype=np.float32)]).tocsr()
    w0, w, V = A.fit_als(X, y, task="regression", n_factors=1, n_epochs=20, l2_bias=0.0, l2_linear=0.1,
                         l2_factors=0.1, init_std=0.1, rng=np.random.default_rng(0))
    assert V.shape == (n + 2, 1) and np.all(np.isfinite(V))
    assert np.all(w[n:] == 0) and np.all(V[n:] == 0)  # never seen: shrunk to zero
    assert rmse(csr_predict(Xp, w0, w, V), yte) < rmse(yte, ytr.mean())
    res = MC.fit_mcmc(X, y, task="regression", n_factors=1, n_iter=30, n_burn_in=10, n_kept=2, groups=g,
                      init_std=0.1, rng=np.random.default_rng(0), X_pred=Xp)
    assert np.all(np.isfinite(res["V"])) and np.all(np.isfinite(res["w"])) and res["V"].shape == (2, n + 2, 1)
    assert rmse(res["pred"], yte) < rmse(yte, ytr.mean())
    # a single group for everything, and the unseen columns drawn from their (finite) prior
    res1 = MC.fit_mcmc(X, y, task="regression", n_factors=1, n_iter=5, n_burn_in=0,
                       n_kept=5, groups=np.zeros(n + 2, int), init_std=0.0, rng=np.random.default_rng(0))
    assert np.all(np.isfinite(res1["V"])) and res1["pred"] is None


def test_early_stop_by_callback() -> None:
    Xtr, ytr, Xte, _, groups = planted_fm(9, n_users=20, n_items=15)
    res = MC.fit_mcmc(Xtr, ytr, task="regression", n_factors=2, n_iter=50, n_burn_in=10, n_kept=5, groups=groups,
                      init_std=0.1, rng=np.random.default_rng(0), X_pred=Xte,
                      callback=lambda it, *a: it >= 4)
    assert len(res["history"]) == 4 and res["kept_iterations"] == [4] and res["w"].shape[0] == 1
    assert res["pred"] is not None and np.all(np.isfinite(res["pred"]))
    epochs: list[int] = []
    A.fit_als(Xtr, ytr, task="regression", n_factors=2, n_epochs=10, l2_bias=0.0, l2_linear=0.1, l2_factors=0.1,
              init_std=0.1, rng=np.random.default_rng(0), callback=lambda e, *a: epochs.append(e) or e >= 3)
    assert epochs == [1, 2, 3]


def test_invalid_arguments() -> None:
    Xtr, ytr, _, _, groups = planted_fm(10, n_users=10, n_items=8)
    kw = dict(task="regression", n_factors=2, n_iter=10, n_burn_in=2, n_kept=3, groups=groups, init_std=0.1,
              rng=np.random.default_rng(0))
    for bad in ({"n_burn_in": 10}, {"n_kept": 9}, {"n_kept": 0}, {"task": "ranking"}, {"n_factors": 0}):
        with pytest.raises(ConfigError):
            MC.fit_mcmc(Xtr, ytr, **{**kw, **bad})
    with pytest.raises(DataError, match="groups"):
        MC.fit_mcmc(Xtr, ytr, **{**kw, "groups": groups[:-1]})
    with pytest.raises(DataError, match="0 or 1"):
        MC.fit_mcmc(Xtr, ytr, **{**kw, "task": "binary"})
    with pytest.raises(DataError, match="rows"):
        A.fit_als(Xtr, ytr[:-1], task="regression", n_factors=2, n_epochs=2, l2_bias=0, l2_linear=0, l2_factors=0,
                  init_std=0.1, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="l2_factors"):
        A.fit_als(Xtr, ytr, task="regression", n_factors=2, n_epochs=2, l2_bias=0, l2_linear=0, l2_factors=-1,
                  init_std=0.1, rng=np.random.default_rng(0))


@pytest.mark.parametrize("param", [("w0",), ("w", 1), ("v", 2, 1)])
def test_logistic_coordinate_backtracks_when_newton_overshoots(param: tuple) -> None:
    X, _, _, w, V = tiny_problem(seed=3)
    w0 = 7.0  # p ~ 1 everywhere, nearly all labels 0: tiny curvature, huge Newton step
    y = np.zeros(X.shape[0])
    y[0] = 1.0
    f = param[2] if param[0] == "v" else 0
    lam = 1e-3
    c = caches(X, 0.0, w0, w, V, f)
    theta = get_param(w0, w, V, param)
    new = logistic_update(X, c, w0, w, V, param, y, lam)
    ref = logistic_newton_coordinate(X, y, w0, w, V, param, lam)
    assert new == pytest.approx(ref, rel=1e-9, abs=1e-12)
    # the full Newton step was not taken ...
    a = logistic_newton_coordinate(X, y, w0, w, V, param, lam, halvings=1)
    assert a == theta and new != theta
    # ... and the accepted one lowers the objective
    assert logistic_objective(X, y, *with_param(w0, w, V, param, new), lam, param) < \
        logistic_objective(X, y, w0, w, V, lam, param)
    np.testing.assert_allclose(c, caches(X, 0.0, *with_param(w0, w, V, param, new), f), atol=1e-10)


def epoch_order(n: int, k: int) -> list[tuple]:
    """libFM's order within an epoch: w0, every w_l, then factor by factor every v_lf."""
    return [("w0",)] + [("w", l) for l in range(n)] + [("v", l, f) for f in range(k) for l in range(n)]


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_one_als_epoch_equals_reference_coordinate_sweep(task: str) -> None:
    X, y, w0, w, V = tiny_problem(seed=4)
    if task == "binary":
        y = (y > np.median(y)).astype(np.float64)
    n_cols = X.shape[1]
    lam = (0.3, np.linspace(0.2, 1.0, n_cols), np.linspace(1.5, 0.5, n_cols))  # per-column penalties
    # reference: the coordinates one after the other, each by brute force
    r0, rw, rV = w0, w.copy(), V.copy()
    for param in epoch_order(X.shape[1], V.shape[1]):
        l2 = lam[0] if param[0] == "w0" else lam[1 if param[0] == "w" else 2][param[1]]
        if task == "regression":
            new, _ = gaussian_conditional(X, y, r0, rw, rV, param, 1.0, 0.0, l2)
        else:
            new = logistic_newton_coordinate(X, y, r0, rw, rV, param, l2)
        r0, rw, rV = with_param(r0, rw, rV, param, new)
    # kernel
    M, (indptr, indices, data), (colptr, rows, vals) = A.design_arrays(X)
    kw0, kw, kVt = np.array([w0]), w.copy(), np.ascontiguousarray(V.T)
    s = fm_predict_naive(sp.csr_matrix(X, dtype=np.float64), w0, w, V)
    c = np.zeros((X.shape[0], 2))
    c[:, 0] = s - y if task == "regression" else s
    A.als_epoch(indptr, indices, data, colptr, rows, vals, y, kw0, kw, kVt, c, *lam,
                A.disjoint_runs(colptr, rows, X.shape[0]), task == "binary")
    assert kw0[0] == pytest.approx(r0, rel=1e-9)
    np.testing.assert_allclose(kw, rw, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(kVt.T, rV, rtol=1e-8, atol=1e-12)


def test_disjoint_runs_split_where_a_row_would_repeat() -> None:
    """Runs are maximal in column order; inside one, no row has two nonzeros."""
    rng = np.random.default_rng(8)
    for density in (0.02, 0.2, 0.6):
        X = sp.random(40, 300, density=density, random_state=rng, format="csc")
        runs = A.disjoint_runs(X.indptr, X.indices.astype(np.int32), X.shape[0])
        assert runs[0] == 0 and runs[-1] == X.shape[1] and np.all(np.diff(runs) > 0)
        for a, b in zip(runs[:-1], runs[1:]):
            assert (X[:, a:b] != 0).sum(axis=1).max() <= 1  # disjoint rows ...
            if b < X.shape[1]:  # ... and maximal: column b meets a row of the run
                assert (X[:, a:b + 1] != 0).sum(axis=1).max() > 1
    onehot = sp.hstack([sp.eye(50, format="csr"), sp.eye(50, format="csr")[np.arange(50) % 7][:, :7]], format="csc")  # users, items
    assert A.disjoint_runs(onehot.indptr, onehot.indices.astype(np.int32), 50).tolist() == [0, 50, 57]


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_als_in_parallel_is_the_sequential_model_bit_for_bit(task: str) -> None:
    """User and item columns are updated in parallel (disjoint rows); the result equals the
    one-thread fit exactly, with side features (runs that are not disjoint) in the design."""
    from fmrec.data import IdMap, Interactions
    from fmrec.model import FactorizationMachine

    rng = np.random.default_rng(2)
    n_users, n_items, n = 400, 300, 12_000
    u = rng.integers(0, n_users, n)
    i = np.minimum(rng.zipf(1.4, n) - 1, n_items - 1)
    r = rng.integers(1, 6, n).astype(np.float32)
    data = Interactions(u, i, r, IdMap(np.arange(n_users)), IdMap(np.arange(n_items)))
    fits = [FactorizationMachine(task=task, solver="als", n_factors=6, n_epochs=3, n_threads=t, random_state=0,
                                 implicit="user").fit(data) for t in (1, 2)]
    a, b = fits
    assert a.w0_ == b.w0_
    np.testing.assert_array_equal(a.w_, b.w_)
    np.testing.assert_array_equal(a.V_, b.V_)


def test_score_and_factor_cache_kernels_match_naive() -> None:
    X, _, w0, w, V = tiny_problem(seed=6)
    indptr, indices, data = A.design_arrays(X)[1]
    out = np.empty(X.shape[0])
    A.scores_into(indptr, indices, data, w0, w, np.ascontiguousarray(V), out, np.empty(V.shape[1]))
    np.testing.assert_allclose(out, fm_predict_naive(sp.csr_matrix(X, dtype=np.float64), w0, w, V), rtol=1e-12,
                               atol=1e-12)
    c = np.zeros((X.shape[0], 2))
    for f in range(V.shape[1]):
        A.factor_cache(indptr, indices, data, np.ascontiguousarray(V.T), f, c)
        np.testing.assert_allclose(c[:, 1], X.toarray().astype(np.float64) @ V[:, f], rtol=1e-12, atol=1e-12)
