"""``fmrec predict``: score (user, item) pairs of a file with a saved model."""

from __future__ import annotations

import argparse

from fmrec.cli._common import add_data_options, add_feature_options, read_data, read_features

HELP = """Score every (user, item) row of INPUT_FILE and write user_id,item_id,score.

Scores are predicted ratings (regression, clipped to the training range) or
probabilities (binary).  Users or items never seen in training are scored with
the terms the model knows (global bias and the known side).

example: fmrec predict model ua.test --out predictions.csv
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="score pairs from a file", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("input_file", metavar="INPUT_FILE")
    p.add_argument("--out", required=True, metavar="PREDICTIONS.csv")
    add_data_options(p)
    add_feature_options(p)
    p.set_defaults(func=run, duplicates="keep")


def run(args: argparse.Namespace) -> int:
    import os
    import tempfile
    from pathlib import Path

    from fmrec.errors import ConfigError
    from fmrec.model import load_model

    out = Path(args.out)
    if out.is_dir():  # checked first: os.replace would fail only after scoring, naming the temp file
        raise ConfigError(f"--out {out} is a folder; name the predictions file (e.g. {out / 'predictions.csv'})")
    model = load_model(args.model_dir)
    data = read_data(args.input_file, args)
    user_tab, item_tab = read_features(args)
    scores = model.predict(data, user_features=user_tab, item_features=item_tab)
    frame = data.to_frame()[["user_id", "item_id"]]
    frame["score"] = scores
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        frame.to_csv(tmp, index=False, float_format="%.7g")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote {len(frame)} predictions to {out}")
    return 0


