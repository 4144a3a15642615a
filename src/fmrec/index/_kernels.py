"""Compiled top-k selection (numba).  Private: callers pass validated arrays.

Order convention everywhere: higher score first; equal scores by smaller
position first.  A heap row keeps the current k best of a user with its
*worst* entry at the root.  Reference implementations: ``tests/reference.py``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

NEG_INF = np.float32(-np.inf)


@njit(cache=True, inline="always")
def _worse(s_a, i_a, s_b, i_b):
    """True when (s_a, i_a) ranks below (s_b, i_b)."""
    return s_a < s_b or (s_a == s_b and i_a > i_b)


@njit(cache=True)
def _sift_down(hs, hi, start, n):
    pos = start
    while True:
        left = 2 * pos + 1
        if left >= n:
            break
        child = left
        right = left + 1
        # root holds the worst: pick the worse child
        if right < n and _worse(hs[right], hi[right], hs[left], hi[left]):
            child = right
        if _worse(hs[child], hi[child], hs[pos], hi[pos]):
            ts = hs[pos]
            ti = hi[pos]
            hs[pos] = hs[child]
            hi[pos] = hi[child]
            hs[child] = ts
            hi[child] = ti
            pos = child
        else:
            break


@njit(cache=True)
def _push_row(hs, hi, k, s, j):
    """Offer candidate (s, j) to a full heap of size k whose root is the worst."""
    if _worse(hs[0], hi[0], s, j):
        hs[0] = s
        hi[0] = j
        _sift_down(hs, hi, 0, k)


@njit(cache=True, parallel=True)
def topk_update(S, item_offset, row_offset, excl_indptr, excl_indices, heap_s, heap_i):
    """Merge a block of scores into running heaps.

    ``S`` (bu, bi) holds scores of users ``row_offset + r`` against items
    ``item_offset + c``; excluded items of each user (CSR over block rows'
    global user rows, sorted column indices) are skipped.  ``heap_s``/``heap_i``
    (bu, k) are the running heaps for these rows (initialised to -inf / -1).
    """
    bu, bi = S.shape
    k = heap_s.shape[1]
    has_excl = excl_indptr.shape[0] > 0
    hi_item = item_offset + bi
    for r in prange(bu):
        hs = heap_s[r]
        hid = heap_i[r]
        row = S[r]
        if has_excl:
            g = row_offset + r
            a = excl_indptr[g]
            b = excl_indptr[g + 1]
            # first excluded index >= item_offset (binary search)
            lo = a
            hi = b
            while lo < hi:
                mid = (lo + hi) // 2
                if excl_indices[mid] < item_offset:
                    lo = mid + 1
                else:
                    hi = mid
            p = lo
            while p < b and excl_indices[p] < hi_item:
                row[excl_indices[p] - item_offset] = NEG_INF
                p += 1
        root_s = hs[0]
        for c in range(bi):
            s = row[c]
            if s > root_s:  # items arrive in increasing position: equal scores never displace
                hs[0] = s
                hid[0] = item_offset + c
                _sift_down(hs, hid, 0, k)
                root_s = hs[0]


@njit(cache=True, parallel=True)
def heaps_to_sorted(heap_s, heap_i):
    """Sort every heap row in place: best first, ties by smaller position; padding last."""
    n, k = heap_s.shape
    for r in prange(n):
        hs = heap_s[r]
        hid = heap_i[r]
        # rebuild the heap invariant (rows may come unsorted), then pop worst to the end
        for start in range(k // 2 - 1, -1, -1):
            _sift_down(hs, hid, start, k)
        for end in range(k - 1, 0, -1):
            ts = hs[0]
            ti = hid[0]
            hs[0] = hs[end]
            hid[0] = hid[end]
            hs[end] = ts
            hid[end] = ti
            _sift_down(hs, hid, 0, end)
        # now ascending from worst at the end? popping the worst to the end gives best-first order
        for c in range(k):
            if hs[c] == NEG_INF:
                hid[c] = -1


@njit(cache=True, parallel=True)
def filter_candidates(ids, scores, excl_indptr, excl_indices, row_offset, k, out_i, out_s):
    """Keep the first k candidates of each row that are not excluded (faiss over-fetch path).

    ``ids``/``scores`` (n, m) are best first with -1 padding; results go to
    ``out_i``/``out_s`` (n, k), padded with -1 / -inf.
    """
    n, m = ids.shape
    has_excl = excl_indptr.shape[0] > 0
    for r in prange(n):
        c = 0
        if has_excl:
            a = excl_indptr[row_offset + r]
            b = excl_indptr[row_offset + r + 1]
        else:
            a = 0
            b = 0
        for t in range(m):
            if c >= k:
                break
            j = ids[r, t]
            if j < 0:
                continue
            # binary search j among the row's excluded indices
            lo = a
            hi = b
            while lo < hi:
                mid = (lo + hi) // 2
                if excl_indices[mid] < j:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < b and excl_indices[lo] == j:
                continue
            out_i[r, c] = j
            out_s[r, c] = scores[r, t]
            c += 1
        for t in range(c, k):
            out_i[r, t] = -1
            out_s[r, t] = NEG_INF
