"""Top-k for every user: export -> index -> stream of :class:`~fmrec.topk.TopK` batches."""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp

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

    Scores are true FM scores (logits for ``binary``): inner product plus the
    user constant.  Rows hold exactly ``k`` items whenever ``k`` candidates exist.
    """
    k = check_k(k)
    enc = getattr(model, "encoder_", None)
    if enc is None:
        raise ConfigError("recommend needs a model fit on interactions (it carries the user/item ID maps)")
    if seen is None:
        seen = getattr(model, "seen_", None)
    if seen is not None:
        seen = sp.csr_matrix(seen)
        if seen.shape != (enc.n_users, enc.n_items):
            raise ConfigError(f"seen matrix has shape {seen.shape}; the model has {(enc.n_users, enc.n_items)}")

    # candidate items
    candidate = np.ones(enc.n_items, dtype=bool)
    if not include_untrained_items and seen is not None:
        candidate &= np.bincount(seen.indices, minlength=enc.n_items) > 0
    if exclude_items is not None:
        idx = enc.item_map.to_index(np.asarray(list(exclude_items)))
        candidate[idx[idx >= 0]] = False
    cand_items = np.flatnonzero(candidate)
    pos_of_item = np.full(enc.n_items, -1, dtype=np.int64)
    pos_of_item[cand_items] = np.arange(len(cand_items))

    # users to serve
    if users is None:
        user_ids = enc.user_map.ids
    else:
        user_ids = np.asarray(users)
    uv, iv = export_vectors(model, users=user_ids, items=enc.item_map.ids[cand_items])

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
        rows = np.where(uv.index >= 0, uv.index, 0)
        sub = full[rows]
        sub = sp.csr_matrix(sub.multiply((uv.index >= 0)[:, None]))
        coo = sub.tocoo()
        cpos = pos_of_item[coo.col]
        keep = cpos >= 0
        excl = sp.csr_matrix(
            (np.ones(int(keep.sum()), np.float32), (coo.row[keep], cpos[keep])),
            shape=(len(user_ids), len(cand_items)),
        )
        excl.sum_duplicates()
        excl.sort_indices()

    idx = make_index(index)
    t0 = time.perf_counter()
    idx.build(iv.vectors)
    log.info("index %s built over %d items in %.2fs", type(idx).__name__, len(cand_items), time.perf_counter() - t0)
    pad = -1 if enc.item_map.is_integer else None
    ext_items = enc.item_map.ids[cand_items]
    for start, ids, scores in idx.search_batches(uv.vectors, k, excl, batch_size=batch_size):
        stop = start + ids.shape[0]
        valid = ids >= 0
        scores = scores.astype(np.float64)
        scores += uv.constants[start:stop, None]
        scores = np.where(valid, scores, -np.inf).astype(np.float32)
        if enc.item_map.is_integer:
            out = np.full(ids.shape, -1, dtype=np.int64)
        else:
            out = np.full(ids.shape, pad, dtype=object)
        out[valid] = ext_items[ids[valid]]
        yield TopK(np.asarray(user_ids[start:stop]), out, scores)


def recommend(model: Any, user_ids: Any, k: int = 10, **kwargs: Any) -> TopK:
    """Top-k for a few users in one ``TopK`` (same code path as :func:`recommend_all`)."""
    return TopK.concat(list(recommend_all(model, k, users=np.atleast_1d(np.asarray(user_ids)), **kwargs)))
