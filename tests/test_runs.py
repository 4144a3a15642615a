"""Scheduled runs: ``fmrec run`` records model checksum + config with the run, and
``fmrec runs list|show|rollback`` for SQLite and PostgreSQL targets (real databases)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from fmrec.cli.main import main
from fmrec.errors import ConfigError, DataError
from fmrec.pipeline import load_config, run_pipeline
from fmrec.store import list_published_runs, read_postgres_topk, read_sqlite_topk, rollback_run
from _helpers import fm
from _readers import SQLITE_READER, publish, publish_while_reading, run_batches
from test_postgres import sorted_rows, split, sql
from test_store import as_rows

TINY = {"model": {"task": "regression", "n_factors": 8, "n_epochs": 1},
        "data": {"test_per_user": 0}, "recommend": {"k": 3}}


pytestmark = pytest.mark.usefixtures("restore_fmrec_logger")


def tiny_config(out_dir: Path, target: str = "", **sections: dict[str, Any]) -> dict[str, Any]:
    overrides: dict[str, dict[str, Any]] = {name: dict(values) for name, values in TINY.items()}
    overrides["output"] = {"dir": str(out_dir)}
    overrides["recommend"]["target"] = target
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(None, overrides)


# --------------------------------------------------------------------------- the run folder and the run record


def test_run_folder_and_sqlite_run_record(tmp_path: Path) -> None:
    res = run_pipeline(tiny_config(tmp_path / "out", model={"random_state": 1}), run_id="n1")
    files = {p.name for p in res.folder.iterdir()}
    assert {"config.json", "metrics.json", "model", "run.log", "index.json"} <= files
    index = json.loads((res.folder / "index.json").read_text())
    assert index["index"] == "exact" and index["class"] == "ExactIndex" and index["k"] == 3
    assert index["n_items"] > 1000 and index["dim"] == 8 + 1
    checksum = hashlib.sha256((res.folder / "model" / "manifest.json").read_bytes()).hexdigest()
    assert index["model_checksum"] == checksum
    (info,) = list_published_runs(res.target)
    assert info.run_id == "n1" and info.current and info.users == 943 and info.rows == 943 * 3
    assert info.meta["model_checksum"] == checksum
    assert info.meta["config"] == json.loads((res.folder / "config.json").read_text())
    assert info.meta["config"]["run_id"] == "n1" and info.meta["run_folder"] == str(res.folder)


def test_keep_runs_config_key(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for i in range(3):
        run_pipeline(tiny_config(out, recommend={"keep_runs": 2}), run_id=f"k{i}")
    assert [r.run_id for r in list_published_runs(f"sqlite:///{out / 'recommendations.db'}")] == ["k2", "k1"]
    with pytest.raises(ConfigError, match="keep_runs"):
        tiny_config(out, recommend={"keep_runs": 0})
    # file targets have no run log: keep_runs is ignored there, the run works
    res = run_pipeline(tiny_config(out, target=str(tmp_path / "r.jsonl")), run_id="file")
    assert Path(res.target).is_file()


# --------------------------------------------------------------------------- fmrec runs list / show / rollback


def check_runs_cli(capsys: pytest.CaptureFixture[str], target: str, results: list[Any],
                   read: Any) -> None:
    """list / show / rollback through the CLI on three published pipeline runs."""
    rc, out, _ = fm(capsys, "runs", "list", "--target", target)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["run_id", "started", "finished", "rows", "users"]
    assert [line.split()[0] for line in lines[1:]] == ["*", "r1", "r0"] and lines[1].split()[1] == "r2"
    assert lines[1].split()[6:8] == [str(943 * 3), "943"]
    rc, out, _ = fm(capsys, "runs", "show", "r0", "--target", target)
    assert rc == 0
    shown = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line and not line.startswith(" "))
    checksum = hashlib.sha256((results[0].folder / "model" / "manifest.json").read_bytes()).hexdigest()
    assert shown["run_id"] == "r0" and shown["current"] == "False" and shown["model_checksum"] == checksum
    assert shown["users"] == "943" and "config:" in out and '"run_id": "r0"' in out
    before = read(target, "r0")
    rc, out, _ = fm(capsys, "runs", "rollback", "r0", "--target", target)
    assert rc == 0 and "now serves run r0" in out
    assert sorted_rows(read(target, None)) == sorted_rows(before)
    assert [(r.run_id, r.current) for r in list_published_runs(target)] == [("r2", False), ("r1", False),
                                                                           ("r0", True)]
    rc, out, _ = fm(capsys, "runs", "list", "--target", target, "--json")
    assert [json.loads(line)["current"] for line in out.splitlines()] == [False, False, True]
    # unknown run: one-line error, nothing changes
    rc, out, err = fm(capsys, "runs", "rollback", "r9", "--target", target)
    assert rc == 1 and "no run 'r9'" in err and len(err.strip().splitlines()) == 1
    rc, out, err = fm(capsys, "runs", "show", "r9", "--target", target)
    assert rc == 1 and "r9" in err
    assert [r.run_id for r in list_published_runs(target) if r.current] == ["r0"]


def three_runs(out_dir: Path, target: str) -> list[Any]:
    return [run_pipeline(tiny_config(out_dir, target, model={"random_state": i}), run_id=f"r{i}") for i in range(3)]


def test_runs_cli_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    results = three_runs(out, "")
    target = results[0].target
    assert target == f"sqlite:///{(out / 'recommendations.db').as_posix()}"
    check_runs_cli(capsys, target, results, lambda t, rid: read_sqlite_topk(t[len("sqlite:///"):], rid))
    # the next scheduled run publishes on top of the rolled-back state
    run_pipeline(tiny_config(out, model={"random_state": 7}), run_id="r3")
    assert [(r.run_id, r.current) for r in list_published_runs(target)] == [("r3", True), ("r2", False),
                                                                           ("r1", False)]
    # --config finds the target of an fmrec run config
    cfg = tmp_path / "nightly.toml"
    cfg.write_text(f'[output]\ndir = "{out.as_posix()}"\n')
    rc, text, _ = fm(capsys, "runs", "list", "--config", str(cfg))
    assert rc == 0 and text.splitlines()[1].split()[:2] == ["*", "r3"]


@pytest.mark.postgres
def test_runs_cli_postgres(tmp_path: Path, pg_target: str, capsys: pytest.CaptureFixture[str]) -> None:
    results = three_runs(tmp_path / "out", pg_target)
    check_runs_cli(capsys, pg_target, results, lambda t, rid: read_postgres_topk(t, rid))
    (row,) = sql(pg_target, "SELECT model_checksum, config->>'run_id', config->'recommend'->>'target' "
                            "FROM fmrec_runs WHERE run_id = 'r1'")
    assert row[0] == hashlib.sha256((results[1].folder / "model" / "manifest.json").read_bytes()).hexdigest()
    assert row[1] == "r1" and row[2] == pg_target


@pytest.mark.postgres
def test_pipeline_password_not_in_run_folder(tmp_path: Path, pg_url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(pg_url)
    secret = "hunter2-" + str(time.time_ns())
    target = f"postgresql://{parts.username}:{secret}@{parts.hostname}:{parts.port}{parts.path}?schema=t_pw_run"
    res = run_pipeline(tiny_config(tmp_path / "out", target), run_id="pw")
    assert secret not in res.target and ":***@" in res.target
    for path in res.folder.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert all(secret not in json.dumps(r.meta) for r in list_published_runs(target))


def test_runs_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = fm(capsys, "runs", "list", "--target", str(tmp_path / "x.jsonl"))
    assert rc == 1 and "SQLite and PostgreSQL targets only" in err
    rc, out, _ = fm(capsys, "runs", "list", "--target", f"sqlite:///{tmp_path / 'none.db'}")
    assert rc == 0 and "no runs recorded" in out
    rc, _, err = fm(capsys, "runs", "list", "--target", f"sqlite:///{tmp_path / 'none.db'}", "--schema", "s")
    assert rc == 1 and "--schema applies to PostgreSQL" in err
    rc, _, err = fm(capsys, "runs", "rollback", "../x", "--target", f"sqlite:///{tmp_path / 'none.db'}")
    assert rc == 1 and "invalid run_id" in err
    with pytest.raises(SystemExit):
        main(["runs", "--help"])
    assert "rollback" in capsys.readouterr().out


def test_rollback_of_a_pruned_run_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    for run in range(3):
        publish(f"sqlite:///{db}", f"p{run}", run_batches(run), keep_runs=2)
    from fmrec.errors import StoreError

    with pytest.raises(StoreError, match="p0"):
        rollback_run(f"sqlite:///{db}", "p0")
    assert [r.run_id for r in list_published_runs(f"sqlite:///{db}") if r.current] == ["p2"]


# --------------------------------------------------------------------------- a failed stage


@pytest.mark.postgres
def test_failed_stage_leaves_postgres_lists_untouched(tmp_path: Path, pg_target: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import fmrec.pipeline

    out = tmp_path / "out"
    run_pipeline(tiny_config(out, pg_target, data={"test_per_user": 2}), run_id="good")
    before = sql(pg_target, "SELECT * FROM recommendations ORDER BY user_id, rank")

    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise DataError("evaluation blew up")

    monkeypatch.setattr(fmrec.pipeline, "evaluate_model", broken)
    with pytest.raises(DataError) as exc:
        run_pipeline(tiny_config(out, pg_target, data={"test_per_user": 2}, recommend={"k": 5}), run_id="bad")
    assert exc.value.stage == "evaluate"  # type: ignore[attr-defined]
    assert sql(pg_target, "SELECT * FROM recommendations ORDER BY user_id, rank") == before
    assert [r.run_id for r in list_published_runs(pg_target)] == ["good"]
    _, schema = split(pg_target)
    assert sql(pg_target, "SELECT tablename FROM pg_tables WHERE schemaname = %s "
                          "AND left(tablename, 10) = 'fmrec_run_'", (schema,)) == [("fmrec_run_good",)]
    # a failing train stage (training diverges) too; then the next run publishes
    monkeypatch.undo()
    with pytest.raises(Exception) as exc2:
        run_pipeline(tiny_config(out, pg_target, model={"task": "regression", "learning_rate": 1e12,
                                                        "optimizer": "sgd"}), run_id="bad2")
    assert exc2.value.stage == "train"  # type: ignore[attr-defined]
    assert sql(pg_target, "SELECT * FROM recommendations ORDER BY user_id, rank") == before
    run_pipeline(tiny_config(out, pg_target, recommend={"k": 4}), run_id="next")
    assert sql(pg_target, "SELECT max(rank) FROM recommendations") == [(4,)]


# --------------------------------------------------------------------------- a reader during 20 SQLite runs


def test_sqlite_reader_never_sees_mixed_or_partial_run_20_runs(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    url = f"sqlite:///{db}"
    result = publish_while_reading(url, 20, SQLITE_READER, str(db), tmp_path=tmp_path, timeout=60)
    assert result["bad"] == [] and result["errors"] == [], result
    assert result["polls"] > 20 and len(result["seen"]) >= 5, result
    assert [r.run_id for r in list_published_runs(url)] == ["run_20", "run_19", "run_18"]
    assert as_rows(read_sqlite_topk(db)) == [row for b in run_batches(20) for row in as_rows(b)]
    with sqlite3.connect(db) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {n for n in names if n.startswith("fmrec_run_")} == {"fmrec_run_run_20", "fmrec_run_run_19",
                                                                 "fmrec_run_run_18"}
