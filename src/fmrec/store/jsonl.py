"""JSON lines sink and reader.

Two layouts, one line per user:

``fmrec`` (default)::

    {"user_id": 1, "items": [50, 98, ...], "scores": [2.672308, 2.6383662, ...]}

best first, padding removed; IDs are JSON integers when they are integers and
strings otherwise; scores are the shortest decimals that round-trip the float32
values.

``sagemaker`` -- the hosted k-NN verbose output (``FORMATS.md`` section 4)::

    {"predicted_label": 50.0, "labels": [..., 98.0, 50.0], "distances": [..., 2.6383662, 2.672308]}

labels are item IDs as floats and the order is ASCENDING score, so the best item
is the LAST one.  The layout has no user id: lines are in input order.
``predicted_label`` (a majority vote of the neighbours' labels in the hosted
service, meaningless for recommendation) is written as the best item's label,
or ``null`` for a user with no items.  Only integer item IDs (below 2**53, so
that they survive the float) can be written in this layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fmrec.errors import ConfigError, DataError
from fmrec.store._base import Batch, Sink, f32_shortest, json_id
from fmrec.store._files import StagedFile
from fmrec.topk import TopK

__all__ = ["JsonlSink", "read_jsonl", "JSONL_FORMATS"]

#: Layouts the JSON lines sink writes (``None`` means ``"fmrec"``).
JSONL_FORMATS = ("fmrec", "sagemaker")

_MAX_EXACT_FLOAT_INT = 2**53


class JsonlSink(Sink):
    """Write top-k lists as JSON lines; publish by renaming a temp file onto ``path``.

    Parameters
    ----------
    path : target file (``*.jsonl`` or ``*.json``; the content is JSON lines either way).
        Missing parent folders are created.
    run_id : run id (``[A-Za-z0-9_]+``); default a UTC timestamp plus a random suffix.
    format : ``None``/``"fmrec"`` or ``"sagemaker"`` (see the module docstring).
    """

    def __init__(self, path: str | os.PathLike[str], run_id: str | None = None, *, format: str | None = None) -> None:
        fmt = "fmrec" if format is None else format
        if fmt not in JSONL_FORMATS:
            raise ConfigError(f"unknown JSON lines format {format!r} for {os.fspath(path)}: use 'fmrec' or 'sagemaker'")
        super().__init__(os.fspath(path), run_id)
        self.format = fmt
        self._staged = StagedFile(path, self.run_id)

    def _write(self, batch: Batch) -> None:
        if self.format == "sagemaker":
            lines = self._sagemaker_lines(batch)
        else:
            lines = self._fmrec_lines(batch)
        if lines:
            self._staged.file.write(("\n".join(lines) + "\n").encode("utf-8"))

    def _fmrec_lines(self, batch: Batch) -> list[str]:
        lines = []
        int_items = batch.item_ids.dtype.kind in "iu"
        for r in range(batch.n_users):
            c = int(batch.counts[r])
            row = batch.item_ids[r, :c]
            items = row.tolist() if int_items else [json_id(v) for v in row]
            obj = {"user_id": json_id(batch.user_ids[r]), "items": items, "scores": f32_shortest(batch.scores[r, :c])}
            lines.append(json.dumps(obj))
        return lines

    def _sagemaker_lines(self, batch: Batch) -> list[str]:
        if batch.item_kind == "str":
            raise ConfigError(
                f"format 'sagemaker' needs integer item IDs (its labels are floats); "
                f"{self.target} got string item IDs: use the default 'fmrec' format"
            )
        lines = []
        for r in range(batch.n_users):
            c = int(batch.counts[r])
            items = [int(v) for v in batch.item_ids[r, :c][::-1]]
            if any(abs(v) > _MAX_EXACT_FLOAT_INT for v in items):
                raise ConfigError(
                    f"format 'sagemaker' writes item IDs as floats, exact only below 2**53; "
                    f"user {batch.user_ids[r]!r} has a larger item ID"
                )
            labels = [float(v) for v in items]
            obj = {
                "predicted_label": labels[-1] if labels else None,
                "labels": labels,
                "distances": f32_shortest(batch.scores[r, :c][::-1]),
            }
            lines.append(json.dumps(obj))
        return lines

    def _publish(self) -> None:
        self._staged.commit()

    def _abort(self) -> None:
        self._staged.discard()


def _as_item(v: Any, path: Path, line: int) -> int | str:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise DataError("item IDs must be integers or strings", path=path, line=line, value=v)
    if isinstance(v, float):
        if not v.is_integer():
            raise DataError("a float item label is not an integer", path=path, line=line, value=v)
        return int(v)
    return v


def read_jsonl(
    path: str | os.PathLike[str],
    *,
    user_ids: Sequence[Any] | np.ndarray | None = None,
    k: int | None = None,
) -> TopK:
    """Read a JSON lines file in the ``fmrec`` or ``sagemaker`` layout into a :class:`TopK`.

    Sagemaker lines are reversed to best first and their float labels turned
    into integer item IDs.  Those lines carry no user id, so their users are
    the 1-based line numbers (1, 2, ...) unless ``user_ids`` (one per line) is
    given; ``user_ids`` also replaces the ids of ``fmrec`` lines.

    Item IDs come back as int64 padded with -1 when every item is an integer,
    otherwise as an object array padded with None.  ``k`` defaults to the
    longest list; shorter rows are padded (scores ``-inf``).  Blank lines are
    skipped.  Raises :class:`~fmrec.errors.DataError` naming the line on bad input.
    """
    p = Path(path)
    users: list[Any] = []
    rows: list[list[Any]] = []
    scores: list[list[float]] = []
    try:
        fh = open(p, "rb")  # decoded line by line, so a bad byte is reported on its own line
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", path=p) from exc
    with fh:
        n_line = 0
        for n_line, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
                                path=p, line=n_line) from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"not valid JSON ({exc.msg} at column {exc.colno})", path=p, line=n_line) from exc
            if not isinstance(obj, dict):
                raise DataError("a line must be a JSON object", path=p, line=n_line)
            if "labels" in obj and "distances" in obj:
                items_raw, dist = obj["labels"], obj["distances"]
                if not isinstance(items_raw, list) or not isinstance(dist, list):
                    raise DataError("'labels' and 'distances' must be lists", path=p, line=n_line)
                items_raw, dist = items_raw[::-1], dist[::-1]
                user = len(users) + 1
            elif "items" in obj and "scores" in obj:
                items_raw, dist = obj["items"], obj["scores"]
                if not isinstance(items_raw, list) or not isinstance(dist, list):
                    raise DataError("'items' and 'scores' must be lists", path=p, line=n_line)
                if "user_id" not in obj:
                    raise DataError("missing 'user_id'", path=p, line=n_line)
                user = obj["user_id"]
            else:
                raise DataError(
                    "unknown layout: expected keys user_id/items/scores or labels/distances",
                    path=p,
                    line=n_line,
                )
            if len(items_raw) != len(dist):
                raise DataError(
                    f"{len(items_raw)} items but {len(dist)} scores", path=p, line=n_line
                )
            try:
                row_scores = [float(s) for s in dist]
            except (TypeError, ValueError) as exc:
                raise DataError("scores must be numbers", path=p, line=n_line) from exc
            users.append(user)
            rows.append([_as_item(v, p, n_line) for v in items_raw])
            scores.append(row_scores)

    n = len(users)
    longest = max((len(r) for r in rows), default=0)
    kk = longest if k is None else int(k)
    if kk < longest:
        raise DataError(f"a line holds {longest} items, more than k={kk}", path=p)

    if user_ids is not None:
        uid = np.asarray(user_ids)
        if uid.shape != (n,):
            raise DataError(f"user_ids has shape {uid.shape} but the file has {n} lines", path=p)
    elif all(isinstance(u, int) and not isinstance(u, bool) for u in users):
        uid = np.asarray(users, dtype=np.int64)
    else:
        uid = np.empty(n, dtype=object)
        uid[:] = users

    all_int = all(isinstance(v, int) for r in rows for v in r)
    if all_int:
        item_arr = np.full((n, kk), -1, dtype=np.int64)
    else:
        item_arr = np.full((n, kk), None, dtype=object)
    score_arr = np.full((n, kk), -np.inf, dtype=np.float32)
    for r, (items, sc) in enumerate(zip(rows, scores)):
        c = len(items)
        if c:
            item_arr[r, :c] = items
            score_arr[r, :c] = sc
    return TopK(uid, item_arr, score_arr)
