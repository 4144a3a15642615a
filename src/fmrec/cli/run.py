"""``fmrec run``: the whole pipeline from one TOML config (or the built-in default)."""

from __future__ import annotations

import argparse

HELP = """Run load -> train -> export -> index -> recommend -> evaluate -> publish once.

With no CONFIG the built-in data set (deterministic, MovieLens-100K sized) is
used: 10 ratings per user are held out for evaluation, the lists go to
sqlite:///fmrec-output/recommendations.db (view `recommendations`), and the run
folder fmrec-output/runs/<run_id>/ keeps config.json, metrics.json, model/ and
run.log.  The lists are published last, in one atomic step: when any stage
fails, the error names the stage and the previously published lists stay.
Relative paths in CONFIG are relative to its folder; --output and --target to
the working directory.  See docs/configuration.md for every key.

example: fmrec run            or   fmrec run pipeline.toml
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="whole pipeline from a config", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", metavar="CONFIG.toml", help="pipeline config (default: built-in data)")
    p.add_argument("--run-id", default=None, help="run id (default: UTC timestamp + random suffix)")
    p.add_argument("--output", default=None, help="override [output] dir")
    p.add_argument("--target", default=None, help="override [recommend] target")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fmrec.pipeline import load_config, main_summary, run_pipeline

    overrides: dict = {}
    if args.output:
        overrides.setdefault("output", {})["dir"] = args.output
    if args.target:
        overrides.setdefault("recommend", {})["target"] = args.target
    cfg = load_config(args.config, overrides)
    res = run_pipeline(cfg, run_id=args.run_id)
    main_summary(res)
    return 0
