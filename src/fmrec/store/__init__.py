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
:class:`ParquetSink` (long format), :class:`SqliteSink` and
:class:`PostgresSink` (run tables behind a view, ``postgresql://...``).
Readers: :func:`read_jsonl`, :func:`read_parquet_topk`,
:func:`read_sqlite_topk`, :func:`read_postgres_topk`.  Run log of the SQLite
and PostgreSQL targets: :func:`list_published_runs`, :func:`rollback_run`
(:func:`list_runs` is the SQLite-only form).  :func:`redact_target` shows a
target without its password.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fmrec.store._base import Sink, new_run_id, validate_identifier, validate_run_id
from fmrec.store._dispatch import (
    accepted_targets,
    list_published_runs,
    open_sink,
    redact_target,
    register_scheme,
    register_suffix,
    rollback_run,
)

if TYPE_CHECKING:
    from fmrec.store.jsonl import JSONL_FORMATS, JsonlSink, read_jsonl
    from fmrec.store.parquet import ParquetSink, read_parquet_topk
    from fmrec.store.postgres import PostgresSink, list_postgres_runs, read_postgres_topk, rollback_postgres
    from fmrec.store.sqlite import RunInfo, SqliteSink, list_runs, read_sqlite_topk, rollback_sqlite, sqlite_path

# backends load on first use (open_sink imports only the one a target needs): the
# SQLite and PostgreSQL modules cost ~20 ms of a command's start-up
_LAZY = {
    "fmrec.store.jsonl": ("JSONL_FORMATS", "JsonlSink", "read_jsonl"),
    "fmrec.store.parquet": ("ParquetSink", "read_parquet_topk"),
    "fmrec.store.postgres": ("PostgresSink", "list_postgres_runs", "read_postgres_topk", "rollback_postgres"),
    "fmrec.store.sqlite": ("RunInfo", "SqliteSink", "list_runs", "read_sqlite_topk", "rollback_sqlite",
                           "sqlite_path"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "Sink",
    "open_sink",
    "JsonlSink",
    "ParquetSink",
    "SqliteSink",
    "PostgresSink",
    "read_jsonl",
    "read_parquet_topk",
    "read_sqlite_topk",
    "list_runs",
    "list_published_runs",
    "rollback_run",
    "rollback_sqlite",
    "rollback_postgres",
    "list_postgres_runs",
    "read_postgres_topk",
    "redact_target",
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
