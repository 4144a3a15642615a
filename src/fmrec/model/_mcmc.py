"""Bayesian FM by Gibbs sampling (libFM's MCMC), with grouped Normal-Gamma hyperpriors.

Private module: numba kernels plus the thin Python driver :func:`fit_mcmc`.

Model (Freudenthaler, Schmidt-Thieme & Rendle 2011; libFM; myFM)::

    y_i | x_i, theta  ~ N(y_hat(x_i), 1/alpha)                 (regression)
    y_i = 1[z_i > 0],  z_i ~ N(y_hat(x_i), 1)                   (binary: probit, Albert & Chib)
    w0                ~ N(0, 1/lambda_w0)   (lambda_w0 = 0: flat, as libFM)
    w_l               ~ N(mu_w[g(l)],     1/lambda_w[g(l)])
    v_lf              ~ N(mu_v[g(l), f],  1/lambda_v[g(l), f])
    alpha, lambda_*   ~ Gamma(alpha_0/2, gamma_0/2)   (shape, rate)
    mu_* | lambda_*   ~ N(mu_0, 1/(beta_0 lambda_*))
    alpha_0 = beta_0 = gamma_0 = 1, mu_0 = 0        (libFM's defaults)

``g(l) = groups[l]`` puts every column in a field group (user block, item
block, one group per side-feature field), so each field gets its own prior
mean and precision per factor.

One iteration (libFM's order): for binary draw the latent ``z_i`` from the
normal truncated to the side of ``y_i``; draw ``alpha`` (regression; binary
fixes it to 1); ``w0``; ``lambda_w, mu_w``; every ``w_l``; ``lambda_v, mu_v``;
then factor by factor every ``v_lf``.  Each parameter is drawn from its exact
Gaussian conditional (:func:`fmrec.model._als.posterior_normal`) using the
residual cache ``e_i = y_hat_i - target_i`` and the per-factor cache
``q_if = sum_j v_jf x_ij`` over the parameter's CSC column, so an iteration is
O(k * nnz).  The caches are rebuilt from scratch at the end of every iteration
(as libFM does) so rounding never accumulates.

Randomness: numba's generator, re-seeded at the start of every iteration from
the caller's ``numpy.random.Generator``; single-threaded, so the same ``rng``
state gives bit-identical chains.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
from numba import njit

from fmrec.errors import ConfigError, DataError, DivergenceError
from fmrec.model._blocks import BlockDesign, block_scores_into, sweep_v_blocks, sweep_w_blocks
from fmrec.model._als import (
    _check_int,
    _check_nonneg,
    check_targets,
    coord_ls,
    coord_ls_w0,
    design_arrays,
    factor_cache,
    initial_factors,
    scores_into,
)

TASKS = ("regression", "binary")

# libFM's hyperprior defaults
ALPHA_0 = 1.0
BETA_0 = 1.0
GAMMA_0 = 1.0
MU_0 = 0.0
LAMBDA_W0 = 0.0  # flat prior on the global bias

_SQRT2 = math.sqrt(2.0)


# ------------------------------------------------------------------ closed forms
@njit(cache=True, nogil=True)
def lambda_posterior(values, members, mu, alpha_0, beta_0, gamma_0, mu_0):
    """Gamma(shape, rate) conditional of a group precision given its members' values and mean."""
    n_g = members.shape[0]
    ss = gamma_0 + beta_0 * (mu - mu_0) * (mu - mu_0)
    for t in range(n_g):
        d = values[members[t]] - mu
        ss += d * d
    return 0.5 * (alpha_0 + n_g + 1.0), 0.5 * ss


@njit(cache=True, nogil=True)
def mu_posterior(values, members, lam, beta_0, mu_0):
    """Normal(mean, variance) conditional of a group mean given its members and precision."""
    n_g = members.shape[0]
    s = beta_0 * mu_0
    for t in range(n_g):
        s += values[members[t]]
    c = n_g + beta_0
    return s / c, 1.0 / (c * lam)


@njit(cache=True, nogil=True)
def alpha_posterior(sse, n_rows, alpha_0, gamma_0):
    """Gamma(shape, rate) conditional of the noise precision given the residuals' sum of squares."""
    return 0.5 * (alpha_0 + n_rows), 0.5 * (gamma_0 + sse)


@njit(cache=True, nogil=True)
def trunc_std_normal_lower(a):
    """Standard normal draw conditioned on ``> a`` (naive rejection for a <= 0,
    Robert's (1995) exponential proposal otherwise)."""
    if a <= 0.0:
        while True:
            x = np.random.standard_normal()
            if x > a:
                return x
    lam = 0.5 * (a + math.sqrt(a * a + 4.0))
    while True:
        x = a + np.random.exponential(1.0 / lam)
        if np.random.random() <= math.exp(-0.5 * (x - lam) * (x - lam)):
            return x


@njit(cache=True, nogil=True)
def draw_latent(yhat, y, c):
    """Probit data augmentation: z_i ~ N(yhat_i, 1) truncated to z > 0 (y=1) / z < 0 (y=0);
    stores the residual ``c[i, 0] = yhat_i - z_i``."""
    for i in range(yhat.shape[0]):
        m = yhat[i]
        if y[i] > 0.5:
            c[i, 0] = -trunc_std_normal_lower(-m)
        else:
            c[i, 0] = trunc_std_normal_lower(m)


@njit(cache=True, nogil=True)
def _draw_group_hyper(values, members, offsets, mu, lam, alpha_0, beta_0, gamma_0, mu_0):
    """Draw lambda_g then mu_g for every group (members[offsets[g]:offsets[g+1]])."""
    for g in range(mu.shape[0]):
        m = members[offsets[g]:offsets[g + 1]]
        shape, rate = lambda_posterior(values, m, mu[g], alpha_0, beta_0, gamma_0, mu_0)
        lam[g] = np.random.gamma(shape, 1.0 / rate)
        mean, var = mu_posterior(values, m, lam[g], beta_0, mu_0)
        mu[g] = mean + math.sqrt(var) * np.random.standard_normal()


@njit(cache=True, nogil=True)
def _residuals_noise_bias(yhat, y, binary, c, w0, alpha, alpha_0, gamma_0, mu_0, lambda_w0):
    """First steps of a sweep: residuals ``c[:, 0]`` against the targets (binary: the
    freshly drawn latent ``z``), the noise precision (binary: fixed to 1), then
    ``w0``.  Returns the precision."""
    n_rows = y.shape[0]
    if binary:
        draw_latent(yhat, y, c)
        alpha[0] = 1.0
    else:
        sse = 0.0
        for i in range(n_rows):
            d = yhat[i] - y[i]
            c[i, 0] = d
            sse += d * d
        shape, rate = alpha_posterior(sse, n_rows, alpha_0, gamma_0)
        alpha[0] = np.random.gamma(shape, 1.0 / rate)
    a = alpha[0]
    w0[0] = coord_ls_w0(w0[0], c, a, mu_0, lambda_w0, np.random.standard_normal())
    return a


@njit(cache=True, nogil=True)
def gibbs_iteration(
    indptr, indices, data, colptr, rows, vals, y, binary, groups, members, offsets,
    w0, w, Vt, alpha, mu_w, lam_w, mu_v, lam_v, yhat, c, sums,
    alpha_0, beta_0, gamma_0, mu_0, lambda_w0, seed,
):
    """One Gibbs sweep over every parameter and hyperparameter.

    On entry ``yhat`` holds the scores of the current state; on exit the
    scores of the new state (recomputed from scratch).  ``Vt`` is (k, n),
    ``mu_v``/``lam_v`` are (k, G), ``alpha`` is a (1,) array, ``c`` (n_rows, 2)
    the residual / q cache (see :func:`fmrec.model._als.coord_ls`).
    """
    np.random.seed(seed)
    n = w.shape[0]
    k = Vt.shape[0]
    a = _residuals_noise_bias(yhat, y, binary, c, w0, alpha, alpha_0, gamma_0, mu_0, lambda_w0)
    # linear terms
    _draw_group_hyper(w, members, offsets, mu_w, lam_w, alpha_0, beta_0, gamma_0, mu_0)
    for l in range(n):
        g = groups[l]
        w[l] = coord_ls(colptr, rows, vals, l, w[l], False, c, a, mu_w[g], lam_w[g],
                        np.random.standard_normal())
    # factors
    for f in range(k):
        _draw_group_hyper(Vt[f], members, offsets, mu_v[f], lam_v[f], alpha_0, beta_0, gamma_0, mu_0)
    for f in range(k):
        factor_cache(indptr, indices, data, Vt, f, c)
        for l in range(n):
            g = groups[l]
            Vt[f, l] = coord_ls(colptr, rows, vals, l, Vt[f, l], True, c, a, mu_v[f, g], lam_v[f, g],
                                np.random.standard_normal())
    # fresh scores for the next iteration
    scores_into(indptr, indices, data, w0[0], w, np.ascontiguousarray(Vt.T), yhat, sums)


@njit(cache=True, nogil=True)
def gibbs_iteration_blocks(
    col_off, r_off, nz_off, rp_off, cp_off, indptr, indices, data, colptr, rowidx, vals, maps, counts,
    y, binary, groups, members, offsets,
    w0, w, Vt, alpha, mu_w, lam_w, mu_v, lam_v, yhat, c,
    lin, q2, ss2, qall, ssall, E, L, O, OO, EO, qold, ssold,
    alpha_0, beta_0, gamma_0, mu_0, lambda_w0, seed,
):
    """:func:`gibbs_iteration` on a :class:`~fmrec.model._blocks.BlockDesign`: the same
    conditionals drawn in the same order with the same random numbers, from
    per-block-row aggregates (see :mod:`fmrec.model._blocks`)."""
    np.random.seed(seed)
    k = Vt.shape[0]
    a = _residuals_noise_bias(yhat, y, binary, c, w0, alpha, alpha_0, gamma_0, mu_0, lambda_w0)
    _draw_group_hyper(w, members, offsets, mu_w, lam_w, alpha_0, beta_0, gamma_0, mu_0)
    sweep_w_blocks(col_off, r_off, nz_off, cp_off, colptr, rowidx, vals, maps, counts,
                   groups, w, c, a, mu_w, lam_w, E, L)
    for f in range(k):
        _draw_group_hyper(Vt[f], members, offsets, mu_v[f], lam_v[f], alpha_0, beta_0, gamma_0, mu_0)
    for f in range(k):
        sweep_v_blocks(col_off, r_off, nz_off, rp_off, cp_off, indptr, indices, data, colptr, rowidx, vals,
                       maps, counts, groups, Vt, f, c, a, mu_v[f], lam_v[f],
                       qall, ssall, E, O, OO, EO, qold, ssold)
    block_scores_into(col_off, r_off, nz_off, rp_off, indptr, indices, data, maps, w0[0], w,
                      np.ascontiguousarray(Vt.T), yhat, lin, q2, ss2)


@njit(cache=True, nogil=True)
def accumulate(scores, acc, binary):
    """acc += Phi(scores) (binary) or scores (regression)."""
    if binary:
        for i in range(scores.shape[0]):
            acc[i] += 0.5 * math.erfc(-scores[i] / _SQRT2)
    else:
        for i in range(scores.shape[0]):
            acc[i] += scores[i]


@njit(cache=True, nogil=True)
def probit_metrics(scores, y):
    """(accuracy, mean log loss) of Phi(scores) against 0/1 y."""
    n = scores.shape[0]
    hits = 0
    ll = 0.0
    for i in range(n):
        s = scores[i]
        if y[i] > 0.5:
            p = 0.5 * math.erfc(-s / _SQRT2)
            if s >= 0.0:
                hits += 1
        else:
            p = 0.5 * math.erfc(s / _SQRT2)
            if s < 0.0:
                hits += 1
        ll -= math.log(max(p, 1e-300))
    return hits / n, ll / n


# ------------------------------------------------------------------ Python layer
def kept_iterations(n_iter: int, n_burn_in: int, n_kept: int) -> np.ndarray:
    """1-based iterations whose samples are kept: ``n_kept`` spread evenly over the
    post-burn-in iterations, always including the last one."""
    post = n_iter - n_burn_in
    return n_burn_in + (np.arange(1, n_kept + 1, dtype=np.int64) * post) // n_kept


def _group_index(groups: Any, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.asarray(groups)
    if g.shape != (n,):
        raise DataError(f"groups must have one entry per feature column ({n}), got shape {g.shape}")
    if n and (not np.issubdtype(g.dtype, np.integer) or g.min() < 0):
        raise DataError("groups must hold non-negative integers (one field group id per feature column)")
    _, inv = np.unique(g, return_inverse=True)  # compact ids 0..G-1
    inv = inv.astype(np.int64).ravel()
    order = np.argsort(inv, kind="stable").astype(np.int64)
    n_groups = int(inv.max()) + 1 if n else 0
    offsets = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(np.bincount(inv, minlength=n_groups), out=offsets[1:])
    return inv, order, offsets


def fit_mcmc(
    X: sp.csr_matrix,
    y: np.ndarray,
    *,
    task: str,
    n_factors: int,
    n_iter: int,
    n_burn_in: int,
    n_kept: int,
    groups: np.ndarray,
    init_std: float,
    rng: np.random.Generator,
    X_pred: sp.csr_matrix | None = None,
    callback: Callable[..., bool | None] | None = None,
) -> dict[str, Any]:
    """Gibbs-sample a Bayesian FM; returns the thinned samples and posterior-mean predictions.

    ``X`` (and ``X_pred``) is a sparse design matrix or a
    :class:`~fmrec.model._blocks.BlockDesign` (same chain, same random numbers,
    far less work when rows share large user/item blocks).
    ``task="regression"`` (Gaussian noise with a Gamma prior on its precision) or
    ``"binary"`` (probit with data augmentation, ``y`` in {0, 1}).  ``groups``
    (n_features,) non-negative ints assigns every column to a field group with
    its own Normal-Gamma hyperprior.  ``n_iter`` counts every iteration; the
    first ``n_burn_in`` are discarded; ``n_kept`` samples (1 <= n_kept <=
    n_iter - n_burn_in) are kept at evenly spaced post-burn-in iterations, the
    last iteration always among them.

    Returns a dict:

    - ``w0`` (S,) float64, ``w`` (S, n) float32, ``V`` (S, n, k) float32: the kept samples;
    - ``pred``: for ``X_pred``, the mean over *all* post-burn-in iterations of the
      score (regression, unclipped) or of ``Phi(score)`` (binary), else None;
    - ``history``: one dict per iteration (``iteration``, ``seconds``, ``alpha``,
      ``w0``, ``kept``, and ``train_rmse`` or ``train_accuracy``/``train_log_loss``
      of the current sample);
    - ``kept_iterations``: the 1-based iterations of the samples.

    ``callback(iteration, w0, w, V, entry)`` runs after every iteration with
    float32 copies of the current sample and its history entry; returning True
    stops the chain early: the samples kept so far are returned (the current
    sample if none was kept yet) and ``pred`` averages the post-burn-in
    iterations run (the current sample if none).
    """
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS} for the MCMC solver, got {task!r}")
    k = _check_int("n_factors", n_factors, 1)
    n_iter = _check_int("n_iter", n_iter, 1)
    n_burn_in = _check_int("n_burn_in", n_burn_in, 0)
    if n_burn_in >= n_iter:
        raise ConfigError(f"n_burn_in ({n_burn_in}) must be smaller than n_iter ({n_iter})")
    n_kept = _check_int("n_kept", n_kept, 1)
    if n_kept > n_iter - n_burn_in:
        raise ConfigError(f"n_kept ({n_kept}) cannot exceed the post-burn-in iterations ({n_iter - n_burn_in})")
    init_std = _check_nonneg("init_std", init_std)
    blocked = isinstance(X, BlockDesign)
    if blocked:
        n_rows, n = X.shape
        barr = X.arrays()
    else:
        M, (indptr, indices, data), (colptr, rows, vals) = design_arrays(X)
        n_rows, n = M.shape
    t = check_targets(y, n_rows, task)
    g_of, members, offsets = _group_index(groups, n)
    n_groups = offsets.shape[0] - 1
    binary = task == "binary"

    w0 = np.zeros(1, dtype=np.float64)
    w = np.zeros(n, dtype=np.float64)
    Vt = initial_factors(rng, n, k, init_std)
    alpha = np.ones(1, dtype=np.float64)
    mu_w = np.zeros(n_groups, dtype=np.float64)
    lam_w = np.ones(n_groups, dtype=np.float64)
    mu_v = np.zeros((k, n_groups), dtype=np.float64)
    lam_v = np.ones((k, n_groups), dtype=np.float64)
    yhat = np.empty(n_rows, dtype=np.float64)
    c = np.zeros((n_rows, 2), dtype=np.float64)
    sums = np.empty(k, dtype=np.float64)

    def scorer(design: Any) -> Callable[[np.ndarray], None]:
        """out[:] = scores of ``design``'s rows under the current state."""
        if isinstance(design, BlockDesign):
            if design.shape[1] != n:
                raise DataError(f"X_pred has {design.shape[1]} columns, X has {n}")
            arr = barr if design is X else design.arrays(columns=False)
            col_off, r_off, nz_off, rp_off, _, ip, ix, dt, _, _, _, maps, _ = arr
            lin = np.empty(r_off[-1], dtype=np.float64)
            q2 = np.empty((r_off[-1], k), dtype=np.float64)
            ss2 = np.empty((r_off[-1], k), dtype=np.float64)
            return lambda out: block_scores_into(col_off, r_off, nz_off, rp_off, ip, ix, dt, maps, w0[0], w,
                                                 np.ascontiguousarray(Vt.T), out, lin, q2, ss2)
        if design is X:
            Mp, pa = M, (indptr, indices, data)
        else:
            Mp, pa, _ = design_arrays(design, "X_pred")
        if Mp.shape[1] != n:
            raise DataError(f"X_pred has {Mp.shape[1]} columns, X has {n}")
        return lambda out: scores_into(*pa, w0[0], w, np.ascontiguousarray(Vt.T), out, sums)

    score_train = scorer(X)
    score_pred = None
    n_pred_rows = 0
    if X_pred is not None:
        score_pred = scorer(X_pred)
        n_pred_rows = X_pred.shape[0]
    score_train(yhat)
    if blocked:
        col_off, r_off, nz_off, rp_off, cp_off, b_ip, b_ix, b_dt, b_cp, b_ri, b_vl, b_maps, b_cnt = barr
        R_max = int(np.max(np.diff(r_off))) if len(r_off) > 1 else 0
        scratch = [np.empty(R_max, dtype=np.float64) for _ in range(7)]  # E, L, O, OO, EO, qold, ssold
        lin = np.empty(r_off[-1], dtype=np.float64)
        q2 = np.empty((r_off[-1], k), dtype=np.float64)
        ss2 = np.empty((r_off[-1], k), dtype=np.float64)
        qall = np.empty(r_off[-1], dtype=np.float64)
        ssall = np.empty(r_off[-1], dtype=np.float64)

    keep_at = kept_iterations(n_iter, n_burn_in, n_kept)
    keep_set = set(keep_at.tolist())
    S_w0: list[float] = []
    S_w: list[np.ndarray] = []
    S_V: list[np.ndarray] = []
    kept: list[int] = []
    pred_acc = pred_buf = None
    n_pred = 0
    if score_pred is not None:
        pred_acc = np.zeros(n_pred_rows, dtype=np.float64)
        pred_buf = np.empty_like(pred_acc)
    history: list[dict[str, float]] = []

    def sample_now() -> tuple[float, np.ndarray, np.ndarray]:
        return float(w0[0]), w.astype(np.float32), np.ascontiguousarray(Vt.T, dtype=np.float32)

    it = 0
    for it in range(1, n_iter + 1):
        start = time.perf_counter()
        seed = int(rng.integers(0, 2**32 - 1))
        if blocked:
            E, L, O, OO, EO, qold, ssold = scratch
            gibbs_iteration_blocks(
                col_off, r_off, nz_off, rp_off, cp_off, b_ip, b_ix, b_dt, b_cp, b_ri, b_vl, b_maps, b_cnt,
                t, binary, g_of, members, offsets,
                w0, w, Vt, alpha, mu_w, lam_w, mu_v, lam_v, yhat, c,
                lin, q2, ss2, qall, ssall, E, L, O, OO, EO, qold, ssold,
                ALPHA_0, BETA_0, GAMMA_0, MU_0, LAMBDA_W0, seed,
            )
        else:
            gibbs_iteration(
                indptr, indices, data, colptr, rows, vals, t, binary, g_of, members, offsets,
                w0, w, Vt, alpha, mu_w, lam_w, mu_v, lam_v, yhat, c, sums,
                ALPHA_0, BETA_0, GAMMA_0, MU_0, LAMBDA_W0, seed,
            )
        if not (np.isfinite(w0[0]) and np.isfinite(alpha[0])):
            raise DivergenceError(f"MCMC produced a non-finite state at iteration {it}; check the data scale")
        post = it > n_burn_in
        if post and score_pred is not None:
            score_pred(pred_buf)
            accumulate(pred_buf, pred_acc, binary)
            n_pred += 1
        is_kept = it in keep_set
        sample = None
        if is_kept or callback is not None:
            sample = sample_now()
        if is_kept:
            S_w0.append(sample[0])
            S_w.append(sample[1])
            S_V.append(sample[2])
            kept.append(it)
        entry: dict[str, float] = {"iteration": it}
        if binary:
            acc_, ll_ = probit_metrics(yhat, t)
            entry.update(train_accuracy=float(acc_), train_log_loss=float(ll_))
        else:
            entry["train_rmse"] = float(np.sqrt(np.mean((yhat - t) ** 2)))
        entry.update(alpha=float(alpha[0]), w0=float(w0[0]), kept=bool(is_kept),
                     seconds=time.perf_counter() - start)
        history.append(entry)
        if callback is not None and callback(it, sample[0], sample[1], sample[2], entry):
            break

    if not kept:  # stopped before any kept iteration: the current state is the sample
        s0, sw, sv = sample_now()
        S_w0.append(s0)
        S_w.append(sw)
        S_V.append(sv)
        kept.append(it)
    pred = None
    if score_pred is not None:
        if n_pred == 0:
            pred_acc[:] = 0.0
            score_pred(pred_buf)
            accumulate(pred_buf, pred_acc, binary)
            n_pred = 1
        pred = pred_acc / n_pred
    return {
        "w0": np.asarray(S_w0, dtype=np.float64),
        "w": np.stack(S_w).astype(np.float32, copy=False),
        "V": np.stack(S_V).astype(np.float32, copy=False),
        "pred": pred,
        "history": history,
        "kept_iterations": kept,
    }


__all__ = ["fit_mcmc"]
