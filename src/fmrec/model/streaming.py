"""Out-of-core ("streaming") SGD training from Parquet.

``FactorizationMachine.fit_parquet(path)`` (or ``fit(ParquetSource(path))``) trains
the SGD-family solvers (regression, binary, ranking) on a Parquet file, or a
folder of Parquet files, without loading the rows:

1. **Pass 1 - IDs and targets.**  The user, item and rating columns (only those)
   are streamed with ``ParquetFile.iter_batches``.  Each batch's distinct IDs
   (``pyarrow.compute.unique``, first-appearance order) are merged into the
   user/item ``IdMap``s, normalised exactly as :class:`~fmrec.data.IdMap` does
   for the in-memory path (integers -> ``int64``; integral floats -> ``int64``,
   otherwise their ``repr``; strings stay strings; decided over the whole
   column).  Every row is validated as the in-memory reader does (missing or
   blank IDs, missing / non-numeric / non-finite ratings: one-line
   :class:`~fmrec.errors.DataError` naming ``file:row``), and the target range,
   mean and label statistics are accumulated.  Memory: the distinct IDs only.
2. **Pass 2 - the seen pattern.**  Rows are mapped to internal indices
   (``pandas.Index.get_indexer``) and collected as int32 pairs, then placed into a
   users x items CSR by a counting sort (4 bytes per row while building, 4 bytes
   per distinct pair kept).  Each user's items are sorted; repeated (user, item)
   pairs are an error naming both rows (``duplicates="error"``, the in-memory
   default) or are trained on as they are (``duplicates="keep"``, every row is a
   sample; the pattern keeps each pair once).  The pattern becomes the model's
   ``seen_`` (saved as ``seen.npz``, excluded by ``recommend``) and, for the
   ranking task, the positives used for negative rejection.
3. **Epochs.**  Regression / binary: the file is streamed again every epoch in
   batches of ``batch_rows`` rows (``iter_batches`` spans row groups, so batches
   have exactly ``batch_rows`` rows except the last).  The *row groups* are read
   in a seeded random order each epoch (when there is more than one batch), and
   the rows of each batch are shuffled with the same seeded generator; each batch
   is mapped to indices, encoded by the model's :class:`~fmrec.data.encode.Encoder`
   (one-hot user + item, plus side-feature fields when given) and handed to the
   same numba kernel as the in-memory fit (``sgd_epoch``; the kernels update the
   parameters in place, so calling them per batch is plain SGD over a
   batch-shuffled order).  Reading and encoding the next batch overlaps with the
   kernel (one batch prefetched in a thread).  Ranking: the positives pattern of
   pass 2 *is* the training set (BPR/WARP train on distinct positive pairs), so
   epochs shuffle it globally (an int32 permutation, 4 bytes per positive) and
   never re-read the file.

**Shuffle.**  Not a global shuffle for regression / binary: a seeded shuffle of
the row-group order plus a seeded shuffle within each batch.  A file sorted by
user or time therefore trains on batches that each cover a slice of it; write
such files in shuffled order (or use larger ``batch_rows``).  When the whole
file fits in one batch (``n_rows <= batch_rows``), rows are read in file order
and the run draws exactly the random numbers of the in-memory ``fit``: with the
same seed and ``n_threads=1`` the model is bit-for-bit the in-memory model (for
every task).

**Memory** (beyond the parameters ``w``, ``V`` and AdaGrad state, the same as
in-memory): the ID maps, the seen pattern (8 bytes per distinct pair: int32
column + float32 value), at most a few batches in flight (about 60 bytes per
row of ``batch_rows``), and in pass 2 a transient 8 bytes per row.  The
factors are initialised in blocks (same random stream as the in-memory fit),
so no float64 copy of ``V`` is made.

Not supported (``ConfigError``): solvers ``als`` / ``mcmc`` (they need the whole
design matrix), the duplicate policies ``first`` / ``last`` / ``mean``.  The
timestamp column is not read (it does not enter the model).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numba import njit

from fmrec.data._ids import IdMap
from fmrec.errors import ConfigError, DataError, DivergenceError
from fmrec.model._state import sgd_state
from fmrec.model._tracking import EpochTracker

log = logging.getLogger("fmrec.model")

#: Default rows per training batch.
DEFAULT_BATCH_ROWS = 1_000_000
#: Duplicate policies streaming training supports.
STREAM_DUPLICATES = ("error", "keep")
_PARQUET_EXT = (".parquet", ".pq")
_MERGE_AT = 4_000_000  # pending per-batch uniques merged into the running map past this many values


# ============================================================================ source
class ParquetSource:
    """A Parquet file, or a folder of Parquet files, read in batches.

    Columns are recognised as :func:`fmrec.data.read_interactions` recognises them
    (``user_id``/``userId``/``user``..., ``item_id``/``movieId``..., ``rating``);
    pass ``user_col`` / ``item_col`` / ``rating_col`` to name others.  ``duplicates``:
    a repeated (user, item) pair is an ``"error"`` naming both rows (default), or
    ``"keep"``: every row is a training sample.  A folder is
    read file by file in name order (``*.parquet`` / ``*.pq``, recursively, names
    starting with ``.`` or ``_`` skipped); every file must have the columns.
    Opening reads the footers only; problems raise a one-line ``DataError``
    naming the file.
    """

    _fmrec_stream_source = True  # recognised by FactorizationMachine.fit

    def __init__(self, path: Any, *, user_col: str | None = None, item_col: str | None = None,
                 rating_col: str | None = None, timestamp_col: str | None = None,
                 batch_rows: int = DEFAULT_BATCH_ROWS, duplicates: str = "error") -> None:
        from fmrec.data.readers import _resolve_roles

        if isinstance(batch_rows, bool) or not isinstance(batch_rows, (int, np.integer)) or batch_rows < 1:
            raise ConfigError(f"batch_rows must be a positive integer, got {batch_rows!r}")
        if duplicates not in STREAM_DUPLICATES:
            raise ConfigError(f"streaming training supports duplicates={STREAM_DUPLICATES}, got {duplicates!r} "
                              "(first / last / mean need every row in memory)")
        self.duplicates = duplicates
        self.path = Path(path)
        self.batch_rows = int(batch_rows)
        self.files = self._list_files()
        self.blocks: list[tuple[int, int, int]] = []  # (file index, row group, rows)
        self.file_rows: list[int] = []
        for f_idx, f in enumerate(self.files):
            pf = self._open(f)
            schema = pf.schema_arrow
            names = [str(n) for n in schema.names]
            if f_idx == 0:
                if len(set(names)) != len(names):
                    dup = next(n for n in names if names.count(n) > 1)
                    raise DataError("duplicate column name", path=f, column=dup, value=dup)
                roles = _resolve_roles(names, f, user_col, item_col, rating_col, timestamp_col, None, None)
                named = {role: (None if pos is None else names[pos]) for role, pos in roles.items()}
                self.user_col: str = named["user"]  # type: ignore[assignment]
                self.item_col: str = named["item"]  # type: ignore[assignment]
                self.rating_col: str | None = named["rating"]
                self.timestamp_col: str | None = named["timestamp"]  # checked to exist, never read
            for col in self.columns:
                if col not in names:
                    raise DataError(f"missing column {col!r} (present in {self.files[0].name}); columns are {names}",
                                    path=f, column=col)
            _check_types(schema, f, self.user_col, self.item_col, self.rating_col)
            md = pf.metadata
            rows = 0
            for g in range(md.num_row_groups):
                n = int(md.row_group(g).num_rows)
                if n:
                    self.blocks.append((f_idx, g, n))
                    rows += n
            self.file_rows.append(rows)
        self.n_rows = int(sum(self.file_rows))
        if self.n_rows == 0:
            raise DataError("no interaction rows", path=self.path)

    def __repr__(self) -> str:
        return (f"ParquetSource({str(self.path)!r}, files={len(self.files)}, rows={self.n_rows}, "
                f"row_groups={len(self.blocks)}, batch_rows={self.batch_rows})")

    @property
    def columns(self) -> list[str]:
        """The columns read: user, item and (when present) rating."""
        return [c for c in (self.user_col, self.item_col, self.rating_col) if c is not None]

    @property
    def n_batches(self) -> int:
        return -(-self.n_rows // self.batch_rows)

    # ------------------------------------------------------------------ files
    def _list_files(self) -> list[Path]:
        p = self.path
        if not p.exists():
            raise DataError("file not found", path=p)
        if p.is_dir():
            files = sorted(
                f for f in p.rglob("*")
                if f.is_file() and f.suffix.lower() in _PARQUET_EXT
                and not any(part.startswith((".", "_")) for part in f.relative_to(p).parts)
            )
            if not files:
                raise DataError("no Parquet files (*.parquet, *.pq) in the folder", path=p)
            return files
        return [p]

    @staticmethod
    def _open(f: Path) -> Any:
        import pyarrow.parquet as pq

        if f.stat().st_size == 0:
            raise DataError("empty file (0 bytes)", path=f)
        try:
            # pre_buffer=False: read one column chunk at a time (bounded memory whatever the file size)
            return pq.ParquetFile(f, pre_buffer=False, memory_map=False)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise DataError(f"not a readable Parquet file: {type(exc).__name__}: {exc}", path=f) from None

    # ------------------------------------------------------------------ reading
    def scan(self) -> Iterator[tuple[Path, int, Any, Any, Any]]:
        """Pieces in file order: ``(file, first row in the file (0-based), users, items, ratings or None)``
        as pyarrow arrays of at most ``batch_rows`` rows."""
        groups: dict[int, list[int]] = {}
        for fi, g, _ in self.blocks:
            groups.setdefault(fi, []).append(g)
        for f_idx, f in enumerate(self.files):
            row = 0
            if f_idx not in groups:
                continue
            for rb in self._iter_file(f, groups[f_idx]):
                yield (f, row, *self._split(rb))
                row += rb.num_rows

    def epoch_order(self, rng: np.random.Generator) -> np.ndarray:
        """Row-group reading order for one epoch: seeded random when there is more than
        one batch, file order otherwise (then the run matches the in-memory fit)."""
        if len(self.blocks) > 1 and self.n_rows > self.batch_rows:
            return rng.permutation(len(self.blocks))
        return np.arange(len(self.blocks))

    def batches(self, order: np.ndarray) -> Iterator[tuple[Any, Any, Any]]:
        """``(users, items, ratings or None)`` batches of exactly ``batch_rows`` rows (the
        last one shorter), reading the row groups in ``order``."""
        import pyarrow as pa

        pending: list[Any] = []
        n_pending = 0
        runs: list[tuple[int, list[int]]] = []
        for b in np.asarray(order).tolist():
            f_idx, g, _ = self.blocks[b]
            if runs and runs[-1][0] == f_idx:
                runs[-1][1].append(g)
            else:
                runs.append((f_idx, [g]))
        for f_idx, groups in runs:
            for rb in self._iter_file(self.files[f_idx], groups):
                if not pending and rb.num_rows == self.batch_rows:
                    yield self._split(rb)  # the common case: pyarrow already cut an exact batch
                    continue
                pending.append(rb)
                n_pending += rb.num_rows
                while n_pending >= self.batch_rows:
                    table = pa.Table.from_batches(pending)
                    yield self._split(table.slice(0, self.batch_rows))
                    rest = table.slice(self.batch_rows)
                    pending = rest.to_batches() if rest.num_rows else []
                    n_pending = rest.num_rows
        if n_pending:
            yield self._split(pa.Table.from_batches(pending))

    def _iter_file(self, f: Path, groups: list[int]) -> Iterator[Any]:
        pf = self._open(f)
        it = pf.iter_batches(batch_size=self.batch_rows, row_groups=groups, columns=self.columns)
        while True:
            try:
                rb = next(it)
            except StopIteration:
                return
            except Exception as exc:  # a corrupt page or a file changed under us
                raise DataError(f"not a readable Parquet file: {type(exc).__name__}: {exc}", path=f) from None
            yield rb

    def _split(self, rb: Any) -> tuple[Any, Any, Any]:
        def col(name: str) -> Any:
            c = rb.column(name)
            return c.combine_chunks() if hasattr(c, "combine_chunks") else c

        return col(self.user_col), col(self.item_col), None if self.rating_col is None else col(self.rating_col)


def _check_types(schema: Any, f: Path, user_col: str, item_col: str, rating_col: str | None) -> None:
    import pyarrow as pa

    def base(t: Any) -> Any:
        return t.value_type if pa.types.is_dictionary(t) else t

    def is_text(t: Any) -> bool:
        return pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view",
                                                                                 lambda _: False)(t)

    for col in (user_col, item_col):
        t = base(schema.field(col).type)
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or is_text(t)):
            raise DataError(f"ID column type {t} is not supported (integers or strings)", path=f, column=col)
    if rating_col is not None:
        t = base(schema.field(rating_col).type)
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                or pa.types.is_decimal(t) or is_text(t) or pa.types.is_null(t)):
            raise DataError(f"rating column type {t} is not numeric", path=f, column=rating_col)


# ============================================================================ column helpers
def _decoded(arr: Any) -> Any:
    import pyarrow as pa

    if pa.types.is_dictionary(arr.type):
        return arr.dictionary_decode()
    return arr


def _is_text(arr: Any) -> bool:
    import pyarrow as pa

    t = arr.type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view",
                                                                             lambda _: False)(t)


def _values(arr: Any) -> np.ndarray:
    """An ID column as numpy in its own type (object array of str for text)."""
    import pyarrow as pa

    if _is_text(arr) and getattr(pa.types, "is_string_view", lambda _: False)(arr.type):
        arr = arr.cast(pa.large_string())
    return arr.to_numpy(zero_copy_only=False)


def _check_ids(arr: Any, f: Path, first_row: int, col: str) -> None:
    """Missing (null / NaN) and blank IDs: the in-memory reader's errors, same lines."""
    import pyarrow as pa
    import pyarrow.compute as pc

    bad = None
    if arr.null_count:
        bad = arr.is_null()
    elif pa.types.is_floating(arr.type):
        nan = pc.is_nan(arr)
        if pc.any(nan).as_py():
            bad = nan
    if bad is not None:
        pos = int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])
        raise DataError("missing ID", path=f, line=first_row + pos + 1, column=col, value="", has_value=True)
    if _is_text(arr):
        blank = pc.equal(pc.utf8_trim_whitespace(arr), "")
        if pc.any(blank).as_py():
            pos = int(np.flatnonzero(blank.to_numpy(zero_copy_only=False))[0])
            raise DataError("empty ID", path=f, line=first_row + pos + 1, column=col, value=arr[pos].as_py())


def _ratings(arr: Any, f: Path, first_row: int, col: str, *, validated: bool = False) -> np.ndarray:
    """A rating column as float32, validated like ``Interactions.from_frame`` (same messages).
    ``validated``: an epoch's batch, checked in pass 1 (a bad value now means the file changed)."""
    import pyarrow as pa

    t = arr.type
    if arr.null_count == 0 and (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        num = arr.to_numpy(zero_copy_only=False).astype(np.float64)
        raw = None
    else:
        raw = _decoded(arr).to_pandas()
        num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(num)
    if bad.any() and validated:
        raise DataError("the file changed while training (a rating that was valid in the first pass)", path=f)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        val = (raw.iloc[pos] if raw is not None else num[pos])
        what = "missing rating" if (val is None or (not isinstance(val, str) and pd.isna(val))) \
            else "rating is not a finite number"
        raise DataError(what, path=f, line=first_row + pos + 1, column=col, value=val, has_value=True)
    return num.astype(np.float32)


def _lookup(id_map: IdMap, arr: Any) -> np.ndarray:
    """Internal indices of a batch's IDs (``-1`` when unknown), normalised the way the
    map's IDs were (over the whole column, as the in-memory path does)."""
    import pyarrow as pa

    arr = _decoded(arr)
    vals = _values(arr)
    if pa.types.is_floating(arr.type) and not id_map.is_integer:
        vals = np.array([repr(float(v)) for v in vals.tolist()], dtype=str)
    elif pa.types.is_floating(arr.type):
        vals = vals.astype(np.int64)
    return id_map.to_index(vals)


class _Uniques:
    """Distinct values of a column over many batches, in order of first appearance."""

    def __init__(self) -> None:
        self.acc: np.ndarray | None = None
        self.pending: list[np.ndarray] = []
        self.n_pending = 0

    def add(self, values: np.ndarray) -> None:
        self.pending.append(values)
        self.n_pending += len(values)
        if self.n_pending > max(_MERGE_AT, 0 if self.acc is None else len(self.acc)):
            self._merge()

    def _merge(self) -> None:
        parts = ([self.acc] if self.acc is not None else []) + self.pending
        if parts:
            self.acc = pd.unique(np.concatenate(parts) if len(parts) > 1 else parts[0])
        self.pending, self.n_pending = [], 0

    def id_map(self) -> IdMap:
        self._merge()
        assert self.acc is not None
        return IdMap.from_values(self.acc)  # normalised (and re-deduplicated) like the in-memory maps


# ============================================================================ kernels
@njit(cache=True, nogil=True)
def _fill_rows(us, its, cursor, indices):  # pragma: no cover - compiled
    """Counting-sort placement: ``indices[cursor[u]++] = i`` for each pair in order."""
    for t in range(us.shape[0]):
        u = us[t]
        indices[cursor[u]] = its[t]
        cursor[u] += 1


@njit(cache=True, nogil=True)
def _sort_rows(indptr, indices):  # pragma: no cover - compiled
    """Sort each row's columns in place; return the number of repeated entries."""
    n_dup = 0
    for u in range(indptr.shape[0] - 1):
        lo = indptr[u]
        hi = indptr[u + 1]
        if hi - lo > 1:
            indices[lo:hi] = np.sort(indices[lo:hi])
            for p in range(lo + 1, hi):
                if indices[p] == indices[p - 1]:
                    n_dup += 1
    return n_dup


@njit(cache=True, nogil=True)
def _dedupe_sorted(indptr, indices):  # pragma: no cover - compiled
    """Drop repeated columns of sorted rows in place; return the new indptr."""
    out = np.zeros(indptr.shape[0], dtype=np.int64)
    w = 0
    for u in range(indptr.shape[0] - 1):
        prev = -1
        for p in range(indptr[u], indptr[u + 1]):
            c = indices[p]
            if c != prev:
                indices[w] = c
                w += 1
                prev = c
        out[u + 1] = w
    return out


@njit(cache=True, nogil=True)
def _dup_keys(indptr, indices, n_items, out):  # pragma: no cover - compiled
    """``u * n_items + i`` of every repeated pair of sorted rows (once each); returns the count."""
    n = 0
    for u in range(indptr.shape[0] - 1):
        for p in range(indptr[u] + 1, indptr[u + 1]):
            if indices[p] == indices[p - 1] and (p == indptr[u] + 1 or indices[p - 1] != indices[p - 2]):
                out[n] = u * n_items + indices[p]
                n += 1
    return n


# ============================================================================ passes
class _Scan:
    """What pass 1 learns: ID maps and target statistics."""

    def __init__(self) -> None:
        self.n_rows = 0
        self.r_min = math.inf
        self.r_max = -math.inf
        self.r_sum = 0.0
        self.all01 = True
        self.n_ge_threshold = 0
        self.user_map: IdMap
        self.item_map: IdMap


def _scan(source: ParquetSource, model: Any) -> _Scan:
    """Pass 1: ID maps (first-appearance order), validation, target statistics."""
    import pyarrow.compute as pc

    out = _Scan()
    users, items = _Uniques(), _Uniques()
    thr = float(model.threshold)
    for f, row, u, i, r in source.scan():
        u, i = _decoded(u), _decoded(i)
        _check_ids(u, f, row, source.user_col)
        _check_ids(i, f, row, source.item_col)
        users.add(_values(pc.unique(u)))
        items.add(_values(pc.unique(i)))
        if r is not None:
            rt = _ratings(r, f, row, source.rating_col)  # type: ignore[arg-type]
            t64 = rt.astype(np.float64)
            out.r_min = min(out.r_min, float(t64.min()))
            out.r_max = max(out.r_max, float(t64.max()))
            out.r_sum += float(t64.sum())
            if out.all01 and not np.all((rt == 0) | (rt == 1)):
                out.all01 = False
            out.n_ge_threshold += int(np.count_nonzero(rt >= thr))
        out.n_rows += len(u)
    out.user_map = users.id_map()
    out.item_map = items.id_map()
    return out


def _targets(model: Any, r: np.ndarray | None, all01: bool, n: int) -> np.ndarray:
    """The in-memory ``FactorizationMachine._targets`` for one batch (float32 ratings)."""
    if r is None:
        return np.ones(n, dtype=np.float64)
    if model.task == "binary":
        if all01:
            return r.astype(np.float64)
        return (r >= model.threshold).astype(np.float64)
    return r.astype(np.float64)


def _pattern_from(parts: list[tuple[np.ndarray, np.ndarray]], counts: np.ndarray, n_items: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """users x items CSR arrays (indptr int64, indices int32, rows sorted, repeats kept)."""
    indptr = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(int(indptr[-1]), dtype=np.int32)
    cursor = indptr[:-1].copy()
    while parts:
        us, its = parts.pop(0)  # freed as we go
        _fill_rows(us, its, cursor, indices)
    return indptr, indices


def _patterns(source: ParquetSource, enc: Any, model: Any, duplicates: str
              ) -> tuple[sp.csr_matrix, sp.csr_matrix, int]:
    """Pass 2: (seen pattern, positives pattern, repeated rows).  The positives are the
    seen pattern itself unless ``positive_threshold`` filters them (ranking)."""
    n_users, n_items = enc.n_users, enc.n_items
    pthr = model.positive_threshold if model.task == "ranking" else None
    seen_parts: list[tuple[np.ndarray, np.ndarray]] = []
    pos_parts: list[tuple[np.ndarray, np.ndarray]] = []
    seen_counts = np.zeros(n_users, dtype=np.int64)
    pos_counts = np.zeros(n_users, dtype=np.int64)
    for f, row, u, i, r in source.scan():
        ui = _lookup(enc.user_map, u)
        ii = _lookup(enc.item_map, i)
        if (ui < 0).any() or (ii < 0).any():
            raise DataError("the file changed while training (an ID not seen in the first pass)", path=f)
        us, its = ui.astype(np.int32), ii.astype(np.int32)
        seen_parts.append((us, its))
        seen_counts += np.bincount(us, minlength=n_users)
        if pthr is not None:
            keep = _ratings(r, f, row, source.rating_col) >= pthr  # type: ignore[arg-type]
            pos_parts.append((us[keep], its[keep]))
            pos_counts += np.bincount(us[keep], minlength=n_users)
    indptr, indices = _pattern_from(seen_parts, seen_counts, n_items)
    n_dup = int(_sort_rows(indptr, indices))
    if n_dup and duplicates == "error":
        _raise_first_duplicate(source, enc, indptr, indices, n_dup)
    seen = _dedupe(indptr, indices, n_dup, (n_users, n_items))
    if pthr is None:
        return seen, seen, n_dup
    pindptr, pindices = _pattern_from(pos_parts, pos_counts, n_items)
    p_dup = int(_sort_rows(pindptr, pindices))
    return seen, _dedupe(pindptr, pindices, p_dup, (n_users, n_items)), n_dup


def _dedupe(indptr: np.ndarray, indices: np.ndarray, n_dup: int, shape: tuple[int, int]) -> sp.csr_matrix:
    if n_dup:
        indptr = _dedupe_sorted(indptr, indices)
        indices = indices[: int(indptr[-1])].copy()
    m = sp.csr_matrix((np.ones(indices.shape[0], dtype=np.float32), indices, indptr), shape=shape)
    m.has_sorted_indices = True
    return m


def _raise_first_duplicate(source: ParquetSource, enc: Any, indptr: np.ndarray, indices: np.ndarray,
                           n_dup: int) -> None:
    """Find the first row (file order) repeating an earlier (user, item) pair and raise the
    in-memory reader's error for it, naming both rows."""
    n_items = enc.n_items
    buf = np.empty(n_dup, dtype=np.int64)
    keys = np.sort(buf[: int(_dup_keys(indptr, indices, n_items, buf))])
    first_keys: list[np.ndarray] = []
    first_at: list[tuple[Path, np.ndarray]] = []
    for f, row, u, i, _ in source.scan():
        key = _lookup(enc.user_map, u) * n_items + _lookup(enc.item_map, i)
        pos = np.flatnonzero(np.isin(key, keys))
        if not len(pos):
            continue
        k = key[pos]
        repeat = np.array(pd.Series(k).duplicated().to_numpy(), dtype=bool)  # a writable copy
        for prev in first_keys:
            repeat |= np.isin(k, prev)
        if repeat.any():
            j = int(np.flatnonzero(repeat)[0])
            where = ""
            for (pf, lines), prev in zip(first_at, first_keys):
                hit = np.flatnonzero(prev == k[j])
                if len(hit):
                    where = f"line {int(lines[hit[0]])}" + ("" if pf == f else f" of {pf}")
                    break
            if not where:
                where = f"line {row + int(pos[np.flatnonzero(k == k[j])[0]]) + 1}"
            uid = enc.user_map.to_external([k[j] // n_items])[0]
            iid = enc.item_map.to_external([k[j] % n_items])[0]
            raise DataError(
                f"duplicate (user, item) pair, first seen on {where}; pass duplicates='keep' "
                "(CLI --duplicates keep) to train on every row",
                path=f, line=row + int(pos[j]) + 1, value=f"{uid},{iid}",
            )
        first_keys.append(k)
        first_at.append((f, row + pos + 1))
    raise DataError(f"{n_dup} repeated (user, item) pairs", path=source.path)  # pragma: no cover


# ============================================================================ prefetch
class _Prefetch:
    """Run ``make()``'s iterator in a thread, ``depth`` items ahead (I/O and encoding
    overlap the numba kernel, which releases the GIL)."""

    _DONE = object()

    def __init__(self, make: Callable[[], Iterator[Any]], depth: int = 1) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(make,), daemon=True,
                                        name="fmrec-stream-prefetch")
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, make: Callable[[], Iterator[Any]]) -> None:
        try:
            for item in make():
                if not self._put(item):
                    return
            self._put(self._DONE)
        except BaseException as exc:  # handed to the consumer
            self._put(_Failure(exc))

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._q.get()
            if item is self._DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self) -> None:
        self._stop.set()
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._thread.join()

    def __enter__(self) -> "_Prefetch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


# ============================================================================ training
def fit_stream(model: Any, source: ParquetSource, *, valid: Any = None, y_valid: Any = None,
               user_features: Any = None, item_features: Any = None) -> Any:
    """Train ``model`` (a :class:`~fmrec.model.FactorizationMachine`) on ``source``; see the
    module docstring.  Returns the model, fitted."""
    model._validate_params()
    if model.solver != "sgd":
        raise ConfigError(f"streaming training supports solver='sgd' only, got {model.solver!r} "
                          "(ALS and MCMC need the whole design matrix in memory)")
    duplicates = source.duplicates
    if model.task == "regression" and source.rating_col is None:
        raise DataError("regression needs ratings, but the data has no rating column", path=source.path)
    if model.task == "ranking" and model.positive_threshold is not None and source.rating_col is None:
        raise DataError("positive_threshold needs ratings, but the data has none", path=source.path)
    if model.implicit not in (None, "none") or model.context not in (None, "none"):
        raise ConfigError("implicit and context fields are not supported when streaming from Parquet (they need every "
                          "user's interactions in memory); load the data with read_interactions instead")
    verbose = bool(model.verbose)
    info: dict[str, Any] = {"path": str(source.path), "files": len(source.files), "row_groups": len(source.blocks),
                            "batch_rows": source.batch_rows, "duplicates": duplicates}
    t0 = time.perf_counter()
    scan = _scan(source, model)
    info.update(n_rows=scan.n_rows, n_users=len(scan.user_map), n_items=len(scan.item_map),
                pass1_seconds=time.perf_counter() - t0)
    if verbose:
        log.info("pass 1 (IDs, targets): %d rows, %d users, %d items in %.1fs",
                 scan.n_rows, len(scan.user_map), len(scan.item_map), info["pass1_seconds"])
    enc = model._make_encoder(SimpleNamespace(user_map=scan.user_map, item_map=scan.item_map),
                              user_features, item_features)
    model.encoder_ = enc
    t1 = time.perf_counter()
    seen, pos, n_dup = _patterns(source, enc, model, duplicates)
    info.update(seen_pairs=int(seen.nnz), repeated_rows=n_dup, pass2_seconds=time.perf_counter() - t1)
    if verbose:
        log.info("pass 2 (seen pattern): %d distinct pairs%s in %.1fs", seen.nnz,
                 f", {n_dup} repeated rows kept" if n_dup else "", info["pass2_seconds"])
    if model.task == "ranking":
        _train_ranking(model, source, scan, pos, valid, info)
        model.train_pattern_ = pos
    else:
        _train_sgd(model, source, scan, valid, y_valid, info, seen)
    model.seen_ = seen
    info["seconds"] = time.perf_counter() - t0
    model.stream_info_ = info
    return model


def _progress(model: Any, epoch: int, b: int, n_batches: int, rows: int, n_rows: int, start: float) -> None:
    # a line each time another tenth of the epoch's batches is done (at most 9, none for short epochs)
    if model.verbose and n_batches >= 10 and (10 * (b + 1)) // n_batches > (10 * b) // n_batches \
            and b + 1 < n_batches:
        rate = rows / max(time.perf_counter() - start, 1e-9)
        log.info("epoch %d: %d/%d rows (%.2f M rows/s)", epoch, rows, n_rows, rate / 1e6)


def _diverged(model: Any, epoch: int, loss: float, lr_v: float) -> DivergenceError:
    return DivergenceError(
        f"training diverged at epoch {epoch} (loss={loss}); lower the learning rate "
        f"(learning_rate={model.learning_rate}, factors {lr_v}) or raise the L2 penalties"
    )


def _train_sgd(model: Any, source: ParquetSource, scan: _Scan, valid: Any, y_valid: Any,
               info: dict[str, Any], seen: sp.csr_matrix) -> None:
    """Regression / binary: the in-memory epoch loop, one kernel call per streamed batch."""
    from fmrec._threads import thread_limits
    from fmrec.model import _kernels as K

    enc = model.encoder_
    n_features = enc.n_features
    Mv, tv = model._validation_matrix(valid, y_valid, n_features)
    rng = np.random.default_rng(model.random_state)
    n = scan.n_rows
    if model.task == "binary":
        if source.rating_col is None:
            t_min = t_max = t_mean = 1.0
        elif scan.all01:
            t_min, t_max, t_mean = scan.r_min, scan.r_max, scan.r_sum / n
        else:
            t_min = 0.0 if scan.n_ge_threshold < n else 1.0
            t_max = 1.0 if scan.n_ge_threshold > 0 else 0.0
            t_mean = scan.n_ge_threshold / n
    else:
        t_min, t_max, t_mean = scan.r_min, scan.r_max, scan.r_sum / n
    model.y_range_ = (float(t_min), float(t_max))
    model.n_features_in_ = n_features
    model.link_ = "logit"
    w0, w, V, g_w0, g_w, g_V, (lr_b, lr_w, lr_v), task, opt, n_threads = sgd_state(model, n_features, rng, t_mean)
    l2_b, (l2_w, l2_v) = float(model.l2_bias), model._l2_columns(n_features)
    all01 = scan.all01
    strata = None
    if n_threads > 1:  # the reproducible parallel schedule, batch by batch (fmrec.model._strata)
        from fmrec.model._strata import Strata, id_columns

        # blocks balanced by distinct (user, item) pairs, from the pass-2 pattern
        strata = Strata(n_threads, n_features, id_columns(enc), np.diff(seen.indptr),
                        np.bincount(seen.indices, minlength=seen.shape[1]))
        w, V, g_w, g_V = strata.attach(w, V, g_w, g_V)
        l2_w, l2_v = strata.penalties(l2_w, l2_v)

    def encoded(order: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
        for u, i, r in source.batches(order):
            ui, ii = _lookup(enc.user_map, u), _lookup(enc.item_map, i)
            if (ui < 0).any() or (ii < 0).any():
                raise DataError("the file changed while training (an ID not seen in the first pass)",
                                path=source.path)
            M = enc.transform_indices(ui, ii)
            rt = None if r is None else _ratings(r, source.path, 0, source.rating_col,  # type: ignore[arg-type]
                                                 validated=True)
            indptr, indices, data = model._csr_arrays(M)
            if strata is not None:
                indices = strata.remap(M, strata.thread_of(ui, len(ui)))
            yield indptr, indices, data, np.ascontiguousarray(_targets(model, rt, all01, len(ui))), ui, ii

    tracker = EpochTracker(model, model._n_epochs(), minimize=True)
    n_batches = source.n_batches
    epoch_seconds: list[float] = []
    with thread_limits(n_threads, blas_threads=1):
        for epoch in range(1, model._n_epochs() + 1):
            start = time.perf_counter()
            order = source.epoch_order(rng)
            total = 0.0
            rows = 0
            with _Prefetch(lambda: encoded(order)) as batches:
                for b, (indptr, indices, data, y, bu, bi) in enumerate(batches):
                    perm = rng.permutation(y.shape[0]).astype(np.int64)
                    if strata is None:
                        part = K.sgd_epoch(indptr, indices, data, y, perm, task, opt, w0, w, V, g_w0, g_w, g_V,
                                           lr_b, lr_w, lr_v, l2_b, l2_w, l2_v, 1)
                    else:
                        part = strata.sgd_epoch(indptr, indices, data, y, perm, bu, bi, task, opt, w0, g_w0,
                                                (lr_b, lr_w, lr_v), (l2_b, l2_w, l2_v))
                    total += part
                    rows += y.shape[0]
                    if not math.isfinite(part):
                        raise _diverged(model, epoch, total / rows, lr_v)
                    _progress(model, epoch, b, n_batches, rows, n, start)
            loss = total / rows
            if not math.isfinite(loss) or not (np.isfinite(w0[0]) and np.isfinite(w).all() and np.isfinite(V).all()):
                raise _diverged(model, epoch, loss, lr_v)
            entry: dict[str, float] = {
                "epoch": epoch,
                "train_loss": (math.sqrt(2 * loss) if task == K.TASK_REGRESSION else loss),
                "seconds": time.perf_counter() - start,
            }
            epoch_seconds.append(entry["seconds"])
            metric = None
            if Mv is not None:
                model.w0_, model.w_, model.V_ = float(w0[0]), w, V
                entry.update(model._valid_metrics(Mv, tv))
                metric = entry["valid_rmse"] if task == K.TASK_REGRESSION else entry["valid_log_loss"]
            if tracker.record(entry, metric, lambda: (float(w0[0]), w.copy(), V.copy())):
                break
    info["epoch_seconds"] = epoch_seconds
    tracker.finish(model._set_params, (float(w0[0]), w.copy(), V.copy()))


def _train_ranking(model: Any, source: ParquetSource, scan: _Scan, pos: sp.csr_matrix, valid: Any,
                   info: dict[str, Any]) -> None:
    """BPR / WARP over the distinct positive pairs (the pattern of pass 2), shuffled
    globally each epoch and fed to ``pairwise_epoch`` in chunks of ``batch_rows``."""
    from fmrec._threads import thread_limits
    from fmrec.model import _kernels as K

    enc = model.encoder_
    if pos.nnz == 0:
        raise DataError("no positive rows (check positive_threshold)", path=source.path)
    U = enc.user_rows(np.arange(enc.n_users))
    It = enc.item_rows(np.arange(enc.n_items))
    up, ui, ud = model._csr_arrays(U)
    ip, ii, idata = model._csr_arrays(It)
    pos_indptr = np.ascontiguousarray(pos.indptr, dtype=np.int64)
    pos_indices = np.ascontiguousarray(pos.indices, dtype=np.int32)
    n_features = enc.n_features
    rng = np.random.default_rng(model.random_state)
    _, w, V, _, g_w, g_V, (_, lr_w, lr_v), loss_kind, opt, n_threads = sgd_state(model, n_features, rng)
    l2_w, l2_v = model._l2_columns(n_features)
    strata = None
    if n_threads > 1:  # the reproducible parallel schedule, chunk by chunk (fmrec.model._strata)
        from fmrec.model._strata import Strata, id_columns, pairwise_arrays

        strata = Strata(n_threads, n_features, id_columns(enc, ("user",)), np.diff(pos.indptr),
                        np.bincount(pos.indices, minlength=pos.shape[1]))
        pa = pairwise_arrays(strata, U, It)
        w, V, g_w, g_V = strata.attach(w, V, g_w, g_V)
        l2_w, l2_v = strata.penalties(l2_w, l2_v)
    model.w0_ = 0.0
    model.y_range_ = (0.0, 1.0)
    model.n_features_in_ = n_features
    nnz = int(pos.nnz)
    chunk = source.batch_rows
    n_chunks = -(-nnz // chunk)
    tracker = EpochTracker(model, model._n_epochs(), minimize=False)
    epoch_seconds: list[float] = []
    with thread_limits(n_threads, blas_threads=1):
        for epoch in range(1, model._n_epochs() + 1):
            start = time.perf_counter()
            # the permutation rng.permutation(nnz) would give, as int32 (half the memory)
            perm = np.arange(nnz, dtype=np.int32 if nnz < 2**31 else np.int64)
            rng.shuffle(perm)
            seeds = rng.integers(0, 2**31 - 1, size=n_threads).astype(np.int64)
            total = 0.0
            for c in range(n_chunks):
                e = perm[c * chunk:(c + 1) * chunk]
                pos_u = np.searchsorted(pos_indptr, e, side="right").astype(np.int64) - 1
                pos_i = pos_indices[e].astype(np.int64)
                order = np.arange(e.shape[0], dtype=np.int64)
                if strata is None:
                    total += K.pairwise_epoch(
                        up, ui, ud, ip, ii, idata, pos_u, pos_i, pos_indptr, pos_indices, order, seeds + c,
                        loss_kind, int(model.max_sampled), opt, w, V, g_w, g_V, lr_w, lr_v, l2_w, l2_v,
                    )
                    continue
                total += strata.pairwise_epoch(
                    up, ud, pa, pos_u, pos_i, pos_indptr, pos_indices, order,
                    lambda s_, c=c: seeds + c * strata.n_rounds + s_,
                    loss_kind, int(model.max_sampled), opt, (lr_w, lr_v), (l2_w, l2_v), enc.n_items,
                )
                if not math.isfinite(total):
                    raise _diverged(model, epoch, total, lr_v)
                _progress(model, epoch, c, n_chunks, min(nnz, (c + 1) * chunk), nnz, start)
            del perm
            loss = total / nnz
            if not math.isfinite(loss) or not (np.isfinite(w).all() and np.isfinite(V).all()):
                raise _diverged(model, epoch, loss, lr_v)
            entry: dict[str, float] = {"epoch": epoch, "train_loss": loss, "seconds": time.perf_counter() - start}
            epoch_seconds.append(entry["seconds"])
            metric = None
            if valid is not None:
                model.w_, model.V_ = w, V
                entry.update(model._ranking_valid(valid, pos))
                metric = entry["valid_ndcg@10"]
            if tracker.record(entry, metric, lambda: (0.0, w.copy(), V.copy())):
                break
    info["epoch_seconds"] = epoch_seconds
    tracker.finish(model._set_params, (0.0, w.copy(), V.copy()))
