"""ALS for factorization machines: coordinate descent, one parameter at a time (libFM's ALS).

Private module: numba kernels plus the thin Python driver :func:`fit_als`.

The score is linear in every single parameter ``theta`` (``w0``, a ``w_l`` or a
``v_lf``)::

    y_hat_i(theta') = y_hat_i(theta) + (theta' - theta) * h_i
    h_i = 1                        for w0
    h_i = x_il                     for w_l
    h_i = x_il * (q_if - v_lf x_il) for v_lf,   q_if = sum_j v_jf x_ij

so with the residual cache ``e_i = y_hat_i - y_i`` (and, per factor, the cache
``q_if``) one parameter is updated in O(nnz of its column): a CSC copy of ``X``
gives the column, the caches are updated in the same pass.  An epoch (``w0``,
every ``w_l``, then factor by factor every ``v_lf``, as libFM does) costs
O(k * nnz).  Internally parameters are float64 (``Vt`` is factor-major,
``(k, n)``); the driver returns float32 like the SGD solver.

Regression (squared loss).  The objective is libFM's::

    sum_i (y_hat_i - y_i)^2 + l2_bias w0^2 + l2_linear ||w||^2 + l2_factors ||V||^2

(equivalently ``sum_i 1/2 e_i^2 + 1/2 lambda ||theta||^2``): the penalty is a
*total*, not per sample as in the SGD solver, whose per-sample ``l2`` acts like
``l2 * (number of rows a parameter occurs in)`` here.  Each coordinate is set to
its exact minimiser ``theta* = (theta S_hh - S_he) / (S_hh + lambda)`` with
``S_hh = sum h_i^2`` and ``S_he = sum h_i e_i`` — the same formula as the mean of
the Gibbs conditional in :mod:`fmrec.model._mcmc` with ``alpha = 1``, prior mean
0 and prior precision ``lambda``; the two solvers share :func:`coord_ls`.

Binary (logistic loss, y in {0, 1}).  Coordinate descent on::

    sum_i log(1 + exp(y_hat_i)) - y_i y_hat_i + 1/2 lambda ||theta||^2

Each coordinate takes one Newton step ``-(G + lambda theta) / (H + lambda)``
(``G = sum (p_i - y_i) h_i``, ``H = sum p_i (1 - p_i) h_i^2``, ``p = sigmoid``)
with Armijo backtracking on the coordinate's rows, so the objective never
increases (the coordinate-descent Newton method of liblinear/glmnet).  The score
is therefore a logit, as for the SGD solver: ``sigmoid(score)`` is the
predicted probability.  (libFM's ALS regresses on {-1, +1} or uses the probit
EM; neither gives a logit, and a least-squares fit on 0/1 targets gives no
probability at all.)
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import scipy.sparse as sp
from numba import get_num_threads, njit, prange

from fmrec.errors import ConfigError, DataError, DivergenceError

TASKS = ("regression", "binary")

_ARMIJO = 0.01
_MAX_HALVINGS = 30


# ------------------------------------------------------------------ shared kernels
@njit(cache=True, nogil=True)
def posterior_normal(theta, s_hh, s_he, alpha, mu, lam):
    """Conditional of one parameter whose score effect has slope ``h`` on each row.

    Prior ``N(mu, 1/lam)``, Gaussian likelihood with precision ``alpha`` on the
    residuals ``e`` (current value ``theta``).  Returns ``(mean, precision)``;
    the mean is also the ridge minimiser used by ALS.  ``precision <= 0``
    (nothing observed, no prior) returns ``(theta, 0)``: keep the value.
    """
    prec = lam + alpha * s_hh
    if not (prec > 0.0):
        return theta, 0.0
    return (alpha * (theta * s_hh - s_he) + lam * mu) / prec, prec


@njit(cache=True, nogil=True)
def draw_normal(theta, s_hh, s_he, alpha, mu, lam, z):
    """Mean of :func:`posterior_normal` plus ``z`` standard deviations (``z = 0``: the
    ridge / ALS update; a parameter with no precision keeps its value)."""
    mean, prec = posterior_normal(theta, s_hh, s_he, alpha, mu, lam)
    if z != 0.0 and prec > 0.0:
        return mean + z / math.sqrt(prec)
    return mean


@njit(cache=True, nogil=True)
def coord_ls(colptr, rows, vals, l, theta, is_v, c, alpha, mu, lam, z):
    """Least-squares / Gibbs update of ``w_l`` (``is_v=False``) or ``v_lf`` (``is_v=True``).

    ``c`` (n_rows, 2) is the cache: ``c[i, 0] = e_i``, ``c[i, 1] = q_if`` of the
    factor being swept (interleaved, as libFM's ``e_q_term``: one cache line per
    row touched).  New value = conditional mean + ``z`` / sqrt(precision);
    ``z = 0`` gives the ALS (ridge) update.  Updates the cache in place and
    returns the new value.
    """
    s_hh = 0.0
    s_he = 0.0
    lo = colptr[l]
    hi = colptr[l + 1]
    if is_v:
        for p in range(lo, hi):
            i = rows[p]
            x = np.float64(vals[p])
            h = x * (c[i, 1] - theta * x)
            s_hh += h * h
            s_he += h * c[i, 0]
    else:
        for p in range(lo, hi):
            i = rows[p]
            x = np.float64(vals[p])
            s_hh += x * x
            s_he += x * c[i, 0]
    new = draw_normal(theta, s_hh, s_he, alpha, mu, lam, z)
    d = new - theta
    if d != 0.0:
        if is_v:
            for p in range(lo, hi):
                i = rows[p]
                x = np.float64(vals[p])
                c[i, 0] += d * (x * (c[i, 1] - theta * x))
                c[i, 1] += d * x
        else:
            for p in range(lo, hi):
                i = rows[p]
                c[i, 0] += d * np.float64(vals[p])
    return new


@njit(cache=True, nogil=True)
def coord_ls_w0(w0, c, alpha, mu, lam, z):
    """Least-squares / Gibbs update of the global bias (``h_i = 1`` on every row)."""
    n = c.shape[0]
    s_he = 0.0
    for i in range(n):
        s_he += c[i, 0]
    mean, prec = posterior_normal(w0, float(n), s_he, alpha, mu, lam)
    new = mean
    if z != 0.0 and prec > 0.0:
        new = mean + z / math.sqrt(prec)
    d = new - w0
    if d != 0.0:
        for i in range(n):
            c[i, 0] += d
    return new


@njit(cache=True, nogil=True, inline="always")
def _row_q(indptr, indices, data, Vt, f, i):
    """q_if = sum_j v_jf x_ij of CSR row i."""
    s = 0.0
    for p in range(indptr[i], indptr[i + 1]):
        s += Vt[f, indices[p]] * np.float64(data[p])
    return s


@njit(cache=True, nogil=True)
def factor_cache(indptr, indices, data, Vt, f, c):
    """c[i, 1] = q_if = sum_j v_jf x_ij for every CSR row i."""
    for i in range(indptr.shape[0] - 1):
        c[i, 1] = _row_q(indptr, indices, data, Vt, f, i)


@njit(cache=True, parallel=True)
def _factor_cache_rows(indptr, indices, data, Vt, f, c):
    """:func:`factor_cache` with rows in parallel (the same numbers: each row's own sum)."""
    for i in prange(indptr.shape[0] - 1):
        c[i, 1] = _row_q(indptr, indices, data, Vt, f, i)


@njit(cache=True, nogil=True)
def scores_into(indptr, indices, data, w0, w, Vr, out, sums):
    """Full FM scores (float64) of every CSR row with row-major ``Vr`` (n, k)."""
    n = indptr.shape[0] - 1
    k = Vr.shape[1]
    for i in range(n):
        for f in range(k):
            sums[f] = 0.0
        s = w0
        sq = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            x = np.float64(data[p])
            s += w[j] * x
            for f in range(k):
                vx = Vr[j, f] * x
                sums[f] += vx
                sq += vx * vx
        inter = 0.0
        for f in range(k):
            inter += sums[f] * sums[f]
        out[i] = s + 0.5 * (inter - sq)


# ------------------------------------------------------------------ parallel sweeps
# A coordinate update reads and writes the caches of its column's rows only.  Columns
# whose rows are disjoint (a one-hot field: each row has one user, one item) can
# therefore be updated in any order, or at once, with the same result: the sweep
# visits contiguous *runs* of such columns (:func:`disjoint_runs`) and updates a long
# run's columns in parallel, bit for bit what the sequential sweep computes.
PARALLEL_RUN = 64  # runs shorter than this are swept sequentially


def disjoint_runs(colptr: np.ndarray, rows: np.ndarray, n_rows: int) -> np.ndarray:
    """Boundaries ``b`` of maximal contiguous column runs ``b[r]..b[r+1]-1`` in which no row
    has two nonzeros (greedy, in column order); O(nnz)."""
    return _disjoint_runs(np.ascontiguousarray(colptr, dtype=np.int64), rows, n_rows)


@njit(cache=True)
def _disjoint_runs(colptr, rows, n_rows):
    n = colptr.shape[0] - 1
    last = np.full(n_rows, -1, dtype=np.int64)  # run in which the row was last seen
    bounds = np.empty(n + 1, dtype=np.int64)
    bounds[0] = 0
    m = 1
    run = 0
    for l in range(n):
        clash = False
        for p in range(colptr[l], colptr[l + 1]):
            if last[rows[p]] == run:
                clash = True
                break
        if clash:
            run += 1
            bounds[m] = l
            m += 1
        for p in range(colptr[l], colptr[l + 1]):
            last[rows[p]] = run
    bounds[m] = n
    return bounds[:m + 1].copy()


@njit(cache=True, nogil=True, inline="always")
def _coord(colptr, rows, vals, l, theta, is_v, c, y, lam, logistic):
    if logistic:
        return coord_logistic(colptr, rows, vals, l, theta, is_v, c, y, lam)
    return coord_ls(colptr, rows, vals, l, theta, is_v, c, 1.0, 0.0, lam, 0.0)


@njit(cache=True, parallel=True)
def _sweep(colptr, rows, vals, theta, is_v, c, y, lam, runs, min_run, logistic):
    """Update every column of ``theta`` (``w``, or a row of ``Vt``) run by run: least squares,
    or a Newton step under logistic loss; runs of at least ``min_run`` columns in parallel."""
    for r in range(runs.shape[0] - 1):
        a = runs[r]
        b = runs[r + 1]
        if b - a >= min_run:
            for l in prange(a, b):
                theta[l] = _coord(colptr, rows, vals, l, theta[l], is_v, c, y, lam[l], logistic)
        else:
            for l in range(a, b):
                theta[l] = _coord(colptr, rows, vals, l, theta[l], is_v, c, y, lam[l], logistic)


def als_epoch(indptr, indices, data, colptr, rows, vals, y, w0, w, Vt, c, l2_b, l2_w, l2_v, runs, logistic):
    """One ALS epoch (``w0``, every ``w_l``, then factor by factor every ``v_lf``).

    Squared loss (``logistic=False``): ``c[:, 0]`` must hold ``e = y_hat - y`` on entry and
    holds it (updated incrementally) on exit; ``y`` is not read.  Logistic loss: ``c[:, 0]``
    holds the scores, ``y`` the 0/1 targets.  ``w0`` is a (1,) array; ``runs``: see
    :func:`disjoint_runs`.  On one numba thread everything runs sequentially (the
    parallel loops cost 2-5 % there)."""
    par = get_num_threads() > 1
    min_run = PARALLEL_RUN if par else np.iinfo(np.int64).max
    cache = _factor_cache_rows if par else factor_cache
    if logistic:
        w0[0] = coord_logistic_w0(w0[0], c, y, l2_b)
    else:
        w0[0] = coord_ls_w0(w0[0], c, 1.0, 0.0, l2_b, 0.0)
    _sweep(colptr, rows, vals, w, False, c, y, l2_w, runs, min_run, logistic)
    for f in range(Vt.shape[0]):
        cache(indptr, indices, data, Vt, f, c)
        _sweep(colptr, rows, vals, Vt[f], True, c, y, l2_v, runs, min_run, logistic)


# ------------------------------------------------------------------ logistic-loss coordinates
@njit(cache=True, nogil=True)
def _softplus(s):
    if s > 0.0:
        return s + math.log1p(math.exp(-s))
    return math.log1p(math.exp(s))


@njit(cache=True, nogil=True)
def _sigmoid(s):
    if s >= 0.0:
        return 1.0 / (1.0 + math.exp(-s))
    z = math.exp(s)
    return z / (1.0 + z)


@njit(cache=True, nogil=True)
def logistic_step(theta, G, H, lam):
    """Newton direction for one coordinate of the L2-penalised logistic loss."""
    den = H + lam
    if not (den > 0.0):
        return 0.0
    return -(G + lam * theta) / den


@njit(cache=True, nogil=True)
def coord_logistic(colptr, rows, vals, l, theta, is_v, c, y, lam):
    """Newton step with Armijo backtracking for ``w_l`` / ``v_lf`` under logistic loss.

    ``c[:, 0]`` is the score cache, ``c[:, 1]`` the q-cache of the factor being
    swept (both updated in place).  Returns the new value.
    """
    lo = colptr[l]
    hi = colptr[l + 1]
    G = 0.0
    H = 0.0
    S2 = 0.0
    for p in range(lo, hi):
        i = rows[p]
        x = np.float64(vals[p])
        h = x * (c[i, 1] - theta * x) if is_v else x
        pr = _sigmoid(c[i, 0])
        G += (pr - y[i]) * h
        hh = h * h
        H += pr * (1.0 - pr) * hh
        S2 += hh
    d = logistic_step(theta, G, H, lam)
    if d == 0.0:
        return theta
    slope = (G + lam * theta) * d  # < 0
    beta = 1.0
    # The loss's curvature is at most 1/4 per row, so f(theta + d) - f(theta) <=
    # slope + d^2 (S2/4 + lam)/2.  When that bound already meets the Armijo
    # condition the full step is accepted without evaluating the loss (the same
    # step the evaluated search would accept first).
    accepted = slope + 0.5 * d * d * (0.25 * S2 + lam) <= _ARMIJO * slope
    for _ in range(0 if accepted else _MAX_HALVINGS):
        step = beta * d
        diff = 0.5 * lam * ((theta + step) ** 2 - theta * theta)
        for p in range(lo, hi):
            i = rows[p]
            x = np.float64(vals[p])
            h = x * (c[i, 1] - theta * x) if is_v else x
            s_old = c[i, 0]
            diff += _softplus(s_old + step * h) - _softplus(s_old) - y[i] * step * h
        if diff <= _ARMIJO * beta * slope:
            accepted = True
            break
        beta *= 0.5
    if not accepted:
        return theta
    step = beta * d
    for p in range(lo, hi):
        i = rows[p]
        x = np.float64(vals[p])
        if is_v:
            c[i, 0] += step * (x * (c[i, 1] - theta * x))
            c[i, 1] += step * x
        else:
            c[i, 0] += step * x
    return theta + step


@njit(cache=True, nogil=True)
def coord_logistic_w0(w0, c, y, lam):
    """Newton step with Armijo backtracking for the global bias under logistic loss."""
    n = c.shape[0]
    G = 0.0
    H = 0.0
    for i in range(n):
        pr = _sigmoid(c[i, 0])
        G += pr - y[i]
        H += pr * (1.0 - pr)
    d = logistic_step(w0, G, H, lam)
    if d == 0.0:
        return w0
    slope = (G + lam * w0) * d
    if slope + 0.5 * d * d * (0.25 * n + lam) <= _ARMIJO * slope:  # curvature bound, see coord_logistic
        for i in range(n):
            c[i, 0] += d
        return w0 + d
    beta = 1.0
    for _ in range(_MAX_HALVINGS):
        step = beta * d
        diff = 0.5 * lam * ((w0 + step) ** 2 - w0 * w0)
        for i in range(n):
            diff += _softplus(c[i, 0] + step) - _softplus(c[i, 0]) - y[i] * step
        if diff <= _ARMIJO * beta * slope:
            for i in range(n):
                c[i, 0] += step
            return w0 + step
        beta *= 0.5
    return w0


# ------------------------------------------------------------------ Python layer
def canonical_csr(X: sp.spmatrix, name: str = "X") -> sp.csr_matrix:
    """A float32 CSR copy with summed duplicates and sorted indices; non-finite values raise."""
    if not sp.issparse(X):
        raise DataError(f"{name} must be a scipy.sparse matrix, got {type(X).__name__}")
    M = sp.csr_matrix(X, dtype=np.float32, copy=True)
    M.sum_duplicates()
    M.sort_indices()
    if not np.all(np.isfinite(M.data)):
        raise DataError(f"{name} holds non-finite values")
    return M


def design_arrays(X: sp.spmatrix, name: str = "X") -> tuple[sp.csr_matrix, tuple, tuple]:
    """Validated CSR + CSC arrays ``(indptr int64, indices int32, data float32)`` of ``X``."""
    M = canonical_csr(X, name)
    C = M.tocsc()
    C.sort_indices()
    csr = (np.ascontiguousarray(M.indptr, dtype=np.int64), np.ascontiguousarray(M.indices, dtype=np.int32),
           np.ascontiguousarray(M.data, dtype=np.float32))
    csc = (np.ascontiguousarray(C.indptr, dtype=np.int64), np.ascontiguousarray(C.indices, dtype=np.int32),
           np.ascontiguousarray(C.data, dtype=np.float32))
    return M, csr, csc


def check_targets(y: np.ndarray, n_rows: int, task: str) -> np.ndarray:
    t = np.ascontiguousarray(np.asarray(y, dtype=np.float64).ravel())
    if t.shape[0] != n_rows:
        raise DataError(f"X has {n_rows} rows but y has {t.shape[0]} values")
    if n_rows == 0:
        raise DataError("no training rows")
    if not np.all(np.isfinite(t)):
        r = int(np.flatnonzero(~np.isfinite(t))[0])
        raise DataError("target is not finite", line=r + 1, value=float(t[r]))
    if task == "binary" and not np.all((t == 0) | (t == 1)):
        r = int(np.flatnonzero((t != 0) & (t != 1))[0])
        raise DataError("binary targets must be 0 or 1", line=r + 1, value=float(t[r]))
    return t


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_nonneg(name: str, value: object) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a non-negative number, got {value!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
    return v


def per_column(name: str, value: object, n: int, dtype: type = np.float32) -> np.ndarray:
    """An L2 penalty as one value per design column: a number for every column, or an
    array of ``n`` non-negative numbers (e.g. one value per field)."""
    if np.ndim(value) == 0:
        return np.full(n, _check_nonneg(name, value), dtype=dtype)
    a = np.asarray(value, dtype=np.float64)
    if a.shape != (n,) or not np.all(np.isfinite(a)) or a.min(initial=0.0) < 0:
        raise ConfigError(f"{name} must be a non-negative number or {n} non-negative numbers (one per column)")
    return np.ascontiguousarray(a, dtype=dtype)


def initial_factors(rng: np.random.Generator, n_features: int, k: int, init_std: float) -> np.ndarray:
    """Factor-major float64 ``Vt`` (k, n) drawn exactly like the SGD solver's ``V`` (float32 (n, k))."""
    from fmrec.model._state import init_factors

    return np.ascontiguousarray(init_factors(rng, n_features, k, init_std).T, dtype=np.float64)


def binary_log_loss(scores: np.ndarray, y: np.ndarray) -> float:
    """Mean logistic loss of logit ``scores`` against 0/1 ``y``."""
    return float(np.mean(np.logaddexp(0.0, scores) - y * scores))


def fit_als(
    X: sp.csr_matrix,
    y: np.ndarray,
    *,
    task: str,
    n_factors: int,
    n_epochs: int,
    l2_bias: float,
    l2_linear: float,
    l2_factors: float,
    init_std: float,
    rng: np.random.Generator,
    callback: Callable[..., bool | None] | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Fit an FM by coordinate descent (ALS); returns ``(w0, w float32 (n,), V float32 (n, k))``.

    ``task="regression"``: squared loss, each parameter set to its exact
    ridge minimiser.  ``task="binary"`` (``y`` in {0, 1}): logistic loss, one
    safeguarded Newton step per parameter; the score is a logit, so
    ``sigmoid(score)`` is the probability.  The penalties are totals over the
    data (libFM's convention), see the module docstring.

    ``w`` starts at 0, ``w0`` at 0 (its first update sets it), ``V`` is drawn
    ``N(0, init_std^2)`` from ``rng`` exactly as the SGD solver draws it; no
    other randomness, so the same ``rng`` state gives the same model.

    ``callback(epoch, w0, w, V, train_loss)`` runs after every epoch (1-based)
    with fresh float32 copies of ``w``/``V`` (safe to keep) and the training
    RMSE (regression) or mean log loss (binary); returning True stops.
    """
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS} for the ALS solver, got {task!r}")
    k = _check_int("n_factors", n_factors, 1)
    n_epochs = _check_int("n_epochs", n_epochs, 1)
    l2_b = _check_nonneg("l2_bias", l2_bias)
    init_std = _check_nonneg("init_std", init_std)
    M, (indptr, indices, data), (colptr, rows, vals) = design_arrays(X)
    t = check_targets(y, M.shape[0], task)
    n_rows, n = M.shape
    l2_w = per_column("l2_linear", l2_linear, n, np.float64)
    l2_v = per_column("l2_factors", l2_factors, n, np.float64)
    w0 = np.zeros(1, dtype=np.float64)
    w = np.zeros(n, dtype=np.float64)
    Vt = initial_factors(rng, n, k, init_std)
    c = np.zeros((n_rows, 2), dtype=np.float64)  # [e (regression) or score (binary), q_f]
    scores = np.empty(n_rows, dtype=np.float64)
    sums = np.empty(k, dtype=np.float64)
    scores_into(indptr, indices, data, w0[0], w, np.ascontiguousarray(Vt.T), scores, sums)
    runs = disjoint_runs(colptr, rows, n_rows)
    for epoch in range(1, n_epochs + 1):
        # caches start every epoch from freshly computed scores: no drift carried over
        c[:, 0] = scores - t if task == "regression" else scores
        als_epoch(indptr, indices, data, colptr, rows, vals, t, w0, w, Vt, c, l2_b, l2_w, l2_v, runs, task == "binary")
        if not (np.isfinite(w0[0]) and np.isfinite(w).all() and np.isfinite(Vt).all()):
            raise DivergenceError(
                f"ALS produced non-finite parameters at epoch {epoch}; raise the L2 penalties "
                f"(l2_bias={l2_b}, l2_linear={l2_w.min():g}..{l2_w.max():g}, "
                f"l2_factors={l2_v.min():g}..{l2_v.max():g}) or check the data scale"
            )
        scores_into(indptr, indices, data, w0[0], w, np.ascontiguousarray(Vt.T), scores, sums)
        if task == "regression":
            loss = float(np.sqrt(np.mean((scores - t) ** 2)))
        else:
            loss = binary_log_loss(scores, t)
        if callback is not None:
            V32 = np.ascontiguousarray(Vt.T, dtype=np.float32)
            if callback(epoch, float(w0[0]), w.astype(np.float32), V32, loss):
                break
    return float(w0[0]), w.astype(np.float32), np.ascontiguousarray(Vt.T, dtype=np.float32)


__all__ = ["fit_als"]
