"""Evaluation: prediction metrics, top-k ranking metrics and a popularity baseline.

Prediction metrics (:func:`rmse`, :func:`mae`, :func:`accuracy`, :func:`log_loss`,
:func:`f1`, :func:`roc_auc`, :func:`prediction_metrics`) are plain vectorised numpy;
no scikit-learn is needed.

Ranking metrics (:func:`ranking_metrics`) follow the definitions in
``docs/BENCHMARKS.md`` ("Metric definitions") exactly.  With ``T_u`` the set of
relevant held-out items of user ``u`` and ``r_1 < r_2 < ...`` the 1-based ranks
(column positions in the ``TopK`` row) of the hits among the first ``k`` entries:

* ``precision@k`` = hits / k  (a list shorter than ``k`` is *not* rescaled);
* ``recall@k``    = hits / |T_u|;
* ``hit_rate@k``  = 1 if hits > 0 else 0;
* ``mrr@k``       = 1 / r_1 (0 when there is no hit);
* ``ndcg@k``      = sum_j 1/log2(1 + r_j) / sum_{i=1..min(|T_u|, k)} 1/log2(1 + i);
* ``map@k``       = (1 / min(|T_u|, k)) * sum_j (j / r_j).  Note the denominator is
  ``min(|T_u|, k)``, not ``|T_u|`` (which some libraries use).

Each metric is computed per user and averaged over every user with at least one
relevant held-out item.  Such a user without a ``TopK`` row counts as all zeros
(the result reports how many: ``n_users_missing_list``).  Users that have a list
but no relevant item are ignored.  Matching is by external IDs; padding entries
(non-finite score, as in :attr:`TopK.counts`) never count, whatever their ID.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from fmrec.data._ids import _normalise_ids
from fmrec.data.interactions import Interactions
from fmrec.errors import ConfigError, DataError
from fmrec.topk import TopK

__all__ = [
    "rmse",
    "mae",
    "accuracy",
    "log_loss",
    "f1",
    "roc_auc",
    "prediction_metrics",
    "ranking_metrics",
    "popularity_topk",
    "RANKING_METRICS",
]

RANKING_METRICS: tuple[str, ...] = ("precision", "recall", "ndcg", "map", "hit_rate", "mrr")

# TopK rows are processed in chunks of about this many cells to bound memory.
_CHUNK_CELLS = 1 << 21
# Size (bytes) of the per-chunk relevance bitmap of ranking_metrics.
_BITMAP_CELLS = 1 << 25


# ===================================================================== prediction
def _pair(y_true: Any, y_pred: Any, what: str = "y_pred") -> tuple[np.ndarray, np.ndarray]:
    """Validate two equally long, non-empty, finite 1-D float arrays."""
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise DataError(f"y_true has {t.size} values but {what} has {p.size}")
    if t.size == 0:
        raise DataError("no values to evaluate")
    if not np.all(np.isfinite(t)):
        raise DataError("y_true contains non-finite values")
    if not np.all(np.isfinite(p)):
        raise DataError(f"{what} contains non-finite values")
    return t, p


def _binary_labels(t: np.ndarray) -> np.ndarray:
    if not np.all((t == 0) | (t == 1)):
        bad = t[(t != 0) & (t != 1)][0]
        raise DataError("binary labels must be 0 or 1", value=float(bad))
    return t.astype(bool)


def _probabilities(p: np.ndarray) -> np.ndarray:
    if np.any((p < 0) | (p > 1)):
        bad = p[(p < 0) | (p > 1)][0]
        raise DataError("probabilities must lie in [0, 1] (pass probabilities, not logits)", value=float(bad))
    return p


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def accuracy(y_true01: Any, prob: Any, threshold: float = 0.5) -> float:
    """Fraction of rows whose predicted label ``prob >= threshold`` equals the 0/1 label."""
    t, p = _pair(y_true01, prob, "prob")
    y = _binary_labels(t)
    pred = _probabilities(p) >= threshold
    return float(np.mean(pred == y))


def log_loss(y_true01: Any, prob: Any, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy (natural log); probabilities clipped to ``[eps, 1 - eps]``.

    Computed in float64, so float32 probabilities of exactly 0 or 1 stay finite.
    """
    t, p = _pair(y_true01, prob, "prob")
    y = _binary_labels(t)
    p = np.clip(_probabilities(p), eps, 1.0 - eps)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def f1(y_true01: Any, prob: Any, threshold: float = 0.5) -> float:
    """F1 of the positive class, predicting 1 where ``prob >= threshold``.

    ``2 TP / (2 TP + FP + FN)``; 0.0 when there are neither true nor predicted positives.
    """
    t, p = _pair(y_true01, prob, "prob")
    y = _binary_labels(t)
    pred = _probabilities(p) >= threshold
    tp = int(np.count_nonzero(pred & y))
    denom = 2 * tp + int(np.count_nonzero(pred & ~y)) + int(np.count_nonzero(~pred & y))
    return 0.0 if denom == 0 else 2.0 * tp / denom


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given their average rank (like scipy's rankdata)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = xs.size
    # start index of each group of equal values in sorted order
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(xs[1:], xs[:-1], out=new_group[1:])
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], n)  # exclusive
    avg = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    group = np.cumsum(new_group) - 1
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = avg[group]
    return ranks


def roc_auc(y_true01: Any, score: Any) -> float:
    """Area under the ROC curve from ranks (Mann-Whitney U), ties counted as one half.

    ``score`` may be any monotone score (probability or logit).  Raises
    :class:`DataError` when ``y_true01`` contains only one class.
    """
    t, s = _pair(y_true01, score, "score")
    y = _binary_labels(t)
    n_pos = int(np.count_nonzero(y))
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataError("ROC AUC is undefined when y_true contains only one class")
    ranks = _average_ranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def prediction_metrics(y_true: Any, y_pred: Any, task: Literal["regression", "binary"]) -> dict[str, float]:
    """Standard metrics for a model's predictions.

    ``task="regression"``: ``{"rmse", "mae"}``.  ``task="binary"``: ``y_true`` holds
    0/1 labels and ``y_pred`` probabilities; returns ``{"accuracy", "log_loss", "f1",
    "roc_auc"}`` at threshold 0.5 (``roc_auc`` is NaN when only one class is present).
    """
    if task == "regression":
        return {"rmse": rmse(y_true, y_pred), "mae": mae(y_true, y_pred)}
    if task == "binary":
        out = {
            "accuracy": accuracy(y_true, y_pred),
            "log_loss": log_loss(y_true, y_pred),
            "f1": f1(y_true, y_pred),
        }
        t = np.asarray(y_true, dtype=np.float64).ravel()
        out["roc_auc"] = roc_auc(y_true, y_pred) if np.unique(t).size == 2 else float("nan")
        return out
    raise ConfigError(f"unknown task {task!r}; choose 'regression' or 'binary'")


# ======================================================================== ranking
def _factorize_sorted(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, uniques)`` with ``uniques`` sorted and ``uniques[codes] == values``."""
    codes, uniq = pd.factorize(values)
    uniq = np.asarray(uniq)
    order = np.argsort(uniq, kind="stable")
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size, dtype=np.int64)
    return rank[codes], uniq[order]


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting (numpy's hash-based unique is slow on large arrays)."""
    a = np.sort(a, kind="stable")
    if a.size:
        a = a[np.concatenate(([True], a[1:] != a[:-1]))]
    return a


class _Vocab:
    """Sorted unique external IDs with a vectorised ``code`` lookup (-1 if unknown)."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids  # sorted unique, int64 or str
        self.is_integer = ids.dtype.kind == "i"
        self._index: pd.Index | None = None
        self._str_index: pd.Index | None = None
        self._table: np.ndarray | None = None
        if self.is_integer and ids.size:
            lo, hi = int(ids[0]), int(ids[-1])
            span = hi - lo + 1
            if span <= max(8 * ids.size, 1 << 20) and span <= 1 << 26:
                table = np.full(span, -1, dtype=np.int32)
                table[ids - lo] = np.arange(ids.size, dtype=np.int32)
                self._table, self._lo, self._hi = table, lo, hi

    def __len__(self) -> int:
        return int(self.ids.size)

    def code(self, query: Any) -> np.ndarray:
        """Codes of ``query`` IDs (any shape).  Integer and text IDs meet as text."""
        query = np.asarray(query)
        shape = query.shape
        if query.size == 0 or len(self) == 0:
            return np.full(shape, -1, dtype=np.int64)
        flat = query.ravel()
        if flat.dtype.kind == "O" and not self.is_integer:
            return self._idx().get_indexer(flat).astype(np.int64).reshape(shape)
        if flat.dtype.kind not in "iu":
            flat = _normalise_ids(flat)  # objects holding ints, floats, bools, text
        if flat.dtype.kind in "iu":
            if not self.is_integer:
                return self._idx().get_indexer(flat.astype(str)).astype(np.int64).reshape(shape)
            q = flat.astype(np.int64, copy=False)
            if self._table is not None:
                inside = (q >= self._lo) & (q <= self._hi)
                out = self._table[np.where(inside, q - self._lo, 0)].astype(np.int64)
                out[~inside] = -1
                return out.reshape(shape)
            pos = np.searchsorted(self.ids, q)
            np.minimum(pos, len(self) - 1, out=pos)
            return np.where(self.ids[pos] == q, pos, -1).astype(np.int64, copy=False).reshape(shape)
        if self.is_integer:  # integer vocabulary vs text IDs: compare as text
            if self._str_index is None:
                self._str_index = pd.Index(self.ids.astype(str))
            return self._str_index.get_indexer(flat).astype(np.int64).reshape(shape)
        return self._idx().get_indexer(flat).astype(np.int64).reshape(shape)

    def _idx(self) -> pd.Index:
        if self._index is None:
            self._index = pd.Index(self.ids)
        return self._index


class _Relevant:
    """Relevant (user, item) pairs, deduplicated, as a CSR over (user code, item code).

    ``keys = user_code * n_items + item_code`` sorted; ``indptr`` delimits each user's
    (sorted) item codes in ``item_codes``.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray) -> None:
        ucode, uvocab = _factorize_sorted(users)
        icode, ivocab = _factorize_sorted(items)
        self.users = _Vocab(uvocab)
        self.items = _Vocab(ivocab)
        self.n_items = max(len(self.items), 1)
        self.keys = _sorted_unique(ucode * self.n_items + icode)
        self.n_rel = np.bincount(self.keys // self.n_items, minlength=len(self.users)).astype(np.int64)
        self.indptr = np.concatenate(([0], np.cumsum(self.n_rel)))
        self.item_codes = self.keys % self.n_items

    def member(self, keys: np.ndarray) -> np.ndarray:
        """Whether each ``user_code * n_items + item_code`` key is a relevant pair."""
        if self.keys.size == 0:
            return np.zeros(keys.shape, dtype=bool)
        pos = np.searchsorted(self.keys, keys)
        np.minimum(pos, self.keys.size - 1, out=pos)
        return self.keys[pos] == keys

    def rows_of(self, ucode: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(row, item_code)`` of every relevant pair of the users ``ucode`` (row = position)."""
        lengths = self.n_rel[ucode]
        total = int(lengths.sum())
        row = np.repeat(np.arange(ucode.size, dtype=np.int64), lengths)
        ends = np.cumsum(lengths)
        offs = np.arange(total, dtype=np.int64) - np.repeat(ends - lengths, lengths)
        return row, self.item_codes[np.repeat(self.indptr[ucode], lengths) + offs]


def _relevant_pairs(
    relevant: Interactions | pd.DataFrame,
    min_rating: float | None,
    user_col: str,
    item_col: str,
    rating_col: str,
) -> tuple[np.ndarray, np.ndarray]:
    """External (user, item) IDs of the relevant held-out rows."""
    if isinstance(relevant, Interactions):
        users = relevant.user_map.to_external(relevant.user_idx)
        items = relevant.item_map.to_external(relevant.item_idx)
        rating = relevant.rating
    elif isinstance(relevant, pd.DataFrame):
        for col in (user_col, item_col):
            if col not in relevant.columns:
                raise DataError(f"relevant frame lacks column {col!r}; columns are {list(map(str, relevant.columns))}")
        for col in (user_col, item_col):
            if relevant[col].isna().any():
                raise DataError("relevant frame has a missing ID", column=col)
        users = _normalise_ids(relevant[user_col].to_numpy())
        items = _normalise_ids(relevant[item_col].to_numpy())
        rating = None
        if min_rating is not None:
            if rating_col not in relevant.columns:
                raise ConfigError(f"min_rating={min_rating} needs a {rating_col!r} column in the relevant frame")
            rating = pd.to_numeric(relevant[rating_col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        raise ConfigError(f"relevant must be Interactions or a pandas DataFrame, not {type(relevant).__name__}")
    if min_rating is not None:
        if rating is None:
            raise ConfigError(f"min_rating={min_rating} given but the held-out interactions have no ratings")
        keep = np.asarray(rating, dtype=np.float64) >= min_rating
        users, items = users[keep], items[keep]
    return np.asarray(users), np.asarray(items)


def _check_ks(k: int | Sequence[int]) -> list[int]:
    ks = [k] if isinstance(k, (int, np.integer)) else list(k)
    if not ks:
        raise ConfigError("k must name at least one cut-off")
    out: list[int] = []
    for v in ks:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"k must be a positive integer, got {v!r}")
        if int(v) not in out:
            out.append(int(v))
    return out


def ranking_metrics(
    topk: TopK | Iterable[TopK],
    relevant: Interactions | pd.DataFrame,
    k: int | Sequence[int] = 10,
    metrics: Sequence[str] = RANKING_METRICS,
    *,
    min_rating: float | None = None,
    user_col: str = "user_id",
    item_col: str = "item_id",
    rating_col: str = "rating",
) -> dict[str, float]:
    """Top-k ranking metrics of ``topk`` lists against held-out ``relevant`` interactions.

    Parameters
    ----------
    topk
        One :class:`TopK` or an iterable of batches (consumed once, streamed; batches
        may differ in width).  Each user may appear in at most one row overall.
    relevant
        Held-out interactions: :class:`Interactions` (external IDs are recovered
        through its maps) or a DataFrame with ``user_col``/``item_col`` columns.
        Repeated (user, item) rows count once.
    k
        One cut-off or several; each must be at most the width of every non-empty batch
        (else :class:`ConfigError`).
    metrics
        One name or several of ``precision, recall, ndcg, map, hit_rate, mrr`` (see the module docstring
        for the exact definitions; MAP divides by ``min(|T_u|, k)``).
    min_rating
        When given, only held-out rows with ``rating >= min_rating`` are relevant.

    Returns
    -------
    ``{"precision@10": ..., ..., "n_users_evaluated": n, "n_users_missing_list": m}``:
    means over the ``n`` users with at least one relevant item; ``m`` of them had no
    list and count as zeros.  Ranks are column positions (1-based) in the TopK row;
    entries with a non-finite score are padding and never hit; an item repeated in a
    row counts only at its first position.
    """
    ks = _check_ks(k)
    metrics = (metrics,) if isinstance(metrics, str) else tuple(dict.fromkeys(metrics))
    unknown = [m for m in metrics if m not in RANKING_METRICS]
    if unknown or not metrics:
        raise ConfigError(f"unknown ranking metric(s) {unknown}; choose from {RANKING_METRICS}")
    kmax = max(ks)

    rel = _Relevant(*_relevant_pairs(relevant, min_rating, user_col, item_col, rating_col))
    n_users = len(rel.users)
    if n_users == 0:
        which = "" if min_rating is None else f" with rating >= {min_rating}"
        raise DataError(f"no user has a relevant held-out item{which}")

    sums = {(m, kk): 0.0 for m in metrics for kk in ks}
    has_list = np.zeros(n_users, dtype=bool)
    disc = 1.0 / np.log2(np.arange(2, kmax + 2, dtype=np.float64))  # 1/log2(1 + r), r = 1..kmax
    idcg_table = np.cumsum(disc)
    inv_rank = 1.0 / np.arange(1, kmax + 1, dtype=np.float64)

    # Chunks of rows: each chunk's relevant pairs are scattered into a dense
    # (rows x items) bitmap and the list entries gathered from it, which stays in
    # cache; catalogues too large for that fall back to a binary search of all keys.
    rows_by_bitmap = _BITMAP_CELLS // rel.n_items
    use_bitmap = rows_by_bitmap >= 64
    step = max(1, _CHUNK_CELLS // kmax)
    if use_bitmap:
        step = min(step, rows_by_bitmap)
        bitmap = np.zeros(step * rel.n_items, dtype=bool)

    batches = [topk] if isinstance(topk, TopK) else topk
    for batch in batches:
        if not isinstance(batch, TopK):
            raise ConfigError(f"topk must be a TopK or an iterable of TopK, got {type(batch).__name__}")
        n_rows = len(batch)
        if n_rows == 0:
            continue
        if kmax > batch.k:
            raise ConfigError(f"k={kmax} is larger than the TopK list width {batch.k}")
        ucodes_all = rel.users.code(batch.user_ids)
        for lo in range(0, n_rows, step):
            hi = min(lo + step, n_rows)
            ucode = ucodes_all[lo:hi]
            rows = np.flatnonzero(ucode >= 0)
            if rows.size == 0:
                continue
            ucode = ucode[rows]
            _mark_lists(has_list, ucode, rel)

            sc = batch.scores[lo:hi, :kmax][rows]
            valid = np.isfinite(sc)
            icode = np.full(sc.shape, -1, dtype=np.int64)
            icode[valid] = rel.items.code(batch.item_ids[lo:hi, :kmax][rows][valid])
            known = icode >= 0
            if use_bitmap:
                # row-local key: position in chunk * n_items + item code
                key = np.arange(rows.size, dtype=np.int64)[:, None] * rel.n_items + icode
                r_row, r_item = rel.rows_of(ucode)
                marks = r_row * rel.n_items + r_item
                bitmap[marks] = True
                hit = known & bitmap[np.where(known, key, 0)]
                bitmap[marks] = False
            else:
                key = ucode[:, None] * rel.n_items + icode
                hit = known & rel.member(key)
            _drop_repeats(hit, key)
            _accumulate(sums, hit, rel.n_rel[ucode], ks, metrics, disc, idcg_table, inv_rank)

    out: dict[str, float] = {}
    for m in metrics:
        for kk in ks:
            out[f"{m}@{kk}"] = sums[(m, kk)] / n_users
    out["n_users_evaluated"] = n_users
    out["n_users_missing_list"] = int(n_users - np.count_nonzero(has_list))
    return out


def _mark_lists(has_list: np.ndarray, ucode: np.ndarray, rel: _Relevant) -> None:
    """Record that users ``ucode`` have a list; a user with two lists is an error."""
    dup = has_list[ucode]
    srt = np.sort(ucode)
    if srt.size > 1 and np.any(srt[1:] == srt[:-1]):
        _, first = np.unique(ucode, return_index=True)
        later = np.ones(ucode.size, dtype=bool)
        later[first] = False
        dup |= later
    if dup.any():
        bad = rel.users.ids[ucode[np.flatnonzero(dup)[0]]]
        raise DataError("a user appears in more than one TopK row", value=bad.item())
    has_list[ucode] = True


def _drop_repeats(hit: np.ndarray, key: np.ndarray) -> None:
    """In place: a (row, item) hit repeated within a row counts only at its first position."""
    pos = np.flatnonzero(hit)
    if pos.size < 2:
        return
    kh = key.ravel()[pos]
    order = np.argsort(kh, kind="stable")  # stable: equal keys keep position order
    same = kh[order[1:]] == kh[order[:-1]]
    if same.any():
        rr, cc = np.divmod(pos[order[1:][same]], hit.shape[1])
        hit[rr, cc] = False


def _accumulate(
    sums: dict[tuple[str, int], float],
    hit: np.ndarray,
    n_rel: np.ndarray,
    ks: list[int],
    metrics: tuple[str, ...],
    disc: np.ndarray,
    idcg_table: np.ndarray,
    inv_rank: np.ndarray,
) -> None:
    """Add the per-user metric values of one chunk of rows to ``sums``."""
    hit_f = hit.astype(np.float64)
    cum = np.cumsum(hit, axis=1, dtype=np.float64) if "map" in metrics else None
    for kk in ks:
        h = hit_f[:, :kk]
        hits = h.sum(axis=1)
        for m in metrics:
            if m == "precision":
                v = hits.sum() / kk
            elif m == "recall":
                v = (hits / n_rel).sum()
            elif m == "hit_rate":
                v = float(np.count_nonzero(hits))
            elif m == "mrr":
                any_hit = hits > 0
                first = np.argmax(hit[:, :kk], axis=1)
                v = inv_rank[first][any_hit].sum()
            elif m == "ndcg":
                idcg = idcg_table[np.minimum(n_rel, kk) - 1]
                v = ((h @ disc[:kk]) / idcg).sum()
            else:  # map
                assert cum is not None
                ap = (cum[:, :kk] * h) @ inv_rank[:kk]
                v = (ap / np.minimum(n_rel, kk)).sum()
            sums[(m, kk)] += float(v)


# ======================================================================= baseline
def popularity_topk(
    train: Interactions,
    users_external_ids: Any,
    k: int,
    exclude_seen: bool = True,
) -> TopK:
    """Most-popular baseline: the ``k`` items with the most training rows, per user.

    Popularity is the number of training rows of an item (ratings of any value).
    Ties are broken by the item's internal index (first appearance in ``train``).
    With ``exclude_seen`` each user's own training items are skipped, so a user
    gets the ``k`` most popular items they have not rated; users unknown to
    ``train`` get the global top ``k``.  Scores are the popularity counts (float32);
    rows with fewer than ``k`` candidates are padded (``-1``/``None``, ``-inf``).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    users = np.asarray(users_external_ids)
    if users.ndim != 1:
        users = users.ravel()
    n_items = train.n_items
    pop = np.bincount(train.item_idx, minlength=n_items).astype(np.int64)
    order = np.argsort(-pop, kind="stable")  # rank position -> internal item
    pos_of_item = np.empty(n_items, dtype=np.int64)
    pos_of_item[order] = np.arange(n_items, dtype=np.int64)

    n = users.size
    pop_sorted = pop[order].astype(np.float32)
    ext_sorted = train.item_map.to_external(order)
    if train.item_map.is_integer:
        ids = np.empty((n, k), dtype=np.int64)
        pad: Any = -1
    else:
        ids = np.empty((n, k), dtype=object)
        ext_sorted = ext_sorted.astype(object)
        pad = None
    scores = np.empty((n, k), dtype=np.float32)
    seen_check = exclude_seen and n > 0 and len(train) > 0
    if seen_check:
        uidx = train.user_map.to_index(users)
        csr = train.to_csr(binary=True)
    base = np.arange(k, dtype=np.int64)
    step = max(1, _CHUNK_CELLS // k)
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        ans = np.broadcast_to(base, (hi - lo, k)).copy()  # rank positions in ``order``
        if seen_check:
            known = np.flatnonzero(uidx[lo:hi] >= 0)
            if known.size:
                _skip_seen(ans, known, csr[uidx[lo:hi][known]], pos_of_item, n_items, k)
        valid = ans < n_items
        if valid.all():
            ids[lo:hi] = ext_sorted[ans]
            scores[lo:hi] = pop_sorted[ans]
        else:
            safe = np.where(valid, ans, 0)
            chunk_ids = ext_sorted[safe] if n_items else np.empty(ans.shape, dtype=ids.dtype)
            chunk_ids[~valid] = pad
            ids[lo:hi] = chunk_ids
            scores[lo:hi] = np.where(valid, pop_sorted[safe] if n_items else 0, -np.inf)
    return TopK(users, ids, scores)


def _skip_seen(
    ans: np.ndarray, rows: np.ndarray, seen: Any, pos_of_item: np.ndarray, n_items: int, k: int
) -> None:
    """In place: shift rows ``rows`` of ``ans`` (rank positions 0..k-1) past seen items.

    With ``s_0 < s_1 < ...`` the rank positions of a user's seen items, ``t_i = s_i - i``
    is the number of unseen items ranked before ``s_i``, so the ``j``-th unseen item
    (0-based) sits at position ``j + #{i : t_i <= j}``.
    """
    if seen.nnz == 0:
        return
    row_of = np.repeat(np.arange(rows.size, dtype=np.int64), np.diff(seen.indptr))
    key = np.sort(row_of * n_items + pos_of_item[seen.indices])  # by row, then rank position
    row_of, pos = np.divmod(key, n_items)
    within = np.arange(pos.size, dtype=np.int64) - seen.indptr[:-1][row_of]
    t = pos - within
    sel = t < k
    counts = np.bincount(row_of[sel] * k + t[sel], minlength=rows.size * k).reshape(rows.size, k)
    ans[rows] += np.cumsum(counts, axis=1)
