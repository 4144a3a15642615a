"""``fmrec evaluate``: prediction and top-k metrics of a saved model on held-out data."""

from __future__ import annotations

import argparse

from fmrec.cli._common import add_data_options, read_data

HELP = """Evaluate a saved model on TEST_FILE.

Prediction metrics on the test rows (regression: rmse, mae; binary: accuracy,
log loss, F1 at 0.5, ROC AUC, with labels rating >= the model's threshold) and
top-k metrics (precision, recall, ndcg, map, hit_rate, mrr at each --k) of the
model's lists for the test users, training items excluded, beside the
most-popular baseline.  Every test row counts as relevant unless --min-rating.
With --recommendations FILE, evaluates existing lists (jsonl/parquet) instead.

example: fmrec evaluate model ua.test --k 10 20
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics on held-out data", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("test_file", metavar="TEST_FILE")
    p.add_argument("--k", type=int, nargs="+", default=[10], help="cut-offs (default 10)")
    p.add_argument("--min-rating", type=float, default=0.0, help="relevant only if rating >= this")
    p.add_argument("--index", choices=["exact", "flat"], default="exact")
    p.add_argument("--no-baseline", action="store_true", help="skip the most-popular baseline")
    p.add_argument("--recommendations", metavar="FILE", help="evaluate these lists (jsonl/parquet) instead")
    p.add_argument("--json", metavar="OUT", help="also write the metrics as JSON")
    add_data_options(p)
    p.set_defaults(func=run, duplicates="keep")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from fmrec.data import Interactions
    from fmrec.errors import ConfigError
    from fmrec.model import load_model
    from fmrec.model.io import load_seen
    from fmrec.pipeline import evaluate_model

    if args.json and Path(args.json).is_dir():  # checked first: never fail after printing the metrics
        raise ConfigError(
            f"--json {args.json} is a folder; name the metrics file (e.g. {Path(args.json) / 'metrics.json'})"
        )
    model = load_model(args.model_dir)
    seen = load_seen(args.model_dir)
    test = read_data(args.test_file, args)
    enc = model.encoder_
    if seen is None:
        empty = np.zeros(0, dtype=np.int64)
        seen_train = Interactions(empty, empty, None, enc.user_map, enc.item_map)
    else:
        coo = seen.tocoo()
        seen_train = Interactions(coo.row, coo.col, None, enc.user_map, enc.item_map)
    if args.recommendations:
        from fmrec.evaluate import ranking_metrics
        from fmrec.store import read_jsonl, read_parquet_topk, read_sqlite_topk

        src = args.recommendations
        if src.startswith("sqlite:"):
            lists = read_sqlite_topk(src)
        elif src.endswith(".parquet"):
            lists = read_parquet_topk(src)
        else:
            lists = read_jsonl(src)
        metrics = {"n_test_rows": len(test)}
        metrics.update({f"model_{k}": v for k, v in ranking_metrics(
            lists, test.to_frame(), args.k,
            min_rating=args.min_rating or None).items()})
    else:
        metrics = evaluate_model(model, seen_train, test, args.k, seen=seen, min_rating=args.min_rating,
                                 index=args.index, baseline=not args.no_baseline)
    for key, value in metrics.items():
        print(f"{key}\t{value:.4f}" if isinstance(value, float) else f"{key}\t{value}")
    if args.json:  # temp file + rename: a failure never leaves a partial metrics file
        import os
        import tempfile

        out = Path(args.json)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent if str(out.parent) else ".")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(metrics, fh, indent=2)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return 0
