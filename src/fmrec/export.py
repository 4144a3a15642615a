"""Exact MIPS export of a fitted FM (DESIGN.md, "Exact MIPS export").

Split a (user, item) row into its user side ``x_u`` and item side ``x_i``.  With
``p = V^T x_u``, ``q = V^T x_i`` and ``P(x) = 1/2 (||V^T x||^2 - sum_j x_j^2 ||v_j||^2)``:

    y(u, i) = [w0 + w.x_u + P(x_u)] + <p, q> + [w.x_i + P(x_i)]

so ranking items for a user is exact maximum-inner-product search with user
vector ``[p_u, 1]`` and item vector ``[q_i, b_i]``, ``b_i = w.x_i + P(x_i)``;
adding the user constant ``c_u = w0 + w.x_u + P(x_u)`` gives the true FM score.
For one-hot IDs ``P`` is 0; it matters as soon as a side has several features,
and dropping it (the hosted pipeline's ``[V^T x_i, w^T x_i]``) is then inexact.

The functions take the side rows as CSR matrices, so feature tables only have
to produce ``x_u`` / ``x_i`` rows; the algebra here does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from fmrec.errors import ConfigError


@dataclass(eq=False)
class UserVectors:
    """``vectors[r] = [p_u, 1]`` (float32); ``constants[r] = w0 + w.x_u + P(x_u)`` (float64)."""

    ids: np.ndarray
    vectors: np.ndarray
    constants: np.ndarray
    index: np.ndarray  # internal user indices (-1 for users not in the model's map)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


@dataclass(eq=False)
class ItemVectors:
    """``vectors[r] = [q_i, b_i]`` (float32)."""

    ids: np.ndarray
    vectors: np.ndarray
    index: np.ndarray  # internal item indices

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


def side_terms(X: sp.csr_matrix, w: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For side rows ``X``: ``(V^T x, w.x, P(x))`` in float64."""
    X = sp.csr_matrix(X, dtype=np.float64)
    V64 = V.astype(np.float64)
    proj = np.asarray(X @ V64)
    lin = np.asarray(X @ w.astype(np.float64)).ravel()
    sq = X.multiply(X) @ np.einsum("jf,jf->j", V64, V64)
    pair = 0.5 * (np.einsum("rf,rf->r", proj, proj) - np.asarray(sq).ravel())
    return proj, lin, pair


def user_vectors_from_rows(X_u: sp.csr_matrix, model: Any, ids: np.ndarray, index: np.ndarray) -> UserVectors:
    proj, lin, pair = side_terms(X_u, model.w_, model.V_)
    vec = np.empty((proj.shape[0], proj.shape[1] + 1), dtype=np.float32)
    vec[:, :-1] = proj
    vec[:, -1] = 1.0
    return UserVectors(ids, vec, float(model.w0_) + lin + pair, index)


def item_vectors_from_rows(X_i: sp.csr_matrix, model: Any, ids: np.ndarray, index: np.ndarray) -> ItemVectors:
    proj, lin, pair = side_terms(X_i, model.w_, model.V_)
    vec = np.empty((proj.shape[0], proj.shape[1] + 1), dtype=np.float32)
    vec[:, :-1] = proj
    vec[:, -1] = lin + pair
    return ItemVectors(ids, vec, index)


def export_vectors(model: Any, users: Any = None, items: Any = None, *,
                   encoder: Any = None) -> tuple[UserVectors, ItemVectors]:
    """Exact MIPS vectors for ``users`` and ``items`` (external IDs; default: all known).

    Users or items the model never saw in training get the terms their features
    carry (cold start); with no features either, only what ``w0`` and the other
    side contribute (the documented cold rule).  ``encoder`` replaces the model's
    (e.g. one with extra feature rows for cold users, from
    :meth:`~fmrec.data.encode.Encoder.with_features`).
    """
    model._check_fitted()
    enc = encoder if encoder is not None else getattr(model, "encoder_", None)
    if enc is None:
        raise ConfigError("export needs a model fit on interactions (it carries the user/item ID maps)")
    u_ids = enc.user_map.ids if users is None else np.asarray(users)
    i_ids = enc.item_map.ids if items is None else np.asarray(items)
    uv = user_vectors_from_rows(enc.user_rows_for(u_ids), model, u_ids, enc.user_map.to_index(u_ids))
    iv = item_vectors_from_rows(enc.item_rows_for(i_ids), model, i_ids, enc.item_map.to_index(i_ids))
    return uv, iv
