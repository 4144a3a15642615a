"""Cold-start evaluation: hold out every interaction of some items (or users), train on
the rest with side features, and compare the model's lists for the held-out entities
with a popularity baseline on the same entities.

- ``hold_out="items"``: a random ``fraction`` of items loses all its interactions.
  The users who interacted with them get top-k lists *over the held-out items only*
  (warm items excluded), scored from item features; relevant = their held-out
  interactions.  Baseline: *feature popularity*: a held-out item scores the
  feature-weighted mean training popularity of the warm items sharing its feature
  columns (e.g. the popularity of its genres), since a new item has no popularity.
- ``hold_out="users"``: a random ``fraction`` of users loses all its interactions;
  they get lists over the training items from their user features; relevant =
  every held-out interaction.  Baseline: training popularity.

:func:`evaluate_cold_start` returns both sets of metrics and the ratio of the
model's precision@k to the baseline's.  CLI: ``fmrec evaluate-cold-start``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fmrec.data.interactions import Interactions
from fmrec.errors import ConfigError, DataError
from fmrec.topk import TopK

HOLD_OUTS = ("items", "users")


def cold_start_split(data: Interactions, hold_out: str = "items", fraction: float = 0.2,
                     random_state: Any = 0) -> tuple[Interactions, pd.DataFrame, np.ndarray]:
    """(training interactions, held-out rows as a frame, held-out external IDs)."""
    if hold_out not in HOLD_OUTS:
        raise ConfigError(f"hold_out must be one of {HOLD_OUTS}, got {hold_out!r}")
    if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise ConfigError(f"fraction must be between 0 and 1 (exclusive), got {fraction!r}")
    frame = data.to_frame()
    col = "item_id" if hold_out == "items" else "user_id"
    ids = frame[col].unique()
    n_held = int(round(len(ids) * fraction))
    if n_held < 1 or n_held >= len(ids):
        raise DataError(f"holding out {fraction:.0%} of {len(ids)} {hold_out} leaves none to hold out or to train on")
    rng = np.random.default_rng(random_state)
    held = rng.choice(ids, size=n_held, replace=False)
    is_held = frame[col].isin(held).to_numpy()
    train = Interactions.from_frame(frame[~is_held], duplicates="keep")
    return train, frame[is_held].reset_index(drop=True), held


def feature_popularity_topk(train: Interactions, item_features: Any, candidates: Any, users: Any,
                            k: int) -> TopK:
    """The same list for every user: the ``candidates`` ranked by the feature-weighted
    mean training popularity of the training items that share their feature columns."""
    from fmrec.data.features import SideFeatures

    side = SideFeatures.fit(item_features)
    cand = np.asarray(candidates)
    warm_ids = train.item_map.ids
    pop = np.bincount(train.item_idx, minlength=train.n_items).astype(np.float64)
    W = side.rows_for(warm_ids)  # warm items x feature columns
    has = np.asarray(W.sum(axis=0)).ravel()
    col_pop = np.asarray(W.T @ pop).ravel() / np.maximum(has, 1e-12)  # mean popularity per column
    C = side.rows_for(cand)
    score = np.asarray(C @ col_pop).ravel()
    order = np.argsort(-score, kind="stable")[:k]
    n = len(np.asarray(users))
    kk = len(order)
    ids = np.tile(cand[order], (n, 1))
    scores = np.tile(score[order].astype(np.float32), (n, 1))
    if kk < k:  # fewer candidates than k: pad
        pad = -1 if ids.dtype.kind in "iu" else None
        ids = np.hstack([ids, np.full((n, k - kk), pad, dtype=ids.dtype)])
        scores = np.hstack([scores, np.full((n, k - kk), -np.inf, dtype=np.float32)])
    return TopK(np.asarray(users), ids, scores)


def evaluate_cold_start(model: Any, data: Interactions, hold_out: str = "items", *, user_features: Any = None,
                        item_features: Any = None, k: int = 10, fraction: float = 0.2,
                        random_state: Any = 0) -> dict[str, Any]:
    """Fit ``model`` (an unfitted :class:`~fmrec.model.FactorizationMachine`) on a cold-start
    split and evaluate it against the baseline (see the module docstring)."""
    from fmrec.evaluate import popularity_topk, ranking_metrics
    from fmrec.recommend import recommend_all

    if hold_out == "items" and item_features is None:
        raise ConfigError("cold items can only be ranked from their features: give item features")
    if hold_out == "users" and user_features is None:
        raise ConfigError("cold users can only be served from their features: give user features")
    train, test, held = cold_start_split(data, hold_out, fraction, random_state)
    model.fit(train, user_features=user_features, item_features=item_features)
    if hold_out == "items":
        users = test["user_id"].unique()
        warm = train.item_map.ids
        lists = TopK.concat(list(recommend_all(model, k, users=users, exclude_items=warm,
                                               item_features=item_features)))
        base = feature_popularity_topk(train, item_features, held, users, k)
        baseline = "feature popularity of the held-out items"
    else:
        users = held
        lists = TopK.concat(list(recommend_all(model, k, users=users, user_features=user_features)))
        base = popularity_topk(train, users, k)
        baseline = "training popularity"
    m_model = ranking_metrics(lists, test, k)
    m_base = ranking_metrics(base, test, k)
    key = f"precision@{k}"
    return {
        "hold_out": hold_out, "fraction": fraction, "k": k, "n_held": int(len(held)),
        "n_test_rows": int(len(test)), "n_users_evaluated": int(len(users)),
        "model": m_model, "baseline": m_base, "baseline_name": baseline,
        "ratio": float(m_model[key] / m_base[key]) if m_base[key] > 0 else float("inf"),
    }


__all__ = ["HOLD_OUTS", "cold_start_split", "evaluate_cold_start", "feature_popularity_topk"]
