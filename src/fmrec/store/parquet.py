"""Parquet sink and reader: long format, one row per (user, item).

Columns::

    user_id  int64 or string
    rank     int32, 1 = best
    item_id  int64 or string
    score    float32

Rows are streamed to a :class:`pyarrow.parquet.ParquetWriter` in row groups of
at most ``row_group_size`` rows, so memory stays bounded by one row group plus
one batch.  The file is written beside the target under a temporary name and
renamed onto it at publish.  Users with an empty list have no row.  The schema
metadata key ``fmrec`` holds ``{"run_id": ..., "layout": "topk-long-1"}``.
Encodings (not part of the contract; any Parquet reader reads them): IDs and ranks
dictionary + RLE, scores PLAIN; codec zstd by default.  Batches are converted to
Arrow without copies where possible and without importing pandas.

pyarrow is imported when a Parquet sink or reader is first used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from fmrec.errors import ConfigError, DataError, StoreError
from fmrec.store._base import Batch, IdKind, Sink, id_column, topk_from_long
from fmrec.store._files import StagedFile
from fmrec.topk import TopK

__all__ = ["ParquetSink", "read_parquet_topk", "PARQUET_LAYOUT"]

PARQUET_LAYOUT = "topk-long-1"


def _arrow_type(kind: IdKind) -> Any:
    import pyarrow as pa

    return pa.int64() if kind == "int" else pa.string()


def _numeric(values: np.ndarray, dtype: Any, arrow_type: Any) -> Any:
    """A zero-copy Arrow array over a numeric numpy array.

    ``pa.array`` would do, but its first call imports pandas (to recognise a Series):
    0.4 s of a command's start-up.
    """
    import pyarrow as pa

    arr = np.ascontiguousarray(values, dtype=dtype)
    return pa.Array.from_buffers(arrow_type, int(arr.shape[0]), [None, pa.py_buffer(arr)])


def _id_array(values: np.ndarray, kind: IdKind) -> Any:
    import pyarrow as pa

    if kind == "int":
        return _numeric(values, np.int64, pa.int64())
    return pa.array(values, type=pa.string())


class ParquetSink(Sink):
    """Stream top-k lists into a Parquet file (long format), published by rename.

    Parameters
    ----------
    path : target ``*.parquet`` file; missing parent folders are created.
    run_id : run id (``[A-Za-z0-9_]+``); default a UTC timestamp plus a random suffix.
    row_group_size : rows buffered before a row group is written (default 262,144).
    compression : Parquet codec passed to pyarrow (default ``"zstd"``).

    The ID column types (int64 or string) are fixed by the first batch holding
    rows; a later batch with the other kind raises StoreError.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        run_id: str | None = None,
        *,
        row_group_size: int = 262_144,
        compression: str = "zstd",
    ) -> None:
        if not isinstance(row_group_size, int) or row_group_size < 1:
            raise ConfigError(f"row_group_size must be a positive integer, got {row_group_size!r}")
        super().__init__(os.fspath(path), run_id)
        self.row_group_size = row_group_size
        self.compression = compression
        self._staged = StagedFile(path, self.run_id)
        self._writer: Any = None
        self._kinds: tuple[IdKind, IdKind] | None = None
        self._seen_kinds: tuple[IdKind | None, IdKind | None] = (None, None)
        self._buffer: list[Any] = []  # Arrow tables not yet written
        self._buffered = 0
        self._ranks: np.ndarray | None = None

    def _schema(self, user_kind: IdKind, item_kind: IdKind) -> Any:
        import pyarrow as pa

        meta = {"fmrec": json.dumps({"run_id": self.run_id, "layout": PARQUET_LAYOUT})}
        return pa.schema(
            [
                pa.field("user_id", _arrow_type(user_kind), nullable=False),
                pa.field("rank", pa.int32(), nullable=False),
                pa.field("item_id", _arrow_type(item_kind), nullable=False),
                pa.field("score", pa.float32(), nullable=False),
            ],
            metadata=meta,
        )

    def _open_writer(self, user_kind: IdKind, item_kind: IdKind) -> None:
        import pyarrow.parquet as pq

        self._kinds = (user_kind, item_kind)
        # Scores are written PLAIN: float32 scores of 100 items x many users are nearly all
        # distinct, so a dictionary only costs time (it overflows and falls back) and size
        # (measured, 10 M rows: 1.75 s / 71 MB with it, 0.55 s / 50 MB without).  IDs and
        # ranks keep the dictionary + RLE encoding every Parquet reader understands.
        self._writer = pq.ParquetWriter(
            self._staged.file, self._schema(user_kind, item_kind), compression=self.compression,
            use_dictionary=["user_id", "rank", "item_id"],
        )

    def _rank_tile(self, n: int, k: int) -> np.ndarray:
        """``[1..k] * n`` as int32 (a view of a cached array grown on demand)."""
        tile = self._ranks
        if tile is None or tile.shape[1] != k or tile.shape[0] < n:
            tile = self._ranks = np.broadcast_to(np.arange(1, k + 1, dtype=np.int32), (max(n, 1), k)).copy()
        return tile[:n].reshape(-1)

    def _table(self, batch: Batch) -> Any:
        """The batch's rows in long format as an Arrow table (user, rank, item, score)."""
        import pyarrow as pa

        assert self._kinds is not None
        uk, ik = self._kinds
        n, k = batch.scores.shape
        counts = batch.counts
        users = id_column(batch.user_ids, uk, "user IDs")  # one value per user, repeated below
        if batch.n_rows == n * k:  # every list full: reshape instead of masking
            ranks = self._rank_tile(n, k)
            items = batch.item_ids.reshape(-1)
            scores = np.ascontiguousarray(batch.scores, dtype=np.float32).reshape(-1)
        else:
            mask = batch.mask
            ranks = self._rank_tile(n, k)[mask.reshape(-1)]
            items = batch.item_ids[mask]
            scores = batch.scores[mask]
        if uk == "int":
            user_col = _id_array(np.repeat(users, counts), "int")
        else:  # convert each user's ID once, then gather in Arrow
            user_col = _id_array(users, "str").take(_numeric(np.repeat(np.arange(n), counts), np.int64, pa.int64()))
        return pa.Table.from_arrays(
            [
                user_col,
                _numeric(ranks, np.int32, pa.int32()),
                _id_array(id_column(items, ik, "item IDs"), ik),
                _numeric(scores, np.float32, pa.float32()),
            ],
            schema=self._writer.schema,
        )

    def _write(self, batch: Batch) -> None:
        su, si = self._seen_kinds
        self._seen_kinds = (su or batch.user_kind, si or batch.item_kind)
        if batch.n_rows == 0:
            return
        if self._writer is None:
            self._open_writer(batch.user_kind or "int", batch.item_kind or "int")
        assert self._kinds is not None
        uk, ik = self._kinds
        for what, kind, expected in (("user IDs", batch.user_kind, uk), ("item IDs", batch.item_kind, ik)):
            if kind is not None and kind != expected:
                raise StoreError(
                    f"{what} changed type within run {self.run_id}: the Parquet column holds "
                    f"{'integers' if expected == 'int' else 'strings'}, this batch has {kind}s"
                )
        table = self._table(batch)
        self._buffer.append(table)
        self._buffered += table.num_rows
        while self._buffered >= self.row_group_size:
            self._flush(self.row_group_size)

    def _flush(self, limit: int | None = None) -> None:
        """Write up to ``limit`` buffered rows (all when None) as one row group (zero-copy slices)."""
        import pyarrow as pa

        if not self._buffered:
            return
        table = self._buffer[0] if len(self._buffer) == 1 else pa.concat_tables(self._buffer)
        take = self._buffered if limit is None else min(limit, self._buffered)
        self._writer.write_table(table.slice(0, take), row_group_size=take)
        rest = self._buffered - take
        self._buffer = [table.slice(take)] if rest else []
        self._buffered = rest

    def _publish(self) -> None:
        if self._writer is None:
            su, si = self._seen_kinds
            self._open_writer(su or "int", si or "int")
        self._flush()
        self._writer.close()
        self._staged.commit()

    def _abort(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception:  # noqa: BLE001 - the file is removed anyway
            pass
        self._buffer = []
        self._buffered = 0
        self._staged.discard()


def read_parquet_topk(path: str | os.PathLike[str], *, k: int | None = None) -> TopK:
    """Read a Parquet file written by :class:`ParquetSink` back into a :class:`TopK`.

    Users come in order of first appearance; each user's items are placed by
    ``rank`` (1 = best).  ``k`` defaults to the largest rank.  Ranks of a user
    must be exactly 1..n; anything else raises :class:`~fmrec.errors.DataError`.
    """
    import pyarrow.parquet as pq

    p = Path(path)
    try:
        table = pq.read_table(p, columns=["user_id", "rank", "item_id", "score"])
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot read Parquet top-k: {str(exc).splitlines()[0] if str(exc) else exc}", path=p) from exc
    import pyarrow as pa

    def to_numpy(name: str) -> np.ndarray:
        col = table.column(name)
        if pa.types.is_integer(col.type):
            return col.to_numpy().astype(np.int64, copy=False)
        return np.asarray(col.to_pylist(), dtype=object)

    return topk_from_long(
        to_numpy("user_id"),
        np.asarray(table.column("rank").to_numpy(), dtype=np.int64),
        to_numpy("item_id"),
        np.asarray(table.column("score").to_numpy(), dtype=np.float32),
        k=k,
        where=str(p),
    )
