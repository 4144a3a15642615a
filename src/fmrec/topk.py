"""The result contract: :class:`TopK`.

THE ID CONTRACT (the one place it is documented)
-------------------------------------------------
Inside fmrec, users and items are contiguous internal indices ``0..n-1`` assigned
by :class:`fmrec.data.IdMap`.  Internal indices never leave the library: every
``TopK`` handed to a caller, every sink row and every CLI output carries the
caller's own external IDs.  When the item IDs are integers, ``item_ids`` is an
``int64`` array padded with ``-1``; when they are strings it is an object array
padded with ``None``.  ``scores`` is float32, best first, padded with ``-inf``.
``counts[r]`` is the number of real items in row ``r`` (``k`` whenever at least
``k`` candidates exist).  Scores are true FM scores (logits for ``binary``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)
class TopK:
    """Top-k lists for a batch of users, best first.

    Attributes
    ----------
    user_ids : (n_users,) external user IDs
    item_ids : (n_users, k) external item IDs (int64 padded with -1, or object padded with None)
    scores   : (n_users, k) float32 FM scores, descending per row, padded with -inf
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.item_ids.shape != self.scores.shape or self.item_ids.shape[0] != self.user_ids.shape[0]:
            raise ValueError(
                f"TopK shapes disagree: users {self.user_ids.shape}, items {self.item_ids.shape}, "
                f"scores {self.scores.shape}"
            )

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def k(self) -> int:
        return int(self.scores.shape[1])

    @property
    def counts(self) -> np.ndarray:
        """Number of real (non-padding) items per row."""
        return np.isfinite(self.scores).sum(axis=1) if self.scores.size else np.zeros(len(self), np.int64)

    def rows(self):  # type: ignore[no-untyped-def]
        """Iterate ``(user_id, item_ids, scores)`` per user, padding removed."""
        counts = self.counts
        for r in range(len(self)):
            c = int(counts[r])
            yield self.user_ids[r], self.item_ids[r, :c], self.scores[r, :c]

    @staticmethod
    def concat(parts: "list[TopK]") -> "TopK":
        """One ``TopK`` from several batches (same k)."""
        if not parts:
            raise ValueError("no TopK batches to concatenate")
        return TopK(
            np.concatenate([p.user_ids for p in parts]),
            np.concatenate([p.item_ids for p in parts]),
            np.concatenate([p.scores for p in parts]),
        )
