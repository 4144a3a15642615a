"""Slow, obvious references for the ALS and MCMC solvers (``fmrec.model._als`` / ``_mcmc``).

Nothing here uses the residual or q caches: a parameter's effect on the scores
is measured by re-scoring the whole (dense, tiny) design matrix with the
double-loop scorer of ``reference.py`` at two values of the parameter.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from reference import fm_predict_naive


def with_param(w0: float, w: np.ndarray, V: np.ndarray, param: tuple, value: float):
    """Copies of (w0, w, V) with the parameter ``("w0",)``, ``("w", l)`` or ``("v", l, f)`` set."""
    w0, w, V = float(w0), np.array(w, dtype=np.float64), np.array(V, dtype=np.float64)
    if param[0] == "w0":
        w0 = value
    elif param[0] == "w":
        w[param[1]] = value
    else:
        V[param[1], param[2]] = value
    return w0, w, V


def get_param(w0: float, w: np.ndarray, V: np.ndarray, param: tuple) -> float:
    if param[0] == "w0":
        return float(w0)
    if param[0] == "w":
        return float(w[param[1]])
    return float(V[param[1], param[2]])


def affine_in_param(X: sp.csr_matrix, w0: float, w: np.ndarray, V: np.ndarray, param: tuple):
    """Scores as ``a + b * theta``: ``a`` at theta = 0, ``b`` = score(1) - score(0), by brute force."""
    X = sp.csr_matrix(X, dtype=np.float64)  # float64 entries: the double loop stays in float64
    a = fm_predict_naive(X, *with_param(w0, w, V, param, 0.0))
    b = fm_predict_naive(X, *with_param(w0, w, V, param, 1.0)) - a
    return a, b


def gaussian_conditional(X, y, w0, w, V, param, alpha: float, mu: float, lam: float) -> tuple[float, float]:
    """(mean, variance) of theta given everything else under
    ``y ~ N(score, 1/alpha)`` and the prior ``theta ~ N(mu, 1/lam)``.
    With alpha = 1, mu = 0 the mean is the ridge (ALS) minimiser of
    ``sum (score - y)^2 + lam theta^2``."""
    a, b = affine_in_param(X, w0, w, V, param)
    prec = alpha * float(b @ b) + lam
    mean = (alpha * float(b @ (np.asarray(y, float) - a)) + lam * mu) / prec
    return mean, 1.0 / prec


def logistic_objective(X, y, w0, w, V, lam: float, param: tuple) -> float:
    """Logistic loss of the scores plus ``lam/2 theta^2`` for the one parameter that varies."""
    s = fm_predict_naive(sp.csr_matrix(X, dtype=np.float64), w0, w, V)
    theta = get_param(w0, w, V, param)
    return float(np.sum(np.logaddexp(0.0, s) - np.asarray(y, float) * s) + 0.5 * lam * theta * theta)


def logistic_newton_coordinate(X, y, w0, w, V, param, lam: float, armijo: float = 0.01, halvings: int = 30) -> float:
    """One Newton step on one coordinate of the penalised logistic loss, halved until the
    Armijo condition ``f(theta + t d) - f(theta) <= armijo * t * d * f'(theta)`` holds."""
    a, b = affine_in_param(X, w0, w, V, param)
    theta = get_param(w0, w, V, param)
    s = a + b * theta
    p = 1.0 / (1.0 + np.exp(-s))
    grad = float(np.sum((p - y) * b)) + lam * theta
    hess = float(np.sum(p * (1 - p) * b * b)) + lam
    if hess <= 0:
        return theta
    d = -grad / hess
    if d == 0:
        return theta
    f0 = logistic_objective(X, y, w0, w, V, lam, param)
    t = 1.0
    for _ in range(halvings):
        f1 = logistic_objective(X, y, *with_param(w0, w, V, param, theta + t * d), lam, param)
        if f1 - f0 <= armijo * t * d * grad:
            return theta + t * d
        t *= 0.5
    return theta


def precision_conditional(values: np.ndarray, mu: float, alpha_0=1.0, beta_0=1.0, gamma_0=1.0, mu_0=0.0):
    """Gamma (shape, rate) of a group precision lambda given its members and mean, under
    ``theta_l ~ N(mu, 1/lambda)``, ``mu ~ N(mu_0, 1/(beta_0 lambda))``, ``lambda ~ Gamma(alpha_0/2, gamma_0/2)``:
    the density is proportional to
    lambda^(alpha_0/2 - 1 + (n+1)/2) exp(-lambda/2 [gamma_0 + beta_0 (mu-mu_0)^2 + sum (theta-mu)^2])."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    shape = alpha_0 / 2 + (n + 1) / 2
    rate = (gamma_0 + beta_0 * (mu - mu_0) ** 2 + float(np.sum((values - mu) ** 2))) / 2
    return shape, rate


def mean_conditional(values: np.ndarray, lam: float, beta_0=1.0, mu_0=0.0):
    """Normal (mean, variance) of a group mean given its members and precision:
    prior N(mu_0, 1/(beta_0 lam)) times the n likelihood terms N(theta_l; mu, 1/lam)."""
    values = np.asarray(values, dtype=np.float64)
    prec = lam * (beta_0 + len(values))
    return lam * (beta_0 * mu_0 + float(values.sum())) / prec, 1.0 / prec


def noise_precision_conditional(residuals: np.ndarray, alpha_0=1.0, gamma_0=1.0):
    """Gamma (shape, rate) of the noise precision alpha given the residuals (prior Gamma(alpha_0/2, gamma_0/2))."""
    r = np.asarray(residuals, dtype=np.float64)
    return (alpha_0 + len(r)) / 2, (gamma_0 + float(r @ r)) / 2


def truncated_normal_mean(a: float) -> float:
    """E[x | x > a] for a standard normal x."""
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    tail = 0.5 * math.erfc(a / math.sqrt(2))
    return phi / tail


def planted_fm(seed: int, n_users: int = 60, n_items: int = 50, k: int = 3, density: float = 0.5,
               noise: float = 0.0, test_frac: float = 0.2):
    """Noise-free (or low-noise) ratings of a planted FM over one-hot user + item columns.

    Returns ``(X_train, y_train, X_test, y_test, groups)`` with ``groups`` = 0 for
    user columns and 1 for item columns."""
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(n_users, k)) * 0.7
    Q = rng.normal(size=(n_items, k)) * 0.7
    bu = rng.normal(size=n_users) * 0.3
    bi = rng.normal(size=n_items) * 0.3
    full = 3.0 + bu[:, None] + bi[None, :] + P @ Q.T
    u, i = np.nonzero(rng.random((n_users, n_items)) < density)
    y = full[u, i] + noise * rng.normal(size=len(u))
    rows = np.repeat(np.arange(len(u)), 2)
    cols = np.stack([u, n_users + i], axis=1).ravel()
    X = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(u), n_users + n_items))
    test = rng.random(len(u)) < test_frac
    groups = np.r_[np.zeros(n_users, int), np.ones(n_items, int)]
    return X[~test], y[~test], X[test], y[test], groups
