"""Side features for users and items: tables, column roles, and their encoding.

A :class:`FeatureTable` is one row per user (or item): an ID column plus feature
columns, each with a *role*:

``categorical``  one value per row -> one column per category (one-hot).
``multi``        several values per row joined by ``sep`` (``"|"``), e.g. genres ->
                 one column per value, weighted ``1/n`` so a row's values sum to 1
                 (``normalize=False`` gives weight 1 each).
``numeric``      a number, standardised ``(x - mean) / std`` on the training table;
                 missing values become 0 (the mean).
``bin``          a number cut into quantile bins of the training table (``n_bins``,
                 default 8) -> one-hot; missing values set no column.
``year``         a year or a date (``01-Jan-1995``, ``1995-01-01``, ``Toy Story (1995)``)
                 -> its year, then binned like ``bin``.
``ignore``       not used (titles, URLs).

Unknown categories at predict / recommend time (a category not in the training
table) set no column: the row is encoded with the features that are known.  A
number outside the training range falls in the first / last bin.  These are the
documented rules; they never raise.

Readers: :func:`read_feature_table` reads CSV/TSV/Parquet/DataFrames and the
MovieLens files as they are: ``u.user`` (age, gender, occupation, zip prefix),
``u.item`` (release year, 19 genre flags -> ``genres``) and ``movies.csv``
(``genres``, year from the title).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd
import scipy.sparse as sp

from fmrec.data._ids import IdMap, _normalise_ids
from fmrec.errors import ConfigError, DataError

ROLES = ("categorical", "multi", "numeric", "bin", "year", "ignore")
PathLike = Union[str, Path]

ML_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
_YEAR = re.compile(r"(1[89]\d\d|20\d\d)")
# MovieLens layouts recognised by content, whatever the file is called
_ML_USER_LINE = re.compile(r"^[^|,\t]+\|\d+\|[MF]\|[^|]*\|[^|]*$")
_ML_ITEM_LINE = re.compile(r"^[^|]+\|[^|]*\|[^|]*\|[^|]*\|[^|]*(\|[01]){19}$")


@dataclass
class FeatureTable:
    """One row per entity: ``ids`` (external IDs) and a frame of feature columns with roles."""

    ids: IdMap
    frame: pd.DataFrame
    roles: dict[str, str]
    source: str | None = None
    sep: str = "|"
    options: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"FeatureTable(n={len(self)}, roles={self.roles}, source={self.source!r})"

    @property
    def columns(self) -> list[str]:
        return [c for c, r in self.roles.items() if r != "ignore"]

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        id_col: str | None = None,
        roles: dict[str, str] | None = None,
        *,
        source: str | None = None,
        sep: str = "|",
        first_line: int = 2,
    ) -> "FeatureTable":
        """Build a table from a DataFrame; roles not given are inferred (see :func:`infer_role`)."""
        if len(df) == 0:
            raise DataError("feature table has no rows", path=source)
        if len(set(map(str, df.columns))) != len(df.columns):
            dup = [c for c in df.columns if list(df.columns).count(c) > 1][0]
            raise DataError("duplicate column name in feature table", path=source, value=dup)
        id_col = id_col or str(df.columns[0])
        if id_col not in df.columns:
            raise DataError(f"ID column {id_col!r} not found; columns are {list(map(str, df.columns))}", path=source)
        ids_raw = df[id_col]
        na = ids_raw.isna().to_numpy()
        if na.any():
            pos = int(np.flatnonzero(na)[0])
            raise DataError("missing ID", path=source, line=first_line + pos, column=id_col, value="", has_value=True)
        raw_ids = ids_raw.to_numpy()
        if raw_ids.dtype.kind in "OUS" or pd.api.types.is_string_dtype(ids_raw.dtype):
            from fmrec.data.readers import _parse_ids

            raw_ids = _parse_ids(np.asarray(raw_ids, dtype=object))
        ids = _normalise_ids(raw_ids)
        dup = pd.Series(ids).duplicated().to_numpy()
        if dup.any():
            pos = int(np.flatnonzero(dup)[0])
            raise DataError("duplicate ID in feature table (one row per entity)", path=source,
                            line=first_line + pos, column=id_col, value=ids[pos])
        feats = df.drop(columns=[id_col]).reset_index(drop=True)
        if feats.shape[1] == 0:
            raise DataError("feature table has no feature columns (only the ID column)", path=source)
        roles = dict(roles or {})
        for col in roles:
            if col not in feats.columns:
                where = f"{source}: " if source else ""
                raise ConfigError(
                    f"{where}role given for unknown column {col!r}; columns are {list(map(str, feats.columns))}"
                )
            if roles[col] not in ROLES:
                where = f"{source}: " if source else ""
                raise ConfigError(f"{where}unknown role {roles[col]!r} for column {col!r}; choose one of {ROLES}")
        full = {str(c): roles.get(str(c)) or infer_role(feats[c], sep) for c in feats.columns}
        if all(r == "ignore" for r in full.values()):
            raise DataError("feature table has no usable feature columns (all ignored)", path=source)
        return cls(IdMap(ids), feats, full, source, sep)


def infer_role(series: pd.Series, sep: str = "|") -> str:
    """``numeric`` columns with many values -> ``bin``; few distinct values -> ``categorical``;
    text with ``sep`` in it -> ``multi``; other text -> ``categorical``."""
    s = series.dropna()
    if pd.api.types.is_bool_dtype(s) or len(s) == 0:
        return "categorical"
    if pd.api.types.is_numeric_dtype(s):
        return "bin" if s.nunique() > 20 else "categorical"
    text = s.astype(str)
    if text.str.contains(re.escape(sep), regex=True).mean() > 0.05:
        return "multi"
    num = pd.to_numeric(text, errors="coerce")
    if num.notna().all() and num.nunique() > 20:
        return "bin"
    return "categorical"


# ----------------------------------------------------------------- encoding
def _year_of(series: pd.Series) -> np.ndarray:
    out = np.full(len(series), np.nan)
    for r, v in enumerate(series.tolist()):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        if isinstance(v, (int, np.integer)) or (isinstance(v, float) and np.isfinite(v)):
            out[r] = float(v)
            continue
        m = _YEAR.findall(str(v))
        if m:
            out[r] = float(m[-1])
    return out


def _tokens(value: Any, sep: str) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [t.strip() for t in str(value).split(sep) if t.strip()]


def _as_category(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        text = str(int(value))
    return text or None


class FeatureEncoder:
    """Fitted encoding of a feature table's columns into design-matrix columns.

    ``fields`` lists ``(name, size)`` per feature column in order; columns of one
    field are contiguous.  State is plain JSON + arrays (no pickle).
    """

    def __init__(self, specs: list[dict[str, Any]], sep: str = "|") -> None:
        self.specs = specs
        self.sep = sep
        self._index: list[dict[str, int]] = [
            {v: i for i, v in enumerate(s.get("vocab", []))} for s in specs
        ]

    @classmethod
    def fit(cls, table: FeatureTable, n_bins: int = 8, normalize: bool = True) -> "FeatureEncoder":
        specs: list[dict[str, Any]] = []
        for col in table.columns:
            role = table.roles[col]
            series = table.frame[col]
            spec: dict[str, Any] = {"name": col, "role": role}
            if role == "categorical":
                vals = sorted({c for c in (_as_category(v) for v in series.tolist()) if c is not None})
                spec["vocab"] = vals
            elif role == "multi":
                vals = sorted({t for v in series.tolist() for t in _tokens(v, table.sep)})
                spec["vocab"] = vals
                spec["normalize"] = bool(normalize)
            elif role in ("numeric", "bin", "year"):
                x = _year_of(series) if role == "year" else pd.to_numeric(series, errors="coerce").to_numpy(float)
                bad = ~np.isfinite(x) & series.notna().to_numpy()
                if role != "year" and bad.any():
                    pos = int(np.flatnonzero(bad)[0])
                    raise DataError("feature value is not a number", path=table.source, line=pos + 2,
                                    column=col, value=series.iloc[pos], has_value=True)
                good = x[np.isfinite(x)]
                if good.size == 0:
                    raise DataError("numeric feature column has no values", path=table.source, column=col)
                if role == "numeric":
                    std = float(good.std())
                    spec.update(mean=float(good.mean()), std=std if std > 0 else 1.0)
                else:
                    qs = np.unique(np.quantile(good, np.linspace(0, 1, n_bins + 1)[1:-1]))
                    spec["edges"] = [float(e) for e in qs]
            specs.append(spec)
        return cls(specs, table.sep)

    @property
    def fields(self) -> list[tuple[str, int]]:
        return [(s["name"], self._size(s)) for s in self.specs]

    @staticmethod
    def _size(spec: dict[str, Any]) -> int:
        role = spec["role"]
        if role in ("categorical", "multi"):
            return len(spec["vocab"])
        if role == "numeric":
            return 1
        return len(spec["edges"]) + 1

    @property
    def n_columns(self) -> int:
        return sum(size for _, size in self.fields)

    def transform(self, table: FeatureTable) -> sp.csr_matrix:
        """Rows of ``table`` (in its order) as a CSR matrix over this encoder's columns.

        Columns of the table the encoder does not know are ignored; missing
        columns, unknown categories and missing values set no column.
        """
        n = len(table)
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        offset = 0
        for spec, index in zip(self.specs, self._index):
            size = self._size(spec)
            name = spec["name"]
            if name not in table.frame.columns:
                offset += size
                continue
            series = table.frame[name]
            role = spec["role"]
            if role == "categorical":
                r_, c_ = [], []
                for r, v in enumerate(series.tolist()):
                    j = index.get(_as_category(v)) if _as_category(v) is not None else None
                    if j is not None:
                        r_.append(r)
                        c_.append(j)
                rows.append(np.asarray(r_, np.int64))
                cols.append(np.asarray(c_, np.int64) + offset)
                vals.append(np.ones(len(r_), np.float32))
            elif role == "multi":
                r_, c_, v_ = [], [], []
                for r, v in enumerate(series.tolist()):
                    toks = [index[t] for t in dict.fromkeys(_tokens(v, self.sep)) if t in index]
                    if not toks:
                        continue
                    weight = 1.0 / len(toks) if spec.get("normalize", True) else 1.0
                    for j in toks:
                        r_.append(r)
                        c_.append(j)
                        v_.append(weight)
                rows.append(np.asarray(r_, np.int64))
                cols.append(np.asarray(c_, np.int64) + offset)
                vals.append(np.asarray(v_, np.float32))
            else:
                x = _year_of(series) if role == "year" else pd.to_numeric(series, errors="coerce").to_numpy(float)
                ok = np.isfinite(x)
                if role == "numeric":
                    z = np.where(ok, (x - spec["mean"]) / spec["std"], 0.0)
                    nz = np.flatnonzero(z != 0)
                    rows.append(nz.astype(np.int64))
                    cols.append(np.full(nz.size, offset, np.int64))
                    vals.append(z[nz].astype(np.float32))
                else:
                    r_ = np.flatnonzero(ok)
                    b = np.searchsorted(np.asarray(spec["edges"], float), x[r_], side="right")
                    rows.append(r_.astype(np.int64))
                    cols.append(b.astype(np.int64) + offset)
                    vals.append(np.ones(r_.size, np.float32))
            offset += size
        if rows:
            r = np.concatenate(rows)
            c = np.concatenate(cols)
            v = np.concatenate(vals)
        else:
            r = c = np.zeros(0, np.int64)
            v = np.zeros(0, np.float32)
        m = sp.csr_matrix((v, (r, c)), shape=(n, offset), dtype=np.float32)
        m.sum_duplicates()
        m.sort_indices()
        return m

    def state(self) -> str:
        return json.dumps({"sep": self.sep, "specs": self.specs})

    @classmethod
    def from_state(cls, text: str) -> "FeatureEncoder":
        d = json.loads(text)
        return cls(d["specs"], d.get("sep", "|"))


@dataclass
class SideFeatures:
    """A fitted feature encoder plus the encoded rows of the entities it knows."""

    encoder: FeatureEncoder
    ids: IdMap
    matrix: sp.csr_matrix  # len(ids) x encoder.n_columns

    @classmethod
    def fit(cls, table: FeatureTable, **kwargs: Any) -> "SideFeatures":
        enc = FeatureEncoder.fit(table, **kwargs)
        return cls(enc, table.ids, enc.transform(table))

    def updated(self, table: FeatureTable) -> "SideFeatures":
        """These features with ``table``'s rows added (new IDs) or replacing (known IDs),
        encoded with the *fitted* encoder (unknown categories set no column)."""
        new = self.encoder.transform(table)
        ids = self.ids.extend(table.ids.ids)
        pos_old = np.arange(len(self.ids))
        pos_new = ids.to_index(table.ids.ids)
        keep_old = np.ones(len(self.ids), dtype=bool)
        overlap = pos_new[pos_new < len(self.ids)]
        keep_old[overlap] = False
        old = self.matrix[keep_old]
        order = np.concatenate([pos_old[keep_old], pos_new])
        stacked = sp.vstack([old, new]).tocsr()
        perm = np.empty(len(order), dtype=np.int64)
        perm[order] = np.arange(len(order))
        matrix = stacked[perm]
        return SideFeatures(self.encoder, ids, sp.csr_matrix(matrix))

    def rows_for(self, ids: Any) -> sp.csr_matrix:
        """Encoded rows for external IDs; IDs without features get empty rows."""
        idx = self.ids.to_index(ids)
        known = idx >= 0
        out = sp.csr_matrix((len(idx), self.encoder.n_columns), dtype=np.float32)
        if known.any():
            sel = self.matrix[idx[known]]
            rows = np.flatnonzero(known)
            coo = sel.tocoo()
            out = sp.csr_matrix((coo.data, (rows[coo.row], coo.col)), shape=out.shape, dtype=np.float32)
        return out


# ----------------------------------------------------------------- readers
def read_feature_table(
    source: PathLike | pd.DataFrame,
    *,
    id_col: str | None = None,
    roles: dict[str, str] | None = None,
    sep: str | None = None,
    multi_sep: str = "|",
) -> FeatureTable:
    """Read a feature table: MovieLens ``u.user`` / ``u.item`` / ``movies.csv`` as they are,
    or a CSV/TSV with a header / Parquet file / DataFrame (first column = ID unless
    ``id_col``; roles inferred unless given in ``roles``)."""
    if isinstance(source, pd.DataFrame):
        return FeatureTable.from_frame(source, id_col, roles, source="<DataFrame>", sep=multi_sep)
    path = Path(source)
    if not path.is_file():
        raise DataError("feature file not found", path=path)
    if path.stat().st_size == 0:
        raise DataError("empty feature file (0 bytes)", path=path)
    name = path.name.lower()
    head = path.open("rb").readline().decode("latin-1").rstrip("\r\n")
    if name == "u.user" or _ML_USER_LINE.match(head):
        return _movielens_users(path, roles)
    if name == "u.item" or _ML_ITEM_LINE.match(head):
        return _movielens_items(path, roles)
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types
            raise DataError(f"cannot read Parquet ({type(exc).__name__}: {exc})".splitlines()[0], path=path) from None
        return FeatureTable.from_frame(df, id_col, roles, source=str(path), sep=multi_sep)
    raw = path.read_bytes()
    from fmrec.data.readers import _check_utf8

    # the same one-line error as the interaction readers: line, byte, column and the line's text
    _check_utf8(raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw, path)
    text = raw.decode("utf-8-sig")
    first = text.split("\n", 1)[0]
    if sep is None:
        sep = "\t" if "\t" in first else (";" if first.count(";") > first.count(",") else ",")
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    except pd.errors.ParserError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise DataError(f"cannot parse ({str(exc).splitlines()[0]})", path=path,
                        line=int(m.group(1)) if m else None) from None
    if name == "movies.csv" and {"movieId", "title", "genres"} <= set(df.columns):
        df = pd.DataFrame({"movieId": df["movieId"], "genres": df["genres"].replace("(no genres listed)", ""),
                           "year": df["title"]})
        base = {"genres": "multi", "year": "year"}
        base.update(roles or {})
        return FeatureTable.from_frame(df, "movieId", base, source=str(path), sep="|")
    for col in df.columns:  # numbers stay numbers for role inference
        num = pd.to_numeric(df[col], errors="coerce")
        if col != (id_col or df.columns[0]) and num.notna().sum() == df[col].notna().sum():
            df[col] = num
    return FeatureTable.from_frame(df, id_col, roles, source=str(path), sep=multi_sep)


def _split_lines(path: Path, encoding: str, sep: str, n_fields: int) -> list[list[str]]:
    rows = []
    for n, raw in enumerate(path.read_bytes().decode(encoding).split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) != n_fields:
            raise DataError(f"expected {n_fields} fields separated by {sep!r}, found {len(fields)}",
                            path=path, line=n, value=line[:60])
        rows.append(fields)
    if not rows:
        raise DataError("no rows", path=path)
    return rows


def _movielens_users(path: Path, roles: dict[str, str] | None) -> FeatureTable:
    rows = _split_lines(path, "latin-1", "|", 5)
    df = pd.DataFrame(rows, columns=["user_id", "age", "gender", "occupation", "zip"])
    df["age"] = pd.to_numeric(df["age"], errors="coerce")
    df["zip"] = df["zip"].str.strip().str[:1]  # first digit: US region
    base = {"age": "bin", "gender": "categorical", "occupation": "categorical", "zip": "categorical"}
    base.update(roles or {})
    return FeatureTable.from_frame(df, "user_id", base, source=str(path), sep="|", first_line=1)


def _movielens_items(path: Path, roles: dict[str, str] | None) -> FeatureTable:
    rows = _split_lines(path, "latin-1", "|", 5 + len(ML_GENRES))
    ids = [r[0] for r in rows]
    genres = ["|".join(g for g, flag in zip(ML_GENRES, r[5:]) if flag.strip() == "1") for r in rows]
    df = pd.DataFrame({"item_id": ids, "year": [r[2] for r in rows], "genres": genres})
    base = {"year": "year", "genres": "multi"}
    base.update(roles or {})
    return FeatureTable.from_frame(df, "item_id", base, source=str(path), sep="|", first_line=1)


def parse_roles(text: str | None, option: str | None = None) -> dict[str, str]:
    """``"age=bin,genres=multi"`` -> ``{"age": "bin", "genres": "multi"}`` (CLI helper).

    ``option`` (e.g. ``"--user-feature-roles"``) prefixes error messages."""
    out: dict[str, str] = {}
    if not text:
        return out
    where = f"{option}: " if option else ""
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ConfigError(f"{where}feature role {part!r} must look like column=role (roles: {', '.join(ROLES)})")
        col, role = (p.strip() for p in part.split("=", 1))
        if role not in ROLES:
            raise ConfigError(f"{where}unknown role {role!r} for column {col!r}; choose one of {ROLES}")
        out[col] = role
    return out
