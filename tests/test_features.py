"""Side features: encoding rules, MovieLens tables, exact export with features, cold start."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fmrec.data import Interactions
from fmrec.data.features import FeatureEncoder, FeatureTable, parse_roles, read_feature_table
from fmrec.errors import ConfigError, DataError
from fmrec.export import export_vectors, side_terms
from fmrec.model import FactorizationMachine, load_model, save_model
from fmrec.recommend import recommend_all
from fmrec.topk import TopK

from reference import assert_topk_equivalent, fm_score_naive


def user_table(ids=(1, 2, 3, 4, 5, 6)) -> FeatureTable:
    rng = np.random.default_rng(0)
    n = len(ids)
    df = pd.DataFrame({
        "user_id": list(ids),
        "gender": rng.choice(["F", "M"], n),                     # categorical
        "age": rng.integers(15, 70, n).astype(float),             # numeric (standardised)
        "tags": [["a|b", "b|c|d", "a", "", "c|a", "d"][r % 6] for r in range(n)],  # multi
    })
    return FeatureTable.from_frame(df, "user_id", {"gender": "categorical", "age": "numeric", "tags": "multi"})


def item_table(ids=tuple(range(10, 22))) -> FeatureTable:
    rng = np.random.default_rng(1)
    n = len(ids)
    df = pd.DataFrame({
        "item_id": list(ids),
        "genres": [rng.choice(["Drama|Comedy", "Action", "Comedy|Romance|Drama", "Horror"]) for _ in range(n)],
        "year": [f"01-Jan-{y}" for y in rng.integers(1950, 2000, n)],   # year -> bins
        "price": rng.normal(10, 3, n),                                   # numeric
    })
    return FeatureTable.from_frame(df, "item_id", {"genres": "multi", "year": "year", "price": "numeric"})


def test_encoding_rules() -> None:
    t = user_table()
    enc = FeatureEncoder.fit(t)
    m = enc.transform(t)
    names = [n for n, _ in enc.fields]
    assert names == ["gender", "age", "tags"]
    sizes = dict(enc.fields)
    assert sizes == {"gender": 2, "age": 1, "tags": 4}
    dense = m.toarray()
    # categorical: exactly one column set
    assert np.all(dense[:, :2].sum(axis=1) == 1)
    # numeric standardised
    age = t.frame["age"].to_numpy()
    np.testing.assert_allclose(dense[:, 2], (age - age.mean()) / age.std(), rtol=1e-5)
    # multi: weights sum to 1 for rows with tokens, 0 for empty
    tags = dense[:, 3:]
    for r, v in enumerate(t.frame["tags"]):
        assert tags[r].sum() == pytest.approx(1.0 if v else 0.0)
    # unknown category and unknown token set no column; missing numeric -> 0
    new = FeatureTable.from_frame(pd.DataFrame({"user_id": [99], "gender": ["X"], "age": [np.nan], "tags": ["zz|a"]}),
                                  "user_id", {"gender": "categorical", "age": "numeric", "tags": "multi"})
    row = enc.transform(new).toarray()[0]
    assert row[:3].tolist() == [0, 0, 0]
    assert row[3:].sum() == pytest.approx(1.0)  # only "a" known -> weight 1
    # state round trip (no pickle)
    again = FeatureEncoder.from_state(enc.state())
    assert (again.transform(t) != m).nnz == 0


def test_bins_and_years() -> None:
    t = item_table()
    enc = FeatureEncoder.fit(t)
    m = enc.transform(t).toarray()
    sizes = dict(enc.fields)
    start = sizes["genres"]
    year_block = m[:, start:start + sizes["year"]]
    assert np.all(year_block.sum(axis=1) == 1)  # every year falls in exactly one bin
    outside = FeatureTable.from_frame(pd.DataFrame({"item_id": [1, 2], "genres": ["", ""], "year": ["1800", "2090"],
                                                    "price": [1.0, 2.0]}), "item_id",
                                      {"genres": "multi", "year": "year", "price": "numeric"})
    yb = enc.transform(outside).toarray()[:, start:start + sizes["year"]]
    assert yb[0, 0] == 1 and yb[1, -1] == 1  # first / last bin


def test_feature_table_errors() -> None:
    with pytest.raises(DataError, match="duplicate ID") as e:
        FeatureTable.from_frame(pd.DataFrame({"id": [1, 1], "g": ["a", "b"]}), source="f.csv")
    assert "f.csv:3" in str(e.value)
    with pytest.raises(DataError, match="no feature columns"):
        FeatureTable.from_frame(pd.DataFrame({"id": [1, 2]}))
    with pytest.raises(DataError, match="no rows"):
        FeatureTable.from_frame(pd.DataFrame({"id": [], "g": []}))
    with pytest.raises(ConfigError, match="unknown role"):
        FeatureTable.from_frame(pd.DataFrame({"id": [1], "g": ["a"]}), roles={"g": "fancy"})
    with pytest.raises(ConfigError, match="unknown column"):
        FeatureTable.from_frame(pd.DataFrame({"id": [1], "g": ["a"]}), roles={"h": "multi"})
    with pytest.raises(DataError, match="not a number") as e:
        FeatureEncoder.fit(FeatureTable.from_frame(pd.DataFrame({"id": [1, 2], "x": ["3", "abc"]}),
                                                   roles={"x": "numeric"}, source="t.csv"))
    assert "'abc'" in str(e.value)
    assert parse_roles("age=bin, genres=multi") == {"age": "bin", "genres": "multi"}
    with pytest.raises(ConfigError):
        parse_roles("age:bin")


def test_feature_file_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_feature_table(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_feature_table(tmp_path / "empty.csv")
    (tmp_path / "bad.csv").write_bytes(b"id,g\n1,caf\xe9\n")
    with pytest.raises(DataError, match="UTF-8") as e:
        read_feature_table(tmp_path / "bad.csv")
    assert "bad.csv:2" in str(e.value)
    (tmp_path / "u.user").write_text("1|24|M|technician\n")
    with pytest.raises(DataError, match="expected 5 fields") as e:
        read_feature_table(tmp_path / "u.user")
    assert "u.user:1" in str(e.value)


@pytest.mark.movielens
def test_movielens_feature_files(ml100k, shared_data) -> None:
    users = read_feature_table(ml100k / "u.user")
    assert len(users) == 943 and users.roles == {"age": "bin", "gender": "categorical",
                                                 "occupation": "categorical", "zip": "categorical"}
    enc = FeatureEncoder.fit(users)
    assert dict(enc.fields)["occupation"] == 21
    items = read_feature_table(ml100k / "u.item")  # latin-1, 19 genre flags
    assert len(items) == 1682
    ienc = FeatureEncoder.fit(items)
    assert dict(ienc.fields)["genres"] == 19
    rows = ienc.transform(items)
    names = [n for n, _ in ienc.fields]
    start = sum(size for n, size in ienc.fields[: names.index("genres")])
    toy_story = rows[0].toarray()[0, start:start + 19]
    assert toy_story.sum() == pytest.approx(1.0) and (toy_story > 0).sum() == 3  # Animation, Children's, Comedy
    movies = read_feature_table(shared_data / "ml-latest-small" / "movies.csv")
    assert len(movies) == 9742 and movies.roles["genres"] == "multi"
    years = FeatureEncoder.fit(movies)
    assert dict(years.fields)["year"] >= 2


def trained_with_features(task: str = "regression", seed: int = 0):
    rng = np.random.default_rng(seed)
    users, items = list(range(1, 7)), list(range(10, 22))
    pairs = [(u, i) for u in users for i in items if rng.random() < 0.6]
    df = pd.DataFrame(pairs, columns=["user_id", "item_id"])
    df["rating"] = rng.integers(1, 6, len(df)).astype(float)
    data = Interactions.from_frame(df)
    ut = user_table(ids=tuple(users) + (7,))       # user 7: cold (features only)
    it = item_table(ids=tuple(items) + (30, 31))    # items 30, 31: cold
    fm = FactorizationMachine(task=task, n_factors=4, n_epochs=5, init_std=0.3, random_state=seed)
    fm.fit(data, user_features=ut, item_features=it)
    return fm, data, ut, it


@pytest.mark.parametrize("task", ["regression", "binary", "ranking"])
def test_exact_export_with_features_and_reference_formula_breaks(task: str) -> None:
    fm, data, ut, it = trained_with_features(task)
    users = np.array([1, 2, 3, 4, 5, 6, 7])
    items = np.array(list(range(10, 22)) + [30, 31])
    uv, iv = export_vectors(fm, users=users, items=items)
    got = uv.vectors.astype(np.float64) @ iv.vectors.astype(np.float64).T + uv.constants[:, None]
    uu, ii = np.meshgrid(users, items, indexing="ij")
    truth = fm.decision_function(pd.DataFrame({"user_id": uu.ravel(), "item_id": ii.ravel()})).reshape(got.shape)
    np.testing.assert_allclose(got, truth, rtol=1e-5, atol=1e-5)
    # and against the naive double-loop FM on the dense rows
    X = fm.encoder_.transform_ids(uu.ravel(), ii.ravel()).toarray()
    naive = np.array([fm_score_naive(x, fm.w0_, fm.w_, fm.V_) for x in X]).reshape(got.shape)
    np.testing.assert_allclose(got, naive, rtol=1e-4, atol=1e-4)
    # the hosted pipeline's item vector [V^T x_i, w^T x_i] drops P(x_i): no longer exact
    Xi = fm.encoder_.item_rows_for(items)
    proj, lin, pair = side_terms(Xi, fm.w_, fm.V_)
    assert np.abs(pair).max() > 1e-3
    seed_items = np.hstack([proj, lin[:, None]])
    seed_scores = uv.vectors.astype(np.float64) @ seed_items.T + uv.constants[:, None]
    assert np.abs(seed_scores - truth).max() > 1e-3


def test_recommend_serves_cold_users_and_items_exactly() -> None:
    fm, data, ut, it = trained_with_features("regression")
    seen = data.to_csr(binary=True)
    tk = TopK.concat(list(recommend_all(fm, 5, seen=seen, user_features=ut, item_features=it)))
    assert 7 in tk.user_ids.tolist()  # cold user served
    served_items = set(tk.item_ids.ravel().tolist())
    assert served_items & {30, 31}  # cold items are candidates
    all_items = np.array(list(range(10, 22)) + [30, 31])
    for r, u in enumerate(tk.user_ids.tolist()):
        scores = fm.decision_function(pd.DataFrame({"user_id": [u] * len(all_items), "item_id": all_items}))
        uidx = fm.encoder_.user_map.to_index([u])[0]
        excl = set()
        if uidx >= 0:
            seen_items = fm.encoder_.item_map.ids[seen.indices[seen.indptr[uidx]:seen.indptr[uidx + 1]]]
            excl = {int(np.flatnonzero(all_items == i)[0]) for i in seen_items}
        pos = np.array([int(np.flatnonzero(all_items == i)[0]) if i >= 0 else -1 for i in tk.item_ids[r]])
        assert_topk_equivalent(pos, tk.scores[r].astype(np.float64), scores, 5, excl, rtol=1e-4, atol=1e-4)


def test_model_with_features_saves_and_loads(tmp_path) -> None:
    fm, data, ut, it = trained_with_features("regression")
    path = save_model(fm, tmp_path / "m", seen=data.to_csr(binary=True))
    loaded = load_model(path)
    pairs = pd.DataFrame({"user_id": [1, 7, 2], "item_id": [10, 30, 31]})
    np.testing.assert_array_equal(loaded.predict(pairs), fm.predict(pairs))
    assert [f["name"] for f in loaded.manifest_["layout"]] == [
        "user", "user:gender", "user:age", "user:tags", "item", "item:genres", "item:year", "item:price"]
    # a new user-feature file at predict time: new users served, unknown category tolerated
    new_users = pd.DataFrame({"user_id": [50], "gender": ["nonbinary"], "age": [33.0], "tags": ["b"]})
    t = FeatureTable.from_frame(new_users, "user_id", {"gender": "categorical", "age": "numeric", "tags": "multi"})
    p = loaded.predict(pd.DataFrame({"user_id": [50], "item_id": [10]}), user_features=t)
    assert np.isfinite(p).all()


def test_cli_train_predict_recommend_with_features(tmp_path, capsys) -> None:
    from fmrec.cli.main import main

    rng = np.random.default_rng(3)
    pairs = [(u, i, int(rng.integers(1, 6))) for u in range(1, 21) for i in range(100, 130) if rng.random() < 0.4]
    pd.DataFrame(pairs, columns=["user_id", "item_id", "rating"]).to_csv(tmp_path / "train.csv", index=False)
    uf = pd.DataFrame({"user_id": range(1, 23), "age": rng.integers(18, 70, 22),
                       "country": rng.choice(["fr", "de", "us"], 22)})
    uf.to_csv(tmp_path / "users.csv", index=False)  # users 21, 22: cold
    itf = pd.DataFrame({"item_id": range(100, 133), "genres": rng.choice(["a|b", "b", "c|a"], 33)})
    itf.to_csv(tmp_path / "items.csv", index=False)  # items 130-132: cold
    model = tmp_path / "model"
    assert main(["-q", "train", str(tmp_path / "train.csv"), "--out", str(model), "--epochs", "2", "--factors", "4",
                 "--user-features", str(tmp_path / "users.csv"), "--item-features", str(tmp_path / "items.csv"),
                 "--user-feature-roles", "age=numeric"]) == 0
    from fmrec.model import load_model

    names = [f["name"] for f in load_model(model).manifest_["layout"]]
    assert names == ["user", "user:age", "user:country", "item", "item:genres"]
    pd.DataFrame({"user_id": [21, 1], "item_id": [131, 100]}).to_csv(tmp_path / "pairs.csv", index=False)
    assert main(["-q", "predict", str(model), str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "p.csv"),
                 "--user-features", str(tmp_path / "users.csv"), "--item-features", str(tmp_path / "items.csv")]) == 0
    preds = pd.read_csv(tmp_path / "p.csv")
    loaded = load_model(model)
    expected = loaded.predict(pd.DataFrame({"user_id": [21, 1], "item_id": [131, 100]}),
                              user_features=read_feature_table(tmp_path / "users.csv"),
                              item_features=read_feature_table(tmp_path / "items.csv"))
    np.testing.assert_allclose(preds["score"], expected, rtol=1e-6)
    capsys.readouterr()
    assert main(["-q", "recommend", str(model), "--k", "5", "--out", str(tmp_path / "r.jsonl"),
                 "--user-features", str(tmp_path / "users.csv"), "--item-features", str(tmp_path / "items.csv")]) == 0
    out = capsys.readouterr().out
    assert "cold start: 2 users and 3 items" in out
    lines = [pd.read_json(tmp_path / "r.jsonl", lines=True)]
    served = set(lines[0]["user_id"])
    assert {21, 22} <= served and len(served) == 22
