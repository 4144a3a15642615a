"""``fmrec import-sagemaker``: a hosted FM artifact (model.tar.gz) -> an fmrec model folder."""

from __future__ import annotations

import argparse

HELP = """Turn a hosted Factorization Machines artifact into an fmrec model folder,
without MXNet: model.tar.gz -> model_algo-1 (ZIP) -> params (dense or row_sparse
arg:v, arg:w1_weight, arg:w0_weight) + symbol.json.  The model_algo-1 ZIP or a
bare params file work too.

Columns: --users N says the first N columns are users 1..N and the rest items
1..M (the reference layout: user u at column u-1, item m at column N+m-1), or
--column-map FILE names every column (CSV header column,side,id; side user or
item).  --task defaults to what symbol.json's output op says
(LogisticRegressionOutput = binary).  --seen names the training interactions
(ua.base-style file, CSV/Parquet, or the RecordIO training channel) so that
`fmrec recommend` excludes items users already have and skips items never
trained.

example: fmrec import-sagemaker model.tar.gz --users 943 --out model --seen ua.base
         fmrec recommend model --k 100 --out recs.jsonl
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-sagemaker", help="import a hosted FM model.tar.gz", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", metavar="MODEL_TAR_GZ", help="model.tar.gz (or model_algo-1, or params)")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder to write")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--users", type=int, metavar="N", help="the first N columns are users 1..N, the rest items 1..M")
    g.add_argument("--column-map", metavar="FILE", help="CSV column,side,id naming every column")
    p.add_argument("--task", choices=["auto", "binary", "regression"], default="auto",
                   help="default auto: from symbol.json's output op")
    p.add_argument("--seen", metavar="TRAIN_FILE",
                   help="training interactions (ua.base, CSV, Parquet or RecordIO) to exclude seen items")
    p.add_argument("--item-names", metavar="FILE", help="u.item or movies.csv, to show titles later")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fmrec.interop.sagemaker import import_sagemaker, seen_from_file
    from fmrec.model import save_model

    model = import_sagemaker(
        args.artifact, n_users=args.users, column_map=args.column_map,
        task=None if args.task == "auto" else args.task,
    )
    seen = seen_from_file(model, args.seen) if args.seen else None
    names = None
    if args.item_names:
        from fmrec.data.readers import read_item_names

        names = read_item_names(args.item_names)
    extra = dict(model.import_info_)
    if args.seen:
        extra["seen_file"] = str(args.seen)
    save_model(model, args.out, seen=seen, item_names=names, extra=extra)
    enc = model.encoder_
    seen_text = f", {seen.nnz} seen pairs" if seen is not None else ", no seen items (pass --seen to exclude them)"
    print(f"imported {model.task} FM ({enc.n_users} users, {enc.n_items} items, {model.n_factors} factors"
          f"{seen_text}) from {args.artifact}; model saved to {args.out}")
    return 0
