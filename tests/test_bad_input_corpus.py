"""Bad input corpus (issue 5, item 5): every malformed input gets one clear line, and nothing partial.

Each case builds its malformed input inside the test (in ``tmp_path``, from the
bytes below; no data files are committed), runs one ``fmrec`` command in-process
through :func:`fmrec.cli.main.main`, and checks that

* the exit code is 1;
* stderr is exactly ONE line, ``fmrec <command>: error: ...``, with no traceback;
* the message names the file (and the line and the offending value where there
  is one), checked as the case's expected substrings;
* stdout is empty and nothing partial was written: the output folder holds
  exactly what it held before the command (nothing where there was nothing, and
  a previous good output -- predictions, lists, a SQLite database, a model
  folder -- byte-identical).

IDs: a negative ID and an ID beyond int64 (> 2**63) are *valid external IDs*, not
errors (the rule of :mod:`fmrec.data.readers`: a column is int64 when every value is
an integer literal that fits in 64 bits, otherwise all of its values stay strings).
``test_negative_and_huge_ids_are_external_ids`` pins that behaviour end to end.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from fmrec.cli.main import main
from fmrec.errors import ConfigError

from _helpers import serve_folder

# --------------------------------------------------------------------------- good inputs
GOOD_TSV = "".join(
    f"{u}\t{i}\t{(u * i) % 5 + 1}\t{880000000 + 7 * u + i}\n" for u in range(1, 13) for i in range(1, 11) if (u + i) % 3
)
GOOD_CSV = "user_id,item_id,rating\n" + "".join(
    f"{u},{i},{(u + i) % 5 + 1}\n" for u in range(1, 13) for i in range(1, 11) if (u + i) % 3
)
GOOD_LINES = GOOD_TSV.count("\n")
SMALL = ("--factors", "4", "--epochs", "2", "--seed", "0")


pytestmark = pytest.mark.usefixtures("reset_cli_logging")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1 (random port): nothing leaves the machine."""
    root = tmp_path_factory.mktemp("www")
    with serve_folder(root) as base:
        yield root, base


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small trained model and the good outputs a failing command must leave alone."""
    folder = tmp_path_factory.mktemp("good")
    (folder / "train.tsv").write_text(GOOD_TSV)
    out = {"train": folder / "train.tsv", "model": folder / "model", "preds": folder / "preds.csv",
           "jsonl": folder / "recs.jsonl", "db": folder / "recs.db"}
    assert main(["-q", "train", str(out["train"]), "--out", str(out["model"]), *SMALL]) == 0
    assert main(["-q", "predict", str(out["model"]), str(out["train"]), "--out", str(out["preds"])]) == 0
    assert main(["-q", "recommend", str(out["model"]), "--k", "3", "--out", str(out["jsonl"])]) == 0
    assert main(["-q", "recommend", str(out["model"]), "--k", "3", "--out", f"sqlite:///{out['db']}",
                 "--run-id", "good1"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["model", "preds.csv", "recs.db", "recs.jsonl", "train.tsv"]
    return out


@dataclass
class Ctx:
    """What a case's builder gets: a scratch folder, the output folder, the good artifacts."""

    tmp: Path
    out: Path  # everything a command may write goes here; compared before / after
    good: dict[str, Path]
    www: Path
    base: str

    def write(self, name: str, data: bytes | str) -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return p

    def model(self) -> Path:
        """A private copy of the good model folder (to damage)."""
        dst = self.tmp / "model"
        if not dst.exists():
            shutil.copytree(self.good["model"], dst)
        return dst

    def prior(self, key: str, name: str | None = None) -> Path:
        """Copy a good output into the output folder: it must be byte-identical afterwards."""
        src = self.good[key]
        dst = self.out / (name or src.name)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
        return dst


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Ctx], list[Any]]  # makes the input, returns the argv (after "fmrec")
    expect: tuple[str, ...]  # substrings of the one error line


# --------------------------------------------------------------------------- builders
def train_on(name: str, data: bytes | str, *extra: str) -> Callable[[Ctx], list[Any]]:
    """``fmrec train FILE --out OUT/model`` on a file holding ``data``."""

    def build(c: Ctx) -> list[Any]:
        return ["train", c.write(name, data), "--out", c.out / "model", *SMALL, *extra]

    return build


def predict_on(name: str, data: bytes | str, *extra: str) -> Callable[[Ctx], list[Any]]:
    """``fmrec predict MODEL FILE --out OUT/preds.csv`` where good predictions already exist."""

    def build(c: Ctx) -> list[Any]:
        preds = c.prior("preds")
        return ["predict", c.good["model"], c.write(name, data), "--out", preds, *extra]

    return build


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


GOOD_PARQUET = parquet_bytes(pd.DataFrame({"user_id": [1, 1, 2, 3], "item_id": [1, 2, 1, 3],
                                           "rating": [4.0, 3.0, 5.0, 1.0]}))


def recordio_bytes() -> bytes:
    from fmrec.interop.recordio import write_recordio

    # one-hot FM rows: columns 0..2 are users, 3..5 items; label = rating
    rows = sp.csr_matrix((np.ones(8, np.float32), ([0, 0, 1, 1, 2, 2, 3, 3], [0, 3, 0, 4, 1, 3, 2, 5])),
                         shape=(4, 6))
    buf = io.BytesIO()
    write_recordio(buf, rows, np.array([4, 3, 5, 1], np.float32))
    return buf.getvalue()


def damage_model(mutate: Callable[[Path], None]) -> Callable[[Ctx], list[Any]]:
    """``fmrec predict`` on a damaged copy of the good model (good predictions already there)."""

    def build(c: Ctx) -> list[Any]:
        m = c.model()
        mutate(m)
        preds = c.prior("preds")
        return ["predict", m, c.good["train"], "--out", preds]

    return build


def _manifest(m: Path) -> dict[str, Any]:
    return json.loads((m / "manifest.json").read_text())


def _set_manifest(m: Path, **changes: Any) -> None:
    man = _manifest(m)
    man.update(changes)
    (m / "manifest.json").write_text(json.dumps(man))


def _wrong_checksum(m: Path) -> None:
    man = _manifest(m)
    man["checksums"]["arrays.npz"] = "0" * 64
    (m / "manifest.json").write_text(json.dumps(man))


def _truncate_npz(name: str) -> Callable[[Path], None]:
    def mutate(m: Path) -> None:
        data = (m / name).read_bytes()
        (m / name).write_bytes(data[: len(data) // 2])
        man = _manifest(m)  # a consistent manifest: the truncation itself must be caught
        man["checksums"][name] = hashlib.sha256((m / name).read_bytes()).hexdigest()
        (m / "manifest.json").write_text(json.dumps(man))

    return mutate


# ---- hosted FM artifacts (MXNet NDArray list in a ZIP in a tar.gz; FORMATS.md section 2)
def _nd(a: np.ndarray) -> bytes:
    flag = {np.dtype("f4"): 0}[a.dtype]
    shape = struct.pack("<i", a.ndim) + struct.pack(f"<{a.ndim}q", *a.shape)
    return struct.pack("<Ii", 0xF993FAC9, 0) + shape + struct.pack("<ii", 1, 0) + struct.pack("<i", flag) + a.tobytes()


def fm_params() -> bytes:
    arrays = [_nd(np.ones((4, 2), np.float32)), _nd(np.ones((4, 1), np.float32)), _nd(np.zeros(1, np.float32))]
    out = struct.pack("<QQQ", 0x112, 0, len(arrays)) + b"".join(arrays)
    names = ["arg:v", "arg:w1_weight", "arg:w0_weight"]
    out += struct.pack("<Q", len(names)) + b"".join(struct.pack("<Q", len(n)) + n.encode() for n in names)
    return out


SYMBOL = json.dumps({"nodes": [{"op": "null", "name": "fm_logit"}, {"op": "null", "name": "out_label"},
                               {"op": "LogisticRegressionOutput", "name": "out"}], "heads": [[2, 0, 0]]})


def artifact(params: bytes | None, extra: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("symbol.json", SYMBOL)
        if params is not None:
            zf.writestr("params", params)
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w:gz") as tf:
        for name, data in [*extra, ("model_algo-1", zbuf.getvalue())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return tbuf.getvalue()


def import_on(name: str, data: bytes) -> Callable[[Ctx], list[Any]]:
    def build(c: Ctx) -> list[Any]:
        return ["import-sagemaker", c.write(name, data), "--users", "2", "--out", c.out / "model"]

    return build


# ---- data set archives served over local HTTP
def fetch_zip(name: str, members: dict[str, bytes]) -> Callable[[Ctx], list[Any]]:
    def build(c: Ctx) -> list[Any]:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for member, data in members.items():
                zf.writestr(member, data)
        path = c.www / f"{c.tmp.name}-{name}"
        path.write_bytes(buf.getvalue())
        digest = hashlib.sha256(buf.getvalue()).hexdigest()
        return ["datasets", "fetch", "movielens-100k", "--dest", c.out / "data",
                "--url", f"{c.base}/{path.name}", "--sha256", digest]

    return build


# ---- feature tables
def features_on(name: str, data: bytes | str, *extra: str) -> Callable[[Ctx], list[Any]]:
    """``fmrec train`` with a bad --user-features file (the training file is good)."""

    def build(c: Ctx) -> list[Any]:
        feats = c.write(name, data)
        return ["train", c.good["train"], "--out", c.out / "model", *SMALL, "--user-features", feats, *extra]

    return build


# ---- fmrec run configs
def run_config(text: str) -> Callable[[Ctx], list[Any]]:
    def build(c: Ctx) -> list[Any]:
        return ["run", c.write("pipeline.toml", text), "--output", c.out / "run"]

    return build


# ---- vectors files
def vectors_on(mutate: Callable[[dict[str, np.ndarray]], bytes]) -> Callable[[Ctx], list[Any]]:
    """``fmrec recommend --vectors FILE --out sqlite:///OUT/recs.db`` over a published database."""

    def build(c: Ctx) -> list[Any]:
        arrays = {
            "user_ids": np.array([1, 2, 3], np.int64), "user_vectors": np.ones((3, 2), np.float32),
            "item_ids": np.array([10, 20], np.int64), "item_vectors": np.ones((2, 2), np.float32),
        }
        vec = c.write("vectors.npz", mutate(arrays))
        db = c.prior("db")
        return ["recommend", "--vectors", vec, "--k", "2", "--out", f"sqlite:///{db}"]

    return build


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npz_without(name: str) -> Callable[[dict[str, np.ndarray]], bytes]:
    return lambda arrays: _npz({k: v for k, v in arrays.items() if k != name})


def _npz_truncated(arrays: dict[str, np.ndarray]) -> bytes:
    data = _npz(arrays)
    return data[: len(data) - 200]


def recommend_model(*extra: str, out: str = "recs.jsonl") -> Callable[[Ctx], list[Any]]:
    def build(c: Ctx) -> list[Any]:
        return ["recommend", c.good["model"], *extra, "--out", c.out / out]

    return build


def runs_list(*extra: str) -> Callable[[Ctx], list[Any]]:
    """``fmrec runs list`` against the published SQLite database (must stay byte-identical)."""

    def build(c: Ctx) -> list[Any]:
        db = c.prior("db")
        return ["runs", "list", "--target", f"sqlite:///{db}", *extra]

    return build


def _missing_model(c: Ctx) -> list[Any]:
    return ["predict", c.tmp / "no-such-model", c.good["train"], "--out", c.out / "preds.csv"]


def _recommend_bad_model_over_jsonl(c: Ctx) -> list[Any]:
    m = c.model()
    (m / "manifest.json").write_text('{"format": "fmrec-model", "format_version": 1, ')
    jsonl = c.prior("jsonl")
    return ["recommend", m, "--k", "3", "--out", jsonl]


def _recommend_truncated_seen_over_jsonl(c: Ctx) -> list[Any]:
    m = c.model()
    _truncate_npz("seen.npz")(m)  # predict never reads seen.npz; recommend does
    jsonl = c.prior("jsonl")
    return ["recommend", m, "--k", "3", "--out", jsonl]


def _train_over_existing_model(c: Ctx) -> list[Any]:
    model = c.prior("model")
    bad = c.write("nan.tsv", GOOD_TSV + "99\t1\tnan\t880000000\n")
    return ["train", bad, "--out", model, *SMALL]


def _bad_item_names(c: Ctx) -> list[Any]:
    names = c.write("movies.csv", b"movieId,title\n1,Caf\xe9 (1999)\n")
    return ["train", c.good["train"], "--out", c.out / "model", *SMALL, "--item-names", names]


def _run_bad_train_over_published(c: Ctx) -> list[Any]:
    db = c.prior("db")  # the lists published by an earlier run: untouched by a failed one
    c.write("bad.csv", "user_id,item_id,rating\n1,1,4\n2,1,nan\n")
    cfg = c.write("pipeline.toml", f"[data]\ntrain = 'bad.csv'\ntest_per_user = 0\n"
                                   f"[recommend]\ntarget = 'sqlite:///{db}'\n[output]\ndir = 'runs-out'\n")
    return ["run", cfg, "--run-id", "r2"]


def _evaluate_lists_not_utf8(c: Ctx) -> list[Any]:
    lists = c.write("lists.jsonl", b'{"user_id": 1, "items": [1], "scores": [0.5]}\n{"user_id": 2, "it\xe9ms": []}\n')
    return ["evaluate", c.good["model"], c.good["train"], "--recommendations", lists,
            "--json", c.out / "metrics.json"]


def _evaluate_json_is_a_folder(c: Ctx) -> list[Any]:
    (c.out / "metrics").mkdir()
    return ["evaluate", c.good["model"], c.good["train"], "--json", c.out / "metrics"]


def _predict_out_is_a_folder(c: Ctx) -> list[Any]:
    (c.out / "preds").mkdir()
    return ["predict", c.good["model"], c.good["train"], "--out", c.out / "preds"]


def _postgres_bad_identifier(c: Ctx) -> list[Any]:
    # port 1 on loopback: were the name not refused first, the connection would fail instead
    return ["runs", "list", "--target", "postgresql://fmrec@127.0.0.1:1/fmrec",
            "--runs-table", "fmrec_runs; DROP TABLE users"]


def _sqlite_url_parameters(c: Ctx) -> list[Any]:
    return ["recommend", c.good["model"], "--k", "3",
            "--out", f"sqlite:///{c.out / 'recs.db'}?view=x;DROP TABLE y"]


# --------------------------------------------------------------------------- the corpus
T = "\t"
CASES: list[Case] = [
    # ---- delimited interaction files
    Case("truncated-last-line", train_on("cut.tsv", GOOD_TSV + "7\t3"),
         (f"cut.tsv:{GOOD_LINES + 1}:", "truncated last line", "expected 4 fields", "'7\\t3'")),
    Case("semicolons-where-tabs-expected", train_on("semi.tsv", GOOD_TSV.replace(T, ";"), "--format", "tsv"),
         ("semi.tsv:1:", "separated by tab", "wrong delimiter", "'1;1;2;880000008'")),
    Case("one-line-with-semicolons", train_on("mixed.tsv", "1\t1\t5\t9\n2\t1\t4\t9\n3;1;4;9\n4\t1\t3\t9\n"),
         ("mixed.tsv:3:", "expected 4 fields separated by tab, found 1", "'3;1;4;9'")),
    Case("wrong-field-count", train_on("fields.csv", "user_id,item_id,rating\n1,1,4\n2,1,3,extra\n3,1,2\n"),
         ("fields.csv:3:", "expected 3 fields", "found 4", "'2,1,3,extra'")),
    Case("nan-rating", train_on("nan.csv", "user_id,item_id,rating\n1,1,4\n2,1,NaN\n"),
         ("nan.csv:3:", "column 'rating'", "not a finite number", "'NaN'")),
    Case("inf-rating", train_on("inf.csv", "user_id,item_id,rating\n1,1,4\n2,1,3\n3,1,inf\n"),
         ("inf.csv:4:", "column 'rating'", "not a finite number", "'inf'")),
    Case("non-numeric-rating", train_on("word.csv", "user_id,item_id,rating\n1,1,four\n"),
         ("word.csv:2:", "column 'rating'", "not a finite number", "'four'")),
    Case("empty-file", train_on("empty.csv", b""), ("empty.csv", "empty file (0 bytes)")),
    Case("blank-lines-only", train_on("blank.csv", "\n\r\n\n"), ("blank.csv", "empty file (only blank lines)")),
    Case("header-only", train_on("head.csv", "user_id,item_id,rating\n"),
         ("head.csv:1:", "header but no data rows", "'user_id,item_id,rating'")),
    Case("duplicate-header-columns", train_on("dups.csv", "user_id,item_id,item_id\n1,1,2\n"),
         ("dups.csv:1:", "duplicate column name", "'item_id'")),
    Case("duplicate-user-item-row", train_on("pairs.csv", "user_id,item_id,rating\n1,1,4\n2,1,3\n1,1,5\n"),
         ("pairs.csv:4:", "duplicate (user, item) pair, first seen on line 2", "'1,1'")),
    Case("missing-id", train_on("noid.csv", "user_id,item_id,rating\n1,1,4\n,2,3\n"),
         ("noid.csv:3:", "column 'user_id'", "empty ID")),
    Case("non-utf8-bytes", train_on("latin1.csv", b"user_id,item_id,rating\n1,caf\xe9,4\n"),
         ("latin1.csv:2:", "not valid UTF-8", "byte 0xe9", "'1,caf\\\\xe9,4'")),
    Case("blank-line-between-rows", train_on("gap.tsv", "1\t1\t5\t9\n\n2\t1\t4\t9\n"),
         ("gap.tsv:2:", "blank line between rows")),
    Case("no-user-column", train_on("cols.csv", "customer,product_code,rating\n1,1,4\n"),
         ("cols.csv:1:", "no user column found", "user_col")),
    Case("non-numeric-timestamp", train_on("ts.csv", "user_id,item_id,rating,timestamp\n1,1,4,9\n2,2,4,yesterday\n"),
         ("ts.csv:3:", "column 'timestamp'", "not a number", "'yesterday'")),
    Case("nan-rating-keeps-previous-model", _train_over_existing_model,
         (f"nan.tsv:{GOOD_LINES + 1}:", "column 'rating'", "not a finite number", "'nan'")),
    Case("predict-input-wrong-fields-keeps-previous-predictions",
         predict_on("score.tsv", "1\t1\t4\t9\n2\t1\n", "--format", "movielens"),
         ("score.tsv:2:", "expected 4 fields separated by tab, found 2", "'2\\t1'")),
    Case("item-names-not-utf8", _bad_item_names, ("movies.csv:2:", "not valid UTF-8", "byte 0xe9")),
    Case("train-option-factors-zero", train_on("ok.tsv", GOOD_TSV, "--factors", "0"),
         ("n_factors must be a positive integer, got 0",)),
    Case("run-bad-train-file-keeps-published-lists", _run_bad_train_over_published,
         ("bad.csv:3:", "column 'rating'", "'nan'", "stage 'load' failed; published lists untouched")),
    Case("evaluate-lists-not-utf8", _evaluate_lists_not_utf8, ("lists.jsonl:2:", "not valid UTF-8", "byte 0xe9")),
    Case("evaluate-json-is-a-folder", _evaluate_json_is_a_folder, ("--json", "metrics is a folder")),
    Case("predict-out-is-a-folder", _predict_out_is_a_folder, ("--out", "preds is a folder")),
    # ---- Parquet
    Case("parquet-truncated", train_on("cut.parquet", GOOD_PARQUET[: len(GOOD_PARQUET) // 2]),
         ("cut.parquet", "not a readable Parquet file")),
    Case("parquet-missing-user-column",
         train_on("nouser.parquet", parquet_bytes(pd.DataFrame({"item_id": [1, 2], "rating": [4.0, 3.0]}))),
         ("nouser.parquet", "no user column found", "['item_id', 'rating']")),
    Case("parquet-nan-rating",
         train_on("nan.parquet", parquet_bytes(pd.DataFrame({"user_id": [1, 2, 3], "item_id": [1, 1, 1],
                                                             "rating": [4.0, float("nan"), 3.0]}))),
         ("nan.parquet:2:", "column 'rating'", "missing rating")),
    # ---- RecordIO-protobuf
    Case("recordio-truncated-mid-record", train_on("cut.recordio", recordio_bytes()[:-10], "--recordio-users", "3"),
         ("cut.recordio", "record 4", "truncated")),
    Case("recordio-bad-magic", train_on("magic.recordio", b"\x00\x00\x00\x00" + recordio_bytes()[4:]),
         ("magic.recordio", "bad RecordIO magic")),
    # ---- model folders
    Case("model-manifest-wrong-checksum", damage_model(_wrong_checksum),
         ("arrays.npz", "checksum mismatch", "manifest 000000000000")),
    Case("model-arrays-npz-truncated", damage_model(_truncate_npz("arrays.npz")),
         ("arrays.npz", "cannot read arrays")),
    Case("model-seen-npz-truncated-keeps-previous-lists", _recommend_truncated_seen_over_jsonl,
         ("seen.npz", "cannot read arrays")),
    Case("model-newer-format-version", damage_model(lambda m: _set_manifest(m, format_version=99)),
         ("manifest.json", "format version 99 is newer", "upgrade fmrec")),
    Case("model-missing-manifest", damage_model(lambda m: (m / "manifest.json").unlink()),
         ("manifest.json", "missing", "not an fmrec model folder")),
    Case("model-manifest-not-json-keeps-previous-lists", _recommend_bad_model_over_jsonl,
         ("manifest.json", "not valid JSON")),
    Case("predict-model-folder-missing", _missing_model, ("no-such-model", "model folder not found")),
    # ---- hosted FM artifacts
    Case("artifact-tar-dotdot-path", import_on("model.tar.gz", artifact(fm_params(), (("../evil", b"x"),))),
         ("model.tar.gz", "unsafe member", "'../evil'")),
    Case("artifact-zip-without-params", import_on("noparams.tar.gz", artifact(None)),
         ("noparams.tar.gz", "no 'params' entry")),
    Case("artifact-truncated-params", import_on("cut.params", fm_params()[:-40]), ("cut.params", "truncated")),
    Case("artifact-not-an-archive", import_on("junk.tar.gz", b"hello, I am not a model"),
         ("junk.tar.gz", "not a hosted FM artifact")),
    # ---- data set archives
    Case("dataset-zip-escaping-member", fetch_zip("evil.zip", {"ml-100k/u.data": b"1\t1\t1\t1\n", "../evil": b"x"}),
         ("evil.zip", "unsafe archive member '../evil'", "nothing was extracted")),
    Case("dataset-zip-absolute-member",
         fetch_zip("abs.zip", {"ml-100k/u.data": b"1\t1\t1\t1\n", "/tmp/fmrec-corpus-abs": b"x"}),
         ("abs.zip", "unsafe archive member '/tmp/fmrec-corpus-abs'", "nothing was extracted")),
    # ---- SQL targets
    Case("sqlite-view-name-with-sql", runs_list("--view", "x; DROP TABLE fmrec_runs"),
         ("invalid view", "'x; DROP TABLE fmrec_runs'")),
    Case("sqlite-runs-table-name-with-sql", runs_list("--runs-table", 'fmrec_runs"; DROP TABLE x; --'),
         ("invalid runs_table", "DROP TABLE x")),
    Case("sqlite-url-with-parameters", _sqlite_url_parameters, ("invalid SQLite URL", "recs.db?view=x;DROP TABLE y")),
    Case("postgres-runs-table-name-with-sql", _postgres_bad_identifier,
         ("invalid runs_table", "'fmrec_runs; DROP TABLE users'")),
    # ---- feature tables
    Case("features-empty-table", features_on("users.csv", "user_id,age\n"), ("users.csv", "feature table has no rows")),
    Case("features-duplicate-ids", features_on("users.csv", "user_id,age\n1,20\n2,30\n1,40\n"),
         ("users.csv:4:", "duplicate ID", "column 'user_id'", "(value 1)")),
    Case("features-only-id-column", features_on("users.csv", "user_id\n1\n2\n"),
         ("users.csv", "no feature columns (only the ID column)")),
    Case("features-not-utf8", features_on("users.csv", b"user_id,city\n1,M\xfcnchen\n"),
         ("users.csv:2:", "not valid UTF-8", "byte 0xfc at column 4", "'1,M\\\\xfcnchen'")),
    Case("features-unknown-role", features_on("users.csv", "user_id,age\n1,20\n", "--user-feature-roles", "age=fancy"),
         ("--user-feature-roles: unknown role 'fancy' for column 'age'",)),
    Case("features-role-for-absent-column",
         features_on("users.csv", "user_id,age\n1,20\n", "--user-feature-roles", "height=numeric"),
         ("users.csv: role given for unknown column 'height'", "['age']")),
    # ---- fmrec run configs
    Case("config-invalid-toml", run_config("[data\ntrain = 'x.csv'\n"), ("pipeline.toml", "invalid TOML", "line 1")),
    Case("config-unknown-key", run_config("[data]\ntrian = 'x.csv'\n"),
         ("pipeline.toml", "unknown key 'trian' in [data]")),
    Case("config-wrong-type", run_config("[recommend]\nk = 'ten'\n"),
         ("pipeline.toml", "[recommend] k must be an integer", "'ten'")),
    Case("config-unknown-section", run_config("[modle]\nn_factors = 8\n"),
         ("pipeline.toml", "unknown section [modle]")),
    Case("config-not-utf8", run_config("[data]\ntrain = 'caf\udce9.csv'\n".encode("utf-8", "surrogateescape")),
         ("pipeline.toml", "not UTF-8")),
    # ---- vectors files
    Case("vectors-missing-array", vectors_on(_npz_without("item_vectors")), ("vectors.npz", "item_vectors")),
    Case("vectors-truncated", vectors_on(_npz_truncated), ("vectors.npz", "truncated")),
    # ---- options and targets
    Case("recommend-k-zero", recommend_model("--k", "0"), ("--k must be a positive integer", "got 0")),
    Case("recommend-unsupported-out-suffix", recommend_model("--k", "3", out="recs.csv"),
         ("unknown sink target", "recs.csv'")),
]


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders)."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 35
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, good: dict[str, Path], served: tuple[Path, str], tmp_path: Path,
                   capsys: pytest.CaptureFixture[str]) -> None:
    ctx = Ctx(tmp_path / "in", tmp_path / "out", good, *served)
    ctx.tmp.mkdir()
    ctx.out.mkdir()
    argv = [str(a) for a in case.build(ctx)]
    before = _tree(ctx.out)
    capsys.readouterr()

    rc = main(argv)
    out, err = capsys.readouterr()

    command = argv[0]
    assert rc == 1, (rc, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    line = lines[0]
    assert line.startswith(f"fmrec {command}: error: "), line
    for text in case.expect:
        assert text in line, f"{text!r} not in {line!r}"
    assert out == "", out
    assert _tree(ctx.out) == before, "the command left partial output or changed a previous good output"


# --------------------------------------------------------------------------- Python API
@pytest.mark.parametrize("target", ["sqlite", "postgresql"])
@pytest.mark.parametrize("option", ["view", "table", "runs_table"])
def test_sql_in_target_names_is_refused_before_anything_is_created(tmp_path: Path, target: str, option: str) -> None:
    from fmrec.store import open_sink

    db = tmp_path / "recs.db"
    url = f"sqlite:///{db}" if target == "sqlite" else "postgresql://fmrec@127.0.0.1:1/fmrec"
    with pytest.raises(ConfigError) as exc:
        open_sink(url, run_id="r1", **{option: "x; DROP TABLE y"})
    msg = str(exc.value)
    assert "\n" not in msg and f"invalid {option}" in msg and "'x; DROP TABLE y'" in msg
    assert list(tmp_path.iterdir()) == []  # no database file, no folder


# --------------------------------------------------------------------------- valid edge IDs
def test_negative_and_huge_ids_are_external_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Negative IDs and IDs past int64 are valid: the first stay int64, the second make their column text.

    User IDs -5, -1, 2**63 - 1 all fit in int64 -> the user column is int64 and the
    lists carry JSON integers.  The item column holds 2**63 (does not fit), so all of
    its IDs stay strings ("1" as well): JSON strings, never rounded, never wrapped.
    """
    big_user, huge_item = 2**63 - 1, 2**63
    users = [-5, -1, big_user, 7]
    items = [1, 2, huge_item, 18446744073709551616]
    rows = "".join(f"{u}\t{i}\t{(k + j) % 5 + 1}\t{880000000 + k}\n"
                   for k, u in enumerate(users) for j, i in enumerate(items) if (k + j) % 4 != 3)
    train = tmp_path / "ids.tsv"
    train.write_text(rows)
    assert main(["-q", "train", str(train), "--out", str(tmp_path / "m"), *SMALL]) == 0
    assert main(["-q", "recommend", str(tmp_path / "m"), "--k", "4", "--include-seen",
                 "--out", str(tmp_path / "recs.jsonl")]) == 0
    capsys.readouterr()
    lists = [json.loads(line) for line in (tmp_path / "recs.jsonl").read_text().splitlines()]
    assert sorted(r["user_id"] for r in lists) == sorted(users)
    assert all(type(r["user_id"]) is int for r in lists)
    for r in lists:
        assert sorted(r["items"]) == sorted(str(i) for i in items)
        assert all(type(i) is str for i in r["items"])
    # the same IDs read back unchanged through predict
    assert main(["-q", "predict", str(tmp_path / "m"), str(train), "--out", str(tmp_path / "p.csv")]) == 0
    pred = pd.read_csv(tmp_path / "p.csv", dtype=str)
    assert set(pred["user_id"]) == {str(u) for u in users}
    assert set(pred["item_id"]) == {str(i) for i in items}
