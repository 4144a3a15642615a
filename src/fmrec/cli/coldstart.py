"""``fmrec evaluate-cold-start``: hold out items (or users), train with side features, compare
the lists for them with a popularity baseline."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fmrec.cli._common import add_data_options, add_feature_options, read_data, read_features
from fmrec.cli.train import _model, add_model_options

HELP = """Cold-start evaluation on DATA_FILE (any input `fmrec train` reads).

--hold-out items: a random --fraction of the items loses every interaction; the
model is trained on the rest with --item-features (and --user-features if given)
and ranks the held-out items for the users who interacted with them, against a
feature-popularity baseline (each held-out item scored by the mean training
popularity of the warm items sharing its feature columns, e.g. its genres).
--hold-out users: a random --fraction of the users loses every interaction; they
are served from --user-features alone, against training popularity.

Prints precision/recall/NDCG/MAP/hit rate/MRR @k for the model and the baseline,
and the ratio of their precision@k (--json OUT writes them).

example: fmrec evaluate-cold-start u.data --hold-out items --task ranking --loss warp \\
    --item-features u.item --user-features u.user
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate-cold-start", help="cold-start evaluation (held-out items or users)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_file", metavar="DATA_FILE")
    p.add_argument("--hold-out", choices=["items", "users"], required=True,
                   help="hold out every interaction of a random fraction of the items or of the users")
    p.add_argument("--fraction", type=float, default=0.2, help="share of items/users held out (default 0.2)")
    p.add_argument("--k", type=int, default=10, help="list length (default 10)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the held-out draw (default 0)")
    p.add_argument("--json", metavar="OUT", help="write the result as JSON")
    add_model_options(p, task_default="ranking")
    add_data_options(p)
    add_feature_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fmrec.coldstart import evaluate_cold_start

    data = read_data(args.data_file, args)
    user_tab, item_tab = read_features(args)
    model = _model(args)
    res: dict[str, Any] = evaluate_cold_start(model, data, args.hold_out, user_features=user_tab,
                                              item_features=item_tab, k=args.k, fraction=args.fraction,
                                              random_state=args.split_seed)
    print(f"held out {res['n_held']} {args.hold_out} ({res['n_test_rows']} interactions); "
          f"{res['n_users_evaluated']} users evaluated")
    keys = [m for m in res["model"] if m.endswith(f"@{args.k}")]
    print("metric\tmodel\tbaseline")
    for key in keys:
        print(f"{key}\t{res['model'][key]:.4f}\t{res['baseline'][key]:.4f}")
    print(f"precision@{args.k}: {res['ratio']:.2f}x the baseline ({res['baseline_name']})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2, default=float)
    return 0
