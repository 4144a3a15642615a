"""Tests of fmrec.pipeline: config loading, the run folder, stage errors, publishing last, the lock."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fmrec.errors import ConfigError, DataError, DivergenceError
from fmrec.pipeline import DEFAULTS, RunLock, format_summary, load_config, run_pipeline

SMALL_MODEL = {"n_factors": 8, "n_epochs": 2}
N_USERS = 943


pytestmark = pytest.mark.usefixtures("restore_fmrec_logger")


def config(out_dir: Path, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {"model": dict(SMALL_MODEL), "output": {"dir": str(out_dir)}}
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(None, overrides)


def view_rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT * FROM recommendations ORDER BY user_id, rank").fetchall()


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- load_config
def test_defaults_without_file() -> None:
    cfg = load_config()
    assert cfg == DEFAULTS and cfg is not DEFAULTS
    cfg["data"]["train"] = "x"
    assert DEFAULTS["data"]["train"] == "builtin"  # a deep copy


def test_file_then_overrides(tmp_path: Path) -> None:
    f = write_toml(tmp_path / "c.toml", '[model]\nn_factors = 16\nlearning_rate = 0.1\n[recommend]\nk = 7\n')
    cfg = load_config(f, {"recommend": {"k": 9}})
    assert cfg["model"]["n_factors"] == 16 and cfg["model"]["learning_rate"] == 0.1
    assert cfg["recommend"]["k"] == 9 and cfg["recommend"]["index"] == "exact"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[nope]\nx = 1\n", "unknown section [nope]"),
        ("[data]\ntrian = 'a.csv'\n", "unknown key 'trian' in [data]"),
        ("data = 3\n", "[data] must be a table"),
        ("[recommend]\nk = 'ten'\n", "[recommend] k must be an integer"),
        ("[recommend]\nk = 0\n", "[recommend] k must be a positive integer"),
        ("[recommend]\nk = 1.5\n", "[recommend] k must be an integer"),
        ("[recommend]\nexclude_seen = 'no'\n", "[recommend] exclude_seen must be true or false"),
        ("[recommend]\nindex = 'hnsw'\n", "[recommend] index must be one of"),
        ("[recommend]\nformat = 'csv'\n", "[recommend] format must be one of"),
        ("[data]\ntest_per_user = -1\n", "[data] test_per_user must be 0 or more"),
        ("[data]\nduplicates = 'keep'\n", "[data] duplicates must be one of"),
        ("[data]\ntrain = 3\n", "[data] train must be a string"),
        ("[evaluate]\nk = [10, 0]\n", "[evaluate] k must be a positive integer or a list"),
        ("[evaluate]\nk = []\n", "[evaluate] k must be a positive integer or a list"),
        ("[evaluate]\nmin_rating = 'high'\n", "[evaluate] min_rating must be a number"),
        ("[output]\nshow_user = 5\n", "[output] show_user must be a string"),
        ("[model\n", "invalid TOML"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    f = write_toml(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    assert needle in str(exc.value) and "c.toml" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_good_values_of_other_types(tmp_path: Path) -> None:
    f = write_toml(tmp_path / "c.toml", "[evaluate]\nk = 5\nmin_rating = 4\n[model]\nimplicit = 'both'\n")
    cfg = load_config(f)
    assert cfg["evaluate"]["k"] == 5 and cfg["evaluate"]["min_rating"] == 4
    assert cfg["model"]["implicit"] == "both"


@pytest.mark.parametrize("text, needle", [
    ("[model]\nanything = 'goes'\n", "invalid parameter 'anything'"),
    ("[model]\nn_factors = 0\n", "n_factors must be a positive integer"),
    ("[model]\ncontext = 'hour'\n", "context must be"),
])
def test_model_section_is_validated_when_the_config_loads(tmp_path: Path, text: str, needle: str) -> None:
    f = write_toml(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    assert needle in str(exc.value) and "c.toml: [model]" in str(exc.value)


def test_missing_or_undecodable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.toml")
    latin = tmp_path / "c.toml"
    latin.write_bytes(b"[data]\ntrain = '\xe9.csv'\n")
    with pytest.raises(ConfigError, match="c.toml: not UTF-8"):
        load_config(latin)
    with pytest.raises(ConfigError, match="folder"):
        load_config(tmp_path)


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    f = write_toml(folder / "c.toml", """
[data]
train = "d/train.csv"
test = "/abs/test.csv"
item_names = "names.csv"
[recommend]
target = "sqlite:///recs.db"
[output]
dir = "out"
""")
    cfg = load_config(f)
    base = folder.resolve()
    assert cfg["data"]["train"] == str(base / "d" / "train.csv")
    assert cfg["data"]["test"] == "/abs/test.csv"
    assert cfg["data"]["item_names"] == str(base / "names.csv")
    assert cfg["recommend"]["target"] == f"sqlite:///{base.as_posix()}/recs.db"
    assert cfg["output"]["dir"] == str(base / "out")
    for target, expected in [("recs.jsonl", str(base / "recs.jsonl")), ("/x/r.parquet", "/x/r.parquet"),
                             ("sqlite:////abs/r.db", "sqlite:////abs/r.db"),
                             ("postgresql://u@h/db", "postgresql://u@h/db")]:
        write_toml(f, f'[recommend]\ntarget = "{target}"\n')
        assert load_config(f)["recommend"]["target"] == expected
    write_toml(f, '[data]\ntrain = "builtin"\n')
    assert load_config(f)["data"]["train"] == "builtin"
    # overrides (the CLI's --output / --target) stay relative to the working directory
    cfg = load_config(f, {"output": {"dir": "here"}, "recommend": {"target": "r.jsonl"}})
    assert cfg["output"]["dir"] == "here" and cfg["recommend"]["target"] == "r.jsonl"


# ----------------------------------------------------------------------------- run_pipeline
def test_run_builtin_to_sqlite(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    res = run_pipeline(config(out_dir, recommend={"k": 10}), run_id="first_run")
    assert res.run_id == "first_run" and res.folder == out_dir / "runs" / "first_run"
    assert res.target == f"sqlite:///{(out_dir / 'recommendations.db').as_posix()}"
    rows = view_rows(out_dir / "recommendations.db")
    assert len(rows) == N_USERS * 10 and {r[1] for r in rows} == set(range(1, 11))
    files = {p.name for p in res.folder.iterdir()}
    assert {"config.json", "metrics.json", "model", "run.log"} <= files
    resolved = json.loads((res.folder / "config.json").read_text())
    assert resolved["run_id"] == "first_run" and resolved["recommend"]["target"] == res.target
    metrics = json.loads((res.folder / "metrics.json").read_text())
    assert metrics["n_users_served"] == N_USERS and metrics["n_test_rows"] == N_USERS * 10
    # the default task is ranking: top-k metrics beside the baseline, no rating metrics
    assert {"model_precision@10", "popularity_precision@10"} <= metrics.keys()
    assert "rmse" not in metrics
    # metrics.json is written before the lists are published, so it cannot time the publish step
    assert set(metrics["seconds"]) == {"load", "train", "recommend", "evaluate"}
    assert set(res.seconds) == {"load", "train", "recommend", "evaluate", "publish"}
    assert res.metrics["model_precision@10"] == metrics["model_precision@10"]
    log = (res.folder / "run.log").read_text()
    assert log.index("staged top-10") < log.index("published top-10")
    # the summary: first user's list with the built-in titles
    assert res.sample_user == 1 and len(res.sample_items) == 10
    assert all(name for _, name, _ in res.sample_items)
    lines = list(format_summary(res))
    assert lines[0] == f"run first_run: lists published to {res.target}"
    assert not any(line.startswith("test: rmse=") for line in lines)
    assert any(line.startswith("precision@10:") and "(popularity" in line for line in lines)
    assert lines[-11] == "top 10 for user 1:"
    # the model folder is a normal model
    from fmrec.model import load_model

    assert load_model(res.folder / "model").n_factors == 8


def test_run_without_evaluation_to_jsonl(tmp_path: Path) -> None:
    target = tmp_path / "knn.jsonl"
    res = run_pipeline(config(tmp_path / "out", data={"test_per_user": 0},
                              recommend={"k": 5, "target": str(target), "format": "sagemaker"}))
    metrics = json.loads((res.folder / "metrics.json").read_text())
    assert "rmse" not in metrics and "evaluate" not in metrics["seconds"]
    lines = [json.loads(x) for x in target.read_text().splitlines()]
    assert len(lines) == N_USERS and all(len(x["labels"]) == 5 for x in lines)
    assert not (tmp_path / "out" / "recommendations.db").exists()


def test_show_user_found_in_a_later_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fmrec.recommend

    original = fmrec.recommend.recommend_all
    monkeypatch.setattr(fmrec.recommend, "recommend_all", lambda *a, **kw: original(*a, **{**kw, "batch_size": 100}))
    res = run_pipeline(config(tmp_path / "out", data={"test_per_user": 0}, output={"show_user": "900"}))
    assert res.sample_user == 900
    lists = dict((r[0], r) for r in view_rows(tmp_path / "out" / "recommendations.db") if r[0] == 900 and r[1] == 1)
    assert res.sample_items[0][0] == lists[900][2]
    # an unknown user falls back to the first user
    res = run_pipeline(config(tmp_path / "out", data={"test_per_user": 0}, output={"show_user": "nobody"}))
    assert res.sample_user == 1


def test_run_custom_files_binary(tmp_path: Path) -> None:
    from fmrec.data.synthetic import builtin_split, load_builtin

    train, test = builtin_split(load_builtin(), test_per_user=3)
    train.to_frame().to_parquet(tmp_path / "train.parquet")
    test.to_frame().to_csv(tmp_path / "test.tsv", sep="\t", index=False)
    f = write_toml(tmp_path / "c.toml", f"""
[data]
train = "train.parquet"
test = "test.tsv"
[model]
task = "binary"
threshold = 4.0
n_factors = 8
n_epochs = 2
[recommend]
k = 12
target = "recs.parquet"
[evaluate]
k = [3, 12]
min_rating = 4
baseline = false
[output]
dir = "{(tmp_path / 'out').as_posix()}"
""")
    res = run_pipeline(f)
    assert res.target == str(tmp_path.resolve() / "recs.parquet")
    import pandas as pd

    df = pd.read_parquet(res.target)
    assert len(df) == N_USERS * 12
    m = res.metrics
    assert {"accuracy", "roc_auc", "model_ndcg@3", "model_ndcg@12"} <= m.keys()
    assert not any(k.startswith("popularity_") for k in m)
    assert m["n_test_rows"] == N_USERS * 3


def test_training_failure_keeps_published_lists(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    run_pipeline(config(out_dir, recommend={"k": 5}), run_id="good")
    before = view_rows(out_dir / "recommendations.db")
    with pytest.raises(DivergenceError) as exc:  # valid parameters, but training blows up
        run_pipeline(config(out_dir, model={"task": "regression", "learning_rate": 1e12, "optimizer": "sgd"}),
                     run_id="bad")
    assert exc.value.stage == "train"  # type: ignore[attr-defined]
    assert view_rows(out_dir / "recommendations.db") == before
    assert "stage train failed" in (out_dir / "runs" / "bad" / "run.log").read_text()
    assert not (out_dir / "runs" / "bad" / "model").exists()


def test_load_failure_names_the_stage(tmp_path: Path) -> None:
    bad = tmp_path / "r.csv"
    bad.write_text("user_id,item_id,rating\n1,1,5\n1,2,oops\n")
    with pytest.raises(DataError) as exc:
        run_pipeline(config(tmp_path / "out", data={"train": str(bad)}))
    assert exc.value.stage == "load" and "r.csv:3" in str(exc.value)  # type: ignore[attr-defined]


@pytest.mark.parametrize("sink", ["jsonl", "sqlite"])
def test_evaluation_failure_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sink: str) -> None:
    """Lists are published last: a failing evaluation leaves the previous lists in place."""
    import fmrec.pipeline

    out_dir = tmp_path / "out"
    target = str(tmp_path / "recs.jsonl") if sink == "jsonl" else ""
    run_pipeline(config(out_dir, recommend={"k": 5, "target": target}), run_id="good")
    path = Path(target) if target else out_dir / "recommendations.db"
    before = path.read_bytes() if target else view_rows(path)

    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise DataError("evaluation blew up")

    monkeypatch.setattr(fmrec.pipeline, "evaluate_model", broken)
    with pytest.raises(DataError) as exc:
        run_pipeline(config(out_dir, recommend={"k": 7, "target": target}, model={"random_state": 3}),
                     run_id="bad")
    assert exc.value.stage == "evaluate"  # type: ignore[attr-defined]
    assert (path.read_bytes() if target else view_rows(path)) == before
    if not target:
        with sqlite3.connect(path) as conn:
            runs = [r[0] for r in conn.execute("SELECT run_id FROM fmrec_runs")]
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert runs == ["good"] and not any("bad" in t for t in tables)
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) in ([], [".fmrec.lock"])


def test_recommend_failure_names_the_stage(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        run_pipeline(config(tmp_path / "out", recommend={"target": str(tmp_path / "recs.txt")}))
    assert exc.value.stage == "recommend"  # type: ignore[attr-defined]
    assert not (tmp_path / "recs.txt").exists()


def test_lock(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    with RunLock(out_dir):
        with pytest.raises(ConfigError, match="another fmrec run holds the lock"):
            with RunLock(out_dir):
                pass  # pragma: no cover
        with pytest.raises(ConfigError, match="holds the lock"):
            run_pipeline(config(out_dir))
    assert not (out_dir / "runs").exists()
    with RunLock(out_dir):  # released on exit
        pass


@pytest.mark.parametrize("run_id", ["../escape", "a/b", "x y", ""])
def test_run_id_is_validated_before_anything_is_written(tmp_path: Path, run_id: str) -> None:
    out_dir = tmp_path / "out"
    if run_id == "":  # empty means "make one"
        res = run_pipeline(config(out_dir, data={"test_per_user": 0}, recommend={"k": 1}), run_id=run_id)
        assert res.run_id and (out_dir / "runs" / res.run_id).is_dir()
        return
    with pytest.raises(ConfigError, match="invalid run_id"):
        run_pipeline(config(out_dir), run_id=run_id)
    assert not out_dir.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_duplicate_run_id(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    run_pipeline(config(out_dir, data={"test_per_user": 0}, recommend={"k": 1}), run_id="same")
    with pytest.raises(ConfigError, match="already exists"):
        run_pipeline(config(out_dir, data={"test_per_user": 0}, recommend={"k": 1}), run_id="same")


def test_logger_level_restored(tmp_path: Path) -> None:
    root = logging.getLogger("fmrec")
    root.setLevel(logging.WARNING)
    n_handlers = len(root.handlers)
    run_pipeline(config(tmp_path / "out", data={"test_per_user": 0}, recommend={"k": 1}))
    assert root.level == logging.WARNING and len(root.handlers) == n_handlers


def test_results_are_reproducible(tmp_path: Path) -> None:
    run_pipeline(config(tmp_path / "a", data={"test_per_user": 0}, recommend={"k": 5}))
    run_pipeline(config(tmp_path / "b", data={"test_per_user": 0}, recommend={"k": 5}))
    ra, rb = view_rows(tmp_path / "a" / "recommendations.db"), view_rows(tmp_path / "b" / "recommendations.db")
    assert ra == rb and np.isfinite([r[3] for r in ra]).all()
