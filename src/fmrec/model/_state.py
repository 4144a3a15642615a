"""Starting state of the SGD-family fits, shared by the in-memory fit (:mod:`fmrec.model.fm`),
the streaming fit (:mod:`fmrec.model.streaming`) and the ALS solver, so that all of them
draw the same initial factors from the same seed (streaming with ``n_threads=1`` is the
in-memory model bit for bit; see the streaming tests)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np


def init_factors(rng: np.random.Generator, n: int, k: int, std: float) -> np.ndarray:
    """``(rng.standard_normal((n, k)) * std).astype(float32)``, drawn in blocks of rows: the
    same numbers without a float64 (n, k) temporary (0.5 GB at 1M features x 64)."""
    V = np.empty((n, k), dtype=np.float32)
    step = max(1, (1 << 21) // max(k, 1))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        V[lo:hi] = rng.standard_normal((hi - lo, k)) * std
    return V


class SGDState(NamedTuple):
    """Parameters, AdaGrad accumulators and kernel settings an SGD-family epoch loop starts from."""

    w0: np.ndarray  # (1,) float64; 0 for pairwise losses
    w: np.ndarray  # (n,) float32
    V: np.ndarray  # (n, k) float32
    g_w0: np.ndarray
    g_w: np.ndarray
    g_V: np.ndarray
    rates: tuple[float, float, float]  # learning rates: bias, linear, factors
    kind: int  # kernel task (pointwise) or loss (pairwise) code
    opt: int  # kernel optimiser code
    n_threads: int


def sgd_state(model: Any, n_features: int, rng: np.random.Generator, target_mean: float | None = None) -> SGDState:
    """The starting state of ``model``'s fit over ``n_features`` columns.

    Pointwise (regression / binary) when ``target_mean`` is given: ``w0`` starts at the
    mean target (binary: its log-odds).  Pairwise (BPR / WARP) otherwise.  The factors
    come first from ``rng`` (the epoch loop draws its shuffles after them).
    """
    from fmrec._threads import resolve_threads
    from fmrec.model import _kernels as K

    k = int(model.n_factors)
    w0 = np.zeros(1, dtype=np.float64)
    if target_mean is not None:
        if model.task == "regression":
            w0[0] = float(target_mean)
        else:
            p = min(max(float(target_mean), 1e-6), 1 - 1e-6)
            w0[0] = math.log(p / (1 - p))
    w = np.zeros(n_features, dtype=np.float32)
    V = init_factors(rng, n_features, k, model._init_std())
    # WARP's rank weights reach log(n_items) ~ 7: AdaGrad accumulators start at 1 (as
    # LightFM's do) so the first steps are not full-size; measured +0.008 P@10 on ua.
    acc0 = 1.0 if target_mean is None and model.loss == "warp" else 0.0
    g_w0 = np.zeros(1, dtype=np.float64)
    g_w = np.full(n_features, acc0, dtype=np.float32)
    g_V = np.full((n_features, k), acc0, dtype=np.float32)
    if target_mean is not None:
        kind = K.TASK_REGRESSION if model.task == "regression" else K.TASK_BINARY
    else:
        kind = K.LOSS_WARP if model.loss == "warp" else K.LOSS_BPR
    opt = K.OPT_ADAGRAD if model.optimizer == "adagrad" else K.OPT_SGD
    n_threads = 1 if model.deterministic else resolve_threads(model.n_threads)
    return SGDState(w0, w, V, g_w0, g_w, g_V, model._rates(), kind, opt, n_threads)
