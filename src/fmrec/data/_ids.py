"""External ID <-> internal index maps.

fmrec's contract (see :mod:`fmrec.topk`): internal indices are contiguous
``0..n-1`` and never leave the library; everything at the boundary (files,
DataFrames, ``TopK``) carries the caller's own IDs.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd

from fmrec.errors import DataError


def _normalise_ids(values: Any) -> np.ndarray:
    """Return IDs as an int64 array when every value is integral, else a str array."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "b":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if arr.size and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr))):
            return np.array([repr(float(v)) for v in arr.tolist()], dtype=str)
        return arr.astype(np.int64)
    # object / str: integers stay integers when *all* values are ints
    if arr.dtype.kind == "O" and arr.size and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in arr.tolist()
    ):
        return arr.astype(np.int64)
    return arr.astype(str)


class IdMap:
    """A bijection between external IDs and indices ``0..len-1``.

    External IDs are stored as an ``int64`` array when all of them are integers,
    otherwise as a ``str`` array.  Order is the order of first appearance.
    """

    __slots__ = ("ids", "_lookup")

    def __init__(self, ids: Any) -> None:
        ids = _normalise_ids(ids)
        if ids.ndim != 1:
            raise DataError("IDs must be one-dimensional")
        self.ids = ids
        self._lookup: pd.Index | None = None

    @classmethod
    def from_values(cls, values: Any) -> "IdMap":
        """Build a map from a column of IDs (duplicates allowed), first-appearance order."""
        uniques = pd.unique(pd.Series(_normalise_ids(values)))
        return cls(np.asarray(uniques))

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __repr__(self) -> str:
        return f"IdMap(n={len(self)}, dtype={self.ids.dtype})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self.ids.dtype.kind == other.ids.dtype.kind and np.array_equal(
            self.ids, other.ids
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def is_integer(self) -> bool:
        return self.ids.dtype.kind == "i"

    def _index(self) -> pd.Index:
        if self._lookup is None:
            self._lookup = pd.Index(self.ids)
        return self._lookup

    def to_index(self, values: Any) -> np.ndarray:
        """Internal indices for external IDs; ``-1`` where an ID is unknown."""
        vals = _normalise_ids(values)
        if self.is_integer and vals.dtype.kind != "i":
            # string IDs against an integer map: compare as text
            lookup = pd.Index(self.ids.astype(str))
            return lookup.get_indexer(vals).astype(np.int64)
        if not self.is_integer and vals.dtype.kind == "i":
            vals = vals.astype(str)
        return self._index().get_indexer(vals).astype(np.int64)

    def to_external(self, index: Any) -> np.ndarray:
        """External IDs for internal indices (which must be valid)."""
        return self.ids[np.asarray(index, dtype=np.int64)]

    def extend(self, values: Iterable[Any]) -> "IdMap":
        """A new map with unseen ``values`` appended (existing indices unchanged)."""
        vals = _normalise_ids(np.asarray(list(values) if not isinstance(values, np.ndarray) else values))
        idx = self.to_index(vals)
        new = pd.unique(pd.Series(vals[idx < 0]))
        if len(new) == 0:
            return self
        if self.is_integer and np.asarray(new).dtype.kind == "i":
            return IdMap(np.concatenate([self.ids, np.asarray(new, dtype=np.int64)]))
        return IdMap(np.concatenate([self.ids.astype(str), np.asarray(new).astype(str)]))

    # persistence: plain arrays, no pickle
    def to_array(self) -> np.ndarray:
        return self.ids

    @classmethod
    def from_array(cls, arr: np.ndarray) -> "IdMap":
        return cls(arr)
