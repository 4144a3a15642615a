"""``fmrec recommend``: top-k for every user of a saved model, published atomically."""

from __future__ import annotations

import argparse

HELP = """Compute the top-k items for every user and publish them atomically.

TARGET is *.jsonl (one line per user: {"user_id", "items", "scores"}, best
first), *.parquet (user_id, rank, item_id, score) or sqlite:///path.db (the view
`recommendations(user_id, rank, item_id, score)`, rank from 1).  --format
sagemaker writes the hosted k-NN layout {"labels", "distances"} (ascending,
best last) for drop-in use.  Items the user interacted with in training are
excluded unless --include-seen; items never seen in training are excluded
unless --include-untrained-items.  Scores are FM scores (logits for binary).

example: fmrec recommend model --k 100 --out sqlite:///recs.db
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="top-k for every user", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--k", type=int, default=100, help="items per user (default 100)")
    p.add_argument("--out", required=True, metavar="TARGET", help="*.jsonl, *.parquet or sqlite:///path.db")
    p.add_argument("--include-seen", action="store_true", help="keep items seen in training")
    p.add_argument("--include-untrained-items", action="store_true",
                   help="also rank items that never occurred in training")
    p.add_argument("--index", choices=["exact", "flat"], default="exact",
                   help="exact: blocked GEMM + compiled top-k; flat: faiss IndexFlatIP")
    p.add_argument("--format", dest="out_format", choices=["fmrec", "sagemaker"], default="fmrec",
                   help="JSON lines layout (default fmrec)")
    p.add_argument("--users", metavar="FILE", help="serve only these users (one ID per line)")
    p.add_argument("--exclude-items", metavar="FILE", help="item IDs never to recommend (one per line)")
    p.add_argument("--exclude", metavar="FILE",
                   help="per-user exclusions: CSV/TSV with user and item columns (any interactions file)")
    p.add_argument("--run-id", default=None, help="run id of the published table (default: timestamp)")
    p.add_argument("--batch-size", type=int, default=8192, help="users per batch")
    from fmrec.cli._common import add_feature_options

    add_feature_options(p)
    p.set_defaults(func=run)


def read_id_list(path: str) -> list[str]:
    from fmrec.errors import DataError

    try:
        with open(path, encoding="utf-8") as fh:
            ids = [line.strip() for line in fh]
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason})", path=path) from None
    except FileNotFoundError:
        raise DataError("file not found", path=path) from None
    ids = [i for i in ids if i]
    if not ids:
        raise DataError("no IDs in file", path=path)
    return ids


def run(args: argparse.Namespace) -> int:
    import logging
    import time

    from fmrec.errors import ConfigError
    from fmrec.model import load_model
    from fmrec.model.io import load_seen
    from fmrec.recommend import recommend_all
    from fmrec.store import open_sink

    # checked before anything is opened, so a bad value never leaves a file behind
    if args.k < 1:
        raise ConfigError(f"--k must be a positive integer, got {args.k}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {args.batch_size}")
    log = logging.getLogger("fmrec.cli")
    t0 = time.perf_counter()
    model = load_model(args.model_dir)
    seen = load_seen(args.model_dir)
    users = read_id_list(args.users) if args.users else None
    excl_items = read_id_list(args.exclude_items) if args.exclude_items else None
    per_user = None
    if args.exclude:
        from fmrec.data.readers import read_interactions

        per_user = read_interactions(args.exclude, duplicates="first").to_frame()
    opts = {}
    if args.out_format != "fmrec":
        opts["format"] = args.out_format
    from fmrec.cli._common import read_features

    user_tab, item_tab = read_features(args)
    n_users = n_cold_users = 0
    with open_sink(args.out, run_id=args.run_id, **opts) as sink:
        for batch in recommend_all(
            model, args.k, users=users, seen=seen, exclude_seen=not args.include_seen,
            exclude_items=excl_items, exclude_per_user=per_user,
            include_untrained_items=args.include_untrained_items, index=args.index, batch_size=args.batch_size,
            user_features=user_tab, item_features=item_tab,
        ):
            sink.write(batch)
            n_users += len(batch)
            n_cold_users += int((model.encoder_.user_map.to_index(batch.user_ids) < 0).sum())
    seconds = time.perf_counter() - t0
    log.info("scored %d users in %.2fs (%.0f users/s)", n_users, seconds, n_users / max(seconds, 1e-9))
    cold = ""
    if user_tab is not None or item_tab is not None:
        n_cold_items = 0 if item_tab is None else int((model.encoder_.item_map.to_index(item_tab.ids.ids) < 0).sum())
        cold = f" (cold start: {n_cold_users} users and {n_cold_items} items known only by their features)"
    print(f"published top-{args.k} for {n_users} users to {args.out} in {seconds:.2f}s{cold}")
    return 0
