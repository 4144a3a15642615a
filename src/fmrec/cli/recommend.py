"""``fmrec recommend``: top-k for every user of a saved model, published atomically."""

from __future__ import annotations

import argparse

HELP = """Compute the top-k items for every user and publish them atomically.

TARGET is *.jsonl (one line per user: {"user_id", "items", "scores"}, best
first), *.parquet (user_id, rank, item_id, score), sqlite:///path.db or
postgresql://user@host/db (the view `recommendations(user_id, rank, item_id,
score)`, rank from 1, switched atomically; runs recorded in fmrec_runs).  --format
sagemaker writes the hosted k-NN layout {"labels", "distances"} (ascending,
best last) for drop-in use.  Items the user interacted with in training are
excluded unless --include-seen; items never seen in training are excluded
unless --include-untrained-items.  Scores are FM scores (logits for binary).

--vectors FILE scores a vectors file instead of a model (from `fmrec export`,
or embeddings of any other model: user_ids, user_vectors, item_ids,
item_vectors; optional user_constants and seen pattern).  Without constants
scores are raw inner products; without a seen pattern nothing is excluded
unless --exclude FILE.

--index: exact (blocked GEMM + compiled top-k, the default), flat (faiss
IndexFlatIP, exact) or any faiss factory string ("IVF1024,Flat", "HNSW32",
"IVF256,PQ16"): approximate, with --target-recall R tuning nprobe/efSearch on
--tune-users random users against the exact answer (the recall reached is
printed).  --save-index DIR keeps the built (tuned) index; --load-index DIR
reuses it.

example: fmrec recommend model --k 100 --out sqlite:///recs.db
         fmrec recommend --vectors vectors.npz --k 100 --out recs.parquet
         fmrec recommend --vectors vectors.npz --index HNSW32 --target-recall 0.95 --out recs.parquet
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="top-k for every user", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", metavar="MODEL_DIR", nargs="?", default=None,
                   help="saved model folder (omit with --vectors)")
    p.add_argument("--vectors", metavar="FILE", default=None,
                   help="score a vectors .npz (fmrec export, or any model's embeddings) instead of a model")
    p.add_argument("--k", type=int, default=100, help="items per user (default 100)")
    p.add_argument("--out", required=True, metavar="TARGET", help="*.jsonl, *.parquet or sqlite:///path.db")
    p.add_argument("--include-seen", action="store_true", help="keep items seen in training")
    p.add_argument("--include-untrained-items", action="store_true",
                   help="also rank items that never occurred in training")
    p.add_argument("--index", default="exact", metavar="SPEC",
                   help="exact: blocked GEMM + compiled top-k (default); flat: faiss IndexFlatIP; or a faiss "
                        "factory string, e.g. 'IVF1024,Flat', 'HNSW32', 'IVF256,PQ16' (approximate)")
    ann = p.add_argument_group("approximate (faiss) indexes")
    ann.add_argument("--nprobe", type=int, default=None, help="IVF lists probed per query (faiss default 1)")
    ann.add_argument("--ef-search", type=int, default=None, help="HNSW search breadth (faiss default 16)")
    ann.add_argument("--target-recall", type=float, default=None, metavar="R",
                     help="raise nprobe/efSearch (doubling) until recall@k vs the exact answer reaches R")
    ann.add_argument("--tune-users", type=int, default=1000, metavar="N",
                     help="random users the recall is measured on (default 1000)")
    ann.add_argument("--k-factor", type=float, default=None, metavar="F",
                     help="fetch F*k candidates and re-rank them exactly (default 1; 4 for PQ/SQ codes)")
    ann.add_argument("--max-exclusions", type=int, default=1000, metavar="N",
                     help="users with more excluded items are scored by the exact index (default 1000)")
    ann.add_argument("--save-index", metavar="DIR", default=None, help="save the built (tuned) faiss index here")
    ann.add_argument("--load-index", metavar="DIR", default=None,
                     help="use a faiss index saved by --save-index (same item vectors) instead of building one")
    dist = p.add_argument_group("distributed scoring")
    dist.add_argument("--engine", choices=["local", "dask"], default="local",
                      help="local (this process, default) or dask: users partitioned over a Dask cluster, "
                           "parts staged, one atomic publish")
    dist.add_argument("--scheduler", metavar="ADDRESS", default=None,
                      help="existing Dask scheduler, e.g. tcp://host:8786 (default: start a local cluster)")
    dist.add_argument("--workers", type=int, default=2, help="local cluster worker processes (default 2)")
    dist.add_argument("--partitions", type=int, default=None, help="user partitions (default 4 per worker)")
    dist.add_argument("--staging-dir", metavar="DIR", default=None,
                      help="where partitions write their parts (shared storage for a remote cluster; "
                           "default: next to a file target, else the temp folder)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="scoring threads (default: all cores)")
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
    p.set_defaults(func=run, defer_gc=True)  # start-up ends after the first batch (cli.main.startup_done)


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

    from fmrec.cli.main import startup_done
    from fmrec.errors import ConfigError
    from fmrec.recommend import recommend_all
    from fmrec.store import open_sink

    # checked before anything is opened, so a bad value never leaves a file behind
    if args.k < 1:
        raise ConfigError(f"--k must be a positive integer, got {args.k}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if (args.model_dir is None) == (args.vectors is None):
        raise ConfigError("give either MODEL_DIR or --vectors FILE (one of them, not both)")
    if args.engine == "dask":
        startup_done()  # a long-lived cluster client: collect as usual
        return _run_dask(args)
    index = _index_from_args(args)
    log = logging.getLogger("fmrec.cli")
    t0 = time.perf_counter()
    if args.vectors is not None:
        from fmrec.vectors import load_vectors

        if getattr(args, "user_features", None) or getattr(args, "item_features", None):
            raise ConfigError("--user-features/--item-features apply to a model, not to --vectors")
        model = load_vectors(args.vectors)
        seen = None
        log.debug("loaded %s from %s", model, args.vectors)
    else:
        from fmrec.model import load_model
        from fmrec.model.io import load_seen

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
    user_tab = item_tab = None
    if getattr(args, "user_features", None) or getattr(args, "item_features", None):
        from fmrec.cli._common import read_features

        user_tab, item_tab = read_features(args)
    n_users = n_cold_users = 0
    with open_sink(args.out, run_id=args.run_id, **opts) as sink:
        for batch in recommend_all(
            model, args.k, users=users, seen=seen, exclude_seen=not args.include_seen,
            exclude_items=excl_items, exclude_per_user=per_user,
            include_untrained_items=args.include_untrained_items, index=index, batch_size=args.batch_size,
            target_recall=args.target_recall, tune_users=args.tune_users,
            user_features=user_tab, item_features=item_tab,
        ):
            sink.write(batch)
            if not n_users:  # numba kernels, the index and the sink's writer are loaded by now
                startup_done()
            n_users += len(batch)
            if args.vectors is None:
                n_cold_users += int((model.encoder_.user_map.to_index(batch.user_ids) < 0).sum())
    seconds = time.perf_counter() - t0
    log.info("scored %d users in %.2fs (%.0f users/s)", n_users, seconds, n_users / max(seconds, 1e-9))
    cold = ""
    if user_tab is not None or item_tab is not None:
        n_cold_items = 0 if item_tab is None else int((model.encoder_.item_map.to_index(item_tab.ids.ids) < 0).sum())
        cold = f" (cold start: {n_cold_users} users and {n_cold_items} items known only by their features)"
    tuned = getattr(index, "tuned_", None)
    if args.target_recall is not None and tuned is not None:
        print(f"tuned {index.spec}: {tuned}")
    if args.save_index:
        if not hasattr(index, "save"):
            raise ConfigError("--save-index needs a faiss index (--index flat or a factory string)")
        index.save(args.save_index)
        log.info("saved index to %s", args.save_index)
    from fmrec.store import redact_target

    print(f"published top-{args.k} for {n_users} users to {redact_target(args.out)} in {seconds:.2f}s{cold}")
    # after success (an error stays the only stderr line), and only when scoring took long enough to matter
    if getattr(index, "kind", None) == "exact" and seconds >= 1.0 and index.gemm_engine() == "blas":
        from fmrec._threads import blas_kernel_hint

        hint = blas_kernel_hint()
        if hint:
            log.info("note: %s", hint)
    return 0


def _run_dask(args: argparse.Namespace) -> int:
    """``--engine dask``: :func:`fmrec.distributed.recommend_dask` with the same filters."""
    from fmrec.errors import ConfigError

    unsupported = [name for name, value in (
        ("--vectors", args.vectors), ("--users", args.users), ("--exclude", args.exclude),
        ("--exclude-items", args.exclude_items), ("--user-features", getattr(args, "user_features", None)),
        ("--item-features", getattr(args, "item_features", None)), ("--save-index", args.save_index),
        ("--load-index", args.load_index), ("--target-recall", args.target_recall)) if value]
    if unsupported:
        raise ConfigError(f"--engine dask does not support {', '.join(unsupported)} yet")
    if args.index not in ("exact", "flat"):
        raise ConfigError("--engine dask supports --index exact or flat")
    from fmrec.distributed import recommend_dask
    from fmrec.store import redact_target

    opts = {"format": args.out_format} if args.out_format != "fmrec" else {}
    summary = recommend_dask(
        args.model_dir, args.k, args.out, scheduler=args.scheduler, n_workers=args.workers,
        n_partitions=args.partitions, run_id=args.run_id, sink_options=opts, staging_dir=args.staging_dir,
        exclude_seen=not args.include_seen, include_untrained_items=args.include_untrained_items,
        index=args.index, batch_size=args.batch_size,
    )
    print(f"published top-{args.k} for {summary['users']} users to {redact_target(args.out)} in "
          f"{summary['total_seconds']:.2f}s ({summary['partitions']} partitions on Dask)")
    return 0


def _index_from_args(args: argparse.Namespace) -> object:
    """The index the options ask for (checked before any data is read)."""
    from fmrec.errors import ConfigError
    from fmrec.index import make_index

    if args.target_recall is not None and not 0 < args.target_recall <= 1:
        raise ConfigError(f"--target-recall must be in (0, 1], got {args.target_recall}")
    if args.tune_users < 1:
        raise ConfigError(f"--tune-users must be a positive integer, got {args.tune_users}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be a positive integer, got {args.threads}")
    for name in ("nprobe", "ef_search"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    if args.max_exclusions < 0:
        raise ConfigError(f"--max-exclusions must be a non-negative integer, got {args.max_exclusions}")
    if args.k_factor is not None and args.k_factor < 1:
        raise ConfigError(f"--k-factor must be >= 1, got {args.k_factor}")
    if args.load_index:
        from fmrec.index import FaissIndex

        return FaissIndex.load(args.load_index, nprobe=args.nprobe, ef_search=args.ef_search,
                               n_threads=args.threads, k_factor=args.k_factor, max_exclusions=args.max_exclusions)
    faiss_opts = {"nprobe": args.nprobe, "ef_search": args.ef_search, "k_factor": args.k_factor}
    if args.index.strip().lower() == "exact":
        given = [f"--{k.replace('_', '-')}" for k, v in faiss_opts.items() if v is not None]
        if given or args.save_index:
            raise ConfigError(f"{', '.join(given + (['--save-index'] if args.save_index else []))} "
                              "need a faiss index (--index flat or a factory string)")
        return make_index("exact", n_threads=args.threads)
    index = make_index(args.index, n_threads=args.threads, max_exclusions=args.max_exclusions, **faiss_opts)
    index._check_params()
    return index
