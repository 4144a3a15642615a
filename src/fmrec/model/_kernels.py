"""Compiled FM kernels (numba).  Private: callers pass validated, contiguous arrays.

Design matrix rows come as CSR (``indptr`` int64, ``indices`` int32, ``data`` float32).
Parameters: ``w0`` (1,) float64, ``w`` (n,) float32, ``V`` (n, k) float32.
L2 penalties of linear and factor terms are per column (``l2_w``, ``l2_v``: (n,)
float32), so every field can have its own; ``l2_b`` (the bias) is a scalar.
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

#: Dot products may be reassociated (SIMD) and contracted (FMA): no NaN/Inf
#: assumptions, so IEEE semantics otherwise hold; results stay deterministic per sample.
_REASSOC = {"reassoc", "contract"}


@njit(cache=True, fastmath=_REASSOC, nogil=True)
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


@njit(cache=True, nogil=True, fastmath=_REASSOC)
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
            gw = g * x + l2_w[j] * w[j]
            if optimizer == OPT_ADAGRAD:
                g_w[j] += gw * gw
                w[j] -= lr_w * gw / (math.sqrt(g_w[j]) + _EPS)
            else:
                w[j] -= lr_w * gw
            for f in range(k):
                v = V[j, f]
                gv = g * x * (sums[f] - v * x) + l2_v[j] * v
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


@njit(cache=True, parallel=True, nogil=True)
def sgd_round(
    indptr, indices, data, y, order, bounds, task, optimizer,
    w0s, w, V, g_w0s, g_w, g_V,
    lr_b, lr_w, lr_v, l2_b, l2_w, l2_v,
):
    """One round of the reproducible schedule (:mod:`fmrec.model._strata`): thread t
    runs sequential SGD over ``order[bounds[t, 0]:bounds[t, 1]]`` with its own
    global bias ``w0s[t]``; ``indices`` already send shared columns to the
    thread's private copies, so no two threads write the same parameter."""
    T = bounds.shape[0]
    k = V.shape[1]
    losses = np.zeros(T, dtype=np.float64)
    for t in prange(T):
        sums = np.empty(k, dtype=np.float64)
        losses[t] = _sgd_range(
            indptr, indices, data, y, order, bounds[t, 0], bounds[t, 1], task, optimizer,
            w0s[t:t + 1], w, V, g_w0s[t:t + 1], g_w, g_V, lr_b, lr_w, lr_v, l2_b, l2_w, l2_v, sums,
        )
    return losses.sum()


LOSS_BPR = 0
LOSS_WARP = 1


@njit(cache=True, nogil=True)
def _is_positive(pos_indptr, pos_indices, u, j):
    lo = pos_indptr[u]
    hi = pos_indptr[u + 1]
    while lo < hi:
        mid = (lo + hi) // 2
        if pos_indices[mid] < j:
            lo = mid + 1
        else:
            hi = mid
    return lo < pos_indptr[u + 1] and pos_indices[lo] == j


@njit(cache=True, nogil=True, fastmath=_REASSOC)
def _side_sum(indptr, indices, data, r, V, out):
    """out[f] = sum_l V[l, f] x_l over side row r."""
    k = V.shape[1]
    for f in range(k):
        out[f] = 0.0
    for p in range(indptr[r], indptr[r + 1]):
        j = indices[p]
        x = data[p]
        for f in range(k):
            out[f] += V[j, f] * x


@njit(cache=True, nogil=True, fastmath=_REASSOC)
def _item_score(ip, ii, idata, i, w, V, p_u, q):
    """<p_u, q_i> + w.x_i + P(x_i); fills q = V^T x_i."""
    k = V.shape[1]
    for f in range(k):
        q[f] = 0.0
    lin = 0.0
    sq = 0.0
    for p in range(ip[i], ip[i + 1]):
        j = ii[p]
        x = idata[p]
        lin += w[j] * x
        for f in range(k):
            vx = V[j, f] * x
            q[f] += vx
            sq += vx * vx
    s = lin
    qq = 0.0
    for f in range(k):
        s += p_u[f] * q[f]
        qq += q[f] * q[f]
    return s + 0.5 * (qq - sq)


@njit(cache=True, nogil=True)
def _adagrad(value, grad, acc, lr, optimizer):
    if optimizer == OPT_ADAGRAD:
        acc_new = acc + grad * grad
        return value - lr * grad / (math.sqrt(acc_new) + _EPS), acc_new
    return value - lr * grad, acc


@njit(cache=True, nogil=True, fastmath=_REASSOC)
def _factor_row(V, g_V, l, gx, a, b, b_sign, xf, l2, lrv, eps, ada):
    """Row l of V steps along grad_f = gx * (a_f + b_sign * b_f - v_f * xf) + l2 * v_f
    (AdaGrad when ``ada``); a straight-line f loop, so it vectorises."""
    if ada:
        for f in range(V.shape[1]):
            v = V[l, f]
            grad = gx * (a[f] + b_sign * b[f] - v * xf) + l2 * v
            acc = g_V[l, f] + grad * grad
            g_V[l, f] = acc
            V[l, f] = v - lrv * grad / (np.sqrt(acc) + eps)
    else:
        for f in range(V.shape[1]):
            v = V[l, f]
            V[l, f] = v - lrv * (gx * (a[f] + b_sign * b[f] - v * xf) + l2 * v)


@njit(cache=True, nogil=True, fastmath=_REASSOC)
def _pair_update(
    up, ui, udata, u, ip, ii, idata, i, j, g, optimizer,
    w, V, g_w, g_V, lr_w, lr_v, l2_w, l2_v, p_u, q_i, q_j,
):
    """Apply dL/dd = g for d = y(u,i) - y(u,j) (parameters read before any write)."""
    lrv = np.float32(lr_v)
    eps = np.float32(_EPS)
    ada = optimizer == OPT_ADAGRAD
    zero = np.float32(0.0)
    # user-side factors: dd/dv_l = x_l (q_i - q_j)
    for p in range(up[u], up[u + 1]):
        l = ui[p]
        _factor_row(V, g_V, l, np.float32(g * udata[p]), q_i, q_j, np.float32(-1.0), zero,
                    np.float32(l2_v[l]), lrv, eps, ada)
    # item sides: dy/dv_l = x_l (p_u + q_it - v_l x_l); dy/dw_l = x_l
    for side in range(2):
        it = i if side == 0 else j
        q = q_i if side == 0 else q_j
        sign = 1.0 if side == 0 else -1.0
        for p in range(ip[it], ip[it + 1]):
            l = ii[p]
            x = idata[p]
            gw = sign * g * x + l2_w[l] * w[l]
            w[l], g_w[l] = _adagrad(w[l], gw, g_w[l], lr_w, optimizer)
            _factor_row(V, g_V, l, np.float32(sign * g * x), p_u, q, np.float32(1.0), np.float32(x),
                        np.float32(l2_v[l]), lrv, eps, ada)


@njit(cache=True, nogil=True)
def _pairwise_range(
    up, ui, udata, ip, ii, idata, pos_u, pos_i, pos_indptr, pos_indices, order, lo, hi, seed,
    loss_kind, max_sampled, optimizer, w, V, g_w, g_V, lr_w, lr_v, l2_w, l2_v,
    item_off, neg_pool, n_items,
):
    """Samples ``order[lo:hi]``; negatives are drawn uniformly from ``neg_pool``
    (original item indices); item ``i``'s row is ``item_off + i`` of the item CSR;
    ``n_items`` is the catalogue size WARP's rank estimate refers to."""
    k = V.shape[1]
    n_pool = neg_pool.shape[0]
    if n_pool == 0:
        return 0.0
    p_u = np.empty(k, dtype=np.float32)
    q_i = np.empty(k, dtype=np.float32)
    q_j = np.empty(k, dtype=np.float32)
    np.random.seed(seed)
    total = 0.0
    for t in range(lo, hi):
        s_idx = order[t]
        u = pos_u[s_idx]
        i = pos_i[s_idx]
        _side_sum(up, ui, udata, u, V, p_u)
        y_i = _item_score(ip, ii, idata, item_off + i, w, V, p_u, q_i)
        if loss_kind == LOSS_BPR:
            j = -1
            for _ in range(20):
                c = neg_pool[np.random.randint(0, n_pool)]
                if not _is_positive(pos_indptr, pos_indices, u, c):
                    j = c
                    break
            if j < 0:
                continue
            y_j = _item_score(ip, ii, idata, item_off + j, w, V, p_u, q_j)
            d = y_i - y_j
            # loss -log sigmoid(d); dL/dd = sigmoid(d) - 1 = -sigmoid(-d)
            if d >= 0:
                z = math.exp(-d)
                total += math.log1p(z)
                g = -z / (1.0 + z)
            else:
                z = math.exp(d)
                total += -d + math.log1p(z)
                g = -1.0 / (1.0 + z)
        else:
            j = -1
            trials = 0
            y_j = 0.0
            while trials < max_sampled:
                trials += 1
                c = neg_pool[np.random.randint(0, n_pool)]
                y_c = _item_score(ip, ii, idata, item_off + c, w, V, p_u, q_j)
                # a violator that is one of the user's positives is no negative; checking that only
                # for violators (most candidates are not) gives the same draws and outcome, cheaper
                if y_c > y_i - 1.0 and not _is_positive(pos_indptr, pos_indices, u, c):
                    j = c
                    y_j = y_c
                    break
            if j < 0:
                continue
            weight = math.log(max(1.0, math.floor((n_items - 1) / trials)))
            total += weight * (1.0 - y_i + y_j)
            g = -weight
        _pair_update(up, ui, udata, u, ip, ii, idata, item_off + i, item_off + j, g, optimizer,
                     w, V, g_w, g_V, lr_w, lr_v, l2_w, l2_v, p_u, q_i, q_j)
    return total


@njit(cache=True, parallel=True, nogil=True)
def pairwise_epoch(
    up, ui, udata, ip, ii, idata, pos_u, pos_i, pos_indptr, pos_indices, order, seeds,
    loss_kind, max_sampled, optimizer, w, V, g_w, g_V, lr_w, lr_v, l2_w, l2_v,
):
    """One epoch of BPR or WARP over the positive pairs in ``order``.

    User rows (``up, ui, udata``) and item rows (``ip, ii, idata``) are the two
    sides of the design matrix; negatives are items sampled uniformly and
    rejected when they are positives of the user (``pos_indptr/pos_indices``,
    sorted).  One shard per seed, processed in parallel (Hogwild).
    """
    n = order.shape[0]
    n_shards = seeds.shape[0]
    n_items = ip.shape[0] - 1
    pool = np.arange(n_items, dtype=np.int64)
    losses = np.zeros(n_shards, dtype=np.float64)
    for s in prange(n_shards):
        lo = s * n // n_shards
        hi = (s + 1) * n // n_shards
        losses[s] = _pairwise_range(
            up, ui, udata, ip, ii, idata, pos_u, pos_i, pos_indptr, pos_indices, order, lo, hi, seeds[s],
            loss_kind, max_sampled, optimizer, w, V, g_w, g_V, lr_w, lr_v, l2_w, l2_v, 0, pool, n_items,
        )
    return losses.sum()


@njit(cache=True, parallel=True, nogil=True)
def pairwise_round(
    up, ui, udata, ip, ii, idata, pos_u, pos_i, pos_indptr, pos_indices, order, bounds, seeds,
    loss_kind, max_sampled, optimizer, w, V, g_w, g_V, lr_w, lr_v, l2_w, l2_v,
    n_items, pools, pool_off, blocks,
):
    """One round of the reproducible schedule for BPR/WARP: thread t processes
    ``order[bounds[t, 0]:bounds[t, 1]]`` with item rows ``t * n_items + i`` of the
    (per-thread remapped, stacked) item CSR, drawing negatives from item block
    ``blocks[t]`` (``pools[pool_off[b]:pool_off[b + 1]]``)."""
    T = bounds.shape[0]
    losses = np.zeros(T, dtype=np.float64)
    for t in prange(T):
        b = blocks[t]
        losses[t] = _pairwise_range(
            up, ui, udata, ip, ii, idata, pos_u, pos_i, pos_indptr, pos_indices, order, bounds[t, 0],
            bounds[t, 1], seeds[t], loss_kind, max_sampled, optimizer, w, V, g_w, g_V, lr_w, lr_v, l2_w, l2_v,
            t * n_items, pools[pool_off[b]:pool_off[b + 1]], n_items,
        )
    return losses.sum()
