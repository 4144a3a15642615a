"""``fmrec datasets``: list and fetch public data sets (checksummed, safely extracted)."""

from __future__ import annotations

import argparse

HELP = """Download a public data set from GroupLens, verify its pinned sha256 and
extract it safely (no member may escape the target folder).

example: fmrec datasets fetch movielens-100k --dest data
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="list / fetch public data sets", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = p.add_subparsers(dest="datasets_command", metavar="ACTION")
    f = dsub.add_parser("fetch", help="download, verify and extract a data set")
    f.add_argument("name", help="data set name (see `fmrec datasets list`)")
    f.add_argument("--dest", default="data", help="folder to extract into (default ./data)")
    f.add_argument("--url", default=None, help="download from this URL instead (mirror)")
    f.add_argument("--sha256", default=None, help="expected sha256 (with --url)")
    f.add_argument("--force", action="store_true", help="download again even if present")
    f.set_defaults(func=fetch)
    ls = dsub.add_parser("list", help="known data sets")
    ls.set_defaults(func=list_)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def fetch(args: argparse.Namespace) -> int:
    import sys

    from fmrec.data.datasets import fetch_dataset

    # the progress counter rewrites one line with \r: only on a terminal, never into logs
    progress = not args.quiet and sys.stderr.isatty()
    path = fetch_dataset(args.name, args.dest, url=args.url, sha256=args.sha256, force=args.force, progress=progress)
    print(f"{args.name} ready in {path}")
    return 0


def list_(args: argparse.Namespace) -> int:
    from fmrec.data.datasets import DATASETS

    for name, spec in DATASETS.items():
        print(f"{name}\t{getattr(spec, 'url', spec)}")
    return 0
