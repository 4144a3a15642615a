"""Read MXNet NDArray-list files (``.params``) without MXNet.

Layout (``shared/docs/FORMATS.md`` section 2, little-endian)::

    uint64 0x112                       list magic
    uint64 0                           reserved
    uint64 n_arrays, then n_arrays NDArrays
    uint64 n_names, then n_names x (uint64 len, bytes)

Every NDArray version MXNet has written is read:

* **V2** (magic ``0xF993FAC9``): ``int32 stype`` (0 dense, 1 row_sparse, 2 csr),
  the storage shape when sparse, the shape, the context, ``int32 dtype``, the
  aux types and shapes when sparse, the data, the aux data.
* **V3** (``0xF993FACA``, numpy-shape semantics): the same layout, dense only;
  ``ndim == -1`` is "no array", ``ndim == 0`` a scalar (one element).
* **V1** (``0xF993FAC8``): shape (``int32 ndim`` + ``int64`` dims), context,
  dtype, data; dense only.
* **Legacy** (no magic): the first ``uint32`` is ``ndim``, followed by
  ``uint32`` dims, context, dtype, data.

Sparse arrays come back dense: ``row_sparse`` rows that are not stored are zero,
``csr`` is expanded from ``indptr``/``indices``.  Every problem raises a one-line
:class:`~fmrec.errors.ArtifactError` naming the file, the array (index and name
when known), the byte offset and what is wrong.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from fmrec.errors import ArtifactError

__all__ = ["read_ndarray_list", "load_params", "LIST_MAGIC", "DTYPES"]

LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
V3_MAGIC = 0xF993FACA

STYPE_DENSE, STYPE_ROW_SPARSE, STYPE_CSR = 0, 1, 2
_STYPE_NAMES = {0: "dense", 1: "row_sparse", 2: "csr"}
_N_AUX = {STYPE_ROW_SPARSE: 1, STYPE_CSR: 2}

#: mshadow type flags -> numpy dtypes (little-endian).  12 (bfloat16) is widened to float32.
DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("<f8"),
    2: np.dtype("<f2"),
    3: np.dtype("u1"),
    4: np.dtype("<i4"),
    5: np.dtype("i1"),
    6: np.dtype("<i8"),
    7: np.dtype("?"),
    8: np.dtype("<i2"),
    9: np.dtype("<u2"),
    10: np.dtype("<u4"),
    11: np.dtype("<u8"),
    12: np.dtype("<u2"),  # bfloat16 bits
}
_BFLOAT16 = 12
_MAX_NDIM = 32
_MAX_COUNT = 1 << 40  # far above any real list; guards against garbage counts


class _Reader:
    """Bounds-checked little-endian reads from a bytes buffer."""

    def __init__(self, buf: bytes | memoryview, name: str) -> None:
        self.buf = memoryview(buf)
        self.pos = 0
        self.name = name
        self.where = ""  # "array 3 ('arg:v')" while reading an array

    def fail(self, what: str, at: int | None = None) -> ArtifactError:
        ctx = f" {self.where}" if self.where else ""
        off = self.pos if at is None else at
        return ArtifactError(f"{self.name}: MXNet params{ctx} at byte {off}: {what}")

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail(f"truncated: {what} needs {n} bytes, {len(self.buf) - self.pos} left")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u64(self, what: str) -> int:
        return struct.unpack("<Q", self.take(8, what))[0]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def i32(self, what: str) -> int:
        return struct.unpack("<i", self.take(4, what))[0]

    def shape(self, what: str, np_semantics: bool = False) -> tuple[int, ...] | None:
        """TShape: int32 ndim, then ndim int64 dims.  None = "no array"."""
        start = self.pos
        ndim = self.i32(f"{what} ndim")
        if np_semantics and ndim == -1:
            return None
        if ndim < 0 or ndim > _MAX_NDIM:
            raise self.fail(f"bad {what}: ndim {ndim}", at=start)
        if ndim == 0:
            return () if np_semantics else None
        dims = struct.unpack(f"<{ndim}q", self.take(8 * ndim, f"{what} dims"))
        if any(d < 0 for d in dims):
            raise self.fail(f"bad {what}: negative dimension in {dims}", at=start)
        return tuple(int(d) for d in dims)

    def legacy_shape(self, ndim: int) -> tuple[int, ...] | None:
        if ndim > _MAX_NDIM:
            raise self.fail(f"bad magic or legacy ndim 0x{ndim:08X} (not an NDArray)", at=self.pos - 4)
        if ndim == 0:
            return None
        dims = struct.unpack(f"<{ndim}I", self.take(4 * ndim, "legacy shape dims"))
        return tuple(int(d) for d in dims)

    def dtype(self) -> tuple[int, np.dtype]:
        start = self.pos
        flag = self.i32("dtype")
        if flag not in DTYPES:
            raise self.fail(f"unknown dtype flag {flag} (known: {sorted(DTYPES)})", at=start)
        return flag, DTYPES[flag]

    def context(self) -> None:
        start = self.pos
        dev_type = self.i32("context dev_type")
        self.i32("context dev_id")
        if dev_type not in (1, 2, 3, 5, 6):  # cpu, gpu, cpu_pinned, cpu_shared, ...
            raise self.fail(f"bad context dev_type {dev_type}", at=start)

    def array(self, shape: tuple[int, ...], flag: int, dt: np.dtype, what: str) -> np.ndarray:
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count > _MAX_COUNT:
            raise self.fail(f"{what} shape {shape} is implausibly large")
        raw = self.take(count * dt.itemsize, f"{what} ({count} x {dt.name})")
        arr = np.frombuffer(raw, dtype=dt).copy().reshape(shape)
        if flag == _BFLOAT16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        return arr


def _read_one(r: _Reader) -> np.ndarray | None:
    magic = r.u32("NDArray magic")
    if magic == V2_MAGIC or magic == V3_MAGIC:
        np_sem = magic == V3_MAGIC
        stype = r.i32("storage type")
        if stype not in _STYPE_NAMES:
            raise r.fail(f"unknown storage type {stype} (0 dense, 1 row_sparse, 2 csr)", at=r.pos - 4)
        if np_sem and stype != STYPE_DENSE:
            raise r.fail(f"V3 (numpy-shape) NDArray with sparse storage type {stype}; V3 is dense only")
        n_aux = _N_AUX.get(stype, 0)
        sshape = r.shape("storage shape") if n_aux else None
        shape = r.shape("shape", np_semantics=np_sem)
        if shape is None:
            return None
        r.context()
        flag, dt = r.dtype()
        if not n_aux:
            return r.array(shape, flag, dt, "data")
        aux: list[tuple[int, np.dtype, tuple[int, ...]]] = []
        for a in range(n_aux):
            aflag, adt = r.dtype()
            ashape = r.shape(f"aux {a} shape")
            aux.append((aflag, adt, ashape if ashape is not None else (0,)))
        data = r.array(sshape if sshape is not None else (0,), flag, dt, "sparse data")
        aux_arrays = [r.array(s, f, d, f"aux {i} data") for i, (f, d, s) in enumerate(aux)]
        return _densify(r, stype, shape, data, aux_arrays)
    if magic == V1_MAGIC:
        shape = r.shape("shape")
    else:
        shape = r.legacy_shape(magic)
    if shape is None:
        return None
    r.context()
    flag, dt = r.dtype()
    return r.array(shape, flag, dt, "data")


def _densify(r: _Reader, stype: int, shape: tuple[int, ...], data: np.ndarray, aux: list[np.ndarray]) -> np.ndarray:
    out = np.zeros(shape, dtype=data.dtype)
    if stype == STYPE_ROW_SPARSE:
        idx = aux[0].reshape(-1).astype(np.int64)
        if len(shape) == 0:
            raise r.fail("row_sparse array without dimensions")
        if data.shape[:1] != idx.shape or data.shape[1:] != shape[1:]:
            raise r.fail(f"row_sparse data shape {data.shape} does not fit {len(idx)} row indices and shape {shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= shape[0]):
            raise r.fail(f"row_sparse row index out of range [0, {shape[0]})")
        if np.unique(idx).size != idx.size:
            raise r.fail("row_sparse row indices repeat")
        out[idx] = data
        return out
    # csr
    if len(shape) != 2:
        raise r.fail(f"csr array must be 2-D, shape is {shape}")
    indptr = aux[0].reshape(-1).astype(np.int64)
    indices = aux[1].reshape(-1).astype(np.int64)
    flat = data.reshape(-1)
    if indptr.size != shape[0] + 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != indices.size:
        raise r.fail(f"csr indptr does not fit shape {shape} and {indices.size} stored values")
    if indices.size != flat.size:
        raise r.fail(f"csr holds {flat.size} values but {indices.size} column indices")
    if indices.size and (indices.min() < 0 or indices.max() >= shape[1]):
        raise r.fail(f"csr column index out of range [0, {shape[1]})")
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    out[rows, indices] = flat
    return out


def read_ndarray_list(
    source: bytes | memoryview | str | os.PathLike[str], *, name: str | None = None
) -> dict[str, np.ndarray | None] | list[np.ndarray | None]:
    """Parse an MXNet NDArray-list file (``mx.nd.save`` / ``save_checkpoint``).

    ``source`` is a path or the file's bytes (``name`` then labels errors).
    Returns ``{name: array}`` (file order) when the file holds names, else a list.
    Sparse arrays are returned dense, in their stored dtype.  MXNet's "none"
    arrays (``ndim 0`` in V1/V2/legacy, ``-1`` in V3) come back as ``None``.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        buf = bytes(source) if isinstance(source, bytearray) else source
        label = name or "<params bytes>"
    else:
        path = Path(source)
        label = name or str(path)
        try:
            buf = path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"{label}: cannot read MXNet params ({exc.strerror or exc})") from None
    r = _Reader(buf, label)
    if len(r.buf) < 16:
        raise r.fail(f"truncated: {len(r.buf)} bytes, not an MXNet NDArray list")
    magic = r.u64("list magic")
    if magic != LIST_MAGIC:
        raise r.fail(f"bad magic 0x{magic:X} (expected 0x112): not an MXNet NDArray-list file", at=0)
    r.u64("reserved")
    n = r.u64("array count")
    if n > len(r.buf):
        raise r.fail(f"array count {n} is larger than the file", at=16)
    arrays: list[np.ndarray | None] = []
    for i in range(n):
        r.where = f"array {i}"
        arrays.append(_read_one(r))
    r.where = ""
    if r.pos == len(r.buf):
        names: list[str] = []  # some writers stop after the arrays
    else:
        n_names = r.u64("name count")
        if n_names not in (0, n):
            raise r.fail(f"{n_names} names for {n} arrays")
        names = []
        for i in range(n_names):
            r.where = f"name {i}"
            ln = r.u64("name length")
            raw = r.take(ln, "name")
            try:
                names.append(bytes(raw).decode("utf-8"))
            except UnicodeDecodeError:
                raise r.fail("name is not UTF-8") from None
        r.where = ""
        if r.pos != len(r.buf):
            raise r.fail(f"{len(r.buf) - r.pos} unexpected trailing bytes")
    if not names:
        return arrays
    if len(set(names)) != len(names):
        dup = next(x for x in names if names.count(x) > 1)
        raise ArtifactError(f"{label}: MXNet params: name {dup!r} appears twice")
    return dict(zip(names, arrays))


def load_params(source: Any, *, name: str | None = None) -> dict[str, np.ndarray | None]:
    """Like :func:`read_ndarray_list` but requires names (a checkpoint's ``arg:``/``aux:`` keys)."""
    out = read_ndarray_list(source, name=name)
    if not isinstance(out, dict):
        label = name or str(source if not isinstance(source, (bytes, bytearray, memoryview)) else "<params bytes>")
        raise ArtifactError(f"{label}: MXNet params hold {len(out)} unnamed arrays; expected named parameters")
    return out
