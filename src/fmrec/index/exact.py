"""``ExactIndex``: blocked GEMM (BLAS) + compiled running top-k, exact by construction."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import scipy.sparse as sp

from fmrec.errors import ConfigError

_EMPTY_PTR = np.zeros(0, dtype=np.int64)
_EMPTY_IDX = np.zeros(0, dtype=np.int32)


def check_k(k: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    return int(k)


def as_exclusion(exclude: sp.spmatrix | None, n_rows: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated CSR arrays (indptr int64, sorted indices int32) of an exclusion matrix."""
    if exclude is None:
        return _EMPTY_PTR, _EMPTY_IDX
    m = sp.csr_matrix(exclude)
    if m.shape != (n_rows, n_items):
        raise ConfigError(f"exclusion matrix has shape {m.shape}; expected {(n_rows, n_items)}")
    if not m.has_sorted_indices:
        m = m.copy()
        m.sort_indices()
    return np.ascontiguousarray(m.indptr, dtype=np.int64), np.ascontiguousarray(m.indices, dtype=np.int32)


def as_vectors(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} hold non-finite values")
    return arr


class ExactIndex:
    """Exact maximum-inner-product top-k over item vectors.

    Users are processed in blocks: one BLAS GEMM per (user block, item block)
    into a scratch buffer of at most ``max_block_bytes``, then a compiled
    kernel masks each user's excluded items inside the block and merges the
    block into a running per-user heap.  Memory is bounded by the block sizes
    and the output batch, whatever the number of users.

    Ties are broken by smaller item position, so results are deterministic.
    """

    kind = "exact"

    def __init__(self, block_users: int | None = None, block_items: int | None = None,
                 max_block_bytes: int = 64 << 20) -> None:
        self.block_users = block_users
        self.block_items = block_items
        self.max_block_bytes = max_block_bytes
        self.items_: np.ndarray | None = None

    def build(self, item_vectors: np.ndarray) -> "ExactIndex":
        self.items_ = as_vectors(item_vectors, "item vectors")
        return self

    @property
    def n_items(self) -> int:
        return 0 if self.items_ is None else int(self.items_.shape[0])

    @property
    def dim(self) -> int:
        return 0 if self.items_ is None else int(self.items_.shape[1])

    def _blocks(self) -> tuple[int, int]:
        n_items = max(1, self.n_items)
        bi = self.block_items or min(n_items, 32768)
        bu = self.block_users or max(16, min(8192, self.max_block_bytes // (4 * bi)))
        return int(bu), int(bi)

    def search(self, user_vectors: np.ndarray, k: int,
               exclude: sp.spmatrix | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item positions and scores for every user row, best first.

        ``exclude``: optional (n_users x n_items) sparse matrix; its nonzero
        pattern lists items never to return for that user.  Returns
        ``(ids int64 (n, k), scores float32 (n, k))`` padded with -1 / -inf.
        """
        parts = list(self.search_batches(user_vectors, k, exclude))
        if not parts:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])

    def search_batches(self, user_vectors: np.ndarray, k: int, exclude: sp.spmatrix | None = None,
                       batch_size: int | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield ``(row_start, ids, scores)`` for consecutive user blocks."""
        from fmrec.index import _kernels as K

        if self.items_ is None:
            raise ConfigError("index is empty: call build(item_vectors) first")
        k = check_k(k)
        U = as_vectors(user_vectors, "user vectors")
        if U.shape[1] != self.dim:
            raise ConfigError(f"user vectors have {U.shape[1]} dimensions; the index has {self.dim}")
        n_users = U.shape[0]
        indptr, indices = as_exclusion(exclude, n_users, self.n_items)
        bu, bi = self._blocks()
        if batch_size is not None:
            bu = max(1, min(bu, int(batch_size)))
        items = self.items_
        n_items = self.n_items
        scratch = np.empty((bu, min(bi, max(n_items, 1))), dtype=np.float32)
        for start in range(0, n_users, bu):
            stop = min(n_users, start + bu)
            rows = stop - start
            heap_s = np.full((rows, k), -np.inf, dtype=np.float32)
            heap_i = np.full((rows, k), -1, dtype=np.int64)
            for j0 in range(0, n_items, bi):
                j1 = min(n_items, j0 + bi)
                S = scratch[:rows, : j1 - j0]
                np.matmul(U[start:stop], items[j0:j1].T, out=S)
                K.topk_update(S, j0, start, indptr, indices, heap_s, heap_i)
            K.heaps_to_sorted(heap_s, heap_i)
            yield start, heap_i, heap_s
