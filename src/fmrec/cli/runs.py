"""``fmrec runs``: the published runs of a SQLite or PostgreSQL target (list, show, rollback)."""

from __future__ import annotations

import argparse
import json
from typing import Any

DEFAULT_TARGET = "sqlite:///fmrec-output/recommendations.db"

HELP = """List, inspect and roll back the runs published to a SQLite or PostgreSQL target.

Every publish records its run (id, start and finish time, rows, users, and for
`fmrec run` the model checksum and the resolved configuration) in the table
fmrec_runs beside the view `recommendations`; the last keep_runs runs keep
their tables.  `rollback` serves an earlier kept run again: the view is
re-pointed to that run's table in one transaction, so readers see either the
old lists or the new ones, never a mix.  TARGET is sqlite:///path.db or
postgresql://user@host:port/dbname (PG* environment variables fill in missing
fields); with --config, the target of that `fmrec run` config is used.

examples:
  fmrec runs list --target sqlite:///fmrec-output/recommendations.db
  fmrec runs show 20241128T020000_3f9a1c --target postgresql://fmrec@db/recs
  fmrec runs rollback 20241127T020000_a1b2c3 --config /etc/fmrec/nightly.toml
"""


def _add_target(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--target", default=None, metavar="TARGET",
                   help=f"sqlite:///path.db or postgresql://... (default {DEFAULT_TARGET})")
    g.add_argument("--config", default=None, metavar="CONFIG.toml", help="use the target of this fmrec run config")
    p.add_argument("--schema", default=None,
                   help="PostgreSQL schema (default: ?schema= of the URL, else current_schema())")
    p.add_argument("--runs-table", default="fmrec_runs", help="run log table (default fmrec_runs)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list / show / roll back published runs", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=lambda args: _usage(p))
    rs = p.add_subparsers(dest="runs_command", metavar="ACTION")

    pl = rs.add_parser("list", help="the recorded runs, newest first; * marks the one served",
                       description="List the runs recorded at TARGET, newest publish first; * marks the run "
                                   "the view serves.\n\nexample: fmrec runs list --target sqlite:///recs.db",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_target(pl)
    pl.add_argument("--view", default=None, help="only the runs of this view")
    pl.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    pl.set_defaults(func=run_list)

    ps = rs.add_parser("show", help="everything recorded about one run",
                       description="Everything recorded about RUN_ID at TARGET (model checksum, config, ...)."
                                   "\n\nexample: fmrec runs show RUN_ID --target sqlite:///recs.db",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ps.add_argument("run_id", metavar="RUN_ID")
    _add_target(ps)
    ps.add_argument("--json", action="store_true", help="one JSON object")
    ps.set_defaults(func=run_show)

    pr = rs.add_parser("rollback", help="serve an earlier kept run again (atomic)",
                       description="Re-publish the kept run RUN_ID: its view reads that run's table again, "
                                   "switched in one transaction.\n\nexample: fmrec runs rollback RUN_ID "
                                   "--target postgresql://fmrec@db/recs",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("run_id", metavar="RUN_ID")
    _add_target(pr)
    pr.set_defaults(func=run_rollback)


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def _target(args: argparse.Namespace) -> str:
    if args.config:
        from fmrec.pipeline import load_config, resolve_target

        return resolve_target(load_config(args.config))
    return args.target or DEFAULT_TARGET


def _opts(args: argparse.Namespace, target: str) -> dict[str, Any]:
    from fmrec.errors import ConfigError

    opts: dict[str, Any] = {"runs_table": args.runs_table}
    if args.schema is not None:
        if not target.lower().startswith(("postgresql://", "postgres://")):
            raise ConfigError("--schema applies to PostgreSQL targets only")
        opts["schema"] = args.schema
    return opts


def _as_dict(info: Any) -> dict[str, Any]:
    return {
        "run_id": info.run_id, "current": info.current, "started": info.started, "finished": info.finished,
        "rows": info.rows, "users": info.users, "k": info.k, "view": info.view, "table": info.table,
        "model_checksum": info.meta.get("model_checksum"),
        "meta": {k: v for k, v in info.meta.items() if k != "model_checksum"},
    }


def _short_time(text: str) -> str:
    return text.replace("T", " ")[:19]


def run_list(args: argparse.Namespace) -> int:
    from fmrec.store import list_published_runs, redact_target

    target = _target(args)
    runs = list_published_runs(target, view=args.view, **_opts(args, target))
    if args.json:
        for info in runs:
            print(json.dumps(_as_dict(info), default=str))
        return 0
    if not runs:
        print(f"no runs recorded at {redact_target(target)}")
        return 0
    header = ["", "run_id", "started", "finished", "rows", "users", "k", "view", "model"]
    rows = [
        ["*" if r.current else "", r.run_id, _short_time(r.started), _short_time(r.finished), str(r.rows),
         str(r.users), "" if r.k is None else str(r.k), r.view or "",
         str(r.meta.get("model_checksum") or "")[:12]]
        for r in runs
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    for line in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    return 0


def _find(args: argparse.Namespace) -> tuple[str, Any]:
    from fmrec.errors import StoreError
    from fmrec.store import list_published_runs, redact_target, validate_run_id

    validate_run_id(args.run_id)
    target = _target(args)
    for info in list_published_runs(target, **_opts(args, target)):
        if info.run_id == args.run_id:
            return target, info
    raise StoreError(f"no run {args.run_id!r} recorded at {redact_target(target)} (never published, or pruned)")


def run_show(args: argparse.Namespace) -> int:
    _, info = _find(args)
    d = _as_dict(info)
    if args.json:
        print(json.dumps(d, indent=2, default=str))
        return 0
    for key in ("run_id", "current", "started", "finished", "rows", "users", "k", "view", "table", "model_checksum"):
        print(f"{key}: {d[key]}")
    meta = d["meta"]
    for key in sorted(k for k in meta if k != "config"):
        print(f"{key}: {json.dumps(meta[key], default=str)}")
    if "config" in meta:
        print("config:")
        for line in json.dumps(meta["config"], indent=2, default=str).splitlines():
            print(f"  {line}")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from fmrec.store import redact_target, rollback_run

    target = _target(args)
    info = rollback_run(target, args.run_id, **_opts(args, target))
    print(f"view {info.view} at {redact_target(target)} now serves run {info.run_id} "
          f"({info.users} users, {info.rows} rows, published {_short_time(info.finished)})")
    return 0
