"""Slow, obvious reference implementations the compiled kernels are checked against."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp


def fm_score_naive(x: np.ndarray, w0: float, w: np.ndarray, V: np.ndarray) -> float:
    """y(x) = w0 + sum_j w_j x_j + sum_{j<l} <v_j, v_l> x_j x_l, by the double loop."""
    s = w0
    nz = [j for j in range(len(x)) if x[j] != 0]
    for j in nz:
        s += w[j] * x[j]
    for a in range(len(nz)):
        for b in range(a + 1, len(nz)):
            j, l = nz[a], nz[b]
            s += float(np.dot(V[j].astype(np.float64), V[l].astype(np.float64))) * x[j] * x[l]
    return s


def fm_predict_naive(X: sp.csr_matrix, w0: float, w: np.ndarray, V: np.ndarray) -> np.ndarray:
    dense = X.toarray()
    return np.array([fm_score_naive(row, w0, w, V) for row in dense])


def sgd_step_naive(x: np.ndarray, y: float, task: str, params: dict, lr: tuple, l2: tuple,
                   optimizer: str) -> float:
    """One per-sample step, written out parameter by parameter. Mutates params; returns the loss."""
    w0, w, V = params["w0"], params["w"], params["V"]
    gw0, gw, gV = params["g_w0"], params["g_w"], params["g_V"]
    score = fm_score_naive(x, w0[0], w, V)
    if task == "regression":
        loss, g = 0.5 * (score - y) ** 2, score - y
    else:
        p = 1 / (1 + math.exp(-score))
        loss = -(y * math.log(p) + (1 - y) * math.log(1 - p))
        g = p - y
    nz = [j for j in range(len(x)) if x[j] != 0]
    sums = np.zeros(V.shape[1])
    for j in nz:
        sums += V[j].astype(np.float64) * x[j]

    def step(value: float, grad: float, acc: np.ndarray, idx: tuple, rate: float) -> float:
        if optimizer == "adagrad":
            acc[idx] += grad * grad
            return value - rate * grad / (math.sqrt(acc[idx]) + 1e-8)
        return value - rate * grad

    # the linear and factor penalties may be one number or one per column
    l2_w = np.broadcast_to(np.asarray(l2[1], dtype=np.float64), (len(x),))
    l2_v = np.broadcast_to(np.asarray(l2[2], dtype=np.float64), (len(x),))
    w0[0] = step(w0[0], g + l2[0] * w0[0], gw0, (0,), lr[0])
    for j in nz:
        w[j] = step(w[j], g * x[j] + l2_w[j] * w[j], gw, (j,), lr[1])
        for f in range(V.shape[1]):
            v = float(V[j, f])
            grad = g * x[j] * (sums[f] - v * x[j]) + l2_v[j] * v
            V[j, f] = step(v, grad, gV, (j, f), lr[2])
    return loss


def topk_naive(scores: np.ndarray, k: int, exclude: set[int] | None = None) -> tuple[list[int], list[float]]:
    """Top-k of one row by sorting: score descending, then smaller position first."""
    cand = [(-float(s), j) for j, s in enumerate(scores) if not exclude or j not in exclude]
    cand.sort()
    top = cand[:k]
    return [j for _, j in top], [-s for s, _ in top]


def assert_topk_equivalent(ids: np.ndarray, scores: np.ndarray, full_scores: np.ndarray, k: int,
                           exclude: set[int] | None = None, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    """Tie-aware check of one row against brute force.

    The returned scores must equal the true k best scores (sorted, best first), every
    returned id must carry its own true score, ids must be distinct and not excluded,
    and the row holds min(k, #candidates) items.  Items whose score ties the k-th best
    may be swapped for one another.
    """
    ref_ids, ref_scores = topk_naive(full_scores, k, exclude)
    n = len(ref_ids)
    valid = ids >= 0
    assert int(valid.sum()) == n, f"expected {n} items, got {int(valid.sum())}"
    assert np.all(valid[:n]) and not np.any(valid[n:]), "padding must come last"
    got = ids[:n]
    assert len(set(got.tolist())) == n, "duplicate items in a list"
    if exclude:
        assert not (set(got.tolist()) & exclude), "an excluded item leaked"
    np.testing.assert_allclose(scores[:n], ref_scores, rtol=rtol, atol=atol)
    np.testing.assert_allclose(scores[:n], full_scores[got], rtol=rtol, atol=atol)
    assert np.all(np.diff(scores[:n]) <= atol), "list is not best first"
    if n:
        kth = ref_scores[-1]
        strictly_better = {j for j, s in zip(ref_ids, ref_scores) if s > kth + atol}
        assert strictly_better <= set(got.tolist()), "an item strictly above the k-th score is missing"
    assert np.all(np.isneginf(scores[n:]))
