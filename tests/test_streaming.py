"""Streaming (out-of-core) training from Parquet (``FactorizationMachine.fit_parquet``).

Small Parquet files written here: a planted model (user/item biases plus rank-3
factors) with integer user IDs and string item IDs, several row groups.  One batch
covering the file must give the in-memory model bit for bit; many batches must
learn the planted model about as well as the in-memory fit.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fmrec.cli.main import main
from fmrec.data import read_interactions
from fmrec.errors import ConfigError, DataError, DivergenceError
from fmrec.model import FactorizationMachine, load_model, save_model
from fmrec.model.io import load_seen
from fmrec.model.streaming import ParquetSource
from fmrec.recommend import recommend_all
from fmrec.topk import TopK

pytestmark = pytest.mark.usefixtures("reset_cli_logging")

SMALL = dict(n_factors=8, n_epochs=3, random_state=1)


def planted(seed: int = 0, n_users: int = 200, n_items: int = 150, n_rows: int = 14000,
            noise: float = 0.2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pairs = rng.choice(n_users * n_items, n_rows, replace=False)  # random order, no repeats
    u, i = pairs // n_items, pairs % n_items
    P, Q = rng.normal(0, 0.6, (n_users, 3)), rng.normal(0, 0.6, (n_items, 3))
    bu, bi = rng.normal(0, 0.5, n_users), rng.normal(0, 0.5, n_items)
    r = 3 + bu[u] + bi[i] + (P[u] * Q[i]).sum(1) + rng.normal(0, noise, n_rows)
    return pd.DataFrame({"user_id": u * 10 + 7, "item_id": [f"i{x}" for x in i], "rating": r.astype(np.float32)})


def write(df: pd.DataFrame, path: Path, row_group: int = 1000) -> Path:
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=row_group)
    return path


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    df = planted()
    return df.iloc[:12000].reset_index(drop=True), df.iloc[12000:].reset_index(drop=True)


@pytest.fixture(scope="module")
def train_file(frames: tuple[pd.DataFrame, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(frames[0], tmp_path_factory.mktemp("stream") / "train.parquet")


def rmse(model: FactorizationMachine, df: pd.DataFrame) -> float:
    return float(np.sqrt(np.mean((model.predict(df) - df["rating"].to_numpy()) ** 2)))


def assert_same_model(a: FactorizationMachine, b: FactorizationMachine) -> None:
    assert a.encoder_.user_map == b.encoder_.user_map and a.encoder_.item_map == b.encoder_.item_map
    assert a.w0_ == b.w0_ and a.y_range_ == b.y_range_ and a.best_epoch_ == b.best_epoch_
    np.testing.assert_array_equal(a.w_, b.w_)
    np.testing.assert_array_equal(a.V_, b.V_)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in a.history_]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in b.history_]


# ----------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("kw", [
    dict(task="regression"),
    dict(task="binary", threshold=3.5),
    dict(task="ranking"),
    dict(task="ranking", loss="warp", positive_threshold=3.0),
    dict(task="regression", optimizer="sgd", learning_rate=0.01),
], ids=["regression", "binary", "bpr", "warp-threshold", "plain-sgd"])
def test_one_batch_is_bit_for_bit_the_in_memory_fit(train_file: Path, kw: dict) -> None:
    """batch_rows >= rows: file order, no row-group shuffle, the same random draws."""
    mem = FactorizationMachine(**SMALL, **kw).fit(read_interactions(train_file))
    st = FactorizationMachine(**SMALL, **kw).fit_parquet(train_file, batch_rows=100_000)
    assert_same_model(mem, st)
    assert st.stream_info_["n_rows"] == 12000 and st.stream_info_["row_groups"] == 12
    seen = read_interactions(train_file).to_csr(binary=True)
    assert (st.seen_ != seen).nnz == 0
    if kw["task"] == "ranking":
        assert (st.train_pattern_ != mem.train_pattern_).nnz == 0


def test_validation_history_and_early_stopping_match(frames: tuple[pd.DataFrame, pd.DataFrame],
                                                     train_file: Path) -> None:
    kw = dict(n_factors=8, n_epochs=30, random_state=3, learning_rate=0.3, patience=2)
    mem = FactorizationMachine(**kw).fit(read_interactions(train_file), valid=frames[1])
    st = FactorizationMachine(**kw).fit_parquet(train_file, batch_rows=50_000, valid=frames[1])
    assert "valid_rmse" in st.history_[0]
    assert len(st.history_) < 30 and st.best_epoch_ < len(st.history_)  # stopped early, best restored
    assert_same_model(mem, st)


def test_fit_accepts_a_parquet_source(train_file: Path) -> None:
    a = FactorizationMachine(**SMALL).fit(ParquetSource(train_file, batch_rows=3000))
    b = FactorizationMachine(**SMALL).fit_parquet(train_file, batch_rows=3000)
    assert_same_model(a, b)


# ----------------------------------------------------------------------------- learning
def test_many_batches_learn_the_planted_model(frames: tuple[pd.DataFrame, pd.DataFrame], train_file: Path) -> None:
    train, test = frames
    kw = dict(n_factors=8, n_epochs=25, random_state=0)
    mem = FactorizationMachine(**kw).fit(read_interactions(train_file))
    st = FactorizationMachine(**kw).fit_parquet(train_file, batch_rows=700)  # 18 batches over 12 row groups
    baseline = float(np.sqrt(np.mean((test["rating"] - train["rating"].mean()) ** 2)))
    r_mem, r_st = rmse(mem, test), rmse(st, test)
    assert r_st < 0.7 * baseline, (r_st, baseline)
    assert abs(r_st - r_mem) <= 0.03 * r_mem, (r_st, r_mem)
    assert st.stream_info_["n_rows"] == 12000 and len(st.stream_info_["epoch_seconds"]) == 25
    # Hogwild threads per batch learn too
    st2 = FactorizationMachine(**kw, n_threads=2).fit_parquet(train_file, batch_rows=700)
    assert rmse(st2, test) < 0.7 * baseline


@pytest.mark.parametrize("loss", ["bpr", "warp"])
def test_many_batches_ranking_learns_checkerboard(tmp_path: Path, loss: str) -> None:
    """Two user groups x two item groups; one in-group item per user held out must come first
    (test_ranking's check), trained in chunks of 97 positives with a shuffled file."""
    rng = np.random.default_rng(0)
    rows, held = [], {}
    for u in range(40):
        items = [i for i in range(30) if i % 2 == u % 2]
        held[u] = int(rng.choice(items))
        rows += [(u, i) for i in items if i != held[u]]
    df = pd.DataFrame(rows, columns=["user_id", "item_id"]).sample(frac=1, random_state=0)
    path = write(df, tmp_path / "cb.parquet", row_group=100)
    fm = FactorizationMachine(task="ranking", loss=loss, n_factors=4, n_epochs=100, learning_rate=0.1,
                              init_std=0.1, l2_linear=0.0, l2_factors=0.0, random_state=0)
    fm.fit_parquet(path, batch_rows=97)
    tk = TopK.concat(list(recommend_all(fm, 1)))  # seen_ (the training pattern) excluded by default
    firsts = dict(zip(tk.user_ids.tolist(), tk.item_ids[:, 0].tolist()))
    assert all(firsts[u] == held[u] for u in held), {u: (firsts[u], held[u]) for u in held if firsts[u] != held[u]}


def test_same_seed_same_model_across_runs(train_file: Path) -> None:
    a = FactorizationMachine(**SMALL).fit_parquet(train_file, batch_rows=2500)
    b = FactorizationMachine(**SMALL).fit_parquet(train_file, batch_rows=2500)
    assert_same_model(a, b)
    c = FactorizationMachine(**{**SMALL, "random_state": 2}).fit_parquet(train_file, batch_rows=2500)
    assert not np.array_equal(a.V_, c.V_)


def test_folder_of_files_is_one_data_set(frames: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    train = frames[0]
    folder = tmp_path / "parts"
    (folder / "b").mkdir(parents=True)
    write(train.iloc[:5000], folder / "a-0.parquet")
    write(train.iloc[5000:9000], folder / "b" / "part-1.parquet")
    write(train.iloc[9000:], folder / "c-2.pq", row_group=5000)
    (folder / "_SUCCESS").write_text("")
    write(train.iloc[:10], folder / "_ignored.parquet")
    whole = write(train, tmp_path / "whole.parquet")
    src = ParquetSource(folder, batch_rows=100_000)
    assert [f.name for f in src.files] == ["a-0.parquet", "part-1.parquet", "c-2.pq"] and src.n_rows == 12000
    assert_same_model(FactorizationMachine(**SMALL).fit_parquet(whole),
                      FactorizationMachine(**SMALL).fit_parquet(folder))
    multi = FactorizationMachine(**SMALL).fit_parquet(folder, batch_rows=1300)  # batches span files
    assert multi.stream_info_["n_rows"] == 12000


def test_id_maps_follow_the_in_memory_normalisation(tmp_path: Path) -> None:
    """First-appearance order over the whole file; float IDs are integers only when every one is
    integral (decided over the column, not per batch); strings stay strings."""
    n = 3000
    rng = np.random.default_rng(1)
    users = rng.integers(0, 400, n).astype(np.float64)
    users[2500] = 12.5  # one non-integral ID, in the last batch: every user ID becomes its repr
    items = rng.integers(0, 50, n).astype(np.float64)  # integral floats: int64 IDs
    df = pd.DataFrame({"user": users, "item": items, "score": rng.integers(1, 6, n)})
    df = df.drop_duplicates(["user", "item"]).reset_index(drop=True)
    path = write(df, tmp_path / "f.parquet", row_group=500)
    mem = read_interactions(path)
    st = FactorizationMachine(**SMALL).fit_parquet(path, batch_rows=400)
    assert st.encoder_.user_map == mem.user_map and st.encoder_.item_map == mem.item_map
    assert st.encoder_.user_map.ids.dtype.kind == "U" and st.encoder_.item_map.ids.dtype.kind == "i"
    assert_same_model(FactorizationMachine(**SMALL).fit(mem), FactorizationMachine(**SMALL).fit_parquet(path))


def test_dictionary_encoded_columns(tmp_path: Path) -> None:
    df = planted(n_rows=2000)
    df["item_id"] = df["item_id"].astype("category")  # written dictionary-encoded
    path = write(df, tmp_path / "d.parquet", row_group=300)
    assert_same_model(FactorizationMachine(**SMALL).fit(read_interactions(path)),
                      FactorizationMachine(**SMALL).fit_parquet(path))


@pytest.mark.parametrize("task", ["regression", "ranking"])
def test_side_features_one_batch_match(frames: tuple[pd.DataFrame, pd.DataFrame], train_file: Path,
                                       task: str) -> None:
    from fmrec.data.features import FeatureTable

    users = np.unique(frames[0]["user_id"])
    items = np.unique(frames[0]["item_id"])
    ut = FeatureTable.from_frame(pd.DataFrame({"user_id": users, "group": [f"g{u % 3}" for u in users],
                                               "age": (users % 50).astype(float)}))
    it = FeatureTable.from_frame(pd.DataFrame({"item_id": items, "kind": [f"k{len(x)}" for x in items]}))
    mem = FactorizationMachine(task=task, **SMALL).fit(read_interactions(train_file), user_features=ut,
                                                       item_features=it)
    st = FactorizationMachine(task=task, **SMALL).fit_parquet(train_file, user_features=ut, item_features=it)
    assert st.encoder_.layout() == mem.encoder_.layout()
    assert_same_model(mem, st)
    if task == "regression":
        multi = FactorizationMachine(**SMALL).fit_parquet(train_file, batch_rows=2000, user_features=ut)
        assert rmse(multi, frames[1]) < 1.05 * rmse(mem, frames[1])


# ----------------------------------------------------------------------------- duplicates
def test_duplicates_error_names_both_rows_and_keep_trains_every_row(tmp_path: Path) -> None:
    df = planted(n_rows=3000)
    dup = pd.concat([df, df.iloc[[10]]], ignore_index=True)  # row 3001 repeats row 11
    path = write(dup, tmp_path / "dup.parquet", row_group=700)
    with pytest.raises(DataError) as exc:
        FactorizationMachine(**SMALL).fit_parquet(path, batch_rows=1000)
    msg = str(exc.value)
    assert "\n" not in msg and f"{path}:3001:" in msg and "first seen on line 11" in msg
    assert f"'{df.user_id[10]},{df.item_id[10]}'" in msg
    with pytest.raises(DataError, match="first seen on line 11"):
        read_interactions(path)  # the in-memory reader says the same
    st = FactorizationMachine(**SMALL).fit_parquet(path, batch_rows=1000, duplicates="keep")
    assert st.stream_info_["repeated_rows"] == 1 and st.seen_.nnz == 3000
    mem = FactorizationMachine(**SMALL).fit(read_interactions(path, duplicates="keep"))
    assert_same_model(mem, FactorizationMachine(**SMALL).fit_parquet(path, duplicates="keep"))


# ----------------------------------------------------------------------------- bad input
def one_line(exc: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def test_missing_columns(tmp_path: Path) -> None:
    path = write(pd.DataFrame({"user_id": [1, 2], "thing": ["a", "b"], "rating": [1.0, 2.0]}), tmp_path / "m.parquet")
    with pytest.raises(DataError) as exc:
        FactorizationMachine(**SMALL).fit_parquet(path)
    one_line(exc, str(path), "no item column")
    ok = write(planted(n_rows=100), tmp_path / "ok.parquet")
    with pytest.raises(DataError) as exc:
        FactorizationMachine(**SMALL).fit_parquet(ok, rating_col="stars")
    one_line(exc, str(ok), "'stars' not found")
    no_rating = write(planted(n_rows=100).drop(columns="rating"), tmp_path / "implicit.parquet")
    with pytest.raises(DataError) as exc:
        FactorizationMachine(**SMALL).fit_parquet(no_rating)
    one_line(exc, str(no_rating), "regression needs ratings")
    FactorizationMachine(task="ranking", **SMALL).fit_parquet(no_rating)  # implicit data is fine for ranking
    folder = tmp_path / "parts"
    folder.mkdir()
    write(planted(n_rows=100), folder / "a.parquet")
    write(planted(n_rows=100).drop(columns="rating"), folder / "b.parquet")
    with pytest.raises(DataError) as exc:
        FactorizationMachine(**SMALL).fit_parquet(folder)
    one_line(exc, str(folder / "b.parquet"), "missing column 'rating'")


@pytest.mark.parametrize("bad, needles", [
    ("text", ["rating is not a finite number", ":1501:", "column 'rating'", "(value 'x')"]),
    ("nan", ["missing rating", ":1501:"]),
    ("null", ["missing rating", ":1501:"]),
    ("null_user", ["missing ID", ":1501:", "column 'user_id'"]),
    ("blank_item", ["empty ID", ":1501:", "column 'item_id'"]),
])
def test_bad_rows_name_file_row_column(tmp_path: Path, bad: str, needles: list[str]) -> None:
    """Parquet rows are numbered from 1 (row index 1500 is row 1501), as the in-memory reader does."""
    df = planted(n_rows=2000).astype({"rating": object, "user_id": object})
    if bad == "text":
        df["rating"] = df["rating"].astype(str)
        df.loc[1500, "rating"] = "x"
    elif bad == "nan":
        df.loc[1500, "rating"] = float("nan")
        df["rating"] = df["rating"].astype(float)
    elif bad == "null":
        df["rating"] = df["rating"].astype(float)
        df.loc[1500, "rating"] = None
        df["rating"] = pd.array(df["rating"], dtype="Float64")
    elif bad == "null_user":
        df["user_id"] = pd.array(df["user_id"].where(df.index != 1500), dtype="Int64")
        df["rating"] = df["rating"].astype(float)
    else:
        df.loc[1500, "item_id"] = "  "
        df["rating"] = df["rating"].astype(float)
    if bad not in ("null_user",):
        df["user_id"] = df["user_id"].astype(np.int64)
    path = write(df, tmp_path / "bad.parquet", row_group=600)
    with pytest.raises(DataError) as exc:
        FactorizationMachine(**SMALL).fit_parquet(path, batch_rows=400)  # the bad row is in a later batch
    one_line(exc, str(path), *needles)
    with pytest.raises(DataError) as mem:
        read_interactions(path)
    # word for word the in-memory reader's error (a null shows as <NA> there when pandas wrote a nullable dtype)
    assert str(mem.value).split(" (value")[0] == str(exc.value).split(" (value")[0]
    if bad != "null":
        assert str(mem.value) == str(exc.value)


def test_unreadable_files(tmp_path: Path, train_file: Path) -> None:
    truncated = tmp_path / "t.parquet"
    data = train_file.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as exc:
        FactorizationMachine(**SMALL).fit_parquet(truncated)
    one_line(exc, str(truncated), "not a readable Parquet file")
    empty = tmp_path / "e.parquet"
    empty.write_bytes(b"")
    with pytest.raises(DataError) as exc:
        FactorizationMachine(**SMALL).fit_parquet(empty)
    one_line(exc, str(empty), "empty file")
    with pytest.raises(DataError) as exc:
        FactorizationMachine(**SMALL).fit_parquet(tmp_path / "nope.parquet")
    one_line(exc, "nope.parquet", "file not found")
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError) as exc:
        FactorizationMachine(**SMALL).fit_parquet(tmp_path / "none")
    one_line(exc, "none", "no Parquet files")
    text = tmp_path / "x.parquet"
    text.write_text("user_id,item_id,rating\n1,2,3\n")
    with pytest.raises(DataError) as exc:
        FactorizationMachine(**SMALL).fit_parquet(text)
    one_line(exc, str(text), "not a readable Parquet file")
    struct = tmp_path / "s.parquet"
    pq.write_table(pa.table({"user_id": [1, 2], "item_id": [[1], [2]], "rating": [1.0, 2.0]}), struct)
    with pytest.raises(DataError) as exc:
        FactorizationMachine(**SMALL).fit_parquet(struct)
    one_line(exc, str(struct), "column 'item_id'", "not supported")


def test_configuration_errors(train_file: Path) -> None:
    with pytest.raises(ConfigError, match="solver='sgd' only"):
        FactorizationMachine(solver="als").fit_parquet(train_file)
    with pytest.raises(ConfigError, match="duplicates"):
        FactorizationMachine(**SMALL).fit_parquet(train_file, duplicates="mean")
    with pytest.raises(ConfigError, match="batch_rows"):
        FactorizationMachine(**SMALL).fit_parquet(train_file, batch_rows=0)
    with pytest.raises(ConfigError, match="y cannot be given"):
        FactorizationMachine(**SMALL).fit(ParquetSource(train_file), np.ones(3))
    with pytest.raises(ConfigError, match="batch_rows cannot be given"):
        FactorizationMachine(**SMALL).fit_parquet(ParquetSource(train_file), batch_rows=5)
    with pytest.raises(ConfigError, match="n_factors"):
        FactorizationMachine(n_factors=0).fit_parquet(train_file)


def test_divergence_guard(train_file: Path) -> None:
    fm = FactorizationMachine(n_factors=8, n_epochs=3, optimizer="sgd", learning_rate=1e4, random_state=0)
    with pytest.raises(DivergenceError, match="lower the learning rate"):
        fm.fit_parquet(train_file, batch_rows=1000)


def test_verbose_progress(train_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fmrec"):
        FactorizationMachine(n_factors=4, n_epochs=2, verbose=True).fit_parquet(train_file, batch_rows=500)
    text = caplog.text
    assert "pass 1 (IDs, targets): 12000 rows, 200 users, 150 items" in text
    assert "pass 2 (seen pattern): 12000 distinct pairs" in text
    assert text.count("epoch 1: ") == 9 and "rows (" in text  # a line per tenth of 24 batches
    assert "epoch 2/2  train_loss=" in text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fmrec"):
        FactorizationMachine(n_factors=4, n_epochs=2).fit_parquet(train_file, batch_rows=500)
    assert caplog.text == ""


# ----------------------------------------------------------------------------- fitted model
def test_fitted_model_saves_loads_and_recommends(frames: tuple[pd.DataFrame, pd.DataFrame], train_file: Path,
                                                 tmp_path: Path) -> None:
    st = FactorizationMachine(**SMALL).fit_parquet(train_file, batch_rows=3000)
    save_model(st, tmp_path / "m", seen=st.seen_)
    loaded = load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(frames[1]), st.predict(frames[1]))
    lists = TopK.concat(list(recommend_all(st, 5)))  # seen_ is excluded by default
    again = TopK.concat(list(recommend_all(loaded, 5, seen=load_seen(tmp_path / "m"))))
    np.testing.assert_array_equal(lists.item_ids, again.item_ids)
    seen = {(u, i) for u, i in zip(frames[0]["user_id"], frames[0]["item_id"])}
    for u, items in zip(lists.user_ids, lists.item_ids):
        assert not any((u, i) in seen for i in items)


# ----------------------------------------------------------------------------- CLI
def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_train_stream_end_to_end(capsys: pytest.CaptureFixture[str], train_file: Path, tmp_path: Path) -> None:
    small = ("--epochs", "2", "--factors", "8", "--seed", "1")
    rc, out, err = cli(capsys, "train", train_file, "--out", tmp_path / "m", "--stream", "--batch-rows", "5000",
                       *small)
    assert rc == 0, err
    assert "model saved to" in out and "by streaming 12000 rows" in err and "pass 1" in err
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["extra"]["streamed"] is True and manifest["extra"]["train_rows"] == 12000
    assert load_seen(tmp_path / "m").nnz == 12000
    rc, out, err = cli(capsys, "-q", "recommend", tmp_path / "m", "--k", "5", "--out", tmp_path / "r.jsonl")
    assert rc == 0, err
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 200
    # one batch: the same model as the in-memory command
    assert cli(capsys, "-q", "train", train_file, "--out", tmp_path / "s1", "--stream", *small)[0] == 0
    assert cli(capsys, "-q", "train", train_file, "--out", tmp_path / "mem", *small)[0] == 0
    a, b = np.load(tmp_path / "s1" / "arrays.npz"), np.load(tmp_path / "mem" / "arrays.npz")
    for key in ("w0", "w", "V", "map_user_ids", "map_item_ids"):
        np.testing.assert_array_equal(a[key], b[key])
    # ranking with a validation file
    valid = tmp_path / "valid.csv"
    planted().iloc[12000:].to_csv(valid, index=False)
    rc, out, err = cli(capsys, "-q", "train", train_file, "--out", tmp_path / "rank", "--stream", "--task", "ranking",
                       "--valid", valid, *small)
    assert rc == 0 and "valid_ndcg@10" in out, err


@pytest.mark.parametrize("extra, needles", [
    (["--duplicates", "mean"], ["--duplicates mean is not supported with --stream"]),
    (["--solver", "als"], ["--stream supports --solver sgd only"]),
    (["--format", "csv"], ["--stream reads Parquet only"]),
    (["--user-col", "who"], ["'who' not found", "train.parquet"]),
])
def test_cli_stream_errors_are_one_line(capsys: pytest.CaptureFixture[str], train_file: Path, tmp_path: Path,
                                        extra: list[str], needles: list[str]) -> None:
    rc, out, err = cli(capsys, "train", train_file, "--out", tmp_path / "m", "--stream", *extra)
    assert rc == 1 and err.count("\n") == 1 and err.startswith("fmrec train: error:"), err
    for n in needles:
        assert n in err, (n, err)
    assert not (tmp_path / "m").exists()


def test_cli_stream_rejects_text_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    planted(n_rows=100).to_csv(csv, index=False)
    rc, out, err = cli(capsys, "train", csv, "--out", tmp_path / "m", "--stream")
    assert rc == 1 and err.count("\n") == 1 and "reads Parquet files only" in err and str(csv) in err


def test_cli_duplicates_keep_in_memory_too(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    df = planted(n_rows=500)
    path = write(pd.concat([df, df.iloc[:3]], ignore_index=True), tmp_path / "d.parquet")
    rc, _, err = cli(capsys, "-q", "train", path, "--out", tmp_path / "m", "--epochs", "1", "--factors", "4")
    assert rc == 1 and "duplicate (user, item) pair" in err
    for stream in ([], ["--stream"]):
        rc, _, err = cli(capsys, "-q", "train", path, "--out", tmp_path / "m", "--epochs", "1", "--factors", "4",
                         "--duplicates", "keep", *stream)
        assert rc == 0, err
