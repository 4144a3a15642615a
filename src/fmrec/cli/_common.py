"""Options shared by several commands."""

from __future__ import annotations

import argparse
from typing import Any


def add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input columns and format")
    g.add_argument("--format", dest="data_format", choices=["auto", "movielens", "csv", "tsv", "parquet", "recordio"],
                   default="auto", help="input format (default: detected from the file)")
    g.add_argument("--recordio-users", type=int, default=None, metavar="N",
                   help="RecordIO-protobuf FM rows: number of user columns (default: inferred when unambiguous)")
    g.add_argument("--sep", default=None, help="field delimiter for CSV/TSV (default: sniffed)")
    g.add_argument("--user-col", default=None, help="user column name (default: recognised names)")
    g.add_argument("--item-col", default=None, help="item column name")
    g.add_argument("--rating-col", default=None, help="rating column name")
    g.add_argument("--timestamp-col", default=None, help="timestamp column name")
    g.add_argument(
        "--duplicates", choices=["error", "first", "last", "mean"], default="error",
        help="repeated (user, item) rows: error (default) names the line; first/last keep one; mean averages",
    )


def read_data(path: str, args: argparse.Namespace, **kwargs: Any) -> Any:
    """Read interactions from PATH ("builtin" = the built-in data set) with the shared options."""
    if path == "builtin":
        from fmrec.data.synthetic import load_builtin

        return load_builtin()
    from fmrec.data.readers import read_interactions

    fmt = None if args.data_format == "auto" else args.data_format
    return read_interactions(
        path, format=fmt, sep=args.sep, user_col=args.user_col, item_col=args.item_col,
        rating_col=args.rating_col, timestamp_col=args.timestamp_col, duplicates=args.duplicates,
        recordio_users=getattr(args, "recordio_users", None), **kwargs,
    )


def add_feature_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("side features (one row per user / item; first column = ID)")
    g.add_argument("--user-features", metavar="FILE",
                   help="user features: MovieLens u.user, or CSV/TSV/Parquet with a header")
    g.add_argument("--item-features", metavar="FILE",
                   help="item features: MovieLens u.item or movies.csv, or CSV/TSV/Parquet with a header")
    g.add_argument("--user-feature-roles", metavar="COL=ROLE,...", default=None,
                   help="roles for user feature columns: categorical, multi, numeric, bin, year, ignore "
                        "(default inferred)")
    g.add_argument("--item-feature-roles", metavar="COL=ROLE,...", default=None, help="roles for item columns")
    g.add_argument("--feature-id-col", default=None, help="ID column of the feature files (default: first)")


def read_features(args: argparse.Namespace) -> tuple[Any, Any]:
    """(user table or None, item table or None) from the feature options."""
    from fmrec.data.features import parse_roles, read_feature_table

    out = []
    for side in ("user", "item"):
        path, roles = getattr(args, f"{side}_features"), getattr(args, f"{side}_feature_roles")
        if path:
            roles = parse_roles(roles, option=f"--{side}-feature-roles")
        out.append(None if not path else read_feature_table(path, id_col=args.feature_id_col, roles=roles))
    return out[0], out[1]
