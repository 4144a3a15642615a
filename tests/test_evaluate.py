"""Tests of fmrec.evaluate against slow, obvious pure-Python references."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fmrec.evaluate as ev
from fmrec.data import Interactions
from fmrec.errors import ConfigError, DataError
from fmrec.evaluate import (
    accuracy,
    f1,
    log_loss,
    mae,
    popularity_topk,
    prediction_metrics,
    ranking_metrics,
    rmse,
    roc_auc,
)
from fmrec.topk import TopK

METRICS = ("precision", "recall", "ndcg", "map", "hit_rate", "mrr")
SEEDS = [0, 1, 2, 3, 7, 42]


# ======================================================================= references
def ref_rmse(t: list[float], p: list[float]) -> float:
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(t, p)) / len(t))


def ref_mae(t: list[float], p: list[float]) -> float:
    return sum(abs(a - b) for a, b in zip(t, p)) / len(t)


def ref_accuracy(t: list[int], p: list[float], thr: float = 0.5) -> float:
    return sum(1 for a, b in zip(t, p) if (1 if b >= thr else 0) == a) / len(t)


def ref_log_loss(t: list[int], p: list[float], eps: float = 1e-15) -> float:
    total = 0.0
    for a, b in zip(t, p):
        b = min(max(b, eps), 1 - eps)
        total += -math.log(b) if a == 1 else -math.log(1 - b)
    return total / len(t)


def ref_f1(t: list[int], p: list[float], thr: float = 0.5) -> float:
    tp = fp = fn = 0
    for a, b in zip(t, p):
        pred = 1 if b >= thr else 0
        if pred == 1 and a == 1:
            tp += 1
        elif pred == 1 and a == 0:
            fp += 1
        elif pred == 0 and a == 1:
            fn += 1
    return 0.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def ref_auc(t: list[int], s: list[float]) -> float:
    """Pairwise count: P(score_pos > score_neg) + 0.5 P(tie)."""
    pos = [b for a, b in zip(t, s) if a == 1]
    neg = [b for a, b in zip(t, s) if a == 0]
    total = 0.0
    for x in pos:
        for y in neg:
            total += 1.0 if x > y else 0.5 if x == y else 0.0
    return total / (len(pos) * len(neg))


def ref_user_metrics(lst: list[Any], rel: set[Any], k: int) -> dict[str, float]:
    """Per-user metrics straight from BENCHMARKS.md; a repeated item counts once."""
    seen: set[Any] = set()
    ranks = []
    for r, item in enumerate(lst[:k], start=1):
        if item in rel and item not in seen:
            ranks.append(r)
        seen.add(item)
    hits = len(ranks)
    m = min(len(rel), k)
    return {
        "precision": hits / k,
        "recall": hits / len(rel),
        "hit_rate": 1.0 if hits else 0.0,
        "mrr": 1.0 / ranks[0] if ranks else 0.0,
        "ndcg": sum(1 / math.log2(1 + r) for r in ranks) / sum(1 / math.log2(1 + i) for i in range(1, m + 1)),
        "map": sum(j / r for j, r in enumerate(ranks, start=1)) / m,
    }


def ref_ranking(lists: dict[Any, list[Any]], relevant: dict[Any, set[Any]], ks: list[int]) -> dict[str, float]:
    users = [u for u, s in relevant.items() if s]
    out: dict[str, float] = {}
    for m in METRICS:
        for k in ks:
            out[f"{m}@{k}"] = sum(ref_user_metrics(lists.get(u, []), relevant[u], k)[m] for u in users) / len(users)
    out["n_users_evaluated"] = len(users)
    out["n_users_missing_list"] = sum(1 for u in users if u not in lists)
    return out


# ========================================================================= helpers
def make_topk(lists: dict[Any, list[Any]], width: int, string_ids: bool = False) -> TopK:
    """A TopK with padded rows (real items first, then -1/None with -inf)."""
    users = list(lists)
    n = len(users)
    if string_ids:
        items = np.full((n, width), None, dtype=object)
    else:
        items = np.full((n, width), -1, dtype=np.int64)
    scores = np.full((n, width), -np.inf, dtype=np.float32)
    for r, u in enumerate(users):
        lst = lists[u][:width]
        for c, it in enumerate(lst):
            items[r, c] = it
            scores[r, c] = float(width - c)
    uid = np.array(users, dtype=object if string_ids else np.int64)
    return TopK(uid, items, scores)


def relevant_frame(relevant: dict[Any, set[Any]]) -> pd.DataFrame:
    rows = [(u, i) for u, s in relevant.items() for i in sorted(s, key=str)]
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


def random_case(seed: int, string_ids: bool = False) -> tuple[dict[Any, list[Any]], dict[Any, set[Any]], int]:
    rng = np.random.default_rng(seed)
    n_users, n_items = int(rng.integers(5, 60)), int(rng.integers(5, 40))
    width = int(rng.integers(1, 15))
    conv = (lambda x: f"i{x}") if string_ids else int
    uconv = (lambda x: f"u{x}") if string_ids else (lambda x: int(x) * 3 + 1)
    lists: dict[Any, list[Any]] = {}
    relevant: dict[Any, set[Any]] = {}
    for u in range(n_users):
        if rng.random() < 0.85:  # some users have no list
            length = int(rng.integers(0, width + 1))  # some lists are padded
            lists[uconv(u)] = [conv(x) for x in rng.choice(n_items, size=min(length, n_items), replace=False)]
        if rng.random() < 0.8:  # some users have no relevant item
            n_rel = int(rng.integers(0, n_items // 2 + 1))
            relevant[uconv(u)] = {conv(x) for x in rng.choice(n_items, size=n_rel, replace=False)}
    if not any(relevant.values()):
        relevant[uconv(0)] = {conv(0)}
    return lists, relevant, width


def assert_close(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), key


# ============================================================ prediction metrics
@pytest.mark.parametrize("seed", SEEDS)
def test_prediction_metrics_match_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    y = rng.uniform(1, 5, n)
    p = y + rng.normal(0, 1, n)
    assert rmse(y, p) == pytest.approx(ref_rmse(y.tolist(), p.tolist()), rel=1e-12)
    assert mae(y, p) == pytest.approx(ref_mae(y.tolist(), p.tolist()), rel=1e-12)
    t = rng.integers(0, 2, n)
    t[0], t[1] = 0, 1
    prob = np.round(rng.random(n), 1)  # rounding creates ties and values at the threshold
    tl, pl = t.tolist(), prob.tolist()
    assert accuracy(t, prob) == pytest.approx(ref_accuracy(tl, pl))
    assert accuracy(t, prob, threshold=0.3) == pytest.approx(ref_accuracy(tl, pl, 0.3))
    assert f1(t, prob) == pytest.approx(ref_f1(tl, pl))
    assert f1(t, prob, threshold=0.7) == pytest.approx(ref_f1(tl, pl, 0.7))
    assert log_loss(t, prob) == pytest.approx(ref_log_loss(tl, pl), rel=1e-12)
    assert roc_auc(t, prob) == pytest.approx(ref_auc(tl, pl), rel=1e-12)
    got = prediction_metrics(t, prob, "binary")
    assert got == {
        "accuracy": accuracy(t, prob),
        "log_loss": log_loss(t, prob),
        "f1": f1(t, prob),
        "roc_auc": roc_auc(t, prob),
    }
    assert prediction_metrics(y, p, "regression") == {"rmse": rmse(y, p), "mae": mae(y, p)}


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.integers(-5, 5)),  # few distinct scores: many ties
        min_size=2,
        max_size=60,
    )
)
def test_roc_auc_pairwise_property(rows: list[tuple[int, int]]) -> None:
    t = [a for a, _ in rows]
    s = [float(b) for _, b in rows]
    if len(set(t)) < 2:
        with pytest.raises(DataError, match="one class"):
            roc_auc(t, s)
        return
    assert roc_auc(t, s) == pytest.approx(ref_auc(t, s), rel=1e-12, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.floats(0, 1, allow_nan=False)),
        min_size=1,
        max_size=50,
    ),
    st.floats(0.05, 0.95),
)
def test_binary_metrics_property(rows: list[tuple[int, float]], thr: float) -> None:
    t = [a for a, _ in rows]
    p = [b for _, b in rows]
    assert accuracy(t, p, thr) == pytest.approx(ref_accuracy(t, p, thr))
    assert f1(t, p, thr) == pytest.approx(ref_f1(t, p, thr))
    assert log_loss(t, p) == pytest.approx(ref_log_loss(t, p), rel=1e-9)


def test_prediction_known_values() -> None:
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)
    assert accuracy([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.5]) == 0.5  # 0.5 predicts 1
    assert f1([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.5]) == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # perfect ranking, reversed ranking, all tied
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    # 1 pos (0.5) vs negs (0.5 tie, 0.2 below): (0.5 + 1) / 2
    assert roc_auc([1, 0, 0], [0.5, 0.5, 0.2]) == pytest.approx(0.75)
    # logits work too: AUC only depends on order
    assert roc_auc([0, 1, 1], [-3.0, 2.0, 7.0]) == 1.0
    # f1 without any positive (true or predicted) is 0
    assert f1([0, 0], [0.1, 0.2]) == 0.0


def test_log_loss_clips_float32_extremes() -> None:
    p = np.array([1.0, 0.0], dtype=np.float32)
    got = log_loss([0, 1], p)
    assert math.isfinite(got)
    assert got == pytest.approx(ref_log_loss([0, 1], [1.0, 0.0]), rel=1e-9)
    assert got == pytest.approx(-math.log(1e-15), rel=1e-4)  # up to the rounding of 1 - 1e-15
    assert log_loss([1, 0], p) == pytest.approx(-math.log(1 - 1e-15), abs=1e-12)


def test_prediction_errors() -> None:
    with pytest.raises(DataError, match="one class"):
        roc_auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataError):
        rmse([1, 2], [1.0])
    with pytest.raises(DataError):
        mae([], [])
    with pytest.raises(DataError):
        rmse([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(DataError, match="0 or 1"):
        accuracy([0, 2], [0.1, 0.2])
    with pytest.raises(DataError, match="logits"):
        log_loss([0, 1], [-2.0, 3.0])
    with pytest.raises(ConfigError):
        prediction_metrics([1.0], [1.0], "ranking")  # type: ignore[arg-type]
    # one class: the other binary metrics still come back, AUC is NaN
    out = prediction_metrics([1, 1], [0.7, 0.2], "binary")
    assert out["accuracy"] == 0.5 and math.isnan(out["roc_auc"])


# =============================================================== ranking: random
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("string_ids", [False, True])
def test_ranking_matches_reference_random(seed: int, string_ids: bool) -> None:
    lists, relevant, width = random_case(seed, string_ids)
    ks = sorted({1, max(1, width // 2), width})
    topk = make_topk(lists, width, string_ids)
    want = ref_ranking(lists, relevant, ks)
    assert_close(ranking_metrics(topk, relevant_frame(relevant), k=ks), want)


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_ranking_batches_and_binary_search_path(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    lists, relevant, width = random_case(seed)
    ks = [width]
    want = ref_ranking(lists, relevant, ks)
    full = make_topk(lists, width)
    # several batches, different widths, streamed from a generator
    users = list(lists)
    parts = [
        make_topk({u: lists[u] for u in users[:3]}, width),
        make_topk({u: lists[u] for u in users[3:10]}, width + 4),
        make_topk({}, width),
        make_topk({u: lists[u] for u in users[10:]}, width + 1),
    ]
    frame = relevant_frame(relevant)
    assert_close(ranking_metrics((p for p in parts), frame, k=ks), want)
    # tiny chunks, and the large-catalogue fallback (binary search of all keys)
    monkeypatch.setattr(ev, "_CHUNK_CELLS", 7)
    assert_close(ranking_metrics(full, frame, k=ks), want)
    monkeypatch.setattr(ev, "_BITMAP_CELLS", 1)
    assert_close(ranking_metrics(full, frame, k=ks), want)


@st.composite
def ranking_cases(draw: Any) -> tuple[dict[int, list[int]], dict[int, set[int]], int, int]:
    n_items = draw(st.integers(1, 12))
    width = draw(st.integers(1, 8))
    k = draw(st.integers(1, width))
    users = draw(st.lists(st.integers(-3, 20), min_size=1, max_size=12, unique=True))
    item = st.integers(-1, n_items)  # -1 may be a real item id
    lists = {}
    relevant = {}
    for u in users:
        if draw(st.booleans()):
            # lists may repeat an item; the repeat never counts twice
            lists[u] = draw(st.lists(item, max_size=width))
        rel = draw(st.sets(item, max_size=n_items))
        if rel:
            relevant[u] = rel
    if not relevant:
        relevant[users[0]] = {0}
    return lists, relevant, width, k


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ranking_cases())
def test_ranking_property(case: tuple[dict[int, list[int]], dict[int, set[int]], int, int]) -> None:
    lists, relevant, width, k = case
    topk = make_topk(lists, width)
    want = ref_ranking(lists, relevant, [k])
    assert_close(ranking_metrics(topk, relevant_frame(relevant), k=k), want)


# ========================================================= ranking: known values
def test_ndcg_map_mrr_known_values() -> None:
    # hits at ranks 1 and 3, |T| = 2
    topk = make_topk({1: [10, 11, 12, 13]}, 4)
    rel = pd.DataFrame({"user_id": [1, 1], "item_id": [10, 12]})
    out = ranking_metrics(topk, rel, k=[3, 4])
    assert out["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert out["map@3"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert out["precision@3"] == pytest.approx(2 / 3)
    assert out["precision@4"] == pytest.approx(2 / 4)
    assert out["recall@3"] == 1.0
    assert out["mrr@3"] == 1.0
    assert out["hit_rate@3"] == 1.0
    # first hit at rank 2
    out = ranking_metrics(make_topk({1: [11, 10]}, 2), rel, k=2)
    assert out["mrr@2"] == 0.5
    assert out["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert out["map@2"] == pytest.approx((1 / 2) / 2)


def test_map_denominator_is_min_of_relevant_and_k() -> None:
    # |T| = 5 > k = 2, both top-2 hit: MAP = (1/1 + 2/2) / min(5, 2) = 1 (not 2/5)
    topk = make_topk({1: [1, 2, 3]}, 3)
    rel = pd.DataFrame({"user_id": [1] * 5, "item_id": [1, 2, 3, 4, 5]})
    out = ranking_metrics(topk, rel, k=2)
    assert out["map@2"] == 1.0
    assert out["ndcg@2"] == 1.0
    assert out["recall@2"] == pytest.approx(2 / 5)


def test_no_hits_and_all_hits() -> None:
    rel = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 6, 7]})
    none = ranking_metrics(make_topk({1: [1, 2], 2: [3, 4]}, 2), rel, k=2)
    assert all(none[f"{m}@2"] == 0.0 for m in METRICS)
    all_hit = ranking_metrics(make_topk({1: [5, 6], 2: [7, 1]}, 2), rel, k=[1, 2])
    assert all_hit["precision@1"] == 1.0 and all_hit["ndcg@1"] == 1.0 and all_hit["map@1"] == 1.0
    assert all_hit["precision@2"] == pytest.approx((1 + 0.5) / 2)
    # fewer relevant than k: user 2 has 1 relevant item at rank 1 -> ideal
    assert all_hit["ndcg@2"] == 1.0 and all_hit["map@2"] == 1.0 and all_hit["recall@2"] == 1.0


def test_padding_never_hits_even_when_minus_one_is_an_item() -> None:
    # item -1 is relevant; the row holds one real item and padding (-1, -inf)
    topk = TopK(
        np.array([1]),
        np.array([[7, -1, -1]], dtype=np.int64),
        np.array([[1.0, -np.inf, -np.inf]], dtype=np.float32),
    )
    rel = pd.DataFrame({"user_id": [1, 1], "item_id": [-1, 8]})
    out = ranking_metrics(topk, rel, k=3)
    assert out["hit_rate@3"] == 0.0
    # ... but a real -1 item (finite score) does count
    topk2 = TopK(np.array([1]), np.array([[7, -1]], dtype=np.int64), np.array([[2.0, 1.0]], dtype=np.float32))
    assert ranking_metrics(topk2, rel, k=2)["precision@2"] == 0.5


def test_string_ids_with_none_padding() -> None:
    topk = make_topk({"alice": ["a", "b"], "bob": ["c"]}, 3, string_ids=True)
    assert topk.item_ids[1, 1] is None
    rel = pd.DataFrame({"user_id": ["alice", "bob", "bob"], "item_id": ["b", "c", "None"]})
    out = ranking_metrics(topk, rel, k=3)
    assert out["hit_rate@3"] == 1.0
    assert out["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert out["mrr@3"] == pytest.approx((1 / 2 + 1) / 2)


def test_integer_and_text_ids_meet_as_text() -> None:
    topk = make_topk({1: [10, 11]}, 2)
    rel = pd.DataFrame({"user_id": ["1"], "item_id": ["11"]})
    assert ranking_metrics(topk, rel, k=2)["mrr@2"] == 0.5


def test_users_missing_lists_count_as_zero() -> None:
    rel = pd.DataFrame({"user_id": [1, 2, 3, 9], "item_id": [5, 5, 5, 5]})
    # user 4 has a list but nothing relevant: ignored
    topk = make_topk({1: [5], 2: [5], 4: [5]}, 1)
    out = ranking_metrics(topk, rel, k=1)
    assert out["n_users_evaluated"] == 4
    assert out["n_users_missing_list"] == 2
    assert out["precision@1"] == 0.5
    # no lists at all
    out = ranking_metrics([], rel, k=1)
    assert out["precision@1"] == 0.0 and out["n_users_missing_list"] == 4


def test_min_rating_filter_frame_and_interactions() -> None:
    df = pd.DataFrame(
        {"user_id": [1, 1, 2, 2, 3], "item_id": [10, 11, 10, 12, 13], "rating": [5.0, 2.0, 4.0, 3.0, 1.0]}
    )
    lists = {1: [11, 10], 2: [12, 10], 3: [13, 10]}
    topk = make_topk(lists, 2)
    want_all = ref_ranking(lists, {1: {10, 11}, 2: {10, 12}, 3: {13}}, [2])
    want_4 = ref_ranking(lists, {1: {10}, 2: {10}}, [2])
    inter = Interactions.from_frame(df)
    assert_close(ranking_metrics(topk, df, k=2), want_all)
    assert_close(ranking_metrics(topk, inter, k=2), want_all)
    assert_close(ranking_metrics(topk, df, k=2, min_rating=4), want_4)
    assert_close(ranking_metrics(topk, inter, k=2, min_rating=4), want_4)
    assert ranking_metrics(topk, df, k=2, min_rating=4)["n_users_evaluated"] == 2


def test_interactions_with_string_ids_and_subset_maps() -> None:
    df = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "item_id": ["x", "y", "z"], "rating": [1.0, 1.0, 1.0]})
    inter = Interactions.from_frame(df).subset(np.array([True, True, False]))
    topk = make_topk({"u1": ["x", "y"], "u2": ["x", "y"], "u3": ["z"]}, 2, string_ids=True)
    out = ranking_metrics(topk, inter, k=2, metrics=("mrr",))
    assert out == {"mrr@2": 0.75, "n_users_evaluated": 2, "n_users_missing_list": 0}


def test_duplicate_relevant_rows_count_once() -> None:
    rel = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [5, 5, 6]})
    out = ranking_metrics(make_topk({1: [5, 6]}, 2), rel, k=2)
    assert out["recall@2"] == 1.0 and out["precision@2"] == 1.0


def test_ranking_errors() -> None:
    topk = make_topk({1: [1, 2]}, 2)
    rel = pd.DataFrame({"user_id": [1], "item_id": [1]})
    with pytest.raises(ConfigError, match="width"):
        ranking_metrics(topk, rel, k=3)
    with pytest.raises(ConfigError):
        ranking_metrics(topk, rel, k=0)
    with pytest.raises(ConfigError):
        ranking_metrics(topk, rel, k=[])
    with pytest.raises(ConfigError, match="unknown"):
        ranking_metrics(topk, rel, k=1, metrics=("auc",))
    with pytest.raises(ConfigError, match="rating"):
        ranking_metrics(topk, rel, k=1, min_rating=4)
    implicit = Interactions.from_frame(rel, rating_col=None)
    with pytest.raises(ConfigError, match="no ratings"):
        ranking_metrics(topk, implicit, k=1, min_rating=4)
    with pytest.raises(DataError, match="no user"):
        ranking_metrics(topk, rel.iloc[:0], k=1)
    with pytest.raises(DataError, match="item_id"):
        ranking_metrics(topk, rel.rename(columns={"item_id": "movie"}), k=1)
    with pytest.raises(DataError, match="more than one"):
        ranking_metrics([topk, topk], rel, k=1)
    with pytest.raises(DataError, match="more than one"):
        ranking_metrics(TopK.concat([topk, topk]), rel, k=1)
    with pytest.raises(ConfigError):
        ranking_metrics(topk, rel.to_numpy(), k=1)  # type: ignore[arg-type]


def test_ranking_key_order() -> None:
    topk = make_topk({1: [1, 2, 3]}, 3)
    rel = pd.DataFrame({"user_id": [1], "item_id": [2]})
    out = ranking_metrics(topk, rel, k=[3, 1], metrics=("ndcg", "precision"))
    assert list(out) == ["ndcg@3", "ndcg@1", "precision@3", "precision@1", "n_users_evaluated", "n_users_missing_list"]
    assert list(ranking_metrics(topk, rel, k=2, metrics="mrr")) == ["mrr@2", "n_users_evaluated", "n_users_missing_list"]


def test_ranking_scale_is_vectorised() -> None:
    """200k users x k=100 (20M cells) in well under the suite's time budget."""
    rng = np.random.default_rng(0)
    n_users, n_items, k = 200_000, 5_000, 100
    users = np.arange(n_users, dtype=np.int64)
    items = rng.integers(0, n_items, size=(n_users, k))
    scores = np.broadcast_to(np.arange(k, 0, -1, dtype=np.float32), (n_users, k)).copy()
    rel_items = rng.integers(0, n_items, size=(n_users, 2))
    rel_items[:, 0] = items[:, 4]  # a guaranteed hit at rank 5
    rel = pd.DataFrame({"user_id": np.repeat(users, 2), "item_id": rel_items.ravel()})
    out = ranking_metrics(TopK(users, items, scores), rel, k=[10, 100])
    assert out["n_users_evaluated"] == n_users
    assert out["hit_rate@10"] == 1.0
    assert out["mrr@10"] >= 0.2


# ====================================================================== baseline
def ref_popularity(train_rows: list[tuple[Any, Any]], users: list[Any], k: int, exclude: bool) -> list[list[Any]]:
    count: dict[Any, int] = {}
    first: dict[Any, int] = {}
    for pos, (_, i) in enumerate(train_rows):
        count[i] = count.get(i, 0) + 1
        first.setdefault(i, pos)
    ranked = sorted(count, key=lambda i: (-count[i], first[i]))
    out = []
    for u in users:
        seen = {i for uu, i in train_rows if uu == u} if exclude else set()
        out.append([i for i in ranked if i not in seen][:k])
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("exclude", [True, False])
def test_popularity_topk_matches_reference(seed: int, exclude: bool) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items = int(rng.integers(1, 30)), int(rng.integers(1, 15))
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, n_users, 80), rng.integers(0, n_items, 80) * 10)}
    rows = sorted(pairs, key=lambda p: rng.random())
    df = pd.DataFrame(rows, columns=["user_id", "item_id"])
    train = Interactions.from_frame(df, rating_col=None)
    users = list(range(-1, n_users + 1))  # includes unknown users
    k = int(rng.integers(1, n_items + 3))
    topk = popularity_topk(train, users, k, exclude_seen=exclude)
    want = ref_popularity(rows, users, k, exclude)
    assert topk.item_ids.shape == (len(users), k)
    assert topk.item_ids.dtype == np.int64
    for r, (uid, got_items, got_scores) in enumerate(topk.rows()):
        assert uid == users[r]
        assert got_items.tolist() == want[r]
        counts = df["item_id"].value_counts()
        assert got_scores.tolist() == [float(counts[i]) for i in want[r]]
    pad = ~np.isfinite(topk.scores)
    assert np.all(topk.item_ids[pad] == -1)


def test_popularity_topk_string_ids_and_padding() -> None:
    df = pd.DataFrame(
        {"user_id": ["a", "a", "b", "c", "c"], "item_id": ["x", "y", "y", "y", "z"], "rating": [5, 1, 3, 4, 2]}
    )
    train = Interactions.from_frame(df)
    topk = popularity_topk(train, ["a", "b", "zz"], 3)
    assert topk.item_ids.dtype == object
    assert topk.item_ids.tolist() == [["z", None, None], ["x", "z", None], ["y", "x", "z"]]
    assert topk.scores[0].tolist() == [1.0, -np.inf, -np.inf]
    assert topk.counts.tolist() == [1, 2, 3]
    assert topk.user_ids.tolist() == ["a", "b", "zz"]
    with pytest.raises(ConfigError):
        popularity_topk(train, ["a"], 0)


def test_popularity_topk_feeds_ranking_metrics() -> None:
    train = pd.DataFrame({"user_id": [1, 1, 2, 3], "item_id": [10, 11, 10, 10]})
    test = pd.DataFrame({"user_id": [2, 3], "item_id": [11, 12]})
    tr = Interactions.from_frame(train, rating_col=None)
    topk = popularity_topk(tr, [1, 2, 3], 2)
    out = ranking_metrics(topk, test, k=2)
    # user 2: [11], hit at 1; user 3: [11], no hit
    assert out["hit_rate@2"] == 0.5
    assert out["precision@2"] == pytest.approx(0.25)


@pytest.mark.movielens
def test_popularity_baseline_reproduces_published_ua_number(ml100k: Any) -> None:
    """BENCHMARKS.md §C: most-popular on ua, train items excluded, all test rows relevant: P@10 0.1215."""
    cols = ["user_id", "item_id", "rating", "timestamp"]
    train = pd.read_csv(ml100k / "ua.base", sep="\t", names=cols)
    test = pd.read_csv(ml100k / "ua.test", sep="\t", names=cols)
    topk = popularity_topk(Interactions.from_frame(train), np.unique(test["user_id"]), 10)
    out = ranking_metrics(topk, test, k=10)
    assert out["precision@10"] == pytest.approx(0.1215, abs=5e-5)
    assert out["n_users_evaluated"] == 943 and out["n_users_missing_list"] == 0
