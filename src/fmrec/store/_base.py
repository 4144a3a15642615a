"""The sink contract shared by every store backend.

A sink takes :class:`~fmrec.topk.TopK` batches with :meth:`Sink.write`, any
number of times, and then either :meth:`Sink.publish` (one atomic step: a
rename or one transaction) or :meth:`Sink.abort` (staged output removed, the
previously published output untouched).  Used as a context manager a sink
publishes on normal exit and aborts when the block raises.

This module also holds the helpers every backend shares: run ids, SQL
identifier validation and the normalisation of a ``TopK`` batch into masks,
counts and ID kinds.
"""

from __future__ import annotations

import re
import secrets
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from fmrec.errors import ConfigError, DataError, FmrecError, StoreError

if TYPE_CHECKING:
    from fmrec.topk import TopK

__all__ = [
    "Sink",
    "new_run_id",
    "validate_run_id",
    "validate_identifier",
    "IdKind",
]

IdKind = Literal["int", "str"]

_RUN_ID_RE = re.compile(r"[A-Za-z0-9_]+")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Longest accepted run id.  ``fmrec_run_`` + 48 characters stays within the
#: 63-byte identifier limit of PostgreSQL, so one run id works for every sink.
MAX_RUN_ID_LENGTH = 48
#: Longest accepted SQL identifier (PostgreSQL's limit; SQLite has none).
MAX_IDENTIFIER_LENGTH = 63


def new_run_id() -> str:
    """A fresh run id: UTC timestamp plus a short random suffix.

    Example: ``20241128T201600Z_3f9a1c``.  Ids sort by start time (to the
    second); the suffix keeps runs started in the same second apart.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}_{secrets.token_hex(3)}"


def validate_run_id(run_id: str | None) -> str:
    """Return ``run_id`` (or a fresh one when ``None``) after checking ``[A-Za-z0-9_]+``.

    Raises :class:`~fmrec.errors.ConfigError` with a one-line message otherwise.
    """
    if run_id is None:
        return new_run_id()
    if not isinstance(run_id, str) or not _RUN_ID_RE.fullmatch(run_id):
        raise ConfigError(f"invalid run_id {run_id!r}: use letters, digits and '_' only ([A-Za-z0-9_]+)")
    if len(run_id) > MAX_RUN_ID_LENGTH:
        raise ConfigError(f"invalid run_id {run_id!r}: longer than {MAX_RUN_ID_LENGTH} characters")
    return run_id


def validate_identifier(name: Any, what: str = "identifier") -> str:
    """Return ``name`` if it is a safe SQL identifier, else raise ConfigError.

    Accepted: ``[A-Za-z_][A-Za-z0-9_]*``, at most 63 characters, not starting
    with ``sqlite_`` (reserved by SQLite).  Anything else -- quotes, spaces,
    semicolons, dots -- is rejected, so names can never carry SQL.
    """
    if not isinstance(name, str) or not _IDENT_RE.fullmatch(name):
        raise ConfigError(
            f"invalid {what} {name!r}: must match [A-Za-z_][A-Za-z0-9_]* (letters, digits, '_')"
        )
    if len(name) > MAX_IDENTIFIER_LENGTH:
        raise ConfigError(f"invalid {what} {name!r}: longer than {MAX_IDENTIFIER_LENGTH} characters")
    if name.lower().startswith("sqlite_"):
        raise ConfigError(f"invalid {what} {name!r}: names starting with 'sqlite_' are reserved")
    return name


def quote_identifier(name: str) -> str:
    """Double-quote an already validated identifier."""
    return '"' + name + '"'


def utc_now_iso() -> str:
    """Current UTC time as ISO 8601 with microseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def f32_shortest(values: np.ndarray) -> list[float]:
    """Python floats holding the shortest decimal that round-trips each float32.

    ``float(np.float32(2.672308))`` is ``2.6723079681396484``; this returns
    ``2.672308``, which reads back to the same float32 bit pattern.
    """
    return [float(str(v)) for v in np.asarray(values, dtype=np.float32)]


def _is_int_like(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def id_kind(values: np.ndarray, what: str) -> IdKind | None:
    """Kind of an ID array: ``"int"``, ``"str"`` or ``None`` (empty object array).

    Integer dtypes are ``"int"``; unicode/bytes dtypes ``"str"``; object arrays
    are ``"int"`` when every value is an integer, otherwise ``"str"`` (values must
    be ints or strings).  Raises StoreError for floats, bools or other values.
    """
    kind = values.dtype.kind
    if kind in "iu":
        return "int"
    if kind in "US":
        return "str"
    if kind == "O":
        if values.size == 0:
            return None
        flat = values.ravel()
        all_int = True
        for v in flat:
            if _is_int_like(v):
                continue
            if isinstance(v, str):
                all_int = False
                continue
            raise StoreError(
                f"{what} must be integers or strings, found {type(v).__name__} value {v!r}"
            )
        return "int" if all_int else "str"
    raise StoreError(f"{what} must be integers or strings, got an array of dtype {values.dtype}")


def id_column(values: np.ndarray, kind: IdKind, what: str) -> np.ndarray:
    """Convert a 1-D ID array to ``int64`` (kind ``"int"``) or an object array of ``str``."""
    if kind == "int":
        if values.dtype.kind in "iu":
            return values.astype(np.int64, copy=False)
        if values.dtype.kind == "O" and all(_is_int_like(v) for v in values):
            return np.asarray([int(v) for v in values], dtype=np.int64)
        raise StoreError(f"{what} changed type within the run: expected integers, got {values[:3]!r}")
    if values.dtype.kind == "S":
        return np.asarray([v.decode("utf-8") for v in values], dtype=object)
    return np.asarray([str(v) for v in values], dtype=object)


def json_id(v: Any) -> int | str:
    """An ID as a JSON-ready value: ``int`` when integer, else ``str``."""
    if _is_int_like(v):
        return int(v)
    if isinstance(v, bytes):
        return v.decode("utf-8")
    return str(v)


@dataclass
class Batch:
    """A validated ``TopK`` batch with its padding mask.

    ``mask[r, j]`` is True for real items; real items are always the leading
    ``counts[r]`` entries of a row.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    scores: np.ndarray
    counts: np.ndarray
    mask: np.ndarray
    user_kind: IdKind | None
    item_kind: IdKind | None

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def n_rows(self) -> int:
        return int(self.counts.sum())

    @property
    def k(self) -> int:
        return int(self.scores.shape[1])

    def long(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Long format ``(user_id, rank, item_id, score)``, one entry per real item.

        ``rank`` is int32 starting at 1; ``score`` float32; users repeated in
        batch order, items best first.
        """
        users = np.repeat(self.user_ids, self.counts)
        ranks = np.broadcast_to(np.arange(1, self.k + 1, dtype=np.int32), self.scores.shape)[self.mask]
        return users, ranks, self.item_ids[self.mask], self.scores[self.mask]


def normalize_batch(topk: Any) -> Batch:
    """Validate a ``TopK`` (or anything with ``user_ids``, ``item_ids``, ``scores``).

    Checks shapes, that padding (``-inf``) only trails real scores, that real
    scores are best first, and that real item IDs are not ``None``.  Raises
    :class:`~fmrec.errors.StoreError` with a one-line message.
    """
    try:
        user_ids = np.asarray(topk.user_ids)
        item_ids = np.asarray(topk.item_ids)
        scores = np.asarray(topk.scores, dtype=np.float32)
    except AttributeError as exc:
        raise StoreError(f"sinks take TopK batches, got {type(topk).__name__}") from exc
    if user_ids.ndim != 1 or item_ids.ndim != 2 or scores.shape != item_ids.shape or (
        item_ids.shape[0] != user_ids.shape[0]
    ):
        raise StoreError(
            f"TopK shapes disagree: users {user_ids.shape}, items {item_ids.shape}, scores {scores.shape}"
        )
    n, k = scores.shape
    finite = np.isfinite(scores)
    if finite.all():  # every list full (the usual case): four passes instead of nine
        if k > 1 and (scores[:, 1:] > scores[:, :-1]).any():
            bad = int(np.nonzero((scores[:, 1:] > scores[:, :-1]).any(axis=1))[0][0])
            raise StoreError(f"TopK row {bad} (user {user_ids[bad]!r}): scores are not best first")
        return _batch(user_ids, item_ids, scores, np.full(n, k, np.int64), finite)
    odd = ~finite & (scores != -np.inf)
    if odd.any():
        bad = int(np.nonzero(odd.any(axis=1))[0][0])
        raise StoreError(
            f"TopK row {bad} (user {user_ids[bad]!r}): NaN or +inf score; only -inf marks padding"
        )
    counts = finite.sum(axis=1).astype(np.int64) if k else np.zeros(n, np.int64)
    mask = np.arange(k)[None, :] < counts[:, None]
    if not np.array_equal(mask, finite):
        bad = int(np.nonzero((mask != finite).any(axis=1))[0][0])
        raise StoreError(
            f"TopK row {bad} (user {user_ids[bad]!r}): padding (-inf) before a real score; "
            "real items must come first"
        )
    if k > 1:
        rising = (scores[:, 1:] > scores[:, :-1]) & mask[:, 1:]
        if rising.any():
            bad = int(np.nonzero(rising.any(axis=1))[0][0])
            raise StoreError(f"TopK row {bad} (user {user_ids[bad]!r}): scores are not best first")
    return _batch(user_ids, item_ids, scores, counts, mask)


def _batch(user_ids: np.ndarray, item_ids: np.ndarray, scores: np.ndarray, counts: np.ndarray,
           mask: np.ndarray) -> Batch:
    """The ID checks of :func:`normalize_batch`, then the Batch."""
    user_kind = id_kind(user_ids, "user IDs")
    if item_ids.dtype.kind == "O":
        real = item_ids[mask]
        if any(v is None for v in real):
            raise StoreError("TopK holds a None item ID among real (finite-score) items")
        item_kind = id_kind(real, "item IDs")
    else:
        item_kind = id_kind(item_ids, "item IDs")
    if user_ids.dtype.kind == "O" and any(v is None for v in user_ids):
        raise StoreError("TopK holds a None user ID")
    return Batch(user_ids, item_ids, scores, counts, mask, user_kind, item_kind)


def topk_from_rows(rows: list[tuple[Any, ...]], *, k: int | None = None, where: str | None = None) -> "TopK":
    """:func:`topk_from_long` of database rows ``(user_id, rank, item_id, score)``: an ID
    column of Python ints becomes int64, anything else stays object (string IDs)."""

    def col(i: int) -> np.ndarray:
        vals = [row[i] for row in rows]
        if all(isinstance(v, int) for v in vals):
            return np.asarray(vals, dtype=np.int64)
        out = np.empty(len(vals), dtype=object)
        out[:] = vals
        return out

    return topk_from_long(col(0), col(1).astype(np.int64), col(2),
                          np.asarray([row[3] for row in rows], dtype=np.float32), k=k, where=where)


def topk_from_long(
    users: np.ndarray,
    ranks: np.ndarray,
    items: np.ndarray,
    scores: np.ndarray,
    *,
    k: int | None = None,
    where: str | None = None,
) -> "TopK":
    """Build a :class:`~fmrec.topk.TopK` from long-format columns.

    Users come in order of first appearance; each item goes to column
    ``rank - 1``.  Ranks of every user must be exactly ``1..n``.  Item IDs are
    int64 padded with -1 when integer, else object padded with None.  Raises
    :class:`~fmrec.errors.DataError` (naming ``where``) on inconsistent input.
    """
    import pandas as pd

    from fmrec.topk import TopK

    ranks = np.asarray(ranks, dtype=np.int64)
    codes, uniques = pd.factorize(users, sort=False)
    n = len(uniques)
    longest = int(ranks.max()) if ranks.size else 0
    kk = longest if k is None else int(k)
    if kk < longest:
        raise DataError(f"ranks go up to {longest}, more than k={kk}", path=where)
    if ranks.size and ranks.min() < 1:
        raise DataError(f"rank {int(ranks.min())} is below 1", path=where)
    counts = np.bincount(codes, minlength=n)
    max_rank = np.zeros(n, dtype=np.int64)
    np.maximum.at(max_rank, codes, ranks)
    filled = np.zeros((n, kk), dtype=bool)
    filled[codes, ranks - 1] = True
    if not np.array_equal(counts, max_rank) or int(filled.sum()) != len(ranks):
        bad = int(np.nonzero((counts != max_rank) | (filled.sum(axis=1) != counts))[0][0])
        raise DataError(f"ranks of user {uniques[bad]!r} are not exactly 1..n", path=where)
    if items.dtype.kind == "O":
        item_arr = np.full((n, kk), None, dtype=object)
    else:
        item_arr = np.full((n, kk), -1, dtype=np.int64)
    score_arr = np.full((n, kk), -np.inf, dtype=np.float32)
    item_arr[codes, ranks - 1] = items
    score_arr[codes, ranks - 1] = scores
    if users.dtype.kind == "O":
        uid = np.empty(n, dtype=object)
        uid[:] = list(uniques)
    else:
        uid = np.asarray(uniques, dtype=np.int64)
    return TopK(uid, item_arr, score_arr)


_OPEN, _PUBLISHED, _ABORTED = "open", "published", "aborted"
_S = TypeVar("_S", bound="Sink")



def check_id_kinds(run_id: str, batch: "Batch", kinds: tuple[str, str]) -> None:
    """A run's table fixes its ID types at the first batch; refuse a batch of the other type."""
    for what, kind, expected in (("user IDs", batch.user_kind, kinds[0]), ("item IDs", batch.item_kind, kinds[1])):
        if kind is not None and kind != expected:
            raise StoreError(
                f"{what} changed type within run {run_id}: the table holds "
                f"{'integers' if expected == 'int' else 'strings'}, this batch has {kind}s"
            )

class Sink:
    """Base class of every sink: staged writes, then one atomic publish.

    Subclasses implement :meth:`_write`, :meth:`_publish` and :meth:`_abort`.
    The public methods keep the state machine (``open`` -> ``published`` or
    ``aborted``), the counters and the error wrapping.

    Attributes
    ----------
    run_id : str
        This run's id (``[A-Za-z0-9_]+``).
    target : str
        Where the output is published (path or URL).
    rows_written : int
        Real (user, item) rows written so far; padding is not counted.
    users_written : int
        Users written so far, including users whose list is empty.
    k_max : int
        Largest ``k`` among the batches written.

    Implementing a backend (e.g. PostgreSQL): subclass, call
    ``super().__init__(target, run_id)``, stage in ``_write(batch)`` (a
    validated :class:`Batch`; ``batch.long()`` gives the long-format columns),
    make it visible in one atomic step in ``_publish()``, and remove the staged
    output in ``_abort()`` (also called when ``_publish`` fails).  Register the
    URL scheme with :func:`fmrec.store.register_scheme`.
    """

    run_id: str
    target: str

    def __init__(self, target: str, run_id: str | None = None) -> None:
        self.target = target
        self.run_id = validate_run_id(run_id)
        self.rows_written = 0
        self.users_written = 0
        self.k_max = 0
        self._state = _OPEN

    # -- public API ---------------------------------------------------------

    @property
    def state(self) -> str:
        """``"open"``, ``"published"`` or ``"aborted"``."""
        return self._state

    def write(self, topk: Any) -> None:
        """Stage one ``TopK`` batch (best first, padding dropped)."""
        if self._state != _OPEN:
            raise StoreError(f"cannot write to {self.target}: run {self.run_id} is already {self._state}")
        batch = normalize_batch(topk)
        try:
            self._write(batch)
        except FmrecError:
            raise
        except Exception as exc:
            raise StoreError(f"writing run {self.run_id} to {self.target} failed: {_one_line(exc)}") from exc
        self.rows_written += batch.n_rows
        self.users_written += batch.n_users
        self.k_max = max(self.k_max, batch.k)

    def publish(self) -> None:
        """Make the staged output the published output, in one atomic step.

        On failure the staged output is removed and the previously published
        output is left as it was; the error is raised as StoreError.
        """
        if self._state != _OPEN:
            raise StoreError(f"cannot publish run {self.run_id} to {self.target}: it is already {self._state}")
        try:
            self._publish()
        except BaseException as exc:
            self._state = _ABORTED
            try:
                self._abort()
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
            if isinstance(exc, FmrecError) or not isinstance(exc, Exception):
                raise
            raise StoreError(f"publishing run {self.run_id} to {self.target} failed: {_one_line(exc)}") from exc
        self._state = _PUBLISHED

    def abort(self) -> None:
        """Remove the staged output; the published output stays untouched.

        Does nothing when the run is already published or aborted.
        """
        if self._state != _OPEN:
            return
        self._state = _ABORTED
        self._abort()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if self._state != _OPEN:
            return False
        if exc_type is None:
            self.publish()
        else:
            try:
                self.abort()
            except Exception as abort_exc:  # noqa: BLE001 - keep the original error
                warnings.warn(f"aborting run {self.run_id} failed: {abort_exc}", RuntimeWarning, stacklevel=2)
        return False

    def __del__(self) -> None:
        # Best effort: never leave staged output behind for a forgotten sink.
        try:
            if getattr(self, "_state", None) == _OPEN:
                self.abort()
        except Exception:  # noqa: BLE001
            pass

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(target={self.target!r}, run_id={self.run_id!r}, "
            f"state={self._state!r}, users_written={self.users_written}, rows_written={self.rows_written})"
        )

    # -- backend hooks ------------------------------------------------------

    def _write(self, batch: Batch) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _publish(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _abort(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")
