"""Scoring on a real local Dask cluster: same lists as one process; failures never half-publish."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("distributed", reason="dask.distributed is part of the test extra")

from fmrec.data.synthetic import load_builtin  # noqa: E402
from fmrec.distributed import recommend_dask  # noqa: E402
from fmrec.errors import StoreError  # noqa: E402
from fmrec.model import FactorizationMachine, save_model  # noqa: E402
from fmrec.recommend import recommend_all  # noqa: E402
from fmrec.store import open_sink, read_jsonl  # noqa: E402
from fmrec.topk import TopK  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    data = load_builtin()
    fm = FactorizationMachine(task="ranking", n_factors=8, n_epochs=2, random_state=0).fit(data)
    path = tmp_path_factory.mktemp("dist") / "model"
    save_model(fm, path, seen=data.to_csr(binary=True))
    single = TopK.concat(list(recommend_all(fm, 20, seen=data.to_csr(binary=True))))
    return path, single


def assert_same_lists(got: TopK, want: TopK) -> None:
    assert got.user_ids.tolist() == want.user_ids.tolist()
    np.testing.assert_array_equal(got.item_ids, want.item_ids)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)


def test_two_worker_cluster_gives_the_single_process_lists(model_dir, tmp_path) -> None:
    path, single = model_dir
    out = tmp_path / "recs.jsonl"
    summary = recommend_dask(path, 20, out, n_workers=2, n_partitions=5)
    # partitions start on GEMM block boundaries: at most ceil(users / block) of them
    assert summary["users"] == len(single) and 2 <= summary["partitions"] <= 5
    assert_same_lists(read_jsonl(out), single)
    assert not list(tmp_path.glob(".fmrec-dask-*"))  # staging removed


def test_killed_worker_is_retried_and_lists_are_complete(model_dir, tmp_path, monkeypatch) -> None:
    path, single = model_dir
    marker = tmp_path / "killed"
    monkeypatch.setenv("FMREC_TEST_PARTITION_HOOK", f"kill:1:{marker}")  # the second partition (there are at least 2)
    out = tmp_path / "recs.jsonl"
    recommend_dask(path, 20, out, n_workers=2, n_partitions=4)
    assert marker.exists()  # a worker really died on partition 1
    assert_same_lists(read_jsonl(out), single)


def test_failing_partition_publishes_nothing(model_dir, tmp_path, monkeypatch) -> None:
    path, single = model_dir
    db = tmp_path / "recs.db"
    with open_sink(f"sqlite:///{db}", run_id="previous") as sink:  # a previously published run
        sink.write(TopK(single.user_ids[:3], single.item_ids[:3], single.scores[:3]))
    import sqlite3

    before = sqlite3.connect(db).execute("SELECT * FROM recommendations ORDER BY user_id, rank").fetchall()
    monkeypatch.setenv("FMREC_TEST_PARTITION_HOOK", "fail:1")
    with pytest.raises(StoreError, match="nothing was published") as exc:
        recommend_dask(path, 20, f"sqlite:///{db}", n_workers=2, n_partitions=3, retries=1, run_id="broken")
    assert "\n" not in str(exc.value)
    after = sqlite3.connect(db).execute("SELECT * FROM recommendations ORDER BY user_id, rank").fetchall()
    assert after == before
    assert not list(tmp_path.glob(".fmrec-dask-*"))


def test_cli_engine_dask_matches_local(model_dir, tmp_path, capsys) -> None:
    from fmrec.cli.main import main

    path, _ = model_dir
    assert main(["-q", "recommend", str(path), "--k", "10", "--out", str(tmp_path / "a.jsonl")]) == 0
    assert main(["-q", "recommend", str(path), "--k", "10", "--out", str(tmp_path / "b.jsonl"),
                 "--engine", "dask", "--workers", "2"]) == 0
    assert "partitions on Dask" in capsys.readouterr().out
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
