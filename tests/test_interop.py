"""Hosted-pipeline interop: MXNet params, model.tar.gz import, RecordIO-protobuf, sagemaker JSONL.

The reference files in ../shared/interop/sagemaker-fm-ml100k-ua were written by
MXNet 1.9.1 and by protobuf through the SageMaker SDK v2 writer; their README
gives the expected outputs and tolerances checked here.  Synthetic files
(written by the small encoders below, straight from FORMATS.md) cover the
layouts the reference files do not use: V1 / legacy / V3 arrays, csr, dtypes,
multi-part records.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from fmrec.errors import ArtifactError, ConfigError, DataError, FmrecError
from fmrec.interop.mxnet_params import read_ndarray_list
from fmrec.interop.recordio import (
    MAGIC_BYTES,
    encode_record,
    iter_payloads,
    iter_records,
    read_recordio,
    read_recordio_interactions,
    write_recordio,
)
from fmrec.interop.sagemaker import import_sagemaker, read_sagemaker_params, seen_from_file
from fmrec.recommend import recommend_all
from fmrec.topk import TopK

N_USERS, N_ITEMS, K = 943, 1682, 64
TOL = 1e-5  # README: scores and logits to 1e-5 absolute


# ----------------------------------------------------------------------- helpers
def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg and "\r" not in msg, msg
    return msg


@pytest.fixture(scope="module")
def model(interop: Path) -> Any:
    return import_sagemaker(interop / "model.tar.gz", n_users=N_USERS)


@pytest.fixture(scope="module")
def seen(interop: Path, model: Any) -> sp.csr_matrix:
    return seen_from_file(model, interop / "ua_base.recordio")


@pytest.fixture(scope="module")
def ua_base(interop: Path) -> tuple[sp.csr_matrix, np.ndarray]:
    return read_recordio(interop / "ua_base.recordio")


def load_expected(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return (
        np.array([r["user_id"] for r in rows]),
        np.array([r["items"] for r in rows], dtype=np.int64),
        np.array([r["scores"] for r in rows], dtype=np.float64),
    )


# --------------------------------------------- MXNet NDArray-list encoders (FORMATS.md section 2)
def shape_v2(shape: tuple[int, ...]) -> bytes:
    return struct.pack("<i", len(shape)) + struct.pack(f"<{len(shape)}q", *shape)


CPU = struct.pack("<ii", 1, 0)
FLAGS = {np.dtype("f4"): 0, np.dtype("f8"): 1, np.dtype("f2"): 2, np.dtype("u1"): 3, np.dtype("i4"): 4,
         np.dtype("i1"): 5, np.dtype("i8"): 6}


def nd_v2(a: np.ndarray, magic: int = 0xF993FAC9) -> bytes:
    return struct.pack("<Ii", magic, 0) + shape_v2(a.shape) + CPU + struct.pack("<i", FLAGS[a.dtype]) + a.tobytes()


def nd_row_sparse(a: np.ndarray) -> bytes:
    rows = np.flatnonzero(np.any(a.reshape(a.shape[0], -1) != 0, axis=1)).astype(np.int64)
    data = a[rows]
    return (struct.pack("<Ii", 0xF993FAC9, 1) + shape_v2(data.shape) + shape_v2(a.shape) + CPU
            + struct.pack("<i", FLAGS[a.dtype]) + struct.pack("<i", 6) + shape_v2(rows.shape)
            + data.tobytes() + rows.tobytes())


def nd_csr(a: np.ndarray) -> bytes:
    m = sp.csr_matrix(a)
    indptr, indices = m.indptr.astype(np.int64), m.indices.astype(np.int64)
    return (struct.pack("<Ii", 0xF993FAC9, 2) + shape_v2(m.data.shape) + shape_v2(a.shape) + CPU
            + struct.pack("<i", FLAGS[a.dtype]) + struct.pack("<i", 6) + shape_v2(indptr.shape)
            + struct.pack("<i", 6) + shape_v2(indices.shape)
            + m.data.astype(a.dtype).tobytes() + indptr.tobytes() + indices.tobytes())


def nd_v1(a: np.ndarray) -> bytes:
    return struct.pack("<I", 0xF993FAC8) + shape_v2(a.shape) + CPU + struct.pack("<i", FLAGS[a.dtype]) + a.tobytes()


def nd_legacy(a: np.ndarray) -> bytes:
    return (struct.pack("<I", a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape) + CPU
            + struct.pack("<i", FLAGS[a.dtype]) + a.tobytes())


def nd_list(arrays: list[bytes], names: list[str] | None) -> bytes:
    out = struct.pack("<QQQ", 0x112, 0, len(arrays)) + b"".join(arrays)
    names = names or []
    out += struct.pack("<Q", len(names))
    for n in names:
        out += struct.pack("<Q", len(n)) + n.encode()
    return out


def fm_params(V: np.ndarray, w: np.ndarray, w0: float, sparse: bool = False) -> bytes:
    enc = nd_row_sparse if sparse else nd_v2
    return nd_list([enc(V), enc(w.reshape(-1, 1)), nd_v2(np.array([w0], np.float32))],
                   ["arg:v", "arg:w1_weight", "arg:w0_weight"])


SYMBOL_BINARY = json.dumps({"nodes": [{"op": "null", "name": "fm_logit"}, {"op": "null", "name": "out_label"},
                                      {"op": "LogisticRegressionOutput", "name": "out"}], "heads": [[2, 0, 0]]})


def make_artifact(path: Path, params: bytes | None, symbol: str | None = SYMBOL_BINARY,
                  member: str = "model_algo-1", extra: list[tuple[str, bytes]] = (),
                  zip_extra: list[tuple[str, bytes]] = ()) -> Path:
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        if symbol is not None:
            zf.writestr("symbol.json", symbol)
        if params is not None:
            zf.writestr("params", params)
        for name, data in zip_extra:
            zf.writestr(name, data)
    with tarfile.open(path, "w:gz") as tf:
        for name, data in [*extra, (member, zbuf.getvalue())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


# ============================================================== MXNet params reader
class TestMxnetParams:
    def test_reference_params_both_artifacts_bitwise(self, interop: Path) -> None:
        a = read_sagemaker_params(interop / "model.tar.gz")
        b = read_sagemaker_params(interop / "model-dense.tar.gz")
        assert a.V.shape == (N_USERS + N_ITEMS, K) and a.w.shape == (N_USERS + N_ITEMS,)
        assert a.keys == ["arg:v", "arg:w1_weight", "arg:w0_weight"]
        assert a.V.dtype == np.float32 and a.w.dtype == np.float32
        assert np.array_equal(a.V, b.V) and np.array_equal(a.w, b.w) and a.w0 == b.w0
        assert np.float32(a.w0) == np.float32(0.02612282)
        for col in (2524, 2595):  # items 1582 and 1653: absent from the row_sparse arrays
            assert not a.V[col].any() and a.w[col] == 0
        assert np.count_nonzero(np.any(a.V != 0, axis=1)) == 2623
        assert a.task == "binary" and a.output_op == "LogisticRegressionOutput"

    def test_params_equal_knn_files_written_from_mxnet_arrays(self, interop: Path) -> None:
        """knn_items = concat(V[943:], w[943:]), knn_users = concat(V[:943], 1): bit-for-bit MXNet values."""
        a = read_sagemaker_params(interop / "model.tar.gz")
        items, _ = read_recordio(interop / "knn_items.recordio", dense=True)
        users, _ = read_recordio(interop / "knn_users.recordio", dense=True)
        assert np.array_equal(items, np.hstack([a.V[N_USERS:], a.w[N_USERS:, None]]))
        assert np.array_equal(users, np.hstack([a.V[:N_USERS], np.ones((N_USERS, 1), np.float32)]))

    @pytest.mark.parametrize("encoder", [nd_v2, nd_v1, nd_legacy, lambda a: nd_v2(a, 0xF993FACA)],
                             ids=["v2", "v1", "legacy", "v3"])
    @pytest.mark.parametrize("dtype", ["f4", "f8", "f2", "u1", "i4", "i1", "i8"])
    def test_versions_and_dtypes(self, encoder: Any, dtype: str) -> None:
        a = (np.arange(12).reshape(3, 4) % 7).astype(dtype)
        out = read_ndarray_list(nd_list([encoder(a), encoder(a[0])], ["x", "y"]), name="t.params")
        assert out["x"].dtype == np.dtype(dtype) and np.array_equal(out["x"], a)
        assert np.array_equal(out["y"], a[0])

    def test_row_sparse_and_csr_become_dense(self) -> None:
        rng = np.random.default_rng(0)
        a = rng.standard_normal((6, 3)).astype(np.float32)
        a[[1, 4]] = 0
        m = rng.standard_normal((4, 5)).astype(np.float32) * (rng.random((4, 5)) < 0.4)
        out = read_ndarray_list(nd_list([nd_row_sparse(a), nd_csr(m)], None))
        assert isinstance(out, list)
        assert np.array_equal(out[0], a) and np.array_equal(out[1], m)

    def test_unnamed_list_and_none_array(self) -> None:
        none_v2 = struct.pack("<Iii", 0xF993FAC9, 0, 0)  # ndim 0: "no array", nothing follows
        out = read_ndarray_list(nd_list([none_v2, nd_v2(np.ones(2, np.float32))], None))
        assert out[0] is None and np.array_equal(out[1], [1, 1])

    @pytest.mark.parametrize(
        "mutate, expected",
        [
            (lambda b: b[:-30], "truncated"),
            (lambda b: b"\x13" + b[1:], "bad magic"),
            (lambda b: b[:8], "truncated"),
            (lambda b: b[:24] + struct.pack("<I", 0xF993FAC9) + struct.pack("<i", 7) + b[32:], "storage type"),
            (lambda b: b + b"junk", "trailing"),
        ],
        ids=["truncated", "bad-list-magic", "short", "bad-stype", "trailing"],
    )
    def test_malformed_params(self, mutate: Any, expected: str) -> None:
        good = fm_params(np.ones((4, 2), np.float32), np.ones(4, np.float32), 0.5)
        with pytest.raises(ArtifactError) as exc:
            read_ndarray_list(mutate(good), name="bad.params")
        msg = one_line(exc.value)
        assert "bad.params" in msg and expected in msg

    def test_unknown_dtype_and_bad_ndarray_magic(self) -> None:
        a = nd_v2(np.ones(3, np.float32))
        bad_dtype = a[:8] + shape_v2((3,)) + CPU + struct.pack("<i", 99) + a[8 + 12 + 8 + 4:]
        with pytest.raises(ArtifactError, match="unknown dtype flag 99"):
            read_ndarray_list(nd_list([bad_dtype], ["x"]), name="d.params")
        with pytest.raises(ArtifactError, match="bad magic or legacy ndim"):
            read_ndarray_list(nd_list([struct.pack("<I", 0xDEADBEEF) + a[4:]], ["x"]), name="m.params")


# =================================================================== model import
class TestImport:
    @pytest.mark.parametrize("artifact", ["model.tar.gz", "model-dense.tar.gz"])
    def test_predictions_match_mxnet(self, interop: Path, artifact: str) -> None:
        m = import_sagemaker(interop / artifact, n_users=N_USERS)
        assert m.task == "binary" and m.n_factors == K and m.n_features_in_ == N_USERS + N_ITEMS
        exp = pd.read_csv(interop / "expected_predictions_ua_test.csv")
        assert len(exp) == 9430
        prob = m.predict(exp[["user_id", "item_id"]])
        assert np.max(np.abs(prob - exp["score"].to_numpy())) < TOL
        # both zero-parameter items score sigmoid(w0 + w_u)
        for u, i in [(405, 1582), (675, 1653)]:
            z = m.w0_ + float(m.w_[u - 1])
            assert m.predict(pd.DataFrame({"user_id": [u], "item_id": [i]}))[0] == pytest.approx(1 / (1 + np.exp(-z)))

    @pytest.mark.parametrize("exclude_seen, fname", [(False, "expected_top100.jsonl"),
                                                     (True, "expected_top100_exclude_seen.jsonl")])
    @pytest.mark.parametrize("include_untrained", [False, True])
    def test_recommend_matches_mxnet_lists(self, interop: Path, model: Any, seen: sp.csr_matrix,
                                           exclude_seen: bool, fname: str, include_untrained: bool) -> None:
        top = TopK.concat(list(recommend_all(model, 100, seen=seen, exclude_seen=exclude_seen,
                                             include_untrained_items=include_untrained)))
        users, items, scores = load_expected(interop / fname)
        assert np.array_equal(top.user_ids, users) and top.item_ids.shape == (N_USERS, 100)
        # scores (sorted, so order statistics) within tolerance
        assert np.max(np.abs(top.scores - scores)) < TOL
        # lists equal up to swaps of near-ties: every item we list has (by the model) the
        # logit the expected list has at that position, including at the 100th place
        true = model.score_pairs(np.repeat(users, 100), top.item_ids.ravel()).reshape(N_USERS, 100)
        assert np.max(np.abs(true - scores)) < TOL
        differ = top.item_ids != items
        assert differ.sum() <= 10, differ.sum()  # README: a few near-tie positions may swap
        if exclude_seen:
            su = seen.tocsr()
            for r in range(N_USERS):
                assert not set(top.item_ids[r]) & set(su.indices[su.indptr[r]:su.indptr[r + 1]] + 1)

    def test_seen_from_text_equals_seen_from_recordio(self, ml100k: Path, model: Any, seen: sp.csr_matrix) -> None:
        a = seen_from_file(model, ml100k / "ua.base")
        assert a.nnz == 90570 and (a != seen).nnz == 0

    def test_column_map_permuted_and_string_ids(self, interop: Path, model: Any, tmp_path: Path) -> None:
        rng = np.random.default_rng(1)
        rows = [(c, "user", f"u{c + 1}") for c in range(N_USERS)]
        rows += [(N_USERS + m, "item", f"m{m + 1}") for m in range(N_ITEMS)]
        rows = [rows[i] for i in rng.permutation(len(rows))]
        cmap = tmp_path / "columns.csv"
        cmap.write_text("column,side,id\n" + "".join(f"{c},{s},{i}\n" for c, s, i in rows))
        m2 = import_sagemaker(interop / "model.tar.gz", column_map=cmap)
        exp = pd.read_csv(interop / "expected_predictions_ua_test.csv")
        frame = pd.DataFrame({"user_id": "u" + exp["user_id"].astype(str), "item_id": "m" + exp["item_id"].astype(str)})
        assert np.max(np.abs(m2.predict(frame) - exp["score"].to_numpy())) < TOL
        seen = seen_from_file(m2, interop / "ua_base.recordio")
        assert seen.nnz == 90570

    def test_column_map_errors(self, interop: Path, tmp_path: Path) -> None:
        cmap = tmp_path / "c.csv"
        cmap.write_text("column,side,id\n0,user,1\n1,item,2\n")
        with pytest.raises(DataError, match="covers 2 of the model's 2625 columns"):
            import_sagemaker(interop / "model.tar.gz", column_map=cmap)
        cmap.write_text("column,side,id\n0,user,1\n0,item,2\n")
        with pytest.raises(DataError, match=r"c.csv:3: column 'column': column listed twice"):
            import_sagemaker(interop / "model.tar.gz", column_map=cmap)
        cmap.write_text("column,side,id\n0,shop,1\n")
        with pytest.raises(DataError, match="side must be 'user' or 'item'"):
            import_sagemaker(interop / "model.tar.gz", column_map=cmap)

    def test_explicit_ids_and_layout_errors(self, interop: Path) -> None:
        m = import_sagemaker(interop / "model.tar.gz", user_ids=[f"u{i}" for i in range(1, N_USERS + 1)])
        assert m.encoder_.user_map.ids[0] == "u1" and m.encoder_.item_map.ids[-1] == N_ITEMS
        with pytest.raises(ConfigError, match="n_users"):
            import_sagemaker(interop / "model.tar.gz")
        with pytest.raises(ConfigError, match="between 1 and 2624"):
            import_sagemaker(interop / "model.tar.gz", n_users=2625)
        with pytest.raises(ConfigError, match="item_ids given"):
            import_sagemaker(interop / "model.tar.gz", n_users=N_USERS, item_ids=[1, 2])

    def test_synthetic_regression_and_task_rules(self, tmp_path: Path) -> None:
        rng = np.random.default_rng(2)
        V = rng.standard_normal((5, 3)).astype(np.float32)
        w = rng.standard_normal(5).astype(np.float32)
        sym = SYMBOL_BINARY.replace("LogisticRegressionOutput", "LinearRegressionOutput")
        art = make_artifact(tmp_path / "model.tar.gz", fm_params(V, w, 3.5, sparse=True), sym)
        m = import_sagemaker(art, n_users=2)
        assert m.task == "regression" and not m.clip_predictions
        x = np.zeros(5)
        x[[1, 2 + 2]] = 1  # user 2, item 3
        p = x @ V
        expect = 3.5 + x @ w + 0.5 * (p @ p - (x[:, None] ** 2 * V.astype(np.float64) ** 2).sum())
        assert m.predict(pd.DataFrame({"user_id": [2], "item_id": [3]}))[0] == pytest.approx(expect, abs=1e-5)
        # no symbol.json: the task must be given
        bare = make_artifact(tmp_path / "nosym.tar.gz", fm_params(V, w, 0.0), symbol=None)
        with pytest.raises(ArtifactError, match="cannot tell binary from regression") as exc:
            import_sagemaker(bare, n_users=2)
        one_line(exc.value)
        assert import_sagemaker(bare, n_users=2, task="binary").task == "binary"
        # the model_algo-1 zip and a bare params file are accepted too
        params = tmp_path / "params"
        params.write_bytes(fm_params(V, w, 0.0))
        assert np.array_equal(import_sagemaker(params, n_users=2, task="regression").V_, V)

    def test_saved_model_round_trip(self, model: Any, interop: Path, seen: sp.csr_matrix, tmp_path: Path) -> None:
        from fmrec.model import load_model, save_model
        from fmrec.model.io import load_seen

        save_model(model, tmp_path / "m", seen=seen, extra=model.import_info_)
        back = load_model(tmp_path / "m")
        assert back.task == "binary" and np.array_equal(back.V_, model.V_) and back.w0_ == model.w0_
        assert back.manifest_["extra"]["source_sha256"] == hashlib.sha256(
            (interop / "model.tar.gz").read_bytes()).hexdigest()
        assert (load_seen(tmp_path / "m") != seen).nnz == 0


class TestUnsafeArtifacts:
    def params(self) -> bytes:
        return fm_params(np.ones((4, 2), np.float32), np.ones(4, np.float32), 0.0)

    @pytest.mark.parametrize("name", ["../evil", "/etc/evil", "a/../../evil", "C:\\evil"])
    def test_tar_path_escape(self, tmp_path: Path, name: str) -> None:
        art = make_artifact(tmp_path / "model.tar.gz", self.params(), extra=[(name, b"x")])
        with pytest.raises(ArtifactError, match="unsafe member") as exc:
            import_sagemaker(art, n_users=2)
        one_line(exc.value)
        assert not (tmp_path.parent / "evil").exists()

    def test_zip_path_escape(self, tmp_path: Path) -> None:
        art = make_artifact(tmp_path / "model.tar.gz", self.params(), zip_extra=[("../../evil", b"x")])
        with pytest.raises(ArtifactError, match="unsafe entry"):
            import_sagemaker(art, n_users=2)

    def test_zip_missing_params(self, tmp_path: Path) -> None:
        art = make_artifact(tmp_path / "model.tar.gz", None)
        with pytest.raises(ArtifactError, match="no 'params' entry") as exc:
            import_sagemaker(art, n_users=2)
        one_line(exc.value)

    def test_tar_without_model_and_symlink_member(self, tmp_path: Path) -> None:
        art = make_artifact(tmp_path / "model.tar.gz", self.params(), member="other")
        with pytest.raises(ArtifactError, match="no model_algo"):
            import_sagemaker(art, n_users=2)
        link = tmp_path / "link.tar.gz"
        with tarfile.open(link, "w:gz") as tf:
            info = tarfile.TarInfo("model_algo-1")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
        with pytest.raises(ArtifactError, match="is a link"):
            import_sagemaker(link, n_users=2)

    def test_not_an_archive_truncated_and_missing_keys(self, tmp_path: Path, interop: Path) -> None:
        junk = tmp_path / "junk.tar.gz"
        junk.write_bytes(b"hello world")
        with pytest.raises(ArtifactError, match="not a hosted FM artifact"):
            import_sagemaker(junk, n_users=2)
        cut = tmp_path / "cut.tar.gz"
        cut.write_bytes((interop / "model.tar.gz").read_bytes()[:50_000])
        with pytest.raises(ArtifactError, match="cut.tar.gz") as exc:
            import_sagemaker(cut, n_users=2)
        one_line(exc.value)
        nokey = make_artifact(tmp_path / "k.tar.gz", nd_list([nd_v2(np.ones((4, 2), np.float32))], ["arg:v"]))
        with pytest.raises(ArtifactError, match="'arg:w1_weight' missing"):
            import_sagemaker(nokey, n_users=2)
        with pytest.raises(ArtifactError, match="file not found"):
            import_sagemaker(tmp_path / "absent.tar.gz", n_users=2)


# ======================================================================= RecordIO
class TestRecordIO:
    def test_ua_base_records(self, ua_base: tuple[sp.csr_matrix, np.ndarray], interop: Path) -> None:
        X, y = ua_base
        assert X.shape == (90570, N_USERS + N_ITEMS) and X.dtype == np.float32 and y.dtype == np.float32
        assert X.nnz == 2 * 90570 and np.all(X.data == 1)
        assert int(y.sum()) == 49906 and set(np.unique(y)) == {0.0, 1.0}
        exp = pd.read_csv(interop / "expected_predictions_ua_test.csv")  # ua.test, for the column layout only
        assert exp["user_id"].max() <= N_USERS
        assert X[0].indices.tolist() == [0, 943] and y[:3].tolist() == [1.0, 0.0, 1.0]

    def test_ua_base_matches_text_file(self, ua_base: tuple[sp.csr_matrix, np.ndarray], ml100k: Path) -> None:
        """Rows equal ua.base in file order; built as the notebook builds it, the bytes equal the SDK's."""
        df = pd.read_csv(ml100k / "ua.base", sep="\t", header=None, names=["u", "i", "r", "t"])
        X, y = ua_base
        cols = X.indices.reshape(-1, 2)
        assert np.array_equal(cols[:, 0], df["u"] - 1) and np.array_equal(cols[:, 1], N_USERS + df["i"] - 1)
        assert np.array_equal(y, (df["r"] >= 4).astype(np.float32))
        # the notebook fills a float32 lil_matrix; its tocsr() is this canonical CSR
        rows = np.repeat(np.arange(len(df)), 2)
        cols = np.column_stack([df["u"] - 1, N_USERS + df["i"] - 1]).ravel()
        built = sp.coo_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(df), N_USERS + N_ITEMS))
        buf = io.BytesIO()
        write_recordio(buf, built, (df["r"] >= 4).to_numpy().astype("float32"))
        digest = hashlib.sha256(buf.getvalue()).hexdigest()
        assert digest == "bf6ffe3af08e99ab98d3f4f3d900def2a192f71de64919f6b19fee1102da53b8"

    def test_write_reproduces_sdk_bytes(self, ua_base: tuple[sp.csr_matrix, np.ndarray], interop: Path,
                                        tmp_path: Path) -> None:
        X, y = ua_base
        out = tmp_path / "ua_base.recordio"
        assert write_recordio(out, X, y) == 90570
        assert out.read_bytes() == (interop / "ua_base.recordio").read_bytes()
        # first_records.hex: the annotated dump of the first three records
        hexdump = "".join(line[10:45].replace(" ", "") for line in (interop / "first_records.hex").read_text()
                          .splitlines() if line[:1].isdigit())
        assert out.read_bytes()[:192] == bytes.fromhex(hexdump)

    @pytest.mark.parametrize("name, shape, dtype, labels", [
        ("knn_items.recordio", (N_ITEMS, K + 1), np.float32, np.float32),
        ("knn_items_int32_labels.recordio", (N_ITEMS, K + 1), np.float32, np.int32),
        ("knn_users.recordio", (N_USERS, K + 1), np.float32, None),
        ("knn_users_float64.recordio", (N_USERS, K + 1), np.float64, None),
    ])
    def test_knn_files(self, interop: Path, model: Any, name: str, shape: tuple[int, int], dtype: Any,
                       labels: Any) -> None:
        A, lab = read_recordio(interop / name, dense=True)
        assert A.shape == shape and A.dtype == dtype
        if labels is None:
            assert lab is None
            assert np.array_equal(A, np.hstack([model.V_[:N_USERS], np.ones((N_USERS, 1))]).astype(dtype))
        else:
            assert lab.dtype == labels and np.array_equal(lab, np.arange(1, N_ITEMS + 1))
            assert np.array_equal(A, np.hstack([model.V_[N_USERS:], model.w_[N_USERS:, None]]))
        kinds = {r.features["values"].kind for r in iter_records(interop / name)}
        assert kinds == {"float64" if dtype == np.float64 else "float32"}
        buf = io.BytesIO()
        write_recordio(buf, A, lab)
        assert buf.getvalue() == (interop / name).read_bytes()

    def test_knn_inner_product_is_fm_logit(self, interop: Path, model: Any) -> None:
        items, _ = read_recordio(interop / "knn_items.recordio", dense=True)
        users, _ = read_recordio(interop / "knn_users.recordio", dense=True)
        logits = users.astype(np.float64) @ items.astype(np.float64).T + model.w0_ + model.w_[:N_USERS, None]
        u, i = np.array([1, 450, 943]), np.array([50, 215, 1682])
        assert np.allclose(logits[u - 1, i - 1], model.score_pairs(u, i), atol=1e-9)

    def test_multi_part_records_and_padding(self, tmp_path: Path) -> None:
        magic_float = np.frombuffer(MAGIC_BYTES, np.float32)[0]
        A = np.array([[magic_float, 1.0, magic_float], [2.0, 3.0, 4.0]], np.float32)
        y = np.array([7.0, 8.0], np.float32)
        plain, split = io.BytesIO(), io.BytesIO()
        write_recordio(plain, A, y)
        write_recordio(split, A, y, split_magic=True)
        assert split.getvalue() != plain.getvalue()
        flags = []
        data = split.getvalue()
        pos = 0
        while pos < len(data):
            magic, lrec = struct.unpack_from("<II", data, pos)
            assert magic == 0xCED7230A
            flags.append(lrec >> 29)
            pos += 8 + (((lrec & (2**29 - 1)) + 3) & ~3)
        assert flags[:3] == [1, 2, 3] and flags[-1] == 0
        for buf in (plain, split):
            B, lab = read_recordio(buf.getvalue(), dense=True)
            assert np.array_equal(B.view(np.uint32), A.view(np.uint32)) and np.array_equal(lab, y)
        payloads = [p for _, _, p in iter_payloads(split.getvalue())]
        assert payloads == [p for _, _, p in iter_payloads(plain.getvalue())]

    def test_sparse_types_and_general_parser(self) -> None:
        X = sp.csr_matrix(np.array([[0, 2.5, 0, 1], [0, 0, 0, 0], [3, 0, 0, 0]], np.float64))
        buf = io.BytesIO()
        write_recordio(buf, X, np.array([1, -2, 3], np.int64))
        Y, lab = read_recordio(buf.getvalue())
        assert Y.dtype == np.float64 and lab.dtype == np.int32 and lab.tolist() == [1, -2, 3]
        assert np.array_equal(Y.toarray(), X.toarray()) and Y.shape == (3, 4)
        # a record with extra fields (uid, a second feature key) goes through the general parser
        payload = encode_record(np.array([1.0, 2.0], np.float32), keys=[1, 3], shape=[5], label=1.0)
        payload += b"\x1a\x03abc"  # uid = "abc"
        framed = MAGIC_BYTES + struct.pack("<I", len(payload)) + payload + b"\0" * (-len(payload) % 4)
        rec = next(iter_records(framed))
        assert rec.uid == "abc" and rec.features["values"].keys.tolist() == [1, 3]
        Z, zl = read_recordio(framed)
        assert Z.toarray().tolist() == [[0, 1, 0, 2, 0]] and zl.tolist() == [1.0]

    @pytest.mark.parametrize("mutate, expected", [
        (lambda b: b[:-10], "truncated"),
        (lambda b: b[:5], "truncated header"),
        (lambda b: b"\x00" + b[1:], "bad RecordIO magic"),
        (lambda b: b[:64] + b"\xff" * 4 + b[68:], "bad RecordIO magic"),
        (lambda b: b[:8] + b"\x0a\x7f" + b[10:], "malformed protobuf"),
        (lambda b: b[:4] + struct.pack("<I", (2 << 29) | 53) + b[8:], "without a first part"),
    ], ids=["truncated", "short-header", "bad-magic", "bad-magic-2nd", "bad-protobuf", "orphan-part"])
    def test_malformed_recordio(self, interop: Path, tmp_path: Path, mutate: Any, expected: str) -> None:
        good = (interop / "ua_base.recordio").read_bytes()[:64 * 4]
        bad = tmp_path / "bad.recordio"
        bad.write_bytes(mutate(good))
        with pytest.raises(DataError) as exc:
            read_recordio(bad)
        msg = one_line(exc.value)
        assert "bad.recordio" in msg and expected in msg and "record" in msg

    def test_write_rejects_bad_input(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="dtype"):
            write_recordio(io.BytesIO(), np.array([["a"]]))
        with pytest.raises(DataError, match="Int32Tensor"):
            write_recordio(io.BytesIO(), np.array([[2**40]], np.int64))
        with pytest.raises(DataError, match="labels"):
            write_recordio(tmp_path / "x.recordio", np.ones((2, 2), np.float32), np.ones(3, np.float32))
        assert not list(tmp_path.iterdir())  # nothing partial left behind


class TestRecordIOInteractions:
    def test_read_interactions_detects_recordio(self, interop: Path, tmp_path: Path) -> None:
        from fmrec.data.readers import read_interactions

        inter = read_interactions(interop / "ua_base.recordio")
        assert len(inter) == 90570 and inter.n_users == N_USERS and inter.n_items == 1680
        df = inter.to_frame()
        assert df.iloc[0].tolist() == [1, 1, 1.0] and df.iloc[1].tolist() == [1, 2, 0.0]
        # by magic, whatever the name; explicit format; explicit user count
        other = tmp_path / "train.bin"
        other.write_bytes((interop / "ua_base.recordio").read_bytes()[: 64 * 100])
        assert len(read_interactions(other, recordio_users=N_USERS)) == 100
        assert len(read_interactions(other, format="recordio", recordio_users=N_USERS)) == 100

    def test_user_count_rules(self, tmp_path: Path) -> None:
        rows = sp.csr_matrix((np.ones(4, np.float32), ([0, 0, 1, 1], [0, 5, 2, 6])), shape=(2, 8))
        path = tmp_path / "gap.recordio"
        write_recordio(path, rows, np.array([1.0, 0.0], np.float32))
        with pytest.raises(DataError, match="any count from 3 to 5") as exc:
            read_recordio_interactions(path)
        one_line(exc.value)
        inter = read_recordio_interactions(path, n_users=4)
        assert inter.to_frame()[["user_id", "item_id"]].to_numpy().tolist() == [[1, 2], [3, 3]]
        with pytest.raises(DataError, match="record 1: columns 0 and 5 are both user columns"):
            read_recordio_interactions(path, n_users=7)
        dense = tmp_path / "dense.recordio"
        write_recordio(dense, np.ones((2, 3), np.float32))
        with pytest.raises(DataError, match="exactly two columns"):
            read_recordio_interactions(dense)

    def test_train_cli_on_recordio(self, interop: Path, tmp_path: Path) -> None:
        from fmrec.cli.main import main
        from fmrec.model import load_model

        rc = main(["-q", "train", str(interop / "ua_base.recordio"), "--out", str(tmp_path / "m"),
                   "--task", "binary", "--threshold", "1", "--epochs", "2"])
        assert rc == 0
        m = load_model(tmp_path / "m")
        exp = pd.read_csv(interop / "expected_predictions_ua_test.csv")
        prob = m.predict(exp[["user_id", "item_id"]])
        acc = np.mean((prob >= 0.5) == (exp["label"] == 1))
        assert acc > 0.6  # labels used as they are: a real binary model, not an all-zero one


# ==================================================================== CLI + JSONL
class TestCli:
    def test_import_recommend_predict(self, interop: Path, tmp_path: Path, capsys: Any) -> None:
        from fmrec.cli.main import main
        from fmrec.store import read_jsonl

        out = tmp_path / "model"
        assert main(["-q", "import-sagemaker", str(interop / "model.tar.gz"), "--users", "943", "--out", str(out),
                     "--seen", str(interop / "ua_base.recordio")]) == 0
        assert "imported binary FM (943 users, 1682 items, 64 factors, 90570 seen pairs)" in capsys.readouterr().out
        assert main(["-q", "recommend", str(out), "--k", "100", "--out", str(tmp_path / "r.jsonl")]) == 0
        got = read_jsonl(tmp_path / "r.jsonl")
        users, items, scores = load_expected(interop / "expected_top100_exclude_seen.jsonl")
        assert np.array_equal(got.user_ids, users) and np.max(np.abs(got.scores - scores)) < TOL
        assert (got.item_ids != items).sum() <= 10
        exp = pd.read_csv(interop / "expected_predictions_ua_test.csv")
        test_file = tmp_path / "test.csv"
        exp[["user_id", "item_id"]].to_csv(test_file, index=False)
        assert main(["-q", "predict", str(out), str(test_file), "--out", str(tmp_path / "p.csv")]) == 0
        pred = pd.read_csv(tmp_path / "p.csv")
        assert np.max(np.abs(pred["score"] - exp["score"])) < TOL

    def test_cli_errors_are_one_line(self, interop: Path, tmp_path: Path, capsys: Any) -> None:
        from fmrec.cli.main import main

        bad = make_artifact(tmp_path / "bad.tar.gz", fm_params(np.ones((4, 2), np.float32), np.ones(4, np.float32),
                                                                0.0), extra=[("../evil", b"x")])
        assert main(["-q", "import-sagemaker", str(bad), "--users", "2", "--out", str(tmp_path / "m")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "unsafe member '../evil'" in err
        assert not (tmp_path / "m").exists()
        assert main(["-q", "import-sagemaker", str(interop / "model.tar.gz"), "--users", "943", "--out",
                     str(tmp_path / "m"), "--seen", str(interop / "knn_users.recordio")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "knn_users.recordio" in err
        assert not (tmp_path / "m").exists()

    def test_sagemaker_jsonl_round_trip(self, model: Any, tmp_path: Path) -> None:
        from fmrec.store import open_sink, read_jsonl

        top = TopK.concat(list(recommend_all(model, 20, exclude_seen=False)))
        with open_sink(tmp_path / "knn.jsonl", format="sagemaker") as sink:
            sink.write(top)
        first = json.loads((tmp_path / "knn.jsonl").read_text().splitlines()[0])
        assert set(first) == {"predicted_label", "labels", "distances"}
        assert first["labels"][-1] == float(top.item_ids[0, 0])  # ascending: best item last
        assert first["distances"] == sorted(first["distances"])
        back = read_jsonl(tmp_path / "knn.jsonl")
        assert np.array_equal(back.user_ids, np.arange(1, N_USERS + 1))
        assert np.array_equal(back.item_ids, top.item_ids) and np.array_equal(back.scores, top.scores)


def test_errors_derive_from_fmrec_error() -> None:
    assert issubclass(ArtifactError, FmrecError) and issubclass(DataError, FmrecError)
