"""``fmrec train``: fit a factorization machine and save a model folder."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from fmrec.cli._common import add_data_options, add_feature_options, read_data, read_features

log = logging.getLogger("fmrec.cli")

HELP = """Train a factorization machine on interactions and save a model folder.

TRAIN_FILE is a MovieLens u.data-style file (tab separated, no header), a CSV/TSV
with a header (userId,movieId,rating,timestamp and user_id,item_id,rating are
recognised; others via --user-col etc.), a Parquet file, or the word "builtin".
Repeated (user, item) rows are an error naming the line unless --duplicates says
first / last / mean (or keep: train on every row).  --task binary labels rows rating >= --threshold as 1.

example: fmrec train ua.base --out model --task binary --threshold 4 --factors 64

Larger than memory: --stream trains from a Parquet file (or a folder of Parquet
files) without loading it (SGD solver, every task): a first pass builds the ID
maps, a second the seen pattern (a repeated (user, item) pair is an error unless
--duplicates keep), then each epoch streams --batch-rows rows at a time, the row
groups in a seeded random order and each batch shuffled.  Streaming is never
switched on by itself: it shuffles by batch, not globally, so it is asked for.

example: fmrec train events.parquet --out model --stream --task ranking
"""

#: Parquet inputs at least this large get a hint to use --stream (nothing else changes).
STREAM_HINT_BYTES = 1 << 30


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train_file", metavar="TRAIN_FILE")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder to write")
    add_model_options(p)
    p.add_argument("--valid", metavar="FILE", help="validation file: per-epoch metric and early stopping")
    p.add_argument("--item-names", metavar="FILE", help="u.item or movies.csv, to show titles later")
    g = p.add_argument_group("larger-than-memory training")
    g.add_argument("--stream", action="store_true",
                   help="train from a Parquet file or folder by streaming it (SGD solver; see above)")
    g.add_argument("--batch-rows", type=int, default=1_000_000, metavar="N",
                   help="--stream: rows per training batch (default 1,000,000)")
    add_data_options(p)
    for action in p._actions:  # train also accepts "keep": every row is a training sample
        if action.dest == "duplicates":
            action.choices = ["error", "first", "last", "mean", "keep"]
            action.help = ("repeated (user, item) rows: error (default) names the line; first/last keep one; "
                           "mean averages; keep trains on every row (the only other choice with --stream)")
    add_feature_options(p)
    p.set_defaults(func=run)


def add_model_options(p: argparse.ArgumentParser, task_default: str = "regression") -> None:
    """The estimator's options (shared with ``fmrec evaluate-cold-start``); see :func:`_model`."""
    p.add_argument("--task", choices=["regression", "binary", "ranking"], default=task_default,
                   help="regression (ratings), binary (rating >= --threshold) or ranking (implicit "
                        "feedback: BPR/WARP over sampled negatives; the task to use for top-k lists)")
    p.add_argument("--loss", choices=["bpr", "warp"], default="bpr", help="ranking loss (default bpr)")
    p.add_argument("--positive-threshold", type=float, default=None,
                   help="ranking: only rows with rating >= this are positives (default: every row)")
    p.add_argument("--max-sampled", type=int, default=10, help="WARP: negatives tried per positive")
    p.add_argument("--threshold", type=float, default=4.0, help="binary label: rating >= threshold (default 4)")
    p.add_argument("--factors", type=int, default=64, help="latent factors (default 64)")
    p.add_argument("--epochs", type=int, default=None,
                   help="maximum epochs (default 20 for regression/binary, 100 for ranking)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (default 5)")
    p.add_argument("--optimizer", choices=["adagrad", "sgd"], default="adagrad")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate for every parameter group")
    p.add_argument("--lr-bias", type=float, default=None)
    p.add_argument("--lr-linear", type=float, default=None)
    p.add_argument("--lr-factors", type=float, default=None)
    p.add_argument("--l2-linear", type=float, default=None, help="default: 0.01 SGD, 5 ALS")
    p.add_argument("--l2-factors", type=float, default=None, help="default: 0.1 regression, 0.05 binary, 0.01 ranking")
    p.add_argument("--init-std", type=float, default=None, help="default: 0.01 SGD, 0.1 ALS/MCMC")
    p.add_argument("--solver", choices=["sgd", "als", "mcmc"], default="sgd",
                   help="sgd (every task), als (coordinate descent) or mcmc (Gibbs sampling; "
                        "regression/binary; --epochs = iterations, default 200)")
    p.add_argument("--n-samples", type=int, default=50, help="MCMC: posterior samples kept (default 50)")
    p.add_argument("--burn-in", type=int, default=None, help="MCMC: iterations discarded (default epochs/10)")
    p.add_argument("--implicit", choices=["none", "user", "item", "both"], default="none",
                   help="implicit-feedback fields from the training data (SVD++ style): user = the items "
                        "each user interacted with, item = the users of each item (default none; fast with "
                        "--solver mcmc, slow with sgd/als)")
    p.add_argument("--field-l2", metavar="FIELD=L2[,FIELD=L2...]", default=None,
                   help="SGD/ALS: L2 penalty per field, e.g. item:genres=0.001,user=0.05 (L2 = one value, or "
                        "LINEAR/FACTORS); field names: user, item, user:<column>, item:<column>, "
                        "user/implicit, item/implicit, context/day")
    p.add_argument("--context", choices=["none", "day"], default="none",
                   help="day = one-hot calendar day of each rating (needs timestamps; used by predict on "
                        "timestamped rows, not by recommend; regression/binary only)")
    p.add_argument("--threads", type=int, default=1,
                   help="training threads (1 = reproducible; more = lock-free Hogwild)")


def _model(args: argparse.Namespace) -> Any:
    from fmrec.model import FactorizationMachine

    model = FactorizationMachine(
        task=args.task, n_factors=args.factors, n_epochs=args.epochs, optimizer=args.optimizer,
        learning_rate=args.lr, learning_rate_bias=args.lr_bias, learning_rate_linear=args.lr_linear,
        learning_rate_factors=args.lr_factors, l2_linear=args.l2_linear, l2_factors=args.l2_factors,
        init_std=args.init_std, threshold=args.threshold, n_threads=args.threads, random_state=args.seed,
        patience=args.patience, verbose=not args.quiet, loss=args.loss,
        positive_threshold=args.positive_threshold, max_sampled=args.max_sampled,
        solver=args.solver, n_samples=args.n_samples, n_burn_in=args.burn_in,
        implicit=None if args.implicit == "none" else args.implicit,
        field_l2=_field_l2(args.field_l2),
        context=None if args.context == "none" else args.context,
    )
    model._validate_params()  # bad options fail before anything is logged or trained
    return model


def _field_l2(text: str | None) -> dict[str, Any] | None:
    """``item:genres=0.001,user=0.05/0.1`` -> {"item:genres": 0.001, "user": (0.05, 0.1)}."""
    from fmrec.errors import ConfigError

    if not text:
        return None
    out: dict[str, Any] = {}
    for part in text.split(","):
        name, sep, value = part.strip().rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            nums = [float(v) for v in value.split("/")]
            if len(nums) not in (1, 2):
                raise ValueError
        except ValueError:
            raise ConfigError(f"--field-l2: expected FIELD=L2 or FIELD=LINEAR/FACTORS, got {part.strip()!r}") from None
        out[name] = nums[0] if len(nums) == 1 else (nums[0], nums[1])
    return out


def _summary(model: Any, seconds: float, out: str) -> None:
    # the metrics of the epoch whose parameters were kept (the best one with --valid)
    hist = model.history_ or [{}]
    best = next((h for h in hist if h.get("epoch") == model.best_epoch_), hist[-1])
    summary = ", ".join(f"{k}={v:.4f}" for k, v in best.items() if k.startswith(("valid_", "train_")))
    print(f"trained in {seconds:.1f}s ({len(model.history_)} epochs, best {model.best_epoch_}; {summary}); "
          f"model saved to {out}")


def _item_names(args: argparse.Namespace, names: Any) -> Any:
    if args.item_names:
        from fmrec.data.readers import read_item_names

        return read_item_names(args.item_names)
    return names


def run(args: argparse.Namespace) -> int:
    import time

    from fmrec.model import save_model

    if args.stream:
        return run_stream(args)
    # every input is read (and checked) before training, so a bad feature or names file
    # fails in a second instead of after the epochs, and nothing is logged before the error
    train = read_data(args.train_file, args)
    valid = read_data(args.valid, args) if args.valid else None
    user_tab, item_tab = read_features(args)
    names = _item_names(args, train.item_names)
    model = _model(args)
    _hint_stream(args)
    log.info("training %s FM on %d rows (%d users, %d items) from %s",
             args.task, len(train), train.n_users, train.n_items, args.train_file)
    t0 = time.perf_counter()
    model.fit(train, valid=valid, user_features=user_tab, item_features=item_tab)
    seconds = time.perf_counter() - t0
    save_model(model, args.out, seen=train.to_csr(binary=True), item_names=names,
               extra={"train_file": str(args.train_file), "train_seconds": seconds, "train_rows": len(train)})
    _summary(model, seconds, args.out)
    return 0


def _hint_stream(args: argparse.Namespace) -> None:
    from pathlib import Path

    path = Path(args.train_file)
    try:
        big = path.suffix.lower() in (".parquet", ".pq") and path.stat().st_size >= STREAM_HINT_BYTES
    except OSError:
        return
    if big:
        log.info("%s is %.1f GiB: --stream trains without loading it into memory",
                 path, path.stat().st_size / 2**30)


def run_stream(args: argparse.Namespace) -> int:
    """``--stream``: :meth:`FactorizationMachine.fit_parquet` on the Parquet input."""
    import time
    from pathlib import Path

    from fmrec.errors import ConfigError
    from fmrec.model import save_model
    from fmrec.model.streaming import STREAM_DUPLICATES, ParquetSource

    if args.train_file == "builtin":
        raise ConfigError("--stream reads a Parquet file or folder, not the built-in data set")
    if args.data_format not in ("auto", "parquet"):
        raise ConfigError(f"--stream reads Parquet only, not --format {args.data_format}")
    path = Path(args.train_file)
    if args.data_format == "auto" and path.is_file() and path.suffix.lower() not in (".parquet", ".pq"):
        with open(path, "rb") as fh:
            if fh.read(4) != b"PAR1":
                raise ConfigError(f"{path}: --stream reads Parquet files only (*.parquet, *.pq, or a folder of them)")
    if args.duplicates not in STREAM_DUPLICATES:
        raise ConfigError(f"--duplicates {args.duplicates} is not supported with --stream "
                          f"(choose {' or '.join(STREAM_DUPLICATES)})")
    model = _model(args)
    if model.solver != "sgd":
        raise ConfigError("--stream supports --solver sgd only (ALS and MCMC need the data in memory)")
    source = ParquetSource(path, user_col=args.user_col, item_col=args.item_col, rating_col=args.rating_col,
                           timestamp_col=args.timestamp_col, batch_rows=args.batch_rows,
                           duplicates=args.duplicates)
    valid = read_data(args.valid, args) if args.valid else None
    user_tab, item_tab = read_features(args)
    names = _item_names(args, None)
    log.info("training %s FM by streaming %d rows (%d files, %d row groups) from %s in batches of %d rows",
             args.task, source.n_rows, len(source.files), len(source.blocks), args.train_file, source.batch_rows)
    t0 = time.perf_counter()
    model.fit(source, valid=valid, user_features=user_tab, item_features=item_tab)
    seconds = time.perf_counter() - t0
    info = model.stream_info_
    save_model(model, args.out, seen=model.seen_, item_names=names,
               extra={"train_file": str(args.train_file), "train_seconds": seconds, "train_rows": info["n_rows"],
                      "streamed": True, "batch_rows": source.batch_rows, "duplicates": args.duplicates})
    _summary(model, seconds, args.out)
    return 0
