"""End-to-end tests of the ``fmrec`` command line.

Commands run in-process through :func:`fmrec.cli.main.main` (fast; output captured
with capsys); two tests run the installed console script in a subprocess.  Data:
the built-in data set and small files written under tmp_path; MovieLens only in
the one test that checks the ``u.data`` format (skipped when absent).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmrec.cli.main import main
from fmrec.errors import ArtifactError, DataError

from _helpers import fm

REPO = Path(__file__).resolve().parents[1]
SMALL = ("--epochs", "2", "--factors", "8")
N_USERS = 943  # the built-in data set


# ----------------------------------------------------------------------------- helpers
pytestmark = pytest.mark.usefixtures("reset_cli_logging")


def assert_one_line_error(rc: int, err: str, command: str, *needles: str) -> str:
    assert rc == 1, err
    assert err.endswith("\n") and err.count("\n") == 1, f"expected exactly one stderr line, got {err!r}"
    line = err.rstrip("\n")
    assert line.startswith(f"fmrec {command}: error:"), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def read_lists(path: Path) -> dict[int, tuple[list[int], list[float]]]:
    """fmrec-layout JSON lines -> {user: (items, scores)} (file order kept)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        out[rec["user_id"]] = (rec["items"], rec["scores"])
    return out


def sqlite_lists(db: Path) -> dict[int, tuple[list[int], list[float]]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT user_id, rank, item_id, score FROM recommendations ORDER BY user_id, rank").fetchall()
    out: dict[int, tuple[list[int], list[float]]] = {}
    for user, rank, item, score in rows:
        items, scores = out.setdefault(user, ([], []))
        assert rank == len(items) + 1
        items.append(item)
        scores.append(score)
    return out


def sqlite_snapshot(db: Path) -> tuple[list[tuple], list[tuple]]:
    with sqlite3.connect(db) as conn:
        view = conn.execute("SELECT * FROM recommendations ORDER BY user_id, rank").fetchall()
        runs = conn.execute("SELECT * FROM fmrec_runs ORDER BY run_id").fetchall()
    return view, runs


def toml_str(value: object) -> str:
    return json.dumps(str(value))  # JSON string escapes are valid TOML basic-string escapes


def seen_pairs(frame: pd.DataFrame) -> dict[int, set[int]]:
    return {u: set(g) for u, g in frame.groupby("user_id")["item_id"]}


def console_script() -> Path:
    script = REPO / ".venv" / "bin" / "fmrec"
    if not script.is_file():
        found = shutil.which("fmrec") or str(Path(sys.executable).with_name("fmrec"))
        script = Path(found)
    if not script.is_file():
        pytest.skip("the fmrec console script is not installed")
    return script


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.csv / test.csv: the built-in data set with 5 ratings per user held out."""
    from fmrec.data.synthetic import builtin_split, load_builtin

    folder = tmp_path_factory.mktemp("data")
    train, test = builtin_split(load_builtin(), test_per_user=5)
    train.to_frame().to_csv(folder / "train.csv", index=False)
    test.to_frame().to_csv(folder / "test.csv", index=False)
    return folder


@pytest.fixture(scope="session")
def models(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A regression and a binary model trained on train.csv through the CLI."""
    folder = tmp_path_factory.mktemp("models")
    out = {}
    for task in ("regression", "binary"):
        out[task] = folder / task
        rc = main(["-q", "train", str(data / "train.csv"), "--out", str(out[task]), "--task", task,
                   "--threshold", "4", *SMALL, "--seed", "1"])
        assert rc == 0
    return out


# ----------------------------------------------------------------------------- help
def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "predict", "recommend", "evaluate", "run", "datasets"):
        assert command in out


@pytest.mark.parametrize(
    "argv",
    [["train"], ["predict"], ["recommend"], ["evaluate"], ["run"], ["datasets"], ["datasets", "fetch"],
     ["datasets", "list"]],
)
def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: fmrec {' '.join(argv)}")
    if len(argv) == 1:
        assert "example:" in out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = fm(capsys)
    assert rc == 2 and "COMMAND" in out


def test_console_script_help() -> None:
    proc = subprocess.run([str(console_script()), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "predict", "recommend", "evaluate", "run", "datasets"):
        assert command in proc.stdout


# ----------------------------------------------------------------------------- train / predict
def test_train_builtin(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, _ = fm(capsys, "train", "builtin", "--out", tmp_path / "m", *SMALL)
    assert rc == 0 and "model saved to" in out
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["params"]["n_factors"] == 8 and len(manifest["history"]) == 2
    assert (tmp_path / "m" / "seen.npz").is_file() and (tmp_path / "m" / "item_names.json").is_file()


def test_predict_regression(capsys: pytest.CaptureFixture[str], data: Path, models: dict[str, Path],
                            tmp_path: Path) -> None:
    out_csv = tmp_path / "sub" / "predictions.csv"
    rc, out, _ = fm(capsys, "predict", models["regression"], data / "test.csv", "--out", out_csv)
    assert rc == 0
    test = pd.read_csv(data / "test.csv")
    assert out_csv.read_text().splitlines()[0] == "user_id,item_id,score"
    pred = pd.read_csv(out_csv)
    assert len(pred) == len(test) == N_USERS * 5
    assert f"wrote {len(test)} predictions" in out
    np.testing.assert_array_equal(pred["user_id"], test["user_id"])  # input order kept
    np.testing.assert_array_equal(pred["item_id"], test["item_id"])
    assert pred["score"].between(1.0, 5.0).all()  # clipped to the training range


def test_predict_binary_gives_probabilities(capsys: pytest.CaptureFixture[str], data: Path,
                                            models: dict[str, Path], tmp_path: Path) -> None:
    rc, _, _ = fm(capsys, "predict", models["binary"], data / "test.csv", "--out", tmp_path / "p.csv")
    assert rc == 0
    pred = pd.read_csv(tmp_path / "p.csv")
    assert list(pred.columns) == ["user_id", "item_id", "score"]
    assert len(pred) == len(pd.read_csv(data / "test.csv"))
    assert pred["score"].between(0.0, 1.0).all() and pred["score"].nunique() > 100


def test_predict_keeps_duplicate_and_unknown_rows(capsys: pytest.CaptureFixture[str], models: dict[str, Path],
                                                  tmp_path: Path) -> None:
    src = tmp_path / "pairs.csv"
    src.write_text("user_id,item_id\n1,1\n1,1\n99999,1\n1,99999\n")
    rc, _, _ = fm(capsys, "predict", models["regression"], src, "--out", tmp_path / "p.csv")
    assert rc == 0
    pred = pd.read_csv(tmp_path / "p.csv")
    assert pred[["user_id", "item_id"]].values.tolist() == [[1, 1], [1, 1], [99999, 1], [1, 99999]]
    assert pred["score"].iloc[0] == pred["score"].iloc[1] and np.isfinite(pred["score"]).all()


def test_train_valid_early_stopping(capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path) -> None:
    rc, out, err = fm(capsys, "train", data / "train.csv", "--valid", data / "test.csv", "--out", tmp_path / "m",
                      "--factors", "16", "--epochs", "40", "--patience", "2", "--lr", "0.3",
                      "--l2-factors", "0", "--l2-linear", "0")
    assert rc == 0
    history = json.loads((tmp_path / "m" / "manifest.json").read_text())["history"]
    best = json.loads((tmp_path / "m" / "manifest.json").read_text())["best_epoch"]
    assert 2 < len(history) < 40  # stopped early
    assert all("valid_rmse" in h for h in history)
    assert best == len(history) - 2  # patience 2: the best epoch is restored
    assert min(history, key=lambda h: h["valid_rmse"])["epoch"] == best
    assert "valid_rmse=" in err and "early stopping" in err
    assert f"best {best};" in out
    # the summary reports the kept (best) epoch's metric
    assert f"valid_rmse={history[best - 1]['valid_rmse']:.4f}" in out


@pytest.mark.movielens
def test_train_predict_movielens_files(capsys: pytest.CaptureFixture[str], ml100k: Path, tmp_path: Path) -> None:
    rc, _, _ = fm(capsys, "-q", "train", ml100k / "ua.base", "--out", tmp_path / "m", "--task", "binary",
                  *SMALL, "--item-names", ml100k / "u.item")
    assert rc == 0
    rc, _, _ = fm(capsys, "predict", tmp_path / "m", ml100k / "ua.test", "--out", tmp_path / "p.csv")
    assert rc == 0
    pred = pd.read_csv(tmp_path / "p.csv")
    assert len(pred) == 9430 and pred["score"].between(0, 1).all()
    names = json.loads((tmp_path / "m" / "item_names.json").read_text(encoding="utf-8"))
    assert names["1"].startswith("Toy Story")


# ----------------------------------------------------------------------------- recommend
@pytest.fixture(scope="session")
def jsonl_lists(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recs") / "recs.jsonl"
    assert main(["-q", "recommend", str(models["regression"]), "--k", "20", "--out", str(out)]) == 0
    return out


def test_recommend_jsonl(jsonl_lists: Path, data: Path) -> None:
    lists = read_lists(jsonl_lists)
    train = pd.read_csv(data / "train.csv")
    seen = seen_pairs(train)
    assert sorted(lists) == sorted(seen)  # every user
    for user, (items, scores) in lists.items():
        assert len(items) == 20 == len(set(items))
        assert all(a >= b for a, b in zip(scores, scores[1:]))  # best first
        assert not set(items) & seen[user]  # training items excluded by default


def test_recommend_include_seen(capsys: pytest.CaptureFixture[str], models: dict[str, Path], data: Path,
                                jsonl_lists: Path, tmp_path: Path) -> None:
    rc, _, _ = fm(capsys, "recommend", models["regression"], "--k", "20", "--out", tmp_path / "all.jsonl",
                  "--include-seen")
    assert rc == 0
    seen = seen_pairs(pd.read_csv(data / "train.csv"))
    lists = read_lists(tmp_path / "all.jsonl")
    n_seen = sum(len(set(items) & seen[u]) for u, (items, _) in lists.items())
    assert n_seen > 0
    # the unseen items keep their order: the default list is the seen-filtered full ranking
    default = read_lists(jsonl_lists)
    for user, (items, _) in lists.items():
        unseen = [i for i in items if i not in seen[user]]
        assert unseen == default[user][0][: len(unseen)]


def test_recommend_parquet_matches_jsonl(capsys: pytest.CaptureFixture[str], models: dict[str, Path],
                                         jsonl_lists: Path, tmp_path: Path) -> None:
    rc, out, _ = fm(capsys, "recommend", models["regression"], "--k", "20", "--out", tmp_path / "r.parquet")
    assert rc == 0 and f"for {N_USERS} users" in out
    df = pd.read_parquet(tmp_path / "r.parquet")
    assert list(df.columns) == ["user_id", "rank", "item_id", "score"]
    assert len(df) == N_USERS * 20
    expected = read_lists(jsonl_lists)
    for user, g in df.groupby("user_id"):
        assert g["rank"].tolist() == list(range(1, 21))
        assert g["item_id"].tolist() == expected[user][0]
        np.testing.assert_allclose(g["score"], expected[user][1], rtol=1e-6)


def test_recommend_sqlite_matches_jsonl(capsys: pytest.CaptureFixture[str], models: dict[str, Path],
                                        jsonl_lists: Path, tmp_path: Path) -> None:
    db = tmp_path / "recs.db"
    rc, _, _ = fm(capsys, "recommend", models["regression"], "--k", "20", "--out", f"sqlite:///{db}",
                  "--run-id", "first")
    assert rc == 0
    lists = sqlite_lists(db)
    expected = read_lists(jsonl_lists)
    assert lists.keys() == expected.keys()
    for user, (items, scores) in lists.items():
        assert items == expected[user][0]
        np.testing.assert_allclose(scores, expected[user][1], rtol=1e-6)
    # a second publish re-points the view in one step
    rc, _, _ = fm(capsys, "recommend", models["regression"], "--k", "5", "--out", f"sqlite:///{db}",
                  "--run-id", "second")
    assert rc == 0
    again = sqlite_lists(db)
    assert all(v[0] == expected[u][0][:5] for u, v in again.items()) and len(again) == N_USERS


def test_recommend_sagemaker_layout(capsys: pytest.CaptureFixture[str], models: dict[str, Path],
                                    jsonl_lists: Path, tmp_path: Path) -> None:
    out = tmp_path / "knn.jsonl"
    rc, _, _ = fm(capsys, "recommend", models["regression"], "--k", "20", "--out", out, "--format", "sagemaker")
    assert rc == 0
    expected = list(read_lists(jsonl_lists).values())  # same user order
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == N_USERS
    for rec, (items, scores) in zip(lines, expected):
        assert set(rec) >= {"labels", "distances"}
        assert rec["distances"] == sorted(rec["distances"])  # ascending, best last
        assert [int(x) for x in reversed(rec["labels"])] == items
        assert rec["predicted_label"] == float(items[0])
        np.testing.assert_allclose(list(reversed(rec["distances"])), scores, rtol=1e-6)


def test_recommend_flat_index_matches_exact(capsys: pytest.CaptureFixture[str], models: dict[str, Path],
                                            jsonl_lists: Path, tmp_path: Path) -> None:
    rc, _, _ = fm(capsys, "recommend", models["regression"], "--k", "20", "--out", tmp_path / "flat.jsonl",
                  "--index", "flat")
    assert rc == 0
    flat = read_lists(tmp_path / "flat.jsonl")
    exact = read_lists(jsonl_lists)
    assert flat.keys() == exact.keys()
    for user, (items, scores) in flat.items():
        e_items, e_scores = exact[user]
        np.testing.assert_allclose(scores, e_scores, rtol=1e-5, atol=1e-5)
        # equal up to ties: the items above any near-tie are the same, in the same order
        s = np.asarray(e_scores)
        for j in range(len(items)):
            tied = np.flatnonzero(np.abs(s - s[j]) < 1e-4)
            if len(tied) == 1:
                assert items[j] == e_items[j], (user, j)
            elif tied[-1] < len(items) - 1:  # a tie inside the list: the same items, any order
                assert items[j] in {e_items[t] for t in tied}, (user, j)
            # a tie at the cut-off may bring in another item of the same score


# ----------------------------------------------------------------------------- evaluate
def parse_metrics(out: str) -> dict[str, float]:
    return {k: float(v) for k, v in (line.split("\t") for line in out.splitlines())}


def test_evaluate_regression(capsys: pytest.CaptureFixture[str], models: dict[str, Path], data: Path,
                             tmp_path: Path) -> None:
    rc, out, _ = fm(capsys, "evaluate", models["regression"], data / "test.csv", "--k", "10", "20",
                    "--json", tmp_path / "m.json")
    assert rc == 0
    m = parse_metrics(out)
    for key in ("rmse", "mae", "model_precision@10", "model_recall@20", "model_ndcg@10",
                "popularity_precision@10", "model_map@10", "model_hit_rate@10", "model_mrr@10"):
        assert key in m, key
    assert m["n_test_rows"] == N_USERS * 5 and m["model_n_users_evaluated"] == N_USERS
    assert 0 < m["rmse"] < 2 and 0 <= m["model_precision@10"] <= 1
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["rmse"] == pytest.approx(m["rmse"], abs=1e-4)


def test_evaluate_binary(capsys: pytest.CaptureFixture[str], models: dict[str, Path], data: Path) -> None:
    rc, out, _ = fm(capsys, "evaluate", models["binary"], data / "test.csv", "--no-baseline", "--min-rating", "4")
    assert rc == 0
    m = parse_metrics(out)
    assert {"accuracy", "log_loss", "roc_auc", "model_precision@10"} <= m.keys()
    assert 0.5 < m["accuracy"] <= 1 and 0.5 < m["roc_auc"] <= 1
    assert not any(k.startswith("popularity_") for k in m)


def test_evaluate_existing_recommendations(capsys: pytest.CaptureFixture[str], models: dict[str, Path],
                                           data: Path, jsonl_lists: Path, tmp_path: Path) -> None:
    rc, out, _ = fm(capsys, "evaluate", models["regression"], data / "test.csv", "--k", "10", "--no-baseline")
    assert rc == 0
    own = parse_metrics(out)
    files = [jsonl_lists]
    rc, _, _ = fm(capsys, "recommend", models["regression"], "--k", "20", "--out", tmp_path / "r.parquet")
    files.append(tmp_path / "r.parquet")
    for src in files:
        rc, out, _ = fm(capsys, "evaluate", models["regression"], data / "test.csv", "--k", "10",
                        "--recommendations", src)
        assert rc == 0
        lists_m = parse_metrics(out)
        assert "rmse" not in lists_m
        for key in ("model_precision@10", "model_recall@10", "model_ndcg@10", "model_n_users_evaluated"):
            assert lists_m[key] == pytest.approx(own[key], abs=1e-4), (src, key)


# ----------------------------------------------------------------------------- bad input
def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "needles"),
    [
        ("missing.csv", None, ["missing.csv", "file not found"]),
        ("empty.csv", b"", ["empty.csv", "empty file"]),
        ("rating.csv", b"user_id,item_id,rating\n1,1,5\n1,2,x\n", ["rating.csv:3", "'x'"]),
        ("dup.csv", b"user_id,item_id,rating\n1,1,5\n1,2,3\n1,1,4\n", ["dup.csv:4", "duplicate", "'1,1'"]),
        ("delim.csv", b"user_id,item_id,rating\n1,1,5\n1;2;3\n", ["delim.csv:3", "'1;2;3'", "fields"]),
        ("latin.csv", b"user_id,item_id,rating\n1,1,5\n1,caf\xe9,3\n", ["latin.csv:3", "UTF-8"]),
    ],
)
def test_train_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str,
                         content: bytes | None, needles: list[str]) -> None:
    src = tmp_path / name
    if content is not None:
        src.write_bytes(content)
    rc, out, err = fm(capsys, "train", src, "--out", tmp_path / "model", *SMALL)
    assert_one_line_error(rc, err, "train", *needles)
    assert out == ""
    assert not (tmp_path / "model").exists()
    assert [p.name for p in tmp_path.iterdir()] == ([name] if content is not None else [])


def test_train_bad_input_leaves_previous_model(capsys: pytest.CaptureFixture[str], models: dict[str, Path],
                                               tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(models["regression"], model)
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    src = write(tmp_path / "dup.csv", b"user_id,item_id,rating\n1,1,5\n1,2,3\n1,1,4\n")
    rc, _, err = fm(capsys, "train", src, "--out", model, *SMALL)
    assert_one_line_error(rc, err, "train", "dup.csv:4")
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before


def test_duplicates_last_resolves(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src = write(tmp_path / "dup.csv", b"user_id,item_id,rating\n1,1,5\n1,2,3\n1,1,4\n2,1,2\n")
    rc, out, err = fm(capsys, "train", src, "--out", tmp_path / "m", *SMALL, "--duplicates", "last")
    assert rc == 0, err
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["extra"]["train_rows"] == 3


def test_train_bad_valid_file(capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path) -> None:
    bad = write(tmp_path / "valid.csv", b"user_id,item_id,rating\n1,1,five\n")
    rc, _, err = fm(capsys, "train", data / "train.csv", "--valid", bad, "--out", tmp_path / "m", *SMALL)
    assert_one_line_error(rc, err, "train", "valid.csv:2", "'five'")
    assert not (tmp_path / "m").exists()


def test_predict_tampered_model(capsys: pytest.CaptureFixture[str], models: dict[str, Path], data: Path,
                                tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(models["regression"], model)
    with open(model / "arrays.npz", "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    previous = write(tmp_path / "pred.csv", b"user_id,item_id,score\n1,1,3.5\n")
    rc, out, err = fm(capsys, "predict", model, data / "test.csv", "--out", previous)
    assert_one_line_error(rc, err, "predict", "arrays.npz", "checksum mismatch")
    assert out == "" and previous.read_bytes() == b"user_id,item_id,score\n1,1,3.5\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "pred.csv"]  # no temp file left


def test_predict_missing_model(capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path) -> None:
    rc, _, err = fm(capsys, "predict", tmp_path / "nope", data / "test.csv", "--out", tmp_path / "p.csv")
    assert_one_line_error(rc, err, "predict", "nope", "not found")
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("target", ["x.jsonl", "x.parquet", "sqlite:///{tmp}/x.db"])
def test_recommend_k_zero(capsys: pytest.CaptureFixture[str], models: dict[str, Path], tmp_path: Path,
                          target: str) -> None:
    out = target.format(tmp=tmp_path) if "{tmp}" in target else str(tmp_path / target)
    rc, _, err = fm(capsys, "recommend", models["regression"], "--k", "0", "--out", out)
    assert_one_line_error(rc, err, "recommend", "--k", "got 0")
    assert list(tmp_path.iterdir()) == []  # nothing created, not even an empty database


def test_recommend_unsupported_target(capsys: pytest.CaptureFixture[str], models: dict[str, Path],
                                      tmp_path: Path) -> None:
    rc, _, err = fm(capsys, "recommend", models["regression"], "--out", tmp_path / "out.txt")
    assert_one_line_error(rc, err, "recommend", "out.txt", "unknown sink target")
    assert list(tmp_path.iterdir()) == []


def test_recommend_bad_target_keeps_previous_lists(capsys: pytest.CaptureFixture[str], models: dict[str, Path],
                                                   jsonl_lists: Path, tmp_path: Path) -> None:
    previous = tmp_path / "recs.jsonl"
    shutil.copy(jsonl_lists, previous)
    empty_users = write(tmp_path / "users.txt", b"")
    rc, _, err = fm(capsys, "recommend", models["regression"], "--out", previous, "--users", empty_users)
    assert_one_line_error(rc, err, "recommend", "users.txt", "no IDs")
    assert previous.read_bytes() == jsonl_lists.read_bytes()


def test_run_invalid_toml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = write(tmp_path / "bad.toml", b"[model\nn_factors = 8\n")
    rc, out, err = fm(capsys, "run", cfg)
    assert_one_line_error(rc, err, "run", "bad.toml", "invalid TOML", "line 1")
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_debug_shows_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                               models: dict[str, Path], data: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        main(["--debug", "train", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "m")])
    with pytest.raises(DataError, match="empty file"):  # also accepted after the command
        main(["train", str(write(tmp_path / "e.csv", b"")), "--out", str(tmp_path / "m"), "--debug"])
    model = tmp_path / "model"
    shutil.copytree(models["regression"], model)
    (model / "arrays.npz").write_bytes((model / "arrays.npz").read_bytes() + b"x")
    with pytest.raises(ArtifactError, match="checksum"):
        main(["--debug", "predict", str(model), str(data / "test.csv"), "--out", str(tmp_path / "p.csv")])


def test_errors_print_on_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from fmrec.errors import StoreError

    def store_error(args: object) -> int:
        raise StoreError("first line\nsecond line")

    def os_error(args: object) -> int:
        raise PermissionError(13, "Permission denied", "/root/x\ny")

    monkeypatch.setattr("fmrec.cli.datasets.list_", store_error)
    rc, _, err = fm(capsys, "datasets", "list")
    assert_one_line_error(rc, err, "datasets", "first line second line")
    monkeypatch.setattr("fmrec.cli.datasets.list_", os_error)
    rc, _, err = fm(capsys, "datasets", "list")
    assert_one_line_error(rc, err, "datasets", "PermissionError", "Permission denied")


def test_debug_traceback_in_console_script(tmp_path: Path) -> None:
    proc = subprocess.run([str(console_script()), "--debug", "train", str(tmp_path / "missing.csv"),
                           "--out", str(tmp_path / "m")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr and "DataError" in proc.stderr


# ----------------------------------------------------------------------------- run
def small_config(path: Path, out_dir: Path, **sections: dict[str, object]) -> Path:
    body = {"model": {"n_factors": 8, "n_epochs": 2}, "output": {"dir": str(out_dir)}}
    for name, values in sections.items():
        body.setdefault(name, {}).update(values)
    lines = []
    for name, values in body.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if isinstance(value, str):
                lines.append(f"{key} = {toml_str(value)}")
            elif isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_run_custom_config(capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path) -> None:
    target = tmp_path / "lists" / "recs.jsonl"
    cfg = small_config(
        tmp_path / "pipeline.toml", tmp_path / "out",
        data={"train": str(data / "train.csv"), "test": str(data / "test.csv")},
        model={"task": "binary", "threshold": 4.0},
        recommend={"k": 15, "target": str(target)},
        evaluate={"k": [5, 10], "min_rating": 4.0},
        output={"show_user": "7"},
    )
    rc, out, err = fm(capsys, "run", cfg)
    assert rc == 0, err
    assert f"lists published to {target}" in out
    assert "test: accuracy=" in out and "precision@10:" in out and "precision@5:" in out
    assert "top 10 for user 7:" in out
    lists = read_lists(target)
    seen = seen_pairs(pd.read_csv(data / "train.csv"))
    assert len(lists) == N_USERS
    for user, (items, scores) in lists.items():
        assert len(items) == 15 and scores == sorted(scores, reverse=True)
        assert not set(items) & seen[user]
    runs = list((tmp_path / "out" / "runs").iterdir())
    assert len(runs) == 1
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["n_users_served"] == N_USERS and 0 <= metrics["accuracy"] <= 1
    assert "model_precision@10" in metrics and "popularity_ndcg@5" in metrics
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["model"]["task"] == "binary" and config["recommend"]["target"] == str(target)
    assert (runs[0] / "model" / "manifest.json").is_file() and "published" in (runs[0] / "run.log").read_text()
    # the run's model folder works with the other commands
    rc, _, _ = fm(capsys, "predict", runs[0] / "model", data / "test.csv", "--out", tmp_path / "p.csv")
    assert rc == 0 and pd.read_csv(tmp_path / "p.csv")["score"].between(0, 1).all()


def test_run_unknown_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "c.toml", tmp_path / "out", recommend={"kk": 10})
    rc, out, err = fm(capsys, "run", cfg)
    assert_one_line_error(rc, err, "run", "c.toml", "unknown key 'kk'", "[recommend]")
    assert not (tmp_path / "out").exists()


def test_run_wrong_type(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "c.toml", tmp_path / "out", recommend={"k": "ten"})
    rc, _, err = fm(capsys, "run", cfg)
    assert_one_line_error(rc, err, "run", "c.toml", "[recommend] k", "'ten'")


def test_run_lock_held(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from fmrec.pipeline import RunLock

    out_dir = tmp_path / "out"
    cfg = small_config(tmp_path / "c.toml", out_dir)
    with RunLock(out_dir):
        rc, out, err = fm(capsys, "run", cfg)
    assert_one_line_error(rc, err, "run", ".fmrec.lock", "another fmrec run holds the lock")
    assert not (out_dir / "runs").exists() and not (out_dir / "recommendations.db").exists()
    rc, out, err = fm(capsys, "run", cfg, "-q")  # released: the next run goes ahead
    assert rc == 0 and err == "" and "lists published" in out  # -q: nothing on stderr ...
    (run,) = (out_dir / "runs").iterdir()
    assert "INFO" in (run / "run.log").read_text()  # ... but run.log keeps the INFO lines


def test_run_failing_stage_keeps_published_lists(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    db = out_dir / "recommendations.db"
    rc, _, err = fm(capsys, "-q", "run", small_config(tmp_path / "ok.toml", out_dir, recommend={"k": 10}))
    assert rc == 0, err
    before = sqlite_snapshot(db)
    assert len(before[0]) == N_USERS * 10 and len(before[1]) == 1

    bad = small_config(tmp_path / "bad.toml", out_dir, recommend={"k": 5},
                       model={"task": "regression", "learning_rate": 1e12, "optimizer": "sgd"})  # diverges
    rc, out, err = fm(capsys, "run", bad)
    assert rc == 1 and out == ""
    last = err.rstrip("\n").split("\n")[-1]
    assert last.startswith("fmrec run: error:") and "learning_rate" in last
    assert "stage 'train' failed" in last
    assert sqlite_snapshot(db) == before
    logs = [(run / "run.log").read_text() for run in (out_dir / "runs").iterdir()]
    assert len(logs) == 2 and sum("stage train failed" in log for log in logs) == 1


def test_run_default_console_script(tmp_path: Path) -> None:
    proc = subprocess.run([str(console_script()), "run"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    db = tmp_path / "fmrec-output" / "recommendations.db"
    assert db.is_file()
    with sqlite3.connect(db) as conn:
        per_user = conn.execute(
            "SELECT user_id, COUNT(*), MIN(rank), MAX(rank), COUNT(DISTINCT rank), COUNT(DISTINCT item_id) "
            "FROM recommendations GROUP BY user_id"
        ).fetchall()
        worse_first = conn.execute(
            "SELECT COUNT(*) FROM recommendations a JOIN recommendations b "
            "ON a.user_id = b.user_id AND b.rank = a.rank + 1 WHERE b.score > a.score"
        ).fetchone()[0]
    assert len(per_user) == N_USERS
    assert all(row[1:] == (100, 1, 100, 100, 100) for row in per_user)
    assert worse_first == 0  # best first
    out = proc.stdout
    assert "lists published to sqlite:///fmrec-output/recommendations.db" in out
    assert "precision@10:" in out and "(popularity" in out
    assert "top 10 for user" in out
    listed = [line for line in out.splitlines() if line.startswith("  ") and ". " in line]
    assert len(listed) == 10 and all(len(line.split("  ")) >= 3 and line.split("  ")[2].strip() for line in listed)
    runs = list((tmp_path / "fmrec-output" / "runs").iterdir())
    assert len(runs) == 1 and {"config.json", "metrics.json", "model", "run.log"} <= {p.name for p in runs[0].iterdir()}


# ----------------------------------------------------------------------------- datasets
def tiny_ml100k_zip(path: Path) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t1\t5\t881250949\n1\t2\t3\t881250950\n2\t1\t4\t881250951\n")
        zf.writestr("ml-100k/u.item", "1|Toy Story (1995)|01-Jan-1995||x\n2|GoldenEye (1995)|01-Jan-1995||x\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_datasets_list(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = fm(capsys, "datasets", "list")
    assert rc == 0 and "movielens-100k" in out and "movielens-latest-small" in out


@pytest.mark.network
def test_datasets_fetch_from_local_mirror(capsys: pytest.CaptureFixture[str], served: tuple[Path, str],
                                          tmp_path: Path) -> None:
    root, base = served
    digest = tiny_ml100k_zip(root / "ml-100k.zip")
    dest = tmp_path / "data"
    rc, out, err = fm(capsys, "datasets", "fetch", "movielens-100k", "--dest", dest,
                      "--url", f"{base}/ml-100k.zip", "--sha256", digest)
    assert rc == 0, err
    assert "movielens-100k ready in" in out and "\r" not in err
    assert (dest / "ml-100k" / "u.data").read_text().startswith("1\t1\t5")
    # the fetched files feed the other commands
    rc, _, err = fm(capsys, "-q", "train", dest / "ml-100k" / "u.data", "--out", tmp_path / "m", *SMALL)
    assert rc == 0, err


@pytest.mark.network
def test_datasets_fetch_wrong_sha256(capsys: pytest.CaptureFixture[str], served: tuple[Path, str],
                                     tmp_path: Path) -> None:
    root, base = served
    tiny_ml100k_zip(root / "ml-100k.zip")
    dest = tmp_path / "data"
    rc, out, err = fm(capsys, "datasets", "fetch", "movielens-100k", "--dest", dest,
                      "--url", f"{base}/ml-100k.zip", "--sha256", "0" * 64)
    assert_one_line_error(rc, err, "datasets", "sha256 mismatch", "nothing was extracted")
    assert out == ""
    assert not dest.exists() or list(dest.iterdir()) == []


def test_datasets_unknown_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _, err = fm(capsys, "datasets", "fetch", "movielens-1b", "--dest", tmp_path / "d")
    assert_one_line_error(rc, err, "datasets", "movielens-1b")
    assert not (tmp_path / "d").exists()
