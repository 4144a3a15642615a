"""Top-k for every user: export -> index -> stream of :class:`~fmrec.topk.TopK` batches.

pandas and the model/data modules are imported only where a path needs them, so
``fmrec recommend --vectors`` starts without them.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

if TYPE_CHECKING:  # scipy is imported where a sparse matrix is built: `recommend --vectors` starts without it
    import scipy.sparse as sp

from fmrec.errors import ConfigError
from fmrec.index import make_index
from fmrec.index.exact import check_k
from fmrec.topk import TopK

log = logging.getLogger("fmrec.recommend")


def _pairs_matrix(pairs: Any, user_map: Any, item_map: Any) -> sp.csr_matrix:
    """users x items pattern from a DataFrame(user_id, item_id) or dict {user: [items]}."""
    import pandas as pd
    import scipy.sparse as sp

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


def _exclusion_matrix(parts: list[sp.spmatrix], rows: np.ndarray, pos_of_item: np.ndarray,
                      n_cand: int) -> sp.csr_matrix | None:
    """Exclusions (served users x candidate positions) from full users x items patterns.

    ``rows``: each served user's row in the patterns (-1: none, e.g. a cold user);
    ``pos_of_item``: each item's candidate position (-1: not a candidate).  Works
    on the CSR arrays directly (no COO copy), so 1M users x 50 items stays small.
    """
    if not parts:
        return None
    import scipy.sparse as sp

    full = sp.csr_matrix(parts[0] if len(parts) == 1 else sum(parts[1:], parts[0]))
    if not full.has_canonical_format:
        full = full.copy()
        full.sum_duplicates()
    rows = np.asarray(rows, dtype=np.int64)
    if rows.shape[0] == full.shape[0] and np.array_equal(rows, np.arange(full.shape[0])):
        indptr, indices = full.indptr.astype(np.int64), full.indices
    else:
        valid = rows >= 0
        counts = np.zeros(rows.shape[0], dtype=np.int64)
        counts[valid] = np.diff(full.indptr)[rows[valid]]
        indptr = np.zeros(rows.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        src_start = np.zeros(rows.shape[0], dtype=np.int64)
        src_start[valid] = full.indptr[rows[valid]]
        gather = np.repeat(src_start - indptr[:-1], counts) + np.arange(indptr[-1], dtype=np.int64)
        indices = full.indices[gather]
    cpos = pos_of_item.astype(np.int32 if n_cand < 2**31 else np.int64, copy=False)[indices]
    keep = cpos >= 0
    if not keep.all():
        kept = np.zeros(keep.shape[0] + 1, dtype=np.int64)
        np.cumsum(keep, out=kept[1:])
        indptr = kept[indptr]
        cpos = cpos[keep]
    excl = sp.csr_matrix((np.ones(cpos.shape[0], dtype=np.float32), cpos, indptr), shape=(rows.shape[0], n_cand))
    if not excl.has_sorted_indices:
        excl.sort_indices()
    return excl


def _candidates(n_items: int, seen_indices: np.ndarray | None, include_untrained_items: bool,
                exclude_items: Any, item_map: Any) -> tuple[np.ndarray, np.ndarray]:
    """Candidate items and each item's candidate position (-1: none); ``seen_indices``: the
    column indices of the seen pattern (items never in it are untrained), or None."""
    if not include_untrained_items and seen_indices is not None:
        # items that occur in the pattern (validated positions); a scatter of True, not
        # np.bincount: on a popularity-skewed pattern bincount's repeated increments of
        # the same counters serialise (90 ms against 7 ms for 4.9 M entries)
        if seen_indices.size and (int(seen_indices.min()) < 0 or int(seen_indices.max()) >= n_items):
            raise ConfigError(f"the seen pattern holds item positions outside 0..{n_items - 1}")
        candidate = np.zeros(n_items, dtype=bool)
        candidate[seen_indices] = True
    else:
        candidate = np.ones(n_items, dtype=bool)
    if exclude_items is not None:
        idx = item_map.to_index(np.asarray(list(exclude_items)))
        candidate[idx[idx >= 0]] = False
    cand_items = np.flatnonzero(candidate)
    pos_of_item = np.full(n_items, -1, dtype=np.int64)
    pos_of_item[cand_items] = np.arange(len(cand_items))
    return cand_items, pos_of_item


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
    target_recall: float | None = None,
    tune_users: int = 1000,
    user_features: Any = None,
    item_features: Any = None,
) -> Iterator[TopK]:
    """Stream the top-``k`` items of every user, best first, as ``TopK`` batches.

    Parameters
    ----------
    model : a fitted :class:`~fmrec.model.FactorizationMachine` (with ID maps), or a
        :class:`~fmrec.vectors.VectorSet` (vectors from ``fmrec export`` or from any
        other model; see :mod:`fmrec.vectors`).
    users : external user IDs to serve (default: every user the model knows).
        With a VectorSet every ID must be in the file.
    seen : users x items training pattern (internal indices / file order);
        default: the one saved with the model (``model.seen_``) or in the file.
    exclude_seen : drop items the user interacted with in training (default on).
    exclude_items : external item IDs never to recommend.
    exclude_per_user : ``{user_id: [item_id, ...]}`` or a DataFrame ``user_id, item_id``.
    include_untrained_items : also rank items that never occurred in training
        (default off: their vectors carry no learned signal).  Needs a seen
        pattern to know them; a VectorSet without one keeps every item.
    index : ``"exact"`` (:class:`~fmrec.index.ExactIndex`), ``"flat"`` (faiss
        ``IndexFlatIP``), a faiss factory string (``"IVF1024,Flat"``,
        ``"HNSW32"``, ...) or an index instance (e.g. ``FaissIndex.load(dir)``).
    user_features, item_features : feature tables (:class:`~fmrec.data.features.FeatureTable`
        or paths) for a model trained with side features: users / items in them
        that the model never saw are served / ranked by their features (cold start).
    target_recall : for an approximate index, tune ``nprobe``/``efSearch`` on
        ``tune_users`` random users until recall@k against the exact answer
        reaches this; the result is logged and kept in ``index.tuned_`` (pass an
        instance to read it).

    Scores are true FM scores (logits for ``binary``): inner product plus the
    user constant (a VectorSet without constants: the inner product).  Rows hold
    exactly ``k`` items whenever ``k`` candidates exist.
    """
    from fmrec.vectors import VectorSet

    k = check_k(k)
    if target_recall is not None and not (isinstance(target_recall, (int, float)) and 0 < target_recall <= 1):
        raise ConfigError(f"target recall must be in (0, 1], got {target_recall!r}")
    if isinstance(model, VectorSet):
        if user_features is not None or item_features is not None:
            raise ConfigError("feature tables apply to a model; a vectors file already holds every vector")
        prepared = _prepare_vectors(model, users, seen, exclude_seen, exclude_items, exclude_per_user,
                                    include_untrained_items)
    else:
        prepared = _prepare_model(model, users, seen, exclude_seen, exclude_items, exclude_per_user,
                                  include_untrained_items, user_features, item_features)
    user_ids, U, constants, excl, ext_items, items_integer, item_vectors = prepared
    idx = make_index(index)
    t0 = time.perf_counter()
    idx.build(item_vectors)
    log.info("index %s built over %d items in %.2fs", type(idx).__name__, len(ext_items), time.perf_counter() - t0)
    if target_recall is not None:
        if getattr(idx, "tune", None) is None:
            log.info("exact index: recall 1.0 by construction (no tuning needed)")
        else:
            idx.tune(U, k, float(target_recall), exclude=excl, n_users=tune_users)
    for start, ids, scores in idx.search_batches(U, k, excl, batch_size=batch_size):
        stop = start + ids.shape[0]
        if ids.size == 0 or ids.min() >= 0:  # every row full (the usual case): no padding to keep
            if constants is not None:
                scores = (scores.astype(np.float64) + constants[start:stop, None]).astype(np.float32)
            out = ext_items.take(ids)
            out = out.astype(np.int64 if items_integer else object, copy=False)
            yield TopK(np.asarray(user_ids[start:stop]), out, scores)
            continue
        valid = ids >= 0
        if constants is not None:
            scores = scores.astype(np.float64)
            scores += constants[start:stop, None]
            scores = np.where(valid, scores, -np.inf).astype(np.float32)
        if items_integer:
            out = np.full(ids.shape, -1, dtype=np.int64)
        else:
            out = np.full(ids.shape, None, dtype=object)
        out[valid] = ext_items[ids[valid]]
        yield TopK(np.asarray(user_ids[start:stop]), out, scores)
    stats = getattr(idx, "stats_", None)
    if stats and stats.get("exact_fallback_users", 0) + stats.get("short_lists_refilled", 0):
        log.info("faiss: %d of %d users answered by the exact index (%d past the exclusion cap, "
                 "%d with short approximate lists)", stats["exact_fallback_users"] + stats["short_lists_refilled"],
                 stats["users"], stats["exact_fallback_users"], stats["short_lists_refilled"])


def exact_plan(model: Any, k: int, *, users: Any = None, seen: sp.spmatrix | None = None,
               exclude_seen: bool = True, exclude_items: Any = None, exclude_per_user: Any = None,
               include_untrained_items: bool = False, user_features: Any = None,
               item_features: Any = None, **_: Any) -> tuple[np.ndarray, int]:
    """(item visiting order vector, users per GEMM block) of the exact search
    :func:`recommend_all` runs for these arguments.  Scoring slices of ``users``
    that start on a multiple of the block size with
    ``index=ExactIndex(order_by=vector)`` reproduces the whole run bit for bit
    (:mod:`fmrec.distributed` partitions users this way)."""
    from fmrec.index import ExactIndex

    _, U, _, _, _, _, item_vectors = _prepare_model(model, users, seen, exclude_seen, exclude_items,
                                                   exclude_per_user, include_untrained_items, user_features,
                                                   item_features)
    order = U.mean(axis=0, dtype=np.float64) if U.shape[0] else np.zeros(U.shape[1])
    return order, ExactIndex().build(item_vectors).user_block(check_k(k))


def _cold_ids(table: Any, id_map: Any) -> np.ndarray:
    """IDs of a feature table's entities that ``id_map`` does not know (empty without a table)."""
    if table is None:
        return np.zeros(0, dtype=np.int64)
    ids = table.ids.ids
    return ids[id_map.to_index(ids) < 0]


def _join_ids(known: np.ndarray, cold: np.ndarray) -> np.ndarray:
    if cold.size == 0:
        return known
    if known.dtype.kind == "i" and cold.dtype.kind == "i":
        return np.concatenate([known, cold.astype(np.int64)])
    return np.concatenate([known.astype(str), cold.astype(str)])


def _prepare_model(model: Any, users: Any, seen: Any, exclude_seen: bool, exclude_items: Any,
                   exclude_per_user: Any, include_untrained_items: bool, user_features: Any = None,
                   item_features: Any = None) -> tuple[Any, ...]:
    enc = getattr(model, "encoder_", None)
    if enc is None:
        raise ConfigError("recommend needs a model fit on interactions (it carries the user/item ID maps)")
    if user_features is not None or item_features is not None:
        enc = model._predict_encoder(user_features, item_features)
    if seen is None:
        seen = getattr(model, "seen_", None)
    if seen is not None:
        from fmrec.vectors import seen_matrix

        seen = seen_matrix(seen, (enc.n_users, enc.n_items), "the model")
    cand_items, pos_of_item = _candidates(enc.n_items, None if seen is None else seen.indices,
                                          include_untrained_items, exclude_items, enc.item_map)
    # items of a given feature table the model never saw (cold, features only) are
    # candidates too, after the model's items; cold users of a user table are served
    cold_items = _cold_ids(_as_table(item_features), enc.item_map)
    if exclude_items is not None and cold_items.size:
        banned = np.asarray(list(exclude_items)).astype(str)
        cold_items = cold_items[~np.isin(cold_items.astype(str), banned)]
    if users is None:
        user_ids = enc.user_map.ids
        if user_features is not None:
            user_ids = _join_ids(user_ids, _cold_ids(_as_table(user_features), enc.user_map))
    else:
        user_ids = np.asarray(users)
    item_ext = _join_ids(enc.item_map.ids[cand_items], cold_items)
    from fmrec.export import export_vectors

    uv, iv = export_vectors(model, users=user_ids, items=item_ext, encoder=enc)
    parts = []
    if exclude_seen and seen is not None:
        parts.append(seen)
    if exclude_per_user is not None:
        parts.append(_pairs_matrix(exclude_per_user, enc.user_map, enc.item_map))
    excl = _exclusion_matrix(parts, uv.index, pos_of_item, len(item_ext))
    items_integer = item_ext.dtype.kind == "i"
    return user_ids, uv.vectors, uv.constants, excl, item_ext, items_integer, iv.vectors


def _as_table(t: Any) -> Any:
    if t is None or hasattr(t, "roles"):
        return t
    from fmrec.data.features import read_feature_table

    return read_feature_table(t)


class _LazyIdMap:
    """An :class:`~fmrec.data.IdMap` built on first lookup; ``ids`` / ``is_integer`` without one."""

    def __init__(self, ids: Any) -> None:
        self._map: Any = None
        if isinstance(ids, np.ndarray) and ids.ndim == 1 and ids.dtype.kind in "iU":
            # what IdMap's normalisation returns for these dtypes
            self.ids = ids.astype(np.int64, copy=False) if ids.dtype.kind == "i" else ids
        else:
            from fmrec.data._ids import IdMap

            self._map = IdMap(ids)
            self.ids = self._map.ids

    @property
    def is_integer(self) -> bool:
        return self.ids.dtype.kind == "i"

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def to_index(self, values: Any) -> np.ndarray:
        if self._map is None:
            from fmrec.data._ids import IdMap

            self._map = IdMap(self.ids)
        return self._map.to_index(values)


def _prepare_vectors(vs: Any, users: Any, seen: Any, exclude_seen: bool, exclude_items: Any,
                     exclude_per_user: Any, include_untrained_items: bool) -> tuple[Any, ...]:
    where = vs.source or "vectors"
    # IdMaps (pandas lookups) only when IDs must be looked up; a vectors file's IDs are
    # already normalised (int64 or unicode), which is what IdMap(ids).ids would hold
    user_map = _LazyIdMap(vs.user_ids)
    item_map = _LazyIdMap(vs.item_ids)
    if seen is not None:
        from fmrec.vectors import seen_matrix

        seen = seen_matrix(seen, (vs.n_users, vs.n_items), where)
        seen_indices = seen.indices
    else:  # the file's pattern: a sparse matrix is built only when it is excluded
        pattern = vs.seen_arrays()
        seen_indices = None if pattern is None else pattern[1]
        if exclude_seen:
            seen = vs.seen
    cand_items, pos_of_item = _candidates(vs.n_items, seen_indices, include_untrained_items, exclude_items,
                                          item_map)
    if users is None:
        rows = np.arange(vs.n_users, dtype=np.int64)
    else:
        rows = user_map.to_index(np.asarray(users))
        if np.any(rows < 0):
            bad = np.asarray(users)[rows < 0]
            raise ConfigError(f"{int((rows < 0).sum())} requested user ID(s) are not in {where} "
                              f"(first: {bad[0].item()!r}); vectors files have no cold-start rule")
    user_ids = user_map.ids[rows]
    parts = []
    if exclude_seen and seen is not None:
        parts.append(seen)
    if exclude_per_user is not None:
        parts.append(_pairs_matrix(exclude_per_user, user_map, item_map))
    excl = _exclusion_matrix(parts, rows, pos_of_item, len(cand_items))
    U = vs.user_vectors if users is None else np.ascontiguousarray(vs.user_vectors[rows])
    constants = None if vs.user_constants is None else vs.user_constants[rows]
    items = vs.item_vectors if len(cand_items) == vs.n_items else np.ascontiguousarray(vs.item_vectors[cand_items])
    return user_ids, U, constants, excl, item_map.ids[cand_items], item_map.is_integer, items


def recommend(model: Any, user_ids: Any, k: int = 10, **kwargs: Any) -> TopK:
    """Top-k for a few users in one ``TopK`` (same code path as :func:`recommend_all`)."""
    return TopK.concat(list(recommend_all(model, k, users=np.atleast_1d(np.asarray(user_ids)), **kwargs)))
