"""The ``Interactions`` container: (user, item[, rating, timestamp]) rows with ID maps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from fmrec.data._ids import IdMap, _normalise_ids
from fmrec.errors import DataError

DuplicatePolicy = Literal["error", "first", "last", "mean", "keep"]
DUPLICATE_POLICIES = ("error", "first", "last", "mean", "keep")


@dataclass(eq=False)
class Interactions:
    """Interaction rows in internal index space, with the maps back to external IDs.

    ``user_idx``/``item_idx`` are int64 indices into ``user_map``/``item_map``.
    ``rating`` is float32 (``None`` for implicit data), ``timestamp`` int64 or ``None``.
    ``source`` names where the rows came from (for error messages).
    """

    user_idx: np.ndarray
    item_idx: np.ndarray
    rating: np.ndarray | None
    user_map: IdMap
    item_map: IdMap
    timestamp: np.ndarray | None = None
    source: str | None = None
    item_names: dict[Any, str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.user_idx = np.asarray(self.user_idx, dtype=np.int64)
        self.item_idx = np.asarray(self.item_idx, dtype=np.int64)
        if self.rating is not None:
            self.rating = np.asarray(self.rating, dtype=np.float32)
        if self.timestamp is not None:
            self.timestamp = np.asarray(self.timestamp, dtype=np.int64)

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.user_idx.shape[0])

    def __repr__(self) -> str:
        return (
            f"Interactions(n={len(self)}, n_users={self.n_users}, n_items={self.n_items}, "
            f"ratings={'yes' if self.rating is not None else 'no'}, source={self.source!r})"
        )

    @property
    def n_users(self) -> int:
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    @property
    def values(self) -> np.ndarray:
        """Ratings, or ones for implicit data."""
        if self.rating is None:
            return np.ones(len(self), dtype=np.float32)
        return self.rating

    def to_csr(self, binary: bool = False) -> sp.csr_matrix:
        """users x items CSR matrix (ratings, or ones when ``binary``), sorted indices."""
        data = np.ones(len(self), dtype=np.float32) if binary else self.values
        m = sp.csr_matrix(
            (data, (self.user_idx, self.item_idx)), shape=(self.n_users, self.n_items), dtype=np.float32
        )
        m.sum_duplicates()
        m.sort_indices()
        return m

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame with external IDs: ``user_id, item_id[, rating][, timestamp]``."""
        cols: dict[str, Any] = {
            "user_id": self.user_map.to_external(self.user_idx),
            "item_id": self.item_map.to_external(self.item_idx),
        }
        if self.rating is not None:
            cols["rating"] = self.rating
        if self.timestamp is not None:
            cols["timestamp"] = self.timestamp
        return pd.DataFrame(cols)

    def subset(self, rows: Any) -> "Interactions":
        """Rows selected by a boolean mask or index array; ID maps are kept."""
        return Interactions(
            self.user_idx[rows],
            self.item_idx[rows],
            None if self.rating is None else self.rating[rows],
            self.user_map,
            self.item_map,
            None if self.timestamp is None else self.timestamp[rows],
            self.source,
            self.item_names,
        )

    def with_maps(
        self, user_map: IdMap, item_map: IdMap, unknown: Literal["drop", "error", "extend"] = "drop"
    ) -> "Interactions":
        """Re-express these rows in other ID maps (e.g. a trained model's).

        ``unknown``: ``"drop"`` rows whose user or item the maps lack, ``"error"``
        on the first such row, or ``"extend"`` the maps with the new IDs.
        """
        users = self.user_map.to_external(self.user_idx)
        items = self.item_map.to_external(self.item_idx)
        if unknown == "extend":
            user_map = user_map.extend(users)
            item_map = item_map.extend(items)
        u = user_map.to_index(users)
        i = item_map.to_index(items)
        bad = (u < 0) | (i < 0)
        if unknown == "error" and bad.any():
            r = int(np.flatnonzero(bad)[0])
            which, val = ("user", users[r]) if u[r] < 0 else ("item", items[r])
            raise DataError(f"unknown {which} id not seen in training", path=self.source, line=r + 1, value=val)
        keep = ~bad
        return Interactions(
            u[keep],
            i[keep],
            None if self.rating is None else self.rating[keep],
            user_map,
            item_map,
            None if self.timestamp is None else self.timestamp[keep],
            self.source,
            self.item_names,
        )

    # ------------------------------------------------------------ construction
    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        user_col: str = "user_id",
        item_col: str = "item_id",
        rating_col: str | None = "rating",
        timestamp_col: str | None = "timestamp",
        *,
        duplicates: DuplicatePolicy = "error",
        source: str | None = None,
        first_line: int = 1,
        user_map: IdMap | None = None,
        item_map: IdMap | None = None,
        allow_empty: bool = False,
    ) -> "Interactions":
        """Validate a DataFrame and build ``Interactions``.

        ``first_line`` is the file line of the frame's first row, so errors can name
        the line (2 for a CSV with a header).  ``rating_col=None`` (or a missing
        rating column when ``rating_col`` is the default) gives implicit data; a
        missing ``timestamp`` column (the default name) gives no times.  Times are
        Unix seconds, or pandas datetimes (converted to Unix seconds, UTC).
        Missing IDs, non-numeric or non-finite ratings raise :class:`DataError`
        naming the line and value.  ``duplicates`` decides what repeated
        (user, item) pairs do: ``error`` (default), keep the ``first``, keep the
        ``last``, average them (``mean``), or ``keep`` every row (for scoring files).
        """
        if duplicates not in DUPLICATE_POLICIES:
            raise DataError(f"unknown duplicates policy {duplicates!r}; choose one of {DUPLICATE_POLICIES}")
        if not allow_empty and len(df) == 0:
            raise DataError("no interaction rows", path=source)
        for role, col in (("user", user_col), ("item", item_col)):
            if col not in df.columns:
                raise DataError(
                    f"missing {role} column {col!r}; columns are {list(map(str, df.columns))}", path=source
                )
        if rating_col is not None and rating_col not in df.columns:
            if rating_col == "rating":
                rating_col = None  # implicit data
            else:
                raise DataError(
                    f"missing rating column {rating_col!r}; columns are {list(map(str, df.columns))}", path=source
                )
        if timestamp_col is not None and timestamp_col not in df.columns:
            if timestamp_col != "timestamp":
                raise DataError(f"missing timestamp column {timestamp_col!r}", path=source)
            timestamp_col = None

        def line_of(pos: int) -> int:
            return first_line + int(pos)

        # IDs: no missing values
        users_raw = df[user_col]
        items_raw = df[item_col]
        for col, series in ((user_col, users_raw), (item_col, items_raw)):
            na = series.isna().to_numpy()
            if na.any():
                pos = int(np.flatnonzero(na)[0])
                raise DataError("missing ID", path=source, line=line_of(pos), column=str(col), value="", has_value=True)
            if series.dtype == object or pd.api.types.is_string_dtype(series.dtype):
                blank = series.astype(str).str.strip().eq("").to_numpy()
                if blank.any():
                    pos = int(np.flatnonzero(blank)[0])
                    raise DataError(
                        "empty ID", path=source, line=line_of(pos), column=str(col), value=series.iloc[pos]
                    )

        rating = None
        if rating_col is not None:
            raw = df[rating_col]
            num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            bad = ~np.isfinite(num)
            if bad.any():
                pos = int(np.flatnonzero(bad)[0])
                val = raw.iloc[pos]
                what = "missing rating" if pd.isna(val) else "rating is not a finite number"
                raise DataError(what, path=source, line=line_of(pos), column=str(rating_col), value=val, has_value=True)
            rating = num.astype(np.float32)

        timestamp = None
        if timestamp_col is not None:
            raw = df[timestamp_col]
            if pd.api.types.is_datetime64_any_dtype(raw):
                dt = raw.dt.tz_convert("UTC").dt.tz_localize(None) if raw.dt.tz is not None else raw
                raw = pd.Series((dt - pd.Timestamp(0)) // pd.Timedelta(seconds=1), index=raw.index)
            num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            bad = ~np.isfinite(num)
            if bad.any():
                pos = int(np.flatnonzero(bad)[0])
                raise DataError(
                    "timestamp is not a number", path=source, line=line_of(pos), column=str(timestamp_col),
                    value=raw.iloc[pos], has_value=True,
                )
            timestamp = num.astype(np.int64)

        users = _normalise_ids(users_raw.to_numpy())
        items = _normalise_ids(items_raw.to_numpy())

        # duplicates
        key = pd.DataFrame({"u": users, "i": items})
        dup = key.duplicated(keep=False).to_numpy()
        order = np.arange(len(df))
        if dup.any() and duplicates != "keep":
            if duplicates == "error":
                later = key.duplicated(keep="first").to_numpy()
                pos = int(np.flatnonzero(later)[0])
                first = int(np.flatnonzero(dup & (users == users[pos]) & (items == items[pos]))[0])
                raise DataError(
                    f"duplicate (user, item) pair, first seen on line {line_of(first)}; "
                    "pass duplicates='last'/'first'/'mean' (CLI --duplicates) to resolve",
                    path=source, line=line_of(pos), value=f"{users[pos]},{items[pos]}",
                )
            if duplicates in ("first", "last"):
                keep = ~key.duplicated(keep=duplicates).to_numpy()
                order = order[keep]
            else:  # mean
                grp = pd.DataFrame({"u": users, "i": items, "pos": order})
                if rating is not None:
                    grp["r"] = rating
                if timestamp is not None:
                    grp["t"] = timestamp
                agg = {"pos": "min"}
                if rating is not None:
                    agg["r"] = "mean"
                if timestamp is not None:
                    agg["t"] = "max"
                g = grp.groupby(["u", "i"], sort=False, as_index=False).agg(agg).sort_values("pos")
                order = g["pos"].to_numpy()
                if rating is not None:
                    rating = rating.copy()
                    rating[order] = g["r"].to_numpy(dtype=np.float32)
                if timestamp is not None:
                    timestamp = timestamp.copy()
                    timestamp[order] = g["t"].to_numpy(dtype=np.int64)
            users, items = users[order], items[order]
            rating = None if rating is None else rating[order]
            timestamp = None if timestamp is None else timestamp[order]

        umap = user_map.extend(users) if user_map is not None else IdMap.from_values(users)
        imap = item_map.extend(items) if item_map is not None else IdMap.from_values(items)
        return cls(umap.to_index(users), imap.to_index(items), rating, umap, imap, timestamp, source)
