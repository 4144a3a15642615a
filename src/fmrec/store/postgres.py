"""PostgreSQL sink: a run table loaded with COPY, published with the view in ONE transaction.

Layout in the database (names are options, validated lowercase identifiers;
``schema`` defaults to the connection's ``current_schema()``)::

    <schema>.fmrec_run_<run_id>(user_id, rank, item_id, score)   one table per run,
        user_id/item_id bigint (integer IDs) or text, rank integer from 1, score real;
        UNIQUE index on (user_id, rank)
    <schema>.recommendations          VIEW: SELECT user_id, rank, item_id, score
                                             FROM <schema>.fmrec_run_<current run_id>
    <schema>.fmrec_runs(run_id text PRIMARY KEY, started timestamptz, finished timestamptz,
                        rows bigint, users bigint, model_checksum text, config jsonb,
                        published boolean, view_name text, table_name text, k integer,
                        meta jsonb)

How a run is written (decisions, see ``docs/operations.md``):

- **One transaction from the first row to the publish.**  The run table is
  created inside the sink's transaction, every batch is streamed into it with
  ``COPY ... FROM STDIN (FORMAT BINARY, FREEZE)`` (integer IDs are encoded with
  numpy straight into the binary COPY format), the ``(user_id, rank)`` index is
  built and the table analysed, and the same transaction then re-points the view
  (``CREATE OR REPLACE VIEW``), records the run in ``fmrec_runs`` and drops the
  tables of runs older than the last ``keep_runs`` of this view.  Nothing the
  run wrote is visible before COMMIT.  ``abort`` -- and a killed process, whose
  connection the server closes -- rolls everything back: no staged table, no
  run record, the previous lists stay served.
- **The run table is LOGGED** (an ordinary table).  An UNLOGGED table would be
  emptied by a server crash (readers would get empty lists) and is not copied
  to standbys; ``ALTER TABLE ... SET LOGGED`` rewrites the whole table, which
  measured slower than loading a logged table directly.  ``FREEZE`` (allowed
  because the table is created in the same transaction) writes the rows frozen,
  so readers never rewrite pages to set hint bits, and even a REPEATABLE READ
  reader whose snapshot predates the publish sees the whole new run rather
  than an empty one.
- **Idempotent re-runs**: publishing a run id that is already published
  (``replace=True``, the default) stages into a temporary table beside the
  served one and swaps it in at publish; the run record is replaced.
- Publishes of the same view are serialised with a transaction-level advisory
  lock; two sinks writing the same run id at once are refused.
- The password (URL, ``?password=`` or ``PGPASSWORD``) never appears in the
  sink's ``target``, its repr, its errors or logs: targets are shown with
  ``:***`` and error texts are scrubbed.

Connection: ``postgresql://user:password@host:port/dbname`` (or ``postgres://``,
``postgresql:///dbname``, libpq query parameters such as ``?sslmode=require``);
fields that are missing come from the usual ``PG*`` environment variables
(``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD``, ``PGDATABASE``, ...) and
``~/.pgpass``.  fmrec adds one query parameter of its own, ``?schema=name``
(stripped before connecting).  ``connect_timeout`` defaults to 10 s and
``application_name`` to ``fmrec`` unless the URL or the environment sets them.

Test hook: when the environment variable ``FMREC_TEST_PAUSE_BEFORE_COMMIT`` is
set to a number of seconds, publish sleeps that long just before COMMIT (after
printing one line to stderr).  It exists for the SIGKILL fault tests and does
nothing when unset.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import numpy as np

from fmrec.errors import ConfigError, FmrecError, StoreError
from fmrec.store._base import (
    check_id_kinds,
    Batch,
    IdKind,
    Sink,
    id_column,
    quote_identifier as q,
    topk_from_rows,
    validate_identifier,
    validate_run_id,
)
from fmrec.store._dispatch import redact_target
from fmrec.store.sqlite import RunInfo, pause_before_commit_hook
from fmrec.topk import TopK

__all__ = [
    "PostgresSink",
    "read_postgres_topk",
    "list_postgres_runs",
    "rollback_postgres",
    "postgres_url",
]

log = logging.getLogger("fmrec.store.postgres")

_SCHEMES = ("postgresql://", "postgres://")
#: Binary COPY: signature, flags, header extension length.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
#: One binary COPY row of (bigint, integer, bigint, real): field count, then (length, value) x 4.
_ROW_INT = np.dtype(
    [("n", ">i2"), ("l1", ">i4"), ("user", ">i8"), ("l2", ">i4"), ("rank", ">i4"),
     ("l3", ">i4"), ("item", ">i8"), ("l4", ">i4"), ("score", ">f4")]
)
#: Rows per ``copy.write`` call (bounded memory for the encoded buffer: 42 bytes a row).
_COPY_CHUNK = 200_000
_SQL_TYPES = {"int": "bigint", "str": "text"}
#: Longest single wait (ms) for the view's lock; see _retry_locked.
_LOCK_TRY_MS = 1000
_RUN_COLUMNS = (
    "run_id", "started", "finished", "rows", "users", "model_checksum", "config",
    "published", "view_name", "table_name", "k", "meta",
)


# --------------------------------------------------------------------------- connection and secrets


def _is_pg_target(target: str) -> bool:
    return target.lower().startswith(_SCHEMES)


def _split_target(target: str) -> tuple[str, str | None, list[str]]:
    """(libpq URL without fmrec's own ``schema`` parameter, schema or None, secrets to scrub)."""
    if not isinstance(target, str) or not _is_pg_target(target):
        raise ConfigError(f"not a PostgreSQL URL: {redact_target(str(target))!r} (use postgresql://...)")
    try:
        parts = urlsplit(target)
    except ValueError as exc:
        raise ConfigError(f"invalid PostgreSQL URL {redact_target(target)!r}: {exc}") from None
    secrets_: list[str] = []
    if parts.password:
        secrets_ += [parts.password, unquote(parts.password)]
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = None
    kept = []
    for key, value in query:
        if key == "schema":
            schema = _check_lower(value, "schema (?schema= in the URL)")
        else:
            if key == "password" and value:
                secrets_.append(value)
            kept.append((key, value))
    env_pw = os.environ.get("PGPASSWORD")
    if env_pw:
        secrets_.append(env_pw)
    # rebuilt by hand: urlunsplit would turn postgresql:///db into postgresql:/db
    url = f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{urlencode(kept)}" if kept else "")
    return url, schema, sorted({s for s in secrets_ if s}, key=len, reverse=True)


def postgres_url(target: str) -> str:
    """``target`` as shown to people: the password replaced by ``***``."""
    return redact_target(target)


class _Scrubber:
    """Removes every known secret from a text (error messages of the driver and the server)."""

    def __init__(self, secrets_: list[str]) -> None:
        self.secrets = secrets_

    def __call__(self, text: Any) -> str:
        out = " ".join(str(text).split())
        for s in self.secrets:
            out = out.replace(s, "***")
        return out


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency
        raise StoreError(
            "the PostgreSQL sink needs psycopg 3: pip install 'psycopg[binary]>=3.1'"
        ) from exc
    return psycopg


def _connect(target: str, *, autocommit: bool) -> tuple[Any, str | None, _Scrubber]:
    """Open a connection for ``target``; errors never show the password."""
    psycopg = _import_psycopg()
    from psycopg.conninfo import conninfo_to_dict

    url, schema, secrets_ = _split_target(target)
    scrub = _Scrubber(secrets_)
    shown = redact_target(target)
    try:
        info = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ConfigError(f"invalid PostgreSQL URL {shown!r}: {scrub(exc)}") from None
    kwargs: dict[str, Any] = {}
    if "connect_timeout" not in info and not os.environ.get("PGCONNECT_TIMEOUT"):
        kwargs["connect_timeout"] = 10
    if "application_name" not in info and not os.environ.get("PGAPPNAME"):
        kwargs["application_name"] = "fmrec"
    try:
        conn = psycopg.connect(url, autocommit=autocommit, **kwargs)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {shown}: {scrub(exc)}") from None
    return conn, schema, scrub


def _check_lower(name: str, what: str) -> str:
    validate_identifier(name, what)
    if name != name.lower():
        raise ConfigError(
            f"invalid {what} {name!r}: use lowercase (PostgreSQL folds unquoted names to lowercase, "
            "so readers could not name it without quotes)"
        )
    return name


def _resolve_schema(cur: Any, option: str | None, from_url: str | None, shown: str) -> str:
    if option is not None and from_url is not None and option != from_url:
        raise ConfigError(f"schema {option!r} disagrees with ?schema={from_url} in {shown}")
    schema = option if option is not None else from_url
    if schema is not None:
        return _check_lower(schema, "schema")
    current = cur.execute("SELECT current_schema()").fetchone()[0]
    if current is None:
        raise StoreError(f"{shown}: no schema on the search_path exists; pass schema=... or ?schema=name")
    return _check_lower(str(current), "schema (current_schema())")


def _qualified(schema: str, name: str) -> str:
    return f"{q(schema)}.{q(name)}"


def _relkind(cur: Any, schema: str, name: str) -> str | None:
    row = cur.execute(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    return None if row is None else str(row[0])


def _view_source(cur: Any, schema: str, view: str) -> str | None:
    """The table a view reads (from the dependencies of its rewrite rule), or None."""
    rows = cur.execute(
        "SELECT DISTINCT t.relname FROM pg_class v "
        "JOIN pg_namespace n ON n.oid = v.relnamespace "
        "JOIN pg_rewrite r ON r.ev_class = v.oid "
        "JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid "
        "JOIN pg_class t ON t.oid = d.refobjid AND d.refclassid = 'pg_class'::regclass "
        "WHERE n.nspname = %s AND v.relname = %s AND v.relkind = 'v' AND t.oid <> v.oid "
        "AND t.relkind IN ('r', 'p')",
        (schema, view),
    ).fetchall()
    return str(rows[0][0]) if len(rows) == 1 else None


def _column_types(cur: Any, schema: str, name: str) -> list[tuple[str, str]]:
    return [
        (str(a), str(t))
        for a, t in cur.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum",
            (schema, name),
        ).fetchall()
    ]


def _point_view(cur: Any, schema: str, view: str, table: str) -> None:
    """Make ``view`` read ``table`` (inside the caller's transaction).

    ``CREATE OR REPLACE VIEW`` keeps the view's grants and dependants; when the
    column types change (integer IDs before, text IDs now) the view is dropped
    and created again in the same transaction and its grants are re-applied.
    """
    body = f"SELECT user_id, rank, item_id, score FROM {_qualified(schema, table)}"
    kind = _relkind(cur, schema, view)
    if kind is not None and kind != "v":
        raise StoreError(f"{schema}.{view} exists and is not a view; choose another view name")
    new_types = _column_types(cur, schema, table)
    if kind is None or _column_types(cur, schema, view) == new_types:
        cur.execute(f"CREATE OR REPLACE VIEW {_qualified(schema, view)} AS {body}")
        return
    grants = cur.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END, a.privilege_type "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a "
        "LEFT JOIN pg_roles r ON r.oid = a.grantee "
        "WHERE n.nspname = %s AND c.relname = %s AND a.grantee <> c.relowner",
        (schema, view),
    ).fetchall()
    cur.execute(f"DROP VIEW {_qualified(schema, view)}")
    cur.execute(f"CREATE VIEW {_qualified(schema, view)} AS {body}")
    for grantee, privilege in grants:
        cur.execute(f"GRANT {privilege} ON {_qualified(schema, view)} TO {grantee}")


def _retry_locked(conn: Any, fn: Any, wait: float, schema: str, view: str, shown: str) -> None:
    """Run ``fn`` (the view statements) in a savepoint with a short ``lock_timeout``, retrying until ``wait``.

    Replacing the view needs an exclusive lock on it.  A reader transaction that
    has read the view holds a share lock until it ends; waiting for it with no
    timeout would also queue every NEW reader behind the publish.  So each try
    waits at most ``_LOCK_TRY_MS`` and new readers are held up at most that long.
    """
    import psycopg

    deadline = time.monotonic() + max(0.0, float(wait))
    delay = 0.05
    while True:
        try:
            with conn.transaction():  # a savepoint: a failed try leaves the run's transaction intact
                conn.execute(f"SET LOCAL lock_timeout = {_LOCK_TRY_MS}")
                fn()
                conn.execute("SET LOCAL lock_timeout TO DEFAULT")
            return
        except psycopg.errors.LockNotAvailable:
            if time.monotonic() + delay > deadline:
                holders = conn.execute(
                    "SELECT a.pid, coalesce(a.state, '?') FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.relation = to_regclass(%s) AND l.granted AND l.pid <> pg_backend_pid() ORDER BY a.pid",
                    (f"{q(schema)}.{q(view)}",),
                ).fetchall()
                who = ", ".join(f"pid {pid} ({state})" for pid, state in holders) or "another session"
                raise StoreError(
                    f"{shown}: waited {wait:g}s for readers to release view {schema}.{view} (held by {who}); "
                    "nothing was published"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _lock_key(*parts: str) -> str:
    return "fmrec:" + ".".join(parts)


def _ensure_catalog(conn: Any, schema: str, runs_table: str, shown: str) -> None:
    """Create the schema and the run log if missing (own short transaction)."""
    with conn.transaction():
        cur = conn.cursor()
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_lock_key(schema),))
        if cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
            cur.execute(f"CREATE SCHEMA {q(schema)}")
        kind = _relkind(cur, schema, runs_table)
        if kind is None:
            cur.execute(
                f"CREATE TABLE {_qualified(schema, runs_table)} ("
                "run_id text PRIMARY KEY, started timestamptz NOT NULL, finished timestamptz NOT NULL, "
                "rows bigint NOT NULL, users bigint NOT NULL, model_checksum text, config jsonb, "
                "published boolean NOT NULL DEFAULT true, view_name text NOT NULL, table_name text NOT NULL, "
                "k integer NOT NULL, meta jsonb NOT NULL DEFAULT '{}'::jsonb)"
            )
            cur.execute(
                f"COMMENT ON TABLE {_qualified(schema, runs_table)} IS 'fmrec run log: one row per published run'"
            )
        elif kind not in ("r", "p"):
            raise StoreError(f"{shown}: {schema}.{runs_table} exists and is not a table")
        else:
            cols = {c for c, _ in _column_types(cur, schema, runs_table)}
            missing = [c for c in _RUN_COLUMNS if c not in cols]
            if missing:
                raise StoreError(
                    f"{shown}: {schema}.{runs_table} is not an fmrec run log (missing columns {', '.join(missing)})"
                )


# --------------------------------------------------------------------------- the sink


class PostgresSink(Sink):
    """Stream top-k lists into a run table with COPY and publish it behind a view in one transaction.

    Parameters
    ----------
    target : ``postgresql://user:password@host:port/dbname`` (``postgres://`` and
        ``postgresql:///dbname`` work too; missing fields come from ``PG*``
        environment variables).  ``?schema=name`` picks the schema.
    run_id : run id (``[A-Za-z0-9_]+``); default a UTC timestamp plus a random suffix.
    schema : schema of every object (default ``?schema=`` of the URL, else ``current_schema()``).
        Created when missing.
    table : prefix of run tables; a run writes ``<table>_<run_id>`` (default ``fmrec_run``).
    view : the view readers query (default ``recommendations``).
    runs_table : the run log table (default ``fmrec_runs``).
    keep_runs : published run tables kept for this view, the new one included (default 3).
    replace : re-publishing an already published ``run_id`` replaces it (default True:
        re-running a run is idempotent); False makes it a StoreError.
    meta : JSON-serialisable mapping recorded with the run: ``model_checksum`` (str)
        and ``config`` (mapping) go to their own columns, the rest to ``meta``.
    lock_wait : seconds the publish waits for reader transactions to release the
        view (default 300), in tries of at most 1 s each so that new readers are
        never queued behind the publish for longer; then StoreError, nothing published.
    """

    def __init__(
        self,
        target: str,
        run_id: str | None = None,
        *,
        schema: str | None = None,
        table: str = "fmrec_run",
        view: str = "recommendations",
        runs_table: str = "fmrec_runs",
        keep_runs: int = 3,
        replace: bool = True,
        meta: Mapping[str, Any] | None = None,
        lock_wait: float = 300.0,
    ) -> None:
        self._conn: Any = None
        self._created = False
        text = os.fspath(target)
        super().__init__(redact_target(text), run_id)
        try:
            if isinstance(lock_wait, bool) or not isinstance(lock_wait, (int, float)) or not lock_wait >= 0:
                raise ConfigError(f"lock_wait must be a number of seconds >= 0, got {lock_wait!r}")
            self.lock_wait = float(lock_wait)
            self._setup(text, schema, table, view, runs_table, keep_runs, replace, meta)
        except BaseException:
            self._state = "aborted"
            self._close(rollback=True)
            raise

    # -- setup ----------------------------------------------------------------

    def _setup(self, url: str, schema: str | None, table: str, view: str, runs_table: str,
               keep_runs: int, replace: bool, meta: Mapping[str, Any] | None) -> None:
        if schema is not None:
            _check_lower(schema, "schema")
        self.table_prefix = _check_lower(table, "table")
        self.view = _check_lower(view, "view")
        self.runs_table = _check_lower(runs_table, "runs_table")
        self.table = validate_identifier(f"{table}_{self.run_id}", "run table name")
        if len({self.view, self.runs_table, self.table.lower()}) != 3:
            raise ConfigError(f"view {view!r}, runs_table {runs_table!r} and run table {self.table!r} must differ")
        if isinstance(keep_runs, bool) or not isinstance(keep_runs, int) or keep_runs < 1:
            raise ConfigError(f"keep_runs must be an integer >= 1, got {keep_runs!r}")
        try:
            user_meta = json.loads(json.dumps(dict(meta or {})))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"meta must be a JSON-serialisable mapping: {exc}") from exc
        checksum = user_meta.pop("model_checksum", None)
        if checksum is not None and not isinstance(checksum, str):
            raise ConfigError(f"meta['model_checksum'] must be a string, got {checksum!r}")
        config = user_meta.pop("config", None)
        if config is not None and not isinstance(config, dict):
            raise ConfigError(f"meta['config'] must be a mapping, got {type(config).__name__}")
        self.model_checksum: str | None = checksum
        self.config: dict[str, Any] | None = config
        self.meta = user_meta
        self.keep_runs = keep_runs
        self.replace = bool(replace)
        self._kinds: tuple[IdKind, IdKind] | None = None
        self._seen_kinds: tuple[IdKind | None, IdKind | None] = (None, None)
        self._staging = self.table

        psycopg = _import_psycopg()
        self._psycopg = psycopg
        conn, url_schema, self._scrub = _connect(url, autocommit=True)
        self._conn = conn
        try:
            self.schema = _resolve_schema(conn.cursor(), schema, url_schema, self.target)
            _ensure_catalog(conn, self.schema, self.runs_table, self.target)
            conn.autocommit = False  # from here on: ONE transaction until publish or abort
            self._begin()
        except psycopg.Error as exc:
            raise self._error("opening run", exc) from None

    def _error(self, doing: str, exc: BaseException) -> StoreError:
        return StoreError(f"{self.target}: {doing} {self.run_id} failed: {self._scrub(exc)}")

    def _begin(self) -> None:
        """First statements of the run's transaction: the run lock and the run id checks."""
        cur = self.conn.cursor()
        got = cur.execute(
            "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))",
            (_lock_key(self.schema, self.table),),
        ).fetchone()[0]
        if not got:
            raise StoreError(f"{self.target}: run {self.run_id!r} is being written by another session")
        self.started = cur.execute("SELECT clock_timestamp()").fetchone()[0]
        row = cur.execute(
            f"SELECT view_name FROM {_qualified(self.schema, self.runs_table)} WHERE run_id = %s",
            (self.run_id,),
        ).fetchone()
        kind = _relkind(cur, self.schema, self.table)
        if kind is not None and kind != "r":
            raise StoreError(f"{self.target}: {self.schema}.{self.table} exists and is not a table")
        if row is not None:
            if row[0] != self.view:
                raise StoreError(
                    f"{self.target}: run {self.run_id!r} was published behind view {row[0]!r}, not {self.view!r}"
                )
            if not self.replace:
                raise StoreError(
                    f"{self.target}: run {self.run_id!r} was already published ({self.schema}.{self.table}); "
                    "pass replace=True to overwrite it"
                )
            if kind is not None:
                # the published table stays served until publish; stage beside it and swap at publish
                self._staging = validate_identifier(
                    f"{self.table_prefix}__replace_{secrets.token_hex(4)}", "staging table name"
                )
        elif kind is not None:
            comment = cur.execute(
                "SELECT obj_description(%s::regclass, 'pg_class')", (f"{q(self.schema)}.{q(self.table)}",)
            ).fetchone()[0]
            if not (self.replace and isinstance(comment, str) and comment.startswith("fmrec run")):
                raise StoreError(
                    f"{self.target}: table {self.schema}.{self.table} exists but is not a published run "
                    f"of {self.runs_table}; drop it or choose another run id"
                )
            cur.execute(f"DROP TABLE {_qualified(self.schema, self.table)}")  # effective only on COMMIT

    @property
    def conn(self) -> Any:
        if self._conn is None:
            raise StoreError(f"{self.target}: the connection of run {self.run_id} is closed")
        return self._conn

    # -- writing --------------------------------------------------------------

    def _create_table(self, user_kind: IdKind, item_kind: IdKind) -> None:
        self._kinds = (user_kind, item_kind)
        name = _qualified(self.schema, self._staging)
        cur = self.conn.cursor()
        cur.execute(
            f"CREATE TABLE {name} (user_id {_SQL_TYPES[user_kind]} NOT NULL, rank integer NOT NULL, "
            f"item_id {_SQL_TYPES[item_kind]} NOT NULL, score real NOT NULL)"
        )
        cur.execute(f"COMMENT ON TABLE {name} IS 'fmrec run {self.run_id}'")  # run ids are [A-Za-z0-9_]+
        self._created = True

    def _write(self, batch: Batch) -> None:
        su, si = self._seen_kinds
        self._seen_kinds = (su or batch.user_kind, si or batch.item_kind)
        if batch.n_rows == 0:
            return
        try:
            if not self._created:
                self._create_table(batch.user_kind or "int", batch.item_kind or "int")
            assert self._kinds is not None
            uk, ik = self._kinds
            check_id_kinds(self.run_id, batch, self._kinds)
            users, ranks, items, scores = batch.long()
            self._copy(id_column(users, uk, "user IDs"), ranks, id_column(items, ik, "item IDs"), scores)
        except self._psycopg.Error as exc:
            raise self._error("writing run", exc) from None

    def _copy(self, users: np.ndarray, ranks: np.ndarray, items: np.ndarray, scores: np.ndarray) -> None:
        """One binary ``COPY ... FROM STDIN`` for the rows of one batch."""
        assert self._kinds is not None
        sql = (
            f"COPY {_qualified(self.schema, self._staging)} (user_id, rank, item_id, score) "
            "FROM STDIN (FORMAT BINARY, FREEZE)"
        )
        cur = self.conn.cursor()
        with cur.copy(sql) as copy:
            if self._kinds == ("int", "int"):
                copy.write(_COPY_HEADER)
                for start in range(0, len(ranks), _COPY_CHUNK):
                    stop = start + _COPY_CHUNK
                    copy.write(encode_int_rows(users[start:stop], ranks[start:stop], items[start:stop],
                                               scores[start:stop]))
                copy.write(_COPY_TRAILER)
            else:
                uk, ik = self._kinds
                copy.set_types([_SQL_TYPES[uk], "int4", _SQL_TYPES[ik], "float4"])
                for row in zip(users.tolist(), ranks.tolist(), items.tolist(), scores.tolist()):
                    copy.write_row(row)

    # -- publish / abort ------------------------------------------------------

    def _publish(self) -> None:
        psycopg = self._psycopg
        conn = self.conn
        cur = conn.cursor()
        name = _qualified(self.schema, self._staging)
        try:
            if not self._created:
                su, si = self._seen_kinds
                self._create_table(su or "int", si or "int")
            try:
                cur.execute(f"CREATE UNIQUE INDEX ON {name} (user_id, rank)")
            except psycopg.errors.UniqueViolation as exc:
                raise StoreError(
                    f"{self.target}: run {self.run_id} holds a (user_id, rank) pair twice; "
                    "was a user written in two batches?"
                ) from exc
            cur.execute(f"ANALYZE {name}")
            # serialise publishes of this view; waits for another publisher, never for readers
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_lock_key(self.schema, self.view),))

            def flip() -> None:
                _point_view(cur, self.schema, self.view, self._staging)
                if self._staging != self.table:
                    cur.execute(f"DROP TABLE IF EXISTS {_qualified(self.schema, self.table)}")
                    cur.execute(f"ALTER TABLE {name} RENAME TO {q(self.table)}")

            _retry_locked(conn, flip, self.lock_wait, self.schema, self.view, self.target)
            self._record(cur)
            self._prune(cur)
            pause_before_commit_hook(f"run {self.run_id} to {self.target}")
            conn.commit()
        except psycopg.Error as exc:
            raise self._error("publishing run", exc) from None
        self._staging = self.table
        self._created = False
        self._close(rollback=False)
        log.info("published run %s to %s.%s (%d rows, %d users)", self.run_id, self.schema, self.view,
                 self.rows_written, self.users_written)

    def _record(self, cur: Any) -> None:
        from psycopg.types.json import Jsonb

        runs = _qualified(self.schema, self.runs_table)
        cur.execute(f"DELETE FROM {runs} WHERE run_id = %s", (self.run_id,))
        cur.execute(
            f"INSERT INTO {runs} (run_id, started, finished, rows, users, model_checksum, config, published, "
            "view_name, table_name, k, meta) VALUES (%s, %s, clock_timestamp(), %s, %s, %s, %s, true, %s, %s, %s, %s)",
            (self.run_id, self.started, self.rows_written, self.users_written, self.model_checksum,
             None if self.config is None else Jsonb(self.config), self.view, self.table, self.k_max,
             Jsonb(self.meta)),
        )

    def _prune(self, cur: Any) -> None:
        """Drop the tables of this view's runs beyond the newest ``keep_runs`` (same transaction).

        A table that cannot be dropped (another session reads it, or objects
        depend on it) is kept with its run record and tried again by the next
        publish; the publish itself goes on.
        """
        runs = _qualified(self.schema, self.runs_table)
        old = cur.execute(
            f"SELECT run_id, table_name FROM {runs} WHERE view_name = %s "
            "ORDER BY finished DESC, run_id DESC OFFSET %s",
            (self.view, self.keep_runs),
        ).fetchall()
        for run_id, table in old:
            if table == self.table:
                continue
            try:
                with self.conn.transaction():  # a savepoint: a table we cannot drop is kept, not fatal
                    validate_identifier(table, "run table name")
                    # the view is locked until COMMIT: never wait long for a reader of an old table
                    cur.execute(f"SET LOCAL lock_timeout = {_LOCK_TRY_MS}")
                    cur.execute(f"DROP TABLE IF EXISTS {_qualified(self.schema, table)}")
                    cur.execute("SET LOCAL lock_timeout TO DEFAULT")
                    cur.execute(f"DELETE FROM {runs} WHERE run_id = %s", (run_id,))
            except (self._psycopg.Error, FmrecError) as exc:
                log.warning("run %s: keeping table %s.%s of old run %s: %s", self.run_id, self.schema, table,
                            run_id, self._scrub(exc))

    def _abort(self) -> None:
        self._created = False
        self._close(rollback=True)

    def _close(self, rollback: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if rollback and not conn.closed:
                conn.rollback()
        except Exception:  # noqa: BLE001 - closing the connection rolls back anyway
            pass
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass


def encode_int_rows(users: np.ndarray, ranks: np.ndarray, items: np.ndarray, scores: np.ndarray) -> bytes:
    """Binary COPY rows ``(bigint, integer, bigint, real)`` for integer IDs, built with numpy."""
    n = len(ranks)
    rows = np.empty(n, dtype=_ROW_INT)
    rows["n"] = 4
    rows["l1"] = 8
    rows["l2"] = 4
    rows["l3"] = 8
    rows["l4"] = 4
    rows["user"] = users
    rows["rank"] = ranks
    rows["item"] = items
    rows["score"] = scores
    return rows.tobytes()


# --------------------------------------------------------------------------- readers and run management


class _Session:
    """A short read (or rollback) session: connection, schema, scrubber."""

    def __init__(self, target: str, schema: str | None) -> None:
        self.shown = redact_target(target)
        if schema is not None:
            _check_lower(schema, "schema")
        self.psycopg = _import_psycopg()
        self.conn, url_schema, self.scrub = _connect(target, autocommit=False)
        try:
            self.schema = _resolve_schema(self.conn.cursor(), schema, url_schema, self.shown)
            self.conn.rollback()  # callers start their own transaction
        except BaseException:
            self.conn.close()
            raise

    def __enter__(self) -> "_Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.conn.rollback()
        except Exception:  # noqa: BLE001
            pass
        self.conn.close()

    def fail(self, doing: str, exc: BaseException) -> StoreError:
        return StoreError(f"{self.shown}: {doing}: {self.scrub(exc)}")


def _iso(value: Any) -> str:
    return value.isoformat(timespec="microseconds") if hasattr(value, "isoformat") else str(value)


def _run_infos(s: _Session, runs_table: str, view: str | None, run_id: str | None = None) -> list[RunInfo]:
    cur = s.conn.cursor()
    if _relkind(cur, s.schema, runs_table) is None:
        return []
    where, params = [], []
    if view is not None:
        where.append("view_name = %s")
        params.append(view)
    if run_id is not None:
        where.append("run_id = %s")
        params.append(run_id)
    sql = (
        "SELECT run_id, started, finished, rows, users, model_checksum, config, published, view_name, "
        f"table_name, k, meta FROM {_qualified(s.schema, runs_table)}"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY finished DESC, run_id DESC"
    )
    rows = cur.execute(sql, params).fetchall()
    sources: dict[str, str | None] = {}
    out = []
    for rid, started, finished, n_rows, users, checksum, config, published, vname, table, k, meta in rows:
        if vname not in sources:
            sources[vname] = _view_source(cur, s.schema, vname)
        info_meta = dict(meta or {})
        if checksum is not None:
            info_meta["model_checksum"] = checksum
        if config is not None:
            info_meta["config"] = config
        out.append(
            RunInfo(
                run_id=rid, started=_iso(started), finished=_iso(finished), rows=int(n_rows), users=int(users),
                published=bool(published), table=table, view=vname, k=None if k is None else int(k),
                current=sources.get(vname) == table, meta=info_meta,
            )
        )
    return out


def list_postgres_runs(
    target: str, *, schema: str | None = None, view: str | None = None, runs_table: str = "fmrec_runs"
) -> list[RunInfo]:
    """The runs recorded in the database of ``target``, newest publish first.

    ``current`` is True for the run its view reads now.  ``meta`` holds
    ``model_checksum`` and ``config`` when they were recorded.
    """
    _check_lower(runs_table, "runs_table")
    if view is not None:
        _check_lower(view, "view")
    with _Session(target, schema) as s:
        try:
            return _run_infos(s, runs_table, view)
        except s.psycopg.Error as exc:
            raise s.fail("cannot list runs", exc) from None


def rollback_postgres(
    target: str, run_id: str, *, schema: str | None = None, runs_table: str = "fmrec_runs",
    lock_wait: float = 300.0,
) -> RunInfo:
    """Serve the kept run ``run_id`` again: its view reads its table, in one transaction.

    ``lock_wait``: seconds to wait for readers' transactions to release the view
    (tried in short steps, so new readers are never held up for long).
    """
    validate_run_id(run_id)
    _check_lower(runs_table, "runs_table")
    with _Session(target, schema) as s:
        try:
            cur = s.conn.cursor()
            infos = _run_infos(s, runs_table, None, run_id)
            if not infos:
                raise StoreError(f"{s.shown}: no run {run_id!r} in {s.schema}.{runs_table} (never published or pruned)")
            info = infos[0]
            assert info.view is not None and info.table is not None
            view = _check_lower(info.view, "view")
            table = validate_identifier(info.table, "run table name")
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_lock_key(s.schema, view),))
            if _relkind(cur, s.schema, table) != "r":
                raise StoreError(f"{s.shown}: run {run_id!r} has no table {s.schema}.{table} any more")
            _retry_locked(s.conn, lambda: _point_view(cur, s.schema, view, table), lock_wait, s.schema, view,
                          s.shown)
            pause_before_commit_hook(f"rollback to run {run_id} in {s.shown}")
            s.conn.commit()
            log.debug("rolled %s.%s back to run %s", s.schema, view, run_id)
            return _run_infos(s, runs_table, None, run_id)[0]
        except s.psycopg.Error as exc:
            raise s.fail(f"cannot roll back to run {run_id}", exc) from None


def read_postgres_topk(
    target: str,
    run_id: str | None = None,
    *,
    schema: str | None = None,
    view: str = "recommendations",
    runs_table: str = "fmrec_runs",
    k: int | None = None,
) -> TopK:
    """Read the run behind ``view`` (or the kept run ``run_id``) back into a :class:`TopK`.

    Users come in ascending ID order (PostgreSQL has no insertion order);
    items are placed by rank.  Reads in one REPEATABLE READ transaction.
    """
    _check_lower(view, "view")
    _check_lower(runs_table, "runs_table")
    with _Session(target, schema) as s:
        try:
            cur = s.conn.cursor()
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            if run_id is not None:
                infos = _run_infos(s, runs_table, None, validate_run_id(run_id))
                table = infos[0].table if infos else None
                if table is None or _relkind(cur, s.schema, table) != "r":
                    raise StoreError(f"{s.shown}: run {run_id!r} has no table (never published, aborted or pruned)")
                source = _qualified(s.schema, validate_identifier(table, "run table name"))
            else:
                if _relkind(cur, s.schema, view) != "v":
                    raise StoreError(f"{s.shown}: no view {s.schema}.{view}: nothing published yet")
                source = _qualified(s.schema, view)
            rows = cur.execute(f"SELECT user_id, rank, item_id, score FROM {source} ORDER BY user_id, rank").fetchall()
        except s.psycopg.Error as exc:
            raise s.fail("cannot read recommendations", exc) from None

    return topk_from_rows(rows, k=k, where=redact_target(target))
