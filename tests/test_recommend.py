"""recommend_all: exact against model scores for every pair, exclusions, contracts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fmrec.data import Interactions
from fmrec.data.synthetic import load_builtin
from fmrec.export import export_vectors
from fmrec.model import FactorizationMachine
from fmrec.recommend import recommend, recommend_all
from fmrec.topk import TopK

from reference import assert_topk_equivalent


@pytest.fixture(scope="module")
def builtin_model():
    data = load_builtin()
    fm = FactorizationMachine(task="binary", n_factors=16, n_epochs=3, random_state=0).fit(data)
    return fm, data.to_csr(binary=True)


@pytest.fixture(scope="module")
def ua_model(ml100k):
    cols = ["user_id", "item_id", "rating", "ts"]
    train = Interactions.from_frame(pd.read_csv(ml100k / "ua.base", sep="\t", names=cols))
    fm = FactorizationMachine(task="binary", n_factors=64, n_epochs=20, random_state=0).fit(train)
    return fm, train.to_csr(binary=True)


def all_pair_scores(fm) -> np.ndarray:
    """model.decision_function over every (user, item) pair: the ground truth."""
    enc = fm.encoder_
    u = np.repeat(np.arange(enc.n_users), enc.n_items)
    i = np.tile(np.arange(enc.n_items), enc.n_users)
    return fm._raw(enc.transform_indices(u, i)).reshape(enc.n_users, enc.n_items)


def check_exact(fm, seen, index: str, exclude_seen: bool, k: int = 100) -> None:
    truth = all_pair_scores(fm)
    enc = fm.encoder_
    tk = TopK.concat(list(recommend_all(fm, k, seen=seen, exclude_seen=exclude_seen, index=index,
                                        include_untrained_items=True, batch_size=300)))
    assert tk.user_ids.tolist() == enc.user_map.ids.tolist()
    pos = np.where(tk.item_ids >= 0, enc.item_map.to_index(tk.item_ids.ravel()).reshape(tk.item_ids.shape), -1)
    for r in range(len(tk)):
        excl = set(seen.indices[seen.indptr[r]:seen.indptr[r + 1]].tolist()) if exclude_seen else set()
        # reported scores are true FM scores, to 1e-4 relative
        assert_topk_equivalent(pos[r], tk.scores[r].astype(np.float64), truth[r], k, excl, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("index", ["exact", "flat"])
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_builtin_lists_equal_model_scores(builtin_model, index, exclude_seen) -> None:
    fm, seen = builtin_model
    check_exact(fm, seen, index, exclude_seen)


@pytest.mark.movielens
@pytest.mark.parametrize("index", ["exact", "flat"])
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_movielens_ua_lists_equal_model_scores(ua_model, index, exclude_seen) -> None:
    fm, seen = ua_model
    check_exact(fm, seen, index, exclude_seen)


def test_contract_best_first_k_items_no_seen(builtin_model) -> None:
    fm, seen = builtin_model
    tk = TopK.concat(list(recommend_all(fm, 50, seen=seen)))
    assert tk.item_ids.dtype == np.int64 and tk.scores.dtype == np.float32
    assert np.all(np.diff(tk.scores, axis=1) <= 0)
    enc = fm.encoder_
    trained = np.bincount(seen.indices, minlength=enc.n_items) > 0
    for r in range(len(tk)):
        seen_ext = set(enc.item_map.ids[seen.indices[seen.indptr[r]:seen.indptr[r + 1]]].tolist())
        n_cand = int(trained.sum()) - len(seen_ext)
        assert tk.counts[r] == min(50, n_cand)
        assert not (set(tk.item_ids[r].tolist()) & seen_ext)


def test_batch_equals_single_user(builtin_model) -> None:
    fm, seen = builtin_model
    whole = TopK.concat(list(recommend_all(fm, 20, seen=seen, batch_size=97)))
    for r in (0, 5, len(whole) - 1):
        one = recommend(fm, whole.user_ids[r], k=20, seen=seen)
        np.testing.assert_array_equal(one.item_ids[0], whole.item_ids[r])
        np.testing.assert_allclose(one.scores[0], whole.scores[r], rtol=1e-6)


def test_exclusions_global_and_per_user(builtin_model) -> None:
    fm, seen = builtin_model
    base = TopK.concat(list(recommend_all(fm, 10, seen=seen, users=[1, 2, 3])))
    banned = base.item_ids[:, 0].tolist()  # every user's favourite
    tk = TopK.concat(list(recommend_all(fm, 10, seen=seen, users=[1, 2, 3], exclude_items=banned)))
    assert not (set(tk.item_ids.ravel().tolist()) & set(banned))
    per_user = {1: base.item_ids[0, :5].tolist()}
    tk2 = TopK.concat(list(recommend_all(fm, 10, seen=seen, users=[1, 2, 3], exclude_per_user=per_user)))
    assert not (set(tk2.item_ids[0].tolist()) & set(per_user[1]))
    np.testing.assert_array_equal(tk2.item_ids[1:], base.item_ids[1:])
    assert tk2.item_ids[0, :5].tolist() == base.item_ids[0, 5:].tolist()


def test_untrained_items_excluded_by_default_and_string_ids() -> None:
    df = pd.DataFrame({"user_id": ["ann", "ann", "bob", "bob", "cy"],
                       "item_id": ["x", "y", "y", "z", "x"], "rating": [5, 3, 4, 2, 1]})
    train = Interactions.from_frame(df.iloc[:4])  # item x of cy exists only in the map below
    full_map = train.item_map.extend(["w"])
    train = Interactions(train.user_idx, train.item_idx, train.rating, train.user_map, full_map)
    fm = FactorizationMachine(n_factors=2, n_epochs=2, random_state=0).fit(train)
    seen = train.to_csr(binary=True)
    tk = TopK.concat(list(recommend_all(fm, 5, seen=seen, exclude_seen=False)))
    assert tk.item_ids.dtype == object
    assert "w" not in set(tk.item_ids.ravel().tolist())
    assert tk.item_ids[0, 3] is None and np.isneginf(tk.scores[0, 3])
    tk_all = TopK.concat(list(recommend_all(fm, 5, seen=seen, exclude_seen=False, include_untrained_items=True)))
    assert "w" in set(tk_all.item_ids[0].tolist())


def test_export_vectors_are_exact(builtin_model) -> None:
    fm, _ = builtin_model
    uv, iv = export_vectors(fm)
    truth = all_pair_scores(fm)
    got = uv.vectors.astype(np.float64) @ iv.vectors.astype(np.float64).T + uv.constants[:, None]
    np.testing.assert_allclose(got, truth, rtol=1e-5, atol=1e-5)
    assert np.all(uv.vectors[:, -1] == 1.0)
