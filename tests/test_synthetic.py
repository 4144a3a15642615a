"""Tests for the built-in generated data set."""

from __future__ import annotations

import hashlib
import re
import time

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from fmrec.data import Interactions, builtin_split, load_builtin
from fmrec.data.synthetic import N_ITEMS, N_RATINGS, N_USERS
from fmrec.errors import ConfigError


@pytest.fixture(scope="module")
def builtin() -> Interactions:
    return load_builtin()


def digest(x: Interactions) -> str:
    h = hashlib.sha256()
    for arr in (x.user_idx, x.item_idx, x.rating, x.timestamp, x.user_map.ids, x.item_map.ids):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update("\n".join(x.item_names.values()).encode())  # type: ignore[union-attr]
    return h.hexdigest()


def test_shape_and_ids(builtin: Interactions) -> None:
    x = builtin
    assert (len(x), x.n_users, x.n_items) == (N_RATINGS, N_USERS, N_ITEMS) == (100_000, 943, 1682)
    assert x.user_map.ids.tolist() == list(range(1, 944))
    assert x.item_map.ids.tolist() == list(range(1, 1683))
    assert np.bincount(x.user_idx, minlength=943).min() >= 20
    assert np.bincount(x.item_idx, minlength=1682).min() >= 1
    assert not pd.DataFrame({"u": x.user_idx, "i": x.item_idx}).duplicated().any()


def test_ratings(builtin: Interactions) -> None:
    r = builtin.rating
    assert r is not None and r.dtype == np.float32
    assert set(np.unique(r).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 3.3 < float(r.mean()) < 3.8  # MovieLens-like (ml-100k: 3.53)


def test_timestamps_increase(builtin: Interactions) -> None:
    t = builtin.timestamp
    assert t is not None and t.dtype == np.int64
    assert np.all(np.diff(t) > 0)


def test_popularity_and_activity_skew(builtin: Interactions) -> None:
    per_item = np.sort(np.bincount(builtin.item_idx))[::-1]
    per_user = np.bincount(builtin.user_idx)
    # the top 10% of items get a large share of the ratings
    assert per_item[: N_ITEMS // 10].sum() > 0.3 * N_RATINGS
    assert per_user.max() > 5 * np.median(per_user) / 2


def test_planted_structure_is_learnable(builtin: Interactions) -> None:
    """A rank-8 truncated SVD of the centred rating matrix tracks the ratings (planted low rank)."""
    x = builtin
    r = x.rating.astype(np.float64)
    m = sp.csr_matrix((r - r.mean(), (x.user_idx, x.item_idx)), shape=(x.n_users, x.n_items))
    u, s, vt = spla.svds(m, k=8, random_state=0)
    pred = np.einsum("nk,nk->n", (u * s)[x.user_idx], vt.T[x.item_idx])
    assert np.corrcoef(pred, r - r.mean())[0, 1] > 0.5


def test_item_names(builtin: Interactions) -> None:
    names = builtin.item_names
    assert names is not None and set(names) == set(range(1, 1683))
    assert len(set(names.values())) == 1682
    assert all(re.fullmatch(r".+ \((19|20)\d\d\)", t) for t in names.values())


def test_deterministic_and_seed_dependent(builtin: Interactions) -> None:
    assert digest(load_builtin(0)) == digest(builtin)
    assert digest(load_builtin(1)) != digest(builtin)


def test_fast() -> None:
    t = time.perf_counter()
    load_builtin(3)
    assert time.perf_counter() - t < 1.0


def test_bad_seed() -> None:
    with pytest.raises(ConfigError):
        load_builtin(-1)


def test_split(builtin: Interactions) -> None:
    train, test = builtin_split(builtin)
    assert len(train) + len(test) == len(builtin)
    assert np.bincount(test.user_idx, minlength=943).tolist() == [10] * 943
    assert train.user_map is builtin.user_map and test.item_map is builtin.item_map
    key = lambda x: set(zip(x.user_idx.tolist(), x.item_idx.tolist()))  # noqa: E731
    assert not key(train) & key(test)
    assert key(train) | key(test) == key(builtin)
    again = builtin_split(builtin)[1]
    assert np.array_equal(again.item_idx, test.item_idx)
    other = builtin_split(builtin, seed=1)[1]
    assert not np.array_equal(other.item_idx, test.item_idx)


def test_split_small_users() -> None:
    x = Interactions.from_frame(pd.DataFrame({"user_id": [1, 1, 1, 2], "item_id": [1, 2, 3, 1], "rating": 1.0}))
    train, test = builtin_split(x, test_per_user=2)
    assert np.bincount(test.user_idx, minlength=2).tolist() == [2, 0]  # user 2 keeps its only rating
    assert np.bincount(train.user_idx, minlength=2).tolist() == [1, 1]
    with pytest.raises(ConfigError):
        builtin_split(x, test_per_user=0)
