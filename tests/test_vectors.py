"""Bring your own vectors: ``fmrec export`` -> vectors.npz -> ``fmrec recommend --vectors``.

The exported file must give the same lists as the model folder; a foreign file
with only the four required arrays must rank by raw inner product; broken files
must fail with one line naming the file and the array.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmrec.cli.main import main
from fmrec.data import Interactions
from fmrec.errors import ConfigError, DataError
from fmrec.model import FactorizationMachine
from fmrec.recommend import recommend_all
from fmrec.topk import TopK
from fmrec.vectors import VectorSet, export_model_vectors, load_vectors, save_vectors

from _helpers import fm
from reference import assert_topk_equivalent


pytestmark = pytest.mark.usefixtures("reset_cli_logging")


def one_line_error(rc: int, err: str, *needles: str) -> str:
    assert rc == 1, err
    assert err.count("\n") == 1, f"expected one stderr line, got {err!r}"
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("vec") / "model"
    assert main(["-q", "train", "builtin", "--out", str(folder), "--epochs", "2", "--factors", "8", "--seed", "3"]) == 0
    return folder


@pytest.fixture(scope="module")
def vectors_file(model_dir: Path) -> Path:
    out = model_dir.parent / "vectors.npz"
    assert main(["-q", "export", str(model_dir), "--out", str(out)]) == 0
    return out


def test_export_writes_the_documented_arrays_without_pickle(vectors_file: Path) -> None:
    with np.load(vectors_file, allow_pickle=False) as z:
        names = set(z.files)
        assert {"user_ids", "user_vectors", "item_ids", "item_vectors", "user_constants",
                "seen_indptr", "seen_indices"} <= names
        assert z["user_vectors"].dtype == np.float32 and z["item_vectors"].dtype == np.float32
        assert np.all(z["user_vectors"][:, -1] == 1.0)  # exact MIPS form [p_u, 1]
        assert z["user_constants"].dtype == np.float64
        assert z["seen_indptr"].shape == (z["user_ids"].shape[0] + 1,)
        assert all(z[n].dtype != object for n in z.files)


@pytest.mark.parametrize("extra", [(), ("--include-seen",), ("--index", "flat")])
def test_vectors_give_the_same_lists_as_the_model(capsys, tmp_path: Path, model_dir: Path, vectors_file: Path,
                                                  extra: tuple[str, ...]) -> None:
    rc, _, _ = fm(capsys, "-q", "recommend", model_dir, "--k", "15", "--out", tmp_path / "m.jsonl", *extra)
    assert rc == 0
    rc, _, _ = fm(capsys, "-q", "recommend", "--vectors", vectors_file, "--k", "15", "--out", tmp_path / "v.jsonl",
                  *extra)
    assert rc == 0
    assert (tmp_path / "m.jsonl").read_bytes() == (tmp_path / "v.jsonl").read_bytes()


def test_string_ids_round_trip_and_match_the_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    users = [f"user-{u}" for u in range(30)]
    items = [f"item-é{i}" for i in range(40)]
    pairs = {(users[rng.integers(30)], items[rng.integers(40)]) for _ in range(400)}
    df = pd.DataFrame(sorted(pairs), columns=["user_id", "item_id"])
    df["rating"] = rng.integers(1, 6, len(df)).astype(float)
    train = Interactions.from_frame(df)
    model = FactorizationMachine(n_factors=4, n_epochs=3, random_state=0).fit(train)
    seen = train.to_csr(binary=True)
    vs = export_model_vectors(model, seen=seen)
    path = save_vectors(tmp_path / "s.npz", vs)
    with np.load(path, allow_pickle=False) as z:
        assert z["user_ids"].dtype.kind == "U" and z["item_ids"].dtype.kind == "U"
    loaded = load_vectors(path)
    a = TopK.concat(list(recommend_all(model, 7, seen=seen)))
    b = TopK.concat(list(recommend_all(loaded, 7)))
    assert a.user_ids.tolist() == b.user_ids.tolist()
    assert a.item_ids.tolist() == b.item_ids.tolist()
    np.testing.assert_array_equal(a.scores, b.scores)
    # a subset of users, by external ID
    c = TopK.concat(list(recommend_all(loaded, 7, users=["user-3", "user-1"])))
    assert c.user_ids.tolist() == ["user-3", "user-1"]
    assert c.item_ids[1].tolist() == a.item_ids[a.user_ids.tolist().index("user-1")].tolist()


def foreign_file(tmp_path: Path, rng: np.random.Generator, n_users: int = 25, n_items: int = 60,
                 d: int = 6) -> tuple[Path, np.ndarray, np.ndarray]:
    U = rng.normal(size=(n_users, d)).astype(np.float32)
    V = rng.normal(size=(n_items, d)).astype(np.float32)
    path = tmp_path / "foreign.npz"
    np.savez(path, user_ids=np.arange(100, 100 + n_users), user_vectors=U,
             item_ids=np.array([f"sku{i}" for i in range(n_items)]), item_vectors=V)
    return path, U, V


def test_foreign_vectors_rank_by_raw_inner_product(capsys, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    path, U, V = foreign_file(tmp_path, rng)
    rc, out, _ = fm(capsys, "-q", "recommend", "--vectors", path, "--k", "10", "--out", tmp_path / "r.jsonl")
    assert rc == 0 and "published top-10 for 25 users" in out
    full = U.astype(np.float64) @ V.astype(np.float64).T  # no constants, nothing excluded
    for r, rec in enumerate(read_jsonl(tmp_path / "r.jsonl")):
        assert rec["user_id"] == 100 + r
        pos = np.array([int(s[3:]) for s in rec["items"]])
        assert_topk_equivalent(pos, np.array(rec["scores"]), full[r], 10, set(), rtol=1e-5, atol=1e-5)
    # --exclude FILE: per-user exclusions by external IDs
    first = read_jsonl(tmp_path / "r.jsonl")[0]["items"][:3]
    pd.DataFrame({"user_id": [100] * 3, "item_id": first}).to_csv(tmp_path / "ex.csv", index=False)
    rc, _, _ = fm(capsys, "-q", "recommend", "--vectors", path, "--k", "10", "--out", tmp_path / "x.jsonl",
                  "--exclude", tmp_path / "ex.csv")
    assert rc == 0
    recs = read_jsonl(tmp_path / "x.jsonl")
    assert not set(first) & set(recs[0]["items"])
    assert recs[0]["items"][:7] == read_jsonl(tmp_path / "r.jsonl")[0]["items"][3:]
    assert recs[1] == read_jsonl(tmp_path / "r.jsonl")[1]


def test_foreign_vectors_with_approximate_index(capsys, tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    path, U, V = foreign_file(tmp_path, rng, n_users=40, n_items=300, d=8)
    rc, out, _ = fm(capsys, "-q", "recommend", "--vectors", path, "--k", "10", "--out", tmp_path / "h.jsonl",
                    "--index", "HNSW16", "--target-recall", "0.9", "--tune-users", "40")
    assert rc == 0 and "tuned HNSW16: efSearch=" in out and "target 0.900 reached" in out


def test_unknown_user_and_feature_options_are_refused(capsys, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    path, _, _ = foreign_file(tmp_path, rng)
    (tmp_path / "users.txt").write_text("100\n999\n")
    rc, _, err = fm(capsys, "recommend", "--vectors", path, "--out", tmp_path / "r.jsonl",
                    "--users", tmp_path / "users.txt")
    one_line_error(rc, err, "foreign.npz", "'999'")
    assert not (tmp_path / "r.jsonl").exists()
    rc, _, err = fm(capsys, "recommend", "--out", tmp_path / "r.jsonl")
    one_line_error(rc, err, "MODEL_DIR or --vectors")


# ----------------------------------------------------------------------------- broken files
def good_arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"user_ids": np.arange(5), "user_vectors": rng.normal(size=(5, 3)).astype(np.float32),
            "item_ids": np.arange(8), "item_vectors": rng.normal(size=(8, 3)).astype(np.float32)}


BROKEN = {
    "missing array": (lambda a: {n: v for n, v in a.items() if n != "item_vectors"}, "item_vectors", "missing"),
    "user rows vs ids": (lambda a: {**a, "user_vectors": a["user_vectors"][:4]}, "user_vectors", "4 rows"),
    "dims differ": (lambda a: {**a, "item_vectors": np.ones((8, 4), np.float32)}, "item_vectors", "4 dimensions"),
    "1-D vectors": (lambda a: {**a, "user_vectors": np.ones(5, np.float32)}, "user_vectors", "2-D"),
    "int vectors": (lambda a: {**a, "item_vectors": np.ones((8, 3), np.int64)}, "item_vectors", "floats"),
    "nan": (lambda a: {**a, "item_vectors": np.full((8, 3), np.nan, np.float32)}, "item_vectors", "non-finite"),
    "duplicate ids": (lambda a: {**a, "item_ids": np.array([1, 1, 2, 3, 4, 5, 6, 7])}, "item_ids", "duplicate"),
    "object ids (pickle)": (lambda a: {**a, "user_ids": np.array(["a", 1, None, 2.5, "e"], dtype=object)},
                            "user_ids", "pickle"),
    "constants shape": (lambda a: {**a, "user_constants": np.zeros(3)}, "user_constants", "shape (5,)"),
    "seen half": (lambda a: {**a, "seen_indptr": np.zeros(6, np.int64)}, "seen_indices", "together"),
    "seen out of range": (lambda a: {**a, "seen_indptr": np.array([0, 1, 1, 1, 1, 1]),
                                     "seen_indices": np.array([8], np.int32)}, "seen_indices", "outside"),
    "seen indptr": (lambda a: {**a, "seen_indptr": np.array([0, 2, 1, 1, 1, 1]),
                               "seen_indices": np.array([1], np.int32)}, "seen_indptr", "rise"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_files_fail_in_one_line_naming_file_and_array(capsys, tmp_path: Path, case: str) -> None:
    make, array, phrase = BROKEN[case]
    arrays = make(good_arrays(np.random.default_rng(1)))
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as exc:
        load_vectors(path)
    msg = str(exc.value)
    assert "\n" not in msg and "bad.npz" in msg and f"'{array}'" in msg and phrase in msg, msg
    rc, _, err = fm(capsys, "recommend", "--vectors", path, "--out", tmp_path / "r.jsonl")
    one_line_error(rc, err, "bad.npz", array)
    assert not (tmp_path / "r.jsonl").exists()


def test_truncated_and_non_npz_files(capsys, tmp_path: Path) -> None:
    path = tmp_path / "v.npz"
    np.savez(path, **good_arrays(np.random.default_rng(2)))
    data = path.read_bytes()
    for cut in (len(data) // 2, 30):
        (tmp_path / "t.npz").write_bytes(data[:cut])
        rc, _, err = fm(capsys, "recommend", "--vectors", tmp_path / "t.npz", "--out", tmp_path / "r.jsonl")
        one_line_error(rc, err, "t.npz")
    # a member whose bytes are damaged inside an intact zip directory
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(tmp_path / "c.npz", "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b[:40] if n == "item_vectors.npy" else b)
    rc, _, err = fm(capsys, "recommend", "--vectors", tmp_path / "c.npz", "--out", tmp_path / "r.jsonl")
    one_line_error(rc, err, "c.npz", "item_vectors")
    (tmp_path / "text.npz").write_text("not a zip")
    rc, _, err = fm(capsys, "recommend", "--vectors", tmp_path / "text.npz", "--out", tmp_path / "r.jsonl")
    one_line_error(rc, err, "text.npz")
    rc, _, err = fm(capsys, "recommend", "--vectors", tmp_path / "absent.npz", "--out", tmp_path / "r.jsonl")
    one_line_error(rc, err, "absent.npz", "not found")
    assert not (tmp_path / "r.jsonl").exists()


def test_vectorset_api_validates_and_saves_atomically(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a = good_arrays(rng)
    vs = VectorSet.from_arrays(a["user_ids"], a["user_vectors"], a["item_ids"], a["item_vectors"],
                               user_constants=np.arange(5.0))
    save_vectors(tmp_path / "ok.npz", vs)
    back = load_vectors(tmp_path / "ok.npz")
    np.testing.assert_array_equal(back.user_constants, np.arange(5.0))
    assert back.seen is None and back.user_ids.dtype == np.int64
    with pytest.raises(DataError, match="'item_vectors'"):
        VectorSet.from_arrays(a["user_ids"], a["user_vectors"], a["item_ids"], a["item_vectors"][:, :2])
    assert [p.name for p in tmp_path.iterdir()] == ["ok.npz"]  # no temp file left behind


def test_a_loaded_seen_pattern_is_read_raw_and_built_canonical_on_use(tmp_path: Path) -> None:
    """A file's pattern may list a row's items unsorted or twice: ``seen_arrays`` returns it
    as stored (what `recommend --include-seen` needs to drop untrained items, without scipy),
    ``seen`` the canonical matrix, and excluding it removes exactly those items."""
    rng = np.random.default_rng(3)
    U = rng.normal(size=(3, 4)).astype(np.float32)
    V = rng.normal(size=(6, 4)).astype(np.float32)
    indptr = np.array([0, 3, 3, 5], dtype=np.int64)
    indices = np.array([4, 1, 4, 0, 5], dtype=np.int32)  # user 0: items 4, 1, 4 (unsorted, repeated)
    path = tmp_path / "raw.npz"
    np.savez(path, user_ids=np.arange(3), user_vectors=U, item_ids=np.arange(10, 16), item_vectors=V,
             seen_indptr=indptr, seen_indices=indices)
    vs = load_vectors(path)
    assert "seen=yes" in repr(vs)
    ptr, idx = vs.seen_arrays()
    assert ptr.tolist() == indptr.tolist() and idx.tolist() == indices.tolist()
    m = vs.seen
    assert m.has_canonical_format and m.indptr.tolist() == [0, 2, 2, 4] and m.indices.tolist() == [1, 4, 0, 5]
    assert vs.seen is m  # built once
    excluded = TopK.concat(list(recommend_all(vs, 6, include_untrained_items=True)))
    lists = {u: set(excluded.item_ids[r][np.isfinite(excluded.scores[r])].tolist())
             for r, u in enumerate(excluded.user_ids.tolist())}
    assert lists == {0: {10, 12, 13, 15}, 1: set(range(10, 16)), 2: {11, 12, 13, 14}}
    # untrained items (never in the pattern: 12, 13) are dropped by default, seen or not
    kept = TopK.concat(list(recommend_all(vs, 6, exclude_seen=False)))
    assert set(kept.item_ids[np.isfinite(kept.scores)].tolist()) == {10, 11, 14, 15}
    assert VectorSet.from_arrays(vs.user_ids, U, vs.item_ids, V, seen=m).seen_arrays()[1].tolist() == [1, 4, 0, 5]


def test_seen_given_in_any_sparse_form_is_read_as_rows_and_never_altered(tmp_path: Path) -> None:
    """A pattern given as CSC / COO / dense is stored as CSR (rows = users); building the
    matrix of a loaded file never rewrites arrays that a caller or a copy still holds."""
    import copy

    import scipy.sparse as sp

    rng = np.random.default_rng(4)
    U = rng.normal(size=(3, 4)).astype(np.float32)
    V = rng.normal(size=(6, 4)).astype(np.float32)
    dense = np.zeros((3, 6), np.float32)
    dense[0, [1, 4]] = 1
    dense[2, [0, 5]] = 1
    untrained = {12, 13}  # items 2 and 3: in nobody's pattern
    for form in (sp.csc_matrix(dense), sp.coo_matrix(dense), dense):
        vs = VectorSet(np.arange(3), U, np.arange(10, 16), V, seen=form)
        kept = TopK.concat(list(recommend_all(vs, 6, exclude_seen=False)))
        assert set(kept.item_ids[np.isfinite(kept.scores)].tolist()) == set(range(10, 16)) - untrained
        assert sp.isspmatrix_csr(vs.seen) or isinstance(vs.seen, sp.csr_array)
    with pytest.raises(ConfigError, match="shape"):
        list(recommend_all(VectorSet(np.arange(3), U, np.arange(10, 16), V, seen=np.ones((3, 5))), 2))

    # a caller's non-canonical CSR given to from_arrays stays as it was
    theirs = sp.csr_matrix((np.ones(5, np.float32), np.array([4, 1, 4, 0, 5], np.int32),
                            np.array([0, 3, 3, 5], np.int64)), shape=(3, 6))
    vs = VectorSet.from_arrays(np.arange(3), U, np.arange(10, 16), V, seen=theirs)
    _ = vs.seen
    assert theirs.indices.tolist() == [4, 1, 4, 0, 5]
    # a copy of a loaded set (non-canonical pattern in the file) keeps a correct pattern after
    # the original builds its matrix
    path = tmp_path / "raw.npz"
    np.savez(path, user_ids=np.arange(3), user_vectors=U, item_ids=np.arange(10, 16), item_vectors=V,
             seen_indptr=np.array([0, 3, 3, 5]), seen_indices=np.array([4, 1, 4, 0, 5], np.int32))
    a = load_vectors(path)
    b = copy.copy(a)
    _ = a.seen
    assert [sorted(b.seen[r].indices.tolist()) for r in range(3)] == [[1, 4], [], [0, 5]]
