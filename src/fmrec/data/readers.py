"""Read interaction files (MovieLens, CSV/TSV with a header, Parquet) into ``Interactions``.

Policies (one place, so the CLI and the docs can point here):

* **Formats.**  ``format=None`` detects the format: ``.parquet``/``.pq`` (or the
  ``PAR1`` magic bytes) is Parquet; anything else is delimited text.  A delimited
  file is *headerless* (MovieLens ``u.data`` style: user, item, rating, timestamp
  by position) when every field of its first line is a number, otherwise its
  first line is a header.  Files named like MovieLens rating files (``u.data``,
  ``u1.base`` .. ``u5.test``, ``ua.base``, ``ub.test``, ``ratings.dat``) and
  ``format="movielens"`` *must* be headerless; a header row there is an error.
  ``.recordio``/``.rec`` (or the RecordIO magic ``0A 23 D7 CE``) and
  ``format="recordio"`` are RecordIO-protobuf FM training rows, read by
  :func:`fmrec.interop.recordio.read_recordio_interactions` (user column + item
  column per row, label as rating; ``recordio_users`` = number of user columns).
* **Delimiter.**  ``sep`` wins when given.  Otherwise the first line is searched for
  ``::`` (ml-1m), tab, comma, ``|`` and ``;``; when several occur, the one whose
  count is the same on the first lines wins (then the one occurring most, then
  that order).  Every line must have as many fields as the first; the first line
  that does not is named in the error.
* **Encoding.**  UTF-8 only (a UTF-8 byte-order mark is skipped).  Latin-1 or other
  bytes are an error naming the line; they are never guessed.
* **Lines.**  Line numbers are 1-based file lines; a header is line 1.  CRLF and LF
  endings both work.  Blank lines at the end of a file are ignored; a blank line
  between rows is an error (so every reported line number is exact), as is a
  quoted field that spans lines.
* **IDs** from text files are read as text, surrounding whitespace stripped.  A
  column becomes ``int64`` only when *every* value is an integer literal without
  leading zeros (``-?[1-9][0-9]*`` or ``0``) that fits in 64 bits; otherwise all of
  its values stay strings, so ``"007"`` is never turned into ``7``.  Parquet files
  and DataFrames keep their own column types.
* **Ratings** may be any finite number (negative and fractional included);
  missing, non-numeric, NaN or infinite ratings are errors.  A file without a
  rating column gives implicit data.  Validation of IDs, ratings, timestamps and
  duplicates is :meth:`Interactions.from_frame`'s; ``duplicates`` is passed on
  (``"error"`` by default: a repeated (user, item) pair names both lines).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any, Callable, Literal, Union

import numpy as np
import pandas as pd

from fmrec.data._ids import IdMap
from fmrec.data.interactions import DuplicatePolicy, Interactions
from fmrec.errors import ConfigError, DataError

__all__ = ["read_interactions", "read_item_names", "FORMATS", "DELIMITERS"]

PathLike = Union[str, Path]
Format = Literal["csv", "tsv", "movielens", "parquet", "recordio"]

#: Accepted values of ``format``.
FORMATS: tuple[str, ...] = ("csv", "tsv", "movielens", "parquet", "recordio")
#: Delimiters tried, in order of preference, when ``sep`` is not given.
DELIMITERS: tuple[str, ...] = ("::", "\t", ",", "|", ";")

_INT_LITERAL = r"-?[1-9][0-9]*|0"
_MOVIELENS_NAME = re.compile(r"^(u\.data|u[1-5]\.(base|test)|u[ab]\.(base|test)|ratings\.dat)$", re.IGNORECASE)
_PARQUET_EXT = (".parquet", ".pq")
_HEADERLESS_NAMES = ("user", "item", "rating", "timestamp")
_SNIFF_LINES = 50
_UNIT_SEP = "\x1f"

# Header names recognised for each role, compared after lower-casing and removing "_", "-", " ".
_ALIASES: dict[str, tuple[str, ...]] = {
    "user": ("userid", "user", "uid", "customerid"),
    "item": ("itemid", "item", "movieid", "movie", "iid", "productid"),
    "rating": ("rating", "ratings", "score"),
    "timestamp": ("timestamp", "time", "ts", "unixtime"),
}


def _norm_name(name: str) -> str:
    return re.sub(r"[\s_\-]", "", str(name)).lower()


def _sep_label(sep: str) -> str:
    return {"\t": "tab", ",": "','", "::": "'::'", "|": "'|'", ";": "';'"}.get(sep, repr(sep))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------- raw file access
def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataError("file not found", path=path)
    if path.is_dir():
        raise DataError("is a folder, not a file (name the ratings file, e.g. u.data or ratings.csv)", path=path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror or exc}", path=path) from None
    if len(data) == 0:
        raise DataError("empty file (0 bytes)", path=path)
    return data


def _check_utf8(data: bytes, path: Path) -> None:
    """Raise a DataError naming the line of the first byte that is not UTF-8."""
    if data.isascii():
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        start = data.rfind(b"\n", 0, exc.start) + 1
        end = data.find(b"\n", exc.start)
        text = data[start : len(data) if end < 0 else end].rstrip(b"\r")
        raise DataError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {exc.start - start + 1}); "
            "re-encode the file as UTF-8",
            path=path,
            line=line,
            value=text.decode("utf-8", "backslashreplace"),
        ) from None


def _first_lines(data: bytes, n: int) -> list[str]:
    """The first ``n`` non-blank lines (decoded, line endings stripped)."""
    out: list[str] = []
    for raw in data.split(b"\n", 4 * n)[: 4 * n]:
        line = raw.rstrip(b"\r").decode("utf-8")
        if line:
            out.append(line)
            if len(out) >= n:
                break
    return out


def _sniff_sep(lines: list[str], path: Path) -> str:
    first = lines[0]
    found = [d for d in DELIMITERS if d in first]
    if not found:
        raise DataError(
            "cannot detect the delimiter: the first line has no tab, ',', '::', '|' or ';' "
            "(pass sep= to name it)",
            path=path,
            line=1,
            value=first,
        )
    if len(found) == 1:
        return found[0]

    def score(d: str) -> tuple[int, int, int]:
        counts = [line.count(d) for line in lines]
        consistent = int(all(c == counts[0] for c in counts))
        return (consistent, counts[0], -DELIMITERS.index(d))

    return max(found, key=score)


# ------------------------------------------------------------------- delimited parsing
class _Table:
    """Parsed delimited text: field names, data columns (as str) and the first data line."""

    def __init__(self, names: list[str], columns: dict[int, np.ndarray], first_line: int, header: bool) -> None:
        self.names = names
        self.columns = columns
        self.first_line = first_line
        self.header = header


def _field_error(path: Path, line: int, expected: int, found: int, sep: str, text: str, last: bool) -> DataError:
    if last and found < expected:
        msg = f"truncated last line: expected {expected} fields separated by {_sep_label(sep)}, found {found}"
    else:
        msg = f"expected {expected} fields separated by {_sep_label(sep)}, found {found} (wrong delimiter?)"
    return DataError(msg, path=path, line=line, value=text)


def _scan_fast(data: bytes, one: str, sep: str, path: Path) -> tuple[list[str], int, int]:
    """Validate the line structure of quote-free text split by the one-character ``one``.

    ``sep`` is the user's delimiter (``one`` replaces it when it has several
    characters).  Returns (first line's fields, number of lines to parse, expected
    fields).  Vectorised: no Python loop over lines.
    """
    a = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(a == 10)
    starts = np.concatenate([[0], nl + 1]).astype(np.int64)
    ends = np.concatenate([nl, [a.size]]).astype(np.int64)
    if starts[-1] == a.size:  # the file ends with a newline
        starts, ends = starts[:-1], ends[:-1]
    n_lines = starts.size
    crs = np.flatnonzero(a == 13)
    bare = crs[(crs + 1 < a.size) & (a[np.minimum(crs + 1, a.size - 1)] != 10)]
    if bare.size:  # pandas would end a row there; refuse rather than disagree about lines
        i = int(np.searchsorted(nl, bare[0]))
        raise DataError(
            "carriage return inside a line (old Mac line endings?); convert the file to LF or CRLF",
            path=path, line=i + 1, value=data[starts[i] : ends[i]].decode("utf-8").replace(_UNIT_SEP, sep),
        )
    nonempty = ends > starts
    cr = np.zeros(n_lines, dtype=bool)
    cr[nonempty] = a[ends[nonempty] - 1] == 13
    eff_end = ends - cr
    blank = eff_end == starts
    seps = np.flatnonzero(a == ord(one))
    nfields = np.bincount(np.searchsorted(nl, seps), minlength=n_lines)[:n_lines] + 1

    def text(i: int) -> str:
        return data[starts[i] : eff_end[i]].decode("utf-8").replace(_UNIT_SEP, sep)

    nonblank = np.flatnonzero(~blank)
    if nonblank.size == 0:
        raise DataError("empty file (only blank lines)", path=path)
    last = int(nonblank[-1])
    interior_blank = np.flatnonzero(blank[: last + 1])
    if interior_blank.size:
        raise DataError("blank line between rows", path=path, line=int(interior_blank[0]) + 1, value="", has_value=True)
    expected = int(nfields[0])
    bad = np.flatnonzero(nfields[: last + 1] != expected)
    if bad.size:
        i = int(bad[0])
        raise _field_error(
            path, i + 1, expected, int(nfields[i]), sep, text(i), last=(i == last and ends[i] == a.size)
        )
    first_fields = text(0).split(sep)
    return first_fields, last + 1, expected


def _parse_csv_module(text: str, one: str, sep: str, path: Path) -> tuple[list[list[str]], list[int], int]:
    """Parse quoted text with the csv module; returns records, their start lines, expected fields."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=one, strict=True)
    records: list[list[str]] = []
    lines: list[int] = []
    blank_lines: list[int] = []
    prev = 0
    try:
        for rec in reader:
            start = prev + 1
            if reader.line_num != start and rec:
                raise DataError(
                    "line break inside a quoted field", path=path, line=start, value=_line_at(text, start)
                )
            prev = reader.line_num
            if not rec:
                blank_lines.append(start)
                continue
            if blank_lines:
                raise DataError("blank line between rows", path=path, line=blank_lines[0], value="", has_value=True)
            records.append(rec)
            lines.append(start)
    except csv.Error as exc:
        raise DataError(f"malformed CSV: {exc}", path=path, line=prev + 1, value=_line_at(text, prev + 1)) from None
    if not records:
        raise DataError("empty file (only blank lines)", path=path)
    expected = len(records[0])
    last_idx = len(records) - 1
    for j, rec in enumerate(records):
        if len(rec) != expected:
            raise _field_error(
                path, lines[j], expected, len(rec), sep, _line_at(text, lines[j]).replace(_UNIT_SEP, sep),
                last=(j == last_idx and not text.endswith("\n")),
            )
    return records, lines, expected


def _line_at(text: str, line: int) -> str:
    parts = text.split("\n", line)
    return parts[line - 1].rstrip("\r") if len(parts) >= line else ""


def _parse_delimited(
    data: bytes,
    path: Path,
    sep: str | None,
    header: bool | None,
    usecols_for: Callable[[list[str], bool, list[str]], list[int]],
) -> _Table:
    """Split delimited bytes into a table.  ``header=None`` sniffs it.

    ``usecols_for(names, has_header, first_fields) -> list[int]`` picks the columns
    to keep once the field names are known (it may raise DataError about the header).
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    _check_utf8(data, path)
    lines = _first_lines(data, _SNIFF_LINES)
    if not lines:
        raise DataError("empty file (only blank lines)", path=path)
    if sep is None:
        sep = _sniff_sep(lines, path)
    if sep == "" or any(c in sep for c in '\r\n"'):
        raise ConfigError(f"sep must be non-empty and contain no line break or quote, not {sep!r}")
    if len(sep.encode("utf-8")) > 1:  # several characters, or one non-ASCII one
        if _UNIT_SEP.encode() in data:
            raise DataError("file contains the control character \\x1f; cannot use a multi-character sep", path=path)
        data = data.replace(sep.encode("utf-8"), _UNIT_SEP.encode())
        one = _UNIT_SEP
    else:
        one = sep

    quoted = b'"' in data
    if quoted:
        records, _, expected = _parse_csv_module(data.decode("utf-8"), one, sep, path)
        first_fields = records[0]
    else:
        first_fields, n_parse, expected = _scan_fast(data, one, sep, path)
    if expected < 2:
        raise DataError(
            f"found 1 field per line; expected at least 2 (user, item) separated by {_sep_label(sep)} "
            "(wrong delimiter? pass sep=)",
            path=path,
            line=1,
            value=lines[0],
        )
    first_fields = [f.strip() for f in first_fields]
    if header is None:
        header = not all(_is_number(f) for f in first_fields)
    names = first_fields if header else _headerless_names(expected)
    usecols = usecols_for(names, header, first_fields)
    first_line = 2 if header else 1

    columns: dict[int, np.ndarray] = {}
    if quoted:
        body = records[1:] if header else records
        if not body:
            raise DataError("header but no data rows", path=path, line=1, value=lines[0])
        for c in usecols:
            columns[c] = np.array([r[c] for r in body], dtype=object)
        return _Table(names, columns, first_line, header)

    n_rows = n_parse - (1 if header else 0)
    if n_rows <= 0:
        raise DataError("header but no data rows", path=path, line=1, value=lines[0])
    df = pd.read_csv(
        io.BytesIO(data),
        sep=one,
        header=None,
        skiprows=1 if header else 0,
        usecols=usecols,
        dtype=str,
        na_filter=False,
        quoting=csv.QUOTE_NONE,
        skip_blank_lines=True,
        engine="c",
        encoding="utf-8",
    )
    if len(df) != n_rows:  # cannot happen after _scan_fast; a safety net against silent row loss
        raise DataError(f"parsed {len(df)} rows but the file has {n_rows} data lines", path=path)
    for c in usecols:
        columns[c] = df[c].to_numpy(dtype=object)
    return _Table(names, columns, first_line, header)


def _headerless_names(n: int) -> list[str]:
    return [(_HEADERLESS_NAMES[k] if k < len(_HEADERLESS_NAMES) else f"column{k + 1}") for k in range(n)]


# ------------------------------------------------------------------------ columns
def _resolve_roles(
    names: list[str],
    path: Any,
    user_col: str | None,
    item_col: str | None,
    rating_col: str | None,
    timestamp_col: str | None,
    header_text: str | None,
    header_line: int | None,
) -> dict[str, int | None]:
    """Map roles (user, item, rating, timestamp) to column positions."""
    roles: dict[str, int | None] = {}
    wanted = {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": timestamp_col}
    normed = [_norm_name(n) for n in names]
    for role, col in wanted.items():
        if col is not None:
            col = str(col)
            if col not in names:
                raise DataError(
                    f"{role} column {col!r} not found; columns are {names}",
                    path=path, line=header_line, column=col, value=col,
                )
            roles[role] = names.index(col)
            continue
        pos = None
        for alias in _ALIASES[role]:
            if alias in normed:
                pos = normed.index(alias)
                break
        if pos is None and role in ("user", "item"):
            raise DataError(
                f"no {role} column found in the header {names}; pass {role}_col= "
                "(or format='movielens' for a headerless file)",
                path=path, line=header_line, value=header_text if header_text is not None else ",".join(names),
            )
        roles[role] = pos
    used = [p for p in roles.values() if p is not None]
    if len(set(used)) != len(used):
        dup = [names[p] for p in used if used.count(p) > 1][0]
        raise DataError(f"column {dup!r} is used for two roles", path=path, line=header_line, value=dup)
    return roles


def _parse_ids(values: np.ndarray) -> np.ndarray:
    """Text IDs -> int64 when every value is an integer literal without leading zeros, else str."""
    s = pd.Series(values, dtype=object).astype(str).str.strip()
    if len(s) and bool(s.str.fullmatch(_INT_LITERAL).all()):
        if int(s.str.len().max()) <= 18:
            return s.to_numpy(dtype=object).astype(np.int64)
        try:
            as_int = [int(v) for v in s.tolist()]
            return np.array(as_int, dtype=np.int64)
        except OverflowError:
            pass
    return s.to_numpy(dtype=object)


def _object_ids(series: pd.Series) -> pd.Series:
    """String-typed ID columns become object columns (what ``from_frame`` checks for blanks)."""
    if pd.api.types.is_string_dtype(series.dtype) and series.dtype != object:
        return pd.Series(series.to_numpy(dtype=object), index=series.index, name=series.name, dtype=object)
    return series


# ------------------------------------------------------------------------ public API
def read_interactions(
    source: PathLike | pd.DataFrame,
    *,
    format: Format | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    timestamp_col: str | None = None,
    sep: str | None = None,
    duplicates: DuplicatePolicy = "error",
    user_map: IdMap | None = None,
    item_map: IdMap | None = None,
    recordio_users: int | None = None,
) -> Interactions:
    """Read interactions from a file or a DataFrame.

    ``source`` is a path (MovieLens ``u.data``-style headerless text, CSV/TSV with a
    header, or Parquet) or a :class:`pandas.DataFrame`.  ``format`` is one of
    ``"csv"``, ``"tsv"``, ``"movielens"`` (headerless: user, item[, rating[,
    timestamp]]) or ``"parquet"``; ``None`` detects it (see the module docstring).
    Column names default to the recognised ones (``userId``/``user_id``/``user``,
    ``movieId``/``item_id``/``item``, ``rating``, ``timestamp``); pass ``*_col`` to
    name others.  ``sep`` names the delimiter (sniffed when ``None``).
    ``duplicates``, ``user_map`` and ``item_map`` are passed to
    :meth:`Interactions.from_frame`.  ``recordio_users`` is the number of user
    columns of a RecordIO-protobuf file (default: taken from the file when the
    file determines it, see :func:`fmrec.interop.recordio.read_recordio_interactions`).

    Every problem raises :class:`~fmrec.errors.DataError` with a one-line message
    naming the file, the 1-based line (header = line 1) and the offending value.
    """
    if format is not None and format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; choose one of {FORMATS} (or None to detect)")

    if isinstance(source, pd.DataFrame):
        names = [str(c) for c in source.columns]
        df = source.copy(deep=False)
        df.columns = names
        roles = _resolve_roles(names, None, user_col, item_col, rating_col, timestamp_col, None, None)
        return _build(df, names, roles, None, 1, duplicates, user_map, item_map)

    if not isinstance(source, (str, Path)):
        raise ConfigError(f"source must be a path or a pandas DataFrame, not {type(source).__name__}")
    path = Path(source)

    if format == "recordio" or (format is None and _is_recordio(path)):
        return _read_recordio(path, user_col, item_col, rating_col, timestamp_col, sep, duplicates,
                              user_map, item_map, recordio_users)
    if format == "parquet" or (format is None and path.suffix.lower() in _PARQUET_EXT):
        return _read_parquet(path, user_col, item_col, rating_col, timestamp_col, duplicates, user_map, item_map)
    data = _read_bytes(path)
    if format is None and data[:4] == b"PAR1":
        return _read_parquet(path, user_col, item_col, rating_col, timestamp_col, duplicates, user_map, item_map)

    if format == "tsv" and sep is None:
        sep = "\t"
    if format == "movielens":
        header: bool | None = False
        expect_headerless = True
    elif format in ("csv", "tsv"):
        header = True
        expect_headerless = False
    else:
        header = None
        expect_headerless = bool(_MOVIELENS_NAME.match(path.name))
        if expect_headerless:
            header = False

    state: dict[str, dict[str, int | None]] = {}

    def usecols_for(names: list[str], has_header: bool, first_fields: list[str]) -> list[int]:
        first_text = _first_lines(data.lstrip(b"\xef\xbb\xbf"), 1)[0]
        if has_header:
            seen: set[str] = set()
            for n in names:
                if n in seen:
                    raise DataError("duplicate column name in the header", path=path, line=1, column=n, value=n)
                seen.add(n)
        elif expect_headerless and _looks_like_header(first_fields):
            raise DataError(
                "header row where a headerless file (user, item, rating, timestamp) is expected "
                "(pass format='csv' to read a header)",
                path=path, line=1, value=first_text,
            )
        roles = _resolve_roles(
            names, path, user_col, item_col, rating_col, timestamp_col,
            first_text if has_header else None, 1 if has_header else None,
        )
        state["roles"] = roles
        return sorted(p for p in roles.values() if p is not None)

    table = _parse_delimited(data, path, sep, header, usecols_for)
    roles = state["roles"]
    cols: dict[str, Any] = {}
    for role, pos in roles.items():
        if pos is None:
            continue
        values = table.columns[pos]
        # dtype=object for text: pandas >= 3 would otherwise infer its "str" dtype
        if role in ("user", "item"):
            ids = _parse_ids(values)
            cols[table.names[pos]] = pd.Series(ids, dtype=object if ids.dtype == object else None)
        else:
            cols[table.names[pos]] = pd.Series(values, dtype=object)
    df = pd.DataFrame(cols)
    return _build(df, table.names, roles, str(path), table.first_line, duplicates, user_map, item_map)


def _is_recordio(path: Path) -> bool:
    """RecordIO by extension or by the magic number 0xCED7230A (bytes 0A 23 D7 CE)."""
    if path.suffix.lower() in (".recordio", ".rec"):
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x0a\x23\xd7\xce"
    except OSError:
        return False


def _read_recordio(
    path: Path,
    user_col: str | None,
    item_col: str | None,
    rating_col: str | None,
    timestamp_col: str | None,
    sep: str | None,
    duplicates: DuplicatePolicy,
    user_map: IdMap | None,
    item_map: IdMap | None,
    recordio_users: int | None,
) -> Interactions:
    """RecordIO-protobuf FM rows: delegated to :mod:`fmrec.interop.recordio`."""
    from fmrec.interop.recordio import read_recordio_interactions

    named = [n for n, v in (("user_col", user_col), ("item_col", item_col), ("rating_col", rating_col),
                            ("timestamp_col", timestamp_col), ("sep", sep)) if v is not None]
    if named:
        raise ConfigError(f"{path}: {', '.join(named)} do not apply to a RecordIO-protobuf file")
    return read_recordio_interactions(
        path, n_users=recordio_users, duplicates=duplicates, user_map=user_map, item_map=item_map
    )


def _looks_like_header(fields: list[str]) -> bool:
    """True when a first line of a headerless file is really a header row."""
    if any(not _is_number(f) for f in fields[2:4]):
        return True
    known = {a for aliases in _ALIASES.values() for a in aliases}
    return any(_norm_name(f) in known for f in fields[:2])


def _build(
    df: pd.DataFrame,
    names: list[str],
    roles: dict[str, int | None],
    source: str | None,
    first_line: int,
    duplicates: DuplicatePolicy,
    user_map: IdMap | None,
    item_map: IdMap | None,
) -> Interactions:
    def name(role: str) -> str | None:
        pos = roles[role]
        return None if pos is None else names[pos]

    ucol, icol = name("user"), name("item")
    assert ucol is not None and icol is not None
    df = df.copy(deep=False)
    df[ucol] = _object_ids(df[ucol])
    df[icol] = _object_ids(df[icol])
    return Interactions.from_frame(
        df,
        user_col=ucol,
        item_col=icol,
        rating_col=name("rating"),
        timestamp_col=name("timestamp"),
        duplicates=duplicates,
        source=source,
        first_line=first_line,
        user_map=user_map,
        item_map=item_map,
    )


def _read_parquet(
    path: Path,
    user_col: str | None,
    item_col: str | None,
    rating_col: str | None,
    timestamp_col: str | None,
    duplicates: DuplicatePolicy,
    user_map: IdMap | None,
    item_map: IdMap | None,
) -> Interactions:
    """Parquet: column types are kept; line numbers in errors are 1-based row numbers."""
    if not path.exists():
        raise DataError("file not found", path=path)
    if path.is_file() and path.stat().st_size == 0:
        raise DataError("empty file (0 bytes)", path=path)
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DataError(f"not a readable Parquet file: {type(exc).__name__}: {exc}", path=path) from None
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError("duplicate column name", path=path, column=dup, value=dup)
    df.columns = names
    roles = _resolve_roles(names, path, user_col, item_col, rating_col, timestamp_col, None, None)
    return _build(df, names, roles, str(path), 1, duplicates, user_map, item_map)


def read_item_names(path: PathLike) -> dict[Any, str]:
    """Item titles by external item ID, for printing recommendations.

    Reads MovieLens ``u.item`` (``|``-separated, Latin-1: id|title|...),
    ``movies.dat`` (ml-1m: ``::``-separated, Latin-1) and ``movies.csv``
    (``movieId,title,genres``: UTF-8 with a header, quoted titles).  IDs follow the
    same rule as :func:`read_interactions` (int when every ID is an integer literal).
    """
    p = Path(path)
    data = _read_bytes(p)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    first = data.split(b"\n", 1)[0]
    if p.suffix.lower() == ".dat" or b"::" in first:
        ids, titles = _item_names_plain(data, p, "::")
    elif b"|" in first and p.suffix.lower() != ".csv":
        ids, titles = _item_names_plain(data, p, "|")
    else:
        ids, titles = _item_names_csv(data, p)
    if not ids:
        raise DataError("no item rows", path=p)
    keys = _parse_ids(np.array(ids, dtype=object)).tolist()
    return {k: t for k, t in zip(keys, titles)}


def _item_names_plain(data: bytes, path: Path, sep: str) -> tuple[list[str], list[str]]:
    """MovieLens ``u.item`` / ``movies.dat``: Latin-1 (ISO-8859-1) as GroupLens ships them."""
    ids: list[str] = []
    titles: list[str] = []
    for n, raw in enumerate(data.decode("latin-1").split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) < 2:
            raise DataError(
                f"expected at least 2 fields (id, title) separated by {_sep_label(sep)}, found 1",
                path=path, line=n, value=line,
            )
        ids.append(fields[0].strip())
        titles.append(fields[1])
    return ids, titles


def _item_names_csv(data: bytes, path: Path) -> tuple[list[str], list[str]]:
    """``movies.csv``-style: UTF-8, header with an item ID column and a title column."""
    _check_utf8(data, path)
    text = data.decode("utf-8")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        head = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError("empty file (only blank lines)", path=path) from None
    normed = [_norm_name(h) for h in head]
    id_pos = next((normed.index(a) for a in _ALIASES["item"] if a in normed), None)
    title_pos = next((normed.index(a) for a in ("title", "name", "itemname", "moviename") if a in normed), None)
    if id_pos is None or title_pos is None:
        raise DataError(
            f"expected an item ID column and a title column in the header {head}",
            path=path, line=1, value=",".join(head),
        )
    ids: list[str] = []
    titles: list[str] = []
    prev = 1
    try:
        for rec in reader:
            line = prev + 1
            prev = reader.line_num
            if not rec:
                continue
            if len(rec) <= max(id_pos, title_pos):
                raise DataError(
                    f"expected {len(head)} fields, found {len(rec)}", path=path, line=line, value=_line_at(text, line)
                )
            ids.append(rec[id_pos])
            titles.append(rec[title_pos])
    except csv.Error as exc:
        raise DataError(f"malformed CSV: {exc}", path=path, line=prev + 1, value=_line_at(text, prev + 1)) from None
    return ids, titles
