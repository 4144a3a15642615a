"""Top-k for every user: export -> index -> stream of :class:`~fmrec.topk.TopK` batches."""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp

from fmrec.data._ids import IdMap
from fmrec.errors import ConfigError
from fmrec.export import export_vectors
from fmrec.index import make_index
from fmrec.index.exact import check_k
from fmrec.topk import TopK

log = logging.getLogger("fmrec.recommend")


def _pairs_matrix(pairs: Any, user_map: Any, item_map: Any) -> sp.csr_matrix:
    """users x items pattern from a DataFrame(user_id, item_id) or dict {user: [items]}."""
    if isinstance(pairs, dict):
        users = [u for u, its in pairs.items() for _ in its]
        items = [i for its in pairs.values() for i in its]
    elif isinstance(pairs, pd.DataFrame):
        users, items = pairs["user_id"].to_numpy(), pairs["item_id"].to_numpy()
    else:
        raise ConfigError("per-user exclusions must be a dict {user_id: [item_id, ...]} or a DataFrame")
    u = user_map.to_index(np.asarray(users)) if len(users) else np.zeros(0, np.int64)
    i = item_map.to_index(np.asarray(items)) if len(items) else np.zeros(0, np.int64)
    keep = (u >= 0) & (i >= 0)
    m = sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (u[keep], i[keep])), shape=(len(user_map), len(item_map))
    )
    m.sum_duplicates()
    return m


def recommend_all(
    model: Any,
    k: int = 100,
    *,
    users: Any = None,
    seen: sp.spmatrix | None = None,
    exclude_seen: bool = True,
    exclude_items: Any = None,
    exclude_per_user: Any = None,
    include_untrained_items: bool = False,
    index: Any = "exact",
    batch_size: int = 8192,
    user_features: Any = None,
    item_features: Any = None,
) -> Iterator[TopK]:
    """Stream the top-``k`` items of every user, best first, as ``TopK`` batches.

    Parameters
    ----------
    model : a fitted :class:`~fmrec.model.FactorizationMachine` (with ID maps).
    users : external user IDs to serve (default: every user the model knows).
    seen : users x items training pattern (internal indices); default: the one
        saved with the model (``model.seen_``) if any.
    exclude_seen : drop items the user interacted with in training (default on).
    exclude_items : external item IDs never to recommend.
    exclude_per_user : ``{user_id: [item_id, ...]}`` or a DataFrame ``user_id, item_id``.
    include_untrained_items : also rank items that never occurred in training
        (default off: their vectors carry no learned signal).
    index : ``"exact"`` (:class:`~fmrec.index.ExactIndex`), ``"flat"``
        (faiss ``IndexFlatIP``) or an index instance.
    user_features, item_features : feature tables (or paths) with rows for users
        / items beyond the model's own: cold users in ``user_features`` are served
        (added to the default user list), cold items in ``item_features`` become
        candidates.  Items with features count as trained (their vectors carry
        learned feature weights).

    Scores are true FM scores (logits for ``binary``): inner product plus the
    user constant.  Rows hold exactly ``k`` items whenever ``k`` candidates exist.
    """
    k = check_k(k)
    if getattr(model, "encoder_", None) is None:
        raise ConfigError("recommend needs a model fit on interactions (it carries the user/item ID maps)")
    enc = model._predict_encoder(user_features, item_features)
    if seen is None:
        seen = getattr(model, "seen_", None)
    if seen is not None:
        seen = sp.csr_matrix(seen)
        if seen.shape != (enc.n_users, enc.n_items):
            raise ConfigError(f"seen matrix has shape {seen.shape}; the model has {(enc.n_users, enc.n_items)}")

    # candidate items: the model's items, then cold items that only have features
    has_feat = np.zeros(enc.n_items, dtype=bool)
    cold_items = enc.item_map.ids[:0]
    if enc.item_features is not None:
        fidx = enc.item_map.to_index(enc.item_features.ids.ids)
        has_feat[fidx[fidx >= 0]] = True
        cold_items = enc.item_features.ids.ids[fidx < 0]
    candidate = np.ones(enc.n_items, dtype=bool)
    if not include_untrained_items and seen is not None:
        candidate &= (np.bincount(seen.indices, minlength=enc.n_items) > 0) | has_feat
    cold_keep = np.ones(len(cold_items), dtype=bool)
    if exclude_items is not None:
        banned = np.asarray(list(exclude_items))
        idx = enc.item_map.to_index(banned)
        candidate[idx[idx >= 0]] = False
        if len(cold_items) and len(banned):
            cold_keep &= IdMap.from_values(banned).to_index(cold_items) < 0
    cand_items = np.flatnonzero(candidate)
    pos_of_item = np.full(enc.n_items, -1, dtype=np.int64)
    pos_of_item[cand_items] = np.arange(len(cand_items))
    ext_items = enc.item_map.ids[cand_items]
    if cold_keep.any():
        cold = cold_items[cold_keep]
        ext_items = (np.concatenate([ext_items, cold]) if ext_items.dtype.kind == cold.dtype.kind
                     else np.concatenate([ext_items.astype(str), cold.astype(str)]))
        log.info("serving %d cold items (features, no interactions)", len(cold))

    # users to serve: the model's users, plus cold users of a given feature table
    if users is None:
        user_ids = enc.user_map.ids
        if user_features is not None and enc.user_features is not None:
            fids = enc.user_features.ids.ids
            cold_users = fids[enc.user_map.to_index(fids) < 0]
            if len(cold_users):
                log.info("serving %d cold users (features, no interactions)", len(cold_users))
                user_ids = (np.concatenate([user_ids, cold_users]) if user_ids.dtype.kind == cold_users.dtype.kind
                            else np.concatenate([user_ids.astype(str), cold_users.astype(str)]))
    else:
        user_ids = np.asarray(users)
    uv, iv = export_vectors(model, users=user_ids, items=ext_items, encoder=enc)
    n_cand = len(ext_items)

    # per-user exclusions (rows = served users, columns = candidate positions)
    excl = None
    parts = []
    if exclude_seen and seen is not None:
        parts.append(seen)
    if exclude_per_user is not None:
        parts.append(_pairs_matrix(exclude_per_user, enc.user_map, enc.item_map))
    if parts:
        full = parts[0] if len(parts) == 1 else (parts[0] + parts[1])
        full = sp.csr_matrix(full)
        known = uv.index >= 0  # cold users have no history to exclude
        coo = full[np.where(known, uv.index, 0)].tocoo()
        cpos = pos_of_item[coo.col]
        keep = (cpos >= 0) & known[coo.row]
        excl = sp.csr_matrix(
            (np.ones(int(keep.sum()), np.float32), (coo.row[keep], cpos[keep])),
            shape=(len(user_ids), n_cand),
        )
        excl.sum_duplicates()
        excl.sort_indices()

    idx = make_index(index)
    t0 = time.perf_counter()
    idx.build(iv.vectors)
    log.info("index %s built over %d items in %.2fs", type(idx).__name__, n_cand, time.perf_counter() - t0)
    int_ids = ext_items.dtype.kind == "i"
    for start, ids, scores in idx.search_batches(uv.vectors, k, excl, batch_size=batch_size):
        stop = start + ids.shape[0]
        valid = ids >= 0
        scores = scores.astype(np.float64)
        scores += uv.constants[start:stop, None]
        scores = np.where(valid, scores, -np.inf).astype(np.float32)
        if int_ids:
            out = np.full(ids.shape, -1, dtype=np.int64)
        else:
            out = np.full(ids.shape, None, dtype=object)
        out[valid] = ext_items[ids[valid]]
        yield TopK(np.asarray(user_ids[start:stop]), out, scores)


def recommend(model: Any, user_ids: Any, k: int = 10, **kwargs: Any) -> TopK:
    """Top-k for a few users in one ``TopK`` (same code path as :func:`recommend_all`)."""
    return TopK.concat(list(recommend_all(model, k, users=np.atleast_1d(np.asarray(user_ids)), **kwargs)))
