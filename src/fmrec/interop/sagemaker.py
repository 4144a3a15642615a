"""Turn a hosted Factorization Machines artifact into a fitted fmrec model, without MXNet.

Artifact layout (``shared/docs/FORMATS.md`` section 1)::

    model.tar.gz
      model_algo-1            a ZIP archive holding
        symbol.json           the MXNet graph (output op tells binary from regression)
        params                an MXNet NDArray list: arg:v (n, k), arg:w1_weight (n, 1), arg:w0_weight (1,)

:func:`import_sagemaker` also accepts the ``model_algo-1`` ZIP itself or a bare
``params`` file.  Nothing is written to disk: the tar member is spooled into an
anonymous temporary file and the ZIP entries are read into memory.  Every member
name is checked anyway, and an absolute path, a ``..`` component, a link or a
device member is refused (``ArtifactError``), as is a declared size beyond
``max_bytes``.

Column mapping: users occupy columns ``0 .. n_users-1`` and items the rest, user
``u`` at column ``u - 1`` and item ``m`` at ``n_users + m - 1`` (1-based ids, the
reference pipeline's layout); or explicit ``user_ids``/``item_ids`` per column;
or a column map CSV ``column,side,id``.  The result is a normal fitted
:class:`~fmrec.model.FactorizationMachine` with an encoder, ready for
``save_model``, ``predict`` and ``recommend_all``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
import sys
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Sequence

import numpy as np

from fmrec.errors import ArtifactError, ConfigError, DataError
from fmrec.interop.mxnet_params import LIST_MAGIC, read_ndarray_list

__all__ = [
    "import_sagemaker",
    "read_sagemaker_params",
    "read_column_map",
    "detect_task",
    "SageMakerArtifact",
    "ColumnLayout",
    "seen_from_file",
    "MAX_BYTES",
]

log = logging.getLogger("fmrec.interop")

#: Tasks a hosted FM artifact can be (its binary_classifier and regressor predictor types).
IMPORT_TASKS = ("binary", "regression")
#: Largest member read from an artifact (declared or actual), to stop tar/zip bombs.
MAX_BYTES = 8 << 30
_TASK_OF_OP = {
    "LogisticRegressionOutput": "binary",
    "LinearRegressionOutput": "regression",
    "MAERegressionOutput": "regression",
}
_KEYS = {"V": ("arg:v", "v"), "w": ("arg:w1_weight", "w1_weight"), "w0": ("arg:w0_weight", "w0_weight")}


@dataclass(eq=False)
class SageMakerArtifact:
    """What an artifact holds: the arrays, the graph's output op and where it came from."""

    w0: float
    w: np.ndarray  # (n_features,) float32
    V: np.ndarray  # (n_features, k) float32
    task: str | None  # from symbol.json's output op, None when unknown
    output_op: str | None
    source: str
    sha256: str
    keys: list[str]  # parameter names in the params file

    @property
    def n_features(self) -> int:
        return int(self.V.shape[0])


# ------------------------------------------------------------------ safe extraction
def _unsafe_name(name: str) -> str | None:
    """Why a member name is unsafe, or None."""
    if not name or "\x00" in name:
        return "empty or NUL in name"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        return "absolute path"
    if ".." in PurePosixPath(norm).parts:
        return "path escapes the archive ('..')"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _copy_limited(src: IO[bytes], dst: IO[bytes], limit: int, what: str) -> int:
    total = 0
    while True:
        chunk = src.read(1 << 20)
        if not chunk:
            return total
        total += len(chunk)
        if total > limit:
            raise ArtifactError(f"{what}: larger than the {limit >> 20} MiB limit (max_bytes)")
        dst.write(chunk)


def _model_member(tf: tarfile.TarFile, label: str) -> tarfile.TarInfo:
    members = tf.getmembers()
    for m in members:
        why = _unsafe_name(m.name)
        if why:
            raise ArtifactError(f"{label}: unsafe member {m.name!r} in model.tar.gz ({why}); refusing the archive")
    files = [m for m in members if PurePosixPath(m.name.replace("\\", "/")).name.startswith("model_algo-")]
    if not files:
        names = ", ".join(repr(m.name) for m in members[:5]) or "nothing"
        raise ArtifactError(f"{label}: no model_algo-* member in the tar (it holds {names})")
    best = next((m for m in files if PurePosixPath(m.name).name == "model_algo-1"), files[0])
    if not best.isreg():
        kind = "link" if (best.issym() or best.islnk()) else "special file"
        raise ArtifactError(f"{label}: member {best.name!r} is a {kind}, not a regular file; refusing it")
    return best


def _open_zip_from_tar(path: Path, label: str, max_bytes: int) -> tuple[zipfile.ZipFile, IO[bytes]]:
    spool: IO[bytes] = tempfile.TemporaryFile()  # anonymous: never a named file outside a temp dir
    try:
        with tarfile.open(path, "r:*") as tf:
            member = _model_member(tf, label)
            if member.size > max_bytes:
                raise ArtifactError(f"{label}: member {member.name!r} declares {member.size} bytes, over max_bytes")
            src = tf.extractfile(member)
            if src is None:
                raise ArtifactError(f"{label}: member {member.name!r} cannot be read")
            _copy_limited(src, spool, max_bytes, f"{label}: {member.name}")
        spool.seek(0)
        return _open_zip(spool, f"{label}: {member.name}"), spool
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        spool.close()
        raise ArtifactError(f"{label}: not a readable model.tar.gz ({type(exc).__name__}: {exc})") from None
    except BaseException:
        spool.close()
        raise


def _open_zip(fileobj: Any, label: str) -> zipfile.ZipFile:
    try:
        zf = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ArtifactError(f"{label}: not a readable ZIP archive (model_algo-1) ({exc})") from None
    for info in zf.infolist():
        why = _unsafe_name(info.filename)
        if why:
            raise ArtifactError(f"{label}: unsafe entry {info.filename!r} in the ZIP ({why}); refusing the archive")
    return zf


def _zip_read(zf: zipfile.ZipFile, name: str, label: str, max_bytes: int) -> bytes:
    info = zf.getinfo(name)
    if info.file_size > max_bytes:
        raise ArtifactError(f"{label}: entry {name!r} declares {info.file_size} bytes, over max_bytes")
    try:
        with zf.open(info) as fh:
            buf = io.BytesIO()
            _copy_limited(fh, buf, max_bytes, f"{label}: {name}")
            return buf.getvalue()
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise ArtifactError(f"{label}: cannot read ZIP entry {name!r} ({exc})") from None


def _find_entry(zf: zipfile.ZipFile, label: str) -> tuple[str, str | None]:
    names = [i.filename for i in zf.infolist() if not i.is_dir()]
    base = {PurePosixPath(n).name: n for n in names}
    params = base.get("params")
    if params is None:
        cands = [n for n in names if n.endswith(".params")]
        if len(cands) == 1:
            params = cands[0]
    if params is None:
        raise ArtifactError(f"{label}: ZIP has no 'params' entry (entries: {', '.join(map(repr, names)) or 'none'})")
    symbol = base.get("symbol.json")
    if symbol is None:
        cands = [n for n in names if n.endswith("symbol.json")]
        symbol = cands[0] if len(cands) == 1 else None
    return params, symbol


# -------------------------------------------------------------------- symbol.json
def detect_task(symbol_json: bytes | str | None) -> tuple[str | None, str | None]:
    """``(task, output_op)`` from an MXNet symbol JSON: the op of the graph's head.

    ``LogisticRegressionOutput`` -> ``"binary"``; ``LinearRegressionOutput`` /
    ``MAERegressionOutput`` -> ``"regression"``; anything else -> ``(None, op)``.
    """
    if symbol_json is None:
        return None, None
    try:
        graph = json.loads(symbol_json)
        nodes = graph["nodes"]
        heads = graph.get("heads") or [[len(nodes) - 1, 0, 0]]
        op = str(nodes[int(heads[0][0])].get("op"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None, None
    return _TASK_OF_OP.get(op), op


# -------------------------------------------------------------------- params
def _pick(params: dict[str, Any], what: str, label: str) -> np.ndarray:
    for key in _KEYS[what]:
        if key in params:
            arr = params[key]
            if arr is None:
                raise ArtifactError(f"{label}: parameter {key!r} is an empty (none) array")
            return arr
    raise ArtifactError(
        f"{label}: parameter {_KEYS[what][0]!r} missing (keys present: {', '.join(map(repr, params)) or 'none'})"
    )


def _float32(arr: np.ndarray, key: str, label: str) -> np.ndarray:
    if arr.dtype.kind not in "fiu":
        raise ArtifactError(f"{label}: parameter {key!r} has dtype {arr.dtype}, not a number type")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(out)):
        raise ArtifactError(f"{label}: parameter {key!r} holds non-finite values")
    return out


def read_sagemaker_params(source: Any, *, max_bytes: int = MAX_BYTES) -> SageMakerArtifact:
    """Read V, w, w0 (and the task from ``symbol.json``) from ``model.tar.gz``,
    a ``model_algo-1`` ZIP or a bare ``params`` file.  No MXNet, nothing written to disk."""
    path = Path(source)
    label = str(path)
    if not path.is_file():
        raise ArtifactError(f"{label}: file not found" if not path.exists() else f"{label}: not a file")
    with open(path, "rb") as fh:
        head = fh.read(512)
    symbol: bytes | None = None
    spool = None
    if len(head) >= 8 and int.from_bytes(head[:8], "little") == LIST_MAGIC:
        params_bytes = path.read_bytes()
        params_label = label
    else:
        if head[:4] == b"PK\x03\x04":
            zf = _open_zip(path, label)
            zlabel = label
        elif head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar" or head[:3] in (b"BZh", b"\xfd7z"):
            zf, spool = _open_zip_from_tar(path, label, max_bytes)
            zlabel = f"{label}: model_algo-1"
        else:
            raise ArtifactError(
                f"{label}: not a hosted FM artifact (expected model.tar.gz, a model_algo-1 ZIP or an MXNet "
                f"params file; first bytes {head[:8].hex()})"
            )
        try:
            with zf:
                pname, sname = _find_entry(zf, zlabel)
                params_bytes = _zip_read(zf, pname, zlabel, max_bytes)
                if sname is not None:
                    symbol = _zip_read(zf, sname, zlabel, max_bytes)
        finally:
            if spool is not None:
                spool.close()
        params_label = f"{zlabel}: {pname}"
    params = read_ndarray_list(params_bytes, name=params_label)
    if not isinstance(params, dict):
        raise ArtifactError(f"{params_label}: MXNet params hold unnamed arrays; expected arg:v, arg:w1_weight, arg:w0_weight")
    V = _float32(_pick(params, "V", params_label), "arg:v", params_label)
    w = _float32(_pick(params, "w", params_label), "arg:w1_weight", params_label)
    w0 = _float32(_pick(params, "w0", params_label), "arg:w0_weight", params_label)
    if V.ndim != 2 or V.shape[0] == 0 or V.shape[1] == 0:
        raise ArtifactError(f"{params_label}: arg:v has shape {V.shape}; expected (n_features, n_factors)")
    n = V.shape[0]
    if not (w.shape == (n, 1) or w.shape == (n,)):
        raise ArtifactError(f"{params_label}: arg:w1_weight has shape {w.shape}; expected ({n}, 1) to match arg:v")
    if w0.size != 1:
        raise ArtifactError(f"{params_label}: arg:w0_weight has shape {w0.shape}; expected (1,)")
    task, op = detect_task(symbol)
    return SageMakerArtifact(
        w0=float(w0.reshape(-1)[0]), w=w.reshape(-1).copy(), V=V, task=task, output_op=op,
        source=label, sha256=_sha256(path), keys=list(params),
    )


# ----------------------------------------------------------------- column layout
@dataclass(eq=False)
class ColumnLayout:
    """Which user / item each artifact column is: ``user_cols[r]`` is user ``user_ids[r]``."""

    user_cols: np.ndarray
    user_ids: np.ndarray
    item_cols: np.ndarray
    item_ids: np.ndarray

    def side_of_columns(self, n_features: int) -> tuple[np.ndarray, np.ndarray]:
        """``(side, pos)`` per column: side 0 user, 1 item, -1 unmapped; pos = index in the side's ids."""
        side = np.full(n_features, -1, dtype=np.int8)
        pos = np.full(n_features, -1, dtype=np.int64)
        side[self.user_cols] = 0
        pos[self.user_cols] = np.arange(len(self.user_cols))
        side[self.item_cols] = 1
        pos[self.item_cols] = np.arange(len(self.item_cols))
        return side, pos


def _parse_id(text: str) -> int | str:
    t = text.strip()
    if re.fullmatch(r"-?[1-9][0-9]*|0", t) and len(t.lstrip("-")) <= 18:
        return int(t)
    return t


def read_column_map(path: Any, n_features: int | None = None) -> ColumnLayout:
    """Read a column map CSV with the header ``column,side,id`` (side ``user`` or ``item``).

    Every column of the model must be listed exactly once (``n_features`` checks
    that); an id may appear once per side.  IDs are integers when every id of a
    side is an integer literal (no leading zeros), else strings.
    """
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError("column map not found", path=p) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"column map is not UTF-8 ({exc.reason})", path=p) from None
    except OSError as exc:
        raise DataError(f"cannot read column map: {exc.strerror or exc}", path=p) from None
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows or [h.strip().lower() for h in rows[0]] != ["column", "side", "id"]:
        raise DataError("column map header must be 'column,side,id'", path=p, line=1,
                        value=",".join(rows[0]) if rows else "")
    cols: dict[int, int] = {}
    sides: dict[str, list[tuple[int, str, int]]] = {"user": [], "item": []}
    for n, row in enumerate(rows[1:], start=2):
        if not row or all(not f.strip() for f in row):
            continue
        if len(row) != 3:
            raise DataError(f"expected 3 fields (column,side,id), found {len(row)}", path=p, line=n, value=",".join(row))
        c_text, side, ident = (f.strip() for f in row)
        try:
            c = int(c_text)
        except ValueError:
            raise DataError("column is not an integer", path=p, line=n, column="column", value=c_text) from None
        if c < 0 or (n_features is not None and c >= n_features):
            rng = f"[0, {n_features})" if n_features is not None else ">= 0"
            raise DataError(f"column outside {rng}", path=p, line=n, column="column", value=c)
        if c in cols:
            raise DataError(f"column listed twice (first on line {cols[c]})", path=p, line=n, column="column", value=c)
        side = side.lower()
        if side not in sides:
            raise DataError("side must be 'user' or 'item'", path=p, line=n, column="side", value=side)
        if not ident:
            raise DataError("empty id", path=p, line=n, column="id", value=ident)
        cols[c] = n
        sides[side].append((c, ident, n))
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for side, entries in sides.items():
        if not entries:
            raise DataError(f"column map lists no {side} columns", path=p)
        entries.sort()
        parsed = [_parse_id(e[1]) for e in entries]
        if all(isinstance(x, int) for x in parsed):
            ids = np.array(parsed, dtype=np.int64)
        else:
            ids = np.array([e[1] for e in entries], dtype=object).astype(str)
        seen: dict[Any, int] = {}
        for (c, ident, line), key in zip(entries, ids.tolist()):
            if key in seen:
                raise DataError(f"{side} id listed twice (first on line {seen[key]})", path=p, line=line,
                                column="id", value=ident)
            seen[key] = line
        out[side] = (np.array([e[0] for e in entries], dtype=np.int64), ids)
    if n_features is not None and len(cols) != n_features:
        missing = sorted(set(range(n_features)) - set(cols))
        raise DataError(
            f"column map covers {len(cols)} of the model's {n_features} columns (first missing: {missing[0]}); "
            "fmrec imports only user and item one-hot columns, so every column needs a side",
            path=p,
        )
    return ColumnLayout(out["user"][0], out["user"][1], out["item"][0], out["item"][1])


def _layout(
    n_features: int,
    n_users: int | None,
    user_ids: Sequence[Any] | None,
    item_ids: Sequence[Any] | None,
    column_map: Any,
) -> ColumnLayout:
    if column_map is not None:
        if n_users is not None or user_ids is not None or item_ids is not None:
            raise ConfigError("pass either a column map or n_users / user_ids / item_ids, not both")
        return read_column_map(column_map, n_features)
    if user_ids is not None:
        uids = np.asarray(list(user_ids))
        if n_users is not None and n_users != len(uids):
            raise ConfigError(f"n_users={n_users} but {len(uids)} user_ids given")
        n_users = len(uids)
    if n_users is None:
        raise ConfigError(
            f"the artifact has {n_features} columns; say how many are users (n_users / --users N, "
            "users first as in the reference pipeline) or pass a column map"
        )
    if isinstance(n_users, bool) or not isinstance(n_users, (int, np.integer)):
        raise ConfigError(f"n_users must be an integer, got {n_users!r}")
    n_users = int(n_users)
    if not 1 <= n_users < n_features:
        raise ConfigError(f"n_users={n_users} must be between 1 and {n_features - 1} (the artifact has {n_features} columns)")
    n_items = n_features - n_users
    uids = np.arange(1, n_users + 1, dtype=np.int64) if user_ids is None else np.asarray(list(user_ids))
    if item_ids is None:
        iids = np.arange(1, n_items + 1, dtype=np.int64)
    else:
        iids = np.asarray(list(item_ids))
        if len(iids) != n_items:
            raise ConfigError(f"{len(iids)} item_ids given, but {n_features} columns - {n_users} users = {n_items} items")
    for what, ids in (("user_ids", uids), ("item_ids", iids)):
        if len(np.unique(ids.astype(str) if ids.dtype.kind not in "iu" else ids)) != len(ids):
            raise ConfigError(f"{what} repeat an id")
    return ColumnLayout(np.arange(n_users, dtype=np.int64), uids, np.arange(n_users, n_features, dtype=np.int64), iids)


# ------------------------------------------------------------------------ import
def import_sagemaker(
    model_tar_gz: Any,
    *,
    n_users: int | None = None,
    user_ids: Sequence[Any] | None = None,
    item_ids: Sequence[Any] | None = None,
    column_map: Any = None,
    task: str | None = None,
    max_bytes: int = MAX_BYTES,
) -> Any:
    """A fitted :class:`~fmrec.model.FactorizationMachine` from a hosted FM artifact.

    Parameters
    ----------
    model_tar_gz : ``model.tar.gz`` (or the ``model_algo-1`` ZIP, or a bare ``params`` file).
    n_users : number of user columns; users are columns ``0..n_users-1`` with ids
        ``1..n_users`` and items the rest with ids ``1..n_items`` (the reference layout).
    user_ids, item_ids : external ids of the user / item columns, in column order
        (instead of the 1-based defaults).
    column_map : path of a ``column,side,id`` CSV naming every column instead.
    task : ``"binary"`` or ``"regression"``; ``None`` takes it from ``symbol.json``'s
        output op (``LogisticRegressionOutput`` -> binary, ``LinearRegressionOutput``
        -> regression) and fails when the artifact does not say.  An explicit task
        that contradicts ``symbol.json`` wins, with a warning.

    The model's ``import_info_`` records the source, its sha256, the output op and
    the column layout; pass it as ``extra=`` to ``save_model``.  Regression
    models are not clipped (the hosted trainer keeps no rating range).
    """
    from fmrec.data._ids import IdMap
    from fmrec.data.encode import Encoder
    from fmrec.model.fm import FactorizationMachine

    if task is not None and task not in IMPORT_TASKS:
        raise ConfigError(f"task must be one of {IMPORT_TASKS} (or None to read it from symbol.json), got {task!r}")
    art = read_sagemaker_params(model_tar_gz, max_bytes=max_bytes)
    n = art.n_features
    layout = _layout(n, n_users, user_ids, item_ids, column_map)
    if task is None:
        if art.task is None:
            why = "has no symbol.json" if art.output_op is None else f"has output op {art.output_op!r}"
            raise ArtifactError(
                f"{art.source}: cannot tell binary from regression (the artifact {why}); pass task= (--task)"
            )
        task = art.task
    elif art.task is not None and art.task != task:
        log.warning("%s: symbol.json's output op %s means %s, but task=%s was given; using %s",
                    art.source, art.output_op, art.task, task, task)
    order = np.concatenate([layout.user_cols, layout.item_cols])
    k = int(art.V.shape[1])
    model = FactorizationMachine(task=task, n_factors=k, clip_predictions=task != "regression")
    model.w0_ = float(art.w0)
    model.w_ = np.ascontiguousarray(art.w[order], dtype=np.float32)
    model.V_ = np.ascontiguousarray(art.V[order], dtype=np.float32)
    model.n_features_in_ = n
    model.y_range_ = (0.0, 1.0) if task == "binary" else (-sys.float_info.max, sys.float_info.max)
    model.history_ = []
    model.best_epoch_ = 0
    model.encoder_ = Encoder(IdMap(layout.user_ids), IdMap(layout.item_ids))
    model.layout_ = layout
    identity = bool(np.array_equal(order, np.arange(n)))
    model.import_info_ = {
        "imported_from": "sagemaker-fm",
        "source": art.source,
        "source_sha256": art.sha256,
        "output_op": art.output_op,
        "task_from": "symbol.json" if art.task == task else "argument",
        "n_users": int(len(layout.user_cols)),
        "n_items": int(len(layout.item_cols)),
        "columns": "users first, 1-based ids" if (identity and column_map is None and user_ids is None
                                                  and item_ids is None) else "explicit",
    }
    log.info("imported %s FM from %s: %d features (%d users, %d items), %d factors, w0=%.7g",
             task, art.source, n, len(layout.user_cols), len(layout.item_cols), k, art.w0)
    return model


# ----------------------------------------------------------------- seen matrix
def seen_from_file(model: Any, path: Any, **read_kwargs: Any) -> Any:
    """users x items CSR (the model's internal indices) of the interactions in ``path``.

    ``path`` is anything :func:`fmrec.data.readers.read_interactions` reads, or a
    RecordIO-protobuf FM training file, whose columns are mapped through the
    imported model's column layout (``model.layout_``).  A user or item the model
    does not know is an error naming the line / record.
    """
    import scipy.sparse as sp

    from fmrec.interop.recordio import is_recordio, read_recordio_pairs

    enc = model.encoder_
    p = Path(path)
    if is_recordio(p) or p.suffix.lower() in (".recordio", ".rec"):
        layout: ColumnLayout | None = getattr(model, "layout_", None)
        if layout is None:
            raise ConfigError("a RecordIO seen file needs an imported model (its column layout)")
        lo, hi, _, width, name = read_recordio_pairs(p)
        if width != model.n_features_in_:
            raise DataError(f"rows have {width} columns; the model has {model.n_features_in_}", path=name)
        side, pos = layout.side_of_columns(model.n_features_in_)
        s_lo, s_hi = side[lo], side[hi]
        u = np.where(s_lo == 0, pos[lo], pos[hi])
        i = np.where(s_lo == 0, pos[hi], pos[lo])
        bad = np.flatnonzero((s_lo == s_hi) | (s_lo < 0) | (s_hi < 0))
        if bad.size:
            r = int(bad[0])
            raise DataError(
                f"record {r + 1}: columns {int(lo[r])} and {int(hi[r])} are not one user and one item column",
                path=name,
            )
    else:
        from fmrec.data.readers import read_interactions

        kw = {"duplicates": "first", **read_kwargs}
        inter = read_interactions(p, **kw)
        users = inter.user_map.to_external(inter.user_idx)
        items = inter.item_map.to_external(inter.item_idx)
        u = enc.user_map.to_index(users)
        i = enc.item_map.to_index(items)
        for what, idx, ids in (("user", u, users), ("item", i, items)):
            miss = np.flatnonzero(idx < 0)
            if miss.size:
                r = int(miss[0])
                raise DataError(f"{what} id is not a column of the imported model (row {r + 1})",
                                path=p, value=ids[r])
    m = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(enc.n_users, enc.n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    m.sort_indices()
    return m

