"""``FaissIndex``: faiss indexes behind the same interface as :class:`ExactIndex`."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import scipy.sparse as sp

from fmrec.errors import ConfigError
from fmrec.index.exact import as_exclusion, as_vectors, check_k


class FaissIndex:
    """A faiss index over item vectors with inner-product search.

    ``spec`` is a faiss factory string; today ``"Flat"`` (exact, ``IndexFlatIP``).
    Seen items are handled by over-fetching ``k + max excluded in the batch``
    and filtering, which is exact for ``Flat``.
    """

    kind = "faiss"

    def __init__(self, spec: str = "Flat", batch_size: int = 4096) -> None:
        self.spec = spec
        self.batch_size = batch_size
        self.index_ = None
        self.n_items = 0

    def build(self, item_vectors: np.ndarray) -> "FaissIndex":
        import faiss

        if self.spec != "Flat":
            raise ConfigError(f"faiss index spec {self.spec!r} is not supported yet; use 'Flat'")
        items = as_vectors(item_vectors, "item vectors")
        index = faiss.IndexFlatIP(items.shape[1])
        index.add(items)
        self.index_ = index
        self.n_items = int(items.shape[0])
        self.dim = int(items.shape[1])
        return self

    def search(self, user_vectors: np.ndarray, k: int,
               exclude: sp.spmatrix | None = None) -> tuple[np.ndarray, np.ndarray]:
        parts = list(self.search_batches(user_vectors, k, exclude))
        if not parts:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])

    def search_batches(self, user_vectors: np.ndarray, k: int, exclude: sp.spmatrix | None = None,
                       batch_size: int | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        from fmrec.index import _kernels as K

        if self.index_ is None:
            raise ConfigError("index is empty: call build(item_vectors) first")
        k = check_k(k)
        U = as_vectors(user_vectors, "user vectors")
        if U.shape[1] != self.dim:
            raise ConfigError(f"user vectors have {U.shape[1]} dimensions; the index has {self.dim}")
        n_users = U.shape[0]
        indptr, indices = as_exclusion(exclude, n_users, self.n_items)
        counts = np.diff(indptr) if indptr.size else np.zeros(n_users, dtype=np.int64)
        bs = int(batch_size or self.batch_size)
        for start in range(0, n_users, bs):
            stop = min(n_users, start + bs)
            extra = int(counts[start:stop].max()) if stop > start and counts.size else 0
            fetch = min(self.n_items, k + extra)
            if fetch == 0:
                yield start, np.full((stop - start, k), -1, np.int64), np.full((stop - start, k), -np.inf, np.float32)
                continue
            D, I = self.index_.search(U[start:stop], fetch)  # faiss returns (distances, ids): convert here
            out_i = np.empty((stop - start, k), dtype=np.int64)
            out_s = np.empty((stop - start, k), dtype=np.float32)
            K.filter_candidates(I.astype(np.int64), D.astype(np.float32), indptr, indices, start, k, out_i, out_s)
            yield start, out_i, out_s
