"""``fmrec`` command line: parses options and calls the library (one module per command).

Heavy imports (numba, faiss, pandas) happen inside the commands, so ``fmrec --help``
is instant.  Errors fmrec raises on purpose (and OS errors) print as one line,
``fmrec <command>: error: ...``, and exit 1; ``--debug`` (before or after the
command) shows the traceback.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import sys
from typing import Sequence

COMMANDS = {
    "train": "fmrec.cli.train",
    "predict": "fmrec.cli.predict",
    "recommend": "fmrec.cli.recommend",
    "export": "fmrec.cli.export",
    "evaluate": "fmrec.cli.evaluate",
    "evaluate-cold-start": "fmrec.cli.coldstart",
    "run": "fmrec.cli.run",
    "runs": "fmrec.cli.runs",
    "datasets": "fmrec.cli.datasets",
    "import-sagemaker": "fmrec.cli.import_sagemaker",
}

EPILOG = """examples:
  fmrec run                                   # whole pipeline on the built-in data set
  fmrec datasets fetch movielens-100k --dest data
  fmrec train data/ml-100k/ua.base --out model --task binary --threshold 4
  fmrec predict model data/ml-100k/ua.test --out predictions.csv
  fmrec recommend model --k 100 --out sqlite:///recs.db
  fmrec evaluate model data/ml-100k/ua.test --k 10
  fmrec evaluate-cold-start u.data --hold-out items --item-features u.item
  fmrec import-sagemaker model.tar.gz --users 943 --out model   # hosted FM artifact -> fmrec model
"""


def build_parser() -> argparse.ArgumentParser:
    from fmrec import __version__

    parser = argparse.ArgumentParser(
        prog="fmrec",
        description="Factorization machines to exact top-k recommendations for every user.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fmrec {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        importlib.import_module(module).register(sub)
    _add_global_options(sub)
    return parser


def _add_global_options(sub: argparse._SubParsersAction) -> None:
    """Accept --debug and -q/--quiet after the command too (``fmrec train ... --debug``)."""
    for p in sub.choices.values():
        g = p.add_argument_group("global options")
        g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only errors on stderr")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_global_options(action)


def _one_line(text: str) -> str:
    return " ".join(str(text).split("\n")).replace("\r", " ")


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    # --quiet filters at the handler, so other handlers (fmrec run's run.log) still get INFO
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    root = logging.getLogger("fmrec")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def startup_done() -> None:
    """End of a command's start-up: resume the cyclic garbage collector that
    :func:`console_main` paused, first moving every object allocated so far (imported
    modules, mostly) out of its sight (``gc.freeze``).  Importing numpy, numba and pyarrow
    allocates several hundred thousand long-lived objects, and the collector would walk
    them over and over (~0.1 s of a 2 s ``recommend --vectors`` run).  A no-op unless the
    ``fmrec`` command paused the collector (``main`` called in-process never does:
    freezing would keep the caller's garbage forever); idempotent."""
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        gc.freeze()
        gc.enable()


_gc_paused = False  # set by console_main while start-up runs with the collector off


def console_main() -> int:
    """The ``fmrec`` command's entry point (a process of its own): :func:`main` with the
    cyclic garbage collector paused during start-up (see :func:`startup_done`) and idle
    OpenBLAS threads told to sleep early.

    Idle OpenBLAS worker threads spin for 2**28 cycles (~0.1 s) after the library loads and
    after every multi-threaded call before they sleep; numpy and scipy each load their own
    OpenBLAS, so a short command spent ~0.3 CPU s of its 2 cores spinning (perf, 100k x 20k
    ``recommend --vectors``).  2**20 cycles (~0.3 ms) keeps wake-ups cheap and the cores
    free for fmrec's own workers.  Set before numpy loads; an explicit setting wins.
    """
    global _gc_paused
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")
    if gc.isenabled():
        gc.disable()
        _gc_paused = True
    try:
        return main()
    finally:
        if _gc_paused:  # a command that failed before its start-up ended
            _gc_paused = False
            gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _setup_logging(args.quiet)
    if not getattr(args, "defer_gc", False):  # commands that end their start-up themselves set defer_gc
        startup_done()
    from fmrec.errors import FmrecError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("fmrec: interrupted", file=sys.stderr)
        return 130
    except (FmrecError, OSError, MemoryError) as exc:
        if args.debug:
            raise
        stage = getattr(exc, "stage", None)
        where = f" (stage '{stage}' failed; published lists untouched)" if stage else ""
        text = str(exc) if isinstance(exc, FmrecError) else f"{type(exc).__name__}: {exc}"
        print(_one_line(f"fmrec {args.command}: error: {text}{where}"), file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console_main())
