"""Bring your own vectors: the ``vectors.npz`` file that ``fmrec export`` writes and
``fmrec recommend --vectors`` scores.

Layout (``np.savez``, loaded with ``allow_pickle=False``; nothing is pickled)::

    user_ids        (n_users,)        int64, or unicode (``<U``) strings      required
    user_vectors    (n_users, d)      float (stored float32)                   required
    item_ids        (n_items,)        int64, or unicode strings                required
    item_vectors    (n_items, d)      float (stored float32)                   required
    user_constants  (n_users,)        float64: added to the inner product      optional
    seen_indptr     (n_users + 1,)    int64  } users x items pattern of items   optional
    seen_indices    (nnz,)            int32  } to exclude (rows: user order)    (both or neither)
    fmrec_vectors_format  ()          int64: format version (1)                 optional

``fmrec export`` writes the exact MIPS form of a fitted FM (user ``[p_u, 1]``, item
``[q_i, b_i]``, ``user_constants`` = ``c_u``, so inner product + constant is the
model's score) and the training pattern.  A file from another model only needs
the four required arrays: without ``user_constants`` scores are the raw inner
products, without a seen pattern nothing is excluded unless asked.

Every problem with a file is reported in one line naming the file and the array.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # scipy is imported where a sparse matrix is built: `recommend --vectors` starts without it
    import scipy.sparse as sp

from fmrec.errors import ConfigError, DataError

__all__ = ["VectorSet", "export_model_vectors", "save_vectors", "load_vectors", "FORMAT_VERSION",
           "REQUIRED_ARRAYS", "OPTIONAL_ARRAYS"]

FORMAT_VERSION = 1
REQUIRED_ARRAYS = ("user_ids", "user_vectors", "item_ids", "item_vectors")
OPTIONAL_ARRAYS = ("user_constants", "seen_indptr", "seen_indices", "fmrec_vectors_format")


@dataclass(eq=False)
class VectorSet:
    """User and item vectors whose inner product (+ ``user_constants``) ranks items.

    ``seen`` is a users x items CSR pattern (rows in ``user_ids`` order, columns in
    ``item_ids`` order) of items to exclude by default, or None.  A loaded file
    builds it on first access (scipy is not imported until then);
    :meth:`seen_arrays` reads the pattern without building it.
    """

    user_ids: np.ndarray
    user_vectors: np.ndarray
    item_ids: np.ndarray
    item_vectors: np.ndarray
    user_constants: np.ndarray | None = None
    seen: sp.csr_matrix | None = None
    source: str | None = None  # file it was read from, for messages

    @property
    def n_users(self) -> int:
        return int(self.user_vectors.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    def seen_arrays(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The seen pattern's CSR ``(indptr, indices)``, or None, without building a sparse
        matrix (a loaded file's indices may be unsorted within a row, or repeated).
        Read-only: they may be the file's arrays or the matrix's own."""
        raw = self.__dict__.get("_seen")
        return None if raw is None else (raw.indptr, raw.indices)

    def __repr__(self) -> str:
        return (f"VectorSet({self.n_users} users x {self.n_items} items x {self.dim} dims, "
                f"constants={'yes' if self.user_constants is not None else 'no'}, "
                f"seen={'yes' if self.__dict__.get('_seen') is not None else 'no'})")

    @classmethod
    def from_arrays(cls, user_ids: Any, user_vectors: Any, item_ids: Any, item_vectors: Any,
                    user_constants: Any = None, seen: Any = None, *, source: str | None = None) -> "VectorSet":
        """Validate and normalise arrays (IDs int64 or str, vectors float32, constants float64)."""
        where = source or "vectors"
        arrays: dict[str, Any] = {"user_ids": user_ids, "user_vectors": user_vectors,
                                  "item_ids": item_ids, "item_vectors": item_vectors}
        if user_constants is not None:
            arrays["user_constants"] = user_constants
        if seen is not None:
            import scipy.sparse as sp

            m = sp.csr_matrix(seen)
            arrays["seen_indptr"] = m.indptr
            arrays["seen_indices"] = m.indices
        return _validate({k: np.asarray(v) for k, v in arrays.items()}, where)


@dataclass(frozen=True)
class _SeenArrays:
    """A validated seen pattern read from a file, turned into a CSR matrix on first use."""

    indptr: np.ndarray
    indices: np.ndarray
    shape: tuple[int, int]

    def to_csr(self) -> sp.csr_matrix:
        import scipy.sparse as sp

        # copies: scipy keeps the arrays it is given and sorts / sums them in place, and these
        # may be a caller's matrix's own (VectorSet.from_arrays) or shared by a copy of the set
        m = sp.csr_matrix((np.ones(self.indices.shape[0], dtype=np.float32), self.indices.copy(),
                           self.indptr.copy()), shape=self.shape)
        m.sum_duplicates()
        m.sort_indices()
        return m


def _get_seen(self: VectorSet) -> sp.csr_matrix | None:
    raw = self.__dict__.get("_seen")
    if isinstance(raw, _SeenArrays):
        raw = self.__dict__["_seen"] = raw.to_csr()
    return raw


def _set_seen(self: VectorSet, value: Any) -> None:
    if value is not None and not isinstance(value, _SeenArrays):  # COO, CSC, dense...: CSR, rows = users
        value = seen_matrix(value, (self.n_users, self.n_items), self.source or "the vectors")
    self.__dict__["_seen"] = value


def seen_matrix(seen: Any, shape: tuple[int, int], owner: str) -> sp.csr_matrix:
    """``seen`` (any sparse or dense users x items pattern) as CSR, checked against ``shape``
    (the users and items of ``owner``, named in the message)."""
    import scipy.sparse as sp

    m = sp.csr_matrix(seen)
    if m.shape != shape:
        raise ConfigError(f"seen matrix has shape {m.shape}; {owner} has {shape}")
    return m


# ``seen`` stays a dataclass field (constructor argument, repr), stored through this property
VectorSet.seen = property(_get_seen, _set_seen)  # type: ignore[assignment]


def _err(where: str, array: str | None, message: str) -> DataError:
    text = f"array {array!r}: {message}" if array else message
    return DataError(text, path=where)


def _ids(arr: np.ndarray, name: str, where: str) -> np.ndarray:
    if arr.ndim != 1:
        raise _err(where, name, f"must be 1-D, got shape {arr.shape}")
    kind = arr.dtype.kind
    if kind in "iu":
        if kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise _err(where, name, "integer IDs do not fit int64")
        out = arr.astype(np.int64, copy=False)
    elif kind == "U":
        out = arr
    elif kind == "S":
        try:
            out = np.char.decode(arr, "utf-8")
        except UnicodeDecodeError:
            raise _err(where, name, "byte-string IDs are not UTF-8") from None
    else:
        raise _err(where, name, f"IDs must be integers or unicode strings, got dtype {arr.dtype}")
    if out.size:
        uniq, counts = np.unique(out, return_counts=True)
        if uniq.size != out.size:
            raise _err(where, name, f"duplicate ID {uniq[counts > 1][0]!r}")
    return out


def _matrix(arr: np.ndarray, name: str, where: str) -> np.ndarray:
    if arr.ndim != 2:
        raise _err(where, name, f"must be 2-D (rows x dims), got shape {arr.shape}")
    if arr.dtype.kind != "f":
        raise _err(where, name, f"must hold floats, got dtype {arr.dtype}")
    if arr.shape[1] < 1:
        raise _err(where, name, "has no dimensions")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(out)):
        bad = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise _err(where, name, f"row {bad} holds a non-finite value (or one too large for float32)")
    return out


def _validate(z: dict[str, np.ndarray], where: str) -> VectorSet:
    missing = [n for n in REQUIRED_ARRAYS if n not in z]
    if missing:
        have = ", ".join(sorted(z)) or "none"
        raise _err(where, missing[0], f"missing (required: {', '.join(REQUIRED_ARRAYS)}; the file has: {have})")
    version = z.get("fmrec_vectors_format")
    if version is not None:
        if version.dtype.kind not in "iu" or version.size != 1:
            raise _err(where, "fmrec_vectors_format", f"must be one integer, got {version!r}")
        if int(version.ravel()[0]) > FORMAT_VERSION:
            raise _err(where, "fmrec_vectors_format",
                       f"format version {int(version.ravel()[0])} is newer than this fmrec supports "
                       f"({FORMAT_VERSION}); upgrade fmrec")
    user_ids = _ids(z["user_ids"], "user_ids", where)
    item_ids = _ids(z["item_ids"], "item_ids", where)
    U = _matrix(z["user_vectors"], "user_vectors", where)
    V = _matrix(z["item_vectors"], "item_vectors", where)
    if U.shape[0] != user_ids.shape[0]:
        raise _err(where, "user_vectors", f"has {U.shape[0]} rows but 'user_ids' has {user_ids.shape[0]} IDs")
    if V.shape[0] != item_ids.shape[0]:
        raise _err(where, "item_vectors", f"has {V.shape[0]} rows but 'item_ids' has {item_ids.shape[0]} IDs")
    if U.shape[1] != V.shape[1]:
        raise _err(where, "item_vectors",
                   f"has {V.shape[1]} dimensions but 'user_vectors' has {U.shape[1]}")
    constants = None
    if "user_constants" in z:
        c = z["user_constants"]
        if c.ndim != 1 or c.shape[0] != U.shape[0]:
            raise _err(where, "user_constants", f"must have shape ({U.shape[0]},), got {c.shape}")
        if c.dtype.kind not in "fiu":
            raise _err(where, "user_constants", f"must hold numbers, got dtype {c.dtype}")
        constants = c.astype(np.float64)
        if not np.all(np.isfinite(constants)):
            raise _err(where, "user_constants", "holds a non-finite value")
    seen = None
    has_ptr, has_idx = "seen_indptr" in z, "seen_indices" in z
    if has_ptr != has_idx:
        present, absent = ("seen_indptr", "seen_indices") if has_ptr else ("seen_indices", "seen_indptr")
        raise _err(where, absent, f"missing: {present!r} and {absent!r} come together")
    if has_ptr:
        ptr, idx = z["seen_indptr"], z["seen_indices"]
        if ptr.dtype.kind not in "iu" or idx.dtype.kind not in "iu":
            raise _err(where, "seen_indptr" if ptr.dtype.kind not in "iu" else "seen_indices",
                       "must hold integers")
        if ptr.ndim != 1 or ptr.shape[0] != U.shape[0] + 1:
            raise _err(where, "seen_indptr", f"must have shape ({U.shape[0] + 1},) (users + 1), got {ptr.shape}")
        if idx.ndim != 1:
            raise _err(where, "seen_indices", f"must be 1-D, got shape {idx.shape}")
        ptr = ptr.astype(np.int64)
        if ptr[0] != 0 or ptr[-1] != idx.shape[0] or np.any(np.diff(ptr) < 0):
            raise _err(where, "seen_indptr",
                       f"must rise from 0 to len(seen_indices) = {idx.shape[0]} (got {ptr[0]}..{ptr[-1]})")
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= V.shape[0]):
            raise _err(where, "seen_indices", f"holds item positions outside 0..{V.shape[0] - 1}")
        seen = _SeenArrays(ptr, idx.astype(np.int32, copy=False), (U.shape[0], V.shape[0]))
    return VectorSet(user_ids, U, item_ids, V, constants, seen, source=where)


def load_vectors(path: Any) -> VectorSet:
    """Read and validate a vectors file; every problem is a one-line DataError naming file and array."""
    p = Path(path)
    where = str(p)
    if not p.is_file():
        raise DataError("vectors file not found", path=where)
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(p, allow_pickle=False) as z:
            names = list(z.files)
            for name in names:
                try:
                    arrays[name] = z[name]
                except ValueError as exc:
                    if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                        raise _err(where, name, "is an object array, which needs pickle (refused); "
                                   "store string IDs as a unicode array, e.g. np.array(ids, dtype=str)") from None
                    raise _err(where, name, f"cannot be read ({_first_line(exc)})") from None
                except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
                    raise _err(where, name, f"is truncated or corrupt ({_first_line(exc)})") from None
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as exc:
        raise DataError(f"not a readable .npz file (truncated or corrupt: {_first_line(exc)})", path=where) from None
    return _validate(arrays, where)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def save_vectors(path: Any, vectors: VectorSet) -> Path:
    """Write ``vectors`` to ``path`` (``.npz``) atomically: temp file beside it, then rename."""
    target = Path(path)
    if target.suffix != ".npz":
        raise ConfigError(f"vectors file must end in .npz (np.savez appends it otherwise): {target}")
    arrays: dict[str, np.ndarray] = {
        "fmrec_vectors_format": np.array(FORMAT_VERSION, dtype=np.int64),
        "user_ids": _plain_ids(vectors.user_ids),
        "user_vectors": np.ascontiguousarray(vectors.user_vectors, dtype=np.float32),
        "item_ids": _plain_ids(vectors.item_ids),
        "item_vectors": np.ascontiguousarray(vectors.item_vectors, dtype=np.float32),
    }
    if vectors.user_constants is not None:
        arrays["user_constants"] = np.asarray(vectors.user_constants, dtype=np.float64)
    if vectors.seen is not None:
        import scipy.sparse as sp

        m = sp.csr_matrix(vectors.seen)
        m.sort_indices()
        arrays["seen_indptr"] = m.indptr.astype(np.int64)
        arrays["seen_indices"] = m.indices.astype(np.int32)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp.npz", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def _plain_ids(ids: np.ndarray) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "O":
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in arr.tolist()):
            return arr.astype(np.int64)
        return np.array([str(v) for v in arr.tolist()], dtype=str)
    return arr.astype(str)


def export_model_vectors(model: Any, seen: sp.spmatrix | None = None) -> VectorSet:
    """The exact MIPS vectors of every user and item a fitted model knows.

    ``user_constants`` are the FM user constants (inner product + constant = the
    model's score); ``seen`` (users x items, the model's internal order; default
    ``model.seen_`` when present) is stored as the exclusion pattern.
    """
    from fmrec.export import export_vectors

    enc = getattr(model, "encoder_", None)
    if enc is None:
        raise ConfigError("export needs a model fit on interactions (it carries the user/item ID maps)")
    uv, iv = export_vectors(model)
    if seen is None:
        seen = getattr(model, "seen_", None)
    if seen is not None:
        seen = seen_matrix(seen, (enc.n_users, enc.n_items), "the model")
    return VectorSet(_plain_ids(uv.ids), uv.vectors, _plain_ids(iv.ids), iv.vectors,
                     np.asarray(uv.constants, dtype=np.float64), seen)
