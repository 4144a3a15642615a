"""Encode (user, item) pairs as sparse FM design-matrix rows with a field layout.

Columns are laid out in fields.  Today there are two: the user one-hot block
``[0, n_users)`` and the item one-hot block ``[n_users, n_users + n_items)``.
Each field belongs to a *side* (``user`` or ``item``); the exact MIPS export
(:mod:`fmrec.export`) needs nothing more than "which columns a user row sets"
and "which columns an item row sets", which :meth:`Encoder.user_rows` and
:meth:`Encoder.item_rows` give.  Side-feature fields are appended by the same
mechanism (one more :class:`Field` per feature table column).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from fmrec.data._ids import IdMap
from fmrec.data.interactions import Interactions
from fmrec.errors import ArtifactError


@dataclass(frozen=True)
class Field:
    """A contiguous block of design-matrix columns."""

    name: str
    side: str  # "user" | "item"
    offset: int
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "side": self.side, "offset": self.offset, "size": self.size}


class Encoder:
    """Maps internal user/item indices to design-matrix rows.

    Unknown users or items (index ``-1``) get an empty side: the model then scores
    them with the global bias and the other side's terms only (documented rule
    for IDs never seen in training).
    """

    def __init__(self, user_map: IdMap, item_map: IdMap) -> None:
        self.user_map = user_map
        self.item_map = item_map
        nu, ni = len(user_map), len(item_map)
        self.fields = (Field("user", "user", 0, nu), Field("item", "item", nu, ni))

    @property
    def n_features(self) -> int:
        return sum(f.size for f in self.fields)

    @property
    def n_users(self) -> int:
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    def _side_rows(self, idx: np.ndarray, offset: int) -> sp.csr_matrix:
        idx = np.asarray(idx, dtype=np.int64)
        known = idx >= 0
        indptr = np.zeros(len(idx) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(known)
        indices = (idx[known] + offset).astype(np.int32)
        data = np.ones(len(indices), dtype=np.float32)
        return sp.csr_matrix((data, indices, indptr), shape=(len(idx), self.n_features))

    def user_rows(self, user_idx: np.ndarray) -> sp.csr_matrix:
        """User-side rows ``x_u`` (n x n_features) for internal user indices."""
        return self._side_rows(user_idx, self.fields[0].offset)

    def item_rows(self, item_idx: np.ndarray) -> sp.csr_matrix:
        """Item-side rows ``x_i`` (n x n_features) for internal item indices."""
        return self._side_rows(item_idx, self.fields[1].offset)

    def transform_indices(self, user_idx: np.ndarray, item_idx: np.ndarray) -> sp.csr_matrix:
        """Full rows ``x = x_u + x_i`` for pairs of internal indices (-1 = unknown)."""
        u = np.asarray(user_idx, dtype=np.int64)
        i = np.asarray(item_idx, dtype=np.int64)
        if u.shape != i.shape:
            raise ValueError("user and item index arrays differ in length")
        ku, ki = u >= 0, i >= 0
        counts = ku.astype(np.int64) + ki
        indptr = np.zeros(len(u) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        indices = np.empty(int(indptr[-1]), dtype=np.int32)
        start = indptr[:-1]
        indices[start[ku]] = u[ku]
        indices[(start + ku)[ki]] = i[ki] + self.fields[1].offset
        data = np.ones(len(indices), dtype=np.float32)
        return sp.csr_matrix((data, indices, indptr), shape=(len(u), self.n_features))

    def transform(self, interactions: Interactions) -> sp.csr_matrix:
        """Design matrix for interactions, re-mapped onto this encoder's IDs."""
        users = interactions.user_map.to_external(interactions.user_idx)
        items = interactions.item_map.to_external(interactions.item_idx)
        return self.transform_indices(self.user_map.to_index(users), self.item_map.to_index(items))

    # persistence ----------------------------------------------------------
    def layout(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.fields]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"user_ids": self.user_map.to_array(), "item_ids": self.item_map.to_array()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], layout: list[dict[str, Any]]) -> "Encoder":
        enc = cls(IdMap.from_array(arrays["user_ids"]), IdMap.from_array(arrays["item_ids"]))
        if enc.layout() != layout:
            raise ArtifactError(f"field layout in manifest {layout} does not match the saved ID maps {enc.layout()}")
        return enc
