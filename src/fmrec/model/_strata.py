"""Reproducible multi-threaded SGD: a fixed schedule instead of Hogwild races.

Private module.  With ``T`` threads, lock-free Hogwild updates race on shared
parameters, so the same seed gives a different model on every run.  Here every
thread owns what it writes during a *round*, and shared parameters are merged in
a fixed order after it, so the model depends on the seed and ``T`` only:

- Rows are (user, item) pairs.  Users go to one of ``T`` user blocks and items to
  one of ``T`` item blocks, each balanced by row count (greedy: busiest first, to
  the lightest block; popular items would otherwise unbalance the threads), as in
  DSGD (Gemulla et al., KDD 2011).  An epoch has ``T`` rounds;
  in round ``s`` thread ``t`` processes, in the epoch's shuffled order, the rows
  of stratum ``(t, (t + s) % T)``.  Two threads never touch the same user-ID or
  item-ID column in a round.
- Every other column (``w0``, side features, implicit and context fields) is
  *shared*: each thread works on its own copy during a round (stored after the
  real columns of the parameter arrays, so the compiled kernels run unchanged on
  remapped column indices); after the round each shared parameter becomes
  ``G + sum_t (P_t - G)`` in thread order (AdaGrad accumulators too).
- Without user/item structure (a plain design matrix) every column is shared,
  rows go to threads round-robin and an epoch has ``UNSTRUCTURED_ROUNDS`` rounds.

Ranking (BPR/WARP) samples negatives from the whole catalogue (restricting them
to the positive's block would bias every pair's negatives the same way each
epoch), so there item columns are shared too: each thread updates its own copy of
the item parameters during a round, merged like every shared column; only the
user columns are owned.  ``T = 1`` is the plain sequential schedule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

UNSTRUCTURED_ROUNDS = 4


class Strata:
    """Schedule and private-copy bookkeeping for ``n_threads`` threads.

    ``exclusive``: bool per design column, True for columns only ever touched by
    rows of one user block or one item block (the ID one-hot columns).
    ``user_counts`` / ``item_counts``: rows per user / item (a structured schedule:
    rows carry user and item blocks); ``None``: rows go to threads round-robin and
    every column must be shared.
    """

    def __init__(self, n_threads: int, n_features: int, exclusive: np.ndarray,
                 user_counts: np.ndarray | None = None, item_counts: np.ndarray | None = None) -> None:
        self.T = int(n_threads)
        structured = user_counts is not None and item_counts is not None
        self.user_block = balanced_blocks(user_counts, self.T) if structured else None
        self.item_block = balanced_blocks(item_counts, self.T) if structured else None
        self.n = int(n_features)
        self.structured = bool(structured)
        self.shared = np.flatnonzero(~np.asarray(exclusive, dtype=bool)).astype(np.int64)
        self.n_shared = len(self.shared)
        self.slot = np.full(self.n, -1, dtype=np.int64)
        self.slot[self.shared] = np.arange(self.n_shared)
        self.n_rounds = self.T if self.structured else UNSTRUCTURED_ROUNDS

    # ------------------------------------------------------------ columns
    def private_rows(self, t: int) -> np.ndarray:
        """Rows of the extended parameter arrays holding thread t's copies of the shared columns."""
        return self.n + t * self.n_shared + np.arange(self.n_shared, dtype=np.int64)

    @property
    def n_extended(self) -> int:
        return self.n + self.T * self.n_shared

    def remap(self, M: sp.csr_matrix, thread_of_row: np.ndarray) -> np.ndarray:
        """Column indices of ``M`` with shared columns sent to the row's thread's copies."""
        idx = M.indices.astype(np.int64)
        t = np.repeat(np.asarray(thread_of_row, dtype=np.int64), np.diff(M.indptr))
        sl = self.slot[idx]
        out = np.where(sl >= 0, self.n + t * self.n_shared + sl, idx)
        return out.astype(np.int32)

    def extend(self, a: np.ndarray) -> np.ndarray:
        """A parameter array with room for every thread's copies (rows after the real ones)."""
        ext = np.zeros((self.n_extended,) + a.shape[1:], dtype=a.dtype)
        ext[:self.n] = a
        return ext

    def begin_round(self, *arrays: np.ndarray) -> None:
        if self.n_shared == 0:
            return
        for a in arrays:
            g = a[self.shared]
            for t in range(self.T):
                a[self.private_rows(t)] = g

    def end_round(self, *arrays: np.ndarray) -> None:
        if self.n_shared == 0:
            return
        for a in arrays:
            g = a[self.shared].astype(np.float64)
            total = g.copy()
            for t in range(self.T):  # fixed order: the merge is reproducible
                total += a[self.private_rows(t)].astype(np.float64) - g
            a[self.shared] = total.astype(a.dtype)

    def penalties(self, *per_column: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-column L2 arrays extended so every thread copy has its column's penalty."""
        out = []
        for a in per_column:
            ext = self.extend(a)
            self.begin_round(ext)
            out.append(ext)
        return tuple(out)

    def attach(self, *params: np.ndarray) -> tuple[np.ndarray, ...]:
        """Extend the parameter arrays (``w, V, g_w, g_V``) with the thread copies; returns
        views of their real rows (what the caller keeps using as ``w, V, ...``)."""
        self.params = tuple(self.extend(a) for a in params)
        return tuple(a[:self.n] for a in self.params)

    def sgd_epoch(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, y: np.ndarray,
                  order: np.ndarray, user_idx: np.ndarray | None, item_idx: np.ndarray | None,
                  task: int, optimizer: int, w0: np.ndarray, g_w0: np.ndarray,
                  lr: tuple[float, float, float], l2: tuple[float, float, float]) -> float:
        """Every round of one epoch of regression/binary SGD (``indices`` from :meth:`remap`)."""
        from fmrec.model import _kernels as K

        w0s, g_w0s = np.zeros(self.T), np.zeros(self.T)
        total = 0.0
        for rows, bounds, _ in self.rounds(order, user_idx, item_idx):
            self.begin_round(*self.params)
            w0s[:], g_w0s[:] = w0[0], g_w0[0]
            w_e, V_e, g_w_e, g_V_e = self.params
            total += K.sgd_round(indptr, indices, data, y, rows, bounds, task, optimizer,
                                 w0s, w_e, V_e, g_w0s, g_w_e, g_V_e, *lr, *l2)
            self.end_round(*self.params)
            w0[0] += float(np.sum(w0s - w0[0]))
            g_w0[0] += float(np.sum(g_w0s - g_w0[0]))
        return total

    def pairwise_epoch(self, up: np.ndarray, ud: np.ndarray, arrays: dict[str, np.ndarray],
                       pos_u: np.ndarray, pos_i: np.ndarray, pos_indptr: np.ndarray, pos_indices: np.ndarray,
                       order: np.ndarray, seeds: Any, loss_kind: int, max_sampled: int, optimizer: int,
                       lr: tuple[float, float], l2: tuple[float, float], n_items: int) -> float:
        """Every round of one BPR/WARP pass over ``order`` (``arrays`` from
        :func:`pairwise_arrays`); ``seeds(s)`` gives round s's (T,) seeds."""
        from fmrec.model import _kernels as K

        total = 0.0
        for s, (rows, bounds, blocks) in enumerate(self.rounds(order, pos_u, pos_i)):
            sd = seeds(s)
            self.begin_round(*self.params)
            w_e, V_e, g_w_e, g_V_e = self.params
            total += K.pairwise_round(
                up, arrays["ui"], ud, arrays["ip"], arrays["ii"], arrays["idata"], pos_u, pos_i, pos_indptr,
                pos_indices, rows, bounds, sd, loss_kind, max_sampled, optimizer, w_e, V_e, g_w_e, g_V_e,
                *lr, *l2, n_items, arrays["pools"], arrays["pool_off"], np.zeros_like(blocks),
            )
            self.end_round(*self.params)
        return total

    # ------------------------------------------------------------ rows
    def thread_of(self, user_idx: np.ndarray | None, n_rows: int) -> np.ndarray:
        """The thread that processes each row: its user block, or round-robin."""
        if self.structured:
            return self.user_block[np.asarray(user_idx, dtype=np.int64)]
        return np.arange(n_rows, dtype=np.int64) % self.T

    def rounds(self, order: np.ndarray, user_idx: np.ndarray | None = None,
               item_idx: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per round: (rows in processing order, (T, 2) bounds of each thread's slice,
        (T,) item block each thread draws negatives from).  ``order`` is the epoch's
        shuffled row order; ``user_idx``/``item_idx`` per row (structured only)."""
        order = np.asarray(order, dtype=np.int64)
        n_rows = len(order) if user_idx is None else len(user_idx)
        thread = self.thread_of(user_idx, n_rows)[order]
        col = None if not self.structured else self.item_block[np.asarray(item_idx, dtype=np.int64)][order]
        out = []
        for s in range(self.n_rounds):
            parts, bounds, blocks = [], np.zeros((self.T, 2), dtype=np.int64), np.zeros(self.T, dtype=np.int64)
            pos = 0
            for t in range(self.T):
                if self.structured:
                    b = (t + s) % self.T
                    sel = order[(thread == t) & (col == b)]
                    blocks[t] = b
                else:
                    mine = order[thread == t]
                    sel = mine[s * len(mine) // self.n_rounds:(s + 1) * len(mine) // self.n_rounds]
                parts.append(sel)
                bounds[t] = (pos, pos + len(sel))
                pos += len(sel)
            out.append((np.concatenate(parts), bounds, blocks))
        return out


def balanced_blocks(counts: np.ndarray, T: int) -> np.ndarray:
    """Block (0..T-1) of every entity: busiest first, each to the block with the fewest
    rows so far (ties to the lower block); deterministic."""
    counts = np.asarray(counts, dtype=np.int64)
    block = np.zeros(len(counts), dtype=np.int64)
    if T <= 1 or len(counts) == 0:
        return block
    order = np.argsort(-counts, kind="stable")
    load = np.zeros(T, dtype=np.int64)
    big = order[counts[order] > 0]
    for e in big[: 4 * T * 64]:  # the heavy head one by one
        b = int(np.argmin(load))
        block[e] = b
        load[b] += counts[e]
    rest = order[min(len(big), 4 * T * 64):]
    if len(rest):
        # the long tail fills each block up to an even share, in order (water filling)
        cap = np.maximum(counts.sum() / T - load, 0.0)
        blocks_by_room = np.argsort(-cap, kind="stable")
        edges = np.cumsum(cap[blocks_by_room])
        filled = np.cumsum(counts[rest]) - counts[rest]  # rows placed before each entity
        slot = np.minimum(np.searchsorted(edges, filled, side="right"), T - 1)
        block[rest] = blocks_by_room[slot]
    return block


def pairwise_arrays(strata: Strata, U: sp.csr_matrix, It: sp.csr_matrix) -> dict[str, np.ndarray]:
    """Kernel arrays for :func:`fmrec.model._kernels.pairwise_round`: user rows remapped
    for their owning thread; item rows remapped once per thread and stacked (row
    ``t * n_items + i``); the whole catalogue as the one negative pool."""
    T, n_items = strata.T, It.shape[0]
    ip = It.indptr.astype(np.int64)
    return {
        "ui": strata.remap(U, strata.user_block),
        "ip": np.concatenate([ip[:-1] + t * ip[-1] for t in range(T)] + [ip[-1:] * T]).astype(np.int64),
        "ii": np.concatenate([strata.remap(It, np.full(n_items, t)) for t in range(T)]),
        "idata": np.tile(It.data.astype(np.float32), T),
        "pools": np.arange(n_items, dtype=np.int64),  # negatives: any item (one pool, block 0)
        "pool_off": np.array([0, n_items], dtype=np.int64),
    }


def id_columns(encoder, sides: tuple[str, ...] = ("user", "item")) -> np.ndarray:
    """Bool mask of an encoder's user-ID and/or item-ID one-hot columns."""
    mask = np.zeros(encoder.n_features, dtype=bool)
    for name in sides:
        f = encoder._field(name)
        mask[f.offset:f.offset + f.size] = True
    return mask


__all__ = ["Strata", "UNSTRUCTURED_ROUNDS", "id_columns", "pairwise_arrays"]
