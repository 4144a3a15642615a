"""Encode (user, item) pairs as sparse FM design-matrix rows with a field layout.

Columns are laid out in fields, each belonging to a *side*::

    [ user id one-hot | user feature fields ... | user/implicit |
      item id one-hot | item feature fields ... | item/implicit ]

followed, optionally, by a context field ``context/day``: the calendar day (UTC)
of the interaction's timestamp, one-hot over the days seen in training (libFM's
and myFM's "date" feature).  Context belongs to an interaction, not to a user or
an item: ``transform`` of interactions with timestamps sets it, a day unseen in
training sets no column, and pairs without a time (``transform_ids``, the exact
export, ``recommend``) are scored with no context.

``user/implicit`` and ``item/implicit`` are optional implicit-feedback fields
built from the training interactions (SVD++'s idea, as in libFM/myFM): a user's
row holds the items it interacted with in training, an item's row the users who
interacted with it, each weighted ``1/sqrt(count)``.  Entities unknown to
training set no implicit column.

A user row ``x_u`` sets the user's ID column (when the user was seen in training)
and its feature columns (when the user has features); an item row ``x_i``
likewise.  ``x = x_u + x_i``.  The exact MIPS export (:mod:`fmrec.export`) only
needs :meth:`Encoder.user_rows_for` / :meth:`Encoder.item_rows_for`, so cold
users and items (features, no interactions) get exact vectors too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from fmrec.data._ids import IdMap
from fmrec.data.features import FeatureEncoder, FeatureTable, SideFeatures
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
    """Maps users and items to design-matrix rows.

    IDs unknown to the training maps (index ``-1``) set no ID column; IDs without
    features set no feature column.  A pair with both sides empty is scored with
    ``w0`` alone (the documented cold rule).
    """

    def __init__(self, user_map: IdMap, item_map: IdMap, user_features: SideFeatures | None = None,
                 item_features: SideFeatures | None = None, user_implicit: sp.csr_matrix | None = None,
                 item_implicit: sp.csr_matrix | None = None, context_days: np.ndarray | None = None) -> None:
        self.user_map = user_map
        self.item_map = item_map
        self.user_features = user_features
        self.item_features = item_features
        if user_implicit is not None and user_implicit.shape != (len(user_map), len(item_map)):
            raise ArtifactError(f"user implicit matrix has shape {user_implicit.shape}, expected "
                                f"{(len(user_map), len(item_map))}")
        if item_implicit is not None and item_implicit.shape != (len(item_map), len(user_map)):
            raise ArtifactError(f"item implicit matrix has shape {item_implicit.shape}, expected "
                                f"{(len(item_map), len(user_map))}")
        self.user_implicit = user_implicit
        self.item_implicit = item_implicit
        fields: list[Field] = []
        offset = 0
        for side, ids, feats, imp in (("user", user_map, user_features, user_implicit),
                                      ("item", item_map, item_features, item_implicit)):
            fields.append(Field(side, side, offset, len(ids)))
            offset += len(ids)
            if feats is not None:
                for name, size in feats.encoder.fields:
                    fields.append(Field(f"{side}:{name}", side, offset, size))
                    offset += size
            if imp is not None:
                fields.append(Field(f"{side}/implicit", side, offset, imp.shape[1]))
                offset += imp.shape[1]
        if context_days is not None:
            context_days = np.unique(np.asarray(context_days, dtype=np.int64))
            fields.append(Field("context/day", "context", offset, len(context_days)))
            offset += len(context_days)
        self.context_days = context_days
        self.fields = tuple(fields)
        self._n_features = offset

    SECONDS_PER_DAY = 86400

    @classmethod
    def days_of(cls, timestamps: np.ndarray) -> np.ndarray:
        """UTC calendar day numbers of Unix-second timestamps."""
        return np.floor_divide(np.asarray(timestamps, dtype=np.int64), cls.SECONDS_PER_DAY)

    def context_index(self, timestamps: np.ndarray | None, n_rows: int) -> np.ndarray:
        """Column index within ``context/day`` of every row's day (-1: no time, or a day
        unseen in training)."""
        out = np.full(n_rows, -1, dtype=np.int64)
        if self.context_days is None or timestamps is None or len(self.context_days) == 0:
            return out
        d = self.days_of(timestamps)
        pos = np.minimum(np.searchsorted(self.context_days, d), len(self.context_days) - 1)
        hit = self.context_days[pos] == d
        out[hit] = pos[hit]
        return out

    def context_block(self, timestamps: np.ndarray | None, n_rows: int) -> tuple[sp.csr_matrix, np.ndarray]:
        """(block, row map) of the context field for a relational design: one row per
        training day plus a last all-zero row for rows without a known day."""
        n_days = len(self.context_days)
        idx = self.context_index(timestamps, n_rows)
        idx[idx < 0] = n_days
        B = sp.csr_matrix((np.ones(n_days, np.float32), np.arange(n_days, dtype=np.int32),
                           np.r_[np.arange(n_days + 1), n_days].astype(np.int64)), shape=(n_days + 1, n_days))
        return B, idx

    def _context_rows(self, timestamps: np.ndarray | None, n_rows: int) -> sp.csr_matrix | None:
        if self.context_days is None:
            return None
        idx = self.context_index(timestamps, n_rows)
        ok = idx >= 0
        off = self._field("context/day").offset
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(ok, out=indptr[1:])
        return sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (idx[ok] + off).astype(np.int32), indptr),
                             shape=(n_rows, self.n_features))

    @staticmethod
    def implicit_matrices(interactions: Interactions, which: str | None) -> tuple[Any, Any]:
        """(user_implicit, item_implicit) for ``which`` in None/"none", "user", "item", "both":
        the training interaction pattern, rows scaled to ``1/sqrt(count)``."""
        from fmrec.errors import ConfigError

        if which in (None, "none"):
            return None, None
        if which not in ("user", "item", "both"):
            raise ConfigError(f"implicit must be one of none, user, item, both; got {which!r}")
        n_u, n_i = len(interactions.user_map), len(interactions.item_map)
        P = sp.csr_matrix((np.ones(len(interactions.user_idx), np.float64),
                           (interactions.user_idx, interactions.item_idx)), shape=(n_u, n_i))
        P.data[:] = 1.0  # repeated pairs count once

        def scaled(M: sp.csr_matrix) -> sp.csr_matrix:
            n = np.diff(M.indptr)
            out = sp.csr_matrix(sp.diags(1.0 / np.sqrt(np.maximum(n, 1))) @ M, dtype=np.float32)
            out.sort_indices()
            return out

        ui = scaled(P) if which in ("user", "both") else None
        ii = scaled(sp.csr_matrix(P.T)) if which in ("item", "both") else None
        return ui, ii

    def with_implicit(self, user_implicit: Any, item_implicit: Any) -> "Encoder":
        return Encoder(self.user_map, self.item_map, self.user_features, self.item_features,
                       user_implicit, item_implicit, self.context_days)

    # ------------------------------------------------------------ structure
    @property
    def n_features(self) -> int:
        return self._n_features

    @property
    def n_users(self) -> int:
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    def _field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    def groups(self) -> np.ndarray:
        """Field index of every column (for grouped priors / regularisation)."""
        g = np.empty(self.n_features, dtype=np.int64)
        for n, f in enumerate(self.fields):
            g[f.offset:f.offset + f.size] = n
        return g

    def with_features(self, user_table: FeatureTable | None = None,
                      item_table: FeatureTable | None = None) -> "Encoder":
        """The same layout with more (or updated) feature rows, e.g. cold users from a
        new file; encoded with the fitted feature encoders (unknown categories set no column)."""
        uf, itf = self.user_features, self.item_features
        if user_table is not None:
            if uf is None:
                raise ArtifactError("this model was trained without user features; --user-features cannot be used")
            uf = uf.updated(user_table)
        if item_table is not None:
            if itf is None:
                raise ArtifactError("this model was trained without item features; --item-features cannot be used")
            itf = itf.updated(item_table)
        return Encoder(self.user_map, self.item_map, uf, itf, self.user_implicit, self.item_implicit,
                       self.context_days)

    def side_block(self, side: str) -> tuple[sp.csr_matrix, int]:
        """(rows of every training user/item restricted to that side's columns, column offset):
        the shared block of a relational design (:class:`fmrec.model._blocks.BlockDesign`)."""
        n = self.n_users if side == "user" else self.n_items
        rows = self._side(np.arange(n, dtype=np.int64), None, side)
        cols = [f for f in self.fields if f.side == side]
        lo, hi = cols[0].offset, cols[-1].offset + cols[-1].size
        return sp.csr_matrix(rows[:, lo:hi]), lo

    def block_design(self, interactions: Interactions) -> Any:
        """The rows of ``transform(interactions)`` as a
        :class:`~fmrec.model._blocks.BlockDesign`: one user-side row per distinct user,
        one item-side row per distinct item (cold ones by their features), the day
        context as a third block.  Same matrix, far fewer non-zeros when rows share
        large user or item rows (implicit fields)."""
        from fmrec.model._blocks import BlockDesign

        n = len(interactions.user_idx)
        parts = []
        for side, own_map, idx in (("user", self.user_map, interactions.user_idx),
                                   ("item", self.item_map, interactions.item_idx)):
            their_map = interactions.user_map if side == "user" else interactions.item_map
            if their_map is own_map:
                parts.append((self.side_block(side)[0], idx))
                continue
            ids = their_map.to_external(idx)  # distinct IDs encoded once, as transform_ids does
            uniq, inv = np.unique(ids.astype(str) if ids.dtype.kind == "O" else ids, return_inverse=True)
            rows = self._side(own_map.to_index(uniq), uniq, side)
            cols = [f for f in self.fields if f.side == side]
            parts.append((sp.csr_matrix(rows[:, cols[0].offset:cols[-1].offset + cols[-1].size]), inv))
        if self.context_days is not None:
            parts.append(self.context_block(interactions.timestamp, n))
        return BlockDesign(parts)

    # ------------------------------------------------------------ rows
    def _side(self, idx: np.ndarray, ext: Any, side: str) -> sp.csr_matrix:
        idx = np.asarray(idx, dtype=np.int64)
        id_field = self._field(side)
        known = idx >= 0
        indptr = np.zeros(len(idx) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(known)
        indices = (idx[known] + id_field.offset).astype(np.int32)
        m = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(len(idx), self.n_features))
        feats = self.user_features if side == "user" else self.item_features
        if feats is not None:
            if ext is None:  # internal indices: only known entities have an external ID
                id_map = self.user_map if side == "user" else self.item_map
                f = feats.rows_for(id_map.to_external(idx[known]))
                rows = np.flatnonzero(known)
                coo = f.tocoo()
                f = sp.csr_matrix((coo.data, (rows[coo.row], coo.col)), shape=(len(idx), f.shape[1]))
            else:  # external IDs: cold entities keep their features
                f = feats.rows_for(ext)
            start = id_field.offset + id_field.size
            f = sp.csr_matrix((f.data, f.indices + start, f.indptr), shape=(len(idx), self.n_features))
            m = m + f
            m.sort_indices()
        imp = self.user_implicit if side == "user" else self.item_implicit
        if imp is not None:
            field = self._field(f"{side}/implicit")
            rows = np.flatnonzero(known)
            g = imp[idx[known]].tocoo()
            g = sp.csr_matrix((g.data, (rows[g.row], g.col + field.offset)), shape=(len(idx), self.n_features))
            m = m + g
            m.sort_indices()
        return sp.csr_matrix(m)

    def user_rows(self, user_idx: np.ndarray) -> sp.csr_matrix:
        """User-side rows ``x_u`` for internal user indices (training users)."""
        return self._side(user_idx, None, "user")

    def item_rows(self, item_idx: np.ndarray) -> sp.csr_matrix:
        """Item-side rows ``x_i`` for internal item indices (training items)."""
        return self._side(item_idx, None, "item")

    def user_rows_for(self, user_ids: Any) -> sp.csr_matrix:
        """User-side rows for external IDs, cold users (features only) included."""
        ids = np.asarray(user_ids)
        return self._side(self.user_map.to_index(ids), ids, "user")

    def item_rows_for(self, item_ids: Any) -> sp.csr_matrix:
        """Item-side rows for external IDs, cold items (features only) included."""
        ids = np.asarray(item_ids)
        return self._side(self.item_map.to_index(ids), ids, "item")

    def transform_indices(self, user_idx: np.ndarray, item_idx: np.ndarray) -> sp.csr_matrix:
        """Full rows ``x = x_u + x_i`` for pairs of internal indices (-1 = unknown)."""
        u = np.asarray(user_idx, dtype=np.int64)
        i = np.asarray(item_idx, dtype=np.int64)
        if u.shape != i.shape:
            raise ValueError("user and item index arrays differ in length")
        if not self._has_extra():
            return self._id_pairs(u, i)
        return sp.csr_matrix(self.user_rows(u) + self.item_rows(i))

    def transform_ids(self, user_ids: Any, item_ids: Any) -> sp.csr_matrix:
        """Full rows for external ID pairs; cold users/items use their features."""
        u_ids, i_ids = np.asarray(user_ids), np.asarray(item_ids)
        if not self._has_extra():
            return self._id_pairs(self.user_map.to_index(u_ids), self.item_map.to_index(i_ids))
        # encode each distinct entity once, then gather rows
        uu, u_inv = np.unique(u_ids.astype(str) if u_ids.dtype.kind == "O" else u_ids, return_inverse=True)
        ii, i_inv = np.unique(i_ids.astype(str) if i_ids.dtype.kind == "O" else i_ids, return_inverse=True)
        U = self.user_rows_for(uu)[u_inv]
        It = self.item_rows_for(ii)[i_inv]
        m = sp.csr_matrix(U + It)
        m.sort_indices()
        return m

    def _has_extra(self) -> bool:
        return any(x is not None for x in (self.user_features, self.item_features, self.user_implicit,
                                           self.item_implicit))

    def _id_pairs(self, u: np.ndarray, i: np.ndarray) -> sp.csr_matrix:
        ku, ki = u >= 0, i >= 0
        counts = ku.astype(np.int64) + ki
        indptr = np.zeros(len(u) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        indices = np.empty(int(indptr[-1]), dtype=np.int32)
        start = indptr[:-1]
        indices[start[ku]] = u[ku] + self._field("user").offset
        indices[(start + ku)[ki]] = i[ki] + self._field("item").offset
        data = np.ones(len(indices), dtype=np.float32)
        return sp.csr_matrix((data, indices, indptr), shape=(len(u), self.n_features))

    def transform(self, interactions: Interactions) -> sp.csr_matrix:
        """Design matrix for interactions (by external IDs, so any maps work)."""
        users = interactions.user_map.to_external(interactions.user_idx)
        items = interactions.item_map.to_external(interactions.item_idx)
        M = self.transform_ids(users, items)
        ctx = self._context_rows(interactions.timestamp, M.shape[0])
        if ctx is not None:
            M = sp.csr_matrix(M + ctx)
            M.sort_indices()
        return M

    # ------------------------------------------------------------ persistence
    def layout(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.fields]

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"user_ids": self.user_map.to_array(), "item_ids": self.item_map.to_array()}
        for side, feats in (("user", self.user_features), ("item", self.item_features)):
            if feats is None:
                continue
            m = feats.matrix
            out[f"{side}_feat_ids"] = feats.ids.to_array()
            out[f"{side}_feat_indptr"] = m.indptr.astype(np.int64)
            out[f"{side}_feat_indices"] = m.indices.astype(np.int32)
            out[f"{side}_feat_data"] = m.data.astype(np.float32)
            out[f"{side}_feat_encoder"] = np.array(feats.encoder.state())
        for side, imp in (("user", self.user_implicit), ("item", self.item_implicit)):
            if imp is not None:
                out[f"{side}_implicit_indptr"] = imp.indptr.astype(np.int64)
                out[f"{side}_implicit_indices"] = imp.indices.astype(np.int32)
                out[f"{side}_implicit_data"] = imp.data.astype(np.float32)
        if self.context_days is not None:
            out["context_days"] = self.context_days.astype(np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], layout: list[dict[str, Any]]) -> "Encoder":
        sides: dict[str, SideFeatures | None] = {"user": None, "item": None}
        for side in sides:
            if f"{side}_feat_encoder" in arrays:
                fe = FeatureEncoder.from_state(str(arrays[f"{side}_feat_encoder"]))
                ids = IdMap.from_array(arrays[f"{side}_feat_ids"])
                m = sp.csr_matrix((arrays[f"{side}_feat_data"], arrays[f"{side}_feat_indices"],
                                   arrays[f"{side}_feat_indptr"]), shape=(len(ids), fe.n_columns))
                sides[side] = SideFeatures(fe, ids, m)
        user_map, item_map = IdMap.from_array(arrays["user_ids"]), IdMap.from_array(arrays["item_ids"])
        imps: dict[str, sp.csr_matrix | None] = {"user": None, "item": None}
        for side, shape in (("user", (len(user_map), len(item_map))), ("item", (len(item_map), len(user_map)))):
            if f"{side}_implicit_indptr" in arrays:
                try:
                    imps[side] = sp.csr_matrix((arrays[f"{side}_implicit_data"], arrays[f"{side}_implicit_indices"],
                                                arrays[f"{side}_implicit_indptr"]), shape=shape)
                except ValueError as exc:
                    raise ArtifactError(f"saved {side} implicit matrix is corrupt: {exc}") from None
        enc = cls(user_map, item_map, sides["user"], sides["item"], imps["user"], imps["item"],
                  arrays.get("context_days"))
        if enc.layout() != layout:
            raise ArtifactError(f"field layout in manifest {json.dumps(layout)[:200]} does not match the saved "
                                "ID maps and features")
        return enc
