"""SQLite sink: run-scoped tables behind one view, flipped in one transaction.

Layout in the database (names are options, validated identifiers)::

    fmrec_run_<run_id>(user_id, rank, item_id, score)   one table per run,
                                                       UNIQUE index on (user_id, rank)
    recommendations                                    VIEW: SELECT user_id, rank, item_id, score
                                                             FROM fmrec_run_<current run_id>
    fmrec_runs(run_id TEXT PRIMARY KEY, started TEXT, finished TEXT,
               rows INTEGER, users INTEGER, published INTEGER, meta TEXT)

A run stages its rows into its own table (``executemany`` in chunks, one
transaction per batch), builds the index, and publishes in ONE transaction that
drops and recreates the view, records the run in ``fmrec_runs`` and drops the
tables of runs older than the last ``keep_runs`` published ones (of the same
view).  The database is put in WAL mode, so readers never block and always see
either the previous run or the new one in full.  ``abort`` drops the staged
table; the view is not touched.

A run's table is recorded in ``fmrec_runs_staging(name, run_id, started, host,
pid)`` in the transaction that creates it, and unrecorded when the run is
published or aborted.  A writer killed before either leaves its row behind; the
next publish on the same host drops the tables of rows whose process is gone
(a live writer's table is never touched).

``fmrec_runs`` rows exist for published runs only (``published`` is 1);
``started``/``finished`` are ISO 8601 UTC; ``meta`` is JSON holding
``{"view", "table", "k", "meta": <caller's meta>}``.  Rows of pruned runs are
deleted with their tables.  ID columns are declared ``INTEGER`` or ``TEXT`` after
the first batch holding rows; scores are stored as the shortest decimals that
round-trip the float32 values.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from fmrec.errors import ConfigError, StoreError
from fmrec.store._base import (
    check_id_kinds,
    Batch,
    IdKind,
    Sink,
    f32_shortest,
    id_column,
    quote_identifier as q,
    topk_from_rows,
    utc_now_iso,
    validate_identifier,
    validate_run_id,
)
from fmrec.topk import TopK

__all__ = ["SqliteSink", "RunInfo", "list_runs", "read_sqlite_topk", "rollback_sqlite", "sqlite_path"]

#: Test hook (SIGKILL fault tests): seconds to sleep inside the publish transaction, just before COMMIT.
PAUSE_ENV = "FMREC_TEST_PAUSE_BEFORE_COMMIT"


def pause_before_commit_hook(what: str) -> None:
    """Sleep ``$FMREC_TEST_PAUSE_BEFORE_COMMIT`` seconds inside a publish transaction, before COMMIT.

    A test hook for the fault tests (kill a publish between its last statement
    and COMMIT); does nothing unless the variable is set.  Prints one line to
    stderr first, so a test knows when to strike.
    """
    value = os.environ.get(PAUSE_ENV)
    if not value:
        return
    import sys
    import time

    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{PAUSE_ENV} must be a number of seconds, got {value!r}") from None
    print(f"fmrec test hook: publishing {what}: pausing {seconds:g}s before COMMIT", file=sys.stderr, flush=True)
    time.sleep(seconds)

_URL_PREFIX = "sqlite:///"
_VIEW_TARGET_RE = re.compile(r'\bFROM\s+"([A-Za-z_][A-Za-z0-9_]*)"\s*;?\s*$', re.IGNORECASE)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except OSError:
        return True
    return True


def sqlite_path(target: str | os.PathLike[str]) -> Path:
    """The database file of ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or a plain path."""
    text = os.fspath(target)
    if text.startswith("sqlite:"):
        if not text.startswith(_URL_PREFIX):
            raise ConfigError(
                f"invalid SQLite URL {text!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        rest = text[len(_URL_PREFIX):]
        if not rest or rest.endswith("/"):
            raise ConfigError(f"invalid SQLite URL {text!r}: no database file named")
        if rest == ":memory:" or "?" in rest:
            raise ConfigError(
                f"invalid SQLite URL {text!r}: in-memory databases and URL parameters are not supported"
            )
        return Path(rest)
    return Path(text)


def _connect(path: Path, timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
    return conn


def _open_existing(db: str | os.PathLike[str], timeout: float) -> tuple[Path, sqlite3.Connection]:
    """(path, connection) of a database that must already exist (readers, rollback)."""
    path = sqlite_path(db)
    if not path.is_file():
        raise StoreError(f"{path}: no such SQLite database")
    return path, _connect(path, timeout)


def _table_exists(conn: sqlite3.Connection, name: str, kind: str = "table") -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = ? AND name = ?", (kind, name)).fetchone()
    return row is not None


def _object_type(conn: sqlite3.Connection, name: str) -> str | None:
    row = conn.execute("SELECT type FROM sqlite_master WHERE name = ? COLLATE NOCASE", (name,)).fetchone()
    return None if row is None else str(row[0])


def _view_target(conn: sqlite3.Connection, view: str) -> str | None:
    """The table a view made by fmrec reads from, or None."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'view' AND name = ?", (view,)).fetchone()
    if row is None or row[0] is None:
        return None
    m = _VIEW_TARGET_RE.search(row[0])
    return m.group(1) if m else None


def _runs_rows(conn: sqlite3.Connection, runs_table: str) -> list[tuple[Any, ...]]:
    if not _table_exists(conn, runs_table):
        return []
    return conn.execute(
        f"SELECT run_id, started, finished, rows, users, published, meta FROM {q(runs_table)} ORDER BY rowid DESC"
    ).fetchall()


def _parse_meta(text: Any) -> dict[str, Any]:
    try:
        meta = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


class SqliteSink(Sink):
    """Write top-k lists into a run table of a SQLite database and flip a view onto it.

    Parameters
    ----------
    db : database file, or a ``sqlite:///relative.db`` / ``sqlite:////abs/path.db`` URL.
        Missing parent folders and the file are created.
    run_id : run id (``[A-Za-z0-9_]+``); default a UTC timestamp plus a random suffix.
    table : prefix of run tables; a run writes ``<table>_<run_id>`` (default ``fmrec_run``).
    view : the view readers query (default ``recommendations``).
    runs_table : the run log table (default ``fmrec_runs``).
    keep_runs : published run tables kept for this view, the new one included (default 3).
    replace : allow re-publishing an existing ``run_id`` (default False: StoreError).
    chunk_size : rows per ``executemany`` call (default 50,000).
    meta : JSON-serialisable mapping stored with the run in ``fmrec_runs.meta``.
    timeout : seconds to wait for another writer's lock (default 30).
    """

    def __init__(
        self,
        db: str | os.PathLike[str],
        run_id: str | None = None,
        *,
        table: str = "fmrec_run",
        view: str = "recommendations",
        runs_table: str = "fmrec_runs",
        keep_runs: int = 3,
        replace: bool = False,
        chunk_size: int = 50_000,
        meta: Mapping[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._conn: sqlite3.Connection | None = None
        self._created = False
        super().__init__(os.fspath(db), run_id)
        try:
            self._setup(db, table, view, runs_table, keep_runs, replace, chunk_size, meta, timeout)
        except BaseException:
            self._state = "aborted"
            self._close()
            raise

    # -- setup ----------------------------------------------------------------

    def _setup(
        self,
        db: str | os.PathLike[str],
        table: str,
        view: str,
        runs_table: str,
        keep_runs: int,
        replace: bool,
        chunk_size: int,
        meta: Mapping[str, Any] | None,
        timeout: float,
    ) -> None:
        self.path = sqlite_path(db)
        self.table_prefix = validate_identifier(table, "table")
        self.view = validate_identifier(view, "view")
        self.runs_table = validate_identifier(runs_table, "runs_table")
        self.staging_table = validate_identifier(f"{runs_table}_staging", "staging registry name")
        self.table = validate_identifier(f"{table}_{self.run_id}", "run table name")
        if len({self.view.lower(), self.runs_table.lower(), self.table.lower()}) != 3:
            raise ConfigError(f"view {view!r}, runs_table {runs_table!r} and run table {self.table!r} must differ")
        if isinstance(keep_runs, bool) or not isinstance(keep_runs, int) or keep_runs < 1:
            raise ConfigError(f"keep_runs must be an integer >= 1, got {keep_runs!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        try:
            self._meta_json_user = json.loads(json.dumps(dict(meta or {})))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"meta must be a JSON-serialisable mapping: {exc}") from exc
        self.keep_runs = keep_runs
        self.replace = bool(replace)
        self.chunk_size = chunk_size
        self.started = utc_now_iso()
        self._kinds: tuple[IdKind, IdKind] | None = None
        self._seen_kinds: tuple[IdKind | None, IdKind | None] = (None, None)
        self._staging = self.table

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create folder {self.path.parent} for {self.path}: {exc.strerror or exc}") from exc
        try:
            conn = self._conn = _connect(self.path, timeout)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: cannot switch SQLite to WAL mode (got {mode!r}); readers would block")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._prepare(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Create the run log, check names and run id conflicts (inside a transaction)."""
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {q(self.runs_table)} (run_id TEXT PRIMARY KEY, started TEXT, "
            "finished TEXT, rows INTEGER, users INTEGER, published INTEGER, meta TEXT)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {q(self.staging_table)} (name TEXT PRIMARY KEY, run_id TEXT, "
            "started TEXT, host TEXT, pid INTEGER)"
        )
        kind = _object_type(conn, self.view)
        if kind not in (None, "view"):
            raise StoreError(f"{self.path}: {self.view!r} is a {kind}, not a view; choose another view name")
        published = conn.execute(
            f"SELECT 1 FROM {q(self.runs_table)} WHERE run_id = ?", (self.run_id,)
        ).fetchone() is not None
        table_kind = _object_type(conn, self.table)
        if table_kind not in (None, "table"):
            raise StoreError(f"{self.path}: {self.table!r} exists and is a {table_kind}")
        if not (published or table_kind):
            return
        if not self.replace:
            state = "was already published" if published else "has a table already"
            raise StoreError(
                f"{self.path}: run {self.run_id!r} {state} ({self.table}); pass replace=True to overwrite it"
            )
        if published and table_kind:
            # The old table stays readable until publish; stage beside it, rename at publish.
            self._staging = validate_identifier(
                f"{self.table_prefix}__replace_{secrets.token_hex(4)}", "staging table name"
            )
        elif table_kind:
            conn.execute(f"DROP TABLE {q(self.table)}")  # a crashed, never published run
            conn.execute(f"DELETE FROM {q(self.staging_table)} WHERE name = ?", (self.table,))

    # -- writing --------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: the connection of run {self.run_id} is closed")
        return self._conn

    def _create_table(self, user_kind: IdKind, item_kind: IdKind) -> None:
        """The run's table and its staging record, in one transaction."""
        types = {"int": "INTEGER", "str": "TEXT"}
        self._kinds = (user_kind, item_kind)
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"CREATE TABLE {q(self._staging)} (user_id {types[user_kind]} NOT NULL, rank INTEGER NOT NULL, "
                f"item_id {types[item_kind]} NOT NULL, score REAL NOT NULL)"
            )
            conn.execute(f"INSERT OR REPLACE INTO {q(self.staging_table)} (name, run_id, started, host, pid) "
                         "VALUES (?, ?, ?, ?, ?)",
                         (self._staging, self.run_id, self.started, socket.gethostname(), os.getpid()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._created = True

    def _write(self, batch: Batch) -> None:
        su, si = self._seen_kinds
        self._seen_kinds = (su or batch.user_kind, si or batch.item_kind)
        if batch.n_rows == 0:
            return
        conn = self.conn
        try:
            if not self._created:
                self._create_table(batch.user_kind or "int", batch.item_kind or "int")
            assert self._kinds is not None
            uk, ik = self._kinds
            check_id_kinds(self.run_id, batch, self._kinds)
            users, ranks, items, scores = batch.long()
            u = id_column(users, uk, "user IDs").tolist()
            r = ranks.tolist()
            it = id_column(items, ik, "item IDs").tolist()
            s = f32_shortest(scores)
            sql = f"INSERT INTO {q(self._staging)} (user_id, rank, item_id, score) VALUES (?, ?, ?, ?)"
            conn.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(r), self.chunk_size):
                    stop = start + self.chunk_size
                    conn.executemany(sql, zip(u[start:stop], r[start:stop], it[start:stop], s[start:stop]))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: writing run {self.run_id} failed: {exc}") from exc

    # -- publish / abort ------------------------------------------------------

    def _meta_json(self) -> str:
        return json.dumps(
            {"view": self.view, "table": self.table, "k": self.k_max, "meta": self._meta_json_user},
            sort_keys=True,
        )

    def _publish(self) -> None:
        conn = self.conn
        try:
            if not self._created:
                su, si = self._seen_kinds
                self._create_table(su or "int", si or "int")
            index = f"{self._staging}_user_rank"
            try:
                conn.execute(f"CREATE UNIQUE INDEX {q(index)} ON {q(self._staging)} (user_id, rank)")
            except sqlite3.IntegrityError as exc:
                raise StoreError(
                    f"{self.path}: run {self.run_id} holds a (user_id, rank) pair twice; "
                    "was a user written in two batches?"
                ) from exc
            conn.execute("PRAGMA synchronous=FULL")
            renaming = self._staging != self.table
            if renaming:
                conn.execute("PRAGMA legacy_alter_table=ON")
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._flip(conn, renaming)
                pause_before_commit_hook(f"run {self.run_id} to {self.path}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            # Published: the table now belongs to the view, never to abort.
            self._staging = self.table
            self._created = False
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: publishing run {self.run_id} failed: {exc}") from exc
        self._close()

    def _flip(self, conn: sqlite3.Connection, renaming: bool) -> None:
        """The publish transaction body: view, run log, pruning."""
        exists = conn.execute(
            f"SELECT 1 FROM {q(self.runs_table)} WHERE run_id = ?", (self.run_id,)
        ).fetchone() is not None
        if exists and not self.replace:
            raise StoreError(
                f"{self.path}: run {self.run_id!r} was published meanwhile; pass replace=True to overwrite it"
            )
        conn.execute(f"DELETE FROM {q(self.staging_table)} WHERE name = ?", (self._staging,))
        self._drop_orphans(conn)
        conn.execute(f"DROP VIEW IF EXISTS {q(self.view)}")
        if renaming:
            conn.execute(f"DROP TABLE IF EXISTS {q(self.table)}")
            conn.execute(f"ALTER TABLE {q(self._staging)} RENAME TO {q(self.table)}")
        conn.execute(
            f"CREATE VIEW {q(self.view)} AS SELECT user_id, rank, item_id, score FROM {q(self.table)}"
        )
        conn.execute(f"DELETE FROM {q(self.runs_table)} WHERE run_id = ?", (self.run_id,))
        conn.execute(
            f"INSERT INTO {q(self.runs_table)} (run_id, started, finished, rows, users, published, meta) "
            "VALUES (?, ?, ?, ?, ?, 1, ?)",
            (self.run_id, self.started, utc_now_iso(), self.rows_written, self.users_written, self._meta_json()),
        )
        kept = 0
        for run_id, *_rest, meta_text in _runs_rows(conn, self.runs_table):
            meta = _parse_meta(meta_text)
            if meta.get("view") != self.view:
                continue  # another view's runs are not ours to prune
            kept += 1
            if kept <= self.keep_runs:
                continue
            old = meta.get("table")
            if isinstance(old, str) and old != self.table:
                conn.execute(f"DROP TABLE IF EXISTS {q(validate_identifier(old, 'run table name'))}")
            conn.execute(f"DELETE FROM {q(self.runs_table)} WHERE run_id = ?", (run_id,))

    def _drop_orphans(self, conn: sqlite3.Connection) -> None:
        """Drop the tables of writers on this host that died before publishing or aborting."""
        host = socket.gethostname()
        for name, pid in conn.execute(f"SELECT name, pid FROM {q(self.staging_table)} WHERE host = ?",
                                      (host,)).fetchall():
            if pid == os.getpid() or _process_alive(int(pid)):
                continue
            conn.execute(f"DROP TABLE IF EXISTS {q(validate_identifier(name, 'staged table name'))}")
            conn.execute(f"DELETE FROM {q(self.staging_table)} WHERE name = ?", (name,))

    def _abort(self) -> None:
        try:
            if self._conn is not None and self._created:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self._conn.execute(f"DROP TABLE IF EXISTS {q(self._staging)}")
                self._conn.execute(f"DELETE FROM {q(self.staging_table)} WHERE name = ?", (self._staging,))
                self._created = False
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: aborting run {self.run_id} failed: {exc}") from exc
        finally:
            self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass


@dataclass(frozen=True)
class RunInfo:
    """One published run, as recorded in the run log."""

    run_id: str
    started: str
    finished: str
    rows: int
    users: int
    published: bool
    table: str | None
    view: str | None
    k: int | None
    current: bool
    meta: dict[str, Any] = field(default_factory=dict)


def list_runs(
    db: str | os.PathLike[str],
    *,
    runs_table: str = "fmrec_runs",
    view: str | None = None,
    timeout: float = 5.0,
) -> list[RunInfo]:
    """The runs recorded in ``db``, newest publish first.

    ``view`` restricts the list to runs published behind that view.  ``current``
    is True for the run the view reads now.  A missing database or run log
    gives an empty list.
    """
    validate_identifier(runs_table, "runs_table")
    if view is not None:
        validate_identifier(view, "view")
    path = sqlite_path(db)
    if not path.is_file():
        return []
    conn = _connect(path, timeout)
    try:
        conn.execute("BEGIN")
        rows = _runs_rows(conn, runs_table)
        targets: dict[str, str | None] = {}
        out = []
        for run_id, started, finished, n_rows, users, published, meta_text in rows:
            meta = _parse_meta(meta_text)
            run_view = meta.get("view")
            if view is not None and run_view != view:
                continue
            if isinstance(run_view, str) and run_view not in targets:
                targets[run_view] = _view_target(conn, run_view)
            table = meta.get("table")
            out.append(
                RunInfo(
                    run_id=run_id,
                    started=started,
                    finished=finished,
                    rows=int(n_rows or 0),
                    users=int(users or 0),
                    published=bool(published),
                    table=table,
                    view=run_view,
                    k=meta.get("k"),
                    current=table is not None and targets.get(run_view) == table,
                    meta=meta.get("meta") or {},
                )
            )
        conn.execute("COMMIT")
        return out
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot list runs: {exc}") from exc
    finally:
        conn.close()


def read_sqlite_topk(
    db: str | os.PathLike[str],
    run_id: str | None = None,
    *,
    view: str = "recommendations",
    table: str = "fmrec_run",
    runs_table: str = "fmrec_runs",
    k: int | None = None,
    timeout: float = 5.0,
) -> TopK:
    """Read the published run behind ``view`` (or run ``run_id``) back into a :class:`TopK`.

    Users come in the order they were written; items are placed by rank.
    Reads in one transaction, so the result is one run in full.
    """
    validate_identifier(view, "view")
    validate_identifier(table, "table")
    validate_identifier(runs_table, "runs_table")
    path, conn = _open_existing(db, timeout)
    try:
        conn.execute("BEGIN")
        if run_id is not None:
            name = validate_identifier(f"{table}_{validate_run_id(run_id)}", "run table name")
            for rid, *_rest, meta_text in _runs_rows(conn, runs_table):
                if rid == run_id:
                    name = _parse_meta(meta_text).get("table") or name
            source = name if _table_exists(conn, name) else None
            if source is None:
                raise StoreError(f"{path}: run {run_id!r} has no table (never published, aborted or pruned)")
            rows: list[tuple[Any, ...]] | Iterator[Any] = conn.execute(
                f"SELECT user_id, rank, item_id, score FROM {q(source)} ORDER BY rowid"
            ).fetchall()
        else:
            if not _table_exists(conn, view, "view"):
                raise StoreError(f"{path}: no view {view!r}: nothing published yet")
            source = _view_target(conn, view)
            if source is not None and _table_exists(conn, source):
                sql = f"SELECT user_id, rank, item_id, score FROM {q(source)} ORDER BY rowid"
            else:  # not a view fmrec made: fall back to a stable order
                sql = f"SELECT user_id, rank, item_id, score FROM {q(view)} ORDER BY user_id, rank"
            rows = conn.execute(sql).fetchall()
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read recommendations: {exc}") from exc
    finally:
        conn.close()

    return topk_from_rows(rows, k=k, where=str(path))


def rollback_sqlite(
    db: str | os.PathLike[str],
    run_id: str,
    *,
    runs_table: str = "fmrec_runs",
    timeout: float = 30.0,
) -> RunInfo:
    """Serve the kept run ``run_id`` again: its view reads its table (one transaction).

    The run must still be recorded in ``runs_table`` with its table (runs beyond
    ``keep_runs`` are pruned and cannot come back).  Returns the run's
    :class:`RunInfo`, now ``current``.
    """
    validate_run_id(run_id)
    validate_identifier(runs_table, "runs_table")
    path, conn = _open_existing(db, timeout)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = None
            for rid, *_rest, meta_text in _runs_rows(conn, runs_table):
                if rid == run_id:
                    row = _parse_meta(meta_text)
            if row is None:
                raise StoreError(f"{path}: no run {run_id!r} in {runs_table} (never published or pruned)")
            view, table = row.get("view"), row.get("table")
            if not isinstance(view, str) or not isinstance(table, str):
                raise StoreError(f"{path}: run {run_id!r} has no view/table in its record")
            validate_identifier(view, "view")
            validate_identifier(table, "run table name")
            if not _table_exists(conn, table):
                raise StoreError(f"{path}: run {run_id!r} has no table {table} any more")
            kind = _object_type(conn, view)
            if kind not in (None, "view"):
                raise StoreError(f"{path}: {view!r} is a {kind}, not a view")
            conn.execute(f"DROP VIEW IF EXISTS {q(view)}")
            conn.execute(f"CREATE VIEW {q(view)} AS SELECT user_id, rank, item_id, score FROM {q(table)}")
            pause_before_commit_hook(f"rollback to run {run_id} in {path}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot roll back to run {run_id}: {exc}") from exc
    finally:
        conn.close()
    (info,) = [r for r in list_runs(path, runs_table=runs_table, timeout=timeout) if r.run_id == run_id]
    return info
