"""Compiled FM kernels (numba).  Private: callers pass validated, contiguous arrays.

Design matrix rows come as CSR (``indptr`` int64, ``indices`` int32, ``data`` float32).
Parameters: ``w0`` (1,) float64, ``w`` (n,) float32, ``V`` (n, k) float32.
Slow reference implementations live in ``tests/reference.py``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

TASK_REGRESSION = 0
TASK_BINARY = 1

OPT_SGD = 0
OPT_ADAGRAD = 1

_EPS = 1e-8


@njit(cache=True, fastmath=False, nogil=True)
def _row_score(indptr, indices, data, r, w0, w, V, sums):
    """FM score of row r; fills ``sums[f] = sum_j v_jf x_j``."""
    k = V.shape[1]
    for f in range(k):
        sums[f] = 0.0
    s = w0
    sq = 0.0
    for p in range(indptr[r], indptr[r + 1]):
        j = indices[p]
        x = data[p]
        s += w[j] * x
        for f in range(k):
            vx = V[j, f] * x
            sums[f] += vx
            sq += vx * vx
    inter = 0.0
    for f in range(k):
        inter += sums[f] * sums[f]
    return s + 0.5 * (inter - sq)


@njit(cache=True, parallel=True, nogil=True)
def predict_raw(indptr, indices, data, w0, w, V, n_chunks):
    """Raw FM scores (logits for binary) for every CSR row, in ``n_chunks`` parallel chunks."""
    n = indptr.shape[0] - 1
    out = np.empty(n, dtype=np.float64)
    k = V.shape[1]
    for c in prange(n_chunks):
        sums = np.empty(k, dtype=np.float64)
        lo = c * n // n_chunks
        hi = (c + 1) * n // n_chunks
        for r in range(lo, hi):
            out[r] = _row_score(indptr, indices, data, r, w0, w, V, sums)
    return out


@njit(cache=True, nogil=True)
def _loss_grad(task, score, y):
    """(loss, dloss/dscore) for one sample."""
    if task == TASK_REGRESSION:
        e = score - y
        return 0.5 * e * e, e
    # logistic loss with y in {0, 1}; numerically stable forms
    if score >= 0:
        z = math.exp(-score)
        p = 1.0 / (1.0 + z)
        loss = (1.0 - y) * score + math.log1p(z)
    else:
        z = math.exp(score)
        p = z / (1.0 + z)
        loss = -y * score + math.log1p(z)
    return loss, p - y


@njit(cache=True, nogil=True)
def _sgd_range(
    indptr, indices, data, y, order, lo, hi, task, optimizer,
    w0, w, V, g_w0, g_w, g_V,
    lr_b, lr_w, lr_v, l2_b, l2_w, l2_v, sums,
):
    k = V.shape[1]
    total = 0.0
    for t in range(lo, hi):
        r = order[t]
        score = _row_score(indptr, indices, data, r, w0[0], w, V, sums)
        loss, g = _loss_grad(task, score, y[r])
        total += loss
        # global bias
        gb = g + l2_b * w0[0]
        if optimizer == OPT_ADAGRAD:
            g_w0[0] += gb * gb
            w0[0] -= lr_b * gb / (math.sqrt(g_w0[0]) + _EPS)
        else:
            w0[0] -= lr_b * gb
        for p in range(indptr[r], indptr[r + 1]):
            j = indices[p]
            x = data[p]
            gw = g * x + l2_w * w[j]
            if optimizer == OPT_ADAGRAD:
                g_w[j] += gw * gw
                w[j] -= lr_w * gw / (math.sqrt(g_w[j]) + _EPS)
            else:
                w[j] -= lr_w * gw
            for f in range(k):
                v = V[j, f]
                gv = g * x * (sums[f] - v * x) + l2_v * v
                if optimizer == OPT_ADAGRAD:
                    g_V[j, f] += gv * gv
                    V[j, f] = v - lr_v * gv / (math.sqrt(g_V[j, f]) + _EPS)
                else:
                    V[j, f] = v - lr_v * gv
    return total


@njit(cache=True, parallel=True, nogil=True)
def sgd_epoch(
    indptr, indices, data, y, order, task, optimizer,
    w0, w, V, g_w0, g_w, g_V,
    lr_b, lr_w, lr_v, l2_b, l2_w, l2_v, n_shards,
):
    """One epoch of per-sample SGD over ``order``; returns the summed loss.

    With ``n_shards > 1`` the order is split into contiguous shards processed by
    parallel threads that update the shared parameters without locks (Hogwild).
    ``n_shards == 1`` is sequential and bit-for-bit reproducible.
    """
    n = order.shape[0]
    k = V.shape[1]
    losses = np.zeros(n_shards, dtype=np.float64)
    for s in prange(n_shards):
        sums = np.empty(k, dtype=np.float64)
        lo = s * n // n_shards
        hi = (s + 1) * n // n_shards
        losses[s] = _sgd_range(
            indptr, indices, data, y, order, lo, hi, task, optimizer,
            w0, w, V, g_w0, g_w, g_V, lr_b, lr_w, lr_v, l2_b, l2_w, l2_v, sums,
        )
    return losses.sum()
