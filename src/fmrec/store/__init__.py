"""Store top-k results where products read them, published atomically.

Every sink takes :class:`~fmrec.topk.TopK` batches and publishes a whole run in
one atomic step, so readers never see half a run and a crash or an exception
leaves the last published run in place::

    from fmrec.store import open_sink

    with open_sink("sqlite:///recs.db") as sink:     # or "recs.jsonl", "recs.parquet"
        for batch in recommend_all(...):
            sink.write(batch)
    # published on normal exit; aborted (staged output removed) on an exception

Backends: :class:`JsonlSink` (``fmrec`` or ``sagemaker`` layout),
:class:`ParquetSink` (long format), :class:`SqliteSink` (run tables behind a
view).  Readers: :func:`read_jsonl`, :func:`read_parquet_topk`,
:func:`read_sqlite_topk`, :func:`list_runs`.
"""

from __future__ import annotations

from fmrec.store._base import Sink, new_run_id, validate_identifier, validate_run_id
from fmrec.store._dispatch import accepted_targets, open_sink, register_scheme, register_suffix
from fmrec.store.jsonl import JSONL_FORMATS, JsonlSink, read_jsonl
from fmrec.store.parquet import ParquetSink, read_parquet_topk
from fmrec.store.sqlite import RunInfo, SqliteSink, list_runs, read_sqlite_topk, sqlite_path

__all__ = [
    "Sink",
    "open_sink",
    "JsonlSink",
    "ParquetSink",
    "SqliteSink",
    "read_jsonl",
    "read_parquet_topk",
    "read_sqlite_topk",
    "list_runs",
    "RunInfo",
    "sqlite_path",
    "new_run_id",
    "validate_run_id",
    "validate_identifier",
    "register_scheme",
    "register_suffix",
    "accepted_targets",
    "JSONL_FORMATS",
]
