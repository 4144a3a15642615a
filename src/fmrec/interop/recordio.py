"""RecordIO-protobuf (the hosted trainers' ``application/x-recordio-protobuf``) without the SDK.

Framing (dmlc RecordIO, ``shared/docs/FORMATS.md`` section 3)::

    uint32 magic 0xCED7230A
    uint32 lrecord = (cflag << 29) | length     cflag 0 whole, 1 first, 2 middle, 3 last part
    data (length bytes), zero-padded to a multiple of 4

A record split into parts (cflag 1, 2..., 3) is joined with the magic number
between the parts, as dmlc's reader does (its writer splits where the payload
holds the magic).  The payload is the protobuf message ``aialgs.data.Record``;
features and label live under the map key ``"values"`` as a ``Float32Tensor``,
``Float64Tensor`` or ``Int32Tensor`` (``values``, ``keys``, ``shape``).  A row
with ``keys`` is sparse (``shape = [n_columns]``), one without is dense.

Protobuf is parsed and written by hand (no ``protobuf`` package).  The writer
reproduces the SageMaker Python SDK v2 (``write_spmatrix_to_sparse_tensor`` and
``write_numpy_to_dense_tensor``) byte for byte: same field order, packed
repeated fields, no multi-part splitting, zero padding.  dtypes map as the SDK
maps them: float32 -> Float32Tensor, float64 -> Float64Tensor, integers ->
Int32Tensor (the SDK accepts only int64 there; fmrec also takes narrower
integers, and rejects values outside int32).

Public API: :func:`read_recordio` (matrix + labels), :func:`iter_records`
(parsed :class:`Record` objects), :func:`write_recordio`,
:func:`read_recordio_pairs` / :func:`read_recordio_interactions` (FM training
rows of one user column and one item column).
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np
import scipy.sparse as sp

from fmrec.errors import ConfigError, DataError

__all__ = [
    "MAGIC",
    "MAGIC_BYTES",
    "Tensor",
    "Record",
    "iter_payloads",
    "iter_records",
    "parse_record",
    "encode_record",
    "read_recordio",
    "write_recordio",
    "read_recordio_pairs",
    "read_recordio_interactions",
    "is_recordio",
]

log = logging.getLogger("fmrec.interop")

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)  # b"\x0a\x23\xd7\xce"
_MAX_LEN = (1 << 29) - 1

# Value oneof field numbers -> tensor kind
_KIND_OF_FIELD = {2: "float32", 3: "float64", 7: "int32", 9: "bytes"}
_FIELD_OF_KIND = {"float32": 2, "float64": 3, "int32": 7}
_NP_OF_KIND = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8"), "int32": np.dtype("<i4")}


@dataclass(eq=False)
class Tensor:
    """One ``Float32Tensor`` / ``Float64Tensor`` / ``Int32Tensor`` (or ``Bytes``)."""

    kind: str  # "float32" | "float64" | "int32" | "bytes"
    values: Any  # np.ndarray, or list[bytes] for "bytes"
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    shape: tuple[int, ...] = ()
    content_type: str | None = None

    @property
    def is_sparse(self) -> bool:
        return len(self.keys) > 0


@dataclass(eq=False)
class Record:
    """One ``aialgs.data.Record``."""

    features: dict[str, Tensor]
    label: dict[str, Tensor]
    uid: str | None = None
    metadata: str | None = None
    configuration: str | None = None


class _ProtoError(Exception):
    pass


# ------------------------------------------------------------------ protobuf decoding
def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _ProtoError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _ProtoError("varint longer than 10 bytes")


def _fields(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(field_number, wire_type, a, b)``: wire type 0 -> (value, 0); 1/5 -> (offset, 0);
    2 -> (start, stop) of the bytes."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        fno, wt = key >> 3, key & 7
        if fno == 0:
            raise _ProtoError("field number 0")
        if wt == 0:
            v, pos = _varint(buf, pos, end)
            yield fno, 0, v, 0
        elif wt == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _ProtoError(f"field {fno}: length {n} runs past the end of its message")
            yield fno, 2, pos, pos + n
            pos += n
        elif wt == 5:
            if pos + 4 > end:
                raise _ProtoError(f"field {fno}: truncated fixed32")
            yield fno, 5, pos, 0
            pos += 4
        elif wt == 1:
            if pos + 8 > end:
                raise _ProtoError(f"field {fno}: truncated fixed64")
            yield fno, 1, pos, 0
            pos += 8
        else:
            raise _ProtoError(f"field {fno}: unsupported wire type {wt}")
    if pos != end:
        raise _ProtoError("message runs past its end")


def _varints(buf: bytes, start: int, stop: int) -> list[int]:
    out = []
    pos = start
    while pos < stop:
        v, pos = _varint(buf, pos, stop)
        out.append(v)
    return out


def _int32(v: int) -> int:
    v &= 0xFFFFFFFFFFFFFFFF
    if v >= 1 << 63:
        v -= 1 << 64
    if not -(1 << 31) <= v < (1 << 31):
        raise _ProtoError(f"int32 value {v} out of range")
    return v


def _parse_tensor(buf: bytes, start: int, stop: int, kind: str) -> Tensor:
    dt = _NP_OF_KIND[kind]
    chunks: list[np.ndarray] = []
    keys: list[int] = []
    shape: list[int] = []
    for fno, wt, a, b in _fields(buf, start, stop):
        if fno == 1:
            if wt == 2:
                if kind == "int32":
                    chunks.append(np.array([_int32(v) for v in _varints(buf, a, b)], dtype=np.int32))
                else:
                    if (b - a) % dt.itemsize:
                        raise _ProtoError(f"packed {kind} values of {b - a} bytes")
                    chunks.append(np.frombuffer(buf, dtype=dt, count=(b - a) // dt.itemsize, offset=a))
            elif wt == 5 and kind == "float32":
                chunks.append(np.frombuffer(buf, dtype=dt, count=1, offset=a))
            elif wt == 1 and kind == "float64":
                chunks.append(np.frombuffer(buf, dtype=dt, count=1, offset=a))
            elif wt == 0 and kind == "int32":
                chunks.append(np.array([_int32(a)], dtype=np.int32))
            else:
                raise _ProtoError(f"{kind} tensor values with wire type {wt}")
        elif fno in (2, 3):
            target = keys if fno == 2 else shape
            if wt == 2:
                target.extend(_varints(buf, a, b))
            elif wt == 0:
                target.append(a)
            else:
                raise _ProtoError(f"tensor {'keys' if fno == 2 else 'shape'} with wire type {wt}")
        # unknown fields are skipped, as protobuf does
    if not chunks:
        values = np.zeros(0, dtype=dt)
    elif len(chunks) == 1:
        values = chunks[0]
    else:
        values = np.concatenate(chunks)
    return Tensor(kind, values.astype(dt.newbyteorder("="), copy=False),
                  np.array(keys, dtype=np.uint64), tuple(shape))


def _parse_bytes(buf: bytes, start: int, stop: int) -> Tensor:
    vals: list[bytes] = []
    ctype = None
    for fno, wt, a, b in _fields(buf, start, stop):
        if fno == 1 and wt == 2:
            vals.append(bytes(buf[a:b]))
        elif fno == 2 and wt == 2:
            ctype = bytes(buf[a:b]).decode("utf-8", "replace")
    return Tensor("bytes", vals, content_type=ctype)


def _parse_value(buf: bytes, start: int, stop: int) -> Tensor | None:
    out = None
    for fno, wt, a, b in _fields(buf, start, stop):
        kind = _KIND_OF_FIELD.get(fno)
        if kind is None:
            continue
        if wt != 2:
            raise _ProtoError(f"Value field {fno} with wire type {wt}")
        out = _parse_bytes(buf, a, b) if kind == "bytes" else _parse_tensor(buf, a, b, kind)
    return out


def _parse_map_entry(buf: bytes, start: int, stop: int) -> tuple[str, Tensor | None]:
    key = ""
    value = None
    for fno, wt, a, b in _fields(buf, start, stop):
        if fno == 1 and wt == 2:
            try:
                key = bytes(buf[a:b]).decode("utf-8")
            except UnicodeDecodeError:
                raise _ProtoError("map key is not UTF-8") from None
        elif fno == 2 and wt == 2:
            value = _parse_value(buf, a, b)
    return key, value


def parse_record(payload: bytes) -> Record:
    """Decode one ``aialgs.data.Record`` payload.  Raises ``ValueError`` on malformed bytes."""
    features: dict[str, Tensor] = {}
    label: dict[str, Tensor] = {}
    strings: dict[int, str] = {}
    try:
        for fno, wt, a, b in _fields(payload, 0, len(payload)):
            if fno in (1, 2) and wt == 2:
                k, v = _parse_map_entry(payload, a, b)
                if v is not None:
                    (features if fno == 1 else label)[k] = v
            elif fno in (3, 4, 5) and wt == 2:
                strings[fno] = bytes(payload[a:b]).decode("utf-8", "replace")
    except _ProtoError as exc:
        raise ValueError(f"malformed protobuf Record: {exc}") from None
    return Record(features, label, strings.get(3), strings.get(4), strings.get(5))


# ------------------------------------------------------------------- framing (read)
def _load(source: Any) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<recordio bytes>"
    path = Path(source)
    if not path.exists():
        raise DataError("file not found", path=path)
    if path.is_dir():
        raise DataError("is a folder, not a RecordIO file", path=path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror or exc}", path=path) from None
    return data, str(path)


def iter_payloads(source: Any) -> Iterator[tuple[int, int, bytes]]:
    """Yield ``(record_number, byte_offset, payload)`` for every (joined) record.

    ``source`` is a path or the file's bytes.  Errors are one-line
    :class:`~fmrec.errors.DataError`\\ s naming the record and byte offset.
    """
    data, name = _load(source)
    yield from _iter_payloads(data, name)


def _iter_payloads(data: bytes, name: str) -> Iterator[tuple[int, int, bytes]]:
    n = len(data)
    pos = 0
    rec = 0
    parts: list[bytes] | None = None
    part_start = 0
    unpack = struct.unpack_from
    while pos < n:
        if pos + 8 > n:
            raise DataError(
                f"record {rec + 1} at byte {pos}: truncated header ({n - pos} of 8 bytes)", path=name
            )
        magic, lrec = unpack("<II", data, pos)
        if magic != MAGIC:
            what = "not a RecordIO file" if pos == 0 else "corrupt or misaligned record"
            raise DataError(
                f"record {rec + 1} at byte {pos}: bad RecordIO magic 0x{magic:08X} "
                f"(expected 0x{MAGIC:08X}); {what}",
                path=name,
            )
        cflag, length = lrec >> 29, lrec & _MAX_LEN
        padded = (length + 3) & ~3
        body = pos + 8
        if body + padded > n:
            raise DataError(
                f"record {rec + 1} at byte {pos}: truncated: declares {length} bytes "
                f"({padded} with padding), {n - body} left",
                path=name,
            )
        chunk = data[body : body + length]
        if cflag == 0:
            if parts is not None:
                raise DataError(f"record {rec + 1} at byte {pos}: whole record inside a multi-part record", path=name)
            rec += 1
            yield rec, pos, chunk
        elif cflag == 1:
            if parts is not None:
                raise DataError(f"record {rec + 1} at byte {pos}: multi-part record starts twice", path=name)
            parts = [chunk]
            part_start = pos
        else:  # 2 middle, 3 last
            if parts is None:
                raise DataError(
                    f"record {rec + 1} at byte {pos}: continuation part (cflag {cflag}) without a first part",
                    path=name,
                )
            parts.append(chunk)
            if cflag == 3:
                rec += 1
                yield rec, part_start, MAGIC_BYTES.join(parts)
                parts = None
        pos = body + padded
    if parts is not None:
        raise DataError(f"record {rec + 1} at byte {part_start}: truncated: multi-part record has no last part",
                        path=name)


def iter_records(source: Any) -> Iterator[Record]:
    """Parse every record of a RecordIO-protobuf file (path or bytes)."""
    data, name = _load(source)
    for rec, pos, payload in _iter_payloads(data, name):
        try:
            yield parse_record(payload)
        except ValueError as exc:
            raise DataError(f"record {rec} at byte {pos}: {exc}", path=name) from None


def is_recordio(path: Any) -> bool:
    """True when the file starts with the RecordIO magic number."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == MAGIC_BYTES
    except OSError:
        return False


# --------------------------------------------------------------------- matrix reader
def _row_width(t: Tensor) -> int | None:
    if t.shape:
        w = 1
        for s in t.shape:
            w *= int(s)
        return w
    return None if t.is_sparse else len(t.values)


_ENTRY_HEAD = b"\x0a\x06values\x12"
_KIND_OF_TAG = {0x12: "float32", 0x1A: "float64", 0x3A: "int32"}


def _fast_entry(buf: bytes, p: int, e: int) -> tuple[str, int, int, list[int], list[int]] | None:
    """A map entry ``"values" -> packed tensor`` in the layout the SDK writes:
    ``(kind, values_start, values_stop, keys, shape)``, or None for anything else
    (the caller then uses the general parser)."""
    if buf[p : p + 9] != _ENTRY_HEAD:
        return None
    q = p + 9
    m, q = _varint(buf, q, e)
    if q + m != e or q >= e:
        return None
    kind = _KIND_OF_TAG.get(buf[q])
    if kind is None:
        return None
    q += 1
    m = buf[q] if q < e else 0x80
    q += 1
    if m >= 0x80:
        m, q = _varint(buf, q - 1, e)
    if q + m != e:
        return None
    vs = ve = q
    keys: list[int] = []
    shape: list[int] = []
    while q < e:
        t = buf[q]
        m = buf[q + 1] if q + 1 < e else 0x80
        q += 2
        if m >= 0x80:
            m, q = _varint(buf, q - 1, e)
        stop = q + m
        if stop > e:
            return None
        if t == 0x0A:
            vs, ve = q, stop
        elif t == 0x12 or t == 0x1A:
            out = keys if t == 0x12 else shape
            while q < stop:
                b = buf[q]
                if b < 0x80:
                    out.append(b)
                    q += 1
                else:
                    v, q = _varint(buf, q, stop)
                    out.append(v)
        else:
            return None
        q = stop
    if kind != "int32" and (ve - vs) % _NP_OF_KIND[kind].itemsize:
        return None
    return kind, vs, ve, keys, shape


def _fast_record(buf: bytes) -> tuple[Any, Any] | None:
    """(features entry, label entry or None) for SDK-layout payloads, else None."""
    p, end = 0, len(buf)
    feat = lab = None
    while p < end:
        tag = buf[p]
        if tag != 0x0A and tag != 0x12:
            return None
        m = buf[p + 1] if p + 1 < end else 0x80
        p += 2
        if m >= 0x80:
            try:
                m, p = _varint(buf, p - 1, end)
            except _ProtoError:
                return None
        e = p + m
        if e > end:
            return None
        try:
            entry = _fast_entry(buf, p, e)
        except (_ProtoError, IndexError):
            return None
        if entry is None:
            return None
        if tag == 0x0A:
            if feat is not None:
                return None
            feat = entry
        else:
            if lab is not None:
                return None
            lab = entry
        p = e
    if feat is None:
        return None
    return feat, lab


def _tensor_from_fast(buf: bytes, entry: tuple[str, int, int, list[int], list[int]]) -> Tensor:
    kind, vs, ve, keys, shape = entry
    if kind == "int32":
        values = np.array([_int32(v) for v in _varints(buf, vs, ve)], dtype=np.int32)
    else:
        dt = _NP_OF_KIND[kind]
        values = np.frombuffer(buf, dtype=dt, count=(ve - vs) // dt.itemsize, offset=vs)
    return Tensor(kind, values, np.array(keys, dtype=np.uint64), tuple(shape))


def read_recordio(source: Any, *, dense: bool = False) -> tuple[Any, np.ndarray | None]:
    """Read a RecordIO-protobuf file into ``(X, labels)``.

    ``X`` is a CSR matrix (``dense=True``: a numpy array) with one row per record
    and the tensor dtype (float32, float64 or int32; mixed files promote).  Dense
    rows keep every value (explicit zeros included).  Sparse rows take their width
    from ``shape``; rows without one take the widest key in the file.  ``labels`` is
    ``None`` when no record has a label, a 1-D array when every record has one
    value, a 2-D array when every record has the same number of values.
    """
    data, name = _load(source)
    return _read_matrix(data, name, dense)


def _read_matrix(data: bytes, name: str, dense: bool) -> tuple[Any, np.ndarray | None]:
    vals: list[np.ndarray] = []
    cols: list[Any] = []
    lens: list[int] = []
    labs: list[np.ndarray] = []
    widths: set[int] = set()
    kinds: set[str] = set()
    label_kinds: set[str] = set()
    max_key = -1
    n_rec = 0
    for rec, pos, payload in _iter_payloads(data, name):
        n_rec = rec

        def fail(msg: str) -> DataError:
            return DataError(f"record {rec} at byte {pos}: {msg}", path=name)

        fast = _fast_record(payload)
        if fast is not None:
            try:
                t = _tensor_from_fast(payload, fast[0])
                lt = None if fast[1] is None else _tensor_from_fast(payload, fast[1])
            except _ProtoError as exc:
                raise fail(f"malformed protobuf Record: {exc}") from None
        else:
            try:
                r = parse_record(payload)
            except ValueError as exc:
                raise fail(str(exc)) from None
            t = r.features.get("values")
            if t is None:
                extra = f" (keys {sorted(r.features)})" if r.features else ""
                raise fail(f"no features under the key 'values'{extra}")
            if t.kind == "bytes":
                raise fail("features are Bytes (e.g. images); only numeric tensors are supported")
            lt = r.label.get("values")
        kinds.add(t.kind)
        nv = len(t.values)
        if t.is_sparse:
            keys = t.keys
            if len(keys) != nv:
                raise fail(f"sparse row with {nv} values but {len(keys)} keys")
            top = int(keys.max())
            if top >= 1 << 62:
                raise fail(f"column key {top} is too large")
            if top > max_key:
                max_key = top
            if t.shape:
                w = _row_width(t)
                if top >= w:
                    raise fail(f"column key {top} outside shape {list(t.shape)}")
                widths.add(w)
            cols.append(keys)
        elif nv == 0 and t.shape:
            widths.add(_row_width(t))  # a sparse row without entries (no keys, no values)
            cols.append(0)
        else:
            if t.shape and _row_width(t) != nv:
                raise fail(f"dense row of {nv} values with shape {list(t.shape)}")
            widths.add(nv)
            cols.append(nv)
        vals.append(t.values)
        lens.append(nv)
        if lt is None:
            if labs:
                raise fail("no label, but earlier records have one")
        else:
            if lt.kind == "bytes":
                raise fail("label is Bytes; only numeric labels are supported")
            if len(labs) != rec - 1:
                raise fail("has a label, but earlier records have none")
            label_kinds.add(lt.kind)
            labs.append(lt.values)
        if len(widths) > 1:
            raise fail(f"rows have different widths {sorted(widths)}")
    n_cols = widths.pop() if widths else max_key + 1
    if max_key >= n_cols:
        raise DataError(f"column key {max_key} outside the row width {n_cols}", path=name)
    dtype = np.result_type(*[_NP_OF_KIND[k] for k in kinds]) if kinds else np.dtype(np.float32)
    indptr = np.zeros(n_rec + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    values = np.concatenate(vals).astype(dtype.newbyteorder("="), copy=False) if vals else np.zeros(0, dtype)
    if cols:
        indices = np.concatenate(
            [np.arange(c, dtype=np.int64) if isinstance(c, int) else c.astype(np.int64) for c in cols]
        )
    else:
        indices = np.zeros(0, np.int64)
    idx_dtype = np.int32 if n_cols < 2**31 and indptr[-1] < 2**31 else np.int64
    X = sp.csr_matrix((values, indices.astype(idx_dtype), indptr.astype(idx_dtype)), shape=(n_rec, n_cols))
    labels = None
    if labs:
        counts = {len(x) for x in labs}
        ldt = np.result_type(*[_NP_OF_KIND[k] for k in label_kinds]).newbyteorder("=")
        if counts == {1}:
            labels = np.concatenate(labs).astype(ldt, copy=False)
        elif len(counts) == 1:
            labels = np.stack(labs).astype(ldt, copy=False)
        else:
            raise DataError(f"labels have different lengths {sorted(counts)}", path=name)
    if dense:
        return X.toarray(), labels
    return X, labels


# --------------------------------------------------------------------- writer
def _enc_varint(v: int) -> bytes:
    v &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _ld(tag: int, payload: bytes) -> bytes:
    return _enc_varint(tag) + _enc_varint(len(payload)) + payload


def _tensor_bytes(kind: str, values: np.ndarray, keys: Any = None, shape: Any = None) -> bytes:
    body = b""
    if len(values):
        if kind == "int32":
            packed = b"".join(_enc_varint(int(v)) for v in values)
        else:
            packed = np.ascontiguousarray(values, dtype=_NP_OF_KIND[kind]).tobytes()
        body += _ld(0x0A, packed)
    if keys is not None and len(keys):
        body += _ld(0x12, b"".join(_enc_varint(int(k)) for k in keys))
    if shape is not None and len(shape):
        body += _ld(0x1A, b"".join(_enc_varint(int(s)) for s in shape))
    return body


def _value_entry(kind: str, tensor: bytes) -> bytes:
    value = _ld((_FIELD_OF_KIND[kind] << 3) | 2, tensor)
    return _ld(0x0A, b"values") + _ld(0x12, value)


def encode_record(
    values: Any,
    *,
    keys: Any = None,
    shape: Any = None,
    label: Any = None,
    kind: str | None = None,
    label_kind: str | None = None,
) -> bytes:
    """The protobuf payload of one record (features ``values`` [+ ``keys``, ``shape``], optional label)."""
    v = np.asarray(values)
    kind = kind or _kind_of(v.dtype, "features")
    out = _ld(0x0A, _value_entry(kind, _tensor_bytes(kind, _checked(v, kind), keys, shape)))
    if label is not None:
        lv = np.atleast_1d(np.asarray(label))
        lk = label_kind or _kind_of(lv.dtype, "labels")
        out += _ld(0x12, _value_entry(lk, _tensor_bytes(lk, _checked(lv, lk))))
    return out


def _kind_of(dtype: np.dtype, what: str) -> str:
    dt = np.dtype(dtype)
    if dt == np.float32:
        return "float32"
    if dt == np.float64:
        return "float64"
    if dt.kind in "iub":
        return "int32"
    raise ConfigError(f"RecordIO-protobuf cannot hold {what} of dtype {dt}; use float32, float64 or integers")


def _checked(v: np.ndarray, kind: str) -> np.ndarray:
    if kind == "int32" and v.size:
        lo, hi = int(v.min()), int(v.max())
        if lo < -(2**31) or hi >= 2**31:
            raise DataError(f"integer value {lo if lo < -(2**31) else hi} does not fit an Int32Tensor")
    return v


def _frame(payload: bytes) -> bytes:
    n = len(payload)
    if n > _MAX_LEN:
        raise DataError(f"record of {n} bytes is larger than RecordIO's 2**29-1 limit")
    return struct.pack("<II", MAGIC, n) + payload + b"\0" * (((n + 3) & ~3) - n)


def _frame_split(payload: bytes) -> bytes:
    """dmlc's RecordIOWriter: split where the payload holds the magic (4-byte aligned)."""
    n = len(payload)
    out = bytearray()
    dptr = 0
    for i in range(0, n - n % 4, 4):
        if payload[i : i + 4] == MAGIC_BYTES:
            out += struct.pack("<II", MAGIC, ((1 if dptr == 0 else 2) << 29) | (i - dptr)) + payload[dptr:i]
            dptr = i + 4
    out += struct.pack("<II", MAGIC, ((3 if dptr else 0) << 29) | (n - dptr)) + payload[dptr:]
    out += b"\0" * (((n + 3) & ~3) - n)
    return bytes(out)


def write_recordio(
    target: str | os.PathLike[str] | BinaryIO,
    X: Any,
    y: Any = None,
    *,
    split_magic: bool = False,
) -> int:
    """Write rows of ``X`` (and labels ``y``) as RecordIO-protobuf records; returns the record count.

    A scipy sparse ``X`` gives sparse records (``values``, ``keys``, ``shape``), as
    the SDK's ``write_spmatrix_to_sparse_tensor``; a dense 2-D array gives dense
    records (``values`` only), as ``write_numpy_to_dense_tensor``.  The bytes equal
    the SDK's for the same arrays.  ``split_magic=True`` frames like dmlc's C++
    writer instead (a payload holding the magic number becomes a multi-part
    record); the SDK never does that.  A path target is written to a temp file
    and renamed, so a failed write leaves no partial file.
    """
    if sp.issparse(X):
        if len(X.shape) != 2:
            raise DataError("X must be a matrix")
        csr = X.tocsr()
        n_rows, n_cols = csr.shape
        kind = _kind_of(csr.dtype, "features")
    else:
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise DataError(f"X must be 2-D, got shape {arr.shape}")
        n_rows, n_cols = arr.shape
        kind = _kind_of(arr.dtype, "features")
        csr = None
        _checked(arr, kind)
    labels = None
    lkind = None
    if y is not None:
        labels = np.asarray(y)
        if labels.ndim != 1:
            raise DataError(f"labels must be a vector, got shape {labels.shape}")
        if labels.shape[0] != n_rows:
            raise DataError(f"{n_rows} rows but {labels.shape[0]} labels")
        lkind = _kind_of(labels.dtype, "labels")
        _checked(labels, lkind)
    frame = _frame_split if split_magic else _frame
    label_entries: list[bytes] | None = None
    if labels is not None:
        assert lkind is not None
        label_entries = [_ld(0x12, _value_entry(lkind, _tensor_bytes(lkind, labels[i : i + 1])))
                         for i in range(n_rows)]

    def chunks() -> Iterator[bytes]:
        if csr is not None:
            _checked(csr.data, kind)
            shape_b = _ld(0x1A, _enc_varint(n_cols))
            indptr, indices, data = csr.indptr, csr.indices, csr.data
            for r in range(n_rows):
                lo, hi = int(indptr[r]), int(indptr[r + 1])
                tensor = _tensor_bytes(kind, data[lo:hi], indices[lo:hi].astype(np.uint64)) + shape_b
                payload = _ld(0x0A, _value_entry(kind, tensor))
                if label_entries is not None:
                    payload += label_entries[r]
                yield frame(payload)
        else:
            for r in range(n_rows):
                payload = _ld(0x0A, _value_entry(kind, _tensor_bytes(kind, arr[r])))
                if label_entries is not None:
                    payload += label_entries[r]
                yield frame(payload)

    if hasattr(target, "write"):
        for c in chunks():
            target.write(c)  # type: ignore[union-attr]
        return n_rows
    path = Path(target)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            buf: list[bytes] = []
            size = 0
            for c in chunks():
                buf.append(c)
                size += len(c)
                if size >= 1 << 20:
                    fh.write(b"".join(buf))
                    buf, size = [], 0
            fh.write(b"".join(buf))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n_rows


# ---------------------------------------------------------- FM rows -> interactions
def read_recordio_pairs(source: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int, str]:
    """FM training rows with exactly two one-hot columns.

    Returns ``(low_col, high_col, labels, n_columns, name)``: per record the smaller
    and the larger column key (under the hosted layout: the user column and the
    item column), the labels as float64 (``None`` when the file has none), the row
    width and the file name for messages.  Any other row shape is a one-line
    :class:`~fmrec.errors.DataError` naming the record.
    """
    data, name = _load(source)
    X, y = _read_matrix(data, name, False)
    if X.shape[0] == 0:
        raise DataError("no records", path=name)
    nnz = np.diff(X.indptr)
    bad = np.flatnonzero(nnz != 2)
    if bad.size:
        r = int(bad[0])
        raise DataError(
            f"record {r + 1}: expected a sparse FM row with exactly two columns (user and item), found {int(nnz[r])}",
            path=name,
        )
    vals = X.data.reshape(-1, 2)
    notone = np.flatnonzero(np.any(vals != 1, axis=1))
    if notone.size:
        r = int(notone[0])
        raise DataError(f"record {r + 1}: one-hot values must be 1, found {vals[r].tolist()}", path=name)
    cols = X.indices.reshape(-1, 2).astype(np.int64)
    lo, hi = cols.min(axis=1), cols.max(axis=1)
    same = np.flatnonzero(lo == hi)
    if same.size:
        r = int(same[0])
        raise DataError(f"record {r + 1}: the same column {int(lo[r])} appears twice", path=name)
    labels = None
    if y is not None:
        if y.ndim != 1:
            raise DataError(f"expected one label per record, found {y.shape[1]}", path=name)
        labels = y.astype(np.float64)
    return lo, hi, labels, int(X.shape[1]), name


def infer_n_users(lo: np.ndarray, hi: np.ndarray, name: str) -> int:
    """The user/item boundary when the file determines it: the highest user column
    and the lowest item column are adjacent.  Otherwise a DataError asking for it."""
    top_user, first_item = int(lo.max()), int(hi.min())
    if top_user + 1 == first_item:
        return first_item
    if top_user >= first_item:
        raise DataError(
            f"user and item columns overlap (a row's lower column reaches {top_user}, another's upper column "
            f"starts at {first_item}); pass the number of user columns (recordio_users=N)",
            path=name,
        )
    raise DataError(
        f"cannot tell how many user columns there are: rows' user columns end at {top_user} and item columns "
        f"start at {first_item}, so any count from {top_user + 1} to {first_item} fits; "
        "pass recordio_users=N (the number of user columns)",
        path=name,
    )


def read_recordio_interactions(
    source: Any,
    *,
    n_users: int | None = None,
    duplicates: Any = "error",
    user_map: Any = None,
    item_map: Any = None,
) -> Any:
    """FM training rows (user one-hot + item one-hot, label) as ``Interactions``.

    Hosted layout: user ``u`` is column ``u - 1`` and item ``m`` column
    ``n_users + m - 1`` (1-based MovieLens-style ids).  ``n_users`` is the number
    of user columns; when ``None`` it is taken from the file only if the file
    determines it (the highest user column and the lowest item column are
    adjacent), otherwise a :class:`~fmrec.errors.DataError` asks for it.  The label
    becomes the rating (0/1 labels stay 0/1: train with ``--task binary
    --threshold 1``).  "Lines" in error messages are 1-based record numbers.
    """
    import pandas as pd

    from fmrec.data.interactions import Interactions

    lo, hi, labels, n_cols, name = read_recordio_pairs(source)
    if n_users is None:
        n_users = infer_n_users(lo, hi, name)
    else:
        if isinstance(n_users, bool) or not isinstance(n_users, (int, np.integer)) or n_users < 1:
            raise ConfigError(f"number of user columns must be a positive integer, got {n_users!r}")
        n_users = int(n_users)
        if n_users >= n_cols:
            raise DataError(f"{n_users} user columns leave no item columns in rows of width {n_cols}", path=name)
        bad = np.flatnonzero((lo >= n_users) | (hi < n_users))
        if bad.size:
            r = int(bad[0])
            side = "item" if lo[r] >= n_users else "user"
            raise DataError(
                f"record {r + 1}: columns {int(lo[r])} and {int(hi[r])} are both {side} columns "
                f"with {n_users} user columns",
                path=name,
            )
    frame = {"user_id": lo + 1, "item_id": hi - n_users + 1}
    rating_col = None
    if labels is not None:
        frame["rating"] = labels
        rating_col = "rating"
        if np.all((labels == 0) | (labels == 1)):
            log.info("%s: labels are 0/1 and become the rating; with --task binary pass --threshold 1", name)
    return Interactions.from_frame(
        pd.DataFrame(frame), rating_col=rating_col, duplicates=duplicates, source=name, first_line=1,
        user_map=user_map, item_map=item_map,
    )
