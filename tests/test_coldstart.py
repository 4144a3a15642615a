"""Cold-start evaluation (fmrec.coldstart, `fmrec evaluate-cold-start`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fmrec.coldstart import cold_start_split, evaluate_cold_start, feature_popularity_topk
from fmrec.data import Interactions
from fmrec.data.features import FeatureTable
from fmrec.errors import ConfigError, DataError
from fmrec.model import FactorizationMachine


def genre_world(seed: int = 0, n_users: int = 60, n_items: int = 50):
    """Users of taste A like A items, users of taste B like B items; the genre and
    the user's taste are the features, so cold items and cold users are predictable."""
    rng = np.random.default_rng(seed)
    item_genre = np.where(np.arange(n_items) % 2 == 0, "A", "B")
    user_taste = np.where(np.arange(n_users) % 2 == 0, "A", "B")
    rows = [(u, i) for u in range(n_users) for i in range(n_items)
            if item_genre[i] == user_taste[u] and rng.random() < 0.5]
    data = Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id"]))
    items = FeatureTable.from_frame(pd.DataFrame({"item_id": range(n_items), "genre": item_genre}), "item_id",
                                    {"genre": "categorical"})
    users = FeatureTable.from_frame(pd.DataFrame({"user_id": range(n_users), "taste": user_taste}), "user_id",
                                    {"taste": "categorical"})
    return data, users, items


@pytest.mark.parametrize("hold_out", ["items", "users"])
def test_split_holds_out_every_interaction_of_the_drawn_entities(hold_out: str) -> None:
    data, _, _ = genre_world()
    train, test, held = cold_start_split(data, hold_out, 0.2, random_state=1)
    col = "item_id" if hold_out == "items" else "user_id"
    n_all = data.n_items if hold_out == "items" else data.n_users
    assert len(held) == round(0.2 * n_all)
    assert set(test[col]) <= set(held.tolist())
    frame = train.to_frame()
    assert not set(frame[col]) & set(held.tolist())
    assert len(frame) + len(test) == len(data)
    again = cold_start_split(data, hold_out, 0.2, random_state=1)[2]
    assert np.array_equal(np.sort(again), np.sort(held))


def test_split_errors() -> None:
    data, _, _ = genre_world()
    with pytest.raises(ConfigError, match="hold_out"):
        cold_start_split(data, "pairs")
    with pytest.raises(ConfigError, match="fraction"):
        cold_start_split(data, "items", 1.5)
    tiny = Interactions.from_frame(pd.DataFrame({"user_id": [1, 2], "item_id": [1, 1]}))
    with pytest.raises(DataError, match="leaves none"):
        cold_start_split(tiny, "items", 0.2)


def test_feature_popularity_ranks_new_items_by_the_popularity_of_their_features() -> None:
    # warm items 0, 1 (genre A) have 3 and 1 rows; warm item 2 (genre B) has 1 row
    train = Interactions.from_frame(pd.DataFrame({"user_id": [1, 2, 3, 1, 2], "item_id": [0, 0, 0, 1, 2]}))
    items = FeatureTable.from_frame(pd.DataFrame({"item_id": [0, 1, 2, 10, 11, 12],
                                                  "genre": ["A", "A", "B", "B", "A", "C"]}),
                                    "item_id", {"genre": "categorical"})
    tk = feature_popularity_topk(train, items, np.array([10, 11, 12]), np.array([7, 8]), 3)
    # A: mean popularity (3 + 1) / 2 = 2; B: 1; C: no warm item -> 0
    assert tk.item_ids.tolist() == [[11, 10, 12], [11, 10, 12]]
    np.testing.assert_allclose(tk.scores[0], [2.0, 1.0, 0.0])
    padded = feature_popularity_topk(train, items, np.array([10]), np.array([7]), 2)
    assert padded.item_ids.tolist() == [[10, -1]] and padded.scores[0, 1] == -np.inf


@pytest.mark.parametrize("hold_out", ["items", "users"])
def test_cold_start_lists_use_the_features(hold_out: str) -> None:
    data, users, items = genre_world()
    model = FactorizationMachine(task="ranking", loss="warp", n_factors=4, n_epochs=30, random_state=0)
    res = evaluate_cold_start(model, data, hold_out, user_features=users, item_features=items, k=5,
                              fraction=0.2, random_state=0)
    assert res["n_held"] == round(0.2 * (data.n_items if hold_out == "items" else data.n_users))
    # tastes are predictable from the features, popularity ignores them: for about half the
    # users its list holds the wrong genre, the model's should not
    assert res["ratio"] > 1.3, res
    assert res["model"]["hit_rate@5"] > 0.9
    assert set(res["model"]) == set(res["baseline"])


def test_cold_start_needs_features() -> None:
    data, users, items = genre_world()
    with pytest.raises(ConfigError, match="item features"):
        evaluate_cold_start(FactorizationMachine(task="ranking"), data, "items", user_features=users)
    with pytest.raises(ConfigError, match="user features"):
        evaluate_cold_start(FactorizationMachine(task="ranking"), data, "users", item_features=items)


def test_cli_evaluate_cold_start(tmp_path, capsys) -> None:
    from fmrec.cli.main import main

    data, users, items = genre_world(1)
    data.to_frame().to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame({"item_id": range(50), "genre": np.where(np.arange(50) % 2 == 0, "A", "B")}).to_csv(
        tmp_path / "items.csv", index=False)
    rc = main(["-q", "evaluate-cold-start", str(tmp_path / "d.csv"), "--hold-out", "items", "--factors", "4",
               "--epochs", "20", "--loss", "warp", "--item-features", str(tmp_path / "items.csv"), "--k", "5",
               "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "held out 10 items" in out and "precision@5" in out and "x the baseline" in out
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["hold_out"] == "items" and 0 <= saved["model"]["precision@5"] <= 1
    assert main(["evaluate-cold-start", str(tmp_path / "d.csv"), "--hold-out", "users"]) == 1
    assert "user features" in capsys.readouterr().err
